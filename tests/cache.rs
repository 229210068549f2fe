//! The step cache, through the real binary: a step is reused only while everything it used
//! is what it was (the files and listings a WebAssembly step read, everything a program's
//! grants let it read, its program, its parameters, variables, secrets and component); a
//! step with effects wharf cannot do again is never reused; a damaged or foreign entry is
//! refused and the step runs; a hit restores the files, outputs and log the step left.

mod common;
use common::{Run, Workspace, guest};
use std::path::Path;

const PIPELINE: &str = "p.yml";

fn run(ws: &Workspace, extra: &[&str]) -> Run {
    let mut args = vec!["run", PIPELINE, "-v"];
    args.extend_from_slice(extra);
    let run = ws.wharf(&args);
    assert_eq!(run.code(), 0, "{}", run.all());
    run
}

fn cached(run: &Run, step: &str) -> bool {
    run.step_line(step).contains("cached from run")
}

/// Whether `run` took `step` from the entry `from` saved.
fn cached_from(run: &Run, step: &str, from: &Run) -> bool {
    run.step_line(step)
        .contains(&format!("cached from run {}", from.run_id()))
}

/// What `wharf cache why` says of a run's step.
fn why(ws: &Workspace, run: &Run, step: &str) -> String {
    let out = ws.wharf(&["cache", "why", &run.run_id(), step]);
    assert_eq!(out.code(), 0, "{}", out.all());
    out.stdout()
}

/// A workspace whose `data/a.txt` says `one`, and a step of `escape.wasm` (a WASI command)
/// doing `attack` on `target` with `read: [data]`.
fn data_step(attack: &str, target: &str) -> Workspace {
    let ws = Workspace::new();
    std::fs::copy(guest("escape-cmd"), ws.path().join("escape.wasm")).unwrap();
    std::fs::create_dir(ws.path().join("data")).unwrap();
    ws.write("data/a.txt", "one");
    ws.write(
        PIPELINE,
        &format!(
            "name: c\nsteps:\n  - id: step\n    uses: ./escape.wasm\n    allow: {{ read: [data] }}\n    with: {{ attack: {attack}, target: {target} }}\n"
        ),
    );
    ws
}

#[test]
fn a_webassembly_step_is_reused_until_a_file_it_read_changes() {
    let ws = data_step("read-workspace", "data/a.txt");
    let first = run(&ws, &[]);
    assert!(!cached(&first, "step"), "{}", first.all());
    assert!(why(&ws, &first, "step").contains("nothing is cached for it yet"));

    let second = run(&ws, &[]);
    assert!(cached(&second, "step"), "{}", second.all());
    assert_eq!(second.output_of("step", "result").unwrap(), "read: one");
    assert!(cached_from(&second, "step", &first), "{}", second.all());
    // Its log comes back with it.
    assert!(second.stdout().contains("read: one"), "{}", second.all());

    // A file it did not read changes nothing.
    ws.write("data/other.txt", "unrelated");
    assert!(cached(&run(&ws, &[]), "step"));

    ws.write("data/a.txt", "two");
    let changed = run(&ws, &[]);
    assert!(!cached(&changed, "step"), "{}", changed.all());
    assert_eq!(changed.output_of("step", "result").unwrap(), "read: two");
    let said = why(&ws, &changed, "step");
    assert!(said.contains("file `data/a.txt` was a file"), "{said}");
}

#[test]
fn a_listing_is_an_input_only_for_the_step_that_listed() {
    let ws = data_step("list-workspace", "data");
    run(&ws, &[]);
    assert!(cached(&run(&ws, &[]), "step"));
    // The content of a file it only listed is not an input; a new name is.
    ws.write("data/a.txt", "changed");
    assert!(cached(&run(&ws, &[]), "step"));
    ws.write("data/b.txt", "new");
    let listed = run(&ws, &[]);
    assert!(!cached(&listed, "step"), "{}", listed.all());
    assert_eq!(listed.output_of("step", "result").unwrap(), "listed: 2 entries");
    assert!(why(&ws, &listed, "step").contains("the listing of `data`"));
}

/// A tool on a `PATH` of its own, as a toolchain: `tool` prints what `src/` holds.
fn toolchain(version: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let tool = bin.join("tool");
    std::fs::write(&tool, format!("#!/bin/sh\necho tool {version}\ncat src/*.txt\n")).unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(&mut std::fs::metadata(&tool).unwrap().permissions(), 0o755);
    std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    dir
}

fn run_with_path(ws: &Workspace, tools: &Path) -> Run {
    let path = format!("{}:{}", tools.join("bin").display(), std::env::var("PATH").unwrap());
    let out = ws.command(&["run", PIPELINE, "-v"]).env("PATH", path).output().unwrap();
    let run = Run(out);
    assert_eq!(run.code(), 0, "{}", run.all());
    run
}

#[test]
fn a_program_is_reused_until_its_grants_program_or_toolchain_change() {
    let ws = Workspace::new();
    std::fs::create_dir(ws.path().join("src")).unwrap();
    ws.write("src/a.txt", "alpha");
    ws.write(
        PIPELINE,
        "name: c\nsteps:\n  - id: tool\n    uses: builtin:exec\n    allow: { read: [src] }\n    with: { program: tool }\n",
    );
    let tools = toolchain("1");
    let first = run_with_path(&ws, tools.path());
    assert!(!cached(&first, "tool"), "{}", first.all());
    let second = run_with_path(&ws, tools.path());
    assert!(cached(&second, "tool"), "{}", second.all());
    assert_eq!(second.output_of("tool", "stdout").unwrap(), "tool 1\\nalpha");

    // A program reads everything its grants cover: a new file in `src/` is a change, even
    // one it might never open.
    ws.write("src/b.txt", "beta");
    let grown = run_with_path(&ws, tools.path());
    assert!(!cached(&grown, "tool"), "{}", grown.all());
    assert!(why(&ws, &grown, "tool").contains("file `src/b.txt` was absent"));
    assert!(cached(&run_with_path(&ws, tools.path()), "tool"));

    // Another version of the program at the same place.
    std::fs::write(tools.path().join("bin/tool"), "#!/bin/sh\necho tool 2\ncat src/*.txt\n").unwrap();
    let upgraded = run_with_path(&ws, tools.path());
    assert!(!cached(&upgraded, "tool"), "{}", upgraded.all());
    assert!(upgraded.output_of("tool", "stdout").unwrap().starts_with("tool 2"));

    // Another file in the toolchain's prefix (a library the tool might load).
    std::fs::write(tools.path().join("bin/helper"), "new").unwrap();
    assert!(!cached(&run_with_path(&ws, tools.path()), "tool"));

    // A different PATH is a different environment.
    let other = toolchain("2");
    assert!(!cached(&run_with_path(&ws, other.path()), "tool"));
}

#[test]
fn parameters_variables_secrets_and_components_are_part_of_a_step() {
    let ws = Workspace::new();
    ws.write(
        PIPELINE,
        "name: c\nvars: { v: one }\nsteps:\n  - id: echo\n    uses: ./probe.wasm\n    with: { echo: \"${{ vars.v }} ${{ env.X }}\" }\n  - id: secret\n    uses: ./probe.wasm\n    allow: { secrets: [token] }\n    with: { mode: secret, echo: token }\n  - id: command\n    uses: ./cmd.wasm\n    with: { say: hi }\n",
    );
    let go = |x: &str, token: &str, extra: &[&str]| {
        let mut args = vec!["run", PIPELINE, "-v", "--pass-env", "X"];
        args.extend_from_slice(extra);
        let out = ws
            .command(&args)
            .env("X", x)
            .env("WHARF_SECRET_TOKEN", token)
            .output()
            .unwrap();
        let run = Run(out);
        assert_eq!(run.code(), 0, "{}", run.all());
        run
    };
    let secret = "s3cr3t-value-for-the-cache-test";
    go("x1", secret, &[]);
    let again = go("x1", secret, &[]);
    for step in ["echo", "secret", "command"] {
        assert!(cached(&again, step), "{step}: {}", again.all());
    }
    assert_eq!(again.output_of("echo", "echo").unwrap(), "one x1");

    let var = go("x1", secret, &["--var", "v=two"]);
    assert!(!cached(&var, "echo") && cached(&var, "secret"), "{}", var.all());
    assert!(why(&ws, &var, "echo").contains("parameter `echo` changed"));

    let passed = go("x2", secret, &["--var", "v=two"]);
    assert!(!cached(&passed, "echo"), "{}", passed.all());
    assert!(why(&ws, &passed, "echo").contains("passed variable `X` changed"));

    let rotated = go("x2", "another-secret-value", &["--var", "v=two"]);
    assert!(!cached(&rotated, "secret"), "{}", rotated.all());
    assert!(why(&ws, &rotated, "secret").contains("secret `token`"));
    assert!(cached(&rotated, "echo"));

    // The secret is compared by a keyed digest: its value is nowhere in the cache.
    for file in walk(&ws.path().join(".wharf/cache")) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{} holds the secret",
            file.display()
        );
    }

    // Another component at the same path.
    std::fs::copy(guest("escape-cmd"), ws.path().join("cmd.wasm")).unwrap();
    let swapped = go("x2", "another-secret-value", &["--var", "v=two"]);
    assert!(!cached(&swapped, "command"), "{}", swapped.all());
    assert!(why(&ws, &swapped, "command").contains("component changed"));
}

#[test]
fn a_hit_says_again_the_measurements_the_step_took() {
    let ws = Workspace::new();
    std::fs::copy(guest("probe_step"), ws.path().join("probe.wasm")).unwrap();
    ws.write(
        PIPELINE,
        "name: c\nsteps:\n  - id: judge\n    uses: ./probe.wasm\n    with: { mode: measure, echo: latency, count: 7 }\n",
    );
    let said = "≈ judge: latency = 7: successful (measured on purpose)";
    let first = run(&ws, &[]);
    assert!(first.stdout().contains(said), "{}", first.all());
    let again = run(&ws, &[]);
    assert!(cached(&again, "judge"), "{}", again.all());
    assert!(again.stdout().contains(said), "{}", again.all());
    let log = ws.wharf(&["log", &again.run_id()]);
    assert!(
        log.stdout().contains("judge ≈ latency = 7: successful"),
        "{}",
        log.all()
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.file_type().unwrap().is_dir() {
            out.extend(walk(&entry.path()));
        } else {
            out.push(entry.path());
        }
    }
    out
}

#[test]
fn steps_with_effects_wharf_cannot_repeat_are_never_reused() {
    let ws = Workspace::new();
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut stream in server.incoming().flatten() {
            let _ = stream.read(&mut [0u8; 2048]);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK");
        }
    });
    ws.write(
        PIPELINE,
        &format!(
            "name: c\nsteps:\n  - id: gate\n    uses: builtin:http-gate\n    with: {{ url: \"http://127.0.0.1:{port}/\", body-contains: OK }}\n  - id: deployer\n    uses: ./probe.wasm\n    allow: {{ deploy: [svc] }}\n  - id: off\n    uses: ./probe.wasm\n    cache: false\n  - id: flaky\n    uses: ./probe.wasm\n    with: {{ mode: \"${{{{ vars.mode }}}}\" }}\n    if: always()\nvars: {{ mode: fail }}\n"
        ),
    );
    let go = |extra: &[&str]| {
        let mut args = vec!["run", PIPELINE, "-v"];
        args.extend_from_slice(extra);
        ws.wharf(&args)
    };
    let first = go(&[]);
    assert_eq!(first.code(), 1, "{}", first.all());
    let second = go(&[]);
    assert_eq!(second.code(), 1, "a failure is never cached:\n{}", second.all());
    for step in ["gate", "deployer", "off"] {
        assert!(!cached(&second, step), "{step}: {}", second.all());
    }
    assert!(why(&ws, &second, "gate").contains("never cached: it may call HTTP"));
    assert!(why(&ws, &second, "deployer").contains("never cached: it may deploy"));
    assert!(why(&ws, &second, "off").contains("`cache: false`"));
    assert!(why(&ws, &second, "flaky").contains("nothing is cached for it yet"));

    // `--no-cache` runs what the cache holds.
    let ok = go(&["--var", "mode=ok"]);
    assert_eq!(ok.code(), 0, "{}", ok.all());
    assert!(cached(&go(&["--var", "mode=ok"]), "flaky"));
    let fresh = go(&["--var", "mode=ok", "--no-cache"]);
    assert!(!cached(&fresh, "flaky"), "{}", fresh.all());
}

#[test]
fn a_damaged_or_foreign_entry_is_refused_and_the_step_runs() {
    let a = Workspace::new();
    let text = "name: c\nsteps:\n  - id: echo\n    uses: ./probe.wasm\n    with: { echo: hello }\n";
    a.write(PIPELINE, text);
    run(&a, &[]);
    assert!(cached(&run(&a, &[]), "echo"));

    // Another workspace, the same step: an entry copied from `a` carries `a`'s key.
    let b = Workspace::new();
    b.write(PIPELINE, text);
    run(&b, &[]);
    let entries = |ws: &Workspace| {
        walk(&ws.path().join(".wharf/cache/entries"))
            .into_iter()
            .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .collect::<Vec<_>>()
    };
    for entry in entries(&b) {
        std::fs::remove_file(entry).unwrap();
    }
    for entry in entries(&a) {
        let to = b.path().join(entry.strip_prefix(a.path()).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&entry, to).unwrap();
    }
    let foreign = run(&b, &[]);
    assert!(!cached(&foreign, "echo"), "{}", foreign.all());
    assert!(foreign.stdout().contains("was refused"), "{}", foreign.all());
    assert!(foreign.stdout().contains("cache key"), "{}", foreign.all());

    // Tampered with in place: an output changed.
    for entry in entries(&a) {
        let text = std::fs::read_to_string(&entry).unwrap();
        std::fs::write(&entry, text.replace("\"hello\"", "\"evil!\"")).unwrap();
    }
    let tampered = run(&a, &[]);
    assert!(!cached(&tampered, "echo"), "{}", tampered.all());
    assert_eq!(tampered.output_of("echo", "echo").unwrap(), "hello");
    assert!(tampered.stdout().contains("was refused"), "{}", tampered.all());
    // Said once: the refused entry is gone, the step's new one is used.
    let after = run(&a, &[]);
    assert!(
        cached(&after, "echo") && !after.stdout().contains("refused"),
        "{}",
        after.all()
    );
}

#[test]
fn a_shared_cache_that_cannot_be_reached_is_said_once_and_a_bad_one_refused() {
    let ws = Workspace::new();
    ws.write(
        PIPELINE,
        "name: c\nsteps:\n  - { id: a, uses: ./probe.wasm, with: { echo: a } }\n  - { id: b, uses: ./probe.wasm, with: { echo: b } }\n",
    );
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spec = format!("oci://127.0.0.1:{closed}/cache");
    let run = shared_run(&ws, &spec, Some("key"), &["--cache-write"]);
    assert_eq!(run.stdout().matches("cannot be reached").count(), 1, "{}", run.all());
    let bad = ws.wharf(&["run", PIPELINE, "--cache", "https://registry.example.com/cache"]);
    assert_eq!(bad.code(), 2, "{}", bad.all());
    assert!(bad.stderr().contains("oci://HOST/REPOSITORY"), "{}", bad.all());
}

#[test]
fn a_hit_restores_the_files_the_step_wrote() {
    let ws = Workspace::new();
    std::fs::copy(guest("escape-cmd"), ws.path().join("escape.wasm")).unwrap();
    std::fs::create_dir_all(ws.path().join("src")).unwrap();
    std::fs::create_dir_all(ws.path().join("out")).unwrap();
    ws.write("src/a.txt", "alpha");
    ws.write(
        PIPELINE,
        "name: c\nsteps:\n  - id: write\n    uses: ./escape.wasm\n    allow: { write: [out] }\n    with: { attack: write-workspace, target: out/w.txt }\n  - id: copy\n    uses: builtin:exec\n    allow: { read: [src], write: [copied] }\n    with: { program: sh, args: [-c, \"mkdir -p copied/deep && cp src/a.txt copied/deep/a.txt\"] }\n",
    );
    std::fs::create_dir(ws.path().join("copied")).unwrap();
    run(&ws, &[]);
    let written = std::fs::read(ws.path().join("out/w.txt")).unwrap();
    // What the steps left is gone; the copy's directory is as it found it, empty.
    std::fs::remove_file(ws.path().join("out/w.txt")).unwrap();
    std::fs::remove_dir_all(ws.path().join("copied/deep")).unwrap();
    let again = run(&ws, &[]);
    assert!(cached(&again, "write") && cached(&again, "copy"), "{}", again.all());
    assert_eq!(std::fs::read(ws.path().join("out/w.txt")).unwrap(), written);
    assert_eq!(
        std::fs::read_to_string(ws.path().join("copied/deep/a.txt")).unwrap(),
        "alpha"
    );

    // The run with hits replays offline like any other.
    let replay = ws.wharf(&["replay", &again.run_id()]);
    assert_eq!(replay.code(), 0, "{}", replay.all());

    // A program's written directory is an input: what it finds there can change what it
    // does. After a run it holds what the run left, so the next run learns that state.
    let learnt = run(&ws, &[]);
    assert!(!cached(&learnt, "copy"), "{}", learnt.all());
    assert!(
        why(&ws, &learnt, "copy").contains("`copied"),
        "{}",
        why(&ws, &learnt, "copy")
    );
    assert!(cached(&run(&ws, &[]), "copy"));

    // A damaged blob is found out: the step runs and nothing is lost.
    for blob in walk(&ws.path().join(".wharf/cache/oci/blobs/sha256")) {
        std::fs::write(blob, "damaged").unwrap();
    }
    std::fs::remove_file(ws.path().join("out/w.txt")).unwrap();
    let damaged = run(&ws, &[]);
    assert!(!cached(&damaged, "write"), "{}", damaged.all());
    assert_eq!(std::fs::read(ws.path().join("out/w.txt")).unwrap(), written);
}

#[test]
fn the_seed_build_is_reused_with_its_image_until_its_source_changes() {
    let ws = Workspace::seed();
    let go = || {
        let run = ws.wharf(&["run", "pipeline.yml", "-v"]);
        assert_eq!(run.code(), 0, "{}", run.all());
        run
    };
    let first = go();
    assert!(!cached(&first, "build"), "{}", first.all());
    let digest = first.output_of("build", "digest").unwrap();
    // cargo writes `target/`, and a program's written directory is an input (what it
    // finds there can change what it does): the re-run finds what the first run left, runs
    // cargo (which has nothing to do), and records that state.
    let second = go();
    assert!(!cached(&second, "build"), "{}", second.all());
    assert!(
        why(&ws, &second, "build").contains("`target"),
        "{}",
        why(&ws, &second, "build")
    );
    assert_eq!(second.output_of("build", "digest").unwrap(), digest);

    let third = go();
    assert!(cached(&third, "build"), "{}", third.all());
    assert!(cached(&third, "version"), "{}", third.all());
    assert_eq!(third.output_of("build", "digest").unwrap(), digest);
    // The image is in the store under its name, and it deployed.
    assert_eq!(third.output_of("finish", "action").unwrap(), "confirmed");
    // Without a registry, `push` only names the image in the store: reused too. The deploy
    // and what judges it always run.
    assert!(cached(&third, "push"), "{}", third.all());
    for step in ["upgrade", "gate", "discover", "metrics", "finish"] {
        assert!(!cached(&third, step), "{step}: {}", third.all());
    }
    assert!(why(&ws, &third, "upgrade").contains("never cached"));

    // A change to the service's source rebuilds it; the first difference named is the
    // version the change gave the image (the workspace is now dirty).
    let main = ws.path().join("service/src/main.rs");
    let source = std::fs::read_to_string(&main).unwrap();
    std::fs::write(&main, format!("{source}\n// a change\n")).unwrap();
    let changed = go();
    assert!(!cached(&changed, "build"), "{}", changed.all());
    assert!(
        why(&ws, &changed, "build").contains("parameter `tag` changed"),
        "{}",
        why(&ws, &changed, "build")
    );
}

#[test]
fn an_input_changed_while_the_step_ran_keeps_its_result_out_of_the_cache() {
    let ws = Workspace::new();
    std::fs::create_dir(ws.path().join("src")).unwrap();
    ws.write("src/a.txt", "before");
    ws.write(
        PIPELINE,
        "name: c\nsteps:\n  - id: slow\n    uses: builtin:exec\n    allow: { read: [src], write: [marks] }\n    with: { program: sh, args: [-c, \"cat src/a.txt; : > marks/read; sleep 2\"] }\n",
    );
    std::fs::create_dir(ws.path().join("marks")).unwrap();
    let mut running = ws.command(&["run", PIPELINE, "-v"]).spawn().unwrap();
    // The program has read the file; someone changes it before the step ends.
    let read = ws.path().join("marks/read");
    let waited = std::time::Instant::now();
    while !read.exists() {
        assert!(waited.elapsed().as_secs() < 60, "the program never read the file");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    ws.write("src/a.txt", "after");
    assert!(running.wait().unwrap().success());
    let next = run(&ws, &[]);
    assert!(!cached(&next, "slow"), "{}", next.all());
    assert_eq!(next.output_of("slow", "stdout").unwrap(), "after");
}

#[test]
fn what_the_host_copies_into_an_image_and_who_the_step_is_are_inputs_too() {
    let ws = Workspace::new();
    std::fs::create_dir(ws.path().join("site")).unwrap();
    ws.write("site/index.html", "first");
    ws.write(
        PIPELINE,
        "name: c\nsteps:\n  - id: image\n    uses: builtin:build\n    with: { repository: app, tag: 1.0.0, files: { site: /srv/site } }\n  - id: one\n    uses: ./probe.wasm\n    with: { echo: same }\n  - id: two\n    uses: ./probe.wasm\n    with: { echo: same }\n",
    );
    let first = run(&ws, &[]);
    // `two` does what `one` does, but is handed another id: not the same work.
    assert!(!cached(&first, "two"), "{}", first.all());
    let digest = first.output_of("image", "digest").unwrap();
    assert!(cached(&run(&ws, &[]), "image"));

    // A file deep in a directory the image holds.
    ws.write("site/index.html", "second");
    let changed = run(&ws, &[]);
    assert!(!cached(&changed, "image"), "{}", changed.all());
    assert_ne!(changed.output_of("image", "digest").unwrap(), digest);
    assert!(
        why(&ws, &changed, "image").contains("file `site/index.html`"),
        "{}",
        why(&ws, &changed, "image")
    );
}

/// `wharf run` in `ws` with a shared cache, a cache key (or none) and more arguments.
fn shared_run(ws: &Workspace, spec: &str, key: Option<&str>, extra: &[&str]) -> Run {
    let mut args = vec!["run", PIPELINE, "-v", "--cache", spec];
    args.extend_from_slice(extra);
    let mut command = ws.command(&args);
    match key {
        Some(key) => command.env("WHARF_SECRET_CACHE_KEY", key),
        None => command.env_remove("WHARF_SECRET_CACHE_KEY"),
    };
    let run = Run(command.output().unwrap());
    assert_eq!(run.code(), 0, "{}", run.all());
    run
}

#[test]
fn clones_share_entries_through_a_registry_and_only_a_trusted_writer_writes() {
    let registry = common::services::Registry::start();
    let spec = format!("oci://{}/team/wharf-cache", registry.addr);
    // One repository, checked out on several machines: copies of it, `.git` and all.
    let origin = data_step("read-workspace", "data/a.txt");
    std::fs::create_dir(origin.path().join("site")).unwrap();
    origin.write("site/index.html", "hello");
    let text = std::fs::read_to_string(origin.path().join(PIPELINE)).unwrap();
    origin.write(
        PIPELINE,
        &format!("{text}  - id: image\n    uses: builtin:build\n    with: {{ repository: app, tag: 1.0.0, files: {{ site: /srv/site }} }}\n"),
    );
    let clone = || {
        let ws = Workspace {
            dir: tempfile::tempdir().unwrap(),
            cache: tempfile::tempdir().unwrap(),
        };
        let copied = std::process::Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", origin.path().display()))
            .arg(ws.path())
            .status()
            .unwrap();
        assert!(copied.success());
        ws
    };
    let key = "a shared cache key, given to trusted jobs";

    // A run that may not write (a pull request) adds nothing.
    let reader = clone();
    shared_run(&reader, &spec, Some(key), &[]);
    let other = clone();
    let nothing = shared_run(&other, &spec, Some(key), &[]);
    assert!(!cached(&nothing, "step"), "{}", nothing.all());

    // A trusted run writes; another machine (a fresh clone) reuses its steps and image.
    let writer = clone();
    let wrote = shared_run(&writer, &spec, Some(key), &["--cache-write"]);
    let digest = wrote.output_of("image", "digest").unwrap();
    let fresh = clone();
    let reused = shared_run(&fresh, &spec, Some(key), &[]);
    for step in ["step", "image"] {
        assert!(cached_from(&reused, step, &wrote), "{step}: {}", reused.all());
    }
    assert_eq!(reused.output_of("step", "result").unwrap(), "read: one");
    assert_eq!(reused.output_of("image", "digest").unwrap(), digest);
    let inspect = fresh.wharf(&["inspect", "builtin:version"]);
    assert_eq!(inspect.code(), 0);
    assert!(fresh.path().join(".wharf/oci/blobs").is_dir());

    // An entry signed with another key (another team, an attacker with write access to the
    // registry) is refused, and the step runs.
    let foreign = clone();
    let refused = shared_run(&foreign, &spec, Some("another key"), &[]);
    assert!(!cached(&refused, "step"), "{}", refused.all());
    assert!(refused.stdout().contains("refused"), "{}", refused.all());

    // A changed input is a miss, shared or not.
    let changed = clone();
    changed.write("data/a.txt", "two");
    let ran = shared_run(&changed, &spec, Some(key), &[]);
    assert!(!cached(&ran, "step") && cached(&ran, "image"), "{}", ran.all());

    // Without the key, the shared cache is not used, and the run says so.
    let keyless = clone();
    let said = shared_run(&keyless, &spec, None, &[]);
    assert!(!cached(&said, "step"), "{}", said.all());
    assert!(said.stdout().contains("cache-key"), "{}", said.all());
}

#[test]
fn the_revision_a_step_asked_for_is_checked_again_a_new_tag_or_commit_is_a_change() {
    let ws = Workspace::new();
    ws.write(
        PIPELINE,
        "name: c\nsteps:\n  - id: version\n    uses: builtin:version\n",
    );
    let first = run(&ws, &[]);
    assert!(cached(&run(&ws, &[]), "version"));
    common::git(ws.path(), &["tag", "v2.0.0"]);
    let tagged = run(&ws, &[]);
    assert!(!cached(&tagged, "version"), "{}", tagged.all());
    assert!(tagged.output_of("version", "version").unwrap().starts_with("2.0.0-0-"));
    assert_ne!(
        tagged.output_of("version", "version"),
        first.output_of("version", "version")
    );
    assert!(cached(&run(&ws, &[]), "version"));
    ws.commit("another");
    let committed = run(&ws, &[]);
    assert!(!cached(&committed, "version"), "{}", committed.all());
    assert!(
        committed
            .output_of("version", "version")
            .unwrap()
            .starts_with("2.0.0-1-")
    );
}

#[test]
fn a_run_with_hits_can_be_resumed() {
    let ws = Workspace::new();
    ws.write(
        PIPELINE,
        "name: c\nvars: { mode: fail }\nsteps:\n  - { id: a, uses: ./probe.wasm, with: { echo: a } }\n  - { id: b, uses: ./probe.wasm, with: { mode: \"${{ vars.mode }}\" } }\n",
    );
    let first = ws.wharf(&["run", PIPELINE]);
    assert_eq!(first.code(), 1, "{}", first.all());
    let second = ws.wharf(&["run", PIPELINE, "-v"]);
    assert_eq!(second.code(), 1, "{}", second.all());
    assert!(cached(&second, "a"), "{}", second.all());
    let resumed = ws.wharf(&["run", PIPELINE, "-v", "--var", "mode=ok", "--resume", &second.run_id()]);
    assert_eq!(resumed.code(), 0, "{}", resumed.all());
    assert!(
        resumed
            .step_line("a")
            .contains(&format!("reused from run {}", second.run_id())),
        "{}",
        resumed.all()
    );
    assert_eq!(resumed.output_of("a", "echo").unwrap(), "a");
}

#[test]
fn a_step_new_every_run_stops_being_saved_until_its_identity_repeats() {
    let ws = Workspace::new();
    let pipeline = |x: &str| format!("name: c\nsteps:\n  - {{ id: s, uses: ./cmd.wasm, with: {{ x: \"{x}\" }} }}\n");
    let entries = || walk(&ws.path().join(".wharf/cache/entries")).len();
    ws.write(PIPELINE, &pipeline("${{ run.id }}"));
    for _ in 0..4 {
        run(&ws, &[]);
    }
    assert_eq!(
        entries(),
        4,
        "the first runs are saved: nothing says yet that it never repeats"
    );
    let fifth = run(&ws, &[]);
    assert!(!cached(&fifth, "s"), "{}", fifth.all());
    let said = why(&ws, &fifth, "s");
    assert!(
        said.contains("not saved: its identity was new in each of its last 5 runs (parameter `x` changed)"),
        "{said}"
    );
    assert_eq!(entries(), 4, "no entry that no run would find");

    // Once a run repeats the one before, the step is saved again, and then reused.
    ws.write(PIPELINE, &pipeline("fixed"));
    run(&ws, &[]);
    run(&ws, &[]);
    assert_eq!(entries(), 5);
    let reused = run(&ws, &[]);
    assert!(cached(&reused, "s"), "{}", reused.all());
}

#[test]
fn pipelines_with_a_step_of_the_same_id_keep_their_records_apart() {
    let ws = data_step("read-workspace", "data/a.txt");
    let text = std::fs::read_to_string(ws.path().join(PIPELINE)).unwrap();
    ws.write("ci.yml", &text.replace("name: c\n", "name: ci\n"));
    ws.write("release.yml", &text.replace("name: c\n", "name: release\n"));
    // Both pipelines run on every commit, and every commit changes what the step reads:
    // each run misses, but the step is the same step of its pipeline run after run, so it
    // is saved every time, and a miss names the file, not the other pipeline.
    for commit in 0..6 {
        ws.write("data/a.txt", &format!("commit {commit}"));
        for file in ["ci.yml", "release.yml"] {
            let run = ws.wharf(&["run", file, "-v"]);
            assert_eq!(run.code(), 0, "{}", run.all());
            assert!(!cached(&run, "step"), "{}", run.all());
            let said = why(&ws, &run, "step");
            match commit {
                0 => assert!(said.contains("nothing is cached for it yet"), "{file}: {said}"),
                _ => assert!(
                    said.contains("file `data/a.txt` was a file") && !said.contains("not saved"),
                    "{file}, commit {commit}: {said}"
                ),
            }
        }
    }
    for file in ["ci.yml", "release.yml"] {
        let again = ws.wharf(&["run", file, "-v"]);
        assert!(cached(&again, "step"), "{file}: {}", again.all());
    }
}

#[test]
fn a_parameter_that_goes_back_finds_the_entry_saved_before_even_without_the_record() {
    let ws = Workspace::new();
    let pipeline = |x: &str| format!("name: c\nsteps:\n  - {{ id: s, uses: ./cmd.wasm, with: {{ x: {x} }} }}\n");
    ws.write(PIPELINE, &pipeline("a"));
    let first = run(&ws, &[]);
    ws.write(PIPELINE, &pipeline("b"));
    let second = run(&ws, &[]);
    assert!(!cached(&second, "s"), "{}", second.all());
    // The pipeline's record lists the identities the step was saved under: `a` is one.
    ws.write(PIPELINE, &pipeline("a"));
    let back = run(&ws, &[]);
    assert!(cached_from(&back, "s", &first), "{}", back.all());
    // A lost record only explains less: the store is asked, and `b`'s entry found.
    std::fs::remove_dir_all(ws.path().join(".wharf/cache/steps")).unwrap();
    ws.write(PIPELINE, &pipeline("b"));
    let without = run(&ws, &[]);
    assert!(cached_from(&without, "s", &second), "{}", without.all());
}

#[test]
fn each_decision_is_one_event_the_journal_keeps_and_the_log_says_once() {
    let ws = data_step("read-workspace", "data/a.txt");
    let events = ws.path().join("events.ndjson");
    let stream = |run: &Run| -> Vec<serde_json::Value> {
        common::validate_events(&events);
        let text = std::fs::read_to_string(&events).unwrap();
        let all: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert!(all.iter().any(|e| e["run_id"] == run.run_id().as_str()));
        all.into_iter()
            .filter(|e| e["step"] == "step" && (e["event"] == "cache" || e["event"] == "step-started"))
            .collect()
    };
    let first = run(&ws, &["--events", events.to_str().unwrap()]);
    let seen = stream(&first);
    // Why it runs, before it starts: once.
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0]["event"], "cache");
    assert_eq!(seen[0]["hit"], false);
    assert_eq!(seen[0]["detail"], "nothing is cached for it yet");
    assert_eq!(seen[1]["event"], "step-started");
    // `-v` shows it as the step's line it was.
    assert!(
        first
            .stdout()
            .contains("step │ not taken from the cache: nothing is cached for it yet"),
        "{}",
        first.all()
    );
    // The journal has it once: `wharf log` says it once, `wharf cache why` reads it.
    let log = ws.wharf(&["log", &first.run_id()]);
    assert_eq!(
        log.stdout().matches("nothing is cached for it yet").count(),
        1,
        "{}",
        log.all()
    );
    assert!(why(&ws, &first, "step").contains("nothing is cached for it yet"));

    let second = run(&ws, &["--events", events.to_str().unwrap()]);
    let seen = stream(&second);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0]["event"], "step-started");
    assert_eq!(seen[1]["event"], "cache");
    assert_eq!(seen[1]["hit"], true);
    let from = format!("cached from run {}", first.run_id());
    assert!(seen[1]["detail"].as_str().unwrap().starts_with(&from), "{seen:?}");
    assert!(
        !second.stdout().contains("not taken from the cache"),
        "{}",
        second.all()
    );
}
