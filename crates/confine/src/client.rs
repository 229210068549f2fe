//! wharf's side of the confinement process: start it once, hand it programs, learn when
//! they end.

use crate::policy::{Program, Setup};
use crate::support::Report;
use crate::wire::{self, FromConfiner, MAX_MESSAGE, ToConfiner};
use rustix::fd::{AsFd, OwnedFd};
use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;

/// Why a program did not start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
    #[error("the confinement process is gone: {0}")]
    Gone(String),
}

/// How a program ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// In an audit: what it reached beyond its grants (a path a grant would name, and
    /// whether it wrote).
    pub beyond: Vec<(std::path::PathBuf, bool)>,
}

type StartedReply = Result<(OwnedFd, Option<OwnedFd>), SpawnError>;

#[derive(Default)]
struct Waiting {
    started: HashMap<u64, oneshot::Sender<StartedReply>>,
    exited: HashMap<u64, oneshot::Sender<Exit>>,
}

/// The running confinement process.
pub struct Confiner {
    socket: Arc<AsyncFd<OwnedFd>>,
    report: Report,
    waiting: Arc<Mutex<Waiting>>,
    next: AtomicU64,
    process: Mutex<std::process::Child>,
}

impl Confiner {
    /// Start `exe __confine` (wharf itself) with `setup`, and wait until it has made it.
    pub async fn start(exe: &Path, setup: Setup) -> io::Result<Confiner> {
        let (ours, theirs) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC | rustix::net::SocketFlags::NONBLOCK,
            None,
        )?;
        rustix::io::ioctl_fionbio(&theirs, false)?;
        let process = std::process::Command::new(exe)
            .arg("__confine")
            .env_clear()
            .stdin(std::process::Stdio::from(theirs))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()?;
        // SAFETY: the AsyncFd owns `ours`, an open socket, for its whole life.
        let socket = Arc::new(unsafe { AsyncFd::register(ours) }.map_err(|e| e.into_parts().1)?);
        send(&socket, &ToConfiner::Setup(setup), &[]).await?;
        let mut buffer = vec![0u8; MAX_MESSAGE];
        let report = match receive(&socket, &mut buffer).await? {
            Some((FromConfiner::Ready(report), _)) => report,
            _ => return Err(io::Error::other("the confinement process did not get ready")),
        };
        let waiting: Arc<Mutex<Waiting>> = Arc::default();
        tokio::spawn(listen(socket.clone(), waiting.clone(), buffer));
        Ok(Confiner {
            socket,
            report,
            waiting,
            next: AtomicU64::new(1),
            process: Mutex::new(process),
        })
    }

    pub fn report(&self) -> &Report {
        &self.report
    }

    /// Start `program` with its stdout and stderr going to `stdout` and `stderr`.
    pub async fn spawn(&self, program: Program, stdout: OwnedFd, stderr: OwnedFd) -> Result<Running, SpawnError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (started, on_start) = oneshot::channel();
        let (exited, on_exit) = oneshot::channel();
        {
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            waiting.started.insert(id, started);
            waiting.exited.insert(id, exited);
        }
        let message = ToConfiner::Spawn { id, program };
        if let Err(e) = send(&self.socket, &message, &[stdout.as_fd(), stderr.as_fd()]).await {
            self.forget(id);
            return Err(if e.kind() == io::ErrorKind::Other {
                SpawnError::Refused(e.to_string())
            } else {
                SpawnError::Gone(e.to_string())
            });
        }
        drop((stdout, stderr));
        let (pidfd, proxy) = on_start
            .await
            .map_err(|_| SpawnError::Gone("it ended while starting a program".into()))??;
        Ok(Running {
            id,
            pidfd,
            proxy,
            exit: on_exit,
            socket: self.socket.clone(),
        })
    }

    fn forget(&self, id: u64) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        waiting.started.remove(&id);
        waiting.exited.remove(&id);
    }
}

impl Drop for Confiner {
    fn drop(&mut self) {
        // Told that wharf is done, it ends every program and what they left, and exits; a
        // moment later it is killed however far it got.
        let _ = rustix::net::shutdown(self.socket.get_ref(), rustix::net::Shutdown::Both);
        let mut process = self.process.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while matches!(process.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let _ = process.kill();
        let _ = process.wait();
    }
}

/// A started program.
pub struct Running {
    id: u64,
    /// Its pidfd: it turns readable when the program ends.
    pub pidfd: OwnedFd,
    /// Where its proxy listens, when it may reach the network.
    pub proxy: Option<OwnedFd>,
    exit: oneshot::Receiver<Exit>,
    socket: Arc<AsyncFd<OwnedFd>>,
}

impl Running {
    /// Wait for it to end.
    pub async fn wait(&mut self) -> Exit {
        (&mut self.exit).await.unwrap_or(Exit {
            code: None,
            signal: Some(libc::SIGKILL),
            beyond: Vec::new(),
        })
    }

    /// What kills it and everything it started, to hold beside waiting for it.
    pub fn killer(&self) -> std::io::Result<Killer> {
        Ok(Killer {
            id: self.id,
            pidfd: self.pidfd.try_clone()?,
            socket: self.socket.clone(),
        })
    }
}

/// Kills a started program and everything it started.
pub struct Killer {
    id: u64,
    pidfd: OwnedFd,
    socket: Arc<AsyncFd<OwnedFd>>,
}

impl Killer {
    pub fn kill(&self) {
        let _ = rustix::process::pidfd_send_signal(&self.pidfd, rustix::process::Signal::KILL);
        let _ = wire::send(self.socket.get_ref().as_fd(), &ToConfiner::Kill { id: self.id }, &[]);
    }
}

async fn send(socket: &AsyncFd<OwnedFd>, message: &ToConfiner, fds: &[rustix::fd::BorrowedFd<'_>]) -> io::Result<()> {
    loop {
        let mut guard = socket.writable().await?;
        match guard.try_io(|s| wire::send(s.get_ref().as_fd(), message, fds)) {
            Ok(result) => return result,
            Err(_would_block) => continue,
        }
    }
}

async fn receive(socket: &AsyncFd<OwnedFd>, buffer: &mut [u8]) -> io::Result<Option<(FromConfiner, Vec<OwnedFd>)>> {
    loop {
        let mut guard = socket.readable().await?;
        match guard.try_io(|s| wire::recv(s.get_ref().as_fd(), buffer)) {
            Ok(result) => return result,
            Err(_would_block) => continue,
        }
    }
}

/// Hand each message to whoever waits for it, until the confinement process is gone.
async fn listen(socket: Arc<AsyncFd<OwnedFd>>, waiting: Arc<Mutex<Waiting>>, mut buffer: Vec<u8>) {
    loop {
        let got = receive(&socket, &mut buffer).await;
        let mut waiting = waiting.lock().unwrap_or_else(|e| e.into_inner());
        match got {
            Ok(Some((FromConfiner::Started { id }, mut fds))) => {
                if let Some(to) = waiting.started.remove(&id) {
                    let reply = if fds.is_empty() {
                        Err(SpawnError::Gone("no pidfd came with the program".into()))
                    } else {
                        let pidfd = fds.remove(0);
                        Ok((pidfd, (!fds.is_empty()).then(|| fds.remove(0))))
                    };
                    let _ = to.send(reply);
                }
            }
            Ok(Some((FromConfiner::Failed { id, error, missing }, _))) => {
                waiting.exited.remove(&id);
                if let Some(to) = waiting.started.remove(&id) {
                    let _ = to.send(Err(if missing {
                        SpawnError::NotFound(error)
                    } else {
                        SpawnError::Refused(error)
                    }));
                }
            }
            Ok(Some((
                FromConfiner::Exited {
                    id,
                    code,
                    signal,
                    beyond,
                },
                _,
            ))) => {
                if let Some(to) = waiting.exited.remove(&id) {
                    let _ = to.send(Exit { code, signal, beyond });
                }
            }
            Ok(Some((FromConfiner::Ready(_), _))) => {}
            Ok(None) | Err(_) => {
                // Gone: every waiter learns so (its sender dropped).
                waiting.started.clear();
                waiting.exited.clear();
                return;
            }
        }
    }
}
