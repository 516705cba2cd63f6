//! Constructors for each case of the contract's `failure` variant.
//!
//! The host decides policy from the case alone, so pick it carefully: `unauthenticated` makes the
//! host refresh or suspend the connection for re-authentication, `forbidden` makes it alert
//! "re-scope" and never touch the credential, `rate-limited` feeds the budget, `transient` is
//! retried, and `not-found`, `invalid` and `permanent` go straight back to the app.

use crate::bindings::deskgate::adapter::types::{
    Failure, ForbiddenDetail, PermissionKind, RateLimitedDetail, UnauthenticatedDetail,
};

/// The credential was not accepted: expired, revoked, malformed or unknown.
pub fn unauthenticated(code: &str, message: &str) -> Failure {
    Failure::Unauthenticated(UnauthenticatedDetail {
        code: code.to_string(),
        message: message.to_string(),
    })
}

/// The credential is valid but lacks `missing`; `remediation` tells a person how to grant it.
pub fn forbidden(kind: PermissionKind, missing: &str, remediation: &str, message: &str) -> Failure {
    Failure::Forbidden(ForbiddenDetail {
        kind,
        missing: missing.to_string(),
        remediation: remediation.to_string(),
        message: message.to_string(),
    })
}

/// The platform's rate limit was hit.
pub fn rate_limited(retry_after_ms: Option<u64>, bucket: Option<&str>, message: &str) -> Failure {
    Failure::RateLimited(RateLimitedDetail {
        retry_after_ms,
        bucket: bucket.map(str::to_string),
        message: message.to_string(),
    })
}

/// The object does not exist.
pub fn not_found(message: impl Into<String>) -> Failure {
    Failure::NotFound(message.into())
}

/// The request was refused as invalid.
pub fn invalid(message: impl Into<String>) -> Failure {
    Failure::Invalid(message.into())
}

/// A passing fault; retrying may help.
pub fn transient(message: impl Into<String>) -> Failure {
    Failure::Transient(message.into())
}

/// Retrying cannot help.
pub fn permanent(message: impl Into<String>) -> Failure {
    Failure::Permanent(message.into())
}

/// The usual classification of a status the adapter has no platform-specific rule for:
/// 5xx, 408 and 409 are transient, 404 is not-found, 400 and 422 are invalid, the rest permanent.
pub fn by_status(status: u16, message: impl Into<String>) -> Failure {
    let message = message.into();
    match status {
        404 | 410 => Failure::NotFound(message),
        400 | 422 => Failure::Invalid(message),
        408 | 409 | 423 | 500..=599 => Failure::Transient(message),
        _ => Failure::Permanent(message),
    }
}
