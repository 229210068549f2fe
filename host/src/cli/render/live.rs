//! The live view on a terminal: every running step with a spinner and its elapsed time, each
//! `progress` label of it as a bar (done/total, rate), finished steps as the one-liners of the
//! plain view above them. Only used when stdout is a terminal; indicatif sizes the bars to
//! its width.

use super::Human;
use crate::events::{Event, Sink};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

pub struct Live {
    lines: Human,
    multi: MultiProgress,
    color: bool,
    /// The running steps' spinners, by step.
    steps: Mutex<HashMap<String, ProgressBar>>,
    /// Progress bars, by step and label.
    bars: Mutex<HashMap<(String, String), ProgressBar>>,
}

impl Live {
    pub fn new(lines: Human, color: bool) -> Self {
        Self {
            lines,
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
            color,
            steps: Mutex::new(HashMap::new()),
            bars: Mutex::new(HashMap::new()),
        }
    }

    pub fn set_name_width(&self, width: usize) {
        self.lines.set_name_width(width);
    }

    fn print(&self, text: &str) {
        // Above the bars; indicatif redraws them below.
        let _ = self.multi.println(text);
    }

    /// Take down the spinner and bars of `step`, or of every step.
    fn clear(&self, step: Option<&str>) {
        self.bars.lock().unwrap().retain(|(of, _), bar| {
            let keep = step.is_some_and(|s| s != of);
            if !keep {
                bar.finish_and_clear();
            }
            keep
        });
        self.steps.lock().unwrap().retain(|of, spinner| {
            let keep = step.is_some_and(|s| s != of);
            if !keep {
                spinner.finish_and_clear();
            }
            keep
        });
    }

    fn style(&self, template: &str, plain: &str) -> ProgressStyle {
        let template = if self.color { template } else { plain };
        ProgressStyle::with_template(template).expect("a valid template")
    }
}

impl Sink for Live {
    fn event(&self, event: &Event) {
        self.lines.see(event);
        match event {
            Event::StepStarted { step, uses, .. } => {
                self.clear(Some(step));
                let spinner = self.multi.add(ProgressBar::new_spinner());
                spinner.set_style(self.style("  {spinner:.cyan} {msg} {elapsed:.dim}", "  {spinner} {msg} {elapsed}"));
                spinner.set_message(format!("{} · {}", super::printable(step), super::printable(uses)));
                spinner.enable_steady_tick(Duration::from_millis(100));
                self.steps.lock().unwrap().insert(step.clone(), spinner);
            }
            Event::Progress {
                step,
                label,
                done,
                total,
            } => {
                let mut bars = self.bars.lock().unwrap();
                let bar = bars.entry((step.clone(), label.clone())).or_insert_with(|| {
                    let bar = self.multi.add(ProgressBar::new(total.unwrap_or(0)));
                    let style = match total {
                        Some(_) => self.style(
                            "      {msg} [{bar:30.cyan/blue}] {pos}/{len} ({per_sec}, {eta})",
                            "      {msg} [{bar:30}] {pos}/{len} ({per_sec}, {eta})",
                        ),
                        None => self.style("      {msg} {pos} ({per_sec})", "      {msg} {pos} ({per_sec})"),
                    };
                    bar.set_style(style.progress_chars("=> "));
                    bar.set_message(format!("{}: {}", super::printable(step), super::printable(label)));
                    bar
                });
                if let Some(total) = total {
                    bar.set_length(*total);
                }
                bar.set_position(*done);
            }
            Event::StepFinished { step, .. } => {
                self.clear(Some(step));
                if let Some(text) = self.lines.text(event) {
                    self.print(&text);
                }
            }
            Event::RunFinished { .. } => {
                self.clear(None);
                if let Some(text) = self.lines.text(event) {
                    self.print(&text);
                }
            }
            _ => {
                if let Some(text) = self.lines.text(event) {
                    self.print(&text);
                }
            }
        }
    }
}
