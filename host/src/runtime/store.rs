//! Per-store state: the empty WASI context, the memory limiter and the captured stderr.

use std::time::Duration;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{
    Deterministic, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView,
};

/// How much of a component's stderr is kept (enough for a panic message).
const STDERR_CAPACITY: usize = 8 << 10;

/// State of one adapter store.
pub struct StoreData {
    /// Built on the first WASI call. `WasiCtxBuilder` seeds its default RNGs from the thread RNG
    /// and allocates (twice: `build` leaves a fresh default builder behind), which was most of an
    /// instantiation's host-side cost, while the adapters make no WASI call on a normal path
    /// (only a panic writes to stderr). The context is the same whenever it is built.
    wasi: Option<WasiCtx>,
    table: ResourceTable,
    limiter: MemoryCap,
    stderr: MemoryOutputPipe,
}

impl StoreData {
    /// A store with no preopens, no sockets, no env, no args, frozen clocks, deterministic
    /// randomness, stderr captured into a small buffer, and memory capped at `memory_cap` bytes.
    pub fn new(memory_cap: usize) -> Self {
        Self {
            wasi: None,
            table: ResourceTable::new(),
            limiter: MemoryCap { cap: memory_cap, hit: false },
            stderr: MemoryOutputPipe::new(STDERR_CAPACITY),
        }
    }

    /// The sandboxed WASI context: see [`StoreData::new`].
    fn build_wasi(stderr: &MemoryOutputPipe) -> WasiCtx {
        let mut b = WasiCtxBuilder::new();
        b.stderr(stderr.clone())
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .secure_random(Deterministic::new(vec![0x5a, 0xa5, 0x3c, 0xc3]))
            .insecure_random(Deterministic::new(vec![0x5a, 0xa5, 0x3c, 0xc3]))
            .insecure_random_seed(0)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        b.build()
    }

    pub(crate) fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limiter
    }

    pub(crate) fn memory_cap_hit(&self) -> bool {
        self.limiter.hit
    }

    pub(crate) fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents()).into_owned()
    }
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let ctx = self.wasi.get_or_insert_with(|| Self::build_wasi(&self.stderr));
        WasiCtxView { ctx, table: &mut self.table }
    }
}

/// Traps any memory growth past the cap, and remembers that it did so the caller can name the
/// limit instead of reporting an anonymous trap.
struct MemoryCap {
    cap: usize,
    hit: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.hit = true;
            wasmtime::bail!("memory cap of {} bytes reached (asked for {desired})", self.cap);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// Adapters must not decide anything by the clock, so the clock they can see never moves.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}
