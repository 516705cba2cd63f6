//! apply: reply, set-status, add-tags, assign and resolve, all in the write lane.
//!
//! Every action is planned up front as a list of steps (one request each). Planning is
//! deterministic, so the plan is rebuilt from the operation and the connection on every resume
//! (the host passes both back) and only the progress travels in the state. A step belongs to a
//! part ("reply", "set-status", "add-tags", "assign") and says which parts are complete once it
//! lands; a close that carries the reply completes both "reply" and "set-status" in one request,
//! which is what makes Intercom's resolution atomic.
//!
//! Intercom requests:
//! - reply: `POST /conversations/{id}/reply` `{"message_type":"comment","type":"admin","admin_id":..,"body":"<p>..</p>"}`
//! - close: `POST /conversations/{id}/parts` `{"message_type":"close","type":"admin","admin_id":..[,"body":..]}`
//! - open: `POST /conversations/{id}/parts` `{"message_type":"open","admin_id":..}` (the spec's
//!   `open_conversation_request` has no `type`)
//! - tag: `POST /tags` `{"name":..}` (creates the tag or returns the existing one), then
//!   `POST /conversations/{id}/tags` `{"id":tag_id,"admin_id":..}`
//! - assign: `POST /conversations/{id}/parts` `{"message_type":"assignment","type":"admin"|"team","admin_id":..,"assignee_id":..}`
//!
//! Snoozing (pending, on-hold) needs a `snoozed_until` time and adapters have no clock, so those
//! statuses are refused as invalid.

use crate::errors::{classify, need};
use crate::model::{Conversation, Tag};
use crate::translate::{State, admin_id, conversation_id, ok, reply_html, request};
use deskgate_adapter_sdk::prelude::*;
use serde::{Deserialize, Serialize};

/// Why pending / on-hold cannot be set.
pub const SNOOZE_UNSUPPORTED: &str = "Intercom snoozes need a time (snoozed_until) and the \
    adapter has no clock, so pending / on-hold cannot be set on an Intercom conversation; use \
    open, solved or closed";

/// One request of a planned write.
#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    /// A public admin comment.
    Reply { body: String },
    /// A close part, optionally carrying the reply.
    Close { body: Option<String> },
    /// An open part.
    Open,
    /// Create (or find) the tag by name.
    CreateTag { name: String },
    /// Attach the tag the previous step returned.
    AttachTag { name: String },
    /// An assignment part to an admin or a team.
    Assign { assignee_id: String, team: bool },
}

/// A step with the part it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedStep {
    pub kind: StepKind,
    /// The part a failure of this step is reported as.
    pub part: String,
    /// Parts complete once this step lands.
    pub completes: Vec<String>,
    /// Whether this step posts the action's reply (its part id is the receipt's reference).
    pub carries_reply: bool,
}

/// A write's plan, rebuilt from the operation and the connection at every step.
#[derive(Debug)]
pub struct WritePlan {
    pub ticket_id: String,
    pub admin_id: String,
    pub steps: Vec<PlannedStep>,
}

impl WritePlan {
    /// Plan `a` for the admin `conn` acts as.
    pub fn new(conn: &Connection, a: &ApplyAction) -> Result<Self, Failure> {
        Ok(Self {
            ticket_id: conversation_id(&a.ticket_id)?.to_string(),
            steps: plan(&a.action)?,
            admin_id: admin_id(conn)?,
        })
    }
}

/// The progress of an apply between steps: all the state carries.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WriteState {
    pub idx: usize,
    pub applied: Vec<String>,
    pub tag_id: Option<String>,
    pub reference: Option<String>,
}

fn step(kind: StepKind, part: &str, completes: &[&str], carries_reply: bool) -> PlannedStep {
    PlannedStep {
        kind,
        part: part.to_string(),
        completes: completes.iter().map(|s| s.to_string()).collect(),
        carries_reply,
    }
}

fn reply_body(text: &str) -> Result<String, Failure> {
    if !text::has_visible_text(text) {
        return Err(fail::invalid(
            "the reply is empty; Intercom requires a body for a comment",
        ));
    }
    Ok(reply_html(text))
}

fn tag_steps(tags: &[String]) -> Result<Vec<PlannedStep>, Failure> {
    // Intercom tag names are case-insensitive: one request pair per distinct name.
    let mut names: Vec<&str> = Vec::new();
    for t in tags {
        let t = t.trim();
        if t.is_empty() {
            return Err(fail::invalid("a tag name is empty"));
        }
        if !names.iter().any(|n| n.eq_ignore_ascii_case(t)) {
            names.push(t);
        }
    }
    let mut steps = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let last = i + 1 == names.len();
        steps.push(step(
            StepKind::CreateTag {
                name: name.to_string(),
            },
            "add-tags",
            &[],
            false,
        ));
        steps.push(step(
            StepKind::AttachTag {
                name: name.to_string(),
            },
            "add-tags",
            if last { &["add-tags"] } else { &[] },
            false,
        ));
    }
    Ok(steps)
}

fn assign_steps(a: &Assignee) -> Vec<PlannedStep> {
    let targets: Vec<(String, bool)> = [(a.agent_id.as_ref(), false), (a.group_id.as_ref(), true)]
        .into_iter()
        .filter_map(|(id, team)| {
            id.map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .map(|s| (s, team))
        })
        .collect();
    let n = targets.len();
    targets
        .into_iter()
        .enumerate()
        .map(|(i, (assignee_id, team))| {
            step(
                StepKind::Assign { assignee_id, team },
                "assign",
                if i + 1 == n { &["assign"] } else { &[] },
                false,
            )
        })
        .collect()
}

fn status_steps(status: TicketStatus, reply: Option<String>) -> Result<Vec<PlannedStep>, Failure> {
    Ok(match (status, reply) {
        (TicketStatus::Solved | TicketStatus::Closed, None) => {
            vec![step(
                StepKind::Close { body: None },
                "set-status",
                &["set-status"],
                false,
            )]
        }
        (TicketStatus::Solved | TicketStatus::Closed, Some(body)) => vec![step(
            StepKind::Close { body: Some(body) },
            "reply",
            &["reply", "set-status"],
            true,
        )],
        (TicketStatus::Open | TicketStatus::New, reply) => {
            let mut steps = Vec::new();
            if let Some(body) = reply {
                steps.push(step(StepKind::Reply { body }, "reply", &["reply"], true));
            }
            steps.push(step(StepKind::Open, "set-status", &["set-status"], false));
            steps
        }
        (TicketStatus::Pending | TicketStatus::OnHold, _) => {
            return Err(fail::invalid(SNOOZE_UNSUPPORTED));
        }
    })
}

/// The steps of an action.
pub fn plan(action: &Action) -> Result<Vec<PlannedStep>, Failure> {
    match action {
        Action::Reply(text) => Ok(vec![step(
            StepKind::Reply {
                body: reply_body(text)?,
            },
            "reply",
            &["reply"],
            true,
        )]),
        Action::SetStatus(s) => status_steps(*s, None),
        Action::AddTags(tags) => {
            if tags.is_empty() {
                return Err(fail::invalid("add-tags needs at least one tag"));
            }
            tag_steps(tags)
        }
        Action::Assign(a) => {
            let steps = assign_steps(a);
            if steps.is_empty() {
                return Err(fail::invalid("assign needs an agent or a group"));
            }
            Ok(steps)
        }
        Action::Resolve(r) => {
            let mut steps = status_steps(r.status, Some(reply_body(&r.reply)?))?;
            steps.extend(tag_steps(&r.tags)?);
            if let Some(a) = &r.assignee {
                steps.extend(assign_steps(a));
            }
            Ok(steps)
        }
    }
}

/// Plan an apply and send its first request.
pub fn start(conn: &Connection, a: &ApplyAction) -> Result<Step, Failure> {
    next(&WritePlan::new(conn, a)?, WriteState::default())
}

fn next(wp: &WritePlan, ws: WriteState) -> Result<Step, Failure> {
    let req = step_request(wp, &ws)?;
    send(req, &State::Write(ws))
}

/// The body of a write request, serialized from borrowed fields in the order Intercom's
/// examples give them; absent fields are left out.
#[derive(Serialize, Default)]
struct PartBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    message_type: Option<&'static str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    admin_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    assignee_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
}

/// The request of the current step.
pub fn step_request(wp: &WritePlan, ws: &WriteState) -> Result<HttpRequest, Failure> {
    let cur = current(wp, ws)?;
    let id = &wp.ticket_id;
    let admin = Some(wp.admin_id.as_str());
    let parts = || format!("/conversations/{id}/parts");
    let (path, body) = match &cur.kind {
        StepKind::Reply { body } => (
            format!("/conversations/{id}/reply"),
            PartBody {
                message_type: Some("comment"),
                kind: Some("admin"),
                admin_id: admin,
                body: Some(body),
                ..PartBody::default()
            },
        ),
        StepKind::Close { body } => (
            parts(),
            PartBody {
                message_type: Some("close"),
                kind: Some("admin"),
                admin_id: admin,
                body: body.as_deref(),
                ..PartBody::default()
            },
        ),
        StepKind::Open => (
            parts(),
            PartBody {
                message_type: Some("open"),
                admin_id: admin,
                ..PartBody::default()
            },
        ),
        StepKind::CreateTag { name } => (
            "/tags".to_string(),
            PartBody {
                name: Some(name),
                ..PartBody::default()
            },
        ),
        StepKind::AttachTag { name } => {
            let tag_id = ws.tag_id.as_ref().ok_or_else(|| {
                fail::permanent(format!(
                    "corrupt adapter state: no tag id to attach {name:?}"
                ))
            })?;
            (
                format!("/conversations/{id}/tags"),
                PartBody {
                    id: Some(tag_id),
                    admin_id: admin,
                    ..PartBody::default()
                },
            )
        }
        StepKind::Assign { assignee_id, team } => (
            parts(),
            PartBody {
                message_type: Some("assignment"),
                // UNCONFIRMED: the spec's enum for `type` is admin | team; "team" is sent when
                // the assignee is a team.
                kind: Some(if *team { "team" } else { "admin" }),
                admin_id: admin,
                assignee_id: Some(assignee_id),
                ..PartBody::default()
            },
        ),
    };
    Ok(request(Method::Post, path, Lane::Write).json(&body).build())
}

fn current<'a>(wp: &'a WritePlan, ws: &WriteState) -> Result<&'a PlannedStep, Failure> {
    wp.steps
        .get(ws.idx)
        .ok_or_else(|| fail::permanent("corrupt adapter state: write step out of range"))
}

fn step_need(kind: &StepKind) -> &'static str {
    match kind {
        StepKind::CreateTag { .. } | StepKind::AttachTag { .. } => need::WRITE_TAGS,
        _ => need::WRITE_CONVERSATIONS,
    }
}

/// Handle the response to the current step of `a`.
pub fn resume(
    conn: &Connection,
    a: &ApplyAction,
    mut ws: WriteState,
    resp: &HttpResponse,
) -> Result<Step, Failure> {
    let wp = WritePlan::new(conn, a)?;
    let cur = current(&wp, &ws)?;
    if !ok(resp) {
        return failed(&wp, ws, cur, classify(resp, step_need(&cur.kind)));
    }
    let mut conversation: Option<Conversation> = None;
    match &cur.kind {
        StepKind::CreateTag { name } => {
            let tag: Option<Tag> = serde_json::from_slice(&resp.body).ok();
            match tag.and_then(|t| t.id) {
                Some(id) => ws.tag_id = Some(id),
                None => {
                    let f = fail::permanent(format!(
                        "Intercom's answer to creating tag {name:?} has no tag id"
                    ));
                    return failed(&wp, ws, cur, f);
                }
            }
        }
        StepKind::AttachTag { .. } => {}
        _ => {
            // The write landed; an unreadable body only loses the reference.
            conversation = serde_json::from_slice(&resp.body).ok();
            let part_id = conversation.as_ref().and_then(Conversation::last_part_id);
            let has_reply = wp.steps.iter().any(|s| s.carries_reply);
            if cur.carries_reply || !has_reply {
                ws.reference = part_id;
            }
        }
    }
    for p in &cur.completes {
        if !ws.applied.contains(p) {
            ws.applied.push(p.clone());
        }
    }
    ws.idx += 1;
    if ws.idx < wp.steps.len() {
        return next(&wp, ws);
    }
    done(Outcome::Written(WriteReceipt {
        ticket: conversation.and_then(|c| c.into_ticket().ok()),
        reference: ws.reference,
        applied: ws.applied,
        failed: None,
    }))
}

/// A failed step: an error when nothing landed yet, otherwise a receipt naming what landed.
fn failed(
    wp: &WritePlan,
    ws: WriteState,
    cur: &PlannedStep,
    failure: Failure,
) -> Result<Step, Failure> {
    if ws.applied.is_empty() {
        return Err(failure);
    }
    let mut skipped: Vec<String> = Vec::new();
    for s in &wp.steps[ws.idx + 1..] {
        if s.part != cur.part && !ws.applied.contains(&s.part) && !skipped.contains(&s.part) {
            skipped.push(s.part.clone());
        }
    }
    done(Outcome::Written(WriteReceipt {
        ticket: None,
        reference: ws.reference,
        applied: ws.applied,
        failed: Some(PartFailure {
            part: cur.part.clone(),
            failure,
            skipped,
        }),
    }))
}

#[cfg(test)]
mod tests {
    use crate::IntercomAdapter;
    use crate::testutil::*;
    use deskgate_adapter_sdk::prelude::*;
    use serde_json::{Value, json};

    const ADMIN: &str = "991267715";

    fn apply(action: Action) -> Operation {
        Operation::Apply(ApplyAction {
            ticket_id: "503".to_string(),
            action,
        })
    }

    fn start(op: &Operation) -> Result<Step, Failure> {
        IntercomAdapter::start(conn(), op.clone())
    }

    fn resume(op: &Operation, state: &str, resp: HttpResponse) -> Result<Step, Failure> {
        IntercomAdapter::resume(conn(), op.clone(), state.to_string(), resp)
    }

    /// A conversation response whose last part is `part_id`.
    fn conv_resp(part_id: &str, part_type: &str, state: &str) -> HttpResponse {
        json_resp(
            200,
            &conversation(
                "503",
                state,
                &[(part_id, part_type, "admin", "<p>x</p>")],
                &[],
                None,
                None,
            ),
        )
    }

    fn tag_resp(id: &str, name: &str) -> HttpResponse {
        json_resp(200, &json!({"type":"tag","id":id,"name":name}))
    }

    fn expect(req: &HttpRequest, path: &str, body_json: Value) {
        assert_eq!(req.method, Method::Post, "{req:?}");
        assert_eq!(req.path, path);
        assert_common(req, Lane::Write);
        assert_eq!(body(req), body_json);
    }

    fn receipt(o: Outcome) -> WriteReceipt {
        match o {
            Outcome::Written(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn state_carries_progress_not_the_plan() {
        let op = apply(Action::Reply(
            "this sentence stays in the operation".to_string(),
        ));
        let (_, state) = sent(start(&op));
        assert!(!state.contains("stays in the operation"), "{state}");
        // Progress past the end of the plan rebuilt from the operation is refused, not guessed at.
        let past = r#"{"op":"write","idx":3,"applied":[],"tag_id":null,"reference":null}"#;
        let r = resume(&op, past, conv_resp("160", "comment", "open"));
        assert!(
            matches!(&r, Err(Failure::Permanent(m)) if m.contains("out of range")),
            "{r:?}"
        );
    }

    #[test]
    fn a_state_in_the_earlier_format_still_resumes() {
        // States written before the plan stopped travelling in them (a host may have kept one in
        // its database) carry the same progress fields plus the plan, which is now ignored.
        let op = apply(Action::Reply("Thanks".to_string()));
        let old = r#"{"op":"write","ticket_id":"503","admin_id":"991267715","steps":[{"kind":
            {"kind":"reply","body":"<p>Thanks</p>"},"part":"reply","completes":["reply"],
            "carries_reply":true}],"idx":0,"applied":[],"tag_id":null,"reference":null}"#;
        let r = receipt(finished(resume(
            &op,
            old,
            conv_resp("160", "comment", "open"),
        )));
        assert_eq!(r.applied, vec!["reply".to_string()]);
        assert_eq!(r.reference.as_deref(), Some("160"));
    }

    #[test]
    fn reply() {
        let op = apply(Action::Reply("Thanks, <fixed> & shipped.".to_string()));
        let (req, state) = sent(start(&op));
        expect(
            &req,
            "/conversations/503/reply",
            json!({"message_type":"comment","type":"admin","admin_id":ADMIN,
                   "body":"<p>Thanks, &lt;fixed&gt; &amp; shipped.</p>"}),
        );
        let r = receipt(finished(resume(
            &op,
            &state,
            conv_resp("140", "comment", "open"),
        )));
        assert_eq!(r.applied, vec!["reply"]);
        assert_eq!(r.reference.as_deref(), Some("140"));
        assert_eq!(r.ticket.as_ref().map(|t| t.id.as_str()), Some("503"));
        assert!(r.failed.is_none());
    }

    #[test]
    fn reply_errors() {
        let op = apply(Action::Reply("hi".to_string()));
        let (_, state) = sent(start(&op));
        let r = resume(
            &op,
            &state,
            raw_resp(403, &fixture("error_403_action_forbidden_nodata.json")),
        );
        assert!(matches!(r, Err(Failure::Forbidden(d)) if d.missing == "Write conversations"));
        let r = resume(&op, &state, raw_resp(404, &fixture("error_404.json")));
        assert!(matches!(r, Err(Failure::NotFound(_))));
        // A 2xx with an unreadable body still landed.
        let r = receipt(finished(resume(&op, &state, raw_resp(200, "not json"))));
        assert_eq!(r.applied, vec!["reply"]);
        assert_eq!(r.reference, None);
        // Empty replies, missing admin and bad ids never leave.
        assert!(matches!(
            start(&apply(Action::Reply("<p> </p>".to_string()))),
            Err(Failure::Invalid(_))
        ));
        assert!(matches!(
            IntercomAdapter::start(conn_without_admin(), op.clone()),
            Err(Failure::Invalid(m)) if m.contains("who-am-i")
        ));
        let bad = Operation::Apply(ApplyAction {
            ticket_id: "x1".to_string(),
            action: Action::Reply("hi".to_string()),
        });
        assert!(matches!(start(&bad), Err(Failure::Invalid(_))));
    }

    #[test]
    fn set_status_every_status() {
        for status in [TicketStatus::Solved, TicketStatus::Closed] {
            let op = apply(Action::SetStatus(status));
            let (req, state) = sent(start(&op));
            expect(
                &req,
                "/conversations/503/parts",
                json!({"message_type":"close","type":"admin","admin_id":ADMIN}),
            );
            let r = receipt(finished(resume(&op, &state, fixture_resp_close())));
            assert_eq!(r.applied, vec!["set-status"]);
            assert_eq!(r.reference.as_deref(), Some("136"));
            assert_eq!(r.ticket.map(|t| t.status), Some(TicketStatus::Solved));
        }
        for status in [TicketStatus::Open, TicketStatus::New] {
            let op = apply(Action::SetStatus(status));
            let (req, state) = sent(start(&op));
            expect(
                &req,
                "/conversations/503/parts",
                json!({"message_type":"open","admin_id":ADMIN}),
            );
            let r = receipt(finished(resume(
                &op,
                &state,
                conv_resp("150", "open", "open"),
            )));
            assert_eq!(r.applied, vec!["set-status"]);
        }
        for status in [TicketStatus::Pending, TicketStatus::OnHold] {
            let r = start(&apply(Action::SetStatus(status)));
            assert!(matches!(r, Err(Failure::Invalid(m)) if m.contains("snoozes need a time")));
        }
    }

    fn fixture_resp_close() -> HttpResponse {
        json_resp(200, &fixture_json("close.json"))
    }

    #[test]
    fn add_tags_creates_then_attaches_each() {
        let op = apply(Action::AddTags(vec![
            "vip".to_string(),
            "VIP".to_string(),
            "refund".to_string(),
        ]));
        let (req, state) = sent(start(&op));
        expect(&req, "/tags", json!({"name":"vip"}));
        let (req, state) = sent(resume(&op, &state, tag_resp("11", "vip")));
        expect(
            &req,
            "/conversations/503/tags",
            json!({"id":"11","admin_id":ADMIN}),
        );
        let (req, state) = sent(resume(&op, &state, tag_resp("11", "vip")));
        expect(&req, "/tags", json!({"name":"refund"}));
        let (req, state) = sent(resume(&op, &state, tag_resp("12", "refund")));
        expect(
            &req,
            "/conversations/503/tags",
            json!({"id":"12","admin_id":ADMIN}),
        );
        let r = receipt(finished(resume(&op, &state, tag_resp("12", "refund"))));
        assert_eq!(r.applied, vec!["add-tags"]);
        assert!(r.ticket.is_none());
        assert_eq!(r.reference, None);
    }

    #[test]
    fn add_tags_failures() {
        let op = apply(Action::AddTags(vec!["vip".to_string()]));
        let (_, state) = sent(start(&op));
        let r = resume(
            &op,
            &state,
            raw_resp(403, &fixture("error_403_action_forbidden_nodata.json")),
        );
        assert!(matches!(r, Err(Failure::Forbidden(d)) if d.missing == "Write tags"));
        // A tag answer without an id is a failure.
        let r = resume(&op, &state, json_resp(200, &json!({"type":"tag"})));
        assert!(matches!(r, Err(Failure::Permanent(_))));
        assert!(matches!(
            start(&apply(Action::AddTags(vec![]))),
            Err(Failure::Invalid(_))
        ));
        assert!(matches!(
            start(&apply(Action::AddTags(vec![" ".to_string()]))),
            Err(Failure::Invalid(_))
        ));
    }

    #[test]
    fn assign_agent_group_and_both() {
        let op = apply(Action::Assign(Assignee {
            agent_id: Some("42".to_string()),
            group_id: None,
        }));
        let (req, state) = sent(start(&op));
        expect(
            &req,
            "/conversations/503/parts",
            json!({"message_type":"assignment","type":"admin","admin_id":ADMIN,"assignee_id":"42"}),
        );
        let r = receipt(finished(resume(
            &op,
            &state,
            conv_resp("160", "assignment", "open"),
        )));
        assert_eq!(r.applied, vec!["assign"]);

        let op = apply(Action::Assign(Assignee {
            agent_id: None,
            group_id: Some("5017691".to_string()),
        }));
        let (req, _) = sent(start(&op));
        expect(
            &req,
            "/conversations/503/parts",
            json!({"message_type":"assignment","type":"team","admin_id":ADMIN,"assignee_id":"5017691"}),
        );

        let op = apply(Action::Assign(Assignee {
            agent_id: Some("42".to_string()),
            group_id: Some("7".to_string()),
        }));
        let (req, state) = sent(start(&op));
        assert_eq!(body(&req)["assignee_id"], json!("42"));
        let (req, state) = sent(resume(&op, &state, conv_resp("160", "assignment", "open")));
        assert_eq!(body(&req)["assignee_id"], json!("7"));
        assert_eq!(body(&req)["type"], json!("team"));
        let r = receipt(finished(resume(
            &op,
            &state,
            conv_resp("161", "assignment", "open"),
        )));
        assert_eq!(r.applied, vec!["assign"]);
        assert_eq!(r.reference.as_deref(), Some("161"));

        // The team part failing after the agent part: the part did not complete, so an error.
        let (_, state) = sent(start(&op));
        let (_, state) = sent(resume(&op, &state, conv_resp("160", "assignment", "open")));
        let r = resume(
            &op,
            &state,
            raw_resp(400, &fixture("error_team_unavailable.json")),
        );
        assert!(matches!(r, Err(Failure::Invalid(_))));

        let none = apply(Action::Assign(Assignee {
            agent_id: None,
            group_id: None,
        }));
        assert!(matches!(start(&none), Err(Failure::Invalid(_))));
    }

    fn resolution(status: TicketStatus, tags: &[&str], assignee: Option<Assignee>) -> Operation {
        apply(Action::Resolve(Resolution {
            reply: "All fixed.".to_string(),
            status,
            tags: tags.iter().map(|s| s.to_string()).collect(),
            assignee,
        }))
    }

    #[test]
    fn resolve_solved_is_one_close_with_the_reply() {
        let op = resolution(TicketStatus::Solved, &[], None);
        let (req, state) = sent(start(&op));
        expect(
            &req,
            "/conversations/503/parts",
            json!({"message_type":"close","type":"admin","admin_id":ADMIN,"body":"<p>All fixed.</p>"}),
        );
        let r = receipt(finished(resume(&op, &state, fixture_resp_close())));
        assert_eq!(r.applied, vec!["reply", "set-status"]);
        assert_eq!(r.reference.as_deref(), Some("136"));
        assert!(r.failed.is_none());
        // The close failing means nothing landed.
        let r = resume(&op, &state, raw_resp(503, ""));
        assert!(matches!(r, Err(Failure::Transient(_))));
    }

    #[test]
    fn resolve_with_tags_and_assignee_in_order() {
        let op = resolution(
            TicketStatus::Closed,
            &["refund"],
            Some(Assignee {
                agent_id: Some("42".to_string()),
                group_id: Some("7".to_string()),
            }),
        );
        let (req, state) = sent(start(&op));
        assert_eq!(body(&req)["message_type"], json!("close"));
        let (req, state) = sent(resume(&op, &state, conv_resp("170", "close", "closed")));
        expect(&req, "/tags", json!({"name":"refund"}));
        let (req, state) = sent(resume(&op, &state, tag_resp("12", "refund")));
        expect(
            &req,
            "/conversations/503/tags",
            json!({"id":"12","admin_id":ADMIN}),
        );
        let (req, state) = sent(resume(&op, &state, tag_resp("12", "refund")));
        assert_eq!(body(&req)["assignee_id"], json!("42"));
        let (req, state) = sent(resume(
            &op,
            &state,
            conv_resp("171", "assignment", "closed"),
        ));
        assert_eq!(body(&req)["assignee_id"], json!("7"));
        let r = receipt(finished(resume(
            &op,
            &state,
            conv_resp("172", "assignment", "closed"),
        )));
        assert_eq!(r.applied, vec!["reply", "set-status", "add-tags", "assign"]);
        // The reference is the part that carried the reply.
        assert_eq!(r.reference.as_deref(), Some("170"));
        assert!(r.failed.is_none());
    }

    #[test]
    fn resolve_part_failure_after_the_close_is_a_receipt() {
        let op = resolution(
            TicketStatus::Solved,
            &["refund"],
            Some(Assignee {
                agent_id: Some("42".to_string()),
                group_id: None,
            }),
        );
        let (_, state) = sent(start(&op));
        let (_, state) = sent(resume(&op, &state, conv_resp("170", "close", "closed")));
        let r = receipt(finished(resume(
            &op,
            &state,
            raw_resp(403, &fixture("error_403_action_forbidden_nodata.json")),
        )));
        assert_eq!(r.applied, vec!["reply", "set-status"]);
        assert_eq!(r.reference.as_deref(), Some("170"));
        let f = r.failed.expect("a part failure");
        assert_eq!(f.part, "add-tags");
        assert_eq!(f.skipped, vec!["assign"]);
        assert!(matches!(f.failure, Failure::Forbidden(d) if d.missing == "Write tags"));

        // Assign failing last: nothing skipped.
        let (_, state) = sent(start(&op));
        let (_, state) = sent(resume(&op, &state, conv_resp("170", "close", "closed")));
        let (_, state) = sent(resume(&op, &state, tag_resp("12", "refund")));
        let (_, state) = sent(resume(&op, &state, tag_resp("12", "refund")));
        let r = receipt(finished(resume(&op, &state, raw_resp(500, "oops"))));
        assert_eq!(r.applied, vec!["reply", "set-status", "add-tags"]);
        let f = r.failed.expect("a part failure");
        assert_eq!(f.part, "assign");
        assert!(f.skipped.is_empty());
        assert!(matches!(f.failure, Failure::Transient(_)));
    }

    #[test]
    fn resolve_open_replies_then_opens() {
        let op = resolution(TicketStatus::Open, &[], None);
        let (req, state) = sent(start(&op));
        expect(
            &req,
            "/conversations/503/reply",
            json!({"message_type":"comment","type":"admin","admin_id":ADMIN,"body":"<p>All fixed.</p>"}),
        );
        let (req, state) = sent(resume(&op, &state, conv_resp("180", "comment", "open")));
        expect(
            &req,
            "/conversations/503/parts",
            json!({"message_type":"open","admin_id":ADMIN}),
        );
        // The open part failing after the reply landed.
        let r = receipt(finished(resume(
            &op,
            &state,
            raw_resp(409, &fixture("error_409.json")),
        )));
        assert_eq!(r.applied, vec!["reply"]);
        assert_eq!(r.reference.as_deref(), Some("180"));
        let f = r.failed.unwrap();
        assert_eq!(f.part, "set-status");
        assert!(matches!(f.failure, Failure::Transient(_)));

        for status in [TicketStatus::Pending, TicketStatus::OnHold] {
            assert!(matches!(
                start(&resolution(status, &[], None)),
                Err(Failure::Invalid(_))
            ));
        }
    }
}
