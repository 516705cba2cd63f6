//! Read-back: whether an action already landed, after an ambiguous outcome.
//!
//! - reply: `GET /api/v2/tickets/{id}/comments.json?sort_order=desc` (the newest 100 comments).
//! - set-status, add-tags, assign: `GET /api/v2/tickets/{id}.json`.
//! - resolve: the ticket first, then the comments.
//!
//! A reply landed when a public comment whose text (plain or HTML) equals the reply's visible text
//! was written by the connection's agent (when the connection knows it), and in any case not by the
//! ticket's requester (when known). A status landed when the normalized status equals the wanted
//! one (a solved ticket that Zendesk has since closed counts as solved). Tags landed when all are
//! present (compared case-insensitively: Zendesk stores tags lower-case; UNCONFIRMED for every
//! account). An assignment landed when the given assignee and/or group are the ticket's.

use crate::errors::{Ctx, classify};
use crate::model::{CommentList, status_value};
use crate::ops::read::ticket_of;
use crate::ops::write::{parts, validate};
use crate::translate::{State, comments_path, is_ok, numeric_id, read_request, ticket_path};
use deskgate_adapter_sdk::prelude::*;
use serde::{Deserialize, Serialize};

/// What the read-back is waiting for, and what it found so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadBackState {
    /// "ticket" or "comments".
    pub waiting: String,
    /// Parts found landed so far.
    pub landed: Vec<String>,
    /// What was seen so far, for the detail.
    pub seen: Vec<String>,
    /// The ticket's requester, once the ticket was read.
    pub requester: Option<String>,
}

fn state(
    waiting: &str,
    landed: Vec<String>,
    seen: Vec<String>,
    requester: Option<String>,
) -> State {
    State::ReadBack(ReadBackState {
        waiting: waiting.to_string(),
        landed,
        seen,
        requester,
    })
}

/// Plan the first read.
pub fn start(a: &ApplyAction) -> Result<Step, Failure> {
    let id = numeric_id("ticket id", &a.ticket_id)?;
    validate(&a.action)?;
    match a.action {
        Action::Reply(_) => send(
            read_request(comments_path(&id)).build(),
            &state("comments", vec![], vec![], None),
        ),
        _ => send(
            read_request(ticket_path(&id)).build(),
            &state("ticket", vec![], vec![], None),
        ),
    }
}

fn status_landed(wanted: TicketStatus, seen: TicketStatus) -> bool {
    wanted == seen || (wanted == TicketStatus::Solved && seen == TicketStatus::Closed)
}

/// Check the ticket-level parts of `action` against `t`, recording into `landed`/`seen`.
fn check_ticket(action: &Action, t: &Ticket, landed: &mut Vec<String>, seen: &mut Vec<String>) {
    let (status, tags, assignee) = match action {
        Action::SetStatus(s) => (Some(*s), None, None),
        Action::AddTags(tags) => (None, Some(tags.as_slice()), None),
        Action::Assign(a) => (None, None, Some(a)),
        Action::Resolve(r) => (
            Some(r.status),
            (!r.tags.is_empty()).then_some(r.tags.as_slice()),
            r.assignee.as_ref(),
        ),
        Action::Reply(_) => (None, None, None),
    };
    if let Some(wanted) = status {
        let ok = status_landed(wanted, t.status);
        seen.push(format!(
            "status is \"{}\" (wanted \"{}\"){}",
            t.raw_status,
            status_value(wanted),
            if ok { "" } else { ": not landed" }
        ));
        if ok {
            landed.push("set-status".to_string());
        }
    }
    if let Some(tags) = tags {
        let have: Vec<String> = t.tags.iter().map(|t| t.trim().to_lowercase()).collect();
        let missing: Vec<&str> = tags
            .iter()
            .filter(|w| !have.contains(&w.trim().to_lowercase()))
            .map(String::as_str)
            .collect();
        if missing.is_empty() {
            seen.push("all tags present".to_string());
            landed.push("add-tags".to_string());
        } else {
            seen.push(format!("tags missing: {}", missing.join(", ")));
        }
    }
    if let Some(a) = assignee {
        let agent_ok = a
            .agent_id
            .as_ref()
            .is_none_or(|w| t.assignee_id.as_ref() == Some(w));
        let group_ok = a
            .group_id
            .as_ref()
            .is_none_or(|w| t.group_id.as_ref() == Some(w));
        seen.push(format!(
            "assignee {} group {}{}",
            t.assignee_id.as_deref().unwrap_or("none"),
            t.group_id.as_deref().unwrap_or("none"),
            if agent_ok && group_ok {
                " as wanted"
            } else {
                ": not as wanted"
            }
        ));
        if agent_ok && group_ok {
            landed.push("assign".to_string());
        }
    }
}

fn reply_text(action: &Action) -> Option<&str> {
    match action {
        Action::Reply(r) => Some(r),
        Action::Resolve(r) => Some(&r.reply),
        _ => None,
    }
}

fn finish(action: &Action, landed: Vec<String>, seen: Vec<String>) -> Result<Step, Failure> {
    let wanted = parts(action);
    // Report landed parts in the action's order.
    let parts_landed: Vec<String> = wanted
        .iter()
        .filter(|p| landed.contains(p))
        .cloned()
        .collect();
    done(Outcome::ReadBack(ReadBackResult {
        landed: parts_landed.len() == wanted.len(),
        parts_landed,
        detail: seen.join("; "),
    }))
}

/// Interpret a read.
pub fn resume(
    conn: &Connection,
    a: &ApplyAction,
    s: ReadBackState,
    resp: &HttpResponse,
) -> Result<Step, Failure> {
    let ReadBackState {
        waiting,
        mut landed,
        mut seen,
        requester,
    } = s;
    if !is_ok(resp) {
        return Err(classify(resp, Ctx::ReadTicket(&a.ticket_id)));
    }
    match waiting.as_str() {
        "ticket" => {
            let t = ticket_of(resp, "ticket")?;
            check_ticket(&a.action, &t, &mut landed, &mut seen);
            if reply_text(&a.action).is_some() {
                let id = numeric_id("ticket id", &a.ticket_id)?;
                return send(
                    read_request(comments_path(&id)).build(),
                    &state("comments", landed, seen, t.requester_id),
                );
            }
            finish(&a.action, landed, seen)
        }
        "comments" => {
            let reply = reply_text(&a.action).unwrap_or_default();
            let list: CommentList = parse_json(&resp.body, "ticket comments")?;
            let agent = conn.agent_id.as_deref();
            let found = list.comments.iter().find(|c| {
                let author = c.author_id.as_deref();
                c.public == Some(true)
                    && c.shows(reply)
                    && agent.is_none_or(|ag| author == Some(ag))
                    && requester.as_deref().is_none_or(|rq| author != Some(rq))
            });
            match found {
                Some(c) => {
                    seen.push(format!(
                        "reply found as public comment {} by {}",
                        c.id.as_deref().unwrap_or("?"),
                        c.author_id.as_deref().unwrap_or("?")
                    ));
                    landed.push("reply".to_string());
                }
                None => seen.push(format!(
                    "no public agent comment among the newest {} matches the reply",
                    list.comments.len()
                )),
            }
            finish(&a.action, landed, seen)
        }
        other => Err(fail::permanent(format!(
            "corrupt adapter state: read-back waiting for \"{other}\""
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::*;
    use crate::translate::{resume as resume_op, start as start_op};

    fn rb(id: &str, action: Action) -> Operation {
        Operation::ReadBack(ApplyAction {
            ticket_id: id.into(),
            action,
        })
    }

    fn result(o: Outcome) -> ReadBackResult {
        match o {
            Outcome::ReadBack(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn ticket_json(
        status: &str,
        tags: &[&str],
        assignee: Option<u64>,
        group: Option<u64>,
    ) -> String {
        serde_json::json!({"ticket":{
            "id": 42, "status": status, "subject": "Help", "requester_id": 20014192,
            "assignee_id": assignee, "group_id": group, "tags": tags,
            "created_at": "2024-04-17T17:18:10Z", "updated_at": "2024-04-17T17:20:00Z"
        }})
        .to_string()
    }

    fn run_ticket_only(conn: &Connection, action: Action, ticket: &str) -> ReadBackResult {
        let op = rb("42", action);
        let (req, state) = sent(start_op(conn, &op));
        assert_eq!(req.method, Method::Get);
        assert_eq!(req.path, "/api/v2/tickets/42.json");
        assert_eq!(req.lane, Lane::Read);
        assert_eq!(draws(&req), ["account"]);
        result(finished(resume_op(conn, &op, &state, &ok_json(ticket))))
    }

    fn run_reply(conn: &Connection, reply: &str, comments: &str) -> ReadBackResult {
        let op = rb("42", Action::Reply(reply.into()));
        let (req, state) = sent(start_op(conn, &op));
        assert_eq!(req.method, Method::Get);
        assert_eq!(req.path, "/api/v2/tickets/42/comments.json?sort_order=desc");
        assert_eq!(req.lane, Lane::Read);
        assert_eq!(draws(&req), ["account"]);
        result(finished(resume_op(conn, &op, &state, &ok_json(comments))))
    }

    #[test]
    fn reply_landed_and_not() {
        let comments = fixture("comments_desc.json");
        let r = run_reply(&conn(), "Thanks, fixed.", &comments);
        assert!(r.landed);
        assert_eq!(r.parts_landed, ["reply"]);
        assert!(r.detail.contains("9002"));
        // HTML vs plain text does not matter.
        assert!(run_reply(&conn(), "<p>Thanks,  fixed.</p>", &comments).landed);
        // Different text, an internal note, the customer's own words, another agent.
        let r = run_reply(&conn(), "Thanks, fixed!", &comments);
        assert!(!r.landed && r.parts_landed.is_empty());
        assert!(!run_reply(&conn(), "Internal: escalate", &comments).landed);
        assert!(!run_reply(&conn(), "My printer is on fire", &comments).landed);
        let other_agent = Connection {
            agent_id: Some("8".into()),
            ..conn()
        };
        assert!(!run_reply(&other_agent, "Thanks, fixed.", &comments).landed);
        // Without a known agent, any public comment with the text counts.
        assert!(run_reply(&conn_without_agent(), "Thanks, fixed.", &comments).landed);
        assert!(!run_reply(&conn(), "Thanks, fixed.", r#"{"comments":[]}"#).landed);
    }

    #[test]
    fn status_landed_and_not() {
        let r = run_ticket_only(
            &conn(),
            Action::SetStatus(TicketStatus::Pending),
            &ticket_json("pending", &[], None, None),
        );
        assert!(r.landed);
        assert_eq!(r.parts_landed, ["set-status"]);
        let r = run_ticket_only(
            &conn(),
            Action::SetStatus(TicketStatus::OnHold),
            &ticket_json("hold", &[], None, None),
        );
        assert!(r.landed);
        let r = run_ticket_only(
            &conn(),
            Action::SetStatus(TicketStatus::Solved),
            &ticket_json("closed", &[], None, None),
        );
        assert!(r.landed, "closed after solved counts");
        let r = run_ticket_only(
            &conn(),
            Action::SetStatus(TicketStatus::Solved),
            &ticket_json("open", &[], None, None),
        );
        assert!(!r.landed);
        assert!(r.detail.contains("not landed"));
        let r = run_ticket_only(
            &conn(),
            Action::SetStatus(TicketStatus::Closed),
            &ticket_json("solved", &[], None, None),
        );
        assert!(!r.landed);
    }

    #[test]
    fn tags_landed_and_not() {
        let t = ticket_json("open", &["vip", "billing", "other"], None, None);
        let r = run_ticket_only(
            &conn(),
            Action::AddTags(vec!["vip".into(), "Billing".into()]),
            &t,
        );
        assert!(r.landed);
        assert_eq!(r.parts_landed, ["add-tags"]);
        let r = run_ticket_only(
            &conn(),
            Action::AddTags(vec!["vip".into(), "urgent".into()]),
            &t,
        );
        assert!(!r.landed);
        assert!(r.detail.contains("urgent"));
    }

    #[test]
    fn assign_landed_and_not() {
        let t = ticket_json("open", &[], Some(7), Some(9));
        let who = |a: Option<&str>, g: Option<&str>| {
            Action::Assign(Assignee {
                agent_id: a.map(Into::into),
                group_id: g.map(Into::into),
            })
        };
        assert!(run_ticket_only(&conn(), who(Some("7"), Some("9")), &t).landed);
        assert!(run_ticket_only(&conn(), who(Some("7"), None), &t).landed);
        assert!(run_ticket_only(&conn(), who(None, Some("9")), &t).landed);
        assert!(!run_ticket_only(&conn(), who(Some("8"), None), &t).landed);
        assert!(!run_ticket_only(&conn(), who(Some("7"), Some("10")), &t).landed);
        let unassigned = ticket_json("open", &[], None, None);
        assert!(!run_ticket_only(&conn(), who(Some("7"), None), &unassigned).landed);
    }

    fn resolution() -> Action {
        Action::Resolve(Resolution {
            reply: "Thanks, fixed.".into(),
            status: TicketStatus::Solved,
            tags: vec!["vip".into()],
            assignee: Some(Assignee {
                agent_id: Some("7".into()),
                group_id: None,
            }),
        })
    }

    fn run_resolve(ticket: &str, comments: &str) -> ReadBackResult {
        let op = rb("42", resolution());
        let (req, state) = sent(start_op(&conn(), &op));
        assert_eq!(req.path, "/api/v2/tickets/42.json");
        let (req, state) = sent(resume_op(&conn(), &op, &state, &ok_json(ticket)));
        assert_eq!(req.method, Method::Get);
        assert_eq!(req.path, "/api/v2/tickets/42/comments.json?sort_order=desc");
        assert_eq!(req.lane, Lane::Read);
        result(finished(resume_op(
            &conn(),
            &op,
            &state,
            &ok_json(comments),
        )))
    }

    #[test]
    fn resolve_needs_every_part() {
        let comments = fixture("comments_desc.json");
        let r = run_resolve(&ticket_json("solved", &["vip"], Some(7), None), &comments);
        assert!(r.landed);
        assert_eq!(
            r.parts_landed,
            ["reply", "set-status", "add-tags", "assign"]
        );
        let r = run_resolve(&ticket_json("open", &["vip"], Some(7), None), &comments);
        assert!(!r.landed);
        assert_eq!(r.parts_landed, ["reply", "add-tags", "assign"]);
        let r = run_resolve(&ticket_json("open", &[], None, None), r#"{"comments":[]}"#);
        assert!(!r.landed);
        assert!(r.parts_landed.is_empty());
        // A comment by the requester never counts, even when the connection's agent is unknown.
        let op = rb("42", resolution());
        let c = conn_without_agent();
        let (_, state) = sent(start_op(&c, &op));
        let t = ticket_json("solved", &["vip"], Some(7), None);
        let (_, state) = sent(resume_op(&c, &op, &state, &ok_json(&t)));
        let by_requester =
            r#"{"comments":[{"id":1,"author_id":20014192,"body":"Thanks, fixed.","public":true}]}"#;
        let r = result(finished(resume_op(&c, &op, &state, &ok_json(by_requester))));
        assert_eq!(r.parts_landed, ["set-status", "add-tags", "assign"]);
    }

    #[test]
    fn read_back_errors() {
        assert!(matches!(
            start_op(&conn(), &rb("abc", Action::Reply("x".into()))),
            Err(Failure::Invalid(_))
        ));
        let op = rb("42", Action::SetStatus(TicketStatus::Open));
        let (_, state) = sent(start_op(&conn(), &op));
        let r = resp(404, &fixture("404_record_not_found.json"));
        assert!(matches!(
            resume_op(&conn(), &op, &state, &r),
            Err(Failure::NotFound(_))
        ));
        let r = resp(401, &fixture("401_invalid_token.json"));
        assert!(matches!(
            resume_op(&conn(), &op, &state, &r),
            Err(Failure::Unauthenticated(_))
        ));
    }
}
