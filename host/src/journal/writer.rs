//! Writing a run's journal as it happens: every entry is appended and flushed at once, and
//! synced to disk at every step boundary, so a killed run leaves a journal that reads up to
//! its last whole entry. Every line passes the secret redactor before it is written.

use super::{Entry, FORMAT, Record, VERSION};
use crate::events::{Event, Events, Level, Sink, Stream};
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

pub struct JournalWriter {
    dir: PathBuf,
    file: Mutex<BufWriter<File>>,
    started: Instant,
    events: Events,
    components: Mutex<HashSet<String>>,
}

/// Workspace snapshots larger than this are not kept; a replay of that step then sees an
/// empty directory and will likely diverge, which the replay reports.
pub const SNAPSHOT_LIMIT: u64 = 32 << 20;

impl JournalWriter {
    /// Create `RUN_DIR` with its header line. `events` supplies the redactor.
    pub fn create(dir: &Path, events: Events) -> std::io::Result<JournalWriter> {
        std::fs::create_dir_all(dir.join("components"))?;
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(dir.join("journal.jsonl"))?;
        let writer = JournalWriter {
            dir: dir.to_path_buf(),
            file: Mutex::new(BufWriter::new(file)),
            started: Instant::now(),
            events,
            components: Mutex::new(HashSet::new()),
        };
        writer.write(Entry::Header {
            format: FORMAT.into(),
            version: VERSION,
            wharf: env!("CARGO_PKG_VERSION").into(),
        });
        Ok(writer)
    }

    /// Append one entry and flush it.
    pub fn write(&self, entry: Entry) {
        let record = Record {
            at_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            entry,
        };
        // Masked value by value, before JSON escaping could hide a secret's characters.
        let Ok(mut value) = serde_json::to_value(&record) else {
            return;
        };
        redact_value(&mut value, &self.events);
        let line = value.to_string();
        let mut file = self.file.lock().unwrap();
        let ok = file
            .write_all(line.as_bytes())
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.flush());
        if let Err(e) = ok {
            tracing::warn!("journal {}: {e}", self.dir.display());
        }
    }

    /// Make everything written so far durable: at step boundaries and at the end.
    pub fn sync(&self) {
        let file = self.file.lock().unwrap();
        let _ = file.get_ref().sync_data();
    }

    pub fn store_pipeline(&self, text: &str) -> std::io::Result<()> {
        std::fs::write(self.dir.join("pipeline.yml"), text)
    }

    /// Store a component once per digest.
    pub fn store_component(&self, digest: &str, bytes: &[u8]) -> std::io::Result<()> {
        let hex = digest.trim_start_matches("sha256:").to_string();
        if self.components.lock().unwrap().insert(hex.clone()) {
            std::fs::write(self.dir.join("components").join(format!("{hex}.wasm")), bytes)?;
        }
        Ok(())
    }

    /// Tar the directories a step's grants open, as they are now; the file name in the run
    /// folder, or None when there is nothing to keep or it is over [`SNAPSHOT_LIMIT`].
    pub fn snapshot(&self, name: &str, dirs: &[(PathBuf, String)]) -> Option<String> {
        if dirs.is_empty() {
            return None;
        }
        let size: u64 = dirs.iter().map(|(d, _)| dir_size(d)).sum();
        if size > SNAPSHOT_LIMIT {
            self.write(Entry::Notice {
                message: format!("{name}: its workspace paths hold {size} bytes, more than a snapshot keeps; a replay will not see them"),
            });
            return None;
        }
        std::fs::create_dir_all(self.dir.join("snapshots")).ok()?;
        let file_name = format!("snapshots/{name}.tar");
        let file = File::create(self.dir.join(&file_name)).ok()?;
        let mut tar = tar::Builder::new(BufWriter::new(file));
        tar.follow_symlinks(false);
        for (dir, guest) in dirs {
            // Skip wharf's own state: it is not the step's input and may be large.
            let _ = append_tree(&mut tar, dir, Path::new(guest));
        }
        tar.into_inner().ok()?.flush().ok()?;
        Some(file_name)
    }
}

fn redact_value(value: &mut serde_json::Value, events: &Events) {
    match value {
        serde_json::Value::String(s) => *s = events.redact(s),
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| redact_value(v, events)),
        serde_json::Value::Object(map) => map.values_mut().for_each(|v| redact_value(v, events)),
        _ => {}
    }
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                if !is_state_dir(&e.path()) {
                    stack.push(e.path());
                }
            } else {
                total += meta.len();
            }
        }
    }
    total
}

/// `.wharf/runs`, `.wharf/oci`, `.wharf/state`, `.wharf/build`: wharf's own, never a step's.
fn is_state_dir(path: &Path) -> bool {
    let parent = path.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str());
    let name = path.file_name().and_then(|n| n.to_str());
    parent == Some(".wharf") && matches!(name, Some("runs" | "oci" | "state" | "build"))
}

fn append_tree<W: Write>(tar: &mut tar::Builder<W>, dir: &Path, name: &Path) -> std::io::Result<()> {
    tar.append_dir(name, dir)?;
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let child = name.join(e.file_name());
        if e.file_type()?.is_dir() {
            if !is_state_dir(&path) {
                append_tree(tar, &path, &child)?;
            }
        } else if e.file_type()?.is_file() {
            tar.append_path_with_name(&path, &child)?;
        }
    }
    Ok(())
}

/// The journal as a renderer of run events: log lines, step outcomes and notices.
impl Sink for JournalWriter {
    fn event(&self, event: &Event) {
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
        match event {
            Event::Log {
                step,
                level: l,
                stream: s,
                message,
            } => self.write(Entry::Log {
                step: step.clone(),
                level: level(l),
                stream: stream(s),
                message: message.clone(),
            }),
            Event::Annotation {
                step,
                level: l,
                message,
                file,
                line,
                ..
            } => self.write(Entry::Log {
                step: step.clone(),
                level: level(l),
                stream: "annotation".into(),
                message: match (file, line) {
                    (Some(f), Some(n)) => format!("{f}:{n}: {message}"),
                    _ => message.clone(),
                },
            }),
            Event::StepFinished {
                step,
                outcome,
                duration,
                detail,
                outputs,
            } => {
                self.write(Entry::StepFinished {
                    step: step.clone(),
                    outcome: outcome.as_str().into(),
                    detail: detail.clone(),
                    outputs: outputs.clone(),
                    millis: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
                });
                self.sync();
            }
            Event::Notice { message } => self.write(Entry::Notice {
                message: message.clone(),
            }),
            _ => {}
        }
    }
}
