//! [`Backoff`]: how long a read waits before trying again after a 429 or a 5xx.
//!
//! Why full jitter? Reads that fail together (a 5xx burst, a 429 that hit every sweep of the
//! account) would retry together after a plain exponential delay and fail together again.
//! "Full jitter" draws the delay uniformly from `[0, min(cap, base * 2^attempt)]`, which spreads
//! them over the whole interval and, of the usual schemes, does the least total work (AWS
//! Architecture Blog, "Exponential Backoff And Jitter"). The randomness is injected
//! ([`Jitter`]), seeded, so a test replays exactly the same delays.
//!
//! Writes never back off here: a write that meets a 429 goes to the
//! [`crate::budget::WriteRetryQueue`], and a write is retried after a 5xx only under the
//! idempotency rules (DESIGN.md, "Idempotent writes"). A read that met a 429 also waits for the
//! bucket's penalty: it re-enters the gate after `max(backoff, Retry-After)`.

use std::time::Duration;

use crate::clock::Millis;

/// A source of uniformly random 64-bit values, injected so delays are reproducible.
pub trait Jitter {
    /// The next value.
    fn next_u64(&mut self) -> u64;
}

/// SplitMix64 (Steele, Lea and Flood, 2014): tiny, fast, seedable, good enough to spread retries
/// (not for anything secret).
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting from `seed` (the same seed gives the same sequence).
    pub fn seeded(seed: u64) -> Self {
        Self { state: seed }
    }
}

impl Jitter for SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Exponential backoff with full jitter, capped.
///
/// ```
/// use deskgate::budget::{Backoff, SplitMix64};
/// use std::time::Duration;
/// let b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
/// let mut rng = SplitMix64::seeded(7);
/// assert_eq!(b.ceiling(3), Duration::from_secs(4));
/// assert!(b.delay(3, &mut rng) <= Duration::from_secs(4));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first retry's delay (attempt 0).
    pub base: Duration,
    /// No delay exceeds this.
    pub cap: Duration,
}

impl Default for Backoff {
    /// 500 ms doubling up to 30 s.
    fn default() -> Self {
        Self { base: Duration::from_millis(500), cap: Duration::from_secs(30) }
    }
}

impl Backoff {
    /// Backoff from `base`, capped at `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self { base, cap }
    }

    /// The most the delay before retry `attempt` (0 for the first) can be:
    /// `min(cap, base * 2^attempt)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt).unwrap_or(u32::MAX);
        self.base.checked_mul(factor).unwrap_or(Duration::MAX).min(self.cap)
    }

    /// The delay before retry `attempt`: uniform in `[0, ceiling(attempt)]`, to the millisecond.
    pub fn delay(&self, attempt: u32, rng: &mut impl Jitter) -> Duration {
        let ceiling = u64::try_from(self.ceiling(attempt).as_millis()).unwrap_or(u64::MAX);
        // Lemire's multiply-shift maps 64 random bits onto [0, ceiling] with negligible bias.
        let span = u128::from(ceiling) + 1;
        let ms = (u128::from(rng.next_u64()) * span) >> 64;
        Duration::from_millis(ms as u64)
    }

    /// When retry `attempt` may go, from `now`.
    pub fn retry_at(&self, attempt: u32, now: Millis, rng: &mut impl Jitter) -> Millis {
        let ms = Millis::try_from(self.delay(attempt, rng).as_millis()).unwrap_or(Millis::MAX);
        now.saturating_add(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn backoff_grows_exponentially_and_is_capped() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let ceilings: Vec<u128> = (0..10).map(|a| b.ceiling(a).as_millis()).collect();
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1_600, 3_200, 5_000, 5_000, 5_000, 5_000]);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(5), "no overflow at absurd attempts");
    }

    #[test]
    fn backoff_is_jittered_within_the_ceiling_and_reproducible_with_a_seed() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let run = |seed| {
            let mut rng = SplitMix64::seeded(seed);
            (0..200).map(|i| b.delay(i % 12, &mut rng)).collect::<Vec<_>>()
        };
        let a = run(42);
        assert_eq!(a, run(42), "same seed, same delays");
        assert_ne!(a, run(43), "another seed, other delays");
        for (i, d) in a.iter().enumerate() {
            assert!(*d <= b.ceiling(i as u32 % 12));
        }
        // Jittered, not constant: at the cap the delays spread over [0, 5 s].
        let capped: Vec<_> = a.iter().enumerate().filter(|(i, _)| i % 12 >= 6).map(|(_, d)| d.as_millis()).collect();
        assert!(capped.iter().any(|&d| d < 1_000) && capped.iter().any(|&d| d > 4_000), "{capped:?}");
        assert_eq!(b.retry_at(0, 1_000, &mut SplitMix64::seeded(1)), 1_000 + b.delay(0, &mut SplitMix64::seeded(1)).as_millis() as Millis);
    }

    proptest! {
        #[test]
        fn delay_never_exceeds_the_ceiling_or_the_cap(
            base in 0u64..10_000, cap in 0u64..100_000, attempt in 0u32..100, seed: u64
        ) {
            let b = Backoff::new(Duration::from_millis(base), Duration::from_millis(cap));
            let d = b.delay(attempt, &mut SplitMix64::seeded(seed));
            prop_assert!(d <= b.ceiling(attempt));
            prop_assert!(d <= b.cap);
            prop_assert!(b.ceiling(attempt) <= b.ceiling(attempt.saturating_add(1)));
        }
    }
}
