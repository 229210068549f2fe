//! What one step's `Store` holds: the WASI contexts, the resource table, resource limits and
//! each capability's context. Nothing in it outlives the step. The linker projects the
//! narrow view each interface is served on from it (see [`super::Runtime::new`]).

use crate::capabilities::StepCall;
use crate::capabilities::clocks::TapedClocks;
use crate::capabilities::deploy::DeployView;
use crate::capabilities::http::StepHttpHooks;
use crate::capabilities::process::ProcessView;
use crate::capabilities::secrets::{SecretStore, SecretsView};
use crate::deploy::Deployer;
use crate::engine::limits::StepLimits;
use crate::engine::limits::{DiskBudget, StepLimiter};
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

pub struct StepState {
    /// Who calls, what it may do, and its tape: what every capability checks and records with.
    pub call: StepCall,
    pub secrets: Arc<SecretStore>,
    /// The run's deploys; None while describing or replaying a step.
    pub deployer: Option<Arc<Deployer>>,
    pub limits: StepLimits,
    /// What the step may still write to disk.
    pub disk: Arc<DiskBudget>,
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub http_hooks: StepHttpHooks,
    pub table: ResourceTable,
    pub limiter: StepLimiter,
    /// wharf's own state in the workspace, which no filesystem call of the step may change.
    pub reserved: crate::sandbox::reserved::Reserved,
    /// The confinement of the run's programs; None when describing or replaying a step.
    pub programs: Option<std::sync::Arc<crate::sandbox::programs::Programs>>,
    pub attempt: u32,
    /// Provenance the step's pushes sign and its deploys require.
    pub release: crate::provenance::StepRelease,
}

impl StepState {
    pub fn process(&mut self) -> ProcessView<'_> {
        ProcessView {
            call: &self.call,
            capture_limit: usize::try_from(self.limits.output_bytes).unwrap_or(usize::MAX),
            programs: self.programs.as_deref(),
            attempt: self.attempt,
            limits: wharf_confine::Limits {
                memory: self.limits.program_memory,
                processes: self.limits.processes,
                file_size: Some(self.limits.disk_bytes),
            },
        }
    }

    pub fn secrets(&mut self) -> SecretsView<'_> {
        SecretsView {
            call: &self.call,
            secrets: &self.secrets,
            table: &mut self.table,
            release: &self.release,
        }
    }

    pub fn deploy(&mut self) -> DeployView<'_> {
        DeployView {
            call: &self.call,
            deployer: self.deployer.as_deref(),
            release: &self.release,
        }
    }

    pub fn clocks(&mut self) -> TapedClocks<'_> {
        TapedClocks {
            tape: &self.call.tape,
            wasi: &mut self.wasi,
            table: &mut self.table,
        }
    }
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
