//! Helpers shared by the unit tests.

use deskgate_adapter_sdk::prelude::*;
use serde_json::Value;

/// A connection whose acting admin is 991267715.
pub fn conn() -> Connection {
    Connection {
        id: "c1".to_string(),
        plan: "standard".to_string(),
        agent_id: Some("991267715".to_string()),
        settings: Vec::new(),
    }
}

/// A connection that has not learnt its admin yet.
pub fn conn_without_admin() -> Connection {
    Connection {
        agent_id: None,
        ..conn()
    }
}

/// A response with a JSON body.
pub fn json_resp(status: u16, body: &Value) -> HttpResponse {
    HttpResponse {
        status,
        headers: vec![("content-type".to_string(), "application/json".to_string())],
        body: serde_json::to_vec(body).unwrap(),
    }
}

/// A response with a raw body.
pub fn raw_resp(status: u16, body: &str) -> HttpResponse {
    HttpResponse {
        status,
        headers: Vec::new(),
        body: body.as_bytes().to_vec(),
    }
}

/// A fixture from `tests/fixtures`.
pub fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A fixture as JSON.
pub fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

/// The request and state of a `Step::Send`.
pub fn sent(step: Result<Step, Failure>) -> (HttpRequest, String) {
    match step {
        Ok(Step::Send(p)) => (p.request, p.state),
        Ok(Step::Done(o)) => panic!("expected a request, got done: {o:?}"),
        Err(f) => panic!("expected a request, got {f:?}"),
    }
}

/// The outcome of a `Step::Done`.
pub fn finished(step: Result<Step, Failure>) -> Outcome {
    match step {
        Ok(Step::Done(o)) => o,
        Ok(Step::Send(p)) => panic!("expected done, got a request: {:?}", p.request),
        Err(f) => panic!("expected done, got {f:?}"),
    }
}

/// A request's JSON body.
pub fn body(req: &HttpRequest) -> Value {
    serde_json::from_slice(req.body.as_deref().expect("request has a body")).unwrap()
}

/// Asserts the headers, lane and draws every Intercom request has.
pub fn assert_common(req: &HttpRequest, lane: Lane) {
    let h = |n: &str| {
        req.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(h("Intercom-Version"), Some("2.16"), "{req:?}");
    assert_eq!(h("Accept"), Some("application/json"), "{req:?}");
    if req.body.is_some() {
        assert_eq!(h("content-type"), Some("application/json"), "{req:?}");
    }
    assert_eq!(req.lane, lane, "{req:?}");
    let draws: Vec<(&str, Option<&str>, u32)> = req
        .draws
        .iter()
        .map(|d| (d.bucket.as_str(), d.key.as_deref(), d.cost))
        .collect();
    assert_eq!(draws, vec![("app", None, 1), ("workspace", None, 1)]);
    assert_eq!(req.idempotency_header, None);
}

/// A minimal conversation in `state`, with the given parts (`[(id, part_type, author_type, body)]`),
/// tags and assignees.
pub fn conversation(
    id: &str,
    state: &str,
    parts: &[(&str, &str, &str, &str)],
    tags: &[&str],
    admin: Option<&str>,
    team: Option<&str>,
) -> Value {
    let parts: Vec<Value> = parts
        .iter()
        .map(|(pid, pt, at, b)| {
            serde_json::json!({"type":"conversation_part","id":pid,"part_type":pt,"body":b,
                "created_at":1700000100,"author":{"type":at,"id":if *at == "admin" {"991267715"} else {"u1"}}})
        })
        .collect();
    let tags: Vec<Value> = tags
        .iter()
        .map(|t| serde_json::json!({"type":"tag","id":"1","name":t}))
        .collect();
    serde_json::json!({
        "type": "conversation", "id": id, "created_at": 1700000000, "updated_at": 1700000100,
        "open": state != "closed", "state": state,
        "admin_assignee_id": admin.map(|a| a.parse::<i64>().unwrap()),
        "team_assignee_id": team.map(|a| a.parse::<i64>().unwrap()),
        "tags": {"type": "tag.list", "tags": tags},
        "source": {"type":"conversation","subject":"","body":"<p>help</p>","author":{"type":"user","id":"u1"}},
        "contacts": {"type":"contact.list","contacts":[{"type":"contact","id":"u1"}]},
        "conversation_parts": {"type":"conversation_part.list","conversation_parts": parts, "total_count": parts.len()}
    })
}
