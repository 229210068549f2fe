//! Host paths from untrusted input (a step's arguments, its outputs, `with:` values, an image
//! layer, a run folder) resolved beneath a root directory by the kernel (`openat2`):
//! `..`, absolute paths and symlinks may move about inside the root but never lead out of
//! it. A text check cannot do this: a symlink an earlier step planted turns an innocent
//! `out/dir` into `/etc`.
//!
//! The result is the real path of what was found (no symlink left in it), used at once; no
//! step runs while the host acts on it.

use rustix::fs::{Mode, OFlags, ResolveFlags};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{path}` leads outside {}", root.display())]
    Escapes { path: String, root: PathBuf },
    #[error("`{path}` does not exist in {}", root.display())]
    NotFound { path: String, root: PathBuf },
    #[error("`{path}` in {}: {source}", root.display())]
    Io {
        path: String,
        root: PathBuf,
        source: std::io::Error,
    },
}

impl Error {
    pub fn io_kind(&self) -> std::io::ErrorKind {
        match self {
            Error::Escapes { .. } => std::io::ErrorKind::PermissionDenied,
            Error::NotFound { .. } => std::io::ErrorKind::NotFound,
            Error::Io { source, .. } => source.kind(),
        }
    }
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::new(e.io_kind(), e.to_string())
    }
}

/// How absolute paths and absolute symlinks are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// They are refused: a workspace path is relative to the workspace.
    Beneath,
    /// They start at the root, as inside a container's root filesystem (`/bin/sh`).
    InRoot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Any,
    Directory,
}

/// The real path of `relative` beneath `root`; `""` and `.` are the root itself.
pub fn resolve(root: &Path, relative: &str, scope: Scope, kind: Kind) -> Result<PathBuf, Error> {
    let fd = open(root, relative, scope, kind)?;
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|source| Error::Io {
        path: relative.to_string(),
        root: root.to_path_buf(),
        source,
    })
}

/// A workspace-relative path that must exist, as its real path.
pub fn existing(root: &Path, relative: &str) -> Result<PathBuf, Error> {
    resolve(root, relative, Scope::Beneath, Kind::Any)
}

/// Create the directory `relative` and its missing parents beneath `root`, each one in the
/// directory resolved before it, so a planted symlink cannot redirect the creation; its real
/// path.
pub fn create_dir_all(root: &Path, relative: &str) -> Result<PathBuf, Error> {
    let parts: Vec<&str> = relative.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    for depth in 1..=parts.len() {
        let prefix = parts[..depth].join("/");
        match open(root, &prefix, Scope::Beneath, Kind::Directory) {
            Ok(_) => continue,
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let parent = open(root, &parts[..depth - 1].join("/"), Scope::Beneath, Kind::Directory)?;
        match rustix::fs::mkdirat(&parent, parts[depth - 1], Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => {
                return Err(Error::Io {
                    path: prefix,
                    root: root.to_path_buf(),
                    source: e.into(),
                });
            }
        }
    }
    resolve(root, relative, Scope::Beneath, Kind::Directory)
}

/// A handle on `relative` beneath `root` (`O_PATH`: it reads nothing, it only names).
pub fn open(root: &Path, relative: &str, scope: Scope, kind: Kind) -> Result<OwnedFd, Error> {
    let err = |source: std::io::Error| Error::Io {
        path: relative.to_string(),
        root: root.to_path_buf(),
        source,
    };
    let dir = rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| err(e.into()))?;
    let relative_path = if relative.is_empty() { "." } else { relative };
    let resolve = match scope {
        Scope::Beneath => ResolveFlags::BENEATH,
        Scope::InRoot => ResolveFlags::IN_ROOT,
    } | ResolveFlags::NO_MAGICLINKS;
    let mut flags = OFlags::PATH | OFlags::CLOEXEC;
    if kind == Kind::Directory {
        flags |= OFlags::DIRECTORY;
    }
    rustix::fs::openat2(&dir, relative_path, flags, Mode::empty(), resolve).map_err(|e| match e {
        rustix::io::Errno::XDEV => Error::Escapes {
            path: relative.to_string(),
            root: root.to_path_buf(),
        },
        rustix::io::Errno::NOENT => Error::NotFound {
            path: relative.to_string(),
            root: root.to_path_buf(),
        },
        rustix::io::Errno::NOSYS => err(std::io::Error::other(
            "this kernel lacks openat2 (Linux 5.6 or later), which wharf needs to keep paths inside the workspace",
        )),
        other => err(other.into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_move_inside_but_never_out() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let real_root = std::fs::canonicalize(root.path()).unwrap();
        std::fs::create_dir_all(root.path().join("a/b")).unwrap();
        symlink("a/b", root.path().join("inside")).unwrap();
        symlink(outside.path(), root.path().join("absolute")).unwrap();
        symlink("../../..", root.path().join("a/up")).unwrap();
        symlink(outside.path(), root.path().join("a/b/planted")).unwrap();

        let got = resolve(root.path(), "inside", Scope::Beneath, Kind::Directory).unwrap();
        assert_eq!(got, real_root.join("a/b"));
        assert_eq!(
            resolve(root.path(), "", Scope::Beneath, Kind::Directory).unwrap(),
            real_root
        );
        for escape in ["absolute", "a/up", "../x", "/etc", "a/../../etc"] {
            let e = resolve(root.path(), escape, Scope::Beneath, Kind::Any).unwrap_err();
            assert!(matches!(e, Error::Escapes { .. }), "{escape}: {e}");
        }
        assert!(matches!(
            resolve(root.path(), "missing", Scope::Beneath, Kind::Any).unwrap_err(),
            Error::NotFound { .. }
        ));

        // Creating goes beneath too: through `inside` is fine, through `planted` is not.
        let made = create_dir_all(root.path(), "inside/c/d").unwrap();
        assert_eq!(made, real_root.join("a/b/c/d"));
        let e = create_dir_all(root.path(), "a/b/planted/new").unwrap_err();
        assert!(matches!(e, Error::Escapes { .. }), "{e}");
        assert!(!outside.path().join("new").exists());
    }

    #[test]
    fn in_root_reads_absolute_links_from_the_root() {
        let root = tempfile::tempdir().unwrap();
        let real_root = std::fs::canonicalize(root.path()).unwrap();
        std::fs::create_dir_all(root.path().join("bin")).unwrap();
        std::fs::write(root.path().join("bin/dash"), "").unwrap();
        symlink("/bin/dash", root.path().join("bin/sh")).unwrap();
        symlink("/../../../etc/passwd", root.path().join("passwd")).unwrap();
        let got = resolve(root.path(), "/bin/sh", Scope::InRoot, Kind::Any).unwrap();
        assert_eq!(got, real_root.join("bin/dash"));
        // `..` stops at the root, as in a chroot: the host's /etc/passwd is not reached.
        let e = resolve(root.path(), "passwd", Scope::InRoot, Kind::Any).unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
    }
}
