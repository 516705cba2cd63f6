//! Reads: get-ticket, list-changed (incremental export), list-open (search), who-am-i.

use crate::describe::INCREMENTAL_EXPORT;
use crate::errors::{Ctx, classify};
use crate::model::{IncrementalPage, SearchPage, TicketEnvelope, UserEnvelope, ZTicket};
use crate::translate::{State, encode_query, is_ok, numeric_id, read_request, ticket_path};
use deskgate_adapter_sdk::prelude::*;

/// `GET /api/v2/tickets/{id}.json`. Zendesk does not return comments with the ticket (they need a
/// second request), so the ticket's `comments` is empty.
pub fn get_ticket(id: &str) -> Result<Step, Failure> {
    let id = numeric_id("ticket id", id)?;
    send(read_request(ticket_path(&id)).build(), &State::GetTicket)
}

/// Parse `{"ticket":{...}}`.
pub fn ticket_of(resp: &HttpResponse, what: &str) -> Result<Ticket, Failure> {
    let env: TicketEnvelope = parse_json(&resp.body, what)?;
    env.ticket
        .ok_or_else(|| fail::permanent(format!("Zendesk's {what} response has no \"ticket\"")))?
        .to_ticket()
}

/// The ticket.
pub fn resume_get_ticket(id: &str, resp: &HttpResponse) -> Result<Step, Failure> {
    if !is_ok(resp) {
        return Err(classify(resp, Ctx::ReadTicket(id)));
    }
    done(Outcome::Ticket(ticket_of(resp, "ticket")?))
}

/// Incremental cursor export. First page: `?start_time={unix seconds}`; then
/// `?cursor={after_cursor}` until `end_of_stream`. The cursor handed to the host is Zendesk's
/// `after_cursor`. Matching is on the ticket's `generated_timestamp`, and tickets changed in the
/// last minute are left for the next sweep (platform behaviour). The export is admin-only.
pub fn list_changed(args: &ListChanged) -> Result<Step, Failure> {
    let path = match &args.cursor {
        Some(c) if !c.is_empty() => {
            format!(
                "/api/v2/incremental/tickets/cursor.json?cursor={}",
                encode_query(c)
            )
        }
        _ => format!(
            "/api/v2/incremental/tickets/cursor.json?start_time={}",
            args.since.div_euclid(1000).max(0)
        ),
    };
    send(
        read_request(path).draw(INCREMENTAL_EXPORT).build(),
        &State::ListChanged,
    )
}

fn tickets(list: &[ZTicket]) -> Result<Vec<Ticket>, Failure> {
    list.iter().map(ZTicket::to_ticket).collect()
}

/// One page of the export.
pub fn resume_list_changed(resp: &HttpResponse) -> Result<Step, Failure> {
    if !is_ok(resp) {
        return Err(classify(resp, Ctx::ListChanged));
    }
    let page: IncrementalPage = parse_json(&resp.body, "incremental export")?;
    let next_cursor = if page.end_of_stream == Some(true) {
        None
    } else {
        match page.after_cursor.filter(|c| !c.is_empty()) {
            Some(c) => Some(c),
            None => {
                return Err(fail::permanent(
                    "Zendesk's incremental export page is not the end of the stream but carries \
                     no after_cursor",
                ));
            }
        }
    };
    done(Outcome::Page(TicketPage {
        tickets: tickets(&page.tickets)?,
        next_cursor,
    }))
}

/// Search results per page (the API's maximum).
const PER_PAGE: u32 = 100;
/// The Search API serves at most 1000 results per query: page 10 of 100 is the last reachable,
/// asking for page 11 is an error. Open tickets beyond the first 1000 are left to the incremental
/// sweep (list-changed) and webhooks.
const LAST_PAGE: u32 = 1000 / PER_PAGE;

/// `GET /api/v2/search.json?query=type:ticket status<solved` (new, open, pending, hold), offset
/// pagination only; the cursor is the next page number. The search index lags writes by a few
/// minutes, which a reconciliation sweep tolerates.
pub fn list_open(cursor: Option<&str>) -> Result<Step, Failure> {
    let page = match cursor {
        None => 1,
        Some(c) => c.parse::<u32>().ok().filter(|p| *p >= 1).ok_or_else(|| {
            fail::invalid(format!("list-open cursor \"{c}\" is not a page number"))
        })?,
    };
    let path = format!(
        "/api/v2/search.json?query=type%3Aticket%20status%3Csolved&per_page={PER_PAGE}&page={page}"
    );
    send(read_request(path).build(), &State::ListOpen { page })
}

/// One page of search results.
pub fn resume_list_open(page: u32, resp: &HttpResponse) -> Result<Step, Failure> {
    if !is_ok(resp) {
        return Err(classify(resp, Ctx::ListOpen));
    }
    let parsed: SearchPage = parse_json(&resp.body, "search")?;
    let results: Vec<ZTicket> = parsed
        .results
        .into_iter()
        .filter(|r| r.result_type.as_deref().is_none_or(|t| t == "ticket"))
        .collect();
    let next_cursor = match parsed.next_page {
        Some(_) if page < LAST_PAGE => Some((page + 1).to_string()),
        _ => None,
    };
    done(Outcome::Page(TicketPage {
        tickets: tickets(&results)?,
        next_cursor,
    }))
}

/// `GET /api/v2/users/me.json`.
pub fn who_am_i() -> Result<Step, Failure> {
    send(
        read_request("/api/v2/users/me.json".to_string()).build(),
        &State::WhoAmI,
    )
}

/// Parse `/users/me`. Zendesk answers bad credentials on this endpoint with an anonymous guest
/// user (id null, role "end-user") instead of a 401, so such a user means the credential was not
/// accepted. The exact anonymous body is UNCONFIRMED.
pub fn identity_of(resp: &HttpResponse) -> Result<Identity, Failure> {
    if !is_ok(resp) {
        return Err(classify(resp, Ctx::WhoAmI));
    }
    let env: UserEnvelope = parse_json(&resp.body, "current user")?;
    let user = env
        .user
        .ok_or_else(|| fail::permanent("Zendesk's /users/me response has no \"user\""))?;
    let end_user = user
        .role
        .as_deref()
        .is_some_and(|r| r.eq_ignore_ascii_case("end-user"));
    match user.id {
        Some(id) if !end_user => Ok(Identity {
            agent_id: id,
            name: user.name,
            email: user.email,
            role: user.role,
            scopes: None,
        }),
        id => Err(fail::unauthenticated(
            "anonymous",
            &format!(
                "Zendesk answered /api/v2/users/me with {} instead of an agent. Zendesk answers \
                 bad credentials on /users/me with an anonymous guest user rather than a 401, so \
                 the credential was not accepted as an agent's: check the email/token pair or \
                 reconnect with an agent's or admin's credential",
                match id {
                    None => "an anonymous guest user (no id)".to_string(),
                    Some(id) => format!("end user {id}"),
                }
            ),
        )),
    }
}

/// The identity.
pub fn resume_who_am_i(resp: &HttpResponse) -> Result<Step, Failure> {
    done(Outcome::Identity(identity_of(resp)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::*;
    use crate::translate::{resume, start};

    fn page(outcome: Outcome) -> TicketPage {
        match outcome {
            Outcome::Page(p) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn get_ticket_request_and_cassette_response() {
        let op = Operation::GetTicket("1".into());
        let (req, state) = sent(start(&conn(), &op));
        assert_eq!(req.method, Method::Get);
        assert_eq!(req.path, "/api/v2/tickets/1.json");
        assert_eq!(req.lane, Lane::Read);
        assert_eq!(draws(&req), ["account"]);
        assert!(req.body.is_none());
        assert!(req.headers.is_empty());
        assert!(req.idempotency_header.is_none());
        assert_declared(&req);
        let rec = crate::model::tests::cassette(
            "ZendeskAPI_Ticket__recent_tickets__read_ZendeskAPI_Client_tickets_recent__should_be_findable.json",
        );
        let body = &rec
            .iter()
            .find(|r| r.uri.ends_with("/tickets/1"))
            .unwrap()
            .body;
        let r = HttpResponse {
            status: 200,
            headers: vec![],
            body: body.clone(),
        };
        match finished(resume(&conn(), &op, &state, &r)) {
            Outcome::Ticket(t) => {
                assert_eq!(t.id, "1");
                assert_eq!(t.status, TicketStatus::Pending);
                assert!(t.comments.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn get_ticket_errors() {
        let op = Operation::GetTicket("abc".into());
        assert!(matches!(start(&conn(), &op), Err(Failure::Invalid(m)) if m.contains("abc")));
        let op = Operation::GetTicket("9".into());
        let (_, state) = sent(start(&conn(), &op));
        let r = resp(404, &fixture("404_record_not_found.json"));
        assert!(matches!(
            resume(&conn(), &op, &state, &r),
            Err(Failure::NotFound(_))
        ));
        for body in ["<html>", "{}", r#"{"ticket":{"id":9}}"#] {
            assert!(matches!(
                resume(&conn(), &op, &state, &ok_json(body)),
                Err(Failure::Permanent(_))
            ));
        }
    }

    #[test]
    fn list_changed_first_cursor_and_last_page() {
        let op = Operation::ListChanged(ListChanged {
            since: 1_580_753_798_999,
            cursor: None,
        });
        let (req, state) = sent(start(&conn(), &op));
        assert_eq!(req.method, Method::Get);
        assert_eq!(
            req.path,
            "/api/v2/incremental/tickets/cursor.json?start_time=1580753798"
        );
        assert_eq!(req.lane, Lane::Read);
        assert_eq!(draws(&req), ["account", "incremental-export"]);
        assert_declared(&req);
        let p = page(finished(resume(
            &conn(),
            &op,
            &state,
            &ok_json(&fixture("incremental_page.json")),
        )));
        assert_eq!(p.tickets.len(), 2);
        assert_eq!(p.tickets[0].id, "35436");
        assert_eq!(p.tickets[1].raw_status, "deleted");
        assert_eq!(p.next_cursor.as_deref(), Some("MTU4MDc1Mzc5OC4wfHw0MzJ8"));

        let op = Operation::ListChanged(ListChanged {
            since: 0,
            cursor: Some("MTU4MDc1Mzc5OC4wfHw0MzJ8".into()),
        });
        let (req, state) = sent(start(&conn(), &op));
        assert_eq!(
            req.path,
            "/api/v2/incremental/tickets/cursor.json?cursor=MTU4MDc1Mzc5OC4wfHw0MzJ8"
        );
        assert_eq!(draws(&req), ["account", "incremental-export"]);
        let p = page(finished(resume(
            &conn(),
            &op,
            &state,
            &ok_json(&fixture("incremental_last.json")),
        )));
        assert_eq!(p.tickets.len(), 1);
        assert_eq!(p.next_cursor, None);
    }

    #[test]
    fn list_changed_oddities() {
        let op = Operation::ListChanged(ListChanged {
            since: -5,
            cursor: None,
        });
        let (req, state) = sent(start(&conn(), &op));
        assert!(req.path.ends_with("start_time=0"));
        let r = ok_json(r#"{"tickets":[],"end_of_stream":false}"#);
        assert!(matches!(
            resume(&conn(), &op, &state, &r),
            Err(Failure::Permanent(_))
        ));
        let r = ok_json(r#"{"tickets":[],"after_cursor":null,"end_of_stream":true}"#);
        assert_eq!(
            page(finished(resume(&conn(), &op, &state, &r))).next_cursor,
            None
        );
        let r = HttpResponse {
            status: 429,
            headers: vec![("retry-after".into(), "60".into())],
            body: fixture("429_incremental_export.json").into_bytes(),
        };
        assert!(matches!(
            resume(&conn(), &op, &state, &r),
            Err(Failure::RateLimited(d)) if d.bucket.as_deref() == Some("incremental-export") && d.retry_after_ms == Some(60_000)
        ));
        let r = resp(403, &fixture("403_role.json"));
        assert!(matches!(
            resume(&conn(), &op, &state, &r),
            Err(Failure::Forbidden(d)) if d.missing == "incremental export (admin role)"
        ));
    }

    #[test]
    fn list_open_pages() {
        let op = Operation::ListOpen(None);
        let (req, state) = sent(start(&conn(), &op));
        assert_eq!(req.method, Method::Get);
        assert_eq!(
            req.path,
            "/api/v2/search.json?query=type%3Aticket%20status%3Csolved&per_page=100&page=1"
        );
        assert_eq!(req.lane, Lane::Read);
        assert_eq!(draws(&req), ["account"]);
        let p = page(finished(resume(
            &conn(),
            &op,
            &state,
            &ok_json(&fixture("search_page.json")),
        )));
        assert_eq!(p.tickets.len(), 2, "the user result is skipped");
        assert_eq!(p.tickets[1].status, TicketStatus::OnHold);
        assert_eq!(p.next_cursor.as_deref(), Some("2"));

        let op = Operation::ListOpen(Some("2".into()));
        let (req, state) = sent(start(&conn(), &op));
        assert!(req.path.ends_with("&per_page=100&page=2"));
        let last = ok_json(r#"{"results":[],"next_page":null,"previous_page":null,"count":0}"#);
        assert_eq!(
            page(finished(resume(&conn(), &op, &state, &last))).next_cursor,
            None
        );

        // The 1000-result search cap: page 10 is the last.
        let op = Operation::ListOpen(Some("10".into()));
        let (_, state) = sent(start(&conn(), &op));
        let more = ok_json(
            r#"{"results":[],"next_page":"https://x.zendesk.com/api/v2/search.json?page=11","count":5000}"#,
        );
        assert_eq!(
            page(finished(resume(&conn(), &op, &state, &more))).next_cursor,
            None
        );

        for bad in ["abc", "0", "-1", ""] {
            let op = Operation::ListOpen(Some(bad.into()));
            assert!(
                matches!(start(&conn(), &op), Err(Failure::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn who_am_i_request_and_cassette() {
        let (req, state) = sent(start(&conn(), &Operation::WhoAmI));
        assert_eq!(req.method, Method::Get);
        assert_eq!(req.path, "/api/v2/users/me.json");
        assert_eq!(req.lane, Lane::Read);
        assert_eq!(draws(&req), ["account"]);
        let rec = crate::model::tests::cassette("current_user.json");
        let r = HttpResponse {
            status: 200,
            headers: vec![],
            body: rec[0].body.clone(),
        };
        match finished(resume(&conn(), &Operation::WhoAmI, &state, &r)) {
            Outcome::Identity(i) => {
                assert_eq!(i.agent_id, "20014182");
                assert_eq!(i.name.as_deref(), Some("Steven Davidovitz"));
                assert_eq!(i.email.as_deref(), Some("sdavidovitz+qa@zendesk.com"));
                assert_eq!(i.role.as_deref(), Some("admin"));
                assert!(i.scopes.is_none());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn who_am_i_anonymous_guest_is_unauthenticated() {
        let (_, state) = sent(start(&conn(), &Operation::WhoAmI));
        for body in [
            r#"{"user":{"id":null,"name":"Anonymous user","role":"end-user","email":null}}"#,
            r#"{"user":{"id":null}}"#,
            r#"{"user":{"id":99,"role":"end-user"}}"#,
        ] {
            match resume(&conn(), &Operation::WhoAmI, &state, &ok_json(body)) {
                Err(Failure::Unauthenticated(d)) => {
                    assert_eq!(d.code, "anonymous");
                    assert!(d.message.contains("guest user"));
                }
                other => panic!("{body}: {other:?}"),
            }
        }
        let r = resp(401, &fixture("401_couldnt_authenticate.json"));
        assert!(matches!(
            resume(&conn(), &Operation::WhoAmI, &state, &r),
            Err(Failure::Unauthenticated(d)) if d.code == "couldnt_authenticate"
        ));
        assert!(matches!(
            resume(&conn(), &Operation::WhoAmI, &state, &ok_json("[]")),
            Err(Failure::Permanent(_))
        ));
    }
}
