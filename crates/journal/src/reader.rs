//! Reading a journal back. A run killed mid-write leaves at most one partial last line; it
//! is dropped, and everything before it reads.

use super::{Entry, FORMAT, Record, VERSION};
use std::path::Path;

#[derive(Debug, Clone)]
pub struct Journal {
    pub records: Vec<Record>,
    /// The last line was cut off (a killed run); it was dropped.
    pub truncated: bool,
}

/// Largest journal wharf reads: a run's log is bounded per step, so only a damaged or
/// forged folder comes near it.
pub const JOURNAL_LIMIT: u64 = 1 << 30;

impl Journal {
    pub fn read(run_dir: &Path) -> Result<Journal, String> {
        let path = wharf_fs::beneath::existing(run_dir, "journal.jsonl").map_err(|e| e.to_string())?;
        let bytes = wharf_fs::bounded::read(&path, JOURNAL_LIMIT).map_err(|e| e.to_string())?;
        Self::parse(&bytes, &path)
    }

    /// A journal from its bytes; `path` names it in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Journal, String> {
        let text = String::from_utf8_lossy(bytes);
        let mut records = Vec::new();
        let mut truncated = false;
        let lines: Vec<&str> = text.split('\n').collect();
        for (n, line) in lines.iter().enumerate() {
            if line.is_empty() {
                continue;
            }
            let last = n + 1 == lines.len();
            match serde_json::from_str::<Record>(line) {
                Ok(record) => {
                    // A run folder may come from anywhere: a name that is not one wharf
                    // writes (a step id with `/../`) would be a path out of where a replay
                    // or a report puts things.
                    if let Some((kind, name)) = record.entry.names().into_iter().find(|(k, n)| !k.admits(n)) {
                        return Err(format!(
                            "{}:{}: `{}` is not a valid {}; the run folder was altered or damaged",
                            path.display(),
                            n + 1,
                            name.escape_debug(),
                            kind.describe()
                        ));
                    }
                    records.push(record)
                }
                // A line without its newline is one the run did not finish writing.
                Err(_) if last => truncated = true,
                Err(e) => return Err(format!("{}:{}: not a journal entry: {e}", path.display(), n + 1)),
            }
        }
        match records.first().map(|r| &r.entry) {
            Some(Entry::Header { format, version, .. }) if format == FORMAT && *version <= VERSION => {}
            Some(Entry::Header { format, version, .. }) => {
                return Err(format!(
                    "{}: a `{format}` journal of version {version}; this wharf reads {FORMAT} up to version {VERSION}",
                    path.display()
                ));
            }
            _ => return Err(format!("{}: not a wharf journal (no header line)", path.display())),
        }
        Ok(Journal { records, truncated })
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.records.iter().map(|r| &r.entry)
    }

    pub fn run_started(&self) -> Option<&Entry> {
        self.entries().find(|e| matches!(e, Entry::RunStarted { .. }))
    }

    pub fn run_id(&self) -> String {
        match self.run_started() {
            Some(Entry::RunStarted { run_id, .. }) => run_id.clone(),
            _ => String::new(),
        }
    }

    pub fn finished(&self) -> Option<(&str, u8, u64)> {
        self.entries().find_map(|e| match e {
            Entry::RunFinished {
                outcome,
                exit_code,
                millis,
            } => Some((outcome.as_str(), *exit_code, *millis)),
            _ => None,
        })
    }

    /// The last ending of each step, in the order they finished.
    pub fn step_outcomes(&self) -> Vec<StepEnd> {
        let mut out: Vec<StepEnd> = Vec::new();
        for e in self.entries() {
            if let Entry::StepFinished {
                step, outcome, outputs, ..
            } = e
            {
                out.retain(|end| end.step != *step);
                out.push(StepEnd {
                    step: step.clone(),
                    outcome: outcome.clone(),
                    outputs: outputs.clone(),
                });
            }
        }
        out
    }
}

/// How a step ended in a recorded run.
#[derive(Debug, Clone)]
pub struct StepEnd {
    pub step: String,
    pub outcome: String,
    pub outputs: Vec<(String, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::JournalWriter;

    #[test]
    fn what_is_written_reads_back_masked_and_a_cut_line_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let journal = JournalWriter::create(
            &run,
            &dir.path().join("components"),
            Box::new(|text: &str| text.replace("hunter2", "***")),
            Box::new(|_| {}),
        )
        .unwrap();
        journal.write(Entry::Notice {
            message: "password hunter2".into(),
        });
        journal.write(Entry::StepFinished {
            step: "a".into(),
            outcome: "success".into(),
            detail: None,
            outputs: vec![("k".into(), "v".into())],
            millis: 3,
        });
        let read = Journal::read(&run).unwrap();
        assert!(!read.truncated);
        assert_eq!(read.records.len(), 3);
        assert!(matches!(&read.records[1].entry, Entry::Notice { message } if message == "password ***"));
        assert_eq!(
            read.step_outcomes()[0].outputs,
            vec![("k".to_string(), "v".to_string())]
        );

        // A run killed mid-write: the half line is dropped, the rest reads.
        let path = run.join("journal.jsonl");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"at_ms\":9,\"kind\":\"no");
        std::fs::write(&path, &text).unwrap();
        let read = Journal::read(&run).unwrap();
        assert!(read.truncated);
        assert_eq!(read.records.len(), 3);
        // A broken line in the middle is an error with its line number.
        std::fs::write(
            &path,
            text.replacen("\"kind\":\"notice\"", "\"kind\":\"nope\"", 1) + "\n",
        )
        .unwrap();
        assert!(Journal::read(&run).unwrap_err().contains("journal.jsonl:2:"));
    }
}
