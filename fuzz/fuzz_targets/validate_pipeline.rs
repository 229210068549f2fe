//! Any text as a pipeline, validated against step descriptions shaped like the built-ins
//! (one typed step with every parameter type and declared outputs, one WASI command): the
//! validator returns or reports, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use wharf_pipeline::describe::{
    Capability, CapabilityKind, OutputSpec, ParamSpec, ParamType, StepInfo, Value,
};
use wharf_pipeline::validate::{StepShape, validate};
use wharf_pipeline::Pipeline;

fn typed() -> StepInfo {
    let param = |name: &str, ty, required, default| ParamSpec {
        name: name.into(),
        type_: ty,
        description: String::new(),
        required,
        default,
    };
    StepInfo {
        name: "fuzz".into(),
        version: "0".into(),
        summary: String::new(),
        params: vec![
            param("program", ParamType::Text, true, None),
            param("args", ParamType::TextList, false, None),
            param("env", ParamType::TextMap, false, None),
            param("count", ParamType::Integer, false, Some(Value::Integer(1))),
            param("flag", ParamType::Boolean, false, Some(Value::Boolean(false))),
            param("wait", ParamType::Duration, false, None),
        ],
        outputs: vec![OutputSpec { name: "out".into(), description: String::new() }],
        capabilities: vec![Capability {
            kind: CapabilityKind::Process,
            reason: String::new(),
            scope_param: Some("program".into()),
        }],
    }
}

fuzz_target!(|text: &str| {
    let Ok(pipeline) = Pipeline::parse(Path::new("fuzz.yml"), text) else { return };
    let shapes: Vec<_> = pipeline
        .steps
        .iter()
        .map(|s| Ok(if s.uses.ends_with(".wasm") { StepShape::Command } else { StepShape::Typed(typed()) }))
        .collect();
    let overrides = vec![("registry".to_string(), "x".to_string())];
    let passed: std::collections::BTreeSet<String> = ["HOME".to_string()].into();
    if let Err(diagnostics) = validate(&pipeline, &shapes, &overrides, &passed) {
        let _ = diagnostics.to_string();
    }
});
