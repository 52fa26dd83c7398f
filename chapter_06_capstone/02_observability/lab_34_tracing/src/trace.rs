//! Request tracing: one span per request, its id, its one "finished" line,
//! and the panic net. YOUR WORK for lab 34 is here (and a little in
//! `store.rs`, `error.rs` and `main.rs`: look for `TODO(lab 34)`).
//!
//! What the grader reads is stderr: one JSON object per line, as
//! tracing-subscriber's JSON format writes it (see the README's Spec):
//!
//! ```text
//! {"timestamp":"...","level":"INFO","fields":{"message":"finished","status":201,"latency_ms":3.2},
//!  "target":"tasks_traced::trace","span":{...,"name":"request"},
//!  "spans":[{"method":"POST","request_id":"abc","route":"/tasks","status":201,"latency_ms":3.2,"name":"request"}]}
//! ```
//!
//! As shipped, [`init`] installs nothing (so every `tracing` macro is a
//! no-op), and [`request`] passes the request through untouched: the API
//! works, the log says nothing, and every test fails on what it reads.
//!
//! Already done for you: [`template`], the route template of a path
//! (axum's `MatchedPath` would give it, but this workspace builds axum
//! without its `matched-path` feature), and `api.rs` installs [`request`]
//! as the outermost layer inside the router.

#![allow(unused)]

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use crate::error::ApiError;

/// The header that carries the request id, both ways.
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The route of a request no route matched (a 404 from the fallback).
const UNMATCHED: &str = "<unmatched>";

/// Installs the process's one subscriber; called first thing in `main`.
pub fn init() {
    // TODO(lab 34): a tracing-subscriber fmt subscriber with .json(),
    // writing to stderr (never stdout), no ANSI colours, with the current
    // span and the span list in each line, filtered by RUST_LOG through an
    // EnvFilter whose default is `info`.
    //
    // TODO(lab 34): the default panic hook prints plain text on stderr
    // ("thread '...' panicked at ..."), which breaks "one JSON object per
    // line": install one (std::panic::set_hook) that logs the panic
    // through tracing instead.
}

/// The middleware around every request (installed in `api.rs`).
pub async fn request(req: Request, next: Next) -> Response {
    // TODO(lab 34):
    // - decide the request id: the incoming X-Request-Id if sane (1 to 128
    //   visible ASCII characters, b'!'..=b'~'), else a new UUID;
    // - open a span named "request" with method, route (template(...)),
    //   request_id, and status and latency_ms declared Empty;
    // - run the rest of the stack inside that span (tracing::Instrument),
    //   catching a panic (futures::FutureExt::catch_unwind): a panic
    //   becomes ApiError::Internal's 500, logged at ERROR with the id;
    // - record status and latency_ms, and log one "finished" info! event
    //   carrying both, inside the span;
    // - echo the id as X-Request-Id on the response, whatever it is.
    next.run(req).await
}

/// The route template `path` matches, the way axum's router matches it:
/// segment by segment, a `{param}` segment taking any one non-empty
/// segment, no trailing-slash leniency. `None` when no route matches.
fn template(path: &str) -> Option<&'static str> {
    crate::api::ROUTES.iter().copied().find(|t| {
        let mut want = t.split('/');
        let mut got = path.split('/');
        loop {
            match (want.next(), got.next()) {
                (None, None) => return true,
                (Some(w), Some(g)) if w.starts_with('{') && !g.is_empty() => {}
                (Some(w), Some(g)) if w == g => {}
                _ => return false,
            }
        }
    })
}
