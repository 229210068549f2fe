//! Renderers of a run's event stream: for a terminal, a plain log, GitHub Actions, GitLab CI,
//! or NDJSON. Each consumes the events and nothing else.

mod github;
mod gitlab;
mod human;
mod junit;
mod live;
mod sarif;
mod untrusted;

pub use github::Github;
pub use gitlab::{CodeQuality, Gitlab};
pub use human::Human;
pub use junit::Junit;
pub use live::Live;
pub use sarif::Sarif;
pub use untrusted::{lines, printable};

pub use crate::events::human_duration as duration;
use crate::events::{Event, Events, Stream, ndjson::Ndjson};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// How a run is shown (`--output`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A live view for a terminal: colour, symbols, a spinner and progress bars.
    Human,
    /// Timestamped lines, no cursor movement (Jenkins, files).
    Plain,
    /// GitHub Actions workflow commands: groups, annotations, masks, a job summary.
    Github,
    /// GitLab CI: a collapsible section per step.
    Gitlab,
    /// The event stream as NDJSON on stdout (`docs/events.md`).
    Json,
}

impl Format {
    /// The default: the CI wharf runs in, else a terminal, else plain lines.
    pub fn detect() -> Self {
        use std::io::IsTerminal;
        let set = |name: &str| std::env::var(name).is_ok_and(|v| v == "true");
        if set("GITHUB_ACTIONS") {
            Format::Github
        } else if set("GITLAB_CI") {
            Format::Gitlab
        } else if std::io::stdout().is_terminal() {
            Format::Human
        } else {
            Format::Plain
        }
    }
}

/// How the operator asked to see a run.
pub struct View {
    pub format: Format,
    pub verbose: bool,
    pub color: bool,
    /// `--workspace DIR` as given, for the `wharf log` hint; None for the current directory.
    pub workspace: Option<String>,
    /// `--events FILE`: the event stream as NDJSON, besides what is shown.
    pub events_file: Option<PathBuf>,
    /// `--codequality FILE`: annotations as a GitLab Code Quality report.
    pub codequality: Option<PathBuf>,
    /// `--junit FILE`: the steps as JUnit test cases.
    pub junit: Option<PathBuf>,
    /// `--sarif FILE`: annotations as a SARIF log.
    pub sarif: Option<PathBuf>,
    /// The workspace, resolved: what annotations' files are relative to.
    pub workspace_root: Option<PathBuf>,
}

/// The renderer on stdout, for what it needs to know before the run starts.
pub enum Screen {
    Live(Arc<Live>),
    Human(Arc<Human>),
    Github(Arc<Github>),
    Gitlab(Arc<Gitlab>),
    Json,
}

impl Screen {
    /// Align step names in status lines.
    pub fn set_name_width(&self, width: usize) {
        match self {
            Screen::Live(l) => l.set_name_width(width),
            Screen::Human(h) => h.set_name_width(width),
            Screen::Github(g) => g.set_name_width(width),
            Screen::Gitlab(g) => g.set_name_width(width),
            Screen::Json => {}
        }
    }

    /// Whether stdout carries only the event stream: everything else goes to stderr.
    pub fn is_json(&self) -> bool {
        matches!(self, Screen::Json)
    }
}

impl View {
    /// Add the renderers the operator asked for to `events`; `secrets` are the values a
    /// CI that masks output must know before anything prints.
    pub fn attach(&self, events: &Events, secrets: &[&str]) -> Result<Screen, String> {
        if let Some(path) = &self.events_file {
            let file = std::fs::File::create(path)
                .map_err(|e| format!("--events {}: cannot create it: {e}", path.display()))?;
            events.add_sink(Arc::new(Ndjson::new(Box::new(std::io::BufWriter::new(file)))));
        }
        if let Some(path) = &self.codequality {
            events.add_sink(Arc::new(CodeQuality::new(path.clone())));
        }
        if let Some(path) = &self.sarif {
            events.add_sink(Arc::new(Sarif::new(path.clone(), self.workspace_root.clone())));
        }
        if let Some(path) = &self.junit {
            let tails = Arc::new(Tails::new(self.workspace.clone()));
            events.add_sink(Arc::new(Junit::new(path.clone(), tails)));
        }
        let tails = Arc::new(Tails::new(self.workspace.clone()));
        let stdout = || -> Box<dyn std::io::Write + Send> { Box::new(std::io::stdout()) };
        Ok(match self.format {
            Format::Human if std::io::IsTerminal::is_terminal(&std::io::stdout()) => {
                let lines = Human::new(self.verbose, self.color, stdout()).with_tails(tails);
                let live = Arc::new(Live::new(lines, self.color));
                events.add_sink(live.clone());
                Screen::Live(live)
            }
            // Not a terminal: the same lines, never redrawn.
            Format::Human => {
                let human = Arc::new(Human::new(self.verbose, self.color, stdout()).with_tails(tails));
                events.add_sink(human.clone());
                Screen::Human(human)
            }
            Format::Plain => {
                let plain = Human::new(self.verbose, self.color, stdout())
                    .with_tails(tails)
                    .with_timestamps();
                let plain = Arc::new(plain);
                events.add_sink(plain.clone());
                Screen::Human(plain)
            }
            Format::Github => {
                let github = Arc::new(Github::new(self.verbose, secrets, tails, self.workspace.clone()));
                events.add_sink(github.clone());
                Screen::Github(github)
            }
            Format::Gitlab => {
                let gitlab = Arc::new(Gitlab::new(self.verbose, self.color, tails));
                events.add_sink(gitlab.clone());
                Screen::Gitlab(gitlab)
            }
            Format::Json => {
                events.add_sink(Arc::new(Ndjson::new(stdout())));
                Screen::Json
            }
        })
    }
}

/// How many lines of a failed step's output every renderer shows under the failure.
pub const TAIL_LINES: usize = 20;

/// Collapsible per-step groups in a CI log (GitHub's `::group::`, GitLab's sections), which
/// can neither nest nor interleave: a step's output is grouped while it runs alone; while
/// steps run side by side their lines stay ungrouped, each starting with its step.
#[derive(Default)]
pub struct Folding {
    running: Vec<String>,
    open: Option<String>,
}

impl Folding {
    /// `step` started (or started again): the group to close first, if any, and whether to
    /// open one for `step`.
    pub fn started(&mut self, step: &str) -> (Option<String>, bool) {
        if !self.running.iter().any(|s| s == step) {
            self.running.push(step.to_string());
        }
        let close = self.open.take();
        let open = self.running.len() == 1;
        if open {
            self.open = Some(step.to_string());
        }
        (close, open)
    }

    /// `step` finished: the group to close, if it is `step`'s.
    pub fn finished(&mut self, step: &str) -> Option<String> {
        self.running.retain(|s| s != step);
        self.open.take_if(|open| open.as_str() == step)
    }

    /// The run ended: the group still open, if any.
    pub fn end(&mut self) -> Option<String> {
        self.running.clear();
        self.open.take()
    }
}

/// The last lines of each step's output and log, and how to see all of it: what a renderer
/// shows under a failure, so nobody has to re-run with `-v`.
#[derive(Default)]
pub struct Tails {
    run_id: Mutex<Option<String>>,
    /// `--workspace DIR` for the `wharf log` hint, when the workspace is not the current
    /// directory.
    workspace: Option<String>,
    steps: Mutex<HashMap<String, (VecDeque<String>, usize)>>,
}

impl Tails {
    pub fn new(workspace: Option<String>) -> Self {
        Self {
            workspace,
            ..Self::default()
        }
    }

    /// Keep what `event` adds to a step's output.
    pub fn see(&self, event: &Event) {
        match event {
            Event::RunStarted { run_id, .. } => *self.run_id.lock().unwrap() = Some(run_id.clone()),
            Event::StepStarted { step, .. } => {
                self.steps.lock().unwrap().remove(step);
            }
            Event::Log {
                step, stream, message, ..
            } => {
                for line in message.split('\n') {
                    let line = line.trim_end_matches('\r');
                    self.keep(
                        step,
                        match stream {
                            Stream::Stderr => format!("stderr {line}"),
                            _ => line.to_string(),
                        },
                    );
                }
            }
            // What a judge measured is what its failure is about.
            Event::Measurement { step, measurement } => self.keep(step, format!("≈ {}", measurement.describe())),
            _ => {}
        }
    }

    fn keep(&self, step: &str, line: String) {
        let mut steps = self.steps.lock().unwrap();
        let (tail, total) = steps.entry(step.to_string()).or_default();
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
        *total += 1;
    }

    /// The last lines of `step`'s output and how many there were in all.
    pub fn of(&self, step: &str) -> (Vec<String>, usize) {
        self.steps
            .lock()
            .unwrap()
            .get(step)
            .map(|(tail, total)| (tail.iter().cloned().collect(), *total))
            .unwrap_or_default()
    }

    /// The command that prints all of `step`'s output.
    pub fn hint(&self, step: &str) -> String {
        let run = self.run_id.lock().unwrap().clone().unwrap_or_else(|| "RUN".into());
        match &self.workspace {
            Some(dir) => format!("wharf log {run} --step {step} --workspace {dir}"),
            None => format!("wharf log {run} --step {step}"),
        }
    }

    /// The tail of a failed step as lines for a log: a header, the lines, the hint.
    pub fn report(&self, step: &str) -> Vec<String> {
        let (tail, total) = self.of(step);
        let mut out = Vec::new();
        if tail.is_empty() {
            out.push(format!("`{step}` printed nothing; its host calls: {}", self.hint(step)));
            return out;
        }
        if total > tail.len() {
            out.push(format!("last {} of {total} lines of `{step}`:", tail.len()));
        } else {
            out.push(format!("output of `{step}`:"));
        }
        out.extend(tail.iter().map(|l| printable(l).into_owned()));
        out.push(format!("all of it: {}", self.hint(step)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Level;

    #[test]
    fn a_step_is_grouped_only_while_it_runs_alone() {
        let mut folding = Folding::default();
        assert_eq!(folding.started("a"), (None, true));
        // A second step starts: a's group closes, neither gets one while both run.
        assert_eq!(folding.started("b"), (Some("a".into()), false));
        assert_eq!(folding.finished("a"), None);
        assert_eq!(folding.finished("b"), None);
        assert_eq!(folding.started("c"), (None, true));
        // A retry of the step that runs alone opens its group again.
        assert_eq!(folding.started("c"), (Some("c".into()), true));
        assert_eq!(folding.finished("c"), Some("c".into()));
        assert_eq!(folding.started("d"), (None, true));
        assert_eq!(folding.end(), Some("d".into()));
    }

    #[test]
    fn a_tail_keeps_the_last_lines_of_each_step_and_says_how_to_see_the_rest() {
        let tails = Tails::new(Some("examples/seed".into()));
        tails.see(&Event::RunStarted {
            run_id: "20261129-1".into(),
            pipeline: "p".into(),
            steps: 1,
            replay: false,
        });
        let text: String = (1..=25).map(|i| format!("line {i}\n")).collect();
        tails.see(&Event::Log {
            step: "test".into(),
            level: Level::Info,
            stream: Stream::Stdout,
            message: text.trim_end().into(),
        });
        tails.see(&Event::Log {
            step: "test".into(),
            level: Level::Info,
            stream: Stream::Stderr,
            message: "\x1b[31mboom".into(),
        });
        let report = tails.report("test");
        assert_eq!(report[0], "last 20 of 26 lines of `test`:");
        assert_eq!(report[1], "line 7");
        assert_eq!(report[20], "stderr \\x1b[31mboom");
        assert_eq!(
            report[21],
            "all of it: wharf log 20261129-1 --step test --workspace examples/seed"
        );
        assert_eq!(
            tails.report("quiet"),
            ["`quiet` printed nothing; its host calls: wharf log 20261129-1 --step quiet --workspace examples/seed"]
        );
    }
}
