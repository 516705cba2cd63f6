//! Shared by the operator-surface tests: an in-process gateway (real HTTP on 127.0.0.1, a
//! temporary SQLite store, the built-in adapters, the scope probe on create, a status registry)
//! and a Zendesk simulator account to connect to.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use deskgate::api::{AppState, ProbeOnConnect, app};
use deskgate::clock::SystemClock;
use deskgate::config::Secret;
use deskgate::driver::{Driver, DriverConfig};
use deskgate::runtime::{AdapterRuntime, RuntimeConfig};
use deskgate::status::{SharedStatus, StatusRegistry};
use deskgate::store::{self, SecretKey};
use deskgate_sim::{AccountSpec, AgentSpec, CredKind, CredentialInfo, CredentialSpec, Platform, SimConfig, SimHandle};
use deskgate::bindings::{BucketDraw, Connection as BindingConnection, Lane};
use deskgate::budget::{BudgetConfig, BudgetLayer, Priority};
use deskgate::store::ConnectionState;
use serde_json::{Value, json};

/// The gateway's API token in these tests.
pub const TOKEN: &str = "ops-test-token-5f0c2a9e41";

/// The built-in adapters, compiled once per test binary.
pub fn runtime() -> &'static AdapterRuntime {
    static RT: OnceLock<AdapterRuntime> = OnceLock::new();
    RT.get_or_init(|| {
        let config = RuntimeConfig {
            cache_dir: Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("api-compile-cache")),
            ..RuntimeConfig::default()
        };
        let mut rt = AdapterRuntime::new(config).expect("runtime");
        rt.load_builtin().expect("built-in adapters");
        rt
    })
}

/// A gateway serving on 127.0.0.1.
pub struct Gateway {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// Its state (store, status registry).
    pub state: AppState,
    /// The registry it reads live figures from.
    pub status: SharedStatus,
    /// An HTTP client.
    pub http: reqwest::Client,
}

impl Gateway {
    /// Start one with the scope probe on create (no workers: nothing is sent on its own).
    pub async fn start() -> Self {
        Self::start_with(false).await
    }

    /// Start one run by the supervisor, as `deskgate serve` runs it: connections are attached
    /// (probed, their workers started), and credentials, probe, suspend and resume act on them.
    pub async fn start_supervised() -> Self {
        Self::start_with(true).await
    }

    async fn start_with(supervised: bool) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("deskgate-ops-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = store::open(dir.join("deskgate.sqlite").to_str().unwrap(), SecretKey::from_bytes([7; 32]))
            .await
            .expect("store");
        let adapters: Vec<_> = runtime().adapters().cloned().collect();
        let status = StatusRegistry::shared();
        let clock: deskgate::clock::SharedClock = Arc::new(SystemClock);
        let state = AppState::new(store.clone(), clock.clone(), Secret::new(TOKEN), adapters.clone()).with_status(status.clone());
        let state = if supervised {
            let gateway = deskgate::gateway::Gateway::new(deskgate::gateway::GatewayParts {
                store,
                clock,
                driver: Driver::new(DriverConfig::default()).unwrap(),
                adapters,
                inbox: state.inbox().clone(),
                metrics: state.ingest_metrics().clone(),
                config: deskgate::gateway::GatewayConfig { owner: format!("ops-test-{n}"), ..Default::default() },
            })
            .expect("supervisor");
            state.with_control(Arc::new(gateway))
        } else {
            let hook = ProbeOnConnect::new(Driver::new(DriverConfig::default()).unwrap(), adapters);
            state.with_connect_hook(Arc::new(hook))
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = app(state.clone());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self { base, state, status, http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap() }
    }

    /// A request with the bearer token.
    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base)).bearer_auth(TOKEN)
    }

    /// Send; status and JSON (or the text as a JSON string).
    pub async fn send(&self, rb: reqwest::RequestBuilder) -> (u16, Value) {
        let r = rb.send().await.expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// `GET` with the token.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.req(reqwest::Method::GET, path)).await
    }

    /// `POST` JSON with the token.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(self.req(reqwest::Method::POST, path).json(&body)).await
    }
}

/// A Zendesk simulator with one account, an admin and two credentials: `full` (an API token with
/// every privilege) and `read_only` (an OAuth token with the `read` scope only).
pub struct ZendeskAccount {
    /// The running sim.
    pub sim: SimHandle,
    /// The full-access credential.
    pub full: CredentialInfo,
    /// The read-only credential.
    pub read_only: CredentialInfo,
}

impl ZendeskAccount {
    /// Start it.
    pub async fn start() -> Self {
        let sim = deskgate_sim::start(SimConfig::new(Platform::Zendesk).seed(11)).await.expect("sim");
        let account = sim.create_account(AccountSpec::default()).unwrap();
        sim.create_agent(account.id, AgentSpec { name: Some("Ada Admin".into()), ..Default::default() }).unwrap();
        let full = sim.create_credential(account.id, CredentialSpec::default()).unwrap();
        let read_only = sim
            .create_credential(
                account.id,
                CredentialSpec { kind: Some(CredKind::Oauth), scopes: Some(vec!["read".into()]), access_ttl_secs: Some(0), ..Default::default() },
            )
            .unwrap();
        Self { sim, full, read_only }
    }

    /// The API's `credentials` object for the full-access token.
    pub fn full_credentials(&self) -> Value {
        json!({"scheme": "api_key", "fields": {"email": self.full.email, "token": self.full.token}})
    }

    /// The API's `credentials` object for the read-only OAuth token (a non-expiring bearer).
    pub fn read_only_credentials(&self) -> Value {
        json!({"scheme": "oauth", "access_token": self.read_only.token, "refresh_token": null})
    }
}

/// Connect `acme` (full access: live) and `acme-readonly` (read scope only: the probe fails,
/// then the connection is suspended for re-scoping), run a budget gate for `acme` in the status
/// registry with some spend, count a few events, and raise an alert whose kind needs escaping.
pub async fn populated() -> (Gateway, ZendeskAccount) {
    let g = Gateway::start().await;
    let z = ZendeskAccount::start().await;
    let (status, full) = g
        .post(
            "/v1/connections",
            json!({"id": "acme", "platform": "zendesk", "base_url": z.sim.base_url(), "display_name": "Acme Support",
                   "credentials": z.full_credentials()}),
        )
        .await;
    assert_eq!(status, 201, "{full}");
    assert_eq!(full["state"], "live", "{full}");
    let (status, ro) = g
        .post(
            "/v1/connections",
            json!({"id": "acme-readonly", "platform": "zendesk", "base_url": z.sim.base_url(),
                   "credentials": z.read_only_credentials()}),
        )
        .await;
    assert_eq!(status, 201, "{ro}");
    assert_eq!(ro["state"], "pending_probe", "{ro}");
    assert_eq!(ro["probe_report"]["passed"], false, "{ro}");
    let store = g.state.store().clone();
    store
        .set_connection_state(
            "acme-readonly",
            &ConnectionState::Suspended {
                reason: "The token lacks the `write` scope: replies and status changes are refused. Re-authorize the OAuth client with read and write scopes.".into(),
                kind: "rescope".into(),
            },
            now_ms() - 2 * 3600 * 1000,
        )
        .await
        .unwrap();
    // Live parts, as the supervisor registers them.
    let adapter = runtime().get("zendesk").unwrap();
    let layer = BudgetLayer::new(std::sync::Arc::new(SystemClock), BudgetConfig::default());
    let conn = BindingConnection { id: "acme".into(), plan: adapter.descriptor().default_plan.clone(), agent_id: None, settings: vec![] };
    let gate = layer.connect(&conn, adapter.descriptor(), None).unwrap();
    let bucket = gate.snapshot().budget.buckets[0].bucket.clone();
    let draw = [BucketDraw { bucket: bucket.clone(), key: None, cost: 1 }];
    for _ in 0..7 {
        let permit = gate.acquire(Priority::Write, &draw).await.expect("capacity");
        drop(permit);
    }
    let counters = g.status.register("acme", Some(gate), None);
    counters.record_rate_limited(Lane::Read);
    counters.record_rate_limited(Lane::Read);
    counters.record_rate_limited(Lane::Write);
    counters.record_suspension();
    g.status.counters("acme-readonly").record_suspension();
    deskgate::alerts::raise(&store, now_ms() - 2 * 3600 * 1000, Some("acme-readonly"), "scope-missing", "Grant `write` to acme-readonly".into(), json!({}))
        .await
        .unwrap();
    deskgate::alerts::raise(&store, now_ms() - 60_000, None, "odd \"kind\"\\with\nnewline", "escaping test".into(), json!({})).await.unwrap();
    // A duplicate submission is counted by the API itself.
    let action = json!({"ticket_id": "1", "action": {"type": "reply", "body": "hi"}});
    g.post("/v1/connections/acme/actions", action.clone()).await;
    let (_, dup) = g.post("/v1/connections/acme/actions", action).await;
    assert_eq!(dup["duplicate"], true);
    (g, z)
}


/// Now, in Unix milliseconds (the gateway in these tests runs on the system clock).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}
