//! What a hit does again: the files the step left, put back beneath the workspace (through
//! `cap-std`, so a link planted since cannot carry a write outside it), and the images it
//! assembled, named again in the local store. Each file is written beside its place and
//! renamed over it, its blob's digest checked on the way: a damaged blob stops the restore
//! before the file changes.

use std::path::Path;
use wharf_cache::{Found, Image, Store};

/// Whether the entry's files and images can be restored: its blobs and its images' parts
/// are all in place. The reason when not.
pub fn restorable(store: &Store, workspace: &Path, files: &[(String, Found)], images: &[Image]) -> Result<(), String> {
    for (path, found) in files {
        match found {
            Found::File { sha256, .. } if !store.has_blob(sha256) => {
                return Err(format!("the content of `{path}` is no longer in the cache"));
            }
            Found::Other | Found::Error { .. } => return Err(format!("`{path}` cannot be restored")),
            _ => {}
        }
    }
    if !images.is_empty() {
        let oci = wharf_oci::layout::Store::open(&crate::capabilities::images::store_dir(workspace))
            .map_err(|e| format!("the image store: {e}"))?;
        for image in images {
            image_parts(&oci, image)?;
        }
    }
    Ok(())
}

/// Every blob of an image is in the store: its manifest and what the manifest names.
fn image_parts(oci: &wharf_oci::layout::Store, image: &Image) -> Result<(), String> {
    let gone = || {
        format!(
            "image {} ({}) is no longer in the image store",
            image.name, image.digest
        )
    };
    let manifest: wharf_oci::Manifest = oci.read_json(&image.digest).map_err(|_| gone())?;
    let parts = std::iter::once(&manifest.config).chain(&manifest.layers);
    for part in parts {
        if !oci.has_blob(&part.digest) {
            return Err(gone());
        }
    }
    Ok(())
}

/// Put the files back as the step left them, in path order.
pub fn files(store: &Store, workspace: &Path, files: &[(String, Found)]) -> std::io::Result<()> {
    let root = cap_std::fs::Dir::open_ambient_dir(workspace, cap_std::ambient_authority())?;
    for (path, found) in files {
        let here = root.symlink_metadata(path);
        let is_dir = here.as_ref().is_ok_and(|m| m.is_dir());
        let clear = |root: &cap_std::fs::Dir| -> std::io::Result<()> {
            match &here {
                Ok(m) if m.is_dir() => root.remove_dir_all(path),
                Ok(_) => root.remove_file(path),
                Err(_) => Ok(()),
            }
        };
        let parent = Path::new(path).parent().filter(|p| !p.as_os_str().is_empty());
        match found {
            Found::Absent => clear(&root)?,
            Found::Directory if is_dir => {}
            Found::Directory => {
                clear(&root)?;
                root.create_dir_all(path)?;
            }
            Found::Link { target } => {
                clear(&root)?;
                if let Some(parent) = parent {
                    root.create_dir_all(parent)?;
                }
                root.symlink_contents(target, path)?;
            }
            Found::File { sha256, executable } => {
                if let Some(parent) = parent {
                    root.create_dir_all(parent)?;
                }
                let name = Path::new(path).file_name().unwrap_or_default().to_string_lossy();
                let temp = match parent {
                    Some(p) => p.join(format!(".{name}.wharf-restore")),
                    None => format!(".{name}.wharf-restore").into(),
                };
                let mut options = cap_std::fs::OpenOptions::new();
                options.write(true).create(true).truncate(true);
                let mut file = root.open_with(&temp, &options)?;
                let copied = store.copy_blob(sha256, &mut file);
                if let Err(e) = copied {
                    drop(file);
                    let _ = root.remove_file(&temp);
                    return Err(e);
                }
                use cap_std::fs::PermissionsExt as _;
                let mode = if *executable { 0o755 } else { 0o644 };
                file.set_permissions(cap_std::fs::Permissions::from_mode(mode))?;
                drop(file);
                if is_dir {
                    root.remove_dir_all(path)?;
                }
                root.rename(&temp, &root, path)?;
            }
            Found::Other | Found::Error { .. } => {
                return Err(std::io::Error::other(format!("`{path}` cannot be restored")));
            }
        }
    }
    Ok(())
}

/// Name the entry's images again in the local store.
pub fn images(workspace: &Path, images: &[Image]) -> Result<(), String> {
    if images.is_empty() {
        return Ok(());
    }
    let oci = wharf_oci::layout::Store::open(&crate::capabilities::images::store_dir(workspace))
        .map_err(|e| format!("the image store: {e}"))?;
    for image in images {
        image_parts(&oci, image)?;
        let descriptor = wharf_oci::Descriptor {
            media_type: image.media_type.clone(),
            digest: image.digest.clone(),
            size: image.size,
            annotations: None,
            platform: None,
        };
        oci.tag(&image.name, &descriptor)
            .map_err(|e| format!("cannot name {} in the image store: {e}", image.name))?;
    }
    Ok(())
}
