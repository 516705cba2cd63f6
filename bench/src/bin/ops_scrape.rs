//! What one scrape of the operator's surface costs as connections grow: `GET /metrics`,
//! `GET /v1/status` and the dashboard (`GET /`), served over real HTTP on 127.0.0.1 from a
//! temporary SQLite store holding N connections, each with encrypted credentials, two open alerts
//! and a budget gate registered in the status registry. Each figure is the median of the
//! requests' wall times, one request at a time.
//!
//! Run: `cargo run --release -p deskgate-bench --bin ops_scrape [-- REQUESTS [N...]]`
//! (defaults: 40 requests, N = 10 100).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use deskgate::api::{AppState, app, session_value};
use deskgate::bindings::Connection as Binding;
use deskgate::budget::{BudgetConfig, BudgetLayer};
use deskgate::clock::{Clock, SystemClock};
use deskgate::config::Secret;
use deskgate::runtime::{AdapterRuntime, RuntimeConfig};
use deskgate::status::StatusRegistry;
use deskgate::store::{self, CredentialSecret, Expect, NewAlert, NewConnection, SecretKey};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const TOKEN: &str = "bench-token-0123456789abcdef";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let requests: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(40);
    let sizes: Vec<usize> = if args.len() > 2 { args[2..].iter().filter_map(|s| s.parse().ok()).collect() } else { vec![10, 100] };
    let mut rt = AdapterRuntime::new(RuntimeConfig::default())?;
    rt.load_builtin()?;
    println!("| connections | GET /metrics (ms, median) | GET /v1/status (ms, median) | GET / dashboard (ms, median) | /metrics bytes |");
    println!("|---|---|---|---|---|");
    for n in sizes {
        let (m, s, d, bytes) = run(&rt, n, requests).await?;
        println!("| {n} | {:.2} | {:.2} | {:.2} | {bytes} |", ms(m), ms(s), ms(d));
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn run(rt: &AdapterRuntime, n: usize, requests: usize) -> anyhow::Result<(Duration, Duration, Duration, usize)> {
    let dir = std::env::temp_dir().join(format!("deskgate-ops-scrape-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = store::open(dir.join("db.sqlite").to_str().unwrap(), SecretKey::from_bytes([3; 32])).await?;
    let zendesk = rt.get("zendesk").expect("built in");
    let clock = Arc::new(SystemClock);
    let now = clock.now_ms();
    let status = StatusRegistry::shared();
    let layer = BudgetLayer::new(clock.clone(), BudgetConfig::default());
    for i in 0..n {
        let id = format!("conn-{i:04}");
        let new = NewConnection {
            id: id.clone(),
            platform: "zendesk".into(),
            display_name: id.clone(),
            plan: None,
            settings: serde_json::json!({"base_url": "https://example.invalid"}),
            admin_contact_url: None,
        };
        store.create_connection(&new, now).await?;
        let secret = CredentialSecret::ApiKey { fields: [("email".to_owned(), "a@b.c".to_owned()), ("token".to_owned(), format!("t{i}"))].into() };
        store.put_credential(&id, &secret, None, Expect::Absent, now).await?;
        for kind in ["scope-missing", "webhooks-missed"] {
            store.raise_alert(&NewAlert { connection_id: Some(id.clone()), kind: kind.into(), text: "x".into(), detail: serde_json::json!({}) }, now).await?;
        }
        let binding = Binding { id: id.clone(), plan: zendesk.descriptor().default_plan.clone(), agent_id: None, settings: vec![] };
        let gate = layer.connect(&binding, zendesk.descriptor(), None).map_err(|e| anyhow::anyhow!("{e}"))?;
        status.register(&id, Some(gate), None);
    }
    let state = AppState::new(store, clock.clone(), Secret::new(TOKEN), rt.adapters().cloned()).with_status(status);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let router = app(state);
    tokio::spawn(async move { axum::serve(listener, router).await.expect("serve") });
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let cookie = format!("deskgate_session={}", session_value(TOKEN, clock.now_ms()));
    let mut bytes = 0;
    let mut medians = Vec::new();
    for (path, auth) in [("/metrics", format!("Bearer {TOKEN}")), ("/v1/status", format!("Bearer {TOKEN}")), ("/", String::new())] {
        let mut times = Vec::with_capacity(requests);
        for _ in 0..requests {
            let mut req = hyper::Request::get(format!("{base}{path}"));
            if auth.is_empty() {
                req = req.header("cookie", &cookie);
            } else {
                req = req.header("authorization", &auth);
            }
            let started = Instant::now();
            let res = client.request(req.body(Empty::new())?).await?;
            anyhow::ensure!(res.status() == 200, "{path}: {}", res.status());
            let body = res.into_body().collect().await?.to_bytes();
            times.push(started.elapsed());
            if path == "/metrics" {
                bytes = body.len();
            }
        }
        times.sort();
        medians.push(times[times.len() / 2]);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok((medians[0], medians[1], medians[2], bytes))
}
