//! The outbox: the app's actions, made durable, sent once, and accounted for.
//!
//! # Why an outbox, and not "send it now and retry on error"?
//!
//! A reply that a customer sees twice, or a ticket left open after the reply said "solved", is
//! worse than a reply that arrives a minute late. A direct send cannot promise either: the
//! process can die between accepting the action and sending it, a 429 can arrive mid-batch, and a
//! timeout after the request left says nothing about whether the platform applied it. So an
//! action takes three steps, each durable before the next:
//!
//! 1. **Accepted** ([`Outbox::submit`]): the action is in the store ([`Store::enqueue`](crate::store::Store::enqueue) returned)
//!    before the app hears "accepted". A second submit of the same content within the dedupe
//!    window (60 s by default) returns the first one's record, with its result once it has one,
//!    and sends nothing.
//! 2. **Sent** ([`OutboxWorker`]): the worker claims due entries with a lease, waits for a write
//!    permit from the connection's [`BudgetGate`](crate::budget::BudgetGate), and records `sent` ([`Store::mark_sent`](crate::store::Store::mark_sent))
//!    *before* the request leaves, so a crash always leaves evidence.
//! 3. **Settled**: confirmed with the receipt, failed with why, or diverged with an alert, each in
//!    one transaction with its write-log record.
//!
//! # Exactly once, without the platform's help
//!
//! Freshdesk honours no idempotency key at all and Zendesk none on updates. The key
//! ([`idempotency_key`]) goes in the platform's header where the adapter's request names one, but
//! exactly-once rests on the host: an attempt whose outcome is unknown (a timeout or reset after
//! the request left, a 5xx, a crash between `sent` and the answer) is **read back through the
//! adapter** ([`Operation::ReadBack`](crate::bindings::Operation::ReadBack), read lane) before anything is sent again. Landed: confirmed
//! ("confirmed by read-back"). Not landed: sent again. Partly landed (a resolution whose reply is
//! on the ticket but whose status is not): only the missing parts are sent. A read-back waits
//! [`OutboxConfig::readback_delay`] after the ambiguity, so a write the platform is still
//! processing is not taken for one that never arrived.
//!
//! # What counts as failure
//!
//! - A 429 is back-pressure, not failure: the budget is penalized until `Retry-After`, the entry
//!   goes back to the store with that `not_before` and comes back at [`Priority::WriteRetry`](crate::budget::Priority::WriteRetry),
//!   ahead of new writes. Per-ticket order is kept: an entry never overtakes an older in-flight
//!   entry of the same ticket (it is held behind it, `[held]` in the write log).
//! - Transient errors and requests that never left are retried with exponential backoff and full
//!   jitter ([`Backoff`]), up to [`OutboxConfig::max_attempts`].
//! - A 401 or 403 is settled as failed with the platform's reason (the missing permission and how
//!   to grant it). Credentials and suspension are another policy's business (issue #5): the
//!   [`AuthHook`] is told first and may instead keep the action waiting.
//! - A resolution that landed in part (reply posted, status forbidden) is a **divergence**: the
//!   entry is `diverged`, an alert names the part, the missing permission and the remedy, and the
//!   app's result says exactly what is on the ticket. Never silent.
//!
//! # Layout
//!
//! - [`idempotency`]: the content key and its canonical, versioned encoding.
//! - `worker.rs`: [`OutboxWorker`], one per connection: claim, budget, send, read back, settle.
//! - this file: [`Outbox`] (submit, status), [`ActionRecord`], [`OutboxConfig`], events.

pub mod idempotency;
mod worker;

pub use idempotency::{action_kind, idempotency_key, status_name};
pub use worker::{AuthFailure, AuthHook, AuthVerdict, EventSink, OutboxEvent, OutboxWorker, PassHook, PassReport, WorkerParts, credential_fingerprint};

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::bindings::Action;
use crate::budget::Backoff;
use crate::clock::{Millis, SharedClock};
use crate::store::{Enqueued, NewAction, OutboxEntry, OutboxState, SharedStore, StoreError, WriteLogRecord};


/// Outbox settings. Build from [`OutboxConfig::default`] and change fields.
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    /// A resubmit of an action confirmed (or diverged) this recently returns the original.
    pub dedupe_window: Duration,
    /// How long a claim lasts; longer than a send (budget wait included) can take.
    pub lease_for: Duration,
    /// Entries claimed per pass.
    pub batch: u32,
    /// Tickets worked on at once per connection (one ticket's entries always go one by one).
    pub concurrency: usize,
    /// Delay before the read-back of an ambiguous attempt.
    pub readback_delay: Duration,
    /// Backoff for transient errors and requests that never left.
    pub backoff: Backoff,
    /// Attempts (sends) after which a transient failure becomes final.
    pub max_attempts: i64,
    /// How long a [`AuthVerdict::Wait`] keeps an action waiting before it is tried again.
    pub auth_wait: Duration,
    /// How often [`OutboxWorker::run`] looks for due work when idle.
    pub poll_interval: Duration,
    /// Seed of the backoff jitter (reproducible tests).
    pub seed: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            dedupe_window: Duration::from_secs(60),
            lease_for: Duration::from_secs(300),
            batch: 64,
            concurrency: 8,
            readback_delay: Duration::from_secs(5),
            backoff: Backoff::default(),
            max_attempts: 8,
            auth_wait: Duration::from_secs(300),
            poll_interval: Duration::from_millis(250),
            seed: 0x6465_736b_6761_7465,
        }
    }
}

/// Why the outbox could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored action could not be decoded (a hand-edited database, or a bug).
    #[error("outbox entry {id}: stored action is not a valid action: {reason}")]
    CorruptAction {
        /// The entry.
        id: i64,
        /// The decoder's complaint.
        reason: String,
    },
}

/// An action as the app sees it: what, where, how far it got, and its result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionRecord {
    /// The outbox entry's id (the app's handle).
    pub id: i64,
    /// The connection.
    pub connection_id: String,
    /// The ticket.
    pub ticket_id: String,
    /// The action.
    pub action: Action,
    /// The content idempotency key.
    pub idempotency_key: String,
    /// The app's own Idempotency-Key, if it sent one.
    pub app_key: Option<String>,
    /// `pending`, `sent`, `ambiguous`, `confirmed`, `failed` or `diverged`.
    pub state: String,
    /// Why it failed, or what diverged.
    pub detail: Option<String>,
    /// Sends so far.
    pub attempts: i64,
    /// The result (receipt, failure or divergence), once settled.
    pub result: Option<Value>,
    /// True when this submit found an existing entry and created nothing.
    pub duplicate: bool,
    /// When accepted.
    pub created_at: Millis,
    /// When last changed.
    pub updated_at: Millis,
}

impl ActionRecord {
    /// The record of a stored entry.
    ///
    /// # Errors
    /// [`OutboxError::CorruptAction`] when the stored action does not decode.
    pub fn from_entry(e: &OutboxEntry, duplicate: bool) -> Result<Self, OutboxError> {
        let action = decode_action(e)?;
        let detail = match &e.state {
            OutboxState::Failed { why } => Some(why.clone()),
            OutboxState::Diverged { detail } => Some(detail.clone()),
            _ => None,
        };
        Ok(Self {
            id: e.id,
            connection_id: e.connection_id.clone(),
            ticket_id: e.ticket_id.clone(),
            action,
            idempotency_key: e.idempotency_key.clone(),
            app_key: e.app_key.clone(),
            state: e.state.name().to_string(),
            detail,
            attempts: e.attempts,
            result: e.result.clone(),
            duplicate,
            created_at: e.created_at,
            updated_at: e.updated_at,
        })
    }

    /// Whether it is settled (confirmed, failed or diverged).
    pub fn is_settled(&self) -> bool {
        matches!(self.state.as_str(), "confirmed" | "failed" | "diverged")
    }
}

pub(crate) fn decode_action(e: &OutboxEntry) -> Result<Action, OutboxError> {
    serde_json::from_value(e.action.clone()).map_err(|err| OutboxError::CorruptAction { id: e.id, reason: err.to_string() })
}

/// The app-facing side of the outbox: accept actions durably, report their status. Cheap to
/// clone; share one per gateway.
///
/// ```no_run
/// # async fn demo(store: deskgate::store::SharedStore) -> Result<(), deskgate::outbox::OutboxError> {
/// use deskgate::bindings::Action;
/// use deskgate::clock::SystemClock;
/// use deskgate::outbox::{Outbox, OutboxConfig};
/// use std::sync::Arc;
/// let outbox = Outbox::new(store, Arc::new(SystemClock), OutboxConfig::default());
/// let rec = outbox.submit("acme-zd", "42", &Action::Reply("Fixed.".into()), None).await?;
/// println!("accepted as {} ({})", rec.id, rec.state);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Outbox {
    store: SharedStore,
    clock: SharedClock,
    config: OutboxConfig,
}

impl Outbox {
    /// An outbox over `store`.
    pub fn new(store: SharedStore, clock: SharedClock, config: OutboxConfig) -> Self {
        Self { store, clock, config }
    }

    /// The settings.
    pub fn config(&self) -> &OutboxConfig {
        &self.config
    }

    /// Accept an action: compute its key and enqueue it durably. Returns only once the entry is
    /// durable, so the caller may acknowledge it. A duplicate (same content in flight, or settled
    /// within the dedupe window, or the same `app_key` for the same action) returns the existing
    /// record with `duplicate: true`, and nothing new will be sent.
    ///
    /// # Errors
    /// [`StoreError::ConnectionNotFound`], [`StoreError::IdempotencyKeyReused`] (the app's key was
    /// used for another action), or a database error; in every error case nothing was accepted.
    pub async fn submit(
        &self,
        connection_id: &str,
        ticket_id: &str,
        action: &Action,
        app_key: Option<&str>,
    ) -> Result<ActionRecord, OutboxError> {
        let now = self.clock.now_ms();
        let new = NewAction {
            connection_id: connection_id.to_string(),
            ticket_id: ticket_id.to_string(),
            action: serde_json::to_value(action).expect("actions serialize"),
            idempotency_key: idempotency_key(connection_id, ticket_id, action),
            app_key: app_key.map(str::to_string),
            not_before: now,
        };
        let done = self.store.enqueue(&new, now, self.config.dedupe_window).await?;
        match done {
            Enqueued::Created(e) => ActionRecord::from_entry(&e, false),
            Enqueued::Existing(e) => ActionRecord::from_entry(&e, true),
        }
    }

    /// An action's current record.
    ///
    /// # Errors
    /// A database error, or an undecodable stored action.
    pub async fn get(&self, id: i64) -> Result<Option<ActionRecord>, OutboxError> {
        match self.store.get_action(id).await? {
            Some(e) => Ok(Some(ActionRecord::from_entry(&e, false)?)),
            None => Ok(None),
        }
    }

    /// An action's write log (every attempt and how it ended), oldest first.
    ///
    /// # Errors
    /// A database error.
    pub async fn write_log(&self, id: i64) -> Result<Vec<WriteLogRecord>, OutboxError> {
        Ok(self.store.write_log(id).await?)
    }
}
