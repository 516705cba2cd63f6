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
}

#[derive(Debug)]
struct State {
    budget: RateBudget,
    waiting: BTreeMap<(Priority, u64), Waiter>,
    seq: u64,
    closed: bool,
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

#[derive(Debug)]
struct Inner {
    clock: SharedClock,
    state: Mutex<State>,
    /// Wakes [`BudgetGate::drive`] when the next wake time may have changed.
    wake: Notify,
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

/// A gate's budget and queues at one instant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateSnapshot {
    /// The budget.
    pub budget: BudgetSnapshot,
    /// Who is waiting.
    pub waiting: Waiting,
    /// When the next round is due, if anyone waits on time.
    pub next_wake: Option<Millis>,
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
        let state = State { budget, waiting: BTreeMap::new(), seq: 0, closed: false };
        Self { inner: Arc::new(Inner { clock, state: Mutex::new(state), wake: Notify::new() }) }
    }

    fn now(&self) -> Millis {
        self.inner.clock.now_ms()
    }

    /// Wait for a permit for `draws` in `priority`'s queue. The place in the queue is taken now,
    /// at the call, not at the first poll; if the draws fit and nobody earlier waits on them, the
    /// permit is granted at once. Dropping the future leaves the queue (and gives back a permit
    /// granted but not yet received).
    pub fn acquire(&self, priority: Priority, draws: &[BucketDraw]) -> Acquire {
        let (tx, rx) = oneshot::channel();
        let now = self.now();
        let mut st = self.inner.lock();
        let id = (priority, st.seq);
        st.seq += 1;
        if !st.closed {
            st.waiting.insert(id, Waiter { draws: draws.to_vec(), tx, not_before: None });
            st.round(now);
        }
        let waits = st.waiting.contains_key(&id);
        drop(st);
        if waits {
            self.inner.wake.notify_one();
        }
        Acquire { gate: Arc::clone(&self.inner), id, rx, done: false }
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

    /// Apply the platform's rate readings from one response, then run a round.
    pub fn observe(&self, observations: &[RateObservation]) {
        self.with_budget(|b, now| {
            for o in observations {
                b.observe(o, now);
            }
        });
    }

    /// Apply the readings from the response to the request `permit` was granted for (see
    /// [`RateBudget::observe_after`]), then run a round.
    pub fn observe_after(&self, permit: &Permit, observations: &[RateObservation]) {
        self.with_budget(|b, now| {
            for o in observations {
                b.observe_after(permit, o, now);
            }
        });
    }

    /// Block a bucket (or one key, or every bucket) for both lanes until `until`. See
    /// [`RateBudget::penalize`].
    pub fn penalize(&self, bucket: Option<&str>, key: Option<&str>, until: Millis) {
        self.with_budget(|b, _| b.penalize(bucket, key, until));
    }

    /// Apply a `rate-limited` failure met by a request that drew `draws`; returns until when the
    /// affected counters are blocked (the `not_before` for the write-retry queue).
    pub fn rate_limited(&self, draws: &[BucketDraw], detail: &RateLimitedDetail) -> Millis {
        self.with_budget(|b, now| b.rate_limited(draws, detail, now))
    }

    /// Give back a permit whose request was never sent.
    pub fn refund(&self, permit: &Permit) {
        self.with_budget(|b, now| b.refund(permit, now));
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
        GateSnapshot { budget: st.budget.snapshot(now), waiting, next_wake: st.next_wake() }
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

/// A wait for a permit; see [`BudgetGate::acquire`].
#[derive(Debug)]
#[must_use = "a permit is granted only to a waiter that is awaited or polled"]
pub struct Acquire {
    gate: Arc<Inner>,
    id: (Priority, u64),
    rx: oneshot::Receiver<Result<Permit, Never>>,
    done: bool,
}

impl Future for Acquire {
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

impl Drop for Acquire {
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
