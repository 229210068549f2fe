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
        self.events.emit(Event::Annotation {
            step: self.step_id.clone(),
            level: note.level.into(),
            title: note.title,
            message: note.message,
            file: note.file,
            line: note.line,
            column: note.column,
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
