//! What a target runs: a service's revision and how it runs ([`Spec`]), and the instances
//! it started ([`Instance`]). The deploy state machine records them; targets only read a
//! spec and report instances, so this vocabulary lives with the targets.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    /// `REGISTRY/REPO:TAG@sha256:...` (or `REPO:TAG@sha256:...` in the local store).
    pub image: String,
    pub digest: String,
    pub version: String,
}

/// How a revision runs: everything needed to start (or restart, on rollback) its instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    pub service: String,
    pub target: String,
    pub revision: Revision,
    pub replicas: u32,
    pub port: u16,
    pub health_path: String,
    pub env: Vec<(String, String)>,
    pub labels: Vec<(String, String)>,
    pub one_per_host: bool,
    pub host_labels: Vec<(String, String)>,
    /// How a target that schedules services itself replaces the tasks, going forward and,
    /// for a rollback, going back to this spec.
    #[serde(default)]
    pub rollout: RolloutPolicy,
}

/// The batches of a rollout handed to a target's scheduler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutPolicy {
    pub batch_size: u32,
    pub interval_ms: u64,
    pub start_first: bool,
    pub health_timeout_ms: u64,
    /// Run inside each task by the scheduler to check its health; empty: the image's own.
    #[serde(default)]
    pub health_command: Vec<String>,
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        Self {
            batch_size: 1,
            interval_ms: 0,
            start_first: false,
            health_timeout_ms: 30_000,
            health_command: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub digest: String,
    pub version: String,
    /// Where the host reaches it.
    pub address: String,
    pub port: u16,
    pub running: bool,
    /// The host it runs on.
    pub host: String,
    /// Target-specific: a process id, a container id.
    pub handle: String,
    pub labels: Vec<(String, String)>,
    /// Where its output goes, when the target keeps it in a file.
    #[serde(default)]
    pub log: Option<String>,
    /// What a scheduling target says of it, beyond running or not: a task's state and its
    /// node's (`running on worker-1`, `running on worker-1, node down`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

impl Instance {
    /// An instance as saved before the target starts it: no handle yet.
    pub fn starting(spec: &Spec, id: &str, host: &str) -> Instance {
        Instance {
            id: id.to_string(),
            digest: spec.revision.digest.clone(),
            version: spec.revision.version.clone(),
            address: String::new(),
            port: 0,
            running: false,
            host: host.to_string(),
            handle: String::new(),
            labels: spec.labels.clone(),
            log: None,
            condition: Some("starting".into()),
        }
    }

    /// Saved as starting, and not (yet) known to have started.
    pub fn is_starting(&self) -> bool {
        self.handle.is_empty()
    }
}
