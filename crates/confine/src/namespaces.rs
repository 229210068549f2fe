//! The namespaces the confinement process makes once for a run, at `Level::Full`: a user
//! namespace (where wharf is not root, so the others may be made), a network namespace with
//! only a loopback, and a mount namespace whose root holds only what the run's programs may
//! reach. Nothing else of the host exists there: no other workspace, no `/root`, no socket
//! of the host (Landlock does not govern connecting to one by path; here there is none to
//! connect to), and not wharf's own `.wharf`, which an empty directory covers.
//!
//! Every path keeps its host name inside, so the host and its programs speak of the same
//! paths.

use crate::policy::Setup;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Devices a program sees in its `/dev`.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

fn c(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::other("a NUL byte in a path"))
}

fn check(what: &str, ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let source = source.map(c).transpose()?;
    let target_c = c(target)?;
    let fstype = fstype.map(|f| CString::new(f).expect("no NUL"));
    let data = data.map(|d| CString::new(d).expect("no NUL"));
    // SAFETY: every pointer is a valid C string or null, alive for the call.
    let ret = unsafe {
        libc::mount(
            source.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            target_c.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            data.as_ref().map_or(std::ptr::null(), |s| s.as_ptr().cast()),
        )
    };
    check(&format!("mount {}", target.display()), ret)
}

/// Make the namespaces and enter the new root; returns why not where the kernel refuses.
pub fn enter(setup: &Setup, root: bool) -> io::Result<()> {
    let (uid, gid) = (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw());
    let mut flags = libc::CLONE_NEWNS | libc::CLONE_NEWNET;
    if !root {
        flags |= libc::CLONE_NEWUSER | libc::CLONE_NEWPID;
    }
    // SAFETY: plain system call; this process has one thread.
    check("unshare (user namespaces)", unsafe { libc::unshare(flags) })?;
    if !root {
        std::fs::write("/proc/self/setgroups", "deny")?;
        std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1"))?;
        std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1"))?;
        // Only a process namespace of its own lets a user namespace mount a `/proc`; the
        // host's cannot be, and bound in it would list every process of the host.
        become_first_process()?;
    }
    loopback_up()?;
    mount(None, Path::new("/"), None, libc::MS_REC | libc::MS_PRIVATE, None)?;
    build_root(setup)
}

/// Go on as the first process of the new process namespace; this process stays outside
/// and ends as that one does, so whoever waits for it (wharf) still can.
fn become_first_process() -> io::Result<()> {
    // SAFETY: this process has one thread; the parent only waits and exits.
    let child = unsafe { libc::fork() };
    check("fork", child)?;
    if child > 0 {
        // SAFETY: closing our copy of the socket, then waiting for our own child.
        unsafe {
            libc::close(0);
            let mut status = 0;
            while libc::waitpid(child, &mut status, 0) < 0 {
                if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    libc::_exit(1);
                }
            }
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            };
            libc::_exit(code)
        }
    }
    // Killing the process wharf holds ends this one, and with it every program.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
    Ok(())
}

/// Bring the loopback interface of this network namespace up.
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: an ioctl on a socket of our own with a zeroed request naming `lo`.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        check("socket", fd)?;
        let mut request: libc::ifreq = std::mem::zeroed();
        request.ifr_name[0] = b'l' as libc::c_char;
        request.ifr_name[1] = b'o' as libc::c_char;
        let got = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut request);
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        let set = libc::ioctl(fd, libc::SIOCSIFFLAGS, &mut request);
        libc::close(fd);
        check("loopback flags", got)?;
        check("loopback up", set)
    }
}

/// The new root: a tmpfs with the run's paths bound in where they are on the host, then
/// made `/`. It is made on a private `/tmp` (this namespace's own); what it binds is held
/// open first, so paths beneath the host's `/tmp` (a workspace there) are bound all the same.
fn build_root(setup: &Setup) -> io::Result<()> {
    let mut binds: Vec<(PathBuf, Source, bool)> = Vec::new();
    for (paths, write) in [
        (&setup.system, false),
        (&setup.host_read, false),
        (&setup.host_write, true),
    ] {
        for path in paths {
            binds.push((path.clone(), Source::open(path)?, write));
        }
    }
    binds.push((setup.workspace.clone(), Source::open(&setup.workspace)?, true));
    let temp = Source::open(&setup.temp)?;
    mount(
        None,
        Path::new("/tmp"),
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=0700,size=1m"),
    )?;
    let new_root = PathBuf::from("/tmp/root");
    std::fs::create_dir_all(&new_root)?;
    mount(
        None,
        &new_root,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=0755,size=1m"),
    )?;
    let inside = |path: &Path| new_root.join(path.strip_prefix("/").unwrap_or(path));
    for (path, source, write) in &binds {
        source.place(&inside(path), *write)?;
    }
    // wharf's state is covered; the steps' temporary directories are put back on top.
    if setup.state.is_dir() {
        let state = inside(&setup.state);
        mount(
            None,
            &state,
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
            Some("mode=0755,size=64k"),
        )?;
        temp.place(&inside(&setup.temp), true)?;
        remount_read_only(&state)?;
    }
    std::fs::create_dir_all(inside(Path::new("/tmp")))?;
    devices(&inside(Path::new("/dev")))?;
    let proc = inside(Path::new("/proc"));
    std::fs::create_dir_all(&proc)?;
    // Only the processes a program may trace (its own) are listed to it.
    mount(
        None,
        &proc,
        Some("proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some("hidepid=ptraceable"),
    )?;
    let old = new_root.join(".old");
    std::fs::create_dir_all(&old)?;
    rustix::process::pivot_root(&new_root, &old)?;
    rustix::process::chdir("/")?;
    rustix::mount::unmount("/.old", rustix::mount::UnmountFlags::DETACH)?;
    std::fs::remove_dir("/.old")?;
    remount_read_only(Path::new("/"))
}

/// What a path of the host is bound from: held open, or (a symbolic link) made again.
enum Source {
    Missing,
    Link(PathBuf),
    Dir(std::os::fd::OwnedFd),
    File(std::os::fd::OwnedFd),
}

impl Source {
    fn open(path: &Path) -> io::Result<Source> {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return Ok(Source::Missing);
        };
        if meta.file_type().is_symlink() {
            return Ok(Source::Link(std::fs::read_link(path)?));
        }
        let fd = rustix::fs::open(
            path,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        Ok(if meta.is_dir() {
            Source::Dir(fd)
        } else {
            Source::File(fd)
        })
    }

    /// Bind it at `to`, read-only unless `write`.
    fn place(&self, to: &Path, write: bool) -> io::Result<()> {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let fd = match self {
            Source::Missing => return Ok(()),
            Source::Link(target) => {
                if std::fs::symlink_metadata(to).is_err() {
                    std::os::unix::fs::symlink(target, to)?;
                }
                return Ok(());
            }
            Source::Dir(fd) => {
                std::fs::create_dir_all(to)?;
                fd
            }
            Source::File(fd) => {
                if std::fs::symlink_metadata(to).is_err() {
                    std::fs::write(to, "")?;
                }
                fd
            }
        };
        use std::os::fd::AsRawFd;
        let from = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        mount(Some(&from), to, None, libc::MS_BIND | libc::MS_REC, None)?;
        if !write {
            remount_read_only(to)?;
        }
        Ok(())
    }
}

/// Remount a bind read-only, keeping the flags the kernel locks on it (`nosuid`, `nodev`,
/// `noexec` of the mount it came from).
fn remount_read_only(path: &Path) -> io::Result<()> {
    let kept = rustix::fs::statvfs(path)?.f_flag;
    let mut flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY;
    for (vfs, ms) in [
        (rustix::fs::StatVfsMountFlags::NOSUID, libc::MS_NOSUID),
        (rustix::fs::StatVfsMountFlags::NODEV, libc::MS_NODEV),
        (rustix::fs::StatVfsMountFlags::NOEXEC, libc::MS_NOEXEC),
        (rustix::fs::StatVfsMountFlags::NOATIME, libc::MS_NOATIME),
        (rustix::fs::StatVfsMountFlags::NODIRATIME, libc::MS_NODIRATIME),
        (rustix::fs::StatVfsMountFlags::RELATIME, libc::MS_RELATIME),
    ] {
        if kept.contains(vfs) {
            flags |= ms;
        }
    }
    mount(None, path, None, flags, None)
}

/// A `/dev` of a few devices bound from the host, the usual links, and a private `shm`.
fn devices(dev: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dev)?;
    mount(
        None,
        dev,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("mode=0755,size=64k"),
    )?;
    for device in DEVICES {
        let from = PathBuf::from("/dev").join(device);
        if from.exists() {
            let to = dev.join(device);
            std::fs::write(&to, "")?;
            mount(Some(&from), &to, None, libc::MS_BIND, None)?;
        }
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(name))?;
    }
    let shm = dev.join("shm");
    std::fs::create_dir_all(&shm)?;
    mount(
        None,
        &shm,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=1777,size=64m"),
    )?;
    remount_read_only(dev)
}
