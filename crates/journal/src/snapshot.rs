//! Workspace snapshots: what a step found in the workspace paths it looked at (opened,
//! listed, examined, removed), each as it was the first time, kept as a tar in the run folder
//! while the step runs and unpacked into a scratch directory when it is replayed.
//!
//! A run folder is untrusted input (it is copied between machines on purpose), so unpacking
//! accepts only what a run writes: directories and regular files, under plain relative
//! names, within [`LIMITS`]. Anything else (a symlink, a hard link, a device, an absolute
//! path, a `..`) refuses the whole folder; every entry is created beneath the scratch
//! directory, never through a link.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
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

/// Whether a workspace-relative path lies in wharf's own state (`.wharf/`: runs, the image
/// store, deploy state, components), which a snapshot never holds and no step may open.
pub fn is_wharf_state(path: &Path) -> bool {
    let mut parts = path.components().filter(|c| !matches!(c, Component::CurDir));
    parts.next() == Some(Component::Normal(".wharf".as_ref()))
}

/// A snapshot written as a step looks at the workspace: what was added is whole in the file
/// after each [`SnapshotWriter::flush`], so the snapshot of a killed run reads up to there. It stops
/// taking entries at [`Limits`]; the entry that would pass them is left out.
pub struct SnapshotWriter {
    tar: tar::Builder<BufWriter<File>>,
    bytes: u64,
    entries: u64,
    limits: Limits,
}

impl SnapshotWriter {
    pub fn create(path: &Path, limits: Limits) -> io::Result<SnapshotWriter> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = File::options().write(true).create_new(true).open(path)?;
        Ok(SnapshotWriter {
            tar: tar::Builder::new(BufWriter::new(file)),
            bytes: 0,
            entries: 0,
            limits,
        })
    }

    /// Whether an entry of `len` content bytes still fits.
    pub fn fits(&self, len: u64) -> bool {
        self.entries < self.limits.entries && self.bytes + archived(len) <= self.limits.bytes
    }

    /// The limit that left an entry out, as a reader is told.
    pub fn full(&self) -> String {
        format!(
            "more than {} entries or {} bytes as an archive",
            self.limits.entries, self.limits.bytes
        )
    }

    /// Add a directory, or a file with its content: Ok(false) when it does not fit.
    pub fn add(&mut self, name: &Path, content: Option<&[u8]>) -> io::Result<bool> {
        let len = content.map_or(0, |c| c.len() as u64);
        if !self.fits(len) {
            return Ok(false);
        }
        let mut header = tar::Header::new_gnu();
        match content {
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                self.tar.append_data(&mut header, name, io::empty())?;
            }
            Some(content) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(len);
                self.tar.append_data(&mut header, name, content)?;
            }
        }
        self.entries += 1;
        self.bytes += archived(len);
        Ok(true)
    }

    /// Hand what was added to the operating system: a killed run keeps it.
    pub fn flush(&mut self) -> io::Result<()> {
        self.tar.get_mut().flush()
    }

    /// End the archive.
    pub fn finish(self) -> io::Result<()> {
        self.tar.into_inner()?.flush()
    }
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
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("snapshots/s-1.tar");
        let mut writer = SnapshotWriter::create(&path, LIMITS).unwrap();
        assert!(writer.add(Path::new("data"), None).unwrap());
        assert!(writer.add(Path::new("data/sub/a.txt"), Some(b"hello")).unwrap());
        assert!(writer.add(Path::new("data/empty"), None).unwrap());
        writer.finish().unwrap();
        let dest = tempfile::tempdir().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        unpack(&bytes[..], "s.tar", dest.path(), LIMITS).unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.path().join("data/sub/a.txt")).unwrap(),
            "hello"
        );
        assert!(dest.path().join("data/empty").is_dir());
    }

    #[test]
    fn a_snapshot_cut_short_keeps_its_whole_entries() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("s.tar");
        let mut writer = SnapshotWriter::create(&path, LIMITS).unwrap();
        writer.add(Path::new("a.txt"), Some(b"first")).unwrap();
        writer.add(Path::new("b.txt"), Some(&[7u8; 2000])).unwrap();
        writer.flush().unwrap();
        // Killed before it ended the archive, and in the middle of the second entry.
        std::mem::forget(writer);
        let len = std::fs::metadata(&path).unwrap().len();
        let cut = std::fs::read(&path).unwrap()[..(len - 700) as usize].to_vec();
        let dest = tempfile::tempdir().unwrap();
        assert!(unpack(&cut[..], "s.tar", dest.path(), LIMITS).is_err());
        assert_eq!(std::fs::read_to_string(dest.path().join("a.txt")).unwrap(), "first");
        // Killed between entries: it reads to the end.
        let whole = std::fs::read(&path).unwrap()[..1024].to_vec();
        let dest = tempfile::tempdir().unwrap();
        unpack(&whole[..], "s.tar", dest.path(), LIMITS).unwrap();
        assert_eq!(std::fs::read_to_string(dest.path().join("a.txt")).unwrap(), "first");
    }

    #[test]
    fn wharf_state_is_never_a_snapshot_entry() {
        for state in [
            ".wharf/runs/x/journal.jsonl",
            "./.wharf/state",
            ".wharf/components/a.wasm",
        ] {
            assert!(is_wharf_state(Path::new(state)), "{state}");
        }
        for work in ["nginx/upstreams.conf", "data/.wharf/runs", "src/main.rs", ".wharfish"] {
            assert!(!is_wharf_state(Path::new(work)), "{work}");
        }
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
        // A run keeps a snapshot within the same limits: the entry that would pass them is
        // left out.
        let folder = tempfile::tempdir().unwrap();
        let mut writer = SnapshotWriter::create(&folder.path().join("s.tar"), small).unwrap();
        for n in 0..10 {
            assert!(writer.add(Path::new(&format!("f{n}")), Some(b"")).unwrap());
        }
        assert!(!writer.add(Path::new("f10"), Some(b"")).unwrap());
        let mut writer = SnapshotWriter::create(&folder.path().join("t.tar"), tiny).unwrap();
        assert!(!writer.add(Path::new("big"), Some(&[0u8; 4096])).unwrap());
        assert!(writer.add(Path::new("small"), Some(&[0u8; 100])).unwrap());
        assert!(writer.full().contains("4096 bytes"));
    }
}
