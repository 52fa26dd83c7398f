//! # Lab 35: Prometheus metrics for the tasks service (your part)
//!
//! The API works (it is lab 34's, traced, unchanged). What is missing is the
//! service telling its operators how it is doing: implement `GET /metrics`
//! in the Prometheus text exposition format 0.0.4, with the `prometheus`
//! crate (`Registry`, `IntCounterVec`, `HistogramVec`, `IntGauge`,
//! `IntGaugeVec`, `TextEncoder`). The README's Spec is the contract; in
//! short:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `http_requests_total` | counter | `method`, `route`, `status` |
//! | `http_request_duration_seconds` | histogram (seconds, your buckets) | `method`, `route` |
//! | `http_requests_in_flight` | gauge | |
//! | `db_pool_connections` | gauge | `state` = `idle` / `in_use` |
//! | `db_pool_max_connections` | gauge | |
//!
//! - `route` is the route *template* (`/tasks/{id}`), never the raw path;
//!   every path no route matches shares one value (e.g. `<unmatched>`).
//! - `method` is one of the standard methods, or one shared value for any
//!   other token a client invents.
//! - `status` is the status of the response the client gets, whoever made
//!   it (a handler, an extractor's rejection, the 404 fallback, the 405
//!   method router, the request timeout's 503).
//! - The pool gauges are read from the pool when `/metrics` is scraped.
//! - Decide whether `/metrics` counts itself (not at all, or everywhere
//!   under route `/metrics`) and say so in the README.
//!
//! `main.rs` already calls [`Metrics::new`] and [`install`]; it stays as it
//! is. Until you are done, `/metrics` answers 501 and nothing is counted.

#![allow(unused)]

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use sqlx::PgPool;

/// Every metric of the service and the registry that renders them.
#[derive(Clone)]
pub struct Metrics {
    // TODO: a prometheus::Registry of your own (not the global one) and the
    // handles of the metrics in it; the pool, to read its gauges at scrape
    // time.
}

impl Metrics {
    /// Registers every metric; `max_connections` is the pool's configured
    /// maximum (`DB_MAX_CONNECTIONS`).
    pub fn new(pool: PgPool, max_connections: u32) -> Metrics {
        // TODO: create and register the metrics of the table above.
        Metrics {}
    }
}

/// Adds `GET /metrics` and the middleware that counts and times every
/// request to `router`. `main.rs` calls it last, after every other layer.
pub fn install(router: Router, metrics: Metrics) -> Router {
    // TODO: render the registry with prometheus::TextEncoder, with
    // `Content-Type: text/plain; version=0.0.4`; add a middleware
    // (axum::middleware::from_fn_with_state) around the whole router.
    router.route("/metrics", get(not_yet))
}

async fn not_yet() -> impl IntoResponse {
    let body = serde_json::json!({"error": {"code": "internal", "message": "GET /metrics is not implemented yet"}});
    (StatusCode::NOT_IMPLEMENTED, axum::Json(body))
}
