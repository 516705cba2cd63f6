//! Spec conformance: every Intercom response the simulator gives for the operations it
//! implements is validated against the response schema of the official OpenAPI description
//! (`shared/specs/intercom/api.intercom.io.2.16.yaml`), looked up by path, method and status.
//!
//! The checker is deliberately small: `$ref` resolution, `allOf`/`oneOf`/`anyOf`, `nullable`,
//! `type`, `required`, `enum`, `properties`, `items` and `additionalProperties` schemas. Extra
//! properties are allowed (real payloads carry keys the schema does not list).
//!
//! One documented deviation: the spec types `admin_assignee_id` / `team_assignee_id` as
//! non-nullable integers, while the live API sends `null` for an unassigned conversation; the
//! simulator does the same, and the checker accepts `null` for exactly those two fields.

mod common;

use std::path::PathBuf;

use common::*;
use deskgate_sim::*;
use serde_json::{Value, json};

const NULL_OK: [&str; 2] = ["admin_assignee_id", "team_assignee_id"];

fn spec() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/specs/intercom/api.intercom.io.2.16.yaml");
    let path = if path.exists() {
        path
    } else {
        PathBuf::from("/work/shared/specs/intercom/api.intercom.io.2.16.yaml")
    };
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_yaml::from_str(&text).expect("spec parses")
}

fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let mut cur = spec;
            for part in r.trim_start_matches("#/").split('/') {
                cur = &cur[part];
            }
            resolve(spec, cur)
        }
        None => schema,
    }
}

fn type_ok(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        _ => true,
    }
}

fn check(spec: &Value, schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
    let nullable_here = schema.get("nullable").and_then(Value::as_bool) == Some(true);
    let s = resolve(spec, schema);
    if v.is_null() {
        let field = at.rsplit('.').next().unwrap_or("");
        let nullable = nullable_here
            || s.get("nullable").and_then(Value::as_bool) == Some(true)
            || NULL_OK.contains(&field);
        if !nullable {
            errs.push(format!("{at}: null but the schema is not nullable"));
        }
        return;
    }
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        for sub in all {
            check(spec, sub, v, at, errs);
        }
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(alts) = s.get(key).and_then(Value::as_array) {
            let ok = alts.iter().any(|alt| {
                let mut e = Vec::new();
                check(spec, alt, v, at, &mut e);
                e.is_empty()
            });
            if !ok {
                errs.push(format!("{at}: matches none of {key}"));
            }
        }
    }
    if let Some(ty) = s.get("type").and_then(Value::as_str)
        && !type_ok(ty, v)
    {
        errs.push(format!("{at}: expected {ty}, got {v}"));
        return;
    }
    if let Some(en) = s.get("enum").and_then(Value::as_array)
        && !en.contains(v)
    {
        errs.push(format!("{at}: {v} not in enum {en:?}"));
    }
    if let Some(obj) = v.as_object() {
        if let Some(req) = s.get("required").and_then(Value::as_array) {
            for r in req.iter().filter_map(Value::as_str) {
                if !obj.contains_key(r) {
                    errs.push(format!("{at}: required property {r} missing"));
                }
            }
        }
        let props = s.get("properties").and_then(Value::as_object);
        for (k, val) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(ps) => check(spec, ps, val, &format!("{at}.{k}"), errs),
                None => {
                    if let Some(extra) = s.get("additionalProperties").filter(|x| x.is_object()) {
                        check(spec, extra, val, &format!("{at}.{k}"), errs);
                    }
                }
            }
        }
    }
    if let (Some(arr), Some(items)) = (v.as_array(), s.get("items")) {
        for (i, x) in arr.iter().enumerate() {
            check(spec, items, x, &format!("{at}[{i}]"), errs);
        }
    }
}

struct Checker {
    spec: Value,
    checked: Vec<String>,
}

impl Checker {
    /// Validates `resp` against the spec's schema for (path template, method, status).
    fn validate(&mut self, path: &str, method: &str, resp: &Resp) {
        let op = &self.spec["paths"][path][method];
        assert!(op.is_object(), "spec has no {method} {path}");
        let status = resp.status.to_string();
        let schema = &op["responses"][&status]["content"]["application/json"]["schema"];
        let schema = if schema.is_null() && resp.status >= 400 {
            &json!({"$ref": "#/components/schemas/error"})
        } else {
            schema
        };
        assert!(
            !schema.is_null(),
            "spec has no {status} response schema for {method} {path}"
        );
        let body = resp.json();
        let mut errs = Vec::new();
        check(&self.spec, schema, &body, "$", &mut errs);
        assert!(
            errs.is_empty(),
            "{method} {path} {status} does not match the spec:\n{}\nbody: {body}",
            errs.join("\n")
        );
        self.checked.push(format!("{method} {path} {status}"));
    }
}

#[tokio::test]
async fn responses_match_the_openapi_description() {
    let mut c = Checker {
        spec: spec(),
        checked: Vec::new(),
    };
    let sim = sim(Platform::Intercom).await;
    let acct = sim.create_account(AccountSpec::default()).unwrap().id;
    let admin = sim.create_agent(acct, AgentSpec::default()).unwrap();
    sim.create_group(
        acct,
        GroupSpec {
            name: Some("Tier 2".into()),
        },
    )
    .unwrap();
    let team = sim.account_info(acct).unwrap().groups[0].id;
    let cred = sim
        .create_credential(acct, CredentialSpec::default())
        .unwrap();
    let http = Http::new(sim.base_url()).with_auth(cred.authorization.clone());
    let aid = admin.id.to_string();

    c.validate("/me", "get", &http.get("/me").await);
    let contact = http
        .post(
            "/contacts",
            json!({"role": "user", "email": "a@b.test", "name": "A"}),
        )
        .await;
    c.validate("/contacts", "post", &contact);
    let cid = contact.json()["id"].as_str().unwrap().to_owned();
    c.validate(
        "/contacts/{contact_id}",
        "get",
        &http.get(&format!("/contacts/{cid}")).await,
    );
    let msg = http
        .post(
            "/conversations",
            json!({"from": {"type": "user", "id": cid}, "body": "Hello there"}),
        )
        .await;
    c.validate("/conversations", "post", &msg);
    let id = msg.json()["conversation_id"].as_str().unwrap().to_owned();
    c.validate(
        "/conversations/{conversation_id}",
        "get",
        &http.get(&format!("/conversations/{id}")).await,
    );

    for body in [
        json!({"message_type": "comment", "type": "admin", "admin_id": aid, "body": "Hi"}),
        json!({"message_type": "note", "type": "admin", "admin_id": admin.id, "body": "<p>internal</p>"}),
        json!({"message_type": "comment", "type": "user", "intercom_user_id": cid, "body": "Thanks"}),
    ] {
        c.validate(
            "/conversations/{conversation_id}/reply",
            "post",
            &http.post(&format!("/conversations/{id}/reply"), body).await,
        );
    }
    for body in [
        json!({"message_type": "assignment", "type": "admin", "admin_id": aid, "assignee_id": aid}),
        json!({"message_type": "assignment", "type": "team", "admin_id": aid, "assignee_id": team.to_string()}),
        json!({"message_type": "close", "type": "admin", "admin_id": aid, "body": "Goodbye :)"}),
        json!({"message_type": "open", "admin_id": aid}),
        json!({"message_type": "snoozed", "admin_id": aid, "snoozed_until": 1_704_100_000}),
    ] {
        c.validate(
            "/conversations/{conversation_id}/parts",
            "post",
            &http.post(&format!("/conversations/{id}/parts"), body).await,
        );
    }
    let tag = http.post("/tags", json!({"name": "vip"})).await;
    c.validate("/tags", "post", &tag);
    let tag_id = tag.json()["id"].as_str().unwrap().to_owned();
    let applied = http
        .post(
            &format!("/conversations/{id}/tags"),
            json!({"id": tag_id, "admin_id": aid}),
        )
        .await;
    c.validate("/conversations/{conversation_id}/tags", "post", &applied);
    c.validate(
        "/conversations/{conversation_id}",
        "get",
        &http.get(&format!("/conversations/{id}")).await,
    );

    // An unassigned, untagged conversation too.
    sim.create_ticket(acct, TicketSpec::default()).unwrap();
    let search = http
        .post("/conversations/search", json!({"query": {"operator": "OR", "value": [
            {"field": "state", "operator": "=", "value": "open"},
            {"field": "tag_ids", "operator": "IN", "value": [tag_id]}]}, "pagination": {"per_page": 1}}))
        .await;
    assert!(search.json()["pages"]["next"].is_object());
    c.validate("/conversations/search", "post", &search);
    c.validate(
        "/conversations",
        "get",
        &http.get("/conversations?per_page=5").await,
    );
    let detached = http
        .send(
            hyper::Method::DELETE,
            &format!("/conversations/{id}/tags/{tag_id}"),
            Some(json!({"admin_id": aid})),
            &[],
        )
        .await;
    c.validate(
        "/conversations/{conversation_id}/tags/{tag_id}",
        "delete",
        &detached,
    );
    c.validate(
        "/conversations/{conversation_id}",
        "delete",
        &http.delete(&format!("/conversations/{id}")).await,
    );
    c.validate(
        "/contacts/{contact_id}",
        "delete",
        &http.delete(&format!("/contacts/{cid}")).await,
    );

    // Errors.
    c.validate(
        "/conversations/{conversation_id}",
        "get",
        &http.get("/conversations/987654").await,
    );
    c.validate(
        "/conversations/{conversation_id}",
        "get",
        &Http::new(sim.base_url())
            .with_auth("Bearer bad")
            .get("/conversations/1")
            .await,
    );
    let ro = sim
        .create_credential(
            acct,
            CredentialSpec {
                scopes: Some(vec!["read_conversations".into()]),
                ..Default::default()
            },
        )
        .unwrap();
    let forbidden = Http::new(sim.base_url())
        .with_auth(ro.authorization)
        .post(
            &format!("/conversations/{id}/reply"),
            json!({"message_type": "comment", "type": "admin", "admin_id": aid, "body": "x"}),
        )
        .await;
    assert_eq!(forbidden.status, 403);
    c.validate("/conversations/{conversation_id}/reply", "post", &forbidden);
    sim.set_features(
        acct,
        FeaturePatch {
            remove: vec!["api".into()],
            ..Default::default()
        },
    )
    .unwrap();
    c.validate(
        "/conversations/{conversation_id}",
        "get",
        &http.get("/conversations/1").await,
    );

    assert!(c.checked.len() >= 25, "{:?}", c.checked);
    sim.shutdown().await;
}

#[test]
fn checker_catches_mismatches() {
    let spec = spec();
    let schema = json!({"$ref": "#/components/schemas/conversation"});
    let mut errs = Vec::new();
    check(
        &spec,
        &schema,
        &json!({"type": "conversation", "id": 5, "open": "yes", "state": "bogus", "title": null}),
        "$",
        &mut errs,
    );
    assert_eq!(errs.len(), 3, "{errs:?}");
    let mut errs = Vec::new();
    check(
        &spec,
        &json!({"$ref": "#/components/schemas/message"}),
        &json!({"type": "user_message"}),
        "$",
        &mut errs,
    );
    assert!(
        errs.iter().any(|e| e.contains("required property id")),
        "{errs:?}"
    );
    let mut errs = Vec::new();
    check(
        &spec,
        &schema,
        &json!({"source": null, "admin_assignee_id": null}),
        "$",
        &mut errs,
    );
    assert_eq!(
        errs,
        vec!["$.source: null but the schema is not nullable".to_string()]
    );
}
