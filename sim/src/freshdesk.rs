//! Freshdesk API v2: `/api/v2/tickets...`, `/api/v2/search/tickets`, `/api/v2/agents/me`.
//!
//! Freshdesk answers validation problems with 400 (not 422) and the
//! `{"description":"Validation failed","errors":[{field,message,code}]}` envelope; auth errors
//! carry a top-level `code` (platforms.md 2.4). Checks run: authenticate (401), rate limits
//! (429, with the endpoint caps for ticket create / update / list), plan feature and agent
//! privilege (403) before the ticket lookup, then the operation.

use hyper::Method;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::control::{TicketSpec, norm_priority, norm_status};
use crate::model::*;
use crate::server::{Reply, Req};
use crate::util::{AuthHeader, form_encode, parse_auth, parse_time, rfc3339};
use crate::{SimInner, lock};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Me,
    Show(u64),
    Update(u64),
    Delete(u64),
    List,
    Create,
    Reply(u64),
    Note(u64),
    Conversations(u64),
    Search,
}

fn route(method: &Method, path: &str) -> Option<Op> {
    let rest = path.strip_prefix("/api/v2/")?;
    let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let id = |s: &str| s.parse::<u64>().ok();
    Some(match (method, segs.as_slice()) {
        (&Method::GET, ["agents", "me"]) => Op::Me,
        (&Method::GET, ["tickets"]) => Op::List,
        (&Method::POST, ["tickets"]) => Op::Create,
        (&Method::GET, ["tickets", t]) => Op::Show(id(t)?),
        (&Method::PUT, ["tickets", t]) => Op::Update(id(t)?),
        (&Method::DELETE, ["tickets", t]) => Op::Delete(id(t)?),
        (&Method::POST, ["tickets", t, "reply"]) => Op::Reply(id(t)?),
        (&Method::POST, ["tickets", t, "notes"]) => Op::Note(id(t)?),
        (&Method::GET, ["tickets", t, "conversations"]) => Op::Conversations(id(t)?),
        (&Method::GET, ["search", "tickets"]) => Op::Search,
        _ => return None,
    })
}

fn validation(errors: Vec<(&str, &str, &str)>) -> Reply {
    let errs: Vec<Value> = errors
        .into_iter()
        .map(|(f, m, c)| json!({"field": f, "message": m, "code": c}))
        .collect();
    Reply::json(
        400,
        &json!({"description": "Validation failed", "errors": errs}),
    )
}

fn invalid_field(field: &str) -> Reply {
    validation(vec![(
        field,
        "Unexpected/invalid field in request",
        "invalid_field",
    )])
}

fn unauthorized() -> Reply {
    Reply::json(
        401,
        &json!({"code": "invalid_credentials", "message": "You have to be logged in to perform this action."}),
    )
}

fn access_denied() -> Reply {
    // Message wording UNCONFIRMED (platforms.md 2.4); the code is documented.
    Reply::json(
        403,
        &json!({"code": "access_denied", "message": "You are not authorized to perform this action."}),
    )
}

fn require_feature() -> Reply {
    // Message UNCONFIRMED (platforms.md 2.4 names only the code `require_feature`).
    Reply::json(
        403,
        &json!({"code": "require_feature",
                "message": "The API feature(s) is/are not supported in your plan. Please upgrade your account to use it."}),
    )
}

fn not_found() -> Reply {
    // 404 body UNCONFIRMED (platforms.md 2.4: "may be empty"); the sim sends an empty body.
    Reply::empty(404)
}

fn status_name(s: &str) -> &'static str {
    match s {
        "2" => "Open",
        "3" => "Pending",
        "4" => "Resolved",
        "5" => "Closed",
        "6" => "Waiting on Customer",
        "7" => "Waiting on Third Party",
        _ => "Open",
    }
}

fn priority_name(p: Option<&str>) -> &'static str {
    match p {
        Some("2") => "Medium",
        Some("3") => "High",
        Some("4") => "Urgent",
        _ => "Low",
    }
}

/// The ticket object, serialized directly (no `Value` tree on the hot path).
#[derive(Serialize)]
pub(crate) struct TicketView<'a> {
    cc_emails: [u8; 0],
    fwd_emails: [u8; 0],
    reply_cc_emails: [u8; 0],
    ticket_cc_emails: [u8; 0],
    fr_escalated: bool,
    spam: bool,
    email_config_id: Option<u64>,
    group_id: Option<u64>,
    priority: Option<i64>,
    requester_id: u64,
    responder_id: Option<u64>,
    source: i64,
    company_id: Option<u64>,
    status: Option<i64>,
    subject: &'a str,
    association_type: Option<u64>,
    support_email: Option<()>,
    to_emails: Option<()>,
    product_id: Option<u64>,
    id: u64,
    #[serde(rename = "type")]
    kind: &'a Option<String>,
    due_by: String,
    fr_due_by: String,
    is_escalated: bool,
    description: &'a str,
    description_text: &'a str,
    custom_fields: Empty,
    created_at: String,
    updated_at: String,
    associated_tickets_count: Option<u64>,
    tags: &'a [String],
    attachments: [u8; 0],
    nr_due_by: Option<()>,
    nr_escalated: bool,
}

#[derive(Serialize)]
struct Empty {}

pub(crate) fn ticket_view(t: &Ticket) -> TicketView<'_> {
    let num = |s: Option<&String>| s.and_then(|x| x.parse::<i64>().ok());
    TicketView {
        cc_emails: [],
        fwd_emails: [],
        reply_cc_emails: [],
        ticket_cc_emails: [],
        fr_escalated: false,
        spam: false,
        email_config_id: None,
        group_id: t.group_id,
        priority: num(t.priority.as_ref()),
        requester_id: t.requester_id,
        responder_id: t.assignee_id,
        source: t.source,
        company_id: None,
        status: num(Some(&t.status)),
        subject: &t.subject,
        association_type: None,
        support_email: None,
        to_emails: None,
        product_id: None,
        id: t.id,
        kind: &t.kind,
        due_by: rfc3339(t.created_at + 3 * 86_400_000),
        fr_due_by: rfc3339(t.created_at + 86_400_000),
        is_escalated: false,
        description: &t.description_html,
        description_text: &t.description,
        custom_fields: Empty {},
        created_at: rfc3339(t.created_at),
        updated_at: rfc3339(t.updated_at),
        associated_tickets_count: None,
        tags: &t.tags,
        attachments: [],
        nr_due_by: None,
        nr_escalated: false,
    }
}

/// The ticket object as `GET /api/v2/tickets/{id}` returns it.
pub(crate) fn ticket_json(t: &Ticket) -> Value {
    serde_json::to_value(ticket_view(t)).unwrap_or(Value::Null)
}

fn conversation_json(t: &Ticket, c: &Comment) -> Value {
    // Conversation `source` numbers: 0 reply, 2 note (UNCONFIRMED mapping).
    json!({
        "body": c.html, "body_text": c.text, "id": c.id, "incoming": !c.by_agent, "private": !c.public,
        "user_id": c.author_id, "support_email": null, "source": if c.public { 0 } else { 2 }, "category": 3,
        "to_emails": [], "from_email": null, "cc_emails": [], "bcc_emails": [], "email_failure_count": null,
        "outgoing_failures": null, "thread_id": null, "thread_message_id": null,
        "created_at": rfc3339(c.created_at), "updated_at": rfc3339(c.created_at), "last_edited_at": null,
        "last_edited_user_id": null, "attachments": [], "automation_id": null, "automation_type_id": null,
        "auto_response": false, "ticket_id": t.id, "source_additional_info": null
    })
}

/// `GET /api/v2/agents/me` (the endpoint itself is UNCONFIRMED in platforms.md 2.5; the shape
/// follows Freshdesk's agent object).
fn agent_json(a: &Agent) -> Value {
    json!({
        "available": true, "occasional": false, "id": a.id, "ticket_scope": 1, "signature": null,
        "group_ids": [], "role_ids": [], "skill_ids": [], "available_since": null, "type": "support_agent",
        "created_at": rfc3339(a.created_at), "updated_at": rfc3339(a.created_at), "last_active_at": null,
        "deactivated": false, "focus_mode": true,
        "contact": {"active": true, "email": a.email, "job_title": null, "language": "en", "last_login_at": null,
                    "mobile": null, "name": a.name, "phone": null, "time_zone": "Eastern Time (US & Canada)",
                    "created_at": rfc3339(a.created_at), "updated_at": rfc3339(a.created_at)}
    })
}

/// Entry point.
pub(crate) fn handle(sim: &SimInner, req: &Req) -> Reply {
    let Some(op) = route(&req.method, &req.path) else {
        // Unknown endpoint: UNCONFIRMED body.
        return Reply::json(
            404,
            &json!({"code": "not_found", "message": "The requested endpoint does not exist"}),
        );
    };
    let key = match parse_auth(req.headers.get("authorization").map(|v| v.as_bytes())) {
        AuthHeader::Basic(user, _) => user,
        _ => return unauthorized(),
    };
    let Some((acct, cred_id)) = sim.by_secret(&key) else {
        return unauthorized();
    };
    let now = sim.clock.now_ms();
    let mut guard = lock(&acct);
    let a = &mut *guard;
    let full = &a.creds[cred_id as usize - 1];
    let cred = full.caller();
    if cred.kind != CredKind::ApiKey || full.revoked {
        let mut r = unauthorized();
        r.account = Some(a.id);
        r.cred = Some(cred.id);
        return r;
    }
    a.stats.requests += 1;
    // Embeds cost extra credits: +1 each (UNCONFIRMED; sources say +1 or +2).
    let includes: Vec<String> = req
        .query
        .get("include")
        .map(|s| {
            s.split(',')
                .map(|x| x.trim().to_owned())
                .filter(|x| !x.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let cost = 1 + includes.len() as u32;
    let l = a.limits;
    // A plan without the API refuses before any counting (Free has 0 calls per minute).
    let no_api = op != Op::Me && !a.features.contains("api");
    a.rate.account.roll(now, 60_000);
    let cap = match op {
        Op::Create => Some((
            &mut a.rate.create,
            l.ticket_create_per_minute,
            "ticket_create",
        )),
        Op::Update(_) => Some((
            &mut a.rate.update,
            l.ticket_update_per_minute,
            "ticket_update",
        )),
        Op::List | Op::Search => {
            Some((&mut a.rate.list, l.tickets_list_per_minute, "tickets_list"))
        }
        _ => None,
    };
    let mut blocked: Option<(&'static str, i64)> = None;
    if !a.rate.account.fits(l.per_minute, cost) {
        blocked = Some(("account", a.rate.account.reset_ms(60_000)));
    }
    if let Some((w, limit, name)) = cap.filter(|_| !no_api) {
        w.roll(now, 60_000);
        if blocked.is_none() && !w.fits(limit, cost) {
            blocked = Some((name, w.reset_ms(60_000)));
        } else if blocked.is_none() {
            w.take(cost);
        }
    }
    let mut reply = if no_api {
        require_feature()
    } else if let Some((bucket, reset)) = blocked {
        a.stats.rate_limited += 1;
        *a.stats
            .rate_limited_by_bucket
            .entry(bucket.to_owned())
            .or_default() += 1;
        // 429 body is a guess (platforms.md 2.3: UNCONFIRMED).
        let mut r = Reply::json(
            429,
            &json!({"code": "rate_limit_exceeded", "message": "You have exceeded the limit of requests per minute"}),
        );
        r.set_num("retry-after", ((reset - now + 999) / 1000).max(1));
        r
    } else {
        a.rate.account.take(cost);
        authorized(sim, req, a, &cred, op, &includes, now)
    };
    reply.account = Some(a.id);
    reply.cred = Some(cred.id);
    reply.set_num("x-ratelimit-total", l.per_minute as i64);
    reply.set_num(
        "x-ratelimit-remaining",
        a.rate.account.remaining(l.per_minute) as i64,
    );
    reply.set_num("x-ratelimit-used-currentrequest", cost as i64);
    reply
}

fn authorized(
    sim: &SimInner,
    req: &Req,
    a: &mut Account,
    cred: &Caller,
    op: Op,
    includes: &[String],
    now: i64,
) -> Reply {
    if op != Op::Me {
        let needed = match op {
            Op::Create => "create_ticket",
            Op::Update(_) => "edit_ticket_properties",
            Op::Delete(_) => "delete_ticket",
            Op::Reply(_) | Op::Note(_) => "reply_ticket",
            _ => "view_tickets",
        };
        if a.agent(cred.agent_id)
            .is_none_or(|ag| !ag.privileges.contains(needed))
        {
            return access_denied();
        }
    }
    let body = match req.json() {
        Ok(v) => v,
        Err(e) => return Reply::json(400, &json!({"code": "invalid_json", "message": e})),
    };
    match op {
        Op::Me => match a.agent(cred.agent_id) {
            Some(ag) => Reply::json(200, &agent_json(ag)),
            None => access_denied(),
        },
        Op::Show(id) => match a.ticket_idx(id) {
            Some(i) if includes.is_empty() => Reply::json_ser(200, &ticket_view(&a.tickets[i])),
            Some(i) => {
                let t = &a.tickets[i];
                let mut v = ticket_json(t);
                for inc in includes {
                    match inc.as_str() {
                        "conversations" => {
                            v["conversations"] = Value::Array(
                                t.comments
                                    .iter()
                                    .take(10)
                                    .map(|c| conversation_json(t, c))
                                    .collect(),
                            );
                        }
                        "requester" => {
                            v["requester"] = json!({"id": t.requester_id, "name": a.person_name(t.requester_id),
                                "email": a.person_email(t.requester_id), "mobile": null, "phone": null});
                        }
                        "stats" => {
                            v["stats"] = json!({"agent_responded_at": null, "requester_responded_at": null,
                                "first_responded_at": null, "status_updated_at": rfc3339(t.updated_at),
                                "reopened_at": null, "resolved_at": null, "closed_at": null, "pending_since": null});
                        }
                        "company" => v["company"] = Value::Null,
                        other => {
                            return validation(vec![(
                                "include",
                                &format!(
                                    "It should be one/more of these values: 'conversations,requester,company,stats' (got {other})"
                                ),
                                "invalid_value",
                            )]);
                        }
                    }
                }
                Reply::json(200, &v)
            }
            None => not_found(),
        },
        Op::List => list(sim, req, a, now),
        Op::Search => search(sim, req, a),
        Op::Conversations(id) => conversations(sim, req, a, id),
        Op::Reply(id) | Op::Note(id) => {
            reply(sim, a, cred, id, &body, matches!(op, Op::Note(_)), now)
        }
        Op::Update(id) => update(sim, a, cred, id, &body, now),
        Op::Create => create(sim, a, cred, &body, now),
        Op::Delete(id) => match a.ticket_idx(id) {
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
    }
}

fn link_base(sim: &SimInner, req: &Req) -> String {
    match req.header("host") {
        Some(h) if !h.is_empty() => format!("http://{h}"),
        _ => sim.base().to_owned(),
    }
}

fn next_link(base: &str, path: &str, req: &Req, page: usize) -> String {
    let mut parts: Vec<String> = req
        .query
        .0
        .iter()
        .filter(|(k, _)| k != "page")
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect();
    parts.push(format!("page={page}"));
    format!("<{base}{path}?{}>; rel=\"next\"", parts.join("&"))
}

/// `page` and `per_page` with Freshdesk's validation.
fn paging(
    req: &Req,
    default_per_page: usize,
    max_per_page: usize,
    max_page: usize,
) -> Result<(usize, usize), Reply> {
    let page = match req.query.get("page") {
        None => 1,
        Some(p) => match p.parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err(validation(vec![(
                    "page",
                    "It should be a Positive Number",
                    "invalid_value",
                )]));
            }
        },
    };
    if page > max_page {
        let msg = if max_page == 300 {
            "You cannot access tickets beyond the 300th page. Please provide a smaller page number."
                .to_owned()
        } else {
            // Search page cap message UNCONFIRMED.
            format!("It should be a Positive Number less than or equal to {max_page}")
        };
        return Err(validation(vec![("page", &msg, "invalid_value")]));
    }
    let per_page = match req.query.get("per_page") {
        None => default_per_page,
        Some(p) => match p.parse::<usize>() {
            Ok(n) if (1..=max_per_page).contains(&n) => n,
            _ => {
                return Err(validation(vec![(
                    "per_page",
                    &format!("It should be a Positive Number less than or equal to {max_per_page}"),
                    "invalid_value",
                )]));
            }
        },
    };
    Ok((page, per_page))
}

fn list(sim: &SimInner, req: &Req, a: &Account, now: i64) -> Reply {
    const KNOWN: [&str; 10] = [
        "updated_since",
        "order_by",
        "order_type",
        "per_page",
        "page",
        "filter",
        "include",
        "requester_id",
        "email",
        "company_id",
    ];
    if let Some((k, _)) = req
        .query
        .0
        .iter()
        .find(|(k, _)| !KNOWN.contains(&k.as_str()))
    {
        return invalid_field(k);
    }
    let (page, per_page) = match paging(req, 30, 100, 300) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let since = match req.query.get("updated_since") {
        Some(s) => match parse_time(s) {
            Some(t) => Some(t),
            None => {
                return validation(vec![(
                    "updated_since",
                    "It should be in the 'valid date time' format",
                    "invalid_value",
                )]);
            }
        },
        None => None,
    };
    let order_by = req.query.get("order_by").unwrap_or("created_at");
    if !["created_at", "updated_at", "due_by", "status"].contains(&order_by) {
        return validation(vec![(
            "order_by",
            "It should be one of these values: 'created_at,due_by,updated_at,status'",
            "invalid_value",
        )]);
    }
    let asc = match req.query.get("order_type").unwrap_or("desc") {
        "asc" => true,
        "desc" => false,
        _ => {
            return validation(vec![(
                "order_type",
                "It should be one of these values: 'asc,desc'",
                "invalid_value",
            )]);
        }
    };
    let filter = req.query.get("filter");
    if filter.is_some_and(|f| !["new_and_my_open", "watching", "spam", "deleted"].contains(&f)) {
        return validation(vec![(
            "filter",
            "It should be one of these values: 'new_and_my_open,watching,spam,deleted'",
            "invalid_value",
        )]);
    }
    let requester = req
        .query
        .get("requester_id")
        .and_then(|s| s.parse::<u64>().ok());
    let mut items: Vec<&Ticket> = a
        .tickets
        .iter()
        .filter(|t| {
            if filter == Some("deleted") {
                t.deleted
            } else {
                !t.deleted
            }
        })
        .filter(|_| filter != Some("spam"))
        .filter(|t| {
            filter != Some("new_and_my_open")
                || (t.status == "2"
                    && t.assignee_id
                        .is_none_or(|x| Some(x) == a.agent(x).map(|g| g.id)))
        })
        .filter(|t| requester.is_none_or(|r| t.requester_id == r))
        .filter(|t| match since {
            Some(s) => t.updated_at >= s,
            // Without updated_since only tickets created in the last 30 days are listed.
            None => t.created_at >= now - 30 * 86_400_000,
        })
        .collect();
    items.sort_by_key(|t| {
        let k = match order_by {
            "updated_at" => t.updated_at,
            "due_by" => t.created_at + 3 * 86_400_000,
            "status" => t.status.parse().unwrap_or(0),
            _ => t.created_at,
        };
        (k, t.id)
    });
    if !asc {
        items.reverse();
    }
    let start = (page - 1) * per_page;
    let out: Vec<TicketView> = items
        .iter()
        .skip(start)
        .take(per_page)
        .map(|t| ticket_view(t))
        .collect();
    let mut r = Reply::json_ser(200, &out);
    if start + per_page < items.len() && page < 300 {
        r.set_header(
            "link",
            next_link(&link_base(sim, req), "/api/v2/tickets", req, page + 1),
        );
    }
    r
}

fn conversations(sim: &SimInner, req: &Req, a: &Account, id: u64) -> Reply {
    let Some(i) = a.ticket_idx(id) else {
        return not_found();
    };
    let (page, per_page) = match paging(req, 30, 100, usize::MAX) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let t = &a.tickets[i];
    let start = (page - 1) * per_page;
    let out: Vec<Value> = t
        .comments
        .iter()
        .skip(start)
        .take(per_page)
        .map(|c| conversation_json(t, c))
        .collect();
    let mut r = Reply::json(200, &Value::Array(out));
    if start + per_page < t.comments.len() {
        r.set_header(
            "link",
            next_link(
                &link_base(sim, req),
                &format!("/api/v2/tickets/{id}/conversations"),
                req,
                page + 1,
            ),
        );
    }
    r
}

fn reply(
    sim: &SimInner,
    a: &mut Account,
    cred: &Caller,
    id: u64,
    body: &Value,
    note: bool,
    now: i64,
) -> Reply {
    let Some(obj) = body.as_object() else {
        return validation(vec![("body", "It should be a/an String", "missing_field")]);
    };
    let allowed: &[&str] = if note {
        &[
            "body",
            "private",
            "user_id",
            "notify_emails",
            "incoming",
            "attachments",
        ]
    } else {
        &[
            "body",
            "user_id",
            "from_email",
            "cc_emails",
            "bcc_emails",
            "attachments",
        ]
    };
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return invalid_field(k);
    }
    let Some(text) = obj
        .get("body")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
    else {
        return validation(vec![("body", "It should be a/an String", "missing_field")]);
    };
    let author = obj
        .get("user_id")
        .and_then(Value::as_u64)
        .unwrap_or(cred.agent_id);
    if a.agent(author).is_none() && a.contact(author).is_none() {
        return validation(vec![(
            "user_id",
            "There is no contact or agent matching the given user_id",
            "invalid_value",
        )]);
    }
    let Some(i) = a.ticket_idx(id) else {
        return not_found();
    };
    let public = if note {
        !obj.get("private").and_then(Value::as_bool).unwrap_or(true)
    } else {
        true
    };
    let by_agent = a.agent(author).is_some()
        && !obj
            .get("incoming")
            .and_then(Value::as_bool)
            .unwrap_or(false);
    // Freshdesk bodies are HTML.
    let c = sim.new_comment(
        author,
        by_agent,
        text,
        true,
        public,
        if note { "note" } else { "comment" },
        now,
    );
    let t = &mut a.tickets[i];
    t.comments.push(c);
    t.updated_at = now;
    let ci = t.comments.len() - 1;
    // 201 for a reply: UNCONFIRMED (platforms.md 2.5).
    let mut r = Reply::json(201, &conversation_json(t, &t.comments[ci]));
    r.outbound = sim.commit(
        a,
        i,
        &[Change::Comment(ci)],
        Some(cred.id),
        Some(cred.agent_id),
        now,
    );
    r.applied = true;
    r
}

fn tags_of(v: &Value) -> Result<Vec<String>, Reply> {
    match v.as_array() {
        Some(arr) if arr.iter().all(Value::is_string) => {
            let mut out: Vec<String> = Vec::new();
            for t in arr.iter().filter_map(Value::as_str) {
                if !out.iter().any(|x| x.eq_ignore_ascii_case(t)) {
                    out.push(t.to_owned());
                }
            }
            Ok(out)
        }
        _ => Err(validation(vec![(
            "tags",
            "It should be a/an Array",
            "datatype_mismatch",
        )])),
    }
}

/// `(responder_id, group_id)`: outer `None` = not sent, `Some(None)` = cleared.
type Assignment = (Option<Option<u64>>, Option<Option<u64>>);

fn check_people(a: &Account, obj: &Map<String, Value>) -> Result<Assignment, Reply> {
    let responder = match obj.get("responder_id") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(v) => match v.as_u64() {
            Some(x) if a.agent(x).is_some() => Some(Some(x)),
            _ => {
                return Err(validation(vec![(
                    "responder_id",
                    "There is no agent matching the given responder_id",
                    "invalid_value",
                )]));
            }
        },
    };
    let group = match obj.get("group_id") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(v) => match v.as_u64() {
            Some(x) if a.group(x).is_some() => Some(Some(x)),
            _ => {
                return Err(validation(vec![(
                    "group_id",
                    "There is no group matching the given group_id",
                    "invalid_value",
                )]));
            }
        },
    };
    Ok((responder, group))
}

fn update(
    sim: &SimInner,
    a: &mut Account,
    cred: &Caller,
    id: u64,
    body: &Value,
    now: i64,
) -> Reply {
    const ALLOWED: [&str; 12] = [
        "status",
        "priority",
        "tags",
        "responder_id",
        "group_id",
        "subject",
        "type",
        "description",
        "source",
        "due_by",
        "fr_due_by",
        "custom_fields",
    ];
    let Some(obj) = body.as_object() else {
        return validation(vec![(
            "ticket",
            "It should be a/an Object",
            "datatype_mismatch",
        )]);
    };
    if let Some(k) = obj.keys().find(|k| !ALLOWED.contains(&k.as_str())) {
        return invalid_field(k);
    }
    let status = match obj.get("status") {
        Some(v) => match norm_status(sim.platform, v) {
            Ok(s) => Some(s),
            Err(_) => {
                return validation(vec![(
                    "status",
                    "It should be one of these values: '2,3,4,5,6,7'",
                    "invalid_value",
                )]);
            }
        },
        None => None,
    };
    let priority = match obj.get("priority") {
        Some(v) => match norm_priority(sim.platform, v) {
            Ok(p) => Some(p),
            Err(_) => {
                return validation(vec![(
                    "priority",
                    "It should be one of these values: '1,2,3,4'",
                    "invalid_value",
                )]);
            }
        },
        None => None,
    };
    let tags = match obj.get("tags") {
        Some(v) => match tags_of(v) {
            Ok(t) => Some(t),
            Err(r) => return r,
        },
        None => None,
    };
    let (responder, group) = match check_people(a, obj) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some(i) = a.ticket_idx(id) else {
        return not_found();
    };
    let t = &mut a.tickets[i];
    let mut changes = Vec::new();
    if let Some(s) = obj.get("subject").and_then(Value::as_str)
        && s != t.subject
    {
        t.subject = s.to_owned();
        changes.push(Change::Subject);
    }
    if let Some(k) = obj.get("type") {
        t.kind = k.as_str().map(str::to_owned);
    }
    if let Some(p) = priority
        && p != t.priority
    {
        changes.push(Change::Priority {
            from: std::mem::replace(&mut t.priority, p.clone()),
            to: p,
        });
    }
    if let Some(s) = status
        && s != t.status
    {
        changes.push(Change::Status {
            from: std::mem::replace(&mut t.status, s.clone()),
            to: s,
        });
    }
    if let Some(x) = responder
        && x != t.assignee_id
    {
        changes.push(Change::Assignee {
            from: std::mem::replace(&mut t.assignee_id, x),
            to: x,
        });
    }
    if let Some(g) = group
        && g != t.group_id
    {
        changes.push(Change::Group {
            from: std::mem::replace(&mut t.group_id, g),
            to: g,
        });
    }
    if let Some(new) = tags {
        // PUT replaces the whole tag list (platforms.md 2.5).
        let added: Vec<String> = new
            .iter()
            .filter(|x| !t.tags.contains(x))
            .cloned()
            .collect();
        let removed: Vec<String> = t
            .tags
            .iter()
            .filter(|x| !new.contains(x))
            .cloned()
            .collect();
        t.tags = new;
        if !added.is_empty() || !removed.is_empty() {
            changes.push(Change::Tags { added, removed });
        }
    }
    if !changes.is_empty() {
        t.updated_at = now;
    }
    let mut r = Reply::json(200, &ticket_json(t));
    r.outbound = sim.commit(a, i, &changes, Some(cred.id), Some(cred.agent_id), now);
    r.applied = true;
    r
}

fn create(sim: &SimInner, a: &mut Account, cred: &Caller, body: &Value, now: i64) -> Reply {
    const ALLOWED: [&str; 16] = [
        "subject",
        "description",
        "requester_id",
        "email",
        "name",
        "phone",
        "status",
        "priority",
        "tags",
        "source",
        "responder_id",
        "group_id",
        "type",
        "custom_fields",
        "cc_emails",
        "unique_external_id",
    ];
    let Some(obj) = body.as_object() else {
        return validation(vec![(
            "ticket",
            "It should be a/an Object",
            "datatype_mismatch",
        )]);
    };
    if let Some(k) = obj.keys().find(|k| !ALLOWED.contains(&k.as_str())) {
        return invalid_field(k);
    }
    let mut errors = Vec::new();
    let requester_id = obj.get("requester_id").and_then(Value::as_u64);
    let email = obj.get("email").and_then(Value::as_str);
    if requester_id.is_none() && email.is_none() {
        errors.push((
            "requester_id",
            "Please fill at least 1 of email, requester_id, phone, twitter_id, facebook_id, unique_external_id fields",
            "missing_field",
        ));
    }
    if email.is_some_and(|e| !e.contains('@')) {
        errors.push((
            "email",
            "It should be a valid email address",
            "invalid_value",
        ));
    }
    if obj.get("subject").and_then(Value::as_str).is_none() {
        errors.push(("subject", "It should be a/an String", "missing_field"));
    }
    if obj.get("description").and_then(Value::as_str).is_none() {
        errors.push(("description", "It should be a/an String", "missing_field"));
    }
    if let Some(v) = obj.get("status")
        && norm_status(sim.platform, v).is_err()
    {
        errors.push((
            "status",
            "It should be one of these values: '2,3,4,5,6,7'",
            "invalid_value",
        ));
    }
    if let Some(v) = obj.get("priority")
        && norm_priority(sim.platform, v).is_err()
    {
        errors.push((
            "priority",
            "It should be one of these values: '1,2,3,4'",
            "invalid_value",
        ));
    }
    if let Some(r) = requester_id
        && a.contact(r).is_none()
        && a.agent(r).is_none()
    {
        errors.push((
            "requester_id",
            "There is no contact matching the given requester_id",
            "invalid_value",
        ));
    }
    if !errors.is_empty() {
        return validation(errors);
    }
    let tags = match obj.get("tags") {
        Some(v) => match tags_of(v) {
            Ok(t) => t,
            Err(r) => return r,
        },
        None => Vec::new(),
    };
    let (responder, group) = match check_people(a, obj) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let requester_id = match (requester_id, email) {
        (Some(x), _) => x,
        (None, Some(e)) => {
            sim.contact_for_email(a, e, obj.get("name").and_then(Value::as_str), now)
        }
        _ => unreachable!("checked above"),
    };
    let description = obj
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let spec = TicketSpec {
        subject: obj
            .get("subject")
            .and_then(Value::as_str)
            .map(str::to_owned),
        body: Some(description.to_owned()),
        requester_id: Some(requester_id),
        status: obj.get("status").cloned(),
        priority: obj.get("priority").cloned(),
        kind: obj.get("type").and_then(Value::as_str).map(str::to_owned),
        tags,
        assignee_id: responder.flatten(),
        group_id: group.flatten(),
        ..Default::default()
    };
    let i = match sim.new_ticket(a, &spec, now, Some(cred.agent_id), "api") {
        Ok(i) => i,
        Err(e) => return validation(vec![("ticket", &e, "invalid_value")]),
    };
    let t = &mut a.tickets[i];
    // Descriptions are HTML on Freshdesk.
    let (text, html) = crate::control::body_forms(description, true);
    t.description = text;
    t.description_html = html;
    t.source = obj.get("source").and_then(Value::as_i64).unwrap_or(2);
    let mut r = Reply::json(201, &ticket_json(t));
    r.set_header(
        "location",
        format!("{}/api/v2/tickets/{}", sim.base(), t.id),
    );
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

// ------------------------------------------------------------------------------------------
// Search query language: `"status:2 OR (priority:3 AND tag:'vip') AND updated_at:>'2024-01-01'"`

#[derive(Debug, Clone)]
enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Term { field: String, op: char, value: Val },
}

#[derive(Debug, Clone)]
enum Val {
    Num(i64),
    Str(String),
    Null,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    And,
    Or,
    Term(String, char, String, bool),
}

fn tokenize(q: &str) -> Result<Vec<Tok>, String> {
    let b = q.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        match b[i] {
            b' ' | b'\t' => i += 1,
            b'(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            b')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            _ => {
                let start = i;
                while i < b.len() && b[i] != b':' && b[i] != b' ' && b[i] != b')' {
                    i += 1;
                }
                let word = &q[start..i];
                if i >= b.len() || b[i] != b':' {
                    match word {
                        "AND" => out.push(Tok::And),
                        "OR" => out.push(Tok::Or),
                        _ => return Err(format!("expected field:value, found {word:?}")),
                    }
                    continue;
                }
                i += 1;
                let op = match b.get(i) {
                    Some(b'>') => {
                        i += 1;
                        '>'
                    }
                    Some(b'<') => {
                        i += 1;
                        '<'
                    }
                    _ => '=',
                };
                let (value, quoted) = if b.get(i) == Some(&b'\'') {
                    let s = i + 1;
                    let e = q[s..].find('\'').ok_or("unterminated quote")? + s;
                    i = e + 1;
                    (q[s..e].to_owned(), true)
                } else {
                    let s = i;
                    while i < b.len() && b[i] != b' ' && b[i] != b')' {
                        i += 1;
                    }
                    (q[s..i].to_owned(), false)
                };
                out.push(Tok::Term(word.to_owned(), op, value, quoted));
            }
        }
    }
    Ok(out)
}

fn parse_or(toks: &[Tok], pos: &mut usize) -> Result<Expr, String> {
    let mut lhs = parse_and(toks, pos)?;
    while toks.get(*pos) == Some(&Tok::Or) {
        *pos += 1;
        lhs = Expr::Or(Box::new(lhs), Box::new(parse_and(toks, pos)?));
    }
    Ok(lhs)
}

fn parse_and(toks: &[Tok], pos: &mut usize) -> Result<Expr, String> {
    let mut lhs = parse_atom(toks, pos)?;
    while toks.get(*pos) == Some(&Tok::And) {
        *pos += 1;
        lhs = Expr::And(Box::new(lhs), Box::new(parse_atom(toks, pos)?));
    }
    Ok(lhs)
}

fn parse_atom(toks: &[Tok], pos: &mut usize) -> Result<Expr, String> {
    match toks.get(*pos).cloned() {
        Some(Tok::LParen) => {
            *pos += 1;
            let e = parse_or(toks, pos)?;
            if toks.get(*pos) != Some(&Tok::RParen) {
                return Err("missing )".into());
            }
            *pos += 1;
            Ok(e)
        }
        Some(Tok::Term(field, op, value, quoted)) => {
            *pos += 1;
            const FIELDS: [&str; 11] = [
                "status",
                "priority",
                "group_id",
                "requester_id",
                "agent_id",
                "type",
                "tag",
                "created_at",
                "updated_at",
                "due_by",
                "fr_due_by",
            ];
            if !FIELDS.contains(&field.as_str()) && !field.starts_with("cf_") {
                return Err(format!("{field} is not a searchable field"));
            }
            let value = if !quoted && value == "null" {
                Val::Null
            } else if !quoted {
                Val::Num(value.parse().map_err(|_| {
                    format!("{field}: {value:?} must be a number or a quoted string")
                })?)
            } else {
                Val::Str(value)
            };
            Ok(Expr::Term { field, op, value })
        }
        other => Err(format!("unexpected {other:?}")),
    }
}

fn eval(e: &Expr, t: &Ticket) -> bool {
    match e {
        Expr::And(l, r) => eval(l, t) && eval(r, t),
        Expr::Or(l, r) => eval(l, t) || eval(r, t),
        Expr::Term { field, op, value } => {
            let num = |x: Option<i64>| -> bool {
                match (value, x) {
                    (Val::Null, x) => x.is_none(),
                    (Val::Num(v), Some(x)) => match op {
                        '>' => x >= *v,
                        '<' => x <= *v,
                        _ => x == *v,
                    },
                    _ => false,
                }
            };
            match field.as_str() {
                "status" => num(t.status.parse().ok()),
                "priority" => num(t.priority.as_ref().and_then(|p| p.parse().ok())),
                "group_id" => num(t.group_id.map(|x| x as i64)),
                "agent_id" => num(t.assignee_id.map(|x| x as i64)),
                "requester_id" => num(Some(t.requester_id as i64)),
                "type" => match value {
                    Val::Str(s) => t.kind.as_deref() == Some(s.as_str()),
                    Val::Null => t.kind.is_none(),
                    Val::Num(_) => false,
                },
                "tag" => match value {
                    Val::Str(s) => t.tags.iter().any(|x| x.eq_ignore_ascii_case(s)),
                    _ => false,
                },
                "created_at" | "updated_at" | "due_by" | "fr_due_by" => {
                    let at = match field.as_str() {
                        "created_at" => t.created_at,
                        "updated_at" => t.updated_at,
                        "due_by" => t.created_at + 3 * 86_400_000,
                        _ => t.created_at + 86_400_000,
                    };
                    let Val::Str(s) = value else { return false };
                    let Some(day) = parse_time(s) else {
                        return false;
                    };
                    // Dates are days; `:>` and `:<` include the day given.
                    match op {
                        '>' => at >= day,
                        '<' => at < day + 86_400_000,
                        _ => at >= day && at < day + 86_400_000,
                    }
                }
                _ => false,
            }
        }
    }
}

fn search(sim: &SimInner, req: &Req, a: &Account) -> Reply {
    let _ = sim;
    let Some(raw) = req.query.get("query") else {
        return validation(vec![("query", "It should be a/an String", "missing_field")]);
    };
    // The query must be wrapped in double quotes, at most 512 characters.
    let Some(q) = raw.strip_prefix('"').and_then(|s| s.strip_suffix('"')) else {
        return validation(vec![(
            "query",
            "It should be a/an String wrapped in double quotes",
            "invalid_value",
        )]);
    };
    if raw.len() > 512 {
        return validation(vec![(
            "query",
            "It should not exceed 512 characters",
            "invalid_value",
        )]);
    }
    let toks = match tokenize(q) {
        Ok(t) => t,
        Err(e) => return validation(vec![("query", &e, "invalid_value")]),
    };
    let mut pos = 0;
    let expr = match parse_or(&toks, &mut pos) {
        Ok(e) if pos == toks.len() => e,
        Ok(_) => {
            return validation(vec![(
                "query",
                "unexpected tokens after the query",
                "invalid_value",
            )]);
        }
        Err(e) => return validation(vec![("query", &e, "invalid_value")]),
    };
    // 30 results per page, at most 10 pages.
    let page = match req.query.get("page") {
        None => 1,
        Some(p) => match p.parse::<usize>() {
            Ok(n @ 1..=10) => n,
            _ => {
                return validation(vec![(
                    "page",
                    "It should be a Positive Number less than or equal to 10",
                    "invalid_value",
                )]);
            }
        },
    };
    let mut hits: Vec<&Ticket> = a
        .tickets
        .iter()
        .filter(|t| !t.deleted && eval(&expr, t))
        .collect();
    // Newest first (UNCONFIRMED ordering).
    hits.sort_by_key(|t| std::cmp::Reverse((t.created_at, t.id)));
    // `{"results","total"}` shape: UNCONFIRMED (platforms.md 2.5).
    #[derive(Serialize)]
    struct Found<'a> {
        results: Vec<TicketView<'a>>,
        total: usize,
    }
    let results: Vec<TicketView> = hits
        .iter()
        .skip((page - 1) * 30)
        .take(30)
        .map(|t| ticket_view(t))
        .collect();
    Reply::json_ser(
        200,
        &Found {
            results,
            total: hits.len(),
        },
    )
}

// ------------------------------------------------------------------------------------------
// Webhooks: the admin-configured JSON template (all values strings).

pub(crate) fn webhook_payloads(
    a: &Account,
    idx: usize,
    changes: &[Change],
) -> Vec<(String, Value)> {
    let t = &a.tickets[idx];
    let s = |x: Option<u64>| x.map(|v| v.to_string()).unwrap_or_default();
    changes
        .iter()
        .map(|c| {
            // `triggered_event` names are the sim's own: the real placeholder's rendering is
            // UNCONFIRMED, and the template is whatever the admin wrote.
            let event = match c {
                Change::Created => "ticket_created",
                Change::Comment(i) => {
                    let cm = &t.comments[*i];
                    if !cm.by_agent {
                        "customer_replied"
                    } else if cm.public {
                        "agent_replied"
                    } else {
                        "note_added"
                    }
                }
                Change::Status { .. } => "status_changed",
                Change::Priority { .. } => "priority_changed",
                Change::Tags { .. } => "tags_changed",
                Change::Assignee { .. } => "agent_assigned",
                Change::Group { .. } => "group_assigned",
                Change::Subject => "subject_changed",
                Change::Deleted => "ticket_deleted",
            };
            let body = json!({"freshdesk_webhook": {
                "ticket_id": t.id.to_string(), "ticket_subject": t.subject, "ticket_status": status_name(&t.status),
                "ticket_priority": priority_name(t.priority.as_deref()), "ticket_tags": t.tags.join(","),
                "ticket_requester_id": t.requester_id.to_string(), "ticket_agent_id": s(t.assignee_id),
                "ticket_group_id": s(t.group_id), "ticket_created_at": rfc3339(t.created_at),
                "ticket_updated_at": rfc3339(t.updated_at), "triggered_event": event
            }});
            (event.to_owned(), body)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_language() {
        let toks = tokenize("status:2 OR (priority:3 AND tag:'vip') AND updated_at:>'2024-01-01'")
            .unwrap();
        let mut pos = 0;
        let e = parse_or(&toks, &mut pos).unwrap();
        assert_eq!(pos, toks.len());
        assert!(matches!(e, Expr::Or(..)));
        assert!(tokenize("status:'x").is_err());
        let mut pos = 0;
        assert!(parse_or(&tokenize("subject:'a'").unwrap(), &mut pos).is_err());
    }
}
