//! Scratch space of one run (or replay): the directory a WASI command step gets for its
//! output file, and a replay's copies of the workspace. It lives under the run's own folder
//! (`.wharf/runs/RUN/scratch`), is held with a lock while its run lives and removed when the
//! run ends; what a killed run left behind is swept at the next start, recognised by a lock
//! nobody holds any more. What a step may write there counts against its disk limit.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

const LOCK: &str = ".lock";

pub struct ScratchSpace {
    dir: PathBuf,
    /// Held (flock) for the life of the run; the kernel lets go when the process dies.
    _lock: File,
}

impl ScratchSpace {
    pub fn create(dir: &Path) -> io::Result<ScratchSpace> {
        std::fs::create_dir_all(dir)?;
        let lock = File::create(dir.join(LOCK))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)?;
        Ok(ScratchSpace {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// A fresh, empty directory for one step attempt.
    pub fn attempt(&self, name: &str) -> io::Result<PathBuf> {
        let dir = self.dir.join(name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir(&dir)?;
        Ok(dir)
    }

    /// Whether the run whose scratch space is `dir` is still going (it holds the lock).
    pub fn is_held(dir: &Path) -> bool {
        let Ok(lock) = File::open(dir.join(LOCK)) else {
            return false;
        };
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockShared) {
            Ok(()) => false,
            Err(e) => e == rustix::io::Errno::WOULDBLOCK,
        }
    }

    /// Remove the scratch directories among `candidates` whose run is gone; those of live
    /// runs (their lock is held) stay.
    pub fn sweep(candidates: impl IntoIterator<Item = PathBuf>) {
        for dir in candidates {
            let Ok(lock) = File::open(dir.join(LOCK)) else {
                continue;
            };
            if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok() {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
}

impl Drop for ScratchSpace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The scratch directories of the runs recorded in `runs_dir`.
pub fn run_scratches(runs_dir: &Path) -> impl Iterator<Item = PathBuf> {
    std::fs::read_dir(runs_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("scratch"))
        .filter(|d| d.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_scratch_stays_and_dead_scratch_goes() {
        let runs = tempfile::tempdir().unwrap();
        let live = ScratchSpace::create(&runs.path().join("a/scratch")).unwrap();
        std::fs::write(live.attempt("s-1").unwrap().join("f"), "x").unwrap();
        // A killed run: its lock file is there, nobody holds it.
        let dead = runs.path().join("b/scratch");
        std::fs::create_dir_all(dead.join("s-1")).unwrap();
        std::fs::write(dead.join(LOCK), "").unwrap();
        ScratchSpace::sweep(run_scratches(runs.path()));
        assert!(!dead.exists());
        assert!(live.path().join("s-1/f").exists());
        let path = live.path().to_path_buf();
        drop(live);
        assert!(!path.exists());
    }
}
