//! `wharf doctor`: what this machine's kernel allows, and so what wharf enforces on the
//! programs steps run, found by starting the confinement process as a run would.

use super::outcome::{CommandResult, Exit, Stop};
use crate::events::Events;
use crate::sandbox::programs::{Mode, Programs};
use wharf_confine::Level;

pub(super) async fn doctor() -> CommandResult {
    let scratch = std::env::temp_dir().join(format!("wharf-doctor-{}", std::process::id()));
    let workspace = scratch.join("workspace");
    std::fs::create_dir_all(&workspace)
        .map_err(|e| Stop::failed(format!("cannot make {}: {e}", workspace.display())))?;
    let programs = Programs::new(
        Mode::Auto,
        &workspace,
        std::sync::Arc::new(wharf_fs::held::HeldDir::new(&scratch.join("scratch"))),
        Vec::new(),
        Vec::new(),
        Events::new(),
    );
    let report = programs.confiner().await.map(|c| c.report().clone());
    let system = programs.setup().system.clone();
    drop(programs);
    let _ = std::fs::remove_dir_all(&scratch);
    let report = report.map_err(Stop::failed)?;
    let yes_no = |ok: bool| if ok { "yes" } else { "no" };
    outln!("kernel         {}", kernel_release());
    outln!(
        "landlock       {}",
        report.landlock.map_or("no".to_string(), |abi| format!("ABI {abi}"))
    );
    outln!(
        "namespaces     {}",
        match &report.no_namespaces {
            None if report.level == Level::Full => "yes (user, mount, network, process ids)".to_string(),
            None => "not tried".to_string(),
            Some(why) => format!("no: {why}"),
        }
    );
    outln!("seccomp        {}", yes_no(report.seccomp));
    outln!("cgroups        {} (limits are held by rlimits, per program)", cgroups());
    outln!("root           {}", yes_no(report.root));
    outln!();
    outln!(
        "programs are confined as far as `{}`: {}",
        report.level.as_str(),
        meaning(report.level)
    );
    let gaps = report.gaps();
    if gaps.is_empty() {
        outln!("nothing of the boundary is left open here");
    } else {
        outln!("left open here:");
        for gap in gaps {
            outln!("  - {gap}");
        }
    }
    if report.level == Level::Full && !report.root {
        outln!("a `signal:` grant reaches only the run's own processes here, not the host's (wharf is not root)");
    }
    outln!();
    outln!("every program may read and run (the system and the toolchains on PATH):");
    for path in &system {
        outln!("  {}", path.display());
    }
    outln!("anything else of the host is a step's `host-read:` or `host-write:` grant.");
    outln!();
    outln!(
        "`wharf run --sandbox strict` (or `sandbox: strict` in a pipeline) refuses to start a program below `full`."
    );
    Ok(Exit::Success)
}

fn meaning(level: Level) -> &'static str {
    match level {
        Level::Full => {
            "each sees only the system's directories, the toolchain homes and its step's grants, has no network but its grants' hosts through wharf's proxy, no host socket, no signal for processes not its own, and ends with everything it started"
        }
        Level::Landlock => {
            "each may open only the system's directories, the toolchain homes and its step's grants, connect only to its grants' ports, no host socket, no signal for processes not its own"
        }
        Level::None => "none: programs have wharf's own authority",
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn cgroups() -> &'static str {
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "v2"
    } else if std::path::Path::new("/sys/fs/cgroup/pids").exists() {
        "v1"
    } else {
        "none"
    }
}
