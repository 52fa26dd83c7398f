//! One error type for the API, and one JSON shape for every error:
//!
//! ```json
//! {"error": {"code": "validation_failed", "message": "title must be 1 to 200 characters", "field": "title"}}
//! ```
//!
//! `field` only on a 422 about a field or query parameter. Codes:
//! `bad_request` 400, `not_found` 404, `method_not_allowed` 405,
//! `precondition_failed` 412, `payload_too_large` 413,
//! `unsupported_media_type` 415, `validation_failed` 422, `internal` 500,
//! `unavailable` 503.

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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        todo!()
    }
}

impl From<Invalid> for ApiError {
    fn from(i: Invalid) -> ApiError {
        todo!()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        todo!()
    }
}
