//! Several replicas (issue #9): outbox throughput and write latency with one and with three
//! replicas on PostgreSQL + Redis, beside the embedded SQLite figure, and the cost of one
//! rate-budget decision shared in Redis against a local one.
//!
//! "Replicas" are outbox workers with their own store pools, budget layers and Redis clients in
//! this process, against one Intercom simulator over HTTP (limits lifted so that the figure is the
//! gateway's, not the plan's). Each run makes its own PostgreSQL database and Redis key prefix.
//! The machine's two cores are shared by the simulator, the workers, PostgreSQL and Redis: the
//! figures are for comparing the set-ups side by side, not absolute capacity.
//!
//! Run: `cargo run --release -p deskgate-bench --bin replicas [-- ACTIONS [DECISIONS]]`
//! (needs PostgreSQL on 127.0.0.1:5432 with trust auth and Redis on 127.0.0.1:6379, or
//! `DESKGATE_TEST_POSTGRES` / `DESKGATE_TEST_REDIS`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use deskgate::bindings::{Action, BucketDraw, BucketScope, Connection, Operation, Outcome, PlanLimits, RateBucket};
use deskgate::budget::{
    BudgetConfig, BudgetGate, BudgetLayer, Priority, RateBudget, RedisBackend, SharedBudgets, SharedSettings,
};
use deskgate::clock::{ManualClock, SharedClock, SystemClock};
use deskgate::driver::{Credential, Driver, DriverConfig, NoHooks, Target, authorization};
use deskgate::outbox::{Outbox, OutboxConfig, OutboxWorker, WorkerParts};
use deskgate::runtime::{AdapterRuntime, RuntimeConfig};
use deskgate::store::{self, ConnectionState, NewConnection, OutboxState, SecretKey, SharedStore};
use deskgate_sim::{AccountSpec, AgentSpec, CredentialSpec, LimitOverrides, Platform, SimConfig, TicketSpec};

fn pg_base() -> String {
    std::env::var("DESKGATE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into()).trim_end_matches('/').to_string()
}

fn redis_url() -> String {
    std::env::var("DESKGATE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn tag() -> String {
    format!("{}_{}", std::process::id(), std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis())
}

async fn pg_admin(sql: &str) -> anyhow::Result<()> {
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&format!("{}/postgres", pg_base()))
        .await
        .context("PostgreSQL (set DESKGATE_TEST_POSTGRES)")?;
    sqlx::query(sql).execute(&mut admin).await?;
    sqlx::Connection::close(admin).await.ok();
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let actions: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(600);
    let decisions: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20_000);

    println!("## One budget decision: local vs shared in Redis ({decisions} sequential grants)\n");
    println!("| decision | mean µs | p50 µs | p99 µs |");
    println!("|---|---|---|---|");
    let local = decision_cost(None, decisions).await?;
    let shared = decision_cost(Some(redis_url()), decisions).await?;
    for (name, d) in [("local (in process)", &local), ("shared (Redis, one EVALSHA)", &shared)] {
        println!("| {name} | {:.2} | {:.2} | {:.2} |", d.0, d.1, d.2);
    }
    println!("\nshared / local, mean: {:.0}x\n", shared.0 / local.0);

    println!("## Outbox: {actions} replies submitted in one burst while the workers run\n");
    println!("| set-up | actions/s | write p50 ms | write p99 ms | from submission p50 ms | from submission p99 ms |");
    println!("|---|---|---|---|---|---|");
    let rt = runtime();
    for (name, replicas, pg) in
        [("SQLite (embedded), 1 replica", 1, false), ("PostgreSQL + Redis, 1 replica", 1, true), ("PostgreSQL + Redis, 3 replicas", 3, true)]
    {
        let r = outbox_run(&rt, actions, replicas, pg).await?;
        println!("| {name} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |", r.rate, r.sent.0, r.sent.1, r.submitted.0, r.submitted.1);
    }
    Ok(())
}

fn runtime() -> Arc<AdapterRuntime> {
    let mut rt = AdapterRuntime::new(RuntimeConfig { max_instances: 64, warm_per_adapter: 16, ..RuntimeConfig::default() })
        .expect("engine");
    rt.load_builtin().expect("built-in adapters");
    Arc::new(rt)
}

/// Mean, p50 and p99 of one granted read decision in microseconds, through a gate (the path a
/// request takes), locally or confirmed in Redis.
async fn decision_cost(redis: Option<String>, n: usize) -> anyhow::Result<(f64, f64, f64)> {
    let plan = PlanLimits {
        plan: "bench".into(),
        buckets: vec![RateBucket {
            name: "account".into(),
            scope: BucketScope::Account,
            limit: u32::MAX,
            window_ms: 60_000,
            description: String::new(),
        }],
    };
    let clock: SharedClock = Arc::new(ManualClock::new(1_800_000_000_000));
    let budget = RateBudget::new(&plan, BudgetConfig::default());
    let gate = match redis {
        None => BudgetGate::new(budget, clock),
        Some(url) => {
            let backend = RedisBackend::new(&url, &format!("dgbench_{}", tag()), Duration::from_secs(1))?;
            let shared = Arc::new(SharedBudgets::new(Arc::new(backend), SharedSettings::default(), None));
            BudgetGate::shared(budget, clock, shared, "bench")
        }
    };
    let draws = [BucketDraw { bucket: "account".into(), key: None, cost: 1 }];
    // Warm up (connection, script load).
    for _ in 0..100 {
        gate.acquire(Priority::Read, &draws).await?;
    }
    let mut us = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        gate.acquire(Priority::Read, &draws).await?;
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let mean = us.iter().sum::<f64>() / n as f64;
    us.sort_by(|a, b| a.total_cmp(b));
    Ok((mean, percentile(&us, 0.5), percentile(&us, 0.99)))
}

/// What one outbox run measured.
struct Run {
    /// Actions confirmed per second, from the first submission to the outbox drained.
    rate: f64,
    /// p50 and p99 (ms) of marked sent → confirmed: the write itself.
    sent: (f64, f64),
    /// p50 and p99 (ms) of submitted → confirmed: what the app waits, queueing behind the burst
    /// included (the workers run while the burst is submitted, as fast as one submitter can).
    submitted: (f64, f64),
}

/// Actions per second and write latency percentiles in ms, from the send and from submission.
async fn outbox_run(rt: &AdapterRuntime, actions: usize, replicas: usize, pg: bool) -> anyhow::Result<Run> {
    // Intercom: its write rate is bounded only by the app and workspace limits (lifted here);
    // Zendesk's declared Update Ticket cap (100 per minute) would make this a plan benchmark.
    let adapter = rt.get("intercom").expect("intercom");
    let sim = deskgate_sim::start(SimConfig { request_log_capacity: 10_000, ..SimConfig::new(Platform::Intercom) }).await?;
    let err = |e: deskgate_sim::SimError| anyhow::anyhow!("{e}");
    let account = sim.create_account(AccountSpec::default()).map_err(err)?.id;
    sim.set_limits(
        account,
        LimitOverrides {
            app_per_minute: Some(6_000_000),
            workspace_per_minute: Some(6_000_000),
            ..Default::default()
        },
    )
    .map_err(err)?;
    let admin = sim.create_agent(account, AgentSpec { name: Some("Ada".into()), ..Default::default() }).map_err(err)?;
    let cred = sim.create_credential(account, CredentialSpec { agent_id: Some(admin.id), ..Default::default() }).map_err(err)?;
    let d = adapter.descriptor();
    let credential = Credential::Bearer(cred.token.clone());
    let mut target = Target {
        base_url: sim.base_url(),
        authorization: authorization(&d.auth, &credential)?.into(),
        connection: Connection { id: "acme".into(), plan: d.default_plan.clone(), agent_id: None, settings: vec![] },
    };
    let driver = Driver::new(DriverConfig::default())?;
    if let Ok(Ok(Outcome::Identity(me))) = driver.execute(&adapter, &target, &Operation::WhoAmI, None, &mut NoHooks).await {
        target.connection.agent_id = Some(me.agent_id);
    }
    let tickets: Vec<String> = (0..64)
        .map(|i| {
            let t = sim.create_ticket(account, TicketSpec { subject: Some(format!("bench {i}")), ..Default::default() }).unwrap();
            t["id"].as_u64().map(|n| n.to_string()).or_else(|| t["id"].as_str().map(str::to_string)).expect("id")
        })
        .collect();

    let count_writes =
        || -> usize { tickets.iter().map(|t| sim.writes(account, Some(t.parse().unwrap())).map(|w| w.len()).unwrap_or(0)).sum() };
    let writes_before = count_writes();
    let key = SecretKey::from_bytes([8; 32]);
    let db = format!("dgbench_{}", tag());
    let dir = std::env::temp_dir().join(&db);
    let url = if pg {
        pg_admin(&format!("CREATE DATABASE {db}")).await?;
        format!("{}/{db}", pg_base())
    } else {
        std::fs::create_dir_all(&dir)?;
        dir.join("deskgate.db").display().to_string()
    };
    let mut stores: Vec<SharedStore> = Vec::new();
    for _ in 0..replicas {
        stores.push(store::open(&url, key.clone()).await?);
    }
    stores[0].create_connection(&NewConnection::new("acme", "intercom", "bench"), 0).await?;
    stores[0].set_connection_state("acme", &ConnectionState::Live, 0).await?;
    let clock: SharedClock = Arc::new(SystemClock);
    let config = OutboxConfig::default();
    let outbox = Outbox::new(stores[0].clone(), clock.clone(), config.clone());
    let prefix = format!("dgbench_{}", tag());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let start = Instant::now();
    let mut workers = Vec::new();
    for (i, store) in stores.iter().enumerate() {
        let layer = BudgetLayer::new(clock.clone(), BudgetConfig::default());
        let layer = if pg {
            let backend = RedisBackend::new(&redis_url(), &prefix, Duration::from_secs(1))?;
            let settings = SharedSettings { replica_id: format!("r{i}"), replicas: replicas as u32, probe_every: Duration::from_secs(1) };
            layer.with_shared(Arc::new(SharedBudgets::new(Arc::new(backend), settings, None)))
        } else {
            layer
        };
        let gate = layer.connect(&target.connection, d, None)?;
        let worker = OutboxWorker::new(WorkerParts {
            store: store.clone(),
            clock: clock.clone(),
            driver: driver.clone(),
            adapter: adapter.clone(),
            target: target.clone(),
            gate,
            owner: format!("bench-r{i}"),
            config: config.clone(),
            events: None,
            auth_hook: None,
        });
        let rx = stop_rx.clone();
        workers.push(tokio::spawn(async move { worker.run(rx).await }));
    }
    // The workers are running when the app submits, as in the gateway: latency from submission is
    // what the app waits for its action to be confirmed, queueing behind the burst included.
    let mut ids = Vec::with_capacity(actions);
    for i in 0..actions {
        let rec = outbox.submit("acme", &tickets[i % tickets.len()], &Action::Reply(format!("reply {i}")), None).await?;
        ids.push(rec.id);
    }
    let last = *ids.last().unwrap();
    loop {
        let pending = stores[0]
            .list_actions(&store::ActionQuery { in_flight_only: true, limit: 1, ..Default::default() })
            .await?;
        if pending.is_empty() {
            break;
        }
        if start.elapsed() > Duration::from_secs(std::env::var("BENCH_DRAIN_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(300)) {
            let left = stores[0]
                .list_actions(&store::ActionQuery { in_flight_only: true, limit: 5, ..Default::default() })
                .await?;
            anyhow::bail!("the outbox did not drain (last id {last}); still in flight: {left:#?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    let _ = stop_tx.send(true);
    for w in workers {
        let _ = w.await;
    }
    let mut lat = Vec::with_capacity(actions);
    let mut from_submission = Vec::with_capacity(actions);
    for id in &ids {
        let e = stores[0].get_action(*id).await?.context("action")?;
        anyhow::ensure!(e.state == OutboxState::Confirmed, "action {id} ended {:?}", e.state);
        lat.push((e.updated_at - e.last_sent_at.unwrap_or(e.updated_at)) as f64);
        from_submission.push((e.updated_at - e.created_at) as f64);
    }
    from_submission.sort_by(|a, b| a.total_cmp(b));
    // Exactly once: one reply per action on the platform.
    let writes = count_writes() - writes_before;
    anyhow::ensure!(writes == actions, "{writes} writes for {actions} actions");
    lat.sort_by(|a, b| a.total_cmp(b));
    for s in stores {
        s.close().await;
    }
    if pg {
        pg_admin(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await?;
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(Run {
        rate: actions as f64 / elapsed.as_secs_f64(),
        sent: (percentile(&lat, 0.5), percentile(&lat, 0.99)),
        submitted: (percentile(&from_submission, 0.5), percentile(&from_submission, 0.99)),
    })
}
