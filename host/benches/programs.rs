//! What confining programs costs a user, side by side with running them unconfined
//! (`--sandbox off`, the code path every program took before) in one run of this program:
//!
//! - whole `wharf run` processes of 1 and 200 `builtin:exec` steps of `true`: in each round
//!   the marginal cost of a program is (200 steps - 1 step) / 199, and what confining adds
//!   to it is the difference of the two modes' in that round (paired, so that what the
//!   machine does between rounds cancels); the difference of the two 1-step runs is what
//!   starting the run's confinement costs once;
//! - the seed pipeline's whole run (`cargo build` with nothing to do, packaging, a rolling
//!   upgrade of two local instances, the gate, render, confirm), in a workspace per mode.
//!
//! Rounds interleave the modes, rotating their order. `cargo bench --bench programs`.

#[path = "../../tests/common/mod.rs"]
mod common;

#[path = "support/measure.rs"]
#[allow(dead_code)]
mod measure;

use common::Workspace;
use measure::{median, ms, timed};
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

const ROUNDS: usize = 21;
const SEED_ROUNDS: usize = 9;
const MODES: [&str; 2] = ["auto", "off"];
const MANY: usize = 200;

fn trues(n: usize) -> String {
    let mut text = format!("name: true-{n}\nsteps:\n");
    for i in 0..n {
        text.push_str(&format!(
            "  - id: t{i}\n    uses: builtin:exec\n    cache: false\n    with: {{ program: \"true\" }}\n"
        ));
    }
    text
}

fn main() {
    let ws = Workspace::new();
    for n in [1, MANY] {
        ws.write(&format!("true-{n}.yml"), &trues(n));
    }
    let doctor = ws.wharf(&["doctor"]);
    let level = doctor
        .stdout()
        .lines()
        .find(|l| l.starts_with("programs are confined as far as"))
        .map(|l| l.split('`').nth(1).unwrap_or("?").to_string())
        .unwrap_or_default();
    println!("confinement here: `{level}`");
    for mode in MODES {
        let warm = ws.wharf(&["run", "true-1.yml", "--sandbox", mode]);
        assert_eq!(warm.code(), 0, "{}", warm.all());
    }
    let seeds: BTreeMap<&str, Workspace> = MODES.iter().map(|m| (*m, Workspace::seed())).collect();
    for (mode, seed) in &seeds {
        let warm = seed.wharf(&["run", "pipeline.yml", "--sandbox", mode]);
        assert_eq!(warm.code(), 0, "{}", warm.all());
    }

    let mut samples: BTreeMap<(String, &str), Vec<Duration>> = BTreeMap::new();
    for round in 0..ROUNDS {
        let mut cases: Vec<(String, &str)> = Vec::new();
        for n in [1, MANY] {
            for mode in MODES {
                cases.push((format!("true-{n}"), mode));
            }
        }
        if round < SEED_ROUNDS {
            for mode in MODES {
                cases.push(("seed".into(), mode));
            }
        }
        let len = cases.len();
        cases.rotate_left(round % len);
        for (case, mode) in cases {
            let took = if case == "seed" {
                timed(
                    seeds[mode]
                        .command(&["run", "pipeline.yml", "--sandbox", mode])
                        .env("WHARF_KEEP_RUNS", "20"),
                )
            } else {
                timed(
                    ws.command(&["run", &format!("{case}.yml"), "--sandbox", mode])
                        .env("WHARF_KEEP_RUNS", "20"),
                )
            };
            samples.entry((case, mode)).or_default().push(took);
        }
    }
    for seed in seeds.values() {
        let _ = seed.command(&["remove", "seed"]).stdout(Stdio::null()).status();
    }

    let many = format!("true-{MANY}");
    let med = |case: &str, mode: &str| median(samples[&(case.to_string(), mode)].clone());
    println!("\nwhole runs, median (samples)");
    println!("{:<28} {:>16} {:>16}", "", "--sandbox auto", "--sandbox off");
    for case in ["true-1", many.as_str(), "seed"] {
        let n = samples[&(case.to_string(), "auto")].len();
        println!(
            "{:<28} {:>11.1} ms ({n}) {:>11.1} ms ({n})",
            case,
            ms(med(case, "auto")),
            ms(med(case, "off"))
        );
    }
    // Per round: each mode's marginal cost of a program, and their difference.
    let per_round = |mode: &str| -> Vec<f64> {
        let (one, all) = (&samples[&("true-1".to_string(), mode)], &samples[&(many.clone(), mode)]);
        one.iter()
            .zip(all)
            .map(|(o, a)| (a.as_secs_f64() - o.as_secs_f64()) / (MANY - 1) as f64 * 1e3)
            .collect()
    };
    let (confined, plain) = (per_round("auto"), per_round("off"));
    let added: Vec<f64> = confined.iter().zip(&plain).map(|(c, p)| c - p).collect();
    let median_f = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (confined, plain, added) = (median_f(confined), median_f(plain), median_f(added));
    println!(
        "\na program (exec of `true`), marginal, median of {ROUNDS} rounds: ({MANY} steps - 1) / {}",
        MANY - 1
    );
    println!(
        "  confined {confined:.2} ms, unconfined {plain:.2} ms; confining adds {added:+.2} ms ({:+.0}%)",
        added / plain * 100.0
    );
    println!(
        "starting the run's confinement, once: {:+.1} ms (1-step runs)",
        ms(med("true-1", "auto")) - ms(med("true-1", "off"))
    );
    println!(
        "the seed pipeline: {:+.1}% confined",
        (med("seed", "auto").as_secs_f64() / med("seed", "off").as_secs_f64() - 1.0) * 100.0
    );
}
