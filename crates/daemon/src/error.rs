//! The API's error body, `{"error": ..., "field": ...}`, and how library errors map to it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What every 4xx/5xx answer carries.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// What went wrong and what to do about it.
    pub error: String,
    /// The request field at fault (a JSON path such as `cpus` or `env[2]`), when one is.
    pub field: Option<String>,
}

/// An error answer: a status and an [`ErrorBody`].
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>, field: Option<&str>) -> Self {
        Self {
            status,
            body: ErrorBody {
                error: error.into(),
                field: field.map(str::to_string),
            },
        }
    }
    /// 400: the request cannot be understood (syntax, types, names).
    pub fn bad(field: &str, error: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, Some(field))
    }
    /// 422: understood, but impossible on this node.
    pub fn unprocessable(field: &str, error: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, error, Some(field))
    }
    pub fn not_found(field: &str, error: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, error, Some(field))
    }
    pub fn conflict(field: Option<&str>, error: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, error, field)
    }
    pub fn forbidden(error: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, error, None)
    }
    pub fn internal(error: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string(), None)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

/// Print an error with its whole cause chain on one line.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}
