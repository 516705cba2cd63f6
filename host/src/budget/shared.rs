//! Budgets shared across replicas: one rate budget per connection for the whole cluster.
//!
//! # How
//!
//! Each replica keeps its [`RateBudget`](super::RateBudget) and its [`BudgetGate`](super::BudgetGate)
//! (queues, write-first order, claims): the gate logic exists once. With a [`SharedBudgets`] the
//! local budget becomes a *mirror*: a permit the local gate grants is then confirmed by the shared
//! backend ([`SharedBackend::acquire`]) in one round trip, which applies the same fixed-window
//! algorithm to counters every replica draws on (for Redis: one Lua script, [`RedisBackend`],
//! atomic by construction). The backend answers with the counters' state, which the local budget
//! adopts ([`RateBudget::adopt`](super::RateBudget::adopt)): the local decisions then agree with
//! the shared ones until the next answer, so a replica whose mirror says "full" waits until the
//! window ends without asking the backend at all. A refusal re-queues the waiter (holding it until
//! the time the backend named). Observations (`limit`/`remaining`/`reset`), 429 penalties and
//! refunds are applied locally and forwarded ([`SharedBackend::observe`], ...), so a correction
//! one replica reads reaches every replica's next decision.
//!
//! Why the same fixed windows, and not GCRA: see the [`crate::budget`] module doc; the script is
//! a line-for-line mirror of `window.rs` (integers only) so that both backends decide alike.
//!
//! # When the backend is unreachable
//!
//! A failed call (connection refused, timeout) switches the replica's gates to a conservative
//! local share: every window's target is divided by the configured replica count
//! ([`RateBudget::set_divisor`](super::RateBudget::set_divisor)), so `n` replicas together never
//! spend more than the target, hence never more than the limit. The local counts (a mirror of the
//! cluster's spend at the last answer) are kept, which only narrows the current window. The
//! platform's `remaining` readings go on correcting the local counters, and in fallback they
//! count the other replicas' spend as "others": that narrows each replica's read share further
//! (measured: three replicas together read about a third of the shared read share), which errs
//! on the safe side while the cluster cannot coordinate. One
//! `shared-budget-unavailable` alert is raised per outage. At most every
//! [`SharedSettings::probe_every`] (on the injected clock) a grant tries the backend again; when it
//! answers, the spend made in fallback in still-open windows is first charged to the shared
//! counters ([`SharedBackend::charge`]), then the whole target is restored.
//!
//! A wait dropped while its confirmation is in flight may leave its units counted in the backend:
//! the error is on the safe side (less spent, never more).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::bindings::Lane;
use crate::clock::Millis;
use crate::store::SharedStore;

use super::rate::{CounterSpec, SharedCounter};

/// Alert kind raised when a replica loses the shared budget backend.
pub const SHARED_BUDGET_UNAVAILABLE: &str = "shared-budget-unavailable";

/// Why a shared-budget call failed: the backend is unreachable or answered nonsense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shared rate budget backend: {0}")]
pub struct SharedError(pub String);

/// One draw for the shared backend: the counter and the units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedDraw {
    /// The counter.
    pub spec: CounterSpec,
    /// Units.
    pub cost: u64,
}

/// The shared backend's decision on a set of draws.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedVerdict {
    /// Whether every draw was taken (all or none).
    pub granted: bool,
    /// When refused: the earliest time worth trying again.
    pub until: Millis,
    /// Each draw's counter after the decision, in the order of the draws.
    pub counters: Vec<SharedCounter>,
}

/// A store of rate budget counters shared by every replica. Every call is atomic and applies the
/// algorithm of [`crate::budget`] to the shared counters.
#[async_trait]
pub trait SharedBackend: Send + Sync + fmt::Debug {
    /// Take `draws` for `lane` at `now` if all fit (target `target_pm` permille of each limit).
    async fn acquire(
        &self,
        connection: &str,
        lane: Lane,
        target_pm: u16,
        draws: &[SharedDraw],
        now: Millis,
    ) -> Result<SharedVerdict, SharedError>;

    /// Apply a platform reading to a counter (see `Window::observe`); `limit` is a stated limit.
    #[allow(clippy::too_many_arguments)]
    async fn observe(
        &self,
        connection: &str,
        spec: &CounterSpec,
        limit: Option<u32>,
        remaining: Option<u64>,
        reset: Option<Millis>,
        sent_in: Option<Millis>,
        now: Millis,
    ) -> Result<(), SharedError>;

    /// Block a counter (with a key) or the whole bucket (without) until `until`; only extends.
    async fn penalize(&self, connection: &str, spec: &CounterSpec, until: Millis, now: Millis) -> Result<(), SharedError>;

    /// Give back units drawn in the window that started at `drawn_in`, if it is still current.
    async fn refund(
        &self,
        connection: &str,
        spec: &CounterSpec,
        lane: Lane,
        cost: u64,
        drawn_in: Millis,
        now: Millis,
    ) -> Result<(), SharedError>;

    /// Add units spent without the backend (in fallback) to a counter's current window.
    async fn charge(
        &self,
        connection: &str,
        spec: &CounterSpec,
        read: u64,
        write: u64,
        now: Millis,
    ) -> Result<(), SharedError>;

    /// Whether the backend answers.
    async fn ping(&self) -> Result<(), SharedError>;

    /// What the backend is, for readiness (a URL with any password redacted).
    fn describe(&self) -> String;
}

/// Settings of budgets shared across replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedSettings {
    /// This replica's id (logs, alerts, metrics).
    pub replica_id: String,
    /// How many replicas share each connection's limit: while the backend is unreachable each
    /// keeps to `1/replicas` of every target.
    pub replicas: u32,
    /// How often a replica in fallback tries the backend again (on the injected clock).
    pub probe_every: Duration,
}

impl Default for SharedSettings {
    fn default() -> Self {
        Self { replica_id: "replica-1".into(), replicas: 1, probe_every: Duration::from_secs(1) }
    }
}

/// The shared backend's health as one replica sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SharedStatus {
    /// The backend (redacted URL).
    pub backend: String,
    /// Whether the last call succeeded.
    pub up: bool,
    /// Outages seen since start.
    pub outages: u64,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// Replicas sharing each limit.
    pub replicas: u32,
}

#[derive(Debug)]
struct Health {
    up: bool,
    next_probe: Millis,
    outages: u64,
    last_error: Option<String>,
}

/// The budgets of one replica shared with the others through a [`SharedBackend`]: health,
/// fallback and the outage alert. Give it to [`BudgetLayer::with_shared`](super::BudgetLayer::with_shared).
pub struct SharedBudgets {
    backend: Arc<dyn SharedBackend>,
    settings: SharedSettings,
    alerts: Option<SharedStore>,
    health: Mutex<Health>,
}

impl fmt::Debug for SharedBudgets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBudgets").field("backend", &self.backend).field("settings", &self.settings).finish()
    }
}

impl SharedBudgets {
    /// Budgets shared through `backend`; outage alerts go to `alerts` when given.
    pub fn new(backend: Arc<dyn SharedBackend>, settings: SharedSettings, alerts: Option<SharedStore>) -> Self {
        Self {
            backend,
            settings,
            alerts,
            health: Mutex::new(Health { up: true, next_probe: Millis::MIN, outages: 0, last_error: None }),
        }
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn SharedBackend> {
        &self.backend
    }

    /// The settings.
    pub fn settings(&self) -> &SharedSettings {
        &self.settings
    }

    /// Whether the backend should be asked at `now`: it is up, or a probe is due (which books
    /// the next one).
    pub(crate) fn usable(&self, now: Millis) -> bool {
        let mut h = self.health();
        if h.up {
            return true;
        }
        if now >= h.next_probe {
            h.next_probe = now.saturating_add(crate::store::ms(self.settings.probe_every));
            return true;
        }
        false
    }

    /// Whether the last call succeeded.
    pub fn is_up(&self) -> bool {
        self.health().up
    }

    /// Record a failed call at `now`; the first of an outage raises the alert.
    pub(crate) fn failed(&self, now: Millis, error: &SharedError) {
        let first = {
            let mut h = self.health();
            h.next_probe = now.saturating_add(crate::store::ms(self.settings.probe_every));
            h.last_error = Some(error.0.clone());
            let first = h.up;
            if first {
                h.up = false;
                h.outages += 1;
            }
            first
        };
        if !first {
            return;
        }
        let text = format!(
            "Replica {}: the shared rate budget backend ({}) is unreachable ({}). Each connection now keeps to 1/{} of its budget on this replica until it answers again. Check that Redis is running and reachable.",
            self.settings.replica_id,
            self.backend.describe(),
            error.0,
            self.settings.replicas
        );
        tracing::error!(replica = %self.settings.replica_id, "{text}");
        if let (Some(store), Ok(handle)) = (self.alerts.clone(), tokio::runtime::Handle::try_current()) {
            let detail = serde_json::json!({
                "replica": self.settings.replica_id,
                "backend": self.backend.describe(),
                "error": error.0,
                "replicas": self.settings.replicas,
            });
            handle.spawn(async move {
                if let Err(e) = crate::alerts::raise(&store, now, None, SHARED_BUDGET_UNAVAILABLE, text, detail).await {
                    tracing::error!("raising the shared-budget alert failed: {e}");
                }
            });
        }
    }

    /// Record a successful call.
    pub(crate) fn succeeded(&self) {
        let mut h = self.health();
        if !h.up {
            h.up = true;
            tracing::info!(replica = %self.settings.replica_id, "shared rate budget backend answers again: whole budgets restored");
        }
    }

    /// Health for readiness and metrics.
    pub fn status(&self) -> SharedStatus {
        let h = self.health();
        SharedStatus {
            backend: self.backend.describe(),
            up: h.up,
            outages: h.outages,
            last_error: h.last_error.clone(),
            replicas: self.settings.replicas,
        }
    }

    /// Ask the backend now (readiness); records the outcome.
    pub async fn check(&self, now: Millis) -> Result<(), SharedError> {
        match self.backend.ping().await {
            Ok(()) => {
                self.succeeded();
                Ok(())
            }
            Err(e) => {
                self.failed(now, &e);
                Err(e)
            }
        }
    }
}

/// Spend made in fallback, per counter, to charge to the shared counters on recovery.
#[derive(Debug, Default)]
pub(crate) struct FallbackSpend {
    pub(crate) counters: HashMap<(String, Option<String>), FallbackCounter>,
}

#[derive(Debug)]
pub(crate) struct FallbackCounter {
    pub(crate) spec: CounterSpec,
    pub(crate) window_start: Millis,
    pub(crate) window_end: Millis,
    pub(crate) read: u64,
    pub(crate) write: u64,
}

impl FallbackSpend {
    /// Count a permit granted in fallback.
    pub(crate) fn record(&mut self, specs: Vec<(CounterSpec, super::Drawn)>, lane: Lane) {
        for (spec, d) in specs {
            let e = self.counters.entry((d.bucket.clone(), d.key.clone())).or_insert_with(|| FallbackCounter {
                spec,
                window_start: d.window_start,
                window_end: d.window_end,
                read: 0,
                write: 0,
            });
            if e.window_start != d.window_start {
                *e = FallbackCounter { spec: e.spec.clone(), window_start: d.window_start, window_end: d.window_end, read: 0, write: 0 };
            }
            match lane {
                Lane::Read => e.read += d.cost,
                Lane::Write => e.write += d.cost,
            }
        }
    }
}

// -- Redis ----------------------------------------------------------------------------------

/// The fixed-window algorithm of `window.rs` and `rate.rs`, over Redis hashes.
///
/// KEYS come in pairs per counter: the bucket's meta hash (`l` limit in force, `p` bucket-wide
/// penalty) and the counter's hash (`s`, `e`, `r`, `w`, `o`, `a`, `p`). Absent times read as 0.
/// ARGV[1] is the operation, ARGV[2] `now`.
const SCRIPT: &str = r#"
local op = ARGV[1]
local now = tonumber(ARGV[2])
local function fmt(x) return string.format('%d', x) end
local function load(k)
  local v = redis.call('HMGET', k, 's', 'e', 'r', 'w', 'o', 'a', 'p')
  return { s = tonumber(v[1]) or 0, e = tonumber(v[2]) or 0, r = tonumber(v[3]) or 0, w = tonumber(v[4]) or 0,
           o = tonumber(v[5]) or 0, a = tonumber(v[6]) or 0, p = tonumber(v[7]) or 0 }
end
local function roll(c, len)
  if now < c.e then return end
  if c.a == 1 and c.e ~= 0 then
    c.s = c.e + math.floor((now - c.e) / len) * len
  else
    c.s = now
  end
  c.e = c.s + len
  c.r = 0; c.w = 0; c.o = 0
end
local function save(k, c, len)
  redis.call('HSET', k, 's', fmt(c.s), 'e', fmt(c.e), 'r', fmt(c.r), 'w', fmt(c.w), 'o', fmt(c.o), 'a', fmt(c.a), 'p', fmt(c.p))
  local ttl = math.max(c.e, c.p) - now + 2 * len
  redis.call('PEXPIRE', k, fmt(math.max(ttl, 60000)))
end
local function meta(k)
  local m = redis.call('HMGET', k, 'l', 'p')
  return tonumber(m[1]), tonumber(m[2]) or 0
end
-- The write reserve still kept from reads (window.rs `Window::kept`).
local function kept(c, reserve, len)
  if reserve == 0 or len <= 0 or c.a ~= 1 or c.o * 2 > reserve then return reserve end
  local left = math.min(math.max(c.e - now, 0), len)
  return math.floor((reserve * left + len - 1) / len)
end
local function touch_meta(k)
  redis.call('PEXPIRE', k, 86400000)
end

if op == 'acquire' then
  local lane = ARGV[3]
  local tpm = tonumber(ARGV[4])
  local n = tonumber(ARGV[5])
  local cs = {}
  local refused = false
  local untl = now
  for i = 1, n do
    local b = 5 + (i - 1) * 5
    local cost, len, declared, rpm = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
    -- A per-object key not tracked yet is created only when drawn (as rate.rs does).
    local fresh = ARGV[b + 5] == '1' and redis.call('EXISTS', KEYS[2 * i]) == 0
    local lim, bp = meta(KEYS[2 * i - 1])
    lim = lim or declared
    local c = load(KEYS[2 * i])
    local target = 0
    if lim > 0 then target = math.max(1, math.floor(lim * tpm / 1000)) end
    local reserve = math.floor(target * rpm / 1000)
    local t = nil
    local rolled = false
    if bp > now then
      -- A bucket-wide penalty refuses before the counter is looked at (rate.rs).
      t = bp
    else
      roll(c, len)
      rolled = true
      local held
      if lane == 'w' then held = c.r + c.w + c.o
      else held = c.r + c.o + math.max(c.w, math.min(reserve, c.w + kept(c, reserve, len))) end
      local room = math.max(0, target - held)
      if c.p > now then t = c.p
      elseif cost > room then
        -- Window::fits_at: a read may fit later in this window, as the reserve is released.
        t = c.e
        local free = target - (c.r + c.o + cost)
        if lane ~= 'w' and reserve > 0 and c.a == 1 and c.o * 2 <= reserve and free > c.w then
          t = math.max(now, c.e - math.floor((free - c.w) * len / reserve))
        end
      end
    end
    if t then
      refused = true
      if t > untl then untl = t end
    end
    cs[i] = { c = c, len = len, cost = cost, lim = lim, bp = bp, fresh = fresh, rolled = rolled }
  end
  local out = { refused and 0 or 1, fmt(untl) }
  for i = 1, n do
    local d = cs[i]
    if not refused then
      if lane == 'w' then d.c.w = d.c.w + d.cost else d.c.r = d.c.r + d.cost end
    end
    if not refused or (d.rolled and not d.fresh) then save(KEYS[2 * i], d.c, d.len) end
    local c = d.c
    for _, v in ipairs({ c.s, c.e, c.r, c.w, c.o, c.a, c.p, d.bp, d.lim }) do table.insert(out, fmt(v)) end
  end
  return out
elseif op == 'observe' then
  local len, declared, stated = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
  local rem, reset, sent = ARGV[6], ARGV[7], ARGV[8]
  if stated > 0 then redis.call('HSET', KEYS[1], 'l', fmt(stated)) end
  touch_meta(KEYS[1])
  local lim = meta(KEYS[1]) or declared
  local c = load(KEYS[2])
  local current
  if reset ~= '' then
    local t = math.min(tonumber(reset), now + len)
    if t <= now then return 0 end
    local later = (not (now < c.e)) or t >= c.e + math.floor(len / 2)
    c.s = t - len; c.e = t; c.a = 1
    if later then c.r = 0; c.w = 0; c.o = 0 end
    current = true
  else
    roll(c, len)
    current = (sent == '') or (tonumber(sent) == c.s)
  end
  if current and rem ~= '' then
    local counted = lim - math.min(tonumber(rem), lim)
    c.o = math.max(0, counted - (c.r + c.w))
  end
  save(KEYS[2], c, len)
  return 1
elseif op == 'penalize' then
  local untl, keyed, len = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
  if keyed == '1' then
    local c = load(KEYS[2])
    if untl > c.p then c.p = untl end
    save(KEYS[2], c, len)
  else
    local _, bp = meta(KEYS[1])
    if untl > bp then redis.call('HSET', KEYS[1], 'p', fmt(untl)) end
    touch_meta(KEYS[1])
  end
  return 1
elseif op == 'refund' then
  local lane, cost, drawn, len = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
  local c = load(KEYS[2])
  if c.s ~= drawn or not (now < c.e) then return 0 end
  if lane == 'w' then c.w = math.max(0, c.w - cost) else c.r = math.max(0, c.r - cost) end
  save(KEYS[2], c, len)
  return 1
elseif op == 'charge' then
  local r, w, len = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
  local c = load(KEYS[2])
  roll(c, len)
  c.r = c.r + r; c.w = c.w + w
  save(KEYS[2], c, len)
  return 1
end
return redis.error_reply('deskgate budget script: unknown operation ' .. tostring(op))
"#;

/// Shared budgets in Redis: every decision is one `EVALSHA` of a Lua script (atomic on the
/// server), keys under `prefix`. The connection is made lazily and remade after a failure; every
/// call is bounded by `timeout`, so an unreachable Redis turns into an error quickly.
pub struct RedisBackend {
    client: redis::Client,
    url: String,
    prefix: String,
    timeout: Duration,
    script: redis::Script,
    con: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend").field("url", &self.url).field("prefix", &self.prefix).finish()
    }
}

fn lane_arg(lane: Lane) -> &'static str {
    match lane {
        Lane::Read => "r",
        Lane::Write => "w",
    }
}

impl RedisBackend {
    /// A backend on `url` (`redis://host:port/db`, `rediss://...`, `redis+unix:///path`), keys
    /// under `prefix`, each call bounded by `timeout`. Nothing is connected yet.
    ///
    /// # Errors
    /// A URL Redis cannot parse, named with the fix.
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<Self, SharedError> {
        let client = redis::Client::open(url).map_err(|e| {
            SharedError(format!(
                "redis URL {:?} is not valid ({e}); write redis://HOST:PORT/DB or redis+unix:///PATH",
                crate::store::redact_url(url)
            ))
        })?;
        Ok(Self {
            client,
            url: crate::store::redact_url(url),
            prefix: prefix.to_owned(),
            timeout,
            script: redis::Script::new(SCRIPT),
            con: tokio::sync::Mutex::new(None),
        })
    }

    fn meta_key(&self, connection: &str, spec: &CounterSpec) -> String {
        format!("{}:{connection}:m:{}", self.prefix, spec.bucket)
    }

    fn window_key(&self, connection: &str, spec: &CounterSpec) -> String {
        match &spec.key {
            None => format!("{}:{connection}:w:{}", self.prefix, spec.bucket),
            Some(k) => format!("{}:{connection}:w:{}:k:{k}", self.prefix, spec.bucket),
        }
    }

    async fn connection(&self) -> Result<redis::aio::MultiplexedConnection, SharedError> {
        let mut slot = self.con.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let c = tokio::time::timeout(self.timeout, self.client.get_multiplexed_async_connection_with_config(&config))
            .await
            .map_err(|_| SharedError(format!("connecting to {} timed out after {:?}", self.url, self.timeout)))?
            .map_err(|e| SharedError(format!("cannot connect to {}: {e}", self.url)))?;
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn forget(&self) {
        *self.con.lock().await = None;
    }

    async fn run<T: redis::FromRedisValue>(&self, inv: &redis::ScriptInvocation<'_>) -> Result<T, SharedError> {
        let mut con = self.connection().await?;
        let r = tokio::time::timeout(self.timeout, inv.invoke_async::<T>(&mut con)).await;
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.forget().await;
                Err(SharedError(format!("{} failed: {e}", self.url)))
            }
            Err(_) => {
                self.forget().await;
                Err(SharedError(format!("{} did not answer within {:?}", self.url, self.timeout)))
            }
        }
    }
}

fn parse_counter(v: &[i64]) -> SharedCounter {
    SharedCounter {
        start: v[0],
        end: v[1],
        read: v[2].max(0) as u64,
        write: v[3].max(0) as u64,
        others: v[4].max(0) as u64,
        anchored: v[5] == 1,
        penalty: v[6],
        bucket_penalty: v[7],
        limit: u32::try_from(v[8].max(0)).unwrap_or(u32::MAX),
    }
}

#[async_trait]
impl SharedBackend for RedisBackend {
    async fn acquire(
        &self,
        connection: &str,
        lane: Lane,
        target_pm: u16,
        draws: &[SharedDraw],
        now: Millis,
    ) -> Result<SharedVerdict, SharedError> {
        let mut inv = self.script.prepare_invoke();
        inv.arg("acquire").arg(now).arg(lane_arg(lane)).arg(target_pm).arg(draws.len());
        for d in draws {
            inv.key(self.meta_key(connection, &d.spec)).key(self.window_key(connection, &d.spec));
            inv.arg(d.cost).arg(d.spec.len).arg(d.spec.declared).arg(d.spec.reserve_pm).arg(if d.spec.key.is_some() { "1" } else { "0" });
        }
        let v: Vec<i64> = self.run(&inv).await?;
        if v.len() != 2 + 9 * draws.len() {
            return Err(SharedError(format!("the budget script answered {} values for {} draws", v.len(), draws.len())));
        }
        Ok(SharedVerdict { granted: v[0] == 1, until: v[1], counters: v[2..].chunks(9).map(parse_counter).collect() })
    }

    async fn observe(
        &self,
        connection: &str,
        spec: &CounterSpec,
        limit: Option<u32>,
        remaining: Option<u64>,
        reset: Option<Millis>,
        sent_in: Option<Millis>,
        now: Millis,
    ) -> Result<(), SharedError> {
        let opt = |v: Option<i64>| v.map(|x| x.to_string()).unwrap_or_default();
        let mut inv = self.script.prepare_invoke();
        inv.key(self.meta_key(connection, spec)).key(self.window_key(connection, spec));
        inv.arg("observe")
            .arg(now)
            .arg(spec.len)
            .arg(spec.declared)
            .arg(limit.unwrap_or(0))
            .arg(opt(remaining.map(|r| i64::try_from(r).unwrap_or(i64::MAX))))
            .arg(opt(reset))
            .arg(opt(sent_in));
        let _: i64 = self.run(&inv).await?;
        Ok(())
    }

    async fn penalize(&self, connection: &str, spec: &CounterSpec, until: Millis, now: Millis) -> Result<(), SharedError> {
        let mut inv = self.script.prepare_invoke();
        inv.key(self.meta_key(connection, spec)).key(self.window_key(connection, spec));
        inv.arg("penalize").arg(now).arg(until).arg(if spec.key.is_some() { "1" } else { "0" }).arg(spec.len);
        let _: i64 = self.run(&inv).await?;
        Ok(())
    }

    async fn refund(
        &self,
        connection: &str,
        spec: &CounterSpec,
        lane: Lane,
        cost: u64,
        drawn_in: Millis,
        now: Millis,
    ) -> Result<(), SharedError> {
        let mut inv = self.script.prepare_invoke();
        inv.key(self.meta_key(connection, spec)).key(self.window_key(connection, spec));
        inv.arg("refund").arg(now).arg(lane_arg(lane)).arg(cost).arg(drawn_in).arg(spec.len);
        let _: i64 = self.run(&inv).await?;
        Ok(())
    }

    async fn charge(
        &self,
        connection: &str,
        spec: &CounterSpec,
        read: u64,
        write: u64,
        now: Millis,
    ) -> Result<(), SharedError> {
        let mut inv = self.script.prepare_invoke();
        inv.key(self.meta_key(connection, spec)).key(self.window_key(connection, spec));
        inv.arg("charge").arg(now).arg(read).arg(write).arg(spec.len);
        let _: i64 = self.run(&inv).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), SharedError> {
        let mut con = self.connection().await?;
        let r: Result<Result<String, _>, _> =
            tokio::time::timeout(self.timeout, redis::cmd("PING").query_async::<String>(&mut con)).await;
        match r {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                self.forget().await;
                Err(SharedError(format!("{} failed: {e}", self.url)))
            }
            Err(_) => {
                self.forget().await;
                Err(SharedError(format!("{} did not answer within {:?}", self.url, self.timeout)))
            }
        }
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}

/// The shared budgets `[cluster]` asks for: `None` without `cluster.redis`. Calls to Redis are
/// bounded by 500 ms; a replica in fallback tries Redis again every second.
///
/// # Errors
/// A Redis URL that cannot be parsed.
pub fn from_cluster(
    cluster: &crate::config::ClusterSettings,
    alerts: Option<SharedStore>,
) -> Result<Option<Arc<SharedBudgets>>, SharedError> {
    let Some(url) = &cluster.redis else { return Ok(None) };
    let backend = RedisBackend::new(url, &cluster.redis_prefix, Duration::from_millis(500))?;
    let settings = SharedSettings {
        replica_id: cluster.replica_id.clone(),
        replicas: cluster.replicas,
        probe_every: Duration::from_secs(1),
    };
    Ok(Some(Arc::new(SharedBudgets::new(Arc::new(backend), settings, alerts))))
}
