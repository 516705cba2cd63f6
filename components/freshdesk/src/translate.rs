//! Planning and resuming operations: dispatch to `ops/*`, plus the request builders and helpers
//! they share.
//!
//! Every operation is a small state machine: `start` returns the first request with a JSON state,
//! `resume` reads the response and either finishes or plans the next request. Each module's state
//! type is its own, so a state handed back for the wrong operation fails to parse and becomes
//! `permanent("corrupt adapter state ...")`, which is what a host bug deserves.
//!
//! | operation | requests (lane; buckets) |
//! |---|---|
//! | get-ticket | `GET /api/v2/tickets/{id}` (read; account) |
//! | list-changed | `GET /api/v2/tickets?updated_since=..&order_by=updated_at&order_type=asc&per_page=100&page=N` (read; account, tickets-list) |
//! | list-open | `GET /api/v2/search/tickets?query="status:2 OR status:3"&page=N` (read; account, tickets-list) |
//! | reply | `POST /api/v2/tickets/{id}/reply` (write; account) |
//! | set-status, assign | `PUT /api/v2/tickets/{id}` (write; account, ticket-update) |
//! | add-tags | `GET` then `PUT /api/v2/tickets/{id}` (write; the PUT replaces the tag list) |
//! | resolve | [`GET`], `POST .../reply`, one `PUT` (write) |
//! | who-am-i | `GET /api/v2/agents/me` (read; account) |
//! | probe | see [`crate::ops::probe`] |
//! | read-back | `GET /api/v2/tickets/{id}` and/or `GET /api/v2/tickets/{id}/conversations` (read) |

use crate::describe::{ACCOUNT, TICKET_UPDATE};
use crate::errors::{Part, classify};
use crate::model::FdTicket;
use crate::ops;
use deskgate_adapter_sdk::prelude::*;
use serde::de::DeserializeOwned;

/// Plan the first step of `op`.
pub fn start(conn: &Connection, op: &Operation) -> Result<Step, Failure> {
    match op {
        Operation::GetTicket(id) => ops::read::start_get(id),
        Operation::ListChanged(args) => ops::read::start_list_changed(args),
        Operation::ListOpen(cursor) => ops::read::start_list_open(cursor.as_deref()),
        Operation::WhoAmI => ops::read::start_who_am_i(),
        Operation::Apply(a) => ops::write::start(a),
        Operation::Probe(caps) => ops::probe::start(conn, caps),
        Operation::ReadBack(a) => ops::readback::start(a),
    }
}

/// Interpret `resp` to the request planned with `state`, and plan the next step.
pub fn resume(
    _conn: &Connection,
    op: &Operation,
    state: &str,
    resp: &HttpResponse,
) -> Result<Step, Failure> {
    match op {
        Operation::GetTicket(id) => ops::read::resume_get(id, state, resp),
        Operation::ListChanged(_) => ops::read::resume_list_changed(state, resp),
        Operation::ListOpen(_) => ops::read::resume_list_open(state, resp),
        Operation::WhoAmI => ops::read::resume_who_am_i(state, resp),
        Operation::Apply(a) => ops::write::resume(a, state, resp),
        Operation::Probe(caps) => ops::probe::resume(caps, state, resp),
        Operation::ReadBack(a) => ops::readback::resume(a, state, resp),
    }
}

/// Deserialize a state string this adapter produced.
///
/// # Errors
///
/// `permanent` when it does not parse: the host handed back something we never made.
pub fn parse_state<T: DeserializeOwned>(state: &str) -> Result<T, Failure> {
    serde_json::from_str(state).map_err(|e| {
        fail::permanent(format!(
            "corrupt adapter state {state:?} for this operation: {e}"
        ))
    })
}

/// A Freshdesk numeric id out of a contract id string.
///
/// # Errors
///
/// `invalid` naming `what` when it is not a plain non-negative integer.
pub fn numeric_id(id: &str, what: &str) -> Result<u64, Failure> {
    if !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_digit())
        && let Ok(n) = id.parse()
    {
        return Ok(n);
    }
    Err(fail::invalid(format!(
        "Freshdesk {what} must be a number, got {id:?}"
    )))
}

/// `Ok` for 2xx; otherwise the classified failure.
pub fn ensure_ok(resp: &HttpResponse, part: Part, object: &str) -> Result<(), Failure> {
    if Response::new(resp).is_success() {
        Ok(())
    } else {
        Err(classify(resp, part, object))
    }
}

/// Path of one ticket.
pub fn ticket_path(id: u64) -> String {
    format!("/api/v2/tickets/{id}")
}

/// `GET /api/v2/tickets/{id}` in `lane`, drawing on the account bucket.
pub fn get_ticket_request(id: u64, lane: Lane) -> HttpRequest {
    RequestBuilder::new(Method::Get, ticket_path(id))
        .lane(lane)
        .draw(ACCOUNT)
        .build()
}

/// `PUT /api/v2/tickets/{id}` with `body`, a write drawing on account and ticket-update.
pub fn put_ticket_request(id: u64, body: &serde_json::Value) -> HttpRequest {
    RequestBuilder::new(Method::Put, ticket_path(id))
        .lane(Lane::Write)
        .draw(ACCOUNT)
        .draw(TICKET_UPDATE)
        .json(body)
        .build()
}

/// `POST /api/v2/tickets/{id}/reply` with the text as HTML, a write drawing on account.
pub fn reply_request(id: u64, text: &str) -> HttpRequest {
    RequestBuilder::new(Method::Post, format!("{}/reply", ticket_path(id)))
        .lane(Lane::Write)
        .draw(ACCOUNT)
        .json(&ReplyBody { body: &reply_html(text) })
        .build()
}

/// `{"body": "<p>..</p>"}`, serialized from a borrowed field.
#[derive(serde::Serialize)]
struct ReplyBody<'a> {
    body: &'a str,
}

/// The HTML body Freshdesk stores for a plain-text reply: escaped and wrapped in one paragraph.
pub fn reply_html(text: &str) -> String {
    format!("<p>{}</p>", text::html_escape(text))
}

/// Parse a ticket object out of a 2xx body.
///
/// # Errors
///
/// `permanent` when the body is not a ticket.
pub fn parse_ticket(resp: &HttpResponse) -> Result<Ticket, Failure> {
    parse_json::<FdTicket>(&resp.body, "ticket")?.to_ticket()
}

/// Whether two tags are the same tag. Freshdesk treats tag names case-insensitively
/// (UNCONFIRMED; "VIP" and "vip" are one tag in the UI), so a case difference is not a new tag.
pub fn same_tag(a: &str, b: &str) -> bool {
    a == b || a.to_lowercase() == b.to_lowercase()
}

/// The tag list to write so that `add` is on the ticket: `existing` in its order, then the new
/// ones in the order asked, without duplicates. `None` when every tag is already there.
pub fn merge_tags(existing: &[String], add: &[String]) -> Option<Vec<String>> {
    let mut merged = existing.to_vec();
    for t in add {
        if !merged.iter().any(|m| same_tag(m, t)) {
            merged.push(t.clone());
        }
    }
    (merged.len() != existing.len()).then_some(merged)
}

/// The page number of the `Link: <...page=N...>; rel="next"` header, when there is one.
pub fn link_next_page(resp: &HttpResponse) -> Option<u32> {
    let link = header(resp, "link")?;
    link.split(',').find_map(|entry| {
        let (target, params) = entry.split_once(';')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim().to_ascii_lowercase().replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        });
        if !is_next {
            return None;
        }
        let url = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        let (_, query) = url.split_once('?')?;
        query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == "page").then(|| v.parse().ok()).flatten()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_link(v: &str) -> HttpResponse {
        HttpResponse {
            status: 200,
            headers: vec![("link".into(), v.into())],
            body: Vec::new(),
        }
    }

    #[test]
    fn ids_must_be_numeric() {
        assert_eq!(numeric_id("42", "ticket id").ok(), Some(42));
        for bad in ["", "abc", "-1", "4 2", "1e3", "99999999999999999999999"] {
            match numeric_id(bad, "ticket id") {
                Err(Failure::Invalid(m)) => assert!(m.contains("ticket id"), "{m}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn tags_merge_keeps_order_and_drops_duplicates() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            merge_tags(&s(&["b", "a"]), &s(&["c", "a", "c", "d"])),
            Some(s(&["b", "a", "c", "d"]))
        );
        assert_eq!(merge_tags(&s(&["b", "a"]), &s(&["a"])), None);
        assert_eq!(merge_tags(&s(&[]), &s(&[])), None);
        assert_eq!(merge_tags(&s(&[]), &s(&["x"])), Some(s(&["x"])));
        assert_eq!(
            merge_tags(&s(&["VIP"]), &s(&["vip", "Vip", "new"])),
            Some(s(&["VIP", "new"]))
        );
    }

    #[test]
    fn link_header_next_page() {
        let r = with_link(
            "<https://acme.freshdesk.com/api/v2/tickets?updated_since=2024-01-01T00:00:00Z&order_by=updated_at&order_type=asc&per_page=100&page=3>; rel=\"next\"",
        );
        assert_eq!(link_next_page(&r), Some(3));
        let r = with_link(
            "<https://a.freshdesk.com/api/v2/tickets?page=1>; rel=\"prev\", <https://a.freshdesk.com/api/v2/tickets?per_page=100&page=7>;rel=next",
        );
        assert_eq!(link_next_page(&r), Some(7));
        assert_eq!(
            link_next_page(&with_link("<https://a/x?page=2>; rel=\"prev\"")),
            None
        );
        assert_eq!(link_next_page(&with_link("garbage")), None);
        assert_eq!(
            link_next_page(&with_link("<https://a/x?page=two>; rel=\"next\"")),
            None
        );
        assert_eq!(
            link_next_page(&with_link("<https://a/x?per_page=2>; rel=\"next\"")),
            None
        );
    }

    #[test]
    fn reply_html_escapes() {
        assert_eq!(
            reply_html("a < b & \"c\""),
            "<p>a &lt; b &amp; &quot;c&quot;</p>"
        );
    }

    #[test]
    fn corrupt_state_is_permanent() {
        let r: Result<u32, Failure> = parse_state("{nope");
        assert!(matches!(r, Err(Failure::Permanent(m)) if m.contains("corrupt adapter state")));
    }
}
