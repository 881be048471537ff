//! A request that cannot be served, as the HTTP status and JSON body
//! rqlite's clients expect: `{"error": "..."}`.

use crate::render::json_response;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use paxsql_types::RequestError;
use std::time::Duration;

/// Why a request failed as a whole (a failing statement is not this: it is
/// answered in its own result slot with a `200`).
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    /// Seconds for a `Retry-After` header, for errors that go away by waiting.
    retry_after_secs: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn body_too_large(body_bytes_max: usize) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body is larger than {body_bytes_max} bytes; \
                 split the statements over several requests"
            ),
        )
    }

    pub(crate) fn not_found(method: &str, path: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no such endpoint: {method} {path}; this node serves /db/execute, \
                 /db/query, /db/request, /db/backup, /db/load, /kv, /status, /nodes, /shards, \
                 /readyz, /metrics and /console"
            ),
        )
    }

    pub(crate) fn missing(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    pub(crate) fn method_not_allowed(allowed: &str) -> Self {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method not allowed on this endpoint; use {allowed}"),
        )
    }

    pub(crate) fn timed_out(after: Duration) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "request timed out after {after:?}; a write may or may not have been \
                 applied: retry it with the same request id (it is applied at most once)"
            ),
        )
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        let message = e.to_string();
        match e {
            RequestError::BadRequest(_) => ApiError::bad_request(message),
            RequestError::Unavailable(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message),
            RequestError::Overloaded(_) => ApiError {
                retry_after_secs: Some(1),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
            },
            RequestError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::debug!(status = %self.status, error = %self.message, "request failed");
        }
        let body = serde_json::json!({ "error": self.message });
        let mut response = json_response(self.status, &body, false);
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
