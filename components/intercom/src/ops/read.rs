//! get-ticket, list-changed, list-open and who-am-i: one request each, in the read lane.

use crate::errors::{classify, need};
use crate::model::{Admin, Conversation, ConversationList};
use crate::translate::{State, conversation_id, ok, request};
use deskgate_adapter_sdk::prelude::*;
use serde_json::{Value, json};

/// Results per search page (the documented maximum).
pub const PER_PAGE: u32 = 150;

/// `GET /conversations/{id}`: the conversation with its parts.
pub fn get_ticket(id: &str) -> Result<Step, Failure> {
    let id = conversation_id(id)?;
    let req = request(Method::Get, format!("/conversations/{id}"), Lane::Read).build();
    send(req, &State::GetTicket)
}

/// The ticket from a `GET /conversations/{id}` response.
pub fn resume_ticket(resp: &HttpResponse) -> Result<Step, Failure> {
    let c = conversation(resp, need::READ_CONVERSATIONS)?;
    done(Outcome::Ticket(c.into_ticket()?))
}

/// Parse a 2xx conversation response, or classify the error.
pub fn conversation(resp: &HttpResponse, need: &str) -> Result<Conversation, Failure> {
    if !ok(resp) {
        return Err(classify(resp, need));
    }
    parse_json(&resp.body, "conversation")
}

/// The lower bound of an `updated_at` search for "changed at or after `since_ms`".
///
/// The docs describe the search operator `>` on dates as "greater (or equal) than", but field
/// reports disagree on whether it is strict (UNCONFIRMED); searching from one second before `since`
/// includes every conversation updated at or after it under either reading. The overlap costs at
/// most one second of duplicates, which a sweep tolerates.
pub fn since_secs(since_ms: i64) -> i64 {
    (since_ms.div_euclid(1000) - 1).max(0)
}

/// `POST /conversations/search` for conversations updated at or after `since_ms`.
pub fn list_changed(since_ms: i64, cursor: Option<&str>) -> Result<Step, Failure> {
    search(
        json!({"field": "updated_at", "operator": ">", "value": since_secs(since_ms)}),
        cursor,
    )
}

/// `POST /conversations/search` for open conversations. `open` is true for both the "open" and the
/// "snoozed" states, i.e. everything not closed (the contract's "not solved or closed").
pub fn list_open(cursor: Option<&str>) -> Result<Step, Failure> {
    search(
        json!({"field": "open", "operator": "=", "value": true}),
        cursor,
    )
}

/// The search request body for one page.
pub fn search_body(query: Value, cursor: Option<&str>) -> Value {
    let mut pagination = json!({"per_page": PER_PAGE});
    if let Some(c) = cursor.filter(|c| !c.is_empty()) {
        pagination["starting_after"] = json!(c);
    }
    json!({"query": query, "pagination": pagination})
}

fn search(query: Value, cursor: Option<&str>) -> Result<Step, Failure> {
    let req = request(Method::Post, "/conversations/search", Lane::Read)
        .json(&search_body(query, cursor))
        .build();
    send(req, &State::ListPage)
}

/// A page of tickets from a search response; the cursor is Intercom's `starting_after`, verbatim.
pub fn resume_page(resp: &HttpResponse) -> Result<Step, Failure> {
    if !ok(resp) {
        return Err(classify(resp, need::READ_CONVERSATIONS));
    }
    let list: ConversationList = parse_json(&resp.body, "conversation search")?;
    let next_cursor = list.next_cursor();
    let tickets = list
        .conversations
        .into_iter()
        .map(Conversation::into_ticket)
        .collect::<Result<Vec<_>, _>>()?;
    done(Outcome::Page(TicketPage {
        tickets,
        next_cursor,
    }))
}

/// `GET /me`: the admin the token acts as.
pub fn who_am_i() -> Result<Step, Failure> {
    send(
        request(Method::Get, "/me", Lane::Read).build(),
        &State::WhoAmI,
    )
}

/// The identity from a `GET /me` response.
pub fn resume_who_am_i(resp: &HttpResponse) -> Result<Step, Failure> {
    if !ok(resp) {
        return Err(classify(resp, need::READ_ONE_ADMIN));
    }
    let admin: Admin = parse_json(&resp.body, "/me")?;
    let agent_id = admin
        .id
        .ok_or_else(|| fail::permanent("Intercom's /me answer has no admin id".to_string()))?;
    done(Outcome::Identity(Identity {
        agent_id,
        name: admin.name,
        email: admin.email,
        role: None,
        scopes: None,
    }))
}

#[cfg(test)]
mod tests {
    use crate::IntercomAdapter;
    use crate::testutil::*;
    use deskgate_adapter_sdk::prelude::*;
    use serde_json::json;

    fn start(op: Operation) -> Result<Step, Failure> {
        IntercomAdapter::start(conn(), op)
    }

    fn resume(op: Operation, state: String, resp: HttpResponse) -> Result<Step, Failure> {
        IntercomAdapter::resume(conn(), op, state, resp)
    }

    #[test]
    fn get_ticket_request_and_response() {
        let op = Operation::GetTicket("503".to_string());
        let (req, state) = sent(start(op.clone()));
        assert_eq!(req.method, Method::Get);
        assert_eq!(req.path, "/conversations/503");
        assert_eq!(req.body, None);
        assert_common(&req, Lane::Read);
        let out = finished(resume(
            op,
            state,
            json_resp(200, &fixture_json("conversation.json")),
        ));
        match out {
            Outcome::Ticket(t) => {
                assert_eq!(t.id, "503");
                assert_eq!(t.status, TicketStatus::Solved);
                assert_eq!(t.comments.len(), 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn get_ticket_errors() {
        assert!(matches!(
            start(Operation::GetTicket("abc".to_string())),
            Err(Failure::Invalid(m)) if m.contains("\"abc\"")
        ));
        let op = Operation::GetTicket("7".to_string());
        let (_, state) = sent(start(op.clone()));
        let r = resume(
            op.clone(),
            state.clone(),
            raw_resp(404, &fixture("error_404.json")),
        );
        assert!(matches!(r, Err(Failure::NotFound(_))));
        // 403 on a read infers "Read conversations".
        let r = resume(
            op.clone(),
            state.clone(),
            raw_resp(403, &fixture("error_403_action_forbidden_nodata.json")),
        );
        assert!(matches!(r, Err(Failure::Forbidden(d)) if d.missing == "Read conversations"));
        // A 2xx that is not a conversation is a failure, not a panic.
        let r = resume(op, state, raw_resp(200, "<html>ok</html>"));
        assert!(matches!(r, Err(Failure::Permanent(_))));
    }

    #[test]
    fn list_changed_first_page() {
        let op = Operation::ListChanged(ListChanged {
            since: 1_700_000_000_500,
            cursor: None,
        });
        let (req, _) = sent(start(op));
        assert_eq!(req.method, Method::Post);
        assert_eq!(req.path, "/conversations/search");
        assert_common(&req, Lane::Read);
        assert_eq!(
            body(&req),
            json!({"query":{"field":"updated_at","operator":">","value":1_699_999_999},
                   "pagination":{"per_page":150}})
        );
    }

    #[test]
    fn list_changed_cursor_page_and_last_page() {
        let op = Operation::ListChanged(ListChanged {
            since: 1_700_000_000_000,
            cursor: Some("WzE3MDAwMDAxMDAsIjUxNSJd".to_string()),
        });
        let (req, state) = sent(start(op.clone()));
        assert_eq!(
            body(&req),
            json!({"query":{"field":"updated_at","operator":">","value":1_699_999_999},
                   "pagination":{"per_page":150,"starting_after":"WzE3MDAwMDAxMDAsIjUxNSJd"}})
        );
        // A page with a next cursor.
        let mut page = fixture_json("search.json");
        page["pages"]["next"] = json!({"page": 2, "starting_after": "WzE3MDAwMDAyMDAsIjYwMCJd"});
        match finished(resume(op.clone(), state.clone(), json_resp(200, &page))) {
            Outcome::Page(p) => {
                assert_eq!(p.tickets.len(), 1);
                assert_eq!(p.tickets[0].id, "515");
                assert!(p.tickets[0].comments.is_empty());
                assert_eq!(p.next_cursor.as_deref(), Some("WzE3MDAwMDAyMDAsIjYwMCJd"));
            }
            other => panic!("{other:?}"),
        }
        // The spec's example is a last page: no `next`.
        match finished(resume(
            op,
            state,
            json_resp(200, &fixture_json("search.json")),
        )) {
            Outcome::Page(p) => {
                assert_eq!(p.tickets.len(), 1);
                assert_eq!(p.next_cursor, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn list_changed_since_zero_does_not_go_negative() {
        let (req, _) = sent(start(Operation::ListChanged(ListChanged {
            since: 0,
            cursor: None,
        })));
        assert_eq!(body(&req)["query"]["value"], json!(0));
    }

    #[test]
    fn list_open_pages() {
        let op = Operation::ListOpen(None);
        let (req, state) = sent(start(op.clone()));
        assert_eq!(req.method, Method::Post);
        assert_eq!(req.path, "/conversations/search");
        assert_common(&req, Lane::Read);
        assert_eq!(
            body(&req),
            json!({"query":{"field":"open","operator":"=","value":true},"pagination":{"per_page":150}})
        );
        let (req, _) = sent(start(Operation::ListOpen(Some("abc".to_string()))));
        assert_eq!(
            body(&req)["pagination"],
            json!({"per_page":150,"starting_after":"abc"})
        );
        let empty = json!({"type":"conversation.list","pages":{"type":"pages","page":1,"per_page":150,"total_pages":0},"total_count":0,"conversations":[]});
        match finished(resume(op.clone(), state.clone(), json_resp(200, &empty))) {
            Outcome::Page(p) => assert!(p.tickets.is_empty() && p.next_cursor.is_none()),
            other => panic!("{other:?}"),
        }
        let r = resume(op, state, raw_resp(429, &fixture("error_429.json")));
        assert!(matches!(r, Err(Failure::RateLimited(_))));
    }

    #[test]
    fn who_am_i_request_and_identity() {
        let (req, state) = sent(start(Operation::WhoAmI));
        assert_eq!(req.method, Method::Get);
        assert_eq!(req.path, "/me");
        assert_eq!(req.body, None);
        assert_common(&req, Lane::Read);
        match finished(resume(
            Operation::WhoAmI,
            state.clone(),
            json_resp(200, &fixture_json("me.json")),
        )) {
            Outcome::Identity(i) => {
                assert_eq!(i.agent_id, "991267459");
                assert_eq!(i.name.as_deref(), Some("Ciaran1 Lee"));
                assert_eq!(i.email.as_deref(), Some("admin1@email.com"));
                assert_eq!(i.role, None);
                assert_eq!(i.scopes, None);
            }
            other => panic!("{other:?}"),
        }
        let r = resume(
            Operation::WhoAmI,
            state,
            raw_resp(401, &fixture("error_401.json")),
        );
        assert!(matches!(r, Err(Failure::Unauthenticated(_))));
    }
}
