//! Running one step: a fresh `Store` with its own WASI context and limits, instantiated from
//! the cached `InstancePre`, called, and dropped. Traps, timeouts and limit hits become a
//! [`StepFailure`]; the host carries on.

use super::bindings::wharf::step::types::{Context, ErrorKind, StepError, StepInfo, Value};
use super::bindings::{TypedStep, TypedStepPre};
use super::limits::{StepLimiter, StepLimits};
use super::state::StepState;
use super::{LoadedStep, StepKind};
use crate::capabilities::StepScope;
use crate::capabilities::http::StepHttpHooks;
use crate::capabilities::secrets::SecretStore;
use crate::events::{Events, Level, Stream};
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

/// Where a WASI command step finds its output file.
pub const OUTPUT_DIR: &str = "/run/wharf";
pub const OUTPUT_FILE: &str = "/run/wharf/output";

/// Parameters as the step's kind receives them.
#[derive(Clone)]
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
    pub limits: StepLimits,
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
    MemoryLimit,
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
            FailureKind::MemoryLimit => "memory-limit".into(),
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

/// Call `describe()` of a typed step in a throwaway store.
pub async fn describe(pre: &TypedStepPre<StepState>) -> Result<StepInfo, String> {
    let scope = StepScope {
        run_id: String::new(),
        step_id: "describe".into(),
        workspace: std::env::temp_dir(),
        events: Events::new(),
    };
    let limits = StepLimits {
        timeout: Duration::from_secs(10),
        ..StepLimits::default()
    };
    let tail = StderrTail::default();
    let wasi = base_wasi(&scope, &tail).build();
    let mut store = new_store(pre.engine(), scope, Arc::default(), None, wasi, &limits);
    let call = async {
        let instance = pre.instantiate_async(&mut store).await?;
        instance.wharf_step_step().call_describe(&mut store).await
    };
    match tokio::time::timeout(limits.timeout, call).await {
        Ok(Ok(info)) => Ok(info),
        Ok(Err(e)) => Err(trap_message(&e, &tail)),
        Err(_) => Err("did not return within 10s".into()),
    }
}

pub async fn run(step: &LoadedStep, input: StepInput) -> Result<Outputs, StepFailure> {
    let tail = StderrTail::default();
    let limits = input.limits;
    match &step.kind {
        StepKind::Typed(pre) => {
            let wasi = base_wasi(&input.scope, &tail).build();
            let ctx = Context {
                step_id: input.scope.step_id.clone(),
                run_id: input.scope.run_id.clone(),
                pipeline: input.pipeline.clone(),
                params: match input.params {
                    StepParams::Typed(p) => p,
                    StepParams::Command(p) => p.into_iter().map(|(k, v)| (k, Value::Text(v))).collect(),
                },
                attempt: input.attempt,
            };
            let mut store = new_store(pre.engine(), input.scope, input.secrets, input.deployer, wasi, &limits);
            let call = async {
                let instance: TypedStep = pre.instantiate_async(&mut store).await?;
                instance.wharf_step_step().call_run(&mut store, &ctx).await
            };
            let result = tokio::time::timeout(limits.timeout, call).await;
            let refused = store.data().limiter.memory_refused;
            drop(store); // flushes partial log lines before the outcome is reported
            match result {
                Err(_) => Err(timeout(&limits)),
                Ok(Ok(Ok(outputs))) => Ok(outputs),
                Ok(Ok(Err(e))) => Err(e.into()),
                Ok(Err(trap)) => Err(trap_failure(&trap, &tail, refused, &limits)),
            }
        }
        StepKind::Command(pre) => {
            let scratch = tempfile::tempdir().map_err(|e| StepFailure {
                kind: FailureKind::Error(ErrorKind::Permanent),
                message: format!("cannot create the step's output directory: {e}"),
            })?;
            let mut builder = base_wasi(&input.scope, &tail);
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
            builder
                .preopened_dir(scratch.path(), OUTPUT_DIR, FsPerms::ReadWrite)
                .map_err(|e| StepFailure {
                    kind: FailureKind::Error(ErrorKind::Permanent),
                    message: format!("cannot open the step's output directory: {e}"),
                })?;
            let wasi = builder.build();
            let mut store = new_store(pre.engine(), input.scope, input.secrets, input.deployer, wasi, &limits);
            let call = async {
                let instance = pre.instantiate_async(&mut store).await?;
                instance.wasi_cli_run().call_run(&mut store).await
            };
            let result = tokio::time::timeout(limits.timeout, call).await;
            let refused = store.data().limiter.memory_refused;
            drop(store);
            let exit = match result {
                Err(_) => return Err(timeout(&limits)),
                Ok(Ok(Ok(()))) => 0,
                Ok(Ok(Err(()))) => 1,
                Ok(Err(e)) => match e.downcast_ref::<I32Exit>() {
                    Some(I32Exit(code)) => *code,
                    None => return Err(trap_failure(&e, &tail, refused, &limits)),
                },
            };
            if exit != 0 {
                return Err(StepFailure {
                    kind: FailureKind::Exit(exit),
                    message: with_stderr(format!("exited with code {exit}"), &tail),
                });
            }
            let text = std::fs::read_to_string(scratch.path().join("output")).unwrap_or_default();
            parse_outputs(&text).map_err(|message| StepFailure {
                kind: FailureKind::Error(ErrorKind::InvalidInput),
                message: format!("WHARF_OUTPUT: {message}"),
            })
        }
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

fn base_wasi(scope: &StepScope, tail: &StderrTail) -> WasiCtxBuilder {
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
    if let Err(e) = b.preopened_dir(&scope.workspace, ".", FsPerms::ReadWrite) {
        tracing::warn!("workspace {} not available to the step: {e}", scope.workspace.display());
    }
    b
}

fn new_store(
    engine: &wasmtime::Engine,
    scope: StepScope,
    secrets: Arc<SecretStore>,
    deployer: Option<Arc<crate::deploy::Deployer>>,
    wasi: WasiCtx,
    limits: &StepLimits,
) -> Store<StepState> {
    let state = StepState {
        scope,
        secrets,
        deployer,
        wasi,
        http: WasiHttpCtx::new(),
        http_hooks: StepHttpHooks::default(),
        table: ResourceTable::new(),
        limiter: StepLimiter::new(limits),
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);
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

fn trap_failure(e: &wasmtime::Error, tail: &StderrTail, refused: Option<usize>, limits: &StepLimits) -> StepFailure {
    if let Some(wanted) = refused {
        return StepFailure {
            kind: FailureKind::MemoryLimit,
            message: format!(
                "hit its memory limit of {} MiB (it asked for {} MiB) and was stopped; raise it with `limits: {{ memory: ... }}` on the step",
                limits.memory_bytes >> 20,
                wanted >> 20
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
            partial: Vec::new(),
        })
    }
}

struct LineWriter {
    pipe: LogPipe,
    partial: Vec<u8>,
}

impl LineWriter {
    /// Longest line kept whole; longer ones are split.
    const MAX_LINE: usize = 64 * 1024;

    fn emit(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\n', '\r']);
        if let Some(tail) = &self.pipe.tail {
            tail.push(text.to_string());
        }
        let level = if self.pipe.stream == Stream::Stderr {
            Level::Warn
        } else {
            Level::Info
        };
        self.pipe.scope.line(level, self.pipe.stream, text);
    }
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.partial.extend_from_slice(&bytes);
        while let Some(pos) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=pos).collect();
            self.emit(&line);
        }
        if self.partial.len() > Self::MAX_LINE {
            let line = std::mem::take(&mut self.partial);
            self.emit(&line);
        }
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(Self::MAX_LINE)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.emit(&line);
        }
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
