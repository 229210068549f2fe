//! One change per service at a time, across processes.
//!
//! Threat: two runs (or a run and `wharf rollback`) replace the same service's instances at
//! once and leave a mix of revisions and a state file that matches neither. The lock is an
//! exclusive `flock` on `.wharf/state/locks/SERVICE.lock`, which also names the holder for
//! the message a waiting run prints. The kernel releases it when the holder's process ends,
//! however it ends, so a crashed run's lock is free at once; and taking it is one atomic
//! step, so two runs that find it free at the same moment cannot both get it. The file is
//! never removed: removing it would let a new file and the old one be locked at once.

use super::DeployError;
use rustix::fs::FlockOperation;
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    pid: u32,
    run_id: String,
    since: String,
}

#[derive(Debug)]
pub struct ServiceLock {
    /// Holding the open file holds the lock.
    file: std::fs::File,
    path: PathBuf,
}

impl ServiceLock {
    pub fn acquire(dir: &Path, service: &str, run_id: &str) -> Result<ServiceLock, DeployError> {
        let io = |source: std::io::Error| DeployError::State {
            service: service.to_string(),
            context: format!("lock for `{service}`"),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join(format!("{service}.lock"));
        for _ in 0..3 {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io)?;
            match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    let mut text = String::new();
                    let _ = (&file).take(64 * 1024).read_to_string(&mut text);
                    let holder = serde_json::from_str::<Holder>(&text).ok();
                    return Err(DeployError::Busy {
                        service: service.to_string(),
                        holder: match holder {
                            Some(h) => format!("run {} (pid {}) since {}", h.run_id, h.pid, h.since),
                            None => "another run".to_string(),
                        },
                    });
                }
                Err(e) => return Err(io(e.into())),
            }
            // Locked what the path still names? (An older wharf removed lock files.)
            let same = std::fs::metadata(&path)
                .ok()
                .zip(file.metadata().ok())
                .is_some_and(|(a, b)| a.ino() == b.ino() && a.dev() == b.dev());
            if !same {
                continue;
            }
            let me = Holder {
                pid: std::process::id(),
                run_id: run_id.to_string(),
                since: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            };
            file.set_len(0).map_err(io)?;
            file.rewind().map_err(io)?;
            file.write_all(&serde_json::to_vec(&me).unwrap_or_default())
                .map_err(io)?;
            return Ok(ServiceLock { file, path });
        }
        Err(DeployError::Busy {
            service: service.to_string(),
            holder: "another run, which took the lock while this one did".to_string(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ServiceLock {
    fn drop(&mut self) {
        // Closing the file releases the lock; the holder's name goes with it.
        let _ = self.file.set_len(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    #[test]
    fn exclusive_and_released_when_dropped_or_dead() {
        let dir = tempfile::tempdir().unwrap();
        let held = ServiceLock::acquire(dir.path(), "seed", "run-1").unwrap();
        let err = ServiceLock::acquire(dir.path(), "seed", "run-2").unwrap_err();
        assert!(
            matches!(&err, DeployError::Busy { holder, .. } if holder.starts_with("run run-1 ")),
            "{err}"
        );
        drop(held);
        let again = ServiceLock::acquire(dir.path(), "seed", "run-2").unwrap();
        drop(again);

        // A lock left by a process that no longer exists: its file, nobody holding it.
        let stale = Holder {
            pid: 999_999_999,
            run_id: "dead".into(),
            since: "then".into(),
        };
        std::fs::write(dir.path().join("seed.lock"), serde_json::to_vec(&stale).unwrap()).unwrap();
        let lock = ServiceLock::acquire(dir.path(), "seed", "run-3").unwrap();
        let text = std::fs::read_to_string(dir.path().join("seed.lock")).unwrap();
        assert!(text.contains("run-3"));
        drop(lock);
    }

    /// Many takers of one stale lock at the same instant: exactly one gets it, every time.
    #[test]
    fn racing_takers_of_a_stale_lock_get_it_once() {
        for round in 0..200 {
            let dir = Arc::new(tempfile::tempdir().unwrap());
            let stale = r#"{"pid":999999999,"comm":"wharf","run_id":"dead","since":"then"}"#;
            std::fs::write(dir.path().join("seed.lock"), stale).unwrap();
            let takers = 6;
            let barrier = Arc::new(Barrier::new(takers));
            let handles: Vec<_> = (0..takers)
                .map(|n| {
                    let (dir, barrier) = (dir.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        let lock = ServiceLock::acquire(dir.path(), "seed", &format!("run-{n}")).ok();
                        // Hold it until everyone has tried.
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        lock.is_some()
                    })
                })
                .collect();
            let winners = handles.into_iter().map(|h| h.join().unwrap()).filter(|w| *w).count();
            assert_eq!(winners, 1, "round {round}: {winners} takers hold the lock at once");
        }
    }
}
