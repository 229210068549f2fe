//! Unpack an image's layers into a root filesystem directory (the local deploy target runs
//! instances from it). Layer order is honoured, including whiteouts.
//!
//! A layer comes from a registry or a build, so it is untrusted: every entry is created,
//! linked or removed beneath the root filesystem, resolved as `openat2(RESOLVE_BENEATH)`
//! would (through cap-std's directory handles). A symlink in the image may point anywhere
//! (`/bin/sh -> /bin/dash` is normal) but is never followed out of the root while
//! unpacking: an entry `evil/x` where `evil -> /etc`, a hard link to `../../etc/shadow`, a
//! whiteout `.wh.passwd` under such a link, all fail the unpack. Devices and FIFOs are
//! skipped (the local target is not a container).

use super::layout::{Store, StoredImage};
use cap_std::fs::{Dir, Permissions, PermissionsExt};
use flate2::read::GzDecoder;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Prefix of an OCI whiteout entry; `.wh..wh..opq` makes its directory opaque.
const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

pub fn unpack(store: &Store, image: &StoredImage, dest: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dest)?;
    let root = Dir::open_ambient_dir(dest, cap_std::ambient_authority())?;
    for layer in &image.manifest.layers {
        let file = std::fs::File::open(store.blob_path(&layer.digest)?)?;
        let reader: Box<dyn io::Read> = if layer.media_type.ends_with("gzip") {
            Box::new(GzDecoder::new(file))
        } else {
            Box::new(file)
        };
        unpack_layer(reader, &root).map_err(|e| io::Error::new(e.kind(), format!("layer {}: {e}", layer.digest)))?;
    }
    Ok(())
}

/// One layer's entries, into `root`.
pub fn unpack_layer(reader: impl io::Read, root: &Dir) -> io::Result<()> {
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = entry.path()?.into_owned();
        let at = |e: io::Error| io::Error::new(e.kind(), format!("entry `{}`: {e}", raw.display()));
        let Some(path) = relative(&raw) else {
            return Err(at(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "its path leads outside the root filesystem",
            )));
        };
        if path.as_os_str().is_empty() {
            continue;
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let parent = path.parent().unwrap_or(Path::new(""));
        if name == OPAQUE {
            clear_dir(root, parent).map_err(at)?;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT) {
            remove(root, &parent.join(hidden)).map_err(at)?;
            continue;
        }
        if !parent.as_os_str().is_empty() {
            root.create_dir_all(parent).map_err(at)?;
        }
        let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                if !is_dir(root, &path) {
                    remove(root, &path).map_err(at)?;
                    root.create_dir(&path).map_err(at)?;
                }
                root.set_permissions(&path, Permissions::from_mode(mode | 0o700))
                    .map_err(at)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                // An earlier layer's entry here (a symlink above all) is replaced, never
                // written through.
                remove(root, &path).map_err(at)?;
                let mut file = root.create(&path).map_err(at)?;
                io::copy(&mut entry, &mut file).map_err(at)?;
                root.set_permissions(&path, Permissions::from_mode(mode)).map_err(at)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()?
                    .ok_or_else(|| at(io::Error::other("a symlink without a target")))?;
                remove(root, &path).map_err(at)?;
                // Inert until followed; wharf resolves what it follows inside the root.
                root.symlink_contents(&target, &path).map_err(at)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()?
                    .ok_or_else(|| at(io::Error::other("a hard link without a target")))?;
                let source = relative(&target).ok_or_else(|| {
                    at(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!("it links to `{}`, outside the root filesystem", target.display()),
                    ))
                })?;
                remove(root, &path).map_err(at)?;
                root.hard_link(&source, root, &path).map_err(at)?;
            }
            // Devices, FIFOs and the rest have no place in a process's root.
            _ => {}
        }
    }
    Ok(())
}

/// An entry's path inside the image: leading `/` and `./` dropped; None with a `..`.
fn relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn is_dir(root: &Dir, path: &Path) -> bool {
    root.symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// Remove what is at `path` (beneath `root`), if anything.
fn remove(root: &Dir, path: &Path) -> io::Result<()> {
    let meta = match root.symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if meta.is_dir() {
        root.remove_dir_all(path)
    } else {
        root.remove_file(path)
    }
}

/// An opaque whiteout: the directory keeps only what later entries of this layer add.
fn clear_dir(root: &Dir, dir: &Path) -> io::Result<()> {
    let handle = if dir.as_os_str().is_empty() {
        root.try_clone()?
    } else {
        match root.open_dir(dir) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
    };
    for entry in handle.entries()? {
        remove(&handle, Path::new(&entry?.file_name()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn header(kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o755);
        h
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, content: &str) {
        let mut h = header(tar::EntryType::Regular, content.len() as u64);
        b.append_data(&mut h, path, content.as_bytes()).unwrap();
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, path: &str, target: &str) {
        let mut h = header(kind, 0);
        b.append_link(&mut h, path, target).unwrap();
    }

    fn unpack_into(root: &Path, bytes: &[u8]) -> io::Result<()> {
        let dir = Dir::open_ambient_dir(root, cap_std::ambient_authority()).unwrap();
        unpack_layer(bytes, &dir)
    }

    #[test]
    fn layers_stack_with_links_and_whiteouts() {
        let root = tempfile::tempdir().unwrap();
        let base = layer(|b| {
            file(b, "usr/bin/dash", "#!dash");
            link(b, tar::EntryType::Symlink, "bin", "usr/bin");
            link(b, tar::EntryType::Symlink, "usr/bin/sh", "/usr/bin/dash");
            link(b, tar::EntryType::Link, "usr/bin/dash2", "usr/bin/dash");
            file(b, "etc/old", "x");
            file(b, "var/cache/a", "a");
        });
        unpack_into(root.path(), &base).unwrap();
        let top = layer(|b| {
            file(b, "etc/.wh.old", "");
            file(b, "var/cache/.wh..wh..opq", "");
            file(b, "var/cache/b", "b");
        });
        unpack_into(root.path(), &top).unwrap();
        let r = root.path();
        assert_eq!(std::fs::read_to_string(r.join("usr/bin/dash2")).unwrap(), "#!dash");
        assert_eq!(
            std::fs::read_link(r.join("usr/bin/sh")).unwrap(),
            Path::new("/usr/bin/dash")
        );
        assert!(!r.join("etc/old").exists());
        assert!(!r.join("var/cache/a").exists() && r.join("var/cache/b").exists());
    }

    #[test]
    fn no_entry_reaches_outside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("victim"), "keep me").unwrap();
        let out = outside.path().display().to_string();
        let attacks: Vec<(&str, Vec<u8>)> = vec![
            (
                "a file through a symlink to outside",
                layer(|b| {
                    link(b, tar::EntryType::Symlink, "evil", &out);
                    file(b, "evil/planted", "pwned");
                }),
            ),
            (
                "a whiteout through a symlink to outside",
                layer(|b| {
                    link(b, tar::EntryType::Symlink, "evil", &out);
                    file(b, "evil/.wh.victim", "");
                }),
            ),
            (
                "a hard link to outside through a symlink",
                layer(|b| {
                    link(b, tar::EntryType::Symlink, "evil", &out);
                    link(b, tar::EntryType::Link, "stolen", "evil/victim");
                }),
            ),
            (
                "a hard link with `..`",
                layer(|b| link(b, tar::EntryType::Link, "stolen", "../../../../etc/passwd")),
            ),
            (
                "a relative symlink climbing out",
                layer(|b| {
                    link(b, tar::EntryType::Symlink, "up", "../../../../../../../../..");
                    file(b, "up/tmp/planted", "pwned");
                }),
            ),
        ];
        for (what, bytes) in attacks {
            let root = tempfile::tempdir().unwrap();
            let result = unpack_into(root.path(), &bytes);
            assert!(result.is_err(), "{what}: unpacked");
            assert_eq!(
                std::fs::read_to_string(outside.path().join("victim")).unwrap(),
                "keep me",
                "{what}"
            );
            assert!(!outside.path().join("planted").exists(), "{what}");
            assert!(!root.path().join("stolen").exists(), "{what}");
        }
    }
}
