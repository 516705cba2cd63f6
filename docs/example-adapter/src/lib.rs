//! A deskgate adapter for AcmeDesk, an imaginary helpdesk: the complete example of
//! `docs/writing-an-adapter.md`.
//!
//! AcmeDesk's API, as far as this adapter uses it:
//!
//! - Auth: a bearer token (the host sends `Authorization: Bearer ...`; we never see it).
//! - Rate limit: one plan, "standard", 300 requests per minute for the whole account, reported in
//!   `x-ratelimit-limit`, `x-ratelimit-remaining` and `x-ratelimit-reset` (seconds); a 429 carries
//!   `retry-after` (seconds).
//! - `GET /api/tickets/{id}` gives `{"ticket": {...}}` with its latest replies.
//! - `GET /api/tickets?updated_since={unix seconds}&cursor={c}` and
//!   `GET /api/tickets?status=unresolved&cursor={c}` give `{"tickets": [...], "next_cursor": ...}`.
//! - `POST /api/tickets/{id}/replies` with `{"body", "public"}` gives `{"reply": {...}}` and honours
//!   an `Idempotency-Key` header.
//! - `PATCH /api/tickets/{id}` with any of `status`, `add_tags`, `assignee_id`, `group_id` gives
//!   `{"ticket": {...}}`.
//! - `GET /api/me` gives the token's agent and the scopes it was granted.
//! - Errors: `{"error": {"code", "message", "required_scope"}}`.
//! - Webhooks: one event per delivery, signed with hex HMAC-SHA256 over `{timestamp}.{body}`, the
//!   signature in `x-acme-signature` and the Unix timestamp in `x-acme-timestamp`.

use deskgate_adapter_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The one rate bucket: every request spends from it.
const ACCOUNT: &str = "account";

/// The adapter. Public so native tests can call it through [`Guest`].
pub struct AcmeDesk;

/// What `resume` needs to know beyond the operation itself. The host stores it as an opaque
/// string between `start` and `resume`, and again between the two requests of a resolution.
#[derive(Debug, Serialize, Deserialize)]
enum State {
    /// The operation's first request is out.
    Sent,
    /// A resolution's reply landed as `reply_id`; its `PATCH` is out.
    Patched {
        /// The reply's id, for the receipt.
        reply_id: String,
    },
}

impl Guest for AcmeDesk {
    fn describe() -> Descriptor {
        let capability = |capability, scope: &str| CapabilitySpec {
            capability,
            method: ProbeMethod::TokenIntrospection,
            requires: format!("the token's scope {scope} (Settings > API tokens)"),
        };
        Descriptor {
            id: "acmedesk".to_string(),
            name: "AcmeDesk".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            auth: vec![AuthScheme::Bearer],
            plans: vec![PlanLimits {
                plan: "standard".to_string(),
                buckets: vec![RateBucket {
                    name: ACCOUNT.to_string(),
                    scope: BucketScope::Account,
                    limit: 300,
                    window_ms: 60_000,
                    description: "API requests per minute, shared by every client of the account"
                        .to_string(),
                }],
            }],
            default_plan: "standard".to_string(),
            // A lone reply's POST carries the key; a resolution is two requests, so after an
            // ambiguous outcome the host reads it back instead.
            idempotent_actions: vec!["reply".to_string()],
            capabilities: vec![
                capability(Capability::ReadTickets, scope(Capability::ReadTickets)),
                capability(Capability::PublicReply, scope(Capability::PublicReply)),
                capability(Capability::SetStatus, scope(Capability::SetStatus)),
                capability(Capability::AddTags, scope(Capability::AddTags)),
                capability(Capability::Assign, scope(Capability::Assign)),
            ],
            webhook: WebhookSpec {
                algorithm: SignatureAlgorithm::HmacSha256Hex,
                signature_header: "x-acme-signature".to_string(),
                max_age_secs: Some(300),
            },
            atomic_resolution: false,
        }
    }

    fn start(_conn: Connection, op: Operation) -> Result<Step, Failure> {
        let request = match &op {
            Operation::GetTicket(id) => read(ticket_path(id)?),
            Operation::ListChanged(list) => {
                let since = list.since.div_euclid(1000);
                read(list_path(
                    &format!("updated_since={since}"),
                    list.cursor.as_deref(),
                ))
            }
            Operation::ListOpen(cursor) => read(list_path("status=unresolved", cursor.as_deref())),
            Operation::WhoAmI | Operation::Probe(_) => read("/api/me".to_string()),
            Operation::ReadBack(a) => read(ticket_path(&a.ticket_id)?),
            Operation::Apply(a) => match &a.action {
                Action::Reply(body) => reply_request(&a.ticket_id, body)?
                    .idempotency_header("Idempotency-Key")
                    .build(),
                Action::Resolve(r) => reply_request(&a.ticket_id, &r.reply)?.build(),
                Action::SetStatus(status) => patch_request(&a.ticket_id, Some(*status), &[], None)?,
                Action::AddTags(tags) => patch_request(&a.ticket_id, None, tags, None)?,
                Action::Assign(to) => patch_request(&a.ticket_id, None, &[], Some(to))?,
            },
        };
        send(request, &State::Sent)
    }

    fn resume(
        _conn: Connection,
        op: Operation,
        state: String,
        response: HttpResponse,
    ) -> Result<Step, Failure> {
        let state: State = serde_json::from_str(&state)
            .map_err(|e| fail::permanent(format!("state {state:?} is not this adapter's: {e}")))?;
        if let (State::Patched { reply_id }, Operation::Apply(a)) = (&state, &op)
            && let Action::Resolve(r) = &a.action
        {
            return finish_resolution(r, reply_id.clone(), &response);
        }
        if !Response::new(&response).is_success() {
            return Err(classify(&response));
        }
        let body = &response.body;
        match op {
            Operation::GetTicket(_) => {
                let t: TicketEnvelope = parse_json(body, "ticket")?;
                done(Outcome::Ticket(t.ticket.normalize()?))
            }
            Operation::ListChanged(_) | Operation::ListOpen(_) => {
                let page: PageEnvelope = parse_json(body, "ticket list")?;
                let tickets = page.tickets.into_iter().map(ApiTicket::normalize);
                done(Outcome::Page(TicketPage {
                    tickets: tickets.collect::<Result<_, _>>()?,
                    next_cursor: page.next_cursor.filter(|c| !c.is_empty()),
                }))
            }
            Operation::WhoAmI => {
                let me: Me = parse_json(body, "me")?;
                done(Outcome::Identity(Identity {
                    agent_id: me.id,
                    name: me.name,
                    email: me.email,
                    role: me.role,
                    scopes: Some(me.scopes),
                }))
            }
            Operation::Probe(capabilities) => {
                let me: Me = parse_json(body, "me")?;
                done(Outcome::Probed(
                    capabilities.into_iter().map(|c| probe(&me, c)).collect(),
                ))
            }
            Operation::ReadBack(a) => {
                let t: TicketEnvelope = parse_json(body, "ticket")?;
                done(Outcome::ReadBack(read_back(
                    &a.action,
                    &t.ticket.normalize()?,
                )))
            }
            Operation::Apply(a) => match a.action {
                Action::Reply(_) => {
                    let r: ReplyEnvelope = parse_json(body, "reply")?;
                    done(written(None, Some(r.reply.id), &["reply"]))
                }
                Action::Resolve(r) => {
                    // The reply landed; now the status (and tags and assignee) in one PATCH.
                    let reply: ReplyEnvelope = parse_json(body, "reply")?;
                    let patch =
                        patch_request(&a.ticket_id, Some(r.status), &r.tags, r.assignee.as_ref())?;
                    send(
                        patch,
                        &State::Patched {
                            reply_id: reply.reply.id,
                        },
                    )
                }
                Action::SetStatus(_) | Action::AddTags(_) | Action::Assign(_) => {
                    let t: TicketEnvelope = parse_json(body, "ticket")?;
                    done(written(
                        Some(t.ticket.normalize()?),
                        None,
                        &parts(&a.action),
                    ))
                }
            },
        }
    }

    fn observe(_conn: Connection, response: HttpResponse) -> Vec<RateObservation> {
        let r = Response::new(&response);
        let number = |name| r.header_u64(name).and_then(|v| u32::try_from(v).ok());
        let (limit, remaining) = (number("x-ratelimit-limit"), number("x-ratelimit-remaining"));
        let reset_ms = r
            .header_u64("x-ratelimit-reset")
            .map(|s| s.saturating_mul(1000));
        if limit.is_none() && remaining.is_none() && reset_ms.is_none() {
            return Vec::new();
        }
        let bucket = ACCOUNT.to_string();
        vec![RateObservation {
            bucket,
            key: None,
            limit,
            remaining,
            reset_ms,
            reset_at: None,
        }]
    }

    fn parse_webhook(
        _conn: Connection,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Result<Webhook, Failure> {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let signature = match (header("x-acme-signature"), header("x-acme-timestamp")) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(fail::invalid("x-acme-signature without x-acme-timestamp"));
            }
            (Some(provided), Some(timestamp)) => {
                let secs: i64 = timestamp.trim().parse().map_err(|_| {
                    fail::invalid(format!(
                        "x-acme-timestamp {timestamp:?} is not Unix seconds"
                    ))
                })?;
                let mut signed = format!("{timestamp}.").into_bytes();
                signed.extend_from_slice(&body);
                let algorithm = SignatureAlgorithm::HmacSha256Hex;
                let timestamp = Some(secs.saturating_mul(1000));
                Some(SignatureCheck {
                    algorithm,
                    signed,
                    provided,
                    timestamp,
                })
            }
        };
        let event: ApiEvent = serde_json::from_slice(&body)
            .map_err(|e| fail::invalid(format!("not an AcmeDesk webhook event: {e}")))?;
        let kind = match event.kind.as_str() {
            "ticket.created" => "created",
            "ticket.updated" => "updated",
            "ticket.replied" => "commented",
            "ticket.status_changed" => "status-changed",
            "ticket.assigned" => "assigned",
            "ticket.tagged" => "tagged",
            "ticket.deleted" => "deleted",
            // An event type AcmeDesk added later: nothing we know how to report.
            _ => {
                return Ok(Webhook {
                    signature,
                    events: Vec::new(),
                });
            }
        };
        let occurred_at = time(&event.created_at)?;
        let ticket_id = event.ticket.id.clone();
        let ticket = event.ticket.normalize().ok();
        let events = vec![TicketEvent {
            event_id: Some(event.id),
            ticket_id,
            kind: kind.to_string(),
            occurred_at,
            ticket,
        }];
        Ok(Webhook { signature, events })
    }
}

#[cfg(target_arch = "wasm32")]
deskgate_adapter_sdk::export_adapter!(AcmeDesk);

// ---- Requests -----------------------------------------------------------------------------------

/// The scope AcmeDesk requires for a capability.
fn scope(capability: Capability) -> &'static str {
    match capability {
        Capability::ReadTickets => "tickets:read",
        Capability::PublicReply => "replies:write",
        Capability::SetStatus | Capability::AddTags | Capability::Assign => "tickets:write",
    }
}

/// A ticket's path. Ids go into the path, so anything but a plain id is refused.
fn ticket_path(id: &str) -> Result<String, Failure> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    if id.is_empty() || id.len() > 64 || !id.bytes().all(plain) {
        return Err(fail::invalid(format!(
            "{id:?} is not an AcmeDesk ticket id"
        )));
    }
    Ok(format!("/api/tickets/{id}"))
}

/// The ticket list with a filter and, after the first page, the cursor.
fn list_path(filter: &str, cursor: Option<&str>) -> String {
    match cursor {
        Some(c) => format!("/api/tickets?{filter}&cursor={}", percent_encode(c)),
        None => format!("/api/tickets?{filter}"),
    }
}

/// Percent-encode everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A read-lane GET.
fn read(path: String) -> HttpRequest {
    RequestBuilder::new(Method::Get, path)
        .lane(Lane::Read)
        .draw(ACCOUNT)
        .build()
}

/// A public reply's POST, without the idempotency header.
fn reply_request(ticket: &str, body: &str) -> Result<RequestBuilder, Failure> {
    if body.trim().is_empty() {
        return Err(fail::invalid("a reply needs a body"));
    }
    Ok(
        RequestBuilder::new(Method::Post, format!("{}/replies", ticket_path(ticket)?))
            .lane(Lane::Write)
            .draw(ACCOUNT)
            .json(&json!({ "body": body, "public": true })),
    )
}

/// One PATCH that sets the status, adds tags and assigns, each when given.
fn patch_request(
    ticket: &str,
    status: Option<TicketStatus>,
    tags: &[String],
    assignee: Option<&Assignee>,
) -> Result<HttpRequest, Failure> {
    let mut body = Map::new();
    if let Some(status) = status {
        body.insert("status".into(), raw_status(status).into());
    }
    if !tags.is_empty() {
        body.insert("add_tags".into(), tags.into());
    }
    if let Some(to) = assignee {
        if to.agent_id.is_none() && to.group_id.is_none() {
            return Err(fail::invalid("assign needs an agent, a group or both"));
        }
        if let Some(agent) = &to.agent_id {
            body.insert("assignee_id".into(), agent.as_str().into());
        }
        if let Some(group) = &to.group_id {
            body.insert("group_id".into(), group.as_str().into());
        }
    }
    if body.is_empty() {
        return Err(fail::invalid(
            "nothing to change: add-tags needs at least one tag",
        ));
    }
    Ok(RequestBuilder::new(Method::Patch, ticket_path(ticket)?)
        .lane(Lane::Write)
        .draw(ACCOUNT)
        .json(&Value::Object(body))
        .build())
}

// ---- Responses ----------------------------------------------------------------------------------

/// A non-2xx answer as a failure. Only the case matters to the host's policy, so 401 and 403
/// must never be confused: 401 means "re-authenticate", 403 means "grant a permission".
fn classify(response: &HttpResponse) -> Failure {
    let body = json_body(&response.body);
    let error = &body["error"];
    let code = error["code"]
        .as_str()
        .or(error.as_str())
        .unwrap_or_default();
    let message = match error["message"].as_str().or(body["message"].as_str()) {
        Some(m) => m.to_string(),
        None => format!("AcmeDesk answered HTTP {}", response.status),
    };
    match response.status {
        401 => fail::unauthenticated(
            if code.is_empty() {
                "invalid_token"
            } else {
                code
            },
            &message,
        ),
        403 if code == "insufficient_role" => fail::forbidden(
            PermissionKind::Role,
            "agent role",
            "Ask an AcmeDesk admin to give the token's agent the Agent role (Settings > Team).",
            &message,
        ),
        403 => {
            let missing = error["required_scope"]
                .as_str()
                .unwrap_or("a scope AcmeDesk did not name");
            let remediation = format!(
                "In AcmeDesk, open Settings > API tokens, edit this token and tick {missing}; the \
                 token keeps working, no new login is needed."
            );
            fail::forbidden(PermissionKind::Scope, missing, &remediation, &message)
        }
        429 => {
            let r = Response::new(response);
            let wait = r.retry_after_ms().or(r
                .header_u64("x-ratelimit-reset")
                .map(|s| s.saturating_mul(1000)));
            fail::rate_limited(wait, Some(ACCOUNT), &message)
        }
        status => fail::by_status(status, message),
    }
}

/// The parts an action is made of, in the order they are applied.
fn parts(action: &Action) -> Vec<&'static str> {
    match action {
        Action::Reply(_) => vec!["reply"],
        Action::SetStatus(_) => vec!["set-status"],
        Action::AddTags(_) => vec!["add-tags"],
        Action::Assign(_) => vec!["assign"],
        Action::Resolve(r) => resolution_parts(r),
    }
}

fn resolution_parts(r: &Resolution) -> Vec<&'static str> {
    let mut parts = vec!["reply", "set-status"];
    if !r.tags.is_empty() {
        parts.push("add-tags");
    }
    if r.assignee.is_some() {
        parts.push("assign");
    }
    parts
}

fn written(ticket: Option<Ticket>, reference: Option<String>, applied: &[&str]) -> Outcome {
    let applied = applied.iter().map(|p| p.to_string()).collect();
    Outcome::Written(WriteReceipt {
        ticket,
        reference,
        applied,
        failed: None,
    })
}

/// The answer to a resolution's PATCH. Its reply has landed already, so a failure here is not
/// the operation's failure: the receipt says what landed and what did not, and the host raises
/// a divergence alert.
fn finish_resolution(
    r: &Resolution,
    reply_id: String,
    response: &HttpResponse,
) -> Result<Step, Failure> {
    let all = resolution_parts(r);
    if Response::new(response).is_success() {
        let ticket = serde_json::from_slice::<TicketEnvelope>(&response.body).ok();
        let ticket = ticket.and_then(|t| t.ticket.normalize().ok());
        return done(written(ticket, Some(reply_id), &all));
    }
    let skipped = all.iter().skip(2).map(|p| p.to_string()).collect();
    let failed = PartFailure {
        part: "set-status".to_string(),
        failure: classify(response),
        skipped,
    };
    done(Outcome::Written(WriteReceipt {
        ticket: None,
        reference: Some(reply_id),
        applied: vec!["reply".to_string()],
        failed: Some(failed),
    }))
}

/// Whether the token's scopes cover a capability.
fn probe(me: &Me, capability: Capability) -> CapabilityResult {
    let needed = scope(capability);
    let granted = me.scopes.iter().any(|s| s == needed);
    let failure = (!granted).then(|| {
        let remediation =
            format!("In AcmeDesk, open Settings > API tokens, edit this token and tick {needed}.");
        let message = format!("the token's scopes are {:?}", me.scopes);
        fail::forbidden(PermissionKind::Scope, needed, &remediation, &message)
    });
    CapabilityResult {
        capability,
        granted,
        failure,
    }
}

/// Which parts of an action are on the ticket already.
fn read_back(action: &Action, t: &Ticket) -> ReadBackResult {
    let replied = |body: &str| {
        t.comments
            .iter()
            .any(|c| c.public && text::same_text(&c.body, body))
    };
    let tagged = |tags: &[String]| tags.iter().all(|tag| t.tags.contains(tag));
    let assigned = |to: &Assignee| {
        to.agent_id
            .as_ref()
            .is_none_or(|a| t.assignee_id.as_ref() == Some(a))
            && to
                .group_id
                .as_ref()
                .is_none_or(|g| t.group_id.as_ref() == Some(g))
    };
    let landed = |part: &str| match (part, action) {
        ("reply", Action::Reply(body)) => replied(body),
        ("reply", Action::Resolve(r)) => replied(&r.reply),
        ("set-status", Action::SetStatus(s)) => t.status == *s,
        ("set-status", Action::Resolve(r)) => t.status == r.status,
        ("add-tags", Action::AddTags(tags)) => tagged(tags),
        ("add-tags", Action::Resolve(r)) => tagged(&r.tags),
        ("assign", Action::Assign(to)) => assigned(to),
        ("assign", Action::Resolve(r)) => r.assignee.as_ref().is_some_and(assigned),
        _ => false,
    };
    let all = parts(action);
    let parts_landed: Vec<String> = all
        .iter()
        .filter(|p| landed(p))
        .map(|p| p.to_string())
        .collect();
    let detail = format!(
        "ticket {}: on the ticket: {:?} of {:?}",
        t.id, parts_landed, all
    );
    ReadBackResult {
        landed: parts_landed.len() == all.len(),
        parts_landed,
        detail,
    }
}

// ---- AcmeDesk's JSON ----------------------------------------------------------------------------

#[derive(Deserialize)]
struct TicketEnvelope {
    ticket: ApiTicket,
}

#[derive(Deserialize)]
struct PageEnvelope {
    tickets: Vec<ApiTicket>,
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct ReplyEnvelope {
    reply: ApiReply,
}

#[derive(Deserialize)]
struct Me {
    id: String,
    name: Option<String>,
    email: Option<String>,
    role: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
}

#[derive(Deserialize)]
struct ApiEvent {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    created_at: String,
    ticket: ApiTicket,
}

#[derive(Deserialize)]
struct ApiTicket {
    id: String,
    subject: Option<String>,
    #[serde(default)]
    status: String,
    requester_id: Option<String>,
    assignee_id: Option<String>,
    group_id: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    created_at: String,
    #[serde(default)]
    updated_at: String,
    #[serde(default)]
    replies: Vec<ApiReply>,
}

#[derive(Deserialize)]
struct ApiReply {
    id: String,
    author_id: Option<String>,
    body: String,
    public: bool,
    created_at: String,
}

impl ApiTicket {
    fn normalize(self) -> Result<Ticket, Failure> {
        let status = match self.status.as_str() {
            "new" => TicketStatus::New,
            "open" => TicketStatus::Open,
            "pending" => TicketStatus::Pending,
            "on_hold" => TicketStatus::OnHold,
            "solved" => TicketStatus::Solved,
            "closed" => TicketStatus::Closed,
            other => {
                return Err(fail::permanent(format!(
                    "unknown AcmeDesk status {other:?}"
                )));
            }
        };
        let comments = self.replies.into_iter().map(|r| {
            let created_at = time(&r.created_at)?;
            let (id, author_id, body, public) = (r.id, r.author_id, r.body, r.public);
            Ok(Comment {
                id,
                author_id,
                body,
                public,
                created_at,
            })
        });
        Ok(Ticket {
            status,
            created_at: time(&self.created_at)?,
            updated_at: time(&self.updated_at)?,
            comments: comments.collect::<Result<_, Failure>>()?,
            id: self.id,
            subject: self.subject,
            raw_status: self.status,
            requester_id: self.requester_id,
            assignee_id: self.assignee_id,
            group_id: self.group_id,
            tags: self.tags,
        })
    }
}

fn raw_status(status: TicketStatus) -> &'static str {
    match status {
        TicketStatus::New => "new",
        TicketStatus::Open => "open",
        TicketStatus::Pending => "pending",
        TicketStatus::OnHold => "on_hold",
        TicketStatus::Solved => "solved",
        TicketStatus::Closed => "closed",
    }
}

/// An RFC 3339 time in milliseconds since the Unix epoch.
fn time(value: &str) -> Result<i64, Failure> {
    text::parse_rfc3339_ms(value)
        .ok_or_else(|| fail::permanent(format!("AcmeDesk sent an unreadable time {value:?}")))
}
