//! The `wharf:step` contract on the host: components built against every released version
//! (tests/fixtures/contract, committed with their source and build command) load and run
//! as they are; one built against a newer contract is refused with both versions named.

mod common;
use common::{Workspace, tools_path};
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/contract")
        .join(path)
}

/// A workspace with `step.wasm` and a pipeline that runs it with `who: ci`.
fn workspace_with(component: &Path) -> Workspace {
    let ws = Workspace::new();
    std::fs::copy(component, ws.path().join("step.wasm")).unwrap();
    ws.write(
        "pipeline.yml",
        "name: fixture\nsteps:\n  - id: greet\n    uses: ./step.wasm\n    allow: { source: true }\n    with: { who: ci }\n",
    );
    ws
}

#[test]
fn steps_built_against_every_released_contract_run_on_this_host() {
    for version in ["1.0.0", "0.1.0"] {
        for lang in ["rust-typed", "python-typed"] {
            let ws = workspace_with(&fixture(&format!("{version}/{lang}.wasm")));
            let what = format!("{lang} built against {version}");
            let inspect = ws.wharf(&["inspect", "step.wasm"]);
            assert_eq!(inspect.code(), 0, "{what}: {}", inspect.all());
            assert!(
                inspect
                    .stdout()
                    .contains(&format!("contract: wharf:step@{version}: runs")),
                "{what}: {}",
                inspect.all()
            );
            assert!(
                inspect.stdout().contains("(text, required)"),
                "{what}: {}",
                inspect.all()
            );

            let run = ws.wharf(&["run", "pipeline.yml", "-v"]);
            assert_eq!(run.code(), 0, "{what}: {}", run.all());
            assert_eq!(
                run.output_of("greet", "greeting").as_deref(),
                Some("hello, ci"),
                "{what}"
            );
            assert!(run.all().contains("hello, ci"), "{what}: its log: {}", run.all());
            let legacy = run
                .all()
                .contains("built against wharf:step@0.1.0, the pre-release contract");
            assert_eq!(legacy, version == "0.1.0", "{what}: the rebuild warning: {}", run.all());
            if legacy {
                assert!(
                    run.all().contains("until wharf 2: rebuild it against wharf:step@1.0.0"),
                    "{}",
                    run.all()
                );
                // Said at validation too, where an author looks first.
                let valid = ws.wharf(&["validate", "pipeline.yml"]);
                assert!(valid.stderr().contains("warning: step `greet`"), "{}", valid.all());
            }
            // Typed parameters are checked before the run, whatever the release.
            ws.write("bad.yml", "name: bad\nsteps:\n  - id: greet\n    uses: ./step.wasm\n");
            let bad = ws.wharf(&["run", "bad.yml"]);
            assert_eq!(bad.code(), 2, "{what}: {}", bad.all());
            assert!(bad.stderr().contains("needs parameter `who`"), "{what}: {}", bad.all());
        }
    }
}

#[test]
fn a_wasi_command_depends_on_no_contract_version() {
    let ws = workspace_with(&fixture("command.wasm"));
    let inspect = ws.wharf(&["inspect", "step.wasm"]);
    assert!(
        inspect.stdout().contains("contract: no wharf:step interface"),
        "{}",
        inspect.all()
    );
    let run = ws.wharf(&["run", "pipeline.yml", "-v"]);
    assert_eq!(run.code(), 0, "{}", run.all());
    assert_eq!(
        run.output_of("greet", "greeting").as_deref(),
        Some("hello, ci"),
        "{}",
        run.all()
    );
}

/// A component of the `typed-step` world of `wit` (every import, a dummy body), made by
/// wasm-tools (crates.io; `.ci/run` installs it) as a toolchain of that contract would.
fn component_of(wit: &Path, out: &Path) {
    let core = out.with_extension("core.wasm");
    for args in [
        vec!["component", "embed", "--dummy", "--world", "typed-step"],
        vec!["component", "new"],
    ] {
        let input = if args[1] == "embed" { wit } else { &core };
        let output = if args[1] == "embed" { &core } else { out };
        let made = Command::new("wasm-tools")
            .args(&args)
            .arg(input)
            .arg("-o")
            .arg(output)
            .env("PATH", tools_path())
            .output()
            .expect("wasm-tools (cargo install wasm-tools; .ci/run installs it)");
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    }
}

#[test]
fn a_step_built_against_a_newer_contract_is_refused_naming_both_versions() {
    let ws = Workspace::new();
    // Hand-made WIT 1.99.0: today's contract plus a function this host has never heard of.
    let wit = ws.path().join("wit-1.99");
    std::fs::create_dir(&wit).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "wit") {
            let text = std::fs::read_to_string(&path)
                .unwrap()
                .replace("package wharf:step@1.0.0;", "package wharf:step@1.99.0;");
            std::fs::write(wit.join(path.file_name().unwrap()), text).unwrap();
        }
    }
    let log = std::fs::read_to_string(wit.join("log.wit")).unwrap().replace(
        "    measure: func(m: measurement);",
        "    measure: func(m: measurement);\n    @since(version = 1.99.0)\n    sparkle: func(note: string);",
    );
    std::fs::write(wit.join("log.wit"), log).unwrap();
    component_of(&wit, &ws.path().join("step.wasm"));
    ws.write(
        "pipeline.yml",
        "name: newer\nsteps:\n  - id: greet\n    uses: ./step.wasm\n",
    );

    let inspect = ws.wharf(&["inspect", "step.wasm"]);
    assert_eq!(inspect.code(), 2, "{}", inspect.all());
    for said in [
        "step.wasm cannot run on this wharf: wharf:step@1.99.0: does not run on wharf:step@1.0.0",
        "newer than the wharf:step@1.0.0 this wharf speaks: upgrade wharf to a release with contract 1.99 or later",
    ] {
        assert!(inspect.stderr().contains(said), "{said}: {}", inspect.all());
    }
    let run = ws.wharf(&["run", "pipeline.yml"]);
    assert_eq!(run.code(), 2, "{}", run.all());
    assert!(
        run.stderr().contains("wharf:step@1.99.0") && run.stderr().contains("wharf:step@1.0.0"),
        "{}",
        run.all()
    );
    assert!(
        run.stderr().contains("pipeline.yml"),
        "names where it is used: {}",
        run.all()
    );

    // The same contract at this host's version is served: the refusal is the version's.
    let same = ws.path().join("wit-1.0");
    std::fs::create_dir(&same).unwrap();
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "wit") {
            std::fs::copy(&path, same.join(path.file_name().unwrap())).unwrap();
        }
    }
    component_of(&same, &ws.path().join("same.wasm"));
    let inspect = ws.wharf(&["inspect", "same.wasm"]);
    assert!(
        inspect.stderr().contains("describe() failed") || inspect.code() == 0,
        "{}",
        inspect.all()
    );
    assert!(!inspect.all().contains("cannot run on this wharf"), "{}", inspect.all());
}
