//! Steps as OCI artifacts, in the CNCF layout for Wasm (the one `wkg oci` and oras use): an
//! image manifest whose config has media type `application/vnd.wasm.config.v0+json` and
//! whose one layer is the component itself, `application/wasm`.

use super::layout::Store;
use super::registry::{Progress, PushReport, Registry, RegistryError, push_manifest};
use super::{Descriptor, MEDIA_MANIFEST, Manifest};
use std::collections::BTreeMap;

pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
pub const WASM_LAYER: &str = "application/wasm";
/// Names the layer's file for clients that write layers out as files (oras).
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";

/// What the config of a Wasm artifact says about the component in it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ComponentInfo {
    pub exports: Vec<String>,
    pub imports: Vec<String>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct WasmConfig<'a> {
    created: &'a str,
    architecture: &'static str,
    os: &'static str,
    layer_digests: [&'a str; 1],
    component: &'a ComponentInfo,
}

/// Why a manifest is not a step wharf can run.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("is a `{found}` artifact, not a Wasm component (config media type `{WASM_CONFIG}`)")]
    NotWasm { found: String },
    #[error("has {layers} layers; a Wasm component artifact has exactly one, `{WASM_LAYER}`")]
    Layers { layers: usize },
    #[error("its layer is `{found}`, not `{WASM_LAYER}`")]
    LayerType { found: String },
    #[error("its component is {size} bytes, over the limit of {limit}")]
    TooBig { size: u64, limit: u64 },
    #[error(
        "is an image index of {} manifest(s) ({}); wharf runs one component, not a choice of them: pin the digest of the step's own manifest (`@sha256:...`)",
        manifests.len(),
        manifests.join(", ")
    )]
    Index { manifests: Vec<String> },
    #[error("its manifest is not valid JSON: {0}")]
    Json(serde_json::Error),
    #[error("is not an OCI image manifest: {0}")]
    NotAManifest(serde_json::Error),
}

impl From<serde_json::Error> for ArtifactError {
    fn from(e: serde_json::Error) -> Self {
        match e.classify() {
            serde_json::error::Category::Data => ArtifactError::NotAManifest(e),
            _ => ArtifactError::Json(e),
        }
    }
}

/// The manifest in `bytes`, or what else it is: an index is named as one, with what it
/// lists, rather than failing as a manifest without a config.
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, ArtifactError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Kind {
        media_type: Option<String>,
        manifests: Option<Vec<super::Descriptor>>,
    }
    let kind: Kind = serde_json::from_slice(bytes)?;
    let index = kind
        .media_type
        .as_deref()
        .is_some_and(|m| m == super::MEDIA_INDEX || m == super::DOCKER_MANIFEST_LIST);
    if index || kind.manifests.is_some() {
        let manifests = kind
            .manifests
            .unwrap_or_default()
            .iter()
            .map(|d| match &d.platform {
                Some(p) => format!("{} for {}/{}", d.digest, p.os, p.architecture),
                None => d.digest.clone(),
            })
            .collect();
        return Err(ArtifactError::Index { manifests });
    }
    Ok(serde_json::from_slice(bytes)?)
}

/// A Wasm artifact in a store: its manifest and the manifest's descriptor.
#[derive(Debug, Clone)]
pub struct StoredArtifact {
    pub descriptor: Descriptor,
    pub manifest: Manifest,
}

/// Store `component` as a Wasm artifact in `store`: the component, a config describing it,
/// and a manifest carrying `annotations`.
pub fn store_component(
    store: &Store,
    component: &[u8],
    name: &str,
    info: &ComponentInfo,
    created: &str,
    annotations: BTreeMap<String, String>,
) -> std::io::Result<StoredArtifact> {
    let (layer_digest, layer_size) = store.put_blob(component)?;
    let config = serde_json::to_vec(&WasmConfig {
        created,
        architecture: "wasm",
        os: "wasip2",
        layer_digests: [&layer_digest],
        component: info,
    })
    .map_err(std::io::Error::other)?;
    let (config_digest, config_size) = store.put_blob(&config)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_MANIFEST.into()),
        config: Descriptor {
            media_type: WASM_CONFIG.into(),
            digest: config_digest,
            size: config_size,
            annotations: None,
            platform: None,
        },
        layers: vec![Descriptor {
            media_type: WASM_LAYER.into(),
            digest: layer_digest,
            size: layer_size,
            annotations: Some(BTreeMap::from([(ANNOTATION_TITLE.into(), format!("{name}.wasm"))])),
            platform: None,
        }],
        annotations: (!annotations.is_empty()).then_some(annotations),
    };
    let bytes = serde_json::to_vec(&manifest).map_err(std::io::Error::other)?;
    let (digest, size) = store.put_blob(&bytes)?;
    Ok(StoredArtifact {
        descriptor: Descriptor {
            media_type: MEDIA_MANIFEST.into(),
            digest,
            size,
            annotations: None,
            platform: None,
        },
        manifest,
    })
}

/// The component layer of a Wasm artifact's manifest, checked to be one.
pub fn component_layer(manifest: &Manifest, limit: u64) -> Result<&Descriptor, ArtifactError> {
    if manifest.config.media_type != WASM_CONFIG {
        return Err(ArtifactError::NotWasm {
            found: manifest.config.media_type.clone(),
        });
    }
    let [layer] = manifest.layers.as_slice() else {
        return Err(ArtifactError::Layers {
            layers: manifest.layers.len(),
        });
    };
    if layer.media_type != WASM_LAYER {
        return Err(ArtifactError::LayerType {
            found: layer.media_type.clone(),
        });
    }
    if layer.size > limit {
        return Err(ArtifactError::TooBig {
            size: layer.size,
            limit,
        });
    }
    Ok(layer)
}

/// What a publish found at the tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// Pushed; the report says what was sent.
    Pushed(PushReport),
    /// The tag already names an artifact of this very component: nothing sent.
    AlreadyThere { digest: String },
}

/// Push the artifact `manifest` (stored in `store`) as `repository:tag`. A tag that names an
/// artifact of the same component is left as it is (publishing is repeatable); one that
/// names anything else is refused unless `mutable`.
pub async fn publish(
    store: &Store,
    artifact: &StoredArtifact,
    registry: &Registry,
    repository: &str,
    tag: &str,
    mutable: bool,
) -> Result<Published, RegistryError> {
    let component = artifact.manifest.layers.first().map(|l| l.digest.as_str());
    if let Some(existing) = registry.manifest_digest(repository, tag).await? {
        let (bytes, _, _) = registry.get_manifest(repository, &existing).await?;
        let there = serde_json::from_slice::<Manifest>(&bytes).ok();
        if there.as_ref().and_then(|m| m.layers.first()).map(|l| l.digest.as_str()) == component {
            return Ok(Published::AlreadyThere { digest: existing });
        }
        if !mutable {
            return Err(RegistryError::TagMoved {
                host: registry.host().to_string(),
                repository: repository.to_string(),
                tag: tag.to_string(),
                existing,
                digest: artifact.descriptor.digest.clone(),
            });
        }
    }
    let progress: Progress = std::sync::Arc::new(|_, _| {});
    push_manifest(
        store,
        &artifact.descriptor,
        &artifact.manifest,
        registry,
        repository,
        tag,
        progress,
    )
    .await
    .map(Published::Pushed)
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{digest} {source}")]
    NotAStep {
        digest: String,
        #[source]
        source: ArtifactError,
    },
    #[error("{digest} is not in the step cache, and the run is offline")]
    Offline { digest: String },
    #[error("step cache: {0}")]
    Cache(#[source] std::io::Error),
}

/// Manifests are a few hundred bytes; a larger one is not read.
const MANIFEST_LIMIT: u64 = super::registry::MANIFEST_LIMIT as u64;

/// The component of the artifact whose manifest is `digest`, if `store` holds all of it
/// intact. Every blob read back is checked against its digest (a cache is untrusted input).
pub fn cached_component(store: &Store, digest: &str, limit: u64) -> Result<Option<Vec<u8>>, FetchError> {
    let Some(manifest) = cached_manifest(store, digest, limit)? else {
        return Ok(None);
    };
    read_checked(store, &manifest.layers[0].digest, limit)
}

/// The manifest of the artifact `digest`, if `store` holds it intact.
pub fn cached_manifest(store: &Store, digest: &str, limit: u64) -> Result<Option<Manifest>, FetchError> {
    match read_checked(store, digest, MANIFEST_LIMIT)? {
        Some(bytes) => step_manifest(&bytes, digest, limit).map(Some),
        None => Ok(None),
    }
}

/// Copy the artifact `digest` (manifest, config, component), checked, from one store to
/// another: a step cache filled from a layout carried across an air gap.
pub fn copy_artifact(from: &Store, to: &Store, digest: &str, limit: u64) -> Result<(), FetchError> {
    let missing = || FetchError::Offline { digest: digest.into() };
    let manifest_bytes = read_checked(from, digest, MANIFEST_LIMIT)?.ok_or_else(missing)?;
    let manifest = step_manifest(&manifest_bytes, digest, limit)?;
    for blob in [&manifest.config, &manifest.layers[0]] {
        let bytes = read_checked(from, &blob.digest, limit)?.ok_or_else(missing)?;
        to.put_blob(&bytes).map_err(FetchError::Cache)?;
    }
    to.put_blob(&manifest_bytes).map_err(FetchError::Cache)?;
    Ok(())
}

/// Name the artifact `digest` in `store`'s index (`REPO:TAG`), so OCI tools list it.
pub fn name_artifact(store: &Store, name: &str, digest: &str) -> Result<(), FetchError> {
    let bytes =
        read_checked(store, digest, MANIFEST_LIMIT)?.ok_or_else(|| FetchError::Offline { digest: digest.into() })?;
    let descriptor = Descriptor {
        media_type: MEDIA_MANIFEST.into(),
        digest: digest.into(),
        size: bytes.len() as u64,
        annotations: None,
        platform: None,
    };
    store.tag(name, &descriptor).map_err(FetchError::Cache)
}

/// The manifest `digest` in `bytes`, checked to be a Wasm component's within `limit`.
fn step_manifest(bytes: &[u8], digest: &str, limit: u64) -> Result<Manifest, FetchError> {
    let not_a_step = |source| FetchError::NotAStep {
        digest: digest.into(),
        source,
    };
    let manifest = parse_manifest(bytes).map_err(not_a_step)?;
    component_layer(&manifest, limit).map_err(not_a_step)?;
    Ok(manifest)
}

/// A blob's bytes if the store has it and they hash to `digest`; a damaged blob is removed.
fn read_checked(store: &Store, digest: &str, limit: u64) -> Result<Option<Vec<u8>>, FetchError> {
    store.read_verified(digest, limit).map_err(FetchError::Cache)
}

/// The component of the artifact `digest` of `repository`: from `store` when it holds it,
/// else fetched from `registry` into it (None: offline).
pub async fn fetch_component(
    store: &Store,
    registry: Option<&Registry>,
    repository: &str,
    digest: &str,
    limit: u64,
) -> Result<Vec<u8>, FetchError> {
    if let Some(bytes) = cached_component(store, digest, limit)? {
        return Ok(bytes);
    }
    let Some(registry) = registry else {
        return Err(FetchError::Offline { digest: digest.into() });
    };
    let (bytes, _, _) = registry.get_manifest(repository, digest).await?;
    let manifest = step_manifest(&bytes, digest, limit)?;
    let layer = &manifest.layers[0];
    registry
        .fetch_blob(
            store,
            repository,
            &manifest.config.digest,
            manifest.config.size.min(MANIFEST_LIMIT),
        )
        .await?;
    registry
        .fetch_blob(store, repository, &layer.digest, layer.size)
        .await?;
    store.put_blob(&bytes).map_err(FetchError::Cache)?;
    cached_component(store, digest, limit)?.ok_or_else(|| {
        FetchError::Cache(std::io::Error::other(format!(
            "{digest} was fetched but does not read back"
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(dir: &std::path::Path) -> (Store, StoredArtifact) {
        let store = Store::open(dir).unwrap();
        let artifact = store_component(
            &store,
            b"\0asm\x0d\0\x01\0component",
            "hello",
            &ComponentInfo::default(),
            "2026-11-29T00:00:00Z",
            BTreeMap::from([("org.opencontainers.image.version".into(), "1.0.0".into())]),
        )
        .unwrap();
        (store, artifact)
    }

    #[test]
    fn a_stored_component_reads_back_and_a_damaged_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let (store, artifact) = stored(dir.path());
        let digest = &artifact.descriptor.digest;
        assert_eq!(
            cached_component(&store, digest, 1 << 20).unwrap().as_deref(),
            Some(&b"\0asm\x0d\0\x01\0component"[..])
        );
        // Over the limit: not read.
        assert!(matches!(
            cached_component(&store, digest, 4),
            Err(FetchError::NotAStep {
                source: ArtifactError::TooBig { .. },
                ..
            })
        ));
        let layer = &artifact.manifest.layers[0].digest;
        std::fs::write(store.blob_path(layer).unwrap(), b"tampered").unwrap();
        assert_eq!(cached_component(&store, digest, 1 << 20).unwrap(), None);
        assert!(!store.has_blob(layer), "a damaged blob is removed");
    }

    #[test]
    fn only_one_wasm_layer_under_a_wasm_config_is_a_component() {
        let dir = tempfile::tempdir().unwrap();
        let (_, artifact) = stored(dir.path());
        assert!(component_layer(&artifact.manifest, 1 << 20).is_ok());
        let mut image = artifact.manifest.clone();
        image.config.media_type = crate::MEDIA_CONFIG.into();
        assert!(matches!(
            component_layer(&image, 1 << 20),
            Err(ArtifactError::NotWasm { .. })
        ));
        let mut two = artifact.manifest.clone();
        two.layers.push(two.layers[0].clone());
        assert!(matches!(
            component_layer(&two, 1 << 20),
            Err(ArtifactError::Layers { layers: 2 })
        ));
        let mut tar = artifact.manifest.clone();
        tar.layers[0].media_type = crate::MEDIA_LAYER_GZIP.into();
        assert!(matches!(
            component_layer(&tar, 1 << 20),
            Err(ArtifactError::LayerType { .. })
        ));
    }
}
