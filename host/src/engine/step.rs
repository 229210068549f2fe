//! Running one step: a fresh `Store` with its own WASI context and limits, instantiated from
//! the cached `InstancePre`, called, and dropped. Traps, timeouts and limit hits become a
//! [`StepFailure`]; the host carries on.

use super::limits::{DiskBudget, StepLimiter, StepLimits};
use super::state::StepState;
use super::{LoadedStep, StepKind};
use crate::capabilities::bindings::TypedStepPre;
use crate::capabilities::bindings::wharf::step::types::{Context, ErrorKind, StepError, Value as WitValue};
use crate::capabilities::http::StepHttpHooks;
use crate::capabilities::secrets::SecretStore;
use crate::capabilities::{StepCall, StepScope};
use crate::events::lines::LineSplitter;
use crate::events::{Events, Level, Stream};
use crate::journal::tape::Tape;
use crate::pipeline::describe::{StepInfo, Value};
use crate::sandbox::Grants;
use crate::sandbox::preopens::Preopen;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::Store;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder};
use wasmtime_wasi_http::WasiHttpCtx;

/// Where a WASI command step finds its output file: `OUTPUT_NAME` in its own directory,
/// which it sees as `OUTPUT_DIR`.
pub const OUTPUT_DIR: &str = "/run/wharf";
pub const OUTPUT_NAME: &str = "output";
pub const OUTPUT_FILE: &str = "/run/wharf/output";

/// Parameters as the step's kind receives them.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepParams {
    Typed(Vec<(String, Value)>),
    /// Each becomes `WHARF_PARAM_<NAME>`.
    Command(Vec<(String, String)>),
}

pub struct StepInput {
    pub scope: StepScope,
    pub pipeline: String,
    pub attempt: u32,
    pub params: StepParams,
    pub secrets: Arc<SecretStore>,
    pub deployer: Option<Arc<crate::deploy::Deployer>>,
    pub grants: Arc<Grants>,
    /// The directories opened to the step (from its grants, or a replay's snapshot).
    pub preopens: Vec<Preopen>,
    /// An empty directory of the run's scratch space for a WASI command's `/run/wharf`
    /// (typed steps need none).
    pub scratch: Option<std::path::PathBuf>,
    pub tape: Tape,
    pub limits: StepLimits,
    /// In an audit run: where refused file, process and HTTP accesses are noted instead.
    pub audit: Option<Arc<crate::sandbox::audit::Audit>>,
    /// The confinement of the run's programs; None where no program runs (a replay).
    pub programs: Option<Arc<crate::sandbox::programs::Programs>>,
    /// Provenance the step's pushes sign and its deploys require.
    pub release: crate::provenance::StepRelease,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureKind {
    /// The step returned an error value.
    Error(ErrorKind),
    /// The step trapped or panicked.
    Trap,
    /// A WASI command exited non-zero.
    Exit(i32),
    Timeout,
    /// Memory, fuel, log or output limit.
    Limit,
}

#[derive(Debug, Clone)]
pub struct StepFailure {
    pub kind: FailureKind,
    pub message: String,
}

impl StepFailure {
    pub fn retryable(&self) -> bool {
        self.kind == FailureKind::Error(ErrorKind::Transient)
    }

    pub fn kind_name(&self) -> String {
        match &self.kind {
            FailureKind::Error(k) => match k {
                ErrorKind::InvalidInput => "invalid-input",
                ErrorKind::Denied => "denied",
                ErrorKind::Transient => "transient",
                ErrorKind::Permanent => "permanent",
                ErrorKind::GateFailed => "gate-failed",
            }
            .to_string(),
            FailureKind::Trap => "trap".into(),
            FailureKind::Exit(code) => format!("exit {code}"),
            FailureKind::Timeout => "timeout".into(),
            FailureKind::Limit => "limit".into(),
        }
    }
}

impl From<StepError> for StepFailure {
    fn from(e: StepError) -> Self {
        Self {
            kind: FailureKind::Error(e.kind),
            message: e.message,
        }
    }
}

pub type Outputs = Vec<(String, String)>;

/// Call `describe()` of a typed step in a throwaway store with no grants.
pub async fn describe(pre: &TypedStepPre<StepState>) -> Result<StepInfo, String> {
    let limits = StepLimits {
        timeout: Duration::from_secs(10),
        ..StepLimits::default()
    };
    let scope = StepScope::new("", "describe", &std::env::temp_dir(), Events::new(), limits.log_bytes);
    let tail = StderrTail::default();
    let grants = Arc::new(Grants::default());
    let wasi = base_wasi(&scope, &[], &tail).build();
    let parts = StoreParts {
        scope,
        secrets: Arc::default(),
        deployer: None,
        grants,
        tape: Tape::Off,
        audit: None,
        scratch: None,
        programs: None,
        attempt: 0,
        release: Default::default(),
    };
    let mut store = new_store(pre.engine(), parts, wasi, &limits);
    let call = async {
        let instance = pre.instantiate_async(&mut store).await?;
        instance.wharf_step_step().call_describe(&mut store).await
    };
    match tokio::time::timeout(limits.timeout, call).await {
        Ok(Ok(info)) => Ok(info.into()),
        Ok(Err(e)) => Err(trap_message(&e, &tail)),
        Err(_) => Err("did not return within 10s".into()),
    }
}

/// How a call into the guest ended, before it is judged.
enum Ended<T> {
    Returned(T),
    Trapped(wasmtime::Error),
    TimedOut,
}

pub async fn run(step: &LoadedStep, input: StepInput) -> Result<Outputs, StepFailure> {
    let kind = step.kind(&input.scope.events).await.map_err(permanent)?;
    let tail = StderrTail::default();
    let limits = input.limits;
    let budget = input.scope.log_budget.clone();
    let mut builder = base_wasi(&input.scope, &input.preopens, &tail);
    // A WASI command's output file lives in a scratch directory only it sees.
    let output_file = match kind {
        StepKind::Typed(_) => None,
        StepKind::Command(_) => {
            builder.arg(&step.origin);
            builder.env("WHARF_OUTPUT", OUTPUT_FILE);
            builder.env("WHARF_STEP_ID", &input.scope.step_id);
            builder.env("WHARF_RUN_ID", &input.scope.run_id);
            builder.env("WHARF_PIPELINE", &input.pipeline);
            if let StepParams::Command(params) = &input.params {
                for (name, value) in params {
                    builder.env(param_env_name(name), value);
                }
            }
            let scratch = input
                .scratch
                .as_ref()
                .ok_or_else(|| permanent("a WASI command step needs a scratch directory".into()))?;
            builder
                .preopened_dir(scratch, OUTPUT_DIR, FsPerms::ReadWrite)
                .map_err(|e| permanent(format!("cannot open the step's output directory: {e}")))?;
            Some(scratch.join(OUTPUT_NAME))
        }
    };
    let ctx = Context {
        step_id: input.scope.step_id.clone(),
        run_id: input.scope.run_id.clone(),
        pipeline: input.pipeline.clone(),
        params: match input.params {
            StepParams::Typed(p) => p.into_iter().map(|(k, v)| (k, WitValue::from(v))).collect(),
            StepParams::Command(p) => p.into_iter().map(|(k, v)| (k, WitValue::Text(v))).collect(),
        },
        attempt: input.attempt,
    };
    let parts = StoreParts {
        scope: input.scope,
        secrets: input.secrets,
        deployer: input.deployer,
        grants: input.grants,
        tape: input.tape,
        audit: input.audit,
        scratch: input.scratch,
        programs: input.programs,
        attempt: input.attempt,
        release: input.release,
    };
    let mut store = new_store(step.engine(), parts, builder.build(), &limits);
    // Typed steps return outputs; commands return an exit code (0 when `run` said ok).
    let ended: Ended<Result<Outputs, StepFailure>> = match kind {
        StepKind::Typed(pre) => {
            let call = async {
                let instance = pre.instantiate_async(&mut store).await?;
                instance.wharf_step_step().call_run(&mut store, &ctx).await
            };
            match tokio::time::timeout(limits.timeout, call).await {
                Err(_) => Ended::TimedOut,
                Ok(Ok(result)) => Ended::Returned(result.map_err(StepFailure::from)),
                Ok(Err(trap)) => Ended::Trapped(trap),
            }
        }
        StepKind::Command(pre) => {
            let call = async {
                let instance = pre.instantiate_async(&mut store).await?;
                instance.wasi_cli_run().call_run(&mut store).await
            };
            let exited = |code: i32| match code {
                0 => Ended::Returned(read_output_file(
                    output_file.as_deref().expect("commands have an output file"),
                    &limits,
                )),
                code => Ended::Returned(Err(StepFailure {
                    kind: FailureKind::Exit(code),
                    message: with_stderr(format!("exited with code {code}"), &tail),
                })),
            };
            match tokio::time::timeout(limits.timeout, call).await {
                Err(_) => Ended::TimedOut,
                Ok(Ok(Ok(()))) => exited(0),
                Ok(Ok(Err(()))) => exited(1),
                Ok(Err(e)) => match e.downcast_ref::<I32Exit>() {
                    Some(I32Exit(code)) => exited(*code),
                    None => Ended::Trapped(e),
                },
            }
        }
    };
    let refused = store.data().limiter.memory_refused;
    let disk_full = store.data().disk.exceeded();
    let journal_full = matches!(&store.data().call.tape, Tape::Record(r) if r.journal_full());
    let fuel_left = store.get_fuel().ok();
    drop(store); // flushes partial log lines before the outcome is reported
    // A limit hit explains whatever the step did after it.
    if budget.exceeded() {
        return Err(StepFailure {
            kind: FailureKind::Limit,
            message: format!(
                "wrote more than its log limit of {} and was stopped; raise it with `limits: {{ log: ... }}` on the step",
                size(budget.limit)
            ),
        });
    }
    if disk_full {
        return Err(StepFailure {
            kind: FailureKind::Limit,
            message: format!(
                "wrote more than its disk limit of {} and was stopped; raise it with `limits: {{ disk: ... }}` on the step",
                size(limits.disk_bytes)
            ),
        });
    }
    if journal_full {
        return Err(StepFailure {
            kind: FailureKind::Limit,
            message: format!(
                "recorded more than its journal limit of {} of host calls and was stopped; raise it with `limits: {{ journal: ... }}` on the step",
                size(limits.journal_bytes)
            ),
        });
    }
    let outputs = match ended {
        Ended::TimedOut => return Err(timeout(&limits)),
        Ended::Trapped(trap) => return Err(trap_failure(&trap, &tail, refused, fuel_left, &limits)),
        Ended::Returned(result) => result?,
    };
    if let Some((name, _)) = outputs.iter().find(|(k, _)| !crate::pipeline::model::is_identifier(k)) {
        return Err(StepFailure {
            kind: FailureKind::Error(ErrorKind::InvalidInput),
            message: format!(
                "returned an output named `{name}`; output names are identifiers (a letter, then letters, digits, `-`, `_`)"
            ),
        });
    }
    let total: usize = outputs.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total as u64 > limits.output_bytes {
        return Err(StepFailure {
            kind: FailureKind::Limit,
            message: format!(
                "returned {} of outputs, over its output limit of {}; raise it with `limits: {{ output: ... }}` on the step",
                size(total as u64),
                size(limits.output_bytes)
            ),
        });
    }
    Ok(outputs)
}

/// A WASI command's `WHARF_OUTPUT` file, read only when within the output limit.
fn read_output_file(path: &std::path::Path, limits: &StepLimits) -> Result<Outputs, StepFailure> {
    let text = match crate::bounded::read_text(path, limits.output_bytes) {
        Ok(text) => text,
        Err(e) if e.is_not_found() => String::new(),
        Err(crate::bounded::ReadError::TooBig { size: written, .. }) => {
            return Err(StepFailure {
                kind: FailureKind::Limit,
                message: format!(
                    "wrote {} to WHARF_OUTPUT, over its output limit of {}; raise it with `limits: {{ output: ... }}` on the step",
                    size(written),
                    size(limits.output_bytes)
                ),
            });
        }
        Err(e) => return Err(permanent(format!("WHARF_OUTPUT: {e}"))),
    };
    parse_outputs(&text).map_err(|message| StepFailure {
        kind: FailureKind::Error(ErrorKind::InvalidInput),
        message: format!("WHARF_OUTPUT: {message}"),
    })
}

fn permanent(message: String) -> StepFailure {
    StepFailure {
        kind: FailureKind::Error(ErrorKind::Permanent),
        message,
    }
}

pub fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// `WHARF_PARAM_<NAME>`: upper case, `-` and `.` become `_`.
pub fn param_env_name(name: &str) -> String {
    format!("WHARF_PARAM_{}", name.to_uppercase().replace(['-', '.'], "_"))
}

/// `key=value` lines; `key<<DELIM` ... `DELIM` for multi-line values (GitHub's convention).
pub fn parse_outputs(text: &str) -> Result<Outputs, String> {
    let mut out: Outputs = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        if line.trim().is_empty() {
            continue;
        }
        let (key, value) = match (line.find("<<"), line.find('=')) {
            (Some(h), eq) if eq.is_none_or(|e| h < e) => {
                let delimiter = &line[h + 2..];
                let mut value = Vec::new();
                loop {
                    match lines.next() {
                        Some((_, l)) if l == delimiter => break,
                        Some((_, l)) => value.push(l),
                        None => {
                            return Err(format!(
                                "line {}: `{delimiter}` never closes the value of `{}`",
                                n + 1,
                                &line[..h]
                            ));
                        }
                    }
                }
                (line[..h].to_string(), value.join("\n"))
            }
            (_, Some(e)) => (line[..e].to_string(), line[e + 1..].to_string()),
            _ => {
                return Err(format!("line {}: expected `key=value`, got `{line}`", n + 1));
            }
        };
        if key.is_empty() {
            return Err(format!("line {}: empty output name", n + 1));
        }
        out.retain(|(k, _)| *k != key);
        out.push((key, value));
    }
    Ok(out)
}

/// The WASI context every step starts from: its output to the log, no environment, no
/// arguments, no sockets, and the workspace only as far as its grants open it.
fn base_wasi(scope: &StepScope, opened: &[Preopen], tail: &StderrTail) -> WasiCtxBuilder {
    let mut b = WasiCtx::builder();
    b.stdout(LogPipe {
        scope: scope.clone(),
        stream: Stream::Stdout,
        tail: None,
    });
    b.stderr(LogPipe {
        scope: scope.clone(),
        stream: Stream::Stderr,
        tail: Some(tail.clone()),
    });
    b.allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
    b.socket_addr_check(|_, _| Box::pin(async { false }));
    for p in opened {
        let perms = if p.write { FsPerms::ReadWrite } else { FsPerms::ReadOnly };
        if let Err(e) = b.preopened_dir(&p.host, &p.guest, perms) {
            tracing::warn!("cannot open {} for the step: {e}", p.host.display());
        }
    }
    b
}

/// What a step's store holds besides its WASI context and limits.
struct StoreParts {
    scope: StepScope,
    secrets: Arc<SecretStore>,
    deployer: Option<Arc<crate::deploy::Deployer>>,
    grants: Arc<Grants>,
    tape: Tape,
    audit: Option<Arc<crate::sandbox::audit::Audit>>,
    /// A WASI command's own directory (its `/run/wharf`).
    scratch: Option<std::path::PathBuf>,
    programs: Option<Arc<crate::sandbox::programs::Programs>>,
    attempt: u32,
    release: crate::provenance::StepRelease,
}

fn new_store(engine: &wasmtime::Engine, parts: StoreParts, wasi: WasiCtx, limits: &StepLimits) -> Store<StepState> {
    let StoreParts {
        scope,
        secrets,
        deployer,
        grants,
        tape,
        audit,
        scratch,
        programs,
        attempt,
        release,
    } = parts;
    let reserved = crate::sandbox::reserved::Reserved::new(&scope.workspace, scratch.as_deref());
    let call = StepCall {
        scope,
        grants,
        tape,
        audit,
    };
    let state = StepState {
        http_hooks: StepHttpHooks { call: call.clone() },
        call,
        secrets,
        deployer,
        limits: *limits,
        disk: Arc::new(DiskBudget::new(limits.disk_bytes)),
        wasi,
        http: WasiHttpCtx::new(),
        table: ResourceTable::new(),
        limiter: StepLimiter::new(limits),
        reserved,
        programs,
        attempt,
        release,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);
    let _ = store.set_fuel(limits.fuel.unwrap_or(u64::MAX));
    store
}

fn timeout(limits: &StepLimits) -> StepFailure {
    StepFailure {
        kind: FailureKind::Timeout,
        message: format!(
            "did not finish within its time limit of {} and was stopped; raise it with `timeout:` on the step",
            humantime::format_duration(limits.timeout)
        ),
    }
}

fn trap_failure(
    e: &wasmtime::Error,
    tail: &StderrTail,
    refused: Option<usize>,
    fuel_left: Option<u64>,
    limits: &StepLimits,
) -> StepFailure {
    if let Some(wanted) = refused {
        return StepFailure {
            kind: FailureKind::Limit,
            message: format!(
                "hit its memory limit of {} (it asked for {}) and was stopped; raise it with `limits: {{ memory: ... }}` on the step",
                size(limits.memory_bytes as u64),
                size(wanted as u64)
            ),
        };
    }
    if let (Some(limit), Some(0) | None) = (limits.fuel, fuel_left)
        && e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::OutOfFuel)
    {
        return StepFailure {
            kind: FailureKind::Limit,
            message: format!(
                "ran out of fuel (its limit is {limit}) and was stopped; raise it with `limits: {{ fuel: ... }}` on the step"
            ),
        };
    }
    StepFailure {
        kind: FailureKind::Trap,
        message: trap_message(e, tail),
    }
}

fn trap_message(e: &wasmtime::Error, tail: &StderrTail) -> String {
    let what = match e.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => format!("trapped: {trap}"),
        None => format!("failed in the runtime: {}", super::root_cause(e)),
    };
    with_stderr(what, tail)
}

fn with_stderr(mut message: String, tail: &StderrTail) -> String {
    let lines = tail.lines();
    if !lines.is_empty() {
        message.push_str("; its stderr ended with:\n");
        message.push_str(&lines.join("\n"));
    }
    message
}

/// The last lines a step wrote to stderr: a panic message explains the trap that follows.
#[derive(Clone, Default)]
pub struct StderrTail(Arc<Mutex<VecDeque<String>>>);

impl StderrTail {
    const LINES: usize = 5;

    fn push(&self, line: String) {
        if line.trim().is_empty() {
            return;
        }
        let mut lines = self.0.lock().unwrap();
        if lines.len() == Self::LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().iter().cloned().collect()
    }
}

/// A step's stdout or stderr, turned into log events line by line as it is written.
#[derive(Clone)]
struct LogPipe {
    scope: StepScope,
    stream: Stream,
    tail: Option<StderrTail>,
}

impl IsTerminal for LogPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogPipe {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only the p2 stream below is used by wasip2 guests.
        Box::new(tokio::io::sink())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LineWriter {
            pipe: self.clone(),
            lines: LineSplitter::default(),
        })
    }
}

struct LineWriter {
    pipe: LogPipe,
    lines: LineSplitter,
}

impl LineWriter {
    fn emit(pipe: &LogPipe, text: String) {
        if let Some(tail) = &pipe.tail {
            tail.push(text.clone());
        }
        let level = if pipe.stream == Stream::Stderr {
            Level::Warn
        } else {
            Level::Info
        };
        pipe.scope.line(level, pipe.stream, text);
    }
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if self.pipe.scope.log_budget.exceeded() {
            return Err(wasmtime_wasi::p2::StreamError::trap("log limit reached"));
        }
        let events = &self.pipe.scope.events;
        let pipe = &self.pipe;
        self.lines.push(
            &bytes,
            &|text| events.redact(text),
            events.longest_secret(),
            &mut |line| Self::emit(pipe, line),
        );
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(crate::events::lines::MAX_LINE)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        let pipe = &self.pipe;
        self.lines.finish(&mut |line| Self::emit(pipe, line));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_file_format() {
        let text = "version=1.0.1-22-7e56158\nempty=\nnotes<<EOF\nline one\nline=two\nEOF\nversion=2\n";
        let out = parse_outputs(text).unwrap();
        assert_eq!(
            out,
            vec![
                ("empty".to_string(), "".to_string()),
                ("notes".to_string(), "line one\nline=two".to_string()),
                ("version".to_string(), "2".to_string()),
            ]
        );
        assert!(parse_outputs("novalue\n").unwrap_err().contains("line 1"));
        assert!(parse_outputs("x<<END\nabc\n").unwrap_err().contains("never closes"));
    }

    #[test]
    fn param_names_become_env_vars() {
        assert_eq!(param_env_name("allow-dirty"), "WHARF_PARAM_ALLOW_DIRTY");
    }
}
