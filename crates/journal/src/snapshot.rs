//! Workspace snapshots: the directories a step's grants opened, kept as a tar in the run
//! folder when the step starts, unpacked into a scratch directory when it is replayed.
//!
//! A run folder is untrusted input (it is copied between machines on purpose), so unpacking
//! accepts only what a run writes: directories and regular files, under plain relative
//! names, within [`LIMITS`]. Anything else (a symlink, a hard link, a device, an absolute
//! path, a `..`) refuses the whole folder; every entry is created beneath the scratch
//! directory, never through a link.

use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

/// What one snapshot may hold, counted as the archive is (a 512-byte header per entry,
/// content rounded up to 512 bytes): a run keeps no snapshot over them, a replay refuses one.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub bytes: u64,
    pub entries: u64,
}

pub const LIMITS: Limits = Limits {
    bytes: 32 << 20,
    entries: 10_000,
};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{snapshot}: entry `{entry}` is {what}; a snapshot holds only directories and regular files")]
    Forbidden {
        snapshot: String,
        entry: String,
        what: String,
    },
    #[error("{snapshot}: {what}, more than a snapshot may hold ({limit})")]
    TooBig {
        snapshot: String,
        what: String,
        limit: String,
    },
    #[error("{snapshot}: {source}")]
    Io {
        snapshot: String,
        #[source]
        source: io::Error,
    },
}

/// The archive size of a file of `len` bytes.
fn archived(len: u64) -> u64 {
    512 + len.div_ceil(512) * 512
}

/// `.wharf/runs`, `.wharf/oci`, `.wharf/state`, `.wharf/build`: wharf's own, never a step's.
fn is_state_dir(path: &Path) -> bool {
    let parent = path.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str());
    let name = path.file_name().and_then(|n| n.to_str());
    parent == Some(".wharf") && matches!(name, Some("runs" | "oci" | "state" | "build"))
}

/// Why `dirs` would make a snapshot over the limits, or None. Stops counting as soon as it
/// knows, so a directory of a million files costs no more than the limit.
pub fn over_limits(dirs: &[(PathBuf, String)], limits: Limits) -> Option<String> {
    let (mut bytes, mut entries) = (0u64, 0u64);
    let mut stack: Vec<PathBuf> = dirs.iter().map(|(d, _)| d.clone()).collect();
    while let Some(dir) = stack.pop() {
        let Ok(read) = std::fs::read_dir(&dir) else { continue };
        entries += 1;
        bytes += 512;
        for entry in read.flatten() {
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() {
                if !is_state_dir(&entry.path()) {
                    stack.push(entry.path());
                }
            } else if kind.is_file() {
                entries += 1;
                bytes += archived(entry.metadata().map_or(0, |m| m.len()));
            }
            if entries > limits.entries {
                return Some(format!("more than {} files and directories", limits.entries));
            }
            if bytes > limits.bytes {
                return Some(format!("more than {} bytes as an archive", limits.bytes));
            }
        }
    }
    None
}

/// Write a snapshot of `dirs` (host path, name in the archive) to `out`. Only directories
/// and regular files go in; links are left out, as a step's grants never open through them.
pub fn create<W: Write>(out: W, dirs: &[(PathBuf, String)]) -> io::Result<W> {
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    for (dir, name) in dirs {
        append_tree(&mut tar, dir, Path::new(name))?;
    }
    tar.into_inner()
}

fn append_tree<W: Write>(tar: &mut tar::Builder<W>, dir: &Path, name: &Path) -> io::Result<()> {
    tar.append_dir(name, dir)?;
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let child = name.join(e.file_name());
        let kind = e.file_type()?;
        if kind.is_dir() {
            if !is_state_dir(&path) {
                append_tree(tar, &path, &child)?;
            }
        } else if kind.is_file() {
            tar.append_path_with_name(&path, &child)?;
        }
    }
    Ok(())
}

/// Unpack the snapshot read from `archive` (named `snapshot` in errors) into `dest`.
pub fn unpack(archive: impl Read, snapshot: &str, dest: &Path, limits: Limits) -> Result<(), SnapshotError> {
    let io_err = |source: io::Error| SnapshotError::Io {
        snapshot: snapshot.to_string(),
        source,
    };
    let root = cap_std::fs::Dir::open_ambient_dir(dest, cap_std::ambient_authority()).map_err(io_err)?;
    // The archive is counted as it is read, headers and all, so a forged size field cannot
    // make it read more than the limit.
    let counted = archive.take(limits.bytes + 1024);
    let mut tar = tar::Archive::new(counted);
    let (mut bytes, mut entries) = (0u64, 0u64);
    for entry in tar.entries().map_err(io_err)? {
        let mut entry = entry.map_err(io_err)?;
        entries += 1;
        bytes += archived(entry.size());
        if entries > limits.entries {
            return Err(SnapshotError::TooBig {
                snapshot: snapshot.into(),
                what: format!("more than {} entries", limits.entries),
                limit: format!("{} entries", limits.entries),
            });
        }
        if bytes > limits.bytes {
            return Err(SnapshotError::TooBig {
                snapshot: snapshot.into(),
                what: format!("more than {} bytes", limits.bytes),
                limit: format!("{} bytes", limits.bytes),
            });
        }
        let raw = entry.path().map_err(io_err)?.into_owned();
        let shown = raw.display().to_string();
        let forbidden = |what: &str| SnapshotError::Forbidden {
            snapshot: snapshot.into(),
            entry: shown.clone(),
            what: what.into(),
        };
        let mut relative = PathBuf::new();
        for part in raw.components() {
            match part {
                Component::Normal(p) => relative.push(p),
                Component::CurDir => {}
                Component::ParentDir => return Err(forbidden("a path with `..`")),
                Component::RootDir | Component::Prefix(_) => return Err(forbidden("an absolute path")),
            }
        }
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                if !relative.as_os_str().is_empty() {
                    root.create_dir_all(&relative).map_err(io_err)?;
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if relative.as_os_str().is_empty() {
                    return Err(forbidden("a file without a name"));
                }
                if let Some(parent) = relative.parent().filter(|p| !p.as_os_str().is_empty()) {
                    root.create_dir_all(parent).map_err(io_err)?;
                }
                let mut file = root.create(&relative).map_err(io_err)?;
                io::copy(&mut entry, &mut file).map_err(io_err)?;
            }
            tar::EntryType::Symlink => return Err(forbidden("a symbolic link")),
            tar::EntryType::Link => return Err(forbidden("a hard link")),
            tar::EntryType::Char | tar::EntryType::Block => return Err(forbidden("a device")),
            tar::EntryType::Fifo => return Err(forbidden("a FIFO")),
            other => return Err(forbidden(&format!("a tar entry of type {other:?}"))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn header(kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h
    }

    #[test]
    fn what_a_run_writes_comes_back() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("data/sub")).unwrap();
        std::fs::write(src.path().join("data/sub/a.txt"), "hello").unwrap();
        std::os::unix::fs::symlink("/etc", src.path().join("data/link")).unwrap();
        let bytes = create(Vec::new(), &[(src.path().join("data"), "data".into())]).unwrap();
        let dest = tempfile::tempdir().unwrap();
        unpack(&bytes[..], "s.tar", dest.path(), LIMITS).unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.path().join("data/sub/a.txt")).unwrap(),
            "hello"
        );
        assert!(!dest.path().join("data/link").exists(), "links are not kept");
    }

    #[test]
    fn links_devices_and_escaping_names_refuse_the_snapshot() {
        let outside = tempfile::tempdir().unwrap();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                archive(|b| {
                    let mut h = header(tar::EntryType::Symlink, 0);
                    b.append_link(&mut h, "data", outside.path()).unwrap();
                }),
                "a symbolic link",
            ),
            (
                archive(|b| {
                    let mut h = header(tar::EntryType::Link, 0);
                    b.append_link(&mut h, "data", "/etc/passwd").unwrap();
                }),
                "a hard link",
            ),
            (
                archive(|b| {
                    let mut h = header(tar::EntryType::Char, 0);
                    b.append_data(&mut h, "null", io::empty()).unwrap();
                }),
                "a device",
            ),
            (
                archive(|b| {
                    let mut h = header(tar::EntryType::Regular, 1);
                    // The tar crate refuses to write `..`; write the name into the header.
                    h.as_old_mut().name[..12].copy_from_slice(b"../escaped.x");
                    h.set_cksum();
                    b.append(&h, &b"x"[..]).unwrap();
                }),
                "a path with `..`",
            ),
        ];
        for (bytes, what) in cases {
            let dest = tempfile::tempdir().unwrap();
            let e = unpack(&bytes[..], "s.tar", dest.path(), LIMITS).unwrap_err();
            assert!(e.to_string().contains(what), "{what}: {e}");
        }
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn limits_count_entries_and_archive_bytes() {
        let many = archive(|b| {
            for n in 0..20 {
                let mut h = header(tar::EntryType::Regular, 0);
                b.append_data(&mut h, format!("f{n}"), io::empty()).unwrap();
            }
        });
        let dest = tempfile::tempdir().unwrap();
        let small = Limits {
            bytes: 1 << 20,
            entries: 10,
        };
        let e = unpack(&many[..], "s.tar", dest.path(), small).unwrap_err();
        assert!(e.to_string().contains("more than 10 entries"), "{e}");
        // Twenty empty files are ten kilobytes as an archive, whatever their content.
        let tiny = Limits {
            bytes: 4096,
            entries: 100,
        };
        let e = unpack(&many[..], "s.tar", dest.path(), tiny).unwrap_err();
        assert!(e.to_string().contains("more than 4096 bytes"), "{e}");
        let src = tempfile::tempdir().unwrap();
        for n in 0..20 {
            std::fs::write(src.path().join(format!("f{n}")), "").unwrap();
        }
        let dirs = [(src.path().to_path_buf(), "d".to_string())];
        assert!(over_limits(&dirs, tiny).unwrap().contains("bytes"));
        assert!(over_limits(&dirs, small).unwrap().contains("files"));
        assert_eq!(over_limits(&dirs, LIMITS), None);
    }
}
