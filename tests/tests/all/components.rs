//! One test per component built by `tests/build.rs`, named after it (`foreach_component!` fails
//! the build when one is missing): each loads in a fresh runtime and describes itself sanely.
//! The deeper tests live in the other modules; the `wrong` component's purpose, failing the
//! conformance kit, is checked by the kit's own tests.

use deskgate::bindings::{Failure, Operation, Step};
use deskgate::runtime::Adapter;
use deskgate_tests::{connection, json_response, response, runtime_with, test_config};
use std::sync::Arc;

deskgate_tests::foreach_component!(assert_test_exists);

fn load(path: &str, id: &str) -> Arc<Adapter> {
    let rt = runtime_with(test_config(), &[path]).expect("the component loads");
    let adapter = rt
        .get(id)
        .unwrap_or_else(|| panic!("{path} registered as {id}"));
    let d = adapter.descriptor();
    assert_eq!(d.id, id);
    assert!(
        d.plans.iter().any(|p| p.plan == d.default_plan),
        "default plan is declared"
    );
    assert_eq!(
        adapter.describe_again().expect("describe again"),
        *d,
        "describe is stable"
    );
    adapter
}

#[test]
fn misbehaving() {
    let adapter = load(deskgate_tests::MISBEHAVING, "misbehaving");
    let step = adapter.start(
        &connection("standard"),
        &Operation::GetTicket("ok-3".into()),
    );
    assert!(matches!(step, Ok(Ok(Step::Send(p))) if p.request.path == "/tickets/3"));
}

#[test]
fn wrong() {
    let adapter = load(deskgate_tests::WRONG, "wrong");
    let conn = connection("standard");
    let op = Operation::GetTicket("4242".into());
    let Ok(Ok(Step::Send(pending))) = adapter.start(&conn, &op) else {
        panic!("wrong plans get-ticket like the example does");
    };
    let classify = |status, body| match adapter.resume(
        &conn,
        &op,
        &pending.state,
        &json_response(status, body),
    ) {
        Ok(Err(f)) => f,
        other => panic!("HTTP {status} should fail the call, got {other:?}"),
    };
    // The deliberate bug, and only that: 403 is treated like 401.
    assert!(matches!(
        classify(
            403,
            r#"{"error":{"code":"missing_scope","required_scope":"tickets:write"}}"#
        ),
        Failure::Unauthenticated(_)
    ));
    assert!(matches!(
        classify(401, r#"{"error":{"code":"invalid_token"}}"#),
        Failure::Unauthenticated(_)
    ));
    assert!(matches!(classify(500, ""), Failure::Transient(_)));
    let limited = adapter.resume(
        &conn,
        &op,
        &pending.state,
        &response(429, &[("retry-after", "7")], ""),
    );
    assert!(matches!(limited, Ok(Err(Failure::RateLimited(r))) if r.retry_after_ms == Some(7000)));
}

#[test]
fn example_acmedesk() {
    let adapter = load(deskgate_tests::EXAMPLE_ACMEDESK, "acmedesk");
    assert_eq!(adapter.descriptor().name, "AcmeDesk");
}
