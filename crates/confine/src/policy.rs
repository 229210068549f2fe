//! What a program may reach, decided by the host from a step's grants and handed to the
//! confinement process as data: paths as the kernel names them, never patterns.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How far a kernel lets wharf hold a program, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    /// Nothing of the kernel's: the program runs with wharf's authority (no Landlock, or
    /// `--sandbox off`).
    None,
    /// Landlock and seccomp without namespaces: files as granted; TCP by port only (no host
    /// names); no host unix socket (seccomp refuses `AF_UNIX` sockets; socket pairs stay);
    /// no network for what is not TCP; detached processes found by a mark in their
    /// environment.
    Landlock,
    /// Namespaces besides: the program sees a root made of what it may reach (no other
    /// file, socket or workspace exists for it), has no network but through wharf's proxy
    /// (hosts and ports as granted), and lives in a process namespace of its own that ends
    /// with it.
    Full,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::Landlock => "landlock",
            Level::Full => "full",
        }
    }
}

/// What the confinement process holds for a whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Setup {
    /// The most to enforce; less where the kernel cannot.
    pub wanted: Level,
    /// The workspace, as the kernel names it.
    pub workspace: PathBuf,
    /// wharf's own state in it (`.wharf`): never a program's.
    pub state: PathBuf,
    /// Directories programs may read and execute from: the system's executable and library
    /// directories, the toolchain homes wharf was started with.
    pub system: Vec<PathBuf>,
    /// Every host path any step of the run may read, or write.
    pub host_read: Vec<PathBuf>,
    pub host_write: Vec<PathBuf>,
    /// Where the steps' private temporary directories are made (inside `state`).
    pub temp: PathBuf,
    /// An audit run: programs may read and write the whole workspace (not `state`), and what
    /// they reach beyond their grants is seen and told ([`crate::watch`]).
    #[serde(default)]
    pub audit: bool,
}

/// One program and what it may reach.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Program {
    /// The program, as the kernel names it (found on `PATH` by the host).
    pub path: PathBuf,
    /// As it is called (`argv[0]`).
    pub name: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// Paths it may read (and execute), and read and write, besides the system's.
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
    /// Its private temporary directory (`TMPDIR`), inside the setup's `temp`.
    pub temp: PathBuf,
    pub network: Network,
    /// May signal processes of the host (`nginx -s reload`): no process namespace of its
    /// own, no signal scoping.
    pub signals: bool,
    pub limits: Limits,
}

/// The network a program may reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    None,
    /// Through wharf's proxy, which checks each request against the step's grants: the
    /// ports are what a kernel without namespaces enforces instead (TCP connect); None for
    /// a grant of any port, which such a kernel cannot hold.
    Granted {
        ports: Option<Vec<u16>>,
    },
}

/// Resources of one program.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Bytes of address space (`RLIMIT_AS`).
    pub memory: Option<u64>,
    /// Processes of its user (`RLIMIT_NPROC`; the kernel does not count them for root).
    pub processes: Option<u64>,
    /// Largest file it may write (`RLIMIT_FSIZE`).
    pub file_size: Option<u64>,
}

/// The port a program's proxy listens on, on its own loopback.
pub const PROXY_PORT: u16 = 3128;
