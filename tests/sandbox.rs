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
        "read      .wharf/build/x86_64-unknown-linux-gnu/release/seed-service  (from `files`)",
        "source    git describe  (built-in)",
        "registry  ${{ vars.registry }}  (from `registry`, at run time)",
        "deploy    ${{ vars.service }}  (from `service`, at run time)",
        "http      ${{ steps.upgrade.outputs.url }}/api/v1/status  (from `url`, at run time)",
        "write     .wharf/nginx/upstreams.conf  (from `output`)",
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
