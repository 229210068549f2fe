//! A step cache shared through an OCI registry (`--cache oci://HOST/REPOSITORY`), so that CI
//! machines reuse each other's work.
//!
//! An entry is an artifact tagged with its identity: its config names the step, its layers
//! are the entry (signed with the shared cache key) and every blob a hit needs (the files it
//! restores; an image's manifest, config and layers). Reading and writing both need the
//! shared key (secret `cache-key`): an entry not signed with it is refused, and a run without
//! it does not use the shared cache. Writing also needs `--cache-write`, which only trusted
//! runs (protected branches) are given: an untrusted run can read, never write what a trusted
//! one reads.
//!
//! A registry is untrusted input: the entry is read within the entry limit, blobs within the
//! sizes the signed entry's own manifest allows and checked against their digests, and a
//! registry that is down or refuses is a miss with a warning, never a failed run.

use super::StepCache;
use std::path::Path;
use wharf_cache::{Entry, Found, Store};
use wharf_oci::layout::Store as Layout;
use wharf_oci::registry::{Credentials, Registry, RegistryError};
use wharf_oci::{Descriptor, Manifest};

/// The shared cache key's secret: `WHARF_SECRET_CACHE_KEY` or `--secret-file cache-key=PATH`.
pub const KEY_SECRET: &str = "cache-key";
/// The registry credentials, if it needs them: secrets `cache-username` and
/// `cache-password`.
pub const USERNAME_SECRET: &str = "cache-username";
pub const PASSWORD_SECRET: &str = "cache-password";

const MEDIA_CONFIG: &str = "application/vnd.wharf.step-cache.config.v1+json";
const MEDIA_ENTRY: &str = "application/vnd.wharf.step-cache.entry.v1";
const MEDIA_FILE: &str = "application/octet-stream";
/// Most bytes one shared entry may bring down, all its blobs together.
const ENTRY_BYTES_LIMIT: u64 = 4 << 30;

pub struct Remote {
    /// Cleared when the registry could not be reached: the run goes on without it.
    reachable: std::sync::atomic::AtomicBool,
    registry: Registry,
    repository: String,
    /// The entries' signer: a store of the shared key (its directory is the local cache's).
    shared: Store,
    write: bool,
    /// Where what comes down is kept: the local cache's blobs.
    blobs: Layout,
}

/// Why a shared entry was not used.
pub enum Refused {
    /// The registry did not answer as a registry: the run goes on without it.
    Unreachable(String),
    /// This entry was damaged, forged, too large or incomplete.
    Entry(String),
}

/// `oci://HOST/REPOSITORY` as (host, repository).
pub fn parse(spec: &str) -> Result<(String, String), String> {
    let rest = spec
        .strip_prefix("oci://")
        .ok_or_else(|| format!("`{spec}` is not a shared cache: write oci://HOST/REPOSITORY"))?;
    let (host, repository) = rest
        .split_once('/')
        .filter(|(h, r)| !h.is_empty() && !r.is_empty())
        .ok_or_else(|| format!("`{spec}` names no repository: write oci://HOST/REPOSITORY"))?;
    if !repository
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c))
    {
        return Err(format!(
            "`{repository}` is not a repository name: lower-case letters, digits, `.`, `_`, `-` and `/`"
        ));
    }
    Ok((host.to_string(), repository.to_string()))
}

impl Remote {
    /// The shared cache at `spec`, signed with `key`; `write` when this run may add entries.
    pub fn open(spec: &str, key: &str, credentials: Credentials, write: bool, local: &Store) -> Result<Remote, String> {
        let (host, repository) = parse(spec)?;
        let registry = Registry::new(&host, credentials).map_err(|e| e.to_string())?;
        let shared = Store::with_key(local.dir(), wharf_cache::sha256_hex(key.as_bytes()).as_bytes());
        let blobs = Layout::open(&local.blob_layout()).map_err(|e| format!("{}: {e}", local.dir().display()))?;
        Ok(Remote {
            reachable: std::sync::atomic::AtomicBool::new(true),
            registry,
            repository,
            shared,
            write,
            blobs,
        })
    }

    pub fn writes(&self) -> bool {
        self.write && self.reachable()
    }

    pub fn reachable(&self) -> bool {
        self.reachable.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn describe(&self) -> String {
        format!("oci://{}/{}", self.registry.host(), self.repository)
    }

    /// The shared entry of `identity`, checked: signed with the shared key, filed under
    /// that identity. None when the registry has none.
    pub async fn entry(&self, identity: &str) -> Result<Option<(Entry, Manifest)>, Refused> {
        let (bytes, _, _) = match self.registry.get_manifest(&self.repository, identity).await {
            Ok(found) => found,
            Err(RegistryError::NotFound { .. }) => return Ok(None),
            Err(e) => {
                self.reachable.store(false, std::sync::atomic::Ordering::Relaxed);
                return Err(Refused::Unreachable(e.to_string()));
            }
        };
        self.checked_entry(identity, &bytes).await.map_err(Refused::Entry)
    }

    async fn checked_entry(&self, identity: &str, bytes: &[u8]) -> Result<Option<(Entry, Manifest)>, String> {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| format!("its manifest does not parse: {e}"))?;
        let entry_layer = manifest
            .layers
            .first()
            .filter(|l| l.media_type == MEDIA_ENTRY)
            .ok_or("its manifest has no entry layer")?;
        if entry_layer.size > wharf_cache::store::ENTRY_LIMIT {
            return Err(format!(
                "its entry is {} bytes, more than the {} a cache entry may be",
                entry_layer.size,
                wharf_cache::store::ENTRY_LIMIT
            ));
        }
        let total: u64 = manifest.layers.iter().map(|l| l.size).sum();
        if total > ENTRY_BYTES_LIMIT {
            return Err(format!(
                "it would bring down {total} bytes, more than {ENTRY_BYTES_LIMIT}"
            ));
        }
        self.fetch(&self.blobs, entry_layer).await?;
        let path = self.blobs.blob_path(&entry_layer.digest).map_err(|e| e.to_string())?;
        let entry = self.shared.read_entry(&path)?;
        if entry.identity != identity {
            return Err("it is filed under another identity".into());
        }
        Ok(Some((entry, manifest)))
    }

    /// Bring down what a hit of `entry` restores: its files into the local cache, its
    /// images into the image store.
    pub async fn fetch_effects(&self, entry: &Entry, manifest: &Manifest, workspace: &Path) -> Result<(), String> {
        let layer = |digest: &str| {
            manifest
                .layers
                .iter()
                .find(|l| l.digest == digest)
                .ok_or_else(|| format!("its manifest lacks blob {digest}"))
        };
        for (_, found) in &entry.effects.files {
            if let Found::File { sha256, .. } = found {
                self.fetch(&self.blobs, layer(&format!("sha256:{sha256}"))?).await?;
            }
        }
        if !entry.effects.images.is_empty() {
            let images = Layout::open(&crate::capabilities::images::store_dir(workspace)).map_err(|e| e.to_string())?;
            for image in &entry.effects.images {
                self.fetch(&images, layer(&image.digest)?).await?;
                let manifest: Manifest = images.read_json(&image.digest).map_err(|e| e.to_string())?;
                for part in std::iter::once(&manifest.config).chain(&manifest.layers) {
                    self.fetch(&images, layer(&part.digest)?).await?;
                }
            }
        }
        Ok(())
    }

    async fn fetch(&self, into: &Layout, layer: &Descriptor) -> Result<(), String> {
        self.registry
            .fetch_blob(into, &self.repository, &layer.digest, layer.size)
            .await
            .map_err(|e| e.to_string())
    }

    /// Add a saved entry to the shared cache: its blobs, then its manifest tagged with its
    /// identity.
    pub async fn publish(&self, cache: &StepCache, entry: &Entry) -> Result<(), String> {
        let io = |e: std::io::Error| e.to_string();
        let signed = self.shared.signed(entry).map_err(io)?;
        let (entry_digest, entry_size) = self.blobs.put_blob(&signed).map_err(io)?;
        let config = serde_json::json!({ "step": entry.step, "run": entry.run_id, "identity": entry.identity });
        let (config_digest, config_size) = self.blobs.put_blob(config.to_string().as_bytes()).map_err(io)?;
        let mut layers = vec![descriptor(MEDIA_ENTRY, &entry_digest, entry_size)];
        let mut uploads: Vec<(&Layout, Descriptor)> = vec![
            (&self.blobs, layers[0].clone()),
            (&self.blobs, descriptor(MEDIA_CONFIG, &config_digest, config_size)),
        ];
        for (_, found) in &entry.effects.files {
            if let Found::File { sha256, .. } = found {
                let digest = format!("sha256:{sha256}");
                let size = std::fs::metadata(self.blobs.blob_path(&digest).map_err(io)?)
                    .map_err(io)?
                    .len();
                let layer = descriptor(MEDIA_FILE, &digest, size);
                if !layers.contains(&layer) {
                    layers.push(layer.clone());
                    uploads.push((&self.blobs, layer));
                }
            }
        }
        let images = Layout::open(&crate::capabilities::images::store_dir(&cache.workspace)).map_err(io)?;
        for image in &entry.effects.images {
            let manifest: Manifest = images.read_json(&image.digest).map_err(io)?;
            let parts = std::iter::once(descriptor(&image.media_type, &image.digest, image.size))
                .chain(std::iter::once(manifest.config.clone()))
                .chain(manifest.layers.iter().cloned());
            for part in parts {
                let layer = descriptor(&part.media_type, &part.digest, part.size);
                if !layers.contains(&layer) {
                    layers.push(layer.clone());
                    uploads.push((&images, layer));
                }
            }
        }
        for (store, layer) in &uploads {
            let present = self
                .registry
                .blob_exists(&self.repository, &layer.digest)
                .await
                .map_err(|e| e.to_string())?;
            if !present {
                self.registry
                    .upload_blob(
                        store,
                        &self.repository,
                        &layer.digest,
                        layer.size,
                        std::sync::Arc::new(|_, _| {}),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(wharf_oci::MEDIA_MANIFEST.into()),
            config: descriptor(MEDIA_CONFIG, &config_digest, config_size),
            layers,
            annotations: None,
        };
        let bytes = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
        self.registry
            .put_manifest(&self.repository, &entry.identity, wharf_oci::MEDIA_MANIFEST, &bytes)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

fn descriptor(media_type: &str, digest: &str, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest: digest.to_string(),
        size,
        annotations: None,
        platform: None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_shared_cache_is_named_as_an_oci_repository() {
        assert_eq!(
            super::parse("oci://127.0.0.1:5000/team/cache"),
            Ok(("127.0.0.1:5000".into(), "team/cache".into()))
        );
        for bad in ["127.0.0.1:5000/cache", "oci://host", "oci:///cache", "oci://host/Team"] {
            assert!(super::parse(bad).is_err(), "{bad}");
        }
    }
}
