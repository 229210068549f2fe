//! Record and replay. Every effect of a step crosses the WIT boundary, so the journal of a
//! run holds all of it (its format is the `wharf-journal` crate's). Here the engine's side:
//! the [`tape`] every host call goes through, [`replay`], and the run's events as entries.

pub mod capture;
pub mod replay;
pub mod tape;
pub mod witness;

pub use wharf_journal::{
    Entry, FORMAT, Measurement, Record, VERSION, clocks, component_store, find_run, reader, runs_dir, snapshot, writer,
};

use crate::events::{Event, Events, Level, Sink, Stream, Transition};
use std::path::Path;
use std::sync::Arc;
use writer::JournalWriter;

/// Open the journal of run `run_id` of a workspace: secrets masked as in every event, and a
/// notice when the journal stops being written (a full disk).
pub fn open(workspace: &Path, run_id: &str, events: &Events) -> std::io::Result<Arc<JournalWriter>> {
    let masker = events.clone();
    let notices = events.clone();
    Ok(Arc::new(JournalWriter::create(
        &runs_dir(workspace).join(run_id),
        &wharf_journal::component_store(workspace),
        Box::new(move |text| masker.redact(text)),
        Box::new(move |why| {
            notices.emit(Event::Notice {
                message: format!(
                    "the journal of this run is incomplete from here: {why}; the run goes on unrecorded and cannot be replayed past this point"
                ),
            })
        }),
    )?))
}

/// The journal as a renderer of run events: log lines, step outcomes, measurements, a
/// canary's traffic and notices.
pub struct JournalSink {
    journal: Arc<JournalWriter>,
    /// Services whose traffic a canary shares, and the canary's version.
    canaries: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl JournalSink {
    pub fn new(journal: Arc<JournalWriter>) -> Self {
        Self {
            journal,
            canaries: Default::default(),
        }
    }

    /// The traffic a deploy transition gives a canary: the share it was shifted to, all of
    /// it once upgraded, none once rolled back.
    fn traffic(
        &self,
        service: &str,
        transition: Transition,
        version: Option<&str>,
        shifted: Option<u8>,
    ) -> Option<Entry> {
        let mut canaries = self.canaries.lock().unwrap();
        let (version, percent) = match (transition, shifted) {
            (Transition::Shifted, Some(percent)) => {
                let version = version?.to_string();
                canaries.insert(service.to_string(), version.clone());
                (version, percent)
            }
            (Transition::Upgraded, _) => (canaries.remove(service)?, 100),
            (Transition::RolledBack, _) => (canaries.remove(service)?, 0),
            _ => return None,
        };
        Some(Entry::Traffic {
            service: service.to_string(),
            version,
            percent,
        })
    }
}

impl Sink for JournalSink {
    fn event(&self, event: &Event) {
        let journal = &self.journal;
        let level = |l: &Level| {
            serde_json::to_value(l)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        };
        let stream = |s: &Stream| {
            serde_json::to_value(s)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        };
        // The size written is the tape's concern, not the log's.
        let _ = match event {
            Event::Log {
                step,
                level: l,
                stream: s,
                message,
            } => journal.write(Entry::Log {
                step: step.clone(),
                level: level(l),
                stream: stream(s),
                message: message.clone(),
            }),
            Event::Cache { step, hit, detail } => journal.write(Entry::Cache {
                step: step.clone(),
                hit: *hit,
                detail: detail.clone(),
            }),
            Event::Annotation {
                step,
                level: l,
                message,
                file,
                line,
                ..
            } => journal.write(Entry::Log {
                step: step.clone(),
                level: level(l),
                stream: "annotation".into(),
                message: match (file, line) {
                    (Some(f), Some(n)) => format!("{f}:{n}: {message}"),
                    _ => message.clone(),
                },
            }),
            Event::TestCase {
                step,
                suite,
                name,
                outcome,
                message,
                ..
            } => journal.write(Entry::Log {
                step: step.clone(),
                level: "info".into(),
                stream: "test".into(),
                message: format!(
                    "{suite} {name}: {}{}",
                    outcome.as_str(),
                    message.as_ref().map(|m| format!(": {m}")).unwrap_or_default()
                ),
            }),
            Event::StepFinished {
                step,
                outcome,
                duration,
                detail,
                outputs,
            } => journal.write(Entry::StepFinished {
                step: step.clone(),
                outcome: outcome.as_str().into(),
                detail: detail.clone(),
                outputs: outputs.clone(),
                millis: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            }),
            Event::Measurement { step, measurement } => journal.write(Entry::Measurement {
                step: step.clone(),
                measurement: measurement.clone(),
            }),
            Event::Deploy {
                service,
                transition,
                version,
                traffic,
                message,
                ..
            } => {
                if let Some(traffic) = self.traffic(service, *transition, version.as_deref(), *traffic) {
                    journal.write(traffic);
                }
                journal.write(Entry::Notice {
                    message: message.clone(),
                })
            }
            Event::Notice { message } => journal.write(Entry::Notice {
                message: message.clone(),
            }),
            _ => 0,
        };
    }
}
