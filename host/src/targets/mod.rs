//! Deploy targets: where instances run. Each target is one module behind [`Target`]; the
//! state machine and locking live in [`crate::deploy`], which uses the targets (never the
//! other way round), and are the same on every target. A target with a scheduler of its own (`swarm`) also offers [`Rollout`]: it
//! is handed whole specs and replaces the tasks itself, instead of the upgrade step starting
//! and stopping instances one by one.

pub mod docker;
pub mod health;
pub mod local;
pub mod spec;
pub mod swarm;

use crate::oci::registry::RegistryError;
use docker::DockerTarget;
use local::LocalTarget;
use spec::{Instance, Spec};
use std::path::PathBuf;
use std::time::Duration;
use swarm::SwarmTarget;

/// Why a target could not do what the deploy asked.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("unknown deploy target `{target}`; use `local`, `docker` or `swarm`")]
    UnknownTarget { target: String },
    #[error("instance {instance} {why}")]
    Unhealthy { instance: String, why: String },
    /// The revision cannot run as asked (no entrypoint, not pushed where the target pulls):
    /// the request's mistake.
    #[error("{image} {why}")]
    Unrunnable { image: String, why: String },
    #[error("{image} is not in the local image store")]
    NotInStore { image: String },
    /// An image reference that does not parse.
    #[error("{0}")]
    BadReference(String),
    #[error("{image} cannot run `{path}`: {source}")]
    Entrypoint {
        image: String,
        path: String,
        #[source]
        source: crate::beneath::Error,
    },
    #[error("no Docker engine reachable ({detail}); start dockerd, or set DOCKER_HOST, or deploy with target `local`")]
    NoEngine { detail: String },
    /// A target that cannot be used as it is set up (an engine that is not a swarm manager).
    #[error("{0}")]
    Unavailable(String),
    /// A per-instance call on a target whose scheduler places and replaces tasks itself.
    #[error(
        "target `{target}` places and replaces tasks itself: hand it the whole rollout (deploy `rollout`, as builtin:upgrade does)"
    )]
    Scheduled { target: &'static str },
    /// The scheduler did not finish a rollout: it paused, rejected a task, or ran out of time.
    #[error("{0}")]
    Unsettled(String),
    #[error("Docker engine: {what}: {source}")]
    Engine {
        what: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The host failed at I/O: an image store, a log file, a process to start.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl TargetError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| TargetError::Io { context, source }
    }
}

/// A machine a target can place instances on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub labels: Vec<(String, String)>,
}

/// Paths every target may use.
#[derive(Debug, Clone)]
pub struct TargetPaths {
    /// `.wharf/state`.
    pub state: PathBuf,
    /// `.wharf/oci`, the local image store.
    pub store: PathBuf,
}

#[async_trait::async_trait]
pub trait Target: Send + Sync {
    fn name(&self) -> &'static str;

    /// The hosts instances can go to, with their labels (placement rules match these).
    async fn hosts(&self) -> Result<Vec<Host>, TargetError>;

    /// Make the revision's image available (pull it, unpack it) before any instance starts.
    async fn prepare(&self, spec: &Spec) -> Result<(), TargetError>;

    /// Start a new instance of `spec` on `host`.
    async fn start(&self, spec: &Spec, id: &str, host: &Host) -> Result<Instance, TargetError>;

    /// Stop an instance, keeping it for a rollback.
    async fn stop(&self, instance: &Instance) -> Result<(), TargetError>;

    /// Start a stopped instance again (rollback); its address may change.
    async fn resume(&self, spec: &Spec, instance: &Instance) -> Result<Instance, TargetError>;

    /// Stop and delete an instance for good.
    async fn remove(&self, instance: &Instance) -> Result<(), TargetError>;

    async fn is_running(&self, instance: &Instance) -> bool;

    /// The instance `starting` stands for, if the target started it: wharf saves an instance
    /// as starting before it starts one, so a wharf killed before it saved what it started
    /// leaves only that, and the next deploy, rollback or removal asks here. None when
    /// nothing was started under its id.
    async fn find(&self, spec: &Spec, starting: &Instance) -> Result<Option<Instance>, TargetError>;

    /// Drop what the target keeps for revisions no service needs any more (an unpacked
    /// root filesystem); `live` are the digests services run or may roll back to.
    async fn retain(&self, _live: &std::collections::BTreeSet<String>) {}

    /// The target's own scheduler, when it rolls services out itself.
    fn rollout(&self) -> Option<&dyn Rollout> {
        None
    }

    /// Wait until the instance answers 2xx on `path` (HTTP from the host, by default).
    async fn wait_healthy(&self, instance: &Instance, path: &str, timeout: Duration) -> Result<(), TargetError> {
        health::wait(self, instance, path, timeout).await
    }
}

/// A target whose scheduler places and replaces a service's tasks (Swarm). wharf hands it
/// whole specs and keeps its own two-phase state on top; a rollback is another `apply`, of
/// the recorded previous spec.
#[async_trait::async_trait]
pub trait Rollout: Send + Sync {
    /// Create the service, or update it to `spec` in the batches of `spec.rollout`, and wait
    /// until the scheduler has settled: every task it can place runs `spec`'s digest. Returns
    /// the tasks; those that could not be placed are among them, not running.
    async fn apply(&self, spec: &Spec) -> Result<Vec<Instance>, TargetError>;

    /// The service's tasks: those meant to run, and those last seen running on a node that
    /// is now lost. None for a service the scheduler does not know.
    async fn tasks(&self, service: &str) -> Result<Vec<Instance>, TargetError>;

    /// Delete the service and its tasks.
    async fn delete(&self, service: &str) -> Result<(), TargetError>;
}

/// The targets a deployer can use, by name.
#[async_trait::async_trait]
pub trait Targets: Send + Sync {
    async fn get(&self, name: &str) -> Result<&dyn Target, TargetError>;
}

/// wharf's targets: `local` processes, and a Docker engine or a Swarm manager (both at
/// `DOCKER_HOST`) connected on first use.
pub struct StandardTargets {
    paths: TargetPaths,
    local: LocalTarget,
    docker: Connection<DockerTarget>,
    swarm: Connection<SwarmTarget>,
}

/// A target connected on first use; a failure to connect is kept and repeated.
type Connection<T> = tokio::sync::OnceCell<Result<T, TargetError>>;

async fn connected<T, F>(cell: &Connection<T>, connect: F) -> Result<&T, TargetError>
where
    F: Future<Output = Result<T, TargetError>>,
{
    match cell.get_or_init(|| connect).await {
        Ok(target) => Ok(target),
        Err(TargetError::NoEngine { detail }) => Err(TargetError::NoEngine { detail: detail.clone() }),
        Err(other) => Err(TargetError::Unavailable(other.to_string())),
    }
}

impl StandardTargets {
    pub fn new(paths: TargetPaths) -> Self {
        Self {
            local: LocalTarget::new(paths.clone()),
            paths,
            docker: Connection::new(),
            swarm: Connection::new(),
        }
    }
}

#[async_trait::async_trait]
impl Targets for StandardTargets {
    async fn get(&self, name: &str) -> Result<&dyn Target, TargetError> {
        match name {
            "local" => Ok(&self.local),
            "docker" => Ok(connected(&self.docker, DockerTarget::connect(self.paths.clone())).await?),
            "swarm" => Ok(connected(&self.swarm, SwarmTarget::connect()).await?),
            other => Err(TargetError::UnknownTarget {
                target: other.to_string(),
            }),
        }
    }
}

/// Host labels from `WHARF_HOST_LABELS=storage=ssd,zone=a`, for targets whose host cannot
/// carry labels of its own.
pub fn labels_from_env() -> Vec<(String, String)> {
    std::env::var("WHARF_HOST_LABELS")
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
