//! Writing a run's journal as it happens: every entry is handed to the operating system at
//! once, in one write, so a killed run leaves a journal that reads up to its last whole entry
//! (the kernel keeps what was written when the process dies). It is synced to the disk only
//! where durability matters, which the caller decides: after a change to a deploy, and at
//! the end of a run that made one. A run that changed no deploy leaves its end to the
//! kernel (written back within seconds) rather than wait for the disk: only a machine that
//! loses power in those seconds loses it. Every line passes the secret redactor before it
//! is written.
//!
//! When a write fails (the disk is full), the half-written line is cut off again, the run is
//! told once that its journal is incomplete from there and why, and nothing more is written:
//! the journal stays readable up to the failure.

use super::{Entry, FORMAT, Record, VERSION, snapshot};
use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

/// Masks secrets in a string before it is written.
pub type Mask = Box<dyn Fn(&str) -> String + Send + Sync>;
/// Told once, with the reason, when the journal stops being written.
pub type OnBreak = Box<dyn Fn(&str) + Send + Sync>;

pub struct JournalWriter {
    dir: PathBuf,
    /// Components, stored once by digest for every run of the workspace.
    store: PathBuf,
    file: Mutex<Output>,
    started: Instant,
    mask: Mask,
    on_break: OnBreak,
    components: Mutex<HashSet<String>>,
    /// Whether anything was made durable on purpose: then the end is too.
    synced: std::sync::atomic::AtomicBool,
}

struct Output {
    file: File,
    /// Bytes of whole lines written.
    written: u64,
    /// Why writing stopped.
    broken: Option<String>,
}

impl JournalWriter {
    /// Create `RUN_DIR` with its header line. `mask` masks secrets in every string written;
    /// `on_break` hears why, if writing ever stops.
    /// Components go to `store` ([`crate::component_store`]), once for all runs.
    pub fn create(dir: &Path, store: &Path, mask: Mask, on_break: OnBreak) -> std::io::Result<JournalWriter> {
        std::fs::create_dir_all(dir)?;
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(dir.join("journal.jsonl"))?;
        // Held while the run lives: how a prune tells a run still going from one that ended
        // or was killed (the kernel lets go of a dead process's lock). Where the filesystem
        // has no locks, the run is still recorded.
        let _ = file.try_lock();
        let writer = JournalWriter {
            dir: dir.to_path_buf(),
            store: store.to_path_buf(),
            file: Mutex::new(Output {
                file,
                written: 0,
                broken: None,
            }),
            started: Instant::now(),
            mask,
            on_break,
            components: Mutex::new(HashSet::new()),
            synced: std::sync::atomic::AtomicBool::new(false),
        };
        writer.write(Entry::Header {
            format: FORMAT.into(),
            version: VERSION,
            wharf: env!("CARGO_PKG_VERSION").into(),
        });
        Ok(writer)
    }

    /// Append one entry and hand it to the operating system: the size of its line.
    pub fn write(&self, entry: Entry) -> u64 {
        let record = Record {
            at_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            entry,
        };
        // Masked value by value, before JSON escaping could hide a secret's characters.
        let Ok(mut value) = serde_json::to_value(&record) else {
            return 0;
        };
        redact_value(&mut value, &self.mask);
        let mut line = value.to_string();
        line.push('\n');
        let failure = {
            let mut out = self.file.lock().unwrap();
            if out.broken.is_some() {
                return line.len() as u64;
            }
            match out.file.write_all(line.as_bytes()) {
                Ok(()) => {
                    out.written += line.len() as u64;
                    None
                }
                Err(e) => {
                    // Cut the half-written line, so the journal still reads to its end.
                    let whole = out.written;
                    let _ = out.file.set_len(whole);
                    let why = format!(
                        "{}: {e}{}",
                        self.dir.join("journal.jsonl").display(),
                        if e.kind() == std::io::ErrorKind::StorageFull {
                            " (ENOSPC: the disk is full)"
                        } else {
                            ""
                        }
                    );
                    out.broken = Some(why.clone());
                    Some(why)
                }
            }
        };
        if let Some(why) = failure {
            (self.on_break)(&why);
        }
        line.len() as u64
    }

    /// Why the journal stopped being written, if it did.
    pub fn incomplete(&self) -> Option<String> {
        self.file.lock().unwrap().broken.clone()
    }

    /// The `sha256:` digest and length of the journal's whole lines so far: what a
    /// provenance made mid-run names, checkable later against the first `length` bytes.
    pub fn digest_so_far(&self) -> std::io::Result<(String, u64)> {
        use sha2::Digest as _;
        // The file only grows: its first `written` bytes stay as they are, and are hashed
        // without holding up the entries written meanwhile.
        let written = self.file.lock().unwrap().written;
        let mut file = File::open(self.dir.join("journal.jsonl"))?;
        let mut hasher = sha2::Sha256::new();
        let copied = std::io::copy(&mut std::io::Read::take(&mut file, written), &mut hasher)?;
        Ok((format!("sha256:{}", hex::encode(hasher.finalize())), copied))
    }

    /// Make everything written so far durable on the disk.
    pub fn sync(&self) {
        let out = self.file.lock().unwrap();
        let _ = out.file.sync_data();
        self.synced.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// At the end of a run: durable if the run made something durable on the way (a deploy
    /// changed), so the record of that change is whole; otherwise left to the kernel.
    pub fn sync_at_end(&self) {
        if self.synced.load(std::sync::atomic::Ordering::Relaxed) {
            self.sync();
        }
    }

    pub fn store_pipeline(&self, text: &str) -> std::io::Result<()> {
        std::fs::write(self.dir.join("pipeline.yml"), text)
    }

    /// Store a component once per digest in the shared store; one that the run folder must
    /// carry (a step of the workspace's own, which no wharf binary holds) is also linked into
    /// the folder's `components/`, so a copy of the folder replays elsewhere.
    pub fn store_component(&self, digest: &str, bytes: &[u8], in_run_folder: bool) -> std::io::Result<()> {
        let hex = digest.trim_start_matches("sha256:").to_string();
        if !self.components.lock().unwrap().insert(hex.clone()) {
            return Ok(());
        }
        let name = format!("{hex}.wasm");
        let stored = self.store.join(&name);
        if !stored.exists() {
            std::fs::create_dir_all(&self.store)?;
            let staged = self.store.join(format!(".{name}.{}", std::process::id()));
            std::fs::write(&staged, bytes)?;
            std::fs::rename(&staged, &stored)?;
        }
        if in_run_folder {
            let linked = self.dir.join("components");
            std::fs::create_dir_all(&linked)?;
            let linked = linked.join(&name);
            if std::fs::hard_link(&stored, &linked).is_err() {
                std::fs::write(&linked, bytes)?;
            }
        }
        Ok(())
    }

    /// Start the snapshot `snapshots/NAME.tar` of the run folder: its name there, and its
    /// writer.
    pub fn snapshot(&self, name: &str) -> std::io::Result<(String, snapshot::SnapshotWriter)> {
        let file_name = format!("snapshots/{name}.tar");
        let writer = snapshot::SnapshotWriter::create(&self.dir.join(&file_name), snapshot::LIMITS)?;
        Ok((file_name, writer))
    }
}

/// Mask every string in `value`.
pub fn redact_value(value: &mut serde_json::Value, mask: &Mask) {
    match value {
        serde_json::Value::String(s) => *s = mask(s),
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| redact_value(v, mask)),
        serde_json::Value::Object(map) => map.values_mut().for_each(|v| redact_value(v, mask)),
        _ => {}
    }
}
