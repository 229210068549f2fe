//! Directories handed from user to user, emptied between. A filesystem makes a directory
//! slowly where many were just removed (ext4 searches for inodes it may not reuse yet): a
//! run of many short steps that made and removed a directory each paid for that every step,
//! where a few reused directories cost next to nothing.
//!
//! What a user left in a directory is untrusted: it is removed without following a link,
//! and a directory that cannot be emptied leaves the pool.

use std::fs::Metadata;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct DirPool {
    dir: PathBuf,
    prefix: &'static str,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    free: Vec<PathBuf>,
    /// Names the next new directory.
    made: usize,
}

impl DirPool {
    /// A pool of directories made in `dir` (which must exist), named `PREFIX-N`.
    pub fn new(dir: &Path, prefix: &'static str) -> DirPool {
        DirPool {
            dir: dir.to_path_buf(),
            prefix,
            state: Mutex::default(),
        }
    }

    /// An empty directory: one given back, or a new one.
    pub fn take(&self) -> io::Result<PathBuf> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(dir) = state.free.pop() {
            return Ok(dir);
        }
        let dir = self.dir.join(format!("{}-{}", self.prefix, state.made + 1));
        std::fs::create_dir(&dir)?;
        state.made += 1;
        Ok(dir)
    }

    /// `dir` is done with: emptied of all but what `keep` keeps, it goes back to the pool;
    /// removed when it cannot be emptied.
    pub fn give_back(&self, dir: PathBuf, keep: impl Fn(&Path, &Metadata) -> bool) {
        match empty(&dir, keep) {
            Ok(()) => self.state.lock().unwrap_or_else(|e| e.into_inner()).free.push(dir),
            Err(_) => {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
}

/// Remove every entry of `dir` but those `keep` keeps (given each entry's own metadata,
/// links not followed).
fn empty(dir: &Path, keep: impl Fn(&Path, &Metadata) -> bool) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let meta = std::fs::symlink_metadata(&path)?;
        if keep(&path, &meta) {
            continue;
        }
        if meta.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_given_back_comes_out_again_empty_and_links_are_not_followed() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("precious"), "x").unwrap();
        let pool = DirPool::new(root.path(), "step");
        let a = pool.take().unwrap();
        let b = pool.take().unwrap();
        assert_ne!(a, b);
        std::fs::create_dir_all(a.join("deep/er")).unwrap();
        std::fs::write(a.join("deep/er/f"), "x").unwrap();
        std::fs::write(a.join("kept"), "x").unwrap();
        std::os::unix::fs::symlink(outside.path(), a.join("link")).unwrap();
        pool.give_back(a.clone(), |path, _| path.ends_with("kept"));
        let again = pool.take().unwrap();
        assert_eq!(again, a, "reused, not made anew");
        let left: Vec<_> = std::fs::read_dir(&again)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["kept"]);
        assert!(outside.path().join("precious").exists());
    }
}
