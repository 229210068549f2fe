//! Steps side by side: `needs:` graphs, `--jobs`, matrices, the race check at validation,
//! and replay and resume of a run whose steps overlapped.

mod common;
use common::Workspace;

/// How long the run took by its own account (`run-finished` in the event stream), loading
/// and compiling the components left out.
fn run_ms(ws: &Workspace, events: &str) -> f64 {
    let text = std::fs::read_to_string(ws.path().join(events)).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["event"] == "run-finished")
        .and_then(|e| e["duration_ms"].as_f64())
        .unwrap_or_else(|| panic!("no run-finished event in:\n{text}"))
}

/// Run again and again, so never taken from the step cache.
const FOUR_WAITS: &str = r#"
name: waits
steps:
  - { id: a, uses: ./probe.wasm, needs: [], cache: false, with: { mode: sleep, wait: 1s } }
  - { id: b, uses: ./probe.wasm, needs: [], cache: false, with: { mode: sleep, wait: 1s } }
  - { id: c, uses: ./probe.wasm, needs: [], cache: false, with: { mode: sleep, wait: 1s } }
  - { id: d, uses: ./probe.wasm, needs: [], cache: false, with: { mode: sleep, wait: 1s } }
"#;

#[test]
fn independent_steps_wait_side_by_side_up_to_jobs() {
    let ws = Workspace::new();
    ws.write("pipeline.yml", FOUR_WAITS);
    let four = ws.wharf(&["run", "pipeline.yml", "--jobs", "4", "--events", "four.ndjson"]);
    assert_eq!(four.code(), 0, "{}", four.all());
    let one = ws.wharf(&["run", "pipeline.yml", "--jobs", "1", "--events", "one.ndjson"]);
    assert_eq!(one.code(), 0, "{}", one.all());
    let (four, one) = (run_ms(&ws, "four.ndjson"), run_ms(&ws, "one.ndjson"));
    assert!(four < 1500.0, "four 1 s waits with --jobs 4 took {four} ms");
    assert!(one >= 4000.0, "four 1 s waits with --jobs 1 took {one} ms");
    // The pipeline's own `concurrency:` is the default; --jobs overrides it.
    ws.write(
        "pipeline.yml",
        &FOUR_WAITS.replace("name: waits", "name: waits\nconcurrency: 2"),
    );
    let two = ws.wharf(&["run", "pipeline.yml", "--events", "two.ndjson"]);
    assert_eq!(two.code(), 0, "{}", two.all());
    let two = run_ms(&ws, "two.ndjson");
    assert!((2000.0..3500.0).contains(&two), "concurrency: 2 took {two} ms");
}

#[test]
fn a_failed_branch_skips_what_needs_it_and_the_others_finish() {
    let ws = Workspace::new();
    ws.write(
        "pipeline.yml",
        r#"
name: branches
steps:
  - { id: start, uses: ./probe.wasm }
  - { id: broken, uses: ./probe.wasm, needs: [start], with: { mode: fail } }
  - { id: after-broken, uses: ./probe.wasm, needs: [broken] }
  - { id: slow, uses: ./probe.wasm, needs: [start], with: { mode: sleep, wait: 300ms, echo: finished } }
  - { id: after-slow, uses: ./probe.wasm, needs: [slow], with: { echo: "${{ steps.slow.outputs.echo }}" } }
  - id: cleanup
    uses: ./probe.wasm
    needs: [after-broken, after-slow]
    if: failure()
  - id: report
    uses: ./probe.wasm
    needs: [after-slow]
    if: failure()
"#,
    );
    let run = ws.wharf(&["run", "pipeline.yml", "-v"]);
    assert_eq!(run.code(), 1, "{}", run.all());
    assert_eq!(run.status_of("broken"), "FAIL");
    assert_eq!(run.status_of("after-broken"), "skip");
    assert_eq!(run.status_of("slow"), "ok");
    assert_eq!(run.output_of("after-slow", "echo").as_deref(), Some("finished"));
    // failure() looks at what a step needs, directly or through others.
    assert_eq!(run.status_of("cleanup"), "ok", "{}", run.all());
    assert_eq!(run.status_of("report"), "skip", "{}", run.all());
}

#[test]
fn every_running_step_is_shown_and_each_log_line_names_its_step() {
    let ws = Workspace::new();
    ws.write("pipeline.yml", FOUR_WAITS);
    let run = ws.wharf(&["run", "pipeline.yml", "-v", "--output", "plain", "--jobs", "4"]);
    assert_eq!(run.code(), 0, "{}", run.all());
    let out = run.stdout();
    for step in ["a", "b", "c", "d"] {
        assert!(out.contains(&format!("{step} │ probe {step} attempt 1")), "{out}");
    }
    // All four started before the first finished.
    let lines: Vec<&str> = out.lines().collect();
    let first_done = lines
        .iter()
        .position(|l| l.split_whitespace().nth(1) == Some("ok"))
        .unwrap();
    let started = lines[..first_done]
        .iter()
        .filter(|l| l.contains("· ./probe.wasm"))
        .count();
    assert_eq!(started, 4, "{out}");
    let events = ws.wharf(&["run", "pipeline.yml", "--jobs", "4", "--events", "e.ndjson"]);
    assert_eq!(events.code(), 0);
    let text = std::fs::read_to_string(ws.path().join("e.ndjson")).unwrap();
    for line in text.lines() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        if e["event"]
            .as_str()
            .is_some_and(|k| k.starts_with("step-") || k == "log")
        {
            assert!(e["step"].is_string(), "a step's event names its step: {line}");
        }
    }
}

#[test]
fn the_live_view_keeps_a_spinner_for_every_running_step() {
    let ws = Workspace::new();
    ws.write("pipeline.yml", FOUR_WAITS);
    let drawn = ws.on_terminal("run pipeline.yml --jobs 4 --output human");
    // `a` started first; it is still drawn after the last one started, beside the others.
    let last_started = drawn.find("d · ./probe.wasm").unwrap_or_else(|| panic!("{drawn:?}"));
    for step in ["a", "b", "c"] {
        assert!(
            drawn[last_started..].contains(&format!("{step} · ./probe.wasm")),
            "`{step}` has no spinner once `d` runs:\n{drawn:?}"
        );
    }
}

#[test]
fn ci_log_groups_never_interleave() {
    let ws = Workspace::new();
    ws.write(
        "pipeline.yml",
        &format!("{FOUR_WAITS}  - {{ id: after, uses: ./probe.wasm, needs: [a, b, c, d] }}\n"),
    );
    for (format, open, close) in [
        ("github", "::group::", "::endgroup::"),
        ("gitlab", "section_start:", "section_end:"),
    ] {
        let run = ws.wharf(&["run", "pipeline.yml", "--jobs", "4", "--output", format]);
        assert_eq!(run.code(), 0, "{}", run.all());
        let out = run.stdout();
        let mut depth = 0;
        for line in out.lines() {
            if line.contains(open) {
                depth += 1;
                assert_eq!(depth, 1, "a group opened inside another:\n{out}");
            }
            if line.contains(close) {
                depth -= 1;
            }
        }
        assert_eq!(depth, 0, "{out}");
        // Of the four started together, the first is grouped until the second starts, the
        // others not at all; `after`, alone, is.
        assert_eq!(out.matches(open).count(), 2, "{out}");
        assert_eq!(out.matches("(beside other steps)").count(), 3, "{out}");
        assert!(out.contains("a │ probe a attempt 1"), "{out}");
    }
}

#[test]
fn a_matrix_runs_each_combination_with_outputs_of_its_own() {
    let ws = Workspace::new();
    ws.write(
        "pipeline.yml",
        r#"
name: matrix
steps:
  - id: build
    uses: ./probe.wasm
    matrix: { target: [x86_64, aarch64], profile: [dev, release] }
    with: { echo: "${{ matrix.target }}/${{ matrix.profile }}", mode: sleep, wait: 200ms }
  - id: collect
    uses: ./probe.wasm
    with:
      items: ["${{ steps.build-x86_64-dev.outputs.echo }}", "${{ steps.build-aarch64-release.outputs.echo }}"]
"#,
    );
    let run = ws.wharf(&["run", "pipeline.yml", "-v", "--jobs", "4", "--events", "e.ndjson"]);
    assert_eq!(run.code(), 0, "{}", run.all());
    for (id, echo) in [
        ("build-x86_64-dev", "x86_64/dev"),
        ("build-x86_64-release", "x86_64/release"),
        ("build-aarch64-dev", "aarch64/dev"),
        ("build-aarch64-release", "aarch64/release"),
    ] {
        assert_eq!(run.output_of(id, "echo").as_deref(), Some(echo), "{}", run.all());
    }
    assert_eq!(
        run.output_of("collect", "items").as_deref(),
        Some("x86_64/dev,aarch64/release")
    );
    // The four instances ran side by side; `collect` (no `needs:` in the file) waited for all.
    assert!(run_ms(&ws, "e.ndjson") < 700.0, "{}", run.all());
}

#[test]
fn fail_fast_skips_the_instances_not_yet_started() {
    let ws = Workspace::new();
    let pipeline = |fail_fast: &str| {
        format!(
            "name: ff\nsteps:\n  - id: t\n    uses: ./probe.wasm\n    matrix: {{ mode: [fail, ok, sleep] }}\n    \
             fail-fast: {fail_fast}\n    with: {{ mode: \"${{{{ matrix.mode }}}}\" }}\n"
        )
    };
    ws.write("pipeline.yml", &pipeline("true"));
    let run = ws.wharf(&["run", "pipeline.yml", "--jobs", "1"]);
    assert_eq!(run.code(), 1, "{}", run.all());
    assert_eq!(run.status_of("t-fail"), "FAIL");
    for id in ["t-ok", "t-sleep"] {
        assert!(
            run.step_line(id).contains("fail-fast: matrix instance `t-fail` failed"),
            "{}",
            run.all()
        );
    }
    ws.write("pipeline.yml", &pipeline("false"));
    let run = ws.wharf(&["run", "pipeline.yml", "--jobs", "1"]);
    assert_eq!(run.code(), 1, "{}", run.all());
    assert_eq!(run.status_of("t-ok"), "ok");
    assert_eq!(run.status_of("t-sleep"), "ok");
}

#[test]
fn overlapping_grants_of_steps_that_may_run_together_are_refused() {
    let ws = Workspace::new();
    ws.write(
        "pipeline.yml",
        r#"
name: races
steps:
  - id: writer
    uses: ./probe.wasm
    needs: []
    allow: { write: [out] }
  - id: reader
    uses: ./probe.wasm
    needs: []
    allow: { read: [out/report.txt] }
  - id: after
    uses: ./probe.wasm
    needs: [writer]
    allow: { write: [out/report.txt] }
"#,
    );
    let run = ws.wharf(&["validate", "pipeline.yml"]);
    assert_eq!(run.code(), 2, "{}", run.all());
    let err = run.stderr();
    assert!(
        err.contains("steps `writer` and `reader` may run at the same time, and `writer` writes `out` while `reader` reads `out/report.txt`"),
        "{err}"
    );
    assert!(
        err.contains("pipeline.yml:8:9"),
        "the error points at the later step: {err}"
    );
    assert!(err.contains("add `needs: [writer]` to step `reader`"), "{err}");
    // `after` writes what `reader` reads, and may run alongside it; it runs after `writer`.
    assert!(
        err.contains("steps `reader` and `after` may run at the same time"),
        "{err}"
    );
    assert!(!err.contains("`writer` and `after`"), "{err}");

    // Ordered by needs, the same grants are fine; and a built-in's grants come from its
    // parameters, matrix values resolved.
    ws.write(
        "pipeline.yml",
        r#"
name: ordered
steps:
  - { id: writer, uses: ./probe.wasm, needs: [], allow: { write: [out] } }
  - { id: reader, uses: ./probe.wasm, needs: [writer], allow: { read: [out/report.txt] } }
  - id: render
    uses: builtin:render
    needs: []
    matrix: { site: [a, b] }
    with: { template: "t.tmpl", output: "sites/${{ matrix.site }}.conf", services: ["${{ matrix.site }}"] }
"#,
    );
    ws.write("t.tmpl", "x\n");
    let run = ws.wharf(&["validate", "pipeline.yml"]);
    assert_eq!(run.code(), 0, "{}", run.all());

    ws.write(
        "pipeline.yml",
        r#"
name: same-file
steps:
  - id: render
    uses: builtin:render
    matrix: { site: [a, b] }
    with: { template: "t.tmpl", output: "sites/all.conf", services: ["${{ matrix.site }}"] }
"#,
    );
    let run = ws.wharf(&["validate", "pipeline.yml"]);
    assert_eq!(run.code(), 2, "{}", run.all());
    assert!(
        run.stderr()
            .contains("steps `render-a` and `render-b` may run at the same time, and both write `sites/all.conf`"),
        "{}",
        run.stderr()
    );
    assert!(run.stderr().contains("give each its own path"), "{}", run.stderr());
}

#[test]
fn concurrent_deploys_of_one_service_are_refused_and_of_two_allowed() {
    let ws = Workspace::new();
    let pipeline = |second: &str| {
        format!(
            "name: deploys\nsteps:\n  - {{ id: web-a, uses: ./probe.wasm, needs: [], allow: {{ deploy: [web] }} }}\n  \
             - {{ id: web-b, uses: ./probe.wasm, needs: [], allow: {{ deploy: [{second}] }} }}\n"
        )
    };
    ws.write("pipeline.yml", &pipeline("web"));
    let run = ws.wharf(&["validate", "pipeline.yml"]);
    assert_eq!(run.code(), 2, "{}", run.all());
    assert!(
        run.stderr()
            .contains("steps `web-a` and `web-b` may run at the same time, and both deploy service `web`"),
        "{}",
        run.stderr()
    );
    ws.write("pipeline.yml", &pipeline("api"));
    let run = ws.wharf(&["validate", "pipeline.yml"]);
    assert_eq!(run.code(), 0, "{}", run.all());
}

#[test]
fn bad_graphs_and_matrices_are_reported_where_they_are_written() {
    let ws = Workspace::new();
    let cases: &[(&str, &str, &str)] = &[
        (
            "name: p\nsteps:\n  - { id: a, uses: ./probe.wasm, needs: [c] }\n  - { id: b, uses: ./probe.wasm, needs: [a] }\n  - { id: c, uses: ./probe.wasm, needs: [b] }\n",
            "pipeline.yml:3:41",
            "`needs:` makes a cycle: a → c → b → a",
        ),
        (
            "name: p\nsteps:\n  - { id: build, uses: ./probe.wasm }\n  - { id: test, uses: ./probe.wasm, needs: [biuld] }\n",
            "pipeline.yml:4:45",
            "step `test` needs `biuld`, which is not a step of this pipeline",
        ),
        (
            "name: p\nsteps:\n  - id: m\n    uses: ./probe.wasm\n    matrix: { os: [] }\n",
            "pipeline.yml:5:15",
            "the matrix of step `m` has no combination: `os` lists no value",
        ),
        (
            &format!(
                "name: p\nsteps:\n  - id: m\n    uses: ./probe.wasm\n    matrix: {{ a: [{}], b: [{}] }}\n",
                (0..20).map(|n| n.to_string()).collect::<Vec<_>>().join(", "),
                (0..13).map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
            ),
            "pipeline.yml:5:15",
            "the matrix of step `m` has more than 256 combinations (20 a × 13 b)",
        ),
        (
            "name: p\nsteps:\n  - { id: a, uses: ./probe.wasm, needs: [] }\n  - { id: b, uses: ./probe.wasm, needs: [], with: { echo: \"${{ steps.a.outputs.echo }}\" } }\n",
            "pipeline.yml:4:",
            "`steps.a.outputs.echo` refers to step `a`, which is not among this step's needs",
        ),
        (
            "name: p\nsteps:\n  - { id: a, uses: ./probe.wasm, matrix: { n: [1, 2] } }\n  - { id: b, uses: ./probe.wasm, with: { echo: \"${{ steps.a.outputs.echo }}\" } }\n",
            "pipeline.yml:4:",
            "name one of its instances: a-1, a-2",
        ),
        (
            "name: p\nsteps:\n  - { id: a, uses: ./probe.wasm, with: { echo: \"${{ matrix.n }}\" } }\n",
            "pipeline.yml:3:",
            "`matrix.n` is used in step `a`, which has no `matrix:`",
        ),
    ];
    for (text, at, message) in cases {
        ws.write("pipeline.yml", text);
        let run = ws.wharf(&["validate", "pipeline.yml"]);
        assert_eq!(run.code(), 2, "{text}\n{}", run.all());
        let err = run.stderr();
        assert!(err.contains(message), "{text}\nexpected `{message}` in:\n{err}");
        assert!(err.contains(at), "{text}\nexpected `{at}` in:\n{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn a_parallel_run_replays_and_resumes_its_failed_branch() {
    let ws = Workspace::new();
    ws.write(
        "pipeline.yml",
        r#"
name: resume
vars:
  mode: fail
steps:
  - { id: start, uses: ./probe.wasm, with: { echo: first } }
  - { id: flaky, uses: ./probe.wasm, needs: [start], with: { mode: "${{ vars.mode }}", wait: 100ms } }
  - { id: after-flaky, uses: ./probe.wasm, needs: [flaky], with: { echo: "${{ steps.start.outputs.echo }}" } }
  - { id: steady, uses: ./probe.wasm, needs: [start], with: { mode: sleep, wait: 200ms, echo: steady } }
  - { id: after-steady, uses: ./probe.wasm, needs: [steady], with: { echo: "${{ steps.steady.outputs.echo }}" } }
"#,
    );
    let first = ws.wharf(&["run", "pipeline.yml", "-v", "--jobs", "4"]);
    assert_eq!(first.code(), 1, "{}", first.all());
    let id = first.run_id();
    assert_eq!(first.status_of("after-steady"), "ok");

    // The timeline of the run names the step of every line: steps ran side by side.
    let log = ws.wharf(&["log", &id]);
    assert_eq!(log.code(), 0, "{}", log.all());
    assert!(
        log.stdout().contains("steady │ probe steady attempt 1"),
        "{}",
        log.all()
    );
    assert!(log.stdout().contains("flaky │ probe flaky attempt 1"), "{}", log.all());

    let replay = ws.wharf(&["replay", &id]);
    assert_eq!(
        replay.code(),
        0,
        "a replay of a parallel run matches its journal:\n{}",
        replay.all()
    );
    assert!(
        replay.stdout().contains("4 step attempt(s) reproduced"),
        "{}",
        replay.all()
    );

    let resumed = ws.wharf(&["run", "pipeline.yml", "-v", "--var", "mode=ok", "--resume", &id]);
    assert_eq!(resumed.code(), 0, "{}", resumed.all());
    for step in ["start", "steady", "after-steady"] {
        assert!(
            resumed.step_line(step).contains(&format!("reused from run {id}")),
            "{step} is reused:\n{}",
            resumed.all()
        );
    }
    for step in ["flaky", "after-flaky"] {
        assert!(
            !resumed.step_line(step).contains("reused"),
            "{step} runs again:\n{}",
            resumed.all()
        );
    }
    assert_eq!(resumed.output_of("after-flaky", "echo").as_deref(), Some("first"));
    let again = ws.wharf(&["replay", &resumed.run_id()]);
    assert_eq!(again.code(), 0, "{}", again.all());
}
