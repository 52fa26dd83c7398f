//! One error type for the API, and one JSON shape for every error.
//!
//! ```json
//! {"error": {"code": "validation_failed", "message": "title must be 1 to 200 characters", "field": "title"}}
//! ```
//!
//! Handlers return `Result<_, ApiError>`; `?` converts store errors and
//! validation failures; `IntoResponse` turns an `ApiError` into the status,
//! `Content-Type: application/json` and the body. A client then needs one
//! parser for every failure, and `code` (stable, for programs) is kept
//! apart from `message` (for people, free to change).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::model::Invalid;
use crate::store::StoreError;

#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    NotFound,
    MethodNotAllowed,
    PreconditionFailed,
    PayloadTooLarge,
    UnsupportedMediaType,
    Validation(Invalid),
    Internal(String),
    Unavailable(String),
}

impl ApiError {
    /// A 422 about a field or query parameter.
    pub fn field(field: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::Validation(Invalid {
            field: Some(field),
            message: message.into(),
        })
    }

    fn parts(&self) -> (StatusCode, &'static str, String, Option<&'static str>) {
        use ApiError::*;
        match self {
            BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m.clone(), None),
            NotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                "no such task or route".into(),
                None,
            ),
            MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this method is not allowed on this path".into(),
                None,
            ),
            PreconditionFailed => (
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                "If-Match does not match the task's current ETag".into(),
                None,
            ),
            PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the body is larger than 64 KiB".into(),
                None,
            ),
            UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be Content-Type: application/json".into(),
                None,
            ),
            Validation(i) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                i.message.clone(),
                i.field,
            ),
            // The details go to the log, not to the client.
            Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error".into(),
                None,
            ),
            Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the service is unavailable, try again".into(),
                None,
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(why) | ApiError::Unavailable(why) = &self {
            eprintln!("tasks: {why}");
        }
        let (status, code, message, field) = self.parts();
        let mut error = json!({"code": code, "message": message});
        if let Some(f) = field {
            error["field"] = json!(f);
        }
        // `Json` sets Content-Type: application/json.
        (status, Json(json!({ "error": error }))).into_response()
    }
}

impl From<Invalid> for ApiError {
    fn from(i: Invalid) -> ApiError {
        ApiError::Validation(i)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound => ApiError::NotFound,
            StoreError::VersionMismatch { .. } => ApiError::PreconditionFailed,
            StoreError::Unavailable(why) => ApiError::Unavailable(why),
            StoreError::Internal(why) => ApiError::Internal(why),
        }
    }
}
