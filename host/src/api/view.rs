//! The operator's view of the gateway: one model, read from the store (durable facts) and the
//! [`crate::status::StatusRegistry`] (live numbers), rendered three ways: `GET /v1/status` (JSON,
//! what `deskgate status` prints), `GET /` (the dashboard) and `GET /metrics`.
//!
//! Secrets never enter the model: credentials contribute their scheme, version and expiry only,
//! webhook secrets whether one is set.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::budget::GateSnapshot;
use crate::clock::Millis;
use crate::ingest::webhook::{StoreRoutes, WebhookSigning};
use crate::status::{CounterSnapshot, LiveStatus};
use crate::store::{ActionQuery, Alert, ConnectionState, SharedStore, StoreError};

/// How many alerts the view carries.
const RECENT_ALERTS: u32 = 50;

/// The whole view.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StatusView {
    /// When it was taken (the gateway's clock).
    pub now: Millis,
    /// Connections, suspended first, then waiting for a probe, then live; by id within each.
    pub connections: Vec<ConnectionView>,
    /// Alerts not yet acknowledged, newest first (at most 50).
    pub alerts: Vec<AlertView>,
}

/// One connection.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ConnectionView {
    pub id: String,
    pub platform: String,
    pub display_name: String,
    pub plan: Option<String>,
    /// `pending_probe`, `live` or `suspended`.
    pub state: &'static str,
    /// Why it is suspended and what to do, when it is.
    pub suspended: Option<Suspension>,
    pub auth: AuthView,
    /// The last scope probe's report as stored.
    pub probe: Option<ProbeView>,
    /// Budget and gate queues, when the connection's workers run in this process.
    pub budget: Option<GateSnapshot>,
    pub queues: Queues,
    pub next_sweep: Option<Millis>,
    pub counters: CounterSnapshot,
    /// Unacknowledged alerts, by kind.
    pub open_alerts: BTreeMap<String, u64>,
    /// Whether the connection's workers run in this process.
    pub running: bool,
    /// Whether a webhook secret is set and unsigned deliveries are taken (never the secret).
    pub webhooks: WebhookSigning,
    pub updated_at: Millis,
}

/// A suspension.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Suspension {
    pub reason: String,
    pub kind: String,
    /// When the connection was last changed (the suspension, as far as the store knows).
    pub since: Millis,
}

/// Credential state (no secret).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AuthView {
    /// One of [`AUTH_STATES`].
    pub state: &'static str,
    pub scheme: Option<&'static str>,
    pub version: Option<i64>,
    pub expires_at: Option<Millis>,
    /// `expires_at - now` (negative once expired).
    pub expires_in_ms: Option<i64>,
    /// When the OAuth token is due for refresh (live).
    pub refresh_due_at: Option<Millis>,
    /// When the credential manager next works: refresh, retry or health check (live).
    pub next_check_at: Option<Millis>,
    pub refresh_in_flight: bool,
}

/// Every value of [`AuthView::state`].
pub(crate) const AUTH_STATES: &[&str] = &["ok", "refreshing", "refresh_overdue", "expired", "invalid", "missing"];

/// The scope probe's report, as people read it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ProbeView {
    pub passed: bool,
    pub at: Option<Millis>,
    /// Why the probe could not run, when it could not.
    pub error: Option<String>,
    pub capabilities: Vec<CapabilityView>,
}

/// One capability of a probe.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CapabilityView {
    pub capability: String,
    pub granted: bool,
    pub permission_kind: Option<String>,
    pub missing: Option<String>,
    pub remediation: Option<String>,
    pub message: Option<String>,
}

/// Queue depths.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Queues {
    /// Outbox entries owed an outcome, by state (`pending`, `sent`, `ambiguous`).
    pub outbox: BTreeMap<&'static str, u64>,
    /// Inbox events the app has not acknowledged.
    pub inbox_pending: u64,
    /// Requests waiting at the budget gate: `write_retry`, `write`, `read` (live).
    pub gate_write_retry: u64,
    pub gate_write: u64,
    pub gate_read: u64,
}

/// An alert.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AlertView {
    pub id: i64,
    pub connection_id: Option<String>,
    pub kind: String,
    pub text: String,
    pub created_at: Millis,
    pub delivered_at: Option<Millis>,
}

fn probe_view(v: &Value) -> ProbeView {
    let s = |e: &Value, k: &str| e.get(k).and_then(Value::as_str).map(str::to_owned);
    ProbeView {
        passed: v.get("passed").and_then(Value::as_bool).unwrap_or(false),
        at: v.get("at").and_then(Value::as_i64),
        error: s(v, "error"),
        capabilities: v
            .get("capabilities")
            .and_then(Value::as_array)
            .map(|caps| {
                caps.iter()
                    .map(|e| CapabilityView {
                        capability: s(e, "capability").unwrap_or_default(),
                        granted: e.get("granted").and_then(Value::as_bool).unwrap_or(false),
                        permission_kind: s(e, "permission_kind"),
                        missing: s(e, "missing"),
                        remediation: s(e, "remediation"),
                        message: s(e, "message"),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn rank(state: &ConnectionState) -> u8 {
    match state {
        ConnectionState::Suspended { .. } => 0,
        ConnectionState::PendingProbe => 1,
        ConnectionState::Live => 2,
        ConnectionState::Deleted => 3,
    }
}

/// Build the view at `now`.
pub(crate) async fn build(
    store: &SharedStore,
    routes: &StoreRoutes,
    live: &[LiveStatus],
    now: Millis,
) -> Result<StatusView, StoreError> {
    let live: BTreeMap<&str, &LiveStatus> = live.iter().map(|l| (l.connection_id.as_str(), l)).collect();
    let mut conns = store.list_connections(false).await?;
    conns.sort_by(|a, b| rank(&a.state).cmp(&rank(&b.state)).then_with(|| a.id.cmp(&b.id)));
    let open: Vec<Alert> = store.list_alerts(None, false, 10_000).await?;
    let mut connections = Vec::with_capacity(conns.len());
    for c in conns {
        let l = live.get(c.id.as_str()).copied();
        let cred = store.get_credential(&c.id).await?;
        let suspended = match &c.state {
            ConnectionState::Suspended { reason, kind } => {
                Some(Suspension { reason: reason.clone(), kind: kind.clone(), since: c.updated_at })
            }
            _ => None,
        };
        let refresh_due_at = l.and_then(|l| l.refresh_due_at);
        let auth_state = match (&cred, &suspended) {
            (None, _) => "missing",
            (_, Some(s)) if s.kind == crate::auth::SUSPEND_REAUTH => "invalid",
            (Some(cr), _) if cr.refresh_in_flight.is_some() => "refreshing",
            (Some(cr), _) if cr.expires_at.is_some_and(|e| e <= now) => "expired",
            (Some(_), _) if refresh_due_at.is_some_and(|d| d <= now) => "refresh_overdue",
            _ => "ok",
        };
        let auth = AuthView {
            state: auth_state,
            scheme: cred.as_ref().map(|cr| cr.secret.scheme()),
            version: cred.as_ref().map(|cr| cr.version),
            expires_at: cred.as_ref().and_then(|cr| cr.expires_at),
            expires_in_ms: cred.as_ref().and_then(|cr| cr.expires_at).map(|e| e - now),
            refresh_due_at,
            next_check_at: l.and_then(|l| l.next_credential_check),
            refresh_in_flight: cred.as_ref().is_some_and(|cr| cr.refresh_in_flight.is_some()),
        };
        let mut queues = Queues {
            outbox: ["pending", "sent", "ambiguous"].into_iter().map(|k| (k, 0)).collect(),
            inbox_pending: store.inbox_pending(&c.id).await?,
            ..Queues::default()
        };
        let mut after_id = 0;
        loop {
            let q = ActionQuery {
                connection_id: Some(c.id.clone()),
                in_flight_only: true,
                after_id,
                limit: 500,
                ..ActionQuery::default()
            };
            let page = store.list_actions(&q).await?;
            for e in &page {
                *queues.outbox.entry(e.state.name()).or_default() += 1;
            }
            match page.last() {
                Some(e) if page.len() == 500 => after_id = e.id,
                _ => break,
            }
        }
        if let Some(g) = l.and_then(|l| l.gate.as_ref()) {
            queues.gate_write_retry = g.waiting.write_retry as u64;
            queues.gate_write = g.waiting.write as u64;
            queues.gate_read = g.waiting.read as u64;
        }
        let mut open_alerts = BTreeMap::new();
        for a in open.iter().filter(|a| a.connection_id.as_deref() == Some(c.id.as_str())) {
            *open_alerts.entry(a.kind.clone()).or_default() += 1;
        }
        connections.push(ConnectionView {
            probe: c.probe_report.as_ref().map(probe_view),
            budget: l.and_then(|l| l.gate.clone()),
            next_sweep: l.and_then(|l| l.next_sweep),
            counters: l.map(|l| l.counters).unwrap_or_default(),
            running: l.is_some_and(|l| l.running),
            webhooks: routes.signing(&c.id).await?,
            state: c.state.name(),
            id: c.id,
            platform: c.platform,
            display_name: c.display_name,
            plan: c.plan,
            suspended,
            auth,
            queues,
            open_alerts,
            updated_at: c.updated_at,
        });
    }
    let mut alerts: Vec<AlertView> = open
        .into_iter()
        .map(|a| AlertView {
            id: a.id,
            connection_id: a.connection_id,
            kind: a.kind,
            text: a.text,
            created_at: a.created_at,
            delivered_at: a.delivered_at,
        })
        .collect();
    alerts.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    alerts.truncate(RECENT_ALERTS as usize);
    Ok(StatusView { now, connections, alerts })
}
