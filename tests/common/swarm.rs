//! The test swarm of `.ci/swarm`: three Docker engines in network namespaces, a manager
//! (storage=hdd) and two workers (storage=ssd). One at a time on a machine: its names and
//! addresses are fixed, so a test holds [`Swarm::up`]'s guard for as long as it uses it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

pub fn script(dir: &Path, args: &[&str]) -> Output {
    Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/swarm"))
        .args(args)
        .env("WHARF_SWARM_DIR", dir)
        .output()
        .unwrap()
}

/// A swarm that is torn down however the test ends.
pub struct Swarm {
    pub dir: PathBuf,
    /// The manager, as `DOCKER_HOST`.
    pub host: String,
    _temp: tempfile::TempDir,
    _turn: MutexGuard<'static, ()>,
}

impl Swarm {
    pub fn up() -> Swarm {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("swarm");
        let up = script(&dir, &["up"]);
        let stdout = String::from_utf8_lossy(&up.stdout).into_owned();
        let swarm = Swarm {
            host: stdout
                .trim()
                .strip_prefix("DOCKER_HOST=")
                .unwrap_or_default()
                .to_string(),
            dir,
            _temp: temp,
            _turn: turn,
        };
        assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
        swarm
    }

    /// Make a server on the host's 127.0.0.1:PORT (a test registry) reachable at the same
    /// address on every node.
    pub fn forward(&self, port: u16) {
        let forward = script(&self.dir, &["forward", &port.to_string()]);
        assert!(forward.status.success(), "{}", String::from_utf8_lossy(&forward.stderr));
    }

    /// `docker ARGS` against the manager; its stdout.
    pub fn docker(&self, args: &[&str]) -> String {
        let out = Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", &self.host)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Kill a node's engine outright, as a machine that dies would.
    pub fn kill_engine(&self, node: &str) {
        let pid = std::fs::read_to_string(self.dir.join(node).join("docker.pid")).unwrap();
        // SAFETY: sending a signal to a process by its pid.
        let killed = unsafe { libc::kill(pid.trim().parse().unwrap(), libc::SIGKILL) };
        assert_eq!(killed, 0, "the engine of {node} was not running");
    }
}

/// Processes still in the test swarm's cgroups (its engines' containers), as `grep -l` lists
/// their cgroup files; empty when none is left.
pub fn processes_left() -> String {
    let out = Command::new("sh")
        .args(["-c", "grep -l wharf-swarm- /proc/[0-9]*/cgroup 2>/dev/null || true"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Drop for Swarm {
    fn drop(&mut self) {
        let down = script(&self.dir, &["down"]);
        assert!(
            down.status.success() || std::thread::panicking(),
            "{}",
            String::from_utf8_lossy(&down.stderr)
        );
    }
}
