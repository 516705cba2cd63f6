//! Classification of Intercom's non-2xx responses into the contract's `failure`.
//!
//! Intercom answers errors with an `error.list`:
//! `{"type":"error.list","request_id":"..","errors":[{"code":"..","message":"..","field":"..","data":{..}}]}`.
//! The first error's `code` decides the case where the status alone does not; bodies that are not
//! JSON (proxy pages, empty bodies) classify by status. The caller passes the Intercom permission
//! the request needs, so a 403 that does not name the missing permission still says which one to
//! grant.

use crate::model::ErrorList;
use deskgate_adapter_sdk::prelude::*;
use serde_json::Value;

/// Developer Hub permission names (as the Developer Hub shows them) each request needs.
pub mod need {
    /// `GET /conversations/{id}`, `POST /conversations/search`.
    pub const READ_CONVERSATIONS: &str = "Read conversations";
    /// Replies and `POST /conversations/{id}/parts` (close, open, assignment), probe conversations.
    pub const WRITE_CONVERSATIONS: &str = "Write conversations";
    /// `POST /tags`, `POST /conversations/{id}/tags`.
    pub const WRITE_TAGS: &str = "Write tags";
    /// `GET /me`. UNCONFIRMED which permission, if any, `/me` checks; "Read one admin" is the
    /// closest Developer Hub permission.
    pub const READ_ONE_ADMIN: &str = "Read one admin";
    /// `POST /contacts`, `DELETE /contacts/{id}` (the probe's throwaway lead).
    pub const WRITE_USERS: &str = "Read and write users";
}

/// Where to grant a missing Developer Hub permission.
pub fn scope_remediation(missing: &str) -> String {
    format!(
        "In the Intercom Developer Hub open your app > Configure > Authentication, tick the \
         \"{missing}\" permission and save; then have a workspace admin re-install / re-authorize \
         the app so its access token carries the new permission (public apps: permission changes \
         are reviewed on publication)."
    )
}

const PLAN_REMEDIATION: &str = "The Intercom workspace's plan or subscription does not include \
    this API feature: a workspace admin must upgrade the plan or reactivate the subscription in \
    Intercom (Settings > Workspace > Billing / Subscription), then retry.";

/// Error codes that mean the request named an admin or team Intercom cannot use; the request is
/// wrong, not the conversation missing.
const INVALID_TARGET_CODES: &[&str] = &[
    "admin_not_found",
    "team_not_found",
    "team_unavailable",
    "conversation_attribute_not_found",
];

/// Classify a non-2xx response. `need` is the permission the request needs (see [`need`]).
pub fn classify(resp: &HttpResponse, need: &str) -> Failure {
    let status = resp.status;
    let body = json_body(&resp.body);
    let list: Option<ErrorList> = match &body {
        Value::Object(o) if o.contains_key("errors") => serde_json::from_value(body.clone()).ok(),
        _ => None,
    };
    let errors = list.as_ref().map(|l| l.errors.as_slice()).unwrap_or(&[]);
    let first = errors.first();
    let code = first.and_then(|e| e.code.clone()).unwrap_or_default();
    let platform_message = {
        let msgs: Vec<&str> = errors.iter().filter_map(|e| e.message.as_deref()).collect();
        if msgs.is_empty() {
            snippet(&resp.body)
        } else {
            msgs.join("; ")
        }
    };
    let detail = describe(
        status,
        errors,
        list.as_ref().and_then(|l| l.request_id.as_deref()),
        &resp.body,
    );

    if INVALID_TARGET_CODES.contains(&code.as_str()) {
        return Failure::Invalid(detail);
    }
    match status {
        401 => fail::unauthenticated(
            if code.is_empty() {
                "unauthorized"
            } else {
                &code
            },
            &platform_message,
        ),
        403 => match code.as_str() {
            "api_plan_restricted" => fail::forbidden(
                PermissionKind::Plan,
                if platform_message.is_empty() {
                    "api_plan_restricted"
                } else {
                    &platform_message
                },
                PLAN_REMEDIATION,
                &platform_message,
            ),
            // Unreadable 403: still forbidden, never unauthenticated.
            "" => fail::forbidden(
                PermissionKind::Role,
                "unknown",
                &format!(
                    "Intercom refused the request without saying why. Check the workspace's plan and \
                     the app's permissions; this request needs \"{need}\". {}",
                    scope_remediation(need)
                ),
                &platform_message,
            ),
            // action_forbidden and any other 403 code: Intercom access tokens have no roles, only
            // the app's permissions.
            _ => {
                let missing = first
                    .and_then(|e| required_permissions(&e.data))
                    .unwrap_or_else(|| need.to_string());
                fail::forbidden(
                    PermissionKind::Scope,
                    &missing,
                    &scope_remediation(&missing),
                    &platform_message,
                )
            }
        },
        404 => Failure::NotFound(detail),
        429 => fail::rate_limited(Response::new(resp).retry_after_ms(), Some("app"), &detail),
        400 | 422 => Failure::Invalid(detail),
        408 | 409 | 423 | 500..=599 => Failure::Transient(detail),
        _ => Failure::Permanent(detail),
    }
}

/// `data.required_permissions`, in whichever shape it comes (UNCONFIRMED: a list of names, a list
/// of objects with a name, or one string), joined with ", ".
fn required_permissions(data: &Value) -> Option<String> {
    let rp = data.get("required_permissions")?;
    let names: Vec<String> = match rp {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .filter_map(|i| match i {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => ["name", "permission", "scope"]
                    .iter()
                    .find_map(|k| o.get(*k).and_then(Value::as_str))
                    .map(str::to_string),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let names: Vec<String> = names.into_iter().filter(|n| !n.trim().is_empty()).collect();
    if names.is_empty() {
        None
    } else {
        Some(names.join(", "))
    }
}

/// A one-line description for the write log: status, codes, messages, fields and request id.
fn describe(
    status: u16,
    errors: &[crate::model::ErrorItem],
    request_id: Option<&str>,
    raw: &[u8],
) -> String {
    let mut out = format!("Intercom answered HTTP {status}");
    if errors.is_empty() {
        let s = snippet(raw);
        if !s.is_empty() {
            out.push_str(": ");
            out.push_str(&s);
        }
    } else {
        let parts: Vec<String> = errors
            .iter()
            .map(|e| {
                let mut p = e.code.clone().unwrap_or_else(|| "error".to_string());
                if let Some(m) = e.message.as_deref().filter(|m| !m.is_empty()) {
                    p.push_str(": ");
                    p.push_str(m);
                }
                if let Some(f) = e.field.as_deref().filter(|f| !f.is_empty()) {
                    p.push_str(&format!(" (field {f})"));
                }
                p
            })
            .collect();
        out.push_str(": ");
        out.push_str(&parts.join("; "));
    }
    if let Some(id) = request_id {
        out.push_str(&format!(" [request_id {id}]"));
    }
    out
}

/// The start of a non-JSON body, on one line, at most 200 characters.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    one_line.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, body: &str, headers: &[(&str, &str)]) -> HttpResponse {
        HttpResponse {
            status,
            headers: headers
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn unauthorized_is_unauthenticated() {
        let f = classify(
            &resp(401, &fixture("error_401.json"), &[]),
            need::READ_CONVERSATIONS,
        );
        match f {
            Failure::Unauthenticated(d) => {
                assert_eq!(d.code, "unauthorized");
                assert_eq!(d.message, "Access Token Invalid");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_documented_auth_code_is_unauthenticated() {
        for code in [
            "token_revoked",
            "token_blocked",
            "token_not_found",
            "token_unauthorized",
            "token_expired",
            "missing_authorization",
        ] {
            let body = format!(
                r#"{{"type":"error.list","request_id":"r","errors":[{{"code":"{code}","message":"m"}}]}}"#
            );
            match classify(&resp(401, &body, &[]), need::READ_CONVERSATIONS) {
                Failure::Unauthenticated(d) => assert_eq!(d.code, code),
                other => panic!("{code}: {other:?}"),
            }
        }
        // A 401 without a readable body still asks for re-authentication.
        match classify(&resp(401, "", &[]), need::READ_CONVERSATIONS) {
            Failure::Unauthenticated(d) => assert_eq!(d.code, "unauthorized"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn action_forbidden_names_the_required_permission() {
        let f = classify(
            &resp(403, &fixture("error_403_action_forbidden.json"), &[]),
            need::READ_CONVERSATIONS,
        );
        match f {
            Failure::Forbidden(d) => {
                assert_eq!(d.kind, PermissionKind::Scope);
                assert_eq!(d.missing, "Write conversations");
                assert!(
                    d.remediation.contains("Configure > Authentication"),
                    "{}",
                    d.remediation
                );
                assert!(d.remediation.contains("\"Write conversations\""));
                assert!(d.remediation.contains("re-authorize"));
                assert_eq!(
                    d.message,
                    "You do not have permission to perform this action."
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn action_forbidden_without_data_infers_from_the_operation() {
        let f = classify(
            &resp(403, &fixture("error_403_action_forbidden_nodata.json"), &[]),
            need::WRITE_TAGS,
        );
        match f {
            Failure::Forbidden(d) => {
                assert_eq!(d.kind, PermissionKind::Scope);
                assert_eq!(d.missing, "Write tags");
                assert!(d.remediation.contains("\"Write tags\""));
            }
            other => panic!("{other:?}"),
        }
        // Objects in required_permissions are read by name.
        let body = r#"{"type":"error.list","errors":[{"code":"action_forbidden","data":{"required_permissions":[{"name":"Read tags"},{"name":"Write tags"}]}}]}"#;
        match classify(&resp(403, body, &[]), need::WRITE_CONVERSATIONS) {
            Failure::Forbidden(d) => assert_eq!(d.missing, "Read tags, Write tags"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn plan_restriction_is_forbidden_plan() {
        let f = classify(
            &resp(403, &fixture("error_403_plan.json"), &[]),
            need::READ_CONVERSATIONS,
        );
        match f {
            Failure::Forbidden(d) => {
                assert_eq!(d.kind, PermissionKind::Plan);
                assert_eq!(d.message, "Active subscription needed.");
                assert!(d.remediation.contains("upgrade the plan"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unreadable_403_is_forbidden_role_unknown() {
        for body in ["", "<html>Forbidden</html>", "{\"weird\":true}"] {
            match classify(&resp(403, body, &[]), need::WRITE_CONVERSATIONS) {
                Failure::Forbidden(d) => {
                    assert_eq!(d.kind, PermissionKind::Role);
                    assert_eq!(d.missing, "unknown");
                    assert!(d.remediation.contains("Write conversations"));
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn not_found() {
        match classify(
            &resp(404, &fixture("error_404.json"), &[]),
            need::READ_CONVERSATIONS,
        ) {
            Failure::NotFound(m) => {
                assert!(m.contains("not_found: Resource Not Found"), "{m}");
                assert!(m.contains("request_id 8c288c4f"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        match classify(
            &resp(404, &fixture("error_envelope.json"), &[]),
            need::READ_CONVERSATIONS,
        ) {
            Failure::NotFound(m) => assert!(m.contains("No such user_id[314159]"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn validation_errors_are_invalid_with_fields() {
        match classify(
            &resp(422, &fixture("error_422.json"), &[]),
            need::WRITE_CONVERSATIONS,
        ) {
            Failure::Invalid(m) => assert!(
                m.contains("parameter_invalid: Body is required (field body)"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        match classify(
            &resp(400, &fixture("error_400_tag.json"), &[]),
            need::WRITE_TAGS,
        ) {
            Failure::Invalid(m) => assert!(m.contains("invalid tag parameters"), "{m}"),
            other => panic!("{other:?}"),
        }
        for code in [
            "unprocessable_entity",
            "data_invalid",
            "parameter_not_found",
            "type_mismatch",
        ] {
            let body = format!(r#"{{"type":"error.list","errors":[{{"code":"{code}"}}]}}"#);
            assert!(matches!(
                classify(&resp(422, &body, &[]), need::WRITE_CONVERSATIONS),
                Failure::Invalid(_)
            ));
        }
    }

    #[test]
    fn unusable_admin_or_team_is_invalid_whatever_the_status() {
        match classify(
            &resp(400, &fixture("error_team_unavailable.json"), &[]),
            need::WRITE_CONVERSATIONS,
        ) {
            Failure::Invalid(m) => assert!(m.contains("team is deprecated"), "{m}"),
            other => panic!("{other:?}"),
        }
        let body = r#"{"type":"error.list","errors":[{"code":"admin_not_found","message":"Admin not found"}]}"#;
        assert!(matches!(
            classify(&resp(404, body, &[]), need::WRITE_CONVERSATIONS),
            Failure::Invalid(_)
        ));
    }

    #[test]
    fn conflicts_and_server_errors_are_transient() {
        assert!(matches!(
            classify(
                &resp(409, &fixture("error_409.json"), &[]),
                need::WRITE_USERS
            ),
            Failure::Transient(_)
        ));
        let f = classify(
            &resp(502, &fixture("error_502.html"), &[]),
            need::READ_CONVERSATIONS,
        );
        match f {
            Failure::Transient(m) => assert!(m.contains("502 Bad Gateway"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(&resp(500, "", &[]), need::READ_CONVERSATIONS),
            Failure::Transient(_)
        ));
        assert!(matches!(
            classify(&resp(408, "", &[]), need::READ_CONVERSATIONS),
            Failure::Transient(_)
        ));
        assert!(matches!(
            classify(&resp(405, "", &[]), need::READ_CONVERSATIONS),
            Failure::Permanent(_)
        ));
    }

    #[test]
    fn rate_limited_with_and_without_retry_after() {
        let headers = [
            ("x-ratelimit-limit", "100"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "1487332520"),
        ];
        match classify(
            &resp(429, &fixture("error_429.json"), &headers),
            need::READ_CONVERSATIONS,
        ) {
            Failure::RateLimited(d) => {
                assert_eq!(d.retry_after_ms, None);
                assert_eq!(d.bucket.as_deref(), Some("app"));
                assert!(d.message.contains("rate_limit_exceeded"));
            }
            other => panic!("{other:?}"),
        }
        match classify(
            &resp(429, "Too Many Requests", &[("Retry-After", "3")]),
            need::READ_CONVERSATIONS,
        ) {
            Failure::RateLimited(d) => assert_eq!(d.retry_after_ms, Some(3000)),
            other => panic!("{other:?}"),
        }
        let body = r#"{"type":"error.list","errors":[{"code":"too_many_requests"}]}"#;
        assert!(matches!(
            classify(&resp(429, body, &[]), need::READ_CONVERSATIONS),
            Failure::RateLimited(_)
        ));
    }

    #[test]
    fn garbage_bodies_do_not_panic() {
        for body in [
            "\u{0}\u{1}",
            "{",
            "[]",
            "null",
            "{\"errors\":\"nope\"}",
            "{\"errors\":[1,2]}",
        ] {
            for status in [400, 401, 403, 404, 418, 429, 500] {
                let _ = classify(&resp(status, body, &[]), need::READ_CONVERSATIONS);
            }
        }
    }
}
