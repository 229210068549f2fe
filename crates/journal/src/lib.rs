//! The run journal's format: what a run records (every host call of a step with its
//! arguments and result, the clock readings and random bytes a step was handed, its log,
//! step boundaries), how it is written and read back, and workspace snapshots. Knows nothing
//! of the wasm engine; wharf's tape and replay use it. `docs/journal.md` describes it.
//!
//! A run's folder, `.wharf/runs/RUN_ID/`:
//!
//! ```text
//! journal.jsonl        one JSON object per line, appended and flushed as the run goes
//! pipeline.yml         the pipeline file as it was run
//! components/HEX.wasm  the components of the workspace's own steps (built-in steps are in
//!                      the wharf binary); every component is also in `.wharf/components/`
//! snapshots/STEP-N.tar the workspace paths attempt N of a step looked at, as it found them
//! ```

pub mod clocks;
pub mod reader;
pub mod retention;
pub mod snapshot;
pub mod writer;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const FORMAT: &str = "wharf-journal";
/// 2: a step's snapshot holds what it looked at ([`Entry::Snapshot`]), clock calls are
/// written compactly ([`Entry::Clocks`]), and built-in components stay out of the run folder. Version 1 journals still read and replay.
pub const VERSION: u32 = 2;

/// One line of `journal.jsonl`: when (milliseconds since the run started) and what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub at_ms: u64,
    #[serde(flatten)]
    pub entry: Entry,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Entry {
    /// Always the first line.
    Header {
        format: String,
        version: u32,
        wharf: String,
    },
    RunStarted {
        run_id: String,
        pipeline: String,
        /// The snapshot's file name in the run folder.
        pipeline_file: String,
        vars: BTreeMap<String, String>,
        workspace: String,
        started: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resumed_from: Option<String>,
        /// The workspace's git revision (commit, and a digest of uncommitted changes).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        revision: Option<String>,
        /// An audit run (`wharf run --audit`): refused file, process and HTTP accesses were
        /// let through and noted, and nothing could deploy.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        audit: bool,
        /// How programs were confined (`--sandbox`): `auto`, `strict` or `off`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sandbox: Option<String>,
    },
    /// A step's component, stored under `components/`.
    Component {
        step: String,
        origin: String,
        digest: String,
    },
    StepStarted {
        step: String,
        uses: String,
        attempt: u32,
        /// The parameters the step was called with, interpolated.
        params: serde_json::Value,
        /// Its effective grants, as `wharf validate` prints them.
        grants: Vec<String>,
        /// The directories its grants opened: (workspace-relative path, writable).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        preopens: Vec<(String, bool)>,
        /// Version 1: the snapshot of those directories as the step found them. Version 2
        /// writes a [`Entry::Snapshot`] instead, once the step looks at a workspace path.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        snapshot: Option<String>,
    },
    /// The snapshot of the workspace paths an attempt looked at (opened, listed, examined or
    /// removed), each as it was the first time; written when it looks at the first one.
    Snapshot {
        step: String,
        attempt: u32,
        snapshot: String,
    },
    /// A host call of a step: what it asked and what it got.
    Call {
        step: String,
        attempt: u32,
        seq: u64,
        interface: String,
        function: String,
        args: serde_json::Value,
        result: serde_json::Value,
        micros: u64,
    },
    /// Consecutive clock calls of a step, from call `seq` on, one compact value each
    /// ([`clocks`]).
    Clocks {
        step: String,
        attempt: u32,
        seq: u64,
        calls: Vec<serde_json::Value>,
    },
    Log {
        step: String,
        level: String,
        stream: String,
        message: String,
    },
    StepFinished {
        step: String,
        outcome: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        outputs: Vec<(String, String)>,
        millis: u64,
    },
    /// In an audit run, what an attempt needed beyond its grants: `KEY: [VALUE]` lines of
    /// `allow:` (`wharf grants RUN` merges them into a block).
    Audited {
        step: String,
        attempt: u32,
        needed: Vec<String>,
    },
    /// The step cache's decision on a step: a hit (from which run, time saved), or why it
    /// ran (the first input that differed, or why it is never cached). `wharf cache why`
    /// prints it.
    Cache { step: String, hit: bool, detail: String },
    /// One measurement a step took of a metric (`builtin:analysis`), and what it decided.
    Measurement {
        step: String,
        #[serde(flatten)]
        measurement: Measurement,
    },
    /// A canary's share of traffic changed: the percent `version` of `service` takes now
    /// (0 after a rollback, 100 once every instance runs it).
    Traffic {
        service: String,
        version: String,
        percent: u8,
    },
    /// Host decisions outside any step: rollbacks after a failure, interruptions.
    Notice { message: String },
    RunFinished {
        outcome: String,
        exit_code: u8,
        millis: u64,
    },
}

/// One measurement of a metric, and what it decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub metric: String,
    /// None when no number could be taken (no answer, no data, not a number).
    pub value: Option<f64>,
    /// `successful`, `failed` or `inconclusive`.
    pub verdict: String,
    /// Recorded, deciding nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Which measurement, the rule it was judged by, why no number was taken.
    pub detail: String,
}

impl Measurement {
    /// The value as people read it: at most six decimals, no trailing zeros.
    pub fn value_text(&self) -> String {
        let Some(value) = self.value else {
            return "no value".into();
        };
        let text = format!("{value:.6}");
        let text = text.trim_end_matches('0').trim_end_matches('.');
        if text == "-0" { "0".into() } else { text.into() }
    }

    /// `METRIC = VALUE: VERDICT (DETAIL)`, `[dry run]` after the verdict of one.
    pub fn describe(&self) -> String {
        format!(
            "{} = {}: {}{} ({})",
            self.metric,
            self.value_text(),
            self.verdict,
            if self.dry_run { " [dry run]" } else { "" },
            self.detail
        )
    }
}

/// What a name in a journal is used as, and so the rule it must meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// A step id (also part of replay directories): the pipeline's identifier rule.
    Step,
    /// An output name: the same rule.
    Output,
    /// A run id (a folder under `.wharf/runs`): letters, digits and `-`.
    Run,
    /// A file of the run folder: one plain name (`pipeline.yml`).
    File,
    /// A snapshot: `snapshots/NAME.tar`, NAME one plain name.
    Snapshot,
    /// A component digest (a file under `components/`): `sha256:` and 64 hex digits.
    Digest,
    /// A line of text printed as YAML (`wharf grants`): no control characters.
    Line,
}

impl NameKind {
    pub fn describe(self) -> &'static str {
        match self {
            NameKind::Step => "step id (a letter, then letters, digits, `-` and `_`)",
            NameKind::Output => "output name (a letter, then letters, digits, `-` and `_`)",
            NameKind::Run => "run id (letters, digits and `-`)",
            NameKind::File => "file name of the run folder",
            NameKind::Snapshot => "snapshot name (`snapshots/NAME.tar`)",
            NameKind::Digest => "component digest (`sha256:` and 64 hex digits)",
            NameKind::Line => "line of text (no control characters)",
        }
    }

    /// Whether `name` meets this rule.
    pub fn admits(self, name: &str) -> bool {
        let plain_file = |n: &str| {
            !n.is_empty()
                && n.len() <= 255
                && n != "."
                && n != ".."
                && !n.contains('/')
                && !n.chars().any(char::is_control)
        };
        match self {
            NameKind::Step | NameKind::Output => wharf_pipeline::model::is_identifier(name),
            NameKind::Run => {
                !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            }
            NameKind::File => plain_file(name),
            NameKind::Snapshot => name
                .strip_prefix("snapshots/")
                .and_then(|n| n.strip_suffix(".tar"))
                .is_some_and(plain_file),
            NameKind::Digest => wharf_oci::digest_hex(name).is_some(),
            NameKind::Line => !name.chars().any(char::is_control),
        }
    }
}

impl Entry {
    /// Every name the entry holds that wharf uses as an id, a file name or printed text, with
    /// its rule: a reader checks them all before anything is named after them.
    pub fn names(&self) -> Vec<(NameKind, &str)> {
        let mut names = Vec::new();
        if let Some(step) = self.step() {
            names.push((NameKind::Step, step));
        }
        match self {
            Entry::RunStarted {
                run_id,
                pipeline_file,
                resumed_from,
                ..
            } => {
                names.push((NameKind::Run, run_id.as_str()));
                names.push((NameKind::File, pipeline_file.as_str()));
                names.extend(resumed_from.as_deref().map(|r| (NameKind::Run, r)));
            }
            Entry::Component { digest, .. } => names.push((NameKind::Digest, digest.as_str())),
            Entry::StepStarted { snapshot, .. } => {
                names.extend(snapshot.as_deref().map(|s| (NameKind::Snapshot, s)));
            }
            Entry::Snapshot { snapshot, .. } => names.push((NameKind::Snapshot, snapshot.as_str())),
            Entry::StepFinished { outputs, .. } => {
                names.extend(outputs.iter().map(|(name, _)| (NameKind::Output, name.as_str())));
            }
            Entry::Audited { needed, .. } => names.extend(needed.iter().map(|n| (NameKind::Line, n.as_str()))),
            Entry::Measurement { measurement, .. } => names.push((NameKind::Line, measurement.metric.as_str())),
            Entry::Traffic { service, version, .. } => {
                names.push((NameKind::Step, service.as_str()));
                names.push((NameKind::Line, version.as_str()));
            }
            _ => {}
        }
        names
    }

    /// The step an entry belongs to; None for the run's own entries.
    pub fn step(&self) -> Option<&str> {
        match self {
            Entry::Component { step, .. }
            | Entry::StepStarted { step, .. }
            | Entry::Snapshot { step, .. }
            | Entry::Call { step, .. }
            | Entry::Clocks { step, .. }
            | Entry::Log { step, .. }
            | Entry::StepFinished { step, .. }
            | Entry::Audited { step, .. }
            | Entry::Measurement { step, .. }
            | Entry::Cache { step, .. } => Some(step),
            Entry::Header { .. }
            | Entry::RunStarted { .. }
            | Entry::Traffic { .. }
            | Entry::Notice { .. }
            | Entry::RunFinished { .. } => None,
        }
    }
}

/// `.wharf/runs` under a workspace.
pub fn runs_dir(workspace: &Path) -> PathBuf {
    workspace.join(".wharf/runs")
}

/// `.wharf/components` under a workspace: every run's components, once by digest.
pub fn component_store(workspace: &Path) -> PathBuf {
    workspace.join(".wharf/components")
}

/// A run folder from an id (looked up in the workspace) or a path to the folder itself.
pub fn find_run(workspace: &Path, run: &str) -> Result<PathBuf, String> {
    let as_path = Path::new(run);
    if as_path.join("journal.jsonl").exists() {
        return Ok(as_path.to_path_buf());
    }
    let dir = runs_dir(workspace).join(run);
    if dir.join("journal.jsonl").exists() {
        return Ok(dir);
    }
    Err(format!(
        "no run `{run}` in {} (give a run id from `wharf runs`, or the path of a run folder)",
        runs_dir(workspace).display()
    ))
}
