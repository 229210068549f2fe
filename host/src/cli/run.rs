//! `wharf run`: validate, run, record, settle the deploys, choose the exit code.

use super::outcome::{CommandResult, Exit, Stop};
use super::render::{Format, View};
use crate::capabilities::secrets::SecretStore;
use crate::deploy::{Actor, Deployer, Ledger};
use crate::engine::{LoadedStep, Runtime};
use crate::events::{Event, Events, Outcome};
use crate::journal::Entry;
use crate::journal::reader::Journal;
use crate::journal::writer::JournalWriter;
use crate::pipeline::Pipeline;
use crate::pipeline::validate::{LoadProblem, StepShape, validate};
use crate::run::scratch::{ScratchSpace, run_scratches, scratch_root};
use crate::run::{Reuse, RunRequest, execute, new_run_id};
use crate::sandbox::programs::{Mode, Programs};
use clap::Args;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wharf_journal::retention::Retention;

#[derive(Args)]
pub struct RunArgs {
    /// The pipeline file
    file: PathBuf,
    /// Whether the step cache may reuse steps' results (not with `--no-cache`).
    #[arg(skip = true)]
    pub(super) reuse_results: bool,
    /// Also use a step cache that CI machines share, in an OCI registry; reading and
    /// writing it need secret `cache-key` (docs/cache.md)
    #[arg(long = "cache", value_name = "oci://HOST/REPOSITORY", env = "WHARF_CACHE", value_parser = shared_cache)]
    shared_cache: Option<String>,
    /// Add this run's steps to the shared cache: only in runs you trust (protected
    /// branches), never for pull requests
    #[arg(long, env = "WHARF_CACHE_WRITE", requires = "shared_cache")]
    cache_write: bool,
    #[command(flatten)]
    pub(super) inputs: Inputs,
    /// Directory the steps work in [default: the pipeline file's directory]
    #[arg(long, value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// Provide secret NAME from a file (repeatable)
    #[arg(long = "secret-file", value_name = "NAME=PATH")]
    secret_files: Vec<String>,
    /// Show each step's log, outputs and component loading
    #[arg(short, long)]
    verbose: bool,
    /// How to show the run [default: github under GitHub Actions, gitlab under GitLab CI,
    /// human on a terminal, plain otherwise]
    #[arg(long, value_enum, value_name = "FORMAT", env = "WHARF_OUTPUT")]
    output: Option<Format>,
    /// Also write the run's events to FILE, one JSON object a line (docs/events.md)
    #[arg(long, value_name = "FILE")]
    events: Option<PathBuf>,
    /// Write the steps' file annotations to FILE as a GitLab Code Quality report
    #[arg(long, value_name = "FILE")]
    codequality: Option<PathBuf>,
    /// Write the run to FILE as a JUnit XML report: a test case per step
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Write the steps' annotations to FILE as a SARIF 2.1.0 log (Jenkins Warnings NG,
    /// GitHub code scanning)
    #[arg(long, value_name = "FILE")]
    sarif: Option<PathBuf>,
    /// How many steps may run at once [default: the pipeline's `concurrency:`, else the
    /// number of cores]
    #[arg(short, long, value_name = "N", env = "WHARF_JOBS",
        value_parser = clap::value_parser!(u16).range(1..=crate::pipeline::model::MAX_CONCURRENCY as i64))]
    jobs: Option<u16>,
    /// Run again the failed steps of this earlier run and every step that needs them,
    /// reusing what succeeded
    #[arg(long, value_name = "RUN")]
    resume: Option<String>,
    /// With --resume: reuse the earlier run's steps even though the workspace revision, the
    /// pipeline file or a reused step's component changed since
    #[arg(long, requires = "resume")]
    force: bool,
    /// When the run ends, keep only the N newest recorded runs of the workspace (0: keep
    /// all); `wharf runs prune` removes by age
    #[arg(long, value_name = "N", env = "WHARF_KEEP_RUNS", default_value_t = DEFAULT_KEEP_RUNS)]
    keep_runs: usize,
    /// Try a step someone else wrote: file, process and HTTP accesses its grants refuse are
    /// let through and noted (secrets and deploys stay refused; nothing deploys); then
    /// `wharf grants RUN` prints each step's smallest `allow:`. Run it in a throwaway
    /// checkout: the steps get the whole workspace
    #[arg(long, conflicts_with = "resume")]
    audit: bool,
    /// How the programs steps run are confined: `auto` as far as this kernel allows (saying
    /// once what it does not), `strict` fully or not at all, `off` (debugging) not at all
    /// [default: the pipeline's `sandbox:`, else auto; `wharf doctor` says what this machine
    /// allows]
    #[arg(long, value_enum, value_name = "MODE", env = "WHARF_SANDBOX")]
    sandbox: Option<SandboxMode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxMode {
    Auto,
    Strict,
    Off,
}

/// How many recorded runs a workspace keeps unless told otherwise.
pub const DEFAULT_KEEP_RUNS: usize = 100;

impl RunArgs {
    /// `--workspace`, else the pipeline file's directory.
    pub(super) fn workspace(&self) -> PathBuf {
        self.workspace.clone().unwrap_or_else(|| pipeline_dir(&self.file))
    }
}

pub(super) fn pipeline_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// What the operator hands a pipeline besides its file: vars, and which variables of
/// wharf's own environment `${{ env.NAME }}` may read.
#[derive(Args)]
pub(super) struct Inputs {
    /// Set a pipeline var, overriding its default (repeatable)
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// Let `${{ env.NAME }}` read variable NAME of wharf's environment (repeatable; also
    /// WHARF_PASS_ENV=NAME,NAME). No other variable reaches a pipeline.
    #[arg(long = "pass-env", value_name = "NAME")]
    pass_env: Vec<String>,
    #[command(flatten)]
    pub(super) sources: super::packages::SourceArgs,
}

impl Inputs {
    /// The variables `env.` may read: `--pass-env` and `WHARF_PASS_ENV` together.
    fn passed_env(&self) -> BTreeSet<String> {
        let listed = std::env::var("WHARF_PASS_ENV").unwrap_or_default();
        listed
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(String::from)
            .chain(self.pass_env.iter().cloned())
            .collect()
    }
}

/// A pipeline that passed validation, with its steps loaded.
pub(super) struct Prepared {
    pub(super) pipeline: Pipeline,
    pub(super) steps: Vec<Arc<LoadedStep>>,
    pub(super) vars: BTreeMap<String, String>,
    /// The values of the passed variables, read once.
    pub(super) env: BTreeMap<String, String>,
    /// Where steps stray from wharf.lock, and grants worth a second look (writing `.git/`),
    /// short of stopping the run.
    pub(super) warnings: Vec<String>,
}

/// Whether a step of the run may start a program: it is granted one, or it is a built-in
/// step that runs one its parameters name.
fn may_run_programs(prepared: &Prepared) -> bool {
    prepared
        .pipeline
        .steps
        .iter()
        .zip(&prepared.steps)
        .any(|(decl, loaded)| {
            !decl.allow.process.is_empty()
                || loaded.info.as_ref().is_some_and(|info| {
                    info.capabilities
                        .iter()
                        .any(|c| c.kind == crate::pipeline::describe::CapabilityKind::Process)
                })
        })
}

/// Every host path any step of `pipeline` may read, and write.
fn host_grants(pipeline: &crate::pipeline::Pipeline) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let paths = |of: fn(&crate::pipeline::StepDecl) -> &Vec<crate::sandbox::grants::Granted<String>>| {
        let mut all: Vec<PathBuf> = pipeline
            .steps
            .iter()
            .flat_map(of)
            .map(|g| crate::sandbox::programs::host_path(&g.what))
            .collect();
        all.sort();
        all.dedup();
        all
    };
    (paths(|d| &d.allow.host_read), paths(|d| &d.allow.host_write))
}

pub(super) fn parse_pairs(pairs: &[String], flag: &str) -> Result<Vec<(String, String)>, String> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(format!("`{flag} {p}` must look like `{flag} NAME=VALUE`")),
        })
        .collect()
}

pub(super) async fn prepare(
    runtime: &Runtime,
    file: &Path,
    inputs: &Inputs,
    secrets: &SecretStore,
    events: &Events,
) -> Result<Prepared, Stop> {
    let var_args = &inputs.vars;
    let passed = inputs.passed_env();
    let pipeline = Pipeline::load(file)?;
    let overrides = parse_pairs(var_args, "--var").map_err(Stop::invalid)?;
    for (name, _) in &overrides {
        if !pipeline.vars.iter().any(|v| v.name == *name) {
            let declared: Vec<&str> = pipeline.vars.iter().map(|v| v.name.as_str()).collect();
            return Err(Stop::invalid(format!(
                "`--var {name}=...`: {} declares no var `{name}`\n  = help: its vars are: {}",
                file.display(),
                if declared.is_empty() {
                    "(none)".to_string()
                } else {
                    declared.join(", ")
                }
            )));
        }
    }
    let (loaded, mut warnings) =
        super::packages::load_steps(runtime, &pipeline, file, &inputs.sources, secrets, events).await?;
    for (decl, step) in pipeline.steps.iter().zip(&loaded) {
        if let Ok(step) = step
            && let Some(advice) = step.contract.advice()
        {
            warnings.push(format!("step `{}` ({}) was {advice}", decl.id, step.origin));
        }
    }
    let shapes: Vec<Result<StepShape, LoadProblem>> = loaded
        .iter()
        .map(|l| l.as_ref().map(|s| s.shape()).map_err(Clone::clone))
        .collect();
    validate(&pipeline, &shapes, &overrides, &passed)?;
    for caution in pipeline.steps.iter().flat_map(|d| d.allow.cautions()) {
        if !warnings.contains(&caution) {
            warnings.push(caution);
        }
    }
    let mut vars = BTreeMap::new();
    for v in &pipeline.vars {
        if let Some(d) = &v.default {
            vars.insert(v.name.clone(), d.clone());
        }
    }
    vars.extend(overrides);
    let env = passed
        .into_iter()
        .map(|name| {
            let value = std::env::var(&name).unwrap_or_default();
            (name, value)
        })
        .collect();
    let steps = loaded.into_iter().map(|l| l.expect("validated")).collect();
    Ok(Prepared {
        pipeline,
        steps,
        vars,
        env,
        warnings,
    })
}

pub(super) async fn run(
    runtime: &Runtime,
    args: RunArgs,
    color: bool,
    color_forced: bool,
    mut secrets: SecretStore,
) -> CommandResult {
    let events = Events::new();
    for (name, path) in parse_pairs(&args.secret_files, "--secret-file").map_err(Stop::invalid)? {
        secrets.add_file(&name, Path::new(&path)).map_err(Stop::invalid)?;
    }
    for value in secrets.values() {
        events.add_secret(value);
    }
    // The workspace's revision takes `git` processes: they run while the pipeline loads.
    let early_workspace = std::fs::canonicalize(args.workspace()).ok();
    let early_revision = early_workspace
        .clone()
        .map(|dir| tokio::spawn(async move { crate::capabilities::source::workspace_revision(&dir).await }));
    let format = args.output.unwrap_or_else(Format::detect);
    let view = View {
        format,
        verbose: args.verbose,
        // Plain output is for files: colour only when asked for.
        color: color && format != Format::Plain || color_forced,
        workspace: Some(args.workspace())
            .filter(|dir| dir != Path::new("."))
            .map(|dir| dir.display().to_string()),
        events_file: args.events.clone(),
        codequality: args.codequality.clone(),
        junit: args.junit.clone(),
        sarif: args.sarif.clone(),
        workspace_root: early_workspace.clone(),
    };
    let secret_values: Vec<&str> = secrets.values().collect();
    let screen = view.attach(&events, &secret_values).map_err(Stop::invalid)?;
    drop(secret_values);
    let prepared = prepare(runtime, &args.file, &args.inputs, &secrets, &events).await?;
    for warning in &prepared.warnings {
        events.emit(Event::Notice {
            message: format!("warning: {warning}"),
        });
    }
    let workspace = args
        .workspace
        .clone()
        .unwrap_or_else(|| prepared.pipeline.dir().to_path_buf());
    let workspace = match std::fs::canonicalize(if workspace.as_os_str().is_empty() {
        Path::new(".")
    } else {
        &workspace
    }) {
        Ok(w) if w.is_dir() => w,
        _ => {
            return Err(Stop::invalid(format!(
                "workspace {} is not a directory",
                workspace.display()
            )));
        }
    };
    screen.set_name_width(prepared.pipeline.steps.iter().map(|s| s.id.len()).max().unwrap_or(4));
    let run_id = new_run_id();
    // What killed runs left in their scratch space goes first.
    ScratchSpace::sweep(run_scratches(&workspace));
    let scratch = ScratchSpace::new(&scratch_root(&workspace).join(&run_id));
    let mode = match args.sandbox {
        Some(SandboxMode::Off) => Mode::Off,
        Some(SandboxMode::Strict) => Mode::Strict,
        Some(SandboxMode::Auto) => Mode::Auto,
        None if prepared.pipeline.sandbox_strict => Mode::Strict,
        None => Mode::Auto,
    };
    let (host_read, host_write) = host_grants(&prepared.pipeline);
    let programs = Programs::new(mode, &workspace, scratch.held(), host_read, host_write, events.clone());
    let programs = Arc::new(if args.audit { programs.audited() } else { programs });
    if may_run_programs(&prepared) {
        programs.start_early();
    }
    let revision = match early_revision {
        Some(revision) if early_workspace.as_deref() == Some(workspace.as_path()) => revision.await.ok().flatten(),
        _ => crate::capabilities::source::workspace_revision(&workspace).await,
    };
    let reuse = match &args.resume {
        None => None,
        Some(run) => Some(
            resume_from(&workspace, run, &prepared, revision.as_deref(), args.force)
                .map_err(|e| Stop::invalid(format!("--resume {run}: {e}")))?,
        ),
    };
    let facts = RunFacts {
        revision,
        audit: args.audit,
        sandbox: mode,
    };
    let journal = match start_journal(&workspace, &run_id, &prepared, &events, reuse.as_ref(), facts) {
        Ok(j) => Some(j),
        Err(e) => {
            eprintln!("warning: this run is not recorded: {e}");
            None
        }
    };
    let tally = Arc::new(Tally::default());
    events.add_sink(tally.clone());
    let deployer = Arc::new(Deployer::new(&workspace, Actor::Run(run_id.clone()), events.clone()));
    if let Some(reuse) = &reuse {
        deployer.adopt(&reuse.lineage);
    }
    let on_failure = prepared.pipeline.on_failure;
    let started = std::time::Instant::now();
    let this_run = run_id.clone();
    let jobs = args
        .jobs
        .map(usize::from)
        .or(prepared.pipeline.concurrency)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if mode == Mode::Off {
        events.emit(Event::Notice {
            message: "--sandbox off: programs are not confined; they have wharf's own authority".into(),
        });
    }
    let secrets = Arc::new(secrets);
    // The step cache: not in an audit (its grants are not the steps'), and only for a
    // recorded run (a hit is journaled like any step).
    let cache = match (args.reuse_results && !args.audit, &journal) {
        (true, Some(_)) => {
            match crate::cache::StepCache::open(&workspace, &prepared.pipeline.name, &events, secrets.clone()) {
                Ok(cache) => Some(Arc::new(match &args.shared_cache {
                    Some(spec) => shared(cache, spec, &secrets, args.cache_write, &events),
                    None => cache,
                })),
                Err(e) => {
                    events.emit(Event::Notice {
                        message: format!(
                            "the step cache in {} cannot be used ({e}); every step runs",
                            crate::cache::cache_dir(&workspace).display()
                        ),
                    });
                    None
                }
            }
        }
        _ => None,
    };
    let provenance = Arc::new(provenance_recorder(&run_id, &prepared, journal.as_ref(), &events));
    let run = execute(RunRequest {
        pipeline: &prepared.pipeline,
        steps: prepared.steps,
        vars: prepared.vars,
        env: prepared.env,
        workspace: workspace.clone(),
        run_id,
        secrets,
        deployer: deployer.clone(),
        events: events.clone(),
        journal: journal.clone(),
        scratch: &scratch,
        jobs,
        reuse,
        audit: args.audit,
        programs,
        cache: cache.clone(),
        provenance,
    });
    // An interrupt drops the running step (its store, its child processes) and then rolls
    // back what the run left unconfirmed, like a failure.
    // The run's report, or the signal that stopped it.
    let ended = tokio::select! {
        report = run => Ok(report),
        signal = interrupted() => {
            events.emit(Event::Notice { message: format!("{}: stopping the run", signal.describe()) });
            Err(signal)
        }
    };
    // Entries still being written are waited for before the run ends.
    if let Some(cache) = &cache {
        cache.finish().await;
    }
    if args.audit {
        events.emit(Event::Notice {
            message: format!(
                "audit run: refused accesses were let through and noted, nothing deployed; `wharf grants {this_run}` prints each step's allow:"
            ),
        });
    }
    let failed = ended.as_ref().map_or(true, |r| r.outcome == Outcome::Failure);
    let signal = ended.as_ref().err().copied();
    let ledger = deployer.settle(failed, on_failure).await;
    // A run that left an upgrade unfinished failed, whatever its steps said.
    let failed = failed || !ledger.unfinished.is_empty();
    let code = exit_code(failed, signal, &ledger);
    events.emit(Event::RunFinished {
        outcome: if failed { Outcome::Failure } else { Outcome::Success },
        duration: started.elapsed(),
        summary: match ended {
            Ok(report) => report.summary,
            Err(signal) => tally.summary(signal, &ledger),
        },
        exit_code: code.code(),
    });
    if let Some(journal) = journal {
        journal.write(Entry::RunFinished {
            outcome: if failed { "failure" } else { "success" }.into(),
            exit_code: code.code(),
            millis: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        });
        journal.sync_at_end();
    }
    drop(scratch);
    if args.keep_runs > 0 {
        let keep = Retention {
            keep: Some(args.keep_runs),
            older_than: None,
        };
        match crate::run::prune::prune(&workspace, keep, crate::run::prune::Sweep::Runs) {
            Ok(pruned) if !pruned.runs.is_empty() => {
                let note = format!(
                    "removed {} (keeping the newest {}: --keep-runs)",
                    crate::events::count(pruned.runs.len(), "old run"),
                    args.keep_runs
                );
                // With --output json stdout holds the event stream alone.
                if screen.is_json() {
                    eprintln!("{note}");
                } else {
                    outln!("{note}");
                }
            }
            Ok(_) => {}
            Err(e) => eprintln!("warning: cannot remove old runs: {e}"),
        }
    }
    Ok(code)
}

/// `--cache`: an `oci://HOST/REPOSITORY`.
fn shared_cache(spec: &str) -> Result<String, String> {
    crate::cache::remote::parse(spec).map(|_| spec.to_string())
}

/// The step cache with the shared one at `spec`, when the run holds its key; without the
/// key, the local cache alone, and the run says why.
fn shared(
    cache: crate::cache::StepCache,
    spec: &str,
    secrets: &SecretStore,
    write: bool,
    events: &Events,
) -> crate::cache::StepCache {
    use crate::cache::remote::{KEY_SECRET, PASSWORD_SECRET, Remote, USERNAME_SECRET};
    let not_used = |why: String| {
        events.emit(Event::Notice {
            message: format!("cache: the shared cache {spec} is not used: {why}"),
        })
    };
    let Some(key) = secrets.get(KEY_SECRET) else {
        not_used(format!(
            "it needs secret `{KEY_SECRET}` (WHARF_SECRET_CACHE_KEY, or --secret-file {KEY_SECRET}=PATH) to check what it reads and sign what it writes"
        ));
        return cache;
    };
    let credentials = wharf_oci::registry::Credentials {
        username: secrets.get(USERNAME_SECRET).map(String::from),
        password: secrets.get(PASSWORD_SECRET).map(String::from),
    };
    match Remote::open(spec, key, credentials, write, cache.store()) {
        Ok(remote) => cache.share(remote),
        Err(why) => {
            not_used(why);
            cache
        }
    }
}

/// Open the run's journal, store the pipeline, and record how the run starts.
/// What a run's journal records of how it was started.
struct RunFacts {
    revision: Option<String>,
    audit: bool,
    sandbox: Mode,
}

fn start_journal(
    workspace: &Path,
    run_id: &str,
    prepared: &Prepared,
    events: &Events,
    reuse: Option<&Reuse>,
    facts: RunFacts,
) -> std::io::Result<Arc<JournalWriter>> {
    let journal = crate::journal::open(workspace, run_id, events)?;
    journal.store_pipeline(&prepared.pipeline.source.text)?;
    journal.write(Entry::RunStarted {
        run_id: run_id.to_string(),
        pipeline: prepared.pipeline.name.clone(),
        pipeline_file: "pipeline.yml".into(),
        vars: prepared.vars.clone(),
        workspace: workspace.display().to_string(),
        started: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        resumed_from: reuse.map(|r| r.run_id.clone()),
        revision: facts.revision,
        audit: facts.audit,
        sandbox: Some(facts.sandbox.as_str().to_string()),
    });
    events.add_sink(Arc::new(crate::journal::JournalSink::new(journal.clone())));
    Ok(journal)
}

/// The steps of an earlier run that `--resume` takes over: those that succeeded and need no
/// step that runs again (one that failed, was skipped or never ran). Refused when what those steps worked from has
/// changed since (another commit, another pipeline file, another build of a reused step):
/// their outputs (a version, an image) would then describe code that is not what runs now.
fn resume_from(
    workspace: &Path,
    run: &str,
    prepared: &Prepared,
    revision: Option<&str>,
    force: bool,
) -> Result<Reuse, String> {
    let pipeline = &prepared.pipeline;
    let dir = crate::journal::find_run(workspace, run)?;
    let journal = Journal::read(&dir)?;
    let outcomes = journal.step_outcomes();
    let mut reuse = Reuse {
        run_id: journal.run_id(),
        outputs: BTreeMap::new(),
        lineage: lineage(workspace, &journal),
    };
    let graph = &pipeline.graph;
    let mut failed = false;
    for &i in graph.order() {
        let step = &pipeline.steps[i];
        let end = outcomes.iter().find(|end| end.step == step.id);
        failed |= end.is_some_and(|end| end.outcome == "failure");
        let needs_reused = graph
            .needs(i)
            .iter()
            .all(|&j| reuse.outputs.contains_key(&pipeline.steps[j].id));
        if let Some(end) = end.filter(|end| end.outcome == "success" && needs_reused) {
            reuse.outputs.insert(step.id.clone(), end.outputs.clone());
        }
    }
    if !failed && journal.finished().is_some_and(|(outcome, _, _)| outcome == "success") {
        return Err(format!("run {} succeeded; there is nothing to resume", reuse.run_id));
    }
    let mut changed = Vec::new();
    let recorded_revision = match journal.run_started() {
        Some(Entry::RunStarted { revision, .. }) => revision.clone(),
        _ => None,
    };
    if recorded_revision.as_deref() != revision {
        changed.push(format!(
            "the workspace was at {} then and is at {} now",
            recorded_revision.as_deref().unwrap_or("an unknown revision"),
            revision.unwrap_or("no git revision")
        ));
    }
    let recorded_pipeline = crate::beneath::existing(&dir, "pipeline.yml")
        .ok()
        .and_then(|p| crate::bounded::read(&p, crate::pipeline::model::PIPELINE_LIMIT).ok());
    if recorded_pipeline.as_deref() != Some(pipeline.source.text.as_bytes()) {
        changed.push(format!(
            "{} differs from the pipeline file that run used",
            pipeline.source.path.display()
        ));
    }
    for (decl, loaded) in pipeline.steps.iter().zip(&prepared.steps) {
        if !reuse.outputs.contains_key(&decl.id) {
            continue;
        }
        let recorded = journal.entries().find_map(|e| match e {
            Entry::Component { step, digest, .. } if *step == decl.id => Some(digest.as_str()),
            _ => None,
        });
        if recorded != Some(loaded.digest.as_str()) {
            changed.push(format!(
                "step `{}` would be reused but its component changed ({} then, {} now)",
                decl.id,
                recorded.unwrap_or("unknown"),
                loaded.digest
            ));
        }
    }
    if !changed.is_empty() && !force {
        return Err(format!(
            "run {} cannot be resumed: {}.\n  = help: its reused outputs would describe other code; run the pipeline afresh, or add `--force` to reuse them anyway",
            reuse.run_id,
            changed.join("; ")
        ));
    }
    for why in &changed {
        eprintln!("warning: --force: resuming although {why}");
    }
    Ok(reuse)
}

/// A run and the runs it resumed, newest first (a bounded walk: a forged folder may loop).
fn lineage(workspace: &Path, journal: &Journal) -> Vec<String> {
    let mut out = vec![journal.run_id()];
    let mut next = match journal.run_started() {
        Some(Entry::RunStarted { resumed_from, .. }) => resumed_from.clone(),
        _ => None,
    };
    while let Some(run) = next.take() {
        let plain = run.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !plain || out.len() >= 32 || out.contains(&run) {
            break;
        }
        out.push(run.clone());
        next = crate::journal::find_run(workspace, &run)
            .and_then(|dir| Journal::read(&dir))
            .ok()
            .and_then(|j| match j.run_started() {
                Some(Entry::RunStarted { resumed_from, .. }) => resumed_from.clone(),
                _ => None,
            });
    }
    out
}

/// Exit code of a run from its outcome, how it ended and what happened to its deploys. A
/// service that needs a human outranks everything; an interrupted run exits as shells
/// expect (128 + the signal).
pub fn exit_code(failed: bool, signal: Option<Signal>, ledger: &Ledger) -> Exit {
    if !ledger.rollback_failed.is_empty() || (failed && !ledger.paused.is_empty()) {
        Exit::NeedsHuman
    } else if !ledger.held.is_empty() {
        Exit::Held
    } else if let Some(signal) = signal {
        signal.exit()
    } else if failed && !ledger.rolled_back.is_empty() {
        Exit::RolledBack
    } else if failed {
        Exit::StepFailed
    } else {
        Exit::Success
    }
}

/// The signal that stopped a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Interrupt,
    Terminate,
}

impl Signal {
    fn describe(self) -> &'static str {
        match self {
            Signal::Interrupt => "interrupted (Ctrl-C)",
            Signal::Terminate => "terminated (SIGTERM)",
        }
    }

    fn exit(self) -> Exit {
        match self {
            Signal::Interrupt => Exit::Interrupted,
            Signal::Terminate => Exit::Terminated,
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn interrupted() -> Signal {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Signal::Interrupt,
        _ = term.recv() => Signal::Terminate,
    }
}

/// What a run got through, for the summary of an interrupted run (the run itself never
/// reaches its own summary).
#[derive(Default)]
struct Tally {
    /// The steps running now, and the outcomes of those finished.
    steps: std::sync::Mutex<(Vec<String>, Vec<Outcome>)>,
}

impl crate::events::Sink for Tally {
    fn event(&self, event: &Event) {
        let mut steps = self.steps.lock().unwrap();
        match event {
            Event::StepStarted { step, .. } if !steps.0.contains(step) => steps.0.push(step.clone()),
            Event::StepFinished { step, outcome, .. } => {
                steps.0.retain(|s| s != step);
                steps.1.push(*outcome);
            }
            _ => {}
        }
    }
}

impl Tally {
    fn summary(&self, signal: Signal, ledger: &Ledger) -> String {
        let steps = self.steps.lock().unwrap();
        let count = |o: Outcome| steps.1.iter().filter(|x| **x == o).count();
        let mut out = signal.describe().to_string();
        match steps.0.as_slice() {
            [] => {}
            [step] => out.push_str(&format!(" during step `{step}`")),
            running => out.push_str(&format!(" during steps `{}`", running.join("`, `"))),
        }
        out.push_str(&format!(
            "; before it {} step(s) succeeded, {} failed, {} skipped",
            count(Outcome::Success),
            count(Outcome::Failure),
            count(Outcome::Skipped)
        ));
        let list = |set: &std::collections::BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>().join(", ");
        if !ledger.rolled_back.is_empty() {
            out.push_str(&format!("; rolled back: {}", list(&ledger.rolled_back)));
        }
        if !ledger.paused.is_empty() {
            out.push_str(&format!("; left for a decision: {}", list(&ledger.paused)));
        }
        for (service, why) in &ledger.rollback_failed {
            out.push_str(&format!("; rollback of {service} FAILED: {why}"));
        }
        if ledger.touched.is_empty() {
            out.push_str("; nothing was deployed");
        }
        out
    }
}

/// What the run's provenance will say about the pipeline and its steps; the journal's
/// digest is taken when an image is pushed.
fn provenance_recorder(
    run_id: &str,
    prepared: &Prepared,
    journal: Option<&Arc<JournalWriter>>,
    events: &Events,
) -> crate::provenance::Recorder {
    let steps = prepared
        .pipeline
        .steps
        .iter()
        .zip(&prepared.steps)
        .map(|(decl, loaded)| (decl.id.clone(), decl.uses.clone(), loaded.digest.clone()))
        .collect();
    let journal = journal.cloned();
    let source = &prepared.pipeline.source;
    crate::provenance::Recorder::new(
        run_id,
        &source.path.display().to_string(),
        &source.text,
        steps,
        Box::new(move || {
            let journal = journal.as_ref()?;
            let (digest, bytes) = journal.digest_so_far().ok()?;
            Some(crate::provenance::JournalSoFar {
                digest,
                bytes,
                whole: journal.incomplete().is_none(),
            })
        }),
        {
            let events = events.clone();
            Box::new(move |text: &str| events.redact(text))
        },
    )
}
