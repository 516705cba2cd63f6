//! Cost of one rate-budget decision (`RateBudget::try_acquire`): a read on one account bucket, a
//! Zendesk-shaped ticket update on three buckets (one per-ticket key among thousands), a refusal,
//! and applying one platform reading.
//!
//! Run: `cargo bench -p deskgate-bench --bench budget`

use criterion::{Criterion, criterion_group, criterion_main};
use deskgate::bindings::{BucketDraw, BucketScope, Lane, PlanLimits, RateBucket, RateObservation};
use deskgate::budget::{BudgetConfig, RateBudget};
use std::hint::black_box;

fn bucket(name: &str, scope: BucketScope, limit: u32, window_ms: u64) -> RateBucket {
    RateBucket { name: name.into(), scope, limit, window_ms, description: String::new() }
}

fn plan() -> PlanLimits {
    PlanLimits {
        plan: "enterprise".into(),
        buckets: vec![
            // Limits far above what the loop spends, so every decision is a grant.
            bucket("account", BucketScope::Account, u32::MAX, 60_000),
            bucket("ticket-update", BucketScope::PerObject, u32::MAX, 600_000),
            bucket("ticket-update-account", BucketScope::Account, u32::MAX, 60_000),
            bucket("incremental-export", BucketScope::Account, 10, 60_000),
        ],
    }
}

fn draw(bucket: &str, key: Option<&str>) -> BucketDraw {
    BucketDraw { bucket: bucket.into(), key: key.map(Into::into), cost: 1 }
}

fn budget(c: &mut Criterion) {
    let mut g = c.benchmark_group("budget");

    let mut b = RateBudget::new(&plan(), BudgetConfig::default());
    let read = [draw("account", None)];
    g.bench_function("try_acquire/read-1-bucket", |bench| {
        bench.iter(|| black_box(b.try_acquire(Lane::Read, black_box(&read), 1_000)).is_ok())
    });

    let mut b = RateBudget::new(&plan(), BudgetConfig::default());
    for t in 0..5_000 {
        let _ = b.try_acquire(Lane::Write, &[draw("ticket-update", Some(&t.to_string()))], 1_000);
    }
    let update = [draw("account", None), draw("ticket-update-account", None), draw("ticket-update", Some("4242"))];
    g.bench_function("try_acquire/update-3-buckets-5000-keys", |bench| {
        bench.iter(|| black_box(b.try_acquire(Lane::Write, black_box(&update), 1_000)).is_ok())
    });

    let mut b = RateBudget::new(&plan(), BudgetConfig::default());
    let export = [draw("incremental-export", None)];
    while b.try_acquire(Lane::Read, &export, 1_000).is_ok() {}
    g.bench_function("try_acquire/refused", |bench| {
        bench.iter(|| black_box(b.try_acquire(Lane::Read, black_box(&export), 1_000)).is_err())
    });

    let mut b = RateBudget::new(&plan(), BudgetConfig::default());
    let reading = RateObservation {
        bucket: "account".into(),
        key: None,
        limit: Some(700),
        remaining: Some(512),
        reset_ms: Some(31_000),
        reset_at: None,
    };
    g.bench_function("observe", |bench| bench.iter(|| b.observe(black_box(&reading), 1_000)));

    g.finish();
}

criterion_group!(benches, budget);
criterion_main!(benches);
