//! What a run costs a user: whole `wharf run` processes of a chain of 1, 10 and 100 WASI
//! steps, against the same number of `docker run` steps of a minimal image and against the
//! floor of starting that many processes at all (fork+exec of `/bin/true`), side by side in
//! one run of this program, with the workspace (and so the journal) on disk.
//!
//! `cargo bench --bench run_cost` (needs the Docker engine and Debian's `busybox-static`;
//! without them the docker rows are left out and the bench says so).
//!
//! - wharf: `wharf run` of a chain of the `cmd` test step (a WASI command built with the
//!   standard library alone); each step takes the previous one's output.
//! - docker: `docker run --rm --network none IMAGE true`, N times in a row; the image is a
//!   busybox-static root filesystem brought in with `docker import`.
//! - fork+exec: `/bin/true`, N times in a row, spawned and waited for by this program.
//!
//! The marginal cost of a step is (median of N=100 - median of N=1) / 99.
//!
//! `WHARF_BENCH_BASELINE=PATH` adds the rows of another wharf binary (an earlier commit's,
//! say), run in the same workspace and interleaved like the rest, for a before/after.

#[path = "../../tests/common/mod.rs"]
mod common;

#[path = "support/measure.rs"]
#[allow(dead_code)]
mod measure;

use common::{Workspace, guest};
use measure::{median, ms, timed};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SIZES: [usize; 3] = [1, 10, 100];
const ROUNDS: usize = 15;
/// `docker run` takes about half a second: fewer rounds, and the big chain fewer still.
const DOCKER_ROUNDS: [usize; 3] = [9, 5, 3];
const IMAGE: &str = "wharf-bench/busybox:static";

/// A case of one round: its name, and a function that runs it once and says how long it took.
type Case<'a> = (&'static str, Box<dyn Fn() -> Duration + 'a>);

fn chain(n: usize) -> String {
    let mut text = format!("name: chain-{n}\nsteps:\n");
    for i in 0..n {
        let x = if i == 0 {
            "start".to_string()
        } else {
            format!("${{{{ steps.s{}.outputs.x }}}}", i - 1)
        };
        // Run every time: what is measured is running steps (the step cache has a bench of
        // its own, `step_cache`).
        text.push_str(&format!(
            "  - id: s{i}\n    uses: ./cmd.wasm\n    cache: false\n    with: {{ x: \"{x}\" }}\n"
        ));
    }
    text
}

/// A busybox-static root filesystem as a Docker image, or why there is none.
fn docker_image() -> Result<(), String> {
    let busybox = std::path::Path::new("/bin/busybox");
    if !busybox.exists() {
        return Err("no /bin/busybox (apt-get install busybox-static)".into());
    }
    let version = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output();
    if !version.is_ok_and(|o| o.status.success()) {
        return Err("no Docker engine".into());
    }
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("bin")).unwrap();
    std::fs::copy(busybox, root.path().join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.path().join("bin/true")).unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C '{}' -c . | docker import - {IMAGE} >/dev/null",
            root.path().display()
        ))
        .status()
        .unwrap();
    if !status.success() {
        return Err("docker import failed".into());
    }
    Ok(())
}

fn main() {
    let ws = Workspace::new();
    std::fs::copy(guest("cmd-step"), ws.path().join("cmd.wasm")).unwrap();
    for n in SIZES {
        ws.write(&format!("chain-{n}.yml"), &chain(n));
    }
    // Compile the step into the cache once: every measured run is a warm one, as in CI
    // after the first.
    let warm = ws.wharf(&["run", "chain-1.yml"]);
    assert_eq!(warm.code(), 0, "{}", warm.all());
    let baseline = std::env::var_os("WHARF_BENCH_BASELINE").map(std::path::PathBuf::from);
    if let Some(path) = &baseline {
        let warm = ws.command_of(path, &["run", "chain-1.yml"]).output().unwrap();
        assert!(warm.status.success(), "baseline {}: {warm:?}", path.display());
    }
    let docker = docker_image();
    if let Err(why) = &docker {
        println!("docker rows left out: {why}");
    }

    let mut samples: BTreeMap<(&'static str, usize), Vec<Duration>> = BTreeMap::new();
    for round in 0..ROUNDS {
        for (i, n) in SIZES.into_iter().enumerate() {
            let file = format!("chain-{n}.yml");
            let mut cases: Vec<Case> = vec![
                (
                    "wharf run",
                    Box::new(|| timed(ws.command(&["run", &file]).env("WHARF_KEEP_RUNS", "20"))),
                ),
                (
                    "fork+exec /bin/true",
                    Box::new(move || {
                        let t = Instant::now();
                        for _ in 0..n {
                            assert!(Command::new("/bin/true").status().unwrap().success());
                        }
                        t.elapsed()
                    }),
                ),
            ];
            if let Some(path) = &baseline {
                let (ws, file) = (&ws, file.clone());
                cases.push((
                    "wharf run, baseline",
                    Box::new(move || timed(ws.command_of(path, &["run", &file]).env("WHARF_KEEP_RUNS", "20"))),
                ));
            }
            if docker.is_ok() && round < DOCKER_ROUNDS[i] {
                cases.push((
                    "docker run",
                    Box::new(move || {
                        let t = Instant::now();
                        for _ in 0..n {
                            timed(Command::new("docker").args(["run", "--rm", "--network", "none", IMAGE, "true"]));
                        }
                        t.elapsed()
                    }),
                ));
            }
            // A different order each round, so no case always follows the same one.
            let len = cases.len();
            cases.rotate_left(round % len);
            for (name, case) in cases {
                samples.entry((name, n)).or_default().push(case());
            }
        }
    }
    if docker.is_ok() {
        let _ = Command::new("docker")
            .args(["rmi", IMAGE])
            .stdout(Stdio::null())
            .status();
    }

    println!("\nwhole runs, median (samples)");
    println!("{:<24} {:>14} {:>14} {:>14}", "", "1 step", "10 steps", "100 steps");
    let names: Vec<&str> = {
        let mut seen = Vec::new();
        for (name, _) in samples.keys() {
            if !seen.contains(name) {
                seen.push(*name);
            }
        }
        seen
    };
    let med = |name: &str, n: usize| samples.get(&(name, n)).map(|v| median(v.clone()));
    for name in &names {
        let cells: Vec<String> = SIZES
            .iter()
            .map(|&n| match samples.get(&(*name, n)) {
                Some(v) => format!("{:.1} ms ({})", ms(median(v.clone())), v.len()),
                None => "-".into(),
            })
            .collect();
        println!("{name:<24} {:>14} {:>14} {:>14}", cells[0], cells[1], cells[2]);
    }
    println!("\nmarginal cost of a step: (median of 100 - median of 1) / 99");
    let marginal = |name: &str| Some((med(name, 100)?.as_secs_f64() - med(name, 1)?.as_secs_f64()) / 99.0);
    let floor = marginal("fork+exec /bin/true").unwrap();
    for name in &names {
        if let Some(m) = marginal(name) {
            println!("{name:<24} {:>8.3} ms   {:.2}x fork+exec", m * 1e3, m / floor);
        }
    }
}
