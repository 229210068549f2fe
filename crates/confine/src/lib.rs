//! Programs a step runs (`cargo`, `sh`, test tools), held by the kernel to what the step was
//! granted: only the files of its grants and the system's, no host socket, no network but
//! the hosts it may reach, no signal to processes not its own, its limits, no root powers,
//! and nothing left running after it.
//!
//! A kernel offers what it offers ([`Level`]): namespaces and Landlock, Landlock alone, or
//! nothing; [`Report`] says which and what that leaves open. One confinement process per
//! run ([`confiner`], started by [`Confiner::start`]) holds what is made once and forks
//! every program; [`policy`] is what a program may reach, decided by the host from the
//! step's grants. Knows nothing of steps, pipelines or wasm.

pub mod client;
pub mod confiner;
mod filter;
mod layers;
mod namespaces;
pub mod policy;
pub mod support;
mod watch;
mod wire;

pub use client::{Confiner, Exit, Killer, Running, SpawnError};
pub use confiner::{MARK, serve};
pub use policy::{Level, Limits, Network, PROXY_PORT, Program, Setup};
pub use support::Report;
