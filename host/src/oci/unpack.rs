//! Unpack an image's layers into a root filesystem directory (the local deploy target runs
//! instances from it). Layer order is honoured, including whiteouts.

use super::layout::{Store, StoredImage};
use flate2::read::GzDecoder;
use std::io;
use std::path::{Component, Path};

pub fn unpack(store: &Store, image: &StoredImage, dest: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dest)?;
    for layer in &image.manifest.layers {
        let file = std::fs::File::open(store.blob_path(&layer.digest)?)?;
        let gz = layer.media_type.ends_with("gzip");
        let reader: Box<dyn io::Read> = if gz {
            Box::new(GzDecoder::new(file))
        } else {
            Box::new(file)
        };
        let mut archive = tar::Archive::new(reader);
        archive.set_preserve_permissions(true);
        archive.set_overwrite(true);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let path = entry.path()?.into_owned();
            if path.components().any(|c| matches!(c, Component::ParentDir)) {
                continue;
            }
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if let Some(hidden) = name.strip_prefix(".wh.") {
                let victim = dest.join(path.with_file_name(hidden));
                let _ = std::fs::remove_dir_all(&victim).or_else(|_| std::fs::remove_file(&victim));
                continue;
            }
            entry.unpack_in(dest)?;
        }
    }
    Ok(())
}
