//! The host side of the contract: one module per WIT interface. Each keeps its logic in
//! plain functions that tests call without a guest, and implements its `Host` trait on a
//! narrow view of its own (as wasmtime-wasi does), which the engine projects from a step's
//! store; no capability knows the store. [`errors`] is the one place where the domain's
//! errors become the WIT `step-error`.

pub mod bindings;
pub mod clocks;
pub mod convert;
pub mod deploy;
pub mod errors;
pub mod http;
pub mod images;
pub mod log;
pub mod process;
pub mod registry;
pub mod secrets;
pub mod source;

pub use errors::{CallError, CallResult, io_failure, step_error};

use crate::events::{Event, Events, Level, Stream};
use crate::journal::tape::Tape;
use crate::sandbox::Grants;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// What every capability of a step checks and records with: who is calling (its scope),
/// what it may do (its grants), and its tape (recording, or answering from a journal).
#[derive(Clone)]
pub struct StepCall {
    pub scope: StepScope,
    pub grants: Arc<Grants>,
    pub tape: Tape,
    /// In an audit run, what the grants refused to files, processes and HTTP is noted here
    /// and let through.
    pub audit: Option<Arc<crate::sandbox::audit::Audit>>,
}

/// The linker's marker for the interfaces served on a step's [`StepCall`] alone (`source`,
/// `images`).
pub struct HasCall;

impl wasmtime::component::HasData for HasCall {
    type Data<'a> = &'a StepCall;
}

impl StepCall {
    /// A grant check as this step lives with it: refused, or in an audit let through and
    /// noted.
    pub fn permit(
        &self,
        check: Result<(), crate::sandbox::grants::Refusal>,
    ) -> Result<(), crate::sandbox::grants::Refusal> {
        match &self.audit {
            Some(audit) => audit.permit(check),
            None => check,
        }
    }

    /// A host call through the step's tape ([`Tape::call`]), as the WIT result: `live`
    /// makes the call in a run, the journal answers it in a replay.
    pub async fn taped<A, T>(
        &self,
        interface: &str,
        function: &str,
        args: &A,
        live: impl Future<Output = Result<T, bindings::wharf::step::types::StepError>>,
    ) -> CallResult<T>
    where
        A: serde::Serialize + ?Sized,
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        Ok(self.tape.call(interface, function, args, live).await??)
    }
}

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

/// The log bytes a step may still write.
#[derive(Debug)]
pub struct LogBudget {
    pub limit: u64,
    used: AtomicU64,
    exceeded: AtomicBool,
}

impl LogBudget {
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            used: AtomicU64::new(0),
            exceeded: AtomicBool::new(false),
        }
    }

    /// Spend `bytes`. Ok(()) within the limit; Err(first) over it, `first` true only for
    /// the first line refused, so the notice is printed once.
    pub fn spend(&self, bytes: u64) -> Result<(), bool> {
        let used = self.used.fetch_add(bytes, Ordering::Relaxed).saturating_add(bytes);
        if used <= self.limit {
            return Ok(());
        }
        Err(!self.exceeded.swap(true, Ordering::Relaxed))
    }

    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }
}
