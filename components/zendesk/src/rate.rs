//! Rate-limit headers.
//!
//! Every response carries `X-Rate-Limit` / `X-Rate-Limit-Remaining` (the account-wide per-minute
//! limit); list endpoints add `ratelimit-limit` / `ratelimit-remaining` / `ratelimit-reset`
//! (seconds) and `zendesk-ratelimit-tickets-index: total=100; remaining=99; resets=41`. All but the
//! last describe the "account" bucket. The tickets-index limit is not a bucket the descriptor
//! declares (the adapter never lists `/tickets.json` beyond page 500), so it is parsed but not
//! reported. Garbage values are ignored, never a panic.

use crate::describe::ACCOUNT;
use deskgate_adapter_sdk::prelude::*;

fn first_u32(r: &Response<'_>, names: &[&str]) -> Option<u32> {
    names
        .iter()
        .find_map(|n| r.header(n).and_then(|v| v.trim().parse::<u32>().ok()))
}

/// Observations from a response's headers.
pub fn observe(resp: &HttpResponse) -> Vec<RateObservation> {
    let r = Response::new(resp);
    let limit = first_u32(&r, &["x-rate-limit", "ratelimit-limit"]);
    let remaining = first_u32(&r, &["x-rate-limit-remaining", "ratelimit-remaining"]);
    let reset_ms = r
        .header_u64("ratelimit-reset")
        .map(|s| s.saturating_mul(1000));
    if limit.is_none() && remaining.is_none() && reset_ms.is_none() {
        return Vec::new();
    }
    vec![RateObservation {
        bucket: ACCOUNT.to_string(),
        key: None,
        limit,
        remaining,
        reset_ms,
        reset_at: None,
    }]
}

/// `zendesk-ratelimit-tickets-index: total=100; remaining=99; resets=41`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EndpointLimit {
    /// Requests allowed in the window.
    pub total: Option<u32>,
    /// Requests left.
    pub remaining: Option<u32>,
    /// Seconds until the window resets.
    pub resets: Option<u64>,
}

/// Parse a `zendesk-ratelimit-*` endpoint header; unknown or malformed fields are skipped.
pub fn parse_endpoint_limit(value: &str) -> EndpointLimit {
    let mut out = EndpointLimit::default();
    for field in value.split(';') {
        let Some((k, v)) = field.split_once('=') else {
            continue;
        };
        let v = v.trim();
        match k.trim().to_ascii_lowercase().as_str() {
            "total" => out.total = v.parse().ok(),
            "remaining" => out.remaining = v.parse().ok(),
            "resets" => out.resets = v.parse().ok(),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, headers: &[(&str, &str)]) -> HttpResponse {
        HttpResponse {
            status,
            headers: headers
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            body: Vec::new(),
        }
    }

    #[test]
    fn every_response_headers() {
        let obs = observe(&resp(
            200,
            &[("X-Rate-Limit", "700"), ("X-Rate-Limit-Remaining", "699")],
        ));
        assert_eq!(obs.len(), 1);
        assert_eq!(obs[0].bucket, "account");
        assert_eq!(obs[0].key, None);
        assert_eq!(
            (obs[0].limit, obs[0].remaining, obs[0].reset_ms),
            (Some(700), Some(699), None)
        );
        assert_eq!(obs[0].reset_at, None);
    }

    #[test]
    fn list_endpoint_headers() {
        let obs = observe(&resp(
            200,
            &[
                ("x-rate-limit", "700"),
                ("ratelimit-limit", "700"),
                ("x-rate-limit-remaining", "699"),
                ("ratelimit-remaining", "699"),
                ("ratelimit-reset", "41"),
                (
                    "zendesk-ratelimit-tickets-index",
                    "total=100; remaining=99; resets=41",
                ),
            ],
        ));
        assert_eq!(
            obs.len(),
            1,
            "the undeclared tickets-index bucket is not reported"
        );
        assert_eq!(
            (obs[0].limit, obs[0].remaining, obs[0].reset_ms),
            (Some(700), Some(699), Some(41_000))
        );
        assert_eq!(
            parse_endpoint_limit("total=100; remaining=99; resets=41"),
            EndpointLimit {
                total: Some(100),
                remaining: Some(99),
                resets: Some(41)
            }
        );
    }

    #[test]
    fn account_429_headers() {
        let obs = observe(&resp(
            429,
            &[
                ("retry-after", "1"),
                ("x-rate-limit", "700"),
                ("x-rate-limit-remaining", "0"),
            ],
        ));
        assert_eq!((obs[0].limit, obs[0].remaining), (Some(700), Some(0)));
    }

    #[test]
    fn garbage_is_ignored() {
        assert!(observe(&resp(200, &[])).is_empty());
        assert!(observe(&resp(200, &[("content-type", "application/json")])).is_empty());
        assert!(
            observe(&resp(
                200,
                &[
                    ("x-rate-limit", "lots"),
                    ("x-rate-limit-remaining", "-1"),
                    ("ratelimit-reset", "1e99")
                ]
            ))
            .is_empty()
        );
        let obs = observe(&resp(
            200,
            &[
                ("x-rate-limit", "99999999999999"),
                ("ratelimit-limit", " 400 "),
            ],
        ));
        assert_eq!(obs[0].limit, Some(400));
        for v in [
            "",
            ";;;",
            "total",
            "total=; remaining==3; resets=x",
            "total=1;remaining=2;resets=3;extra=4",
            "\u{1F600}=1",
        ] {
            let _ = parse_endpoint_limit(v);
        }
        assert_eq!(parse_endpoint_limit("TOTAL=5").total, Some(5));
    }
}
