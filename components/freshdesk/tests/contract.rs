//! The adapter through the `Guest` trait, as the host calls it: contract-wide properties that no
//! single module owns (every draw names a declared bucket, every path is relative, states parse,
//! outputs are deterministic) and one resolution end to end.

use deskgate_adapter_freshdesk::FreshdeskAdapter as A;
use deskgate_adapter_sdk::prelude::*;

fn conn() -> Connection {
    Connection {
        id: "c".into(),
        plan: "growth".into(),
        agent_id: Some("80002222".into()),
        settings: vec![],
    }
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn resp(status: u16, body: Vec<u8>) -> HttpResponse {
    HttpResponse {
        status,
        headers: vec![("x-ratelimit-remaining".into(), "5".into())],
        body,
    }
}

fn ops() -> Vec<Operation> {
    let resolution = Resolution {
        reply: "Thanks, fixed.".into(),
        status: TicketStatus::Solved,
        tags: vec!["fixed".into()],
        assignee: Some(Assignee {
            agent_id: Some("1".into()),
            group_id: Some("2".into()),
        }),
    };
    let apply = |action: Action| ApplyAction {
        ticket_id: "4711".into(),
        action,
    };
    vec![
        Operation::GetTicket("4711".into()),
        Operation::ListChanged(ListChanged {
            since: 1_700_000_000_000,
            cursor: None,
        }),
        Operation::ListOpen(None),
        Operation::WhoAmI,
        Operation::Apply(apply(Action::Reply("hi".into()))),
        Operation::Apply(apply(Action::SetStatus(TicketStatus::OnHold))),
        Operation::Apply(apply(Action::AddTags(vec!["a".into()]))),
        Operation::Apply(apply(Action::Assign(Assignee {
            agent_id: Some("1".into()),
            group_id: None,
        }))),
        Operation::Apply(apply(Action::Resolve(resolution.clone()))),
        Operation::Probe(vec![
            Capability::ReadTickets,
            Capability::PublicReply,
            Capability::SetStatus,
            Capability::AddTags,
            Capability::Assign,
        ]),
        Operation::ReadBack(apply(Action::Resolve(resolution))),
        Operation::ReadBack(apply(Action::Reply("hi".into()))),
    ]
}

/// A 2xx body plausible for any request of this adapter.
fn answer(req: &HttpRequest) -> HttpResponse {
    let p = req.path.as_str();
    let body = if p.starts_with("/api/v2/agents/me") {
        fixture("agent_me.json")
    } else if p.starts_with("/api/v2/search/") {
        fixture("search_tickets.json")
    } else if p.contains("/conversations") {
        fixture("conversations.json")
    } else if p.ends_with("/reply") {
        fixture("reply_201.json")
    } else if p.starts_with("/api/v2/tickets?") {
        b"[]".to_vec()
    } else if matches!(req.method, Method::Delete) {
        Vec::new()
    } else {
        fixture("ticket.json")
    };
    resp(200, body)
}

/// Run `op` to the end against `answer`, checking each request on the way.
fn run(op: &Operation) -> (Vec<HttpRequest>, Result<Outcome, Failure>) {
    let d = A::describe();
    let mut seen = Vec::new();
    let mut step = A::start(conn(), op.clone());
    loop {
        match step {
            Ok(Step::Send(p)) => {
                let req = p.request;
                assert!(req.path.starts_with("/api/v2/"), "{}", req.path);
                assert!(!req.path.contains("://"));
                assert!(!req.draws.is_empty(), "{} draws nothing", req.path);
                for plan in &d.plans {
                    for draw in &req.draws {
                        assert!(
                            plan.buckets.iter().any(|b| b.name == draw.bucket),
                            "{} draws undeclared bucket {} on plan {}",
                            req.path,
                            draw.bucket,
                            plan.plan
                        );
                        assert_eq!(draw.cost, 1);
                        assert_eq!(draw.key, None);
                    }
                }
                assert!(
                    req.idempotency_header.is_none(),
                    "Freshdesk honours no idempotency header"
                );
                serde_json::from_str::<serde_json::Value>(&p.state).expect("state is JSON");
                let r = answer(&req);
                seen.push(req);
                step = A::resume(conn(), op.clone(), p.state, r);
            }
            Ok(Step::Done(o)) => return (seen, Ok(o)),
            Err(f) => return (seen, Err(f)),
        }
        assert!(seen.len() < 30, "operation does not end");
    }
}

#[test]
fn every_operation_runs_to_an_outcome_with_declared_buckets() {
    for op in ops() {
        let (seen, out) = run(&op);
        assert!(!seen.is_empty());
        assert!(out.is_ok(), "{op:?}: {out:?}");
    }
}

#[test]
fn write_actions_use_the_write_lane_and_reads_the_read_lane() {
    for op in ops() {
        let (seen, _) = run(&op);
        for req in seen {
            let is_write = matches!(req.lane, Lane::Write);
            match &op {
                Operation::Apply(_) => assert!(is_write, "{op:?}: {}", req.path),
                Operation::Probe(_) => {
                    assert_eq!(is_write, !matches!(req.method, Method::Get), "{}", req.path)
                }
                _ => assert!(!is_write, "{op:?}: {}", req.path),
            }
        }
    }
}

#[test]
fn outputs_are_deterministic() {
    for op in ops() {
        let a = format!("{:?}", run(&op));
        let b = format!("{:?}", run(&op));
        assert_eq!(a, b);
    }
    assert_eq!(
        format!("{:?}", A::describe()),
        format!("{:?}", A::describe())
    );
}

#[test]
fn resolution_end_to_end() {
    let op = &ops()[8];
    let (seen, out) = run(op);
    let lines: Vec<String> = seen
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                match r.method {
                    Method::Get => "GET",
                    Method::Post => "POST",
                    Method::Put => "PUT",
                    _ => "?",
                },
                r.path
            )
        })
        .collect();
    assert_eq!(
        lines,
        vec![
            "GET /api/v2/tickets/4711",
            "POST /api/v2/tickets/4711/reply",
            "PUT /api/v2/tickets/4711"
        ]
    );
    let put: serde_json::Value = serde_json::from_slice(seen[2].body.as_ref().unwrap()).unwrap();
    assert_eq!(
        put,
        serde_json::json!({"status": 4, "tags": ["hardware", "urgent", "fixed"], "responder_id": 1, "group_id": 2})
    );
    match out.unwrap() {
        Outcome::Written(w) => {
            assert_eq!(w.applied, vec!["reply", "set-status", "add-tags", "assign"]);
            assert!(w.failed.is_none());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn observe_and_webhook_through_the_trait() {
    let o = A::observe(
        conn(),
        HttpResponse {
            status: 200,
            headers: vec![
                ("x-ratelimit-total".into(), "200".into()),
                ("x-ratelimit-remaining".into(), "150".into()),
            ],
            body: vec![],
        },
    );
    assert_eq!(o.len(), 1);
    assert_eq!((o[0].limit, o[0].remaining), (Some(200), Some(150)));

    let w = A::parse_webhook(
        conn(),
        vec![("x-deskgate-webhook-token".into(), "s3cret".into())],
        fixture("webhook_template.json"),
    )
    .unwrap();
    assert_eq!(w.signature.unwrap().provided, "s3cret");
    assert_eq!(w.events[0].ticket_id, "4711");
    assert!(matches!(
        A::parse_webhook(conn(), vec![], b"{".to_vec()),
        Err(Failure::Invalid(_))
    ));
}

#[test]
fn resume_with_a_foreign_state_is_a_permanent_failure() {
    let op = Operation::GetTicket("1".into());
    let r = A::resume(
        conn(),
        op,
        "{\"search_page\":1}".into(),
        resp(200, fixture("ticket.json")),
    );
    assert!(matches!(r, Err(Failure::Permanent(m)) if m.contains("corrupt adapter state")));
}

/// A tiny deterministic generator (xorshift), so the garbage test needs no extra dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, pieces: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..(self.next() % 12) {
            match self.next() % 3 {
                0 => out.extend_from_slice(pieces[(self.next() as usize) % pieces.len()]),
                1 => out.push(self.next() as u8),
                _ => out.extend_from_slice(self.next().to_string().as_bytes()),
            }
        }
        out
    }
}

#[test]
fn garbage_never_traps() {
    let pieces: &[&[u8]] = &[
        b"{",
        b"}",
        b"[",
        b"]",
        b"\"",
        b":",
        b",",
        b"null",
        b"\"id\"",
        b"\"status\"",
        b"\"tags\"",
        b"\"updated_at\"",
        b"\"2024-01-01T00:00:00Z\"",
        b"-1",
        b"1e999",
        b"\"results\"",
        b"\"total\"",
        b"\"freshdesk_webhook\"",
        b"\"ticket\"",
        b"\"ticket_id\"",
        b"\"ticket_updated_at\"",
        b"\"Mon, 01 Jan 99999 99:99:99 +9999\"",
        b"\"errors\"",
        b"\"code\"",
        b"\"require_feature\"",
        b"\xff\xfe",
        b"{\"id\":",
    ];
    let statuses = [
        200, 201, 204, 400, 401, 403, 404, 409, 415, 429, 500, 503, 302, 0, 999,
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for op in ops() {
        let Ok(Step::Send(first)) = A::start(conn(), op.clone()) else {
            continue;
        };
        for _ in 0..300 {
            let body = rng.bytes(pieces);
            let status = statuses[(rng.next() as usize) % statuses.len()];
            let h = String::from_utf8_lossy(&rng.bytes(pieces)).into_owned();
            let headers = vec![
                (
                    "link".to_string(),
                    format!("<https://x/y?page={h}>; rel=\"next\""),
                ),
                ("retry-after".to_string(), h.clone()),
                ("x-ratelimit-remaining".to_string(), h.clone()),
                ("x-ratelimit-total".to_string(), h),
            ];
            let r = HttpResponse {
                status,
                headers,
                body,
            };
            let _ = A::resume(conn(), op.clone(), first.state.clone(), r.clone());
            let _ = A::observe(conn(), r.clone());
            let _ = A::parse_webhook(conn(), r.headers.clone(), r.body.clone());
        }
    }
    for _ in 0..2000 {
        let body = rng.bytes(pieces);
        let _ = A::parse_webhook(conn(), vec![], body);
    }
}
