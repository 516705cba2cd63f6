//! Tickets in: verified webhooks, reconciliation sweeps, and the inbox writer both feed.
//!
//! # Why webhooks *and* sweeps
//!
//! Webhooks are fast but not reliable: platforms drop them under load, give up after a few
//! retries, deliver them twice and out of order, and an endpoint that was down for ten minutes
//! misses ten minutes. Polling alone is reliable but slow and spends the read budget the app's
//! own reads need. So webhooks are primary and a reconciliation sweep per connection, every 5-10
//! minutes (jittered, so connections do not sweep in lockstep), lists what changed through the
//! read lane and enqueues whatever the webhooks missed, and says how much that was: a connection
//! whose sweeps keep catching changes has a broken webhook, and someone should hear about it
//! ([`sweep::Reconciler`] raises a `webhooks-missed` alert).
//!
//! # Why a ticket change is keyed by its version, not by the platform's event id
//!
//! The two paths must agree on what "already seen" means, and the sweep only sees tickets. Every
//! stored event is therefore keyed `ticket:{id}@{updated_at}` (see
//! [`deskgate_ingest_core::dedupe_key`]): the sweep's copy of a change the webhook delivered is a
//! duplicate, and so is a redelivered or duplicated webhook, whatever its event id. Zendesk sends
//! one webhook per changed field of one update; they describe one version and become one event.
//! The app gets one event per ticket version, with the stable inbox id as its event id.
//!
//! Known limit: platforms that stamp `updated_at` in whole seconds (Zendesk) make two updates
//! within one second the same version; the app gets the first snapshot, and the next change to
//! the ticket (or its own read) brings it up to date.
//!
//! # Why stale versions are dropped
//!
//! Deliveries arrive out of order, and a sweep can list a ticket just before a webhook brings a
//! newer version. The app must never see a ticket go backwards, so [`Inbox`] remembers the newest
//! version stored per ticket and drops an older one as *stale* (it is counted, not an error: the
//! app already has something newer). Within a connection, inserts are serialized so the check and
//! the insert are one step. The memory is per process and bounded: past 100,000 tickets, versions
//! older than an hour are forgotten (reordering is a matter of seconds to minutes). After a
//! restart, a reordered delivery older than one stored before the restart is not recognized until
//! the store can answer "newest version of this ticket" itself (a store change requested in issue
//! #6's report).
//!
//! # Layout
//!
//! - [`webhook`]: `POST /webhooks/{connection}`: size limit, adapter parse, signature and replay
//!   check (through [`deskgate_ingest_core`], the code the Spin edge shares), dedupe, durable
//!   insert, then 2xx. Refusals are 4xx with a code and a reason, a log line and a metric.
//! - [`sweep`]: the [`sweep::Reconciler`] (one sweep of one connection) and the jittered
//!   [`sweep::SweepSchedule`].
//! - [`push`]: the optional push of inbox events to the app's webhook, acknowledged on 2xx, with
//!   backoff.
//! - here: [`Inbox`] (the deduplicating, order-keeping writer both use) and [`IngestMetrics`].
//!
//! Delivery to the app: the API server's pull endpoint reads what [`Inbox`] wrote through
//! [`crate::store::Store::pull_events`] (cursor, ack) and long-polls with [`Inbox::pull_wait`];
//! [`push::Pusher`] calls the app instead, for apps that want it.

pub mod push;
pub mod sweep;
pub mod webhook;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;
use serde_json::{Value, json};

use crate::bindings::{Ticket, TicketEvent};
use crate::clock::Millis;
use crate::store::{InsertReport, NewEvent, SharedStore, StoreError};

pub use deskgate_ingest_core::{Algorithm, MAX_WEBHOOK_BYTES, Reject, dedupe_key};

/// What storing a batch of events did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct IngestReport {
    /// Events stored for the app.
    pub new: u64,
    /// Events already stored (same ticket version), skipped.
    pub duplicates: u64,
    /// Events older than a version already stored for their ticket, skipped.
    pub stale: u64,
}

impl IngestReport {
    fn add(&mut self, other: IngestReport) {
        self.new += other.new;
        self.duplicates += other.duplicates;
        self.stale += other.stale;
    }
}

/// One event to store, with the version that orders it within its ticket.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The event as the store takes it.
    pub event: NewEvent,
    /// The ticket version (update time, ms) it describes.
    pub version: Millis,
}

impl Candidate {
    /// A webhook event: kind `ticket.{kind}`, the ticket snapshot when the payload carried one
    /// (else `{"id", "updated_at"}`), versioned by the snapshot's `updated_at` or else by when
    /// the event happened.
    pub fn from_webhook(connection_id: &str, platform: &str, event: &TicketEvent) -> Self {
        let version = event.ticket.as_ref().map_or(event.occurred_at, |t| t.updated_at);
        let ticket = match &event.ticket {
            Some(t) => ticket_json(t),
            None => json!({ "id": event.ticket_id, "updated_at": event.occurred_at }),
        };
        Self {
            event: NewEvent {
                connection_id: connection_id.to_owned(),
                platform: platform.to_owned(),
                ticket_id: event.ticket_id.clone(),
                kind: format!("ticket.{}", event.kind),
                ticket,
                dedupe_key: dedupe_key(&event.ticket_id, version),
            },
            version,
        }
    }

    /// A ticket listed by a sweep: kind `ticket.reconciled` (what changed is unknown, only the
    /// resulting state), versioned by its `updated_at`.
    pub fn from_sweep(connection_id: &str, platform: &str, ticket: &Ticket) -> Self {
        Self {
            event: NewEvent {
                connection_id: connection_id.to_owned(),
                platform: platform.to_owned(),
                ticket_id: ticket.id.clone(),
                kind: "ticket.reconciled".to_owned(),
                ticket: ticket_json(ticket),
                dedupe_key: dedupe_key(&ticket.id, ticket.updated_at),
            },
            version: ticket.updated_at,
        }
    }
}

/// The tag every adapter puts on the ticket its scope probe creates (and deletes).
pub const PROBE_TAG: &str = "deskgate-probe";

/// Whether a ticket snapshot is a scope-probe ticket ([`PROBE_TAG`]).
pub fn is_probe_ticket(ticket: &Value) -> bool {
    ticket["tags"].as_array().is_some_and(|tags| tags.iter().any(|t| t.as_str() == Some(PROBE_TAG)))
}

fn ticket_json(t: &Ticket) -> Value {
    serde_json::to_value(t).unwrap_or_else(|_| json!({ "id": t.id, "updated_at": t.updated_at }))
}

/// Past this many remembered tickets, [`Inbox`] forgets versions older than
/// [`NEWEST_RETENTION_MS`] before now.
const NEWEST_CAP: usize = 100_000;
/// See [`NEWEST_CAP`].
const NEWEST_RETENTION_MS: Millis = 3_600_000;

/// How many locks [`Inbox`] spreads tickets over: enough that deliveries about different
/// tickets rarely wait for each other, few enough to take no memory to speak of.
const TICKET_STRIPES: usize = 1024;

/// The [`Inbox`] stripe of a connection's ticket.
fn stripe(connection_id: &str, ticket_id: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (connection_id, ticket_id).hash(&mut h);
    (h.finish() % TICKET_STRIPES as u64) as usize
}

/// The deduplicating, order-keeping writer of the inbox; shared by webhooks and sweeps.
#[derive(Debug)]
pub struct Inbox {
    store: SharedStore,
    /// Newest version stored per (connection, ticket), as far as this process knows.
    newest: Mutex<HashMap<(String, String), Millis>>,
    /// One insert at a time per ticket, so the stale check and the insert are one step: a ticket's
    /// `(connection, ticket id)` hashes to one of these stripes. Inserts about other tickets run
    /// at the same time and share the store's commit (and its fsync); one lock per connection
    /// made every delivery to a connection wait for the previous one's commit.
    stripes: Box<[tokio::sync::Mutex<()>]>,
    /// Events stored so far by this process: long-polls wait for it to move.
    stored: tokio::sync::watch::Sender<u64>,
    /// Tickets seen carrying [`PROBE_TAG`], per connection: later events about them (the probe's
    /// deletion, which carries no snapshot and so no tag) are the probe's too.
    probes: Mutex<HashMap<String, std::collections::HashSet<String>>>,
}

impl Inbox {
    /// A writer over `store`.
    pub fn new(store: SharedStore) -> Self {
        let (stored, _) = tokio::sync::watch::channel(0);
        let stripes = (0..TICKET_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect();
        Self { store, newest: Mutex::new(HashMap::new()), stripes, stored, probes: Mutex::default() }
    }

    /// The store.
    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// Store one connection's events durably: drop those older than a version already stored for
    /// their ticket (stale), skip those whose version is stored (duplicates), store the rest in
    /// order. Returns once the store has committed.
    ///
    /// # Errors
    /// The store's error; nothing of the batch is stored then (one transaction).
    pub async fn insert(
        &self,
        connection_id: &str,
        candidates: &[Candidate],
        now: Millis,
    ) -> Result<IngestReport, StoreError> {
        if candidates.is_empty() {
            return Ok(IngestReport::default());
        }
        // The stripes of the batch's tickets, taken in ascending order so that two batches
        // sharing stripes cannot each hold one the other waits for.
        let mut stripes: Vec<usize> = candidates.iter().map(|c| stripe(connection_id, &c.event.ticket_id)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut held = Vec::with_capacity(stripes.len()); // released when the insert returns
        for i in stripes {
            held.push(self.stripes[i].lock().await);
        }
        let mut keep: Vec<NewEvent> = Vec::with_capacity(candidates.len());
        let mut seen: HashMap<&str, Millis> = HashMap::new();
        let mut stale = 0;
        {
            let newest = self.newest.lock().unwrap_or_else(|e| e.into_inner());
            let mut probes = self.probes.lock().unwrap_or_else(|e| e.into_inner());
            for c in candidates {
                if is_probe_ticket(&c.event.ticket) {
                    // deskgate's own scope-probe ticket (created and deleted by the probe): not
                    // a customer's, nothing for the app to do. A probe makes one per run.
                    let seen = probes.entry(connection_id.to_owned()).or_default();
                    if seen.len() < NEWEST_CAP {
                        seen.insert(c.event.ticket_id.clone());
                    }
                    continue;
                }
                if probes.get(connection_id).is_some_and(|s| s.contains(&c.event.ticket_id)) {
                    continue;
                }
                let ticket = c.event.ticket_id.as_str();
                let known = seen
                    .get(ticket)
                    .copied()
                    .or_else(|| newest.get(&(connection_id.to_owned(), ticket.to_owned())).copied());
                if known.is_some_and(|v| c.version < v) {
                    stale += 1;
                    continue;
                }
                seen.insert(ticket, known.map_or(c.version, |v| v.max(c.version)));
                keep.push(c.event.clone());
            }
        }
        let InsertReport { new, duplicates } = self.store.insert_events(&keep, now).await?;
        let mut newest = self.newest.lock().unwrap_or_else(|e| e.into_inner());
        for (ticket, version) in seen {
            let v = newest.entry((connection_id.to_owned(), ticket.to_owned())).or_insert(version);
            *v = (*v).max(version);
        }
        if newest.len() > NEWEST_CAP {
            // Reordering happens within seconds to minutes; a version an hour older than now
            // protects nothing any more. Forgetting it costs only what a restart costs.
            newest.retain(|_, v| *v >= now - NEWEST_RETENTION_MS);
        }
        drop(newest);
        if new > 0 {
            self.stored.send_modify(|n| *n += new);
        }
        Ok(IngestReport { new, duplicates, stale })
    }

    /// The app's long-poll: [`Store::pull_events`](crate::store::Store::pull_events), and when
    /// nothing is there, wait until this process stores something (or `wait` passes) and pull
    /// once more. `pull.now` is used as given for both pulls. Events stored by another replica
    /// do not wake the wait; they are found when it times out and the app polls again.
    ///
    /// # Errors
    /// The store's error.
    pub async fn pull_wait(
        &self,
        pull: &crate::store::Pull,
        wait: std::time::Duration,
    ) -> Result<Vec<crate::store::InboxEvent>, StoreError> {
        // Subscribe before the first pull, so an insert between the two is not missed.
        let mut stored = self.stored.subscribe();
        let events = self.store.pull_events(pull).await?;
        if !events.is_empty() || wait.is_zero() {
            return Ok(events);
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, stored.changed()).await {
                Ok(Ok(())) => {
                    let events = self.store.pull_events(pull).await?;
                    if !events.is_empty() {
                        return Ok(events);
                    }
                }
                _ => return Ok(Vec::new()),
            }
        }
    }
}

/// Counters for ingestion, for metrics. Cheap to share.
#[derive(Debug, Default)]
pub struct IngestMetrics {
    /// Webhook deliveries accepted (answered 2xx).
    pub webhooks_accepted: AtomicU64,
    /// Webhook deliveries refused, by [`Reject::index`].
    pub webhooks_rejected: [AtomicU64; Reject::CODES.len()],
    /// Webhook deliveries answered 5xx (store or adapter failure; the platform retries).
    pub webhooks_failed: AtomicU64,
    /// Events stored by webhooks.
    pub webhook_events_new: AtomicU64,
    /// Webhook events already stored.
    pub webhook_events_duplicate: AtomicU64,
    /// Webhook events older than a stored version.
    pub webhook_events_stale: AtomicU64,
    /// Sweeps finished.
    pub sweeps: AtomicU64,
    /// Sweeps that failed.
    pub sweeps_failed: AtomicU64,
    /// Pages listed by sweeps.
    pub sweep_pages: AtomicU64,
    /// Tickets listed by sweeps.
    pub sweep_seen: AtomicU64,
    /// Changes sweeps caught that webhooks had missed.
    pub sweep_caught: AtomicU64,
}

impl IngestMetrics {
    /// Refusals with this [`Reject::code`] so far.
    pub fn rejected(&self, code: &str) -> u64 {
        Reject::CODES
            .iter()
            .position(|c| *c == code)
            .map_or(0, |i| self.webhooks_rejected[i].load(Ordering::Relaxed))
    }

    /// Every counter by name (`webhooks_rejected{code}` as `webhooks_rejected.{code}`).
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = vec![
            ("webhooks_accepted".to_owned(), get(&self.webhooks_accepted)),
            ("webhooks_failed".to_owned(), get(&self.webhooks_failed)),
            ("webhook_events_new".to_owned(), get(&self.webhook_events_new)),
            ("webhook_events_duplicate".to_owned(), get(&self.webhook_events_duplicate)),
            ("webhook_events_stale".to_owned(), get(&self.webhook_events_stale)),
            ("sweeps".to_owned(), get(&self.sweeps)),
            ("sweeps_failed".to_owned(), get(&self.sweeps_failed)),
            ("sweep_pages".to_owned(), get(&self.sweep_pages)),
            ("sweep_seen".to_owned(), get(&self.sweep_seen)),
            ("sweep_caught".to_owned(), get(&self.sweep_caught)),
        ];
        for (i, code) in Reject::CODES.iter().enumerate() {
            out.push((format!("webhooks_rejected.{code}"), get(&self.webhooks_rejected[i])));
        }
        out
    }
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}
