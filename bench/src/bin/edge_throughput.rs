//! Webhooks through the edge component versus the gateway's native webhook path (issue #8).
//!
//! ```sh
//! cargo test -p deskgate-tests --no-run      # builds target/wasm-edge/.../edge-composed.wasm
//! cargo run -p deskgate-bench --bin edge_throughput -- [REQUESTS] [CONCURRENCY] [EDGE.wasm]
//! NATIVE_ONLY=1 cargo run --release -p deskgate-bench --bin edge_throughput -- 40000 64
//! ```
//!
//! With `NATIVE_ONLY` set only the native path runs, once, for all `REQUESTS`: issue #6's
//! webhooks per second (verified, parsed, deduplicated, durable). The edge is still loaded.
//!
//! One process, one tokio runtime, one gateway (SQLite store in a temporary directory, the
//! built-in Zendesk adapter) serving both `POST /webhooks/{connection}` (native: verify, parse,
//! store) and `POST /v1/ingest/{connection}` (what the edge forwards to), and the edge the
//! build writes pre-composed with the three built-in adapters (`edge-composed.wasm`), served by
//! `deskgate::edge` (wasmtime-wasi-http, a fresh instance per request). An `EDGE.wasm` given that
//! still has adapter imports is composed here with the built-in adapters. Every request is a distinct, validly signed Zendesk delivery (its own
//! ticket), so each path does the same work: one verification, one parse, one stored event. The
//! two paths run in alternating rounds with the same keep-alive client, so drift on the shared
//! two cores hits both; the figures are requests/s and latency percentiles per path, and what
//! the edge adds at p50 and p99.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use deskgate::api::edge_ingest::with_edge_token;
use deskgate::api::{AppState, app};
use deskgate::clock::{Clock, SharedClock, SystemClock};
use deskgate::config::Secret;
use deskgate::edge::{AdapterLink, EdgeConfig, EdgeServer};
use deskgate::ingest::webhook::WebhookSecret;
use deskgate::runtime::{AdapterRuntime, RuntimeConfig};
use deskgate::store::{self, NewConnection, SecretKey};
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

const SECRET: &str = "zd-signing-secret";
const EDGE_TOKEN: &str = "bench-edge-token-0123456789";

fn rfc3339(ms: i64) -> String {
    let secs = ms / 1000;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm), enough for a signed timestamp.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// A signed Zendesk delivery about ticket `ticket`: (headers, body).
fn delivery(ticket: usize, now_ms: i64) -> (Vec<(&'static str, String)>, Vec<u8>) {
    let at = rfc3339(now_ms);
    let body = serde_json::json!({
        "type": "zen:event-type:ticket.status_changed", "account_id": 1, "id": format!("evt-{ticket}"), "time": at,
        "zendesk_event_version": "2022-11-06", "subject": format!("zen:ticket:{ticket}"),
        "detail": {"id": ticket.to_string(), "status": "OPEN", "subject": "Printer on fire",
                   "created_at": at, "updated_at": at, "requester_id": "7", "tags": []},
        "event": {"current": "OPEN", "previous": "NEW"}
    })
    .to_string()
    .into_bytes();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(at.as_bytes());
    mac.update(&body);
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (vec![("x-zendesk-webhook-signature", sig), ("x-zendesk-webhook-signature-timestamp", at)], body)
}

struct Run {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `n` requests with `concurrency` in flight to `url`, tickets numbered from `first`.
async fn load(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    expect: u16,
    first: usize,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Run> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, next) = (client.clone(), url.to_owned(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(lat);
                }
                let (headers, body) = delivery(first + i, SystemClock.now_ms());
                let mut req = hyper::Request::post(&url).header("content-type", "application/json");
                for (k, v) in headers {
                    req = req.header(k, v);
                }
                let t = Instant::now();
                let resp = client.request(req.body(Full::new(Bytes::from(body)))?).await?;
                let status = resp.status();
                let answer = resp.into_body().collect().await?.to_bytes();
                lat.push(t.elapsed());
                anyhow::ensure!(status == expect, "{url} answered {status}: {}", String::from_utf8_lossy(&answer));
            }
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = started.elapsed();
    all.sort();
    Ok(Run { rps: n as f64 / elapsed.as_secs_f64(), p50: percentile(&all, 0.5), p99: percentile(&all, 0.99) })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let requests: usize = args.first().map(|s| s.parse()).transpose()?.unwrap_or(2_000);
    let concurrency: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(16);
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("bench/ is in the workspace");
    let edge_path = args.get(2).map(std::path::PathBuf::from).unwrap_or_else(|| {
        workspace.join("target/wasm-edge/wasm32-wasip2/wasm/edge-composed.wasm")
    });
    let edge = std::fs::read(&edge_path).map_err(|e| {
        anyhow::anyhow!("cannot read the edge component {}: {e}; build it with `cargo test -p deskgate-tests --no-run`", edge_path.display())
    })?;
    let composed = if deskgate_edge_compose::adapter_imports(&edge)?.is_empty() {
        edge
    } else {
        deskgate_edge_compose::compose(&edge, deskgate::builtin::ADAPTERS)?
    };

    let dir = std::env::temp_dir().join(format!("deskgate-edge-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let store = store::open(dir.join("bench.db").to_str().expect("utf-8 temp dir"), SecretKey::from_bytes([3; 32])).await?;
    let clock: SharedClock = Arc::new(SystemClock);
    let mut rt = AdapterRuntime::new(RuntimeConfig::default())?;
    rt.load_builtin()?;
    let adapter = rt.get("zendesk").expect("built in");
    for conn in ["native", "edge"] {
        store.create_connection(&NewConnection::new(conn, "zendesk", conn), clock.now_ms()).await?;
    }
    let state = AppState::new(store.clone(), clock.clone(), Secret::new("bench-api-token-0123456789"), [adapter]);
    state.webhook_routes().set_secret("native", WebhookSecret { secret: SECRET.as_bytes().to_vec(), allow_unsigned: false });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let core = format!("http://{}", listener.local_addr()?);
    let router = with_edge_token(app(state), Secret::new(EDGE_TOKEN));
    tokio::spawn(async move { axum_serve(listener, router).await });

    let vars = BTreeMap::from([
        ("core_url".to_owned(), core.clone()),
        ("core_token".to_owned(), EDGE_TOKEN.to_owned()),
        ("conn_edge_platform".to_owned(), "zendesk".to_owned()),
        ("conn_edge_secret".to_owned(), SECRET.to_owned()),
    ]);
    let server = Arc::new(EdgeServer::new(&composed, AdapterLink::Composed, EdgeConfig::new(vars, clock.clone())?)?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let edge_url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { server.serve(listener, std::future::pending()).await });

    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let native_url = format!("{core}/webhooks/native");
    let edge_url = format!("{edge_url}/webhooks/edge");
    // Warm both paths (compile caches, connections, SQLite pages).
    let refused_url = edge_url.replace("/webhooks/edge", "/webhooks/unknown");
    load(&client, &native_url, 200, 10_000_000, 200, concurrency).await?;
    load(&client, &edge_url, 200, 20_000_000, 200, concurrency).await?;
    let rounds = 3;
    let per = requests / rounds;
    let mut native = Vec::new();
    let mut through_edge = Vec::new();
    let mut refused = Vec::new();
    if std::env::var_os("NATIVE_ONLY").is_some() {
        let t = Instant::now();
        let run = load(&client, &native_url, 200, 60_000_000, requests, concurrency).await?;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "native /webhooks only: {requests} deliveries, {concurrency} in flight: {:.0} webhooks/s, p50 {:.2} ms, p99 {:.2} ms ({:.1} s)",
            run.rps, ms(run.p50), ms(run.p99), t.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    for r in 0..rounds {
        native.push(load(&client, &native_url, 200, 30_000_000 + r * per, per, concurrency).await?);
        through_edge.push(load(&client, &edge_url, 200, 40_000_000 + r * per, per, concurrency).await?);
        // The edge alone: instance, describe, config lookup, refusal; nothing forwarded.
        refused.push(load(&client, &refused_url, 404, 50_000_000 + r * per, per, concurrency).await?);
    }
    let median = |runs: &[Run], f: &dyn Fn(&Run) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("{requests} signed Zendesk deliveries per path in {rounds} alternating rounds, {concurrency} in flight (median of rounds)");
    println!("| path | requests/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    let rows = [
        ("native /webhooks (verify, parse, store)", &native),
        ("edge component -> /v1/ingest (verify, parse, forward, store)", &through_edge),
        ("edge component alone (unknown connection, refused)", &refused),
    ];
    for (name, runs) in rows {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} |",
            median(runs, &|r| r.rps),
            median(runs, &|r| ms(r.p50)),
            median(runs, &|r| ms(r.p99))
        );
    }
    println!(
        "edge adds: p50 {:+.2} ms, p99 {:+.2} ms; throughput ratio edge/native {:.2}",
        median(&through_edge, &|r| ms(r.p50)) - median(&native, &|r| ms(r.p50)),
        median(&through_edge, &|r| ms(r.p99)) - median(&native, &|r| ms(r.p99)),
        median(&through_edge, &|r| r.rps) / median(&native, &|r| r.rps)
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn axum_serve(listener: tokio::net::TcpListener, router: axum::Router) {
    if let Err(e) = axum::serve(listener, router).await {
        eprintln!("gateway stopped: {e}");
    }
}
