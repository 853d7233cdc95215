//! The one error type of every HTTP edge (ingest, webhooks, admin API), and its JSON
//! form: `{"success": false, "error": "…", "code": "…", "message": "…", "field": "…"}`.
//!
//! `error` is what DESIGN.md and Ruby clients read, `code`/`message` what Python
//! clients read; `field` names the offending field when there is one. 5xx details are
//! logged, never returned.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("{message}")]
    BadRequest {
        code: &'static str,
        message: String,
        field: Option<String>,
        detail: Option<Value>,
    },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    /// Past a rate limit: 429 with `Retry-After: 1`.
    #[error("{0}")]
    RateLimited(String),
    /// Temporarily unable (store failing, shutting down): clients retry.
    #[error("{0}")]
    Unavailable(String),
    /// At capacity (requests in flight, events waiting for the writer): answered
    /// 503 with `Retry-After: 1`, which Segment's libraries honour; not logged as an
    /// error, since shedding is the daemon working as meant.
    #[error("{0}")]
    Overloaded(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub(crate) fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
            field: None,
            detail: None,
        }
    }

    pub(crate) fn bad_field(code: &'static str, field: &str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
            field: Some(field.to_owned()),
            detail: None,
        }
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) | Self::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. } => code,
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::RateLimited(_) => "rate_limited",
            Self::Unavailable(_) => "unavailable",
            Self::Overloaded(_) => "overloaded",
            Self::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            Self::Overloaded(m) => format!("{m}; retry later"),
            _ if status.is_server_error() => {
                tracing::error!(error = %self, "Request failed.");
                match &self {
                    Self::Unavailable(_) => "temporarily unavailable, retry later".to_owned(),
                    _ => "internal error".to_owned(),
                }
            }
            _ => self.to_string(),
        };
        let mut body = json!({
            "success": false,
            "error": message,
            "code": self.code(),
            "message": message,
        });
        if let Self::BadRequest { field, detail, .. } = &self {
            if let Some(f) = field {
                body["field"] = json!(f);
            }
            if let Some(d) = detail {
                body["detail"] = d.clone();
            }
        }
        let mut resp = (status, Json(body)).into_response();
        match self {
            Self::Unavailable(_) => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            Self::Overloaded(_) | Self::RateLimited(_) => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        if matches!(self, Self::Unauthorized(_)) {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<crate::queue::QueueError> for ApiError {
    fn from(e: crate::queue::QueueError) -> Self {
        match e {
            crate::queue::QueueError::Overloaded { .. } => {
                Self::Overloaded(format!("spur is at capacity: {e}"))
            }
            _ => Self::Unavailable(e.to_string()),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Unavailable(e.to_string())
    }
}
