//! Throughput smoke check (ignored by default; run with
//! `cargo test -p deskgate-sim --release --test throughput -- --ignored --nocapture`).
//! Keep-alive clients read one ticket / conversation for a fixed time on each platform and the
//! test prints requests per second. The load generator shares the machine's cores with the sim,
//! so this is a lower bound.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use deskgate_sim::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing-dependent; run on demand"]
async fn ticket_reads_per_second() {
    for platform in [Platform::Zendesk, Platform::Freshdesk, Platform::Intercom] {
        read_one_ticket(platform).await;
    }
}

async fn read_one_ticket(platform: Platform) {
    let cfg = SimConfig {
        request_log_capacity: 100_000,
        ..SimConfig::new(platform)
    };
    let sim = deskgate_sim::start(cfg).await.unwrap();
    let seed = sim.seed_demo().unwrap();
    let unlimited = LimitOverrides {
        per_minute: Some(u32::MAX),
        app_per_minute: Some(u32::MAX),
        workspace_per_minute: Some(u32::MAX),
        ..Default::default()
    };
    sim.set_limits(seed.account.id, unlimited).unwrap();
    let id = seed.ticket_ids[0];
    let path = match platform {
        Platform::Zendesk => format!("/api/v2/tickets/{id}.json"),
        Platform::Freshdesk => format!("/api/v2/tickets/{id}"),
        Platform::Intercom => format!("/conversations/{id}"),
    };
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let http = Http::new(sim.base_url()).with_auth(seed.credentials[0].authorization.clone());
        let (path, count) = (path.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let r = http.get(&path).await;
                assert_eq!(r.status, 200, "{}", r.text());
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let n = count.load(Ordering::Relaxed);
    println!(
        "{platform}: {n} requests in 3 s = {:.0} req/s",
        n as f64 / 3.0
    );
    sim.shutdown().await;
}
