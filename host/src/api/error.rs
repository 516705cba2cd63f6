//! [`ApiError`]: the one error type at the HTTP edge.
//!
//! Every failure an API client can see becomes `{"error": {"code", "message"}}` with a 4xx or 5xx
//! status. `code` is stable (clients branch on it); `message` says what was wrong and what to do.
//! Internal failures are logged in full and answered with a message that leaks nothing.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::outbox::OutboxError;
use crate::store::StoreError;

/// An API failure: HTTP status, stable code, actionable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Stable, machine-readable code (`connection_not_found`, `invalid_json`, ...).
    pub code: &'static str,
    /// What was wrong and what to do, for people.
    pub message: String,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 `connection_not_found`.
    pub fn connection_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "connection_not_found",
            format!("connection `{id}` does not exist: list connections with GET /v1/connections"),
        )
    }

    /// 409 with `code`: the request is fine but the connection's state does not allow it.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 503 with `code`: something the gateway depends on did not answer; retry later.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    fn internal(what: &str, err: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %err, "{what}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{what}; the gateway log has the cause. Retry later; nothing was accepted"),
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(json!({ "error": { "code": self.code, "message": self.message } })))
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"deskgate\""),
            );
        }
        r
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::ConnectionNotFound(id) => Self::connection_not_found(id),
            StoreError::ConnectionExists(id) => Self::new(
                StatusCode::CONFLICT,
                "connection_exists",
                format!("connection `{id}` already exists (deleted connections keep their ids): choose another id"),
            ),
            StoreError::ActionNotFound(id) => Self::new(
                StatusCode::NOT_FOUND,
                "action_not_found",
                format!("action {id} does not exist: use the id returned when the action was submitted"),
            ),
            StoreError::AlertNotFound(id) => Self::new(
                StatusCode::NOT_FOUND,
                "alert_not_found",
                format!("alert {id} does not exist: list alerts with GET /v1/alerts"),
            ),
            StoreError::IdempotencyKeyReused { .. } => {
                Self::new(StatusCode::CONFLICT, "idempotency_key_reused", e.to_string())
            }
            _ if e.is_transient() => {
                tracing::warn!(error = %e, "store unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the store is busy or unreachable; retry shortly (nothing was accepted)",
                )
            }
            _ => Self::internal("the store failed", &e),
        }
    }
}

impl From<OutboxError> for ApiError {
    fn from(e: OutboxError) -> Self {
        match e {
            OutboxError::Store(s) => s.into(),
            other => Self::internal("a stored action could not be read", &other),
        }
    }
}
