//! A directory that belongs to one living process: made when first needed, held by a lock
//! on a file inside it for as long as its owner keeps it, removed when the owner lets go.
//! A process that was killed leaves its directory behind with a lock nobody holds any more
//! (the kernel lets go of a dead process's locks): [`sweep`] removes those and leaves the
//! held ones.
//!
//! Made on first use because most runs never need one (a step taken from the cache, a
//! chain of components): a directory and its lock file made and removed by every run were
//! a measurable part of a short run's cost.

use std::fs::{File, TryLockError};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The lock file inside a held directory.
const LOCK: &str = ".lock";

pub struct HeldDir {
    dir: PathBuf,
    /// Once made: the lock, held for as long as this value lives.
    lock: Mutex<Option<File>>,
}

impl HeldDir {
    /// A directory at `dir`, not made yet.
    pub fn new(dir: &Path) -> HeldDir {
        HeldDir {
            dir: dir.to_path_buf(),
            lock: Mutex::new(None),
        }
    }

    /// Where the directory is, or will be once made.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The directory, made and locked on the first call.
    pub fn make(&self) -> io::Result<&Path> {
        let mut lock = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if lock.is_none() {
            *lock = Some(self.made_and_locked()?);
        }
        Ok(&self.dir)
    }

    fn made_and_locked(&self) -> io::Result<File> {
        // Another process's sweep may take the directory between its making and its lock
        // (the lock file is there, nobody holds it yet): the lock then belongs to a file
        // that is gone, and the directory is made again.
        for _ in 0..3 {
            std::fs::create_dir_all(&self.dir)?;
            let path = self.dir.join(LOCK);
            let file = File::create(&path)?;
            file.try_lock().map_err(io::Error::from)?;
            let held = file.metadata()?;
            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.ino() == held.ino() && m.dev() == held.dev()) {
                return Ok(file);
            }
        }
        Err(io::Error::other(format!(
            "{} was removed as it was made, three times",
            self.dir.display()
        )))
    }

    /// Whether the directory at `dir` is held by a living owner.
    pub fn is_held(dir: &Path) -> bool {
        let Ok(lock) = File::open(dir.join(LOCK)) else {
            return false;
        };
        matches!(lock.try_lock_shared(), Err(TryLockError::WouldBlock))
    }
}

impl Drop for HeldDir {
    fn drop(&mut self) {
        let made = self.lock.get_mut().unwrap_or_else(|e| e.into_inner()).is_some();
        if made {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Remove the held directories among `candidates` whose owner is gone; those still held
/// stay, and so does a directory without a lock file (nothing says it is one of ours).
pub fn sweep(candidates: impl IntoIterator<Item = PathBuf>) {
    for dir in candidates {
        let Ok(lock) = File::open(dir.join(LOCK)) else {
            continue;
        };
        if lock.try_lock().is_ok() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// The entries of `parent`: the candidates for a [`sweep`] of the directories made there.
pub fn entries(parent: &Path) -> impl Iterator<Item = PathBuf> + use<> {
    std::fs::read_dir(parent)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_made_until_asked_and_what_was_made_goes_with_its_owner() {
        let root = tempfile::tempdir().unwrap();
        let held = HeldDir::new(&root.path().join("a"));
        assert!(!held.path().exists());
        drop(held);
        assert!(!root.path().join("a").exists());
        let held = HeldDir::new(&root.path().join("a"));
        let dir = held.make().unwrap().to_path_buf();
        assert_eq!(held.make().unwrap(), dir, "made once");
        std::fs::write(dir.join("f"), "x").unwrap();
        assert!(HeldDir::is_held(&dir));
        drop(held);
        assert!(!dir.exists());
    }

    #[test]
    fn a_sweep_takes_what_a_dead_owner_left_and_nothing_else() {
        let root = tempfile::tempdir().unwrap();
        let live = HeldDir::new(&root.path().join("live"));
        live.make().unwrap();
        std::fs::write(live.path().join("f"), "x").unwrap();
        // A killed owner: its lock file is there, nobody holds it.
        let dead = root.path().join("dead");
        std::fs::create_dir_all(dead.join("sub")).unwrap();
        std::fs::write(dead.join(LOCK), "").unwrap();
        // Not one of ours: no lock file.
        let other = root.path().join("other");
        std::fs::create_dir(&other).unwrap();
        assert!(!HeldDir::is_held(&dead) && !HeldDir::is_held(&other));
        sweep(entries(root.path()));
        assert!(!dead.exists());
        assert!(other.exists());
        assert!(live.path().join("f").exists());
    }

    /// What a dead owner left at the same path (its lock file, unlocked) is taken over.
    #[test]
    fn a_dead_owners_leftover_at_the_same_path_is_taken_over() {
        let root = tempfile::tempdir().unwrap();
        let held = HeldDir::new(&root.path().join("a"));
        std::fs::create_dir(held.path()).unwrap();
        std::fs::write(held.path().join(LOCK), "").unwrap();
        held.make().unwrap();
        sweep(entries(root.path()));
        assert!(HeldDir::is_held(held.path()), "held, so not swept");
    }
}
