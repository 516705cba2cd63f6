//! Intercom's rate headers.
//!
//! `X-RateLimit-Limit` (the app's limit), `X-RateLimit-Remaining` and `X-RateLimit-Reset` (UNIX
//! seconds when the window resets) describe the per-app limit, the descriptor's "app" bucket. The
//! workspace-wide limit has no headers of its own.

use deskgate_adapter_sdk::prelude::*;

/// The observation a response's headers give, if any of them parses. Garbage values are ignored.
pub fn observe(resp: &HttpResponse) -> Vec<RateObservation> {
    let r = Response::new(resp);
    let num = |name: &str| r.header(name).and_then(|v| v.trim().parse::<u64>().ok());
    let limit = num("x-ratelimit-limit").and_then(|v| u32::try_from(v).ok());
    let remaining = num("x-ratelimit-remaining").and_then(|v| u32::try_from(v).ok());
    let reset_at = num("x-ratelimit-reset")
        .and_then(|secs| i64::try_from(secs).ok())
        .and_then(|secs| secs.checked_mul(1000));
    if limit.is_none() && remaining.is_none() && reset_at.is_none() {
        return Vec::new();
    }
    vec![RateObservation {
        bucket: "app".to_string(),
        key: None,
        limit,
        remaining,
        reset_ms: None,
        reset_at,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(headers: &[(&str, &str)]) -> HttpResponse {
        HttpResponse {
            status: 200,
            headers: headers
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            body: Vec::new(),
        }
    }

    #[test]
    fn documented_headers_parse() {
        let obs = observe(&resp(&[
            ("X-RateLimit-Limit", "100"),
            ("X-RateLimit-Remaining", "0"),
            ("X-RateLimit-Reset", "1487332520"),
        ]));
        assert_eq!(obs.len(), 1);
        assert_eq!(obs[0].bucket, "app");
        assert_eq!(obs[0].key, None);
        assert_eq!(obs[0].limit, Some(100));
        assert_eq!(obs[0].remaining, Some(0));
        assert_eq!(obs[0].reset_at, Some(1_487_332_520_000));
        assert_eq!(obs[0].reset_ms, None);
    }

    #[test]
    fn garbage_is_ignored() {
        assert!(observe(&resp(&[])).is_empty());
        assert!(
            observe(&resp(&[
                ("x-ratelimit-limit", "lots"),
                ("x-ratelimit-reset", "-5")
            ]))
            .is_empty()
        );
        let obs = observe(&resp(&[
            ("x-ratelimit-limit", "99999999999999"),
            ("x-ratelimit-remaining", " 42 "),
            ("x-ratelimit-reset", "99999999999999999999"),
        ]));
        assert_eq!(obs.len(), 1);
        assert_eq!(obs[0].limit, None);
        assert_eq!(obs[0].remaining, Some(42));
        assert_eq!(obs[0].reset_at, None);
        let obs = observe(&resp(&[("x-ratelimit-reset", "18446744073709551615")]));
        assert!(obs.is_empty());
    }
}
