//! deskgate-sim: local fakes of the Zendesk, Freshdesk and Intercom REST APIs that behave like
//! the real ones, for deskgate's own tests, benchmarks and demo, and for integrators who want to
//! test their code against something that answers like the platform (as LocalStack does for AWS).
//!
//! The simulators follow the platforms' documentation (`shared/platforms.md`, the Intercom
//! OpenAPI description and recorded Zendesk responses), never deskgate's adapters: this crate
//! shares no code with `host/` or `components/`. Where a fact is UNCONFIRMED in platforms.md the
//! code says so at that spot.
//!
//! # Layout
//!
//! | module | holds |
//! |---|---|
//! | [`clock`] | the controllable sim clock (token expiry, rate windows, webhook retries) |
//! | [`model`] | accounts, agents, contacts, credentials, tickets, the write and request logs |
//! | [`limits`] | per-plan rate limits, overrides, fixed-window counters |
//! | [`faults`] | seeded fault injection (5xx bursts, timeouts after apply, webhook chaos) |
//! | `webhooks` | webhook payload queue, signing, delivery with each platform's retries |
//! | `server` | the HTTP accept loop and the request pipeline |
//! | `admin` | the `/_sim/...` admin API (JSON over HTTP), a thin layer over [`Sim`] |
//! | `zendesk`, `freshdesk`, `intercom` | the platform APIs |
//! | [`cli`] | `deskgate sim --platform … [--json]`: start, print what it holds (one JSON line with `--json`), serve until ctrl-c |
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use deskgate_sim::{Platform, SimConfig};
//! let sim = deskgate_sim::start(SimConfig::new(Platform::Zendesk)).await?;
//! let seed = sim.seed_demo()?; // one account, an admin, credentials, a few tickets
//! println!("{} {}", sim.base_url(), seed.credentials[0].authorization);
//! sim.clock().advance(std::time::Duration::from_secs(3600));
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

#![recursion_limit = "512"]
// Handlers answer early with `Err(Reply)` (the platform's error response); those paths are rare
// and a `Reply` is what gets sent anyway, so boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

pub mod cli;
pub mod clock;
mod control;
pub mod faults;
pub mod limits;
pub mod model;

mod admin;
mod freshdesk;
mod intercom;
mod server;
mod util;
mod webhooks;
mod zendesk;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::Duration;

use tokio::sync::watch;

pub use clock::SimClock;
pub use control::{
    AccountInfo, AccountSpec, AgentPatch, AgentSpec, AuthCodeInfo, AuthCodeSpec, CommentSpec,
    ContactSpec, CredentialInfo, CredentialSpec, DemoSeed, FeaturePatch, GroupSpec,
    OAuthClientInfo, OAuthClientSpec, PlanSpec, RequestFilter, ScopePatch, TicketSpec,
};
pub use faults::{FaultConfig, TimeoutMode};
pub use limits::{LimitOverrides, Limits};
pub use model::{
    AccountStats, Agent, Contact, CredKind, Group, Outcome, RequestRecord, WebhookTarget,
    WriteKind, WriteRecord,
};
pub use webhooks::DeliveryRecord;

/// Which platform a sim plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// Zendesk Support (`/api/v2/...`).
    Zendesk,
    /// Freshdesk (`/api/v2/...`).
    Freshdesk,
    /// Intercom (`/me`, `/conversations/...`).
    Intercom,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Platform::Zendesk => "zendesk",
            Platform::Freshdesk => "freshdesk",
            Platform::Intercom => "intercom",
        })
    }
}

impl std::str::FromStr for Platform {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "zendesk" => Ok(Platform::Zendesk),
            "freshdesk" => Ok(Platform::Freshdesk),
            "intercom" => Ok(Platform::Intercom),
            _ => Err(format!(
                "unknown platform {s:?}; use zendesk, freshdesk or intercom"
            )),
        }
    }
}

/// An error from the control API: a status for the admin HTTP API and a message that says what
/// was wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimError {
    /// 400 (bad input) or 404 (no such account / credential / ticket).
    pub status: u16,
    /// What was wrong and what to do.
    pub message: String,
}

impl SimError {
    /// Bad input (400).
    pub fn bad(message: impl Into<String>) -> SimError {
        SimError {
            status: 400,
            message: message.into(),
        }
    }
    /// Missing object (404).
    pub fn not_found(message: impl Into<String>) -> SimError {
        SimError {
            status: 404,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for SimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}
impl std::error::Error for SimError {}

/// How to start a sim.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Platform to play.
    pub platform: Platform,
    /// Address to bind (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// Seed for every random decision (fault injection).
    pub seed: u64,
    /// Sim start time, unix ms (`None` = wall time).
    pub start_time_ms: Option<i64>,
    /// Keep the clock still except for explicit advances (deterministic tests).
    pub frozen_clock: bool,
    /// How long a webhook receiver gets to answer (real time).
    pub webhook_timeout: Duration,
    /// Request-log capacity (oldest entries are dropped beyond it).
    pub request_log_capacity: usize,
    /// Use this clock instead of a new one (several sims and a gateway on one time line, as
    /// in `deskgate demo`); `start_time_ms` and `frozen_clock` are then ignored.
    pub clock: Option<SimClock>,
}

impl SimConfig {
    /// Defaults: `127.0.0.1:0`, seed 0, wall-clock start, ticking clock, 10 s webhook timeout.
    pub fn new(platform: Platform) -> SimConfig {
        SimConfig {
            platform,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed: 0,
            start_time_ms: None,
            frozen_clock: false,
            webhook_timeout: Duration::from_secs(10),
            request_log_capacity: 200_000,
            clock: None,
        }
    }
    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Starts the clock at `ms` and freezes it.
    pub fn frozen_at(mut self, ms: i64) -> Self {
        self.start_time_ms = Some(ms);
        self.frozen_clock = true;
        self
    }
    /// Shares `clock` with other sims (and whoever else reads it).
    pub fn shared_clock(mut self, clock: SimClock) -> Self {
        self.clock = Some(clock);
        self
    }
    /// Sets the listen address.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }
}

/// Lookup tables from secrets to their account.
#[derive(Default)]
pub(crate) struct Index {
    /// Access secrets (API tokens, keys, bearer tokens) → (account, credential id).
    pub secrets: HashMap<String, (u64, u64)>,
    /// Refresh tokens → (account, credential id).
    pub refresh: HashMap<String, (u64, u64)>,
    /// OAuth client identifiers → account.
    pub clients: HashMap<String, u64>,
    /// Authorization codes → account.
    pub codes: HashMap<String, u64>,
}

pub(crate) struct RequestLog {
    pub records: std::collections::VecDeque<RequestRecord>,
    pub next_seq: u64,
    pub capacity: usize,
}

/// The shared state of one running sim.
pub(crate) struct SimInner {
    pub platform: Platform,
    pub seed: u64,
    pub clock: SimClock,
    pub accounts: RwLock<Vec<Arc<Mutex<model::Account>>>>,
    pub index: RwLock<Index>,
    pub faults: faults::Faults,
    pub requests: Mutex<RequestLog>,
    pub hooks: webhooks::Queue,
    pub ids: AtomicU64,
    pub base_url: OnceLock<String>,
    pub webhook_timeout: Duration,
}

/// Locks a mutex, ignoring poisoning (a panicked handler must not wedge the sim).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SimInner {
    pub(crate) fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }
    pub(crate) fn account(&self, id: u64) -> Option<Arc<Mutex<model::Account>>> {
        let accounts = self.accounts.read().unwrap_or_else(|p| p.into_inner());
        accounts
            .get(usize::try_from(id).ok()?.checked_sub(1)?)
            .cloned()
    }
    /// Account and credential id for an access secret.
    pub(crate) fn by_secret(&self, secret: &str) -> Option<(Arc<Mutex<model::Account>>, u64)> {
        let (acc, cred) = *self
            .index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .secrets
            .get(secret)?;
        Some((self.account(acc)?, cred))
    }
    pub(crate) fn base(&self) -> &str {
        self.base_url
            .get()
            .map(String::as_str)
            .unwrap_or("http://127.0.0.1")
    }
    pub(crate) fn log_request(&self, mut rec: RequestRecord) {
        let mut log = lock(&self.requests);
        log.next_seq += 1;
        rec.seq = log.next_seq;
        if log.records.len() >= log.capacity {
            log.records.pop_front();
        }
        log.records.push_back(rec);
    }
}

/// The control API of a running sim (cheap to clone). Everything the admin HTTP API can do is a
/// method here, so Rust tests need no HTTP for setup or assertions.
#[derive(Clone)]
pub struct Sim {
    pub(crate) inner: Arc<SimInner>,
}

/// A running sim: the control API ([`Sim`], via `Deref`), its URLs, and shutdown.
pub struct SimHandle {
    sim: Sim,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::ops::Deref for SimHandle {
    type Target = Sim;
    fn deref(&self) -> &Sim {
        &self.sim
    }
}

impl SimHandle {
    /// `http://127.0.0.1:PORT`: the platform API's base URL (Zendesk and Freshdesk paths start
    /// with `/api/v2`, Intercom's at the root).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// `http://127.0.0.1:PORT/_sim`: the admin API.
    pub fn admin_url(&self) -> String {
        format!("http://{}/_sim", self.addr)
    }
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// The control API as an owned value.
    pub fn sim(&self) -> Sim {
        self.sim.clone()
    }
    /// Stops accepting, ends open connections and the webhook worker.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
    }
}

/// Starts a sim: binds, spawns the server and the webhook worker, and returns at once.
///
/// # Errors
///
/// When the address cannot be bound.
pub async fn start(cfg: SimConfig) -> anyhow::Result<SimHandle> {
    let inner = Arc::new(SimInner {
        platform: cfg.platform,
        seed: cfg.seed,
        clock: cfg.clock.clone().unwrap_or_else(|| SimClock::new(cfg.start_time_ms, cfg.frozen_clock)),
        accounts: RwLock::new(Vec::new()),
        index: RwLock::new(Index::default()),
        faults: faults::Faults::new(cfg.seed),
        requests: Mutex::new(RequestLog {
            records: Default::default(),
            next_seq: 0,
            capacity: cfg.request_log_capacity.max(1),
        }),
        hooks: webhooks::Queue::default(),
        ids: AtomicU64::new(20_000_001),
        base_url: OnceLock::new(),
        webhook_timeout: cfg.webhook_timeout,
    });
    let (stop, rx) = watch::channel(false);
    let (addr, server) = server::serve(inner.clone(), cfg.listen, rx.clone())
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cfg.listen))?;
    let _ = inner.base_url.set(format!("http://{addr}"));
    let worker = tokio::spawn(webhooks::run(inner.clone(), rx));
    Ok(SimHandle {
        sim: Sim { inner },
        addr,
        stop,
        tasks: vec![server, worker],
    })
}
