//! Run events for people: a terminal (colour, symbols), or plain timestamped lines for a log
//! file or Jenkins. The CI renderers use it for the lines they share.

use super::{Tails, duration, lines, printable};
use crate::events::{Event, Level, Outcome, Sink, Stream};
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A step's progress is printed as a line at most this often, and when it completes.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

pub struct Human {
    verbose: bool,
    color: bool,
    /// Each line starts with the time (plain output).
    timestamps: bool,
    out: Mutex<Box<dyn Write + Send>>,
    width: Mutex<usize>,
    tails: Arc<Tails>,
    /// When each step's progress was last printed.
    progress: Mutex<HashMap<(String, String), Instant>>,
    /// What every line passes through on its way out (a CI's rules for text it obeys).
    filter: LineFilter,
}

/// A rewrite of each printed line, for a reader that obeys some text.
pub type LineFilter = fn(&str) -> std::borrow::Cow<'_, str>;

fn unchanged(line: &str) -> std::borrow::Cow<'_, str> {
    std::borrow::Cow::Borrowed(line)
}

impl Human {
    pub fn new(verbose: bool, color: bool, out: Box<dyn Write + Send>) -> Self {
        Self {
            verbose,
            color,
            timestamps: false,
            out: Mutex::new(out),
            width: Mutex::new(12),
            tails: Arc::new(Tails::default()),
            progress: Mutex::new(HashMap::new()),
            filter: unchanged,
        }
    }

    /// Pass every line written through `filter`, except those of [`Human::write_raw`].
    pub fn with_filter(mut self, filter: LineFilter) -> Self {
        self.filter = filter;
        self
    }

    /// Start each line with the time it was printed.
    pub fn with_timestamps(mut self) -> Self {
        self.timestamps = true;
        self
    }

    /// Show a failed step's last lines with `tails` (shared with a CI renderer around this one).
    pub fn with_tails(mut self, tails: Arc<Tails>) -> Self {
        self.tails = tails;
        self
    }

    /// `text` as lines of `step`'s: each names its step, since steps that run side by side
    /// interleave.
    fn step_says(&self, step: &str, text: &str) -> String {
        let gutter = self.paint("2", &format!("{} │", printable(step)));
        format!("    {gutter} {}", lines(text, &format!("    {gutter} ")))
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn mark(&self, outcome: Outcome) -> String {
        match (outcome, self.color) {
            (Outcome::Success, true) => self.paint("32", "✓"),
            (Outcome::Failure, true) => self.paint("31", "✗"),
            (Outcome::Skipped, true) => self.paint("2", "-"),
            (Outcome::Success, false) => "ok  ".into(),
            (Outcome::Failure, false) => "FAIL".into(),
            (Outcome::Skipped, false) => "skip".into(),
        }
    }

    /// Keep `event`'s output for a failure's tail without printing it.
    pub fn see(&self, event: &Event) {
        self.tails.see(event);
    }

    /// Write `text` (one or more lines), each line through the filter and behind a timestamp
    /// for plain output.
    pub fn write(&self, text: &str) {
        self.write_lines(text, self.filter);
    }

    /// Write a line wharf composed whole from escaped parts (a CI's command), unfiltered.
    pub fn write_raw(&self, line: &str) {
        self.write_lines(line, unchanged);
    }

    fn write_lines(&self, text: &str, filter: LineFilter) {
        let mut out = self.out.lock().unwrap();
        let now = self
            .timestamps
            .then(|| humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string());
        for line in text.split('\n') {
            let line = filter(line);
            let _ = match &now {
                Some(now) => writeln!(out, "{now} {line}"),
                None => writeln!(out, "{line}"),
            };
        }
        let _ = out.flush();
    }

    /// Whether to print this progress report now: the first, the last, and one every few
    /// seconds; a log is not a progress bar.
    fn progress_due(&self, step: &str, label: &str, done: u64, total: Option<u64>) -> bool {
        let mut last = self.progress.lock().unwrap();
        let key = (step.to_string(), label.to_string());
        let due = total == Some(done) || last.get(&key).is_none_or(|at| at.elapsed() >= PROGRESS_EVERY);
        if due {
            last.insert(key, Instant::now());
        }
        due
    }
}

/// `label: 3 of 7 (42%)`, or `label: 3` without a total.
pub fn progress_text(label: &str, done: u64, total: Option<u64>) -> String {
    match total {
        Some(t) if t > 0 => format!("{label}: {done} of {t} ({}%)", done.saturating_mul(100) / t),
        _ => format!("{label}: {done}"),
    }
}

impl Sink for Human {
    fn event(&self, event: &Event) {
        self.tails.see(event);
        if let Some(text) = self.text(event) {
            self.write(&text);
        }
    }
}

impl Human {
    /// The lines `event` shows as, if any.
    pub fn text(&self, event: &Event) -> Option<String> {
        let width = *self.width.lock().unwrap();
        let text = match event {
            Event::RunStarted {
                run_id,
                pipeline,
                steps,
                replay,
            } => {
                let what = if *replay { "wharf replay" } else { "wharf run" };
                format!(
                    "{} {} · run {} · {}",
                    self.paint("1", what),
                    printable(pipeline),
                    printable(run_id),
                    crate::events::count(*steps, "step")
                )
            }
            Event::ComponentLoaded {
                origin,
                cached,
                duration: d,
                ..
            } if self.verbose => format!(
                "  {} {} ({})",
                if *cached { "cached  " } else { "compiled" },
                printable(origin),
                duration(*d)
            ),
            Event::StepStarted { step, uses, attempt } if self.verbose => {
                let again = if *attempt > 1 {
                    format!(" (attempt {attempt})")
                } else {
                    String::new()
                };
                format!(
                    "  {} {} · {}{again}",
                    self.paint("2", "▸"),
                    printable(step),
                    printable(uses)
                )
            }
            Event::Log {
                step,
                level,
                stream,
                message,
            } if self.verbose || *level >= Level::Error => {
                let tag = match stream {
                    Stream::Log => match level {
                        Level::Warn => "warn ",
                        Level::Error => "error ",
                        _ => "",
                    },
                    Stream::Stdout => "",
                    Stream::Stderr => "stderr ",
                };
                self.step_says(step, &format!("{tag}{message}"))
            }
            Event::Cache {
                step,
                hit: false,
                detail,
            } if self.verbose => self.step_says(step, &format!("not taken from the cache: {detail}")),
            Event::Annotation {
                level,
                message,
                file,
                line,
                ..
            } => {
                let place = match (file, line) {
                    (Some(f), Some(l)) => format!("{f}:{l}: "),
                    (Some(f), None) => format!("{f}: "),
                    _ => String::new(),
                };
                format!(
                    "    {} {}",
                    if *level >= Level::Warn { "⚠" } else { "ℹ" },
                    lines(&format!("{place}{message}"), "      ")
                )
            }
            Event::StepRetrying {
                step,
                attempt,
                error,
                delay,
            } => format!(
                "  {} {} attempt {attempt} failed ({}); retrying in {}",
                self.paint("33", "↻"),
                printable(step),
                lines(error, "      "),
                duration(*delay)
            ),
            Event::StepFinished {
                step,
                outcome,
                duration: d,
                detail,
                outputs,
            } => {
                let step_shown = printable(step);
                let mut line = format!("  {} {step_shown:<width$} {:>7}", self.mark(*outcome), duration(*d));
                if let Some(detail) = detail {
                    line.push_str("  ");
                    line.push_str(&lines(detail.trim_end(), "      "));
                }
                if self.verbose {
                    for (k, v) in outputs {
                        let v: String = v.chars().take(200).collect();
                        line.push_str(&format!(
                            "\n      {} {}={}",
                            self.paint("2", "→"),
                            printable(k),
                            printable(&v.replace('\n', "\\n"))
                        ));
                    }
                }
                if *outcome == Outcome::Failure {
                    let gutter = self.paint("2", "│");
                    for tail in self.tails.report(step) {
                        line.push_str(&format!("\n    {gutter} {tail}"));
                    }
                }
                line
            }
            Event::Progress {
                step,
                label,
                done,
                total,
            } if self.progress_due(step, label, *done, *total) => format!(
                "    {} {}: {}",
                self.paint("2", "…"),
                printable(step),
                printable(&progress_text(label, *done, *total))
            ),
            // Every measurement is shown: it is what a release is judged by.
            Event::Measurement { step, measurement } => {
                let color = match measurement.verdict.as_str() {
                    "successful" => "32",
                    "failed" => "31",
                    _ => "33",
                };
                format!(
                    "    {} {}: {}",
                    self.paint(color, "≈"),
                    printable(step),
                    printable(&measurement.describe())
                )
            }
            Event::Notice { message } | Event::Deploy { message, .. } => {
                format!("  {} {}", self.paint("1", "»"), lines(message, "    "))
            }
            Event::RunFinished {
                outcome,
                duration: d,
                summary,
                ..
            } => {
                let word = match outcome {
                    Outcome::Success => self.paint("32;1", "succeeded"),
                    _ => self.paint("31;1", "failed"),
                };
                format!("{word} in {}: {}", duration(*d), lines(summary, "  "))
            }
            _ => return None,
        };
        Some(text)
    }
}

impl Human {
    /// Align step names in status lines.
    pub fn set_name_width(&self, width: usize) {
        *self.width.lock().unwrap() = width.max(4);
    }
}
