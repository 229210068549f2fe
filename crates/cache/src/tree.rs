//! A directory as a whole: every entry beneath it and what it is, walked from a handle
//! without following a link, bounded in entries. A confined program may read anything its
//! grants open, so its inputs are these trees, and what it changed is the difference of a
//! tree before and after it ran.
//!
//! Hashing a large build directory on every run would cost more than the cache saves, so a
//! file's digest is reused while its inode, size, modification and change times are what
//! they were ([`Known`], git's index does the same). A file changed within a second of being
//! hashed is hashed again: its times could hide a second change.

use crate::found::{Found, digest_of};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

/// wharf's own state in a workspace: no step sees it, and it changes with every run, so a
/// tree of the whole workspace leaves it out.
pub const RESERVED: &str = ".wharf";

/// Most entries a tree may hold: a bigger directory cannot be checked, and its step is not
/// cached.
pub const MAX_ENTRIES: usize = 250_000;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    /// By path relative to the tree's root (`""` is the root itself).
    pub entries: BTreeMap<String, Found>,
}

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{} holds more than {limit} entries", root.display())]
    TooLarge { root: PathBuf, limit: usize },
    #[error("{} has a name that is not UTF-8 in `{path}`", root.display())]
    Name { root: PathBuf, path: String },
    #[error("{}: `{path}`: {source}", root.display())]
    Io {
        root: PathBuf,
        path: String,
        source: std::io::Error,
    },
}

impl Tree {
    /// The digest of the whole tree: every path and what it is.
    pub fn digest(&self) -> String {
        let mut text = String::new();
        for (path, found) in &self.entries {
            text.push_str(path);
            text.push('\t');
            text.push_str(&serde_json::to_string(found).unwrap_or_default());
            text.push('\n');
        }
        crate::sha256_hex(text.as_bytes())
    }

    /// The paths whose state differs in `after` (created, changed, or gone: `Absent`), in
    /// path order, as `after` has them.
    pub fn changes(&self, after: &Tree) -> Vec<(String, Found)> {
        let mut changed: BTreeMap<String, Found> = BTreeMap::new();
        for (path, found) in &after.entries {
            if self.entries.get(path) != Some(found) {
                changed.insert(path.clone(), found.clone());
            }
        }
        for path in self.entries.keys() {
            if !after.entries.contains_key(path) {
                changed.insert(path.clone(), Found::Absent);
            }
        }
        changed.into_iter().collect()
    }
}

/// What the directory `relative` beneath `root` holds (`relative` itself resolved beneath
/// `root` by the kernel; a link is not followed), every file by its content.
pub fn walk(root: &Path, relative: &str, known: &mut Known) -> Result<Tree, TreeError> {
    walk_as(root, relative, known, Detail::Content)
}

/// How much of a tree is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Every entry, a file by its content.
    Content,
    /// Entries down to this depth, a file by its inode, size and times: a toolchain, which
    /// is replaced, not edited, when it changes, and is too large to hash on every run.
    Stamps { depth: usize },
}

/// [`walk`], with the detail asked for.
pub fn walk_as(root: &Path, relative: &str, known: &mut Known, detail: Detail) -> Result<Tree, TreeError> {
    let io = |path: &str, source: std::io::Error| TreeError::Io {
        root: root.to_path_buf(),
        path: path.to_string(),
        source,
    };
    let base = crate::found::open_dir(root).map_err(|e| io("", e))?;
    let mut tree = Tree::default();
    let path = if relative.is_empty() { "." } else { relative };
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    let dir = rustix::fs::openat2(
        &base,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        resolve,
    );
    match dir {
        Ok(dir) => {
            tree.entries.insert(String::new(), Found::Directory);
            let mut walker = Walker {
                root: &root.join(relative),
                tree: &mut tree,
                known,
                detail,
                top: path == ".",
            };
            walker.directory(dir.as_fd(), "")?;
        }
        Err(rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP | rustix::io::Errno::NOENT) => {
            tree.entries
                .insert(String::new(), crate::found::probe_at(base.as_fd(), path, false));
        }
        Err(e) => return Err(io(relative, e.into())),
    }
    Ok(tree)
}

struct Walker<'a> {
    root: &'a Path,
    tree: &'a mut Tree,
    known: &'a mut Known,
    detail: Detail,
    /// Walking the root itself, whose [`RESERVED`] is left out.
    top: bool,
}

impl Walker<'_> {
    fn directory(&mut self, dir: BorrowedFd<'_>, prefix: &str) -> Result<(), TreeError> {
        let io = |path: &str, source: std::io::Error| TreeError::Io {
            root: self.root.to_path_buf(),
            path: path.to_string(),
            source,
        };
        let listing = rustix::fs::Dir::read_from(dir).map_err(|e| io(prefix, e.into()))?;
        let mut children: Vec<(String, FileType)> = Vec::new();
        for entry in listing {
            let entry = entry.map_err(|e| io(prefix, e.into()))?;
            let bytes = entry.file_name().to_bytes();
            if bytes == b"." || bytes == b".." {
                continue;
            }
            let Ok(name) = std::str::from_utf8(bytes) else {
                return Err(TreeError::Name {
                    root: self.root.to_path_buf(),
                    path: prefix.to_string(),
                });
            };
            children.push((name.to_string(), entry.file_type()));
        }
        for (name, _) in children {
            if self.top && prefix.is_empty() && name == RESERVED {
                continue;
            }
            if self.tree.entries.len() >= MAX_ENTRIES {
                return Err(TreeError::TooLarge {
                    root: self.root.to_path_buf(),
                    limit: MAX_ENTRIES,
                });
            }
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            let stat = match rustix::fs::statat(dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(s) => s,
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(io(&path, e.into())),
            };
            let found = match FileType::from_raw_mode(stat.st_mode) {
                FileType::Directory => {
                    let child = rustix::fs::openat(
                        dir,
                        name.as_str(),
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| io(&path, e.into()))?;
                    self.tree.entries.insert(path.clone(), Found::Directory);
                    let deeper = match self.detail {
                        Detail::Content => true,
                        Detail::Stamps { depth } => path.matches('/').count() + 1 < depth,
                    };
                    if deeper {
                        self.directory(child.as_fd(), &path)?;
                    }
                    continue;
                }
                FileType::Symlink => match rustix::fs::readlinkat(dir, name.as_str(), Vec::new()) {
                    Ok(target) => Found::Link {
                        target: target.to_string_lossy().into_owned(),
                    },
                    Err(e) => return Err(io(&path, e.into())),
                },
                FileType::RegularFile if matches!(self.detail, Detail::Stamps { .. }) => {
                    let stamp = Stamp::of(&stat);
                    Found::File {
                        sha256: crate::sha256_hex(serde_json::to_string(&stamp).unwrap_or_default().as_bytes()),
                        executable: stat.st_mode & 0o111 != 0,
                    }
                }
                FileType::RegularFile => {
                    let stamp = Stamp::of(&stat);
                    let sha256 = match self.known.digest(&stamp) {
                        Some(sha) => sha,
                        None => {
                            let file = rustix::fs::openat(
                                dir,
                                name.as_str(),
                                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                                Mode::empty(),
                            )
                            .map_err(|e| io(&path, e.into()))?;
                            self.known
                                .file_digest(std::fs::File::from(file))
                                .map_err(|e| io(&path, e))?
                        }
                    };
                    Found::File {
                        sha256,
                        executable: stat.st_mode & 0o111 != 0,
                    }
                }
                _ => Found::Other,
            };
            self.tree.entries.insert(path, found);
        }
        Ok(())
    }
}

/// A file as its inode and times identify it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(stat: &rustix::fs::Stat) -> Stamp {
        Stamp {
            dev: stat.st_dev,
            ino: stat.st_ino,
            size: stat.st_size as u64,
            mtime: (stat.st_mtime, stat.st_mtime_nsec as i64),
            ctime: (stat.st_ctime, stat.st_ctime_nsec as i64),
        }
    }
}

/// Digests of files hashed before, by their stamp. Kept between runs in the cache store.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Known {
    files: HashMap<u64, (Stamp, String)>,
    #[serde(skip)]
    changed: bool,
}

/// Most files whose digests are remembered.
const KNOWN_LIMIT: usize = 1_000_000;

impl Known {
    /// The digest of an open file: remembered by its stamp, or read and remembered.
    pub fn file_digest(&mut self, file: std::fs::File) -> std::io::Result<String> {
        let stamp = Stamp::of(&rustix::fs::fstat(&file)?);
        if let Some(sha) = self.digest(&stamp) {
            return Ok(sha);
        }
        let sha = digest_of(file)?;
        self.learn(stamp, sha.clone());
        Ok(sha)
    }

    fn digest(&self, stamp: &Stamp) -> Option<String> {
        match self.files.get(&stamp.ino) {
            Some((known, sha)) if known == stamp => Some(sha.clone()),
            _ => None,
        }
    }

    /// Remember a digest, unless the file changed within the last second: its times could
    /// then stay the same through another change.
    fn learn(&mut self, stamp: Stamp, sha256: String) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if stamp.ctime.0 >= now - 1 || stamp.mtime.0 >= now - 1 || self.files.len() >= KNOWN_LIMIT {
            return;
        }
        self.files.insert(stamp.ino, (stamp, sha256));
        self.changed = true;
    }

    /// Whether digests were learnt since it was read.
    pub fn changed(&self) -> bool {
        self.changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_sees_every_change_and_never_leaves_its_root() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(ws.join("target/deep")).unwrap();
        std::fs::write(ws.join("target/a"), "1").unwrap();
        std::fs::write(ws.join("target/deep/b"), "2").unwrap();
        std::fs::create_dir_all(dir.path().join("elsewhere")).unwrap();
        std::fs::write(dir.path().join("elsewhere/x"), "outside").unwrap();
        std::os::unix::fs::symlink("../../elsewhere", ws.join("target/link")).unwrap();
        let mut known = Known::default();
        let before = walk(&ws, "target", &mut known).unwrap();
        assert_eq!(before.entries.len(), 5, "{before:?}");
        assert_eq!(
            before.entries["link"],
            Found::Link {
                target: "../../elsewhere".into()
            }
        );

        std::fs::write(ws.join("target/deep/b"), "3").unwrap();
        std::fs::remove_file(ws.join("target/a")).unwrap();
        std::fs::write(ws.join("target/c"), "new").unwrap();
        let after = walk(&ws, "target", &mut known).unwrap();
        assert_ne!(before.digest(), after.digest());
        let changed: Vec<String> = before.changes(&after).into_iter().map(|(p, _)| p).collect();
        assert_eq!(changed, ["a", "c", "deep/b"]);
        assert_eq!(before.changes(&after)[0].1, Found::Absent);

        // A tree that is not there, or is a link, is that.
        assert_eq!(walk(&ws, "missing", &mut known).unwrap().entries[""], Found::Absent);
        std::os::unix::fs::symlink("../elsewhere", ws.join("sneaky")).unwrap();
        assert!(matches!(
            walk(&ws, "sneaky", &mut known).unwrap().entries[""],
            Found::Link { .. }
        ));
        assert!(walk(&ws, "../elsewhere", &mut known).is_err());
    }

    #[test]
    fn a_known_digest_is_used_only_while_the_file_is_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t/f");
        std::fs::create_dir_all(dir.path().join("t")).unwrap();
        std::fs::write(&file, "old").unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(10);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(old)
            .unwrap();
        // A file changed within the last second is not remembered: its times could hide
        // a second change.
        let mut known = Known::default();
        walk(dir.path(), "t", &mut known).unwrap();
        assert!(!known.changed());
        std::thread::sleep(std::time::Duration::from_millis(2100));
        walk(dir.path(), "t", &mut known).unwrap();
        assert!(known.changed(), "remembered once it stood still");
        // A write of the same size changes its stamp: hashed again.
        std::fs::write(&file, "new").unwrap();
        let tree = walk(dir.path(), "t", &mut known).unwrap();
        assert_eq!(
            tree.entries["f"],
            Found::File {
                sha256: crate::sha256_hex(b"new"),
                executable: false
            }
        );
    }
}
