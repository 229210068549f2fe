//! The WASI clocks and randomness a step reads go through its tape, so a replay hands the
//! step the same times and bytes, and its sleeps take no time. The engine's linker serves
//! these interfaces from here instead of wasmtime-wasi's own (which do the work).

use crate::journal::tape::Tape;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::clocks::{monotonic_clock, wall_clock};
use wasmtime_wasi::p2::bindings::random::{insecure, insecure_seed, random};

/// The view these interfaces are served on.
pub struct TapedClocks<'a> {
    pub tape: &'a Tape,
    pub wasi: &'a mut WasiCtx,
    pub table: &'a mut ResourceTable,
}

/// The linker's marker for [`TapedClocks`].
pub struct HasTapedClocks;

impl wasmtime::component::HasData for HasTapedClocks {
    type Data<'a> = TapedClocks<'a>;
}

const MONOTONIC: &str = "wasi:clocks/monotonic-clock";
const WALL: &str = "wasi:clocks/wall-clock";

impl TapedClocks<'_> {
    fn clocks(&mut self) -> wasmtime_wasi::clocks::WasiClocksCtxView<'_> {
        wasmtime_wasi::clocks::WasiClocksCtxView {
            ctx: self.wasi.clocks(),
            table: self.table,
        }
    }

    /// A pollable ready now: what a sleep is in a replay.
    fn ready_now(&mut self) -> wasmtime::Result<Resource<DynPollable>> {
        monotonic_clock::Host::subscribe_duration(&mut self.clocks(), 0)
    }

    /// Random bytes through the tape; the journal keeps them as hex.
    fn taped_bytes(
        &mut self,
        function: (&str, &str),
        len: u64,
        live: impl FnOnce(&mut Self) -> wasmtime::Result<Vec<u8>>,
    ) -> wasmtime::Result<Vec<u8>> {
        let tape = self.tape;
        let hex: String = tape.call_sync(function.0, function.1, &len, || Ok(hex::encode(live(self)?)))?;
        hex::decode(hex).map_err(|e| wasmtime::format_err!("journal: {e}"))
    }
}

impl monotonic_clock::Host for TapedClocks<'_> {
    fn now(&mut self) -> wasmtime::Result<monotonic_clock::Instant> {
        let tape = self.tape;
        tape.call_sync(MONOTONIC, "now", &(), || monotonic_clock::Host::now(&mut self.clocks()))
    }

    fn resolution(&mut self) -> wasmtime::Result<monotonic_clock::Duration> {
        monotonic_clock::Host::resolution(&mut self.clocks())
    }

    fn subscribe_instant(&mut self, when: monotonic_clock::Instant) -> wasmtime::Result<Resource<DynPollable>> {
        self.tape.call_sync(MONOTONIC, "subscribe-instant", &when, || Ok(()))?;
        if self.tape.is_replay() {
            return self.ready_now();
        }
        monotonic_clock::Host::subscribe_instant(&mut self.clocks(), when)
    }

    fn subscribe_duration(&mut self, duration: monotonic_clock::Duration) -> wasmtime::Result<Resource<DynPollable>> {
        self.tape
            .call_sync(MONOTONIC, "subscribe-duration", &duration, || Ok(()))?;
        if self.tape.is_replay() {
            return self.ready_now();
        }
        monotonic_clock::Host::subscribe_duration(&mut self.clocks(), duration)
    }
}

impl wall_clock::Host for TapedClocks<'_> {
    fn now(&mut self) -> wasmtime::Result<wall_clock::Datetime> {
        let tape = self.tape;
        let (seconds, nanoseconds): (u64, u32) = tape.call_sync(WALL, "now", &(), || {
            let now = wall_clock::Host::now(&mut self.clocks())?;
            Ok((now.seconds, now.nanoseconds))
        })?;
        Ok(wall_clock::Datetime { seconds, nanoseconds })
    }

    fn resolution(&mut self) -> wasmtime::Result<wall_clock::Datetime> {
        wall_clock::Host::resolution(&mut self.clocks())
    }
}

impl random::Host for TapedClocks<'_> {
    fn get_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        self.taped_bytes(("wasi:random/random", "get-random-bytes"), len, |s| {
            random::Host::get_random_bytes(s.wasi.random(), len)
        })
    }

    fn get_random_u64(&mut self) -> wasmtime::Result<u64> {
        let tape = self.tape;
        tape.call_sync("wasi:random/random", "get-random-u64", &(), || {
            random::Host::get_random_u64(self.wasi.random())
        })
    }
}

impl insecure::Host for TapedClocks<'_> {
    fn get_insecure_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        self.taped_bytes(("wasi:random/insecure", "get-insecure-random-bytes"), len, |s| {
            insecure::Host::get_insecure_random_bytes(s.wasi.random(), len)
        })
    }

    fn get_insecure_random_u64(&mut self) -> wasmtime::Result<u64> {
        let tape = self.tape;
        tape.call_sync("wasi:random/insecure", "get-insecure-random-u64", &(), || {
            insecure::Host::get_insecure_random_u64(self.wasi.random())
        })
    }
}

impl insecure_seed::Host for TapedClocks<'_> {
    fn insecure_seed(&mut self) -> wasmtime::Result<(u64, u64)> {
        let tape = self.tape;
        tape.call_sync("wasi:random/insecure-seed", "insecure-seed", &(), || {
            insecure_seed::Host::insecure_seed(self.wasi.random())
        })
    }
}
