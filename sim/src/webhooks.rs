//! Webhooks: building each platform's payload, the delivery queue, signing at send time, and
//! each platform's retry schedule, all on the sim clock.
//!
//! Why sign at send time? Zendesk's signature covers a timestamp header, and a retry is a new
//! request with a new timestamp. Why one sequential worker? Delivery order is then exactly the
//! queue order, so the reorder fault (hold one delivery back until the account's next one has
//! gone) is the only source of reordering and a seeded run replays exactly. A receiver that
//! hangs holds the queue for at most the webhook timeout (10 s by default, Zendesk's figure).
//!
//! Retry schedules:
//! - Freshdesk: +5 min, +30 min, +60 min after a failure at the receiver's end, then give up
//!   (platforms.md 2.6, official). What counts as a failure is UNCONFIRMED; any non-2xx,
//!   connection error or timeout counts here.
//! - Zendesk: UNCONFIRMED. The docs say "certain HTTP response codes" are retried; the
//!   recollection in platforms.md is 409 up to 3 times and 429/503 when `Retry-After` <= 60 s.
//!   Here: 409, 429, 5xx, connection errors and timeouts are retried up to 3 times, after
//!   `Retry-After` (when <= 60 s) or else 5 s, 30 s, 60 s; other 4xx are final.
//! - Intercom: UNCONFIRMED (sources conflict). Here: one retry after 1 minute, on any failure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tokio::sync::{Notify, watch};

use crate::model::{Account, Change};
use crate::util::rfc3339;
use crate::{Platform, SimInner, lock};

/// How long a reorder-held delivery waits for a successor before going out anyway (sim ms).
const REORDER_HOLD_MS: i64 = 2_000;

/// A webhook produced by a write, before faults and signing.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// Account.
    pub account: u64,
    /// Event type / topic / triggered event.
    pub event: String,
    /// Ticket id.
    pub ticket_id: u64,
    /// JSON body.
    pub body: Vec<u8>,
}

/// One delivery attempt (or a drop), as the delivery log shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRecord {
    /// Delivery id (a duplicate shares its original's id).
    pub delivery_id: u64,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Account.
    pub account_id: u64,
    /// Event type / topic.
    pub event: String,
    /// Ticket id.
    pub ticket_id: u64,
    /// Sim time of the attempt, unix ms.
    pub at_ms: i64,
    /// Receiver URL.
    pub url: Option<String>,
    /// `delivered`, `failed` (will retry), `gave_up`, `dropped` (fault) or `no_target`.
    pub result: &'static str,
    /// Receiver status.
    pub status: Option<u16>,
    /// Connection error / timeout text.
    pub error: Option<String>,
    /// When the next attempt is due, unix ms.
    pub next_attempt_at_ms: Option<i64>,
    /// Sent as an injected duplicate.
    pub duplicate: bool,
    /// Held back by the reorder fault.
    pub reordered: bool,
    /// Delayed by the delay fault.
    pub delayed: bool,
}

#[derive(Debug, Clone)]
struct Pending {
    seq: u64,
    delivery_id: u64,
    account: u64,
    event: String,
    ticket_id: u64,
    body: Arc<Vec<u8>>,
    due_ms: i64,
    attempt: u32,
    duplicate: bool,
    reordered: bool,
    delayed: bool,
}

#[derive(Default)]
struct QState {
    pending: Vec<Pending>,
    held: HashMap<u64, (Pending, i64)>,
    next_seq: u64,
    next_delivery: u64,
    log: Vec<DeliveryRecord>,
    in_flight: usize,
}

/// The delivery queue.
#[derive(Default)]
pub struct Queue {
    state: Mutex<QState>,
    wake: Notify,
}

impl Queue {
    /// Queues webhooks, applying the seeded webhook faults.
    pub(crate) fn enqueue(&self, sim: &SimInner, items: Vec<Outbound>) {
        if items.is_empty() {
            return;
        }
        let now = sim.clock.now_ms();
        let mut q = lock(&self.state);
        for o in items {
            let fate = sim.faults.webhook_fate();
            q.next_delivery += 1;
            let delivery_id = q.next_delivery;
            if fate.drop {
                q.log.push(DeliveryRecord {
                    delivery_id,
                    attempt: 0,
                    account_id: o.account,
                    event: o.event,
                    ticket_id: o.ticket_id,
                    at_ms: now,
                    url: None,
                    result: "dropped",
                    status: None,
                    error: None,
                    next_attempt_at_ms: None,
                    duplicate: false,
                    reordered: false,
                    delayed: false,
                });
                continue;
            }
            q.next_seq += 1;
            let p = Pending {
                seq: q.next_seq,
                delivery_id,
                account: o.account,
                event: o.event,
                ticket_id: o.ticket_id,
                body: Arc::new(o.body),
                due_ms: now + fate.delay_ms as i64,
                attempt: 1,
                duplicate: false,
                reordered: fate.reorder,
                delayed: fate.delay_ms > 0,
            };
            let previous = q.held.remove(&p.account);
            if fate.duplicate {
                let mut d = p.clone();
                d.duplicate = true;
                q.next_seq += 1;
                d.seq = q.next_seq;
                q.pending.push(d);
            }
            let (account, due) = (p.account, p.due_ms);
            if fate.reorder {
                q.held.insert(account, (p, now));
            } else {
                q.pending.push(p);
            }
            if let Some((mut h, _)) = previous {
                // The held delivery goes out right after the one that overtook it.
                q.next_seq += 1;
                h.seq = q.next_seq;
                h.due_ms = h.due_ms.max(due);
                q.pending.push(h);
            }
        }
        drop(q);
        self.wake.notify_one();
    }

    /// The delivery log.
    pub(crate) fn deliveries(&self) -> Vec<DeliveryRecord> {
        lock(&self.state).log.clone()
    }

    /// Deliveries queued, held or in flight.
    pub(crate) fn pending(&self) -> usize {
        let q = lock(&self.state);
        q.pending.len() + q.held.len() + q.in_flight
    }

    fn take_due(&self, now: i64) -> (Vec<Pending>, Option<i64>) {
        let mut q = lock(&self.state);
        let stale: Vec<u64> = q
            .held
            .iter()
            .filter(|(_, (_, at))| now - at >= REORDER_HOLD_MS)
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            if let Some((mut h, _)) = q.held.remove(&k) {
                q.next_seq += 1;
                h.seq = q.next_seq;
                q.pending.push(h);
            }
        }
        let (mut due, rest): (Vec<Pending>, Vec<Pending>) =
            q.pending.drain(..).partition(|p| p.due_ms <= now);
        q.pending = rest;
        due.sort_by_key(|p| (p.due_ms, p.seq));
        q.in_flight += due.len();
        let next = q
            .pending
            .iter()
            .map(|p| p.due_ms)
            .chain(q.held.values().map(|(_, at)| at + REORDER_HOLD_MS))
            .min();
        (due, next)
    }
}

/// Builds the webhooks for a write, if the account has a target.
pub(crate) fn events(
    sim: &SimInner,
    acct: &Account,
    idx: usize,
    changes: &[Change],
    actor: Option<u64>,
    now: i64,
) -> Vec<Outbound> {
    if acct.webhook.is_none() {
        return Vec::new();
    }
    let payloads = match sim.platform {
        Platform::Zendesk => crate::zendesk::webhook_payloads(sim, acct, idx, changes, actor, now),
        Platform::Freshdesk => crate::freshdesk::webhook_payloads(acct, idx, changes),
        Platform::Intercom => crate::intercom::webhook_payloads(sim, acct, idx, changes, now),
    };
    let ticket_id = acct.tickets[idx].id;
    payloads
        .into_iter()
        .map(|(event, body)| Outbound {
            account: acct.id,
            event,
            ticket_id,
            body: serde_json::to_vec(&body).unwrap_or_default(),
        })
        .collect()
}

/// `base64(HMAC-SHA256(secret, timestamp + body))`: Zendesk's webhook signature.
pub fn zendesk_signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("hmac takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// `sha1=<hex HMAC-SHA1(client_secret, body)>`: Intercom's `X-Hub-Signature`.
pub fn intercom_signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("hmac takes any key length");
    mac.update(body);
    format!("sha1={}", hex::encode(mac.finalize().into_bytes()))
}

fn retry_delay_ms(
    platform: Platform,
    attempt: u32,
    status: Option<u16>,
    retry_after: Option<u64>,
) -> Option<i64> {
    match platform {
        Platform::Freshdesk => [5 * 60_000, 30 * 60_000, 60 * 60_000]
            .get(attempt as usize - 1)
            .copied(),
        Platform::Zendesk => {
            let retryable = match status {
                None => true,
                Some(s) => s == 409 || s == 429 || s >= 500,
            };
            if !retryable || attempt > 3 {
                return None;
            }
            if let (Some(429 | 503), Some(ra)) = (status, retry_after) {
                if ra <= 60 {
                    return Some(ra as i64 * 1000);
                }
                return None;
            }
            [5_000, 30_000, 60_000].get(attempt as usize - 1).copied()
        }
        Platform::Intercom => (attempt == 1).then_some(60_000),
    }
}

/// Webhook deliveries in flight at once, per simulator.
const CONCURRENT_DELIVERIES: usize = 32;

/// The delivery worker: runs until `stop`.
pub(crate) async fn run(sim: Arc<SimInner>, mut stop: watch::Receiver<bool>) {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(http);
    // Platforms deliver many webhooks at once; so does the sim, up to this many in flight
    // (order across deliveries is then not guaranteed, as on the real platforms).
    let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_DELIVERIES));
    let mut running = tokio::task::JoinSet::new();
    loop {
        let now = sim.clock.now_ms();
        let (due, next) = sim.hooks.take_due(now);
        for p in due {
            let Ok(slot) = slots.clone().acquire_owned().await else { return };
            let (sim, client) = (sim.clone(), client.clone());
            running.spawn(async move {
                let _slot = slot;
                deliver(&sim, &client, p).await;
                lock(&sim.hooks.state).in_flight -= 1;
            });
            while running.try_join_next().is_some() {}
        }
        let now = sim.clock.now_ms();
        let wait = sim.clock.real_wait(next.map_or(100, |n| n - now)).min(Duration::from_millis(100));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = sim.hooks.wake.notified() => {}
            _ = sim.clock.moved() => {}
            _ = stop.changed() => return,
        }
    }
}

async fn deliver(sim: &SimInner, client: &Client<HttpConnector, Full<Bytes>>, p: Pending) {
    let now = sim.clock.now_ms();
    let target = sim
        .account(p.account)
        .and_then(|a| lock(&a).webhook.clone());
    let mut rec = DeliveryRecord {
        delivery_id: p.delivery_id,
        attempt: p.attempt,
        account_id: p.account,
        event: p.event.clone(),
        ticket_id: p.ticket_id,
        at_ms: now,
        url: target.as_ref().map(|t| t.url.clone()),
        result: "no_target",
        status: None,
        error: None,
        next_attempt_at_ms: None,
        duplicate: p.duplicate,
        reordered: p.reordered,
        delayed: p.delayed,
    };
    let Some(target) = target else {
        lock(&sim.hooks.state).log.push(rec);
        return;
    };
    let mut req = hyper::Request::post(target.url.as_str())
        .header("content-type", "application/json")
        .header("content-length", p.body.len());
    match sim.platform {
        Platform::Zendesk => {
            let ts = rfc3339(now);
            let sig = zendesk_signature(&target.secret, &ts, &p.body);
            req = req
                .header("user-agent", "Zendesk Webhook")
                .header(
                    "x-zendesk-webhook-id",
                    format!("01SIMWEBHOOK{:014}", p.account),
                )
                .header("x-zendesk-webhook-signature", sig)
                .header("x-zendesk-webhook-signature-timestamp", ts);
        }
        Platform::Intercom => {
            // User-Agent text UNCONFIRMED.
            req = req.header("user-agent", "Intercom-Webhooks-Robot").header(
                "x-hub-signature",
                intercom_signature(&target.secret, &p.body),
            );
        }
        Platform::Freshdesk => {
            // No signature on Freshdesk webhooks: the admin configured this custom header.
            req = req
                .header("user-agent", "Freshdesk")
                .header("x-deskgate-webhook-token", target.secret.as_str());
        }
    }
    // The body is the one built when the write happened: a retry resends it unchanged (so
    // Intercom's `delivery_attempts` stays 1; whether Intercom bumps it is UNCONFIRMED).
    let req = match req.body(Full::new(Bytes::from(p.body.as_ref().clone()))) {
        Ok(r) => r,
        Err(e) => {
            rec.result = "gave_up";
            rec.error = Some(format!("cannot build request: {e}"));
            lock(&sim.hooks.state).log.push(rec);
            return;
        }
    };
    let (status, retry_after, error) =
        match tokio::time::timeout(sim.webhook_timeout, client.request(req)).await {
            Ok(Ok(res)) => {
                let status = res.status().as_u16();
                let ra = res
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| s.trim().parse().ok());
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), res.into_body().collect()).await;
                (Some(status), ra, None)
            }
            Ok(Err(e)) => (None, None, Some(format!("connection failed: {e}"))),
            Err(_) => (
                None,
                None,
                Some(format!("no answer within {:?}", sim.webhook_timeout)),
            ),
        };
    rec.status = status;
    rec.error = error;
    if status.is_some_and(|s| (200..300).contains(&s)) {
        rec.result = "delivered";
    } else if let Some(delay) = retry_delay_ms(sim.platform, p.attempt, status, retry_after) {
        rec.result = "failed";
        let due = sim.clock.now_ms() + delay;
        rec.next_attempt_at_ms = Some(due);
        let mut q = lock(&sim.hooks.state);
        q.next_seq += 1;
        let seq = q.next_seq;
        q.pending.push(Pending {
            seq,
            due_ms: due,
            attempt: p.attempt + 1,
            ..p
        });
    } else {
        // Freshdesk then emails the account admins ("Webhook failure"); the log records it.
        rec.result = "gave_up";
    }
    lock(&sim.hooks.state).log.push(rec);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        assert_eq!(
            retry_delay_ms(Platform::Freshdesk, 1, Some(500), None),
            Some(300_000)
        );
        assert_eq!(
            retry_delay_ms(Platform::Freshdesk, 3, None, None),
            Some(3_600_000)
        );
        assert_eq!(retry_delay_ms(Platform::Freshdesk, 4, None, None), None);
        assert_eq!(retry_delay_ms(Platform::Zendesk, 1, Some(404), None), None);
        assert_eq!(
            retry_delay_ms(Platform::Zendesk, 1, Some(429), Some(7)),
            Some(7_000)
        );
        assert_eq!(retry_delay_ms(Platform::Intercom, 2, Some(500), None), None);
    }
}
