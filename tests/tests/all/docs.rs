//! `docs/writing-an-adapter.md` shows the example adapter's code verbatim, and that code, built
//! as a component by `tests/build.rs`, loads in the host and answers sensibly. (Whether it passes
//! the conformance kit is checked with the kit's tests.)

use deskgate::bindings::{
    Action, ApplyAction, Capability, Failure, HttpRequest, Lane, ListChanged, Method, Operation,
    Outcome, PermissionKind, Resolution, SignatureAlgorithm, Step, TicketStatus,
};
use deskgate::runtime::{Adapter, AdapterRuntime};
use deskgate_tests::{
    EXAMPLE_ACMEDESK, connection, json_response, response, runtime_with, test_config,
};
use std::sync::Arc;

const GUIDE: &str = include_str!("../../../docs/writing-an-adapter.md");
const EXAMPLE_LIB: &str = include_str!("../../../docs/example-adapter/src/lib.rs");
const EXAMPLE_TESTS: &str = include_str!("../../../docs/example-adapter/tests/native.rs");

/// The ```rust block that follows `<!-- file: {file} -->` in the guide.
fn listing<'a>(guide: &'a str, file: &str) -> &'a str {
    let marker = format!("<!-- file: {file} -->\n");
    assert_eq!(
        guide.matches(&marker).count(),
        1,
        "the guide marks {file} exactly once"
    );
    let start = guide
        .find(&marker)
        .map(|i| i + marker.len())
        .unwrap_or_default();
    let block = guide[start..]
        .strip_prefix("```rust\n")
        .unwrap_or_else(|| panic!("`{marker}` must be followed by a ```rust block"));
    let end = block
        .find("\n```\n")
        .unwrap_or_else(|| panic!("the block for {file} is not closed"));
    &block[..=end]
}

fn assert_verbatim(file: &str, source: &str) {
    let shown = listing(GUIDE, file);
    if shown != source {
        let line = shown.lines().zip(source.lines()).position(|(a, b)| a != b);
        let line = line.unwrap_or_else(|| shown.lines().count().min(source.lines().count()));
        panic!(
            "docs/writing-an-adapter.md shows a different {file} (first difference at line {}: \
             {:?} in the guide, {:?} in the file); paste the file into the guide",
            line + 1,
            shown.lines().nth(line),
            source.lines().nth(line),
        );
    }
}

#[test]
fn the_guide_shows_the_example_adapter_verbatim() {
    assert_verbatim("docs/example-adapter/src/lib.rs", EXAMPLE_LIB);
}

#[test]
fn the_guide_shows_the_example_tests_verbatim() {
    assert_verbatim("docs/example-adapter/tests/native.rs", EXAMPLE_TESTS);
}

fn acmedesk() -> (AdapterRuntime, Arc<Adapter>) {
    let rt = runtime_with(test_config(), &[EXAMPLE_ACMEDESK]).expect("the example loads");
    let adapter = rt.get("acmedesk").expect("registered as acmedesk");
    (rt, adapter)
}

const TICKET: &str = r#"{"ticket": {"id": "42", "subject": "Printer on fire", "status": "open",
    "requester_id": "7", "assignee_id": null, "group_id": null, "tags": ["hardware"],
    "created_at": "2024-04-17T17:18:10Z", "updated_at": "2024-04-17T18:00:00Z",
    "replies": [{"id": "r1", "author_id": "1001", "body": "<p>We are on it.</p>", "public": true,
                 "created_at": "2024-04-17T17:30:00Z"}]}}"#;

fn request(step: Result<Result<Step, Failure>, impl std::fmt::Debug>) -> (HttpRequest, String) {
    match step {
        Ok(Ok(Step::Send(p))) => (p.request, p.state),
        other => panic!("expected a request, got {other:?}"),
    }
}

fn outcome(step: Result<Result<Step, Failure>, impl std::fmt::Debug>) -> Outcome {
    match step {
        Ok(Ok(Step::Done(o))) => o,
        other => panic!("expected an outcome, got {other:?}"),
    }
}

fn body(req: &HttpRequest) -> serde_json::Value {
    serde_json::from_slice(req.body.as_deref().expect("a body")).expect("a JSON body")
}

#[test]
fn the_example_describes_acmedesk() {
    let (_rt, acme) = acmedesk();
    let d = acme.descriptor();
    assert_eq!(
        (d.id.as_str(), d.name.as_str(), d.default_plan.as_str()),
        ("acmedesk", "AcmeDesk", "standard")
    );
    assert_eq!(d.plans.len(), 1);
    assert_eq!(d.plans[0].buckets.len(), 1);
    assert_eq!(
        (
            d.plans[0].buckets[0].name.as_str(),
            d.plans[0].buckets[0].limit
        ),
        ("account", 300)
    );
    for cap in Capability::ALL {
        assert!(
            d.capabilities.iter().any(|c| c.capability == cap),
            "{cap:?} is declared"
        );
    }
    assert_eq!(d.idempotent_actions, ["reply"]);
    assert_eq!(d.webhook.algorithm, SignatureAlgorithm::HmacSha256Hex);
    assert!(!d.atomic_resolution);
}

#[test]
fn the_example_reads_tickets_and_pages() {
    let (_rt, acme) = acmedesk();
    let conn = connection("standard");
    let op = Operation::GetTicket("42".into());
    let (req, state) = request(acme.start(&conn, &op));
    assert_eq!(
        (req.method, req.path.as_str(), req.lane),
        (Method::Get, "/api/tickets/42", Lane::Read)
    );
    assert_eq!(req.draws.len(), 1);
    assert_eq!(
        (req.draws[0].bucket.as_str(), req.draws[0].cost),
        ("account", 1)
    );
    let Outcome::Ticket(t) = outcome(acme.resume(&conn, &op, &state, &json_response(200, TICKET)))
    else {
        panic!("get-ticket gives a ticket");
    };
    assert_eq!(
        (t.id.as_str(), t.status, t.raw_status.as_str()),
        ("42", TicketStatus::Open, "open")
    );
    assert_eq!((t.created_at, t.comments.len()), (1_713_374_290_000, 1));

    // Ids go into the path, so a path-like id is refused rather than sent.
    let refused = acme.start(&conn, &Operation::GetTicket("../admin".into()));
    assert!(
        matches!(refused, Ok(Err(Failure::Invalid(_)))),
        "{refused:?}"
    );

    let op = Operation::ListChanged(ListChanged {
        since: 1_700_000_000_123,
        cursor: Some("a b/c".into()),
    });
    let (req, state) = request(acme.start(&conn, &op));
    assert_eq!(
        req.path,
        "/api/tickets?updated_since=1700000000&cursor=a%20b%2Fc"
    );
    let page = format!(
        r#"{{"tickets": [{}], "next_cursor": "next"}}"#,
        &TICKET[11..TICKET.len() - 1]
    );
    let Outcome::Page(p) = outcome(acme.resume(&conn, &op, &state, &json_response(200, &page)))
    else {
        panic!("list-changed gives a page");
    };
    assert_eq!(
        (p.tickets.len(), p.next_cursor.as_deref()),
        (1, Some("next"))
    );

    let (req, _) = request(acme.start(&conn, &Operation::ListOpen(None)));
    assert_eq!(req.path, "/api/tickets?status=unresolved");
}

#[test]
fn the_example_classifies_failures() {
    let (_rt, acme) = acmedesk();
    let conn = connection("standard");
    let op = Operation::GetTicket("42".into());
    let (_, state) = request(acme.start(&conn, &op));
    let fail = |resp| match acme.resume(&conn, &op, &state, &resp) {
        Ok(Err(f)) => f,
        other => panic!("expected a failure, got {other:?}"),
    };
    let f = fail(json_response(
        401,
        r#"{"error": {"code": "token_revoked", "message": "Revoked"}}"#,
    ));
    assert!(
        matches!(&f, Failure::Unauthenticated(d) if d.code == "token_revoked" && d.message == "Revoked"),
        "{f:?}"
    );
    let f = fail(json_response(
        403,
        r#"{"error": {"code": "missing_scope", "message": "No", "required_scope": "tickets:write"}}"#,
    ));
    assert!(
        matches!(&f, Failure::Forbidden(d) if d.kind == PermissionKind::Scope && d.missing == "tickets:write"
            && d.remediation.contains("API tokens")),
        "{f:?}"
    );
    let f = fail(json_response(
        403,
        r#"{"error": {"code": "insufficient_role", "message": "No"}}"#,
    ));
    assert!(
        matches!(&f, Failure::Forbidden(d) if d.kind == PermissionKind::Role),
        "{f:?}"
    );
    let f = fail(response(
        403,
        &[("content-type", "text/html")],
        "<h1>Forbidden</h1>",
    ));
    assert!(matches!(&f, Failure::Forbidden(_)), "{f:?}");
    let f = fail(response(429, &[("retry-after", "7")], "slow down"));
    assert!(
        matches!(&f, Failure::RateLimited(d) if d.retry_after_ms == Some(7000)),
        "{f:?}"
    );
    let f = fail(response(429, &[("x-ratelimit-reset", "12")], ""));
    assert!(
        matches!(&f, Failure::RateLimited(d) if d.retry_after_ms == Some(12_000)),
        "{f:?}"
    );
    assert!(matches!(fail(response(404, &[], "")), Failure::NotFound(_)));
    assert!(matches!(fail(response(422, &[], "")), Failure::Invalid(_)));
    assert!(matches!(
        fail(response(503, &[], "")),
        Failure::Transient(_)
    ));
    // A 200 the adapter cannot read is a failure, never a trap.
    assert!(matches!(
        fail(json_response(200, "[1, 2]")),
        Failure::Permanent(_)
    ));
    let garbage = acme.resume(&conn, &op, "not a state", &json_response(200, TICKET));
    assert!(
        matches!(garbage, Ok(Err(Failure::Permanent(_)))),
        "{garbage:?}"
    );

    let seen = acme
        .observe(
            &conn,
            &response(
                200,
                &[
                    ("x-ratelimit-limit", "300"),
                    ("x-ratelimit-remaining", "12"),
                    ("x-ratelimit-reset", "30"),
                ],
                "",
            ),
        )
        .expect("observe");
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (
            seen[0].bucket.as_str(),
            seen[0].limit,
            seen[0].remaining,
            seen[0].reset_ms
        ),
        ("account", Some(300), Some(12), Some(30_000))
    );
    assert!(
        acme.observe(&conn, &response(200, &[], ""))
            .expect("observe")
            .is_empty()
    );
}

#[test]
fn the_example_writes_and_resolves_in_two_requests() {
    let (_rt, acme) = acmedesk();
    let conn = connection("standard");

    let reply = Operation::Apply(ApplyAction {
        ticket_id: "42".into(),
        action: Action::Reply("Fixed.".into()),
    });
    let (req, state) = request(acme.start(&conn, &reply));
    assert_eq!(
        (req.method, req.path.as_str(), req.lane),
        (Method::Post, "/api/tickets/42/replies", Lane::Write)
    );
    assert_eq!(req.idempotency_header.as_deref(), Some("Idempotency-Key"));
    assert_eq!(
        body(&req),
        serde_json::json!({"body": "Fixed.", "public": true})
    );
    let created = r#"{"reply": {"id": "r9", "author_id": "1001", "body": "Fixed.", "public": true, "created_at": "2024-04-17T18:00:00Z"}}"#;
    let Outcome::Written(w) =
        outcome(acme.resume(&conn, &reply, &state, &json_response(201, created)))
    else {
        panic!("a reply gives a receipt");
    };
    assert_eq!(
        (w.reference.as_deref(), w.applied.as_slice()),
        (Some("r9"), ["reply".to_string()].as_slice())
    );

    let resolve = Operation::Apply(ApplyAction {
        ticket_id: "42".into(),
        action: Action::Resolve(Resolution {
            reply: "Fixed.".into(),
            status: TicketStatus::Solved,
            tags: vec!["auto".into()],
            assignee: None,
        }),
    });
    let (req, state) = request(acme.start(&conn, &resolve));
    assert_eq!(
        (req.method, req.path.as_str()),
        (Method::Post, "/api/tickets/42/replies")
    );
    assert_eq!(
        req.idempotency_header, None,
        "only a lone reply is declared idempotent"
    );
    let (patch, patched) =
        request(acme.resume(&conn, &resolve, &state, &json_response(201, created)));
    assert_eq!(
        (patch.method, patch.path.as_str(), patch.lane),
        (Method::Patch, "/api/tickets/42", Lane::Write)
    );
    assert_eq!(
        body(&patch),
        serde_json::json!({"status": "solved", "add_tags": ["auto"]})
    );
    let solved = TICKET.replace(r#""status": "open""#, r#""status": "solved""#);
    let Outcome::Written(w) =
        outcome(acme.resume(&conn, &resolve, &patched, &json_response(200, &solved)))
    else {
        panic!("a resolution gives a receipt");
    };
    assert_eq!(w.applied, ["reply", "set-status", "add-tags"]);
    assert!(w.failed.is_none() && w.ticket.is_some_and(|t| t.status == TicketStatus::Solved));

    // The PATCH fails after the reply landed: a receipt saying so, not a failure.
    let Outcome::Written(w) =
        outcome(acme.resume(&conn, &resolve, &patched, &response(503, &[], "")))
    else {
        panic!("a half-landed resolution gives a receipt");
    };
    assert_eq!(w.applied, ["reply"]);
    let failed = w.failed.expect("the failed part");
    assert_eq!(
        (failed.part.as_str(), failed.skipped.as_slice()),
        ("set-status", ["add-tags".to_string()].as_slice())
    );
    assert!(matches!(failed.failure, Failure::Transient(_)));
}

#[test]
fn the_example_probes_and_reads_back() {
    let (_rt, acme) = acmedesk();
    let conn = connection("standard");
    let me = r#"{"id": "1001", "name": "Ada", "email": "ada@example.com", "role": "agent",
                 "scopes": ["tickets:read", "tickets:write"]}"#;

    let op = Operation::WhoAmI;
    let (req, state) = request(acme.start(&conn, &op));
    assert_eq!(req.path, "/api/me");
    let Outcome::Identity(id) = outcome(acme.resume(&conn, &op, &state, &json_response(200, me)))
    else {
        panic!("who-am-i gives an identity");
    };
    assert_eq!(
        (id.agent_id.as_str(), id.scopes.map(|s| s.len())),
        ("1001", Some(2))
    );

    let op = Operation::Probe(Capability::ALL.to_vec());
    let (_, state) = request(acme.start(&conn, &op));
    let Outcome::Probed(results) =
        outcome(acme.resume(&conn, &op, &state, &json_response(200, me)))
    else {
        panic!("probe gives results");
    };
    let granted: Vec<_> = results.iter().map(|r| (r.capability, r.granted)).collect();
    assert_eq!(
        granted,
        [
            (Capability::ReadTickets, true),
            (Capability::PublicReply, false),
            (Capability::SetStatus, true),
            (Capability::AddTags, true),
            (Capability::Assign, true),
        ]
    );
    assert!(
        matches!(&results[1].failure, Some(Failure::Forbidden(d)) if d.missing == "replies:write")
    );

    let op = Operation::ReadBack(ApplyAction {
        ticket_id: "42".into(),
        action: Action::Reply("We are on it.".into()),
    });
    let (req, state) = request(acme.start(&conn, &op));
    assert_eq!(
        (req.path.as_str(), req.lane),
        ("/api/tickets/42", Lane::Read)
    );
    let Outcome::ReadBack(rb) =
        outcome(acme.resume(&conn, &op, &state, &json_response(200, TICKET)))
    else {
        panic!("read-back gives a result");
    };
    assert!(rb.landed && rb.parts_landed == ["reply"], "{rb:?}");
    let op = Operation::ReadBack(ApplyAction {
        ticket_id: "42".into(),
        action: Action::SetStatus(TicketStatus::Solved),
    });
    let (_, state) = request(acme.start(&conn, &op));
    let Outcome::ReadBack(rb) =
        outcome(acme.resume(&conn, &op, &state, &json_response(200, TICKET)))
    else {
        panic!("read-back gives a result");
    };
    assert!(!rb.landed && rb.parts_landed.is_empty(), "{rb:?}");
}

#[test]
fn the_example_parses_webhooks() {
    let (_rt, acme) = acmedesk();
    let conn = connection("standard");
    let body = format!(
        r#"{{"id": "evt_1", "type": "ticket.status_changed", "created_at": "2024-04-17T18:00:00Z", {}}}"#,
        &TICKET[1..TICKET.len() - 1]
    );
    let headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("x-acme-signature".to_string(), "ab12".to_string()),
        ("x-acme-timestamp".to_string(), "1713376800".to_string()),
    ];
    let hook = acme
        .parse_webhook(&conn, &headers, body.as_bytes())
        .expect("no trap")
        .expect("parses");
    let sig = hook.signature.expect("signed");
    assert_eq!(
        (sig.algorithm, sig.provided.as_str(), sig.timestamp),
        (
            SignatureAlgorithm::HmacSha256Hex,
            "ab12",
            Some(1_713_376_800_000)
        )
    );
    assert_eq!(sig.signed, format!("1713376800.{body}").into_bytes());
    assert_eq!(hook.events.len(), 1);
    let e = &hook.events[0];
    assert_eq!(
        (e.event_id.as_deref(), e.ticket_id.as_str(), e.kind.as_str()),
        (Some("evt_1"), "42", "status-changed")
    );
    assert!(e.ticket.is_some());

    // Unsigned: no signature is claimed; garbage: refused, not a trap.
    let unsigned = acme
        .parse_webhook(&conn, &headers[..1], body.as_bytes())
        .expect("no trap")
        .expect("parses");
    assert!(unsigned.signature.is_none());
    let garbage = acme
        .parse_webhook(&conn, &headers, b"{not json")
        .expect("no trap");
    assert!(matches!(garbage, Err(Failure::Invalid(_))), "{garbage:?}");
}
