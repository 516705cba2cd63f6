//! The adapter through the `Guest` trait, as the host and the benchmarks call it.

use deskgate_adapter_intercom::IntercomAdapter;
use deskgate_adapter_sdk::prelude::*;

fn conn() -> Connection {
    Connection {
        id: "c1".to_string(),
        plan: "standard".to_string(),
        agent_id: Some("991267715".to_string()),
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

#[test]
fn describe_names_every_bucket_requests_draw() {
    let d = IntercomAdapter::describe();
    let buckets: Vec<&str> = d.plans[0].buckets.iter().map(|b| b.name.as_str()).collect();
    let Ok(Step::Send(p)) = IntercomAdapter::start(conn(), Operation::WhoAmI) else {
        panic!()
    };
    for draw in &p.request.draws {
        assert!(buckets.contains(&draw.bucket.as_str()), "{draw:?}");
    }
    assert!(d.plans.iter().any(|p| p.plan == d.default_plan));
}

#[test]
fn observe_reads_a_429() {
    let resp = HttpResponse {
        status: 429,
        headers: vec![
            ("x-ratelimit-limit".to_string(), "100".to_string()),
            ("x-ratelimit-remaining".to_string(), "0".to_string()),
            ("x-ratelimit-reset".to_string(), "1487332520".to_string()),
        ],
        body: fixture("error_429.json"),
    };
    let obs = IntercomAdapter::observe(conn(), resp);
    assert_eq!(obs.len(), 1);
    assert_eq!(obs[0].bucket, "app");
    assert_eq!(obs[0].reset_at, Some(1_487_332_520_000));
}

#[test]
fn parse_webhook_through_the_trait() {
    let headers = vec![("x-hub-signature".to_string(), "sha1=abc".to_string())];
    let w = IntercomAdapter::parse_webhook(conn(), headers, fixture("webhook_admin_replied.json"))
        .unwrap();
    assert_eq!(w.signature.map(|s| s.provided), Some("abc".to_string()));
    assert_eq!(w.events.len(), 1);
    assert!(matches!(
        IntercomAdapter::parse_webhook(conn(), Vec::new(), b"{oops".to_vec()),
        Err(Failure::Invalid(_))
    ));
}

/// The host's conformance kit classification cases (`deskgate adapter check`), natively: the
/// first request of every operation, answered with generic error bodies.
#[test]
fn first_steps_classify_generic_errors() {
    let apply = |action| {
        Operation::Apply(ApplyAction {
            ticket_id: "4242".into(),
            action,
        })
    };
    let ops = vec![
        Operation::GetTicket("4242".into()),
        Operation::ListChanged(ListChanged {
            since: 1_700_000_000_000,
            cursor: None,
        }),
        Operation::ListOpen(None),
        apply(Action::Reply("Thanks".into())),
        apply(Action::SetStatus(TicketStatus::Solved)),
        apply(Action::AddTags(vec!["deskgate".into()])),
        apply(Action::Assign(Assignee {
            agent_id: Some("1001".into()),
            group_id: None,
        })),
        apply(Action::Resolve(Resolution {
            reply: "Fixed".into(),
            status: TicketStatus::Solved,
            tags: vec!["x".into()],
            assignee: None,
        })),
        Operation::WhoAmI,
        Operation::ReadBack(ApplyAction {
            ticket_id: "4242".into(),
            action: Action::Reply("x".into()),
        }),
    ];
    type Case = (u16, &'static [(&'static str, &'static str)], &'static str);
    let cases: [Case; 8] = [
        (
            401,
            &[],
            r#"{"error":"invalid_token","message":"Unauthorized"}"#,
        ),
        (401, &[], "Unauthorized"),
        (
            403,
            &[],
            r#"{"error":"Forbidden","message":"You are not authorized to perform this action."}"#,
        ),
        (403, &[], "<html><body>403 Forbidden</body></html>"),
        (429, &[("retry-after", "7")], "Too Many Requests"),
        (500, &[], "<html>Internal Server Error</html>"),
        (502, &[], ""),
        (503, &[("retry-after", "1")], r#"{"error":"unavailable"}"#),
    ];
    for op in ops {
        let Ok(Step::Send(p)) = IntercomAdapter::start(conn(), op.clone()) else {
            panic!("{op:?}")
        };
        for (status, headers, body) in cases {
            let resp = HttpResponse {
                status,
                headers: headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                body: body.as_bytes().to_vec(),
            };
            let r = IntercomAdapter::resume(conn(), op.clone(), p.state.clone(), resp);
            let ok = match (status, &r) {
                (401, Err(Failure::Unauthenticated(_))) => true,
                (403, Err(Failure::Forbidden(_))) => true,
                (429, Err(Failure::RateLimited(d))) => d.retry_after_ms == Some(7000),
                (500..=599, Err(Failure::Transient(_))) => true,
                _ => false,
            };
            assert!(ok, "{op:?} HTTP {status}: {r:?}");
        }
    }
}
