//! Webhook delivery over real HTTP with each platform's signature (verified here with an
//! independent HMAC), retries driven by the sim clock, and seeded drop/duplicate/reorder faults.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::*;
use deskgate_sim::*;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

async fn world(platform: Platform, seed: u64, url: &str) -> (SimHandle, u64, CredentialInfo) {
    let sim = sim_seeded(platform, seed).await;
    let acct = sim.create_account(AccountSpec::default()).unwrap();
    sim.create_agent(acct.id, AgentSpec::default()).unwrap();
    let cred = sim
        .create_credential(acct.id, CredentialSpec::default())
        .unwrap();
    sim.set_webhook(
        acct.id,
        Some(WebhookTarget {
            url: url.into(),
            secret: "s3cret".into(),
        }),
    )
    .unwrap();
    (sim, acct.id, cred)
}

#[tokio::test]
async fn zendesk_signed_event_subscription_payloads() {
    let mut rx = Receiver::start().await;
    let (sim, acct, cred) = world(Platform::Zendesk, 1, &rx.url).await;
    let http = Http::new(sim.base_url()).with_auth(cred.authorization.clone());
    let r = http
        .post(
            "/api/v2/tickets.json",
            json!({"ticket": {"subject": "S", "comment": {"body": "B"}}}),
        )
        .await;
    let id = r.json()["ticket"]["id"].as_u64().unwrap();
    let h = rx.next().await;
    let ts = h.header("x-zendesk-webhook-signature-timestamp").to_owned();
    assert_eq!(ts, "2024-01-01T00:00:00Z");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"s3cret").unwrap();
    mac.update(ts.as_bytes());
    mac.update(&h.body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(h.header("x-zendesk-webhook-signature"), expected);
    let v = h.json();
    assert_eq!(v["type"], "zen:event-type:ticket.created");
    assert_eq!(v["subject"], format!("zen:ticket:{id}"));
    assert_eq!(v["detail"]["id"], id.to_string());
    for k in ["id", "time", "account_id", "zendesk_event_version", "event"] {
        assert!(v.get(k).is_some(), "{k}");
    }

    http.put(
        &format!("/api/v2/tickets/{id}"),
        json!({"ticket": {"comment": {"body": "Done", "public": true}, "status": "solved", "assignee_id": cred.agent_id,
                          "tags": ["x"]}}),
    )
    .await;
    let hooks = [
        rx.next().await,
        rx.next().await,
        rx.next().await,
        rx.next().await,
    ];
    let types: Vec<String> = hooks
        .iter()
        .map(|h| h.json()["type"].as_str().unwrap().to_owned())
        .collect();
    for t in [
        "ticket.comment_added",
        "ticket.status_changed",
        "ticket.agent_assignment_changed",
        "ticket.tags_changed",
    ] {
        assert!(
            types.contains(&format!("zen:event-type:{t}")),
            "{t} in {types:?}"
        );
    }
    let seq: Vec<Value> = hooks
        .iter()
        .map(|h| h.json()["event"]["meta"]["sequence"]["id"].clone())
        .collect();
    assert!(
        seq.iter().all(|s| *s == seq[0]),
        "one action, one sequence id"
    );
    let status = hooks
        .iter()
        .find(|h| h.json()["type"] == "zen:event-type:ticket.status_changed")
        .unwrap()
        .json();
    assert_eq!(
        status["event"],
        json!({"current": "Solved", "previous": "New", "meta": status["event"]["meta"]})
    );
    let _ = acct;
    sim.shutdown().await;
}

#[tokio::test]
async fn intercom_hub_signature_and_notification_events() {
    let mut rx = Receiver::start().await;
    let (sim, acct, cred) = world(Platform::Intercom, 1, &rx.url).await;
    let t = sim.create_ticket(acct, TicketSpec::default()).unwrap();
    let id = t["id"].as_str().unwrap().to_owned();
    let created = rx.next().await;
    assert_eq!(created.json()["topic"], "conversation.user.created");
    let http = Http::new(sim.base_url()).with_auth(cred.authorization.clone());
    let admin = cred.agent_id.to_string();
    http.post(
        &format!("/conversations/{id}/reply"),
        json!({"message_type": "comment", "type": "admin", "admin_id": admin, "body": "Hi"}),
    )
    .await;
    let h = rx.next().await;
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"s3cret").unwrap();
    mac.update(&h.body);
    assert_eq!(
        h.header("x-hub-signature"),
        format!("sha1={}", hex::encode(mac.finalize().into_bytes()))
    );
    let v = h.json();
    assert_eq!(v["type"], "notification_event");
    assert_eq!(v["topic"], "conversation.admin.replied");
    assert_eq!(v["data"]["item"]["type"], "conversation");
    assert_eq!(v["data"]["item"]["id"], id);
    assert!(v["id"].as_str().unwrap().starts_with("notif_"));
    http.post(
        &format!("/conversations/{id}/parts"),
        json!({"message_type": "close", "type": "admin", "admin_id": admin}),
    )
    .await;
    assert_eq!(rx.next().await.json()["topic"], "conversation.admin.closed");
    sim.shutdown().await;
}

#[tokio::test]
async fn freshdesk_custom_header_template_and_retry_schedule() {
    let mut rx = Receiver::start().await;
    let (sim, acct, cred) = world(Platform::Freshdesk, 1, &rx.url).await;
    rx.script.lock().unwrap().extend([500, 503, 500]);
    let http = Http::new(sim.base_url()).with_auth(cred.authorization.clone());
    let r = http
        .post(
            "/api/v2/tickets",
            json!({"subject": "S", "description": "D", "email": "c@x.test", "tags": ["a", "b"]}),
        )
        .await;
    let id = r.json()["id"].as_u64().unwrap();
    let first = rx.next().await;
    assert_eq!(first.header("x-deskgate-webhook-token"), "s3cret");
    let v = first.json();
    let w = &v["freshdesk_webhook"];
    assert_eq!(w["ticket_id"], id.to_string());
    assert_eq!(w["ticket_status"], "Open");
    assert_eq!(w["ticket_tags"], "a,b");
    assert_eq!(w["triggered_event"], "ticket_created");
    assert!(
        w.as_object().unwrap().values().all(Value::is_string),
        "all values are strings: {w}"
    );

    // Retries at +5 min, +30 min, +60 min (sim clock).
    eventually(|| {
        sim.webhook_deliveries()
            .iter()
            .any(|d| d.result == "failed")
    })
    .await;
    assert!(
        rx.drain(Duration::from_millis(200)).await.is_empty(),
        "nothing before the clock moves"
    );
    for (mins, attempt) in [(5, 2), (30, 3), (60, 4)] {
        // The previous attempt's failure (and its rescheduling) is recorded after the receiver answered.
        eventually(|| sim.webhook_deliveries().len() == attempt as usize - 1).await;
        sim.clock().advance(Duration::from_secs(mins * 60 - 1));
        assert!(
            rx.drain(Duration::from_millis(150)).await.is_empty(),
            "attempt {attempt} not due yet"
        );
        sim.clock().advance(Duration::from_secs(1));
        let h = rx.next().await;
        assert_eq!(h.body, first.body);
    }
    eventually(|| {
        sim.webhook_deliveries()
            .iter()
            .any(|d| d.result == "delivered")
    })
    .await;
    let log = sim.webhook_deliveries();
    let attempts: Vec<(u32, &str)> = log.iter().map(|d| (d.attempt, d.result)).collect();
    assert_eq!(
        attempts,
        vec![
            (1, "failed"),
            (2, "failed"),
            (3, "failed"),
            (4, "delivered")
        ]
    );
    let _ = acct;
    sim.shutdown().await;
}

#[tokio::test]
async fn zendesk_and_intercom_retries() {
    let mut rx = Receiver::start().await;
    let (sim, acct, _) = world(Platform::Zendesk, 1, &rx.url).await;
    rx.script.lock().unwrap().push(500);
    sim.create_ticket(acct, TicketSpec::default()).unwrap();
    let a = rx.next().await;
    eventually(|| {
        sim.webhook_deliveries()
            .iter()
            .any(|d| d.result == "failed")
    })
    .await;
    sim.clock().advance(Duration::from_secs(5));
    let b = rx.next().await;
    assert_eq!(a.body, b.body);
    assert_ne!(
        a.header("x-zendesk-webhook-signature-timestamp"),
        b.header("x-zendesk-webhook-signature-timestamp"),
        "re-signed"
    );
    // A 404 from the receiver is final.
    rx.script.lock().unwrap().push(404);
    sim.create_ticket(acct, TicketSpec::default()).unwrap();
    rx.next().await;
    eventually(|| {
        sim.webhook_deliveries()
            .iter()
            .any(|d| d.result == "gave_up")
    })
    .await;
    sim.shutdown().await;

    let mut rx = Receiver::start().await;
    let (sim, acct, _) = world(Platform::Intercom, 1, &rx.url).await;
    rx.script.lock().unwrap().extend([500, 500]);
    sim.create_ticket(acct, TicketSpec::default()).unwrap();
    rx.next().await;
    eventually(|| {
        sim.webhook_deliveries()
            .iter()
            .any(|d| d.result == "failed")
    })
    .await;
    sim.clock().advance(Duration::from_secs(60));
    rx.next().await;
    eventually(|| {
        sim.webhook_deliveries()
            .iter()
            .any(|d| d.result == "gave_up")
    })
    .await;
    sim.clock().advance(Duration::from_secs(3600));
    assert!(
        rx.drain(Duration::from_millis(200)).await.is_empty(),
        "Intercom retries once"
    );
    sim.shutdown().await;
}

/// Runs the same traffic under a fault plan; returns (ticket id, duplicate flag) per delivery
/// received, in order, plus the dropped ticket ids.
async fn chaos_run(seed: u64) -> (Vec<u64>, Vec<u64>) {
    let mut rx = Receiver::start().await;
    let (sim, acct, _) = world(Platform::Freshdesk, seed, &rx.url).await;
    sim.set_faults(FaultConfig {
        webhook_drop: 0.25,
        webhook_duplicate: 0.25,
        webhook_reorder: 0.25,
        ..Default::default()
    })
    .unwrap();
    for _ in 0..24 {
        sim.create_ticket(acct, TicketSpec::default()).unwrap();
    }
    sim.clock().advance(Duration::from_secs(3));
    eventually(|| sim.webhooks_pending() == 0).await;
    let got: Vec<u64> = rx
        .drain(Duration::from_millis(200))
        .await
        .iter()
        .map(|h| {
            h.json()["freshdesk_webhook"]["ticket_id"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    let dropped: Vec<u64> = sim
        .webhook_deliveries()
        .iter()
        .filter(|d| d.result == "dropped")
        .map(|d| d.ticket_id)
        .collect();
    sim.shutdown().await;
    (got, dropped)
}

#[tokio::test]
async fn seeded_webhook_chaos_replays_exactly() {
    let (got, dropped) = chaos_run(42).await;
    assert!(!dropped.is_empty(), "some dropped");
    let unique: std::collections::BTreeSet<u64> = got.iter().copied().collect();
    assert!(got.len() > unique.len(), "some duplicated: {got:?}");
    assert!(
        got.windows(2).any(|w| w[0] > w[1]),
        "some reordered: {got:?}"
    );
    assert_eq!(unique.len() + dropped.len(), 24);
    assert_eq!(
        chaos_run(42).await,
        (got.clone(), dropped.clone()),
        "same seed, same run"
    );
    assert_ne!(chaos_run(7).await.0, got, "another seed, another run");
}

#[tokio::test]
async fn delayed_webhooks_wait_for_the_clock() {
    let mut rx = Receiver::start().await;
    let (sim, acct, _) = world(Platform::Zendesk, 3, &rx.url).await;
    sim.set_faults(FaultConfig {
        webhook_delay: 1.0,
        webhook_delay_ms: 30_000,
        ..Default::default()
    })
    .unwrap();
    sim.create_ticket(acct, TicketSpec::default()).unwrap();
    assert!(rx.drain(Duration::from_millis(200)).await.is_empty());
    sim.clock().advance(Duration::from_secs(30));
    rx.next().await;
    eventually(|| sim.webhook_deliveries().first().is_some_and(|d| d.delayed)).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn intercom_signs_with_the_app_client_secret_by_default() {
    let mut rx = Receiver::start().await;
    let sim = sim(Platform::Intercom).await;
    let acct = sim.create_account(AccountSpec::default()).unwrap().id;
    sim.create_agent(acct, AgentSpec::default()).unwrap();
    let cred = sim
        .create_credential(acct, CredentialSpec::default())
        .unwrap();
    sim.set_webhook(
        acct,
        Some(WebhookTarget {
            url: rx.url.clone(),
            secret: String::new(),
        }),
    )
    .unwrap();
    sim.create_ticket(acct, TicketSpec::default()).unwrap();
    let h = rx.next().await;
    let secret = cred.client_secret.unwrap();
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&h.body);
    assert_eq!(
        h.header("x-hub-signature"),
        format!("sha1={}", hex::encode(mac.finalize().into_bytes()))
    );
    // Other platforms need an explicit secret.
    let zd = common::sim(Platform::Zendesk).await;
    let a = zd.create_account(AccountSpec::default()).unwrap().id;
    let err = zd
        .set_webhook(
            a,
            Some(WebhookTarget {
                url: rx.url.clone(),
                secret: String::new(),
            }),
        )
        .unwrap_err();
    assert_eq!(err.status, 400);
    assert!(
        zd.set_webhook(
            a,
            Some(WebhookTarget {
                url: "ftp://x".into(),
                secret: "s".into()
            })
        )
        .is_err()
    );
    zd.shutdown().await;
    sim.shutdown().await;
}
