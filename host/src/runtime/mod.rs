//! The wasmtime runtime that runs adapter components: engine configuration, the epoch ticker,
//! per-store state and limits, the compile cache, and the adapter registry.
//!
//! # Lifetimes
//!
//! - **Process**: one [`AdapterRuntime`] holds the `Engine`, the `Linker` and, per adapter, an
//!   `InstancePre` (type-checked and ready to instantiate) plus its descriptor.
//! - **Call**: every export call runs in a `Store` of its own adapter, under an epoch deadline and a
//!   memory cap. Stores are kept warm and reused between calls because adapters are pure; a store
//!   whose call trapped is thrown away, so one bad call can never poison the next.
//!
//! # Why the limits are here and nowhere else
//!
//! Adapters are third-party code. A component that loops, traps or allocates without bound must
//! fail that one call with an error naming the adapter and the limit, and the host must carry on.
//! The pooling allocator bounds the number and size of live instances, the epoch deadline bounds CPU
//! time per call, and the store limiter bounds memory. Calls are synchronous: they are
//! microseconds of pure computation, so the epoch deadline (not an async timeout) is the guard.

mod cache;
mod store;

pub use cache::CompileCache;
pub use store::StoreData;

use crate::bindings::{
    AdapterComponentPre, Connection, Descriptor, Failure, HttpResponse, Operation,
    RateObservation, Step, Webhook,
};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::{Component, ComponentExportIndex, Func, Linker, TypedFunc};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};

/// Bytes of linear memory (and of table) kept resident per pool slot after an instance is freed.
/// A Rust adapter touches its 1 MiB shadow stack's top, its data and a few heap pages per call.
const KEEP_RESIDENT: usize = 2 << 20;

/// Limits and sizing for the adapter runtime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Wall-clock budget for one export call before it is interrupted.
    pub call_deadline: Duration,
    /// How often the epoch advances; the deadline is rounded up to whole ticks.
    pub epoch_tick: Duration,
    /// Maximum linear memory one adapter instance may grow to, in bytes.
    pub memory_cap: usize,
    /// Maximum live adapter instances across all adapters (the pooling allocator's size).
    pub max_instances: u32,
    /// Warm instances kept per adapter for reuse.
    pub warm_per_adapter: usize,
    /// Where compiled components are cached; `None` compiles on every start.
    pub cache_dir: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            call_deadline: Duration::from_millis(250),
            epoch_tick: Duration::from_millis(5),
            memory_cap: 64 << 20,
            max_instances: 256,
            warm_per_adapter: 32,
            cache_dir: None,
        }
    }
}

/// Why a call into an adapter failed. Every case names the adapter; the limit cases name the
/// limit. These are component bugs or hostile components, never platform answers (those are
/// [`Failure`]s inside a successful call).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The call ran past its deadline (for example, an infinite loop).
    Deadline {
        /// The adapter's id.
        adapter: String,
        /// The export that was called.
        export: &'static str,
        /// The limit that was hit.
        limit: Duration,
    },
    /// The call tried to grow memory past the cap.
    Memory {
        /// The adapter's id.
        adapter: String,
        /// The export that was called.
        export: &'static str,
        /// The cap in bytes.
        cap: usize,
    },
    /// The call trapped (a panic, `unreachable`, an out-of-bounds access).
    Trap {
        /// The adapter's id.
        adapter: String,
        /// The export that was called.
        export: &'static str,
        /// The trap, and anything the component wrote to stderr (its panic message).
        message: String,
    },
    /// No instance could be created (the pool is exhausted, or instantiation trapped).
    Instantiate {
        /// The adapter's id.
        adapter: String,
        /// What went wrong.
        message: String,
    },
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Deadline { adapter, export, limit } => write!(
                f,
                "adapter `{adapter}` did not finish `{export}` within its {} ms deadline and was \
                 interrupted (a loop in the component?); the call failed, the gateway carries on",
                limit.as_millis()
            ),
            CallError::Memory { adapter, export, cap } => write!(
                f,
                "adapter `{adapter}` tried to grow its memory past the {} MiB cap in `{export}`; \
                 the call failed, the gateway carries on",
                cap >> 20
            ),
            CallError::Trap { adapter, export, message } => {
                write!(f, "adapter `{adapter}` trapped in `{export}`: {message}")
            }
            CallError::Instantiate { adapter, message } => {
                write!(f, "could not instantiate adapter `{adapter}`: {message}")
            }
        }
    }
}

impl std::error::Error for CallError {}

/// Why an adapter could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not a valid component (or not a component at all).
    #[error("{source_name}: not a loadable WebAssembly component: {reason}. Build adapters for wasm32-wasip2 (see docs/writing-an-adapter.md)")]
    Compile {
        /// Where the bytes came from.
        source_name: String,
        /// The compiler's complaint.
        reason: String,
    },
    /// The component does not implement the contract, or imports something the host refuses.
    #[error("{source_name}: does not fit deskgate:adapter@0.1.0: {reason}. An adapter must export `deskgate:adapter/adapter@0.1.0` and import nothing that does IO")]
    Contract {
        /// Where the bytes came from.
        source_name: String,
        /// What does not fit.
        reason: String,
    },
    /// `describe` failed.
    #[error("{source_name}: describe() failed: {error}")]
    Describe {
        /// Where the bytes came from.
        source_name: String,
        /// The call error.
        error: CallError,
    },
    /// Two adapters claim the same platform id.
    #[error("adapter id `{id}` is provided by both {first} and {second}; remove one of them")]
    Duplicate {
        /// The id.
        id: String,
        /// The first source.
        first: String,
        /// The second source.
        second: String,
    },
    /// Reading the file failed.
    #[error("{path}: {error}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        error: std::io::Error,
    },
}

/// Increments the engine's epoch on a dedicated thread until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine, tick: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("deskgate-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })
            .expect("spawn epoch ticker thread");
        Self { stop, thread: Some(thread) }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The process-wide adapter runtime: engine, linker, ticker and the loaded adapters.
pub struct AdapterRuntime {
    engine: Engine,
    linker: Linker<StoreData>,
    config: RuntimeConfig,
    cache: Option<CompileCache>,
    adapters: BTreeMap<String, Arc<Adapter>>,
    _ticker: EpochTicker,
}

impl AdapterRuntime {
    /// Build the engine (pooling allocator, epoch interruption) and start the epoch ticker.
    ///
    /// # Errors
    /// When the engine cannot be configured (for example, the pool cannot reserve memory).
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Self> {
        let mut pool = PoolingAllocationConfig::default();
        // Rust components carry a main module and the WASI shim: budget a few core instances,
        // memories and tables per component instance.
        pool.total_component_instances(config.max_instances)
            .total_core_instances(config.max_instances * 4)
            .total_memories(config.max_instances * 2)
            .total_tables(config.max_instances * 4)
            .max_memory_size(config.memory_cap)
            .total_stacks(config.max_instances);
        // Reset a freed slot's memory and tables in place: with `PAGEMAP_SCAN` (Linux 6.7+; `Auto`
        // falls back to the default elsewhere) only the pages the instance dirtied, up to the
        // keep-resident size, are restored to their initial image with `memset`, instead of
        // `madvise` dropping them and the next instance taking a page fault for each page it
        // touches again. The reset is exactly as thorough either way: a new instance never sees a
        // previous one's memory. Per slot at most this much stays resident.
        pool.pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT);
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .max_wasm_stack(1 << 20);
        // `DESKGATE_WASM_PERFMAP=1` writes /tmp/perf-<pid>.map so `perf report` names the
        // adapters' compiled functions (profiling only; off by default).
        if std::env::var_os("DESKGATE_WASM_PERFMAP").is_some_and(|v| v == "1") {
            wasm.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&wasm)?;
        let mut linker = Linker::new(&engine);
        // WASI is offered only because Rust's std imports parts of it; the context each store
        // gets has no preopens, no sockets, no env, frozen clocks and deterministic randomness.
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        let cache = config.cache_dir.as_ref().map(|d| CompileCache::new(d.clone()));
        let ticker = EpochTicker::start(engine.clone(), config.epoch_tick);
        Ok(Self { engine, linker, config, cache, adapters: BTreeMap::new(), _ticker: ticker })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The configuration in force.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Compile (or fetch from the cache) and type-check a component, without registering it.
    ///
    /// # Errors
    /// [`LoadError`] naming `source_name` and what is wrong.
    pub fn prepare(&self, source_name: &str, bytes: &[u8]) -> Result<Adapter, LoadError> {
        let component = match &self.cache {
            Some(cache) => cache.load_or_compile(&self.engine, bytes),
            None => Component::new(&self.engine, bytes),
        }
        .map_err(|e| LoadError::Compile { source_name: source_name.into(), reason: format!("{e:#}") })?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Contract { source_name: source_name.into(), reason: format!("{e:#}") })?;
        // Type-checks every export against the contract: `Exports` relies on it.
        let pre = AdapterComponentPre::new(pre)
            .map_err(|e| LoadError::Contract { source_name: source_name.into(), reason: format!("{e:#}") })?;
        let exports = ExportIndices::new(&component)
            .map_err(|e| LoadError::Contract { source_name: source_name.into(), reason: format!("{e:#}") })?;
        let mut adapter = Adapter {
            id: source_name.to_string(),
            source: source_name.to_string(),
            pre,
            exports,
            descriptor: None,
            engine: self.engine.clone(),
            limits: Limits::from(&self.config),
            warm: Mutex::new(Vec::new()),
            stats: AdapterStats::default(),
        };
        let descriptor = adapter
            .describe_fresh()
            .map_err(|error| LoadError::Describe { source_name: source_name.into(), error })?;
        adapter.id = descriptor.id.clone();
        adapter.descriptor = Some(descriptor);
        Ok(adapter)
    }

    /// Load a component and register it under its descriptor's id.
    ///
    /// # Errors
    /// As [`prepare`](Self::prepare), plus [`LoadError::Duplicate`] when the id is taken.
    pub fn load(&mut self, source_name: &str, bytes: &[u8]) -> Result<Arc<Adapter>, LoadError> {
        let adapter = self.prepare(source_name, bytes)?;
        if let Some(existing) = self.adapters.get(&adapter.id) {
            return Err(LoadError::Duplicate {
                id: adapter.id.clone(),
                first: existing.source.clone(),
                second: source_name.into(),
            });
        }
        let adapter = Arc::new(adapter);
        self.adapters.insert(adapter.id.clone(), adapter.clone());
        Ok(adapter)
    }

    /// Load every `*.wasm` file in `dir`. One bad file does not stop the others: each failure is
    /// returned beside the adapters that loaded.
    ///
    /// # Errors
    /// Only when the directory itself cannot be read.
    pub fn load_dir(&mut self, dir: &Path) -> Result<Vec<LoadError>, LoadError> {
        let io = |error| LoadError::Io { path: dir.display().to_string(), error };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
            .collect();
        paths.sort();
        let mut errors = Vec::new();
        for path in paths {
            let name = path.display().to_string();
            match std::fs::read(&path) {
                Ok(bytes) => {
                    if let Err(e) = self.load(&name, &bytes) {
                        errors.push(e);
                    }
                }
                Err(error) => errors.push(LoadError::Io { path: name, error }),
            }
        }
        Ok(errors)
    }

    /// Load the adapters built into this binary (Zendesk, Freshdesk, Intercom).
    ///
    /// # Errors
    /// When a built-in adapter fails to load, which means a broken build.
    pub fn load_builtin(&mut self) -> Result<(), LoadError> {
        for (name, bytes) in crate::builtin::ADAPTERS {
            self.load(&format!("builtin:{name}"), bytes)?;
        }
        Ok(())
    }

    /// The adapter registered under `id`.
    pub fn get(&self, id: &str) -> Option<Arc<Adapter>> {
        self.adapters.get(id).cloned()
    }

    /// All registered adapters, by id.
    pub fn adapters(&self) -> impl Iterator<Item = &Arc<Adapter>> {
        self.adapters.values()
    }
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    deadline: Duration,
    deadline_ticks: u64,
    memory_cap: usize,
    warm_max: usize,
}

impl From<&RuntimeConfig> for Limits {
    fn from(c: &RuntimeConfig) -> Self {
        let tick = c.epoch_tick.as_nanos().max(1);
        // Round up, and allow one extra tick: the ticker may fire right after the deadline is set.
        let ticks = c.call_deadline.as_nanos().div_ceil(tick) as u64 + 1;
        Self {
            deadline: c.call_deadline,
            deadline_ticks: ticks,
            memory_cap: c.memory_cap,
            warm_max: c.warm_per_adapter,
        }
    }
}

/// Counters per adapter, for metrics.
#[derive(Debug, Default)]
pub struct AdapterStats {
    /// Export calls made.
    pub calls: AtomicU64,
    /// Calls that failed with a [`CallError`].
    pub call_errors: AtomicU64,
    /// Instances created.
    pub instantiations: AtomicU64,
}

struct Warm {
    store: Store<StoreData>,
    exports: Exports,
}

/// The name of the contract's exported interface.
const ADAPTER_INTERFACE: &str = "deskgate:adapter/adapter@0.1.0";

/// Where the contract's functions are among a component's exports, looked up once per component.
#[derive(Debug, Clone, Copy)]
struct ExportIndices {
    describe: ComponentExportIndex,
    start: ComponentExportIndex,
    resume: ComponentExportIndex,
    observe: ComponentExportIndex,
    parse_webhook: ComponentExportIndex,
}

impl ExportIndices {
    fn new(component: &Component) -> anyhow::Result<Self> {
        let iface = component
            .get_export_index(None, ADAPTER_INTERFACE)
            .ok_or_else(|| anyhow::anyhow!("no export `{ADAPTER_INTERFACE}`"))?;
        let func = |name: &str| {
            component
                .get_export_index(Some(&iface), name)
                .ok_or_else(|| anyhow::anyhow!("no export `{name}` in `{ADAPTER_INTERFACE}`"))
        };
        Ok(Self {
            describe: func("describe")?,
            start: func("start")?,
            resume: func("resume")?,
            observe: func("observe")?,
            parse_webhook: func("parse-webhook")?,
        })
    }
}

/// One instance's contract functions.
///
/// The generated bindings (`AdapterComponentPre::instantiate`) type-check every export again on
/// each instantiation (`get_typed_func`: a walk over the contract's records, variants and enums with
/// a string comparison per field and case), about a quarter of an instantiation's cost. The
/// component was already checked against exactly these signatures once, when it was loaded
/// (`AdapterComponentPre::new` in [`AdapterRuntime::prepare`]), and an instance's export types are
/// its component's, so the functions are looked up by index and called as the generated code calls
/// them after its check, through `TypedFunc::new_unchecked`.
struct Exports {
    describe: Func,
    start: Func,
    resume: Func,
    observe: Func,
    parse_webhook: Func,
}

// SAFETY (every `new_unchecked` below): the signature is the one `AdapterComponentPre::new`
// type-checked for this export of this component at load time (the generated `GuestIndices::new`
// checks `describe`, `start`, `resume`, `observe` and `parse-webhook` with these parameter and
// result types), and the `Func` comes from an instance of that same component.
#[allow(unsafe_code)]
impl Exports {
    fn load(store: &mut Store<StoreData>, instance: &wasmtime::component::Instance, idx: &ExportIndices) -> wasmtime::Result<Self> {
        let mut func = |i: &ComponentExportIndex| {
            instance.get_func(&mut *store, i).ok_or_else(|| wasmtime::format_err!("export missing from instance"))
        };
        Ok(Self {
            describe: func(&idx.describe)?,
            start: func(&idx.start)?,
            resume: func(&idx.resume)?,
            observe: func(&idx.observe)?,
            parse_webhook: func(&idx.parse_webhook)?,
        })
    }

    fn describe(&self, store: &mut Store<StoreData>) -> wasmtime::Result<Descriptor> {
        let f = unsafe { TypedFunc::<(), (Descriptor,)>::new_unchecked(self.describe) };
        Ok(f.call(store, ())?.0)
    }

    fn start(&self, store: &mut Store<StoreData>, conn: &Connection, op: &Operation) -> wasmtime::Result<Result<Step, Failure>> {
        let f = unsafe { TypedFunc::<(&Connection, &Operation), (Result<Step, Failure>,)>::new_unchecked(self.start) };
        Ok(f.call(store, (conn, op))?.0)
    }

    fn resume(
        &self,
        store: &mut Store<StoreData>,
        conn: &Connection,
        op: &Operation,
        state: &str,
        response: &HttpResponse,
    ) -> wasmtime::Result<Result<Step, Failure>> {
        let f = unsafe {
            TypedFunc::<(&Connection, &Operation, &str, &HttpResponse), (Result<Step, Failure>,)>::new_unchecked(
                self.resume,
            )
        };
        Ok(f.call(store, (conn, op, state, response))?.0)
    }

    fn observe(&self, store: &mut Store<StoreData>, conn: &Connection, response: &HttpResponse) -> wasmtime::Result<Vec<RateObservation>> {
        let f = unsafe { TypedFunc::<(&Connection, &HttpResponse), (Vec<RateObservation>,)>::new_unchecked(self.observe) };
        Ok(f.call(store, (conn, response))?.0)
    }

    fn parse_webhook(
        &self,
        store: &mut Store<StoreData>,
        conn: &Connection,
        headers: &[(String, String)],
        body: &[u8],
    ) -> wasmtime::Result<Result<Webhook, Failure>> {
        let f = unsafe {
            TypedFunc::<(&Connection, &[(String, String)], &[u8]), (Result<Webhook, Failure>,)>::new_unchecked(
                self.parse_webhook,
            )
        };
        Ok(f.call(store, (conn, headers, body))?.0)
    }
}

/// One loaded adapter: its descriptor and a pool of warm instances.
pub struct Adapter {
    id: String,
    source: String,
    pre: AdapterComponentPre<StoreData>,
    exports: ExportIndices,
    descriptor: Option<Descriptor>,
    engine: Engine,
    limits: Limits,
    warm: Mutex<Vec<Warm>>,
    stats: AdapterStats,
}

impl fmt::Debug for Adapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Adapter").field("id", &self.id).field("source", &self.source).finish()
    }
}

impl Adapter {
    /// The platform id from the descriptor.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where the component came from (a path, or `builtin:<name>`).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The descriptor, read once at load time.
    pub fn descriptor(&self) -> &Descriptor {
        self.descriptor.as_ref().expect("descriptor is read at load time")
    }

    /// Counters for metrics.
    pub fn stats(&self) -> &AdapterStats {
        &self.stats
    }

    /// Create a fresh instance (used by benchmarks to measure instantiation, and internally).
    ///
    /// # Errors
    /// [`CallError::Instantiate`] when the pool is exhausted or instantiation traps.
    pub fn instantiate(&self) -> Result<(), CallError> {
        self.fresh().map(|_| ())
    }

    fn fresh(&self) -> Result<Warm, CallError> {
        self.stats.instantiations.fetch_add(1, Ordering::Relaxed);
        let mut store = Store::new(&self.engine, StoreData::new(self.limits.memory_cap));
        store.limiter(|d| d.limiter());
        store.set_epoch_deadline(self.limits.deadline_ticks);
        store.epoch_deadline_trap();
        let exports = self
            .pre
            .instance_pre()
            .instantiate(&mut store)
            .and_then(|instance| Exports::load(&mut store, &instance, &self.exports))
            .map_err(|e| CallError::Instantiate { adapter: self.id.clone(), message: format!("{e:#}") })?;
        Ok(Warm { store, exports })
    }

    fn describe_fresh(&self) -> Result<Descriptor, CallError> {
        self.call("describe", |store, b| b.describe(store))
    }

    /// Run one export call under the limits, on a warm instance when one is free.
    fn call<R>(
        &self,
        export: &'static str,
        f: impl FnOnce(&mut Store<StoreData>, &Exports) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let warm = self.warm.lock().expect("warm pool lock").pop();
        let mut warm = match warm {
            Some(w) => w,
            None => self.fresh().inspect_err(|_| {
                self.stats.call_errors.fetch_add(1, Ordering::Relaxed);
            })?,
        };
        warm.store.set_epoch_deadline(self.limits.deadline_ticks);
        match f(&mut warm.store, &warm.exports) {
            Ok(r) => {
                let mut pool = self.warm.lock().expect("warm pool lock");
                if pool.len() < self.limits.warm_max {
                    pool.push(warm);
                }
                Ok(r)
            }
            Err(e) => {
                // The instance is dropped here: state after a trap cannot be trusted.
                self.stats.call_errors.fetch_add(1, Ordering::Relaxed);
                Err(self.classify(export, &warm.store, e))
            }
        }
    }

    fn classify(&self, export: &'static str, store: &Store<StoreData>, e: wasmtime::Error) -> CallError {
        let adapter = self.id.clone();
        if store.data().memory_cap_hit() {
            return CallError::Memory { adapter, export, cap: self.limits.memory_cap };
        }
        if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            return CallError::Deadline { adapter, export, limit: self.limits.deadline };
        }
        let mut message = format!("{e:#}");
        let stderr = store.data().stderr_text();
        if !stderr.trim().is_empty() {
            message.push_str("; component stderr: ");
            message.push_str(stderr.trim());
        }
        CallError::Trap { adapter, export, message }
    }

    /// `start`: plan the first step of `op`.
    ///
    /// # Errors
    /// [`CallError`] when the component misbehaves; platform outcomes are inside the `Ok`.
    pub fn start(&self, conn: &Connection, op: &Operation) -> Result<Result<Step, Failure>, CallError> {
        self.call("start", |store, b| b.start(store, conn, op))
    }

    /// `resume`: interpret `response` for the request sent with `state`, and plan the next step.
    ///
    /// # Errors
    /// [`CallError`] when the component misbehaves.
    pub fn resume(
        &self,
        conn: &Connection,
        op: &Operation,
        state: &str,
        response: &HttpResponse,
    ) -> Result<Result<Step, Failure>, CallError> {
        self.call("resume", |store, b| {
            b.resume(store, conn, op, state, response)
        })
    }

    /// `observe`: rate-limit readings from a response's headers.
    ///
    /// # Errors
    /// [`CallError`] when the component misbehaves.
    pub fn observe(&self, conn: &Connection, response: &HttpResponse) -> Result<Vec<RateObservation>, CallError> {
        self.call("observe", |store, b| b.observe(store, conn, response))
    }

    /// `parse-webhook`: normalized events plus what to verify.
    ///
    /// # Errors
    /// [`CallError`] when the component misbehaves.
    pub fn parse_webhook(
        &self,
        conn: &Connection,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<Result<Webhook, Failure>, CallError> {
        self.call("parse-webhook", |store, b| {
            b.parse_webhook(store, conn, headers, body)
        })
    }

    /// `describe`, called again on an instance (the conformance kit checks it is stable).
    ///
    /// # Errors
    /// [`CallError`] when the component misbehaves.
    pub fn describe_again(&self) -> Result<Descriptor, CallError> {
        self.describe_fresh()
    }
}
