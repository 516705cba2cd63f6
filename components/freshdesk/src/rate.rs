//! Reading Freshdesk's rate headers.
//!
//! Every response carries `X-Ratelimit-Total` and `X-Ratelimit-Remaining` for the account's
//! per-minute counter (the "account" bucket). `X-Ratelimit-Used-CurrentRequest` says what this call
//! cost (more than 1 with `include=` embeds); the host already counts its own draws, so it is
//! ignored. A 429 carries `Retry-After` in seconds, which is when the window has room again.
//! Freshdesk sends nothing about the per-endpoint buckets (ticket create/update, tickets list).

use crate::describe::ACCOUNT;
use deskgate_adapter_sdk::prelude::*;

fn header_u32(r: &Response<'_>, name: &str) -> Option<u32> {
    r.header(name).and_then(|v| v.trim().parse::<u32>().ok())
}

/// The observations of one response (none when it carries no readable rate header).
pub fn observe(resp: &HttpResponse) -> Vec<RateObservation> {
    let r = Response::new(resp);
    let limit = header_u32(&r, "x-ratelimit-total");
    let mut remaining = header_u32(&r, "x-ratelimit-remaining");
    let reset_ms = if resp.status == 429 {
        r.retry_after_ms()
    } else {
        None
    };
    if limit.is_none() && remaining.is_none() && reset_ms.is_none() {
        return Vec::new();
    }
    if resp.status == 429 && remaining.is_none() {
        remaining = Some(0);
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
    fn reads_total_and_remaining_case_insensitively() {
        let o = observe(&resp(
            200,
            &[
                ("X-Ratelimit-Total", "400"),
                ("x-ratelimit-remaining", " 398 "),
                ("x-ratelimit-used-currentrequest", "1"),
            ],
        ));
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].bucket, "account");
        assert_eq!(o[0].key, None);
        assert_eq!(o[0].limit, Some(400));
        assert_eq!(o[0].remaining, Some(398));
        assert_eq!(o[0].reset_ms, None);
        assert_eq!(o[0].reset_at, None);
    }

    #[test]
    fn rate_limited_response_reads_retry_after() {
        let o = observe(&resp(
            429,
            &[("retry-after", "42"), ("x-ratelimit-total", "200")],
        ));
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].reset_ms, Some(42_000));
        assert_eq!(o[0].remaining, Some(0));
        assert_eq!(o[0].limit, Some(200));
    }

    #[test]
    fn garbage_is_ignored() {
        assert!(observe(&resp(200, &[])).is_empty());
        assert!(
            observe(&resp(
                200,
                &[
                    ("x-ratelimit-total", "lots"),
                    ("x-ratelimit-remaining", "-3")
                ]
            ))
            .is_empty()
        );
        assert!(observe(&resp(200, &[("x-ratelimit-total", "99999999999999999999")])).is_empty());
        assert!(
            observe(&resp(
                200,
                &[("x-ratelimit-remaining", "1.5"), ("retry-after", "10")]
            ))
            .is_empty()
        );
        assert!(
            observe(&resp(
                429,
                &[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]
            ))
            .is_empty()
        );
        let o = observe(&resp(
            200,
            &[("x-ratelimit-total", "abc"), ("x-ratelimit-remaining", "7")],
        ));
        assert_eq!((o[0].limit, o[0].remaining), (None, Some(7)));
    }
}
