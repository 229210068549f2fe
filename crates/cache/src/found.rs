//! What a path is, as an input a step found or an effect it left: absent, a regular file
//! (its digest, whether it is executable), a directory, a symbolic link (its target),
//! something else, or an error the lookup itself met (a parent that is a file, a loop).
//! Two looks at a path agree only when a step could not tell them apart.
//!
//! A path is resolved beneath a directory handle by the kernel (`openat2`
//! `RESOLVE_BENEATH`), so a link planted in the workspace cannot make the cache read
//! anything outside it.

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use serde::{Deserialize, Serialize};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Found {
    Absent,
    File {
        sha256: String,
        executable: bool,
    },
    Directory,
    Link {
        target: String,
    },
    /// A device, a FIFO, a socket.
    Other,
    /// The lookup failed otherwise (`ENOTDIR`, `ELOOP`, `EACCES`, ...): the errno.
    Error {
        errno: i32,
    },
}

impl Found {
    /// How the path reads in a message: `absent`, `a file (sha256 1a2b3c4d5e6f)`.
    pub fn describe(&self) -> String {
        match self {
            Found::Absent => "absent".into(),
            Found::File { sha256, executable } => format!(
                "a{} file (sha256 {})",
                if *executable { "n executable" } else { "" },
                &sha256[..sha256.len().min(12)]
            ),
            Found::Directory => "a directory".into(),
            Found::Link { target } => format!("a link to `{target}`"),
            Found::Other => "a device, FIFO or socket".into(),
            Found::Error { errno } => format!("unreadable ({})", std::io::Error::from_raw_os_error(*errno)),
        }
    }
}

/// What `path` is beneath `dir`; `follow` a final symbolic link. `""` and `.` are `dir`.
pub fn probe_at(dir: BorrowedFd<'_>, path: &str, follow: bool) -> Found {
    let path = if path.is_empty() { "." } else { path };
    let mut flags = OFlags::PATH | OFlags::CLOEXEC;
    if !follow {
        flags |= OFlags::NOFOLLOW;
    }
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    let named = match rustix::fs::openat2(dir, path, flags, Mode::empty(), resolve) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Found::Absent,
        Err(e) => {
            return Found::Error {
                errno: e.raw_os_error(),
            };
        }
    };
    of_handle(&named)
}

/// What `relative` is beneath the directory `root`.
pub fn probe(root: &Path, relative: &str, follow: bool) -> Found {
    match open_dir(root) {
        Ok(dir) => probe_at(dir.as_fd(), relative, follow),
        Err(e) => Found::Error {
            errno: e.raw_os_error().unwrap_or(libc_eio()),
        },
    }
}

/// What an `O_PATH` handle names.
pub(crate) fn of_handle(named: &OwnedFd) -> Found {
    let stat = match rustix::fs::fstat(named) {
        Ok(s) => s,
        Err(e) => {
            return Found::Error {
                errno: e.raw_os_error(),
            };
        }
    };
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::Directory => Found::Directory,
        FileType::Symlink => match rustix::fs::readlinkat(named, "", Vec::new()) {
            Ok(target) => Found::Link {
                target: target.to_string_lossy().into_owned(),
            },
            Err(e) => Found::Error {
                errno: e.raw_os_error(),
            },
        },
        FileType::RegularFile => match reopen(named).and_then(digest_of) {
            Ok(sha256) => Found::File {
                sha256,
                executable: stat.st_mode & 0o111 != 0,
            },
            Err(e) => Found::Error {
                errno: e.raw_os_error().unwrap_or(libc_eio()),
            },
        },
        _ => Found::Other,
    }
}

/// The digest of what a step sees listing the directory `path` beneath `dir`: its names,
/// each with its kind. None when it is not a directory (the listing fails then).
pub fn listing_at(dir: BorrowedFd<'_>, path: &str) -> Option<String> {
    let path = if path.is_empty() { "." } else { path };
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    let fd = rustix::fs::openat2(
        dir,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        resolve,
    )
    .ok()?;
    let mut names: Vec<String> = Vec::new();
    let listing = rustix::fs::Dir::read_from(&fd).ok()?;
    for entry in listing {
        let entry = entry.ok()?;
        let name = entry.file_name().to_string_lossy();
        if name == "." || name == ".." {
            continue;
        }
        let kind = match entry.file_type() {
            FileType::Directory => 'd',
            FileType::RegularFile => 'f',
            FileType::Symlink => 'l',
            _ => 'o',
        };
        names.push(format!("{kind} {name}"));
    }
    names.sort();
    Some(crate::sha256_hex(names.join("\n").as_bytes()))
}

/// The sha256 of what `file` holds, read in chunks.
pub fn digest_of(file: std::fs::File) -> std::io::Result<String> {
    crate::copy_hashing(file, &mut std::io::sink())
}

pub(crate) fn open_dir(root: &Path) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// The regular file an `O_PATH` handle names, open for reading.
pub(crate) fn reopen(named: &OwnedFd) -> std::io::Result<std::fs::File> {
    let fd = rustix::fs::open(
        format!("/proc/self/fd/{}", named.as_raw_fd()),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(std::fs::File::from(fd))
}

fn libc_eio() -> i32 {
    rustix::io::Errno::IO.raw_os_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_what_a_step_would_find_and_nothing_outside_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(ws.join("sub")).unwrap();
        std::fs::write(ws.join("a.txt"), "hello").unwrap();
        std::fs::write(dir.path().join("outside.txt"), "secret").unwrap();
        std::os::unix::fs::symlink("../outside.txt", ws.join("out")).unwrap();
        std::os::unix::fs::symlink("a.txt", ws.join("in")).unwrap();

        let file = probe(&ws, "a.txt", true);
        assert_eq!(
            file,
            Found::File {
                sha256: crate::sha256_hex(b"hello"),
                executable: false
            }
        );
        assert_eq!(probe(&ws, "in", true), file);
        assert_eq!(probe(&ws, "in", false), Found::Link { target: "a.txt".into() });
        assert_eq!(probe(&ws, "sub", true), Found::Directory);
        assert_eq!(probe(&ws, "missing", true), Found::Absent);
        // Following the link would leave the root: the kernel refuses, nothing is read.
        assert!(matches!(probe(&ws, "out", true), Found::Error { .. }));
        assert!(matches!(probe(&ws, "../outside.txt", true), Found::Error { .. }));
        assert!(matches!(probe(&ws, "a.txt/x", true), Found::Error { .. }));

        let root = open_dir(&ws).unwrap();
        let before = listing_at(root.as_fd(), ".").unwrap();
        std::fs::write(ws.join("sub/deeper.txt"), "x").unwrap();
        assert_eq!(
            listing_at(root.as_fd(), ".").unwrap(),
            before,
            "a listing names one level"
        );
        std::fs::write(ws.join("b.txt"), "").unwrap();
        assert_ne!(listing_at(root.as_fd(), ".").unwrap(), before);
        assert_eq!(listing_at(root.as_fd(), "a.txt"), None);
    }
}
