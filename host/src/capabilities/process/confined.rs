//! A program started through the confinement process (`sandbox::programs`): its step's
//! grants become what the kernel lets it reach, its output is streamed as any program's,
//! and a timeout or a cancelled step ends it with everything it started.

use super::{PASSTHROUGH_ENV, pump, timed_out};
use crate::capabilities::bindings::wharf::step::process::{Command, Completion};
use crate::capabilities::bindings::wharf::step::types::{ErrorKind, StepError};
use crate::capabilities::{StepCall, step_error};
use crate::events::{Level, Stream};
use crate::sandbox::Grants;
use crate::sandbox::grants::PortRule;
use crate::sandbox::programs::{Programs, cargo_home, host_path, rustup_home};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use wharf_confine::{Level as Confinement, Limits, Network, PROXY_PORT, Program};

/// Run `cmd` for the step of `call`, as its grants allow.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    call: &StepCall,
    programs: &Programs,
    attempt: u32,
    limits: Limits,
    cmd: Command,
    program_path: PathBuf,
    cwd: PathBuf,
    capture_limit: usize,
) -> Result<Completion, StepError> {
    let scope = &call.scope;
    let confiner = programs
        .confiner()
        .await
        .map_err(|e| step_error(ErrorKind::Denied, format!("`{}` was not started: {e}", cmd.program)))?;
    let level = confiner.report().level;
    let temp = programs.temp_dir(&scope.step_id, attempt).map_err(|e| {
        step_error(
            ErrorKind::Permanent,
            format!("cannot make the step's temporary directory: {e}"),
        )
    })?;
    let network = network(&call.grants);
    let proxied = level == Confinement::Full && network != Network::None;
    let program = Program {
        path: program_path,
        name: cmd.program.clone(),
        args: cmd.args.clone(),
        env: environment(&cmd, &temp, proxied),
        cwd,
        read: workspace_paths(&scope.workspace, &call.grants.read, false)?,
        write: workspace_paths(&scope.workspace, &call.grants.write, true)?,
        temp,
        network,
        signals: call.grants.signal.is_some(),
        limits,
    };
    let program = Program {
        read: [program.read, host_paths(&call.grants.host_read)].concat(),
        write: [program.write, host_paths(&call.grants.host_write)].concat(),
        ..program
    };
    let (out_read, out_write) = pipe()?;
    let (err_read, err_write) = pipe()?;
    let shown = format!("{} {}", cmd.program, cmd.args.join(" "));
    scope.log(Level::Debug, format!("$ {}", shown.trim_end()));
    let started = Instant::now();
    let mut running = confiner
        .spawn(program, out_write, err_write)
        .await
        .map_err(|e| match e {
            wharf_confine::SpawnError::NotFound(why) => step_error(
                ErrorKind::InvalidInput,
                format!("program `{}` was not found ({why})", cmd.program),
            ),
            other => step_error(ErrorKind::Permanent, format!("cannot start `{}`: {other}", cmd.program)),
        })?;
    let proxy = running.proxy.take().map(|socket| {
        tokio::spawn(crate::sandbox::proxy::serve(
            socket,
            call.grants.clone(),
            scope.events.clone(),
        ))
    });
    let ended = Ended(running.killer().map_err(|e| {
        step_error(
            ErrorKind::Permanent,
            format!("cannot keep hold of `{}`: {e}", cmd.program),
        )
    })?);
    let kill = || ended.kill();
    let stdout = pump(scope, out_read, Stream::Stdout, capture_limit, &kill);
    let stderr = pump(scope, err_read, Stream::Stderr, capture_limit, &kill);
    let finished = async { tokio::join!(running.wait(), stdout, stderr) };
    let outcome = match cmd.timeout_ms {
        Some(ms) => tokio::time::timeout(Duration::from_millis(ms), finished).await.ok(),
        None => Some(finished.await),
    };
    drop(ended);
    if let Some(proxy) = proxy {
        proxy.abort();
    }
    let Some((exit, stdout, stderr)) = outcome else {
        return Err(timed_out(&cmd));
    };
    if let Some(audit) = &call.audit {
        for (path, write) in &exit.beyond {
            audit.note_program(path, *write);
        }
    }
    if exit.code != Some(0)
        && let Some(hint) = crate::sandbox::programs::denial_hint(&stderr, &call.grants, &scope.workspace)
    {
        scope.log(Level::Warn, hint);
    }
    Ok(Completion {
        exit_code: exit.code.or(exit.signal.map(|s| 128 + s)),
        stdout,
        stderr,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// Kills the program when dropped: on completion (what it left running), on timeout, and
/// when the step is cancelled.
struct Ended(wharf_confine::Killer);

impl Ended {
    fn kill(&self) {
        self.0.kill();
    }
}

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.kill();
    }
}

fn pipe() -> Result<(tokio::net::unix::pipe::Receiver, std::os::fd::OwnedFd), StepError> {
    let failed = |e: std::io::Error| step_error(ErrorKind::Permanent, format!("cannot make a pipe: {e}"));
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| failed(e.into()))?;
    let read = tokio::net::unix::pipe::Receiver::from_owned_fd(read).map_err(failed)?;
    Ok((read, write))
}

/// What a confined program's environment holds: the variables every program gets, with its
/// own temporary directory as `TMPDIR` and `HOME` (the operator's home is not its), the
/// toolchain homes named (so `cargo` still finds them), the proxy when it may reach the
/// network, and the step's own.
fn environment(cmd: &Command, temp: &Path, proxied: bool) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = PASSTHROUGH_ENV
        .iter()
        .filter(|k| !matches!(**k, "HOME" | "TMPDIR"))
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    let temp = temp.display().to_string();
    env.push(("HOME".into(), temp.clone()));
    env.push(("TMPDIR".into(), temp));
    for (var, home) in [("CARGO_HOME", cargo_home()), ("RUSTUP_HOME", rustup_home())] {
        if !env.iter().any(|(k, _)| k == var)
            && let Some(home) = home.filter(|h| h.is_dir())
        {
            env.push((var.to_string(), home.display().to_string()));
        }
    }
    if proxied {
        let proxy = format!("http://127.0.0.1:{PROXY_PORT}");
        for var in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "http_proxy",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            env.push((var.into(), proxy.clone()));
        }
    }
    for (k, v) in &cmd.env {
        env.retain(|(key, _)| key != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

/// Workspace grants as real paths: resolved beneath the workspace (a planted link leads
/// nowhere else); a path to write that is not there yet is made, as a step's directories
/// are (`sandbox::preopens`), and one to read that is not there is left out.
fn workspace_paths(
    workspace: &Path,
    grants: &[crate::sandbox::grants::Granted<String>],
    write: bool,
) -> Result<Vec<PathBuf>, StepError> {
    let mut out = Vec::new();
    for grant in grants {
        match crate::beneath::existing(workspace, &grant.what) {
            Ok(real) => out.push(real),
            Err(crate::beneath::Error::NotFound { .. }) if write => {
                let made = crate::sandbox::preopens::open(workspace, &grant.what, true).map_err(|e| {
                    step_error(
                        ErrorKind::Denied,
                        format!("its grant `write: [{}]` cannot be opened: {e}", grant.what),
                    )
                })?;
                out.push(made.host);
            }
            Err(crate::beneath::Error::NotFound { .. }) => {}
            Err(e) => {
                return Err(step_error(
                    ErrorKind::Denied,
                    format!(
                        "its grant `{}: [{}]`: {e}",
                        if write { "write" } else { "read" },
                        grant.what
                    ),
                ));
            }
        }
    }
    Ok(out)
}

fn host_paths(grants: &[crate::sandbox::grants::Granted<String>]) -> Vec<PathBuf> {
    grants
        .iter()
        .map(|g| host_path(&g.what))
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .collect()
}

/// The network of the step's `http:` grants, and their ports for a kernel that holds
/// programs to ports only.
fn network(grants: &Grants) -> Network {
    if grants.http.is_empty() {
        return Network::None;
    }
    let mut ports = Vec::new();
    for grant in &grants.http {
        match grant.what.port {
            PortRule::Any => return Network::Granted { ports: None },
            PortRule::Exactly(port) => ports.push(port),
            PortRule::Default => match grant.what.scheme.as_deref() {
                Some("http") => ports.push(80),
                Some("https") => ports.push(443),
                _ => ports.extend([80, 443]),
            },
        }
    }
    ports.sort_unstable();
    ports.dedup();
    Network::Granted { ports: Some(ports) }
}
