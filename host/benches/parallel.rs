//! What running steps side by side buys and costs, as whole `wharf run` processes measured
//! in one run of this program, with the workspace (and so the journal) on disk.
//!
//! `cargo bench --bench parallel`
//!
//! - waits: eight independent steps that each wait 200 ms (the `probe` test step sleeping,
//!   as a step waits on a build, a registry or a gate), at `--jobs 1, 2, 4, 8`. The floor is
//!   8 × 200 ms / jobs.
//! - scheduling: 100 trivial steps (the `cmd` test step), once as a chain (no `needs:`, each
//!   after the one before) and once independent (`needs: []`) at `--jobs 1` and `--jobs 8`,
//!   against the same pipelines of 1 step. The cost of a step is (median of 100 - median of
//!   the 1-step runs) / 99; the independent steps' cost beside the chain's is the
//!   scheduling overhead.

#[path = "../../tests/common/mod.rs"]
mod common;

#[path = "support/measure.rs"]
#[allow(dead_code)]
mod measure;

use common::{Workspace, guest};
use measure::{median, ms};
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

const ROUNDS: usize = 9;

fn pipeline(n: usize, independent: bool, step: &str) -> String {
    let mut text = format!("name: p{n}\nsteps:\n");
    for i in 0..n {
        let needs = if independent { ", needs: []" } else { "" };
        text.push_str(&format!("  - {{ id: s{i}, {step}{needs} }}\n"));
    }
    text
}

fn main() {
    let ws = Workspace::new();
    std::fs::copy(guest("cmd-step"), ws.path().join("cmd.wasm")).unwrap();
    // `cache: false`: measured is running steps, not taking them from the step cache.
    let wait = "uses: ./probe.wasm, cache: false, with: { mode: sleep, wait: 200ms }";
    let trivial = "uses: ./cmd.wasm, cache: false, with: { x: start }";
    ws.write("waits.yml", &pipeline(8, true, wait));
    for n in [1, 100] {
        ws.write(&format!("chain-{n}.yml"), &pipeline(n, false, trivial));
        ws.write(&format!("independent-{n}.yml"), &pipeline(n, true, trivial));
    }
    // Compile the steps into the cache once: every measured run is a warm one.
    for file in ["waits.yml", "chain-1.yml"] {
        let warm = ws.wharf(&["run", file, "--jobs", "8"]);
        assert_eq!(warm.code(), 0, "{}", warm.all());
    }
    let run = |file: &str, jobs: &str| {
        let t = Instant::now();
        let out = ws
            .command(&["run", file, "--jobs", jobs])
            .env("WHARF_KEEP_RUNS", "20")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let took = t.elapsed();
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
        took
    };
    let cases: Vec<(String, String, &str)> = ["1", "2", "4", "8"]
        .into_iter()
        .map(|j| (format!("8 waits, --jobs {j}"), "waits.yml".to_string(), j))
        .chain([1, 100].into_iter().flat_map(|n| {
            [
                (format!("chain of {n}"), format!("chain-{n}.yml"), "1"),
                (
                    format!("{n} independent, --jobs 1"),
                    format!("independent-{n}.yml"),
                    "1",
                ),
                (
                    format!("{n} independent, --jobs 8"),
                    format!("independent-{n}.yml"),
                    "8",
                ),
            ]
        }))
        .collect();
    let mut samples: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for round in 0..ROUNDS {
        // A different order each round, so no case always follows the same one.
        let mut order: Vec<&(String, String, &str)> = cases.iter().collect();
        order.rotate_left(round % cases.len());
        for (name, file, jobs) in order {
            samples.entry(name).or_default().push(run(file, jobs));
        }
    }
    let med = |name: &str| median(samples[name].clone());
    println!("\neight steps waiting 200 ms each, whole runs, median of {ROUNDS}");
    for jobs in [1u32, 2, 4, 8] {
        let name = format!("8 waits, --jobs {jobs}");
        println!(
            "  --jobs {jobs}: {:>7.1} ms   (floor {:>5.0} ms; {:.2}x the --jobs 1 run)",
            ms(med(&name)),
            1600.0 / f64::from(jobs),
            med(&name).as_secs_f64() / med("8 waits, --jobs 1").as_secs_f64()
        );
    }
    println!("\n100 trivial steps, whole runs, median of {ROUNDS}");
    // The three 1-step pipelines do the same work: one baseline from all their samples.
    let one: Vec<Duration> = samples
        .iter()
        .filter(|(name, _)| name.starts_with("chain of 1,") || name.starts_with("1 ") || **name == "chain of 1")
        .flat_map(|(_, v)| v.iter().copied())
        .collect();
    let one = ms(median(one));
    println!("  1 step (all three kinds): {one:.1} ms");
    let per_step = |kind: &str| (ms(med(&kind.replace("{n}", "100"))) - one) / 99.0;
    let chain = per_step("chain of {n}");
    for kind in ["chain of {n}", "{n} independent, --jobs 1", "{n} independent, --jobs 8"] {
        let step = per_step(kind);
        println!(
            "  {:<26} 100 steps {:>6.1} ms, a step {step:.3} ms ({:.2}x the chain's)",
            kind.replace("{n}", "n"),
            ms(med(&kind.replace("{n}", "100"))),
            step / chain
        );
    }
}
