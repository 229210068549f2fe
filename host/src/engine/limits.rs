//! Per-step resource limits, and a limiter that remembers which limit a step hit so the
//! failure can name it.

use crate::pipeline::model::LimitOverrides;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepLimits {
    /// Linear memory of one of the step's memories.
    pub memory_bytes: usize,
    /// Wall-clock time of one attempt.
    pub timeout: Duration,
    /// Wasm instructions, roughly; None for no fuel limit (time still bounds the step).
    pub fuel: Option<u64>,
    /// Bytes of log lines (the step's own, its stdout and stderr, its programs' output).
    pub log_bytes: u64,
    /// Bytes of captured program output per stream, and of the step's outputs together.
    pub output_bytes: u64,
    /// Bytes a step may write to disk through its grants and scratch directory
    /// (see [`super::filesystem`]).
    pub disk_bytes: u64,
    /// Bytes of journal an attempt's host calls may take in a recorded run.
    pub journal_bytes: u64,
    /// Address space of each of its programs, when the pipeline sets `memory` (the default
    /// of a step's own memory is no fit for a compiler).
    pub program_memory: Option<u64>,
    /// Processes its programs may have at once, when the pipeline sets `processes`.
    pub processes: Option<u64>,
}

impl Default for StepLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 512 << 20,
            timeout: Duration::from_secs(30 * 60),
            fuel: None,
            log_bytes: 10 << 20,
            output_bytes: 1 << 20,
            disk_bytes: 1 << 30,
            journal_bytes: 32 << 20,
            program_memory: None,
            processes: None,
        }
    }
}

impl StepLimits {
    pub fn from_overrides(o: LimitOverrides) -> Self {
        let d = Self::default();
        Self {
            memory_bytes: o
                .memory
                .map_or(d.memory_bytes, |m| usize::try_from(m).unwrap_or(usize::MAX)),
            timeout: o.timeout.unwrap_or(d.timeout),
            fuel: o.fuel,
            log_bytes: o.log.unwrap_or(d.log_bytes),
            output_bytes: o.output.unwrap_or(d.output_bytes),
            disk_bytes: o.disk.unwrap_or(d.disk_bytes),
            journal_bytes: o.journal.unwrap_or(d.journal_bytes),
            program_memory: o.memory,
            processes: o.processes,
        }
    }
}

/// Enforces [`StepLimits::memory_bytes`] and records a refusal.
#[derive(Debug, Clone)]
pub struct StepLimiter {
    pub memory_bytes: usize,
    /// Set when a memory grow was refused: the trap that follows is the limit's doing.
    pub memory_refused: Option<usize>,
}

impl StepLimiter {
    pub fn new(limits: &StepLimits) -> Self {
        Self {
            memory_bytes: limits.memory_bytes,
            memory_refused: None,
        }
    }
}

impl wasmtime::ResourceLimiter for StepLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.memory_refused = Some(desired);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// The disk bytes a step may still write.
#[derive(Debug)]
pub struct DiskBudget {
    pub limit: u64,
    used: AtomicU64,
    exceeded: AtomicBool,
}

impl DiskBudget {
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            used: AtomicU64::new(0),
            exceeded: AtomicBool::new(false),
        }
    }

    /// Spend `bytes`; false once the limit would be passed (nothing is spent then).
    pub fn charge(&self, bytes: u64) -> bool {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let next = used.saturating_add(bytes);
            if next > self.limit {
                self.exceeded.store(true, Ordering::Relaxed);
                return false;
            }
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }
}
