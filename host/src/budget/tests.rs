//! Behaviour of the budget as a whole (issue #4, behaviours 1-3): the core with a
//! [`ManualClock`]'s times, the gate driven by `tick()`, and properties over any interleaving.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::bindings::{BucketDraw, BucketScope, Lane, PlanLimits, RateBucket, RateLimitedDetail, RateObservation};
use crate::clock::{Clock, ManualClock, Millis};

const MIN: Millis = 60_000;

fn bucket(name: &str, scope: BucketScope, limit: u32, window_ms: u64) -> RateBucket {
    RateBucket { name: name.into(), scope, limit, window_ms, description: String::new() }
}

/// Zendesk's team plan, as its descriptor states it.
fn zendesk_team() -> PlanLimits {
    PlanLimits {
        plan: "team".into(),
        buckets: vec![
            bucket("account", BucketScope::Account, 200, 60_000),
            bucket("ticket-update", BucketScope::PerObject, 30, 600_000),
            bucket("ticket-update-account", BucketScope::Account, 100, 60_000),
        ],
    }
}

fn draw(bucket: &str, key: Option<&str>, cost: u32) -> BucketDraw {
    BucketDraw { bucket: bucket.into(), key: key.map(Into::into), cost }
}

fn read() -> Vec<BucketDraw> {
    vec![draw("account", None, 1)]
}

fn update(ticket: &str) -> Vec<BucketDraw> {
    vec![draw("account", None, 1), draw("ticket-update-account", None, 1), draw("ticket-update", Some(ticket), 1)]
}

fn obs(bucket: &str, limit: Option<u32>, remaining: Option<u32>, reset_ms: Option<u64>) -> RateObservation {
    RateObservation { bucket: bucket.into(), key: None, limit, remaining, reset_ms, reset_at: None }
}

fn budget() -> RateBudget {
    RateBudget::new(&zendesk_team(), BudgetConfig::default())
}

/// How many of `n` acquires succeed at `now`.
fn drain(b: &mut RateBudget, lane: Lane, draws: &[BucketDraw], now: Millis, n: usize) -> usize {
    (0..n).filter(|_| b.try_acquire(lane, draws, now).is_ok()).count()
}

fn not_until(r: Result<Permit, Denied>) -> NotUntil {
    match r {
        Err(Denied::NotUntil(n)) => n,
        other => panic!("expected NotUntil, got {other:?}"),
    }
}

fn poll<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(Waker::noop()))
}

fn ready<F: Future + Unpin>(f: &mut F) -> bool {
    poll(f).is_ready()
}

// ---------------------------------------------------------------------------------------------
// 1. Budgets

#[test]
fn each_bucket_is_held_to_its_target_share_per_window() {
    let mut b = budget();
    // 75% of 200 = 150 per minute; reads may use 150 - 30% = 105 of it.
    assert_eq!(drain(&mut b, Lane::Read, &read(), 0, 500), 105);
    assert_eq!(drain(&mut b, Lane::Write, &read(), 0, 500), 45);
    let wait = not_until(b.try_acquire(Lane::Write, &read(), 59_999));
    assert_eq!(wait.at, MIN);
    assert_eq!(wait.blocked[0].cause, Cause::Window);
    // The window opened on the first draw and rolls a minute later.
    assert_eq!(drain(&mut b, Lane::Write, &read(), MIN, 500), 150);
}

#[test]
fn a_request_draws_on_all_its_buckets_or_none() {
    let mut b = RateBudget::new(&zendesk_team(), BudgetConfig::default());
    // ticket-update-account: 75% of 100 = 75 per minute.
    for i in 0..75 {
        b.try_acquire(Lane::Write, &update(&i.to_string()), 0).unwrap();
    }
    let wait = not_until(b.try_acquire(Lane::Write, &update("x"), 0));
    assert_eq!(wait.blocked.len(), 1);
    assert_eq!(wait.blocked[0].bucket, "ticket-update-account");
    let snap = b.snapshot(0);
    assert_eq!(snap.bucket("account").unwrap().spent, 75, "the refused request drew nothing");
    assert_eq!(b.tracked_keys(), 75, "a refused request leaves no key behind");
}

#[test]
fn another_client_spending_the_account_lowers_our_allowance() {
    let mut b = budget();
    assert_eq!(drain(&mut b, Lane::Read, &read(), 0, 10), 10);
    // The platform says 100 of 200 remain: others spent 90 of what we did not. We may spend only
    // what remains less the 25% (50) we leave to others: 50 more, not the 140 our own count allows.
    b.observe(&obs("account", Some(200), Some(100), Some(30_000)), 1_000);
    let snap = b.snapshot(1_000);
    let account = snap.bucket("account").unwrap();
    assert_eq!((account.others, account.spent), (90, 100));
    assert_eq!(account.window, Some((-29_000, 31_000)), "aligned to the platform's reset");
    assert!(account.aligned);
    // Reads: 105 - 100 = 5 (others spend, so none of the write reserve is released to reads,
    // though half the window is over); writes the rest of the 50.
    assert_eq!(drain(&mut b, Lane::Read, &read(), 1_000, 100), 5);
    assert_eq!(drain(&mut b, Lane::Write, &read(), 1_000, 100), 45);
    // Others spend more: 20 remain. Our allowance is gone until the reset.
    b.observe(&obs("account", None, Some(20), Some(29_000)), 2_000);
    let wait = not_until(b.try_acquire(Lane::Write, &read(), 2_000));
    assert_eq!(wait.at, 31_000);
    // At the platform's reset we start again.
    assert_eq!(drain(&mut b, Lane::Write, &read(), 31_000, 500), 150);
}

#[test]
fn a_response_that_crossed_the_window_boundary_does_not_stall_the_next_window() {
    let mut b = budget();
    for _ in 0..149 {
        b.try_acquire(Lane::Write, &read(), 0).unwrap();
    }
    let late = b.try_acquire(Lane::Write, &read(), 59_990).unwrap();
    // Its response arrives after our window rolled; Zendesk's header carries no reset, and says
    // the (closed) window had 50 left. Charged to the new window, it would stall it.
    let fresh = b.try_acquire(Lane::Read, &read(), MIN).unwrap();
    b.observe_after(&late, &obs("account", Some(200), Some(50), None), MIN + 20);
    assert_eq!(b.snapshot(MIN + 20).bucket("account").unwrap().others, 0);
    // A reading from a request of this window applies: 10 counted, 1 of them ours.
    b.observe_after(&fresh, &obs("account", Some(200), Some(190), None), MIN + 30);
    assert_eq!(b.snapshot(MIN + 30).bucket("account").unwrap().others, 9);
    assert_eq!(drain(&mut b, Lane::Write, &read(), MIN + 30, 500), 140);
}

#[test]
fn per_ticket_cap_is_counted_per_ticket() {
    let mut b = budget();
    let one = vec![draw("ticket-update", Some("42"), 1)];
    let other = vec![draw("ticket-update", Some("43"), 1)];
    // 75% of 30 updates per ticket per 10 minutes = 22.
    assert_eq!(drain(&mut b, Lane::Write, &one, 0, 50), 22);
    let wait = not_until(b.try_acquire(Lane::Write, &one, 1_000));
    assert_eq!(
        wait.blocked,
        vec![Blocked { bucket: "ticket-update".into(), key: Some("42".into()), cause: Cause::Window, until: 600_000 }]
    );
    assert_eq!(drain(&mut b, Lane::Write, &other, 1_000, 50), 22, "another ticket has its own cap");
    assert_eq!(drain(&mut b, Lane::Write, &one, 600_000, 50), 22);
    let snap = b.snapshot(600_000);
    let per_ticket = snap.bucket("ticket-update").unwrap();
    assert_eq!((per_ticket.busiest_key.as_deref(), per_ticket.spent, per_ticket.keys), (Some("42"), 22, 2));
}

#[test]
fn limit_change_is_picked_up_from_observation() {
    let mut b = budget();
    // The account moved to a 400/min plan: the platform states the new limit.
    b.observe(&obs("account", Some(400), Some(400), None), 0);
    assert_eq!(drain(&mut b, Lane::Write, &read(), 0, 1_000), 300);
    let snap = b.snapshot(0);
    let account = snap.bucket("account").unwrap();
    assert_eq!((account.declared_limit, account.limit, account.target), (200, 400, 300));
    // And a downgrade lowers it at once, mid-window.
    b.observe(&obs("account", Some(100), None, None), 1);
    let wait = not_until(b.try_acquire(Lane::Write, &read(), 1));
    assert_eq!(wait.at, MIN);
    assert_eq!(drain(&mut b, Lane::Write, &read(), MIN, 1_000), 75);
    // A limit of 0 is garbage, not a plan.
    b.observe(&obs("account", Some(0), None, None), MIN);
    assert_eq!(b.snapshot(MIN).bucket("account").unwrap().limit, 100);
}

#[test]
fn a_reset_reading_aligns_the_window_to_the_platforms() {
    // Intercom: 1,666 per 10-second window, reset as absolute time.
    let plan = PlanLimits { plan: "all".into(), buckets: vec![bucket("app", BucketScope::Account, 1666, 10_000)] };
    let mut b = RateBudget::new(&plan, BudgetConfig::default());
    let app = vec![draw("app", None, 1)];
    b.try_acquire(Lane::Read, &app, 1_000).unwrap();
    // The platform's window ends at 4_000, not at our 11_000.
    let reading = RateObservation {
        bucket: "app".into(),
        key: None,
        limit: Some(1666),
        remaining: Some(1665),
        reset_ms: None,
        reset_at: Some(4_000),
    };
    assert!(b.observe(&reading, 1_500));
    // 75% of 1666 = 1249 for writes.
    assert_eq!(drain(&mut b, Lane::Write, &app, 2_000, 2_000), 1248);
    assert_eq!(not_until(b.try_acquire(Lane::Write, &app, 2_000)).at, 4_000);
    // The next windows keep the platform's phase.
    let p = b.try_acquire(Lane::Write, &app, 25_000).unwrap();
    assert_eq!((p.drawn[0].window_start, p.drawn[0].window_end), (24_000, 34_000));
}

#[test]
fn idle_keys_are_evicted() {
    let mut b = budget();
    for t in 0..100 {
        b.try_acquire(Lane::Write, &[draw("ticket-update", Some(&t.to_string()), 1)], t).unwrap();
    }
    assert_eq!(b.tracked_keys(), 100);
    assert_eq!(b.evict_idle(599_999), 0, "windows still open");
    assert_eq!(b.evict_idle(600_050), 51, "keys 0..=50 went idle");
    assert_eq!(b.evict_idle(700_000), 49);
    assert_eq!(b.tracked_keys(), 0);
    // A penalized key is not idle until its penalty ends.
    b.penalize(Some("ticket-update"), Some("9"), 800_000);
    assert_eq!(b.evict_idle(700_000), 0);
    assert_eq!(b.evict_idle(800_000), 1);
}

#[test]
fn a_full_key_table_waits_instead_of_forgetting_a_live_count() {
    let mut b = RateBudget::new(&zendesk_team(), BudgetConfig::default().with_max_keys_per_bucket(2));
    let ticket = |k: &str| vec![draw("ticket-update", Some(k), 1)];
    b.try_acquire(Lane::Write, &ticket("a"), 0).unwrap();
    b.try_acquire(Lane::Write, &ticket("b"), 10).unwrap();
    let wait = not_until(b.try_acquire(Lane::Write, &ticket("c"), 20));
    assert_eq!((wait.at, wait.blocked[0].cause), (600_000, Cause::KeyTableFull));
    // Known keys still draw.
    b.try_acquire(Lane::Write, &ticket("a"), 30).unwrap();
    // Once "a" is idle it is evicted to make room.
    b.try_acquire(Lane::Write, &ticket("c"), 600_000).unwrap();
    assert_eq!(b.tracked_keys(), 2);
}

#[test]
fn undeclared_buckets_and_oversized_draws_are_never() {
    let mut b = budget();
    assert_eq!(
        b.try_acquire(Lane::Read, &[draw("search", None, 1)], 0),
        Err(Denied::Never(Never::UnknownBucket("search".into())))
    );
    // 106 is more than the read lane's 105 but within the write lane's 150.
    assert!(matches!(
        b.try_acquire(Lane::Read, &[draw("account", None, 106)], 0),
        Err(Denied::Never(Never::ExceedsCapacity { capacity: 105, .. }))
    ));
    assert!(b.try_acquire(Lane::Write, &[draw("account", None, 106)], 0).is_ok());
}

#[test]
fn a_refund_gives_units_back_within_the_window() {
    let mut b = budget();
    let p = b.try_acquire(Lane::Write, &update("1"), 0).unwrap();
    assert_eq!(p.drawn.len(), 3);
    b.refund(&p, 10);
    assert_eq!(b.snapshot(10).bucket("account").unwrap().spent, 0);
    // A permit from a closed window gives nothing back to the new one.
    let p = b.try_acquire(Lane::Write, &read(), 10).unwrap();
    b.try_acquire(Lane::Write, &read(), MIN + 10).unwrap();
    b.refund(&p, MIN + 10);
    assert_eq!(b.snapshot(MIN + 10).bucket("account").unwrap().spent, 1);
}

#[test]
fn snapshot_reports_each_bucket_and_lane() {
    let mut b = budget();
    drain(&mut b, Lane::Read, &read(), 0, 105);
    drain(&mut b, Lane::Write, &read(), 0, 5);
    let snap = b.snapshot(1_000);
    let a = snap.bucket("account").unwrap();
    assert_eq!((a.limit, a.target, a.spent), (200, 150, 110));
    assert!((a.utilization - 0.55).abs() < 1e-9);
    let (w, r) = (a.lane(Lane::Write), a.lane(Lane::Read));
    assert_eq!((w.capacity, w.used, w.available, w.blocked_until), (150, 5, 40, None));
    // A window on our own phase keeps the whole reserve: the next read waits for the next window.
    assert_eq!((r.capacity, r.used, r.available, r.blocked_until), (105, 105, 0, Some(MIN)));
    let json = serde_json::to_value(&snap).unwrap();
    assert_eq!(json["buckets"][0]["lanes"][1]["capacity"], 105);
}

// ---------------------------------------------------------------------------------------------
// 3. 429s

#[test]
fn penalty_after_429_blocks_both_lanes_until_retry_after_then_clears() {
    let mut b = budget();
    b.try_acquire(Lane::Read, &read(), 0).unwrap();
    let detail = RateLimitedDetail { retry_after_ms: Some(12_000), bucket: Some("account".into()), message: String::new() };
    assert_eq!(b.rate_limited(&read(), &detail, 1_000), 13_000);
    for lane in [Lane::Read, Lane::Write] {
        let wait = not_until(b.try_acquire(lane, &read(), 12_999));
        assert_eq!((wait.at, wait.blocked[0].cause), (13_000, Cause::Penalty));
    }
    assert_eq!(b.snapshot(5_000).bucket("account").unwrap().blocked_until, Some(13_000));
    assert!(b.try_acquire(Lane::Read, &read(), 13_000).is_ok());
    assert!(b.try_acquire(Lane::Write, &read(), 13_000).is_ok());
    assert_eq!(b.snapshot(13_000).bucket("account").unwrap().blocked_until, None);
}

#[test]
fn a_429_without_retry_after_blocks_until_the_window_resets() {
    let mut b = budget();
    b.try_acquire(Lane::Write, &update("7"), 5_000).unwrap();
    let detail = RateLimitedDetail { retry_after_ms: None, bucket: None, message: String::new() };
    // No bucket named: every counter the request drew on, each until its own reset.
    assert_eq!(b.rate_limited(&update("7"), &detail, 6_000), 605_000);
    assert_eq!(not_until(b.try_acquire(Lane::Read, &read(), 64_999)).at, 65_000);
    assert!(b.try_acquire(Lane::Read, &read(), 65_000).is_ok());
    // The per-ticket penalty stays on ticket 7 only.
    assert!(b.try_acquire(Lane::Write, &update("8"), 65_000).is_ok());
    let wait = not_until(b.try_acquire(Lane::Write, &update("7"), 65_000));
    assert_eq!(wait.blocked[0].key.as_deref(), Some("7"));
    assert_eq!(wait.at, 605_000);
}

#[test]
fn a_per_ticket_429_blocks_only_that_ticket() {
    let mut b = budget();
    let detail = RateLimitedDetail { retry_after_ms: None, bucket: Some("ticket-update".into()), message: String::new() };
    b.try_acquire(Lane::Write, &update("7"), 0).unwrap();
    assert_eq!(b.rate_limited(&update("7"), &detail, 1_000), 600_000);
    assert!(b.try_acquire(Lane::Write, &update("8"), 1_000).is_ok());
    assert!(b.try_acquire(Lane::Read, &read(), 1_000).is_ok());
    assert!(b.try_acquire(Lane::Write, &update("7"), 1_000).is_err());
}

// ---------------------------------------------------------------------------------------------
// 2. Lanes, through the gate

fn gate(plan: &PlanLimits, config: BudgetConfig) -> (ManualClock, BudgetGate) {
    let clock = ManualClock::new(0);
    let gate = BudgetGate::new(RateBudget::new(plan, config), Arc::new(clock.clone()));
    (clock, gate)
}

/// Permits per window start: (reads, writes), and the reads still waiting at the end.
type FloodResult = (HashMap<Millis, u64>, HashMap<Millis, u64>, usize);

/// Three minutes in 100 ms rounds: 600 reads a minute (3x the 200 limit), a write every 2 s,
/// every write granted within its round. `aligned`: the platform stated its reset first.
fn flood_three_minutes(aligned: bool) -> FloodResult {
    let (clock, gate) = gate(&zendesk_team(), BudgetConfig::default());
    if aligned {
        gate.observe(&[obs("account", Some(200), Some(200), Some(60_000))]);
    }
    let mut reads = Vec::new();
    let mut read_permits: HashMap<Millis, u64> = HashMap::new();
    let mut write_permits: HashMap<Millis, u64> = HashMap::new();
    for step in 0..1_800 {
        reads.push(gate.acquire(Priority::Read, &read()));
        if step % 20 == 0 {
            let mut w = gate.acquire(Priority::Write, &update(&format!("t{step}")));
            gate.tick();
            // Within one scheduling round, whatever the read queue holds.
            let Poll::Ready(Ok(p)) = poll(&mut w) else { panic!("write waited at step {step}") };
            *write_permits.entry(p.drawn[0].window_start).or_default() += 1;
        }
        gate.tick();
        reads.retain_mut(|r| match poll(r) {
            Poll::Ready(p) => {
                *read_permits.entry(p.unwrap().drawn[0].window_start).or_default() += 1;
                false
            }
            Poll::Pending => true,
        });
        clock.advance(Duration::from_millis(100));
    }
    (read_permits, write_permits, gate.snapshot().waiting.read)
}

#[test]
fn read_flood_at_three_times_the_limit_leaves_writes_a_permit_every_round() {
    // On our own phase: reads get exactly the unreserved share of every window, no more.
    let (reads, writes, waiting) = flood_three_minutes(false);
    assert_eq!(writes.values().sum::<u64>(), 90);
    assert_eq!(reads.len(), 3);
    assert!(reads.values().all(|&n| n == 105), "{reads:?}");
    for (start, r) in &reads {
        assert!(r + writes.get(start).copied().unwrap_or(0) <= 150);
    }
    assert_eq!(waiting, 1_800 - 315);

    // Aligned to the platform: never more than the target (150 of 200) either; the writes' 30 stayed
    // within their reserve of 45, and what they left of it went to the reads as the window ran
    // out, so together they spent at least 95% of the target (on our own phase: 105 + 30 = 90%).
    let (reads, writes, waiting) = flood_three_minutes(true);
    assert_eq!(writes.values().sum::<u64>(), 90);
    assert_eq!(reads.len(), 3);
    for (start, r) in &reads {
        let spent = r + writes.get(start).copied().unwrap_or(0);
        assert!((143..=150).contains(&spent), "window {start}: {spent} spent ({reads:?}, {writes:?})");
    }
    assert_eq!(waiting as u64, 1_800 - reads.values().sum::<u64>());
}

#[test]
fn writes_are_served_before_reads_when_both_wait() {
    let plan = PlanLimits { plan: "p".into(), buckets: vec![bucket("account", BucketScope::Account, 4, 60_000)] };
    // target 3; no reserve, so reads and writes compete for the same 3 units.
    let (clock, gate) = gate(&plan, BudgetConfig::default().with_write_reserve(Share::NONE));
    let d = read();
    let _spent: Vec<_> = (0..3).map(|_| gate.acquire(Priority::Read, &d)).collect();
    let mut r1 = gate.acquire(Priority::Read, &d);
    let mut r2 = gate.acquire(Priority::Read, &d);
    let mut w1 = gate.acquire(Priority::Write, &d);
    let mut w2 = gate.acquire(Priority::Write, &d);
    assert_eq!(gate.snapshot().waiting, Waiting { write_retry: 0, write: 2, read: 2 });
    assert_eq!(gate.next_wake(), Some(MIN));
    clock.set(MIN);
    assert_eq!(gate.tick(), 3);
    assert!(ready(&mut w1) && ready(&mut w2) && ready(&mut r1));
    assert!(!ready(&mut r2), "the read that came first goes first among reads");
}

#[test]
fn write_retries_are_flushed_before_new_writes() {
    let plan = PlanLimits { plan: "p".into(), buckets: vec![bucket("account", BucketScope::Account, 4, 60_000)] };
    let (clock, gate) = gate(&plan, BudgetConfig::default());
    let mut retries: WriteRetryQueue<&str> = WriteRetryQueue::new();
    let d = read();
    // Two writes go out; both meet a 429 with Retry-After 5 s.
    let _a = gate.acquire(Priority::Write, &d);
    let _b = gate.acquire(Priority::Write, &d);
    let detail = RateLimitedDetail { retry_after_ms: Some(5_000), bucket: Some("account".into()), message: String::new() };
    let until = gate.rate_limited(&d, &detail);
    retries.push("42", "reply", until);
    retries.push("42", "solve", until);
    // A new write arrives while the bucket is blocked, before the retries are due.
    let mut new = gate.acquire(Priority::Write, &d);
    assert!(!ready(&mut new));
    clock.set(until);
    // The retries are due: popped in per-ticket order and queued ahead of the new write.
    let first = retries.pop_ready(until).unwrap();
    assert!(retries.pop_ready(until).is_none(), "ticket 42 is closed while its head is out");
    let mut again = gate.acquire(Priority::WriteRetry, &d);
    // One unit is left in the window (3 - 2): it goes to the retry, not the new write.
    assert!(ready(&mut again));
    assert!(!ready(&mut new));
    assert_eq!(first.item, "reply");
    retries.finish(first);
    let second = retries.pop_ready(until).unwrap();
    assert_eq!(second.item, "solve");
    let mut again = gate.acquire(Priority::WriteRetry, &d);
    clock.set(MIN);
    gate.tick();
    assert!(ready(&mut again), "retry first in the next window");
    assert!(ready(&mut new), "then the new write");
}

#[test]
fn a_waiter_blocked_on_one_ticket_does_not_hold_writes_to_others() {
    let (_clock, gate) = gate(&zendesk_team(), BudgetConfig::default());
    gate.penalize(Some("ticket-update"), Some("7"), 10_000);
    let mut seven = gate.acquire(Priority::Write, &update("7"));
    let mut seven_again = gate.acquire(Priority::Write, &update("7"));
    let mut eight = gate.acquire(Priority::Write, &update("8"));
    assert!(!ready(&mut seven) && !ready(&mut seven_again));
    assert!(ready(&mut eight));
    assert_eq!(gate.next_wake(), Some(10_000));
}

#[test]
fn dropping_a_waiter_lets_the_next_go_and_returns_an_unreceived_permit() {
    let plan = PlanLimits { plan: "p".into(), buckets: vec![bucket("account", BucketScope::Account, 2, 60_000)] };
    let (_clock, gate) = gate(&plan, BudgetConfig::default().with_write_reserve(Share::NONE));
    let d = read();
    // target max(1, 1) = 1: the first read is granted at once but never received.
    let granted = gate.acquire(Priority::Read, &d);
    let mut next = gate.acquire(Priority::Read, &d);
    assert!(!ready(&mut next));
    drop(granted);
    assert!(ready(&mut next), "the dropped permit went back and on to the next waiter");
}

#[test]
fn closing_the_gate_ends_every_wait() {
    let plan = PlanLimits { plan: "p".into(), buckets: vec![bucket("account", BucketScope::Account, 1, 60_000)] };
    let (_clock, gate) = gate(&plan, BudgetConfig::default());
    let _first = gate.acquire(Priority::Write, &read());
    let mut waiting = gate.acquire(Priority::Write, &read());
    gate.close();
    assert_eq!(poll(&mut waiting), Poll::Ready(Err(AcquireError::Closed)));
    let mut late = gate.acquire(Priority::Write, &read());
    assert_eq!(poll(&mut late), Poll::Ready(Err(AcquireError::Closed)));
    let mut never = BudgetGate::new(RateBudget::new(&plan, BudgetConfig::default()), Arc::new(ManualClock::new(0)))
        .acquire(Priority::Read, &[draw("nope", None, 1)]);
    assert!(matches!(poll(&mut never), Poll::Ready(Err(AcquireError::Never(Never::UnknownBucket(_))))));
}

/// A sleeper that jumps the manual clock to the wake time instead of sleeping.
struct Jump(ManualClock);

impl Sleeper for Jump {
    fn sleep_until(&self, at: Millis) -> impl Future<Output = ()> + Send {
        let clock = self.0.clone();
        async move {
            if clock.now_ms() < at {
                clock.set(at);
            }
            tokio::task::yield_now().await;
        }
    }
}

#[tokio::test]
async fn drive_wakes_waiters_on_the_injected_clock() {
    let plan = PlanLimits { plan: "p".into(), buckets: vec![bucket("account", BucketScope::Account, 4, 60_000)] };
    let (clock, gate) = gate(&plan, BudgetConfig::default());
    let driver = tokio::spawn({
        let (gate, clock) = (gate.clone(), clock.clone());
        async move { gate.drive(&Jump(clock)).await }
    });
    let mut granted_at = Vec::new();
    for _ in 0..7 {
        granted_at.push(gate.acquire(Priority::Write, &read()).await.unwrap().at);
    }
    assert_eq!(granted_at, vec![0, 0, 0, MIN, MIN, MIN, 2 * MIN]);
    assert_eq!(clock.now_ms(), 2 * MIN, "time moved only to the windows' ends");
    gate.close();
    driver.await.unwrap();
}

#[test]
fn the_layer_builds_one_gate_per_connection_on_its_plan() {
    let layer = BudgetLayer::new(Arc::new(ManualClock::new(0)), BudgetConfig::default());
    let mut enterprise = zendesk_team();
    enterprise.plan = "enterprise".into();
    enterprise.buckets[0].limit = 700;
    let descriptor = crate::bindings::Descriptor {
        id: "zendesk".into(),
        name: "Zendesk Support".into(),
        version: "0".into(),
        auth: vec![],
        plans: vec![zendesk_team(), enterprise],
        default_plan: "team".into(),
        idempotent_actions: vec![],
        capabilities: vec![],
        webhook: crate::bindings::WebhookSpec {
            algorithm: crate::bindings::SignatureAlgorithm::HmacSha256Base64,
            signature_header: String::new(),
            max_age_secs: None,
        },
        atomic_resolution: false,
    };
    let conn = |plan: &str| crate::bindings::Connection {
        id: "c1".into(),
        plan: plan.into(),
        agent_id: None,
        settings: vec![],
    };
    let gate = layer.connect(&conn(""), &descriptor, None).unwrap();
    assert_eq!(gate.plan(), "team");
    assert_eq!(gate.snapshot().budget.bucket("account").unwrap().limit, 200);
    let again = layer.connect(&conn("enterprise"), &descriptor, None).unwrap();
    assert_eq!(again.snapshot().budget.bucket("account").unwrap().limit, 700);
    assert_eq!(gate.plan(), "enterprise", "the same gate, switched");
    let err = layer.connect(&conn("gold"), &descriptor, None).unwrap_err();
    assert!(err.to_string().contains("team"), "{err}");
    assert_eq!(layer.snapshots().len(), 1);
    assert!(layer.disconnect("c1"));
    assert!(gate.is_closed());
    assert!(layer.gate("c1").is_none());
}

// ---------------------------------------------------------------------------------------------
// Properties

#[derive(Debug, Clone)]
enum Op {
    Acquire { write: bool, cost: u32, ticket: Option<u8> },
    Advance(i64),
    Remaining(u32),
    Penalty(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<bool>(), 1u32..4, prop::option::of(0u8..3))
            .prop_map(|(write, cost, ticket)| Op::Acquire { write, cost, ticket }),
        3 => (0i64..3_000).prop_map(Op::Advance),
        1 => (0u32..400).prop_map(Op::Remaining),
        1 => (0i64..3_000).prop_map(Op::Penalty),
    ]
}

proptest! {
    /// Under any interleaving of reads, writes, time, the platform's readings and penalties, no
    /// counter ever grants more than the target in one window, nor reads more than their share.
    #[test]
    fn never_exceeds_target_per_window(
        limit in 1u32..300,
        window in 1u64..5_000,
        target in 1u16..=100,
        reserve in 0u16..=100,
        ops in prop::collection::vec(op(), 1..300),
    ) {
        let plan = PlanLimits {
            plan: "p".into(),
            buckets: vec![
                bucket("account", BucketScope::Account, limit, window),
                bucket("ticket", BucketScope::PerObject, limit / 4 + 1, window * 2),
            ],
        };
        let config = BudgetConfig::default().with_target(Share::percent(target)).with_write_reserve(Share::percent(reserve));
        let mut b = RateBudget::new(&plan, config.clone());
        let mut spent: HashMap<(String, Option<String>, Millis), (u64, u64)> = HashMap::new();
        let mut now: Millis = 1_000;
        for op in ops {
            match op {
                Op::Advance(ms) => now += ms,
                Op::Remaining(r) => { b.observe(&obs("account", None, Some(r), None), now); }
                Op::Penalty(ms) => b.penalize(Some("account"), None, now + ms),
                Op::Acquire { write, cost, ticket } => {
                    let lane = if write { Lane::Write } else { Lane::Read };
                    let mut draws = vec![draw("account", None, cost)];
                    if let Some(t) = ticket {
                        draws.push(draw("ticket", Some(&t.to_string()), 1));
                    }
                    match b.try_acquire(lane, &draws, now) {
                        Ok(p) => for d in p.drawn {
                            let e = spent.entry((d.bucket, d.key, d.window_start)).or_default();
                            if write { e.0 += d.cost } else { e.1 += d.cost }
                        },
                        Err(Denied::NotUntil(wait)) => prop_assert!(wait.at > now, "a wait must end in the future"),
                        Err(Denied::Never(_)) => {}
                    }
                }
            }
        }
        for ((bucket, _, _), (w, r)) in spent {
            let l = if bucket == "account" { limit } else { limit / 4 + 1 };
            let cap = rate::Capacity::of(&config, &bucket, l);
            let target_units = cap.lane(Lane::Write);
            prop_assert!(w + r <= target_units, "{bucket}: {w} + {r} > {target_units}");
        }
    }

    /// Whatever a read flood took, the writes keep the reserve for the rest of the window: when
    /// reads were last granted at `t`, with `w` writes spent, the writes of the rest of the window
    /// still get `min(reserve − w, ⌈reserve · (end − t) / len⌉)` units between them.
    #[test]
    fn reads_never_take_the_reserve_kept_for_the_rest_of_the_window(
        limit in 4u32..300,
        window in 10u64..5_000,
        reserve in 1u16..=100,
        steps in prop::collection::vec((0i64..400, any::<bool>()), 1..300),
    ) {
        let plan = PlanLimits { plan: "p".into(), buckets: vec![bucket("account", BucketScope::Account, limit, window)] };
        let config = BudgetConfig::default().with_write_reserve(Share::percent(reserve));
        let cap = rate::Capacity::of(&config, "account", limit);
        let mut b = RateBudget::new(&plan, config);
        let mut writes: HashMap<Millis, u64> = HashMap::new();
        // The window, kept reserve and writes at the last read grant.
        let mut last_read: Option<(Millis, u64, u64)> = None;
        let mut now: Millis = 1_000;
        for (advance, burst) in steps {
            now += advance;
            let mut granted = 0;
            while b.try_acquire(Lane::Read, &read(), now).is_ok() {
                granted += 1;
            }
            let Some((start, end)) = b.snapshot(now).bucket("account").and_then(|a| a.window) else { continue };
            let spent = writes.get(&start).copied().unwrap_or(0);
            if granted > 0 {
                last_read = Some((start, (cap.reserve * (end - now) as u64).div_ceil(window), spent));
            }
            if !burst {
                continue;
            }
            let owed = match last_read {
                Some((s, kept, at_read)) if s == start => {
                    cap.reserve.saturating_sub(spent).min(kept.saturating_sub(spent - at_read))
                }
                _ => cap.reserve.saturating_sub(spent),
            };
            let mut got = 0;
            while got < owed && b.try_acquire(Lane::Write, &read(), now).is_ok() {
                got += 1;
            }
            *writes.entry(start).or_default() += got;
            prop_assert_eq!(got, owed, "writes {} of reserve {}, {} ms of {} left", spent, cap.reserve, end - now, window);
        }
    }

    /// Against a platform counting in fixed windows of its own phase, with other clients spending
    /// the account unseen: after every response's reading, our own requests never push the
    /// platform's counter past the target, beyond what others spent since the last reading.
    #[test]
    fn our_spend_never_pushes_the_platform_past_the_target(
        limit in 4u32..300,
        window in 100i64..10_000,
        phase in 0i64..10_000,
        ops in prop::collection::vec((0u8..3, 1u32..4, 0i64..2_000), 1..300),
    ) {
        let plan = PlanLimits { plan: "p".into(), buckets: vec![bucket("account", BucketScope::Account, limit, window as u64)] };
        let config = BudgetConfig::default();
        let target = rate::Capacity::of(&config, "account", limit).target;
        let mut b = RateBudget::new(&plan, config);
        // The platform's window: [end - window, end), on its own grid.
        let (mut end, mut count, mut unseen) = (phase % window + 1, 0u64, 0u64);
        let mut now: Millis = 0;
        for (kind, n, dt) in ops {
            now += dt;
            if now >= end {
                end += ((now - end) / window + 1) * window;
                count = 0;
                unseen = 0;
            }
            match kind {
                0 => { count += u64::from(n); unseen += u64::from(n); }
                _ => {
                    let lane = if kind == 1 { Lane::Write } else { Lane::Read };
                    if b.try_acquire(lane, &[draw("account", None, n.min(limit))], now).is_ok() {
                        count += u64::from(n.min(limit));
                        prop_assert!(count <= target + unseen, "platform at {count}, target {target}, unseen {unseen}");
                        let remaining = u64::from(limit).saturating_sub(count) as u32;
                        let reading = RateObservation {
                            bucket: "account".into(), key: None, limit: Some(limit),
                            remaining: Some(remaining), reset_ms: None, reset_at: Some(end),
                        };
                        b.observe(&reading, now);
                        unseen = 0;
                    }
                }
            }
        }
    }
}
