//! A step's tape: in a recorded run, every host call is done and written to the journal; in
//! a replay, every host call is answered from the journal, in order, and a call that is not
//! the next recorded one (another function, other arguments) stops the step as a divergence.
//!
//! Every capability, the HTTP egress hook, and the WASI clocks and randomness (which
//! [`crate::capabilities::clocks`] serves through it) make their calls through one function,
//! [`Tape::call`], so a replay hands a step the same answers, times and bytes.

use super::capture::Capture;
use super::writer::JournalWriter;
use super::{Entry, clocks};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Clone, Default)]
pub enum Tape {
    /// Neither recorded nor replayed (describing a step).
    #[default]
    Off,
    Record(Arc<Recorder>),
    Replay(Arc<Player>),
}

pub struct Recorder {
    pub journal: Arc<JournalWriter>,
    pub step: String,
    pub attempt: u32,
    /// Bytes of journal the attempt's calls may take.
    pub journal_limit: u64,
    calls: Mutex<Calls>,
    /// Set when a call would have passed [`Recorder::journal_limit`].
    journal_full: AtomicBool,
    /// What the step finds in the workspace directories opened to it.
    pub capture: Capture,
    /// What the step uses, for the step cache; None when it is not cached.
    pub witness: Option<super::witness::Witness>,
}

/// The attempt's calls so far.
#[derive(Default)]
struct Calls {
    next_seq: u64,
    /// Bytes written and pending.
    bytes: u64,
    /// Clock calls not yet written: they go out together, before the next other call.
    clocks: Option<ClockRun>,
}

struct ClockRun {
    seq: u64,
    calls: Vec<Value>,
    compactor: clocks::Compactor,
}

/// Clock calls written in one entry at most.
const CLOCK_RUN: usize = 1024;

impl Recorder {
    /// `opened`: the workspace directories opened to the step, (host path, workspace name);
    /// `journal_limit`: bytes of journal its calls may take.
    pub fn new(
        journal: Arc<JournalWriter>,
        step: &str,
        attempt: u32,
        opened: Vec<(PathBuf, String)>,
        journal_limit: u64,
    ) -> Self {
        Self {
            capture: Capture::new(journal.clone(), step, attempt, opened),
            journal,
            step: step.to_string(),
            attempt,
            journal_limit,
            calls: Mutex::default(),
            journal_full: AtomicBool::new(false),
            witness: None,
        }
    }

    /// Note what the step uses for the step cache.
    pub fn witnessed(self, witness: super::witness::Witness) -> Self {
        Recorder {
            witness: Some(witness),
            ..self
        }
    }

    /// Whether a call was stopped at the journal limit.
    pub fn journal_full(&self) -> bool {
        self.journal_full.load(Ordering::Relaxed)
    }

    /// The attempt is over: write what it has pending.
    pub fn finish(&self) {
        self.write_clocks(&mut self.calls.lock().unwrap());
        self.capture.finish();
    }

    /// Record one call: clock calls compactly, in runs; any other in its own entry, after
    /// the clock calls before it. A call that would take the attempt's journal past its
    /// limit is not recorded and stops the step.
    fn record(&self, interface: &str, function: &str, args: Value, result: Value, micros: u64) -> wasmtime::Result<()> {
        if let Some(witness) = &self.witness {
            witness.observer.after(interface, function, &args, &result);
        }
        let mut calls = self.calls.lock().unwrap();
        let seq = calls.next_seq;
        let run = calls.clocks.get_or_insert_with(|| ClockRun {
            seq,
            calls: Vec::new(),
            compactor: clocks::Compactor::default(),
        });
        if let Some(value) = run.compactor.compact(interface, function, &args, &result) {
            // A value, its comma, and the entry's share when the run is written.
            let cost = value.to_string().len() as u64 + 1;
            self.spend(&mut calls, cost, interface, function)?;
            let run = calls.clocks.as_mut().expect("started above");
            run.calls.push(value);
            calls.next_seq += 1;
            if calls.clocks.as_ref().is_some_and(|r| r.calls.len() >= CLOCK_RUN) {
                self.write_clocks(&mut calls);
            }
            return Ok(());
        }
        if calls.clocks.as_ref().is_some_and(|r| r.calls.is_empty()) {
            calls.clocks = None;
        }
        self.write_clocks(&mut calls);
        let entry = Entry::Call {
            step: self.step.clone(),
            attempt: self.attempt,
            seq,
            interface: interface.to_string(),
            function: function.to_string(),
            args,
            result,
            micros,
        };
        // Counted as written: masking secrets changes little.
        let cost = serde_json::to_string(&entry).map_or(0, |t| t.len() as u64);
        self.spend(&mut calls, cost, interface, function)?;
        self.journal.write(entry);
        calls.next_seq += 1;
        Ok(())
    }

    fn spend(&self, calls: &mut Calls, bytes: u64, interface: &str, function: &str) -> wasmtime::Result<()> {
        if calls.bytes.saturating_add(bytes) > self.journal_limit {
            self.journal_full.store(true, Ordering::Relaxed);
            return Err(wasmtime::format_err!(
                "{interface}.{function}: the journal limit of {} bytes is reached",
                self.journal_limit
            ));
        }
        calls.bytes += bytes;
        Ok(())
    }

    fn write_clocks(&self, calls: &mut Calls) {
        if let Some(run) = calls.clocks.take()
            && !run.calls.is_empty()
        {
            self.journal.write(Entry::Clocks {
                step: self.step.clone(),
                attempt: self.attempt,
                seq: run.seq,
                calls: run.calls,
            });
        }
    }
}

/// One recorded call, as the player holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedCall {
    pub seq: u64,
    pub interface: String,
    pub function: String,
    pub args: Value,
    pub result: Value,
}

/// Where a replay left the journal's path.
#[derive(Debug, Clone, PartialEq)]
pub struct Divergence {
    pub step: String,
    /// The call the journal has next; None when the step made more calls than recorded.
    pub recorded: Option<RecordedCall>,
    /// What the step called instead; None when it made fewer calls than recorded.
    pub replayed: Option<(String, String, Value)>,
}

pub struct Player {
    pub step: String,
    calls: Mutex<VecDeque<RecordedCall>>,
    pub divergence: Mutex<Option<Divergence>>,
}

impl Player {
    pub fn new(step: &str, calls: Vec<RecordedCall>) -> Self {
        Self {
            step: step.to_string(),
            calls: Mutex::new(calls.into()),
            divergence: Mutex::new(None),
        }
    }

    /// Calls recorded but not made.
    pub fn remaining(&self) -> Option<RecordedCall> {
        self.calls.lock().unwrap().front().cloned()
    }
}

impl Tape {
    /// Make the journal so far durable on disk: after a call that changed a deploy.
    pub fn sync(&self) {
        if let Tape::Record(rec) = self {
            rec.journal.sync();
        }
    }

    pub fn is_replay(&self) -> bool {
        matches!(self, Tape::Replay(_))
    }

    /// A host call of a step. In a replay the journal answers it, once it is shown to be the
    /// next recorded call (a trap otherwise: the replay diverged); in a run `live` makes the
    /// call and its result is recorded.
    pub async fn call<A, T>(
        &self,
        interface: &str,
        function: &str,
        args: &A,
        live: impl Future<Output = T>,
    ) -> wasmtime::Result<T>
    where
        A: Serialize + ?Sized,
        T: Serialize + DeserializeOwned,
    {
        let args = serde_json::to_value(args).unwrap_or(Value::Null);
        if let Some(recorded) = self.answer(interface, function, &args)? {
            return Ok(recorded);
        }
        self.before(interface, function, &args);
        let started = Instant::now();
        let result = live.await;
        self.record(interface, function, args, &result, started)?;
        Ok(result)
    }

    /// [`Tape::call`] for a call that cannot wait (the WASI clocks and randomness) and may
    /// trap on its own.
    pub fn call_sync<A, T>(
        &self,
        interface: &str,
        function: &str,
        args: &A,
        live: impl FnOnce() -> wasmtime::Result<T>,
    ) -> wasmtime::Result<T>
    where
        A: Serialize + ?Sized,
        T: Serialize + DeserializeOwned,
    {
        let args = serde_json::to_value(args).unwrap_or(Value::Null);
        if let Some(recorded) = self.answer(interface, function, &args)? {
            return Ok(recorded);
        }
        self.before(interface, function, &args);
        let started = Instant::now();
        let result = live()?;
        self.record(interface, function, args, &result, started)?;
        Ok(result)
    }

    /// Tell the step cache's observer a call is about to be made.
    fn before(&self, interface: &str, function: &str, args: &Value) {
        if let Tape::Record(rec) = self
            && let Some(witness) = &rec.witness
        {
            witness.observer.before(interface, function, args);
        }
    }

    /// In a replay, the recorded result of this call (or a trap when it diverges);
    /// otherwise None: do the call.
    fn answer<R: DeserializeOwned>(
        &self,
        interface: &str,
        function: &str,
        args: &Value,
    ) -> wasmtime::Result<Option<R>> {
        let Tape::Replay(player) = self else { return Ok(None) };
        let next = player.calls.lock().unwrap().pop_front();
        let diverged = |recorded: Option<RecordedCall>| {
            *player.divergence.lock().unwrap() = Some(Divergence {
                step: player.step.clone(),
                recorded,
                replayed: Some((interface.to_string(), function.to_string(), args.clone())),
            });
            wasmtime::format_err!("replay diverged from the journal at {interface}.{function}")
        };
        match next {
            Some(call) if call.interface == interface && call.function == function && masked_eq(&call.args, args) => {
                match serde_json::from_value(call.result.clone()) {
                    Ok(result) => Ok(Some(result)),
                    Err(_) => Err(diverged(Some(call))),
                }
            }
            other => Err(diverged(other)),
        }
    }

    fn record<R: Serialize>(
        &self,
        interface: &str,
        function: &str,
        args: Value,
        result: &R,
        started: Instant,
    ) -> wasmtime::Result<()> {
        let Tape::Record(rec) = self else { return Ok(()) };
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let result = serde_json::to_value(result).unwrap_or(Value::Null);
        rec.record(interface, function, args, result, micros)
    }
}

/// Whether a replayed value matches a recorded one. The journal masks secrets as `***`, and
/// a replay hands a step `***` where the run revealed a secret, so what the step derives
/// from it (an encoding, a concatenation) differs from the masked record: a masked part of a
/// recorded string matches any text.
pub fn masked_eq(recorded: &Value, replayed: &Value) -> bool {
    match (recorded, replayed) {
        (Value::String(r), Value::String(p)) => masked_str_eq(r, p),
        (Value::Array(r), Value::Array(p)) => r.len() == p.len() && r.iter().zip(p).all(|(r, p)| masked_eq(r, p)),
        (Value::Object(r), Value::Object(p)) => {
            r.len() == p.len() && r.iter().all(|(k, v)| p.get(k).is_some_and(|pv| masked_eq(v, pv)))
        }
        (r, p) => r == p,
    }
}

pub fn masked_str_eq(recorded: &str, replayed: &str) -> bool {
    let mask = crate::events::MASK;
    if !recorded.contains(mask) {
        return recorded == replayed;
    }
    let parts: Vec<&str> = recorded.split(mask).collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !replayed.starts_with(first) || replayed.len() < first.len() + last.len() || !replayed.ends_with(last) {
        return false;
    }
    let mut rest = &replayed[first.len()..replayed.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}
