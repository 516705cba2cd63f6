//! Reads: one ticket, tickets changed since a time, open tickets, and who the key acts as.
//!
//! # Sweeping changed tickets
//!
//! `GET /api/v2/tickets` is page-numbered (100 per page at most) and refuses pages beyond 300
//! with a 400. The cursor is `"{updated_since_ms}:{page}"`. Whether more follows comes from the
//! `Link` header's `rel="next"`, or, if Freshdesk sent none, from the page coming back full.
//!
//! The sweep continues by keyset, not by page number: the next cursor is page 1 with
//! `updated_since` set to the last ticket's `updated_at` second. Page numbers shift while tickets
//! are updated mid-sweep: an updated ticket leaves its place for the end of the order, the tickets
//! after it move up one, and the first ticket of the next page lands on the page already read.
//! That ticket was not updated, so no later sweep (they start from a recent `since`) would list it
//! again: with resolutions landing while a first sweep paged through 3,000 tickets, the demo lost
//! 81 tickets of one connection that way. Restarting from the last second read cannot skip: a
//! ticket updated meanwhile moves to a later second, which is still ahead. Tickets of that second
//! come again (the host dedupes on ticket and update time). Only when a whole page shares
//! `since`'s second does the cursor move on by page number, and should page 300 still be in that
//! second, by a second, rather than loop forever.
//!
//! # Open tickets
//!
//! The search API serves 30 results per page and at most 10 pages: the first 300 matches only.
//! `list-open` asks for statuses 2 (Open) and 3 (Pending); custom statuses are not included. The
//! search index lags by minutes.

use crate::describe::{ACCOUNT, TICKETS_LIST};
use crate::errors::Part;
use crate::model::{FdAgent, FdSearch, FdTicket, id_of};
use crate::translate::{
    ensure_ok, get_ticket_request, link_next_page, numeric_id, parse_state, parse_ticket,
};
use deskgate_adapter_sdk::prelude::*;
use serde::{Deserialize, Serialize};

/// Tickets per list page (the API's maximum).
pub const LIST_PER_PAGE: usize = 100;
/// Highest page `GET /api/v2/tickets` serves.
pub const LIST_MAX_PAGE: u32 = 300;
/// Results per search page (fixed by the API).
pub const SEARCH_PER_PAGE: u64 = 30;
/// Highest search page.
pub const SEARCH_MAX_PAGE: u32 = 10;
/// `"status:2 OR status:3"`, quotes included, percent-encoded.
pub const OPEN_QUERY: &str = "%22status%3A2%20OR%20status%3A3%22";

#[derive(Serialize, Deserialize)]
struct GetState {
    get: u64,
}

/// `GET /api/v2/tickets/{id}`.
pub fn start_get(id: &str) -> Result<Step, Failure> {
    let n = numeric_id(id, "ticket id")?;
    send(get_ticket_request(n, Lane::Read), &GetState { get: n })
}

/// The ticket.
pub fn resume_get(id: &str, state: &str, resp: &HttpResponse) -> Result<Step, Failure> {
    let _: GetState = parse_state(state)?;
    ensure_ok(resp, Part::ReadTickets, &format!("ticket {id}"))?;
    done(Outcome::Ticket(parse_ticket(resp)?))
}

#[derive(Serialize, Deserialize)]
struct ListState {
    since_ms: i64,
    page: u32,
}

fn list_changed_request(since_ms: i64, page: u32) -> HttpRequest {
    RequestBuilder::new(
        Method::Get,
        format!(
            "/api/v2/tickets?updated_since={}&order_by=updated_at&order_type=asc&per_page={LIST_PER_PAGE}&page={page}",
            text::format_rfc3339(since_ms)
        ),
    )
    .lane(Lane::Read)
    .draw(ACCOUNT)
    .draw(TICKETS_LIST)
    .build()
}

fn parse_list_cursor(c: &str) -> Result<(i64, u32), Failure> {
    let bad = || {
        fail::invalid(format!(
            "list-changed cursor {c:?} was not made by the Freshdesk adapter"
        ))
    };
    let (ms, page) = c.rsplit_once(':').ok_or_else(bad)?;
    let ms: i64 = ms.parse().map_err(|_| bad())?;
    let page: u32 = page.parse().map_err(|_| bad())?;
    if !(1..=LIST_MAX_PAGE).contains(&page) {
        return Err(bad());
    }
    Ok((ms, page))
}

/// First page from `since`, or the page the cursor names.
pub fn start_list_changed(args: &ListChanged) -> Result<Step, Failure> {
    let (since_ms, page) = match &args.cursor {
        None => (args.since, 1),
        Some(c) => parse_list_cursor(c)?,
    };
    send(
        list_changed_request(since_ms, page),
        &ListState { since_ms, page },
    )
}

/// One page and the cursor of the next.
pub fn resume_list_changed(state: &str, resp: &HttpResponse) -> Result<Step, Failure> {
    let st: ListState = parse_state(state)?;
    ensure_ok(resp, Part::ReadTickets, "tickets")?;
    let raw: Vec<FdTicket> = parse_json(&resp.body, "ticket list")?;
    let tickets = raw
        .iter()
        .map(FdTicket::to_ticket)
        .collect::<Result<Vec<_>, _>>()?;
    let more = link_next_page(resp).is_some_and(|p| p > st.page) || tickets.len() >= LIST_PER_PAGE;
    let since_s = st.since_ms.div_euclid(1000);
    let last_s = tickets
        .last()
        .map_or(since_s, |t| t.updated_at.div_euclid(1000));
    let next_cursor = if !more {
        None
    } else if last_s > since_s {
        // Keyset, not page numbers: start again at page 1 from the last ticket's second.
        Some(format!("{}:1", last_s.saturating_mul(1000)))
    } else if st.page < LIST_MAX_PAGE {
        // The whole page shares `since`'s second: page on within it.
        Some(format!("{}:{}", st.since_ms, st.page + 1))
    } else {
        // Freshdesk serves no page past 300: move on by a second rather than loop forever.
        Some(format!(
            "{}:1",
            since_s.saturating_add(1).saturating_mul(1000)
        ))
    };
    done(Outcome::Page(TicketPage {
        tickets,
        next_cursor,
    }))
}

#[derive(Serialize, Deserialize)]
struct OpenState {
    search_page: u32,
}

/// `GET /api/v2/search/tickets?query="status:2 OR status:3"&page=N`.
pub fn start_list_open(cursor: Option<&str>) -> Result<Step, Failure> {
    let page = match cursor {
        None => 1,
        Some(c) => c
            .parse::<u32>()
            .ok()
            .filter(|p| (1..=SEARCH_MAX_PAGE).contains(p))
            .ok_or_else(|| {
                fail::invalid(format!(
                    "list-open cursor {c:?} was not made by the Freshdesk adapter"
                ))
            })?,
    };
    let req = RequestBuilder::new(
        Method::Get,
        format!("/api/v2/search/tickets?query={OPEN_QUERY}&page={page}"),
    )
    .lane(Lane::Read)
    .draw(ACCOUNT)
    // Whether search spends the "Tickets List" limit is UNCONFIRMED; counting it is the safe
    // side (an over-count only slows sweeps, an under-count earns 429s).
    .draw(TICKETS_LIST)
    .build();
    send(req, &OpenState { search_page: page })
}

/// One page of search results; the next while `page < 10` and `page * 30 < total`.
pub fn resume_list_open(state: &str, resp: &HttpResponse) -> Result<Step, Failure> {
    let st: OpenState = parse_state(state)?;
    ensure_ok(resp, Part::Search, "tickets")?;
    let found: FdSearch = parse_json(&resp.body, "ticket search")?;
    let results = found.results.unwrap_or_default();
    let tickets = results
        .iter()
        .map(FdTicket::to_ticket)
        .collect::<Result<Vec<_>, _>>()?;
    let total = found.total.as_ref().and_then(|t| match t {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    });
    let more = match total {
        Some(total) => u64::from(st.search_page) * SEARCH_PER_PAGE < total,
        None => tickets.len() as u64 >= SEARCH_PER_PAGE,
    };
    let next_cursor = (more && !tickets.is_empty() && st.search_page < SEARCH_MAX_PAGE)
        .then(|| (st.search_page + 1).to_string());
    done(Outcome::Page(TicketPage {
        tickets,
        next_cursor,
    }))
}

#[derive(Serialize, Deserialize)]
struct MeState {
    me: bool,
}

/// `GET /api/v2/agents/me`.
pub fn start_who_am_i() -> Result<Step, Failure> {
    send(me_request(), &MeState { me: true })
}

/// `GET /api/v2/agents/me` in the read lane.
pub fn me_request() -> HttpRequest {
    RequestBuilder::new(Method::Get, "/api/v2/agents/me")
        .lane(Lane::Read)
        .draw(ACCOUNT)
        .build()
}

/// The identity out of an agent object (shape UNCONFIRMED for `/me`).
///
/// # Errors
///
/// `permanent` when the body is not an agent with an id.
pub fn parse_identity(resp: &HttpResponse) -> Result<Identity, Failure> {
    let agent: FdAgent = parse_json(&resp.body, "agents/me")?;
    let agent_id = id_of(&agent.id)
        .ok_or_else(|| fail::permanent("Freshdesk's agents/me answer has no agent id"))?;
    let contact = agent.contact.unwrap_or_default();
    let role = agent.kind.filter(|k| !k.trim().is_empty()).or_else(|| {
        let ids: Vec<String> = agent.role_ids.iter().flatten().filter_map(id_of).collect();
        (!ids.is_empty()).then(|| format!("role_ids:{}", ids.join(",")))
    });
    Ok(Identity {
        agent_id,
        name: contact.name.filter(|s| !s.is_empty()),
        email: contact.email.filter(|s| !s.is_empty()),
        role,
        // Freshdesk keys have no scopes; the agent's role decides.
        scopes: None,
    })
}

/// The identity.
pub fn resume_who_am_i(state: &str, resp: &HttpResponse) -> Result<Step, Failure> {
    let _: MeState = parse_state(state)?;
    ensure_ok(resp, Part::WhoAmI, "agent")?;
    done(Outcome::Identity(parse_identity(resp)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testkit::*;
    use crate::translate::{resume, start};
    use serde_json::json;

    fn ticket_json(id: u64, updated: &str) -> serde_json::Value {
        json!({"id": id, "subject": format!("t{id}"), "status": 2, "tags": [],
               "requester_id": 1, "responder_id": null, "group_id": null,
               "created_at": "2024-01-01T00:00:00Z", "updated_at": updated})
    }

    fn page_of(n: usize, first_id: u64, updated: &str) -> Vec<u8> {
        let v: Vec<_> = (0..n as u64)
            .map(|i| ticket_json(first_id + i, updated))
            .collect();
        serde_json::to_vec(&v).unwrap()
    }

    fn page(out: Outcome) -> TicketPage {
        match out {
            Outcome::Page(p) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn get_ticket_request_and_parse() {
        let op = Operation::GetTicket("4711".into());
        let (req, state) = sent(start(&conn(None), &op));
        assert_req(
            &req,
            Method::Get,
            "/api/v2/tickets/4711",
            Lane::Read,
            &["account"],
        );
        assert!(req.body.is_none());
        let out = finished(resume(
            &conn(None),
            &op,
            &state,
            &resp(200, &fixture("ticket.json")),
        ));
        let Outcome::Ticket(t) = out else {
            panic!("{out:?}")
        };
        assert_eq!(t.id, "4711");
        assert_eq!(t.subject.as_deref(), Some("Printer on fire"));
        assert_eq!(t.status, TicketStatus::Open);
        assert_eq!(t.raw_status, "2");
        assert_eq!(t.requester_id.as_deref(), Some("80001111"));
        assert_eq!(t.assignee_id.as_deref(), Some("80002222"));
        assert_eq!(t.group_id.as_deref(), Some("80000123"));
        assert_eq!(t.tags, vec!["hardware".to_string(), "urgent".to_string()]);
        assert_eq!(t.created_at, 1_713_374_290_000);
        assert_eq!(
            t.updated_at,
            text::parse_rfc3339_ms("2024-04-18T08:00:00Z").unwrap()
        );
        assert!(t.comments.is_empty());
    }

    #[test]
    fn get_ticket_errors() {
        let op = Operation::GetTicket("4711".into());
        let (_, state) = sent(start(&conn(None), &op));
        assert!(matches!(
            resume(&conn(None), &op, &state, &resp(404, b"")),
            Err(Failure::NotFound(_))
        ));
        assert!(matches!(
            resume(
                &conn(None),
                &op,
                &state,
                &resp(401, &fixture("error_401_invalid_credentials.json"))
            ),
            Err(Failure::Unauthenticated(_))
        ));
        assert!(matches!(
            resume(&conn(None), &op, &state, &resp(200, b"<html>")),
            Err(Failure::Permanent(_))
        ));
        assert!(matches!(
            resume(
                &conn(None),
                &op,
                &state,
                &resp(200, b"{\"subject\":\"no id\"}")
            ),
            Err(Failure::Permanent(_))
        ));
        assert!(matches!(
            start(&conn(None), &Operation::GetTicket("INC-1".into())),
            Err(Failure::Invalid(m)) if m.contains("ticket id")
        ));
        assert!(matches!(
            resume(&conn(None), &op, "garbage", &resp(200, b"{}")),
            Err(Failure::Permanent(_))
        ));
    }

    #[test]
    fn list_changed_first_page_then_cursor_then_last() {
        let since = text::parse_rfc3339_ms("2024-01-01T00:00:00Z").unwrap() + 250;
        let op = Operation::ListChanged(ListChanged {
            since,
            cursor: None,
        });
        let (req, state) = sent(start(&conn(None), &op));
        assert_req(
            &req,
            Method::Get,
            "/api/v2/tickets?updated_since=2024-01-01T00:00:00Z&order_by=updated_at&order_type=asc&per_page=100&page=1",
            Lane::Read,
            &["account", "tickets-list"],
        );
        // Full page with a Link header naming page 2.
        let link = "<https://acme.freshdesk.com/api/v2/tickets?updated_since=2024-01-01T00:00:00Z&order_by=updated_at&order_type=asc&per_page=100&page=2>; rel=\"next\"";
        let r = resp_h(
            200,
            &[("link", link)],
            &page_of(100, 1, "2024-01-02T00:00:00Z"),
        );
        let p = page(finished(resume(&conn(None), &op, &state, &r)));
        assert_eq!(p.tickets.len(), 100);
        let cursor = p.next_cursor.expect("more pages");
        // Keyset: page 1 again, from the last ticket's update time.
        let day2 = text::parse_rfc3339_ms("2024-01-02T00:00:00Z").unwrap();
        assert_eq!(cursor, format!("{day2}:1"));

        // Cursor page: since the last ticket's second, page 1.
        let op2 = Operation::ListChanged(ListChanged {
            since: 0,
            cursor: Some(cursor),
        });
        let (req, state) = sent(start(&conn(None), &op2));
        assert!(req.path.ends_with("updated_since=2024-01-02T00:00:00Z&order_by=updated_at&order_type=asc&per_page=100&page=1"), "{}", req.path);
        // Full page without a Link header: fall back to "full means more".
        let p = page(finished(resume(
            &conn(None),
            &op2,
            &state,
            &resp(200, &page_of(100, 101, "2024-01-03T00:00:00Z")),
        )));
        let day3 = text::parse_rfc3339_ms("2024-01-03T00:00:00Z").unwrap();
        assert_eq!(
            p.next_cursor.as_deref(),
            Some(format!("{day3}:1").as_str())
        );
        // A full page all in `since`'s own second pages on by number within it.
        let p = page(finished(resume(
            &conn(None),
            &op2,
            &state,
            &resp(200, &page_of(100, 101, "2024-01-02T00:00:00Z")),
        )));
        assert_eq!(
            p.next_cursor.as_deref(),
            Some(format!("{day2}:2").as_str())
        );

        // Last page: short, no Link.
        let op3 = Operation::ListChanged(ListChanged {
            since: 0,
            cursor: Some(format!("{since}:3")),
        });
        let (_, state) = sent(start(&conn(None), &op3));
        let p = page(finished(resume(
            &conn(None),
            &op3,
            &state,
            &resp(200, &page_of(7, 201, "2024-01-04T00:00:00Z")),
        )));
        assert_eq!(p.tickets.len(), 7);
        assert_eq!(p.next_cursor, None);

        // Empty result.
        let p = page(finished(resume(
            &conn(None),
            &op3,
            &state,
            &resp(200, b"[]"),
        )));
        assert!(p.tickets.is_empty());
        assert_eq!(p.next_cursor, None);
    }

    #[test]
    fn list_changed_restarts_after_page_300() {
        let since = text::parse_rfc3339_ms("2024-01-01T00:00:00Z").unwrap();
        let op = Operation::ListChanged(ListChanged {
            since: 0,
            cursor: Some(format!("{since}:300")),
        });
        let (req, state) = sent(start(&conn(None), &op));
        assert!(req.path.ends_with("&page=300"));
        let link =
            "<https://acme.freshdesk.com/api/v2/tickets?per_page=100&page=301>; rel=\"next\"";
        let r = resp_h(
            200,
            &[("link", link)],
            &page_of(100, 1, "2024-03-05T06:07:08Z"),
        );
        let p = page(finished(resume(&conn(None), &op, &state, &r)));
        let last = text::parse_rfc3339_ms("2024-03-05T06:07:08Z").unwrap();
        assert_eq!(p.next_cursor, Some(format!("{last}:1")));
        let op = Operation::ListChanged(ListChanged {
            since: 0,
            cursor: p.next_cursor,
        });
        let (req, _) = sent(start(&conn(None), &op));
        assert!(
            req.path.contains("updated_since=2024-03-05T06:07:08Z&"),
            "{}",
            req.path
        );
        assert!(req.path.ends_with("&page=1"));

        // Every ticket on 300 pages in the same second as `since`: move on by a second.
        let op = Operation::ListChanged(ListChanged {
            since: 0,
            cursor: Some(format!("{since}:300")),
        });
        let (_, state) = sent(start(&conn(None), &op));
        let p = page(finished(resume(
            &conn(None),
            &op,
            &state,
            &resp(200, &page_of(100, 1, "2024-01-01T00:00:00Z")),
        )));
        assert_eq!(p.next_cursor, Some(format!("{}:1", since + 1000)));

        // Absurd times from the host do not overflow.
        let op = Operation::ListChanged(ListChanged {
            since: 0,
            cursor: Some(format!("{}:300", i64::MAX)),
        });
        let (_, state) = sent(start(&conn(None), &op));
        let p = page(finished(resume(
            &conn(None),
            &op,
            &state,
            &resp(200, &page_of(100, 1, "2024-01-01T00:00:00Z")),
        )));
        assert_eq!(p.next_cursor, Some(format!("{}:1", i64::MAX)));
    }

    #[test]
    fn list_changed_bad_cursor_and_bad_body() {
        for c in ["", "12", "x:1", "12:0", "12:301", "12:y"] {
            let op = Operation::ListChanged(ListChanged {
                since: 0,
                cursor: Some(c.into()),
            });
            assert!(
                matches!(start(&conn(None), &op), Err(Failure::Invalid(_))),
                "{c}"
            );
        }
        let op = Operation::ListChanged(ListChanged {
            since: 0,
            cursor: None,
        });
        let (_, state) = sent(start(&conn(None), &op));
        assert!(matches!(
            resume(&conn(None), &op, &state, &resp(200, b"{\"results\":[]}")),
            Err(Failure::Permanent(_))
        ));
        assert!(matches!(
            resume(&conn(None), &op, &state, &resp(400, &fixture("error_400_page_limit.json"))),
            Err(Failure::Invalid(m)) if m.contains("300th page")
        ));
        match resume(
            &conn(None),
            &op,
            &state,
            &resp_h(429, &[("retry-after", "12")], b""),
        ) {
            Err(Failure::RateLimited(d)) => assert_eq!(d.retry_after_ms, Some(12_000)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn list_open_pages() {
        let op = Operation::ListOpen(None);
        let (req, state) = sent(start(&conn(None), &op));
        assert_req(
            &req,
            Method::Get,
            "/api/v2/search/tickets?query=%22status%3A2%20OR%20status%3A3%22&page=1",
            Lane::Read,
            &["account", "tickets-list"],
        );
        let p = page(finished(resume(
            &conn(None),
            &op,
            &state,
            &resp(200, &fixture("search_tickets.json")),
        )));
        assert_eq!(p.tickets.len(), 2);
        assert_eq!(p.tickets[1].status, TicketStatus::Pending);
        assert_eq!(
            p.tickets[1].updated_at,
            text::parse_rfc3339_ms("2024-04-17T03:00:00Z").unwrap()
        );
        assert_eq!(p.next_cursor, None);

        let thirty: Vec<_> = (0..30)
            .map(|i| ticket_json(i, "2024-01-01T00:00:00Z"))
            .collect();
        let body =
            |total: u64| serde_json::to_vec(&json!({"results": thirty, "total": total})).unwrap();
        let p = page(finished(resume(
            &conn(None),
            &op,
            &state,
            &resp(200, &body(95)),
        )));
        assert_eq!(p.next_cursor.as_deref(), Some("2"));

        let op = Operation::ListOpen(Some("4".into()));
        let (req, state) = sent(start(&conn(None), &op));
        assert!(req.path.ends_with("&page=4"));
        // 4 * 30 = 120 >= 120: last page.
        assert_eq!(
            page(finished(resume(
                &conn(None),
                &op,
                &state,
                &resp(200, &body(120))
            )))
            .next_cursor,
            None
        );

        // Page 10 is the last the API serves, whatever the total.
        let op = Operation::ListOpen(Some("10".into()));
        let (_, state) = sent(start(&conn(None), &op));
        assert_eq!(
            page(finished(resume(
                &conn(None),
                &op,
                &state,
                &resp(200, &body(5000))
            )))
            .next_cursor,
            None
        );
        let op = Operation::ListOpen(Some("9".into()));
        let (_, state) = sent(start(&conn(None), &op));
        assert_eq!(
            page(finished(resume(
                &conn(None),
                &op,
                &state,
                &resp(200, &body(5000))
            )))
            .next_cursor
            .as_deref(),
            Some("10")
        );

        for c in ["0", "11", "x", ""] {
            assert!(
                matches!(
                    start(&conn(None), &Operation::ListOpen(Some(c.into()))),
                    Err(Failure::Invalid(_))
                ),
                "{c}"
            );
        }
    }

    #[test]
    fn who_am_i() {
        let op = Operation::WhoAmI;
        let (req, state) = sent(start(&conn(None), &op));
        assert_req(
            &req,
            Method::Get,
            "/api/v2/agents/me",
            Lane::Read,
            &["account"],
        );
        let out = finished(resume(
            &conn(None),
            &op,
            &state,
            &resp(200, &fixture("agent_me.json")),
        ));
        let Outcome::Identity(i) = out else {
            panic!("{out:?}")
        };
        assert_eq!(i.agent_id, "80002222");
        assert_eq!(i.name.as_deref(), Some("Sam Agent"));
        assert_eq!(i.email.as_deref(), Some("sam@acme.example"));
        assert_eq!(i.role.as_deref(), Some("support_agent"));
        assert!(i.scopes.is_none());

        let out = finished(resume(
            &conn(None),
            &op,
            &state,
            &resp(200, br#"{"id":"7","role_ids":[1,2]}"#),
        ));
        let Outcome::Identity(i) = out else {
            panic!("{out:?}")
        };
        assert_eq!(i.role.as_deref(), Some("role_ids:1,2"));
        assert_eq!(i.name, None);

        assert!(matches!(
            resume(&conn(None), &op, &state, &resp(200, b"{}")),
            Err(Failure::Permanent(_))
        ));
        assert!(matches!(
            resume(&conn(None), &op, &state, &resp(401, &fixture("error_401_invalid_credentials.json"))),
            Err(Failure::Unauthenticated(d)) if d.code == "invalid_credentials"
        ));
    }
}
