//! GitHub Actions: each step in a collapsible group, failures and annotations as workflow
//! commands GitHub shows on the right lines, every secret masked before anything could print
//! it, a Markdown job summary, and the steps' outputs as the job step's outputs.
//! <https://docs.github.com/en/actions/reference/workflow-commands-for-github-actions>

use super::untrusted::{github_data, github_line, github_property, markdown_cell};
use super::{Human, Tails, duration};
use crate::events::{Event, Level, Outcome, Sink};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub struct Github {
    lines: Human,
    /// Formats every log line, whatever the verbosity: a group is collapsed anyway.
    all_lines: Human,
    /// `$GITHUB_STEP_SUMMARY`: the job summary, Markdown.
    summary: Option<PathBuf>,
    /// `$GITHUB_OUTPUT`: the job step's outputs.
    outputs: Option<PathBuf>,
    /// The workspace as given, for the run folder's path.
    workspace: Option<String>,
    run: Mutex<RunSoFar>,
}

/// What the summary needs, gathered as the run goes.
#[derive(Default)]
struct RunSoFar {
    pipeline: String,
    run_id: String,
    /// (step, outcome, duration, detail)
    steps: Vec<(String, Outcome, std::time::Duration, Option<String>)>,
    deploys: Vec<String>,
    /// The outputs of the steps that succeeded, as far as `$GITHUB_OUTPUT` takes them.
    outputs: KeptOutputs,
    groups: super::Folding,
}

impl Github {
    /// Writes workflow commands to stdout and, from the environment, the summary and outputs
    /// files. `secrets` are masked at once: GitHub hides them in everything printed after.
    pub fn new(verbose: bool, secrets: &[&str], tails: Arc<Tails>, workspace: Option<String>) -> Self {
        let github = Self {
            lines: Human::new(verbose, false, Box::new(std::io::stdout()))
                .with_tails(tails)
                .with_filter(github_line),
            all_lines: Human::new(true, false, Box::new(std::io::sink())),
            summary: std::env::var_os("GITHUB_STEP_SUMMARY").map(PathBuf::from),
            outputs: std::env::var_os("GITHUB_OUTPUT").map(PathBuf::from),
            workspace,
            run: Mutex::new(RunSoFar::default()),
        };
        for secret in secrets {
            // One command a line: a secret with a line break is masked line by line, as
            // wharf's own redactor masks it; a line too short to mask (a lone `-`) would
            // mask that text in the whole log.
            for line in secret.split('\n').map(|l| l.trim_end_matches('\r')) {
                if line.len() >= crate::events::redact::MIN_MASKED_LEN {
                    github.lines.write_raw(&format!("::add-mask::{}", github_data(line)));
                }
            }
        }
        github
    }

    pub fn set_name_width(&self, width: usize) {
        self.lines.set_name_width(width);
    }

    fn command(&self, name: &str, properties: &[(&str, String)], message: &str) {
        let props: Vec<String> = properties
            .iter()
            .map(|(k, v)| format!("{k}={}", github_property(v)))
            .collect();
        let sep = if props.is_empty() { "" } else { " " };
        self.lines
            .write_raw(&format!("::{name}{sep}{}::{}", props.join(","), github_data(message)));
    }

    fn end_group(&self, close: Option<String>) {
        if close.is_some() {
            self.lines.write_raw("::endgroup::");
        }
    }

    fn write_summary(&self, run: &RunSoFar, outcome: Outcome, took: std::time::Duration, summary: &str) {
        let Some(path) = &self.summary else { return };
        let mut md = String::new();
        let word = if outcome == Outcome::Success {
            "succeeded"
        } else {
            "failed"
        };
        let _ = writeln!(md, "### wharf run {} {word}\n", markdown_cell(&run.pipeline));
        let _ = writeln!(
            md,
            "Run {} · {} · {}\n",
            markdown_cell(&run.run_id),
            duration(took),
            markdown_cell(summary)
        );
        let _ = writeln!(md, "| step | outcome | time | detail |\n|---|---|---|---|");
        for (step, outcome, took, detail) in &run.steps {
            let mark = match outcome {
                Outcome::Success => "✅ success",
                Outcome::Failure => "❌ failure",
                Outcome::Skipped => "⏭ skipped",
            };
            let detail = detail.as_deref().map(|d| d.lines().next().unwrap_or("")).unwrap_or("");
            let _ = writeln!(
                md,
                "| {} | {mark} | {} | {} |",
                markdown_cell(step),
                duration(*took),
                markdown_cell(detail)
            );
        }
        if !run.deploys.is_empty() {
            let _ = writeln!(md, "\n**Deploy**\n");
            for line in &run.deploys {
                let _ = writeln!(md, "- {}", markdown_cell(line));
            }
        }
        append(path, &md, "GITHUB_STEP_SUMMARY");
    }

    /// Each kept step output as `STEP.OUTPUT`, then wharf's own keys, written last so they
    /// win should anything repeat them: `run-id`, `run-dir` (the run folder, for an
    /// artifact), `outcome`, `exit-code`, `outputs` (JSON: step → output → value). Step ids
    /// and output names never hold a `.`, so no two steps' keys meet and none is wharf's.
    fn write_outputs(&self, run: &RunSoFar, outcome: Outcome, exit_code: u8) {
        let Some(path) = &self.outputs else { return };
        let mut all = serde_json::Map::new();
        for (step, name, value) in &run.outputs.kept {
            let of_step = all
                .entry(step.clone())
                .or_insert_with(|| serde_json::Value::Object(Default::default()));
            if let Some(map) = of_step.as_object_mut() {
                map.insert(name.clone(), value.clone().into());
            }
        }
        let mut pairs: Vec<(String, String)> = run
            .outputs
            .kept
            .iter()
            .map(|(step, name, value)| (format!("{step}.{name}"), value.clone()))
            .collect();
        let dir = self.workspace.as_deref().unwrap_or(".");
        pairs.extend([
            ("run-id".to_string(), run.run_id.clone()),
            ("run-dir".to_string(), format!("{dir}/.wharf/runs/{}", run.run_id)),
            ("outcome".to_string(), outcome.as_str().to_string()),
            ("exit-code".to_string(), exit_code.to_string()),
            ("outputs".to_string(), serde_json::Value::Object(all).to_string()),
        ]);
        let mut text = String::new();
        for (name, value) in pairs {
            // The multi-line form, with a delimiter the value cannot contain.
            let mut delimiter = String::from("WHARF_EOF");
            while value.contains(&delimiter) {
                delimiter.push('_');
            }
            let _ = writeln!(text, "{name}<<{delimiter}\n{value}\n{delimiter}");
        }
        append(path, &text, "GITHUB_OUTPUT");
    }
}

impl Sink for Github {
    fn event(&self, event: &Event) {
        let mut run = self.run.lock().unwrap();
        match event {
            Event::RunStarted { run_id, pipeline, .. } => {
                run.run_id = run_id.clone();
                run.pipeline = pipeline.clone();
            }
            Event::StepStarted { step, uses, attempt } => {
                let (close, open) = run.groups.started(step);
                self.end_group(close);
                let again = if *attempt > 1 {
                    format!(" (attempt {attempt})")
                } else {
                    String::new()
                };
                let title = format!("{step} · {uses}{again}");
                if open {
                    self.lines.write_raw(&format!("::group::{}", github_data(&title)));
                } else {
                    self.lines.write(&format!("{title} (beside other steps)"));
                }
            }
            Event::Log { .. } | Event::Cache { .. } => {
                // Inside the step's group, collapsed: all of its output, not only with -v.
                if let Some(text) = self.all_lines.text(event) {
                    self.lines.write(&text);
                }
                self.lines.see(event);
                return;
            }
            Event::Annotation {
                level,
                title,
                message,
                file,
                line,
                column,
                step,
            } => {
                let mut props = Vec::new();
                if let Some(file) = file {
                    props.push(("file", file.clone()));
                }
                if let Some(line) = line {
                    props.push(("line", line.to_string()));
                }
                if let Some(column) = column {
                    props.push(("col", column.to_string()));
                }
                props.push(("title", title.clone().unwrap_or_else(|| format!("wharf: {step}"))));
                self.command(command_for(*level), &props, message);
                self.lines.see(event);
                return;
            }
            Event::StepFinished {
                step,
                outcome,
                duration: took,
                detail,
                outputs,
            } => {
                let close = run.groups.finished(step);
                self.end_group(close);
                run.steps.push((step.clone(), *outcome, *took, detail.clone()));
                if *outcome == Outcome::Success {
                    for (name, value) in outputs {
                        run.outputs.keep(step, name, value);
                    }
                }
                if *outcome == Outcome::Failure {
                    let message = detail.clone().unwrap_or_else(|| "failed".into());
                    self.command("error", &[("title", format!("wharf: step {step} failed"))], &message);
                }
            }
            Event::Deploy { message, .. } => run.deploys.push(message.clone()),
            Event::RunFinished {
                outcome,
                duration: took,
                summary,
                exit_code,
            } => {
                let close = run.groups.end();
                self.end_group(close);
                if run.outputs.left_out > 0 && self.outputs.is_some() {
                    let message = format!(
                        "{} of the steps' outputs ({} bytes) are not in $GITHUB_OUTPUT, which takes at most {} KiB of them in all (GitHub's limit of an output); the run folder has them: wharf log {}",
                        run.outputs.left_out,
                        run.outputs.left_out_bytes,
                        OUTPUTS_KEPT >> 10,
                        run.run_id
                    );
                    self.command("warning", &[("title", "wharf: outputs left out".into())], &message);
                }
                self.write_summary(&run, *outcome, *took, summary);
                self.write_outputs(&run, *outcome, *exit_code);
            }
            _ => {}
        }
        drop(run);
        self.lines.event(event);
    }
}

/// The bytes of step outputs a run writes to `$GITHUB_OUTPUT` (and keeps for it), JSON
/// escaping included: GitHub takes at most 1 MiB an output, and `outputs` holds them all.
const OUTPUTS_KEPT: usize = 1 << 20;

/// Step outputs kept for `$GITHUB_OUTPUT`, within [`OUTPUTS_KEPT`]; the rest only counted.
#[derive(Default)]
struct KeptOutputs {
    /// (step, output, value)
    kept: Vec<(String, String, String)>,
    bytes: usize,
    left_out: usize,
    left_out_bytes: usize,
}

impl KeptOutputs {
    fn keep(&mut self, step: &str, name: &str, value: &str) {
        // As the `outputs` JSON will hold it: escaped, quoted, with its key.
        let size = serde_json::to_string(value).map_or(usize::MAX, |v| v.len()) + name.len() + step.len() + 8;
        if self.bytes.saturating_add(size) > OUTPUTS_KEPT {
            self.left_out += 1;
            self.left_out_bytes += value.len();
            return;
        }
        self.bytes += size;
        self.kept.push((step.to_string(), name.to_string(), value.to_string()));
    }
}

fn command_for(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warn => "warning",
        _ => "notice",
    }
}

fn append(path: &std::path::Path, text: &str, what: &str) {
    use std::io::Write;
    let result = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()));
    if let Err(e) = result {
        eprintln!("warning: cannot write ${what} ({}): {e}", path.display());
    }
}
