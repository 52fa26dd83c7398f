//! The HTTP face of the service: routes, handlers, the body extractor,
//! ETag and If-Match.
//!
//! | request | handler | success |
//! |---|---|---|
//! | `POST /tasks` | [`create`] | 201, `Location`, `ETag`, the task |
//! | `GET /tasks` | [`list`] | 200, `{"items": [...], "next_cursor": ...}` |
//! | `GET /tasks/{id}` | [`get_one`] | 200, `ETag`, the task |
//! | `PUT /tasks/{id}` | [`replace`] | 200, `ETag`, the task |
//! | `PATCH /tasks/{id}` | [`update`] | 200, `ETag`, the task |
//! | `DELETE /tasks/{id}` | [`delete`] | 204 |
//!
//! Handlers translate: HTTP in (path, query, headers, body) to model
//! values, a store call, and the store's answer (or error) back to HTTP.
//! No handler decides anything the store must decide atomically: the
//! If-Match check is passed *into* the store as the versions it allows,
//! and the store compares and writes under one lock. Checking in the
//! handler (`get`, compare, then `update`) would leave a window in which
//! another request writes; two requests carrying the same ETag could then
//! both succeed, and one update would silently be lost.
//!
//! Every failure is an [`ApiError`], which renders the one JSON error
//! shape; so are axum's own answers for unknown paths (the router's
//! `fallback`) and wrong methods (`method_not_allowed_fallback`), which are
//! otherwise plain text or empty.

use std::collections::HashMap;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::error::ApiError;
use crate::model::{Cursor, Filter, NewTask, Task, TaskFields, TaskPatch};
use crate::store::Store;

/// The largest body accepted: 64 KiB. Past it, 413.
pub const MAX_BODY: usize = 64 * 1024;

/// `limit` when the query has none, and the largest allowed.
pub const DEFAULT_LIMIT: usize = 20;
pub const MAX_LIMIT: usize = 100;

/// The whole API on one store.
pub fn router(store: Store) -> Router {
    Router::new()
        .route("/tasks", get(list).post(create))
        .route(
            "/tasks/{id}",
            get(get_one).put(replace).patch(update).delete(delete),
        )
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // axum's default is 2 MB; the spec says 64 KiB. The `Bytes`
        // extractor enforces it for a Content-Length and for chunked bodies.
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(store)
}

/// A JSON body: `Content-Type: application/json` (any parameters, any
/// case), at most [`MAX_BODY`] bytes, valid JSON. What the JSON holds is
/// the model's business (a 422 there, not a 400 here).
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest(format!("could not read the body: {e}"))
            }
        })?;
        // from_slice also rejects bytes that are not UTF-8.
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))
    }
}

/// Whether Content-Type's media type is application/json (RFC 9110:
/// case-insensitive, parameters such as `charset` allowed).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// What `If-Match` allows, as versions: `None` when the header is absent
/// or `*` (any existing task), else the versions its strong tags name.
/// A weak tag (`W/"3"`) never matches under the strong comparison that
/// If-Match uses (RFC 9110 13.1.1), and a tag we never issued matches no
/// version; both simply add nothing, so an If-Match of only those gets
/// 412.
pub fn if_match(headers: &HeaderMap) -> Option<Vec<i64>> {
    let mut values = headers.get_all(header::IF_MATCH).iter().peekable();
    values.peek()?;
    let mut versions = Vec::new();
    for value in values {
        let Ok(text) = value.to_str() else { continue };
        for tag in text.split(',').map(str::trim) {
            if tag == "*" {
                return None;
            }
            let digits = tag.strip_prefix('"').and_then(|t| t.strip_suffix('"'));
            // Strong comparison is character by character: `"03"` is not
            // `"3"`, so only the exact form we issue counts.
            if let Some(v) = digits.and_then(|d| d.parse::<i64>().ok())
                && tag == format!("\"{v}\"")
            {
                versions.push(v);
            }
        }
    }
    Some(versions)
}

/// The id from the path; anything that is not a UUID names no task.
fn task_id(path: Result<Path<String>, PathRejection>) -> Result<Uuid, ApiError> {
    let Path(raw) = path.map_err(|_| ApiError::NotFound)?;
    Uuid::parse_str(&raw).map_err(|_| ApiError::NotFound)
}

/// 200 (or `status`) with the task and its ETag.
fn one(status: StatusCode, task: &Task) -> Response {
    (status, [(header::ETAG, task.etag())], Json(task)).into_response()
}

pub async fn create(
    State(store): State<Store>,
    JsonBody(v): JsonBody,
) -> Result<Response, ApiError> {
    let new = NewTask::from_json(&v)?;
    let task = store.create(new).await?;
    let mut res = one(StatusCode::CREATED, &task);
    let location = format!("/tasks/{}", task.id);
    res.headers_mut().insert(
        header::LOCATION,
        location
            .parse()
            .expect("a UUID path is a valid header value"),
    );
    Ok(res)
}

pub async fn get_one(
    State(store): State<Store>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let task = store.get(task_id(path)?).await?;
    Ok(one(StatusCode::OK, &task))
}

pub async fn list(
    State(store): State<Store>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(format!("bad query string: {e}")))?;
    let limit = match q.get("limit") {
        None => DEFAULT_LIMIT,
        Some(s) => match s.parse::<usize>() {
            Ok(n @ 1..=MAX_LIMIT) => n,
            _ => {
                return Err(ApiError::field(
                    "limit",
                    "limit must be an integer from 1 to 100",
                ));
            }
        },
    };
    let after =
        match q.get("cursor") {
            None => None,
            Some(s) => Some(Cursor::decode(s).ok_or_else(|| {
                ApiError::field("cursor", "cursor is not one this server gave out")
            })?),
        };
    let done = match q.get("done").map(String::as_str) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(ApiError::field("done", "done must be true or false")),
    };
    let priority = match q.get("priority") {
        None => None,
        Some(s) => match s.parse::<u8>() {
            Ok(p @ 1..=5) => Some(p),
            _ => {
                return Err(ApiError::field(
                    "priority",
                    "priority must be an integer from 1 to 5",
                ));
            }
        },
    };
    let (page, more) = store.list(&Filter { done, priority }, after, limit).await?;
    // The cursor is the position of the page's last task, handed out only
    // when a further matching task exists.
    let next_cursor = match page.last() {
        Some((c, _)) if more => Some(c.encode()),
        _ => None,
    };
    let items: Vec<&Task> = page.iter().map(|(_, t)| t).collect();
    Ok(Json(json!({"items": items, "next_cursor": next_cursor})).into_response())
}

pub async fn replace(
    State(store): State<Store>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    JsonBody(v): JsonBody,
) -> Result<Response, ApiError> {
    let id = task_id(path)?;
    let fields = TaskFields::from_json(&v)?;
    let task = store
        .replace(id, if_match(&headers).as_deref(), fields)
        .await?;
    Ok(one(StatusCode::OK, &task))
}

pub async fn update(
    State(store): State<Store>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    JsonBody(v): JsonBody,
) -> Result<Response, ApiError> {
    let id = task_id(path)?;
    let patch = TaskPatch::from_json(&v)?;
    let task = store
        .update(id, if_match(&headers).as_deref(), patch)
        .await?;
    Ok(one(StatusCode::OK, &task))
}

pub async fn delete(
    State(store): State<Store>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let id = task_id(path)?;
    store.delete(id, if_match(&headers).as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}
