//! A connection's budget settings: the target share of each limit, the write reserve, the bound on
//! per-object keys.
//!
//! Shares are integer permille, never floats, so that the same arithmetic (and the same rounding)
//! can run in a Redis script for budgets shared across replicas (issue #9).

use std::collections::BTreeMap;
use std::fmt;

/// A share of something, in permille (0..=1000), rounded down when applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Share(u16);

impl Share {
    /// Nothing.
    pub const NONE: Share = Share(0);
    /// Everything.
    pub const ALL: Share = Share(1000);

    /// `p` percent; values above 100 mean 100.
    pub const fn percent(p: u16) -> Share {
        Share(if p > 100 { 1000 } else { p * 10 })
    }

    /// `p` permille; values above 1000 mean 1000.
    pub const fn permille(p: u16) -> Share {
        Share(if p > 1000 { 1000 } else { p })
    }

    /// The share in permille.
    pub const fn as_permille(self) -> u16 {
        self.0
    }

    /// This share of `units`, rounded down.
    pub const fn of(self, units: u64) -> u64 {
        // u64 * 1000 cannot overflow for any limit a u32 can state.
        units.saturating_mul(self.0 as u64) / 1000
    }
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(10) {
            write!(f, "{}%", self.0 / 10)
        } else {
            write!(f, "{}.{}%", self.0 / 10, self.0 % 10)
        }
    }
}

/// Budget settings for one connection.
///
/// Build from [`BudgetConfig::default`] and the `with_*` methods:
///
/// ```
/// use deskgate::budget::{BudgetConfig, Share};
/// let c = BudgetConfig::default()
///     .with_target(Share::percent(60))
///     .with_bucket_write_reserve("incremental-export", Share::NONE);
/// assert_eq!(c.target, Share::percent(60));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetConfig {
    /// Share of each bucket's stated limit this connection may spend per window, together with
    /// what the platform reports that other clients of the account spent (75% by default). The rest
    /// is left to the account's other clients.
    pub target: Share,
    /// Share of the target reserved for the write lane (30% by default): reads may use only
    /// `target - reserve`, writes may use the whole target.
    pub write_reserve: Share,
    /// Per-bucket overrides of [`BudgetConfig::write_reserve`], by bucket name. A bucket that only
    /// reads draw on (Zendesk's "incremental-export") wastes its reserve; set it to [`Share::NONE`].
    pub write_reserve_by_bucket: BTreeMap<String, Share>,
    /// Most keys one per-object bucket tracks at once. Idle keys (window over, no penalty) carry
    /// no information and are evicted first; when the table is still full, a draw on a new key
    /// waits for the earliest live key to go idle rather than forget a live count.
    pub max_keys_per_bucket: usize,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            target: Share::percent(75),
            write_reserve: Share::percent(30),
            write_reserve_by_bucket: BTreeMap::new(),
            max_keys_per_bucket: 10_000,
        }
    }
}

impl BudgetConfig {
    /// With another target share.
    pub fn with_target(mut self, target: Share) -> Self {
        self.target = target;
        self
    }

    /// With another write reserve for every bucket without an override.
    pub fn with_write_reserve(mut self, reserve: Share) -> Self {
        self.write_reserve = reserve;
        self
    }

    /// With a write reserve for one bucket.
    pub fn with_bucket_write_reserve(mut self, bucket: impl Into<String>, reserve: Share) -> Self {
        self.write_reserve_by_bucket.insert(bucket.into(), reserve);
        self
    }

    /// With another bound on keys per per-object bucket (at least 1).
    pub fn with_max_keys_per_bucket(mut self, max: usize) -> Self {
        self.max_keys_per_bucket = max.max(1);
        self
    }

    /// The write reserve in force for `bucket`.
    pub fn write_reserve_for(&self, bucket: &str) -> Share {
        self.write_reserve_by_bucket.get(bucket).copied().unwrap_or(self.write_reserve)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_round_down_and_clamp() {
        assert_eq!(Share::percent(75).of(200), 150);
        assert_eq!(Share::percent(75).of(30), 22);
        assert_eq!(Share::percent(30).of(150), 45);
        assert_eq!(Share::percent(250), Share::ALL);
        assert_eq!(Share::permille(5000), Share::ALL);
        assert_eq!(Share::permille(755).to_string(), "75.5%");
        assert_eq!(Share::percent(75).to_string(), "75%");
    }

    #[test]
    fn bucket_overrides_win() {
        let c = BudgetConfig::default().with_bucket_write_reserve("export", Share::NONE);
        assert_eq!(c.write_reserve_for("export"), Share::NONE);
        assert_eq!(c.write_reserve_for("account"), Share::percent(30));
    }
}
