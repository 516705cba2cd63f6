//! `deskgate demo`: a compressed high-volume day on the embedded default, with the failures that
//! break support automation at volume injected on schedule, and a report of what happened.
//!
//! # What runs
//!
//! Everything is real and in this process, talking over HTTP on 127.0.0.1: the three platform
//! simulators ([`deskgate_sim`]), the gateway (API, webhooks, the supervisor with its workers
//! and timers, on a temporary SQLite file), an admin contact that receives alerts, and an
//! automation client that only uses the public API: it long-polls `/v1/events`, submits one
//! resolution (reply + solved) per new ticket with an `Idempotency-Key`, and acknowledges.
//!
//! # The compressed day
//!
//! One clock ([`deskgate_sim::SimClock`] running [`DemoOptions::rate`] times faster than real
//! time) drives the simulators and the gateway alike, so rate windows, token lifetimes, the
//! 4-hour health checks, 5-10 minute sweeps and webhook retry schedules all keep their real
//! proportions; a day passes in [`DemoOptions::day_seconds`]. Tickets arrive at
//! [`DemoOptions::tickets_per_hour`] per account, spread over the day by a seeded generator.
//! When the machine cannot carry that pace (the work owed on live connections grows past half
//! an hour of arrivals), the clock slows until it catches up (`Pace`): the day keeps its
//! proportions and takes longer, so whether it passes says something about the gateway, not
//! about how busy the machine was.
//!
//! # The failures, on the day's clock
//!
//! - 00:00: the first Zendesk account connects with OAuth; its access token expires at 02:00.
//!   deskgate refreshes it at 80% of its lifetime (01:36), before anything fails.
//! - 00:00: the second Freshdesk account's API key belongs to an agent without the
//!   `edit_ticket_properties` privilege (no status changes): the scope probe finds it, raises a
//!   `scope-missing` alert naming the privilege, and nothing is written (resolutions queue
//!   durably) until the operator restores the privilege at 05:00 and probes again.
//! - All day: 20% of webhooks are lost, 5% are duplicated and 5% reordered; 2% of writes time
//!   out after they were applied.
//! - 06:00, 13:00, 19:00: a 429 storm: another client of each Zendesk and Freshdesk account
//!   spends 60% of its rate limit for half an hour.
//! - 10:00: the first Zendesk account's refresh token is revoked (someone uninstalled and
//!   reinstalled the app): the next use fails, the refresh is refused for good, the connection is
//!   suspended with a `refresh-failed` alert. At 11:00 the operator re-authenticates through
//!   the API; deskgate validates, resumes and drains what queued meanwhile.
//!
//! # Deterministic
//!
//! The workload (ticket times and texts), every injected fault decision (seeded simulators) and
//! the failure schedule depend only on `--seed`. The invariants the report carries (tickets
//! created and delivered, resolutions confirmed, duplicate writes, lost tickets, write-lane 429s,
//! alerts per kind, suspensions) are the same on every run with that seed; latencies and the
//! read lane's 429 count depend on the machine and are reported, not asserted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::{Value, json};

use crate::api::AppState;
use crate::clock::{Clock, Millis, SharedClock};
use crate::config::Secret;
use crate::driver::{Driver, DriverConfig};
use crate::gateway::{Gateway, GatewayConfig, GatewayParts};
use crate::ingest::webhook::WebhookSecret;
use crate::runtime::{AdapterRuntime, RuntimeConfig};
use crate::store::{self, ActionQuery, OutboxState, SecretKey};
use deskgate_sim::{
    AccountSpec, AgentPatch, AgentSpec, ContactSpec, CredKind, CredentialInfo, CredentialSpec, FaultConfig, Platform,
    SimClock, SimConfig, SimHandle, TicketSpec, TimeoutMode, WebhookTarget,
};

/// Midnight of the demo's day: 2026-11-30 00:00 UTC.
pub const DAY_START_MS: Millis = 1_795_996_800_000;
const HOUR: Millis = 3_600_000;
const MINUTE: Millis = 60_000;

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Seeds the workload and every injected fault.
    pub seed: u64,
    /// Real seconds the 24-hour day takes.
    pub day_seconds: f64,
    /// Accounts per platform.
    pub accounts: u32,
    /// New tickets per hour per account.
    pub tickets_per_hour: u32,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self { seed: 42, day_seconds: 120.0, accounts: 2, tickets_per_hour: 600 }
    }
}

impl DemoOptions {
    /// Day-clock milliseconds per real millisecond.
    pub fn rate(&self) -> f64 {
        86_400.0 / self.day_seconds.max(1.0)
    }
}

/// p50 and p99, milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// 429 answers the platforms gave deskgate, per lane.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct LaneCounts {
    /// Reads (GET).
    pub read: u64,
    /// Writes (POST, PUT, PATCH, DELETE).
    pub write: u64,
}

/// One connection's line in the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConnectionReport {
    /// The connection id.
    pub id: String,
    /// Its platform.
    pub platform: String,
    /// What the demo does to it.
    pub scenario: String,
    /// Tickets the simulator created.
    pub tickets_created: u64,
    /// Distinct tickets the app received.
    pub tickets_delivered: u64,
    /// Resolutions confirmed on the platform.
    pub resolutions_confirmed: u64,
    /// State at the end.
    pub state: String,
}

/// The demo's report (`--json FILE` writes it).
#[derive(Debug, Clone, Default, Serialize)]
pub struct DemoReport {
    /// The seed.
    pub seed: u64,
    /// Day-clock hours played.
    pub hours: u32,
    /// Real seconds the run took (set-up and drain included).
    pub wall_seconds: f64,
    /// Tickets the simulators created.
    pub tickets_created: u64,
    /// Distinct tickets the app received as events.
    pub tickets_delivered: u64,
    /// Resolutions the app submitted (accepted by the API).
    pub resolutions_submitted: u64,
    /// Resolutions confirmed on the platform.
    pub resolutions_confirmed: u64,
    /// Resolutions still queued or failed at the end (explained by alerts).
    pub resolutions_unsettled: u64,
    /// The unsettled ones by state, with one example of why for each.
    pub unsettled_by_state: BTreeMap<String, (u64, String)>,
    /// Writes applied twice to one ticket, as the simulators' write logs count them.
    pub duplicate_writes: u64,
    /// Tickets created but never delivered to the app.
    pub lost_tickets: u64,
    /// 429s deskgate received, per lane.
    pub responses_429: LaneCounts,
    /// Webhook deliveries the platforms sent twice.
    pub webhooks_duplicated: u64,
    /// Duplicate ticket events the inbox dropped (same platform event or same ticket version).
    pub duplicate_events_dropped: u64,
    /// Requests the simulators answered with an injected fault (writes that time out after
    /// landing, the demo's 2%).
    pub faults_injected: u64,
    /// Resolutions confirmed by reading the ticket back after an ambiguous outcome, instead of
    /// being sent again.
    pub confirmed_by_read_back: u64,
    /// Requests the other clients of the same accounts sent during the storms (each paces at
    /// most 60% of its account's per-minute limit; fewer when the machine cannot keep up).
    pub storm_requests: u64,
    /// 429s the other clients of the same accounts received during storms.
    pub storm_responses_429: u64,
    /// Alerts raised, per kind.
    pub alerts: BTreeMap<String, u64>,
    /// Alerts delivered to the admin contact (its HTTP endpoint).
    pub alerts_delivered: u64,
    /// Suspensions (connection.suspended events).
    pub suspensions: u64,
    /// Resumptions (connection.resumed events).
    pub resumptions: u64,
    /// Changes the reconciliation sweeps caught that webhooks had missed.
    pub reconciliation_catches: u64,
    /// Webhook deliveries the simulators dropped on purpose.
    pub webhooks_dropped: u64,
    /// OAuth refreshes that succeeded.
    pub token_refreshes: u64,
    /// Requests of the OAuth connection refused with a 401 before its grant is revoked at
    /// 10:00: each one a request that met a token rotation (a refresh waits for the requests in
    /// flight and holds new ones, so this is 0).
    pub refused_401_before_revocation: u64,
    /// Submit to confirmed, real milliseconds (the day's clock runs faster: day-clock times
    /// are divided by `pace.average_rate`).
    pub resolution_latency_ms: Percentiles,
    /// Day-clock milliseconds per real millisecond the day was meant to run at.
    pub rate: f64,
    /// How fast it ran: the clock slows when the machine cannot keep up (see `Pace`).
    pub pace: PaceReport,
    /// Per connection.
    pub connections: Vec<ConnectionReport>,
    /// The injected failures and what deskgate did about each.
    pub failures: Vec<FailureNote>,
}

/// One injected failure and how it was handled.
#[derive(Debug, Clone, Serialize)]
pub struct FailureNote {
    /// When (day clock, `HH:MM`).
    pub at: String,
    /// What was injected.
    pub injected: String,
    /// What deskgate did (from the store's alerts and events).
    pub handled: String,
}

/// A clock adapter so the gateway reads the simulators' (compressed) time.
#[derive(Debug, Clone)]
struct DemoClock(SimClock);

impl Clock for DemoClock {
    fn now_ms(&self) -> Millis {
        self.0.now_ms()
    }
    fn real_wait(&self, ms: Millis) -> Duration {
        self.0.real_wait(ms)
    }
}

/// Keeps the day's clock at a pace this machine can carry.
///
/// The day runs on a clock `nominal` times faster than real time, but how much work a real
/// second holds depends on the machine: on two busy cores the gateway, the simulators and the
/// automation client can fall behind the arrivals, and a day paced by the wall clock alone then
/// ends with work still queued, which says nothing about the gateway. So every half second the
/// demo weighs the work it is owed on live connections (tickets not yet delivered to the app,
/// resolutions not yet settled) against the arrivals: when more than `high` is owed and the
/// amount is still growing on the connections that were live at the last look, the clock slows
/// (x0.8 a step, down to an eighth of `nominal`); when less than `low` is owed, it speeds back up
/// (x1.25 a step, up to `nominal`). Between the two, and while a backlog shrinks, the clock
/// holds: a connection that comes back live brings what queued while it was suspended and drains
/// it at the pace its rate limit allows, which no slower clock would speed up. Slowing keeps
/// every proportion of the day (arrivals, rate windows, token lifetimes and sweeps all live on
/// the one clock), so only the day's real length changes; the report says how far it slowed.
#[derive(Debug, Clone)]
struct Pace {
    nominal: f64,
    floor: f64,
    rate: f64,
    /// Owed work below which the clock may speed up.
    low: u64,
    /// Owed work above which, if still growing, the clock slows.
    high: u64,
    /// Owed work per connection at the last look.
    prev: BTreeMap<String, u64>,
    /// The slowest rate the clock ran at.
    slowest: f64,
    /// Real time the clock ran below `nominal`.
    slowed_for: Duration,
    /// Real time at the floor with the backlog still growing: the machine could not keep up
    /// even at the slowest pace.
    overrun_for: Duration,
}

impl Pace {
    const SLOWER: f64 = 0.8;
    const FASTER: f64 = 1.25;
    /// How often the demo weighs its backlog.
    const EVERY: Duration = Duration::from_millis(500);

    /// A governor for a day whose live connections together receive `arrivals_per_minute`
    /// tickets a day-clock minute: ten minutes of arrivals owed is normal (a lost webhook waits
    /// up to ten for its sweep), thirty is falling behind.
    fn new(nominal: f64, arrivals_per_minute: f64) -> Self {
        let per_min = arrivals_per_minute.max(0.0);
        let low = ((per_min * 10.0) as u64).max(20);
        Self { nominal, floor: nominal / 8.0, rate: nominal, low, high: ((per_min * 30.0) as u64).max(3 * low), prev: BTreeMap::new(), slowest: nominal, slowed_for: Duration::ZERO, overrun_for: Duration::ZERO }
    }

    /// Weighs the work owed now per live connection, `since` (real) after the last look;
    /// returns the new rate when the clock should change pace.
    fn observe(&mut self, owed_per: BTreeMap<String, u64>, since: Duration) -> Option<f64> {
        if self.rate < self.nominal {
            self.slowed_for += since;
        }
        let owed: u64 = owed_per.values().sum();
        // Growth only where there was a last look: a connection just back from a suspension
        // arrives with its queue, which is not the machine falling behind.
        let growth: i64 = owed_per.iter().filter_map(|(c, &n)| self.prev.get(c).map(|&p| n as i64 - p as i64)).sum();
        let growing = growth > 0;
        self.prev = owed_per;
        let next = if owed > self.high && growing {
            if self.rate <= self.floor {
                self.overrun_for += since;
            }
            (self.rate * Self::SLOWER).max(self.floor)
        } else if owed < self.low {
            (self.rate * Self::FASTER).min(self.nominal)
        } else {
            self.rate
        };
        if (next - self.rate).abs() < f64::EPSILON {
            return None;
        }
        self.rate = next;
        self.slowest = self.slowest.min(next);
        Some(next)
    }
}

/// How fast the day actually ran.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct PaceReport {
    /// The clock's rate when the machine keeps up (`86,400 / --day-seconds`).
    pub nominal_rate: f64,
    /// Day-clock time over real time, 00:00 to 24:00.
    pub average_rate: f64,
    /// The slowest rate the clock had to run at.
    pub slowest_rate: f64,
    /// Real seconds the clock ran slower than nominal.
    pub slowed_seconds: f64,
    /// Real seconds the clock was at its slowest allowed rate (an eighth of nominal) and the
    /// owed work still grew: this machine could not carry the day's volume even then.
    pub overrun_seconds: f64,
}

/// A small deterministic generator (SplitMix64), so the workload depends only on the seed.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The account and connection of one demo tenant.
#[derive(Debug, Clone)]
struct Tenant {
    conn: String,
    platform: Platform,
    sim: usize,
    account: u64,
    customer: u64,
    cred: CredentialInfo,
    scenario: &'static str,
    /// The agent whose privilege is missing, for the scope scenario.
    restricted_agent: Option<u64>,
}

fn hhmm(ms: Millis) -> String {
    let m = (ms - DAY_START_MS).div_euclid(MINUTE);
    format!("{:02}:{:02}", m / 60, m % 60)
}

fn secret_for(platform: Platform, cred: &CredentialInfo) -> store::CredentialSecret {
    let fields = |pairs: &[(&str, &str)]| store::CredentialSecret::ApiKey {
        fields: pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect(),
    };
    match platform {
        _ if cred.kind == CredKind::Oauth => store::CredentialSecret::OAuth {
            access_token: cred.token.clone(),
            refresh_token: cred.refresh_token.clone(),
            client: match (&cred.client_id, &cred.client_secret) {
                (Some(id), Some(s)) => Some(store::OAuthClientSecret { client_id: id.clone(), client_secret: s.clone() }),
                _ => None,
            },
        },
        Platform::Zendesk => fields(&[("email", &cred.email), ("token", &cred.token)]),
        Platform::Freshdesk => fields(&[("api_key", &cred.token)]),
        Platform::Intercom => fields(&[("access_token", &cred.token)]),
    }
}

/// The admin contact: counts alerts posted to it.
async fn alert_receiver(count: Arc<AtomicU64>) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let app = axum::Router::new().route(
        "/alerts",
        axum::routing::post(move |_body: axum::body::Bytes| {
            let c = count.clone();
            async move {
                c.fetch_add(1, Ordering::Relaxed);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/alerts", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, task))
}

/// What the automation client saw and did.
/// What one 429 storm's half hour looked like at the simulators.
#[derive(Debug, Default)]
struct StormEvidence {
    /// The storm's half hour, day clock.
    from: Millis,
    until: Millis,
    /// Requests deskgate sent then, and the 429s among them.
    ours: u64,
    ours_429_read: u64,
    ours_429_write: u64,
    /// Requests the other clients sent then, and the 429s among them.
    others: u64,
    others_429: u64,
}

#[derive(Debug, Default)]
struct AppView {
    /// Tickets delivered, per connection.
    delivered: BTreeMap<String, BTreeSet<String>>,
    /// Tickets submitted, per connection.
    submitted: BTreeMap<String, BTreeSet<String>>,
    suspended_events: u64,
    resumed_events: u64,
    submit_errors: u64,
}

/// The work the demo is owed on live connections: tickets created but not yet delivered to the
/// app, and resolutions in flight (pending, sent or being read back). Suspended connections are
/// left out: what queues there waits for the operator, not for the machine. In-flight entries are
/// counted up to `cap` per connection: past that the answer is "far behind" either way, and a
/// machine that is behind should not also page through its whole outbox twice a second.
async fn owed_work(
    store: &store::SharedStore,
    view: &Mutex<AppView>,
    created: &BTreeMap<String, Vec<u64>>,
    cap: u32,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let live: Vec<String> = store.list_connections(false).await?.into_iter().filter(|c| c.state.name() == "live").map(|c| c.id).collect();
    let mut owed: BTreeMap<String, u64> = {
        let v = view.lock().unwrap_or_else(|e| e.into_inner());
        live.iter()
            .map(|conn| (conn.clone(), created.get(conn).map_or(0, Vec::len).saturating_sub(v.delivered.get(conn).map_or(0, BTreeSet::len)) as u64))
            .collect()
    };
    for (conn, n) in &mut owed {
        let q = ActionQuery { connection_id: Some(conn.clone()), ticket_id: None, in_flight_only: true, after_id: 0, limit: cap };
        *n += store.list_actions(&q).await?.len() as u64;
    }
    Ok(owed)
}

/// The automation client: pull, resolve, acknowledge, until told to stop.
async fn automation_client(
    api: String,
    token: String,
    view: Arc<Mutex<AppView>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    let limiter = Arc::new(tokio::sync::Semaphore::new(48));
    let mut cursor = 0i64;
    loop {
        if *stop.borrow() {
            break;
        }
        let resp = http
            .get(format!("{api}/v1/events?after={cursor}&limit=500&wait_ms=200"))
            .bearer_auth(&token)
            .send()
            .await;
        let body: Value = match resp {
            Ok(r) if r.status().is_success() => r.json().await?,
            Ok(r) => anyhow::bail!("pulling events: the gateway answered {}", r.status()),
            Err(e) => {
                tracing::warn!("pulling events: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let events = body["events"].as_array().cloned().unwrap_or_default();
        let mut submits = tokio::task::JoinSet::new();
        for ev in &events {
            let kind = ev["kind"].as_str().unwrap_or_default();
            let conn = ev["connection_id"].as_str().unwrap_or_default().to_string();
            let ticket = ev["ticket_id"].as_str().unwrap_or_default().to_string();
            match kind {
                "connection.suspended" => {
                    view.lock().unwrap_or_else(|e| e.into_inner()).suspended_events += 1;
                    continue;
                }
                "connection.resumed" => {
                    view.lock().unwrap_or_else(|e| e.into_inner()).resumed_events += 1;
                    continue;
                }
                _ if ticket.is_empty() => continue,
                _ => {}
            }
            let first = {
                let mut v = view.lock().unwrap_or_else(|e| e.into_inner());
                v.delivered.entry(conn.clone()).or_default().insert(ticket.clone());
                v.submitted.entry(conn.clone()).or_default().insert(ticket.clone())
            };
            // Resolve each ticket once; later events about it (our own reply, duplicates,
            // sweeps) need nothing, and a deleted ticket needs no answer.
            if !first || kind == "ticket.deleted" {
                continue;
            }
            let permit = limiter.clone().acquire_owned().await?;
            let (http, api, token, view) = (http.clone(), api.clone(), token.clone(), view.clone());
            submits.spawn(async move {
                let _permit = permit;
                let body = json!({
                    "ticket_id": ticket,
                    "action": {
                        "type": "resolve",
                        "reply": format!("Hello! This is resolved now (ticket {ticket}). Reply if anything is still wrong."),
                        "status": "solved",
                        "tags": ["deskgate-demo"],
                    }
                });
                for attempt in 0..5 {
                    let r = http
                        .post(format!("{api}/v1/connections/{conn}/actions"))
                        .bearer_auth(&token)
                        .header("idempotency-key", format!("demo-{conn}-{ticket}"))
                        .json(&body)
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().is_success() => return,
                        Ok(r) => tracing::warn!(attempt, status = %r.status(), "submitting a resolution"),
                        Err(e) => tracing::warn!(attempt, "submitting a resolution: {e}"),
                    }
                    tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
                }
                view.lock().unwrap_or_else(|e| e.into_inner()).submit_errors += 1;
            });
        }
        while submits.join_next().await.is_some() {}
        if let Some(last) = events.last().and_then(|e| e["id"].as_i64()) {
            cursor = last;
            let r = http
                .post(format!("{api}/v1/events/ack"))
                .bearer_auth(&token)
                .json(&json!({ "through": cursor }))
                .send()
                .await?;
            anyhow::ensure!(r.status().is_success(), "acknowledging events: the gateway answered {}", r.status());
        } else if stop.has_changed().unwrap_or(true) && *stop.borrow_and_update() {
            break;
        }
    }
    Ok(())
}

/// Another client of the same accounts, spending most of their rate limit for a while: at most
/// `per_minute` requests in any minute of the day clock, sent as their slots come due.
///
/// The day clock runs hundreds of times faster than real time, so a neighbour that sent one
/// request after another would fall behind its slots. It sends the slots due at each step
/// together instead, and the ones it could not send in time are skipped, never made up in a
/// burst: a neighbour that caught up ran at well over the whole limit for minutes after its
/// storm had ended (568 requests in one minute against a limit of 400, 15:08 on a 13:00-13:30
/// storm), which no client of the account, deskgate or other, could have stayed under.
async fn storm(base_url: String, authorization: String, path: String, per_minute: u32, until: Millis, clock: SimClock) -> (u64, u64) {
    let http = reqwest::Client::new();
    let url = format!("{base_url}{path}");
    let spacing = 60_000 / Millis::from(per_minute.max(1));
    let (mut sent, mut limited) = (0u64, 0u64);
    // Day-clock times of the requests sent in the last minute.
    let mut recent: std::collections::VecDeque<Millis> = std::collections::VecDeque::new();
    let mut next = clock.now_ms();
    while clock.now_ms() < until {
        let now = clock.now_ms();
        while recent.front().is_some_and(|&t| t <= now - 60_000) {
            recent.pop_front();
        }
        if next <= now {
            let due = u64::try_from((now - next) / spacing + 1).unwrap_or(1);
            let room = u64::from(per_minute).saturating_sub(recent.len() as u64);
            let mut batch = tokio::task::JoinSet::new();
            for _ in 0..due.min(room) {
                batch.spawn(http.get(&url).header("authorization", &authorization).send());
            }
            let n = batch.len();
            while let Some(r) = batch.join_next().await {
                if let Ok(Ok(r)) = r {
                    sent += 1;
                    limited += u64::from(r.status().as_u16() == 429);
                }
            }
            // Counted when the batch is done, not when it left: the platform counts a request
            // when it arrives, somewhere between the two, and on a loaded machine that is many
            // day-clock seconds after it left. Batches go one after another, so counting them at
            // their end keeps every platform minute at or under `per_minute` (counting them at
            // their start let 404 arrive in one minute).
            let done = clock.now_ms();
            recent.extend(std::iter::repeat_n(done, n));
            // Past every slot due now, sent or not: the fraction of a slot already elapsed
            // carries over, and the slots the minute's cap refused are skipped, not made up.
            next += Millis::try_from(due).unwrap_or(1) * spacing;
        }
        tokio::time::sleep(clock.real_wait((next - clock.now_ms()).max(0)).min(Duration::from_millis(5))).await;
    }
    (sent, limited)
}

/// Run the demo. `progress` gets one line per day-clock hour and per injected failure.
///
/// # Errors
/// When a part cannot start (ports, the store, the adapters) or the gateway misbehaves
/// (the API refuses the demo's own valid requests).
#[allow(clippy::too_many_lines)]
pub async fn run(opts: DemoOptions, progress: &(dyn Fn(&str) + Send + Sync)) -> anyhow::Result<DemoReport> {
    let started = Instant::now();
    let rate = opts.rate();
    let clock = SimClock::with_rate(Some(DAY_START_MS), true, rate);
    let gw_clock: SharedClock = Arc::new(DemoClock(clock.clone()));

    // The simulators, on one clock.
    let mut sims: Vec<SimHandle> = Vec::new();
    for (i, p) in [Platform::Zendesk, Platform::Freshdesk, Platform::Intercom].into_iter().enumerate() {
        let mut cfg = SimConfig::new(p).seed(opts.seed.wrapping_add(i as u64)).shared_clock(clock.clone());
        cfg.request_log_capacity = 2_000_000;
        sims.push(deskgate_sim::start(cfg).await.with_context(|| format!("starting the {p} simulator"))?);
    }

    // The gateway on a temporary SQLite file.
    let dir = std::env::temp_dir().join(format!("deskgate-demo-{}-{}", std::process::id(), opts.seed));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let key_bytes: [u8; 32] = std::array::from_fn(|i| (opts.seed.wrapping_mul(31).wrapping_add(i as u64) & 0xff) as u8);
    // A throwaway store: commits survive a crash of deskgate but are not fsynced one by one
    // (`deskgate serve` keeps the default, synchronous=full).
    let url = format!("sqlite://{}?synchronous=normal", dir.join("deskgate.db").display());
    let store = store::open(&url, SecretKey::from_bytes(key_bytes)).await?;
    let mut rt = AdapterRuntime::new(RuntimeConfig {
        cache_dir: std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("deskgate")),
        ..RuntimeConfig::default()
    })?;
    rt.load_builtin()?;
    let adapters: Vec<_> = rt.adapters().cloned().collect();
    let api_token = format!("demo-{:016x}", Rng(opts.seed).next());
    let state = AppState::new(store.clone(), gw_clock.clone(), Secret::new(api_token.clone()), adapters.clone());
    let alerts_posted = Arc::new(AtomicU64::new(0));
    let (alert_url, alert_task) = alert_receiver(alerts_posted.clone()).await?;
    let mut config = GatewayConfig { owner: "demo".into(), tick: Duration::from_millis(20), ..GatewayConfig::default() };
    // Real-time waits the compressed clock cannot shorten: keep them short so a day of
    // minutes is not held up by a poll interval meant for wall-clock hours.
    config.outbox.poll_interval = Duration::from_millis(10);
    // Leases are on the day's clock: stretch them so they mean in real time what they mean in
    // production (a lease outlives a send).
    let day = |real_secs: f64| Duration::from_secs_f64(real_secs * rate);
    config.outbox.lease_for = day(60.0);
    config.timer_lease = day(10.0);
    config.alerts.retry_base = Duration::from_secs(10);
    let gateway = Gateway::new(GatewayParts {
        store: store.clone(),
        clock: gw_clock.clone(),
        driver: Driver::new(DriverConfig::default())?,
        adapters,
        inbox: state.inbox().clone(),
        metrics: state.ingest_metrics().clone(),
        config,
    })?;
    let gateway = gateway.with_status(state.status().clone());
    let state = state.with_control(Arc::new(gateway.clone()));
    let routes = state.webhook_routes().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api = format!("http://{}", listener.local_addr()?);
    let (server_stop_tx, server_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, crate::api::app(state))
            .with_graceful_shutdown(async move {
                let _ = server_stop_rx.await;
            })
            .await;
    });
    let http = reqwest::Client::new();

    // The tenants: `accounts` per platform, each connected through the API.
    let mut tenants: Vec<Tenant> = Vec::new();
    for (si, sim) in sims.iter().enumerate() {
        let p = sim.platform();
        for k in 1..=opts.accounts {
            let conn = format!("{p}-{k}");
            let account = sim.create_account(AccountSpec { name: Some(conn.clone()), ..AccountSpec::default() })?.id;
            let admin = sim.create_agent(
                account,
                AgentSpec { name: Some("Ada Admin".into()), email: Some(format!("ada@{conn}.example.com")), role: Some("admin".into()) },
            )?;
            let customer = sim
                .create_contact(account, ContactSpec { name: Some("Casey Customer".into()), email: Some(format!("casey@{conn}.example.org")), role: None })?
                .id;
            let (scenario, spec, restricted) = match (p, k) {
                (Platform::Zendesk, 1) => (
                    "OAuth token expiring at 02:00; refresh token revoked at 10:00, fixed by the operator at 11:00",
                    CredentialSpec { kind: Some(CredKind::Oauth), agent_id: Some(admin.id), access_ttl_secs: Some(2 * 3600), refresh_ttl_secs: Some(30 * 86_400), ..CredentialSpec::default() },
                    None,
                ),
                (Platform::Freshdesk, 2) => {
                    let agent = sim.create_agent(
                        account,
                        AgentSpec { name: Some("Alan Agent".into()), email: Some(format!("alan@{conn}.example.com")), role: Some("agent".into()) },
                    )?;
                    sim.update_agent(account, agent.id, AgentPatch { remove_privileges: vec!["edit_ticket_properties".into()], ..AgentPatch::default() })?;
                    (
                        "API key without the status permission until 05:00",
                        CredentialSpec { agent_id: Some(agent.id), ..CredentialSpec::default() },
                        Some(agent.id),
                    )
                }
                (Platform::Intercom, _) => ("access token checked every 4 hours", CredentialSpec { agent_id: Some(admin.id), ..CredentialSpec::default() }, None),
                _ => ("API token; 429 storms from other clients", CredentialSpec { agent_id: Some(admin.id), ..CredentialSpec::default() }, None),
            };
            let cred = sim.create_credential(account, spec)?;
            let webhook_secret = format!("whsec-{conn}-{:x}", Rng(opts.seed ^ account).next());
            routes.set_secret(conn.clone(), WebhookSecret { secret: webhook_secret.clone().into_bytes(), allow_unsigned: false });
            sim.set_webhook(account, Some(WebhookTarget { url: format!("{api}/webhooks/{conn}"), secret: webhook_secret }))?;
            let expires_in = cred.expires_at_ms.map(|x| ((x - clock.now_ms()) / 1000).max(0));
            let r = http
                .post(format!("{api}/v1/connections"))
                .bearer_auth(&api_token)
                .json(&json!({
                    "id": conn,
                    "platform": p.to_string(),
                    "base_url": sim.base_url(),
                    "display_name": format!("{p} account {k}"),
                    "admin_contact_url": alert_url,
                    "credentials": secret_for(p, &cred),
                    "expires_in": expires_in,
                }))
                .send()
                .await?;
            let status = r.status();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            anyhow::ensure!(status.is_success(), "connecting {conn}: {status} {body}");
            progress(&format!(
                "00:00 connected {conn:<12} {:<13} {}",
                body["state"].as_str().unwrap_or("?"),
                if body["state"] == "live" { String::new() } else { "(scope probe failed: see the scope-missing alert)".into() }
            ));
            tenants.push(Tenant { conn, platform: p, sim: si, account, customer, cred, scenario, restricted_agent: restricted });
        }
    }
    for sim in &sims {
        sim.set_faults(FaultConfig {
            webhook_drop: 0.20,
            webhook_duplicate: 0.05,
            webhook_reorder: 0.05,
            timeout_after_apply: if std::env::var_os("DEMO_NO_TIMEOUT").is_some() { 0.0 } else { 0.02 },
            timeout_mode: TimeoutMode::Close,
            ..FaultConfig::default()
        })?;
    }

    // The workload: each account's tickets over the day, at seeded times.
    let mut rng = Rng(opts.seed);
    let per_day = u64::from(opts.tickets_per_hour) * 24;
    let mut arrivals: Vec<(Millis, usize)> = Vec::new();
    for (ti, _) in tenants.iter().enumerate() {
        let spacing = (24 * HOUR) as u64 / per_day.max(1);
        for n in 0..per_day {
            let at = DAY_START_MS + (n * spacing) as Millis + rng.below(spacing) as Millis;
            arrivals.push((at, ti));
        }
    }
    arrivals.sort_unstable();

    // The app, the gateway's timers, and the clock: go.
    gateway.sync().await?;
    gateway.spawn();
    let view = Arc::new(Mutex::new(AppView::default()));
    let (app_stop_tx, app_stop_rx) = tokio::sync::watch::channel(false);
    let app = tokio::spawn(automation_client(api.clone(), api_token.clone(), view.clone(), app_stop_rx));
    clock.set_frozen(false);

    let mut failures: Vec<FailureNote> = Vec::new();
    let mut created: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut storms: Vec<tokio::task::JoinHandle<(u64, u64)>> = Vec::new();
    let mut next_arrival = 0usize;
    let mut next_hour = DAY_START_MS + HOUR;
    let day_end = DAY_START_MS + 24 * HOUR;
    let mut events: BTreeSet<&'static str> = BTreeSet::new();
    let zd1 = tenants.iter().position(|t| t.platform == Platform::Zendesk && t.cred.kind == CredKind::Oauth);
    let fd2 = tenants.iter().position(|t| t.restricted_agent.is_some());
    let mut pace = Pace::new(rate, tenants.len() as f64 * f64::from(opts.tickets_per_hour) / 60.0);
    let mut last_weighed = Instant::now();
    let mut reported_rate = rate;
    let day_started = (Instant::now(), clock.now_ms());
    loop {
        let now = clock.now_ms();
        if last_weighed.elapsed() >= Pace::EVERY {
            let owed = owed_work(&store, &view, &created, u32::try_from(pace.high * 2).unwrap_or(u32::MAX)).await?;
            let total: u64 = owed.values().sum();
            if let Some(r) = pace.observe(owed, last_weighed.elapsed()) {
                clock.set_rate(r);
                // A line when the clock leaves or regains full pace, and per halving between.
                if r == rate || r < reported_rate * 0.5 || reported_rate == rate {
                    progress(&format!("{} {total} tickets and resolutions owed on live connections: clock x{r:.0} (full pace x{rate:.0})", hhmm(now)));
                    reported_rate = r;
                }
            }
            last_weighed = Instant::now();
        }
        while next_arrival < arrivals.len() && arrivals[next_arrival].0 <= now {
            let (_, ti) = arrivals[next_arrival];
            next_arrival += 1;
            let t = &tenants[ti];
            let n = created.get(&t.conn).map_or(0, Vec::len) + 1;
            let spec = TicketSpec {
                subject: Some(format!("{} question #{n}", t.conn)),
                body: Some(format!("Hi, this is question #{n} for {}. Can you help?", t.conn)),
                requester_id: Some(t.customer),
                ..TicketSpec::default()
            };
            let ticket = sims[t.sim].create_ticket(t.account, spec)?;
            let id = ticket["id"].as_u64().or_else(|| ticket["id"].as_str().and_then(|s| s.parse().ok())).unwrap_or_default();
            created.entry(t.conn.clone()).or_default().push(id);
        }
        // The failure schedule.
        let at = |h: Millis, m: Millis| DAY_START_MS + h * HOUR + m * MINUTE;
        if let Some(i) = fd2
            && now >= at(5, 0)
            && events.insert("rescope")
        {
            let t = &tenants[i];
            sims[t.sim].update_agent(t.account, t.restricted_agent.unwrap_or_default(), AgentPatch { add_privileges: vec!["edit_ticket_properties".into()], ..AgentPatch::default() })?;
            let r = http.post(format!("{api}/v1/connections/{}/probe", t.conn)).bearer_auth(&api_token).send().await?;
            let body: Value = r.json().await.unwrap_or(Value::Null);
            let passed = body["report"]["passed"].as_bool().unwrap_or(false);
            let why = if passed { String::new() } else { format!(" ({})", body["report"].to_string().chars().take(600).collect::<String>()) };
            progress(&format!("{} operator restored edit_ticket_properties on {} and probed: {}{why}", hhmm(now), t.conn, if passed { "passed, live" } else { "still failing" }));
            failures.push(FailureNote {
                at: "00:00".into(),
                injected: format!("{}: API key without the status permission", t.conn),
                handled: format!("scope probe failed at connect, scope-missing alert named the privilege; nothing written; operator re-scoped and probed at {}, probe {}", hhmm(now), if passed { "passed and queued resolutions drained" } else { "failed" }),
            });
        }
        for (h, name) in [(6, "storm-06"), (13, "storm-13"), (19, "storm-19")] {
            if now >= at(h, 0) && events.insert(name) {
                progress(&format!("{} 429 storm: other clients of the Zendesk and Freshdesk accounts pace up to 60% of each rate limit for 30 minutes", hhmm(now)));
                // Zendesk and Freshdesk accounts: Intercom's 10,000 a minute would take tens of
                // thousands of requests a real second to dent on the compressed clock.
                for t in tenants.iter().filter(|t| t.platform != Platform::Intercom) {
                    let sim = &sims[t.sim];
                    let noisy = sim.create_credential(t.account, CredentialSpec::default())?;
                    // 60% of each plan's per-minute limit (Zendesk Professional and Freshdesk
                    // Pro: 400): heavy, but it leaves deskgate room, as a neighbour that did not
                    // leave any would make 429s unavoidable for anyone.
                    let (path, per_minute) = match t.platform {
                        Platform::Zendesk => ("/api/v2/users/me.json", 240),
                        _ => ("/api/v2/agents/me", 240),
                    };
                    storms.push(tokio::spawn(storm(sim.base_url(), noisy.authorization.clone(), path.into(), per_minute, at(h, 30), clock.clone())));
                }
                failures.push(FailureNote {
                    at: hhmm(at(h, 0)),
                    injected: "429 storm: other clients of every Zendesk and Freshdesk account pace up to 60% of its rate limit for 30 minutes".into(),
                    handled: "budgets corrected from the platforms' rate headers; reads waited, writes kept their reserved share".into(),
                });
            }
        }
        if let Some(i) = zd1
            && now >= at(10, 0)
            && events.insert("revoke")
        {
            let t = &tenants[i];
            let sim = &sims[t.sim];
            // The pair in use now is the refreshed one: revoke every OAuth credential of the account.
            let mut revoked = 0;
            for c in 1..=64u64 {
                match sim.credential(t.account, c) {
                    Ok(info) if info.kind == CredKind::Oauth && !info.revoked => {
                        sim.revoke_credential(t.account, c)?;
                        revoked += 1;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            progress(&format!("{} revoked {}'s OAuth grant ({revoked} token pair(s)): the next refresh is refused", hhmm(now), t.conn));
        }
        // The operator acts on the alert: at 11:00, or when the suspension comes (if deskgate only
        // met the revoked grant later).
        let zd1_suspended = match zd1 {
            Some(i) if now >= at(11, 0) && !events.contains("reauth") => {
                matches!(store.get_connection(&tenants[i].conn).await?.map(|c| c.state), Some(crate::store::ConnectionState::Suspended { .. }))
            }
            _ => false,
        };
        if let Some(i) = zd1
            && zd1_suspended
            && events.insert("reauth")
        {
            let t = &tenants[i];
            let sim = &sims[t.sim];
            let fresh = sim.create_credential(
                t.account,
                CredentialSpec { kind: Some(CredKind::Oauth), agent_id: Some(t.cred.agent_id), access_ttl_secs: Some(2 * 3600), refresh_ttl_secs: Some(30 * 86_400), client_id: t.cred.client_id.clone(), ..CredentialSpec::default() },
            )?;
            let expires_in = fresh.expires_at_ms.map(|x| ((x - clock.now_ms()) / 1000).max(0));
            let r = http
                .put(format!("{api}/v1/connections/{}/credentials", t.conn))
                .bearer_auth(&api_token)
                .json(&json!({ "credentials": secret_for(t.platform, &fresh), "expires_in": expires_in }))
                .send()
                .await?;
            let status = r.status();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            let state = body["state"].as_str().unwrap_or("?").to_owned();
            progress(&format!("{} operator re-authenticated {}: {status}, state {state}", hhmm(now), t.conn));
            let suspended_at = store
                .list_alerts(Some(&t.conn), true, 100)
                .await?
                .iter()
                .find(|a| a.kind == crate::alerts::REFRESH_FAILED || a.kind == crate::alerts::CREDENTIAL_INVALID)
                .map(|a| hhmm(a.created_at));
            failures.push(FailureNote {
                at: "10:00".into(),
                injected: format!("{}: OAuth refresh token revoked", t.conn),
                handled: if status.is_success() && state == "live" {
                    format!(
                        "suspended with a {} alert at {}; work kept durable; operator re-authenticated at {}, deskgate validated, resumed and drained the queue",
                        "refresh-failed/credential-invalid",
                        suspended_at.unwrap_or_else(|| "?".into()),
                        hhmm(now)
                    )
                } else {
                    format!(
                        "suspended with a refresh-failed/credential-invalid alert at {}; work kept durable; operator re-authenticated at {}, but deskgate answered {status} and the connection is {state}: {}",
                        suspended_at.unwrap_or_else(|| "?".into()),
                        hhmm(now),
                        body.to_string().chars().take(400).collect::<String>()
                    )
                },
            });
        }
        if now >= next_hour && next_hour <= day_end {
            let (delivered, submitted) = {
                let v = view.lock().unwrap_or_else(|e| e.into_inner());
                (v.delivered.values().map(BTreeSet::len).sum::<usize>(), v.submitted.values().map(BTreeSet::len).sum::<usize>())
            };
            let alerts = store.list_alerts(None, true, 10_000).await?.len();
            let suspended: Vec<String> = store
                .list_connections(false)
                .await?
                .into_iter()
                .filter(|c| c.state.name() != "live")
                .map(|c| format!("{}={}", c.id, c.state.name()))
                .collect();
            progress(&format!(
                "{} created {:>6}  delivered {:>6}  resolving {:>6}  alerts {:>3}  {}",
                hhmm(next_hour),
                created.values().map(Vec::len).sum::<usize>(),
                delivered,
                submitted,
                alerts,
                if suspended.is_empty() { "all live".to_string() } else { suspended.join(" ") }
            ));
            next_hour += HOUR;
        }
        if now >= day_end && next_arrival >= arrivals.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let day_real = day_started.0.elapsed().as_secs_f64().max(1e-3);
    let average_rate = (clock.now_ms() - day_started.1) as f64 / 1000.0 / day_real;
    // The drain has no arrivals to hold back: the full pace lets the sweeps catch up sooner.
    clock.set_rate(rate);
    if let Some(i) = zd1 {
        failures.insert(0, FailureNote {
            at: "02:00".into(),
            injected: format!("{}: OAuth access token expires", tenants[i].conn),
            handled: "refreshed at 80% of its lifetime (01:36), before it expired; the rotated pair was stored before use".into(),
        });
    }
    failures.push(FailureNote {
        at: "all day".into(),
        injected: "20% of webhooks lost, 5% duplicated, 5% reordered; 2% of writes time out after landing".into(),
        handled: "duplicates dropped by event key; sweeps every 5-10 minutes caught the lost ones; timed-out writes read back before any retry".into(),
    });

    // Drain: the day's last tickets may have lost their webhook; the sweeps run on.
    let total_created: usize = created.values().map(Vec::len).sum();
    // Until everything is delivered and settled; stop early only when nothing moved for a while
    // (the report then says what is left, and why).
    let drain_deadline = clock.now_ms() + 12 * HOUR;
    // Progress is any change in what is delivered or in flight (the in-flight page is capped, so
    // the ids on it stand for it: one settles, the next one enters the page).
    let mut last_progress = ((0usize, usize::MAX, 0i64), Instant::now());
    loop {
        // The demo's own tickets only: a ticket deskgate's scope probe made and the app was
        // shown must not stand in for a customer's ticket still waiting for its sweep.
        let delivered: usize = {
            let v = view.lock().unwrap_or_else(|e| e.into_inner());
            created
                .iter()
                .map(|(conn, ids)| v.delivered.get(conn).map_or(0, |d| ids.iter().filter(|id| d.contains(&id.to_string())).count()))
                .sum()
        };
        let page = store
            .list_actions(&ActionQuery { connection_id: None, ticket_id: None, in_flight_only: true, after_id: 0, limit: 10_000 })
            .await?;
        let in_flight = page.len();
        if delivered >= total_created && in_flight == 0 {
            break;
        }
        let seen = (delivered, in_flight, page.iter().fold(0i64, |h, e| h.wrapping_add(e.id)));
        if seen != last_progress.0 {
            last_progress = (seen, Instant::now());
        }
        if clock.now_ms() >= drain_deadline || last_progress.1.elapsed() > Duration::from_secs(20) {
            progress(&format!("{} drain stopped: {delivered} of {total_created} tickets delivered, {in_flight} resolution(s) in flight", hhmm(clock.now_ms())));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let end = clock.now_ms();
    progress(&format!("{} (next day) drained; stopping", hhmm(end)));
    if std::env::var_os("DESKGATE_DEMO_DEBUG").is_some() {
        for (id, snap) in gateway.budgets().snapshots() {
            eprintln!("gate {id}: {snap:#?}");
        }
    }
    let _ = app_stop_tx.send(true);
    let _ = app.await;
    let (mut storm_sent, mut storm_429) = (0, 0);
    for s in storms {
        if let Ok((sent, limited)) = s.await {
            storm_sent += sent;
            storm_429 += limited;
        }
    }
    gateway.shutdown().await;
    let _ = server_stop_tx.send(());
    let _ = server.await;
    alert_task.abort();

    // The report.
    let view = std::mem::take(&mut *view.lock().unwrap_or_else(|e| e.into_inner()));
    let round = |x: f64| (x * 10.0).round() / 10.0;
    let pace = PaceReport {
        nominal_rate: rate,
        average_rate: round(average_rate),
        slowest_rate: round(pace.slowest),
        slowed_seconds: round(pace.slowed_for.as_secs_f64()),
        overrun_seconds: round(pace.overrun_for.as_secs_f64()),
    };
    let mut report = DemoReport { seed: opts.seed, hours: 24, rate, pace, failures, ..DemoReport::default() };
    let mut latencies: Vec<f64> = Vec::new();
    let mut after = 0;
    let mut confirmed_per: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        let page = store
            .list_actions(&ActionQuery { connection_id: None, ticket_id: None, in_flight_only: false, after_id: after, limit: 1000 })
            .await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for e in &page {
            report.resolutions_submitted += 1;
            if e.state == OutboxState::Confirmed {
                report.resolutions_confirmed += 1;
                if e.result.as_ref().and_then(|r| r.get("confirmed_by")).and_then(Value::as_str).is_some_and(|b| b.contains("read-back")) {
                    report.confirmed_by_read_back += 1;
                }
                *confirmed_per.entry(e.connection_id.clone()).or_default() += 1;
                latencies.push((e.updated_at - e.created_at) as f64 / average_rate);
            } else {
                report.resolutions_unsettled += 1;
                let entry = report.unsettled_by_state.entry(format!("{:?}", e.state).to_lowercase()).or_insert((0, String::new()));
                entry.0 += 1;
                if entry.1.is_empty() {
                    entry.1 = format!("{} ticket {}: attempts {}, due in {} ms, result {}", e.connection_id, e.ticket_id, e.attempts, e.not_before - end, e.result.clone().unwrap_or_default());
                }
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |q: f64| latencies.get(((latencies.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0.0);
    report.resolution_latency_ms = Percentiles { p50: (pct(0.50) * 10.0).round() / 10.0, p99: (pct(0.99) * 10.0).round() / 10.0 };
    for t in &tenants {
        let sim = &sims[t.sim];
        let made = created.get(&t.conn).cloned().unwrap_or_default();
        let delivered = view.delivered.get(&t.conn).cloned().unwrap_or_default();
        let lost = made.iter().filter(|id| !delivered.contains(&id.to_string())).count() as u64;
        if lost > 0 && std::env::var_os("DESKGATE_DEMO_DEBUG").is_some() {
            let ids: Vec<_> = made.iter().filter(|id| !delivered.contains(&id.to_string())).take(10).collect();
            eprintln!("{}: lost {lost}, e.g. {ids:?}; first: {}", t.conn, sim.ticket(t.account, *ids[0]).map(|v| v.to_string()).unwrap_or_default());
        }
        report.tickets_created += made.len() as u64;
        report.tickets_delivered += made.len() as u64 - lost;
        report.lost_tickets += lost;
        // Duplicates: a kind of write applied more than once to one ticket.
        let mut per: BTreeMap<(u64, String), u64> = BTreeMap::new();
        for w in sim.writes(t.account, None)? {
            // The kind of write (its variant), not its content: a second reply is a duplicate
            // whatever it says.
            let kind = format!("{:?}", w.kind);
            let kind = kind.split([' ', '{', '(']).next().unwrap_or_default().to_string();
            *per.entry((w.ticket_id, kind)).or_default() += 1;
        }
        report.duplicate_writes += per.values().map(|n| n.saturating_sub(1)).sum::<u64>();
        let conn = store.get_connection(&t.conn).await?;
        report.connections.push(ConnectionReport {
            id: t.conn.clone(),
            platform: t.platform.to_string(),
            scenario: t.scenario.into(),
            tickets_created: made.len() as u64,
            tickets_delivered: made.len() as u64 - lost,
            resolutions_confirmed: confirmed_per.get(&t.conn).copied().unwrap_or(0),
            state: conn.map(|c| c.state.name().to_string()).unwrap_or_default(),
        });
    }
    // What each injected failure did, measured from the simulators' request logs (the notes
    // written while the day ran say what was injected; these say what happened).
    let day_at = |h: Millis, m: Millis| DAY_START_MS + h * HOUR + m * MINUTE;
    let mut storm_evidence: Vec<StormEvidence> =
        [6, 13, 19].iter().map(|&h| StormEvidence { from: day_at(h, 0), until: day_at(h, 30), ..StormEvidence::default() }).collect();
    let revoked_at = day_at(10, 0);
    let (mut first_refresh, mut refused_before_revocation): (Option<Millis>, u64) = (None, 0);
    // deskgate's 429s: requests made with a credential the demo gave deskgate (the storm clients
    // have credentials of their own).
    for (si, sim) in sims.iter().enumerate() {
        let deskgate_creds: BTreeSet<u64> = tenants
            .iter()
            .filter(|t| t.sim == si)
            .flat_map(|t| {
                (1..=64u64)
                    .map_while(move |c| sim.credential(t.account, c).ok())
                    .filter(|c| c.kind == CredKind::Oauth || c.id == t.cred.id)
                    .map(|c| c.account_id * 1_000 + c.id)
                    .collect::<Vec<_>>()
            })
            .collect();
        let all_requests = sim.requests(deskgate_sim::RequestFilter::default());
        let zd1_account = zd1.filter(|&i| tenants[i].sim == si).map(|i| tenants[i].account);
        for r in &all_requests {
            let (Some(acct), Some(cred)) = (r.account_id, r.credential_id) else { continue };
            let ours = deskgate_creds.contains(&(acct * 1_000 + cred));
            if let Some(e) = storm_evidence.iter_mut().find(|e| (e.from..e.until).contains(&r.at_ms)) {
                if ours {
                    e.ours += 1;
                    if r.status == 429 {
                        if r.method == "GET" {
                            e.ours_429_read += 1;
                        } else {
                            e.ours_429_write += 1;
                        }
                    }
                } else {
                    e.others += 1;
                    e.others_429 += u64::from(r.status == 429);
                }
            }
            if zd1_account == Some(acct) && ours && r.at_ms < revoked_at {
                if r.path.starts_with("/oauth/tokens") && r.status == 200 {
                    first_refresh = Some(first_refresh.map_or(r.at_ms, |t: Millis| t.min(r.at_ms)));
                }
                refused_before_revocation += u64::from(r.status == 401);
            }
            if r.status != 429 || !ours {
                continue;
            }
            if r.method == "GET" {
                report.responses_429.read += 1;
            } else {
                report.responses_429.write += 1;
            }
            if std::env::var_os("DESKGATE_DEMO_DEBUG").is_some() {
                // Who spent the account's minute before it: deskgate's credentials and the others.
                let (mut ours, mut others, mut others_429) = (0u32, 0u32, 0u32);
                for q in all_requests.iter().filter(|q| q.account_id == Some(acct) && q.at_ms <= r.at_ms && q.at_ms > r.at_ms - 60_000) {
                    if q.credential_id.is_some_and(|c| deskgate_creds.contains(&(acct * 1_000 + c))) {
                        ours += 1;
                    } else {
                        others += 1;
                        others_429 += u32::from(q.status == 429);
                    }
                }
                eprintln!(
                    "429 to deskgate: {} account {acct} {} {} at {} ({}); the minute before: deskgate {ours}, others {others} ({others_429} of them 429s)",
                    sim.platform(), r.method, r.path, hhmm(r.at_ms), r.at_ms,
                );
            }
        }
        if std::env::var_os("DESKGATE_DEMO_DEBUG").is_some() {
            for t in tenants.iter().filter(|t| t.sim == si) {
                if let Ok(stats) = sim.stats(t.account) {
                    eprintln!("429s by bucket on {} (all clients): {:?}", t.conn, stats.rate_limited_by_bucket);
                }
            }
        }
        let deliveries = sim.webhook_deliveries();
        report.webhooks_dropped += deliveries.iter().filter(|d| d.result == "dropped").count() as u64;
        report.webhooks_duplicated += deliveries.iter().filter(|d| d.duplicate).count() as u64;
        for t in tenants.iter().filter(|t| t.sim == si) {
            report.faults_injected += sim.stats(t.account).map_or(0, |s| s.faults);
        }
    }
    report.storm_requests = storm_sent;
    report.storm_responses_429 = storm_429;
    for e in &storm_evidence {
        if let Some(note) = report.failures.iter_mut().find(|f| f.at == hhmm(e.from) && f.injected.starts_with("429 storm")) {
            note.handled = format!(
                "in the 30 minutes the other clients sent {} requests ({} of them 429s) and deskgate {} ({} read and {} write 429s); {}",
                e.others,
                e.others_429,
                e.ours,
                e.ours_429_read,
                e.ours_429_write,
                if e.ours_429_write == 0 {
                    "budgets corrected from the platforms' rate headers kept deskgate under the limit; reads waited, writes kept their reserved share"
                } else {
                    "writes met 429s: DESKGATE_DEMO_DEBUG=1 lists each with who spent the minute before it"
                }
            );
        }
    }
    report.refused_401_before_revocation = refused_before_revocation;
    if let Some(note) = report.failures.iter_mut().find(|f| f.injected.ends_with("OAuth access token expires")) {
        let expiry = day_at(2, 0);
        note.handled = match first_refresh {
            Some(t) if t < expiry => format!(
                "refreshed at {} ({:.0}% of its two-hour lifetime), before it expired; the rotated pair was stored before use; {} requests refused with 401 before the 10:00 revocation",
                hhmm(t),
                (t - DAY_START_MS) as f64 * 100.0 / (expiry - DAY_START_MS) as f64,
                refused_before_revocation
            ),
            Some(t) => format!("refreshed only at {}, after it expired; {refused_before_revocation} requests refused with 401 before the 10:00 revocation", hhmm(t)),
            None => format!("never refreshed before the 10:00 revocation; {refused_before_revocation} requests refused with 401"),
        };
    }
    for a in store.list_alerts(None, true, 100_000).await? {
        *report.alerts.entry(a.kind).or_default() += 1;
    }
    report.alerts_delivered = alerts_posted.load(Ordering::Relaxed);
    report.suspensions = view.suspended_events;
    report.resumptions = view.resumed_events;
    let ingest = gateway.ingest_metrics().snapshot();
    let counter = |name: &str| ingest.iter().find(|(k, _)| k == name).map_or(0, |(_, v)| *v);
    report.reconciliation_catches = counter("sweep_caught");
    report.duplicate_events_dropped = counter("webhook_events_duplicate");
    if let Some(note) = report.failures.iter_mut().find(|f| f.at == "all day") {
        note.handled = format!(
            "{} webhook deliveries lost and {} sent twice by the platforms: the inbox dropped {} duplicate events and the sweeps caught {} changes no webhook delivered ({} tickets never reached the app); {} requests faulted, {} resolutions confirmed by read-back instead of being sent again, {} duplicate writes",
            report.webhooks_dropped,
            report.webhooks_duplicated,
            report.duplicate_events_dropped,
            report.reconciliation_catches,
            report.lost_tickets,
            report.faults_injected,
            report.confirmed_by_read_back,
            report.duplicate_writes
        );
    }
    for t in &tenants {
        if t.cred.kind == CredKind::Oauth
            && let Some(c) = store.get_credential(&t.conn).await?
        {
            // Versions: 1 stored at connect, +1 per refresh, +1 for the operator's new pair.
            report.token_refreshes += u64::try_from(c.version - 2).unwrap_or(0);
        }
    }
    store.close().await;
    for s in sims {
        s.shutdown().await;
    }
    if std::env::var_os("DESKGATE_DEMO_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("store kept in {}", dir.display());
    }
    report.wall_seconds = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    Ok(report)
}

impl DemoReport {
    /// What the day failed to keep, for people; empty when it kept every promise: no duplicate
    /// write, no lost ticket, no 429 on the write lane, and every resolution confirmed except
    /// those explained: the scope probe's own tickets, which it deletes (failed, not found), and
    /// at most 0.5% still in flight (durable, pending or being read back) when the drain stopped
    /// on a loaded machine.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.duplicate_writes > 0 {
            out.push(format!("{} duplicate writes", self.duplicate_writes));
        }
        if self.lost_tickets > 0 {
            out.push(format!("{} tickets never reached the app", self.lost_tickets));
        }
        if self.responses_429.write > 0 {
            out.push(format!("{} write-lane 429s", self.responses_429.write));
        }
        if self.refused_401_before_revocation > 0 {
            out.push(format!(
                "{} requests refused with 401 while the OAuth token was valid (a rotation raced them)",
                self.refused_401_before_revocation
            ));
        }
        let mut in_flight = 0;
        for (state, (count, example)) in &self.unsettled_by_state {
            if matches!(state.as_str(), "pending" | "ambiguous" | "sent") {
                in_flight += count;
            } else if !state.contains("not found") {
                out.push(format!("{count} resolutions {state} (for example {example})"));
            }
        }
        if in_flight * 200 > self.resolutions_submitted {
            out.push(format!(
                "{in_flight} of {} resolutions still in flight when the drain stopped (more than 0.5%)",
                self.resolutions_submitted
            ));
        }
        // Whether the machine or the gateway fell short: the clock slows to keep the day within
        // what the machine carries, down to a limit; past it, a shortfall may be the machine's.
        if !out.is_empty() && self.pace.overrun_seconds > 0.0 {
            out.push(format!(
                "this machine fell behind the arrivals even with the clock slowed to x{:.0} (for {:.0} s): the shortfall above may be the machine's; a lighter day (--tickets-per-hour {}) tells the two apart",
                self.pace.slowest_rate,
                self.pace.overrun_seconds,
                (self.tickets_created / (24 * self.connections.len().max(1) as u64) / 2).max(1)
            ));
        }
        out
    }

    /// The report as a table for people.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let pace = if self.pace.slowest_rate < self.rate {
            format!(
                "clock x{:.0}; this machine fell behind, so it ran slower for {:.0} s, at x{:.0} on average and x{:.0} at its slowest",
                self.rate, self.pace.slowed_seconds, self.pace.average_rate, self.pace.slowest_rate
            )
        } else {
            format!("clock x{:.0}", self.rate)
        };
        let _ = writeln!(s, "\ndeskgate demo: a 24-hour day in {:.0} s ({pace}), seed {}\n", self.wall_seconds, self.seed);
        let _ = writeln!(s, "{:<14}{:<11}{:>9}{:>11}{:>11}  {:<10}scenario", "connection", "platform", "created", "delivered", "confirmed", "state");
        for c in &self.connections {
            let _ = writeln!(s, "{:<14}{:<11}{:>9}{:>11}{:>11}  {:<10}{}", c.id, c.platform, c.tickets_created, c.tickets_delivered, c.resolutions_confirmed, c.state, c.scenario);
        }
        let rows: Vec<(&str, String)> = vec![
            ("tickets created", self.tickets_created.to_string()),
            ("tickets delivered to the app", self.tickets_delivered.to_string()),
            ("lost tickets", self.lost_tickets.to_string()),
            ("resolutions submitted", self.resolutions_submitted.to_string()),
            ("resolutions confirmed", self.resolutions_confirmed.to_string()),
            ("resolutions unsettled", self.resolutions_unsettled.to_string()),
            ("duplicate writes (simulators' count)", self.duplicate_writes.to_string()),
            ("429s to deskgate, read lane", self.responses_429.read.to_string()),
            ("429s to deskgate, write lane", self.responses_429.write.to_string()),
            ("requests of the storm clients", self.storm_requests.to_string()),
            ("429s to the storm clients", self.storm_responses_429.to_string()),
            ("webhooks dropped by the platforms", self.webhooks_dropped.to_string()),
            ("webhooks sent twice by the platforms", self.webhooks_duplicated.to_string()),
            ("duplicate events dropped by the inbox", self.duplicate_events_dropped.to_string()),
            ("requests faulted by the platforms", self.faults_injected.to_string()),
            ("resolutions confirmed by read-back", self.confirmed_by_read_back.to_string()),
            ("caught by reconciliation sweeps", self.reconciliation_catches.to_string()),
            ("OAuth refreshes", self.token_refreshes.to_string()),
            ("suspensions / resumptions", format!("{} / {}", self.suspensions, self.resumptions)),
            ("alerts", self.alerts.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")),
            ("alerts delivered to the admin contact", self.alerts_delivered.to_string()),
            ("resolution latency p50 / p99 (real ms)", format!("{} / {}", self.resolution_latency_ms.p50, self.resolution_latency_ms.p99)),
        ];
        let _ = writeln!(s);
        for (k, v) in rows {
            let _ = writeln!(s, "  {k:<42}{v}");
        }
        let _ = writeln!(s, "\ninjected failures:");
        for f in &self.failures {
            let _ = writeln!(s, "  {:<8}{}\n          -> {}", f.at, f.injected, f.handled);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HALF: Duration = Pace::EVERY;

    fn owed(per: &[(&str, u64)]) -> BTreeMap<String, u64> {
        per.iter().map(|&(c, n)| (c.to_string(), n)).collect()
    }

    fn one(n: u64) -> BTreeMap<String, u64> {
        owed(&[("zendesk-2", n)])
    }

    #[test]
    fn the_clock_holds_its_pace_while_the_machine_keeps_up() {
        // 60 arrivals a day-clock minute: normal is under 600 owed, behind is over 1,800.
        let mut p = Pace::new(720.0, 60.0);
        assert_eq!((p.low, p.high), (600, 1_800));
        for owed in [0, 150, 599, 1_200, 1_800, 900] {
            assert_eq!(p.observe(one(owed), HALF), None, "{owed} owed");
        }
        assert_eq!((p.slowest, p.slowed_for), (720.0, Duration::ZERO));
    }

    #[test]
    fn a_growing_backlog_slows_the_clock_to_a_floor_and_a_cleared_one_restores_it() {
        let mut p = Pace::new(720.0, 60.0);
        let mut rate = 720.0;
        let mut owed = 2_000;
        for _ in 0..20 {
            if let Some(r) = p.observe(one(owed), HALF) {
                assert!(r < rate, "only slower while the backlog grows: {r} after {rate}");
                rate = r;
            }
            owed += 100;
        }
        assert_eq!(rate, 90.0, "an eighth of nominal at most");
        assert!(p.overrun_for > Duration::ZERO, "growing at the floor is the machine falling behind");
        // Shrinking but still high: the clock holds (a connection draining at its rate limit's
        // pace is not the machine falling behind).
        assert_eq!(p.observe(one(owed - 500), HALF), None);
        assert_eq!(p.observe(one(700), HALF), None);
        // Caught up: back to full pace in steps, never past it.
        let mut steps = 0;
        while let Some(r) = p.observe(one(10), HALF) {
            assert!(r > rate && r <= 720.0);
            rate = r;
            steps += 1;
        }
        assert_eq!((rate, steps), (720.0, 10));
        assert_eq!(p.slowest, 90.0);
        assert!(p.slowed_for >= HALF * 20, "{:?}", p.slowed_for);
    }

    #[test]
    fn a_connection_back_from_suspension_brings_its_queue_without_slowing_the_clock() {
        let mut p = Pace::new(720.0, 60.0);
        assert_eq!(p.observe(owed(&[("zendesk-1", 100), ("zendesk-2", 100)]), HALF), None);
        // freshdesk-2 goes live at 05:00 with 3,000 resolutions queued while it lacked a scope.
        assert_eq!(p.observe(owed(&[("zendesk-1", 100), ("zendesk-2", 100), ("freshdesk-2", 3_000)]), HALF), None);
        // It drains at its rate limit's pace while the others hold steady: no slower clock.
        for left in [2_900, 2_750, 2_700, 2_500] {
            assert_eq!(p.observe(owed(&[("zendesk-1", 101), ("zendesk-2", 99), ("freshdesk-2", left)]), HALF), None);
        }
        // But the live connections' backlog growing past the mark does slow it.
        assert_eq!(p.observe(owed(&[("zendesk-1", 300), ("zendesk-2", 99), ("freshdesk-2", 2_400)]), HALF), Some(576.0));
    }

    #[test]
    fn a_light_day_still_has_room_for_normal_latency() {
        // The test suite's day: 6 connections at 24 tickets an hour, 2.4 a minute.
        let p = Pace::new(1_440.0, 2.4);
        assert_eq!((p.low, p.high), (24, 72));
        let tiny = Pace::new(1_440.0, 0.0);
        assert_eq!((tiny.low, tiny.high), (20, 60));
    }

    #[test]
    fn a_shortfall_at_the_floor_is_reported_as_possibly_the_machines() {
        let mut r = DemoReport { rate: 720.0, tickets_created: 86_400, lost_tickets: 3, ..DemoReport::default() };
        r.connections = vec![ConnectionReport::default(); 6];
        assert_eq!(r.problems(), vec!["3 tickets never reached the app".to_string()]);
        r.pace = PaceReport { nominal_rate: 720.0, average_rate: 200.0, slowest_rate: 90.0, slowed_seconds: 300.0, overrun_seconds: 12.0 };
        let p = r.problems();
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[1].contains("x90") && p[1].contains("--tickets-per-hour 300"), "{}", p[1]);
        assert!(r.table().contains("ran slower for 300 s, at x200 on average and x90 at its slowest"), "{}", r.table());
        // Every promise kept: an overrun alone is no failure.
        r.lost_tickets = 0;
        assert!(r.problems().is_empty());
    }
}
