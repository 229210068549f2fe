//! Deploy targets: where instances run. Each target is one module behind [`Target`]; the
//! state machine, locking and health checks live in [`crate::deploy`] and are the same on
//! every target.

pub mod docker;
pub mod local;

use crate::deploy::state::{Instance, Spec};
use crate::engine::bindings::wharf::step::types::StepError;
use std::path::PathBuf;

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
    async fn hosts(&self) -> Result<Vec<Host>, StepError>;

    /// Make the revision's image available (pull it, unpack it) before any instance starts.
    async fn prepare(&self, spec: &Spec) -> Result<(), StepError>;

    /// Start a new instance of `spec` on `host`.
    async fn start(&self, spec: &Spec, id: &str, host: &Host) -> Result<Instance, StepError>;

    /// Stop an instance, keeping it for a rollback.
    async fn stop(&self, instance: &Instance) -> Result<(), StepError>;

    /// Start a stopped instance again (rollback); its address may change.
    async fn resume(&self, spec: &Spec, instance: &Instance) -> Result<Instance, StepError>;

    /// Stop and delete an instance for good.
    async fn remove(&self, instance: &Instance) -> Result<(), StepError>;

    async fn is_running(&self, instance: &Instance) -> bool;
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
