//! read-back: has an action already landed on the conversation? One `GET /conversations/{id}` in
//! the read lane, then:
//!
//! - reply: an admin-authored `comment` or `close` part whose visible text equals the reply's
//!   (a resolution's reply rides on the close part);
//! - set-status: the state matches (`closed` for solved/closed, `open` for open/new, `snoozed` for
//!   pending/on-hold);
//! - add-tags: every tag is on the conversation (names compared case-insensitively, as Intercom
//!   does);
//! - assign: `admin_assignee_id` / `team_assignee_id` equal the requested ones.
//!
//! The newest 500 parts are all Intercom returns; an older reply is not seen.

use crate::errors::need;
use crate::model::Conversation;
use crate::ops::read::conversation;
use crate::translate::{State, conversation_id, reply_html, request};
use deskgate_adapter_sdk::prelude::*;

/// Send the read.
pub fn start(a: &ApplyAction) -> Result<Step, Failure> {
    let id = conversation_id(&a.ticket_id)?;
    send(
        request(Method::Get, format!("/conversations/{id}"), Lane::Read).build(),
        &State::ReadBack,
    )
}

/// Judge the action against the conversation.
pub fn resume(a: &ApplyAction, resp: &HttpResponse) -> Result<Step, Failure> {
    let c = conversation(resp, need::READ_CONVERSATIONS)?;
    done(Outcome::ReadBack(judge(&a.action, &c)))
}

/// The reply was sent as [`reply_html`] (escaped), so that is what the stored body is compared
/// with: a plain-text reply containing `<` still matches.
fn reply_landed(c: &Conversation, reply: &str) -> bool {
    let sent = reply_html(reply);
    c.parts().iter().any(|p| {
        p.by_admin()
            && matches!(p.part_type.as_deref(), Some("comment" | "close"))
            && p.body.as_deref().is_some_and(|b| text::same_text(b, &sent))
    })
}

fn expected_state(status: TicketStatus) -> &'static str {
    match status {
        TicketStatus::Solved | TicketStatus::Closed => "closed",
        TicketStatus::Open | TicketStatus::New => "open",
        TicketStatus::Pending | TicketStatus::OnHold => "snoozed",
    }
}

fn missing_tags(c: &Conversation, tags: &[String]) -> Vec<String> {
    let have = c.tag_names();
    tags.iter()
        .filter(|t| !have.iter().any(|h| h.trim().eq_ignore_ascii_case(t.trim())))
        .cloned()
        .collect()
}

fn assign_landed(c: &Conversation, a: &Assignee) -> bool {
    let agent_ok = a
        .agent_id
        .as_ref()
        .is_none_or(|want| c.admin_assignee_id.as_ref() == Some(want));
    let group_ok = a
        .group_id
        .as_ref()
        .is_none_or(|want| c.team_assignee_id.as_ref() == Some(want));
    agent_ok && group_ok
}

/// The read-back result of `action` on `c`.
pub fn judge(action: &Action, c: &Conversation) -> ReadBackResult {
    let state = c.raw_state();
    let mut checks: Vec<(&str, bool, String)> = Vec::new();
    let check_reply = |checks: &mut Vec<(&str, bool, String)>, reply: &str| {
        let ok = reply_landed(c, reply);
        let detail = if ok {
            "an admin part shows the reply's text".to_string()
        } else {
            format!(
                "no admin comment/close part among {} parts shows the reply's text",
                c.parts().len()
            )
        };
        checks.push(("reply", ok, detail));
    };
    let check_status = |checks: &mut Vec<(&str, bool, String)>, s: TicketStatus| {
        let want = expected_state(s);
        checks.push((
            "set-status",
            state == want,
            format!("state is {state:?}, want {want:?}"),
        ));
    };
    let check_tags = |checks: &mut Vec<(&str, bool, String)>, tags: &[String]| {
        let missing = missing_tags(c, tags);
        let detail = if missing.is_empty() {
            "all tags present".to_string()
        } else {
            format!("missing tags {missing:?}")
        };
        checks.push(("add-tags", missing.is_empty(), detail));
    };
    let check_assign = |checks: &mut Vec<(&str, bool, String)>, a: &Assignee| {
        let ok = assign_landed(c, a);
        checks.push((
            "assign",
            ok,
            format!(
                "admin_assignee_id {:?} (want {:?}), team_assignee_id {:?} (want {:?})",
                c.admin_assignee_id, a.agent_id, c.team_assignee_id, a.group_id
            ),
        ));
    };
    match action {
        Action::Reply(r) => check_reply(&mut checks, r),
        Action::SetStatus(s) => check_status(&mut checks, *s),
        Action::AddTags(t) => check_tags(&mut checks, t),
        Action::Assign(a) => check_assign(&mut checks, a),
        Action::Resolve(r) => {
            check_reply(&mut checks, &r.reply);
            check_status(&mut checks, r.status);
            if !r.tags.is_empty() {
                check_tags(&mut checks, &r.tags);
            }
            if let Some(a) = &r.assignee {
                check_assign(&mut checks, a);
            }
        }
    }
    let landed = checks.iter().all(|(_, ok, _)| *ok);
    let parts_landed = checks
        .iter()
        .filter(|(_, ok, _)| *ok)
        .map(|(p, _, _)| p.to_string())
        .collect();
    let detail = checks
        .iter()
        .map(|(p, ok, d)| format!("{p}: {} ({d})", if *ok { "landed" } else { "not landed" }))
        .collect::<Vec<_>>()
        .join("; ");
    ReadBackResult {
        landed,
        parts_landed,
        detail: format!("conversation {}: {detail}", c.id.as_deref().unwrap_or("?")),
    }
}

#[cfg(test)]
mod tests {
    use crate::IntercomAdapter;
    use crate::testutil::*;
    use deskgate_adapter_sdk::prelude::*;
    use serde_json::Value;

    fn read_back(action: Action, conv: &Value) -> ReadBackResult {
        let op = Operation::ReadBack(ApplyAction {
            ticket_id: "503".to_string(),
            action,
        });
        let (req, state) = sent(IntercomAdapter::start(conn(), op.clone()));
        assert_eq!(req.method, Method::Get);
        assert_eq!(req.path, "/conversations/503");
        assert_eq!(req.body, None);
        assert_common(&req, Lane::Read);
        match finished(IntercomAdapter::resume(
            conn(),
            op,
            state,
            json_resp(200, conv),
        )) {
            Outcome::ReadBack(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reply_landed_or_not() {
        let with = conversation(
            "503",
            "open",
            &[("1", "comment", "admin", "<p>Thanks, &lt;fixed&gt;.</p>")],
            &[],
            None,
            None,
        );
        let r = read_back(Action::Reply("Thanks, <fixed>.".to_string()), &with);
        assert!(r.landed, "{}", r.detail);
        assert_eq!(r.parts_landed, vec!["reply"]);
        // The same text from the customer, or in a private note, is not the reply.
        let customer = conversation(
            "503",
            "open",
            &[("1", "comment", "user", "<p>Thanks</p>")],
            &[],
            None,
            None,
        );
        let note = conversation(
            "503",
            "open",
            &[("1", "note", "admin", "<p>Thanks</p>")],
            &[],
            None,
            None,
        );
        for c in [customer, note] {
            let r = read_back(Action::Reply("Thanks".to_string()), &c);
            assert!(!r.landed, "{}", r.detail);
            assert!(r.parts_landed.is_empty());
        }
        // The spec's example conversation: "<p>Okay!</p>" by an admin.
        let spec = fixture_json("conversation.json");
        assert!(read_back(Action::Reply("Okay!".to_string()), &spec).landed);
        assert!(!read_back(Action::Reply("Okay".to_string()), &spec).landed);
    }

    #[test]
    fn status_landed_or_not() {
        let closed = conversation("503", "closed", &[], &[], None, None);
        let open = conversation("503", "open", &[], &[], None, None);
        let snoozed = conversation("503", "snoozed", &[], &[], None, None);
        for s in [TicketStatus::Solved, TicketStatus::Closed] {
            assert!(read_back(Action::SetStatus(s), &closed).landed);
            assert!(!read_back(Action::SetStatus(s), &open).landed);
        }
        for s in [TicketStatus::Open, TicketStatus::New] {
            assert!(read_back(Action::SetStatus(s), &open).landed);
            assert!(!read_back(Action::SetStatus(s), &snoozed).landed);
        }
        assert!(read_back(Action::SetStatus(TicketStatus::Pending), &snoozed).landed);
    }

    #[test]
    fn tags_landed_or_not() {
        let c = conversation("503", "open", &[], &["VIP", "refund"], None, None);
        assert!(
            read_back(
                Action::AddTags(vec!["vip".to_string(), "refund".to_string()]),
                &c
            )
            .landed
        );
        let r = read_back(
            Action::AddTags(vec!["vip".to_string(), "late".to_string()]),
            &c,
        );
        assert!(!r.landed);
        assert!(r.detail.contains("late"), "{}", r.detail);
    }

    #[test]
    fn assign_landed_or_not() {
        let c = conversation("503", "open", &[], &[], Some("42"), Some("7"));
        let both = Assignee {
            agent_id: Some("42".to_string()),
            group_id: Some("7".to_string()),
        };
        assert!(read_back(Action::Assign(both), &c).landed);
        let agent = Assignee {
            agent_id: Some("42".to_string()),
            group_id: None,
        };
        assert!(read_back(Action::Assign(agent), &c).landed);
        let other = Assignee {
            agent_id: Some("43".to_string()),
            group_id: None,
        };
        assert!(!read_back(Action::Assign(other), &c).landed);
        let team = Assignee {
            agent_id: None,
            group_id: Some("8".to_string()),
        };
        assert!(!read_back(Action::Assign(team), &c).landed);
        // Unassigned (0) is not assigned to anyone.
        let unassigned = conversation("503", "open", &[], &[], Some("0"), Some("0"));
        let r = read_back(
            Action::Assign(Assignee {
                agent_id: Some("0".to_string()),
                group_id: None,
            }),
            &unassigned,
        );
        assert!(r.landed, "asking for 0 and seeing 0 is the same id");
    }

    #[test]
    fn resolve_reports_each_part() {
        let res = |status| {
            Action::Resolve(Resolution {
                reply: "All fixed.".to_string(),
                status,
                tags: vec!["refund".to_string()],
                assignee: Some(Assignee {
                    agent_id: Some("42".to_string()),
                    group_id: None,
                }),
            })
        };
        let all = conversation(
            "503",
            "closed",
            &[("9", "close", "admin", "<p>All fixed.</p>")],
            &["refund"],
            Some("42"),
            None,
        );
        let r = read_back(res(TicketStatus::Solved), &all);
        assert!(r.landed, "{}", r.detail);
        assert_eq!(
            r.parts_landed,
            vec!["reply", "set-status", "add-tags", "assign"]
        );

        let half = conversation(
            "503",
            "closed",
            &[("9", "close", "admin", "<p>All fixed.</p>")],
            &[],
            None,
            None,
        );
        let r = read_back(res(TicketStatus::Solved), &half);
        assert!(!r.landed);
        assert_eq!(r.parts_landed, vec!["reply", "set-status"]);

        let none = conversation("503", "open", &[], &[], None, None);
        let r = read_back(res(TicketStatus::Closed), &none);
        assert!(!r.landed);
        assert!(r.parts_landed.is_empty());
    }

    #[test]
    fn read_back_errors() {
        let op = Operation::ReadBack(ApplyAction {
            ticket_id: "9".to_string(),
            action: Action::Reply("x".to_string()),
        });
        let (_, state) = sent(IntercomAdapter::start(conn(), op.clone()));
        let r =
            IntercomAdapter::resume(conn(), op, state, raw_resp(404, &fixture("error_404.json")));
        assert!(matches!(r, Err(Failure::NotFound(_))));
    }
}
