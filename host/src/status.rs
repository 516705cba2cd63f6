//! The live status registry: the numbers `/metrics`, `/v1/status` and the dashboard show that the
//! store does not hold.
//!
//! The store holds what must survive a restart: connections and their state, credential expiry,
//! the probe report, outbox and inbox depths, alerts. What a running gateway knows only in memory
//! lives here: each connection's [`BudgetGate`] (limits, use, utilization, waiting queues), its
//! [`CredentialManager`] (when the next refresh or health check is due), when its next
//! reconciliation sweep runs, and per-connection counters (429s per lane, suspensions,
//! reconciliation catches, duplicate writes prevented).
//!
//! # Who calls what
//!
//! The supervisor that runs each connection's workers owns the parts and registers them when it
//! starts the connection, and unregisters them when it stops it:
//!
//! ```
//! # use deskgate::status::StatusRegistry;
//! # use deskgate::bindings::Lane;
//! let status = StatusRegistry::shared();
//! // When a connection's workers start (gate from BudgetLayer::connect, manager from
//! // CredentialManager::new); both are optional.
//! status.register("acme", None, None);
//! let counters = status.counters("acme");
//! counters.record_rate_limited(Lane::Write); // where a write met a 429
//! counters.record_suspension();              // when the connection was suspended
//! status.set_next_sweep("acme", Some(90_000));
//! assert_eq!(status.snapshot()[0].counters.rate_limited_write, 1);
//! status.unregister("acme");
//! ```
//!
//! [`crate::api::AppState`] holds one registry ([`crate::api::AppState::with_status`], or a fresh
//! one by default) and reads it on every `/metrics`, `/v1/status` and `GET /` request. Reading
//! takes a snapshot of each gate (a short lock per gate); it never changes a count.
//!
//! Counters are per connection and survive [`StatusRegistry::unregister`] followed by
//! [`StatusRegistry::register`] (a restart of the connection's workers), so Prometheus counters
//! never go backwards within a process; [`StatusRegistry::forget`] drops them (a deleted
//! connection).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::Serialize;

use crate::auth::CredentialManager;
use crate::bindings::Lane;
use crate::budget::{BudgetGate, GateSnapshot};
use crate::clock::Millis;
use crate::ingest::sweep::SweepReport;
use crate::outbox::PassReport;

/// A registry shared between the supervisor (writer) and the API (reader).
pub type SharedStatus = Arc<StatusRegistry>;

/// Per-connection counters. Cheap to bump from any task (relaxed atomics).
#[derive(Debug, Default)]
pub struct ConnectionCounters {
    rate_limited_write: AtomicU64,
    rate_limited_read: AtomicU64,
    suspensions: AtomicU64,
    sweeps: AtomicU64,
    reconciliation_catches: AtomicU64,
    duplicate_submissions: AtomicU64,
    read_back_confirmations: AtomicU64,
    writes_confirmed: AtomicU64,
    writes_failed: AtomicU64,
    writes_diverged: AtomicU64,
}

fn bump(c: &AtomicU64, by: u64) {
    c.fetch_add(by, Ordering::Relaxed);
}

impl ConnectionCounters {
    /// A request on `lane` was answered 429.
    pub fn record_rate_limited(&self, lane: Lane) {
        match lane {
            Lane::Write => bump(&self.rate_limited_write, 1),
            Lane::Read => bump(&self.rate_limited_read, 1),
        }
    }

    /// A gate leaves the registry: keep the 429s it counted.
    fn fold_gate(&self, gate: &BudgetGate) {
        let l = gate.responses_429();
        bump(&self.rate_limited_read, l.read);
        bump(&self.rate_limited_write, l.write);
    }

    /// The connection was suspended (by the credential policy or an operator).
    pub fn record_suspension(&self) {
        bump(&self.suspensions, 1);
    }

    /// A reconciliation sweep finished: counts it and the changes it caught that webhooks missed.
    pub fn record_sweep(&self, report: &SweepReport) {
        bump(&self.sweeps, 1);
        bump(&self.reconciliation_catches, report.caught);
    }

    /// An outbox pass finished: counts settled writes, and read-back confirmations (writes that
    /// had landed and were not sent again: a duplicate prevented).
    pub fn record_pass(&self, report: &PassReport) {
        bump(&self.writes_confirmed, (report.confirmed + report.confirmed_by_read_back) as u64);
        bump(&self.read_back_confirmations, report.confirmed_by_read_back as u64);
        bump(&self.writes_failed, report.failed as u64);
        bump(&self.writes_diverged, report.diverged as u64);
    }

    /// The app submitted an action the outbox already held (same content key or
    /// `Idempotency-Key`): answered with the existing record, nothing enqueued. The API calls
    /// this itself.
    pub fn record_duplicate_submission(&self) {
        bump(&self.duplicate_submissions, 1);
    }

    /// The counts now.
    pub fn snapshot(&self) -> CounterSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            rate_limited_write: get(&self.rate_limited_write),
            rate_limited_read: get(&self.rate_limited_read),
            suspensions: get(&self.suspensions),
            sweeps: get(&self.sweeps),
            reconciliation_catches: get(&self.reconciliation_catches),
            duplicate_submissions: get(&self.duplicate_submissions),
            read_back_confirmations: get(&self.read_back_confirmations),
            writes_confirmed: get(&self.writes_confirmed),
            writes_failed: get(&self.writes_failed),
            writes_diverged: get(&self.writes_diverged),
        }
    }
}

/// [`ConnectionCounters`] at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CounterSnapshot {
    /// 429 answers to write-lane requests.
    pub rate_limited_write: u64,
    /// 429 answers to read-lane requests.
    pub rate_limited_read: u64,
    /// Times the connection was suspended.
    pub suspensions: u64,
    /// Reconciliation sweeps finished.
    pub sweeps: u64,
    /// Changes the sweeps caught that webhooks had missed.
    pub reconciliation_catches: u64,
    /// Submissions answered with an existing record (duplicate writes prevented at the door).
    pub duplicate_submissions: u64,
    /// Ambiguous writes found applied by a read-back and not sent again (duplicate writes
    /// prevented after a timeout).
    pub read_back_confirmations: u64,
    /// Writes settled confirmed.
    pub writes_confirmed: u64,
    /// Writes settled failed.
    pub writes_failed: u64,
    /// Resolutions that landed in part (a divergence alert each).
    pub writes_diverged: u64,
}

impl CounterSnapshot {
    /// Duplicate writes prevented, both ways.
    pub fn duplicates_prevented(&self) -> u64 {
        self.duplicate_submissions + self.read_back_confirmations
    }
}

#[derive(Debug, Default)]
struct Entry {
    gate: Option<BudgetGate>,
    credentials: Option<CredentialManager>,
    next_sweep: Option<Millis>,
    running: bool,
    counters: Arc<ConnectionCounters>,
}

/// One connection's live status, detached from the registry.
#[derive(Debug, Clone, Serialize)]
pub struct LiveStatus {
    /// The connection.
    pub connection_id: String,
    /// Whether its workers are registered (running) in this process.
    pub running: bool,
    /// Its budget and waiting queues, when a gate is registered.
    pub gate: Option<GateSnapshot>,
    /// When the credential manager next has work: the OAuth refresh (or its retry), or for
    /// non-expiring credentials the next health check.
    pub next_credential_check: Option<Millis>,
    /// When the OAuth token is due for refresh (`None` for credentials that do not expire).
    pub refresh_due_at: Option<Millis>,
    /// When the next reconciliation sweep runs.
    pub next_sweep: Option<Millis>,
    /// The counters.
    pub counters: CounterSnapshot,
}

/// The registry: see the module docs.
#[derive(Debug, Default)]
pub struct StatusRegistry {
    entries: RwLock<BTreeMap<String, Entry>>,
    /// Timer leases this process took: (connection, lease name) → held until.
    leases: RwLock<BTreeMap<(String, String), Millis>>,
}

impl StatusRegistry {
    /// An empty registry, shared.
    pub fn shared() -> SharedStatus {
        Arc::new(Self::default())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Entry>> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection's workers started here: its budget gate and credential manager (either may be
    /// absent: a connection without credentials has no manager). Replaces earlier parts; keeps
    /// the counters. Returns the counters to bump.
    pub fn register(
        &self,
        connection_id: &str,
        gate: Option<BudgetGate>,
        credentials: Option<CredentialManager>,
    ) -> Arc<ConnectionCounters> {
        let mut entries = self.write();
        let e = entries.entry(connection_id.to_owned()).or_default();
        if let Some(old) = e.gate.take() {
            e.counters.fold_gate(&old);
        }
        e.gate = gate;
        e.credentials = credentials;
        e.running = true;
        e.counters.clone()
    }

    /// A connection's workers stopped: its parts are dropped (the counters are kept). Returns
    /// whether it was registered.
    pub fn unregister(&self, connection_id: &str) -> bool {
        let mut entries = self.write();
        match entries.get_mut(connection_id) {
            Some(e) if e.running => {
                if let Some(old) = e.gate.take() {
                    e.counters.fold_gate(&old);
                }
                e.credentials = None;
                e.next_sweep = None;
                e.running = false;
                true
            }
            _ => false,
        }
    }

    /// Drop everything about a connection, counters included (it was deleted).
    pub fn forget(&self, connection_id: &str) -> bool {
        self.write().remove(connection_id).is_some()
    }

    /// The counters of `connection_id` (created at zero if it has none yet).
    pub fn counters(&self, connection_id: &str) -> Arc<ConnectionCounters> {
        if let Some(e) = self.read().get(connection_id) {
            return e.counters.clone();
        }
        self.write().entry(connection_id.to_owned()).or_default().counters.clone()
    }

    /// When the next reconciliation sweep of `connection_id` runs (`None`: none planned).
    pub fn set_next_sweep(&self, connection_id: &str, at: Option<Millis>) {
        self.write().entry(connection_id.to_owned()).or_default().next_sweep = at;
    }

    /// This process took (or renewed) timer lease `name` of `connection_id` (`""` for a
    /// gateway-wide timer) until `until`; `None`: it no longer holds it.
    pub fn note_lease(&self, connection_id: &str, name: &str, until: Option<Millis>) {
        let mut leases = self.leases.write().unwrap_or_else(|e| e.into_inner());
        let key = (connection_id.to_owned(), name.to_owned());
        match until {
            Some(u) => {
                leases.insert(key, u);
            }
            None => {
                leases.remove(&key);
            }
        }
    }

    /// The timer leases this process holds at `now`: (connection, lease name), `""` for the
    /// gateway-wide ones.
    pub fn leases_held(&self, now: Millis) -> Vec<(String, String)> {
        let leases = self.leases.read().unwrap_or_else(|e| e.into_inner());
        leases.iter().filter(|(_, until)| **until > now).map(|(k, _)| k.clone()).collect()
    }

    fn status_of(id: &str, e: &Entry) -> LiveStatus {
        LiveStatus {
            connection_id: id.to_owned(),
            running: e.running,
            gate: e.gate.as_ref().map(BudgetGate::snapshot),
            next_credential_check: e.credentials.as_ref().and_then(CredentialManager::next_due_at),
            refresh_due_at: e.credentials.as_ref().and_then(CredentialManager::refresh_due_at),
            next_sweep: e.next_sweep,
            counters: {
                // The gate counts the 429s of the requests it let through while registered.
                let mut c = e.counters.snapshot();
                if let Some(g) = &e.gate {
                    let l = g.responses_429();
                    c.rate_limited_read += l.read;
                    c.rate_limited_write += l.write;
                }
                c
            },
        }
    }

    /// One connection's live status, if anything is known about it.
    pub fn get(&self, connection_id: &str) -> Option<LiveStatus> {
        let entries = self.read();
        entries.get(connection_id).map(|e| Self::status_of(connection_id, e))
    }

    /// Every known connection's live status, by connection id.
    pub fn snapshot(&self) -> Vec<LiveStatus> {
        // Clone the handles out so no gate lock is taken under the registry lock.
        let parts: Vec<(String, Entry)> = self
            .read()
            .iter()
            .map(|(k, e)| {
                (
                    k.clone(),
                    Entry {
                        gate: e.gate.clone(),
                        credentials: e.credentials.clone(),
                        next_sweep: e.next_sweep,
                        running: e.running,
                        counters: e.counters.clone(),
                    },
                )
            })
            .collect();
        parts.iter().map(|(k, e)| Self::status_of(k, e)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::{BucketDraw, BucketScope, PlanLimits, RateBucket};
    use crate::budget::{BudgetConfig, Priority, RateBudget};
    use crate::clock::ManualClock;

    fn gate(clock: &ManualClock) -> BudgetGate {
        let plan = PlanLimits {
            plan: "team".into(),
            buckets: vec![RateBucket {
                name: "account".into(),
                scope: BucketScope::Account,
                limit: 100,
                window_ms: 60_000,
                description: String::new(),
            }],
        };
        BudgetGate::new(RateBudget::new(&plan, BudgetConfig::default()), Arc::new(clock.clone()))
    }

    #[tokio::test]
    async fn a_registered_gate_is_snapshotted_live() {
        let clock = ManualClock::new(1_000);
        let reg = StatusRegistry::shared();
        let g = gate(&clock);
        reg.register("acme", Some(g.clone()), None);
        let draw = [BucketDraw { bucket: "account".into(), key: None, cost: 1 }];
        for _ in 0..5 {
            g.acquire(Priority::Write, &draw).await.expect("capacity");
        }
        let s = reg.get("acme").expect("registered");
        assert!(s.running);
        let b = &s.gate.as_ref().expect("gate").budget.buckets[0];
        assert_eq!(b.lane(Lane::Write).used, 5);
        assert_eq!(b.limit, 100);
        assert!((b.utilization - 0.05).abs() < 1e-9, "{}", b.utilization);
    }

    #[test]
    fn counters_survive_a_restart_of_the_workers_but_not_forget() {
        let clock = ManualClock::new(0);
        let reg = StatusRegistry::shared();
        let c = reg.register("acme", Some(gate(&clock)), None);
        c.record_rate_limited(Lane::Write);
        c.record_rate_limited(Lane::Read);
        c.record_rate_limited(Lane::Read);
        c.record_suspension();
        assert!(reg.unregister("acme"));
        assert!(!reg.unregister("acme"), "already stopped");
        let s = reg.get("acme").unwrap();
        assert!(!s.running && s.gate.is_none());
        assert_eq!((s.counters.rate_limited_write, s.counters.rate_limited_read, s.counters.suspensions), (1, 2, 1));
        let again = reg.register("acme", None, None);
        assert!(Arc::ptr_eq(&again, &c), "the same counters after a restart");
        assert!(reg.forget("acme"));
        assert!(reg.get("acme").is_none());
        assert_eq!(reg.counters("acme").snapshot(), CounterSnapshot::default());
    }

    #[test]
    fn the_gates_429_counts_show_live_and_are_kept_when_the_gate_goes() {
        let clock = ManualClock::new(0);
        let reg = StatusRegistry::shared();
        let g = gate(&clock);
        reg.register("acme", Some(g.clone()), None);
        g.record_response(Lane::Write, 429);
        g.record_response(Lane::Read, 429);
        g.record_response(Lane::Read, 429);
        g.record_response(Lane::Write, 200);
        g.record_response(Lane::Read, 503);
        let s = reg.get("acme").unwrap();
        assert_eq!((s.counters.rate_limited_write, s.counters.rate_limited_read), (1, 2));
        assert_eq!(s.gate.unwrap().responses_429, crate::budget::LaneCount { read: 2, write: 1 });
        // A new gate (re-attach) starts at zero; the old one's counts stay in the counters.
        let fresh = gate(&clock);
        reg.register("acme", Some(fresh.clone()), None);
        fresh.record_response(Lane::Write, 429);
        let s = reg.get("acme").unwrap().counters;
        assert_eq!((s.rate_limited_write, s.rate_limited_read), (2, 2));
        reg.unregister("acme");
        let s = reg.get("acme").unwrap().counters;
        assert_eq!((s.rate_limited_write, s.rate_limited_read), (2, 2), "counted once, not twice, after the gate left");
    }

    #[test]
    fn sweep_and_pass_reports_feed_catches_and_duplicates_prevented() {
        let reg = StatusRegistry::shared();
        let c = reg.counters("acme");
        let sweep = SweepReport {
            connection_id: "acme".into(),
            first: false,
            since: 0,
            mark: 1,
            pages: 1,
            seen: 10,
            caught: 3,
            duplicates: 7,
            stale: 0,
            duration: std::time::Duration::ZERO,
            alerted: false,
        };
        c.record_sweep(&sweep);
        c.record_sweep(&SweepReport { caught: 2, ..sweep });
        c.record_pass(&PassReport { confirmed: 4, confirmed_by_read_back: 2, failed: 1, ..PassReport::default() });
        c.record_duplicate_submission();
        let s = reg.get("acme").unwrap().counters;
        assert_eq!((s.sweeps, s.reconciliation_catches), (2, 5));
        assert_eq!((s.writes_confirmed, s.read_back_confirmations, s.writes_failed), (6, 2, 1));
        assert_eq!(s.duplicates_prevented(), 3);
        reg.set_next_sweep("acme", Some(42));
        assert_eq!(reg.snapshot()[0].next_sweep, Some(42));
    }
}
