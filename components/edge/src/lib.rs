//! deskgate's webhook edge: a `wasi:http` 0.2 component, written with `spin-sdk` 5.x.
//!
//! On Fermyon Spin (and SpinKube, and deskgate's own host: `deskgate edge`), helpdesk webhooks
//! terminate here, close to the sender. For `POST /webhooks/{connection}` the edge:
//!
//! 1. refuses bodies over [`deskgate_ingest_core::MAX_WEBHOOK_BYTES`] (413), reading no further;
//! 2. reads the connection's configuration (its platform and webhook secret) from
//!    `wasi:config/store` ([`keys`]), never from the request;
//! 3. has the connection's platform's adapter (one of the adapter imports, each satisfied by
//!    composition) parse the body into normalized events and say what to verify;
//! 4. verifies the signature and the replay window with [`deskgate_ingest_core::verify`], the same
//!    code the self-hosted gateway runs (see "Replays" below);
//! 5. forwards the verified, normalized events to the core gateway's `POST /v1/ingest/{connection}`
//!    with the core's edge token, retrying briefly ([`RETRY_DELAYS_MS`]);
//! 6. answers 2xx only once the core has accepted (stored) them; 503 when the core cannot be
//!    reached, so the platform redelivers (and the core's reconciliation sweep covers the rest).
//!
//! Every refusal is `{"error": {"code", "message"}}` with the code of
//! [`deskgate_ingest_core::Reject`] (or one of [`EdgeError`]'s own), so a sender's admin sees why.
//!
//! # Replays
//!
//! Only a scheme that signs a timestamp (Zendesk) lets the edge refuse a replay: outside the
//! adapter's `max_age_secs` window it is `401 stale-timestamp`. Freshdesk's header token and
//! Intercom's HMAC of the body sign no timestamp (their adapters declare `max_age_secs` none), so
//! a replayed genuine delivery is indistinguishable from the platform's own redelivery, which
//! must pass; and the edge keeps no state between requests (no Spin-only key-value store). Such a
//! replay is verified and forwarded, and the core drops it as a duplicate: events are keyed by
//! ticket version ([`deskgate_ingest_core::dedupe_key`], unique in the store), so the sender gets
//! `200 {"accepted": 0, "duplicates": 1}` and the app sees the change once. The test suite proves
//! it against each simulator (`tests/tests/all/edge.rs`).
//!
//! # One edge, every platform
//!
//! The edge imports one adapter per platform, under the platform's id (`zendesk`, `freshdesk`,
//! `intercom`: `wit/world.wit`), and serves them all at `/webhooks/{connection}`: the connection's
//! configured platform picks the adapter ([`PLATFORMS`]). Each import is satisfied by
//! composition with that platform's adapter component, unchanged (Spin's
//! `[component.edge.dependencies]`, or the pre-composed `edge-composed.wasm` the build writes for
//! runtimes without dependency support). A connection configured for a platform the edge has no
//! adapter for, or an adapter plugged into another platform's slot, is refused with a 500
//! `edge-misconfigured` that says which. Satisfying a named import from Spin needs a dependency's
//! `export` key, which Spin composes correctly since spinframework/spin#3385 (Spin 4.0); on older
//! Spin, serve the pre-composed edge (README, "Deploying the edge on Spin").
//!
//! # Imports
//!
//! Only what every `wasi:http` 0.2 host provides or can: `wasi:http/outgoing-handler`, the WASI
//! clocks, and `wasi:config/store@0.2.0-draft-2024-09-27` (Spin 3.x and 4.x back it with Spin
//! variables; deskgate's host with its own configuration). No Spin-only interface
//! (`fermyon:spin/variables`, key-value) is used.

#![deny(missing_docs)]

pub mod keys;

use serde_json::json;

/// Bindings of the edge's imports (`wit/world.wit`: one adapter per platform).
#[allow(missing_docs, unsafe_code, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "deskgate:edge/edge@0.1.0",
        path: ["../../wit", "wit"],
        additional_derives: [serde::Serialize],
        generate_all,
    });
}

/// Pauses between attempts to reach the core: three attempts in about a quarter of a second.
/// Short on purpose: the platform's own redelivery (minutes) is the long retry, and a webhook
/// sender waits for our answer.
pub const RETRY_DELAYS_MS: [u64; 2] = [50, 200];

/// The platforms the edge has an adapter import for (`wit/world.wit`), by platform id.
pub const PLATFORMS: [&str; 3] = ["zendesk", "freshdesk", "intercom"];

/// A refusal or failure of the edge, answered as `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeError {
    /// The HTTP status.
    pub status: u16,
    /// A stable machine-readable code: a [`deskgate_ingest_core::Reject`] code, or
    /// `method-not-allowed`, `route-not-found`, `edge-misconfigured`,
    /// `adapter-failed`, `core-unreachable`, `core-refused`.
    pub code: &'static str,
    /// What was wrong and what to do.
    pub message: String,
}

impl EdgeError {
    /// An error with this status, code and message.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        json!({ "error": { "code": self.code, "message": self.message } }).to_string().into_bytes()
    }
}

impl From<deskgate_ingest_core::Reject> for EdgeError {
    fn from(r: deskgate_ingest_core::Reject) -> Self {
        Self::new(r.status(), r.code(), r.to_string())
    }
}

impl std::fmt::Display for EdgeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for EdgeError {}

/// The connection id of a webhook path, `/webhooks/{connection}` (a query string is ignored).
///
/// # Errors
/// 404 `route-not-found` for any other path, or an id the edge cannot serve
/// ([`keys::valid_connection_id`]).
pub fn connection_of_path(path: &str) -> Result<&str, EdgeError> {
    let path = path.split('?').next().unwrap_or("");
    let not_found = || {
        EdgeError::new(
            404,
            "route-not-found",
            format!("no such route `{path}`: webhooks go to POST /webhooks/{{connection}}, the connection id being lower-case letters, digits, `-` and `_`"),
        )
    };
    let id = path.strip_prefix("/webhooks/").ok_or_else(not_found)?;
    if !keys::valid_connection_id(id) {
        return Err(not_found());
    }
    Ok(id)
}

/// The edge error for a connection configured for `platform`, which the edge has no adapter for.
pub fn unknown_platform(connection: &str, platform: &str) -> EdgeError {
    EdgeError::new(
        500,
        "edge-misconfigured",
        format!(
            "connection `{connection}` is configured for platform `{platform}` (`{}`), and this edge has adapters for {} only: correct the variable",
            keys::platform(connection),
            PLATFORMS.join(", ")
        ),
    )
}

/// The edge error for an adapter that describes itself as `described` in `slot`'s import.
pub fn misplugged(slot: &str, described: &str) -> EdgeError {
    EdgeError::new(
        500,
        "edge-misconfigured",
        format!(
            "the edge's `{slot}` adapter import is satisfied by the {described} adapter: compose the edge with the {slot} adapter's .wasm for `{slot}` (spin.toml's [component.edge.dependencies])"
        ),
    )
}

/// What the core's answer to a forward means for the delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreVerdict {
    /// 2xx: stored; answer the sender with this status and body.
    Accepted,
    /// Worth another attempt (5xx, 429): the core is restarting or its store is busy.
    Retry(String),
    /// Final: answer the sender with this error.
    Final(EdgeError),
}

/// Classify the core's answer to `POST /v1/ingest/{connection}`.
pub fn core_verdict(status: u16, body: &[u8], connection: &str) -> CoreVerdict {
    let said = || {
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned())
    };
    match status {
        200..=299 => CoreVerdict::Accepted,
        429 | 500..=599 => CoreVerdict::Retry(format!("the core answered {status}: {}", said())),
        401 | 403 => CoreVerdict::Final(EdgeError::new(
            503,
            "core-refused",
            format!(
                "the core gateway refused the edge's token ({status}: {}): set the edge's `core_token` to the core's edge ingest token; the platform will redeliver",
                said()
            ),
        )),
        404 => CoreVerdict::Final(EdgeError::new(
            404,
            "unknown-connection",
            format!("the core gateway has no connection `{connection}` ({})", said()),
        )),
        _ => CoreVerdict::Final(EdgeError::new(
            502,
            "core-refused",
            format!("the core gateway refused the events ({status}: {}): the edge and the core disagree; check both versions", said()),
        )),
    }
}

#[cfg(target_arch = "wasm32")]
mod component;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(connection_of_path("/webhooks/zd-main"), Ok("zd-main"));
        assert_eq!(connection_of_path("/webhooks/zd_main?x=1"), Ok("zd_main"));
        for bad in ["/", "/webhooks/", "/webhooks", "/other/zd", "/webhooks/zendesk/zd", "/webhooks/a/b/c", "/webhooks/Bad Id"] {
            let e = connection_of_path(bad).unwrap_err();
            assert_eq!((e.status, e.code), (404, "route-not-found"), "{bad}");
        }
    }

    #[test]
    fn misconfiguration_names_the_variable_and_the_adapters() {
        let e = unknown_platform("hs-1", "hubspot");
        assert_eq!((e.status, e.code), (500, "edge-misconfigured"));
        assert!(e.message.contains("conn_hs_1_platform") && e.message.contains("zendesk, freshdesk, intercom"), "{e}");
        let e = misplugged("zendesk", "freshdesk");
        assert_eq!((e.status, e.code), (500, "edge-misconfigured"));
        assert!(e.message.contains("`zendesk` adapter import is satisfied by the freshdesk adapter"), "{e}");
    }

    #[test]
    fn verdicts() {
        assert_eq!(core_verdict(200, b"{}", "c"), CoreVerdict::Accepted);
        assert!(matches!(core_verdict(503, b"{}", "c"), CoreVerdict::Retry(_)));
        assert!(matches!(core_verdict(429, b"", "c"), CoreVerdict::Retry(_)));
        let CoreVerdict::Final(e) = core_verdict(401, br#"{"error":{"code":"unauthorized","message":"bad token"}}"#, "c") else {
            panic!("401 is final")
        };
        assert_eq!((e.status, e.code), (503, "core-refused"));
        assert!(e.message.contains("bad token") && e.message.contains("core_token"), "{e}");
        let CoreVerdict::Final(e) = core_verdict(404, b"", "c") else { panic!("404 is final") };
        assert_eq!((e.status, e.code), (404, "unknown-connection"));
        let CoreVerdict::Final(e) = core_verdict(400, b"nope", "c") else { panic!("400 is final") };
        assert_eq!((e.status, e.code), (502, "core-refused"));
    }

    #[test]
    fn error_bodies_are_json() {
        let e = EdgeError::from(deskgate_ingest_core::Reject::Forged);
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["code"], "forged-signature");
        assert_eq!(e.status, 401);
    }
}
