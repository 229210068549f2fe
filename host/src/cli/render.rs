//! Renderers of run events for people: a terminal (colour, symbols) or a CI log (plain).

use crate::events::{Event, Level, Outcome, Sink, Stream};
use std::io::Write;
use std::sync::Mutex;

pub struct Human {
    verbose: bool,
    color: bool,
    out: Mutex<Box<dyn Write + Send>>,
    width: Mutex<usize>,
}

impl Human {
    pub fn new(verbose: bool, color: bool, out: Box<dyn Write + Send>) -> Self {
        Self {
            verbose,
            color,
            out: Mutex::new(out),
            width: Mutex::new(12),
        }
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
}

/// Text from a step, made safe for a terminal: control characters (an escape sequence that
/// moves the cursor or recolours, a carriage return that overwrites a status line) are shown
/// as `\xNN` instead of being obeyed. Line breaks are the caller's to place.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| (c.is_control() && c != '\t') || c == '\u{2028}' || c == '\u{2029}';
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\x{:02x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Each line of a step's text, made printable, behind `indent`: a step cannot start a line
/// of its own that looks like wharf's.
pub fn lines(text: &str, indent: &str) -> String {
    text.split('\n')
        .map(|l| printable(l.trim_end_matches('\r')).into_owned())
        .collect::<Vec<_>>()
        .join(&format!("\n{indent}"))
}

pub use crate::events::human_duration as duration;

impl Sink for Human {
    fn event(&self, event: &Event) {
        let mut out = self.out.lock().unwrap();
        let width = *self.width.lock().unwrap();
        let _ = match event {
            Event::RunStarted {
                run_id,
                pipeline,
                steps,
                replay,
            } => {
                let what = if *replay { "wharf replay" } else { "wharf run" };
                writeln!(
                    out,
                    "{} {pipeline} · run {run_id} · {}",
                    self.paint("1", what),
                    crate::events::count(*steps, "step")
                )
            }
            Event::ComponentLoaded {
                origin,
                cached,
                duration: d,
                ..
            } if self.verbose => writeln!(
                out,
                "  {} {origin} ({})",
                if *cached { "cached  " } else { "compiled" },
                duration(*d)
            ),
            Event::StepStarted { step, uses, attempt } if self.verbose => {
                let again = if *attempt > 1 {
                    format!(" (attempt {attempt})")
                } else {
                    String::new()
                };
                writeln!(out, "  {} {step} · {uses}{again}", self.paint("2", "▸"))
            }
            Event::Log {
                level, stream, message, ..
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
                let gutter = self.paint("2", "│");
                writeln!(out, "    {gutter} {tag}{}", lines(message, &format!("    {gutter} ")))
            }
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
                writeln!(
                    out,
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
            } => writeln!(
                out,
                "  {} {step} attempt {attempt} failed ({}); retrying in {}",
                self.paint("33", "↻"),
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
                let mut line = format!("  {} {step:<width$} {:>7}", self.mark(*outcome), duration(*d));
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
                writeln!(out, "{line}")
            }
            Event::Notice { message } => writeln!(out, "  {} {}", self.paint("1", "»"), lines(message, "    ")),
            Event::RunFinished {
                outcome,
                duration: d,
                summary,
            } => {
                let word = match outcome {
                    Outcome::Success => self.paint("32;1", "succeeded"),
                    _ => self.paint("31;1", "failed"),
                };
                writeln!(out, "{word} in {}: {}", duration(*d), lines(summary, "  "))
            }
            _ => Ok(()),
        };
        let _ = out.flush();
    }
}

impl Human {
    /// Align step names in status lines.
    pub fn set_name_width(&self, width: usize) {
        *self.width.lock().unwrap() = width.max(4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(printable("plain\ttext"), "plain\ttext");
        assert_eq!(printable("\x1b[2K\rok  deploy"), "\\x1b[2K\\x0dok  deploy");
        assert_eq!(printable("bell\x07 c1\u{9b}"), "bell\\x07 c1\\x9b");
        assert_eq!(lines("one\r\n  ok   fake", "    | "), "one\n    |   ok   fake");
    }
}
