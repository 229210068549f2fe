//! A replay against the run it replays, same machine, same run of this program: the seed
//! pipeline on the local target, recorded, then replayed from its journal. Both are timed as
//! whole processes (`wharf run`, `wharf replay RUN`).
//!
//! `cargo bench --bench replay`.
//!
//! A replay answers every host call from the journal, so what it skips is what the original
//! spent waiting on the world: the build command, health checks, HTTP, and the gate's sleeps.
//! The bench reads those waits from the original's own journal (each call's recorded
//! duration, and the sleeps the steps asked for) and reports them beside the two times, so
//! the comparison that matters is the replay against the original without its waits.
//!
//! - a broken release (`status=FAIL`): the original builds, upgrades two instances (health
//!   checks), waits out the gate's 10 s deadline and rolls back;
//! - a good release: the original builds, upgrades, passes the gate at once and confirms.

#[path = "../../tests/common/mod.rs"]
mod common;

#[path = "support/measure.rs"]
#[allow(dead_code)]
mod measure;

use common::Workspace;
use measure::{median, ms};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const SAMPLES: usize = 3;
const REPLAYS: usize = 5;

/// What the original spent waiting, from its journal: time inside recorded host calls, by
/// interface, and the sleeps its steps asked for.
fn waits(ws: &Workspace, id: &str) -> BTreeMap<String, Duration> {
    let journal = std::fs::read_to_string(ws.path().join(".wharf/runs").join(id).join("journal.jsonl")).unwrap();
    let mut waits: BTreeMap<String, Duration> = BTreeMap::new();
    for line in journal.lines() {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap();
        match entry["kind"].as_str() {
            Some("call") => {
                let name = format!(
                    "{}.{}",
                    entry["interface"].as_str().unwrap(),
                    entry["function"].as_str().unwrap()
                );
                *waits.entry(name).or_default() += Duration::from_micros(entry["micros"].as_u64().unwrap());
            }
            Some("clocks") => {
                for call in entry["calls"].as_array().unwrap() {
                    if let Some(ns) = call["sleep"].as_u64() {
                        *waits.entry("sleeps (subscribe-duration)".into()).or_default() += Duration::from_nanos(ns);
                    }
                }
            }
            _ => {}
        }
    }
    waits
}

/// Time `wharf run` with `vars`, then the replays of that run.
fn sample(ws: &Workspace, vars: &[&str], expect: i32) -> (Duration, BTreeMap<String, Duration>, Vec<Duration>) {
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
    (original, waits(ws, &id), replays)
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
        let mut all_waits: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
        for _ in 0..SAMPLES {
            let (o, w, r) = sample(&ws, &vars, expect);
            originals.push(o);
            replays.extend(r);
            for (name, d) in w {
                all_waits.entry(name).or_default().push(d);
            }
        }
        let original = median(originals.clone());
        let replay = median(replays.clone());
        println!("{label}");
        println!(
            "  original `wharf run`        median {:>9.1} ms  (n={})",
            ms(original),
            originals.len()
        );
        let mut waited = Duration::ZERO;
        let mut rows: Vec<(String, Duration)> = all_waits
            .into_iter()
            .map(|(name, v)| (name, median(v)))
            .filter(|(_, d)| *d >= Duration::from_millis(1))
            .collect();
        rows.sort_by_key(|row| std::cmp::Reverse(row.1));
        for (name, d) in &rows {
            println!("    of which waiting in {name:<40} {:>9.1} ms", ms(*d));
            waited += *d;
        }
        let rest = original.saturating_sub(waited);
        println!("    the rest (start, load, guests' own work) {:>9.1} ms", ms(rest));
        println!(
            "  `wharf replay` of it        median {:>9.1} ms  (n={})",
            ms(replay),
            replays.len()
        );
        println!(
            "  replay / original {:.3}; replay / original without its waits {:.2}",
            replay.as_secs_f64() / original.as_secs_f64(),
            replay.as_secs_f64() / rest.as_secs_f64()
        );
    }
}
