//! probe: prove capabilities on a throwaway conversation, never touching a real customer.
//!
//! Intercom has no token introspection, so the probe exercises the API:
//!
//! 1. `POST /contacts` `{"role":"lead","name":"deskgate permission probe"}`: a lead with no email,
//!    so nothing the probe posts can reach anybody;
//! 2. `POST /conversations` `{"from":{"type":"lead","id":..},"body":"deskgate permission probe"}`
//!    (answers with a `message` carrying `conversation_id`);
//! 3. one step per requested capability, in this order: read-tickets `GET /conversations/{id}`,
//!    public-reply (admin comment), set-status (close part), add-tags (`POST /tags` "deskgate-probe"
//!    then attach), assign (assignment to the acting admin);
//! 4. cleanup: `DELETE /conversations/{id}`, `DELETE /contacts/{id}` (failures ignored).
//!
//! A 401/403 on a capability's step marks that capability not granted and the probe goes on. If
//! the probe lead or conversation cannot be created (401/403), every requested write capability is
//! reported not granted with that failure, and read-tickets is proved with a one-result
//! `POST /conversations/search` instead. When only read-tickets is requested the probe only
//! searches. Any other failure (5xx, 429, ...) stops the probe: it still cleans up, then returns
//! that failure. The "deskgate-probe" tag itself is left in the workspace.

use crate::errors::{classify, need};
use crate::model::{ContactRef, Message, Tag};
use crate::translate::{
    SavedFailure, State, admin_id, capability_name, conversation_id, ok, reply_html, request,
};
use deskgate_adapter_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Name of the probe lead, and body of the probe conversation.
pub const PROBE_TEXT: &str = "deskgate permission probe";
/// Tag the probe attaches.
pub const PROBE_TAG: &str = "deskgate-probe";

const WRITE_CAPS: [&str; 4] = ["public-reply", "set-status", "add-tags", "assign"];

/// One request of the probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    SearchRead,
    CreateContact,
    CreateConversation,
    Read,
    Reply,
    Close,
    CreateTag,
    AttachTag,
    Assign,
    DeleteConversation,
    DeleteContact,
}

impl Phase {
    fn is_cleanup(self) -> bool {
        matches!(self, Phase::DeleteConversation | Phase::DeleteContact)
    }

    /// The capability this phase proves (or disproves).
    fn capability(self) -> Option<&'static str> {
        match self {
            Phase::SearchRead | Phase::Read => Some("read-tickets"),
            Phase::Reply => Some("public-reply"),
            Phase::Close => Some("set-status"),
            Phase::CreateTag | Phase::AttachTag => Some("add-tags"),
            Phase::Assign => Some("assign"),
            _ => None,
        }
    }

    fn need(self) -> &'static str {
        match self {
            Phase::SearchRead | Phase::Read => need::READ_CONVERSATIONS,
            Phase::CreateContact | Phase::DeleteContact => need::WRITE_USERS,
            Phase::CreateTag | Phase::AttachTag => need::WRITE_TAGS,
            _ => need::WRITE_CONVERSATIONS,
        }
    }
}

/// The probe's state between steps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeState {
    /// Requested capabilities, in the order asked.
    pub requested: Vec<String>,
    pub admin_id: Option<String>,
    /// Phases still to run; the first is the one in flight.
    pub todo: Vec<Phase>,
    pub contact_id: Option<String>,
    pub conversation_id: Option<String>,
    pub tag_id: Option<String>,
    /// Capability name and, when not granted, why.
    pub results: Vec<(String, Option<SavedFailure>)>,
    /// A failure that stopped the probe; returned after cleanup.
    pub abort: Option<SavedFailure>,
}

impl ProbeState {
    fn wants(&self, cap: &str) -> bool {
        self.requested.iter().any(|c| c == cap)
    }

    fn has_result(&self, cap: &str) -> bool {
        self.results.iter().any(|(c, _)| c == cap)
    }

    fn record(&mut self, cap: &str, failure: Option<&Failure>) {
        if self.wants(cap) && !self.has_result(cap) {
            self.results
                .push((cap.to_string(), failure.map(SavedFailure::from)));
        }
    }

    fn stop(&mut self, failure: &Failure) {
        if self.abort.is_none() {
            self.abort = Some(failure.into());
        }
        self.todo.retain(|p| p.is_cleanup());
    }
}

/// Plan the probe.
pub fn start(conn: &Connection, caps: &[Capability]) -> Result<Step, Failure> {
    let requested: Vec<String> = caps
        .iter()
        .map(|c| capability_name(*c).to_string())
        .collect();
    let wants = |c: &str| requested.iter().any(|r| r == c);
    let writes = WRITE_CAPS.iter().any(|c| wants(c));
    let mut todo = Vec::new();
    let mut admin = None;
    if writes {
        admin = Some(admin_id(conn)?);
        todo.extend([Phase::CreateContact, Phase::CreateConversation]);
        if wants("read-tickets") {
            todo.push(Phase::Read);
        }
        if wants("public-reply") {
            todo.push(Phase::Reply);
        }
        if wants("set-status") {
            todo.push(Phase::Close);
        }
        if wants("add-tags") {
            todo.extend([Phase::CreateTag, Phase::AttachTag]);
        }
        if wants("assign") {
            todo.push(Phase::Assign);
        }
        todo.extend([Phase::DeleteConversation, Phase::DeleteContact]);
    } else if wants("read-tickets") {
        todo.push(Phase::SearchRead);
    }
    drive(ProbeState {
        requested,
        admin_id: admin,
        todo,
        contact_id: None,
        conversation_id: None,
        tag_id: None,
        results: Vec::new(),
        abort: None,
    })
}

/// Send the next phase's request, or finish.
fn drive(mut ps: ProbeState) -> Result<Step, Failure> {
    while let Some(&phase) = ps.todo.first() {
        match phase_request(&ps, phase)? {
            Some(req) => return send(req, &State::Probe(ps)),
            // A cleanup with nothing to clean.
            None => {
                ps.todo.remove(0);
            }
        }
    }
    finish(ps)
}

fn finish(ps: ProbeState) -> Result<Step, Failure> {
    if let Some(f) = &ps.abort {
        return Err(f.into());
    }
    let mut out = Vec::new();
    for name in &ps.requested {
        let Some(capability) = capability_from(name) else {
            continue;
        };
        let result = ps
            .results
            .iter()
            .find(|(c, _)| c == name)
            .map(|(_, f)| f.clone());
        out.push(match result {
            Some(None) => CapabilityResult {
                capability,
                granted: true,
                failure: None,
            },
            Some(Some(f)) => CapabilityResult {
                capability,
                granted: false,
                failure: Some((&f).into()),
            },
            None => CapabilityResult {
                capability,
                granted: false,
                failure: Some(fail::permanent(
                    "the probe could not exercise this capability",
                )),
            },
        });
    }
    done(Outcome::Probed(out))
}

fn capability_from(name: &str) -> Option<Capability> {
    [
        Capability::ReadTickets,
        Capability::PublicReply,
        Capability::SetStatus,
        Capability::AddTags,
        Capability::Assign,
    ]
    .into_iter()
    .find(|c| capability_name(*c) == name)
}

/// Ids that go into a path must not be able to change it.
fn path_safe(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn phase_request(ps: &ProbeState, phase: Phase) -> Result<Option<HttpRequest>, Failure> {
    let admin = ps.admin_id.clone().unwrap_or_default();
    let conv = ps.conversation_id.clone().unwrap_or_default();
    let post = |path: String, body: Value| {
        Some(request(Method::Post, path, Lane::Write).json(&body).build())
    };
    Ok(match phase {
        Phase::SearchRead => Some(
            request(Method::Post, "/conversations/search", Lane::Read)
                .json(&json!({
                    "query": {"field": "updated_at", "operator": ">", "value": 0},
                    "pagination": {"per_page": 1}
                }))
                .build(),
        ),
        Phase::CreateContact => post(
            "/contacts".to_string(),
            json!({"role": "lead", "name": PROBE_TEXT}),
        ),
        Phase::CreateConversation => {
            let contact = ps.contact_id.clone().unwrap_or_default();
            post(
                "/conversations".to_string(),
                json!({"from": {"type": "lead", "id": contact}, "body": PROBE_TEXT}),
            )
        }
        Phase::Read => {
            Some(request(Method::Get, format!("/conversations/{conv}"), Lane::Read).build())
        }
        Phase::Reply => post(
            format!("/conversations/{conv}/reply"),
            json!({"message_type": "comment", "type": "admin", "admin_id": admin,
                   "body": reply_html(PROBE_TEXT)}),
        ),
        Phase::Close => post(
            format!("/conversations/{conv}/parts"),
            json!({"message_type": "close", "type": "admin", "admin_id": admin}),
        ),
        Phase::CreateTag => post("/tags".to_string(), json!({"name": PROBE_TAG})),
        Phase::AttachTag => {
            let tag = ps.tag_id.clone().unwrap_or_default();
            post(
                format!("/conversations/{conv}/tags"),
                json!({"id": tag, "admin_id": admin}),
            )
        }
        Phase::Assign => post(
            format!("/conversations/{conv}/parts"),
            json!({"message_type": "assignment", "type": "admin", "admin_id": admin,
                   "assignee_id": admin}),
        ),
        Phase::DeleteConversation => ps
            .conversation_id
            .as_ref()
            .map(|c| request(Method::Delete, format!("/conversations/{c}"), Lane::Write).build()),
        Phase::DeleteContact => ps
            .contact_id
            .as_ref()
            .filter(|c| path_safe(c))
            .map(|c| request(Method::Delete, format!("/contacts/{c}"), Lane::Write).build()),
    })
}

fn is_permission(f: &Failure) -> bool {
    matches!(f, Failure::Forbidden(_) | Failure::Unauthenticated(_))
}

/// Handle the response to the phase in flight.
pub fn resume(
    _conn: &Connection,
    mut ps: ProbeState,
    resp: &HttpResponse,
) -> Result<Step, Failure> {
    if ps.todo.is_empty() {
        return Err(fail::permanent(
            "corrupt adapter state: probe has no phase in flight",
        ));
    }
    let phase = ps.todo.remove(0);
    if phase.is_cleanup() {
        // Best effort: a probe conversation or lead that could not be deleted is left behind.
        return drive(ps);
    }
    let failure = (!ok(resp)).then(|| classify(resp, phase.need()));
    match (phase, failure) {
        (Phase::CreateContact, None) => {
            let contact: Option<ContactRef> = serde_json::from_slice(&resp.body).ok();
            match contact.and_then(|c| c.id) {
                Some(id) => ps.contact_id = Some(id),
                None => ps.stop(&fail::permanent(
                    "Intercom's answer to creating the probe lead has no id",
                )),
            }
        }
        (Phase::CreateConversation, None) => {
            let msg: Option<Message> = serde_json::from_slice(&resp.body).ok();
            match msg.and_then(|m| m.conversation_id) {
                Some(id) if conversation_id(&id).is_ok() => ps.conversation_id = Some(id),
                _ => ps.stop(&fail::permanent(
                    "Intercom's answer to creating the probe conversation has no usable conversation_id",
                )),
            }
        }
        (Phase::CreateContact | Phase::CreateConversation, Some(f)) if is_permission(&f) => {
            // No probe conversation: the writes cannot be proved; read-tickets falls back to search.
            for cap in WRITE_CAPS {
                ps.record(cap, Some(&f));
            }
            let cleanup: Vec<Phase> = ps.todo.iter().copied().filter(|p| p.is_cleanup()).collect();
            ps.todo.clear();
            if ps.wants("read-tickets") {
                ps.todo.push(Phase::SearchRead);
            }
            ps.todo.extend(cleanup);
        }
        (Phase::CreateTag, None) => {
            let tag: Option<Tag> = serde_json::from_slice(&resp.body).ok();
            match tag.and_then(|t| t.id) {
                Some(id) => ps.tag_id = Some(id),
                None => {
                    let f =
                        fail::permanent("Intercom's answer to creating the probe tag has no id");
                    ps.record("add-tags", Some(&f));
                    ps.todo.retain(|p| *p != Phase::AttachTag);
                }
            }
        }
        (Phase::CreateTag, Some(f)) if is_permission(&f) => {
            ps.record("add-tags", Some(&f));
            ps.todo.retain(|p| *p != Phase::AttachTag);
        }
        (phase, None) => {
            if let Some(cap) = phase.capability() {
                ps.record(cap, None);
            }
        }
        (phase, Some(f)) if is_permission(&f) => {
            if let Some(cap) = phase.capability() {
                ps.record(cap, Some(&f));
            }
        }
        (_, Some(f)) => ps.stop(&f),
    }
    drive(ps)
}

#[cfg(test)]
mod tests {
    use crate::IntercomAdapter;
    use crate::testutil::*;
    use deskgate_adapter_sdk::prelude::*;
    use serde_json::{Value, json};

    const ADMIN: &str = "991267715";
    const CONTACT: &str = "6762f0dd1bb69f9f2193bb83";

    fn all() -> Vec<Capability> {
        vec![
            Capability::ReadTickets,
            Capability::PublicReply,
            Capability::SetStatus,
            Capability::AddTags,
            Capability::Assign,
        ]
    }

    fn contact_created() -> HttpResponse {
        json_resp(
            200,
            &json!({"type":"contact","id":CONTACT,"role":"lead","name":"deskgate permission probe"}),
        )
    }

    fn conversation_created() -> HttpResponse {
        json_resp(
            200,
            &json!({"type":"user_message","id":"403918330","created_at":1734537501,
            "body":"deskgate permission probe","message_type":"inapp","conversation_id":"499"}),
        )
    }

    fn conv_ok() -> HttpResponse {
        json_resp(
            200,
            &conversation(
                "499",
                "open",
                &[("1", "comment", "admin", "<p>x</p>")],
                &[],
                None,
                None,
            ),
        )
    }

    /// A request the probe sent: method, path, lane, body.
    type Sent = (Method, String, Lane, Option<Value>);

    /// Drive a probe, answering each request with `answer(method, path)`; returns the requests
    /// sent (method, path, lane, body) and the outcome.
    fn run(
        caps: Vec<Capability>,
        answer: impl Fn(Method, &str) -> HttpResponse,
    ) -> (Vec<Sent>, Result<Outcome, Failure>) {
        let op = Operation::Probe(caps);
        let mut log = Vec::new();
        let mut step = IntercomAdapter::start(conn(), op.clone());
        loop {
            match step {
                Ok(Step::Send(p)) => {
                    let r = &p.request;
                    assert_common(r, r.lane);
                    let body = r.body.as_ref().map(|b| serde_json::from_slice(b).unwrap());
                    log.push((r.method, r.path.clone(), r.lane, body));
                    let resp = answer(r.method, &r.path);
                    step = IntercomAdapter::resume(conn(), op.clone(), p.state, resp);
                }
                Ok(Step::Done(o)) => return (log, Ok(o)),
                Err(f) => return (log, Err(f)),
            }
        }
    }

    fn happy(method: Method, path: &str) -> HttpResponse {
        match (method, path) {
            (Method::Post, "/contacts") => contact_created(),
            (Method::Post, "/conversations") => conversation_created(),
            (Method::Post, "/tags") => json_resp(
                200,
                &json!({"type":"tag","id":"77","name":"deskgate-probe"}),
            ),
            (Method::Post, "/conversations/499/tags") => json_resp(
                200,
                &json!({"type":"tag","id":"77","name":"deskgate-probe"}),
            ),
            (Method::Delete, "/conversations/499") => json_resp(
                200,
                &json!({"id":"499","object":"conversation","deleted":true}),
            ),
            (Method::Delete, _) => {
                json_resp(200, &json!({"type":"contact","id":CONTACT,"deleted":true}))
            }
            _ => conv_ok(),
        }
    }

    fn results(o: Result<Outcome, Failure>) -> Vec<CapabilityResult> {
        match o {
            Ok(Outcome::Probed(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn full_sequence() {
        let (log, out) = run(all(), happy);
        let steps: Vec<(Method, &str, Lane)> = log
            .iter()
            .map(|(m, p, l, _)| (*m, p.as_str(), *l))
            .collect();
        assert_eq!(
            steps,
            vec![
                (Method::Post, "/contacts", Lane::Write),
                (Method::Post, "/conversations", Lane::Write),
                (Method::Get, "/conversations/499", Lane::Read),
                (Method::Post, "/conversations/499/reply", Lane::Write),
                (Method::Post, "/conversations/499/parts", Lane::Write),
                (Method::Post, "/tags", Lane::Write),
                (Method::Post, "/conversations/499/tags", Lane::Write),
                (Method::Post, "/conversations/499/parts", Lane::Write),
                (Method::Delete, "/conversations/499", Lane::Write),
                (
                    Method::Delete,
                    "/contacts/6762f0dd1bb69f9f2193bb83",
                    Lane::Write
                ),
            ]
        );
        let bodies: Vec<Option<Value>> = log.into_iter().map(|(_, _, _, b)| b).collect();
        assert_eq!(
            bodies[0],
            Some(json!({"role":"lead","name":"deskgate permission probe"}))
        );
        assert_eq!(
            bodies[1],
            Some(json!({"from":{"type":"lead","id":CONTACT},"body":"deskgate permission probe"}))
        );
        assert_eq!(bodies[2], None);
        assert_eq!(
            bodies[3],
            Some(
                json!({"message_type":"comment","type":"admin","admin_id":ADMIN,"body":"<p>deskgate permission probe</p>"})
            )
        );
        assert_eq!(
            bodies[4],
            Some(json!({"message_type":"close","type":"admin","admin_id":ADMIN}))
        );
        assert_eq!(bodies[5], Some(json!({"name":"deskgate-probe"})));
        assert_eq!(bodies[6], Some(json!({"id":"77","admin_id":ADMIN})));
        assert_eq!(
            bodies[7],
            Some(
                json!({"message_type":"assignment","type":"admin","admin_id":ADMIN,"assignee_id":ADMIN})
            )
        );
        assert_eq!(bodies[8], None);
        let r = results(out);
        assert_eq!(r.len(), 5);
        assert!(r.iter().all(|c| c.granted && c.failure.is_none()));
        assert_eq!(r[0].capability, Capability::ReadTickets);
        assert_eq!(r[4].capability, Capability::Assign);
    }

    #[test]
    fn forbidden_mid_probe_marks_that_capability_and_goes_on() {
        let forbidden = fixture("error_403_action_forbidden_nodata.json");
        let (log, out) = run(
            vec![
                Capability::Assign,
                Capability::AddTags,
                Capability::PublicReply,
            ],
            |m, p| match (m, p) {
                (Method::Post, "/tags") => raw_resp(403, &forbidden),
                _ => happy(m, p),
            },
        );
        let paths: Vec<&str> = log.iter().map(|(_, p, _, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "/contacts",
                "/conversations",
                "/conversations/499/reply",
                "/tags",
                "/conversations/499/parts",
                "/conversations/499",
                "/contacts/6762f0dd1bb69f9f2193bb83",
            ]
        );
        let r = results(out);
        // Requested order.
        let caps: Vec<Capability> = r.iter().map(|c| c.capability).collect();
        assert_eq!(
            caps,
            vec![
                Capability::Assign,
                Capability::AddTags,
                Capability::PublicReply
            ]
        );
        assert!(r[0].granted);
        assert!(!r[1].granted);
        assert!(matches!(&r[1].failure, Some(Failure::Forbidden(d)) if d.missing == "Write tags"));
        assert!(r[2].granted);
    }

    #[test]
    fn forbidden_contact_creation_falls_back_to_search_for_reads() {
        let forbidden = fixture("error_403_action_forbidden.json");
        let (log, out) = run(all(), |m, p| match (m, p) {
            (Method::Post, "/contacts") => raw_resp(403, &forbidden),
            (Method::Post, "/conversations/search") => json_resp(200, &fixture_json("search.json")),
            _ => happy(m, p),
        });
        let steps: Vec<(&str, Lane, Option<Value>)> = log
            .iter()
            .map(|(_, p, l, b)| (p.as_str(), *l, b.clone()))
            .collect();
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].0, "/contacts");
        assert_eq!(
            steps[1],
            (
                "/conversations/search",
                Lane::Read,
                Some(
                    json!({"query":{"field":"updated_at","operator":">","value":0},"pagination":{"per_page":1}})
                )
            )
        );
        let r = results(out);
        assert!(r[0].granted);
        for c in &r[1..] {
            assert!(!c.granted);
            assert!(matches!(&c.failure, Some(Failure::Forbidden(_))));
        }
    }

    #[test]
    fn forbidden_conversation_creation_cleans_up_the_lead() {
        let plan = fixture("error_403_plan.json");
        let (log, out) = run(
            vec![Capability::PublicReply, Capability::ReadTickets],
            |m, p| match (m, p) {
                (Method::Post, "/conversations") => raw_resp(403, &plan),
                (Method::Post, "/conversations/search") => raw_resp(403, &plan),
                _ => happy(m, p),
            },
        );
        let paths: Vec<&str> = log.iter().map(|(_, p, _, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "/contacts",
                "/conversations",
                "/conversations/search",
                "/contacts/6762f0dd1bb69f9f2193bb83"
            ]
        );
        let r = results(out);
        assert_eq!(r[0].capability, Capability::PublicReply);
        assert!(!r[0].granted);
        assert!(
            matches!(&r[0].failure, Some(Failure::Forbidden(d)) if d.kind == PermissionKind::Plan)
        );
        assert!(!r[1].granted);
    }

    #[test]
    fn other_failures_stop_the_probe_after_cleanup() {
        let (log, out) = run(all(), |m, p| match (m, p) {
            (Method::Post, "/conversations/499/reply") => raw_resp(500, "boom"),
            (Method::Delete, "/conversations/499") => raw_resp(403, ""),
            _ => happy(m, p),
        });
        let paths: Vec<&str> = log.iter().map(|(_, p, _, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "/contacts",
                "/conversations",
                "/conversations/499",
                "/conversations/499/reply",
                "/conversations/499",
                "/contacts/6762f0dd1bb69f9f2193bb83",
            ]
        );
        assert!(matches!(out, Err(Failure::Transient(_))));

        // A failure creating the lead: nothing to clean.
        let (log, out) = run(all(), |_, _| raw_resp(502, "<html>bad gateway</html>"));
        assert_eq!(log.len(), 1);
        assert!(matches!(out, Err(Failure::Transient(_))));
    }

    #[test]
    fn read_only_probe_just_searches() {
        let (log, out) = run(vec![Capability::ReadTickets], |_, _| {
            json_resp(200, &fixture_json("search.json"))
        });
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].1, "/conversations/search");
        assert_eq!(log[0].2, Lane::Read);
        let r = results(out);
        assert_eq!(r.len(), 1);
        assert!(r[0].granted);

        let (log, out) = run(vec![Capability::ReadTickets], |_, _| {
            raw_resp(401, &fixture("error_401.json"))
        });
        assert_eq!(log.len(), 1);
        let r = results(out);
        assert!(!r[0].granted);
        assert!(matches!(&r[0].failure, Some(Failure::Unauthenticated(_))));

        let (log, out) = run(vec![], happy);
        assert!(log.is_empty());
        assert!(results(out).is_empty());
    }

    #[test]
    fn write_probe_needs_the_admin() {
        let r = IntercomAdapter::start(
            conn_without_admin(),
            Operation::Probe(vec![Capability::Assign]),
        );
        assert!(matches!(r, Err(Failure::Invalid(_))));
    }
}
