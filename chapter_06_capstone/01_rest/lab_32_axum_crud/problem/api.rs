//! The HTTP face of the service: routes, handlers, the body extractor,
//! ETag and If-Match.
//!
//! | request | handler | success |
//! |---|---|---|
//! | `POST /tasks` | `create` | 201, `Location`, `ETag`, the task |
//! | `GET /tasks` | `list` | 200, `{"items": [...], "next_cursor": ...}` |
//! | `GET /tasks/{id}` | `get_one` | 200, `ETag`, the task |
//! | `PUT /tasks/{id}` | `replace` | 200, `ETag`, the task |
//! | `PATCH /tasks/{id}` | `update` | 200, `ETag`, the task |
//! | `DELETE /tasks/{id}` | `delete` | 204 |
//!
//! Every failure, axum's own 404 and 405 included, must be an `ApiError`.

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
    todo!()
}

/// A JSON body: `Content-Type: application/json`, at most [`MAX_BODY`]
/// bytes, valid JSON (415, 413, 400 otherwise).
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        todo!()
    }
}

/// What `If-Match` allows, as versions: `None` when absent or `*`, else
/// the versions its strong tags name.
pub fn if_match(headers: &HeaderMap) -> Option<Vec<i64>> {
    todo!()
}

pub async fn create(
    State(store): State<Store>,
    JsonBody(v): JsonBody,
) -> Result<Response, ApiError> {
    todo!()
}

pub async fn get_one(
    State(store): State<Store>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    todo!()
}

pub async fn list(
    State(store): State<Store>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    todo!()
}

pub async fn replace(
    State(store): State<Store>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    JsonBody(v): JsonBody,
) -> Result<Response, ApiError> {
    todo!()
}

pub async fn update(
    State(store): State<Store>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    JsonBody(v): JsonBody,
) -> Result<Response, ApiError> {
    todo!()
}

pub async fn delete(
    State(store): State<Store>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    todo!()
}
