//! `log`: step log lines, progress and CI annotations, all turned into run events.

use super::StepScope;
use super::bindings::wharf::step::log::{
    Annotation, Host, Level as WitLevel, Measurement, TestCase, TestOutcome, TestReport, TestStatus,
    Verdict as WitVerdict,
};
use crate::events::{Event, Level, TestResult};

/// The linker's marker: `log` is served on the step's [`StepScope`].
pub struct HasLog;

impl wasmtime::component::HasData for HasLog {
    type Data<'a> = &'a mut StepScope;
}

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

/// `file` as a path relative to the workspace, when it lies in it: an absolute path (what
/// many tools write) with the workspace's real path taken off, then resolved beneath the
/// workspace by the kernel (`..` and links may not lead out). A file that does not exist
/// (any more) is judged by its path alone, which may not climb.
fn in_workspace(workspace: &std::path::Path, file: &str) -> Option<String> {
    use std::path::{Component, Path};
    let path = Path::new(file);
    let relative = if path.is_absolute() {
        let root = std::fs::canonicalize(workspace).ok()?;
        let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        real.strip_prefix(&root).ok()?.to_str()?.to_string()
    } else {
        file.to_string()
    };
    if relative.is_empty() {
        return None;
    }
    match crate::beneath::existing(workspace, &relative) {
        Ok(_) => Some(relative),
        Err(crate::beneath::Error::NotFound { .. })
            if Path::new(&relative)
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir)) =>
        {
            Some(relative)
        }
        Err(_) => None,
    }
}

impl StepScope {
    /// Spend log budget for something other than a line; past the limit the step stops.
    fn spend_or_stop(&self, bytes: usize) -> wasmtime::Result<()> {
        if self.log_budget.spend(bytes as u64 + 16).is_err() {
            wasmtime::bail!("log limit reached");
        }
        Ok(())
    }
}

impl Host for &mut StepScope {
    async fn write(&mut self, level: WitLevel, message: String) -> wasmtime::Result<()> {
        self.log(level.into(), message);
        // Past its log limit a step is stopped; the failure names the limit.
        if self.log_budget.exceeded() {
            wasmtime::bail!("log limit reached");
        }
        Ok(())
    }

    async fn progress(&mut self, label: String, done: u64, total: Option<u64>) -> wasmtime::Result<()> {
        // Progress and annotations count against the log limit like lines do.
        self.spend_or_stop(label.len())?;
        self.events.emit(Event::Progress {
            step: self.step_id.clone(),
            label,
            done,
            total,
        });
        Ok(())
    }

    async fn annotate(&mut self, note: Annotation) -> wasmtime::Result<()> {
        let size =
            note.message.len() + note.title.as_ref().map_or(0, String::len) + note.file.as_ref().map_or(0, String::len);
        self.spend_or_stop(size)?;
        // Every CI shows a file relative to the checkout: a tool's absolute path is made
        // relative, and a place outside the workspace is named in the message instead.
        let (file, message, line, column) = match note.file {
            Some(file) => match in_workspace(&self.workspace, &file) {
                Some(relative) => (Some(relative), note.message, note.line, note.column),
                None => (
                    None,
                    format!("{} (at {file}, outside the workspace)", note.message),
                    None,
                    None,
                ),
            },
            None => (None, note.message, note.line, note.column),
        };
        self.events.emit(Event::Annotation {
            step: self.step_id.clone(),
            level: note.level.into(),
            title: note.title,
            message,
            file,
            line,
            column,
        });
        Ok(())
    }

    /// The older form: one text, the failure's for a failed or skipped test, what it
    /// printed for one that passed.
    async fn test_result(&mut self, test: TestCase) -> wasmtime::Result<()> {
        let (status, details, stdout) = match test.outcome {
            TestOutcome::Passed => (TestStatus::Passed, None, test.output),
            TestOutcome::Failed => (TestStatus::Failed, test.output, None),
            TestOutcome::Skipped => (TestStatus::Skipped, test.output, None),
        };
        self.report_test(TestReport {
            suite: test.suite,
            name: test.name,
            classname: test.classname,
            duration_ms: test.duration_ms,
            status,
            message: test.message,
            kind: None,
            details,
            stdout,
            stderr: None,
        })
        .await
    }

    async fn measure(&mut self, m: Measurement) -> wasmtime::Result<()> {
        self.spend_or_stop(m.metric.len() + m.detail.len() + 16)?;
        self.events.emit(Event::Measurement {
            step: self.step_id.clone(),
            measurement: wharf_journal::Measurement {
                metric: m.metric,
                // JSON has no infinities or NaN: such a value is no number.
                value: m.value.filter(|v| v.is_finite()),
                verdict: match m.verdict {
                    WitVerdict::Successful => "successful",
                    WitVerdict::Failed => "failed",
                    WitVerdict::Inconclusive => "inconclusive",
                }
                .into(),
                dry_run: m.dry_run,
                detail: m.detail,
            },
        });
        Ok(())
    }

    async fn report_test(&mut self, test: TestReport) -> wasmtime::Result<()> {
        let size = [&test.suite, &test.name]
            .into_iter()
            .chain(&test.classname)
            .chain(&test.message)
            .chain(&test.kind)
            .chain(&test.details)
            .chain(&test.stdout)
            .chain(&test.stderr)
            .map(String::len)
            .sum::<usize>();
        self.spend_or_stop(size)?;
        self.events.emit(Event::TestCase {
            step: self.step_id.clone(),
            suite: test.suite,
            name: test.name,
            classname: test.classname,
            duration: std::time::Duration::from_millis(test.duration_ms),
            outcome: match test.status {
                TestStatus::Passed => TestResult::Passed,
                TestStatus::Failed => TestResult::Failed,
                TestStatus::Errored => TestResult::Errored,
                TestStatus::Skipped => TestResult::Skipped,
            },
            message: test.message,
            kind: test.kind,
            output: test.details,
            stdout: test.stdout,
            stderr: test.stderr,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::in_workspace;

    #[test]
    fn an_annotations_file_is_shown_relative_to_the_workspace_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(ws.join("src")).unwrap();
        std::fs::write(ws.join("src/a.rs"), "").unwrap();
        std::fs::write(dir.path().join("secret"), "").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), ws.join("link")).unwrap();
        let real = std::fs::canonicalize(&ws).unwrap();
        let abs = |p: &str| real.join(p).to_string_lossy().into_owned();
        assert_eq!(in_workspace(&ws, "src/a.rs").as_deref(), Some("src/a.rs"));
        assert_eq!(in_workspace(&ws, &abs("src/a.rs")).as_deref(), Some("src/a.rs"));
        // Gone since, or not written yet: judged by the path, which may not climb.
        assert_eq!(in_workspace(&ws, "src/gone.rs").as_deref(), Some("src/gone.rs"));
        assert_eq!(in_workspace(&ws, &abs("src/gone.rs")).as_deref(), Some("src/gone.rs"));
        for outside in [
            "../secret".to_string(),
            "src/../../secret".to_string(),
            "link".to_string(),
            dir.path().join("secret").to_string_lossy().into_owned(),
            abs("src/../../secret"),
            abs("link"),
            "/etc/passwd".to_string(),
            abs(""),
        ] {
            assert_eq!(in_workspace(&ws, &outside), None, "{outside}");
        }
    }
}
