//! Shared test harness: runs the real `wharf` binary in a scratch workspace that is a git
//! repository, with its own compile cache.

#![allow(dead_code)]

pub mod github_runner;
pub mod services;
pub mod swarm;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Workspace {
    pub dir: tempfile::TempDir,
    pub cache: tempfile::TempDir,
}

/// A test step (`tests/steps/*`) by artifact name, built for wasm32-wasip2 the first time a
/// test asks for one.
pub fn guest(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = BUILT.get_or_init(build_test_guests);
    let path = dir.join(format!("{name}.wasm"));
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// Build the test guest workspace into the target directory's `test-guests/`.
fn build_test_guests() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("test-guests");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(root.join("tests/steps/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .expect("run cargo to build the test steps");
    assert!(
        status.success(),
        "building the test steps (tests/steps) for wasm32-wasip2 failed"
    );
    target.join("wasm32-wasip2/release")
}

pub fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "wharf test")
        .env("GIT_AUTHOR_EMAIL", "test@wharf.invalid")
        .env("GIT_COMMITTER_NAME", "wharf test")
        .env("GIT_COMMITTER_EMAIL", "test@wharf.invalid")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Workspace {
    /// An empty workspace with one commit, and the test steps copied in as `probe.wasm`
    /// (typed) and `cmd.wasm` (WASI command).
    pub fn new() -> Self {
        let ws = Self {
            dir: tempfile::tempdir().unwrap(),
            cache: tempfile::tempdir().unwrap(),
        };
        std::fs::copy(guest("probe_step"), ws.path().join("probe.wasm")).unwrap();
        std::fs::copy(guest("cmd-step"), ws.path().join("cmd.wasm")).unwrap();
        std::fs::write(ws.path().join(".gitignore"), "*.wasm\n.wharf/\n").unwrap();
        git(ws.path(), &["init", "-q", "-b", "main"]);
        git(ws.path(), &["add", "."]);
        git(ws.path(), &["commit", "-qm", "initial"]);
        ws
    }

    /// A copy of `examples/seed` as a repository tagged `v1.0.0` with one commit after it,
    /// so its version is `1.0.0-1-SHA`.
    pub fn seed() -> Self {
        let ws = Self {
            dir: tempfile::tempdir().unwrap(),
            cache: tempfile::tempdir().unwrap(),
        };
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/seed");
        for file in [
            "pipeline.yml",
            "canary.yml",
            "templates/upstreams.conf.tmpl",
            "templates/prometheus.json.tmpl",
            ".gitignore",
            "service/Cargo.toml",
            "service/Cargo.lock",
            "service/src/main.rs",
        ] {
            let to = ws.path().join(file);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(example.join(file), to).unwrap();
        }
        git(ws.path(), &["init", "-q", "-b", "main"]);
        git(ws.path(), &["add", "."]);
        git(ws.path(), &["commit", "-qm", "seed service"]);
        git(ws.path(), &["tag", "v1.0.0"]);
        ws.commit("first change");
        ws
    }

    /// An empty commit: the next version.
    pub fn commit(&self, message: &str) {
        git(self.path(), &["commit", "-q", "--allow-empty", "-m", message]);
    }

    /// `.wharf/state/services/SERVICE.json`.
    pub fn service_state(&self, service: &str) -> serde_json::Value {
        let path = self.path().join(format!(".wharf/state/services/{service}.json"));
        serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
    }

    /// The state a wharf killed inside a target's start leaves: it saved the instance as
    /// starting, the target started it, the record of it never came. Made from a real
    /// upgrade by turning the service's last instance back into that; its handle.
    pub fn as_if_killed_mid_start(&self, service: &str) -> String {
        let path = self.path().join(format!(".wharf/state/services/{service}.json"));
        let mut state = self.service_state(service);
        let instances = state["instances"].as_array_mut().unwrap();
        let last = instances.last_mut().unwrap();
        let handle = last["handle"].as_str().unwrap().to_string();
        last["handle"] = "".into();
        last["running"] = false.into();
        last["port"] = 0.into();
        last["condition"] = "starting".into();
        state["state"] = "upgrading".into();
        std::fs::write(&path, serde_json::to_vec_pretty(&state).unwrap()).unwrap();
        handle
    }

    /// Addresses of the running instances of a service, per `wharf status`.
    pub fn running_urls(&self, service: &str) -> Vec<String> {
        let status = self.wharf(&["status", service]);
        assert_eq!(status.code(), 0, "{}", status.all());
        status
            .stdout()
            .lines()
            .filter(|l| l.trim_end().ends_with("running"))
            .map(|l| format!("http://{}", l.split_whitespace().nth(2).unwrap()))
            .collect()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `wharf ARGS` with this workspace's compile cache, in the workspace.
    pub fn wharf(&self, args: &[&str]) -> Run {
        let out = self.command(args).output().unwrap();
        Run(out)
    }

    pub fn command(&self, args: &[&str]) -> Command {
        self.command_of(Path::new(env!("CARGO_BIN_EXE_wharf")), args)
    }

    /// Run wharf with `args` under a pseudo-terminal (`script` gives it one), in colour, and
    /// return what it drew, escape sequences and all.
    pub fn on_terminal(&self, args: &str) -> String {
        let typescript = self.path().join("typescript");
        let status = Command::new("script")
            .args(["-q", "-e", "-c"])
            .arg(format!("{} {args}", env!("CARGO_BIN_EXE_wharf")))
            .arg(&typescript)
            .current_dir(self.path())
            .env("WHARF_CACHE_DIR", self.cache.path())
            .env("TERM", "xterm")
            .env_remove("NO_COLOR")
            .stdout(std::process::Stdio::null())
            .status()
            .expect("`script` (util-linux)");
        assert!(status.success());
        String::from_utf8_lossy(&std::fs::read(&typescript).unwrap()).into_owned()
    }

    /// As [`Workspace::command`], with another wharf binary.
    pub fn command_of(&self, wharf: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(wharf);
        cmd.args(args)
            .current_dir(self.path())
            .env("WHARF_CACHE_DIR", self.cache.path())
            .env("NO_COLOR", "1")
            // The lines the tests read, whatever CI the tests themselves run in.
            .env("WHARF_OUTPUT", "human")
            .env_remove("GITHUB_ACTIONS")
            .env_remove("GITLAB_CI")
            .env_remove("RUST_LOG");
        cmd
    }
}

/// Stop whatever the tests deployed from this workspace: local processes, containers, and
/// the images the Docker engine pulled for them.
impl Drop for Workspace {
    fn drop(&mut self) {
        let dir = self.path().join(".wharf/state/services");
        let Ok(entries) = std::fs::read_dir(&dir) else { return };
        for entry in entries.flatten() {
            let Ok(bytes) = std::fs::read(entry.path()) else {
                continue;
            };
            let Ok(state) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                continue;
            };
            for instance in state["instances"].as_array().into_iter().flatten() {
                let handle = instance["handle"].as_str().unwrap_or_default();
                match state["target"].as_str() {
                    Some("local") => {
                        // A local instance's handle is `PID:STARTTIME`.
                        let pid = handle.split(':').next().unwrap_or_default();
                        if let Ok(pid) = pid.parse::<i32>() {
                            // SAFETY: signalling a process group has no memory-safety preconditions.
                            unsafe { libc::killpg(pid, libc::SIGKILL) };
                        }
                    }
                    Some("docker") => {
                        let _ = Command::new("docker").args(["rm", "-f", handle]).output();
                    }
                    _ => {}
                }
            }
            if state["target"].as_str() == Some("docker") {
                // Every revision of the service came from the test's own registry (its
                // address is the test's alone): the engine's copies of all of them go.
                let repositories = ["current", "previous"]
                    .iter()
                    .filter_map(|r| state[r]["revision"]["image"].as_str())
                    .map(|image| {
                        let name = image.split('@').next().unwrap_or(image);
                        match name.rfind(':') {
                            Some(colon) if !name[colon..].contains('/') => &name[..colon],
                            _ => name,
                        }
                        .to_string()
                    });
                for repository in repositories {
                    let images = Command::new("docker")
                        .args(["images", "-q", "--filter", &format!("reference={repository}")])
                        .output();
                    for id in images.iter().flat_map(|o| {
                        String::from_utf8_lossy(&o.stdout)
                            .into_owned()
                            .split_whitespace()
                            .map(String::from)
                            .collect::<Vec<_>>()
                    }) {
                        let _ = Command::new("docker").args(["rmi", "-f", &id]).output();
                    }
                }
            }
        }
    }
}

pub struct Run(pub Output);

impl Run {
    pub fn code(&self) -> i32 {
        self.0.status.code().unwrap_or(-1)
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
    pub fn all(&self) -> String {
        format!("--- stdout\n{}--- stderr\n{}", self.stdout(), self.stderr())
    }
    /// The run id from the header line `wharf run NAME · run ID · N steps`.
    pub fn run_id(&self) -> String {
        let out = self.stdout();
        let header = out
            .lines()
            .find(|l| l.starts_with("wharf run "))
            .unwrap_or_else(|| panic!("no run header:\n{}", self.all()));
        header
            .split(" · ")
            .nth(1)
            .unwrap()
            .trim_start_matches("run ")
            .to_string()
    }

    /// The status line of step `id`: `ok   id   12ms ...`.
    pub fn step_line(&self, id: &str) -> String {
        self.stdout()
            .lines()
            .find(|l| {
                let mut words = l.split_whitespace();
                matches!(words.next(), Some("ok" | "FAIL" | "skip")) && words.next() == Some(id)
            })
            .unwrap_or_else(|| panic!("no status line for step `{id}`:\n{}", self.all()))
            .to_string()
    }
    pub fn status_of(&self, id: &str) -> String {
        self.step_line(id).split_whitespace().next().unwrap().to_string()
    }
    /// `→ key=value` lines printed under step `id` with `-v`.
    pub fn output_of(&self, id: &str, key: &str) -> Option<String> {
        let text = self.stdout();
        let line = self.step_line(id);
        let after = &text[text.find(&line).unwrap() + line.len()..];
        after
            .lines()
            .skip(1)
            .take_while(|l| l.trim_start().starts_with('→'))
            .find_map(|l| {
                l.trim_start()
                    .trim_start_matches('→')
                    .trim()
                    .strip_prefix(&format!("{key}="))
                    .map(String::from)
            })
    }
}

/// PATH with the tools `.ci/run` installs for step authors' toolchains first: `wasm-tools`
/// and `wit-bindgen` (crates.io, in `target/ci-tools/bin`), componentize-py and ruff (beside
/// WHARF_TEST_PYTHON).
pub fn tools_path() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tools = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("ci-tools/bin");
    let python = std::env::var("WHARF_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let venv = Path::new(&python).parent().map(Path::to_path_buf).unwrap_or_default();
    format!(
        "{}:{}:{}",
        tools.display(),
        venv.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Python with `junitparser`, `selenium`, `pytest` and `oras` (PyPI) and `jsonschema`:
/// `.ci/run` makes a virtual environment with them and names it in WHARF_TEST_PYTHON.
pub fn python<S: AsRef<std::ffi::OsStr>>(script: &str, args: &[S]) -> std::process::Output {
    let python = std::env::var("WHARF_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e} (.ci/run installs it)"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "{stderr}\n`.ci/run` installs junitparser, jsonschema, selenium, pytest, oras and securesystemslib and sets WHARF_TEST_PYTHON"
    );
    out
}

/// Every line of an `--events` file validates against `docs/events.schema.json`.
pub fn validate_events(events: &Path) {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/events.schema.json");
    let check = python(
        r#"
import sys, json, jsonschema
schema = json.load(open(sys.argv[1]))
validator = jsonschema.Draft202012Validator(schema)
validator.check_schema(schema)
n = 0
for number, line in enumerate(open(sys.argv[2]), 1):
    errors = list(validator.iter_errors(json.loads(line)))
    if errors:
        sys.exit(f"line {number}: {errors[0].message}\n{line}")
    n += 1
print(n)
"#,
        &[&schema, events],
    );
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

/// Run `cmd` to its end: its exit code and the most memory it held at once (peak resident
/// set, bytes), as the kernel counted it.
#[allow(clippy::zombie_processes, reason = "wait4 below reaps it, and reports its usage")]
pub fn peak_memory(mut cmd: Command) -> (i32, u64) {
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: rusage is plain data the kernel fills; the pid is our own child's.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(waited, child.id() as i32, "wait4: {}", std::io::Error::last_os_error());
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (code, usage.ru_maxrss as u64 * 1024)
}
