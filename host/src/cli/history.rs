//! Recorded runs: `wharf runs`, `wharf log`, `wharf replay`.

use super::outcome::{CommandResult, Exit, Stop};
use super::render::{self, Human};
use super::run::parse_pairs;
use crate::engine::Runtime;
use crate::events::Events;
use crate::journal::reader::Journal;
use crate::journal::replay::{ReplayRequest, ReplayResult};
use crate::journal::{Entry, runs_dir};
use crate::run::prune::Sweep;
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use wharf_journal::retention::Retention;

#[derive(Args)]
pub struct RunsArgs {
    #[command(subcommand)]
    command: Option<RunsCommand>,
    /// The workspace whose `.wharf/runs` holds the journals
    #[arg(long, value_name = "DIR", default_value = ".", global = true)]
    workspace: PathBuf,
}

#[derive(clap::Subcommand)]
enum RunsCommand {
    /// Remove old recorded runs, then the stored components no remaining run names
    #[command(
        after_help = "A run still going is never removed. With both options, a run goes when it is older
than --older-than and not among the --keep newest.

Examples:
  wharf runs prune --keep 20
  wharf runs prune --older-than 14d
  wharf runs prune --keep 5 --older-than 1d --dry-run"
    )]
    Prune(PruneArgs),
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("policy").required(true).multiple(true))]
struct PruneArgs {
    /// Keep the N newest runs
    #[arg(long, value_name = "N", group = "policy")]
    keep: Option<usize>,
    /// Remove runs that ended longer ago than this (`12h`, `7d`, `30days`)
    #[arg(long, value_name = "DURATION", group = "policy", value_parser = humantime::parse_duration)]
    older_than: Option<std::time::Duration>,
    /// Say what would be removed, and remove nothing
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args)]
pub struct LogArgs {
    /// A run id (from `wharf runs`) or the path of a run folder
    run: String,
    /// Show every host call with its arguments and result
    #[arg(long)]
    calls: bool,
    /// Show only step ID: all of its output, its host calls and how it ended
    #[arg(long, value_name = "ID")]
    step: Option<String>,
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

impl ReplayArgs {
    pub(super) fn workspace(&self) -> PathBuf {
        self.workspace.clone()
    }
}

pub(super) fn runs(args: RunsArgs) -> CommandResult {
    if let Some(RunsCommand::Prune(prune)) = &args.command {
        return runs_prune(&args.workspace, prune);
    }
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
        outln!("no runs recorded in {}", dir.display());
        return Ok(Exit::Success);
    }
    outln!(
        "{:<22} {:<16} {:<21} {:>9}  outcome",
        "run",
        "pipeline",
        "started",
        "duration"
    );
    for id in ids {
        let Ok(journal) = Journal::read(&dir.join(&id)) else {
            outln!("{id:<22} (unreadable journal)");
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
        outln!("{id:<22} {pipeline:<16} {started:<21} {duration:>9}  {outcome}");
    }
    Ok(Exit::Success)
}

fn runs_prune(workspace: &std::path::Path, args: &PruneArgs) -> CommandResult {
    let retention = Retention {
        keep: args.keep,
        older_than: args.older_than,
    };
    let sweep = if args.dry_run {
        Sweep::DryRun
    } else {
        Sweep::RunsAndStore
    };
    let pruned = crate::run::prune::prune(workspace, retention, sweep)
        .map_err(|e| Stop::failed(format!("cannot prune {}: {e}", runs_dir(workspace).display())))?;
    let verb = if args.dry_run { "would remove" } else { "removed" };
    for run in &pruned.runs {
        outln!("{verb} {run}");
    }
    outln!(
        "{verb} {} and {} no run names ({})",
        crate::events::count(pruned.runs.len(), "run"),
        crate::events::count(pruned.components, "stored component"),
        crate::events::human_size(pruned.bytes)
    );
    Ok(Exit::Success)
}

pub(super) fn log(args: LogArgs) -> CommandResult {
    let journal = crate::journal::find_run(&args.workspace, &args.run)
        .and_then(|d| Journal::read(&d))
        .map_err(Stop::invalid)?;
    if let Some(step) = &args.step
        && !journal.records.iter().any(|r| r.entry.step() == Some(step))
    {
        return Err(Stop::invalid(format!(
            "run {} has no step `{step}`\n  = help: `wharf log {}` shows every step",
            journal.run_id(),
            args.run
        )));
    }
    for record in &journal.records {
        if let Some(step) = &args.step
            && record.entry.step() != Some(step)
        {
            continue;
        }
        let at = format!("{:>8.3}s", record.at_ms as f64 / 1000.0);
        let line = match &record.entry {
            Entry::Header { .. } | Entry::Component { .. } => continue,
            Entry::RunStarted {
                run_id,
                pipeline,
                vars,
                resumed_from,
                sandbox,
                ..
            } => {
                let vars: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let resumed = resumed_from
                    .as_ref()
                    .map(|r| format!(", resuming {r}"))
                    .unwrap_or_default();
                let unconfined = if sandbox.as_deref() == Some("off") {
                    ", sandbox off"
                } else {
                    ""
                };
                format!("run {run_id} of `{pipeline}` ({}){resumed}{unconfined}", vars.join(" "))
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
            Entry::Clocks { step, calls, .. } => {
                if !args.calls {
                    continue;
                }
                format!(
                    "    {step} clock calls ×{}\n      {}",
                    calls.len(),
                    serde_json::Value::from(calls.clone())
                )
            }
            Entry::Snapshot { step, snapshot, .. } => {
                format!("    {step} keeps what it looks at in the workspace: {snapshot}")
            }
            Entry::Call {
                step,
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
                // Steps that ran side by side interleave: every line names its step.
                let mut text = format!(
                    "    {step} call {interface}.{function} ({})",
                    render::duration(std::time::Duration::from_micros(*micros))
                );
                if args.calls {
                    text.push_str(&format!("\n      args   {call_args}\n      result {result}"));
                }
                text
            }
            Entry::Log {
                step,
                level,
                stream,
                message,
            } => {
                let tag = if stream == "log" && level == "info" {
                    String::new()
                } else {
                    format!("{stream}/{level} ")
                };
                // Printed as it stands, a line at a time: a message may be long.
                show(&at, &format!("    {step} │ {tag}"), message);
                continue;
            }
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
            Entry::Measurement { step, measurement } => format!("    {step} ≈ {}", measurement.describe()),
            Entry::Traffic {
                service,
                version,
                percent,
            } => format!("» traffic: {percent}% of `{service}` to {version}"),
            Entry::Audited { step, needed, .. } => format!("» audit: `{step}` needed {}", needed.join(", ")),
            Entry::Cache { step, hit, detail } => format!(
                "» cache: `{step}` {}: {detail}",
                if *hit { "was cached" } else { "ran" }
            ),
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
        show(&at, "", &line);
    }
    if journal.truncated {
        outln!("(the journal ends here: the last entry was cut off, the run was killed)");
    }
    Ok(Exit::Success)
}

/// One entry of `wharf log`: `text` behind the time and `prefix`, each line of it shown and
/// never obeyed (a run folder may come from anywhere), written as it goes rather than
/// copied whole.
fn show(at: &str, prefix: &str, text: &str) {
    for (n, line) in text.split('\n').enumerate() {
        let line = render::printable(line.trim_end_matches('\r'));
        if n == 0 {
            outln!("{at}  {}{line}", render::printable(prefix));
        } else {
            outln!("{line}");
        }
    }
}

pub(super) async fn replay(runtime: &Runtime, args: ReplayArgs, color: bool) -> CommandResult {
    let run_dir = crate::journal::find_run(&args.workspace, &args.run).map_err(Stop::invalid)?;
    let substitutes = parse_pairs(&args.steps, "--step")
        .map_err(Stop::invalid)?
        .into_iter()
        .map(|(s, p)| (s, PathBuf::from(p)))
        .collect();
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
    match result.map_err(Stop::invalid)? {
        ReplayResult::Matched => Ok(Exit::Success),
        ReplayResult::Diverged(report) => {
            outln!("{report}");
            Ok(Exit::Diverged)
        }
    }
}

#[derive(Args)]
pub struct GrantsArgs {
    /// An audit run's id (from `wharf runs`) or the path of its run folder
    run: String,
    #[arg(long, value_name = "DIR", default_value = ".")]
    workspace: PathBuf,
}

/// `wharf grants RUN`: per step of an audit run, the smallest `allow:` block that would have
/// let it do what it did, ready to paste into the pipeline.
pub(super) fn grants(args: GrantsArgs) -> CommandResult {
    let journal = crate::journal::find_run(&args.workspace, &args.run)
        .and_then(|d| Journal::read(&d))
        .map_err(Stop::invalid)?;
    let audit = journal
        .records
        .iter()
        .any(|r| matches!(r.entry, Entry::RunStarted { audit: true, .. }));
    if !audit {
        return Err(Stop::invalid(format!(
            "run {} was not an audit run: its steps did only what their grants allowed\n  = help: run the pipeline with `wharf run --audit`, then `wharf grants` that run",
            journal.run_id()
        )));
    }
    let mut steps: Vec<String> = Vec::new();
    let mut needed: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for record in &journal.records {
        match &record.entry {
            Entry::StepStarted { step, .. } if !steps.contains(step) => steps.push(step.clone()),
            Entry::Audited {
                step, needed: lines, ..
            } => needed.entry(step.clone()).or_default().extend(lines.clone()),
            _ => {}
        }
    }
    outln!(
        "audit run {}: what each step needed beyond its grants",
        journal.run_id()
    );
    for step in steps {
        match needed.get(&step) {
            None => outln!("\n  {step}: nothing more"),
            Some(lines) => {
                let block = crate::sandbox::audit::allow_block(lines);
                if block.lines().count() > 1 {
                    outln!("\n  {step}: add to the step");
                    for line in block.lines() {
                        outln!("    {line}");
                    }
                } else {
                    outln!("\n  {step}: nothing more");
                }
                let absent = crate::sandbox::audit::absent(lines);
                if !absent.is_empty() {
                    outln!(
                        "    # it looked for what the workspace does not hold (a path from `/` in a step resolves in the workspace; no grant reaches outside it): {}",
                        absent.join(", ")
                    );
                }
            }
        }
    }
    Ok(Exit::Success)
}
