//! The cluster the swarm target is tested on (`.ci/swarm`): three Docker engines, each in a
//! network namespace of its own, form a swarm of one manager and two workers with labelled
//! nodes, reach a registry on the host's loopback under the same name, and leave nothing
//! behind when torn down. Needs root and dockerd, as `.ci/run` has them.

use std::path::{Path, PathBuf};
use std::process::Command;

fn script(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/swarm"))
        .args(args)
        .env("WHARF_SWARM_DIR", dir)
        .output()
        .unwrap()
}

/// Tears the swarm down however the test ends.
struct Swarm(PathBuf);

impl Drop for Swarm {
    fn drop(&mut self) {
        let down = script(&self.0, &["down"]);
        assert!(down.status.success() || std::thread::panicking(), "{down:?}");
    }
}

fn docker(host: &str, args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .env("DOCKER_HOST", host)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_test_swarm_comes_up_labelled_reaches_the_host_loopback_and_goes_away() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("swarm");
    let swarm = Swarm(dir.clone());
    let up = script(&dir, &["up"]);
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    let stdout = String::from_utf8(up.stdout).unwrap();
    let host = stdout.trim().strip_prefix("DOCKER_HOST=").unwrap().to_string();

    let nodes = docker(
        &host,
        &["node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}"],
    );
    let mut nodes: Vec<&str> = nodes.lines().collect();
    nodes.sort();
    assert_eq!(nodes, ["manager Ready Leader", "worker-1 Ready ", "worker-2 Ready "]);
    let ids = docker(&host, &["node", "ls", "-q"]);
    let mut labels: Vec<String> = ids
        .split_whitespace()
        .map(|id| {
            docker(
                &host,
                &[
                    "node",
                    "inspect",
                    "--format",
                    "{{.Description.Hostname}} {{.Spec.Labels.storage}} {{.Status.Addr}}",
                    id,
                ],
            )
            .trim()
            .to_string()
        })
        .collect();
    labels.sort();
    assert_eq!(
        labels,
        [
            "manager hdd 10.213.0.10",
            "worker-1 ssd 10.213.0.11",
            "worker-2 ssd 10.213.0.12"
        ]
    );

    // A server on the host's loopback, as a test registry is, answers on every node's own.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            use std::io::Write;
            let _ = (&stream).write_all(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok");
        }
    });
    let forward = script(&dir, &["forward", &port.to_string()]);
    assert!(forward.status.success(), "{}", String::from_utf8_lossy(&forward.stderr));
    for node in ["manager", "worker-1", "worker-2"] {
        let out = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/wharfsw-{node}"))
            .args([
                "bash",
                "-c",
                &format!("exec 3<>/dev/tcp/127.0.0.1/{port}; printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3"),
            ])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).ends_with("ok"), "{node}: {out:?}");
    }

    drop(swarm);
    assert!(!dir.exists(), "the swarm's directory is left");
    let namespaces = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&namespaces.stdout).contains("wharfsw-"),
        "{namespaces:?}"
    );
    let link = Command::new("ip").args(["link", "show", "wharfsw0"]).output().unwrap();
    assert!(!link.status.success(), "the bridge is left");
}
