//! One module per family of operations; each owns its state type.
//!
//! - [`read`]: get-ticket, list-changed, list-open, who-am-i.
//! - [`write`]: apply (reply, set-status, add-tags, assign, resolve).
//! - [`probe`]: the permission probe on a throwaway ticket.
//! - [`readback`]: whether an action already landed.

pub mod probe;
pub mod read;
pub mod readback;
pub mod write;

/// Helpers for the tests of the `ops` modules.
#[cfg(test)]
pub(crate) mod testkit {
    use deskgate_adapter_sdk::prelude::*;

    /// A connection on the default plan, optionally knowing its agent.
    pub fn conn(agent: Option<&str>) -> Connection {
        Connection {
            id: "c1".into(),
            plan: "pro".into(),
            agent_id: agent.map(str::to_string),
            settings: Vec::new(),
        }
    }

    /// A response with a body and no headers.
    pub fn resp(status: u16, body: &[u8]) -> HttpResponse {
        HttpResponse {
            status,
            headers: Vec::new(),
            body: body.to_vec(),
        }
    }

    /// A response with headers.
    pub fn resp_h(status: u16, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
        HttpResponse {
            status,
            headers: headers
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            body: body.to_vec(),
        }
    }

    /// A fixture's bytes.
    pub fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The request and state of a `Send` step.
    pub fn sent(step: Result<Step, Failure>) -> (HttpRequest, String) {
        match step {
            Ok(Step::Send(p)) => (p.request, p.state),
            other => panic!("expected a request, got {other:?}"),
        }
    }

    /// The outcome of a `Done` step.
    pub fn finished(step: Result<Step, Failure>) -> Outcome {
        match step {
            Ok(Step::Done(o)) => o,
            other => panic!("expected an outcome, got {other:?}"),
        }
    }

    /// The method's name ("GET", ...).
    pub fn verb(m: Method) -> &'static str {
        match m {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }

    /// "METHOD path" of a request.
    pub fn line(req: &HttpRequest) -> String {
        format!("{} {}", verb(req.method), req.path)
    }

    /// The request's body as JSON.
    pub fn body_json(req: &HttpRequest) -> serde_json::Value {
        serde_json::from_slice(req.body.as_deref().expect("request has a body")).expect("JSON body")
    }

    /// `(bucket, key)` of each draw.
    pub fn draws(req: &HttpRequest) -> Vec<(String, Option<String>, u32)> {
        req.draws
            .iter()
            .map(|d| (d.bucket.clone(), d.key.clone(), d.cost))
            .collect()
    }

    /// Check method, path, lane and account-scoped draws of a request.
    pub fn assert_req(req: &HttpRequest, method: Method, path: &str, lane: Lane, buckets: &[&str]) {
        assert_eq!(verb(req.method), verb(method), "method of {}", req.path);
        assert_eq!(req.path, path);
        assert_eq!(
            format!("{:?}", req.lane),
            format!("{lane:?}"),
            "lane of {}",
            req.path
        );
        let want: Vec<(String, Option<String>, u32)> =
            buckets.iter().map(|b| (b.to_string(), None, 1)).collect();
        assert_eq!(draws(req), want, "draws of {}", req.path);
        assert_eq!(req.idempotency_header, None);
        match &req.body {
            Some(_) => assert!(
                req.headers
                    .iter()
                    .any(|(k, v)| k == "content-type" && v == "application/json")
            ),
            None => assert!(req.headers.is_empty()),
        }
    }
}
