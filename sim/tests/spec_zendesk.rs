//! Spec conformance for Zendesk: the simulator's envelopes are compared with real responses
//! recorded against Zendesk (`shared/specs/zendesk/cassettes`, VCR JSON with base64 bodies).
//!
//! For each recorded kind (ticket show, users/me, ticket update, ticket create, ticket list) the
//! sim's response must have the same top-level keys, and every field the recordings have on the
//! ticket / user / audit objects must be present with a JSON type the recordings also show for
//! that field (a field recorded as both `null` and integer may be either). Newer fields may be extra.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use base64::Engine as _;
use common::*;
use deskgate_sim::*;
use serde_json::{Value, json};

fn cassette_dir() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/specs/zendesk/cassettes");
    if p.exists() {
        p
    } else {
        PathBuf::from("/work/shared/specs/zendesk/cassettes")
    }
}

/// (method, uri, response body) of every interaction of every cassette.
fn recordings() -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(cassette_dir()).expect("cassettes") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for i in v["http_interactions"].as_array().unwrap() {
            let body = &i["response"]["body"];
            let raw = match body["base64_string"].as_str() {
                Some(b) => base64::engine::general_purpose::STANDARD
                    .decode(b.replace('\n', ""))
                    .unwrap(),
                None => body["string"].as_str().unwrap_or("").as_bytes().to_vec(),
            };
            let Ok(json) = serde_json::from_slice::<Value>(&raw) else {
                continue;
            };
            out.push((
                i["request"]["method"].as_str().unwrap().to_owned(),
                i["request"]["uri"].as_str().unwrap().to_owned(),
                json,
            ));
        }
    }
    out
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Field name → JSON types seen across `objects`.
fn field_types<'a>(
    objects: impl Iterator<Item = &'a Value>,
) -> BTreeMap<String, BTreeSet<&'static str>> {
    let mut m: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
    for o in objects {
        for (k, v) in o.as_object().unwrap() {
            m.entry(k.clone()).or_default().insert(kind(v));
        }
    }
    m
}

fn compare(
    what: &str,
    recorded: &BTreeMap<String, BTreeSet<&'static str>>,
    ours: &Value,
    errs: &mut Vec<String>,
) {
    let obj = ours
        .as_object()
        .unwrap_or_else(|| panic!("{what} is not an object: {ours}"));
    for (k, types) in recorded {
        match obj.get(k) {
            None => errs.push(format!("{what}.{k} missing")),
            Some(v) if !types.contains(kind(v)) => errs.push(format!(
                "{what}.{k} is {} but recorded as {types:?}",
                kind(v)
            )),
            _ => {}
        }
    }
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[tokio::test]
async fn envelopes_match_the_recordings() {
    let recs = recordings();
    let find = |method: &str, suffix: &str, key: &str| -> Vec<Value> {
        recs.iter()
            .filter(|(m, u, b)| m == method && u.ends_with(suffix) && b.get(key).is_some())
            .map(|(_, _, b)| b.clone())
            .collect()
    };
    let shows = find("get", "/tickets/1", "ticket");
    let mes = find("get", "/users/me", "user");
    let updates = find("put", "/tickets/8868", "ticket");
    let creates = find("post", "/tickets", "ticket");
    let lists = find("get", "/tickets/recent", "tickets");
    assert!(
        !shows.is_empty()
            && !mes.is_empty()
            && !updates.is_empty()
            && !creates.is_empty()
            && !lists.is_empty()
    );

    // Ticket fields: every recorded ticket, wherever it appears.
    let all_tickets: Vec<Value> = recs
        .iter()
        .flat_map(|(_, _, b)| {
            let mut v: Vec<Value> = b.get("ticket").cloned().into_iter().collect();
            v.extend(
                b.get("tickets")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            );
            v
        })
        .collect();
    let ticket_fields = field_types(all_tickets.iter());
    let user_fields = field_types(mes.iter().map(|b| &b["user"]));
    let audits: Vec<Value> = updates
        .iter()
        .chain(&creates)
        .map(|b| b["audit"].clone())
        .collect();
    let audit_fields = field_types(audits.iter());
    let events: Vec<Value> = audits
        .iter()
        .flat_map(|a| a["events"].as_array().cloned().unwrap_or_default())
        .collect();
    let comment_event_fields = field_types(events.iter().filter(|e| e["type"] == "Comment"));
    let mut change_event_fields = field_types(events.iter().filter(|e| e["type"] == "Change"));
    // `value` / `previous_value` carry whatever the field holds.
    change_event_fields.remove("value");
    change_event_fields.remove("previous_value");

    let sim = sim(Platform::Zendesk).await;
    let acct = sim.create_account(AccountSpec::default()).unwrap().id;
    sim.create_agent(acct, AgentSpec::default()).unwrap();
    let cred = sim
        .create_credential(acct, CredentialSpec::default())
        .unwrap();
    let http = Http::new(sim.base_url()).with_auth(cred.authorization.clone());
    let mut errs = Vec::new();

    let created = http
        .post(
            "/api/v2/tickets.json",
            json!({"ticket": {"type": "question", "subject": "This is a question?", "comment": {"value": "Indeed it is!"},
                              "priority": "normal", "tags": ["awesome", "blossom"]}}),
        )
        .await;
    assert_eq!(created.status, 201);
    let created = created.json();
    assert_eq!(keys(&created), keys(&creates[0]), "create envelope");
    compare(
        "create.ticket",
        &ticket_fields,
        &created["ticket"],
        &mut errs,
    );
    compare("create.audit", &audit_fields, &created["audit"], &mut errs);
    compare(
        "create.audit.events[Comment]",
        &comment_event_fields,
        &created["audit"]["events"][0],
        &mut errs,
    );
    let id = created["ticket"]["id"].as_u64().unwrap();

    let shown = http.get(&format!("/api/v2/tickets/{id}")).await.json();
    assert_eq!(keys(&shown), keys(&shows[0]), "show envelope");
    compare("show.ticket", &ticket_fields, &shown["ticket"], &mut errs);

    let me = http.get("/api/v2/users/me").await.json();
    assert_eq!(keys(&me), keys(&mes[0]), "users/me envelope");
    let mut user_fields = user_fields;
    // Redacted in the recording (and a browser-session artefact, not an API field).
    user_fields.remove("authenticity_token");
    compare("me.user", &user_fields, &me["user"], &mut errs);

    let updated = http
        .put(
            &format!("/api/v2/tickets/{id}"),
            json!({"ticket": {"subject": "TESTDATA", "comment": {"body": "x", "public": false}}}),
        )
        .await
        .json();
    assert_eq!(keys(&updated), keys(&updates[0]), "update envelope");
    compare(
        "update.ticket",
        &ticket_fields,
        &updated["ticket"],
        &mut errs,
    );
    compare("update.audit", &audit_fields, &updated["audit"], &mut errs);
    let change = updated["audit"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "Change")
        .unwrap()
        .clone();
    compare(
        "update.audit.events[Change]",
        &change_event_fields,
        &change,
        &mut errs,
    );

    let list = http.get("/api/v2/tickets.json").await.json();
    assert_eq!(keys(&list), keys(&lists[0]), "list envelope");
    compare(
        "list.tickets[0]",
        &ticket_fields,
        &list["tickets"][0],
        &mut errs,
    );
    let comments = http
        .get(&format!("/api/v2/tickets/{id}/comments.json"))
        .await
        .json();
    assert_eq!(
        keys(&comments),
        keys(&lists[0])
            .into_iter()
            .map(|k| k.replace("tickets", "comments"))
            .collect()
    );

    assert!(
        errs.is_empty(),
        "differences from the recordings:\n{}",
        errs.join("\n")
    );
    sim.shutdown().await;
}
