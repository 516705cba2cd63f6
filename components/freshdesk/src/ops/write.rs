//! Writes: reply, set-status, add-tags, assign and resolve.
//!
//! Freshdesk has no idempotency header, and a reply is a separate endpoint from the ticket's
//! properties, so a resolution is not atomic:
//!
//! 1. `GET /api/v2/tickets/{id}` — only when tags are to be added, because `PUT` replaces the tag
//!    list and we must write back the existing tags with the new ones;
//! 2. `POST /api/v2/tickets/{id}/reply`;
//! 3. one `PUT /api/v2/tickets/{id}` carrying `status`, the merged `tags` and `responder_id` /
//!    `group_id`.
//!
//! If step 3 fails after the reply landed, the receipt says so (`applied: ["reply"]`, the failure
//! on "set-status" with tags and assignee skipped) so the host raises a divergence. Every request
//! here, the reads included, goes in the write lane.

use crate::errors::Part;
use crate::model::{FdTicket, id_of, status_to_code};
use crate::translate::{
    ensure_ok, get_ticket_request, merge_tags, numeric_id, parse_state, put_ticket_request,
    reply_request,
};
use deskgate_adapter_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Where a write stands.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "w", rename_all = "kebab-case")]
enum WriteState {
    Reply,
    SetStatus,
    Assign,
    TagsRead,
    TagsPut,
    ResolveRead,
    ResolveReply { tags: Option<Vec<String>> },
    ResolvePut { reference: Option<String> },
}

impl WriteState {
    /// The states without fields, exactly as `send` serializes them, recognized without serde (an
    /// internally tagged enum buffers its input before it picks a variant); anything else goes
    /// through [`parse_state`].
    fn parse(state: &str) -> Result<Self, Failure> {
        Ok(match state {
            r#"{"w":"reply"}"# => Self::Reply,
            r#"{"w":"set-status"}"# => Self::SetStatus,
            r#"{"w":"assign"}"# => Self::Assign,
            r#"{"w":"tags-read"}"# => Self::TagsRead,
            r#"{"w":"tags-put"}"# => Self::TagsPut,
            r#"{"w":"resolve-read"}"# => Self::ResolveRead,
            _ => return parse_state(state),
        })
    }
}

/// A 2xx body's `id`, every other field skipped unread.
#[derive(Deserialize)]
struct IdOnly {
    #[serde(default)]
    id: Value,
}

/// `responder_id` / `group_id` for an assignee, numbers as Freshdesk wants them.
fn assignee_fields(a: &Assignee) -> Result<Map<String, Value>, Failure> {
    let mut m = Map::new();
    if let Some(agent) = &a.agent_id {
        m.insert("responder_id".into(), json!(numeric_id(agent, "agent id")?));
    }
    if let Some(group) = &a.group_id {
        m.insert("group_id".into(), json!(numeric_id(group, "group id")?));
    }
    if m.is_empty() {
        return Err(fail::invalid("assign needs an agent id or a group id"));
    }
    Ok(m)
}

fn object(id: &str) -> String {
    format!("ticket {id}")
}

/// Plan the first request of an action.
pub fn start(a: &ApplyAction) -> Result<Step, Failure> {
    let id = numeric_id(&a.ticket_id, "ticket id")?;
    match &a.action {
        Action::Reply(text) => send(reply_request(id, text), &WriteState::Reply),
        Action::SetStatus(s) => send(
            put_ticket_request(id, &json!({ "status": status_to_code(*s) })),
            &WriteState::SetStatus,
        ),
        Action::Assign(who) => send(
            put_ticket_request(id, &Value::Object(assignee_fields(who)?)),
            &WriteState::Assign,
        ),
        Action::AddTags(tags) if tags.is_empty() => done(Outcome::Written(WriteReceipt {
            ticket: None,
            reference: None,
            applied: vec!["add-tags".into()],
            failed: None,
        })),
        Action::AddTags(_) => send(get_ticket_request(id, Lane::Write), &WriteState::TagsRead),
        Action::Resolve(r) => {
            // Refuse a bad assignee before anything is written.
            if let Some(who) = &r.assignee {
                assignee_fields(who)?;
            }
            if r.tags.is_empty() {
                send(
                    reply_request(id, &r.reply),
                    &WriteState::ResolveReply { tags: None },
                )
            } else {
                send(
                    get_ticket_request(id, Lane::Write),
                    &WriteState::ResolveRead,
                )
            }
        }
    }
}

/// The ticket in a 2xx body, if it is one (a write that landed is never failed for its echo).
fn echoed_ticket(resp: &HttpResponse) -> Option<Ticket> {
    serde_json::from_slice::<FdTicket>(&resp.body)
        .ok()
        .and_then(|t| t.to_ticket().ok())
}

/// The conversation id of a 201 from `/reply`, if readable.
fn reply_reference(resp: &HttpResponse) -> Option<String> {
    serde_json::from_slice::<IdOnly>(&resp.body)
        .ok()
        .and_then(|c| id_of(&c.id))
}

fn written(
    ticket: Option<Ticket>,
    reference: Option<String>,
    applied: &[&str],
) -> Result<Step, Failure> {
    done(Outcome::Written(WriteReceipt {
        ticket,
        reference,
        applied: applied.iter().map(|s| s.to_string()).collect(),
        failed: None,
    }))
}

/// Interpret a write's response.
pub fn resume(a: &ApplyAction, state: &str, resp: &HttpResponse) -> Result<Step, Failure> {
    let st = WriteState::parse(state)?;
    let id = numeric_id(&a.ticket_id, "ticket id")?;
    let obj = object(&a.ticket_id);
    match (&a.action, st) {
        (Action::Reply(_), WriteState::Reply) => {
            ensure_ok(resp, Part::Reply, &obj)?;
            written(None, reply_reference(resp), &["reply"])
        }
        (Action::SetStatus(_), WriteState::SetStatus) => {
            ensure_ok(resp, Part::SetStatus, &obj)?;
            written(echoed_ticket(resp), None, &["set-status"])
        }
        (Action::Assign(_), WriteState::Assign) => {
            ensure_ok(resp, Part::Assign, &obj)?;
            written(echoed_ticket(resp), None, &["assign"])
        }
        (Action::AddTags(tags), WriteState::TagsRead) => {
            ensure_ok(resp, Part::AddTags, &obj)?;
            let current = parse_json::<FdTicket>(&resp.body, "ticket")?.to_ticket()?;
            match merge_tags(&current.tags, tags) {
                None => written(Some(current), None, &["add-tags"]),
                Some(merged) => send(
                    put_ticket_request(id, &json!({ "tags": merged })),
                    &WriteState::TagsPut,
                ),
            }
        }
        (Action::AddTags(_), WriteState::TagsPut) => {
            ensure_ok(resp, Part::AddTags, &obj)?;
            written(echoed_ticket(resp), None, &["add-tags"])
        }
        (Action::Resolve(r), WriteState::ResolveRead) => {
            // Nothing written yet: any failure is the whole action's.
            ensure_ok(resp, Part::AddTags, &obj)?;
            let current = parse_json::<FdTicket>(&resp.body, "ticket")?.to_ticket()?;
            let tags = merge_tags(&current.tags, &r.tags);
            send(
                reply_request(id, &r.reply),
                &WriteState::ResolveReply { tags },
            )
        }
        (Action::Resolve(r), WriteState::ResolveReply { tags }) => {
            ensure_ok(resp, Part::Reply, &obj)?;
            let mut body = Map::new();
            body.insert("status".into(), json!(status_to_code(r.status)));
            if let Some(merged) = tags {
                body.insert("tags".into(), json!(merged));
            }
            if let Some(who) = &r.assignee {
                body.extend(assignee_fields(who)?);
            }
            send(
                put_ticket_request(id, &Value::Object(body)),
                &WriteState::ResolvePut {
                    reference: reply_reference(resp),
                },
            )
        }
        (Action::Resolve(r), WriteState::ResolvePut { reference }) => {
            let mut later: Vec<String> = Vec::new();
            if !r.tags.is_empty() {
                later.push("add-tags".into());
            }
            if r.assignee.is_some() {
                later.push("assign".into());
            }
            if !Response::new(resp).is_success() {
                let failure = crate::errors::classify(resp, Part::SetStatus, &obj);
                return done(Outcome::Written(WriteReceipt {
                    ticket: None,
                    reference,
                    applied: vec!["reply".into()],
                    failed: Some(PartFailure {
                        part: "set-status".into(),
                        failure,
                        skipped: later,
                    }),
                }));
            }
            let mut applied = vec!["reply".to_string(), "set-status".to_string()];
            applied.extend(later);
            done(Outcome::Written(WriteReceipt {
                ticket: echoed_ticket(resp),
                reference,
                applied,
                failed: None,
            }))
        }
        (_, st) => Err(fail::permanent(format!(
            "corrupt adapter state {st:?} for this action (state of another action)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_write_states_are_recognized_as_serialized() {
        for s in [
            WriteState::Reply,
            WriteState::SetStatus,
            WriteState::Assign,
            WriteState::TagsRead,
            WriteState::TagsPut,
            WriteState::ResolveRead,
        ] {
            let text = serde_json::to_string(&s).unwrap();
            let back = WriteState::parse(&text).unwrap();
            assert_eq!(format!("{back:?}"), format!("{s:?}"));
        }
        let with_fields = serde_json::to_string(&WriteState::ResolvePut { reference: Some("9".into()) }).unwrap();
        assert!(matches!(WriteState::parse(&with_fields), Ok(WriteState::ResolvePut { reference: Some(r) }) if r == "9"));
        assert!(WriteState::parse(r#"{"w":"nope"}"#).is_err());
    }
    use crate::ops::testkit::*;
    use crate::translate::{resume as tresume, start as tstart};

    fn apply(action: Action) -> Operation {
        Operation::Apply(ApplyAction {
            ticket_id: "4711".into(),
            action,
        })
    }

    fn receipt(out: Outcome) -> WriteReceipt {
        match out {
            Outcome::Written(w) => w,
            other => panic!("{other:?}"),
        }
    }

    fn ticket_with_tags(tags: &[&str]) -> Vec<u8> {
        serde_json::to_vec(&json!({"id": 4711, "status": 2, "tags": tags,
            "created_at": "2024-04-17T17:18:10Z", "updated_at": "2024-04-18T08:00:00Z"}))
        .unwrap()
    }

    #[test]
    fn reply() {
        let op = apply(Action::Reply("Thanks, fixed.".into()));
        let (req, state) = sent(tstart(&conn(None), &op));
        assert_req(
            &req,
            Method::Post,
            "/api/v2/tickets/4711/reply",
            Lane::Write,
            &["account"],
        );
        assert_eq!(body_json(&req), json!({"body": "<p>Thanks, fixed.</p>"}));
        let w = receipt(finished(tresume(
            &conn(None),
            &op,
            &state,
            &resp(201, &fixture("reply_201.json")),
        )));
        assert_eq!(w.reference.as_deref(), Some("9004"));
        assert_eq!(w.applied, vec!["reply".to_string()]);
        assert!(w.failed.is_none());
        // A 201 we cannot read still landed.
        let w = receipt(finished(tresume(&conn(None), &op, &state, &resp(201, b""))));
        assert_eq!(w.reference, None);
        assert_eq!(w.applied, vec!["reply".to_string()]);
        // Markup in the text is escaped.
        let op = apply(Action::Reply("use <b> & \"quotes\"".into()));
        let (req, _) = sent(tstart(&conn(None), &op));
        assert_eq!(
            body_json(&req),
            json!({"body": "<p>use &lt;b&gt; &amp; &quot;quotes&quot;</p>"})
        );
    }

    #[test]
    fn reply_forbidden() {
        let op = apply(Action::Reply("x".into()));
        let (_, state) = sent(tstart(&conn(None), &op));
        match tresume(
            &conn(None),
            &op,
            &state,
            &resp(403, &fixture("error_403_access_denied.json")),
        ) {
            Err(Failure::Forbidden(d)) => assert_eq!(d.missing, "Reply to a ticket"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn set_status_every_status() {
        for (s, code) in [
            (TicketStatus::New, 2),
            (TicketStatus::Open, 2),
            (TicketStatus::Pending, 3),
            (TicketStatus::OnHold, 7),
            (TicketStatus::Solved, 4),
            (TicketStatus::Closed, 5),
        ] {
            let op = apply(Action::SetStatus(s));
            let (req, state) = sent(tstart(&conn(None), &op));
            assert_req(
                &req,
                Method::Put,
                "/api/v2/tickets/4711",
                Lane::Write,
                &["account", "ticket-update"],
            );
            assert_eq!(body_json(&req), json!({"status": code}), "{s:?}");
            let echo = serde_json::to_vec(
                &json!({"id": 4711, "status": code, "updated_at": "2024-04-18T09:00:00Z"}),
            )
            .unwrap();
            let w = receipt(finished(tresume(
                &conn(None),
                &op,
                &state,
                &resp(200, &echo),
            )));
            assert_eq!(w.applied, vec!["set-status".to_string()]);
            assert_eq!(w.ticket.map(|t| t.raw_status), Some(code.to_string()));
        }
        let op = apply(Action::SetStatus(TicketStatus::Solved));
        let (_, state) = sent(tstart(&conn(None), &op));
        match tresume(
            &conn(None),
            &op,
            &state,
            &resp(403, &fixture("error_403_access_denied.json")),
        ) {
            Err(Failure::Forbidden(d)) => assert_eq!(d.missing, "Edit ticket properties"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            tresume(&conn(None), &op, &state, &resp(503, b"")),
            Err(Failure::Transient(_))
        ));
    }

    #[test]
    fn add_tags_reads_then_writes_merged() {
        let op = apply(Action::AddTags(vec![
            "vip".into(),
            "hardware".into(),
            "vip".into(),
            "emea".into(),
        ]));
        let (req, state) = sent(tstart(&conn(None), &op));
        assert_req(
            &req,
            Method::Get,
            "/api/v2/tickets/4711",
            Lane::Write,
            &["account"],
        );
        let (req, state) = sent(tresume(
            &conn(None),
            &op,
            &state,
            &resp(200, &fixture("ticket.json")),
        ));
        assert_req(
            &req,
            Method::Put,
            "/api/v2/tickets/4711",
            Lane::Write,
            &["account", "ticket-update"],
        );
        assert_eq!(
            body_json(&req),
            json!({"tags": ["hardware", "urgent", "vip", "emea"]})
        );
        let w = receipt(finished(tresume(
            &conn(None),
            &op,
            &state,
            &resp(
                200,
                &ticket_with_tags(&["hardware", "urgent", "vip", "emea"]),
            ),
        )));
        assert_eq!(w.applied, vec!["add-tags".to_string()]);
        assert_eq!(w.ticket.unwrap().tags.len(), 4);
    }

    #[test]
    fn add_tags_already_present_needs_no_put() {
        let op = apply(Action::AddTags(vec!["urgent".into()]));
        let (_, state) = sent(tstart(&conn(None), &op));
        let w = receipt(finished(tresume(
            &conn(None),
            &op,
            &state,
            &resp(200, &fixture("ticket.json")),
        )));
        assert_eq!(w.applied, vec!["add-tags".to_string()]);
        assert_eq!(w.ticket.unwrap().id, "4711");
        // Nothing to add at all: no request.
        let w = receipt(finished(tstart(
            &conn(None),
            &apply(Action::AddTags(vec![])),
        )));
        assert_eq!(w.applied, vec!["add-tags".to_string()]);
    }

    #[test]
    fn add_tags_read_failure_is_the_actions() {
        let op = apply(Action::AddTags(vec!["x".into()]));
        let (_, state) = sent(tstart(&conn(None), &op));
        assert!(matches!(
            tresume(&conn(None), &op, &state, &resp(404, b"{}")),
            Err(Failure::NotFound(_))
        ));
    }

    #[test]
    fn assign_agent_group_or_both() {
        let cases = [
            (Some("80002222"), None, json!({"responder_id": 80002222u64})),
            (None, Some("80000123"), json!({"group_id": 80000123u64})),
            (
                Some("5"),
                Some("6"),
                json!({"responder_id": 5, "group_id": 6}),
            ),
        ];
        for (agent, group, want) in cases {
            let op = apply(Action::Assign(Assignee {
                agent_id: agent.map(str::to_string),
                group_id: group.map(str::to_string),
            }));
            let (req, state) = sent(tstart(&conn(None), &op));
            assert_req(
                &req,
                Method::Put,
                "/api/v2/tickets/4711",
                Lane::Write,
                &["account", "ticket-update"],
            );
            assert_eq!(body_json(&req), want);
            let w = receipt(finished(tresume(
                &conn(None),
                &op,
                &state,
                &resp(200, &fixture("ticket.json")),
            )));
            assert_eq!(w.applied, vec!["assign".to_string()]);
        }
        let none = apply(Action::Assign(Assignee {
            agent_id: None,
            group_id: None,
        }));
        assert!(matches!(
            tstart(&conn(None), &none),
            Err(Failure::Invalid(_))
        ));
        let bad = apply(Action::Assign(Assignee {
            agent_id: Some("sam".into()),
            group_id: None,
        }));
        assert!(
            matches!(tstart(&conn(None), &bad), Err(Failure::Invalid(m)) if m.contains("agent id"))
        );
        let bad_ticket = Operation::Apply(ApplyAction {
            ticket_id: "x1".into(),
            action: Action::SetStatus(TicketStatus::Open),
        });
        assert!(
            matches!(tstart(&conn(None), &bad_ticket), Err(Failure::Invalid(m)) if m.contains("ticket id"))
        );
    }

    fn resolution(tags: &[&str], assignee: Option<Assignee>) -> Operation {
        apply(Action::Resolve(Resolution {
            reply: "Thanks, fixed.".into(),
            status: TicketStatus::Solved,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            assignee,
        }))
    }

    #[test]
    fn resolve_full() {
        let op = resolution(
            &["fixed", "urgent"],
            Some(Assignee {
                agent_id: Some("80002222".into()),
                group_id: Some("9".into()),
            }),
        );
        let (req, state) = sent(tstart(&conn(None), &op));
        assert_req(
            &req,
            Method::Get,
            "/api/v2/tickets/4711",
            Lane::Write,
            &["account"],
        );
        let (req, state) = sent(tresume(
            &conn(None),
            &op,
            &state,
            &resp(200, &fixture("ticket.json")),
        ));
        assert_req(
            &req,
            Method::Post,
            "/api/v2/tickets/4711/reply",
            Lane::Write,
            &["account"],
        );
        assert_eq!(body_json(&req), json!({"body": "<p>Thanks, fixed.</p>"}));
        let (req, state) = sent(tresume(
            &conn(None),
            &op,
            &state,
            &resp(201, &fixture("reply_201.json")),
        ));
        assert_req(
            &req,
            Method::Put,
            "/api/v2/tickets/4711",
            Lane::Write,
            &["account", "ticket-update"],
        );
        assert_eq!(
            body_json(&req),
            json!({"status": 4, "tags": ["hardware", "urgent", "fixed"], "responder_id": 80002222u64, "group_id": 9})
        );
        let w = receipt(finished(tresume(
            &conn(None),
            &op,
            &state,
            &resp(200, &ticket_with_tags(&["hardware", "urgent", "fixed"])),
        )));
        assert_eq!(w.applied, vec!["reply", "set-status", "add-tags", "assign"]);
        assert_eq!(w.reference.as_deref(), Some("9004"));
        assert!(w.failed.is_none());
        assert!(w.ticket.is_some());
    }

    #[test]
    fn resolve_without_tags_skips_the_read() {
        let op = resolution(&[], None);
        let (req, state) = sent(tstart(&conn(None), &op));
        assert_req(
            &req,
            Method::Post,
            "/api/v2/tickets/4711/reply",
            Lane::Write,
            &["account"],
        );
        let (req, state) = sent(tresume(
            &conn(None),
            &op,
            &state,
            &resp(201, &fixture("reply_201.json")),
        ));
        assert_eq!(body_json(&req), json!({"status": 4}));
        let w = receipt(finished(tresume(
            &conn(None),
            &op,
            &state,
            &resp(200, &fixture("ticket.json")),
        )));
        assert_eq!(w.applied, vec!["reply", "set-status"]);
    }

    #[test]
    fn resolve_with_tags_already_present_leaves_tags_out() {
        let op = resolution(&["urgent"], None);
        let (_, state) = sent(tstart(&conn(None), &op));
        let (_, state) = sent(tresume(
            &conn(None),
            &op,
            &state,
            &resp(200, &fixture("ticket.json")),
        ));
        let (req, state) = sent(tresume(
            &conn(None),
            &op,
            &state,
            &resp(201, &fixture("reply_201.json")),
        ));
        assert_eq!(body_json(&req), json!({"status": 4}));
        let w = receipt(finished(tresume(
            &conn(None),
            &op,
            &state,
            &resp(200, &fixture("ticket.json")),
        )));
        assert_eq!(w.applied, vec!["reply", "set-status", "add-tags"]);
    }

    #[test]
    fn resolve_put_failure_after_reply_is_a_divergence() {
        let op = resolution(
            &["fixed"],
            Some(Assignee {
                agent_id: None,
                group_id: Some("9".into()),
            }),
        );
        let (_, state) = sent(tstart(&conn(None), &op));
        let (_, state) = sent(tresume(
            &conn(None),
            &op,
            &state,
            &resp(200, &fixture("ticket.json")),
        ));
        let (_, state) = sent(tresume(
            &conn(None),
            &op,
            &state,
            &resp(201, &fixture("reply_201.json")),
        ));
        let w = receipt(finished(tresume(
            &conn(None),
            &op,
            &state,
            &resp(403, &fixture("error_403_access_denied.json")),
        )));
        assert_eq!(w.applied, vec!["reply"]);
        assert_eq!(w.reference.as_deref(), Some("9004"));
        let f = w.failed.expect("part failure");
        assert_eq!(f.part, "set-status");
        assert_eq!(f.skipped, vec!["add-tags", "assign"]);
        match f.failure {
            Failure::Forbidden(d) => assert_eq!(d.missing, "Edit ticket properties"),
            other => panic!("{other:?}"),
        }
        // A 500 on the PUT: same shape, transient failure.
        let w = receipt(finished(tresume(&conn(None), &op, &state, &resp(500, b""))));
        assert!(matches!(w.failed.unwrap().failure, Failure::Transient(_)));
    }

    #[test]
    fn resolve_reply_failure_is_the_actions() {
        let op = resolution(&[], None);
        let (_, state) = sent(tstart(&conn(None), &op));
        match tresume(
            &conn(None),
            &op,
            &state,
            &resp(403, &fixture("error_403_access_denied.json")),
        ) {
            Err(Failure::Forbidden(d)) => assert_eq!(d.missing, "Reply to a ticket"),
            other => panic!("{other:?}"),
        }
        let op = resolution(&["a"], None);
        let (_, state) = sent(tstart(&conn(None), &op));
        assert!(matches!(
            tresume(&conn(None), &op, &state, &resp(404, b"")),
            Err(Failure::NotFound(_))
        ));
        let bad = resolution(
            &[],
            Some(Assignee {
                agent_id: None,
                group_id: None,
            }),
        );
        assert!(matches!(
            tstart(&conn(None), &bad),
            Err(Failure::Invalid(_))
        ));
    }

    #[test]
    fn state_of_another_action_is_corrupt() {
        let op = apply(Action::Reply("x".into()));
        let (_, state) = sent(tstart(
            &conn(None),
            &apply(Action::SetStatus(TicketStatus::Open)),
        ));
        assert!(
            matches!(tresume(&conn(None), &op, &state, &resp(200, b"{}")), Err(Failure::Permanent(m)) if m.contains("corrupt"))
        );
    }
}
