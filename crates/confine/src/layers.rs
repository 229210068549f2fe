//! The Landlock rules, in two layers: the confinement process restricts itself once with
//! what any program of the run may reach (the system's directories, `/etc` without its
//! secrets, the workspace, every step's host grants), and each program adds a layer of its
//! own step's grants. An access passes only when both layers allow it, so the per-program
//! layer can name whole directories (`/etc`) and stay a handful of rules: building the
//! fine-grained one for every program would cost more than starting it.

use crate::policy::{Level, Network, Program, Setup};
use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetError, Scope, path_beneath_rules,
};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{FileType, Mode, OFlags};
use std::path::{Path, PathBuf};

/// Entries of `/etc` no program reads: password hashes, sudo's rules, host keys, stored
/// credentials. (`ssl` and `security` are opened entry by entry, without these.)
const ETC_SECRETS: &[&str] = &[
    "shadow",
    "shadow-",
    "gshadow",
    "gshadow-",
    "sudoers",
    "sudoers.d",
    "ssh",
    "krb5.keytab",
    ".pwd.lock",
    "wireguard",
    "ppp",
    "private",
    "opasswd",
    "system-connections",
];
/// Directories of `/etc` that hold secrets beside what programs need.
const ETC_MIXED: &[&str] = &["ssl", "security", "NetworkManager"];

/// Devices a program may read and write; `/dev/urandom` and `/dev/random` are read.
const DEVICES_RW: &[&str] = &["/dev/null", "/dev/zero", "/dev/full", "/dev/tty"];
const DEVICES_RO: &[&str] = &["/dev/urandom", "/dev/random"];

fn abi_of(version: u32) -> ABI {
    ABI::from(i32::try_from(version).unwrap_or(i32::MAX))
}

/// `/etc` as a program may read it: every entry but the secrets.
fn etc() -> Vec<PathBuf> {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if ETC_SECRETS.contains(&name.as_ref()) {
                continue;
            }
            if depth == 0 && ETC_MIXED.contains(&name.as_ref()) {
                walk(&entry.path(), depth + 1, out);
            } else {
                out.push(entry.path());
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/etc"), 0, &mut out);
    out
}

/// The system directories of `setup`, with `/etc` replaced by its entries.
fn system(setup: &Setup) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in &setup.system {
        if dir == Path::new("/etc") {
            out.extend(etc());
        } else {
            out.push(dir.clone());
        }
    }
    out
}

/// The confinement process's own layer: what any program of the run may reach.
pub fn restrict_confiner(setup: &Setup, version: u32) -> Result<(), RulesetError> {
    let abi = abi_of(version);
    let read = AccessFs::from_read(abi);
    let all = AccessFs::from_all(abi);
    let mut readable = system(setup);
    readable.extend(setup.host_read.iter().cloned());
    readable.push("/proc".into());
    readable.extend(DEVICES_RO.iter().map(PathBuf::from));
    let mut writable = vec![setup.workspace.clone(), setup.temp.clone()];
    writable.extend(setup.host_write.iter().cloned());
    writable.extend(DEVICES_RW.iter().map(PathBuf::from));
    Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(all)?
        .create()?
        .add_rules(path_beneath_rules(readable, read))?
        .add_rules(path_beneath_rules(writable, all))?
        .restrict_self()?;
    Ok(())
}

/// A path of every program's layer, opened once (`O_PATH`) by the confinement process:
/// opening a dozen paths for each program would cost more than its Landlock layer itself.
struct Opened {
    fd: OwnedFd,
    /// Landlock takes only a file's rights on a file.
    file: bool,
}

impl Opened {
    fn new(path: &Path) -> Option<Opened> {
        let fd = rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).ok()?;
        let stat = rustix::fs::fstat(&fd).ok()?;
        let file = FileType::from_raw_mode(stat.st_mode) != FileType::Directory;
        Some(Opened { fd, file })
    }

    fn rule(&self, access: BitFlags<AccessFs>, abi: ABI) -> Result<PathBeneath<BorrowedFd<'_>>, RulesetError> {
        let access = if self.file {
            access & AccessFs::from_file(abi)
        } else {
            access
        };
        Ok(PathBeneath::new(self.fd.as_fd(), access))
    }
}

/// What every program's layer holds, whatever its step: the system's directories, `/proc`
/// and the devices; the workspace's names.
pub struct Base {
    abi: ABI,
    read: Vec<Opened>,
    write: Vec<Opened>,
    listable: Option<Opened>,
}

impl Base {
    pub fn open(setup: &Setup, version: u32) -> Base {
        let mut read: Vec<PathBuf> = setup.system.clone();
        read.push("/proc".into());
        read.extend(DEVICES_RO.iter().map(PathBuf::from));
        let open = |paths: Vec<PathBuf>| paths.iter().filter_map(|p| Opened::new(p)).collect();
        Base {
            abi: abi_of(version),
            read: open(read),
            write: open(DEVICES_RW.iter().map(PathBuf::from).collect()),
            listable: Opened::new(&setup.workspace),
        }
    }
}

/// A program's own layer: its step's grants; at `Level::Landlock` also its TCP ports, and
/// (Landlock ABI 6) signals and abstract unix sockets held to its own processes.
pub fn restrict_program(base: &Base, setup: &Setup, program: &Program, level: Level) -> Result<(), RulesetError> {
    let abi = base.abi;
    let read = AccessFs::from_read(abi);
    let all = AccessFs::from_all(abi);
    // Names in the workspace, not what they hold: tools look around where they start
    // (`pytest` collects, `git` finds its root).
    let mut listable: Vec<PathBuf> = Vec::new();
    let mut readable: Vec<PathBuf> = Vec::new();
    let mut writable: Vec<PathBuf> = vec![program.temp.clone()];
    for (paths, into) in [(&program.read, &mut readable), (&program.write, &mut writable)] {
        for path in paths {
            let (around, beside) = around_state(path, &setup.state);
            listable.extend(around);
            into.extend(beside);
        }
    }
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(all)?;
    let ports = match &program.network {
        Network::None => Some(&[][..]),
        Network::Granted { ports } => ports.as_deref(),
    };
    if level == Level::Landlock && ports.is_some() {
        ruleset = ruleset.handle_access(AccessNet::from_all(abi))?;
    }
    let mut scopes: BitFlags<Scope> = Scope::AbstractUnixSocket.into();
    if !program.signals {
        scopes |= Scope::Signal;
    }
    let mut created = ruleset
        .scope(scopes)?
        .create()?
        .add_rules(base.listable.iter().map(|o| o.rule(AccessFs::ReadDir.into(), abi)))?
        .add_rules(base.read.iter().map(|o| o.rule(read, abi)))?
        .add_rules(base.write.iter().map(|o| o.rule(all, abi)))?
        .add_rules(path_beneath_rules(listable, AccessFs::ReadDir))?
        .add_rules(path_beneath_rules(readable, read))?
        .add_rules(path_beneath_rules(writable, all))?;
    if level == Level::Landlock {
        for port in ports.unwrap_or_default() {
            created = created.add_rule(NetPort::new(*port, AccessNet::ConnectTcp))?;
        }
    }
    created.restrict_self()?;
    Ok(())
}

/// A granted `path`, kept from wharf's state: (directories on the way to the state, which
/// are only listed; the rest, granted whole). Landlock rights hold for a whole tree, so a
/// directory that holds the state cannot be granted itself; its other entries can, and new
/// entries at its top need grants of their own.
fn around_state(path: &Path, state: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    if path.starts_with(state) {
        return (Vec::new(), Vec::new());
    }
    if !state.starts_with(path) {
        return (Vec::new(), vec![path.to_path_buf()]);
    }
    let mut around = vec![path.to_path_buf()];
    let mut beside = Vec::new();
    for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
        let child = entry.path();
        if state.starts_with(&child) {
            let (a, b) = around_state(&child, state);
            around.extend(a);
            beside.extend(b);
        } else {
            beside.push(child);
        }
    }
    (around, beside)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etc_leaves_out_the_secrets() {
        let etc = etc();
        assert!(etc.iter().any(|p| p.ends_with("passwd")), "{etc:?}");
        for secret in ["/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/ssh", "/etc/ssl"] {
            assert!(!etc.contains(&PathBuf::from(secret)), "{secret}");
        }
    }

    #[test]
    fn a_grant_that_holds_the_state_is_split_around_it() {
        let ws = tempfile::tempdir().unwrap();
        let state = ws.path().join(".wharf");
        for dir in [".wharf/runs", "src", "target"] {
            std::fs::create_dir_all(ws.path().join(dir)).unwrap();
        }
        let (around, mut beside) = around_state(ws.path(), &state);
        beside.sort();
        assert_eq!(around, [ws.path().to_path_buf()]);
        assert_eq!(beside, [ws.path().join("src"), ws.path().join("target")]);
        let src = ws.path().join("src");
        assert_eq!(around_state(&src, &state), (vec![], vec![src.clone()]));
        assert_eq!(around_state(&state.join("runs"), &state), (vec![], vec![]));
    }
}
