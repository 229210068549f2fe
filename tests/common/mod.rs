//! Shared test harness: runs the real `wharf` binary in a scratch workspace that is a git
//! repository, with its own compile cache.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Workspace {
    pub dir: tempfile::TempDir,
    pub cache: tempfile::TempDir,
}

/// A built test or example step (`tests/steps/*`, `examples/*`), by artifact name.
pub fn guest(name: &str) -> PathBuf {
    let path = Path::new(env!("WHARF_GUEST_ARTIFACTS")).join(format!("{name}.wasm"));
    assert!(path.exists(), "{} was not built", path.display());
    path
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
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
        cmd.args(args)
            .current_dir(self.path())
            .env("WHARF_CACHE_DIR", self.cache.path())
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG");
        cmd
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
