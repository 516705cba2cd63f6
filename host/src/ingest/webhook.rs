//! `POST /webhooks/{connection}`: verify, parse, deduplicate, persist, then answer 2xx.
//!
//! The order of the checks is the order of their cost to us: the size limit before anything is
//! read past it, the adapter's parse (pure, bounded by the runtime's deadline and memory cap)
//! before the signature check it makes possible, the signature (and replay window) before
//! anything is stored, and the 2xx only once the store has committed. A refusal stores nothing,
//! answers a 4xx `{"error":{"code","message"}}`, logs one warning line and counts one
//! [`IngestMetrics::webhooks_rejected`] by code. A store or adapter failure answers 5xx so the
//! platform retries the delivery later: nothing already accepted is lost, and nothing is
//! acknowledged before it is durable.
//!
//! A suspended connection (credentials broken) still receives webhooks: its events wait in the
//! inbox. Only a deleted or unknown connection is refused (404).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;

use super::{Candidate, IngestMetrics, IngestReport, Inbox, bump};
use crate::bindings::{Connection, SignatureAlgorithm};
use crate::clock::SharedClock;
use crate::runtime::Adapter;
use deskgate_ingest_core::{Algorithm, Reject, check_size, verify};

/// What the endpoint needs to know about a connection to take its webhooks.
#[derive(Clone)]
pub struct WebhookRoute {
    /// The connection's adapter.
    pub adapter: Arc<Adapter>,
    /// What the adapter is told about the connection.
    pub connection: Connection,
    /// The platform id stored with each event.
    pub platform: String,
    /// The webhook signing secret (Zendesk signing secret, Intercom client secret, the Freshdesk
    /// custom-header token). Never logged.
    pub secret: Vec<u8>,
    /// Accept deliveries that carry no signature at all (platforms or setups that cannot sign).
    /// A delivery that carries a bad signature is refused either way.
    pub allow_unsigned: bool,
}

impl std::fmt::Debug for WebhookRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookRoute")
            .field("adapter", &self.adapter.id())
            .field("connection", &self.connection.id)
            .field("platform", &self.platform)
            .field("secret", &"<redacted>")
            .field("allow_unsigned", &self.allow_unsigned)
            .finish()
    }
}

/// Finds a connection's [`WebhookRoute`]. The API server implements it over the store and the
/// adapter runtime; [`StaticRoutes`] is a fixed table.
#[async_trait]
pub trait RouteLookup: Send + Sync {
    /// The route of `connection_id`; `None` for an unknown or deleted connection.
    ///
    /// # Errors
    /// A message when the lookup itself failed (the store is down): the delivery is answered
    /// 503 and the platform retries.
    async fn route(&self, connection_id: &str) -> Result<Option<WebhookRoute>, String>;
}

/// A fixed table of routes (tests, single-tenant setups).
#[derive(Debug, Default)]
pub struct StaticRoutes {
    routes: RwLock<HashMap<String, WebhookRoute>>,
}

impl StaticRoutes {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add or replace a connection's route.
    pub fn insert(&self, connection_id: impl Into<String>, route: WebhookRoute) {
        self.routes.write().unwrap_or_else(|e| e.into_inner()).insert(connection_id.into(), route);
    }

    /// Remove a connection's route; later deliveries get 404.
    pub fn remove(&self, connection_id: &str) -> bool {
        self.routes.write().unwrap_or_else(|e| e.into_inner()).remove(connection_id).is_some()
    }
}

#[async_trait]
impl RouteLookup for StaticRoutes {
    async fn route(&self, connection_id: &str) -> Result<Option<WebhookRoute>, String> {
        Ok(self.routes.read().unwrap_or_else(|e| e.into_inner()).get(connection_id).cloned())
    }
}

/// A connection's webhook secret, as [`StoreRoutes`] holds it.
#[derive(Clone, Default)]
pub struct WebhookSecret {
    /// The secret (never logged).
    pub secret: Vec<u8>,
    /// Accept deliveries without any signature.
    pub allow_unsigned: bool,
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSecret").field("allow_unsigned", &self.allow_unsigned).finish_non_exhaustive()
    }
}

/// Routes from the store: a connection is known while it exists and is not deleted, *whatever
/// its state*: a suspended connection (credentials broken) still takes webhooks, and its events
/// wait in the inbox until it resumes. The adapter is the one registered for the connection's
/// platform. Secrets are set here: the store has no place for webhook secrets yet (they belong
/// beside the encrypted credentials); a connection without one answers 503 `no-secret` to
/// signed deliveries.
pub struct StoreRoutes {
    store: crate::store::SharedStore,
    adapters: HashMap<String, Arc<Adapter>>,
    secrets: RwLock<HashMap<String, WebhookSecret>>,
}

impl std::fmt::Debug for StoreRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreRoutes").field("adapters", &self.adapters.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

impl StoreRoutes {
    /// Routes over `store`, with `adapters` by platform id.
    pub fn new(store: crate::store::SharedStore, adapters: impl IntoIterator<Item = Arc<Adapter>>) -> Self {
        let adapters = adapters.into_iter().map(|a| (a.id().to_owned(), a)).collect();
        Self { store, adapters, secrets: RwLock::new(HashMap::new()) }
    }

    /// Set a connection's webhook secret.
    pub fn set_secret(&self, connection_id: impl Into<String>, secret: WebhookSecret) {
        self.secrets.write().unwrap_or_else(|e| e.into_inner()).insert(connection_id.into(), secret);
    }
}

#[async_trait]
impl RouteLookup for StoreRoutes {
    async fn route(&self, connection_id: &str) -> Result<Option<WebhookRoute>, String> {
        let Some(conn) = self.store.get_connection(connection_id).await.map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        if conn.state == crate::store::ConnectionState::Deleted {
            return Ok(None);
        }
        let adapter = self.adapters.get(&conn.platform).cloned().ok_or_else(|| {
            format!("no adapter is loaded for platform `{}` of connection `{connection_id}`", conn.platform)
        })?;
        let settings = match &conn.settings {
            serde_json::Value::Object(map) => map
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                .collect(),
            _ => Vec::new(),
        };
        let secret = self
            .secrets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(connection_id)
            .cloned()
            .unwrap_or_default();
        Ok(Some(WebhookRoute {
            adapter,
            connection: Connection {
                id: conn.id.clone(),
                plan: conn.plan.clone().unwrap_or_default(),
                agent_id: None,
                settings,
            },
            platform: conn.platform,
            secret: secret.secret,
            allow_unsigned: secret.allow_unsigned,
        }))
    }
}

/// Why a delivery was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestError {
    /// Refused (4xx, or 503 for a connection without a secret): nothing was stored.
    Rejected(Reject),
    /// The adapter trapped or overran its limits on this body (500): the platform retries, and
    /// the adapter needs fixing.
    Adapter(String),
    /// The connection lookup or the store failed (503): the platform retries.
    Unavailable(String),
}

impl IngestError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            IngestError::Rejected(r) => r.status(),
            IngestError::Adapter(_) => 500,
            IngestError::Unavailable(_) => 503,
        }
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            IngestError::Rejected(r) => r.code(),
            IngestError::Adapter(_) => "adapter-failed",
            IngestError::Unavailable(_) => "unavailable",
        }
    }
}

impl std::fmt::Display for IngestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IngestError::Rejected(r) => r.fmt(f),
            IngestError::Adapter(m) => write!(f, "the adapter failed on this delivery: {m}"),
            IngestError::Unavailable(m) => write!(f, "the gateway cannot store webhooks right now ({m}); retry later"),
        }
    }
}

impl std::error::Error for IngestError {}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::BAD_REQUEST);
        let body = json!({ "error": { "code": self.code(), "message": self.to_string() } });
        (status, axum::Json(body)).into_response()
    }
}

/// Takes webhook deliveries for every connection: see the module docs.
pub struct WebhookIngestor {
    routes: Arc<dyn RouteLookup>,
    inbox: Arc<Inbox>,
    clock: SharedClock,
    max_bytes: usize,
    metrics: Arc<IngestMetrics>,
}

impl std::fmt::Debug for WebhookIngestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookIngestor").field("max_bytes", &self.max_bytes).finish_non_exhaustive()
    }
}

fn algorithm(a: SignatureAlgorithm) -> Algorithm {
    match a {
        SignatureAlgorithm::HmacSha256Base64 => Algorithm::HmacSha256Base64,
        SignatureAlgorithm::HmacSha256Hex => Algorithm::HmacSha256Hex,
        SignatureAlgorithm::HmacSha1Hex => Algorithm::HmacSha1Hex,
        SignatureAlgorithm::SharedSecret => Algorithm::SharedSecret,
    }
}

impl WebhookIngestor {
    /// An ingestor looking connections up in `routes`, writing through `inbox`, reading time
    /// from `clock`, with the default body limit ([`super::MAX_WEBHOOK_BYTES`]).
    pub fn new(routes: Arc<dyn RouteLookup>, inbox: Arc<Inbox>, clock: SharedClock) -> Self {
        Self {
            routes,
            inbox,
            clock,
            max_bytes: super::MAX_WEBHOOK_BYTES,
            metrics: Arc::new(IngestMetrics::default()),
        }
    }

    /// Set the largest body accepted, in bytes.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Count into `metrics` (shared with the [`super::sweep::Reconciler`], say).
    pub fn with_metrics(mut self, metrics: Arc<IngestMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The largest body accepted.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<IngestMetrics> {
        &self.metrics
    }

    /// Take one delivery: size, parse, verify, deduplicate, store. Headers' names must be
    /// lower-case (as HTTP/2 and hyper give them). Returns once the events are durable.
    ///
    /// # Errors
    /// [`IngestError`]; nothing is stored then. Every error is logged and counted here.
    pub async fn ingest(
        &self,
        connection_id: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<IngestReport, IngestError> {
        let result = self.ingest_inner(connection_id, headers, body).await;
        match &result {
            Ok(report) => {
                bump(&self.metrics.webhooks_accepted, 1);
                bump(&self.metrics.webhook_events_new, report.new);
                bump(&self.metrics.webhook_events_duplicate, report.duplicates);
                bump(&self.metrics.webhook_events_stale, report.stale);
                tracing::debug!(connection = connection_id, new = report.new, duplicates = report.duplicates,
                    stale = report.stale, "webhook accepted");
            }
            Err(e) => self.record_error(connection_id, e),
        }
        result
    }

    /// Log and count a refusal made outside [`Self::ingest`] (the HTTP layer's size limit).
    pub fn record_error(&self, connection_id: &str, e: &IngestError) {
        match e {
            IngestError::Rejected(r) => {
                bump(&self.metrics.webhooks_rejected[r.index()], 1);
                tracing::warn!(connection = connection_id, code = r.code(), status = r.status(), "webhook refused: {r}");
            }
            _ => {
                bump(&self.metrics.webhooks_failed, 1);
                tracing::error!(connection = connection_id, code = e.code(), "webhook not stored: {e}");
            }
        }
    }

    async fn ingest_inner(
        &self,
        connection_id: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<IngestReport, IngestError> {
        check_size(body.len(), self.max_bytes).map_err(IngestError::Rejected)?;
        let route = self
            .routes
            .route(connection_id)
            .await
            .map_err(IngestError::Unavailable)?
            .ok_or(IngestError::Rejected(Reject::UnknownConnection))?;
        let webhook = route
            .adapter
            .parse_webhook(&route.connection, headers, body)
            .map_err(|e| IngestError::Adapter(e.to_string()))?
            .map_err(|f| IngestError::Rejected(Reject::Malformed(f.explain().to_string())))?;
        match &webhook.signature {
            Some(check) => verify(
                algorithm(check.algorithm),
                &route.secret,
                &check.signed,
                &check.provided,
                check.timestamp,
                self.clock.now_ms(),
                route.adapter.descriptor().webhook.max_age_secs,
            )
            .map_err(IngestError::Rejected)?,
            None if route.allow_unsigned => {}
            None => return Err(IngestError::Rejected(Reject::MissingSignature)),
        }
        let candidates: Vec<Candidate> = webhook
            .events
            .iter()
            .map(|e| Candidate::from_webhook(connection_id, &route.platform, e))
            .collect();
        self.inbox
            .insert(connection_id, &candidates, self.clock.now_ms())
            .await
            .map_err(|e| IngestError::Unavailable(e.to_string()))
    }
}

/// The webhook endpoint: `POST /webhooks/{connection}`, answering `200 {"accepted", "duplicates",
/// "stale"}` or `4xx/5xx {"error": {"code", "message"}}`. Bodies over the ingestor's limit get
/// 413 as soon as `Content-Length` says so, or once the limit is read.
pub fn webhook_routes(ingestor: Arc<WebhookIngestor>) -> Router {
    Router::new().route("/webhooks/{connection}", post(receive)).with_state(ingestor)
}

async fn receive(
    State(ingestor): State<Arc<WebhookIngestor>>,
    Path(connection): Path<String>,
    request: Request,
) -> Response {
    let limit = ingestor.max_bytes();
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    if let Some(size) = declared.filter(|s| *s > limit) {
        let e = IngestError::Rejected(Reject::TooLarge { limit, size: Some(size) });
        ingestor.record_error(&connection, &e);
        return e.into_response();
    }
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) => {
            let e = if err.downcast_ref::<LengthLimitError>().is_some() {
                IngestError::Rejected(Reject::TooLarge { limit, size: None })
            } else {
                IngestError::Rejected(Reject::Malformed(format!("the body could not be read: {err}")))
            };
            ingestor.record_error(&connection, &e);
            return e.into_response();
        }
    };
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_ascii_lowercase(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    match ingestor.ingest(&connection, &headers, &body).await {
        Ok(r) => (
            StatusCode::OK,
            axum::Json(json!({ "accepted": r.new, "duplicates": r.duplicates, "stale": r.stale })),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}
