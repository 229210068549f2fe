//! Deployed services: `wharf status`, `confirm`, `rollback`, `remove`.

use super::exit;
use super::render::Human;
use crate::deploy::state::ServiceRecord;
use crate::deploy::{Actor, Deployer};
use crate::engine::bindings::wharf::step::types::ErrorKind;
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
            if i.running { "running" } else { "stopped" }
        );
    }
}

fn service_deployer(workspace: &Path) -> Result<Deployer, u8> {
    let workspace = std::fs::canonicalize(workspace).map_err(|e| {
        eprintln!("error: workspace {}: {e}", workspace.display());
        exit::INVALID
    })?;
    let events = Events::new();
    events.add_sink(Arc::new(Human::new(false, false, Box::new(std::io::stdout()))));
    Ok(Deployer::new(&workspace, Actor::Person, events))
}

pub(super) async fn status(args: StatusArgs) -> u8 {
    let deployer = match service_deployer(&args.workspace) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let records = match &args.service {
        Some(s) => vec![deployer.status(s).await],
        None => deployer.list().await,
    };
    if records.is_empty() {
        outln!("no services deployed from {}", args.workspace.display());
        return exit::SUCCESS;
    }
    let mut code = exit::SUCCESS;
    let mut first = true;
    for record in &records {
        match record {
            Ok(r) => {
                if !first {
                    outln!();
                }
                first = false;
                print_service(r);
            }
            Err(e) => {
                eprintln!("error: {}", e.message);
                code = if e.kind == ErrorKind::InvalidInput {
                    exit::INVALID
                } else {
                    exit::FAILED
                };
            }
        }
    }
    code
}

pub(super) async fn decide(args: ServiceArgs, confirm: bool) -> u8 {
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

pub(super) async fn remove(args: ServiceArgs) -> u8 {
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
