//! [`BudgetGate`]: waiting for a permit, with writes first.
//!
//! The gate wraps one connection's [`RateBudget`] with three queues, served in this order:
//! [`Priority::WriteRetry`] (writes popped from the [`crate::budget::WriteRetryQueue`]),
//! [`Priority::Write`], [`Priority::Read`]; FIFO within each. A *scheduling round* walks the
//! waiters in that order and asks the budget for each; a waiter that is refused *claims* the
//! counters that refused it, and later waiters that draw on a claimed counter are held without
//! asking, so nobody overtakes an earlier or more urgent waiter on the counter it waits for, while
//! waiters on other counters (another ticket's per-ticket cap) still go. Rounds run when a waiter
//! arrives or leaves, on every observation, penalty or refund, and on [`BudgetGate::tick`].
//!
//! Waiting is driven by the injected clock: [`BudgetGate::next_wake`] says when the earliest
//! refused waiter could fit, and [`BudgetGate::drive`] sleeps until then (through a [`Sleeper`])
//! or until something changes, and ticks. Tests need neither: they move a
//! [`crate::clock::ManualClock`] and call `tick()`.
//!
//! A round costs O(waiters); callers bound how many requests per connection wait at once (the
//! reconciler's page concurrency, the outbox's write concurrency), so queues stay short.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use serde::Serialize;
use tokio::sync::{Notify, oneshot};

use crate::bindings::{BucketDraw, HttpRequest, Lane, PlanLimits, RateLimitedDetail, RateObservation};
use crate::clock::{Millis, SharedClock};

use super::rate::{Denied, Never, Permit, RateBudget};
use super::rate::CounterSpec;
use super::shared::{FallbackSpend, SharedBudgets, SharedDraw};
use super::snapshot::BudgetSnapshot;

/// Which queue a request waits in. Ordered: a round serves `WriteRetry`, then `Write`, then `Read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Priority {
    /// A write that met a 429 and comes back from the write-retry queue: first of all.
    WriteRetry,
    /// A new write.
    Write,
    /// A read.
    Read,
}

impl Priority {
    /// The lane whose capacity the queue draws on.
    pub fn lane(self) -> Lane {
        match self {
            Priority::WriteRetry | Priority::Write => Lane::Write,
            Priority::Read => Lane::Read,
        }
    }
}

impl From<Lane> for Priority {
    fn from(lane: Lane) -> Self {
        match lane {
            Lane::Write => Priority::Write,
            Lane::Read => Priority::Read,
        }
    }
}

/// Why a wait for a permit ended without one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcquireError {
    /// Waiting cannot help (undeclared bucket, cost above the lane's capacity).
    #[error(transparent)]
    Never(#[from] Never),
    /// The gate was closed (the connection was removed or suspended).
    #[error("rate budget: the connection's gate was closed while the request waited")]
    Closed,
}

/// Sleeps until an instant of the injected clock.
pub trait Sleeper: Send + Sync {
    /// Resolve at (or after) `at`.
    fn sleep_until(&self, at: Millis) -> impl Future<Output = ()> + Send;
}

/// A [`Sleeper`] on tokio's timer, converting the clock's instant into a duration from its `now`.
#[derive(Debug, Clone)]
pub struct TokioSleeper {
    clock: SharedClock,
}

impl TokioSleeper {
    /// A sleeper measuring against `clock`.
    pub fn new(clock: SharedClock) -> Self {
        Self { clock }
    }
}

impl Sleeper for TokioSleeper {
    fn sleep_until(&self, at: Millis) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(self.clock.real_wait(at.saturating_sub(self.clock.now_ms())))
    }
}

#[derive(Debug)]
struct Waiter {
    draws: Vec<BucketDraw>,
    tx: oneshot::Sender<Result<Permit, Never>>,
    /// When the last round refused it: the earliest time worth another round. `None` when held
    /// behind another waiter.
    not_before: Option<Millis>,
    /// Not asked before then (the shared backend refused it until then).
    hold: Millis,
}

#[derive(Debug)]
struct State {
    budget: RateBudget,
    waiting: BTreeMap<(Priority, u64), Waiter>,
    seq: u64,
    closed: bool,
    /// With a shared backend, while it is unreachable: the spend made on the local share.
    fallback: Option<FallbackSpend>,
}

/// Whether any draw is on a claimed counter (a claim without a key covers the whole bucket).
fn touches(draws: &[BucketDraw], claims: &[(String, Option<String>)]) -> bool {
    draws.iter().any(|d| claims.iter().any(|(b, k)| *b == d.bucket && (k.is_none() || *k == d.key)))
}

impl State {
    /// One scheduling round at `now`; returns how many permits it granted.
    fn round(&mut self, now: Millis) -> usize {
        let mut claims: Vec<(String, Option<String>)> = Vec::new();
        let mut granted = 0;
        let ids: Vec<(Priority, u64)> = self.waiting.keys().copied().collect();
        for id in ids {
            let Some(w) = self.waiting.get_mut(&id) else { continue };
            if w.tx.is_closed() {
                self.waiting.remove(&id);
                continue;
            }
            if touches(&w.draws, &claims) {
                w.not_before = None;
                continue;
            }
            if w.hold > now {
                w.not_before = Some(w.hold);
                continue;
            }
            match self.budget.try_acquire(id.0.lane(), &w.draws, now) {
                Ok(permit) => {
                    let w = self.waiting.remove(&id).expect("present");
                    match w.tx.send(Ok(permit)) {
                        Ok(()) => granted += 1,
                        // The waiter left between the check and the send: nothing was sent.
                        Err(Ok(permit)) => self.budget.refund(&permit, now),
                        Err(Err(_)) => {}
                    }
                }
                Err(Denied::NotUntil(wait)) => {
                    w.not_before = Some(wait.at);
                    claims.extend(wait.blocked.into_iter().map(|b| (b.bucket, b.key)));
                }
                Err(Denied::Never(never)) => {
                    let w = self.waiting.remove(&id).expect("present");
                    let _ = w.tx.send(Err(never));
                }
            }
        }
        granted
    }

    fn next_wake(&self) -> Option<Millis> {
        self.waiting.values().filter_map(|w| w.not_before).min()
    }
}

/// A gate's tie to the budgets shared across replicas.
#[derive(Debug)]
struct SharedLink {
    budgets: Arc<SharedBudgets>,
    connection: String,
}

#[derive(Debug)]
struct Inner {
    clock: SharedClock,
    shared: Option<SharedLink>,
    state: Mutex<State>,
    /// Wakes [`BudgetGate::drive`] when the next wake time may have changed.
    wake: Notify,
    /// 429 responses the platform served this connection, per lane (read, write).
    limited: [std::sync::atomic::AtomicU64; 2],
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent between statements; a panic elsewhere must not wedge the
        // connection's budget.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Queue depths of a gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Waiting {
    /// Writes back from the write-retry queue.
    pub write_retry: usize,
    /// New writes.
    pub write: usize,
    /// Reads.
    pub read: usize,
}

/// A count per lane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LaneCount {
    /// Read lane.
    pub read: u64,
    /// Write lane.
    pub write: u64,
}

/// A gate's budget and queues at one instant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateSnapshot {
    /// The budget.
    pub budget: BudgetSnapshot,
    /// Who is waiting.
    pub waiting: Waiting,
    /// When the next round is due, if anyone waits on time.
    pub next_wake: Option<Millis>,
    /// 429 responses the platform served this connection through this gate, per lane.
    pub responses_429: LaneCount,
    /// Where decisions are made: `local` (this process only), `shared` (with the other
    /// replicas, through the shared backend) or `fallback` (shared backend unreachable: a
    /// conservative local share).
    pub mode: &'static str,
}

/// One connection's budget with its waiting queues. Cheap to clone (a handle).
///
/// ```
/// use deskgate::bindings::{BucketDraw, BucketScope, PlanLimits, RateBucket};
/// use deskgate::budget::{BudgetConfig, BudgetGate, Priority, RateBudget};
/// use deskgate::clock::ManualClock;
/// use std::sync::Arc;
/// use std::time::Duration;
/// # let plan = PlanLimits { plan: "p".into(), buckets: vec![RateBucket {
/// #     name: "account".into(), scope: BucketScope::Account, limit: 4, window_ms: 60_000,
/// #     description: String::new() }] };
/// let clock = ManualClock::new(0);
/// let gate = BudgetGate::new(RateBudget::new(&plan, BudgetConfig::default()), Arc::new(clock.clone()));
/// let draw = [BucketDraw { bucket: "account".into(), key: None, cost: 1 }];
/// let _waits: Vec<_> = (0..4).map(|_| gate.acquire(Priority::Write, &draw)).collect();
/// assert_eq!(gate.next_wake(), Some(60_000)); // 3 granted, the fourth waits for the window
/// clock.advance(Duration::from_secs(60));
/// assert_eq!(gate.tick(), 1);
/// ```
#[derive(Debug, Clone)]
pub struct BudgetGate {
    inner: Arc<Inner>,
}

impl BudgetGate {
    /// A gate over `budget`, reading time from `clock`.
    pub fn new(budget: RateBudget, clock: SharedClock) -> Self {
        Self::build(budget, clock, None)
    }

    /// A gate over `budget` for `connection`, whose permits are confirmed by budgets shared
    /// with the other replicas (see [`crate::budget::shared`]).
    pub fn shared(budget: RateBudget, clock: SharedClock, budgets: Arc<SharedBudgets>, connection: &str) -> Self {
        Self::build(budget, clock, Some(SharedLink { budgets, connection: connection.to_owned() }))
    }

    fn build(budget: RateBudget, clock: SharedClock, shared: Option<SharedLink>) -> Self {
        let state = State { budget, waiting: BTreeMap::new(), seq: 0, closed: false, fallback: None };
        Self { inner: Arc::new(Inner { clock, shared, state: Mutex::new(state), wake: Notify::new(), limited: Default::default() }) }
    }

    fn now(&self) -> Millis {
        self.inner.clock.now_ms()
    }

    /// Wait for a permit for `draws` in `priority`'s queue. The place in the queue is taken now,
    /// at the call, not at the first poll; if the draws fit and nobody earlier waits on them, the
    /// permit is granted at once. Dropping the future leaves the queue (and gives back a permit
    /// granted but not yet received).
    pub fn acquire(&self, priority: Priority, draws: &[BucketDraw]) -> Acquire {
        let local = enqueue(&self.inner, priority, draws, Millis::MIN);
        Acquire {
            gate: Arc::clone(&self.inner),
            priority,
            draws: if self.inner.shared.is_some() { draws.to_vec() } else { Vec::new() },
            local: Some(local),
            confirming: None,
        }
    }

    /// [`BudgetGate::acquire`] for an adapter's request: its lane's queue, its draws.
    pub fn acquire_request(&self, request: &HttpRequest) -> Acquire {
        self.acquire(request.lane.into(), &request.draws)
    }

    /// Run a scheduling round now; returns how many permits it granted. Also drops idle
    /// per-object counters.
    pub fn tick(&self) -> usize {
        let now = self.now();
        let mut st = self.inner.lock();
        st.budget.evict_idle(now);
        st.round(now)
    }

    /// When a round could next grant something on time alone (`None`: nobody waits on time).
    pub fn next_wake(&self) -> Option<Millis> {
        self.inner.lock().next_wake()
    }

    /// Apply the platform's rate readings from one response, then run a round. With shared
    /// budgets the readings are also sent to the shared counters.
    pub fn observe(&self, observations: &[RateObservation]) {
        self.with_budget(|b, now| {
            for o in observations {
                b.observe(o, now);
            }
        });
        self.forward_observations(None, observations);
    }

    /// Apply the readings from the response to the request `permit` was granted for (see
    /// [`RateBudget::observe_after`]), then run a round. With shared budgets the readings are
    /// also sent to the shared counters.
    pub fn observe_after(&self, permit: &Permit, observations: &[RateObservation]) {
        self.with_budget(|b, now| {
            for o in observations {
                b.observe_after(permit, o, now);
            }
        });
        self.forward_observations(Some(permit), observations);
    }

    /// Block a bucket (or one key, or every bucket) for both lanes until `until`. See
    /// [`RateBudget::penalize`]. With shared budgets the penalty reaches every replica.
    pub fn penalize(&self, bucket: Option<&str>, key: Option<&str>, until: Millis) {
        let specs = self.with_budget(|b, _| {
            b.penalize(bucket, key, until);
            b.bucket_names()
                .into_iter()
                .filter(|n| bucket.is_none_or(|x| x == n))
                .filter_map(|n| b.counter_spec(&n, key))
                .collect::<Vec<_>>()
        });
        self.forward_penalties(specs, until);
    }

    /// Apply a `rate-limited` failure met by a request that drew `draws`; returns until when the
    /// affected counters are blocked (the `not_before` for the write-retry queue). With shared
    /// budgets the penalty reaches every replica.
    pub fn rate_limited(&self, draws: &[BucketDraw], detail: &RateLimitedDetail) -> Millis {
        let (until, specs) = self.with_budget(|b, now| {
            let until = b.rate_limited(draws, detail, now);
            let named = detail.bucket.as_deref().filter(|n| b.counter_spec(n, None).is_some());
            let mut specs: Vec<_> = draws
                .iter()
                .filter(|d| named.is_none_or(|n| n == d.bucket))
                .filter_map(|d| b.counter_spec(&d.bucket, d.key.as_deref()))
                .collect();
            if let (Some(n), true) = (named, specs.is_empty()) {
                specs.extend(b.counter_spec(n, None));
            }
            (until, specs)
        });
        self.forward_penalties(specs, until);
        until
    }

    /// Give back a permit whose request was never sent (to the shared counters too).
    pub fn refund(&self, permit: &Permit) {
        self.with_budget(|b, now| b.refund(permit, now));
        let Some(link) = self.shared_online() else { return };
        let specs: Vec<_> = {
            let st = self.inner.lock();
            permit
                .drawn
                .iter()
                .filter_map(|d| st.budget.counter_spec(&d.bucket, d.key.as_deref()).map(|s| (s, d.cost, d.window_start)))
                .collect()
        };
        let (lane, now) = (permit.lane, self.now());
        spawn(async move {
            for (spec, cost, start) in specs {
                let r = link.budgets.backend().refund(&link.connection, &spec, lane, cost, start, now).await;
                if let Err(e) = r {
                    link.budgets.failed(now, &e);
                    return;
                }
            }
        });
    }

    /// The shared link, if there is one and the gate is not in fallback.
    fn shared_online(&self) -> Option<Arc<SharedLinkOwned>> {
        let link = self.inner.shared.as_ref()?;
        if self.inner.lock().fallback.is_some() {
            return None;
        }
        Some(Arc::new(SharedLinkOwned { budgets: Arc::clone(&link.budgets), connection: link.connection.clone() }))
    }

    fn forward_observations(&self, permit: Option<&Permit>, observations: &[RateObservation]) {
        if observations.is_empty() {
            return;
        }
        let Some(link) = self.shared_online() else { return };
        let now = self.now();
        let jobs: Vec<_> = {
            let st = self.inner.lock();
            observations
                .iter()
                .filter_map(|o| {
                    let spec = st.budget.counter_spec(&o.bucket, o.key.as_deref())?;
                    let reset = match (o.reset_ms, o.reset_at) {
                        (Some(ms), _) => Some(now.saturating_add(Millis::try_from(ms).unwrap_or(Millis::MAX))),
                        (None, at) => at,
                    };
                    let sent_in = permit.and_then(|p| {
                        p.drawn.iter().find(|d| d.bucket == spec.bucket && d.key == spec.key).map(|d| d.window_start)
                    });
                    Some((spec, o.limit.filter(|&l| l > 0), o.remaining.map(u64::from), reset, sent_in))
                })
                .collect()
        };
        spawn(async move {
            for (spec, limit, remaining, reset, sent_in) in jobs {
                let r = link.budgets.backend().observe(&link.connection, &spec, limit, remaining, reset, sent_in, now).await;
                if let Err(e) = r {
                    link.budgets.failed(now, &e);
                    return;
                }
            }
        });
    }

    fn forward_penalties(&self, specs: Vec<super::rate::CounterSpec>, until: Millis) {
        let Some(link) = self.shared_online() else { return };
        let now = self.now();
        spawn(async move {
            for spec in specs {
                if let Err(e) = link.budgets.backend().penalize(&link.connection, &spec, until, now).await {
                    link.budgets.failed(now, &e);
                    return;
                }
            }
        });
    }

    /// Switch the connection's plan (see [`RateBudget::set_plan`]).
    pub fn set_plan(&self, plan: &PlanLimits) {
        self.with_budget(|b, _| b.set_plan(plan));
    }

    /// The plan in force.
    pub fn plan(&self) -> String {
        self.inner.lock().budget.plan().to_owned()
    }

    fn with_budget<R>(&self, f: impl FnOnce(&mut RateBudget, Millis) -> R) -> R {
        let now = self.now();
        let mut st = self.inner.lock();
        let r = f(&mut st.budget, now);
        st.round(now);
        drop(st);
        self.inner.wake.notify_one();
        r
    }

    /// Count a platform response to a request of `lane` (every policy that sends through the gate
    /// calls this with every response): 429s are counted per lane for the operator's metrics.
    pub fn record_response(&self, lane: Lane, status: u16) {
        if status == 429 {
            let i = usize::from(lane == Lane::Write);
            self.inner.limited[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// 429 responses counted by [`BudgetGate::record_response`], per lane.
    pub fn responses_429(&self) -> LaneCount {
        let get = |i: usize| self.inner.limited[i].load(std::sync::atomic::Ordering::Relaxed);
        LaneCount { read: get(0), write: get(1) }
    }

    /// The budget and the queues, now.
    pub fn snapshot(&self) -> GateSnapshot {
        let now = self.now();
        let st = self.inner.lock();
        let mut waiting = Waiting::default();
        for (p, _) in st.waiting.keys() {
            match p {
                Priority::WriteRetry => waiting.write_retry += 1,
                Priority::Write => waiting.write += 1,
                Priority::Read => waiting.read += 1,
            }
        }
        let mode = match (&self.inner.shared, &st.fallback) {
            (None, _) => "local",
            (Some(_), None) => "shared",
            (Some(_), Some(_)) => "fallback",
        };
        GateSnapshot { budget: st.budget.snapshot(now), waiting, next_wake: st.next_wake(), responses_429: self.responses_429(), mode }
    }

    /// Close the gate: every waiter ends with [`AcquireError::Closed`], new ones too, and
    /// [`BudgetGate::drive`] returns.
    pub fn close(&self) {
        let mut st = self.inner.lock();
        st.closed = true;
        st.waiting.clear();
        drop(st);
        self.inner.wake.notify_one();
    }

    /// Whether the gate was closed.
    pub fn is_closed(&self) -> bool {
        self.inner.lock().closed
    }

    /// Run rounds on time until the gate is closed: tick, then sleep until the next wake or until
    /// something changes (a waiter, an observation, a penalty). Spawn one per connection.
    pub async fn drive(&self, sleeper: &impl Sleeper) {
        loop {
            // Taken before the tick so that a change during it is not missed.
            let changed = self.inner.wake.notified();
            if self.is_closed() {
                return;
            }
            self.tick();
            match self.next_wake() {
                Some(at) => {
                    tokio::select! {
                        () = sleeper.sleep_until(at) => {}
                        () = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

/// Put a waiter in `priority`'s queue (not asked before `hold`) and run a round.
fn enqueue(inner: &Arc<Inner>, priority: Priority, draws: &[BucketDraw], hold: Millis) -> LocalWait {
    let (tx, rx) = oneshot::channel();
    let now = inner.clock.now_ms();
    let mut st = inner.lock();
    let id = (priority, st.seq);
    st.seq += 1;
    if !st.closed {
        st.waiting.insert(id, Waiter { draws: draws.to_vec(), tx, not_before: None, hold });
        st.round(now);
    }
    let waits = st.waiting.contains_key(&id);
    drop(st);
    if waits {
        inner.wake.notify_one();
    }
    LocalWait { gate: Arc::clone(inner), id, rx, done: false }
}

/// Run a forwarding job on the current tokio runtime, if there is one (there always is where
/// requests are sent).
fn spawn(job: impl Future<Output = ()> + Send + 'static) {
    if let Ok(h) = tokio::runtime::Handle::try_current() {
        h.spawn(job);
    }
}

/// What forwarding jobs hold: the shared budgets and the connection id.
struct SharedLinkOwned {
    budgets: Arc<SharedBudgets>,
    connection: String,
}

/// How a shared confirmation ended.
enum Confirmed {
    /// The permit stands (with the shared windows).
    Granted(Permit),
    /// Queue again, not asked before this time.
    Retry(Millis),
}

/// Confirm a locally granted permit with the shared backend (see [`crate::budget::shared`]).
async fn confirm(inner: Arc<Inner>, permit: Permit) -> Confirmed {
    let link = inner.shared.as_ref().expect("confirm runs only with a shared link");
    let budgets = Arc::clone(&link.budgets);
    let now = inner.clock.now_ms();
    let (draws, target_pm, in_fallback) = {
        let st = inner.lock();
        let draws: Vec<SharedDraw> = permit
            .drawn
            .iter()
            .filter_map(|d| st.budget.counter_spec(&d.bucket, d.key.as_deref()).map(|spec| SharedDraw { spec, cost: d.cost }))
            .collect();
        (draws, st.budget.config().target.as_permille(), st.fallback.is_some())
    };
    if !budgets.usable(now) {
        return fallback_grant(&inner, &budgets, permit, now);
    }
    let mut charged: Vec<(CounterSpec, Millis, u64, u64)> = Vec::new();
    if in_fallback {
        // Back from an outage: first charge what this replica spent on its local share in
        // windows that are still open, so the cluster does not spend it twice.
        let charges: Vec<_> = {
            let st = inner.lock();
            st.fallback
                .as_ref()
                .map(|f| {
                    f.counters
                        .values()
                        .filter(|c| c.window_end > now)
                        .map(|c| (c.spec.clone(), c.window_start, c.read, c.write))
                        .collect()
                })
                .unwrap_or_default()
        };
        for (spec, start, read, write) in charges {
            if let Err(e) = budgets.backend().charge(&link.connection, &spec, read, write, now).await {
                budgets.failed(now, &e);
                return fallback_grant(&inner, &budgets, permit, now);
            }
            charged.push((spec, start, read, write));
        }
    }
    match budgets.backend().acquire(&link.connection, permit.lane, target_pm, &draws, now).await {
        Ok(verdict) => {
            budgets.succeeded();
            let mut st = inner.lock();
            if let Some(spent) = st.fallback.take() {
                st.budget.set_divisor(1);
                tracing::info!(connection = %link.connection, "shared rate budget restored");
                // Permits granted on the local share while this confirmation was in flight are
                // charged too.
                let rest: Vec<_> = spent
                    .counters
                    .into_values()
                    .filter(|c| c.window_end > now)
                    .filter_map(|c| {
                        let (r0, w0) = charged
                            .iter()
                            .find(|(s, start, _, _)| *s == c.spec && *start == c.window_start)
                            .map(|(_, _, r, w)| (*r, *w))
                            .unwrap_or((0, 0));
                        let (r, w) = (c.read.saturating_sub(r0), c.write.saturating_sub(w0));
                        (r + w > 0).then_some((c.spec, r, w))
                    })
                    .collect();
                if !rest.is_empty() {
                    let (b, conn) = (Arc::clone(&budgets), link.connection.clone());
                    spawn(async move {
                        for (spec, r, w) in rest {
                            if let Err(e) = b.backend().charge(&conn, &spec, r, w, now).await {
                                b.failed(now, &e);
                                return;
                            }
                        }
                    });
                }
            }
            for (d, c) in draws.iter().zip(&verdict.counters) {
                st.budget.adopt(&d.spec.bucket, d.spec.key.as_deref(), c);
            }
            let out = if verdict.granted {
                let mut p = permit;
                for (drawn, c) in p.drawn.iter_mut().zip(&verdict.counters) {
                    drawn.window_start = c.start;
                    drawn.window_end = c.end;
                }
                Confirmed::Granted(p)
            } else {
                Confirmed::Retry(verdict.until.max(now.saturating_add(1)))
            };
            st.round(now);
            drop(st);
            inner.wake.notify_one();
            out
        }
        Err(e) => {
            budgets.failed(now, &e);
            fallback_grant(&inner, &budgets, permit, now)
        }
    }
}

/// The shared backend is unreachable: keep to the local share. A permit granted on the whole
/// local target is given back and decided again on the share; one granted on the share stands.
fn fallback_grant(inner: &Arc<Inner>, budgets: &SharedBudgets, permit: Permit, now: Millis) -> Confirmed {
    let mut st = inner.lock();
    if st.fallback.is_none() {
        st.fallback = Some(FallbackSpend::default());
        st.budget.set_divisor(budgets.settings().replicas);
        st.budget.refund(&permit, now);
        st.round(now);
        drop(st);
        inner.wake.notify_one();
        return Confirmed::Retry(now);
    }
    let specs: Vec<_> = permit
        .drawn
        .iter()
        .filter_map(|d| st.budget.counter_spec(&d.bucket, d.key.as_deref()).map(|s| (s, d.clone())))
        .collect();
    if let Some(f) = st.fallback.as_mut() {
        f.record(specs, permit.lane);
    }
    Confirmed::Granted(permit)
}

/// A wait for a permit; see [`BudgetGate::acquire`].
#[must_use = "a permit is granted only to a waiter that is awaited or polled"]
pub struct Acquire {
    gate: Arc<Inner>,
    priority: Priority,
    /// The draws, kept to queue again after a shared refusal (empty without a shared link).
    draws: Vec<BucketDraw>,
    local: Option<LocalWait>,
    confirming: Option<Pin<Box<dyn Future<Output = Confirmed> + Send>>>,
}

impl std::fmt::Debug for Acquire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acquire")
            .field("priority", &self.priority)
            .field("local", &self.local)
            .field("confirming", &self.confirming.is_some())
            .finish()
    }
}

impl Future for Acquire {
    type Output = Result<Permit, AcquireError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            if let Some(fut) = this.confirming.as_mut() {
                match fut.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Confirmed::Granted(p)) => {
                        this.confirming = None;
                        return Poll::Ready(Ok(p));
                    }
                    Poll::Ready(Confirmed::Retry(hold)) => {
                        this.confirming = None;
                        this.local = Some(enqueue(&this.gate, this.priority, &this.draws, hold));
                        continue;
                    }
                }
            }
            let Some(local) = this.local.as_mut() else {
                return Poll::Ready(Err(AcquireError::Closed));
            };
            match Pin::new(local).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    this.local = None;
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Ok(permit)) => {
                    this.local = None;
                    if this.gate.shared.is_none() {
                        return Poll::Ready(Ok(permit));
                    }
                    this.confirming = Some(Box::pin(confirm(Arc::clone(&this.gate), permit)));
                }
            }
        }
    }
}

/// A place in the gate's queue (the local half of [`Acquire`]).
#[derive(Debug)]
struct LocalWait {
    gate: Arc<Inner>,
    id: (Priority, u64),
    rx: oneshot::Receiver<Result<Permit, Never>>,
    done: bool,
}

impl Future for LocalWait {
    type Output = Result<Permit, AcquireError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        match Pin::new(&mut this.rx).poll(cx) {
            Poll::Ready(r) => {
                this.done = true;
                Poll::Ready(match r {
                    Ok(Ok(permit)) => Ok(permit),
                    Ok(Err(never)) => Err(AcquireError::Never(never)),
                    Err(_) => Err(AcquireError::Closed),
                })
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for LocalWait {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let now = self.gate.clock.now_ms();
        let mut st = self.gate.lock();
        let left = st.waiting.remove(&self.id).is_some();
        let refunded = match self.rx.try_recv() {
            Ok(Ok(permit)) => {
                st.budget.refund(&permit, now);
                true
            }
            _ => false,
        };
        if left || refunded {
            // It may have held others back, or given units back: let them go now.
            st.round(now);
            drop(st);
            self.gate.wake.notify_one();
        }
    }
}
