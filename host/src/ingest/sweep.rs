//! Reconciliation sweeps: list what changed, store what the webhooks missed, say how much.
//!
//! One [`Reconciler::sweep`] of one connection pages through `list-changed` since the previous
//! sweep's start minus an overlap (platforms leave the last minute or so out of their change
//! feeds, and search indexes lag), plus `list-open` on a connection's first sweep, and offers every
//! listed ticket to the [`Inbox`] keyed by its version. A version the webhooks already delivered is
//! a duplicate; a new one was *missed* by the webhooks and is *caught* now. Every request goes
//! through the connection's [`BudgetGate`] in the read lane, so a sweep never takes capacity the
//! app's writes need; the gate must be driven ([`BudgetGate::drive`]) for waits to end.
//!
//! # Why the high-water mark is the sweep's start, minus an overlap
//!
//! A ticket updated while a sweep pages may or may not be on the pages. Starting the next sweep
//! at this one's start (not at the newest `updated_at` it saw) cannot skip it; the overlap then
//! covers the platform's own lag (Zendesk's export leaves out the last minute). Listing a change
//! twice costs a duplicate insert, never a second delivery. The mark moves only after a sweep
//! finished, so a failed sweep is simply redone from the old mark.
//!
//! The mark is kept through [`SweepMarks`]. The store has no place for it yet, so the only
//! implementation is [`MemoryMarks`]; after a restart the first sweep falls back to
//! [`SweepConfig::initial_lookback`] plus `list-open`, which re-lists more than needed but misses
//! nothing (what is already stored is a duplicate, and misses are still counted right because
//! deduplication is the store's).
//!
//! # Schedule
//!
//! [`SweepSchedule`] spreads sweeps over `[min, max]` (5-10 minutes by default) with a seeded
//! generator, and places each connection's first sweep anywhere in `[0, max]`, so a gateway that
//! starts with many connections does not sweep them all at once. [`SweepTimer`] adds the
//! cluster: when a replica's timer comes due it takes the connection's `reconcile` timer lease for
//! the minimum interval, so with several replicas a connection is still swept once per interval.
//! The gateway runs a connection's sweep timer only on the replica holding the connection's timer
//! lease ([`crate::gateway::CONNECTION_LEASE`]); the `reconcile` lease then keeps a replica that
//! takes the connection over from sweeping again within the minimum interval.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Serialize;
use serde_json::json;

use super::{Candidate, IngestMetrics, IngestReport, Inbox, bump};
use crate::bindings::{Failure, ListChanged, Operation, Outcome};
use crate::budget::{BudgetGate, GateHooks, Jitter, SplitMix64};
use crate::clock::{Millis, SharedClock};
use crate::driver::{DriveError, Driver, Target};
use crate::runtime::Adapter;
use crate::alerts;
use crate::store::StoreError;

/// How sweeps run.
#[derive(Debug, Clone)]
pub struct SweepConfig {
    /// How far before the previous sweep's start the next one lists changes (platform lag).
    pub overlap: Duration,
    /// Without a mark (first sweep, or after a restart): list changes this far back.
    pub initial_lookback: Duration,
    /// On a first sweep, also list open tickets (they may predate the lookback).
    pub list_open_first: bool,
    /// The most pages one listing may take; past it the sweep fails (a cursor that loops).
    pub max_pages: u32,
    /// Raise a `webhooks-missed` alert (unless one is open, not yet acknowledged, for the
    /// connection) when one sweep catches at least this many changes
    /// (0: never). A first sweep (no mark) never alerts: it has nothing to compare with.
    pub miss_alert_threshold: u64,
    /// How often one page is retried after a `rate-limited` answer (the gate is penalized and
    /// the retry waits in the read lane until the platform's window reopens).
    pub rate_limit_retries: u32,
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self {
            overlap: Duration::from_secs(10 * 60),
            initial_lookback: Duration::from_secs(24 * 3600),
            list_open_first: true,
            max_pages: 1_000,
            miss_alert_threshold: 25,
            rate_limit_retries: 5,
        }
    }
}

/// What one sweep did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepReport {
    /// The connection.
    pub connection_id: String,
    /// Whether this was a first sweep (no mark): `list-open` ran and no alert is raised.
    pub first: bool,
    /// `list-changed` started here (ms).
    pub since: Millis,
    /// The new mark: this sweep's start.
    pub mark: Millis,
    /// Pages listed (both listings).
    pub pages: u32,
    /// Tickets listed.
    pub seen: u64,
    /// Changes the webhooks had missed, now stored for the app.
    pub caught: u64,
    /// Listed versions already stored.
    pub duplicates: u64,
    /// Listed versions older than one already stored (a webhook overtook the listing).
    pub stale: u64,
    /// Wall time the sweep took.
    pub duration: Duration,
    /// Whether a `webhooks-missed` alert was raised (not when one was open already).
    pub alerted: bool,
}

/// Why a sweep did not finish. The mark did not move: the next sweep covers the same ground.
#[derive(Debug)]
pub enum SweepError {
    /// The request could not be made or the adapter misbehaved.
    Drive(DriveError),
    /// The platform refused (after any rate-limit retries).
    Platform(Failure),
    /// The adapter answered something other than a page.
    UnexpectedOutcome(&'static str),
    /// A listing went on past [`SweepConfig::max_pages`].
    TooManyPages(u32),
    /// The store failed.
    Store(StoreError),
    /// The mark could not be read or written.
    Marks(String),
}

impl std::fmt::Display for SweepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SweepError::Drive(e) => write!(f, "sweep request failed: {e}"),
            SweepError::Platform(failure) => write!(f, "sweep refused by the platform: {}", failure.explain()),
            SweepError::UnexpectedOutcome(op) => write!(f, "the adapter answered {op} with something other than a page"),
            SweepError::TooManyPages(n) => write!(f, "a listing went on past {n} pages; the adapter's cursor may loop"),
            SweepError::Store(e) => write!(f, "sweep could not store events: {e}"),
            SweepError::Marks(e) => write!(f, "sweep mark: {e}"),
        }
    }
}

impl std::error::Error for SweepError {}

/// Where sweeps keep each connection's high-water mark.
#[async_trait]
pub trait SweepMarks: Send + Sync {
    /// The mark of `connection_id`, if a sweep finished since it was last forgotten.
    async fn get(&self, connection_id: &str) -> Result<Option<Millis>, String>;
    /// Record a finished sweep's mark.
    async fn put(&self, connection_id: &str, mark: Millis) -> Result<(), String>;
}

/// Marks in memory (lost on restart; see the module docs).
#[derive(Debug, Default)]
pub struct MemoryMarks {
    marks: Mutex<HashMap<String, Millis>>,
}

#[async_trait]
impl SweepMarks for MemoryMarks {
    async fn get(&self, connection_id: &str) -> Result<Option<Millis>, String> {
        Ok(self.marks.lock().unwrap_or_else(|e| e.into_inner()).get(connection_id).copied())
    }
    async fn put(&self, connection_id: &str, mark: Millis) -> Result<(), String> {
        self.marks.lock().unwrap_or_else(|e| e.into_inner()).insert(connection_id.to_owned(), mark);
        Ok(())
    }
}

/// The connection a sweep lists: its adapter, where and as whom, and its rate budget. Its `Debug`
/// goes through [`Target`]'s, which never shows the credential.
#[derive(Clone, Copy)]
pub struct SweepSource<'a> {
    /// The adapter.
    pub adapter: &'a Adapter,
    /// Base URL, authorization, connection.
    pub target: &'a Target,
    /// The connection's budget gate (requests wait in its read lane).
    pub gate: &'a BudgetGate,
    /// The platform id stored with each event.
    pub platform: &'a str,
}

impl std::fmt::Debug for SweepSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SweepSource")
            .field("adapter", &self.adapter.id())
            .field("target", self.target)
            .field("platform", &self.platform)
            .finish_non_exhaustive()
    }
}

/// Runs sweeps: see the module docs.
pub struct Reconciler {
    inbox: Arc<Inbox>,
    driver: Driver,
    clock: SharedClock,
    config: SweepConfig,
    marks: Arc<dyn SweepMarks>,
    metrics: Arc<IngestMetrics>,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Reconciler {
    /// A reconciler writing through `inbox`, listing with `driver`, reading time from `clock`.
    pub fn new(inbox: Arc<Inbox>, driver: Driver, clock: SharedClock, config: SweepConfig) -> Self {
        Self { inbox, driver, clock, config, marks: Arc::new(MemoryMarks::default()), metrics: Arc::default() }
    }

    /// Keep marks in `marks` instead of memory.
    pub fn with_marks(mut self, marks: Arc<dyn SweepMarks>) -> Self {
        self.marks = marks;
        self
    }

    /// Count into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<IngestMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<IngestMetrics> {
        &self.metrics
    }

    /// Sweep one connection once.
    ///
    /// # Errors
    /// [`SweepError`]; the mark is left where it was, and what was stored stays stored.
    pub async fn sweep(&self, source: SweepSource<'_>) -> Result<SweepReport, SweepError> {
        let result = self.sweep_inner(source).await;
        match &result {
            Ok(r) => {
                bump(&self.metrics.sweeps, 1);
                bump(&self.metrics.sweep_pages, u64::from(r.pages));
                bump(&self.metrics.sweep_seen, r.seen);
                bump(&self.metrics.sweep_caught, r.caught);
                tracing::info!(connection = %r.connection_id, pages = r.pages, seen = r.seen, caught = r.caught,
                    duplicates = r.duplicates, stale = r.stale, first = r.first, "sweep finished");
            }
            Err(e) => {
                bump(&self.metrics.sweeps_failed, 1);
                tracing::warn!(connection = %source.target.connection.id, "sweep failed: {e}");
            }
        }
        result
    }

    async fn sweep_inner(&self, source: SweepSource<'_>) -> Result<SweepReport, SweepError> {
        let started = Instant::now();
        let connection_id = source.target.connection.id.clone();
        let mark = self.clock.now_ms();
        let previous = self.marks.get(&connection_id).await.map_err(SweepError::Marks)?;
        let since = match previous {
            Some(m) => m - ms(self.config.overlap),
            None => mark - ms(self.config.initial_lookback),
        }
        .max(0);
        let mut report = SweepReport {
            connection_id: connection_id.clone(),
            first: previous.is_none(),
            since,
            mark,
            pages: 0,
            seen: 0,
            caught: 0,
            duplicates: 0,
            stale: 0,
            duration: Duration::ZERO,
            alerted: false,
        };
        let mut totals = IngestReport::default();
        if report.first && self.config.list_open_first {
            self.list(source, &mut report, &mut totals, Operation::ListOpen).await?;
        }
        self.list(source, &mut report, &mut totals, |cursor| Operation::ListChanged(ListChanged { since, cursor }))
            .await?;
        report.caught = totals.new;
        report.duplicates = totals.duplicates;
        report.stale = totals.stale;
        self.marks.put(&connection_id, mark).await.map_err(SweepError::Marks)?;
        let threshold = self.config.miss_alert_threshold;
        // One open alert per connection: while the operator has not acknowledged the last one,
        // later sweeps that cross the threshold are the same broken webhook (the metrics keep
        // counting every catch), not news worth another page at 2 am.
        let crossed = !report.first && threshold > 0 && report.caught >= threshold;
        let already_open = crossed
            && self
                .inbox
                .store()
                .list_alerts(Some(&connection_id), false, 1000)
                .await
                .map_err(SweepError::Store)?
                .iter()
                .any(|a| a.kind == alerts::WEBHOOKS_MISSED);
        if crossed && !already_open {
            let text = format!(
                "The reconciliation sweep of {connection_id} caught {} ticket changes its webhooks \
                 had missed (threshold {threshold}). Check the webhook on the platform: is it \
                 active, pointed at /webhooks/{connection_id}, with the right secret? Rejected \
                 deliveries are counted by reason in the gateway's metrics.",
                report.caught
            );
            let detail = json!({ "caught": report.caught, "seen": report.seen, "since": since, "threshold": threshold });
            // Through `alerts::raise`, like every alert: stored, logged at error level, counted.
            alerts::raise(self.inbox.store(), self.clock.now_ms(), Some(&connection_id), alerts::WEBHOOKS_MISSED, text, detail)
                .await
                .map_err(SweepError::Store)?;
            report.alerted = true;
        }
        report.duration = started.elapsed();
        Ok(report)
    }

    /// Page through one listing, storing every page as it comes.
    async fn list(
        &self,
        source: SweepSource<'_>,
        report: &mut SweepReport,
        totals: &mut IngestReport,
        op: impl Fn(Option<String>) -> Operation,
    ) -> Result<(), SweepError> {
        let conn = &source.target.connection;
        let mut cursor: Option<String> = None;
        for _ in 0..self.config.max_pages {
            let operation = op(cursor.clone());
            let page = self.page(source, &operation).await?;
            report.pages += 1;
            report.seen += page.tickets.len() as u64;
            let candidates: Vec<Candidate> =
                page.tickets.iter().map(|t| Candidate::from_sweep(&conn.id, source.platform, t)).collect();
            let stored = self
                .inbox
                .insert(&conn.id, &candidates, self.clock.now_ms())
                .await
                .map_err(SweepError::Store)?;
            totals.add(stored);
            match page.next_cursor {
                Some(next) if Some(&next) != cursor.as_ref() => cursor = Some(next),
                Some(_) => return Err(SweepError::TooManyPages(report.pages)),
                None => return Ok(()),
            }
        }
        Err(SweepError::TooManyPages(self.config.max_pages))
    }

    /// One page, retried after rate limiting.
    async fn page(&self, source: SweepSource<'_>, operation: &Operation) -> Result<crate::bindings::TicketPage, SweepError> {
        let mut attempt = 0;
        loop {
            let mut hooks = GateHooks::new(source.gate, source.adapter, source.target);
            let outcome = self
                .driver
                .execute(source.adapter, source.target, operation, None, &mut hooks)
                .await
                .map_err(SweepError::Drive)?;
            match outcome {
                Ok(Outcome::Page(page)) => return Ok(page),
                Ok(_) => return Err(SweepError::UnexpectedOutcome(op_name(operation))),
                Err(Failure::RateLimited(detail)) if attempt < self.config.rate_limit_retries => {
                    attempt += 1;
                    // Block the bucket until the platform's window reopens; the retry waits for it
                    // in the read lane.
                    source.gate.rate_limited(hooks.last_draws(), &detail);
                }
                Err(failure) => return Err(SweepError::Platform(failure)),
            }
        }
    }
}

fn op_name(op: &Operation) -> &'static str {
    match op {
        Operation::ListOpen(_) => "list-open",
        Operation::ListChanged(_) => "list-changed",
        _ => "an operation",
    }
}

fn ms(d: Duration) -> Millis {
    Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
}

/// When to sweep next: jittered in `[min, max]` from a seeded generator.
///
/// ```
/// use deskgate::ingest::sweep::SweepSchedule;
/// use std::time::Duration;
/// let mut s = SweepSchedule::new(Duration::from_secs(300), Duration::from_secs(600), 7);
/// let next = s.next_after(1_000_000);
/// assert!((1_300_000..=1_600_000).contains(&next));
/// ```
#[derive(Debug, Clone)]
pub struct SweepSchedule {
    min: Millis,
    max: Millis,
    rng: SplitMix64,
}

impl SweepSchedule {
    /// Sweeps every `min` to `max` (swapped if given the wrong way round), jitter from `seed`.
    /// Seed each connection differently (for example from a hash of its id) so their schedules
    /// drift apart.
    pub fn new(min: Duration, max: Duration, seed: u64) -> Self {
        let (a, b) = (ms(min), ms(max));
        Self { min: a.min(b), max: a.max(b), rng: SplitMix64::seeded(seed) }
    }

    /// The default 5-10 minutes.
    pub fn default_interval(seed: u64) -> Self {
        Self::new(Duration::from_secs(300), Duration::from_secs(600), seed)
    }

    fn uniform(&mut self, lo: Millis, hi: Millis) -> Millis {
        let span = (hi - lo).max(0) as u64 + 1;
        lo + (self.rng.next_u64() % span) as Millis
    }

    /// A connection's first sweep: anywhere in `[now, now + max]`, so connections that start
    /// together spread out.
    pub fn first_after(&mut self, now: Millis) -> Millis {
        now + self.uniform(0, self.max)
    }

    /// The sweep after one that ran at `now`: in `[now + min, now + max]`.
    pub fn next_after(&mut self, now: Millis) -> Millis {
        now + self.uniform(self.min, self.max)
    }
}

/// The timer lease a sweep holds (see [`SweepTimer`]).
pub const SWEEP_LEASE: &str = "reconcile";

/// One connection's sweep timer on one replica: when the next sweep is due, and whether this
/// replica is the one to run it.
///
/// Each replica keeps its own jittered [`SweepSchedule`]; when one is due it takes the
/// connection's [`SWEEP_LEASE`] timer lease in the store for the schedule's minimum interval. Only
/// one replica gets it, so a connection is swept once per interval across the cluster, by
/// whichever replica came due first; the others find the lease held and move their own timer on.
#[derive(Debug, Clone)]
pub struct SweepTimer {
    connection_id: String,
    owner: String,
    schedule: SweepSchedule,
    next_at: Millis,
}

impl SweepTimer {
    /// A timer for `connection_id` on replica `owner`, first due somewhere in `[now, now + max]`.
    pub fn new(connection_id: impl Into<String>, owner: impl Into<String>, mut schedule: SweepSchedule, now: Millis) -> Self {
        let next_at = schedule.first_after(now);
        Self { connection_id: connection_id.into(), owner: owner.into(), schedule, next_at }
    }

    /// When the next sweep is due.
    pub fn next_at(&self) -> Millis {
        self.next_at
    }

    /// How long a claimed [`SWEEP_LEASE`] is held: the schedule's minimum interval (ms).
    pub fn lease_hold_ms(&self) -> Millis {
        self.schedule.min
    }

    /// At `now`: whether this replica should sweep now. Not yet due: `false`. Due: take the
    /// lease and move on to the next jittered time; if another replica holds the lease (it swept
    /// less than the minimum interval ago), the timer is next due when that lease ends.
    ///
    /// # Errors
    /// The store's error; the timer is left as it was (try again).
    pub async fn claim(&mut self, store: &crate::store::SharedStore, now: Millis) -> Result<bool, StoreError> {
        if now < self.next_at {
            return Ok(false);
        }
        let hold = Duration::from_millis(u64::try_from(self.schedule.min).unwrap_or(0));
        let lease = store.acquire_lease(&self.connection_id, SWEEP_LEASE, &self.owner, now, hold).await?;
        self.next_at = match &lease {
            Some(_) => self.schedule.next_after(now),
            // Another replica swept less than the minimum interval ago (it held the connection
            // before this one): the next sweep is due when its lease ends, not an interval later.
            None => match store.get_lease(&self.connection_id, SWEEP_LEASE).await? {
                Some(other) if other.until > now => other.until,
                _ => self.schedule.next_after(now),
            },
        };
        Ok(lease.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    #[test]
    fn a_sweep_source_never_prints_its_credential() {
        use crate::bindings::{BucketScope, Connection, PlanLimits, RateBucket};
        use crate::budget::{BudgetConfig, RateBudget};
        let mut rt = crate::runtime::AdapterRuntime::new(crate::runtime::RuntimeConfig {
            cache_dir: Some(std::env::temp_dir().join("deskgate-unit-compile-cache")),
            ..Default::default()
        })
        .unwrap();
        rt.load_builtin().unwrap();
        let adapter = rt.get("zendesk").unwrap();
        let plan = PlanLimits {
            plan: "team".into(),
            buckets: vec![RateBucket { name: "account".into(), scope: BucketScope::Account, limit: 100, window_ms: 60_000, description: String::new() }],
        };
        let gate = BudgetGate::new(RateBudget::new(&plan, BudgetConfig::default()), Arc::new(ManualClock::new(0)));
        let target = Target {
            base_url: "https://acme.zendesk.com".into(),
            authorization: "Bearer sweep-secret-token".into(),
            connection: Connection { id: "acme".into(), plan: "team".into(), agent_id: None, settings: vec![] },
        };
        let source = SweepSource { adapter: &adapter, target: &target, gate: &gate, platform: "zendesk" };
        let shown = format!("{source:?}");
        assert!(!shown.contains("sweep-secret-token"), "{shown}");
        assert!(shown.contains("Bearer ***") && shown.contains("zendesk"), "{shown}");
    }

    #[test]
    fn schedule_stays_in_bounds_and_spreads() {
        let clock = ManualClock::new(1_000_000);
        let mut s = SweepSchedule::default_interval(42);
        let mut gaps = Vec::new();
        let mut at = s.first_after(clock.now_ms());
        assert!((1_000_000..=1_600_000).contains(&at));
        for _ in 0..1_000 {
            clock.set(at);
            let next = s.next_after(clock.now_ms());
            let gap = next - at;
            assert!((300_000..=600_000).contains(&gap), "gap {gap}");
            gaps.push(gap);
            at = next;
        }
        // Jittered, not constant: both halves of the interval are used.
        assert!(gaps.iter().any(|g| *g < 450_000) && gaps.iter().any(|g| *g > 450_000));
        // Same seed, same schedule; other seed, other schedule.
        let a: Vec<_> = (0..5).map(|i| SweepSchedule::default_interval(1).next_after(i)).collect();
        let b: Vec<_> = (0..5).map(|i| SweepSchedule::default_interval(1).next_after(i)).collect();
        assert_eq!(a, b);
        let mut x = SweepSchedule::default_interval(1);
        let mut y = SweepSchedule::default_interval(2);
        let xs: Vec<_> = (0..5).map(|_| x.next_after(0)).collect();
        let ys: Vec<_> = (0..5).map(|_| y.next_after(0)).collect();
        assert_ne!(xs, ys);
    }

    #[test]
    fn connections_do_not_start_in_lockstep() {
        let firsts: std::collections::BTreeSet<Millis> =
            (0..50u64).map(|seed| SweepSchedule::default_interval(seed).first_after(0) / 60_000).collect();
        // 50 connections spread over at least 5 distinct minutes of the first 10.
        assert!(firsts.len() >= 5, "{firsts:?}");
    }

    #[tokio::test]
    async fn replicas_sweep_a_connection_once_per_interval() {
        let dir = std::env::temp_dir().join(format!("deskgate-sweep-timer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("timer.db");
        let _ = std::fs::remove_file(&path);
        let store = crate::store::open(path.to_str().unwrap(), crate::store::SecretKey::from_bytes([3; 32])).await.unwrap();
        let clock = ManualClock::new(0);
        let mut replicas: Vec<SweepTimer> = ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, r)| SweepTimer::new("zd", *r, SweepSchedule::default_interval(i as u64), clock.now_ms()))
            .collect();
        let mut sweeps: Vec<(Millis, usize)> = Vec::new();
        // Two hours, a minute at a time.
        for _ in 0..120 {
            clock.advance(Duration::from_secs(60));
            for (i, r) in replicas.iter_mut().enumerate() {
                if r.claim(&store, clock.now_ms()).await.unwrap() {
                    sweeps.push((clock.now_ms(), i));
                }
            }
        }
        // Never two sweeps within the 5-minute minimum, never a gap past the 10-minute maximum
        // plus the minute of this loop's resolution.
        let gaps: Vec<Millis> = sweeps.windows(2).map(|w| w[1].0 - w[0].0).collect();
        assert!(gaps.iter().all(|g| (300_000..=660_000).contains(g)), "{sweeps:?}");
        assert!(sweeps.len() >= 11, "{}", sweeps.len());
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn degenerate_interval() {
        let mut s = SweepSchedule::new(Duration::from_secs(60), Duration::from_secs(60), 3);
        assert_eq!(s.next_after(0), 60_000);
        let mut w = SweepSchedule::new(Duration::from_secs(600), Duration::from_secs(300), 3);
        assert!((300_000..=600_000).contains(&w.next_after(0)));
    }
}
