//! Optional push of inbox events to the app's own webhook, for apps that would rather be called
//! than poll.
//!
//! Push is pull done by the gateway: [`Pusher::push_once`] pulls the next batch of unacknowledged
//! events (the same cursor order the app would see, so per-ticket order holds), POSTs it as
//! `{"events": [...]}` and acknowledges the batch only after a 2xx. Anything else (a non-2xx, a
//! timeout, a refused connection) leaves the events unacknowledged and says when to try again:
//! exponential backoff with full jitter ([`Backoff`]), so a struggling app is not hammered. The
//! delivery is at least once (an app that took the batch but whose 2xx was lost gets it again);
//! each event carries its stable inbox `id` and `dedupe_key` so the app can drop repeats.
//!
//! With a secret (required by `deskgate.toml`'s `[push]`), every POST is signed: see
//! [`SIGNATURE_HEADER`].
//!
//! The pusher does not sleep: the caller schedules the next call at [`PushOutcome::Retry::at`]
//! (or at once after a delivered batch), on its [`Clock`](crate::clock::Clock).

use std::time::Duration;

use serde_json::{Value, json};

use crate::budget::{Backoff, SplitMix64};
use crate::clock::{Millis, SharedClock};
use crate::store::{InboxEvent, Pull, SharedStore, StoreError};

/// Where and how to push.
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// The app's endpoint (`https://app.example.com/deskgate/events`).
    pub url: String,
    /// Only this connection's events (or all).
    pub connection_id: Option<String>,
    /// Events per POST.
    pub batch: u32,
    /// Backoff between failed attempts.
    pub backoff: Backoff,
    /// Time the app has to answer.
    pub timeout: Duration,
    /// Signs every POST ([`sign`]) so the app can tell deskgate's pushes from forgeries; the
    /// configuration requires one, tests may go without.
    pub secret: Option<Vec<u8>>,
}

/// Header with the signing time, milliseconds since the Unix epoch.
pub const TIMESTAMP_HEADER: &str = "x-deskgate-timestamp";
/// Header with the signature: `v1=` and the hex HMAC-SHA256, under the push secret, of the
/// timestamp, a `.`, and the exact body bytes. The app recomputes it, compares in constant time and
/// refuses timestamps older than a few minutes (replays).
pub const SIGNATURE_HEADER: &str = "x-deskgate-signature";

/// The [`SIGNATURE_HEADER`] value for `body` signed at `timestamp_ms` with `secret`.
pub fn sign(secret: &[u8], timestamp_ms: Millis, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(timestamp_ms.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

impl PushConfig {
    /// Push every connection's events to `url`, 100 per POST, backoff 1 s doubling to 5 min,
    /// 10 s to answer.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            connection_id: None,
            batch: 100,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
            timeout: Duration::from_secs(10),
            secret: None,
        }
    }
}

/// What one [`Pusher::push_once`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// Nothing was waiting.
    Idle,
    /// The app took this many events; they are acknowledged.
    Delivered(usize),
    /// The app did not take the batch; try again at `at`.
    Retry {
        /// When to try again.
        at: Millis,
        /// Consecutive failures so far.
        attempt: u32,
        /// What went wrong.
        error: String,
    },
}

/// Pushes inbox events to the app: see the module docs.
#[derive(Debug)]
pub struct Pusher {
    store: SharedStore,
    client: reqwest::Client,
    clock: SharedClock,
    config: PushConfig,
    rng: SplitMix64,
    failures: u32,
}

/// An inbox event as the app receives it (pushed, and as the pull API should render it).
pub fn event_json(e: &InboxEvent) -> Value {
    json!({
        "id": e.id,
        "connection_id": e.connection_id,
        "platform": e.platform,
        "ticket_id": e.ticket_id,
        "kind": e.kind,
        "ticket": e.ticket,
        "dedupe_key": e.dedupe_key,
        "created_at": e.created_at,
    })
}

impl Pusher {
    /// A pusher over `store`, jitter seeded with `seed`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(store: SharedStore, clock: SharedClock, config: PushConfig, seed: u64) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("deskgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { store, client, clock, config, rng: SplitMix64::seeded(seed), failures: 0 })
    }

    /// Push the next batch once.
    ///
    /// # Errors
    /// The store's error (the app's failures are [`PushOutcome::Retry`]).
    pub async fn push_once(&mut self) -> Result<PushOutcome, StoreError> {
        let now = self.clock.now_ms();
        let pull = Pull { after: 0, limit: self.config.batch, connection_id: self.config.connection_id.clone(), now };
        let events = self.store.pull_events(&pull).await?;
        if events.is_empty() {
            return Ok(PushOutcome::Idle);
        }
        let body = serde_json::to_vec(&json!({ "events": events.iter().map(event_json).collect::<Vec<_>>() }))
            .expect("JSON values always serialize");
        let mut request = self.client.post(&self.config.url).header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(secret) = &self.config.secret {
            request = request.header(TIMESTAMP_HEADER, now.to_string()).header(SIGNATURE_HEADER, sign(secret, now, &body));
        }
        let sent = request.body(body).send().await;
        let error = match sent {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("the app answered {}", r.status())),
            Err(e) => Some(format!("the app could not be reached: {e}")),
        };
        match error {
            None => {
                self.failures = 0;
                let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
                self.store.ack_events(&ids, self.clock.now_ms()).await?;
                Ok(PushOutcome::Delivered(events.len()))
            }
            Some(error) => {
                self.failures += 1;
                let at = self.config.backoff.retry_at(self.failures - 1, self.clock.now_ms(), &mut self.rng);
                tracing::warn!(url = %self.config.url, attempt = self.failures, retry_at = at, "push failed: {error}");
                Ok(PushOutcome::Retry { at, attempt: self.failures, error })
            }
        }
    }
}
