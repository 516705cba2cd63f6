//! Issue #6: ticket ingestion over real HTTP. The platform simulators deliver signed webhooks to
//! the gateway's `/webhooks/{connection}` router (served on `127.0.0.1:0`, SQLite store on a temp
//! file), with seeded drop / duplicate / reorder faults; then one reconciliation sweep through the
//! read lane must leave every ticket change in the inbox exactly once, in per-ticket order.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use deskgate::bindings::Connection;
use deskgate::budget::{BudgetConfig, BudgetLayer, TokioSleeper};
use deskgate::clock::{Clock, ManualClock, SharedClock};
use deskgate::driver::{Credential, Driver, DriverConfig, Target, authorization};
use deskgate::ingest::sweep::{MemoryMarks, Reconciler, SweepConfig, SweepMarks, SweepSource};
use deskgate::ingest::webhook::{StaticRoutes, WebhookIngestor, WebhookRoute, webhook_routes};
use deskgate::ingest::{IngestMetrics, Inbox};
use deskgate::runtime::{Adapter, AdapterRuntime, RuntimeConfig};
use deskgate::store::{self, InboxEvent, NewConnection, Pull, SecretKey, SharedStore};
use deskgate_sim::{
    AccountSpec, AgentSpec, CommentSpec, CredentialSpec, FaultConfig, Platform, SimConfig, SimHandle,
    TicketSpec, WebhookTarget,
};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

const KEY: [u8; 32] = [0x17; 32];
/// 2026-01-01T00:00:00Z: the simulators' frozen clock starts here, on a whole second.
const T0: i64 = 1_767_225_600_000;
const ZD_SECRET: &str = "zd-signing-secret";

static SEQ: AtomicU64 = AtomicU64::new(0);

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "deskgate-ingest-{}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
        name
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("deskgate.db")
}

fn runtime() -> AdapterRuntime {
    let cache = std::env::temp_dir().join("deskgate-ingest-test-cache");
    let mut rt = AdapterRuntime::new(RuntimeConfig {
        max_instances: 32,
        warm_per_adapter: 4,
        cache_dir: Some(cache),
        ..RuntimeConfig::default()
    })
    .unwrap();
    rt.load_builtin().unwrap();
    rt
}

/// The gateway reads the simulator's (frozen) clock, so signed timestamps and sweep windows agree.
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

/// The gateway side: store, inbox, ingestor, router on a free port.
struct Gateway {
    store: SharedStore,
    path: PathBuf,
    inbox: Arc<Inbox>,
    routes: Arc<StaticRoutes>,
    metrics: Arc<IngestMetrics>,
    url: String,
    server: tokio::task::JoinHandle<()>,
}

impl Gateway {
    async fn start(path: PathBuf, clock: SharedClock, connections: &[(&str, &str)]) -> Gateway {
        let store = store::open(path.to_str().unwrap(), SecretKey::from_bytes(KEY)).await.unwrap();
        for (id, platform) in connections {
            if store.get_connection(id).await.unwrap().is_none() {
                store.create_connection(&NewConnection::new(*id, *platform, *id), T0).await.unwrap();
            }
        }
        let inbox = Arc::new(Inbox::new(store.clone()));
        let routes = Arc::new(StaticRoutes::new());
        let metrics = Arc::new(IngestMetrics::default());
        let ingestor =
            Arc::new(WebhookIngestor::new(routes.clone(), inbox.clone(), clock).with_metrics(metrics.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = webhook_routes(ingestor.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        assert_eq!(ingestor.max_bytes(), deskgate::ingest::MAX_WEBHOOK_BYTES);
        Gateway { store, path, inbox, routes, metrics, url, server }
    }

    fn route(&self, id: &str, adapter: &Arc<Adapter>, secret: &str, allow_unsigned: bool) {
        let connection = Connection { id: id.into(), plan: String::new(), agent_id: None, settings: vec![] };
        self.routes.insert(
            id,
            WebhookRoute {
                adapter: adapter.clone(),
                connection,
                platform: adapter.id().to_owned(),
                secret: secret.as_bytes().to_vec(),
                allow_unsigned,
            },
        );
    }

    async fn stop(self) -> (SharedStore, PathBuf) {
        self.server.abort();
        (self.store, self.path)
    }
}

/// Every unacknowledged event of a connection, pulled the way the app does (cursor pages).
async fn pull_all(store: &SharedStore, connection: &str, now: i64) -> Vec<InboxEvent> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .pull_events(&Pull { after, limit: 500, connection_id: Some(connection.into()), now })
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = last.id;
        out.extend(page);
    }
    out
}

/// Wait until the simulator has no webhook queued, held or in flight. Its clock is frozen, so
/// when the queue stops moving (a delivery held back for reordering, a retry scheduled later),
/// move sim time on by `step`.
async fn wait_drained(sim: &SimHandle, step: Duration, limit: Duration) {
    let start = Instant::now();
    let mut last = (sim.webhooks_pending(), Instant::now());
    while sim.webhooks_pending() > 0 {
        assert!(start.elapsed() < limit, "webhooks still pending after {limit:?}: {}", sim.webhooks_pending());
        tokio::time::sleep(Duration::from_millis(10)).await;
        let pending = sim.webhooks_pending();
        if pending != last.0 {
            last = (pending, Instant::now());
        } else if last.1.elapsed() > Duration::from_millis(300) {
            sim.clock().advance(step);
            last.1 = Instant::now();
        }
    }
}

fn version_of(e: &InboxEvent) -> i64 {
    e.dedupe_key.rsplit_once('@').unwrap().1.parse().unwrap()
}

fn ticket_id(t: &Value) -> u64 {
    t["id"].as_u64().or_else(|| t["id"].as_str().and_then(|s| s.parse().ok())).expect("ticket id")
}

/// 1,000 tickets, two changes each (created, then a customer comment), 30% of webhooks dropped,
/// 10% duplicated, 20% held back and reordered behind the next delivery. After the webhooks and
/// one sweep, every ticket's changes are in the inbox exactly once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_webhooks_plus_one_sweep_deliver_every_change_once_in_order() {
    let tickets: usize = std::env::var("DESKGATE_INGEST_TICKETS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000);
    let rt = runtime();
    let adapter = rt.get("zendesk").unwrap();
    let sim = deskgate_sim::start(SimConfig::new(Platform::Zendesk).seed(6).frozen_at(T0)).await.unwrap();
    let clock: SharedClock = Arc::new(SimTime(sim.sim()));
    let gw = Gateway::start(temp_path("lossy"), clock.clone(), &[("zd", "zendesk")]).await;
    gw.route("zd", &adapter, ZD_SECRET, false);

    let account = sim.create_account(AccountSpec::default()).unwrap();
    sim.create_agent(account.id, AgentSpec { name: Some("Ada Admin".into()), role: Some("admin".into()), ..Default::default() })
        .unwrap();
    let cred = sim.create_credential(account.id, CredentialSpec::default()).unwrap();
    sim.set_webhook(account.id, Some(WebhookTarget { url: format!("{}/webhooks/zd", gw.url), secret: ZD_SECRET.into() }))
        .unwrap();
    sim.set_faults(FaultConfig { webhook_drop: 0.30, webhook_duplicate: 0.10, webhook_reorder: 0.20, ..Default::default() })
        .unwrap();

    // A previous sweep ran just before the tickets existed: this one is a regular sweep.
    let marks = Arc::new(MemoryMarks::default());
    marks.put("zd", T0 - 60_000).await.unwrap();

    // Each ticket: created at t, commented at t + 1 s (whole seconds: Zendesk's resolution).
    let started = Instant::now();
    let mut versions: BTreeMap<u64, (i64, i64)> = BTreeMap::new();
    for i in 0..tickets {
        sim.clock().advance(Duration::from_secs(1));
        let created_at = sim.clock().now_ms();
        let t = sim
            .create_ticket(account.id, TicketSpec { subject: Some(format!("Ticket {i}")), ..Default::default() })
            .unwrap();
        let id = ticket_id(&t);
        sim.clock().advance(Duration::from_secs(1));
        let commented_at = sim.clock().now_ms();
        sim.add_customer_comment(account.id, id, CommentSpec { body: format!("Any news on {i}?"), author_id: None })
            .unwrap();
        versions.insert(id, (created_at, commented_at));
        // Keep the queue short so reorder holds are released by real successors.
        if i % 50 == 49 {
            wait_drained(&sim, Duration::from_secs(3), Duration::from_secs(300)).await;
        }
    }
    // Release any delivery still held for reordering (held 2 s of sim time at most).
    wait_drained(&sim, Duration::from_secs(3), Duration::from_secs(300)).await;
    sim.clock().advance(Duration::from_secs(3));
    wait_drained(&sim, Duration::from_secs(3), Duration::from_secs(300)).await;
    let webhook_phase = started.elapsed();

    // What the simulator did, from its delivery log.
    let log = sim.webhook_deliveries();
    let dropped = log.iter().filter(|d| d.result == "dropped").count();
    let duplicates_sent = log.iter().filter(|d| d.duplicate).count();
    let reordered = log.iter().filter(|d| d.reordered).count();
    let mut delivered: HashMap<u64, BTreeSet<i64>> = HashMap::new();
    for d in log.iter().filter(|d| d.result == "delivered") {
        let (c, m) = versions[&d.ticket_id];
        let v = if d.event.ends_with("ticket.created") { c } else { m };
        delivered.entry(d.ticket_id).or_default().insert(v);
    }
    assert!(log.iter().all(|d| matches!(d.result, "delivered" | "dropped")), "every sent webhook was accepted");
    let emitted = log.len() - duplicates_sent;
    println!(
        "{tickets} tickets, {} changes, {emitted} webhooks emitted: {dropped} dropped ({:.0}%), {duplicates_sent} duplicated, \
         {reordered} reordered; webhook phase {webhook_phase:?}",
        tickets * 2,
        100.0 * dropped as f64 / emitted as f64
    );
    assert!(dropped as f64 > 0.2 * emitted as f64 && duplicates_sent > 0 && reordered > 0);

    // Changes whose every webhook was dropped: the sweep must catch exactly the final ones.
    let missed_final = versions.iter().filter(|(id, (_, m))| !delivered.get(id).is_some_and(|s| s.contains(m))).count();
    let before_sweep = pull_all(&gw.store, "zd", sim.clock().now_ms()).await.len();

    // One sweep, two minutes later (Zendesk's export leaves out the last minute).
    sim.clock().advance(Duration::from_secs(120));
    let budgets = BudgetLayer::new(clock.clone(), BudgetConfig::default());
    let d = adapter.descriptor();
    let conn = Connection { id: "zd".into(), plan: d.default_plan.clone(), agent_id: None, settings: vec![] };
    let gate = budgets.connect(&conn, d, None).unwrap();
    let driver_gate = gate.clone();
    let sleeper = TokioSleeper::new(clock.clone());
    let driving = tokio::spawn(async move { driver_gate.drive(&sleeper).await });
    let target = Target {
        base_url: sim.base_url(),
        authorization: authorization(
            &d.auth,
            &Credential::Basic([("email".into(), cred.email.clone()), ("token".into(), cred.token.clone())].into()),
        )
        .unwrap().into(),
        connection: conn,
    };
    let reconciler = Reconciler::new(
        gw.inbox.clone(),
        Driver::new(DriverConfig::default()).unwrap(),
        clock.clone(),
        SweepConfig { miss_alert_threshold: 10, ..SweepConfig::default() },
    )
    .with_marks(marks.clone())
    .with_metrics(gw.metrics.clone());
    let source = SweepSource { adapter: &adapter, target: &target, gate: &gate, platform: "zendesk" };
    let counted = || deskgate::alerts::raised_of(deskgate::alerts::WEBHOOKS_MISSED);
    let before_alerts = counted();
    let report = reconciler.sweep(source).await.unwrap();
    println!("sweep: {report:?}");
    assert!(!report.first);
    assert_eq!(report.seen, tickets as u64, "the export lists every ticket once");
    assert_eq!(report.caught as usize, missed_final, "caught = changes whose final webhook was dropped");
    assert_eq!(report.caught + report.duplicates + report.stale, report.seen);
    assert!(report.alerted, "{} caught crosses the threshold of 10", report.caught);
    let alerts = gw.store.list_alerts(Some("zd"), false, 10).await.unwrap();
    assert!(alerts.iter().any(|a| a.kind == "webhooks-missed" && a.detail["caught"] == json!(report.caught)), "{alerts:?}");
    // Raised through `alerts::raise`: logged at error level and counted in
    // `deskgate_alerts_raised_total` (no other test in this binary raises this kind).
    assert_eq!(counted() - before_alerts, 1, "the webhooks-missed alert is counted");

    // What the app pulls.
    let events = pull_all(&gw.store, "zd", sim.clock().now_ms()).await;
    assert_eq!(events.len(), before_sweep + report.caught as usize);
    let mut by_ticket: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
    let mut keys = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for e in &events {
        assert!(keys.insert(e.dedupe_key.clone()), "change {} delivered twice", e.dedupe_key);
        assert!(ids.insert(e.id), "event id {} twice", e.id);
        let t: u64 = e.ticket_id.parse().unwrap();
        assert_eq!(e.ticket["id"], json!(e.ticket_id));
        by_ticket.entry(t).or_default().push(version_of(e));
    }
    assert_eq!(by_ticket.len(), tickets, "every ticket reached the app");
    let mut superseded = 0;
    for (id, (c, m)) in &versions {
        let seen = &by_ticket[id];
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "ticket {id} out of order: {seen:?}");
        assert_eq!(seen.last(), Some(m), "ticket {id}: its latest change is there");
        assert!(seen.iter().all(|v| v == c || v == m), "ticket {id}: {seen:?}");
        // A delivered change is there, unless a newer one of its ticket overtook it.
        if delivered.get(id).is_some_and(|s| s.contains(c)) && !seen.contains(c) {
            superseded += 1;
        }
    }
    let stale = gw.metrics.webhook_events_stale.load(Ordering::Relaxed);
    assert!(superseded as u64 <= stale, "{superseded} delivered creations missing, only {stale} stale");
    println!(
        "inbox: {} events for {} tickets; webhooks stored {}, duplicates {}, stale {}; sweep caught {}",
        events.len(),
        by_ticket.len(),
        gw.metrics.webhook_events_new.load(Ordering::Relaxed),
        gw.metrics.webhook_events_duplicate.load(Ordering::Relaxed),
        stale,
        report.caught
    );

    // A second sweep finds nothing new and raises nothing.
    let again = reconciler.sweep(source).await.unwrap();
    assert_eq!((again.caught, again.alerted), (0, false), "{again:?}");

    // More missed webhooks while the alert is still open: caught, counted, not alerted again.
    // Once the operator acknowledged it, the next crossing alerts again.
    let miss_more = |n: usize| {
        sim.set_faults(FaultConfig { webhook_drop: 1.0, ..FaultConfig::default() }).unwrap();
        for _ in 0..n {
            sim.create_ticket(account.id, Default::default()).unwrap();
        }
        sim.clock().advance(Duration::from_secs(120));
    };
    miss_more(12);
    let third = reconciler.sweep(source).await.unwrap();
    assert_eq!((third.caught, third.alerted), (12, false), "{third:?}");
    assert_eq!(counted() - before_alerts, 1, "one open alert per connection: not raised, not counted again");
    let open: Vec<_> = gw.store.list_alerts(Some("zd"), false, 100).await.unwrap().into_iter().filter(|a| a.kind == "webhooks-missed").collect();
    assert_eq!(open.len(), 1, "{open:?}");
    assert!(gw.store.ack_alert(open[0].id, sim.clock().now_ms()).await.unwrap());
    miss_more(12);
    let fourth = reconciler.sweep(source).await.unwrap();
    assert_eq!((fourth.caught, fourth.alerted), (12, true), "{fourth:?}");
    assert_eq!(counted() - before_alerts, 2, "the new alert is counted");

    gate.close();
    let _ = driving.await;
    sim.shutdown().await;
    gw.stop().await;
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
    // Only for times on 2026-01-01 (T0 + less than a day), which is all these tests use.
    let s = (ms - T0) / 1000;
    format!("2026-01-01T{:02}:{:02}:{:02}Z", s / 3600, (s % 3600) / 60, s % 60)
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> (u16, Value) {
    let mut req = client.post(url).header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.body(body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Tampered, unsigned, replayed, oversized and malformed deliveries: each gets its status and
/// code, a metric, and nothing in the inbox. A good one is accepted once, then a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_deliveries_are_refused_and_nothing_is_enqueued() {
    let rt = runtime();
    let adapter = rt.get("zendesk").unwrap();
    let clock = ManualClock::new(T0 + 3_600_000);
    let gw = Gateway::start(temp_path("reject"), Arc::new(clock.clone()), &[("zd", "zendesk")]).await;
    gw.route("zd", &adapter, ZD_SECRET, false);
    let client = reqwest::Client::new();
    let url = format!("{}/webhooks/zd", gw.url);
    let now = rfc3339(clock.now_ms());
    let body = zendesk_body(42, "evt-1", &now, "Open");
    let good = |ts: &str, body: &str| {
        vec![
            ("x-zendesk-webhook-signature", zendesk_sign(ZD_SECRET, ts, body.as_bytes())),
            ("x-zendesk-webhook-signature-timestamp", ts.to_owned()),
        ]
    };
    let inbox = || async { gw.store.inbox_pending("zd").await.unwrap() };

    // (case, headers, body, status, code)
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "tampered body",
            good(&now, &body),
            body.replace("Open", "Solved").into_bytes(),
            401,
            "forged-signature",
        ),
        (
            "wrong secret",
            vec![
                ("x-zendesk-webhook-signature", zendesk_sign("not-the-secret", &now, body.as_bytes())),
                ("x-zendesk-webhook-signature-timestamp", now.clone()),
            ],
            body.clone().into_bytes(),
            401,
            "forged-signature",
        ),
        ("missing signature", vec![], body.clone().into_bytes(), 401, "missing-signature"),
        (
            "replayed: signed an hour ago",
            good(&rfc3339(T0), &zendesk_body(42, "evt-1", &rfc3339(T0), "Open")),
            zendesk_body(42, "evt-1", &rfc3339(T0), "Open").into_bytes(),
            401,
            "stale-timestamp",
        ),
        ("invalid JSON", good(&now, "{not json"), b"{not json".to_vec(), 400, "malformed"),
    ];
    for (name, headers, payload, status, code) in cases {
        let (got, answer) = post(&client, &url, &headers, payload).await;
        assert_eq!(got, status, "{name}: {answer}");
        assert_eq!(answer["error"]["code"], json!(code), "{name}: {answer}");
        assert!(answer["error"]["message"].as_str().is_some_and(|m| m.len() > 20), "{name}: {answer}");
        assert_eq!(inbox().await, 0, "{name}: nothing enqueued");
        assert!(gw.metrics.rejected(code) >= 1, "{name}: counted");
        println!("{name}: {got} {code}: {}", answer["error"]["message"]);
    }
    // A 10 MB body, declared by Content-Length: refused before it is read.
    let status = raw_post(&gw.url, "/webhooks/zd", &good(&now, &body), 10, 1 << 20, false).await;
    assert_eq!(status, 413, "10 MB");
    assert_eq!(inbox().await, 0);
    assert_eq!(gw.metrics.rejected("too-large"), 1);
    // A 10 MB body sent without Content-Length (chunked) is cut off at the limit too.
    let status = raw_post(&gw.url, "/webhooks/zd", &good(&now, &body), 10, 1 << 20, true).await;
    assert_eq!(status, 413, "chunked 10 MB");
    assert_eq!(inbox().await, 0);
    assert_eq!(gw.metrics.rejected("too-large"), 2);
    // Unknown connection.
    let (got, answer) = post(&client, &format!("{}/webhooks/nope", gw.url), &good(&now, &body), body.clone().into()).await;
    assert_eq!((got, answer["error"]["code"].as_str()), (404, Some("unknown-connection")));

    // The genuine delivery is accepted; its redelivery (any event id) is a duplicate.
    let (got, answer) = post(&client, &url, &good(&now, &body), body.clone().into()).await;
    assert_eq!((got, &answer), (200, &json!({"accepted": 1, "duplicates": 0, "stale": 0})));
    let again = zendesk_body(42, "evt-1-retry", &now, "Open");
    let (got, answer) = post(&client, &url, &good(&now, &again), again.clone().into()).await;
    assert_eq!((got, &answer), (200, &json!({"accepted": 0, "duplicates": 1, "stale": 0})));
    assert_eq!(inbox().await, 1);
    println!("metrics: {:?}", gw.metrics.snapshot());
    gw.stop().await;
}

/// POST `chunks` chunks of `size` spaces over a raw socket, declared up front with
/// `Content-Length` or sent `Transfer-Encoding: chunked`, and return the answer's status. The
/// answer is read while the body is still being written: a server that refuses early answers and
/// closes before the client has sent everything (which is the point), and a client that only
/// reads after writing would see a reset instead of the status.
async fn raw_post(base: &str, path: &str, headers: &[(&str, String)], chunks: usize, size: usize, chunked: bool) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://").to_owned();
    let sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut rd, mut wr) = sock.into_split();
    let mut head = format!("POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\nconnection: close\r\n");
    if chunked {
        head.push_str("transfer-encoding: chunked\r\n");
    } else {
        head.push_str(&format!("content-length: {}\r\n", chunks * size));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        let chunk = vec![b' '; size];
        for _ in 0..chunks {
            if chunked {
                wr.write_all(format!("{size:x}\r\n").as_bytes()).await?;
            }
            wr.write_all(&chunk).await?;
            if chunked {
                wr.write_all(b"\r\n").await?;
            }
        }
        if chunked {
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

/// Each platform's own signing, end to end: the simulator signs (Zendesk HMAC-SHA256 over
/// timestamp + body, Intercom HMAC-SHA1 over the body, Freshdesk a shared header token), the
/// gateway verifies with the connection's secret. With the wrong secret configured, the same
/// deliveries are refused and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_platforms_signed_deliveries_verify() {
    let rt = runtime();
    for (platform, id, secret) in [
        (Platform::Zendesk, "zendesk", "zd-secret"),
        (Platform::Intercom, "intercom", "ic-client-secret"),
        (Platform::Freshdesk, "freshdesk", "fd-token"),
    ] {
        let adapter = rt.get(id).unwrap();
        let sim = deskgate_sim::start(SimConfig::new(platform).seed(1).frozen_at(T0)).await.unwrap();
        let clock: SharedClock = Arc::new(SimTime(sim.sim()));
        let gw = Gateway::start(temp_path(id), clock, &[("good", id), ("bad", id)]).await;
        gw.route("good", &adapter, secret, false);
        gw.route("bad", &adapter, "some-other-secret", false);
        let account = sim.create_account(AccountSpec::default()).unwrap();
        sim.create_agent(account.id, AgentSpec { role: Some("admin".into()), ..Default::default() }).unwrap();
        for conn in ["good", "bad"] {
            sim.set_webhook(account.id, Some(WebhookTarget { url: format!("{}/webhooks/{conn}", gw.url), secret: secret.into() }))
                .unwrap();
            sim.clock().advance(Duration::from_secs(1));
            sim.create_ticket(account.id, TicketSpec { subject: Some(format!("via {conn}")), ..Default::default() }).unwrap();
            wait_drained(&sim, Duration::from_secs(61 * 60), Duration::from_secs(60)).await;
        }
        let log = sim.webhook_deliveries();
        let good: Vec<_> = log.iter().filter(|d| d.url.as_deref().is_some_and(|u| u.ends_with("/good"))).collect();
        let bad: Vec<_> = log.iter().filter(|d| d.url.as_deref().is_some_and(|u| u.ends_with("/bad"))).collect();
        assert!(!good.is_empty() && good.iter().all(|d| d.status == Some(200)), "{id}: {good:?}");
        assert!(!bad.is_empty() && bad.iter().all(|d| d.status == Some(401)), "{id}: {bad:?}");
        assert!(gw.store.inbox_pending("good").await.unwrap() >= 1, "{id}");
        assert_eq!(gw.store.inbox_pending("bad").await.unwrap(), 0, "{id}");
        assert!(gw.metrics.rejected("forged-signature") >= 1, "{id}");
        println!("{id}: {} accepted, {} refused as forged", good.len(), bad.len());
        sim.shutdown().await;
        gw.stop().await;
    }
}

/// Restart between accepting and delivering: the event was durable before the 2xx, so after the
/// store is closed and reopened (a new process) the app still pulls it, and a redelivery of the
/// same change is still recognized as a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_events_survive_a_restart() {
    let rt = runtime();
    let adapter = rt.get("zendesk").unwrap();
    let clock = ManualClock::new(T0 + 60_000);
    let gw = Gateway::start(temp_path("restart"), Arc::new(clock.clone()), &[("zd", "zendesk")]).await;
    gw.route("zd", &adapter, ZD_SECRET, false);
    let client = reqwest::Client::new();
    let now = rfc3339(clock.now_ms());
    let sign = |body: &str| {
        vec![
            ("x-zendesk-webhook-signature", zendesk_sign(ZD_SECRET, &now, body.as_bytes())),
            ("x-zendesk-webhook-signature-timestamp", now.clone()),
        ]
    };
    let body = zendesk_body(7, "evt-7", &now, "Open");
    let (status, _) = post(&client, &format!("{}/webhooks/zd", gw.url), &sign(&body), body.clone().into()).await;
    assert_eq!(status, 200);
    // The gateway dies before the app pulled anything.
    let (store, path) = gw.stop().await;
    store.close().await;
    drop(store);

    let gw = Gateway::start(path, Arc::new(clock.clone()), &[("zd", "zendesk")]).await;
    gw.route("zd", &adapter, ZD_SECRET, false);
    let events = pull_all(&gw.store, "zd", clock.now_ms()).await;
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].ticket_id.as_str(), events[0].kind.as_str()), ("7", "ticket.status-changed"));
    assert_eq!(events[0].ticket["status"], json!("Open"));
    let (status, answer) = post(&client, &format!("{}/webhooks/zd", gw.url), &sign(&body), body.clone().into()).await;
    assert_eq!((status, answer["duplicates"].as_u64()), (200, Some(1)));
    // Acknowledged, it is gone for good.
    assert_eq!(gw.store.ack_events_through(Some("zd"), events[0].id, clock.now_ms()).await.unwrap(), 1);
    assert!(pull_all(&gw.store, "zd", clock.now_ms()).await.is_empty());
    gw.stop().await;
}

/// A suspended connection (its credentials broke) still takes webhooks: they wait in the inbox,
/// held from the app until the connection is live again, then come after the app's cursor. A
/// deleted one is unknown (404); one without a secret cannot verify anything (503, so the
/// platform retries). Routes come from the store here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspended_connections_still_take_webhooks_and_hold_them_until_resumed() {
    use deskgate::ingest::webhook::{StoreRoutes, WebhookSecret};
    use deskgate::store::ConnectionState;
    let rt = runtime();
    let clock = ManualClock::new(T0 + 60_000);
    let store = store::open(temp_path("suspended").to_str().unwrap(), SecretKey::from_bytes(KEY)).await.unwrap();
    for id in ["zd", "gone", "nosecret"] {
        store.create_connection(&NewConnection::new(id, "zendesk", id), T0).await.unwrap();
    }
    let suspended = ConnectionState::Suspended { reason: "the API token was revoked".into(), kind: "reauth".into() };
    store.set_connection_state("zd", &suspended, T0).await.unwrap();
    store.set_connection_state("gone", &ConnectionState::Deleted, T0).await.unwrap();
    let routes = Arc::new(StoreRoutes::new(store.clone(), rt.adapters().cloned()));
    for id in ["zd", "gone"] {
        routes.set_secret(id, WebhookSecret { secret: ZD_SECRET.into(), allow_unsigned: false });
    }
    let inbox = Arc::new(Inbox::new(store.clone()));
    let ingestor = WebhookIngestor::new(routes, inbox.clone(), Arc::new(clock.clone()));
    let now = rfc3339(clock.now_ms());
    let body = zendesk_body(9, "evt-9", &now, "Open");
    let headers = vec![
        ("x-zendesk-webhook-signature".to_owned(), zendesk_sign(ZD_SECRET, &now, body.as_bytes())),
        ("x-zendesk-webhook-signature-timestamp".to_owned(), now.clone()),
    ];

    // The delivery is accepted and stored, but held from the app while the connection is
    // suspended: it is not processed until the connection is fixed.
    let report = ingestor.ingest("zd", &headers, body.as_bytes()).await.unwrap();
    assert_eq!(report.new, 1);
    let pull = |after: i64| Pull { after, limit: 10, connection_id: None, now: T0 };
    assert!(inbox.pull_wait(&pull(0), Duration::from_millis(300)).await.unwrap().is_empty(), "held while suspended");
    assert_eq!(store.inbox_pending("zd").await.unwrap(), 1, "kept durably");
    // Meanwhile the app gets and acknowledges another connection's event, moving its cursor past
    // the held one's id; the acknowledgement does not touch the held event.
    store.set_connection_state("nosecret", &ConnectionState::Live, T0).await.unwrap();
    let other = deskgate::store::NewEvent {
        connection_id: "nosecret".into(),
        platform: "zendesk".into(),
        ticket_id: "77".into(),
        kind: "ticket.created".into(),
        ticket: json!({ "id": "77" }),
        dedupe_key: "ticket:77@1".into(),
    };
    store.insert_events(&[other], T0).await.unwrap();
    let got = inbox.pull_wait(&pull(0), Duration::ZERO).await.unwrap();
    assert_eq!(got.iter().map(|e| e.ticket_id.as_str()).collect::<Vec<_>>(), ["77"]);
    let cursor = got[0].id;
    store.ack_events_through(None, cursor, T0).await.unwrap();
    assert_eq!(store.inbox_pending("zd").await.unwrap(), 1, "an acknowledgement past it does not drop it");
    // The connection is fixed: its held event comes after the app's cursor, once.
    store.set_connection_state("zd", &ConnectionState::Live, T0).await.unwrap();
    let got = inbox.pull_wait(&pull(cursor), Duration::ZERO).await.unwrap();
    assert_eq!(got.iter().map(|e| (e.connection_id.as_str(), e.ticket_id.as_str())).collect::<Vec<_>>(), [("zd", "9")]);
    assert!(got[0].id > cursor);
    store.set_connection_state("zd", &suspended, T0).await.unwrap();

    let gone = ingestor.ingest("gone", &headers, body.as_bytes()).await.unwrap_err();
    assert_eq!((gone.status(), gone.code()), (404, "unknown-connection"));
    let nosecret = ingestor.ingest("nosecret", &headers, body.as_bytes()).await.unwrap_err();
    assert_eq!((nosecret.status(), nosecret.code()), (503, "no-secret"));
    assert_eq!(store.inbox_pending("nosecret").await.unwrap(), 0);
}

/// A sweep that meets the platform's 429 penalizes the read lane and retries the page once the
/// window reopens, instead of failing or hammering. Zendesk's export is cut to 1 request a minute
/// here; the second sweep of the minute meets the 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_sweep_waits_in_the_read_lane_and_finishes() {
    let rt = runtime();
    let adapter = rt.get("zendesk").unwrap();
    let sim = deskgate_sim::start(SimConfig::new(Platform::Zendesk).seed(3).frozen_at(T0)).await.unwrap();
    let clock: SharedClock = Arc::new(SimTime(sim.sim()));
    let gw = Gateway::start(temp_path("ratelimited"), clock.clone(), &[("zd", "zendesk")]).await;
    let account = sim.create_account(AccountSpec::default()).unwrap();
    sim.create_agent(account.id, AgentSpec { role: Some("admin".into()), ..Default::default() }).unwrap();
    let cred = sim.create_credential(account.id, CredentialSpec::default()).unwrap();
    sim.set_limits(account.id, deskgate_sim::LimitOverrides { incremental_export_per_minute: Some(1), ..Default::default() })
        .unwrap();
    for i in 0..5 {
        sim.create_ticket(account.id, TicketSpec { subject: Some(format!("t{i}")), ..Default::default() }).unwrap();
    }
    sim.clock().advance(Duration::from_secs(120));
    let d = adapter.descriptor();
    let conn = Connection { id: "zd".into(), plan: d.default_plan.clone(), agent_id: None, settings: vec![] };
    let gate = BudgetLayer::new(clock.clone(), BudgetConfig::default()).connect(&conn, d, None).unwrap();
    let target = Target {
        base_url: sim.base_url(),
        authorization: authorization(
            &d.auth,
            &Credential::Basic([("email".into(), cred.email.clone()), ("token".into(), cred.token.clone())].into()),
        )
        .unwrap().into(),
        connection: conn,
    };
    let reconciler = Arc::new(Reconciler::new(
        gw.inbox.clone(),
        Driver::new(DriverConfig::default()).unwrap(),
        clock.clone(),
        SweepConfig { list_open_first: false, ..SweepConfig::default() },
    ));
    let adapter2 = adapter.clone();
    let (g2, t2, r2) = (gate.clone(), target.clone(), reconciler.clone());
    let sweep = move || {
        let (adapter, gate, target, reconciler) = (adapter2.clone(), g2.clone(), t2.clone(), r2.clone());
        async move {
            let source = SweepSource { adapter: &adapter, target: &target, gate: &gate, platform: "zendesk" };
            reconciler.sweep(source).await
        }
    };
    let first = sweep().await.unwrap();
    assert_eq!((first.first, first.caught, first.pages), (true, 5, 1), "{first:?}");
    // Same minute: the platform refuses; the sweep waits in the read lane (sim time is frozen).
    let second = tokio::spawn(sweep());
    let waited = Instant::now();
    while gate.snapshot().waiting.read == 0 {
        assert!(waited.elapsed() < Duration::from_secs(20), "the retry never queued: {:?}", gate.snapshot());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sim.rate_limited_total(), 1, "one 429, no hammering");
    assert!(!second.is_finished());
    // The window reopens; the waiting retry goes and the sweep finishes.
    sim.clock().advance(Duration::from_secs(61));
    gate.tick();
    let second = tokio::time::timeout(Duration::from_secs(20), second).await.unwrap().unwrap().unwrap();
    assert_eq!((second.first, second.caught, second.duplicates), (false, 0, 5), "{second:?}");
    assert_eq!(sim.rate_limited_total(), 1);
    assert_eq!(reconciler.metrics().sweeps.load(Ordering::Relaxed), 2);
    sim.shutdown().await;
    gw.stop().await;
}

/// An open ticket of the contract, created at `T0`, last updated at `updated_at`.
fn open_ticket(id: &str, updated_at: i64, tags: &[&str]) -> deskgate::bindings::Ticket {
    deskgate::bindings::Ticket {
        id: id.into(),
        subject: None,
        status: deskgate::bindings::TicketStatus::Open,
        raw_status: "open".into(),
        requester_id: None,
        assignee_id: None,
        group_id: None,
        tags: tags.iter().map(|t| (*t).to_string()).collect(),
        created_at: T0,
        updated_at,
        comments: vec![],
    }
}

/// The inbox writer on its own: one event per ticket version, older versions dropped as stale
/// (also within one batch), other tickets unaffected, and the per-connection order kept.
#[tokio::test]
async fn inbox_stores_each_version_once_and_never_goes_backwards() {
    use deskgate::ingest::Candidate;
    let store = store::open(temp_path("inbox").to_str().unwrap(), SecretKey::from_bytes(KEY)).await.unwrap();
    store.create_connection(&NewConnection::new("c", "zendesk", "c"), T0).await.unwrap();
    let inbox = Inbox::new(store.clone());
    let t = |id: &str, v: i64| Candidate::from_sweep("c", "zendesk", &open_ticket(id, v, &[]));
    let r = inbox.insert("c", &[t("1", T0 + 2_000), t("1", T0 + 1_000), t("2", T0 + 1_000)], T0).await.unwrap();
    assert_eq!((r.new, r.duplicates, r.stale), (2, 0, 1), "older version of 1 in the same batch is stale");
    let r = inbox.insert("c", &[t("1", T0 + 2_000), t("2", T0 + 500), t("2", T0 + 3_000)], T0).await.unwrap();
    assert_eq!((r.new, r.duplicates, r.stale), (1, 1, 1));
    let r = inbox.insert("c", &[], T0).await.unwrap();
    assert_eq!((r.new, r.duplicates, r.stale), (0, 0, 0));
    let events = pull_all(&store, "c", T0).await;
    let got: Vec<(String, i64)> = events.iter().map(|e| (e.ticket_id.clone(), version_of(e))).collect();
    assert_eq!(
        got,
        vec![("1".into(), T0 + 2_000), ("2".into(), T0 + 1_000), ("2".into(), T0 + 3_000)],
        "ids in insertion order, versions increasing per ticket"
    );
    assert_eq!(events[0].kind, "ticket.reconciled");
    assert_eq!(events[0].dedupe_key, format!("ticket:1@{}", T0 + 2_000));
}

/// Many deliveries at once, each ticket's versions racing each other and batches naming two
/// tickets in either order (their locks are taken in one order, so none deadlocks): every
/// ticket's stored versions only go forwards and its newest version is always stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inserts_keep_each_tickets_order() {
    use deskgate::ingest::Candidate;
    let store = store::open(temp_path("inbox-race").to_str().unwrap(), SecretKey::from_bytes(KEY)).await.unwrap();
    store.create_connection(&NewConnection::new("c", "zendesk", "c"), T0).await.unwrap();
    let inbox = Arc::new(Inbox::new(store.clone()));
    let t = |id: u64, v: i64| Candidate::from_sweep("c", "zendesk", &open_ticket(&id.to_string(), T0 + v, &[]));
    let (tickets, versions) = (40u64, 6i64);
    let mut tasks = Vec::new();
    for v in (1..=versions).rev() {
        for id in 0..tickets {
            let (inbox, batch) = (inbox.clone(), if id % 4 == 0 {
                // Pairs named in both orders: (id, id+1) here, (id+1, id) at the next version.
                let other = (id + 1) % tickets;
                if v % 2 == 0 { vec![t(id, v), t(other, v * 10 + 5)] } else { vec![t(other, v * 10 + 5), t(id, v)] }
            } else {
                vec![t(id, v)]
            });
            tasks.push(tokio::spawn(async move { inbox.insert("c", &batch, T0).await.unwrap() }));
        }
    }
    let mut new = 0;
    for task in tasks {
        new += task.await.unwrap().new;
    }
    let events = pull_all(&store, "c", T0).await;
    assert_eq!(events.len() as u64, new, "every insert reported what it stored");
    let mut last: HashMap<String, i64> = HashMap::new();
    for e in &events {
        let v = version_of(e);
        if let Some(before) = last.insert(e.ticket_id.clone(), v) {
            assert!(v > before, "ticket {} went back from {before} to {v}", e.ticket_id);
        }
    }
    for id in 0..tickets {
        // Tickets 1, 5, 9, ... also ride in their neighbour's batches, with the later versions.
        let newest = if id % 4 == 1 { T0 + versions * 10 + 5 } else { T0 + versions };
        assert_eq!(last.get(&id.to_string()), Some(&newest), "ticket {id}'s newest version is stored");
    }
}

/// deskgate's own scope-probe tickets never reach the app: the tagged snapshot, and every later
/// event about that ticket (the probe's deletion carries no snapshot, hence no tag).
#[tokio::test]
async fn probe_tickets_and_their_later_events_are_not_delivered() {
    use deskgate::bindings::{Ticket, TicketEvent};
    use deskgate::ingest::Candidate;
    let store = store::open(temp_path("probe").to_str().unwrap(), SecretKey::from_bytes(KEY)).await.unwrap();
    store.create_connection(&NewConnection::new("c", "intercom", "c"), T0).await.unwrap();
    let inbox = Inbox::new(store.clone());
    let ticket = |id: &str, tags: &[&str]| open_ticket(id, T0 + 1_000, tags);
    let event = |id: &str, kind: &str, t: Option<Ticket>| {
        Candidate::from_webhook("c", "intercom", &TicketEvent { event_id: None, ticket_id: id.into(), kind: kind.into(), occurred_at: T0 + 2_000, ticket: t })
    };
    let r = inbox
        .insert("c", &[event("1", "created", Some(ticket("1", &[deskgate::ingest::PROBE_TAG]))), event("2", "created", Some(ticket("2", &[])))], T0)
        .await
        .unwrap();
    assert_eq!(r.new, 1, "only the customer's ticket is stored");
    let r = inbox.insert("c", &[event("1", "deleted", None), event("2", "deleted", None)], T0).await.unwrap();
    assert_eq!(r.new, 1, "the probe's deletion is the probe's too");
    let got: Vec<(String, String)> = pull_all(&store, "c", T0).await.iter().map(|e| (e.ticket_id.clone(), e.kind.clone())).collect();
    assert_eq!(got, vec![("2".into(), "ticket.created".into()), ("2".into(), "ticket.deleted".into())]);
}

/// Push to the app's webhook: a failing app gets the same batch again after a jittered,
/// growing backoff, events stay unacknowledged until a 2xx, then arrive once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_retries_with_backoff_and_acks_only_on_2xx() {
    use deskgate::ingest::Candidate;
    use deskgate::ingest::push::{PushConfig, PushOutcome, Pusher};
    let store = store::open(temp_path("push").to_str().unwrap(), SecretKey::from_bytes(KEY)).await.unwrap();
    store.create_connection(&NewConnection::new("c", "zendesk", "c"), T0).await.unwrap();
    let inbox = Inbox::new(store.clone());
    let ticket = |id: &str, v: i64| open_ticket(id, v, &[]);
    let batch: Vec<Candidate> = [("1", 1), ("2", 1), ("1", 2), ("2", 2), ("1", 3)]
        .iter()
        .map(|(id, v)| Candidate::from_sweep("c", "zendesk", &ticket(id, T0 + v * 1_000)))
        .collect();
    assert_eq!(inbox.insert("c", &batch, T0).await.unwrap().new, 5);

    // The app: checks the signature as an app would (its own HMAC over timestamp, '.', body),
    // answers 503 twice, then 200; it records what it got.
    const PUSH_SECRET: &str = "push-secret-for-the-test";
    let calls = Arc::new(AtomicU64::new(0));
    let forged = Arc::new(AtomicU64::new(0));
    let got: Arc<std::sync::Mutex<Vec<Value>>> = Arc::default();
    let app = {
        let (calls, got, forged) = (calls.clone(), got.clone(), forged.clone());
        axum::Router::new().route(
            "/events",
            axum::routing::post(move |headers: axum::http::HeaderMap, raw: axum::body::Bytes| {
                let (calls, got, forged) = (calls.clone(), got.clone(), forged.clone());
                async move {
                    let ts = headers.get("x-deskgate-timestamp").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                    let sig = headers.get("x-deskgate-signature").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(PUSH_SECRET.as_bytes()).unwrap();
                    mac.update(format!("{ts}.").as_bytes());
                    mac.update(&raw);
                    let ok = sig.strip_prefix("v1=").and_then(|h| hex::decode(h).ok()).is_some_and(|tag| mac.verify_slice(&tag).is_ok());
                    if !ok || ts.parse::<i64>().is_err() {
                        forged.fetch_add(1, Ordering::SeqCst);
                        return axum::http::StatusCode::UNAUTHORIZED;
                    }
                    if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let body: Value = serde_json::from_slice(&raw).unwrap();
                    got.lock().unwrap().extend(body["events"].as_array().unwrap().iter().cloned());
                    axum::http::StatusCode::OK
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let clock = ManualClock::new(T0 + 10_000);
    let mut config = PushConfig::new(url.clone());
    config.secret = Some(PUSH_SECRET.as_bytes().to_vec());
    let mut pusher = Pusher::new(store.clone(), Arc::new(clock.clone()), config, 7).unwrap();
    let now = clock.now_ms();
    match pusher.push_once().await.unwrap() {
        PushOutcome::Retry { at, attempt: 1, .. } => assert!((now..=now + 1_000).contains(&at), "{at}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.inbox_pending("c").await.unwrap(), 5, "nothing acknowledged on a 503");
    match pusher.push_once().await.unwrap() {
        PushOutcome::Retry { at, attempt: 2, .. } => assert!((now..=now + 2_000).contains(&at), "{at}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(pusher.push_once().await.unwrap(), PushOutcome::Delivered(5));
    assert_eq!(pusher.push_once().await.unwrap(), PushOutcome::Idle);
    assert_eq!(store.inbox_pending("c").await.unwrap(), 0);
    let got = got.lock().unwrap().clone();
    let order: Vec<(String, i64)> = got
        .iter()
        .map(|e| (e["ticket_id"].as_str().unwrap().to_owned(), e["ticket"]["updated_at"].as_i64().unwrap() - T0))
        .collect();
    let want: Vec<(String, i64)> =
        [("1", 1_000), ("2", 1_000), ("1", 2_000), ("2", 2_000), ("1", 3_000)].iter().map(|(t, v)| (t.to_string(), *v)).collect();
    assert_eq!(order, want, "once each, in order");
    assert!(got.windows(2).all(|w| w[0]["id"].as_i64() < w[1]["id"].as_i64()));
    assert_eq!(forged.load(Ordering::SeqCst), 0, "every push carried a valid signature");
    // Signed with another secret, the same push is refused by the app and stays unacknowledged.
    inbox.insert("c", &[Candidate::from_sweep("c", "zendesk", &ticket("3", T0 + 4_000))], T0).await.unwrap();
    let mut wrong = PushConfig::new(url);
    wrong.secret = Some(b"not-the-apps-secret".to_vec());
    let mut impostor = Pusher::new(store.clone(), Arc::new(clock.clone()), wrong, 7).unwrap();
    assert!(matches!(impostor.push_once().await.unwrap(), PushOutcome::Retry { .. }));
    assert_eq!(forged.load(Ordering::SeqCst), 1);
    assert_eq!(store.inbox_pending("c").await.unwrap(), 1);
    server.abort();
}
