//! The `docker` target: instances are containers on a Docker engine, through its API.
//!
//! Images are pulled by digest from the registry they were pushed to, containers carry the
//! labels `wharf.service`, `wharf.version`, `wharf.revision` and `wharf.instance`, and each
//! publishes its port on a host port the engine picks on 127.0.0.1, so replicas never collide.
//! Stopped containers are kept until confirm, so a rollback starts the previous digest again.
//!
//! Placement on one engine: the engine is one host. Host labels are the engine's own
//! (`dockerd --label`). `one-per-host` therefore allows one replica, and a start-first
//! rolling upgrade of such a service needs `order: stop-first`. Spreading across several
//! hosts needs several engines (a scheduler), which this target does not drive.

use super::spec::{Instance, Spec};
use super::{Host, Target, TargetError, TargetPaths};
use crate::oci::reference::ImageRef;
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, RemoveContainerOptions, StartContainerOptions,
    StopContainerOptions,
};
use futures_util::StreamExt;
use std::collections::HashMap;

pub struct DockerTarget {
    docker: Docker,
}

pub(super) fn engine_error(what: &str, source: bollard::errors::Error) -> TargetError {
    TargetError::Engine {
        what: what.to_string(),
        source,
    }
}

/// The engine at `DOCKER_HOST` (`unix://` or `tcp://`), or the local socket, with an API
/// version both sides speak.
pub(super) async fn connect_engine() -> Result<Docker, TargetError> {
    let unreachable = |e: bollard::errors::Error| {
        let detail = match e {
            bollard::errors::Error::UnsupportedURISchemeError { uri } => format!(
                "DOCKER_HOST={uri} is not a scheme wharf speaks: use unix:// (for a remote engine, a socket forwarded over SSH: ssh -NL /tmp/engine.sock:/var/run/docker.sock HOST) or tcp://"
            ),
            other => other.to_string(),
        };
        TargetError::NoEngine { detail }
    };
    let docker = Docker::connect_with_defaults().map_err(unreachable)?;
    let docker = docker.negotiate_version().await.map_err(unreachable)?;
    docker.ping().await.map_err(unreachable)?;
    Ok(docker)
}

impl DockerTarget {
    /// Connect to the engine at `DOCKER_HOST` or the local socket, agreeing on an API version.
    pub async fn connect(_paths: TargetPaths) -> Result<DockerTarget, TargetError> {
        Ok(DockerTarget {
            docker: connect_engine().await?,
        })
    }

    /// The registry reference the engine pulls: `REGISTRY/REPO@sha256:...`.
    pub(super) fn pull_reference(spec: &Spec) -> Result<String, TargetError> {
        let r = ImageRef::parse(&spec.revision.image).map_err(TargetError::BadReference)?;
        let Some(registry) = r.registry else {
            return Err(TargetError::Unrunnable {
                image: spec.revision.image.clone(),
                why: "is only in the local store, and Docker engines (targets `docker` and `swarm`) pull images from a registry; push it first (set the push step's `registry`)".into(),
            });
        };
        Ok(format!("{registry}/{}@{}", r.repository, spec.revision.digest))
    }

    async fn inspect(&self, id: &str) -> Result<(bool, u16), TargetError> {
        let (_, running, port) = self.inspect_named(id).await?;
        Ok((running, port))
    }

    /// A container by id or name: its id, whether it runs, its published port.
    async fn inspect_named(&self, name: &str) -> Result<(String, bool, u16), TargetError> {
        let info = self
            .docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
            .map_err(|e| engine_error("inspect", e))?;
        let id = info.id.clone().unwrap_or_else(|| name.to_string());
        let running = info.state.and_then(|s| s.running).unwrap_or(false);
        let port = info
            .network_settings
            .and_then(|n| n.ports)
            .and_then(|ports| {
                ports
                    .into_values()
                    .flatten()
                    .flatten()
                    .find_map(|b| b.host_port?.parse().ok())
            })
            .unwrap_or(0);
        Ok((id, running, port))
    }

    /// The name of instance `id` of `spec`: the engine holds one container of a name, so
    /// the name finds an instance no record names yet.
    fn container_name(spec: &Spec, id: &str) -> String {
        let short: String = spec
            .revision
            .digest
            .trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect();
        format!("wharf-{id}-{short}")
    }

    async fn start_container(&self, id: &str) -> Result<u16, TargetError> {
        self.docker
            .start_container(id, None::<StartContainerOptions>)
            .await
            .map_err(|e| engine_error("start", e))?;
        let (_, port) = self.inspect(id).await?;
        Ok(port)
    }
}

#[async_trait::async_trait]
impl Target for DockerTarget {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn hosts(&self) -> Result<Vec<Host>, TargetError> {
        let info = self.docker.info().await.map_err(|e| engine_error("info", e))?;
        let labels = info
            .labels
            .unwrap_or_default()
            .iter()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok(vec![Host {
            name: info.name.unwrap_or_else(|| "docker".into()),
            labels,
        }])
    }

    async fn prepare(&self, spec: &Spec) -> Result<(), TargetError> {
        let reference = Self::pull_reference(spec)?;
        let options = CreateImageOptions {
            from_image: Some(reference.clone()),
            ..Default::default()
        };
        let mut pull = self.docker.create_image(Some(options), None, None);
        while let Some(progress) = pull.next().await {
            progress.map_err(|e| engine_error(&format!("pull {reference}"), e))?;
        }
        Ok(())
    }

    async fn start(&self, spec: &Spec, id: &str, host: &Host) -> Result<Instance, TargetError> {
        let image = Self::pull_reference(spec)?;
        let port_key = format!("{}/tcp", spec.port);
        let mut labels: HashMap<String, String> = spec.labels.iter().cloned().collect();
        labels.insert("wharf.service".into(), spec.service.clone());
        labels.insert("wharf.version".into(), spec.revision.version.clone());
        labels.insert("wharf.revision".into(), spec.revision.digest.clone());
        labels.insert("wharf.instance".into(), id.to_string());
        let body = ContainerCreateBody {
            image: Some(image),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(labels),
            exposed_ports: Some(vec![port_key.clone()]),
            host_config: Some(HostConfig {
                port_bindings: Some(HashMap::from([(
                    port_key,
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some(String::new()),
                    }]),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let name = Self::container_name(spec, id);
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(|e| engine_error("create container", e))?;
        let port = match self.start_container(&created.id).await {
            Ok(port) => port,
            Err(e) => {
                // Not recorded anywhere yet: remove it, or its name blocks the next try.
                let remove = RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                };
                let _ = self.docker.remove_container(&created.id, Some(remove)).await;
                return Err(e);
            }
        };
        Ok(Instance {
            id: id.to_string(),
            digest: spec.revision.digest.clone(),
            version: spec.revision.version.clone(),
            address: "127.0.0.1".into(),
            port,
            running: true,
            host: host.name.clone(),
            handle: created.id,
            labels: spec.labels.clone(),
            log: None,
            condition: None,
        })
    }

    async fn stop(&self, instance: &Instance) -> Result<(), TargetError> {
        let options = StopContainerOptions {
            t: Some(5),
            ..Default::default()
        };
        match self.docker.stop_container(&instance.handle, Some(options)).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304 | 404, ..
            }) => Ok(()),
            Err(e) => Err(engine_error("stop", e)),
        }
    }

    async fn resume(&self, _spec: &Spec, instance: &Instance) -> Result<Instance, TargetError> {
        let port = self.start_container(&instance.handle).await?;
        Ok(Instance {
            port,
            running: true,
            ..instance.clone()
        })
    }

    async fn remove(&self, instance: &Instance) -> Result<(), TargetError> {
        let options = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        match self.docker.remove_container(&instance.handle, Some(options)).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            Err(e) => Err(engine_error("remove", e)),
        }
    }

    async fn is_running(&self, instance: &Instance) -> bool {
        self.inspect(&instance.handle)
            .await
            .map(|(running, _)| running)
            .unwrap_or(false)
    }

    async fn find(&self, spec: &Spec, starting: &Instance) -> Result<Option<Instance>, TargetError> {
        match self.inspect_named(&Self::container_name(spec, &starting.id)).await {
            Ok((handle, running, port)) => Ok(Some(Instance {
                handle,
                running,
                port,
                address: "127.0.0.1".into(),
                condition: None,
                ..starting.clone()
            })),
            Err(TargetError::Engine {
                source: bollard::errors::Error::DockerResponseServerError { status_code: 404, .. },
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
