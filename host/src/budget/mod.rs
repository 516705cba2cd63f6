//! Rate budgets: how fast each connection may spend its platform's rate limits.
//!
//! # Why budgets, and not retries on 429?
//!
//! A helpdesk's rate limit belongs to the account, not to us: the account's other integrations,
//! apps and scripts spend the same per-minute allowance, and a 429 is answered to whichever client
//! asks next. A gateway that runs until it meets the wall and then retries spends the whole
//! allowance in bursts, starves everyone else on the account, and still has to wait. So the host
//! spends each bucket *proactively*: at most a target share of the stated limit per window (75% by
//! default), leaving the rest to the account's other clients, and it reads the platform's own
//! `remaining`/`reset` figures after every response to lower its allowance when others spend more
//! than their share. A 429 can still happen (another client bursts), and then it is back-pressure,
//! not failure: the bucket is blocked until the platform says, the write waits in the
//! [`WriteRetryQueue`], reads back off ([`Backoff`]).
//!
//! # Why two lanes?
//!
//! A read can wait (the next sweep picks it up); a write is a customer waiting for a reply. Reads
//! and writes therefore wait in separate queues and a write never waits behind a read: a share of
//! every bucket's target is reserved for writes (30% by default), reads may only spend the rest,
//! writes may spend all of it, and when both wait, writes are served first. A read flood at any rate
//! leaves the write lane its reserve. A reserve the writes do not use is not wasted: once the
//! window is aligned to the platform's (a reset reading) and while no other client of the account
//! spends more than half the reserve in it, it is released to reads in step with the window's elapsed time, so a flood still spends the whole target by the window's end, while the
//! writes keep room for the part of the window that is left.
//!
//! # The algorithm
//!
//! Every bucket of the connection's plan (and, for per-object buckets such as Zendesk's per-ticket
//! update cap, every key) has one fixed-window counter: `start`, `end`, `read`, `write`,
//! `others`, `anchored`, `penalty` (see `window.rs`; integers only, so a Redis script can mirror it
//! for budgets shared across replicas, issue #9). With `L` the limit in force, `W` the window:
//!
//! - **Capacity.** `target = max(1, ⌊L · target‰ / 1000⌋)`, `reserve = ⌊target · reserve‰ / 1000⌋`,
//!   `spent = read + write + others`, and `kept = ⌈reserve · (end − now) / W⌉`, the reserve for the
//!   rest of the window, on an anchored window where others spent at most half the reserve (beyond that,
//!   `kept = reserve`: their pace is unknown; on a window of our own phase, `kept = reserve` too:
//!   there a `remaining` reading can fold our previous window's tail into `others` after the reads
//!   took the released part, leaving the writes nothing). A write fits if `spent + cost ≤ target`; a read if
//!   `read + others + max(write, min(reserve, write + kept)) + cost ≤ target`. So writes may spend
//!   the whole target and spend their reserve before they narrow the reads' share; at the window's
//!   start reads get no more than `target − reserve`, and the reserve the writes left unused is
//!   released to them as the window runs out, while writes keep `kept` units of room (at least one
//!   until the end): a write rate within the reserve always finds room, and a read flood spends the
//!   whole target by the window's end. Others' spend (which we cannot steer) narrows the reads' share
//!   first. A refused read learns when the release makes room for it
//!   (`end − ⌊(target − read − others − cost − write) · W / reserve⌋`), a refused write waits for `end`.
//! - **Roll.** At `now ≥ end` the counter starts a new window with zero counts: at `now` (the first
//!   draw opens it, like a counter with a TTL) or, once `anchored`, at the next boundary of the
//!   platform's own grid (`end + k·W`).
//! - **Acquire** (`lane`, draws): draws on the same counter are added up; a draw on an undeclared
//!   bucket, or costing more than the lane's capacity, is [`Never`]. Otherwise every counter is
//!   rolled and checked: refused if a bucket-wide or per-key `penalty > now` (until the penalty), or
//!   if the lane's draw does not fit (until `end`). All draws are taken, or none; a refusal is
//!   [`NotUntil`] at the latest of the refusing counters' times, naming them.
//! - **Observe** (`limit?`, `remaining?`, reset as `reset-ms` or `reset-at`): a stated limit replaces
//!   `L` for the bucket (plan upgrades and downgrades). A reset `T ≤ now` describes a window the
//!   platform has closed: the counts are left alone. A reset `T > now` (clamped to `now + W`)
//!   anchors the window to `[T − W, T)`; if that is a later window than ours (ours is over, or
//!   `T ≥ end + W/2`) our counts restart from zero, else they stay. Without a reset, a reading from
//!   a request counted in an earlier window than the current one ([`RateBudget::observe_after`]) is
//!   not applied: its response crossed our boundary and may count the closed window. Then
//!   `remaining = R` sets `others = max(0, (L − R) − (read + write))`. Our allowance left in the
//!   window is then `target − spent = R − (L − target)`: what the platform says remains, minus the
//!   share we leave to others, and never more than our own target allows.
//! - **Penalty** (a 429): the named bucket (with the request's key if per-object), or every counter
//!   the request drew on if the platform named none, is blocked for both lanes until
//!   `now + Retry-After`, or without one until the counter's window ends. Penalties only extend.
//! - **Evict.** A per-object counter whose window is over and whose penalty has passed carries
//!   nothing a fresh counter would not, so it is dropped ([`RateBudget::evict_idle`], every
//!   [`BudgetGate::tick`], and whenever a bucket's key table is full). A bucket tracks at most
//!   [`BudgetConfig::max_keys_per_bucket`] keys; when all are live, a new key waits
//!   ([`Cause::KeyTableFull`]) rather than forget a live count.
//!
//! # Why fixed windows, and not GCRA or a sliding log?
//!
//! Because the platforms count in fixed windows and tell us about them in fixed-window terms.
//! Zendesk and Freshdesk count requests per minute and report `limit`/`remaining` (Zendesk adds the
//! seconds to the reset on list endpoints); Intercom spreads its per-minute limits over 10-second
//! windows and reports `X-RateLimit-Reset` as the absolute end of the current one; a 429 mostly
//! says when the window reopens. A counter aligned to the platform's window maps these readings onto
//! its state exactly: `L − R` is the platform's count in *this* window, `others` is that count less
//! ours, and `reset` is our `end`, so a refusal's [`NotUntil`] is the moment the platform's own
//! counter resets. GCRA (one "theoretical arrival time" per bucket) smooths the allowance evenly
//! over the window: it would refuse the burst the platform accepts at the start of a fresh window
//! (a sweep's pages, a batch of replies after a penalty), and "R remain until T" has no exact
//! translation into a single arrival time, so every correction would be an approximation. A sliding
//! log is exact for any window alignment, but costs a timestamp per unit (1,250 per Intercom app
//! window) and cannot use a reset the platform announces. Fixed windows are also the cheapest thing
//! to share: a few integers per counter, updated with one script call.
//!
//! Their known weakness is a window boundary that is not the platform's: two of our windows can
//! each spend the target inside one platform window. Readings close that gap where the platform
//! sends them: a reset anchors the phase, and `remaining` on every response (Zendesk, Freshdesk,
//! Intercom) folds the platform's count, ours included, into `others`. What is left is bounded by
//! the requests in flight when a reading was taken (the platform has not counted them yet), which
//! the `1 − target` headroom absorbs. Per-object buckets get no readings (Zendesk's per-ticket cap
//! sends no headers); their windows open on our first draw, as the platform's does if it counts
//! with a TTL. Should the platform count them on a sliding window instead, two of our windows could
//! put up to twice the target into one of its windows (44 updates of one ticket where 30 are
//! allowed, only when one ticket is updated that often); the 429 then blocks that one ticket.
//!
//! # 429s and retries
//!
//! - [`RateBudget::rate_limited`] turns a `rate-limited` failure into a penalty and returns until when.
//! - A write that met it goes to the connection's [`WriteRetryQueue`] (per-ticket FIFO, honouring
//!   `Retry-After`) and is re-acquired at [`Priority::WriteRetry`], ahead of new writes, so the queue
//!   is flushed first as soon as capacity clears. It is never a generic retry pool.
//! - A read that met a 429 or a 5xx waits [`Backoff::delay`] (exponential, full jitter, capped,
//!   seeded) and, after a 429, at least until the penalty ends, then queues again.
//!
//! # Layout
//!
//! As tower's `limit/rate`: a layer that holds the app-lifetime state and hands out the per-connection
//! thing, which wraps a pure core.
//!
//! - [`BudgetLayer`]: the app's budgets, one [`BudgetGate`] per connection, built from the adapter's
//!   descriptor and the connection's plan; snapshots for metrics.
//! - [`BudgetGate`] (`gate.rs`): one connection's queues (write-retry, write, read) and waiting,
//!   driven by the injected clock.
//! - [`RateBudget`] (`rate.rs`): the pure, synchronous decision core; `window.rs` its counter.
//! - [`WriteRetryQueue`] (`retry.rs`), [`Backoff`] (`backoff.rs`), [`BudgetConfig`]
//!   (`config.rs`), [`BudgetSnapshot`] (`snapshot.rs`).

mod backoff;
mod config;
mod gate;
mod hooks;
mod rate;
mod retry;
pub mod shared;
mod snapshot;
mod window;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Mutex;

pub use backoff::{Backoff, Jitter, SplitMix64};
pub use config::{BudgetConfig, Share};
pub use hooks::GateHooks;
pub use gate::{Acquire, AcquireError, BudgetGate, GateSnapshot, LaneCount, Priority, Sleeper, TokioSleeper, Waiting};
pub use rate::{Blocked, Cause, CounterSpec, Denied, Drawn, Never, NotUntil, Permit, RateBudget, SharedCounter};
pub use shared::{
    RedisBackend, SharedBackend, SharedBudgets, SharedDraw, SharedError, SharedSettings, SharedStatus, SharedVerdict,
};
pub use retry::{Retry, WriteRetryQueue};
pub use snapshot::{BucketSnapshot, BudgetSnapshot, LaneSnapshot};

use crate::bindings::{Connection, Descriptor, PlanLimits};
use crate::clock::SharedClock;

/// The connection names a plan the adapter does not declare.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the connection's plan {plan:?} is not one the {adapter} adapter declares ({known}); set the connection's plan to one of them")]
pub struct UnknownPlan {
    /// The plan asked for.
    pub plan: String,
    /// The adapter's id.
    pub adapter: String,
    /// The plans it declares, comma-separated.
    pub known: String,
}

/// The plan a connection is on: the one it names, or the descriptor's default.
///
/// # Errors
/// [`UnknownPlan`] when the named plan is not declared.
pub fn plan_for<'d>(descriptor: &'d Descriptor, connection: &Connection) -> Result<&'d PlanLimits, UnknownPlan> {
    let name = if connection.plan.is_empty() { &descriptor.default_plan } else { &connection.plan };
    descriptor.plans.iter().find(|p| p.plan == *name).ok_or_else(|| UnknownPlan {
        plan: name.clone(),
        adapter: descriptor.id.clone(),
        known: descriptor.plans.iter().map(|p| p.plan.as_str()).collect::<Vec<_>>().join(", "),
    })
}

/// The app's rate budgets: one [`BudgetGate`] per connection, sharing a clock and default
/// settings.
#[derive(Debug)]
pub struct BudgetLayer {
    clock: SharedClock,
    defaults: BudgetConfig,
    shared: Option<std::sync::Arc<SharedBudgets>>,
    gates: Mutex<HashMap<String, BudgetGate>>,
}

impl BudgetLayer {
    /// Budgets reading time from `clock`, with `defaults` for connections without settings of
    /// their own.
    pub fn new(clock: SharedClock, defaults: BudgetConfig) -> Self {
        Self { clock, defaults, shared: None, gates: Mutex::new(HashMap::new()) }
    }

    /// Share every connection's budget with the other replicas through `shared` (see
    /// [`shared`]): gates made from now on confirm their permits there.
    pub fn with_shared(mut self, shared: std::sync::Arc<SharedBudgets>) -> Self {
        self.shared = Some(shared);
        self
    }

    /// The shared budgets, if any.
    pub fn shared(&self) -> Option<&std::sync::Arc<SharedBudgets>> {
        self.shared.as_ref()
    }

    fn gates(&self) -> std::sync::MutexGuard<'_, HashMap<String, BudgetGate>> {
        self.gates.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The gate of `connection`, created from the adapter's descriptor on first use (with
    /// `config`, or the defaults). An existing gate is kept, switched to the connection's plan if
    /// it changed; `config` applies only to a new gate.
    ///
    /// # Errors
    /// [`UnknownPlan`] when the connection's plan is not declared.
    pub fn connect(
        &self,
        connection: &Connection,
        descriptor: &Descriptor,
        config: Option<BudgetConfig>,
    ) -> Result<BudgetGate, UnknownPlan> {
        let plan = plan_for(descriptor, connection)?;
        let mut gates = self.gates();
        if let Some(gate) = gates.get(&connection.id) {
            if gate.plan() != plan.plan {
                gate.set_plan(plan);
            }
            return Ok(gate.clone());
        }
        let budget = RateBudget::new(plan, config.unwrap_or_else(|| self.defaults.clone()));
        let gate = match &self.shared {
            Some(shared) => BudgetGate::shared(budget, self.clock.clone(), shared.clone(), &connection.id),
            None => BudgetGate::new(budget, self.clock.clone()),
        };
        gates.insert(connection.id.clone(), gate.clone());
        Ok(gate)
    }

    /// The gate of a connected connection.
    pub fn gate(&self, connection_id: &str) -> Option<BudgetGate> {
        self.gates().get(connection_id).cloned()
    }

    /// Forget a connection: its gate is closed and its waiters end with [`AcquireError::Closed`].
    pub fn disconnect(&self, connection_id: &str) -> bool {
        let gate = self.gates().remove(connection_id);
        gate.map(|g| g.close()).is_some()
    }

    /// Every connection's snapshot, by connection id.
    pub fn snapshots(&self) -> Vec<(String, GateSnapshot)> {
        let gates: Vec<(String, BudgetGate)> = self.gates().iter().map(|(k, g)| (k.clone(), g.clone())).collect();
        let mut out: Vec<_> = gates.into_iter().map(|(k, g)| (k, g.snapshot())).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}
