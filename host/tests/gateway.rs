//! The supervisor (`deskgate::gateway`) with the API in front of it, against the Zendesk
//! simulator over real HTTP. The clock is manual: every timer fires because the test moved time
//! and asked for a timer pass, never because it slept.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use deskgate::api::{AppState, app};
use deskgate::auth::{RefreshOutcome, TickOutcome};
use deskgate::clock::{Clock, ManualClock};
use deskgate::config::Secret;
use deskgate::driver::{Driver, DriverConfig};
use deskgate::gateway::{Gateway, GatewayConfig, GatewayParts, SWEEP_MARK};
use deskgate::runtime::{AdapterRuntime, RuntimeConfig};
use deskgate::store::{self, SecretKey, SharedStore};
use deskgate_sim::{AccountSpec, AgentSpec, CredKind, CredentialInfo, CredentialSpec, Platform, SimConfig, SimHandle, WriteKind};
use serde_json::{Value, json};

const TOKEN: &str = "gateway-test-token-0123456789";
/// 2027-01-15 00:00 UTC: the sim and the gateway start here, frozen.
const T0: i64 = 1_800_000_000_000;
const MIN: i64 = 60_000;

fn runtime() -> &'static AdapterRuntime {
    static RT: OnceLock<AdapterRuntime> = OnceLock::new();
    RT.get_or_init(|| {
        let config = RuntimeConfig {
            cache_dir: Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gateway-compile-cache")),
            ..RuntimeConfig::default()
        };
        let mut rt = AdapterRuntime::new(config).expect("runtime");
        rt.load_builtin().expect("built-in adapters");
        rt
    })
}

struct Rig {
    sim: SimHandle,
    account: u64,
    agent: u64,
    clock: ManualClock,
    store: SharedStore,
    gateway: Gateway,
    base: String,
    http: reqwest::Client,
}

fn oauth_body(cred: &CredentialInfo) -> Value {
    json!({
        "scheme": "oauth",
        "access_token": cred.token,
        "refresh_token": cred.refresh_token,
        "client": { "client_id": cred.client_id, "client_secret": cred.client_secret },
    })
}

impl Rig {
    async fn start(name: &str) -> Rig {
        Self::start_with(name, |_| {}).await
    }

    async fn start_with(name: &str, tune: impl FnOnce(&mut GatewayConfig)) -> Rig {
        let sim = deskgate_sim::start(SimConfig::new(Platform::Zendesk).seed(11).frozen_at(T0)).await.unwrap();
        let account = sim.create_account(AccountSpec::default()).unwrap().id;
        let agent = sim.create_agent(account, AgentSpec { name: Some("Ada Admin".into()), role: Some("admin".into()), ..Default::default() }).unwrap().id;
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("gateway-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = store::open(dir.join("deskgate.db").to_str().unwrap(), SecretKey::from_bytes([4; 32])).await.unwrap();
        let clock = ManualClock::new(T0);
        let shared: deskgate::clock::SharedClock = Arc::new(clock.clone());
        let adapters: Vec<_> = runtime().adapters().cloned().collect();
        let state = AppState::new(store.clone(), shared.clone(), Secret::new(TOKEN), adapters.clone());
        let mut config = GatewayConfig { owner: "test".into(), ..GatewayConfig::default() };
        config.outbox.poll_interval = Duration::from_millis(5);
        tune(&mut config);
        let gateway = Gateway::new(GatewayParts {
            store: store.clone(),
            clock: shared,
            driver: Driver::new(DriverConfig::default()).unwrap(),
            adapters,
            inbox: state.inbox().clone(),
            metrics: state.ingest_metrics().clone(),
            config,
        })
        .unwrap()
        .with_status(state.status().clone());
        let state = state.with_control(Arc::new(gateway.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app(state)).await.unwrap() });
        Rig { sim, account, agent, clock, store, gateway, base, http: reqwest::Client::new() }
    }

    fn oauth(&self) -> CredentialInfo {
        self.sim
            .create_credential(
                self.account,
                CredentialSpec { kind: Some(CredKind::Oauth), agent_id: Some(self.agent), access_ttl_secs: Some(7200), refresh_ttl_secs: Some(30 * 86_400), ..Default::default() },
            )
            .unwrap()
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut rb = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(TOKEN);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn connect(&self, cred: &CredentialInfo) -> Value {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/v1/connections",
                Some(json!({ "id": "zd", "platform": "zendesk", "base_url": self.sim.base_url(), "credentials": oauth_body(cred), "expires_in": 7200 })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    fn ticket(&self) -> String {
        let t = self.sim.create_ticket(self.account, Default::default()).unwrap();
        t["id"].as_u64().unwrap().to_string()
    }

    async fn reply(&self, ticket: &str, text: &str) -> i64 {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/v1/connections/zd/actions",
                Some(json!({ "ticket_id": ticket, "action": { "type": "reply", "body": text } })),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        body["id"].as_i64().unwrap()
    }

    /// Wait (real time, bounded) until the running worker settles action `id`.
    async fn settled(&self, id: i64) -> Value {
        let start = Instant::now();
        loop {
            let (_, a) = self.call(reqwest::Method::GET, &format!("/v1/actions/{id}"), None).await;
            if a["state"] != "pending" && a["state"] != "sent" && a["state"] != "ambiguous" {
                return a;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "action {id} never settled: {a}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn replies(&self, ticket: &str) -> usize {
        let t: u64 = ticket.parse().unwrap();
        self.sim.writes(self.account, Some(t)).unwrap().iter().filter(|w| matches!(w.kind, WriteKind::Reply { .. })).count()
    }

    async fn events(&self) -> Vec<String> {
        let (_, body) = self.call(reqwest::Method::GET, "/v1/events?limit=1000", None).await;
        body["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_string()).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refresh_suspend_resume_and_reauthenticate_through_the_api() {
    let rig = Rig::start("lifecycle").await;
    let cred = rig.oauth();
    let conn = rig.connect(&cred).await;
    assert_eq!(conn["state"], "live", "{conn}");
    assert!(rig.gateway.attached("zd").await.is_some(), "created connections run at once");

    // A reply goes out through the attached worker.
    let t1 = rig.ticket();
    let a1 = rig.reply(&t1, "first").await;
    assert_eq!(rig.settled(a1).await["state"], "confirmed");

    // 80% of the 2-hour lifetime: the timer pass refreshes, before anything failed.
    rig.clock.set(T0 + 95 * MIN);
    let rep = rig.gateway.run_timers_once().await;
    assert_eq!(rep["zd"].auth, None, "nothing due at 95 minutes: {:?}", rep["zd"]);
    rig.clock.set(T0 + 97 * MIN);
    rig.sim.clock().set(T0 + 97 * MIN);
    let rep = rig.gateway.run_timers_once().await;
    assert!(matches!(rep["zd"].auth, Some(TickOutcome::Refresh(RefreshOutcome::Refreshed(_)))), "{:?}", rep["zd"]);
    let stored = rig.store.get_credential("zd").await.unwrap().unwrap();
    assert!(stored.expires_at.unwrap() > T0 + 97 * MIN + 100 * MIN, "the new token's expiry is stored");
    // The refreshed token is the one in use: the old pair was rotated away.
    let t2 = rig.ticket();
    let a2 = rig.reply(&t2, "after refresh").await;
    assert_eq!(rig.settled(a2).await["state"], "confirmed");

    // The first sweep ran by now (due within its first 10 minutes... of the schedule) or runs
    // after 11 more minutes; its mark is durable.
    rig.clock.advance(Duration::from_secs(11 * 60));
    rig.sim.clock().advance(Duration::from_secs(11 * 60));
    rig.gateway.run_timers_once().await;
    assert!(rig.store.get_mark("zd", SWEEP_MARK).await.unwrap().is_some(), "a sweep wrote its mark");

    // Suspend: nothing is sent, the app is told; resume: the queue drains, the app is told.
    let (status, body) = rig.call(reqwest::Method::POST, "/v1/connections/zd/suspend", Some(json!({ "reason": "maintenance window" }))).await;
    assert_eq!((status, body["state"].as_str()), (200, Some("suspended")), "{body}");
    assert_eq!(body["suspended"]["reason"], "maintenance window");
    let t3 = rig.ticket();
    let a3 = rig.reply(&t3, "while suspended").await;
    let attached = rig.gateway.attached("zd").await.unwrap();
    assert_eq!(attached.worker.run_once().await.unwrap().claimed, 0, "a suspended connection's work is not handed out");
    assert_eq!(rig.replies(&t3), 0);
    let (status, body) = rig.call(reqwest::Method::POST, "/v1/connections/zd/resume", None).await;
    assert_eq!((status, body["state"].as_str(), body["changed"].as_bool()), (200, Some("live"), Some(true)), "{body}");
    assert_eq!(rig.settled(a3).await["state"], "confirmed");
    assert_eq!(rig.replies(&t3), 1);
    let kinds = rig.events().await;
    assert!(kinds.contains(&"connection.suspended".to_string()) && kinds.contains(&"connection.resumed".to_string()), "{kinds:?}");

    // The grant is revoked: the next refresh is refused for good: suspended, alerted.
    // (A refresh issues a new pair: revoke every OAuth grant of the account.)
    for id in 1..=64 {
        match rig.sim.credential(rig.account, id) {
            Ok(c) if c.kind == CredKind::Oauth && !c.revoked => {
                rig.sim.revoke_credential(rig.account, id).unwrap();
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let _ = cred.id;
    let live = rig.store.get_credential("zd").await.unwrap().unwrap();
    let due = live.updated_at + (live.expires_at.unwrap() - live.updated_at) * 8 / 10 + 1;
    rig.clock.set(due);
    rig.sim.clock().set(due);
    let rep = rig.gateway.run_timers_once().await;
    assert!(matches!(rep["zd"].auth, Some(TickOutcome::Refresh(RefreshOutcome::Suspended))), "{:?}", rep["zd"]);
    let (_, conn) = rig.call(reqwest::Method::GET, "/v1/connections/zd", None).await;
    assert_eq!(conn["state"], "suspended", "{conn}");
    let (_, alerts) = rig.call(reqwest::Method::GET, "/v1/alerts", None).await;
    assert!(alerts["alerts"].as_array().unwrap().iter().any(|a| a["kind"] == "refresh-failed"), "{alerts}");
    // Resuming blind is refused: the stored credential does not work.
    let (status, body) = rig.call(reqwest::Method::POST, "/v1/connections/zd/resume", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("credentials_invalid")), "{body}");

    // Work queued meanwhile stays durable.
    let t4 = rig.ticket();
    let a4 = rig.reply(&t4, "queued while the grant is dead").await;

    // Wrong new credentials change nothing.
    let (status, body) = rig
        .call(reqwest::Method::PUT, "/v1/connections/zd/credentials", Some(json!({ "credentials": { "scheme": "oauth", "access_token": "not-a-token" } })))
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("credentials_rejected")), "{body}");
    assert_eq!(rig.store.get_connection("zd").await.unwrap().unwrap().state.name(), "suspended");

    // The operator re-authenticates: validated, resumed, the queue drains exactly once.
    let fresh = rig.oauth();
    let (status, body) = rig
        .call(reqwest::Method::PUT, "/v1/connections/zd/credentials", Some(json!({ "credentials": oauth_body(&fresh), "expires_in": 7200 })))
        .await;
    assert_eq!((status, body["state"].as_str()), (200, Some("live")), "{body}");
    assert_eq!(body["probe"]["passed"], true, "{body}");
    assert_eq!(rig.settled(a4).await["state"], "confirmed");
    assert_eq!(rig.replies(&t4), 1);

    // On-demand probe.
    let (status, body) = rig.call(reqwest::Method::POST, "/v1/connections/zd/probe", None).await;
    assert_eq!((status, body["report"]["passed"].as_bool()), (200, Some(true)), "{body}");

    // The operator's metrics counted what the supervised policies did: two suspensions (the
    // operator's, the refused refresh) and the four confirmed writes.
    let metrics = rig.http.get(format!("{}/metrics", rig.base)).bearer_auth(TOKEN).send().await.unwrap().text().await.unwrap();
    let sample = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no sample {name} in\n{metrics}"))
    };
    assert_eq!(sample("deskgate_suspensions_total{connection=\"zd\"}"), 2.0);
    assert_eq!(sample("deskgate_writes_total{connection=\"zd\",outcome=\"confirmed\"}"), 4.0);
    rig.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_routes_explain_their_errors() {
    let rig = Rig::start("errors").await;
    let (status, body) = rig.call(reqwest::Method::POST, "/v1/connections/nope/probe", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("connection_not_found")), "{body}");
    let (status, body) = rig.call(reqwest::Method::POST, "/v1/connections/nope/suspend", Some(json!({ "reason": " " }))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_reason")), "{body}");
    let (status, body) = rig.call(reqwest::Method::POST, "/v1/connections/nope/suspend", Some(json!({ "why": "x" }))).await;
    assert_eq!(status, 400, "{body}");
    // A connection without credentials: probing it says what to do.
    let (status, _) = rig
        .call(reqwest::Method::POST, "/v1/connections", Some(json!({ "id": "bare", "platform": "zendesk", "base_url": rig.sim.base_url() })))
        .await;
    assert_eq!(status, 201);
    let (status, body) = rig.call(reqwest::Method::POST, "/v1/connections/bare/probe", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("no_credentials")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("PUT /v1/connections/bare/credentials"), "{body}");
    // Credentials added later: validated, stored, probed, live.
    let cred = rig.oauth();
    let (status, body) = rig
        .call(reqwest::Method::PUT, "/v1/connections/bare/credentials", Some(json!({ "credentials": oauth_body(&cred), "expires_in": 7200 })))
        .await;
    assert_eq!((status, body["state"].as_str()), (200, Some("live")), "{body}");
    // A restart finds the connection and its sweep mark in the store; the new supervisor
    // attaches it without the API.
    assert!(rig.gateway.attached("bare").await.is_some());
    rig.gateway.shutdown().await;
    let now = rig.clock.now_ms();
    rig.store.put_mark("bare", SWEEP_MARK, now, now).await.unwrap();
    assert_eq!(rig.store.get_mark("bare", SWEEP_MARK).await.unwrap(), Some(now));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_that_keeps_rate_limiting_raises_one_alert() {
    // No sweep in this test: it would rightly wait in the blocked read lane for the manual clock.
    let rig = Rig::start_with("sustained", |c| c.sweep_every = (Duration::from_secs(86_400), Duration::from_secs(86_400))).await;
    let cred = rig.oauth();
    rig.connect(&cred).await;
    let attached = rig.gateway.attached("zd").await.unwrap();
    let count = |alerts: &Value| alerts["alerts"].as_array().unwrap().iter().filter(|a| a["kind"] == "sustained-rate-limiting").count();
    // The platform's 429s block the account bucket for 15 minutes (as a penalty does).
    let start = rig.clock.now_ms();
    attached.gate.penalize(None, None, start + 15 * MIN);
    for minutes in [0, 5, 9] {
        rig.clock.set(start + minutes * MIN);
        rig.gateway.run_timers_once().await;
    }
    let (_, alerts) = rig.call(reqwest::Method::GET, "/v1/alerts", None).await;
    assert_eq!(count(&alerts), 0, "not yet sustained: {alerts}");
    for minutes in [10, 12, 14] {
        rig.clock.set(start + minutes * MIN);
        rig.gateway.run_timers_once().await;
    }
    let (_, alerts) = rig.call(reqwest::Method::GET, "/v1/alerts", None).await;
    assert_eq!(count(&alerts), 1, "one alert per episode: {alerts}");
    let text = alerts["alerts"].as_array().unwrap().iter().find(|a| a["kind"] == "sustained-rate-limiting").unwrap()["text"].as_str().unwrap().to_string();
    assert!(text.contains("zd") && text.contains("10 minutes"), "{text}");
    // The block lifts; a new episode later alerts again.
    rig.clock.set(start + 16 * MIN);
    rig.gateway.run_timers_once().await;
    let again = rig.clock.now_ms();
    attached.gate.penalize(None, None, again + 30 * MIN);
    for minutes in [0, 11] {
        rig.clock.set(again + minutes * MIN);
        rig.gateway.run_timers_once().await;
    }
    let (_, alerts) = rig.call(reqwest::Method::GET, "/v1/alerts", None).await;
    assert_eq!(count(&alerts), 2, "{alerts}");
    rig.gateway.shutdown().await;
}
