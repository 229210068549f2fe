//! Per-step resource limits, and a limiter that remembers which limit a step hit so the
//! failure can name it.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepLimits {
    /// Linear memory of the step's instance, all memories together.
    pub memory_bytes: usize,
    /// Wall-clock time of one attempt.
    pub timeout: Duration,
}

impl Default for StepLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 512 << 20,
            timeout: Duration::from_secs(30 * 60),
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
