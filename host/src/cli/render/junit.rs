//! The run as a JUnit XML report (`--junit FILE`), in the dialect Jenkins' junit plugin and
//! GitLab's `artifacts:reports:junit` read: one test suite for the run, one test case per
//! step with its time; a failure carries its kind, message and the step's last lines; a
//! skipped step is skipped; the tests a step reported (`builtin:exec` with `junit:` reads
//! a test tool's own report) follow as that step's cases. Written when the run finishes, to a temporary file renamed over
//! FILE, so a reader never sees half a report.

use super::Tails;
use crate::events::{Event, Level, Outcome, Sink, TestResult};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Junit {
    path: PathBuf,
    tails: Arc<Tails>,
    run: Mutex<Suite>,
}

#[derive(Default)]
struct Suite {
    pipeline: String,
    run_id: String,
    started: Option<std::time::SystemTime>,
    cases: Vec<Case>,
}

struct Case {
    step: String,
    uses: String,
    time: Duration,
    outcome: Outcome,
    detail: Option<String>,
    tail: Vec<String>,
    /// The tests the step reported.
    tests: Vec<Test>,
    /// Its annotations (a linter's findings among them), one line each.
    annotations: Vec<String>,
}

struct Test {
    classname: String,
    name: String,
    time: Duration,
    outcome: TestResult,
    message: Option<String>,
    kind: Option<String>,
    output: Option<String>,
    stdout: Option<String>,
    stderr: Option<String>,
}

impl Junit {
    pub fn new(path: PathBuf, tails: Arc<Tails>) -> Self {
        Self {
            path,
            tails,
            run: Mutex::new(Suite::default()),
        }
    }

    fn write(&self, suite: &Suite, took: Duration) {
        let xml = suite.xml(took);
        let tmp = self.path.with_extension("xml.partial");
        let result = std::fs::write(&tmp, xml).and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            eprintln!("warning: cannot write the JUnit report {}: {e}", self.path.display());
        }
    }
}

impl Sink for Junit {
    fn event(&self, event: &Event) {
        self.tails.see(event);
        let mut suite = self.run.lock().unwrap();
        match event {
            Event::RunStarted { run_id, pipeline, .. } => {
                suite.run_id = run_id.clone();
                suite.pipeline = pipeline.clone();
                suite.started = Some(std::time::SystemTime::now());
            }
            Event::StepStarted { step, uses, .. } => {
                // The latest attempt of a retried step is its test case.
                suite.cases.retain(|c| c.step != *step);
                suite.cases.push(Case {
                    step: step.clone(),
                    uses: uses.clone(),
                    time: Duration::ZERO,
                    outcome: Outcome::Skipped,
                    detail: None,
                    tail: Vec::new(),
                    tests: Vec::new(),
                    annotations: Vec::new(),
                });
            }
            Event::Annotation {
                step,
                level,
                title,
                message,
                file,
                line,
                column,
            } => {
                if let Some(case) = suite.cases.iter_mut().rfind(|c| c.step == *step) {
                    let place = match (file, line, column) {
                        (Some(f), Some(l), Some(c)) => format!("{f}:{l}:{c}: "),
                        (Some(f), Some(l), None) => format!("{f}:{l}: "),
                        (Some(f), None, _) => format!("{f}: "),
                        (None, ..) => String::new(),
                    };
                    let title = title.as_ref().map(|t| format!("{t}: ")).unwrap_or_default();
                    let level = match level {
                        Level::Error => "error",
                        Level::Warn => "warning",
                        _ => "notice",
                    };
                    case.annotations.push(format!("{level} {place}{title}{message}"));
                }
            }
            Event::TestCase {
                step,
                suite: tool_suite,
                name,
                classname,
                duration,
                outcome,
                message,
                kind,
                output,
                stdout,
                stderr,
            } => {
                if let Some(case) = suite.cases.iter_mut().rfind(|c| c.step == *step) {
                    case.tests.push(Test {
                        classname: format!("{step}.{}", classname.as_deref().unwrap_or(tool_suite)),
                        name: name.clone(),
                        time: *duration,
                        outcome: *outcome,
                        message: message.clone(),
                        kind: kind.clone(),
                        output: output.clone(),
                        stdout: stdout.clone(),
                        stderr: stderr.clone(),
                    });
                }
            }
            Event::StepFinished {
                step,
                outcome,
                duration,
                detail,
                ..
            } => {
                let tail = if *outcome == Outcome::Failure {
                    self.tails.report(step)
                } else {
                    Vec::new()
                };
                let case = Case {
                    step: step.clone(),
                    uses: String::new(),
                    time: *duration,
                    outcome: *outcome,
                    detail: detail.clone(),
                    tail,
                    tests: Vec::new(),
                    annotations: Vec::new(),
                };
                match suite.cases.iter_mut().find(|c| c.step == *step) {
                    Some(started) => {
                        let uses = std::mem::take(&mut started.uses);
                        let tests = std::mem::take(&mut started.tests);
                        let annotations = std::mem::take(&mut started.annotations);
                        *started = Case {
                            uses,
                            tests,
                            annotations,
                            ..case
                        };
                    }
                    // Skipped and reused steps never start.
                    None => suite.cases.push(case),
                }
            }
            Event::RunFinished { duration, .. } => self.write(&suite, *duration),
            _ => {}
        }
    }
}

impl Suite {
    fn xml(&self, took: Duration) -> String {
        // The steps' own cases and the tests they reported, together.
        let steps = |o: Outcome| self.cases.iter().filter(|c| c.outcome == o).count();
        let tests = |r: TestResult| {
            self.cases
                .iter()
                .flat_map(|c| &c.tests)
                .filter(|t| t.outcome == r)
                .count()
        };
        let total = self.cases.iter().map(|c| 1 + c.tests.len()).sum::<usize>();
        let failures = steps(Outcome::Failure) + tests(TestResult::Failed);
        let errors = tests(TestResult::Errored);
        let skipped = steps(Outcome::Skipped) + tests(TestResult::Skipped);
        let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let timestamp = self
            .started
            .map(|t| humantime::format_rfc3339_seconds(t).to_string())
            .unwrap_or_default();
        let _ = writeln!(
            x,
            "<testsuites name=\"wharf\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\">",
            total,
            failures,
            errors,
            skipped,
            took.as_secs_f64()
        );
        let _ = writeln!(
            x,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\" timestamp=\"{}\" id=\"{}\">",
            attr(&self.pipeline),
            total,
            failures,
            errors,
            skipped,
            took.as_secs_f64(),
            attr(timestamp.trim_end_matches('Z')),
            attr(&self.run_id)
        );
        for case in &self.cases {
            let _ = write!(
                x,
                "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"",
                attr(&case.step),
                attr(&format!("{}.{}", self.pipeline, case.step)),
                case.time.as_secs_f64()
            );
            // What the step annotated, as the case's output (Jenkins and GitLab show it).
            let annotations = match case.annotations.is_empty() {
                true => String::new(),
                false => format!(
                    "\n      <system-out>{}</system-out>",
                    text(&(case.annotations.join("\n") + "\n"))
                ),
            };
            match case.outcome {
                Outcome::Success if annotations.is_empty() => x.push_str("/>\n"),
                Outcome::Success => {
                    let _ = writeln!(x, ">{annotations}\n    </testcase>");
                }
                Outcome::Skipped => {
                    let _ = writeln!(
                        x,
                        ">\n      <skipped message=\"{}\"/>{annotations}\n    </testcase>",
                        attr(case.detail.as_deref().unwrap_or("skipped"))
                    );
                }
                Outcome::Failure => {
                    let detail = case.detail.as_deref().unwrap_or("failed");
                    let (kind, message) = detail.split_once(": ").unwrap_or(("failure", detail));
                    let mut body = format!("{detail}\n");
                    if !case.uses.is_empty() {
                        body.push_str(&format!("step: {} ({})\n", case.step, case.uses));
                    }
                    for line in &case.tail {
                        body.push_str(line);
                        body.push('\n');
                    }
                    let _ = writeln!(
                        x,
                        ">\n      <failure type=\"{}\" message=\"{}\">{}</failure>{annotations}\n    </testcase>",
                        attr(kind),
                        attr(message.lines().next().unwrap_or("")),
                        text(&body)
                    );
                }
            }
            for test in &case.tests {
                let _ = write!(
                    x,
                    "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"",
                    attr(&test.name),
                    attr(&test.classname),
                    test.time.as_secs_f64()
                );
                let message = attr(test.message.as_deref().unwrap_or(""));
                let kind = test
                    .kind
                    .as_deref()
                    .map(|k| format!(" type=\"{}\"", attr(k)))
                    .unwrap_or_default();
                let output = text(test.output.as_deref().unwrap_or(""));
                let mut inner = match test.outcome {
                    TestResult::Passed => String::new(),
                    TestResult::Skipped => format!("\n      <skipped message=\"{message}\"/>"),
                    TestResult::Failed => format!("\n      <failure message=\"{message}\"{kind}>{output}</failure>"),
                    TestResult::Errored => format!("\n      <error message=\"{message}\"{kind}>{output}</error>"),
                };
                for (tag, printed) in [("system-out", &test.stdout), ("system-err", &test.stderr)] {
                    if let Some(printed) = printed {
                        let _ = write!(inner, "\n      <{tag}>{}</{tag}>", text(printed));
                    }
                }
                if inner.is_empty() {
                    x.push_str("/>\n");
                } else {
                    let _ = writeln!(x, ">{inner}\n    </testcase>");
                }
            }
        }
        x.push_str("  </testsuite>\n</testsuites>\n");
        x
    }
}

/// Characters XML 1.0 cannot hold at all (most control characters) become `\xNN`.
fn legal(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => c.to_string(),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => format!("\\x{:02x}", c as u32),
            c => c.to_string(),
        })
        .collect()
}

fn text(s: &str) -> String {
    legal(s).replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn attr(s: &str) -> String {
    text(s)
        .replace('"', "&quot;")
        .replace('\n', "&#10;")
        .replace('\r', "&#13;")
        .replace('\t', "&#9;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_steps_is_escaped_and_kept_legal_xml() {
        assert_eq!(attr("a<b & \"c\"\nd"), "a&lt;b &amp; &quot;c&quot;&#10;d");
        assert_eq!(text("bell\x07 ]]> <x>"), "bell\\x07 ]]&gt; &lt;x&gt;");
    }
}
