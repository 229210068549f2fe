//! A pipeline is validated whole before anything runs; every error names file, line and
//! column and says what to do.

mod common;
use common::Workspace;

#[test]
fn every_problem_is_reported_with_its_position_and_nothing_runs() {
    let ws = Workspace::new();
    ws.write(
        "pipeline.yml",
        r#"name: broken
vars:
  registry:
steps:
  - id: first
    uses: builtin:exec
    with:
      progam: touch
      args: ran-anyway
  - id: typed
    uses: ./probe.wasm
    with:
      count: three
      echo: ${{ steps.later.outputs.x }}
      wait: 10
  - id: nope
    uses: builtin:exce
  - id: refs
    uses: ./probe.wasm
    if: steps.typed.outcome == 'failure' || vars.regsitry == ''
    with:
      echo: ${{ steps.typed.outputs.missing }}
  - id: later
    uses: ./cmd.wasm
    with:
      list: [a, b]
"#,
    );
    let run = ws.wharf(&["validate", "pipeline.yml"]);
    assert_eq!(run.code(), 2, "{}", run.all());
    let err = run.stderr();
    let expect = [
        (
            "pipeline.yml:3:3",
            "var `registry` has no default and no value was given",
        ),
        ("pipeline.yml:6:11", "builtin:exec needs parameter `program`"),
        ("pipeline.yml:8:7", "unknown parameter `progam` for builtin:exec"),
        (
            "pipeline.yml:9:13",
            "parameter `args` must be list of text but is a single value",
        ),
        ("pipeline.yml:13:14", "parameter `count` must be integer but is `three`"),
        (
            "pipeline.yml:14:13",
            "`steps.later.outputs.x` refers to step `later`, which runs later",
        ),
        (
            "pipeline.yml:15:13",
            "parameter `wait` must be duration but `10` has no unit",
        ),
        ("pipeline.yml:17:11", "unknown built-in step `builtin:exce`"),
        ("pipeline.yml:20:9", "`vars.regsitry` refers to an undeclared var"),
        (
            "pipeline.yml:22:13",
            "step `typed` (./probe.wasm) has no output `missing`",
        ),
        ("pipeline.yml:26:13", "parameter `list` must be a single value"),
    ];
    for (position, message) in expect {
        let at = err
            .find(message)
            .unwrap_or_else(|| panic!("missing `{message}` in:\n{err}"));
        let following = &err[at..];
        let pos_line = following.lines().nth(1).unwrap();
        assert!(
            pos_line.ends_with(position),
            "`{message}` should be at {position}, got `{pos_line}`\n{err}"
        );
    }
    assert!(err.contains("did you mean `program`?"), "{err}");
    assert!(err.contains("did you mean `builtin:exec`?"), "{err}");
    assert!(err.contains("did you mean `vars.registry`?"), "{err}");
    assert!(err.contains("11 errors in pipeline.yml; nothing was run"), "{err}");

    // `run` validates the same way and runs nothing: `first` would have created a file.
    let run = ws.wharf(&["run", "pipeline.yml"]);
    assert_eq!(run.code(), 2);
    assert!(!ws.path().join("ran-anyway").exists());
    assert!(!run.stdout().contains("wharf run"), "{}", run.all());
}

#[test]
fn yaml_and_structure_errors_have_positions() {
    let ws = Workspace::new();
    let cases: &[(&str, &str, &str)] = &[
        (
            "name: x\nsteps:\n  - id: a\n    uses: [builtin:exec\n",
            "invalid YAML",
            "pipeline.yml:5:1",
        ),
        (
            "name: x\nsteps:\n  - id: a\n    uses: builtin:exec\n    uses: builtin:version\n",
            "`uses` appears twice",
            "pipeline.yml:5:5",
        ),
        (
            "name: x\nstep:\n  - id: a\n",
            "unknown key `step` in a pipeline",
            "pipeline.yml:2:1",
        ),
        (
            "name: x\nsteps:\n  - id: a\n    uses: builtin:exec\n    with: { program: x }\n    timout: 5s\n",
            "did you mean `timeout`?",
            "pipeline.yml:6:5",
        ),
        (
            "name: x\nsteps:\n  - id: a\n    uses: builtin:exec\n    with: { program: x }\n    if: failure() &&\n",
            "expected an expression",
            "pipeline.yml:6:21",
        ),
        (
            "name: x\nsteps:\n  - id: a\n    uses: builtin:exec\n    with: { program: '${{ vars.x' }\n",
            "without a closing",
            "pipeline.yml:5:23",
        ),
        (
            "name: x\nsteps:\n  - uses: builtin:exec\n",
            "this step has no `id`",
            "pipeline.yml:3:5",
        ),
    ];
    for (text, message, position) in cases {
        ws.write("pipeline.yml", text);
        let run = ws.wharf(&["validate", "pipeline.yml"]);
        assert_eq!(run.code(), 2, "{}", run.all());
        let err = run.stderr();
        assert!(err.contains(message), "expected `{message}` for:\n{text}\ngot:\n{err}");
        assert!(
            err.contains(&format!("--> {position}")),
            "expected {position} for:\n{text}\ngot:\n{err}"
        );
    }
}

#[test]
fn unknown_var_on_the_command_line_is_rejected() {
    let ws = Workspace::new();
    ws.write(
        "pipeline.yml",
        "name: x\nvars:\n  status: OK\nsteps:\n  - id: a\n    uses: ./probe.wasm\n",
    );
    let run = ws.wharf(&["run", "pipeline.yml", "--var", "stauts=FAIL"]);
    assert_eq!(run.code(), 2, "{}", run.all());
    assert!(run.stderr().contains("declares no var `stauts`"), "{}", run.all());
    assert!(run.stderr().contains("its vars are: status"), "{}", run.all());
    let run = ws.wharf(&["run", "pipeline.yml", "--var", "oops"]);
    assert_eq!(run.code(), 2);
    assert!(
        run.stderr().contains("must look like `--var NAME=VALUE`"),
        "{}",
        run.all()
    );
}

#[test]
fn bad_components_are_named_with_what_is_wrong() {
    let ws = Workspace::new();
    std::fs::write(ws.path().join("text.wasm"), "not wasm at all").unwrap();
    // A core module: the magic number and version 1, layer 0.
    std::fs::write(ws.path().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    // A component that exports nothing.
    std::fs::write(ws.path().join("empty.wasm"), b"\0asm\x0d\0\x01\0").unwrap();
    ws.write(
        "pipeline.yml",
        "name: x\nsteps:\n  - id: a\n    uses: ./text.wasm\n  - id: b\n    uses: ./core.wasm\n  - id: c\n    uses: ./missing.wasm\n  - id: d\n    uses: ./empty.wasm\n",
    );
    let run = ws.wharf(&["validate", "pipeline.yml"]);
    assert_eq!(run.code(), 2, "{}", run.all());
    let err = run.stderr();
    assert!(err.contains("text.wasm is not a WebAssembly file"), "{err}");
    assert!(
        err.contains("core.wasm is a core WebAssembly module, not a component"),
        "{err}"
    );
    assert!(
        err.contains("cannot read step") && err.contains("missing.wasm"),
        "{err}"
    );
    assert!(err.contains("empty.wasm is neither a typed step"), "{err}");
    assert!(
        err.contains("pipeline.yml:4:11") && err.contains("pipeline.yml:10:11"),
        "{err}"
    );
}

#[test]
fn a_valid_pipeline_validates() {
    let ws = Workspace::new();
    ws.write(
        "pipeline.yml",
        "name: fine\nvars:\n  who: me\nsteps:\n  - id: a\n    uses: ./probe.wasm\n    with: { echo: '${{ vars.who }}' }\n  - id: b\n    uses: ./cmd.wasm\n    with: { x: '${{ steps.a.outputs.echo }}' }\n",
    );
    let run = ws.wharf(&["validate", "pipeline.yml"]);
    assert_eq!(run.code(), 0, "{}", run.all());
    assert!(
        run.stdout().contains("pipeline.yml: valid · pipeline `fine` · 2 steps"),
        "{}",
        run.all()
    );
    assert!(run.stdout().contains("typed step"), "{}", run.all());
    assert!(run.stdout().contains("WASI command"), "{}", run.all());
}
