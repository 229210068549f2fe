//! The adversarial suite: typed and WASI command steps that try hard to get out. Each
//! attempt is contained; each test asserts the exact outcome and, for limits, that the step
//! ended within its limit plus a small margin.

mod common;
use common::{Run, Workspace, guest};
use std::io::Read;
use std::net::TcpListener;
use std::time::Duration;

fn workspace() -> Workspace {
    let ws = Workspace::new();
    std::fs::copy(guest("escape_step"), ws.path().join("escape.wasm")).unwrap();
    std::fs::copy(guest("escape-cmd"), ws.path().join("escape-cmd.wasm")).unwrap();
    ws.write("inside.txt", "workspace content");
    ws
}

/// One step, `uses` either escape step, with `attack`, `target` and extra step keys.
fn attempt(ws: &Workspace, uses: &str, attack: &str, target: &str, extra: &str) -> Run {
    ws.write(
        "attack.yml",
        &format!(
            "name: attack\nsteps:\n  - id: attack\n    uses: ./{uses}\n    with:\n      attack: \"{attack}\"\n      target: \"{target}\"\n{extra}  - id: after\n    uses: builtin:exec\n    if: always()\n    with: {{ program: 'true' }}\n"
        ),
    );
    ws.wharf(&["run", "attack.yml", "-v"])
}

fn result(run: &Run) -> String {
    run.output_of("attack", "result")
        .unwrap_or_else(|| panic!("no result:\n{}", run.all()))
}

/// The duration on a step's status line.
fn duration(run: &Run, step: &str) -> Duration {
    let line = run.step_line(step);
    let word = line.split_whitespace().nth(2).unwrap();
    if let Some(ms) = word.strip_suffix("ms") {
        Duration::from_millis(ms.parse().unwrap())
    } else if let Some(s) = word.strip_suffix('s') {
        Duration::from_secs_f64(s.parse().unwrap())
    } else {
        panic!("no duration in `{line}`")
    }
}

const BOTH: [&str; 2] = ["escape.wasm", "escape-cmd.wasm"];

#[test]
fn the_host_filesystem_is_out_of_reach() {
    let ws = workspace();
    let marker = format!("{}", std::process::id());
    for uses in BOTH {
        let run = attempt(&ws, uses, "read-passwd", "", "");
        assert_eq!(run.code(), 0, "{}", run.all());
        assert!(result(&run).starts_with("blocked:"), "{uses}: {}", result(&run));

        let run = attempt(&ws, uses, "write-outside-relative", "", "    allow: { write: [.] }\n");
        assert!(result(&run).starts_with("blocked:"), "{uses}: {}", result(&run));
        assert!(!ws.path().parent().unwrap().join("escaped.txt").exists());

        let run = attempt(
            &ws,
            uses,
            "write-outside-absolute",
            &marker,
            "    allow: { write: [.] }\n",
        );
        assert!(result(&run).starts_with("blocked:"), "{uses}: {}", result(&run));
        assert!(!std::path::Path::new(&format!("/tmp/wharf-escaped-{marker}.txt")).exists());

        // The workspace itself only as far as granted.
        let run = attempt(&ws, uses, "read-workspace", "inside.txt", "");
        assert!(result(&run).starts_with("blocked:"), "{uses}: {}", result(&run));
        let run = attempt(
            &ws,
            uses,
            "read-workspace",
            "inside.txt",
            "    allow: { read: [inside.txt] }\n",
        );
        assert_eq!(result(&run), "read: workspace content", "{uses}");
        let run = attempt(
            &ws,
            uses,
            "write-workspace",
            "out/new.txt",
            "    allow: { read: [.] }\n",
        );
        assert!(result(&run).starts_with("blocked:"), "{uses}: {}", result(&run));
        let run = attempt(
            &ws,
            uses,
            "write-workspace",
            "out/new.txt",
            "    allow: { write: [out] }\n",
        );
        assert_eq!(
            result(&run),
            "ESCAPED: wrote out/new.txt",
            "{uses}: a granted write failed"
        );
        assert!(ws.path().join("out/new.txt").exists());
        std::fs::remove_dir_all(ws.path().join("out")).unwrap();
    }
}

#[test]
fn sockets_are_denied() {
    let ws = workspace();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let target = listener.local_addr().unwrap().to_string();
    for uses in BOTH {
        let run = attempt(
            &ws,
            uses,
            "tcp",
            &target,
            "    allow: { http: [\"http://127.0.0.1:*\"] }\n",
        );
        assert_eq!(run.code(), 0, "{}", run.all());
        assert!(result(&run).starts_with("blocked:"), "{uses}: {}", result(&run));
    }
    assert!(listener.accept().is_err(), "a step opened a TCP connection");
}

/// A one-request HTTP server that counts connections.
fn http_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = std::io::Write::write_all(
                &mut stream,
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
            );
        }
    });
    (addr, hits)
}

#[test]
fn http_reaches_only_granted_hosts() {
    let ws = workspace();
    let (addr, hits) = http_server();
    let port = addr.rsplit_once(':').unwrap().1.to_string();
    for uses in BOTH {
        let url = format!("http://{addr}/");
        let denied = attempt(&ws, uses, "http", &url, "");
        assert_eq!(result(&denied), "blocked: ErrorCode::HttpRequestDenied", "{uses}");
        let log = denied.stdout();
        assert!(log.contains(&format!("may not reach http://{addr}")), "{log}");
        assert!(
            log.contains(&format!("http: [\"http://{addr}\"]")),
            "the denial must say what to grant:\n{log}"
        );

        let other_port = attempt(
            &ws,
            uses,
            "http",
            &url,
            "    allow: { http: [\"http://127.0.0.1:1\"] }\n",
        );
        assert_eq!(result(&other_port), "blocked: ErrorCode::HttpRequestDenied", "{uses}");

        let metadata = attempt(
            &ws,
            uses,
            "http",
            "http://169.254.169.254/latest/meta-data/",
            "    allow: { http: [\"http://example.com\"] }\n",
        );
        assert_eq!(result(&metadata), "blocked: ErrorCode::HttpRequestDenied", "{uses}");
        assert!(
            metadata.stdout().contains("may not reach http://169.254.169.254"),
            "{}",
            metadata.all()
        );
    }
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a denied request reached the server"
    );

    // Granted, it goes through: the check is a grant check, not a blanket refusal.
    let granted = attempt(
        &ws,
        "escape.wasm",
        "http",
        &format!("http://{addr}/"),
        &format!("    allow: {{ http: [\"http://127.0.0.1:{port}\"] }}\n"),
    );
    assert_eq!(result(&granted), format!("ESCAPED: http://{addr}/ answered 200"));

    // A granted name that resolves to loopback is not a grant of loopback.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let resolves_to_loopback = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), 80))
        .map(|mut a| a.any(|a| a.ip().is_loopback()))
        .unwrap_or(false);
    assert!(
        resolves_to_loopback,
        "this test needs the host name `{host}` to resolve to a loopback address (as /etc/hosts has it here)"
    );
    let sneaky = attempt(
        &ws,
        "escape.wasm",
        "http",
        &format!("http://{host}:{port}/"),
        &format!("    allow: {{ http: [\"http://{host}:{port}\"] }}\n"),
    );
    assert_eq!(result(&sneaky), "blocked: ErrorCode::HttpRequestDenied");
    assert!(
        sneaky.stdout().contains(&format!("`{host}` resolves to 127.")),
        "{}",
        sneaky.all()
    );
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn programs_must_be_granted() {
    let ws = workspace();
    let run = attempt(&ws, "escape.wasm", "process", "sh", "");
    assert_eq!(run.code(), 0, "{}", run.all());
    let r = result(&run);
    assert!(r.starts_with("blocked: step `attack` may not run `sh`"), "{r}");
    // Output values are shown on one line, newlines as `\n`.
    assert!(r.contains("allow:\\n    process: [sh]"), "{r}");
    let run = attempt(
        &ws,
        "escape.wasm",
        "process",
        "sh",
        "    allow: { process: [\"sh -c **\"] }\n",
    );
    assert_eq!(
        result(&run),
        "ESCAPED: ran sh: escaped",
        "a granted program did not run"
    );
}

#[test]
fn the_host_environment_is_not_inherited() {
    let ws = workspace();
    for uses in BOTH {
        ws.write(
            "env.yml",
            &format!("name: env\nsteps:\n  - id: attack\n    uses: ./{uses}\n    with: {{ attack: env, target: x }}\n"),
        );
        let run = Run(ws
            .command(&["run", "env.yml", "-v"])
            .env("SUPER_SECRET_TOKEN", "do-not-leak")
            .output()
            .unwrap());
        assert_eq!(run.code(), 0, "{}", run.all());
        let r = result(&run);
        if uses == "escape.wasm" {
            assert_eq!(r, "env: [] args: 0");
        } else {
            let names = r.trim_start_matches("env: [").split(']').next().unwrap();
            for name in names.split(',') {
                assert!(name.starts_with("WHARF_"), "{uses} sees `{name}`: {r}");
            }
            assert!(r.ends_with("args: 1"), "{r}");
        }
    }
}

#[test]
fn an_endless_loop_is_stopped_by_the_time_limit_or_fuel() {
    let ws = workspace();
    for uses in BOTH {
        let run = attempt(&ws, uses, "loop", "", "    timeout: 2s\n");
        assert_eq!(run.code(), 1, "{}", run.all());
        assert!(
            run.step_line("attack")
                .contains("timeout: did not finish within its time limit of 2s"),
            "{}",
            run.all()
        );
        // Not before its limit, and promptly after it; the slack covers a loaded CI machine.
        let took = duration(&run, "attack");
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(4),
            "{uses} took {took:?}"
        );
        assert_eq!(run.status_of("after"), "ok", "the next step did not run normally");
    }
    let run = attempt(&ws, "escape.wasm", "loop", "", "    limits: { fuel: 50000000 }\n");
    assert!(
        run.step_line("attack")
            .contains("limit: ran out of fuel (its limit is 50000000)"),
        "{}",
        run.all()
    );
    assert!(duration(&run, "attack") < Duration::from_secs(2));
}

#[test]
fn unbounded_allocation_hits_the_memory_limit() {
    let ws = workspace();
    for uses in BOTH {
        let run = attempt(
            &ws,
            uses,
            "alloc",
            "",
            "    limits: { memory: 64MiB }\n    timeout: 20s\n",
        );
        assert_eq!(run.code(), 1, "{}", run.all());
        assert!(
            run.step_line("attack")
                .contains("limit: hit its memory limit of 64 MiB"),
            "{uses}: {}",
            run.all()
        );
        assert!(duration(&run, "attack") < Duration::from_secs(5));
        assert_eq!(run.status_of("after"), "ok");
    }
}

#[test]
fn a_log_flood_hits_the_log_limit() {
    let ws = workspace();
    for uses in BOTH {
        let run = attempt(&ws, uses, "flood", "", "    limits: { log: 64KiB }\n    timeout: 20s\n");
        assert_eq!(run.code(), 1, "{}", run.all());
        assert!(
            run.step_line("attack")
                .contains("limit: wrote more than its log limit of 64 KiB"),
            "{uses}: {}",
            run.all()
        );
        assert!(duration(&run, "attack") < Duration::from_secs(5));
        let logged: usize = run
            .stdout()
            .lines()
            .filter_map(|l| l.split_once("│ ").map(|(_, message)| message))
            .filter(|m| m.contains("flooding the log"))
            .map(|m| m.len() + 1)
            .sum();
        assert!(logged <= 64 * 1024 + 4096, "{logged} bytes of flood were printed");
        assert_eq!(run.status_of("after"), "ok");
    }
}

#[test]
fn a_timed_out_step_takes_its_child_processes_with_it() {
    let ws = workspace();
    ws.write(
        "children.yml",
        "name: children\nsteps:\n  - id: spawner\n    uses: builtin:exec\n    timeout: 1s\n    with:\n      program: sh\n      args: [\"-c\", \"(sleep 2; touch child-survived) & sleep 30\"]\n",
    );
    let run = ws.wharf(&["run", "children.yml"]);
    assert_eq!(run.code(), 1, "{}", run.all());
    assert!(run.step_line("spawner").contains("time limit of 1s"), "{}", run.all());
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !ws.path().join("child-survived").exists(),
        "a child of the timed-out step kept running"
    );
}

#[test]
fn secrets_are_masked_in_logs_outputs_and_errors() {
    let ws = workspace();
    let secret = "supersecretvalue123/x";
    let run_with = |attack: &str, allow: &str| {
        ws.write(
            "secret.yml",
            &format!("name: s\nsteps:\n  - id: attack\n    uses: ./escape.wasm\n{allow}    with: {{ attack: {attack}, target: token }}\n"),
        );
        Run(ws
            .command(&["run", "secret.yml", "-v"])
            .env("WHARF_SECRET_TOKEN", secret)
            .output()
            .unwrap())
    };
    let forms = [
        secret.to_string(),
        "c3VwZXJzZWNyZXR2YWx1ZTEyMy94".to_string(),
        "supersecretvalue123%2Fx".to_string(),
    ];
    let clean = |run: &Run| {
        for form in &forms {
            assert!(!run.all().contains(form.as_str()), "`{form}` leaked:\n{}", run.all());
        }
    };
    let denied = run_with("secret-log", "");
    assert!(
        result(&denied).contains("may not use secret `token`"),
        "{}",
        denied.all()
    );
    assert!(result(&denied).contains("secrets: [token]"), "{}", denied.all());

    let allow = "    allow: { secrets: [token] }\n";
    let logged = run_with("secret-log", allow);
    assert_eq!(logged.code(), 0, "{}", logged.all());
    clean(&logged);
    assert!(
        logged.stdout().contains("raw *** base64 *** url ***"),
        "{}",
        logged.all()
    );
    assert!(logged.stdout().contains("annotation ***"), "{}", logged.all());

    let output = run_with("secret-output", allow);
    clean(&output);
    assert_eq!(output.output_of("attack", "leak").unwrap(), "***|***|***");

    // The same secret from a file, as `--secret-file NAME=PATH` gives it.
    let file = ws.path().join("token.txt");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let from_file = Run(ws
        .command(&[
            "run",
            "secret.yml",
            "-v",
            "--secret-file",
            &format!("token={}", file.display()),
        ])
        .env_remove("WHARF_SECRET_TOKEN")
        .output()
        .unwrap());
    clean(&from_file);
    assert_eq!(
        from_file.output_of("attack", "leak").unwrap(),
        "***|***|***",
        "{}",
        from_file.all()
    );

    let error = run_with("secret-error", allow);
    assert_eq!(error.code(), 1);
    clean(&error);
    assert!(
        error.step_line("attack").contains("failing with *** inside"),
        "{}",
        error.all()
    );
}

#[test]
fn components_that_do_not_fit_are_named_with_what_is_missing() {
    let ws = workspace();
    std::fs::copy(guest("alien_import"), ws.path().join("alien.wasm")).unwrap();
    std::fs::copy(guest("wrong_world"), ws.path().join("plugin.wasm")).unwrap();
    ws.write(
        "bad.yml",
        "name: bad\nsteps:\n  - id: alien\n    uses: ./alien.wasm\n  - id: plugin\n    uses: ./plugin.wasm\n",
    );
    let run = ws.wharf(&["validate", "bad.yml"]);
    assert_eq!(run.code(), 2, "{}", run.all());
    let err = run.stderr();
    assert!(
        err.contains("alien.wasm imports what wharf does not provide: acme:vault/keys"),
        "{err}"
    );
    assert!(
        err.contains("plugin.wasm is neither a typed step") && err.contains("acme:plugin/hook"),
        "{err}"
    );
    assert!(err.contains("bad.yml:4:11") && err.contains("bad.yml:6:11"), "{err}");
}

#[test]
fn validate_shows_effective_grants() {
    let ws = Workspace::seed();
    let run = ws.wharf(&["validate", "pipeline.yml", "--var", "registry=127.0.0.1:5000"]);
    assert_eq!(run.code(), 0, "{}", run.all());
    let out = run.stdout();
    for expected in [
        "process   cargo  (from `command`)",
        "read      target/x86_64-unknown-linux-gnu/release/seed-service  (from `files`)",
        "source    git describe  (built-in)",
        "registry  ${{ vars.registry }}  (from `registry`, at run time)",
        "deploy    ${{ vars.service }}  (from `service`, at run time)",
        "http      ${{ steps.upgrade.outputs.url }}/api/v1/status  (from `url`, at run time)",
        "write     nginx/upstreams.conf  (from `output`)",
    ] {
        assert!(out.contains(expected), "missing `{expected}` in:\n{out}");
    }
    let inspect = ws.wharf(&["inspect", "builtin:http-gate"]);
    assert!(
        inspect.stdout().contains("http") && inspect.stdout().contains("scoped by `url`"),
        "{}",
        inspect.all()
    );
}

#[test]
fn bad_allow_and_limits_are_reported_with_positions() {
    let ws = workspace();
    ws.write(
        "bad.yml",
        "name: bad\nlimits: { memroy: 1GiB }\nsteps:\n  - id: a\n    uses: ./escape.wasm\n    with: { attack: env }\n    allow: { htttp: [x], process: [] , read: [../up] }\n    limits: { memory: lots, fuel: -1 }\n",
    );
    let run = ws.wharf(&["validate", "bad.yml"]);
    assert_eq!(run.code(), 2, "{}", run.all());
    let err = run.stderr();
    for (message, position) in [
        ("unknown key `memroy` in `limits`", "bad.yml:2:11"),
        ("unknown grant `htttp`", "bad.yml:7:14"),
        (
            "`../up` is not a workspace path: it leaves the workspace",
            "bad.yml:7:47",
        ),
        ("`lots` is not a size", "bad.yml:8:23"),
        ("`-1` is not an amount of fuel", "bad.yml:8:35"),
    ] {
        let at = err
            .find(message)
            .unwrap_or_else(|| panic!("missing `{message}`:\n{err}"));
        assert!(
            err[at..].lines().nth(1).unwrap().ends_with(position),
            "`{message}` not at {position}:\n{err}"
        );
    }
}

#[test]
fn an_untrusted_step_cannot_choose_what_a_builtin_reaches() {
    let ws = workspace();
    let (addr, hits) = http_server();
    // The `.wasm` step's output names a URL; the built-in gate gets no grant derived from it.
    ws.write(
        "chain.yml",
        &format!(
            "name: chain\nsteps:\n  - id: untrusted\n    uses: ./cmd.wasm\n    with: {{ url: \"http://{addr}/\" }}\n  - id: gate\n    uses: builtin:http-gate\n    with: {{ url: \"${{{{ steps.untrusted.outputs.url }}}}\", deadline: 1s }}\n"
        ),
    );
    let run = ws.wharf(&["run", "chain.yml", "-v"]);
    assert_eq!(run.code(), 1, "{}", run.all());
    assert!(
        run.stdout().contains(&format!("may not reach http://{addr}")),
        "{}",
        run.all()
    );
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[test]
fn programs_may_not_be_given_a_loader_or_a_new_path() {
    let ws = workspace();
    ws.write(
        "env.yml",
        "name: env\nsteps:\n  - id: sneaky\n    uses: builtin:exec\n    with: { program: 'true', env: { LD_PRELOAD: /tmp/evil.so } }\n",
    );
    let run = ws.wharf(&["run", "env.yml"]);
    assert_eq!(run.code(), 1, "{}", run.all());
    assert!(
        run.step_line("sneaky").contains("may not set `LD_PRELOAD`"),
        "{}",
        run.all()
    );
}

#[test]
fn secrets_cannot_be_read_through_env_interpolation() {
    let ws = workspace();
    ws.write(
        "env.yml",
        "name: env\nsteps:\n  - id: a\n    uses: ./cmd.wasm\n    with: { token: \"${{ env.WHARF_SECRET_TOKEN }}\" }\n",
    );
    let run = ws.wharf(&["validate", "env.yml"]);
    assert_eq!(run.code(), 2, "{}", run.all());
    assert!(
        run.stderr().contains("would hand a secret to the step as text"),
        "{}",
        run.all()
    );
}

/// A step with a write grant plants `out/dir -> ../../ELSEWHERE`; a later `builtin:exec`
/// with that `cwd` or a program under it must not run outside the workspace.
#[test]
fn a_planted_symlink_does_not_carry_a_program_out_of_the_workspace() {
    let ws = workspace();
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::write(
        elsewhere.path().join("tool.sh"),
        "#!/bin/sh\ntouch \"$(dirname \"$0\")/ran-outside\"\n",
    )
    .unwrap();
    std::fs::set_permissions(
        elsewhere.path().join("tool.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let name = elsewhere.path().file_name().unwrap().to_str().unwrap();
    // From `WS/out/`, `../..` is the temporary directory both live in.
    let link = format!("out/dir=../../{name}");
    let pipeline = format!(
        "name: plant\nsteps:\n  - id: plant\n    uses: ./escape.wasm\n    allow: {{ write: [out] }}\n    with: {{ attack: symlink, target: \"{link}\" }}\n  - id: cwd\n    uses: builtin:exec\n    with: {{ program: touch, args: [ran-here], cwd: out/dir }}\n  - id: program\n    uses: builtin:exec\n    if: always()\n    with: {{ program: out/dir/tool.sh }}\n"
    );
    ws.write("plant.yml", &pipeline);
    let run = ws.wharf(&["run", "plant.yml", "-v"]);
    assert_eq!(run.code(), 1, "{}", run.all());
    assert_eq!(
        run.output_of("plant", "result"),
        Some(format!("planted out/dir -> ../../{name}"))
    );
    for step in ["cwd", "program"] {
        assert_eq!(run.status_of(step), "FAIL", "{}", run.all());
        assert!(run.step_line(step).contains("denied: `out/dir"), "{}", run.all());
        assert!(run.step_line(step).contains("leads outside"), "{}", run.all());
    }
    assert!(!elsewhere.path().join("ran-here").exists());
    assert!(!elsewhere.path().join("ran-outside").exists());
}

/// A granted program cannot read wharf's secrets from wharf's own environment
/// (`/proc/PID/environ`); masking is no help there, so the file it writes is checked.
/// Confined, a program sees no process but its own; unconfined (`--sandbox off`), it finds
/// wharf's environment scrubbed and the secrets file closed.
#[test]
fn granted_programs_cannot_read_secrets_from_wharfs_environment() {
    let ws = workspace();
    ws.write(
        "environ.yml",
        "name: environ\nsteps:\n  - id: peek\n    uses: builtin:exec\n    allow: { write: [out] }\n    with:\n      program: sh\n      args: [\"-c\", \"for p in /proc/[0-9]*; do tr '\\\\0' '\\\\n' < $p/environ; ls -l $p/fd; done > out/environ.txt 2>/dev/null; ls -l /proc/$PPID/fd > out/fds.txt 2>&1; true\"]\n",
    );
    for sandbox in ["auto", "off"] {
        let run = Run(ws
            .command(&["run", "environ.yml", "--sandbox", sandbox])
            .env("WHARF_SECRET_CLOUD_TOKEN", "s3cr3t-in-the-environment")
            .output()
            .unwrap());
        assert_eq!(run.code(), 0, "{}", run.all());
        let environ = std::fs::read_to_string(ws.path().join("out/environ.txt")).unwrap();
        assert!(
            environ.contains("PATH="),
            "the program did read an environment:\n{environ}"
        );
        assert!(!environ.contains("s3cr3t-in-the-environment"), "{sandbox}: {environ}");
        assert!(!environ.contains("WHARF_SECRET_"), "{sandbox}: {environ}");
        assert!(
            !environ.contains("wharf-secrets"),
            "{sandbox}: the secrets file is open:\n{environ}"
        );
        let fds = std::fs::read_to_string(ws.path().join("out/fds.txt")).unwrap();
        assert!(
            !fds.contains("wharf-secrets"),
            "{sandbox}: the secrets file is still open:\n{fds}"
        );
    }
}

/// Peak resident memory of a running process, sampled until it exits.
fn peak_rss_kib(child: &mut std::process::Child) -> u64 {
    let mut peak = 0;
    loop {
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
        if let Some(kib) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(kib);
        }
        if child.try_wait().unwrap().is_some() {
            return peak;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A program that writes one endless line (a progress bar redrawn with `\r`, or no line
/// break at all) does not grow wharf's memory with it.
#[test]
fn a_program_writing_one_endless_line_stays_in_bounded_memory() {
    let ws = workspace();
    ws.write(
        "line.yml",
        "name: line\nsteps:\n  - id: line\n    uses: builtin:exec\n    limits: { log: 1GiB }\n    with:\n      program: sh\n      args: [\"-c\", \"head -c 200000000 /dev/zero | tr '\\\\0' x; printf 'progress 1%%\\\\rprogress 50%%\\\\rprogress 100%%\\\\n'\"]\n",
    );
    let mut child = ws
        .command(&["run", "line.yml", "-v"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).unwrap();
        text
    });
    let peak = peak_rss_kib(&mut child);
    let out = reader.join().unwrap();
    assert!(
        child.wait().unwrap().success(),
        "{}",
        &out[out.len().saturating_sub(2000)..]
    );
    // Without bounds this 200 MB line alone would take 200 MB and more.
    assert!(peak < 100 * 1024, "wharf's peak memory was {peak} KiB");
    assert!(out.contains("│ progress 100%"), "the redrawn line shows its last state");
    assert!(!out.contains("│ progress 50%"), "a redrawn line is not logged again");
    eprintln!("peak memory of wharf: {peak} KiB");
}

/// A WASI command's output file is checked by size before it is read.
#[test]
fn an_output_file_over_the_limit_is_refused_unread() {
    let ws = workspace();
    ws.write(
        "out.yml",
        "name: out\nsteps:\n  - id: attack\n    uses: ./escape-cmd.wasm\n    limits: { output: 64KiB, disk: 64MiB }\n    with: { attack: fill, target: \"/run/wharf/output=20\" }\n",
    );
    let run = ws.wharf(&["run", "out.yml"]);
    assert_eq!(run.code(), 1, "{}", run.all());
    assert!(
        run.step_line("attack").contains("limit: wrote 2097")
            && run
                .step_line("attack")
                .contains("bytes to WHARF_OUTPUT, over its output limit of 64 KiB"),
        "{}",
        run.all()
    );
}

/// What a step may write (through a grant, or a WASI command into its scratch directory) is
/// bounded by its disk limit; the step fails naming it, and its scratch space is gone
/// afterwards.
#[test]
fn writes_are_bounded_by_the_disk_limit() {
    let ws = workspace();
    let run_fill = |uses: &str, target: &str, limit: &str| {
        ws.write(
            "fill.yml",
            &format!(
                "name: fill\nsteps:\n  - id: attack\n    uses: ./{uses}\n    allow: {{ write: [out] }}\n    limits: {{ disk: {limit} }}\n    with: {{ attack: fill, target: \"{target}\" }}\n"
            ),
        );
        ws.wharf(&["run", "fill.yml", "-v"])
    };
    for (uses, target) in [
        ("escape.wasm", "out/big=64"),
        ("escape-cmd.wasm", "out/big=64"),
        ("escape-cmd.wasm", "/run/wharf/junk=64"),
    ] {
        let run = run_fill(uses, target, "16MiB");
        assert_eq!(run.code(), 1, "{uses} {target}: {}", run.all());
        assert!(
            run.step_line("attack")
                .contains("wrote more than its disk limit of 16 MiB"),
            "{uses} {target}: {}",
            run.all()
        );
        assert!(
            run.step_line("attack").contains("limits: { disk: ... }"),
            "{}",
            run.all()
        );
        let written = std::fs::metadata(ws.path().join("out/big")).map_or(0, |m| m.len());
        assert!(written <= 16 << 20, "{uses}: {written} bytes reached the disk");
        let _ = std::fs::remove_file(ws.path().join("out/big"));
    }
    // Within the limit, the write goes through.
    let run = run_fill("escape-cmd.wasm", "out/big=4", "16MiB");
    assert_eq!(run.code(), 0, "{}", run.all());
    assert_eq!(std::fs::metadata(ws.path().join("out/big")).unwrap().len(), 4 << 20);
    // Scratch space is the run's own and does not outlive it.
    let left = std::fs::read_dir(ws.path().join(".wharf/scratch")).map_or(0, |d| d.count());
    assert_eq!(left, 0, "a run's scratch space outlived it");
}

/// A killed run's scratch space is swept by the next run.
#[test]
fn a_killed_runs_scratch_space_is_swept_at_the_next_start() {
    let ws = workspace();
    ws.write(
        "wait.yml",
        "name: wait\nsteps:\n  - id: attack\n    uses: ./escape-cmd.wasm\n    with: { attack: fill-and-wait, target: \"/run/wharf/junk=8\" }\n",
    );
    let mut child = ws
        .command(&["run", "wait.yml"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let scratch = ws.path().join(".wharf/scratch");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let junk = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the step never wrote its scratch file"
        );
        let found = std::fs::read_dir(&scratch)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("step-1/junk"))
            .find(|j| std::fs::metadata(j).is_ok_and(|m| m.len() == 8 << 20));
        if let Some(j) = found {
            break j;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(junk.exists(), "a killed run leaves its scratch behind");
    assert!(
        junk.starts_with(ws.path()),
        "scratch space lives in the workspace's .wharf"
    );
    ws.write("next.yml", "name: next\nsteps:\n  - id: a\n    uses: ./probe.wasm\n");
    let next = ws.wharf(&["run", "next.yml"]);
    assert_eq!(next.code(), 0, "{}", next.all());
    assert!(
        !junk.parent().unwrap().parent().unwrap().exists(),
        "the next run swept it"
    );
}

/// Step directories are reused along a run: the next step finds nothing a step left in
/// `/run/wharf`, and emptying one follows nothing a step planted there. A step that turns its
/// output file into a symlink to a workspace file (it cannot write through the link itself)
/// must not get wharf to truncate that file for it.
#[test]
fn a_reused_step_directory_keeps_nothing_and_follows_nothing() {
    let ws = workspace();
    ws.write("victim.txt", "precious");
    ws.write(
        "plant.yml",
        r#"name: plant
steps:
  - id: plant
    uses: ./escape-cmd.wasm
    with: { attack: symlink, target: "/run/wharf/output=../../../../../victim.txt" }
  - id: junk
    if: always()
    uses: ./escape-cmd.wasm
    with: { attack: fill, target: "/run/wharf/junk=1" }
  - id: after
    if: always()
    uses: ./escape-cmd.wasm
    with: { attack: read-workspace, target: /run/wharf/junk }
  - id: output
    if: always()
    uses: ./escape-cmd.wasm
    with: { attack: read-workspace, target: /run/wharf/output }
"#,
    );
    let run = ws.wharf(&["run", "plant.yml", "-v"]);
    assert!(run.step_line("plant").trim_start().starts_with("FAIL"), "{}", run.all());
    let log = ws.wharf(&["log", &run.run_id(), "--step", "plant"]);
    assert!(
        log.stdout().contains("planted /run/wharf/output"),
        "the link was planted: {}",
        log.all()
    );
    assert_eq!(
        std::fs::read_to_string(ws.path().join("victim.txt")).unwrap(),
        "precious"
    );
    assert!(
        run.output_of("after", "result")
            .is_some_and(|r| r.starts_with("blocked")),
        "{}",
        run.all()
    );
    assert_eq!(
        run.output_of("output", "result").as_deref(),
        Some("read:"),
        "{}",
        run.all()
    );
}

/// A run keeps what a step looked at in the workspace, not what its grants could reach: one
/// file read among twelve thousand is one entry. A snapshot is bounded by entries and
/// archive size: listing the twelve thousand stops it at the limit, and the run says so.
#[test]
fn snapshots_keep_what_a_step_looked_at_within_their_bounds() {
    let ws = workspace();
    std::fs::create_dir_all(ws.path().join("data")).unwrap();
    for n in 0..12_000 {
        std::fs::write(ws.path().join(format!("data/f{n}")), "").unwrap();
    }
    ws.write("data/f1", "the one file read");
    ws.write(
        "snap.yml",
        "name: snap\nsteps:\n  - id: read\n    uses: ./escape.wasm\n    allow: { read: [data] }\n    with: { attack: read-workspace, target: data/f1 }\n  - id: list\n    uses: ./escape.wasm\n    allow: { read: [data] }\n    with: { attack: list-workspace, target: data }\n",
    );
    let run = ws.wharf(&["run", "snap.yml", "-v"]);
    assert_eq!(run.code(), 0, "{}", run.all());
    assert!(run.stdout().contains("listed: 12000 entries"), "{}", run.all());
    let id = run.run_id();
    let folder = ws.path().join(".wharf/runs").join(&id);
    let read = std::fs::read(folder.join("snapshots/read-1.tar")).unwrap();
    let names: Vec<String> = tar::Archive::new(&read[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["data/f1"], "the snapshot of a step that read one file");
    assert!(read.len() < 4096, "{} bytes", read.len());
    let journal = std::fs::read_to_string(folder.join("journal.jsonl")).unwrap();
    assert!(
        journal.contains(
            "step `list` (attempt 1): the snapshot of the workspace paths it looked at is full (more than 10000 entries"
        ),
        "{journal}"
    );
    let listed = std::fs::metadata(folder.join("snapshots/list-1.tar")).unwrap().len();
    assert!(listed <= 10_000 * 512 + 2048, "{listed} bytes");
    // Both replay: the first as recorded, the second from what its snapshot kept, which a
    // listing shows as fewer files (the replay says where it left the recorded path).
    let replay = ws.wharf(&["replay", &id]);
    assert!(
        replay.stdout().contains("step `list`") && !replay.stdout().contains("step `read`"),
        "{}",
        replay.all()
    );
}

/// Output names are identifiers, and a secret used as one is masked like a value.
#[test]
fn output_keys_are_identifiers_and_are_masked() {
    let ws = workspace();
    let secret = "SECRETVALUE42";
    ws.write(
        "keys.yml",
        "name: keys\nsteps:\n  - id: attack\n    uses: ./escape.wasm\n    allow: { secrets: [token] }\n    with: { attack: secret-key, target: token }\n",
    );
    let run = Run(ws
        .command(&["run", "keys.yml", "-v"])
        .env("WHARF_SECRET_TOKEN", secret)
        .output()
        .unwrap());
    assert_eq!(run.code(), 0, "{}", run.all());
    assert!(!run.all().contains(secret), "{}", run.all());
    assert!(run.stdout().contains("→ ***=keyed"), "{}", run.all());
    let journal =
        std::fs::read_to_string(ws.path().join(".wharf/runs").join(run.run_id()).join("journal.jsonl")).unwrap();
    assert!(!journal.contains(secret));

    ws.write(
        "names.yml",
        "name: names\nsteps:\n  - id: attack\n    uses: ./escape-cmd.wasm\n    with: { attack: raw-output, target: \"fine=1\\\\n\\e[2K bad name!=2\\\\n\" }\n",
    );
    let run = ws.wharf(&["run", "names.yml"]);
    assert_eq!(run.code(), 1, "{}", run.all());
    assert!(
        run.step_line("attack")
            .contains("returned an output named `\\x1b[2K bad name!`; output names are identifiers"),
        "{}",
        run.all()
    );
}

/// Every line of a multi-line secret is masked where output is split into lines, and a
/// secret that straddles the point where an endless line is cut is masked too.
#[test]
fn multi_line_secrets_and_secrets_across_a_cut_are_masked() {
    let ws = workspace();
    let key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\nVJTUt9Us8cKjMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuict\n-----END PRIVATE KEY-----\n";
    std::fs::write(ws.path().join("key.pem"), key).unwrap();
    std::fs::write(ws.path().join("token.txt"), "straddling-secret-token\n").unwrap();
    ws.write(
        "multi.yml",
        "name: multi\nsteps:\n  - id: print\n    uses: builtin:exec\n    allow: { read: [key.pem, token.txt] }\n    with:\n      program: sh\n      args: [\"-c\", \"cat key.pem; printf '%065530d' 0; cat token.txt\"]\n",
    );
    let run = ws.wharf(&[
        "run",
        "multi.yml",
        "-v",
        "--secret-file",
        &format!("key={}", ws.path().join("key.pem").display()),
        "--secret-file",
        &format!("token={}", ws.path().join("token.txt").display()),
    ]);
    assert_eq!(run.code(), 0, "{}", run.all());
    let journal =
        std::fs::read_to_string(ws.path().join(".wharf/runs").join(run.run_id()).join("journal.jsonl")).unwrap();
    for leak in [
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7",
        "VJTUt9Us8cKjMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuict",
        "straddling",
        "secret-token",
    ] {
        assert!(!run.all().contains(leak), "`{leak}` on the console:\n{}", run.all());
        assert!(!journal.contains(leak), "`{leak}` in the journal");
    }
}

/// Escape sequences in a step's output are shown, not obeyed: a step cannot draw a status
/// line of its own or recolour the terminal.
#[test]
fn control_characters_in_step_output_are_neutralised() {
    let ws = workspace();
    ws.write(
        "ansi.yml",
        "name: ansi\nsteps:\n  - id: fake\n    uses: builtin:exec\n    with:\n      program: printf\n      args: [\"\\\\033[2K\\\\r  ok   deploy      1ms\\\\033[31m\\\\n\"]\n",
    );
    let run = ws.wharf(&["run", "ansi.yml", "-v"]);
    assert_eq!(run.code(), 0, "{}", run.all());
    assert!(!run.stdout().contains('\x1b'), "{:?}", run.stdout());
    assert!(run.stdout().contains("\\x1b[2K"), "{}", run.stdout());
    assert!(
        !run.stdout().lines().any(|l| l.trim_start().starts_with("ok   deploy")),
        "{}",
        run.stdout()
    );
}

/// Programs die with wharf even when it is killed outright, as a CI runner cancelling a job
/// does; their children go too. A confined program lives in process-id namespaces of its
/// own, so the test finds them on the host by a marker in their command lines.
#[test]
fn programs_die_with_a_killed_wharf() {
    for sandbox in ["auto", "off"] {
        let ws = workspace();
        let marker = format!(
            "{}{}",
            3000 + (std::process::id() % 997),
            if sandbox == "off" { 1 } else { 2 }
        );
        ws.write(
            "orphans.yml",
            &format!("name: orphans\nsteps:\n  - id: spawn\n    uses: builtin:exec\n    allow: {{ write: [started] }}\n    with:\n      program: sh\n      args: [\"-c\", \"sleep {marker} & echo > started; wait\", \"orphan-{marker}\"]\n"),
        );
        let mut child = ws
            .command(&["run", "orphans.yml", "--sandbox", sandbox])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while !ws.path().join("started").exists() {
            assert!(std::time::Instant::now() < deadline, "the program never started");
            std::thread::sleep(Duration::from_millis(50));
        }
        let marked = || -> Vec<i32> {
            std::fs::read_dir("/proc")
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .filter(|pid| {
                    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                        !s.rsplit_once(')')
                            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
                    });
                    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    alive && String::from_utf8_lossy(&cmdline).contains(&marker)
                })
                .collect()
        };
        let found = loop {
            let found = marked();
            if found.len() >= 2 || std::time::Instant::now() > deadline {
                break found;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(found.len(), 2, "{sandbox}: the shell and its sleep: {found:?}");
        child.kill().unwrap();
        child.wait().unwrap();
        let gone = std::time::Instant::now() + Duration::from_secs(5);
        while !marked().is_empty() && std::time::Instant::now() < gone {
            std::thread::sleep(Duration::from_millis(50));
        }
        let survivors = marked();
        for pid in &survivors {
            // SAFETY: signalling a process has no memory-safety preconditions.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        assert!(
            survivors.is_empty(),
            "{sandbox}: {survivors:?} outlived the killed wharf"
        );
    }
}

/// `wharf run --audit`, for a step someone else wrote: what the grants refuse to files,
/// programs and HTTP is let through and noted; secrets, deploys and the metadata service
/// stay refused; the journal says it was an audit, and `wharf grants RUN` prints each step's
/// smallest `allow:`, which, pasted in, lets the pipeline run for real.
#[test]
fn an_audit_run_notes_what_steps_need_and_grants_prints_it() {
    let ws = workspace();
    let (addr, hits) = http_server();
    let steps = format!(
        r#"  - id: fetch
    uses: ./escape.wasm
    with: {{ attack: http, target: "http://{addr}/" }}
  - id: shell
    uses: ./escape.wasm
    with: {{ attack: process, target: sh }}
  - id: write
    uses: ./escape-cmd.wasm
    with: {{ attack: write-workspace, target: out/result.txt }}
  - id: secret
    uses: ./escape.wasm
    with: {{ attack: secret-log, target: token }}
  - id: deploy
    uses: ./escape.wasm
    with: {{ attack: deploy, target: seed }}
    allow: {{ deploy: [seed] }}
  - id: metadata
    uses: ./escape.wasm
    with: {{ attack: http, target: "http://169.254.169.254/latest/meta-data/" }}
"#
    );
    ws.write("adopt.yml", &format!("name: adopt\nsteps:\n{steps}"));
    std::fs::create_dir(ws.path().join("out")).unwrap();
    let results = |run: &Run| -> Vec<String> {
        ["fetch", "shell", "write", "secret", "deploy", "metadata"]
            .iter()
            .map(|id| {
                run.output_of(id, "result")
                    .unwrap_or_else(|| panic!("{id}: {}", run.all()))
            })
            .collect()
    };
    let audit = Run(ws
        .command(&["run", "adopt.yml", "-v", "--audit"])
        .env("WHARF_SECRET_TOKEN", "hunter2")
        .output()
        .unwrap());
    assert_eq!(audit.code(), 0, "{}", audit.all());
    let got = results(&audit);
    assert!(got[0].starts_with("ESCAPED"), "http let through: {}", got[0]);
    assert!(got[1].starts_with("ESCAPED: ran sh"), "process let through: {}", got[1]);
    assert!(got[2].starts_with("ESCAPED: wrote"), "write let through: {}", got[2]);
    assert!(ws.path().join("out/result.txt").exists());
    assert!(
        got[3].contains("may not use secret `token`"),
        "secrets stay refused: {}",
        got[3]
    );
    assert!(
        got[4].contains("may not change or read service `seed`"),
        "an audit never deploys: {}",
        got[4]
    );
    assert_eq!(
        got[5], "blocked: ErrorCode::HttpRequestDenied",
        "nor reaches the metadata service"
    );
    assert!(!audit.stdout().contains("hunter2"));
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(audit.stdout().contains("audit run:"), "{}", audit.all());

    let run_id = audit.run_id();
    let journal = std::fs::read_to_string(ws.path().join(".wharf/runs").join(&run_id).join("journal.jsonl")).unwrap();
    assert!(journal.contains(r#""audit":true"#), "the journal marks the audit");
    let grants = ws.wharf(&["grants", &run_id]);
    assert_eq!(grants.code(), 0, "{}", grants.all());
    let text = grants.stdout();
    for (step, line) in [
        ("fetch", format!("http: [\"http://{addr}\"]")),
        ("shell", "process: [sh]".to_string()),
        ("write", "write: [out/result.txt]".to_string()),
    ] {
        let section = text.split(&format!("\n  {step}: ")).nth(1).unwrap_or_default();
        let section = section.split("\n\n").next().unwrap_or_default();
        assert!(section.contains(&line), "{step} needs {line}:\n{text}");
    }
    for step in ["secret", "deploy", "metadata"] {
        assert!(text.contains(&format!("  {step}: nothing more")), "{step}:\n{text}");
    }
    let plain = ws.wharf(&["run", "adopt.yml"]);
    let not_audit = ws.wharf(&["grants", &plain.run_id()]);
    assert_eq!(not_audit.code(), 2, "{}", not_audit.all());
    assert!(not_audit.stderr().contains("not an audit run"), "{}", not_audit.all());

    // The blocks, pasted in, are what the steps need: the run passes without an audit.
    std::fs::remove_file(ws.path().join("out/result.txt")).unwrap();
    let granted = steps
        .replace(
            "    with: { attack: process, target: sh }\n",
            "    with: { attack: process, target: sh }\n    allow:\n      process: [sh]\n",
        )
        .replace(
            &format!("    with: {{ attack: http, target: \"http://{addr}/\" }}\n"),
            &format!("    with: {{ attack: http, target: \"http://{addr}/\" }}\n    allow:\n      http: [\"http://{addr}\"]\n"),
        )
        .replace(
            "    with: { attack: write-workspace, target: out/result.txt }\n",
            "    with: { attack: write-workspace, target: out/result.txt }\n    allow:\n      write: [out/result.txt]\n",
        );
    ws.write("granted.yml", &format!("name: adopt\nsteps:\n{granted}"));
    let real = ws.wharf(&["run", "granted.yml", "-v"]);
    assert_eq!(real.code(), 0, "{}", real.all());
    let got = results(&real);
    assert!(got[..3].iter().all(|r| r.starts_with("ESCAPED")), "{got:?}");
    assert!(
        !got[4].contains("may not"),
        "outside an audit the deploy grant holds: {}",
        got[4]
    );
}

/// wharf's own state (`.wharf/`: runs, deploy state, locks) is no step's to open or change:
/// no grant may name it, a grant of the whole workspace does not reach it (not through a
/// link planted in the workspace either), and an audit neither lets a step in nor suggests
/// a grant for it. Writing `.git/` is allowed with a warning.
#[test]
fn wharfs_own_state_is_no_steps_to_open_or_change_whatever_its_grants() {
    let ws = workspace();
    let state = ws.path().join(".wharf/state/services");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("seed.json"), "{}").unwrap();
    std::fs::create_dir_all(ws.path().join(".git/hooks")).unwrap();

    // Validation refuses a grant into it, where it is written.
    for (grant, column) in [("write: [.wharf/state]", 22), ("read: [.wharf]", 21)] {
        ws.write(
            "grant.yml",
            &format!("name: g\nsteps:\n  - id: a\n    uses: ./escape.wasm\n    with: {{ attack: env }}\n    allow: {{ {grant} }}\n"),
        );
        let run = ws.wharf(&["validate", "grant.yml"]);
        assert_eq!(run.code(), 2, "{grant}: {}", run.all());
        assert!(
            run.stderr().contains("holds wharf's own state") && run.stderr().contains(&format!("grant.yml:6:{column}")),
            "{grant}: {}",
            run.all()
        );
    }
    // ... and a built-in's path parameter that names it.
    ws.write(
        "derived.yml",
        "name: d\nsteps:\n  - id: t\n    uses: builtin:exec\n    with: { program: \"true\", junit: .wharf/state/services/seed.json }\n",
    );
    let run = ws.wharf(&["validate", "derived.yml"]);
    assert_eq!(run.code(), 2, "{}", run.all());
    assert!(run.stderr().contains("derived.yml:5:37"), "{}", run.all());
    // Writing `.git/` is valid, with a warning that says why it matters.
    ws.write(
        "git.yml",
        "name: g\nsteps:\n  - id: hooks\n    uses: ./escape.wasm\n    with: { attack: env }\n    allow: { write: [.git/hooks] }\n",
    );
    let run = ws.wharf(&["validate", "git.yml"]);
    assert_eq!(run.code(), 0, "{}", run.all());
    assert!(
        run.stderr().contains("warning: step `hooks` may write `.git/hooks`"),
        "{}",
        run.all()
    );

    // `write: [.]` holds `.wharf/`, and still cannot reach it, directly or through a link.
    let whole = "    allow: { write: [.] }\n";
    for uses in BOTH {
        let run = attempt(&ws, uses, "write-workspace", ".wharf/state/services/seed.json", whole);
        assert!(result(&run).starts_with("blocked:"), "{uses}: {}", result(&run));
        assert!(
            run.stdout().contains("is in `.wharf/`, wharf's own state"),
            "{}",
            run.all()
        );
        let run = attempt(&ws, uses, "symlink", "innocent=.wharf/state/services", whole);
        assert!(result(&run).starts_with("planted"), "{uses}: {}", result(&run));
        let run = attempt(&ws, uses, "write-workspace", "innocent/seed.json", whole);
        assert!(result(&run).starts_with("blocked:"), "{uses}: {}", result(&run));
        let run = attempt(&ws, uses, "read-workspace", "innocent/seed.json", whole);
        assert!(result(&run).starts_with("blocked:"), "{uses}: {}", result(&run));
        std::fs::remove_file(ws.path().join("innocent")).unwrap();
        assert_eq!(std::fs::read_to_string(state.join("seed.json")).unwrap(), "{}");
    }

    // An audit opens the whole workspace: still not `.wharf/`, and an absolute path (which
    // resolves in the workspace) is not turned into a grant of a workspace path.
    ws.write(
        "adopt.yml",
        "name: adopt\nsteps:\n  - id: peek\n    uses: ./escape.wasm\n    with: { attack: read-passwd }\n  - id: scribble\n    uses: ./escape.wasm\n    with: { attack: write-workspace, target: .wharf/state/services/seed.json }\n",
    );
    let audit = ws.wharf(&["run", "adopt.yml", "-v", "--audit"]);
    assert_eq!(audit.code(), 0, "{}", audit.all());
    assert!(
        audit.output_of("scribble", "result").unwrap().starts_with("blocked:"),
        "{}",
        audit.all()
    );
    assert_eq!(std::fs::read_to_string(state.join("seed.json")).unwrap(), "{}");
    let grants = ws.wharf(&["grants", &audit.run_id()]);
    assert_eq!(grants.code(), 0, "{}", grants.all());
    let out = grants.stdout();
    assert!(!out.contains("etc/passwd]") && !out.contains(".wharf"), "{out}");
    assert!(
        out.contains("it looked for what the workspace does not hold") && out.contains("etc/passwd"),
        "{out}"
    );
}

/// Empty writes cost the host nothing it keeps: a hundred thousand empty chunks to stdout
/// and to a file leave wharf's peak memory where one chunk leaves it. wasmtime 48.0.9 fixed
/// unbounded host memory through empty writes to component-model async streams; wharf does
/// not enable those (no `component-model-async`), and this test, which passes on 48.0.8 as
/// on 48.0.10, guards the WASI output streams steps do use against the same attack.
#[test]
fn empty_writes_to_streams_leave_wharfs_memory_where_it_was() {
    let ws = workspace();
    let peak = |n: u64| {
        ws.write(
            "empty.yml",
            &format!(
                "name: empty\nsteps:\n  - id: attack\n    uses: ./escape-cmd.wasm\n    allow: {{ write: [out] }}\n    timeout: 120s\n    with: {{ attack: empty-writes, target: \"{n}\" }}\n"
            ),
        );
        let (code, peak) = common::peak_memory(ws.command(&["run", "empty.yml", "--no-cache"]));
        assert_eq!(code, 0, "{}", ws.wharf(&["run", "empty.yml", "--no-cache"]).all());
        peak
    };
    let one = peak(1);
    let many = peak(100_000);
    let run = ws.wharf(&["run", "empty.yml", "--no-cache", "-v"]);
    assert_eq!(
        result(&run),
        "wrote 100000 empty chunks to stdout and a file",
        "{}",
        run.all()
    );
    assert!(
        many < one + (8 << 20),
        "peak memory: {} MiB after one empty chunk, {} MiB after a hundred thousand",
        one >> 20,
        many >> 20
    );
    eprintln!("peak memory: {} KiB for one, {} KiB for 100000", one >> 10, many >> 10);
}
