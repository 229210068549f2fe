//! Programs a step runs, attacking the host: each attack goes through the three ways a step
//! starts a program (`builtin:exec`, `builtin:build`'s command, a typed step's
//! `process.run`) and is held by the kernel to the step's grants. The same attacks with
//! `--sandbox off` get through, which is what wharf did before programs were confined; and
//! kernels that allow less (no namespaces, no Landlock) are simulated by starting wharf
//! under a seccomp filter that refuses those system calls, as a container's profile does.

mod common;
use common::{Run, Workspace, guest};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// What the host holds that no step was granted: a secret file and a unix socket in another
/// directory of `/tmp`, and two loopback TCP servers (one a step may reach, one it may not).
struct Host {
    other: tempfile::TempDir,
    socket: std::os::unix::net::UnixListener,
    granted: u16,
    refused: u16,
    refused_accepts: Arc<AtomicUsize>,
}

impl Host {
    fn new() -> Host {
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("secret.txt"), "host secret").unwrap();
        let socket = std::os::unix::net::UnixListener::bind(other.path().join("host.sock")).unwrap();
        socket.set_nonblocking(true).unwrap();
        let (granted, _) = http_server();
        let (refused, refused_accepts) = http_server();
        Host {
            other,
            socket,
            granted,
            refused,
            refused_accepts,
        }
    }

    fn other(&self) -> &Path {
        self.other.path()
    }

    /// Whether anything connected to the unix socket.
    fn socket_reached(&self) -> bool {
        self.socket.accept().is_ok()
    }
}

/// A loopback HTTP server answering `reached`; its port and how many connections it took.
fn http_server() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            counted.fetch_add(1, Ordering::SeqCst);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buffer = [0u8; 4096];
            let _ = stream.read(&mut buffer);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nreached");
        }
    });
    (port, count)
}

/// Every attack, as `ROUTE.NAME=ESCAPED` or `ROUTE.NAME=held` lines; `granted` says
/// `reached` or `refused` for the granted server.
fn script(route: &str, host: &Host, marker: &str) -> String {
    let other = host.other().display();
    format!(
        r#"v() {{ if ( eval "$2" ) >/dev/null 2>&1; then echo "{route}.$1=ESCAPED"; else echo "{route}.$1=held"; fi; }}
while [ ! -s wharf.pid ]; do sleep 0.05; done
wharf=$(cat wharf.pid)
v shadow 'cat /etc/shadow'
v other-tmp 'cat {other}/secret.txt'
v write-outside 'echo x > {other}/written-{route}; cat {other}/written-{route}'
v write-state 'echo x > .wharf/planted-{route}; cat .wharf/planted-{route}'
v symlink 'cat planted-link'
v proc-root 'cat /proc/self/root{other}/secret.txt'
v proc-cwd 'for p in /proc/[0-9]*; do cat $p/cwd/.wharf/runs/*/journal.jsonl && exit 0; done; exit 1'
v tcp 'bash -c "echo > /dev/tcp/127.0.0.1/{refused}"'
v unix-socket 'python3 -c "import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])" {other}/host.sock'
v docker-socket 'python3 -c "import socket; socket.socket(socket.AF_UNIX).connect(\"/var/run/docker.sock\")"'
v signal 'kill -0 $wharf'
# PTRACE_SEIZE: attaching without stopping wharf.
v ptrace 'python3 -c "import ctypes, sys; sys.exit(ctypes.CDLL(None).ptrace(0x4206, int(sys.argv[1]), 0, 0) != 0)" $wharf'
if curl -sf --max-time 10 http://127.0.0.1:{granted}/ | grep -q reached; then echo "{route}.granted=reached"; else echo "{route}.granted=refused"; fi
# Detached for certain before the step ends: the step's end must be what stops it.
started="${{TMPDIR:-/tmp}}/detached-{route}-{marker}"
setsid sh -c 'touch "$0"; exec sleep {marker}' "$started" </dev/null >/dev/null 2>&1 &
n=0; while [ ! -e "$started" ] && [ $n -lt 500 ]; do sleep 0.01; n=$((n+1)); done
echo "{route}.done=held"
"#,
        granted = host.granted,
        refused = host.refused,
    )
}

/// The attacks a step with no grants makes on its own workspace and the network.
fn script_ungranted(route: &str, host: &Host) -> String {
    format!(
        r#"v() {{ if ( eval "$2" ) >/dev/null 2>&1; then echo "{route}.$1=ESCAPED"; else echo "{route}.$1=held"; fi; }}
v read-ungranted 'cat inside.txt'
v write-ungranted 'echo x > new-{route}.txt; cat new-{route}.txt'
v tcp-ungranted 'bash -c "echo > /dev/tcp/127.0.0.1/{granted}"'
"#,
        granted = host.granted,
    )
}

/// A YAML block scalar of `text`, indented by `indent` spaces.
fn block(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut out = String::from("|\n");
    for line in text.lines() {
        out.push_str(&pad);
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A step running `sh -c SCRIPT` through `route`, with `allow`.
fn step(route: &str, id: &str, allow: &str, script: &str) -> String {
    match route {
        "exec" => format!(
            "  - id: {id}\n    uses: builtin:exec\n    if: always()\n    allow: {allow}\n    with:\n      program: sh\n      args:\n        - -c\n        - {}",
            block(script, 10)
        ),
        // The build stops after its command: the attacks are what is looked at.
        "build" => format!(
            "  - id: {id}\n    uses: builtin:build\n    if: always()\n    allow: {allow}\n    with:\n      repository: attack\n      tag: \"1\"\n      command: sh\n      args:\n        - -c\n        - {}",
            block(&format!("{script}exit 3\n"), 10)
        ),
        "typed" => format!(
            "  - id: {id}\n    uses: ./escape.wasm\n    if: always()\n    allow: {}\n    with:\n      attack: shell\n      target: {}",
            allow.replacen('{', "{ process: [sh], ", 1).replace(", }", " }"),
            block(script, 8)
        ),
        _ => unreachable!(),
    }
}

const ROUTES: [&str; 3] = ["exec", "build", "typed"];

fn pipeline(host: &Host, marker: &str) -> String {
    let mut text = String::from("name: attack\nsteps:\n");
    for route in ROUTES {
        let allow = format!("{{ write: [.], http: [\"http://127.0.0.1:{}\"] }}", host.granted);
        text.push_str(&step(
            route,
            &format!("{route}-granted"),
            &allow,
            &script(route, host, marker),
        ));
        text.push_str(&step(
            route,
            &format!("{route}-ungranted"),
            "{ }",
            &script_ungranted(&format!("{route}-none"), host),
        ));
    }
    text
}

/// A workspace with the escape step, a file, and a link planted to the host's secret.
fn workspace(host: &Host) -> Workspace {
    let ws = Workspace::new();
    std::fs::copy(guest("escape_step"), ws.path().join("escape.wasm")).unwrap();
    ws.write("inside.txt", "workspace content");
    std::os::unix::fs::symlink(host.other().join("secret.txt"), ws.path().join("planted-link")).unwrap();
    ws
}

/// Run the attack pipeline with `args`, telling the programs wharf's pid; the verdicts
/// from the run's log, by `ROUTE.ATTACK`.
fn attack(
    ws: &Workspace,
    host: &Host,
    args: &[&str],
    setup: impl FnOnce(&mut Command),
) -> (Run, BTreeMap<String, String>) {
    let marker = marker();
    ws.write("attack.yml", &pipeline(host, &marker));
    let _ = std::fs::remove_file(ws.path().join("wharf.pid"));
    let mut all = vec!["run", "attack.yml", "-v"];
    all.extend_from_slice(args);
    let mut command = ws.command(&all);
    setup(&mut command);
    let child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    std::fs::write(ws.path().join("wharf.pid"), child.id().to_string()).unwrap();
    let run = Run(child.wait_with_output().unwrap());
    let log = match run.stdout().lines().any(|l| l.starts_with("wharf run ")) {
        true => ws.wharf(&["log", &run.run_id()]).stdout(),
        false => String::new(),
    };
    let survivors = end_marked(&marker);
    // The mark a detached process left where a run without a private temporary directory
    // (`--sandbox off`, level none) put it: the host's.
    for route in ROUTES {
        for tmp in [std::env::temp_dir(), "/tmp".into()] {
            let _ = std::fs::remove_file(tmp.join(format!("detached-{route}-{marker}")));
        }
    }
    let verdict = regex::Regex::new(r"\b([a-z]+(?:-none)?)\.([a-z-]+)=(ESCAPED|held|reached|refused)").unwrap();
    let mut verdicts = BTreeMap::new();
    for found in verdict.captures_iter(&log) {
        verdicts.insert(format!("{}.{}", &found[1], &found[2]), found[3].to_string());
    }
    for route in ROUTES {
        if verdicts.contains_key(&format!("{route}.done")) {
            let outlived = if survivors.is_empty() { "held" } else { "ESCAPED" };
            verdicts.insert(format!("{route}.outlives-the-step"), outlived.into());
        }
    }
    (run, verdicts)
}

/// A `sleep` duration no other test uses: how a daemonised process is found on the host.
fn marker() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}.{}",
        7000 + std::process::id() % 1000,
        100 + NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

/// Processes still running `sleep MARKER` (or starting it) a moment after the run: killed,
/// and returned.
fn end_marked(marker: &str) -> Vec<i32> {
    let marked = || -> Vec<i32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z')));
                // `sleep MARKER`, or the shell that is about to become it.
                !zombie && cmdline.windows(marker.len()).any(|w| w == marker.as_bytes())
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    while !marked().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let survivors = marked();
    for pid in &survivors {
        // SAFETY: signalling a process has no memory-safety preconditions.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    survivors
}

/// Attacks held in every route, and the granted server reached.
fn assert_held(verdicts: &BTreeMap<String, String>, attacks: &[&str], context: &str) {
    for route in ROUTES {
        for name in attacks {
            let key = format!("{route}.{name}");
            assert_eq!(
                verdicts.get(&key).map(String::as_str),
                Some("held"),
                "{context}: {key}\n{verdicts:#?}"
            );
        }
        for name in ["read-ungranted", "write-ungranted", "tcp-ungranted"] {
            let key = format!("{route}-none.{name}");
            assert_eq!(
                verdicts.get(&key).map(String::as_str),
                Some("held"),
                "{context}: {key}\n{verdicts:#?}"
            );
        }
        let key = format!("{route}.granted");
        assert_eq!(
            verdicts.get(&key).map(String::as_str),
            Some("reached"),
            "{context}: {key}\n{verdicts:#?}"
        );
    }
}

const EVERY_ATTACK: &[&str] = &[
    "shadow",
    "other-tmp",
    "write-outside",
    "write-state",
    "symlink",
    "proc-root",
    "proc-cwd",
    "tcp",
    "unix-socket",
    "docker-socket",
    "signal",
    "ptrace",
    "outlives-the-step",
];

fn assert_untouched(ws: &Workspace, host: &Host, context: &str) {
    for route in ROUTES {
        assert!(!host.other().join(format!("written-{route}")).exists(), "{context}");
        assert!(!ws.path().join(format!(".wharf/planted-{route}")).exists(), "{context}");
        assert!(!ws.path().join(format!("new-{route}-none.txt")).exists(), "{context}");
    }
    assert_eq!(
        host.refused_accepts.load(Ordering::SeqCst),
        0,
        "{context}: the refused port was reached"
    );
    assert!(!host.socket_reached(), "{context}: the host's unix socket was reached");
}

#[test]
fn every_attack_is_held_at_the_kernels_full_support() {
    let host = Host::new();
    let ws = workspace(&host);
    let doctor = ws.wharf(&["doctor"]);
    assert_eq!(doctor.code(), 0, "{}", doctor.all());
    if !doctor.stdout().contains("confined as far as `full`") {
        panic!(
            "this machine's kernel confines programs less than fully:\n{}",
            doctor.stdout()
        );
    }
    let (run, verdicts) = attack(&ws, &host, &["--sandbox", "strict"], |_| {});
    assert_eq!(
        run.code(),
        1,
        "only the build steps fail, by their `exit 3`:\n{}",
        run.all()
    );
    for route in ["exec", "typed"] {
        assert_eq!(run.status_of(&format!("{route}-granted")), "ok", "{}", run.all());
    }
    assert!(
        !run.stdout().contains("confined as far as"),
        "no notice at full support:\n{}",
        run.all()
    );
    assert_held(&verdicts, EVERY_ATTACK, "full");
    assert_untouched(&ws, &host, "full");
}

/// The attacks are real: unconfined, as every program was before, they get through. The
/// journal and the run say the sandbox was off.
#[test]
fn unconfined_the_same_attacks_get_through() {
    let host = Host::new();
    let ws = workspace(&host);
    let (run, verdicts) = attack(&ws, &host, &["--sandbox", "off"], |_| {});
    assert!(
        run.stdout().contains("--sandbox off"),
        "the run says so:\n{}",
        run.all()
    );
    for name in [
        "other-tmp",
        "write-outside",
        "write-state",
        "symlink",
        "proc-root",
        "tcp",
        "unix-socket",
        "signal",
        "outlives-the-step",
    ] {
        let key = format!("exec.{name}");
        assert_eq!(
            verdicts.get(&key).map(String::as_str),
            Some("ESCAPED"),
            "{key}\n{verdicts:#?}"
        );
    }
    assert_eq!(
        verdicts.get("exec-none.read-ungranted").map(String::as_str),
        Some("ESCAPED")
    );
    let journal =
        std::fs::read_to_string(ws.path().join(".wharf/runs").join(run.run_id()).join("journal.jsonl")).unwrap();
    assert!(
        journal.contains("\"sandbox\":\"off\""),
        "{}",
        &journal[..journal.len().min(2000)]
    );
    let report = ws.wharf(&["report", &run.run_id(), "-o", "report.html"]);
    assert_eq!(report.code(), 0, "{}", report.all());
    let html = std::fs::read_to_string(ws.path().join("report.html")).unwrap();
    assert!(html.contains("sandbox off"), "the report says so");
}

/// A seccomp filter over wharf that refuses `unshare` (a container's default profile, an
/// AppArmor-restricted host) and, with `no_landlock`, answers Landlock's calls as a kernel
/// without it does.
fn degrade(command: &mut Command, no_landlock: bool) {
    use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, SeccompRule};
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    rules.insert(libc::SYS_unshare, Vec::new());
    let mut errno_rules = vec![(libc::SYS_unshare, libc::EPERM)];
    if no_landlock {
        for call in [
            libc::SYS_landlock_create_ruleset,
            libc::SYS_landlock_add_rule,
            libc::SYS_landlock_restrict_self,
        ] {
            errno_rules.push((call, libc::ENOSYS));
        }
    }
    let mut programs: Vec<BpfProgram> = Vec::new();
    for (call, errno) in errno_rules {
        let filter = SeccompFilter::new(
            [(call, Vec::new())].into_iter().collect(),
            SeccompAction::Allow,
            SeccompAction::Errno(errno as u32),
            std::env::consts::ARCH.try_into().unwrap(),
        )
        .unwrap();
        programs.push(filter.try_into().unwrap());
    }
    // SAFETY: the closure runs in the forked child before exec and only makes system calls.
    unsafe {
        command.pre_exec(move || {
            for program in &programs {
                seccompiler::apply_filter(program).map_err(std::io::Error::other)?;
            }
            Ok(())
        });
    }
}

/// Without namespaces, Landlock and seccomp still hold every attack: the network by port,
/// processes by their group and a mark in their environment. The run says once what is
/// left open; `--sandbox strict` refuses to start a program.
#[test]
fn without_namespaces_landlock_holds_the_attacks_and_the_run_says_what_is_open() {
    let host = Host::new();
    let ws = workspace(&host);
    let mut doctor = ws.command(&["doctor"]);
    degrade(&mut doctor, false);
    let doctor = Run(doctor.output().unwrap());
    assert_eq!(doctor.code(), 0, "{}", doctor.all());
    assert!(
        doctor.stdout().contains("confined as far as `landlock`"),
        "{}",
        doctor.stdout()
    );
    assert!(doctor.stdout().contains("namespaces     no"), "{}", doctor.stdout());

    let (run, verdicts) = attack(&ws, &host, &[], |c| degrade(c, false));
    let notices = run
        .stdout()
        .matches("programs are confined as far as `landlock`")
        .count();
    assert_eq!(notices, 1, "said once:\n{}", run.all());
    assert_held(&verdicts, EVERY_ATTACK, "landlock");
    assert_untouched(&ws, &host, "landlock");

    let (strict, _) = attack(&ws, &host, &["--sandbox", "strict"], |c| degrade(c, false));
    assert_eq!(strict.code(), 1, "{}", strict.all());
    assert!(strict.stdout().contains("`sandbox: strict`"), "{}", strict.all());
    assert!(
        !strict.stdout().contains("exec.shadow="),
        "no program ran:\n{}",
        strict.all()
    );
}

/// Without Landlock or namespaces a program cannot be held: the run says so plainly and
/// goes on (programs then run as with `--sandbox off`); `strict` refuses.
#[test]
fn without_landlock_the_run_says_programs_are_not_confined_and_strict_refuses() {
    let host = Host::new();
    let ws = workspace(&host);
    let mut doctor = ws.command(&["doctor"]);
    degrade(&mut doctor, true);
    let doctor = Run(doctor.output().unwrap());
    assert!(doctor.stdout().contains("landlock       no"), "{}", doctor.stdout());
    assert!(
        doctor.stdout().contains("confined as far as `none`"),
        "{}",
        doctor.stdout()
    );

    let (run, _) = attack(&ws, &host, &[], |c| degrade(c, true));
    assert_eq!(
        run.stdout().matches("programs are confined as far as `none`").count(),
        1,
        "{}",
        run.all()
    );
    let (strict, _) = attack(&ws, &host, &["--sandbox", "strict"], |c| degrade(c, true));
    assert_eq!(strict.code(), 1, "{}", strict.all());
    assert!(strict.stdout().contains("`sandbox: strict`"), "{}", strict.all());
}

/// As a user without root (GitHub's runners, a developer's laptop): the confinement comes
/// from a user namespace, and holds the same.
#[test]
fn without_root_a_user_namespace_holds_the_attacks() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: the test switches to `nobody`, which needs root; the other tests run as this user");
        return;
    }
    let host = Host::new();
    let ws = workspace(&host);
    let home = tempfile::tempdir().unwrap();
    for path in [ws.path(), ws.cache.path(), home.path(), host.other()] {
        chown_tree(path, 65534);
    }
    let as_nobody = |c: &mut Command| {
        c.env("HOME", home.path());
        c.uid(65534).gid(65534);
    };
    let (run, verdicts) = attack(&ws, &host, &[], as_nobody);
    assert!(
        !run.stdout().contains("confined as far as"),
        "no notice:\n{}",
        run.all()
    );
    let attacks: Vec<&str> = EVERY_ATTACK.iter().copied().filter(|a| *a != "docker-socket").collect();
    assert_held(&verdicts, &attacks, "nobody");
    assert_untouched(&ws, &host, "nobody");
}

fn chown_tree(path: &Path, id: u32) {
    let mut stack: Vec<PathBuf> = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let _ = std::os::unix::fs::lchown(&p, Some(id), Some(id));
        if p.is_dir() && !p.is_symlink() {
            stack.extend(std::fs::read_dir(&p).unwrap().flatten().map(|e| e.path()));
        }
    }
}

/// The confinement process reads its children's ends with SIGCHLD blocked; a program starts
/// as any other would, with no signal blocked (a shell waiting for its jobs relies on it).
#[test]
fn a_program_starts_with_no_signal_blocked() {
    let ws = Workspace::new();
    ws.write(
        "signals.yml",
        "name: signals\nsteps:\n  - id: mask\n    uses: builtin:exec\n    with:\n      program: grep\n      args: ['^SigBlk', /proc/self/status]\n",
    );
    for mode in ["auto", "off"] {
        let run = ws.wharf(&["run", "signals.yml", "-v", "--sandbox", mode]);
        assert_eq!(run.code(), 0, "{}", run.all());
        assert!(
            run.stdout().contains("SigBlk:\t0000000000000000"),
            "{mode}: {}",
            run.all()
        );
    }
}

/// What a program needs is found by running it once with `--audit`: the run lets it use the
/// whole workspace, notes what it reached beyond its grants (by the paths it asked for,
/// host paths included, which a confined program cannot even see), and `wharf grants`
/// prints the `allow:` block that makes the step pass. At the kernel's full support and
/// with Landlock alone.
#[test]
fn an_audit_finds_the_grants_a_program_needs() {
    for degraded in [false, true] {
        let level = if degraded { "landlock" } else { "full" };
        let ws = Workspace::new();
        let host = tempfile::tempdir().unwrap();
        let host_lib = host.path().canonicalize().unwrap().join("lib");
        std::fs::create_dir_all(&host_lib).unwrap();
        std::fs::write(host_lib.join("f.txt"), "from the host").unwrap();
        std::fs::create_dir_all(ws.path().join("data")).unwrap();
        std::fs::create_dir_all(ws.path().join("out")).unwrap();
        ws.write("data/in.txt", "from the workspace");
        let pipeline = |allow: &str| {
            format!(
                "name: needs\nsteps:\n  - id: work\n    uses: builtin:exec\n{allow}    with:\n      program: sh\n      args: [-c, \"cat data/in.txt > out/copy.txt && cat {}/f.txt > out/host.txt\"]\n",
                host_lib.display()
            )
        };
        ws.write("needs.yml", &pipeline(""));
        let run = |args: &[&str]| {
            let mut command = ws.command(args);
            if degraded {
                degrade(&mut command, false);
            }
            Run(command.output().unwrap())
        };

        let refused = run(&["run", "needs.yml"]);
        assert_eq!(refused.code(), 1, "{level}: without grants it fails\n{}", refused.all());

        let audit = run(&["run", "needs.yml", "--audit"]);
        assert!(audit.stdout().contains("audit run"), "{level}: {}", audit.all());
        let grants = ws.wharf(&["grants", &audit.run_id()]);
        assert_eq!(grants.code(), 0, "{}", grants.all());
        let home = std::env::var("HOME").map(PathBuf::from).ok();
        let shown = match home.as_deref().and_then(|h| host_lib.strip_prefix(h).ok()) {
            Some(beneath) => format!("~/{}", beneath.display()),
            None => host_lib.display().to_string(),
        };
        for line in [
            "read: [data]".to_string(),
            "write: [out]".to_string(),
            format!("host-read: [{shown}]"),
        ] {
            assert!(grants.stdout().contains(&line), "{level}: {line}\n{}", grants.stdout());
        }
        assert!(
            !grants.stdout().contains(".wharf"),
            "{level}: wharf's own files are never a grant\n{}",
            grants.stdout()
        );

        // The printed block, as printed (indented for a step), makes the step pass.
        let block: String = grants
            .stdout()
            .lines()
            .skip_while(|l| l.trim() != "allow:")
            .take_while(|l| !l.trim().is_empty())
            .map(|l| format!("{l}\n"))
            .collect();
        ws.write("needs.yml", &pipeline(&block));
        let granted = run(&["run", "needs.yml"]);
        assert_eq!(granted.code(), 0, "{level}:\n{block}\n{}", granted.all());
        assert_eq!(
            std::fs::read_to_string(ws.path().join("out/host.txt")).unwrap(),
            "from the host"
        );
    }
}

/// The parent of `pid`, from `/proc`.
fn parent_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(')').unwrap();
    rest.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The pid of the process running `sleep MARKER`, once it runs.
fn sleeping(marker: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let found = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .find(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                cmdline.starts_with(b"sleep\0") && cmdline.windows(marker.len()).any(|w| w == marker.as_bytes())
            });
        if let Some(pid) = found {
            return pid;
        }
        assert!(Instant::now() < deadline, "`sleep {marker}` never started");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// wharf killed as one of its programs ends: the confinement process cannot tell wharf of
/// the exit, and must still end what every other program of the run started before it goes
/// (at the Landlock level no process namespace does it), and not call that a failure. It is
/// held stopped while wharf and the program are killed, so that it finds both at once, the
/// exit first.
#[test]
fn a_program_ending_as_wharf_is_killed_leaves_nothing_behind() {
    let ws = Workspace::new();
    let (ending, left) = (marker(), marker());
    let step = |id: &str, program: &str, args: &str| {
        format!(
            "  - {{ id: {id}, uses: builtin:exec, needs: [], cache: false, with: {{ program: {program}, args: [{args}] }} }}\n"
        )
    };
    // Step b's `sleep` is a child of its program: the kernel ends the program with the
    // confinement process, not what it started.
    let a = step("a", "sleep", &format!("\"{ending}\""));
    let b = step("b", "sh", &format!("\"-c\", \"sleep {left} & wait\""));
    ws.write("p.yml", &format!("name: p\nsteps:\n{a}{b}"));
    let mut command = ws.command(&["run", "p.yml", "--jobs", "2"]);
    command.stdout(Stdio::null()).stderr(Stdio::piped());
    degrade(&mut command, false);
    let mut wharf = command.spawn().unwrap();
    let (program, other) = (sleeping(&ending), sleeping(&left));
    let confiner = parent_of(program);
    assert_eq!(
        parent_of(confiner),
        wharf.id() as i32,
        "programs are children of the confiner"
    );
    assert_eq!(parent_of(parent_of(other)), confiner);
    // SAFETY: signalling processes this test started; a stale pid only fails.
    unsafe {
        libc::kill(confiner, libc::SIGSTOP);
        libc::kill(wharf.id() as i32, libc::SIGKILL);
    }
    let _ = wharf.wait();
    // SAFETY: as above.
    unsafe { libc::kill(program, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: as above.
    unsafe { libc::kill(confiner, libc::SIGCONT) };
    let mut said = String::new();
    wharf.stderr.take().unwrap().read_to_string(&mut said).unwrap();
    let survivors = end_marked(&left);
    assert!(
        survivors.is_empty(),
        "step b's program outlived the run: {survivors:?}\n{said}"
    );
    assert!(!said.contains("failed"), "{said}");
}
