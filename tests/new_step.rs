//! `wharf new`: a scaffolded step project builds with cargo alone (the SDK and its WIT come
//! with it) and its pipeline passes; a scaffolded pipeline validates.

mod common;
use common::{Run, Workspace};
use std::path::Path;

fn cargo_build(dir: &Path) {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["build", "-q", "--target", "wasm32-wasip2", "--release"])
        .current_dir(dir)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo build in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A template's `./build.sh`, with the tools `.ci/run` installs on PATH.
fn build_script(dir: &Path, needs: &str) {
    let build = std::process::Command::new("./build.sh")
        .current_dir(dir)
        .env("PATH", common::tools_path())
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "build.sh ({needs}): {}{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );
}

/// `wharf ARGS` in `dir`, with the workspace's caches.
fn wharf_in(ws: &Workspace, dir: &Path, args: &[&str]) -> Run {
    Run(ws.command(args).current_dir(dir).output().unwrap())
}

#[test]
fn a_new_step_builds_and_its_pipeline_passes_in_each_language() {
    let ws = Workspace::new();
    for (name, lang, wasm) in [
        ("hello-step", "rust", "hello_step"),
        ("plain-step", "command", "plain-step"),
    ] {
        let created = ws.wharf(&["new", "step", name, "--lang", lang]);
        assert_eq!(created.code(), 0, "{}", created.all());
        let dir = ws.path().join(name);
        for file in ["Cargo.toml", "pipeline.yml", "README.md", ".gitignore"] {
            assert!(dir.join(file).is_file(), "{lang}: no {file}");
        }
        cargo_build(&dir);
        let run = wharf_in(&ws, &dir, &["run", "pipeline.yml", "-v"]);
        assert_eq!(run.code(), 0, "{lang}: {}", run.all());
        let greeting = run.output_of("greet", "greeting").unwrap_or_default();
        assert!(greeting.to_lowercase().starts_with("hello, wharf"), "{}", run.all());
        let component = format!("target/wasm32-wasip2/release/{wasm}.wasm");
        let inspect = wharf_in(&ws, &dir, &["inspect", &component]);
        assert_eq!(inspect.code(), 0, "{}", inspect.all());
        if lang == "rust" {
            // Typed: its parameters are checked before a run, and its version is its crate's.
            assert!(
                inspect.stdout().contains("hello-step 0.1.0 · Greets someone"),
                "{}",
                inspect.all()
            );
            std::fs::write(
                dir.join("bad.yml"),
                format!("name: bad\nsteps:\n  - id: greet\n    uses: ./{component}\n"),
            )
            .unwrap();
            let bad = wharf_in(&ws, &dir, &["run", "bad.yml"]);
            assert_eq!(bad.code(), 2, "{}", bad.all());
            assert!(bad.stderr().contains("needs parameter `name`"), "{}", bad.all());
        }
    }
    // Nothing of the user's is overwritten; names are checked.
    let again = ws.wharf(&["new", "step", "hello-step"]);
    assert_eq!(again.code(), 2, "{}", again.all());
    assert!(again.stderr().contains("already exists"), "{}", again.all());
    let bad = ws.wharf(&["new", "step", "Hello_Step"]);
    assert_eq!(bad.code(), 2, "{}", bad.all());
    assert!(!ws.path().join("Hello_Step").exists());
}

/// The Python template, built with componentize-py (PyPI; `.ci/run` installs it beside
/// WHARF_TEST_PYTHON): a parameter, an output, an annotation and a typed error.
#[test]
fn a_new_python_step_builds_with_componentize_py_and_runs() {
    let ws = Workspace::new();
    let created = ws.wharf(&["new", "step", "py-step", "--lang", "python"]);
    assert_eq!(created.code(), 0, "{}", created.all());
    let dir = ws.path().join("py-step");
    build_script(&dir, "componentize-py from PyPI; .ci/run installs it");
    let run = wharf_in(&ws, &dir, &["run", "pipeline.yml", "-v"]);
    assert_eq!(run.code(), 0, "{}", run.all());
    assert_eq!(
        run.output_of("greet", "greeting").as_deref(),
        Some("hello, wharf"),
        "{}",
        run.all()
    );
    let inspect = wharf_in(&ws, &dir, &["inspect", "py-step.wasm"]);
    assert!(
        inspect.stdout().contains("py-step 0.1.0 · Greets someone"),
        "{}",
        inspect.all()
    );
    assert!(inspect.stdout().contains("(text, required)"), "{}", inspect.all());

    std::fs::write(
        dir.join("more.yml"),
        "name: more\nsteps:\n  - id: nobody\n    uses: ./py-step.wasm\n    with: { name: nobody }\n  - id: empty\n    uses: ./py-step.wasm\n    with: { name: \" \" }\n",
    )
    .unwrap();
    let more = wharf_in(&ws, &dir, &["run", "more.yml", "--output", "github"]);
    assert_eq!(more.code(), 1, "{}", more.all());
    assert!(
        more.stdout()
            .contains("::warning file=pipeline.yml,title=py-step::greeting nobody"),
        "the annotation: {}",
        more.all()
    );
    assert!(
        more.stdout().contains("invalid-input: `name` is empty"),
        "the typed error: {}",
        more.all()
    );
}

/// The C template from scratch: bindings by wit-bindgen, clang for wasm32-wasi with
/// wasi-libc (Debian), the preview-1 adapter `wharf new` wrote, wasm-tools (crates.io;
/// `.ci/run` installs these).
#[test]
fn a_new_c_step_builds_with_clang_and_runs() {
    let ws = Workspace::new();
    let created = ws.wharf(&["new", "step", "c-step", "--lang", "c"]);
    assert_eq!(created.code(), 0, "{}", created.all());
    let dir = ws.path().join("c-step");
    for file in ["app.c", "build.sh", "pipeline.yml", "README.md", "wit/world.wit"] {
        assert!(dir.join(file).is_file(), "no {file}");
    }
    let adapter = std::fs::read(dir.join("wasi_snapshot_preview1.reactor.wasm")).unwrap();
    assert!(adapter.starts_with(b"\0asm"), "the adapter is a wasm module");
    build_script(
        &dir,
        "clang, wasi-libc from Debian; wit-bindgen, wasm-tools from crates.io: .ci/run installs them",
    );
    let run = wharf_in(&ws, &dir, &["run", "pipeline.yml", "-v"]);
    assert_eq!(run.code(), 0, "{}", run.all());
    assert_eq!(
        run.output_of("greet", "greeting").as_deref(),
        Some("hello, wharf"),
        "{}",
        run.all()
    );
    assert!(run.stdout().contains("greet │ hello, wharf"), "its log: {}", run.all());
    let inspect = wharf_in(&ws, &dir, &["inspect", "c-step.wasm"]);
    for said in [
        "contract: wharf:step@1.0.0: runs",
        "c-step 0.1.0 · Greets someone",
        "(text, required)",
    ] {
        assert!(inspect.stdout().contains(said), "{said}: {}", inspect.all());
    }
    // Its parameters are checked before a run, and its typed error reaches the run.
    std::fs::write(
        dir.join("more.yml"),
        "name: more\nsteps:\n  - id: empty\n    uses: ./c-step.wasm\n    with: { name: \"\" }\n",
    )
    .unwrap();
    let more = wharf_in(&ws, &dir, &["run", "more.yml"]);
    assert_eq!(more.code(), 1, "{}", more.all());
    assert!(more.all().contains("invalid-input: `name` is empty"), "{}", more.all());
    std::fs::write(
        dir.join("bad.yml"),
        "name: bad\nsteps:\n  - id: greet\n    uses: ./c-step.wasm\n",
    )
    .unwrap();
    let bad = wharf_in(&ws, &dir, &["run", "bad.yml"]);
    assert_eq!(bad.code(), 2, "{}", bad.all());
    assert!(bad.stderr().contains("needs parameter `name`"), "{}", bad.all());

    // C++: the same file as app.cpp, with the C++ library, through the same bindings.
    let app = std::fs::read_to_string(dir.join("app.c")).unwrap();
    std::fs::remove_file(dir.join("app.c")).unwrap();
    std::fs::write(
        dir.join("app.cpp"),
        app.replace(
            "#include \"typed_step.h\"",
            "#include \"typed_step.h\"\n#include <string>",
        )
        .replace(
            "    log_info(greeting);",
            "    std::string said = std::string(greeting) + \" (C++)\";\n    log_info(said.c_str());",
        ),
    )
    .unwrap();
    build_script(&dir, "clang++ and libc++-dev-wasm32 from Debian: .ci/run installs them");
    let run = wharf_in(&ws, &dir, &["run", "pipeline.yml", "-v"]);
    assert_eq!(run.code(), 0, "{}", run.all());
    assert!(run.stdout().contains("greet │ hello, wharf (C++)"), "{}", run.all());
}

#[test]
fn a_new_pipeline_validates() {
    let ws = Workspace::new();
    let created = ws.wharf(&["new", "pipeline", "svc"]);
    assert_eq!(created.code(), 0, "{}", created.all());
    let valid = ws.wharf(&["validate", "svc/pipeline.yml"]);
    assert_eq!(valid.code(), 0, "{}", valid.all());
    assert!(valid.stdout().contains("valid"), "{}", valid.all());

    // A name that is a link, even one that leads nowhere, is the user's: refused, left as it
    // was, and nothing made where it points.
    let away = ws.path().join("away");
    for kind in ["pipeline", "step"] {
        let link = ws.path().join(format!("link-{kind}"));
        std::os::unix::fs::symlink(&away, &link).unwrap();
        let refused = ws.wharf(&["new", kind, &format!("link-{kind}")]);
        assert_eq!(refused.code(), 2, "{kind}: {}", refused.all());
        assert!(refused.stderr().contains("already exists"), "{kind}: {}", refused.all());
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert!(!away.exists(), "{kind}: made where the link points");
    }
}
