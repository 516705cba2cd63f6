//! The supervisor: what runs for each connection, and the timers that keep it healthy.
//!
//! Every other module is a policy with no life of its own: the outbox worker sends when asked,
//! the credential manager refreshes when ticked, the reconciler sweeps when called. [`Gateway`]
//! is the one place that gives them a life, for `deskgate serve` and `deskgate demo` alike:
//!
//! - For each connection with credentials and a loaded adapter it keeps an [`Attached`] set:
//!   a [`CredentialManager`] (started first, so a refresh interrupted by a crash is settled
//!   before anything is sent), the connection's [`BudgetGate`], and an [`OutboxWorker`] whose
//!   401/403 hook is the manager's. Connections created or deleted through the API are attached
//!   or detached at once ([`crate::api::ConnectionControl`]); [`Gateway::sync`] also catches up
//!   with the store every tick (another replica, or the config, may have changed it).
//! - Timers, checked every [`GatewayConfig::tick`] of real time against the injected clock:
//!   the credential's refresh or health check ([`CredentialManager::tick`]) and the
//!   reconciliation sweep ([`SweepTimer`]). All of one connection's timers run on the replica
//!   that holds its [`CONNECTION_LEASE`]; alert delivery and the optional push to the app,
//!   gateway-wide, under leases of their own.
//!
//! # One lease per connection, held while the replica lives
//!
//! The replica holding a connection's [`CONNECTION_LEASE`] renews it whenever less than half of
//! [`GatewayConfig::timer_lease`] is left (one store write per connection per half lease, not per
//! tick), and runs that connection's refresh, health check and sweep; the other replicas run none
//! of them, and read when its lease ends ([`crate::store::Store::get_lease`]) instead of trying to
//! take it every tick. When it dies its lease lapses and the first replica to tick after that takes it:
//! the connection's timers move within one lease period plus one tick. A clean shutdown (or a
//! detach) releases the lease: a replica that has not read the old end yet (one just started, in a
//! rolling restart) takes it at its first tick, the others once the end they read has passed.
//! A timer pass that outlasts half a lease (a sweep waiting in the read lane behind a write
//! burst) does not stop the renewals: the timer loop renews the lease of a connection whose pass
//! is still running.
//!
//! What a timer last did is not the holder's memory: the health check's time is the store mark
//! [`crate::auth::HEALTH_MARK`] and the sweep's the mark [`SWEEP_MARK`] (plus the `reconcile`
//! lease a sweep holds for its minimum interval), so a replica that takes a connection over runs
//! its health check once per interval and does not sweep again early. A refresh is guarded by the
//! credential row's refresh marker besides (see [`crate::auth`]).
//!
//! Tests drive the timers with [`Gateway::run_timers_once`] after moving a manual clock; nothing
//! here sleeps for a policy's sake. A timer pass that fails is logged and retried at the next
//! tick: the policies underneath keep their state in the store, so nothing is lost between.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::alerts::{AlertConfig, AlertDeliverer};
use crate::api::{ApiError, ConnectionControl};
use crate::auth::{AuthConfig, CredentialError, CredentialManager, ManagerParts, TickOutcome};
use crate::budget::{BudgetConfig, BudgetGate, BudgetLayer};
use crate::clock::{Millis, SharedClock};
use crate::driver::Driver;
use crate::ingest::push::{PushConfig, PushOutcome, Pusher};
use crate::ingest::sweep::{Reconciler, SweepConfig, SweepMarks, SweepReport, SweepSchedule, SweepSource, SweepTimer};
use crate::ingest::{IngestMetrics, Inbox};
use crate::outbox::{OutboxConfig, OutboxWorker, WorkerParts};
use crate::runtime::Adapter;
use crate::store::{Connection, ConnectionState, CredentialSecret, Expect, SharedStore, StoreError, TimerLease};

/// The timer lease under which all of a connection's timers (refresh, health check, sweep) run:
/// held, and renewed, by one replica at a time (see the module docs).
pub const CONNECTION_LEASE: &str = "connection";
/// The gateway-wide lease for alert delivery.
pub const ALERTS_LEASE: &str = "alerts";
/// The gateway-wide lease for pushing events to the app.
pub const PUSH_LEASE: &str = "push";
/// Mark name of the sweep's high-water mark in the store.
pub const SWEEP_MARK: &str = "sweep";

/// How the supervisor runs.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// This replica's name: lease owner and refresh-marker owner.
    pub owner: String,
    /// Real time between timer checks.
    pub tick: Duration,
    /// How long (on the clock) a timer lease is held: a dead replica's timers move to another
    /// within this.
    pub timer_lease: Duration,
    /// Outbox settings for every worker.
    pub outbox: OutboxConfig,
    /// Credential policy settings (its `owner` is replaced by [`GatewayConfig::owner`]).
    pub auth: AuthConfig,
    /// Reconciliation sweeps.
    pub sweep: SweepConfig,
    /// Sweep interval, jittered between the two (5 and 10 minutes).
    pub sweep_every: (Duration, Duration),
    /// Budget settings for connections without an override.
    pub budget: BudgetConfig,
    /// Per-connection budget target share (the config's `budget_target`), overriding `budget`.
    pub budget_targets: BTreeMap<String, crate::budget::Share>,
    /// Alert delivery to admin contacts.
    pub alerts: AlertConfig,
    /// A connection whose platform keeps a bucket blocked (429s) this long, on the clock, raises
    /// a `sustained-rate-limiting` alert (once per episode).
    pub sustained_rate_limit: Duration,
    /// Push events to the app's own webhook, if set.
    pub push: Option<PushConfig>,
    /// Rate budgets shared with the other replicas (Redis), if configured: every connection's
    /// gate then confirms its permits there (see [`crate::budget::shared`]).
    pub shared_budgets: Option<Arc<crate::budget::SharedBudgets>>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            owner: format!("deskgate-{}", std::process::id()),
            tick: Duration::from_secs(1),
            timer_lease: Duration::from_secs(60),
            outbox: OutboxConfig::default(),
            auth: AuthConfig::default(),
            sweep: SweepConfig::default(),
            sweep_every: (Duration::from_secs(300), Duration::from_secs(600)),
            budget: BudgetConfig::default(),
            budget_targets: BTreeMap::new(),
            alerts: AlertConfig::default(),
            sustained_rate_limit: Duration::from_secs(10 * 60),
            push: None,
            shared_budgets: None,
        }
    }
}

/// Everything the supervisor needs, given at construction.
pub struct GatewayParts {
    /// The store.
    pub store: SharedStore,
    /// The clock every policy reads.
    pub clock: SharedClock,
    /// The HTTP driver.
    pub driver: Driver,
    /// The loaded adapters.
    pub adapters: Vec<Arc<Adapter>>,
    /// The inbox the API reads (sweeps write through it so long-polls wake).
    pub inbox: Arc<Inbox>,
    /// Ingestion counters shared with the webhook endpoint.
    pub metrics: Arc<IngestMetrics>,
    /// Settings.
    pub config: GatewayConfig,
}

/// One attached connection's running parts.
pub struct Attached {
    /// The connection id.
    pub id: String,
    /// Its adapter.
    pub adapter: Arc<Adapter>,
    /// Its credential policy.
    pub manager: CredentialManager,
    /// Its write worker.
    pub worker: OutboxWorker,
    /// Its rate budget.
    pub gate: BudgetGate,
    sweep: tokio::sync::Mutex<SweepTimer>,
    /// This replica's [`CONNECTION_LEASE`] on the connection, as last taken or renewed.
    lease: Mutex<Option<TimerLease>>,
    /// Until when another replica holds it, as last read: no attempt to take it before then.
    held_elsewhere_until: Mutex<Millis>,
    /// Since when the platform has kept a bucket blocked (429s), and whether that was alerted.
    rate_limited_since: Mutex<Option<(Millis, bool)>>,
    busy: Arc<tokio::sync::Mutex<()>>,
    /// Held while the lease is renewed apart from a timer pass (one that outlasts half a lease).
    renewing: Arc<tokio::sync::Mutex<()>>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attached").field("id", &self.id).finish_non_exhaustive()
    }
}

/// What one timer pass did for one connection (tests and logs).
#[derive(Debug, Clone, Default)]
pub struct TimerReport {
    /// Whether this replica held the connection's [`CONNECTION_LEASE`] for this pass.
    pub leased: bool,
    /// The credential timer's outcome, if this replica held the lease and it was due.
    pub auth: Option<TickOutcome>,
    /// The sweep's report, if one ran.
    pub sweep: Option<SweepReport>,
    /// Errors met (logged too).
    pub errors: Vec<String>,
}

/// Sweep marks kept in the store, so a restart resumes from the last finished sweep instead of
/// re-listing a whole day (or missing the changes made while the gateway was down).
#[derive(Debug, Clone)]
pub struct StoreMarks {
    store: SharedStore,
    clock: SharedClock,
}

impl StoreMarks {
    /// Marks in `store`.
    pub fn new(store: SharedStore, clock: SharedClock) -> Self {
        Self { store, clock }
    }
}

#[async_trait]
impl SweepMarks for StoreMarks {
    async fn get(&self, connection_id: &str) -> Result<Option<Millis>, String> {
        self.store.get_mark(connection_id, SWEEP_MARK).await.map_err(|e| e.to_string())
    }
    async fn put(&self, connection_id: &str, mark: Millis) -> Result<(), String> {
        self.store.put_mark(connection_id, SWEEP_MARK, mark, self.clock.now_ms()).await.map(|_| ()).map_err(|e| e.to_string())
    }
}

struct Inner {
    store: SharedStore,
    clock: SharedClock,
    driver: Driver,
    adapters: BTreeMap<String, Arc<Adapter>>,
    config: GatewayConfig,
    budgets: BudgetLayer,
    reconciler: Reconciler,
    alerts: AlertDeliverer,
    pusher: tokio::sync::Mutex<Option<(Pusher, Millis)>>,
    conns: tokio::sync::Mutex<BTreeMap<String, Arc<Attached>>>,
    status: crate::status::SharedStatus,
    stop: watch::Sender<bool>,
    background: Mutex<Vec<JoinHandle<()>>>,
}

/// The supervisor (see the module docs). Cheap to clone (a handle).
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("owner", &self.inner.config.owner).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A stable per-connection seed, so each connection's sweep schedule is jittered differently.
fn seed_of(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

impl Gateway {
    /// A supervisor over these parts. Nothing runs until [`Gateway::sync`] (attach what the
    /// store holds) and [`Gateway::spawn`] (start the timer loop).
    ///
    /// # Errors
    /// When an HTTP client cannot be built.
    pub fn new(parts: GatewayParts) -> anyhow::Result<Self> {
        let GatewayParts { store, clock, driver, adapters, inbox, metrics, config } = parts;
        let reconciler = Reconciler::new(inbox, driver.clone(), clock.clone(), config.sweep.clone())
            .with_marks(Arc::new(StoreMarks::new(store.clone(), clock.clone())))
            .with_metrics(metrics);
        let alerts = AlertDeliverer::new(store.clone(), clock.clone(), config.alerts.clone())?;
        let pusher = match &config.push {
            Some(p) => Some((Pusher::new(store.clone(), clock.clone(), p.clone(), seed_of(&config.owner))?, 0)),
            None => None,
        };
        let (stop, _) = watch::channel(false);
        Ok(Self {
            inner: Arc::new(Inner {
                budgets: match &config.shared_budgets {
                    Some(shared) => BudgetLayer::new(clock.clone(), config.budget.clone()).with_shared(shared.clone()),
                    None => BudgetLayer::new(clock.clone(), config.budget.clone()),
                },
                store,
                clock,
                driver,
                adapters: adapters.into_iter().map(|a| (a.id().to_owned(), a)).collect(),
                config,
                reconciler,
                alerts,
                pusher: tokio::sync::Mutex::new(pusher),
                conns: tokio::sync::Mutex::new(BTreeMap::new()),
                status: crate::status::StatusRegistry::shared(),
                stop,
                background: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Register each attached connection's live parts (budget gate, credential manager) and
    /// counters in `status`, the registry the API's metrics and dashboard read
    /// ([`crate::api::AppState::with_status`]).
    ///
    /// # Panics
    /// If called after the gateway was cloned.
    #[must_use]
    pub fn with_status(mut self, status: crate::status::SharedStatus) -> Self {
        Arc::get_mut(&mut self.inner).expect("set the status registry before sharing the gateway").status = status;
        self
    }

    /// The live status registry.
    pub fn status(&self) -> &crate::status::SharedStatus {
        &self.inner.status
    }

    /// The budgets of every attached connection (metrics, dashboard).
    pub fn budgets(&self) -> &BudgetLayer {
        &self.inner.budgets
    }

    /// The sweep counters.
    pub fn ingest_metrics(&self) -> &Arc<IngestMetrics> {
        self.inner.reconciler.metrics()
    }

    /// The attached connection `id`, if it is attached.
    pub async fn attached(&self, id: &str) -> Option<Arc<Attached>> {
        self.inner.conns.lock().await.get(id).cloned()
    }

    /// The ids of the attached connections.
    pub async fn attached_ids(&self) -> Vec<String> {
        self.inner.conns.lock().await.keys().cloned().collect()
    }

    /// Bring the attached set in line with the store: attach every connection with credentials
    /// and an adapter that is not attached yet, detach deleted ones. Returns the ids attached by
    /// this call.
    ///
    /// # Errors
    /// The store's. A connection that cannot be attached (no adapter, bad settings) is logged and
    /// skipped; it is tried again at the next sync.
    pub async fn sync(&self) -> Result<Vec<String>, StoreError> {
        let conns = self.inner.store.list_connections(true).await?;
        let mut attached = Vec::new();
        for conn in conns {
            if conn.state == ConnectionState::Deleted {
                self.detach(&conn.id).await;
                continue;
            }
            if self.inner.conns.lock().await.contains_key(&conn.id) {
                continue;
            }
            match self.attach(&conn).await {
                Ok(true) => attached.push(conn.id.clone()),
                Ok(false) => {}
                Err(e) => tracing::warn!(connection = %conn.id, "not attached: {e}"),
            }
        }
        Ok(attached)
    }

    /// Attach one connection (see the module docs). `Ok(false)` when it has no credentials yet
    /// or is already attached.
    async fn attach(&self, conn: &Connection) -> Result<bool, String> {
        let inner = &self.inner;
        let adapter = inner
            .adapters
            .get(&conn.platform)
            .cloned()
            .ok_or_else(|| format!("no adapter is loaded for platform `{}`", conn.platform))?;
        let Some(cred) = inner.store.get_credential(&conn.id).await.map_err(|e| e.to_string())? else {
            return Ok(false);
        };
        let target = crate::api::target_for(&adapter, conn, &cred.secret)?;
        let mut auth = inner.config.auth.clone();
        auth.owner.clone_from(&inner.config.owner);
        let manager = CredentialManager::new(ManagerParts {
            store: inner.store.clone(),
            clock: inner.clock.clone(),
            driver: inner.driver.clone(),
            adapter: adapter.clone(),
            base_url: target.base_url.clone(),
            connection: target.connection.clone(),
            oauth_client: None,
            config: auth,
        })
        .map_err(|e| e.to_string())?;
        let report = manager.start().await.map_err(|e| e.to_string())?;
        tracing::info!(connection = %conn.id, ?report, "credentials loaded");
        let budget = match inner.config.budget_targets.get(&conn.id) {
            Some(t) => inner.config.budget.clone().with_target(*t),
            None => inner.config.budget.clone(),
        };
        let gate = inner.budgets.connect(&target.connection, adapter.descriptor(), Some(budget)).map_err(|e| e.to_string())?;
        let worker = OutboxWorker::new(WorkerParts {
            store: inner.store.clone(),
            clock: inner.clock.clone(),
            driver: inner.driver.clone(),
            adapter: adapter.clone(),
            target: manager.target().unwrap_or(target),
            gate: gate.clone(),
            owner: format!("{}/{}", inner.config.owner, conn.id),
            config: OutboxConfig { seed: inner.config.outbox.seed ^ seed_of(&conn.id), ..inner.config.outbox.clone() },
            events: None,
            auth_hook: Some(manager.auth_hook()),
        });
        manager.attach_worker(worker.clone());
        let (min, max) = inner.config.sweep_every;
        let schedule = SweepSchedule::new(min, max, seed_of(&conn.id) ^ seed_of(&inner.config.owner));
        let (stop, stop_rx) = watch::channel(false);
        let attached = Arc::new(Attached {
            id: conn.id.clone(),
            adapter,
            manager: manager.clone(),
            worker: worker.clone(),
            gate,
            sweep: tokio::sync::Mutex::new(SweepTimer::new(conn.id.clone(), inner.config.owner.clone(), schedule, inner.clock.now_ms())),
            lease: Mutex::new(None),
            held_elsewhere_until: Mutex::new(0),
            rate_limited_since: Mutex::new(None),
            busy: Arc::new(tokio::sync::Mutex::new(())),
            renewing: Arc::new(tokio::sync::Mutex::new(())),
            stop,
            task: Mutex::new(None),
        });
        {
            let mut conns = inner.conns.lock().await;
            if conns.contains_key(&conn.id) {
                return Ok(false);
            }
            conns.insert(conn.id.clone(), attached.clone());
        }
        let counters = inner.status.register(&conn.id, Some(attached.gate.clone()), Some(manager.clone()));
        {
            let c = counters.clone();
            worker.on_pass(Arc::new(move |rep| c.record_pass(rep)));
            manager.on_suspend(Arc::new(move || counters.record_suspension()));
        }
        // The worker stops with its connection (detach) or with the gateway.
        let mut gateway_stop = inner.stop.subscribe();
        let mut own_stop = stop_rx.clone();
        let (merged_tx, merged_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let run = worker.run(merged_rx);
            tokio::pin!(run);
            loop {
                tokio::select! {
                    () = &mut run => break,
                    _ = gateway_stop.changed() => { let _ = merged_tx.send(true); }
                    _ = own_stop.changed() => { let _ = merged_tx.send(true); }
                }
            }
        });
        *lock(&attached.task) = Some(task);
        // Learn who we act as (some platforms' writes name the agent); a pending connection is
        // probed, which takes it live when every capability is proved.
        let live_or_pending = inner.store.get_connection(&conn.id).await.map_err(|e| e.to_string())?.map(|c| c.state);
        match live_or_pending {
            Some(ConnectionState::PendingProbe) => match manager.probe().await {
                Ok(r) => tracing::info!(connection = %conn.id, passed = r.passed, "scope probe on attach"),
                Err(e) => tracing::warn!(connection = %conn.id, "scope probe on attach failed: {e}"),
            },
            Some(ConnectionState::Live) => {
                if let Err(e) = manager.identify().await {
                    tracing::warn!(connection = %conn.id, "who-am-i on attach failed: {e}");
                }
            }
            _ => {}
        }
        tracing::info!(connection = %conn.id, "attached: outbox worker and timers running");
        Ok(true)
    }

    /// Stop a connection's worker and forget it (deleted connections).
    pub async fn detach(&self, id: &str) {
        let Some(a) = self.inner.conns.lock().await.remove(id) else { return };
        self.inner.status.unregister(id);
        let _ = a.stop.send(true);
        let task = lock(&a.task).take();
        if let Some(t) = task {
            let _ = t.await;
        }
        self.release_connection_lease(&a).await;
        tracing::info!(connection = %id, "detached");
    }

    /// Take or keep this replica's [`CONNECTION_LEASE`] on `a` at `now`: no store write while
    /// more than half the lease is left, a renewal (or a take-over of a free or lapsed lease)
    /// otherwise. Whether this replica holds it now.
    ///
    /// # Errors
    /// The store's; the lease is then treated as not held by this pass.
    pub async fn hold_connection_lease(&self, a: &Attached, now: Millis) -> Result<bool, StoreError> {
        let inner = &self.inner;
        let ttl = crate::store::ms(inner.config.timer_lease);
        let held = lock(&a.lease).clone();
        if held.as_ref().is_some_and(|l| now < l.until - ttl / 2) {
            return Ok(true);
        }
        // Held by another replica: nothing to try before its lease could have lapsed (a
        // replica per connection per tick writing the row would load the store for nothing).
        if held.is_none() && now < *lock(&a.held_elsewhere_until) {
            return Ok(false);
        }
        let taken = inner.store.acquire_lease(&a.id, CONNECTION_LEASE, &inner.config.owner, now, inner.config.timer_lease).await;
        if let Ok(None) = taken {
            // One read per renewal of the holder: try again at the first tick after its lease ends.
            let until = inner.store.get_lease(&a.id, CONNECTION_LEASE).await?.map_or(0, |l| l.until);
            *lock(&a.held_elsewhere_until) = until;
        }
        match &taken {
            Ok(Some(l)) => inner.status.note_lease(&a.id, CONNECTION_LEASE, Some(l.until)),
            Ok(None) => inner.status.note_lease(&a.id, CONNECTION_LEASE, None),
            Err(_) => {}
        }
        let mut slot = lock(&a.lease);
        match taken {
            Ok(Some(l)) => {
                if held.as_ref().map(|h| h.generation) != Some(l.generation) {
                    tracing::info!(connection = %a.id, generation = l.generation, "this replica now runs the connection's timers");
                }
                *slot = Some(l);
                Ok(true)
            }
            Ok(None) => {
                if held.is_some() {
                    tracing::warn!(connection = %a.id, "the connection's timer lease passed to another replica");
                }
                *slot = None;
                Ok(false)
            }
            Err(e) => {
                *slot = held.filter(|l| now < l.until);
                Err(e)
            }
        }
    }

    /// Give up this replica's lease on `a` (detach, shutdown), so another replica takes its
    /// timers at its next tick instead of after the lease period.
    async fn release_connection_lease(&self, a: &Attached) {
        self.inner.status.note_lease(&a.id, CONNECTION_LEASE, None);
        if lock(&a.lease).take().is_some()
            && let Err(e) = self.inner.store.release_lease(&a.id, CONNECTION_LEASE, &self.inner.config.owner).await
        {
            tracing::warn!(connection = %a.id, "releasing the timer lease: {e}; it lapses on its own");
        }
    }

    /// One connection's timers, now, if this replica holds (or can take) the connection's
    /// [`CONNECTION_LEASE`]: the credential timer if it is due, then the sweep if one is due and
    /// the connection is live.
    pub async fn connection_timers(&self, a: &Attached) -> TimerReport {
        let inner = &self.inner;
        let mut rep = TimerReport::default();
        let now = inner.clock.now_ms();
        rep.leased = match self.hold_connection_lease(a, now).await {
            Ok(held) => held,
            Err(e) => {
                rep.errors.push(format!("connection timer lease: {e}"));
                false
            }
        };
        // Due by this replica's view; the manager re-reads the shared health mark before it
        // checks, so a check another replica ran is not repeated.
        let auth_due = a.manager.next_due_at().is_some_and(|at| now >= at);
        if rep.leased && auth_due {
            match a.manager.tick().await {
                Ok(t) => {
                    if t != TickOutcome::Idle && t != TickOutcome::Inactive {
                        tracing::info!(connection = %a.id, outcome = ?t, "credential timer");
                    }
                    rep.auth = Some(t);
                }
                Err(e) => rep.errors.push(format!("credential timer: {e}")),
            }
        }
        if let Err(e) = self.watch_rate_limiting(a, now).await {
            rep.errors.push(format!("rate-limit watch: {e}"));
        }
        let live = rep.leased && matches!(inner.store.get_connection(&a.id).await, Ok(Some(c)) if c.state == ConnectionState::Live);
        if live {
            let due = {
                let mut timer = a.sweep.lock().await;
                let at = inner.clock.now_ms();
                let due = timer.claim(&inner.store, at).await;
                if let Ok(true) = due {
                    inner.status.note_lease(&a.id, crate::ingest::sweep::SWEEP_LEASE, Some(at + timer.lease_hold_ms()));
                }
                inner.status.set_next_sweep(&a.id, Some(timer.next_at()));
                due
            };
            match due {
                Ok(true) => match (a.manager.target(), a.manager.credential().map(|c| c.version)) {
                    (Some(target), used) => {
                        let source = SweepSource { adapter: &a.adapter, target: &target, gate: &a.gate, platform: a.adapter.id() };
                        match inner.reconciler.sweep(source).await {
                            Ok(r) => {
                                inner.status.counters(&a.id).record_sweep(&r);
                                rep.sweep = Some(r);
                            }
                            Err(crate::ingest::sweep::SweepError::Platform(crate::bindings::Failure::Unauthenticated(d))) => {
                                // The read lane meets the same credential policy as writes: one
                                // refresh (OAuth), else suspension with an alert.
                                rep.errors.push(format!("sweep: the platform refused the credential ({})", d.code));
                                // The version the sweep used, not the current one: a refresh
                                // may have replaced it mid-sweep, and must not run twice.
                                if let Err(e) = a.manager.on_unauthenticated(used).await {
                                    rep.errors.push(format!("handling the sweep's 401: {e}"));
                                }
                            }
                            Err(e) => rep.errors.push(format!("sweep: {e}")),
                        }
                    }
                    (None, _) => rep.errors.push("sweep: no credential loaded".into()),
                },
                Ok(false) => {}
                Err(e) => rep.errors.push(format!("sweep lease: {e}")),
            }
        }
        for e in &rep.errors {
            tracing::warn!(connection = %a.id, "{e}");
        }
        rep
    }

    /// Raise `sustained-rate-limiting` when the platform has kept one of the connection's buckets
    /// blocked (its 429s) for [`GatewayConfig::sustained_rate_limit`]: other clients of the
    /// account, or a plan too small for the volume, leave deskgate waiting, and people must know.
    async fn watch_rate_limiting(&self, a: &Attached, now: Millis) -> Result<(), StoreError> {
        let snap = a.gate.snapshot();
        let blocked: Vec<&str> = snap
            .budget
            .buckets
            .iter()
            .filter(|b| b.blocked_until.is_some_and(|u| u > now) || b.lanes.iter().any(|l| l.blocked_until.is_some_and(|u| u > now)))
            .map(|b| b.bucket.as_str())
            .collect();
        let raise = {
            let mut since = lock(&a.rate_limited_since);
            if blocked.is_empty() {
                *since = None;
                false
            } else {
                let (start, alerted) = *since.get_or_insert((now, false));
                let due = !alerted && now - start >= crate::store::ms(self.inner.config.sustained_rate_limit);
                if due {
                    *since = Some((start, true));
                }
                due
            }
        };
        if raise {
            let minutes = self.inner.config.sustained_rate_limit.as_secs() / 60;
            let text = format!(
                "Connection {}: the platform has been rate limiting it for {minutes} minutes or more (bucket {}). Writes wait in the write-retry queue and nothing is lost, but work is delayed: look for other clients spending the same account's limit, or a plan too small for the volume.",
                a.id,
                blocked.join(", ")
            );
            crate::alerts::raise(&self.inner.store, now, Some(&a.id), crate::alerts::SUSTAINED_RATE_LIMITING, text, json!({ "buckets": blocked })).await?;
        }
        Ok(())
    }

    /// Sweep one connection now, whatever its schedule (an operator's request, tests).
    ///
    /// # Errors
    /// A message saying why it could not run.
    pub async fn sweep_now(&self, id: &str) -> Result<SweepReport, String> {
        let a = self.attached(id).await.ok_or_else(|| format!("connection {id} is not attached"))?;
        let target = a.manager.target().ok_or("no credential loaded")?;
        let source = SweepSource { adapter: &a.adapter, target: &target, gate: &a.gate, platform: a.adapter.id() };
        self.inner.reconciler.sweep(source).await.map_err(|e| e.to_string())
    }

    /// Gateway-wide timers: alert delivery and the push to the app, each under its lease.
    async fn gateway_timers(&self) {
        let inner = &self.inner;
        let now = inner.clock.now_ms();
        let alerts_due = matches!(inner.store.alerts_due(now, 1).await, Ok(due) if !due.is_empty());
        if alerts_due
            && let Ok(Some(lease)) = inner.store.acquire_lease("", ALERTS_LEASE, &inner.config.owner, now, inner.config.timer_lease).await
        {
            inner.status.note_lease("", ALERTS_LEASE, Some(lease.until));
            if let Err(e) = inner.alerts.deliver_due().await {
                tracing::warn!("alert delivery: {e}");
            }
        }
        let mut pusher = inner.pusher.lock().await;
        if let Some((p, next_at)) = pusher.as_mut() {
            if now >= *next_at
                && let Ok(Some(lease)) = inner.store.acquire_lease("", PUSH_LEASE, &inner.config.owner, now, inner.config.timer_lease).await
            {
                inner.status.note_lease("", PUSH_LEASE, Some(lease.until));
                // Two pushers would POST the same unacknowledged events: before each batch the
                // lease is renewed, and the loop stops unless it is still the one taken here
                // (same generation: it never changed hands meanwhile).
                let mut first = true;
                loop {
                    if !std::mem::take(&mut first) {
                        let renewed = inner.store.renew_lease("", PUSH_LEASE, &inner.config.owner, inner.clock.now_ms(), inner.config.timer_lease).await;
                        match renewed {
                            Ok(Some(l)) if l.generation == lease.generation => inner.status.note_lease("", PUSH_LEASE, Some(l.until)),
                            Ok(_) => {
                                inner.status.note_lease("", PUSH_LEASE, None);
                                tracing::warn!("push: the push lease passed to another replica mid-run (a batch took longer than the lease); stopping here");
                                break;
                            }
                            Err(e) => {
                                tracing::warn!("push: renewing the push lease failed ({e}); stopping here, the next tick tries again");
                                break;
                            }
                        }
                    }
                    match p.push_once().await {
                        Ok(PushOutcome::Delivered(_)) => continue,
                        Ok(PushOutcome::Idle) => break,
                        Ok(PushOutcome::Retry { at, .. }) => {
                            *next_at = at;
                            break;
                        }
                        Err(e) => {
                            tracing::warn!("push: {e}");
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Every timer once, now, in order, waiting for each (tests move a manual clock, then call
    /// this). Returns each connection's report.
    pub async fn run_timers_once(&self) -> BTreeMap<String, TimerReport> {
        if let Err(e) = self.sync().await {
            tracing::warn!("sync: {e}");
        }
        let conns: Vec<Arc<Attached>> = self.inner.conns.lock().await.values().cloned().collect();
        let mut out = BTreeMap::new();
        for a in conns {
            let _busy = a.busy.lock().await;
            out.insert(a.id.clone(), self.connection_timers(&a).await);
        }
        self.gateway_timers().await;
        out
    }

    /// Start the timer loop: every [`GatewayConfig::tick`], sync with the store and run each
    /// connection's timers in a task of its own (a slow sweep does not hold up a refresh of
    /// another connection; a connection whose previous pass is still running is skipped).
    pub fn spawn(&self) {
        let me = self.clone();
        let mut stop = self.inner.stop.subscribe();
        let task = tokio::spawn(async move {
            let gateway_busy = Arc::new(tokio::sync::Mutex::new(()));
            loop {
                if *stop.borrow() {
                    break;
                }
                if let Err(e) = me.sync().await {
                    tracing::warn!("sync: {e}");
                }
                let conns: Vec<Arc<Attached>> = me.inner.conns.lock().await.values().cloned().collect();
                for a in conns {
                    let g = me.clone();
                    match a.busy.clone().try_lock_owned() {
                        Ok(guard) => {
                            tokio::spawn(async move {
                                let _guard = guard;
                                g.connection_timers(&a).await;
                            });
                        }
                        // A pass still running (a long sweep waiting in the read lane, a slow
                        // refresh) must not let the lease lapse under it: keep it renewed.
                        Err(_) => {
                            let Ok(guard) = a.renewing.clone().try_lock_owned() else { continue };
                            tokio::spawn(async move {
                                let _guard = guard;
                                let now = g.inner.clock.now_ms();
                                if let Err(e) = g.hold_connection_lease(&a, now).await {
                                    tracing::warn!(connection = %a.id, "renewing the timer lease: {e}");
                                }
                            });
                        }
                    }
                }
                if let Ok(guard) = gateway_busy.clone().try_lock_owned() {
                    let g = me.clone();
                    tokio::spawn(async move {
                        let _guard = guard;
                        g.gateway_timers().await;
                    });
                }
                tokio::select! {
                    () = tokio::time::sleep(me.inner.config.tick) => {}
                    _ = stop.changed() => {}
                }
            }
        });
        lock(&self.inner.background).push(task);
    }

    /// Stop the timer loop and every worker, and wait for them.
    pub async fn shutdown(&self) {
        let _ = self.inner.stop.send(true);
        let tasks: Vec<JoinHandle<()>> = lock(&self.inner.background).drain(..).collect();
        for t in tasks {
            let _ = t.await;
        }
        let conns: Vec<Arc<Attached>> = self.inner.conns.lock().await.values().cloned().collect();
        for a in conns {
            let task = lock(&a.task).take();
            if let Some(t) = task {
                let _ = t.await;
            }
            // Its timers move to another replica at once instead of after the lease period.
            let _busy = a.busy.lock().await;
            self.release_connection_lease(&a).await;
        }
    }

    async fn require(&self, id: &str) -> Result<Arc<Attached>, ApiError> {
        if let Some(a) = self.attached(id).await {
            return Ok(a);
        }
        let conn = self.inner.store.get_connection(id).await?;
        match conn {
            None => Err(ApiError::connection_not_found(id)),
            Some(c) if c.state == ConnectionState::Deleted => Err(ApiError::connection_not_found(id)),
            Some(c) => {
                self.attach(&c).await.map_err(|e| ApiError::conflict("not_attached", format!("connection {id} cannot run: {e}")))?;
                self.attached(id).await.ok_or_else(|| {
                    ApiError::conflict("no_credentials", format!("connection {id} has no credentials: PUT /v1/connections/{id}/credentials"))
                })
            }
        }
    }
}

fn credential_error(id: &str, e: CredentialError) -> ApiError {
    match e {
        CredentialError::Store(s) => s.into(),
        CredentialError::Rejected(why) => ApiError::bad_request(
            "credentials_rejected",
            format!("the platform did not accept the new credentials for {id}: {why}. Nothing changed; check them and try again"),
        ),
        CredentialError::NoCredential(_) => {
            ApiError::conflict("no_credentials", format!("connection {id} has no credentials: PUT /v1/connections/{id}/credentials"))
        }
        CredentialError::Unusable(e) => ApiError::bad_request("credentials_unusable", format!("{e}")),
        other => ApiError::unavailable("platform_unreachable", format!("connection {id}: {other}; try again")),
    }
}

#[async_trait]
impl ConnectionControl for Gateway {
    async fn connected(&self, id: &str) -> Result<(), ApiError> {
        if self.attached(id).await.is_none()
            && let Some(c) = self.inner.store.get_connection(id).await?
        {
            self.attach(&c).await.map_err(|e| ApiError::conflict("not_attached", format!("connection {id} cannot run: {e}")))?;
        }
        Ok(())
    }

    async fn deleted(&self, id: &str) {
        self.detach(id).await;
    }

    async fn probe(&self, id: &str) -> Result<Value, ApiError> {
        let a = self.require(id).await?;
        let report = a.manager.probe().await.map_err(|e| credential_error(id, e))?;
        Ok(serde_json::to_value(report).unwrap_or(Value::Null))
    }

    async fn update_credentials(&self, id: &str, secret: CredentialSecret, expires_at: Option<Millis>) -> Result<Value, ApiError> {
        let now = self.inner.clock.now_ms();
        if let Some(a) = self.attached(id).await {
            let report = a.manager.update_credentials(secret, expires_at).await.map_err(|e| credential_error(id, e))?;
            return Ok(serde_json::to_value(report).unwrap_or(Value::Null));
        }
        let conn = self.inner.store.get_connection(id).await?.ok_or_else(|| ApiError::connection_not_found(id))?;
        if conn.state == ConnectionState::Deleted {
            return Err(ApiError::connection_not_found(id));
        }
        // Not attached: it had no credentials. Store them and attach, which probes.
        self.inner.store.put_credential(id, &secret, expires_at, Expect::Any, now).await?;
        self.attach(&conn).await.map_err(|e| ApiError::conflict("not_attached", format!("connection {id} cannot run: {e}")))?;
        let conn = self.inner.store.get_connection(id).await?.ok_or_else(|| ApiError::connection_not_found(id))?;
        Ok(conn.probe_report.unwrap_or_else(|| json!({ "passed": false })))
    }

    async fn suspend(&self, id: &str, reason: &str) -> Result<bool, ApiError> {
        let a = self.require(id).await?;
        a.manager.suspend(reason, "operator").await.map_err(|e| credential_error(id, e))
    }

    async fn resume(&self, id: &str) -> Result<bool, ApiError> {
        let a = self.require(id).await?;
        // Never resume blind: the credential must work now.
        let ok = a.manager.health_check().await.map_err(|e| credential_error(id, e))?;
        if !ok {
            return Err(ApiError::conflict(
                "credentials_invalid",
                format!("connection {id}: the platform refuses the stored credential; PUT /v1/connections/{id}/credentials with new ones (that resumes it)"),
            ));
        }
        a.manager.resume().await.map_err(|e| credential_error(id, e))
    }
}
