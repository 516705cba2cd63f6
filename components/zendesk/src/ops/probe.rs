//! The permission probe: prove capabilities on a private probe ticket, never a customer's.
//!
//! Sequence (only the steps the requested capabilities need):
//! 1. `GET /api/v2/users/me.json` when the connection does not know its agent id yet.
//! 2. `POST /api/v2/tickets.json` with `Idempotency-Key`: a ticket whose requester is the agent,
//!    with a private comment and the tag `deskgate-probe`.
//! 3. read-tickets: `GET /api/v2/tickets/{id}.json`; public-reply: `PUT` a public comment;
//!    set-status: `PUT` status pending; add-tags: `PUT /tags.json`; assign: `PUT` assignee = agent.
//!    A 401/403 on a step marks that capability not granted and the probe goes on.
//! 4. `DELETE /api/v2/tickets/{id}.json` (cleanup; 204).
//!
//! If creating the probe ticket is itself refused (401/403), every requested write capability is
//! reported not granted with that failure, and read-tickets is proved by
//! `GET /api/v2/search.json?query=type%3Aticket&per_page=1` instead. When only read-tickets is
//! requested no ticket is created at all: the search proves it, so a read-only credential passes.
//!
//! Any other failure on a step (429, 5xx, ...) aborts the probe: the probe ticket is still deleted,
//! then the failure is returned. A failed cleanup does not change the results (the contract has no
//! place to report it; the leftover ticket is tagged `deskgate-probe`).
//!
//! Results are reported for the requested capabilities only, in the requested order.

use crate::describe::{ACCOUNT, TICKET_UPDATE_ACCOUNT};
use crate::errors::{Ctx, StoredFailure, classify};
use crate::model::TicketEnvelope;
use crate::ops::read::identity_of;
use crate::ops::write;
use crate::translate::{State, id_number, is_ok, read_request, ticket_path, update_request};
use deskgate_adapter_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Where the probe is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "at", rename_all = "kebab-case")]
pub enum At {
    /// Waiting for `/users/me`.
    WhoAmI,
    /// Waiting for the probe ticket's creation.
    Create,
    /// Waiting for the read-only search.
    Search,
    /// Waiting for one capability's request.
    Check {
        /// The capability's name.
        cap: String,
    },
    /// Waiting for the cleanup `DELETE`.
    Cleanup,
}

/// One capability's result so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Probed {
    /// The capability's name.
    pub cap: String,
    /// Proved.
    pub granted: bool,
    /// Why not.
    pub failure: Option<StoredFailure>,
}

/// The probe's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeState {
    /// The step awaited.
    pub at: At,
    /// The agent acting (requester and assignee of the probe ticket).
    pub agent: Option<String>,
    /// The probe ticket, once created.
    pub ticket: Option<String>,
    /// Results so far.
    pub results: Vec<Probed>,
    /// A failure that aborts the probe once the ticket is cleaned up.
    pub abort: Option<StoredFailure>,
}

/// Capabilities in the order the probe exercises them.
const ORDER: [Capability; 5] = [
    Capability::ReadTickets,
    Capability::PublicReply,
    Capability::SetStatus,
    Capability::AddTags,
    Capability::Assign,
];

fn name(c: Capability) -> &'static str {
    match c {
        Capability::ReadTickets => "read-tickets",
        Capability::PublicReply => "public-reply",
        Capability::SetStatus => "set-status",
        Capability::AddTags => "add-tags",
        Capability::Assign => "assign",
    }
}

fn by_name(n: &str) -> Option<Capability> {
    ORDER.into_iter().find(|c| name(*c) == n)
}

fn is_write(c: Capability) -> bool {
    c != Capability::ReadTickets
}

fn denied(resp: &HttpResponse) -> bool {
    matches!(resp.status, 401 | 403)
}

fn go(mut st: ProbeState, at: At, req: HttpRequest) -> Result<Step, Failure> {
    st.at = at;
    send(req, &State::Probe(st))
}

/// Plan the first step.
pub fn start(conn: &Connection, caps: &[Capability]) -> Result<Step, Failure> {
    let st = ProbeState {
        at: At::Create,
        agent: conn.agent_id.clone(),
        ticket: None,
        results: Vec::new(),
        abort: None,
    };
    if caps.is_empty() {
        return finish(caps, st);
    }
    if !caps.iter().any(|c| is_write(*c)) {
        return go(st, At::Search, search_request());
    }
    match &st.agent {
        Some(agent) => {
            let req = create_request(agent)?;
            go(st, At::Create, req)
        }
        None => go(
            st,
            At::WhoAmI,
            read_request("/api/v2/users/me.json".to_string()).build(),
        ),
    }
}

fn search_request() -> HttpRequest {
    read_request("/api/v2/search.json?query=type%3Aticket&per_page=1".to_string()).build()
}

fn create_request(agent: &str) -> Result<HttpRequest, Failure> {
    let body = json!({"ticket": {
        "subject": "deskgate permission probe",
        "comment": {
            "body": "deskgate checks this connection's permissions on this private ticket and \
                     deletes it right away. No customer is involved.",
            "public": false
        },
        "requester_id": id_number("agent id", agent)?,
        "tags": ["deskgate-probe"]
    }});
    Ok(RequestBuilder::new(Method::Post, "/api/v2/tickets.json")
        .lane(Lane::Write)
        .draw(ACCOUNT)
        .draw(TICKET_UPDATE_ACCOUNT)
        .idempotency_header("Idempotency-Key")
        .json(&body)
        .build())
}

/// The request proving `cap` on probe ticket `id`.
fn check_request(cap: Capability, id: &str, agent: &str) -> Result<HttpRequest, Failure> {
    let action = match cap {
        Capability::ReadTickets => return Ok(read_request(ticket_path(id)).build()),
        Capability::PublicReply => Action::Reply(
            "deskgate permission probe: public reply check. This ticket is deleted right away."
                .to_string(),
        ),
        Capability::SetStatus => Action::SetStatus(TicketStatus::Pending),
        Capability::AddTags => Action::AddTags(vec!["deskgate-probe-tags".to_string()]),
        Capability::Assign => Action::Assign(Assignee {
            agent_id: Some(agent.to_string()),
            group_id: None,
        }),
    };
    write::request(id, &action)
}

fn ctx<'a>(cap: Capability, ticket: &'a str) -> Ctx<'a> {
    match cap {
        Capability::ReadTickets => Ctx::ReadTicket(ticket),
        Capability::PublicReply => Ctx::Write {
            part: "reply",
            ticket,
        },
        Capability::SetStatus => Ctx::Write {
            part: "set-status",
            ticket,
        },
        Capability::AddTags => Ctx::Write {
            part: "add-tags",
            ticket,
        },
        Capability::Assign => Ctx::Write {
            part: "assign",
            ticket,
        },
    }
}

fn record(st: &mut ProbeState, cap: Capability, failure: Option<&Failure>) {
    st.results.push(Probed {
        cap: name(cap).to_string(),
        granted: failure.is_none(),
        failure: failure.map(StoredFailure::from),
    });
}

fn recorded(st: &ProbeState, cap: Capability) -> bool {
    st.results.iter().any(|r| r.cap == name(cap))
}

/// Plan the step after the current one.
fn next(caps: &[Capability], st: ProbeState) -> Result<Step, Failure> {
    if let Some(id) = st.ticket.clone() {
        let pending = ORDER
            .into_iter()
            .find(|c| caps.contains(c) && !recorded(&st, *c));
        return match (pending, &st.abort) {
            (Some(cap), None) => {
                let agent = st.agent.clone().unwrap_or_default();
                let req = check_request(cap, &id, &agent)?;
                go(
                    st,
                    At::Check {
                        cap: name(cap).to_string(),
                    },
                    req,
                )
            }
            _ => {
                let req = update_request(Method::Delete, ticket_path(&id), &id).build();
                go(st, At::Cleanup, req)
            }
        };
    }
    if caps.contains(&Capability::ReadTickets) && !recorded(&st, Capability::ReadTickets) {
        return go(st, At::Search, search_request());
    }
    finish(caps, st)
}

fn finish(caps: &[Capability], st: ProbeState) -> Result<Step, Failure> {
    if let Some(f) = &st.abort {
        return Err(f.to_failure());
    }
    let results = caps
        .iter()
        .map(|c| match st.results.iter().find(|r| r.cap == name(*c)) {
            Some(r) => CapabilityResult {
                capability: *c,
                granted: r.granted,
                failure: r.failure.as_ref().map(StoredFailure::to_failure),
            },
            // Every requested capability is recorded before the probe finishes.
            None => CapabilityResult {
                capability: *c,
                granted: false,
                failure: Some(fail::permanent("the probe did not reach this capability")),
            },
        })
        .collect();
    done(Outcome::Probed(results))
}

/// Interpret one probe response.
pub fn resume(
    caps: &[Capability],
    mut st: ProbeState,
    resp: &HttpResponse,
) -> Result<Step, Failure> {
    match st.at.clone() {
        At::WhoAmI => {
            let me = identity_of(resp)?;
            st.agent = Some(me.agent_id.clone());
            let req = create_request(&me.agent_id)?;
            go(st, At::Create, req)
        }
        At::Create => {
            if is_ok(resp) {
                let env: TicketEnvelope = parse_json(&resp.body, "probe ticket creation")?;
                let id = env.ticket.and_then(|t| t.id).ok_or_else(|| {
                    fail::permanent("Zendesk created the probe ticket but its response has no id")
                })?;
                st.ticket = Some(id);
            } else if denied(resp) {
                let f = classify(resp, Ctx::ProbeCreate);
                for cap in ORDER
                    .into_iter()
                    .filter(|c| is_write(*c) && caps.contains(c))
                {
                    record(&mut st, cap, Some(&f));
                }
            } else {
                return Err(classify(resp, Ctx::ProbeCreate));
            }
            next(caps, st)
        }
        At::Search => {
            if is_ok(resp) {
                record(&mut st, Capability::ReadTickets, None);
            } else if denied(resp) {
                let f = classify(resp, Ctx::ListOpen);
                record(&mut st, Capability::ReadTickets, Some(&f));
            } else {
                return Err(classify(resp, Ctx::ListOpen));
            }
            next(caps, st)
        }
        At::Check { cap } => {
            let cap = by_name(&cap).ok_or_else(|| {
                fail::permanent(format!(
                    "corrupt adapter state: unknown capability \"{cap}\""
                ))
            })?;
            let id = st.ticket.clone().unwrap_or_default();
            if is_ok(resp) {
                record(&mut st, cap, None);
            } else if denied(resp) {
                record(&mut st, cap, Some(&classify(resp, ctx(cap, &id))));
            } else {
                st.abort = Some(StoredFailure::from(&classify(resp, ctx(cap, &id))));
            }
            next(caps, st)
        }
        At::Cleanup => finish(caps, st),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::*;
    use crate::translate::{resume as resume_op, start as start_op};

    const ALL: [Capability; 5] = ORDER;

    const CREATED: &str = r#"{"ticket":{"id":555,"status":"new","subject":"deskgate permission probe","requester_id":7,"tags":["deskgate-probe"]},"audit":{"id":1,"events":[]}}"#;

    fn probed(o: Outcome) -> Vec<CapabilityResult> {
        match o {
            Outcome::Probed(r) => r,
            other => panic!("{other:?}"),
        }
    }

    /// Drive a probe, answering each request with `answer(request)`; returns the requests sent and
    /// the final result.
    fn drive(
        conn: &Connection,
        caps: &[Capability],
        mut answer: impl FnMut(&HttpRequest) -> HttpResponse,
    ) -> (Vec<HttpRequest>, Result<Step, Failure>) {
        let op = Operation::Probe(caps.to_vec());
        let mut sent_reqs = Vec::new();
        let mut step = start_op(conn, &op);
        while let Ok(Step::Send(p)) = &step {
            let req = p.request.clone();
            let r = answer(&req);
            step = resume_op(conn, &op, &p.state, &r);
            sent_reqs.push(req);
            assert!(sent_reqs.len() < 20, "probe does not end");
        }
        (sent_reqs, step)
    }

    fn all_ok(req: &HttpRequest) -> HttpResponse {
        match req.method {
            Method::Post => resp(201, CREATED),
            Method::Delete => resp(204, ""),
            _ => ok_json(CREATED),
        }
    }

    fn summary(reqs: &[HttpRequest]) -> Vec<String> {
        reqs.iter()
            .map(|r| {
                let m = match r.method {
                    Method::Get => "Get",
                    Method::Post => "Post",
                    Method::Put => "Put",
                    Method::Patch => "Patch",
                    Method::Delete => "Delete",
                };
                format!("{m} {}", r.path)
            })
            .collect()
    }

    #[test]
    fn full_probe_sequence() {
        let (reqs, end) = drive(&conn(), &ALL, all_ok);
        assert_eq!(
            summary(&reqs),
            [
                "Post /api/v2/tickets.json",
                "Get /api/v2/tickets/555.json",
                "Put /api/v2/tickets/555.json",
                "Put /api/v2/tickets/555.json",
                "Put /api/v2/tickets/555/tags.json",
                "Put /api/v2/tickets/555.json",
                "Delete /api/v2/tickets/555.json",
            ]
        );
        // Creation.
        let create = &reqs[0];
        assert_eq!(create.lane, Lane::Write);
        assert_eq!(
            create.idempotency_header.as_deref(),
            Some("Idempotency-Key")
        );
        assert_eq!(draws(create), ["account", "ticket-update-account"]);
        let b = body(create);
        assert_eq!(b["ticket"]["subject"], "deskgate permission probe");
        assert_eq!(b["ticket"]["comment"]["public"], false);
        assert_eq!(b["ticket"]["requester_id"], 7);
        assert_eq!(b["ticket"]["tags"], json!(["deskgate-probe"]));
        // Read.
        assert_eq!(reqs[1].lane, Lane::Read);
        assert_eq!(draws(&reqs[1]), ["account"]);
        // Writes.
        assert_eq!(body(&reqs[2])["ticket"]["comment"]["public"], true);
        assert_eq!(body(&reqs[3]), json!({"ticket":{"status":"pending"}}));
        assert_eq!(body(&reqs[4]), json!({"tags":["deskgate-probe-tags"]}));
        assert_eq!(body(&reqs[5]), json!({"ticket":{"assignee_id":7}}));
        for r in &reqs[2..] {
            assert_eq!(r.lane, Lane::Write);
            assert_eq!(draws(r), write_draws("555"));
            assert!(r.idempotency_header.is_none());
        }
        for r in &reqs {
            assert_declared(r);
        }
        let results = probed(finished(end));
        assert_eq!(
            results.iter().map(|r| r.capability).collect::<Vec<_>>(),
            ALL
        );
        assert!(results.iter().all(|r| r.granted && r.failure.is_none()));
    }

    #[test]
    fn forbidden_mid_probe_is_recorded_and_cleanup_still_runs() {
        let (reqs, end) = drive(&conn(), &ALL, |req| {
            if req.method == Method::Put && req.path.ends_with("/tags.json") {
                resp(403, &fixture("403_role.json"))
            } else if req.method == Method::Put && body(req)["ticket"]["comment"].is_object() {
                resp(403, &fixture("403_missing_scope.json"))
            } else {
                all_ok(req)
            }
        });
        assert_eq!(reqs.len(), 7);
        assert_eq!(reqs.last().unwrap().method, Method::Delete);
        let results = probed(finished(end));
        let by = |c: Capability| results.iter().find(|r| r.capability == c).unwrap();
        assert!(by(Capability::ReadTickets).granted);
        assert!(by(Capability::SetStatus).granted);
        assert!(by(Capability::Assign).granted);
        let reply = by(Capability::PublicReply);
        assert!(!reply.granted);
        assert!(
            matches!(&reply.failure, Some(Failure::Forbidden(d)) if d.kind == PermissionKind::Scope)
        );
        let tags = by(Capability::AddTags);
        assert!(!tags.granted);
        assert!(matches!(&tags.failure, Some(Failure::Forbidden(d))
            if d.kind == PermissionKind::Role && d.missing == "ticket tag editing (agent role)"));
    }

    #[test]
    fn only_requested_capabilities_in_requested_order() {
        let caps = [Capability::Assign, Capability::ReadTickets];
        let (reqs, end) = drive(&conn(), &caps, all_ok);
        assert_eq!(
            summary(&reqs),
            [
                "Post /api/v2/tickets.json",
                "Get /api/v2/tickets/555.json",
                "Put /api/v2/tickets/555.json",
                "Delete /api/v2/tickets/555.json",
            ]
        );
        let results = probed(finished(end));
        assert_eq!(
            results.iter().map(|r| r.capability).collect::<Vec<_>>(),
            caps
        );
    }

    #[test]
    fn unknown_agent_asks_who_am_i_first() {
        let (reqs, end) = drive(&conn_without_agent(), &[Capability::SetStatus], |req| {
            if req.path == "/api/v2/users/me.json" {
                ok_json(r#"{"user":{"id":31,"role":"agent","name":"A"}}"#)
            } else {
                all_ok(req)
            }
        });
        assert_eq!(reqs[0].path, "/api/v2/users/me.json");
        assert_eq!(reqs[0].lane, Lane::Read);
        assert_eq!(body(&reqs[1])["ticket"]["requester_id"], 31);
        assert_eq!(reqs.len(), 4);
        assert!(probed(finished(end))[0].granted);
        // The anonymous guest fails the probe.
        let (_, end) = drive(&conn_without_agent(), &[Capability::SetStatus], |_| {
            ok_json(r#"{"user":{"id":null,"role":"end-user"}}"#)
        });
        assert!(matches!(end, Err(Failure::Unauthenticated(d)) if d.code == "anonymous"));
    }

    #[test]
    fn forbidden_creation_fails_writes_and_searches_for_read() {
        let (reqs, end) = drive(&conn(), &ALL, |req| match req.method {
            Method::Post => resp(403, &fixture("403_role.json")),
            _ => ok_json(r#"{"results":[],"count":0,"next_page":null}"#),
        });
        assert_eq!(
            summary(&reqs),
            [
                "Post /api/v2/tickets.json",
                "Get /api/v2/search.json?query=type%3Aticket&per_page=1"
            ]
        );
        assert_eq!(reqs[1].lane, Lane::Read);
        assert_eq!(draws(&reqs[1]), ["account"]);
        let results = probed(finished(end));
        assert!(results[0].granted, "read-tickets proved by search");
        for r in &results[1..] {
            assert!(!r.granted);
            assert!(
                matches!(&r.failure, Some(Failure::Forbidden(d)) if d.missing == "ticket creation (agent role)")
            );
        }
        // Without read-tickets requested, nothing else is sent.
        let (reqs, end) = drive(&conn(), &[Capability::PublicReply], |_| {
            resp(401, &fixture("401_invalid_token.json"))
        });
        assert_eq!(reqs.len(), 1);
        let results = probed(finished(end));
        assert!(matches!(
            &results[0].failure,
            Some(Failure::Unauthenticated(_))
        ));
    }

    #[test]
    fn read_only_probe_creates_nothing() {
        let (reqs, end) = drive(&conn(), &[Capability::ReadTickets], |_| {
            ok_json(r#"{"results":[]}"#)
        });
        assert_eq!(
            summary(&reqs),
            ["Get /api/v2/search.json?query=type%3Aticket&per_page=1"]
        );
        assert!(probed(finished(end))[0].granted);
        let (_, end) = drive(&conn(), &[Capability::ReadTickets], |_| {
            resp(403, &fixture("403_missing_scope.json"))
        });
        let r = probed(finished(end));
        assert!(!r[0].granted);
        let (reqs, end) = drive(&conn(), &[], all_ok);
        assert!(reqs.is_empty());
        assert!(probed(finished(end)).is_empty());
    }

    #[test]
    fn other_failures_abort_after_cleanup() {
        let (reqs, end) = drive(&conn(), &ALL, |req| {
            if req.method == Method::Put && req.path.ends_with("/tags.json") {
                HttpResponse {
                    status: 429,
                    headers: vec![("retry-after".into(), "5".into())],
                    body: fixture("429_account.txt").into_bytes(),
                }
            } else {
                all_ok(req)
            }
        });
        // The assign step is skipped; the ticket is still deleted.
        assert_eq!(reqs.len(), 6);
        assert_eq!(reqs.last().unwrap().method, Method::Delete);
        assert!(matches!(end, Err(Failure::RateLimited(d)) if d.retry_after_ms == Some(5000)));
        // A failing cleanup does not change the results.
        let (_, end) = drive(&conn(), &[Capability::SetStatus], |req| match req.method {
            Method::Delete => resp(403, &fixture("403_role.json")),
            _ => all_ok(req),
        });
        assert!(probed(finished(end))[0].granted);
        // A 5xx on creation fails the probe; nothing to clean up.
        let (reqs, end) = drive(&conn(), &ALL, |_| resp(503, ""));
        assert_eq!(reqs.len(), 1);
        assert!(matches!(end, Err(Failure::Transient(_))));
    }

    #[test]
    fn bad_agent_id_is_invalid() {
        let c = Connection {
            agent_id: Some("me".into()),
            ..conn()
        };
        assert!(matches!(
            start_op(&c, &Operation::Probe(vec![Capability::Assign])),
            Err(Failure::Invalid(m)) if m.contains("agent id")
        ));
    }
}
