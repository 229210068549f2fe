//! The workspace directories a step sees through WASI.
//!
//! Threat: a step reads or rewrites what its grants do not name (`.git`, wharf's own state
//! under `.wharf/`, the rest of the machine), through a broad preopen or through a symlink
//! an earlier step planted. Only the directories the step's read and write grants name are
//! opened, each resolved and kept inside the workspace, and a file at the workspace root
//! never opens the root for writing.

use super::Grants;
use std::path::{Path, PathBuf};

/// A directory opened to a step: where it is, the (workspace-relative) name the step sees,
/// and whether it may write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preopen {
    pub host: PathBuf,
    pub guest: String,
    pub write: bool,
}

/// The directories a step's grants open. WASI opens directories: a file grant opens the
/// file's directory, and a write grant for a path that does not exist yet creates it (as the
/// parent directory of `name.ext`, else as a directory). Guest paths are the
/// workspace-relative paths, so relative paths in the step work as they would in the
/// workspace.
pub fn preopens(workspace: &Path, grants: &Grants) -> Vec<Preopen> {
    let mut out: Vec<Preopen> = Vec::new();
    let Ok(root) = std::fs::canonicalize(workspace) else {
        return out;
    };
    let looks_like_file = |p: &str| {
        p.rsplit('/')
            .next()
            .is_some_and(|name| name.rfind('.').is_some_and(|i| i > 0))
    };
    let mut add = |rel: &str, write: bool| {
        let host = workspace.join(rel);
        let dir_rel = if host.is_file() || (!host.exists() && looks_like_file(rel)) {
            rel.rsplit_once('/')
                .map_or(".".to_string(), |(parent, _)| parent.to_string())
        } else {
            rel.to_string()
        };
        // A file at the workspace root would open the whole workspace, `.git` and
        // `.wharf/state` included, for writing: only `write: [.]` itself does that.
        let write = write && (dir_rel != "." || rel == ".");
        let dir = workspace.join(&dir_rel);
        if write && !dir.exists() {
            let _ = std::fs::create_dir_all(&dir);
        }
        // A symlink planted by an earlier step must not open anything outside the workspace.
        let Ok(real) = std::fs::canonicalize(&dir) else { return };
        if !real.starts_with(&root) || !real.is_dir() {
            tracing::warn!("not opening {}: it leads outside the workspace", dir.display());
            return;
        }
        match out.iter_mut().find(|p| p.guest == dir_rel) {
            Some(existing) => existing.write |= write,
            None => out.push(Preopen {
                host: real,
                guest: dir_rel,
                write,
            }),
        }
    };
    for g in &grants.write {
        add(&g.what, true);
    }
    for g in &grants.read {
        add(&g.what, false);
    }
    out
}
