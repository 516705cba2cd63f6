//! What a budget looks like at one instant, for metrics and the dashboard.
//!
//! Plain data, serializable, detached from the budget: taking a snapshot never changes a count.

use serde::Serialize;

use crate::bindings::{BucketScope, Lane};
use crate::clock::Millis;

/// A connection's budget at one instant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetSnapshot {
    /// When it was taken.
    pub at: Millis,
    /// The plan the buckets came from.
    pub plan: String,
    /// One entry per bucket of the plan, in the descriptor's order.
    pub buckets: Vec<BucketSnapshot>,
}

impl BudgetSnapshot {
    /// The entry for `bucket`.
    pub fn bucket(&self, bucket: &str) -> Option<&BucketSnapshot> {
        self.buckets.iter().find(|b| b.bucket == bucket)
    }
}

/// One bucket at one instant. For per-object buckets the counts are the busiest key's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BucketSnapshot {
    /// The bucket's name.
    pub bucket: String,
    /// Account-wide or per object.
    pub scope: BucketScope,
    /// The limit the descriptor states for the plan.
    pub declared_limit: u32,
    /// The limit in force (the platform's latest statement, else the declared one).
    pub limit: u32,
    /// Window length.
    pub window_ms: u64,
    /// Units per window the connection may spend (the target share of `limit`).
    pub target: u64,
    /// The current window, when one is open.
    pub window: Option<(Millis, Millis)>,
    /// Whether the window's boundaries come from the platform's reset readings.
    pub aligned: bool,
    /// Units the platform counted beyond ours in this window (other clients of the account).
    pub others: u64,
    /// Ours plus others in this window.
    pub spent: u64,
    /// `spent / limit`: held at or under the target share unless others overspend.
    pub utilization: f64,
    /// Until when a 429 penalty blocks the bucket (or its busiest key), if it does.
    pub blocked_until: Option<Millis>,
    /// The write lane, then the read lane.
    pub lanes: [LaneSnapshot; 2],
    /// Keys tracked (per-object buckets).
    pub keys: usize,
    /// The busiest key (per-object buckets with a live key).
    pub busiest_key: Option<String>,
}

impl BucketSnapshot {
    /// The entry for `lane`.
    pub fn lane(&self, lane: Lane) -> &LaneSnapshot {
        match lane {
            Lane::Write => &self.lanes[0],
            Lane::Read => &self.lanes[1],
        }
    }
}

/// One lane of one bucket.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LaneSnapshot {
    /// Which lane.
    pub lane: Lane,
    /// Units per window the lane may spend (the target for writes, the target less the write
    /// reserve for reads), counting others' spend.
    pub capacity: u64,
    /// Units this lane spent in the window.
    pub used: u64,
    /// Units left for the lane in the window.
    pub available: u64,
    /// Until when the lane can draw nothing here: a penalty, or the window's end once spent.
    pub blocked_until: Option<Millis>,
}
