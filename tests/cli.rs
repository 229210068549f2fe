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

/// The compile cache records how each component linked: a later run checks the step and
/// its parameters against that record's description and reads the compiled code only when
/// the step runs. A step taken from the step cache never reads it; a damaged record is as
/// none (the step is linked again before the run).
#[test]
fn a_step_is_described_from_the_compile_caches_record_and_compiled_only_when_it_runs() {
    let ws = Workspace::new();
    ws.write(
        "p.yml",
        "name: p\nsteps:\n  - id: a\n    uses: ./probe.wasm\n    with: { echo: hi }\n",
    );
    let components = ws.cache.path().join("components");
    let files = |ext: &str| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&components)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .collect()
    };
    let loaded = |run: &common::Run| {
        run.stdout()
            .lines()
            .filter(|l| {
                let l = l.trim_start();
                l.starts_with("compiled ") || l.starts_with("cached ")
            })
            .count()
    };
    let first = ws.wharf(&["run", "p.yml", "-v"]);
    assert_eq!(first.code(), 0, "{}", first.all());
    assert_eq!(loaded(&first), 1, "{}", first.all());
    let records = files("linked");
    assert_eq!(records.len(), 1, "one record for probe.wasm");
    // Without its compiled code, a step taken from the step cache still runs: it is not read.
    for entry in files("cwasm") {
        std::fs::remove_file(entry).unwrap();
    }
    let hit = ws.wharf(&["run", "p.yml", "-v"]);
    assert_eq!(hit.code(), 0, "{}", hit.all());
    assert!(hit.step_line("a").contains("cached from run"), "{}", hit.all());
    assert_eq!(loaded(&hit), 0, "no component was read:\n{}", hit.all());
    assert!(files("cwasm").is_empty());
    // Run (`cache: false`), it is compiled then, and gives what it gave before.
    ws.write(
        "off.yml",
        "name: p\nsteps:\n  - id: a\n    uses: ./probe.wasm\n    cache: false\n    with: { echo: hi }\n",
    );
    let ran = ws.wharf(&["run", "off.yml", "-v"]);
    assert_eq!(ran.code(), 0, "{}", ran.all());
    assert!(ran.stdout().contains("compiled "), "{}", ran.all());
    assert_eq!(ran.output_of("a", "echo").as_deref(), Some("hi"));
    assert_eq!(files("cwasm").len(), 1);
    // The record's description still checks parameters before anything runs.
    ws.write(
        "bad.yml",
        "name: bad\nsteps:\n  - id: a\n    uses: ./probe.wasm\n    with: { ech: hi }\n",
    );
    let bad = ws.wharf(&["run", "bad.yml"]);
    assert_eq!(bad.code(), 2, "{}", bad.all());
    assert!(bad.all().contains("ech"), "{}", bad.all());
    assert!(
        !bad.all().contains("run 2"),
        "refused before a run started:\n{}",
        bad.all()
    );
    // A record that does not hold (it calls the typed step a WASI command) fails the step
    // that runs on it, saying so, and is removed: the next run links the step first.
    std::fs::write(&records[0], r#"{"command":true,"info":null}"#).unwrap();
    ws.write(
        "plain.yml",
        "name: p\nsteps:\n  - id: a\n    uses: ./probe.wasm\n    cache: false\n",
    );
    let wrong = ws.wharf(&["run", "plain.yml"]);
    assert_ne!(wrong.code(), 0, "{}", wrong.all());
    assert!(
        wrong
            .all()
            .contains("links as another kind of step than the compile cache recorded"),
        "{}",
        wrong.all()
    );
    assert!(!records[0].exists(), "the record that did not hold is gone");
    let relinked = ws.wharf(&["run", "plain.yml"]);
    assert_eq!(relinked.code(), 0, "{}", relinked.all());
    assert!(records[0].exists(), "recorded again");
    // A damaged record is as none: the step is linked and described again, and recorded.
    std::fs::write(&records[0], "{\"command\": tru").unwrap();
    let again = ws.wharf(&["run", "off.yml", "-v"]);
    assert_eq!(again.code(), 0, "{}", again.all());
    assert_eq!(again.output_of("a", "echo").as_deref(), Some("hi"));
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(&records[0]).unwrap()).unwrap();
    assert_eq!(record["command"], false, "{record}");
    assert_eq!(record["info"]["name"], "probe", "{record}");
}

/// A damaged compile-cache entry is compiled again, not loaded (it crashed every later run);
/// a cache directory of another user, open to others, below a directory another user could
/// swap it in, or inside the workspace is not used.
#[test]
fn the_compile_cache_loads_only_intact_entries_from_a_private_directory() {
    let ws = Workspace::new();
    // Not taken from the step cache: each run reads the compiled code.
    ws.write(
        "p.yml",
        "name: p\nsteps:\n  - id: a\n    uses: ./probe.wasm\n    cache: false\n    with: { echo: hi }\n",
    );
    let first = ws.wharf(&["run", "p.yml", "-v"]);
    assert_eq!(first.code(), 0, "{}", first.all());
    assert!(
        first.stdout().contains("compiled ./probe.wasm") || first.stdout().contains("compiled "),
        "{}",
        first.all()
    );
    let entries: Vec<_> = std::fs::read_dir(ws.cache.path().join("components"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert!(!entries.is_empty());
    // Flip bytes in the middle of every entry: still a well-formed file, wrong code.
    for entry in &entries {
        let mut bytes = std::fs::read(entry).unwrap();
        let middle = bytes.len() / 2;
        for b in &mut bytes[middle..middle + 64] {
            *b = !*b;
        }
        std::fs::write(entry, bytes).unwrap();
    }
    let second = ws.wharf(&["run", "p.yml", "-v"]);
    assert_eq!(
        second.code(),
        0,
        "a damaged cache entry broke the run:\n{}",
        second.all()
    );
    assert!(second.stdout().contains("compiled"), "{}", second.all());
    assert_eq!(second.output_of("a", "echo").as_deref(), Some("hi"));
    let third = ws.wharf(&["run", "p.yml", "-v"]);
    assert!(
        third.stdout().lines().any(|l| l.trim_start().starts_with("cached ")),
        "the entry was written again:\n{}",
        third.all()
    );

    let refused = |dir: &std::path::Path, why: &str| {
        let run = common::Run(
            ws.command(&["run", "p.yml", "-v"])
                .env("WHARF_CACHE_DIR", dir)
                .output()
                .unwrap(),
        );
        assert_eq!(run.code(), 0, "{}", run.all());
        assert!(
            run.stderr().contains("warning: not using the compile cache"),
            "{}",
            run.all()
        );
        assert!(run.stderr().contains(why), "{}", run.all());
        assert!(
            !run.stdout().lines().any(|l| l.trim_start().starts_with("cached ")),
            "{}",
            run.all()
        );
    };
    let other = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(other.path().join("components")).unwrap();
    std::os::unix::fs::chown(other.path().join("components"), Some(65534), Some(65534)).unwrap();
    refused(other.path(), "belongs to user 65534");
    let open = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(open.path().join("components")).unwrap();
    std::fs::set_permissions(
        open.path().join("components"),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    refused(open.path(), "is open to other users (mode 777)");
    // The cache directory itself writable by others: they could swap `components` for
    // theirs between the check and the load.
    let swappable = tempfile::tempdir().unwrap();
    std::fs::set_permissions(swappable.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    refused(swappable.path(), "which others may write (mode 777)");
    let theirs = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(theirs.path(), Some(65534), Some(65534)).unwrap();
    refused(theirs.path(), "which belongs to user 65534");
    // Below a sticky directory (as /tmp is), a directory of one's own is safe.
    let sticky = tempfile::tempdir().unwrap();
    std::fs::set_permissions(sticky.path(), std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let run = common::Run(
        ws.command(&["run", "p.yml"])
            .env("WHARF_CACHE_DIR", sticky.path().join("mine"))
            .output()
            .unwrap(),
    );
    assert!(!run.stderr().contains("not using the compile cache"), "{}", run.all());
    refused(&ws.path().join("cache"), "lies inside the workspace");
}

/// One damaged state file is reported; the other services are still shown.
#[test]
fn status_shows_every_service_it_can_read() {
    let ws = Workspace::new();
    let services = ws.path().join(".wharf/state/services");
    std::fs::create_dir_all(&services).unwrap();
    std::fs::write(services.join("broken.json"), "{ not json").unwrap();
    std::fs::write(
        services.join("fine.json"),
        r#"{"service":"fine","target":"local","state":"absent","current":null,"previous":null,"instances":[],"run_id":null,"updated":""}"#,
    )
    .unwrap();
    let status = ws.wharf(&["status"]);
    assert_eq!(status.code(), 1, "{}", status.all());
    assert!(
        status.stdout().contains("fine  target local  state absent"),
        "{}",
        status.all()
    );
    assert!(status.stderr().contains("broken.json"), "{}", status.all());
}

/// `wharf validate FILE | head -1` and `wharf log RUN | head -1`: the reader goes away
/// early; wharf ends quietly instead of panicking.
#[test]
fn a_closed_stdout_ends_quietly() {
    let ws = Workspace::new();
    ws.write("p.yml", "name: p\nsteps:\n  - id: a\n    uses: ./probe.wasm\n");
    let run = ws.wharf(&["run", "p.yml"]);
    let id = run.run_id();
    for args in [vec!["validate", "p.yml"], vec!["log", &id], vec!["steps"], vec!["runs"]] {
        let mut child = ws
            .command(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // `head -1` that has read its line
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }
}

#[test]
fn version_names_the_commit_and_completions_come_from_the_parser() {
    let ws = Workspace::new();
    let version = ws.wharf(&["--version"]);
    assert_eq!(version.code(), 0, "{}", version.all());
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(&repo)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    assert_eq!(
        version.stdout().trim(),
        format!("wharf {} (commit {head})", env!("CARGO_PKG_VERSION"))
    );
    for (shell, marker) in [
        ("bash", "_wharf()"),
        ("zsh", "#compdef wharf"),
        ("fish", "complete -c wharf"),
    ] {
        let script = ws.wharf(&["completions", shell]);
        assert_eq!(script.code(), 0, "{}", script.all());
        assert!(script.stdout().contains(marker), "{shell}:\n{}", script.stdout());
        assert!(script.stdout().contains("replay"), "{shell}: subcommands are completed");
    }
}

#[test]
fn log_of_one_step_refuses_a_step_the_run_does_not_have() {
    let ws = Workspace::new();
    ws.write("p.yml", "name: p\nsteps:\n  - id: only\n    uses: ./probe.wasm\n");
    let run = ws.wharf(&["run", "p.yml"]);
    assert_eq!(run.code(), 0, "{}", run.all());
    let id = run.run_id();
    let one = ws.wharf(&["log", &id, "--step", "only"]);
    assert_eq!(one.code(), 0, "{}", one.all());
    assert!(one.stdout().contains("probe only attempt 1"), "{}", one.all());
    let typo = ws.wharf(&["log", &id, "--step", "onyl"]);
    assert_eq!(typo.code(), 2, "{}", typo.all());
    assert!(
        typo.stderr().contains(&format!("run {id} has no step `onyl`")),
        "{}",
        typo.all()
    );
}
