//! [`RateBudget`]: the pure, synchronous decision core for one connection.
//!
//! No clock, no IO, no waiting: every call takes `now`, and a refusal says until when
//! ([`NotUntil`]) or that waiting cannot help ([`Never`]). [`crate::budget::BudgetGate`] adds the
//! queues and the waiting.

use std::collections::HashMap;

use crate::bindings::{BucketDraw, BucketScope, Lane, PlanLimits, RateBucket, RateLimitedDetail, RateObservation};
use crate::clock::Millis;

use super::config::BudgetConfig;
use super::snapshot::{BucketSnapshot, BudgetSnapshot, LaneSnapshot};
use super::window::{NEVER, Window};

/// Proof that a request's draws were counted. Keep it to give the units back with
/// [`RateBudget::refund`] if the request is then not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permit {
    /// The lane the units were drawn for.
    pub lane: Lane,
    /// When the permit was granted.
    pub at: Millis,
    /// What was drawn, one entry per distinct bucket and key.
    pub drawn: Vec<Drawn>,
}

/// Units drawn on one counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drawn {
    /// The bucket.
    pub bucket: String,
    /// The key, for per-object buckets.
    pub key: Option<String>,
    /// Units drawn.
    pub cost: u64,
    /// Start of the window they were counted in.
    pub window_start: Millis,
    /// End of that window.
    pub window_end: Millis,
}

/// Why a permit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// Not now; waiting helps.
    #[error(transparent)]
    NotUntil(#[from] NotUntil),
    /// Never, under the current limits; waiting does not help.
    #[error(transparent)]
    Never(#[from] Never),
}

/// "Not now": the earliest time the draws could fit, and what blocks them.
///
/// Compare governor's `NotUntil::earliest_possible()`. The time is a lower bound: the counters
/// could be spent again by then, or an observation could lower the allowance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate budget: not before {at} ms (blocked on {})", display_blocked(.blocked))]
pub struct NotUntil {
    /// The earliest time worth trying again (the latest of the blocking counters' times).
    pub at: Millis,
    /// Every counter that refused, with its own time.
    pub blocked: Vec<Blocked>,
}

fn display_blocked(b: &[Blocked]) -> String {
    b.iter()
        .map(|b| match &b.key {
            Some(k) => format!("{}[{k}] {:?} until {}", b.bucket, b.cause, b.until),
            None => format!("{} {:?} until {}", b.bucket, b.cause, b.until),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One counter that refused a draw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// The bucket.
    pub bucket: String,
    /// The key for a per-object counter; `None` when the whole bucket refused (an account bucket,
    /// or a bucket-wide penalty).
    pub key: Option<String>,
    /// Why.
    pub cause: Cause,
    /// Until when.
    pub until: Millis,
}

/// Why a counter refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    /// The lane's share of this window is spent (by us and, as the platform reports, by others).
    Window,
    /// A 429 blocked the counter until then.
    Penalty,
    /// The per-object bucket tracks as many live keys as it may; a new key waits for one to idle.
    KeyTableFull,
}

/// "Never": waiting cannot make these draws fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Never {
    /// The request draws on a bucket the connection's plan does not declare (an adapter bug that
    /// conformance checks should have caught).
    #[error("rate budget: the request draws on bucket {0:?}, which the connection's plan does not declare")]
    UnknownBucket(String),
    /// The request costs more than the lane may ever spend in one window of the bucket.
    #[error("rate budget: the request costs {cost} on bucket {bucket:?}, more than the {capacity} the lane may spend per window")]
    ExceedsCapacity {
        /// The bucket.
        bucket: String,
        /// What the request costs on it.
        cost: u64,
        /// What the lane may spend per window.
        capacity: u64,
    },
}

/// One bucket of the plan and its counters.
#[derive(Debug, Clone)]
struct Bucket {
    spec: RateBucket,
    /// The limit in force: the declared one until the platform states another.
    limit: u32,
    /// Window length, at least 1 ms.
    len: Millis,
    /// Bucket-wide penalty (a 429 that named no key).
    penalty: Millis,
    /// The account-wide counter (for per-object buckets: draws that name no key).
    shared: Window,
    /// Per-object counters by key.
    keys: HashMap<String, Window>,
}

impl Bucket {
    fn new(spec: &RateBucket) -> Self {
        Self {
            limit: spec.limit,
            len: Millis::try_from(spec.window_ms).unwrap_or(Millis::MAX / 4).clamp(1, Millis::MAX / 4),
            spec: spec.clone(),
            penalty: NEVER,
            shared: Window::default(),
            keys: HashMap::new(),
        }
    }

    fn per_object(&self) -> bool {
        matches!(self.spec.scope, BucketScope::PerObject)
    }

    /// The key a draw or an observation counts under: none for account buckets.
    fn key_of<'a>(&self, key: Option<&'a str>) -> Option<&'a str> {
        if self.per_object() { key } else { None }
    }

    fn window(&self, key: Option<&str>) -> Option<&Window> {
        match key {
            None => Some(&self.shared),
            Some(k) => self.keys.get(k),
        }
    }

    /// The counter for `key`, created if absent and the table has room (after evicting idle keys).
    fn window_mut(&mut self, key: Option<&str>, now: Millis, max_keys: usize) -> Option<&mut Window> {
        let Some(k) = key else { return Some(&mut self.shared) };
        if !self.keys.contains_key(k) {
            if self.keys.len() >= max_keys {
                self.evict_idle(now);
            }
            if self.keys.len() >= max_keys {
                return None;
            }
            self.keys.insert(k.to_owned(), Window::default());
        }
        self.keys.get_mut(k)
    }

    /// When the first live key goes idle (for a full key table).
    fn first_idle_at(&self) -> Millis {
        self.keys.values().map(|w| w.end.max(w.penalty)).min().unwrap_or(NEVER)
    }

    fn evict_idle(&mut self, now: Millis) -> usize {
        let before = self.keys.len();
        self.keys.retain(|_, w| !w.idle(now));
        before - self.keys.len()
    }
}

/// What a bucket with `limit` allows per window.
///
/// `target = max(1, floor(limit * target‰ / 1000))` (0 when the limit is 0);
/// `reserve = floor(target * reserve‰ / 1000)`, kept for writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Capacity {
    pub(crate) target: u64,
    pub(crate) reserve: u64,
}

impl Capacity {
    pub(crate) fn of(config: &BudgetConfig, bucket: &str, limit: u32) -> Self {
        let target = if limit == 0 { 0 } else { config.target.of(u64::from(limit)).max(1) };
        Self { target, reserve: config.write_reserve_for(bucket).of(target) }
    }

    /// The most `lane` can spend in one window: the target for writes, the target less the
    /// reserve for reads.
    pub(crate) fn lane(self, lane: Lane) -> u64 {
        match lane {
            Lane::Write => self.target,
            Lane::Read => self.target - self.reserve,
        }
    }
}

/// The rate budget of one connection: every bucket of its plan, enforced at the target share,
/// corrected by the platform's readings, blocked by 429 penalties.
///
/// Pure and synchronous: the caller passes `now` (from the injected [`crate::clock::Clock`]).
///
/// ```
/// use deskgate::bindings::{BucketDraw, BucketScope, Lane, PlanLimits, RateBucket};
/// use deskgate::budget::{BudgetConfig, Denied, RateBudget};
/// let plan = PlanLimits {
///     plan: "team".into(),
///     buckets: vec![RateBucket {
///         name: "account".into(),
///         scope: BucketScope::Account,
///         limit: 4,
///         window_ms: 60_000,
///         description: String::new(),
///     }],
/// };
/// let mut budget = RateBudget::new(&plan, BudgetConfig::default());
/// let draw = [BucketDraw { bucket: "account".into(), key: None, cost: 1 }];
/// // 75% of 4 is 3 units per minute for writes.
/// for _ in 0..3 {
///     budget.try_acquire(Lane::Write, &draw, 0)?;
/// }
/// let Err(Denied::NotUntil(wait)) = budget.try_acquire(Lane::Write, &draw, 0) else { panic!() };
/// assert_eq!(wait.at, 60_000);
/// # Ok::<(), deskgate::budget::Denied>(())
/// ```
#[derive(Debug, Clone)]
pub struct RateBudget {
    config: BudgetConfig,
    plan: String,
    buckets: Vec<Bucket>,
    /// Replicas sharing the limit while the shared backend is unreachable: each window's target
    /// and reserve are divided by it (1 in normal operation). See [`crate::budget::shared`].
    divisor: u64,
}

/// What a shared backend needs to know about one counter to mirror [`RateBudget`]'s decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterSpec {
    /// The bucket.
    pub bucket: String,
    /// The key (per-object buckets only).
    pub key: Option<String>,
    /// Window length.
    pub len: Millis,
    /// The plan's declared limit (the backend may hold a limit the platform stated since).
    pub declared: u32,
    /// The write reserve for the bucket, in permille of the target.
    pub reserve_pm: u16,
}

/// A counter's state as the shared backend holds it; the local budget adopts it as a mirror.
/// Times the backend never set read as 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedCounter {
    /// Window start.
    pub start: Millis,
    /// Window end.
    pub end: Millis,
    /// Units the read lanes of all replicas spent in the window.
    pub read: u64,
    /// Units the write lanes of all replicas spent in the window.
    pub write: u64,
    /// Units the platform counted beyond all replicas' spend.
    pub others: u64,
    /// Whether the window's phase came from the platform.
    pub anchored: bool,
    /// Per-key (or per-counter) penalty.
    pub penalty: Millis,
    /// Bucket-wide penalty.
    pub bucket_penalty: Millis,
    /// The limit in force for the bucket (0: the declared one).
    pub limit: u32,
}

impl RateBudget {
    /// A budget for a connection on `plan`.
    pub fn new(plan: &PlanLimits, config: BudgetConfig) -> Self {
        Self { config, plan: plan.plan.clone(), buckets: plan.buckets.iter().map(Bucket::new).collect(), divisor: 1 }
    }

    /// Divide every window's target (and reserve) by `n` (at least 1): the conservative local
    /// share a replica keeps to while the shared budget is unreachable, so that `n` replicas
    /// together never spend more than the target. `1` restores the whole target.
    pub fn set_divisor(&mut self, n: u32) {
        self.divisor = u64::from(n.max(1));
    }

    /// The divisor in force (see [`RateBudget::set_divisor`]).
    pub fn divisor(&self) -> u32 {
        u32::try_from(self.divisor).unwrap_or(u32::MAX)
    }

    /// The capacity in force for a bucket: [`Capacity::of`] divided by the divisor.
    fn capacity_in_force(&self, b: &Bucket) -> Capacity {
        let cap = Capacity::of(&self.config, &b.spec.name, b.limit);
        if self.divisor <= 1 {
            return cap;
        }
        Capacity { target: cap.target / self.divisor, reserve: cap.reserve / self.divisor }
    }

    /// The names of the plan's buckets.
    pub fn bucket_names(&self) -> Vec<String> {
        self.buckets.iter().map(|b| b.spec.name.clone()).collect()
    }

    /// The shared-backend description of the counter `bucket`/`key` counts on (`None` for an
    /// undeclared bucket). The key is dropped for account buckets.
    pub fn counter_spec(&self, bucket: &str, key: Option<&str>) -> Option<CounterSpec> {
        let b = &self.buckets[self.find(bucket)?];
        Some(CounterSpec {
            bucket: bucket.to_owned(),
            key: b.key_of(key).map(str::to_owned),
            len: b.len,
            declared: b.spec.limit,
            reserve_pm: self.config.write_reserve_for(bucket).as_permille(),
        })
    }

    /// Replace the local counter `bucket`/`key` with the shared backend's state (the local budget
    /// is then a mirror of the shared one). Penalties only extend.
    pub fn adopt(&mut self, bucket: &str, key: Option<&str>, shared: &SharedCounter) {
        let Some(idx) = self.find(bucket) else { return };
        let b = &mut self.buckets[idx];
        if shared.limit > 0 {
            b.limit = shared.limit;
        }
        b.penalty = b.penalty.max(shared.bucket_penalty);
        let key = b.key_of(key);
        let Some(w) = b.window_mut(key, shared.start, usize::MAX) else { return };
        let penalty = w.penalty.max(shared.penalty);
        *w = Window {
            start: shared.start,
            end: shared.end,
            read: shared.read,
            write: shared.write,
            others: shared.others,
            anchored: shared.anchored,
            penalty,
        };
    }

    /// The settings in force.
    pub fn config(&self) -> &BudgetConfig {
        &self.config
    }

    /// The plan the buckets came from.
    pub fn plan(&self) -> &str {
        &self.plan
    }

    /// Switch to another plan (the connection's plan changed). Counters and penalties of buckets
    /// that keep their name carry over; the declared limits are the new plan's.
    pub fn set_plan(&mut self, plan: &PlanLimits) {
        let mut old: HashMap<String, Bucket> = self.buckets.drain(..).map(|b| (b.spec.name.clone(), b)).collect();
        self.buckets = plan
            .buckets
            .iter()
            .map(|spec| {
                let mut b = Bucket::new(spec);
                if let Some(prev) = old.remove(&spec.name) {
                    b.penalty = prev.penalty;
                    b.shared = prev.shared;
                    b.keys = prev.keys;
                }
                b
            })
            .collect();
        self.plan = plan.plan.clone();
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.buckets.iter().position(|b| b.spec.name == name)
    }

    /// Draw `draws` for `lane` at `now`: all of them or none.
    ///
    /// Draws on the same bucket and key are added up. A draw's key is used only on per-object
    /// buckets; on a per-object bucket a draw without a key counts on one shared counter.
    ///
    /// # Errors
    /// [`Denied::Never`] when a draw names an undeclared bucket or costs more than the lane's
    /// capacity; [`Denied::NotUntil`] when some counter is spent or penalized (nothing is drawn).
    pub fn try_acquire(&mut self, lane: Lane, draws: &[BucketDraw], now: Millis) -> Result<Permit, Denied> {
        // Resolve and merge: (bucket index, key, cost). Requests draw on one to four buckets.
        let mut merged: Vec<(usize, Option<&str>, u64)> = Vec::with_capacity(draws.len());
        for d in draws {
            let idx = self.find(&d.bucket).ok_or_else(|| Never::UnknownBucket(d.bucket.clone()))?;
            let key = self.buckets[idx].key_of(d.key.as_deref());
            match merged.iter_mut().find(|(i, k, _)| *i == idx && *k == key) {
                Some(m) => m.2 += u64::from(d.cost),
                None => merged.push((idx, key, u64::from(d.cost))),
            }
        }
        for &(idx, _, cost) in &merged {
            let b = &self.buckets[idx];
            let cap = Capacity::of(&self.config, &b.spec.name, b.limit).lane(lane);
            if cost > cap {
                return Err(Never::ExceedsCapacity { bucket: b.spec.name.clone(), cost, capacity: cap }.into());
            }
        }

        let max_keys = self.config.max_keys_per_bucket;
        let mut blocked = Vec::new();
        for &(idx, key, cost) in &merged {
            let cap = self.capacity_in_force(&self.buckets[idx]);
            let b = &mut self.buckets[idx];
            let refusal = if b.penalty > now {
                Some((Cause::Penalty, None, b.penalty))
            } else {
                match key {
                    // A key not tracked yet is a fresh counter, where any draw within the lane's
                    // capacity fits (checked above). It is inserted only when drawn, so refused
                    // requests never fill the table.
                    Some(k) if !b.keys.contains_key(k) => {
                        if b.keys.len() >= max_keys && b.evict_idle(now) == 0 {
                            Some((Cause::KeyTableFull, None, b.first_idle_at()))
                        } else if cost > cap.lane(lane) {
                            // Only under a divided (fallback) capacity: a fresh window of the
                            // reduced share cannot hold it either; try again a window later.
                            Some((Cause::Window, Some(k), now.saturating_add(b.len)))
                        } else {
                            None
                        }
                    }
                    _ => {
                        let len = b.len;
                        let w = b.window_mut(key, now, max_keys).expect("tracked or shared");
                        w.roll(now, len);
                        if w.penalty > now {
                            Some((Cause::Penalty, key, w.penalty))
                        } else if !w.fits(lane, cost, cap.target, cap.reserve, now, len) {
                            Some((Cause::Window, key, w.fits_at(lane, cost, cap.target, cap.reserve, now, len)))
                        } else {
                            None
                        }
                    }
                }
            };
            if let Some((cause, key, until)) = refusal {
                blocked.push(Blocked { bucket: b.spec.name.clone(), key: key.map(str::to_owned), cause, until });
            }
        }
        if !blocked.is_empty() {
            let at = blocked.iter().map(|b| b.until).max().unwrap_or(now);
            return Err(NotUntil { at, blocked }.into());
        }

        let mut drawn = Vec::with_capacity(merged.len());
        for &(idx, key, cost) in &merged {
            let b = &mut self.buckets[idx];
            let len = b.len;
            let w = b.window_mut(key, now, usize::MAX).expect("room checked above");
            w.roll(now, len);
            w.take(lane, cost);
            let (window_start, window_end) = (w.start, w.end);
            drawn.push(Drawn {
                bucket: b.spec.name.clone(),
                key: key.map(str::to_owned),
                cost,
                window_start,
                window_end,
            });
        }
        Ok(Permit { lane, at: now, drawn })
    }

    /// Give back the units of a permit whose request was never sent. Units drawn in a window that
    /// has since closed are not given back (they no longer count).
    pub fn refund(&mut self, permit: &Permit, now: Millis) {
        for d in &permit.drawn {
            let Some(idx) = self.find(&d.bucket) else { continue };
            let b = &mut self.buckets[idx];
            let w = match d.key.as_deref() {
                None => Some(&mut b.shared),
                Some(k) => b.keys.get_mut(k),
            };
            if let Some(w) = w {
                w.give_back(permit.lane, d.cost, d.window_start, now);
            }
        }
    }

    /// Apply one of the platform's rate readings (from the adapter's `observe`).
    ///
    /// A stated limit replaces the one in force for the whole bucket (a plan upgrade or
    /// downgrade shows up here first); a limit of 0 is ignored as garbage. `reset-ms` (relative,
    /// immune to clock skew) is preferred over `reset-at`. The window then follows the reading as
    /// the module doc says. Prefer [`RateBudget::observe_after`] when the permit of the request
    /// is at hand. Returns whether the bucket is one of the plan's.
    pub fn observe(&mut self, obs: &RateObservation, now: Millis) -> bool {
        self.observe_inner(obs, None, now)
    }

    /// [`RateBudget::observe`] for a reading from the response to the request `permit` was
    /// granted for. A reading without a reset from a request counted in an earlier window than
    /// the current one (its response crossed the boundary) may describe the closed window, so
    /// its `remaining` is not applied: applied, it would charge the closed window's spend to the
    /// new one and stall it.
    pub fn observe_after(&mut self, permit: &Permit, obs: &RateObservation, now: Millis) -> bool {
        self.observe_inner(obs, Some(permit), now)
    }

    fn observe_inner(&mut self, obs: &RateObservation, permit: Option<&Permit>, now: Millis) -> bool {
        let Some(idx) = self.find(&obs.bucket) else { return false };
        let max_keys = self.config.max_keys_per_bucket;
        let b = &mut self.buckets[idx];
        if let Some(limit) = obs.limit.filter(|&l| l > 0) {
            b.limit = limit;
        }
        let reset = match (obs.reset_ms, obs.reset_at) {
            (Some(ms), _) => Some(now.saturating_add(Millis::try_from(ms).unwrap_or(Millis::MAX))),
            (None, at) => at,
        };
        let (len, limit) = (b.len, u64::from(b.limit));
        let key = b.key_of(obs.key.as_deref());
        let sent_in = permit.and_then(|p| {
            p.drawn.iter().find(|d| d.bucket == obs.bucket && d.key.as_deref() == key).map(|d| d.window_start)
        });
        // A reading for a key the table has no room for is dropped: it could only lower an
        // allowance the key does not have yet.
        if let Some(w) = b.window_mut(key, now, max_keys) {
            w.observe(now, len, limit, obs.remaining.map(u64::from), reset, sent_in);
        }
        true
    }

    /// Block `bucket` (every bucket when `None`; one key of a per-object bucket when `key` is
    /// given) for both lanes until `until`. Penalties only ever extend.
    pub fn penalize(&mut self, bucket: Option<&str>, key: Option<&str>, until: Millis) {
        let max_keys = self.config.max_keys_per_bucket;
        for b in &mut self.buckets {
            if bucket.is_some_and(|name| name != b.spec.name) {
                continue;
            }
            if let Some(k) = b.key_of(key)
                && let Some(w) = b.window_mut(Some(k), NEVER, max_keys)
            {
                w.penalty = w.penalty.max(until);
                continue;
            }
            // No key, or (transiently) no room for one: block the whole bucket rather than lose
            // the penalty.
            b.penalty = b.penalty.max(until);
        }
    }

    /// Apply a `rate-limited` failure met by a request that drew `draws`, and return until when
    /// the affected counters are blocked.
    ///
    /// The counters are the named bucket's (with the request's key for it, if per-object), or
    /// every counter the request drew on when the platform named none. They are blocked until
    /// `now + retry-after`, or, without one, until the counter's window resets.
    pub fn rate_limited(&mut self, draws: &[BucketDraw], detail: &RateLimitedDetail, now: Millis) -> Millis {
        let named = detail.bucket.as_deref().filter(|n| self.find(n).is_some());
        let mut targets: Vec<(String, Option<String>)> = draws
            .iter()
            .filter(|d| named.is_none_or(|n| n == d.bucket))
            .filter(|d| self.find(&d.bucket).is_some())
            .map(|d| (d.bucket.clone(), d.key.clone()))
            .collect();
        if let (Some(n), true) = (named, targets.is_empty()) {
            targets.push((n.to_owned(), None));
        }
        let retry = detail.retry_after_ms.map(|ms| now.saturating_add(Millis::try_from(ms).unwrap_or(Millis::MAX)));
        let mut latest = now;
        for (bucket, key) in targets {
            let until = retry.unwrap_or_else(|| self.reset_of(&bucket, key.as_deref(), now));
            self.penalize(Some(&bucket), key.as_deref(), until);
            latest = latest.max(until);
        }
        latest
    }

    /// When the counter's current window ends (one window from now if none is open).
    fn reset_of(&self, bucket: &str, key: Option<&str>, now: Millis) -> Millis {
        let Some(b) = self.find(bucket).map(|i| &self.buckets[i]) else { return now };
        match b.window(b.key_of(key)) {
            Some(w) if w.is_open(now) => w.end,
            _ => now.saturating_add(b.len),
        }
    }

    /// Drop per-object counters that carry no information any more (window over, no penalty);
    /// returns how many. A dropped key behaves exactly as one never seen.
    pub fn evict_idle(&mut self, now: Millis) -> usize {
        self.buckets.iter_mut().map(|b| b.evict_idle(now)).sum()
    }

    /// Per-object keys tracked, over all buckets.
    pub fn tracked_keys(&self) -> usize {
        self.buckets.iter().map(|b| b.keys.len()).sum()
    }

    /// What the budget looks like at `now`, for metrics and the dashboard.
    pub fn snapshot(&self, now: Millis) -> BudgetSnapshot {
        let buckets = self
            .buckets
            .iter()
            .map(|b| {
                // Per-object buckets show their busiest key.
                let live = |w: &Window| if w.is_open(now) { w.spent() } else { 0 };
                let (busiest_key, w) = if b.per_object() {
                    b.keys
                        .iter()
                        .filter(|(_, w)| w.is_open(now) || w.penalty > now)
                        .max_by_key(|(k, w)| (live(w), std::cmp::Reverse(*k)))
                        .map(|(k, w)| (Some(k.clone()), *w))
                        .unwrap_or((None, b.shared))
                } else {
                    (None, b.shared)
                };
                let open = w.is_open(now);
                let (read, write, others) = if open { (w.read, w.write, w.others) } else { (0, 0, 0) };
                let spent = read + write + others;
                let penalty = b.penalty.max(w.penalty);
                let blocked = (penalty > now).then_some(penalty);
                let cap = self.capacity_in_force(b);
                let lane = |lane: Lane, used: u64| {
                    let available = if open { w.room(lane, cap.target, cap.reserve, now, b.len) } else { cap.lane(lane) };
                    LaneSnapshot {
                        lane,
                        capacity: cap.lane(lane),
                        used,
                        available,
                        blocked_until: blocked
                            .or((available == 0 && open).then(|| w.fits_at(lane, 1, cap.target, cap.reserve, now, b.len))),
                    }
                };
                BucketSnapshot {
                    bucket: b.spec.name.clone(),
                    scope: b.spec.scope,
                    declared_limit: b.spec.limit,
                    limit: b.limit,
                    window_ms: b.spec.window_ms,
                    target: cap.target,
                    window: open.then_some((w.start, w.end)),
                    aligned: open && w.anchored,
                    others,
                    spent,
                    utilization: if b.limit == 0 { 0.0 } else { spent as f64 / f64::from(b.limit) },
                    blocked_until: blocked,
                    lanes: [lane(Lane::Write, write), lane(Lane::Read, read)],
                    keys: b.keys.len(),
                    busiest_key,
                }
            })
            .collect();
        BudgetSnapshot { at: now, plan: self.plan.clone(), buckets }
    }
}
