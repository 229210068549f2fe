//! A step's tape: in a recorded run, every host call is done and written to the journal; in
//! a replay, every host call is answered from the journal, in order, and a call that is not
//! the next recorded one (another function, other arguments) stops the step as a divergence.
//!
//! Clocks and randomness are host calls too: the WASI `clocks` and `random` interfaces are
//! served here, so a replay hands a step the same times and bytes, and sleeps take no time.

use super::Entry;
use super::writer::JournalWriter;
use crate::engine::state::StepState;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use wasmtime::component::Resource;
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::clocks::{monotonic_clock, wall_clock};
use wasmtime_wasi::p2::bindings::random::{insecure, insecure_seed, random};

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
    seq: AtomicU64,
}

impl Recorder {
    pub fn new(journal: Arc<JournalWriter>, step: &str, attempt: u32) -> Self {
        Self {
            journal,
            step: step.to_string(),
            attempt,
            seq: AtomicU64::new(0),
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
    pub fn is_replay(&self) -> bool {
        matches!(self, Tape::Replay(_))
    }

    /// In a replay, the recorded result of this call (or a trap when it diverges);
    /// otherwise None: do the call.
    pub fn replay<R: DeserializeOwned>(
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

    pub fn record<R: Serialize>(&self, interface: &str, function: &str, args: Value, result: &R, started: Instant) {
        let Tape::Record(rec) = self else { return };
        rec.journal.write(Entry::Call {
            step: rec.step.clone(),
            attempt: rec.attempt,
            seq: rec.seq.fetch_add(1, Ordering::Relaxed),
            interface: interface.to_string(),
            function: function.to_string(),
            args,
            result: serde_json::to_value(result).unwrap_or(Value::Null),
            micros: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        });
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
    let mask = crate::capabilities::secrets::MASK;
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

/// A host call through the tape: in a replay, the journal answers; otherwise `$live` runs
/// and is recorded. Evaluates to the call's result; `?`s a divergence as a trap.
#[macro_export]
macro_rules! taped {
    ($state:expr, $interface:expr, $function:expr, $args:expr, $live:expr) => {{
        let args = serde_json::to_value(&$args).unwrap_or(serde_json::Value::Null);
        match $state.tape.replay($interface, $function, &args)? {
            Some(recorded) => recorded,
            None => {
                let started = std::time::Instant::now();
                let result = $live;
                $state.tape.record($interface, $function, args, &result, started);
                result
            }
        }
    }};
}

const MONOTONIC: &str = "wasi:clocks/monotonic-clock";
const WALL: &str = "wasi:clocks/wall-clock";

impl StepState {
    fn clocks(&mut self) -> wasmtime_wasi::clocks::WasiClocksCtxView<'_> {
        wasmtime_wasi::clocks::WasiClocksCtxView {
            ctx: self.wasi.clocks(),
            table: &mut self.table,
        }
    }

    /// A pollable ready now: what a sleep is in a replay.
    fn ready_now(&mut self) -> wasmtime::Result<Resource<DynPollable>> {
        monotonic_clock::Host::subscribe_duration(&mut self.clocks(), 0)
    }

    /// Random bytes through the tape; the journal keeps them as hex.
    fn taped_bytes(
        &mut self,
        interface: &str,
        function: &str,
        len: u64,
        live: impl FnOnce(&mut Self) -> wasmtime::Result<Vec<u8>>,
    ) -> wasmtime::Result<Vec<u8>> {
        let hex: String = taped!(self, interface, function, len, hex::encode(live(self)?));
        hex::decode(hex).map_err(|e| wasmtime::format_err!("journal: {e}"))
    }
}

impl monotonic_clock::Host for StepState {
    fn now(&mut self) -> wasmtime::Result<monotonic_clock::Instant> {
        Ok(taped!(
            self,
            MONOTONIC,
            "now",
            (),
            monotonic_clock::Host::now(&mut self.clocks())?
        ))
    }

    fn resolution(&mut self) -> wasmtime::Result<monotonic_clock::Duration> {
        monotonic_clock::Host::resolution(&mut self.clocks())
    }

    fn subscribe_instant(&mut self, when: monotonic_clock::Instant) -> wasmtime::Result<Resource<DynPollable>> {
        let () = taped!(self, MONOTONIC, "subscribe-instant", when, ());
        if self.tape.is_replay() {
            return self.ready_now();
        }
        monotonic_clock::Host::subscribe_instant(&mut self.clocks(), when)
    }

    fn subscribe_duration(&mut self, duration: monotonic_clock::Duration) -> wasmtime::Result<Resource<DynPollable>> {
        let () = taped!(self, MONOTONIC, "subscribe-duration", duration, ());
        if self.tape.is_replay() {
            return self.ready_now();
        }
        monotonic_clock::Host::subscribe_duration(&mut self.clocks(), duration)
    }
}

impl wall_clock::Host for StepState {
    fn now(&mut self) -> wasmtime::Result<wall_clock::Datetime> {
        let (seconds, nanoseconds): (u64, u32) = taped!(self, WALL, "now", (), {
            let now = wall_clock::Host::now(&mut self.clocks())?;
            (now.seconds, now.nanoseconds)
        });
        Ok(wall_clock::Datetime { seconds, nanoseconds })
    }

    fn resolution(&mut self) -> wasmtime::Result<wall_clock::Datetime> {
        wall_clock::Host::resolution(&mut self.clocks())
    }
}

impl random::Host for StepState {
    fn get_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        self.taped_bytes("wasi:random/random", "get-random-bytes", len, |s| {
            random::Host::get_random_bytes(s.wasi.random(), len)
        })
    }

    fn get_random_u64(&mut self) -> wasmtime::Result<u64> {
        Ok(taped!(
            self,
            "wasi:random/random",
            "get-random-u64",
            (),
            random::Host::get_random_u64(self.wasi.random())?
        ))
    }
}

impl insecure::Host for StepState {
    fn get_insecure_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        self.taped_bytes("wasi:random/insecure", "get-insecure-random-bytes", len, |s| {
            insecure::Host::get_insecure_random_bytes(s.wasi.random(), len)
        })
    }

    fn get_insecure_random_u64(&mut self) -> wasmtime::Result<u64> {
        Ok(taped!(
            self,
            "wasi:random/insecure",
            "get-insecure-random-u64",
            (),
            insecure::Host::get_insecure_random_u64(self.wasi.random())?
        ))
    }
}

impl insecure_seed::Host for StepState {
    fn insecure_seed(&mut self) -> wasmtime::Result<(u64, u64)> {
        Ok(taped!(
            self,
            "wasi:random/insecure-seed",
            "insecure-seed",
            (),
            insecure_seed::Host::insecure_seed(self.wasi.random())?
        ))
    }
}
