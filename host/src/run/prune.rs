//! Removing old recorded runs (`wharf runs prune`, and the cap a run applies when it ends),
//! then the stored components no remaining run names.

use crate::journal::{component_store, runs_dir};
use std::path::Path;
use std::time::SystemTime;
use wharf_journal::retention::{self, Retention, RunFolder};

/// What a prune removed, or would remove.
#[derive(Debug, Default)]
pub struct Pruned {
    pub runs: Vec<String>,
    pub components: usize,
    /// Bytes on disk freed (or to be freed).
    pub bytes: u64,
}

/// How far a prune goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sweep {
    /// Remove nothing; say what would go.
    DryRun,
    /// Remove the runs, and the components only they named (the cap after each run).
    Runs,
    /// Remove the runs, and every stored component no remaining run names.
    RunsAndStore,
}

/// Remove the runs of `workspace` that `retention` does not keep (none that is still going),
/// then stored components no remaining run names.
pub fn prune(workspace: &Path, retention: Retention, sweep: Sweep) -> std::io::Result<Pruned> {
    let dry_run = sweep == Sweep::DryRun;
    let runs = retention::list(&runs_dir(workspace))?;
    let live = |run: &RunFolder| retention::is_live(&run.path);
    let going = retention::select(&runs, retention, SystemTime::now(), live);
    let mut pruned = Pruned::default();
    // The components only the removed runs may have been the last to name.
    let mut candidates = Vec::new();
    for run in &going {
        // Unreadable, it names nothing: its components wait for `wharf runs prune`.
        if sweep == Sweep::Runs {
            candidates.extend(retention::components_named(&run.path).unwrap_or_default());
        }
        pruned.bytes += disk_usage(&run.path);
        pruned.runs.push(run.id.clone());
        if !dry_run {
            std::fs::remove_dir_all(&run.path)?;
        }
    }
    if going.is_empty() && sweep == Sweep::Runs {
        return Ok(pruned);
    }
    let remaining: Vec<RunFolder> = runs
        .iter()
        .filter(|r| !going.iter().any(|g| g.id == r.id))
        .cloned()
        .collect();
    let store = component_store(workspace);
    let unnamed = match sweep {
        Sweep::Runs => retention::no_longer_named(&store, candidates, &remaining),
        Sweep::DryRun | Sweep::RunsAndStore => retention::unreferenced(&store, &remaining)?,
    };
    for component in unnamed {
        pruned.components += 1;
        // A component linked into a run folder too frees nothing here.
        if std::fs::metadata(&component).is_ok_and(|m| std::os::unix::fs::MetadataExt::nlink(&m) == 1) {
            pruned.bytes += disk_usage(&component);
        }
        if !dry_run {
            std::fs::remove_file(&component)?;
        }
    }
    Ok(pruned)
}

/// Bytes of a file, or of a directory's files; links are not followed.
fn disk_usage(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| disk_usage(&e.path()))
        .sum()
}
