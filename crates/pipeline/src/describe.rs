//! What a step says about itself (its `describe()`), as the pipeline language needs it:
//! parameters with types and defaults, outputs, and the capabilities it uses. The same
//! shapes as the WIT `step-info`, without the wasm engine; the host converts between them.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParamType {
    Text,
    Boolean,
    Integer,
    /// `90s`, `5m`, `1h30m` in the pipeline; milliseconds for the step.
    Duration,
    TextList,
    TextMap,
}

/// A typed parameter value. Serialized as a run's journal keeps it (`{"Text": "x"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    Text(String),
    Boolean(bool),
    Integer(i64),
    DurationMs(u64),
    TextList(Vec<String>),
    TextMap(Vec<(String, String)>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamSpec {
    pub name: String,
    pub type_: ParamType,
    pub description: String,
    pub required: bool,
    pub default: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputSpec {
    pub name: String,
    pub description: String,
}

/// A host interface a step calls; the pipeline grants it in `allow:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CapabilityKind {
    Process,
    Source,
    Secrets,
    Http,
    Images,
    Registry,
    Deploy,
    WorkspaceRead,
    WorkspaceWrite,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capability {
    pub kind: CapabilityKind,
    /// What the step uses it for, shown by `wharf inspect`.
    pub reason: String,
    /// The parameter whose value names the resource, so a grant can be derived from it.
    pub scope_param: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepInfo {
    pub name: String,
    pub version: String,
    pub summary: String,
    pub params: Vec<ParamSpec>,
    pub outputs: Vec<OutputSpec>,
    pub capabilities: Vec<Capability>,
}
