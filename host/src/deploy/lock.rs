//! One change per service at a time, across processes.
//!
//! Threat: two runs (or a run and `wharf rollback`) replace the same service's instances at
//! once and leave a mix of revisions and a state file that matches neither. The lock is a
//! file linked into place only if none exists; it names the holder's pid, so it outlives a crash, and a lock
//! whose process is gone is recognised as stale and taken over.

use crate::capabilities::step_error;
use crate::engine::bindings::wharf::step::types::{ErrorKind, StepError};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    pid: u32,
    /// The holder's executable name, to tell a reused pid from the holder.
    comm: String,
    run_id: String,
    since: String,
}

#[derive(Debug)]
pub struct ServiceLock {
    path: PathBuf,
}

fn comm_of(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Alive and still the same program.
fn holder_alive(holder: &Holder) -> bool {
    comm_of(holder.pid).is_some_and(|comm| comm == holder.comm)
}

impl ServiceLock {
    pub fn acquire(dir: &Path, service: &str, run_id: &str) -> Result<ServiceLock, StepError> {
        let io = |e: std::io::Error| step_error(ErrorKind::Permanent, format!("lock for `{service}`: {e}"));
        std::fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join(format!("{service}.lock"));
        let me = Holder {
            pid: std::process::id(),
            comm: comm_of(std::process::id()).unwrap_or_default(),
            run_id: run_id.to_string(),
            since: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        };
        // Written whole under a temporary name, then linked into place: the lock never
        // exists half-written, so a reader never takes a live lock for a broken one. The
        // temporary name goes away when `staged` is dropped.
        let mut staged = tempfile::Builder::new()
            .prefix(&format!(".{service}.lock."))
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .tempfile_in(dir)
            .map_err(io)?;
        staged
            .write_all(&serde_json::to_vec(&me).unwrap_or_default())
            .map_err(io)?;
        for _ in 0..2 {
            match std::fs::hard_link(staged.path(), &path) {
                Ok(()) => return Ok(ServiceLock { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder: Option<Holder> =
                        std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok());
                    match holder {
                        Some(h) if holder_alive(&h) => {
                            return Err(step_error(
                                ErrorKind::Transient,
                                format!(
                                    "service `{service}` is being changed by run {} (pid {}) since {}; wait for it to finish",
                                    h.run_id, h.pid, h.since
                                ),
                            ));
                        }
                        // The holder died (or the file is unreadable): a stale lock.
                        _ => {
                            tracing::warn!("taking over the stale lock {}", path.display());
                            let _ = std::fs::remove_file(&path);
                        }
                    }
                }
                Err(e) => return Err(io(e)),
            }
        }
        Err(step_error(
            ErrorKind::Transient,
            format!("could not take the lock for `{service}`; try again"),
        ))
    }
}

impl Drop for ServiceLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_and_stale_locks_are_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let held = ServiceLock::acquire(dir.path(), "seed", "run-1").unwrap();
        let err = ServiceLock::acquire(dir.path(), "seed", "run-2").unwrap_err();
        assert!(err.message.contains("is being changed by run run-1"), "{}", err.message);
        drop(held);
        assert!(!dir.path().join("seed.lock").exists());

        // A lock left by a process that no longer exists.
        let stale = Holder {
            pid: 999_999_999,
            comm: "wharf".into(),
            run_id: "dead".into(),
            since: "then".into(),
        };
        std::fs::write(dir.path().join("seed.lock"), serde_json::to_vec(&stale).unwrap()).unwrap();
        let lock = ServiceLock::acquire(dir.path(), "seed", "run-3").unwrap();
        let text = std::fs::read_to_string(dir.path().join("seed.lock")).unwrap();
        assert!(text.contains("run-3"));
        drop(lock);
    }
}
