//! The component's HTTP glue: `#[http_component]`, `wasi:config/store`, outbound HTTP.

// The export glue `#[http_component]` generates is `unsafe` (an `export_name` ABI function).
#![allow(unsafe_code)]

use futures::StreamExt as _;
use serde_json::json;
use spin_sdk::http::{IncomingRequest, Method, Request, Response};
use spin_sdk::http_component;
use spin_sdk::wit::wasi::config::store as config;

use crate::bindings::deskgate::adapter::types::{Connection, Descriptor, Failure, SignatureAlgorithm, Webhook};
use crate::bindings::{freshdesk, intercom, zendesk};
use crate::{CoreVerdict, EdgeError, RETRY_DELAYS_MS, connection_of_path, core_verdict, keys, misplugged, unknown_platform};
use deskgate_ingest_core::{Algorithm, MAX_WEBHOOK_BYTES, Reject, SignatureCheck, authenticate, check_size};

/// The two adapter functions the edge calls, of one platform's import.
struct PlatformAdapter {
    describe: fn() -> Descriptor,
    parse_webhook: fn(&Connection, &[(String, String)], &[u8]) -> Result<Webhook, Failure>,
}

/// The adapter import of `platform` (one of [`crate::PLATFORMS`]).
fn adapter_for(platform: &str) -> Option<PlatformAdapter> {
    Some(match platform {
        "zendesk" => PlatformAdapter { describe: zendesk::describe, parse_webhook: zendesk::parse_webhook },
        "freshdesk" => PlatformAdapter { describe: freshdesk::describe, parse_webhook: freshdesk::parse_webhook },
        "intercom" => PlatformAdapter { describe: intercom::describe, parse_webhook: intercom::parse_webhook },
        _ => return None,
    })
}

#[http_component]
async fn handle(request: IncomingRequest) -> Response {
    match receive(request).await {
        Ok((status, body)) => json_response(status, body),
        Err(e) => {
            eprintln!("deskgate-edge: refused {}: {}", e.code, e.message);
            json_response(e.status, e.body())
        }
    }
}

fn json_response(status: u16, body: Vec<u8>) -> Response {
    Response::builder().status(status).header("content-type", "application/json").body(body).build()
}

fn get(key: &str) -> Result<Option<String>, EdgeError> {
    config::get(key).map_err(|e| {
        EdgeError::new(500, "edge-misconfigured", format!("the edge cannot read its configuration `{key}`: {e:?}"))
    })
}

fn required(key: &str) -> Result<String, EdgeError> {
    get(key)?.filter(|v| !v.trim().is_empty()).ok_or_else(|| {
        EdgeError::new(
            500,
            "edge-misconfigured",
            format!("the edge has no `{key}` configured: set it (a Spin variable, or `deskgate edge --config-var {key}=...`)"),
        )
    })
}

/// The adapter's reason for refusing a body, in words.
fn explain(f: &Failure) -> String {
    match f {
        Failure::Invalid(m) | Failure::Permanent(m) | Failure::Transient(m) | Failure::NotFound(m) => m.clone(),
        other => format!("{other:?}"),
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

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// Read the body, refusing it as soon as it passes the limit.
async fn read_body(request: IncomingRequest, limit: usize) -> Result<Vec<u8>, EdgeError> {
    let mut body = Vec::new();
    let mut stream = request.into_body_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Reject::Malformed(format!("the body could not be read: {e:?}")))?;
        if body.len() + chunk.len() > limit {
            return Err(Reject::TooLarge { limit, size: None }.into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn receive(request: IncomingRequest) -> Result<(u16, Vec<u8>), EdgeError> {
    if request.method() != Method::Post {
        return Err(EdgeError::new(405, "method-not-allowed", "webhooks are delivered with POST /webhooks/{connection}"));
    }
    let path = request.path_with_query().unwrap_or_default();
    let connection_id = connection_of_path(&path)?.to_owned();

    // Headers, lower-cased as the adapter contract wants them; the size limit from
    // Content-Length before a byte of the body is read.
    let headers: Vec<(String, String)> = request
        .headers()
        .entries()
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), String::from_utf8_lossy(&v).into_owned()))
        .collect();
    if let Some(size) = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
    {
        check_size(size, MAX_WEBHOOK_BYTES)?;
    }

    // The connection's platform picks the adapter; the adapter must agree it is that platform's.
    let configured = get(&keys::platform(&connection_id))?;
    let platform = match configured.as_deref().map(str::trim) {
        None | Some("") => return Err(Reject::UnknownConnection.into()),
        Some(p) => p.to_owned(),
    };
    let adapter = adapter_for(&platform).ok_or_else(|| unknown_platform(&connection_id, &platform))?;
    let descriptor = (adapter.describe)();
    if descriptor.id != platform {
        return Err(misplugged(&platform, &descriptor.id));
    }
    let body = read_body(request, MAX_WEBHOOK_BYTES).await?;

    let connection = Connection { id: connection_id.clone(), plan: String::new(), agent_id: None, settings: Vec::new() };
    let webhook = (adapter.parse_webhook)(&connection, &headers, &body)
        .map_err(|f| EdgeError::from(Reject::Malformed(explain(&f))))?;
    let secret = get(&keys::secret(&connection_id))?.unwrap_or_default();
    let unsigned_key = keys::allow_unsigned(&connection_id);
    let allow_unsigned = keys::parse_bool(&unsigned_key, get(&unsigned_key)?.as_deref())
        .map_err(|m| EdgeError::new(500, "edge-misconfigured", m))?;
    // The same decision the self-hosted gateway's /webhooks/{connection} makes.
    let check = webhook.signature.as_ref().map(|c| SignatureCheck {
        algorithm: algorithm(c.algorithm),
        signed: &c.signed,
        provided: &c.provided,
        timestamp_ms: c.timestamp,
    });
    authenticate(check, secret.as_bytes(), allow_unsigned, now_ms(), descriptor.webhook.max_age_secs)?;

    let core_url = required(keys::CORE_URL)?;
    let token = required(keys::CORE_TOKEN)?;
    let url = format!("{}/v1/ingest/{connection_id}", core_url.trim_end_matches('/'));
    let payload = json!({ "platform": platform, "events": webhook.events }).to_string().into_bytes();
    forward(&url, &token, payload, &connection_id).await
}

/// POST the events to the core, with [`RETRY_DELAYS_MS`] between attempts.
async fn forward(url: &str, token: &str, payload: Vec<u8>, connection: &str) -> Result<(u16, Vec<u8>), EdgeError> {
    let mut last = String::new();
    for attempt in 0..=RETRY_DELAYS_MS.len() {
        if attempt > 0 {
            pause(RETRY_DELAYS_MS[attempt - 1]);
        }
        let request = Request::builder()
            .method(Method::Post)
            .uri(url)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(payload.clone())
            .build();
        match spin_sdk::http::send::<_, Response>(request).await {
            Ok(resp) => {
                let status = *resp.status();
                match core_verdict(status, resp.body(), connection) {
                    CoreVerdict::Accepted => return Ok((status, resp.into_body())),
                    CoreVerdict::Retry(why) => last = why,
                    CoreVerdict::Final(e) => return Err(e),
                }
            }
            Err(e) => last = format!("{e}"),
        }
    }
    Err(EdgeError::new(
        503,
        "core-unreachable",
        format!(
            "the core gateway could not take the events after {} attempts ({last}); nothing was accepted, redeliver later",
            RETRY_DELAYS_MS.len() + 1
        ),
    ))
}

/// Wait `ms` (std's sleep is a `wasi:clocks/monotonic-clock` pollable on wasm32-wasip2; the
/// component is single-threaded and has nothing else to do while a delivery is being forwarded).
fn pause(ms: u64) {
    std::thread::sleep(std::time::Duration::from_millis(ms));
}
