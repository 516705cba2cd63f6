//! Durability of one self-hosted gateway (issue #4): `deskgate serve` on its embedded SQLite
//! store is killed with SIGKILL while a burst of replies is in flight, some of them already
//! applied by the platform with the answer still on the wire. A new process on the same file
//! finishes every acknowledged action, and each reply lands on its ticket exactly once: the write
//! log says which were sent, and those are read back before anything is resent. The restarted
//! gateway also pushes the resulting events to the app, signed, as `[push]` configures.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use deskgate_sim::{AccountSpec, AgentSpec, CredentialSpec, FaultConfig, Platform, SimConfig, TicketSpec, TimeoutMode, WebhookTarget, WriteKind};
use serde_json::{Value, json};

#[path = "support/serve.rs"]
mod support_serve;
use support_serve::Serve;

const TOKEN: &str = "crash-test-api-token-0123456789abcdef";
const PUSH_SECRET: &str = "crash-test-push-secret-0123456789";
const WEBHOOK_SECRET: &str = "crash-test-zendesk-webhook-secret";

/// Wait (up to 120 s: a first start compiles the adapters) until the gateway is ready on SQLite
/// and runs the connection live.
async fn wait_ready(http: &reqwest::Client, s: &Serve, log: &Path) {
    let start = Instant::now();
    loop {
        if let Ok(r) = http.get(s.url("/readyz")).send().await
            && r.status().is_success()
        {
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["store"], "sqlite", "{body}");
            let conn: Value = http.get(s.url("/v1/connections/acme")).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap_or_default();
            if conn["state"] == "live" {
                return;
            }
        }
        let text = std::fs::read_to_string(log).unwrap_or_default();
        assert!(start.elapsed() < Duration::from_secs(120), "the gateway did not become ready; its log:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn action(http: &reqwest::Client, s: &Serve, id: i64) -> Value {
    http.get(s.url(&format!("/v1/actions/{id}"))).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap()
}

/// The public replies on a ticket, oldest first, as the platform recorded them.
fn replies_of(sim: &deskgate_sim::SimHandle, account: u64, ticket: u64) -> Vec<String> {
    sim.writes(account, Some(ticket))
        .unwrap()
        .iter()
        .filter_map(|w| match &w.kind {
            WriteKind::Reply { body } => Some(body.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_mid_burst_applies_every_acknowledged_action_once() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sim = deskgate_sim::start(SimConfig::new(Platform::Zendesk).seed(31)).await.unwrap();
    let account = sim.create_account(AccountSpec::default()).unwrap().id;
    let admin = sim.create_agent(account, AgentSpec { name: Some("Ada Admin".into()), ..Default::default() }).unwrap();
    let cred = sim.create_credential(account, CredentialSpec { agent_id: Some(admin.id), ..Default::default() }).unwrap();
    let tickets: Vec<u64> = (0..12)
        .map(|i| sim.create_ticket(account, TicketSpec { subject: Some(format!("t{i}")), ..Default::default() }).unwrap()["id"].as_u64().unwrap())
        .collect();
    // The app takes pushed events and checks their signatures as an app would.
    let pushes = Arc::new(Mutex::new((0usize, 0usize))); // (signed right, refused)
    let app = {
        let pushes = pushes.clone();
        axum::Router::new().route(
            "/events",
            axum::routing::post(move |headers: axum::http::HeaderMap, raw: axum::body::Bytes| {
                let pushes = pushes.clone();
                async move {
                    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                    let mut mac = Hmac::<Sha256>::new_from_slice(PUSH_SECRET.as_bytes()).unwrap();
                    mac.update(format!("{}.", h("x-deskgate-timestamp")).as_bytes());
                    mac.update(&raw);
                    let ok = h("x-deskgate-signature").strip_prefix("v1=").and_then(|x| hex::decode(x).ok()).is_some_and(|t| mac.verify_slice(&t).is_ok());
                    let mut p = pushes.lock().unwrap();
                    if ok {
                        p.0 += 1;
                        axum::http::StatusCode::OK
                    } else {
                        p.1 += 1;
                        axum::http::StatusCode::UNAUTHORIZED
                    }
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_url = format!("http://{}/events", listener.local_addr().unwrap());
    let app_server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let config = format!(
        "store = \"sqlite://{}\"\n[push]\nurl = \"{app_url}\"\nsecret = \"{PUSH_SECRET}\"\n\
         [connections.acme]\nplatform = \"zendesk\"\nbase_url = \"{}\"\nwebhook_secret = \"{WEBHOOK_SECRET}\"\n\
         [connections.acme.credentials]\nemail = \"{}\"\ntoken = \"{}\"\n",
        dir.join("deskgate.db").display(),
        sim.base_url(),
        cred.email,
        cred.token
    );
    let http = reqwest::Client::new();
    let mut first = Serve::start(&dir, "first", &config, TOKEN);
    wait_ready(&http, &first, &dir.join("first.log")).await;
    // One gateway per embedded store: a second one on the same file refuses to start.
    let mut twin = Serve::start(&dir, "twin", &config, TOKEN);
    let status = {
        let start = Instant::now();
        loop {
            if let Some(s) = twin.child.as_mut().unwrap().try_wait().unwrap() {
                break s;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "a second gateway kept running on the same SQLite file");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    twin.child = None;
    let said = std::fs::read_to_string(dir.join("twin.log")).unwrap();
    assert!(!status.success() && said.contains("another deskgate serve is using the store"), "{status}: {said}");

    // Slow platform; a third of the writes are applied and then answered only after 3 s, so the
    // kill finds writes that landed while the gateway still has them as `sent`.
    sim.set_faults(FaultConfig {
        latency_ms: 40,
        timeout_after_apply: 0.34,
        timeout_mode: TimeoutMode::Hold,
        timeout_hold_ms: 3_000,
        ..FaultConfig::default()
    })
    .unwrap();
    const N: usize = 60;
    let mut acked: Vec<(i64, String, u64)> = Vec::new();
    for i in 0..N {
        let ticket = tickets[i % tickets.len()];
        let body = format!("reply {i}");
        let r = http
            .post(first.url("/v1/connections/acme/actions"))
            .bearer_auth(TOKEN)
            .header("idempotency-key", format!("crash-{i}"))
            .json(&json!({ "ticket_id": ticket.to_string(), "action": { "type": "reply", "body": body } }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap());
        let v: Value = r.json().await.unwrap();
        acked.push((v["id"].as_i64().unwrap(), body, ticket));
    }

    // Kill once a write the platform has applied is still `sent` in the gateway's write log.
    let start = Instant::now();
    let in_flight_at_kill = loop {
        let mut sent = Vec::new();
        let mut landed = false;
        for (id, body, ticket) in &acked {
            if action(&http, &first, *id).await["state"] == "sent" {
                sent.push((*id, *ticket));
                landed |= replies_of(&sim, account, *ticket).contains(body);
            }
        }
        if landed {
            break sent;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no write was ever seen in flight");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    first.kill();
    let done_before: usize = acked.iter().filter(|(_, body, t)| replies_of(&sim, account, *t).contains(body)).count();
    println!("killed with {} actions sent and unanswered; {done_before} of {N} replies on the platform", in_flight_at_kill.len());
    assert!(done_before < N, "the burst was over before the kill; the test proves nothing");

    // A new process on the same file, with the platform healthy again.
    sim.set_faults(FaultConfig::default()).unwrap();
    let second = Serve::start(&dir, "second", &config, TOKEN);
    wait_ready(&http, &second, &dir.join("second.log")).await;
    // The platform's webhooks now reach the gateway: the replies' ticket updates become events,
    // which `[push]` delivers to the app, signed.
    sim.set_webhook(account, Some(WebhookTarget { url: second.url("/webhooks/acme"), secret: WEBHOOK_SECRET.into() })).unwrap();
    let start = Instant::now();
    for (id, _, _) in &acked {
        loop {
            let a = action(&http, &second, *id).await;
            match a["state"].as_str() {
                Some("confirmed") => break,
                Some("pending" | "sent" | "ambiguous") => {}
                _ => panic!("action {id} did not complete: {a}"),
            }
            let log = std::fs::read_to_string(dir.join("second.log")).unwrap_or_default();
            assert!(start.elapsed() < Duration::from_secs(60), "action {id} still in flight: {a}\n{log}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Exactly once on the platform, and in submission order per ticket.
    for ticket in &tickets {
        let bodies = replies_of(&sim, account, *ticket);
        let expected: Vec<String> = acked.iter().filter(|(_, _, t)| t == ticket).map(|(_, b, _)| b.clone()).collect();
        assert_eq!(bodies, expected, "ticket {ticket}: every acknowledged reply once, in order");
    }
    // The writes caught in flight were settled by the second process, from a read-back where the
    // platform had applied them.
    let mut read_back = 0;
    for (id, _) in &in_flight_at_kill {
        let a = action(&http, &second, *id).await;
        if a["result"]["confirmed_by"].as_str().is_some_and(|s| s.contains("read-back")) {
            read_back += 1;
        }
    }
    println!("{read_back} of {} in-flight actions confirmed by a read-back after the restart", in_flight_at_kill.len());
    assert!(read_back >= 1, "a write applied before the kill must be found by a read-back, not resent");
    // A customer writes in: the platform's webhook, then the gateway's push.
    sim.create_ticket(account, TicketSpec { subject: Some("after the restart".into()), ..Default::default() }).unwrap();
    let start = Instant::now();
    loop {
        let (good, bad) = *pushes.lock().unwrap();
        assert_eq!(bad, 0, "a push arrived without a valid signature");
        if good > 0 {
            break;
        }
        let log = std::fs::read_to_string(dir.join("second.log")).unwrap_or_default();
        assert!(start.elapsed() < Duration::from_secs(30), "no event was pushed to the app; the gateway's log:\n{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app_server.abort();
    drop(second);
    sim.shutdown().await;
}
