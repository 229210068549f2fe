//! Replaying a recorded run: each step's component (or a new build of one) runs again and
//! every host call it makes is answered from the journal, in order. Nothing reaches the
//! network, runs a program, touches a registry or a deploy; clocks and randomness come from
//! the journal, so the replay is deterministic. A call that differs from the recorded one
//! stops the replay with both side by side.

use super::reader::Journal;
use super::tape::{Divergence, Player, RecordedCall, Tape, masked_str_eq};
use super::{Entry, clocks, snapshot};
use crate::capabilities::StepScope;
use crate::engine::limits::StepLimits;
use crate::engine::step::{self, StepInput, StepParams};
use crate::engine::{LoadedStep, Runtime};
use crate::events::{Event, Events, Outcome};
use crate::run::scratch::ScratchSpace;
use crate::sandbox::preopens::Preopen;
use sha2::Digest as _;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Replays keep their scratch space in the temporary directory, named so.
const SCRATCH_PREFIX: &str = "wharf-replay-";

pub struct ReplayRequest<'a> {
    pub runtime: &'a Runtime,
    pub run_dir: PathBuf,
    /// Steps to run from another component: (step id, .wasm path).
    pub substitutes: Vec<(String, PathBuf)>,
    pub events: Events,
}

#[derive(Debug)]
pub enum ReplayResult {
    /// Every step made the recorded calls and ended as recorded.
    Matched,
    Diverged(Box<Report>),
}

/// Where and how a replay left the recorded path.
#[derive(Debug)]
pub struct Report {
    pub step: String,
    pub attempt: u32,
    pub what: Mismatch,
}

#[derive(Debug)]
pub enum Mismatch {
    Call(Divergence),
    /// The step ended otherwise than recorded: (recorded, replayed) outcome and outputs.
    Ending {
        recorded: Ending,
        replayed: Ending,
    },
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.what {
            Mismatch::Call(d) => {
                let at = d
                    .recorded
                    .as_ref()
                    .map(|c| format!(" at call #{}", c.seq))
                    .unwrap_or_default();
                writeln!(
                    f,
                    "replay diverged in step `{}` (attempt {}){at}:",
                    self.step, self.attempt
                )?;
                match &d.recorded {
                    Some(c) => writeln!(f, "  recorded: {}.{} {}", c.interface, c.function, c.args)?,
                    None => writeln!(f, "  recorded: (no further call: the recorded step had returned here)")?,
                }
                match &d.replayed {
                    Some((i, function, args)) => write!(f, "  replayed: {i}.{function} {args}"),
                    None => write!(f, "  replayed: (no further call: the step returned)"),
                }
            }
            Mismatch::Ending { recorded, replayed } => {
                writeln!(
                    f,
                    "replay diverged in step `{}` (attempt {}): it ended differently",
                    self.step, self.attempt
                )?;
                writeln!(
                    f,
                    "  recorded: {} {} {:?}",
                    recorded.0,
                    recorded.1.as_deref().unwrap_or(""),
                    recorded.2
                )?;
                write!(
                    f,
                    "  replayed: {} {} {:?}",
                    replayed.0,
                    replayed.1.as_deref().unwrap_or(""),
                    replayed.2
                )
            }
        }
    }
}

struct Attempt<'j> {
    step: &'j str,
    uses: &'j str,
    attempt: u32,
    params: &'j serde_json::Value,
    preopens: &'j [(String, bool)],
    snapshot: Option<&'j str>,
}

/// How a step attempt ended: its outcome (`success`, `failure`), the failure's detail, its
/// outputs.
type Ending = (String, Option<String>, Vec<(String, String)>);

/// What the run folder holds that the whole replay needs.
struct Recording {
    journal: Journal,
    run_id: String,
    pipeline: String,
    /// By step: the component's (origin, digest).
    components: HashMap<String, (String, String)>,
}

impl Recording {
    fn read(run_dir: &Path) -> Result<Recording, String> {
        let journal = Journal::read(run_dir)?;
        let run_id = journal.run_id();
        let pipeline = match journal.run_started() {
            Some(Entry::RunStarted { pipeline, .. }) => pipeline.clone(),
            _ => String::new(),
        };
        let mut components = HashMap::new();
        for e in journal.entries() {
            if let Entry::Component { step, origin, digest } = e {
                components.insert(step.clone(), (origin.clone(), digest.clone()));
            }
        }
        Ok(Recording {
            journal,
            run_id,
            pipeline,
            components,
        })
    }
}

/// How replaying one attempt went.
enum Replayed {
    AsRecorded,
    Diverged(Box<Report>),
    /// The journal ends inside this attempt: a killed run's last step.
    CutOff,
}

pub async fn replay(req: ReplayRequest<'_>) -> Result<ReplayResult, String> {
    let recording = Recording::read(&req.run_dir)?;
    let run_id = &recording.run_id;
    check_substitutes(&req.substitutes, &recording.components, run_id)?;
    let entries: Vec<&Entry> = recording.journal.entries().collect();
    req.events.emit(Event::RunStarted {
        run_id: run_id.clone(),
        pipeline: recording.pipeline.clone(),
        steps: entries
            .iter()
            .filter(|e| matches!(e, Entry::StepFinished { .. }))
            .count(),
        replay: true,
    });
    let started = Instant::now();
    let scratch = scratch_space()?;
    let mut loaded: HashMap<String, Arc<LoadedStep>> = HashMap::new();
    let mut replayed_steps = 0;
    for index in in_recorded_order(&entries) {
        let attempt = match entries[index] {
            Entry::StepStarted {
                step,
                uses,
                attempt,
                params,
                preopens,
                snapshot,
                ..
            } => Attempt {
                step,
                uses,
                attempt: *attempt,
                params,
                preopens,
                snapshot: snapshot.as_deref(),
            },
            // Steps that did not run (skipped, or reused by a resumed run) are shown as such.
            Entry::StepFinished {
                step,
                outcome,
                detail,
                outputs,
                ..
            } if !entries[..index]
                .iter()
                .any(|e| matches!(e, Entry::StepStarted { step: s, .. } if s == step)) =>
            {
                req.events.emit(Event::StepFinished {
                    step: step.clone(),
                    outcome: if outcome == "skipped" {
                        Outcome::Skipped
                    } else {
                        Outcome::Success
                    },
                    duration: Duration::ZERO,
                    detail: detail.clone(),
                    outputs: outputs.clone(),
                });
                continue;
            }
            _ => continue,
        };
        let step = match loaded.get(attempt.step) {
            Some(s) => s.clone(),
            None => {
                let s = load_component(&req, &recording.components, attempt.step).await?;
                loaded.insert(attempt.step.to_string(), s.clone());
                s
            }
        };
        match replay_attempt(&req, &recording, &scratch, &step, &entries, index, &attempt).await? {
            Replayed::AsRecorded => replayed_steps += 1,
            Replayed::Diverged(report) => return Ok(ReplayResult::Diverged(report)),
            Replayed::CutOff => {
                req.events.emit(Event::Notice {
                    message: format!(
                        "the journal ends inside step `{}`: the run was cut off there",
                        attempt.step
                    ),
                });
                break;
            }
        }
    }
    req.events.emit(Event::RunFinished {
        outcome: Outcome::Success,
        duration: started.elapsed(),
        summary: format!(
            "replay of {run_id} matched the journal: {replayed_steps} step attempt(s) reproduced{}",
            if recording.journal.truncated {
                " (the journal was cut off; replayed as far as it goes)"
            } else {
                ""
            }
        ),
        exit_code: 0,
    });
    Ok(ReplayResult::Matched)
}

/// The replay's scratch space in the temporary directory, after sweeping what killed
/// replays left there.
fn scratch_space() -> Result<ScratchSpace, String> {
    let temp = std::env::temp_dir();
    ScratchSpace::sweep(
        std::fs::read_dir(&temp)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(SCRATCH_PREFIX))
            .map(|e| e.path()),
    );
    // Named by this process, never by anything the run folder says.
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    ScratchSpace::create(&temp.join(format!("{SCRATCH_PREFIX}{}-{unique}", std::process::id())))
        .map_err(|e| format!("cannot create the replay's scratch space in {}: {e}", temp.display()))
}

/// Run one attempt again against its tape, and compare how it went with the journal.
async fn replay_attempt(
    req: &ReplayRequest<'_>,
    recording: &Recording,
    scratch: &ScratchSpace,
    step: &Arc<LoadedStep>,
    entries: &[&Entry],
    index: usize,
    attempt: &Attempt<'_>,
) -> Result<Replayed, String> {
    let later = &entries[index + 1..];
    let calls = tape_of(entries, attempt, &req.run_dir)?;
    // How the original attempt ended: a later attempt means it failed and was retried.
    let retried = later.iter().any(
        |e| matches!(e, Entry::StepStarted { step, attempt: a, .. } if step == attempt.step && *a > attempt.attempt),
    );
    let recorded_end = later.iter().find_map(|e| match e {
        Entry::StepFinished {
            step,
            outcome,
            detail,
            outputs,
            ..
        } if step == attempt.step => Some((outcome.clone(), detail.clone(), outputs.clone())),
        _ => None,
    });
    let (workspace, preopens) = workspace_of(req, scratch, later, attempt)?;
    let output_dir = if step.needs_scratch() {
        Some(in_scratch(scratch, "output", attempt)?)
    } else {
        None
    };
    let params: StepParams = serde_json::from_value(attempt.params.clone())
        .map_err(|e| format!("journal: parameters of `{}`: {e}", attempt.step))?;
    let player = Arc::new(Player::new(attempt.step, calls));
    req.events.emit(Event::StepStarted {
        step: attempt.step.to_string(),
        uses: attempt.uses.to_string(),
        attempt: attempt.attempt,
    });
    let step_started = Instant::now();
    let limits = StepLimits {
        timeout: Duration::from_secs(10 * 60),
        ..StepLimits::default()
    };
    let result = step::run(
        step,
        StepInput {
            scope: StepScope::new(
                &recording.run_id,
                attempt.step,
                &workspace,
                req.events.clone(),
                limits.log_bytes,
            ),
            pipeline: recording.pipeline.clone(),
            attempt: attempt.attempt,
            params,
            secrets: Arc::default(),
            deployer: None,
            grants: Arc::default(),
            preopens,
            scratch: output_dir,
            tape: Tape::Replay(player.clone()),
            limits,
            audit: None,
            programs: None,
            release: Default::default(),
        },
    )
    .await;
    let replayed: Ending = match &result {
        Ok(outputs) => ("success".to_string(), None, outputs.clone()),
        Err(f) => (
            "failure".to_string(),
            Some(format!("{}: {}", f.kind_name(), f.message)),
            Vec::new(),
        ),
    };
    let report = |what| {
        Box::new(Report {
            step: attempt.step.to_string(),
            attempt: attempt.attempt,
            what,
        })
    };
    let stopped_by_limit = recorded_end
        .as_ref()
        .and_then(|(_, d, _)| d.as_deref())
        .is_some_and(|d| d.starts_with("timeout:") || d.starts_with("limit:"));
    // A call that differed, or recorded calls the step did not make (a step stopped by a
    // limit had no say in where it stopped).
    let divergence = player.divergence.lock().unwrap().clone().or_else(|| {
        let next = player.remaining().filter(|_| !stopped_by_limit)?;
        Some(Divergence {
            step: attempt.step.to_string(),
            recorded: Some(next),
            replayed: None,
        })
    });
    // Running out of calls inside a step the journal never saw finish is where a killed
    // run's journal ends, not a divergence.
    let cut_off_here = recorded_end.is_none();
    if let Some(divergence) = divergence
        && !(cut_off_here && divergence.recorded.is_none())
    {
        return Ok(Replayed::Diverged(report(Mismatch::Call(divergence))));
    }
    let Some(recorded) = recorded_end else {
        return Ok(Replayed::CutOff);
    };
    req.events.emit(Event::StepFinished {
        step: attempt.step.to_string(),
        outcome: if replayed.0 == "success" {
            Outcome::Success
        } else {
            Outcome::Failure
        },
        duration: step_started.elapsed(),
        detail: replayed.1.clone(),
        outputs: replayed.2.clone(),
    });
    if ends_as_recorded(&recorded, &replayed, retried, stopped_by_limit) {
        Ok(Replayed::AsRecorded)
    } else {
        Ok(Replayed::Diverged(report(Mismatch::Ending { recorded, replayed })))
    }
}

/// The calls an attempt made, as the journal recorded them (clock reads kept compactly are
/// expanded).
fn tape_of(entries: &[&Entry], attempt: &Attempt<'_>, run_dir: &Path) -> Result<Vec<RecordedCall>, String> {
    let mut calls: Vec<RecordedCall> = Vec::new();
    for entry in entries {
        match entry {
            Entry::Call {
                step,
                attempt: a,
                seq,
                interface,
                function,
                args,
                result,
                ..
            } if step == attempt.step && *a == attempt.attempt => calls.push(RecordedCall {
                seq: *seq,
                interface: interface.clone(),
                function: function.clone(),
                args: args.clone(),
                result: result.clone(),
            }),
            Entry::Clocks {
                step,
                attempt: a,
                seq,
                calls: compact,
            } if step == attempt.step && *a == attempt.attempt => {
                let expanded = clocks::expand(compact).map_err(|e| format!("run folder {}: {e}", run_dir.display()))?;
                for (n, (interface, function, args, result)) in expanded.into_iter().enumerate() {
                    calls.push(RecordedCall {
                        seq: seq.saturating_add(n as u64),
                        interface,
                        function,
                        args,
                        result,
                    });
                }
            }
            _ => {}
        }
    }
    Ok(calls)
}

/// A directory of the scratch space for one attempt, named by this process.
fn in_scratch(scratch: &ScratchSpace, what: &str, attempt: &Attempt<'_>) -> Result<PathBuf, String> {
    scratch
        .named(&format!("{what}-{}-{}", attempt.step, attempt.attempt))
        .map_err(|e| format!("replay scratch space {}: {e}", scratch.path().display()))
}

/// The attempt's workspace as it saw it (its snapshot unpacked in the scratch space) and
/// its directories opened as a run opens them. A run folder may come from anywhere: every
/// path is resolved beneath the scratch workspace.
fn workspace_of(
    req: &ReplayRequest<'_>,
    scratch: &ScratchSpace,
    later: &[&Entry],
    attempt: &Attempt<'_>,
) -> Result<(PathBuf, Vec<Preopen>), String> {
    let workspace = in_scratch(scratch, "workspace", attempt)?;
    // Version 2 names the snapshot in its own entry, version 1 in the step's start.
    let snapshot = attempt.snapshot.or_else(|| {
        later.iter().find_map(|e| match e {
            Entry::Snapshot {
                step,
                attempt: a,
                snapshot,
            } if step == attempt.step && *a == attempt.attempt => Some(snapshot.as_str()),
            _ => None,
        })
    });
    if let Some(snapshot) = snapshot {
        let bytes = run_file(&req.run_dir, snapshot, snapshot::LIMITS.bytes + 1024)?;
        snapshot::unpack(&bytes[..], snapshot, &workspace, snapshot::LIMITS)
            .map_err(|e| format!("run folder {}: {e}", req.run_dir.display()))?;
    }
    let mut preopens: Vec<Preopen> = Vec::new();
    for (guest, write) in attempt.preopens {
        let Some(guest) = crate::sandbox::grants::normalize(guest) else {
            return Err(format!(
                "journal: step `{}` opens `{guest}`, which is not a workspace path",
                attempt.step
            ));
        };
        let opened = crate::sandbox::preopens::open(&workspace, &guest, true)
            .map_err(|e| format!("run folder {}: step `{}`: {e}", req.run_dir.display(), attempt.step))?;
        preopens.push(Preopen {
            write: *write,
            ..opened
        });
    }
    Ok((workspace, preopens))
}

/// Whether a replayed attempt ended as the journal says. A retried attempt only has to fail
/// again; one a limit stopped (a timeout, a log limit) had no say in how it ended; the rest
/// end with the same outcome and outputs, and a failure with the same message (secrets
/// masked on both sides).
fn ends_as_recorded(recorded: &Ending, replayed: &Ending, retried: bool, stopped_by_limit: bool) -> bool {
    if retried {
        return replayed.0 == "failure";
    }
    if stopped_by_limit {
        return true;
    }
    let outputs_match = recorded.2.len() == replayed.2.len()
        && recorded
            .2
            .iter()
            .zip(&replayed.2)
            .all(|((rk, rv), (k, v))| rk == k && masked_str_eq(rv, v));
    let detail_match = match (&recorded.1, &replayed.1) {
        (Some(r), Some(d)) => masked_str_eq(r, d),
        (r, d) => r == d,
    };
    recorded.0 == replayed.0 && outputs_match && (recorded.0 == "success" || detail_match)
}

/// The entries that start an attempt or tell of a step that did not run, in the order the
/// run finished them: steps that ran side by side are replayed one at a time, each from its
/// own tape, and reported in the order the run reported them. An attempt the journal never
/// saw end comes last.
fn in_recorded_order(entries: &[&Entry]) -> Vec<usize> {
    let mut keyed: Vec<(usize, usize)> = entries
        .iter()
        .enumerate()
        .filter_map(|(index, entry)| match entry {
            Entry::StepStarted { step, attempt, .. } => {
                let end = entries[index + 1..].iter().position(|e| match e {
                    Entry::StepFinished { step: s, .. } => s == step,
                    Entry::StepStarted {
                        step: s, attempt: a, ..
                    } => s == step && a > attempt,
                    _ => false,
                });
                Some((end.map_or(usize::MAX, |n| index + 1 + n), index))
            }
            Entry::StepFinished { .. } => Some((index, index)),
            _ => None,
        })
        .collect();
    keyed.sort();
    keyed.into_iter().map(|(_, index)| index).collect()
}

/// Every `--step ID=PATH` names a recorded step and a file: a typo must not quietly replay
/// the recorded component instead.
fn check_substitutes(
    substitutes: &[(String, PathBuf)],
    components: &HashMap<String, (String, String)>,
    run_id: &str,
) -> Result<(), String> {
    for (step, path) in substitutes {
        if !components.contains_key(step) {
            let mut steps: Vec<&str> = components.keys().map(String::as_str).collect();
            steps.sort_unstable();
            return Err(format!(
                "`--step {step}=...`: run {run_id} has no step `{step}`; its steps are: {}",
                steps.join(", ")
            ));
        }
        if !path.is_file() {
            return Err(format!("`--step {step}={}`: no such file", path.display()));
        }
    }
    Ok(())
}

async fn load_component(
    req: &ReplayRequest<'_>,
    components: &HashMap<String, (String, String)>,
    step: &str,
) -> Result<Arc<LoadedStep>, String> {
    if let Some((_, path)) = req.substitutes.iter().find(|(s, _)| s == step) {
        let bytes = crate::bounded::read(path, COMPONENT_LIMIT).map_err(|e| e.to_string())?;
        return req
            .runtime
            .load_bytes(path.display().to_string(), bytes, &req.events)
            .await
            .map_err(|p| format!("{}: {}", p.message, p.help));
    }
    let (origin, digest) = components
        .get(step)
        .ok_or_else(|| format!("the journal has no component for step `{step}`"))?;
    let Some(hex) = crate::oci::digest_hex(digest) else {
        return Err(format!(
            "journal: step `{step}` names component `{digest}`, which is not a sha256 digest"
        ));
    };
    let bytes = find_component(&req.run_dir, hex, digest).map_err(|altered| match altered {
        Some(actual) => format!(
            "run folder {}: components/{hex}.wasm is not the component the run recorded (it \
             hashes to {actual}); the folder was altered or damaged",
            req.run_dir.display()
        ),
        None => format!(
            "run folder {}: step `{step}` ran component {digest} ({origin}), which is neither in \
             the folder's components/, nor in the component store .wharf/components/ of the \
             workspace it sits in, nor built into this wharf; copy that store from the workspace \
             that made the run, or replay with `--step {step}=FILE.wasm`",
            req.run_dir.display()
        ),
    })?;
    req.runtime
        .load_bytes(origin.clone(), bytes, &req.events)
        .await
        .map_err(|p| format!("{}: {}", p.message, p.help))
}

/// The bytes of component `digest`: from the run folder, then the component store of the
/// workspace the folder sits in, then the built-in steps of this binary. Only bytes that hash
/// to the recorded digest count, so an altered or foreign file is never run; when none is
/// found, the error holds the digest of an altered copy in the folder, if there was one.
fn find_component(run_dir: &Path, hex: &str, digest: &str) -> Result<Vec<u8>, Option<String>> {
    let path = format!("components/{hex}.wasm");
    let digest_of = |bytes: &[u8]| format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)));
    let mut altered = None;
    if let Ok(bytes) = run_file(run_dir, &path, COMPONENT_LIMIT) {
        let actual = digest_of(&bytes);
        if actual == digest {
            return Ok(bytes);
        }
        altered = Some(actual);
    }
    // RUN_DIR is `WORKSPACE/.wharf/runs/ID`; the store is `WORKSPACE/.wharf/components`.
    if let Some(wharf_dir) = run_dir.parent().and_then(Path::parent)
        && let Ok(bytes) = run_file(wharf_dir, &path, COMPONENT_LIMIT)
        && digest_of(&bytes) == digest
    {
        return Ok(bytes);
    }
    crate::builtins::BUILTINS
        .iter()
        .find(|(_, bytes)| digest_of(bytes) == digest)
        .map(|(_, bytes)| bytes.to_vec())
        .ok_or(altered)
}

/// Largest component a replay reads from a run folder.
const COMPONENT_LIMIT: u64 = 256 << 20;

/// A file of the run folder, resolved beneath it and read within `limit` bytes.
fn run_file(run_dir: &Path, name: &str, limit: u64) -> Result<Vec<u8>, String> {
    let path = crate::beneath::existing(run_dir, name).map_err(|e| format!("run folder: {e}"))?;
    crate::bounded::read(&path, limit).map_err(|e| format!("run folder: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ending(outcome: &str, detail: Option<&str>, outputs: &[(&str, &str)]) -> Ending {
        (
            outcome.to_string(),
            detail.map(str::to_string),
            outputs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        )
    }

    #[test]
    fn an_attempt_ends_as_recorded_by_outcome_outputs_and_failure_message() {
        let ok = ending("success", None, &[("tag", "1.0.1-22-7e56158")]);
        assert!(ends_as_recorded(&ok, &ok.clone(), false, false));
        let other_output = ending("success", None, &[("tag", "1.0.1-23-aaaaaaa")]);
        assert!(!ends_as_recorded(&ok, &other_output, false, false));
        let missing_output = ending("success", None, &[]);
        assert!(!ends_as_recorded(&ok, &missing_output, false, false));
        let failed = ending("failure", Some("permanent: no"), &[]);
        assert!(!ends_as_recorded(&ok, &failed, false, false));
        assert!(!ends_as_recorded(
            &failed,
            &ending("failure", Some("permanent: other"), &[]),
            false,
            false
        ));
        // A masked secret in the journal matches whatever the replay says in its place.
        let masked = ending(
            "success",
            None,
            &[("url", &format!("https://{}@host", crate::events::MASK))],
        );
        let replayed = ending("success", None, &[("url", "https://token@host")]);
        assert!(ends_as_recorded(&masked, &replayed, false, false));
    }

    #[test]
    fn a_retried_attempt_must_fail_again_and_a_limit_decides_nothing() {
        let recorded = ending("failure", Some("transient: refused"), &[]);
        assert!(ends_as_recorded(
            &recorded,
            &ending("failure", Some("anything"), &[]),
            true,
            false
        ));
        assert!(!ends_as_recorded(&recorded, &ending("success", None, &[]), true, false));
        let timed_out = ending("failure", Some("timeout: 5s"), &[]);
        assert!(ends_as_recorded(
            &timed_out,
            &ending("success", None, &[("x", "y")]),
            false,
            true
        ));
    }
}
