//! Classification of Zendesk's non-2xx responses into the contract's `failure`.
//!
//! Zendesk's documented error bodies (platforms.md 1.4):
//! - 401 `{"error":"Couldn't authenticate you"}` (API token / basic) and
//!   `{"error":"invalid_token","error_description":...}` (OAuth): re-authenticate.
//! - 403 `{"error":"Forbidden","description":"You are missing the following required scopes: read"}`:
//!   the OAuth token lacks a scope (re-scope).
//! - 403 `{"error":{"title":"Forbidden","message":"You do not have access to this page..."}}`: the
//!   agent's role (or plan) does not allow it (fix the role, not the credential).
//! - 404 `RecordNotFound`, 422 `RecordInvalid` with `details`, 409 `UpdateConflict`, 400
//!   `IdempotentRequestError`.
//! - 429: text/plain `Number of allowed API requests per minute exceeded` (account limit), or JSON
//!   `APIRateLimitExceeded` (incremental export), with `Retry-After` seconds.
//!
//! Bodies that are not JSON (the text/plain 429, HTML pages from proxies, empty bodies) classify by
//! status alone.

use deskgate_adapter_sdk::prelude::*;
use serde_json::Value;

/// What the failed request was doing: used to name the missing permission when the body does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ctx<'a> {
    /// `GET` a ticket or its comments.
    ReadTicket(&'a str),
    /// The incremental export (list-changed).
    ListChanged,
    /// The search for open tickets (list-open), or the probe's read-only search.
    ListOpen,
    /// `GET /api/v2/users/me.json`.
    WhoAmI,
    /// A ticket update; `part` is "reply", "set-status", "add-tags", "assign" or "resolve".
    Write {
        /// The part or action.
        part: &'a str,
        /// The ticket.
        ticket: &'a str,
    },
    /// The probe's `POST /api/v2/tickets.json`.
    ProbeCreate,
    /// The probe's cleanup `DELETE`.
    ProbeDelete(&'a str),
}

impl Ctx<'_> {
    /// The OAuth scope the request needs (Zendesk: `read`/`write` or the resource scope).
    fn scope(&self) -> &'static str {
        match self {
            Ctx::ReadTicket(_) | Ctx::ListChanged | Ctx::ListOpen => "tickets:read",
            Ctx::WhoAmI => "users:read",
            Ctx::Write { .. } | Ctx::ProbeCreate | Ctx::ProbeDelete(_) => "tickets:write",
        }
    }

    /// What the request was doing, for messages.
    fn what(&self) -> String {
        match self {
            Ctx::ReadTicket(id) => format!("reading ticket {id}"),
            Ctx::ListChanged => "listing changed tickets (incremental export)".to_string(),
            Ctx::ListOpen => "searching open tickets".to_string(),
            Ctx::WhoAmI => "reading the current user".to_string(),
            Ctx::Write { part, ticket } => format!("{part} on ticket {ticket}"),
            Ctx::ProbeCreate => "creating the permission-probe ticket".to_string(),
            Ctx::ProbeDelete(id) => format!("deleting the permission-probe ticket {id}"),
        }
    }

    /// The role privilege the request needs, as reported in `missing` when the 403 is a role one.
    fn role_missing(&self) -> &'static str {
        match self {
            Ctx::ReadTicket(_) | Ctx::ListOpen => "ticket access (agent role)",
            Ctx::ListChanged => "incremental export (admin role)",
            Ctx::WhoAmI => "user profile access",
            Ctx::Write { part: "reply", .. } => "public comments (agent role)",
            Ctx::Write {
                part: "add-tags", ..
            } => "ticket tag editing (agent role)",
            Ctx::Write { part: "assign", .. } => "ticket assignment (agent role)",
            Ctx::Write { .. } => "ticket update (agent role)",
            Ctx::ProbeCreate => "ticket creation (agent role)",
            Ctx::ProbeDelete(_) => "ticket deletion (agent role)",
        }
    }

    /// Concrete steps to grant the role privilege.
    fn role_remediation(&self) -> String {
        const ROLES: &str = "In Zendesk Admin Center > People > Team > Roles, edit the role of the \
                             agent this connection acts as and";
        const OR_ADMIN: &str = "(or connect with an admin's credential)";
        match self {
            Ctx::ReadTicket(_) | Ctx::ListOpen => format!(
                "{ROLES} set Tickets > 'Access' to 'All tickets' (or include the tickets' groups) \
                 {OR_ADMIN}."
            ),
            Ctx::ListChanged => "The incremental export API is admin-only: connect with an \
                                 admin's credential, or in Zendesk Admin Center > People > Team > \
                                 Team members make the connection's user an Admin."
                .to_string(),
            Ctx::WhoAmI => format!(
                "Connect with an agent's or admin's credential; an end user cannot use the API \
                 as an agent {OR_ADMIN}."
            ),
            Ctx::Write { part: "reply", .. } => format!(
                "{ROLES} give it permission to comment on tickets: set 'Comment access' to \
                 'Public and private' {OR_ADMIN}."
            ),
            Ctx::Write {
                part: "add-tags", ..
            } => format!(
                "{ROLES} give it permission to edit tickets: enable 'Edit ticket tags' \
                 {OR_ADMIN}."
            ),
            Ctx::Write { part: "assign", .. } => format!(
                "{ROLES} give it permission to edit tickets: enable 'Edit ticket properties' and \
                 'Assign tickets to any group' {OR_ADMIN}."
            ),
            Ctx::Write { .. } => format!(
                "{ROLES} give it permission to edit and comment on tickets: enable 'Edit ticket \
                 properties' and set 'Comment access' to 'Public and private' {OR_ADMIN}."
            ),
            Ctx::ProbeCreate => format!(
                "{ROLES} give it permission to create and edit tickets {OR_ADMIN}. The permission \
                 probe creates a ticket with the agent as requester and deletes it afterwards."
            ),
            Ctx::ProbeDelete(_) => format!(
                "{ROLES} enable 'Delete tickets' {OR_ADMIN}, then delete the leftover probe \
                 ticket tagged deskgate-probe."
            ),
        }
    }
}

fn scope_remediation(missing: &str) -> String {
    format!(
        "Re-authorize with the missing OAuth scope: in Zendesk Admin Center > Apps and \
         integrations > APIs > OAuth Clients, open this integration's OAuth client and add \
         \"{missing}\" to the client's allowed scopes, then reconnect the connection so Zendesk \
         issues a token with that scope (an issued token keeps the scopes it was granted)."
    )
}

/// At most 300 characters of a body, for messages.
fn excerpt(text: &str) -> String {
    let t = text.trim();
    match t.char_indices().nth(300) {
        Some((i, _)) => format!("{}...", &t[..i]),
        None => t.to_string(),
    }
}

/// The platform's message from a JSON error body, or the body's text.
fn platform_message(status: u16, json: &Value, raw: &[u8]) -> String {
    let s = |v: &Value| v.as_str().map(str::to_string);
    let err = &json["error"];
    let msg = if let Some(e) = s(err) {
        let desc = s(&json["description"]).or_else(|| s(&json["error_description"]));
        Some(match desc {
            Some(d) => format!("{e}: {d}"),
            None => e,
        })
    } else if err.is_object() {
        match (s(&err["title"]), s(&err["message"])) {
            (Some(t), Some(m)) => Some(format!("{t}: {m}")),
            (t, m) => t.or(m),
        }
    } else {
        s(&json["description"])
    };
    match msg {
        Some(m) => m,
        None => {
            let text = excerpt(&String::from_utf8_lossy(raw));
            if text.is_empty() {
                format!("HTTP {status} with an empty body")
            } else {
                text
            }
        }
    }
}

/// The scopes named by "You are missing the following required scopes: a, b", joined by spaces.
fn missing_scopes(description: &str) -> Option<String> {
    let lower = description.to_ascii_lowercase();
    let at = lower.find("required scopes")?;
    let rest = &description[at + "required scopes".len()..];
    let rest = rest.trim_start().strip_prefix(':').unwrap_or(rest);
    let scopes: Vec<&str> = rest
        .split(|c: char| c == ',' || c.is_whitespace())
        .map(|s| s.trim_end_matches('.'))
        .filter(|s| !s.is_empty())
        .collect();
    if scopes.is_empty() {
        None
    } else {
        Some(scopes.join(" "))
    }
}

fn forbidden(json: &Value, message: String, ctx: Ctx<'_>) -> Failure {
    let description = json["description"].as_str().unwrap_or_default();
    if description.to_ascii_lowercase().contains("required scopes") {
        let missing = missing_scopes(description).unwrap_or_else(|| ctx.scope().to_string());
        return fail::forbidden(
            PermissionKind::Scope,
            &missing,
            &scope_remediation(&missing),
            &message,
        );
    }
    if json["error"].as_str() == Some("insufficient_scope") {
        let missing = ctx.scope();
        return fail::forbidden(
            PermissionKind::Scope,
            missing,
            &scope_remediation(missing),
            &message,
        );
    }
    let readable = json["error"].is_object() || json["error"].is_string();
    if !readable {
        let remediation = format!(
            "Zendesk refused {} (403) without a readable reason. If the connection uses OAuth, \
             check that its client's allowed scopes include {} (Admin Center > Apps and \
             integrations > APIs > OAuth Clients). Otherwise: {}",
            ctx.what(),
            ctx.scope(),
            ctx.role_remediation()
        );
        return fail::forbidden(PermissionKind::Role, "unknown", &remediation, &message);
    }
    fail::forbidden(
        PermissionKind::Role,
        ctx.role_missing(),
        &ctx.role_remediation(),
        &message,
    )
}

/// The bucket a 429 names. The per-ticket update limit's wording is UNCONFIRMED (the per-user one
/// reads "You have exceeded the rate limit for updating a single unique user"); the per-account
/// update limit's wording is UNCONFIRMED too, so both are matched loosely.
fn rate_bucket(json: &Value, text: &str, ctx: Ctx<'_>) -> Option<&'static str> {
    let lower = text.to_ascii_lowercase();
    if lower.contains("incremental") {
        return Some("incremental-export");
    }
    if json["error"].as_str() == Some("APIRateLimitExceeded") {
        return Some(if ctx == Ctx::ListChanged {
            "incremental-export"
        } else {
            "account"
        });
    }
    if lower.contains("unique ticket") || lower.contains("single ticket") {
        return Some("ticket-update");
    }
    if lower.contains("api requests per minute exceeded") {
        return Some("account");
    }
    if lower.contains("ticket") && lower.contains("update") {
        return Some("ticket-update-account");
    }
    None
}

fn validation_message(json: &Value, fallback: String) -> String {
    let Some(details) = json["details"].as_object() else {
        return fallback;
    };
    let mut parts = Vec::new();
    // serde_json's map is ordered by key, so the output is deterministic.
    for (field, entries) in details {
        let list = match entries {
            Value::Array(a) => a.clone(),
            other => vec![other.clone()],
        };
        for e in list {
            let text = e["description"]
                .as_str()
                .or_else(|| e["error"].as_str())
                .or_else(|| e.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| e.to_string());
            parts.push(format!("{field}: {text}"));
        }
    }
    if parts.is_empty() {
        fallback
    } else {
        format!("{fallback} ({})", parts.join("; "))
    }
}

/// Classify a non-2xx response to the request described by `ctx`.
pub fn classify(resp: &HttpResponse, ctx: Ctx<'_>) -> Failure {
    let r = Response::new(resp);
    let json = json_body(&resp.body);
    let message = platform_message(resp.status, &json, &resp.body);
    let what = ctx.what();
    match resp.status {
        401 => {
            let code = match json["error"].as_str() {
                Some("Couldn't authenticate you") => "couldnt_authenticate".to_string(),
                Some(e) if !e.is_empty() && !e.contains(' ') => e.to_string(),
                _ => "unauthorized".to_string(),
            };
            fail::unauthenticated(&code, &message)
        }
        403 => forbidden(&json, message, ctx),
        429 => {
            let retry = r.retry_after_ms().or_else(|| {
                r.header_u64("ratelimit-reset")
                    .map(|s| s.saturating_mul(1000))
            });
            let text = String::from_utf8_lossy(&resp.body);
            fail::rate_limited(retry, rate_bucket(&json, &text, ctx), &message)
        }
        404 => fail::not_found(format!("{what}: {message}")),
        400 if json["error"].as_str() == Some("IdempotentRequestError") => fail::permanent(
            format!("{what}: {message} (the idempotency key was reused with different parameters)"),
        ),
        400 | 422 => fail::invalid(format!("{what}: {}", validation_message(&json, message))),
        409 => fail::transient(format!("{what}: {message}")),
        status => fail::by_status(status, format!("{what}: HTTP {status}: {message}")),
    }
}

/// A serializable copy of `Failure`, for adapter state that must carry one between steps.
pub use deskgate_adapter_sdk::state::SavedFailure as StoredFailure;

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(path).expect("fixture")
    }

    fn resp(status: u16, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
        HttpResponse {
            status,
            headers: headers
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            body: body.to_vec(),
        }
    }

    const REPLY: Ctx<'static> = Ctx::Write {
        part: "reply",
        ticket: "42",
    };

    #[test]
    fn couldnt_authenticate_is_unauthenticated() {
        let r = resp(
            401,
            &[("www-authenticate", "Basic realm=\"Web Password\"")],
            &fixture("401_couldnt_authenticate.json"),
        );
        match classify(&r, Ctx::ReadTicket("42")) {
            Failure::Unauthenticated(d) => {
                assert_eq!(d.code, "couldnt_authenticate");
                assert_eq!(d.message, "Couldn't authenticate you");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn invalid_token_is_unauthenticated() {
        let r = resp(401, &[], &fixture("401_invalid_token.json"));
        match classify(&r, REPLY) {
            Failure::Unauthenticated(d) => {
                assert_eq!(d.code, "invalid_token");
                assert!(d.message.contains("expired, revoked, malformed"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unreadable_401_is_still_unauthenticated() {
        for body in [&b""[..], b"<html>Unauthorized</html>"] {
            assert!(matches!(
                classify(&resp(401, &[], body), REPLY),
                Failure::Unauthenticated(d) if d.code == "unauthorized"
            ));
        }
    }

    #[test]
    fn missing_scope_is_forbidden_scope() {
        let r = resp(403, &[], &fixture("403_missing_scope.json"));
        match classify(&r, Ctx::ReadTicket("42")) {
            Failure::Forbidden(d) => {
                assert_eq!(d.kind, PermissionKind::Scope);
                assert_eq!(d.missing, "read");
                assert!(d.remediation.contains("OAuth Clients"));
                assert!(d.remediation.contains("\"read\""));
                assert!(d.remediation.contains("reconnect"));
                assert!(
                    d.message
                        .contains("You are missing the following required scopes: read")
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn several_missing_scopes_are_joined_by_spaces() {
        let body = br#"{"error":"Forbidden","description":"You are missing the following required scopes: tickets:write, write"}"#;
        match classify(&resp(403, &[], body), REPLY) {
            Failure::Forbidden(d) => assert_eq!(d.missing, "tickets:write write"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn role_403_names_the_privilege_of_the_operation() {
        let r = resp(403, &[], &fixture("403_role.json"));
        match classify(
            &r,
            Ctx::Write {
                part: "set-status",
                ticket: "42",
            },
        ) {
            Failure::Forbidden(d) => {
                assert_eq!(d.kind, PermissionKind::Role);
                assert_eq!(d.missing, "ticket update (agent role)");
                assert!(d.remediation.contains("People > Team > Roles"));
                assert!(
                    d.message
                        .starts_with("Forbidden: You do not have access to this page")
                );
            }
            other => panic!("{other:?}"),
        }
        match classify(&r, REPLY) {
            Failure::Forbidden(d) => {
                assert_eq!(d.missing, "public comments (agent role)");
                assert!(d.remediation.contains("Comment access"));
            }
            other => panic!("{other:?}"),
        }
        match classify(&r, Ctx::ListChanged) {
            Failure::Forbidden(d) => assert_eq!(d.missing, "incremental export (admin role)"),
            other => panic!("{other:?}"),
        }
        // The flat variant seen in a fake server classifies the same way.
        let flat = resp(403, &[], &fixture("403_role_flat.json"));
        assert!(matches!(
            classify(&flat, REPLY),
            Failure::Forbidden(d) if d.kind == PermissionKind::Role
        ));
    }

    #[test]
    fn unreadable_403_is_forbidden_role_unknown() {
        for body in [&b""[..], b"<html><body>403 Forbidden</body></html>", b"[]"] {
            match classify(&resp(403, &[("content-type", "text/html")], body), REPLY) {
                Failure::Forbidden(d) => {
                    assert_eq!(d.kind, PermissionKind::Role);
                    assert_eq!(d.missing, "unknown");
                    assert!(d.remediation.contains("tickets:write"));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn not_found() {
        let r = resp(404, &[], &fixture("404_record_not_found.json"));
        assert!(matches!(
            classify(&r, Ctx::ReadTicket("42")),
            Failure::NotFound(m) if m.contains("ticket 42") && m.contains("RecordNotFound")
        ));
    }

    #[test]
    fn validation_errors_are_invalid_with_details() {
        let r = resp(422, &[], &fixture("422_status_closed.json"));
        match classify(
            &r,
            Ctx::Write {
                part: "set-status",
                ticket: "42",
            },
        ) {
            Failure::Invalid(m) => {
                assert!(
                    m.contains("status: Status closed prevents ticket update"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        let r = resp(422, &[], &fixture("422_requester_suspended.json"));
        assert!(matches!(
            classify(&r, Ctx::ProbeCreate),
            Failure::Invalid(m) if m.contains("requester: Requester: Unknown username is suspended.")
        ));
        let r = resp(422, &[], &fixture("422_error_only.json"));
        assert!(matches!(
            classify(&r, REPLY),
            Failure::Invalid(m) if m.contains("You cannot merge Customer Name")
        ));
        let r = resp(422, &[], br#"{"error":"RecordInvalid","details":{"base":[{"error":"X","description":"Y"}],"tags":"bad"}}"#);
        assert!(
            matches!(classify(&r, REPLY), Failure::Invalid(m) if m.contains("base: Y; tags: bad"))
        );
    }

    #[test]
    fn conflict_is_transient_and_idempotency_mismatch_permanent() {
        let r = resp(409, &[], &fixture("409_update_conflict.json"));
        assert!(
            matches!(classify(&r, REPLY), Failure::Transient(m) if m.contains("UpdateConflict"))
        );
        let r = resp(400, &[], &fixture("400_idempotent_request_error.json"));
        assert!(matches!(
            classify(&r, Ctx::ProbeCreate),
            Failure::Permanent(m) if m.contains("IdempotentRequestError")
        ));
        let r = resp(400, &[], br#"{"error":"InvalidValue","description":"bad"}"#);
        assert!(matches!(classify(&r, REPLY), Failure::Invalid(_)));
    }

    #[test]
    fn account_429_is_text_plain() {
        let r = resp(
            429,
            &[
                ("content-type", "text/plain"),
                ("retry-after", "1"),
                ("x-rate-limit", "700"),
                ("x-rate-limit-remaining", "0"),
                ("zendesk-api-version", "2022-01-01"),
            ],
            &fixture("429_account.txt"),
        );
        match classify(
            &r,
            Ctx::Write {
                part: "set-status",
                ticket: "42",
            },
        ) {
            Failure::RateLimited(d) => {
                assert_eq!(d.retry_after_ms, Some(1000));
                assert_eq!(d.bucket.as_deref(), Some("account"));
                assert_eq!(
                    d.message,
                    "Number of allowed API requests per minute exceeded"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn incremental_export_429_is_json() {
        let r = resp(
            429,
            &[("retry-after", "7")],
            &fixture("429_incremental_export.json"),
        );
        match classify(&r, Ctx::ListChanged) {
            Failure::RateLimited(d) => {
                assert_eq!(d.retry_after_ms, Some(7000));
                assert_eq!(d.bucket.as_deref(), Some("incremental-export"));
                assert!(d.message.starts_with("APIRateLimitExceeded"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ticket_update_429_reports_retry_after() {
        let r = resp(429, &[("retry-after", "30")], b"");
        match classify(&r, REPLY) {
            Failure::RateLimited(d) => {
                assert_eq!(d.retry_after_ms, Some(30_000));
                assert_eq!(d.bucket, None);
            }
            other => panic!("{other:?}"),
        }
        let r = resp(
            429,
            &[],
            br#"{"error":"TooManyRequests","description":"You have exceeded the rate limit for updating a single unique ticket."}"#,
        );
        assert!(matches!(
            classify(&r, REPLY),
            Failure::RateLimited(d) if d.bucket.as_deref() == Some("ticket-update") && d.retry_after_ms.is_none()
        ));
        // Without Retry-After, the reset header stands in.
        let r = resp(
            429,
            &[("ratelimit-reset", "41"), ("retry-after", "soon")],
            b"",
        );
        assert!(matches!(
            classify(&r, REPLY),
            Failure::RateLimited(d) if d.retry_after_ms == Some(41_000)
        ));
    }

    #[test]
    fn server_errors_and_html_are_transient() {
        for status in [500, 502, 503, 504, 408] {
            let r = resp(
                status,
                &[("content-type", "text/html")],
                b"<html><h1>Bad gateway</h1></html>",
            );
            assert!(
                matches!(classify(&r, REPLY), Failure::Transient(_)),
                "{status}"
            );
        }
        assert!(matches!(
            classify(&resp(418, &[], b"\xff\xfe"), REPLY),
            Failure::Permanent(_)
        ));
    }

    #[test]
    fn stored_failures_round_trip() {
        let all = [
            fail::unauthenticated("c", "m"),
            fail::forbidden(PermissionKind::Scope, "read", "r", "m"),
            fail::forbidden(PermissionKind::Plan, "x", "r", "m"),
            fail::rate_limited(Some(5), Some("account"), "m"),
            fail::not_found("n"),
            fail::invalid("i"),
            fail::transient("t"),
            fail::permanent("p"),
        ];
        for f in all {
            let stored = StoredFailure::from(&f);
            let json = serde_json::to_string(&stored).unwrap();
            let back: StoredFailure = serde_json::from_str(&json).unwrap();
            assert_eq!(format!("{:?}", back.to_failure()), format!("{f:?}"));
        }
    }
}
