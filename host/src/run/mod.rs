//! Executing a validated pipeline: conditions, interpolation, retries, outputs passed
//! forward. Each step runs in its own store; only declared outputs travel between steps.

pub mod prune;
pub mod scratch;

use crate::capabilities::StepScope;
use crate::capabilities::secrets::SecretStore;
use crate::deploy::Deployer;
use crate::engine::LoadedStep;
use crate::engine::limits::StepLimits;
use crate::engine::step::{self, FailureKind, StepFailure, StepInput, StepParams};
use crate::events::{Event, Events, Outcome};
use crate::journal::Entry;
use crate::journal::tape::{Recorder, Tape};
use crate::journal::writer::JournalWriter;
use crate::pipeline::describe::Value;
use crate::pipeline::expr::{self, Reference, Scope, StatusFn};
use crate::pipeline::model::template;
use crate::pipeline::params::{convert, map_scalars};
use crate::pipeline::{Diagnostic, Pipeline, StepDecl};
use crate::sandbox::Grants;
use crate::sandbox::preopens::preopens;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct RunRequest<'a> {
    pub pipeline: &'a Pipeline,
    /// One per pipeline step, in order.
    pub steps: Vec<Arc<LoadedStep>>,
    pub vars: BTreeMap<String, String>,
    /// The variables of wharf's environment the operator passed (`--pass-env`), by name.
    pub env: BTreeMap<String, String>,
    pub workspace: PathBuf,
    pub run_id: String,
    pub secrets: Arc<SecretStore>,
    pub deployer: Arc<Deployer>,
    pub events: Events,
    /// Where the run is recorded.
    pub journal: Option<Arc<JournalWriter>>,
    /// The run's scratch space.
    pub scratch: &'a scratch::ScratchSpace,
    /// Steps taken over from an earlier run (`--resume`), with their outputs.
    pub reuse: Option<Reuse>,
    /// An audit run: refused file, process and HTTP accesses are let through and noted
    /// ([`crate::sandbox::audit`]); nothing deploys.
    pub audit: bool,
    /// How many steps may run at once.
    pub jobs: usize,
    /// The confinement of the programs steps run.
    pub programs: Arc<crate::sandbox::programs::Programs>,
    /// The step cache; None with `--no-cache` (and in an audit).
    pub cache: Option<Arc<crate::cache::StepCache>>,
    /// How the images this run pushes came to be, for their provenance.
    pub provenance: Arc<crate::provenance::Recorder>,
}

/// The steps a resumed run does not run again.
#[derive(Debug, Clone, Default)]
pub struct Reuse {
    pub run_id: String,
    pub outputs: BTreeMap<String, Vec<(String, String)>>,
    /// The resumed run and the runs it resumed in turn: their unfinished upgrades are this
    /// run's now.
    pub lineage: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct StepRecord {
    pub id: String,
    pub outcome: Outcome,
    pub outputs: Vec<(String, String)>,
    pub failure: Option<StepFailure>,
    pub duration: Duration,
    /// Why a step did not run, or where its outputs came from.
    pub note: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RunReport {
    pub run_id: String,
    pub outcome: Outcome,
    pub steps: Vec<StepRecord>,
    pub duration: Duration,
    /// `3 steps succeeded`, `1 step failed`.
    pub summary: String,
}

impl RunReport {
    pub fn failed(&self) -> impl Iterator<Item = &StepRecord> {
        self.steps.iter().filter(|s| s.outcome == Outcome::Failure)
    }
}

/// A fresh run id: sortable by time, unique enough for one workspace.
pub fn new_run_id() -> String {
    use std::hash::{BuildHasher, RandomState};
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let digits: String = stamp.chars().filter(char::is_ascii_digit).collect();
    let random = RandomState::new().hash_one(std::process::id()) & 0xffff;
    format!("{}-{}-{random:04x}", &digits[..8], &digits[8..14])
}

struct RunScope<'a> {
    vars: &'a BTreeMap<String, String>,
    env: &'a BTreeMap<String, String>,
    /// The steps this one needs, directly or through others: all it may refer to.
    records: &'a [Arc<StepRecord>],
    matrix: &'a [(String, String)],
    run_id: &'a str,
}

impl Scope for RunScope<'_> {
    fn lookup(&self, reference: &Reference) -> Result<String, String> {
        let record = |id: &str| self.records.iter().find(|r| r.id == id);
        match reference {
            Reference::Var(name) => self
                .vars
                .get(name)
                .cloned()
                .ok_or_else(|| format!("var `{name}` has no value")),
            Reference::Env(name) if crate::capabilities::secrets::is_secret_var(name) => Err(format!(
                "`env.{name}` is a secret; steps get secrets through a `secrets:` grant, never as text"
            )),
            Reference::Env(name) => self.env.get(name).cloned().ok_or_else(|| {
                format!("`env.{name}` was not passed to the pipeline; pass it with `--pass-env {name}`")
            }),
            Reference::RunId => Ok(self.run_id.to_string()),
            Reference::Matrix(name) => self
                .matrix
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| format!("`matrix.{name}` has no value in this step")),
            Reference::StepOutcome { step } => Ok(record(step).map_or("skipped", |r| r.outcome.as_str()).to_string()),
            Reference::StepOutput { step, key } => match record(step) {
                Some(r) if r.outcome == Outcome::Success => r
                    .outputs
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| format!("step `{step}` produced no output `{key}`")),
                Some(r) => Err(format!(
                    "`{reference}` is not available: step `{step}` {}",
                    describe_outcome(r.outcome)
                )),
                None => Err(format!("`{reference}` is not available: step `{step}` has not run")),
            },
        }
    }

    fn status(&self, f: StatusFn) -> bool {
        let failed = self.records.iter().any(|r| r.outcome == Outcome::Failure);
        match f {
            StatusFn::Success => !failed,
            StatusFn::Failure => failed,
            StatusFn::Always => true,
        }
    }
}

fn describe_outcome(o: Outcome) -> &'static str {
    match o {
        Outcome::Success => "succeeded",
        Outcome::Failure => "failed",
        Outcome::Skipped => "was skipped",
    }
}

pub async fn execute(req: RunRequest<'_>) -> RunReport {
    let started = Instant::now();
    let pipeline = req.pipeline;
    req.events.emit(Event::RunStarted {
        run_id: req.run_id.clone(),
        pipeline: pipeline.name.clone(),
        steps: pipeline.steps.len(),
        replay: false,
    });
    if let Some(journal) = &req.journal {
        for (decl, loaded) in pipeline.steps.iter().zip(&req.steps) {
            if let Err(e) = journal.store_component(&loaded.digest, &loaded.bytes, !loaded.is_builtin()) {
                tracing::warn!("journal: cannot store the component of `{}`: {e}", decl.id);
            }
            journal.write(Entry::Component {
                step: decl.id.clone(),
                origin: loaded.origin.clone(),
                digest: loaded.digest.clone(),
            });
        }
    }
    let records = schedule(&req).await;
    let failed = records.iter().filter(|r| r.outcome == Outcome::Failure).count();
    let outcome = if failed == 0 {
        Outcome::Success
    } else {
        Outcome::Failure
    };
    let duration = started.elapsed();
    let summary = match failed {
        0 => format!(
            "{} succeeded",
            crate::events::count(records.iter().filter(|r| r.outcome == Outcome::Success).count(), "step")
        ),
        n => format!("{} failed", crate::events::count(n, "step")),
    };
    // `run-finished` is the caller's to emit: after the deploys are settled, with the exit code.
    RunReport {
        run_id: req.run_id.clone(),
        outcome,
        steps: records,
        duration,
        summary,
    }
}

/// Run every step once the steps it needs have finished, up to `req.jobs` at a time, in
/// file order where several are ready. Steps run side by side on this task: a step spends
/// its time waiting (on a program, the network, a deploy), and each wait lets the others go
/// on. Returns the records in file order.
async fn schedule(req: &RunRequest<'_>) -> Vec<StepRecord> {
    use futures_util::StreamExt as _;
    let pipeline = req.pipeline;
    let mut progress = Progress::new(pipeline);
    // Decided to run, waiting for a free job, by index: file order.
    let mut queued: std::collections::BTreeMap<usize, Vec<Arc<StepRecord>>> = Default::default();
    let mut running = futures_util::stream::FuturesUnordered::new();
    let jobs = req.jobs.max(1);
    loop {
        // A step whose needs have all finished is decided once: everything its `if:` may
        // look at has finished too.
        while let Some(i) = progress.ready.pop_first() {
            let decl = &pipeline.steps[i];
            let ancestors: Vec<Arc<StepRecord>> = pipeline
                .graph
                .ancestors(i)
                .filter_map(|j| progress.done[j].clone())
                .collect();
            match decide(req, decl, &ancestors) {
                Decision::Run => {
                    queued.insert(i, ancestors);
                }
                Decision::Settled(record) => progress.complete(req, i, record),
            }
        }
        while running.len() < jobs
            && progress.ready.is_empty()
            && let Some((i, ancestors)) = queued.pop_first()
        {
            let decl = &pipeline.steps[i];
            // `fail-fast`: an instance of the same matrix failed while this one waited.
            if let Some(failed) = decl
                .instance
                .as_ref()
                .filter(|instance| instance.fail_fast)
                .and_then(|instance| progress.failed_instance.get(&instance.group))
            {
                let record = StepRecord {
                    note: Some(format!("fail-fast: matrix instance `{failed}` failed")),
                    ..StepRecord::not_run(decl, Outcome::Skipped)
                };
                progress.complete(req, i, record);
                continue;
            }
            let loaded = &req.steps[i];
            running.push(async move { (i, run_one(req, decl, loaded, &ancestors).await) });
        }
        if !progress.ready.is_empty() {
            continue;
        }
        let Some((i, record)) = running.next().await else {
            break;
        };
        progress.complete(req, i, record);
    }
    progress
        .done
        .into_iter()
        .zip(&pipeline.steps)
        .map(|(record, decl)| match record {
            Some(record) => Arc::unwrap_or_clone(record),
            // Unreachable for a loaded pipeline, whose needs hold no cycle.
            None => StepRecord {
                note: Some("its needs never finished".into()),
                ..StepRecord::not_run(decl, Outcome::Skipped)
            },
        })
        .collect()
}

/// Which steps have finished, and which may be decided now.
struct Progress<'a> {
    pipeline: &'a Pipeline,
    done: Vec<Option<Arc<StepRecord>>>,
    /// By step: how many of the steps it needs have not finished.
    waiting: Vec<usize>,
    /// Steps whose needs have all finished, not yet decided.
    ready: std::collections::BTreeSet<usize>,
    /// By matrix step id: its first instance that failed.
    failed_instance: std::collections::HashMap<String, String>,
    /// Bytes of outputs the run keeps, of every step that succeeded.
    outputs_kept: usize,
}

/// Most bytes of outputs (names and values) a run keeps of all its steps together: each
/// is held for later steps, written to the journal and handed to every renderer. A step
/// whose outputs would pass it fails; large data travels through files in the workspace.
pub const RUN_OUTPUTS_LIMIT: usize = 64 << 20;

impl<'a> Progress<'a> {
    fn new(pipeline: &'a Pipeline) -> Self {
        let count = pipeline.steps.len();
        let waiting: Vec<usize> = (0..count).map(|i| pipeline.graph.needs(i).len()).collect();
        Progress {
            pipeline,
            ready: (0..count).filter(|&i| waiting[i] == 0).collect(),
            done: vec![None; count],
            waiting,
            failed_instance: Default::default(),
            outputs_kept: 0,
        }
    }

    fn complete(&mut self, req: &RunRequest<'_>, i: usize, mut record: StepRecord) {
        let decl = &self.pipeline.steps[i];
        let size: usize = record.outputs.iter().map(|(k, v)| k.len() + v.len()).sum();
        if record.outcome == Outcome::Success && self.outputs_kept + size > RUN_OUTPUTS_LIMIT {
            record = StepRecord {
                outcome: Outcome::Failure,
                outputs: Vec::new(),
                failure: Some(StepFailure {
                    kind: FailureKind::Limit,
                    message: format!(
                        "its outputs ({size} bytes) would take the run's outputs past {} MiB in all, the most a run keeps; pass large data through a file in the workspace",
                        RUN_OUTPUTS_LIMIT >> 20
                    ),
                }),
                ..record
            };
        }
        self.outputs_kept += record.outputs.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        finished(req, decl, &record);
        if record.outcome == Outcome::Failure
            && let Some(instance) = &decl.instance
        {
            self.failed_instance
                .entry(instance.group.clone())
                .or_insert_with(|| decl.id.clone());
        }
        self.done[i] = Some(Arc::new(record));
        for &k in self.pipeline.graph.needed_by(i) {
            self.waiting[k] -= 1;
            if self.waiting[k] == 0 {
                self.ready.insert(k);
            }
        }
    }
}

impl StepRecord {
    fn not_run(decl: &StepDecl, outcome: Outcome) -> StepRecord {
        StepRecord {
            id: decl.id.clone(),
            outcome,
            outputs: Vec::new(),
            failure: None,
            duration: Duration::ZERO,
            note: None,
        }
    }
}

fn finished(req: &RunRequest<'_>, decl: &StepDecl, record: &StepRecord) {
    req.events.emit(Event::StepFinished {
        step: record.id.clone(),
        outcome: record.outcome,
        duration: record.duration,
        detail: match (&record.failure, &record.note) {
            (Some(f), _) => Some(format!("{}: {}", f.kind_name(), f.message)),
            (None, Some(note)) => Some(note.clone()),
            (None, None) if record.outcome == Outcome::Skipped => Some(match &decl.condition {
                Some(_) => "condition not met".into(),
                None => "an earlier step failed".into(),
            }),
            _ => None,
        },
        outputs: record.outputs.clone(),
    });
}

enum Decision {
    Run,
    /// Reused from the resumed run, skipped by its condition, or failed evaluating it.
    Settled(StepRecord),
}

/// Whether a step whose needs have finished runs: `--resume` may reuse it, and its `if:`
/// (by default `success()`) is evaluated over the steps it needs.
fn decide(req: &RunRequest<'_>, decl: &StepDecl, ancestors: &[Arc<StepRecord>]) -> Decision {
    if let Some(reuse) = &req.reuse
        && let Some(outputs) = reuse.outputs.get(&decl.id)
    {
        return Decision::Settled(StepRecord {
            outputs: outputs.clone(),
            note: Some(format!("reused from run {}", reuse.run_id)),
            ..StepRecord::not_run(decl, Outcome::Success)
        });
    }
    let scope = step_scope(req, decl, ancestors);
    let run = match &decl.condition {
        None => scope.status(StatusFn::Success),
        Some((cond, _)) => match expr::evaluate(cond, &scope) {
            Ok(v) => v.truthy(),
            Err(e) => {
                return Decision::Settled(StepRecord {
                    failure: Some(invalid(format!("in `if:`: {e}"))),
                    ..StepRecord::not_run(decl, Outcome::Failure)
                });
            }
        },
    };
    if run {
        Decision::Run
    } else {
        Decision::Settled(StepRecord::not_run(decl, Outcome::Skipped))
    }
}

fn step_scope<'a>(req: &'a RunRequest<'_>, decl: &'a StepDecl, ancestors: &'a [Arc<StepRecord>]) -> RunScope<'a> {
    RunScope {
        vars: &req.vars,
        env: &req.env,
        records: ancestors,
        matrix: decl.instance.as_ref().map_or(&[], |i| &i.values),
        run_id: &req.run_id,
    }
}

async fn run_one(
    req: &RunRequest<'_>,
    decl: &StepDecl,
    loaded: &LoadedStep,
    ancestors: &[Arc<StepRecord>],
) -> StepRecord {
    let started = Instant::now();
    let scope = step_scope(req, decl, ancestors);
    let record = |outcome, outputs, failure| StepRecord {
        id: decl.id.clone(),
        outcome,
        outputs,
        failure,
        duration: started.elapsed(),
        note: None,
    };
    let params = match resolve_params(decl, loaded, &scope, req.pipeline) {
        Ok(p) => p,
        Err(f) => return record(Outcome::Failure, Vec::new(), Some(f)),
    };
    let untrusted: Vec<String> = req
        .pipeline
        .steps
        .iter()
        .zip(&req.steps)
        .filter(|(_, l)| !l.is_builtin())
        .map(|(d, _)| d.id.clone())
        .collect();
    let grants = match effective_grants(decl, loaded, &params, &untrusted) {
        // An audit run deploys nothing, whatever the step was granted.
        Ok(mut g) if req.audit => {
            g.deploy.clear();
            Arc::new(g)
        }
        Ok(g) => Arc::new(g),
        Err(refused) => {
            let failure = StepFailure {
                kind: FailureKind::Error(crate::capabilities::bindings::wharf::step::types::ErrorKind::Denied),
                message: refused.join("; "),
            };
            return record(Outcome::Failure, Vec::new(), Some(failure));
        }
    };
    let release = match step_release(req, &params, &grants) {
        Ok(release) => release,
        Err(message) => {
            let failure = StepFailure {
                kind: FailureKind::Error(crate::capabilities::bindings::wharf::step::types::ErrorKind::InvalidInput),
                message,
            };
            return record(Outcome::Failure, Vec::new(), Some(failure));
        }
    };
    // What the journal and the provenance say the step ran with: serialised once.
    let params_json = serde_json::to_value(&params).unwrap_or_default();
    req.provenance.step_started(&decl.id, params_json.clone());
    let mut overrides = decl.limits.over(req.pipeline.limits);
    overrides.timeout = decl.timeout.or(overrides.timeout);
    let limits = StepLimits::from_overrides(overrides);
    let caching = match cached(req, decl, loaded, &params, &grants, &limits).await {
        Cached::Hit(record) => {
            return StepRecord {
                duration: started.elapsed(),
                ..*record
            };
        }
        Cached::Run(identity) => identity,
    };
    let mut attempt = 1;
    loop {
        // Per attempt: an earlier attempt may have planted a symlink.
        let opened = match preopens(&req.workspace, &grants).and_then(|mut opened| {
            // An audit opens the whole workspace, as `write: [.]` would, and notes what the
            // step reaches beyond its grants.
            if req.audit {
                let all = crate::sandbox::preopens::open(&req.workspace, ".", true).map_err(|source| {
                    crate::sandbox::preopens::PreopenError {
                        kind: "write",
                        grant: ".".into(),
                        source,
                    }
                })?;
                opened.retain(|p| p.guest != ".");
                opened.push(all);
            }
            Ok(opened)
        }) {
            Ok(opened) => opened,
            Err(e) => {
                let failure = StepFailure {
                    kind: FailureKind::Error(crate::capabilities::bindings::wharf::step::types::ErrorKind::Denied),
                    message: e.to_string(),
                };
                return record(Outcome::Failure, Vec::new(), Some(failure));
            }
        };
        req.events.emit(Event::StepStarted {
            step: decl.id.clone(),
            uses: decl.uses.clone(),
            attempt,
        });
        // What the attempt uses, for the cache.
        let calls = match (&req.cache, &caching) {
            (Some(cache), Some(_)) => {
                cache.listen(&decl.id);
                Some(cache.observer(grants.clone(), req.programs.clone()))
            }
            _ => None,
        };
        let recorder = req.journal.as_ref().map(|journal| {
            journal.write(Entry::StepStarted {
                step: decl.id.clone(),
                uses: decl.uses.clone(),
                attempt,
                params: params_json.clone(),
                grants: grants.describe(),
                preopens: opened.iter().map(|p| (p.guest.clone(), p.write)).collect(),
                snapshot: None,
            });
            let dirs: Vec<(PathBuf, String)> = opened.iter().map(|p| (p.host.clone(), p.guest.clone())).collect();
            let recorder = Recorder::new(journal.clone(), &decl.id, attempt, dirs.clone(), limits.journal_bytes);
            Arc::new(match &calls {
                Some(calls) => recorder.witnessed(crate::journal::witness::Witness::new(dirs, calls.clone())),
                None => recorder,
            })
        });
        let tape = recorder.clone().map_or(Tape::Off, Tape::Record);
        let audit = req
            .audit
            .then(|| Arc::new(crate::sandbox::audit::Audit::new(&req.workspace, req.scratch.path())));
        let scratch = match loaded.needs_scratch().then(|| req.scratch.step_dir()) {
            None => None,
            Some(Ok(dir)) => Some(dir),
            Some(Err(e)) => {
                let failure = StepFailure {
                    kind: FailureKind::Error(crate::capabilities::bindings::wharf::step::types::ErrorKind::Permanent),
                    message: format!(
                        "cannot create its scratch directory in {}: {e}",
                        req.scratch.path().display()
                    ),
                };
                return record(Outcome::Failure, Vec::new(), Some(failure));
            }
        };
        let input = StepInput {
            scope: StepScope::new(
                &req.run_id,
                &decl.id,
                &req.workspace,
                req.events.clone(),
                limits.log_bytes,
            ),
            pipeline: req.pipeline.name.clone(),
            attempt,
            params: params.clone(),
            secrets: req.secrets.clone(),
            deployer: Some(req.deployer.clone()),
            grants: grants.clone(),
            preopens: opened.clone(),
            scratch: scratch.as_ref().map(|dir| dir.path().to_path_buf()),
            tape,
            limits,
            audit: audit.clone(),
            programs: Some(req.programs.clone()),
            release: release.clone(),
        };
        let result = step::run(loaded, input).await;
        req.programs.step_ended(&decl.id, attempt);
        if let Some(recorder) = &recorder {
            recorder.finish();
        }
        let needed = audit.as_ref().map(|a| a.needed()).unwrap_or_default();
        if !needed.is_empty() {
            req.events.emit(Event::Notice {
                message: format!("audit: step `{}` needed {}", decl.id, needed.join(", ")),
            });
            if let Some(journal) = &req.journal {
                journal.write(Entry::Audited {
                    step: decl.id.clone(),
                    attempt,
                    needed,
                });
            }
        }
        drop(scratch);
        match result {
            Ok(outputs) => {
                let redact = |t: &str| req.events.redact(t);
                let outputs: Vec<(String, String)> =
                    outputs.into_iter().map(|(k, v)| (redact(&k), redact(&v))).collect();
                if let (Some(cache), Some(identity), Some(recorder), Some(calls)) =
                    (&req.cache, caching.clone(), &recorder, &calls)
                {
                    save(req, cache, decl, identity, (recorder, calls), started, &outputs).await;
                }
                return record(Outcome::Success, outputs, None);
            }
            Err(f) if f.retryable() && attempt < decl.retry.attempts => {
                let delay = decl.retry.backoff.saturating_mul(1 << (attempt - 1).min(16));
                req.events.emit(Event::StepRetrying {
                    step: decl.id.clone(),
                    attempt,
                    error: f.message.clone(),
                    delay,
                });
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(f) => return record(Outcome::Failure, Vec::new(), Some(f)),
        }
    }
}

enum Cached {
    /// Taken from the cache: the record of the step.
    Hit(Box<StepRecord>),
    /// Run it; with its identity when what it does is to be saved.
    Run(Option<crate::cache::Identity>),
}

/// Whether the step cache holds this step's result, and the record of a hit: its files,
/// images and log restored, its outputs as they were. The decision is an event: the journal
/// keeps it (`wharf cache why`), `-v` shows a miss.
async fn cached(
    req: &RunRequest<'_>,
    decl: &StepDecl,
    loaded: &LoadedStep,
    params: &StepParams,
    grants: &crate::sandbox::Grants,
    limits: &StepLimits,
) -> Cached {
    use crate::cache::{Lookup, StepCache};
    // Only a recorded run uses the cache: its journal keeps each decision.
    let (Some(cache), Some(_)) = (&req.cache, &req.journal) else {
        return Cached::Run(None);
    };
    let decided = |hit: bool, detail: String| {
        req.events.emit(Event::Cache {
            step: decl.id.clone(),
            hit,
            detail,
        });
    };
    if let Some(why) = StepCache::never(decl, grants) {
        decided(false, format!("never cached: {why}"));
        return Cached::Run(None);
    }
    let identity = cache.identity(&crate::cache::StepFacts {
        decl,
        loaded,
        params,
        grants,
        limits,
        passed: &req.env,
        confinement: req.programs.mode().as_str(),
    });
    match cache.lookup(&decl.id, &identity).await {
        Lookup::Hit(entry) => {
            // Shown as a step like any other, its log in its place, ending `cached`.
            req.events.emit(Event::StepStarted {
                step: decl.id.clone(),
                uses: decl.uses.clone(),
                attempt: 1,
            });
            hit(req, cache, decl, &entry, identity, decided)
        }
        Lookup::Miss(why) => {
            decided(false, why);
            Cached::Run(Some(identity))
        }
        Lookup::MissNotSaved(why) => {
            decided(false, why);
            Cached::Run(None)
        }
    }
}

/// A hit, done again; when that fails, the step runs.
fn hit(
    req: &RunRequest<'_>,
    cache: &crate::cache::StepCache,
    decl: &StepDecl,
    entry: &wharf_cache::Entry,
    identity: crate::cache::Identity,
    decided: impl Fn(bool, String),
) -> Cached {
    match cache.replay(&decl.id, entry, &req.events) {
        Ok(()) => {
            let saved = crate::events::human_duration(Duration::from_millis(entry.millis));
            let note = format!("cached from run {} (saved {saved})", entry.run_id);
            decided(true, note.clone());
            Cached::Hit(Box::new(StepRecord {
                outputs: entry.effects.outputs.clone(),
                note: Some(note),
                ..StepRecord::not_run(decl, Outcome::Success)
            }))
        }
        Err(why) => {
            req.events.emit(Event::Notice {
                message: format!("cache: step `{}` was cached, but {why}; it runs", decl.id),
            });
            decided(false, format!("its entry could not be used: {why}"));
            Cached::Run(Some(identity))
        }
    }
}

/// Save a successful attempt in the cache, or journal why it cannot be.
async fn save(
    req: &RunRequest<'_>,
    cache: &Arc<crate::cache::StepCache>,
    decl: &StepDecl,
    identity: crate::cache::Identity,
    (recorder, calls): (&Recorder, &crate::cache::observe::CallLog),
    started: Instant,
    outputs: &[(String, String)],
) {
    let Some(witness) = &recorder.witness else { return };
    let calls = calls.take();
    let attempt = crate::cache::Attempt {
        step: decl.id.clone(),
        identity,
        run_id: req.run_id.clone(),
        millis: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        outputs: outputs.to_vec(),
        seen: witness.seen(),
        calls,
    };
    let journal = req.journal.clone();
    let refused: crate::cache::Refusals = Arc::new(move |step: &str, why: String| {
        if let Some(journal) = &journal {
            journal.write(Entry::Cache {
                step: step.to_string(),
                hit: false,
                detail: format!("not cached: {why}"),
            });
        }
    });
    let saved = match recorder.journal_full() {
        true => Err("its journal was cut off at its limit".to_string()),
        false => cache.save(attempt, refused.clone()).await,
    };
    if let Err(why) = saved {
        refused(&decl.id, why);
    }
}

/// The step's `allow:`, plus what a built-in step's own parameters name, except values
/// fed by the outputs of steps from `.wasm` files: an untrusted step must not choose what a
/// later built-in may reach.
pub fn effective_grants(
    decl: &StepDecl,
    loaded: &LoadedStep,
    params: &StepParams,
    untrusted: &[String],
) -> Result<Grants, Vec<String>> {
    let mut grants = decl.allow.clone();
    grants.step_id = decl.id.clone();
    if loaded.is_builtin()
        && let (Some(info), StepParams::Typed(values)) = (&loaded.info, params)
    {
        let trusted: Vec<(String, Value)> = values
            .iter()
            .filter(|(name, _)| !fed_by(decl, name, untrusted))
            .cloned()
            .collect();
        let refused = grants.derive(info, &trusted);
        if !refused.is_empty() {
            return Err(refused);
        }
    }
    Ok(grants)
}

/// Whether parameter `name` of `decl` interpolates an output of one of `steps`.
fn fed_by(decl: &StepDecl, name: &str, steps: &[String]) -> bool {
    let Some(param) = decl.with.iter().find(|p| p.name == name) else {
        return false;
    };
    crate::pipeline::params::scalars(&param.value).iter().any(|s| {
        template(s).is_ok_and(|t| {
            t.exprs().any(|e| {
                e.references()
                    .iter()
                    .any(|r| matches!(r, Reference::StepOutput { step, .. } if steps.contains(step)))
            })
        })
    })
}

fn invalid(message: String) -> StepFailure {
    StepFailure {
        kind: FailureKind::Error(crate::capabilities::bindings::wharf::step::types::ErrorKind::InvalidInput),
        message,
    }
}

fn at(pipeline: &Pipeline, d: &Diagnostic) -> String {
    format!(
        "{}:{}:{}: {}",
        pipeline.source.path.display(),
        d.span.line,
        d.span.column,
        d.message
    )
}

/// Interpolate `with:` and convert it to what the step takes.
fn resolve_params(
    decl: &StepDecl,
    loaded: &LoadedStep,
    scope: &RunScope<'_>,
    pipeline: &Pipeline,
) -> Result<StepParams, StepFailure> {
    let mut render = |s: &crate::pipeline::yaml::Scalar| -> Result<String, StepFailure> {
        let t = template(s).map_err(|d| invalid(at(pipeline, &d)))?;
        t.render(scope).map_err(|e| {
            invalid(format!(
                "{}:{}:{}: {e}",
                pipeline.source.path.display(),
                s.span.line,
                s.span.column
            ))
        })
    };
    match &loaded.info {
        None => {
            let mut out = Vec::new();
            for p in &decl.with {
                let value = map_scalars(&p.value, &mut render)?;
                let text = value.as_scalar().map(|s| s.text.clone()).unwrap_or_default();
                out.push((p.name.clone(), text));
            }
            Ok(StepParams::Command(out))
        }
        Some(info) => {
            let mut out: Vec<(String, Value)> = Vec::new();
            for spec in &info.params {
                match decl.with.iter().find(|p| p.name == spec.name) {
                    Some(p) => {
                        let value = map_scalars(&p.value, &mut render)?;
                        let typed = convert(&p.name, &value, spec.type_).map_err(|d| invalid(at(pipeline, &d)))?;
                        out.push((spec.name.clone(), typed));
                    }
                    None => {
                        if let Some(default) = &spec.default {
                            out.push((spec.name.clone(), default.clone()));
                        }
                    }
                }
            }
            Ok(StepParams::Typed(out))
        }
    }
}

/// What the host does about provenance for a step, from its `provenance-key` (a secret
/// holding the private key that signs what it pushes) and `require-provenance` (the
/// public-key file, in the workspace, an image it deploys must carry provenance by).
fn step_release(
    req: &RunRequest<'_>,
    params: &StepParams,
    grants: &Grants,
) -> Result<crate::provenance::StepRelease, String> {
    use crate::provenance::{REQUIRE_PARAM, SIGN_PARAM, StepRelease};
    let StepParams::Typed(params) = params else {
        return Ok(StepRelease::default());
    };
    let text = |name: &str| {
        params.iter().find_map(|(k, v)| match v {
            crate::pipeline::describe::Value::Text(t) if k == name && !t.is_empty() => Some(t.clone()),
            _ => None,
        })
    };
    let mut release = StepRelease {
        recorder: Some(req.provenance.clone()),
        ..StepRelease::default()
    };
    if let Some(secret) = text(SIGN_PARAM) {
        if !grants.secrets.iter().any(|g| g.what == secret) {
            return Err(format!(
                "`{SIGN_PARAM}: {secret}`: the step is not granted secret `{secret}` (`allow: {{ secrets: [{secret}] }}`)"
            ));
        }
        let pem = req
            .secrets
            .get(&secret)
            .ok_or_else(|| format!("`{SIGN_PARAM}: {secret}`: no secret `{secret}` (set WHARF_SECRET_{secret} to the private key `wharf key generate` wrote)"))?;
        let key = wharf_sign::KeyPair::from_pem(pem, &format!("secret `{secret}`"))
            .map_err(|e| format!("`{SIGN_PARAM}`: {e}"))?;
        release.sign_with = Some(Arc::new(key));
    }
    if let Some(file) = text(REQUIRE_PARAM) {
        let path =
            crate::beneath::existing(&req.workspace, &file).map_err(|e| format!("`{REQUIRE_PARAM}: {file}`: {e}"))?;
        let key = wharf_sign::PublicKey::read(&path).map_err(|e| format!("`{REQUIRE_PARAM}`: {e}"))?;
        release.require.push(key);
    }
    Ok(release)
}
