//! Layers built from workspace files: tar, gzip and two sha256 sums (of the compressed blob
//! and of the tar, the config's `diff_id`) in one streaming pass into the store. Headers
//! are deterministic (no owners, fixed times) so the same files give the same digest, and
//! an unchanged image pushes as a no-op.

use super::Hashing;
use super::layout::Store;
use flate2::Compression;
use flate2::write::GzEncoder;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct FileMapping {
    /// A file or directory on the host.
    pub source: PathBuf,
    /// Its absolute path in the image.
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub digest: String,
    pub size: u64,
    pub diff_id: String,
}

pub fn build(store: &Store, files: &[FileMapping]) -> io::Result<Layer> {
    let blob = store.blob_writer()?;
    let gzip = GzEncoder::new(blob, Compression::fast());
    let mut tar = tar::Builder::new(Hashing::new(gzip));
    tar.mode(tar::HeaderMode::Deterministic);
    tar.follow_symlinks(false);
    let mut dirs_done: Vec<PathBuf> = Vec::new();
    for mapping in files {
        let target = image_path(&mapping.target)?;
        // Parent directories first, once each.
        let mut parent = PathBuf::new();
        for part in target.parent().into_iter().flat_map(Path::components) {
            parent.push(part);
            if !dirs_done.contains(&parent) {
                append_dir(&mut tar, &parent)?;
                dirs_done.push(parent.clone());
            }
        }
        let meta = std::fs::symlink_metadata(&mapping.source)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", mapping.source.display())))?;
        if meta.is_dir() {
            append_tree(&mut tar, &mapping.source, &target)?;
        } else {
            tar.append_path_with_name(&mapping.source, &target)?;
        }
    }
    let hashing = tar.into_inner()?;
    let (gzip, diff_id, _) = hashing.finish();
    let blob = gzip.finish()?;
    let (digest, size) = blob.finish()?;
    Ok(Layer { digest, size, diff_id })
}

/// `/app/bin` -> `app/bin`; no `..`.
pub fn image_path(target: &str) -> io::Result<PathBuf> {
    let path = Path::new(target);
    if !path.is_absolute() || path.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(io::Error::other(format!(
            "image path `{target}` must be absolute and stay inside the image"
        )));
    }
    Ok(path.components().skip(1).collect())
}

fn append_dir<W: io::Write>(tar: &mut tar::Builder<W>, path: &Path) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o755);
    header.set_size(0);
    header.set_mtime(0);
    tar.append_data(&mut header, path, io::empty())
}

fn append_tree<W: io::Write>(tar: &mut tar::Builder<W>, source: &Path, target: &Path) -> io::Result<()> {
    if !target.as_os_str().is_empty() {
        tar.append_dir(target, source)?;
    }
    let mut entries: Vec<_> = std::fs::read_dir(source)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = target.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            append_tree(tar, &path, &name)?;
        } else {
            tar.append_path_with_name(&path, &name)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_files_same_digest_and_paths_stay_inside() {
        let ws = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(ws.path().join("site/css")).unwrap();
        std::fs::write(ws.path().join("site/index.html"), "hi").unwrap();
        std::fs::write(ws.path().join("site/css/a.css"), "a{}").unwrap();
        std::fs::write(ws.path().join("bin"), "#!/bin/sh").unwrap();
        let store_dir = tempfile::tempdir().unwrap();
        let store = Store::open(store_dir.path()).unwrap();
        let files = vec![
            FileMapping {
                source: ws.path().join("bin"),
                target: "/usr/local/bin/app".into(),
            },
            FileMapping {
                source: ws.path().join("site"),
                target: "/srv/www".into(),
            },
        ];
        let a = build(&store, &files).unwrap();
        let b = build(&store, &files).unwrap();
        assert_eq!(a, b);
        // Readable back, with parents created.
        let file = std::fs::File::open(store.blob_path(&a.digest).unwrap()).unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "usr",
                "usr/local",
                "usr/local/bin",
                "usr/local/bin/app",
                "srv",
                "srv/www",
                "srv/www/css",
                "srv/www/css/a.css",
                "srv/www/index.html"
            ]
        );

        let escape = vec![FileMapping {
            source: ws.path().join("bin"),
            target: "/../etc/passwd".into(),
        }];
        assert!(build(&store, &escape).is_err());
    }
}
