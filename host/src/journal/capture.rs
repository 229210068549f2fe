//! What a recorded step found in the workspace. A replay hands the step a scratch copy of the
//! workspace paths it looked at, so the run keeps those, each as it was the first time the
//! step looked (before the step could change it): a file it opened, examined, renamed or
//! removed with its content, a directory it opened, and a directory it listed with its names
//! (subdirectories, and files as empty placeholders until the step opens them). Nothing else
//! of the grants' directories is kept: a build step whose grant opens cargo's `target/`
//! keeps nothing it did not open.
//!
//! Paths are looked at with the step's own directory handle, resolved beneath it by the
//! kernel (`openat2` `RESOLVE_BENEATH`), and named in the snapshot by where that handle sits
//! in the workspace. wharf's own state (`.wharf/runs`, ...) is never kept.

use super::Entry;
use super::snapshot::{SnapshotWriter, is_wharf_state};
use super::writer::JournalWriter;
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use std::collections::HashMap;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

/// How a step looks at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// Opens, examines, renames or removes it; `follow` a final symbolic link.
    Entry { follow: bool },
    /// Lists the directory itself.
    Listing,
}

pub struct Capture {
    journal: Arc<JournalWriter>,
    step: String,
    attempt: u32,
    /// The workspace directories opened to the step: (host path, workspace-relative name).
    roots: Vec<(PathBuf, String)>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    seen: HashMap<PathBuf, Seen>,
    snapshot: Option<SnapshotWriter>,
    /// Why nothing more is kept: the snapshot is full or cannot be written.
    stopped: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Kept as found (or found absent): later looks change nothing.
    Whole,
    /// A file named by a listing, kept empty; its content is kept when it is opened.
    Listed,
}

impl Capture {
    pub fn new(journal: Arc<JournalWriter>, step: &str, attempt: u32, roots: Vec<(PathBuf, String)>) -> Capture {
        Capture {
            journal,
            step: step.to_string(),
            attempt,
            roots,
            state: Mutex::default(),
        }
    }

    /// The step is about to look at `path` beneath its directory handle `dir`.
    pub fn look(&self, dir: BorrowedFd<'_>, path: &str, look: Look) {
        let mut state = self.state.lock().unwrap();
        self.look_at(&mut state, dir, path, look);
        if let Some(snapshot) = &mut state.snapshot
            && let Err(e) = snapshot.flush()
        {
            self.stop(&mut state, Path::new(path), &format!("cannot be written: {e}"));
        }
    }

    fn look_at(&self, state: &mut State, dir: BorrowedFd<'_>, path: &str, look: Look) {
        if state.stopped {
            return;
        }
        let Some(base) = self.workspace_name(dir) else { return };
        let Some(name) = join(&base, path) else { return };
        if is_wharf_state(&name) {
            return;
        }
        match look {
            Look::Entry { follow } => {
                if state.seen.get(&name) == Some(&Seen::Whole) {
                    return;
                }
                state.seen.insert(name.clone(), Seen::Whole);
                let Ok(found) = open_beneath(dir, path, follow) else {
                    return;
                };
                self.keep(state, &name, &found);
            }
            Look::Listing => {
                let Ok(found) = open_beneath(dir, path, true) else {
                    return;
                };
                if state.seen.get(&name) != Some(&Seen::Whole) {
                    state.seen.insert(name.clone(), Seen::Whole);
                    self.keep(state, &name, &found);
                }
                let Ok(mut listing) = rustix::fs::Dir::read_from(&found) else {
                    return;
                };
                while let Some(Ok(entry)) = listing.next() {
                    let file_name = entry.file_name().to_string_lossy();
                    if file_name == "." || file_name == ".." {
                        continue;
                    }
                    let child = name.join(&*file_name);
                    if state.seen.contains_key(&child) || is_wharf_state(&child) {
                        continue;
                    }
                    let kept = match entry.file_type() {
                        FileType::Directory => Seen::Whole,
                        FileType::RegularFile => Seen::Listed,
                        _ => continue,
                    };
                    let content: Option<&[u8]> = (kept == Seen::Listed).then_some(b"");
                    if !self.add(state, &child, content) {
                        return;
                    }
                    state.seen.insert(child, kept);
                }
            }
        }
    }

    /// Keep what an open handle shows: a directory, or a file with its content.
    fn keep(&self, state: &mut State, name: &Path, found: &OwnedFd) {
        let Ok(stat) = rustix::fs::fstat(found) else { return };
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory => {
                self.add(state, name, None);
            }
            FileType::RegularFile => {
                let Ok(handle) = found.try_clone() else { return };
                let limit = super::snapshot::LIMITS.bytes;
                let mut content = Vec::new();
                if std::fs::File::from(handle)
                    .take(limit + 1)
                    .read_to_end(&mut content)
                    .is_ok()
                {
                    self.add(state, name, Some(&content));
                }
            }
            _ => {}
        }
    }

    /// Add an entry to the snapshot, started with its journal entry on the first one. False
    /// (and a notice, once) when the snapshot is full or cannot be written.
    fn add(&self, state: &mut State, name: &Path, content: Option<&[u8]>) -> bool {
        if state.snapshot.is_none() {
            match self.journal.snapshot(&format!("{}-{}", self.step, self.attempt)) {
                Ok((file, writer)) => {
                    self.journal.write(Entry::Snapshot {
                        step: self.step.clone(),
                        attempt: self.attempt,
                        snapshot: file,
                    });
                    state.snapshot = Some(writer);
                }
                Err(e) => return self.stop(state, name, &format!("cannot be written: {e}")),
            }
        }
        let snapshot = state.snapshot.as_mut().expect("started above");
        match snapshot.add(name, content) {
            Ok(true) => true,
            Ok(false) => {
                let why = format!("is full ({})", snapshot.full());
                self.stop(state, name, &why)
            }
            Err(e) => self.stop(state, name, &format!("cannot be written: {e}")),
        }
    }

    fn stop(&self, state: &mut State, name: &Path, why: &str) -> bool {
        state.stopped = true;
        self.journal.write(Entry::Notice {
            message: format!(
                "step `{}` (attempt {}): the snapshot of the workspace paths it looked at {why}; a replay will not see `{}` or what it looked at after",
                self.step,
                self.attempt,
                name.display()
            ),
        });
        false
    }

    /// End the snapshot, if the step looked at anything.
    pub fn finish(&self) {
        let mut state = self.state.lock().unwrap();
        if let Some(snapshot) = state.snapshot.take()
            && let Err(e) = snapshot.finish()
        {
            tracing::warn!("journal: cannot end the snapshot of `{}`: {e}", self.step);
        }
    }

    /// The workspace-relative name of a directory handle of the step, if it is one of the
    /// workspace's (the step's output directory is not).
    fn workspace_name(&self, dir: BorrowedFd<'_>) -> Option<PathBuf> {
        let host = std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&dir))).ok()?;
        self.roots.iter().find_map(|(root, guest)| {
            let below = host.strip_prefix(root).ok()?;
            Some(Path::new(guest).join(below))
        })
    }
}

/// `path` (as a step names it, relative to `base`) as a clean workspace-relative name; None
/// when it climbs out of the workspace (the step's open fails then too).
fn join(base: &Path, path: &str) -> Option<PathBuf> {
    let mut name = PathBuf::new();
    for part in base.components().chain(Path::new(path).components()) {
        match part {
            Component::Normal(p) => name.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                if !name.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(name)
}

/// `path` beneath `dir`, opened to read: never through `..` or a link out of it, and never
/// waiting on a FIFO.
fn open_beneath(dir: BorrowedFd<'_>, path: &str, follow: bool) -> rustix::io::Result<OwnedFd> {
    let path = if path.is_empty() { "." } else { path };
    let mut flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
    if !follow {
        flags |= OFlags::NOFOLLOW;
    }
    rustix::fs::openat2(
        dir.as_fd(),
        path,
        flags,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_in_the_workspace() {
        assert_eq!(join(Path::new("data"), "a/../b.txt"), Some(PathBuf::from("data/b.txt")));
        assert_eq!(join(Path::new(""), "./x"), Some(PathBuf::from("x")));
        assert_eq!(join(Path::new("data"), "../../etc/passwd"), None);
        assert_eq!(join(Path::new("data"), "/etc/passwd"), None);
    }
}
