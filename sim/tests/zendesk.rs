//! Zendesk simulator over real HTTP: endpoints and envelopes, pagination, auth and OAuth
//! rotation, 403 kinds, rate limits, idempotency.

mod common;

use std::time::Duration;

use common::*;
use deskgate_sim::*;
use hyper::Method;
use serde_json::json;

async fn world() -> (SimHandle, u64, CredentialInfo) {
    let sim = sim(Platform::Zendesk).await;
    let acct = sim.create_account(AccountSpec::default()).unwrap();
    sim.create_agent(
        acct.id,
        AgentSpec {
            email: Some("admin@acme.test".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let cred = sim
        .create_credential(acct.id, CredentialSpec::default())
        .unwrap();
    (sim, acct.id, cred)
}

fn ticket(sim: &Sim, acct: u64, subject: &str) -> u64 {
    let t = sim
        .create_ticket(
            acct,
            TicketSpec {
                subject: Some(subject.into()),
                kind: Some("question".into()),
                priority: Some("normal".into()),
                ..Default::default()
            },
        )
        .unwrap();
    t["id"].as_u64().unwrap()
}

#[tokio::test]
async fn ticket_read_update_and_comments() {
    let (sim, acct, cred) = world().await;
    let id = ticket(&sim, acct, "Printer on fire");
    let http = Http::new(sim.base_url()).with_auth(cred.authorization.clone());

    // `.json` suffix optional.
    let a = http.get(&format!("/api/v2/tickets/{id}.json")).await;
    let b = http.get(&format!("/api/v2/tickets/{id}")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json(), b.json());
    let t = &a.json()["ticket"];
    assert_eq!(t["subject"], "Printer on fire");
    assert_eq!(t["status"], "new");
    assert_eq!(t["created_at"], "2024-01-01T00:00:00Z");
    assert!(a.header("x-rate-limit").is_some() && a.header("x-rate-limit-remaining").is_some());

    let agent = cred.agent_id;
    let r = http
        .put(
            &format!("/api/v2/tickets/{id}.json"),
            json!({"ticket": {"comment": {"body": "On it", "public": true}, "status": "pending",
                              "assignee_id": agent, "additional_tags": ["vip"]}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["ticket"]["status"], "pending");
    assert_eq!(v["ticket"]["assignee_id"], agent);
    assert_eq!(v["ticket"]["tags"], json!(["vip"]));
    let events = v["audit"]["events"].as_array().unwrap();
    assert_eq!(events[0]["type"], "Comment");
    assert_eq!(events[0]["body"], "On it");
    assert!(events.iter().any(|e| e["type"] == "Change"
        && e["field_name"] == "status"
        && e["previous_value"] == "new"));

    let c = http
        .get(&format!(
            "/api/v2/tickets/{id}/comments.json?sort_order=desc"
        ))
        .await
        .json();
    assert_eq!(c["count"], 2);
    assert_eq!(c["comments"][0]["plain_body"], "On it");
    assert_eq!(c["comments"][0]["type"], "Comment");
    assert!(
        c["comments"][0]["html_body"]
            .as_str()
            .unwrap()
            .contains("On it")
    );
    assert_eq!(c["next_page"], json!(null));

    // Write log: exactly one reply.
    let writes = sim.writes(acct, Some(id)).unwrap();
    let replies = writes
        .iter()
        .filter(|w| matches!(w.kind, WriteKind::Reply { .. }))
        .count();
    assert_eq!(replies, 1);
    assert!(writes.iter().any(|w| w.kind
        == WriteKind::Status {
            from: "new".into(),
            to: "pending".into()
        }));
    assert!(
        writes
            .iter()
            .skip(1)
            .all(|w| w.credential_id == Some(cred.id))
    );
    assert_eq!(writes[0].credential_id, None, "created through the library");

    // Tags endpoints: PUT adds, POST replaces, DELETE removes, GET lists.
    let put = http
        .put(
            &format!("/api/v2/tickets/{id}/tags.json"),
            json!({"tags": ["a"]}),
        )
        .await
        .json();
    assert_eq!(put["tags"], json!(["vip", "a"]));
    let post = http
        .post(
            &format!("/api/v2/tickets/{id}/tags"),
            json!({"tags": ["x", "y"]}),
        )
        .await
        .json();
    assert_eq!(post["tags"], json!(["x", "y"]));
    let del = http
        .send(
            Method::DELETE,
            &format!("/api/v2/tickets/{id}/tags"),
            Some(json!({"tags": ["x"]})),
            &[],
        )
        .await;
    assert_eq!(del.json()["tags"], json!(["y"]));
    assert_eq!(
        http.get(&format!("/api/v2/tickets/{id}/tags")).await.json()["tags"],
        json!(["y"])
    );

    // Closed tickets refuse updates with the exact 422.
    http.put(
        &format!("/api/v2/tickets/{id}"),
        json!({"ticket": {"status": "closed"}}),
    )
    .await;
    let r = http
        .put(
            &format!("/api/v2/tickets/{id}"),
            json!({"ticket": {"status": "open"}}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(
        r.json()["details"]["status"][0]["description"],
        "Status closed prevents ticket update"
    );

    // Delete, then 404 RecordNotFound.
    assert_eq!(
        http.delete(&format!("/api/v2/tickets/{id}.json"))
            .await
            .status,
        204
    );
    let r = http.get(&format!("/api/v2/tickets/{id}")).await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        json!({"error": "RecordNotFound", "description": "Not found"})
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn create_with_idempotency_key() {
    let (sim, acct, cred) = world().await;
    let http = Http::new(sim.base_url()).with_auth(cred.authorization.clone());
    let body = json!({"ticket": {"subject": "Hi", "comment": {"body": "Hello", "public": true}, "tags": ["x"]}});
    let a = http
        .send(
            Method::POST,
            "/api/v2/tickets.json",
            Some(body.clone()),
            &[("idempotency-key", "k1")],
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text());
    assert_eq!(a.header("x-idempotency-lookup"), Some("miss"));
    assert!(a.header("location").unwrap().ends_with(".json"));
    let b = http
        .send(
            Method::POST,
            "/api/v2/tickets.json",
            Some(body),
            &[("idempotency-key", "k1")],
        )
        .await;
    assert_eq!(b.status, 201);
    assert_eq!(b.header("x-idempotency-lookup"), Some("hit"));
    assert_eq!(a.json()["ticket"]["id"], b.json()["ticket"]["id"]);
    let other = json!({"ticket": {"subject": "Other", "comment": {"body": "x"}}});
    let c = http
        .send(
            Method::POST,
            "/api/v2/tickets.json",
            Some(other.clone()),
            &[("idempotency-key", "k1")],
        )
        .await;
    assert_eq!(c.status, 400);
    assert_eq!(c.json()["error"], "IdempotentRequestError");
    // Keys expire after 2 hours.
    sim.clock().advance(Duration::from_secs(2 * 3600 + 1));
    let d = http
        .send(
            Method::POST,
            "/api/v2/tickets.json",
            Some(other),
            &[("idempotency-key", "k1")],
        )
        .await;
    assert_eq!(d.status, 201);
    assert_eq!(d.header("x-idempotency-lookup"), Some("miss"));
    let created = sim
        .writes(acct, None)
        .unwrap()
        .iter()
        .filter(|w| matches!(w.kind, WriteKind::Created { .. }))
        .count();
    assert_eq!(created, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn list_search_and_incremental_pagination() {
    let (sim, acct, cred) = world().await;
    for i in 0..5 {
        ticket(&sim, acct, &format!("T{i}"));
    }
    let http = Http::new(sim.base_url()).with_auth(cred.authorization.clone());
    let p1 = http.get("/api/v2/tickets.json?per_page=2").await;
    assert!(p1.header("ratelimit-remaining").is_some());
    let p1 = p1.json();
    assert_eq!(p1["count"], 5);
    assert_eq!(p1["tickets"].as_array().unwrap().len(), 2);
    let next = p1["next_page"].as_str().unwrap().to_owned();
    assert!(next.starts_with("http://127.0.0.1:"));
    let p2 = http.get(&next).await.json();
    assert_eq!(p2["tickets"][0]["subject"], "T2");

    // Search grammar with status ordering.
    http.put("/api/v2/tickets/1", json!({"ticket": {"status": "solved"}}))
        .await;
    http.put(
        "/api/v2/tickets/2",
        json!({"ticket": {"status": "pending", "tags": ["vip"]}}),
    )
    .await;
    let s = http
        .get("/api/v2/search.json?query=type%3Aticket%20status%3Csolved&per_page=2")
        .await
        .json();
    assert_eq!(s["count"], 4);
    assert_eq!(s["results"][0]["result_type"], "ticket");
    assert!(s["next_page"].as_str().unwrap().contains("page=2"));
    let s = http
        .get("/api/v2/search.json?query=type:ticket%20tags:vip")
        .await
        .json();
    assert_eq!(s["count"], 1);
    let s = http
        .get("/api/v2/search.json?query=status%3Epending")
        .await
        .json();
    assert_eq!(s["count"], 1);

    // Incremental: the last minute is excluded; then paginate with cursors.
    let r = http
        .get("/api/v2/incremental/tickets/cursor.json?start_time=0")
        .await
        .json();
    assert_eq!(r["tickets"].as_array().unwrap().len(), 0);
    sim.clock().advance(Duration::from_secs(61));
    let r = http
        .get("/api/v2/incremental/tickets/cursor.json?start_time=0&per_page=3")
        .await
        .json();
    assert_eq!(r["tickets"].as_array().unwrap().len(), 3);
    assert_eq!(r["end_of_stream"], false);
    for k in ["after_url", "after_cursor", "before_url", "before_cursor"] {
        assert!(r.get(k).is_some(), "{k}");
    }
    let cursor = r["after_cursor"].as_str().unwrap();
    let r2 = http
        .get(&format!(
            "/api/v2/incremental/tickets/cursor.json?cursor={cursor}"
        ))
        .await
        .json();
    assert_eq!(r2["tickets"].as_array().unwrap().len(), 2);
    assert_eq!(r2["end_of_stream"], true);
    sim.shutdown().await;
}

#[tokio::test]
async fn auth_failures_and_the_guest_user() {
    let (sim, acct, cred) = world().await;
    let http = Http::new(sim.base_url());
    let me = http
        .with_auth(cred.authorization.clone())
        .get("/api/v2/users/me.json")
        .await
        .json();
    assert_eq!(me["user"]["role"], "admin");
    assert_eq!(me["user"]["email"], "admin@acme.test");

    let bad = http.with_auth(basic("admin@acme.test/token", "nope"));
    let r = bad.get("/api/v2/tickets/1.json").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json(), json!({"error": "Couldn't authenticate you"}));
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"Web Password\"")
    );
    // /users/me answers 200 with the anonymous user instead.
    let g = bad.get("/api/v2/users/me.json").await;
    assert_eq!(g.status, 200);
    assert_eq!(g.json()["user"]["id"], json!(null));
    assert_eq!(g.json()["user"]["role"], "end-user");
    // Wrong email with a valid token.
    let r = http
        .with_auth(basic("someone@else.test/token", &cred.token))
        .get("/api/v2/tickets")
        .await;
    assert_eq!(r.status, 401);

    // Revocation and rotation.
    let c2 = sim
        .create_credential(acct, CredentialSpec::default())
        .unwrap();
    let h2 = http.with_auth(c2.authorization.clone());
    assert_eq!(h2.get("/api/v2/tickets").await.status, 200);
    sim.revoke_credential(acct, c2.id).unwrap();
    assert_eq!(h2.get("/api/v2/tickets").await.status, 401);
    let rotated = sim.rotate_credential(acct, cred.id).unwrap();
    assert_eq!(
        http.with_auth(cred.authorization.clone())
            .get("/api/v2/tickets")
            .await
            .status,
        401
    );
    assert_eq!(
        http.with_auth(rotated.authorization.clone())
            .get("/api/v2/tickets")
            .await
            .status,
        200
    );

    // The request log saw all of it.
    let log = sim.requests(RequestFilter::default());
    assert!(
        log.iter()
            .any(|r| r.status == 401 && r.outcome == Outcome::Unauthorized)
    );
    assert!(
        log.iter()
            .any(|r| r.path == "/api/v2/users/me.json" && r.credential_id == Some(cred.id))
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn oauth_refresh_rotates_and_access_tokens_expire() {
    let (sim, acct, _) = world().await;
    let client = sim
        .create_oauth_client(
            acct,
            OAuthClientSpec {
                access_ttl_secs: Some(600),
                ..Default::default()
            },
        )
        .unwrap();
    let code = sim
        .create_auth_code(
            acct,
            AuthCodeSpec {
                client_id: client.client_id.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    let http = Http::new(sim.base_url());
    // Code exchange, form-encoded.
    let form = format!(
        "grant_type=authorization_code&code={}&client_id={}&client_secret={}&redirect_uri=https%3A%2F%2Fx",
        code.code, client.client_id, client.client_secret
    );
    let r = http
        .send_raw(
            Method::POST,
            "/oauth/tokens",
            Some(form.into_bytes()),
            &[("content-type", "application/x-www-form-urlencoded")],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let t1 = r.json();
    assert_eq!(t1["token_type"], "bearer");
    assert_eq!(t1["expires_in"], 600);
    let access1 = t1["access_token"].as_str().unwrap().to_owned();
    let refresh1 = t1["refresh_token"].as_str().unwrap().to_owned();
    let api = http.with_auth(format!("Bearer {access1}"));
    assert_eq!(api.get("/api/v2/tickets.json").await.status, 200);

    // Expiry by clock.
    sim.clock().advance(Duration::from_secs(601));
    let r = api.get("/api/v2/tickets.json").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "invalid_token");

    // Refresh (JSON body): new pair, old pair dead.
    let body = json!({"grant_type": "refresh_token", "refresh_token": refresh1,
                      "client_id": client.client_id, "client_secret": client.client_secret});
    let t2 = http.post("/oauth/tokens", body.clone()).await;
    assert_eq!(t2.status, 200, "{}", t2.text());
    let t2 = t2.json();
    assert_ne!(t2["refresh_token"], json!(refresh1));
    let api2 = http.with_auth(format!("Bearer {}", t2["access_token"].as_str().unwrap()));
    assert_eq!(api2.get("/api/v2/tickets.json").await.status, 200);
    // The used refresh token fails with invalid_grant.
    let again = http.post("/oauth/tokens", body).await;
    assert_eq!(again.status, 400);
    assert_eq!(again.json()["error"], "invalid_grant");
    // A bad client secret is invalid_client.
    let bad = http
        .post(
            "/oauth/tokens",
            json!({"grant_type": "refresh_token", "refresh_token": t2["refresh_token"],
                                      "client_id": client.client_id, "client_secret": "wrong"}),
        )
        .await;
    assert_eq!(bad.status, 401);
    assert_eq!(bad.json()["error"], "invalid_client");

    // expire-tokens-now.
    assert!(sim.expire_tokens(acct).unwrap() >= 1);
    assert_eq!(api2.get("/api/v2/tickets.json").await.status, 401);
    sim.shutdown().await;
}

#[tokio::test]
async fn forbidden_scope_role_and_plan() {
    let (sim, acct, _) = world().await;
    let id = ticket(&sim, acct, "x");
    let http = Http::new(sim.base_url());
    // Scope: a read-only OAuth token cannot update.
    let ro = sim
        .create_credential(
            acct,
            CredentialSpec {
                kind: Some(CredKind::Oauth),
                scopes: Some(vec!["tickets:read".into()]),
                ..Default::default()
            },
        )
        .unwrap();
    let api = http.with_auth(ro.authorization.clone());
    assert_eq!(api.get(&format!("/api/v2/tickets/{id}")).await.status, 200);
    let r = api
        .put(
            &format!("/api/v2/tickets/{id}"),
            json!({"ticket": {"status": "open"}}),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json(),
        json!({"error": "Forbidden", "description": "You are missing the following required scopes: tickets:write"})
    );
    // 403 wins over 404.
    assert_eq!(
        api.put(
            "/api/v2/tickets/999999",
            json!({"ticket": {"status": "open"}})
        )
        .await
        .status,
        403
    );
    // Removing a scope through the admin API.
    let rw = sim
        .create_credential(
            acct,
            CredentialSpec {
                kind: Some(CredKind::Oauth),
                ..Default::default()
            },
        )
        .unwrap();
    sim.update_scopes(
        acct,
        rw.id,
        ScopePatch {
            remove: vec!["write".into()],
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        http.with_auth(rw.authorization.clone())
            .put(&format!("/api/v2/tickets/{id}"), json!({"ticket": {}}))
            .await
            .status,
        403
    );

    // Role: restricted agent cannot update; agent cannot export.
    let restricted = sim
        .create_agent(
            acct,
            AgentSpec {
                role: Some("restricted-agent".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let rc = sim
        .create_credential(
            acct,
            CredentialSpec {
                agent_id: Some(restricted.id),
                ..Default::default()
            },
        )
        .unwrap();
    let r = http
        .with_auth(rc.authorization.clone())
        .put(
            &format!("/api/v2/tickets/{id}"),
            json!({"ticket": {"status": "open"}}),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["title"], "Forbidden");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("You do not have access to this page.")
    );
    let agent = sim
        .create_agent(
            acct,
            AgentSpec {
                role: Some("agent".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let ac = sim
        .create_credential(
            acct,
            CredentialSpec {
                agent_id: Some(agent.id),
                ..Default::default()
            },
        )
        .unwrap();
    let agent_http = http.with_auth(ac.authorization.clone());
    assert_eq!(
        agent_http
            .get("/api/v2/incremental/tickets/cursor.json?start_time=0")
            .await
            .status,
        403
    );
    // Removing one privilege: public comments.
    sim.update_agent(
        acct,
        agent.id,
        AgentPatch {
            remove_privileges: vec!["public_comments".into()],
            ..Default::default()
        },
    )
    .unwrap();
    let public = json!({"ticket": {"comment": {"body": "hi", "public": true}}});
    let private = json!({"ticket": {"comment": {"body": "note", "public": false}}});
    assert_eq!(
        agent_http
            .put(&format!("/api/v2/tickets/{id}"), public)
            .await
            .status,
        403
    );
    assert_eq!(
        agent_http
            .put(&format!("/api/v2/tickets/{id}"), private)
            .await
            .status,
        200
    );

    // Plan feature removed.
    sim.set_features(
        acct,
        FeaturePatch {
            remove: vec!["api".into()],
            ..Default::default()
        },
    )
    .unwrap();
    let r = agent_http.get(&format!("/api/v2/tickets/{id}")).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["title"], "Forbidden");
    sim.shutdown().await;
}

#[tokio::test]
async fn rate_limits_are_per_account_and_counted() {
    let (sim, acct, cred) = world().await;
    let id = ticket(&sim, acct, "x");
    sim.set_limits(
        acct,
        LimitOverrides {
            per_minute: Some(10),
            ..Default::default()
        },
    )
    .unwrap();
    let c2 = sim
        .create_credential(
            acct,
            CredentialSpec {
                kind: Some(CredKind::Oauth),
                ..Default::default()
            },
        )
        .unwrap();
    let a = Http::new(sim.base_url()).with_auth(cred.authorization.clone());
    let b = Http::new(sim.base_url()).with_auth(c2.authorization.clone());
    for i in 0..10 {
        let h = if i % 2 == 0 { &a } else { &b };
        let r = h.get(&format!("/api/v2/tickets/{id}")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-rate-limit"), Some("10"));
        assert_eq!(
            r.header("x-rate-limit-remaining").unwrap(),
            (9 - i).to_string()
        );
    }
    let r = b.get(&format!("/api/v2/tickets/{id}")).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(
        r.text(),
        "Number of allowed API requests per minute exceeded"
    );
    assert_eq!(r.header("x-rate-limit-remaining"), Some("0"));
    let retry: i64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(sim.stats(acct).unwrap().rate_limited, 1);
    sim.clock().advance(Duration::from_secs(60));
    assert_eq!(a.get(&format!("/api/v2/tickets/{id}")).await.status, 200);

    // Per-ticket update cap: 30 per 10 minutes per user.
    sim.set_limits(acct, LimitOverrides::default()).unwrap();
    for _ in 0..30 {
        assert_eq!(
            a.put(
                &format!("/api/v2/tickets/{id}"),
                json!({"ticket": {"priority": "high"}})
            )
            .await
            .status,
            200
        );
    }
    let r = a
        .put(
            &format!("/api/v2/tickets/{id}"),
            json!({"ticket": {"priority": "low"}}),
        )
        .await;
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
    // Another ticket is fine.
    let other = ticket(&sim, acct, "y");
    assert_eq!(
        a.put(
            &format!("/api/v2/tickets/{other}"),
            json!({"ticket": {"priority": "high"}})
        )
        .await
        .status,
        200
    );

    // Incremental export: 10 per minute.
    for _ in 0..10 {
        assert_eq!(
            a.get("/api/v2/incremental/tickets/cursor.json?start_time=0")
                .await
                .status,
            200
        );
    }
    let r = a
        .get("/api/v2/incremental/tickets/cursor.json?start_time=0")
        .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"], "APIRateLimitExceeded");
    let stats = sim.stats(acct).unwrap();
    assert_eq!(stats.rate_limited, 3);
    assert_eq!(stats.rate_limited_by_bucket["single_ticket_update"], 1);
    assert_eq!(sim.rate_limited_total(), 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn update_ticket_account_limit() {
    let (sim, acct, cred) = world().await;
    sim.set_limits(
        acct,
        LimitOverrides {
            ticket_update_per_minute: Some(3),
            ..Default::default()
        },
    )
    .unwrap();
    let ids: Vec<u64> = (0..4)
        .map(|i| ticket(&sim, acct, &format!("t{i}")))
        .collect();
    let a = Http::new(sim.base_url()).with_auth(cred.authorization.clone());
    for id in &ids[..3] {
        assert_eq!(
            a.put(
                &format!("/api/v2/tickets/{id}"),
                json!({"ticket": {"status": "open"}})
            )
            .await
            .status,
            200
        );
    }
    assert_eq!(
        a.put(
            &format!("/api/v2/tickets/{}", ids[3]),
            json!({"ticket": {"status": "open"}})
        )
        .await
        .status,
        429
    );
    // Reads are unaffected.
    assert_eq!(
        a.get(&format!("/api/v2/tickets/{}", ids[3])).await.status,
        200
    );
    sim.shutdown().await;
}
