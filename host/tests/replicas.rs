//! Several replicas (issue #9) on real PostgreSQL and Redis, against the simulators over HTTP:
//! one rate budget per connection shared in Redis, the fallback when Redis goes away, and one
//! token refresh per rotation across replicas.
//!
//! Each test makes its own Redis key prefix (or its own `redis-server`) and its own PostgreSQL
//! database. "Replicas" here are separate budget layers, Redis clients, store pools and
//! credential managers in one test process: exactly what separate processes would hold, on the
//! same servers. Time is a [`ManualClock`] moved with the sim's frozen clock; nothing sleeps for
//! policy (the only waits are for HTTP round trips and Redis answers to finish).
//!
//! Redis: `DESKGATE_TEST_REDIS` (default `redis://127.0.0.1:6379`); PostgreSQL:
//! `DESKGATE_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use deskgate::bindings::{Action, ApplyAction, Connection, Lane, Operation, Outcome};
use deskgate::budget::{
    BudgetConfig, BudgetGate, BudgetLayer, GateHooks, RedisBackend, SharedBudgets, SharedSettings,
};
use deskgate::clock::ManualClock;
use deskgate::driver::{Credential, Driver, DriverConfig, NoHooks, Target, authorization};
use deskgate::runtime::{Adapter, AdapterRuntime, RuntimeConfig};
use deskgate::store::{self, SecretKey, SharedStore};
use deskgate_sim::{AccountSpec, AgentSpec, CredentialSpec, Platform, SimConfig, SimHandle, TicketSpec};

#[path = "support/serve.rs"]
mod support_serve;
use support_serve::Serve;

const T0: i64 = 1_800_000_000_000;

fn runtime() -> &'static AdapterRuntime {
    static RT: OnceLock<AdapterRuntime> = OnceLock::new();
    RT.get_or_init(|| {
        let config = RuntimeConfig {
            max_instances: 128,
            warm_per_adapter: 8,
            cache_dir: Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("replicas-compile-cache")),
            ..RuntimeConfig::default()
        };
        let mut rt = AdapterRuntime::new(config).expect("engine");
        rt.load_builtin().expect("built-in adapters");
        rt
    })
}

fn redis_url() -> String {
    std::env::var("DESKGATE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn unique(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("dgtest_{name}_{}_{}_{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Budget hooks for one operation: wait in the request's lane, feed the rate headers back,
/// count what went out.
/// One simulated Zendesk account, an admin API token, a ticket to read and write.
struct Account {
    sim: SimHandle,
    account: u64,
    adapter: Arc<Adapter>,
    target: Target,
    ticket: String,
    clock: ManualClock,
}

async fn account() -> Account {
    let adapter = runtime().get("zendesk").expect("zendesk adapter");
    let sim = deskgate_sim::start(SimConfig::new(Platform::Zendesk).seed(9).frozen_at(T0)).await.unwrap();
    let account = sim.create_account(AccountSpec::default()).unwrap().id;
    let admin = sim.create_agent(account, AgentSpec { name: Some("Ada Admin".into()), ..Default::default() }).unwrap();
    let cred = sim.create_credential(account, CredentialSpec { agent_id: Some(admin.id), ..Default::default() }).unwrap();
    let d = adapter.descriptor();
    let credential =
        Credential::Basic([("email".to_string(), cred.email.clone()), ("token".to_string(), cred.token.clone())].into());
    let mut target = Target {
        base_url: sim.base_url(),
        authorization: authorization(&d.auth, &credential).unwrap().into(),
        connection: Connection { id: "acme".into(), plan: d.default_plan.clone(), agent_id: None, settings: vec![] },
    };
    let driver = Driver::new(DriverConfig::default()).unwrap();
    match driver.execute(&adapter, &target, &Operation::WhoAmI, None, &mut NoHooks).await {
        Ok(Ok(Outcome::Identity(me))) => target.connection.agent_id = Some(me.agent_id),
        other => panic!("who-am-i: {other:?}"),
    }
    let t = sim.create_ticket(account, TicketSpec { subject: Some("Flooded".into()), ..Default::default() }).unwrap();
    let ticket = t["id"].as_u64().map(|n| n.to_string()).expect("ticket id");
    Account { sim, account, adapter, target, ticket, clock: ManualClock::new(T0) }
}

impl Account {
    fn advance(&self, by: Duration) {
        self.clock.advance(by);
        self.sim.clock().advance(by);
    }

    /// The account bucket's limit in force (the one the platform states once it answered) and
    /// its window.
    fn account_limit(&self, gate: &BudgetGate) -> (u64, u64) {
        let snap = gate.snapshot();
        let b = snap.budget.buckets.iter().find(|b| b.bucket == "account").expect("zendesk account bucket");
        (u64::from(b.limit), b.window_ms)
    }
}

/// A replica's budgets: its own layer, Redis client and health.
fn replica(acct: &Account, redis: &str, prefix: &str, id: &str, replicas: u32, alerts: Option<SharedStore>) -> (BudgetGate, Arc<SharedBudgets>) {
    let backend = RedisBackend::new(redis, prefix, Duration::from_millis(500)).unwrap();
    let settings = SharedSettings { replica_id: id.into(), replicas, probe_every: Duration::from_secs(1) };
    let shared = Arc::new(SharedBudgets::new(Arc::new(backend), settings, alerts));
    let layer = BudgetLayer::new(Arc::new(acct.clock.clone()), BudgetConfig::default()).with_shared(shared.clone());
    let gate = layer.connect(&acct.target.connection, acct.adapter.descriptor(), None).unwrap();
    (gate, shared)
}

/// `per_replica` read loops on each gate, each reading the ticket until its gate closes; returns
/// the requests sent per replica.
fn flood(acct: &Arc<Account>, gates: &[BudgetGate], per_replica: usize) -> (Vec<Arc<AtomicU64>>, Vec<tokio::task::JoinHandle<()>>) {
    let mut counters = Vec::new();
    let mut tasks = Vec::new();
    for gate in gates {
        let sent = Arc::new(AtomicU64::new(0));
        counters.push(sent.clone());
        for _ in 0..per_replica {
            let (acct, gate, sent) = (acct.clone(), gate.clone(), sent.clone());
            tasks.push(tokio::spawn(async move {
                let driver = Driver::new(DriverConfig::default()).unwrap();
                let op = Operation::GetTicket(acct.ticket.clone());
                loop {
                    let mut hooks = GateHooks::new(&gate, &acct.adapter, &acct.target);
                    match driver.execute(&acct.adapter, &acct.target, &op, None, &mut hooks).await {
                        Ok(Ok(_)) => {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Err(f)) => panic!("a flood read failed: {f:?}"),
                        // The gate was closed: the flood is over.
                        Err(_) => return,
                    }
                }
            }));
        }
    }
    (counters, tasks)
}

/// Wait until every flood loop waits in its gate's read queue (nothing in flight), up to 60 s of
/// real time for HTTP and Redis round trips.
async fn settle(gates: &[BudgetGate], per_replica: usize) {
    let start = Instant::now();
    loop {
        if gates.iter().all(|g| g.snapshot().waiting.read == per_replica) {
            // Twice, a moment apart: a loop between two requests is not in the queue.
            tokio::time::sleep(Duration::from_millis(20)).await;
            if gates.iter().all(|g| g.snapshot().waiting.read == per_replica) {
                return;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(60), "the flood did not settle: {:?}", gates.iter().map(|g| g.snapshot().waiting).collect::<Vec<_>>());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn write_now(acct: &Account, gate: &BudgetGate, text: &str) {
    let op = Operation::Apply(ApplyAction { ticket_id: acct.ticket.clone(), action: Action::Reply(text.into()) });
    let driver = Driver::new(DriverConfig::default()).unwrap();
    let mut hooks = GateHooks::new(gate, &acct.adapter, &acct.target);
    let r = tokio::time::timeout(Duration::from_secs(10), driver.execute(&acct.adapter, &acct.target, &op, None, &mut hooks))
        .await
        .expect("a write waited behind the read flood");
    assert!(matches!(r, Ok(Ok(Outcome::Written(_)))), "write: {r:?}");
    assert_eq!(hooks.permit().map(|p| p.lane), Some(Lane::Write));
}

/// Three replicas flood one account with reads over three windows: together they stay at the
/// read share of 75% of the limit per window, the account never answers 429, and a write from
/// any replica goes through at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_one_budget_under_a_read_flood() {
    let acct = Arc::new(account().await);
    let prefix = unique("flood");
    let replicas: Vec<_> = (1..=3).map(|i| replica(&acct, &redis_url(), &prefix, &format!("r{i}"), 3, None)).collect();
    let gates: Vec<BudgetGate> = replicas.iter().map(|(g, _)| g.clone()).collect();
    const PER: usize = 4;
    let (sent, tasks) = flood(&acct, &gates, PER);
    let mut last_requests = acct.sim.stats(acct.account).unwrap().requests;
    for w in 0..3 {
        settle(&gates, PER).await;
        let (limit, window) = acct.account_limit(&gates[0]);
        let target = limit * 75 / 100;
        let read_share = target - target * 30 / 100;
        let per: Vec<u64> = sent.iter().map(|s| s.swap(0, Ordering::Relaxed)).collect();
        let reads: u64 = per.iter().sum();
        // Writes while the reads are blocked: the reserve is theirs.
        for (i, g) in gates.iter().enumerate() {
            write_now(&acct, g, &format!("window {w} replica {i}")).await;
        }
        let requests = acct.sim.stats(acct.account).unwrap().requests;
        let platform = requests - last_requests;
        last_requests = requests;
        println!("window {w}: reads per replica {per:?} = {reads} (read share {read_share}, target {target}, limit {limit}); platform counted {platform}");
        assert!(per.iter().all(|&n| n > 0), "every replica read something: {per:?}");
        assert!(reads <= read_share, "{reads} reads > the read share {read_share} of one window");
        assert!(reads >= read_share * 9 / 10, "the replicas together used the read share ({reads} of {read_share})");
        assert!(platform <= target, "the platform counted {platform} > {target} (75% of {limit})");
        assert_eq!(acct.sim.rate_limited_total(), 0, "no 429s");
        acct.advance(Duration::from_millis(window));
        for g in &gates {
            g.tick();
        }
    }
    for g in &gates {
        g.close();
    }
    for t in tasks {
        t.await.unwrap();
    }
    for (_, shared) in &replicas {
        assert!(shared.is_up() && shared.status().outages == 0, "{:?}", shared.status());
    }
}

/// A `redis-server` of the test's own on a free port, so that it can be stopped mid-run.
struct OwnRedis {
    port: u16,
    child: std::process::Child,
}

impl OwnRedis {
    fn start(port: Option<u16>) -> OwnRedis {
        let port = port.unwrap_or_else(|| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(10), "redis-server did not start on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        OwnRedis { port, child }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// kill -9.
    fn kill(mut self) -> u16 {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.port
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn temp_store_path(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(unique(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("deskgate.db")
}

/// Redis is killed mid-run: every replica falls back to a third of the budget (together never
/// more than the target, so never more than the limit, and no 429), each raises one
/// `shared-budget-unavailable` alert, writes still go through; when Redis is back the next
/// window is shared again and the whole read share is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_run_falls_back_to_a_share_alerts_and_recovers() {
    let acct = Arc::new(account().await);
    let redis = OwnRedis::start(None);
    let store = store::open(temp_store_path("outage").to_str().unwrap(), SecretKey::from_bytes([3; 32])).await.unwrap();
    let prefix = unique("outage");
    let replicas: Vec<_> =
        (1..=3).map(|i| replica(&acct, &redis.url(), &prefix, &format!("r{i}"), 3, Some(store.clone()))).collect();
    let gates: Vec<BudgetGate> = replicas.iter().map(|(g, _)| g.clone()).collect();
    const PER: usize = 3;
    let mut last_requests = acct.sim.stats(acct.account).unwrap().requests;
    let (sent, tasks) = flood(&acct, &gates, PER);
    settle(&gates, PER).await;
    let (limit, window) = acct.account_limit(&gates[0]);
    let target = limit * 75 / 100;
    let reserve = target * 30 / 100;
    let read_share = target - reserve;
    let fallback_read_share = target / 3 - reserve / 3;
    let window_reads = |phase: &str, last: &mut u64| {
        let per: Vec<u64> = sent.iter().map(|s| s.swap(0, Ordering::Relaxed)).collect();
        let requests = acct.sim.stats(acct.account).unwrap().requests;
        let platform = requests - *last;
        *last = requests;
        println!("{phase}: reads per replica {per:?}; platform counted {platform} (target {target}, limit {limit})");
        assert!(platform <= target, "{phase}: the platform counted {platform} > {target}");
        assert_eq!(acct.sim.rate_limited_total(), 0, "{phase}: no 429s");
        per
    };

    // Shared.
    let per = window_reads("shared", &mut last_requests);
    assert!(per.iter().sum::<u64>() <= read_share);
    assert!(per.iter().sum::<u64>() >= read_share * 9 / 10);
    assert!(gates.iter().all(|g| g.snapshot().mode == "shared"));

    // Redis dies between two windows.
    let port = redis.kill();
    acct.advance(Duration::from_millis(window));
    for g in &gates {
        g.tick();
    }
    settle(&gates, PER).await;
    for (i, g) in gates.iter().enumerate() {
        write_now(&acct, g, &format!("during the outage, replica {i}")).await;
    }
    let per = window_reads("Redis down", &mut last_requests);
    for (i, n) in per.iter().enumerate() {
        assert!(*n <= fallback_read_share, "replica {i} read {n} > its fallback share {fallback_read_share}");
        assert!(*n > 0, "replica {i} kept working on its share");
    }
    assert!(gates.iter().all(|g| g.snapshot().mode == "fallback"));
    assert!(replicas.iter().all(|(_, s)| !s.is_up() && s.status().outages == 1));
    // One alert per replica, raised once per outage (the raise is asynchronous: wait for it).
    let start = Instant::now();
    let alerts = loop {
        let a: Vec<_> = store
            .list_alerts(None, false, 100)
            .await
            .unwrap()
            .into_iter()
            .filter(|a| a.kind == deskgate::budget::shared::SHARED_BUDGET_UNAVAILABLE)
            .collect();
        if a.len() >= 3 || start.elapsed() > Duration::from_secs(10) {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(alerts.len(), 3, "{alerts:?}");
    assert!(alerts.iter().all(|a| a.text.contains("1/3") && a.text.contains("Redis")), "{alerts:?}");

    // A second window without Redis: still a third each, no new alert.
    acct.advance(Duration::from_millis(window));
    for g in &gates {
        g.tick();
    }
    settle(&gates, PER).await;
    let per = window_reads("Redis still down", &mut last_requests);
    assert!(per.iter().all(|n| *n <= fallback_read_share && *n > 0), "{per:?}");

    // Redis is back (empty: it kept nothing): the next window is shared again.
    let redis = OwnRedis::start(Some(port));
    acct.advance(Duration::from_millis(window));
    for g in &gates {
        g.tick();
    }
    settle(&gates, PER).await;
    for (i, g) in gates.iter().enumerate() {
        write_now(&acct, g, &format!("after the outage, replica {i}")).await;
    }
    let per = window_reads("Redis back", &mut last_requests);
    let reads: u64 = per.iter().sum();
    assert!(reads <= read_share, "{reads} > {read_share}");
    assert!(reads >= read_share * 9 / 10, "the whole read share is back in use ({reads} of {read_share})");
    assert!(gates.iter().all(|g| g.snapshot().mode == "shared"), "{:?}", gates.iter().map(|g| g.snapshot().mode).collect::<Vec<_>>());
    assert!(replicas.iter().all(|(_, s)| s.is_up() && s.status().outages == 1));
    let alerts_after = store.list_alerts(None, false, 100).await.unwrap().len();
    assert_eq!(alerts_after, 3, "no new alert on recovery");

    for g in &gates {
        g.close();
    }
    for t in tasks {
        t.await.unwrap();
    }
    drop(redis);
}

/// A PostgreSQL database of the test's own, dropped at the end.
struct PgDb {
    base: String,
    name: String,
}

impl PgDb {
    async fn create() -> PgDb {
        let base = std::env::var("DESKGATE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let base = base.trim_end_matches('/').to_string();
        let name = unique("replicas");
        let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&format!("{base}/postgres"))
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL is not reachable at {base} ({e}); start it or set DESKGATE_TEST_POSTGRES"));
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.unwrap();
        sqlx::Connection::close(admin).await.ok();
        PgDb { base, name }
    }

    fn url(&self) -> String {
        format!("{}/{}", self.base, self.name)
    }

    async fn drop_db(self) {
        let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&format!("{}/postgres", self.base)).await.unwrap();
        sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).execute(&mut admin).await.unwrap();
        sqlx::Connection::close(admin).await.ok();
    }
}

/// Three replicas (own store pools, own credential managers, one PostgreSQL database) race to
/// refresh a rotating Zendesk OAuth pair, six rotations in a row, half by explicit refresh (a 401
/// on every replica at once) and half by their timers all firing at 80% of the lifetime: exactly
/// one refresh reaches the token endpoint per rotation, every replica ends on the new pair, each
/// spent refresh token is refused by the platform, and every replica's token works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_refresh_racing_on_three_replicas_happens_once_per_rotation() {
    use deskgate::auth::{AuthConfig, CredentialManager, ManagerParts, OAuthClient, RefreshOutcome, StartReport, TickOutcome};
    use deskgate::store::{CredentialSecret, Expect};
    use deskgate_sim::{CredKind, RequestFilter};

    let db = PgDb::create().await;
    let adapter = runtime().get("zendesk").unwrap();
    let sim = deskgate_sim::start(SimConfig::new(Platform::Zendesk).seed(4).frozen_at(T0)).await.unwrap();
    let account = sim.create_account(AccountSpec::default()).unwrap().id;
    let admin = sim.create_agent(account, AgentSpec { name: Some("Ada Admin".into()), ..Default::default() }).unwrap();
    let lifetime_s = 2 * 3600;
    let cred = sim
        .create_credential(
            account,
            CredentialSpec {
                agent_id: Some(admin.id),
                kind: Some(CredKind::Oauth),
                access_ttl_secs: Some(lifetime_s),
                refresh_ttl_secs: Some(30 * 86_400),
                ..Default::default()
            },
        )
        .unwrap();
    let clock = ManualClock::new(T0);
    let conn = "acme-oauth";
    let mut stores = Vec::new();
    for _ in 0..3 {
        stores.push(store::open(&db.url(), SecretKey::from_bytes([5; 32])).await.unwrap());
    }
    let mut nc = deskgate::store::NewConnection::new(conn, "zendesk", "refresh race");
    nc.admin_contact_url = None;
    stores[0].create_connection(&nc, T0).await.unwrap();
    let secret = CredentialSecret::OAuth { access_token: cred.token.clone(), refresh_token: cred.refresh_token.clone(), client: None };
    stores[0].put_credential(conn, &secret, cred.expires_at_ms, Expect::Absent, T0).await.unwrap();
    let d = adapter.descriptor();
    let managers: Vec<CredentialManager> = stores
        .iter()
        .enumerate()
        .map(|(i, store)| {
            CredentialManager::new(ManagerParts {
                store: store.clone(),
                clock: Arc::new(clock.clone()),
                driver: Driver::new(DriverConfig::default()).unwrap(),
                adapter: adapter.clone(),
                base_url: sim.base_url(),
                connection: Connection { id: conn.into(), plan: d.default_plan.clone(), agent_id: None, settings: vec![] },
                oauth_client: Some(OAuthClient {
                    client_id: cred.client_id.clone().unwrap(),
                    client_secret: cred.client_secret.clone().unwrap(),
                }),
                config: AuthConfig {
                    owner: format!("replica-{}", i + 1),
                    in_flight_wait: Duration::from_secs(30),
                    ..AuthConfig::default()
                },
            })
            .unwrap()
        })
        .collect();
    for m in &managers {
        assert_eq!(m.start().await.unwrap(), StartReport::Clean);
    }
    let token_calls = || sim.requests(RequestFilter::default()).iter().filter(|r| r.path.starts_with("/oauth/tokens")).count();
    let client = OAuthClient { client_id: cred.client_id.clone().unwrap(), client_secret: cred.client_secret.clone().unwrap() };
    let http = reqwest::Client::new();
    let mut spent = Vec::new();
    for rotation in 0..6 {
        let before = managers[0].credential().unwrap();
        let CredentialSecret::OAuth { refresh_token: Some(old_rt), .. } = &before.secret else { panic!("oauth") };
        let calls_before = token_calls();
        let outcomes: Vec<RefreshOutcome> = if rotation % 2 == 0 {
            // A 401 on every replica at once: each refreshes from the version it used.
            let v = before.version;
            let (a, b, c) = tokio::join!(managers[0].refresh(Some(v)), managers[1].refresh(Some(v)), managers[2].refresh(Some(v)));
            vec![a.unwrap(), b.unwrap(), c.unwrap()]
        } else {
            // Every replica's timer fires at 80% of the lifetime.
            let due = managers[0].refresh_due_at().unwrap();
            let now = deskgate::clock::Clock::now_ms(&clock);
            if due > now {
                clock.advance(Duration::from_millis((due - now) as u64));
                sim.clock().advance(Duration::from_millis((due - now) as u64));
            }
            let (a, b, c) = tokio::join!(managers[0].tick(), managers[1].tick(), managers[2].tick());
            [a.unwrap(), b.unwrap(), c.unwrap()]
                .into_iter()
                .map(|t| match t {
                    TickOutcome::Refresh(r) => r,
                    other => panic!("rotation {rotation}: a due timer did not refresh: {other:?}"),
                })
                .collect()
        };
        let refreshed = outcomes.iter().filter(|o| matches!(o, RefreshOutcome::Refreshed(_))).count();
        let adopted = outcomes.iter().filter(|o| matches!(o, RefreshOutcome::AlreadyRefreshed(_))).count();
        println!("rotation {rotation}: {outcomes:?}");
        assert_eq!((refreshed, adopted), (1, 2), "rotation {rotation}: {outcomes:?}");
        assert_eq!(token_calls() - calls_before, 1, "rotation {rotation}: exactly one call to the token endpoint");
        let versions: Vec<i64> = managers.iter().map(|m| m.credential().unwrap().version).collect();
        assert!(versions.iter().all(|v| *v == versions[0] && *v > before.version), "rotation {rotation}: {versions:?}");
        let stored = stores[2].get_credential(conn).await.unwrap().unwrap();
        assert_eq!(stored.version, versions[0]);
        assert!(stored.refresh_in_flight.is_none(), "the refresh lock was released");
        for (i, m) in managers.iter().enumerate() {
            assert_eq!(m.credential().unwrap().secret, stored.secret, "replica {i} holds the stored pair");
            match m.execute(&Operation::WhoAmI, None).await.unwrap() {
                Ok(Outcome::Identity(_)) => {}
                other => panic!("rotation {rotation}: replica {i}'s token does not work: {other:?}"),
            }
        }
        spent.push(old_rt.clone());
    }
    // Rotation: every spent refresh token is dead on the platform; nobody holds one.
    for old in &spent {
        let e = deskgate::auth::refresh::refresh(&http, &sim.base_url(), "/oauth/tokens", &client, old).await.unwrap_err();
        assert!(e.is_definitive(), "{e:?}");
    }
    for s in stores {
        s.close().await;
    }
    db.drop_db().await;
}

const SERVE_TOKEN: &str = "replicas-test-api-token-0123456789";

/// Wait (up to 120 s: the first start compiles the adapters) until the replica is ready, reports
/// shared budgets, and runs the connection live.
async fn wait_ready(http: &reqwest::Client, s: &Serve, dir: &std::path::Path) {
    let start = Instant::now();
    loop {
        let ready = http.get(s.url("/readyz")).send().await.ok();
        if let Some(r) = ready
            && r.status().is_success()
        {
            let body: serde_json::Value = r.json().await.unwrap();
            let conn = http.get(s.url("/v1/connections/acme")).bearer_auth(SERVE_TOKEN).send().await.unwrap();
            let conn: serde_json::Value = conn.json().await.unwrap_or_default();
            if body["budgets"]["mode"] == "shared" && conn["state"] == "live" {
                assert_eq!(body["replica"], s.id.as_str(), "{body}");
                assert_eq!(body["store"], "postgres", "{body}");
                return;
            }
        }
        let log = std::fs::read_to_string(dir.join(format!("{}.log", s.id))).unwrap_or_default();
        assert!(start.elapsed() < Duration::from_secs(120), "replica {} did not become ready; its log:\n{log}", s.id);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Three `deskgate serve` processes on one PostgreSQL database and one Redis, with a 2 s lease
/// period and sweeps every 15-20 s (Zendesk's incremental export allows 10 listings a minute);
/// the app keeps a burst of replies in flight through all three. The replica running the
/// connection's timers is killed with SIGKILL while it holds, at once, the connection's timer
/// lease (`connection`), its sweep lease (`reconcile`, held for the 15 s minimum interval) and
/// outbox claims of the burst. A survivor takes each lease within one tick (1 s) of its end, so
/// the connection's timers within one lease period plus a tick of the kill, and sweeps as soon as
/// the dead replica's sweep lease ends; an alert raised at the kill is taken up by a survivor's
/// gateway-wide alerts timer within one lease period plus a tick. Each entry the dead replica had
/// claimed is claimed again and finished by a survivor, with exactly one confirmed attempt in the
/// write log and one write on the platform; every acknowledged action is applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_burst_loses_nothing_and_its_leases_move() {
    let db = PgDb::create().await;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(unique("serve"));
    std::fs::create_dir_all(&dir).unwrap();
    let sim = deskgate_sim::start(SimConfig::new(Platform::Zendesk).seed(2)).await.unwrap();
    let account = sim.create_account(AccountSpec::default()).unwrap().id;
    let admin = sim.create_agent(account, AgentSpec { name: Some("Ada Admin".into()), ..Default::default() }).unwrap();
    let cred = sim.create_credential(account, CredentialSpec { agent_id: Some(admin.id), ..Default::default() }).unwrap();
    let tickets: Vec<u64> = (0..16)
        .map(|i| sim.create_ticket(account, TicketSpec { subject: Some(format!("t{i}")), ..Default::default() }).unwrap()["id"].as_u64().unwrap())
        .collect();
    let lease_ms: i64 = 2_000;
    // The gateway's timer tick (GatewayConfig::default().tick), and room for scheduling on a
    // shared two-core machine and for this test's 20 ms polls.
    let tick_ms: i64 = 1_000;
    let slack_ms: i64 = 500;
    let config = format!(
        "store = \"{}\"\n[cluster]\nredis = \"{}\"\nreplicas = 3\nreplica_id = \"REPLICA_ID\"\nredis_prefix = \"{}\"\nlease_secs = {}\n\
         [sweep]\nmin_interval_secs = 15\nmax_interval_secs = 20\n\
         [connections.acme]\nplatform = \"zendesk\"\nbase_url = \"{}\"\n[connections.acme.credentials]\nemail = \"{}\"\ntoken = \"{}\"\n",
        db.url(),
        redis_url(),
        unique("serve"),
        lease_ms / 1000,
        sim.base_url(),
        cred.email,
        cred.token
    );
    let http = reqwest::Client::new();
    let mut replicas = vec![Serve::start(&dir, "r1", &config, SERVE_TOKEN)];
    wait_ready(&http, &replicas[0], &dir).await;
    replicas.push(Serve::start(&dir, "r2", &config, SERVE_TOKEN));
    replicas.push(Serve::start(&dir, "r3", &config, SERVE_TOKEN));
    for s in &replicas[1..] {
        wait_ready(&http, s, &dir).await;
    }
    let key: [u8; 32] = std::array::from_fn(|i| i as u8);
    let store = store::open(&db.url(), SecretKey::from_bytes(key)).await.unwrap();

    let wall = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    // A lease's holder and end, if it is held now.
    let held = |conn: &'static str, name: &'static str| {
        let store = store.clone();
        async move { store.get_lease(conn, name).await.unwrap().filter(|l| !l.owner.is_empty() && l.until > wall()) }
    };
    let raise = |text: &str| deskgate::store::NewAlert {
        connection_id: None,
        kind: "test-timer".into(),
        text: text.into(),
        detail: serde_json::json!({}),
    };
    // The replica running the connection's timers is the one to kill.
    let start = Instant::now();
    let victim = loop {
        if let Some(l) = held("acme", "connection").await {
            break l.owner;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no replica took the connection's timer lease");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // Slow writes, so that the burst is still in flight when the replica dies.
    sim.set_faults(deskgate_sim::FaultConfig { latency_ms: 150, ..Default::default() }).unwrap();
    let mut acked: Vec<(i64, String, u64)> = Vec::new();
    async fn submit(http: &reqwest::Client, replicas: &[Serve], tickets: &[u64], acked: &mut Vec<(i64, String, u64)>, n: usize) {
        for _ in 0..n {
            let i = acked.len();
            let s = &replicas[i % 3];
            let body = serde_json::json!({ "ticket_id": tickets[i % tickets.len()].to_string(), "action": { "type": "reply", "body": format!("reply {i}") } });
            let r = http
                .post(s.url("/v1/connections/acme/actions"))
                .bearer_auth(SERVE_TOKEN)
                .header("idempotency-key", format!("burst-{i}"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap());
            let v: serde_json::Value = r.json().await.unwrap();
            acked.push((v["id"].as_i64().unwrap(), format!("reply {i}"), tickets[i % tickets.len()]));
        }
    }
    submit(&http, &replicas, &tickets, &mut acked, 48).await;

    // Kill the victim once it holds outbox claims and both of the connection's leases at once; the
    // burst is topped up while it waits.
    let start = Instant::now();
    let (claims, leases) = loop {
        let in_flight = store.list_actions(&store::ActionQuery { in_flight_only: true, limit: 500, ..Default::default() }).await.unwrap();
        // Topped up to at most 24 in flight: Zendesk's Update Ticket cap (100 a minute) sets the
        // pace, and everything must drain after the kill.
        if in_flight.len() < 12 && acked.len() < 480 {
            submit(&http, &replicas, &tickets, &mut acked, 12).await;
        }
        let claims = in_flight
            .into_iter()
            .filter(|e| e.lease.as_ref().is_some_and(|l| l.owner == format!("{victim}/acme") && l.until > wall()))
            .map(|e| e.id)
            .collect::<Vec<_>>();
        let leases = [held("acme", "connection").await, held("acme", "reconcile").await];
        if !claims.is_empty() && leases.iter().all(|l| l.as_ref().is_some_and(|l| l.owner == victim)) {
            break (claims, leases.map(Option::unwrap));
        }
        assert!(start.elapsed() < Duration::from_secs(120), "{victim} never held claims and both leases at once: {leases:?}, {} claims", claims.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let alerts_before = store.get_lease("", "alerts").await.unwrap();
    let idx = replicas.iter().position(|s| s.id == victim).unwrap();
    replicas[idx].kill();
    let killed_at = wall();
    println!(
        "killed {victim} holding {} claims and leases {:?}; alerts lease {:?}",
        claims.len(),
        leases.iter().map(|l| format!("{}/{} +{} ms", l.connection_id, l.name, l.until - killed_at)).collect::<Vec<_>>(),
        alerts_before.as_ref().map(|l| format!("{} +{} ms", l.owner, l.until - killed_at))
    );

    // The gateway-wide alerts timer, whoever held it: an alert raised at the kill is taken up by a
    // survivor within one lease period plus a tick (a lease the victim held ends within that).
    store.raise_alert(&raise("after the kill"), wall()).await.unwrap();
    let alerts_generation = alerts_before.as_ref().map_or(0, |l| l.generation);
    let mut alerts_at = None;

    // Each of its leases moves to a survivor within one tick of its end: the connection's timers
    // (renewed every half lease) within one lease period plus a tick of the kill, its sweep as
    // soon as the dead replica's sweep lease ends.
    let mut moved: Vec<Option<(String, i64)>> = vec![None; leases.len()];
    while moved.iter().any(Option::is_none) || alerts_at.is_none() {
        let now = wall();
        for (i, l) in leases.iter().enumerate() {
            if moved[i].is_none()
                && let Some(n) = store.get_lease(&l.connection_id, &l.name).await.unwrap()
                && !n.owner.is_empty()
                && n.owner != victim
                && n.generation > l.generation
            {
                moved[i] = Some((n.owner, now));
            }
        }
        if alerts_at.is_none()
            && let Some(n) = store.get_lease("", "alerts").await.unwrap()
            && !n.owner.is_empty()
            && n.owner != victim
            && n.generation > alerts_generation
        {
            println!("alerts lease taken by {} {} ms after the kill", n.owner, now - killed_at);
            alerts_at = Some(now);
        }
        assert!(now - killed_at < 30_000, "leases still not moved 30 s after the kill: {moved:?} of {leases:?}, alerts {alerts_at:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (l, m) in leases.iter().zip(&moved) {
        let (owner, at) = m.clone().unwrap();
        println!("{}/{} moved to {owner} {} ms after the kill (it ran to +{} ms)", l.connection_id, l.name, at - killed_at, l.until - killed_at);
        assert!(
            at <= l.until.max(killed_at) + tick_ms + slack_ms,
            "{}/{} moved {} ms after the kill, more than a tick after it ended (+{} ms)",
            l.connection_id,
            l.name,
            at - killed_at,
            l.until - killed_at
        );
    }
    let connection_moved = moved[0].as_ref().unwrap().1;
    assert!(
        connection_moved - killed_at <= lease_ms + tick_ms + slack_ms,
        "the connection's timers moved {} ms after the kill: more than one lease period ({lease_ms} ms) plus a tick",
        connection_moved - killed_at
    );
    let alerts_at = alerts_at.unwrap();
    assert!(alerts_at - killed_at <= lease_ms + tick_ms + slack_ms, "alerts taken up {} ms after the kill", alerts_at - killed_at);

    // Every acknowledged action ends confirmed; the dead replica's claims by another replica.
    let start = Instant::now();
    loop {
        let left = store.list_actions(&store::ActionQuery { in_flight_only: true, limit: 500, ..Default::default() }).await.unwrap();
        if left.is_empty() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "still in flight: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (id, _, _) in &acked {
        let e = store.get_action(*id).await.unwrap().unwrap();
        assert_eq!(e.state, store::OutboxState::Confirmed, "{e:?}");
        let confirmed = store.write_log(*id).await.unwrap().iter().filter(|r| r.outcome == store::AttemptOutcome::Confirmed).count();
        assert_eq!(confirmed, 1, "action {id}: {confirmed} confirmed attempts in the write log");
    }
    for id in &claims {
        let e = store.get_action(*id).await.unwrap().unwrap();
        assert!(e.updated_at >= killed_at, "entry {id} was settled by the dead replica before it died? {e:?}");
        assert!(e.lease.is_none(), "entry {id} finished and released: {e:?}");
    }
    // Exactly once on the platform.
    for (id, body, ticket) in &acked {
        let n = sim
            .writes(account, Some(*ticket))
            .unwrap()
            .iter()
            .filter(|w| matches!(&w.kind, deskgate_sim::WriteKind::Reply { body: b } if b == body))
            .count();
        assert_eq!(n, 1, "action {id} ({body}) applied {n} times");
    }
    drop(replicas);
    store.close().await;
    db.drop_db().await;
}

/// The Redis script and the local budget are one algorithm: a seeded random run of draws (both
/// lanes, account and per-object buckets), platform readings (limit, remaining, reset), penalties,
/// refunds and time steps, applied to a local [`deskgate::budget::RateBudget`] and to the shared
/// counters in Redis, grants and refuses the same draws and leaves the same counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_script_decides_as_the_local_budget() {
    use deskgate::bindings::{BucketDraw, BucketScope, PlanLimits, RateBucket, RateObservation};
    use deskgate::budget::{Jitter as _, RateBudget, SharedBackend, SharedDraw, SplitMix64};

    let bucket = |name: &str, scope, limit, window_ms| RateBucket { name: name.into(), scope, limit, window_ms, description: String::new() };
    let plan = PlanLimits {
        plan: "p".into(),
        buckets: vec![
            bucket("account", BucketScope::Account, 40, 60_000),
            bucket("ticket", BucketScope::PerObject, 12, 600_000),
            bucket("export", BucketScope::Account, 16, 60_000),
        ],
    };
    let config = BudgetConfig::default().with_bucket_write_reserve("export", deskgate::budget::Share::NONE);
    let target_pm = config.target.as_permille();
    let redis = RedisBackend::new(&redis_url(), &unique("equiv"), Duration::from_secs(2)).unwrap();
    for seed in [0x5eed_u64, 7, 1_000_003] {
    let conn = format!("c{seed}");
    let conn = conn.as_str();
    let mut local = RateBudget::new(&plan, config.clone());
    let mut rng = SplitMix64::seeded(seed);
    let mut now = T0;
    let (mut grants, mut refusals, mut last_permit) = (0, 0, None);
    for step in 0..600 {
        let r = rng.next_u64();
        match r % 10 {
            0..=5 => {
                let key = format!("{}", (r >> 8) % 4);
                let (lane, draws) = match (r >> 4) % 3 {
                    0 => (Lane::Read, vec![BucketDraw { bucket: "account".into(), key: None, cost: 1 + ((r >> 12) % 2) as u32 }]),
                    1 => (
                        Lane::Write,
                        vec![
                            BucketDraw { bucket: "account".into(), key: None, cost: 1 },
                            BucketDraw { bucket: "ticket".into(), key: Some(key), cost: 1 },
                        ],
                    ),
                    _ => (Lane::Read, vec![BucketDraw { bucket: "export".into(), key: None, cost: 1 }]),
                };
                let shared: Vec<SharedDraw> = draws
                    .iter()
                    .map(|d| SharedDraw { spec: local.counter_spec(&d.bucket, d.key.as_deref()).unwrap(), cost: u64::from(d.cost) })
                    .collect();
                let l = local.try_acquire(lane, &draws, now);
                let v = redis.acquire(conn, lane, target_pm, &shared, now).await.unwrap();
                assert_eq!(l.is_ok(), v.granted, "step {step} at +{} ms: local {l:?}, redis {v:?}", now - T0);
                match l {
                    Ok(p) => {
                        grants += 1;
                        for (d, c) in p.drawn.iter().zip(&v.counters) {
                            assert_eq!((d.window_start, d.window_end), (c.start, c.end), "step {step}: windows");
                        }
                        last_permit = Some((p, shared));
                    }
                    Err(_) => refusals += 1,
                }
            }
            6 => {
                let remaining = ((r >> 8) % 41) as u32;
                let reset = match (r >> 16) % 3 {
                    0 => None,
                    1 => Some(((r >> 20) % 70_000) as u64),
                    _ => Some(0),
                };
                let limit = if (r >> 28) % 5 == 0 { Some(30 + ((r >> 32) % 20) as u32) } else { None };
                let obs = RateObservation { bucket: "account".into(), key: None, limit, remaining: Some(remaining), reset_ms: reset, reset_at: None };
                local.observe(&obs, now);
                let spec = local.counter_spec("account", None).unwrap();
                let reset_abs = reset.map(|ms| now + ms as i64);
                redis.observe(conn, &spec, limit, Some(u64::from(remaining)), reset_abs, None, now).await.unwrap();
            }
            7 => {
                let until = now + ((r >> 8) % 20_000) as i64;
                let (b, key) = if (r >> 4) % 2 == 0 { ("account", None) } else { ("ticket", Some(format!("{}", (r >> 12) % 4))) };
                local.penalize(Some(b), key.as_deref(), until);
                redis.penalize(conn, &local.counter_spec(b, key.as_deref()).unwrap(), until, now).await.unwrap();
            }
            8 => {
                if let Some((p, shared)) = last_permit.take() {
                    local.refund(&p, now);
                    for (d, s) in p.drawn.iter().zip(&shared) {
                        redis.refund(conn, &s.spec, p.lane, d.cost, d.window_start, now).await.unwrap();
                    }
                }
            }
            _ => now += ((r >> 8) % 15_000) as i64,
        }
    }
    // The counters agree too: a zero-cost write draw on each returns the shared state, which the
    // local budget's snapshot must match.
    for (b, key) in [("account", None), ("export", None)] {
        let spec = local.counter_spec(b, key).unwrap();
        let v = redis.acquire(conn, Lane::Write, target_pm, &[SharedDraw { spec, cost: 0 }], now).await.unwrap();
        let snap = local.snapshot(now);
        let s = snap.buckets.iter().find(|x| x.bucket == b).unwrap();
        let c = v.counters[0];
        if let Some((start, end)) = s.window {
            assert_eq!((start, end, s.spent, s.others), (c.start, c.end, c.read + c.write + c.others, c.others), "{b}: {s:?} vs {c:?}");
        }
        assert_eq!(s.limit, c.limit, "{b}: the limit in force");
    }
    println!("seed {seed}: {grants} grants, {refusals} refusals, all decided alike");
    assert!(grants > 50 && refusals > 50, "the run exercised both outcomes ({grants} grants, {refusals} refusals)");
    }
}

/// A correction one replica reads reaches the others: replica A applies a platform reading (the
/// plan was downgraded to 100 a minute, 90 of them spent by other clients) and a 429 penalty on
/// the export bucket; replica B's next decisions follow both without having seen either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correction_read_by_one_replica_reaches_the_others() {
    use deskgate::bindings::{BucketDraw, BucketScope, PlanLimits, RateBucket, RateLimitedDetail, RateObservation};
    use deskgate::budget::{Priority, RateBudget};

    let bucket = |name: &str, limit| RateBucket { name: name.into(), scope: BucketScope::Account, limit, window_ms: 60_000, description: String::new() };
    let plan = PlanLimits { plan: "p".into(), buckets: vec![bucket("account", 400), bucket("export", 10)] };
    let clock = ManualClock::new(T0);
    let prefix = unique("correction");
    let gate = |id: &str| {
        let backend = RedisBackend::new(&redis_url(), &prefix, Duration::from_secs(2)).unwrap();
        let settings = SharedSettings { replica_id: id.into(), replicas: 2, probe_every: Duration::from_secs(1) };
        let shared = Arc::new(SharedBudgets::new(Arc::new(backend), settings, None));
        BudgetGate::shared(RateBudget::new(&plan, BudgetConfig::default()), Arc::new(clock.clone()), shared, "acme")
    };
    let (a, b) = (gate("a"), gate("b"));
    let read = [BucketDraw { bucket: "account".into(), key: None, cost: 1 }];
    let export = [BucketDraw { bucket: "export".into(), key: None, cost: 1 }];
    a.acquire(Priority::Read, &read).await.unwrap();
    b.acquire(Priority::Read, &export).await.unwrap();
    a.observe(&[RateObservation { bucket: "account".into(), key: None, limit: Some(100), remaining: Some(10), reset_ms: None, reset_at: None }]);
    a.rate_limited(&export, &RateLimitedDetail { bucket: Some("export".into()), retry_after_ms: Some(30_000), message: String::new() });
    // The forwarding is asynchronous: wait (real time, for Redis only) until B's decisions show it.
    let start = Instant::now();
    loop {
        // 100 * 75% = 75 target, 90 counted by the platform: nothing left for anyone.
        let r = tokio::time::timeout(Duration::from_millis(200), b.acquire(Priority::Write, &read)).await;
        let snap = b.snapshot();
        let acct = snap.budget.buckets.iter().find(|x| x.bucket == "account").unwrap().clone();
        if r.is_err() && acct.limit == 100 && acct.spent >= 90 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "B never saw A's reading: {acct:?} ({r:?})");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let snap = b.snapshot();
    let exp = snap.budget.buckets.iter().find(|x| x.bucket == "export").unwrap();
    // B's export draw waits for the penalty A met (B only learns of it from Redis).
    let r = tokio::time::timeout(Duration::from_millis(300), b.acquire(Priority::Read, &export)).await;
    assert!(r.is_err(), "B drew on a bucket A was told to leave alone: {exp:?}");
    assert_eq!(b.snapshot().budget.buckets.iter().find(|x| x.bucket == "export").unwrap().blocked_until, Some(T0 + 30_000));
    a.close();
    b.close();
}

/// One gateway replica in this process: its own store pool, API state (inbox, counters, the
/// replica id for /metrics) and supervisor, on the shared PostgreSQL database and the test's
/// manual clock.
async fn gateway_replica(db: &PgDb, clock: &ManualClock, owner: &str, tune: impl FnOnce(&mut deskgate::gateway::GatewayConfig)) -> (deskgate::gateway::Gateway, SharedStore, deskgate::api::AppState) {
    use deskgate::gateway::{Gateway, GatewayConfig, GatewayParts};
    let store = store::open(&db.url(), SecretKey::from_bytes([6; 32])).await.unwrap();
    let shared: deskgate::clock::SharedClock = Arc::new(clock.clone());
    let adapters: Vec<_> = runtime().adapters().cloned().collect();
    let mut config = GatewayConfig { owner: owner.into(), ..GatewayConfig::default() };
    config.outbox.poll_interval = Duration::from_millis(20);
    tune(&mut config);
    let state = deskgate::api::AppState::new(store.clone(), shared.clone(), deskgate::config::Secret::new(SERVE_TOKEN), adapters.clone())
        .with_replica(owner, config.shared_budgets.clone());
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
    (gateway, store, state)
}

/// A Zendesk account with an API-token connection `acme` stored live in `store` (a credential
/// that never expires: the credential timer health-checks it).
async fn api_key_connection(sim: &SimHandle, store: &SharedStore) -> u64 {
    let account = sim.create_account(AccountSpec::default()).unwrap().id;
    let admin = sim.create_agent(account, AgentSpec { name: Some("Ada Admin".into()), ..Default::default() }).unwrap();
    let cred = sim.create_credential(account, CredentialSpec { agent_id: Some(admin.id), ..Default::default() }).unwrap();
    let mut nc = deskgate::store::NewConnection::new("acme", "zendesk", "Acme");
    nc.settings = serde_json::json!({ "base_url": sim.base_url() });
    store.create_connection(&nc, T0).await.unwrap();
    let secret = deskgate::store::CredentialSecret::ApiKey {
        fields: [("email".to_string(), cred.email.clone()), ("token".to_string(), cred.token.clone())].into(),
    };
    store.put_credential("acme", &secret, None, deskgate::store::Expect::Absent, T0).await.unwrap();
    store.set_connection_state("acme", &deskgate::store::ConnectionState::Live, T0).await.unwrap();
    account
}

/// Three gateways on one PostgreSQL database, a manual clock moved a minute at a time over five
/// health-check intervals: the platform sees exactly one who-am-i health check per interval (not
/// one per replica), all from the replica holding the connection's timer lease, which alone
/// sweeps too. Then that replica dies (its timer passes stop, nothing is released): another takes
/// the lease within one lease period plus one tick and carries on from the shared mark, still one
/// check per interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_run_once_per_interval_across_replicas() {
    use deskgate::auth::TickOutcome;
    use deskgate_sim::RequestFilter;

    const MIN: i64 = 60_000;
    let interval = 60 * MIN;
    let lease = 5 * MIN;
    let db = PgDb::create().await;
    let sim = deskgate_sim::start(SimConfig::new(Platform::Zendesk).seed(12).frozen_at(T0)).await.unwrap();
    let clock = ManualClock::new(T0);
    let mut gateways = Vec::new();
    for r in ["r1", "r2", "r3"] {
        gateways.push(
            gateway_replica(&db, &clock, r, |c| {
                c.auth.health_interval = Duration::from_millis(interval as u64);
                c.timer_lease = Duration::from_millis(lease as u64);
                c.sweep_every = (Duration::from_secs(20 * 60), Duration::from_secs(30 * 60));
            })
            .await,
        );
    }
    let account = api_key_connection(&sim, &gateways[0].1).await;
    for (g, _, _) in &gateways {
        assert_eq!(g.sync().await.unwrap(), vec!["acme".to_string()]);
    }
    // Who-am-i calls from here on are health checks (attach learned the agent id before).
    let since = sim.requests(RequestFilter::default()).last().map(|r| r.seq);
    let who_am_i = || {
        sim.requests(RequestFilter { account_id: Some(account), since_seq: since })
            .into_iter()
            .filter(|r| r.path.starts_with("/api/v2/users/me"))
            .map(|r| r.at_ms)
            .collect::<Vec<i64>>()
    };
    let advance = |by: i64| {
        clock.advance(Duration::from_millis(by as u64));
        sim.clock().advance(Duration::from_millis(by as u64));
    };
    let mut checks_by: Vec<(i64, usize)> = Vec::new();
    let mut sweeps_by = [0u32; 3];
    let mut alive = [true, true, true];
    let mut crashed_at = None;
    let mut taken_over_at = None;
    let mut holder: Option<usize> = None;
    for minute in 1..=5 * 60 {
        advance(MIN);
        let now = T0 + minute * MIN;
        let mut leased = Vec::new();
        for (i, (g, _, _)) in gateways.iter().enumerate() {
            if !alive[i] {
                continue;
            }
            let rep = g.run_timers_once().await.remove("acme").expect("acme attached");
            assert!(rep.errors.is_empty(), "minute {minute}, r{}: {:?}", i + 1, rep.errors);
            if rep.leased {
                leased.push(i);
            }
            if let Some(TickOutcome::HealthCheck(ok)) = rep.auth {
                assert!(ok, "the credential works");
                checks_by.push((now, i));
            }
            if rep.sweep.is_some() {
                sweeps_by[i] += 1;
                assert!(rep.leased, "r{} swept without the connection's lease", i + 1);
            }
        }
        assert!(leased.len() <= 1, "minute {minute}: several replicas ran the timers: {leased:?}");
        match (holder, leased.first()) {
            (None, Some(&i)) => holder = Some(i),
            (Some(h), Some(&i)) if h != i => {
                assert!(crashed_at.is_some() && !alive[h], "minute {minute}: the lease moved from a live replica r{}", h + 1);
                taken_over_at.get_or_insert(now);
                holder = Some(i);
            }
            (Some(_), None) => assert!(crashed_at.is_some(), "minute {minute}: nobody ran the timers"),
            _ => {}
        }
        // Half-way through the third interval, the holder dies.
        if minute == 150 {
            let h = holder.expect("someone holds the lease");
            alive[h] = false;
            crashed_at = Some(now);
        }
    }
    let calls = who_am_i();
    println!("health checks {checks_by:?}; who-am-i at {:?}; sweeps {sweeps_by:?}", calls.iter().map(|t| (t - T0) / MIN).collect::<Vec<_>>());
    // One per interval, each when the interval is up, through the crash and the take-over.
    let minutes: Vec<i64> = calls.iter().map(|t| (t - T0) / MIN).collect();
    assert_eq!(minutes, vec![60, 120, 180, 240, 300], "who-am-i calls at the platform, minutes from the start");
    assert_eq!(checks_by.len(), calls.len(), "every call at the platform is a health check one replica reported");
    let crashed = crashed_at.unwrap();
    let moved = taken_over_at.expect("a survivor took the connection's timers over");
    assert!(moved - crashed <= lease + MIN, "the timers moved {} min after the crash (lease {} min)", (moved - crashed) / MIN, lease / MIN);
    // Before the crash on the replica that died, after it on the one that took over.
    assert!(checks_by.iter().all(|(t, i)| (*t <= crashed) != alive[*i]), "checks ran on the lease holder: {checks_by:?}");
    assert_eq!(sweeps_by.iter().filter(|n| **n > 0).count(), 2, "sweeps ran on the holder, then on the one that took over: {sweeps_by:?}");
    for (g, s, _) in gateways {
        g.shutdown().await;
        s.close().await;
    }
    db.drop_db().await;
}

/// What the app's push endpoint saw: the event ids of each POST, per replica, and whether a POST
/// of one replica came while the other's was in flight.
#[derive(Default)]
struct PushApp {
    a: Vec<Vec<i64>>,
    b: Vec<Vec<i64>>,
    a_in_flight: bool,
    overlap: bool,
    /// Take the push lease away from replica A during its POST number n (1-based).
    steal_during: Option<usize>,
}

fn push_ids(body: &serde_json::Value) -> Vec<i64> {
    body["events"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect()
}

/// Two gateways push to the app (replica A to `/a`, B to `/b`) and the app is slow: each POST
/// takes 60% of the push lease on the clock, and while A's POST is in flight B runs its timers.
/// A renews its lease before every batch, so B never pushes while A's run lasts (without the
/// renewal B would take the lapsed lease at A's second batch and POST the same events). Once A is
/// done and its lease lapses, B pushes. Then the lease is taken from A mid-run: A's next renewal
/// fails and it stops pushing, leaving the rest unacknowledged for the holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_push_lease_is_renewed_per_batch_and_a_lost_lease_stops_the_push() {
    use deskgate::gateway::PUSH_LEASE;
    use deskgate::ingest::push::PushConfig;
    use std::sync::Mutex;

    let lease = Duration::from_secs(60);
    let db = PgDb::create().await;
    let clock = ManualClock::new(T0);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let push = |path: &str| {
        let mut p = PushConfig::new(format!("{base}{path}"));
        p.batch = 1;
        Some(p)
    };
    let (ga, store, _) = gateway_replica(&db, &clock, "ra", |c| {
        c.push = push("/a");
        c.timer_lease = lease;
    })
    .await;
    let (gb, store_b, _) = gateway_replica(&db, &clock, "rb", |c| {
        c.push = push("/b");
        c.timer_lease = lease;
    })
    .await;
    let app = Arc::new(Mutex::new(PushApp::default()));
    let router = {
        let (app_a, app_b, clock, gb, store) = (app.clone(), app.clone(), clock.clone(), gb.clone(), store.clone());
        axum::Router::new()
            .route(
                "/a",
                axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
                    let (app, clock, gb, store) = (app_a.clone(), clock.clone(), gb.clone(), store.clone());
                    async move {
                        let n = {
                            let mut st = app.lock().unwrap();
                            st.a.push(push_ids(&body));
                            st.a_in_flight = true;
                            st.a.len()
                        };
                        // A slow app: this POST takes 60% of the lease.
                        clock.advance(lease * 6 / 10);
                        let steal = app.lock().unwrap().steal_during == Some(n);
                        if steal {
                            clock.advance(lease);
                            let now = deskgate::clock::Clock::now_ms(&clock);
                            assert!(store.acquire_lease("", PUSH_LEASE, "thief", now, lease).await.unwrap().is_some());
                        } else {
                            // Meanwhile, the other replica's timers.
                            gb.run_timers_once().await;
                        }
                        app.lock().unwrap().a_in_flight = false;
                        axum::http::StatusCode::OK
                    }
                }),
            )
            .route(
                "/b",
                axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
                    let app = app_b.clone();
                    async move {
                        let mut st = app.lock().unwrap();
                        st.b.push(push_ids(&body));
                        if st.a_in_flight {
                            st.overlap = true;
                        }
                        axum::http::StatusCode::OK
                    }
                }),
            )
    };
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    store.create_connection(&deskgate::store::NewConnection::new("acme", "zendesk", "Acme"), T0).await.unwrap();
    let insert = |from: usize, n: usize| {
        let store = store.clone();
        let clock = clock.clone();
        async move {
            let events: Vec<deskgate::store::NewEvent> = (from..from + n)
                .map(|i| deskgate::store::NewEvent {
                    connection_id: "acme".into(),
                    platform: "zendesk".into(),
                    ticket_id: i.to_string(),
                    kind: "ticket.updated".into(),
                    ticket: serde_json::json!({ "id": i }),
                    dedupe_key: format!("ticket:{i}:v1"),
                })
                .collect();
            store.insert_events(&events, deskgate::clock::Clock::now_ms(&clock)).await.unwrap();
        }
    };
    let unacked = || {
        let store = store.clone();
        let now = deskgate::clock::Clock::now_ms(&clock);
        async move { store.pull_events(&deskgate::store::Pull { after: 0, limit: 1000, connection_id: None, now }).await.unwrap().len() }
    };

    // A long run by A, B ticking during each batch.
    insert(0, 5).await;
    ga.run_timers_once().await;
    {
        let st = app.lock().unwrap();
        println!("A posted {:?}, B posted {:?}", st.a, st.b);
        assert_eq!(st.a.concat().len(), 5, "A pushed every event once: {:?}", st.a);
        assert!(st.b.is_empty() && !st.overlap, "B pushed while A's run held the lease: {:?}", st.b);
    }
    assert_eq!(unacked().await, 0);

    // A is done; once its lease lapses the push moves to B.
    clock.advance(lease);
    insert(5, 1).await;
    gb.run_timers_once().await;
    assert_eq!(app.lock().unwrap().b.concat().len(), 1, "B took the lapsed lease and pushed");
    clock.advance(lease);

    // The lease is taken from A during its second batch: A stops after it.
    insert(6, 5).await;
    let before = app.lock().unwrap().a.len();
    app.lock().unwrap().steal_during = Some(before + 2);
    ga.run_timers_once().await;
    let posted = app.lock().unwrap().a.len() - before;
    assert_eq!(posted, 2, "A kept pushing after losing its lease");
    assert_eq!(unacked().await, 3, "the events after the lost lease wait for the holder");
    assert!(!app.lock().unwrap().overlap);

    ga.shutdown().await;
    gb.shutdown().await;
    store.close().await;
    store_b.close().await;
    db.drop_db().await;
}

/// `GET /metrics` of one in-process replica, as (series with labels, value) lines.
async fn scrape(state: &deskgate::api::AppState) -> Vec<(String, String)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let server = tokio::spawn(axum::serve(listener, deskgate::api::app(state.clone())).into_future());
    let text = reqwest::Client::new().get(url).bearer_auth(SERVE_TOKEN).send().await.unwrap().text().await.unwrap();
    server.abort();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn sample<'a>(metrics: &'a [(String, String)], series: &str) -> Option<&'a str> {
    metrics.iter().find(|(k, _)| k == series).map(|(_, v)| v.as_str())
}

/// Two replicas on one PostgreSQL database and one Redis, each scraped: the `replica`-labelled
/// series say which one runs the connection's timers (its `connection` lease), whose workers hold
/// which outbox claims, that both budget in shared mode, and carry each replica's own 429 and
/// lane figures; store-wide series are the same on both and say so in their help.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_replica_reports_what_it_holds_in_its_metrics() {
    let db = PgDb::create().await;
    let sim = deskgate_sim::start(SimConfig::new(Platform::Zendesk).seed(13).frozen_at(T0)).await.unwrap();
    let clock = ManualClock::new(T0);
    let prefix = unique("metrics");
    let mut replicas = Vec::new();
    for r in ["m1", "m2"] {
        let backend = RedisBackend::new(&redis_url(), &prefix, Duration::from_millis(500)).unwrap();
        let settings = SharedSettings { replica_id: r.into(), replicas: 2, probe_every: Duration::from_secs(1) };
        let shared = Arc::new(SharedBudgets::new(Arc::new(backend), settings, None));
        replicas.push(gateway_replica(&db, &clock, r, |c| c.shared_budgets = Some(shared)).await);
    }
    let store = replicas[0].1.clone();
    api_key_connection(&sim, &store).await;
    // A second connection, live but without credentials, so no worker claims its entry: the
    // claim below is the one m2's worker would have made.
    store.create_connection(&deskgate::store::NewConnection::new("beta", "zendesk", "Beta"), T0).await.unwrap();
    store.set_connection_state("beta", &deskgate::store::ConnectionState::Live, T0).await.unwrap();
    let new = deskgate::store::NewAction {
        connection_id: "beta".into(),
        ticket_id: "1".into(),
        action: serde_json::json!({ "type": "reply", "body": "hi" }),
        idempotency_key: "metrics-test-1".into(),
        app_key: None,
        not_before: T0,
    };
    store.enqueue(&new, T0, Duration::from_secs(60)).await.unwrap();
    let claim = deskgate::store::Claim { owner: "m2/beta".into(), now: T0, lease_for: Duration::from_secs(300), limit: 10, connection_id: Some("beta".into()) };
    assert_eq!(store.claim_actions(&claim).await.unwrap().len(), 1);
    // m1 ticks first and takes acme's timers.
    for (g, _, _) in &replicas {
        g.run_timers_once().await;
    }
    let m1 = scrape(&replicas[0].2).await;
    let m2 = scrape(&replicas[1].2).await;
    for (m, id) in [(&m1, "m1"), (&m2, "m2")] {
        assert_eq!(sample(m, &format!("deskgate_replica_info{{replica=\"{id}\"}}")), Some("1"), "{id}");
        assert_eq!(sample(m, &format!("deskgate_replica_shared_budget_mode{{replica=\"{id}\",mode=\"shared\"}}")), Some("1"), "{id}");
        assert_eq!(sample(m, &format!("deskgate_replica_shared_budget_mode{{replica=\"{id}\",mode=\"fallback\"}}")), Some("0"), "{id}");
        for lane in ["write", "read"] {
            assert_eq!(sample(m, &format!("deskgate_replica_rate_limited_total{{replica=\"{id}\",connection=\"acme\",lane=\"{lane}\"}}")), Some("0"), "{id}");
            let u = sample(m, &format!("deskgate_replica_lane_utilization{{replica=\"{id}\",connection=\"acme\",bucket=\"account\",lane=\"{lane}\"}}"));
            assert!(u.is_some_and(|u| u.parse::<f64>().is_ok_and(|u| (0.0..=1.0).contains(&u))), "{id} {lane}: {u:?}");
        }
        // Store-wide: the same on both replicas.
        assert_eq!(sample(m, "deskgate_outbox_in_flight{state=\"sent\"}").or(Some("0")), sample(&m1, "deskgate_outbox_in_flight{state=\"sent\"}").or(Some("0")));
    }
    let lease = |id: &str, conn: &str, name: &str| format!("deskgate_replica_leases_held{{replica=\"{id}\",connection=\"{conn}\",lease=\"{name}\"}}");
    assert_eq!(sample(&m1, &lease("m1", "acme", "connection")), Some("1"), "m1 runs acme's timers");
    assert_eq!(sample(&m2, &lease("m2", "acme", "connection")), None, "m2 does not");
    let claims = |id: &str, conn: &str| format!("deskgate_replica_outbox_claims{{replica=\"{id}\",connection=\"{conn}\"}}");
    assert_eq!(sample(&m2, &claims("m2", "beta")), Some("1"), "m2's worker holds beta's entry");
    assert_eq!(sample(&m1, &claims("m1", "beta")), Some("0"));
    assert_eq!(sample(&m1, "deskgate_inbox_pending{connection=\"acme\"}"), sample(&m2, "deskgate_inbox_pending{connection=\"acme\"}"));

    // m1 stops: m2 takes acme's timers once the lease period it last read has passed.
    replicas[0].0.shutdown().await;
    clock.advance(deskgate::gateway::GatewayConfig::default().timer_lease);
    replicas[1].0.run_timers_once().await;
    let m2 = scrape(&replicas[1].2).await;
    assert_eq!(sample(&m2, &lease("m2", "acme", "connection")), Some("1"), "m2 took acme's timers");
    let m1 = scrape(&replicas[0].2).await;
    assert_eq!(sample(&m1, &lease("m1", "acme", "connection")), None, "m1 no longer reports the lease it released");
    for (g, s, _) in replicas {
        g.shutdown().await;
        s.close().await;
    }
    db.drop_db().await;
}
