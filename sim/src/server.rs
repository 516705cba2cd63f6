//! The HTTP edge: accept loop, one request pipeline shared by the three platforms, and the
//! request/response types the platform modules work with.
//!
//! Why hyper directly rather than an axum router? The timeout-after-apply fault has to close the
//! connection *without* writing a response; a hyper service that returns `Err` does exactly that,
//! while a framework's infallible handlers always answer. The platforms' paths are matched by
//! hand anyway (Zendesk's `.json` suffix is optional, ids are parsed before the lookup), so a
//! router would add little.
//!
//! Pipeline for a platform request: read the body, added latency, injected 5xx (before anything
//! is applied), the platform handler (auth, rate limits, permission, then the operation, all
//! under one short account lock), webhooks queued, timeout-after-apply, request log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::faults::{RequestFault, TimeoutMode};
use crate::model::{Outcome, RequestRecord};
use crate::util::Query;
use crate::webhooks::Outbound;
use crate::{Platform, SimInner, admin};

/// Largest request body accepted.
const MAX_BODY: usize = 16 << 20;

/// A request as the platform modules see it.
pub struct Req {
    /// Method.
    pub method: Method,
    /// Path, without query.
    pub path: String,
    /// Decoded query.
    pub query: Query,
    /// Path and query as sent (for the request log and Link headers).
    pub target: String,
    /// Headers.
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Bytes,
}

impl Req {
    /// Header value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// Body as JSON (`Null` when empty).
    pub fn json(&self) -> Result<Value, String> {
        if self.body.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| format!("request body is not valid JSON: {e}"))
    }
    /// Whether the method writes.
    pub fn is_write(&self) -> bool {
        matches!(
            self.method,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        )
    }
}

/// A response plus what the pipeline needs to know about it.
pub struct Reply {
    /// Status.
    pub status: u16,
    /// Headers (Content-Type included).
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// For the request log.
    pub outcome: Outcome,
    /// Account the credential resolved to.
    pub account: Option<u64>,
    /// Credential id.
    pub cred: Option<u64>,
    /// A write was applied (eligible for timeout-after-apply).
    pub applied: bool,
    /// Webhooks to queue.
    pub outbound: Vec<Outbound>,
}

static JSON_CT: HeaderValue = HeaderValue::from_static("application/json; charset=utf-8");

impl Reply {
    /// A JSON reply; the outcome follows from the status.
    pub fn json(status: u16, body: &Value) -> Reply {
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        Reply::raw(status, JSON_CT.clone(), Bytes::from(bytes))
    }
    /// A JSON reply serialized straight from a `Serialize` type (the hot paths use this to skip
    /// building a `Value` tree).
    pub fn json_ser<T: serde::Serialize>(status: u16, body: &T) -> Reply {
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        Reply::raw(status, JSON_CT.clone(), Bytes::from(bytes))
    }
    /// A reply with an explicit content type.
    pub fn raw(status: u16, content_type: HeaderValue, body: Bytes) -> Reply {
        let mut headers = HeaderMap::with_capacity(8);
        headers.insert(hyper::header::CONTENT_TYPE, content_type);
        Reply {
            status,
            headers,
            body,
            outcome: outcome_for(status),
            account: None,
            cred: None,
            applied: false,
            outbound: Vec::new(),
        }
    }
    /// An empty reply (e.g. 204).
    pub fn empty(status: u16) -> Reply {
        let mut r = Reply::raw(status, JSON_CT.clone(), Bytes::new());
        r.headers.remove(hyper::header::CONTENT_TYPE);
        r
    }
    /// Adds a header (values that are not valid header text are skipped).
    pub fn header(mut self, name: &'static str, value: impl AsRef<str>) -> Reply {
        self.set_header(name, value);
        self
    }
    /// Sets a header in place.
    pub fn set_header(&mut self, name: &'static str, value: impl AsRef<str>) {
        if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
            self.headers.insert(HeaderName::from_static(name), v);
        }
    }
    /// Sets a numeric header in place.
    pub fn set_num(&mut self, name: &'static str, value: i64) {
        self.headers
            .insert(HeaderName::from_static(name), HeaderValue::from(value));
    }
}

/// Default outcome for a status.
pub fn outcome_for(status: u16) -> Outcome {
    match status {
        200..=299 => Outcome::Ok,
        401 => Outcome::Unauthorized,
        403 => Outcome::Forbidden,
        404 => Outcome::NotFound,
        429 => Outcome::RateLimited,
        500..=599 => Outcome::InjectedError,
        _ => Outcome::Invalid,
    }
}

/// Closes the connection without a response.
#[derive(Debug)]
pub struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the timeout-after-apply fault")
    }
}
impl std::error::Error for DropConnection {}

/// Binds and serves until `shutdown` flips to true. Returns the bound address at once.
pub async fn serve(
    sim: Arc<SimInner>,
    listen: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => break,
            };
            let _ = stream.set_nodelay(true);
            let sim = sim.clone();
            let mut stop = shutdown.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(sim.clone(), req));
                let conn = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), svc);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = stop.changed() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
                    }
                }
            });
        }
    });
    Ok((addr, task))
}

async fn handle(
    sim: Arc<SimInner>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, DropConnection> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large or unreadable",
            ));
        }
    };
    let path = parts.uri.path().to_owned();
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| path.clone());
    let query = Query::parse(parts.uri.query().unwrap_or(""));
    let req = Req {
        method: parts.method,
        path,
        query,
        target,
        headers: parts.headers,
        body,
    };

    if req.path == "/_sim" || req.path.starts_with("/_sim/") {
        return Ok(into_response(admin::handle(&sim, &req).await));
    }

    let latency = sim.faults.latency_ms();
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let token_request = req.method == Method::POST && is_token_path(sim.platform, &req.path);
    let token_fault = if token_request {
        sim.faults.token_error()
    } else {
        None
    };
    let mut reply = match token_fault.or_else(|| sim.faults.request_fault()) {
        Some(RequestFault::Error(status)) => {
            let mut r = injected_error(sim.platform, status);
            r.outcome = Outcome::InjectedError;
            r
        }
        None => match sim.platform {
            Platform::Zendesk => crate::zendesk::handle(&sim, &req),
            Platform::Freshdesk => crate::freshdesk::handle(&sim, &req),
            Platform::Intercom => crate::intercom::handle(&sim, &req),
        },
    };
    if !reply.outbound.is_empty() {
        sim.hooks.enqueue(&sim, std::mem::take(&mut reply.outbound));
    }
    let timeout = if reply.applied && req.is_write() {
        sim.faults.timeout_after_apply()
    } else if token_request && reply.status == 200 {
        // The pair is issued (and, on a rotating platform, the old one deleted): withhold it.
        sim.faults.token_hold().map(|ms| (TimeoutMode::Hold, ms))
    } else {
        None
    };
    let outcome = if timeout.is_some() {
        Outcome::TimedOutAfterApply
    } else {
        reply.outcome
    };
    if matches!(
        outcome,
        Outcome::InjectedError | Outcome::TimedOutAfterApply
    ) && let Some(acc) = reply.account.and_then(|a| sim.account(a))
    {
        crate::lock(&acc).stats.faults += 1;
    }
    sim.log_request(RequestRecord {
        seq: 0,
        at_ms: sim.clock.now_ms(),
        account_id: reply.account,
        credential_id: reply.cred,
        method: req.method.as_str().to_owned(),
        path: req.target.clone(),
        status: reply.status,
        outcome,
    });
    if let Some((mode, hold_ms)) = timeout {
        if mode == TimeoutMode::Hold {
            tokio::time::sleep(Duration::from_millis(hold_ms)).await;
        }
        return Err(DropConnection);
    }
    Ok(into_response(reply))
}

/// Whether `path` is the platform's OAuth token endpoint (the target of the token faults).
fn is_token_path(platform: Platform, path: &str) -> bool {
    let path = path.trim_end_matches('/');
    match platform {
        Platform::Zendesk => path == "/oauth/tokens",
        Platform::Intercom => path == "/auth/eagle/token",
        Platform::Freshdesk => false,
    }
}

/// The platform's body for an injected 5xx. The exact bodies are UNCONFIRMED for all three
/// platforms (platforms.md does not record any 5xx body); these follow each one's error envelope.
fn injected_error(platform: Platform, status: u16) -> Reply {
    let body = match platform {
        Platform::Zendesk => {
            serde_json::json!({"error": "ServiceUnavailable", "description": "Simulated server error"})
        }
        Platform::Freshdesk => {
            serde_json::json!({"code": "internal_error", "message": "Simulated server error"})
        }
        Platform::Intercom => serde_json::json!({
            "type": "error.list", "request_id": crate::util::uuidish(status as u64),
            "errors": [{"code": "server_error", "message": "Simulated server error"}]
        }),
    };
    Reply::json(status, &body)
}

fn plain(status: StatusCode, msg: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(msg.as_bytes())));
    *r.status_mut() = status;
    r
}

/// Turns a [`Reply`] into a hyper response.
pub fn into_response(reply: Reply) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(reply.body));
    *r.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    *r.headers_mut() = reply.headers;
    r
}
