//! The `local` target, the embedded default: each instance is a process started from the
//! image's unpacked root filesystem and entrypoint, on a port of its own (`$PORT`), so two
//! instances never fight over one. Output goes to `.wharf/state/logs/SERVICE/ID.log`;
//! instances outlive the wharf process and are found again by pid.
//!
//! It is not a container: the process sees the host's filesystem and network. It exists so
//! the pipeline runs on a laptop or CI runner with nothing installed.

use super::{Host, Target, TargetError, TargetPaths, free_port, labels_from_env};
use crate::deploy::state::{Instance, Spec};
use crate::oci::layout::{Store, StoredImage};
use crate::oci::reference::ImageRef;
use crate::oci::registry::{self, Credentials, Registry};
use crate::oci::{digest_hex, unpack};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

pub struct LocalTarget {
    paths: TargetPaths,
}

impl LocalTarget {
    pub fn new(paths: TargetPaths) -> Self {
        Self { paths }
    }

    fn rootfs(&self, spec: &Spec) -> Result<PathBuf, TargetError> {
        let hex = digest_hex(&spec.revision.digest).ok_or_else(|| TargetError::Unrunnable {
            image: spec.revision.image.clone(),
            why: format!("has `{}`, not a sha256 digest", spec.revision.digest),
        })?;
        Ok(self.paths.state.join("rootfs").join(hex))
    }

    fn store(&self) -> Result<Store, TargetError> {
        Store::open(&self.paths.store).map_err(TargetError::io(format!("image store {}", self.paths.store.display())))
    }

    fn image(&self, spec: &Spec) -> Result<StoredImage, TargetError> {
        self.store()?
            .resolve(None, Some(&spec.revision.digest))
            .map_err(TargetError::io(format!("image store {}", self.paths.store.display())))?
            .ok_or_else(|| TargetError::NotInStore {
                image: spec.revision.image.clone(),
            })
    }

    fn spawn(&self, spec: &Spec, id: &str) -> Result<Instance, TargetError> {
        let image = self.image(spec)?;
        let rootfs = self.rootfs(spec)?;
        let config = image.config.config;
        let mut argv: Vec<String> = config.entrypoint.unwrap_or_default();
        argv.extend(config.cmd.unwrap_or_default());
        let Some(program) = argv.first() else {
            return Err(TargetError::Unrunnable {
                image: spec.revision.image.clone(),
                why: "has neither entrypoint nor cmd: nothing to run".into(),
            });
        };
        // Resolved inside the root filesystem as a container would (`/bin/sh -> /bin/dash`
        // means the image's dash): an image's links never lead to the host's programs.
        let in_root = |path: &str, kind| {
            crate::beneath::resolve(&rootfs, path, crate::beneath::Scope::InRoot, kind).map_err(|source| {
                TargetError::Entrypoint {
                    image: spec.revision.image.clone(),
                    path: path.to_string(),
                    source,
                }
            })
        };
        let program_path = in_root(program, crate::beneath::Kind::Any)?;
        let workdir = in_root(
            config.working_dir.as_deref().unwrap_or("/"),
            crate::beneath::Kind::Directory,
        )?;
        let port = free_port().map_err(TargetError::io("no free port"))?;
        let logs = self.paths.state.join("logs").join(&spec.service);
        std::fs::create_dir_all(&logs).map_err(TargetError::io(logs.display().to_string()))?;
        let log_path = logs.join(format!("{id}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(TargetError::io(log_path.display().to_string()))?;
        let mut command = std::process::Command::new(&program_path);
        command
            .args(&argv[1..])
            .current_dir(&workdir)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(TargetError::io(log_path.display().to_string()))?,
            )
            .stderr(log);
        for kv in config.env.unwrap_or_default() {
            if let Some((k, v)) = kv.split_once('=') {
                command.env(k, v);
            }
        }
        command.envs(spec.env.iter().map(|(k, v)| (k, v)));
        command.env("PORT", port.to_string()).env("WHARF_INSTANCE", id);
        // Its own process group: a Ctrl-C at the terminal stops wharf, not the service.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().map_err(TargetError::io(format!(
            "cannot start {} from {}",
            program,
            rootfs.display()
        )))?;
        Ok(Instance {
            id: id.to_string(),
            digest: spec.revision.digest.clone(),
            version: spec.revision.version.clone(),
            address: "127.0.0.1".into(),
            port,
            running: true,
            host: "local".into(),
            handle: handle_of(child.id()),
            labels: spec.labels.clone(),
            log: Some(log_path.display().to_string()),
            condition: None,
        })
    }
}

/// An instance's handle is `PID:STARTTIME`: the pid, and when that process started (field
/// 22 of `/proc/PID/stat`), so a reused pid is never taken for the instance.
fn pid_of(instance: &Instance) -> Option<libc::pid_t> {
    instance.handle.split(':').next()?.parse().ok()
}

fn start_time(pid: libc::pid_t) -> Option<(char, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some((fields.first()?.chars().next()?, fields.get(19)?.to_string()))
}

fn handle_of(pid: u32) -> String {
    let pid = libc::pid_t::try_from(pid).unwrap_or_default();
    format!("{pid}:{}", start_time(pid).map(|(_, t)| t).unwrap_or_default())
}

/// Resolves when process `pid` has ended (a pidfd turns readable), or None when the kernel
/// cannot say (no pidfd support, the process is gone already).
fn exit_of(pid: libc::pid_t) -> Option<impl Future<Output = ()>> {
    let pid = rustix::process::Pid::from_raw(pid)?;
    let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()?;
    // SAFETY: the AsyncFd owns `fd`, an open pidfd, for its whole life.
    let fd = unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.ok()?;
    Some(async move {
        let _ = fd.readable().await;
    })
}

/// Alive, not a zombie, and the same process that was started (not a reused pid).
fn alive(instance: &Instance) -> bool {
    let Some(pid) = pid_of(instance) else { return false };
    // Reap it if it is our exited child.
    // SAFETY: waitpid with WNOHANG on a pid has no memory-safety preconditions.
    unsafe {
        libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG);
    }
    match start_time(pid) {
        Some((state, started)) => !matches!(state, 'Z' | 'X') && instance.handle.ends_with(&format!(":{started}")),
        None => false,
    }
}

#[async_trait::async_trait]
impl Target for LocalTarget {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn hosts(&self) -> Result<Vec<Host>, TargetError> {
        Ok(vec![Host {
            name: "local".into(),
            labels: labels_from_env(),
        }])
    }

    async fn prepare(&self, spec: &Spec) -> Result<(), TargetError> {
        let store = self.store()?;
        let present = store
            .resolve(None, Some(&spec.revision.digest))
            .map_err(TargetError::io(format!("image store {}", self.paths.store.display())))?;
        let image = match present {
            Some(image) => image,
            None => {
                let reference = ImageRef::parse(&spec.revision.image).map_err(TargetError::BadReference)?;
                let Some(host) = &reference.registry else {
                    return Err(TargetError::NotInStore {
                        image: spec.revision.image.clone(),
                    });
                };
                let registry = Registry::new(host, Credentials::default())?;
                registry::pull(&store, &registry, &reference.repository, &spec.revision.digest, None).await?
            }
        };
        let rootfs = self.rootfs(spec)?;
        if rootfs.exists() {
            return Ok(());
        }
        let staging = rootfs.with_extension(format!("tmp{}", std::process::id()));
        let store_dir = self.paths.store.clone();
        let staged = staging.clone();
        tokio::task::spawn_blocking(move || {
            let store = Store::open(&store_dir)?;
            unpack::unpack(&store, &image, &staged)
        })
        .await
        .map_err(|e| TargetError::io(format!("unpacking {}", spec.revision.image))(std::io::Error::other(e)))?
        .map_err(|e| {
            let _ = std::fs::remove_dir_all(&staging);
            TargetError::io(format!("unpacking {}", spec.revision.image))(e)
        })?;
        if let Err(e) = std::fs::rename(&staging, &rootfs) {
            let _ = std::fs::remove_dir_all(&staging);
            // Another run unpacked the same digest meanwhile: theirs is as good.
            if !rootfs.exists() {
                return Err(TargetError::io(rootfs.display().to_string())(e));
            }
        }
        Ok(())
    }

    async fn start(&self, spec: &Spec, id: &str, _host: &Host) -> Result<Instance, TargetError> {
        self.spawn(spec, id)
    }

    async fn stop(&self, instance: &Instance) -> Result<(), TargetError> {
        let Some(pid) = pid_of(instance) else { return Ok(()) };
        if !alive(instance) {
            return Ok(());
        }
        // A handle on the process itself: its end is an event to wait for, not to poll.
        let exited = exit_of(pid);
        // SAFETY: signalling a process group has no memory-safety preconditions.
        unsafe {
            libc::killpg(pid, libc::SIGTERM);
        }
        let ended = match exited {
            Some(exited) => tokio::time::timeout(Duration::from_secs(5), exited).await.is_ok(),
            None => false,
        };
        if !ended && alive(instance) {
            // SAFETY: as above.
            unsafe {
                libc::killpg(pid, libc::SIGKILL);
            }
            if let Some(exited) = exit_of(pid) {
                let _ = tokio::time::timeout(Duration::from_secs(5), exited).await;
            }
        }
        alive(instance); // reaps it when it is our child
        Ok(())
    }

    async fn resume(&self, spec: &Spec, instance: &Instance) -> Result<Instance, TargetError> {
        self.spawn(spec, &instance.id)
    }

    async fn remove(&self, instance: &Instance) -> Result<(), TargetError> {
        self.stop(instance).await
    }

    async fn is_running(&self, instance: &Instance) -> bool {
        alive(instance)
    }
}
