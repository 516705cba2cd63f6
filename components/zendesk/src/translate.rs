//! Planning and resuming operations: the dispatcher and the helpers every operation shares.
//!
//! Each operation lives in `ops/`: reads (get-ticket, list-changed, list-open, who-am-i), writes
//! (apply), the read-back and the permission probe. The state handed to the host between steps is
//! one JSON-serialized [`State`], tagged by operation, so a state that does not belong to the
//! operation it comes back with is detected as corrupt.

use crate::describe::{ACCOUNT, TICKET_UPDATE, TICKET_UPDATE_ACCOUNT};
use crate::ops::{probe, read, readback, write};
use deskgate_adapter_sdk::prelude::*;
use serde::{Deserialize, Serialize};

/// The adapter's state between the steps of an operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum State {
    /// get-ticket: waiting for the ticket.
    GetTicket,
    /// list-changed: waiting for an incremental export page.
    ListChanged,
    /// list-open: waiting for search page `page`.
    ListOpen {
        /// The page number requested.
        page: u32,
    },
    /// who-am-i: waiting for `/users/me`.
    WhoAmI,
    /// apply: waiting for the single write.
    Apply,
    /// read-back: waiting for the ticket or its comments.
    ReadBack(readback::ReadBackState),
    /// probe: somewhere in the probe sequence.
    Probe(probe::ProbeState),
}

/// The states without fields, exactly as `send` serializes them, recognized without serde (an
/// internally tagged enum buffers its input before it picks a variant). Anything else, including
/// the same JSON spelled differently, goes through serde as before.
fn unit_state(state: &str) -> Option<State> {
    Some(match state {
        r#"{"op":"apply"}"# => State::Apply,
        r#"{"op":"get-ticket"}"# => State::GetTicket,
        r#"{"op":"list-changed"}"# => State::ListChanged,
        r#"{"op":"who-am-i"}"# => State::WhoAmI,
        _ => return None,
    })
}

/// Plan the first step of `op`.
pub fn start(conn: &Connection, op: &Operation) -> Result<Step, Failure> {
    match op {
        Operation::GetTicket(id) => read::get_ticket(id),
        Operation::ListChanged(args) => read::list_changed(args),
        Operation::ListOpen(cursor) => read::list_open(cursor.as_deref()),
        Operation::WhoAmI => read::who_am_i(),
        Operation::Apply(a) => write::start(a),
        Operation::Probe(caps) => probe::start(conn, caps),
        Operation::ReadBack(a) => readback::start(a),
    }
}

/// Interpret `resp` to the request sent with `state`, and plan the next step.
pub fn resume(
    conn: &Connection,
    op: &Operation,
    state: &str,
    resp: &HttpResponse,
) -> Result<Step, Failure> {
    let parsed = match unit_state(state) {
        Some(s) => Ok(s),
        None => serde_json::from_str::<State>(state),
    };
    let parsed: State = parsed.map_err(|e| {
        fail::permanent(format!(
            "corrupt adapter state for the Zendesk adapter: {e}"
        ))
    })?;
    match (op, parsed) {
        (Operation::GetTicket(id), State::GetTicket) => read::resume_get_ticket(id, resp),
        (Operation::ListChanged(_), State::ListChanged) => read::resume_list_changed(resp),
        (Operation::ListOpen(_), State::ListOpen { page }) => read::resume_list_open(page, resp),
        (Operation::WhoAmI, State::WhoAmI) => read::resume_who_am_i(resp),
        (Operation::Apply(a), State::Apply) => write::resume(a, resp),
        (Operation::ReadBack(a), State::ReadBack(s)) => readback::resume(conn, a, s, resp),
        (Operation::Probe(caps), State::Probe(s)) => probe::resume(caps, s, resp),
        (_, s) => Err(fail::permanent(format!(
            "corrupt adapter state: state {s:?} does not belong to this operation"
        ))),
    }
}

/// A platform id that must be a number in Zendesk's JSON or path, in canonical form.
pub fn numeric_id(what: &str, id: &str) -> Result<String, Failure> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(fail::invalid(format!(
            "{what} \"{id}\" is not a Zendesk id (a number)"
        )));
    }
    id.parse::<u64>()
        .map(|n| n.to_string())
        .map_err(|_| fail::invalid(format!("{what} \"{id}\" is too large for a Zendesk id")))
}

/// A numeric id as a JSON number.
pub fn id_number(what: &str, id: &str) -> Result<serde_json::Value, Failure> {
    let canonical = numeric_id(what, id)?;
    // `numeric_id` checked that it fits a u64.
    Ok(serde_json::Value::from(
        canonical.parse::<u64>().unwrap_or_default(),
    ))
}

/// `/api/v2/tickets/{id}.json`.
pub fn ticket_path(id: &str) -> String {
    format!("/api/v2/tickets/{id}.json")
}

/// `/api/v2/tickets/{id}/comments.json?sort_order=desc` (newest first).
pub fn comments_path(id: &str) -> String {
    format!("/api/v2/tickets/{id}/comments.json?sort_order=desc")
}

/// A read: read lane, one unit of the account bucket.
pub fn read_request(path: String) -> RequestBuilder {
    RequestBuilder::new(Method::Get, path)
        .lane(Lane::Read)
        .draw(ACCOUNT)
}

/// A ticket update: write lane; the account bucket, the per-ticket cap and the per-account Update
/// Ticket limit.
pub fn update_request(method: Method, path: String, ticket: &str) -> RequestBuilder {
    RequestBuilder::new(method, path)
        .lane(Lane::Write)
        .draw(ACCOUNT)
        .draw_keyed(TICKET_UPDATE, ticket)
        .draw(TICKET_UPDATE_ACCOUNT)
}

/// Whether a response is 2xx.
pub fn is_ok(resp: &HttpResponse) -> bool {
    Response::new(resp).is_success()
}

/// Percent-encode a query value (everything but RFC 3986 unreserved characters).
pub fn encode_query(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::*;

    #[test]
    fn unit_states_are_recognized_as_serialized() {
        for s in [State::Apply, State::GetTicket, State::ListChanged, State::WhoAmI] {
            let text = serde_json::to_string(&s).unwrap();
            let fast = unit_state(&text).unwrap_or_else(|| panic!("{text} has no fast path"));
            assert_eq!(format!("{fast:?}"), format!("{s:?}"));
        }
        // Other spellings of the same state still parse, through serde.
        assert!(unit_state(r#"{ "op": "apply" }"#).is_none());
        let slow: State = serde_json::from_str(r#"{ "op": "apply" }"#).unwrap();
        assert!(matches!(slow, State::Apply));
    }

    #[test]
    fn ids_must_be_numeric() {
        assert_eq!(numeric_id("ticket id", "42").unwrap(), "42");
        assert_eq!(numeric_id("ticket id", "0042").unwrap(), "42");
        for bad in ["", "abc", "4 2", "-1", "1.5", "99999999999999999999999"] {
            assert!(
                matches!(numeric_id("ticket id", bad), Err(Failure::Invalid(m)) if m.contains("ticket id")),
                "{bad}"
            );
        }
    }

    #[test]
    fn query_encoding() {
        assert_eq!(
            encode_query("MTU4MDc1Mzc5OC4wfHw0MzJ8"),
            "MTU4MDc1Mzc5OC4wfHw0MzJ8"
        );
        assert_eq!(encode_query("a+b/c=="), "a%2Bb%2Fc%3D%3D");
    }

    #[test]
    fn corrupt_state_is_permanent() {
        let op = Operation::GetTicket("42".into());
        for state in [
            "",
            "not json",
            r#"{"op":"who-am-i"}"#,
            r#"{"op":"list-open"}"#,
        ] {
            let r = resume(&conn(), &op, state, &ok_json("{}"));
            assert!(
                matches!(&r, Err(Failure::Permanent(m)) if m.contains("corrupt adapter state")),
                "{state}: {r:?}"
            );
        }
    }
}
