//! Credentials as monitored state (issue #5) against the real simulators over HTTP: OAuth refresh
//! at 80% across several lifetimes with rotating refresh tokens, a revoked refresh token, a key
//! rotated on the platform, a scope removed mid-operation, go-live refused for a missing write
//! permission on each platform, crash recovery around a refresh, and alert delivery with retries.
//!
//! Time is a [`ManualClock`] moved together with the sim's frozen clock; nothing sleeps for
//! policy. Run with `--nocapture` to see the figures.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use deskgate::alerts::{AlertConfig, AlertDeliverer};
use deskgate::auth::{
    AuthConfig, CredentialManager, ManagerParts, OAuthClient, RefreshError, RefreshOutcome, StartReport, TickOutcome,
};
use deskgate::bindings::{Action, ApplyAction, Connection, Failure, Operation, Outcome, TicketStatus};
use deskgate::budget::{BudgetConfig, BudgetLayer};
use deskgate::clock::{Clock, ManualClock};
use deskgate::driver::{Driver, DriverConfig};
use deskgate::outbox::{Outbox, OutboxConfig, OutboxWorker, PassReport, WorkerParts};
use deskgate::runtime::{Adapter, AdapterRuntime, RuntimeConfig};
use deskgate::store::{
    self, ConnectionPatch, ConnectionState, CredentialSecret, Expect, NewConnection, Pull, RefreshClaim, SecretKey,
    SharedStore,
};
use deskgate_sim::{
    AccountSpec, AgentPatch, AgentSpec, CredKind, CredentialInfo, CredentialSpec, FaultConfig, Platform, ScopePatch, SimConfig,
    SimHandle, TicketSpec, WriteKind,
};

/// 2027-01-15 00:00 UTC-ish: the sim and the gateway start here, frozen. "02:00" below is T0 + 2 h.
const T0: i64 = 1_800_000_000_000;
const H: i64 = 3_600_000;

fn runtime() -> &'static AdapterRuntime {
    static RT: OnceLock<AdapterRuntime> = OnceLock::new();
    RT.get_or_init(|| {
        let config = RuntimeConfig {
            max_instances: 64,
            warm_per_adapter: 4,
            cache_dir: Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("auth-compile-cache")),
            ..RuntimeConfig::default()
        };
        let mut rt = AdapterRuntime::new(config).expect("engine");
        rt.load_builtin().expect("built-in adapters");
        rt
    })
}

fn temp_db(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("auth-{}-{}-{name}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("deskgate.db")
}

fn secret_of(platform: Platform, cred: &CredentialInfo) -> CredentialSecret {
    let f = |pairs: &[(&str, &str)]| CredentialSecret::ApiKey {
        fields: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    };
    match platform {
        _ if cred.kind == CredKind::Oauth => {
            CredentialSecret::OAuth { access_token: cred.token.clone(), refresh_token: cred.refresh_token.clone(), client: None }
        }
        Platform::Zendesk => f(&[("email", &cred.email), ("token", &cred.token)]),
        Platform::Freshdesk => f(&[("api_key", &cred.token)]),
        Platform::Intercom => f(&[("access_token", &cred.token)]),
    }
}

struct Rig {
    platform: Platform,
    sim: SimHandle,
    account: u64,
    agent: u64,
    adapter: Arc<Adapter>,
    store: SharedStore,
    clock: ManualClock,
    conn: String,
    cred: CredentialInfo,
    mgr: CredentialManager,
}

impl Rig {
    async fn new(platform: Platform, spec: CredentialSpec, remove_privilege: Option<&str>) -> Rig {
        let id = platform.to_string();
        let adapter = runtime().get(&id).expect("adapter");
        let sim = deskgate_sim::start(SimConfig::new(platform).seed(5).frozen_at(T0)).await.unwrap();
        let account = sim.create_account(AccountSpec::default()).unwrap().id;
        let admin = sim.create_agent(account, AgentSpec { name: Some("Ada Admin".into()), ..Default::default() }).unwrap();
        let agent = match remove_privilege {
            None => admin.id,
            Some(p) => {
                let a = sim
                    .create_agent(account, AgentSpec { name: Some("Alan Agent".into()), role: Some("agent".into()), ..Default::default() })
                    .unwrap();
                sim.update_agent(account, a.id, AgentPatch { remove_privileges: vec![p.into()], ..Default::default() }).unwrap();
                a.id
            }
        };
        let cred = sim.create_credential(account, CredentialSpec { agent_id: Some(agent), ..spec }).unwrap();
        let store = store::open(temp_db(&id).to_str().unwrap(), SecretKey::from_bytes([9; 32])).await.unwrap();
        let conn = format!("{id}-auth");
        let mut nc = NewConnection::new(&conn, &id, "auth test");
        nc.admin_contact_url = None;
        store.create_connection(&nc, T0).await.unwrap();
        let clock = ManualClock::new(T0);
        let secret = secret_of(platform, &cred);
        store.put_credential(&conn, &secret, cred.expires_at_ms, Expect::Absent, T0).await.unwrap();
        let mut rig = Rig { platform, sim, account, agent, adapter, store, clock, conn, cred, mgr: dummy() };
        rig.mgr = rig.manager();
        rig
    }

    fn manager(&self) -> CredentialManager {
        self.manager_with(AuthConfig { owner: "replica-1".into(), ..AuthConfig::default() })
    }

    fn manager_with(&self, config: AuthConfig) -> CredentialManager {
        let d = self.adapter.descriptor();
        CredentialManager::new(ManagerParts {
            store: self.store.clone(),
            clock: Arc::new(self.clock.clone()),
            driver: Driver::new(DriverConfig::default()).unwrap(),
            adapter: self.adapter.clone(),
            base_url: self.sim.base_url(),
            connection: Connection { id: self.conn.clone(), plan: d.default_plan.clone(), agent_id: None, settings: vec![] },
            oauth_client: match (&self.cred.client_id, &self.cred.client_secret) {
                (Some(id), Some(s)) => Some(OAuthClient { client_id: id.clone(), client_secret: s.clone() }),
                _ => None,
            },
            config,
        })
        .unwrap()
    }

    fn advance_to(&self, at: i64) {
        let now = self.clock.now_ms();
        if at > now {
            self.clock.set(at);
            self.sim.clock().advance(Duration::from_millis((at - now) as u64));
        }
    }

    async fn state(&self) -> ConnectionState {
        self.store.get_connection(&self.conn).await.unwrap().unwrap().state
    }

    async fn alerts(&self) -> Vec<(String, String)> {
        self.store.list_alerts(Some(&self.conn), true, 100).await.unwrap().into_iter().map(|a| (a.kind, a.text)).collect()
    }

    async fn events(&self) -> Vec<String> {
        let pull = Pull { after: 0, limit: 100, connection_id: Some(self.conn.clone()), now: self.clock.now_ms() };
        self.store.pull_events(&pull).await.unwrap().into_iter().map(|e| e.kind).collect()
    }

    fn ticket(&self, subject: &str) -> String {
        let t = self.sim.create_ticket(self.account, TicketSpec { subject: Some(subject.into()), ..Default::default() }).unwrap();
        t["id"].as_u64().map(|n| n.to_string()).or_else(|| t["id"].as_str().map(str::to_string)).expect("ticket id")
    }
}

/// A placeholder replaced right after construction (a manager needs the rig's parts).
fn dummy() -> CredentialManager {
    let adapter = runtime().get("zendesk").unwrap();
    let d = adapter.descriptor().clone();
    // Built synchronously over a store that is never touched.
    static STORE: OnceLock<SharedStore> = OnceLock::new();
    let store = STORE
        .get_or_init(|| {
            std::thread::spawn(|| {
                tokio::runtime::Runtime::new()
                    .unwrap()
                    .block_on(store::open(temp_db("dummy").to_str().unwrap(), SecretKey::from_bytes([1; 32])))
                    .unwrap()
            })
            .join()
            .unwrap()
        })
        .clone();
    CredentialManager::new(ManagerParts {
        store,
        clock: Arc::new(ManualClock::new(T0)),
        driver: Driver::new(DriverConfig::default()).unwrap(),
        adapter,
        base_url: String::new(),
        connection: Connection { id: String::new(), plan: d.default_plan, agent_id: None, settings: vec![] },
        oauth_client: None,
        config: AuthConfig::default(),
    })
    .unwrap()
}

fn oauth(access_ttl: u64, scopes: Option<Vec<&str>>) -> CredentialSpec {
    CredentialSpec {
        kind: Some(CredKind::Oauth),
        access_ttl_secs: Some(access_ttl),
        refresh_ttl_secs: Some(30 * 86_400),
        scopes: scopes.map(|s| s.into_iter().map(str::to_string).collect()),
        ..Default::default()
    }
}

/// Issue #5: a Zendesk OAuth token expiring at 02:00, refresh working: checked every 5 minutes
/// over 8 hours (four lifetimes), no request fails; each refresh rotates the pair and the sim
/// refuses the spent refresh token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zendesk_oauth_refreshes_before_expiry_with_rotation() {
    let rig = Rig::new(Platform::Zendesk, oauth(2 * 3600, None), None).await;
    assert_eq!(rig.mgr.start().await.unwrap(), StartReport::Clean);
    assert_eq!(rig.cred.expires_at_ms, Some(T0 + 2 * H), "expires at 02:00");
    assert_eq!(rig.mgr.refresh_due_at(), Some(T0 + 2 * H * 8 / 10), "due at 80%: 01:36");
    let client = OAuthClient { client_id: rig.cred.client_id.clone().unwrap(), client_secret: rig.cred.client_secret.clone().unwrap() };
    let http = reqwest::Client::new();
    let (mut ok, mut failed, mut refreshes) = (0, 0, 0);
    let mut spent: Vec<String> = Vec::new();
    let mut t = T0;
    while t <= T0 + 8 * H {
        rig.advance_to(t);
        let before = rig.mgr.credential().unwrap();
        if let TickOutcome::Refresh(r) = rig.mgr.tick().await.unwrap() {
            assert!(matches!(r, RefreshOutcome::Refreshed(_)), "{r:?}");
            refreshes += 1;
            if let CredentialSecret::OAuth { refresh_token: Some(old), .. } = before.secret {
                spent.push(old);
            }
        }
        match rig.mgr.execute(&Operation::WhoAmI, None).await.unwrap() {
            Ok(Outcome::Identity(_)) => ok += 1,
            other => {
                failed += 1;
                eprintln!("failed at +{} min: {other:?}", (t - T0) / 60_000);
            }
        }
        t += 5 * 60_000;
    }
    println!("8 h of 2 h tokens: {ok} requests ok, {failed} failed, {refreshes} refreshes");
    assert_eq!(failed, 0);
    assert!(refreshes >= 4, "{refreshes}");
    assert_eq!(rig.state().await, ConnectionState::PendingProbe, "never suspended");
    assert!(rig.alerts().await.is_empty());
    // Rotation: every spent refresh token is refused by the platform.
    for old in &spent {
        let e = deskgate::auth::refresh::refresh(&http, &rig.sim.base_url(), "/oauth/tokens", &client, old).await.unwrap_err();
        assert!(matches!(&e, RefreshError::Definitive { code, .. } if code == "invalid_grant"), "{e:?}");
    }
    // Single flight: concurrent callers share one refresh.
    let v = rig.mgr.credential().unwrap().version;
    let (a, b) = tokio::join!(rig.mgr.refresh(Some(v)), rig.mgr.refresh(Some(v)));
    let outcomes = [a.unwrap(), b.unwrap()];
    assert_eq!(outcomes.iter().filter(|o| matches!(o, RefreshOutcome::Refreshed(_))).count(), 1, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| matches!(o, RefreshOutcome::AlreadyRefreshed(_))).count(), 1, "{outcomes:?}");
}

/// What [`busy_rotation`] saw: requests answered, requests refused with a 401, refreshes.
#[derive(Debug)]
struct BusyRotation {
    ok: u64,
    refused: u64,
    refreshes: u32,
}

/// Eight tasks send get-ticket back to back through the manager's target while a two-hour
/// Zendesk token is refreshed (and its pair rotated) over eight hours of clock: every 10 minutes
/// the clocks move on, the manager ticks, and at least 24 more requests are answered before the
/// next step. The sim adds 15 ms to every request, the token request included, so each refresh
/// meets requests in flight and requests that would leave while the platform rotates the pair.
async fn busy_rotation(config: AuthConfig) -> BusyRotation {
    use std::sync::atomic::AtomicBool;
    let rig = Rig::new(Platform::Zendesk, oauth(2 * 3600, None), None).await;
    let mgr = rig.manager_with(config);
    mgr.start().await.unwrap();
    let ticket = rig.ticket("busy");
    // Only the rotation may refuse a request here: no rate limit in the way.
    rig.sim
        .set_limits(rig.account, deskgate_sim::LimitOverrides { per_minute: Some(1_000_000), ..Default::default() })
        .unwrap();
    rig.sim.set_faults(FaultConfig { latency_ms: 15, ..Default::default() }).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(0u64);
    let done_tx = Arc::new(done_tx);
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let driver = Driver::new(DriverConfig::default()).unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (mgr, adapter, driver, ticket) = (mgr.clone(), rig.adapter.clone(), driver.clone(), ticket.clone());
            let (stop, done_tx, refused) = (stop.clone(), done_tx.clone(), refused.clone());
            tokio::spawn(async move {
                let op = Operation::GetTicket(ticket);
                while !stop.load(Ordering::Relaxed) {
                    let target = mgr.target().expect("credential loaded");
                    match driver.execute(&adapter, &target, &op, None, &mut deskgate::driver::NoHooks).await.unwrap() {
                        Ok(Outcome::Ticket(_)) => {}
                        Err(Failure::Unauthenticated(_)) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        other => panic!("unexpected answer: {other:?}"),
                    }
                    done_tx.send_modify(|n| *n += 1);
                }
            })
        })
        .collect();
    let mut refreshes = 0;
    let mut t = T0;
    while t <= T0 + 8 * H {
        rig.advance_to(t);
        if let TickOutcome::Refresh(r) = mgr.tick().await.unwrap() {
            assert!(matches!(r, RefreshOutcome::Refreshed(_)), "{r:?}");
            refreshes += 1;
        }
        let goal = *done_rx.borrow() + 24;
        done_rx.wait_for(|n| *n >= goal).await.unwrap();
        t += 10 * 60_000;
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    // The platform's own log agrees with what the tasks saw.
    let logged_401 = rig.sim.requests(Default::default()).iter().filter(|r| r.status == 401).count() as u64;
    let refused = refused.load(Ordering::Relaxed);
    assert_eq!(logged_401, refused);
    BusyRotation { ok: *done_rx.borrow() - refused, refused, refreshes }
}

/// Issue #5: "zero failed requests across the expiry" with requests in flight. A refresh waits
/// for the connection's requests in flight and holds new ones until the rotated pair is stored
/// (`AuthConfig::refresh_drain`), so none of them goes out with a token the platform has just
/// deleted. The same day with the fence's wait set to zero shows the race the fence closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_across_token_rotations_are_never_refused() {
    let fenced = busy_rotation(AuthConfig { owner: "replica-1".into(), ..AuthConfig::default() }).await;
    println!("fenced: {fenced:?}");
    assert!(fenced.refreshes >= 4, "{fenced:?}");
    assert!(fenced.ok >= 24 * 48, "{fenced:?}");
    assert_eq!(fenced.refused, 0, "requests refused across a rotation: {fenced:?}");

    let unfenced =
        busy_rotation(AuthConfig { owner: "replica-1".into(), refresh_drain: Duration::ZERO, ..AuthConfig::default() }).await;
    println!("without waiting for requests in flight: {unfenced:?}");
    assert!(unfenced.refreshes >= 4, "{unfenced:?}");
    assert!(unfenced.refused > 0, "the race should show without the fence: {unfenced:?}");
}

async fn drain(rig: &Rig, worker: &OutboxWorker, gate: &deskgate::budget::BudgetGate) -> PassReport {
    let mut total = PassReport::default();
    for _ in 0..200 {
        let w = worker.clone();
        let mut task = tokio::spawn(async move { w.run_once().await });
        let rep = loop {
            tokio::select! {
                r = &mut task => break r.unwrap().unwrap(),
                () = tokio::time::sleep(Duration::from_millis(3)) => {
                    let snap = gate.snapshot();
                    if snap.waiting.write + snap.waiting.write_retry + snap.waiting.read > 0 {
                        if let Some(at) = snap.next_wake { rig.advance_to(at); }
                        gate.tick();
                    }
                }
            }
        };
        total.merge(&rep);
        if rep.claimed == 0 {
            match worker.next_due_at().await.unwrap() {
                Some(at) if at <= rig.clock.now_ms() + 60_000 => rig.advance_to(at.max(rig.clock.now_ms() + 1)),
                _ => return total,
            }
        }
    }
    total
}

/// Issue #5: the refresh token is revoked at 01:30; the refresh due at 01:36 is refused
/// (`invalid_grant`): one attempt, a `refresh-failed` alert, suspension, nothing dropped. At
/// 08:00 an operator re-authenticates: validated, resumed, the queued replies land exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_refresh_token_alerts_suspends_and_resumes_on_reauth() {
    let rig = Rig::new(Platform::Zendesk, oauth(2 * 3600, None), None).await;
    rig.mgr.start().await.unwrap();
    assert!(rig.mgr.probe().await.unwrap().passed);
    assert_eq!(rig.state().await, ConnectionState::Live);
    let d = rig.adapter.descriptor();
    let gate = BudgetLayer::new(Arc::new(rig.clock.clone()), BudgetConfig::default())
        .connect(&rig.mgr.target().unwrap().connection, d, None)
        .unwrap();
    let config = OutboxConfig { lease_for: Duration::from_secs(900), ..OutboxConfig::default() };
    let worker = OutboxWorker::new(WorkerParts {
        store: rig.store.clone(),
        clock: Arc::new(rig.clock.clone()),
        driver: Driver::new(DriverConfig::default()).unwrap(),
        adapter: rig.adapter.clone(),
        target: rig.mgr.target().unwrap(),
        gate: gate.clone(),
        owner: "replica-1".into(),
        config: config.clone(),
        events: None,
        auth_hook: Some(rig.mgr.auth_hook()),
    });
    rig.mgr.attach_worker(worker.clone());
    let outbox = Outbox::new(rig.store.clone(), Arc::new(rig.clock.clone()), config);

    rig.advance_to(T0 + 90 * 60_000);
    rig.sim.revoke_credential(rig.account, rig.cred.id).unwrap();
    let tickets: Vec<String> = (0..3).map(|i| rig.ticket(&format!("Order {i}"))).collect();
    let mut ids = Vec::new();
    for (i, t) in tickets.iter().enumerate() {
        ids.push(outbox.submit(&rig.conn, t, &Action::Reply(format!("Order {i} ships today.")), None).await.unwrap().id);
    }
    rig.advance_to(T0 + 96 * 60_000);
    let before = rig.sim.requests(deskgate_sim::RequestFilter { account_id: None, since_seq: None }).len();
    let out = rig.mgr.tick().await.unwrap();
    let sent = rig.sim.requests(deskgate_sim::RequestFilter { account_id: None, since_seq: None }).len() - before;
    assert_eq!(out, TickOutcome::Refresh(RefreshOutcome::Suspended));
    assert!(sent <= 1, "one refresh attempt, {sent} requests");
    let alerts = rig.alerts().await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].0, "refresh-failed");
    assert!(matches!(rig.state().await, ConnectionState::Suspended { ref kind, .. } if kind == "reauth"));
    assert!(rig.events().await.contains(&"connection.suspended".to_string()));

    // New tickets keep arriving while suspended: their webhooks are taken (200) and held from
    // the app, durably, until the connection is fixed.
    let hooks = webhook_endpoint(&rig).await;
    rig.sim
        .set_webhook(rig.account, Some(deskgate_sim::WebhookTarget { url: format!("{hooks}/webhooks/{}", rig.conn), secret: HOOK_SECRET.into() }))
        .unwrap();
    let arrived: Vec<String> = (0..2).map(|i| rig.ticket(&format!("New while suspended {i}"))).collect();
    let start = std::time::Instant::now();
    while !arrived.iter().all(|t| rig.sim.webhook_deliveries().iter().any(|d| d.status == Some(200) && d.ticket_id.to_string() == *t)) {
        assert!(start.elapsed() < Duration::from_secs(30), "webhooks not taken: {:?}", rig.sim.webhook_deliveries());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ticket_events(&rig, &arrived).await.is_empty(), "held from the app while suspended");
    assert!(rig.store.inbox_pending(&rig.conn).await.unwrap() >= arrived.len() as u64, "kept durably");

    // Suspended: the worker claims nothing; every reply stays pending.
    rig.advance_to(T0 + 2 * H);
    assert_eq!(drain(&rig, &worker, &gate).await.claimed, 0);
    for id in &ids {
        assert_eq!(outbox.get(*id).await.unwrap().unwrap().state, "pending");
    }

    // 08:00: re-authenticate.
    rig.advance_to(T0 + 8 * H);
    let fresh = rig.sim.create_credential(rig.account, CredentialSpec { agent_id: Some(rig.agent), ..oauth(2 * 3600, None) }).unwrap();
    let report = rig.mgr.update_credentials(secret_of(Platform::Zendesk, &fresh), fresh.expires_at_ms).await.unwrap();
    assert!(report.passed, "{report:?}");
    assert_eq!(rig.state().await, ConnectionState::Live);
    assert!(rig.events().await.contains(&"connection.resumed".to_string()));
    let rep = drain(&rig, &worker, &gate).await;
    println!("re-auth at 08:00: drained {rep:?}");
    for (id, t) in ids.iter().zip(&tickets) {
        let rec = outbox.get(*id).await.unwrap().unwrap();
        assert_eq!(rec.state, "confirmed", "{rec:?}");
        let replies = rig
            .sim
            .writes(rig.account, Some(t.parse().unwrap()))
            .unwrap()
            .into_iter()
            .filter(|w| matches!(w.kind, WriteKind::Reply { .. }))
            .count();
        assert_eq!(replies, 1, "ticket {t}");
    }
    // The tickets that arrived while suspended reach the app now, each once.
    let delivered = ticket_events(&rig, &arrived).await;
    for t in &arrived {
        assert_eq!(delivered.iter().filter(|e| e.ticket_id == *t).count(), 1, "ticket {t}: {delivered:?}");
    }
}

const HOOK_SECRET: &str = "auth-test-zendesk-webhook-secret";

/// The gateway's API (webhooks included) over the rig's store and clock, on 127.0.0.1, with the
/// connection's webhook secret set. Returns its base URL.
async fn webhook_endpoint(rig: &Rig) -> String {
    let state = deskgate::api::AppState::new(
        rig.store.clone(),
        Arc::new(rig.clock.clone()),
        deskgate::config::Secret::new("auth-test-api-token-0123456789abcdef"),
        runtime().adapters().cloned(),
    );
    state.webhook_routes().store_secret(&rig.conn, Some(HOOK_SECRET.as_bytes()), false, rig.clock.now_ms()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, deskgate::api::app(state)).await.unwrap() });
    format!("http://{addr}")
}

/// The events the app can pull now about `tickets`.
async fn ticket_events(rig: &Rig, tickets: &[String]) -> Vec<deskgate::store::InboxEvent> {
    let pull = Pull { after: 0, limit: 1000, connection_id: Some(rig.conn.clone()), now: rig.clock.now_ms() };
    rig.store.pull_events(&pull).await.unwrap().into_iter().filter(|e| tickets.contains(&e.ticket_id)).collect()
}

/// Issue #5: a transient refresh failure (the token endpoint answers 503 while the API works) is
/// retried with a growing backoff (5 s doubling, on the manual clock) while the token lives; when
/// the endpoint recovers the refresh succeeds and nobody is alerted. When it never recovers, the
/// retries go on until the next one would come after the token's expiry: then one
/// `refresh-failed` alert and a clean suspension, without ever sending the expired token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_refresh_failures_retry_with_backoff_then_alert_when_time_runs_out() {
    let rig = Rig::new(Platform::Zendesk, oauth(2 * 3600, None), None).await;
    rig.mgr.start().await.unwrap();
    assert!(rig.mgr.probe().await.unwrap().passed);
    let tokens = || rig.sim.requests(deskgate_sim::RequestFilter::default()).iter().filter(|r| r.path.starts_with("/oauth/tokens")).count();

    // Recovers after three failures.
    rig.sim.set_faults(FaultConfig { token_error_next: 3, error_status: 503, ..Default::default() }).unwrap();
    let due = rig.mgr.refresh_due_at().unwrap();
    rig.advance_to(due);
    let mut delays = Vec::new();
    for _ in 0..3 {
        let now = rig.clock.now_ms();
        let TickOutcome::Refresh(RefreshOutcome::RetryAt(at)) = rig.mgr.tick().await.unwrap() else { panic!("a transient failure is retried") };
        delays.push(at - now);
        assert_eq!(rig.mgr.next_due_at(), Some(at));
        rig.advance_to(at - 1);
        assert_eq!(rig.mgr.tick().await.unwrap(), TickOutcome::Idle, "not before its backoff");
        rig.advance_to(at);
    }
    assert_eq!(delays, vec![5_000, 10_000, 20_000], "growing backoff");
    let TickOutcome::Refresh(RefreshOutcome::Refreshed(_)) = rig.mgr.tick().await.unwrap() else { panic!("recovered") };
    assert_eq!(tokens(), 4, "three refused, one answered");
    assert!(rig.alerts().await.is_empty(), "a recovered refresh alerts nobody");
    assert_eq!(rig.state().await, ConnectionState::Live);
    assert!(matches!(rig.mgr.execute(&Operation::WhoAmI, None).await.unwrap(), Ok(Outcome::Identity(_))));
    println!("token endpoint down for 3 attempts: retried after {delays:?} ms, then refreshed; no alert");

    // Never recovers: retried while the token lives, then alerted and suspended.
    rig.sim.set_faults(FaultConfig { token_error_next: u32::MAX, error_status: 503, ..Default::default() }).unwrap();
    let expires = rig.mgr.credential().unwrap().expires_at.unwrap();
    rig.advance_to(rig.mgr.refresh_due_at().unwrap());
    let before = tokens();
    let mut delays = Vec::new();
    let outcome = loop {
        assert!(rig.clock.now_ms() < expires, "never past the expiry");
        let now = rig.clock.now_ms();
        match rig.mgr.tick().await.unwrap() {
            TickOutcome::Refresh(RefreshOutcome::RetryAt(at)) => {
                assert!(at < expires, "a retry is scheduled only while the token lives");
                delays.push(at - now);
                rig.advance_to(at);
            }
            other => break other,
        }
    };
    assert_eq!(outcome, TickOutcome::Refresh(RefreshOutcome::Suspended));
    assert!(delays.windows(2).all(|w| w[1] >= w[0]) && delays.last() == Some(&300_000), "doubling, capped at 5 min: {delays:?}");
    assert_eq!(tokens() - before, delays.len() + 1, "one request per attempt");
    let alerts = rig.alerts().await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].0, "refresh-failed");
    assert!(alerts[0].1.contains("before it expired") && alerts[0].1.contains("HTTP 503"), "{}", alerts[0].1);
    assert!(matches!(rig.state().await, ConnectionState::Suspended { ref kind, .. } if kind == "reauth"));
    assert!(rig.events().await.contains(&"connection.suspended".to_string()));
    assert_eq!(rig.mgr.tick().await.unwrap(), TickOutcome::Inactive, "suspended: nothing more is tried");
    println!(
        "token endpoint down for good: {} attempts over {} s before the expiry, then refresh-failed and suspension",
        delays.len() + 1,
        delays.iter().sum::<i64>() / 1000
    );
}

/// Issue #5: an API key rotated on the platform is found by the next 4-hourly health check:
/// `credential-invalid` alert, suspension, then recovery with the new key. Zendesk and Freshdesk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_key_is_detected_by_the_health_check() {
    for platform in [Platform::Zendesk, Platform::Freshdesk] {
        let rig = Rig::new(platform, CredentialSpec::default(), None).await;
        rig.mgr.start().await.unwrap();
        assert!(rig.mgr.probe().await.unwrap().passed);
        rig.advance_to(T0 + H);
        assert_eq!(rig.mgr.tick().await.unwrap(), TickOutcome::Idle);
        rig.advance_to(T0 + 4 * H);
        assert_eq!(rig.mgr.tick().await.unwrap(), TickOutcome::HealthCheck(true));
        rig.advance_to(T0 + 5 * H);
        let rotated = rig.sim.rotate_credential(rig.account, rig.cred.id).unwrap();
        rig.advance_to(T0 + 7 * H);
        assert_eq!(rig.mgr.tick().await.unwrap(), TickOutcome::Idle, "not due before 08:00");
        rig.advance_to(T0 + 8 * H);
        assert_eq!(rig.mgr.tick().await.unwrap(), TickOutcome::HealthCheck(false));
        let alerts = rig.alerts().await;
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].0, "credential-invalid");
        assert!(matches!(rig.state().await, ConnectionState::Suspended { .. }));
        // The old key is refused when offered again; the new one resumes.
        let bad = rig.mgr.update_credentials(secret_of(platform, &rig.cred), None).await;
        assert!(bad.is_err(), "the rotated-away key is rejected");
        let report = rig.mgr.update_credentials(secret_of(platform, &rotated), None).await.unwrap();
        assert!(report.passed);
        assert_eq!(rig.state().await, ConnectionState::Live);
        assert_eq!(rig.events().await, vec!["connection.suspended", "connection.resumed"]);
        println!("{platform}: rotation at 05:00 detected by the 08:00 health check; resumed");
    }
}

/// Issue #5: a scope removed mid-operation: the write gets a 403 classified re-scope, one
/// `scope-missing` alert names the scope, no refresh, no suspension, and reads carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_scope_is_rescope_not_reauth() {
    let rig = Rig::new(Platform::Zendesk, oauth(2 * 3600, Some(vec!["read", "write"])), None).await;
    rig.mgr.start().await.unwrap();
    assert!(rig.mgr.probe().await.unwrap().passed);
    let t = rig.ticket("Refund");
    let set = Operation::Apply(ApplyAction { ticket_id: t.clone(), action: Action::SetStatus(TicketStatus::Pending) });
    assert!(matches!(rig.mgr.execute(&set, None).await.unwrap(), Ok(_)));
    rig.sim.update_scopes(rig.account, rig.cred.id, ScopePatch { remove: vec!["write".into()], ..Default::default() }).unwrap();
    let v = rig.mgr.credential().unwrap().version;
    let r = rig.mgr.execute(&set, None).await.unwrap();
    let Err(Failure::Forbidden(d)) = r else { panic!("{r:?}") };
    assert_eq!(rig.mgr.credential().unwrap().version, v, "no refresh on a 403");
    let alerts = rig.alerts().await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].0, "scope-missing");
    assert!(alerts[0].1.contains(&d.missing), "{} names {}", alerts[0].1, d.missing);
    assert_eq!(rig.state().await, ConnectionState::Live);
    let read = rig.mgr.execute(&Operation::GetTicket(t.clone()), None).await.unwrap();
    assert!(matches!(read, Ok(Outcome::Ticket(_))), "{read:?}");
    // A second 403 on the same permission does not alert again.
    let _ = rig.mgr.execute(&set, None).await.unwrap();
    assert_eq!(rig.alerts().await.len(), 1);
    let report = rig.store.get_connection(&rig.conn).await.unwrap().unwrap().probe_report.unwrap();
    assert_eq!(report["runtime_forbidden"][0]["missing"], d.missing.as_str());
    println!("403 → re-scope: missing {:?}, remediation: {}", d.missing, d.remediation);
}

/// The rig's outbox, worked by a worker under the manager's 401/403 policy.
fn outbox_of(rig: &Rig) -> (Outbox, OutboxWorker, deskgate::budget::BudgetGate) {
    let gate = BudgetLayer::new(Arc::new(rig.clock.clone()), BudgetConfig::default())
        .connect(&rig.mgr.target().unwrap().connection, rig.adapter.descriptor(), None)
        .unwrap();
    let config = OutboxConfig { lease_for: Duration::from_secs(900), ..OutboxConfig::default() };
    let worker = OutboxWorker::new(WorkerParts {
        store: rig.store.clone(),
        clock: Arc::new(rig.clock.clone()),
        driver: Driver::new(DriverConfig::default()).unwrap(),
        adapter: rig.adapter.clone(),
        target: rig.mgr.target().unwrap(),
        gate: gate.clone(),
        owner: "replica-1".into(),
        config: config.clone(),
        events: None,
        auth_hook: Some(rig.mgr.auth_hook()),
    });
    rig.mgr.attach_worker(worker.clone());
    (Outbox::new(rig.store.clone(), Arc::new(rig.clock.clone()), config), worker, gate)
}

/// Issue #5: a scope removed mid-operation, through the outbox (Intercom: `write_tags` taken off
/// the token). A resolution whose reply and close land while its tags are refused is reported as
/// a divergence (alert naming the scope and how to grant it); the 403 is re-scope, never
/// re-authentication; a reply, which does not need the scope, is confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_scope_mid_operation_reports_divergence_and_other_writes_carry_on() {
    let rig = Rig::new(Platform::Intercom, CredentialSpec::default(), None).await;
    rig.mgr.start().await.unwrap();
    assert!(rig.mgr.probe().await.unwrap().passed);
    let (outbox, worker, gate) = outbox_of(&rig);
    let before = rig.ticket("Warm-up");
    let warm = outbox.submit(&rig.conn, &before, &Action::AddTags(vec!["vip".into()]), None).await.unwrap().id;
    drain(&rig, &worker, &gate).await;
    assert_eq!(outbox.get(warm).await.unwrap().unwrap().state, "confirmed", "tags work before the removal");

    rig.sim.update_scopes(rig.account, rig.cred.id, ScopePatch { remove: vec!["write_tags".into()], ..Default::default() }).unwrap();
    let v = rig.mgr.credential().unwrap().version;
    let (t1, t2) = (rig.ticket("Refund"), rig.ticket("Question"));
    let resolve = Action::Resolve(deskgate::bindings::Resolution {
        reply: "Refunded.".into(),
        status: TicketStatus::Solved,
        tags: vec!["refund".into()],
        assignee: None,
    });
    let r = outbox.submit(&rig.conn, &t1, &resolve, None).await.unwrap().id;
    let q = outbox.submit(&rig.conn, &t2, &Action::Reply("It is on its way.".into()), None).await.unwrap().id;
    let rep = drain(&rig, &worker, &gate).await;
    println!("after the scope removal: {rep:?}");
    let rec = outbox.get(r).await.unwrap().unwrap();
    assert_eq!(rec.state, "diverged", "{rec:?}");
    let result = rec.result.clone().unwrap();
    assert_eq!(result["failure"]["missing"], "write_tags", "{result}");
    assert_eq!(outbox.get(q).await.unwrap().unwrap().state, "confirmed", "a write that does not need the scope carries on");
    let alerts = rig.alerts().await;
    let divergence: Vec<_> = alerts.iter().filter(|a| a.0 == "divergence").collect();
    assert_eq!(divergence.len(), 1, "{alerts:?}");
    assert!(divergence[0].1.contains("write_tags") && divergence[0].1.contains(&t1), "{}", divergence[0].1);
    assert!(divergence[0].1.contains("Developer Hub"), "says how to grant it: {}", divergence[0].1);
    assert!(alerts.iter().all(|a| a.0 != "credential-invalid" && a.0 != "refresh-failed"), "re-scope, not re-auth: {alerts:?}");
    assert_eq!(rig.mgr.credential().unwrap().version, v, "no refresh on a 403");
    assert_eq!(rig.state().await, ConnectionState::Live);
    println!("divergence: {}", divergence[0].1);
}

/// Issue #5: connecting with a credential that cannot set status is refused go-live on each
/// platform, with the platform's remediation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_live_refused_without_write_status_permission() {
    let cases: [(Platform, CredentialSpec, Option<&str>); 3] = [
        (Platform::Zendesk, CredentialSpec::default(), Some("edit_tickets")),
        (Platform::Freshdesk, CredentialSpec::default(), Some("edit_ticket_properties")),
        (
            Platform::Intercom,
            CredentialSpec {
                scopes: Some(["read_conversations", "read_tags", "write_tags", "read_admins", "read_users", "write_users"].map(String::from).to_vec()),
                ..Default::default()
            },
            None,
        ),
    ];
    for (platform, spec, privilege) in cases {
        let rig = Rig::new(platform, spec, privilege).await;
        rig.mgr.start().await.unwrap();
        let report = rig.mgr.probe().await.unwrap();
        assert!(!report.passed, "{platform}: {report:?}");
        let status = report.capabilities.iter().find(|e| e.capability == "set-status").unwrap();
        assert!(!status.granted, "{platform}: {status:?}");
        // The platform's exact remediation (platforms.md): Zendesk's role page and its 'Edit ticket
        // properties' checkbox, Freshdesk's 'Edit ticket properties' privilege, Intercom's scope.
        let (missing, remediation) = match platform {
            Platform::Zendesk => (
                "ticket update (agent role)",
                "In Zendesk Admin Center > People > Team > Roles, edit the role of the agent this connection acts as and give it \
                 permission to edit and comment on tickets: enable 'Edit ticket properties' and set 'Comment access' to 'Public \
                 and private' (or connect with an admin's credential).",
            ),
            Platform::Freshdesk => (
                "Edit ticket properties",
                "In Freshdesk Admin > Team > Roles (older accounts: Admin > Agents > Roles), edit the role of the agent who owns \
                 the API key and allow 'Edit ticket properties' (and a ticket scope that covers the ticket), or use the API key \
                 of an agent whose role has it",
            ),
            Platform::Intercom => (
                "write_conversations",
                "In the Intercom Developer Hub open your app > Configure > Authentication, tick the \"write_conversations\" \
                 permission and save; then have a workspace admin re-install / re-authorize the app so its access token carries \
                 the new permission (public apps: permission changes are reviewed on publication).",
            ),
        };
        assert_eq!(status.missing.as_deref(), Some(missing), "{platform}: {status:?}");
        assert_eq!(status.remediation.as_deref(), Some(remediation), "{platform}: {status:?}");
        assert_eq!(rig.state().await, ConnectionState::PendingProbe, "{platform}");
        let stored = rig.store.get_connection(&rig.conn).await.unwrap().unwrap().probe_report.unwrap();
        assert_eq!(stored["passed"], false);
        println!("{platform}: go-live refused:\n{}", report.explain());
    }
}

/// Issue #5: the scope probe proves write capabilities on a probe ticket it creates and deletes:
/// after a probe against each simulator (all capabilities granted, so every write step runs), no
/// probe ticket is left on the platform. Tickets created before and after the probe bracket the
/// ids it could have used; none of those is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scope_probe_leaves_no_ticket_behind() {
    for platform in [Platform::Zendesk, Platform::Freshdesk, Platform::Intercom] {
        let rig = Rig::new(platform, CredentialSpec::default(), None).await;
        rig.mgr.start().await.unwrap();
        let first: u64 = rig.ticket("Before the probe").parse().unwrap();
        let seq = rig.sim.requests(deskgate_sim::RequestFilter::default()).last().map_or(0, |r| r.seq);
        let report = rig.mgr.probe().await.unwrap();
        assert!(report.passed, "{platform}: {report:?}");
        let last: u64 = rig.ticket("After the probe").parse().unwrap();
        let probe_requests = rig.sim.requests(deskgate_sim::RequestFilter { account_id: None, since_seq: Some(seq) });
        let created = probe_requests.iter().filter(|r| r.method == "POST" && r.status < 300 && !r.path.contains("/tags")).count();
        let deleted = probe_requests.iter().filter(|r| r.method == "DELETE" && r.status < 300).count();
        assert!(last > first + 1 && deleted >= 1, "{platform}: the probe created a ticket and deleted it: {probe_requests:?}");
        let left: Vec<(u64, serde_json::Value)> =
            (first + 1..last).filter_map(|id| rig.sim.ticket(rig.account, id).ok().map(|t| (id, t))).collect();
        assert!(left.is_empty(), "{platform}: probe tickets left behind: {left:?}");
        assert!(rig.sim.ticket(rig.account, first).is_ok() && rig.sim.ticket(rig.account, last).is_ok(), "{platform}: the bracket works");
        println!("{platform}: probe made {created} creating requests and {deleted} deletes; no probe ticket left (ids {}..{last})", first + 1);
    }
}

/// Issue #5, at the credential manager's level: the three states a crash around a refresh can
/// leave in the store. The real kill -9 of `deskgate serve` at the two instants that matter is in
/// `tests/auth_crash.rs`. Crash between the platform's answer and the write of the rotated pair: at
/// "restart" (a new manager over the same store) the marker is found, the stored token is dead
/// on the first check, an alert is raised and the connection suspended. With the marker but the
/// pair persisted (or the refresh never sent), the connection just works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_during_refresh_is_detected_at_startup() {
    // Lost answer.
    let rig = Rig::new(Platform::Zendesk, oauth(2 * 3600, None), None).await;
    rig.store.set_connection_state(&rig.conn, &ConnectionState::Live, T0).await.unwrap();
    rig.advance_to(T0 + 96 * 60_000);
    let now = rig.clock.now_ms();
    let c = rig.store.get_credential(&rig.conn).await.unwrap().unwrap();
    rig.store
        .begin_refresh(&rig.conn, &RefreshClaim { owner: "replica-1".into(), expected_version: c.version, now, stale_before: now - 60_000 })
        .await
        .unwrap();
    let client = OAuthClient { client_id: rig.cred.client_id.clone().unwrap(), client_secret: rig.cred.client_secret.clone().unwrap() };
    let pair = deskgate::auth::refresh::refresh(&reqwest::Client::new(), &rig.sim.base_url(), "/oauth/tokens", &client, rig.cred.refresh_token.as_ref().unwrap())
        .await
        .unwrap();
    drop(pair); // the process "dies" here
    let restarted = rig.manager();
    assert_eq!(restarted.start().await.unwrap(), StartReport::SuspendedDeadToken);
    let alerts = rig.alerts().await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].0, "credential-invalid");
    assert!(matches!(rig.state().await, ConnectionState::Suspended { .. }));

    // Marker written, request never answered: the stored token still works; marker cleared.
    let rig = Rig::new(Platform::Zendesk, oauth(2 * 3600, None), None).await;
    let c = rig.store.get_credential(&rig.conn).await.unwrap().unwrap();
    rig.store
        .begin_refresh(&rig.conn, &RefreshClaim { owner: "replica-1".into(), expected_version: c.version, now: T0, stale_before: T0 - 60_000 })
        .await
        .unwrap();
    let restarted = rig.manager();
    assert_eq!(restarted.start().await.unwrap(), StartReport::RecoveredMarker);
    assert!(rig.store.get_credential(&rig.conn).await.unwrap().unwrap().refresh_in_flight.is_none());
    assert!(matches!(restarted.execute(&Operation::WhoAmI, None).await.unwrap(), Ok(Outcome::Identity(_))));

    // Marker written and the new pair persisted: works after restart, and refreshes again later.
    let rig = Rig::new(Platform::Zendesk, oauth(2 * 3600, None), None).await;
    rig.advance_to(T0 + 96 * 60_000);
    let now = rig.clock.now_ms();
    let c = rig.store.get_credential(&rig.conn).await.unwrap().unwrap();
    let marked = rig
        .store
        .begin_refresh(&rig.conn, &RefreshClaim { owner: "replica-1".into(), expected_version: c.version, now, stale_before: now - 60_000 })
        .await
        .unwrap();
    let client = OAuthClient { client_id: rig.cred.client_id.clone().unwrap(), client_secret: rig.cred.client_secret.clone().unwrap() };
    let pair = deskgate::auth::refresh::refresh(&reqwest::Client::new(), &rig.sim.base_url(), "/oauth/tokens", &client, rig.cred.refresh_token.as_ref().unwrap())
        .await
        .unwrap();
    let secret = CredentialSecret::OAuth { access_token: pair.access_token.clone(), refresh_token: pair.refresh_token.clone(), client: None };
    rig.store
        .put_credential(&rig.conn, &secret, pair.expires_in.map(|s| now + s as i64 * 1000), Expect::Version(marked.version), now)
        .await
        .unwrap();
    let restarted = rig.manager();
    assert_eq!(restarted.start().await.unwrap(), StartReport::Clean);
    assert!(matches!(restarted.execute(&Operation::WhoAmI, None).await.unwrap(), Ok(Outcome::Identity(_))));
    assert!(rig.alerts().await.is_empty());
}

/// Issue #5: alerts reach the admin contact's webhook with a `text` field, retried after a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_delivered_with_text_and_retried() {
    let got: Arc<Mutex<Vec<serde_json::Value>>> = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(AtomicU32::new(0));
    let app = {
        let got = got.clone();
        let calls = calls.clone();
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
                let got = got.clone();
                let calls = calls.clone();
                async move {
                    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                        return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    got.lock().unwrap().push(body);
                    axum::http::StatusCode::OK
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let rig = Rig::new(Platform::Freshdesk, CredentialSpec::default(), None).await;
    rig.store
        .update_connection(&rig.conn, &ConnectionPatch { admin_contact_url: Some(Some(format!("http://{addr}/hook"))), ..Default::default() }, T0)
        .await
        .unwrap();
    rig.mgr.start().await.unwrap();
    rig.sim.revoke_credential(rig.account, rig.cred.id).unwrap();
    assert!(!rig.mgr.health_check().await.unwrap());
    let deliverer = AlertDeliverer::new(rig.store.clone(), Arc::new(rig.clock.clone()), AlertConfig::default()).unwrap();
    let first = deliverer.deliver_due().await.unwrap();
    assert_eq!((first.delivered, first.failed), (0, 1));
    assert_eq!(deliverer.deliver_due().await.unwrap().delivered, 0, "not due before the backoff");
    rig.advance_to(T0 + 10_000);
    let second = deliverer.deliver_due().await.unwrap();
    assert_eq!((second.delivered, second.failed), (1, 0));
    let body = got.lock().unwrap()[0].clone();
    assert_eq!(body["kind"], "credential-invalid");
    assert_eq!(body["connection"], rig.conn.as_str());
    assert!(body["text"].as_str().unwrap().contains("Re-authenticate"), "{body}");
    let stored = rig.store.list_alerts(Some(&rig.conn), true, 10).await.unwrap();
    assert!(stored[0].delivered_at.is_some() && stored[0].attempts == 2, "{stored:?}");
    println!("alert delivered on attempt {}: {}", stored[0].attempts, body["text"]);
    let _ = rig.platform;
}

/// Issue #5: at use time a 401 triggers one refresh and a replay; when the refresh is refused
/// too, the connection is suspended with one alert. A 401 on an API key suspends at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_refreshes_once_then_suspends() {
    let rig = Rig::new(Platform::Zendesk, oauth(2 * 3600, None), None).await;
    rig.mgr.start().await.unwrap();
    rig.advance_to(T0 + 10 * 60_000);
    rig.sim.expire_credential(rig.account, rig.cred.id).unwrap(); // expired early, refresh token alive
    let v = rig.mgr.credential().unwrap().version;
    let r = rig.mgr.execute(&Operation::WhoAmI, None).await.unwrap();
    assert!(matches!(r, Ok(Outcome::Identity(_))), "replayed after one refresh: {r:?}");
    assert_eq!(rig.mgr.credential().unwrap().version, v + 1, "exactly one refresh");
    assert!(rig.alerts().await.is_empty());

    // Both tokens dead: one refresh attempt, refused, suspended, one alert.
    let now_cred = rig.mgr.credential().unwrap();
    // Someone else spends the stored refresh token: the platform rotates and kills our pair.
    let CredentialSecret::OAuth { refresh_token: Some(rt), .. } = &now_cred.secret else { panic!() };
    let client = OAuthClient { client_id: rig.cred.client_id.clone().unwrap(), client_secret: rig.cred.client_secret.clone().unwrap() };
    deskgate::auth::refresh::refresh(&reqwest::Client::new(), &rig.sim.base_url(), "/oauth/tokens", &client, rt).await.unwrap();
    let r = rig.mgr.execute(&Operation::WhoAmI, None).await.unwrap();
    assert!(matches!(r, Err(Failure::Unauthenticated(_))), "{r:?}");
    assert_eq!(rig.mgr.credential().unwrap().version, now_cred.version, "nothing new stored");
    let alerts = rig.alerts().await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert!(matches!(rig.state().await, ConnectionState::Suspended { .. }));

    // An API key: a 401 suspends without any refresh.
    let rig = Rig::new(Platform::Freshdesk, CredentialSpec::default(), None).await;
    rig.mgr.start().await.unwrap();
    rig.sim.revoke_credential(rig.account, rig.cred.id).unwrap();
    let r = rig.mgr.execute(&Operation::WhoAmI, None).await.unwrap();
    assert!(matches!(r, Err(Failure::Unauthenticated(_))), "{r:?}");
    assert_eq!(rig.alerts().await.iter().map(|a| a.0.as_str()).collect::<Vec<_>>(), vec!["credential-invalid"]);
    assert!(matches!(rig.state().await, ConnectionState::Suspended { .. }));
}

/// A write sent with the old token returns its 401 after a refresh already replaced that token
/// (writes in flight race the refresh): the policy resends it with the new token instead of
/// judging the new token by it, so nothing refreshes twice and nothing is suspended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_about_a_replaced_token_resends_instead_of_suspending() {
    use deskgate::bindings::{UnauthenticatedDetail};
    use deskgate::outbox::{AuthFailure, AuthVerdict, credential_fingerprint};
    let rig = Rig::new(Platform::Zendesk, oauth(2 * 3600, None), None).await;
    rig.mgr.start().await.unwrap();
    let old = credential_fingerprint(&rig.mgr.target().unwrap().authorization.current());
    let v = rig.mgr.credential().unwrap().version;
    rig.advance_to(T0 + 10 * 60_000);
    rig.sim.expire_credential(rig.account, rig.cred.id).unwrap();
    // One 401 refreshes (the first write's, through the policy).
    assert!(rig.mgr.on_unauthenticated(Some(v)).await.unwrap());
    assert_eq!(rig.mgr.credential().unwrap().version, v + 1);
    let hook = rig.mgr.auth_hook();
    let failure = Failure::Unauthenticated(UnauthenticatedDetail { code: "invalid_token".into(), message: "expired".into() });
    let af = |sent_with| AuthFailure { connection_id: rig.conn.clone(), entry_id: 1, ticket_id: "1".into(), failure: failure.clone(), sent_with };
    // A second write, sent with the old token before the refresh, answers 401 now.
    assert_eq!(hook(&af(old)), AuthVerdict::Resend);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(rig.mgr.credential().unwrap().version, v + 1, "no second refresh");
    assert!(!matches!(rig.state().await, ConnectionState::Suspended { .. }), "not suspended");
    assert!(rig.alerts().await.is_empty());
    // A 401 about the current (just refreshed) token is the policy's business: a second 401
    // after a refresh suspends; the write goes again once the connection is live.
    let current = credential_fingerprint(&rig.mgr.target().unwrap().authorization.current());
    assert_ne!(current, old);
    assert_eq!(hook(&af(current)), AuthVerdict::Resend);
    for _ in 0..500 {
        if matches!(rig.state().await, ConnectionState::Suspended { .. }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(matches!(rig.state().await, ConnectionState::Suspended { .. }), "a second 401 after a refresh suspends");
}

/// Issue #5: a 401 on an outbox write keeps the action durably pending while the hook refreshes
/// the token once in the background; the replay (after the entry's backoff) lands the reply
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_401_waits_refreshes_and_replays() {
    let rig = Rig::new(Platform::Zendesk, oauth(2 * 3600, None), None).await;
    rig.mgr.start().await.unwrap();
    assert!(rig.mgr.probe().await.unwrap().passed);
    let gate = BudgetLayer::new(Arc::new(rig.clock.clone()), BudgetConfig::default())
        .connect(&rig.mgr.target().unwrap().connection, rig.adapter.descriptor(), None)
        .unwrap();
    let config = OutboxConfig { lease_for: Duration::from_secs(900), ..OutboxConfig::default() };
    let worker = OutboxWorker::new(WorkerParts {
        store: rig.store.clone(),
        clock: Arc::new(rig.clock.clone()),
        driver: Driver::new(DriverConfig::default()).unwrap(),
        adapter: rig.adapter.clone(),
        target: rig.mgr.target().unwrap(),
        gate: gate.clone(),
        owner: "replica-1".into(),
        config: config.clone(),
        events: None,
        auth_hook: Some(rig.mgr.auth_hook()),
    });
    rig.mgr.attach_worker(worker.clone());
    let outbox = Outbox::new(rig.store.clone(), Arc::new(rig.clock.clone()), config);
    let t = rig.ticket("Late parcel");
    rig.sim.expire_credential(rig.account, rig.cred.id).unwrap();
    let v = rig.mgr.credential().unwrap().version;
    let id = outbox.submit(&rig.conn, &t, &Action::Reply("It ships today.".into()), None).await.unwrap().id;
    let first = drain(&rig, &worker, &gate).await;
    assert_eq!(first.failed, 0, "{first:?}");
    // The background refresh is IO, not policy: wait for it to be stored.
    for _ in 0..500 {
        if rig.mgr.credential().unwrap().version > v {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(rig.mgr.credential().unwrap().version, v + 1, "one refresh");
    // Sent again after its backoff (a minute at most here), with the new token; never a fixed
    // wait for a connection that works.
    rig.advance_to(rig.clock.now_ms() + 60_000);
    let second = drain(&rig, &worker, &gate).await;
    let rec = outbox.get(id).await.unwrap().unwrap();
    assert_eq!(rec.state, "confirmed", "{rec:?} {second:?}");
    let replies = rig
        .sim
        .writes(rig.account, Some(t.parse().unwrap()))
        .unwrap()
        .into_iter()
        .filter(|w| matches!(w.kind, WriteKind::Reply { .. }))
        .count();
    assert_eq!(replies, 1);
    assert_eq!(rig.state().await, ConnectionState::Live);
    assert!(rig.alerts().await.is_empty());
}

/// An OAuth pair stored without its expiry (as `deskgate serve` stores one from deskgate.toml,
/// with its client) is refreshed once at the first tick to learn the lifetime, and from then on
/// at 80% of it, like a pair whose expiry was known from the start; a pair without a refresh
/// token cannot learn it and is health-checked like a key instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oauth_pair_of_unknown_expiry_is_refreshed_once_to_learn_its_lifetime() {
    let rig = Rig::new(Platform::Zendesk, oauth(2 * 3600, None), None).await;
    let client = store::OAuthClientSecret { client_id: rig.cred.client_id.clone().unwrap(), client_secret: rig.cred.client_secret.clone().unwrap() };
    let stored = CredentialSecret::OAuth { access_token: rig.cred.token.clone(), refresh_token: rig.cred.refresh_token.clone(), client: Some(client) };
    rig.store.put_credential(&rig.conn, &stored, None, Expect::Any, T0).await.unwrap();
    // No client given at construction: the one stored with the pair is used, as in serve.
    let mgr = CredentialManager::new(ManagerParts {
        store: rig.store.clone(),
        clock: Arc::new(rig.clock.clone()),
        driver: Driver::new(DriverConfig::default()).unwrap(),
        adapter: rig.adapter.clone(),
        base_url: rig.sim.base_url(),
        connection: Connection { id: rig.conn.clone(), plan: rig.adapter.descriptor().default_plan.clone(), agent_id: None, settings: vec![] },
        oauth_client: None,
        config: AuthConfig { owner: "replica-1".into(), ..AuthConfig::default() },
    })
    .unwrap();
    assert_eq!(mgr.start().await.unwrap(), StartReport::Clean);
    assert_eq!(mgr.refresh_due_at(), None, "nothing to schedule from");
    assert_eq!(mgr.next_due_at(), Some(T0), "due at once");
    rig.advance_to(T0 + 60_000);
    assert!(matches!(mgr.tick().await.unwrap(), TickOutcome::Refresh(RefreshOutcome::Refreshed(_))));
    let learned = mgr.credential().unwrap();
    assert_eq!(learned.expires_at, Some(T0 + 60_000 + 2 * H), "the platform's expires_in, stored with the new pair");
    assert_eq!(mgr.refresh_due_at(), Some(T0 + 60_000 + 2 * H * 8 / 10));
    // Nothing more until 80% of the learned lifetime; then the ordinary refresh.
    rig.advance_to(T0 + H);
    assert!(matches!(mgr.tick().await.unwrap(), TickOutcome::Idle));
    rig.advance_to(T0 + 60_000 + 2 * H * 8 / 10);
    assert!(matches!(mgr.tick().await.unwrap(), TickOutcome::Refresh(RefreshOutcome::Refreshed(_))));
    assert!(rig.alerts().await.is_empty());
    assert!(matches!(mgr.execute(&Operation::WhoAmI, None).await.unwrap(), Ok(Outcome::Identity(_))));

    // Without a refresh token there is nothing to learn from: a health check when due instead.
    let bare = CredentialSecret::OAuth { access_token: learned_access(&mgr), refresh_token: None, client: None };
    rig.store.put_credential(&rig.conn, &bare, None, Expect::Any, rig.clock.now_ms()).await.unwrap();
    let mgr2 = rig.manager();
    mgr2.start().await.unwrap();
    assert_ne!(mgr2.next_due_at(), Some(rig.clock.now_ms()), "not due at once");
    assert!(matches!(mgr2.tick().await.unwrap(), TickOutcome::Idle));
}

fn learned_access(mgr: &CredentialManager) -> String {
    match mgr.credential().unwrap().secret {
        CredentialSecret::OAuth { access_token, .. } => access_token,
        CredentialSecret::ApiKey { .. } => unreachable!("an OAuth pair"),
    }
}
