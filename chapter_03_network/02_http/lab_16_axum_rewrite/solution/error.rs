//! JSON errors: one error type, and the extractors whose rejections turn
//! into it.
//!
//! axum's own extractors (`Json`, `Query`, `Path`, `Bytes`) reject a bad
//! request with a plain-text body ("Failed to deserialize query string:
//! missing field `b`"). The API promises `{"error": "..."}` with
//! `Content-Type: application/json` instead, so every extractor the
//! handlers use is wrapped: [`AppJson`], [`AppQuery`], [`AppPath`] and
//! [`Body`] run the axum extractor and convert its rejection into an
//! [`ApiError`], keeping axum's status code (400, 413, 415, 422) and
//! message. This is the pattern of axum's `customize-extractor-error`
//! example: the `via(..)` and `rejection(..)` attributes of
//! `#[derive(FromRequest)]` write the wrapper for us.
//!
//! The router's fallbacks (404 and 405) and the body-size check return
//! [`ApiError`] directly, so no error leaves the router as plain text.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error as the API reports it: a status code and a message that goes
/// out as `{"error": "<message>"}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // `Json` serialises the value and sets `Content-Type:
        // application/json`; `json!` escapes the message for us (a message
        // quoting a bad input may hold quotes or control characters).
        let body = Json(serde_json::json!({ "error": self.message }));
        (self.status, body).into_response()
    }
}

/// Every axum rejection knows its status (`status()`) and a readable
/// message (`body_text()`); we keep both and change only the format.
macro_rules! from_rejection {
    ($($rejection:ty),*) => {$(
        impl From<$rejection> for ApiError {
            fn from(rejection: $rejection) -> Self {
                ApiError::new(rejection.status(), rejection.body_text())
            }
        }
    )*};
}

from_rejection!(JsonRejection, QueryRejection, PathRejection, BytesRejection);

/// `axum::Json<T>` with JSON errors: 415 without `Content-Type:
/// application/json`, 400 for a syntax error, 422 for valid JSON of the
/// wrong shape (a missing field, a string where a number belongs).
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct AppJson<T>(pub T);

/// `axum::extract::Query<T>` with JSON errors: 400 when a field is missing
/// or does not parse as its type.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct AppQuery<T>(pub T);

/// `axum::extract::Path<T>` with JSON errors: 400 when a segment does not
/// decode (e.g. percent-encoded bytes that are not UTF-8).
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct AppPath<T>(pub T);

/// The whole request body, with JSON errors: 413 when it passes the
/// `DefaultBodyLimit`, 400 when it cannot be read (a broken chunked
/// encoding). `Bytes` has no type parameter, so `via(..)` does not fit and
/// this one is written out; it is all the derive does, too.
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Body(Bytes::from_request(req, state).await?))
    }
}
