//! The host side of the contract: one module per WIT interface. Each keeps its logic in
//! plain functions and types that tests can call without a guest; the `Host` trait impls on
//! [`StepState`](crate::engine::state::StepState) only adapt them to the bindings.

pub mod deploy;
pub mod images;
pub mod log;
pub mod process;
pub mod registry;
pub mod secrets;
pub mod source;

use crate::engine::bindings::wharf::step::types::{ErrorKind, StepError};
use crate::engine::limits::LogBudget;
use crate::events::{Event, Events, Level, Stream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Who is calling and where to report: shared by every capability of one step.
#[derive(Clone)]
pub struct StepScope {
    pub run_id: String,
    pub step_id: String,
    pub workspace: PathBuf,
    pub events: Events,
    /// Log bytes left; a step that floods its log is stopped and fails.
    pub log_budget: Arc<LogBudget>,
}

impl StepScope {
    pub fn new(run_id: &str, step_id: &str, workspace: &Path, events: Events, log_limit: u64) -> Self {
        Self {
            run_id: run_id.to_string(),
            step_id: step_id.to_string(),
            workspace: workspace.to_path_buf(),
            events,
            log_budget: Arc::new(LogBudget::new(log_limit)),
        }
    }

    pub fn log(&self, level: Level, message: impl Into<String>) {
        self.line(level, Stream::Log, message);
    }

    pub fn line(&self, level: Level, stream: Stream, message: impl Into<String>) {
        let message = message.into();
        if let Err(first) = self.log_budget.spend(message.len() as u64 + 1) {
            if first {
                self.events.emit(Event::Log {
                    step: self.step_id.clone(),
                    level: Level::Error,
                    stream: Stream::Log,
                    message: format!(
                        "log limit of {} bytes reached; the rest is dropped",
                        self.log_budget.limit
                    ),
                });
            }
            return;
        }
        self.events.emit(Event::Log {
            step: self.step_id.clone(),
            level,
            stream,
            message,
        });
    }
}

/// A path a step named that does not stay in the workspace is refused; one that is not
/// there is the step's mistake.
impl From<crate::beneath::Error> for StepError {
    fn from(e: crate::beneath::Error) -> Self {
        use crate::beneath::Error;
        let kind = match &e {
            Error::Escapes { .. } => ErrorKind::Denied,
            Error::NotFound { .. } => ErrorKind::InvalidInput,
            Error::Io { .. } => ErrorKind::Permanent,
        };
        step_error(kind, e.to_string())
    }
}

/// The host failed at I/O while doing what a step asked: not the step's mistake, and a full
/// disk says so plainly.
pub fn io_failure(what: impl std::fmt::Display, e: &std::io::Error) -> StepError {
    let message = if e.kind() == std::io::ErrorKind::StorageFull {
        format!("{what}: the disk is full (ENOSPC): {e}")
    } else {
        format!("{what}: {e}")
    };
    step_error(ErrorKind::Permanent, message)
}

pub fn step_error(kind: ErrorKind, message: impl Into<String>) -> StepError {
    StepError {
        kind,
        message: message.into(),
    }
}

impl crate::engine::bindings::wharf::step::types::Host for crate::engine::state::StepState {}
