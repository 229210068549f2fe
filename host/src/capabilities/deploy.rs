//! `deploy`: services on deploy targets.

use super::step_error;
use crate::engine::bindings::wharf::step::deploy::{Host, Instance, ServiceSpec, ServiceStatus};
use crate::engine::bindings::wharf::step::types::{ErrorKind, StepError};
use crate::engine::state::StepState;

fn unavailable<T>() -> wasmtime::Result<Result<T, StepError>> {
    Ok(Err(step_error(
        ErrorKind::Permanent,
        "the deploy capability is not available in this version of wharf",
    )))
}

impl Host for StepState {
    async fn begin_upgrade(&mut self, _spec: ServiceSpec) -> wasmtime::Result<Result<ServiceStatus, StepError>> {
        unavailable()
    }
    async fn start_instance(&mut self, _service: String) -> wasmtime::Result<Result<Instance, StepError>> {
        unavailable()
    }
    async fn wait_healthy(
        &mut self,
        _service: String,
        _instance: String,
        _timeout_ms: u64,
    ) -> wasmtime::Result<Result<(), StepError>> {
        unavailable()
    }
    async fn stop_instance(&mut self, _service: String, _instance: String) -> wasmtime::Result<Result<(), StepError>> {
        unavailable()
    }
    async fn finish_upgrade(&mut self, _service: String) -> wasmtime::Result<Result<ServiceStatus, StepError>> {
        unavailable()
    }
    async fn confirm(&mut self, _service: String) -> wasmtime::Result<Result<ServiceStatus, StepError>> {
        unavailable()
    }
    async fn rollback(&mut self, _service: String) -> wasmtime::Result<Result<ServiceStatus, StepError>> {
        unavailable()
    }
    async fn status(&mut self, _service: String) -> wasmtime::Result<Result<ServiceStatus, StepError>> {
        unavailable()
    }
    async fn instances(&mut self, _service: String) -> wasmtime::Result<Result<Vec<Instance>, StepError>> {
        unavailable()
    }
}
