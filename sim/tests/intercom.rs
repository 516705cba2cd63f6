//! Intercom simulator over real HTTP: conversations, parts, tags, contacts, search pagination,
//! auth errors, app permissions, plan restriction, 10-second rate windows, OAuth code exchange.

mod common;

use std::time::Duration;

use common::*;
use deskgate_sim::*;
use serde_json::{Value, json};

async fn world() -> (SimHandle, u64, CredentialInfo) {
    let sim = sim(Platform::Intercom).await;
    let acct = sim.create_account(AccountSpec::default()).unwrap();
    sim.create_agent(acct.id, AgentSpec::default()).unwrap();
    let cred = sim
        .create_credential(acct.id, CredentialSpec::default())
        .unwrap();
    (sim, acct.id, cred)
}

fn conv(sim: &Sim, acct: u64) -> String {
    sim.create_ticket(acct, TicketSpec::default()).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn conversation_lifecycle() {
    let (sim, acct, cred) = world().await;
    let http = Http::new(sim.base_url()).with_auth(cred.authorization.clone());
    let me = http.get("/me").await.json();
    assert_eq!(me["type"], "admin");
    assert!(me["app"]["id_code"].is_string());
    let admin = me["id"].as_str().unwrap().to_owned();

    let contact = http
        .post(
            "/contacts",
            json!({"role": "user", "email": "u@x.test", "name": "U"}),
        )
        .await
        .json();
    let cid = contact["id"].as_str().unwrap().to_owned();
    assert_eq!(cid.len(), 24);
    let msg = http
        .post(
            "/conversations",
            json!({"from": {"type": "user", "id": cid}, "body": "Help!"}),
        )
        .await;
    assert_eq!(msg.status, 200, "{}", msg.text());
    let id = msg.json()["conversation_id"].as_str().unwrap().to_owned();

    let c = http.get(&format!("/conversations/{id}")).await.json();
    assert_eq!(c["state"], "open");
    assert_eq!(c["open"], true);
    assert_eq!(c["source"]["body"], "<p>Help!</p>");
    assert_eq!(c["conversation_parts"]["type"], "conversation_part.list");

    let r = http
        .post(
            &format!("/conversations/{id}/reply"),
            json!({"message_type": "comment", "type": "admin", "admin_id": admin, "body": "Hi"}),
        )
        .await
        .json();
    assert_eq!(r["conversation_parts"]["total_count"], 1);
    assert_eq!(
        r["conversation_parts"]["conversation_parts"][0]["part_type"],
        "comment"
    );

    let tag = http.post("/tags", json!({"name": "vip"})).await.json();
    assert_eq!(tag["type"], "tag");
    let again = http.post("/tags", json!({"name": "vip"})).await.json();
    assert_eq!(tag["id"], again["id"], "create-or-get");
    let applied = http
        .post(
            &format!("/conversations/{id}/tags"),
            json!({"id": tag["id"], "admin_id": admin}),
        )
        .await
        .json();
    assert_eq!(applied["name"], "vip");
    assert!(applied["applied_at"].is_i64());

    let num_admin: u64 = admin.parse().unwrap();
    let r = http
        .post(&format!("/conversations/{id}/parts"), json!({"message_type": "assignment", "type": "admin", "admin_id": admin, "assignee_id": admin}))
        .await
        .json();
    assert_eq!(r["admin_assignee_id"], num_admin);
    let r = http
        .post(
            &format!("/conversations/{id}/parts"),
            json!({"message_type": "close", "type": "admin", "admin_id": admin, "body": "Bye"}),
        )
        .await
        .json();
    assert_eq!(
        (r["state"].clone(), r["open"].clone()),
        (json!("closed"), json!(false))
    );
    let last = r["conversation_parts"]["conversation_parts"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        (last["part_type"].clone(), last["body"].clone()),
        (json!("close"), json!("<p>Bye</p>"))
    );
    let r = http
        .post(
            &format!("/conversations/{id}/parts"),
            json!({"message_type": "snoozed", "admin_id": admin, "snoozed_until": 1_704_100_000}),
        )
        .await
        .json();
    assert_eq!(r["state"], "snoozed");
    assert_eq!(r["snoozed_until"], 1_704_100_000);

    let ticket: u64 = id.parse().unwrap();
    let writes = sim.writes(acct, Some(ticket)).unwrap();
    let replies = writes
        .iter()
        .filter(|w| matches!(w.kind, WriteKind::Reply { .. }))
        .count();
    assert_eq!(replies, 2, "the reply and the close body");
    assert!(writes.iter().any(|w| w.kind
        == WriteKind::Status {
            from: "open".into(),
            to: "closed".into()
        }));

    // Errors.
    let r = http.get("/conversations/999999").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["type"], "error.list");
    assert_eq!(r.json()["errors"][0]["code"], "not_found");
    let r = http
        .send(
            hyper::Method::GET,
            "/me",
            None,
            &[("intercom-version", "9.9")],
        )
        .await;
    assert_eq!(r.status, 400);
    let ok = http
        .send(
            hyper::Method::GET,
            "/me",
            None,
            &[("intercom-version", "2.11")],
        )
        .await;
    assert_eq!(ok.status, 200);

    assert_eq!(
        http.delete(&format!("/conversations/{id}")).await.json(),
        json!({"id": id, "object": "conversation", "deleted": true})
    );
    assert_eq!(http.get(&format!("/conversations/{id}")).await.status, 404);
    let d = http.delete(&format!("/contacts/{cid}")).await.json();
    assert_eq!(d["deleted"], true);
    sim.shutdown().await;
}

#[tokio::test]
async fn search_with_cursor_pagination() {
    let (sim, acct, cred) = world().await;
    for _ in 0..5 {
        conv(&sim, acct);
        sim.clock().advance(Duration::from_secs(10));
    }
    let http = Http::new(sim.base_url()).with_auth(cred.authorization.clone());
    let admin = sim.account_info(acct).unwrap().agents[0].id.to_string();
    http.post(
        "/conversations/2/parts",
        json!({"message_type": "close", "type": "admin", "admin_id": admin}),
    )
    .await;
    let q = json!({"query": {"operator": "AND", "value": [
        {"field": "updated_at", "operator": ">", "value": (T0 / 1000).to_string()},
        {"field": "open", "operator": "=", "value": true}]},
        "pagination": {"per_page": 2}});
    let p1 = http.post("/conversations/search", q.clone()).await.json();
    assert_eq!(p1["type"], "conversation.list");
    assert_eq!(p1["total_count"], 4);
    assert_eq!(p1["pages"]["total_pages"], 2);
    assert_eq!(p1["conversations"].as_array().unwrap().len(), 2);
    assert!(p1["conversations"][0].get("conversation_parts").is_none());
    let after = p1["pages"]["next"]["starting_after"].as_str().unwrap();
    let mut q2 = q.clone();
    q2["pagination"]["starting_after"] = json!(after);
    let p2 = http.post("/conversations/search", q2).await.json();
    assert_eq!(p2["pages"]["page"], 2);
    assert_eq!(p2["conversations"].as_array().unwrap().len(), 2);
    assert!(p2["pages"].get("next").is_none());
    let ids: Vec<Value> = p1["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .chain(p2["conversations"].as_array().unwrap())
        .map(|c| c["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!("1"), json!("3"), json!("4"), json!("5")]);

    // `>` includes the value.
    let exact = json!({"query": {"field": "created_at", "operator": ">", "value": T0 / 1000 + 40}});
    assert_eq!(
        http.post("/conversations/search", exact).await.json()["total_count"],
        1
    );
    let single =
        json!({"query": {"field": "state", "operator": "IN", "value": ["closed", "snoozed"]}});
    assert_eq!(
        http.post("/conversations/search", single).await.json()["total_count"],
        1
    );
    let bad = json!({"query": {"field": "state", "operator": "=", "value": "open"}, "pagination": {"per_page": 151}});
    assert_eq!(http.post("/conversations/search", bad).await.status, 400);
    sim.shutdown().await;
}

#[tokio::test]
async fn auth_permissions_and_plan() {
    let (sim, acct, cred) = world().await;
    let id = conv(&sim, acct);
    let http = Http::new(sim.base_url());
    let r = http.with_auth("Bearer nope").get("/me").await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json()["errors"][0],
        json!({"code": "unauthorized", "message": "Access Token Invalid"})
    );
    assert!(r.json()["request_id"].is_string());
    assert_eq!(http.get("/me").await.status, 401);

    let limited = sim
        .create_credential(
            acct,
            CredentialSpec {
                scopes: Some(vec!["read_conversations".into()]),
                ..Default::default()
            },
        )
        .unwrap();
    let l = http.with_auth(limited.authorization.clone());
    assert_eq!(l.get(&format!("/conversations/{id}")).await.status, 200);
    let admin = sim.account_info(acct).unwrap().agents[0].id.to_string();
    let r = l
        .post(
            &format!("/conversations/{id}/reply"),
            json!({"message_type": "comment", "type": "admin", "admin_id": admin, "body": "x"}),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["errors"][0]["code"], "action_forbidden");
    assert_eq!(
        r.json()["errors"][0]["data"]["required_permissions"],
        json!(["write_conversations"])
    );
    assert_eq!(
        l.post("/conversations/424242/reply", json!({}))
            .await
            .status,
        403,
        "403 before 404"
    );
    sim.update_scopes(
        acct,
        limited.id,
        ScopePatch {
            remove: vec!["read_conversations".into()],
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(l.get(&format!("/conversations/{id}")).await.status, 403);

    let full = http.with_auth(cred.authorization.clone());
    sim.set_features(
        acct,
        FeaturePatch {
            remove: vec!["api".into()],
            ..Default::default()
        },
    )
    .unwrap();
    let r = full.get(&format!("/conversations/{id}")).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json()["errors"][0],
        json!({"code": "api_plan_restricted", "message": "Active subscription needed."})
    );
    sim.set_features(
        acct,
        FeaturePatch {
            add: vec!["api".into()],
            ..Default::default()
        },
    )
    .unwrap();

    sim.expire_credential(acct, cred.id).unwrap();
    assert_eq!(
        full.get("/me").await.json()["errors"][0]["code"],
        "token_expired"
    );
    sim.revoke_credential(acct, limited.id).unwrap();
    assert_eq!(
        l.get("/me").await.json()["errors"][0]["code"],
        "token_revoked"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn ten_second_windows_per_app_and_workspace() {
    let (sim, acct, cred) = world().await;
    // 60/min per app = 10 per 10 s; 90/min per workspace = 15 per 10 s.
    sim.set_limits(
        acct,
        LimitOverrides {
            app_per_minute: Some(60),
            workspace_per_minute: Some(90),
            ..Default::default()
        },
    )
    .unwrap();
    let http = Http::new(sim.base_url()).with_auth(cred.authorization.clone());
    for i in 0..10 {
        let r = http.get("/me").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-ratelimit-limit"), Some("10"));
        assert_eq!(
            r.header("x-ratelimit-remaining").unwrap(),
            (9 - i).to_string()
        );
        assert_eq!(
            r.header("x-ratelimit-reset").unwrap(),
            ((T0 + 10_000) / 1000).to_string()
        );
    }
    let r = http.get("/me").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["errors"][0]["code"], "rate_limit_exceeded");
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    // A second app of the same workspace has its own app bucket but shares the workspace one.
    let other = sim
        .create_credential(acct, CredentialSpec::default())
        .unwrap();
    let o = Http::new(sim.base_url()).with_auth(other.authorization.clone());
    for _ in 0..5 {
        assert_eq!(o.get("/me").await.status, 200);
    }
    assert_eq!(o.get("/me").await.status, 429, "workspace window exhausted");
    sim.clock().advance(Duration::from_secs(10));
    assert_eq!(http.get("/me").await.status, 200);
    assert_eq!(sim.stats(acct).unwrap().rate_limited, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn oauth_code_exchange() {
    let (sim, acct, _) = world().await;
    let app = sim
        .create_oauth_client(acct, OAuthClientSpec::default())
        .unwrap();
    assert_eq!(app.access_ttl_secs, None);
    let code = sim
        .create_auth_code(
            acct,
            AuthCodeSpec {
                client_id: app.client_id.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    let http = Http::new(sim.base_url());
    let body =
        json!({"code": code.code, "client_id": app.client_id, "client_secret": app.client_secret});
    let r = http.post("/auth/eagle/token", body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.json();
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["token"], t["access_token"]);
    assert!(t.get("refresh_token").is_none() && t.get("expires_in").is_none());
    let api = http.with_auth(format!("Bearer {}", t["token"].as_str().unwrap()));
    assert_eq!(api.get("/me").await.status, 200);
    sim.clock().advance(Duration::from_secs(365 * 86_400));
    assert_eq!(
        api.get("/me").await.status,
        200,
        "Intercom tokens never expire"
    );
    assert_eq!(
        http.post("/auth/eagle/token", body).await.status,
        400,
        "codes are single-use"
    );
    sim.shutdown().await;
}
