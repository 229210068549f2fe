//! Programs die with wharf, however wharf dies.
//!
//! A step's program runs in a process group of its own (so a timeout kills what it started
//! too). When wharf is killed outright, as a CI runner cancelling a job does with SIGKILL,
//! nothing in wharf runs to stop those groups. So on the first program wharf forks a
//! watchdog: a tiny process in its own session that reads, from a pipe only wharf can write
//! to, the process groups as they start (`+PGID`) and end (`-PGID`). When the pipe reaches
//! end-of-file, because wharf exited or was killed, the watchdog kills every group still
//! listed and exits.
//!
//! The child of a fork in a threaded process may only make async-signal-safe calls, so the
//! watchdog reads, parses and kills with raw system calls on fixed-size buffers, and never
//! allocates.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

/// Groups the watchdog keeps at once; more (an unlikely 1024 programs running together)
/// are not watched.
const MAX_GROUPS: usize = 1024;

static WATCHDOG: Mutex<Option<Watchdog>> = Mutex::new(None);

struct Watchdog {
    /// The write end; only wharf holds it (close-on-exec, and closed in the watchdog).
    pipe: std::fs::File,
}

/// A program's process group started: kill it should wharf die before it ends.
pub fn watch(pgid: u32) {
    send(&format!("+{pgid}\n"));
}

/// The group ended (or was killed) normally.
pub fn unwatch(pgid: u32) {
    send(&format!("-{pgid}\n"));
}

fn send(line: &str) {
    let mut guard = WATCHDOG.lock().unwrap_or_else(|p| p.into_inner());
    if guard.is_none() {
        match start() {
            Ok(w) => *guard = Some(w),
            Err(e) => {
                tracing::warn!("no watchdog for programs ({e}); they may outlive wharf if it is killed");
                return;
            }
        }
    }
    if let Some(w) = guard.as_mut() {
        let _ = w.pipe.write_all(line.as_bytes());
    }
}

fn start() -> std::io::Result<Watchdog> {
    let (read, write) = std::io::pipe()?;
    let read: OwnedFd = read.into();
    let write: OwnedFd = write.into();
    // SAFETY: the child only makes async-signal-safe system calls (see `watch_until_eof`)
    // and leaves with `_exit`; the parent just closes its copy of the read end.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: in the forked child; async-signal-safe calls only.
        unsafe { watch_until_eof(read.as_raw_fd()) }
    }
    drop(read);
    // SAFETY: `write` is an open pipe end we own; the File takes it over.
    let pipe = unsafe { std::fs::File::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(write)) };
    Ok(Watchdog { pipe })
}

/// The watchdog's whole life. Never returns.
///
/// # Safety
/// Call only in a freshly forked child: it closes every descriptor but `fd`.
unsafe fn watch_until_eof(fd: libc::c_int) -> ! {
    unsafe {
        // Its own session: a signal to wharf's process group (Ctrl-C, a runner killing the
        // group) leaves it standing to clean up. Only the pipe stays open: an inherited lock
        // or socket must not outlive wharf in here.
        libc::setsid();
        libc::dup2(fd, 0);
        if libc::syscall(libc::SYS_close_range, 1u32, u32::MAX, 0u32) != 0 {
            for other in 1..4096 {
                libc::close(other);
            }
        }
        let mut groups = [0 as libc::pid_t; MAX_GROUPS];
        let mut buf = [0u8; 512];
        let mut sign = 0u8;
        let mut value: libc::pid_t = 0;
        loop {
            let n = libc::read(0, buf.as_mut_ptr().cast(), buf.len());
            if n == 0 {
                break;
            }
            if n < 0 {
                if *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                break;
            }
            for &b in &buf[..n as usize] {
                match b {
                    b'+' | b'-' => {
                        sign = b;
                        value = 0;
                    }
                    b'0'..=b'9' => value = value.saturating_mul(10).saturating_add(libc::pid_t::from(b - b'0')),
                    b'\n' => {
                        if sign == b'+' {
                            if let Some(slot) = groups.iter_mut().find(|g| **g == 0) {
                                *slot = value;
                            }
                        } else if sign == b'-'
                            && let Some(slot) = groups.iter_mut().find(|g| **g == value)
                        {
                            *slot = 0;
                        }
                        sign = 0;
                    }
                    _ => {}
                }
            }
        }
        for group in groups {
            if group > 1 {
                libc::kill(-group, libc::SIGKILL);
            }
        }
        libc::_exit(0)
    }
}
