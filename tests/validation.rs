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

/// Deep nesting and endless chains: each is refused by `validate` (exit 2, with its line and
/// column) instead of overflowing the stack in `validate` or, later, in `run`.
#[test]
fn deep_nesting_and_huge_expressions_are_refused_with_positions() {
    let ws = Workspace::new();
    let step = |extra: &str| format!("name: deep\nsteps:\n  - id: a\n    uses: ./probe.wasm\n{extra}");
    let parens = format!("    if: {}true{}\n", "(".repeat(5_000), ")".repeat(5_000));
    let nots = format!("    if: \"{}true\"\n", "!".repeat(5_000));
    let interpolated = format!(
        "    with: {{ echo: '${{{{ {}vars.x{} }}}}' }}\n",
        "(".repeat(4_000),
        ")".repeat(4_000)
    );
    let chain = format!("    if: {}\n", vec!["success()"; 100_000].join(" && "));
    let mut mapping = String::from("name: deep\nsteps:\n  - id: a\n    uses: ./probe.wasm\n    with:\n");
    for level in 0..500 {
        mapping.push_str(&format!("{}k{level}:\n", " ".repeat(6 + level)));
    }
    let flow = format!("name: deep\nsteps: {}{}\n", "[".repeat(50_000), "]".repeat(50_000));
    let cases: Vec<(String, &str, &str)> = vec![
        (step(&parens), "nests deeper than 32 levels", "pipeline.yml:5:"),
        (step(&nots), "nests deeper than 32 levels", "pipeline.yml:5:"),
        (step(&interpolated), "nests deeper than 32 levels", "pipeline.yml:5:"),
        (
            step(&chain),
            "more than the 16384 an expression may have",
            "pipeline.yml:5:",
        ),
        (mapping, "deeper than 64 levels", "pipeline.yml:"),
        (flow, "deeper than 64 levels", "pipeline.yml:2:"),
    ];
    for (text, message, position) in cases {
        ws.write("pipeline.yml", &text);
        for command in ["validate", "run"] {
            let run = ws.wharf(&[command, "pipeline.yml"]);
            assert_eq!(run.code(), 2, "{command} of {}...: {}", &text[..80], run.all());
            let err = run.stderr();
            assert!(err.contains(message), "expected `{message}`, got:\n{err}");
            assert!(
                err.contains(&format!("--> {position}")),
                "expected {position}, got:\n{err}"
            );
            assert!(err.len() < 4000, "the report itself is bounded:\n{err}");
        }
    }
}

#[test]
fn non_utf8_bytes_are_reported_where_they_are() {
    let ws = Workspace::new();
    std::fs::write(
        ws.path().join("pipeline.yml"),
        b"name: x\nsteps:\n  - id: a\n    uses: ./pro\xffbe.wasm\n",
    )
    .unwrap();
    let run = ws.wharf(&["validate", "pipeline.yml"]);
    assert_eq!(run.code(), 2, "{}", run.all());
    assert!(run.stderr().contains("byte 0xff here is not text"), "{}", run.all());
    assert!(run.stderr().contains("--> pipeline.yml:4:16"), "{}", run.all());
}

/// `env.NAME` reads only the variables the operator passes; everything else in wharf's
/// environment (cloud credentials) stays out of the pipeline.
#[test]
fn only_passed_environment_variables_reach_a_pipeline() {
    let ws = Workspace::new();
    ws.write(
        "pipeline.yml",
        "name: env\nsteps:\n  - id: a\n    uses: ./probe.wasm\n    with: { echo: '${{ env.AWS_SECRET_ACCESS_KEY }}' }\n",
    );
    let creds = |args: &[&str]| {
        let mut cmd = ws.command(args);
        cmd.env("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI-not-passed");
        common::Run(cmd.output().unwrap())
    };
    for args in [&["validate", "pipeline.yml"][..], &["run", "pipeline.yml", "-v"]] {
        let run = creds(args);
        assert_eq!(run.code(), 2, "{}", run.all());
        assert!(
            run.stderr()
                .contains("`env.AWS_SECRET_ACCESS_KEY` reads a variable of wharf's environment that was not passed"),
            "{}",
            run.all()
        );
        assert!(run.stderr().contains("--> pipeline.yml:5:19"), "{}", run.all());
        assert!(
            run.stderr().contains("--pass-env AWS_SECRET_ACCESS_KEY"),
            "{}",
            run.all()
        );
        assert!(!run.all().contains("wJalrXUtnFEMI"), "{}", run.all());
    }
    let run = creds(&["run", "pipeline.yml", "-v", "--pass-env", "AWS_SECRET_ACCESS_KEY"]);
    assert_eq!(run.code(), 0, "{}", run.all());
    assert_eq!(run.output_of("a", "echo").as_deref(), Some("wJalrXUtnFEMI-not-passed"));
    let mut listed = ws.command(&["run", "pipeline.yml", "-v"]);
    listed
        .env("AWS_SECRET_ACCESS_KEY", "from-the-list")
        .env("WHARF_PASS_ENV", "HOME, AWS_SECRET_ACCESS_KEY");
    let run = common::Run(listed.output().unwrap());
    assert_eq!(run.code(), 0, "{}", run.all());
    assert_eq!(run.output_of("a", "echo").as_deref(), Some("from-the-list"));
}

/// A path grant that leads out of the workspace is refused where it is written, whether in
/// `allow:` or as a built-in step's own path parameter.
#[test]
fn grants_outside_the_workspace_are_refused_at_validation() {
    let ws = Workspace::new();
    ws.write(
        "pipeline.yml",
        "name: out\nsteps:\n  - id: render\n    uses: builtin:render\n    with:\n      template: ../../etc/passwd\n      output: out.txt\n",
    );
    let run = ws.wharf(&["validate", "pipeline.yml"]);
    assert_eq!(run.code(), 2, "{}", run.all());
    let err = run.stderr();
    assert!(
        err.contains("`../../etc/passwd` is not a path `template` may name: it leaves the workspace"),
        "{err}"
    );
    assert!(err.contains("--> pipeline.yml:6:17"), "{err}");
    ws.write(
        "pipeline.yml",
        "name: out\nsteps:\n  - id: w\n    uses: ./probe.wasm\n    allow: { write: [/etc] }\n",
    );
    let run = ws.wharf(&["validate", "pipeline.yml"]);
    assert_eq!(run.code(), 2, "{}", run.all());
    let err = run.stderr();
    assert!(
        err.contains("`/etc` is not a workspace path: it leaves the workspace"),
        "{err}"
    );
    assert!(err.contains("--> pipeline.yml:5:22"), "{err}");
}

/// `uses:` of something that is not a regular file, or of a huge file, is refused without
/// reading it.
#[test]
fn uses_of_a_device_fifo_or_huge_file_is_refused() {
    let ws = Workspace::new();
    let fifo = ws.path().join("fifo.wasm");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let huge = std::fs::File::create(ws.path().join("huge.wasm")).unwrap();
    huge.set_len(300 << 20).unwrap(); // sparse: no disk used
    ws.write(
        "pipeline.yml",
        "name: dev\nsteps:\n  - id: a\n    uses: /dev/zero\n  - id: b\n    uses: ./fifo.wasm\n  - id: c\n    uses: ./huge.wasm\n",
    );
    let started = std::time::Instant::now();
    let run = ws.wharf(&["validate", "pipeline.yml"]);
    assert_eq!(run.code(), 2, "{}", run.all());
    let err = run.stderr();
    assert!(err.contains("/dev/zero is a device, not a regular file"), "{err}");
    assert!(err.contains("fifo.wasm is a FIFO, not a regular file"), "{err}");
    assert!(
        err.contains("huge.wasm is 314572800 bytes, more than the 268435456 bytes"),
        "{err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}
