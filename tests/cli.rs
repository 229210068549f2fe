//! The command line: help with examples and exit codes, the step catalogue.

mod common;
use common::Workspace;

#[test]
fn help_shows_examples_and_exit_codes() {
    let ws = Workspace::new();
    let top = ws.wharf(&["--help"]);
    assert_eq!(top.code(), 0);
    assert!(
        top.stdout().contains("Examples:") && top.stdout().contains("Exit codes:"),
        "{}",
        top.all()
    );
    for command in ["run", "validate", "steps", "inspect"] {
        let help = ws.wharf(&[command, "--help"]);
        assert_eq!(help.code(), 0, "{}", help.all());
        assert!(
            help.stdout().contains("Examples:\n  wharf "),
            "`wharf {command} --help`:\n{}",
            help.all()
        );
    }
    let run_help = ws.wharf(&["run", "--help"]).stdout();
    assert!(
        run_help.contains("3  a step failed after deploying and wharf rolled the service back"),
        "{run_help}"
    );
}

#[test]
fn steps_lists_the_builtins_and_inspect_describes_them() {
    let ws = Workspace::new();
    let steps = ws.wharf(&["steps"]);
    assert_eq!(steps.code(), 0, "{}", steps.all());
    assert!(steps.stdout().contains("builtin:exec"), "{}", steps.all());
    assert!(steps.stdout().contains("builtin:version"), "{}", steps.all());

    let exec = ws.wharf(&["inspect", "builtin:exec"]);
    assert_eq!(exec.code(), 0, "{}", exec.all());
    let out = exec.stdout();
    assert!(out.contains("program") && out.contains("(text, required)"), "{out}");
    assert!(out.contains("allow-failure") && out.contains("default false"), "{out}");
    assert!(out.contains("process") && out.contains("scoped by `program`"), "{out}");

    let cmd = ws.wharf(&["inspect", "./cmd.wasm"]);
    assert_eq!(cmd.code(), 0, "{}", cmd.all());
    assert!(cmd.stdout().contains("WASI command step"), "{}", cmd.all());

    let unknown = ws.wharf(&["inspect", "builtin:versoin"]);
    assert_eq!(unknown.code(), 2);
    assert!(
        unknown.stderr().contains("did you mean `builtin:version`?"),
        "{}",
        unknown.all()
    );
}
