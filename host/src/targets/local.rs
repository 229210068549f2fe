//! The `local` target, the embedded default: each instance is a process started from the
//! image's unpacked root filesystem and entrypoint, on a port of its own (`$PORT`), so two
//! instances never fight over one. Output goes to `.wharf/state/logs/SERVICE/ID.log`;
//! instances outlive the wharf process and are found again by pid. The process writes its
//! own pid to `.wharf/state/instances/SERVICE/ID.pid` before it becomes the service, so an
//! instance whose start wharf did not live to record is found by its id all the same.
//!
//! It is not a container: the process sees the host's filesystem and network. It exists so
//! the pipeline runs on a laptop or CI runner with nothing installed.

use super::spec::{Instance, Spec};
use super::{Host, Target, TargetError, TargetPaths, free_port, labels_from_env};
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
        Ok(self.rootfs_dir().join(hex))
    }

    fn rootfs_dir(&self) -> PathBuf {
        self.paths.state.join("rootfs")
    }

    /// Where instance `id` of `service` writes its pid.
    fn pid_file(&self, service: &str, id: &str) -> PathBuf {
        self.paths
            .state
            .join("instances")
            .join(service)
            .join(format!("{id}.pid"))
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
        let pid_file = self.pid_file(&spec.service, id);
        if let Some(dir) = pid_file.parent() {
            std::fs::create_dir_all(dir).map_err(TargetError::io(dir.display().to_string()))?;
        }
        let pid_path = std::ffi::CString::new(pid_file.as_os_str().as_encoded_bytes())
            .map_err(|e| TargetError::io(pid_file.display().to_string())(std::io::Error::other(e)))?;
        // SAFETY: the hook runs in the child between fork and exec, and makes only
        // async-signal-safe calls (open, getpid, write, close) on memory prepared before.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, move || write_own_pid(&pid_path));
        }
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

/// In the child before exec: write its pid to `path`, so the instance is known by its id
/// whether or not the wharf that started it lives to record it.
fn write_own_pid(path: &std::ffi::CStr) -> std::io::Result<()> {
    // SAFETY: open, getpid, write and close are async-signal-safe; the buffer is the stack's.
    unsafe {
        let fd = libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o644,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut digits = [0u8; 12];
        let mut at = digits.len();
        let mut pid = libc::getpid().unsigned_abs();
        loop {
            at -= 1;
            digits[at] = b'0' + (pid % 10) as u8;
            pid /= 10;
            if pid == 0 {
                break;
            }
        }
        let wrote = libc::write(fd, digits[at..].as_ptr().cast(), digits.len() - at);
        libc::close(fd);
        if wrote < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The variables of process `pid` (`/proc/PID/environ`), within a bound.
fn environ_of(pid: libc::pid_t) -> Vec<(String, String)> {
    let Ok(bytes) = crate::bounded::read(std::path::Path::new(&format!("/proc/{pid}/environ")), 1 << 20) else {
        return Vec::new();
    };
    bytes
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = std::str::from_utf8(kv).ok()?;
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
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
        self.stop(instance).await?;
        if let Some(service) = instance.id.rsplit_once('-').map(|(s, _)| s) {
            let _ = std::fs::remove_file(self.pid_file(service, &instance.id));
        }
        Ok(())
    }

    async fn is_running(&self, instance: &Instance) -> bool {
        alive(instance)
    }

    /// The process that wrote `starting`'s pid file, if it lives and is that instance: its
    /// environment names the instance, and its program runs from this revision's root
    /// filesystem (a reused pid is neither).
    async fn find(&self, spec: &Spec, starting: &Instance) -> Result<Option<Instance>, TargetError> {
        let pid_file = self.pid_file(&spec.service, &starting.id);
        let Ok(text) = crate::bounded::read(&pid_file, 32) else {
            return Ok(None);
        };
        let Some(pid) = String::from_utf8_lossy(&text)
            .trim()
            .parse::<libc::pid_t>()
            .ok()
            .filter(|p| *p > 0)
        else {
            return Ok(None);
        };
        let candidate = Instance {
            handle: handle_of(pid.unsigned_abs()),
            ..starting.clone()
        };
        let environ = environ_of(pid);
        let var = |name: &str| environ.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let from_rootfs = std::fs::read_link(format!("/proc/{pid}/exe"))
            .is_ok_and(|exe| exe.starts_with(self.rootfs(spec).unwrap_or_default()));
        if !alive(&candidate) || var("WHARF_INSTANCE") != Some(starting.id.as_str()) || !from_rootfs {
            return Ok(None);
        }
        let port = var("PORT").and_then(|p| p.parse().ok()).unwrap_or(0);
        let logs = self.paths.state.join("logs").join(&spec.service);
        Ok(Some(Instance {
            address: "127.0.0.1".into(),
            port,
            running: true,
            host: "local".into(),
            log: Some(logs.join(format!("{}.log", starting.id)).display().to_string()),
            condition: None,
            ..candidate
        }))
    }

    /// Root filesystems of revisions no service runs or may roll back to go; one unpacked
    /// in the last ten minutes stays, as its deploy may not have recorded it yet.
    async fn retain(&self, live: &std::collections::BTreeSet<String>) {
        let keep: std::collections::BTreeSet<&str> = live.iter().filter_map(|d| digest_hex(d)).collect();
        let Ok(entries) = std::fs::read_dir(self.rootfs_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(meta) = entry.metadata() else { continue };
            let unpacked = meta.modified().unwrap_or(std::time::SystemTime::now());
            let young = unpacked.elapsed().map_or(true, |age| age < Duration::from_secs(600));
            // `HEX` and `HEX.tmpPID` (a staging directory of an unpack in progress).
            let digest = name.split('.').next().unwrap_or_default();
            if keep.contains(digest) || young || !meta.is_dir() {
                continue;
            }
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
