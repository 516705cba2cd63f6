//! `POST /v1/ingest/{connection}`: events the edge has already verified and normalized.
//!
//! On Spin, helpdesk webhooks terminate at the edge component (`components/edge`): it checks the
//! signature and replay window with the same `deskgate-ingest-core` code as
//! [`crate::ingest::webhook`], has the platform's adapter normalize the body, and forwards the
//! events here as `{"platform": "zendesk", "events": [ticket-event, ...]}` (the WIT
//! `ticket-event` records, in the JSON shape of [`crate::bindings::TicketEvent`]).
//!
//! From there the path is the webhook path's: the same [`Candidate::from_webhook`], the same
//! [`crate::ingest::Inbox`] (version keys, stale drops, one transaction), the same answer
//! `200 {"accepted", "duplicates", "stale"}` only once the store has committed, and the same
//! counters. So a change the edge forwards twice (a platform redelivery), or that the
//! reconciliation sweep also lists, is stored once.
//!
//! # Authentication
//!
//! Its own token, separate from the API token: an edge holds it, and an edge is deployed where
//! the app's API token has no business being. `Authorization: Bearer <edge token>`, compared in
//! constant time. The gateway takes it from `DESKGATE_EDGE_TOKEN` ([`with_edge_token_from_env`],
//! in `deskgate serve`) or, embedded, from [`with_edge_token`]. Without one the route answers 503
//! `edge_ingest_disabled`, naming the variable to set.

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState, json_body};
use crate::bindings::TicketEvent;
use crate::config::Secret;
use crate::ingest::Candidate;
use crate::store::ConnectionState;

/// The environment variable `deskgate serve` reads the edge ingest token from.
pub const EDGE_TOKEN_ENV: &str = "DESKGATE_EDGE_TOKEN";

/// The edge ingest token, as a request extension (see [`with_edge_token`]).
#[derive(Clone)]
pub struct EdgeToken(Arc<Secret>);

impl std::fmt::Debug for EdgeToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EdgeToken(<redacted>)")
    }
}

/// Enable `POST /v1/ingest/{connection}` on `router` (from [`super::app`]), answering to `token`.
/// (An empty token accepts no request: an empty bearer never matches.)
pub fn with_edge_token(router: Router, token: Secret) -> Router {
    router.layer(Extension(EdgeToken(Arc::new(token))))
}

/// [`with_edge_token`] with the token from [`EDGE_TOKEN_ENV`], when it is set; otherwise the
/// router unchanged (the route then answers 503 `edge_ingest_disabled`).
///
/// # Errors
/// When the variable is set but shorter than 16 characters (a guessable token).
pub fn with_edge_token_from_env(router: Router) -> anyhow::Result<Router> {
    match std::env::var(EDGE_TOKEN_ENV) {
        Ok(t) if t.trim().len() >= 16 => Ok(with_edge_token(router, Secret::new(t.trim()))),
        Ok(_) => anyhow::bail!(
            "{EDGE_TOKEN_ENV} is set but shorter than 16 characters: use a random token, e.g. `openssl rand -hex 24`"
        ),
        Err(_) => Ok(router),
    }
}

/// The body the edge sends.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeEvents {
    /// The platform of the adapter that normalized the events; must be the connection's.
    pub platform: String,
    /// The normalized events, in delivery order.
    pub events: Vec<TicketEvent>,
}

fn check_token(token: Option<&EdgeToken>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(EdgeToken(expected)) = token else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "edge_ingest_disabled",
            format!("this gateway takes no events from edges: set {EDGE_TOKEN_ENV} on the gateway and the same value as the edge's `core_token`"),
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes().strip_prefix(b"Bearer ").unwrap_or(b""))
        .ok_or_else(|| {
            ApiError::unauthorized("missing `Authorization: Bearer <edge token>` header: send the gateway's edge ingest token")
        })?;
    // Constant time in the token's content; only its length can leak.
    if given.is_empty() || !bool::from(given.ct_eq(expected.expose().as_bytes())) {
        return Err(ApiError::unauthorized(format!(
            "the bearer token is not the gateway's edge ingest token: set the edge's `core_token` to the gateway's {EDGE_TOKEN_ENV}"
        )));
    }
    Ok(())
}

/// `POST /v1/ingest/{connection}`.
pub(super) async fn ingest(
    State(state): State<AppState>,
    token: Option<Extension<EdgeToken>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<EdgeEvents>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    check_token(token.as_ref().map(|Extension(t)| t), &headers)?;
    let Path(id) = id.map_err(|_| ApiError::bad_request("invalid_path", "the connection id must be a path segment"))?;
    let body = json_body(body)?;
    let inner = &state.inner;
    let conn = match inner.store.get_connection(&id).await? {
        Some(c) if c.state != ConnectionState::Deleted => c,
        _ => return Err(ApiError::connection_not_found(&id)),
    };
    if conn.platform != body.platform {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "platform_mismatch",
            format!(
                "connection `{id}` is a {} connection but the edge normalized the events as {}: configure the edge's `conn_{}_platform` as {}",
                conn.platform,
                body.platform,
                id.replace('-', "_"),
                conn.platform
            ),
        ));
    }
    let candidates: Vec<Candidate> =
        body.events.iter().map(|e| Candidate::from_webhook(&id, &conn.platform, e)).collect();
    let metrics = &inner.ingest_metrics;
    let report = match inner.inbox.insert(&id, &candidates, inner.clock.now_ms()).await {
        Ok(r) => r,
        Err(e) => {
            metrics.webhooks_failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(e.into());
        }
    };
    for (counter, n) in [
        (&metrics.webhooks_accepted, 1),
        (&metrics.webhook_events_new, report.new),
        (&metrics.webhook_events_duplicate, report.duplicates),
        (&metrics.webhook_events_stale, report.stale),
    ] {
        counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
    tracing::debug!(connection = %id, new = report.new, duplicates = report.duplicates, stale = report.stale,
        "edge events accepted");
    Ok(Json(json!({ "accepted": report.new, "duplicates": report.duplicates, "stale": report.stale })))
}
