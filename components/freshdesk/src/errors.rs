//! Classification of Freshdesk's non-2xx responses into the contract's `failure`.
//!
//! Freshdesk has no OAuth scopes: what an API key may do is what its agent's role allows. So a 403
//! never names what is missing; `{"code":"access_denied"}` is all we get. The classifier is told
//! which part of which operation failed ([`Part`]) and names the role privilege that part needs.
//! The privilege names are the labels of Freshdesk's role editor as we remember them; they are
//! UNCONFIRMED (platforms.md 2.2), so the remediation always also says "or use the key of an agent
//! who has it", which works whatever the label is.
//!
//! | status | body | failure |
//! |---|---|---|
//! | 401 | `{"code":"invalid_credentials",...}` | unauthenticated |
//! | 403 | `require_feature` (top level or `errors[]`) | forbidden, plan |
//! | 403 | `access_denied`, anything else, or unreadable | forbidden, role |
//! | 400 | `{"description":"Validation failed","errors":[...]}` | invalid (field messages) |
//! | 404 | empty or `{}` | not-found |
//! | 429 | anything (UNCONFIRMED) | rate-limited, `Retry-After` |
//! | 408, 409, 5xx | | transient |
//! | 405, 415, other | | permanent |

use crate::model::FdError;
use deskgate_adapter_sdk::prelude::*;

/// What the failing request was for; decides the privilege named in a 403.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Reading a ticket, its conversations, or listing tickets.
    ReadTickets,
    /// The search API (`list-open`).
    Search,
    /// `POST /tickets/{id}/reply`.
    Reply,
    /// `PUT /tickets/{id}` with `status`.
    SetStatus,
    /// `PUT /tickets/{id}` with `tags` (or the read before it).
    AddTags,
    /// `PUT /tickets/{id}` with `responder_id` / `group_id`.
    Assign,
    /// `POST /tickets` (the probe ticket).
    CreateTicket,
    /// `DELETE /tickets/{id}` (probe cleanup).
    DeleteTicket,
    /// `GET /agents/me`.
    WhoAmI,
}

impl Part {
    /// The role privilege the part needs, as Freshdesk's role editor labels it (UNCONFIRMED).
    pub fn privilege(self) -> &'static str {
        match self {
            Part::ReadTickets | Part::Search => "View tickets",
            Part::Reply => "Reply to a ticket",
            Part::SetStatus | Part::AddTags | Part::Assign => "Edit ticket properties",
            Part::CreateTicket => "Create a ticket",
            Part::DeleteTicket => "Delete a ticket",
            Part::WhoAmI => "unknown",
        }
    }
}

/// Where a role is fixed, for every remediation.
const ROLES_PAGE: &str = "Admin > Team > Roles (older accounts: Admin > Agents > Roles)";

fn role_remediation(privilege: &str) -> String {
    if privilege == "unknown" {
        format!(
            "Check the role of the agent who owns the API key in Freshdesk {ROLES_PAGE}, or use the \
             API key of an agent (for example an account admin) whose role allows this call"
        )
    } else {
        format!(
            "In Freshdesk {ROLES_PAGE}, edit the role of the agent who owns the API key and allow \
             '{privilege}' (and a ticket scope that covers the ticket), or use the API key of an \
             agent whose role has it"
        )
    }
}

const PLAN_REMEDIATION: &str = "The Freshdesk plan does not include a feature this call needs \
    (require_feature): upgrade the plan under Admin > Account > Plans & Billing, or enable the \
    feature for the account";

/// Classify a non-2xx response. `part` is what the request was for; `object` names the object
/// for not-found messages (e.g. "ticket 42").
pub fn classify(resp: &HttpResponse, part: Part, object: &str) -> Failure {
    let r = Response::new(resp);
    let status = resp.status;
    // Unreadable bodies (empty, HTML from a proxy, text) classify by status alone.
    let body: Option<FdError> = serde_json::from_slice(&resp.body).ok();
    let detail = body.as_ref().map(describe).filter(|s| !s.is_empty());
    let said = |fallback: &str| detail.clone().unwrap_or_else(|| fallback.to_string());

    if let Some(b) = &body
        && matches!(status, 400 | 403)
        && let Some(missing) = required_feature(b)
    {
        return fail::forbidden(
            PermissionKind::Plan,
            &missing,
            PLAN_REMEDIATION,
            &said("feature not on the plan"),
        );
    }

    match status {
        401 => {
            let code = body
                .as_ref()
                .and_then(|b| b.code.clone())
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| "invalid_credentials".to_string());
            let message = body
                .as_ref()
                .and_then(|b| b.message.clone())
                .unwrap_or_else(|| "Freshdesk did not accept the API key (HTTP 401)".to_string());
            fail::unauthenticated(&code, &message)
        }
        403 => {
            let privilege = if body.is_some() {
                part.privilege()
            } else {
                "unknown"
            };
            fail::forbidden(
                PermissionKind::Role,
                privilege,
                &role_remediation(privilege),
                &said("Freshdesk refused the call (HTTP 403, access denied)"),
            )
        }
        429 => {
            // Freshdesk's 429 does not name the bucket. An exhausted account counter says it was
            // the per-minute account limit; otherwise a per-endpoint one (ticket create/update,
            // tickets list) ran out and we cannot tell which.
            let bucket = (r.header_u64("x-ratelimit-remaining") == Some(0)).then_some("account");
            fail::rate_limited(
                r.retry_after_ms(),
                bucket,
                &said("Freshdesk rate limit reached (HTTP 429)"),
            )
        }
        404 => fail::not_found(format!(
            "Freshdesk has no {object} (HTTP 404){}",
            detail.map(|d| format!(": {d}")).unwrap_or_default()
        )),
        400 => fail::invalid(format!(
            "Freshdesk refused the request: {}",
            said("HTTP 400")
        )),
        405 | 415 => fail::permanent(format!(
            "Freshdesk refused the request (HTTP {status}): {}",
            said("method or content type not supported")
        )),
        _ => fail::by_status(
            status,
            format!("Freshdesk answered HTTP {status}: {}", said("no details")),
        ),
    }
}

/// The feature a `require_feature` error names (its field), or "require_feature" when it names
/// none.
fn required_feature(b: &FdError) -> Option<String> {
    if b.code.as_deref() == Some("require_feature") {
        return Some("require_feature".to_string());
    }
    b.errors
        .iter()
        .flatten()
        .find(|e| e.code.as_deref() == Some("require_feature"))
        .map(|e| {
            e.field
                .clone()
                .filter(|f| !f.is_empty())
                .unwrap_or_else(|| "require_feature".to_string())
        })
}

/// One line out of Freshdesk's error envelope: "message (code)" or
/// "Validation failed: field: message (code); ...".
fn describe(b: &FdError) -> String {
    let mut out = String::new();
    if let Some(m) = &b.message {
        out.push_str(m);
        if let Some(c) = &b.code {
            out.push_str(&format!(" ({c})"));
        }
    } else if let Some(c) = &b.code {
        out.push_str(c);
    }
    if let Some(d) = &b.description {
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(d);
    }
    let fields: Vec<String> = b
        .errors
        .iter()
        .flatten()
        .map(|e| {
            let mut s = String::new();
            if let Some(f) = &e.field {
                s.push_str(f);
                s.push_str(": ");
            }
            s.push_str(e.message.as_deref().unwrap_or("invalid"));
            if let Some(c) = &e.code {
                s.push_str(&format!(" ({c})"));
            }
            s
        })
        .collect();
    if !fields.is_empty() {
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&fields.join("; "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn invalid_credentials_is_unauthenticated() {
        let f = classify(
            &resp(401, &[], &fixture("error_401_invalid_credentials.json")),
            Part::Reply,
            "ticket 1",
        );
        match f {
            Failure::Unauthenticated(d) => {
                assert_eq!(d.code, "invalid_credentials");
                assert_eq!(
                    d.message,
                    "You have to be logged in to perform this action."
                );
            }
            other => panic!("{other:?}"),
        }
        // Empty 401 still means re-authenticate.
        assert!(matches!(
            classify(&resp(401, &[], b""), Part::Reply, "x"),
            Failure::Unauthenticated(_)
        ));
    }

    #[test]
    fn access_denied_names_the_privilege_of_the_part() {
        let body = fixture("error_403_access_denied.json");
        for (part, privilege) in [
            (Part::Reply, "Reply to a ticket"),
            (Part::SetStatus, "Edit ticket properties"),
            (Part::AddTags, "Edit ticket properties"),
            (Part::Assign, "Edit ticket properties"),
            (Part::ReadTickets, "View tickets"),
            (Part::CreateTicket, "Create a ticket"),
            (Part::DeleteTicket, "Delete a ticket"),
        ] {
            match classify(&resp(403, &[], &body), part, "ticket 1") {
                Failure::Forbidden(d) => {
                    assert_eq!(d.kind, PermissionKind::Role);
                    assert_eq!(d.missing, privilege);
                    assert!(
                        d.remediation.contains("Admin > Team > Roles"),
                        "{}",
                        d.remediation
                    );
                    assert!(d.remediation.contains(privilege));
                    assert!(
                        d.message
                            .contains("You are not authorized to perform this action.")
                    );
                    assert!(d.message.contains("access_denied"));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn unreadable_403_is_still_forbidden() {
        for body in [&b""[..], b"<html><body>Forbidden</body></html>", b"nope"] {
            match classify(&resp(403, &[], body), Part::Reply, "ticket 1") {
                Failure::Forbidden(d) => {
                    assert_eq!(d.kind, PermissionKind::Role);
                    assert_eq!(d.missing, "unknown");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn require_feature_is_a_plan_problem() {
        let top = br#"{"code":"require_feature","message":"The Custom Ticket Status feature is not supported in your plan."}"#;
        match classify(&resp(403, &[], top), Part::SetStatus, "ticket 1") {
            Failure::Forbidden(d) => {
                assert_eq!(d.kind, PermissionKind::Plan);
                assert!(d.remediation.contains("Plans & Billing"));
                assert!(d.message.contains("not supported in your plan"));
            }
            other => panic!("{other:?}"),
        }
        let nested = br#"{"description":"Validation failed","errors":[{"field":"product_id","message":"The multi_product feature(s) is/are not supported in your plan.","code":"require_feature"}]}"#;
        for status in [400, 403] {
            match classify(&resp(status, &[], nested), Part::SetStatus, "ticket 1") {
                Failure::Forbidden(d) => {
                    assert_eq!(d.kind, PermissionKind::Plan);
                    assert_eq!(d.missing, "product_id");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn validation_lists_field_messages() {
        let cases = [
            (
                "error_400_invalid_email.json",
                "email: It should be a valid email address (invalid_value)",
            ),
            (
                "error_400_invalid_field.json",
                "priorty: Unexpected/invalid field in request (invalid_field)",
            ),
            (
                "error_400_page_limit.json",
                "page: You cannot access tickets beyond the 300th page. Please provide a smaller page number. (invalid_value)",
            ),
        ];
        for (file, want) in cases {
            match classify(
                &resp(400, &[], &fixture(file)),
                Part::ReadTickets,
                "ticket 1",
            ) {
                Failure::Invalid(m) => {
                    assert!(m.contains("Validation failed"), "{m}");
                    assert!(m.contains(want), "{m}");
                }
                other => panic!("{file}: {other:?}"),
            }
        }
        let top = br#"{"code":"invalid_json","message":"Request body has invalid json format"}"#;
        match classify(&resp(400, &[], top), Part::Reply, "ticket 1") {
            Failure::Invalid(m) => assert!(m.contains("invalid json format (invalid_json)"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(&resp(400, &[], b""), Part::Reply, "x"),
            Failure::Invalid(_)
        ));
    }

    #[test]
    fn not_found_with_empty_or_empty_object_body() {
        for body in [&b""[..], b"{}", b"<html>404</html>"] {
            match classify(&resp(404, &[], body), Part::ReadTickets, "ticket 42") {
                Failure::NotFound(m) => assert!(m.contains("ticket 42"), "{m}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn rate_limited_reads_retry_after() {
        let r = resp(
            429,
            &[
                ("retry-after", "37"),
                ("x-ratelimit-total", "400"),
                ("x-ratelimit-remaining", "0"),
            ],
            br#"{"message":"You have exceeded the limit of requests per minute"}"#,
        );
        match classify(&r, Part::SetStatus, "ticket 1") {
            Failure::RateLimited(d) => {
                assert_eq!(d.retry_after_ms, Some(37_000));
                assert_eq!(d.bucket.as_deref(), Some("account"));
                assert!(d.message.contains("exceeded"));
            }
            other => panic!("{other:?}"),
        }
        // No body, no headers: still rate-limited, bucket unknown.
        match classify(&resp(429, &[], b""), Part::SetStatus, "ticket 1") {
            Failure::RateLimited(d) => {
                assert_eq!(d.retry_after_ms, None);
                assert_eq!(d.bucket, None);
            }
            other => panic!("{other:?}"),
        }
        // Remaining budget left: a per-endpoint bucket ran out, which one is unknown.
        let r = resp(
            429,
            &[("Retry-After", "5"), ("X-Ratelimit-Remaining", "120")],
            b"Too Many Requests",
        );
        match classify(&r, Part::SetStatus, "ticket 1") {
            Failure::RateLimited(d) => {
                assert_eq!(d.retry_after_ms, Some(5000));
                assert_eq!(d.bucket, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn server_and_conflict_errors_are_transient() {
        for status in [500, 502, 503, 504, 408, 409] {
            assert!(
                matches!(
                    classify(&resp(status, &[], b"<html>oops</html>"), Part::Reply, "x"),
                    Failure::Transient(_)
                ),
                "{status}"
            );
        }
        let conflict = br#"{"description":"Validation failed","errors":[{"field":"status","message":"inconsistent","code":"inconsistent_state"}]}"#;
        assert!(matches!(
            classify(&resp(409, &[], conflict), Part::SetStatus, "x"),
            Failure::Transient(_)
        ));
    }

    #[test]
    fn method_and_content_type_errors_are_permanent() {
        for status in [405, 415, 418, 426] {
            assert!(
                matches!(
                    classify(&resp(status, &[], b""), Part::Reply, "x"),
                    Failure::Permanent(_)
                ),
                "{status}"
            );
        }
    }
}
