//! The grader for lab 34: the tasks service with structured tracing.
//!
//! Tests 01..=19 are the chapter's shared suite (`labkit::tasks_suite!`):
//! the same CRUD traffic as labs 32 and 33, against this lab's binary on a
//! fresh PostgreSQL database. What makes them this lab's tests is the
//! observer below: after every suite test it reads the server's stderr and
//! requires, for every request the suite made, exactly one "finished" log
//! line in that request's `request` span, with the request id the response
//! echoed in `X-Request-Id`, the method, the route template, the status and
//! a numeric latency. So the suite's traffic (errors, 404s, 405s,
//! concurrent PATCHes, shutdowns) is what grades the logs.
//!
//! Tests from 20 on are this lab's own: every stderr line is JSON, request
//! ids are honoured, generated and sanitised, the database spans nest in
//! the request span, `RUST_LOG` filters, a panic is contained and logged,
//! and concurrent requests never mix their ids.
//!
//! # What a "finished line" is
//!
//! A line (one JSON object, tracing-subscriber's JSON format) that happened
//! inside a span named `request` whose field `request_id` is the request's
//! id, and whose event carries a field `latency_ms` (a number). Its status
//! is the event's field `status` and/or the `request` span's `status`; its
//! method and route are the span's `method` and `route`. Every place a value
//! appears must agree with the response: a span that recorded `status=200`
//! before the handler ran is caught even when the event says 404.
//!
//! # Waiting without sleeping
//!
//! A server may write its finished line an instant after the client got the
//! response (after the body went out, say). So the tests wait for the lines
//! they need, woken by the server's output (`labkit::jsonlog::wait_lines`),
//! with a deadline; nothing sleeps.

use std::collections::{BTreeMap, HashSet};
use std::thread;
use std::time::Duration;

use labkit::Report;
use labkit::jsonlog::{self, LogLine, number, text};
use labkit::server::{Server, StderrMark};
use labkit::services::TestDb;
use labkit::tasks_suite::{App, Exchange, UNMATCHED};
use labkit::wait::{eventually, within_async};
use reqwest::blocking::Client;
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

const BIN: &str = env!("CARGO_BIN_EXE_tasks_traced");

/// How long the server gets to write the log lines of requests it has
/// already answered.
const LOG_DEADLINE: Duration = Duration::from_secs(2);

/// The deadline of one database call made by the test.
const CALL: Duration = Duration::from_secs(10);

/// The header this lab is about.
const RID: &str = "x-request-id";

// ---------------------------------------------------------------------------
// What a request's log must say.

/// The route a request's `request` span must name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    /// The matched template, e.g. `/tasks/{id}`.
    Template(String),
    /// No route matched `path`: any placeholder (e.g. `<unmatched>`), but
    /// never the raw path (that would give every unknown URL its own value).
    Unmatched { path: String },
}

impl Route {
    fn of(template: &str) -> Route {
        Route::Template(template.to_string())
    }

    fn describe(&self) -> String {
        match self {
            Route::Template(t) => format!("route {t:?}"),
            Route::Unmatched { path } => {
                format!("a placeholder route for an unmatched path (not the raw path {path:?})")
            }
        }
    }

    fn accepts(&self, got: &str) -> bool {
        match self {
            Route::Template(t) => got == t,
            Route::Unmatched { path } => {
                let raw = path.split('?').next().unwrap_or(path);
                !got.is_empty() && got != raw && got != path && !got.starts_with("/tasks")
            }
        }
    }
}

/// One request the test made, and what its log must say.
#[derive(Debug, Clone)]
struct Want {
    /// For messages: `GET /tasks/abc`.
    what: String,
    method: String,
    route: Route,
    status: u16,
    /// The id the response echoed.
    id: String,
}

/// Whether `id` is what the spec calls sane: 1 to 128 visible ASCII
/// characters (`!` to `~`).
fn sane(id: &[u8]) -> bool {
    (1..=128).contains(&id.len()) && id.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// The `request_id` of the innermost `request` span of a line.
fn request_id_of(line: &LogLine) -> Option<String> {
    line.span_field("request", "request_id").and_then(text)
}

/// Whether the line is a finished line (see the module docs) of `id`.
fn is_finished_of(line: &LogLine, id: &str) -> bool {
    line.field("latency_ms").is_some() && request_id_of(line).as_deref() == Some(id)
}

/// Every finished line (of any request).
fn is_finished(line: &LogLine) -> bool {
    line.field("latency_ms").is_some() && line.span("request").is_some()
}

/// What is wrong with `line` as the finished line of `want`, if anything.
fn check_finished(line: &LogLine, want: &Want) -> Result<(), String> {
    let mut wrong = Vec::new();
    let span = |f: &str| line.span_field("request", f);
    match span("method").and_then(text) {
        Some(m) if m.eq_ignore_ascii_case(&want.method) => {}
        Some(m) => wrong.push(format!(
            "its request span says method {m:?}, not {:?}",
            want.method
        )),
        None => wrong.push("its request span has no field `method`".to_string()),
    }
    match span("route").and_then(text) {
        Some(r) if want.route.accepts(&r) => {}
        Some(r) => wrong.push(format!(
            "its request span says route {r:?}, expected {}",
            want.route.describe()
        )),
        None => wrong.push("its request span has no field `route`".to_string()),
    }
    let statuses: Vec<(&str, &Value)> = [("event", line.field("status")), ("span", span("status"))]
        .into_iter()
        .filter_map(|(w, v)| v.map(|v| (w, v)))
        .collect();
    if statuses.is_empty() {
        wrong.push(
            "it has no `status` (neither a field of the event nor of the request span)".to_string(),
        );
    }
    for (place, v) in statuses {
        if number(v) != Some(f64::from(want.status)) {
            wrong.push(format!(
                "the {place}'s status is {v}, but the response was {}",
                want.status
            ));
        }
    }
    match line.field("latency_ms").and_then(number) {
        Some(ms) if ms >= 0.0 => {}
        _ => wrong.push(format!(
            "its latency_ms is {}, not a number of milliseconds",
            line.field("latency_ms")
                .map_or("missing".into(), |v| v.to_string())
        )),
    }
    if let Some(v) = span("latency_ms")
        && number(v).is_none_or(|ms| ms < 0.0)
    {
        wrong.push(format!(
            "its request span's latency_ms is {v}, not a number"
        ));
    }
    // Every request id on the line must be this request's.
    for v in [line.field("request_id")]
        .into_iter()
        .flatten()
        .chain(line.spans().into_iter().filter_map(|s| s.get("request_id")))
    {
        if text(v).as_deref() != Some(want.id.as_str()) {
            wrong.push(format!(
                "it also carries request_id {v}, another request's id"
            ));
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("; "))
    }
}

/// Waits until every request in `wants` has a finished line, then checks
/// that each has exactly one and that it says the right things. Returns
/// every line since `mark` (all JSON). `wants` holds every request the
/// server got since `mark` (the early exit below counts on it).
#[track_caller]
fn expect_finished_lines(server: &Server, mark: StderrMark, wants: &[Want]) -> Vec<LogLine> {
    // Done when every request has its line, or when the server has logged
    // as many finished events (anywhere) as there were requests: then what
    // is missing is misattributed, not late, and waiting changes nothing.
    let lines = jsonlog::wait_lines(server, mark, LOG_DEADLINE, |lines| {
        wants
            .iter()
            .all(|w| lines.iter().any(|l| is_finished_of(l, &w.id)))
            || lines
                .iter()
                .filter(|l| l.field("latency_ms").is_some())
                .count()
                >= wants.len()
    });
    for w in wants {
        let mine: Vec<&LogLine> = lines.iter().filter(|l| is_finished_of(l, &w.id)).collect();
        let problem = match mine.as_slice() {
            [] => {
                let with_id: Vec<&LogLine> =
                    lines.iter().filter(|l| l.raw.contains(&w.id)).collect();
                Some(format!(
                    "no finished line for it within {LOG_DEADLINE:?}; lines that mention its id:\n{}",
                    jsonlog::quote(&with_id, 10)
                ))
            }
            [one] => check_finished(one, w)
                .err()
                .map(|e| format!("its finished line is wrong: {e}\n{one}")),
            many => Some(format!(
                "{} finished lines for it (one request, one line):\n{}",
                many.len(),
                jsonlog::quote(many, 5)
            )),
        };
        if let Some(problem) = problem {
            let others: Vec<&LogLine> = lines.iter().filter(|l| is_finished(l)).collect();
            server
                .report()
                .did(format!("sent {}, answered {} with X-Request-Id {:?}", w.what, w.status, w.id))
                .expected(format!(
                    "exactly one finished line (an event with field latency_ms) in a span named `request` with request_id {:?}, method {:?}, {}, status {} and a numeric latency_ms",
                    w.id,
                    w.method,
                    w.route.describe(),
                    w.status
                ))
                .got(format!(
                    "{problem}\n[test] all finished lines seen:\n{}",
                    jsonlog::quote(&others, 12)
                ))
                .hint("wrap every request in an info_span!(\"request\", method, route (the template), request_id, status = Empty, latency_ms = Empty); when the response is ready, record status and latency_ms and log one info! event with both, inside the span (span.in_scope)")
                .fail();
        }
    }
    lines
}

// ---------------------------------------------------------------------------
// One test's world.

/// A server on a fresh database, the test's HTTP client and its own pool.
/// Fields drop in order: the server first, the database last.
struct Lab {
    server: Server,
    http: Client,
    pool: PgPool,
    rt: tokio::runtime::Runtime,
    db: TestDb,
}

/// One response, as the tests need it.
#[derive(Debug, Clone)]
struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    fn describe(&self) -> String {
        let rid = self.header(RID).map_or("no X-Request-Id".to_string(), |v| {
            format!("X-Request-Id {v:?}")
        });
        format!("{} ({rid}) {}", self.status, self.body)
    }
}

/// How to start the server: its `RUST_LOG` (None: unset, the default) and
/// any further environment.
fn spawn(db: &TestDb, rust_log: Option<&str>, env: &[(&str, &str)]) -> Server {
    let mut b = Server::builder(BIN)
        .keep_stderr()
        .env("DATABASE_URL", &db.url)
        .env_remove("RUST_LOG")
        .env_remove("LISTEN_ADDR");
    if let Some(filter) = rust_log {
        b = b.env("RUST_LOG", filter);
    }
    for (k, v) in env {
        b = b.env(k, v);
    }
    b.spawn()
}

fn lab_with(rust_log: Option<&str>, env: &[(&str, &str)]) -> Lab {
    let db = labkit::services::postgres();
    let server = spawn(&db, rust_log, env);
    let rt = labkit::wait::runtime(2);
    let pool = rt.block_on(async {
        within_async(
            CALL,
            "PgPoolOptions::connect (the test's own pool)",
            PgPoolOptions::new().max_connections(2).connect(&db.url),
        )
        .await
        .unwrap_or_else(|e| {
            Report::new(format!("connected to {}", db.url))
                .got(e)
                .fail()
        })
    });
    Lab {
        server,
        http: labkit::http::client(),
        pool,
        rt,
        db,
    }
}

fn lab(rust_log: Option<&str>) -> Lab {
    lab_with(rust_log, &[])
}

/// Sends one request to `server`; `rid` is the X-Request-Id to send (raw
/// bytes, so that insane ones can be sent too), `body` is sent as JSON.
fn send(
    http: &Client,
    server: &Server,
    method: &str,
    path: &str,
    rid: Option<&[u8]>,
    body: Option<&str>,
) -> Resp {
    let what = describe_request(method, path, rid);
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("a valid method");
    let mut req = http.request(m, labkit::http::url(server, path));
    if let Some(rid) = rid {
        let v = HeaderValue::from_bytes(rid).expect("the test sends a header value hyper accepts");
        req = req.header(HeaderName::from_static(RID), v);
    }
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    match req.send() {
        Ok(r) => {
            let status = r.status().as_u16();
            let headers = r.headers().clone();
            let body = r.text().unwrap_or_default();
            Resp {
                status,
                headers,
                body,
            }
        }
        Err(e) => server
            .report()
            .did(format!("sent {what}"))
            .expected("an HTTP response")
            .got(format!("no response: {}", labkit::report::error_chain(&e)))
            .hint("did the handler panic? A panic must become a 500 `internal` answer (catch it around the handler), not a dropped connection")
            .fail(),
    }
}

fn describe_request(method: &str, path: &str, rid: Option<&[u8]>) -> String {
    match rid {
        Some(r) => format!(
            "{method} {path} with X-Request-Id {}",
            labkit::report::show(r)
        ),
        None => format!("{method} {path} without X-Request-Id"),
    }
}

impl Lab {
    fn send(&self, method: &str, path: &str, rid: Option<&str>, body: Option<&str>) -> Resp {
        send(
            &self.http,
            &self.server,
            method,
            path,
            rid.map(str::as_bytes),
            body,
        )
    }

    /// Sends a request and returns what its finished line must say. With
    /// `rid`, the response must echo exactly that id; without, a sane one.
    #[track_caller]
    fn exchange(
        &self,
        method: &str,
        path: &str,
        route: Route,
        rid: Option<&str>,
        body: Option<&str>,
        status: u16,
    ) -> (Resp, Want) {
        let r = self.send(method, path, rid, body);
        let what = describe_request(method, path, rid.map(str::as_bytes));
        if r.status != status {
            self.server
                .report()
                .did(format!("sent {what}"))
                .expected(format!("status {status}"))
                .got(r.describe())
                .hint("the API itself is lab 33's; did something in the tracing layer change the answer?")
                .fail();
        }
        let id = self.echoed(&r, &what, rid);
        let want = Want {
            what,
            method: method.to_string(),
            route,
            status,
            id,
        };
        (r, want)
    }

    #[track_caller]
    fn echoed(&self, r: &Resp, what: &str, sent: Option<&str>) -> String {
        echoed(&self.server, r, what, sent)
    }

    /// Creates a task through the API; returns its id.
    #[track_caller]
    fn create(&self, title: &str, rid: Option<&str>) -> (String, Want) {
        let body = format!(r#"{{"title": "{title}"}}"#);
        let (r, want) = self.exchange("POST", "/tasks", Route::of("/tasks"), rid, Some(&body), 201);
        let id = r.json()["id"].as_str().map(str::to_string);
        match id {
            Some(id) => (id, want),
            None => self
                .server
                .report()
                .did(format!("sent POST /tasks {body}"))
                .expected("201 with the task, {\"id\": \"...\", ...}")
                .got(r.describe())
                .fail(),
        }
    }

    fn sql(&self, statement: &'static str, id: &str) {
        self.rt.block_on(async {
            within_async(
                CALL,
                statement,
                sqlx::query(statement).bind(id).execute(&self.pool),
            )
            .await
            .unwrap_or_else(|e| Report::new(format!("ran {statement}")).got(e).fail());
        });
    }

    /// Breaks the invariant the API guarantees (priority 1..=5) in one row,
    /// behind the service's back.
    fn corrupt(&self, id: &str) {
        self.sql("UPDATE tasks SET priority = 9 WHERE id::text = $1", id);
    }

    /// Every stderr line so far, parsed (fails on a non-JSON line).
    fn all_lines(&self) -> Vec<LogLine> {
        jsonlog::lines_since(&self.server, StderrMark::START)
    }

    fn contained_panic(&self, task: &str, rid: &str) -> (Want, Vec<LogLine>) {
        expect_contained_panic(&self.server, &self.http, task, rid)
    }
}

/// The X-Request-Id the response echoed; with `sent`, it must be that.
#[track_caller]
fn echoed(server: &Server, r: &Resp, what: &str, sent: Option<&str>) -> String {
    let got = r.headers.get(RID).map(|v| v.as_bytes().to_vec());
    let ok = match (&got, sent) {
        (Some(g), Some(s)) => g == s.as_bytes(),
        (Some(g), None) => sane(g),
        (None, _) => false,
    };
    if !ok {
        let expected = match sent {
            Some(s) => format!("the response to echo X-Request-Id {s:?} (it is sane: 1 to 128 visible ASCII characters)"),
            None => "the response to carry a generated X-Request-Id (1 to 128 visible ASCII characters, e.g. a UUID)".to_string(),
        };
        server
            .report()
            .did(format!("sent {what}"))
            .expected(expected)
            .got(r.describe())
            .hint("set X-Request-Id on every response, errors included, in the same middleware that opens the request span (outermost, so nothing answers around it)")
            .fail();
    }
    String::from_utf8(got.unwrap_or_default()).expect("sane ids are ASCII")
}

/// The panic test's core: GET a corrupted task; it must answer 500
/// `internal` with the error shape and the id, and an ERROR line must carry
/// the id. Returns the response's want and the error lines.
#[track_caller]
fn expect_contained_panic(
    server: &Server,
    http: &Client,
    task: &str,
    rid: &str,
) -> (Want, Vec<LogLine>) {
    let path = format!("/tasks/{task}");
    let what = format!(
        "GET {path} with X-Request-Id {rid:?}, after the test set the task's priority to 9 in the database (UPDATE tasks SET priority = 9)"
    );
    let r = send(http, server, "GET", &path, Some(rid.as_bytes()), None);
    let body = r.json();
    let shape_ok = body["error"]["code"] == "internal"
        && body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.trim().is_empty());
    let ct = r.header("content-type").unwrap_or_default();
    if r.status != 500 || !shape_ok || !ct.starts_with("application/json") {
        server
            .report()
            .did(format!("sent {what}"))
            .expected("500 with Content-Type application/json and {\"error\": {\"code\": \"internal\", \"message\": \"...\"}}: the store's expect on the broken invariant panics, and the panic is caught and answered")
            .got(format!("{} (Content-Type {ct:?})", r.describe()))
            .hint("does the store still expect priority 1..=5 when it converts a row? Is the panic caught around the handler (catch_unwind, or tower-http's CatchPanicLayer) and turned into ApiError::Internal?")
            .fail();
    }
    let id = echoed(server, &r, &what, Some(rid));
    let want = Want {
        what: what.clone(),
        method: "GET".into(),
        route: Route::of("/tasks/{id}"),
        status: 500,
        id,
    };
    let is_error_of = |l: &LogLine| {
        l.level().as_deref() == Some("ERROR")
            && (l.find("request_id").and_then(text).as_deref() == Some(rid)
                || request_id_of(l).as_deref() == Some(rid))
    };
    let lines = jsonlog::wait_lines(server, StderrMark::START, LOG_DEADLINE, |ls| {
        ls.iter().any(is_error_of)
    });
    let errors: Vec<LogLine> = lines.iter().filter(|l| is_error_of(l)).cloned().collect();
    if errors.is_empty() {
        let all_errors: Vec<&LogLine> = lines
            .iter()
            .filter(|l| l.level().as_deref() == Some("ERROR"))
            .collect();
        server
            .report()
            .did(format!("sent {what}; answered 500"))
            .expected(format!("a line at level ERROR that carries request_id {rid:?} (as a field of the event, or of its request span): who was hit by the panic"))
            .got(format!("ERROR lines seen:\n{}", jsonlog::quote(&all_errors, 8)))
            .hint("log the panic with error!(request_id = %id, ...) where it is caught; the default panic hook prints plain text and knows no request id: replace it (std::panic::set_hook) with one that logs through tracing")
            .fail();
    }
    if !server.is_alive() {
        server.expect_alive(format!("sent {what}"));
    }
    (want, errors)
}

// ---------------------------------------------------------------------------
// The shared suite, with this lab's observer.

/// The suite's app: this lab's server on a fresh database (default
/// `RUST_LOG`), with the observer that grades the log of every exchange.
fn app() -> App {
    let db = labkit::services::postgres();
    let server = spawn(&db, None, &[]);
    App::new(server).keep(db).observer(observe)
}

labkit::tasks_suite! { app: crate::app }

/// After each suite test: every exchange has exactly one finished line that
/// matches it (see the module docs), and every line is JSON. An exchange
/// the suite abandoned on purpose (status 0: a client reset mid-request)
/// may have at most one finished line, of its method and route, with any
/// status, under an id the suite never saw.
fn observe(app: &App, exchanges: &[Exchange]) {
    let server = app.server();
    let mut wants = Vec::new();
    let mut abandoned = Vec::new();
    for ex in exchanges {
        let what = format!("{} {}", ex.method, labkit::report::show(&ex.path));
        if ex.status == 0 {
            abandoned.push(ex);
            continue;
        }
        let id = match &ex.request_id {
            Some(id) if sane(id.as_bytes()) => id.clone(),
            other => server
                .report()
                .did(format!("(the shared suite) sent {what}, answered {}", ex.status))
                .expected("an X-Request-Id on the response (1 to 128 visible ASCII characters): every response carries one, errors and 404s included")
                .got(match other {
                    Some(id) => format!("X-Request-Id {id:?}"),
                    None => "no X-Request-Id header".to_string(),
                })
                .hint("set the header in the outermost middleware, the one that opens the request span, so that no response (a 404 from the fallback, a 405, a 413, a 503 from the timeout) bypasses it")
                .fail(),
        };
        let route = if ex.route == UNMATCHED {
            Route::Unmatched {
                path: ex.path.clone(),
            }
        } else {
            Route::of(ex.route)
        };
        wants.push(Want {
            what: format!("(the shared suite) {what}"),
            method: ex.method.clone(),
            route,
            status: ex.status,
            id,
        });
    }
    let lines = expect_finished_lines(server, StderrMark::START, &wants);
    // Finished lines no exchange explains: at most one per abandoned one.
    let known: HashSet<&str> = wants.iter().map(|w| w.id.as_str()).collect();
    let extra: Vec<&LogLine> = lines
        .iter()
        .filter(|l| {
            is_finished(l) && request_id_of(l).is_none_or(|id| !known.contains(id.as_str()))
        })
        .collect();
    let unexplained: Vec<&LogLine> = extra
        .iter()
        .copied()
        .filter(|l| {
            let method = l.span_field("request", "method").and_then(text);
            !abandoned
                .iter()
                .any(|ex| method.as_deref() == Some(ex.method.as_str()))
        })
        .collect();
    if extra.len() > abandoned.len() || !unexplained.is_empty() {
        server
            .report()
            .did(format!("(the shared suite) made {} requests, {} of them abandoned mid-request", exchanges.len(), abandoned.len()))
            .expected(format!("one finished line per request, and at most {} more for the abandoned ones", abandoned.len()))
            .got(format!("{} finished lines under ids no response carried:\n{}", extra.len(), jsonlog::quote(&extra, 8)))
            .hint("log the finished event once per request, in one place (the middleware), with the id the response carries")
            .fail();
    }
}

// ---------------------------------------------------------------------------
// This lab's own tests.

// Every stderr line is one JSON object and stdout says nothing after `listening on`, at the default level (info: no debug lines).
#[test]
fn test_20_logs_one_json_object_per_line_on_stderr_only() {
    let lab = lab(None);
    let mut wants = Vec::new();
    let (task, w) = lab.create("write the grader", Some("t20-create"));
    wants.push(w);
    let t = format!("/tasks/{task}");
    let cases: [(&str, &str, Route, Option<&str>, u16); 7] = [
        ("GET", &t, Route::of("/tasks/{id}"), None, 200),
        ("GET", "/tasks?limit=2", Route::of("/tasks"), None, 200),
        (
            "GET",
            "/tasks/not-a-uuid",
            Route::of("/tasks/{id}"),
            None,
            404,
        ),
        (
            "GET",
            "/no/such/path",
            Route::Unmatched {
                path: "/no/such/path".into(),
            },
            None,
            404,
        ),
        ("DELETE", "/tasks", Route::of("/tasks"), None, 405),
        ("GET", "/tasks?limit=0", Route::of("/tasks"), None, 422),
        (
            "PATCH",
            &t,
            Route::of("/tasks/{id}"),
            Some(r#"{"done": true}"#),
            200,
        ),
    ];
    for (i, (method, path, route, body, status)) in cases.into_iter().enumerate() {
        let rid = format!("t20-{i}");
        let (_, w) = lab.exchange(method, path, route, Some(&rid), body, status);
        wants.push(w);
    }
    let lines = expect_finished_lines(&lab.server, StderrMark::START, &wants);
    let verbose: Vec<&LogLine> = lines
        .iter()
        .filter(|l| matches!(l.level().as_deref(), Some("DEBUG" | "TRACE")))
        .collect();
    if !verbose.is_empty() {
        lab.server
            .report()
            .did("started the server without RUST_LOG and sent 8 requests")
            .expected("no DEBUG or TRACE lines: the default filter is `info`")
            .got(format!("{} such lines:\n{}", verbose.len(), jsonlog::quote(&verbose, 5)))
            .hint("build the EnvFilter from RUST_LOG with a default directive of info (EnvFilter::builder().with_default_directive(LevelFilter::INFO.into()).from_env_lossy())")
            .fail();
    }
    let unleveled: Vec<&LogLine> = lines.iter().filter(|l| l.level().is_none()).collect();
    if !unleveled.is_empty() {
        lab.server
            .report()
            .did("read every stderr line as JSON")
            .expected("every line to have a `level` (tracing-subscriber's JSON format)")
            .got(jsonlog::quote(&unleveled, 5))
            .hint("log only through the tracing subscriber")
            .fail();
    }
    lab.server.check_quiet_stdout();
}

// A sane incoming X-Request-Id is echoed, names the request span, and reaches the db.query child spans of every store call (RUST_LOG=debug).
#[test]
fn test_21_request_id_reaches_the_database_spans() {
    let lab = lab(Some("debug"));
    let (task, create) = lab.create("traced", Some("t21-create"));
    let (other, create_2) = lab.create("to delete", Some("t21-create-2"));
    let t = format!("/tasks/{task}");
    let o = format!("/tasks/{other}");
    let mut wants = vec![create, create_2];
    // (method, path, route, body, status, request id)
    #[allow(clippy::type_complexity)]
    let cases: [(&str, &str, &str, Option<&str>, u16, &str); 6] = [
        ("GET", &t, "/tasks/{id}", None, 200, "t21-get"),
        ("GET", "/tasks?done=false", "/tasks", None, 200, "t21-list"),
        (
            "PATCH",
            &t,
            "/tasks/{id}",
            Some(r#"{"priority": 5}"#),
            200,
            "t21-patch",
        ),
        (
            "PUT",
            &t,
            "/tasks/{id}",
            Some(r#"{"title": "x", "done": true, "priority": 1}"#),
            200,
            "t21-put",
        ),
        ("DELETE", &o, "/tasks/{id}", None, 204, "t21-delete"),
        ("GET", &o, "/tasks/{id}", None, 404, "t21-gone"),
    ];
    for (method, path, route, body, status, rid) in cases {
        let (_, w) = lab.exchange(method, path, Route::of(route), Some(rid), body, status);
        wants.push(w);
    }
    let lines = expect_finished_lines(&lab.server, StderrMark::START, &wants);
    let db_lines: Vec<&LogLine> = lines
        .iter()
        .filter(|l| l.span("db.query").is_some())
        .collect();
    // A database span outside any request span is a detached one.
    let detached: Vec<&LogLine> = db_lines
        .iter()
        .copied()
        .filter(|l| !l.nested("request", "db.query"))
        .collect();
    if !detached.is_empty() {
        lab.server
            .report()
            .did("sent 8 requests with RUST_LOG=debug and read the lines inside `db.query` spans")
            .expected("every db.query span to be a child of the request span it serves (JSON `spans`: [..., {\"name\": \"request\", ...}, ..., {\"name\": \"db.query\", ...}])")
            .got(format!("{} db.query lines outside any request span:\n{}", detached.len(), jsonlog::quote(&detached, 5)))
            .hint("a span's parent is the span current where it is created: #[tracing::instrument] on the store's methods, called from the handler inside the request span; no `parent = None`, and a spawned task needs .instrument(Span::current())")
            .fail();
    }
    for w in &wants {
        let mine: Vec<&LogLine> = db_lines
            .iter()
            .copied()
            .filter(|l| request_id_of(l).as_deref() == Some(w.id.as_str()))
            .collect();
        let bad_op = mine.iter().find(|l| {
            l.span_field("db.query", "db.operation")
                .and_then(text)
                .is_none_or(|op| op.trim().is_empty())
        });
        if mine.is_empty() || bad_op.is_some() {
            let got = match bad_op {
                Some(l) => format!("a db.query span without a `db.operation` field: {l}"),
                None => format!(
                    "no line inside a db.query span under request {:?}; all db.query lines:\n{}",
                    w.id,
                    jsonlog::quote(&db_lines, 8)
                ),
            };
            lab.server
                .report()
                .did(format!("sent {} with RUST_LOG=debug", w.what))
                .expected(format!("at least one line inside a span named db.query (with a field db.operation, e.g. \"select\") nested in the request span with request_id {:?}", w.id))
                .got(got)
                .hint("#[tracing::instrument(name = \"db.query\", skip_all, fields(db.operation = \"select\"))] on each store method, and a debug! event inside it (e.g. when the query returns) so the span shows in the log")
                .fail();
        }
    }
    lab.server.check_quiet_stdout();
}

// Requests without an X-Request-Id get a generated one: sane, echoed, different for every request, and the one their log lines carry.
#[test]
fn test_22_generates_a_unique_request_id_per_request() {
    let lab = lab(None);
    let mut wants = Vec::new();
    let (task, w) = lab.create("ids", None);
    wants.push(w);
    let t = format!("/tasks/{task}");
    for i in 0..12 {
        let (method, path, route, status) = match i % 4 {
            0 => ("GET", t.as_str(), Route::of("/tasks/{id}"), 200),
            1 => ("GET", "/tasks", Route::of("/tasks"), 200),
            2 => (
                "GET",
                "/nowhere",
                Route::Unmatched {
                    path: "/nowhere".into(),
                },
                404,
            ),
            _ => ("PUT", "/tasks", Route::of("/tasks"), 405),
        };
        let (_, w) = lab.exchange(method, path, route, None, None, status);
        wants.push(w);
    }
    let mut seen = HashSet::new();
    for w in &wants {
        if !seen.insert(w.id.clone()) {
            lab.server
                .report()
                .did(format!(
                    "sent {} requests without X-Request-Id",
                    wants.len()
                ))
                .expected("a different generated id for each request")
                .got(format!(
                    "{:?} was given to two requests: {:?}",
                    w.id,
                    wants.iter().map(|w| &w.id).collect::<Vec<_>>()
                ))
                .hint("generate a fresh one per request (Uuid::new_v4()), not once at start")
                .fail();
        }
    }
    expect_finished_lines(&lab.server, StderrMark::START, &wants);
}

// An insane incoming X-Request-Id (too long, with spaces, tabs or non-ASCII bytes, empty) is replaced by a generated one; the limits themselves (1 and 128 visible characters) are honoured.
#[test]
fn test_23_replaces_an_insane_request_id() {
    let lab = lab(None);
    let long_ok: String = (0..128).map(|i| (b'!' + (i % 94) as u8) as char).collect();
    let too_long = "a".repeat(129);
    let honoured: [&str; 3] = ["x", &long_ok, "trace-0af7651916cd43dd8448eb211c80319c"];
    let mut wants = Vec::new();
    for rid in honoured {
        let (_, w) = lab.exchange("GET", "/tasks", Route::of("/tasks"), Some(rid), None, 200);
        wants.push(w);
    }
    let insane: [(&str, &[u8]); 5] = [
        ("129 characters", too_long.as_bytes()),
        ("a space", b"has space"),
        ("a tab", b"tab\there"),
        ("non-ASCII bytes", "caf\u{e9}-\u{1f600}".as_bytes()),
        ("nothing (empty)", b""),
    ];
    for (why, rid) in insane {
        let what = format!(
            "GET /tasks with X-Request-Id {} ({why})",
            labkit::report::show(rid)
        );
        let r = send(&lab.http, &lab.server, "GET", "/tasks", Some(rid), None);
        let got = r.headers.get(RID).map(|v| v.as_bytes().to_vec());
        match &got {
            Some(g) if sane(g) && g.as_slice() != rid => {}
            _ => lab
                .server
                .report()
                .did(format!("sent {what}"))
                .expected("a generated X-Request-Id in the response (sane: 1 to 128 visible ASCII characters), not the one sent: ids go into every log line, and a client must not be able to forge or flood them")
                .got(r.describe())
                .hint("accept the incoming id only if it is 1..=128 bytes, each b'!'..=b'~'; otherwise generate one")
                .fail(),
        }
        wants.push(Want {
            what,
            method: "GET".into(),
            route: Route::of("/tasks"),
            status: r.status,
            id: String::from_utf8(got.unwrap_or_default()).expect("sane ids are ASCII"),
        });
    }
    let lines = expect_finished_lines(&lab.server, StderrMark::START, &wants);
    let leaked: Vec<&LogLine> = lines
        .iter()
        .filter(|l| l.raw.contains(too_long.as_str()) || l.raw.contains("has space"))
        .collect();
    if !leaked.is_empty() {
        lab.server
            .report()
            .did("sent requests with insane X-Request-Id values (129 characters, with a space)")
            .expected("those values nowhere in the log: they were replaced")
            .got(jsonlog::quote(&leaked, 4))
            .hint("record the id you decided on, not the header as it came")
            .fail();
    }
}

// RUST_LOG=warn silences the per-request info lines, while a panic's error line (with its request id) still shows.
#[test]
fn test_24_rust_log_warn_keeps_only_warnings_and_errors() {
    let lab = lab(Some("warn"));
    let (task, _) = lab.create("quiet", Some("t24-create"));
    let (broken, _) = lab.create("broken", Some("t24-create-2"));
    lab.send("GET", &format!("/tasks/{task}"), Some("t24-get"), None);
    lab.send("GET", "/nowhere", Some("t24-404"), None);
    lab.corrupt(&broken);
    lab.contained_panic(&broken, "t24-panic");
    let lines = lab.all_lines();
    let chatty: Vec<&LogLine> = lines
        .iter()
        .filter(|l| !matches!(l.level().as_deref(), Some("WARN" | "ERROR")))
        .collect();
    if !chatty.is_empty() {
        lab.server
            .report()
            .did("started the server with RUST_LOG=warn and sent 5 requests, one of which panicked")
            .expected("only WARN and ERROR lines")
            .got(format!("{} other lines:\n{}", chatty.len(), jsonlog::quote(&chatty, 6)))
            .hint("take the filter from RUST_LOG (tracing_subscriber::EnvFilter), do not hard-code a level")
            .fail();
    }
    lab.server.expect_alive("sent 5 requests");
}

// RUST_LOG takes target directives as documented: `warn,tasks_traced=info` keeps the service's finished lines, `info,tasks_traced=warn` drops them.
#[test]
fn test_25_rust_log_filters_by_target() {
    let lab = lab(Some("warn,tasks_traced=info"));
    let (task, w) = lab.create("targets", Some("t25-create"));
    let (_, w2) = lab.exchange(
        "GET",
        &format!("/tasks/{task}"),
        Route::of("/tasks/{id}"),
        Some("t25-get"),
        None,
        200,
    );
    let (broken, w3) = lab.create("to break", Some("t25-create-2"));
    expect_finished_lines(&lab.server, StderrMark::START, &[w, w2, w3]);

    let quiet = spawn(&lab.db, Some("info,tasks_traced=warn"), &[]);
    send(
        &lab.http,
        &quiet,
        "GET",
        "/tasks",
        Some(b"t25-q-list"),
        None,
    );
    lab.corrupt(&broken);
    // The error line proves the filter let the service's errors through.
    expect_contained_panic(&quiet, &lab.http, &broken, "t25-q-panic");
    let lines = jsonlog::lines_since(&quiet, StderrMark::START);
    let own_info: Vec<&LogLine> = lines
        .iter()
        .filter(|l| {
            l.target()
                .is_some_and(|t| t == "tasks_traced" || t.starts_with("tasks_traced::"))
                && !matches!(l.level().as_deref(), Some("WARN" | "ERROR"))
        })
        .collect();
    let finished: Vec<&LogLine> = lines
        .iter()
        .filter(|l| is_finished(l) && l.level().as_deref() == Some("INFO"))
        .collect();
    if !own_info.is_empty() || !finished.is_empty() {
        let mut shown = own_info.clone();
        shown.extend(finished.iter().copied());
        quiet
            .report()
            .did("started a second server with RUST_LOG=info,tasks_traced=warn and sent 2 requests")
            .expected("no INFO (or lower) lines from targets under tasks_traced, no INFO finished lines: the directive for the service's own target wins over the default")
            .got(jsonlog::quote(&shown, 6))
            .hint("parse RUST_LOG with tracing_subscriber::EnvFilter (directives are target=level, comma separated), and log the service's events from its own modules (target tasks_traced::...)")
            .fail();
    }
}

// A panic in a handler (a row that breaks the priority invariant) answers 500 `internal` with the error shape and the request id, is logged at ERROR with that id, and the service keeps serving.
#[test]
fn test_26_a_panic_is_answered_500_logged_and_survived() {
    let lab = lab(None);
    let (broken, create) = lab.create("broken", Some("t26-create"));
    let (fine, create_2) = lab.create("fine", Some("t26-create-2"));
    lab.corrupt(&broken);
    let (want, _) = lab.contained_panic(&broken, "t26-panic");
    // And a second time, through the list, with a generated id.
    let r = lab.send("GET", "/tasks", None, None);
    let list_id = lab.echoed(&r, "GET /tasks (which reads the corrupted row)", None);
    if r.status != 500 || r.json()["error"]["code"] != "internal" {
        lab.server
            .report()
            .did("sent GET /tasks, whose page holds the corrupted row")
            .expected("500 `internal` with the error shape (the same panic, caught again)")
            .got(r.describe())
            .fail();
    }
    let (_, after) = lab.exchange(
        "GET",
        &format!("/tasks/{fine}"),
        Route::of("/tasks/{id}"),
        Some("t26-after"),
        None,
        200,
    );
    lab.server
        .expect_alive("sent two requests that panicked, then one that did not");
    let list_want = Want {
        what: "GET /tasks (which reads the corrupted row)".into(),
        method: "GET".into(),
        route: Route::of("/tasks"),
        status: 500,
        id: list_id,
    };
    expect_finished_lines(
        &lab.server,
        StderrMark::START,
        &[create, create_2, want, list_want, after],
    );
}

// Concurrent requests never mix their ids: with every request held in flight at once (the test locks the tasks table), each line carries its own request's id, method and route.
#[test]
fn test_27_concurrent_requests_keep_their_own_ids() {
    let lab = lab_with(
        Some("debug"),
        &[
            ("DB_MAX_CONNECTIONS", "20"),
            ("REQUEST_TIMEOUT_MS", "30000"),
        ],
    );
    let (a, setup_a) = lab.create("a", Some("t27-setup-a"));
    let (b, setup_b) = lab.create("b", Some("t27-setup-b"));
    let (c, setup_c) = lab.create("c", Some("t27-setup-c"));
    let plan: Vec<(String, String, Route, Option<String>, u16, String)> = vec![
        (
            "POST".into(),
            "/tasks".into(),
            Route::of("/tasks"),
            Some(r#"{"title": "new"}"#.into()),
            201,
            "t27-post".into(),
        ),
        (
            "GET".into(),
            format!("/tasks/{a}"),
            Route::of("/tasks/{id}"),
            None,
            200,
            "t27-get".into(),
        ),
        (
            "GET".into(),
            "/tasks?limit=5".into(),
            Route::of("/tasks"),
            None,
            200,
            "t27-list".into(),
        ),
        (
            "PATCH".into(),
            format!("/tasks/{b}"),
            Route::of("/tasks/{id}"),
            Some(r#"{"done": true}"#.into()),
            200,
            "t27-patch".into(),
        ),
        (
            "DELETE".into(),
            format!("/tasks/{c}"),
            Route::of("/tasks/{id}"),
            None,
            204,
            "t27-delete".into(),
        ),
        (
            "GET".into(),
            "/tasks/00000000-0000-4000-8000-000000000000".into(),
            Route::of("/tasks/{id}"),
            None,
            404,
            "t27-missing".into(),
        ),
    ];
    // Hold the table: every request reaches its query and waits there.
    let rt = &lab.rt;
    let tx = rt.block_on(async {
        let mut tx = lab.pool.begin().await.expect("[test] BEGIN");
        sqlx::query("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .expect("[test] LOCK TABLE tasks");
        tx
    });
    let n = plan.len();
    let handles: Vec<_> = plan
        .iter()
        .cloned()
        .map(|(method, path, _, body, _, rid)| {
            let http = lab.http.clone();
            let url = labkit::http::url(&lab.server, &path);
            thread::spawn(move || {
                let m = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
                let mut req = http.request(m, url).header(RID, rid);
                if let Some(body) = body {
                    req = req.header("content-type", "application/json").body(body);
                }
                req.send()
                    .map(|r| {
                        let status = r.status().as_u16();
                        let headers = r.headers().clone();
                        Resp {
                            status,
                            headers,
                            body: r.text().unwrap_or_default(),
                        }
                    })
                    .map_err(|e| labkit::report::error_chain(&e))
            })
        })
        .collect();
    rt.block_on(eventually(
        Duration::from_secs(10),
        &format!("{n} of the server's queries to wait for the test's lock on tasks (pg_stat_activity)"),
        "does every request reach the database? (the test holds LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE)",
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&lab.pool)
            .await
            .map_err(|e| e.to_string())?;
            if waiting as usize >= n { Ok(()) } else { Err(format!("{waiting} waiting")) }
        },
    ));
    rt.block_on(async {
        tx.rollback()
            .await
            .expect("[test] ROLLBACK releases the lock")
    });
    let mut wants = vec![setup_a, setup_b, setup_c];
    for ((method, path, route, _, status, rid), h) in plan.into_iter().zip(handles) {
        let what = format!("{method} {path} with X-Request-Id {rid:?}, all {n} in flight at once");
        let r = match h.join().expect("[test] a request thread") {
            Ok(r) => r,
            Err(e) => lab
                .server
                .report()
                .did(format!("sent {what}"))
                .expected("an answer")
                .got(e)
                .fail(),
        };
        if r.status != status {
            lab.server
                .report()
                .did(format!("sent {what}"))
                .expected(format!("status {status}"))
                .got(r.describe())
                .fail();
        }
        let id = lab.echoed(&r, &what, Some(&rid));
        wants.push(Want {
            what,
            method,
            route,
            status,
            id,
        });
    }
    let lines = expect_finished_lines(&lab.server, StderrMark::START, &wants);
    // Every line inside one of these requests: all its ids are that request's,
    // and its span's method and route are that request's.
    let by_id: BTreeMap<&str, &Want> = wants.iter().map(|w| (w.id.as_str(), w)).collect();
    for l in &lines {
        let Some(rid) = request_id_of(l) else {
            continue;
        };
        let Some(w) = by_id.get(rid.as_str()) else {
            continue;
        };
        let mut wrong = Vec::new();
        let ids: Vec<String> = l
            .field("request_id")
            .into_iter()
            .chain(l.spans().into_iter().filter_map(|s| s.get("request_id")))
            .filter_map(text)
            .collect();
        if ids.iter().any(|i| i != &w.id) {
            wrong.push(format!("request ids {ids:?} on one line"));
        }
        if l.span_field("request", "method")
            .and_then(text)
            .is_some_and(|m| !m.eq_ignore_ascii_case(&w.method))
        {
            wrong.push(format!("its request span's method is not {}", w.method));
        }
        if l.span_field("request", "route")
            .and_then(text)
            .is_some_and(|r| !w.route.accepts(&r))
        {
            wrong.push(format!(
                "its request span's route is not {}",
                w.route.describe()
            ));
        }
        if !wrong.is_empty() {
            lab.server
                .report()
                .did(format!("sent {n} requests held in flight together, each with its own X-Request-Id"))
                .expected(format!("every line in the span of request {:?} ({}) to carry only its id, method and route", w.id, w.what))
                .got(format!("{}:\n{l}", wrong.join("; ")))
                .hint("keep the request id in the request's span (or a task-local), never in a global or a thread-local: requests interleave on the runtime's threads")
                .fail();
        }
    }
}

// A start that fails (no DATABASE_URL) says so in a JSON line at ERROR level too, and exits non-zero.
#[test]
fn test_28_startup_errors_are_json_lines_too() {
    let out = labkit::Cmd::new(BIN)
        .arg("127.0.0.1:0")
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .deadline(Duration::from_secs(10))
        .run();
    let stderr = out.stderr_text();
    let lines: Vec<String> = stderr.lines().map(str::to_string).collect();
    let parsed = jsonlog::parse(&lines, 1);
    let error_line = parsed.as_ref().ok().and_then(|ls| {
        ls.iter()
            .find(|l| l.level().as_deref() == Some("ERROR") && l.raw.contains("DATABASE_URL"))
    });
    let fine = out.code.is_some_and(|c| c != 0) && !out.timed_out && error_line.is_some();
    if !fine || !out.stdout.is_empty() {
        let got = match &parsed {
            Err(bad) => bad.to_string(),
            Ok(_) if error_line.is_none() => "no ERROR line that mentions DATABASE_URL".to_string(),
            Ok(_) => format!(
                "{} and stdout {}",
                out.ending(),
                labkit::report::show(&out.stdout)
            ),
        };
        out.report()
            .did("ran it with DATABASE_URL unset")
            .expected("a non-zero exit, nothing on stdout, and stderr as JSON lines, one of them at level ERROR naming DATABASE_URL")
            .got(got)
            .hint("install the subscriber before reading the configuration, and report the problem with error! instead of eprintln!")
            .fail();
    }
}

// A request cut off by REQUEST_TIMEOUT_MS (the test locks the table) answers 503 with its X-Request-Id and has its finished line.
#[test]
fn test_29_a_timed_out_request_keeps_its_id_and_its_line() {
    let lab = lab_with(None, &[("REQUEST_TIMEOUT_MS", "300")]);
    let (task, create) = lab.create("slow", Some("t29-create"));
    let tx = lab.rt.block_on(async {
        let mut tx = lab.pool.begin().await.expect("[test] BEGIN");
        sqlx::query("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .expect("[test] LOCK TABLE tasks");
        tx
    });
    let path = format!("/tasks/{task}");
    let r = lab.send("GET", &path, Some("t29-slow"), None);
    lab.rt.block_on(async {
        tx.rollback()
            .await
            .expect("[test] ROLLBACK releases the lock")
    });
    let what = format!(
        "GET {path} with X-Request-Id \"t29-slow\" while the test held LOCK TABLE tasks, with REQUEST_TIMEOUT_MS=300"
    );
    if r.status != 503 || r.json()["error"]["code"] != "unavailable" {
        lab.server
            .report()
            .did(format!("sent {what}"))
            .expected("503 `unavailable` with the error shape (lab 33's request timeout)")
            .got(r.describe())
            .hint("the request timeout is lab 33's; is it still in the stack?")
            .fail();
    }
    let id = lab.echoed(&r, &what, Some("t29-slow"));
    let slow = Want {
        what,
        method: "GET".into(),
        route: Route::of("/tasks/{id}"),
        status: 503,
        id,
    };
    expect_finished_lines(&lab.server, StderrMark::START, &[create, slow]);
}
