//! `wharf run`: validate, run, record, settle the deploys, choose the exit code.

use super::exit;
use super::render::Human;
use crate::capabilities::secrets::SecretStore;
use crate::deploy::{Deployer, Ledger};
use crate::engine::{LoadedStep, Runtime};
use crate::events::{Event, Events, Outcome};
use crate::journal::reader::Journal;
use crate::journal::writer::JournalWriter;
use crate::journal::{Entry, runs_dir};
use crate::pipeline::Pipeline;
use crate::pipeline::validate::{LoadProblem, StepShape, validate};
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

/// A pipeline that passed validation, with its steps loaded.
pub(super) struct Prepared {
    pub(super) pipeline: Pipeline,
    pub(super) steps: Vec<Arc<LoadedStep>>,
    pub(super) vars: BTreeMap<String, String>,
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
    var_args: &[String],
    events: &Events,
) -> Result<Prepared, u8> {
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

pub(super) async fn run(runtime: &Runtime, args: RunArgs, color: bool) -> u8 {
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
