//! wharf: a CI/CD step runner whose steps are sandboxed WebAssembly components.
//!
//! Start at `docs/architecture.md`. The pieces: [`pipeline`] reads and validates pipeline
//! files, [`engine`] loads and runs components, [`capabilities`] is the host side of the
//! WIT contract, [`run`] executes a pipeline, [`events`] carries what happens to renderers.

pub use wharf_fs::{beneath, bounded};
pub use wharf_oci as oci;
pub use wharf_pipeline as pipeline;
pub mod builtins;
pub mod cache;
pub mod capabilities;
pub mod cli;
pub mod deploy;
pub mod engine;
pub mod events;
pub mod journal;
pub mod packages;
pub mod provenance;
pub mod run;
pub mod sandbox;
pub mod targets;
