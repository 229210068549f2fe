//! The cluster the swarm target is tested on (`.ci/swarm`): three Docker engines, each in a
//! network namespace of its own, form a swarm of one manager and two workers with labelled
//! nodes, reach a registry on the host's loopback under the same name, and leave nothing
//! behind when torn down. Needs root and dockerd, as `.ci/run` has them.

mod common;
use common::swarm::{Swarm, processes_left, script};
use std::process::Command;

#[test]
fn the_test_swarm_comes_up_labelled_reaches_the_host_loopback_and_goes_away() {
    let swarm = Swarm::up();
    let nodes = swarm.docker(&["node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}"]);
    let mut nodes: Vec<&str> = nodes.lines().collect();
    nodes.sort();
    assert_eq!(nodes, ["manager Ready Leader", "worker-1 Ready ", "worker-2 Ready "]);
    let ids = swarm.docker(&["node", "ls", "-q"]);
    let mut labels: Vec<String> = ids
        .split_whitespace()
        .map(|id| {
            swarm
                .docker(&[
                    "node",
                    "inspect",
                    "--format",
                    "{{.Description.Hostname}} {{.Spec.Labels.storage}} {{.Status.Addr}}",
                    id,
                ])
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
    swarm.forward(port);
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

    // `.ci/run`'s safety net tears down with the default directory, not the test's: the
    // engines still go, found by their network namespaces.
    let engines: Vec<i32> = ["manager", "worker-1", "worker-2"]
        .iter()
        .map(|node| {
            let pid = std::fs::read_to_string(swarm.dir.join(node).join("docker.pid")).unwrap();
            pid.trim().parse().unwrap()
        })
        .collect();
    let elsewhere = tempfile::tempdir().unwrap();
    let down = script(&elsewhere.path().join("swarm"), &["down"]);
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    // Alive: in the process table and not a zombie awaiting its reaper.
    let alive = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat.rsplit(") ").next().is_some_and(|rest| !rest.starts_with('Z')))
    };
    let started = std::time::Instant::now();
    while engines.iter().any(|pid| alive(*pid)) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "engines outlived the tear-down: {engines:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    let down = script(&swarm.dir, &["down"]);
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    assert!(!swarm.dir.exists(), "the swarm's directory is left");
    let left = processes_left();
    assert!(left.is_empty(), "processes left in the nodes' cgroups: {left}");
    // Down again, as the guard does: nothing to do, and no error.
    drop(swarm);
    let namespaces = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&namespaces.stdout).contains("wharfsw-"),
        "{namespaces:?}"
    );
    let link = Command::new("ip").args(["link", "show", "wharfsw0"]).output().unwrap();
    assert!(!link.status.success(), "the bridge is left");
}
