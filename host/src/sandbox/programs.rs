//! Programs a step runs (`builtin:exec`, `builtin:build`'s command, a typed step's
//! `process.run`), held by the kernel to the step's grants through `wharf-confine`.
//!
//! Threat: the work of a CI step is done by programs (`cargo` and every `build.rs` it
//! compiles, `sh`, test runners), and a program has whatever authority it is started with.
//! Here it gets its step's: the workspace paths of `read:` and `write:`, the host paths of
//! `host-read:` and `host-write:`, the system's executable and library directories and the
//! toolchain homes read-only, a private `TMPDIR` (and `HOME`) emptied when the step ends,
//! the network of its `http:` grants through wharf's proxy, and its limits. What a kernel
//! cannot enforce is said once per run; `sandbox: strict` refuses to start a program there.

use crate::events::{Event, Events};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use wharf_confine::{Confiner, Level, Setup};
use wharf_fs::held::HeldDir;
use wharf_fs::pool::DirPool;

/// How programs are confined (`--sandbox`, or `sandbox:` in a pipeline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// As far as the kernel allows, saying once what it does not.
    Auto,
    /// Fully, or the program does not start.
    Strict,
    /// Not at all, for debugging: programs have wharf's authority.
    Off,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Strict => "strict",
            Mode::Off => "off",
        }
    }
}

/// The confinement of one run's programs: the confinement process, started at the first
/// program.
pub struct Programs {
    mode: Mode,
    /// What programs may reach, but for the system's and toolchains' directories...
    plan: Setup,
    /// ...which are looked for (on `PATH`, through links) only once a run needs them.
    setup: std::sync::OnceLock<Setup>,
    confiner: tokio::sync::OnceCell<Result<Confiner, String>>,
    events: Events,
    told: AtomicBool,
    /// Steps' temporary directories (`TMPDIR`), handed from step to step, emptied between;
    /// and which attempt holds which.
    temps: DirPool,
    temps_taken: std::sync::Mutex<std::collections::HashMap<(String, u32), PathBuf>>,
    /// The run's scratch space, which holds them; made when the first program starts.
    scratch: std::sync::Arc<HeldDir>,
}

impl Programs {
    /// For a run in `workspace` whose scratch space is `scratch`; `host_read` and
    /// `host_write` are every host path any of its steps was granted.
    pub fn new(
        mode: Mode,
        workspace: &Path,
        scratch: std::sync::Arc<HeldDir>,
        host_read: Vec<PathBuf>,
        host_write: Vec<PathBuf>,
        events: Events,
    ) -> Programs {
        let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let workspace = real(workspace);
        let temp = real(scratch.path()).join("tmp");
        Programs {
            mode,
            setup: std::sync::OnceLock::new(),
            plan: Setup {
                wanted: if mode == Mode::Off { Level::None } else { Level::Full },
                state: workspace.join(crate::pipeline::grants::RESERVED),
                temp: temp.clone(),
                workspace,
                system: Vec::new(),
                host_read: host_read.iter().map(|p| real(p)).collect(),
                host_write: host_write.iter().map(|p| real(p)).collect(),
                audit: false,
            },
            confiner: tokio::sync::OnceCell::new(),
            events,
            told: AtomicBool::new(false),
            temps: DirPool::new(&temp, "temp"),
            scratch,
            temps_taken: std::sync::Mutex::default(),
        }
    }

    /// For an audit run: programs may use the whole workspace, and what they reach beyond
    /// their grants is noted.
    pub fn audited(mut self) -> Programs {
        self.plan.audit = true;
        self
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn setup(&self) -> &Setup {
        self.setup.get_or_init(|| Setup {
            system: system_paths(),
            ..self.plan.clone()
        })
    }

    /// Start the confinement process now, beside the run's first steps, rather than at its
    /// first program: the few milliseconds it takes then cost the run nothing it waits for.
    pub fn start_early(self: &std::sync::Arc<Self>) {
        if self.mode == Mode::Off {
            return;
        }
        let programs = self.clone();
        tokio::spawn(async move {
            programs.started().await;
        });
    }

    async fn started(&self) -> &Result<Confiner, String> {
        self.confiner
            .get_or_init(|| async {
                let setup = self.setup();
                self.scratch
                    .make()
                    .map_err(|e| format!("cannot make {}: {e}", self.scratch.path().display()))?;
                std::fs::create_dir_all(&setup.temp)
                    .map_err(|e| format!("cannot make {}: {e}", setup.temp.display()))?;
                let exe = std::env::current_exe()
                    .map_err(|e| format!("cannot find wharf itself to confine programs: {e}"))?;
                Confiner::start(&exe, setup.clone())
                    .await
                    .map_err(|e| format!("cannot start the confinement of programs: {e}"))
            })
            .await
    }

    /// Whether the programs run so far were held fully by the kernel: confined, at level
    /// `full`. False before the confinement process started.
    pub fn fully_confined(&self) -> bool {
        self.mode != Mode::Off
            && self
                .confiner
                .get()
                .is_some_and(|c| c.as_ref().is_ok_and(|c| c.report().level == Level::Full))
    }

    /// The confinement process, started on first use; the run hears once what it holds
    /// and what this kernel leaves open.
    pub async fn confiner(&self) -> Result<&Confiner, String> {
        let confiner = self.started().await.as_ref().map_err(Clone::clone)?;
        let report = confiner.report();
        if self.mode == Mode::Strict && report.level < Level::Full {
            return Err(format!(
                "`sandbox: strict` and this kernel confines programs only as far as `{}`: {}",
                report.level.as_str(),
                report.gaps().join("; ")
            ));
        }
        if !self.told.swap(true, Ordering::Relaxed) {
            let gaps = report.gaps();
            if !gaps.is_empty() {
                self.events.emit(Event::Notice {
                    message: format!(
                        "programs are confined as far as `{}` here (`wharf doctor` says why): {}",
                        report.level.as_str(),
                        gaps.join("; ")
                    ),
                });
            }
        }
        Ok(confiner)
    }

    /// The private temporary directory of a step's attempt, made on first use.
    pub fn temp_dir(&self, step: &str, attempt: u32) -> std::io::Result<PathBuf> {
        let mut taken = self.temps_taken.lock().unwrap_or_else(|e| e.into_inner());
        let key = (step.to_string(), attempt);
        if let Some(dir) = taken.get(&key) {
            return Ok(dir.clone());
        }
        let dir = self.temps.take()?;
        taken.insert(key, dir.clone());
        Ok(dir)
    }

    /// The step's attempt ended: its temporary directory is emptied for the next step.
    pub fn step_ended(&self, step: &str, attempt: u32) {
        let taken = self
            .temps_taken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(step.to_string(), attempt));
        if let Some(dir) = taken {
            self.temps.give_back(dir, |_, _| false);
        }
    }
}

/// The directories programs may read and execute from: the system's (`/usr`, the library
/// and executable directories, `/etc` but for its secrets), the toolchains on wharf's `PATH`
/// (a virtualenv or an interpreter's prefix with its libraries, where a `bin` directory or a
/// link in it leads), `RUSTUP_HOME`, and of `CARGO_HOME` only its programs and configuration:
/// its package caches and credentials are the host's, for a `host-read:` grant to name.
pub fn system_paths() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = SYSTEM.iter().map(PathBuf::from).filter(|p| p.exists()).collect();
    let system = paths.clone();
    let homes = Homes::of_this_process();
    let mut add = |path: PathBuf| {
        if let Ok(real) = std::fs::canonicalize(&path)
            && !paths.iter().any(|p| real.starts_with(p))
        {
            paths.push(real);
        }
    };
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let Ok(dir) = std::fs::canonicalize(&dir) else { continue };
        if system.iter().any(|p| dir.starts_with(p)) {
            continue;
        }
        add(homes.prefix(&dir));
        // A link here (a virtualenv's `python`) leads to the toolchain that runs it.
        let entries = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .take(LINKS_LOOKED_AT);
        for entry in entries {
            if entry.file_type().is_ok_and(|t| t.is_symlink())
                && let Ok(target) = std::fs::canonicalize(entry.path())
                && let Some(parent) = target.parent()
            {
                add(homes.prefix(parent));
            }
        }
    }
    for home in toolchain_homes() {
        add(home);
    }
    let all = paths.clone();
    paths.retain(|p| !all.iter().any(|other| other != p && p.starts_with(other)));
    paths
}

/// The system's own directories (what its package manager installs).
pub const SYSTEM: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc"];

/// Entries of a `PATH` directory looked at for links: a toolchain's directory is small; a
/// huge one is not worth a slow start.
const LINKS_LOOKED_AT: usize = 4096;

/// Directories whose whole is never a toolchain's prefix: they hold a user's files.
struct Homes {
    home: Option<PathBuf>,
    cargo: Option<PathBuf>,
}

impl Homes {
    fn of_this_process() -> Homes {
        let real = |p: PathBuf| std::fs::canonicalize(&p).unwrap_or(p);
        Homes {
            home: std::env::var_os("HOME").map(PathBuf::from).map(real),
            cargo: cargo_home().map(real),
        }
    }

    /// A toolchain's prefix from one of its executable directories: `…/venv/bin` is
    /// `…/venv`, so a virtualenv or an interpreter brings its libraries. A directory not
    /// named `bin` or `shims`, or whose parent is `/`, a home (`~`, `~/.local`, `/home/NAME`)
    /// or `CARGO_HOME`, is only itself.
    fn prefix(&self, dir: &Path) -> PathBuf {
        let named = dir.file_name().is_some_and(|n| n == "bin" || n == "shims");
        let Some(parent) = dir.parent().filter(|_| named) else {
            return dir.to_path_buf();
        };
        let personal = parent.parent().is_none()
            || parent.parent() == Some(Path::new("/home"))
            || self
                .home
                .as_deref()
                .is_some_and(|h| parent == h || parent == h.join(".local"))
            || self.cargo.as_deref() == Some(parent);
        if personal {
            dir.to_path_buf()
        } else {
            parent.to_path_buf()
        }
    }
}

/// `CARGO_HOME` as wharf runs with it, or its default beneath `HOME`.
pub fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
}

/// `RUSTUP_HOME` as wharf runs with it, or its default beneath `HOME`.
pub fn rustup_home() -> Option<PathBuf> {
    std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".rustup")))
}

/// What programs read of the Rust toolchain wharf runs with: `RUSTUP_HOME` whole, and of
/// `CARGO_HOME` its `bin` and its configuration, when they exist.
pub fn toolchain_homes() -> Vec<PathBuf> {
    let rustup = rustup_home();
    let cargo = cargo_home()
        .map(|c| vec![c.join("bin"), c.join("config.toml"), c.join("config")])
        .unwrap_or_default();
    rustup.into_iter().chain(cargo).filter(|p| p.exists()).collect()
}

/// A host path of a grant, `~/` as wharf's home.
pub fn host_path(grant: &str) -> PathBuf {
    match grant.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"))
            .join(rest),
        None => PathBuf::from(grant),
    }
}

/// What most likely refused a program that failed, from what it printed, and the grant
/// that allows it: the kernel does not tell wharf which access it denied. A refusal reads
/// as a permission error, or (fully confined, where what is not granted is not there) as a
/// missing file that the host has.
pub fn denial_hint(stderr: &str, grants: &super::Grants, workspace: &Path) -> Option<String> {
    const DENIED: &[&str] = &[
        "Permission denied",
        "Operation not permitted",
        "Read-only file system",
        "EACCES",
        "EPERM",
        "EROFS",
    ];
    const MISSING: &[&str] = &["No such file or directory", "ENOENT", "not found"];
    const OFFLINE: &[&str] = &[
        "Could not resolve host",
        "Temporary failure in name resolution",
        "Network is unreachable",
        "Name or service not known",
        "failed to lookup address",
    ];
    let workspace = std::fs::canonicalize(workspace).unwrap_or_else(|_| workspace.to_path_buf());
    let lines: Vec<&str> = stderr.lines().collect();
    for (at, line) in lines.iter().enumerate().rev() {
        let denied = DENIED.iter().any(|d| line.contains(d));
        let missing = MISSING.iter().any(|d| line.contains(d));
        if denied || missing {
            // The path is on the line, or (as cargo's `Caused by:` chains put it) just above.
            let path = (at.saturating_sub(3)..=at)
                .rev()
                .find_map(|i| path_in(lines[i], &workspace, missing && !denied));
            match path {
                Some(path) => return Some(grant_for(&path, &workspace)),
                None if denied => {
                    return Some(format!(
                        "the program was refused something it tried (`{}`): it may reach only what the step's grants name (`wharf validate` lists them; `wharf run --audit` notes each path it needs)",
                        line.trim()
                    ));
                }
                None => continue,
            }
        }
        if grants.http.is_empty() && OFFLINE.iter().any(|d| line.contains(d)) {
            return Some(
                "the step has no network: its programs reach a host only through an `http:` grant (`allow: { http: [\"https://HOST\"] }`)".into(),
            );
        }
    }
    None
}

/// A path named on `line`: absolute, or relative to the workspace where it leads to
/// something there, or (refused, so not `on_host`) to a directory there it was to be made in;
/// with `on_host`, only one the host has (a program was told it is not).
fn path_in(line: &str, workspace: &Path, on_host: bool) -> Option<PathBuf> {
    line.split(|c: char| c.is_whitespace() || matches!(c, '\'' | '"' | '`' | '(' | ')' | ',' | ';' | '[' | ']'))
        .map(|w| w.trim_end_matches([':', '.']))
        .filter(|w| w.len() > 1 && w.contains('/') && !w.contains("://"))
        .find_map(|w| {
            let path = if w.starts_with('/') {
                PathBuf::from(w)
            } else {
                workspace.join(w)
            };
            let there = |p: &Path| std::fs::symlink_metadata(p).is_ok();
            if there(&path) || w.starts_with('/') && !on_host {
                return Some(path);
            }
            // A file it was refused to create: the grant is its directory's.
            let dir = path
                .parent()
                .filter(|d| !on_host && *d != workspace && d.starts_with(workspace))?;
            there(dir).then(|| dir.to_path_buf())
        })
}

/// The grant that lets a program reach `path`, or why none can.
fn grant_for(path: &Path, workspace: &Path) -> String {
    match path.strip_prefix(workspace) {
        Ok(rel) if rel.starts_with(crate::pipeline::grants::RESERVED) => format!(
            "`{}` is in `.wharf/`, wharf's own state: no program may reach it",
            rel.display()
        ),
        Ok(rel) => format!(
            "`{}` is not in the step's grants: add `read: [{}]` to the step's `allow:` (or `write:` if it writes there)",
            rel.display(),
            rel.display()
        ),
        Err(_) => format!(
            "`{}` is outside the workspace and the step's grants: add `host-read: [{}]` to the step's `allow:` (or `host-write:` if it writes there)",
            path.display(),
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_program_is_told_the_path_and_the_grant_to_add() {
        let ws = tempfile::tempdir().unwrap();
        let ws = ws.path().canonicalize().unwrap();
        for dir in ["src", "out", ".wharf/runs"] {
            std::fs::create_dir_all(ws.join(dir)).unwrap();
        }
        std::fs::write(ws.join("src/main.rs"), "").unwrap();
        let host = tempfile::tempdir().unwrap();
        let hint = |stderr: &str| denial_hint(stderr, &crate::sandbox::Grants::default(), &ws).unwrap_or_default();

        let read = hint("cat: src/main.rs: Permission denied");
        assert!(read.contains("add `read: [src/main.rs]`"), "{read}");
        let create = hint("sh: 1: cannot create out/copy.txt: Permission denied");
        assert!(
            create.contains("add `read: [out]`") && create.contains("`write:`"),
            "{create}"
        );
        let cargo = hint(&format!(
            "error: failed to open\n\nCaused by:\n  {}\n  No such file or directory (os error 2)",
            host.path().display()
        ));
        assert!(
            cargo.contains(&format!("add `host-read: [{}]`", host.path().display())),
            "{cargo}"
        );
        let state = hint("cat: .wharf/runs: Permission denied");
        assert!(state.contains("wharf's own state"), "{state}");
        let vague = hint("error: Permission denied (os error 13)");
        assert!(vague.contains("--audit"), "{vague}");
        assert!(denial_hint("all went well", &crate::sandbox::Grants::default(), &ws).is_none());
        let offline = hint("curl: (6) Could not resolve host: example.com");
        assert!(offline.contains("no network"), "{offline}");
    }
}
