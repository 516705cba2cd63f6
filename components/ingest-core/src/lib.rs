//! Webhook checks shared by every deskgate edge: signature verification, the replay window, the
//! size limit, and the key that deduplicates ticket changes.
//!
//! # Why a crate of its own
//!
//! Webhooks are terminated in two places: the self-hosted gateway (`host/src/ingest`) and the
//! Spin edge component (issue #8), compiled to `wasm32-wasip2`. A verification rule that differs
//! between the two is a hole in whichever is laxer, so there is exactly one implementation, pure
//! (no IO, no clock: `now` is an argument), compiled natively and to wasm. Check the wasm build
//! with `cargo build -p deskgate-ingest-core --target wasm32-wasip2`.
//!
//! # What is checked, in order
//!
//! 1. [`check_size`]: the body fits [`MAX_WEBHOOK_BYTES`] (or the caller's limit), before anything
//!    parses it.
//! 2. The adapter parses the body (outside this crate) and says what was signed, what signature
//!    came and which [`Algorithm`].
//! 3. [`verify`]: the signature matches the connection's secret, compared in constant time; then,
//!    for schemes that sign a timestamp, the timestamp is within `max_age_secs` of now (either way:
//!    a timestamp from the future is as suspicious as an old one). The signature is checked first
//!    so that a replayed genuine delivery is reported as a replay, not as a forgery.
//!
//! Every refusal is a [`Reject`] with a stable machine code, an HTTP status and a sentence for
//! people. The statuses: 401 for anything about authenticity (missing, forged, replayed: the sender
//! is not authenticated, and senders do not retry a 401), 413 for size, 400 for a body the adapter
//! cannot read, 404 for an unknown connection, 503 when the connection has no secret configured
//! (the operator's mistake: the platform should retry once it is fixed).
//!
//! # Deduplication key
//!
//! [`dedupe_key`] names one *version* of a ticket: `ticket:{id}@{version_ms}`, the version being
//! the ticket's update time (or, for events without a ticket snapshot, when the event happened).
//! It is deliberately not the platform's event id: a change reaches deskgate both by webhook and
//! by the reconciliation sweep, and the sweep only sees tickets, not events. Keyed by event id,
//! every change the webhook already delivered would be delivered again by the next sweep. Keyed
//! by version, the sweep's copy is a duplicate of the webhook's, several webhooks describing one
//! update (Zendesk sends one per changed field) collapse into one event, and a retried or
//! duplicated delivery is a duplicate whatever its event id.
//!
//! # Example
//!
//! ```
//! use deskgate_ingest_core::{Algorithm, Reject, verify};
//! use hmac::{Hmac, Mac};
//! let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"secret").unwrap();
//! mac.update(b"{}");
//! let sig = format!("sha1={}", hex::encode(mac.finalize().into_bytes()));
//! assert_eq!(verify(Algorithm::HmacSha1Hex, b"secret", b"{}", &sig, None, 0, None), Ok(()));
//! let forged = verify(Algorithm::HmacSha1Hex, b"other", b"{}", &sig, None, 0, None);
//! assert_eq!(forged.unwrap_err().status(), 401);
//! ```

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Whether `sig` is the HMAC of `signed` under `secret` (`verify_slice` compares in constant time).
macro_rules! hmac_matches {
    ($digest:ty, $secret:expr, $signed:expr, $sig:expr) => {
        match Hmac::<$digest>::new_from_slice($secret) {
            Ok(mut mac) => {
                mac.update($signed);
                mac.verify_slice($sig).is_ok()
            }
            Err(_) => false,
        }
    };
}

/// Default largest webhook body accepted: 1 MiB. Platforms send a few kilobytes per event
/// (Zendesk caps its payloads at 256 KB); anything near a megabyte is abuse or a misconfigured
/// sender, and reading it is the cost an attacker would like us to pay.
pub const MAX_WEBHOOK_BYTES: usize = 1 << 20;

/// How a platform signs its webhooks (mirrors the WIT `signature-algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Base64 of HMAC-SHA256 over the signed bytes (Zendesk: timestamp + body).
    HmacSha256Base64,
    /// Hex of HMAC-SHA256 over the signed bytes (an optional `sha256=` prefix is accepted).
    HmacSha256Hex,
    /// Hex of HMAC-SHA1 over the signed bytes (Intercom's `X-Hub-Signature: sha1=...`; the prefix
    /// is optional).
    HmacSha1Hex,
    /// A shared secret sent verbatim in a header the admin configured (Freshdesk).
    SharedSecret,
}

/// Why a webhook delivery was refused. Nothing of a refused delivery is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    /// No connection with the id in the URL (or it was deleted).
    UnknownConnection,
    /// The body is larger than the limit.
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
        /// The size, when known (from `Content-Length` or counted).
        size: Option<usize>,
    },
    /// The adapter could not read the body (not JSON, not the platform's shape).
    Malformed(String),
    /// The delivery carries no signature and the connection does not accept unsigned webhooks.
    MissingSignature,
    /// The signature does not match (or cannot be decoded).
    Forged,
    /// The signature matches but its timestamp is outside the accepted window: a replay, or a
    /// sender whose clock is far off.
    Stale {
        /// The signed timestamp, ms since the Unix epoch; `None` when the scheme needs one and
        /// none came.
        timestamp_ms: Option<i64>,
        /// The receiver's now.
        now_ms: i64,
        /// The window, seconds either side of now.
        max_age_secs: u64,
    },
    /// The connection has no webhook secret configured, so nothing can be verified.
    NoSecret,
}

impl Reject {
    /// Every code, in [`Reject::index`] order (for metrics arrays).
    pub const CODES: [&'static str; 7] = [
        "unknown-connection",
        "too-large",
        "malformed",
        "missing-signature",
        "forged-signature",
        "stale-timestamp",
        "no-secret",
    ];

    /// A stable machine-readable code (logs, metrics, the `error.code` of the HTTP answer).
    pub fn code(&self) -> &'static str {
        Self::CODES[self.index()]
    }

    /// Position of [`Reject::code`] in [`Reject::CODES`].
    pub fn index(&self) -> usize {
        match self {
            Reject::UnknownConnection => 0,
            Reject::TooLarge { .. } => 1,
            Reject::Malformed(_) => 2,
            Reject::MissingSignature => 3,
            Reject::Forged => 4,
            Reject::Stale { .. } => 5,
            Reject::NoSecret => 6,
        }
    }

    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            Reject::UnknownConnection => 404,
            Reject::TooLarge { .. } => 413,
            Reject::Malformed(_) => 400,
            Reject::MissingSignature | Reject::Forged | Reject::Stale { .. } => 401,
            Reject::NoSecret => 503,
        }
    }
}

impl core::fmt::Display for Reject {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Reject::UnknownConnection => f.write_str(
                "no connection with this id: check the webhook URL configured on the platform \
                 (/webhooks/{connection-id})",
            ),
            Reject::TooLarge { limit, size: Some(size) } => {
                write!(f, "the body is {size} bytes, over the {limit}-byte limit for a webhook")
            }
            Reject::TooLarge { limit, size: None } => {
                write!(f, "the body is over the {limit}-byte limit for a webhook")
            }
            Reject::Malformed(why) => write!(f, "the webhook body cannot be read: {why}"),
            Reject::MissingSignature => f.write_str(
                "the webhook carries no signature and this connection only accepts signed \
                 webhooks: configure the signing secret on the platform",
            ),
            Reject::Forged => f.write_str(
                "the webhook signature does not match this connection's secret: the secret on \
                 the platform and in deskgate differ, or the request was forged or altered",
            ),
            Reject::Stale { timestamp_ms: None, max_age_secs, .. } => write!(
                f,
                "the webhook carries no signed timestamp, which this scheme needs to refuse \
                 replays (window {max_age_secs} s)"
            ),
            Reject::Stale { timestamp_ms: Some(ts), now_ms, max_age_secs } => write!(
                f,
                "the webhook's signed timestamp is {} s away from now, outside the {max_age_secs} \
                 s window: a replayed delivery, or a clock that is far off",
                (now_ms - ts) / 1000
            ),
            Reject::NoSecret => f.write_str(
                "this connection has no webhook secret configured, so no delivery can be \
                 verified: set the connection's webhook secret",
            ),
        }
    }
}

impl std::error::Error for Reject {}

/// Refuse a body larger than `limit` bytes.
///
/// # Errors
/// [`Reject::TooLarge`].
pub fn check_size(len: usize, limit: usize) -> Result<(), Reject> {
    if len > limit {
        return Err(Reject::TooLarge { limit, size: Some(len) });
    }
    Ok(())
}

/// Verify a webhook signature with the connection's `secret`, then its timestamp.
///
/// - `signed`: the exact bytes the sender signed (as the adapter assembled them).
/// - `provided`: the signature (or, for [`Algorithm::SharedSecret`], the secret) as sent; leading
///   and trailing whitespace is ignored, as is a `sha1=` / `sha256=` prefix on hex schemes.
/// - `timestamp_ms`: the signed timestamp, for schemes that sign one.
/// - `max_age_secs`: the replay window; `None` for schemes without a timestamp. When set, a
///   missing timestamp is refused, as is one more than the window away from `now_ms` in either
///   direction.
///
/// All comparisons are constant-time: HMACs through `verify_slice`, shared secrets by comparing
/// their SHA-256 digests (which also hides the secret's length).
///
/// # Errors
/// [`Reject::NoSecret`] for an empty secret, [`Reject::Forged`] for a mismatch or an undecodable
/// signature, [`Reject::Stale`] for a timestamp outside the window.
pub fn verify(
    algorithm: Algorithm,
    secret: &[u8],
    signed: &[u8],
    provided: &str,
    timestamp_ms: Option<i64>,
    now_ms: i64,
    max_age_secs: Option<u64>,
) -> Result<(), Reject> {
    if secret.is_empty() {
        return Err(Reject::NoSecret);
    }
    let provided = provided.trim();
    let ok = match algorithm {
        Algorithm::HmacSha256Base64 => match base64::engine::general_purpose::STANDARD.decode(provided) {
            Ok(sig) => hmac_matches!(Sha256, secret, signed, &sig),
            Err(_) => false,
        },
        Algorithm::HmacSha256Hex => match hex::decode(strip_prefix(provided, "sha256=")) {
            Ok(sig) => hmac_matches!(Sha256, secret, signed, &sig),
            Err(_) => false,
        },
        Algorithm::HmacSha1Hex => match hex::decode(strip_prefix(provided, "sha1=")) {
            Ok(sig) => hmac_matches!(sha1::Sha1, secret, signed, &sig),
            Err(_) => false,
        },
        Algorithm::SharedSecret => {
            let a = Sha256::digest(provided.as_bytes());
            let b = Sha256::digest(secret);
            bool::from(a.as_slice().ct_eq(b.as_slice()))
        }
    };
    if !ok {
        return Err(Reject::Forged);
    }
    if let Some(max_age_secs) = max_age_secs {
        let window_ms = i64::try_from(max_age_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        match timestamp_ms {
            Some(ts) if now_ms.saturating_sub(ts).saturating_abs() <= window_ms => {}
            _ => return Err(Reject::Stale { timestamp_ms, now_ms, max_age_secs }),
        }
    }
    Ok(())
}

/// What an adapter's `parse-webhook` said to verify (the WIT `signature-check`), borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureCheck<'a> {
    /// How the sender signs.
    pub algorithm: Algorithm,
    /// The exact bytes the sender signed.
    pub signed: &'a [u8],
    /// The signature (or shared secret) as sent.
    pub provided: &'a str,
    /// The signed timestamp, ms since the Unix epoch, for schemes that sign one.
    pub timestamp_ms: Option<i64>,
}

/// Authenticate a delivery the adapter has parsed: with a signature, [`verify`] it against the
/// connection's `secret` and the adapter's `max_age_secs`; without one, accept it only when the
/// connection allows unsigned webhooks. The self-hosted gateway and the edge both call this after
/// `parse-webhook`, so what passes one passes the other.
///
/// # Errors
/// Those of [`verify`], and [`Reject::MissingSignature`] for an unsigned delivery the connection
/// does not accept.
pub fn authenticate(
    check: Option<SignatureCheck<'_>>,
    secret: &[u8],
    allow_unsigned: bool,
    now_ms: i64,
    max_age_secs: Option<u64>,
) -> Result<(), Reject> {
    match check {
        Some(c) => verify(c.algorithm, secret, c.signed, c.provided, c.timestamp_ms, now_ms, max_age_secs),
        None if allow_unsigned => Ok(()),
        None => Err(Reject::MissingSignature),
    }
}

fn strip_prefix<'a>(s: &'a str, prefix: &str) -> &'a str {
    match s.get(..prefix.len()) {
        Some(p) if p.eq_ignore_ascii_case(prefix) => &s[prefix.len()..],
        _ => s,
    }
}

/// The deduplication key of one version of a ticket: `ticket:{ticket_id}@{version_ms}`.
///
/// `version_ms` is the ticket's update time when the event carries the ticket (or when a sweep
/// lists it), else the time the event happened. See the crate docs for why this is not the
/// platform's event id.
pub fn dedupe_key(ticket_id: &str, version_ms: i64) -> String {
    format!("ticket:{ticket_id}@{version_ms}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zendesk_sig(secret: &str, ts: &str, body: &[u8]) -> String {
        // As documented: base64(HMAC-SHA256(secret, TIMESTAMP + BODY)).
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(ts.as_bytes());
        mac.update(body);
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }

    fn signed(ts: &str, body: &[u8]) -> Vec<u8> {
        let mut v = ts.as_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    // 2024-04-17T17:18:10Z
    const TS_MS: i64 = 1_713_374_290_000;

    #[test]
    fn authenticate_verifies_signed_and_gates_unsigned() {
        let body = b"{}";
        let ts = "2024-04-17T17:18:10Z";
        let sig = zendesk_sig("s", ts, body);
        let data = signed(ts, body);
        let check = SignatureCheck {
            algorithm: Algorithm::HmacSha256Base64,
            signed: &data,
            provided: &sig,
            timestamp_ms: Some(TS_MS),
        };
        assert_eq!(authenticate(Some(check), b"s", false, TS_MS, Some(300)), Ok(()));
        assert_eq!(authenticate(Some(check), b"other", true, TS_MS, Some(300)), Err(Reject::Forged));
        assert!(matches!(authenticate(Some(check), b"s", false, TS_MS + 301_000, Some(300)), Err(Reject::Stale { .. })));
        assert_eq!(authenticate(Some(check), b"", true, TS_MS, Some(300)), Err(Reject::NoSecret));
        assert_eq!(authenticate(None, b"s", false, TS_MS, None), Err(Reject::MissingSignature));
        assert_eq!(authenticate(None, b"", true, TS_MS, None), Ok(()));
    }

    #[test]
    fn known_vectors() {
        // RFC 4231 test case 2 (HMAC-SHA256, key "Jefe").
        let data = b"what do ya want for nothing?";
        let hex256 = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        assert_eq!(verify(Algorithm::HmacSha256Hex, b"Jefe", data, hex256, None, 0, None), Ok(()));
        assert_eq!(verify(Algorithm::HmacSha256Hex, b"Jefe", data, &hex256.to_uppercase(), None, 0, None), Ok(()));
        assert_eq!(
            verify(Algorithm::HmacSha256Hex, b"Jefe", data, &format!("sha256={hex256}"), None, 0, None),
            Ok(())
        );
        // RFC 2202 test case 2 (HMAC-SHA1, key "Jefe").
        let hex1 = "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79";
        assert_eq!(verify(Algorithm::HmacSha1Hex, b"Jefe", data, hex1, None, 0, None), Ok(()));
        assert_eq!(verify(Algorithm::HmacSha1Hex, b"Jefe", data, &format!(" sha1={hex1}\n"), None, 0, None), Ok(()));
        // The same MAC as base64.
        let b64 = base64::engine::general_purpose::STANDARD.encode(hex::decode(hex256).unwrap());
        assert_eq!(verify(Algorithm::HmacSha256Base64, b"Jefe", data, &b64, None, 0, None), Ok(()));
    }

    #[test]
    fn zendesk_scheme_and_replay_window() {
        let body = br#"{"type":"zen:event-type:ticket.created","id":"e1"}"#;
        let ts = "2024-04-17T17:18:10Z";
        let sig = zendesk_sig("dGhpc19zZWNyZXQ", ts, body);
        let check = |provided: &str, now: i64| {
            verify(Algorithm::HmacSha256Base64, b"dGhpc19zZWNyZXQ", &signed(ts, body), provided, Some(TS_MS), now, Some(300))
        };
        assert_eq!(check(&sig, TS_MS + 1_000), Ok(()));
        assert_eq!(check(&format!("  {sig} "), TS_MS), Ok(()));
        assert_eq!(check(&sig, TS_MS + 300_000), Ok(()), "the window is inclusive");
        let stale = check(&sig, TS_MS + 301_000).unwrap_err();
        assert_eq!((stale.code(), stale.status()), ("stale-timestamp", 401));
        assert!(stale.to_string().contains("-301 s") || stale.to_string().contains("301 s"), "{stale}");
        // From the future, too.
        assert!(matches!(check(&sig, TS_MS - 301_000), Err(Reject::Stale { .. })));
        // A forgery is reported as such even when also stale.
        assert_eq!(check(&zendesk_sig("other", ts, body), TS_MS + 3_600_000), Err(Reject::Forged));
        // A timestamped scheme without a timestamp is refused.
        let none = verify(Algorithm::HmacSha256Base64, b"dGhpc19zZWNyZXQ", &signed(ts, body), &sig, None, TS_MS, Some(300));
        assert!(matches!(none, Err(Reject::Stale { timestamp_ms: None, .. })));
    }

    #[test]
    fn tampering_is_forged() {
        let body = br#"{"topic":"conversation.user.created"}"#;
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"client-secret").unwrap();
        mac.update(body);
        let sig = format!("sha1={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(verify(Algorithm::HmacSha1Hex, b"client-secret", body, &sig, None, 0, None), Ok(()));
        let tampered = br#"{"topic":"conversation.user.createD"}"#;
        assert_eq!(verify(Algorithm::HmacSha1Hex, b"client-secret", tampered, &sig, None, 0, None), Err(Reject::Forged));
        // Undecodable signatures are forgeries, not errors.
        assert_eq!(verify(Algorithm::HmacSha1Hex, b"client-secret", body, "sha1=zz", None, 0, None), Err(Reject::Forged));
        assert_eq!(verify(Algorithm::HmacSha256Base64, b"k", body, "%%%", None, 0, None), Err(Reject::Forged));
        assert_eq!(verify(Algorithm::HmacSha256Hex, b"k", body, "", None, 0, None), Err(Reject::Forged));
        // A truncated MAC does not pass.
        assert_eq!(verify(Algorithm::HmacSha1Hex, b"client-secret", body, &sig[..20], None, 0, None), Err(Reject::Forged));
    }

    #[test]
    fn shared_secret() {
        assert_eq!(verify(Algorithm::SharedSecret, b"s3cret", b"", " s3cret ", None, 0, None), Ok(()));
        assert_eq!(verify(Algorithm::SharedSecret, b"s3cret", b"", "s3cre", None, 0, None), Err(Reject::Forged));
        assert_eq!(verify(Algorithm::SharedSecret, b"s3cret", b"", "", None, 0, None), Err(Reject::Forged));
        assert_eq!(verify(Algorithm::SharedSecret, b"", b"", "", None, 0, None), Err(Reject::NoSecret));
    }

    #[test]
    fn codes_statuses_and_sizes() {
        assert_eq!(check_size(MAX_WEBHOOK_BYTES, MAX_WEBHOOK_BYTES), Ok(()));
        let big = check_size(10 << 20, MAX_WEBHOOK_BYTES).unwrap_err();
        assert_eq!((big.code(), big.status()), ("too-large", 413));
        assert!(big.to_string().contains("10485760 bytes"), "{big}");
        assert_eq!(Reject::Malformed("x".into()).status(), 400);
        assert_eq!(Reject::MissingSignature.status(), 401);
        assert_eq!(Reject::UnknownConnection.status(), 404);
        for (i, code) in Reject::CODES.iter().enumerate() {
            let r = [
                Reject::UnknownConnection,
                Reject::TooLarge { limit: 1, size: None },
                Reject::Malformed(String::new()),
                Reject::MissingSignature,
                Reject::Forged,
                Reject::Stale { timestamp_ms: None, now_ms: 0, max_age_secs: 1 },
                Reject::NoSecret,
            ][i]
                .clone();
            assert_eq!((r.index(), r.code()), (i, *code));
        }
    }

    #[test]
    fn dedupe_keys_name_ticket_versions() {
        assert_eq!(dedupe_key("35436", TS_MS), "ticket:35436@1713374290000");
    }
}
