//! The HTTP API: what the app (and the operator's tools) talk to.
//!
//! [`app`] builds the whole `axum::Router` from an [`AppState`]; `deskgate serve` binds it, and
//! `host/tests/api.rs` serves it on `127.0.0.1:0`. The API is described by `openapi.json` (in this
//! directory, served at `GET /openapi.json`); [`ROUTES`] is the one list of routes, and the API
//! test checks that the document and the router agree on it, in both directions.
//!
//! # Authentication
//!
//! Everything except `/healthz`, `/readyz`, `/openapi.json`, `/webhooks/{connection}` and the
//! dashboard's own routes (`/`, `/login`, `/logout`) needs `Authorization: Bearer <token>`. The token is compared in constant time (`subtle`), so timing
//! does not reveal how much of a guess was right. Webhooks authenticate by their signature
//! instead ([`crate::ingest::webhook`]). `/metrics` needs the token too: its labels name
//! connections.
//!
//! The dashboard (`GET /`, see `api/dashboard.rs`) cannot use a bearer header: it signs
//! in with the same token through a form and keeps a signed, expiring, `HttpOnly` session cookie;
//! without one it shows only the sign-in form (401).
//!
//! # Live figures
//!
//! Budgets, gate queues, credential timers and per-connection counters come from the
//! [`crate::status::StatusRegistry`] installed with [`AppState::with_status`]; everything else
//! from the store. `GET /v1/status` is that view as JSON, `GET /` renders it, `/metrics`
//! exposes it.
//!
//! # Errors
//!
//! One type, [`ApiError`]: `{"error": {"code", "message"}}`. Bad JSON, bad query strings and bad
//! path parameters are 400s with codes of their own, unknown routes are 404 `route_not_found`.
//!
//! # The scope probe on create
//!
//! A connection is created `pending_probe`: nothing is sent for it until the scope probe passes.
//! [`AppState::with_connect_hook`] installs a [`ConnectHook`] that runs right after the
//! connection and its (encrypted) credentials are stored; `deskgate serve` installs
//! [`ProbeOnConnect`] ([`crate::probe::probe_connection`]), so the create answer carries the
//! probe's report in `probe_report` and a passing probe makes the connection `live`. Without a
//! hook (tests, or no credentials) the connection simply stays `pending_probe`.
//!
//! # Running connections
//!
//! Updating credentials, probing on demand, suspending and resuming act on a running
//! connection: [`AppState::with_control`] installs a [`ConnectionControl`] (`deskgate serve` and
//! `deskgate demo` install the supervisor, [`crate::gateway::Gateway`]), which also attaches a
//! connection as soon as it is created. Without one (tests of the API alone) those routes answer
//! 503 `no_gateway`.

pub(crate) mod dashboard;
mod error;
mod metrics;
mod view;
pub mod edge_ingest;

pub use dashboard::{SESSION_COOKIE, SESSION_MS, session_valid, session_value};
pub use error::ApiError;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::bindings::{Action, Assignee, Resolution, TicketStatus};
use crate::clock::SharedClock;
use crate::config::Secret;
use crate::ingest::webhook::{StoreRoutes, WebhookIngestor, WebhookSigning, webhook_routes};
use crate::ingest::{IngestMetrics, Inbox};
use crate::outbox::{ActionRecord, Outbox, OutboxConfig};
use crate::runtime::Adapter;
use crate::status::{SharedStatus, StatusRegistry};
use crate::store::{
    Connection, ConnectionState, CredentialSecret, Expect, NewConnection, Pull, SharedStore,
};

/// The OpenAPI 3.1 description of this API, served at `GET /openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Every route the API serves, as (method, path). [`app`] builds the router from this list (so it
/// serves nothing else), and `host/tests/api.rs` checks the list against [`OPENAPI`] and that the
/// router answers each entry, and only the listed methods on each path.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/"),
    ("POST", "/login"),
    ("POST", "/logout"),
    ("GET", "/v1/status"),
    ("GET", "/v1/connections"),
    ("POST", "/v1/connections"),
    ("GET", "/v1/connections/{id}"),
    ("DELETE", "/v1/connections/{id}"),
    ("PUT", "/v1/connections/{id}/credentials"),
    ("PUT", "/v1/connections/{id}/webhook-secret"),
    ("DELETE", "/v1/connections/{id}/webhook-secret"),
    ("POST", "/v1/connections/{id}/probe"),
    ("POST", "/v1/connections/{id}/suspend"),
    ("POST", "/v1/connections/{id}/resume"),
    ("POST", "/v1/connections/{id}/actions"),
    ("GET", "/v1/actions/{id}"),
    ("GET", "/v1/events"),
    ("POST", "/v1/events/ack"),
    ("GET", "/v1/alerts"),
    ("POST", "/v1/alerts/{id}/ack"),
    ("POST", "/webhooks/{connection}"),
    ("POST", "/v1/ingest/{connection}"),
];

/// The longest long-poll a client may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// Runs when a connection is created (the scope probe's integration point): gets the new
/// connection, returns the report to store and answer with, and may move the connection's state.
#[async_trait]
pub trait ConnectHook: Send + Sync {
    /// Probe `connection` (its credentials are stored already).
    ///
    /// # Errors
    /// An [`ApiError`] for the create request; the connection stays created (`pending_probe`).
    async fn connected(
        &self,
        store: &SharedStore,
        connection: &Connection,
        now: crate::clock::Millis,
    ) -> Result<Option<Value>, ApiError>;
}

/// What the API asks of the running gateway (see the module docs). Implemented by
/// [`crate::gateway::Gateway`].
#[async_trait]
pub trait ConnectionControl: Send + Sync {
    /// A connection was created (its credentials, if any, are stored): start running it, which
    /// probes a `pending_probe` one.
    ///
    /// # Errors
    /// An [`ApiError`] for the create request; the connection stays created.
    async fn connected(&self, id: &str) -> Result<(), ApiError>;
    /// A connection was deleted: stop running it.
    async fn deleted(&self, id: &str);
    /// Run the scope probe now; returns its report (also stored on the connection).
    ///
    /// # Errors
    /// Unknown connection, no credentials, platform unreachable.
    async fn probe(&self, id: &str) -> Result<Value, ApiError>;
    /// Replace the credentials: validated with who-am-i first (refused ones change nothing),
    /// then probed; a suspended connection whose probe passes resumes. Returns the probe report.
    ///
    /// # Errors
    /// Unknown connection, credentials refused, platform unreachable.
    async fn update_credentials(
        &self,
        id: &str,
        secret: CredentialSecret,
        expires_at: Option<crate::clock::Millis>,
    ) -> Result<Value, ApiError>;
    /// Suspend by an operator's decision. Returns false if it was already suspended.
    ///
    /// # Errors
    /// Unknown connection, store failure.
    async fn suspend(&self, id: &str, reason: &str) -> Result<bool, ApiError>;
    /// Resume after checking the stored credential works. Returns false if it was not suspended.
    ///
    /// # Errors
    /// Unknown connection; 409 `credentials_invalid` when the platform refuses the credential.
    async fn resume(&self, id: &str) -> Result<bool, ApiError>;
}

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: SharedStore,
    clock: SharedClock,
    api_token: Secret,
    outbox: Outbox,
    inbox: Arc<Inbox>,
    routes: Arc<StoreRoutes>,
    ingestor: Arc<WebhookIngestor>,
    ingest_metrics: Arc<IngestMetrics>,
    adapters: BTreeMap<String, Arc<Adapter>>,
    connect_hook: Option<Arc<dyn ConnectHook>>,
    status: SharedStatus,
    control: Option<Arc<dyn ConnectionControl>>,
    replica: Option<Replica>,
}

/// Which replica this is, and its shared budgets (readiness and metrics report both).
#[derive(Clone)]
struct Replica {
    id: String,
    shared: Option<Arc<crate::budget::SharedBudgets>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("store", &self.inner.store)
            .field("adapters", &self.inner.adapters.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State over `store` with these adapters, answering to `api_token`.
    pub fn new(
        store: SharedStore,
        clock: SharedClock,
        api_token: Secret,
        adapters: impl IntoIterator<Item = Arc<Adapter>>,
    ) -> Self {
        let adapters: BTreeMap<String, Arc<Adapter>> =
            adapters.into_iter().map(|a| (a.id().to_owned(), a)).collect();
        let inbox = Arc::new(Inbox::new(store.clone()));
        let routes = Arc::new(StoreRoutes::new(store.clone(), adapters.values().cloned()));
        let ingest_metrics = Arc::new(IngestMetrics::default());
        let ingestor = Arc::new(
            WebhookIngestor::new(routes.clone(), inbox.clone(), clock.clone()).with_metrics(ingest_metrics.clone()),
        );
        let outbox = Outbox::new(store.clone(), clock.clone(), OutboxConfig::default());
        Self {
            inner: Arc::new(Inner {
                store,
                clock,
                api_token,
                outbox,
                inbox,
                routes,
                ingestor,
                ingest_metrics,
                adapters,
                connect_hook: None,
                replica: None,
                status: StatusRegistry::shared(),
                control: None,
            }),
        }
    }

    /// Run `hook` (the scope probe) on every connection created through the API.
    ///
    /// # Panics
    /// If called after the state was cloned.
    pub fn with_connect_hook(mut self, hook: Arc<dyn ConnectHook>) -> Self {
        Arc::get_mut(&mut self.inner).expect("set the hook before sharing the state").connect_hook = Some(hook);
        self
    }

    /// Name this replica (`replica_id`) and its shared budgets: `/readyz` then reports the
    /// shared budget backend next to the store, and `/metrics` carries the replica id.
    ///
    /// # Panics
    /// If called after the state was cloned.
    pub fn with_replica(mut self, replica_id: &str, shared: Option<Arc<crate::budget::SharedBudgets>>) -> Self {
        Arc::get_mut(&mut self.inner).expect("set the replica before sharing the state").replica =
            Some(Replica { id: replica_id.to_owned(), shared });
        self
    }

    /// Read live figures (budget gates, credential timers, counters) from `status`, the registry
    /// the supervisor registers each connection's parts into (see [`crate::status`]). Without
    /// this, the state holds an empty registry of its own ([`AppState::status`]).
    ///
    /// # Panics
    /// If called after the state was cloned.
    pub fn with_status(mut self, status: SharedStatus) -> Self {
        Arc::get_mut(&mut self.inner).expect("set the status registry before sharing the state").status = status;
        self
    }

    /// The live status registry the API reads (and counts duplicate submissions into).
    pub fn status(&self) -> &SharedStatus {
        &self.inner.status
    }

    /// Act on running connections through `control` (see the module docs).
    ///
    /// # Panics
    /// If called after the state was cloned.
    pub fn with_control(mut self, control: Arc<dyn ConnectionControl>) -> Self {
        Arc::get_mut(&mut self.inner).expect("set the control before sharing the state").control = Some(control);
        self
    }

    /// The store.
    pub fn store(&self) -> &SharedStore {
        &self.inner.store
    }

    /// The inbox writer (webhooks and sweeps must write through it, so long-polls wake).
    pub fn inbox(&self) -> &Arc<Inbox> {
        &self.inner.inbox
    }

    /// The webhook routes: where webhook secrets are stored ([`StoreRoutes::store_secret`]) and
    /// read (through a short cache).
    pub fn webhook_routes(&self) -> &Arc<StoreRoutes> {
        &self.inner.routes
    }

    /// Ingestion counters.
    pub fn ingest_metrics(&self) -> &Arc<IngestMetrics> {
        &self.inner.ingest_metrics
    }
}

/// The whole API as one router: see the module docs. Every route comes from [`ROUTES`] (its
/// handler from [`handler`]), so the router can serve nothing the list (and, by the API tests, the
/// OpenAPI document) does not name.
pub fn app(state: AppState) -> Router {
    let mut open = Router::new();
    let mut authed = Router::new();
    let mut webhooks = false;
    for &(method, path) in ROUTES {
        if path == WEBHOOK_ROUTE {
            webhooks = true;
            continue;
        }
        let Some((access, route)) = handler(method, path) else {
            panic!("api::ROUTES lists {method} {path}, but api::handler has no handler for it: add one");
        };
        match access {
            Access::Open => open = open.route(path, route),
            Access::Token => authed = authed.route(path, route),
        }
    }
    let router = open
        .merge(authed.route_layer(middleware::from_fn_with_state(state.clone(), require_token)))
        .with_state(state.clone());
    // The webhook route runs on the ingestor's own state (the edge's routes share it).
    let router = if webhooks { router.merge(webhook_routes(state.inner.ingestor.clone())) } else { router };
    router.fallback(route_not_found).method_not_allowed_fallback(method_not_allowed)
}

/// The webhook receiver's entry in [`ROUTES`]; [`webhook_routes`] serves exactly this path.
const WEBHOOK_ROUTE: &str = "/webhooks/{connection}";

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Anyone: health, the document, the dashboard's own login, ingestion (signed by platforms).
    Open,
    /// Bearer token required.
    Token,
}

/// The handler of one entry of [`ROUTES`], or `None` for a pair it does not list.
fn handler(method: &str, path: &str) -> Option<(Access, axum::routing::MethodRouter<AppState>)> {
    use Access::{Open, Token};
    use axum::routing::{delete, put};
    Some(match (method, path) {
        ("GET", "/healthz") => (Open, get(healthz)),
        ("GET", "/readyz") => (Open, get(readyz)),
        ("GET", "/openapi.json") => (Open, get(openapi)),
        ("GET", "/") => (Open, get(dashboard::page)),
        ("POST", "/login") => (Open, post(dashboard::login)),
        ("POST", "/logout") => (Open, post(dashboard::logout)),
        ("POST", "/v1/ingest/{connection}") => (Open, post(edge_ingest::ingest)),
        ("GET", "/metrics") => (Token, get(metrics)),
        ("GET", "/v1/status") => (Token, get(status)),
        ("GET", "/v1/connections") => (Token, get(list_connections)),
        ("POST", "/v1/connections") => (Token, post(create_connection)),
        ("GET", "/v1/connections/{id}") => (Token, get(get_connection)),
        ("DELETE", "/v1/connections/{id}") => (Token, delete(delete_connection)),
        ("PUT", "/v1/connections/{id}/credentials") => (Token, put(put_credentials)),
        ("PUT", "/v1/connections/{id}/webhook-secret") => (Token, put(put_webhook_secret)),
        ("DELETE", "/v1/connections/{id}/webhook-secret") => (Token, delete(delete_webhook_secret)),
        ("POST", "/v1/connections/{id}/probe") => (Token, post(probe_connection)),
        ("POST", "/v1/connections/{id}/suspend") => (Token, post(suspend_connection)),
        ("POST", "/v1/connections/{id}/resume") => (Token, post(resume_connection)),
        ("POST", "/v1/connections/{id}/actions") => (Token, post(submit_action)),
        ("GET", "/v1/actions/{id}") => (Token, get(get_action)),
        ("GET", "/v1/events") => (Token, get(pull_events)),
        ("POST", "/v1/events/ack") => (Token, post(ack_events)),
        ("GET", "/v1/alerts") => (Token, get(list_alerts)),
        ("POST", "/v1/alerts/{id}/ack") => (Token, post(ack_alert)),
        _ => return None,
    })
}

async fn route_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "route_not_found",
        "no such route: GET /openapi.json lists the API's routes",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method: GET /openapi.json lists each route's methods",
    )
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return ApiError::unauthorized("missing `Authorization: Bearer <token>` header: send the gateway's API token")
            .into_response();
    };
    let given = value.as_bytes().strip_prefix(b"Bearer ").unwrap_or(b"");
    let expected = state.inner.api_token.expose().as_bytes();
    // Constant time in the token's content; only its length can leak, and that is public.
    if given.is_empty() || !bool::from(given.ct_eq(expected)) {
        return ApiError::unauthorized(
            "the bearer token is not the gateway's API token: check DESKGATE_API_TOKEN (or api_token) in its config",
        )
        .into_response();
    }
    next.run(request).await
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(v)| v).map_err(|r| {
        let code = if r.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE { "unsupported_media_type" } else { "invalid_json" };
        ApiError::new(
            if code == "invalid_json" { StatusCode::BAD_REQUEST } else { r.status() },
            code,
            format!("{}; see the request schema in /openapi.json", r.body_text()),
        )
    })
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v).map_err(|r| ApiError::bad_request("invalid_query", r.body_text()))
}

fn path_id(p: Result<Path<i64>, PathRejection>, what: &str) -> Result<i64, ApiError> {
    p.map(|Path(v)| v).map_err(|_| ApiError::bad_request("invalid_path", format!("the {what} id must be an integer")))
}

// ---------------------------------------------------------------------------------------------
// Health, readiness, metrics, the document

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.inner.store.schema_version().await {
        Ok(v) => {
            let mut body = json!({ "status": "ready", "schema_version": v, "store": format!("{:?}", state.inner.store.backend()).to_lowercase() });
            if let Some(r) = &state.inner.replica {
                body["replica"] = json!(r.id);
                // A replica whose shared budgets are unreachable still works on its conservative
                // share: it stays ready and says so.
                body["budgets"] = match &r.shared {
                    None => json!({ "mode": "local" }),
                    Some(sh) => {
                        let up = sh.check(state.inner.clock.now_ms()).await.is_ok();
                        let st = sh.status();
                        json!({ "mode": if up { "shared" } else { "fallback" }, "backend": st.backend, "up": up,
                                "outages": st.outages, "last_error": st.last_error, "replicas": st.replicas })
                    }
                };
            }
            Json(body).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "readiness: store unreachable");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", "the store is unreachable")
                .into_response()
        }
    }
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    use std::sync::atomic::Ordering::Relaxed;
    let s = &state.inner;
    let view = view::build(&s.store, &s.routes, &s.status.snapshot(), s.clock.now_ms()).await?;
    // In-flight outbox entries by state, gateway-wide (kept from the first metrics set).
    let mut in_flight: BTreeMap<&'static str, u64> =
        ["pending", "sent", "ambiguous"].into_iter().map(|k| (k, 0)).collect();
    for c in &view.connections {
        for (k, n) in &c.queues.outbox {
            *in_flight.entry(k).or_default() += n;
        }
    }
    let open_alerts = s.store.list_alerts(None, false, 10_000).await?;
    let extra = metrics::Extra {
        in_flight,
        open_alerts: &open_alerts,
        adapters: s
            .adapters
            .iter()
            .map(|(id, a)| (id.clone(), a.stats().calls.load(Relaxed), a.stats().call_errors.load(Relaxed)))
            .collect(),
        ingest: s.ingest_metrics.snapshot(),
    };
    let mut out = metrics::render(&view, &extra);
    use std::fmt::Write as _;
    if let Some(r) = &s.replica {
        let now = s.clock.now_ms();
        // Outbox entries leased to this replica's workers (owner `{replica}/{connection}`).
        let mut claims: BTreeMap<String, u64> = BTreeMap::new();
        let mut after_id = 0;
        loop {
            let page = s
                .store
                .list_actions(&crate::store::ActionQuery { in_flight_only: true, after_id, limit: 500, ..Default::default() })
                .await?;
            for e in &page {
                if let Some(l) = &e.lease
                    && l.until > now
                    && l.owner.strip_prefix(r.id.as_str()).and_then(|rest| rest.strip_prefix('/')) == Some(e.connection_id.as_str())
                {
                    *claims.entry(e.connection_id.clone()).or_default() += 1;
                }
            }
            match page.last() {
                Some(last) if page.len() == 500 => after_id = last.id,
                _ => break,
            }
        }
        let mode = match &r.shared {
            Some(sh) if sh.status().up => "shared",
            Some(_) => "fallback",
            None => "local",
        };
        let figures = metrics::ReplicaFigures { id: &r.id, mode, claims, leases: s.status.leases_held(now) };
        out.push_str(&metrics::render_replica(&view, &figures));
        if let Some(sh) = &r.shared {
            let st = sh.status();
            out.push_str("# HELP deskgate_shared_budget_up Whether the shared budget backend answered the last call.\n# TYPE deskgate_shared_budget_up gauge\n");
            let _ = writeln!(out, "deskgate_shared_budget_up{{replica=\"{}\"}} {}", metrics::label(&r.id), u8::from(st.up));
            out.push_str("# HELP deskgate_shared_budget_outages_total Outages of the shared budget backend seen by this replica.\n# TYPE deskgate_shared_budget_outages_total counter\n");
            let _ = writeln!(out, "deskgate_shared_budget_outages_total{{replica=\"{}\"}} {}", metrics::label(&r.id), st.outages);
        }
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response())
}

/// `GET /v1/status`: the operator's view as JSON (what `deskgate status` prints and the dashboard
/// renders).
async fn status(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let s = &state.inner;
    let view = view::build(&s.store, &s.routes, &s.status.snapshot(), s.clock.now_ms()).await?;
    Ok(Json(serde_json::to_value(view).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("the status could not be encoded: {e}")))?))
}

// ---------------------------------------------------------------------------------------------
// Connections

/// `POST /v1/connections` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateConnection {
    id: String,
    platform: String,
    base_url: String,
    display_name: Option<String>,
    plan: Option<String>,
    #[serde(default)]
    settings: BTreeMap<String, String>,
    admin_contact_url: Option<String>,
    credentials: Option<CredentialSecret>,
    /// Seconds until the OAuth access token in `credentials` expires, if it does.
    expires_in: Option<u64>,
    /// The platform's webhook signing secret (stored sealed, never answered).
    webhook_secret: Option<Secret>,
    /// Accept webhook deliveries that carry no signature at all.
    #[serde(default)]
    allow_unsigned_webhooks: bool,
}

/// The longest webhook secret accepted, in bytes (platforms' are 32-64 characters).
pub const MAX_WEBHOOK_SECRET_BYTES: usize = 1024;

/// A webhook secret given in field `field` as it may be stored: not empty, not only whitespace,
/// not absurdly long. The message never repeats the value.
fn check_webhook_secret(field: &str, secret: &Secret, remedy: &str) -> Result<(), ApiError> {
    let s = secret.expose();
    if s.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid_webhook_secret",
            format!(
                "`{field}` is empty or only whitespace: give the webhook signing secret shown in the platform's \
                 admin UI (Zendesk's signing secret, Intercom's client secret, the token in Freshdesk's custom header){remedy}"
            ),
        ));
    }
    if s.len() > MAX_WEBHOOK_SECRET_BYTES {
        return Err(ApiError::bad_request(
            "invalid_webhook_secret",
            format!(
                "`{field}` is {} bytes, more than the {MAX_WEBHOOK_SECRET_BYTES} a webhook secret may have: \
                 check that the field holds the signing secret alone",
                s.len()
            ),
        ));
    }
    Ok(())
}

/// A connection as the API shows it. Its webhook authentication appears as
/// `webhook_secret_set` and `allow_unsigned_webhooks` only: never the secret.
fn connection_json(c: &Connection, has_credentials: Option<bool>, webhooks: WebhookSigning) -> Value {
    let mut v = json!({
        "id": c.id,
        "platform": c.platform,
        "display_name": c.display_name,
        "plan": c.plan,
        "settings": c.settings,
        "state": c.state.name(),
        // Where alerts go, shown without a password or query values (a token often rides there).
        "admin_contact_url": c.admin_contact_url.as_deref().map(crate::config::redact_url),
        "probe_report": c.probe_report,
        "webhook_secret_set": webhooks.secret_set,
        "allow_unsigned_webhooks": webhooks.allow_unsigned,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
    });
    if let ConnectionState::Suspended { reason, kind } = &c.state {
        v["suspended"] = json!({ "reason": reason, "kind": kind });
    }
    if let Some(h) = has_credentials {
        v["has_credentials"] = json!(h);
    }
    v
}

async fn create_connection(
    State(state): State<AppState>,
    body: Result<Json<CreateConnection>, JsonRejection>,
) -> Result<Response, ApiError> {
    let body = json_body(body)?;
    let s = &state.inner;
    if !crate::config::valid_connection_id(&body.id) {
        return Err(ApiError::bad_request(
            "invalid_connection",
            "`id` may hold only lowercase letters, digits, `-` and `_` (1-64 characters)",
        ));
    }
    let Some(adapter) = s.adapters.get(&body.platform) else {
        let known: Vec<&str> = s.adapters.keys().map(String::as_str).collect();
        return Err(ApiError::bad_request(
            "unknown_platform",
            format!("no adapter is loaded for platform `{}`: use one of {}", body.platform, known.join(", ")),
        ));
    };
    // A plan the adapter does not declare has no rate budget: the connection would never start.
    if let Some((problem, fix)) = crate::config::unknown_plan(body.plan.as_deref(), adapter) {
        return Err(ApiError::bad_request("unknown_plan", format!("`plan`: {problem}; {fix}")));
    }
    let base_url = crate::config::check_http_url(&body.base_url)
        .map_err(|e| ApiError::bad_request("invalid_connection", format!("`base_url`: {e}")))?;
    if let Some(u) = &body.admin_contact_url {
        crate::config::check_http_url(u)
            .map_err(|e| ApiError::bad_request("invalid_connection", format!("`admin_contact_url`: {e}")))?;
    }
    if let Some(secret) = &body.webhook_secret {
        check_webhook_secret("webhook_secret", secret, ", or leave the field out")?;
    }
    let mut settings: serde_json::Map<String, Value> =
        body.settings.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
    settings.insert("base_url".into(), Value::String(base_url));
    let new = NewConnection {
        id: body.id.clone(),
        platform: body.platform,
        display_name: body.display_name.unwrap_or_else(|| body.id.clone()),
        plan: body.plan,
        settings: Value::Object(settings),
        admin_contact_url: body.admin_contact_url,
    };
    let now = s.clock.now_ms();
    let mut conn = s.store.create_connection(&new, now).await?;
    let has_credentials = body.credentials.is_some();
    if let Some(secret) = &body.credentials {
        let expires_at = body.expires_in.map(|secs| now.saturating_add(i64::try_from(secs).unwrap_or(i64::MAX / 2000) * 1000));
        s.store.put_credential(&conn.id, secret, expires_at, Expect::Absent, now).await?;
    }
    // Before the connection is attached, so its first webhook already verifies.
    if body.webhook_secret.is_some() || body.allow_unsigned_webhooks {
        let secret = body.webhook_secret.as_ref().map(|s| s.expose().as_bytes());
        s.routes.store_secret(&conn.id, secret, body.allow_unsigned_webhooks, now).await?;
    }
    tracing::info!(connection = %conn.id, platform = %conn.platform, "connection created");
    if let Some(control) = &s.control {
        // Attaching probes a connection with credentials; its report lands on the connection.
        control.connected(&conn.id).await?;
        conn = s.store.get_connection(&conn.id).await?.unwrap_or(conn);
    } else if let Some(hook) = &s.connect_hook {
        // The hook stores its report (and may move the connection live); store a report it
        // only returned (a probe that could not run) so GET shows it too.
        if let Some(report) = hook.connected(&s.store, &conn, s.clock.now_ms()).await? {
            let stored = s.store.get_connection(&conn.id).await?.unwrap_or(conn);
            conn = if stored.probe_report.is_none() {
                s.store.set_probe_report(&stored.id, &report, s.clock.now_ms()).await?
            } else {
                stored
            };
        }
    }
    let webhooks = s.routes.signing(&conn.id).await?;
    Ok((StatusCode::CREATED, Json(connection_json(&conn, Some(has_credentials), webhooks))).into_response())
}

async fn list_connections(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let conns = state.inner.store.list_connections(false).await?;
    let mut out = Vec::with_capacity(conns.len());
    for c in &conns {
        out.push(connection_json(c, None, state.inner.routes.signing(&c.id).await?));
    }
    Ok(Json(json!({ "connections": out })))
}

async fn get_connection(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let s = &state.inner;
    let conn = s.store.get_connection(&id).await?.ok_or_else(|| ApiError::connection_not_found(&id))?;
    let cred = s.store.get_credential(&id).await?;
    let mut v = connection_json(&conn, Some(cred.is_some()), s.routes.signing(&id).await?);
    if let Some(c) = cred {
        v["credentials"] = json!({
            "scheme": c.secret.scheme(),
            "version": c.version,
            "expires_at": c.expires_at,
            "updated_at": c.updated_at,
        });
    }
    v["inbox_pending"] = json!(s.store.inbox_pending(&id).await?);
    Ok(Json(v))
}

async fn delete_connection(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let s = &state.inner;
    match s.store.get_connection(&id).await? {
        None => return Err(ApiError::connection_not_found(&id)),
        Some(c) if c.state == ConnectionState::Deleted => return Err(ApiError::connection_not_found(&id)),
        Some(_) => {}
    }
    let conn = s.store.set_connection_state(&id, &ConnectionState::Deleted, s.clock.now_ms()).await?;
    s.routes.invalidate(&id);
    if let Some(control) = &s.control {
        control.deleted(&id).await;
    }
    // Its live figures and counters go with it (the supervisor has stopped its workers).
    s.status.forget(&id);
    tracing::info!(connection = %id, "connection deleted; credentials and webhook secret erased");
    Ok(Json(connection_json(&conn, Some(false), WebhookSigning::default())))
}

fn control(state: &AppState) -> Result<&Arc<dyn ConnectionControl>, ApiError> {
    state.inner.control.as_ref().ok_or_else(|| {
        ApiError::unavailable(
            "no_gateway",
            "this API server runs without the gateway's workers, so it cannot act on connections: use `deskgate serve`",
        )
    })
}

async fn connection_answer(state: &AppState, id: &str, extra: Option<(&str, Value)>) -> Result<Json<Value>, ApiError> {
    let conn = state.inner.store.get_connection(id).await?.ok_or_else(|| ApiError::connection_not_found(id))?;
    let mut v = connection_json(&conn, None, state.inner.routes.signing(id).await?);
    if let Some((k, x)) = extra {
        v[k] = x;
    }
    Ok(Json(v))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutCredentials {
    credentials: CredentialSecret,
    /// Seconds until the OAuth access token expires, if it does.
    expires_in: Option<u64>,
}

async fn put_credentials(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<PutCredentials>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = json_body(body)?;
    let control = control(&state)?;
    let now = state.inner.clock.now_ms();
    let expires_at = body.expires_in.map(|secs| now.saturating_add(i64::try_from(secs).unwrap_or(i64::MAX / 2000) * 1000));
    let report = control.update_credentials(&id, body.credentials, expires_at).await?;
    tracing::info!(connection = %id, "credentials updated");
    connection_answer(&state, &id, Some(("probe", report))).await
}

/// `PUT /v1/connections/{id}/webhook-secret` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutWebhookSecret {
    /// The platform's signing secret (stored sealed, never answered).
    secret: Secret,
    /// Accept deliveries that carry no signature at all.
    #[serde(default)]
    allow_unsigned: bool,
}

/// Set or rotate a connection's webhook secret: stored sealed, in force in this process at once
/// (other replicas within [`crate::ingest::webhook::SECRET_CACHE_TTL`]).
async fn put_webhook_secret(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<PutWebhookSecret>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = json_body(body)?;
    let s = &state.inner;
    check_webhook_secret(
        "secret",
        &body.secret,
        &format!("; to stop verifying signatures, DELETE /v1/connections/{id}/webhook-secret instead"),
    )?;
    let now = s.clock.now_ms();
    s.routes.store_secret(&id, Some(body.secret.expose().as_bytes()), body.allow_unsigned, now).await?;
    tracing::info!(connection = %id, allow_unsigned = body.allow_unsigned, "webhook secret set");
    connection_answer(&state, &id, None).await
}

/// Clear a connection's webhook secret (and `allow_unsigned`): signed deliveries are then
/// answered 503 `no-secret`, unsigned ones 401, until a secret is set again.
async fn delete_webhook_secret(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let s = &state.inner;
    s.routes.store_secret(&id, None, false, s.clock.now_ms()).await?;
    tracing::info!(connection = %id, "webhook secret cleared");
    connection_answer(&state, &id, None).await
}

async fn probe_connection(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let report = control(&state)?.probe(&id).await?;
    Ok(Json(json!({ "connection": id, "report": report })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SuspendBody {
    reason: String,
}

async fn suspend_connection(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<SuspendBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = json_body(body)?;
    if body.reason.trim().is_empty() {
        return Err(ApiError::bad_request("invalid_reason", "`reason` is empty: say why, it is shown on the dashboard and sent to the app"));
    }
    let changed = control(&state)?.suspend(&id, body.reason.trim()).await?;
    connection_answer(&state, &id, Some(("changed", json!(changed)))).await
}

async fn resume_connection(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let changed = control(&state)?.resume(&id).await?;
    connection_answer(&state, &id, Some(("changed", json!(changed)))).await
}

// ---------------------------------------------------------------------------------------------
// Actions

/// A ticket status as the API spells it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ApiStatus {
    New,
    Open,
    Pending,
    OnHold,
    Solved,
    Closed,
}

impl From<ApiStatus> for TicketStatus {
    fn from(s: ApiStatus) -> Self {
        match s {
            ApiStatus::New => TicketStatus::New,
            ApiStatus::Open => TicketStatus::Open,
            ApiStatus::Pending => TicketStatus::Pending,
            ApiStatus::OnHold => TicketStatus::OnHold,
            ApiStatus::Solved => TicketStatus::Solved,
            ApiStatus::Closed => TicketStatus::Closed,
        }
    }
}

impl From<TicketStatus> for ApiStatus {
    fn from(s: TicketStatus) -> Self {
        match s {
            TicketStatus::New => ApiStatus::New,
            TicketStatus::Open => ApiStatus::Open,
            TicketStatus::Pending => ApiStatus::Pending,
            TicketStatus::OnHold => ApiStatus::OnHold,
            TicketStatus::Solved => ApiStatus::Solved,
            TicketStatus::Closed => ApiStatus::Closed,
        }
    }
}

/// An assignee as the API spells it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiAssignee {
    #[serde(default)]
    agent_id: Option<String>,
    #[serde(default)]
    group_id: Option<String>,
}

/// An action as the API spells it: `{"type": "reply", "body": "..."}` and so on (openapi.json,
/// schema `Action`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ApiAction {
    Reply {
        body: String,
    },
    SetStatus {
        status: ApiStatus,
    },
    AddTags {
        tags: Vec<String>,
    },
    Assign {
        #[serde(default)]
        agent_id: Option<String>,
        #[serde(default)]
        group_id: Option<String>,
    },
    Resolve {
        reply: String,
        status: ApiStatus,
        #[serde(default)]
        tags: Vec<String>,
        #[serde(default)]
        assignee: Option<ApiAssignee>,
    },
}

impl ApiAction {
    fn into_action(self) -> Result<Action, ApiError> {
        let invalid = |m: &str| ApiError::bad_request("invalid_action", m.to_string());
        Ok(match self {
            ApiAction::Reply { body } if body.trim().is_empty() => return Err(invalid("a reply's `body` is empty")),
            ApiAction::Reply { body } => Action::Reply(body),
            ApiAction::SetStatus { status } => Action::SetStatus(status.into()),
            ApiAction::AddTags { tags } if tags.is_empty() => return Err(invalid("`tags` is empty: give at least one tag")),
            ApiAction::AddTags { tags } => Action::AddTags(tags),
            ApiAction::Assign { agent_id: None, group_id: None } => {
                return Err(invalid("an assign action needs `agent_id`, `group_id` or both"));
            }
            ApiAction::Assign { agent_id, group_id } => Action::Assign(Assignee { agent_id, group_id }),
            ApiAction::Resolve { reply, .. } if reply.trim().is_empty() => {
                return Err(invalid("a resolution's `reply` is empty"));
            }
            ApiAction::Resolve { reply, status, tags, assignee } => Action::Resolve(Resolution {
                reply,
                status: status.into(),
                tags,
                assignee: assignee.map(|a| Assignee { agent_id: a.agent_id, group_id: a.group_id }),
            }),
        })
    }

    fn from_action(a: &Action) -> Self {
        match a.clone() {
            Action::Reply(body) => ApiAction::Reply { body },
            Action::SetStatus(s) => ApiAction::SetStatus { status: s.into() },
            Action::AddTags(tags) => ApiAction::AddTags { tags },
            Action::Assign(a) => ApiAction::Assign { agent_id: a.agent_id, group_id: a.group_id },
            Action::Resolve(r) => ApiAction::Resolve {
                reply: r.reply,
                status: r.status.into(),
                tags: r.tags,
                assignee: r.assignee.map(|a| ApiAssignee { agent_id: a.agent_id, group_id: a.group_id }),
            },
        }
    }
}

/// `POST /v1/connections/{id}/actions` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitAction {
    ticket_id: String,
    action: ApiAction,
}

fn action_json(r: &ActionRecord) -> Value {
    json!({
        "id": r.id,
        "connection_id": r.connection_id,
        "ticket_id": r.ticket_id,
        "action": ApiAction::from_action(&r.action),
        "idempotency_key": r.idempotency_key,
        "app_key": r.app_key,
        "state": r.state,
        "detail": r.detail,
        "attempts": r.attempts,
        "result": r.result,
        "duplicate": r.duplicate,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
    })
}

async fn submit_action(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Json<SubmitAction>, JsonRejection>,
) -> Result<Response, ApiError> {
    let body = json_body(body)?;
    let s = &state.inner;
    if body.ticket_id.trim().is_empty() {
        return Err(ApiError::bad_request("invalid_action", "`ticket_id` is empty"));
    }
    let app_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v.to_str().ok().map(str::trim).filter(|k| !k.is_empty() && k.len() <= 255);
            Some(k.ok_or_else(|| {
                ApiError::bad_request("invalid_idempotency_key", "Idempotency-Key must be 1-255 visible ASCII characters")
            })?)
        }
    };
    let action = body.action.into_action()?;
    match s.store.get_connection(&id).await? {
        Some(c) if c.state != ConnectionState::Deleted => {}
        _ => return Err(ApiError::connection_not_found(&id)),
    }
    let rec = s.outbox.submit(&id, &body.ticket_id, &action, app_key).await?;
    if rec.duplicate {
        s.status.counters(&id).record_duplicate_submission();
    }
    tracing::info!(connection = %id, ticket = %body.ticket_id, action = rec.id, duplicate = rec.duplicate, "action accepted");
    Ok((StatusCode::ACCEPTED, Json(action_json(&rec))).into_response())
}

async fn get_action(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = path_id(id, "action")?;
    let s = &state.inner;
    let rec = s.outbox.get(id).await?.ok_or(crate::store::StoreError::ActionNotFound(id))?;
    let log = s.outbox.write_log(id).await?;
    let mut v = action_json(&rec);
    v["write_log"] = log
        .iter()
        .map(|l| {
            json!({
                "attempt": l.attempt,
                "sent_at": l.sent_at,
                "outcome": l.outcome.name(),
                "detail": l.detail,
                "recorded_at": l.recorded_at,
            })
        })
        .collect();
    Ok(Json(v))
}

// ---------------------------------------------------------------------------------------------
// Events

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    #[serde(default)]
    after: i64,
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    wait_ms: u64,
    connection_id: Option<String>,
}

async fn pull_events(
    State(state): State<AppState>,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let s = &state.inner;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request("invalid_query", "`limit` must be between 1 and 1000"));
    }
    let wait = Duration::from_millis(q.wait_ms).min(MAX_WAIT);
    let pull = Pull { after: q.after, limit, connection_id: q.connection_id, now: s.clock.now_ms() };
    let events = s.inbox.pull_wait(&pull, wait).await?;
    let next = events.last().map_or(q.after, |e| e.id);
    let events: Vec<Value> = events.iter().map(crate::ingest::push::event_json).collect();
    Ok(Json(json!({ "events": events, "next_cursor": next })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckEvents {
    through: i64,
    connection_id: Option<String>,
}

async fn ack_events(
    State(state): State<AppState>,
    body: Result<Json<AckEvents>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = json_body(body)?;
    let s = &state.inner;
    let n = s.store.ack_events_through(body.connection_id.as_deref(), body.through, s.clock.now_ms()).await?;
    Ok(Json(json!({ "acknowledged": n })))
}

// ---------------------------------------------------------------------------------------------
// Alerts

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertsQuery {
    connection_id: Option<String>,
    #[serde(default)]
    include_acked: bool,
    limit: Option<u32>,
}

async fn list_alerts(
    State(state): State<AppState>,
    q: Result<Query<AlertsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let alerts = state.inner.store.list_alerts(q.connection_id.as_deref(), q.include_acked, limit).await?;
    let alerts: Vec<Value> = alerts
        .iter()
        .map(|a| {
            json!({
                "id": a.id,
                "connection_id": a.connection_id,
                "kind": a.kind,
                "text": a.text,
                "detail": a.detail,
                "created_at": a.created_at,
                "delivered_at": a.delivered_at,
                "acked_at": a.acked_at,
            })
        })
        .collect();
    Ok(Json(json!({ "alerts": alerts })))
}

async fn ack_alert(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = path_id(id, "alert")?;
    let s = &state.inner;
    let newly = s.store.ack_alert(id, s.clock.now_ms()).await?;
    if !newly {
        // Either unknown or acknowledged already; only the first is an error.
        let known = s.store.list_alerts(None, true, 10_000).await?.iter().any(|a| a.id == id);
        if !known {
            return Err(crate::store::StoreError::AlertNotFound(id).into());
        }
    }
    Ok(Json(json!({ "id": id, "acknowledged": true, "already_acknowledged": !newly })))
}

// ---------------------------------------------------------------------------------------------
// The scope probe on create

/// The [`ConnectHook`] `deskgate serve` installs: runs [`crate::probe::probe_connection`] with the
/// stored credentials, which stores the report and moves a passing connection `live`. A probe
/// that cannot run (network, adapter fault) is reported as a failed probe; the connection stays
/// `pending_probe`.
#[derive(Debug)]
pub struct ProbeOnConnect {
    driver: crate::driver::Driver,
    adapters: BTreeMap<String, Arc<Adapter>>,
}

impl ProbeOnConnect {
    /// A hook probing through `driver` with these adapters.
    pub fn new(driver: crate::driver::Driver, adapters: impl IntoIterator<Item = Arc<Adapter>>) -> Self {
        Self { driver, adapters: adapters.into_iter().map(|a| (a.id().to_owned(), a)).collect() }
    }
}

/// The driver's credential for a stored secret under `adapter`'s auth schemes.
pub fn driver_credential(adapter: &Adapter, secret: &CredentialSecret) -> crate::driver::Credential {
    use crate::bindings::AuthScheme;
    use crate::driver::Credential;
    match secret {
        CredentialSecret::OAuth { access_token, .. } => Credential::Bearer(access_token.clone()),
        CredentialSecret::ApiKey { fields } => {
            if adapter.descriptor().auth.iter().any(|s| matches!(s, AuthScheme::Basic(_))) {
                Credential::Basic(fields.clone())
            } else {
                let tok = ["access_token", "token", "api_key"]
                    .iter()
                    .find_map(|k| fields.get(*k))
                    .or_else(|| fields.values().next())
                    .cloned()
                    .unwrap_or_default();
                Credential::Bearer(tok)
            }
        }
    }
}

/// Where and as whom requests for `conn` go, from its stored settings (`base_url`) and secret.
///
/// # Errors
/// A message naming what is missing.
pub fn target_for(adapter: &Adapter, conn: &Connection, secret: &CredentialSecret) -> Result<crate::driver::Target, String> {
    let base_url = conn
        .settings
        .get("base_url")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("connection `{}` has no base_url setting", conn.id))?
        .trim_end_matches('/')
        .to_string();
    let authorization = crate::driver::authorization(&adapter.descriptor().auth, &driver_credential(adapter, secret))
        .map_err(|e| e.to_string())?;
    let settings = match &conn.settings {
        Value::Object(m) => m
            .iter()
            .filter(|(k, _)| k.as_str() != "base_url")
            .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
            .collect(),
        _ => Vec::new(),
    };
    Ok(crate::driver::Target {
        base_url,
        authorization: authorization.into(),
        connection: crate::bindings::Connection {
            id: conn.id.clone(),
            plan: conn.plan.clone().unwrap_or_default(),
            agent_id: None,
            settings,
        },
    })
}

#[async_trait]
impl ConnectHook for ProbeOnConnect {
    async fn connected(
        &self,
        store: &SharedStore,
        conn: &Connection,
        now: crate::clock::Millis,
    ) -> Result<Option<Value>, ApiError> {
        let Some(adapter) = self.adapters.get(&conn.platform) else { return Ok(None) };
        let Some(cred) = store.get_credential(&conn.id).await? else {
            return Ok(Some(json!({ "passed": false, "error": "no credentials: add them, then probe" })));
        };
        let target = match target_for(adapter, conn, &cred.secret) {
            Ok(t) => t,
            Err(e) => return Ok(Some(json!({ "passed": false, "error": e }))),
        };
        match crate::probe::probe_connection(store, &self.driver, adapter, &target, now).await {
            Ok(report) => Ok(Some(serde_json::to_value(report).unwrap_or(Value::Null))),
            Err(crate::probe::ProbeError::Store(e)) => Err(e.into()),
            Err(e) => {
                tracing::warn!(connection = %conn.id, error = %e, "scope probe could not run");
                Ok(Some(json!({ "passed": false, "error": e.to_string() })))
            }
        }
    }
}
