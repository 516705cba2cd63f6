//! Read-back: is an action already on the ticket?
//!
//! After an ambiguous outcome (the request left, no answer came) the host asks before retrying,
//! since Freshdesk has no idempotency key. All reads go in the read lane.
//!
//! - reply: `GET /api/v2/tickets/{id}/conversations?per_page=100` (then `&page=N` while the `Link`
//!   header names a next page or a page comes back full, at most 10 pages). Landed when a
//!   conversation is public (`private: false`), from the agent side (`incoming: false`) and shows
//!   the same visible text as the reply we would have posted.
//! - set-status, add-tags, assign: `GET /api/v2/tickets/{id}`. A status landed when the ticket's
//!   normalized status is the one asked (new and open are both Freshdesk's 2; a ticket already
//!   closed counts for a resolution, since closing follows resolving). Tags landed when all are
//!   present; an assignee when agent and group (whichever were asked) are equal.
//! - resolve: the ticket, then the conversations; `parts-landed` lists what is there and landed
//!   means every requested part is.

use crate::describe::ACCOUNT;
use crate::errors::Part;
use crate::model::{FdConversation, FdTicket, code_to_status, id_of, status_code_of, tags_of};
use crate::translate::{
    ensure_ok, get_ticket_request, link_next_page, numeric_id, parse_state, reply_html, same_tag,
    ticket_path,
};
use deskgate_adapter_sdk::prelude::*;
use serde::{Deserialize, Serialize};

const CONVERSATIONS_PER_PAGE: usize = 100;
const CONVERSATIONS_MAX_PAGES: u32 = 10;

/// What the ticket read showed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Seen {
    status: Option<i64>,
    tags: Vec<String>,
    responder: Option<String>,
    group: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "rb", rename_all = "kebab-case")]
enum ReadBackState {
    Ticket,
    Conversations { page: u32, seen: Option<Seen> },
}

fn conversations_request(id: u64, page: u32) -> HttpRequest {
    let path = if page == 1 {
        format!(
            "{}/conversations?per_page={CONVERSATIONS_PER_PAGE}",
            ticket_path(id)
        )
    } else {
        format!(
            "{}/conversations?per_page={CONVERSATIONS_PER_PAGE}&page={page}",
            ticket_path(id)
        )
    };
    RequestBuilder::new(Method::Get, path)
        .lane(Lane::Read)
        .draw(ACCOUNT)
        .build()
}

fn validate(action: &Action) -> Result<(), Failure> {
    let check = |a: &Assignee| -> Result<(), Failure> {
        if let Some(x) = &a.agent_id {
            numeric_id(x, "agent id")?;
        }
        if let Some(x) = &a.group_id {
            numeric_id(x, "group id")?;
        }
        Ok(())
    };
    match action {
        Action::Assign(a) => check(a),
        Action::Resolve(r) => r.assignee.as_ref().map_or(Ok(()), check),
        _ => Ok(()),
    }
}

/// Plan the first read.
pub fn start(a: &ApplyAction) -> Result<Step, Failure> {
    let id = numeric_id(&a.ticket_id, "ticket id")?;
    validate(&a.action)?;
    match &a.action {
        Action::Reply(_) => send(
            conversations_request(id, 1),
            &ReadBackState::Conversations {
                page: 1,
                seen: None,
            },
        ),
        _ => send(get_ticket_request(id, Lane::Read), &ReadBackState::Ticket),
    }
}

/// Whether the status asked for is what the ticket shows.
pub fn status_landed(asked: TicketStatus, code: Option<i64>) -> bool {
    let Some(code) = code else { return false };
    let now = code_to_status(code);
    match asked {
        TicketStatus::New | TicketStatus::Open => now == TicketStatus::Open,
        TicketStatus::Solved => matches!(now, TicketStatus::Solved | TicketStatus::Closed),
        other => now == other,
    }
}

fn same_id(asked: &str, seen: Option<&String>) -> bool {
    match (
        asked.parse::<u64>(),
        seen.and_then(|s| s.parse::<u64>().ok()),
    ) {
        (Ok(a), Some(b)) => a == b,
        _ => false,
    }
}

fn assignee_landed(asked: &Assignee, seen: &Seen) -> bool {
    asked
        .agent_id
        .as_deref()
        .is_none_or(|a| same_id(a, seen.responder.as_ref()))
        && asked
            .group_id
            .as_deref()
            .is_none_or(|g| same_id(g, seen.group.as_ref()))
}

fn tags_landed(asked: &[String], seen: &Seen) -> bool {
    asked
        .iter()
        .all(|t| seen.tags.iter().any(|s| same_tag(s, t)))
}

fn describe_seen(s: &Seen) -> String {
    format!(
        "status {} ({:?}), tags [{}], agent {}, group {}",
        s.status.map_or("none".to_string(), |c| c.to_string()),
        s.status.map(code_to_status),
        s.tags.join(", "),
        s.responder.as_deref().unwrap_or("none"),
        s.group.as_deref().unwrap_or("none"),
    )
}

/// The conversation that is our reply, if present on this page.
fn find_reply<'a>(convs: &'a [FdConversation], reply: &str) -> Option<&'a FdConversation> {
    let html = reply_html(reply);
    let plain = text::html_escape(reply);
    convs.iter().find(|c| {
        c.private == Some(false)
            && c.incoming == Some(false)
            && (c.body.as_deref().is_some_and(|b| text::same_text(b, &html))
                || c.body_text
                    .as_deref()
                    .is_some_and(|b| text::same_text(&text::html_escape(b), &plain)))
    })
}

fn answer(landed: bool, parts: Vec<&str>, detail: String) -> Result<Step, Failure> {
    done(Outcome::ReadBack(ReadBackResult {
        landed,
        parts_landed: parts.into_iter().map(str::to_string).collect(),
        detail,
    }))
}

/// The verdict for the ticket-only actions, and for a resolution once the reply is settled.
fn verdict(action: &Action, seen: &Seen, reply: Option<Option<String>>) -> Result<Step, Failure> {
    let seen_text = describe_seen(seen);
    match action {
        Action::SetStatus(s) => {
            let ok = status_landed(*s, seen.status);
            answer(
                ok,
                if ok { vec!["set-status"] } else { vec![] },
                format!("ticket shows {seen_text}"),
            )
        }
        Action::AddTags(tags) => {
            let ok = tags_landed(tags, seen);
            answer(
                ok,
                if ok { vec!["add-tags"] } else { vec![] },
                format!("ticket shows {seen_text}"),
            )
        }
        Action::Assign(a) => {
            let ok = assignee_landed(a, seen);
            answer(
                ok,
                if ok { vec!["assign"] } else { vec![] },
                format!("ticket shows {seen_text}"),
            )
        }
        Action::Resolve(r) => {
            let mut parts = Vec::new();
            let mut all = true;
            let reply_part = reply.clone().flatten();
            if reply_part.is_some() {
                parts.push("reply");
            } else {
                all = false;
            }
            if status_landed(r.status, seen.status) {
                parts.push("set-status");
            } else {
                all = false;
            }
            if !r.tags.is_empty() {
                if tags_landed(&r.tags, seen) {
                    parts.push("add-tags");
                } else {
                    all = false;
                }
            }
            if let Some(a) = &r.assignee {
                if assignee_landed(a, seen) {
                    parts.push("assign");
                } else {
                    all = false;
                }
            }
            let reply_text = match reply_part {
                Some(id) => format!("reply found (conversation {id})"),
                None => "reply not found".to_string(),
            };
            answer(
                all,
                parts,
                format!("{reply_text}; ticket shows {seen_text}"),
            )
        }
        Action::Reply(_) => match reply.flatten() {
            Some(id) => answer(
                true,
                vec!["reply"],
                format!("reply found (conversation {id})"),
            ),
            None => answer(
                false,
                vec![],
                "no public agent reply with that text".to_string(),
            ),
        },
    }
}

/// Read the response and decide, or read on.
pub fn resume(a: &ApplyAction, state: &str, resp: &HttpResponse) -> Result<Step, Failure> {
    let st: ReadBackState = parse_state(state)?;
    let id = numeric_id(&a.ticket_id, "ticket id")?;
    let obj = format!("ticket {}", a.ticket_id);
    match st {
        ReadBackState::Ticket => {
            ensure_ok(resp, Part::ReadTickets, &obj)?;
            let t: FdTicket = parse_json(&resp.body, "ticket")?;
            let seen = Seen {
                status: status_code_of(&t.status),
                tags: tags_of(&t.tags),
                responder: id_of(&t.responder_id),
                group: id_of(&t.group_id),
            };
            if matches!(a.action, Action::Resolve(_)) {
                send(
                    conversations_request(id, 1),
                    &ReadBackState::Conversations {
                        page: 1,
                        seen: Some(seen),
                    },
                )
            } else {
                verdict(&a.action, &seen, None)
            }
        }
        ReadBackState::Conversations { page, seen } => {
            ensure_ok(resp, Part::ReadTickets, &obj)?;
            let convs: Vec<FdConversation> = parse_json(&resp.body, "conversation list")?;
            let text = match &a.action {
                Action::Reply(t) => t,
                Action::Resolve(r) => &r.reply,
                _ => {
                    return Err(fail::permanent(
                        "corrupt adapter state: conversations for an action without a reply",
                    ));
                }
            };
            let found = find_reply(&convs, text).map(|c| id_of(&c.id).unwrap_or_default());
            let more = link_next_page(resp).filter(|p| *p > page).is_some()
                || convs.len() >= CONVERSATIONS_PER_PAGE;
            if found.is_none() && more && page < CONVERSATIONS_MAX_PAGES {
                return send(
                    conversations_request(id, page + 1),
                    &ReadBackState::Conversations {
                        page: page + 1,
                        seen,
                    },
                );
            }
            verdict(&a.action, &seen.unwrap_or_default(), Some(found))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testkit::*;
    use crate::translate::{resume as tresume, start as tstart};
    use serde_json::json;

    fn rb(action: Action) -> Operation {
        Operation::ReadBack(ApplyAction {
            ticket_id: "4711".into(),
            action,
        })
    }

    fn result(out: Outcome) -> ReadBackResult {
        match out {
            Outcome::ReadBack(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn one_step(op: &Operation, body: &[u8]) -> ReadBackResult {
        let (_, state) = sent(tstart(&conn(None), op));
        result(finished(tresume(&conn(None), op, &state, &resp(200, body))))
    }

    fn ticket(status: i64, tags: &[&str], responder: Option<u64>, group: Option<u64>) -> Vec<u8> {
        serde_json::to_vec(&json!({"id": 4711, "status": status, "tags": tags,
            "responder_id": responder, "group_id": group,
            "created_at": "2024-04-17T17:18:10Z", "updated_at": "2024-04-18T08:00:00Z"}))
        .unwrap()
    }

    #[test]
    fn reply_landed_and_not() {
        let op = rb(Action::Reply(
            "We replaced the fuser & the fire is out.".into(),
        ));
        let (req, state) = sent(tstart(&conn(None), &op));
        assert_req(
            &req,
            Method::Get,
            "/api/v2/tickets/4711/conversations?per_page=100",
            Lane::Read,
            &["account"],
        );
        let r = result(finished(tresume(
            &conn(None),
            &op,
            &state,
            &resp(200, &fixture("conversations.json")),
        )));
        assert!(r.landed);
        assert_eq!(r.parts_landed, vec!["reply"]);
        assert!(r.detail.contains("9003"), "{}", r.detail);

        // A private note with the text does not count, nor does the customer's message.
        for text in [
            "Thanks, fixed.",
            "It is still on fire, please help",
            "Something else",
        ] {
            let op = rb(Action::Reply(text.into()));
            let r = one_step(&op, &fixture("conversations.json"));
            assert!(!r.landed, "{text}");
            assert!(r.parts_landed.is_empty());
        }
        // Text with markup characters matches what the reply stored.
        let op = rb(Action::Reply("a < b".into()));
        let conv = serde_json::to_vec(&json!([{"id": 1, "body": "<p>a &lt; b</p>", "body_text": "a < b", "incoming": false, "private": false}])).unwrap();
        assert!(one_step(&op, &conv).landed);
        let conv = serde_json::to_vec(
            &json!([{"id": 1, "body_text": "a  <  b", "incoming": false, "private": false}]),
        )
        .unwrap();
        assert!(one_step(&op, &conv).landed);
    }

    #[test]
    fn reply_read_back_follows_pages() {
        let op = rb(Action::Reply("needle".into()));
        let (_, state) = sent(tstart(&conn(None), &op));
        let filler: Vec<_> = (0..100)
            .map(|i| json!({"id": i, "body": "<p>hay</p>", "incoming": false, "private": false}))
            .collect();
        let (req, state) = sent(tresume(
            &conn(None),
            &op,
            &state,
            &resp(200, &serde_json::to_vec(&filler).unwrap()),
        ));
        assert_req(
            &req,
            Method::Get,
            "/api/v2/tickets/4711/conversations?per_page=100&page=2",
            Lane::Read,
            &["account"],
        );
        let last = serde_json::to_vec(
            &json!([{"id": 500, "body": "<div>needle</div>", "incoming": false, "private": false}]),
        )
        .unwrap();
        let r = result(finished(tresume(
            &conn(None),
            &op,
            &state,
            &resp(200, &last),
        )));
        assert!(r.landed);
    }

    #[test]
    fn status_landed_and_not() {
        let cases = [
            (TicketStatus::Solved, 4, true),
            (TicketStatus::Solved, 5, true),
            (TicketStatus::Solved, 2, false),
            (TicketStatus::Closed, 4, false),
            (TicketStatus::Closed, 5, true),
            (TicketStatus::Open, 2, true),
            (TicketStatus::New, 2, true),
            (TicketStatus::Pending, 3, true),
            (TicketStatus::Pending, 6, true),
            (TicketStatus::Pending, 2, false),
            (TicketStatus::OnHold, 7, true),
            (TicketStatus::OnHold, 3, false),
        ];
        for (asked, code, want) in cases {
            let op = rb(Action::SetStatus(asked));
            let (req, _) = sent(tstart(&conn(None), &op));
            assert_req(
                &req,
                Method::Get,
                "/api/v2/tickets/4711",
                Lane::Read,
                &["account"],
            );
            let r = one_step(&op, &ticket(code, &[], None, None));
            assert_eq!(r.landed, want, "{asked:?} vs {code}");
            assert_eq!(r.parts_landed.is_empty(), !want);
        }
    }

    #[test]
    fn tags_landed_and_not() {
        let op = rb(Action::AddTags(vec!["hardware".into(), "urgent".into()]));
        assert!(one_step(&op, &fixture("ticket.json")).landed);
        let op = rb(Action::AddTags(vec!["Urgent".into()]));
        assert!(one_step(&op, &fixture("ticket.json")).landed);
        let op = rb(Action::AddTags(vec!["hardware".into(), "vip".into()]));
        let r = one_step(&op, &fixture("ticket.json"));
        assert!(!r.landed);
        assert!(r.detail.contains("hardware, urgent"), "{}", r.detail);
    }

    #[test]
    fn assign_landed_and_not() {
        let a = |agent: Option<&str>, group: Option<&str>| {
            rb(Action::Assign(Assignee {
                agent_id: agent.map(str::to_string),
                group_id: group.map(str::to_string),
            }))
        };
        let body = fixture("ticket.json");
        assert!(one_step(&a(Some("80002222"), None), &body).landed);
        assert!(one_step(&a(None, Some("80000123")), &body).landed);
        assert!(one_step(&a(Some("80002222"), Some("80000123")), &body).landed);
        assert!(!one_step(&a(Some("1"), Some("80000123")), &body).landed);
        assert!(!one_step(&a(None, Some("2")), &ticket(2, &[], None, None)).landed);
        assert!(matches!(
            tstart(&conn(None), &a(Some("x"), None)),
            Err(Failure::Invalid(_))
        ));
    }

    #[test]
    fn resolve_reads_ticket_then_conversations() {
        let op = rb(Action::Resolve(Resolution {
            reply: "We replaced the fuser & the fire is out.".into(),
            status: TicketStatus::Solved,
            tags: vec!["urgent".into(), "fixed".into()],
            assignee: Some(Assignee {
                agent_id: Some("80002222".into()),
                group_id: None,
            }),
        }));
        let (req, state) = sent(tstart(&conn(None), &op));
        assert_req(
            &req,
            Method::Get,
            "/api/v2/tickets/4711",
            Lane::Read,
            &["account"],
        );
        let (req, state) = sent(tresume(
            &conn(None),
            &op,
            &state,
            &resp(200, &ticket(4, &["urgent"], Some(80002222), None)),
        ));
        assert_req(
            &req,
            Method::Get,
            "/api/v2/tickets/4711/conversations?per_page=100",
            Lane::Read,
            &["account"],
        );
        let r = result(finished(tresume(
            &conn(None),
            &op,
            &state,
            &resp(200, &fixture("conversations.json")),
        )));
        assert!(!r.landed);
        assert_eq!(r.parts_landed, vec!["reply", "set-status", "assign"]);

        // Everything there.
        let (_, state) = sent(tstart(&conn(None), &op));
        let (_, state) = sent(tresume(
            &conn(None),
            &op,
            &state,
            &resp(200, &ticket(5, &["urgent", "fixed"], Some(80002222), None)),
        ));
        let r = result(finished(tresume(
            &conn(None),
            &op,
            &state,
            &resp(200, &fixture("conversations.json")),
        )));
        assert!(r.landed);
        assert_eq!(
            r.parts_landed,
            vec!["reply", "set-status", "add-tags", "assign"]
        );

        // Nothing there but the status.
        let (_, state) = sent(tstart(&conn(None), &op));
        let (_, state) = sent(tresume(
            &conn(None),
            &op,
            &state,
            &resp(200, &ticket(4, &[], None, None)),
        ));
        let r = result(finished(tresume(
            &conn(None),
            &op,
            &state,
            &resp(200, b"[]"),
        )));
        assert!(!r.landed);
        assert_eq!(r.parts_landed, vec!["set-status"]);
        assert!(r.detail.contains("reply not found"));
    }

    #[test]
    fn read_back_errors() {
        let op = rb(Action::SetStatus(TicketStatus::Solved));
        let (_, state) = sent(tstart(&conn(None), &op));
        assert!(matches!(
            tresume(&conn(None), &op, &state, &resp(404, b"")),
            Err(Failure::NotFound(_))
        ));
        assert!(matches!(
            tresume(&conn(None), &op, &state, &resp(200, b"not json")),
            Err(Failure::Permanent(_))
        ));
        let op = rb(Action::Reply("x".into()));
        let (_, state) = sent(tstart(&conn(None), &op));
        assert!(matches!(
            tresume(&conn(None), &op, &state, &resp(403, &fixture("error_403_access_denied.json"))),
            Err(Failure::Forbidden(d)) if d.missing == "View tickets"
        ));
    }
}
