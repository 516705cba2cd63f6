//! The adapter driven natively through the contract's `Guest` trait, as the host drives it.

use deskgate_adapter_sdk::prelude::*;
use deskgate_adapter_zendesk::ZendeskAdapter;

fn conn() -> Connection {
    Connection {
        id: "c1".into(),
        plan: "enterprise".into(),
        agent_id: Some("7".into()),
        settings: Vec::new(),
    }
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn ok(body: &str) -> HttpResponse {
    HttpResponse {
        status: 200,
        headers: vec![],
        body: body.as_bytes().to_vec(),
    }
}

const TICKET: &str = r#"{"ticket":{"id":42,"status":"solved","subject":"Help","requester_id":5,"assignee_id":7,"group_id":9,"tags":["vip"],"created_at":"2024-04-17T17:18:10Z","updated_at":"2024-04-17T17:20:00Z"},"audit":{"events":[{"id":901,"type":"Comment","public":true,"body":"Thanks, fixed."}]}}"#;

/// Run an operation to completion, answering each request with `answer`; checks that every request
/// draws only on buckets the descriptor declares and keeps to the lane conventions.
fn run(
    op: Operation,
    mut answer: impl FnMut(&HttpRequest) -> HttpResponse,
) -> Result<Outcome, Failure> {
    let d = ZendeskAdapter::describe();
    let plan = d.plans.iter().find(|p| p.plan == d.default_plan).unwrap();
    let mut step = ZendeskAdapter::start(conn(), op.clone())?;
    for _ in 0..20 {
        match step {
            Step::Done(o) => return Ok(o),
            Step::Send(p) => {
                let req = p.request;
                assert!(req.path.starts_with("/api/v2/"), "{}", req.path);
                assert!(!req.draws.is_empty());
                for draw in &req.draws {
                    assert!(
                        plan.buckets.iter().any(|b| b.name == draw.bucket),
                        "{}",
                        draw.bucket
                    );
                }
                if req.method != Method::Get {
                    assert_eq!(req.lane, Lane::Write);
                }
                let resp = answer(&req);
                step = ZendeskAdapter::resume(conn(), op.clone(), p.state, resp)?;
            }
        }
    }
    panic!("operation did not finish");
}

#[test]
fn describe_through_the_trait() {
    let d = ZendeskAdapter::describe();
    assert_eq!(d.id, "zendesk");
    assert!(d.atomic_resolution);
}

#[test]
fn resolve_then_read_back() {
    let action = Action::Resolve(Resolution {
        reply: "Thanks, fixed.".into(),
        status: TicketStatus::Solved,
        tags: vec!["vip".into()],
        assignee: Some(Assignee {
            agent_id: Some("7".into()),
            group_id: Some("9".into()),
        }),
    });
    let a = ApplyAction {
        ticket_id: "42".into(),
        action,
    };
    let mut sent = 0;
    let out = run(Operation::Apply(a.clone()), |req| {
        sent += 1;
        assert_eq!(req.method, Method::Put);
        ok(TICKET)
    })
    .unwrap();
    assert_eq!(sent, 1, "a resolution is one request");
    match out {
        Outcome::Written(w) => {
            assert_eq!(w.applied, ["reply", "set-status", "add-tags", "assign"]);
            assert_eq!(w.reference.as_deref(), Some("901"));
        }
        other => panic!("{other:?}"),
    }
    let comments = String::from_utf8(fixture("comments_desc.json")).unwrap();
    let out = run(Operation::ReadBack(a), |req| {
        assert_eq!(req.lane, Lane::Read);
        if req.path.contains("/comments.json") {
            ok(&comments)
        } else {
            ok(TICKET)
        }
    })
    .unwrap();
    match out {
        Outcome::ReadBack(r) => assert!(r.landed, "{}", r.detail),
        other => panic!("{other:?}"),
    }
}

#[test]
fn sweep_pages_through_the_trait() {
    let first = String::from_utf8(fixture("incremental_page.json")).unwrap();
    let out = run(
        Operation::ListChanged(ListChanged {
            since: 1_580_753_798_000,
            cursor: None,
        }),
        |_| ok(&first),
    )
    .unwrap();
    let Outcome::Page(p) = out else { panic!() };
    let last = String::from_utf8(fixture("incremental_last.json")).unwrap();
    let out = run(
        Operation::ListChanged(ListChanged {
            since: 0,
            cursor: p.next_cursor,
        }),
        |req| {
            assert!(req.path.contains("cursor=MTU4MDc1Mzc5OC4wfHw0MzJ8"));
            ok(&last)
        },
    )
    .unwrap();
    let Outcome::Page(p) = out else { panic!() };
    assert_eq!(p.next_cursor, None);
}

#[test]
fn probe_through_the_trait() {
    let caps = vec![Capability::PublicReply, Capability::ReadTickets];
    let out = run(Operation::Probe(caps.clone()), |req| match req.method {
        Method::Delete => HttpResponse {
            status: 204,
            headers: vec![],
            body: vec![],
        },
        _ => ok(TICKET),
    })
    .unwrap();
    let Outcome::Probed(r) = out else { panic!() };
    assert_eq!(r.iter().map(|c| c.capability).collect::<Vec<_>>(), caps);
    assert!(r.iter().all(|c| c.granted));
}

#[test]
fn failures_observe_and_webhooks_through_the_trait() {
    let err = run(Operation::GetTicket("42".into()), |_| HttpResponse {
        status: 429,
        headers: vec![
            ("retry-after".into(), "1".into()),
            ("content-type".into(), "text/plain".into()),
        ],
        body: fixture("429_account.txt"),
    })
    .unwrap_err();
    assert!(matches!(err, Failure::RateLimited(d) if d.retry_after_ms == Some(1000)));
    let obs = ZendeskAdapter::observe(
        conn(),
        HttpResponse {
            status: 200,
            headers: vec![
                ("x-rate-limit".into(), "700".into()),
                ("x-rate-limit-remaining".into(), "12".into()),
            ],
            body: vec![],
        },
    );
    assert_eq!(obs[0].remaining, Some(12));
    let w = ZendeskAdapter::parse_webhook(
        conn(),
        vec![
            ("x-zendesk-webhook-signature".into(), "sig=".into()),
            (
                "x-zendesk-webhook-signature-timestamp".into(),
                "2024-04-17T17:18:10Z".into(),
            ),
        ],
        fixture("webhook_ticket_created.json"),
    )
    .unwrap();
    assert_eq!(w.events[0].ticket_id, "35436");
    assert!(matches!(
        ZendeskAdapter::parse_webhook(conn(), vec![], b"nope".to_vec()),
        Err(Failure::Invalid(_))
    ));
}
