//! GitHub Actions: each step in a collapsible group, failures and annotations as workflow
//! commands GitHub shows on the right lines, every secret masked before anything could print
//! it, a Markdown job summary, and the steps' outputs as the job step's outputs.
//! <https://docs.github.com/en/actions/reference/workflow-commands-for-github-actions>

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
    /// (step, output, value) of the steps that succeeded.
    outputs: Vec<(String, String, String)>,
    groups: super::Folding,
}

impl Github {
    /// Writes workflow commands to stdout and, from the environment, the summary and outputs
    /// files. `secrets` are masked at once: GitHub hides them in everything printed after.
    pub fn new(verbose: bool, secrets: &[&str], tails: Arc<Tails>, workspace: Option<String>) -> Self {
        let github = Self {
            lines: Human::new(verbose, false, Box::new(std::io::stdout())).with_tails(tails),
            all_lines: Human::new(true, false, Box::new(std::io::sink())),
            summary: std::env::var_os("GITHUB_STEP_SUMMARY").map(PathBuf::from),
            outputs: std::env::var_os("GITHUB_OUTPUT").map(PathBuf::from),
            workspace,
            run: Mutex::new(RunSoFar::default()),
        };
        for secret in secrets {
            // One command a line: a secret with a line break is masked line by line.
            for line in secret.split('\n').map(|l| l.trim_end_matches('\r')) {
                if !line.is_empty() {
                    github.lines.write(&format!("::add-mask::{}", escape_data(line)));
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
            .map(|(k, v)| format!("{k}={}", escape_property(v)))
            .collect();
        let sep = if props.is_empty() { "" } else { " " };
        self.lines
            .write(&format!("::{name}{sep}{}::{}", props.join(","), escape_data(message)));
    }

    fn end_group(&self, close: Option<String>) {
        if close.is_some() {
            self.lines.write("::endgroup::");
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
        let _ = writeln!(md, "### wharf run `{}` {word}\n", cell(&run.pipeline));
        let _ = writeln!(md, "Run `{}` · {} · {}\n", run.run_id, duration(took), cell(summary));
        let _ = writeln!(md, "| step | outcome | time | detail |\n|---|---|---|---|");
        for (step, outcome, took, detail) in &run.steps {
            let mark = match outcome {
                Outcome::Success => "✅ success",
                Outcome::Failure => "❌ failure",
                Outcome::Skipped => "⏭ skipped",
            };
            let detail = detail.as_deref().map(|d| d.lines().next().unwrap_or("")).unwrap_or("");
            let _ = writeln!(md, "| `{step}` | {mark} | {} | {} |", duration(*took), cell(detail));
        }
        if !run.deploys.is_empty() {
            let _ = writeln!(md, "\n**Deploy**\n");
            for line in &run.deploys {
                let _ = writeln!(md, "- {}", cell(line));
            }
        }
        append(path, &md, "GITHUB_STEP_SUMMARY");
    }

    /// `run-id`, `run-dir` (the run folder, for an artifact), `outcome`, `exit-code`,
    /// `outputs` (JSON: step → output → value) and each output as `STEP-OUTPUT`.
    fn write_outputs(&self, run: &RunSoFar, outcome: Outcome, exit_code: u8) {
        let Some(path) = &self.outputs else { return };
        let mut all = serde_json::Map::new();
        for (step, name, value) in &run.outputs {
            let of_step = all
                .entry(step.clone())
                .or_insert_with(|| serde_json::Value::Object(Default::default()));
            if let Some(map) = of_step.as_object_mut() {
                map.insert(name.clone(), value.clone().into());
            }
        }
        let dir = self.workspace.as_deref().unwrap_or(".");
        let mut pairs = vec![
            ("run-id".to_string(), run.run_id.clone()),
            ("run-dir".to_string(), format!("{dir}/.wharf/runs/{}", run.run_id)),
            ("outcome".to_string(), outcome.as_str().to_string()),
            ("exit-code".to_string(), exit_code.to_string()),
            ("outputs".to_string(), serde_json::Value::Object(all).to_string()),
        ];
        pairs.extend(
            run.outputs
                .iter()
                .map(|(step, name, value)| (format!("{step}-{name}"), value.clone())),
        );
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
                let title = escape_data(&format!("{step} · {uses}{again}"));
                if open {
                    self.lines.write(&format!("::group::{title}"));
                } else {
                    self.lines.write(&format!("{title} (beside other steps)"));
                }
            }
            Event::Log { .. } => {
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
                        run.outputs.push((step.clone(), name.clone(), value.clone()));
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
                self.write_summary(&run, *outcome, *took, summary);
                self.write_outputs(&run, *outcome, *exit_code);
            }
            _ => {}
        }
        drop(run);
        self.lines.event(event);
    }
}

fn command_for(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warn => "warning",
        _ => "notice",
    }
}

/// A workflow command's message, escaped as GitHub's toolkit does (`escapeData`).
pub fn escape_data(text: &str) -> String {
    text.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

/// A workflow command's property value (`escapeProperty`): also `:` and `,`.
pub fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

/// Text inside a Markdown table cell: one line, no column breaks, no markup from a step.
fn cell(text: &str) -> String {
    text.replace('\n', " ")
        .replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('`', "'")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_properties_are_escaped_by_githubs_rules() {
        assert_eq!(escape_data("100% done\r\nnext: a,b"), "100%25 done%0D%0Anext: a,b");
        assert_eq!(escape_property("a: b, 5%\nc"), "a%3A b%2C 5%25%0Ac");
    }
}
