//! What the embedded SQLite store's write path carries: `Store::enqueue` throughput and latency on
//! a fresh store in a temporary directory, with 1 and 64 concurrent callers, under
//! `synchronous=FULL` (every commit fsyncs the WAL: the default) and `NORMAL`. Each caller
//! enqueues distinct actions back to back for the given time; the table gives the actions
//! acknowledged per second, the median and 99th-percentile latency of one call, and how many
//! calls shared a write transaction on average (the writer thread's group commit).
//!
//! Run: `cargo run --release -p deskgate-bench --bin store_writes [-- SECONDS [TASKS...]]`
//! (defaults: 5 seconds, TASKS = 1 64). Set `TMPDIR` to measure another disk.

use std::sync::Arc;
use std::time::{Duration, Instant};

use deskgate::clock::{Clock, SystemClock};
use deskgate::store::sqlite::SqliteStore;
use deskgate::store::{ConnectionState, NewAction, NewConnection, SecretKey, Store};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let secs: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let tasks: Vec<usize> =
        if args.len() > 2 { args[2..].iter().filter_map(|s| s.parse().ok()).collect() } else { vec![1, 64] };
    let span = Duration::from_secs_f64(secs);
    println!("enqueue on a fresh SQLite store, {secs} s per row, temp dir {}", std::env::temp_dir().display());
    println!();
    println!("| synchronous | tasks | actions/s | p50 (ms) | p99 (ms) | calls per commit |");
    println!("|---|---|---|---|---|---|");
    for full_sync in [true, false] {
        for &n in &tasks {
            let r = run(full_sync, n, span).await?;
            println!(
                "| {} | {n} | {:.0} | {:.3} | {:.3} | {:.1} |",
                if full_sync { "FULL" } else { "NORMAL" },
                r.per_sec,
                ms(r.p50),
                ms(r.p99),
                r.per_commit
            );
        }
    }
    Ok(())
}

struct Figures {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
    per_commit: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn run(full_sync: bool, tasks: usize, span: Duration) -> anyhow::Result<Figures> {
    let dir = std::env::temp_dir().join(format!("deskgate-store-writes-{}-{full_sync}-{tasks}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Arc::new(SqliteStore::open_with(&dir.join("deskgate.db"), SecretKey::from_bytes([5; 32]), full_sync).await?);
    let clock = SystemClock;
    store.create_connection(&NewConnection::new("bench", "zendesk", "Bench"), clock.now_ms()).await?;
    store.set_connection_state("bench", &ConnectionState::Live, clock.now_ms()).await?;
    let before = store.writer_stats();

    let start = Instant::now();
    let deadline = start + span;
    let workers: Vec<_> = (0..tasks)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let action = NewAction {
                        connection_id: "bench".into(),
                        ticket_id: format!("T{t}-{n}"),
                        action: serde_json::json!({"op": "reply", "public": true, "text": format!("reply {t}/{n}")}),
                        idempotency_key: format!("bench/{t}/{n}"),
                        app_key: None,
                        not_before: 0,
                    };
                    let began = Instant::now();
                    store.enqueue(&action, SystemClock.now_ms(), Duration::from_secs(600)).await?;
                    latencies.push(began.elapsed());
                    n += 1;
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(w.await??);
    }
    let elapsed = start.elapsed();
    let after = store.writer_stats();
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);

    latencies.sort_unstable();
    let at = |q: usize| latencies.get(latencies.len().saturating_sub(1) * q / 100).copied().unwrap_or_default();
    let batches = after.batches.saturating_sub(before.batches).max(1);
    Ok(Figures {
        per_sec: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(50),
        p99: at(99),
        per_commit: after.jobs.saturating_sub(before.jobs) as f64 / batches as f64,
    })
}
