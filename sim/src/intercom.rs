//! Intercom REST API (version 2.16 by default; the `Intercom-Version` header is honoured):
//! `/me`, `/admins`, `/conversations...`, `/tags`, `/contacts...` and `POST /auth/eagle/token`.
//!
//! Shapes follow the official OpenAPI description (`shared/specs/intercom/api.intercom.io.2.16.yaml`);
//! a test validates every response of these operations against it. Errors use the
//! `{"type":"error.list","request_id":…,"errors":[{code,message}]}` envelope. Rate limits are the
//! app's and the workspace's per-minute numbers spread over 10-second windows, with
//! `X-RateLimit-Limit/Remaining/Reset` on every response.

use std::collections::BTreeSet;

use base64::Engine as _;
use hyper::Method;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::control::{TicketSpec, intercom_tag};
use crate::limits::per_ten_seconds;
use crate::model::*;
use crate::server::{Reply, Req};
use crate::util::{AuthHeader, Query, parse_auth, uuidish};
use crate::{SimInner, lock};

/// API versions the spec's `intercom_version` enum lists.
const VERSIONS: [&str; 22] = [
    "1.0", "1.1", "1.2", "1.3", "1.4", "2.0", "2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "2.7",
    "2.8", "2.9", "2.10", "2.11", "2.12", "2.13", "2.14", "2.15", "2.16",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Me,
    Admins,
    ShowConversation(u64),
    DeleteConversation(u64),
    ListConversations,
    Search,
    Reply(u64),
    Parts(u64),
    AttachTag(u64),
    DetachTag(u64, u64),
    CreateTag,
    ListTags,
    CreateContact,
    ShowContact(u64),
    DeleteContact(u64),
    CreateConversation,
}

fn route(method: &Method, path: &str) -> Option<Op> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let id = |s: &str| s.parse::<u64>().ok();
    Some(match (method, segs.as_slice()) {
        (&Method::GET, ["me"]) => Op::Me,
        (&Method::GET, ["admins"]) => Op::Admins,
        (&Method::GET, ["conversations"]) => Op::ListConversations,
        (&Method::POST, ["conversations"]) => Op::CreateConversation,
        (&Method::POST, ["conversations", "search"]) => Op::Search,
        (&Method::GET, ["conversations", c]) => Op::ShowConversation(id(c)?),
        (&Method::DELETE, ["conversations", c]) => Op::DeleteConversation(id(c)?),
        (&Method::POST, ["conversations", c, "reply"]) => Op::Reply(id(c)?),
        (&Method::POST, ["conversations", c, "parts"]) => Op::Parts(id(c)?),
        (&Method::POST, ["conversations", c, "tags"]) => Op::AttachTag(id(c)?),
        (&Method::DELETE, ["conversations", c, "tags", t]) => Op::DetachTag(id(c)?, id(t)?),
        (&Method::POST, ["tags"]) => Op::CreateTag,
        (&Method::GET, ["tags"]) => Op::ListTags,
        (&Method::POST, ["contacts"]) => Op::CreateContact,
        (&Method::GET, ["contacts", c]) => Op::ShowContact(parse_contact_id(c)?),
        (&Method::DELETE, ["contacts", c]) => Op::DeleteContact(parse_contact_id(c)?),
        _ => return None,
    })
}

/// Contact ids render as 24 hex digits, like Intercom's.
pub(crate) fn contact_id(id: u64) -> String {
    format!("6762f{id:019x}")
}

fn parse_contact_id(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("6762f")?, 16).ok()
}

fn error(sim: &SimInner, status: u16, code: &str, message: &str) -> Reply {
    Reply::json(
        status,
        &json!({"type": "error.list", "request_id": uuidish(sim.next_id()),
                "errors": [{"code": code, "message": message}]}),
    )
}

fn not_found(sim: &SimInner) -> Reply {
    error(sim, 404, "not_found", "Resource Not Found")
}

/// Plain text is wrapped in `<p>` (the spec's examples send "Goodbye :)" and get "<p>Goodbye :)</p>").
fn looks_html(s: &str) -> bool {
    s.trim_start().starts_with('<')
}

fn secs(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

fn id_of(v: Option<&Value>) -> Option<u64> {
    let v = v?;
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

fn admin_json(a: &Agent) -> Value {
    json!({
        "type": "admin", "id": a.id.to_string(), "name": a.name, "email": a.email, "job_title": "Support",
        "away_mode_enabled": false, "away_mode_reassign": false, "has_inbox_seat": true, "team_ids": [],
        "avatar": null
    })
}

#[derive(Serialize)]
struct Ref {
    #[serde(rename = "type")]
    ty: &'static str,
    id: String,
}

#[derive(Serialize)]
struct Author {
    #[serde(rename = "type")]
    ty: String,
    id: String,
    name: Option<String>,
    email: String,
}

fn author(a: &Account, id: u64, by_agent: bool) -> Author {
    if by_agent {
        Author {
            ty: "admin".into(),
            id: id.to_string(),
            name: a.person_name(id),
            email: a.person_email(id).unwrap_or_default(),
        }
    } else {
        let role = a
            .contacts
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.role.clone())
            .unwrap_or_else(|| "user".into());
        Author {
            ty: role,
            id: contact_id(id),
            name: a.person_name(id),
            email: a.person_email(id).unwrap_or_default(),
        }
    }
}

#[derive(Serialize)]
struct PartView<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    id: String,
    part_type: &'a str,
    body: Option<&'a str>,
    created_at: i64,
    updated_at: i64,
    notified_at: i64,
    assigned_to: Option<Ref>,
    author: Author,
    attachments: [u8; 0],
    external_id: Option<()>,
    redacted: bool,
    email_message_metadata: Option<()>,
    state: &'static str,
    tags: [u8; 0],
    event_details: Option<()>,
    app_package_code: Option<()>,
}

fn part_view<'a>(a: &Account, c: &'a Comment) -> PartView<'a> {
    let state = match c.part_type {
        "close" => "closed",
        "snoozed" => "snoozed",
        _ => "open",
    };
    PartView {
        ty: "conversation_part",
        id: c.id.to_string(),
        part_type: c.part_type,
        body: (!c.html.is_empty()).then_some(c.html.as_str()),
        created_at: secs(c.created_at),
        updated_at: secs(c.created_at),
        notified_at: secs(c.created_at),
        assigned_to: c.assigned_to.map(|(team, id)| Ref {
            ty: if team { "team" } else { "admin" },
            id: id.to_string(),
        }),
        author: author(a, c.author_id, c.by_agent),
        attachments: [],
        external_id: None,
        redacted: false,
        email_message_metadata: None,
        state,
        tags: [],
        event_details: None,
        app_package_code: None,
    }
}

#[derive(Serialize)]
struct TagView<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    id: String,
    name: &'a str,
    applied_at: i64,
    applied_by: Ref,
}

#[derive(Serialize)]
struct TagList<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    tags: Vec<TagView<'a>>,
}

#[derive(Serialize)]
struct SourceView<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    id: String,
    delivered_as: &'static str,
    subject: &'static str,
    body: &'a str,
    author: Author,
    attachments: [u8; 0],
    url: Option<()>,
    redacted: bool,
}

#[derive(Serialize)]
struct ContactRef {
    #[serde(rename = "type")]
    ty: &'static str,
    id: String,
    external_id: Option<()>,
}

#[derive(Serialize)]
struct ListOf<T> {
    #[serde(rename = "type")]
    ty: &'static str,
    #[serde(flatten)]
    items: T,
}

#[derive(Serialize)]
struct ContactsField {
    contacts: Vec<ContactRef>,
}

#[derive(Serialize)]
struct TeammatesField {
    teammates: Vec<Ref>,
}

#[derive(Serialize)]
struct FirstReply {
    created_at: i64,
    #[serde(rename = "type")]
    ty: &'static str,
    url: Option<()>,
}

#[derive(Serialize)]
struct Linked {
    #[serde(rename = "type")]
    ty: &'static str,
    total_count: u64,
    has_more: bool,
    data: [u8; 0],
}

#[derive(Serialize)]
struct PartList<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    total_count: usize,
    conversation_parts: Vec<PartView<'a>>,
}

#[derive(Serialize)]
struct Empty {}

/// The conversation object, serialized directly.
#[derive(Serialize)]
pub(crate) struct ConversationView<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    id: String,
    title: &'a str,
    created_at: i64,
    updated_at: i64,
    waiting_since: Option<i64>,
    snoozed_until: Option<i64>,
    open: bool,
    state: &'a str,
    read: bool,
    priority: &'a str,
    // The spec types these as integers; unassigned conversations carry null (see the conformance test).
    admin_assignee_id: Option<u64>,
    team_assignee_id: Option<u64>,
    company: Option<()>,
    tags: TagList<'a>,
    conversation_rating: Option<()>,
    source: SourceView<'a>,
    contacts: ListOf<ContactsField>,
    teammates: ListOf<TeammatesField>,
    custom_attributes: Empty,
    first_contact_reply: FirstReply,
    sla_applied: Option<()>,
    statistics: Option<()>,
    linked_objects: Linked,
    ai_agent_participated: bool,
    ai_agent: Option<()>,
    #[serde(skip_serializing_if = "Option::is_none")]
    conversation_parts: Option<PartList<'a>>,
}

/// The conversation view (`with_parts = false` gives the list-item form search returns).
pub(crate) fn conversation_view<'a>(
    a: &'a Account,
    t: &'a Ticket,
    with_parts: bool,
) -> ConversationView<'a> {
    let tags = t
        .applied_tags
        .iter()
        .filter_map(|at| {
            let tag = a.tags.iter().find(|x| x.id == at.tag_id)?;
            Some(TagView {
                ty: "tag",
                id: tag.id.to_string(),
                name: &tag.name,
                applied_at: secs(at.applied_at),
                applied_by: Ref {
                    ty: "admin",
                    id: at.by.to_string(),
                },
            })
        })
        .collect();
    ConversationView {
        ty: "conversation",
        id: t.id.to_string(),
        title: &t.subject,
        created_at: secs(t.created_at),
        updated_at: secs(t.updated_at),
        waiting_since: (t.status == "open").then(|| secs(t.updated_at)),
        snoozed_until: t.snoozed_until.map(secs),
        open: t.status != "closed",
        state: &t.status,
        read: false,
        priority: t.priority.as_deref().unwrap_or("none"),
        admin_assignee_id: t.assignee_id,
        team_assignee_id: t.group_id,
        company: None,
        tags: TagList {
            ty: "tag.list",
            tags,
        },
        conversation_rating: None,
        source: SourceView {
            ty: "conversation",
            id: (400_000_000 + t.id).to_string(),
            delivered_as: "customer_initiated",
            subject: "",
            body: &t.description_html,
            author: author(a, t.requester_id, false),
            attachments: [],
            url: None,
            redacted: false,
        },
        contacts: ListOf {
            ty: "contact.list",
            items: ContactsField {
                contacts: vec![ContactRef {
                    ty: "contact",
                    id: contact_id(t.requester_id),
                    external_id: None,
                }],
            },
        },
        teammates: ListOf {
            ty: "admin.list",
            items: TeammatesField {
                teammates: t
                    .assignee_id
                    .map(|x| {
                        vec![Ref {
                            ty: "admin",
                            id: x.to_string(),
                        }]
                    })
                    .unwrap_or_default(),
            },
        },
        custom_attributes: Empty {},
        first_contact_reply: FirstReply {
            created_at: secs(t.created_at),
            ty: "conversation",
            url: None,
        },
        sla_applied: None,
        statistics: None,
        linked_objects: Linked {
            ty: "list",
            total_count: 0,
            has_more: false,
            data: [],
        },
        ai_agent_participated: false,
        ai_agent: None,
        conversation_parts: with_parts.then(|| PartList {
            ty: "conversation_part.list",
            total_count: t.comments.len(),
            conversation_parts: t.comments.iter().map(|c| part_view(a, c)).collect(),
        }),
    }
}

/// The conversation object as JSON.
pub(crate) fn conversation_json(a: &Account, t: &Ticket, with_parts: bool) -> Value {
    serde_json::to_value(conversation_view(a, t, with_parts)).unwrap_or(Value::Null)
}

fn contact_json(a: &Account, c: &Contact) -> Value {
    let cid = contact_id(c.id);
    let list = |what: &str| json!({"type": "list", "data": [], "url": format!("/contacts/{cid}/{what}"), "total_count": 0, "has_more": false});
    json!({
        "type": "contact", "id": cid, "workspace_id": a.id_code, "external_id": c.external_id, "role": c.role,
        "email": c.email.clone().unwrap_or_default(), "phone": null, "name": c.name, "avatar": null, "owner_id": null,
        "social_profiles": {"type": "list", "data": []}, "has_hard_bounced": false, "marked_email_as_spam": false,
        "unsubscribed_from_emails": false, "created_at": secs(c.created_at), "updated_at": secs(c.created_at),
        "signed_up_at": null, "last_seen_at": null, "last_replied_at": null, "last_contacted_at": null,
        "last_email_opened_at": null, "last_email_clicked_at": null, "language_override": null, "browser": null,
        "browser_version": null, "browser_language": null, "os": null,
        "location": {"type": "location", "country": null, "region": null, "city": null, "country_code": null, "continent_code": null},
        "android_app_name": null, "android_app_version": null, "android_device": null, "android_os_version": null,
        "android_sdk_version": null, "android_last_seen_at": null, "ios_app_name": null, "ios_app_version": null,
        "ios_device": null, "ios_os_version": null, "ios_sdk_version": null, "ios_last_seen_at": null,
        "custom_attributes": {}, "tags": list("tags"), "notes": list("notes"), "companies": list("companies"),
        "opted_out_subscription_types": list("subscriptions"), "opted_in_subscription_types": list("subscriptions"),
        "utm_campaign": null, "utm_content": null, "utm_medium": null, "utm_source": null, "utm_term": null,
        "referrer": null, "enabled_push_messaging": null
    })
}

/// Entry point.
pub(crate) fn handle(sim: &SimInner, req: &Req) -> Reply {
    if req.path.trim_end_matches('/') == "/auth/eagle/token" {
        return if req.method == Method::POST {
            eagle_token(sim, req)
        } else {
            not_found(sim)
        };
    }
    let Some(op) = route(&req.method, &req.path) else {
        return not_found(sim);
    };
    if let Some(v) = req.header("intercom-version")
        && !VERSIONS.contains(&v.trim())
    {
        // Code and message UNCONFIRMED (platforms.md 3.4).
        return error(
            sim,
            400,
            "intercom_version_invalid",
            &format!("The requested version could not be found: {v}"),
        );
    }
    let token = match parse_auth(req.headers.get("authorization").map(|v| v.as_bytes())) {
        AuthHeader::Bearer(t) => t,
        _ => return error(sim, 401, "unauthorized", "Access Token Invalid"),
    };
    let Some((acct, cred_id)) = sim.by_secret(&token) else {
        return error(sim, 401, "unauthorized", "Access Token Invalid");
    };
    let now = sim.clock.now_ms();
    let mut guard = lock(&acct);
    let a = &mut *guard;
    let full = &a.creds[cred_id as usize - 1];
    let cred = full.caller();
    // Messages for revoked / expired tokens UNCONFIRMED; the codes are documented.
    let refused = if cred.kind != CredKind::AppToken {
        Some(("unauthorized", "Access Token Invalid"))
    } else if full.revoked {
        Some(("token_revoked", "Token revoked"))
    } else if full.expires_at.is_some_and(|x| x <= now) {
        Some(("token_expired", "Token expired"))
    } else {
        None
    };
    if let Some((code, message)) = refused {
        let mut r = error(sim, 401, code, message);
        r.account = Some(a.id);
        r.cred = Some(cred.id);
        return r;
    }
    a.stats.requests += 1;

    // Rate limits: per app and per workspace, each a sixth of the per-minute number per 10 s.
    let app_limit = per_ten_seconds(a.limits.app_per_minute);
    let ws_limit = per_ten_seconds(a.limits.workspace_per_minute);
    a.rate.account.roll(now, 10_000);
    let app = a.rate.apps.entry(cred.app).or_default();
    app.roll(now, 10_000);
    let app_ok = app.fits(app_limit, 1);
    let ws_ok = a.rate.account.fits(ws_limit, 1);
    let mut reply = if app_ok && ws_ok {
        app.take(1);
        a.rate.account.take(1);
        authorized(sim, req, a, &cred, op, now)
    } else {
        a.stats.rate_limited += 1;
        let bucket = if app_ok { "workspace" } else { "app" };
        *a.stats
            .rate_limited_by_bucket
            .entry(bucket.to_owned())
            .or_default() += 1;
        // Message UNCONFIRMED; no Retry-After (platforms.md 3.3: use X-RateLimit-Reset).
        error(
            sim,
            429,
            "rate_limit_exceeded",
            "The rate limit for the App has been exceeded",
        )
    };
    let app = a.rate.apps.get(&cred.app).copied().unwrap_or_default();
    let (remaining, reset) = if !ws_ok && app_ok {
        (
            a.rate.account.remaining(ws_limit),
            a.rate.account.reset_ms(10_000),
        )
    } else {
        (
            app.remaining(app_limit)
                .min(a.rate.account.remaining(ws_limit)),
            app.reset_ms(10_000),
        )
    };
    reply.account = Some(a.id);
    reply.cred = Some(cred.id);
    reply.set_num("x-ratelimit-limit", app_limit as i64);
    reply.set_num("x-ratelimit-remaining", remaining as i64);
    reply.set_num("x-ratelimit-reset", (reset + 999) / 1000);
    reply
}

fn authorized(
    sim: &SimInner,
    req: &Req,
    a: &mut Account,
    cred: &Caller,
    op: Op,
    now: i64,
) -> Reply {
    // Plan first ("Active subscription needed." is the spec's example), then app permissions.
    if !a.features.contains("api") {
        return error(
            sim,
            403,
            "api_plan_restricted",
            "Active subscription needed.",
        );
    }
    let needed = match op {
        Op::Me => None,
        Op::Admins => Some("read_admins"),
        Op::ShowConversation(_) | Op::ListConversations | Op::Search => Some("read_conversations"),
        Op::DeleteConversation(_) | Op::Reply(_) | Op::Parts(_) | Op::CreateConversation => {
            Some("write_conversations")
        }
        Op::AttachTag(_) | Op::DetachTag(..) | Op::CreateTag => Some("write_tags"),
        Op::ListTags => Some("read_tags"),
        Op::CreateContact | Op::DeleteContact(_) => Some("write_users"),
        Op::ShowContact(_) => Some("read_users"),
    };
    if let Some(p) = needed
        && !a.cred(cred).scopes.contains(p)
    {
        // `data.required_permissions` contents and the message are UNCONFIRMED (platforms.md 3.4).
        return Reply::json(
            403,
            &json!({"type": "error.list", "request_id": uuidish(sim.next_id()),
                        "errors": [{"code": "action_forbidden",
                                    "message": format!("The app is missing the {p} permission required for this action."),
                                    "data": {"required_permissions": [p]}}]}),
        );
    }
    let body = if req.method == Method::GET {
        Value::Null
    } else {
        match req.json() {
            Ok(v) => v,
            Err(e) => return error(sim, 400, "parameter_invalid", &e),
        }
    };
    match op {
        Op::Me => match a.agent(cred.agent_id) {
            Some(ag) => {
                let client = a
                    .cred(cred)
                    .client
                    .as_ref()
                    .and_then(|c| a.clients.iter().find(|k| &k.identifier == c));
                Reply::json(
                    200,
                    &json!({
                        "type": "admin", "id": ag.id.to_string(), "email": ag.email, "name": ag.name,
                        "email_verified": true, "has_inbox_seat": true, "away_mode_enabled": false,
                        "away_mode_reassign": false, "team_ids": [],
                        "avatar": {"type": "avatar", "image_url": null},
                        "app": {"type": "app", "id_code": a.id_code,
                                "name": client.map(|c| c.name.clone()).unwrap_or_else(|| a.name.clone()),
                                "created_at": secs(ag.created_at), "secure": false, "identity_verification": false,
                                "timezone": "UTC", "region": "US"}
                    }),
                )
            }
            None => not_found(sim),
        },
        Op::Admins => {
            let admins: Vec<Value> = a.agents.iter().map(admin_json).collect();
            Reply::json(200, &json!({"type": "admin.list", "admins": admins}))
        }
        Op::ShowConversation(id) => match a.ticket_idx(id) {
            Some(i) => Reply::json_ser(200, &conversation_view(a, &a.tickets[i], true)),
            None => not_found(sim),
        },
        Op::DeleteConversation(id) => match a.ticket_idx(id) {
            Some(i) => {
                a.tickets[i].deleted = true;
                let mut r = Reply::json(
                    200,
                    &json!({"id": id.to_string(), "object": "conversation", "deleted": true}),
                );
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
            None => not_found(sim),
        },
        Op::ListConversations => {
            let per_page = req.query.get("per_page").and_then(|p| p.parse().ok());
            let after = req.query.get("starting_after").map(str::to_owned);
            list(sim, a, None, per_page, after)
        }
        Op::Search => search(sim, a, &body),
        Op::Reply(id) => reply(sim, a, cred, id, &body, now),
        Op::Parts(id) => parts(sim, a, cred, id, &body, now),
        Op::CreateTag => {
            let Some(name) = body
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.trim().is_empty())
            else {
                return error(sim, 400, "parameter_invalid", "invalid tag parameters");
            };
            let id = intercom_tag(sim, a, name);
            Reply::json(
                200,
                &json!({"type": "tag", "id": id.to_string(), "name": name}),
            )
        }
        Op::ListTags => {
            let tags: Vec<Value> = a
                .tags
                .iter()
                .map(|t| json!({"type": "tag", "id": t.id.to_string(), "name": t.name}))
                .collect();
            Reply::json(200, &json!({"type": "list", "data": tags}))
        }
        Op::AttachTag(id) | Op::DetachTag(id, _) => {
            tag_conversation(sim, a, cred, op, id, &body, now)
        }
        Op::CreateContact => create_contact(sim, a, &body, now),
        Op::ShowContact(cid) => match a.contact(cid) {
            Some(c) => Reply::json(200, &contact_json(a, c)),
            None => not_found(sim),
        },
        Op::DeleteContact(cid) => match a.contacts.iter_mut().find(|c| c.id == cid && !c.deleted) {
            Some(c) => {
                c.deleted = true;
                let mut r = Reply::json(
                    200,
                    &json!({"id": contact_id(cid), "external_id": c.external_id, "type": "contact", "deleted": true}),
                );
                r.applied = true;
                r
            }
            None => not_found(sim),
        },
        Op::CreateConversation => create_conversation(sim, a, cred, &body, now),
    }
}

// ------------------------------------------------------------------------------------------
// Search

#[derive(Debug)]
enum Filter {
    Group(bool, Vec<Filter>),
    One {
        field: String,
        op: String,
        value: Value,
    },
}

fn parse_filter(v: &Value, depth: usize) -> Result<Filter, String> {
    let obj = v.as_object().ok_or("each query must be an object")?;
    let op = obj
        .get("operator")
        .and_then(Value::as_str)
        .ok_or("query.operator is required")?;
    if op == "AND" || op == "OR" {
        // "At most 2 nested filters and 15 filters per AND/OR group."
        if depth > 2 {
            return Err("queries can be nested at most 2 levels deep".into());
        }
        let items = obj
            .get("value")
            .and_then(Value::as_array)
            .ok_or("an AND/OR query needs a value array")?;
        if items.len() > 15 {
            return Err("an AND/OR group can hold at most 15 filters".into());
        }
        let inner = items
            .iter()
            .map(|x| parse_filter(x, depth + 1))
            .collect::<Result<_, _>>()?;
        return Ok(Filter::Group(op == "AND", inner));
    }
    const OPS: [&str; 12] = [
        "=", "!=", "IN", "NIN", "<", "<=", ">", ">=", "~", "!~", "^", "$",
    ];
    if !OPS.contains(&op) {
        return Err(format!("operator {op:?} is not supported"));
    }
    let field = obj
        .get("field")
        .and_then(Value::as_str)
        .ok_or("query.field is required")?;
    const FIELDS: [&str; 11] = [
        "id",
        "created_at",
        "updated_at",
        "state",
        "open",
        "admin_assignee_id",
        "team_assignee_id",
        "tag_ids",
        "contact_ids",
        "priority",
        "snoozed_until",
    ];
    if !FIELDS.contains(&field) {
        return Err(format!("{field} is not a searchable field"));
    }
    Ok(Filter::One {
        field: field.to_owned(),
        op: op.to_owned(),
        value: obj.get("value").cloned().unwrap_or(Value::Null),
    })
}

fn as_num(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn eval(f: &Filter, t: &Ticket) -> bool {
    match f {
        Filter::Group(and, items) => {
            if *and {
                items.iter().all(|x| eval(x, t))
            } else {
                items.iter().any(|x| eval(x, t))
            }
        }
        Filter::One { field, op, value } => {
            let mine: Vec<Value> = match field.as_str() {
                "id" => vec![json!(t.id.to_string())],
                "created_at" => vec![json!(secs(t.created_at))],
                "updated_at" => vec![json!(secs(t.updated_at))],
                "snoozed_until" => vec![
                    t.snoozed_until
                        .map(|x| json!(secs(x)))
                        .unwrap_or(Value::Null),
                ],
                "state" => vec![json!(t.status)],
                "open" => vec![json!(t.status != "closed")],
                "priority" => vec![json!(t.priority.as_deref().unwrap_or("none"))],
                "admin_assignee_id" => vec![
                    t.assignee_id
                        .map(|x| json!(x.to_string()))
                        .unwrap_or(Value::Null),
                ],
                "team_assignee_id" => vec![
                    t.group_id
                        .map(|x| json!(x.to_string()))
                        .unwrap_or(Value::Null),
                ],
                "tag_ids" => t
                    .applied_tags
                    .iter()
                    .map(|x| json!(x.tag_id.to_string()))
                    .collect(),
                "contact_ids" => vec![json!(contact_id(t.requester_id))],
                _ => vec![],
            };
            let eq = |m: &Value, v: &Value| -> bool {
                match (m, v) {
                    (Value::Bool(a), Value::Bool(b)) => a == b,
                    (Value::Bool(a), Value::String(s)) => s == if *a { "true" } else { "false" },
                    (Value::Null, Value::Null) => true,
                    _ => match (as_num(m), as_num(v)) {
                        (Some(a), Some(b)) => a == b,
                        _ => as_text(m) == as_text(v),
                    },
                }
            };
            let list: Vec<Value> = value
                .as_array()
                .cloned()
                .unwrap_or_else(|| vec![value.clone()]);
            match op.as_str() {
                "=" => mine.iter().any(|m| eq(m, value)) || (mine.is_empty() && value.is_null()),
                "!=" => !mine.iter().any(|m| eq(m, value)),
                "IN" => mine.iter().any(|m| list.iter().any(|v| eq(m, v))),
                "NIN" => !mine.iter().any(|m| list.iter().any(|v| eq(m, v))),
                // Per the docs `>` and `<` include the value (greater-or-equal / lower-or-equal).
                ">" | ">=" => mine
                    .iter()
                    .any(|m| matches!((as_num(m), as_num(value)), (Some(a), Some(b)) if a >= b)),
                "<" | "<=" => mine
                    .iter()
                    .any(|m| matches!((as_num(m), as_num(value)), (Some(a), Some(b)) if a <= b)),
                "~" => mine.iter().any(|m| as_text(m).contains(&as_text(value))),
                "!~" => !mine.iter().any(|m| as_text(m).contains(&as_text(value))),
                "^" => mine.iter().any(|m| as_text(m).starts_with(&as_text(value))),
                "$" => mine.iter().any(|m| as_text(m).ends_with(&as_text(value))),
                _ => false,
            }
        }
    }
}

fn encode_cursor(page: usize, last_id: u64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{page}:{last_id}"))
}

fn decode_cursor(c: &str) -> Option<(usize, u64)> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (p, id) = s.split_once(':')?;
    Some((p.parse().ok()?, id.parse().ok()?))
}

fn list(
    sim: &SimInner,
    a: &Account,
    filter: Option<&Filter>,
    per_page: Option<u64>,
    after: Option<String>,
) -> Reply {
    let per_page = match per_page {
        None => 20,
        Some(n @ 1..=150) => n as usize,
        // Message UNCONFIRMED.
        Some(_) => {
            return error(
                sim,
                400,
                "parameter_invalid",
                "per_page must be between 1 and 150",
            );
        }
    };
    let (page, last) = match after.as_deref() {
        None | Some("") => (1, 0),
        Some(c) => match decode_cursor(c) {
            Some((p, id)) => (p + 1, id),
            None => {
                return error(
                    sim,
                    400,
                    "parameter_invalid",
                    "starting_after is not a valid cursor",
                );
            }
        },
    };
    let hits: Vec<&Ticket> = a
        .tickets
        .iter()
        .filter(|t| !t.deleted && filter.is_none_or(|f| eval(f, t)))
        .collect();
    let total = hits.len();
    let rest: Vec<&&Ticket> = hits.iter().filter(|t| t.id > last).collect();
    let items: Vec<ConversationView> = rest
        .iter()
        .take(per_page)
        .map(|t| conversation_view(a, t, false))
        .collect();
    let mut pages = json!({"type": "pages", "page": page, "per_page": per_page, "total_pages": total.div_ceil(per_page)});
    if rest.len() > per_page {
        let last_id = rest[per_page - 1].id;
        pages["next"] = json!({"page": page + 1, "starting_after": encode_cursor(page, last_id)});
    }
    #[derive(Serialize)]
    struct ListView<'a> {
        #[serde(rename = "type")]
        ty: &'static str,
        conversations: Vec<ConversationView<'a>>,
        total_count: usize,
        pages: Value,
    }
    Reply::json_ser(
        200,
        &ListView {
            ty: "conversation.list",
            conversations: items,
            total_count: total,
            pages,
        },
    )
}

fn search(sim: &SimInner, a: &Account, body: &Value) -> Reply {
    let Some(q) = body.get("query") else {
        return error(sim, 400, "parameter_invalid", "query is required");
    };
    let filter = match parse_filter(q, 1) {
        Ok(f) => f,
        Err(e) => return error(sim, 400, "parameter_invalid", &e),
    };
    let pg = body.get("pagination");
    let per_page = pg
        .and_then(|p| p.get("per_page"))
        .and_then(as_num)
        .map(|n| n.max(0) as u64);
    let after = pg
        .and_then(|p| p.get("starting_after"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    list(sim, a, Some(&filter), per_page, after)
}

// ------------------------------------------------------------------------------------------
// Writes

fn admin_of(sim: &SimInner, a: &Account, body: &Value) -> Result<u64, Reply> {
    match id_of(body.get("admin_id")) {
        Some(x) if a.agent(x).is_some() => Ok(x),
        // Status and code for an unknown admin UNCONFIRMED (admin_not_found is a documented code).
        Some(_) => Err(error(sim, 404, "admin_not_found", "Admin not found")),
        None => Err(error(sim, 400, "parameter_invalid", "admin_id is required")),
    }
}

fn reply(sim: &SimInner, a: &mut Account, cred: &Caller, id: u64, body: &Value, now: i64) -> Reply {
    let message_type = body
        .get("message_type")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !["comment", "note", "quick_reply"].contains(&message_type) {
        return error(
            sim,
            400,
            "parameter_invalid",
            "message_type must be comment, note or quick_reply",
        );
    }
    let kind = body.get("type").and_then(Value::as_str).unwrap_or("");
    let text = body.get("body").and_then(Value::as_str).unwrap_or("");
    let (author, by_agent) = match kind {
        "admin" => match admin_of(sim, a, body) {
            Ok(x) => (x, true),
            Err(r) => return r,
        },
        "user" | "lead" | "contact" => {
            let found = if let Some(cid) = body
                .get("intercom_user_id")
                .and_then(Value::as_str)
                .and_then(parse_contact_id)
            {
                a.contact(cid).map(|c| c.id)
            } else if let Some(email) = body.get("email").and_then(Value::as_str) {
                a.contacts
                    .iter()
                    .find(|c| !c.deleted && c.email.as_deref() == Some(email))
                    .map(|c| c.id)
            } else if let Some(uid) = body.get("user_id").and_then(Value::as_str) {
                a.contacts
                    .iter()
                    .find(|c| !c.deleted && c.external_id.as_deref() == Some(uid))
                    .map(|c| c.id)
            } else {
                None
            };
            match found {
                Some(x) => (x, false),
                None => return error(sim, 404, "not_found", "User Not Found"),
            }
        }
        _ => return error(sim, 400, "parameter_invalid", "type must be admin or user"),
    };
    if text.trim().is_empty() && message_type != "quick_reply" {
        return error(sim, 400, "parameter_invalid", "body is required");
    }
    let Some(i) = a.ticket_idx(id) else {
        return not_found(sim);
    };
    let changes = if by_agent {
        let public = message_type != "note";
        let c = sim.new_comment(
            author,
            true,
            text,
            looks_html(text),
            public,
            if public { "comment" } else { "note" },
            now,
        );
        let t = &mut a.tickets[i];
        t.comments.push(c);
        t.updated_at = now;
        vec![Change::Comment(t.comments.len() - 1)]
    } else {
        let t = &mut a.tickets[i];
        let before = t.status.clone();
        let c = sim.new_comment(author, false, text, looks_html(text), true, "comment", now);
        t.comments.push(c);
        t.updated_at = now;
        let mut ch = vec![Change::Comment(t.comments.len() - 1)];
        if before != "open" {
            t.status = "open".into();
            t.snoozed_until = None;
            ch.push(Change::Status {
                from: before,
                to: "open".into(),
            });
        }
        ch
    };
    let mut r = Reply::json_ser(200, &conversation_view(a, &a.tickets[i], true));
    r.outbound = sim.commit(a, i, &changes, Some(cred.id), Some(author), now);
    r.applied = true;
    r
}

fn parts(sim: &SimInner, a: &mut Account, cred: &Caller, id: u64, body: &Value, now: i64) -> Reply {
    let message_type = body
        .get("message_type")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !["close", "open", "snoozed", "assignment"].contains(&message_type) {
        return error(
            sim,
            400,
            "parameter_invalid",
            "message_type must be close, open, snoozed or assignment",
        );
    }
    let admin = match admin_of(sim, a, body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let text = body
        .get("body")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty());
    let snooze = if message_type == "snoozed" {
        match body.get("snoozed_until").and_then(as_num) {
            Some(s) => Some(s * 1000),
            None => {
                return error(
                    sim,
                    400,
                    "parameter_invalid",
                    "snoozed_until is required to snooze",
                );
            }
        }
    } else {
        None
    };
    let assignee = if message_type == "assignment" {
        match id_of(body.get("assignee_id")) {
            Some(0) => Some((
                body.get("type").and_then(Value::as_str) == Some("team"),
                None,
            )),
            Some(x) if a.agent(x).is_some() => Some((false, Some(x))),
            Some(x) if a.group(x).is_some() => Some((true, Some(x))),
            Some(_) => return error(sim, 404, "admin_not_found", "Assignee not found"),
            None => return error(sim, 400, "parameter_invalid", "assignee_id is required"),
        }
    } else {
        None
    };
    let Some(i) = a.ticket_idx(id) else {
        return not_found(sim);
    };
    let body_text = text.unwrap_or("");
    let mut part = sim.new_comment(
        admin,
        true,
        body_text,
        looks_html(body_text),
        true,
        "comment",
        now,
    );
    if text.is_none() {
        part.text.clear();
        part.html.clear();
    }
    let t = &mut a.tickets[i];
    let mut changes = Vec::new();
    let mut set_state = |t: &mut Ticket, to: &str| {
        if t.status != to {
            changes.push(Change::Status {
                from: std::mem::replace(&mut t.status, to.to_owned()),
                to: to.to_owned(),
            });
        }
    };
    match message_type {
        "close" => {
            part.part_type = "close";
            t.snoozed_until = None;
            set_state(t, "closed");
        }
        "open" => {
            part.part_type = "open";
            t.snoozed_until = None;
            set_state(t, "open");
        }
        "snoozed" => {
            part.part_type = "snoozed";
            t.snoozed_until = snooze;
            set_state(t, "snoozed");
        }
        _ => {
            part.part_type = "assignment";
            if let Some((team, to)) = assignee {
                part.assigned_to = to.map(|x| (team, x));
                if team {
                    if to != t.group_id {
                        changes.push(Change::Group {
                            from: std::mem::replace(&mut t.group_id, to),
                            to,
                        });
                    }
                } else if to != t.assignee_id {
                    changes.push(Change::Assignee {
                        from: std::mem::replace(&mut t.assignee_id, to),
                        to,
                    });
                }
            }
        }
    }
    t.comments.push(part);
    t.updated_at = now;
    if text.is_some() {
        // A part that carries a body is a visible message: the write log records it as a reply.
        changes.push(Change::Comment(t.comments.len() - 1));
    }
    let mut r = Reply::json_ser(200, &conversation_view(a, &a.tickets[i], true));
    r.outbound = sim.commit(a, i, &changes, Some(cred.id), Some(admin), now);
    r.applied = true;
    r
}

/// `POST /conversations/{id}/tags` (`{"id","admin_id"}`; UNCONFIRMED verbatim in platforms.md 3.5,
/// present in the 2.16 spec as attachTagToConversation) and the matching DELETE.
fn tag_conversation(
    sim: &SimInner,
    a: &mut Account,
    cred: &Caller,
    op: Op,
    id: u64,
    body: &Value,
    now: i64,
) -> Reply {
    let admin = match admin_of(sim, a, body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let tag_id = match op {
        Op::DetachTag(_, t) => Some(t),
        _ => id_of(body.get("id")),
    };
    let Some(tag) = tag_id
        .and_then(|t| a.tags.iter().find(|x| x.id == t))
        .cloned()
    else {
        // Code UNCONFIRMED.
        return error(sim, 404, "tag_not_found", "Tag not found");
    };
    let Some(i) = a.ticket_idx(id) else {
        return error(sim, 404, "not_found", "Conversation not found");
    };
    let t = &mut a.tickets[i];
    let mut changes = Vec::new();
    let applied_at = if let Op::DetachTag(..) = op {
        let before = t.applied_tags.len();
        t.applied_tags.retain(|x| x.tag_id != tag.id);
        if t.applied_tags.len() != before {
            changes.push(Change::Tags {
                added: vec![],
                removed: vec![tag.name.clone()],
            });
        }
        now
    } else if let Some(existing) = t.applied_tags.iter().find(|x| x.tag_id == tag.id) {
        existing.applied_at
    } else {
        t.applied_tags.push(AppliedTag {
            tag_id: tag.id,
            applied_at: now,
            by: admin,
        });
        changes.push(Change::Tags {
            added: vec![tag.name.clone()],
            removed: vec![],
        });
        now
    };
    if !changes.is_empty() {
        t.updated_at = now;
    }
    let mut r = Reply::json(
        200,
        &json!({"type": "tag", "id": tag.id.to_string(), "name": tag.name, "applied_at": secs(applied_at),
                "applied_by": {"type": "admin", "id": admin.to_string()}}),
    );
    r.outbound = sim.commit(a, i, &changes, Some(cred.id), Some(admin), now);
    r.applied = true;
    r
}

fn create_contact(sim: &SimInner, a: &mut Account, body: &Value, now: i64) -> Reply {
    let role = body.get("role").and_then(Value::as_str).unwrap_or("user");
    if role != "user" && role != "lead" {
        return error(sim, 400, "parameter_invalid", "role must be user or lead");
    }
    let email = body.get("email").and_then(Value::as_str).map(str::to_owned);
    let external_id = body
        .get("external_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    if email.is_none() && external_id.is_none() && role != "lead" {
        return error(
            sim,
            400,
            "parameter_invalid",
            "One of email, external_id or role lead is required",
        );
    }
    if let Some(e) = &email
        && let Some(c) = a
            .contacts
            .iter()
            .find(|c| !c.deleted && c.email.as_deref() == Some(e.as_str()) && c.role == role)
    {
        return error(
            sim,
            409,
            "conflict",
            &format!(
                "A contact matching those details already exists with id={}",
                contact_id(c.id)
            ),
        );
    }
    let c = Contact {
        id: sim.next_id(),
        name: body.get("name").and_then(Value::as_str).map(str::to_owned),
        email,
        role: role.to_owned(),
        created_at: now,
        deleted: false,
        external_id,
    };
    a.contacts.push(c.clone());
    let mut r = Reply::json(200, &contact_json(a, &c));
    r.applied = true;
    r
}

fn create_conversation(
    sim: &SimInner,
    a: &mut Account,
    cred: &Caller,
    body: &Value,
    now: i64,
) -> Reply {
    let from = body.get("from");
    let kind = from
        .and_then(|f| f.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if !["user", "lead", "contact"].contains(&kind) {
        return error(
            sim,
            400,
            "parameter_invalid",
            "from.type must be user, lead or contact",
        );
    }
    let Some(text) = body
        .get("body")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
    else {
        return error(sim, 400, "parameter_invalid", "body is required");
    };
    let contact = from
        .and_then(|f| f.get("id"))
        .and_then(Value::as_str)
        .and_then(parse_contact_id)
        .filter(|c| a.contact(*c).is_some());
    let Some(contact) = contact else {
        return error(sim, 404, "not_found", "User Not Found");
    };
    let spec = TicketSpec {
        subject: body
            .get("subject")
            .and_then(Value::as_str)
            .map(str::to_owned),
        body: Some(text.to_owned()),
        requester_id: Some(contact),
        ..Default::default()
    };
    let i = match sim.new_ticket(a, &spec, now, None, "api") {
        Ok(i) => i,
        Err(e) => return error(sim, 400, "parameter_invalid", &e),
    };
    let t = &a.tickets[i];
    let mut r = Reply::json(
        200,
        &json!({"type": "user_message", "id": (400_000_000 + t.id).to_string(), "created_at": secs(t.created_at),
                "body": text, "message_type": "inapp", "conversation_id": t.id.to_string()}),
    );
    r.outbound = sim.commit(a, i, &[Change::Created], Some(cred.id), Some(contact), now);
    r.applied = true;
    r
}

// ------------------------------------------------------------------------------------------
// OAuth code exchange (tokens never expire, no refresh tokens).

fn eagle_token(sim: &SimInner, req: &Req) -> Reply {
    let p: Map<String, Value> = match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(m)) => m,
        _ => Query::parse(std::str::from_utf8(&req.body).unwrap_or(""))
            .0
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    };
    let s = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_owned);
    let (Some(code), Some(client_id), Some(client_secret)) =
        (s("code"), s("client_id"), s("client_secret"))
    else {
        return error(
            sim,
            400,
            "parameter_invalid",
            "code, client_id and client_secret are required",
        );
    };
    let acct_id = sim
        .index
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .codes
        .get(&code)
        .copied();
    // Error bodies for this endpoint are UNCONFIRMED.
    let Some(acct) = acct_id.and_then(|a| sim.account(a)) else {
        return error(
            sim,
            400,
            "parameter_invalid",
            "The code is invalid or has already been used",
        );
    };
    let now = sim.clock.now_ms();
    let mut guard = lock(&acct);
    let a = &mut *guard;
    let Some(ci) = a
        .clients
        .iter()
        .position(|c| c.identifier == client_id && c.secret == client_secret)
    else {
        return error(sim, 401, "unauthorized", "Client authentication failed");
    };
    let Some(k) = a.codes.iter_mut().find(|k| k.code == code) else {
        return error(
            sim,
            400,
            "parameter_invalid",
            "The code is invalid or has already been used",
        );
    };
    if k.used || k.expires_at <= now || k.client != client_id {
        return error(
            sim,
            400,
            "parameter_invalid",
            "The code is invalid or has already been used",
        );
    }
    k.used = true;
    let (agent, scopes): (u64, BTreeSet<String>) = (k.agent_id, k.scopes.clone());
    let cid = sim.issue_token(a, ci, agent, scopes, None, None, now);
    let token = a.creds[cid as usize - 1].secret.clone();
    let mut r = Reply::json(
        200,
        &json!({"token_type": "Bearer", "token": token, "access_token": token}),
    );
    r.account = Some(a.id);
    r.cred = Some(cid);
    r
}

// ------------------------------------------------------------------------------------------
// Webhooks: notification_event with the REST conversation as data.item.

pub(crate) fn webhook_payloads(
    sim: &SimInner,
    a: &Account,
    idx: usize,
    changes: &[Change],
    now: i64,
) -> Vec<(String, Value)> {
    let t = &a.tickets[idx];
    let mut topics: Vec<&str> = Vec::new();
    for c in changes {
        let topic = match c {
            Change::Created => Some("conversation.user.created"),
            Change::Comment(i) => {
                let cm = &t.comments[*i];
                match (cm.by_agent, cm.part_type) {
                    (false, _) => Some("conversation.user.replied"),
                    (true, "comment") => Some("conversation.admin.replied"),
                    (true, "note") => Some("conversation.admin.noted"),
                    // A close/assignment part with a body: covered by the state/assignment topic.
                    _ => None,
                }
            }
            Change::Status { to, .. } => match to.as_str() {
                "closed" => Some("conversation.admin.closed"),
                "snoozed" => Some("conversation.admin.snoozed"),
                // A user reply reopens silently; only an admin opening is its own topic.
                _ if changes
                    .iter()
                    .any(|c| matches!(c, Change::Comment(i) if !t.comments[*i].by_agent)) =>
                {
                    None
                }
                _ => Some("conversation.admin.opened"),
            },
            Change::Assignee { .. } | Change::Group { .. } => Some("conversation.admin.assigned"),
            Change::Tags { added, .. } if !added.is_empty() => {
                Some("conversation_part.tag.created")
            }
            Change::Priority { .. } => Some("conversation.priority.updated"),
            Change::Deleted => Some("conversation.deleted"),
            _ => None,
        };
        if let Some(tp) = topic
            && !topics.contains(&tp)
        {
            topics.push(tp);
        }
    }
    let item = conversation_json(a, t, true);
    let at = secs(now);
    topics
        .into_iter()
        .map(|topic| {
            let body = json!({
                "type": "notification_event", "app_id": a.id_code,
                "data": {"type": "notification_event_data", "item": item},
                "links": {}, "id": format!("notif_{}", uuidish(sim.next_id())), "topic": topic,
                "delivery_status": "pending", "delivery_attempts": 1, "delivered_at": 0,
                "first_sent_at": at, "created_at": at, "self": null
            });
            (topic.to_owned(), body)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_cursors() {
        assert_eq!(contact_id(255).len(), 24);
        assert_eq!(parse_contact_id(&contact_id(20_000_123)), Some(20_000_123));
        assert_eq!(decode_cursor(&encode_cursor(3, 42)), Some((3, 42)));
        assert_eq!(
            route(&Method::POST, "/conversations/search"),
            Some(Op::Search)
        );
        assert_eq!(
            route(&Method::POST, "/conversations/7/parts"),
            Some(Op::Parts(7))
        );
    }

    #[test]
    fn filters_nest_at_most_twice() {
        let leaf = json!({"field": "open", "operator": "=", "value": true});
        let two = json!({"operator": "AND", "value": [{"operator": "OR", "value": [leaf]}]});
        assert!(parse_filter(&two, 1).is_ok());
        let three = json!({"operator": "AND", "value": [two]});
        assert!(parse_filter(&three, 1).is_err());
    }
}
