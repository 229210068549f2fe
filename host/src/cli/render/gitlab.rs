//! GitLab CI: a collapsible log section per step, and annotations as a Code Quality report
//! (`--codequality FILE`) that merge requests show on the right lines.
//! <https://docs.gitlab.com/ci/jobs/job_logs/#custom-collapsible-sections>

use super::{Human, Tails};
use crate::events::{Event, Level, Sink};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub struct Gitlab {
    lines: Human,
    all_lines: Human,
    sections: Mutex<super::Folding>,
}

impl Gitlab {
    pub fn new(verbose: bool, color: bool, tails: Arc<Tails>) -> Self {
        Self {
            lines: Human::new(verbose, color, Box::new(std::io::stdout())).with_tails(tails),
            all_lines: Human::new(true, color, Box::new(std::io::sink())),
            sections: Mutex::new(super::Folding::default()),
        }
    }

    pub fn set_name_width(&self, width: usize) {
        self.lines.set_name_width(width);
    }

    fn end_section(&self, step: Option<String>) {
        if let Some(step) = step {
            let name = section_name(&step);
            self.lines
                .write(&format!("\x1b[0Ksection_end:{}:{name}\r\x1b[0K", unix_now()));
        }
    }
}

impl Sink for Gitlab {
    fn event(&self, event: &Event) {
        match event {
            Event::StepStarted { step, uses, .. } => {
                let (close, open) = self.sections.lock().unwrap().started(step);
                self.end_section(close);
                if open {
                    let name = section_name(step);
                    self.lines.write(&format!(
                        "\x1b[0Ksection_start:{}:{name}[collapsed=true]\r\x1b[0K{step} · {uses}",
                        unix_now()
                    ));
                } else {
                    self.lines.write(&format!("{step} · {uses} (beside other steps)"));
                }
            }
            Event::Log { .. } | Event::Cache { .. } => {
                if let Some(text) = self.all_lines.text(event) {
                    self.lines.write(&text);
                }
                self.lines.see(event);
                return;
            }
            Event::StepFinished { step, .. } => {
                let close = self.sections.lock().unwrap().finished(step);
                self.end_section(close);
            }
            Event::RunFinished { .. } => {
                let close = self.sections.lock().unwrap().end();
                self.end_section(close);
            }
            _ => {}
        }
        self.lines.event(event);
    }
}

/// Annotations with a file as a GitLab Code Quality report, written when the run finishes
/// (`--codequality FILE`, for `artifacts:reports:codequality`).
pub struct CodeQuality {
    path: PathBuf,
    issues: Mutex<Vec<serde_json::Value>>,
}

impl CodeQuality {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            issues: Mutex::new(Vec::new()),
        }
    }

    fn write(&self) {
        let issues = self.issues.lock().unwrap();
        let text = serde_json::to_string_pretty(&*issues).expect("json values serialize");
        if let Err(e) = std::fs::write(&self.path, text) {
            eprintln!(
                "warning: cannot write the Code Quality report {}: {e}",
                self.path.display()
            );
        }
    }
}

impl Sink for CodeQuality {
    fn event(&self, event: &Event) {
        match event {
            Event::Annotation {
                step,
                level,
                title,
                message,
                file: Some(file),
                line,
                ..
            } => {
                let description = match title {
                    Some(t) => format!("{t}: {message}"),
                    None => message.clone(),
                };
                use sha2::Digest as _;
                let fingerprint = hex::encode(sha2::Sha256::digest(
                    format!("{step}\0{file}\0{}\0{description}", line.unwrap_or(1)).as_bytes(),
                ));
                self.issues.lock().unwrap().push(serde_json::json!({
                    "description": description,
                    "check_name": format!("wharf/{step}"),
                    "fingerprint": fingerprint,
                    "severity": match level {
                        Level::Error => "major",
                        Level::Warn => "minor",
                        _ => "info",
                    },
                    "location": { "path": file, "lines": { "begin": line.unwrap_or(1) } },
                }));
            }
            Event::RunFinished { .. } => self.write(),
            _ => {}
        }
    }
}

/// Section names hold letters, digits, `_`, `.` and `-`.
fn section_name(step: &str) -> String {
    let clean: String = step
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("wharf_step_{clean}")
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
