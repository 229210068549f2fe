//! The WIT types of `wharf:step/types` and the pipeline language's own (which knows no
//! wasm): a step's `describe()` is read into the pipeline's [`StepInfo`], and its typed
//! parameters go back to the step as WIT values.

use super::bindings::wharf::step::types as wit;
use crate::pipeline::describe::{Capability, CapabilityKind, OutputSpec, ParamSpec, ParamType, StepInfo, Value};

impl From<wit::ParamType> for ParamType {
    fn from(t: wit::ParamType) -> Self {
        match t {
            wit::ParamType::Text => ParamType::Text,
            wit::ParamType::Boolean => ParamType::Boolean,
            wit::ParamType::Integer => ParamType::Integer,
            wit::ParamType::Duration => ParamType::Duration,
            wit::ParamType::TextList => ParamType::TextList,
            wit::ParamType::TextMap => ParamType::TextMap,
        }
    }
}

impl From<wit::Value> for Value {
    fn from(v: wit::Value) -> Self {
        match v {
            wit::Value::Text(s) => Value::Text(s),
            wit::Value::Boolean(b) => Value::Boolean(b),
            wit::Value::Integer(i) => Value::Integer(i),
            wit::Value::DurationMs(ms) => Value::DurationMs(ms),
            wit::Value::TextList(l) => Value::TextList(l),
            wit::Value::TextMap(m) => Value::TextMap(m),
        }
    }
}

impl From<Value> for wit::Value {
    fn from(v: Value) -> Self {
        match v {
            Value::Text(s) => wit::Value::Text(s),
            Value::Boolean(b) => wit::Value::Boolean(b),
            Value::Integer(i) => wit::Value::Integer(i),
            Value::DurationMs(ms) => wit::Value::DurationMs(ms),
            Value::TextList(l) => wit::Value::TextList(l),
            Value::TextMap(m) => wit::Value::TextMap(m),
        }
    }
}

impl From<wit::CapabilityKind> for CapabilityKind {
    fn from(k: wit::CapabilityKind) -> Self {
        match k {
            wit::CapabilityKind::Process => CapabilityKind::Process,
            wit::CapabilityKind::Source => CapabilityKind::Source,
            wit::CapabilityKind::Secrets => CapabilityKind::Secrets,
            wit::CapabilityKind::Http => CapabilityKind::Http,
            wit::CapabilityKind::Images => CapabilityKind::Images,
            wit::CapabilityKind::Registry => CapabilityKind::Registry,
            wit::CapabilityKind::Deploy => CapabilityKind::Deploy,
            wit::CapabilityKind::WorkspaceRead => CapabilityKind::WorkspaceRead,
            wit::CapabilityKind::WorkspaceWrite => CapabilityKind::WorkspaceWrite,
        }
    }
}

impl From<wit::StepInfo> for StepInfo {
    fn from(info: wit::StepInfo) -> Self {
        StepInfo {
            name: info.name,
            version: info.version,
            summary: info.summary,
            params: info
                .params
                .into_iter()
                .map(|p| ParamSpec {
                    name: p.name,
                    type_: p.type_.into(),
                    description: p.description,
                    required: p.required,
                    default: p.default.map(Value::from),
                })
                .collect(),
            outputs: info
                .outputs
                .into_iter()
                .map(|o| OutputSpec {
                    name: o.name,
                    description: o.description,
                })
                .collect(),
            capabilities: info
                .capabilities
                .into_iter()
                .map(|c| Capability {
                    kind: c.kind.into(),
                    reason: c.reason,
                    scope_param: c.scope_param,
                })
                .collect(),
        }
    }
}
