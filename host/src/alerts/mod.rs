//! Alerts: what goes to people, and how it gets there.
//!
//! # Why a stored alert and a webhook, and not just a log line?
//!
//! The failures this gateway exists to prevent (a token that died at 2 am, a scope someone
//! removed, a reply that landed while its status change did not) need a person to act. A log line
//! is read by nobody at 2 am. So an alert is first **stored** ([`raise`]: durable, listed by
//! [`Store::list_alerts`](crate::store::Store::list_alerts), logged at error level and counted),
//! and then **delivered** ([`AlertDeliverer`]) to the connection's admin contact as an HTTP POST
//! with a JSON body that also carries a human-readable `text` field, which is what Slack and Teams
//! incoming webhooks display. Delivery is retried with exponential backoff until the receiver
//! answers 2xx; a receiver that is down for an hour gets every alert once it is back.
//!
//! Kinds are plain strings so new policies can add theirs; the ones the host raises are the
//! constants below.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::clock::{Millis, SharedClock};
use crate::store::{Alert, AlertDelivery, NewAlert, SharedStore, StoreError};

/// An OAuth refresh was refused for good (or time ran out): re-authenticate.
pub const REFRESH_FAILED: &str = "refresh-failed";
/// The stored credential is no longer accepted: re-authenticate.
pub const CREDENTIAL_INVALID: &str = "credential-invalid";
/// A permission is missing: re-scope (never re-authenticate).
pub const SCOPE_MISSING: &str = "scope-missing";
/// A write landed in part.
pub const DIVERGENCE: &str = "divergence";
/// A write failed for good: nothing retries it, so a person must act on the ticket.
pub const WRITE_FAILED: &str = "write-failed";
/// The reconciliation sweep found tickets the webhooks missed.
pub const WEBHOOKS_MISSED: &str = "webhooks-missed";
/// The platform keeps answering 429.
pub const SUSTAINED_RATE_LIMITING: &str = "sustained-rate-limiting";

static RAISED: AtomicU64 = AtomicU64::new(0);
static RAISED_BY_KIND: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

/// How many alerts [`raise`] has raised in this process (a metric).
pub fn raised_total() -> u64 {
    RAISED.load(Ordering::Relaxed)
}

/// How many alerts of `kind` [`raise`] has raised in this process.
pub fn raised_of(kind: &str) -> u64 {
    RAISED_BY_KIND.lock().unwrap_or_else(|e| e.into_inner()).get(kind).copied().unwrap_or(0)
}

/// Store an alert (due for delivery at once), log it at error level and count it.
///
/// # Errors
/// The store's.
pub async fn raise(
    store: &SharedStore,
    now: Millis,
    connection_id: Option<&str>,
    kind: &str,
    text: String,
    detail: Value,
) -> Result<Alert, StoreError> {
    let alert = store
        .raise_alert(&NewAlert { connection_id: connection_id.map(str::to_string), kind: kind.to_string(), text, detail }, now)
        .await?;
    RAISED.fetch_add(1, Ordering::Relaxed);
    *RAISED_BY_KIND.lock().unwrap_or_else(|e| e.into_inner()).entry(alert.kind.clone()).or_default() += 1;
    tracing::error!(alert = alert.id, kind = %alert.kind, connection = ?alert.connection_id, "{}", alert.text);
    Ok(alert)
}

/// The JSON body posted for an alert: `{kind, connection, text, detail, created_at}`.
pub fn payload(alert: &Alert) -> Value {
    json!({
        "id": alert.id,
        "kind": alert.kind,
        "connection": alert.connection_id,
        "text": alert.text,
        "detail": alert.detail,
        "created_at": alert.created_at,
    })
}

/// Delivery settings.
#[derive(Debug, Clone)]
pub struct AlertConfig {
    /// Delay before the first retry; doubles per attempt.
    pub retry_base: Duration,
    /// No retry delay exceeds this.
    pub retry_cap: Duration,
    /// Alerts delivered per pass.
    pub batch: u32,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Where alerts of connections without a contact (and gateway-wide ones) go, if anywhere.
    pub fallback_url: Option<String>,
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self {
            retry_base: Duration::from_secs(10),
            retry_cap: Duration::from_secs(3600),
            batch: 64,
            timeout: Duration::from_secs(10),
            fallback_url: None,
        }
    }
}

/// What one delivery pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Delivered (2xx).
    pub delivered: usize,
    /// Failed; retried later.
    pub failed: usize,
}

/// Posts due alerts to admin contacts, retrying until delivered.
#[derive(Debug, Clone)]
pub struct AlertDeliverer {
    store: SharedStore,
    clock: SharedClock,
    client: reqwest::Client,
    config: AlertConfig,
}

impl AlertDeliverer {
    /// A deliverer over `store`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(store: SharedStore, clock: SharedClock, config: AlertConfig) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder().timeout(config.timeout).build()?;
        Ok(Self { store, clock, client, config })
    }

    /// The delay before retry `attempt` (1-based): base doubling, capped.
    pub fn retry_delay(&self, attempt: i64) -> Duration {
        let shift = u32::try_from(attempt.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
        self.config.retry_base.saturating_mul(1u32 << shift).min(self.config.retry_cap)
    }

    /// One pass: post every due alert once; record each attempt.
    ///
    /// # Errors
    /// The store's (an alert whose post failed is recorded, not an error).
    pub async fn deliver_due(&self) -> Result<DeliveryReport, StoreError> {
        let now = self.clock.now_ms();
        let mut rep = DeliveryReport::default();
        for alert in self.store.alerts_due(now, self.config.batch).await? {
            let url = match &alert.connection_id {
                Some(c) => self.store.get_connection(c).await?.and_then(|c| c.admin_contact_url),
                None => None,
            }
            .or_else(|| self.config.fallback_url.clone());
            let result = match url {
                None => Err("no admin contact URL is configured for this connection; set one".to_string()),
                Some(url) => match self.client.post(&url).json(&payload(&alert)).send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("the admin contact answered {}", r.status())),
                    Err(e) => Err(format!("the admin contact could not be reached: {e}")),
                },
            };
            let now = self.clock.now_ms();
            let delivery = match result {
                Ok(()) => {
                    rep.delivered += 1;
                    AlertDelivery::Delivered
                }
                Err(error) => {
                    rep.failed += 1;
                    let delay = self.retry_delay(alert.attempts + 1);
                    tracing::error!(alert = alert.id, kind = %alert.kind, "alert delivery failed: {error}; retrying in {delay:?}");
                    AlertDelivery::Failed { error, retry_at: now + crate::store::ms(delay) }
                }
            };
            self.store.record_alert_delivery(alert.id, &delivery, now).await?;
        }
        Ok(rep)
    }
}
