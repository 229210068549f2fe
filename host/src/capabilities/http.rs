//! Outgoing HTTP: `wasi:http/outgoing-handler`, with every request passing
//! [`StepHttpHooks`] — the one place where the host decides what a step may reach.

use wasmtime_wasi_http::WasiHttpHooks;

/// Per-step HTTP policy.
#[derive(Debug, Default, Clone)]
pub struct StepHttpHooks {}

impl WasiHttpHooks for StepHttpHooks {}
