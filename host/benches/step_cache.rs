//! What the step cache saves and what it costs, as whole `wharf run` processes, side by side
//! in one run of this program, interleaved round by round (the order rotates each round and
//! is reversed every other one):
//!
//! - the seed's `build` step (cargo, then the image assembled into the store), alone in a
//!   pipeline with a fixed tag: taken from the cache, against the same step with
//!   `cache: false` run warm (cargo has nothing to do: what a re-run cost before the cache);
//! - a chain of 100 WASI steps that always misses (each step's parameter carries the run id)
//!   with the cache on, against the same chain with `cache: false` on every step. The
//!   warm-up runs the chain until its steps are no longer saved (their identity was new in
//!   each of their last runs), so the rounds measure what every later run pays: identity,
//!   lookup, the explanation, the pipeline's record of its steps;
//! - a one-step run taken from the cache, and the same step with `cache: false`, against
//!   `wharf --version`.
//!
//! Each ratio is given twice: as the ratio of the two medians, and as the median of the
//! ratios within a round (the two runs of a round are close in time, so a guest whose speed
//! wanders over minutes moves both alike).
//!
//! `cargo bench --bench step_cache`

#[path = "../../tests/common/mod.rs"]
mod common;

#[path = "support/measure.rs"]
#[allow(dead_code)]
mod measure;

use common::{Workspace, guest};
use measure::{median, ms, timed};
use std::collections::BTreeMap;
use std::time::Duration;

const ROUNDS: usize = 61;

/// The seed pipeline's `build` step, alone, with a fixed tag.
fn build(cache: bool) -> String {
    let seed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/seed/pipeline.yml")).unwrap();
    let start = seed.find("  - id: build").unwrap();
    let end = seed.find("  - id: push").unwrap();
    let step = seed[start..end]
        .replace("${{ steps.version.outputs.version }}", "1.0.0")
        .replace("${{ vars.service }}", "seed")
        .replace("${{ vars.status }}", "OK")
        .replace("${{ vars.error-rate }}", "0");
    let off = if cache { "" } else { "    cache: false\n" };
    format!("name: build\nsteps:\n{step}{off}")
}

fn chain(n: usize, cache: bool) -> String {
    let mut text = format!("name: chain-{n}\nsteps:\n");
    let off = if cache { "" } else { ", cache: false" };
    for i in 0..n {
        text.push_str(&format!(
            "  - {{ id: s{i}, uses: ./cmd.wasm, with: {{ x: \"${{{{ run.id }}}}-{i}\" }}{off} }}\n"
        ));
    }
    text
}

fn main() {
    let seed = Workspace::seed();
    seed.write("build.yml", &build(true));
    seed.write("build-off.yml", &build(false));
    let ws = Workspace::new();
    std::fs::copy(guest("cmd-step"), ws.path().join("cmd.wasm")).unwrap();
    ws.write("miss.yml", &chain(100, true));
    ws.write("off.yml", &chain(100, false));
    ws.write(
        "one.yml",
        "name: one\nsteps:\n  - { id: s, uses: ./cmd.wasm, with: { x: one } }\n",
    );
    ws.write(
        "one-off.yml",
        "name: one\nsteps:\n  - { id: s, uses: ./cmd.wasm, with: { x: one }, cache: false }\n",
    );
    // Warm: components compiled, cargo's target/ built, and the cache holding the build as
    // its target/ now is (the first re-run records that state, docs/cache.md).
    for (w, file) in [
        (&seed, "build.yml"),
        (&seed, "build.yml"),
        (&seed, "build-off.yml"),
        (&ws, "one.yml"),
    ] {
        let run = w.wharf(&["run", file]);
        assert_eq!(run.code(), 0, "{}", run.all());
    }
    // The always-missing chain, until its steps are no longer saved (a new identity in
    // each of their last runs): the rounds measure what every later run of it costs.
    let misses = std::iter::repeat_n("miss.yml", wharf::cache::NEW_IN_A_ROW_NOT_SAVED as usize);
    for file in misses.chain(["off.yml", "one-off.yml"]) {
        let run = ws.wharf(&["run", file]);
        assert_eq!(run.code(), 0, "{}", run.all());
    }
    let steady = ws.wharf(&["run", "-v", "miss.yml"]);
    assert!(
        steady.all().contains("not saved: its identity was new"),
        "{}",
        steady.all()
    );
    let hit = seed.wharf(&["run", "build.yml"]);
    assert!(hit.step_line("build").contains("cached from run"), "{}", hit.all());

    type Case<'a> = (&'static str, Box<dyn Fn() -> Duration + 'a>);
    let run = |w: &'static str, file: &'static str| -> Box<dyn Fn() -> Duration + '_> {
        let workspace = if w == "seed" { &seed } else { &ws };
        Box::new(move || timed(workspace.command(&["run", file]).env("WHARF_KEEP_RUNS", "20")))
    };
    let mut samples: BTreeMap<&'static str, Vec<Duration>> = BTreeMap::new();
    for round in 0..ROUNDS {
        let mut cases: Vec<Case> = vec![
            ("build: cached", run("seed", "build.yml")),
            ("build: cache: false (warm cargo)", run("seed", "build-off.yml")),
            ("100 steps: every step misses", run("ws", "miss.yml")),
            ("100 steps: cache: false", run("ws", "off.yml")),
            ("1 step: cached", run("ws", "one.yml")),
            ("1 step: cache: false", run("ws", "one-off.yml")),
            ("wharf --version", Box::new(|| timed(&mut ws.command(&["--version"])))),
        ];
        let len = cases.len();
        cases.rotate_left(round % len);
        // Each case follows each other case as often as it precedes it: a run after one of
        // the same workspace finds its files in the page cache.
        if round % 2 == 1 {
            cases.reverse();
        }
        for (name, case) in cases {
            samples.entry(name).or_default().push(case());
        }
    }
    let paired = |a: &str, b: &str| {
        let ratios = samples[a]
            .iter()
            .zip(&samples[b])
            .map(|(a, b)| a.as_secs_f64() / b.as_secs_f64());
        let mut ratios: Vec<f64> = ratios.collect();
        ratios.sort_by(f64::total_cmp);
        ratios[ratios.len() / 2]
    };
    let medians: BTreeMap<&str, f64> = samples.iter().map(|(k, v)| (*k, ms(median(v.clone())))).collect();
    println!("medians of {ROUNDS} rounds, whole processes:");
    for (name, value) in &medians {
        println!("  {name:<36} {value:>9.1} ms");
    }
    println!("ratios: of the medians; median of the ratios within a round");
    for (what, a, b) in [
        (
            "build cached / build warm",
            "build: cached",
            "build: cache: false (warm cargo)",
        ),
        (
            "100-step miss / 100 steps uncached",
            "100 steps: every step misses",
            "100 steps: cache: false",
        ),
        ("1 step cached / wharf --version", "1 step: cached", "wharf --version"),
        (
            "1 step uncached / wharf --version",
            "1 step: cache: false",
            "wharf --version",
        ),
    ] {
        println!("  {what:<36} {:>6.3} {:>6.3}", medians[a] / medians[b], paired(a, b));
    }
}
