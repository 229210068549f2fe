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

pub use crate::targets::spec::{Instance, Revision, RolloutPolicy, Spec};

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
    /// A canary: the percent of traffic the current revision's instances take while both
    /// revisions run (state upgrading).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<u8>,
    /// Why the upgrade waits for a person (an analysis that could not decide): no run
    /// decides it, `wharf confirm` or `wharf rollback` does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
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
            traffic: None,
            held: None,
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
