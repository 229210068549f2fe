//! What an audited program opens (`wharf run --audit`), seen through seccomp's user
//! notification. Landlock refuses without telling anyone, and a refusal in the middle of a
//! build is rarely reported by the path it hit; so in an audit a program runs with the run's
//! whole view and a filter that stops each call naming a path until this process has read
//! the path and let the call go on. What lay beyond the program's grants goes back to wharf
//! with its end, cut to what a grant names.
//!
//! It sees what the program asks for, not what the kernel then decides: it is an adviser, not
//! part of the boundary (the call goes on under the program's Landlock layer and filter).

use crate::policy::{Program, Setup};
use rustix::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::collections::BTreeSet;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// At most this many paths beyond the grants are kept of one program (they are cut to a
/// grant's depth, so a build needs a handful).
const MOST: usize = 128;
/// A path longer than this is not read from the program.
const PATH_MAX: usize = 4096;

/// How a call names its path: (the system call, the argument of the directory it is
/// relative to, the path's argument, what it does).
#[derive(Clone, Copy)]
enum Access {
    /// By the flags in an argument (`open`'s), or in `openat2`'s `struct open_how`.
    Flags(usize),
    How(usize),
    Write,
}

const CALLS: &[(libc::c_long, Option<usize>, usize, Access)] = &[
    (libc::SYS_openat, Some(0), 1, Access::Flags(2)),
    (libc::SYS_openat2, Some(0), 1, Access::How(2)),
    (libc::SYS_mkdirat, Some(0), 1, Access::Write),
    (libc::SYS_unlinkat, Some(0), 1, Access::Write),
    (libc::SYS_renameat2, Some(2), 3, Access::Write),
    (libc::SYS_linkat, Some(2), 3, Access::Write),
    (libc::SYS_symlinkat, Some(1), 2, Access::Write),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_open, None, 0, Access::Flags(1)),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_creat, None, 0, Access::Write),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_mkdir, None, 0, Access::Write),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_unlink, None, 0, Access::Write),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_rmdir, None, 0, Access::Write),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_rename, None, 1, Access::Write),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_renameat, Some(2), 3, Access::Write),
];

#[cfg(target_arch = "x86_64")]
const ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64

const SECCOMP_RET_USER_NOTIF: u32 = 0x7fc0_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_FILTER_FLAG_NEW_LISTENER: libc::c_ulong = 1 << 3;
const SECCOMP_USER_NOTIF_FLAG_CONTINUE: u32 = 1;

/// In the program, last before exec: stop every call of `CALLS` for this process to see.
/// Returns the listener this process reads them from.
pub fn install() -> io::Result<OwnedFd> {
    let statement = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    const LOAD: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET: u16 = 0x06; // BPF_RET | BPF_K
    let mut filter = vec![
        statement(LOAD, 0, 0, 4), // seccomp_data.arch
        statement(JEQ, 1, 0, ARCH),
        statement(RET, 0, 0, SECCOMP_RET_ALLOW),
        statement(LOAD, 0, 0, 0), // seccomp_data.nr
    ];
    for (call, ..) in CALLS {
        filter.push(statement(JEQ, 0, 1, *call as u32));
        filter.push(statement(RET, 0, 0, SECCOMP_RET_USER_NOTIF));
    }
    filter.push(statement(RET, 0, 0, SECCOMP_RET_ALLOW));
    let program = libc::sock_fprog {
        len: u16::try_from(filter.len()).map_err(io::Error::other)?,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: a filter program that outlives the call; no_new_privs is set by the caller.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            SECCOMP_FILTER_FLAG_NEW_LISTENER,
            std::ptr::addr_of!(program),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor, ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// One watched program: its listener, its grants, and what it reached beyond them.
pub struct Watch {
    pub listener: OwnedFd,
    /// Some process of the program may still stop on it.
    pub open: bool,
    program: Program,
    beyond: BTreeSet<(PathBuf, bool)>,
}

impl Watch {
    pub fn new(listener: OwnedFd, program: Program) -> Watch {
        Watch {
            listener,
            open: true,
            program,
            beyond: BTreeSet::new(),
        }
    }

    /// Take one stopped call: note its path, let it go on. `host` is the host's root, held
    /// from before this process entered its own (where what the program did not reach may
    /// not exist).
    pub fn serve_one(&mut self, setup: &Setup, host: BorrowedFd<'_>) {
        // SAFETY: zeroed as the kernel requires; the ioctl fills it.
        let mut notice: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: the listener is ours; `notice` is a valid seccomp_notif.
        let got = unsafe {
            libc::ioctl(
                self.listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV as _,
                std::ptr::addr_of_mut!(notice),
            )
        };
        if got < 0 {
            // The process died before it was read, or an interrupt: nothing to let go on.
            return;
        }
        if let Some((path, write)) = called(&notice)
            && self.beyond.len() < MOST
            && let Some(beyond) = beyond(&path, write, setup, &self.program, |p| exists(host, p))
        {
            self.beyond.insert(beyond);
        }
        let mut response = libc::seccomp_notif_resp {
            id: notice.id,
            val: 0,
            error: 0,
            flags: SECCOMP_USER_NOTIF_FLAG_CONTINUE,
        };
        // SAFETY: as above; a response to the notice just read.
        unsafe {
            libc::ioctl(
                self.listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND as _,
                std::ptr::addr_of_mut!(response),
            )
        };
    }

    pub fn beyond(&self) -> Vec<(PathBuf, bool)> {
        self.beyond.iter().cloned().collect()
    }
}

/// The path a stopped call names, made absolute, and whether it writes.
fn called(notice: &libc::seccomp_notif) -> Option<(PathBuf, bool)> {
    let (_, dir_arg, path_arg, access) = CALLS
        .iter()
        .find(|(call, ..)| *call == notice.data.nr as libc::c_long)?;
    let pid = notice.pid;
    let args = notice.data.args;
    let memory = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let name = read_string(&memory, args[*path_arg])?;
    let write = match access {
        Access::Write => true,
        Access::Flags(at) => writes(args[*at]),
        Access::How(at) => {
            let mut flags = [0u8; 8];
            std::os::unix::fs::FileExt::read_exact_at(&memory, &mut flags, args[*at]).ok()?;
            writes(u64::from_ne_bytes(flags))
        }
    };
    let name = PathBuf::from(std::ffi::OsStr::from_bytes(&name));
    if name.is_absolute() {
        return Some((normal(&name), write));
    }
    let dir = match dir_arg.map(|at| args[at] as i32) {
        None | Some(libc::AT_FDCWD) => std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?,
        Some(fd) => std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?,
    };
    Some((normal(&dir.join(name)), write))
}

fn writes(flags: u64) -> bool {
    let flags = flags as libc::c_int;
    flags & libc::O_ACCMODE != libc::O_RDONLY || flags & (libc::O_CREAT | libc::O_TRUNC) != 0
}

/// A NUL-terminated string at `address` of the program's memory.
fn read_string(memory: &std::fs::File, address: u64) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut text = Vec::new();
    let mut chunk = [0u8; 256];
    while text.len() < PATH_MAX {
        let n = memory.read_at(&mut chunk, address + text.len() as u64).ok()?;
        if n == 0 {
            return None;
        }
        if let Some(end) = chunk[..n].iter().position(|b| *b == 0) {
            text.extend_from_slice(&chunk[..end]);
            return Some(text);
        }
        text.extend_from_slice(&chunk[..n]);
    }
    None
}

/// Whether `path` (absolute) names something beneath `root`.
fn exists(root: BorrowedFd<'_>, path: &Path) -> bool {
    let relative = path.strip_prefix("/").unwrap_or(path);
    let relative = if relative.as_os_str().is_empty() {
        Path::new(".")
    } else {
        relative
    };
    rustix::fs::statat(root, relative, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).is_ok()
}

/// `.` and `..` taken away by name (what the program asked for, not where links lead).
fn normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => out.push(name),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Where `path` lies beyond what `program` was granted: the path a grant would name (a
/// workspace path's first component, a host path's first three), and whether it writes.
/// None within its grants, its temporary directory, the system, the kernel's own files
/// (`/proc`, `/sys`: programs probe them and cope) and the devices;
/// for wharf's own state, which no grant gives; and for a read of what does not exist,
/// which needs no grant.
fn beyond(
    path: &Path,
    write: bool,
    setup: &Setup,
    program: &Program,
    exists: impl Fn(&Path) -> bool,
) -> Option<(PathBuf, bool)> {
    let within = |roots: &[PathBuf]| roots.iter().any(|root| path.starts_with(root));
    if path.starts_with(&setup.state)
        || path.starts_with(&program.temp)
        || within(&program.write)
        || path.starts_with("/dev")
        || path.starts_with("/proc")
        || path.starts_with("/sys")
        || !write && (within(&program.read) || within(&setup.system))
        || !write && !exists(path)
    {
        return None;
    }
    let kept = match path.strip_prefix(&setup.workspace) {
        Ok(inside) => setup.workspace.join(inside.components().next()?),
        Err(_) => path.components().take(4).collect(),
    };
    Some((kept, write))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_beyond_the_grants_are_cut_to_what_a_grant_names() {
        let ws = tempfile::tempdir().unwrap();
        let ws = ws.path().canonicalize().unwrap();
        std::fs::create_dir_all(ws.join("src/deep")).unwrap();
        std::fs::write(ws.join("src/deep/main.rs"), "").unwrap();
        let setup = Setup {
            wanted: crate::Level::Landlock,
            workspace: ws.clone(),
            state: ws.join(".wharf"),
            system: vec!["/usr".into()],
            host_read: vec![],
            host_write: vec![],
            temp: ws.join(".wharf/tmp"),
            audit: true,
        };
        let program = Program {
            path: "/usr/bin/true".into(),
            name: "true".into(),
            args: vec![],
            env: vec![],
            cwd: ws.clone(),
            read: vec![ws.join("granted")],
            write: vec![ws.join("target")],
            temp: ws.join(".wharf/tmp/step"),
            network: crate::Network::None,
            signals: false,
            limits: crate::Limits::default(),
        };
        let seen = |p: &Path, write| beyond(p, write, &setup, &program, |p| p.exists());
        assert_eq!(seen(&ws.join("src/deep/main.rs"), false), Some((ws.join("src"), false)));
        assert_eq!(seen(&ws.join("target/debug/x"), true), None);
        assert_eq!(seen(&ws.join("granted/x"), true), Some((ws.join("granted"), true)));
        assert_eq!(
            seen(&ws.join("missing"), false),
            None,
            "a read of nothing needs no grant"
        );
        assert_eq!(seen(&ws.join(".wharf/runs/x"), false), None);
        assert_eq!(seen(Path::new("/usr/lib/x"), false), None);
        let home = std::env::temp_dir();
        assert_eq!(seen(&home, true), Some((home.clone(), true)));
        assert_eq!(seen(Path::new("/sys/kernel/mm"), false), None, "the kernel's own files");
        assert_eq!(normal(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
    }
}
