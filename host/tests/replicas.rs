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

use deskgate::bindings::{Action, ApplyAction, Connection, HttpRequest, HttpResponse, Lane, Operation, Outcome};
use deskgate::budget::{
    BudgetConfig, BudgetGate, BudgetLayer, Permit, RedisBackend, SharedBudgets, SharedSettings,
};
use deskgate::clock::ManualClock;
use deskgate::driver::{Credential, Driver, DriverConfig, NoHooks, StepHooks, Target, authorization};
use deskgate::runtime::{Adapter, AdapterRuntime, RuntimeConfig};
use deskgate::store::{self, SecretKey, SharedStore};
use deskgate_sim::{AccountSpec, AgentSpec, CredentialSpec, Platform, SimConfig, SimHandle, TicketSpec};

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
struct Lanes<'a> {
    gate: &'a BudgetGate,
    adapter: &'a Adapter,
    target: &'a Target,
    permit: Option<Permit>,
}

impl StepHooks for Lanes<'_> {
    fn before_send(&mut self, request: &HttpRequest) -> impl std::future::Future<Output = Result<(), String>> + Send {
        let wait = self.gate.acquire_request(request);
        async move {
            self.permit = Some(wait.await.map_err(|e| e.to_string())?);
            Ok(())
        }
    }

    fn after_response(&mut self, _request: &HttpRequest, response: &HttpResponse) {
        let Ok(obs) = self.adapter.observe(&self.target.connection, response) else { return };
        match &self.permit {
            Some(p) => self.gate.observe_after(p, &obs),
            None => self.gate.observe(&obs),
        }
    }
}

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
        authorization: authorization(&d.auth, &credential).unwrap(),
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
                    let mut hooks = Lanes { gate: &gate, adapter: &acct.adapter, target: &acct.target, permit: None };
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
    let mut hooks = Lanes { gate, adapter: &acct.adapter, target: &acct.target, permit: None };
    let r = tokio::time::timeout(Duration::from_secs(10), driver.execute(&acct.adapter, &acct.target, &op, None, &mut hooks))
        .await
        .expect("a write waited behind the read flood");
    assert!(matches!(r, Ok(Ok(Outcome::Written(_)))), "write: {r:?}");
    assert_eq!(hooks.permit.as_ref().map(|p| p.lane), Some(Lane::Write));
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
