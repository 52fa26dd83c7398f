//! The routes: the hello service of lab 15 plus `/sum` and `/greet`, as an
//! axum `Router`.
//!
//! Compared with lab 15, most of the work moved into the framework:
//! - routing by path and method, with 405 and its `Allow` header computed
//!   from the methods each path has (`get` also answers HEAD, without the
//!   body but with the GET body's Content-Length);
//! - typed extraction: a handler says what it needs (`AppPath<String>`,
//!   `AppQuery<SumParams>`, `AppJson<Greet>`) and is only called once the
//!   request has it; otherwise the extractor's rejection is the response;
//! - static files: tower-http's `ServeDir` (see [`static_files`]).
//!
//! What stays ours: the JSON error format ([`crate::error`]), the fallbacks
//! for 404 and 405, and the body limit.

use std::path::PathBuf;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tower_http::services::ServeDir;

use crate::error::{ApiError, AppJson, AppPath, AppQuery, Body};

/// The largest request body accepted: 1 MiB.
pub const MAX_BODY: usize = 1024 * 1024;

/// The whole service.
pub fn router(static_dir: PathBuf) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/hello/{name}", get(hello))
        .route("/echo", post(echo))
        .route("/sum", get(sum))
        .route("/greet", post(greet))
        .nest_service("/static", static_files(static_dir))
        // Any other path. (Without this, axum answers 404 with an empty
        // body.)
        .fallback(not_found)
        // A known path with a method it does not have. It applies to the
        // routes registered above it, and axum still adds the `Allow`
        // header it computed for the path to whatever this returns.
        .method_not_allowed_fallback(method_not_allowed)
        // Body extractors (`Bytes`, `Json`) stop reading at 1 MiB and
        // reject with 413; without this layer the default limit is 2 MB.
        .layer(DefaultBodyLimit::max(MAX_BODY))
        // ...but they only notice once 1 MiB has arrived. A request that
        // announces a larger body is refused before reading any of it.
        .layer(middleware::from_fn(refuse_announced_oversize))
}

/// `GET /`. A `&str` response is `text/plain; charset=utf-8`.
async fn root() -> &'static str {
    "hello, world\n"
}

/// `GET /hello/{name}`: `{name}` matches exactly one non-empty segment, so
/// `/hello/` and `/hello/a/b` fall through to the 404 fallback. `Path`
/// percent-decodes it, and rejects (400) bytes that are not UTF-8.
async fn hello(AppPath(name): AppPath<String>) -> String {
    format!("hello, {name}\n")
}

/// `POST /echo`: the body back, byte for byte, with the request's
/// Content-Type (a header in the tuple overrides the
/// `application/octet-stream` that a `Bytes` response would set).
async fn echo(headers: HeaderMap, Body(body): Body) -> Response {
    let content_type = headers
        .get(CONTENT_TYPE)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"));
    ([(CONTENT_TYPE, content_type)], body).into_response()
}

/// The query of `/sum`. Both fields are required: `Query` rejects a missing
/// one rather than defaulting it to 0.
#[derive(Deserialize)]
struct SumParams {
    a: i64,
    b: i64,
}

/// `GET /sum?a=1&b=2` -> `{"sum": 3}`.
async fn sum(AppQuery(p): AppQuery<SumParams>) -> Result<axum::Json<Value>, ApiError> {
    // i64::MAX + 1 would panic in a debug build and wrap in a release one:
    // neither is an answer.
    let sum = p.a.checked_add(p.b).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "the sum does not fit in a 64-bit integer",
        )
    })?;
    Ok(axum::Json(json!({ "sum": sum })))
}

/// The body of `/greet`. `age` is `u32`, so a negative or fractional age
/// is the wrong shape (422), like a missing field.
#[derive(Deserialize)]
struct Greet {
    name: String,
    age: u32,
}

/// `POST /greet` with `{"name": "Ada", "age": 36}` ->
/// `{"greeting": "hello, Ada", "next_age": 37}`.
async fn greet(AppJson(g): AppJson<Greet>) -> axum::Json<Value> {
    // Widen before adding: u32::MAX is a valid age here, and its successor
    // still fits in a u64.
    let next_age = u64::from(g.age) + 1;
    axum::Json(json!({ "greeting": format!("hello, {}", g.name), "next_age": next_age }))
}

/// Static files under `dir`, served by tower-http's `ServeDir`: it decodes
/// the percent-encoded path, refuses any `..` (also `%2e%2e`, and an
/// encoded `/` that would make one), sets Content-Type from the extension,
/// Content-Length, Last-Modified, and handles HEAD, range requests and
/// conditional requests (`If-Modified-Since` -> 304), streaming the file
/// instead of reading it into memory.
fn static_files(dir: PathBuf) -> ServeDir<MethodRouter> {
    ServeDir::new(dir)
        // A directory is not a file: 404, rather than serving its
        // index.html (or redirecting `/static/sub` to `/static/sub/`).
        .append_index_html_on_directories(false)
        // ServeDir's own 404 and 405 have empty bodies; ours are JSON. By
        // default ServeDir answers a method other than GET and HEAD itself;
        // this sends that case to the fallback too.
        .call_fallback_on_method_not_allowed(true)
        .fallback(any(static_fallback))
}

/// What `ServeDir` could not serve: a missing file, a path it refused, or
/// a method other than GET and HEAD.
async fn static_fallback(method: Method) -> Response {
    if method == Method::GET || method == Method::HEAD {
        not_found().await.into_response()
    } else {
        let mut response = method_not_allowed().await.into_response();
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        response
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not found")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

/// 413 for a request whose Content-Length already says it is over the
/// limit, before the body is read: reading (and throwing away) a megabyte
/// only to refuse it wastes the bandwidth of both sides. A chunked body
/// has no length up front; `DefaultBodyLimit` catches that one as it
/// arrives. (tower-http's `RequestBodyLimitLayer` does both at once; the
/// course builds tower-http without its `limit` feature, and the check is
/// a few lines.)
async fn refuse_announced_oversize(req: Request, next: Next) -> Response {
    let announced = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY as u64) {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {MAX_BODY} bytes"),
        )
        .into_response();
    }
    next.run(req).await
}
