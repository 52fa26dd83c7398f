//! The capstone's shared suite: [`tasks_suite!`](crate::tasks_suite).
//!
//! Chapter 6 grows one service, the tasks REST API, across labs 32 to 35
//! (in memory, on PostgreSQL, traced, with metrics). From the outside its
//! API never changes, so the four labs share one grader. A lab's test file
//! says:
//!
//! ```text
//! use labkit::tasks_suite::App;
//!
//! fn app() -> App {
//!     App::new(labkit::server::Server::spawn(env!("CARGO_BIN_EXE_tasks_mem")))
//! }
//!
//! labkit::tasks_suite! { app: crate::app }
//!
//! // Lab-specific tests follow, numbered from 20.
//! ```
//!
//! and gets these `#[test]` functions (numbers 01..19 belong to the suite):
//!
//! | test | checks |
//! |---|---|
//! | `test_01_create_returns_201_location_etag_and_the_task` | defaults, Location, a quoted ETag, distinct ids |
//! | `test_02_get_returns_the_created_task_and_404_otherwise` | same body and ETag; unknown and non-UUID ids are 404 `not_found` |
//! | `test_03_validation_names_the_first_bad_field` | wrong type, range, missing, null -> 422 with `field`; 200 characters (not bytes), trimming |
//! | `test_04_bad_bodies_get_400_413_415_and_422` | malformed JSON, non-UTF-8, content types, exactly 64 KiB vs one byte more, non-objects |
//! | `test_05_list_paginates_in_creation_order` | default limit 20, `next_cursor` null exactly at the end, at exact page boundaries too |
//! | `test_06_list_filters_combine_with_pagination` | `done`, `priority`, both, walked page by page |
//! | `test_07_list_rejects_bad_parameters_with_422` | `limit`, `done`, `priority`, `cursor` named in `field` |
//! | `test_08_pagination_is_stable_while_tasks_come_and_go` | deletes (the cursor's own task too) and creates between pages |
//! | `test_09_put_replaces_every_field_and_bumps_the_version` | all fields required, version +1, new ETag |
//! | `test_10_patch_changes_only_the_given_fields` | partial updates, `{}`, unknown fields ignored, bad fields change nothing |
//! | `test_11_if_match_guards_put_patch_and_delete` | current, stale, weak, `*`, lists; 412 changes nothing; unknown task 404 |
//! | `test_12_concurrent_patches_with_one_etag_let_exactly_one_win` | the check and the write are atomic |
//! | `test_13_delete_returns_204_then_the_task_is_gone` | 204 without body; then 404 for every method |
//! | `test_14_unknown_paths_and_wrong_methods_get_json_errors` | 404 `not_found`, 405 `method_not_allowed`, the error shape |
//! | `test_15_concurrent_creates_all_land` | 200 creates from 8 threads, distinct ids, all listed |
//! | `test_16_sigterm_finishes_the_request_in_flight_and_exits_0` | graceful shutdown with half a body received |
//! | `test_17_sigint_with_idle_keep_alive_connections_exits_0` | SIGINT (Ctrl-C) with idle connections open: they are closed, exit 0 |
//! | `test_18_survives_garbage_and_vanishing_clients` | garbage bytes, resets mid-head and mid-body, then still serving |
//!
//! # The app and its observer
//!
//! Each test calls the lab's `app()` once, so every test has its own
//! server(s) and shares nothing with the others. [`App`] holds the running
//! [`Server`], whatever must live as long as it ([`App::keep`]: a
//! `TestDb`, a temporary directory; dropped *after* the server), and an
//! optional *observer* ([`App::observer`]).
//!
//! The suite's client records every exchange it makes ([`Exchange`]: the
//! method, the path as sent, the route template the suite targeted, the
//! status, the response's headers and its `X-Request-Id`). At the end of
//! each test (when its checks have passed) the observer is called once with
//! the app and all of them. Labs 34 and 35 use it to grade their logs and
//! metrics with the suite's own CRUD traffic: lab 34 checks one finished
//! `request` log line per exchange, lab 35 scrapes `/metrics` and compares
//! the counters. Labs 32 and 33 have no observer.
//!
//! What is recorded, precisely:
//! - every request sent with the suite's real client, and every raw-socket
//!   request that got a complete final response (not the `100 Continue`);
//! - `route` is the template the suite meant: `/tasks`, `/tasks/{id}` (also
//!   for ids that are not UUIDs, and for 405s on that path), or
//!   [`UNMATCHED`] for paths no route knows (`/`, `/nope`, `/tasks/a/b`);
//! - requests the suite abandons on purpose after the server may have
//!   routed them (test 18: a reset in the middle of a body, or right after
//!   a complete request) are recorded with `status` 0: the server may log or
//!   count such a request with any status, or not at all, so an observer
//!   must allow at most one such outcome per status-0 exchange;
//! - bytes that are not an HTTP request (test 18's garbage, a reset in the
//!   middle of a head) never reach a router and are not exchanges.
//!
//! The shutdown tests (16 and 17) call the observer *just before* they send
//! SIGTERM (16) or SIGINT (17), with the exchanges made so far, while the server can still be
//! scraped; the request finished during the shutdown is not observed.
//!
//! # What it asserts, and what it leaves open
//!
//! It grades the chapter's spec (the lab READMEs, lab 32's first): the
//! JSON of a task, status codes, the error shape `{"error": {"code",
//! "message", "field"?}}` with `Content-Type: application/json`, ETags as
//! opaque quoted strings (never parsed), ids as opaque strings, cursors as
//! opaque strings. It never reads storage, so an in-memory store and a
//! database pass alike.

use std::any::Any;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::client::Client;
use crate::http;
use crate::report::{Report, show};
use crate::server::Server;

/// The route of an exchange whose path no route knows.
pub const UNMATCHED: &str = "<unmatched>";

/// The largest body the service accepts: 64 KiB.
pub const MAX_BODY: usize = 64 * 1024;

/// How long a shutdown may take, and how long the server may take to stop
/// accepting after a signal.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

/// What an observer is: called at the end of each test with every exchange.
pub type Observer = Box<dyn Fn(&App, &[Exchange]) + Send + Sync>;

/// One lab's running service, as the lab's `app()` started it; see the
/// module docs. Fields drop in order: the server is killed before what it
/// keeps alive (a database) goes away.
pub struct App {
    server: Server,
    /// Behind a lock only so that `App` is `Sync` (tests share it between
    /// threads); nothing reads it.
    keep: Mutex<Vec<Box<dyn Any + Send>>>,
    observer: Option<Observer>,
}

impl App {
    /// An app around a running server, with nothing kept and no observer.
    pub fn new(server: Server) -> App {
        App {
            server,
            keep: Mutex::new(Vec::new()),
            observer: None,
        }
    }

    /// Keeps `x` alive as long as the app (dropped after the server).
    pub fn keep(self, x: impl Any + Send) -> App {
        self.keep
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(x));
        self
    }

    /// Sets the observer, called at the end of every suite test.
    pub fn observer(mut self, f: impl Fn(&App, &[Exchange]) + Send + Sync + 'static) -> App {
        self.observer = Some(Box::new(f));
        self
    }

    /// The server.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// `http://<addr>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.addr())
    }
}

/// One request the suite made and the answer it got; see the module docs.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub method: String,
    /// The request target as sent, query included.
    pub path: String,
    /// The route template the suite targeted: `/tasks`, `/tasks/{id}`, or
    /// [`UNMATCHED`].
    pub route: &'static str,
    /// The status of the final response; 0 for an abandoned request.
    pub status: u16,
    /// The response's `X-Request-Id`, if it had one.
    pub request_id: Option<String>,
    /// The response's headers, names lower case.
    pub headers: Vec<(String, String)>,
}

/// The suite; see the module docs. Generates numbered `#[test]` functions
/// in the calling test file.
#[macro_export]
macro_rules! tasks_suite {
    (app: $app:path $(,)?) => {
        // POST /tasks answers 201 with Location, a quoted ETag and the stored task with its defaults.
        #[test]
        fn test_01_create_returns_201_location_etag_and_the_task() {
            $crate::tasks_suite::create($app)
        }

        // GET /tasks/{id} returns what POST returned, with the same ETag; unknown and non-UUID ids are 404.
        #[test]
        fn test_02_get_returns_the_created_task_and_404_otherwise() {
            $crate::tasks_suite::get_one($app)
        }

        // Wrong type, out of range, missing or null fields get 422 naming the first bad field; titles count characters, trimmed.
        #[test]
        fn test_03_validation_names_the_first_bad_field() {
            $crate::tasks_suite::validation($app)
        }

        // Malformed JSON 400, wrong Content-Type 415, over 64 KiB 413, non-objects 422, all with the error shape.
        #[test]
        fn test_04_bad_bodies_get_400_413_415_and_422() {
            $crate::tasks_suite::bad_bodies($app)
        }

        // GET /tasks pages through tasks in creation order; next_cursor is null exactly when nothing follows.
        #[test]
        fn test_05_list_paginates_in_creation_order() {
            $crate::tasks_suite::paginate($app)
        }

        // done and priority filters combine with AND and with pagination.
        #[test]
        fn test_06_list_filters_combine_with_pagination() {
            $crate::tasks_suite::filters($app)
        }

        // Bad limit, done, priority or cursor get 422 naming the parameter.
        #[test]
        fn test_07_list_rejects_bad_parameters_with_422() {
            $crate::tasks_suite::bad_list_params($app)
        }

        // Paging while tasks are deleted and created never repeats or skips one (keyset pagination).
        #[test]
        fn test_08_pagination_is_stable_while_tasks_come_and_go() {
            $crate::tasks_suite::stable_pagination($app)
        }

        // PUT replaces every field, requires all of them, bumps the version and the ETag.
        #[test]
        fn test_09_put_replaces_every_field_and_bumps_the_version() {
            $crate::tasks_suite::put_replaces($app)
        }

        // PATCH changes only the fields it carries and still bumps the version.
        #[test]
        fn test_10_patch_changes_only_the_given_fields() {
            $crate::tasks_suite::patch_updates($app)
        }

        // If-Match on PUT, PATCH and DELETE: current, *, or a list succeed; stale or weak tags get 412 and change nothing.
        #[test]
        fn test_11_if_match_guards_put_patch_and_delete() {
            $crate::tasks_suite::if_match($app)
        }

        // Eight PATCHes carrying the same current ETag at once: exactly one 200, seven 412.
        #[test]
        fn test_12_concurrent_patches_with_one_etag_let_exactly_one_win() {
            $crate::tasks_suite::concurrent_patches($app)
        }

        // DELETE answers 204 without a body; then GET, PUT, PATCH and DELETE are 404.
        #[test]
        fn test_13_delete_returns_204_then_the_task_is_gone() {
            $crate::tasks_suite::delete($app)
        }

        // Unknown paths get 404 and wrong methods 405, both with the JSON error shape.
        #[test]
        fn test_14_unknown_paths_and_wrong_methods_get_json_errors() {
            $crate::tasks_suite::unknown_routes($app)
        }

        // 200 creates from 8 threads at once all land, with distinct ids, all listed.
        #[test]
        fn test_15_concurrent_creates_all_land() {
            $crate::tasks_suite::concurrent_creates($app)
        }

        // SIGTERM with half a POST body received: new connections are refused, the POST still gets its 201, exit 0.
        #[test]
        fn test_16_sigterm_finishes_the_request_in_flight_and_exits_0() {
            $crate::tasks_suite::shutdown_in_flight($app)
        }

        // SIGINT (Ctrl-C) with idle keep-alive connections open: they are closed and the server exits 0.
        #[test]
        fn test_17_sigint_with_idle_keep_alive_connections_exits_0() {
            $crate::tasks_suite::shutdown_idle($app)
        }

        // Garbage bytes and clients that reset mid-head or mid-body end only their own connection.
        #[test]
        fn test_18_survives_garbage_and_vanishing_clients() {
            $crate::tasks_suite::vanishing_clients($app)
        }
    };
}

// ---------------------------------------------------------------------------
// The run of one test: the app, a client, the exchanges
// ---------------------------------------------------------------------------

/// One test's world: the app, a real HTTP client, the exchanges so far.
pub struct Run {
    pub app: App,
    http: reqwest::blocking::Client,
    log: Mutex<Vec<Exchange>>,
    /// False once the observer has been called (the shutdown tests).
    recording: Mutex<bool>,
}

/// One response as the suite needs it.
#[derive(Debug, Clone)]
pub struct Resp {
    /// What the test sent, for messages: `PATCH /tasks/<id> {"done":true}`.
    pub did: String,
    pub status: u16,
    /// Names lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        http::values(&self.headers, name).into_iter().next()
    }

    /// The body as JSON, if it is.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// Status, Content-Type, ETag and body, for messages.
    pub fn describe(&self) -> String {
        let mut s = format!("status {}", self.status);
        for h in ["content-type", "etag", "location"] {
            if let Some(v) = self.header(h) {
                let _ = write!(s, ", {h}: {v:?}");
            }
        }
        let _ = write!(s, ", body ({} bytes) {}", self.body.len(), show(&self.body));
        s
    }
}

/// Starts the app of a test.
#[track_caller]
pub fn start(app: fn() -> App) -> Run {
    Run {
        app: app(),
        http: http::client(),
        log: Mutex::new(Vec::new()),
        recording: Mutex::new(true),
    }
}

/// A body: its bytes and the Content-Type to send (None: no header).
pub struct Body<'a> {
    pub bytes: Vec<u8>,
    pub content_type: Option<&'a str>,
}

/// A JSON body with `Content-Type: application/json`.
pub fn json_body(v: &Value) -> Body<'static> {
    Body {
        bytes: v.to_string().into_bytes(),
        content_type: Some("application/json"),
    }
}

impl Run {
    /// The server.
    pub fn server(&self) -> &Server {
        self.app.server()
    }

    /// Calls the observer (if any) with every exchange so far, once;
    /// later exchanges are not recorded.
    pub fn observe(&self) {
        let exchanges = {
            let mut rec = self.recording.lock().unwrap_or_else(|e| e.into_inner());
            if !*rec {
                return;
            }
            *rec = false;
            std::mem::take(&mut *self.log.lock().unwrap_or_else(|e| e.into_inner()))
        };
        if let Some(f) = &self.app.observer {
            f(&self.app, &exchanges);
        }
    }

    /// Records one exchange (unless observation is over).
    pub fn record(
        &self,
        method: &str,
        path: &str,
        route: &'static str,
        status: u16,
        headers: &[(String, String)],
    ) {
        if !*self.recording.lock().unwrap_or_else(|e| e.into_inner()) {
            return;
        }
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        let request_id = http::values(&headers, "x-request-id")
            .first()
            .map(|s| s.to_string());
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Exchange {
                method: method.to_string(),
                path: path.to_string(),
                route,
                status,
                request_id,
                headers,
            });
    }

    /// Sends a request with the real client and records it.
    #[track_caller]
    pub fn send(
        &self,
        method: &str,
        path: &str,
        route: &'static str,
        headers: &[(&str, &str)],
        body: Option<Body>,
    ) -> Resp {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("a valid method");
        let mut req = self
            .http
            .request(m, format!("{}{path}", self.app.base_url()));
        let mut did = format!("sent {method} {path}");
        for (k, v) in headers {
            req = req.header(*k, *v);
            let _ = write!(did, " with {k}: {v}");
        }
        if let Some(b) = body {
            if let Some(t) = b.content_type {
                req = req.header("content-type", t);
                let _ = write!(did, " (Content-Type: {t})");
            }
            if b.bytes.len() > 300 {
                let _ = write!(did, " and a body of {} bytes", b.bytes.len());
            } else {
                let _ = write!(did, " {}", show(&b.bytes));
            }
            req = req.body(b.bytes);
        }
        let res = self.server().watched(&did, move || {
            req.send().and_then(|r| {
                let status = r.status().as_u16();
                let headers: Vec<(String, String)> = r
                    .headers()
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_string(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                r.bytes().map(|b| (status, headers, b.to_vec()))
            })
        });
        match res {
            Ok((status, headers, body)) => {
                self.record(method, path, route, status, &headers);
                Resp {
                    did,
                    status,
                    headers,
                    body,
                }
            }
            Err(e) => self
                .server()
                .report()
                .did(&did)
                .expected("an HTTP response")
                .got(format!(
                    "the client failed: {}",
                    crate::report::error_chain(&e)
                ))
                .hint("does the server answer every request (and stay up)? read its stderr below")
                .fail(),
        }
    }

    /// A report quoting the server, starting with `did`.
    pub fn report(&self, did: &str) -> Report {
        self.server().report().did(did)
    }

    /// Fails with what `r` was, `expected` and `hint`.
    #[track_caller]
    pub fn fail(&self, r: &Resp, expected: impl std::fmt::Display, hint: &str) -> ! {
        self.report(&r.did)
            .expected(expected)
            .got(r.describe())
            .hint(hint)
            .fail()
    }

    /// Fails unless `r` has `status`.
    #[track_caller]
    pub fn expect_status(&self, r: &Resp, status: u16, hint: &str) {
        if r.status != status {
            self.fail(r, format!("status {status}"), hint);
        }
    }

    /// Fails unless `r` is `status` with a JSON body; returns it.
    #[track_caller]
    pub fn expect_json(&self, r: &Resp, status: u16, hint: &str) -> Value {
        let media = r.header("content-type").map(media_type);
        match (r.status == status, media.as_deref(), r.json()) {
            (true, Some("application/json"), Some(v)) => v,
            _ => self.fail(
                r,
                format!("status {status} with Content-Type application/json and a JSON body"),
                hint,
            ),
        }
    }

    /// Fails unless `r` is the error shape with `status` and `code`, and
    /// `field` (None: no `field`, or null).
    #[track_caller]
    pub fn expect_error(&self, r: &Resp, status: u16, code: &str, field: Option<&str>, hint: &str) {
        let shape = match field {
            Some(f) => format!(
                r#"status {status}, Content-Type application/json, body {{"error": {{"code": "{code}", "message": "<a sentence>", "field": "{f}"}}}}"#
            ),
            None => format!(
                r#"status {status}, Content-Type application/json, body {{"error": {{"code": "{code}", "message": "<a sentence>"}}}} (no "field")"#
            ),
        };
        let media = r.header("content-type").map(media_type);
        let v = r.json();
        let err = v.as_ref().and_then(|v| v.get("error"));
        let got_code = err.and_then(|e| e.get("code")).and_then(Value::as_str);
        let message = err.and_then(|e| e.get("message")).and_then(Value::as_str);
        let got_field = err.and_then(|e| e.get("field")).filter(|f| !f.is_null());
        let ok = r.status == status
            && media.as_deref() == Some("application/json")
            && got_code == Some(code)
            && message.is_some_and(|m| !m.trim().is_empty())
            && match field {
                Some(f) => got_field.and_then(Value::as_str) == Some(f),
                None => got_field.is_none(),
            };
        if !ok {
            self.fail(r, shape, hint);
        }
    }

    /// `POST /tasks` with `v`; fails unless 201; returns the task and its ETag.
    #[track_caller]
    pub fn create(&self, v: &Value) -> (Value, String) {
        let r = self.send("POST", "/tasks", "/tasks", &[], Some(json_body(v)));
        let task = self.expect_json(
            &r,
            201,
            "POST /tasks with a valid body answers 201 Created with the task as JSON",
        );
        self.expect_task_shape(&r, &task);
        let etag = self.expect_etag(&r);
        (task, etag)
    }

    /// `GET /tasks/{id}`; fails unless 200; returns the task and its ETag.
    #[track_caller]
    pub fn get(&self, id: &str) -> (Value, String) {
        let r = self.send("GET", &format!("/tasks/{id}"), "/tasks/{id}", &[], None);
        let task = self.expect_json(
            &r,
            200,
            "GET /tasks/{id} of an existing task answers 200 with the task",
        );
        self.expect_task_shape(&r, &task);
        let etag = self.expect_etag(&r);
        (task, etag)
    }

    /// Fails unless `task` has the five fields with the right types.
    #[track_caller]
    pub fn expect_task_shape(&self, r: &Resp, task: &Value) {
        let ok = task
            .get("id")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
            && task.get("title").is_some_and(Value::is_string)
            && task.get("done").is_some_and(Value::is_boolean)
            && task.get("priority").and_then(Value::as_i64).is_some()
            && task.get("version").and_then(Value::as_i64).is_some();
        if !ok {
            self.fail(
                r,
                r#"a task: {"id": "<string>", "title": "<string>", "done": <bool>, "priority": <integer>, "version": <integer>}"#,
                "serialise the task with exactly these field names and JSON types",
            );
        }
    }

    /// Fails unless `r` has a strong, quoted ETag; returns it.
    #[track_caller]
    pub fn expect_etag(&self, r: &Resp) -> String {
        match r.header("etag") {
            Some(t) if t.len() >= 2 && t.starts_with('"') && t.ends_with('"') => t.to_string(),
            _ => self.fail(
                r,
                r#"an ETag header with a strong, quoted entity tag, e.g. ETag: "1""#,
                "responses carrying one task (POST, GET, PUT, PATCH) carry ETag: \"<version>\", quotes included",
            ),
        }
    }

    /// `GET <path>` of the list; fails unless 200 with `items` and
    /// `next_cursor`; returns them.
    #[track_caller]
    pub fn list(&self, query: &str) -> (Vec<Value>, Option<String>, Resp) {
        let path = if query.is_empty() {
            "/tasks".to_string()
        } else {
            format!("/tasks?{query}")
        };
        let r = self.send("GET", &path, "/tasks", &[], None);
        let v = self.expect_json(
            &r,
            200,
            "GET /tasks answers 200 with {\"items\": [...], \"next_cursor\": ...}",
        );
        let items = v.get("items").and_then(Value::as_array).cloned();
        let cursor = v.get("next_cursor");
        match (items, cursor) {
            (Some(items), Some(Value::Null)) => (items, None, r),
            (Some(items), Some(Value::String(c))) => (items, Some(c.clone()), r),
            _ => self.fail(
                &r,
                r#"{"items": [<tasks>], "next_cursor": "<string>" or null}"#,
                "the list is an object with an array `items` and `next_cursor`, a string or null (present either way)",
            ),
        }
    }

    /// Walks the list with `query` (no cursor in it) page by page; returns
    /// the pages.
    #[track_caller]
    pub fn walk(&self, query: &str) -> Vec<Vec<Value>> {
        let mut pages = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let q = match &cursor {
                None => query.to_string(),
                Some(c) if query.is_empty() => format!("cursor={}", encode(c)),
                Some(c) => format!("{query}&cursor={}", encode(c)),
            };
            let (items, next, r) = self.list(&q);
            if cursor.is_some() && items.is_empty() {
                self.fail(
                    &r,
                    "a page with items: the previous page's next_cursor promised more",
                    "next_cursor is null exactly when no further matching task exists: the last page never points at an empty one",
                );
            }
            pages.push(items);
            if pages.len() > 500 {
                self.fail(&r, "the walk to end", "does next_cursor ever become null?");
            }
            match next {
                None => return pages,
                Some(c) => cursor = Some(c),
            }
        }
    }

    /// Sends `request` (whole bytes, see [`http::request`]) on a new raw
    /// connection, tolerating a server that answers and closes before
    /// reading all of it (a 413), reads one response and records it.
    #[track_caller]
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        route: &'static str,
        request: &[u8],
        did: &str,
    ) -> Resp {
        let mut c = self.connect();
        c.hint(did);
        crate::http_suite::send_while_open(&mut c, request);
        let r = http::read_response(&mut c);
        self.record(method, path, route, r.status, &r.headers);
        Resp {
            did: did.to_string(),
            status: r.status,
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
            body: r.body,
        }
    }

    /// A raw connection to the server.
    #[track_caller]
    pub fn connect(&self) -> Client {
        Client::connect_to(self.server())
    }
}

/// The media type of a Content-Type value: lower case, no parameters.
pub fn media_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Percent-encodes a cursor for a query string (it is opaque: it may hold
/// anything).
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The id of a task.
pub fn id_of(task: &Value) -> String {
    task.get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The ids of tasks, for messages and comparisons.
pub fn ids(tasks: &[Value]) -> Vec<String> {
    tasks.iter().map(id_of).collect()
}

/// The titles of tasks, for messages.
pub fn titles(tasks: &[Value]) -> Vec<String> {
    tasks
        .iter()
        .map(|t| {
            t.get("title")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string()
        })
        .collect()
}

/// A UUID that no server assigned.
pub const UNKNOWN_ID: &str = "00000000-0000-4000-8000-000000000000";

// ---------------------------------------------------------------------------
// The cases
// ---------------------------------------------------------------------------

/// test_01
pub fn create(app: fn() -> App) {
    let run = start(app);
    let r = run.send(
        "POST",
        "/tasks",
        "/tasks",
        &[],
        Some(json_body(&json!({"title": "write the grader"}))),
    );
    let task = run.expect_json(
        &r,
        201,
        "POST /tasks with {\"title\": ...} answers 201 Created with the stored task",
    );
    run.expect_task_shape(&r, &task);
    let etag = run.expect_etag(&r);
    let id = id_of(&task);
    let want =
        json!({"id": id, "title": "write the grader", "done": false, "priority": 3, "version": 1});
    if task != want {
        run.fail(
            &r,
            format!("the task {want}"),
            "defaults: done false, priority 3; version 1 on create; nothing else in the object",
        );
    }
    if r.header("location") != Some(&format!("/tasks/{id}")) {
        run.fail(
            &r,
            format!("Location: /tasks/{id}"),
            "201 Created carries Location: /tasks/<id> (a path, the id as in the body)",
        );
    }
    let (task2, _) = run.create(&json!({"title": "second", "done": true, "priority": 5}));
    let want2 =
        json!({"id": id_of(&task2), "title": "second", "done": true, "priority": 5, "version": 1});
    if task2 != want2 {
        run.report("sent POST /tasks {\"title\":\"second\",\"done\":true,\"priority\":5}")
            .expected(want2.to_string())
            .got(task2.to_string())
            .hint("given done and priority are stored as given")
            .fail();
    }
    if id_of(&task2) == id {
        run.report("created two tasks")
            .expected("two different ids")
            .got(format!("both have id {id:?}"))
            .hint("every task gets a fresh id (e.g. Uuid::new_v4())")
            .fail();
    }
    let (got, etag_again) = run.get(&id);
    if got != task || etag_again != etag {
        run.report(&format!(
            "created {task} (ETag {etag}), then sent GET /tasks/{id}"
        ))
        .expected("the same task and the same ETag")
        .got(format!("{got} (ETag {etag_again})"))
        .hint("the Location must name the stored task")
        .fail();
    }
    run.observe();
}

/// test_02
pub fn get_one(app: fn() -> App) {
    let run = start(app);
    let (task, etag) = run.create(&json!({"title": "read me", "priority": 2}));
    let id = id_of(&task);
    let (a, ea) = run.get(&id);
    let (b, eb) = run.get(&id);
    if a != task || b != task || ea != etag || eb != etag {
        run.report(&format!(
            "created {task} (ETag {etag}), then GET /tasks/{id} twice"
        ))
        .expected("both GETs return exactly the created task and its ETag")
        .got(format!("{a} (ETag {ea}) and {b} (ETag {eb})"))
        .hint("a GET changes nothing: same body, same ETag while no write happens")
        .fail();
    }
    for (path, what) in [
        (format!("/tasks/{UNKNOWN_ID}"), "an unknown UUID"),
        ("/tasks/not-a-uuid".to_string(), "an id that is not a UUID"),
        ("/tasks/12345".to_string(), "a number"),
    ] {
        let r = run.send("GET", &path, "/tasks/{id}", &[], None);
        run.expect_error(
            &r,
            404,
            "not_found",
            None,
            &format!("GET of {what} answers 404 with {{\"error\": {{\"code\": \"not_found\", ...}}}} (an id that does not parse is just an id that does not exist, not a 400)"),
        );
    }
    run.observe();
}

/// test_03
pub fn validation(app: fn() -> App) {
    let run = start(app);
    let x201 = "x".repeat(201);
    let e201 = "é".repeat(201);
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({}), "title", "title is required"),
        (json!({"done": true}), "title", "title is required"),
        (json!({"title": null}), "title", "null is not a title"),
        (json!({"title": 5}), "title", "a title is a string"),
        (json!({"title": ["a"]}), "title", "a title is a string"),
        (json!({"title": ""}), "title", "an empty title is too short"),
        (
            json!({"title": "   \t "}),
            "title",
            "a title of spaces is empty once trimmed",
        ),
        (
            json!({"title": x201}),
            "title",
            "201 characters is one too many",
        ),
        (
            json!({"title": e201}),
            "title",
            "201 \"é\" is one too many characters (402 bytes)",
        ),
        (
            json!({"title": "ok", "done": "yes"}),
            "done",
            "done is a boolean",
        ),
        (
            json!({"title": "ok", "done": "true"}),
            "done",
            "the string \"true\" is not a boolean",
        ),
        (
            json!({"title": "ok", "done": 1}),
            "done",
            "1 is not a boolean",
        ),
        (
            json!({"title": "ok", "done": null}),
            "done",
            "null is not a boolean (omit the field for the default)",
        ),
        (
            json!({"title": "ok", "priority": 0}),
            "priority",
            "priority is 1 to 5",
        ),
        (
            json!({"title": "ok", "priority": 6}),
            "priority",
            "priority is 1 to 5",
        ),
        (
            json!({"title": "ok", "priority": -1}),
            "priority",
            "priority is 1 to 5",
        ),
        (
            json!({"title": "ok", "priority": 261}),
            "priority",
            "261 is out of range (and 261 as a u8 wraps to 5)",
        ),
        (
            json!({"title": "ok", "priority": 10_000_000_000i64}),
            "priority",
            "priority is 1 to 5",
        ),
        (
            json!({"title": "ok", "priority": 2.5}),
            "priority",
            "priority is an integer",
        ),
        (
            json!({"title": "ok", "priority": "3"}),
            "priority",
            "the string \"3\" is not an integer",
        ),
        (
            json!({"title": "ok", "priority": null}),
            "priority",
            "null is not a priority",
        ),
        (
            json!({"title": "", "done": "x", "priority": 9}),
            "title",
            "several bad fields: title is named first",
        ),
        (
            json!({"title": 7, "priority": 9}),
            "title",
            "several bad fields: title is named first",
        ),
        (
            json!({"title": "ok", "done": "x", "priority": 9}),
            "done",
            "done and priority bad: done is named (order title, done, priority)",
        ),
        (
            json!({"priority": 0, "done": 1}),
            "title",
            "all bad: title is named first",
        ),
    ];
    for (body, field, why) in &cases {
        let r = run.send("POST", "/tasks", "/tasks", &[], Some(json_body(body)));
        run.expect_error(
            &r,
            422,
            "validation_failed",
            Some(field),
            &format!("{why}: answer 422 validation_failed with \"field\": \"{field}\" (check fields in the order title, done, priority)"),
        );
    }
    // Nothing above may have been stored.
    let (items, _, r) = run.list("limit=100");
    if !items.is_empty() {
        run.fail(
            &r,
            "no tasks: every POST so far was rejected",
            "validate the whole body before storing anything",
        );
    }
    let accepted: Vec<(Value, String)> = vec![
        (json!({"title": "é".repeat(200)}), "é".repeat(200)),
        (json!({"title": "🦀".repeat(200)}), "🦀".repeat(200)),
        (json!({"title": "x".repeat(200)}), "x".repeat(200)),
        (
            json!({"title": format!("  {}  ", "y".repeat(200))}),
            "y".repeat(200),
        ),
        (json!({"title": "  padded\t\n"}), "padded".to_string()),
        (json!({"title": "a"}), "a".to_string()),
        (json!({"title": "low", "priority": 1}), "low".to_string()),
        (
            json!({"title": "high", "priority": 5, "done": false}),
            "high".to_string(),
        ),
    ];
    for (body, title) in &accepted {
        let r = run.send("POST", "/tasks", "/tasks", &[], Some(json_body(body)));
        let task = run.expect_json(
            &r,
            201,
            "a title is 1 to 200 characters (Unicode scalar values: chars().count(), not len()) after trimming surrounding whitespace; priority 1 and 5 are in range",
        );
        if task.get("title").and_then(Value::as_str) != Some(title) {
            run.fail(
                &r,
                format!("the stored title {}", show(title.as_bytes())),
                "store the trimmed title (str::trim)",
            );
        }
    }
    run.observe();
}

/// test_04
pub fn bad_bodies(app: fn() -> App) {
    let run = start(app);
    let raw = |bytes: &[u8], ct: Option<&'static str>| Body {
        bytes: bytes.to_vec(),
        content_type: ct,
    };
    let json_ct = Some("application/json");
    for (bytes, why) in [
        (&b"{\"title\": "[..], "JSON cut short"),
        (b"{title: 'x'}", "not JSON"),
        (b"", "an empty body"),
        (b"\xff\xfe{\"title\":\"x\"}", "bytes that are not UTF-8"),
    ] {
        let r = run.send("POST", "/tasks", "/tasks", &[], Some(raw(bytes, json_ct)));
        run.expect_error(&r, 400, "bad_request", None, &format!("{why}: bytes that are not JSON are 400 bad_request (not 422: there is nothing to validate)"));
    }
    for (bytes, why) in [
        (&b"[]"[..], "a JSON array"),
        (b"[{\"title\": \"x\"}]", "an array holding a task"),
        (b"\"title\"", "a JSON string"),
        (b"42", "a number"),
        (b"null", "null"),
    ] {
        let r = run.send("POST", "/tasks", "/tasks", &[], Some(raw(bytes, json_ct)));
        run.expect_error(
            &r,
            422,
            "validation_failed",
            None,
            &format!("{why}: JSON that is not an object is 422 validation_failed, without a field"),
        );
    }
    let good = br#"{"title": "typed"}"#;
    for (ct, why) in [
        (None, "no Content-Type"),
        (Some("text/plain"), "text/plain"),
        (Some("application/x-www-form-urlencoded"), "a form"),
        (
            Some("application/jsonx"),
            "application/jsonx (not application/json)",
        ),
    ] {
        let r = run.send("POST", "/tasks", "/tasks", &[], Some(raw(good, ct)));
        run.expect_error(
            &r,
            415,
            "unsupported_media_type",
            None,
            &format!("{why}: bodies must be Content-Type application/json, else 415"),
        );
    }
    for ct in ["application/json; charset=utf-8", "Application/JSON"] {
        let r = run.send("POST", "/tasks", "/tasks", &[], Some(raw(good, Some(ct))));
        run.expect_status(&r, 201, "Content-Type parameters are allowed, and media types are case-insensitive (RFC 9110 8.3.1): compare the type without its parameters, ignoring case");
    }
    // Exactly 64 KiB (whitespace is JSON too) is accepted; one byte more is 413.
    let mut body = br#"{"title": "big"}"#.to_vec();
    body.resize(MAX_BODY, b' ');
    let r = run.send("POST", "/tasks", "/tasks", &[], Some(raw(&body, json_ct)));
    run.expect_status(
        &r,
        201,
        "a body of exactly 64 KiB (65536 bytes, valid JSON padded with spaces) is within the limit",
    );
    body.push(b' ');
    let req = http::request(
        "POST",
        "/tasks",
        &[("Content-Type", "application/json")],
        &body,
    );
    let r = run.raw("POST", "/tasks", "/tasks", &req, "sent POST /tasks with Content-Length: 65537 and a JSON body padded with spaces to that length");
    run.expect_error(&r, 413, "payload_too_large", None, "bodies over 64 KiB (65536 bytes) are 413 payload_too_large: set the body limit to 64 * 1024 and map its rejection to the error shape");
    // Chunked, so no length is announced up front: the limit still holds.
    body.resize(100 * 1024, b' ');
    let mut req = http::request(
        "POST",
        "/tasks",
        &[
            ("Content-Type", "application/json"),
            ("Transfer-Encoding", "chunked"),
        ],
        b"",
    );
    req.extend(http::chunked(&body, 16 * 1024));
    let r = run.raw(
        "POST",
        "/tasks",
        "/tasks",
        &req,
        "sent POST /tasks with a chunked 100 KiB JSON body (no Content-Length)",
    );
    run.expect_error(&r, 413, "payload_too_large", None, "a chunked body has no length up front: stop reading at 64 KiB and answer 413 payload_too_large (axum's DefaultBodyLimit does, for chunked bodies too)");
    // PUT and PATCH read bodies the same way.
    let (task, _) = run.create(&json!({"title": "target"}));
    let path = format!("/tasks/{}", id_of(&task));
    let r = run.send(
        "PATCH",
        &path,
        "/tasks/{id}",
        &[],
        Some(raw(br#"{"done": true}"#, Some("text/plain"))),
    );
    run.expect_error(
        &r,
        415,
        "unsupported_media_type",
        None,
        "PATCH bodies must be application/json too",
    );
    let r = run.send(
        "PUT",
        &path,
        "/tasks/{id}",
        &[],
        Some(raw(br#"{"title":"t","done":true,"priority":1}"#, None)),
    );
    run.expect_error(
        &r,
        415,
        "unsupported_media_type",
        None,
        "PUT bodies must be application/json too",
    );
    let r = run.send(
        "PATCH",
        &path,
        "/tasks/{id}",
        &[],
        Some(raw(b"{\"done\": tru", json_ct)),
    );
    run.expect_error(
        &r,
        400,
        "bad_request",
        None,
        "a PATCH body that is not JSON is 400",
    );
    let r = run.send("PUT", &path, "/tasks/{id}", &[], Some(raw(b"[1]", json_ct)));
    run.expect_error(
        &r,
        422,
        "validation_failed",
        None,
        "a PUT body that is not an object is 422",
    );
    let (now, _) = run.get(&id_of(&task));
    if now != task {
        run.report(&format!("sent four rejected writes to {path}"))
            .expected(format!("the task unchanged: {task}"))
            .got(now.to_string())
            .hint("a rejected request changes nothing")
            .fail();
    }
    // 3 good POSTs (two content types, 64 KiB) plus "target".
    let (items, _, r) = run.list("limit=100");
    if items.len() != 4 {
        run.fail(
            &r,
            format!(
                "4 tasks (3 accepted POSTs and the target), got {}: {:?}",
                items.len(),
                titles(&items)
            ),
            "a rejected POST stores nothing",
        );
    }
    run.observe();
}

/// Creates `n` tasks titled `<prefix><i>`, with `f(i)` merged into the body.
fn create_many(run: &Run, n: usize, prefix: &str, f: impl Fn(usize) -> Value) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let mut body = f(i);
            body["title"] = json!(format!("{prefix}{i:02}"));
            run.create(&body).0
        })
        .collect()
}

/// Fails unless the pages hold exactly `want`, in order.
#[track_caller]
fn expect_walk(run: &Run, query: &str, pages: &[Vec<Value>], want: &[Value], hint: &str) {
    let got: Vec<Value> = pages.iter().flatten().cloned().collect();
    if got != want {
        let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
        run.report(&format!(
            "walked GET /tasks?{query} page by page (page sizes {sizes:?})"
        ))
        .expected(format!(
            "{} tasks, in creation order: {:?}",
            want.len(),
            titles(want)
        ))
        .got(format!("{} tasks: {:?}", got.len(), titles(&got)))
        .hint(hint)
        .fail();
    }
}

/// Fails unless the page sizes are `want`.
#[track_caller]
fn expect_sizes(run: &Run, query: &str, pages: &[Vec<Value>], want: &[usize]) {
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    if sizes != want {
        run.report(&format!("walked GET /tasks?{query} page by page"))
            .expected(format!("pages of {want:?} tasks"))
            .got(format!("pages of {sizes:?} tasks"))
            .hint("a page holds `limit` tasks while more follow; next_cursor is null on the last page, and only there")
            .fail();
    }
}

/// test_05
pub fn paginate(app: fn() -> App) {
    let run = start(app);
    let all = create_many(&run, 25, "t", |_| json!({}));
    let order = "items are in creation order and each page starts right after the previous page's last item (keyset: seq > cursor)";
    let pages = run.walk("");
    expect_sizes(&run, "", &pages, &[20, 5]);
    expect_walk(&run, "", &pages, &all, order);
    for (limit, sizes) in [
        (5, vec![5, 5, 5, 5, 5]),
        (7, vec![7, 7, 7, 4]),
        (24, vec![24, 1]),
        (25, vec![25]),
        (100, vec![25]),
        (1, vec![1; 25]),
    ] {
        let q = format!("limit={limit}");
        let pages = run.walk(&q);
        expect_sizes(&run, &q, &pages, &sizes);
        expect_walk(&run, &q, &pages, &all, order);
    }
    run.observe();
}

/// test_06
pub fn filters(app: fn() -> App) {
    let run = start(app);
    // Task i: done when i % 2 == 0, priority i % 3 + 1; the last one (13) matches neither done=true nor priority=1.
    let all = create_many(
        &run,
        14,
        "f",
        |i| json!({"done": i % 2 == 0, "priority": i % 3 + 1}),
    );
    let pick =
        |f: &dyn Fn(&Value) -> bool| all.iter().filter(|t| f(t)).cloned().collect::<Vec<_>>();
    let done = |t: &Value, d: bool| t["done"] == json!(d);
    let prio = |t: &Value, p: i64| t["priority"] == json!(p);
    let cases: Vec<(&str, Vec<Value>)> = vec![
        ("done=true", pick(&|t| done(t, true))),
        ("done=false", pick(&|t| done(t, false))),
        ("priority=1", pick(&|t| prio(t, 1))),
        ("priority=3", pick(&|t| prio(t, 3))),
        (
            "done=true&priority=1",
            pick(&|t| done(t, true) && prio(t, 1)),
        ),
        (
            "priority=2&done=false",
            pick(&|t| done(t, false) && prio(t, 2)),
        ),
        ("priority=5", vec![]),
    ];
    for (q, want) in &cases {
        for limit in [100, 3, 1] {
            let query = format!("{q}&limit={limit}");
            let pages = run.walk(&query);
            expect_walk(
                &run,
                &query,
                &pages,
                want,
                "filters combine with AND, apply before the limit, and next_cursor is null when no further *matching* task exists",
            );
        }
    }
    run.observe();
}

/// test_07
pub fn bad_list_params(app: fn() -> App) {
    let run = start(app);
    run.create(&json!({"title": "one"}));
    for (q, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("limit=2.5", "limit"),
        ("done=yes", "done"),
        ("done=1", "done"),
        ("priority=0", "priority"),
        ("priority=6", "priority"),
        ("priority=high", "priority"),
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=%F0%9F%A6%80", "cursor"),
    ] {
        let r = run.send("GET", &format!("/tasks?{q}"), "/tasks", &[], None);
        run.expect_error(
            &r,
            422,
            "validation_failed",
            Some(field),
            &format!("GET /tasks?{q}: limit is 1..=100, done true/false, priority 1..=5, cursor what you handed out; anything else is 422 naming the parameter in \"field\""),
        );
    }
    run.observe();
}

/// test_08
pub fn stable_pagination(app: fn() -> App) {
    let run = start(app);
    let t = create_many(&run, 9, "s", |_| json!({}));
    let del = |task: &Value| {
        let r = run.send(
            "DELETE",
            &format!("/tasks/{}", id_of(task)),
            "/tasks/{id}",
            &[],
            None,
        );
        run.expect_status(&r, 204, "DELETE /tasks/{id} answers 204");
    };
    let page = |cursor: &Option<String>| {
        let q = match cursor {
            None => "limit=3".to_string(),
            Some(c) => format!("limit=3&cursor={}", encode(c)),
        };
        run.list(&q)
    };
    let mut seen: Vec<Value> = Vec::new();
    let (p1, c1, _) = page(&None);
    seen.extend(p1);
    // Delete the task the cursor points at (the page's last) and one not seen yet; create one.
    del(&t[2]);
    del(&t[4]);
    let (n1, _) = run.create(&json!({"title": "new1"}));
    let (p2, c2, _) = page(&c1);
    seen.extend(p2);
    // Delete a task already seen; create another.
    del(&t[0]);
    let (n2, _) = run.create(&json!({"title": "new2"}));
    let mut cursor = c2;
    let mut guard = 0;
    while cursor.is_some() && guard < 20 {
        let (p, c, _) = page(&cursor);
        seen.extend(p);
        cursor = c;
        guard += 1;
    }
    let want = vec![
        t[0].clone(),
        t[1].clone(),
        t[2].clone(),
        t[3].clone(),
        t[5].clone(),
        t[6].clone(),
        t[7].clone(),
        t[8].clone(),
        n1,
        n2,
    ];
    if seen != want {
        run.report("walked GET /tasks?limit=3; after page 1 deleted s02 (the cursor's task) and s04 and created new1; after page 2 deleted s00 and created new2")
            .expected(format!("{:?}", titles(&want)))
            .got(format!("{:?}", titles(&seen)))
            .hint("the cursor must mean \"after this position in creation order\" (a sequence number), not an offset and not \"find this id\": seq > cursor keeps working when tasks before or at it are deleted")
            .fail();
    }
    run.observe();
}

/// Fails unless `r` is 200 with the task `want_fields` at `version`; returns it and the ETag.
#[track_caller]
fn expect_written(
    run: &Run,
    r: &Resp,
    id: &str,
    want: &Value,
    version: i64,
    old_etag: &str,
    hint: &str,
) -> (Value, String) {
    let task = run.expect_json(r, 200, hint);
    run.expect_task_shape(r, &task);
    let etag = run.expect_etag(r);
    let mut full = want.clone();
    full["id"] = json!(id);
    full["version"] = json!(version);
    if task != full {
        run.fail(r, format!("the task {full}"), hint);
    }
    if etag == old_etag {
        run.fail(
            r,
            format!("an ETag different from the previous one ({old_etag})"),
            "every successful write changes the ETag (it is the version)",
        );
    }
    let (got, getag) = run.get(id);
    if got != task || getag != etag {
        run.report(&format!("{}, then GET /tasks/{id}", r.did))
            .expected(format!("{task} with ETag {etag}"))
            .got(format!("{got} with ETag {getag}"))
            .hint("the write's answer is the stored task")
            .fail();
    }
    (task, etag)
}

/// test_09
pub fn put_replaces(app: fn() -> App) {
    let run = start(app);
    let (task, etag) = run.create(&json!({"title": "old", "priority": 4}));
    let id = id_of(&task);
    let path = format!("/tasks/{id}");
    let put = |v: Value| run.send("PUT", &path, "/tasks/{id}", &[], Some(json_body(&v)));
    let want = json!({"title": "new", "done": true, "priority": 1});
    let r = put(want.clone());
    let (_, etag2) = expect_written(
        &run,
        &r,
        &id,
        &want,
        2,
        &etag,
        "PUT replaces title, done and priority and answers 200 with the task, version + 1",
    );
    let r = put(json!({"title": "  new  ", "done": true, "priority": 1}));
    let (_, etag3) = expect_written(
        &run,
        &r,
        &id,
        &want,
        3,
        &etag2,
        "a PUT that changes nothing still bumps the version (and trims the title)",
    );
    for (body, field) in [
        (json!({"done": false, "priority": 2}), "title"),
        (json!({"title": "x", "priority": 2}), "done"),
        (json!({"title": "x", "done": false}), "priority"),
        (
            json!({"title": "x", "done": false, "priority": null}),
            "priority",
        ),
        (json!({"title": "", "done": false, "priority": 2}), "title"),
        (json!({}), "title"),
    ] {
        let r = put(body);
        run.expect_error(
            &r,
            422,
            "validation_failed",
            Some(field),
            "PUT requires every field: a missing one is 422 naming it (no defaults on PUT)",
        );
    }
    let (now, etag_now) = run.get(&id);
    let mut want3 = want.clone();
    want3["id"] = json!(id);
    want3["version"] = json!(3);
    if now != want3 || etag_now != etag3 {
        run.report(&format!("sent six invalid PUTs to {path}"))
            .expected(format!("the task unchanged: {want3} with ETag {etag3}"))
            .got(format!("{now} with ETag {etag_now}"))
            .hint("validate before writing: a rejected PUT changes nothing, not even the version")
            .fail();
    }
    let r = run.send(
        "PUT",
        &format!("/tasks/{UNKNOWN_ID}"),
        "/tasks/{id}",
        &[],
        Some(json_body(&want)),
    );
    run.expect_error(
        &r,
        404,
        "not_found",
        None,
        "PUT does not create: an unknown id is 404",
    );
    run.observe();
}

/// test_10
pub fn patch_updates(app: fn() -> App) {
    let run = start(app);
    let (task, etag) = run.create(&json!({"title": "a", "priority": 2}));
    let id = id_of(&task);
    let path = format!("/tasks/{id}");
    let patch = |v: Value| run.send("PATCH", &path, "/tasks/{id}", &[], Some(json_body(&v)));
    let hint = "PATCH changes the fields it carries, keeps the others, bumps the version, and answers 200 with the task";
    let r = patch(json!({"done": true}));
    let (_, e) = expect_written(
        &run,
        &r,
        &id,
        &json!({"title": "a", "done": true, "priority": 2}),
        2,
        &etag,
        hint,
    );
    let r = patch(json!({"priority": 5, "colour": "red"}));
    let (_, e) = expect_written(
        &run,
        &r,
        &id,
        &json!({"title": "a", "done": true, "priority": 5}),
        3,
        &e,
        "unknown fields are ignored; only priority changes",
    );
    let r = patch(json!({"title": "  b  "}));
    let (_, e) = expect_written(
        &run,
        &r,
        &id,
        &json!({"title": "b", "done": true, "priority": 5}),
        4,
        &e,
        "a patched title is trimmed too",
    );
    let r = patch(json!({}));
    let (_, e) = expect_written(
        &run,
        &r,
        &id,
        &json!({"title": "b", "done": true, "priority": 5}),
        5,
        &e,
        "an empty PATCH changes no field but is a successful write: version + 1",
    );
    let r = patch(json!({"done": false, "priority": 1, "title": "c"}));
    let (now, e) = expect_written(
        &run,
        &r,
        &id,
        &json!({"title": "c", "done": false, "priority": 1}),
        6,
        &e,
        hint,
    );
    for (body, field) in [
        (json!({"done": null}), "done"),
        (json!({"title": null}), "title"),
        (json!({"priority": 9}), "priority"),
        (json!({"title": ""}), "title"),
        (json!({"title": "ok", "done": "no"}), "done"),
        (json!({"done": true, "priority": "1"}), "priority"),
    ] {
        let r = patch(body);
        run.expect_error(
            &r,
            422,
            "validation_failed",
            Some(field),
            "a PATCH field that is present is validated like in POST (null is not \"absent\")",
        );
    }
    let (after, e2) = run.get(&id);
    if after != now || e2 != e {
        run.report(&format!("sent six invalid PATCHes to {path}"))
            .expected(format!("the task unchanged: {now} with ETag {e}"))
            .got(format!("{after} with ETag {e2}"))
            .hint("validate the whole patch before applying any of it")
            .fail();
    }
    let r = run.send(
        "PATCH",
        &format!("/tasks/{UNKNOWN_ID}"),
        "/tasks/{id}",
        &[],
        Some(json_body(&json!({"done": true}))),
    );
    run.expect_error(&r, 404, "not_found", None, "PATCH of an unknown id is 404");
    let r = run.send(
        "PATCH",
        "/tasks/nope",
        "/tasks/{id}",
        &[],
        Some(json_body(&json!({"done": true}))),
    );
    run.expect_error(
        &r,
        404,
        "not_found",
        None,
        "PATCH of an id that is not a UUID is 404",
    );
    run.observe();
}

/// test_11
pub fn if_match(app: fn() -> App) {
    let run = start(app);
    for method in ["PUT", "PATCH", "DELETE"] {
        let (task, etag1) = run.create(&json!({"title": format!("guarded by {method}")}));
        let id = id_of(&task);
        let path = format!("/tasks/{id}");
        // An unconditional write makes etag1 stale.
        let r = run.send(
            "PATCH",
            &path,
            "/tasks/{id}",
            &[],
            Some(json_body(&json!({"priority": 4}))),
        );
        run.expect_status(&r, 200, "PATCH without If-Match is unconditional");
        let etag2 = run.expect_etag(&r);
        let (current, _) = run.get(&id);
        let body = || match method {
            "PUT" => Some(json_body(
                &json!({"title": "replaced", "done": true, "priority": 1}),
            )),
            "PATCH" => Some(json_body(&json!({"done": true}))),
            _ => None,
        };
        let weak = format!("W/{etag2}");
        for (tag, why) in [
            (etag1.as_str(), "a stale ETag (the task changed since)"),
            (
                weak.as_str(),
                "a weak tag: If-Match uses the strong comparison, W/ never matches",
            ),
            ("\"no-such-version\"", "a tag the server never gave"),
        ] {
            let r = run.send(method, &path, "/tasks/{id}", &[("If-Match", tag)], body());
            run.expect_error(
                &r,
                412,
                "precondition_failed",
                None,
                &format!("{method} with If-Match: {why}: 412 precondition_failed"),
            );
            let (now, e) = run.get(&id);
            if now != current || e != etag2 {
                run.report(&format!("{}, then GET {path}", r.did))
                    .expected(format!("the task unchanged: {current} (ETag {etag2})"))
                    .got(format!("{now} (ETag {e})"))
                    .hint(
                        "a 412 changes nothing: check the version before writing, in the same step",
                    )
                    .fail();
            }
        }
        for (tag, why) in [
            (
                format!("{etag1}, {etag2}"),
                "a list holding the current ETag",
            ),
            ("*".to_string(), "*"),
            (etag2.clone(), "the current ETag"),
        ] {
            if method == "DELETE" && why != "a list holding the current ETag" {
                continue;
            }
            let (_, cur) = run.get(&id);
            let tag = tag.replace(&etag2, &cur);
            let r = run.send(method, &path, "/tasks/{id}", &[("If-Match", &tag)], body());
            let want = if method == "DELETE" { 204 } else { 200 };
            run.expect_status(&r, want, &format!("{method} with If-Match: {why} succeeds (* matches any existing task; a list matches if any tag does)"));
            if method != "DELETE" && run.expect_etag(&r) == cur {
                run.fail(
                    &r,
                    "a new ETag",
                    "a successful conditional write bumps the version",
                );
            }
        }
        if method == "DELETE" {
            let r = run.send("GET", &path, "/tasks/{id}", &[], None);
            run.expect_error(
                &r,
                404,
                "not_found",
                None,
                "DELETE with a matching If-Match deletes",
            );
            let (t2, _) = run.create(&json!({"title": "star"}));
            let r = run.send(
                "DELETE",
                &format!("/tasks/{}", id_of(&t2)),
                "/tasks/{id}",
                &[("If-Match", "*")],
                None,
            );
            run.expect_status(&r, 204, "DELETE with If-Match: * deletes an existing task");
        }
        for tag in ["*", "\"1\""] {
            let r = run.send(
                method,
                &format!("/tasks/{UNKNOWN_ID}"),
                "/tasks/{id}",
                &[("If-Match", tag)],
                body(),
            );
            run.expect_error(&r, 404, "not_found", None, &format!("{method} of an unknown task with If-Match: {tag} is 404 (not 412): the task does not exist"));
        }
    }
    run.observe();
}

/// test_12
pub fn concurrent_patches(app: fn() -> App) {
    const N: usize = 8;
    let run = start(app);
    let (task, etag) = run.create(&json!({"title": "contended"}));
    let id = id_of(&task);
    let path = format!("/tasks/{id}");
    // Every PATCH's head goes first, with Expect: 100-continue: hyper
    // answers 100 Continue when the handler starts reading the body, so
    // once all eight have it, all eight are inside the server with the
    // same If-Match. Only then do the bodies go.
    let bodies: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            json!({"title": format!("racer {i}")})
                .to_string()
                .into_bytes()
        })
        .collect();
    let mut conns: Vec<Client> = Vec::new();
    for body in &bodies {
        let mut c = run.connect();
        c.hint("PATCH with Expect: 100-continue: a server reading the body (axum/hyper) answers 100 Continue first");
        let len = body.len().to_string();
        c.send(&http::request(
            "PATCH",
            &path,
            &[
                ("Content-Type", "application/json"),
                ("If-Match", &etag),
                ("Expect", "100-continue"),
                ("Content-Length", &len),
            ],
            b"",
        ));
        conns.push(c);
    }
    for c in &mut conns {
        let r = http::read_response(c);
        if r.status != 100 {
            c.report()
                .expected("HTTP/1.1 100 Continue (the handler started to read the body)")
                .got(r.describe())
                .hint("read the PATCH body with axum (hyper sends 100 Continue when it is first polled); answer only after the whole body arrived")
                .fail();
        }
    }
    for (c, body) in conns.iter_mut().zip(&bodies) {
        c.send(body);
    }
    let mut winners = Vec::new();
    for (i, c) in conns.iter_mut().enumerate() {
        let r = http::read_response(c);
        run.record("PATCH", &path, "/tasks/{id}", r.status, &r.headers);
        match r.status {
            200 => winners.push(i),
            412 => {}
            _ => c
                .report()
                .expected("200 (the one winner) or 412 precondition_failed (everyone else)")
                .got(r.describe())
                .hint("concurrent conditional writes: exactly one matches the version, the rest get 412")
                .fail(),
        }
    }
    let (now, _) = run.get(&id);
    if winners.len() != 1 {
        run.report(&format!("sent {N} PATCHes to {path}, all with If-Match: {etag} (the current ETag), and held their bodies until all {N} were being read"))
            .expected(format!("exactly one 200 and {} 412s", N - 1))
            .got(format!("{} 200s (racers {winners:?}); the task is now {now}", winners.len()))
            .hint("the If-Match check and the write must be one atomic step: compare the version and write under the same lock (or in one UPDATE ... WHERE version = $n), after the body has been read")
            .fail();
    }
    let want_title = format!("racer {}", winners[0]);
    if now["title"] != json!(want_title) || now["version"] != json!(2) {
        run.report(&format!("{N} concurrent PATCHes, racer {} won", winners[0]))
            .expected(format!("title {want_title:?}, version 2"))
            .got(now.to_string())
            .hint("only the winner's write happens")
            .fail();
    }
    run.observe();
}

/// test_13
pub fn delete(app: fn() -> App) {
    let run = start(app);
    let (keep, keep_etag) = run.create(&json!({"title": "stays"}));
    let (task, _) = run.create(&json!({"title": "goes"}));
    let id = id_of(&task);
    let path = format!("/tasks/{id}");
    let r = run.send("DELETE", &path, "/tasks/{id}", &[], None);
    run.expect_status(&r, 204, "DELETE /tasks/{id} answers 204 No Content");
    if !r.body.is_empty() {
        run.fail(&r, "no body", "204 has no body");
    }
    let put = json!({"title": "t", "done": true, "priority": 1});
    for (method, body) in [
        ("GET", None),
        ("PATCH", Some(json_body(&json!({"done": true})))),
        ("PUT", Some(json_body(&put))),
        ("DELETE", None),
    ] {
        let r = run.send(method, &path, "/tasks/{id}", &[], body);
        run.expect_error(
            &r,
            404,
            "not_found",
            None,
            &format!(
                "after DELETE, {method} of the task is 404 not_found (PUT does not resurrect it)"
            ),
        );
    }
    let (items, _, r) = run.list("");
    if ids(&items) != vec![id_of(&keep)] {
        run.fail(
            &r,
            format!("only the task {:?}", id_of(&keep)),
            "a deleted task is no longer listed; others stay",
        );
    }
    let (k, ke) = run.get(&id_of(&keep));
    if k != keep || ke != keep_etag {
        run.report("deleted another task")
            .expected(keep.to_string())
            .got(k.to_string())
            .hint("DELETE touches only its own task")
            .fail();
    }
    run.observe();
}

/// test_14
pub fn unknown_routes(app: fn() -> App) {
    let run = start(app);
    let (task, _) = run.create(&json!({"title": "exists"}));
    let path = format!("/tasks/{}", id_of(&task));
    for p in [
        "/",
        "/nope",
        "/task",
        "/tasksx",
        "/tasks/a/b",
        &format!("{path}/extra"),
    ] {
        let r = run.send("GET", p, UNMATCHED, &[], None);
        run.expect_error(
            &r,
            404,
            "not_found",
            None,
            "a path no route knows is 404 with the JSON error shape: give the Router a fallback",
        );
    }
    let r = run.send(
        "POST",
        "/nope",
        UNMATCHED,
        &[],
        Some(json_body(&json!({"title": "x"}))),
    );
    run.expect_error(
        &r,
        404,
        "not_found",
        None,
        "a POST to an unknown path is 404 with the JSON error shape",
    );
    for (method, p, route) in [
        ("DELETE", "/tasks", "/tasks"),
        ("PUT", "/tasks", "/tasks"),
        ("PATCH", "/tasks", "/tasks"),
        ("POST", path.as_str(), "/tasks/{id}"),
    ] {
        let r = run.send(method, p, route, &[], None);
        run.expect_error(&r, 405, "method_not_allowed", None, "a known path with a method it does not support is 405 with the JSON error shape: axum answers 405 with an empty body unless you give it a method_not_allowed_fallback");
    }
    run.observe();
}

/// test_15
pub fn concurrent_creates(app: fn() -> App) {
    const THREADS: usize = 8;
    const EACH: usize = 25;
    let run = start(app);
    let created: Vec<Vec<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let run = &run;
                s.spawn(move || {
                    (0..EACH)
                        .map(|i| id_of(&run.create(&json!({"title": format!("c{t}-{i}")})).0))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let all: Vec<String> = created.into_iter().flatten().collect();
    let distinct: HashSet<&String> = all.iter().collect();
    if distinct.len() != all.len() {
        run.report(&format!("sent {} POST /tasks from {THREADS} threads at once", all.len()))
            .expected(format!("{} distinct ids", all.len()))
            .got(format!("{} distinct ids", distinct.len()))
            .hint("ids must be unique under concurrency (a UUID v4, or a counter read and bumped under one lock)")
            .fail();
    }
    let listed: Vec<String> = run.walk("limit=100").iter().flat_map(|p| ids(p)).collect();
    let listed_set: HashSet<&String> = listed.iter().collect();
    if listed.len() != all.len() || listed_set != distinct {
        run.report(&format!("sent {} concurrent creates, all answered 201, then walked GET /tasks?limit=100", all.len()))
            .expected(format!("all {} tasks listed once each", all.len()))
            .got(format!("{} listed ({} distinct)", listed.len(), listed_set.len()))
            .hint("is a create lost or doubled under concurrency? the store must insert under one lock (or one transaction)")
            .fail();
    }
    run.observe();
}

/// Waits until a new connection to the server is refused (the listener
/// is closed). Fails after [`SHUTDOWN_DEADLINE`].
#[track_caller]
fn wait_until_refused(run: &Run, what: &str) {
    let until = Instant::now() + SHUTDOWN_DEADLINE;
    let addr = run.server().addr();
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            // Still accepted or queued: poll again, within the deadline
            // (there is no event for "the listener closed").
            _ if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
            other => run
                .report(what)
                .expected(format!("new connections to be refused within {SHUTDOWN_DEADLINE:?} (the listener closed)"))
                .got(format!("connecting still gives {other:?}"))
                .hint("on SIGTERM, stop accepting and drop the listener (axum::serve(...).with_graceful_shutdown does)")
                .fail(),
        }
    }
}

/// Fails unless the server exits with code 0 within [`SHUTDOWN_DEADLINE`].
#[track_caller]
fn expect_exit_0(run: &Run, what: &str) {
    let status = run.server().wait_exit(SHUTDOWN_DEADLINE);
    if status.and_then(|s| s.code()) != Some(0) {
        run.report(what)
            .expected(format!("the server to exit with code 0 within {SHUTDOWN_DEADLINE:?}"))
            .got(match status {
                Some(s) => format!("it ended with {s}"),
                None => format!("it was still running after {SHUTDOWN_DEADLINE:?}"),
            })
            .hint("handle SIGTERM and SIGINT (tokio::signal), shut down gracefully (axum::serve(..).with_graceful_shutdown(signal)), and return from main once the connections are done")
            .fail();
    }
}

/// test_16
pub fn shutdown_in_flight(app: fn() -> App) {
    let run = start(app);
    run.create(&json!({"title": "before"}));
    let body = json!({"title": "in flight"}).to_string().into_bytes();
    let half = body.len() / 2;
    let mut c = run.connect();
    c.hint("POST /tasks with Expect: 100-continue: hyper answers 100 Continue when the handler starts reading the body");
    let len = body.len().to_string();
    c.send(&http::request(
        "POST",
        "/tasks",
        &[
            ("Content-Type", "application/json"),
            ("Expect", "100-continue"),
            ("Content-Length", &len),
        ],
        b"",
    ));
    let r = http::read_response(&mut c);
    if r.status != 100 {
        c.report()
            .expected("HTTP/1.1 100 Continue")
            .got(r.describe())
            .hint("serve POST /tasks through axum: hyper sends 100 Continue once the handler reads the body")
            .fail();
    }
    c.send(&body[..half]);
    // Observed now, while the server can still be asked (see the module docs).
    run.observe();
    run.server().signal(libc::SIGTERM);
    wait_until_refused(
        &run,
        "sent SIGTERM while a POST /tasks had half its body sent",
    );
    c.hint("the server got SIGTERM while this request was in flight: it must wait for the rest of the body and answer it before exiting");
    c.send(&body[half..]);
    let r = http::read_response(&mut c);
    let ok = r.status == 201
        && serde_json::from_slice::<Value>(&r.body)
            .ok()
            .and_then(|v| v.get("title").cloned())
            == Some(json!("in flight"));
    if !ok {
        c.report()
            .expected("201 with the task titled \"in flight\"")
            .got(r.describe())
            .hint("graceful shutdown lets every request already being received finish and get its response")
            .fail();
    }
    c.hint("after the last response of a shutdown, the server closes the connection");
    c.expect_closed();
    expect_exit_0(&run, "sent SIGTERM, then finished the request in flight");
}

/// test_17
pub fn shutdown_idle(app: fn() -> App) {
    let run = start(app);
    let mut idle = run.connect();
    idle.send(&http::request("GET", "/tasks", &[], b""));
    let r = http::read_response(&mut idle);
    run.record("GET", "/tasks", "/tasks", r.status, &r.headers);
    if r.status != 200 || r.says_close() {
        idle.report()
            .expected("200 on a connection that stays open (keep-alive)")
            .got(r.describe())
            .hint("GET /tasks answers 200 with the list; HTTP/1.1 keeps the connection open")
            .fail();
    }
    // A second connection that never sends anything.
    let mut silent = run.connect();
    run.observe();
    run.server().signal(libc::SIGINT);
    expect_exit_0(
        &run,
        "sent SIGINT (what Ctrl-C sends) with one idle keep-alive connection and one silent connection open",
    );
    idle.hint("the server exited: its idle connection must have been closed");
    idle.expect_closed();
    silent.hint("the server exited: this connection must have been closed");
    silent.expect_closed();
}

/// test_18
pub fn vanishing_clients(app: fn() -> App) {
    let run = start(app);
    let (task, etag) = run.create(&json!({"title": "survivor"}));
    let id = id_of(&task);
    let mut first = run.connect();
    first.send(&http::request("GET", &format!("/tasks/{id}"), &[], b""));
    let r = http::read_response(&mut first);
    run.record(
        "GET",
        &format!("/tasks/{id}"),
        "/tasks/{id}",
        r.status,
        &r.headers,
    );
    if r.status != 200 {
        first
            .report()
            .expected("200 with the task")
            .got(r.describe())
            .hint("GET /tasks/{id}")
            .fail();
    }

    // Garbage: hyper answers 400 (or closes); either way only this connection ends.
    let mut g = run.connect();
    g.send(b"\x00\x01GARBAGE \xff\xfe\r\n\r\n");
    let _ = g.read_until_closed();
    let mut g = run.connect();
    g.send(b"POST /tasks HTTP/1.1\r\nHost: test\r\nContent-Length: banana\r\n\r\n");
    let _ = g.read_until_closed();
    // A reset mid-head.
    let mut c = run.connect();
    c.send(b"POST /tasks HTTP/1.1\r\nHost: te");
    c.reset();
    // A reset mid-body.
    let mut c = run.connect();
    c.send(b"POST /tasks HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"title\": \"nev");
    c.reset();
    run.record("POST", "/tasks", "/tasks", 0, &[]);
    // A complete PATCH, reset before its answer is read.
    let mut c = run.connect();
    c.send(&http::request(
        "PATCH",
        &format!("/tasks/{id}"),
        &[("Content-Type", "application/json")],
        b"{}",
    ));
    c.reset();
    run.record("PATCH", &format!("/tasks/{id}"), "/tasks/{id}", 0, &[]);

    run.server()
        .expect_alive("sent garbage and reset three connections");
    let (t2, _) = run.create(&json!({"title": "after the storm"}));
    let (got, e) = run.get(&id);
    let mut want = task.clone();
    // The reset PATCH may or may not have been applied.
    if got["version"] == json!(2) {
        want["version"] = json!(2);
    }
    if got != want || (got["version"] == json!(1) && e != etag) {
        run.report("reset a PATCH {} of the task after sending it whole")
            .expected(format!(
                "the task as created ({task}), or with version 2 if the PATCH ran"
            ))
            .got(got.to_string())
            .hint("a vanished client changes at most what its complete request asked for")
            .fail();
    }
    first.hint("this keep-alive connection stayed open while others sent garbage and reset: it must still be served");
    first.send(&http::request(
        "GET",
        &format!("/tasks/{}", id_of(&t2)),
        &[],
        b"",
    ));
    let r = http::read_response(&mut first);
    run.record(
        "GET",
        &format!("/tasks/{}", id_of(&t2)),
        "/tasks/{id}",
        r.status,
        &r.headers,
    );
    if r.status != 200 {
        first
            .report()
            .expected("200")
            .got(r.describe())
            .hint("one client's bad bytes end only its own connection")
            .fail();
    }
    run.server()
        .expect_alive("served clients after others vanished");
    run.observe();
}
