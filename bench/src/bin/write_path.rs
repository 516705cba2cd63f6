//! The write path under a read flood (issue #4): deskgate against a naive client, side by side,
//! against the same simulators and the same workload.
//!
//! Four accounts (two Zendesk Professional at 400 requests a minute, two Intercom with the app
//! limit set to 1,200 a minute, i.e. 200 per 10-second window), each receiving resolutions at
//! 2,400 tickets an hour (reply + solve/close), first alone ("unloaded"), then with sixteen read
//! loops per account reading tickets as fast as they are let ("loaded": the read demand is many
//! times the limit). The platforms' clock runs 20x faster than real time, so a Zendesk minute
//! lasts 3 real seconds; latencies are real milliseconds.
//!
//! - **deskgate**: resolutions are submitted to the outbox (SQLite store) and sent by the
//!   connection's outbox worker through its budget gate (write lane); the read loops go through the
//!   same gate's read lane. One request per resolution where the platform applies it atomically.
//! - **naive**: the same adapter code for requests, but one token bucket per account shared by reads
//!   and writes in arrival order (at the platform's full stated limit, a burst of one window), a
//!   resolution as read ticket + post reply + set status, and 429s and 5xx retried by a generic
//!   exponential backoff (1 s doubling to 32 s, platform time), as a retry pool would.
//!
//! Reported per platform and phase: write latency p50/p99 (submit to confirmed), 429s the platform
//! answered, platform requests per resolution (unloaded phase: every request the account saw
//! divided by the resolutions), and requests accepted as a share of the 75% target
//! (`accepted / (0.75 · limit · minutes)`).
//!
//! A last section submits a batch of resolutions to four Intercom connections with the limits
//! lifted and reports end-to-end actions per second (submit to confirmed, simulator included).
//!
//! Run: `cargo run --release -p deskgate-bench --bin write_path [-- PHASE_SECS [LIFTED_ACTIONS]]`
//! (defaults 20 and 4000; 0 actions skips the lifted run). `BENCH_ONLY=deskgate` (or `naive`)
//! runs one client's phases; `BENCH_DEBUG=1` prints the first gate's account bucket every 250 ms
//! of deskgate's loaded phase.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use deskgate::bindings::{
    Action, ApplyAction, Connection, Failure, HttpRequest, Operation, Outcome, Resolution, TicketStatus,
};
use deskgate::budget::{BudgetConfig, BudgetGate, BudgetLayer, GateHooks};
use deskgate::clock::{Clock, Millis, SharedClock};
use deskgate::driver::{Credential, Driver, DriverConfig, NoHooks, StepHooks, Target, authorization};
use deskgate::outbox::{Outbox, OutboxConfig, OutboxEvent, OutboxWorker, WorkerParts};
use deskgate::runtime::{Adapter, AdapterRuntime, RuntimeConfig};
use deskgate::store::{self, ConnectionState, NewConnection, SecretKey, SharedStore};
use deskgate_sim::{
    AccountSpec, AgentSpec, CredKind, CredentialInfo, CredentialSpec, LimitOverrides, Platform, RequestFilter, Sim, SimClock,
    SimConfig, SimHandle, TicketSpec,
};

/// Start of platform time (2027-01-15).
const T0: i64 = 1_800_000_000_000;
/// Platform milliseconds per real millisecond.
const RATE: f64 = 20.0;
/// Resolutions per account per platform hour.
const TICKETS_PER_HOUR: f64 = 2_400.0;
/// Read loops per account in the loaded phase.
const READERS: usize = 16;
/// The budget's target share of each limit.
const TARGET: f64 = 0.75;

/// The simulators' clock as the gateway's clock.
#[derive(Debug, Clone)]
struct SimTime(SimClock);

impl Clock for SimTime {
    fn now_ms(&self) -> Millis {
        self.0.now_ms()
    }
    fn real_wait(&self, ms: Millis) -> Duration {
        self.0.real_wait(ms)
    }
}

/// One helpdesk account and how to reach it.
struct Account {
    name: String,
    platform: Platform,
    sim: Sim,
    account: u64,
    adapter: Arc<Adapter>,
    target: Target,
    /// The limit the platform enforces, per window.
    limit: u32,
    /// The window of that limit, platform ms.
    window_ms: i64,
    read_ticket: String,
    /// Fresh tickets, one per resolution.
    tickets: Mutex<Vec<String>>,
}

impl Account {
    fn next_ticket(&self) -> String {
        self.tickets.lock().unwrap().pop().expect("enough tickets were created")
    }
}

fn credential(platform: Platform, cred: &CredentialInfo) -> Credential {
    match platform {
        _ if cred.kind == CredKind::Oauth => Credential::Bearer(cred.token.clone()),
        Platform::Zendesk => Credential::Basic(
            [("email".to_string(), cred.email.clone()), ("token".to_string(), cred.token.clone())].into(),
        ),
        Platform::Freshdesk => Credential::Basic([("api_key".to_string(), cred.token.clone())].into()),
        Platform::Intercom => Credential::Bearer(cred.token.clone()),
    }
}

async fn account(rt: &AdapterRuntime, handle: &SimHandle, name: &str, tickets: usize, lifted: bool) -> anyhow::Result<Account> {
    let platform = handle.platform();
    let sim = handle.sim();
    let err = |e: deskgate_sim::SimError| anyhow::anyhow!("{e}");
    let account = sim.create_account(AccountSpec { name: Some(name.into()), ..AccountSpec::default() }).map_err(err)?.id;
    let (limit, window_ms) = match (platform, lifted) {
        (Platform::Intercom, true) => {
            sim.set_limits(
                account,
                LimitOverrides { app_per_minute: Some(60_000_000), workspace_per_minute: Some(60_000_000), ..Default::default() },
            )
            .map_err(err)?;
            (10_000_000, 10_000)
        }
        (Platform::Intercom, false) => {
            sim.set_limits(account, LimitOverrides { app_per_minute: Some(1_200), ..Default::default() }).map_err(err)?;
            (200, 10_000)
        }
        // Professional: 400 a minute.
        _ => (400, 60_000),
    };
    let admin = sim.create_agent(account, AgentSpec { name: Some("Ada Admin".into()), ..Default::default() }).map_err(err)?;
    let cred = sim.create_credential(account, CredentialSpec { agent_id: Some(admin.id), ..Default::default() }).map_err(err)?;
    let adapter = rt.get(&platform.to_string()).context("built-in adapter")?;
    let d = adapter.descriptor();
    let mut target = Target {
        base_url: sim.base_url(),
        authorization: authorization(&d.auth, &credential(platform, &cred))?.into(),
        connection: Connection { id: name.into(), plan: d.default_plan.clone(), agent_id: None, settings: vec![] },
    };
    let driver = Driver::new(DriverConfig::default())?;
    match driver.execute(&adapter, &target, &Operation::WhoAmI, None, &mut NoHooks).await {
        Ok(Ok(Outcome::Identity(me))) => target.connection.agent_id = Some(me.agent_id),
        other => anyhow::bail!("{name}: who-am-i: {other:?}"),
    }
    let mut ids = Vec::with_capacity(tickets + 1);
    for i in 0..=tickets {
        let t = sim.create_ticket(account, TicketSpec { subject: Some(format!("bench {i}")), ..Default::default() }).map_err(err)?;
        ids.push(t["id"].as_u64().map(|n| n.to_string()).or_else(|| t["id"].as_str().map(str::to_string)).context("ticket id")?);
    }
    let read_ticket = ids.pop().expect("one extra");
    Ok(Account { name: name.into(), platform, sim, account, adapter, target, limit, window_ms, read_ticket, tickets: Mutex::new(ids) })
}

fn resolution(i: usize) -> Action {
    Action::Resolve(Resolution { reply: format!("Fixed, thanks for waiting ({i})."), status: TicketStatus::Solved, tags: vec![], assignee: None })
}

// -- deskgate --------------------------------------------------------------------------------

/// Settled actions, by id, with the real time they settled.
type Settled = Arc<Mutex<HashMap<i64, (Instant, String)>>>;

/// deskgate for the accounts: one store, per account a gate and a running outbox worker.
struct Gateway {
    store: SharedStore,
    outbox: Outbox,
    gates: Vec<BudgetGate>,
    settled: Settled,
    notify: Arc<tokio::sync::Notify>,
    stop: tokio::sync::watch::Sender<bool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    dir: std::path::PathBuf,
}

async fn gateway(accounts: &[Arc<Account>], clock: &SharedClock, tag: &str) -> anyhow::Result<Gateway> {
    let dir = std::env::temp_dir().join(format!("dg-write-path-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let url = format!("sqlite://{}?synchronous=normal", dir.join("deskgate.db").display());
    let store = store::open(&url, SecretKey::from_bytes([5; 32])).await?;
    let now = clock.now_ms();
    let config = OutboxConfig { poll_interval: Duration::from_millis(2), concurrency: 32, ..OutboxConfig::default() };
    let layer = BudgetLayer::new(clock.clone(), BudgetConfig::default());
    let settled: Settled = Arc::default();
    let notify = Arc::new(tokio::sync::Notify::new());
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut gates = Vec::new();
    let mut workers = Vec::new();
    for a in accounts {
        store.create_connection(&NewConnection::new(&a.name, &a.platform.to_string(), "bench"), now).await?;
        store.set_connection_state(&a.name, &ConnectionState::Live, now).await?;
        let gate = layer.connect(&a.target.connection, a.adapter.descriptor(), None)?;
        let (sink, wake) = (settled.clone(), notify.clone());
        let worker = OutboxWorker::new(WorkerParts {
            store: store.clone(),
            clock: clock.clone(),
            driver: Driver::new(DriverConfig::default())?,
            adapter: a.adapter.clone(),
            target: a.target.clone(),
            gate: gate.clone(),
            owner: format!("bench-{}", a.name),
            config: config.clone(),
            events: Some(Arc::new(move |ev: &OutboxEvent| {
                if let OutboxEvent::Settled(rec) = ev {
                    sink.lock().unwrap().insert(rec.id, (Instant::now(), rec.state.clone()));
                    wake.notify_waiters();
                }
            })),
            auth_hook: None,
        });
        let rx = stop_rx.clone();
        workers.push(tokio::spawn(async move { worker.run(rx).await }));
        gates.push(gate);
    }
    let outbox = Outbox::new(store.clone(), clock.clone(), config);
    Ok(Gateway { store, outbox, gates, settled, notify, stop, workers, dir })
}

impl Gateway {
    fn handle(&self) -> GatewayRef {
        GatewayRef { outbox: self.outbox.clone(), settled: self.settled.clone(), notify: self.notify.clone() }
    }

    fn read_loops(&self, accounts: &[Arc<Account>], stop: &Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        for (a, gate) in accounts.iter().zip(&self.gates) {
            for _ in 0..READERS {
                let (a, gate, stop) = (a.clone(), gate.clone(), stop.clone());
                tasks.push(tokio::spawn(async move {
                    let driver = Driver::new(DriverConfig::default()).expect("driver");
                    let op = Operation::GetTicket(a.read_ticket.clone());
                    while !stop.load(Ordering::Relaxed) {
                        let mut hooks = GateHooks::new(&gate, &a.adapter, &a.target);
                        // A refused read (a 429 the budget did not prevent) is counted by the
                        // platform; the loop simply asks again through the gate.
                        if driver.execute(&a.adapter, &a.target, &op, None, &mut hooks).await.is_err() {
                            return;
                        }
                    }
                }));
            }
        }
        tasks
    }

    async fn close(self) {
        let _ = self.stop.send(true);
        for w in self.workers {
            let _ = w.await;
        }
        self.store.close().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// -- the naive client ------------------------------------------------------------------------

/// One token bucket for everything an account's client sends, taken in arrival order.
struct NaiveBucket {
    clock: SharedClock,
    /// Tokens per platform ms.
    refill: f64,
    capacity: f64,
    state: tokio::sync::Mutex<(f64, Millis)>,
}

impl NaiveBucket {
    fn new(clock: SharedClock, limit: u32, window_ms: i64) -> Self {
        let now = clock.now_ms();
        let capacity = f64::from(limit);
        Self { clock, refill: capacity / window_ms as f64, capacity, state: tokio::sync::Mutex::new((capacity, now)) }
    }

    async fn take(&self) {
        // tokio's mutex is fair: waiters get it in the order they asked.
        let mut s = self.state.lock().await;
        loop {
            let now = self.clock.now_ms();
            s.0 = (s.0 + (now - s.1) as f64 * self.refill).min(self.capacity);
            s.1 = now;
            if s.0 >= 1.0 {
                s.0 -= 1.0;
                return;
            }
            let wait = ((1.0 - s.0) / self.refill).ceil() as Millis;
            tokio::time::sleep(self.clock.real_wait(wait)).await;
        }
    }
}

struct NaiveHooks<'a>(&'a NaiveBucket);

impl StepHooks for NaiveHooks<'_> {
    fn before_send(&mut self, _request: &HttpRequest) -> impl std::future::Future<Output = Result<(), String>> + Send {
        async move {
            self.0.take().await;
            Ok(())
        }
    }
}

/// Run `op` until it succeeds, retrying 429s and transient failures after a generic backoff.
async fn naive_call(driver: &Driver, a: &Account, bucket: &NaiveBucket, clock: &SharedClock, op: &Operation) -> anyhow::Result<()> {
    let mut attempt = 0u32;
    loop {
        match driver.execute(&a.adapter, &a.target, op, None, &mut NaiveHooks(bucket)).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(Failure::RateLimited(_) | Failure::Transient(_))) | Err(_) if attempt < 12 => {
                let backoff_ms = 1_000i64 << attempt.min(5);
                attempt += 1;
                tokio::time::sleep(clock.real_wait(backoff_ms)).await;
            }
            Ok(Err(f)) => anyhow::bail!("{}: {op:?} failed: {f:?}", a.name),
            Err(e) => anyhow::bail!("{}: {op:?} failed: {e}", a.name),
        }
    }
}

async fn naive_resolve(driver: &Driver, a: &Account, bucket: &NaiveBucket, clock: &SharedClock, i: usize) -> anyhow::Result<Duration> {
    let ticket = a.next_ticket();
    let started = Instant::now();
    let apply = |action| Operation::Apply(ApplyAction { ticket_id: ticket.clone(), action });
    naive_call(driver, a, bucket, clock, &Operation::GetTicket(ticket.clone())).await?;
    naive_call(driver, a, bucket, clock, &apply(Action::Reply(format!("Fixed, thanks for waiting ({i})."))))
        .await?;
    naive_call(driver, a, bucket, clock, &apply(Action::SetStatus(TicketStatus::Solved))).await?;
    Ok(started.elapsed())
}

// -- phases ----------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Client {
    Deskgate,
    Naive,
}

/// Per account: what happened in one phase.
#[derive(Default)]
struct Tally {
    latencies_ms: Vec<f64>,
    resolutions: u64,
    requests: u64,
    rate_limited: u64,
    minutes: f64,
}

async fn phase(
    client: Client,
    loaded: bool,
    accounts: &[Arc<Account>],
    gw: Option<&Gateway>,
    clock: &SharedClock,
    secs: f64,
) -> anyhow::Result<Vec<Tally>> {
    let before: Vec<_> = accounts.iter().map(|a| a.sim.stats(a.account)).collect::<Result<_, _>>().map_err(|e| anyhow::anyhow!("{e}"))?;
    let sim_start = clock.now_ms();
    let stop = Arc::new(AtomicBool::new(false));
    let buckets: Vec<Arc<NaiveBucket>> =
        accounts.iter().map(|a| Arc::new(NaiveBucket::new(clock.clone(), a.limit, a.window_ms))).collect();
    let mut flood = Vec::new();
    if loaded {
        match client {
            Client::Deskgate => flood = gw.expect("gateway").read_loops(accounts, &stop),
            Client::Naive => {
                for (a, bucket) in accounts.iter().zip(&buckets) {
                    for _ in 0..READERS {
                        let (a, bucket, stop, clock) = (a.clone(), bucket.clone(), stop.clone(), clock.clone());
                        flood.push(tokio::spawn(async move {
                            let driver = Driver::new(DriverConfig::default()).expect("driver");
                            let op = Operation::GetTicket(a.read_ticket.clone());
                            while !stop.load(Ordering::Relaxed) {
                                let _ = naive_call(&driver, &a, &bucket, &clock, &op).await;
                            }
                        }));
                    }
                }
            }
        }
    }
    // BENCH_DEBUG=1: the first gate's state every 250 ms of the loaded deskgate phase.
    if loaded && client == Client::Deskgate && std::env::var_os("BENCH_DEBUG").is_some() {
        let (gate, stop, clock) = (gw.expect("gateway").gates[0].clone(), stop.clone(), clock.clone());
        flood.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let s = gate.snapshot();
                let a = s.budget.bucket("account").map(|b| serde_json::to_string(b).unwrap_or_default());
                eprintln!("{} waiting {:?} {}", clock.now_ms() - T0, s.waiting, a.unwrap_or_default());
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }));
    }
    // Writes: evenly spaced in platform time, the accounts staggered.
    let every = Duration::from_secs_f64(3_600.0 / TICKETS_PER_HOUR / RATE);
    let n = (secs / every.as_secs_f64()) as usize;
    let started = Instant::now();
    let mut writers = Vec::new();
    for (k, a) in accounts.iter().enumerate() {
        let (a, bucket, gw_ref) = (a.clone(), buckets[k].clone(), gw.map(Gateway::handle));
        let clock = clock.clone();
        let offset = every.mul_f64(k as f64 / accounts.len() as f64);
        writers.push(tokio::spawn(async move {
            let driver = Driver::new(DriverConfig::default()).expect("driver");
            let mut tasks = Vec::new();
            for i in 0..n {
                tokio::time::sleep_until(tokio::time::Instant::from_std(started + offset + every.mul_f64(i as f64))).await;
                let (a, bucket, driver, clock, gw_ref) = (a.clone(), bucket.clone(), driver.clone(), clock.clone(), gw_ref.clone());
                tasks.push(tokio::spawn(async move {
                    match (client, gw_ref) {
                        (Client::Deskgate, Some(g)) => g.resolve(&a, i).await,
                        _ => naive_resolve(&driver, &a, &bucket, &clock, i).await,
                    }
                }));
            }
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.expect("resolution task")?);
            }
            anyhow::Ok(out)
        }));
    }
    let mut tallies = Vec::new();
    for w in writers {
        let lat = w.await.expect("writer")?;
        tallies.push(Tally { latencies_ms: lat.iter().map(|d| d.as_secs_f64() * 1e3).collect(), resolutions: lat.len() as u64, ..Tally::default() });
    }
    // The phase lasts `secs` even if the writes finished early, so the flood's share is measured
    // over whole windows.
    let end = started + Duration::from_secs_f64(secs);
    tokio::time::sleep_until(tokio::time::Instant::from_std(end)).await;
    stop.store(true, Ordering::Relaxed);
    for f in &flood {
        f.abort();
    }
    let minutes = (clock.now_ms() - sim_start) as f64 / 60_000.0;
    for ((t, a), b) in tallies.iter_mut().zip(accounts).zip(before) {
        let after = a.sim.stats(a.account).map_err(|e| anyhow::anyhow!("{e}"))?;
        t.requests = after.requests - b.requests;
        t.rate_limited = after.rate_limited - b.rate_limited;
        t.minutes = minutes;
    }
    // Let every window of this phase close before the next phase starts.
    let longest = accounts.iter().map(|a| a.window_ms).max().unwrap_or(60_000);
    tokio::time::sleep(clock.real_wait(longest + 1_000)).await;
    Ok(tallies)
}

/// What a write task needs of the gateway (the gateway itself is not `Clone`).
#[derive(Clone)]
struct GatewayRef {
    outbox: Outbox,
    settled: Settled,
    notify: Arc<tokio::sync::Notify>,
}

impl GatewayRef {
    async fn resolve(&self, a: &Account, i: usize) -> anyhow::Result<Duration> {
        let ticket = a.next_ticket();
        let started = Instant::now();
        let rec = self.outbox.submit(&a.name, &ticket, &resolution(i), None).await?;
        loop {
            let wait = self.notify.notified();
            if let Some((at, state)) = self.settled.lock().unwrap().get(&rec.id).cloned() {
                anyhow::ensure!(state == "confirmed", "{}: resolution of ticket {ticket} ended {state}", a.name);
                return Ok(at.saturating_duration_since(started));
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), wait).await;
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// One platform's accounts folded together.
struct Row {
    p50: f64,
    p99: f64,
    resolutions: u64,
    rate_limited: u64,
    per_resolution: f64,
    share: f64,
}

fn fold(accounts: &[Arc<Account>], tallies: &[Tally], platform: Platform) -> Row {
    let mut lat = Vec::new();
    let (mut res, mut req, mut limited, mut target) = (0, 0, 0, 0.0);
    for (a, t) in accounts.iter().zip(tallies).filter(|(a, _)| a.platform == platform) {
        lat.extend_from_slice(&t.latencies_ms);
        res += t.resolutions;
        req += t.requests;
        limited += t.rate_limited;
        target += TARGET * f64::from(a.limit) * (60_000.0 / a.window_ms as f64) * t.minutes;
    }
    lat.sort_by(f64::total_cmp);
    Row {
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        resolutions: res,
        rate_limited: limited,
        per_resolution: req as f64 / res.max(1) as f64,
        share: (req - limited) as f64 / target,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let secs: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20.0);
    let lifted_actions: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(4_000);

    let mut rt = AdapterRuntime::new(RuntimeConfig { max_instances: 256, warm_per_adapter: 32, ..RuntimeConfig::default() })?;
    rt.load_builtin()?;
    let sim_clock = SimClock::with_rate(Some(T0), false, RATE);
    let clock: SharedClock = Arc::new(SimTime(sim_clock.clone()));
    let mut sims = Vec::new();
    for p in [Platform::Zendesk, Platform::Intercom] {
        let mut cfg = SimConfig::new(p).seed(7).shared_clock(sim_clock.clone());
        // The lifted run counts its platform writes in the log.
        cfg.request_log_capacity = 200_000;
        sims.push(deskgate_sim::start(cfg).await?);
    }

    // Per phase and account, with some to spare.
    let per_phase = (secs * TICKETS_PER_HOUR * RATE / 3_600.0) as usize + 2;
    let mut accounts = Vec::new();
    for (sim, p) in sims.iter().zip(["zendesk", "intercom"]) {
        for k in 1..=2 {
            accounts.push(Arc::new(account(&rt, sim, &format!("{p}-{k}"), 4 * per_phase, false).await?));
        }
    }
    println!(
        "# Write path under a read flood: {} accounts, {TICKETS_PER_HOUR} resolutions per account per hour, {READERS} read loops per account when loaded, platform clock x{RATE}, {secs} s per phase\n",
        accounts.len()
    );

    let gw = gateway(&accounts, &clock, "flood").await?;
    // One read through each gate, so each learns the limit the platform states before the clock
    // starts counting (the Intercom accounts' limit is lower than the adapter's default).
    for (a, gate) in accounts.iter().zip(&gw.gates) {
        let driver = Driver::new(DriverConfig::default())?;
        let mut hooks = GateHooks::new(gate, &a.adapter, &a.target);
        let _ = driver.execute(&a.adapter, &a.target, &Operation::GetTicket(a.read_ticket.clone()), None, &mut hooks).await?;
    }
    tokio::time::sleep(clock.real_wait(61_000)).await;

    let mut results = Vec::new();
    let only = std::env::var("BENCH_ONLY").ok();
    for (client, name) in [(Client::Deskgate, "deskgate"), (Client::Naive, "naive")] {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        for loaded in [false, true] {
            let t = phase(client, loaded, &accounts, Some(&gw), &clock, secs).await?;
            results.push((name, loaded, t));
        }
    }
    gw.close().await;

    println!("| client | platform | phase | resolutions | write p50 ms | write p99 ms | 429s | requests per resolution | accepted / 75% target |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for platform in [Platform::Zendesk, Platform::Intercom] {
        for (name, loaded, t) in &results {
            let r = fold(&accounts, t, platform);
            let per_res = if *loaded { "-".to_string() } else { format!("{:.2}", r.per_resolution) };
            let share = if *loaded { format!("{:.1}%", r.share * 100.0) } else { "-".to_string() };
            println!(
                "| {name} | {platform} | {} | {} | {:.1} | {:.1} | {} | {per_res} | {share} |",
                if *loaded { "read flood" } else { "unloaded" },
                r.resolutions,
                r.p50,
                r.p99,
                r.rate_limited
            );
        }
    }
    println!();
    for platform in [Platform::Zendesk, Platform::Intercom] {
        let p99 = |client: &str, loaded: bool| {
            results.iter().find(|(n, l, _)| *n == client && *l == loaded).map(|(_, _, t)| fold(&accounts, t, platform).p99).unwrap_or(f64::NAN)
        };
        println!(
            "{platform}: loaded / unloaded write p99: deskgate {:.2}x, naive {:.2}x",
            p99("deskgate", true) / p99("deskgate", false),
            p99("naive", true) / p99("naive", false)
        );
    }

    if lifted_actions == 0 {
        return Ok(());
    }
    // Limits lifted: end-to-end actions per second.
    let mut lifted = Vec::new();
    for k in 1..=4 {
        lifted.push(Arc::new(account(&rt, &sims[1], &format!("lifted-{k}"), lifted_actions / 4 + 1, true).await?));
    }
    let gw = gateway(&lifted, &clock, "lifted").await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..lifted_actions {
        let a = lifted[i % lifted.len()].clone();
        let g = gw.handle();
        tasks.push(tokio::spawn(async move { g.resolve(&a, i).await }));
    }
    let mut lat = Vec::with_capacity(lifted_actions);
    for t in tasks {
        lat.push(t.await.expect("task")?.as_secs_f64() * 1e3);
    }
    let took = started.elapsed();
    lat.sort_by(f64::total_cmp);
    let writes: usize = lifted.iter().map(|a| a.sim.requests(RequestFilter { account_id: Some(a.account), since_seq: None }).iter().filter(|r| r.method != "GET").count()).sum();
    println!(
        "\nLimits lifted: {lifted_actions} resolutions over 4 Intercom connections, all submitted at once: {:.0} actions/s end to end \
         ({:.1} s; submit-to-confirmed p50 {:.0} ms, p99 {:.0} ms; {writes} platform writes for {lifted_actions} resolutions)",
        lifted_actions as f64 / took.as_secs_f64(),
        took.as_secs_f64(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
    );
    gw.close().await;
    for s in sims {
        s.shutdown().await;
    }
    Ok(())
}
