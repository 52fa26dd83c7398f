//! Request tracing: one span per request, its id, its one "finished" line,
//! and the panic net.
//!
//! Everything here is one axum middleware, [`request`], installed as the
//! outermost layer *inside* the router (`Router::layer`, in `api.rs`), and
//! one process-wide setup, [`init`], called first thing in `main`.
//!
//! # Design
//!
//! - **The route is the template, never the raw path.** `/tasks/{id}`,
//!   not `/tasks/4b0c...`: a raw path makes every task its own "route",
//!   so no query can group requests by endpoint, and a client can invent
//!   new values at will. axum's `MatchedPath` extension would give the
//!   template, but this workspace builds axum without its `matched-path`
//!   feature, so [`template`] matches the path against the router's own
//!   list of templates (`api::ROUTES`, the same constants the router is
//!   built from, so the two cannot drift apart).
//! - **Outermost, inside the router.** Added last with `Router::layer`, it
//!   wraps the fallback (404) and the 405 answers, and the request timeout
//!   too, so a 503 from the timeout is logged and carries its id like any
//!   other answer.
//! - **The request id is decided once, here.** An incoming `X-Request-Id`
//!   is kept when it is sane (1 to 128 visible ASCII characters), so a
//!   caller (a gateway, another service) can follow its request through
//!   our log; anything else is replaced by a fresh UUID: the id goes into
//!   every log line, and a client must not be able to flood the log with a
//!   huge "id" or smuggle control characters into it. The id is echoed on
//!   every response, errors included, so a user reporting "it failed" can
//!   quote it.
//! - **The id lives in the span, not in a variable.** Every event and every
//!   child span created while the request's future runs happens inside the
//!   `request` span (`.instrument(span)` enters it on every poll), so the
//!   JSON formatter writes the span, and with it the id, into each line.
//!   Nothing global holds "the current request": on a multi-threaded
//!   runtime many requests interleave on each thread, and a global or a
//!   thread-local would hand one request's id to another's lines.
//! - **Status and latency are recorded at the end**, when the response
//!   exists (the span declares them `Empty` up front: a span's fields are
//!   fixed at creation, only their values can come later), and one `info!`
//!   event, "finished", carries them: one line per request, the line an
//!   access log would have, but with the route template and the id.
//! - **A panic is contained here.** The handler's future runs under
//!   `catch_unwind`: a panic (a broken invariant, see `store.rs`) becomes
//!   a 500 with the usual error shape, logged at ERROR with the request id,
//!   and only this request fails. Without it, hyper's connection task dies
//!   with the panic and the client sees a dropped connection, not an answer.
//!   tower-http's `CatchPanicLayer` does the same; doing it by hand here
//!   shows what it is, and keeps the id at hand for the log line.

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use tracing::Instrument;
use tracing::field::Empty;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use uuid::Uuid;

use crate::error::ApiError;

/// The header that carries the request id, both ways.
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The route of a request no route matched (a 404 from the fallback): one
/// value for all of them, so unknown URLs cannot create new ones.
const UNMATCHED: &str = "<unmatched>";

/// The longest incoming request id kept.
const ID_MAX: usize = 128;

/// Installs the process's one subscriber: JSON lines on stderr, filtered
/// by `RUST_LOG` (default `info`), and a panic hook that logs through it.
///
/// JSON because logs are read by programs first (a log shipper, a query
/// in Loki or Elasticsearch), and a program can split a JSON object into
/// fields without guessing; stderr because stdout belongs to the
/// `listening on` line (and, in general, to a program's output).
pub fn init() {
    // RUST_LOG is read here rather than by EnvFilter's "lossy" parser,
    // which would print a bad directive's warning as plain text before the
    // JSON writer exists; this way the warning is a JSON line too.
    let default = || {
        EnvFilter::builder()
            .with_default_directive(LevelFilter::INFO.into())
            .parse_lossy("")
    };
    let (filter, bad) = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => match EnvFilter::builder().parse(&v) {
            Ok(f) => (f, None),
            Err(e) => (default(), Some((v, e))),
        },
        _ => (default(), None),
    };
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        // The innermost span and the whole list: `spans` is how a db.query
        // line says which request it belongs to.
        .with_current_span(true)
        .with_span_list(true)
        .with_env_filter(filter)
        .init();
    if let Some((v, e)) = bad {
        tracing::warn!(rust_log = %v, error = %e, "RUST_LOG is not a valid filter; using info");
    }

    // The default hook prints "thread '...' panicked at ..." as plain text
    // on stderr: a line no log pipeline can parse. This one logs the same
    // facts as a JSON event. It runs on the panicking thread, inside the
    // request span (the handler's future is polled in it), so the line
    // carries the request id as well.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| l.to_string())
            .unwrap_or_else(|| "unknown".to_string());
        tracing::error!(
            panic.message = %panic_message(info.payload()),
            panic.location = %location,
            "panicked"
        );
    }));
}

/// The middleware around every request; see the module docs.
pub async fn request(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(req.headers());
    let route = template(req.uri().path()).unwrap_or(UNMATCHED);
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        route = %route,
        request_id = %id,
        status = Empty,
        latency_ms = Empty,
    );

    // AssertUnwindSafe: after a panic nothing of the handler's state is
    // used again (its future is dropped), so no broken state can leak.
    let outcome = AssertUnwindSafe(next.run(req))
        .catch_unwind()
        .instrument(span.clone())
        .await;
    let mut response = match outcome {
        Ok(r) => r,
        Err(payload) => {
            // The id as a field of the event too: with RUST_LOG=warn the
            // (info) request span is filtered out, and this line must still
            // say which request hit the panic.
            span.in_scope(|| {
                tracing::error!(
                    request_id = %id,
                    panic.message = %panic_message(&*payload),
                    "handler panicked; answered 500"
                );
                ApiError::Internal("a handler panicked".into()).into_response()
            })
        }
    };

    let status = response.status().as_u16();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.record("status", status);
    span.record("latency_ms", latency_ms);
    span.in_scope(|| tracing::info!(status, latency_ms, "finished"));

    // Sane ids and UUIDs are visible ASCII, always a valid header value.
    let value = HeaderValue::from_str(&id).expect("a sane request id is a valid header value");
    response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    response
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

/// The incoming `X-Request-Id` if it is sane, else a new UUID (v4).
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(&X_REQUEST_ID)
        .map(HeaderValue::as_bytes)
        .filter(|id| sane(id))
        // Sane bytes are ASCII, so this is the same text.
        .map(|id| String::from_utf8_lossy(id).into_owned())
        .unwrap_or_else(|| Uuid::new_v4().to_string())
}

/// 1 to 128 visible ASCII characters (`!` to `~`): no spaces, no control
/// characters, nothing that needs escaping in a header or a log line.
fn sane(id: &[u8]) -> bool {
    (1..=ID_MAX).contains(&id.len()) && id.iter().all(|b| (b'!'..=b'~').contains(b))
}

/// The text of a panic: `panic!("...")` carries a `&str` or a `String`.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a panic without a message)")
}
