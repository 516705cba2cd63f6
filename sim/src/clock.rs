//! The simulator's clock: one per running sim, shared by every account, rate window, token
//! expiry and webhook retry schedule.
//!
//! Why not wall time? Tests must be able to say "an hour passes" without sleeping an hour. The
//! clock starts either at real wall time or at a given instant, then either keeps ticking with
//! real time (the default, so a demo behaves naturally) or stays frozen (deterministic tests).
//! [`SimClock::advance`] and [`SimClock::set`] move it in both modes, and [`SimClock::set_rate`]
//! changes how fast it ticks; listeners (the webhook scheduler) are woken on every change so a
//! retry that became due fires at once.

use std::sync::{Arc, RwLock};
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
        f.debug_struct("SimClock").field("now_ms", &self.now_ms()).field("rate", &self.rate()).field("frozen", &self.is_frozen()).finish()
    }
}

struct ClockInner {
    started: Instant,
    frozen: AtomicBool,
    /// When frozen: the current time.
    frozen_at: AtomicI64,
    /// When ticking: where the clock was at a real instant, and how fast it runs from there.
    /// Behind a lock because the three move together when the rate changes (a reader must never
    /// combine an old anchor with a new rate and see time jump).
    ticking: RwLock<Ticking>,
    moved: Notify,
}

#[derive(Clone, Copy)]
struct Ticking {
    /// Real time since `started` at the anchor.
    anchor: Duration,
    /// Sim time at the anchor, plus every manual adjustment since.
    at_ms: i64,
    /// Sim milliseconds per real millisecond (1 = real time).
    rate: f64,
}

impl Ticking {
    fn now_ms(&self, elapsed: Duration) -> i64 {
        let real = elapsed.saturating_sub(self.anchor);
        if self.rate == 1.0 { self.at_ms + real.as_millis() as i64 } else { self.at_ms + (real.as_secs_f64() * 1000.0 * self.rate) as i64 }
    }
}

/// Real wall time in unix milliseconds.
pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A rate that is not a positive number is taken as 1.
fn sane_rate(rate: f64) -> f64 {
    if rate.is_finite() && rate > 0.0 { rate } else { 1.0 }
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
        let start = start_ms.unwrap_or_else(wall_ms);
        SimClock {
            inner: Arc::new(ClockInner {
                started: Instant::now(),
                frozen: AtomicBool::new(frozen),
                frozen_at: AtomicI64::new(start),
                ticking: RwLock::new(Ticking { anchor: Duration::ZERO, at_ms: start, rate: sane_rate(rate) }),
                moved: Notify::new(),
            }),
        }
    }

    fn ticking(&self) -> Ticking {
        *self.inner.ticking.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the ticking timeline under its lock; `f` gets the real time since `started`.
    fn with_ticking(&self, f: impl FnOnce(&mut Ticking, Duration)) {
        let mut t = self.inner.ticking.write().unwrap_or_else(|e| e.into_inner());
        f(&mut t, self.inner.started.elapsed());
    }

    /// Current sim time, unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        let i = &self.inner;
        if i.frozen.load(Ordering::Acquire) {
            i.frozen_at.load(Ordering::Acquire)
        } else {
            self.ticking().now_ms(i.started.elapsed())
        }
    }

    /// How fast the clock ticks: sim milliseconds per real millisecond.
    pub fn rate(&self) -> f64 {
        self.ticking().rate
    }

    /// Changes how fast the clock ticks from now on, without moving it: the instant stays, only
    /// the pace after it changes (frozen or not). `deskgate demo` slows its day this way when the
    /// machine cannot keep up, so the day's proportions hold and only its real length grows. A
    /// rate that is not a positive number is taken as 1. Waiters are woken to recompute their
    /// real waits.
    pub fn set_rate(&self, rate: f64) {
        self.with_ticking(|t, elapsed| {
            *t = Ticking { anchor: elapsed, at_ms: t.now_ms(elapsed), rate: sane_rate(rate) };
        });
        self.inner.moved.notify_waiters();
    }

    /// The real time it takes this clock to tick `ms` sim milliseconds (at least 1 ms), at its
    /// current rate.
    pub fn real_wait(&self, ms: i64) -> Duration {
        let ms = ms.max(1) as f64 / self.rate();
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
            self.with_ticking(|t, _| t.at_ms += ms);
        }
        i.moved.notify_waiters();
    }

    /// Sets the clock to `ms` (unix milliseconds); it may go backwards.
    pub fn set(&self, ms: i64) {
        let i = &self.inner;
        if i.frozen.load(Ordering::Acquire) {
            i.frozen_at.store(ms, Ordering::Release);
        } else {
            self.with_ticking(|t, elapsed| *t = Ticking { anchor: elapsed, at_ms: ms, rate: t.rate });
        }
        i.moved.notify_waiters();
    }

    /// Freezes (`true`) or resumes (`false`) real-time ticking, keeping the current instant.
    pub fn set_frozen(&self, frozen: bool) {
        let i = &self.inner;
        if frozen {
            i.frozen_at.store(self.now_ms(), Ordering::Release);
            i.frozen.store(true, Ordering::Release);
        } else {
            let now = self.now_ms();
            self.with_ticking(|t, elapsed| *t = Ticking { anchor: elapsed, at_ms: now, rate: t.rate });
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

    #[test]
    fn changing_the_rate_keeps_the_instant_and_changes_the_waits() {
        let c = SimClock::with_rate(Some(1_000_000), true, 720.0);
        c.set_rate(360.0);
        assert_eq!(c.now_ms(), 1_000_000, "a rate change does not move a frozen clock");
        assert_eq!(c.rate(), 360.0);
        assert_eq!(c.real_wait(60_000).as_millis(), 166);
        c.set_rate(f64::NAN);
        assert_eq!(c.rate(), 1.0, "a rate that is not a positive number is taken as 1");

        // Ticking: a rate change re-anchors at the current instant, so time never jumps back
        // (from a fast rate to a slow one) or ahead (the other way). No sleeping: the clock
        // reads back within the few real milliseconds this test takes, at most x720.
        let t = SimClock::with_rate(Some(0), false, 720.0);
        t.set_rate(1.0);
        let a = t.now_ms();
        assert!((0..5_000).contains(&a), "{a}");
        t.set_rate(720.0);
        let b = t.now_ms();
        assert!(b >= a && b - a < 5_000, "{a} -> {b}");
        t.advance(Duration::from_secs(60));
        assert!(t.now_ms() >= b + 60_000);
        t.set_frozen(true);
        let f = t.now_ms();
        t.set_rate(2.0);
        t.set_frozen(false);
        assert!(t.now_ms() >= f && t.now_ms() - f < 1_000, "resuming keeps the instant");
        assert_eq!(t.rate(), 2.0);
    }
}
