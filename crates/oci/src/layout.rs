//! The local image store: an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/...`) that `skopeo` reads through its `oci:` transport. Images are named in
//! the index with the `org.opencontainers.image.ref.name` annotation `REPO:TAG`.

use super::{ANNOTATION_REF_NAME, Descriptor, Hashing, ImageConfig, Index, MEDIA_INDEX, Manifest, digest_hex};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

pub struct Store {
    root: PathBuf,
}

/// A blob being written: hashed on the way in, renamed into place when finished, removed
/// when dropped unfinished.
pub struct BlobWriter {
    inner: Option<Hashing<BufWriter<File>>>,
    tmp: PathBuf,
    blobs: PathBuf,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.as_mut().expect("not finished").write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.as_mut().expect("not finished").flush()
    }
}

impl BlobWriter {
    /// Digest and size of what was written, now stored under its digest.
    pub fn finish(self) -> io::Result<(String, u64)> {
        self.finish_expecting(None)
    }

    /// As [`BlobWriter::finish`], but only if the content hashes to `expected`; otherwise
    /// nothing is stored.
    pub fn finish_expecting(mut self, expected: Option<&str>) -> io::Result<(String, u64)> {
        let (writer, digest, size) = self.inner.take().expect("finished once").finish();
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        if let Some(expected) = expected
            && expected != digest
        {
            return Err(io::Error::other(format!("content for {expected} hashes to {digest}")));
        }
        file.sync_all()?;
        let hex = digest_hex(&digest).expect("sha256 digest");
        std::fs::rename(&self.tmp, self.blobs.join(hex))?;
        Ok((digest, size))
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // Renamed away when finished; otherwise a leftover.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// An image in the store, resolved.
#[derive(Debug, Clone)]
pub struct StoredImage {
    pub manifest_descriptor: Descriptor,
    pub manifest: Manifest,
    pub config: ImageConfig,
}

impl Store {
    /// Open (creating if needed) the layout at `root`.
    pub fn open(root: &Path) -> io::Result<Store> {
        std::fs::create_dir_all(root.join("blobs/sha256"))?;
        let layout = root.join("oci-layout");
        if !layout.exists() {
            std::fs::write(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let store = Store {
            root: root.to_path_buf(),
        };
        if !root.join("index.json").exists() {
            store.write_index(&Index {
                schema_version: 2,
                media_type: Some(MEDIA_INDEX.into()),
                manifests: Vec::new(),
            })?;
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &str) -> io::Result<PathBuf> {
        let hex = digest_hex(digest).ok_or_else(|| io::Error::other(format!("not a sha256 digest: {digest}")))?;
        Ok(self.root.join("blobs/sha256").join(hex))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).map(|p| p.exists()).unwrap_or(false)
    }

    pub fn blob_writer(&self) -> io::Result<BlobWriter> {
        let blobs = self.root.join("blobs/sha256");
        let tmp = blobs.join(format!(".tmp-{}-{}", std::process::id(), unique()));
        let file = File::create(&tmp)?;
        Ok(BlobWriter {
            inner: Some(Hashing::new(BufWriter::with_capacity(1 << 20, file))),
            tmp,
            blobs,
        })
    }

    pub fn put_blob(&self, bytes: &[u8]) -> io::Result<(String, u64)> {
        let digest = super::digest_of(bytes);
        if !self.has_blob(&digest) {
            let mut w = self.blob_writer()?;
            w.write_all(bytes)?;
            return w.finish();
        }
        Ok((digest, bytes.len() as u64))
    }

    pub fn read_blob(&self, digest: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.blob_path(digest)?)
    }

    /// Blob `digest`, if the store holds it whole and within `limit` bytes. A blob that does
    /// not match its digest or is too big is removed and reads as missing: a cache is
    /// untrusted input, and what is missing is fetched again.
    pub fn read_verified(&self, digest: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
        use std::io::Read;
        let path = self.blob_path(digest)?;
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut bytes = Vec::new();
        file.take(limit + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > limit || super::digest_of(&bytes) != digest {
            let _ = std::fs::remove_file(&path);
            return Ok(None);
        }
        Ok(Some(bytes))
    }

    pub fn read_json<T: serde::de::DeserializeOwned>(&self, digest: &str) -> io::Result<T> {
        serde_json::from_slice(&self.read_blob(digest)?).map_err(io::Error::other)
    }

    pub fn index(&self) -> io::Result<Index> {
        serde_json::from_slice(&std::fs::read(self.root.join("index.json"))?).map_err(io::Error::other)
    }

    fn write_index(&self, index: &Index) -> io::Result<()> {
        let tmp = self.root.join(format!(".index.json.tmp{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec_pretty(index).map_err(io::Error::other)?)?;
        std::fs::rename(tmp, self.root.join("index.json"))
    }

    /// Point `name` (`REPO:TAG`) at a manifest, replacing what it named before.
    pub fn tag(&self, name: &str, manifest: &Descriptor) -> io::Result<()> {
        let mut index = self.index()?;
        index.manifests.retain(|d| ref_name(d) != Some(name));
        let mut descriptor = manifest.clone();
        let mut annotations = descriptor.annotations.take().unwrap_or_default();
        annotations.insert(ANNOTATION_REF_NAME.into(), name.into());
        descriptor.annotations = Some(annotations);
        index.manifests.push(descriptor);
        self.write_index(&index)
    }

    /// Find an image by `REPO:TAG` or by manifest digest.
    pub fn resolve(&self, name: Option<&str>, digest: Option<&str>) -> io::Result<Option<StoredImage>> {
        let index = self.index()?;
        let found = index.manifests.iter().find(|d| match (name, digest) {
            (_, Some(digest)) => d.digest == digest,
            (Some(name), None) => ref_name(d) == Some(name),
            (None, None) => false,
        });
        let descriptor = match (found, digest) {
            (Some(d), _) => d.clone(),
            // Pulled by digest without a name: the blob itself may still be here.
            (None, Some(digest)) if self.has_blob(digest) => Descriptor {
                media_type: super::MEDIA_MANIFEST.into(),
                digest: digest.into(),
                size: std::fs::metadata(self.blob_path(digest)?)?.len(),
                annotations: None,
                platform: None,
            },
            _ => return Ok(None),
        };
        let manifest: Manifest = self.read_json(&descriptor.digest)?;
        let config: ImageConfig = self.read_json(&manifest.config.digest)?;
        Ok(Some(StoredImage {
            manifest_descriptor: descriptor,
            manifest,
            config,
        }))
    }

    /// Names in the index, by manifest digest.
    pub fn names(&self) -> io::Result<BTreeMap<String, String>> {
        Ok(self
            .index()?
            .manifests
            .iter()
            .filter_map(|d| Some((ref_name(d)?.to_string(), d.digest.clone())))
            .collect())
    }
}

fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations.as_ref()?.get(ANNOTATION_REF_NAME).map(String::as_str)
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
