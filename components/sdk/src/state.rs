//! Carrying results between the steps of a multi-request operation.
//!
//! Adapters keep no memory between `start` and `resume`: whatever a later step needs travels in
//! the state string. Probes and multi-part writes need to carry failures (a capability refused at
//! step 3 is reported at the end), and the generated [`Failure`] has no serde support, so
//! [`SavedFailure`] is its serializable twin.

use crate::bindings::deskgate::adapter::types::{Failure, PermissionKind};
use crate::fail;
use serde::{Deserialize, Serialize};

/// A [`Failure`] that survives the trip through a state string, losslessly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "failure", rename_all = "kebab-case")]
pub enum SavedFailure {
    /// `unauthenticated`.
    Unauthenticated {
        /// The platform's code.
        code: String,
        /// The platform's message.
        message: String,
    },
    /// `forbidden`.
    Forbidden {
        /// "scope", "role" or "plan".
        kind: String,
        /// The missing permission.
        missing: String,
        /// How to grant it.
        remediation: String,
        /// The platform's message.
        message: String,
    },
    /// `rate-limited`.
    RateLimited {
        /// Wait, in milliseconds.
        retry_after_ms: Option<u64>,
        /// The bucket, if named.
        bucket: Option<String>,
        /// The platform's message.
        message: String,
    },
    /// `not-found`.
    NotFound {
        /// Message.
        message: String,
    },
    /// `invalid`.
    Invalid {
        /// Message.
        message: String,
    },
    /// `transient`.
    Transient {
        /// Message.
        message: String,
    },
    /// `permanent`.
    Permanent {
        /// Message.
        message: String,
    },
}

impl From<&Failure> for SavedFailure {
    fn from(f: &Failure) -> Self {
        match f {
            Failure::Unauthenticated(d) => Self::Unauthenticated {
                code: d.code.clone(),
                message: d.message.clone(),
            },
            Failure::Forbidden(d) => Self::Forbidden {
                kind: match d.kind {
                    PermissionKind::Scope => "scope",
                    PermissionKind::Role => "role",
                    PermissionKind::Plan => "plan",
                }
                .to_string(),
                missing: d.missing.clone(),
                remediation: d.remediation.clone(),
                message: d.message.clone(),
            },
            Failure::RateLimited(d) => Self::RateLimited {
                retry_after_ms: d.retry_after_ms,
                bucket: d.bucket.clone(),
                message: d.message.clone(),
            },
            Failure::NotFound(m) => Self::NotFound { message: m.clone() },
            Failure::Invalid(m) => Self::Invalid { message: m.clone() },
            Failure::Transient(m) => Self::Transient { message: m.clone() },
            Failure::Permanent(m) => Self::Permanent { message: m.clone() },
        }
    }
}

impl From<&SavedFailure> for Failure {
    fn from(f: &SavedFailure) -> Self {
        f.to_failure()
    }
}

impl SavedFailure {
    /// Back to the contract's [`Failure`].
    pub fn to_failure(&self) -> Failure {
        match self {
            Self::Unauthenticated { code, message } => fail::unauthenticated(code, message),
            Self::Forbidden {
                kind,
                missing,
                remediation,
                message,
            } => fail::forbidden(
                match kind.as_str() {
                    "scope" => PermissionKind::Scope,
                    "plan" => PermissionKind::Plan,
                    _ => PermissionKind::Role,
                },
                missing,
                remediation,
                message,
            ),
            Self::RateLimited {
                retry_after_ms,
                bucket,
                message,
            } => fail::rate_limited(*retry_after_ms, bucket.as_deref(), message),
            Self::NotFound { message } => Failure::NotFound(message.clone()),
            Self::Invalid { message } => Failure::Invalid(message.clone()),
            Self::Transient { message } => Failure::Transient(message.clone()),
            Self::Permanent { message } => Failure::Permanent(message.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_round_trips_through_json() {
        let cases = [
            fail::unauthenticated("invalid_token", "expired"),
            fail::forbidden(PermissionKind::Scope, "tickets:write", "grant it", "nope"),
            fail::forbidden(PermissionKind::Role, "edit", "fix the role", "nope"),
            fail::forbidden(PermissionKind::Plan, "api", "upgrade", "nope"),
            fail::rate_limited(Some(7000), Some("account"), "slow down"),
            fail::rate_limited(None, None, "slow down"),
            fail::not_found("gone"),
            fail::invalid("bad"),
            fail::transient("later"),
            fail::permanent("never"),
        ];
        for f in cases {
            let json = serde_json::to_string(&SavedFailure::from(&f)).unwrap();
            let back: SavedFailure = serde_json::from_str(&json).unwrap();
            assert_eq!(format!("{:?}", back.to_failure()), format!("{f:?}"));
        }
    }
}
