//! Replay against the original run, same machine, same run of this program: the seed
//! pipeline on the local target, recorded, then replayed from its journal.
//!
//! `cargo bench --bench replay`. Each original is a whole `wharf run` process, each replay a
//! whole `wharf replay` process; medians of several samples.
//!
//! - a broken release (`status=FAIL`): the original builds, upgrades two instances (health
//!   checks), waits out the gate's 10 s deadline and rolls back;
//! - a good release: the original builds, upgrades, passes the gate at once and confirms.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::Workspace;
use std::time::{Duration, Instant};

const SAMPLES: usize = 3;
const REPLAYS: usize = 5;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Time `wharf run` with `vars`, then the replays of that run.
fn sample(ws: &Workspace, vars: &[&str], expect: i32) -> (Duration, Vec<Duration>) {
    ws.commit("next release");
    let mut args = vec!["run", "pipeline.yml"];
    for v in vars {
        args.extend(["--var", v]);
    }
    let t = Instant::now();
    let run = ws.wharf(&args);
    let original = t.elapsed();
    assert_eq!(run.code(), expect, "{}", run.all());
    let id = run.run_id();
    let replays = (0..REPLAYS)
        .map(|_| {
            let t = Instant::now();
            let replay = ws.wharf(&["replay", &id]);
            let took = t.elapsed();
            assert_eq!(replay.code(), 0, "{}", replay.all());
            took
        })
        .collect();
    (original, replays)
}

fn main() {
    let ws = Workspace::seed();
    // A first deploy, so the broken release has something to roll back to.
    let first = ws.wharf(&["run", "pipeline.yml"]);
    assert_eq!(first.code(), 0, "{}", first.all());
    for (label, vars, expect) in [
        ("broken release (gate fails, rollback)", vec!["status=FAIL"], 3),
        ("good release (gate passes, confirm)", vec![], 0),
    ] {
        let mut originals = Vec::new();
        let mut replays = Vec::new();
        for _ in 0..SAMPLES {
            let (o, r) = sample(&ws, &vars, expect);
            originals.push(o);
            replays.extend(r);
        }
        let (o, r) = (median(originals.clone()), median(replays.clone()));
        println!("{label}");
        println!(
            "  original `wharf run`     median {:>9.1} ms  (n={})",
            o.as_secs_f64() * 1e3,
            originals.len()
        );
        println!(
            "  `wharf replay` of it     median {:>9.1} ms  (n={})",
            r.as_secs_f64() * 1e3,
            replays.len()
        );
        println!("  replay is {:.1}x faster", o.as_secs_f64() / r.as_secs_f64());
    }
}
