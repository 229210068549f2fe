//! Deployed services: `wharf status`, `confirm`, `rollback`, `remove`.

use super::outcome::{CommandResult, Exit, Stop};
use super::render::Human;
use crate::deploy::state::ServiceRecord;
use crate::deploy::{Actor, Deployer};
use crate::events::Events;
use clap::Args;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

fn print_service(r: &ServiceRecord) {
    outln!("{}  target {}  state {}", r.service, r.target, r.state.as_str());
    for (label, spec) in [("current", &r.current), ("previous", &r.previous)] {
        if let Some(spec) = spec {
            outln!("  {label:<9} {}  {}", spec.revision.version, spec.revision.image);
        }
    }
    if let (Some(traffic), Some(current)) = (r.traffic, &r.current) {
        outln!("  traffic   {traffic}% to {} (a canary)", current.revision.version);
    }
    if let Some(why) = &r.held {
        outln!(
            "  held      {}; decide with `wharf confirm {}` or `wharf rollback {}`",
            crate::cli::render::printable(why),
            r.service,
            r.service
        );
    }
    if r.instances.is_empty() {
        outln!("  no instances");
    }
    for i in &r.instances {
        outln!(
            "  {:<14} {:<24} {}:{:<6} {}",
            i.id,
            i.version,
            i.address,
            i.port,
            i.condition
                .as_deref()
                .unwrap_or(if i.running { "running" } else { "stopped" })
        );
    }
}

fn service_deployer(workspace: &Path) -> Result<Deployer, Stop> {
    let workspace = std::fs::canonicalize(workspace)
        .map_err(|e| Stop::invalid(format!("workspace {}: {e}", workspace.display())))?;
    let events = Events::new();
    events.add_sink(Arc::new(Human::new(false, false, Box::new(std::io::stdout()))));
    Ok(Deployer::new(&workspace, Actor::Person, events))
}

/// The exit for a failed deploy call: a refused request is the caller's mistake.
fn stop(e: crate::deploy::DeployError, otherwise: Exit) -> Stop {
    let exit = if e.is_refusal() { Exit::Invalid } else { otherwise };
    Stop::with_exit(exit, e)
}

pub(super) async fn status(args: StatusArgs) -> CommandResult {
    let deployer = service_deployer(&args.workspace)?;
    let records = match &args.service {
        Some(s) => vec![deployer.status(s).await],
        None => deployer.list().await,
    };
    if records.is_empty() {
        outln!("no services deployed from {}", args.workspace.display());
        return Ok(Exit::Success);
    }
    // Every service that can be read is shown; the others are reported together after.
    let mut unreadable = Vec::new();
    let mut first = true;
    for record in records {
        match record {
            Ok(r) => {
                if !first {
                    outln!();
                }
                first = false;
                print_service(&r);
            }
            Err(e) => unreadable.push(stop(e, Exit::StepFailed)),
        }
    }
    match unreadable.len() {
        0 => Ok(Exit::Success),
        1 => Err(unreadable.remove(0)),
        _ => {
            let exit = unreadable[0].exit;
            let all: Vec<String> = unreadable.iter().map(|s| s.report.to_string()).collect();
            Err(Stop::with_exit(exit, all.join("\n").trim_start_matches("error: ")))
        }
    }
}

pub(super) async fn decide(args: ServiceArgs, confirm: bool) -> CommandResult {
    let deployer = service_deployer(&args.workspace)?;
    let result = if confirm {
        deployer.confirm(&args.service).await
    } else {
        deployer.rollback(&args.service).await
    };
    let failed = if confirm { Exit::StepFailed } else { Exit::NeedsHuman };
    print_service(&result.map_err(|e| stop(e, failed))?);
    Ok(Exit::Success)
}

pub(super) async fn remove(args: ServiceArgs) -> CommandResult {
    let deployer = service_deployer(&args.workspace)?;
    deployer
        .remove(&args.service)
        .await
        .map_err(|e| stop(e, Exit::StepFailed))?;
    Ok(Exit::Success)
}
