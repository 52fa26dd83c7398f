//! Prometheus metrics: what the service counts, and the `/metrics` page.
//!
//! # The design
//!
//! One [`Metrics`] value owns a private `prometheus::Registry` (not the
//! crate's global one: two servers in one process, as in tests, must not
//! share counters) and the handles of every metric in it. It is cheap to
//! clone (every handle is an `Arc` inside) and lives in the router as the
//! state of one middleware, [`track`], and of one handler, [`scrape`].
//!
//! | metric | type | labels | updated |
//! |---|---|---|---|
//! | `http_requests_total` | counter | `method`, `route`, `status` | once per response, by [`track`] |
//! | `http_request_duration_seconds` | histogram | `method`, `route` | once per response, by [`track`] |
//! | `http_requests_in_flight` | gauge | | +1 when a request enters [`track`], -1 when it leaves (a `Drop` guard) |
//! | `db_pool_connections` | gauge | `state` = `idle` / `in_use` | at scrape time, from the pool |
//! | `db_pool_max_connections` | gauge | | at start |
//!
//! **Labels are bounded.** A label value becomes a time series in
//! Prometheus, forever. So `route` is the *template* the path matches
//! (`/tasks/{id}`, see [`template`]), never the raw path: with raw paths every task id would
//! be a new series and the monitoring system would fall over before the
//! service does. Requests no route matched share one value, `<unmatched>`
//! (a client can invent paths without end). `method` is the method when it
//! is one of the nine standard ones and `OTHER` otherwise, for the same
//! reason (HTTP allows any token as a method). `status` is the status code
//! of the response the client gets, whoever produced it: a handler, an
//! `ApiError`, an extractor's rejection (400, 413, 415, 422), the method
//! router (405), the fallback (404) or the timeout (503).
//!
//! **Where the middleware sits.** [`install`] adds it as the outermost
//! layer of the router, after every other layer: it must see the final
//! response. A timeout layer inside it turns a slow request into the 503
//! the client gets, and that 503 is counted; a timeout layer *outside* it
//! would drop the request's future, uncounted. Being outermost, it also
//! sees the router's own answers: the fallback's 404 and the method
//! router's 405.
//!
//! **The `/metrics` request is not counted.** Requests to `/metrics` skip
//! the middleware entirely: they appear in no counter, no histogram and not
//! in the in-flight gauge. A scrape then reads the service as it was
//! before the scrape, and a monitoring system scraping every few seconds
//! does not drown the real traffic in its own. (The other choice, counting
//! it under route `/metrics`, is fine too if done everywhere.)
//! For the same reason the route is added by [`install`], outside the
//! router's own layers: a scrape gets no request span, no request id and
//! no log line (lab 34's tracing), and no request timeout (rendering
//! touches no database).
//!
//! **Buckets.** The service answers from a local PostgreSQL in about a
//! millisecond, a slow query or a lock wait takes tens to hundreds, and
//! `REQUEST_TIMEOUT_MS` (5 s by default) caps everything. So the buckets
//! run from 0.5 ms to 10 s, about three per decade ([`BUCKETS`]): fine
//! where the requests are, and one bucket above the timeout so a timed-out
//! request is not only in `+Inf`. Prometheus histograms are cumulative: the
//! `le="0.005"` bucket counts every request of at most 5 ms, including those
//! of the 0.0025 bucket; the crate does that for us.
//!
//! **Durations are seconds**, as a `f64`, the Prometheus convention (the
//! unit is in the name, `_seconds`): dashboards divide `_sum` by `_count`
//! for a mean and use `histogram_quantile` on the buckets.

use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use sqlx::PgPool;

/// The path of the metrics page.
pub const METRICS_PATH: &str = "/metrics";

/// The `route` label of requests no route matched (404s of unknown paths).
pub const UNMATCHED: &str = "<unmatched>";

/// Upper bounds of the latency buckets, in seconds; see the module docs.
pub const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every metric of the service and the registry that renders them.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGauge,
    pool_connections: IntGaugeVec,
    pool: PgPool,
}

impl Metrics {
    /// Registers every metric; `max_connections` is the pool's configured
    /// maximum (`DB_MAX_CONNECTIONS`), which the pool does not expose.
    pub fn new(pool: PgPool, max_connections: u32) -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests answered, by method, route template and status code.",
            ),
            &["method", "route", "status"],
        )
        .expect("valid counter options");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time from a request's arrival at the router to its response, in seconds.",
            )
            .buckets(BUCKETS.to_vec()),
            &["method", "route"],
        )
        .expect("valid histogram options");
        let in_flight = IntGauge::new(
            "http_requests_in_flight",
            "HTTP requests being handled right now (not counting /metrics).",
        )
        .expect("valid gauge options");
        let pool_connections = IntGaugeVec::new(
            Opts::new(
                "db_pool_connections",
                "Open database connections of the pool, idle or in use, read at scrape time.",
            ),
            &["state"],
        )
        .expect("valid gauge options");
        let pool_max = IntGauge::new(
            "db_pool_max_connections",
            "The most connections the pool opens (DB_MAX_CONNECTIONS).",
        )
        .expect("valid gauge options");
        pool_max.set(i64::from(max_connections));
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(in_flight.clone()),
            Box::new(pool_connections.clone()),
            Box::new(pool_max),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            duration,
            in_flight,
            pool_connections,
            pool,
        }
    }

    /// The exposition: every metric in text format 0.0.4.
    fn render(&self) -> Result<String, prometheus::Error> {
        // The pool's numbers are not events we could count as they happen:
        // read them now. `size` and `num_idle` are two reads, so a
        // connection may change state between them; deriving `in_use`
        // from both keeps `idle + in_use == size` true in every scrape.
        let size = i64::from(self.pool.size());
        let idle = (self.pool.num_idle() as i64).min(size);
        self.pool_connections.with_label_values(&["idle"]).set(idle);
        self.pool_connections
            .with_label_values(&["in_use"])
            .set(size - idle);
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8(out).expect("the text encoder writes UTF-8"))
    }
}

/// Adds `GET /metrics` and the [`track`] middleware to `router`. Call it
/// last, after every other layer, so the middleware is the outermost one.
pub fn install(router: Router, metrics: Metrics) -> Router {
    router
        .route(METRICS_PATH, get(scrape).with_state(metrics.clone()))
        .layer(middleware::from_fn_with_state(metrics, track))
}

/// `GET /metrics`.
async fn scrape(State(metrics): State<Metrics>) -> Response {
    match metrics.render() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(prometheus::TEXT_FORMAT),
            )],
            text,
        )
            .into_response(),
        // Only a registry bug gets here (a metric with an invalid name).
        // The error shape of every other failure, without depending on
        // the API's error type.
        Err(e) => {
            tracing::error!(error = %e, "rendering metrics failed");
            let body = serde_json::json!({"error": {"code": "internal", "message": "the metrics could not be rendered"}});
            (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response()
        }
    }
}

/// Decrements the in-flight gauge when dropped. A request's future can end
/// three ways: it returns a response, it panics, or hyper drops it because
/// the client went away mid-request. Only a guard runs in all three; a
/// `dec()` after `next.run(req).await` would leak one per dropped request.
struct InFlight(IntGauge);

impl InFlight {
    fn enter(gauge: &IntGauge) -> InFlight {
        gauge.inc();
        InFlight(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The middleware: times the request, counts its response.
async fn track(State(metrics): State<Metrics>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path == METRICS_PATH {
        return next.run(req).await;
    }
    let route = template(path).unwrap_or(UNMATCHED);
    let method = method_label(req.method());
    let _in_flight = InFlight::enter(&metrics.in_flight);
    let start = Instant::now();

    let response = next.run(req).await;

    // Count *after* the response exists: its status is only known now,
    // and the client can see its answer only after we return it, so a
    // client that scrapes after its answer always sees it counted.
    let seconds = start.elapsed().as_secs_f64();
    metrics
        .duration
        .with_label_values(&[method, route])
        .observe(seconds);
    metrics
        .requests
        .with_label_values(&[method, route, response.status().as_str()])
        .inc();
    response
}

/// The route template `path` matches, as axum's router matches it: segment
/// by segment, a `{param}` segment matching any one non-empty segment, no
/// trailing-slash leniency, on the raw (still percent-encoded) path.
///
/// With axum's `matched-path` feature the router hands this out itself
/// (the `MatchedPath` request extension, set after routing); this
/// workspace builds axum without it, so we match against the router's own
/// list of templates, `api::ROUTES`, the constants the router is built
/// from (`trace.rs` does the same for the request span's `route`).
fn template(path: &str) -> Option<&'static str> {
    crate::api::ROUTES.iter().copied().find(|t| {
        let mut want = t.split('/');
        let mut got = path.split('/');
        loop {
            match (want.next(), got.next()) {
                (None, None) => return true,
                (Some(w), Some(g)) if w.starts_with('{') => {
                    if g.is_empty() {
                        return false;
                    }
                }
                (Some(w), Some(g)) if w == g => {}
                _ => return false,
            }
        }
    })
}

/// The `method` label: standard methods as themselves, anything else as
/// `OTHER`, so invented methods cannot create series without end.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_their_templates_as_the_router_matches_them() {
        assert_eq!(template("/tasks"), Some("/tasks"));
        assert_eq!(template("/tasks/4b0c-anything"), Some("/tasks/{id}"));
        assert_eq!(template("/tasks/a%2Fb"), Some("/tasks/{id}"));
        for unmatched in [
            "/",
            "",
            "/tasks/",
            "/tasks/a/b",
            "/tasksx",
            "/task",
            "/Tasks",
            "//tasks",
        ] {
            assert_eq!(template(unmatched), None, "{unmatched:?}");
        }
    }
}
