//! The workspace directories a step sees through WASI.
//!
//! Threat: a step reads or rewrites what its grants do not name (`.git`, wharf's own state
//! under `.wharf/`, the rest of the machine), through a broad preopen or through a symlink
//! an earlier step planted. Only the directories the step's read and write grants name are
//! opened, each resolved and kept inside the workspace, and a file at the workspace root
//! never opens the root for writing.

use super::Grants;
use crate::beneath;
use std::path::{Path, PathBuf};

/// A directory opened to a step: where it is, the (workspace-relative) name the step sees,
/// and whether it may write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preopen {
    pub host: PathBuf,
    pub guest: String,
    pub write: bool,
}

/// A grant whose directory cannot be opened to the step: the step fails before it runs.
#[derive(Debug, thiserror::Error)]
#[error("its grant `{kind}: [{grant}]` cannot be opened: {source}")]
pub struct PreopenError {
    pub kind: &'static str,
    pub grant: String,
    #[source]
    pub source: beneath::Error,
}

/// The directories a step's grants open. WASI opens directories: a file grant opens the
/// file's directory, and a write grant for a path that does not exist yet creates it (as the
/// parent directory of `name.ext`, else as a directory). Guest paths are the
/// workspace-relative paths, so relative paths in the step work as they would in the
/// workspace. Every path is resolved beneath the workspace: a grant that a symlink leads
/// out of it is refused.
pub fn preopens(workspace: &Path, grants: &Grants) -> Result<Vec<Preopen>, PreopenError> {
    let mut out: Vec<Preopen> = Vec::new();
    let looks_like_file = |p: &str| {
        p.rsplit('/')
            .next()
            .is_some_and(|name| name.rfind('.').is_some_and(|i| i > 0))
    };
    let wanted = grants
        .write
        .iter()
        .map(|g| (&g.what, true))
        .chain(grants.read.iter().map(|g| (&g.what, false)));
    for (rel, write) in wanted {
        let error = |source| PreopenError {
            kind: if write { "write" } else { "read" },
            grant: rel.clone(),
            source,
        };
        let is_file = match beneath::existing(workspace, rel) {
            Ok(real) => real.is_file(),
            Err(beneath::Error::NotFound { .. }) => looks_like_file(rel),
            Err(e) => return Err(error(e)),
        };
        let dir_rel = if is_file {
            rel.rsplit_once('/')
                .map_or(".".to_string(), |(parent, _)| parent.to_string())
        } else {
            rel.clone()
        };
        // A file at the workspace root would open the whole workspace, `.git` and
        // `.wharf/state` included, for writing: only `write: [.]` itself does that.
        let write = write && (dir_rel != "." || rel == ".");
        let preopen = match open(workspace, &dir_rel, write) {
            // Nothing to read there yet: nothing to open.
            Err(beneath::Error::NotFound { .. }) => continue,
            other => other.map_err(error)?,
        };
        match out.iter_mut().find(|p| p.guest == preopen.guest) {
            Some(existing) => existing.write |= preopen.write,
            None => out.push(preopen),
        }
    }
    Ok(out)
}

/// Open one workspace directory to a step, creating it (beneath the workspace) when the step
/// may write there and it does not exist yet.
pub fn open(workspace: &Path, dir: &str, write: bool) -> Result<Preopen, beneath::Error> {
    let host = match beneath::resolve(workspace, dir, beneath::Scope::Beneath, beneath::Kind::Directory) {
        Err(beneath::Error::NotFound { .. }) if write => beneath::create_dir_all(workspace, dir)?,
        other => other?,
    };
    Ok(Preopen {
        host,
        guest: dir.to_string(),
        write,
    })
}
