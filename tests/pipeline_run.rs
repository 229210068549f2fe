//! Running pipelines with the real binary: outputs flowing between typed and WASI command
//! steps, conditions, retries, traps and time limits.

mod common;
use common::Workspace;
use std::time::{Duration, Instant};

#[test]
fn typed_and_command_steps_pass_outputs_forward() {
    let ws = Workspace::new();
    ws.write(
        "pipeline.yml",
        r#"
name: flow
vars:
  who: world
steps:
  - id: version
    uses: builtin:version
  - id: typed
    uses: ./probe.wasm
    with:
      echo: "v=${{ steps.version.outputs.version }}"
      count: 7
      wait: 1m30s
      items: [a, "${{ vars.who }}"]
  - id: command
    uses: ./cmd.wasm
    with:
      from-typed: ${{ steps.typed.outputs.echo }}
      count: ${{ steps.typed.outputs.count }}
  - id: back-to-typed
    uses: ./probe.wasm
    with:
      echo: ${{ steps.command.outputs.from-typed }}|${{ steps.command.outputs.count }}
"#,
    );
    let run = ws.wharf(&["run", "pipeline.yml", "-v", "--var", "who=ada"]);
    assert_eq!(run.code(), 0, "{}", run.all());
    let version = run.output_of("version", "version").unwrap();
    let re = regex::Regex::new(r"^0\.0\.0-1-[0-9a-f]{7}$").unwrap();
    assert!(re.is_match(&version), "version {version}");
    assert_eq!(run.output_of("typed", "echo").unwrap(), format!("v={version}"));
    assert_eq!(run.output_of("typed", "wait-ms").unwrap(), "90000");
    assert_eq!(run.output_of("typed", "items").unwrap(), "a,ada");
    assert_eq!(run.output_of("command", "from-typed").unwrap(), format!("v={version}"));
    assert_eq!(
        run.output_of("back-to-typed", "echo").unwrap(),
        format!("v={version}|7")
    );
    // -v shows a WASI command step's stdout and stderr and a typed step's log calls.
    let out = run.stdout();
    assert!(out.contains("│ cmd-step says hello on stdout"), "{out}");
    assert!(out.contains("│ stderr cmd-step says hello on stderr"), "{out}");
    assert!(out.contains("│ probe typed attempt 1"), "{out}");
}

#[test]
fn failure_steps_run_only_after_a_failure() {
    let ws = Workspace::new();
    ws.write(
        "pipeline.yml",
        r#"
name: conditions
vars:
  mode: ok
steps:
  - id: work
    uses: ./probe.wasm
    with: { mode: "${{ vars.mode }}", echo: done }
  - id: after-success
    uses: ./probe.wasm
  - id: on-failure
    uses: ./probe.wasm
    if: failure()
    with: { echo: "cleaning up after ${{ steps.work.outcome }}" }
  - id: always
    uses: ./cmd.wasm
    if: ${{ always() }}
    with: { work: "${{ steps.work.outcome }}" }
"#,
    );
    let ok = ws.wharf(&["run", "pipeline.yml", "-v"]);
    assert_eq!(ok.code(), 0, "{}", ok.all());
    assert_eq!(ok.status_of("after-success"), "ok");
    assert_eq!(ok.status_of("on-failure"), "skip");
    assert_eq!(ok.output_of("always", "work").unwrap(), "success");

    let failed = ws.wharf(&["run", "pipeline.yml", "-v", "--var", "mode=fail"]);
    assert_eq!(failed.code(), 1, "{}", failed.all());
    assert!(
        failed.step_line("work").contains("permanent: failed on purpose: done"),
        "{}",
        failed.all()
    );
    assert_eq!(failed.status_of("after-success"), "skip");
    assert_eq!(failed.status_of("on-failure"), "ok");
    assert_eq!(
        failed.output_of("on-failure", "echo").unwrap(),
        "cleaning up after failure"
    );
    assert_eq!(failed.output_of("always", "work").unwrap(), "failure");
    assert!(failed.stdout().contains("failed in"), "{}", failed.all());
}

#[test]
fn a_trapping_step_fails_cleanly_and_the_run_goes_on() {
    let ws = Workspace::new();
    ws.write(
        "pipeline.yml",
        r#"
name: traps
steps:
  - id: panics
    uses: ./probe.wasm
    with: { mode: panic }
  - id: traps
    uses: ./probe.wasm
    if: always()
    with: { mode: trap }
  - id: exits
    uses: ./cmd.wasm
    if: always()
    with: { exit: "1" }
  - id: still-running
    uses: ./probe.wasm
    if: failure()
    with: { echo: host is fine }
"#,
    );
    let run = ws.wharf(&["run", "pipeline.yml", "-v"]);
    assert_eq!(run.code(), 1, "{}", run.all());
    let panics = run.step_line("panics");
    assert!(
        panics.contains("trap: trapped: wasm trap: wasm `unreachable` instruction executed"),
        "{}",
        run.all()
    );
    assert!(run.stdout().contains("probe panicked on purpose"), "{}", run.all());
    assert!(run.step_line("traps").contains("trap: trapped"), "{}", run.all());
    assert!(
        run.step_line("exits").contains("exit 1: exited with code 1"),
        "{}",
        run.all()
    );
    assert_eq!(run.output_of("still-running", "echo").unwrap(), "host is fine");
    assert!(
        !run.stderr().contains("panicked at"),
        "the host itself panicked:\n{}",
        run.all()
    );
}

#[test]
fn transient_errors_are_retried_with_backoff() {
    let ws = Workspace::new();
    ws.write(
        "pipeline.yml",
        r#"
name: retries
steps:
  - id: flaky
    uses: ./probe.wasm
    retry: { attempts: 3, backoff: 50ms }
    with: { mode: transient, succeed-on-attempt: 3 }
  - id: gives-up
    uses: ./probe.wasm
    if: always()
    retry: 2
    with: { mode: transient, succeed-on-attempt: 5 }
  - id: permanent-is-not-retried
    uses: ./probe.wasm
    if: always()
    retry: 3
    with: { mode: fail }
"#,
    );
    let run = ws.wharf(&["run", "pipeline.yml", "-v"]);
    assert_eq!(run.code(), 1, "{}", run.all());
    assert_eq!(run.output_of("flaky", "attempt").unwrap(), "3");
    let out = run.stdout();
    assert!(
        out.contains("flaky attempt 1 failed (transient failure on attempt 1); retrying in 50ms"),
        "{out}"
    );
    assert!(
        out.contains("flaky attempt 2 failed (transient failure on attempt 2); retrying in 100ms"),
        "{out}"
    );
    assert!(
        run.step_line("gives-up")
            .contains("transient: transient failure on attempt 2"),
        "{out}"
    );
    assert_eq!(
        out.matches("permanent-is-not-retried · ./probe.wasm").count(),
        1,
        "{out}"
    );
}

#[test]
fn a_step_over_its_timeout_is_stopped() {
    let ws = Workspace::new();
    ws.write(
        "pipeline.yml",
        r#"
name: timeouts
steps:
  - id: slow
    uses: builtin:exec
    timeout: 1s
    with: { program: sleep, args: ["30"] }
  - id: next
    uses: ./probe.wasm
    if: failure()
"#,
    );
    let started = Instant::now();
    let run = ws.wharf(&["run", "pipeline.yml"]);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(run.code(), 1, "{}", run.all());
    assert!(
        run.step_line("slow")
            .contains("timeout: did not finish within its time limit of 1s"),
        "{}",
        run.all()
    );
    assert_eq!(run.status_of("next"), "ok");
}

#[test]
fn exec_reports_the_failing_command_and_its_stderr() {
    let ws = Workspace::new();
    ws.write(
        "pipeline.yml",
        r#"
name: exec
steps:
  - id: build
    uses: builtin:exec
    with:
      program: sh
      args: ["-c", "echo compiling; echo 'error: it broke' >&2; exit 101"]
"#,
    );
    let run = ws.wharf(&["run", "pipeline.yml"]);
    assert_eq!(run.code(), 1, "{}", run.all());
    assert!(
        run.stdout().contains("permanent: `sh` exited with 101:"),
        "{}",
        run.all()
    );
    assert!(run.stdout().contains("error: it broke"), "{}", run.all());
}

#[test]
fn version_refuses_a_dirty_tree_unless_allowed() {
    let ws = Workspace::new();
    ws.write(".gitignore", "*.wasm\n.wharf/\n# changed\n");
    ws.write(
        "pipeline.yml",
        "name: v\nsteps:\n  - id: strict\n    uses: builtin:version\n  - id: relaxed\n    uses: builtin:version\n    if: always()\n    with: { allow-dirty: true }\n",
    );
    let run = ws.wharf(&["run", "pipeline.yml", "-v"]);
    assert_eq!(run.code(), 1, "{}", run.all());
    assert!(run.step_line("strict").contains("uncommitted changes"), "{}", run.all());
    assert!(
        run.output_of("relaxed", "version").unwrap().ends_with("-dirty"),
        "{}",
        run.all()
    );

    common::git(ws.path(), &["commit", "-qam", "second"]);
    common::git(ws.path(), &["tag", "v1.0.1"]);
    for _ in 0..2 {
        common::git(ws.path(), &["commit", "-q", "--allow-empty", "-m", "more"]);
    }
    let run = ws.wharf(&["run", "pipeline.yml", "-v"]);
    assert_eq!(run.code(), 0, "{}", run.all());
    let version = run.output_of("strict", "version").unwrap();
    assert!(
        regex::Regex::new(r"^1\.0\.1-2-[0-9a-f]{7}$")
            .unwrap()
            .is_match(&version),
        "{version}"
    );
    assert_eq!(run.output_of("strict", "tag").unwrap(), "1.0.1");
    assert_eq!(run.output_of("strict", "commits").unwrap(), "2");
}

#[test]
fn the_second_run_compiles_nothing() {
    let ws = Workspace::new();
    ws.write(
        "pipeline.yml",
        "name: cache\nsteps:\n  - id: a\n    uses: builtin:exec\n    cache: false\n    with: { program: 'true' }\n  - id: b\n    uses: ./probe.wasm\n    cache: false\n  - id: c\n    uses: ./cmd.wasm\n    cache: false\n",
    );
    let first = ws.wharf(&["run", "pipeline.yml", "-v"]);
    assert_eq!(first.code(), 0, "{}", first.all());
    assert_eq!(first.stdout().matches("  compiled ").count(), 3, "{}", first.all());
    // Each compiled, and how each linked recorded beside it.
    let entries = |ext: &str| {
        std::fs::read_dir(ws.cache.path().join("components"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|e| e == ext))
            .count()
    };
    assert_eq!((entries("cwasm"), entries("linked")), (3, 3));

    let second = ws.wharf(&["run", "pipeline.yml", "-v"]);
    assert_eq!(second.code(), 0, "{}", second.all());
    assert_eq!(second.stdout().matches("  compiled ").count(), 0, "{}", second.all());
    // Components read from the compile cache (`cached   builtin:exec (2ms)`) as their
    // steps run (the step cache is off for them), not steps.
    let loaded = second
        .stdout()
        .lines()
        .filter(|l| l.trim_start().starts_with("cached "))
        .count();
    assert_eq!(loaded, 3, "{}", second.all());
}

#[test]
fn the_hello_example_runs() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hello/pipeline.yml");
    let ws = Workspace::new();
    let run = ws.wharf(&["run", example.to_str().unwrap(), "--var", "name=CI", "-v"]);
    assert_eq!(run.code(), 0, "{}", run.all());
    assert!(
        run.output_of("greet", "greeting")
            .unwrap()
            .starts_with("Hello, CI! This is build "),
        "{}",
        run.all()
    );
}
