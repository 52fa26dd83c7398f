//! The hello service: the same routes over TLS as over plain TCP.
//!
//! Nothing here knows about TLS. That is the point of terminating TLS below
//! the HTTP layer: the router gets a decrypted byte stream through hyper and
//! cannot tell the difference. (A reverse proxy terminating TLS in front of
//! a plain HTTP server, lab 18, is the same split across two processes.)

use std::path::Path;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path as UrlPath};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use tower_http::services::ServeDir;

/// The largest request body `POST /echo` takes; above it axum answers 413.
const MAX_BODY: usize = 1024 * 1024;

/// The router: `GET /`, `GET /hello/{name}`, `POST /echo`, `/static/*`.
/// axum answers HEAD on GET routes, 405 with `Allow` for a wrong method,
/// 404 for other paths, and 400 when a name is not UTF-8 once decoded.
pub fn router(static_dir: &Path) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/hello/{name}", get(hello))
        .route("/echo", post(echo))
        // ServeDir refuses paths that climb out of the directory (`..`).
        .nest_service("/static", ServeDir::new(static_dir))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// `GET /`. A `&'static str` answer is `text/plain; charset=utf-8`.
async fn root() -> &'static str {
    "hello, world\n"
}

/// `GET /hello/{name}`: the segment arrives percent-decoded.
async fn hello(UrlPath(name): UrlPath<String>) -> String {
    format!("hello, {name}\n")
}

/// `POST /echo`: the body back, byte for byte, with its Content-Type.
async fn echo(headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}
