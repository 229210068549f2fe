//! Reading a journal back. A run killed mid-write leaves at most one partial last line; it
//! is dropped, and everything before it reads.

use super::{Entry, FORMAT, Record, VERSION};
use std::io::{BufRead, Read};
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
/// A line buffer larger than this is dropped after its line, not kept for the next.
const LINE_KEPT: usize = 1 << 20;

impl Journal {
    /// The journal of a run folder, read as a stream: a record at a time, so a long line
    /// costs its parsed value and not the whole file besides.
    pub fn read(run_dir: &Path) -> Result<Journal, String> {
        let path = wharf_fs::beneath::existing(run_dir, "journal.jsonl").map_err(|e| e.to_string())?;
        let (file, _) = wharf_fs::bounded::open(&path, JOURNAL_LIMIT).map_err(|e| e.to_string())?;
        Self::parse_from(file.take(JOURNAL_LIMIT), &path)
    }

    /// A journal from its bytes; `path` names it in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Journal, String> {
        Self::parse_from(bytes, path)
    }

    fn parse_from(reader: impl Read, path: &Path) -> Result<Journal, String> {
        let mut reader = std::io::BufReader::new(reader);
        let mut records = Vec::new();
        let mut truncated = false;
        let mut line = Vec::new();
        for number in 1.. {
            line.clear();
            reader
                .read_until(b'\n', &mut line)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if line.is_empty() {
                break;
            }
            let complete = line.last() == Some(&b'\n');
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Record>(&line) {
                Ok(record) => {
                    // A run folder may come from anywhere: a name that is not one wharf
                    // writes (a step id with `/../`) would be a path out of where a replay
                    // or a report puts things.
                    if let Some((kind, name)) = record.entry.names().into_iter().find(|(k, n)| !k.admits(n)) {
                        return Err(format!(
                            "{}:{number}: `{}` is not a valid {}; the run folder was altered or damaged",
                            path.display(),
                            name.escape_debug(),
                            kind.describe()
                        ));
                    }
                    records.push(record);
                }
                // A line without its newline is one the run did not finish writing.
                Err(_) if !complete => truncated = true,
                Err(e) => return Err(format!("{}:{number}: not a journal entry: {e}", path.display())),
            }
            // A long line's buffer is given back, not kept for the next.
            if line.capacity() > LINE_KEPT {
                line = Vec::new();
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
