//! wharf's own state in a workspace (`.wharf/`: runs and their journals, deploy state and
//! locks, the image store) is never a step's to change, whatever its grants.
//!
//! Threat: a step granted `write: [.]` (or an audit, which opens the whole workspace)
//! rewrites a service's state file or a lock, plants a component where a replay loads it,
//! or edits a journal. No grant can name `.wharf/` (validation refuses it), but a grant of
//! the workspace root holds it. So every call that changes the filesystem is checked against
//! where it lands, resolved by the kernel beneath the directory the step names (a symlink in
//! the workspace that leads into `.wharf/` lands there too). The step's own scratch directory
//! (a WASI command's `/run/wharf`, which lives in the run's folder) is the one exception.

use crate::beneath;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default)]
pub struct Reserved {
    /// `.wharf` of the workspace, as the kernel names it; None where it does not exist.
    root: Option<PathBuf>,
    /// The step's scratch directory.
    except: Option<PathBuf>,
}

impl Reserved {
    pub fn new(workspace: &Path, scratch: Option<&Path>) -> Reserved {
        let real = |p: &Path| std::fs::canonicalize(p).ok();
        Reserved {
            root: real(&workspace.join(wharf_pipeline::grants::RESERVED)),
            except: scratch.and_then(real),
        }
    }

    /// Whether `path`, named beneath the host directory `dir`, lands in wharf's own state.
    /// `follow`: a symbolic link at the end of `path` is followed (an open that follows).
    pub fn holds(&self, dir: &Path, path: &str, follow: bool) -> bool {
        let Some(root) = &self.root else { return false };
        let Some(target) = landing(dir, path, follow) else {
            return false;
        };
        target.starts_with(root) && !self.except.as_ref().is_some_and(|e| target.starts_with(e))
    }
}

/// Links followed to where a path lands, at most (the kernel's own limit is 40).
const MAX_LINKS: usize = 40;

/// Where `path` beneath `dir` lands: its directory resolved by the kernel, then its last
/// name, followed when it is a link and `follow` (a dangling link that an open would create
/// through, too). None where the directory is not there, or a link leads out of `dir`: the
/// call itself fails then.
fn landing(dir: &Path, path: &str, follow: bool) -> Option<PathBuf> {
    let resolve = |p: &str| beneath::resolve(dir, p, beneath::Scope::Beneath, beneath::Kind::Any).ok();
    let mut path = path.trim_end_matches('/').to_string();
    for _ in 0..MAX_LINKS {
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", &path));
        let parent_real = resolve(parent)?;
        let entry = match name {
            "" | "." => return Some(parent_real),
            ".." => return Some(parent_real.parent().map_or(parent_real.clone(), Path::to_path_buf)),
            name => parent_real.join(name),
        };
        let link = std::fs::symlink_metadata(&entry).is_ok_and(|m| m.file_type().is_symlink());
        if !(follow && link) {
            return Some(entry);
        }
        let target = std::fs::read_link(&entry).ok()?;
        if target.is_absolute() {
            return None;
        }
        path = Path::new(parent).join(target).to_string_lossy().into_owned();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wharfs_state_is_held_through_any_path_but_the_scratch_directory_is_not() {
        let ws = tempfile::tempdir().unwrap();
        let scratch = ws.path().join(".wharf/runs/r/scratch/step-1");
        std::fs::create_dir_all(&scratch).unwrap();
        std::fs::create_dir_all(ws.path().join(".wharf/state/services")).unwrap();
        std::fs::create_dir_all(ws.path().join("src")).unwrap();
        std::os::unix::fs::symlink(".wharf/state", ws.path().join("innocent")).unwrap();
        std::os::unix::fs::symlink(".wharf/state/services/seed.json", ws.path().join("file")).unwrap();
        let reserved = Reserved::new(ws.path(), Some(&scratch));
        let dir = std::fs::canonicalize(ws.path()).unwrap();
        for held in [
            ".wharf",
            ".wharf/state/services/seed.json",
            "src/../.wharf/x",
            "innocent/services/seed.json",
            "innocent",
            ".wharf/runs/r/journal.jsonl",
        ] {
            let follow = held == "innocent";
            assert!(reserved.holds(&dir, held, follow), "{held}");
        }
        assert!(reserved.holds(&dir, "file", true), "a link followed into it");
        assert!(
            !reserved.holds(&dir, "file", false),
            "the link itself is the workspace's"
        );
        for free in ["src/main.rs", "out", ".wharfish", ".wharf/runs/r/scratch/step-1/output"] {
            assert!(!reserved.holds(&dir, free, false), "{free}");
        }
        let inside = dir.join(".wharf/state");
        assert!(reserved.holds(&inside, "services/new.json", false));
    }
}
