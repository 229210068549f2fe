//! What a step's host calls mean for the cache: an input to check again (`source`, a
//! secret, an image looked at), an effect to keep (an image assembled), the inputs of the
//! programs it ran (everything their grants let them read, the program, the toolchain), or
//! a reason it cannot be cached (it deployed, called HTTP, read the time of day). A call
//! this module does not know makes the step not cacheable: a new capability is never
//! cached by accident.

use super::learnt::Learnt;
use crate::capabilities::secrets::SecretStore;
use crate::journal::witness::Observer;
use crate::sandbox::Grants;
use crate::sandbox::programs::Programs;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use wharf_cache::tree::{self, Detail, Known, Tree, TreeError};
use wharf_cache::{Image, Input};

/// The calls of one attempt, as the cache reads them.
pub struct CallLog {
    workspace: PathBuf,
    grants: Arc<Grants>,
    secrets: Arc<SecretStore>,
    /// The run's confinement of programs.
    programs: Arc<Programs>,
    /// Digests of files hashed before; shared by the run.
    learnt: Learnt,
    /// Keys secrets' digests.
    store: wharf_cache::Store,
    state: Mutex<Calls>,
}

/// Each write grant's tree (its workspace path) before the first program ran.
pub type TreesBefore = Vec<(String, Tree)>;

#[derive(Default)]
pub struct Calls {
    /// Inputs in the order the calls used them.
    pub inputs: Vec<Input>,
    pub images: Vec<Image>,
    /// Each write grant's tree before the first program ran: what the programs changed is
    /// its difference from the tree after.
    pub trees_before: TreesBefore,
    /// Why the attempt cannot be cached; the first reason met.
    pub refused: Option<String>,
    /// Whether what programs may read was looked at (before the first one ran).
    programs_seen: bool,
}

impl CallLog {
    pub fn new(
        workspace: &Path,
        grants: Arc<Grants>,
        secrets: Arc<SecretStore>,
        programs: Arc<Programs>,
        learnt: Learnt,
        store: wharf_cache::Store,
    ) -> CallLog {
        CallLog {
            workspace: workspace.to_path_buf(),
            grants,
            secrets,
            programs,
            learnt,
            store,
            state: Mutex::default(),
        }
    }

    pub fn take(&self) -> Calls {
        std::mem::take(&mut self.state.lock().unwrap())
    }

    fn refuse(&self, why: impl Into<String>) {
        self.state.lock().unwrap().refused.get_or_insert_with(|| why.into());
    }

    fn input(&self, input: Input) {
        let mut state = self.state.lock().unwrap();
        if !state.inputs.contains(&input) {
            state.inputs.push(input);
        }
    }

    /// A secret as the cache compares it: keyed by the workspace's key, never in clear.
    fn secret(&self, name: &str) {
        let value = self.secrets.get(name);
        let digest = self.store.keyed(value.map_or(b"\0unset".as_slice(), str::as_bytes));
        self.input(Input::Answer {
            what: format!("secret `{name}`"),
            digest,
        });
    }

    /// Before the step's first program: everything the programs may read (the step's read
    /// and write grants, `host-read:` grants, the toolchains), as trees.
    fn before_programs(&self) {
        if std::mem::replace(&mut self.state.lock().unwrap().programs_seen, true) {
            return;
        }
        match self.learnt.with(|known| self.readable_by_programs(known)) {
            Ok((inputs, before)) => {
                let mut state = self.state.lock().unwrap();
                for input in inputs {
                    if !state.inputs.contains(&input) {
                        state.inputs.push(input);
                    }
                }
                state.trees_before = before;
            }
            Err(e) => self.refuse(format!("what its programs may read cannot be checked: {e}")),
        }
    }

    /// The inputs programs may read, and the trees of the write grants as they are now.
    fn readable_by_programs(&self, known: &mut Known) -> Result<(Vec<Input>, TreesBefore), TreeError> {
        let mut inputs = Vec::new();
        let mut before = Vec::new();
        let workspace_trees = self
            .grants
            .read
            .iter()
            .map(|g| (g.what.clone(), false))
            .chain(self.grants.write.iter().map(|g| (g.what.clone(), true)));
        for (path, writable) in workspace_trees {
            let relative = if path == "." { String::new() } else { path.clone() };
            let tree = tree::walk(&self.workspace, &relative, known)?;
            inputs.push(Input::Tree {
                path: path.clone(),
                digest: tree.digest(),
                entries: tree.entries.clone(),
            });
            if writable {
                before.push((relative, tree));
            }
        }
        let host_trees = self
            .grants
            .host_read
            .iter()
            .map(|g| (crate::sandbox::programs::host_path(&g.what), None))
            .chain(
                toolchains(&self.programs.setup().system)
                    .into_iter()
                    .map(|p| (p, Some(TOOLCHAIN_DEPTH))),
            );
        // A `host-read:` grant whole, a toolchain to a depth; both by stamps.
        for (path, depth) in host_trees {
            let relative = path.to_string_lossy().trim_start_matches('/').to_string();
            let detail = Detail::Stamps {
                depth: depth.unwrap_or(usize::MAX),
            };
            let digest = tree::walk_as(Path::new("/"), &relative, known, detail)?.digest();
            inputs.push(match depth {
                None => Input::HostTree {
                    path: path.display().to_string(),
                    digest,
                },
                Some(depth) => Input::Toolchain {
                    path: path.display().to_string(),
                    depth,
                    digest,
                },
            });
        }
        // The system's packages, as the package manager records them.
        if let Some(status) = SYSTEM_PACKAGES.iter().find(|p| Path::new(p).exists()) {
            inputs.push(Input::HostFile {
                path: status.to_string(),
                found: wharf_cache::entry::host_file(Path::new(status), known),
            });
        }
        Ok((inputs, before))
    }

    /// A workspace path the host copies into an image: the path as named (a link is an
    /// input as a link), and what it leads to, a directory as its whole tree.
    fn image_source(&self, source: &str) {
        self.input(Input::Path {
            path: source.to_string(),
            follow: false,
            found: wharf_cache::found::probe(&self.workspace, source, false),
        });
        let real = crate::beneath::existing(&self.workspace, source).ok().and_then(|real| {
            real.strip_prefix(&self.workspace)
                .ok()
                .map(|r| r.to_string_lossy().into_owned())
        });
        let Some(real) = real else { return };
        match wharf_cache::found::probe(&self.workspace, &real, false) {
            wharf_cache::Found::Directory => {
                let walked = self.learnt.with(|known| tree::walk(&self.workspace, &real, known));
                match walked {
                    Ok(tree) => self.input(Input::Tree {
                        path: if real.is_empty() { ".".into() } else { real },
                        digest: tree.digest(),
                        entries: tree.entries,
                    }),
                    Err(e) => self.refuse(format!("what it put in an image cannot be checked: {e}")),
                }
            }
            found => self.input(Input::Path {
                path: real,
                follow: false,
                found,
            }),
        }
    }

    fn program(&self, args: &Value) {
        let Some(program) = args.get("program").and_then(Value::as_str) else {
            return self.refuse("it ran a program the cache cannot name");
        };
        match crate::capabilities::process::program_file(&self.workspace, program) {
            Some(path) => {
                let found = self.learnt.with(|known| wharf_cache::entry::host_file(&path, known));
                self.input(Input::HostFile {
                    found,
                    path: path.display().to_string(),
                })
            }
            None => self.refuse(format!("its program `{program}` was not found")),
        }
    }
}

/// How deep a toolchain is looked at: its programs, its libraries' directories, the version
/// directories of an interpreter's prefix.
const TOOLCHAIN_DEPTH: usize = 4;

/// Where the system's installed packages are recorded: a system upgrade (a new compiler)
/// changes it.
const SYSTEM_PACKAGES: &[&str] = &[
    "/var/lib/dpkg/status",
    "/lib/apk/db/installed",
    "/var/lib/rpm/rpmdb.sqlite",
];

/// The toolchains programs read beyond the system's own directories (which the package
/// record stands for): of the paths the run's confinement opens to programs (`system`),
/// `RUSTUP_HOME`, `CARGO_HOME/bin` and the prefixes of `PATH`; and `/etc` and `/usr/local`,
/// which no package record covers.
fn toolchains(system: &[PathBuf]) -> Vec<PathBuf> {
    let own = crate::sandbox::programs::SYSTEM;
    let mut out: Vec<PathBuf> = system
        .iter()
        .filter(|p| !own.iter().any(|s| p.starts_with(s)))
        .cloned()
        .collect();
    out.extend(
        ["/etc", "/usr/local"]
            .map(PathBuf::from)
            .into_iter()
            .filter(|p| p.is_dir()),
    );
    out
}

impl Observer for CallLog {
    fn before(&self, interface: &str, function: &str, args: &Value) {
        match (interface, function) {
            ("wharf:step/process", "run") => {
                self.before_programs();
                self.program(args);
            }
            ("wharf:step/images", "assemble") => {
                if args
                    .get("base")
                    .is_some_and(|b| b.as_str().is_some_and(|b| !b.is_empty()))
                {
                    return self.refuse("it assembled an image on a base pulled from a registry");
                }
                for file in args.get("files").and_then(Value::as_array).into_iter().flatten() {
                    if let Some(source) = file.get("source").and_then(Value::as_str) {
                        self.image_source(source);
                    }
                }
            }
            _ => {}
        }
    }

    fn after(&self, interface: &str, function: &str, args: &Value, result: &Value) {
        let digest = || wharf_cache::sha256_hex(result.to_string().as_bytes());
        match (interface, function) {
            ("wharf:step/log", _) | ("wasi:clocks/monotonic-clock", _) => {}
            // The seed of the standard library's hash maps: it orders a map, not a result.
            ("wasi:random/insecure-seed", _) => {}
            ("wasi:random/insecure", _) => self.refuse("it drew random numbers"),
            ("wasi:clocks/wall-clock", _) => self.refuse("it read the time of day"),
            ("wasi:random/random", _) => self.refuse("it drew random bytes"),
            ("wharf:step/source", "describe") => {
                // In a clean checkout, what the answer comes from can be checked without git.
                if let Some(key) = crate::capabilities::source::describe_key(&self.workspace) {
                    self.input(Input::Answer {
                        what: DESCRIBED_FROM.into(),
                        digest: key,
                    });
                }
                self.input(Input::Answer {
                    what: DESCRIBED.into(),
                    digest: digest(),
                });
            }
            ("wharf:step/secrets", "get" | "reveal") => {
                if let Some(name) = args.as_str() {
                    self.secret(name);
                }
            }
            ("wharf:step/images", "inspect") => self.input(Input::Answer {
                what: format!("image `{}` in the store", args.as_str().unwrap_or_default()),
                digest: digest(),
            }),
            ("wharf:step/images", "assemble") => {
                if let Some(image) = result.get("Ok").filter(|r| r.get("digest").is_some()) {
                    let text = |k: &str| image.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
                    self.state.lock().unwrap().images.push(Image {
                        name: text("reference"),
                        digest: text("digest"),
                        media_type: wharf_oci::MEDIA_MANIFEST.to_string(),
                        size: 0,
                    });
                }
            }
            ("wharf:step/process", "run") if self.programs.fully_confined() => {}
            ("wharf:step/process", "run") => self.refuse(
                "it ran a program that was not fully confined (`wharf doctor` says why): the kernel did not hold it to its grants alone",
            ),
            ("wharf:step/deploy", _) => self.refuse("it deployed"),
            ("wharf:step/registry", _) => self.refuse("it used a registry"),
            ("wasi:http/outgoing-handler", _) => self.refuse("it called HTTP"),
            ("wharf:step/images", "docker-build") => self.refuse("it built on a Docker engine"),
            (interface, function) => self.refuse(format!("it called {interface}.{function}, which the cache does not know")),
        }
    }
}

/// The answer of `source.describe`, and (in a clean checkout) what it comes from: the
/// commit, the tags, the shallow boundary.
pub const DESCRIBED: &str = "the workspace's revision (source.describe)";
pub const DESCRIBED_FROM: &str = "the workspace's commit and tags";

/// What the cache asks again to check an [`Input::Answer`]: its digest now.
pub async fn answer(workspace: &Path, what: &str, secrets: &SecretStore, store: &wharf_cache::Store) -> Option<String> {
    let digest = |v: Value| Some(wharf_cache::sha256_hex(v.to_string().as_bytes()));
    if what == DESCRIBED_FROM {
        let dir = workspace.to_path_buf();
        return tokio::task::spawn_blocking(move || crate::capabilities::source::describe_key(&dir))
            .await
            .ok()
            .flatten();
    }
    if what == DESCRIBED {
        let now = crate::capabilities::source::describe(workspace).await;
        return digest(serde_json::to_value(now).ok()?);
    }
    if let Some(name) = what.strip_prefix("secret `").and_then(|r| r.strip_suffix('`')) {
        let value = secrets.get(name);
        return Some(store.keyed(value.map_or(b"\0unset".as_slice(), str::as_bytes)));
    }
    if let Some(reference) = what
        .strip_prefix("image `")
        .and_then(|r| r.strip_suffix("` in the store"))
    {
        let now = crate::capabilities::images::inspect(workspace, reference);
        return digest(serde_json::to_value(now).ok()?);
    }
    None
}
