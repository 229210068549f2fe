//! Artifacts that refer to another (a signature, a provenance), attached the OCI 1.1 way: a
//! manifest whose `subject` is the artifact's manifest and whose one layer is the attached
//! blob. A registry with the referrers API lists them itself; for one without it (Debian's
//! `docker-registry`), the list is an image index kept at the tag `sha256-HEX` of the
//! subject's digest, the scheme cosign and oras fall back to.
//!
//! Lists come from registries: they are read within the manifest limit, and at most
//! [`CANDIDATE_LIMIT`] entries of the wanted type are looked at.

use super::layout::Store;
use super::registry::{MANIFEST_LIMIT, Registry, RegistryError};
use super::{Descriptor, MEDIA_INDEX, MEDIA_MANIFEST};
use std::collections::BTreeMap;

/// The empty config of an artifact manifest (`{}`).
pub const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";
/// Referrers of one type looked at, newest last; more is a flood, not a signature.
pub const CANDIDATE_LIMIT: usize = 16;

/// A manifest that refers to another.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferrerManifest {
    pub schema_version: u32,
    pub media_type: String,
    #[serde(default)]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// An entry of a referrers list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Referrer {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReferrerIndex {
    schema_version: u32,
    #[serde(default = "index_media_type")]
    media_type: String,
    /// Entries read one by one: a malformed one is dropped, not the whole list (which a
    /// signer could then never repair).
    #[serde(deserialize_with = "well_formed")]
    manifests: Vec<Referrer>,
}

fn index_media_type() -> String {
    MEDIA_INDEX.into()
}

fn well_formed<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Referrer>, D::Error> {
    let entries: Vec<serde_json::Value> = serde::Deserialize::deserialize(d)?;
    Ok(entries
        .into_iter()
        .filter_map(|e| serde_json::from_value(e).ok())
        .collect())
}

/// The fallback tag of `digest`'s referrers list.
pub fn fallback_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

/// Attach `blob` of `artifact_type` to the manifest `subject` in `repository`; the
/// referrer's digest. The blobs are staged in `store` first.
pub async fn attach(
    registry: &Registry,
    store: &Store,
    repository: &str,
    subject: &Descriptor,
    artifact_type: &str,
    blob: &[u8],
    annotations: BTreeMap<String, String>,
) -> Result<Referrer, RegistryError> {
    let staged = |e| RegistryError::store("a referrer")(e);
    let (config_digest, config_size) = store.put_blob(b"{}").map_err(staged)?;
    let (blob_digest, blob_size) = store.put_blob(blob).map_err(staged)?;
    let manifest = ReferrerManifest {
        schema_version: 2,
        media_type: MEDIA_MANIFEST.into(),
        artifact_type: Some(artifact_type.into()),
        config: descriptor(EMPTY_CONFIG, &config_digest, config_size),
        layers: vec![descriptor(artifact_type, &blob_digest, blob_size)],
        subject: Some(descriptor(&subject.media_type, &subject.digest, subject.size)),
        annotations: (!annotations.is_empty()).then(|| annotations.clone()),
    };
    let bytes = serde_json::to_vec(&manifest).map_err(|e| staged(std::io::Error::other(e)))?;
    let (digest, size) = store.put_blob(&bytes).map_err(staged)?;
    for (digest, size) in [(&config_digest, config_size), (&blob_digest, blob_size)] {
        if !registry.blob_exists(repository, digest).await? {
            registry
                .upload_blob(store, repository, digest, size, std::sync::Arc::new(|_, _| {}))
                .await?;
        }
    }
    let listed_by_registry = registry.put_referrer(repository, MEDIA_MANIFEST, &bytes).await?;
    let referrer = Referrer {
        media_type: MEDIA_MANIFEST.into(),
        digest,
        size,
        artifact_type: Some(artifact_type.into()),
        annotations: manifest.annotations,
    };
    if !listed_by_registry {
        let tag = fallback_tag(&subject.digest);
        let mut index = match registry.get_manifest(repository, &tag).await {
            Ok((bytes, _, _)) => parse_index(registry, &bytes)?,
            Err(RegistryError::NotFound { .. }) => ReferrerIndex {
                schema_version: 2,
                media_type: MEDIA_INDEX.into(),
                manifests: Vec::new(),
            },
            Err(e) => return Err(e),
        };
        if !index.manifests.iter().any(|m| m.digest == referrer.digest) {
            index.manifests.push(referrer.clone());
        }
        let bytes = serde_json::to_vec(&index).map_err(|e| staged(std::io::Error::other(e)))?;
        registry.put_manifest(repository, &tag, MEDIA_INDEX, &bytes).await?;
    }
    Ok(referrer)
}

fn descriptor(media_type: &str, digest: &str, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest: digest.into(),
        size,
        annotations: None,
        platform: None,
    }
}

fn parse_index(registry: &Registry, bytes: &[u8]) -> Result<ReferrerIndex, RegistryError> {
    serde_json::from_slice(bytes).map_err(|e| {
        RegistryError::protocol(
            registry.host(),
            format!("a referrers list that is not an image index: {e}"),
        )
    })
}

/// What refers to `digest` in `repository` with `artifact_type`: through the referrers API,
/// else the fallback tag; the last [`CANDIDATE_LIMIT`] of them.
pub async fn list(
    registry: &Registry,
    repository: &str,
    digest: &str,
    artifact_type: &str,
) -> Result<Vec<Referrer>, RegistryError> {
    let bytes = match registry.referrers(repository, digest).await? {
        Some(bytes) => bytes,
        None => match registry.get_manifest(repository, &fallback_tag(digest)).await {
            Ok((bytes, _, _)) => bytes,
            Err(RegistryError::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        },
    };
    let index = parse_index(registry, &bytes)?;
    let mut seen = std::collections::HashSet::new();
    let mut wanted: Vec<Referrer> = index
        .manifests
        .into_iter()
        .filter(|m| m.artifact_type.as_deref() == Some(artifact_type) && super::digest_hex(&m.digest).is_some())
        .filter(|m| seen.insert(m.digest.clone()))
        .collect();
    let skip = wanted.len().saturating_sub(CANDIDATE_LIMIT);
    wanted.drain(..skip);
    Ok(wanted)
}

/// The attached blob of the referrer `digest`, fetched into `store` (or found there) and
/// checked: a manifest referring to `subject`, one layer of `artifact_type` within `limit`
/// bytes. Offline (`registry` None) only the store is read.
pub async fn fetch(
    registry: Option<&Registry>,
    store: &Store,
    repository: &str,
    digest: &str,
    subject: &str,
    artifact_type: &str,
    limit: u64,
) -> Result<Vec<u8>, ReferrerError> {
    let manifest_bytes = match read_checked(store, digest, MANIFEST_LIMIT as u64)? {
        Some(bytes) => bytes,
        None => {
            let registry = registry.ok_or_else(|| ReferrerError::Offline { digest: digest.into() })?;
            let (bytes, _, got) = registry.get_manifest(repository, digest).await?;
            if got != digest {
                return Err(ReferrerError::Invalid(format!(
                    "the registry returned {got} for {digest}"
                )));
            }
            store
                .put_blob(&bytes)
                .map_err(|e| ReferrerError::Store(e.to_string()))?;
            bytes
        }
    };
    let manifest: ReferrerManifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| ReferrerError::Invalid(format!("{digest} is not an artifact manifest: {e}")))?;
    if manifest.subject.as_ref().map(|s| s.digest.as_str()) != Some(subject) {
        return Err(ReferrerError::Invalid(format!("{digest} does not refer to {subject}")));
    }
    let [layer] = manifest.layers.as_slice() else {
        return Err(ReferrerError::Invalid(format!(
            "{digest} has {} layers, not the one {artifact_type}",
            manifest.layers.len()
        )));
    };
    if layer.media_type != artifact_type {
        return Err(ReferrerError::Invalid(format!(
            "{digest} holds `{}`, not `{artifact_type}`",
            shown(&layer.media_type)
        )));
    }
    if layer.size > limit {
        return Err(ReferrerError::TooBig {
            digest: layer.digest.clone(),
            size: layer.size,
            limit,
        });
    }
    if let Some(bytes) = read_checked(store, &layer.digest, limit)? {
        return Ok(bytes);
    }
    let registry = registry.ok_or_else(|| ReferrerError::Offline {
        digest: layer.digest.clone(),
    })?;
    registry
        .fetch_blob(store, repository, &layer.digest, layer.size)
        .await?;
    read_checked(store, &layer.digest, limit)?.ok_or_else(|| ReferrerError::Offline {
        digest: layer.digest.clone(),
    })
}

/// A blob of the store, checked against its digest; None when the store lacks it (or
/// held it damaged).
fn read_checked(store: &Store, digest: &str, limit: u64) -> Result<Option<Vec<u8>>, ReferrerError> {
    if super::digest_hex(digest).is_none() {
        return Err(ReferrerError::Invalid(format!("`{digest}` is not a sha256 digest")));
    }
    store
        .read_verified(digest, limit)
        .map_err(|e| ReferrerError::Store(e.to_string()))
}

/// Copy the referrer `digest` and its layer from one store to another (to carry across an
/// air gap), each checked against its digest.
pub fn copy(from: &Store, to: &Store, digest: &str, limit: u64) -> Result<(), ReferrerError> {
    let missing = |d: &str| ReferrerError::Offline { digest: d.into() };
    let manifest_bytes = read_checked(from, digest, MANIFEST_LIMIT as u64)?.ok_or_else(|| missing(digest))?;
    let manifest: ReferrerManifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| ReferrerError::Invalid(format!("{digest} is not an artifact manifest: {e}")))?;
    // What [`fetch`] reads: the manifest and its layer (the config is the empty `{}`).
    for blob in &manifest.layers {
        let bytes = read_checked(from, &blob.digest, limit)?.ok_or_else(|| missing(&blob.digest))?;
        to.put_blob(&bytes).map_err(|e| ReferrerError::Store(e.to_string()))?;
    }
    to.put_blob(&manifest_bytes)
        .map_err(|e| ReferrerError::Store(e.to_string()))?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum ReferrerError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{digest} is not in the cache, and the run is offline")]
    Offline { digest: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{digest} is {size} bytes, over the limit of {limit}")]
    TooBig { digest: String, size: u64, limit: u64 },
    #[error("the cache: {0}")]
    Store(String),
}

/// Text a registry chose, as a message may show it: at most 100 characters, control
/// characters escaped, so it cannot forge lines in a CI log.
pub fn shown(text: &str) -> String {
    text.chars().take(100).flat_map(char::escape_debug).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_entry_is_dropped_not_the_list_and_text_is_shown_escaped() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let text = format!(
            r#"{{"schemaVersion": 2, "manifests": [{{"digest": 3}}, {{"mediaType": "{MEDIA_MANIFEST}", "digest": "{digest}", "size": 9, "artifactType": "x"}}]}}"#
        );
        let index: ReferrerIndex = serde_json::from_str(&text).unwrap();
        assert_eq!(index.media_type, MEDIA_INDEX);
        assert_eq!(index.manifests.len(), 1);
        assert_eq!(index.manifests[0].digest, digest);
        assert_eq!(shown("a\n::error::b"), "a\\n::error::b");
        assert_eq!(shown(&"x".repeat(500)).len(), 100);
    }
}
