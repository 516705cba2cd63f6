//! The permission probe.
//!
//! Freshdesk keys carry no scopes to introspect: the only proof that the agent's role allows a
//! thing is doing it. So the probe works on a throwaway ticket raised by the agent themself, never
//! on a customer's:
//!
//! | step | request | proves |
//! |---|---|---|
//! | me | `GET /api/v2/agents/me` (only when the connection does not know its agent yet) | |
//! | create | `POST /api/v2/tickets` `{"subject":"deskgate permission probe",...,"requester_id":<agent>,"tags":["deskgate-probe"]}` | |
//! | read | `GET /api/v2/tickets/{probe}` | read-tickets |
//! | reply | `POST /api/v2/tickets/{probe}/reply` | public-reply |
//! | status | `PUT /api/v2/tickets/{probe}` `{"status":3}` | set-status |
//! | tags | `PUT /api/v2/tickets/{probe}` `{"tags":["deskgate-probe","deskgate-probe-tag"]}` | add-tags |
//! | assign | `PUT /api/v2/tickets/{probe}` `{"responder_id":<agent>}` | assign |
//! | delete | `DELETE /api/v2/tickets/{probe}` (cleanup) | |
//! | list | `GET /api/v2/tickets?per_page=1`, when no probe ticket exists | read-tickets |
//!
//! Only requested capabilities are exercised and reported, in the order asked. When only
//! read-tickets is asked for, no ticket is created (the list call proves it). When creating the
//! probe ticket is refused (401/403), every requested write capability is reported not granted
//! with that failure, and read-tickets falls back to the list call. Any failure of one capability's
//! step (403 of course, but also a 429 or 5xx) is recorded against that capability and the probe
//! carries on, so the probe ticket is always deleted. Failures outside a capability's step (`/me`,
//! creating the probe ticket for reasons other than 401/403) end the probe with that failure.
//! A failed cleanup cannot be reported (the contract has no slot for it); the ticket is tagged
//! `deskgate-probe` so an admin can find it.

use crate::describe::{ACCOUNT, TICKET_CREATE, TICKETS_LIST};
use crate::errors::{Part, classify};
use crate::model::{FdTicket, id_of};
use crate::ops::read::{me_request, parse_identity};
use crate::translate::{
    get_ticket_request, numeric_id, parse_state, put_ticket_request, reply_request, ticket_path,
};
use deskgate_adapter_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Tag on every probe ticket.
pub const PROBE_TAG: &str = "deskgate-probe";
/// Subject of every probe ticket.
pub const PROBE_SUBJECT: &str = "deskgate permission probe";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum ProbeStep {
    Start,
    Me,
    Create,
    Read,
    Reply,
    Status,
    Tags,
    Assign,
    Delete,
    List,
}

/// The order steps run in.
const ORDER: [ProbeStep; 9] = [
    ProbeStep::Me,
    ProbeStep::Create,
    ProbeStep::Read,
    ProbeStep::Reply,
    ProbeStep::Status,
    ProbeStep::Tags,
    ProbeStep::Assign,
    ProbeStep::Delete,
    ProbeStep::List,
];

/// A `failure` that survives the trip through the state string.
use deskgate_adapter_sdk::state::SavedFailure as FailureRepr;

fn cap_key(c: Capability) -> &'static str {
    match c {
        Capability::ReadTickets => "read-tickets",
        Capability::PublicReply => "public-reply",
        Capability::SetStatus => "set-status",
        Capability::AddTags => "add-tags",
        Capability::Assign => "assign",
    }
}

fn is_write(c: Capability) -> bool {
    !matches!(c, Capability::ReadTickets)
}

/// The probe's progress.
#[derive(Debug, Serialize, Deserialize)]
struct ProbeState {
    /// The step whose response comes next (or `Start`).
    step: ProbeStep,
    agent: Option<u64>,
    ticket: Option<u64>,
    /// Capability key, and the failure when not granted.
    results: Vec<(String, Option<FailureRepr>)>,
}

impl ProbeState {
    fn record(&mut self, cap: Capability, failure: Option<Failure>) {
        let key = cap_key(cap).to_string();
        self.results.retain(|(k, _)| *k != key);
        self.results
            .push((key, failure.as_ref().map(FailureRepr::from)));
    }

    fn has(&self, cap: Capability) -> bool {
        self.results.iter().any(|(k, _)| k == cap_key(cap))
    }
}

/// The capability a step proves.
fn proves(step: ProbeStep) -> Option<Capability> {
    match step {
        ProbeStep::Read | ProbeStep::List => Some(Capability::ReadTickets),
        ProbeStep::Reply => Some(Capability::PublicReply),
        ProbeStep::Status => Some(Capability::SetStatus),
        ProbeStep::Tags => Some(Capability::AddTags),
        ProbeStep::Assign => Some(Capability::Assign),
        _ => None,
    }
}

fn part_of(step: ProbeStep) -> Part {
    match step {
        ProbeStep::Me => Part::WhoAmI,
        ProbeStep::Create => Part::CreateTicket,
        ProbeStep::Read | ProbeStep::List | ProbeStep::Start => Part::ReadTickets,
        ProbeStep::Reply => Part::Reply,
        ProbeStep::Status => Part::SetStatus,
        ProbeStep::Tags => Part::AddTags,
        ProbeStep::Assign => Part::Assign,
        ProbeStep::Delete => Part::DeleteTicket,
    }
}

fn needed(step: ProbeStep, caps: &[Capability], st: &ProbeState) -> bool {
    let wants = |c: Capability| caps.contains(&c);
    let any_write = caps.iter().any(|c| is_write(*c));
    match step {
        ProbeStep::Start => false,
        ProbeStep::Me => any_write && st.agent.is_none(),
        ProbeStep::Create => any_write,
        ProbeStep::Read => wants(Capability::ReadTickets) && st.ticket.is_some(),
        ProbeStep::Reply | ProbeStep::Status | ProbeStep::Tags | ProbeStep::Assign => {
            st.ticket.is_some() && proves(step).is_some_and(wants)
        }
        ProbeStep::Delete => st.ticket.is_some(),
        ProbeStep::List => wants(Capability::ReadTickets) && !st.has(Capability::ReadTickets),
    }
}

fn request(step: ProbeStep, st: &ProbeState) -> Result<HttpRequest, Failure> {
    let ticket = || {
        st.ticket
            .ok_or_else(|| fail::permanent("corrupt adapter state: probe step without a ticket"))
    };
    let agent = || {
        st.agent
            .ok_or_else(|| fail::permanent("corrupt adapter state: probe step without an agent"))
    };
    Ok(match step {
        ProbeStep::Me => me_request(),
        ProbeStep::Create => RequestBuilder::new(Method::Post, "/api/v2/tickets")
            .lane(Lane::Write)
            .draw(ACCOUNT)
            .draw(TICKET_CREATE)
            .json(&json!({
                "subject": PROBE_SUBJECT,
                "description": "<p>Created by deskgate to check what this API key's agent may do. \
                                It is deleted right away; if you can read this, delete it.</p>",
                "requester_id": agent()?,
                "status": 2,
                "priority": 1,
                "tags": [PROBE_TAG],
            }))
            .build(),
        ProbeStep::Read => get_ticket_request(ticket()?, Lane::Read),
        ProbeStep::Reply => reply_request(
            ticket()?,
            "deskgate permission probe: checking that replies are allowed.",
        ),
        ProbeStep::Status => put_ticket_request(ticket()?, &json!({ "status": 3 })),
        ProbeStep::Tags => put_ticket_request(
            ticket()?,
            &json!({ "tags": [PROBE_TAG, "deskgate-probe-tag"] }),
        ),
        ProbeStep::Assign => put_ticket_request(ticket()?, &json!({ "responder_id": agent()? })),
        ProbeStep::Delete => RequestBuilder::new(Method::Delete, ticket_path(ticket()?))
            .lane(Lane::Write)
            .draw(ACCOUNT)
            .build(),
        ProbeStep::List => RequestBuilder::new(Method::Get, "/api/v2/tickets?per_page=1")
            .lane(Lane::Read)
            .draw(ACCOUNT)
            .draw(TICKETS_LIST)
            .build(),
        ProbeStep::Start => return Err(fail::permanent("corrupt adapter state: probe start")),
    })
}

/// Send the first needed step after `st.step`, or finish.
fn advance(caps: &[Capability], mut st: ProbeState) -> Result<Step, Failure> {
    let from = ORDER
        .iter()
        .position(|s| *s == st.step)
        .map_or(0, |i| i + 1);
    for step in &ORDER[from..] {
        if needed(*step, caps, &st) {
            let req = request(*step, &st)?;
            st.step = *step;
            return send(req, &st);
        }
    }
    let results = caps
        .iter()
        .map(|c| {
            let failure = match st.results.iter().find(|(k, _)| k == cap_key(*c)) {
                Some((_, f)) => f.as_ref().map(FailureRepr::to_failure),
                None => Some(fail::permanent("capability was not probed")),
            };
            CapabilityResult {
                capability: *c,
                granted: failure.is_none(),
                failure,
            }
        })
        .collect();
    done(Outcome::Probed(results))
}

/// Plan the probe.
pub fn start(conn: &Connection, caps: &[Capability]) -> Result<Step, Failure> {
    let agent = conn
        .agent_id
        .as_deref()
        .and_then(|a| numeric_id(a, "agent id").ok());
    advance(
        caps,
        ProbeState {
            step: ProbeStep::Start,
            agent,
            ticket: None,
            results: Vec::new(),
        },
    )
}

/// Record one step's response and go on.
pub fn resume(caps: &[Capability], state: &str, resp: &HttpResponse) -> Result<Step, Failure> {
    let mut st: ProbeState = parse_state(state)?;
    let ok = Response::new(resp).is_success();
    let object = match st.ticket {
        Some(t) => format!("probe ticket {t}"),
        None => "probe ticket".to_string(),
    };
    let failure = || classify(resp, part_of(st.step), &object);
    match st.step {
        ProbeStep::Start => {
            return Err(fail::permanent("corrupt adapter state: probe not started"));
        }
        ProbeStep::Me => {
            if !ok {
                return Err(failure());
            }
            let me = parse_identity(resp)?;
            st.agent = Some(numeric_id(&me.agent_id, "agent id").map_err(|_| {
                fail::permanent(format!(
                    "Freshdesk's agent id {:?} is not a number",
                    me.agent_id
                ))
            })?);
        }
        ProbeStep::Create => {
            if ok {
                let t: FdTicket = parse_json(&resp.body, "probe ticket creation")?;
                let id = id_of(&t.id).and_then(|i| i.parse().ok()).ok_or_else(|| {
                    fail::permanent("Freshdesk created the probe ticket but its id is unreadable")
                })?;
                st.ticket = Some(id);
            } else if matches!(resp.status, 401 | 403) {
                let f = failure();
                for c in caps.iter().filter(|c| is_write(**c)) {
                    st.record(*c, Some(f.clone()));
                }
            } else {
                return Err(failure());
            }
        }
        ProbeStep::Delete => {
            // Nothing to report a failed cleanup in; the ticket carries the probe tag.
        }
        step => {
            if let Some(cap) = proves(step) {
                st.record(cap, (!ok).then(failure));
            }
        }
    }
    advance(caps, st)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testkit::*;
    use crate::translate::{resume as tresume, start as tstart};

    const ALL: [Capability; 5] = [
        Capability::ReadTickets,
        Capability::PublicReply,
        Capability::SetStatus,
        Capability::AddTags,
        Capability::Assign,
    ];

    fn created() -> Vec<u8> {
        br#"{"id":555,"subject":"deskgate permission probe","status":2,"requester_id":80002222,"tags":["deskgate-probe"],"created_at":"2024-04-18T09:00:00Z","updated_at":"2024-04-18T09:00:00Z"}"#.to_vec()
    }

    fn probed(out: Outcome) -> Vec<CapabilityResult> {
        match out {
            Outcome::Probed(r) => r,
            other => panic!("{other:?}"),
        }
    }

    /// Drive a probe, answering each request with the response `answer` gives for its path and
    /// method; returns the requests seen and the outcome.
    fn drive(
        c: &Connection,
        caps: &[Capability],
        mut answer: impl FnMut(&HttpRequest) -> HttpResponse,
    ) -> (Vec<HttpRequest>, Result<Outcome, Failure>) {
        let op = Operation::Probe(caps.to_vec());
        let mut seen = Vec::new();
        let mut step = tstart(c, &op);
        loop {
            match step {
                Ok(Step::Send(p)) => {
                    let r = answer(&p.request);
                    seen.push(p.request);
                    step = tresume(c, &op, &p.state, &r);
                }
                Ok(Step::Done(o)) => return (seen, Ok(o)),
                Err(f) => return (seen, Err(f)),
            }
            assert!(seen.len() < 20, "probe does not end");
        }
    }

    fn ok_answer(req: &HttpRequest) -> HttpResponse {
        match (verb(req.method), req.path.as_str()) {
            ("GET", "/api/v2/agents/me") => resp(200, &fixture("agent_me.json")),
            ("POST", "/api/v2/tickets") => resp(201, &created()),
            ("POST", "/api/v2/tickets/555/reply") => resp(201, &fixture("reply_201.json")),
            ("DELETE", _) => resp(204, b""),
            _ => resp(200, &created()),
        }
    }

    #[test]
    fn full_probe_sequence_with_me_lookup() {
        let (seen, out) = drive(&conn(None), &ALL, ok_answer);
        let calls: Vec<String> = seen.iter().map(line).collect();
        assert_eq!(
            calls,
            vec![
                "GET /api/v2/agents/me",
                "POST /api/v2/tickets",
                "GET /api/v2/tickets/555",
                "POST /api/v2/tickets/555/reply",
                "PUT /api/v2/tickets/555",
                "PUT /api/v2/tickets/555",
                "PUT /api/v2/tickets/555",
                "DELETE /api/v2/tickets/555",
            ]
        );
        assert_req(
            &seen[0],
            Method::Get,
            "/api/v2/agents/me",
            Lane::Read,
            &["account"],
        );
        assert_req(
            &seen[1],
            Method::Post,
            "/api/v2/tickets",
            Lane::Write,
            &["account", "ticket-create"],
        );
        let create = body_json(&seen[1]);
        assert_eq!(create["subject"], "deskgate permission probe");
        assert_eq!(create["requester_id"], 80002222u64);
        assert_eq!(create["status"], 2);
        assert_eq!(create["priority"], 1);
        assert_eq!(create["tags"], json!(["deskgate-probe"]));
        assert!(
            create["description"]
                .as_str()
                .is_some_and(|d| !d.is_empty())
        );
        assert_req(
            &seen[2],
            Method::Get,
            "/api/v2/tickets/555",
            Lane::Read,
            &["account"],
        );
        assert_req(
            &seen[3],
            Method::Post,
            "/api/v2/tickets/555/reply",
            Lane::Write,
            &["account"],
        );
        assert!(
            body_json(&seen[3])["body"]
                .as_str()
                .unwrap()
                .starts_with("<p>")
        );
        for r in &seen[4..7] {
            assert_req(
                r,
                Method::Put,
                "/api/v2/tickets/555",
                Lane::Write,
                &["account", "ticket-update"],
            );
        }
        assert_eq!(body_json(&seen[4]), json!({"status": 3}));
        assert_eq!(
            body_json(&seen[5]),
            json!({"tags": ["deskgate-probe", "deskgate-probe-tag"]})
        );
        assert_eq!(body_json(&seen[6]), json!({"responder_id": 80002222u64}));
        assert_req(
            &seen[7],
            Method::Delete,
            "/api/v2/tickets/555",
            Lane::Write,
            &["account"],
        );
        let results = probed(out.unwrap());
        assert_eq!(results.len(), 5);
        for (r, c) in results.iter().zip(ALL) {
            assert_eq!(r.capability, c);
            assert!(r.granted, "{r:?}");
            assert!(r.failure.is_none());
        }
    }

    #[test]
    fn known_agent_skips_me_and_order_follows_request() {
        let caps = [Capability::Assign, Capability::PublicReply];
        let (seen, out) = drive(&conn(Some("77")), &caps, ok_answer);
        let paths: Vec<String> = seen.iter().map(line).collect();
        assert_eq!(
            paths,
            vec![
                "POST /api/v2/tickets",
                "POST /api/v2/tickets/555/reply",
                "PUT /api/v2/tickets/555",
                "DELETE /api/v2/tickets/555"
            ]
        );
        assert_eq!(body_json(&seen[0])["requester_id"], 77);
        assert_eq!(body_json(&seen[2]), json!({"responder_id": 77}));
        let results = probed(out.unwrap());
        assert_eq!(
            results.iter().map(|r| r.capability).collect::<Vec<_>>(),
            caps.to_vec()
        );
        assert!(results.iter().all(|r| r.granted));
    }

    #[test]
    fn forbidden_mid_probe_is_recorded_and_cleanup_still_runs() {
        let (seen, out) = drive(&conn(Some("77")), &ALL, |req| {
            if verb(req.method) == "PUT" && body_json(req).get("status").is_some() {
                resp(403, &fixture("error_403_access_denied.json"))
            } else if req.path.ends_with("/reply") {
                resp(429, b"")
            } else {
                ok_answer(req)
            }
        });
        assert_eq!(line(seen.last().unwrap()), "DELETE /api/v2/tickets/555");
        let results = probed(out.unwrap());
        let by = |c: Capability| results.iter().find(|r| r.capability == c).unwrap().clone();
        assert!(by(Capability::ReadTickets).granted);
        assert!(!by(Capability::PublicReply).granted);
        assert!(matches!(
            by(Capability::PublicReply).failure,
            Some(Failure::RateLimited(_))
        ));
        let status = by(Capability::SetStatus);
        assert!(!status.granted);
        match status.failure {
            Some(Failure::Forbidden(d)) => {
                assert_eq!(d.kind, PermissionKind::Role);
                assert_eq!(d.missing, "Edit ticket properties");
                assert!(d.remediation.contains("Roles"));
            }
            other => panic!("{other:?}"),
        }
        assert!(by(Capability::AddTags).granted);
        assert!(by(Capability::Assign).granted);
    }

    #[test]
    fn creation_forbidden_falls_back_to_list_for_reads() {
        let (seen, out) = drive(
            &conn(Some("77")),
            &[Capability::SetStatus, Capability::ReadTickets],
            |req| match req.path.as_str() {
                "/api/v2/tickets" => resp(403, &fixture("error_403_access_denied.json")),
                "/api/v2/tickets?per_page=1" => resp(200, b"[]"),
                other => panic!("unexpected {other}"),
            },
        );
        assert_eq!(seen.len(), 2);
        assert_req(
            &seen[1],
            Method::Get,
            "/api/v2/tickets?per_page=1",
            Lane::Read,
            &["account", "tickets-list"],
        );
        let results = probed(out.unwrap());
        assert_eq!(results[0].capability, Capability::SetStatus);
        assert!(!results[0].granted);
        match &results[0].failure {
            Some(Failure::Forbidden(d)) => assert_eq!(d.missing, "Create a ticket"),
            other => panic!("{other:?}"),
        }
        assert_eq!(results[1].capability, Capability::ReadTickets);
        assert!(results[1].granted);
    }

    #[test]
    fn read_only_probe_creates_nothing() {
        let (seen, out) = drive(&conn(None), &[Capability::ReadTickets], |_| {
            resp(403, &fixture("error_403_access_denied.json"))
        });
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].path, "/api/v2/tickets?per_page=1");
        let results = probed(out.unwrap());
        assert!(!results[0].granted);
        assert!(
            matches!(&results[0].failure, Some(Failure::Forbidden(d)) if d.missing == "View tickets")
        );
    }

    #[test]
    fn empty_probe_is_done_at_once() {
        let (seen, out) = drive(&conn(None), &[], ok_answer);
        assert!(seen.is_empty());
        assert!(probed(out.unwrap()).is_empty());
    }

    #[test]
    fn bad_credentials_on_me_end_the_probe() {
        let (seen, out) = drive(&conn(None), &ALL, |_| {
            resp(401, &fixture("error_401_invalid_credentials.json"))
        });
        assert_eq!(seen.len(), 1);
        assert!(matches!(out, Err(Failure::Unauthenticated(_))));
    }

    #[test]
    fn server_error_on_create_ends_the_probe() {
        let (_, out) = drive(&conn(Some("1")), &[Capability::PublicReply], |_| {
            resp(502, b"<html>bad gateway</html>")
        });
        assert!(matches!(out, Err(Failure::Transient(_))));
    }

    #[test]
    fn failed_cleanup_does_not_change_results() {
        let (seen, out) = drive(&conn(Some("1")), &[Capability::AddTags], |req| {
            if verb(req.method) == "DELETE" {
                resp(403, b"{}")
            } else {
                ok_answer(req)
            }
        });
        assert_eq!(seen.len(), 3);
        assert!(probed(out.unwrap())[0].granted);
    }

    #[test]
    fn failure_repr_round_trips() {
        let fs = [
            fail::unauthenticated("invalid_credentials", "m"),
            fail::forbidden(PermissionKind::Plan, "x", "y", "z"),
            fail::forbidden(PermissionKind::Scope, "x", "y", "z"),
            fail::rate_limited(Some(5), Some("account"), "m"),
            fail::not_found("a"),
            fail::invalid("b"),
            fail::transient("c"),
            fail::permanent("d"),
        ];
        for f in fs {
            let s = serde_json::to_string(&FailureRepr::from(&f)).unwrap();
            let back: FailureRepr = serde_json::from_str(&s).unwrap();
            assert_eq!(format!("{:?}", back.to_failure()), format!("{f:?}"));
        }
    }
}
