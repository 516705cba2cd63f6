//! Building requests and reading responses.
//!
//! Adapters never send anything: they return [`Step::Send`] with a request and a state string, and
//! the host calls `resume` with the response. These helpers keep that loop short.

use crate::bindings::deskgate::adapter::types::{
    BucketDraw, Failure, HttpRequest, HttpResponse, Lane, Method, Outcome, PendingRequest, Step,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Builds an [`HttpRequest`].
///
/// ```
/// use deskgate_adapter_sdk::prelude::*;
/// let req = RequestBuilder::new(Method::Put, "/api/v2/tickets/7.json")
///     .lane(Lane::Write)
///     .draw("account")
///     .draw_keyed("ticket-update", "7")
///     .json(&serde_json::json!({"ticket": {"status": "solved"}}))
///     .build();
/// assert_eq!(req.draws.len(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct RequestBuilder {
    req: HttpRequest,
}

impl RequestBuilder {
    /// A request with no body, in the read lane, drawing on nothing yet.
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            req: HttpRequest {
                method,
                path: path.into(),
                headers: Vec::new(),
                body: None,
                lane: Lane::Read,
                draws: Vec::new(),
                idempotency_header: None,
            },
        }
    }

    /// Put the request in a lane.
    pub fn lane(mut self, lane: Lane) -> Self {
        self.req.lane = lane;
        self
    }

    /// Draw one unit from an account-wide bucket.
    pub fn draw(mut self, bucket: &str) -> Self {
        self.req.draws.push(BucketDraw {
            bucket: bucket.to_string(),
            key: None,
            cost: 1,
        });
        self
    }

    /// Draw one unit from a per-object bucket, keyed by the object's id.
    pub fn draw_keyed(mut self, bucket: &str, key: &str) -> Self {
        self.req.draws.push(BucketDraw {
            bucket: bucket.to_string(),
            key: Some(key.to_string()),
            cost: 1,
        });
        self
    }

    /// Add a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.req.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Set a JSON body and its content type.
    pub fn json<T: Serialize + ?Sized>(mut self, body: &T) -> Self {
        // Serializing a `serde_json::Value` or a derived struct cannot fail.
        let bytes = serde_json::to_vec(body).expect("JSON body serializes");
        self.req.body = Some(bytes);
        self.req
            .headers
            .push(("content-type".to_string(), "application/json".to_string()));
        self
    }

    /// Ask the host to send the action's idempotency key in this header.
    pub fn idempotency_header(mut self, name: &str) -> Self {
        self.req.idempotency_header = Some(name.to_string());
        self
    }

    /// The finished request.
    pub fn build(self) -> HttpRequest {
        self.req
    }
}

/// A `Step::Send` of `request`, carrying `state` (any serializable value) to `resume`.
pub fn send<S: Serialize>(request: HttpRequest, state: &S) -> Result<Step, Failure> {
    let state = serde_json::to_string(state).expect("adapter state serializes");
    Ok(Step::Send(PendingRequest { request, state }))
}

/// A finished operation.
pub fn done(outcome: Outcome) -> Result<Step, Failure> {
    Ok(Step::Done(outcome))
}

/// The first value of a header, matched case-insensitively.
pub fn header<'a>(resp: &'a HttpResponse, name: &str) -> Option<&'a str> {
    resp.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Parse a JSON body, or fail with `permanent` naming what could not be read.
pub fn parse_json<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|e| {
        Failure::Permanent(format!(
            "could not read the platform's {what} response: {e}"
        ))
    })
}

/// Parse a JSON body into a `serde_json::Value`, tolerating an empty body as `null`.
pub fn json_body(body: &[u8]) -> serde_json::Value {
    if body.iter().all(u8::is_ascii_whitespace) {
        return serde_json::Value::Null;
    }
    serde_json::from_slice(body).unwrap_or(serde_json::Value::Null)
}

/// Read-only view of a response with the lookups adapters repeat.
#[derive(Debug, Clone, Copy)]
pub struct Response<'a> {
    /// The underlying response.
    pub inner: &'a HttpResponse,
}

impl<'a> Response<'a> {
    /// Wrap a response.
    pub fn new(inner: &'a HttpResponse) -> Self {
        Self { inner }
    }

    /// True for 2xx statuses.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.inner.status)
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        header(self.inner, name)
    }

    /// A header parsed as an unsigned integer.
    pub fn header_u64(&self, name: &str) -> Option<u64> {
        self.header(name).and_then(|v| v.trim().parse().ok())
    }

    /// `Retry-After` in milliseconds, when given in seconds (the form every supported platform
    /// uses).
    pub fn retry_after_ms(&self) -> Option<u64> {
        self.header("retry-after")
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| (s * 1000.0) as u64)
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.inner.body).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(headers: &[(&str, &str)]) -> HttpResponse {
        HttpResponse {
            status: 429,
            headers: headers
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            body: Vec::new(),
        }
    }

    #[test]
    fn headers_match_case_insensitively() {
        let r = resp(&[("Retry-After", "2")]);
        assert_eq!(header(&r, "retry-after"), Some("2"));
        assert_eq!(Response::new(&r).retry_after_ms(), Some(2000));
    }

    #[test]
    fn bad_retry_after_is_ignored() {
        let r = resp(&[("retry-after", "soon")]);
        assert_eq!(Response::new(&r).retry_after_ms(), None);
        let r = resp(&[("retry-after", "-1")]);
        assert_eq!(Response::new(&r).retry_after_ms(), None);
    }

    #[test]
    fn empty_body_is_null() {
        assert_eq!(json_body(b"  "), serde_json::Value::Null);
        assert_eq!(json_body(b"{\"a\":1}")["a"], 1);
    }
}
