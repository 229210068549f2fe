//! `log`: step log lines, progress and CI annotations, all turned into run events.

use crate::engine::bindings::wharf::step::log::{Annotation, Host, Level as WitLevel};
use crate::engine::state::StepState;
use crate::events::{Event, Level};

impl From<WitLevel> for Level {
    fn from(level: WitLevel) -> Self {
        match level {
            WitLevel::Trace => Level::Trace,
            WitLevel::Debug => Level::Debug,
            WitLevel::Info => Level::Info,
            WitLevel::Warn => Level::Warn,
            WitLevel::Error => Level::Error,
        }
    }
}

impl Host for StepState {
    async fn write(&mut self, level: WitLevel, message: String) -> wasmtime::Result<()> {
        self.scope.log(level.into(), message);
        // Past its log limit a step is stopped; the failure names the limit.
        if self.scope.log_budget.exceeded() {
            wasmtime::bail!("log limit reached");
        }
        Ok(())
    }

    async fn progress(&mut self, label: String, done: u64, total: Option<u64>) -> wasmtime::Result<()> {
        // Progress and annotations count against the log limit like lines do.
        if self.scope.log_budget.spend(label.len() as u64 + 16).is_err() {
            wasmtime::bail!("log limit reached");
        }
        self.scope.events.emit(Event::Progress {
            step: self.scope.step_id.clone(),
            label,
            done,
            total,
        });
        Ok(())
    }

    async fn annotate(&mut self, note: Annotation) -> wasmtime::Result<()> {
        let size =
            note.message.len() + note.title.as_ref().map_or(0, String::len) + note.file.as_ref().map_or(0, String::len);
        if self.scope.log_budget.spend(size as u64 + 16).is_err() {
            wasmtime::bail!("log limit reached");
        }
        self.scope.events.emit(Event::Annotation {
            step: self.scope.step_id.clone(),
            level: note.level.into(),
            title: note.title,
            message: note.message,
            file: note.file,
            line: note.line,
            column: note.column,
        });
        Ok(())
    }
}
