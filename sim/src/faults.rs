//! Fault injection, all driven by seeded random generators so a failing run replays exactly.
//!
//! Two independent streams are derived from the sim's seed: one decides request faults (5xx
//! bursts, timeouts after the write was applied), the other decides webhook faults (drop,
//! duplicate, reorder, delay). Keeping them apart means turning on a request fault does not
//! reshuffle which webhooks get dropped. A stream is only drawn from when its share is above
//! zero, so unrelated traffic does not move it either.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::SimError;

/// What a timed-out request does once the write has been applied.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutMode {
    /// Hold the request open for `timeout_hold_ms` (the client usually gives up first), then
    /// close the connection without an answer.
    #[default]
    Hold,
    /// Close the connection at once, without an answer.
    Close,
}

/// The fault plan. Shares are probabilities in `[0, 1]`; `*_next` counters hit the next N
/// eligible requests before the shares are consulted. Absent fields take the defaults.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Share of webhook deliveries never sent.
    pub webhook_drop: f64,
    /// Share of webhook deliveries sent twice.
    pub webhook_duplicate: f64,
    /// Share of webhook deliveries held back and sent right after the account's next one (or,
    /// if none follows, once 2 s of sim time have passed).
    pub webhook_reorder: f64,
    /// Share of webhook deliveries delayed by `webhook_delay_ms` of sim time.
    pub webhook_delay: f64,
    /// Delay for delayed webhooks, sim milliseconds.
    pub webhook_delay_ms: u64,
    /// Share of write requests (POST/PUT/PATCH/DELETE) that time out *after* the write applied.
    pub timeout_after_apply: f64,
    /// The next N write requests time out after applying.
    pub timeout_next: u32,
    /// How a timed-out request ends.
    pub timeout_mode: TimeoutMode,
    /// For [`TimeoutMode::Hold`]: how long to hold, real milliseconds.
    pub timeout_hold_ms: u64,
    /// Share of requests answered with `error_status` before anything is applied.
    pub error_rate: f64,
    /// The next N requests get `error_status`.
    pub error_next: u32,
    /// Status for injected errors (500-599).
    pub error_status: u16,
    /// Added latency on every platform request, real milliseconds.
    pub latency_ms: u64,
    /// The next N requests to the OAuth token endpoint get `error_status` before anything is
    /// applied (no rotation): a token endpoint that is down while the API itself works.
    pub token_error_next: u32,
    /// The next N *successful* requests to the OAuth token endpoint are applied (a rotating
    /// platform has issued the new pair and deleted the old one) and then held open for
    /// `timeout_hold_ms` real milliseconds and closed without an answer: the client never learns
    /// the new pair. The request log records them as `timed_out_after_apply` as soon as the hold
    /// starts, so a test can act (kill the client) while it waits.
    pub token_hold_next: u32,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            webhook_drop: 0.0,
            webhook_duplicate: 0.0,
            webhook_reorder: 0.0,
            webhook_delay: 0.0,
            webhook_delay_ms: 5_000,
            timeout_after_apply: 0.0,
            timeout_next: 0,
            timeout_mode: TimeoutMode::Hold,
            timeout_hold_ms: 30_000,
            error_rate: 0.0,
            error_next: 0,
            error_status: 503,
            latency_ms: 0,
            token_error_next: 0,
            token_hold_next: 0,
        }
    }
}

impl FaultConfig {
    /// Checks ranges, with a message that says how to fix it.
    pub fn validate(&self) -> Result<(), SimError> {
        for (name, v) in [
            ("webhook_drop", self.webhook_drop),
            ("webhook_duplicate", self.webhook_duplicate),
            ("webhook_reorder", self.webhook_reorder),
            ("webhook_delay", self.webhook_delay),
            ("timeout_after_apply", self.timeout_after_apply),
            ("error_rate", self.error_rate),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(SimError::bad(format!(
                    "{name} is {v}; a share must be between 0.0 and 1.0"
                )));
            }
        }
        if !(500..=599).contains(&self.error_status) {
            return Err(SimError::bad(format!(
                "error_status is {}; injected errors must be 5xx (500-599)",
                self.error_status
            )));
        }
        Ok(())
    }
}

/// What happens to one webhook delivery.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WebhookFate {
    /// Never sent.
    pub drop: bool,
    /// Sent twice.
    pub duplicate: bool,
    /// Sent after the account's next delivery.
    pub reorder: bool,
    /// Extra sim delay, ms.
    pub delay_ms: u64,
}

/// A request-level fault decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFault {
    /// Answer with this 5xx before doing anything.
    Error(u16),
}

struct State {
    cfg: FaultConfig,
    requests: StdRng,
    webhooks: StdRng,
}

/// The live fault plan plus its random streams.
pub struct Faults {
    state: Mutex<State>,
    seed: u64,
    /// Any request-level fault configured (lets the hot path skip the lock when none is).
    request_faults: AtomicBool,
}

impl Faults {
    /// No faults, streams seeded from `seed`.
    pub fn new(seed: u64) -> Faults {
        Faults {
            state: Mutex::new(State {
                cfg: FaultConfig::default(),
                requests: StdRng::seed_from_u64(seed ^ 0x7265_7175_6573_7473),
                webhooks: StdRng::seed_from_u64(seed ^ 0x7765_6268_6f6f_6b73),
            }),
            seed,
            request_faults: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the plan and restarts both random streams from the seed, so the same plan over
    /// the same traffic makes the same decisions.
    pub fn set(&self, cfg: FaultConfig) -> Result<(), SimError> {
        cfg.validate()?;
        let mut s = self.lock();
        let on = cfg.latency_ms > 0
            || cfg.error_next > 0
            || cfg.error_rate > 0.0
            || cfg.timeout_next > 0
            || cfg.timeout_after_apply > 0.0
            || cfg.token_error_next > 0
            || cfg.token_hold_next > 0;
        self.request_faults.store(on, Ordering::Release);
        s.cfg = cfg;
        s.requests = StdRng::seed_from_u64(self.seed ^ 0x7265_7175_6573_7473);
        s.webhooks = StdRng::seed_from_u64(self.seed ^ 0x7765_6268_6f6f_6b73);
        Ok(())
    }

    /// The current plan (counters show what is left).
    pub fn get(&self) -> FaultConfig {
        self.lock().cfg.clone()
    }

    /// Added latency, ms.
    pub fn latency_ms(&self) -> u64 {
        if !self.request_faults.load(Ordering::Acquire) {
            return 0;
        }
        self.lock().cfg.latency_ms
    }

    /// Whether this request gets an injected 5xx.
    pub fn request_fault(&self) -> Option<RequestFault> {
        if !self.request_faults.load(Ordering::Acquire) {
            return None;
        }
        let mut s = self.lock();
        if s.cfg.error_next > 0 {
            s.cfg.error_next -= 1;
            return Some(RequestFault::Error(s.cfg.error_status));
        }
        if s.cfg.error_rate > 0.0 {
            let r = s.cfg.error_rate;
            if s.requests.random_bool(r) {
                return Some(RequestFault::Error(s.cfg.error_status));
            }
        }
        None
    }

    /// Whether this applied write times out, and how.
    pub fn timeout_after_apply(&self) -> Option<(TimeoutMode, u64)> {
        if !self.request_faults.load(Ordering::Acquire) {
            return None;
        }
        let mut s = self.lock();
        let hit = if s.cfg.timeout_next > 0 {
            s.cfg.timeout_next -= 1;
            true
        } else if s.cfg.timeout_after_apply > 0.0 {
            let r = s.cfg.timeout_after_apply;
            s.requests.random_bool(r)
        } else {
            false
        };
        hit.then_some((s.cfg.timeout_mode, s.cfg.timeout_hold_ms))
    }

    /// Whether this request to the OAuth token endpoint gets an injected 5xx
    /// ([`FaultConfig::token_error_next`]).
    pub fn token_error(&self) -> Option<RequestFault> {
        if !self.request_faults.load(Ordering::Acquire) {
            return None;
        }
        let mut s = self.lock();
        if s.cfg.token_error_next > 0 {
            s.cfg.token_error_next -= 1;
            return Some(RequestFault::Error(s.cfg.error_status));
        }
        None
    }

    /// Whether this successful token-endpoint answer is withheld, and for how long
    /// ([`FaultConfig::token_hold_next`]).
    pub fn token_hold(&self) -> Option<u64> {
        if !self.request_faults.load(Ordering::Acquire) {
            return None;
        }
        let mut s = self.lock();
        if s.cfg.token_hold_next > 0 {
            s.cfg.token_hold_next -= 1;
            return Some(s.cfg.timeout_hold_ms);
        }
        None
    }

    /// Decides one webhook delivery's fate.
    pub fn webhook_fate(&self) -> WebhookFate {
        let mut s = self.lock();
        let c = s.cfg.clone();
        let mut roll = |p: f64| p > 0.0 && s.webhooks.random_bool(p);
        let drop = roll(c.webhook_drop);
        let duplicate = roll(c.webhook_duplicate);
        let reorder = roll(c.webhook_reorder);
        let delay = roll(c.webhook_delay);
        WebhookFate {
            drop,
            duplicate,
            reorder,
            delay_ms: if delay { c.webhook_delay_ms } else { 0 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_fates() {
        let run = |seed| {
            let f = Faults::new(seed);
            f.set(FaultConfig {
                webhook_drop: 0.5,
                webhook_duplicate: 0.3,
                ..Default::default()
            })
            .unwrap();
            (0..64).map(|_| f.webhook_fate()).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn counters_then_shares() {
        let f = Faults::new(1);
        f.set(FaultConfig {
            error_next: 2,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(f.request_fault(), Some(RequestFault::Error(503)));
        assert_eq!(f.request_fault(), Some(RequestFault::Error(503)));
        assert_eq!(f.request_fault(), None);
        f.set(FaultConfig {
            token_error_next: 1,
            token_hold_next: 1,
            timeout_hold_ms: 7,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(f.request_fault(), None, "token faults leave other requests alone");
        assert_eq!(f.token_error(), Some(RequestFault::Error(503)));
        assert_eq!(f.token_error(), None);
        assert_eq!(f.token_hold(), Some(7));
        assert_eq!(f.token_hold(), None);
        assert!(
            f.set(FaultConfig {
                error_rate: 2.0,
                ..Default::default()
            })
            .is_err()
        );
    }
}
