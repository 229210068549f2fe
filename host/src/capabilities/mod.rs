//! The host side of the contract: one module per WIT interface. Each keeps its logic in
//! plain functions and types that tests can call without a guest; the `Host` trait impls on
//! [`StepState`](crate::engine::state::StepState) only adapt them to the bindings.

pub mod deploy;
pub mod http;
pub mod images;
pub mod log;
pub mod process;
pub mod registry;
pub mod secrets;
pub mod source;

use crate::engine::bindings::wharf::step::types::{ErrorKind, StepError};
use crate::events::{Event, Events, Level, Stream};
use std::path::PathBuf;

/// Who is calling and where to report: shared by every capability of one step.
#[derive(Clone)]
pub struct StepScope {
    pub run_id: String,
    pub step_id: String,
    pub workspace: PathBuf,
    pub events: Events,
}

impl StepScope {
    pub fn log(&self, level: Level, message: impl Into<String>) {
        self.line(level, Stream::Log, message);
    }

    pub fn line(&self, level: Level, stream: Stream, message: impl Into<String>) {
        self.events.emit(Event::Log {
            step: self.step_id.clone(),
            level,
            stream,
            message: message.into(),
        });
    }
}

pub fn step_error(kind: ErrorKind, message: impl Into<String>) -> StepError {
    StepError {
        kind,
        message: message.into(),
    }
}

impl crate::engine::bindings::wharf::step::types::Host for crate::engine::state::StepState {}
