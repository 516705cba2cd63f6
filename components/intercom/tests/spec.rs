//! The adapter against Intercom's published OpenAPI description (2.16).
//!
//! For every operation the adapter uses:
//! 1. its requests hit a path and method the spec has;
//! 2. every property of every JSON body it sends is a property of the spec's request schema
//!    (`$ref`, `oneOf`, `anyOf` and `allOf` resolved; enums and primitive types checked);
//! 3. the spec's response examples parse with the adapter's model types, and its error examples
//!    classify by status.
//!
//! The operations are driven through the adapter itself, answered with the spec's own 200
//! examples, so the parsers see exactly what the spec shows.
//!
//! The spec lives outside the crate (`shared/specs/intercom/`, beside the repository). The test
//! looks in `$DESKGATE_INTERCOM_SPEC`, then `../shared/specs/...` and `specs/...` relative to the
//! workspace root. When it is nowhere it is skipped with a message, except under CI (`CI` set),
//! where a missing spec fails.

use deskgate_adapter_intercom::IntercomAdapter;
use deskgate_adapter_intercom::errors::{classify, need};
use deskgate_adapter_intercom::model::{
    Admin, ContactRef, Conversation, ConversationList, Message, Tag,
};
use deskgate_adapter_sdk::prelude::*;
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;
use std::path::PathBuf;

const SPEC_FILE: &str = "intercom/api.intercom.io.2.16.yaml";

/// The operations the adapter is expected to use.
const EXPECTED_OPERATIONS: &[&str] = &[
    "identifyAdmin",
    "retrieveConversation",
    "searchConversations",
    "replyConversation",
    "manageConversation",
    "attachTagToConversation",
    "createTag",
    "CreateContact",
    "createConversation",
    "deleteConversation",
    "DeleteContact",
];

fn load_spec() -> Option<Value> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(p) = std::env::var("DESKGATE_INTERCOM_SPEC") {
        candidates.push(PathBuf::from(p));
    }
    candidates.push(root.join("../shared/specs").join(SPEC_FILE));
    candidates.push(root.join("specs").join(SPEC_FILE));
    for c in &candidates {
        if let Ok(text) = std::fs::read_to_string(c) {
            let y: serde_yaml_ng::Value =
                serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", c.display()));
            return Some(to_json(y));
        }
    }
    let msg = format!("Intercom OpenAPI description not found; looked in {candidates:?}");
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// YAML to JSON, keys as strings.
fn to_json(y: serde_yaml_ng::Value) -> Value {
    use serde_yaml_ng::Value as Y;
    match y {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                json!(i)
            } else if let Some(u) = n.as_u64() {
                json!(u)
            } else {
                json!(n.as_f64())
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(s) => Value::Array(s.into_iter().map(to_json).collect()),
        Y::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    Y::String(s) => s,
                    other => serde_yaml_ng::to_string(&other)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                };
                out.insert(key, to_json(v));
            }
            Value::Object(out)
        }
        Y::Tagged(t) => to_json(t.value),
    }
}

fn method_name(m: Method) -> &'static str {
    match m {
        Method::Get => "get",
        Method::Post => "post",
        Method::Put => "put",
        Method::Patch => "patch",
        Method::Delete => "delete",
    }
}

/// The spec path template a concrete path matches, preferring literal segments.
fn match_path<'a>(spec: &'a Value, path: &str) -> Option<(&'a str, &'a Value)> {
    let path = path.split('?').next().unwrap_or(path);
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let paths = spec["paths"].as_object()?;
    paths
        .iter()
        .filter_map(|(tpl, item)| {
            let t: Vec<&str> = tpl.trim_start_matches('/').split('/').collect();
            if t.len() != segs.len() {
                return None;
            }
            let mut literal = 0;
            for (a, b) in t.iter().zip(&segs) {
                if a.starts_with('{') && a.ends_with('}') {
                    continue;
                }
                if a != b {
                    return None;
                }
                literal += 1;
            }
            Some((literal, tpl.as_str(), item))
        })
        .max_by_key(|(literal, _, _)| *literal)
        .map(|(_, tpl, item)| (tpl, item))
}

fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    let mut s = schema;
    for _ in 0..16 {
        match s.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let ptr = r.trim_start_matches('#');
                s = spec
                    .pointer(ptr)
                    .unwrap_or_else(|| panic!("unresolvable $ref {r}"));
            }
            None => break,
        }
    }
    s
}

/// Whether `value` fits `schema` as far as this test checks: property names, required
/// properties, string enums and primitive types, through `$ref`, `oneOf`, `anyOf` and `allOf`.
fn fits(spec: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(spec, schema);
    if value.is_null() {
        return Ok(());
    }
    if let Some(branches) = schema.get("oneOf").and_then(Value::as_array) {
        let errs: Vec<String> = branches
            .iter()
            .filter_map(|b| fits(spec, b, value, at).err())
            .collect();
        if errs.len() == branches.len() {
            return Err(format!("{at}: fits no oneOf branch: {errs:?}"));
        }
    }
    // Properties and required names, from the schema and its allOf branches.
    let mut props: Map<String, Value> = Map::new();
    let mut required: Vec<String> = Vec::new();
    let mut collect = |s: &Value| {
        if let Some(p) = s.get("properties").and_then(Value::as_object) {
            for (k, v) in p {
                props.insert(k.clone(), v.clone());
            }
        }
        if let Some(r) = s.get("required").and_then(Value::as_array) {
            required.extend(r.iter().filter_map(Value::as_str).map(str::to_string));
        }
    };
    collect(schema);
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for b in all {
            collect(resolve(spec, b));
        }
    }
    if let Some(t) = schema.get("type").and_then(Value::as_str) {
        let ok = match t {
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => true,
        };
        if !ok {
            return Err(format!("{at}: {value} is not a {t}"));
        }
    }
    if let (Some(en), Some(s)) = (schema.get("enum").and_then(Value::as_array), value.as_str())
        && !en.iter().any(|e| e.as_str() == Some(s))
    {
        return Err(format!("{at}: {s:?} is not one of {en:?}"));
    }
    if let Value::Object(obj) = value {
        if !props.is_empty() {
            for (k, v) in obj {
                let Some(ps) = props.get(k) else {
                    return Err(format!(
                        "{at}: property {k:?} is not in the schema ({:?})",
                        props.keys().collect::<Vec<_>>()
                    ));
                };
                fits(spec, ps, v, &format!("{at}.{k}"))?;
            }
            for r in &required {
                if !obj.contains_key(r) {
                    return Err(format!("{at}: required property {r:?} is missing"));
                }
            }
        }
        // anyOf of `required` lists (create_contact_request): at least one must hold.
        if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
            let holds = any.iter().any(|b| {
                let b = resolve(spec, b);
                if b.get("properties").is_some() || b.get("type").is_some() {
                    return fits(spec, b, value, at).is_ok();
                }
                b.get("required")
                    .and_then(Value::as_array)
                    .is_some_and(|r| {
                        r.iter()
                            .filter_map(Value::as_str)
                            .all(|k| obj.contains_key(k))
                    })
            });
            if !holds {
                return Err(format!("{at}: fits no anyOf branch"));
            }
        }
    }
    if let (Value::Array(items), Some(item_schema)) = (value, schema.get("items")) {
        for (i, v) in items.iter().enumerate() {
            fits(spec, item_schema, v, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// The JSON examples of one response of an operation.
fn examples(op: &Value, status: &str) -> Vec<(String, Value)> {
    op["responses"][status]["content"]["application/json"]["examples"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v["value"].clone()))
                .collect()
        })
        .unwrap_or_default()
}

struct Checked {
    operation_ids: BTreeSet<String>,
    requests: usize,
}

/// Check one request against the spec and answer it with the operation's first 200 example.
fn check_request(spec: &Value, req: &HttpRequest, checked: &mut Checked) -> HttpResponse {
    let (tpl, item) = match_path(spec, &req.path)
        .unwrap_or_else(|| panic!("{} is no path in the spec", req.path));
    let m = method_name(req.method);
    let op = item
        .get(m)
        .unwrap_or_else(|| panic!("{} {tpl} is not in the spec", m.to_uppercase()));
    let id = op["operationId"].as_str().unwrap_or("?").to_string();
    if let Some(body) = &req.body {
        let body: Value = serde_json::from_slice(body).expect("request body is JSON");
        let schema = &op["requestBody"]["content"]["application/json"]["schema"];
        assert!(
            !schema.is_null(),
            "{id} takes no JSON body but the adapter sends {body}"
        );
        if let Err(e) = fits(spec, schema, &body, "body") {
            panic!(
                "{id} ({} {}): {e}\nbody: {body}",
                m.to_uppercase(),
                req.path
            );
        }
    }
    checked.operation_ids.insert(id);
    checked.requests += 1;
    let example = examples(op, "200")
        .into_iter()
        .next()
        .map(|(_, v)| v)
        .unwrap_or(json!({}));
    HttpResponse {
        status: 200,
        headers: vec![("content-type".to_string(), "application/json".to_string())],
        body: serde_json::to_vec(&example).unwrap(),
    }
}

fn conn() -> Connection {
    Connection {
        id: "c1".to_string(),
        plan: "standard".to_string(),
        agent_id: Some("991267715".to_string()),
        settings: Vec::new(),
    }
}

/// Run an operation to the end, every request checked and answered from the spec.
fn drive(spec: &Value, op: Operation, checked: &mut Checked) -> Outcome {
    let mut step = IntercomAdapter::start(conn(), op.clone());
    loop {
        match step {
            Ok(Step::Send(p)) => {
                let resp = check_request(spec, &p.request, checked);
                step = IntercomAdapter::resume(conn(), op.clone(), p.state, resp);
            }
            Ok(Step::Done(o)) => return o,
            Err(f) => panic!("{op:?} failed on the spec's own examples: {f:?}"),
        }
    }
}

#[test]
fn requests_and_responses_match_the_published_spec() {
    let Some(spec) = load_spec() else { return };
    let mut checked = Checked {
        operation_ids: BTreeSet::new(),
        requests: 0,
    };
    let apply = |action| {
        Operation::Apply(ApplyAction {
            ticket_id: "503".to_string(),
            action,
        })
    };
    let everyone = Assignee {
        agent_id: Some("42".to_string()),
        group_id: Some("7".to_string()),
    };
    let ops = vec![
        Operation::WhoAmI,
        Operation::GetTicket("503".to_string()),
        Operation::ListChanged(ListChanged {
            since: 1_700_000_000_000,
            cursor: None,
        }),
        Operation::ListChanged(ListChanged {
            since: 1_700_000_000_000,
            cursor: Some("abc".to_string()),
        }),
        Operation::ListOpen(None),
        Operation::ListOpen(Some("abc".to_string())),
        apply(Action::Reply("Thanks <3".to_string())),
        apply(Action::SetStatus(TicketStatus::Solved)),
        apply(Action::SetStatus(TicketStatus::Open)),
        apply(Action::AddTags(vec![
            "vip".to_string(),
            "refund".to_string(),
        ])),
        apply(Action::Assign(everyone.clone())),
        apply(Action::Resolve(Resolution {
            reply: "Fixed.".to_string(),
            status: TicketStatus::Closed,
            tags: vec!["refund".to_string()],
            assignee: Some(everyone.clone()),
        })),
        apply(Action::Resolve(Resolution {
            reply: "Fixed.".to_string(),
            status: TicketStatus::Open,
            tags: vec![],
            assignee: None,
        })),
        Operation::ReadBack(ApplyAction {
            ticket_id: "503".to_string(),
            action: Action::Reply("Okay!".to_string()),
        }),
        Operation::Probe(vec![
            Capability::ReadTickets,
            Capability::PublicReply,
            Capability::SetStatus,
            Capability::AddTags,
            Capability::Assign,
        ]),
        Operation::Probe(vec![Capability::ReadTickets]),
    ];
    for op in ops {
        match drive(&spec, op.clone(), &mut checked) {
            Outcome::Written(r) => {
                assert!(r.failed.is_none() && !r.applied.is_empty(), "{op:?}: {r:?}")
            }
            Outcome::Probed(r) => assert!(r.iter().all(|c| c.granted), "{op:?}: {r:?}"),
            Outcome::ReadBack(r) => assert!(r.landed, "{op:?}: {r:?}"),
            Outcome::Ticket(t) => assert_eq!(t.id, "503"),
            Outcome::Page(p) => assert!(!p.tickets.is_empty()),
            Outcome::Identity(i) => assert_eq!(i.agent_id, "991267459"),
        }
    }
    let expected: BTreeSet<String> = EXPECTED_OPERATIONS.iter().map(|s| s.to_string()).collect();
    assert_eq!(checked.operation_ids, expected);
    assert!(checked.requests > 20);
}

#[test]
fn every_response_example_parses() {
    let Some(spec) = load_spec() else { return };
    let mut seen = 0;
    for (_, item) in spec["paths"].as_object().unwrap() {
        for (_, op) in item.as_object().unwrap() {
            let Some(id) = op.get("operationId").and_then(Value::as_str) else {
                continue;
            };
            if !EXPECTED_OPERATIONS.contains(&id) {
                continue;
            }
            for (name, ex) in examples(op, "200") {
                let what = format!("{id} / {name}");
                match id {
                    "identifyAdmin" => {
                        let a: Admin = serde_json::from_value(ex).expect(&what);
                        assert!(a.id.is_some(), "{what}");
                    }
                    "retrieveConversation" | "replyConversation" | "manageConversation" => {
                        let c: Conversation = serde_json::from_value(ex).expect(&what);
                        let t = c.clone().into_ticket().expect(&what);
                        assert!(t.created_at > 0, "{what}");
                        assert!(c.last_part_id().is_some(), "{what}");
                    }
                    "searchConversations" => {
                        let l: ConversationList = serde_json::from_value(ex).expect(&what);
                        assert!(!l.conversations.is_empty(), "{what}");
                        for c in l.conversations {
                            c.into_ticket().expect(&what);
                        }
                    }
                    "attachTagToConversation" | "createTag" => {
                        let t: Tag = serde_json::from_value(ex).expect(&what);
                        assert!(t.id.is_some(), "{what}");
                    }
                    "CreateContact" => {
                        let c: ContactRef = serde_json::from_value(ex).expect(&what);
                        assert!(c.id.is_some(), "{what}");
                    }
                    "createConversation" => {
                        let m: Message = serde_json::from_value(ex).expect(&what);
                        assert!(m.conversation_id.is_some(), "{what}");
                    }
                    _ => assert!(ex.is_object(), "{what}"),
                }
                seen += 1;
            }
            // Error examples classify by status without panicking.
            for status in ["400", "401", "403", "404", "422", "429"] {
                for (name, ex) in examples(op, status) {
                    let resp = HttpResponse {
                        status: status.parse().unwrap(),
                        headers: Vec::new(),
                        body: serde_json::to_vec(&ex).unwrap(),
                    };
                    let f = classify(&resp, need::WRITE_CONVERSATIONS);
                    let ok = match status {
                        "401" => matches!(f, Failure::Unauthenticated(_)),
                        "403" => matches!(f, Failure::Forbidden(_)),
                        "404" => matches!(f, Failure::NotFound(_) | Failure::Invalid(_)),
                        "429" => matches!(f, Failure::RateLimited(_)),
                        _ => matches!(f, Failure::Invalid(_)),
                    };
                    assert!(ok, "{id} / {status} {name}: {f:?}");
                }
            }
        }
    }
    assert!(seen >= 12, "only {seen} examples seen");
}

#[test]
fn the_schema_check_rejects_what_the_spec_does_not_allow() {
    let Some(spec) = load_spec() else { return };
    let schema = |path: &str, method: &str| {
        spec["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"].clone()
    };
    let manage = schema("/conversations/{conversation_id}/parts", "post");
    let good = json!({"message_type":"open","admin_id":"1"});
    assert!(fits(&spec, &manage, &good, "body").is_ok());
    // `open_conversation_request` has no `type`.
    let with_type = json!({"message_type":"open","type":"admin","admin_id":"1"});
    assert!(fits(&spec, &manage, &with_type, "body").is_err());
    let snooze_without_time = json!({"message_type":"snoozed","admin_id":"1"});
    assert!(fits(&spec, &manage, &snooze_without_time, "body").is_err());
    let reply = schema("/conversations/{conversation_id}/reply", "post");
    let unknown =
        json!({"message_type":"comment","type":"admin","admin_id":"1","body":"x","public":true});
    assert!(fits(&spec, &reply, &unknown, "body").is_err());
    let search = schema("/conversations/search", "post");
    let bad_page =
        json!({"query":{"field":"open","operator":"=","value":true},"pagination":{"page":2}});
    assert!(fits(&spec, &search, &bad_page, "body").is_err());
    let tag = schema("/conversations/{conversation_id}/tags", "post");
    assert!(fits(&spec, &tag, &json!({"id":86,"admin_id":"1"}), "body").is_err());
}
