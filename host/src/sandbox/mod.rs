//! The sandbox: what a step may reach, and how much it may use.
//!
//! Threat: a pipeline step, a third-party `.wasm` or a compromised build of a built-in,
//! reads files, credentials or cloud metadata it has no business with, or talks to hosts of
//! its choosing, or starves the runner. A component can only act through host calls, so
//! every call checks the step's [`Grants`]: what the pipeline's `allow:` grants, plus what a
//! built-in step's own `with:` values name (shown by `wharf validate`). Everything else is
//! denied with the exact YAML that would grant it. Limits ([`crate::engine::limits`]) bound
//! time, memory, fuel and output.

pub mod audit;
pub mod egress;
pub mod preopens;
pub mod programs;
pub mod proxy;
pub mod reserved;

/// The policy itself (parsing `allow:`, deriving grants, checking a call) belongs to the
/// pipeline language.
pub use wharf_pipeline::grants::{self, Grants};
