//! `registry`: OCI distribution registries.

use super::secrets::SecretHandle;
use super::step_error;
use crate::engine::bindings::wharf::step::registry::{Host, PushRequest, Pushed};
use crate::engine::bindings::wharf::step::types::{ErrorKind, StepError};
use crate::engine::state::StepState;
use wasmtime::component::Resource;

fn unavailable<T>() -> wasmtime::Result<Result<T, StepError>> {
    Ok(Err(step_error(
        ErrorKind::Permanent,
        "the registry capability is not available in this version of wharf",
    )))
}

impl Host for StepState {
    async fn push(
        &mut self,
        _request: PushRequest,
        _password: Option<Resource<SecretHandle>>,
    ) -> wasmtime::Result<Result<Pushed, StepError>> {
        unavailable()
    }
    async fn resolve(
        &mut self,
        _reference: String,
        _insecure: bool,
        _username: Option<String>,
        _password: Option<Resource<SecretHandle>>,
    ) -> wasmtime::Result<Result<String, StepError>> {
        unavailable()
    }
}
