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
/// links not followed). A step's directory is emptied after every step: its names are read
/// into a buffer on the stack, sparing the 32 KiB `opendir` takes from the heap each time
/// (and the fresh pages it faults in once smaller allocations have split the last one).
fn empty(dir: &Path, keep: impl Fn(&Path, &Metadata) -> bool) -> io::Result<()> {
    use rustix::fs::{Mode, OFlags, RawDir};
    use std::os::unix::ffi::OsStrExt as _;
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::open(dir, flags, Mode::empty())?;
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 2048];
    let mut names = RawDir::new(&fd, &mut buf);
    while let Some(entry) = names.next() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let path = dir.join(std::ffi::OsStr::from_bytes(name));
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

    #[test]
    fn a_directory_with_more_names_than_one_read_holds_is_emptied_whole() {
        use std::os::unix::ffi::OsStrExt as _;
        let root = tempfile::tempdir().unwrap();
        let pool = DirPool::new(root.path(), "step");
        let dir = pool.take().unwrap();
        // Nine of these names fill one read of the directory into its 2 KiB buffer.
        for i in 0..400 {
            std::fs::write(dir.join(format!("{i:0>200}")), "x").unwrap();
        }
        // A name that is not UTF-8 is a name like any other.
        std::fs::write(dir.join(std::ffi::OsStr::from_bytes(b"\xff\xfe")), "x").unwrap();
        pool.give_back(dir.clone(), |_, _| false);
        assert_eq!(pool.take().unwrap(), dir, "reused");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    }
}
