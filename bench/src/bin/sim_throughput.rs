//! Simulator throughput: keep-alive clients read one ticket per platform for a fixed time and the
//! harness prints requests per second (the load generator shares the machine's two cores with the
//! simulator, so the figure is a lower bound).
//!
//! Run: `cargo run --release -p deskgate-bench --bin sim_throughput [-- SECONDS [CLIENTS]]`

use bytes::Bytes;
use deskgate_sim::{LimitOverrides, Platform, SimConfig};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let secs: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let clients: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(32);
    println!("| platform | requests | seconds | requests/s |");
    println!("|---|---|---|---|");
    for platform in [Platform::Zendesk, Platform::Freshdesk, Platform::Intercom] {
        let (n, elapsed) = run(platform, Duration::from_secs(secs), clients).await?;
        println!("| {platform} | {n} | {:.1} | {:.0} |", elapsed.as_secs_f64(), n as f64 / elapsed.as_secs_f64());
    }
    Ok(())
}

async fn run(platform: Platform, duration: Duration, clients: usize) -> anyhow::Result<(u64, Duration)> {
    let sim = deskgate_sim::start(SimConfig { request_log_capacity: 10_000, ..SimConfig::new(platform) }).await?;
    let seed = sim.seed_demo().map_err(|e| anyhow::anyhow!("{e}"))?;
    // The limits are lifted so the figure is the simulator's own cost, not its 429 path.
    let unlimited = LimitOverrides {
        per_minute: Some(u32::MAX),
        app_per_minute: Some(u32::MAX),
        workspace_per_minute: Some(u32::MAX),
        ..Default::default()
    };
    sim.set_limits(seed.account.id, unlimited).map_err(|e| anyhow::anyhow!("{e}"))?;
    let id = seed.ticket_ids[0];
    let path = match platform {
        Platform::Zendesk => format!("/api/v2/tickets/{id}.json"),
        Platform::Freshdesk => format!("/api/v2/tickets/{id}"),
        Platform::Intercom => format!("/conversations/{id}"),
    };
    let url: hyper::Uri = format!("{}{}", sim.base_url(), path).parse()?;
    let auth = seed.credentials[0].authorization.clone();
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let (url, auth, count) = (url.clone(), auth.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let req = hyper::Request::get(url.clone()).header("authorization", &auth).body(Empty::new()).unwrap();
                let resp = client.request(req).await.expect("request");
                assert_eq!(resp.status(), 200);
                resp.into_body().collect().await.expect("body");
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = start.elapsed();
    sim.shutdown().await;
    Ok((count.load(Ordering::Relaxed), elapsed))
}
