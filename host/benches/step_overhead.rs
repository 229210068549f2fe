//! Overhead of one step, in a release build (`cargo bench --bench step_overhead`):
//!
//! - cold: a fresh engine compiles the component, instantiates it and calls it;
//! - warm: a fresh engine (what a new `wharf` process has) loads the compiled component from
//!   the disk cache, instantiates it and calls it; plus a whole `wharf run` process of a
//!   one-step pipeline, for scale;
//! - hot: a running host instantiates an already loaded step and calls it.
//!
//! Prints medians and 90th percentiles; targets: hot <= 200 us, warm <= 5 ms.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wharf::capabilities::StepScope;
use wharf::engine::bindings::wharf::step::types::Value;
use wharf::engine::limits::StepLimits;
use wharf::engine::step::{self, StepInput, StepParams};
use wharf::engine::{LoadedStep, Runtime, StepKind};
use wharf::events::Events;
use wharf::pipeline::StepSource;

fn stats(label: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let median = samples[samples.len() / 2];
    let p90 = samples[samples.len() * 9 / 10];
    println!(
        "{label:<58} median {:>9.1} us   p90 {:>9.1} us   (n={})",
        median.as_secs_f64() * 1e6,
        p90.as_secs_f64() * 1e6,
        samples.len()
    );
    median
}

fn input(step_id: &str, params: StepParams) -> StepInput {
    StepInput {
        scope: StepScope::new("bench", step_id, &std::env::temp_dir(), Events::new(), 1 << 20),
        pipeline: "bench".into(),
        attempt: 1,
        params,
        secrets: Arc::default(),
        deployer: None,
        grants: Arc::default(),
        preopens: Vec::new(),
        scratch: None,
        tape: Default::default(),
        limits: StepLimits::default(),
    }
}

async fn describe(step: &LoadedStep) {
    let StepKind::Typed(pre) = &step.kind else {
        unreachable!()
    };
    step::describe(pre).await.unwrap();
}

async fn run_probe(step: &LoadedStep) {
    // Defaults filled in, as the runner does.
    let info = step.info.as_ref().unwrap();
    let mut params: Vec<(String, Value)> = info
        .params
        .iter()
        .filter_map(|p| Some((p.name.clone(), p.default.clone()?)))
        .collect();
    params.retain(|(n, _)| n != "echo");
    params.push(("echo".into(), Value::Text("x".into())));
    let params = StepParams::Typed(params);
    step::run(step, input("probe", params)).await.unwrap();
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let probe_path = Path::new(env!("WHARF_GUEST_ARTIFACTS")).join("probe_step.wasm");
    let exec = StepSource::Builtin("exec".into());
    let probe = StepSource::File(probe_path);
    let events = Events::new();
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = Some(cache.path().join("components"));
    rt.block_on(async {
        println!("step overhead (release build, {} iterations per hot row)\n", 2000);

        // Cold: new engine, no cache: compile + instantiate + call.
        let mut cold = Vec::new();
        for _ in 0..10 {
            let runtime = Runtime::new(None).unwrap();
            let t = Instant::now();
            let step = runtime.load(&exec, &events).await.unwrap();
            describe(&step).await;
            cold.push(t.elapsed());
        }
        stats("cold  builtin:exec compile + instantiate + describe()", cold);

        // Warm: populate the disk cache once, then a fresh engine per sample.
        Runtime::new(cache_dir.clone())
            .unwrap()
            .load(&exec, &events)
            .await
            .unwrap();
        Runtime::new(cache_dir.clone())
            .unwrap()
            .load(&probe, &events)
            .await
            .unwrap();
        let mut warm = Vec::new();
        let mut warm_probe = Vec::new();
        let mut engine_only = Vec::new();
        for _ in 0..50 {
            let t = Instant::now();
            let runtime = Runtime::new(cache_dir.clone()).unwrap();
            engine_only.push(t.elapsed());
            let t = Instant::now();
            let step = runtime.load(&exec, &events).await.unwrap();
            describe(&step).await;
            warm.push(t.elapsed());
            let t = Instant::now();
            let step = runtime.load(&probe, &events).await.unwrap();
            run_probe(&step).await;
            warm_probe.push(t.elapsed());
        }
        stats("warm  new engine (per process, not per step)", engine_only);
        let warm_median = stats("warm  builtin:exec cache load + instantiate + describe()", warm);
        stats("warm  probe step cache load + instantiate + run()", warm_probe);

        // Hot: a running host, step already loaded.
        let runtime = Runtime::new(cache_dir.clone()).unwrap();
        let exec_step = runtime.load(&exec, &events).await.unwrap();
        let probe_step = runtime.load(&probe, &events).await.unwrap();
        for _ in 0..200 {
            describe(&exec_step).await;
            run_probe(&probe_step).await;
        }
        let mut hot = Vec::new();
        let mut hot_probe = Vec::new();
        for _ in 0..2000 {
            let t = Instant::now();
            describe(&exec_step).await;
            hot.push(t.elapsed());
            let t = Instant::now();
            run_probe(&probe_step).await;
            hot_probe.push(t.elapsed());
        }
        let hot_median = stats("hot   builtin:exec instantiate + describe()", hot);
        stats("hot   probe step instantiate + run() with one log call", hot_probe);
        println!("\npooling allocator: {}", runtime.uses_pooling());
        println!(
            "targets: hot <= 200 us ({}), warm <= 5 ms ({})",
            if hot_median <= Duration::from_micros(200) {
                "met"
            } else {
                "MISSED"
            },
            if warm_median <= Duration::from_millis(5) {
                "met"
            } else {
                "MISSED"
            },
        );
    });

    // A whole process: `wharf run` of a one-step pipeline with a warm cache.
    let wharf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/wharf");
    if wharf.exists() {
        let dir = tempfile::tempdir().unwrap();
        let pipeline = dir.path().join("p.yml");
        std::fs::write(
            &pipeline,
            "name: one\nsteps:\n  - id: noop\n    uses: builtin:exec\n    with: { program: 'true' }\n",
        )
        .unwrap();
        let run = || {
            let t = Instant::now();
            let ok = std::process::Command::new(&wharf)
                .args(["run", pipeline.to_str().unwrap()])
                .env("WHARF_CACHE_DIR", cache.path())
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap()
                .success();
            assert!(ok);
            t.elapsed()
        };
        run();
        let samples: Vec<Duration> = (0..30).map(|_| run()).collect();
        stats(
            "process `wharf run` one builtin:exec step (`true`), warm cache",
            samples,
        );
    } else {
        println!("(build target/release/wharf to time a whole process)");
    }
}
