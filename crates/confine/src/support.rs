//! What this machine's kernel lets wharf enforce, and what it therefore cannot: the facts
//! `wharf doctor` prints and a run states once.

use crate::policy::Level;
use serde::{Deserialize, Serialize};

/// What the confinement process found it could do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub level: Level,
    /// The Landlock ABI version, if the kernel has Landlock.
    pub landlock: Option<u32>,
    /// Why namespaces could not be made, if they could not.
    pub no_namespaces: Option<String>,
    pub seccomp: bool,
    /// wharf runs as root (its programs lose every capability).
    pub root: bool,
}

impl Report {
    /// What cannot be enforced at this level, one sentence each.
    pub fn gaps(&self) -> Vec<String> {
        let mut gaps = Vec::new();
        match self.level {
            Level::None => {
                gaps.push(
                    "programs run with wharf's own authority: every file, socket, process and host wharf can reach"
                        .into(),
                );
                return gaps;
            }
            Level::Landlock => {
                gaps.push(match self.landlock {
                    Some(abi) if abi >= 4 => "network grants are held to their ports only, not their host names (TCP; other protocols are refused)".into(),
                    _ => "a step with a network grant may reach any host and port (this Landlock has no TCP rules)".into(),
                });
                gaps.push(
                    "programs see the host's other files exist (they cannot open them), and its process list".into(),
                );
                gaps.push(
                    "a program's detached processes are ended with it only while they keep its environment".into(),
                );
                if !self.seccomp {
                    gaps.push("host unix sockets (the Docker engine's) are reachable: no seccomp".into());
                }
            }
            Level::Full => {}
        }
        if self.landlock.is_some_and(|abi| abi < 6) && self.level != Level::Full {
            gaps.push("programs may signal the host's other processes of wharf's user (Landlock ABI below 6)".into());
        }
        gaps
    }
}

/// The Landlock ABI version of the running kernel, if any.
pub fn landlock_abi() -> Option<u32> {
    const VERSION: u32 = 1 << 0; // LANDLOCK_CREATE_RULESET_VERSION
    // SAFETY: with a null attribute pointer and the VERSION flag the call only returns the
    // ABI version (or an error); nothing is read or written.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            VERSION,
        )
    };
    u32::try_from(version).ok().filter(|v| *v > 0)
}

/// Whether this process may install seccomp filters.
pub fn seccomp() -> bool {
    // SAFETY: PR_GET_SECCOMP reads the calling thread's mode; no pointers.
    unsafe { libc::prctl(libc::PR_GET_SECCOMP) >= 0 }
}

pub fn root() -> bool {
    rustix::process::geteuid().is_root()
}
