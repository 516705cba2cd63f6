//! Zendesk Support: `/api/v2/...` (the `.json` suffix is optional) and `POST /oauth/tokens`.
//!
//! Order of checks for every request, as Zendesk behaves: authenticate (401, or the anonymous
//! user on `/users/me`), rate limits (429), scope / role / plan (403) *before* the ticket is
//! looked up (so a 403 wins over a 404), then the operation.
//!
//! Shapes follow the recorded responses in `shared/specs/zendesk/cassettes` plus the newer fields
//! the docs list; bodies of errors follow platforms.md 1.4.

use std::collections::BTreeSet;

use base64::Engine as _;
use bytes::Bytes;
use hyper::Method;
use hyper::header::HeaderValue;
use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::control::{TicketSpec, norm_priority, norm_status};
use crate::model::*;
use crate::server::{Reply, Req};
use crate::util::{AuthHeader, Query, form_encode, parse_auth, parse_time, rfc3339, uuidish};
use crate::{SimInner, lock};

/// Every sim ticket carries this brand (the recordings always have one).
const BRAND_ID: u64 = 360_000_001;
/// The organization every sim agent belongs to (agents in the recordings have one).
const AGENT_ORG_ID: u64 = 360_000_101;
const STATUS_ORDER: [&str; 6] = ["new", "open", "pending", "hold", "solved", "closed"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TagOp {
    List,
    Add,
    Replace,
    Remove,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Me,
    ShowTicket(u64),
    UpdateTicket(u64),
    DeleteTicket(u64),
    ListTickets,
    CreateTicket,
    Comments(u64),
    Tags(u64, TagOp),
    Incremental,
    Search,
}

impl Op {
    fn is_read(self) -> bool {
        matches!(
            self,
            Op::Me
                | Op::ShowTicket(_)
                | Op::ListTickets
                | Op::Comments(_)
                | Op::Tags(_, TagOp::List)
                | Op::Incremental
                | Op::Search
        )
    }
}

fn route(method: &Method, path: &str) -> Option<Op> {
    let path = path.strip_suffix(".json").unwrap_or(path);
    let rest = path.strip_prefix("/api/v2/")?;
    let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let id = |s: &str| s.parse::<u64>().ok();
    Some(match (method, segs.as_slice()) {
        (&Method::GET, ["users", "me"]) => Op::Me,
        (&Method::GET, ["tickets"]) => Op::ListTickets,
        (&Method::POST, ["tickets"]) => Op::CreateTicket,
        (&Method::GET, ["tickets", t]) => Op::ShowTicket(id(t)?),
        (&Method::PUT, ["tickets", t]) => Op::UpdateTicket(id(t)?),
        (&Method::DELETE, ["tickets", t]) => Op::DeleteTicket(id(t)?),
        (&Method::GET, ["tickets", t, "comments"]) => Op::Comments(id(t)?),
        (&Method::GET, ["tickets", t, "tags"]) => Op::Tags(id(t)?, TagOp::List),
        (&Method::PUT, ["tickets", t, "tags"]) => Op::Tags(id(t)?, TagOp::Add),
        (&Method::POST, ["tickets", t, "tags"]) => Op::Tags(id(t)?, TagOp::Replace),
        (&Method::DELETE, ["tickets", t, "tags"]) => Op::Tags(id(t)?, TagOp::Remove),
        (&Method::GET, ["incremental", "tickets", "cursor"]) => Op::Incremental,
        (&Method::GET, ["search"]) => Op::Search,
        _ => return None,
    })
}

fn err(status: u16, error: &str, description: &str) -> Reply {
    Reply::json(status, &json!({"error": error, "description": description}))
}

fn not_found() -> Reply {
    err(404, "RecordNotFound", "Not found")
}

fn invalid(field: &str, description: &str) -> Reply {
    Reply::json(
        422,
        &json!({"error": "RecordInvalid", "description": "Record validation errors",
                "details": {field: [{"description": description}]}}),
    )
}

/// 401 for Basic-auth failures (bad token, email or header): platforms.md 1.4.
fn unauthorized_basic() -> Reply {
    Reply::json(401, &json!({"error": "Couldn't authenticate you"}))
        .header("www-authenticate", "Basic realm=\"Web Password\"")
}

/// 401 for a bad OAuth access token: platforms.md 1.4.
fn unauthorized_token() -> Reply {
    // WWW-Authenticate on OAuth failures: UNCONFIRMED; the Bearer form RFC 6750 prescribes.
    Reply::json(
        401,
        &json!({"error": "invalid_token",
                "error_description": "The access token provided is expired, revoked, malformed or invalid for other reasons."}),
    )
    .header("www-authenticate", "Bearer realm=\"Zendesk\", error=\"invalid_token\"")
}

fn forbidden_role() -> Reply {
    Reply::json(
        403,
        &json!({"error": {"title": "Forbidden",
                "message": "You do not have access to this page. Please contact the account owner of this help desk for further help."}}),
    )
}

fn forbidden_scope(scope: &str) -> Reply {
    err(
        403,
        "Forbidden",
        &format!("You are missing the following required scopes: {scope}"),
    )
}

/// The anonymous user `/users/me` returns for bad credentials. The exact body is UNCONFIRMED
/// (platforms.md 1.4 quirk); it mirrors the real user shape with `id: null`, role `end-user`.
fn anonymous_user() -> Value {
    json!({"user": {
        "id": null, "url": null, "name": "Anonymous user", "email": "invalid@example.com",
        "created_at": null, "updated_at": null, "time_zone": "UTC", "iana_time_zone": "Etc/UTC",
        "phone": null, "shared_phone_number": null, "photo": null, "locale_id": 1, "locale": "en-US",
        "organization_id": null, "role": "end-user", "verified": false, "external_id": null, "tags": [],
        "alias": null, "active": true, "shared": false, "shared_agent": false, "last_login_at": null,
        "two_factor_auth_enabled": null, "signature": null, "details": null, "notes": null, "role_type": null,
        "custom_role_id": null, "moderator": false, "ticket_restriction": "requested", "only_private_comments": false,
        "restricted_agent": true, "suspended": false, "default_group_id": null, "report_csv": false, "user_fields": {}
    }})
}

fn user_json(base: &str, a: &Agent) -> Value {
    let restricted = a.role == "restricted-agent";
    let role = if restricted { "agent" } else { a.role.as_str() };
    json!({
        "id": a.id, "url": format!("{base}/api/v2/users/{}.json", a.id), "name": a.name, "email": a.email,
        "created_at": rfc3339(a.created_at), "updated_at": rfc3339(a.created_at), "time_zone": "UTC",
        "iana_time_zone": "Etc/UTC", "phone": null, "shared_phone_number": null, "photo": null, "locale_id": 1,
        "locale": "en-US", "organization_id": AGENT_ORG_ID, "role": role, "verified": true, "external_id": null, "tags": [],
        "alias": "", "active": true, "shared": false, "shared_agent": false, "last_login_at": rfc3339(a.created_at),
        "two_factor_auth_enabled": null, "signature": "", "details": "", "notes": "",
        "role_type": if restricted { json!(0) } else { Value::Null },
        "custom_role_id": null, "moderator": role == "admin", "ticket_restriction": null,
        "only_private_comments": false, "restricted_agent": restricted, "suspended": false, "chat_only": false,
        "default_group_id": null, "report_csv": role == "admin", "user_fields": {}
    })
}

#[derive(Serialize)]
struct Source {
    from: Empty,
    to: Empty,
    rel: Option<()>,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct Via<'a> {
    channel: &'a str,
    source: Source,
}

#[derive(Serialize)]
struct Rating {
    score: &'static str,
}

/// The ticket object, serialized directly (the hottest response of the sim).
#[derive(Serialize)]
struct TicketView<'a> {
    url: String,
    id: u64,
    external_id: &'a Option<String>,
    via: Via<'a>,
    created_at: String,
    updated_at: String,
    generated_timestamp: i64,
    #[serde(rename = "type")]
    kind: &'a Option<String>,
    subject: &'a str,
    raw_subject: &'a str,
    description: &'a str,
    priority: &'a Option<String>,
    status: &'a str,
    recipient: Option<()>,
    requester_id: u64,
    submitter_id: u64,
    assignee_id: Option<u64>,
    organization_id: Option<u64>,
    group_id: Option<u64>,
    collaborator_ids: [u64; 0],
    follower_ids: [u64; 0],
    email_cc_ids: [u64; 0],
    forum_topic_id: Option<u64>,
    problem_id: Option<u64>,
    has_incidents: bool,
    is_public: bool,
    due_at: Option<()>,
    tags: &'a [String],
    custom_fields: [u64; 0],
    satisfaction_rating: Rating,
    sharing_agreement_ids: [u64; 0],
    custom_status_id: Option<u64>,
    fields: [u64; 0],
    followup_ids: [u64; 0],
    ticket_form_id: Option<u64>,
    brand_id: u64,
    allow_channelback: bool,
    allow_attachments: bool,
    from_messaging_channel: bool,
}

fn via(channel: &str) -> Via<'_> {
    Via {
        channel,
        source: Source {
            from: Empty {},
            to: Empty {},
            rel: None,
        },
    }
}

fn ticket_view<'a>(base: &str, t: &'a Ticket) -> TicketView<'a> {
    TicketView {
        url: format!("{base}/api/v2/tickets/{}.json", t.id),
        id: t.id,
        external_id: &t.external_id,
        via: via(t.channel),
        created_at: rfc3339(t.created_at),
        updated_at: rfc3339(t.updated_at),
        generated_timestamp: t.updated_at / 1000,
        kind: &t.kind,
        subject: &t.subject,
        raw_subject: &t.subject,
        description: &t.description,
        priority: &t.priority,
        status: if t.deleted {
            "deleted"
        } else {
            t.status.as_str()
        },
        recipient: None,
        requester_id: t.requester_id,
        submitter_id: t.submitter_id,
        assignee_id: t.assignee_id,
        organization_id: None,
        group_id: t.group_id,
        collaborator_ids: [],
        follower_ids: [],
        email_cc_ids: [],
        forum_topic_id: None,
        problem_id: None,
        has_incidents: false,
        is_public: t.comments.first().is_none_or(|c| c.public),
        due_at: None,
        tags: &t.tags,
        custom_fields: [],
        satisfaction_rating: Rating { score: "unoffered" },
        sharing_agreement_ids: [],
        custom_status_id: None,
        fields: [],
        followup_ids: [],
        ticket_form_id: None,
        brand_id: BRAND_ID,
        allow_channelback: false,
        allow_attachments: true,
        from_messaging_channel: false,
    }
}

/// The ticket object as `GET /api/v2/tickets/{id}` returns it.
pub(crate) fn ticket_json(base: &str, t: &Ticket) -> Value {
    serde_json::to_value(ticket_view(base, t)).unwrap_or(Value::Null)
}

fn comment_json(t: &Ticket, c: &Comment) -> Value {
    json!({
        "id": c.id, "type": "Comment", "author_id": c.author_id, "body": c.text,
        "html_body": format!("<div class=\"zd-comment\" dir=\"auto\">{}</div>", c.html), "plain_body": c.text,
        "public": c.public, "attachments": [], "audit_id": c.audit_id, "via": via(t.channel),
        "created_at": rfc3339(c.created_at), "metadata": {"system": {}, "custom": {}}
    })
}

fn comment_event(c: &Comment) -> Value {
    json!({
        "id": c.id, "type": "Comment", "author_id": c.author_id, "body": c.text,
        "html_body": format!("<div class=\"zd-comment\" dir=\"auto\">{}</div>", c.html), "plain_body": c.text,
        "public": c.public, "attachments": [], "audit_id": c.audit_id
    })
}

/// Base URL for links in responses: the Host the client used, so `next_page` works through
/// proxies and port mappings; the sim's own address otherwise.
fn link_base(sim: &SimInner, req: &Req) -> String {
    match req.header("host") {
        Some(h) if !h.is_empty() => format!("http://{h}"),
        _ => sim.base().to_owned(),
    }
}

/// Entry point.
pub(crate) fn handle(sim: &SimInner, req: &Req) -> Reply {
    let path = req.path.strip_suffix(".json").unwrap_or(&req.path);
    if path == "/oauth/tokens" {
        return if req.method == Method::POST {
            oauth_tokens(sim, req)
        } else {
            err(405, "MethodNotAllowed", "Use POST")
        };
    }
    let Some(op) = route(&req.method, &req.path) else {
        // Unknown endpoint body: UNCONFIRMED.
        return err(404, "InvalidEndpoint", "Not found");
    };

    // Authenticate.
    let auth = parse_auth(req.headers.get("authorization").map(|v| v.as_bytes()));
    let (secret, bearer, email) = match &auth {
        AuthHeader::Basic(user, pass) => match user.strip_suffix("/token") {
            Some(email) => (pass.as_str(), false, Some(email)),
            // email:password Basic auth is deprecated; the sim has no passwords.
            None => return auth_fail(op, false),
        },
        AuthHeader::Bearer(t) => (t.as_str(), true, None),
        AuthHeader::Missing | AuthHeader::Malformed => return auth_fail(op, false),
    };
    let Some((acct, cred_id)) = sim.by_secret(secret) else {
        return auth_fail(op, bearer);
    };
    let now = sim.clock.now_ms();
    let mut a = lock(&acct);
    let a = &mut *a;
    let full = &a.creds[cred_id as usize - 1];
    let cred = full.caller();
    let kind_ok = if bearer {
        cred.kind == CredKind::Oauth
    } else {
        cred.kind == CredKind::ApiToken
    };
    let dead = full.revoked || full.expires_at.is_some_and(|x| x <= now);
    let email_ok = email.is_none_or(|e| {
        a.agent(cred.agent_id)
            .is_some_and(|ag| ag.email.eq_ignore_ascii_case(e))
    });
    if !kind_ok || !email_ok || dead {
        let mut r = auth_fail(op, bearer);
        r.account = Some(a.id);
        r.cred = Some(cred.id);
        return r;
    }
    a.stats.requests += 1;
    let mut reply = authorized(sim, req, a, &cred, op, now);
    reply.account = Some(a.id);
    reply.cred = Some(cred.id);
    // Account rate headers on every response.
    let limit = a.limits.per_minute;
    a.rate.account.roll(now, 60_000);
    reply.set_num("x-rate-limit", limit as i64);
    reply.set_num(
        "x-rate-limit-remaining",
        a.rate.account.remaining(limit) as i64,
    );
    if matches!(
        op,
        Op::ListTickets | Op::Search | Op::Incremental | Op::Comments(_)
    ) {
        let reset = ((a.rate.account.reset_ms(60_000) - now + 999) / 1000).max(0);
        reply.set_num("ratelimit-limit", limit as i64);
        reply.set_num(
            "ratelimit-remaining",
            a.rate.account.remaining(limit) as i64,
        );
        reply.set_num("ratelimit-reset", reset);
    }
    reply
}

fn auth_fail(op: Op, bearer: bool) -> Reply {
    if op == Op::Me {
        let mut r = Reply::json(200, &anonymous_user());
        r.outcome = Outcome::Unauthorized;
        return r;
    }
    if bearer {
        unauthorized_token()
    } else {
        unauthorized_basic()
    }
}

fn retry_after(reset_ms: i64, now: i64) -> i64 {
    ((reset_ms - now + 999) / 1000).max(1)
}

/// Rate limits, then permissions, then the operation.
fn authorized(
    sim: &SimInner,
    req: &Req,
    a: &mut Account,
    cred: &Caller,
    op: Op,
    now: i64,
) -> Reply {
    let l = a.limits;
    // --- rate limits: check every bucket first, take from all only if all fit.
    a.rate.account.roll(now, 60_000);
    let mut blocked: Option<(Reply, &'static str, i64)> = None;
    if !a.rate.account.fits(l.per_minute, 1) {
        let r = Reply::raw(
            429,
            HeaderValue::from_static("text/plain; charset=utf-8"),
            Bytes::from_static(b"Number of allowed API requests per minute exceeded"),
        );
        blocked = Some((r, "account", a.rate.account.reset_ms(60_000)));
    }
    let per_ticket_window = l.single_ticket_window_secs as i64 * 1000;
    if blocked.is_none() {
        if let Op::UpdateTicket(tid) = op {
            if a.rate.per_ticket.len() > 10_000 {
                // Forget finished windows so a long benchmark does not grow the map without bound.
                a.rate
                    .per_ticket
                    .retain(|_, w| w.reset_ms(per_ticket_window) > now);
            }
            a.rate.update.roll(now, 60_000);
            let w = a.rate.per_ticket.entry((cred.agent_id, tid)).or_default();
            w.roll(now, per_ticket_window);
            if !a.rate.update.fits(l.ticket_update_per_minute, 1) {
                // Body for the Update Ticket account limit: UNCONFIRMED (the account-wide text is used).
                let r = Reply::raw(
                    429,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                    Bytes::from_static(
                        b"Number of allowed ticket update API requests per minute exceeded",
                    ),
                );
                blocked = Some((r, "update_ticket", a.rate.update.reset_ms(60_000)));
            } else if !w.fits(l.single_ticket_updates, 1) {
                // Wording UNCONFIRMED; modelled on the per-user message in platforms.md 1.3.
                let r = err(
                    429,
                    "TooManyRequests",
                    "You have exceeded the rate limit for updating a single unique ticket. Please wait before updating this ticket again.",
                );
                blocked = Some((r, "single_ticket_update", w.reset_ms(per_ticket_window)));
            }
        }
        if op == Op::Incremental {
            a.rate.incremental.roll(now, 60_000);
            if !a.rate.incremental.fits(l.incremental_export_per_minute, 1) {
                let r = err(
                    429,
                    "APIRateLimitExceeded",
                    "Number of allowed incremental export API requests per minute exceeded",
                );
                blocked = Some((r, "incremental_export", a.rate.incremental.reset_ms(60_000)));
            }
        }
    }
    if let Some((mut r, bucket, reset)) = blocked {
        a.stats.rate_limited += 1;
        *a.stats
            .rate_limited_by_bucket
            .entry(bucket.to_owned())
            .or_default() += 1;
        r.set_num("retry-after", retry_after(reset, now));
        return r;
    }
    a.rate.account.take(1);
    if let Op::UpdateTicket(tid) = op {
        a.rate.update.take(1);
        if let Some(w) = a.rate.per_ticket.get_mut(&(cred.agent_id, tid)) {
            w.take(1);
        }
    }
    if op == Op::Incremental {
        a.rate.incremental.take(1);
    }

    // --- body (needed to know whether a comment is public), then permissions.
    let body = match req.json() {
        Ok(v) => v,
        Err(e) => return err(400, "InvalidJSON", &e),
    };
    if op != Op::Me {
        // Scope (OAuth tokens only). `tickets` alone means read and write.
        if cred.kind == CredKind::Oauth {
            let (needed, broad) = if op.is_read() {
                ("tickets:read", "read")
            } else {
                ("tickets:write", "write")
            };
            let scopes = &a.cred(cred).scopes;
            let ok =
                scopes.contains(needed) || scopes.contains(broad) || scopes.contains("tickets");
            if !ok {
                return forbidden_scope(needed);
            }
        }
        // Role privileges of the user the credential acts as.
        let Some(agent) = a.agent(cred.agent_id) else {
            return forbidden_role();
        };
        let mut needed: Vec<&str> = vec![match op {
            Op::CreateTicket => "create_tickets",
            Op::DeleteTicket(_) => "delete_tickets",
            Op::UpdateTicket(_) | Op::Tags(_, TagOp::Add | TagOp::Replace | TagOp::Remove) => {
                "edit_tickets"
            }
            Op::Incremental => "incremental_export",
            _ => "view_tickets",
        }];
        if let Op::UpdateTicket(_) = op
            && let Some(c) = body.get("ticket").and_then(|t| t.get("comment"))
            && c.get("public").and_then(Value::as_bool).unwrap_or(true)
        {
            needed.push("public_comments");
        }
        if needed.iter().any(|p| !agent.privileges.contains(*p)) {
            return forbidden_role();
        }
        // Plan features: same body as a role refusal (platforms.md 1.4).
        if !a.features.contains("api")
            || (op == Op::Incremental && !a.features.contains("incremental_export"))
        {
            return forbidden_role();
        }
    }

    match op {
        Op::Me => match a.agent(cred.agent_id) {
            Some(agent) => Reply::json(200, &json!({"user": user_json(sim.base(), agent)})),
            None => Reply::json(200, &anonymous_user()),
        },
        Op::ShowTicket(id) => match a.ticket_idx(id) {
            Some(i) => {
                #[derive(Serialize)]
                struct Envelope<'a> {
                    ticket: TicketView<'a>,
                }
                Reply::json_ser(
                    200,
                    &Envelope {
                        ticket: ticket_view(sim.base(), &a.tickets[i]),
                    },
                )
            }
            None => not_found(),
        },
        Op::ListTickets => list_tickets(sim, req, a),
        Op::Comments(id) => comments(a, req, id),
        Op::Tags(id, tag_op) => tags(sim, a, cred, id, tag_op, &body, now),
        Op::UpdateTicket(id) => update(sim, a, cred, id, &body, now),
        Op::CreateTicket => create(sim, req, a, cred, &body, now),
        Op::DeleteTicket(id) => match a.ticket_idx(id) {
            Some(i) => {
                a.tickets[i].deleted = true;
                a.tickets[i].updated_at = now;
                let mut r = Reply::empty(204);
                r.outbound = sim.commit(
                    a,
                    i,
                    &[Change::Deleted],
                    Some(cred.id),
                    Some(cred.agent_id),
                    now,
                );
                r.applied = true;
                r
            }
            None => not_found(),
        },
        Op::Incremental => incremental(sim, req, a, now),
        Op::Search => search(sim, req, a),
    }
}

fn page_params(q: &Query, default: usize, max: usize) -> Result<(usize, usize), Reply> {
    let page = match q.get("page") {
        None => 1,
        Some(p) => match p.parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err(Reply::json(
                    400,
                    &json!({"error": {"title": "Invalid attribute",
                        "message": "You passed an invalid value for the page attribute. Invalid parameter: page must be an integer"}}),
                ));
            }
        },
    };
    let per_page = q
        .get("per_page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(default)
        .clamp(1, max);
    Ok((page, per_page))
}

fn page_url(base: &str, path: &str, q: &Query, page: usize) -> String {
    let mut parts: Vec<String> =
        q.0.iter()
            .filter(|(k, _)| k != "page")
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect();
    parts.push(format!("page={page}"));
    format!("{base}{path}?{}", parts.join("&"))
}

fn list_tickets(sim: &SimInner, req: &Req, a: &Account) -> Reply {
    let (page, per_page) = match page_params(&req.query, 100, 100) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let live: Vec<&Ticket> = a.tickets.iter().filter(|t| !t.deleted).collect();
    let start = (page - 1) * per_page;
    let items: Vec<Value> = live
        .iter()
        .skip(start)
        .take(per_page)
        .map(|t| ticket_json(sim.base(), t))
        .collect();
    let base = link_base(sim, req);
    let next = (start + per_page < live.len())
        .then(|| page_url(&base, "/api/v2/tickets.json", &req.query, page + 1));
    let prev = (page > 1).then(|| page_url(&base, "/api/v2/tickets.json", &req.query, page - 1));
    Reply::json(
        200,
        &json!({"tickets": items, "next_page": next, "previous_page": prev, "count": live.len()}),
    )
}

fn comments(a: &Account, req: &Req, id: u64) -> Reply {
    let Some(i) = a.ticket_idx(id) else {
        return not_found();
    };
    let t = &a.tickets[i];
    let (page, per_page) = match page_params(&req.query, 100, 100) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut all: Vec<&Comment> = t.comments.iter().collect();
    if req.query.get("sort_order") == Some("desc") {
        all.reverse();
    }
    let start = (page - 1) * per_page;
    let items: Vec<Value> = all
        .iter()
        .skip(start)
        .take(per_page)
        .map(|c| comment_json(t, c))
        .collect();
    let path = format!("/api/v2/tickets/{id}/comments.json");
    let base = req
        .header("host")
        .map(|h| format!("http://{h}"))
        .unwrap_or_default();
    let next = (start + per_page < all.len()).then(|| page_url(&base, &path, &req.query, page + 1));
    let prev = (page > 1).then(|| page_url(&base, &path, &req.query, page - 1));
    Reply::json(
        200,
        &json!({"comments": items, "next_page": next, "previous_page": prev, "count": all.len()}),
    )
}

fn string_list(v: Option<&Value>) -> Option<Vec<String>> {
    match v? {
        Value::Array(a) => Some(
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect(),
        ),
        // Zendesk also accepts a space- or comma-separated string.
        Value::String(s) => Some(
            s.split([' ', ','])
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
        _ => None,
    }
}

fn apply_tags(t: &mut Ticket, new: Vec<String>) -> Option<Change> {
    let mut dedup: Vec<String> = Vec::new();
    for x in new {
        let x = x.to_lowercase();
        if !dedup.contains(&x) {
            dedup.push(x);
        }
    }
    let added: Vec<String> = dedup
        .iter()
        .filter(|x| !t.tags.contains(x))
        .cloned()
        .collect();
    let removed: Vec<String> = t
        .tags
        .iter()
        .filter(|x| !dedup.contains(x))
        .cloned()
        .collect();
    t.tags = dedup;
    (!added.is_empty() || !removed.is_empty()).then_some(Change::Tags { added, removed })
}

fn tags(
    sim: &SimInner,
    a: &mut Account,
    cred: &Caller,
    id: u64,
    op: TagOp,
    body: &Value,
    now: i64,
) -> Reply {
    let Some(i) = a.ticket_idx(id) else {
        return not_found();
    };
    if op == TagOp::List {
        return Reply::json(200, &json!({"tags": a.tickets[i].tags}));
    }
    if a.tickets[i].status == "closed" {
        return invalid("status", "Status closed prevents ticket update");
    }
    let Some(list) = string_list(body.get("tags")) else {
        return err(400, "InvalidValue", "Send {\"tags\": [\"tag\", ...]}");
    };
    let t = &mut a.tickets[i];
    let new = match op {
        TagOp::Add => t.tags.iter().cloned().chain(list).collect(),
        TagOp::Replace => list,
        _ => {
            let rm: Vec<String> = list.iter().map(|x| x.to_lowercase()).collect();
            t.tags.iter().filter(|x| !rm.contains(x)).cloned().collect()
        }
    };
    let change = apply_tags(t, new);
    let mut r;
    if let Some(c) = change {
        t.updated_at = now;
        r = Reply::json(200, &json!({"tags": a.tickets[i].tags}));
        r.outbound = sim.commit(a, i, &[c], Some(cred.id), Some(cred.agent_id), now);
    } else {
        r = Reply::json(200, &json!({"tags": t.tags}));
    }
    r.applied = true;
    r
}

fn opt_id(v: &Value) -> Result<Option<u64>, ()> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n.as_u64().map(Some).ok_or(()),
        Value::String(s) => s.parse().map(Some).map_err(|_| ()),
        _ => Err(()),
    }
}

fn update(
    sim: &SimInner,
    a: &mut Account,
    cred: &Caller,
    id: u64,
    body: &Value,
    now: i64,
) -> Reply {
    let Some(i) = a.ticket_idx(id) else {
        return not_found();
    };
    let Some(tb) = body.get("ticket").and_then(Value::as_object) else {
        return err(400, "InvalidValue", "Send {\"ticket\": {...}}");
    };
    if a.tickets[i].status == "closed" {
        return invalid("status", "Status closed prevents ticket update");
    }
    if tb.get("safe_update").and_then(Value::as_bool) == Some(true) {
        let stamp = tb
            .get("updated_stamp")
            .and_then(Value::as_str)
            .and_then(parse_time);
        if stamp.map(|s| s / 1000) != Some(a.tickets[i].updated_at / 1000) {
            // Description text UNCONFIRMED (platforms.md 1.4).
            return err(
                409,
                "UpdateConflict",
                "Safe Update prevented the update due to outdated ticket data. Please fetch the latest ticket data and try again.",
            );
        }
    }
    // Validate everything before changing anything. Setting `closed` directly is accepted
    // (whether the real API allows it is UNCONFIRMED, platforms.md 1.5).
    let status = match tb.get("status") {
        Some(v) if !v.is_null() => match norm_status(sim.platform, v) {
            Ok(s) => Some(s),
            Err(_) => return invalid("status", &format!("Status: {v} is not valid")),
        },
        _ => None,
    };
    let priority = match tb.get("priority") {
        Some(v) => match norm_priority(sim.platform, v) {
            Ok(p) => Some(p),
            Err(_) => return invalid("priority", &format!("Priority: {v} is not valid")),
        },
        None => None,
    };
    let assignee = match tb.get("assignee_id").map(opt_id) {
        Some(Ok(Some(x))) if a.agent(x).is_none_or(|ag| ag.role == "end-user") => {
            return invalid("assignee", "Assignee is not an agent");
        }
        Some(Ok(x)) => Some(x),
        Some(Err(())) => return invalid("assignee", "Assignee: is invalid"),
        None => None,
    };
    let group = match tb.get("group_id").map(opt_id) {
        Some(Ok(Some(g))) if a.group(g).is_none() => return invalid("group", "Group: is invalid"),
        Some(Ok(x)) => Some(x),
        Some(Err(())) => return invalid("group", "Group: is invalid"),
        None => None,
    };
    let comment = match tb.get("comment") {
        Some(Value::Object(c)) => {
            let (text, html) = match (
                c.get("html_body").and_then(Value::as_str),
                c.get("body").or(c.get("value")).and_then(Value::as_str),
            ) {
                (Some(h), _) => (h.to_owned(), true),
                (None, Some(b)) => (b.to_owned(), false),
                _ => return invalid("comment", "Comment: body can't be blank"),
            };
            if text.trim().is_empty() {
                return invalid("comment", "Comment: body can't be blank");
            }
            let public = c.get("public").and_then(Value::as_bool).unwrap_or(true);
            // `author_id` on a comment: UNCONFIRMED; honoured when it names a person of the account.
            let author = c
                .get("author_id")
                .and_then(Value::as_u64)
                .filter(|x| a.agent(*x).is_some() || a.contact(*x).is_some());
            Some((text, html, public, author.unwrap_or(cred.agent_id)))
        }
        Some(Value::Null) | None => None,
        Some(_) => return invalid("comment", "Comment: is invalid"),
    };

    let audit_id = sim.next_id();
    let mut changes = Vec::new();
    let mut events = Vec::new();
    if let Some((text, html, public, author)) = comment {
        let by_agent = a.agent(author).is_some();
        let mut c = sim.new_comment(author, by_agent, &text, html, public, "comment", now);
        c.audit_id = audit_id;
        events.push(comment_event(&c));
        let t = &mut a.tickets[i];
        t.comments.push(c);
        changes.push(Change::Comment(t.comments.len() - 1));
    }
    let t = &mut a.tickets[i];
    let change_event = |field: &str, value: Value, previous: Value| json!({"id": sim.next_id(), "type": "Change", "field_name": field, "value": value, "previous_value": previous});
    if let Some(subject) = tb.get("subject").and_then(Value::as_str)
        && subject != t.subject
    {
        events.push(change_event("subject", json!(subject), json!(t.subject)));
        t.subject = subject.to_owned();
        changes.push(Change::Subject);
    }
    if let Some(kind) = tb.get("type") {
        t.kind = kind.as_str().map(str::to_owned);
    }
    if let Some(p) = priority
        && p != t.priority
    {
        events.push(change_event("priority", json!(p), json!(t.priority)));
        changes.push(Change::Priority {
            from: std::mem::replace(&mut t.priority, p.clone()),
            to: p,
        });
    }
    if let Some(g) = group
        && g != t.group_id
    {
        events.push(change_event(
            "group_id",
            json!(g.map(|x| x.to_string())),
            json!(t.group_id.map(|x| x.to_string())),
        ));
        changes.push(Change::Group {
            from: std::mem::replace(&mut t.group_id, g),
            to: g,
        });
    }
    let mut new_status = status;
    if let Some(x) = assignee
        && x != t.assignee_id
    {
        events.push(change_event(
            "assignee_id",
            json!(x.map(|v| v.to_string())),
            json!(t.assignee_id.map(|v| v.to_string())),
        ));
        changes.push(Change::Assignee {
            from: std::mem::replace(&mut t.assignee_id, x),
            to: x,
        });
        // Assigning a New ticket opens it.
        if x.is_some() && t.status == "new" && new_status.is_none() {
            new_status = Some("open".to_owned());
        }
    }
    if let Some(s) = new_status
        && s != t.status
    {
        events.push(change_event("status", json!(s), json!(t.status)));
        changes.push(Change::Status {
            from: std::mem::replace(&mut t.status, s.clone()),
            to: s,
        });
    }
    let tag_list = match string_list(tb.get("tags")) {
        Some(list) => Some(list),
        None => {
            let add = string_list(tb.get("additional_tags"));
            let remove = string_list(tb.get("remove_tags"));
            if add.is_some() || remove.is_some() {
                let rm: Vec<String> = remove
                    .unwrap_or_default()
                    .iter()
                    .map(|x| x.to_lowercase())
                    .collect();
                Some(
                    t.tags
                        .iter()
                        .cloned()
                        .chain(add.unwrap_or_default())
                        .filter(|x| !rm.contains(&x.to_lowercase()))
                        .collect(),
                )
            } else {
                None
            }
        }
    };
    if let Some(list) = tag_list {
        let before = t.tags.clone();
        if let Some(c) = apply_tags(t, list) {
            events.push(change_event("tags", json!(t.tags), json!(before)));
            changes.push(c);
        }
    }
    if !changes.is_empty() {
        t.updated_at = now;
    }
    let audit = json!({
        "id": audit_id, "ticket_id": id, "created_at": rfc3339(now), "author_id": cred.agent_id, "via": via("api"),
        "metadata": {"system": {"client": "deskgate-sim", "ip_address": "127.0.0.1"}, "custom": {}}, "events": events
    });
    let mut r = Reply::json(
        200,
        &json!({"ticket": ticket_json(sim.base(), &a.tickets[i]), "audit": audit}),
    );
    r.outbound = sim.commit(a, i, &changes, Some(cred.id), Some(cred.agent_id), now);
    r.applied = true;
    r
}

fn canonical_fingerprint(body: &Value) -> [u8; 32] {
    // serde_json maps are sorted, so re-serializing canonicalizes key order and whitespace.
    Sha256::digest(serde_json::to_vec(body).unwrap_or_default()).into()
}

fn create(
    sim: &SimInner,
    req: &Req,
    a: &mut Account,
    cred: &Caller,
    body: &Value,
    now: i64,
) -> Reply {
    let key = req.header("idempotency-key").map(str::to_owned);
    let fingerprint = canonical_fingerprint(body);
    // A second request with the same key while the first is in flight (UNCONFIRMED behaviour)
    // cannot happen here: both run under the account lock, so the second sees a stored `hit`.
    if let Some(k) = &key {
        if k.len() > 255 {
            return err(
                400,
                "IdempotentRequestError",
                "Idempotency-Key must be at most 255 characters",
            );
        }
        a.idempotency.retain(|_, e| e.expires_at > now);
        if let Some(e) = a.idempotency.get(k) {
            if e.fingerprint != fingerprint {
                // Description wording UNCONFIRMED (platforms.md 1.7).
                return err(
                    400,
                    "IdempotentRequestError",
                    "Request parameters don't match the given idempotency key",
                );
            }
            let mut r = Reply::raw(
                e.status,
                HeaderValue::from_static("application/json; charset=utf-8"),
                e.body.clone(),
            );
            if let Some(l) = &e.location {
                r.set_header("location", l);
            }
            r.set_header("x-idempotency-lookup", "hit");
            return r;
        }
    }
    let Some(tb) = body.get("ticket").and_then(Value::as_object) else {
        return err(400, "InvalidValue", "Send {\"ticket\": {...}}");
    };
    let comment = tb.get("comment").and_then(Value::as_object);
    let text = comment
        .and_then(|c| c.get("html_body").or(c.get("body")).or(c.get("value")))
        .and_then(Value::as_str);
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return invalid("description", "Description: cannot be blank");
    };
    let html = comment.is_some_and(|c| c.get("html_body").is_some());
    let public = comment
        .and_then(|c| c.get("public"))
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let requester_email = tb
        .get("requester")
        .and_then(|r| r.get("email"))
        .and_then(Value::as_str);
    let requester_name = tb
        .get("requester")
        .and_then(|r| r.get("name"))
        .and_then(Value::as_str);
    let requester_id = match (
        tb.get("requester_id").and_then(Value::as_u64),
        requester_email,
    ) {
        (Some(x), _) => Some(x),
        (None, Some(e)) => Some(sim.contact_for_email(a, e, requester_name, now)),
        (None, None) => None,
    };
    let assignee_id = tb.get("assignee_id").and_then(Value::as_u64);
    if assignee_id.is_some_and(|x| a.agent(x).is_none()) {
        return invalid("assignee", "Assignee is not an agent");
    }
    let spec = TicketSpec {
        subject: tb
            .get("subject")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| Some(text.chars().take(60).collect())),
        body: Some(text.to_owned()),
        requester_id: requester_id.or(Some(cred.agent_id)),
        status: tb.get("status").cloned().filter(|v| !v.is_null()),
        priority: tb.get("priority").cloned().filter(|v| !v.is_null()),
        kind: tb.get("type").and_then(Value::as_str).map(str::to_owned),
        tags: string_list(tb.get("tags")).unwrap_or_default(),
        assignee_id,
        group_id: tb.get("group_id").and_then(Value::as_u64),
        external_id: tb
            .get("external_id")
            .and_then(Value::as_str)
            .map(str::to_owned),
        ..Default::default()
    };
    let i = match sim.new_ticket(a, &spec, now, Some(cred.agent_id), "api") {
        Ok(i) => i,
        Err(e) => {
            let field = e
                .split_whitespace()
                .next()
                .unwrap_or("ticket")
                .trim_end_matches("_id")
                .to_owned();
            return invalid(&field, &e);
        }
    };
    let audit_id = sim.next_id();
    let t = &mut a.tickets[i];
    let tags: Vec<String> = t.tags.iter().map(|x| x.to_lowercase()).collect();
    t.tags = tags;
    if let Some(c) = t.comments.first_mut() {
        let (plain, htmlf) = crate::control::body_forms(text, html);
        c.text = plain.clone();
        c.html = htmlf;
        c.public = public;
        c.audit_id = audit_id;
        t.description = plain;
    }
    let t = &a.tickets[i];
    let mut events: Vec<Value> = t.comments.first().map(comment_event).into_iter().collect();
    for (field, value) in [
        ("subject", json!(t.subject)),
        ("requester_id", json!(t.requester_id)),
        ("tags", json!(t.tags)),
        ("type", json!(t.kind)),
        ("priority", json!(t.priority)),
        ("status", json!(t.status)),
        ("brand_id", json!(BRAND_ID)),
    ] {
        events.push(
            json!({"id": sim.next_id(), "type": "Create", "value": value, "field_name": field}),
        );
    }
    let audit = json!({
        "id": audit_id, "ticket_id": t.id, "created_at": rfc3339(now), "author_id": cred.agent_id, "via": via("api"),
        "metadata": {"system": {"client": "deskgate-sim", "ip_address": "127.0.0.1"}, "custom": {}}, "events": events
    });
    let body = Bytes::from(
        serde_json::to_vec(&json!({"ticket": ticket_json(sim.base(), t), "audit": audit}))
            .unwrap_or_default(),
    );
    let location = format!("{}/api/v2/tickets/{}.json", sim.base(), t.id);
    let mut r = Reply::raw(
        201,
        HeaderValue::from_static("application/json; charset=utf-8"),
        body.clone(),
    );
    r.set_header("location", &location);
    if let Some(k) = key {
        r.set_header("x-idempotency-lookup", "miss");
        a.idempotency.insert(
            k,
            IdemEntry {
                fingerprint,
                status: 201,
                body,
                location: Some(location),
                expires_at: now + 2 * 3_600_000,
            },
        );
    }
    r.outbound = sim.commit(
        a,
        i,
        &[Change::Created],
        Some(cred.id),
        Some(cred.agent_id),
        now,
    );
    r.applied = true;
    r
}

fn encode_cursor(ts_secs: i64, id: u64) -> String {
    // Same layout as the real cursors ("1580753798.0||432|" in base64).
    base64::engine::general_purpose::STANDARD.encode(format!("{ts_secs}.0||{id}|"))
}

fn decode_cursor(c: &str) -> Option<(i64, u64)> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(c.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (ts, rest) = s.split_once("||")?;
    let ts: f64 = ts.parse().ok()?;
    let id: u64 = rest.trim_end_matches('|').parse().ok()?;
    Some((ts as i64, id))
}

fn incremental(sim: &SimInner, req: &Req, a: &Account, now: i64) -> Reply {
    let per_page = req
        .query
        .get("per_page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1000)
        .clamp(1, 1000);
    let after: (i64, u64) = if let Some(c) = req.query.get("cursor") {
        match decode_cursor(c) {
            Some((ts, id)) => (ts, id),
            None => return err(400, "InvalidPaginationParameter", "cursor is invalid"),
        }
    } else if let Some(st) = req.query.get("start_time") {
        match st.parse::<i64>() {
            // start_time is inclusive: start just before it.
            Ok(ts) if ts >= 0 && ts * 1000 <= now => (ts, 0),
            Ok(_) => {
                return err(
                    400,
                    "InvalidValue",
                    "start_time must be a past unix time in seconds",
                );
            }
            Err(_) => {
                return err(
                    400,
                    "InvalidValue",
                    "start_time must be a unix time in seconds",
                );
            }
        }
    } else {
        return err(
            400,
            "InvalidPaginationParameter",
            "start_time or cursor is required",
        );
    };
    // Items changed within the last minute are excluded.
    let horizon = now / 1000 - 60;
    let mut items: Vec<&Ticket> = a
        .tickets
        .iter()
        .filter(|t| {
            let ts = t.updated_at / 1000;
            ts < horizon && ((ts, t.id) > after || (after.1 == 0 && ts >= after.0))
        })
        .collect();
    items.sort_by_key(|t| (t.updated_at / 1000, t.id));
    let end = items.len() <= per_page;
    items.truncate(per_page);
    let base = link_base(sim, req);
    let path = "/api/v2/incremental/tickets/cursor.json";
    let (after_cursor, before_cursor) = match (items.first(), items.last()) {
        (Some(f), Some(l)) => (
            encode_cursor(l.updated_at / 1000, l.id),
            Some(encode_cursor(f.updated_at / 1000, f.id)),
        ),
        _ => (encode_cursor(after.0.max(0), after.1), None),
    };
    let tickets: Vec<Value> = items.iter().map(|t| ticket_json(sim.base(), t)).collect();
    Reply::json(
        200,
        &json!({
            "tickets": tickets,
            "after_url": format!("{base}{path}?cursor={}", form_encode(&after_cursor)),
            "after_cursor": after_cursor,
            "before_url": before_cursor.as_ref().map(|c| format!("{base}{path}?cursor={}", form_encode(c))),
            "before_cursor": before_cursor,
            "end_of_stream": end,
        }),
    )
}

#[derive(Debug)]
enum Cond {
    Type(String),
    Status(char, usize),
    Updated(char, i64),
    Created(char, i64),
    Tag(String),
    Text(String),
}

fn parse_query(q: &str) -> Result<Vec<Cond>, String> {
    let mut out = Vec::new();
    for tok in q.split_whitespace() {
        let pos = tok.find([':', '<', '>']);
        let Some(pos) = pos else {
            out.push(Cond::Text(tok.trim_matches('"').to_lowercase()));
            continue;
        };
        let (key, rest) = tok.split_at(pos);
        let (op, value) = if let Some(v) = rest.strip_prefix("<=") {
            ('l', v)
        } else if let Some(v) = rest.strip_prefix(">=") {
            ('g', v)
        } else {
            (rest.chars().next().unwrap_or(':'), &rest[1..])
        };
        let value = value.trim_matches('"');
        let time = |v: &str| -> Result<i64, String> {
            v.parse::<i64>()
                .map(|s| s * 1000)
                .ok()
                .or_else(|| parse_time(v))
                .ok_or_else(|| format!("cannot read date {v:?}"))
        };
        match key.to_ascii_lowercase().as_str() {
            "type" => out.push(Cond::Type(value.to_lowercase())),
            "status" => {
                let rank = STATUS_ORDER
                    .iter()
                    .position(|s| *s == value.to_lowercase())
                    .ok_or_else(|| format!("unknown status {value:?}"))?;
                out.push(Cond::Status(op, rank));
            }
            "updated" | "updated_at" => out.push(Cond::Updated(op, time(value)?)),
            "created" | "created_at" => out.push(Cond::Created(op, time(value)?)),
            "tags" | "tag" => out.push(Cond::Tag(value.to_lowercase())),
            _ => out.push(Cond::Text(tok.to_lowercase())),
        }
    }
    Ok(out)
}

fn cmp_ok<T: PartialOrd>(op: char, lhs: T, rhs: T) -> bool {
    match op {
        '<' => lhs < rhs,
        '>' => lhs > rhs,
        'l' => lhs <= rhs,
        'g' => lhs >= rhs,
        _ => lhs == rhs,
    }
}

fn matches(t: &Ticket, conds: &[Cond]) -> bool {
    conds.iter().all(|c| match c {
        Cond::Type(ty) => ty == "ticket",
        Cond::Status(op, rank) => {
            let r = STATUS_ORDER
                .iter()
                .position(|s| *s == t.status)
                .unwrap_or(0);
            cmp_ok(*op, r, *rank)
        }
        // Dates compare at day precision when given as a date: "updated>2024-01-01" is after that day.
        Cond::Updated(op, ms) => cmp_ok(*op, t.updated_at, *ms),
        Cond::Created(op, ms) => cmp_ok(*op, t.created_at, *ms),
        Cond::Tag(tag) => t.tags.iter().any(|x| x == tag),
        Cond::Text(w) => {
            t.subject.to_lowercase().contains(w.as_str())
                || t.description.to_lowercase().contains(w.as_str())
        }
    })
}

fn search(sim: &SimInner, req: &Req, a: &Account) -> Reply {
    let Some(q) = req.query.get("query") else {
        return err(400, "InvalidValue", "query is required");
    };
    let conds = match parse_query(q) {
        Ok(c) => c,
        Err(e) => return err(400, "InvalidValue", &e),
    };
    let (page, per_page) = match page_params(&req.query, 100, 100) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut hits: Vec<&Ticket> = a
        .tickets
        .iter()
        .filter(|t| !t.deleted && matches(t, &conds))
        .collect();
    match req.query.get("sort_by") {
        Some("updated_at") => hits.sort_by_key(|t| (t.updated_at, t.id)),
        Some("created_at") => hits.sort_by_key(|t| (t.created_at, t.id)),
        _ => {}
    }
    if req.query.get("sort_order") == Some("desc") {
        hits.reverse();
    }
    // "The Search API returns up to 1,000 results per query."
    let start = (page - 1) * per_page;
    if start + per_page > 1000 && start >= 1000 {
        return Reply::json(
            422,
            &json!({"error": "invalid", "description": "Search results are limited to 1,000 per query; narrow the query or use the export endpoint"}),
        );
    }
    let reachable = hits.len().min(1000);
    let results: Vec<Value> = hits
        .iter()
        .skip(start)
        .take(per_page.min(reachable.saturating_sub(start)))
        .map(|t| {
            let mut v = ticket_json(sim.base(), t);
            v["result_type"] = json!("ticket");
            v
        })
        .collect();
    let base = link_base(sim, req);
    let next = (start + per_page < reachable)
        .then(|| page_url(&base, "/api/v2/search.json", &req.query, page + 1));
    let prev = (page > 1).then(|| page_url(&base, "/api/v2/search.json", &req.query, page - 1));
    Reply::json(
        200,
        &json!({"results": results, "facets": null, "next_page": next, "previous_page": prev, "count": hits.len()}),
    )
}

// ------------------------------------------------------------------------------------------
// OAuth token endpoint

fn oauth_err(status: u16, error: &str, description: &str) -> Reply {
    Reply::json(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

fn params(req: &Req) -> Map<String, Value> {
    let trimmed = req
        .body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map(|i| req.body[i]);
    if trimmed == Some(b'{')
        && let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(&req.body)
    {
        return m;
    }
    let q = Query::parse(std::str::from_utf8(&req.body).unwrap_or(""));
    let mut m: Map<String, Value> =
        q.0.into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
    // Query-string parameters are accepted too.
    for (k, v) in &req.query.0 {
        m.entry(k.clone())
            .or_insert_with(|| Value::String(v.clone()));
    }
    m
}

fn param_u64(m: &Map<String, Value>, k: &str) -> Option<u64> {
    m.get(k).and_then(|v| {
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    })
}

fn oauth_tokens(sim: &SimInner, req: &Req) -> Reply {
    // invalid_grant / invalid_client descriptions: UNCONFIRMED (platforms.md 1.1); these are the
    // standard texts of Doorkeeper, the OAuth library Zendesk's other OAuth errors match.
    const INVALID_GRANT: &str = "The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client.";
    const INVALID_CLIENT: &str = "Client authentication failed due to unknown client, no client authentication included, or unsupported authentication method.";
    let mut p = params(req);
    // Client credentials may also come as HTTP Basic.
    if let AuthHeader::Basic(id, secret) =
        parse_auth(req.headers.get("authorization").map(|v| v.as_bytes()))
    {
        p.entry("client_id").or_insert(Value::String(id));
        p.entry("client_secret").or_insert(Value::String(secret));
    }
    let s = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_owned);
    let grant = s("grant_type").unwrap_or_default();
    if grant != "refresh_token" && grant != "authorization_code" {
        return oauth_err(
            400,
            "unsupported_grant_type",
            "The authorization grant type is not supported by the authorization server.",
        );
    }
    let (Some(client_id), Some(client_secret)) = (s("client_id"), s("client_secret")) else {
        return oauth_err(401, "invalid_client", INVALID_CLIENT);
    };
    let Some(acct_id) = sim
        .index
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clients
        .get(&client_id)
        .copied()
    else {
        return oauth_err(401, "invalid_client", INVALID_CLIENT);
    };
    let Some(acct) = sim.account(acct_id) else {
        return oauth_err(401, "invalid_client", INVALID_CLIENT);
    };
    let now = sim.clock.now_ms();
    // Requested lifetimes are clamped to the documented bounds (5 min..48 h, 7..90 days).
    let expires_in = param_u64(&p, "expires_in").map(|x| x.clamp(300, 172_800));
    let refresh_expires_in =
        param_u64(&p, "refresh_token_expires_in").map(|x| x.clamp(7 * 86_400, 90 * 86_400));
    let lookup = |map: &str, key: &str| {
        let idx = sim.index.read().unwrap_or_else(|p| p.into_inner());
        match map {
            "refresh" => idx.refresh.get(key).copied(),
            _ => idx.codes.get(key).map(|a| (*a, 0)),
        }
    };
    let found = if grant == "refresh_token" {
        s("refresh_token").and_then(|t| lookup("refresh", &t))
    } else {
        s("code").and_then(|c| lookup("codes", &c))
    };
    let mut a = lock(&acct);
    let a = &mut *a;
    let Some(ci) = a.clients.iter().position(|c| c.identifier == client_id) else {
        return oauth_err(401, "invalid_client", INVALID_CLIENT);
    };
    if a.clients[ci].secret != client_secret {
        return oauth_err(401, "invalid_client", INVALID_CLIENT);
    }
    let Some((found_acct, cred_id)) = found else {
        return oauth_err(400, "invalid_grant", INVALID_GRANT);
    };
    if found_acct != a.id {
        return oauth_err(400, "invalid_grant", INVALID_GRANT);
    }
    let (agent_id, scopes) = if grant == "refresh_token" {
        let c = &mut a.creds[cred_id as usize - 1];
        let alive = c.client.as_deref() == Some(client_id.as_str())
            && c.refresh
                .as_ref()
                .is_some_and(|r| !r.dead && r.expires_at.is_none_or(|x| x > now));
        if !alive {
            return oauth_err(400, "invalid_grant", INVALID_GRANT);
        }
        // Rotation: the old access and refresh tokens are deleted.
        c.revoked = true;
        c.revoked_reason = Some("refreshed");
        if let Some(r) = &mut c.refresh {
            r.dead = true;
        }
        (c.agent_id, c.scopes.clone())
    } else {
        let code = s("code").unwrap_or_default();
        let Some(k) = a.codes.iter_mut().find(|k| k.code == code) else {
            return oauth_err(400, "invalid_grant", INVALID_GRANT);
        };
        if k.used || k.expires_at <= now || k.client != client_id {
            return oauth_err(400, "invalid_grant", INVALID_GRANT);
        }
        k.used = true;
        (k.agent_id, k.scopes.clone())
    };
    let scopes = match s("scope") {
        Some(req_scopes) => {
            let asked: BTreeSet<String> =
                req_scopes.split_whitespace().map(str::to_owned).collect();
            if !asked.is_subset(&scopes) {
                return oauth_err(
                    400,
                    "invalid_scope",
                    "The requested scope is invalid, unknown, or malformed.",
                );
            }
            asked
        }
        None => scopes,
    };
    let new_id = sim.issue_token(a, ci, agent_id, scopes, expires_in, refresh_expires_in, now);
    let c = &a.creds[new_id as usize - 1];
    // Field names inferred from the parameter names (platforms.md 1.1: UNCONFIRMED verbatim).
    let mut out = json!({
        "access_token": c.secret,
        "token_type": "bearer",
        "scope": c.scopes.iter().cloned().collect::<Vec<_>>().join(" "),
    });
    if let Some(x) = c.expires_at {
        out["expires_in"] = json!((x - now) / 1000);
    }
    if let Some(r) = &c.refresh {
        out["refresh_token"] = json!(r.token);
        out["refresh_token_expires_in"] = json!(r.expires_at.map(|x| (x - now) / 1000));
    }
    let mut r = Reply::json(200, &out);
    r.account = Some(a.id);
    r.cred = Some(new_id);
    r.set_header("cache-control", "no-store");
    r
}

// ------------------------------------------------------------------------------------------
// Webhooks: event-subscription payloads (`zen:event-type:ticket.*`).

fn status_title(s: &str) -> String {
    // platforms.md 1.6 shows "Open" (recorded example); the official page's casing is UNCONFIRMED.
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

pub(crate) fn webhook_payloads(
    sim: &SimInner,
    a: &Account,
    idx: usize,
    changes: &[Change],
    actor: Option<u64>,
    now: i64,
) -> Vec<(String, Value)> {
    let t = &a.tickets[idx];
    let sid = |x: Option<u64>| x.map(|v| v.to_string());
    let detail = json!({
        "actor_id": actor.map(|x| x.to_string()).unwrap_or_else(|| "-1".into()),
        "assignee_id": sid(t.assignee_id), "brand_id": BRAND_ID.to_string(), "created_at": rfc3339(t.created_at),
        "custom_status": null, "description": t.description, "external_id": t.external_id, "form_id": null,
        "group_id": sid(t.group_id), "id": t.id.to_string(), "is_public": true, "organization_id": null,
        "priority": t.priority.as_deref().map(status_title), "requester_id": t.requester_id.to_string(),
        "status": status_title(&t.status), "subject": t.subject, "submitter_id": t.submitter_id.to_string(),
        "tags": t.tags, "type": t.kind.as_deref().map(status_title), "updated_at": rfc3339(t.updated_at),
        "via": {"channel": t.channel}
    });
    let mut out: Vec<(String, Value)> = Vec::new();
    for c in changes {
        let (kind, event) = match c {
            Change::Created => ("ticket.created", json!({})),
            Change::Comment(i) => {
                let cm = &t.comments[*i];
                (
                    "ticket.comment_added",
                    json!({"comment": {"id": cm.id.to_string(), "body": cm.text, "is_public": cm.public,
                        "author": {"id": cm.author_id.to_string(), "is_staff": cm.by_agent,
                                   "name": a.person_name(cm.author_id)}}}),
                )
            }
            Change::Status { from, to } => (
                "ticket.status_changed",
                json!({"current": status_title(to), "previous": status_title(from)}),
            ),
            Change::Priority { from, to } => (
                "ticket.priority_changed",
                json!({"current": to.as_deref().map(status_title), "previous": from.as_deref().map(status_title)}),
            ),
            Change::Assignee { from, to } => (
                "ticket.agent_assignment_changed",
                json!({"current": sid(*to), "previous": sid(*from)}),
            ),
            Change::Group { from, to } => (
                "ticket.group_assignment_changed",
                json!({"current": sid(*to), "previous": sid(*from)}),
            ),
            Change::Tags { added, removed } => (
                "ticket.tags_changed",
                json!({"tags_added": added, "tags_removed": removed}),
            ),
            Change::Subject => ("ticket.subject_changed", json!({"current": t.subject})),
            Change::Deleted => (
                "ticket.soft_deleted",
                json!({"current": true, "previous": false}),
            ),
        };
        out.push((format!("zen:event-type:{kind}"), event));
    }
    let total = out.len();
    let seq_id = uuidish(sim.next_id());
    out.into_iter()
        .enumerate()
        .map(|(pos, (ty, mut event))| {
            event["meta"] =
                json!({"sequence": {"id": seq_id, "position": pos + 1, "total": total}});
            let body = json!({
                "type": ty, "account_id": a.id, "id": uuidish(sim.next_id()), "time": rfc3339(now),
                "zendesk_event_version": "2022-11-06", "subject": format!("zen:ticket:{}", t.id),
                "detail": detail, "event": event
            });
            (ty, body)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_with_and_without_json_suffix() {
        assert_eq!(
            route(&Method::GET, "/api/v2/tickets/5.json"),
            Some(Op::ShowTicket(5))
        );
        assert_eq!(
            route(&Method::GET, "/api/v2/tickets/5"),
            Some(Op::ShowTicket(5))
        );
        assert_eq!(
            route(&Method::PUT, "/api/v2/tickets/5/tags.json"),
            Some(Op::Tags(5, TagOp::Add))
        );
        assert_eq!(
            route(&Method::GET, "/api/v2/incremental/tickets/cursor.json"),
            Some(Op::Incremental)
        );
        assert_eq!(route(&Method::GET, "/api/v2/tickets/x"), None);
    }

    #[test]
    fn cursor_round_trip() {
        assert_eq!(
            decode_cursor(&encode_cursor(1_580_753_798, 432)),
            Some((1_580_753_798, 432))
        );
        assert_eq!(
            decode_cursor("MTU4MDc1Mzc5OC4wfHw0MzJ8"),
            Some((1_580_753_798, 432))
        );
    }

    #[test]
    fn query_grammar() {
        let c = parse_query("type:ticket status<solved tags:vip updated>2024-01-01").unwrap();
        assert_eq!(c.len(), 4);
        assert!(parse_query("status:bogus").is_err());
    }
}
