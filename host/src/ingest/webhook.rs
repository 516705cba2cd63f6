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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

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
use crate::clock::{Millis, SharedClock};
use crate::runtime::Adapter;
use crate::store::{StoreError, WebhookSecretRecord};
use deskgate_ingest_core::{Algorithm, Reject, SignatureCheck, authenticate, check_size};

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

/// A connection's webhook secret, as [`StoreRoutes`] hands it out.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct WebhookSecret {
    /// The secret (never logged); empty when there is none.
    pub secret: Vec<u8>,
    /// Accept deliveries without any signature.
    pub allow_unsigned: bool,
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSecret").field("allow_unsigned", &self.allow_unsigned).finish_non_exhaustive()
    }
}

impl WebhookSecret {
    fn from_record(r: WebhookSecretRecord) -> Self {
        Self { secret: r.secret.unwrap_or_default(), allow_unsigned: r.allow_unsigned }
    }
}

/// What the operator may know about a connection's webhook authentication: whether a secret is
/// set and whether unsigned deliveries are taken. Never the secret.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WebhookSigning {
    /// A signing secret is set.
    pub secret_set: bool,
    /// Deliveries without any signature are accepted.
    pub allow_unsigned: bool,
}

/// How long [`StoreRoutes`] trusts a secret it read from the store before reading it again.
pub const SECRET_CACHE_TTL: Duration = Duration::from_secs(5);

/// Routes from the store: a connection is known while it exists and is not deleted, *whatever
/// its state*: a suspended connection (credentials broken) still takes webhooks, and its events
/// wait in the inbox until it resumes. The adapter is the one registered for the connection's
/// platform.
///
/// # Secrets
///
/// Webhook secrets live in the store, sealed ([`crate::store::Store::set_webhook_secret`]); the API and
/// `deskgate serve` (for secrets in `deskgate.toml`) write them through [`StoreRoutes::store_secret`].
/// So that a delivery does not pay a second query for its secret, each connection's secret (or
/// its absence) is cached for [`SECRET_CACHE_TTL`] (measured on [`Instant`], not the gateway's
/// clock: the bound is real time whatever clock the policies run on). A secret set through this
/// process replaces the cached one at once. A secret set through *another* replica sharing the
/// store reaches this one within the TTL: for up to 5 seconds after a rotation, this replica may
/// still verify with the old secret (refusing the new signatures 401, which platforms retry or
/// the reconciliation sweep catches up on).
///
/// [`StoreRoutes::set_secret`] is an in-memory override instead, for tests, the demo and
/// benchmarks that build routes without going through the API: it is not stored, outlives no
/// restart, and wins over the store in this process until [`StoreRoutes::store_secret`] writes
/// the same connection's secret (which drops the override). A connection with neither a secret
/// nor `allow_unsigned` answers signed deliveries 503 `no-secret`.
pub struct StoreRoutes {
    store: crate::store::SharedStore,
    adapters: HashMap<String, Arc<Adapter>>,
    overrides: RwLock<HashMap<String, WebhookSecret>>,
    cache: RwLock<HashMap<String, Cached>>,
    /// Bumped by every invalidation: a read that started before one must not cache its result.
    generation: AtomicU64,
    ttl: Duration,
}

/// A secret read from the store (`None`: the store has none), and when.
#[derive(Clone)]
struct Cached {
    at: Instant,
    secret: Option<WebhookSecret>,
}

impl std::fmt::Debug for StoreRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreRoutes")
            .field("adapters", &self.adapters.keys().collect::<Vec<_>>())
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl StoreRoutes {
    /// Routes over `store`, with `adapters` by platform id, caching secrets for
    /// [`SECRET_CACHE_TTL`].
    pub fn new(store: crate::store::SharedStore, adapters: impl IntoIterator<Item = Arc<Adapter>>) -> Self {
        let adapters = adapters.into_iter().map(|a| (a.id().to_owned(), a)).collect();
        Self {
            store,
            adapters,
            overrides: RwLock::new(HashMap::new()),
            cache: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            ttl: SECRET_CACHE_TTL,
        }
    }

    /// Cache secrets read from the store for `ttl` instead (zero: read the store on every
    /// delivery).
    pub fn with_cache_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Set a connection's webhook secret *in memory only*, overriding the store in this process
    /// (see the type's docs): for tests, the demo and benchmarks. Operators' secrets go through
    /// [`StoreRoutes::store_secret`].
    pub fn set_secret(&self, connection_id: impl Into<String>, secret: WebhookSecret) {
        write(&self.overrides).insert(connection_id.into(), secret);
    }

    /// Seal and store a connection's webhook secret (`None` with `allow_unsigned` false clears
    /// it), then use it at once in this process: the cached entry and any in-memory override of
    /// the connection are dropped. Returns what the store now holds.
    ///
    /// # Errors
    /// [`StoreError::ConnectionNotFound`] for an unknown or deleted connection; store failures.
    pub async fn store_secret(
        &self,
        connection_id: &str,
        secret: Option<&[u8]>,
        allow_unsigned: bool,
        now: Millis,
    ) -> Result<Option<WebhookSecretRecord>, StoreError> {
        let stored = self.store.set_webhook_secret(connection_id, secret, allow_unsigned, now).await;
        // Whatever happened (a write may have landed before an error), read it again next time.
        self.invalidate(connection_id);
        let stored = stored?;
        write(&self.overrides).remove(connection_id);
        Ok(stored)
    }

    /// Forget the cached secret of a connection (deleted, or changed by other means): the next
    /// delivery reads the store.
    pub fn invalidate(&self, connection_id: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        write(&self.cache).remove(connection_id);
    }

    /// The secret deliveries to `connection_id` are verified with: the in-memory override, else
    /// the store's (through the cache); `None` if there is neither.
    ///
    /// # Errors
    /// The store's: unreachable, or [`StoreError::WrongSecretKey`].
    pub async fn secret(&self, connection_id: &str) -> Result<Option<WebhookSecret>, StoreError> {
        if let Some(s) = read(&self.overrides).get(connection_id) {
            return Ok(Some(s.clone()));
        }
        if let Some(c) = read(&self.cache).get(connection_id)
            && c.at.elapsed() < self.ttl
        {
            return Ok(c.secret.clone());
        }
        let generation = self.generation.load(Ordering::Acquire);
        let secret = self.store.get_webhook_secret(connection_id).await?.map(WebhookSecret::from_record);
        if !self.ttl.is_zero() {
            let mut cache = write(&self.cache);
            // An invalidation since the read began may mean what was read is already old.
            if self.generation.load(Ordering::Acquire) == generation {
                cache.insert(connection_id.to_owned(), Cached { at: Instant::now(), secret: secret.clone() });
            }
        }
        Ok(secret)
    }

    /// Whether `connection_id` has a webhook secret and takes unsigned deliveries, as
    /// [`StoreRoutes::secret`] sees it (for the API's views and the dashboard; never the secret).
    ///
    /// # Errors
    /// As [`StoreRoutes::secret`].
    pub async fn signing(&self, connection_id: &str) -> Result<WebhookSigning, StoreError> {
        Ok(self.secret(connection_id).await?.map_or_else(WebhookSigning::default, |s| WebhookSigning {
            secret_set: !s.secret.is_empty(),
            allow_unsigned: s.allow_unsigned,
        }))
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
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
        let secret = self.secret(connection_id).await.map_err(|e| e.to_string())?.unwrap_or_default();
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
        // The same decision the Spin edge makes (components/edge).
        let check = webhook.signature.as_ref().map(|c| SignatureCheck {
            algorithm: algorithm(c.algorithm),
            signed: &c.signed,
            provided: &c.provided,
            timestamp_ms: c.timestamp,
        });
        let max_age_secs = route.adapter.descriptor().webhook.max_age_secs;
        authenticate(check, &route.secret, route.allow_unsigned, self.clock.now_ms(), max_age_secs)
            .map_err(IngestError::Rejected)?;
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
