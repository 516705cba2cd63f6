//! Planning and resuming operations: dispatch, the adapter state, and request helpers shared by
//! the operations in [`crate::ops`].

use crate::describe::{BUCKET_APP, BUCKET_WORKSPACE};
use crate::ops::{probe, read, readback, write};
use deskgate_adapter_sdk::prelude::*;
use serde::{Deserialize, Serialize};

/// The API version every request asks for.
pub const API_VERSION: &str = "2.16";

/// The adapter's state between steps, serialized into `pending-request.state`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum State {
    /// `GET /conversations/{id}` sent.
    GetTicket,
    /// `POST /conversations/search` sent (list-changed, list-open).
    ListPage,
    /// `GET /me` sent.
    WhoAmI,
    /// A step of an apply.
    Write(write::WriteState),
    /// A step of a probe.
    Probe(probe::ProbeState),
    /// `GET /conversations/{id}` sent for a read-back.
    ReadBack,
}

/// Plan the first step of `op`.
pub fn start(conn: &Connection, op: &Operation) -> Result<Step, Failure> {
    match op {
        Operation::GetTicket(id) => read::get_ticket(id),
        Operation::ListChanged(lc) => read::list_changed(lc.since, lc.cursor.as_deref()),
        Operation::ListOpen(cursor) => read::list_open(cursor.as_deref()),
        Operation::Apply(a) => write::start(conn, a),
        Operation::WhoAmI => read::who_am_i(),
        Operation::Probe(caps) => probe::start(conn, caps),
        Operation::ReadBack(a) => readback::start(a),
    }
}

/// Read a state string. The forms `send` writes are recognized without going through serde's
/// internally tagged enum, which buffers the whole input (every string copied once more) before
/// it picks a variant: the field-less states by their exact text, and a write's state, whose tag
/// comes first, by reading the rest straight into [`write::WriteState`] (which ignores the `op`
/// key). Any other text, including these states spelled differently, is read as before.
fn parse_state(state: &str) -> Result<State, serde_json::Error> {
    match state {
        r#"{"op":"get-ticket"}"# => return Ok(State::GetTicket),
        r#"{"op":"list-page"}"# => return Ok(State::ListPage),
        r#"{"op":"who-am-i"}"# => return Ok(State::WhoAmI),
        r#"{"op":"read-back"}"# => return Ok(State::ReadBack),
        _ => {}
    }
    if state.starts_with(r#"{"op":"write","#) {
        if let Ok(ws) = serde_json::from_str::<write::WriteState>(state) {
            return Ok(State::Write(ws));
        }
    }
    serde_json::from_str(state)
}

/// Interpret the response to the request sent for `state`, and plan the next step.
pub fn resume(
    conn: &Connection,
    op: &Operation,
    state: &str,
    resp: &HttpResponse,
) -> Result<Step, Failure> {
    let st: State = parse_state(state).map_err(|e| {
        fail::permanent(format!(
            "corrupt adapter state (host bug): {e}: {state:.200}"
        ))
    })?;
    match (st, op) {
        (State::GetTicket, _) => read::resume_ticket(resp),
        (State::ListPage, _) => read::resume_page(resp),
        (State::WhoAmI, _) => read::resume_who_am_i(resp),
        (State::Write(ws), Operation::Apply(a)) => write::resume(conn, a, ws, resp),
        (State::Probe(ps), Operation::Probe(_)) => probe::resume(conn, ps, resp),
        (State::ReadBack, Operation::ReadBack(a)) => readback::resume(a, resp),
        (st, _) => Err(fail::permanent(format!(
            "corrupt adapter state (host bug): state {st:?} does not belong to this operation"
        ))),
    }
}

/// A request with Intercom's headers and the draws every request makes ("app" and "workspace").
pub fn request(method: Method, path: impl Into<String>, lane: Lane) -> RequestBuilder {
    RequestBuilder::new(method, path)
        .lane(lane)
        .draw(BUCKET_APP)
        .draw(BUCKET_WORKSPACE)
        .header("Intercom-Version", API_VERSION)
        .header("Accept", "application/json")
}

/// Intercom conversation ids are integers (the spec types the path parameter as one). Anything
/// else is refused before it reaches a path.
pub fn conversation_id(id: &str) -> Result<&str, Failure> {
    if !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(id)
    } else {
        Err(fail::invalid(format!(
            "Intercom conversation ids are numeric; {id:?} is not one"
        )))
    }
}

/// The acting admin (`conn.agent_id`), which Intercom requires on every write.
pub fn admin_id(conn: &Connection) -> Result<String, Failure> {
    conn.agent_id
        .clone()
        .filter(|a| !a.trim().is_empty())
        .ok_or_else(|| {
            fail::invalid(
                "Intercom writes must name the acting admin (admin_id), and this connection has no \
             agent id yet: run who-am-i / connect first so the host learns it",
            )
        })
}

/// The HTML body Intercom stores for a reply: text escaped, paragraphs on blank lines, line breaks
/// kept.
pub fn reply_html(text: &str) -> String {
    let normalized = text.replace("\r\n", "\n");
    let paragraphs: Vec<String> = normalized
        .split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let lines: Vec<String> = p.lines().map(text::html_escape).collect();
            format!("<p>{}</p>", lines.join("<br>"))
        })
        .collect();
    if paragraphs.is_empty() {
        "<p></p>".to_string()
    } else {
        paragraphs.concat()
    }
}

/// Whether a response is 2xx.
pub fn ok(resp: &HttpResponse) -> bool {
    Response::new(resp).is_success()
}

/// The name of a capability, as the contract spells it.
pub fn capability_name(c: Capability) -> &'static str {
    match c {
        Capability::ReadTickets => "read-tickets",
        Capability::PublicReply => "public-reply",
        Capability::SetStatus => "set-status",
        Capability::AddTags => "add-tags",
        Capability::Assign => "assign",
    }
}

/// A serializable copy of a [`Failure`], for failures the state must carry between steps.
pub use deskgate_adapter_sdk::state::SavedFailure;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::conn;

    #[test]
    fn states_read_the_same_on_the_fast_path_and_through_serde() {
        let Step::Send(p) = start(
            &conn(),
            &Operation::Apply(ApplyAction {
                ticket_id: "4242".into(),
                action: Action::Reply("Fixed.".into()),
            }),
        )
        .unwrap() else {
            panic!("a reply plans a request")
        };
        assert!(p.state.starts_with(r#"{"op":"write","#), "{}", p.state);
        for s in [
            State::GetTicket,
            State::ListPage,
            State::WhoAmI,
            State::ReadBack,
            serde_json::from_str(&p.state).unwrap(),
        ] {
            let text = serde_json::to_string(&s).unwrap();
            let fast = parse_state(&text).unwrap();
            let slow: State = serde_json::from_str(&text).unwrap();
            assert_eq!(format!("{fast:?}"), format!("{slow:?}"));
        }
        assert!(parse_state(r#"{"op":"write","ticket_id":7}"#).is_err());
        assert!(parse_state(r#"{"op":"nope"}"#).is_err());
    }

    #[test]
    fn corrupt_state_is_permanent() {
        let resp = HttpResponse {
            status: 200,
            headers: Vec::new(),
            body: b"{}".to_vec(),
        };
        let r = resume(&conn(), &Operation::WhoAmI, "not json", &resp);
        assert!(matches!(r, Err(Failure::Permanent(m)) if m.contains("corrupt adapter state")));
        // A state from another operation is corrupt too.
        let r = resume(&conn(), &Operation::WhoAmI, r#"{"op":"read-back"}"#, &resp);
        assert!(matches!(r, Err(Failure::Permanent(m)) if m.contains("corrupt adapter state")));
    }

    #[test]
    fn ids_must_be_numeric() {
        assert!(conversation_id("123").is_ok());
        for bad in ["", "12a", "../me", "1/2", "123456789012345678901", " 1"] {
            assert!(
                matches!(conversation_id(bad), Err(Failure::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn missing_admin_is_invalid() {
        let mut c = conn();
        c.agent_id = None;
        assert!(matches!(admin_id(&c), Err(Failure::Invalid(m)) if m.contains("who-am-i")));
    }

    #[test]
    fn reply_html_escapes_and_keeps_breaks() {
        assert_eq!(reply_html("Thanks, fixed."), "<p>Thanks, fixed.</p>");
        assert_eq!(reply_html("a < b & c"), "<p>a &lt; b &amp; c</p>");
        assert_eq!(
            reply_html("one\ntwo\r\n\r\nthree"),
            "<p>one<br>two</p><p>three</p>"
        );
        assert_eq!(text::visible_text(&reply_html("x <y>\n\nz")), "x <y> z");
    }

    #[test]
    fn failures_survive_the_state() {
        let f = fail::forbidden(PermissionKind::Scope, "Write tags", "tick it", "no");
        let back: Failure = (&SavedFailure::from(&f)).into();
        match back {
            Failure::Forbidden(d) => {
                assert_eq!(d.kind, PermissionKind::Scope);
                assert_eq!(d.missing, "Write tags");
            }
            other => panic!("{other:?}"),
        }
    }
}
