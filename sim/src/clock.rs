//! The simulator's clock: one per running sim, shared by every account, rate window, token
//! expiry and webhook retry schedule.
//!
//! Why not wall time? Tests must be able to say "an hour passes" without sleeping an hour. The
//! clock starts either at real wall time or at a given instant, then either keeps ticking with
//! real time (the default, so a demo behaves naturally) or stays frozen (deterministic tests).
//! [`SimClock::advance`] and [`SimClock::set`] move it in both modes; listeners (the webhook
//! scheduler) are woken on every move so a retry that became due fires at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

/// A controllable clock in unix milliseconds. Cheap to clone (it is an `Arc`).
#[derive(Clone)]
pub struct SimClock {
    inner: Arc<ClockInner>,
}

impl std::fmt::Debug for SimClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimClock").field("now_ms", &self.now_ms()).field("rate", &self.inner.rate).field("frozen", &self.is_frozen()).finish()
    }
}

struct ClockInner {
    started: Instant,
    /// Sim time at `started`, plus every manual adjustment.
    base_ms: AtomicI64,
    frozen: AtomicBool,
    /// When frozen: the current time.
    frozen_at: AtomicI64,
    moved: Notify,
    /// Sim milliseconds per real millisecond while ticking (1 = real time).
    rate: f64,
}

/// Real wall time in unix milliseconds.
pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl SimClock {
    /// A clock starting at `start_ms` (or wall time), ticking with real time unless `frozen`.
    pub fn new(start_ms: Option<i64>, frozen: bool) -> SimClock {
        Self::with_rate(start_ms, frozen, 1.0)
    }

    /// A clock that, while ticking, runs `rate` times faster than real time: `deskgate demo`
    /// plays a day in two minutes this way, and every rate window, token lifetime and webhook
    /// retry schedule is compressed alike. A rate that is not a positive number is taken as 1.
    pub fn with_rate(start_ms: Option<i64>, frozen: bool, rate: f64) -> SimClock {
        let rate = if rate.is_finite() && rate > 0.0 { rate } else { 1.0 };
        let start = start_ms.unwrap_or_else(wall_ms);
        SimClock {
            inner: Arc::new(ClockInner {
                started: Instant::now(),
                base_ms: AtomicI64::new(start),
                frozen: AtomicBool::new(frozen),
                frozen_at: AtomicI64::new(start),
                moved: Notify::new(),
                rate,
            }),
        }
    }

    /// Current sim time, unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        let i = &self.inner;
        if i.frozen.load(Ordering::Acquire) {
            i.frozen_at.load(Ordering::Acquire)
        } else {
            i.base_ms.load(Ordering::Acquire) + self.ticked_ms()
        }
    }

    /// Sim milliseconds ticked since the clock was made (real elapsed time times the rate).
    fn ticked_ms(&self) -> i64 {
        let i = &self.inner;
        if i.rate == 1.0 {
            i.started.elapsed().as_millis() as i64
        } else {
            (i.started.elapsed().as_secs_f64() * 1000.0 * i.rate) as i64
        }
    }

    /// How fast the clock ticks: sim milliseconds per real millisecond.
    pub fn rate(&self) -> f64 {
        self.inner.rate
    }

    /// The real time it takes this clock to tick `ms` sim milliseconds (at least 1 ms).
    pub fn real_wait(&self, ms: i64) -> Duration {
        let ms = ms.max(1) as f64 / self.inner.rate;
        Duration::from_micros((ms * 1000.0).max(1000.0) as u64)
    }

    /// Current sim time, unix seconds.
    pub fn now_secs(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let ms = d.as_millis() as i64;
        let i = &self.inner;
        if i.frozen.load(Ordering::Acquire) {
            i.frozen_at.fetch_add(ms, Ordering::AcqRel);
        } else {
            i.base_ms.fetch_add(ms, Ordering::AcqRel);
        }
        i.moved.notify_waiters();
    }

    /// Sets the clock to `ms` (unix milliseconds); it may go backwards.
    pub fn set(&self, ms: i64) {
        let i = &self.inner;
        if i.frozen.load(Ordering::Acquire) {
            i.frozen_at.store(ms, Ordering::Release);
        } else {
            let delta = ms - self.now_ms();
            i.base_ms.fetch_add(delta, Ordering::AcqRel);
        }
        i.moved.notify_waiters();
    }

    /// Freezes (`true`) or resumes (`false`) real-time ticking, keeping the current instant.
    pub fn set_frozen(&self, frozen: bool) {
        let now = self.now_ms();
        let i = &self.inner;
        if frozen {
            i.frozen_at.store(now, Ordering::Release);
            i.frozen.store(true, Ordering::Release);
        } else {
            let elapsed = self.ticked_ms();
            i.base_ms.store(now - elapsed, Ordering::Release);
            i.frozen.store(false, Ordering::Release);
        }
        i.moved.notify_waiters();
    }

    /// Whether the clock is frozen.
    pub fn is_frozen(&self) -> bool {
        self.inner.frozen.load(Ordering::Acquire)
    }

    /// Resolves when the clock is next moved by hand.
    pub(crate) async fn moved(&self) {
        self.inner.moved.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frozen_clock_moves_only_by_hand() {
        let c = SimClock::new(Some(1_000), true);
        assert_eq!(c.now_ms(), 1_000);
        c.advance(Duration::from_secs(60));
        assert_eq!(c.now_ms(), 61_000);
        c.set(5);
        assert_eq!(c.now_ms(), 5);
        c.set_frozen(false);
        assert!(c.now_ms() >= 5);
    }

    #[test]
    fn a_fast_clock_converts_waits() {
        let c = SimClock::with_rate(Some(0), true, 720.0);
        assert_eq!(c.rate(), 720.0);
        // A sim minute passes in 83 real milliseconds; waits never drop below a millisecond.
        assert_eq!(c.real_wait(60_000).as_millis(), 83);
        assert_eq!(c.real_wait(1), Duration::from_millis(1));
        assert_eq!(SimClock::with_rate(None, true, -3.0).rate(), 1.0);
    }
}
