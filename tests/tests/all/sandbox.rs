//! The sandbox: a component that loops, traps or allocates without bound fails that one call with
//! a [`CallError`] naming the adapter and the limit, the next call to the same adapter works, and
//! calls to other adapters (the built-in Zendesk adapter, running in the same runtime) never
//! notice, even while the bad calls are running on other threads.
//!
//! The `misbehaving` component (`tests/components/misbehaving`) misbehaves on `get-ticket` of
//! "loop", "trap" and "hog", and answers "ok-<n>" normally.

use deskgate::bindings::{Operation, Outcome, Step};
use deskgate::runtime::{Adapter, AdapterRuntime, CallError};
use deskgate_tests::{MISBEHAVING, connection, json_response, runtime_with, sandbox_config};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_millis(100);
/// Filling 32 MiB page by page takes the hog some 40-60 ms of CPU, too close to [`DEADLINE`] on a
/// loaded two-core machine: where the memory cap is under test, the deadline is long enough that
/// the cap, not the clock, is what stops the hog.
const HOG_DEADLINE: Duration = Duration::from_secs(2);
const MEMORY_CAP: usize = 32 << 20;
/// What the component panics with on "trap" (its `PANIC_MESSAGE`).
const PANIC_MESSAGE: &str = "misbehaving adapter panicked on purpose";

/// A runtime with the built-in adapters and `misbehaving`, under `deadline` and [`MEMORY_CAP`].
fn runtime(deadline: Duration) -> AdapterRuntime {
    let mut rt = runtime_with(sandbox_config(deadline, MEMORY_CAP), &[MISBEHAVING])
        .expect("misbehaving loads");
    rt.load_builtin().expect("the built-in adapters load");
    rt
}

fn get_ticket(adapter: &Adapter, id: &str) -> Result<Step, CallError> {
    let conn = connection(&adapter.descriptor().default_plan);
    adapter
        .start(&conn, &Operation::GetTicket(id.to_string()))
        .map(|r| r.unwrap_or_else(|f| panic!("{} get-ticket({id}) failed: {f:?}", adapter.id())))
}

/// `ok-<n>` plans `GET /tickets/<n>`, and the 200 becomes ticket `ok-<n>`.
fn assert_ok(adapter: &Adapter, n: usize) {
    let id = format!("ok-{n}");
    let step = get_ticket(adapter, &id).unwrap_or_else(|e| panic!("{id} after misbehaviour: {e}"));
    let Step::Send(pending) = step else {
        panic!("{id}: expected a request, got {step:?}")
    };
    assert_eq!(pending.request.path, format!("/tickets/{n}"));
    let conn = connection("standard");
    let op = Operation::GetTicket(id.clone());
    let done = adapter.resume(&conn, &op, &pending.state, &json_response(200, "{}"));
    assert!(
        matches!(&done, Ok(Ok(Step::Done(Outcome::Ticket(t)))) if t.id == id),
        "{id}: resume gave {done:?}"
    );
}

/// A good call to the built-in Zendesk adapter.
fn assert_zendesk_ok(zendesk: &Adapter, n: usize) {
    let id = (1000 + n).to_string();
    match get_ticket(zendesk, &id) {
        Ok(Step::Send(p)) => assert!(
            p.request.path.starts_with(&format!("/api/v2/tickets/{id}")),
            "zendesk get-ticket({id}) planned {}",
            p.request.path
        ),
        other => panic!("zendesk get-ticket({id}): {other:?}"),
    }
}

#[test]
fn a_loop_hits_the_deadline() {
    let rt = runtime(DEADLINE);
    let adapter = rt.get("misbehaving").expect("loaded");
    let began = Instant::now();
    let err = get_ticket(&adapter, "loop").expect_err("an endless loop cannot succeed");
    let took = began.elapsed();
    assert_eq!(
        err,
        CallError::Deadline {
            adapter: "misbehaving".into(),
            export: "start",
            limit: DEADLINE
        }
    );
    let text = err.to_string();
    assert!(
        text.contains("`misbehaving`") && text.contains("100 ms"),
        "{text}"
    );
    assert!(
        took >= DEADLINE,
        "interrupted after {took:?}, before the deadline"
    );
    assert!(took < DEADLINE * 20, "interrupted only after {took:?}");
    assert_ok(&adapter, 1);
}

#[test]
fn a_panic_is_a_trap_carrying_its_message() {
    let rt = runtime(DEADLINE);
    let adapter = rt.get("misbehaving").expect("loaded");
    let err = get_ticket(&adapter, "trap").expect_err("a panic cannot succeed");
    let CallError::Trap {
        adapter: id,
        export,
        message,
    } = &err
    else {
        panic!("expected a trap, got {err:?}")
    };
    assert_eq!((id.as_str(), *export), ("misbehaving", "start"));
    assert!(
        message.contains(PANIC_MESSAGE),
        "the trap should carry the panic message: {message}"
    );
    let text = err.to_string();
    assert!(
        text.contains("`misbehaving`") && text.contains(PANIC_MESSAGE),
        "{text}"
    );
    assert_ok(&adapter, 2);
}

#[test]
fn a_memory_hog_hits_the_cap() {
    let rt = runtime(HOG_DEADLINE);
    let adapter = rt.get("misbehaving").expect("loaded");
    let err = get_ticket(&adapter, "hog").expect_err("unbounded allocation cannot succeed");
    assert_eq!(
        err,
        CallError::Memory {
            adapter: "misbehaving".into(),
            export: "start",
            cap: MEMORY_CAP
        }
    );
    let text = err.to_string();
    assert!(
        text.contains("`misbehaving`") && text.contains("32 MiB"),
        "{text}"
    );
    assert_ok(&adapter, 3);
}

#[test]
fn failed_calls_are_counted() {
    let rt = runtime(DEADLINE);
    let adapter = rt.get("misbehaving").expect("loaded");
    let before = adapter.stats().call_errors.load(Ordering::Relaxed);
    get_ticket(&adapter, "trap").expect_err("trap");
    get_ticket(&adapter, "hog").expect_err("hog");
    assert_ok(&adapter, 4);
    assert_eq!(
        adapter.stats().call_errors.load(Ordering::Relaxed),
        before + 2
    );
}

/// Decrements the count of running bad threads when dropped.
struct Finished<'a>(&'a AtomicUsize);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Bad calls on three threads; good calls on four others, to the same misbehaving adapter and
/// to the built-in Zendesk adapter, all of which must succeed meanwhile. The deadline here is
/// 1 s rather than 100 ms: seven busy threads share two cores, so any call (a good one, or the
/// hog on its way to the memory cap) can be descheduled for a while, and this test is about
/// isolation, not about the exact limit.
#[test]
fn bad_calls_do_not_disturb_good_ones() {
    const ROUNDS: usize = 2;
    let deadline = Duration::from_secs(1);
    let rt = runtime(deadline);
    let misbehaving = rt.get("misbehaving").expect("loaded");
    let zendesk = rt.get("zendesk").expect("built in");
    let bad_running = AtomicUsize::new(3);
    let bad_started = AtomicBool::new(false);
    let good_calls = AtomicUsize::new(0);

    std::thread::scope(|s| {
        for bad in ["loop", "trap", "hog"] {
            let (adapter, running, started) = (misbehaving.clone(), &bad_running, &bad_started);
            s.spawn(move || {
                // Counts this thread out even if an assertion fails, so the good threads stop and
                // the scope re-raises the panic instead of hanging.
                let _finished = Finished(running);
                started.store(true, Ordering::Release);
                for _ in 0..ROUNDS {
                    let err = get_ticket(&adapter, bad).expect_err("misbehaviour fails the call");
                    let expected = match bad {
                        "loop" => matches!(err, CallError::Deadline { limit, .. } if limit == deadline),
                        "trap" => matches!(&err, CallError::Trap { message, .. } if message.contains(PANIC_MESSAGE)),
                        _ => matches!(err, CallError::Memory { cap: MEMORY_CAP, .. }),
                    };
                    assert!(expected, "{bad}: {err}");
                }
            });
        }
        for worker in 0..4 {
            let (misbehaving, zendesk) = (misbehaving.clone(), zendesk.clone());
            let (running, started, calls) = (&bad_running, &bad_started, &good_calls);
            s.spawn(move || {
                while !started.load(Ordering::Acquire) {
                    std::thread::yield_now();
                }
                let mut n = 0;
                // At least 50 calls each, and keep going until every bad call is over.
                while n < 50 || running.load(Ordering::Acquire) > 0 {
                    if worker % 2 == 0 {
                        assert_zendesk_ok(&zendesk, n);
                    } else {
                        assert_ok(&misbehaving, worker * 100_000 + n);
                    }
                    n += 1;
                }
                calls.fetch_add(n, Ordering::Relaxed);
            });
        }
    });
    assert!(good_calls.load(Ordering::Relaxed) >= 200);
    // Both adapters still work afterwards.
    assert_ok(&misbehaving, 5);
    assert_zendesk_ok(&zendesk, 5);
}
