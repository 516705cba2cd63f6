//! Freshdesk simulator over real HTTP: endpoints, pagination (Link header, page 300, 30-day
//! default window), search language, auth and 403 kinds, per-endpoint rate caps.

mod common;

use std::time::Duration;

use common::*;
use deskgate_sim::*;
use serde_json::json;

async fn world() -> (SimHandle, u64, CredentialInfo) {
    let sim = sim(Platform::Freshdesk).await;
    let acct = sim.create_account(AccountSpec::default()).unwrap();
    sim.create_agent(acct.id, AgentSpec::default()).unwrap();
    let cred = sim
        .create_credential(acct.id, CredentialSpec::default())
        .unwrap();
    (sim, acct.id, cred)
}

#[tokio::test]
async fn tickets_replies_and_updates() {
    let (sim, acct, cred) = world().await;
    assert!(cred.authorization.starts_with("Basic "));
    let http = Http::new(sim.base_url()).with_auth(cred.authorization.clone());
    let me = http.get("/api/v2/agents/me").await.json();
    assert_eq!(me["type"], "support_agent");
    assert_eq!(me["id"], cred.agent_id);
    assert!(me["contact"]["email"].is_string());

    let r = http
        .post(
            "/api/v2/tickets",
            json!({"subject": "Broken", "description": "<p>It broke</p>", "email": "c@x.test",
                                        "priority": 2, "status": 2, "tags": ["a", "b"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let t = r.json();
    let id = t["id"].as_u64().unwrap();
    assert_eq!(t["status"], 2);
    assert_eq!(t["description_text"], "It broke");
    assert_eq!(t["tags"], json!(["a", "b"]));
    assert_eq!(
        http.get(&format!("/api/v2/tickets/{id}")).await.json()["subject"],
        "Broken"
    );

    let r = http
        .post(
            &format!("/api/v2/tickets/{id}/reply"),
            json!({"body": "<p>Fixed</p>"}),
        )
        .await;
    assert_eq!(r.status, 201);
    let c = r.json();
    assert_eq!(
        (c["incoming"].clone(), c["private"].clone()),
        (json!(false), json!(false))
    );
    assert_eq!(c["body_text"], "Fixed");
    assert_eq!(c["ticket_id"], id);
    let convs = http
        .get(&format!("/api/v2/tickets/{id}/conversations"))
        .await
        .json();
    assert_eq!(convs.as_array().unwrap().len(), 1);

    // PUT replaces tags; status/assign.
    let r = http
        .put(
            &format!("/api/v2/tickets/{id}"),
            json!({"status": 4, "tags": ["b", "c"], "responder_id": cred.agent_id}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.json();
    assert_eq!(
        (
            t["status"].clone(),
            t["tags"].clone(),
            t["responder_id"].clone()
        ),
        (json!(4), json!(["b", "c"]), json!(cred.agent_id))
    );
    // Validation is 400 with the Freshdesk envelope.
    let r = http
        .put(&format!("/api/v2/tickets/{id}"), json!({"priorty": 2}))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["errors"][0],
        json!({"field": "priorty", "message": "Unexpected/invalid field in request", "code": "invalid_field"})
    );
    let r = http
        .put(&format!("/api/v2/tickets/{id}"), json!({"status": 9}))
        .await;
    assert_eq!(r.json()["errors"][0]["code"], "invalid_value");

    let writes = sim.writes(acct, Some(id)).unwrap();
    assert_eq!(
        writes
            .iter()
            .filter(|w| matches!(w.kind, WriteKind::Reply { .. }))
            .count(),
        1
    );
    assert!(writes.iter().any(
        |w| matches!(&w.kind, WriteKind::TagsAdded { tags } if tags == &vec!["c".to_string()])
    ));
    assert!(writes.iter().any(
        |w| matches!(&w.kind, WriteKind::TagsRemoved { tags } if tags == &vec!["a".to_string()])
    ));

    assert_eq!(
        http.delete(&format!("/api/v2/tickets/{id}")).await.status,
        204
    );
    assert_eq!(http.get(&format!("/api/v2/tickets/{id}")).await.status, 404);
    sim.shutdown().await;
}

#[tokio::test]
async fn list_pagination_and_windows() {
    let (sim, acct, cred) = world().await;
    // One old ticket (40 days ago), five recent ones.
    sim.create_ticket(
        acct,
        TicketSpec {
            subject: Some("old".into()),
            created_at_ms: Some(T0 - 40 * 86_400_000),
            ..Default::default()
        },
    )
    .unwrap();
    for i in 0..5 {
        sim.create_ticket(
            acct,
            TicketSpec {
                subject: Some(format!("t{i}")),
                ..Default::default()
            },
        )
        .unwrap();
        sim.clock().advance(Duration::from_secs(1));
    }
    let http = Http::new(sim.base_url()).with_auth(cred.authorization.clone());
    let all = http.get("/api/v2/tickets").await.json();
    assert_eq!(
        all.as_array().unwrap().len(),
        5,
        "only the last 30 days without updated_since"
    );
    let r = http.get("/api/v2/tickets?updated_since=2023-01-01T00:00:00Z&order_by=updated_at&order_type=asc&per_page=2").await;
    let page1 = r.json();
    assert_eq!(page1[0]["subject"], "old");
    let link = r.header("link").unwrap().to_owned();
    assert!(
        link.ends_with("; rel=\"next\"") && link.contains("page=2"),
        "{link}"
    );
    let next = link
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap()
        .to_owned();
    let r2 = http.get(&next).await;
    assert_eq!(r2.json()[0]["subject"], "t1");
    let r3 = http
        .get("/api/v2/tickets?updated_since=2023-01-01T00:00:00Z&per_page=2&page=3")
        .await;
    assert!(r3.header("link").is_none());
    let r = http.get("/api/v2/tickets?page=301").await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"description": "Validation failed", "errors": [{"field": "page",
               "message": "You cannot access tickets beyond the 300th page. Please provide a smaller page number.", "code": "invalid_value"}]})
    );
    assert_eq!(http.get("/api/v2/tickets?per_page=101").await.status, 400);
    sim.shutdown().await;
}

#[tokio::test]
async fn search_language() {
    let (sim, acct, cred) = world().await;
    sim.create_ticket(
        acct,
        TicketSpec {
            status: Some(json!(2)),
            priority: Some(json!(3)),
            tags: vec!["vip".into()],
            ..Default::default()
        },
    )
    .unwrap();
    sim.create_ticket(
        acct,
        TicketSpec {
            status: Some(json!(3)),
            ..Default::default()
        },
    )
    .unwrap();
    sim.create_ticket(
        acct,
        TicketSpec {
            status: Some(json!(4)),
            ..Default::default()
        },
    )
    .unwrap();
    let http = Http::new(sim.base_url()).with_auth(cred.authorization.clone());
    let q = |s: &str| {
        format!(
            "/api/v2/search/tickets?query={}",
            percent_encode(&format!("\"{s}\""))
        )
    };
    let r = http.get(&q("status:2 OR status:3")).await.json();
    assert_eq!(r["total"], 2);
    assert_eq!(r["results"].as_array().unwrap().len(), 2);
    assert_eq!(
        http.get(&q("priority:3 AND tag:'vip'")).await.json()["total"],
        1
    );
    assert_eq!(
        http.get(&q("updated_at:>'2024-01-01'")).await.json()["total"],
        3
    );
    assert_eq!(
        http.get(&q("updated_at:>'2024-01-02'")).await.json()["total"],
        0
    );
    // Unquoted query and page > 10 are refused.
    assert_eq!(
        http.get("/api/v2/search/tickets?query=status:2")
            .await
            .status,
        400
    );
    assert_eq!(
        http.get(&format!("{}&page=11", q("status:2"))).await.status,
        400
    );
    sim.shutdown().await;
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn auth_and_permissions() {
    let (sim, acct, cred) = world().await;
    let t = sim.create_ticket(acct, TicketSpec::default()).unwrap();
    let id = t["id"].as_u64().unwrap();
    let http = Http::new(sim.base_url());
    let r = http
        .with_auth(basic("wrong-key", "X"))
        .get("/api/v2/tickets")
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json(),
        json!({"code": "invalid_credentials", "message": "You have to be logged in to perform this action."})
    );
    assert_eq!(http.get("/api/v2/tickets").await.status, 401);

    let agent = sim
        .create_agent(
            acct,
            AgentSpec {
                role: Some("agent".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let key = sim
        .create_credential(
            acct,
            CredentialSpec {
                agent_id: Some(agent.id),
                ..Default::default()
            },
        )
        .unwrap();
    let a = http.with_auth(key.authorization.clone());
    sim.update_agent(
        acct,
        agent.id,
        AgentPatch {
            remove_privileges: vec!["reply_ticket".into()],
            ..Default::default()
        },
    )
    .unwrap();
    let r = a
        .post(&format!("/api/v2/tickets/{id}/reply"), json!({"body": "x"}))
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json(),
        json!({"code": "access_denied", "message": "You are not authorized to perform this action."})
    );
    // 403 before 404.
    assert_eq!(
        a.post("/api/v2/tickets/99999/reply", json!({"body": "x"}))
            .await
            .status,
        403
    );
    assert_eq!(a.get(&format!("/api/v2/tickets/{id}")).await.status, 200);

    // Plan without API.
    sim.set_plan(
        acct,
        PlanSpec {
            plan: "free".into(),
            high_volume: false,
        },
    )
    .unwrap();
    let r = a.get(&format!("/api/v2/tickets/{id}")).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["code"], "require_feature");

    // Rotation / revocation.
    sim.set_plan(
        acct,
        PlanSpec {
            plan: "pro".into(),
            high_volume: false,
        },
    )
    .unwrap();
    let rotated = sim.rotate_credential(acct, cred.id).unwrap();
    assert_eq!(
        http.with_auth(cred.authorization.clone())
            .get("/api/v2/agents/me")
            .await
            .status,
        401
    );
    assert_eq!(
        http.with_auth(rotated.authorization.clone())
            .get("/api/v2/agents/me")
            .await
            .status,
        200
    );
    sim.revoke_credential(acct, cred.id).unwrap();
    assert_eq!(
        http.with_auth(rotated.authorization)
            .get("/api/v2/agents/me")
            .await
            .status,
        401
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn rate_limits_and_endpoint_caps() {
    let (sim, acct, cred) = world().await;
    sim.set_plan(
        acct,
        PlanSpec {
            plan: "growth".into(),
            high_volume: false,
        },
    )
    .unwrap();
    let info = sim.account_info(acct).unwrap();
    assert_eq!(
        (info.limits.per_minute, info.limits.tickets_list_per_minute),
        (200, 20)
    );
    let key2 = sim
        .create_credential(acct, CredentialSpec::default())
        .unwrap();
    let a = Http::new(sim.base_url()).with_auth(cred.authorization.clone());
    let b = Http::new(sim.base_url()).with_auth(key2.authorization.clone());
    // Tickets List cap (20/min) shared by both keys.
    for i in 0..20 {
        let h = if i % 2 == 0 { &a } else { &b };
        let r = h.get("/api/v2/tickets").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-ratelimit-total"), Some("200"));
        assert_eq!(r.header("x-ratelimit-used-currentrequest"), Some("1"));
    }
    let r = a.get("/api/v2/tickets").await;
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
    assert_eq!(r.header("x-ratelimit-remaining"), Some("180"));
    // Other endpoints still work.
    assert_eq!(a.get("/api/v2/agents/me").await.status, 200);

    // Account limit.
    sim.set_limits(
        acct,
        LimitOverrides {
            per_minute: Some(3),
            ..Default::default()
        },
    )
    .unwrap();
    for _ in 0..3 {
        assert_eq!(b.get("/api/v2/agents/me").await.status, 200);
    }
    let r = a.get("/api/v2/agents/me").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    // Embeds cost extra credits.
    sim.clock().advance(Duration::from_secs(60));
    let t = sim.create_ticket(acct, TicketSpec::default()).unwrap();
    let r = a
        .get(&format!(
            "/api/v2/tickets/{}?include=requester,stats",
            t["id"]
        ))
        .await;
    assert_eq!(r.header("x-ratelimit-used-currentrequest"), Some("3"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(sim.stats(acct).unwrap().rate_limited, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn create_and_update_caps() {
    let (sim, acct, cred) = world().await;
    sim.set_limits(
        acct,
        LimitOverrides {
            ticket_create_per_minute: Some(2),
            ticket_update_per_minute: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    let a = Http::new(sim.base_url()).with_auth(cred.authorization.clone());
    let body = json!({"subject": "s", "description": "d", "email": "e@x.test"});
    assert_eq!(a.post("/api/v2/tickets", body.clone()).await.status, 201);
    assert_eq!(a.post("/api/v2/tickets", body.clone()).await.status, 201);
    assert_eq!(a.post("/api/v2/tickets", body).await.status, 429);
    assert_eq!(
        a.put("/api/v2/tickets/1", json!({"priority": 3}))
            .await
            .status,
        200
    );
    assert_eq!(
        a.put("/api/v2/tickets/1", json!({"priority": 4}))
            .await
            .status,
        429
    );
    sim.shutdown().await;
}
