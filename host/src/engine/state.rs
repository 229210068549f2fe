//! What one step's `Store` holds: the WASI contexts, the resource table, resource limits and
//! the host state every capability reads. Nothing in it outlives the step.

use crate::capabilities::StepScope;
use crate::capabilities::secrets::SecretStore;
use crate::deploy::Deployer;
use crate::engine::limits::StepLimits;
use crate::engine::limits::{DiskBudget, StepLimiter};
use crate::journal::tape::Tape;
use crate::sandbox::Grants;
use crate::sandbox::egress::StepHttpHooks;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

pub struct StepState {
    pub scope: StepScope,
    pub secrets: Arc<SecretStore>,
    /// The run's deploys; None while describing a step.
    pub deployer: Option<Arc<Deployer>>,
    /// What this step may reach: checked by every capability.
    pub grants: Arc<Grants>,
    pub limits: StepLimits,
    /// What the step may still write to disk.
    pub disk: Arc<DiskBudget>,
    /// Records host calls to the run's journal, or answers them from it in a replay.
    pub tape: Tape,
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub http_hooks: StepHttpHooks,
    pub table: ResourceTable,
    pub limiter: StepLimiter,
}

impl WasiView for StepState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for StepState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}
