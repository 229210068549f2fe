//! What wharf knows about a service, persisted in `.wharf/state/services/SERVICE.json` so it
//! survives a restart of wharf. Written atomically (temporary file, then rename).

use serde::{Deserialize, Serialize};
use std::path::Path;

/// Largest state file read.
const STATE_LIMIT: u64 = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Absent,
    Active,
    Upgrading,
    Upgraded,
    RollingBack,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Absent => "absent",
            State::Active => "active",
            State::Upgrading => "upgrading",
            State::Upgraded => "upgraded",
            State::RollingBack => "rolling-back",
        }
    }
}

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub service: String,
    pub target: String,
    pub state: State,
    pub current: Option<Spec>,
    pub previous: Option<Spec>,
    pub instances: Vec<Instance>,
    /// The run that last changed the service.
    pub run_id: Option<String>,
    /// The run whose upgrade awaits a decision (state upgrading, upgraded or rolling-back):
    /// only that run, or a person, may confirm or roll it back.
    #[serde(default)]
    pub owner: Option<String>,
    pub updated: String,
}

impl ServiceRecord {
    pub fn new(service: &str, target: &str) -> Self {
        Self {
            service: service.into(),
            target: target.into(),
            state: State::Absent,
            current: None,
            previous: None,
            instances: Vec::new(),
            run_id: None,
            owner: None,
            updated: String::new(),
        }
    }

    pub fn load(dir: &Path, service: &str) -> std::io::Result<Option<ServiceRecord>> {
        let path = dir.join(format!("{service}.json"));
        match crate::bounded::read(&path, STATE_LIMIT) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                std::io::Error::other(format!(
                    "{}: {e}; fix the file or remove it (`wharf remove {service}` needs it)",
                    path.display()
                ))
            }),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        }
    }

    pub fn save(&mut self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        self.updated = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let path = dir.join(format!("{}.json", self.service));
        let tmp = dir.join(format!(".{}.json.tmp{}", self.service, std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        std::fs::rename(tmp, path)
    }

    /// Every service with a state file: each read on its own, so one damaged file does not
    /// hide the others.
    pub fn list(dir: &Path) -> Vec<Result<ServiceRecord, (String, std::io::Error)>> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let service = name.strip_suffix(".json")?;
                (!service.starts_with('.')).then(|| service.to_string())
            })
            .collect();
        names.sort();
        names
            .into_iter()
            .filter_map(|service| match Self::load(dir, &service) {
                Ok(record) => record.map(Ok),
                Err(e) => Some(Err((service, e))),
            })
            .collect()
    }
}
