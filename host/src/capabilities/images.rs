//! `images`: OCI images assembled in the host.

use super::step_error;
use crate::engine::bindings::wharf::step::images::{AssembleRequest, DockerBuildRequest, Host, Image};
use crate::engine::bindings::wharf::step::types::{ErrorKind, StepError};
use crate::engine::state::StepState;

fn unavailable<T>() -> wasmtime::Result<Result<T, StepError>> {
    Ok(Err(step_error(
        ErrorKind::Permanent,
        "the images capability is not available in this version of wharf",
    )))
}

impl Host for StepState {
    async fn assemble(&mut self, _request: AssembleRequest) -> wasmtime::Result<Result<Image, StepError>> {
        unavailable()
    }
    async fn docker_build(&mut self, _request: DockerBuildRequest) -> wasmtime::Result<Result<Image, StepError>> {
        unavailable()
    }
    async fn inspect(&mut self, _reference: String) -> wasmtime::Result<Result<Image, StepError>> {
        unavailable()
    }
}
