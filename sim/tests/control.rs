//! Faults (timeout after apply, 5xx bursts), the request and write logs, the admin HTTP API and
//! the CLI's JSON line.

mod common;

use std::time::Duration;

use common::*;
use deskgate_sim::*;
use hyper::Method;
use serde_json::json;

#[tokio::test]
async fn timeout_after_apply_keeps_the_write() {
    let sim = sim(Platform::Zendesk).await;
    let seed = sim.seed_demo().unwrap();
    let (acct, id) = (seed.account.id, seed.ticket_ids[0]);
    let http = Http::new(sim.base_url()).with_auth(seed.credentials[0].authorization.clone());

    // Close mode: the connection is dropped without an answer.
    sim.set_faults(FaultConfig {
        timeout_next: 1,
        timeout_mode: TimeoutMode::Close,
        ..Default::default()
    })
    .unwrap();
    let body =
        serde_json::to_vec(&json!({"ticket": {"comment": {"body": "Sent once", "public": true}}}))
            .unwrap();
    let r = http
        .send_raw(
            Method::PUT,
            &format!("/api/v2/tickets/{id}.json"),
            Some(body.clone()),
            &[],
        )
        .await;
    assert!(r.is_err(), "client saw no answer: {r:?}");
    let writes = sim.writes(acct, Some(id)).unwrap();
    assert_eq!(
        writes
            .iter()
            .filter(|w| w.kind
                == WriteKind::Reply {
                    body: "Sent once".into()
                })
            .count(),
        1
    );
    let last = sim.requests(RequestFilter::default()).pop().unwrap();
    assert_eq!(last.outcome, Outcome::TimedOutAfterApply);
    assert_eq!(last.status, 200);

    // Hold mode: stalls, then drops; a client with its own deadline gives up first.
    sim.set_faults(FaultConfig {
        timeout_after_apply: 1.0,
        timeout_hold_ms: 2_000,
        ..Default::default()
    })
    .unwrap();
    let started = std::time::Instant::now();
    let r = tokio::time::timeout(
        Duration::from_millis(300),
        http.send_raw(
            Method::PUT,
            &format!("/api/v2/tickets/{id}.json"),
            Some(body),
            &[],
        ),
    )
    .await;
    assert!(r.is_err(), "client timed out");
    assert!(started.elapsed() < Duration::from_secs(2));
    eventually(|| {
        sim.writes(acct, Some(id))
            .unwrap()
            .iter()
            .filter(|w| matches!(w.kind, WriteKind::Reply { .. }))
            .count()
            == 2
    })
    .await;
    // Reads are not timed out.
    assert_eq!(http.get(&format!("/api/v2/tickets/{id}")).await.status, 200);
    sim.set_faults(FaultConfig::default()).unwrap();
    sim.shutdown().await;
}

#[tokio::test]
async fn error_bursts_apply_nothing() {
    let sim = sim(Platform::Freshdesk).await;
    let seed = sim.seed_demo().unwrap();
    let (acct, id) = (seed.account.id, seed.ticket_ids[0]);
    let http = Http::new(sim.base_url()).with_auth(seed.credentials[0].authorization.clone());
    sim.set_faults(FaultConfig {
        error_next: 2,
        error_status: 502,
        ..Default::default()
    })
    .unwrap();
    for _ in 0..2 {
        assert_eq!(
            http.post(&format!("/api/v2/tickets/{id}/reply"), json!({"body": "x"}))
                .await
                .status,
            502
        );
    }
    assert_eq!(
        http.post(&format!("/api/v2/tickets/{id}/reply"), json!({"body": "x"}))
            .await
            .status,
        201
    );
    let replies = sim
        .writes(acct, Some(id))
        .unwrap()
        .iter()
        .filter(|w| matches!(w.kind, WriteKind::Reply { .. }))
        .count();
    assert_eq!(replies, 1);
    let outcomes: Vec<Outcome> = sim
        .requests(RequestFilter::default())
        .iter()
        .map(|r| r.outcome)
        .collect();
    assert_eq!(
        outcomes,
        vec![Outcome::InjectedError, Outcome::InjectedError, Outcome::Ok]
    );

    // A share of requests, seeded.
    sim.set_faults(FaultConfig {
        error_rate: 0.5,
        ..Default::default()
    })
    .unwrap();
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(http.get("/api/v2/agents/me").await.status);
    }
    assert!(statuses.contains(&503) && statuses.contains(&200));
    assert!(
        sim.set_faults(FaultConfig {
            error_status: 404,
            ..Default::default()
        })
        .is_err()
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn admin_http_api() {
    let sim = sim(Platform::Intercom).await;
    let admin = Http::new(sim.admin_url());
    let a = admin
        .post("/accounts", json!({"name": "globex", "plan": "expert"}))
        .await;
    assert_eq!(a.status, 201, "{}", a.text());
    let acct = a.json()["id"].as_u64().unwrap();
    let bad = admin.post("/accounts", json!({"plan": "platinum"})).await;
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].as_str().unwrap().contains("use one of"));
    let typo = admin.post("/accounts", json!({"nmae": "x"})).await;
    assert_eq!(typo.status, 400);
    assert!(typo.json()["error"].as_str().unwrap().contains("nmae"));

    let agent = admin
        .post(&format!("/accounts/{acct}/agents"), json!({"name": "Ann"}))
        .await
        .json();
    let cred = admin
        .post(
            &format!("/accounts/{acct}/credentials"),
            json!({"scopes": ["read_conversations"]}),
        )
        .await;
    assert_eq!(cred.status, 201, "{}", cred.text());
    let cred = cred.json();
    assert_eq!(cred["agent_id"], agent["id"]);
    let t = admin
        .post(
            &format!("/accounts/{acct}/tickets"),
            json!({"subject": "Hello", "status": "open"}),
        )
        .await;
    assert_eq!(t.status, 201, "{}", t.text());
    let cid = t.json()["id"].as_str().unwrap().to_owned();
    let c = admin
        .post(
            &format!("/accounts/{acct}/tickets/{cid}/comments"),
            json!({"body": "more info"}),
        )
        .await;
    assert_eq!(c.status, 201);

    let api = Http::new(sim.base_url()).with_auth(cred["authorization"].as_str().unwrap());
    assert_eq!(api.get(&format!("/conversations/{cid}")).await.status, 200);
    let r = admin
        .post(
            &format!("/accounts/{acct}/credentials/{}/revoke", cred["id"]),
            json!({}),
        )
        .await;
    assert_eq!(r.json()["revoked"], true);
    assert_eq!(api.get(&format!("/conversations/{cid}")).await.status, 401);

    let clock = admin
        .post("/clock/advance", json!({"seconds": 90}))
        .await
        .json();
    assert_eq!(clock["now_ms"], T0 + 90_000);
    let clock = admin
        .post("/clock/set", json!({"rfc3339": "2025-06-01T00:00:00Z"}))
        .await
        .json();
    assert_eq!(clock["now"], "2025-06-01T00:00:00Z");
    assert_eq!(
        admin
            .post("/clock/advance", json!({"seconds": -1}))
            .await
            .status,
        400
    );

    let f = admin
        .send(
            Method::PUT,
            "/faults",
            Some(json!({"webhook_drop": 1.5})),
            &[],
        )
        .await;
    assert_eq!(f.status, 400);
    assert!(
        f.json()["error"]
            .as_str()
            .unwrap()
            .contains("between 0.0 and 1.0")
    );
    assert_eq!(
        admin
            .send(Method::PUT, "/faults", Some(json!({"latency_ms": 1})), &[])
            .await
            .json()["latency_ms"],
        1
    );

    let writes = admin
        .get(&format!("/accounts/{acct}/writes?ticket_id={cid}"))
        .await
        .json();
    assert_eq!(writes[0]["type"], "created");
    assert_eq!(writes[1]["type"], "customer_comment");
    let reqs = admin
        .get(&format!("/requests?account_id={acct}"))
        .await
        .json();
    assert_eq!(reqs.as_array().unwrap().len(), 2);
    assert_eq!(reqs[1]["status"], 401);
    let stats = admin.get(&format!("/accounts/{acct}/stats")).await.json();
    assert_eq!(stats["rate_limited"], 0);
    assert_eq!(admin.get("/nope").await.status, 404);
    assert_eq!(admin.get("/accounts/99").await.status, 404);
    sim.shutdown().await;
}

#[tokio::test]
async fn cli_json_line_has_working_credentials() {
    for platform in [Platform::Zendesk, Platform::Freshdesk, Platform::Intercom] {
        let (sim, line) =
            deskgate_sim::cli::start_demo(platform, "127.0.0.1:0".parse().unwrap(), 7)
                .await
                .unwrap();
        let text = line.to_string();
        assert!(!text.contains('\n'));
        let base = line["base_url"].as_str().unwrap();
        assert!(base.starts_with("http://127.0.0.1:"));
        assert_eq!(line["admin_url"], format!("{base}/_sim"));
        assert_eq!(line["ticket_ids"].as_array().unwrap().len(), 3);
        let auth = line["credentials"][0]["authorization"].as_str().unwrap();
        let http = Http::new(base).with_auth(auth);
        let path = match platform {
            Platform::Zendesk => "/api/v2/users/me.json",
            Platform::Freshdesk => "/api/v2/agents/me",
            Platform::Intercom => "/me",
        };
        let r = http.get(path).await;
        assert_eq!(r.status, 200, "{platform}: {}", r.text());
        if platform == Platform::Zendesk {
            assert_eq!(line["credentials"][1]["kind"], "oauth");
            assert!(line["credentials"][1]["refresh_token"].is_string());
        }
        sim.shutdown().await;
    }
}
