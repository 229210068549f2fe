//! What each command does.

use super::render::{self, Human};
use super::{Cli, Command, exit};
use crate::capabilities::secrets::SecretStore;
use crate::deploy::state::ServiceRecord;
use crate::deploy::{Deployer, Ledger};
use crate::engine::bindings::wharf::step::types::ErrorKind;
use crate::engine::bindings::wharf::step::types::{CapabilityKind, StepInfo};
use crate::engine::{LoadedStep, Runtime};
use crate::events::{Event, Events, Outcome};
use crate::journal::reader::Journal;
use crate::journal::replay::{ReplayRequest, ReplayResult};
use crate::journal::writer::JournalWriter;
use crate::journal::{Entry, runs_dir};
use crate::pipeline::params::{display, type_name};
use crate::pipeline::validate::{LoadProblem, StepShape, validate};
use crate::pipeline::{Pipeline, StepSource};
use crate::run::{Reuse, RunRequest, execute, new_run_id};
use clap::Args;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Args)]
pub struct RunArgs {
    /// The pipeline file
    file: PathBuf,
    /// Set a pipeline var, overriding its default (repeatable)
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// Directory the steps work in [default: the pipeline file's directory]
    #[arg(long, value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// Provide secret NAME from a file (repeatable)
    #[arg(long = "secret-file", value_name = "NAME=PATH")]
    secret_files: Vec<String>,
    /// Show each step's log, outputs and component loading
    #[arg(short, long)]
    verbose: bool,
    /// Run again from the first failed step of this earlier run, reusing what succeeded
    #[arg(long, value_name = "RUN")]
    resume: Option<String>,
}

#[derive(Args)]
pub struct RunsArgs {
    /// The workspace whose `.wharf/runs` holds the journals
    #[arg(long, value_name = "DIR", default_value = ".")]
    workspace: PathBuf,
}

#[derive(Args)]
pub struct LogArgs {
    /// A run id (from `wharf runs`) or the path of a run folder
    run: String,
    /// Show every host call with its arguments and result
    #[arg(long)]
    calls: bool,
    #[arg(long, value_name = "DIR", default_value = ".")]
    workspace: PathBuf,
}

#[derive(Args)]
pub struct ReplayArgs {
    /// A run id (from `wharf runs`) or the path of a run folder
    run: String,
    /// Replay step ID with another build of its component (repeatable)
    #[arg(long = "step", value_name = "ID=PATH")]
    steps: Vec<String>,
    /// Show each step's log and outputs
    #[arg(short, long)]
    verbose: bool,
    #[arg(long, value_name = "DIR", default_value = ".")]
    workspace: PathBuf,
}

#[derive(Args)]
pub struct ValidateArgs {
    /// The pipeline file
    file: PathBuf,
    /// Set a pipeline var, as `wharf run` would (repeatable)
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
}

#[derive(Args)]
pub struct StatusArgs {
    /// One service [default: all]
    service: Option<String>,
    /// The workspace whose `.wharf/state` holds the services
    #[arg(long, value_name = "DIR", default_value = ".")]
    workspace: PathBuf,
}

#[derive(Args)]
pub struct ServiceArgs {
    /// The service
    service: String,
    /// The workspace whose `.wharf/state` holds the service
    #[arg(long, value_name = "DIR", default_value = ".")]
    workspace: PathBuf,
}

#[derive(Args)]
pub struct InspectArgs {
    /// `builtin:NAME` or a path to a .wasm component
    step: String,
}

pub async fn dispatch(cli: Cli) -> u8 {
    let runtime = match Runtime::new(cli.cache_dir()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the WebAssembly engine: {e:#}");
            return exit::FAILED;
        }
    };
    let color = cli.color();
    match cli.command {
        Command::Run(args) => run(&runtime, args, color).await,
        Command::Validate(args) => validate_cmd(&runtime, args).await,
        Command::Steps => steps(&runtime).await,
        Command::Inspect(args) => inspect(&runtime, args).await,
        Command::Status(args) => status(args).await,
        Command::Confirm(args) => decide(args, true).await,
        Command::Rollback(args) => decide(args, false).await,
        Command::Remove(args) => remove(args).await,
        Command::Runs(args) => runs(args),
        Command::Log(args) => log(args),
        Command::Replay(args) => replay(&runtime, args, color).await,
    }
}

/// A pipeline that passed validation, with its steps loaded.
struct Prepared {
    pipeline: Pipeline,
    steps: Vec<Arc<LoadedStep>>,
    vars: BTreeMap<String, String>,
}

fn parse_pairs(pairs: &[String], flag: &str) -> Result<Vec<(String, String)>, String> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(format!("`{flag} {p}` must look like `{flag} NAME=VALUE`")),
        })
        .collect()
}

async fn prepare(runtime: &Runtime, file: &Path, var_args: &[String], events: &Events) -> Result<Prepared, u8> {
    let pipeline = Pipeline::load(file).map_err(|d| {
        eprintln!("{d}");
        exit::INVALID
    })?;
    let overrides = parse_pairs(var_args, "--var").map_err(|e| {
        eprintln!("error: {e}");
        exit::INVALID
    })?;
    for (name, _) in &overrides {
        if !pipeline.vars.iter().any(|v| v.name == *name) {
            let declared: Vec<&str> = pipeline.vars.iter().map(|v| v.name.as_str()).collect();
            eprintln!(
                "error: `--var {name}=...`: {} declares no var `{name}`\n  = help: its vars are: {}",
                file.display(),
                if declared.is_empty() {
                    "(none)".to_string()
                } else {
                    declared.join(", ")
                }
            );
            return Err(exit::INVALID);
        }
    }
    let mut loaded: Vec<Result<Arc<LoadedStep>, LoadProblem>> = Vec::new();
    for step in &pipeline.steps {
        loaded.push(runtime.load(&step.source(pipeline.dir()), events).await);
    }
    let shapes: Vec<Result<StepShape, LoadProblem>> = loaded
        .iter()
        .map(|l| l.as_ref().map(|s| s.shape()).map_err(Clone::clone))
        .collect();
    if let Err(d) = validate(&pipeline, &shapes, &overrides) {
        eprintln!("{d}");
        return Err(exit::INVALID);
    }
    let mut vars = BTreeMap::new();
    for v in &pipeline.vars {
        if let Some(d) = &v.default {
            vars.insert(v.name.clone(), d.clone());
        }
    }
    vars.extend(overrides);
    let steps = loaded.into_iter().map(|l| l.expect("validated")).collect();
    Ok(Prepared { pipeline, steps, vars })
}

async fn run(runtime: &Runtime, args: RunArgs, color: bool) -> u8 {
    let events = Events::new();
    let human = Arc::new(Human::new(args.verbose, color, Box::new(std::io::stdout())));
    events.add_sink(human.clone());
    let mut secrets = SecretStore::from_env();
    match parse_pairs(&args.secret_files, "--secret-file") {
        Ok(pairs) => {
            for (name, path) in pairs {
                if let Err(e) = secrets.add_file(&name, Path::new(&path)) {
                    eprintln!("error: {e}");
                    return exit::INVALID;
                }
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            return exit::INVALID;
        }
    }
    for value in secrets.values() {
        events.add_secret(value);
    }
    let prepared = match prepare(runtime, &args.file, &args.vars, &events).await {
        Ok(p) => p,
        Err(code) => return code,
    };
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
            eprintln!("error: workspace {} is not a directory", workspace.display());
            return exit::INVALID;
        }
    };
    human.set_name_width(prepared.pipeline.steps.iter().map(|s| s.id.len()).max().unwrap_or(4));
    let reuse = match &args.resume {
        None => None,
        Some(run) => match resume_from(&workspace, run, &prepared.pipeline) {
            Ok(reuse) => Some(reuse),
            Err(e) => {
                eprintln!("error: --resume {run}: {e}");
                return exit::INVALID;
            }
        },
    };
    let run_id = new_run_id();
    let journal = match start_journal(&workspace, &run_id, &prepared, &events, reuse.as_ref()) {
        Ok(j) => Some(j),
        Err(e) => {
            eprintln!("warning: this run is not recorded: {e}");
            None
        }
    };
    let deployer = Arc::new(Deployer::new(&workspace, &run_id, events.clone()));
    let on_failure = prepared.pipeline.on_failure;
    let started = std::time::Instant::now();
    let run = execute(RunRequest {
        pipeline: &prepared.pipeline,
        steps: prepared.steps,
        vars: prepared.vars,
        workspace,
        run_id,
        secrets: Arc::new(secrets),
        deployer: deployer.clone(),
        events: events.clone(),
        journal: journal.clone(),
        reuse,
    });
    // An interrupt drops the running step (its store, its child processes) and then rolls
    // back what the run left unconfirmed, like a failure.
    let failed = tokio::select! {
        report = run => report.outcome == Outcome::Failure,
        signal = interrupted() => {
            events.emit(Event::Notice { message: format!("{signal}: stopping the run") });
            true
        }
    };
    let ledger = deployer.settle(failed, on_failure).await;
    let code = exit_code(failed, &ledger);
    if let Some(journal) = journal {
        journal.write(Entry::RunFinished {
            outcome: if failed { "failure" } else { "success" }.into(),
            exit_code: code,
            millis: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        });
        journal.sync();
    }
    code
}

/// Open the run's journal, store the pipeline, and record how the run starts.
fn start_journal(
    workspace: &Path,
    run_id: &str,
    prepared: &Prepared,
    events: &Events,
    reuse: Option<&Reuse>,
) -> std::io::Result<Arc<JournalWriter>> {
    let journal = Arc::new(JournalWriter::create(
        &runs_dir(workspace).join(run_id),
        events.clone(),
    )?);
    journal.store_pipeline(&prepared.pipeline.source.text)?;
    journal.write(Entry::RunStarted {
        run_id: run_id.to_string(),
        pipeline: prepared.pipeline.name.clone(),
        pipeline_file: "pipeline.yml".into(),
        vars: prepared.vars.clone(),
        workspace: workspace.display().to_string(),
        started: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        resumed_from: reuse.map(|r| r.run_id.clone()),
    });
    events.add_sink(journal.clone());
    Ok(journal)
}

/// The steps of an earlier run that `--resume` takes over: those that succeeded before its
/// first failed step, in pipeline order.
fn resume_from(workspace: &Path, run: &str, pipeline: &Pipeline) -> Result<Reuse, String> {
    let dir = crate::journal::find_run(workspace, run)?;
    let journal = Journal::read(&dir)?;
    let outcomes = journal.step_outcomes();
    let mut reuse = Reuse {
        run_id: journal.run_id(),
        outputs: BTreeMap::new(),
    };
    let mut failed = false;
    for step in &pipeline.steps {
        match outcomes.iter().find(|end| end.step == step.id) {
            Some(end) if end.outcome == "success" => {
                reuse.outputs.insert(step.id.clone(), end.outputs.clone());
            }
            Some(end) if end.outcome == "failure" => {
                failed = true;
                break;
            }
            // Skipped, or never reached: from here on everything runs.
            _ => break,
        }
    }
    if !failed && journal.finished().is_some_and(|(outcome, _, _)| outcome == "success") {
        return Err(format!("run {} succeeded; there is nothing to resume", reuse.run_id));
    }
    Ok(reuse)
}

/// Exit code of a run from its outcome and what happened to its deploys.
pub fn exit_code(failed: bool, ledger: &Ledger) -> u8 {
    if !ledger.rollback_failed.is_empty() || (failed && !ledger.paused.is_empty()) {
        exit::NEEDS_HUMAN
    } else if failed && !ledger.rolled_back.is_empty() {
        exit::ROLLED_BACK
    } else if failed {
        exit::FAILED
    } else {
        exit::SUCCESS
    }
}

/// Resolves on Ctrl-C or SIGTERM, naming it.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupted (Ctrl-C)",
        _ = term.recv() => "terminated (SIGTERM)",
    }
}

async fn validate_cmd(runtime: &Runtime, args: ValidateArgs) -> u8 {
    let events = Events::new();
    match prepare(runtime, &args.file, &args.vars, &events).await {
        Ok(p) => {
            println!(
                "{}: valid · pipeline `{}` · {} steps",
                args.file.display(),
                p.pipeline.name,
                p.steps.len()
            );
            println!("effective grants: `allow:` plus what a built-in step's own parameters name\n");
            for (decl, step) in p.pipeline.steps.iter().zip(&p.steps) {
                let kind = if step.info.is_some() {
                    "typed step"
                } else {
                    "WASI command"
                };
                println!(
                    "  {:<12} {} ({kind}, {})",
                    decl.id,
                    decl.uses,
                    short_digest(&step.digest)
                );
                let grants = preview_grants(decl, step);
                if grants.is_empty() {
                    println!("      (no grants: it can only log)");
                }
                for line in grants {
                    println!("      {line}");
                }
            }
            exit::SUCCESS
        }
        Err(code) => code,
    }
}

/// The grants a step will run with, as far as they are known before the run: values that
/// are interpolated show their expression.
fn preview_grants(decl: &crate::pipeline::StepDecl, step: &LoadedStep) -> Vec<String> {
    use crate::pipeline::params::{convert, scalars};
    let mut lines = decl.allow.describe();
    let Some(info) = step.info.as_ref().filter(|_| step.is_builtin()) else {
        return lines;
    };
    let mut values = Vec::new();
    let mut pending = Vec::new();
    for cap in &info.capabilities {
        let Some(name) = &cap.scope_param else { continue };
        let Some(spec) = info.params.iter().find(|p| p.name == *name) else {
            continue;
        };
        match decl.with.iter().find(|p| p.name == *name) {
            Some(p) if scalars(&p.value).iter().any(|s| s.text.contains("${{")) => {
                let raw: Vec<&str> = scalars(&p.value).iter().map(|s| s.text.as_str()).collect();
                pending.push(format!(
                    "{:<9} {}  (from `{name}`, at run time)",
                    capability_name(cap.kind),
                    raw.join(" ")
                ));
            }
            Some(p) => {
                if let Ok(v) = convert(name, &p.value, spec.type_) {
                    values.push((name.clone(), v));
                }
            }
            None => {
                if let Some(d) = &spec.default {
                    values.push((name.clone(), d.clone()));
                }
            }
        }
    }
    let mut derived = crate::sandbox::Grants::default();
    derived.derive(info, &values);
    lines.extend(derived.describe());
    lines.extend(pending);
    lines
}

fn short_digest(d: &str) -> String {
    d.chars().take("sha256:".len() + 12).collect()
}

async fn steps(runtime: &Runtime) -> u8 {
    let events = Events::new();
    let mut rows = Vec::new();
    for name in crate::builtins::names() {
        match runtime.load(&StepSource::Builtin(name.into()), &events).await {
            Ok(step) => {
                let info = step.info.as_ref();
                rows.push((
                    format!("builtin:{name}"),
                    info.map(|i| i.version.clone()).unwrap_or_default(),
                    info.map(|i| i.summary.clone()).unwrap_or_default(),
                ));
            }
            Err(p) => rows.push((
                format!("builtin:{name}"),
                "?".into(),
                format!("failed to load: {}", p.message),
            )),
        }
    }
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    for (name, version, summary) in rows {
        println!("{name:<width$}  {version:<6}  {summary}");
    }
    println!("\n`wharf inspect builtin:NAME` shows a step's parameters, outputs and capabilities.");
    exit::SUCCESS
}

async fn inspect(runtime: &Runtime, args: InspectArgs) -> u8 {
    let source = match args.step.strip_prefix("builtin:") {
        Some(name) => StepSource::Builtin(name.into()),
        None => StepSource::File(PathBuf::from(&args.step)),
    };
    let step = match runtime.load(&source, &Events::new()).await {
        Ok(s) => s,
        Err(p) => {
            eprintln!("error: {}\n  = help: {}", p.message, p.help);
            return exit::INVALID;
        }
    };
    println!("{}  ({})", step.origin, step.digest);
    match &step.info {
        Some(info) => print_info(info),
        None => {
            println!("WASI command step (exports wasi:cli/run)");
            println!("  parameters arrive as WHARF_PARAM_<NAME> environment variables;");
            println!("  outputs are key=value lines written to the file named by WHARF_OUTPUT;");
            println!("  exit code 0 is success.");
        }
    }
    exit::SUCCESS
}

fn print_info(info: &StepInfo) {
    println!("{} {} · {}", info.name, info.version, info.summary);
    println!("\nparameters:");
    if info.params.is_empty() {
        println!("  (none)");
    }
    for p in &info.params {
        let mut attrs = vec![type_name(p.type_).to_string()];
        if p.required {
            attrs.push("required".into());
        }
        if let Some(d) = &p.default {
            attrs.push(format!("default {}", display(d)));
        }
        println!(
            "  {:<18} {:<34} {}",
            p.name,
            format!("({})", attrs.join(", ")),
            p.description
        );
    }
    println!("\noutputs:");
    if info.outputs.is_empty() {
        println!("  (none)");
    }
    for o in &info.outputs {
        println!("  {:<18} {}", o.name, o.description);
    }
    println!("\ncapabilities:");
    if info.capabilities.is_empty() {
        println!("  (none)");
    }
    for c in &info.capabilities {
        let scope = c
            .scope_param
            .as_ref()
            .map(|p| format!(" (scoped by `{p}`)"))
            .unwrap_or_default();
        println!("  {:<18} {}{scope}", capability_name(c.kind), c.reason);
    }
}

pub fn capability_name(kind: CapabilityKind) -> &'static str {
    match kind {
        CapabilityKind::Process => "process",
        CapabilityKind::Source => "source",
        CapabilityKind::Secrets => "secrets",
        CapabilityKind::Http => "http",
        CapabilityKind::Images => "images",
        CapabilityKind::Registry => "registry",
        CapabilityKind::Deploy => "deploy",
        CapabilityKind::WorkspaceRead => "workspace-read",
        CapabilityKind::WorkspaceWrite => "workspace-write",
    }
}

fn print_service(r: &ServiceRecord) {
    println!("{}  target {}  state {}", r.service, r.target, r.state.as_str());
    for (label, spec) in [("current", &r.current), ("previous", &r.previous)] {
        if let Some(spec) = spec {
            println!("  {label:<9} {}  {}", spec.revision.version, spec.revision.image);
        }
    }
    if r.instances.is_empty() {
        println!("  no instances");
    }
    for i in &r.instances {
        println!(
            "  {:<14} {:<24} {}:{:<6} {}",
            i.id,
            i.version,
            i.address,
            i.port,
            if i.running { "running" } else { "stopped" }
        );
    }
}

fn service_deployer(workspace: &Path) -> Result<Deployer, u8> {
    let workspace = std::fs::canonicalize(workspace).map_err(|e| {
        eprintln!("error: workspace {}: {e}", workspace.display());
        exit::INVALID
    })?;
    let run_id = format!("cli-{}", std::process::id());
    let events = Events::new();
    events.add_sink(Arc::new(Human::new(false, false, Box::new(std::io::stdout()))));
    Ok(Deployer::new(&workspace, &run_id, events))
}

async fn status(args: StatusArgs) -> u8 {
    let deployer = match service_deployer(&args.workspace) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let records = match &args.service {
        Some(s) => deployer.status(s).await.map(|r| vec![r]),
        None => deployer.list().await,
    };
    match records {
        Ok(records) if records.is_empty() => {
            println!("no services deployed from {}", args.workspace.display());
            exit::SUCCESS
        }
        Ok(records) => {
            for (n, r) in records.iter().enumerate() {
                if n > 0 {
                    println!();
                }
                print_service(r);
            }
            exit::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", e.message);
            exit::INVALID
        }
    }
}

async fn decide(args: ServiceArgs, confirm: bool) -> u8 {
    let deployer = match service_deployer(&args.workspace) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let result = if confirm {
        deployer.confirm(&args.service).await
    } else {
        deployer.rollback(&args.service).await
    };
    match result {
        Ok(record) => {
            print_service(&record);
            exit::SUCCESS
        }
        Err(e) if e.kind == ErrorKind::InvalidInput => {
            eprintln!("error: {}", e.message);
            exit::INVALID
        }
        Err(e) => {
            eprintln!("error: {}", e.message);
            if confirm { exit::FAILED } else { exit::NEEDS_HUMAN }
        }
    }
}

async fn remove(args: ServiceArgs) -> u8 {
    let deployer = match service_deployer(&args.workspace) {
        Ok(d) => d,
        Err(code) => return code,
    };
    match deployer.remove(&args.service).await {
        Ok(_) => exit::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.message);
            if e.kind == ErrorKind::InvalidInput {
                exit::INVALID
            } else {
                exit::FAILED
            }
        }
    }
}

fn runs(args: RunsArgs) -> u8 {
    let dir = runs_dir(&args.workspace);
    let mut ids: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    if ids.is_empty() {
        println!("no runs recorded in {}", dir.display());
        return exit::SUCCESS;
    }
    println!(
        "{:<22} {:<16} {:<21} {:>9}  outcome",
        "run", "pipeline", "started", "duration"
    );
    for id in ids {
        let Ok(journal) = Journal::read(&dir.join(&id)) else {
            println!("{id:<22} (unreadable journal)");
            continue;
        };
        let (pipeline, started) = match journal.run_started() {
            Some(Entry::RunStarted { pipeline, started, .. }) => (pipeline.clone(), started.clone()),
            _ => (String::new(), String::new()),
        };
        let (duration, outcome) = match journal.finished() {
            Some((outcome, code, millis)) => (
                render::duration(std::time::Duration::from_millis(millis)),
                format!("{outcome} (exit {code})"),
            ),
            None => (
                "-".into(),
                if journal.truncated {
                    "cut off".into()
                } else {
                    "unfinished".into()
                },
            ),
        };
        println!("{id:<22} {pipeline:<16} {started:<21} {duration:>9}  {outcome}");
    }
    exit::SUCCESS
}

fn log(args: LogArgs) -> u8 {
    let journal = match crate::journal::find_run(&args.workspace, &args.run).and_then(|d| Journal::read(&d)) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::INVALID;
        }
    };
    for record in &journal.records {
        let at = format!("{:>8.3}s", record.at_ms as f64 / 1000.0);
        let line = match &record.entry {
            Entry::Header { .. } | Entry::Component { .. } => continue,
            Entry::RunStarted {
                run_id,
                pipeline,
                vars,
                resumed_from,
                ..
            } => {
                let vars: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let resumed = resumed_from
                    .as_ref()
                    .map(|r| format!(", resuming {r}"))
                    .unwrap_or_default();
                format!("run {run_id} of `{pipeline}` ({}){resumed}", vars.join(" "))
            }
            Entry::StepStarted {
                step,
                uses,
                attempt,
                grants,
                ..
            } => {
                format!(
                    "▸ {step} · {uses} (attempt {attempt}; grants: {})",
                    if grants.is_empty() {
                        "none".into()
                    } else {
                        grants.len().to_string()
                    }
                )
            }
            Entry::Call {
                interface,
                function,
                args: call_args,
                result,
                micros,
                ..
            } => {
                if !args.calls && interface.starts_with("wasi:") && !interface.starts_with("wasi:http") {
                    continue;
                }
                let mut text = format!(
                    "    call {interface}.{function} ({})",
                    render::duration(std::time::Duration::from_micros(*micros))
                );
                if args.calls {
                    text.push_str(&format!("\n      args   {call_args}\n      result {result}"));
                }
                text
            }
            Entry::Log {
                level, stream, message, ..
            } => format!(
                "    │ {}{message}",
                if stream == "log" && level == "info" {
                    String::new()
                } else {
                    format!("{stream}/{level} ")
                }
            ),
            Entry::StepFinished {
                step,
                outcome,
                detail,
                outputs,
                millis,
            } => {
                let mut text = format!(
                    "{} {step} {outcome} in {}",
                    if outcome == "success" {
                        "✓"
                    } else if outcome == "failure" {
                        "✗"
                    } else {
                        "-"
                    },
                    render::duration(std::time::Duration::from_millis(*millis))
                );
                if let Some(d) = detail {
                    text.push_str(&format!(": {d}"));
                }
                for (k, v) in outputs {
                    text.push_str(&format!("\n      → {k}={}", v.replace('\n', "\\n")));
                }
                text
            }
            Entry::Notice { message } => format!("» {message}"),
            Entry::RunFinished {
                outcome,
                exit_code,
                millis,
            } => {
                format!(
                    "run {outcome} in {}, exit code {exit_code}",
                    render::duration(std::time::Duration::from_millis(*millis))
                )
            }
        };
        println!("{at}  {line}");
    }
    if journal.truncated {
        println!("(the journal ends here: the last entry was cut off, the run was killed)");
    }
    exit::SUCCESS
}

async fn replay(runtime: &Runtime, args: ReplayArgs, color: bool) -> u8 {
    let run_dir = match crate::journal::find_run(&args.workspace, &args.run) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::INVALID;
        }
    };
    let substitutes = match parse_pairs(&args.steps, "--step") {
        Ok(pairs) => pairs.into_iter().map(|(s, p)| (s, PathBuf::from(p))).collect(),
        Err(e) => {
            eprintln!("error: {e}");
            return exit::INVALID;
        }
    };
    let events = Events::new();
    let human = Arc::new(Human::new(args.verbose, color, Box::new(std::io::stdout())));
    human.set_name_width(12);
    events.add_sink(human);
    let result = crate::journal::replay::replay(ReplayRequest {
        runtime,
        run_dir,
        substitutes,
        events,
    })
    .await;
    match result {
        Ok(ReplayResult::Matched { .. }) => exit::SUCCESS,
        Ok(ReplayResult::Diverged(report)) => {
            println!("{report}");
            exit::DIVERGED
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::INVALID
        }
    }
}
