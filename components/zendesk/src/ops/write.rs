//! Writes (apply): every action is ONE request, so nothing can half-land.
//!
//! - reply: `PUT /api/v2/tickets/{id}.json {"ticket":{"comment":{"body":..,"public":true}}}`
//! - set-status: `PUT /api/v2/tickets/{id}.json {"ticket":{"status":..}}` (on-hold is "hold")
//! - add-tags: `PUT /api/v2/tickets/{id}/tags.json {"tags":[..]}` (PUT adds; POST would replace)
//! - assign: `PUT /api/v2/tickets/{id}.json {"ticket":{"assignee_id":N,"group_id":M}}` (given ones)
//! - resolve: one `PUT /api/v2/tickets/{id}.json` with the comment, status, `additional_tags`
//!   (only when non-empty) and assignee/group (when given); Zendesk applies it atomically.
//!
//! Every write draws account + ticket-update (keyed by ticket) + ticket-update-account, in the write
//! lane. Zendesk honours no idempotency key on updates, so none is named.

use crate::errors::{Ctx, classify};
use crate::model::{WriteEnvelope, status_value};
use crate::translate::{State, id_number, is_ok, numeric_id, ticket_path, update_request};
use deskgate_adapter_sdk::prelude::*;
use serde::Serialize;
use serde_json::{Map, Value, json};

/// The action's name as used in contexts and receipts.
pub fn action_name(a: &Action) -> &'static str {
    match a {
        Action::Reply(_) => "reply",
        Action::SetStatus(_) => "set-status",
        Action::AddTags(_) => "add-tags",
        Action::Assign(_) => "assign",
        Action::Resolve(_) => "resolve",
    }
}

/// The parts an action consists of, in order.
pub fn parts(a: &Action) -> Vec<String> {
    let v: Vec<&str> = match a {
        Action::Reply(_) => vec!["reply"],
        Action::SetStatus(_) => vec!["set-status"],
        Action::AddTags(_) => vec!["add-tags"],
        Action::Assign(_) => vec!["assign"],
        Action::Resolve(r) => {
            let mut v = vec!["reply", "set-status"];
            if !r.tags.is_empty() {
                v.push("add-tags");
            }
            if r.assignee.is_some() {
                v.push("assign");
            }
            v
        }
    };
    v.into_iter().map(str::to_string).collect()
}

fn check_reply(body: &str) -> Result<(), Failure> {
    if body.trim().is_empty() {
        // Zendesk silently ignores an empty comment, so the update would "succeed" with no reply.
        return Err(fail::invalid("a reply needs a non-empty body"));
    }
    Ok(())
}

fn check_tags(tags: &[String]) -> Result<(), Failure> {
    if tags.is_empty() {
        return Err(fail::invalid("add-tags needs at least one tag"));
    }
    if let Some(t) = tags.iter().find(|t| t.trim().is_empty()) {
        return Err(fail::invalid(format!("tag \"{t}\" is empty")));
    }
    Ok(())
}

/// `assignee_id` / `group_id` fields for an assignee (only the given ones).
pub fn assignee_fields(a: &Assignee, into: &mut Map<String, Value>) -> Result<(), Failure> {
    if a.agent_id.is_none() && a.group_id.is_none() {
        return Err(fail::invalid("assign needs an agent id or a group id"));
    }
    if let Some(agent) = &a.agent_id {
        into.insert("assignee_id".into(), id_number("assignee agent id", agent)?);
    }
    if let Some(group) = &a.group_id {
        into.insert("group_id".into(), id_number("group id", group)?);
    }
    Ok(())
}

/// Check an action's arguments without building anything (also used by read-back).
pub fn validate(a: &Action) -> Result<(), Failure> {
    match a {
        Action::Reply(body) => check_reply(body),
        Action::SetStatus(_) => Ok(()),
        Action::AddTags(tags) => check_tags(tags),
        Action::Assign(who) => assignee_fields(who, &mut Map::new()),
        Action::Resolve(r) => {
            check_reply(&r.reply)?;
            if !r.tags.is_empty() {
                check_tags(&r.tags)?;
            }
            match &r.assignee {
                Some(who) => assignee_fields(who, &mut Map::new()),
                None => Ok(()),
            }
        }
    }
}

/// `{"ticket":{"comment":{"body":..,"public":true}}}`.
#[derive(Serialize)]
struct ReplyBody<'a> {
    ticket: ReplyTicket<'a>,
}

#[derive(Serialize)]
struct ReplyTicket<'a> {
    comment: Comment<'a>,
}

#[derive(Serialize)]
struct Comment<'a> {
    body: &'a str,
    public: bool,
}

/// The request for an action on ticket `id` (canonical numeric id).
pub fn request(id: &str, action: &Action) -> Result<HttpRequest, Failure> {
    let comment = |body: &str| json!({"body": body, "public": true});
    let ticket = |fields: Map<String, Value>| json!({ "ticket": Value::Object(fields) });
    let (path, body) = match action {
        Action::Reply(text) => {
            // The hot path: serialized straight from borrowed fields, no JSON map in between.
            check_reply(text)?;
            let body = ReplyBody { ticket: ReplyTicket { comment: Comment { body: text, public: true } } };
            return Ok(update_request(Method::Put, ticket_path(id), id).json(&body).build());
        }
        Action::SetStatus(s) => {
            let mut f = Map::new();
            f.insert("status".into(), json!(status_value(*s)));
            (ticket_path(id), ticket(f))
        }
        Action::AddTags(tags) => {
            check_tags(tags)?;
            (
                format!("/api/v2/tickets/{id}/tags.json"),
                json!({ "tags": tags }),
            )
        }
        Action::Assign(who) => {
            let mut f = Map::new();
            assignee_fields(who, &mut f)?;
            (ticket_path(id), ticket(f))
        }
        Action::Resolve(r) => {
            check_reply(&r.reply)?;
            let mut f = Map::new();
            f.insert("comment".into(), comment(&r.reply));
            f.insert("status".into(), json!(status_value(r.status)));
            if !r.tags.is_empty() {
                check_tags(&r.tags)?;
                f.insert("additional_tags".into(), json!(r.tags));
            }
            if let Some(who) = &r.assignee {
                assignee_fields(who, &mut f)?;
            }
            (ticket_path(id), ticket(f))
        }
    };
    Ok(update_request(Method::Put, path, id).json(&body).build())
}

/// Plan the write.
pub fn start(a: &ApplyAction) -> Result<Step, Failure> {
    let id = numeric_id("ticket id", &a.ticket_id)?;
    send(request(&id, &a.action)?, &State::Apply)
}

/// The receipt. A 2xx whose body cannot be read still means the write landed: the receipt then
/// carries no ticket rather than failing (a failure would invite a duplicate retry).
pub fn resume(a: &ApplyAction, resp: &HttpResponse) -> Result<Step, Failure> {
    if !is_ok(resp) {
        let part = action_name(&a.action);
        return Err(classify(
            resp,
            Ctx::Write {
                part,
                ticket: &a.ticket_id,
            },
        ));
    }
    let env: WriteEnvelope = serde_json::from_slice(&resp.body).unwrap_or_default();
    let ticket = env.ticket.and_then(|t| t.into_ticket().ok());
    let has_reply = matches!(a.action, Action::Reply(_) | Action::Resolve(_));
    let reference = if has_reply {
        env.audit.and_then(|au| au.comment_id())
    } else {
        None
    };
    done(Outcome::Written(WriteReceipt {
        ticket,
        reference,
        applied: parts(&a.action),
        failed: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::*;
    use crate::translate::{resume, start};

    fn apply(id: &str, action: Action) -> Operation {
        Operation::Apply(ApplyAction {
            ticket_id: id.into(),
            action,
        })
    }

    fn receipt(o: Outcome) -> WriteReceipt {
        match o {
            Outcome::Written(w) => w,
            other => panic!("{other:?}"),
        }
    }

    fn check_write(req: &HttpRequest, path: &str, id: &str, body_json: Value) {
        assert_eq!(req.method, Method::Put);
        assert_eq!(req.path, path);
        assert_eq!(req.lane, Lane::Write);
        assert_eq!(draws(req), write_draws(id));
        assert_eq!(req_header(req, "content-type"), Some("application/json"));
        assert_eq!(req.idempotency_header, None);
        assert_eq!(body(req), body_json);
        assert_declared(req);
    }

    const UPDATE_WITH_COMMENT: &str = r#"{"ticket":{"id":42,"status":"open","subject":"Help","requester_id":5,"tags":[],"created_at":"2024-04-17T17:18:10Z","updated_at":"2024-04-17T17:20:00Z"},"audit":{"id":900,"ticket_id":42,"author_id":7,"events":[{"id":901,"type":"Comment","author_id":7,"body":"Thanks, fixed.","public":true},{"id":902,"type":"Change","field_name":"status","value":"solved","previous_value":"open"}]}}"#;

    #[test]
    fn reply() {
        let op = apply("42", Action::Reply("Thanks, fixed.".into()));
        let (req, state) = sent(start(&conn(), &op));
        check_write(
            &req,
            "/api/v2/tickets/42.json",
            "42",
            json!({"ticket":{"comment":{"body":"Thanks, fixed.","public":true}}}),
        );
        let w = receipt(finished(resume(
            &conn(),
            &op,
            &state,
            &ok_json(UPDATE_WITH_COMMENT),
        )));
        assert_eq!(w.reference.as_deref(), Some("901"));
        assert_eq!(w.applied, ["reply"]);
        assert!(w.failed.is_none());
        assert_eq!(w.ticket.unwrap().id, "42");
    }

    #[test]
    fn set_status_for_every_status() {
        for (s, v) in [
            (TicketStatus::New, "new"),
            (TicketStatus::Open, "open"),
            (TicketStatus::Pending, "pending"),
            (TicketStatus::OnHold, "hold"),
            (TicketStatus::Solved, "solved"),
            (TicketStatus::Closed, "closed"),
        ] {
            let op = apply("42", Action::SetStatus(s));
            let (req, state) = sent(start(&conn(), &op));
            check_write(
                &req,
                "/api/v2/tickets/42.json",
                "42",
                json!({"ticket":{"status": v}}),
            );
            let w = receipt(finished(resume(
                &conn(),
                &op,
                &state,
                &ok_json(UPDATE_WITH_COMMENT),
            )));
            assert_eq!(w.applied, ["set-status"]);
            assert_eq!(w.reference, None, "only replies have a reference");
        }
    }

    #[test]
    fn add_tags() {
        let op = apply("42", Action::AddTags(vec!["vip".into(), "billing".into()]));
        let (req, state) = sent(start(&conn(), &op));
        check_write(
            &req,
            "/api/v2/tickets/42/tags.json",
            "42",
            json!({"tags":["vip","billing"]}),
        );
        let w = receipt(finished(resume(
            &conn(),
            &op,
            &state,
            &ok_json(r#"{"tags":["a","vip","billing"]}"#),
        )));
        assert_eq!(w.applied, ["add-tags"]);
        assert!(w.ticket.is_none());
        for bad in [vec![], vec![" ".to_string()]] {
            assert!(matches!(
                start(&conn(), &apply("42", Action::AddTags(bad))),
                Err(Failure::Invalid(_))
            ));
        }
    }

    #[test]
    fn assign_agent_group_or_both() {
        let cases = [
            (Some("7"), None, json!({"ticket":{"assignee_id":7}})),
            (None, Some("9"), json!({"ticket":{"group_id":9}})),
            (
                Some("7"),
                Some("9"),
                json!({"ticket":{"assignee_id":7,"group_id":9}}),
            ),
        ];
        for (agent, group, expected) in cases {
            let who = Assignee {
                agent_id: agent.map(Into::into),
                group_id: group.map(Into::into),
            };
            let op = apply("42", Action::Assign(who));
            let (req, state) = sent(start(&conn(), &op));
            check_write(&req, "/api/v2/tickets/42.json", "42", expected);
            let w = receipt(finished(resume(
                &conn(),
                &op,
                &state,
                &ok_json(UPDATE_WITH_COMMENT),
            )));
            assert_eq!(w.applied, ["assign"]);
        }
        let none = Assignee {
            agent_id: None,
            group_id: None,
        };
        assert!(matches!(
            start(&conn(), &apply("42", Action::Assign(none))),
            Err(Failure::Invalid(_))
        ));
        let bad = Assignee {
            agent_id: Some("bob".into()),
            group_id: None,
        };
        assert!(matches!(
            start(&conn(), &apply("42", Action::Assign(bad))),
            Err(Failure::Invalid(m)) if m.contains("bob")
        ));
    }

    #[test]
    fn resolve_is_one_request() {
        let r = Resolution {
            reply: "Thanks, fixed.".into(),
            status: TicketStatus::Solved,
            tags: vec!["resolved-by-bot".into()],
            assignee: Some(Assignee {
                agent_id: Some("7".into()),
                group_id: Some("9".into()),
            }),
        };
        let op = apply("42", Action::Resolve(r));
        let (req, state) = sent(start(&conn(), &op));
        check_write(
            &req,
            "/api/v2/tickets/42.json",
            "42",
            json!({"ticket":{
                "comment":{"body":"Thanks, fixed.","public":true},
                "status":"solved",
                "additional_tags":["resolved-by-bot"],
                "assignee_id":7,
                "group_id":9
            }}),
        );
        let w = receipt(finished(resume(
            &conn(),
            &op,
            &state,
            &ok_json(UPDATE_WITH_COMMENT),
        )));
        assert_eq!(w.applied, ["reply", "set-status", "add-tags", "assign"]);
        assert_eq!(w.reference.as_deref(), Some("901"));

        let minimal = Resolution {
            reply: "Done".into(),
            status: TicketStatus::OnHold,
            tags: vec![],
            assignee: None,
        };
        let op = apply("42", Action::Resolve(minimal));
        let (req, state) = sent(start(&conn(), &op));
        assert_eq!(
            body(&req),
            json!({"ticket":{"comment":{"body":"Done","public":true},"status":"hold"}})
        );
        let w = receipt(finished(resume(&conn(), &op, &state, &ok_json("{}"))));
        assert_eq!(w.applied, ["reply", "set-status"]);
        assert!(w.ticket.is_none() && w.reference.is_none());
    }

    #[test]
    fn write_errors() {
        assert!(matches!(
            start(&conn(), &apply("x1", Action::Reply("hi".into()))),
            Err(Failure::Invalid(m)) if m.contains("x1")
        ));
        assert!(matches!(
            start(&conn(), &apply("42", Action::Reply("  ".into()))),
            Err(Failure::Invalid(_))
        ));
        let op = apply("42", Action::Reply("hi".into()));
        let (_, state) = sent(start(&conn(), &op));
        let r = resp(403, &fixture("403_missing_scope.json"));
        assert!(matches!(
            resume(&conn(), &op, &state, &r),
            Err(Failure::Forbidden(d)) if d.kind == PermissionKind::Scope && d.missing == "read"
        ));
        let r = resp(403, &fixture("403_role.json"));
        assert!(matches!(
            resume(&conn(), &op, &state, &r),
            Err(Failure::Forbidden(d)) if d.missing == "public comments (agent role)"
        ));
        let r = resp(422, &fixture("422_status_closed.json"));
        assert!(matches!(
            resume(&conn(), &op, &state, &r),
            Err(Failure::Invalid(_))
        ));
        let r = resp(409, &fixture("409_update_conflict.json"));
        assert!(matches!(
            resume(&conn(), &op, &state, &r),
            Err(Failure::Transient(_))
        ));
        let r = HttpResponse {
            status: 429,
            headers: vec![("retry-after".into(), "12".into())],
            body: fixture("429_account.txt").into_bytes(),
        };
        assert!(matches!(
            resume(&conn(), &op, &state, &r),
            Err(Failure::RateLimited(d)) if d.retry_after_ms == Some(12_000) && d.bucket.as_deref() == Some("account")
        ));
        let r = resp(503, "<html>maintenance</html>");
        assert!(matches!(
            resume(&conn(), &op, &state, &r),
            Err(Failure::Transient(_))
        ));
        // A 2xx with an unreadable body still landed.
        let w = receipt(finished(resume(
            &conn(),
            &op,
            &state,
            &resp(200, "<html>ok</html>"),
        )));
        assert_eq!(w.applied, ["reply"]);
    }

    #[test]
    fn recorded_update_response_gives_a_receipt() {
        let rec =
            crate::model::tests::cassette("ZendeskAPI_Ticket__update__should_be_savable.json");
        let op = apply("8868", Action::SetStatus(TicketStatus::New));
        let (_, state) = sent(start(&conn(), &op));
        let r = HttpResponse {
            status: 200,
            headers: vec![],
            body: rec[0].body.clone(),
        };
        let w = receipt(finished(resume(&conn(), &op, &state, &r)));
        assert_eq!(w.ticket.unwrap().id, "8868");
    }
}
