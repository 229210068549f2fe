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
                if let Some(found) = find(dir, path, follow) {
                    self.keep(state, &name, found);
                }
            }
            Look::Listing => {
                let Some(Found::Directory(found)) = find(dir, path, true) else {
                    return;
                };
                if state.seen.get(&name) != Some(&Seen::Whole) {
                    state.seen.insert(name.clone(), Seen::Whole);
                    self.add(state, &name, None);
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

    /// Keep what was found: a directory, or a file with its content.
    fn keep(&self, state: &mut State, name: &Path, found: Found) {
        match found {
            Found::Directory(_) => {
                self.add(state, name, None);
            }
            Found::File(file) => {
                let limit = super::snapshot::LIMITS.bytes;
                let mut content = Vec::new();
                if std::fs::File::from(file)
                    .take(limit + 1)
                    .read_to_end(&mut content)
                    .is_ok()
                {
                    self.add(state, name, Some(&content));
                }
            }
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

    fn workspace_name(&self, dir: BorrowedFd<'_>) -> Option<PathBuf> {
        workspace_name(&self.roots, dir)
    }
}

/// The workspace-relative name of a directory handle of a step, if it is one of the
/// workspace's (`roots`: the directories opened to it, host path and workspace name; the
/// step's output directory is not one).
pub(super) fn workspace_name(roots: &[(PathBuf, String)], dir: BorrowedFd<'_>) -> Option<PathBuf> {
    let host = std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&dir))).ok()?;
    roots.iter().find_map(|(root, guest)| {
        let below = host.strip_prefix(root).ok()?;
        Some(Path::new(guest).join(below))
    })
}

/// `path` (as a step names it, relative to `base`) as a clean workspace-relative name; None
/// when it climbs out of the workspace (the step's open fails then too).
pub(super) fn join(base: &Path, path: &str) -> Option<PathBuf> {
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

/// A directory or a regular file, open for reading.
enum Found {
    Directory(OwnedFd),
    File(OwnedFd),
}

/// `path` beneath `dir`, if it is a directory or a regular file, open for reading. It is
/// resolved by the kernel, never through `..` or a link out of `dir`, and named with
/// `O_PATH` first: anything else (a device, a FIFO, a socket, a link not followed) is never
/// opened, so looking at it has no effect.
fn find(dir: BorrowedFd<'_>, path: &str, follow: bool) -> Option<Found> {
    let path = if path.is_empty() { "." } else { path };
    let mut flags = OFlags::PATH | OFlags::CLOEXEC;
    if !follow {
        flags |= OFlags::NOFOLLOW;
    }
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    let named = rustix::fs::openat2(dir.as_fd(), path, flags, Mode::empty(), resolve).ok()?;
    let kind = FileType::from_raw_mode(rustix::fs::fstat(&named).ok()?.st_mode);
    // The same inode, reopened to read.
    let reopen = |extra: OFlags| {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&named);
        rustix::fs::open(
            format!("/proc/self/fd/{fd}"),
            OFlags::RDONLY | OFlags::CLOEXEC | extra,
            Mode::empty(),
        )
        .ok()
    };
    match kind {
        FileType::Directory => reopen(OFlags::DIRECTORY).map(Found::Directory),
        FileType::RegularFile => reopen(OFlags::empty()).map(Found::File),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The entries of a finished snapshot: (name, content; None for a directory).
    fn entries(path: &Path) -> Vec<(String, Option<String>)> {
        let bytes = std::fs::read(path).unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = e.path().unwrap().display().to_string();
                let content = (e.header().entry_type() == tar::EntryType::Regular).then(|| {
                    let mut text = String::new();
                    e.read_to_string(&mut text).unwrap();
                    text
                });
                (name, content)
            })
            .collect()
    }

    #[test]
    fn a_path_is_kept_as_first_found_and_nothing_outside_or_special_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("ws/data");
        std::fs::create_dir_all(data.join("sub")).unwrap();
        std::fs::write(data.join("a.txt"), "as found").unwrap();
        std::fs::write(data.join("listed.txt"), "never opened").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "outside").unwrap();
        std::os::unix::fs::symlink("../../secret.txt", data.join("link")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            data.join("pipe"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let journal = Arc::new(
            JournalWriter::create(
                &dir.path().join("run"),
                &dir.path().join("components"),
                Box::new(|t: &str| t.to_string()),
                Box::new(|_| {}),
            )
            .unwrap(),
        );
        let capture = Capture::new(journal, "s", 1, vec![(data.canonicalize().unwrap(), "data".into())]);
        let handle = std::fs::File::open(&data).unwrap();
        let fd = handle.as_fd();
        capture.look(fd, "a.txt", Look::Entry { follow: true });
        std::fs::write(data.join("a.txt"), "changed by the step").unwrap();
        capture.look(fd, "a.txt", Look::Entry { follow: true });
        capture.look(fd, "link", Look::Entry { follow: true });
        capture.look(fd, "pipe", Look::Entry { follow: true });
        capture.look(fd, "new.txt", Look::Entry { follow: true });
        std::fs::write(data.join("new.txt"), "made by the step").unwrap();
        capture.look(fd, "new.txt", Look::Entry { follow: true });
        capture.look(fd, ".", Look::Listing);
        capture.finish();
        let mut kept = entries(&dir.path().join("run/snapshots/s-1.tar"));
        kept.sort();
        assert_eq!(
            kept,
            [
                ("data".to_string(), None),
                ("data/a.txt".to_string(), Some("as found".to_string())),
                ("data/listed.txt".to_string(), Some(String::new())),
                ("data/sub".to_string(), None),
            ]
        );
    }

    #[test]
    fn names_stay_in_the_workspace() {
        assert_eq!(join(Path::new("data"), "a/../b.txt"), Some(PathBuf::from("data/b.txt")));
        assert_eq!(join(Path::new(""), "./x"), Some(PathBuf::from("x")));
        assert_eq!(join(Path::new("data"), "../../etc/passwd"), None);
        assert_eq!(join(Path::new("data"), "/etc/passwd"), None);
    }
}
