//! The event stream as NDJSON: one JSON object a line, each with the schema version and the
//! time it was emitted (`docs/events.md`). What `--events FILE` and `--output json` write.

use super::{EVENTS_VERSION, Event, Sink};
use serde::Serialize;
use std::io::Write;
use std::sync::Mutex;

pub struct Ndjson {
    out: Mutex<Box<dyn Write + Send>>,
}

#[derive(Serialize)]
struct Line<'a> {
    v: u32,
    time: String,
    #[serde(flatten)]
    event: &'a Event,
}

impl Ndjson {
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self { out: Mutex::new(out) }
    }

    /// The JSON line of `event` at `time`, without the line break.
    pub fn line(event: &Event, time: std::time::SystemTime) -> String {
        let line = Line {
            v: EVENTS_VERSION,
            time: humantime::format_rfc3339_millis(time).to_string(),
            event,
        };
        serde_json::to_string(&line).expect("events serialize")
    }
}

impl Sink for Ndjson {
    fn event(&self, event: &Event) {
        let line = Self::line(event, std::time::SystemTime::now());
        let mut out = self.out.lock().unwrap();
        // A consumer reading live (`tail -f`, a CI log) sees each event as it happens.
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Outcome;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn an_event_is_one_line_with_version_time_and_its_fields() {
        let event = Event::StepFinished {
            step: "build".into(),
            outcome: Outcome::Failure,
            duration: Duration::from_micros(1_234_567),
            detail: Some("permanent: `sh` exited with 101\nsecond line".into()),
            outputs: vec![("tag".into(), "1.0.1-22-7e56158".into())],
        };
        let line = Ndjson::line(&event, UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
        assert!(!line.contains('\n'), "{line}");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "v": 1,
                "time": "2023-11-14T22:13:20.123Z",
                "event": "step-finished",
                "step": "build",
                "outcome": "failure",
                "duration_ms": 1234.567,
                "detail": "permanent: `sh` exited with 101\nsecond line",
                "outputs": { "tag": "1.0.1-22-7e56158" }
            })
        );
    }
}
