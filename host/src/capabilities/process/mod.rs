//! `process`: run a program in the workspace, stream its output to the step log and capture
//! it. Each program runs in its own process group, so a timeout or a failed step also ends
//! whatever the program started.

mod confined;
mod watchdog;

use super::bindings::wharf::step::process::{Command, Completion, Host};
use super::bindings::wharf::step::types::{ErrorKind, StepError};
use super::{CallResult, StepCall, StepScope, step_error};
use crate::beneath;
use crate::events::lines::LineSplitter;
use crate::events::{Level, Stream};
use std::collections::VecDeque;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Host environment variables a program sees besides the ones the step sets. Everything else
/// of the wharf process (tokens, `WHARF_SECRET_*`) stays out.
pub const PASSTHROUGH_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "TERM",
    // Where the Rust toolchain lives, so a build step builds with the toolchain wharf ran under.
    "CARGO_HOME",
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
];

/// Bytes of stdout and of stderr kept for the completion; the log gets everything.
pub const DEFAULT_CAPTURE_LIMIT: usize = 1 << 20;

/// The view `process` is served on: the step's call context and how much output to keep.
pub struct ProcessView<'a> {
    pub call: &'a StepCall,
    /// Bytes of stdout and of stderr kept for the completion (the step's output limit).
    pub capture_limit: usize,
    /// The confinement of the run's programs; None where programs run as they are (off).
    pub programs: Option<&'a crate::sandbox::programs::Programs>,
    pub attempt: u32,
    /// What the step's `limits:` hold each of its programs to.
    pub limits: wharf_confine::Limits,
}

/// The linker's marker for [`ProcessView`].
pub struct HasProcess;

impl wasmtime::component::HasData for HasProcess {
    type Data<'a> = ProcessView<'a>;
}

impl Host for ProcessView<'_> {
    async fn run(&mut self, cmd: Command) -> CallResult<Completion> {
        let (call, capture) = (self.call, self.capture_limit);
        let (programs, attempt, limits) = (self.programs, self.attempt, self.limits.clone());
        call.taped("wharf:step/process", "run", &cmd, async {
            call.permit(call.grants.check_process(&cmd.program, &cmd.args))?;
            match programs.filter(|p| p.mode() != crate::sandbox::programs::Mode::Off) {
                Some(programs) => {
                    let (program, cwd) = locate(&call.scope, &cmd)?;
                    let program = find_on_path(&program).ok_or_else(|| not_found(&cmd.program))?;
                    confined::run(call, programs, attempt, limits, cmd.clone(), program, cwd, capture).await
                }
                None => run_program(&call.scope, cmd.clone(), capture).await,
            }
        })
        .await
    }
}

fn not_found(program: &str) -> StepError {
    step_error(
        ErrorKind::InvalidInput,
        format!(
            "program `{program}` was not found ({})",
            if program.contains('/') {
                "relative to the workspace"
            } else {
                "on PATH"
            }
        ),
    )
}

/// The program (a workspace path, resolved; or a name, for `PATH`) and the directory it
/// runs in, both resolved beneath the workspace by the kernel: a symlink an earlier step
/// planted (`out/dir -> ../../elsewhere`) is refused, not followed.
fn locate(scope: &StepScope, cmd: &Command) -> Result<(std::ffi::OsString, std::path::PathBuf), StepError> {
    if let Some((key, _)) = cmd.env.iter().find(|(k, _)| forbidden_env(k)) {
        return Err(step_error(
            ErrorKind::Denied,
            format!(
                "a step may not set `{key}` for `{}`: it changes which code the program runs",
                cmd.program
            ),
        ));
    }
    let cwd = match &cmd.cwd {
        Some(dir) => beneath::resolve(&scope.workspace, dir, beneath::Scope::Beneath, beneath::Kind::Directory)?,
        None => scope.workspace.clone(),
    };
    let program = if cmd.program.contains('/') {
        beneath::existing(&scope.workspace, &cmd.program)?.into_os_string()
    } else {
        cmd.program.clone().into()
    };
    Ok((program, cwd))
}

/// The file a command's `program` names, as a run starts it: a path beneath the workspace,
/// a name on wharf's `PATH`. None when there is none.
pub fn program_file(workspace: &std::path::Path, program: &str) -> Option<std::path::PathBuf> {
    if program.contains('/') {
        beneath::existing(workspace, program).ok()
    } else {
        find_on_path(std::ffi::OsStr::new(program))
    }
}

/// `program` as `execve` takes it: a path as it is, a name looked up on wharf's `PATH`.
fn find_on_path(program: &std::ffi::OsStr) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::path::Path::new(program);
    if path.is_absolute() {
        return Some(path.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Variables a step may not set for a program: they change which code runs (the loader,
/// the shell, git's helpers, compiler wrappers), and would make a grant of `nginx -s reload`
/// a grant of anything.
fn forbidden_env(key: &str) -> bool {
    const EXACT: &[&str] = &[
        "PATH",
        "BASH_ENV",
        "ENV",
        "SHELLOPTS",
        "BASHOPTS",
        "PS4",
        "IFS",
        "PROMPT_COMMAND",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "NODE_OPTIONS",
        "PYTHONSTARTUP",
        "PYTHONPATH",
        "PERL5OPT",
        "PERL5LIB",
        "RUBYOPT",
        "JAVA_TOOL_OPTIONS",
    ];
    EXACT.contains(&key) || key.starts_with("LD_") || key.starts_with("DYLD_") || key.starts_with("GIT_")
}

/// Run `cmd` as it is, with wharf's authority (`--sandbox off`): its own process group,
/// which a timeout or a failed step ends.
pub async fn run_program(scope: &StepScope, cmd: Command, capture_limit: usize) -> Result<Completion, StepError> {
    let (program, cwd) = locate(scope, &cmd)?;
    let mut command = tokio::process::Command::new(&program);
    command
        .args(&cmd.args)
        .current_dir(&cwd)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for key in PASSTHROUGH_ENV {
        if let Some(value) = std::env::var_os(key) {
            command.env(key, value);
        }
    }
    command.envs(cmd.env.iter().map(|(k, v)| (k, v)));

    let shown = format!("{} {}", cmd.program, cmd.args.join(" "));
    scope.log(Level::Debug, format!("$ {}", shown.trim_end()));
    let started = Instant::now();
    let mut child = command.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => not_found(&cmd.program),
        _ => step_error(ErrorKind::Permanent, format!("cannot start `{}`: {e}", cmd.program)),
    })?;
    let group = ProcessGroup::watched(child.id());

    let kill = || group.kill();
    let stdout = pump(
        scope,
        child.stdout.take().unwrap(),
        Stream::Stdout,
        capture_limit,
        &kill,
    );
    let stderr = pump(
        scope,
        child.stderr.take().unwrap(),
        Stream::Stderr,
        capture_limit,
        &kill,
    );
    let exited = async {
        let status = child.wait().await;
        group.kill(); // leftovers in the group would hold the pipes open
        status
    };
    let finished = async { tokio::join!(exited, stdout, stderr) };
    let outcome = match cmd.timeout_ms {
        Some(ms) => tokio::time::timeout(Duration::from_millis(ms), finished).await.ok(),
        None => Some(finished.await),
    };
    group.kill(); // on timeout: the program and everything it started
    let Some((status, stdout, stderr)) = outcome else {
        return Err(timed_out(&cmd));
    };
    let status = status.map_err(|e| step_error(ErrorKind::Permanent, format!("waiting for `{}`: {e}", cmd.program)))?;
    Ok(Completion {
        exit_code: status.code(),
        stdout,
        stderr,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// Kills the whole process group when dropped: on timeout, on completion (leftover
/// background children) and when the step itself is cancelled. The watchdog kills it should
/// wharf die first.
struct ProcessGroup(Option<u32>);

impl ProcessGroup {
    fn watched(pid: Option<u32>) -> Self {
        if let Some(pid) = pid {
            watchdog::watch(pid);
        }
        Self(pid)
    }

    fn kill(&self) {
        if let Some(pid) = self.0.and_then(|p| libc::pid_t::try_from(p).ok()) {
            // SAFETY: killpg has no memory-safety preconditions; a stale group id only fails.
            unsafe {
                libc::killpg(pid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
        if let Some(pid) = self.0 {
            watchdog::unwatch(pid);
        }
    }
}

/// Stream a program's output to the log as it arrives and keep its last `limit` bytes,
/// in bounded memory whatever it writes (one endless line, progress redrawn with `\r`).
/// Past the step's log limit the program is killed: the step fails on that limit.
async fn pump(
    scope: &StepScope,
    mut pipe: impl AsyncRead + Unpin,
    stream: Stream,
    limit: usize,
    kill: &(dyn Fn() + Sync),
) -> String {
    let mut kept: VecDeque<u8> = VecDeque::new();
    let mut lines = LineSplitter::default();
    let mut chunk = vec![0u8; 64 * 1024];
    let mask = |text: &str| scope.events.redact(text);
    let hold = scope.events.longest_secret();
    let mut emit = |line: String| scope.line(Level::Info, stream, line);
    loop {
        let n = match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        kept.extend(&chunk[..n]);
        if kept.len() > limit {
            kept.drain(..kept.len() - limit);
        }
        lines.push(&chunk[..n], &mask, hold, &mut emit);
        if scope.log_budget.exceeded() {
            kill();
            break;
        }
    }
    lines.finish(&mut emit);
    String::from_utf8_lossy(kept.make_contiguous()).into_owned()
}

/// A program that ran past its timeout, and was killed with what it started.
fn timed_out(cmd: &Command) -> StepError {
    step_error(
        ErrorKind::Permanent,
        format!(
            "`{}` did not finish within {} and was killed with its child processes",
            cmd.program,
            humantime::format_duration(Duration::from_millis(cmd.timeout_ms.unwrap_or_default()))
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Event, Events, Recorder};
    use std::path::Path;
    use std::sync::Arc;

    fn scope(dir: &Path) -> (StepScope, Arc<Recorder>) {
        let events = Events::new();
        let recorder = Arc::new(Recorder::default());
        events.add_sink(recorder.clone());
        let scope = StepScope::new("r", "s", dir, events, 1 << 20);
        (scope, recorder)
    }

    fn command(program: &str, args: &[&str]) -> Command {
        Command {
            program: program.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![("GREETING".into(), "hi".into())],
            cwd: None,
            timeout_ms: None,
        }
    }

    #[tokio::test]
    async fn captures_and_streams_output_with_a_clean_environment() {
        let dir = std::env::temp_dir();
        let (scope, recorder) = scope(&dir);
        // SAFETY: tests in this module do not read the variable concurrently.
        unsafe { std::env::set_var("WHARF_SECRET_LEAK", "nope") };
        let done = run_program(
            &scope,
            command("sh", &["-c", "echo $GREETING; env; echo oops >&2; exit 3"]),
            1 << 20,
        )
        .await
        .unwrap();
        assert_eq!(done.exit_code, Some(3));
        assert!(done.stdout.starts_with("hi\n"));
        assert!(!done.stdout.contains("WHARF_SECRET_LEAK"), "{}", done.stdout);
        assert_eq!(done.stderr, "oops\n");
        let events = recorder.0.lock().unwrap();
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::Log { stream: Stream::Stderr, message, .. } if message == "oops"))
        );
    }

    /// A symlink planted in a writable directory does not carry `cwd` or a program path out of
    /// the workspace; one that stays inside works.
    #[tokio::test]
    async fn planted_symlinks_do_not_lead_out() {
        let top = tempfile::tempdir().unwrap();
        let ws = top.path().join("ws");
        let elsewhere = top.path().join("elsewhere");
        std::fs::create_dir_all(ws.join("out")).unwrap();
        std::fs::create_dir_all(ws.join("inside")).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("tool.sh"), "#!/bin/sh\ntouch ran-outside\n").unwrap();
        std::fs::write(ws.join("inside/tool.sh"), "#!/bin/sh\necho inside\n").unwrap();
        for f in [elsewhere.join("tool.sh"), ws.join("inside/tool.sh")] {
            std::os::unix::fs::PermissionsExt::set_mode(&mut std::fs::metadata(&f).unwrap().permissions(), 0o755);
            std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        }
        std::os::unix::fs::symlink("../../elsewhere", ws.join("out/dir")).unwrap();
        std::os::unix::fs::symlink("../inside", ws.join("out/fine")).unwrap();
        let (scope, _) = scope(&std::fs::canonicalize(&ws).unwrap());

        let mut cwd = command("touch", &["ran-here"]);
        cwd.cwd = Some("out/dir".into());
        let e = run_program(&scope, cwd, 1024).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Denied, "{}", e.message);
        assert!(e.message.contains("`out/dir` leads outside"), "{}", e.message);
        let e = run_program(&scope, command("out/dir/tool.sh", &[]), 1024)
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Denied, "{}", e.message);
        assert!(!elsewhere.join("ran-here").exists() && !elsewhere.join("ran-outside").exists());

        let mut inside = command("out/fine/tool.sh", &[]);
        inside.cwd = Some("out/fine".into());
        assert_eq!(run_program(&scope, inside, 1024).await.unwrap().stdout, "inside\n");
    }

    #[tokio::test]
    async fn timeout_kills_the_program_and_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let (scope, _) = scope(dir.path());
        let marker = dir.path().join("child-alive");
        let script = format!("(sleep 1; touch {}) & sleep 30", marker.display());
        let mut cmd = command("sh", &["-c", &script]);
        cmd.timeout_ms = Some(300);
        let started = Instant::now();
        let err = run_program(&scope, cmd, 1024).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(err.message.contains("did not finish within 300ms"), "{}", err.message);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!marker.exists(), "the background child survived the timeout");
    }

    #[tokio::test]
    async fn capture_keeps_the_tail_and_missing_programs_are_clear() {
        let dir = std::env::temp_dir();
        let (scope, _) = scope(&dir);
        let done = run_program(&scope, command("sh", &["-c", "seq 1 1000"]), 10)
            .await
            .unwrap();
        let background = run_program(&scope, command("sh", &["-c", "sleep 30 & echo started"]), 10);
        let done_bg = tokio::time::timeout(Duration::from_secs(5), background)
            .await
            .expect("a background child kept the step waiting");
        assert_eq!(done_bg.unwrap().stdout, "started\n");
        assert_eq!(done.stdout, "\n999\n1000\n");
        let err = run_program(&scope, command("no-such-program-xyz", &[]), 10)
            .await
            .unwrap_err();
        assert!(err.message.contains("was not found"));
        let mut escape = command("sh", &[]);
        escape.cwd = Some("../..".into());
        assert!(
            run_program(&scope, escape, 10)
                .await
                .unwrap_err()
                .message
                .contains("leads outside")
        );
    }
}
