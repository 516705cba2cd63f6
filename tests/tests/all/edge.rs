//! Issue #8: the Spin edge component (`components/edge`), served by deskgate's own wasi:http
//! runtime (`deskgate::edge`), in front of a running gateway (`deskgate::api::app` with the edge
//! ingest token), with the platform simulators delivering signed webhooks over real HTTP.
//!
//! One edge serves every platform at `/webhooks/{connection}`. Every scenario runs twice: with
//! the edge's adapter imports linked by the host to the built-in adapters (as Spin's component
//! dependencies satisfy them) and with the pre-composed edge the build writes
//! (`edge-composed.wasm`, by `tests/build.rs` with `deskgate-edge-compose`, for runtimes without
//! dependencies); both must behave alike.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use deskgate::api::edge_ingest::with_edge_token;
use deskgate::api::{AppState, app};
use deskgate::clock::{Clock, ManualClock, SharedClock};
use deskgate::config::Secret;
use deskgate::edge::{AdapterLink, EdgeConfig, EdgeServer};
use deskgate::runtime::{Adapter, AdapterRuntime};
use deskgate::store::{self, InboxEvent, NewConnection, Pull, SecretKey, SharedStore};
use deskgate_sim::{AccountSpec, AgentSpec, FaultConfig, Platform, SimConfig, SimHandle, TicketSpec, WebhookTarget};
use deskgate_tests::{EDGE, EDGE_COMPOSED, EDGE_PLATFORMS, TempDir, test_config};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

/// 2026-01-01T00:00:00Z: the simulators' frozen clock starts here.
const T0: i64 = 1_767_225_600_000;
const EDGE_TOKEN: &str = "edge-token-0123456789abcdef";
const API_TOKEN: &str = "api-token-0123456789abcdef";

/// The two ways the edge's adapter imports are satisfied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// The host links each import to the separately loaded adapter (Spin's dependencies).
    Linked,
    /// The edge was pre-composed with the adapters.
    Composed,
}

const LINKS: [Link; 2] = [Link::Linked, Link::Composed];

/// The gateway reads the simulator's frozen clock, and so does the edge.
#[derive(Clone)]
struct SimTime(deskgate_sim::Sim);

impl std::fmt::Debug for SimTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimTime")
    }
}

impl Clock for SimTime {
    fn now_ms(&self) -> i64 {
        self.0.clock().now_ms()
    }
}

fn builtin_bytes(platform: &str) -> &'static [u8] {
    deskgate::builtin::ADAPTERS.iter().find(|(id, _)| *id == platform).map(|(_, b)| *b).expect("built in")
}

/// The edge component for `link`: as built, or the build's pre-composed `edge-composed.wasm`.
fn edge_component(link: Link) -> Vec<u8> {
    match link {
        Link::Linked => deskgate_tests::component(EDGE),
        Link::Composed => deskgate_tests::component(EDGE_COMPOSED),
    }
}

/// Each platform's adapter import and the adapter component built for it, as `compose` takes them.
fn builtin_pairs() -> Vec<(&'static str, &'static [u8])> {
    EDGE_PLATFORMS.iter().map(|(platform, _)| (*platform, builtin_bytes(platform))).collect()
}

/// The core gateway: store, API router with the edge token, on a port it can be restarted on.
struct Gateway {
    _dir: TempDir,
    store: SharedStore,
    state: AppState,
    addr: SocketAddr,
    server: Option<tokio::task::JoinHandle<()>>,
    edge_token: bool,
}

impl Gateway {
    async fn start(clock: SharedClock, adapters: Vec<Arc<Adapter>>, connections: &[(&str, &str)], edge_token: bool) -> Gateway {
        let dir = TempDir::new("edge-gw");
        let path = dir.join("deskgate.db");
        let store = store::open(path.to_str().unwrap(), SecretKey::from_bytes([7; 32])).await.unwrap();
        for (id, platform) in connections {
            store.create_connection(&NewConnection::new(*id, *platform, *id), T0).await.unwrap();
        }
        let state = AppState::new(store.clone(), clock, Secret::new(API_TOKEN), adapters);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut gw = Gateway { _dir: dir, store, state, addr, server: None, edge_token };
        gw.serve(listener);
        gw
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let router = app(self.state.clone());
        let router = if self.edge_token { with_edge_token(router, Secret::new(EDGE_TOKEN)) } else { router };
        self.server = Some(tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        }));
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop serving (the port is free again once this returns).
    async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
            let _ = s.await;
        }
    }

    /// Serve again on the same port.
    async fn restart(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    async fn events(&self, connection: &str) -> Vec<InboxEvent> {
        self.store
            .pull_events(&Pull { after: 0, limit: 500, connection_id: Some(connection.into()), now: T0 })
            .await
            .unwrap()
    }

    fn accepted(&self) -> u64 {
        self.state.ingest_metrics().webhooks_accepted.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The edge, served on a free port.
struct Edge {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Edge {
    /// The edge with every built-in adapter of `rt` (linked, or pre-composed).
    async fn start(link: Link, rt: &AdapterRuntime, config: EdgeConfig) -> Edge {
        let bytes = edge_component(link);
        let adapter_link = match link {
            Link::Linked => AdapterLink::Linked(rt.adapters().cloned().collect()),
            Link::Composed => AdapterLink::Composed,
        };
        Edge::serve(&bytes, adapter_link, config).await
    }

    /// Serve the edge component `bytes`, its adapter imports satisfied as `link` says.
    async fn serve(bytes: &[u8], link: AdapterLink, config: EdgeConfig) -> Edge {
        let server = Arc::new(EdgeServer::new(bytes, link, config).expect("edge loads"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            server
                .serve(listener, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Edge { url, stop: Some(tx) }
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

fn edge_vars(core_url: &str, connections: &[(&str, &str, &str)]) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::from([
        ("core_url".to_owned(), core_url.to_owned()),
        ("core_token".to_owned(), EDGE_TOKEN.to_owned()),
    ]);
    for (id, platform, secret) in connections {
        let key = id.replace('-', "_");
        vars.insert(format!("conn_{key}_platform"), (*platform).to_owned());
        vars.insert(format!("conn_{key}_secret"), (*secret).to_owned());
    }
    vars
}

fn runtime() -> AdapterRuntime {
    let mut rt = AdapterRuntime::new(test_config()).unwrap();
    rt.load_builtin().unwrap();
    rt
}

/// Wait until the simulator has no webhook queued or in flight; its clock is frozen, so when the
/// queue stops moving (a retry scheduled later), move sim time on by `step`.
async fn wait_drained(sim: &SimHandle, step: Duration) {
    let start = Instant::now();
    let mut last = (sim.webhooks_pending(), Instant::now());
    while sim.webhooks_pending() > 0 {
        assert!(start.elapsed() < Duration::from_secs(90), "webhooks still pending: {}", sim.webhooks_pending());
        tokio::time::sleep(Duration::from_millis(10)).await;
        let pending = sim.webhooks_pending();
        if pending != last.0 {
            last = (pending, Instant::now());
        } else if last.1.elapsed() > Duration::from_millis(500) {
            sim.clock().advance(step);
            last.1 = Instant::now();
        }
    }
}

/// Wait (polling the delivery log, bounded) until `done` holds for it.
async fn wait_for_log(sim: &SimHandle, what: &str, done: impl Fn(&[deskgate_sim::DeliveryRecord]) -> bool) {
    let start = Instant::now();
    loop {
        let log = sim.webhook_deliveries();
        if done(&log) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{what}: delivery log {log:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What the app would see of a connection's events, without ids and times of storage.
fn normalized(events: &[InboxEvent]) -> Vec<(String, String, String, Value)> {
    events
        .iter()
        .map(|e| (e.ticket_id.clone(), e.kind.clone(), e.dedupe_key.clone(), e.ticket.clone()))
        .collect()
}

/// One edge at `/webhooks/{connection}` serves a connection of each platform at once: signed
/// webhooks from the three simulators (every delivery sent twice by the duplicate fault) reach
/// the gateway through it, each normalized by its connection's platform's adapter, and are stored
/// exactly once. The linked and the pre-composed edge store the same events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_simulators_webhooks_reach_the_gateway_through_the_edge_exactly_once() {
    let rt = runtime();
    let platforms = [
        (Platform::Zendesk, "zendesk", "zd-signing-secret"),
        (Platform::Freshdesk, "freshdesk", "fd-token"),
        (Platform::Intercom, "intercom", "ic-client-secret"),
    ];
    let conns: Vec<(String, &str, &str)> = platforms.iter().map(|(_, id, secret)| (format!("{id}-main"), *id, *secret)).collect();
    let mut stored = Vec::new();
    for link in LINKS {
        // One clock for the gateway and the edge: the Zendesk simulator's, whose signed
        // timestamps are the only ones the edge checks (all three start frozen at T0).
        let sims = start_sims(platforms.iter().map(|(p, _, _)| SimConfig::new(*p).seed(8).frozen_at(T0))).await;
        let clock: SharedClock = Arc::new(SimTime(sims[0].sim()));
        let gw_conns: Vec<(&str, &str)> = conns.iter().map(|(c, id, _)| (c.as_str(), *id)).collect();
        let gw = Gateway::start(clock.clone(), rt.adapters().cloned().collect(), &gw_conns, true).await;
        let edge_conns: Vec<(&str, &str, &str)> = conns.iter().map(|(c, id, s)| (c.as_str(), *id, *s)).collect();
        let edge = Edge::start(link, &rt, EdgeConfig::new(edge_vars(&gw.url(), &edge_conns), clock).unwrap()).await;
        let mut tickets = Vec::new();
        for (sim, (conn, _, secret)) in sims.iter().zip(&conns) {
            let account = sim.create_account(AccountSpec::default()).unwrap();
            sim.create_agent(account.id, AgentSpec { role: Some("admin".into()), ..Default::default() }).unwrap();
            sim.set_webhook(account.id, Some(WebhookTarget { url: format!("{}/webhooks/{conn}", edge.url), secret: (*secret).into() }))
                .unwrap();
            sim.set_faults(FaultConfig { webhook_duplicate: 1.0, ..Default::default() }).unwrap();
            let mut these = Vec::new();
            for n in 0..3 {
                sim.clock().advance(Duration::from_secs(1));
                let t = sim.create_ticket(account.id, TicketSpec { subject: Some(format!("edge {n}")), ..Default::default() }).unwrap();
                these.push(t["id"].to_string().trim_matches('"').to_owned());
            }
            tickets.push(these);
        }
        let mut per_link = Vec::new();
        for ((sim, (conn, id, _)), mut tickets) in sims.iter().zip(&conns).zip(tickets) {
            wait_drained(sim, Duration::from_secs(61 * 60)).await;
            let log = sim.webhook_deliveries();
            let sent: Vec<_> = log.iter().filter(|d| d.url.is_some()).collect();
            assert!(sent.len() >= 6, "{id} {link:?}: every delivery and its duplicate: {log:?}");
            assert!(sent.iter().all(|d| d.status == Some(200)), "{id} {link:?}: all accepted: {log:?}");
            let events = gw.events(conn).await;
            let mut seen: Vec<String> = events.iter().map(|e| e.ticket_id.clone()).collect();
            seen.sort();
            tickets.sort();
            assert_eq!(seen, tickets, "{id} {link:?}: one event per ticket, none twice: {events:?}");
            assert!(events.iter().all(|e| e.platform == *id && e.kind.starts_with("ticket.")), "{id}: {events:?}");
            println!("{id} {link:?}: {} deliveries through the one edge, {} events stored", sent.len(), events.len());
            // Order across tickets is the platform's delivery order, which is concurrent (the
            // simulators deliver several webhooks at once): compare the events, not their order.
            let mut these = normalized(&events);
            these.sort_by(|a, b| (&a.0, &a.1, &a.2).cmp(&(&b.0, &b.1, &b.2)));
            per_link.push(these);
        }
        let dup = gw.state.ingest_metrics().webhook_events_duplicate.load(std::sync::atomic::Ordering::Relaxed);
        assert!(dup >= 9, "{link:?}: the duplicates reached the core and were recognized ({dup})");
        stored.push(per_link);
        drop(edge);
        for sim in sims {
            sim.shutdown().await;
        }
    }
    assert_eq!(stored[0], stored[1], "linked and pre-composed edges store the same events");
}

/// Start a simulator for each configuration, in order.
async fn start_sims(configs: impl Iterator<Item = SimConfig>) -> Vec<SimHandle> {
    let mut sims = Vec::new();
    for config in configs {
        sims.push(deskgate_sim::start(config).await.unwrap());
    }
    sims
}

fn zendesk_body(ticket: u64, event_id: &str, at: &str, status: &str) -> String {
    json!({
        "type": "zen:event-type:ticket.status_changed", "account_id": 1, "id": event_id, "time": at,
        "zendesk_event_version": "2022-11-06", "subject": format!("zen:ticket:{ticket}"),
        "detail": {"id": ticket.to_string(), "status": status, "subject": "Printer on fire",
                   "created_at": at, "updated_at": at, "requester_id": "7", "tags": []},
        "event": {"current": status, "previous": "New"}
    })
    .to_string()
}

fn zendesk_sign(secret: &str, ts: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn rfc3339(ms: i64) -> String {
    // Only for times on 2026-01-01 (T0 + less than a day).
    let s = (ms - T0) / 1000;
    format!("2026-01-01T{:02}:{:02}:{:02}Z", s / 3600, (s % 3600) / 60, s % 60)
}

fn signed(secret: &str, ts: &str, body: &str) -> Vec<(&'static str, String)> {
    vec![
        ("x-zendesk-webhook-signature", zendesk_sign(secret, ts, body.as_bytes())),
        ("x-zendesk-webhook-signature-timestamp", ts.to_owned()),
    ]
}

async fn post(url: &str, headers: &[(&str, String)], body: Vec<u8>) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(url).header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.body(body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// How [`raw_post`] frames its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Declared up front by Content-Length.
    Length,
    /// `Transfer-Encoding: chunked`, no Content-Length: the size is only known by counting.
    Chunked,
}

/// POST a `size`-byte body declared by Content-Length over a raw socket and return the status,
/// reading the answer while still writing (an edge that refuses early answers before the
/// client has sent everything).
async fn raw_post_len(base: &str, path: &str, headers: &[(&str, String)], size: usize) -> u16 {
    raw_post(base, path, headers, size, Framing::Length).await
}

/// POST `size` bytes of body over a raw socket, framed as `framing` says, and return the status
/// (read while still writing, as [`raw_post_len`]).
async fn raw_post(base: &str, path: &str, headers: &[(&str, String)], size: usize, framing: Framing) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://").to_owned();
    let sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut rd, mut wr) = sock.into_split();
    let mut head = format!("POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\nconnection: close\r\n");
    match framing {
        Framing::Length => head.push_str(&format!("content-length: {size}\r\n")),
        Framing::Chunked => head.push_str("transfer-encoding: chunked\r\n"),
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        let chunk = vec![b' '; 64 * 1024];
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len());
            if framing == Framing::Chunked {
                wr.write_all(format!("{n:x}\r\n").as_bytes()).await?;
            }
            wr.write_all(&chunk[..n]).await?;
            if framing == Framing::Chunked {
                wr.write_all(b"\r\n").await?;
            }
            left -= n;
        }
        if framing == Framing::Chunked {
            wr.write_all(b"0\r\n\r\n").await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(20);
    while !answer.windows(2).any(|w| w == b"\r\n") && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), rd.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    writer.abort();
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Tampered, wrongly signed, unsigned, replayed, oversized, malformed and unknown deliveries,
/// and a connection configured for a platform the edge has no adapter for, are refused at the
/// edge with a code and a reason, and none reaches the gateway; a genuine one is then accepted, and its redelivery is a duplicate. The linked
/// and pre-composed edges answer every case identically.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_unsigned_replayed_and_malformed_deliveries_stop_at_the_edge() {
    const SECRET: &str = "zd-signing-secret";
    let rt = runtime();
    let adapter = rt.get("zendesk").unwrap();
    let mut answers = Vec::new();
    for link in LINKS {
        let clock = ManualClock::new(T0 + 3_600_000);
        let shared: SharedClock = Arc::new(clock.clone());
        let gw = Gateway::start(shared.clone(), vec![adapter.clone()], &[("zd", "zendesk")], true).await;
        let vars = edge_vars(&gw.url(), &[("zd", "zendesk", SECRET), ("hs", "hubspot", "x")]);
        let edge = Edge::start(link, &rt, EdgeConfig::new(vars, shared).unwrap()).await;
        let url = format!("{}/webhooks/zd", edge.url);
        let now = rfc3339(clock.now_ms());
        let body = zendesk_body(42, "evt-1", &now, "Open");
        let old = zendesk_body(42, "evt-0", &rfc3339(T0), "Open");
        type Case<'a> = (&'a str, String, Vec<(&'static str, String)>, Vec<u8>, u16, &'a str);
        let cases: Vec<Case> = vec![
            ("tampered body", url.clone(), signed(SECRET, &now, &body), body.replace("Open", "Solved").into_bytes(), 401, "forged-signature"),
            ("wrong secret", url.clone(), signed("not-the-secret", &now, &body), body.clone().into_bytes(), 401, "forged-signature"),
            ("unsigned", url.clone(), vec![], body.clone().into_bytes(), 401, "missing-signature"),
            ("replayed an hour later", url.clone(), signed(SECRET, &rfc3339(T0), &old), old.clone().into_bytes(), 401, "stale-timestamp"),
            ("not JSON", url.clone(), signed(SECRET, &now, "{oops"), b"{oops".to_vec(), 400, "malformed"),
            ("unknown connection", format!("{}/webhooks/nobody", edge.url), signed(SECRET, &now, &body), body.clone().into_bytes(), 404, "unknown-connection"),
            ("a platform the edge has no adapter for", format!("{}/webhooks/hs", edge.url), signed(SECRET, &now, &body), body.clone().into_bytes(), 500, "edge-misconfigured"),
            ("no such route", format!("{}/hooks/zd", edge.url), signed(SECRET, &now, &body), body.clone().into_bytes(), 404, "route-not-found"),
            ("the per-platform path of old", format!("{}/webhooks/zendesk/zd", edge.url), signed(SECRET, &now, &body), body.clone().into_bytes(), 404, "route-not-found"),
        ];
        let mut got_all = Vec::new();
        for (name, url, headers, payload, status, code) in cases {
            let (got, answer) = post(&url, &headers, payload).await;
            assert_eq!(got, status, "{link:?} {name}: {answer}");
            assert_eq!(answer["error"]["code"], json!(code), "{link:?} {name}: {answer}");
            let message = answer["error"]["message"].as_str().unwrap_or("");
            assert!(message.len() > 20, "{link:?} {name}: a reason: {answer}");
            println!("{link:?} {name}: {got} {code}: {message}");
            got_all.push((name, got, answer));
        }
        // Over the size limit, declared by Content-Length: refused before the body is read.
        let big = raw_post_len(&edge.url, "/webhooks/zd", &signed(SECRET, &now, &body), 2 << 20).await;
        assert_eq!(big, 413, "{link:?}: 2 MiB body");
        assert_eq!(gw.accepted(), 0, "{link:?}: nothing reached the gateway");
        assert!(gw.events("zd").await.is_empty());

        // The genuine delivery is accepted (the gateway's answer, relayed), its redelivery is a duplicate.
        let (got, answer) = post(&url, &signed(SECRET, &now, &body), body.clone().into_bytes()).await;
        assert_eq!((got, &answer), (200, &json!({"accepted": 1, "duplicates": 0, "stale": 0})), "{link:?}");
        let again = zendesk_body(42, "evt-1-retry", &now, "Open");
        let (got, answer) = post(&url, &signed(SECRET, &now, &again), again.clone().into_bytes()).await;
        assert_eq!((got, &answer), (200, &json!({"accepted": 0, "duplicates": 1, "stale": 0})), "{link:?}");
        assert_eq!(gw.events("zd").await.len(), 1);
        answers.push(got_all);
    }
    assert_eq!(answers[0], answers[1], "linked and pre-composed edges answer alike");
}

/// With the gateway down the edge answers 503 (after its short retry), so the simulator
/// schedules a redelivery; once the gateway is back, moving the simulator's clock to the retry
/// time delivers it, and the change is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_down_means_503_and_the_platforms_redelivery_lands_once_it_is_back() {
    const SECRET: &str = "zd-signing-secret";
    let rt = runtime();
    let adapter = rt.get("zendesk").unwrap();
    for link in LINKS {
        let sim = deskgate_sim::start(SimConfig::new(Platform::Zendesk).seed(8).frozen_at(T0)).await.unwrap();
        let clock: SharedClock = Arc::new(SimTime(sim.sim()));
        let mut gw = Gateway::start(clock.clone(), vec![adapter.clone()], &[("zd", "zendesk")], true).await;
        let edge = Edge::start(link, &rt, EdgeConfig::new(edge_vars(&gw.url(), &[("zd", "zendesk", SECRET)]), clock).unwrap()).await;
        let account = sim.create_account(AccountSpec::default()).unwrap();
        sim.create_agent(account.id, AgentSpec { role: Some("admin".into()), ..Default::default() }).unwrap();
        sim.set_webhook(account.id, Some(WebhookTarget { url: format!("{}/webhooks/zd", edge.url), secret: SECRET.into() }))
            .unwrap();

        gw.stop().await;
        // What the edge says while the core is down.
        let now = rfc3339(sim.clock().now_ms());
        let body = zendesk_body(7, "evt-down", &now, "Open");
        let (status, answer) = post(&format!("{}/webhooks/zd", edge.url), &signed(SECRET, &now, &body), body.into_bytes()).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (503, Some("core-unreachable")), "{link:?}: {answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains("3 attempts"), "{answer}");

        sim.clock().advance(Duration::from_secs(1));
        sim.create_ticket(account.id, TicketSpec { subject: Some("while the core is down".into()), ..Default::default() }).unwrap();
        wait_for_log(&sim, "first attempt refused with 503", |log| {
            log.iter().any(|d| d.attempt == 1 && d.status == Some(503) && d.next_attempt_at_ms.is_some())
        })
        .await;
        let first = sim.webhook_deliveries().into_iter().find(|d| d.attempt == 1).unwrap();
        assert!(gw.events("zd").await.is_empty(), "{link:?}: nothing stored while down");

        gw.restart().await;
        // The simulator redelivers on its own clock: move it to the scheduled retry.
        let due = first.next_attempt_at_ms.unwrap();
        sim.clock().set(due);
        wait_for_log(&sim, "redelivery accepted", |log| log.iter().any(|d| d.attempt == 2 && d.status == Some(200))).await;
        wait_drained(&sim, Duration::from_secs(60)).await;
        let events = gw.events("zd").await;
        assert_eq!(events.len(), 1, "{link:?}: the redelivered change, once: {events:?}");
        println!("{link:?}: attempt 1 got 503 at {}, attempt 2 at {} stored {}", first.at_ms, due, events[0].dedupe_key);
        drop(edge);
        sim.shutdown().await;
        gw.stop().await;
    }
}

/// The gateway's ingest endpoint takes only its own token, checks the connection and its
/// platform, and deduplicates; an edge with the wrong token, or one whose outbound requests are
/// not allowed to reach the core, answers 5xx so the platform redelivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_core_ingest_endpoint_takes_only_its_token_and_the_connections_platform() {
    let rt = runtime();
    let adapter = rt.get("zendesk").unwrap();
    let clock = ManualClock::new(T0 + 60_000);
    let shared: SharedClock = Arc::new(clock.clone());
    let gw = Gateway::start(shared.clone(), vec![adapter.clone()], &[("zd", "zendesk")], true).await;
    let url = format!("{}/v1/ingest/zd", gw.url());
    let event = json!({"event_id": "e1", "ticket_id": "42", "kind": "updated", "occurred_at": T0, "ticket": null});
    let body = |platform: &str| json!({"platform": platform, "events": [event]}).to_string().into_bytes();
    let bearer = |t: &str| vec![("authorization", format!("Bearer {t}"))];

    let cases: Vec<(&str, String, Vec<(&str, String)>, Vec<u8>, u16, &str)> = vec![
        ("no token", url.clone(), vec![], body("zendesk"), 401, "unauthorized"),
        ("the API token", url.clone(), bearer(API_TOKEN), body("zendesk"), 401, "unauthorized"),
        ("another platform", url.clone(), bearer(EDGE_TOKEN), body("intercom"), 409, "platform_mismatch"),
        ("unknown connection", format!("{}/v1/ingest/nobody", gw.url()), bearer(EDGE_TOKEN), body("zendesk"), 404, "connection_not_found"),
        ("not the edge's shape", url.clone(), bearer(EDGE_TOKEN), br#"{"events": 3}"#.to_vec(), 400, "invalid_json"),
    ];
    for (name, url, headers, payload, status, code) in cases {
        let (got, answer) = post(&url, &headers, payload).await;
        assert_eq!((got, answer["error"]["code"].as_str()), (status, Some(code)), "{name}: {answer}");
    }
    let (got, answer) = post(&url, &bearer(EDGE_TOKEN), body("zendesk")).await;
    assert_eq!((got, &answer), (200, &json!({"accepted": 1, "duplicates": 0, "stale": 0})));
    let (got, answer) = post(&url, &bearer(EDGE_TOKEN), body("zendesk")).await;
    assert_eq!((got, &answer), (200, &json!({"accepted": 0, "duplicates": 1, "stale": 0})));

    // A gateway without an edge token refuses every edge, naming the variable to set.
    let closed = Gateway::start(shared.clone(), vec![adapter.clone()], &[("zd", "zendesk")], false).await;
    let (got, answer) = post(&format!("{}/v1/ingest/zd", closed.url()), &bearer(EDGE_TOKEN), body("zendesk")).await;
    assert_eq!((got, answer["error"]["code"].as_str()), (503, Some("edge_ingest_disabled")), "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("DESKGATE_EDGE_TOKEN"), "{answer}");

    // Through the edge: a wrong core token, and an outbound allow-list that does not hold the core.
    const SECRET: &str = "zd-signing-secret";
    let now = rfc3339(clock.now_ms());
    let delivery = zendesk_body(43, "evt-43", &now, "Open");
    let mut wrong_token = edge_vars(&gw.url(), &[("zd", "zendesk", SECRET)]);
    wrong_token.insert("core_token".into(), "not-the-edge-token-at-all".into());
    let edge = Edge::start(Link::Linked, &rt, EdgeConfig::new(wrong_token, shared.clone()).unwrap()).await;
    let (got, answer) = post(&format!("{}/webhooks/zd", edge.url), &signed(SECRET, &now, &delivery), delivery.clone().into_bytes()).await;
    assert_eq!((got, answer["error"]["code"].as_str()), (503, Some("core-refused")), "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("core_token"), "{answer}");

    let mut denied = EdgeConfig::new(edge_vars(&gw.url(), &[("zd", "zendesk", SECRET)]), shared.clone()).unwrap();
    denied.allowed_outbound = vec!["http://127.0.0.1:9".into()];
    let edge = Edge::start(Link::Linked, &rt, denied).await;
    let (got, answer) = post(&format!("{}/webhooks/zd", edge.url), &signed(SECRET, &now, &delivery), delivery.clone().into_bytes()).await;
    assert_eq!((got, answer["error"]["code"].as_str()), (503, Some("core-unreachable")), "{answer}");
    assert_eq!(gw.events("zd").await.len(), 1, "only the direct ingest above was stored");

    // Missing configuration is named.
    let mut vars = edge_vars(&gw.url(), &[]);
    vars.remove("core_token");
    let err = EdgeConfig::new(vars, shared.clone()).unwrap_err().to_string();
    assert!(err.contains("core_token"), "{err}");
    // A pre-composed edge asked to link adapters, and a plain one served without, are refused;
    // so are a plain one short of an adapter, and an adapter the edge has no import for.
    let all: Vec<Arc<Adapter>> = rt.adapters().cloned().collect();
    let config = EdgeConfig::new(edge_vars(&gw.url(), &[]), shared.clone()).unwrap();
    let composed = edge_component(Link::Composed);
    let err = EdgeServer::new(&composed, AdapterLink::Linked(all.clone()), config.clone()).unwrap_err().to_string();
    assert!(err.contains("pre-composed"), "{err}");
    let plain = edge_component(Link::Linked);
    let err = EdgeServer::new(&plain, AdapterLink::Composed, config.clone()).unwrap_err().to_string();
    assert!(err.contains("--adapter") && err.contains("zendesk, freshdesk, intercom"), "{err}");
    let err = EdgeServer::new(&plain, AdapterLink::Linked(vec![adapter.clone()]), config.clone()).unwrap_err().to_string();
    assert!(err.contains("`freshdesk` adapter: pass --adapter freshdesk"), "{err}");
    let mut extra = all.clone();
    let mut other = AdapterRuntime::new(test_config()).unwrap();
    extra.push(other.load("acmedesk", &deskgate_tests::component(deskgate_tests::EXAMPLE_ACMEDESK)).unwrap());
    let err = EdgeServer::new(&plain, AdapterLink::Linked(extra), config).unwrap_err().to_string();
    assert!(err.contains("no `acmedesk` adapter import"), "{err}");
}

/// An adapter plugged into another platform's import composes (the interface is the same), and
/// the edge refuses that platform's deliveries with 500 `edge-misconfigured` naming the mix-up,
/// instead of parsing them with the wrong adapter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adapter_in_another_platforms_import_is_named_not_used() {
    let mut pairs = builtin_pairs();
    let freshdesk = builtin_bytes("freshdesk");
    pairs.iter_mut().find(|(p, _)| *p == "zendesk").unwrap().1 = freshdesk;
    let mixed = deskgate_edge_compose::compose(&deskgate_tests::component(EDGE), &pairs).unwrap();
    let rt = runtime();
    let clock: SharedClock = Arc::new(ManualClock::new(T0));
    let gw = Gateway::start(clock.clone(), rt.adapters().cloned().collect(), &[("zd", "zendesk")], true).await;
    let config = EdgeConfig::new(edge_vars(&gw.url(), &[("zd", "zendesk", "s")]), clock).unwrap();
    let edge = Edge::serve(&mixed, AdapterLink::Composed, config).await;
    let (got, answer) = post(&format!("{}/webhooks/zd", edge.url), &[], b"{}".to_vec()).await;
    assert_eq!((got, answer["error"]["code"].as_str()), (500, Some("edge-misconfigured")), "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("`zendesk` adapter import is satisfied by the freshdesk adapter"), "{answer}");
    assert_eq!(gw.accepted(), 0);
}

/// `deskgate edge`'s argument handling end to end: values from a TOML file, one overridden by
/// `--config-var`, the adapter linked by its built-in id, then served and used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_commands_arguments_configure_a_working_edge() {
    const SECRET: &str = "zd-signing-secret";
    let rt = runtime();
    let adapter = rt.get("zendesk").unwrap();
    let clock: SharedClock = Arc::new(deskgate::clock::SystemClock);
    let gw = Gateway::start(clock.clone(), vec![adapter.clone()], &[("zd-cli", "zendesk")], true).await;
    let dir = TempDir::new("edge-cli");
    let file = dir.join("edge.toml");
    std::fs::write(
        &file,
        format!(
            "core_url = \"{}\"\ncore_token = \"{EDGE_TOKEN}\"\nconn_zd_cli_platform = \"zendesk\"\nconn_zd_cli_secret = \"wrong\"\n",
            gw.url()
        ),
    )
    .unwrap();
    let args = deskgate::cli::EdgeArgs {
        component: EDGE.into(),
        adapter: vec!["zendesk".into(), "freshdesk".into(), "intercom".into()],
        listen: "127.0.0.1:0".into(),
        config_var: vec![format!("conn_zd_cli_secret={SECRET}")],
        config_file: Some(file),
    };
    let prepared = deskgate::edge::prepare(&args).expect("the arguments are valid");
    assert_eq!(prepared.adapter, "zendesk,freshdesk,intercom");
    let listener = tokio::net::TcpListener::bind(prepared.listen).await.unwrap();
    let url = format!("http://{}/webhooks/zd-cli", listener.local_addr().unwrap());
    let server = prepared.server.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move { server.serve(listener, async { let _ = rx.await; }).await.unwrap() });
    let now_ms = clock.now_ms();
    let now = {
        // The signed timestamp must be near the system clock here: format it as RFC 3339.
        let secs = now_ms / 1000;
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
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
    };
    let body = zendesk_body(99, "evt-cli", &now, "Open");
    let (got, answer) = post(&url, &signed(SECRET, &now, &body), body.clone().into_bytes()).await;
    assert_eq!((got, &answer), (200, &json!({"accepted": 1, "duplicates": 0, "stale": 0})), "the override won");
    let _ = tx.send(());
}

/// The edge imports only what every wasi:http 0.2 host provides or can (WASI 0.2 interfaces,
/// with `wasi:config/store` at the version Spin provides) plus one adapter per platform, named by
/// the platform's id; nothing Spin-only. Pre-composed, the adapter imports are gone and nothing
/// new appears; what stays is `deskgate:adapter/types`, an instance of type definitions only (no
/// function), which wasmtime-based hosts (Spin, SpinKube, `deskgate edge`) accept without a
/// definition.
#[test]
fn the_edge_imports_nothing_spin_only() {
    let plain = deskgate::edge::component_imports(&edge_component(Link::Linked)).unwrap();
    let named: Vec<&str> = plain.iter().filter(|i| !i.contains(':')).map(String::as_str).collect();
    assert_eq!(named, deskgate_edge::PLATFORMS, "one adapter import per platform: {plain:?}");
    assert!(plain.iter().any(|i| i == "wasi:config/store@0.2.0-draft-2024-09-27"), "{plain:?}");
    assert!(plain.iter().any(|i| i.starts_with("wasi:http/outgoing-handler@0.2")), "{plain:?}");
    for i in plain.iter().filter(|i| i.contains(':')) {
        let portable = (i.starts_with("wasi:") && i.contains("@0.2.")) || i == "deskgate:adapter/types@0.1.0";
        assert!(portable, "{i} is not an import every wasi:http 0.2 host provides: {plain:?}");
    }
    let composed = deskgate::edge::component_imports(&edge_component(Link::Composed)).unwrap();
    assert!(!composed.iter().any(|i| !i.contains(':')), "no adapter import is left: {composed:?}");
    let extra: Vec<_> = composed.iter().filter(|i| !plain.contains(i)).collect();
    assert!(extra.is_empty(), "the adapters brought imports of their own: {extra:?}");
}

/// Pre-composition refuses what cannot be composed, naming the problem and the fix.
#[test]
fn composing_the_wrong_things_is_refused_with_the_fix() {
    use deskgate_edge_compose::compose;
    let edge = deskgate_tests::component(EDGE);
    let all = builtin_pairs();
    let with = |platform: &str, bytes: &'static [u8]| {
        let mut pairs = all.clone();
        pairs.iter_mut().find(|(p, _)| *p == platform).unwrap().1 = bytes;
        pairs
    };
    let err = compose(&edge, &with("zendesk", b"not a component")).unwrap_err().to_string();
    assert!(err.contains("the zendesk adapter is not a loadable component"), "{err}");
    let err = compose(b"junk", &all).unwrap_err().to_string();
    assert!(err.contains("the edge is not a loadable component"), "{err}");
    let err = compose(&edge, &all[..2]).unwrap_err().to_string();
    assert!(err.contains("the `intercom` adapter and none was given") && err.contains("intercom=<"), "{err}");
    let mut twice = all.clone();
    twice.push(("zendesk", builtin_bytes("zendesk")));
    let err = compose(&edge, &twice).unwrap_err().to_string();
    assert!(err.contains("the `zendesk` adapter is given twice"), "{err}");
    let mut extra = all.clone();
    extra.push(("acmedesk", builtin_bytes("zendesk")));
    let err = compose(&edge, &extra).unwrap_err().to_string();
    assert!(err.contains("no `acmedesk` adapter import") && err.contains("world.wit"), "{err}");
    // Something that is no adapter in an adapter's place, and an adapter in the edge's place.
    let edge_bytes: &'static [u8] = Box::leak(edge.clone().into_boxed_slice());
    let err = compose(&edge, &with("freshdesk", edge_bytes)).unwrap_err().to_string();
    assert!(err.contains("the freshdesk adapter exports no `deskgate:adapter/adapter@0.1.0`") && err.contains("wit/adapter.wit"), "{err}");
    let err = compose(builtin_bytes("intercom"), &all).unwrap_err().to_string();
    assert!(err.contains("the edge has no adapter imports"), "{err}");
    let composed = deskgate_tests::component(EDGE_COMPOSED);
    let err = compose(&composed, &all).unwrap_err().to_string();
    assert!(err.contains("the edge has no adapter imports"), "{err}");
}

/// The build writes the edge pre-composed with every built-in adapter next to the built edge
/// (`edge-composed.wasm`, issue #8), and it is exactly the composition of the built edge with
/// them: no stale file from an older edge survives a rebuild.
#[test]
fn the_build_writes_the_pre_composed_edge() {
    let platforms: Vec<&str> = EDGE_PLATFORMS.iter().map(|(p, _)| *p).collect();
    assert_eq!(platforms, deskgate_edge::PLATFORMS);
    let edge = deskgate_tests::component(EDGE);
    let path = std::path::Path::new(EDGE_COMPOSED);
    assert_eq!(path.parent(), std::path::Path::new(EDGE).parent(), "next to the built edge");
    assert_eq!(path.file_name().unwrap().to_str(), Some("edge-composed.wasm"));
    let adapters: Vec<(&str, Vec<u8>)> = EDGE_PLATFORMS.iter().map(|(p, a)| (*p, deskgate_tests::component(a))).collect();
    let pairs: Vec<(&str, &[u8])> = adapters.iter().map(|(p, b)| (*p, b.as_slice())).collect();
    let expected = deskgate_edge_compose::compose(&edge, &pairs).unwrap();
    assert!(deskgate_tests::component(EDGE_COMPOSED) == expected, "{EDGE_COMPOSED} is not the composition of {EDGE} with the built adapters");
}

/// A platform's webhook signing scheme, as its simulator applies it.
#[derive(Debug, Clone, Copy)]
struct Scheme {
    platform: Platform,
    id: &'static str,
    secret: &'static str,
    /// The headers that carry the signature (and its timestamp, if any).
    signature_headers: &'static [&'static str],
    /// A signature of the right shape that no secret of ours produced.
    wrong_signature: &'static str,
    /// Whether the scheme signs a timestamp (only then can the edge refuse a replay).
    signs_timestamp: bool,
}

const SCHEMES: [Scheme; 3] = [
    Scheme {
        platform: Platform::Zendesk,
        id: "zendesk",
        secret: "zd-signing-secret",
        signature_headers: &["x-zendesk-webhook-signature", "x-zendesk-webhook-signature-timestamp"],
        wrong_signature: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        signs_timestamp: true,
    },
    Scheme {
        platform: Platform::Freshdesk,
        id: "freshdesk",
        secret: "fd-token",
        signature_headers: &["x-deskgate-webhook-token"],
        wrong_signature: "not-the-connections-token",
        signs_timestamp: false,
    },
    Scheme {
        platform: Platform::Intercom,
        id: "intercom",
        secret: "ic-client-secret",
        signature_headers: &["x-hub-signature"],
        wrong_signature: "sha1=0000000000000000000000000000000000000000",
        signs_timestamp: false,
    },
];

/// A genuine delivery, as the simulator signed and sent it: its signature headers and body,
/// and the simulator's time when it was sent.
#[derive(Debug, Clone)]
struct Captured {
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    at_ms: i64,
}

/// Have `scheme`'s simulator send one webhook (a new ticket) to a local receiver and keep it.
async fn capture_delivery(scheme: Scheme) -> Captured {
    type Seen = Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, Vec<u8>)>>>;
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    let receiver = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push((headers, body.to_vec()));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, receiver).await.unwrap() });
    let sim = deskgate_sim::start(SimConfig::new(scheme.platform).seed(8).frozen_at(T0)).await.unwrap();
    let account = sim.create_account(AccountSpec::default()).unwrap();
    sim.create_agent(account.id, AgentSpec { role: Some("admin".into()), ..Default::default() }).unwrap();
    sim.set_webhook(account.id, Some(WebhookTarget { url, secret: scheme.secret.into() })).unwrap();
    sim.clock().advance(Duration::from_secs(1));
    sim.create_ticket(account.id, TicketSpec { subject: Some("refusals at the edge".into()), ..Default::default() }).unwrap();
    let start = Instant::now();
    let (headers, body) = loop {
        if let Some(first) = seen.lock().unwrap().first().cloned() {
            break first;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{}: the simulator sent no webhook", scheme.id);
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let at_ms = sim.clock().now_ms();
    sim.shutdown().await;
    server.abort();
    let headers = scheme
        .signature_headers
        .iter()
        .map(|name| {
            let value = headers.get(*name).unwrap_or_else(|| panic!("{}: the simulator sent no {name}", scheme.id));
            (*name, value.to_str().unwrap().to_owned())
        })
        .collect();
    Captured { headers, body, at_ms }
}

/// Against each simulator's signing scheme (Zendesk's timestamped HMAC-SHA256, Freshdesk's shared
/// header token, Intercom's HMAC-SHA1 of the body), the edge refuses a wrong signature, a body
/// altered after signing (where the scheme covers the body), an unsigned delivery, a malformed
/// body and an oversized one, whether declared by Content-Length or chunked without one, with
/// a code and a reason; none of them reaches the gateway. The genuine delivery is then
/// accepted. Replayed: Zendesk's is refused as stale (its signed timestamp is an hour old);
/// Freshdesk's and Intercom's sign no timestamp, so the edge cannot tell a replay from the
/// platform's own redelivery and passes it on, and the core drops it as a duplicate of the
/// ticket version it holds: the edge answers 200, and the app still has one event. The linked
/// and pre-composed edges answer every case identically.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_schemes_forgeries_stop_at_the_edge_and_replays_reach_the_app_once() {
    let rt = runtime();
    for scheme in SCHEMES {
        let genuine = capture_delivery(scheme).await;
        let adapter = rt.get(scheme.id).unwrap();
        let conn = format!("{}-refusals", scheme.id);
        let mut answers = Vec::new();
        for link in LINKS {
            let clock = ManualClock::new(genuine.at_ms);
            let shared: SharedClock = Arc::new(clock.clone());
            let gw = Gateway::start(shared.clone(), vec![adapter.clone()], &[(&conn, scheme.id)], true).await;
            let vars = edge_vars(&gw.url(), &[(&conn, scheme.id, scheme.secret)]);
            let edge = Edge::start(link, &rt, EdgeConfig::new(vars, shared).unwrap()).await;
            let url = format!("{}/webhooks/{conn}", edge.url);
            let what = format!("{} {link:?}", scheme.id);

            let mut wrong = genuine.headers.clone();
            wrong[0].1 = scheme.wrong_signature.to_owned();
            let mut altered: Value = serde_json::from_slice(&genuine.body).unwrap();
            altered["altered_in_transit"] = json!(true);
            let altered = serde_json::to_vec(&altered).unwrap();
            type Case = (&'static str, Vec<(&'static str, String)>, Vec<u8>, u16, &'static str);
            let mut cases: Vec<Case> = vec![
                ("wrong signature", wrong, genuine.body.clone(), 401, "forged-signature"),
                ("unsigned", vec![], genuine.body.clone(), 401, "missing-signature"),
                ("not JSON", genuine.headers.clone(), b"{oops".to_vec(), 400, "malformed"),
            ];
            // Freshdesk's token is a header the admin typed: it does not cover the body, so an
            // altered body cannot be told from the genuine one there (TLS is what protects it).
            if scheme.id != "freshdesk" {
                cases.push(("body altered after signing", genuine.headers.clone(), altered, 401, "forged-signature"));
            }
            let mut got_all = Vec::new();
            for (name, headers, body, status, code) in cases {
                let (got, answer) = post(&url, &headers, body).await;
                assert_eq!((got, answer["error"]["code"].as_str()), (status, Some(code)), "{what} {name}: {answer}");
                assert!(answer["error"]["message"].as_str().unwrap_or("").len() > 20, "{what} {name}: a reason: {answer}");
                got_all.push((name, got, answer));
            }
            let path = format!("/webhooks/{conn}");
            for framing in [Framing::Length, Framing::Chunked] {
                let got = raw_post(&edge.url, &path, &genuine.headers, 2 << 20, framing).await;
                assert_eq!(got, 413, "{what}: a 2 MiB body, {framing:?}");
            }
            assert_eq!(gw.accepted(), 0, "{what}: nothing reached the gateway");
            assert!(gw.events(&conn).await.is_empty(), "{what}");

            let (got, answer) = post(&url, &genuine.headers, genuine.body.clone()).await;
            assert_eq!((got, &answer), (200, &json!({"accepted": 1, "duplicates": 0, "stale": 0})), "{what}: genuine");
            // The same delivery again, a day later.
            clock.advance(Duration::from_secs(24 * 3600));
            let (got, answer) = post(&url, &genuine.headers, genuine.body.clone()).await;
            if scheme.signs_timestamp {
                assert_eq!((got, answer["error"]["code"].as_str()), (401, Some("stale-timestamp")), "{what}: replay: {answer}");
            } else {
                assert_eq!(
                    (got, &answer),
                    (200, &json!({"accepted": 0, "duplicates": 1, "stale": 0})),
                    "{what}: a replay passes the edge and is a duplicate at the core"
                );
            }
            let events = gw.events(&conn).await;
            assert_eq!(events.len(), 1, "{what}: the app has the change once: {events:?}");
            println!("{what}: replay answered {got} {answer}; {} event stored", events.len());
            got_all.push(("replayed a day later", got, answer));
            answers.push(got_all);
        }
        assert_eq!(answers[0], answers[1], "{}: linked and pre-composed edges answer alike", scheme.id);
    }
}

/// The `{{ name }}` templates in a Spin manifest value.
fn templates(value: &str) -> Vec<String> {
    value
        .split("{{")
        .skip(1)
        .filter_map(|rest| rest.split_once("}}").map(|(name, _)| name.trim().to_owned()))
        .collect()
}

/// `spin.toml` (issue #8) is checked here, since Spin is not installed: manifest version 2; one
/// edge component, routed at `/webhooks/:connection`, whose `source` is the edge this build
/// produced and whose dependencies satisfy each adapter import (by the platform's plain name,
/// with the adapter interface as `export`) with the very adapter file this build produced; a
/// build command that builds exactly those (same packages, target, profile and target directory);
/// only the core's URL as outbound host; every configuration key the edge reads
/// (`deskgate_edge::keys`) mapped, and nothing it does not read; a connection of each platform;
/// every template a declared application variable; the token and the webhook secrets secret,
/// with no default in the file.
#[test]
fn spin_toml_names_what_the_build_produces_and_maps_what_the_edge_reads() {
    use deskgate_edge::keys;
    use toml::Value as Toml;
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let text = std::fs::read_to_string(workspace.join("spin.toml")).unwrap();
    let manifest: toml::Table = text.parse().unwrap_or_else(|e| panic!("spin.toml is not TOML: {e}"));
    assert_eq!(manifest.get("spin_manifest_version").and_then(Toml::as_integer), Some(2), "manifest version 2");
    let relative = |path: &str| {
        let p = std::path::Path::new(path);
        p.strip_prefix(workspace).unwrap_or_else(|_| panic!("{path} is outside the workspace")).to_str().unwrap().to_owned()
    };
    let app_vars = manifest["variables"].as_table().expect("[variables]");
    let components = manifest["component"].as_table().expect("[component.*]");
    assert_eq!(components.keys().collect::<Vec<_>>(), ["edge"], "one edge for every platform");
    let c = components["edge"].as_table().expect("[component.edge]");
    let source = c["source"].as_str().expect("source");
    assert_eq!(source, relative(EDGE), "source is the edge the build produced");
    let deps = c["dependencies"].as_table().expect("dependencies");
    let mut dep_names: Vec<&str> = deps.keys().map(String::as_str).collect();
    dep_names.sort_unstable();
    let mut platforms = deskgate_edge::PLATFORMS.to_vec();
    platforms.sort_unstable();
    assert_eq!(dep_names, platforms, "a dependency per adapter import of the edge");
    let mut files = vec![source.to_owned()];
    for (platform, adapter) in EDGE_PLATFORMS {
        let dep = deps[*platform].as_table().expect("a table");
        assert_eq!(dep.keys().collect::<Vec<_>>(), ["export", "path"], "{platform}: path and export only");
        assert_eq!(dep["path"].as_str(), Some(relative(adapter).as_str()), "{platform}: the {platform} adapter the build produced");
        assert_eq!(dep["export"].as_str(), Some(deskgate_edge_compose::ADAPTER_INTERFACE), "{platform}");
        files.push(relative(adapter));
    }

    // `spin build` produces every file: its command builds those packages into that directory.
    let command = c["build"]["command"].as_str().expect("build.command");
    let words: Vec<&str> = command.split_whitespace().collect();
    let flag = |name: &str| {
        let at = words.iter().position(|w| *w == name).unwrap_or_else(|| panic!("build command lacks {name}: {command}"));
        words[at + 1]
    };
    assert_eq!(&words[..2], ["cargo", "build"], "{command}");
    let out_dir = format!("{}/{}/{}/", flag("--target-dir"), flag("--target"), flag("--profile"));
    let packages: Vec<String> = words.windows(2).filter(|w| w[0] == "-p").map(|w| w[1].replace('-', "_")).collect();
    for file in &files {
        let krate = file
            .strip_prefix(out_dir.as_str())
            .and_then(|f| f.strip_suffix(".wasm"))
            .unwrap_or_else(|| panic!("{file} is not in the build command's output {out_dir}"));
        assert!(packages.iter().any(|p| p == krate), "the build command does not build {krate}: {command}");
    }

    let hosts = c["allowed_outbound_hosts"].as_array().expect("allowed_outbound_hosts");
    assert_eq!(hosts, &vec![Toml::from(format!("{{{{ {} }}}}", keys::CORE_URL))], "only the core");

    let vars = c["variables"].as_table().expect("variables");
    let value = |key: &str| vars.get(key).and_then(Toml::as_str).unwrap_or_else(|| panic!("variable {key} is not mapped"));
    assert_eq!(templates(value(keys::CORE_URL)), [keys::CORE_URL]);
    assert_eq!(templates(value(keys::CORE_TOKEN)).len(), 1, "core_token from an application variable");
    let mut secret_templates = templates(value(keys::CORE_TOKEN));
    let connections: Vec<&str> =
        vars.keys().filter_map(|k| k.strip_prefix("conn_").and_then(|k| k.strip_suffix("_platform"))).collect();
    let mut read = vec![keys::CORE_URL.to_owned(), keys::CORE_TOKEN.to_owned()];
    let mut configured = Vec::new();
    for conn in connections {
        let platform = value(&keys::platform(conn));
        assert!(deskgate_edge::PLATFORMS.contains(&platform), "{conn}: {platform} is a platform the edge has an adapter for");
        configured.push(platform);
        let secret = value(&keys::secret(conn));
        assert_eq!(templates(secret).len(), 1, "{conn}'s secret comes from an application variable, not the file");
        secret_templates.extend(templates(secret));
        read.extend([keys::platform(conn), keys::secret(conn), keys::allow_unsigned(conn)]);
    }
    configured.sort_unstable();
    assert_eq!(configured, platforms, "an example connection of each platform");
    for (key, v) in vars {
        assert!(read.contains(key), "the edge never reads `{key}`");
        assert!(key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "{key} is no Spin variable name");
        for name in templates(v.as_str().expect("string values")) {
            assert!(app_vars.contains_key(&name), "`{key}` uses undeclared variable {name}");
        }
    }
    for name in &secret_templates {
        let declared = app_vars[name].as_table().expect("a table");
        assert_eq!(declared.get("secret").and_then(Toml::as_bool), Some(true), "{name} must be secret = true");
        assert!(!declared.contains_key("default"), "{name}: a secret has no default in the file");
    }
    for (name, declared) in app_vars {
        let used = text.contains(&format!("{{{{ {name} }}}}"));
        assert!(used, "application variable {name} is declared but never used");
        let declared = declared.as_table().expect("a table");
        assert!(declared.get("required").and_then(Toml::as_bool) == Some(true) || declared.contains_key("default"), "{name}");
    }

    let routes = manifest["trigger"]["http"].as_array().expect("[[trigger.http]]");
    assert_eq!(routes.len(), 1, "one route");
    assert_eq!(routes[0]["component"].as_str(), Some("edge"));
    assert_eq!(routes[0]["route"].as_str(), Some("/webhooks/:connection"));
}

/// `spin-3.toml` (for Spin before 4.0, which cannot compose named dependencies) is `spin.toml`
/// with the edge pre-composed: the same application, route, variables and outbound host; its
/// `source` is the build's `edge-composed.wasm`, it has no dependencies, and its build command is
/// `spin.toml`'s followed by `deskgate-edge-compose` of exactly the files `spin.toml` composes.
#[test]
fn spin_3_toml_is_spin_toml_with_the_edge_pre_composed() {
    use toml::Value as Toml;
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let read = |name: &str| -> toml::Table {
        let text = std::fs::read_to_string(workspace.join(name)).unwrap();
        text.parse().unwrap_or_else(|e| panic!("{name} is not TOML: {e}"))
    };
    let (mut v4, mut v3) = (read("spin.toml"), read("spin-3.toml"));
    let edge = |m: &toml::Table| m["component"]["edge"].as_table().unwrap().clone();
    let (e4, e3) = (edge(&v4), edge(&v3));
    let relative = |path: &str| std::path::Path::new(path).strip_prefix(workspace).unwrap().to_str().unwrap().to_owned();
    assert_eq!(e3["source"].as_str(), Some(relative(EDGE_COMPOSED).as_str()), "spin-3.toml serves the composed edge");
    assert!(!e3.contains_key("dependencies"), "nothing for Spin 3.x to compose");
    let build4 = e4["build"]["command"].as_str().unwrap();
    let build3 = e3["build"]["command"].as_str().unwrap();
    let compose = build3
        .strip_prefix(&format!("{build4} && "))
        .unwrap_or_else(|| panic!("spin-3.toml's build is spin.toml's, then the composition: {build3}"));
    let words: Vec<&str> = compose.split_whitespace().collect();
    assert_eq!(&words[..6], ["cargo", "run", "-q", "-p", "deskgate-edge-compose", "--"], "{compose}");
    assert_eq!(words[6], e4["source"].as_str().unwrap(), "it composes the edge spin.toml serves");
    assert_eq!(words[7], e3["source"].as_str().unwrap(), "into the file spin-3.toml serves");
    let deps = e4["dependencies"].as_table().unwrap();
    let plugs: Vec<String> = deps.iter().map(|(name, d)| format!("{name}={}", d["path"].as_str().unwrap())).collect();
    let mut given: Vec<String> = words[8..].iter().map(|w| (*w).to_owned()).collect();
    let mut wanted = plugs;
    given.sort();
    wanted.sort();
    assert_eq!(given, wanted, "each of spin.toml's dependencies, plugged into its import");
    // Everything else is the same.
    for (m, mut e) in [(&mut v4, e4), (&mut v3, e3)] {
        for key in ["source", "dependencies", "build", "description"] {
            e.remove(key);
        }
        m["component"].as_table_mut().unwrap().insert("edge".into(), Toml::Table(e));
    }
    assert_eq!(v3, v4, "spin-3.toml differs from spin.toml only in the edge's source, dependencies and build");
}
