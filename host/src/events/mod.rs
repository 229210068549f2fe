//! A run is a stream of events; terminals, CI logs and (later) journals are renderers of it.
//! Every event passes the secret redactor before any renderer sees it.

pub mod lines;
pub mod ndjson;
pub mod redact;

pub use redact::{MASK, Redactor};
use serde::{Serialize, Serializer};
use std::sync::{Arc, RwLock};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Where a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// The step's `log` calls.
    Log,
    /// A WASI command step's stdout, or a program's run through `process`.
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failure,
    Skipped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Skipped => "skipped",
        }
    }
}

/// Version of the event stream's JSON form (`docs/events.md`, `docs/events.schema.json`):
/// raised when a field is removed or changes type; new events and fields keep it.
pub const EVENTS_VERSION: u32 = 1;

/// How a test a step reported ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TestResult {
    Passed,
    /// An assertion did not hold (JUnit's `<failure>`).
    Failed,
    /// The test could not run as written (JUnit's `<error>`).
    Errored,
    Skipped,
}

impl TestResult {
    pub fn as_str(self) -> &'static str {
        match self {
            TestResult::Passed => "passed",
            TestResult::Failed => "failed",
            TestResult::Errored => "errored",
            TestResult::Skipped => "skipped",
        }
    }
}

/// What happened to a deployed service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transition {
    Upgrading,
    Upgraded,
    Confirmed,
    RollingBack,
    RolledBack,
    RollbackFailed,
    /// The run failed and `on-failure: pause` left the upgrade for a person.
    Paused,
    /// A canary's share of traffic changed.
    Shifted,
    /// An analysis could not decide: the upgrade waits, as it stands, for a person.
    Held,
    /// The run succeeded without deciding its upgrade.
    LeftUpgraded,
    Removed,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    RunStarted {
        run_id: String,
        pipeline: String,
        steps: usize,
        /// A replay of a recorded run rather than a run.
        replay: bool,
    },
    ComponentLoaded {
        origin: String,
        digest: String,
        /// Read from the compile cache instead of compiled.
        cached: bool,
        #[serde(rename = "duration_ms", serialize_with = "millis")]
        duration: Duration,
    },
    StepStarted {
        step: String,
        uses: String,
        attempt: u32,
    },
    Log {
        step: String,
        level: Level,
        stream: Stream,
        message: String,
    },
    Progress {
        step: String,
        label: String,
        done: u64,
        total: Option<u64>,
    },
    Annotation {
        step: String,
        level: Level,
        title: Option<String>,
        message: String,
        file: Option<String>,
        line: Option<u32>,
        column: Option<u32>,
    },
    /// A test of a test tool the step ran, from the tool's report.
    TestCase {
        step: String,
        suite: String,
        name: String,
        classname: Option<String>,
        #[serde(rename = "duration_ms", serialize_with = "millis")]
        duration: Duration,
        outcome: TestResult,
        message: Option<String>,
        /// The failure's or error's type.
        #[serde(rename = "type")]
        kind: Option<String>,
        /// The failure's or error's text.
        output: Option<String>,
        /// What the test printed.
        stdout: Option<String>,
        stderr: Option<String>,
    },
    /// A measurement a step took of a metric, and its verdict.
    Measurement {
        step: String,
        #[serde(flatten)]
        measurement: wharf_journal::Measurement,
    },
    /// The step cache's decision on a step: why it runs (before its `StepStarted`), or that
    /// it was taken from the cache (`detail` names the run it came from and the time it
    /// saved).
    Cache {
        step: String,
        hit: bool,
        detail: String,
    },
    StepRetrying {
        step: String,
        attempt: u32,
        error: String,
        #[serde(rename = "delay_ms", serialize_with = "millis")]
        delay: Duration,
    },
    StepFinished {
        step: String,
        outcome: Outcome,
        #[serde(rename = "duration_ms", serialize_with = "millis")]
        duration: Duration,
        /// `kind: message` for a failure, the `if:` text for a skip.
        detail: Option<String>,
        #[serde(serialize_with = "pairs")]
        outputs: Vec<(String, String)>,
    },
    /// Something the run's operator must see whatever the verbosity: deploy decisions,
    /// interruptions.
    Notice {
        message: String,
    },
    /// A deploy's state changed; `message` says it for people.
    Deploy {
        service: String,
        transition: Transition,
        version: Option<String>,
        digest: Option<String>,
        /// The percent of the traffic `version` takes after the transition, where a canary
        /// shares it (`shifted`, and the `upgraded` or `rolled-back` that ends a canary).
        #[serde(skip_serializing_if = "Option::is_none")]
        traffic: Option<u8>,
        message: String,
    },
    /// The last event of a run: after its deploys were settled.
    RunFinished {
        outcome: Outcome,
        #[serde(rename = "duration_ms", serialize_with = "millis")]
        duration: Duration,
        summary: String,
        exit_code: u8,
    },
}

fn millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1e6).round() / 1e3)
}

fn pairs<S: Serializer>(pairs: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(pairs.iter().map(|(k, v)| (k, v)))
}

impl Event {
    fn redact(&mut self, r: &Redactor) {
        let fix = |s: &mut String| {
            if let Some(clean) = r.redact(s) {
                *s = clean;
            }
        };
        match self {
            Event::Log { message, .. } => fix(message),
            Event::Progress { label, .. } => fix(label),
            Event::Annotation {
                title, message, file, ..
            } => {
                fix(message);
                title.iter_mut().for_each(fix);
                file.iter_mut().for_each(fix);
            }
            Event::StepRetrying { error, .. } => fix(error),
            Event::Cache { detail, .. } => fix(detail),
            Event::Measurement { measurement, .. } => {
                fix(&mut measurement.metric);
                fix(&mut measurement.detail);
            }
            Event::TestCase {
                suite,
                name,
                classname,
                message,
                kind,
                output,
                stdout,
                stderr,
                ..
            } => {
                fix(suite);
                fix(name);
                for text in [classname, message, kind, output, stdout, stderr] {
                    text.iter_mut().for_each(fix);
                }
            }
            Event::StepFinished { detail, outputs, .. } => {
                detail.iter_mut().for_each(fix);
                outputs.iter_mut().for_each(|(_, v)| fix(v));
            }
            Event::RunFinished { summary, .. } => fix(summary),
            Event::Notice { message } | Event::Deploy { message, .. } => fix(message),
            Event::RunStarted { .. } | Event::ComponentLoaded { .. } | Event::StepStarted { .. } => {}
        }
    }
}

/// A size as people read it: `812 bytes`, `36.0 KiB`, `4.5 MiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `1 step`, `2 steps`.
pub fn count(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// A duration as people read it: `12ms`, `3.4s`, `2m05s`.
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else if ms < 60_000.0 {
        format!("{:.1}s", ms / 1000.0)
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

/// Something that consumes events: a terminal renderer, a CI log, a journal.
pub trait Sink: Send + Sync {
    fn event(&self, event: &Event);
}

#[derive(Clone, Default)]
pub struct Events {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    sinks: RwLock<Vec<Arc<dyn Sink>>>,
    redactor: RwLock<Redactor>,
}

impl Events {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_sink(&self, sink: Arc<dyn Sink>) {
        self.inner.sinks.write().unwrap().push(sink);
    }

    /// Mask `secret` in every later event.
    pub fn add_secret(&self, secret: &str) {
        self.inner.redactor.write().unwrap().add(secret);
    }

    pub fn redact(&self, text: &str) -> String {
        self.inner
            .redactor
            .read()
            .unwrap()
            .redact(text)
            .unwrap_or_else(|| text.to_string())
    }

    /// Length of the longest text the redactor masks: output held back before a cut.
    pub fn longest_secret(&self) -> usize {
        self.inner.redactor.read().unwrap().longest()
    }

    pub fn emit(&self, mut event: Event) {
        event.redact(&self.inner.redactor.read().unwrap());
        for sink in self.inner.sinks.read().unwrap().iter() {
            sink.event(&event);
        }
    }
}

/// Collects events in memory; for tests and for callers that inspect a run afterwards.
#[derive(Default)]
pub struct Recorder(pub std::sync::Mutex<Vec<Event>>);

impl Sink for Recorder {
    fn event(&self, event: &Event) {
        self.0.lock().unwrap().push(event.clone());
    }
}
