//! [`OutboxWorker`]: one connection's write lane, from a claimed entry to a settled one.
//!
//! A pass ([`OutboxWorker::run_once`]) claims due entries with a lease, groups them by ticket and
//! works on up to [`OutboxConfig::concurrency`] tickets at once, one entry at a time per ticket, in
//! id order. Before a group starts, the oldest in-flight entry of its ticket is looked up: if an
//! older one exists (waiting out a 429, say), the whole group is held behind it (`[held]` in the
//! write log, due when that one is), so no write overtakes an older write to the same ticket, even
//! across passes, restarts and replicas. Groups whose head met a 429 go first and wait at
//! [`Priority::WriteRetry`], which is how the write-retry queue is flushed first once capacity
//! clears; the queue itself is the store (durable `not_before`), not memory, so a restart loses
//! nothing of it.
//!
//! Write-log details start with a marker the worker reads back on the next claim:
//! `[rate-limited]` (retry at write-retry priority), `[unresolved]` (read back before resending),
//! `[held]`, `[not-sent]`, `[ambiguous]`, `[partial]`, `[adapter]`, `[auth]`.
//!
//! Every state change is also a `tracing` event (target `deskgate::outbox::worker`) carrying
//! `connection`, `ticket`, `action_id` and `action` (the kind): `debug` for the routine ones (sent,
//! confirmed by the response, held behind an older write), `info` for those that recover on their
//! own (confirmed by a read-back, a retry scheduled and why, a 429 parked until the bucket
//! reopens, an unresolved send to read back), `warn` for the ones a person must look at (failed,
//! diverged; each also raises its alert). Fields are only computed for enabled levels.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{ActionRecord, OutboxConfig, OutboxError, action_kind, decode_action};
use crate::alerts;
use crate::bindings::{
    Action, ApplyAction, BucketDraw, Failure, ForbiddenDetail, HttpRequest, HttpResponse, Lane, Operation, Outcome,
    PermissionKind, ReadBackResult, Ticket,
};
use crate::budget::{Backoff, BudgetGate, Permit, Priority, SplitMix64, TokioSleeper};
use crate::clock::{Millis, SharedClock};
use crate::driver::{DriveError, Driver, StepHooks, Target, Transport};
use crate::runtime::Adapter;
use crate::store::{
    ActionQuery, AttemptOutcome, Claim, OutboxEntry, OutboxState, SharedStore, Settle, StoreError,
};

/// Where the outbox reports what people or other policies must know.
pub type EventSink = Arc<dyn Fn(&OutboxEvent) + Send + Sync>;

/// Told about each pass that claimed work ([`OutboxWorker::on_pass`]).
pub type PassHook = Arc<dyn Fn(&PassReport) + Send + Sync>;

/// Decides what a 401/403 on a write does to the action (the credential policy, issue #5).
pub type AuthHook = Arc<dyn Fn(&AuthFailure) -> AuthVerdict + Send + Sync>;

/// A write met a 401 or a 403 (on the whole action, not on one part of a resolution).
#[derive(Debug, Clone, PartialEq)]
pub struct AuthFailure {
    /// The connection.
    pub connection_id: String,
    /// The outbox entry.
    pub entry_id: i64,
    /// The ticket.
    pub ticket_id: String,
    /// The platform's failure (`unauthenticated` or `forbidden`).
    pub failure: Failure,
    /// [`credential_fingerprint`] of the `Authorization` the refused request went out with: a
    /// 401 about a credential already replaced says nothing about the current one.
    pub sent_with: u64,
}

/// A fingerprint of an `Authorization` header value (never the secret itself), to tell whether
/// the credential changed while a request was in flight.
pub fn credential_fingerprint(authorization: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    authorization.hash(&mut h);
    h.finish()
}

/// What to do with an action that met a 401/403.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthVerdict {
    /// Settle it as failed, with the platform's reason (the default).
    #[default]
    Fail,
    /// Keep it waiting durably ([`OutboxConfig::auth_wait`]); for a policy that suspends the
    /// connection and resumes it once credentials are fixed.
    Wait,
    /// Send it again after the entry's backoff: the credential it was refused with has been
    /// replaced, or the policy is replacing it (or suspending the connection, whose work is then
    /// not claimed until it is live).
    Resend,
}

/// Something the outbox did that the rest of the gateway may act on.
#[derive(Debug, Clone)]
pub enum OutboxEvent {
    /// An action was settled (confirmed, failed).
    Settled(ActionRecord),
    /// A resolution landed in part; an alert was raised.
    Diverged {
        /// The action.
        record: ActionRecord,
        /// The alert's id.
        alert_id: i64,
    },
    /// A write met a 401/403 (the [`AuthHook`] was consulted).
    AuthFailure(AuthFailure),
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PassReport {
    /// Entries claimed.
    pub claimed: usize,
    /// Settled confirmed from the platform's answer.
    pub confirmed: usize,
    /// Settled confirmed because a read-back found them on the ticket (never re-sent).
    pub confirmed_by_read_back: usize,
    /// Settled diverged (alert raised).
    pub diverged: usize,
    /// Settled failed.
    pub failed: usize,
    /// Back to pending for a later retry (429, transient, not sent).
    pub retried: usize,
    /// Left ambiguous, to be read back.
    pub ambiguous: usize,
    /// Held behind an older entry of the same ticket.
    pub held: usize,
    /// Lost to another claimer (nothing recorded).
    pub lease_lost: usize,
    /// Read-backs run.
    pub read_backs: usize,
}

impl PassReport {
    /// Add another pass's counts to these.
    pub fn merge(&mut self, o: &PassReport) {
        self.claimed += o.claimed;
        self.confirmed += o.confirmed;
        self.confirmed_by_read_back += o.confirmed_by_read_back;
        self.diverged += o.diverged;
        self.failed += o.failed;
        self.retried += o.retried;
        self.ambiguous += o.ambiguous;
        self.held += o.held;
        self.lease_lost += o.lease_lost;
        self.read_backs += o.read_backs;
    }
}

/// Everything a worker needs, given at construction (typed values, no globals).
pub struct WorkerParts {
    /// The store.
    pub store: SharedStore,
    /// The clock every policy reads.
    pub clock: SharedClock,
    /// The HTTP driver.
    pub driver: Driver,
    /// The connection's adapter.
    pub adapter: Arc<Adapter>,
    /// Where and as whom to send (replace with [`OutboxWorker::set_target`] after a refresh).
    pub target: Target,
    /// The connection's budget gate (from [`crate::budget::BudgetLayer::connect`]).
    pub gate: BudgetGate,
    /// This worker's lease owner name (unique per replica and connection).
    pub owner: String,
    /// Settings.
    pub config: OutboxConfig,
    /// Where events go, if anywhere.
    pub events: Option<EventSink>,
    /// The credential policy's hook for 401/403 ([`AuthVerdict::Fail`] without one).
    pub auth_hook: Option<AuthHook>,
}

/// One connection's write worker. Cheap to clone (a handle).
#[derive(Clone)]
pub struct OutboxWorker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for OutboxWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxWorker").field("owner", &self.inner.owner).field("connection", &self.inner.connection_id()).finish()
    }
}

struct Inner {
    store: SharedStore,
    clock: SharedClock,
    driver: Driver,
    adapter: Arc<Adapter>,
    target: RwLock<Target>,
    gate: BudgetGate,
    owner: String,
    config: OutboxConfig,
    events: Option<EventSink>,
    auth_hook: Option<AuthHook>,
    rng: Mutex<SplitMix64>,
    on_pass: RwLock<Option<PassHook>>,
}

/// How a claimed entry ended in this pass, for its group.
enum Step {
    /// Settled for good: the ticket's next entry may go.
    Final,
    /// Still owed an outcome, due again at this instant: the ticket's later entries wait for it.
    Later(Millis),
    /// Another worker holds it now.
    LeaseLost,
}

/// What the write-log's last record says about a retried entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    RateLimited,
    Unresolved,
}

/// How the requests of one attempt ended.
enum Attempt {
    /// Every part landed.
    Done { applied: Vec<String>, reference: Option<String>, ticket: Option<Ticket> },
    /// Some parts landed, then one failed.
    Partial { applied: Vec<String>, part: String, failure: Failure, skipped: Vec<String>, draws: Vec<BucketDraw> },
    /// Nothing landed: the platform refused.
    Failed { failure: Failure, draws: Vec<BucketDraw> },
    /// A request may or may not have been applied.
    Unknown(String),
    /// Nothing left.
    NotSent(String),
    /// The adapter failed before anything was sent.
    Broken(String),
    /// A hook refused before anything was sent (`true`: the lease is someone else's now).
    Refused(String, bool),
}

/// Budget and write-log hooks around each request of one operation.
struct Hooks<'a> {
    w: &'a Inner,
    /// The entry to mark `sent` before the first request, and whether that is done.
    mark: Option<(i64, &'a mut bool)>,
    /// The queue writes wait in.
    priority: Priority,
    permit: Option<Permit>,
    last_draws: Vec<BucketDraw>,
    sent: usize,
    lease_lost: bool,
    /// The call settles a write already sent (a read-back): its reads wait in the writes' queue
    /// at `priority`, not behind the connection's reads.
    settling: bool,
}

impl<'a> Hooks<'a> {
    fn new(w: &'a Inner, mark: Option<(i64, &'a mut bool)>, priority: Priority) -> Self {
        Self { w, mark, priority, permit: None, last_draws: Vec::new(), sent: 0, lease_lost: false, settling: false }
    }

    /// Hooks for a read-back: a write whose outcome is unknown waits on it (nothing is resent
    /// before it answers), so it is a write's request and takes the write lane. In the read lane
    /// it queued behind the sweeps, and during a storm, when other clients leave reads no room
    /// at all, the writes waiting on it stalled for hours of day time (the 600-an-hour demo).
    fn settling(w: &'a Inner) -> Self {
        Self { settling: true, ..Self::new(w, None, Priority::Write) }
    }
}

impl StepHooks for Hooks<'_> {
    async fn before_send(&mut self, request: &HttpRequest) -> Result<(), String> {
        let priority = if request.lane == Lane::Read && !self.settling { Priority::Read } else { self.priority };
        let permit = self.w.gate.acquire(priority, &request.draws).await.map_err(|e| e.to_string())?;
        if let Some((id, marked)) = self.mark.as_mut()
            && !**marked
        {
            // Evidence first: if we die after this, recovery reads back instead of resending.
            if let Err(e) = self.w.store.mark_sent(*id, &self.w.owner, self.w.now()).await {
                self.w.gate.refund(&permit);
                self.lease_lost = matches!(e, StoreError::LeaseLost { .. });
                return Err(format!("not sent: {e}"));
            }
            **marked = true;
        }
        self.last_draws = request.draws.clone();
        self.permit = Some(permit);
        self.sent += 1;
        Ok(())
    }

    fn after_response(&mut self, request: &HttpRequest, response: &HttpResponse) {
        self.w.gate.record_response(request.lane, response.status);
        let conn = self.w.target.read().unwrap_or_else(|e| e.into_inner()).connection.clone();
        match self.w.adapter.observe(&conn, response) {
            Ok(obs) => {
                if let Some(p) = &self.permit {
                    self.w.gate.observe_after(p, &obs);
                }
            }
            Err(e) => tracing::warn!(adapter = self.w.adapter.id(), "observe failed: {e}"),
        }
    }
}

fn permission_kind(k: PermissionKind) -> &'static str {
    match k {
        PermissionKind::Scope => "OAuth scope",
        PermissionKind::Role => "role privilege",
        PermissionKind::Plan => "plan feature",
    }
}

fn failure_json(f: &Failure) -> Value {
    let mut v = json!({ "case": f.case(), "explained": f.explain().to_string() });
    match f {
        Failure::Forbidden(d) => {
            v["kind"] = json!(permission_kind(d.kind));
            v["missing"] = json!(d.missing);
            v["remediation"] = json!(d.remediation);
            v["message"] = json!(d.message);
        }
        Failure::Unauthenticated(d) => {
            v["code"] = json!(d.code);
            v["message"] = json!(d.message);
        }
        Failure::RateLimited(d) => v["retry_after_ms"] = json!(d.retry_after_ms),
        _ => {}
    }
    v
}

/// The parts of `action` still to send, given the parts a read-back found on the ticket.
fn remainder(action: &Action, landed: &[String]) -> Vec<Action> {
    let has = |p: &str| landed.iter().any(|l| l == p);
    match action {
        Action::Resolve(r) if has("reply") => {
            let mut v = Vec::new();
            if !has("set-status") {
                v.push(Action::SetStatus(r.status));
            }
            if !r.tags.is_empty() && !has("add-tags") {
                v.push(Action::AddTags(r.tags.clone()));
            }
            if let Some(a) = &r.assignee
                && !has("assign")
            {
                v.push(Action::Assign(a.clone()));
            }
            v
        }
        _ => vec![action.clone()],
    }
}

/// The names of the parts an action consists of.
fn parts_of(action: &Action) -> Vec<String> {
    match action {
        Action::Resolve(r) => {
            let mut v = vec!["reply".to_string(), "set-status".to_string()];
            if !r.tags.is_empty() {
                v.push("add-tags".into());
            }
            if r.assignee.is_some() {
                v.push("assign".into());
            }
            v
        }
        a => vec![action_kind(a).to_string()],
    }
}

/// An entry's action kind for a log line (`unknown` when it does not decode). Only called where
/// the event is enabled: the macros evaluate fields after their level check.
fn entry_kind(e: &OutboxEntry) -> &'static str {
    decode_action(e).map_or("unknown", |a| action_kind(&a))
}

impl Inner {
    fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    fn connection_id(&self) -> String {
        self.target.read().unwrap_or_else(|e| e.into_inner()).connection.id.clone()
    }

    fn target(&self) -> Target {
        self.target.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A fingerprint of the credential requests go out with now (never the secret itself), to
    /// tell whether it changed while a request was in flight.
    fn credential_fingerprint(&self) -> u64 {
        credential_fingerprint(&self.target.read().unwrap_or_else(|e| e.into_inner()).authorization.current())
    }

    fn backoff_at(&self, attempt: i64) -> Millis {
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        let b: Backoff = self.config.backoff;
        b.retry_at(u32::try_from(attempt.max(0)).unwrap_or(u32::MAX), self.now(), &mut *rng)
    }

    fn emit(&self, ev: OutboxEvent) {
        if let Some(sink) = &self.events {
            sink(&ev);
        }
    }

    /// The marker of the last write-log record of a pending entry that was sent before.
    async fn marker(&self, e: &OutboxEntry) -> Result<Marker, OutboxError> {
        if e.state != OutboxState::Pending || e.attempts == 0 {
            return Ok(Marker::None);
        }
        let log = self.store.write_log(e.id).await?;
        Ok(match log.iter().rev().find(|r| !r.detail.starts_with("[held]")) {
            Some(r) if r.outcome == AttemptOutcome::Retry && r.detail.starts_with("[rate-limited]") => Marker::RateLimited,
            Some(r) if r.outcome == AttemptOutcome::Retry && r.detail.starts_with("[unresolved]") => Marker::Unresolved,
            _ => Marker::None,
        })
    }

    /// Hold `e` behind the older in-flight entry `behind` of the same ticket until `until`. An
    /// entry that may already be on the platform (`sent`, `ambiguous`) keeps its read-back.
    async fn hold(&self, e: &OutboxEntry, behind: i64, until: Millis) -> Result<bool, OutboxError> {
        let held = format!("[held] waits behind entry {behind} of the same ticket");
        let detail = match e.state {
            OutboxState::Sent | OutboxState::Ambiguous => format!("[unresolved] {held}; read back before any resend"),
            _ => held,
        };
        let s = Settle::Retry { detail, not_before: until.max(e.not_before) };
        Ok(self.settle(e, s).await?.is_some())
    }

    /// Settle, mapping a lost lease to [`Step::LeaseLost`].
    async fn settle(&self, e: &OutboxEntry, s: Settle) -> Result<Option<OutboxEntry>, OutboxError> {
        match self.store.settle_action(e.id, &self.owner, &s, self.now()).await {
            Ok(done) => {
                self.log_settled(e, &s);
                Ok(Some(done))
            }
            Err(StoreError::LeaseLost { .. }) => {
                tracing::debug!(connection = %e.connection_id, ticket = %e.ticket_id, action_id = e.id, action = entry_kind(e),
                    "write not settled: another worker took its lease");
                Ok(None)
            }
            Err(err) => Err(err.into()),
        }
    }

    /// The `tracing` event of a state change just stored (see the module docs for the levels).
    fn log_settled(&self, e: &OutboxEntry, s: &Settle) {
        let (conn, ticket, id, attempts) = (&e.connection_id, &e.ticket_id, e.id, e.attempts);
        match s {
            Settle::Confirmed { result, .. } => {
                let by = result.get("confirmed_by").and_then(Value::as_str).unwrap_or("response");
                if by == "response" {
                    tracing::debug!(connection = %conn, ticket = %ticket, action_id = id, action = entry_kind(e), attempts,
                        "write confirmed");
                } else {
                    tracing::info!(connection = %conn, ticket = %ticket, action_id = id, action = entry_kind(e), attempts, confirmed_by = by,
                        "write confirmed by read-back, not re-sent");
                }
            }
            Settle::Retry { detail, not_before } if detail.starts_with("[held]") => {
                tracing::debug!(connection = %conn, ticket = %ticket, action_id = id, action = entry_kind(e),
                    retry_in_ms = not_before - self.now(), why = %detail, "write held behind an older one of the same ticket");
            }
            Settle::Retry { detail, not_before } if detail.starts_with("[rate-limited]") => {
                tracing::info!(connection = %conn, ticket = %ticket, action_id = id, action = entry_kind(e), attempts,
                    retry_in_ms = not_before - self.now(), why = %detail, "write got a 429: parked until the bucket reopens, then sent first");
            }
            Settle::Retry { detail, not_before } => {
                tracing::info!(connection = %conn, ticket = %ticket, action_id = id, action = entry_kind(e), attempts,
                    retry_in_ms = not_before - self.now(), why = %detail, "write retry scheduled");
            }
            Settle::Ambiguous { detail, not_before } => {
                tracing::info!(connection = %conn, ticket = %ticket, action_id = id, action = entry_kind(e), attempts,
                    retry_in_ms = not_before - self.now(), why = %detail, "write sent without a clear outcome: read back before any resend");
            }
            Settle::Failed { why, .. } => {
                tracing::warn!(connection = %conn, ticket = %ticket, action_id = id, action = entry_kind(e), attempts, why = %why,
                    "write failed for good (write-failed alert raised)");
            }
            Settle::Diverged { .. } => {
                tracing::warn!(connection = %conn, ticket = %ticket, action_id = id, action = entry_kind(e), attempts,
                    "write diverged: part of it landed (divergence alert raised)");
            }
        }
    }

    /// Settle for good. A failure raises a `write-failed` alert: every failed write has either a
    /// scheduled retry (the `settle_later` paths) or an alert, never neither.
    async fn settle_final(&self, e: &OutboxEntry, s: Settle, rep: &mut PassReport) -> Result<Step, OutboxError> {
        let kind = s.outcome();
        let why = match &s {
            Settle::Failed { why, .. } => Some(why.clone()),
            _ => None,
        };
        let Some(done) = self.settle(e, s).await? else {
            rep.lease_lost += 1;
            return Ok(Step::LeaseLost);
        };
        match kind {
            AttemptOutcome::Confirmed => rep.confirmed += 1,
            AttemptOutcome::Failed => rep.failed += 1,
            _ => {}
        }
        if let Some(why) = why {
            self.alert_failed(&done, &why).await?;
        }
        if let Ok(rec) = ActionRecord::from_entry(&done, false) {
            self.emit(OutboxEvent::Settled(rec));
        }
        Ok(Step::Final)
    }

    /// Raise the `write-failed` alert of an entry just settled failed, naming the action, the
    /// ticket and why, through [`alerts::raise`] (stored, logged at error level, counted).
    async fn alert_failed(&self, done: &OutboxEntry, why: &str) -> Result<(), OutboxError> {
        let action = decode_action(done).map_or_else(|_| "action".to_string(), |a| action_kind(&a).to_string());
        let conn = &done.connection_id;
        let text = format!(
            "Connection {conn}: the {action} on ticket {} (action {}) failed and will not be retried: {why}. \
             The ticket did not get it; fix the cause, then submit the action again or finish the ticket by hand.",
            done.ticket_id, done.id
        );
        let detail = json!({
            "entry_id": done.id,
            "ticket_id": done.ticket_id,
            "action": action,
            "why": why,
            "result": done.result,
        });
        alerts::raise(&self.store, self.now(), Some(conn), alerts::WRITE_FAILED, text, detail).await?;
        Ok(())
    }

    async fn settle_later(&self, e: &OutboxEntry, s: Settle, rep: &mut PassReport) -> Result<Step, OutboxError> {
        let at = match &s {
            Settle::Retry { not_before, .. } | Settle::Ambiguous { not_before, .. } => *not_before,
            _ => self.now(),
        };
        let ambiguous = matches!(s, Settle::Ambiguous { .. });
        if self.settle(e, s).await?.is_none() {
            rep.lease_lost += 1;
            return Ok(Step::LeaseLost);
        }
        if ambiguous {
            rep.ambiguous += 1;
        } else {
            rep.retried += 1;
        }
        Ok(Step::Later(at))
    }

    /// Ask the adapter whether `action` is on the ticket (its reads in the write lane, see
    /// [`Hooks::settling`]). `Err` carries why not, and
    /// until when a 429 blocks the bucket.
    async fn read_back(&self, ticket: &str, action: &Action) -> Result<ReadBackResult, (String, Option<Millis>)> {
        let target = self.target();
        let op = Operation::ReadBack(ApplyAction { ticket_id: ticket.to_string(), action: action.clone() });
        let mut hooks = Hooks::settling(self);
        match self.driver.execute(&self.adapter, &target, &op, None, &mut hooks).await {
            Ok(Ok(Outcome::ReadBack(r))) => Ok(r),
            Ok(Ok(_)) => Err(("the adapter answered a read-back with another outcome".into(), None)),
            Ok(Err(Failure::RateLimited(d))) => {
                let until = self.gate.rate_limited(&hooks.last_draws, &d);
                Err((Failure::RateLimited(d).explain().to_string(), Some(until)))
            }
            Ok(Err(f)) => Err((f.explain().to_string(), None)),
            Err(e) => Err((e.to_string(), None)),
        }
    }

    /// Send `plan` (the action, or what is left of it), one operation per element.
    async fn send_plan(&self, e: &OutboxEntry, plan: &[Action], priority: Priority, marked: &mut bool) -> Attempt {
        let target = self.target();
        let mut applied: Vec<String> = Vec::new();
        let mut reference = None;
        let mut ticket = None;
        for (i, action) in plan.iter().enumerate() {
            let later: Vec<String> = plan[i + 1..].iter().flat_map(parts_of).collect();
            let op = Operation::Apply(ApplyAction { ticket_id: e.ticket_id.clone(), action: action.clone() });
            // The platform's idempotency header only where the descriptor says the platform honours
            // it for this kind of action. What is left of a resolution is a different payload, so it
            // gets its own key (a platform would refuse the entry's key with another body).
            let honoured = self.adapter.descriptor().idempotent_actions.iter().any(|k| k == action_kind(action));
            let key = if plan.len() == 1 && i == 0 && decode_action(e).is_ok_and(|a| a == *action) {
                e.idempotency_key.clone()
            } else {
                super::idempotency_key(&e.connection_id, &e.ticket_id, action)
            };
            let was_marked = *marked;
            let mut hooks = Hooks::new(self, Some((e.id, &mut *marked)), priority);
            let r = self.driver.execute(&self.adapter, &target, &op, honoured.then_some(key.as_str()), &mut hooks).await;
            let (sent, draws, lease_lost) = (hooks.sent, hooks.last_draws.clone(), hooks.lease_lost);
            if !was_marked && *marked {
                tracing::debug!(connection = %e.connection_id, ticket = %e.ticket_id, action_id = e.id, action = action_kind(action),
                    attempt = e.attempts + 1, "write sent");
            }
            let anything_sent = i > 0 || sent > 0;
            match r {
                Ok(Ok(Outcome::Written(w))) => {
                    applied.extend(w.applied);
                    reference = reference.or(w.reference);
                    ticket = w.ticket.or(ticket);
                    if let Some(f) = w.failed {
                        let mut skipped = f.skipped;
                        skipped.extend(later);
                        return Attempt::Partial { applied, part: f.part, failure: f.failure, skipped, draws };
                    }
                }
                Ok(Ok(_)) if anything_sent => return Attempt::Unknown("the adapter answered a write with another outcome".into()),
                Ok(Ok(_)) => return Attempt::Broken("the adapter answered a write with another outcome".into()),
                Ok(Err(failure)) if i == 0 => return Attempt::Failed { failure, draws },
                Ok(Err(failure)) => {
                    return Attempt::Partial { applied, part: action_kind(action).to_string(), failure, skipped: later, draws };
                }
                Err(DriveError::Transport { step: 0, error: Transport::NotSent(m) }) if i == 0 => return Attempt::NotSent(m),
                Err(DriveError::Transport { error: Transport::Ambiguous(m), .. }) => return Attempt::Unknown(m),
                Err(DriveError::Transport { error: Transport::NotSent(m), .. }) => return Attempt::Unknown(m),
                Err(DriveError::Refused(m)) if !anything_sent => return Attempt::Refused(m, lease_lost),
                Err(err) if anything_sent => return Attempt::Unknown(err.to_string()),
                Err(err) => return Attempt::Broken(err.to_string()),
            }
        }
        Attempt::Done { applied, reference, ticket }
    }

    async fn divergence(
        &self,
        e: &OutboxEntry,
        applied: &[String],
        part: &str,
        failure: &Failure,
        skipped: &[String],
        rep: &mut PassReport,
    ) -> Result<Step, OutboxError> {
        let conn = &e.connection_id;
        let why = match failure {
            Failure::Forbidden(ForbiddenDetail { kind, missing, remediation, .. }) => format!(
                "missing {} '{missing}'. To fix: {}",
                permission_kind(*kind),
                remediation.trim_end_matches('.')
            ),
            other => other.explain().to_string(),
        };
        let text = format!(
            "Ticket {} on connection {conn} is half-resolved: {} landed, but {part} failed: {why}. \
             Not applied: {}. The customer may already see the reply while the ticket's {part} did \
             not change; fix the cause, then finish the ticket by hand or submit the missing part again.",
            e.ticket_id,
            applied.join(", "),
            std::iter::once(part.to_string()).chain(skipped.iter().cloned()).collect::<Vec<_>>().join(", "),
        );
        let detail = json!({
            "entry_id": e.id,
            "ticket_id": e.ticket_id,
            "applied": applied,
            "failed_part": part,
            "failure": failure_json(failure),
            "skipped": skipped,
        });
        let alert = alerts::raise(&self.store, self.now(), Some(conn), alerts::DIVERGENCE, text.clone(), detail.clone()).await?;
        let mut result = detail;
        result["outcome"] = json!("diverged");
        result["alert_id"] = json!(alert.id);
        let Some(done) = self.settle(e, Settle::Diverged { detail: text, result }).await? else {
            rep.lease_lost += 1;
            return Ok(Step::LeaseLost);
        };
        rep.diverged += 1;
        if let Ok(record) = ActionRecord::from_entry(&done, false) {
            self.emit(OutboxEvent::Diverged { record, alert_id: alert.id });
        }
        Ok(Step::Final)
    }

    /// Work one claimed entry to a settlement (or a later due time).
    async fn process(&self, e: OutboxEntry, priority: Priority, rep: &mut PassReport) -> Result<Step, OutboxError> {
        let sent_with = self.credential_fingerprint();
        let action = match decode_action(&e) {
            Ok(a) => a,
            Err(err) => {
                return self.settle_final(&e, Settle::Failed { why: err.to_string(), result: None }, rep).await;
            }
        };
        let marker = self.marker(&e).await?;
        let priority = if marker == Marker::RateLimited { Priority::WriteRetry } else { priority };
        let needs_read_back = match e.state {
            OutboxState::Sent | OutboxState::Ambiguous => true,
            OutboxState::Pending => marker == Marker::Unresolved,
            _ => false,
        };
        let mut marked = false;
        let mut state = e.state.clone();
        let mut landed_before: Vec<String> = Vec::new();
        let mut plan = vec![action.clone()];
        if needs_read_back {
            if state == OutboxState::Pending {
                // This read-back may lead straight into a resend: leave the evidence first.
                match self.store.mark_sent(e.id, &self.owner, self.now()).await {
                    Ok(_) => {
                        marked = true;
                        state = OutboxState::Sent;
                        tracing::debug!(connection = %e.connection_id, ticket = %e.ticket_id, action_id = e.id, action = action_kind(&action),
                            "write marked sent before its read-back (a resend may follow)");
                    }
                    Err(StoreError::LeaseLost { .. }) => {
                        rep.lease_lost += 1;
                        return Ok(Step::LeaseLost);
                    }
                    Err(err) => return Err(err.into()),
                }
            }
            rep.read_backs += 1;
            match self.read_back(&e.ticket_id, &action).await {
                Ok(rb) if rb.landed => {
                    let result = json!({
                        "outcome": "confirmed",
                        "confirmed_by": "read-back",
                        "applied": if rb.parts_landed.is_empty() { parts_of(&action) } else { rb.parts_landed.clone() },
                        "detail": rb.detail,
                    });
                    let s = Settle::Confirmed { result, detail: format!("confirmed by read-back, not re-sent: {}", rb.detail) };
                    let step = self.settle_final(&e, s, rep).await?;
                    if matches!(step, Step::Final) {
                        rep.confirmed -= 1;
                        rep.confirmed_by_read_back += 1;
                    }
                    return Ok(step);
                }
                Ok(rb) => {
                    plan = remainder(&action, &rb.parts_landed);
                    if plan.is_empty() {
                        let result = json!({ "outcome": "confirmed", "confirmed_by": "read-back", "applied": rb.parts_landed, "detail": rb.detail });
                        let s = Settle::Confirmed { result, detail: format!("confirmed by read-back (every part on the ticket): {}", rb.detail) };
                        return self.settle_final(&e, s, rep).await;
                    }
                    if plan.len() == 1 && plan[0] == action {
                        landed_before.clear();
                    } else {
                        landed_before = rb.parts_landed;
                    }
                }
                Err((why, until)) => {
                    let not_before = until.unwrap_or_else(|| self.backoff_at(e.attempts));
                    let detail = format!("[unresolved] read-back failed, will read back again before any resend: {why}");
                    let s = if state == OutboxState::Sent {
                        Settle::Ambiguous { detail, not_before }
                    } else {
                        Settle::Retry { detail, not_before }
                    };
                    return self.settle_later(&e, s, rep).await;
                }
            }
        }
        let attempts = e.attempts + 1;
        match self.send_plan(&e, &plan, priority, &mut marked).await {
            Attempt::Done { applied, reference, ticket } => {
                let mut all = landed_before.clone();
                all.extend(applied);
                let result = json!({
                    "outcome": "confirmed",
                    "confirmed_by": if landed_before.is_empty() { "response" } else { "read-back and response" },
                    "applied": all,
                    "reference": reference,
                    "status": ticket.as_ref().map(|t| t.raw_status.clone()),
                });
                let detail = format!("confirmed: {}", all.join(", "));
                self.settle_final(&e, Settle::Confirmed { result, detail }, rep).await
            }
            Attempt::Partial { applied, part, failure, skipped, draws } => {
                let mut all = landed_before.clone();
                all.extend(applied);
                match &failure {
                    Failure::RateLimited(d) => {
                        let until = self.gate.rate_limited(&draws, d);
                        let detail = format!("[partial] {} landed; {part} rate limited, the rest follows after a read-back", all.join(", "));
                        self.settle_later(&e, Settle::Ambiguous { detail, not_before: until }, rep).await
                    }
                    Failure::Transient(m) if attempts < self.config.max_attempts => {
                        let detail = format!("[partial] {} landed; {part} failed ({m}), the rest follows after a read-back", all.join(", "));
                        let not_before = self.backoff_at(e.attempts);
                        self.settle_later(&e, Settle::Ambiguous { detail, not_before }, rep).await
                    }
                    _ if all.is_empty() => self.fail(&e, failure, sent_with, rep).await,
                    _ => self.divergence(&e, &all, &part, &failure, &skipped, rep).await,
                }
            }
            Attempt::Failed { failure, draws } if !landed_before.is_empty() => {
                let part = plan.first().map(action_kind).unwrap_or("set-status").to_string();
                let skipped: Vec<String> = plan.iter().skip(1).flat_map(parts_of).collect();
                match &failure {
                    Failure::RateLimited(d) => {
                        let until = self.gate.rate_limited(&draws, d);
                        let detail = format!("[partial] {} landed; {part} rate limited", landed_before.join(", "));
                        self.later_after_send(&e, detail, until, marked, rep).await
                    }
                    Failure::Transient(m) if attempts < self.config.max_attempts => {
                        let detail = format!("[partial] {} landed; {part} failed ({m})", landed_before.join(", "));
                        let nb = self.backoff_at(e.attempts);
                        self.later_after_send(&e, detail, nb, marked, rep).await
                    }
                    _ => self.divergence(&e, &landed_before, &part, &failure, &skipped, rep).await,
                }
            }
            Attempt::Failed { failure: Failure::RateLimited(d), draws } => {
                let until = self.gate.rate_limited(&draws, &d);
                let detail = format!("[rate-limited] {}; retried first once the bucket reopens", Failure::RateLimited(d.clone()).explain());
                self.settle_later(&e, Settle::Retry { detail, not_before: until }, rep).await
            }
            Attempt::Failed { failure: Failure::Transient(m), .. } if attempts < self.config.max_attempts && marked => {
                // A 5xx may come from a proxy after the platform applied the write: read back first.
                let detail = format!("[ambiguous] transient failure ({m}); read back before resending");
                let not_before = self.backoff_at(e.attempts);
                self.settle_later(&e, Settle::Ambiguous { detail, not_before }, rep).await
            }
            Attempt::Failed { failure, .. } => self.fail(&e, failure, sent_with, rep).await,
            Attempt::Unknown(why) => {
                let detail = format!("[ambiguous] {why}; read back before any resend");
                let not_before = self.now() + crate::store::ms(self.config.readback_delay);
                self.later_after_send(&e, detail, not_before, marked, rep).await
            }
            Attempt::NotSent(why) | Attempt::Broken(why) | Attempt::Refused(why, false) => {
                let n = self.store.write_log(e.id).await?.len() as i64;
                if n + 1 >= self.config.max_attempts {
                    let s = Settle::Failed { why: format!("gave up after {} tries: {why}", n + 1), result: None };
                    return self.settle_final(&e, s, rep).await;
                }
                let detail = if marked { format!("[not-sent] {why}") } else { format!("[adapter] {why}") };
                let not_before = self.backoff_at(n);
                self.settle_later(&e, Settle::Retry { detail, not_before }, rep).await
            }
            Attempt::Refused(_, true) => {
                rep.lease_lost += 1;
                Ok(Step::LeaseLost)
            }
        }
    }

    /// Settle an attempt that sent something and must be read back before the next one.
    async fn later_after_send(&self, e: &OutboxEntry, detail: String, not_before: Millis, marked: bool, rep: &mut PassReport) -> Result<Step, OutboxError> {
        if marked {
            self.settle_later(e, Settle::Ambiguous { detail, not_before }, rep).await
        } else {
            // Nothing was sent in this pass and the entry may still be `ambiguous` (read back, then
            // the adapter refused to plan): a retry that reads back again before any resend.
            self.settle_later(e, Settle::Retry { detail: format!("[unresolved] {detail}"), not_before }, rep).await
        }
    }

    /// The platform refused the whole action.
    async fn fail(&self, e: &OutboxEntry, failure: Failure, sent_with: u64, rep: &mut PassReport) -> Result<Step, OutboxError> {
        if matches!(failure, Failure::Unauthenticated(_)) && sent_with != self.credential_fingerprint() {
            // The token was refreshed while this request was in flight (a rotating refresh kills
            // the old pair at once): the 401 is about the old token, not the connection. Send
            // again with the new one; asking the credential policy would refresh a second time.
            let detail = format!("[auth] {}; the credential was replaced while the request was in flight, resending with the new one", failure.explain());
            return self.settle_later(e, Settle::Retry { detail, not_before: self.now() }, rep).await;
        }
        if matches!(failure, Failure::Unauthenticated(_) | Failure::Forbidden(_)) {
            let af = AuthFailure { connection_id: e.connection_id.clone(), entry_id: e.id, ticket_id: e.ticket_id.clone(), failure: failure.clone(), sent_with };
            let verdict = self.auth_hook.as_ref().map(|h| h(&af)).unwrap_or_default();
            self.emit(OutboxEvent::AuthFailure(af));
            if verdict == AuthVerdict::Resend {
                // After the entry's backoff, so that a policy that kept answering Resend could
                // never spin on the platform.
                let detail = format!(
                    "[auth] {}; resending after a backoff, with the refreshed credential (a suspended connection's work waits for its fix)",
                    failure.explain()
                );
                return self.settle_later(e, Settle::Retry { detail, not_before: self.backoff_at(e.attempts) }, rep).await;
            }
            if verdict == AuthVerdict::Wait {
                let detail = format!("[auth] {}; waiting for the connection's credentials or permissions to be fixed", failure.explain());
                let not_before = self.now() + crate::store::ms(self.config.auth_wait);
                return self.settle_later(e, Settle::Retry { detail, not_before }, rep).await;
            }
        }
        let result = json!({ "outcome": "failed", "failure": failure_json(&failure) });
        self.settle_final(e, Settle::Failed { why: failure.explain().to_string(), result: Some(result) }, rep).await
    }

    /// Work one ticket's claimed entries in order; stop at the first one not settled for good and
    /// hold the rest behind it.
    async fn process_group(&self, group: Vec<OutboxEntry>, priority: Priority) -> Result<PassReport, OutboxError> {
        let mut rep = PassReport::default();
        let mut rest = group.into_iter();
        while let Some(e) = rest.next() {
            let id = e.id;
            match self.process(e, priority, &mut rep).await? {
                Step::Final => continue,
                Step::Later(at) => {
                    for f in rest.by_ref() {
                        if self.hold(&f, id, at).await? {
                            rep.held += 1;
                        }
                    }
                }
                Step::LeaseLost => {
                    let ids: Vec<i64> = rest.by_ref().map(|f| f.id).collect();
                    self.store.unclaim_actions(&ids, &self.owner).await?;
                }
            }
        }
        Ok(rep)
    }
}

impl OutboxWorker {
    /// A worker for one connection.
    pub fn new(parts: WorkerParts) -> Self {
        let seed = parts.config.seed;
        Self {
            inner: Arc::new(Inner {
                store: parts.store,
                clock: parts.clock,
                driver: parts.driver,
                adapter: parts.adapter,
                target: RwLock::new(parts.target),
                gate: parts.gate,
                owner: parts.owner,
                config: parts.config,
                events: parts.events,
                auth_hook: parts.auth_hook,
                rng: Mutex::new(SplitMix64::seeded(seed)),
                on_pass: RwLock::new(None),
            }),
        }
    }

    /// Replace where and as whom requests go (a refreshed token, a moved account).
    pub fn set_target(&self, target: Target) {
        *self.inner.target.write().unwrap_or_else(|e| e.into_inner()) = target;
    }

    /// Call `f` with the report of every pass [`OutboxWorker::run`] makes that claimed work (the
    /// supervisor counts settled writes for the operator's metrics).
    pub fn on_pass(&self, f: PassHook) {
        *self.inner.on_pass.write().unwrap_or_else(|e| e.into_inner()) = Some(f);
    }

    /// The connection's budget gate.
    pub fn gate(&self) -> &BudgetGate {
        &self.inner.gate
    }

    /// One pass: claim due entries (leased for [`OutboxConfig::lease_for`]), work them to a
    /// settlement or a later due time, and report. Entries left `sent` or `ambiguous` by a dead
    /// worker are among the claimed ones and are read back before anything is resent.
    ///
    /// # Errors
    /// A store error; entries it interrupted keep their lease until it lapses and are then
    /// claimed again (and read back if they were marked sent).
    pub async fn run_once(&self) -> Result<PassReport, OutboxError> {
        let w = &self.inner;
        let now = w.now();
        let conn = w.connection_id();
        let claim = Claim {
            owner: w.owner.clone(),
            now,
            lease_for: w.config.lease_for,
            limit: w.config.batch,
            connection_id: Some(conn.clone()),
        };
        let claimed = w.store.claim_actions(&claim).await?;
        let mut report = PassReport { claimed: claimed.len(), ..Default::default() };
        let mut groups: BTreeMap<String, Vec<OutboxEntry>> = BTreeMap::new();
        for e in claimed {
            groups.entry(e.ticket_id.clone()).or_default().push(e);
        }
        let mut ready: Vec<(bool, Vec<OutboxEntry>)> = Vec::new();
        for (ticket, mut group) in groups {
            group.sort_by_key(|e| e.id);
            let q = ActionQuery {
                connection_id: Some(conn.clone()),
                ticket_id: Some(ticket),
                in_flight_only: true,
                after_id: 0,
                limit: 1,
            };
            let oldest = w.store.list_actions(&q).await?.into_iter().next();
            if let Some(h) = oldest.filter(|h| h.id < group[0].id) {
                // An older write to this ticket is still owed an outcome: wait behind it. If
                // another replica holds it under a live lease, it is working on it and settles it
                // within a send: look again after one poll interval, not a whole lease period
                // (with several replicas, one ticket's writes are often claimed by two of them).
                let lease = h
                    .lease
                    .as_ref()
                    .filter(|l| l.owner != w.owner)
                    .map_or(0, |l| l.until.min(now.saturating_add(crate::store::ms(w.config.poll_interval))));
                let until = h.not_before.max(lease).max(now);
                for e in &group {
                    if w.hold(e, h.id, until).await? {
                        report.held += 1;
                    }
                }
                continue;
            }
            let retry = w.marker(&group[0]).await? == Marker::RateLimited;
            ready.push((retry, group));
        }
        // Writes that met a 429 go first: they queue at write-retry priority before any new write
        // of this pass has asked for a permit.
        ready.sort_by_key(|(retry, g)| (!*retry, g[0].not_before, g[0].id));
        let slots = Arc::new(Semaphore::new(w.config.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        for (retry, group) in ready {
            let slot = slots.clone().acquire_owned().await.expect("never closed");
            let me = self.clone();
            let priority = if retry { Priority::WriteRetry } else { Priority::Write };
            tasks.spawn(async move {
                let _slot = slot;
                me.inner.process_group(group, priority).await
            });
        }
        let mut first_err = None;
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(Ok(rep)) => report.merge(&rep),
                Ok(Err(e)) => first_err = first_err.or(Some(e)),
                Err(join) => tracing::error!("outbox task panicked: {join}"),
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// When the connection's next in-flight entry is due (its `not_before`, or when a live lease
    /// on it lapses); `None` when nothing is owed.
    ///
    /// # Errors
    /// A store error.
    pub async fn next_due_at(&self) -> Result<Option<Millis>, OutboxError> {
        let conn = self.inner.connection_id();
        let mut after = 0;
        let mut best: Option<Millis> = None;
        loop {
            let q = ActionQuery { connection_id: Some(conn.clone()), ticket_id: None, in_flight_only: true, after_id: after, limit: 500 };
            let page = self.inner.store.list_actions(&q).await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            for e in &page {
                let at = e.not_before.max(e.lease.as_ref().map_or(0, |l| l.until));
                best = Some(best.map_or(at, |b: Millis| b.min(at)));
            }
        }
        Ok(best)
    }

    /// Work until `stop` turns true: passes back to back while there is work, otherwise one every
    /// [`OutboxConfig::poll_interval`]. Also drives the connection's budget gate on the tokio
    /// timer. Spawn one per live connection.
    pub async fn run(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let gate = self.inner.gate.clone();
        let sleeper = TokioSleeper::new(self.inner.clock.clone());
        let driver = tokio::spawn(async move { gate.drive(&sleeper).await });
        loop {
            if *stop.borrow() {
                break;
            }
            let started = std::time::Instant::now();
            let pass = self.run_once().await;
            if let Ok(rep) = &pass
                && rep.claimed > 0
            {
                tracing::debug!(owner = %self.inner.owner, claimed = rep.claimed, held = rep.held, confirmed = rep.confirmed,
                    took_ms = started.elapsed().as_millis() as u64, "outbox pass");
            }
            let busy = match pass {
                Ok(rep) if rep.claimed > 0 => {
                    let hook = self.inner.on_pass.read().unwrap_or_else(|e| e.into_inner()).clone();
                    if let Some(f) = hook {
                        f(&rep);
                    }
                    true
                }
                Ok(_) => false,
                Err(e) => {
                    tracing::warn!(owner = %self.inner.owner, "outbox pass failed: {e}");
                    false
                }
            };
            if busy {
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(self.inner.config.poll_interval) => {}
                _ = stop.changed() => {}
            }
        }
        driver.abort();
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::{Assignee, Resolution, TicketStatus};

    #[test]
    fn only_the_missing_parts_of_a_resolution_are_resent() {
        let r = Action::Resolve(Resolution {
            reply: "done".into(),
            status: TicketStatus::Solved,
            tags: vec!["bot".into()],
            assignee: Some(Assignee { agent_id: Some("7".into()), group_id: None }),
        });
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        // Nothing (or no reply) on the ticket: the whole resolution again.
        assert_eq!(remainder(&r, &[]), vec![r.clone()]);
        assert_eq!(remainder(&r, &s(&["set-status"])), vec![r.clone()]);
        // The reply landed: never post it again.
        assert_eq!(
            remainder(&r, &s(&["reply"])),
            vec![
                Action::SetStatus(TicketStatus::Solved),
                Action::AddTags(vec!["bot".into()]),
                Action::Assign(Assignee { agent_id: Some("7".into()), group_id: None }),
            ]
        );
        assert_eq!(remainder(&r, &s(&["reply", "set-status", "add-tags"])).len(), 1);
        assert!(remainder(&r, &s(&["reply", "set-status", "add-tags", "assign"])).is_empty());
        // Single-part actions are all or nothing.
        let reply = Action::Reply("x".into());
        assert_eq!(remainder(&reply, &[]), vec![reply.clone()]);
        assert_eq!(parts_of(&r), s(&["reply", "set-status", "add-tags", "assign"]));
    }
}
