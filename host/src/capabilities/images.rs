//! `images`: OCI images assembled in the host into the workspace's image store
//! (`.wharf/oci/`): a gzip layer streamed from workspace files, on top of an optional base
//! image, with a config carrying entrypoint, cmd, env, ports and labels. `docker-build` is
//! the alternative for a Dockerfile on a Docker engine; its result lands in the same store.

use super::bindings::wharf::step::images::{AssembleRequest, DockerBuildRequest, Host, Image};
use super::bindings::wharf::step::types::{ErrorKind, StepError};
use super::{CallResult, StepCall, StepScope, step_error};
use crate::events::{Event, Level};
use crate::oci::layer::{self, FileMapping};
use crate::oci::layout::{Store, StoredImage};
use crate::oci::reference::ImageRef;
use crate::oci::registry::{self, Credentials, Registry};
use crate::oci::{
    ContainerConfig, DOCKER_LAYER_GZIP, Descriptor, Hashing, ImageConfig, MEDIA_CONFIG, MEDIA_LAYER_GZIP,
    MEDIA_MANIFEST, Manifest, RootFs,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const IMAGES: &str = "wharf:step/images";

/// `images` needs nothing but the step's call context.
impl Host for &StepCall {
    async fn assemble(&mut self, request: AssembleRequest) -> CallResult<Image> {
        let call = *self;
        call.taped(IMAGES, "assemble", &request, async {
            call.grants.check_images()?;
            for f in &request.files {
                call.grants.check_path(&f.source, false)?;
            }
            if let Some(Ok(ImageRef {
                registry: Some(host),
                repository,
                ..
            })) = request.base.as_deref().map(ImageRef::parse)
            {
                call.grants.check_registry(&host, &repository)?;
            }
            assemble(&call.scope, request.clone()).await
        })
        .await
    }

    async fn docker_build(&mut self, request: DockerBuildRequest) -> CallResult<Image> {
        let call = *self;
        call.taped(IMAGES, "docker-build", &request, async {
            call.grants.check_images()?;
            call.grants.check_path(&request.context, false)?;
            docker_build(&call.scope, request.clone()).await
        })
        .await
    }

    async fn inspect(&mut self, reference: String) -> CallResult<Image> {
        let call = *self;
        call.taped(IMAGES, "inspect", &reference, async {
            call.grants.check_images()?;
            inspect(&call.scope.workspace, &reference)
        })
        .await
    }
}

fn permanent(message: String) -> StepError {
    step_error(ErrorKind::Permanent, message)
}

pub fn store_dir(workspace: &Path) -> PathBuf {
    workspace.join(".wharf/oci")
}

pub fn open_store(workspace: &Path) -> Result<Store, StepError> {
    let dir = store_dir(workspace);
    Store::open(&dir).map_err(|e| super::io_failure(format_args!("image store {}", dir.display()), &e))
}

fn image_of(name: &str, stored: &StoredImage) -> Image {
    Image {
        reference: name.to_string(),
        digest: stored.manifest_descriptor.digest.clone(),
        config_digest: stored.manifest.config.digest.clone(),
        layers: stored.manifest.layers.len() as u32,
        size: stored.manifest.layers.iter().map(|l| l.size).sum(),
    }
}

pub fn inspect(workspace: &Path, reference: &str) -> Result<Image, StepError> {
    let r = ImageRef::parse(reference).map_err(|e| step_error(ErrorKind::InvalidInput, e))?;
    let store = open_store(workspace)?;
    let name = r.local_name();
    let stored = store
        .resolve(r.tag.as_ref().map(|_| name.as_str()), r.digest.as_deref())
        .map_err(|e| permanent(e.to_string()))?
        .ok_or_else(|| {
            step_error(
                ErrorKind::InvalidInput,
                format!("{reference} is not in the image store {}", store.root().display()),
            )
        })?;
    Ok(image_of(&name, &stored))
}

/// A workspace path resolved beneath the workspace: a link planted by an earlier step must
/// not carry host files into an image or a build context.
fn inside_workspace(workspace: &Path, relative: &str) -> Result<PathBuf, StepError> {
    crate::beneath::existing(workspace, relative).map_err(|e| match e {
        crate::beneath::Error::NotFound { .. } => step_error(
            ErrorKind::InvalidInput,
            format!("`{relative}` does not exist in the workspace (did the build command produce it?)"),
        ),
        other => other.into(),
    })
}

fn check_name(repository: &str, tag: &str) -> Result<String, StepError> {
    let name = format!("{repository}:{tag}");
    let parsed = ImageRef::parse(&name).map_err(|e| step_error(ErrorKind::InvalidInput, e))?;
    if parsed.registry.is_some() || parsed.digest.is_some() {
        return Err(step_error(
            ErrorKind::InvalidInput,
            format!("`{repository}` must be a repository name, without a registry"),
        ));
    }
    Ok(name)
}

/// The `GOARCH` name of this machine, as image configs spell it.
fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

async fn base_image(store: &Store, base: &str) -> Result<StoredImage, StepError> {
    let r = ImageRef::parse(base).map_err(|e| step_error(ErrorKind::InvalidInput, e))?;
    match &r.registry {
        Some(host) => {
            let registry = Registry::new(host, Credentials::default())?;
            let reference = r.digest.clone().or(r.tag.clone()).unwrap_or_else(|| "latest".into());
            Ok(registry::pull(store, &registry, &r.repository, &reference, Some(&r.to_string())).await?)
        }
        None => store
            .resolve(Some(&r.local_name()), r.digest.as_deref())
            .map_err(|e| permanent(e.to_string()))?
            .ok_or_else(|| {
                step_error(
                    ErrorKind::InvalidInput,
                    format!("base image {base} is not in the image store; give its registry"),
                )
            }),
    }
}

pub async fn assemble(scope: &StepScope, req: AssembleRequest) -> Result<Image, StepError> {
    let name = check_name(&req.repository, &req.tag)?;
    let store = open_store(&scope.workspace)?;
    let base = match &req.base {
        Some(b) if !b.is_empty() => Some(base_image(&store, b).await?),
        _ => None,
    };
    let mut files = Vec::new();
    for f in &req.files {
        layer::image_path(&f.target).map_err(|e| step_error(ErrorKind::InvalidInput, e.to_string()))?;
        let source = inside_workspace(&scope.workspace, &f.source)?;
        files.push(FileMapping {
            source,
            target: f.target.clone(),
        });
    }
    let store_root = store.root().to_path_buf();
    let root = store_root.clone();
    let layer = tokio::task::spawn_blocking(move || layer::build(&Store::open(&root)?, &files))
        .await
        .map_err(|e| permanent(e.to_string()))?
        .map_err(|e| super::io_failure(format!("building the layer in {}", store_root.display()), &e))?;
    scope.events.emit(Event::Progress {
        step: scope.step_id.clone(),
        label: format!("layer {}", &layer.digest[..19]),
        done: layer.size,
        total: Some(layer.size),
    });

    let (mut config, mut layers) = match &base {
        Some(b) => (b.config.clone(), b.manifest.layers.clone()),
        None => (
            ImageConfig {
                architecture: architecture().into(),
                os: "linux".into(),
                rootfs: RootFs {
                    kind: "layers".into(),
                    diff_ids: Vec::new(),
                },
                ..Default::default()
            },
            Vec::new(),
        ),
    };
    for l in &mut layers {
        if l.media_type == DOCKER_LAYER_GZIP {
            l.media_type = MEDIA_LAYER_GZIP.into();
        }
    }
    merge_config(&mut config.config, &req.config);
    config.created = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(|secs| {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)).to_string()
        });
    config.rootfs.diff_ids.push(layer.diff_id.clone());
    layers.push(Descriptor {
        media_type: MEDIA_LAYER_GZIP.into(),
        digest: layer.digest.clone(),
        size: layer.size,
        annotations: None,
        platform: None,
    });
    let stored = write_image(&store, &name, config, layers)?;
    scope.log(
        Level::Info,
        format!("assembled {name} ({})", stored.manifest_descriptor.digest),
    );
    Ok(image_of(&name, &stored))
}

fn merge_config(c: &mut ContainerConfig, req: &crate::capabilities::bindings::wharf::step::images::ImageConfig) {
    if !req.entrypoint.is_empty() {
        c.entrypoint = Some(req.entrypoint.clone());
        // A new entrypoint drops the base image's arguments unless new ones are given.
        c.cmd = None;
    }
    if !req.cmd.is_empty() {
        c.cmd = Some(req.cmd.clone());
    }
    if !req.env.is_empty() {
        let mut env: Vec<String> = c.env.take().unwrap_or_default();
        for (k, v) in &req.env {
            env.retain(|e| e.split_once('=').map(|(ek, _)| ek) != Some(k.as_str()));
            env.push(format!("{k}={v}"));
        }
        c.env = Some(env);
    }
    if !req.exposed_ports.is_empty() {
        let ports = c.exposed_ports.get_or_insert_with(BTreeMap::new);
        for p in &req.exposed_ports {
            let key = if p.contains('/') { p.clone() } else { format!("{p}/tcp") };
            ports.insert(key, serde_json::json!({}));
        }
    }
    if !req.labels.is_empty() {
        let labels = c.labels.get_or_insert_with(BTreeMap::new);
        labels.extend(req.labels.iter().cloned());
    }
    if let Some(w) = &req.workdir {
        c.working_dir = Some(w.clone());
    }
    if let Some(u) = &req.user {
        c.user = Some(u.clone());
    }
}

/// Write config and manifest blobs and name the image in the index.
fn write_image(
    store: &Store,
    name: &str,
    config: ImageConfig,
    layers: Vec<Descriptor>,
) -> Result<StoredImage, StepError> {
    let io = |e: std::io::Error| permanent(format!("image store: {e}"));
    let config_bytes = serde_json::to_vec(&config).map_err(|e| permanent(e.to_string()))?;
    let (config_digest, config_size) = store.put_blob(&config_bytes).map_err(io)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_MANIFEST.into()),
        config: Descriptor {
            media_type: MEDIA_CONFIG.into(),
            digest: config_digest,
            size: config_size,
            annotations: None,
            platform: None,
        },
        layers,
        annotations: None,
    };
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| permanent(e.to_string()))?;
    let (digest, size) = store.put_blob(&manifest_bytes).map_err(io)?;
    let descriptor = Descriptor {
        media_type: MEDIA_MANIFEST.into(),
        digest,
        size,
        annotations: None,
        platform: None,
    };
    store.tag(name, &descriptor).map_err(io)?;
    Ok(StoredImage {
        manifest_descriptor: descriptor,
        manifest,
        config,
    })
}

/// `docker build` on the engine, then `docker save` converted into the store: each layer
/// tar gzipped into a blob, the engine's config kept.
pub async fn docker_build(scope: &StepScope, req: DockerBuildRequest) -> Result<Image, StepError> {
    use bollard::query_parameters::BuildImageOptions;
    use futures_util::StreamExt;

    let name = check_name(&req.repository, &req.tag)?;
    let context = inside_workspace(&scope.workspace, &req.context)?;
    let docker = bollard::Docker::connect_with_local_defaults()
        .map_err(|e| permanent(format!("no Docker engine for `builder: docker`: {e}")))?
        .negotiate_version()
        .await
        .map_err(|e| permanent(format!("no Docker engine for `builder: docker`: {e}")))?;
    let context_dir = context.clone();
    let tar = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        let mut builder = tar::Builder::new(Vec::new());
        builder.mode(tar::HeaderMode::Deterministic);
        builder.follow_symlinks(false);
        builder.append_dir_all(".", &context_dir)?;
        builder.into_inner()
    })
    .await
    .map_err(|e| permanent(e.to_string()))?
    .map_err(|e| {
        step_error(
            ErrorKind::InvalidInput,
            format!("build context {}: {e}", context.display()),
        )
    })?;
    let engine_tag = format!("wharf-build/{name}");
    let options = BuildImageOptions {
        dockerfile: req.dockerfile.clone().unwrap_or_else(|| "Dockerfile".into()),
        t: Some(engine_tag.clone()),
        rm: true,
        buildargs: Some(req.build_args.iter().cloned().collect()),
        labels: Some(req.labels.iter().cloned().collect()),
        ..Default::default()
    };
    let mut build = docker.build_image(options, None, Some(bollard::body_full(tar.into())));
    while let Some(item) = build.next().await {
        let info = item.map_err(|e| step_error(ErrorKind::Permanent, format!("docker build: {e}")))?;
        if let Some(line) = info.stream {
            let line = line.trim_end();
            if !line.is_empty() {
                scope.line(Level::Info, crate::events::Stream::Stdout, line);
            }
        }
        if let Some(err) = info.error_detail.and_then(|d| d.message) {
            return Err(step_error(ErrorKind::Permanent, format!("docker build: {err}")));
        }
    }
    let saved = tempfile::NamedTempFile::new().map_err(|e| permanent(e.to_string()))?;
    {
        use std::io::Write;
        let mut file = saved.reopen().map_err(|e| permanent(e.to_string()))?;
        let mut export = docker.export_image(&engine_tag);
        while let Some(chunk) = export.next().await {
            let chunk = chunk.map_err(|e| permanent(format!("docker save: {e}")))?;
            file.write_all(&chunk).map_err(|e| permanent(e.to_string()))?;
        }
    }
    let store_root = store_dir(&scope.workspace);
    let archive = saved.path().to_path_buf();
    let target = name.clone();
    let stored =
        tokio::task::spawn_blocking(move || import_docker_archive(&Store::open(&store_root)?, &archive, &target))
            .await
            .map_err(|e| permanent(e.to_string()))?
            .map_err(|e| permanent(format!("importing the docker image: {e}")))?;
    scope.log(
        Level::Info,
        format!("built {name} with docker ({})", stored.manifest_descriptor.digest),
    );
    Ok(image_of(&name, &stored))
}

/// Convert a `docker save` archive into the store.
fn import_docker_archive(store: &Store, archive: &Path, name: &str) -> std::io::Result<StoredImage> {
    use std::io::Read;
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        config: String,
        layers: Vec<String>,
    }
    let unpacked = tempfile::tempdir()?;
    tar::Archive::new(std::fs::File::open(archive)?).unpack(unpacked.path())?;
    let entries: Vec<Entry> = serde_json::from_slice(&std::fs::read(unpacked.path().join("manifest.json"))?)
        .map_err(std::io::Error::other)?;
    let entry = entries
        .into_iter()
        .next()
        .ok_or_else(|| std::io::Error::other("docker save produced no image"))?;
    let mut config: ImageConfig =
        serde_json::from_slice(&std::fs::read(unpacked.path().join(&entry.config))?).map_err(std::io::Error::other)?;
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for layer in &entry.layers {
        let mut source = std::fs::File::open(unpacked.path().join(layer))?;
        let blob = store.blob_writer()?;
        let mut gzip = Hashing::new(flate2::write::GzEncoder::new(blob, flate2::Compression::fast()));
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = source.read(&mut buf)?;
            if n == 0 {
                break;
            }
            std::io::Write::write_all(&mut gzip, &buf[..n])?;
        }
        let (encoder, diff_id, _) = gzip.finish();
        let (digest, size) = encoder.finish()?.finish()?;
        diff_ids.push(diff_id);
        layers.push(Descriptor {
            media_type: MEDIA_LAYER_GZIP.into(),
            digest,
            size,
            annotations: None,
            platform: None,
        });
    }
    config.rootfs = RootFs {
        kind: "layers".into(),
        diff_ids,
    };
    write_image(store, name, config, layers).map_err(|e| std::io::Error::other(e.message))
}
