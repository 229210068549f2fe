//! A run's annotations as one SARIF 2.1.0 log (`--sarif FILE`), the format Jenkins'
//! Warnings Next Generation plugin, GitHub code scanning and most linters share.
//! <https://docs.oasis-open.org/sarif/sarif/v2.1.0/sarif-v2.1.0.html>
//!
//! One SARIF run per wharf run, the tool `wharf`, and each step that annotated as a
//! *rule* of it (id = the step's id): Warnings NG groups and filters findings by rule (its
//! "Type" column), and code scanning lists alerts by rule with the rule's description;
//! tool components (`extensions`) would say that each step is a separate tool, which both
//! show less of. Locations are workspace-relative URIs under the base `%SRCROOT%` (the
//! name code scanning and Warnings NG resolve against the checkout), which
//! `originalUriBaseIds` maps to the workspace. Step text arrives bounded by the step's log
//! limit and is escaped by the JSON writer.

use crate::events::{Event, Level, Outcome, Sink};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Mutex;

/// What a URI path keeps as it is (RFC 3986 unreserved characters and `/`).
const PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// The base every location is relative to.
pub const SRCROOT: &str = "%SRCROOT%";

pub struct Sarif {
    path: PathBuf,
    workspace: Option<PathBuf>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    run_id: String,
    pipeline: String,
    /// Steps as rules, in the order they first annotated: (id, what it uses).
    rules: Vec<(String, String)>,
    /// What each step uses, from its start.
    uses: Vec<(String, String)>,
    results: Vec<Value>,
}

impl Sarif {
    /// `workspace`: the directory annotations' files are relative to, for
    /// `originalUriBaseIds`.
    pub fn new(path: PathBuf, workspace: Option<PathBuf>) -> Self {
        Self {
            path,
            workspace,
            state: Mutex::new(State::default()),
        }
    }

    fn log(&self, state: &State, outcome: Outcome) -> Value {
        let rules: Vec<Value> = state
            .rules
            .iter()
            .map(|(id, uses)| {
                json!({
                    "id": id,
                    "name": id,
                    "shortDescription": { "text": format!("wharf step `{id}` ({uses})") },
                    "properties": { "wharf.uses": uses },
                })
            })
            .collect();
        let mut run = json!({
            "tool": { "driver": {
                "name": "wharf",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "automationDetails": { "id": format!("wharf/{}/{}", state.pipeline, state.run_id) },
            "invocations": [{ "executionSuccessful": outcome != Outcome::Failure }],
            "columnKind": "unicodeCodePoints",
            "results": state.results,
            "properties": { "wharf.run": state.run_id, "wharf.pipeline": state.pipeline },
        });
        if let Some(dir) = &self.workspace {
            let mut uri = format!("file://{}", utf8_percent_encode(&dir.to_string_lossy(), PATH));
            if !uri.ends_with('/') {
                uri.push('/');
            }
            run["originalUriBaseIds"] = json!({ SRCROOT: { "uri": uri } });
        }
        json!({
            "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
            "version": "2.1.0",
            "runs": [run],
        })
    }

    fn write(&self, outcome: Outcome) {
        let state = self.state.lock().unwrap();
        let text = serde_json::to_string_pretty(&self.log(&state, outcome)).expect("json values serialize");
        if let Err(e) = std::fs::write(&self.path, text) {
            eprintln!("warning: cannot write the SARIF log {}: {e}", self.path.display());
        }
    }
}

impl Sink for Sarif {
    fn event(&self, event: &Event) {
        match event {
            Event::RunStarted { run_id, pipeline, .. } => {
                let mut state = self.state.lock().unwrap();
                state.run_id = run_id.clone();
                state.pipeline = pipeline.clone();
            }
            Event::StepStarted { step, uses, .. } => {
                let mut state = self.state.lock().unwrap();
                if !state.uses.iter().any(|(id, _)| id == step) {
                    state.uses.push((step.clone(), uses.clone()));
                }
            }
            Event::Annotation {
                step,
                level,
                title,
                message,
                file,
                line,
                column,
            } => {
                let mut state = self.state.lock().unwrap();
                let rule_index = match state.rules.iter().position(|(id, _)| id == step) {
                    Some(i) => i,
                    None => {
                        let uses = state
                            .uses
                            .iter()
                            .find(|(id, _)| id == step)
                            .map(|(_, uses)| uses.clone())
                            .unwrap_or_default();
                        state.rules.push((step.clone(), uses));
                        state.rules.len() - 1
                    }
                };
                let text = match title {
                    Some(t) => format!("{t}: {message}"),
                    None => message.clone(),
                };
                let mut result = json!({
                    "ruleId": step,
                    "ruleIndex": rule_index,
                    "level": match level {
                        Level::Error => "error",
                        Level::Warn => "warning",
                        _ => "note",
                    },
                    "message": { "text": text },
                    "properties": { "wharf.step": step, "wharf.run": state.run_id },
                });
                if let Some(file) = file {
                    let mut region = serde_json::Map::new();
                    if let Some(line) = line.filter(|l| *l > 0) {
                        region.insert("startLine".into(), json!(line));
                        if let Some(column) = column.filter(|c| *c > 0) {
                            region.insert("startColumn".into(), json!(column));
                        }
                    }
                    let mut physical = json!({
                        "artifactLocation": {
                            "uri": utf8_percent_encode(file, PATH).to_string(),
                            "uriBaseId": SRCROOT,
                        },
                    });
                    if !region.is_empty() {
                        physical["region"] = Value::Object(region);
                    }
                    result["locations"] = json!([{ "physicalLocation": physical }]);
                }
                state.results.push(result);
            }
            Event::RunFinished { outcome, .. } => self.write(*outcome),
            _ => {}
        }
    }
}
