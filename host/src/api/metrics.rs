//! `GET /metrics`: Prometheus text exposition format (version 0.0.4).
//!
//! Every family is written with its `# HELP` and `# TYPE` lines before its samples, and every
//! label value is escaped (`\\`, `\"`, `\n`). Families, per connection (and bucket and lane where
//! it applies):
//!
//! | family | type | labels |
//! |---|---|---|
//! | `deskgate_connections` | gauge | `state` |
//! | `deskgate_connection_suspended` | gauge | `connection`, `kind` |
//! | `deskgate_suspensions_total` | counter | `connection` |
//! | `deskgate_auth_state` | gauge (1 for the current state) | `connection`, `state` |
//! | `deskgate_credential_expires_in_seconds` | gauge (expiring credentials only) | `connection` |
//! | `deskgate_credential_next_check_in_seconds` | gauge | `connection` |
//! | `deskgate_budget_limit` / `_target` / `_spent` / `_others` | gauge | `connection`, `bucket` |
//! | `deskgate_budget_utilization` | gauge (spent / limit) | `connection`, `bucket` |
//! | `deskgate_budget_blocked` | gauge (1 while a 429 penalty holds) | `connection`, `bucket` |
//! | `deskgate_budget_lane_capacity` / `_used` / `_available` | gauge | `connection`, `bucket`, `lane` |
//! | `deskgate_budget_lane_utilization` | gauge (used / capacity) | `connection`, `bucket`, `lane` |
//! | `deskgate_rate_limited_total` | counter (429 answers) | `connection`, `lane` |
//! | `deskgate_gate_waiting` | gauge | `connection`, `queue` (`write_retry`, `write`, `read`) |
//! | `deskgate_outbox_queue` | gauge | `connection`, `state` |
//! | `deskgate_outbox_in_flight` | gauge | `state` |
//! | `deskgate_inbox_pending` | gauge | `connection` |
//! | `deskgate_writes_total` | counter | `connection`, `outcome` |
//! | `deskgate_duplicates_prevented_total` | counter | `connection`, `how` (`submission`, `read_back`) |
//! | `deskgate_sweeps_total`, `deskgate_reconciliation_catches_total` | counter | `connection` |
//! | `deskgate_alerts_open` | gauge | none |
//! | `deskgate_alerts_open_by_kind` | gauge | `connection` (empty for gateway-wide), `kind` |
//! | `deskgate_alerts_raised_total` | counter | none |
//! | `deskgate_adapter_calls_total`, `deskgate_adapter_call_errors_total` | counter | `adapter` |
//! | `deskgate_ingest_*_total` | counter | `code` for rejections |
//!
//! Budget, gate, counter and next-check figures come from the
//! [`crate::status::StatusRegistry`]: a connection whose workers do not run in this process has
//! none.
//!
//! # Several replicas
//!
//! Families read from the store (connections, outbox queues, inbox, open alerts) are the same on
//! every replica and say so in their help ("Store-wide"): aggregate them with `max`, never `sum`.
//! The `_total` counters count what this process did and sum across replicas. The budget gauges
//! are this replica's view of the budget, which in shared mode is the account's whole window on
//! every replica (`max` again). With a replica id ([`crate::api::AppState::with_replica`]) the
//! `deskgate_replica_*` families ([`render_replica`]) carry a `replica` label: budget mode, 429s and
//! lane utilization of this replica's gates, outbox entries leased to its workers, and the timer
//! leases it holds.

use std::collections::BTreeMap;
use std::fmt::{Display, Write as _};

use crate::bindings::Lane;
use crate::store::Alert;

use super::view::{AUTH_STATES, StatusView};

/// Escape a label value.
pub(crate) fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A text exposition being written.
#[derive(Default)]
pub(crate) struct Exposition {
    out: String,
    families: Vec<String>,
}

impl Exposition {
    /// Start a family. Each name once.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        debug_assert!(!self.families.iter().any(|f| f == name), "family {name} written twice");
        self.families.push(name.to_owned());
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample of the current family.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    fn finish(self) -> String {
        self.out
    }
}

fn secs(ms: i64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

/// Everything the exposition needs besides the view.
pub(crate) struct Extra<'a> {
    pub in_flight: BTreeMap<&'static str, u64>,
    pub open_alerts: &'a [Alert],
    pub adapters: Vec<(String, u64, u64)>,
    pub ingest: Vec<(String, u64)>,
}

/// Write the exposition.
pub(crate) fn render(view: &StatusView, extra: &Extra<'_>) -> String {
    let mut x = Exposition::default();
    let conns = &view.connections;

    x.family("deskgate_connections", "gauge", "Connections by state (deleted excluded). Store-wide: every replica reports the same value (aggregate with max, not sum).");
    let mut by_state: BTreeMap<&str, u64> = ["pending_probe", "live", "suspended"].into_iter().map(|k| (k, 0)).collect();
    for c in conns {
        *by_state.entry(c.state).or_default() += 1;
    }
    for (k, n) in &by_state {
        x.sample("deskgate_connections", &[("state", k)], n);
    }

    x.family("deskgate_connection_suspended", "gauge", "1 while the connection is suspended, labelled with the suspension's kind. Store-wide: every replica reports the same value (aggregate with max, not sum).");
    for c in conns {
        let kind = c.suspended.as_ref().map_or("", |s| s.kind.as_str());
        x.sample("deskgate_connection_suspended", &[("connection", &c.id), ("kind", kind)], u8::from(c.suspended.is_some()));
    }
    x.family("deskgate_suspensions_total", "counter", "Times the connection was suspended since this process started.");
    for c in conns {
        x.sample("deskgate_suspensions_total", &[("connection", &c.id)], c.counters.suspensions);
    }

    x.family("deskgate_auth_state", "gauge", "The connection's credential state: 1 for the current one (ok, refreshing, refresh_overdue, expired, invalid, missing).");
    for c in conns {
        for s in AUTH_STATES {
            x.sample("deskgate_auth_state", &[("connection", &c.id), ("state", s)], u8::from(c.auth.state == *s));
        }
    }
    x.family("deskgate_credential_expires_in_seconds", "gauge", "Seconds until the access token expires (negative once expired); expiring credentials only. Store-wide: every replica reports the same value (aggregate with max, not sum).");
    for c in conns {
        if let Some(ms) = c.auth.expires_in_ms {
            x.sample("deskgate_credential_expires_in_seconds", &[("connection", &c.id)], secs(ms));
        }
    }
    x.family("deskgate_credential_next_check_in_seconds", "gauge", "Seconds until the credential manager next refreshes or health-checks the credential.");
    for c in conns {
        if let Some(at) = c.auth.next_check_at {
            x.sample("deskgate_credential_next_check_in_seconds", &[("connection", &c.id)], secs(at - view.now));
        }
    }

    type BucketFigure = fn(&crate::budget::BucketSnapshot) -> String;
    let bucket_families: [(&str, &str, BucketFigure); 6] = [
        ("deskgate_budget_limit", "The bucket's limit in force (the platform's latest statement, else the declared one).", |b| b.limit.to_string()),
        ("deskgate_budget_target", "Units per window this connection may spend (the target share of the limit).", |b| b.target.to_string()),
        ("deskgate_budget_spent", "Units spent in the current window, ours plus the account's other clients'.", |b| b.spent.to_string()),
        ("deskgate_budget_others", "Units the account's other clients spent in the current window (from the platform's readings).", |b| b.others.to_string()),
        ("deskgate_budget_utilization", "Spent over limit in the current window.", |b| format!("{:.4}", b.utilization)),
        ("deskgate_budget_blocked", "1 while a 429 penalty blocks the bucket (or its busiest key).", |b| {
            u8::from(b.blocked_until.is_some()).to_string()
        }),
    ];
    for (name, help, f) in bucket_families {
        x.family(name, "gauge", help);
        for c in conns {
            for b in c.budget.iter().flat_map(|g| &g.budget.buckets) {
                x.sample(name, &[("connection", &c.id), ("bucket", &b.bucket)], f(b));
            }
        }
    }
    type LaneFigure = fn(&crate::budget::LaneSnapshot) -> u64;
    let lane_families: [(&str, &str, LaneFigure); 3] = [
        ("deskgate_budget_lane_capacity", "Units per window the lane may spend in the bucket.", |l| l.capacity),
        ("deskgate_budget_lane_used", "Units the lane spent in the bucket's current window.", |l| l.used),
        ("deskgate_budget_lane_available", "Units left for the lane in the bucket's current window.", |l| l.available),
    ];
    for (name, help, f) in lane_families {
        x.family(name, "gauge", help);
        for c in conns {
            for b in c.budget.iter().flat_map(|g| &g.budget.buckets) {
                for lane in [Lane::Write, Lane::Read] {
                    x.sample(name, &[("connection", &c.id), ("bucket", &b.bucket), ("lane", lane_name(lane))], f(b.lane(lane)));
                }
            }
        }
    }
    // From the same snapshots: the lane's share of its own capacity, the figure to alert on
    // (a write lane near 1 means writes are about to queue at the gate).
    x.family("deskgate_budget_lane_utilization", "gauge", "Units the lane spent over its capacity in the bucket's current window (0 when the lane has none).");
    for c in conns {
        for b in c.budget.iter().flat_map(|g| &g.budget.buckets) {
            for lane in [Lane::Write, Lane::Read] {
                let l = b.lane(lane);
                let u = if l.capacity == 0 { 0.0 } else { l.used as f64 / l.capacity as f64 };
                x.sample("deskgate_budget_lane_utilization", &[("connection", &c.id), ("bucket", &b.bucket), ("lane", lane_name(lane))], format!("{u:.4}"));
            }
        }
    }
    x.family("deskgate_rate_limited_total", "counter", "Requests answered 429, by lane.");
    for c in conns {
        x.sample("deskgate_rate_limited_total", &[("connection", &c.id), ("lane", "write")], c.counters.rate_limited_write);
        x.sample("deskgate_rate_limited_total", &[("connection", &c.id), ("lane", "read")], c.counters.rate_limited_read);
    }

    x.family("deskgate_gate_waiting", "gauge", "Requests waiting at the connection's budget gate, by queue.");
    for c in conns.iter().filter(|c| c.budget.is_some()) {
        for (q, n) in [("write_retry", c.queues.gate_write_retry), ("write", c.queues.gate_write), ("read", c.queues.gate_read)] {
            x.sample("deskgate_gate_waiting", &[("connection", &c.id), ("queue", q)], n);
        }
    }
    x.family("deskgate_outbox_queue", "gauge", "The connection's outbox entries still owed an outcome, by state. Store-wide: every replica reports the same value (aggregate with max, not sum).");
    for c in conns {
        for (s, n) in &c.queues.outbox {
            x.sample("deskgate_outbox_queue", &[("connection", &c.id), ("state", s)], n);
        }
    }
    x.family("deskgate_outbox_in_flight", "gauge", "Outbox entries still owed an outcome, by state. Store-wide: every replica reports the same value (aggregate with max, not sum).");
    for (k, n) in &extra.in_flight {
        x.sample("deskgate_outbox_in_flight", &[("state", k)], n);
    }
    x.family("deskgate_inbox_pending", "gauge", "Inbox events not yet acknowledged by the app. Store-wide: every replica reports the same value (aggregate with max, not sum).");
    for c in conns {
        x.sample("deskgate_inbox_pending", &[("connection", &c.id)], c.queues.inbox_pending);
    }
    x.family("deskgate_writes_total", "counter", "Writes settled by the outbox since this process started, by outcome.");
    for c in conns {
        for (o, n) in [("confirmed", c.counters.writes_confirmed), ("failed", c.counters.writes_failed), ("diverged", c.counters.writes_diverged)] {
            x.sample("deskgate_writes_total", &[("connection", &c.id), ("outcome", o)], n);
        }
    }
    x.family("deskgate_duplicates_prevented_total", "counter", "Duplicate writes prevented: resubmissions answered with the existing action, and ambiguous writes found applied by a read-back and not resent.");
    for c in conns {
        x.sample("deskgate_duplicates_prevented_total", &[("connection", &c.id), ("how", "submission")], c.counters.duplicate_submissions);
        x.sample("deskgate_duplicates_prevented_total", &[("connection", &c.id), ("how", "read_back")], c.counters.read_back_confirmations);
    }
    x.family("deskgate_sweeps_total", "counter", "Reconciliation sweeps finished for the connection.");
    for c in conns {
        x.sample("deskgate_sweeps_total", &[("connection", &c.id)], c.counters.sweeps);
    }
    x.family("deskgate_reconciliation_catches_total", "counter", "Ticket changes reconciliation sweeps caught that webhooks had missed.");
    for c in conns {
        x.sample("deskgate_reconciliation_catches_total", &[("connection", &c.id)], c.counters.reconciliation_catches);
    }

    x.family("deskgate_alerts_open", "gauge", "Alerts not yet acknowledged. Store-wide: every replica reports the same value (aggregate with max, not sum).");
    x.sample("deskgate_alerts_open", &[], extra.open_alerts.len());
    x.family("deskgate_alerts_open_by_kind", "gauge", "Alerts not yet acknowledged, by connection (empty: gateway-wide) and kind. Store-wide: every replica reports the same value (aggregate with max, not sum).");
    let mut by_kind: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for a in extra.open_alerts {
        *by_kind.entry((a.connection_id.as_deref().unwrap_or(""), a.kind.as_str())).or_default() += 1;
    }
    for ((c, k), n) in &by_kind {
        x.sample("deskgate_alerts_open_by_kind", &[("connection", c), ("kind", k)], n);
    }
    x.family("deskgate_alerts_raised_total", "counter", "Alerts raised by this process.");
    x.sample("deskgate_alerts_raised_total", &[], crate::alerts::raised_total());

    x.family("deskgate_adapter_calls_total", "counter", "Calls into each adapter component.");
    for (id, calls, _) in &extra.adapters {
        x.sample("deskgate_adapter_calls_total", &[("adapter", id)], calls);
    }
    x.family("deskgate_adapter_call_errors_total", "counter", "Adapter calls that trapped or overran a limit.");
    for (id, _, errors) in &extra.adapters {
        x.sample("deskgate_adapter_call_errors_total", &[("adapter", id)], errors);
    }

    // Ingestion counters: `name` or `name.code` (one family per name).
    let mut ingest: BTreeMap<&str, Vec<(Option<&str>, u64)>> = BTreeMap::new();
    for (name, n) in &extra.ingest {
        match name.split_once('.') {
            Some((base, code)) => ingest.entry(base).or_default().push((Some(code), *n)),
            None => ingest.entry(name.as_str()).or_default().push((None, *n)),
        }
    }
    for (base, samples) in &ingest {
        let family = format!("deskgate_ingest_{base}_total");
        x.family(&family, "counter", &ingest_help(base));
        for (code, n) in samples {
            match code {
                Some(code) => x.sample(&family, &[("code", code)], n),
                None => x.sample(&family, &[], n),
            }
        }
    }
    x.finish()
}

/// What is this replica's alone, for [`render_replica`].
pub(crate) struct ReplicaFigures<'a> {
    /// The replica's id (every sample's `replica` label).
    pub id: &'a str,
    /// The shared budgets' mode: `shared`, `fallback` (Redis unreachable), or `local` (none).
    pub mode: &'static str,
    /// Outbox entries leased to this replica's workers now, by connection.
    pub claims: BTreeMap<String, u64>,
    /// Timer leases this replica holds now: (connection, lease), `""` for gateway-wide ones.
    pub leases: Vec<(String, String)>,
}

/// The `deskgate_replica_*` families: figures that differ from replica to replica (summing them
/// across replicas gives the cluster's total), each labelled with the replica.
pub(crate) fn render_replica(view: &StatusView, r: &ReplicaFigures<'_>) -> String {
    let mut x = Exposition::default();
    let id = r.id;
    x.family("deskgate_replica_info", "gauge", "This replica's id.");
    x.sample("deskgate_replica_info", &[("replica", id)], 1);
    x.family("deskgate_replica_shared_budget_mode", "gauge", "1 for this replica's budget mode: shared (Redis), fallback (Redis unreachable: 1/replicas of each budget) or local (no Redis configured).");
    for m in ["shared", "fallback", "local"] {
        x.sample("deskgate_replica_shared_budget_mode", &[("replica", id), ("mode", m)], u8::from(r.mode == m));
    }
    x.family("deskgate_replica_rate_limited_total", "counter", "Requests this replica's gate let through that the platform answered 429, by connection and lane.");
    for c in &view.connections {
        x.sample("deskgate_replica_rate_limited_total", &[("replica", id), ("connection", &c.id), ("lane", "write")], c.counters.rate_limited_write);
        x.sample("deskgate_replica_rate_limited_total", &[("replica", id), ("connection", &c.id), ("lane", "read")], c.counters.rate_limited_read);
    }
    x.family("deskgate_replica_lane_utilization", "gauge", "Used over capacity of each lane of each bucket in the current window, as this replica's gate sees it.");
    for c in &view.connections {
        for b in c.budget.iter().flat_map(|g| &g.budget.buckets) {
            for lane in [Lane::Write, Lane::Read] {
                let l = b.lane(lane);
                let u = if l.capacity == 0 { 0.0 } else { l.used as f64 / l.capacity as f64 };
                x.sample("deskgate_replica_lane_utilization", &[("replica", id), ("connection", &c.id), ("bucket", &b.bucket), ("lane", lane_name(lane))], format!("{u:.4}"));
            }
        }
    }
    x.family("deskgate_replica_outbox_claims", "gauge", "Outbox entries leased to this replica's workers now, by connection.");
    for c in &view.connections {
        x.sample("deskgate_replica_outbox_claims", &[("replica", id), ("connection", &c.id)], r.claims.get(&c.id).copied().unwrap_or(0));
    }
    x.family("deskgate_replica_leases_held", "gauge", "Timer leases this replica holds now: connection (its refresh, health check and sweep run here), reconcile (a sweep), and the gateway-wide alerts and push (connection empty).");
    for (conn, lease) in &r.leases {
        x.sample("deskgate_replica_leases_held", &[("replica", id), ("connection", conn), ("lease", lease)], 1);
    }
    x.finish()
}

fn lane_name(lane: Lane) -> &'static str {
    match lane {
        Lane::Write => "write",
        Lane::Read => "read",
    }
}

fn ingest_help(base: &str) -> String {
    match base {
        "webhooks_accepted" => "Webhook deliveries accepted.".into(),
        "webhooks_rejected" => "Webhook deliveries refused, by reason code.".into(),
        "webhooks_failed" => "Webhook deliveries answered 5xx (the platform retries).".into(),
        "webhook_events_new" => "Events stored from webhooks.".into(),
        "webhook_events_duplicate" => "Webhook events already stored (duplicate deliveries).".into(),
        "webhook_events_stale" => "Webhook events older than a stored version.".into(),
        "sweeps" => "Reconciliation sweeps finished (all connections).".into(),
        "sweeps_failed" => "Reconciliation sweeps that failed.".into(),
        "sweep_pages" => "Pages listed by reconciliation sweeps.".into(),
        "sweep_seen" => "Tickets listed by reconciliation sweeps.".into(),
        "sweep_caught" => "Changes reconciliation sweeps caught that webhooks had missed.".into(),
        other => format!("Ingestion counter {other}."),
    }
}
