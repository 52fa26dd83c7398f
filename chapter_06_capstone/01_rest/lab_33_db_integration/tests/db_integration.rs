//! The grader for lab 33: the tasks service on PostgreSQL.
//!
//! Tests 01..=19 are the chapter's shared suite (`labkit::tasks_suite!`),
//! the same API lab 32 passed in memory, now run against `tasks_db` on a
//! fresh database per test. Tests from 20 grade what PostgreSQL adds, only
//! through the interface: HTTP, the documented schema (read and written by
//! the test's own connection), the environment, stdout, stderr and the exit
//! code.
//!
//! - The schema is created by the service's migrations at start, and the
//!   data outlives the process (kill, start again: same tasks, versions,
//!   ETags, cursors).
//! - Every successful write appends one `task_events` row in the same
//!   transaction: the test makes that insert fail with a trigger of its own
//!   and checks that the write left nothing behind.
//! - The If-Match check is atomic in the database. The race is made
//!   certain, not hoped for: the test locks the task's row itself (`SELECT
//!   ... FOR UPDATE`), sends every PATCH to two instances, waits until each
//!   one is answered or blocked on a lock (`pg_stat_activity`), then lets
//!   them all go at once.
//! - Failures are bounded: an unreachable database at start is a prompt
//!   non-zero exit, and a slow or unreachable one while serving is a 503
//!   within `REQUEST_TIMEOUT_MS` (a fault proxy, `labkit::faults`, sits
//!   between the service and PostgreSQL), after which the same process
//!   serves again.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use labkit::Report;
use labkit::faults::{Fault, FaultProxy};
use labkit::server::Server;
use labkit::services::TestDb;
use labkit::session::Session;
use labkit::tasks_suite::App;
use labkit::wait::{eventually, within_async};
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres, Transaction};

const BIN: &str = env!("CARGO_BIN_EXE_tasks_db");

/// The suite's app: one `tasks_db` on a fresh database, kept alive with it
/// (the server is killed before the database is dropped).
fn app() -> App {
    let db = labkit::services::postgres();
    let server = Server::builder(BIN).env("DATABASE_URL", &db.url).spawn();
    App::new(server).keep(db)
}

labkit::tasks_suite! { app: crate::app }

/// The deadline of one database call made by the test.
const CALL: Duration = Duration::from_secs(10);

/// How long the requests get to reach the test's row lock (or answer).
const IN_FLIGHT: Duration = Duration::from_secs(10);

/// The request timeout the fault tests give the service, in ms.
const TIMEOUT_MS: &str = "300";

/// How long a request may take when the service has a 300 ms request
/// timeout: the timeout plus generous slack for a loaded machine. A
/// request still unanswered by then hangs.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// How long a start that cannot reach its database may take to give up:
/// a bounded connect is at most a few seconds.
const GIVE_UP_WITHIN: Duration = Duration::from_secs(15);

/// How long the service gets to serve again once a fault is lifted.
const RECOVER_WITHIN: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// The test's world: a database, the test's own connection to it, servers.

/// A fresh database with the test's own pool on it. Fields drop in order:
/// the pool and runtime first, the database last (its drop blocks).
struct Db {
    pool: PgPool,
    rt: tokio::runtime::Runtime,
    db: TestDb,
}

impl Db {
    fn new() -> Db {
        let db = labkit::services::postgres();
        let rt = labkit::wait::runtime(2);
        let pool = rt.block_on(async {
            within_async(
                CALL,
                "PgPoolOptions::connect (the test's own pool)",
                PgPoolOptions::new().max_connections(4).connect(&db.url),
            )
            .await
            .unwrap_or_else(|e| {
                Report::new(format!("connected the test to {}", db.url))
                    .got(e)
                    .fail()
            })
        });
        Db { pool, rt, db }
    }

    fn url(&self) -> &str {
        &self.db.url
    }

    fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Runs one statement of the test's own; fails with `hint` on error.
    fn exec(&self, sql: &'static str, hint: &str) {
        let r = self.block(within_async(
            CALL,
            sql,
            sqlx::query(sql).execute(&self.pool),
        ));
        if let Err(e) = r {
            Report::new(format!("ran in PostgreSQL: {sql}"))
                .got(e)
                .hint(hint)
                .fail();
        }
    }

    /// The row of `tasks` with this id, as (title, done, priority, version).
    fn task_row(&self, id: &str) -> Option<(String, bool, i16, i64)> {
        let r = self.block(within_async(
            CALL,
            "SELECT ... FROM tasks",
            sqlx::query_as::<_, (String, bool, i16, i64)>(
                "SELECT title, done, priority, version FROM tasks WHERE id::text = $1",
            )
            .bind(id)
            .fetch_optional(&self.pool),
        ));
        r.unwrap_or_else(|e| {
            Report::new("read SELECT title, done, priority, version FROM tasks WHERE id = ...")
                .got(e)
                .hint("the README's schema: a table tasks with columns seq, id (UUID), title, done, priority (SMALLINT), version (BIGINT). Do your migrations run at start?")
                .fail()
        })
    }

    /// How many rows `tasks` has.
    fn task_count(&self) -> i64 {
        let r = self.block(within_async(
            CALL,
            "SELECT count(*) FROM tasks",
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM tasks").fetch_one(&self.pool),
        ));
        r.unwrap_or_else(|e| {
            Report::new("read SELECT count(*) FROM tasks")
                .got(e)
                .hint("is the table named tasks, as the README's schema says?")
                .fail()
        })
    }

    /// The `task_events` of one task, oldest first, as (kind, version).
    fn events(&self, id: &str) -> Vec<(String, i64)> {
        let r = self.block(within_async(
            CALL,
            "SELECT kind, version FROM task_events",
            sqlx::query_as::<_, (String, i64)>(
                "SELECT kind, version FROM task_events WHERE task_id::text = $1 ORDER BY id",
            )
            .bind(id)
            .fetch_all(&self.pool),
        ));
        r.unwrap_or_else(|e| {
            Report::new("read SELECT kind, version FROM task_events WHERE task_id = ... ORDER BY id")
                .got(e)
                .hint("the README's schema: a table task_events with columns id (BIGSERIAL), task_id (UUID), version (BIGINT), kind (TEXT), at (TIMESTAMPTZ)")
                .fail()
        })
    }

    /// How many rows `task_events` has.
    fn event_count(&self) -> i64 {
        let r = self.block(within_async(
            CALL,
            "SELECT count(*) FROM task_events",
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM task_events").fetch_one(&self.pool),
        ));
        r.unwrap_or_else(|e| {
            Report::new("read SELECT count(*) FROM task_events")
                .got(e)
                .hint("is the table named task_events, as the README's schema says?")
                .fail()
        })
    }

    /// Locks the task's row in a transaction of the test's own.
    fn hold(&self, id: &str) -> Held {
        let tx = self.block(async {
            let mut tx = within_async(CALL, "BEGIN (the test's lock)", self.pool.begin())
                .await
                .expect("begin the test's transaction");
            let locked: Option<i64> = within_async(
                CALL,
                "SELECT ... FOR UPDATE",
                sqlx::query_scalar("SELECT version FROM tasks WHERE id::text = $1 FOR UPDATE")
                    .bind(id)
                    .fetch_optional(&mut *tx),
            )
            .await
            .unwrap_or_else(|e| {
                Report::new("locked the task's row: SELECT version FROM tasks WHERE id = ... FOR UPDATE")
                    .got(e)
                    .hint("is the table named tasks with columns id and version, as the README's schema says?")
                    .fail()
            });
            if locked.is_none() {
                Report::new(format!("locked the row of task {id} in tasks"))
                    .got("no such row")
                    .hint("does POST /tasks insert into the tasks table, with the id it answers?")
                    .fail();
            }
            tx
        });
        Held {
            tx: Some(tx),
            rt: self.rt.handle().clone(),
        }
    }

    fn release(&self, mut held: Held) {
        let tx = held.tx.take().expect("a lock not yet released");
        self.block(async {
            within_async(CALL, "ROLLBACK (the test's lock)", tx.rollback())
                .await
                .expect("end the test's transaction")
        });
    }

    /// Waits until `n` requests are each either answered or waiting on a
    /// lock in PostgreSQL.
    fn wait_in_flight(&self, n: usize, answered: &AtomicUsize) {
        self.block(eventually(
            IN_FLIGHT,
            &format!("{n} requests each answered or waiting on a lock in PostgreSQL, behind the row the test locked"),
            "does a conditional write wait in the database (UPDATE ... WHERE, or SELECT ... FOR UPDATE) while the test holds the task's row? Each server must serve several requests at once (a pool of several connections)",
            || async {
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                )
                .fetch_one(&self.pool)
                .await
                .map_err(|e| e.to_string())?;
                let done = answered.load(Ordering::SeqCst);
                if waiting as usize + done >= n {
                    Ok(())
                } else {
                    Err(format!("{waiting} waiting on a lock and {done} answered, of {n}"))
                }
            },
        ));
    }
}

/// The test's lock on a task's row: its open transaction. Released with
/// [`Db::release`]; when a test fails first, dropped here *inside* the
/// runtime, because sqlx returns the connection to its pool with a
/// spawned task, and spawning outside a runtime panics (a panic while
/// unwinding aborts the test process, and its servers would outlive it).
struct Held {
    tx: Option<Transaction<'static, Postgres>>,
    rt: tokio::runtime::Handle,
}

impl Drop for Held {
    fn drop(&mut self) {
        let _inside = self.rt.enter();
        drop(self.tx.take());
    }
}

/// Starts `tasks_db` on `url` with extra environment.
fn start(url: &str, env: &[(&str, &str)]) -> Server {
    let mut b = Server::builder(BIN).env("DATABASE_URL", url);
    for (k, v) in env {
        b = b.env(k, v);
    }
    b.spawn()
}

// ---------------------------------------------------------------------------
// HTTP.

/// One response, as the tests need it.
#[derive(Debug, Clone)]
struct Resp {
    status: u16,
    etag: Option<String>,
    content_type: String,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    fn describe(&self) -> String {
        let mut s = format!("{}", self.status);
        if let Some(e) = &self.etag {
            s.push_str(&format!(" ETag: {e}"));
        }
        if !self.content_type.is_empty() {
            s.push_str(&format!(" Content-Type: {}", self.content_type));
        }
        let body: String = self.body.chars().take(400).collect();
        format!("{s} {body}")
    }

    /// Whether this is the spec's error shape with a non-empty message and
    /// the code of its status (500 `internal`, 503 `unavailable`).
    fn is_error_shape(&self) -> bool {
        let j = self.json();
        let code = match self.status {
            500 => "internal",
            503 => "unavailable",
            _ => return false,
        };
        self.content_type.starts_with("application/json")
            && j["error"]["code"] == code
            && j["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
    }
}

fn http() -> reqwest::blocking::Client {
    labkit::http::client_builder()
        .timeout(ANSWER_WITHIN)
        .build()
        .expect("build the test's HTTP client")
}

/// The outcome of one request: a response, or why none came.
fn try_send(
    http: &reqwest::blocking::Client,
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Result<Resp, String> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a valid method");
    let mut req = http.request(method, format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let r = req.send().map_err(|e| labkit::report::error_chain(&e))?;
    let status = r.status().as_u16();
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let etag = header("etag");
    let content_type = header("content-type").unwrap_or_default();
    let body = r.text().map_err(|e| labkit::report::error_chain(&e))?;
    Ok(Resp {
        status,
        etag,
        content_type,
        body,
    })
}

/// Describes a request for a failure message.
fn describe_request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> String {
    let mut s = format!("sent {method} {path}");
    for (k, v) in headers {
        s.push_str(&format!(" ({k}: {v})"));
    }
    if let Some(b) = body {
        s.push_str(&format!(" {b}"));
    }
    s
}

/// Sends one request; fails the test (with the server's stderr) when no
/// response comes.
fn send(
    http: &reqwest::blocking::Client,
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Resp {
    try_send(http, server.addr(), method, path, headers, body).unwrap_or_else(|e| {
        server
            .report()
            .did(describe_request(method, path, headers, body))
            .expected(format!("an HTTP response within {ANSWER_WITHIN:?}"))
            .got(e)
            .hint("did the handler panic (stderr below), or wait for something that never comes (a lock, a pool connection, a database that does not answer)? Every request must be answered within REQUEST_TIMEOUT_MS")
            .fail()
    })
}

/// Fails unless `r` has status `want`.
fn expect_status(server: &Server, did: &str, r: &Resp, want: u16, hint: &str) {
    if r.status != want {
        server
            .report()
            .did(did)
            .expected(format!("status {want}"))
            .got(r.describe())
            .hint(hint)
            .fail();
    }
}

/// Creates a task through the API; returns (id, ETag, body).
fn create(
    http: &reqwest::blocking::Client,
    server: &Server,
    body: Value,
) -> (String, String, Value) {
    let did = describe_request("POST", "/tasks", &[], Some(&body));
    let r = send(http, server, "POST", "/tasks", &[], Some(&body));
    expect_status(
        server,
        &did,
        &r,
        201,
        "POST /tasks with a valid body answers 201 with the stored task (it worked in lab 32: is the INSERT right, and are the tables there?)",
    );
    let j = r.json();
    match (j["id"].as_str(), &r.etag) {
        (Some(id), Some(etag)) => (id.to_string(), etag.clone(), j),
        _ => server
            .report()
            .did(did)
            .expected("201 with an ETag header and a JSON task with a string id")
            .got(r.describe())
            .fail(),
    }
}

/// The task as the API shows it, without its id (compared across calls).
fn fields(j: &Value) -> Value {
    json!({
        "title": j["title"],
        "done": j["done"],
        "priority": j["priority"],
        "version": j["version"],
    })
}

/// Walks the whole list with `limit`, starting after `cursor`; returns
/// the ids in order.
fn walk(
    http: &reqwest::blocking::Client,
    server: &Server,
    limit: usize,
    mut cursor: Option<String>,
) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..100 {
        let path = match &cursor {
            Some(c) => format!("/tasks?limit={limit}&cursor={c}"),
            None => format!("/tasks?limit={limit}"),
        };
        let r = send(http, server, "GET", &path, &[], None);
        expect_status(
            server,
            &format!("sent GET {path}"),
            &r,
            200,
            "a list page is 200",
        );
        let j = r.json();
        let Some(items) = j["items"].as_array() else {
            server
                .report()
                .did(format!("sent GET {path}"))
                .expected(r#"{"items": [...], "next_cursor": ...}"#)
                .got(r.describe())
                .fail()
        };
        ids.extend(
            items
                .iter()
                .filter_map(|t| t["id"].as_str().map(str::to_string)),
        );
        match j["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return ids,
        }
    }
    server
        .report()
        .did(format!("walked GET /tasks?limit={limit} for 100 pages"))
        .expected("next_cursor null on the last page")
        .got("still a next_cursor after 100 pages")
        .fail()
}

// ---------------------------------------------------------------------------
// The lab's own tests.

// On a fresh database the service creates the documented schema itself, at start, before it listens; a second start on the migrated database is fine and changes nothing.
#[test]
fn test_20_migrations_create_the_documented_schema_at_start() {
    let db = Db::new();
    let server = start(db.url(), &[]);
    let got: Vec<(String, String, String)> = db
        .block(within_async(
            CALL,
            "SELECT ... FROM information_schema.columns",
            sqlx::query_as(
                "SELECT table_name::text, column_name::text, data_type::text \
                 FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name IN ('tasks', 'task_events') \
                 ORDER BY table_name, column_name",
            )
            .fetch_all(&db.pool),
        ))
        .unwrap_or_else(|e| {
            Report::new("read the columns of tasks and task_events from information_schema")
                .got(e)
                .fail()
        });
    let mut want: Vec<(String, String, String)> = [
        ("task_events", "at", "timestamp with time zone"),
        ("task_events", "id", "bigint"),
        ("task_events", "kind", "text"),
        ("task_events", "task_id", "uuid"),
        ("task_events", "version", "bigint"),
        ("tasks", "done", "boolean"),
        ("tasks", "id", "uuid"),
        ("tasks", "priority", "smallint"),
        ("tasks", "seq", "bigint"),
        ("tasks", "title", "text"),
        ("tasks", "version", "bigint"),
    ]
    .iter()
    .map(|(t, c, d)| (t.to_string(), c.to_string(), d.to_string()))
    .collect();
    want.sort();
    let missing: Vec<&(String, String, String)> =
        want.iter().filter(|c| !got.contains(c)).collect();
    if !missing.is_empty() {
        server
            .report()
            .did("started the server on a fresh, empty database, then read the columns of tasks and task_events (information_schema.columns)")
            .expected(format!("at least these (table, column, type): {want:?}"))
            .got(format!("{got:?}, without {missing:?}"))
            .hint("put the README's CREATE TABLE statements in src/migrations/0001_tasks.sql, and run sqlx::migrate!(\"src/migrations\").run(&pool) at start, before printing `listening on`")
            .fail();
    }
    let http = http();
    let (id, etag, _) = create(&http, &server, json!({"title": "migrated"}));
    drop(server);

    // Started again on the same database: nothing to apply, nothing lost.
    let again = start(db.url(), &[]);
    let did = format!(
        "started the server on a fresh database, created task {id}, killed it, started it again on the same (now migrated) database, then sent GET /tasks/{id}"
    );
    let r = send(&http, &again, "GET", &format!("/tasks/{id}"), &[], None);
    expect_status(
        &again,
        &did,
        &r,
        200,
        "a second start must not fail or re-create the tables: sqlx::migrate! records what it applied in _sqlx_migrations",
    );
    if r.etag.as_deref() != Some(etag.as_str()) || r.json()["title"] != "migrated" {
        again
            .report()
            .did(did)
            .expected(format!("200, ETag {etag}, title \"migrated\""))
            .got(r.describe())
            .hint("the task must come from the tasks table, unchanged")
            .fail();
    }
}

// The data lives in PostgreSQL, not in the process: after a kill and a new start, every task, version and ETag is the same, a cursor handed out before the restart still continues the walk, and new tasks come after the old ones.
#[test]
fn test_21_tasks_etags_and_cursors_survive_a_restart() {
    let db = Db::new();
    let http = http();
    let first = start(db.url(), &[]);
    let mut tasks = Vec::new();
    for i in 0..5 {
        let (id, _, _) = create(
            &http,
            &first,
            json!({"title": format!("task {i}"), "priority": i % 5 + 1}),
        );
        tasks.push(id);
    }
    // Different versions: task 1 patched twice, task 3 once.
    for (i, n) in [(1, 2), (3, 1)] {
        for _ in 0..n {
            let r = send(
                &http,
                &first,
                "PATCH",
                &format!("/tasks/{}", tasks[i]),
                &[],
                Some(&json!({"done": true})),
            );
            expect_status(
                &first,
                "sent PATCH /tasks/{id} {\"done\": true}",
                &r,
                200,
                "an unconditional PATCH is 200",
            );
        }
    }
    let before: Vec<Resp> = tasks
        .iter()
        .map(|id| send(&http, &first, "GET", &format!("/tasks/{id}"), &[], None))
        .collect();
    let r = send(&http, &first, "GET", "/tasks?limit=2", &[], None);
    let cursor = r.json()["next_cursor"].as_str().map(str::to_string);
    let Some(cursor) = cursor else {
        first
            .report()
            .did("created 5 tasks, sent GET /tasks?limit=2")
            .expected("a page of 2 with a next_cursor")
            .got(r.describe())
            .fail()
    };
    // SIGKILL: nothing the process kept in memory survives this.
    drop(first);

    let second = start(db.url(), &[]);
    let did = "created 5 tasks (patched two of them), read each, killed the server (SIGKILL), started a new one on the same database";
    for (id, old) in tasks.iter().zip(&before) {
        let r = send(&http, &second, "GET", &format!("/tasks/{id}"), &[], None);
        if r.status != 200 || r.etag != old.etag || r.json() != old.json() {
            second
                .report()
                .did(format!("{did}, then sent GET /tasks/{id}"))
                .expected(format!("the same answer as before the restart: {}", old.describe()))
                .got(r.describe())
                .hint("tasks, versions and ETags must come from PostgreSQL: the ETag is derived from the stored version")
                .fail();
        }
    }
    let rest = walk(&http, &second, 2, Some(cursor.clone()));
    if rest != tasks[2..] {
        second
            .report()
            .did(format!("{did}, then walked GET /tasks?limit=2 from the cursor {cursor:?} the first server handed out after the first page"))
            .expected(format!("tasks 3 to 5 in creation order: {:?}", &tasks[2..]))
            .got(format!("{rest:?}"))
            .hint("the cursor must name a position in the database (the creation sequence, seq), not something only one process knows")
            .fail();
    }
    let (new, _, _) = create(&http, &second, json!({"title": "after the restart"}));
    let all = walk(&http, &second, 4, None);
    let mut want = tasks.clone();
    want.push(new);
    if all != want {
        second
            .report()
            .did(format!("{did}, created one more task, then walked GET /tasks?limit=4"))
            .expected(format!("the 5 old tasks in creation order, then the new one: {want:?}"))
            .got(format!("{all:?}"))
            .hint("creation order is the tasks table's seq (BIGSERIAL), which keeps counting across restarts; order the list by it, never by id")
            .fail();
    }
    let id = &tasks[1];
    let r = send(
        &http,
        &second,
        "PATCH",
        &format!("/tasks/{id}"),
        &[],
        Some(&json!({"priority": 5})),
    );
    if r.status != 200 || r.json()["version"] != json!(4) || r.etag == before[1].etag {
        second
            .report()
            .did(format!("{did}, then sent PATCH /tasks/{id} {{\"priority\": 5}} to the task that was at version 3"))
            .expected("200, version 4, a new ETag")
            .got(r.describe())
            .hint("the version continues from the stored one: version = version + 1 in the UPDATE")
            .fail();
    }
}

// Each successful write appends exactly one task_events row with its kind and the task's new version (for a delete, the version deleted); a rejected write (412, 422, 404) appends none.
#[test]
fn test_22_every_successful_write_appends_one_event_and_rejected_ones_none() {
    let db = Db::new();
    let http = http();
    let server = start(db.url(), &[]);
    let (id, etag1, _) = create(&http, &server, json!({"title": "audited"}));
    let path = format!("/tasks/{id}");
    let mut log = vec![format!("POST /tasks -> {id} (ETag {etag1})")];
    let mut step = |method: &str, headers: &[(&str, &str)], body: Option<Value>, want: u16| {
        let r = send(&http, &server, method, &path, headers, body.as_ref());
        let did = describe_request(method, &path, headers, body.as_ref());
        log.push(format!("{did} -> {}", r.status));
        expect_status(
            &server,
            &format!("{}, then {did}", log[..log.len() - 1].join(", ")),
            &r,
            want,
            "see the README's Spec (lab 32's rules)",
        );
        r
    };
    let put = step(
        "PUT",
        &[],
        Some(json!({"title": "audited", "done": true, "priority": 2})),
        200,
    );
    let etag2 = put.etag.clone().unwrap_or_default();
    step("PATCH", &[], Some(json!({"title": "audited again"})), 200);
    step(
        "PATCH",
        &[("if-match", &etag2)],
        Some(json!({"done": false})),
        412,
    );
    step("PATCH", &[], Some(json!({"priority": 9})), 422);
    step(
        "PUT",
        &[],
        Some(json!({"title": "no done, no priority"})),
        422,
    );
    step("DELETE", &[("if-match", &etag1)], None, 412);
    step("DELETE", &[], None, 204);
    step("DELETE", &[], None, 404);
    step("PATCH", &[], Some(json!({"done": true})), 404);
    let did = log.join(", ");
    let got = db.events(&id);
    let want: Vec<(String, i64)> = [
        ("created", 1),
        ("updated", 2),
        ("updated", 3),
        ("deleted", 3),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), *v))
    .collect();
    if got != want {
        let hint = if got.len() > want.len() {
            "only a write that succeeds appends an event: a 412, 422 or 404 must change nothing, in tasks or task_events"
        } else {
            "every successful POST, PUT, PATCH and DELETE inserts one row into task_events (kind created/updated/deleted, version = the task's version after the change; for a delete, the version deleted), in the same transaction as the write"
        };
        server
            .report()
            .did(did)
            .did(format!(
                "read SELECT kind, version FROM task_events WHERE task_id = '{id}' ORDER BY id"
            ))
            .expected(format!("{want:?}"))
            .got(format!("{got:?}"))
            .hint(hint)
            .fail();
    }
    let r = send(
        &http,
        &server,
        "PATCH",
        &format!("/tasks/{}", "00000000-0000-4000-8000-000000000000"),
        &[],
        Some(&json!({"done": true})),
    );
    expect_status(
        &server,
        "sent PATCH to an unknown task id",
        &r,
        404,
        "an unknown task is 404",
    );
    let total: i64 = db
        .block(sqlx::query_scalar::<_, i64>("SELECT count(*) FROM task_events").fetch_one(&db.pool))
        .unwrap_or(-1);
    if total != 4 {
        server
            .report()
            .did(format!("{did}, then PATCH to an unknown id (404)"))
            .did("read SELECT count(*) FROM task_events")
            .expected("4 rows: the task's four successful writes")
            .got(format!("{total}"))
            .hint("a write that finds no task appends no event")
            .fail();
    }
}

/// Fails unless `r` is a 5xx with the error shape.
fn expect_5xx(server: &Server, did: &str, r: &Resp) {
    if !(500..600).contains(&r.status) || !r.is_error_shape() {
        server
            .report()
            .did(did)
            .expected(r#"500 (or 503) with the error shape {"error": {"code": "internal", "message": ...}}, Content-Type: application/json"#)
            .got(r.describe())
            .hint("the event insert failed: the write's transaction must fail as a whole, and the error must reach the client as a 500 (never a success, never a dropped connection)")
            .fail();
    }
}

// A write and its event commit together or not at all: with a trigger (the test's) that makes every task_events insert fail, each write answers 5xx with the error shape and leaves the task exactly as it was; without the trigger, writes work again.
#[test]
fn test_23_a_write_whose_event_fails_changes_nothing() {
    let db = Db::new();
    let http = http();
    let server = start(db.url(), &[]);
    let (id, etag, created) = create(
        &http,
        &server,
        json!({"title": "untouchable", "priority": 2}),
    );
    let path = format!("/tasks/{id}");
    db.exec(
        "CREATE FUNCTION labkit_fail_event() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'refused by a trigger the test installed'; END $$",
        "the test installs a trigger function; may the database user create functions?",
    );
    db.exec(
        "CREATE TRIGGER labkit_fail_event BEFORE INSERT ON task_events \
         FOR EACH ROW EXECUTE FUNCTION labkit_fail_event()",
        "the README's schema names a table task_events",
    );
    let did = format!(
        "created task {id}, then installed a trigger that makes every INSERT INTO task_events fail"
    );
    let row_before = db.task_row(&id);
    let writes: [(&str, Option<Value>); 4] = [
        ("PATCH", Some(json!({"title": "changed", "done": true}))),
        (
            "PUT",
            Some(json!({"title": "replaced", "done": true, "priority": 5})),
        ),
        ("PATCH", Some(json!({}))),
        ("DELETE", None),
    ];
    for (method, body) in &writes {
        let step = format!(
            "{did}, then {}",
            describe_request(method, &path, &[], body.as_ref())
        );
        let r = send(&http, &server, method, &path, &[], body.as_ref());
        expect_5xx(&server, &step, &r);
        let g = send(&http, &server, "GET", &path, &[], None);
        let row = db.task_row(&id);
        if g.status != 200
            || fields(&g.json()) != fields(&created)
            || g.etag.as_deref() != Some(etag.as_str())
            || row != row_before
        {
            server
                .report()
                .did(&step)
                .did(format!("got {}, then sent GET {path} and read its row in tasks", r.status))
                .expected(format!("the task unchanged: {} (ETag {etag}); row {row_before:?}", fields(&created)))
                .got(format!("{}; row {row:?}", g.describe()))
                .hint("the change to tasks and its task_events row must be one transaction: begin, UPDATE/DELETE, INSERT INTO task_events, commit; an error in between rolls both back (dropping an uncommitted sqlx Transaction rolls it back)")
                .fail();
        }
    }
    let count = db.task_count();
    let body = json!({"title": "never stored"});
    let r = send(&http, &server, "POST", "/tasks", &[], Some(&body));
    let step = format!("{did}, then sent POST /tasks {body}");
    expect_5xx(&server, &step, &r);
    let after = db.task_count();
    if after != count {
        server
            .report()
            .did(&step)
            .did("read SELECT count(*) FROM tasks")
            .expected(format!("{count} rows, as before the POST"))
            .got(format!("{after}"))
            .hint("a create whose event insert fails must not leave the task behind: INSERT INTO tasks and INSERT INTO task_events in one transaction")
            .fail();
    }
    db.exec(
        "DROP TRIGGER labkit_fail_event ON task_events",
        "dropping the test's trigger",
    );
    let r = send(
        &http,
        &server,
        "PATCH",
        &path,
        &[("if-match", &etag)],
        Some(&json!({"done": true})),
    );
    let step = format!(
        "{did}, sent 5 writes (each 5xx), dropped the trigger, then sent PATCH {path} (If-Match: {etag}) {{\"done\": true}}"
    );
    expect_status(
        &server,
        &step,
        &r,
        200,
        "once task_events accepts inserts again, writes work, and the ETag is still the one from before the failed writes",
    );
    let events = db.events(&id);
    if events != [("created".to_string(), 1), ("updated".to_string(), 2)] {
        server
            .report()
            .did(&step)
            .did(format!("read the task_events of task {id}"))
            .expected(r#"[("created", 1), ("updated", 2)]"#)
            .got(format!("{events:?}"))
            .hint("the failed writes must leave no event, and the version must not have moved")
            .fail();
    }

    // The other way round: the write to tasks fails; its event must not
    // stay behind either (an event inserted first, on its own, would).
    db.exec(
        "CREATE TRIGGER labkit_fail_task BEFORE INSERT OR UPDATE OR DELETE ON tasks \
         FOR EACH ROW EXECUTE FUNCTION labkit_fail_event()",
        "the README's schema names a table tasks",
    );
    let did = format!(
        "{step}, then installed a trigger that makes every INSERT, UPDATE and DELETE on tasks fail"
    );
    let (events_before, row_before) = (db.event_count(), db.task_row(&id));
    let writes: [(&str, &str, Option<Value>); 4] = [
        ("PATCH", path.as_str(), Some(json!({"done": false}))),
        (
            "PUT",
            path.as_str(),
            Some(json!({"title": "replaced", "done": false, "priority": 1})),
        ),
        ("DELETE", path.as_str(), None),
        ("POST", "/tasks", Some(json!({"title": "never stored"}))),
    ];
    for (method, target, body) in &writes {
        let step = format!(
            "{did}, then {}",
            describe_request(method, target, &[], body.as_ref())
        );
        let r = send(&http, &server, method, target, &[], body.as_ref());
        expect_5xx(&server, &step, &r);
        let (events, row) = (db.event_count(), db.task_row(&id));
        if events != events_before || row != row_before {
            server
                .report()
                .did(&step)
                .did("read the task's row and counted the rows of task_events")
                .expected(format!("both unchanged: {events_before} events, row {row_before:?}"))
                .got(format!("{events} events, row {row:?}"))
                .hint("an event must only exist for a write that happened: insert it in the same transaction as the write, so that a failed write takes its event with it")
                .fail();
        }
    }
}

/// Sends one conditional write (`If-Match: etag`) on its own thread,
/// counting its answer.
fn race_thread(
    http: &reqwest::blocking::Client,
    addr: std::net::SocketAddr,
    method: &'static str,
    path: String,
    etag: &str,
    body: Option<Value>,
    answered: &Arc<AtomicUsize>,
) -> thread::JoinHandle<Result<Resp, String>> {
    let (http, etag, answered) = (http.clone(), etag.to_string(), Arc::clone(answered));
    thread::spawn(move || {
        let r = try_send(
            &http,
            addr,
            method,
            &path,
            &[("if-match", &etag)],
            body.as_ref(),
        );
        answered.fetch_add(1, Ordering::SeqCst);
        r
    })
}

/// Races `n` conditional writes with one ETag, alternately to `a` and
/// `b`, behind the test's lock on the task's row; returns each outcome
/// with the server it went to.
fn race(
    db: &Db,
    http: &reqwest::blocking::Client,
    (a, b): (&Server, &Server),
    (id, etag): (&str, &str),
    n: usize,
    method: &'static str,
    body: impl Fn(usize) -> Option<Value>,
) -> Vec<String> {
    let held = db.hold(id);
    let answered = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let addr = if i % 2 == 0 { a.addr() } else { b.addr() };
            race_thread(
                http,
                addr,
                method,
                format!("/tasks/{id}"),
                etag,
                body(i),
                &answered,
            )
        })
        .collect();
    db.wait_in_flight(n, &answered);
    db.release(held);
    handles
        .into_iter()
        .enumerate()
        .map(|(i, h)| {
            let to = if i % 2 == 0 { "A" } else { "B" };
            match h.join().expect("a request thread") {
                Ok(r) => format!("{to}: {}", r.describe()),
                Err(e) => format!("{to}: no response ({e})"),
            }
        })
        .collect()
}

/// How many of `results` (from [`race`]: `"A: <status> ..."`) have this
/// status.
fn count(results: &[String], status: u16) -> usize {
    results
        .iter()
        .filter(|r| {
            r.get(3..)
                .is_some_and(|r| r.starts_with(&format!("{status} ")))
        })
        .count()
}

// The If-Match check holds across processes: 8 PATCHes with the same ETag, sent to two instances on one database while the test holds the row's lock, then released at once, give exactly one 200 and seven 412; 6 DELETEs likewise give one 204; one event each, and both instances then agree on the task.
#[test]
fn test_24_if_match_is_atomic_across_two_instances() {
    let db = Db::new();
    let http = http();
    let a = start(db.url(), &[]);
    let b = start(db.url(), &[]);
    let (id, etag, _) = create(&http, &a, json!({"title": "contended"}));
    let n = 8;
    let results = race(&db, &http, (&a, &b), (&id, &etag), n, "PATCH", |i| {
        Some(json!({"title": format!("writer {i}")}))
    });
    let did = format!(
        "created task {id} (ETag {etag}), locked its row (SELECT ... FOR UPDATE), sent {n} PATCHes with If-Match: {etag}, half to each of two servers on one database, waited until each was answered or waiting on a lock in PostgreSQL, then released the lock"
    );
    let (ok, refused) = (count(&results, 200), count(&results, 412));
    if ok != 1 || refused != n - 1 {
        let hint = if ok > 1 {
            "several PATCHes passed the If-Match check: a version read before the write (SELECT, then UPDATE) is stale by the time the UPDATE runs. Make the check part of the write: UPDATE tasks SET ... WHERE id = $1 AND version = ANY($2) (0 rows: 412), or read the row with SELECT ... FOR UPDATE in the write's transaction; a lock inside one process cannot protect two"
        } else {
            "exactly one PATCH carrying the current ETag succeeds; every other one finds the version moved on and answers 412"
        };
        b.report()
            .did(&did)
            .expected(format!("exactly one 200 and {} times 412", n - 1))
            .got(results.join("\n"))
            .hint(hint)
            .fail();
    }
    let events = db.events(&id);
    let row = db.task_row(&id);
    if events.len() != 2 || row.as_ref().map(|r| r.3) != Some(2) {
        b.report()
            .did(&did)
            .did("read the task's row and its task_events")
            .expected("version 2 and two events (created, updated)")
            .got(format!("row {row:?}, events {events:?}"))
            .hint("only the one successful PATCH may change the task and append an event")
            .fail();
    }
    let (ra, rb) = (
        send(&http, &a, "GET", &format!("/tasks/{id}"), &[], None),
        send(&http, &b, "GET", &format!("/tasks/{id}"), &[], None),
    );
    if ra.status != 200
        || ra.etag != rb.etag
        || ra.body != rb.body
        || ra.json()["version"] != json!(2)
    {
        b.report()
            .did(format!("{did}, then sent GET /tasks/{id} to both servers"))
            .expected("200 with the same task (version 2) and ETag from both")
            .got(format!("A: {}\nB: {}", ra.describe(), rb.describe()))
            .hint("read tasks from PostgreSQL on every request: a copy kept in one process goes stale when another process writes")
            .fail();
    }

    let etag2 = ra.etag.clone().unwrap_or_default();
    let n = 6;
    let results = race(&db, &http, (&a, &b), (&id, &etag2), n, "DELETE", |_| None);
    let did = format!(
        "{did}; then locked the row again, sent {n} DELETEs with If-Match: {etag2} (the new ETag), half to each server, waited as before, released the lock"
    );
    let (gone, lost) = (
        count(&results, 204),
        count(&results, 404) + count(&results, 412),
    );
    let events = db.events(&id);
    let deleted = events.iter().filter(|(k, _)| k == "deleted").count();
    if gone != 1 || lost != n - 1 || deleted != 1 {
        b.report()
            .did(&did)
            .expected(format!("exactly one 204, {} times 404 or 412, and one deleted event", n - 1))
            .got(format!("{}\nevents: {events:?}", results.join("\n")))
            .hint("the If-Match check of a DELETE must be part of the DELETE (DELETE ... WHERE id = $1 AND version = ANY($2)), so that the losers find the row gone")
            .fail();
    }
}

/// Runs `env <args>` (the server with its environment set or removed)
/// and fails unless it is a start that gave up: a prompt non-zero exit of
/// its own, something on stderr, and never `listening on` on stdout.
/// Returns its stderr.
fn expect_give_up(args: &[&str], why: &str) -> String {
    let mut s = Session::start("env", args);
    let until = Instant::now() + GIVE_UP_WITHIN;
    let hint = "connect to PostgreSQL (with a bounded timeout) and run the migrations before you bind and print `listening on`; on failure print one sentence to stderr and exit with a non-zero status (std::process::exit(1)), never panic";
    // Stdout ends when the process exits; a `listening on` fails at once.
    while let Some(line) = s.read_line(until.saturating_duration_since(Instant::now())) {
        if line.contains("listening on") {
            s.report()
                .did(why)
                .expected("a non-zero exit before `listening on`")
                .got(format!("stdout said {line:?}"))
                .hint(hint)
                .fail();
        }
    }
    let status = s.wait(until.saturating_duration_since(Instant::now()));
    let stderr = s.stderr();
    let problem = match status {
        None => Some(format!("it was still running after {GIVE_UP_WITHIN:?}")),
        Some(st) if st.success() => Some("it exited with status 0".to_string()),
        Some(_) if stderr.contains("panicked at") => Some("it panicked".to_string()),
        Some(st) if st.code().is_none() => Some(labkit::session::describe(st)),
        Some(_) if stderr.trim().is_empty() => Some("stderr was empty".to_string()),
        Some(_) => None,
    };
    if let Some(problem) = problem {
        s.report()
            .did(why)
            .expected(format!("a non-zero exit within {GIVE_UP_WITHIN:?}, one sentence on stderr saying what is wrong, and no `listening on` on stdout"))
            .got(problem)
            .hint(hint)
            .fail();
    }
    stderr
}

// A database that cannot be reached at start is a prompt non-zero exit with one sentence on stderr, before `listening on`: both a closed port (refused) and a database that accepts the connection and then never answers (a bounded connect).
#[test]
fn test_25_an_unreachable_database_at_start_is_a_prompt_clean_exit() {
    let db = labkit::services::postgres();
    let proxy = FaultProxy::for_url(&db.url);
    let url = format!("DATABASE_URL={}", proxy.url());
    for (fault, what) in [
        (
            Fault::Refuse,
            "refuses connections (nothing listens on its port)",
        ),
        (
            Fault::Blackhole,
            "accepts the TCP connection, then never answers (a dead network path)",
        ),
    ] {
        proxy.set(fault);
        expect_give_up(
            &[&url, "REQUEST_TIMEOUT_MS=500", BIN, "127.0.0.1:0"],
            &format!(
                "started the server with REQUEST_TIMEOUT_MS=500 and DATABASE_URL pointing at a database that {what}"
            ),
        );
    }
}

// Without DATABASE_URL the service refuses to start: a non-zero exit, a sentence on stderr naming DATABASE_URL, no `listening on`.
#[test]
fn test_26_a_missing_database_url_is_a_clean_exit() {
    // `env -u`: the variable is missing even when the test's own
    // environment has one (labkit uses DATABASE_URL to find a server).
    let why = "started the server without DATABASE_URL in its environment";
    let stderr = expect_give_up(&["-u", "DATABASE_URL", BIN, "127.0.0.1:0"], why);
    if !stderr.contains("DATABASE_URL") {
        Report::new(why)
            .expected("stderr to name the missing variable, DATABASE_URL")
            .got(labkit::report::show(stderr.as_bytes()))
            .hint("say what to do: e.g. \"DATABASE_URL is not set: set it to postgres://user@host:port/db\"")
            .fail();
    }
}

// With no argument, the service listens on LISTEN_ADDR; an argument wins over LISTEN_ADDR.
#[test]
fn test_27_listen_addr_is_used_when_no_argument_is_given() {
    let db = Db::new();
    let http = http();
    let url = format!("DATABASE_URL={}", db.url());
    let mut s = Session::start("env", ["LISTEN_ADDR=127.0.0.1:0", url.as_str(), BIN]);
    let (_, line) = s.read_until(
        "`listening on <addr>`",
        |l| l.starts_with("listening on "),
        labkit::server::READY_DEADLINE,
    );
    let addr: Option<std::net::SocketAddr> = line["listening on ".len()..].trim().parse().ok();
    let did = "started the server with no argument and LISTEN_ADDR=127.0.0.1:0";
    let Some(addr) = addr.filter(|a| a.port() != 0 && a.port() != 8080) else {
        s.report()
            .did(did)
            .expected("`listening on 127.0.0.1:<a port the kernel picked>`")
            .got(format!("{line:?}"))
            .hint("without an argument, take the address from LISTEN_ADDR (std::env::var), and only then fall back to 127.0.0.1:8080; print the address the listener actually got (local_addr)")
            .fail()
    };
    let body = json!({"title": "via LISTEN_ADDR"});
    let r = try_send(&http, addr, "POST", "/tasks", &[], Some(&body));
    let id = match &r {
        Ok(r) if r.status == 201 => r.json()["id"].as_str().map(str::to_string),
        _ => None,
    };
    let get = id
        .as_ref()
        .map(|id| try_send(&http, addr, "GET", &format!("/tasks/{id}"), &[], None));
    if !matches!(&get, Some(Ok(g)) if g.status == 200) {
        s.report()
            .did(format!(
                "{did}, then sent POST /tasks {body} and GET the new task to {addr}"
            ))
            .expected("201, then 200")
            .got(format!("{r:?} then {get:?}"))
            .hint("the server must serve on the address it printed")
            .fail();
    }
    drop(s);
    // An argument wins: LISTEN_ADDR is not even looked at.
    let server = start(db.url(), &[("LISTEN_ADDR", "not an address")]);
    let r = send(&http, &server, "GET", "/tasks", &[], None);
    expect_status(
        &server,
        "started the server with the argument 127.0.0.1:0 and LISTEN_ADDR=\"not an address\", then sent GET /tasks",
        &r,
        200,
        "the first argument is the listen address; LISTEN_ADDR is only the fallback",
    );
}

/// Fails unless every request answers 503 with the error shape in time.
fn expect_503(
    server: &Server,
    http: &reqwest::blocking::Client,
    did: &str,
    requests: &[(&str, String, Option<Value>)],
) {
    for (method, path, body) in requests {
        let step = format!(
            "{did}, then {}",
            describe_request(method, path, &[], body.as_ref())
        );
        let started = Instant::now();
        let r = try_send(http, server.addr(), method, path, &[], body.as_ref());
        match r {
            Ok(r) if r.status == 503 && r.is_error_shape() => {}
            Ok(r) => server
                .report()
                .did(&step)
                .expected(r#"503 with the error shape {"error": {"code": "unavailable", "message": ...}}"#)
                .got(r.describe())
                .hint("a database that does not answer in time is not the client's fault nor a bug: 503 unavailable. Map sqlx's PoolTimedOut, I/O errors and your request timeout to 503, with the JSON error shape")
                .fail(),
            Err(e) => server
                .report()
                .did(&step)
                .expected(format!("503 within REQUEST_TIMEOUT_MS ({TIMEOUT_MS} ms) plus slack, {ANSWER_WITHIN:?} in all"))
                .got(format!("no response after {:?}: {e}", started.elapsed()))
                .hint("put a deadline on every request (a tower timeout layer, or tokio::time::timeout around the handler) that answers 503 with the error shape, and give the pool an acquire_timeout below it")
                .fail(),
        }
        server.expect_alive(&step);
    }
}

/// Sends a request until it answers `want` (at most [`RECOVER_WITHIN`]):
/// for a service with a 300 ms request timeout on a loaded machine, or
/// just recovering from an outage, where one 503 proves nothing.
#[allow(clippy::too_many_arguments)]
fn until_status(
    db: &Db,
    server: &Server,
    http: &reqwest::blocking::Client,
    did: &str,
    method: &'static str,
    path: &str,
    body: Option<Value>,
    want: u16,
) -> Resp {
    let last = std::sync::Mutex::new(String::new());
    let r = db.block(async {
        let until = tokio::time::Instant::now() + RECOVER_WITHIN;
        loop {
            let (http, addr, p, b) = (http.clone(), server.addr(), path.to_string(), body.clone());
            let r = tokio::task::spawn_blocking(move || {
                try_send(&http, addr, method, &p, &[], b.as_ref())
            })
            .await
            .expect("a request task");
            match r {
                Ok(r) if r.status == want => return Some(r),
                Ok(r) => *last.lock().unwrap() = r.describe(),
                Err(e) => *last.lock().unwrap() = e,
            }
            if tokio::time::Instant::now() >= until {
                return None;
            }
            // A poll: nothing tells the test when the pool has new connections.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    r.unwrap_or_else(|| {
        server
            .report()
            .did(did)
            .did(describe_request(method, path, &[], body.as_ref()))
            .expected(format!("{want} within {RECOVER_WITHIN:?} (retried), from the same process"))
            .got(format!("last answer: {}", last.lock().unwrap()))
            .hint("after a database outage the pool must open new connections by itself: don't cache one connection for ever, don't exit, don't mark the store broken")
            .fail()
    })
}

/// [`until_status`] for a POST /tasks; returns (id, ETag).
fn create_retrying(
    db: &Db,
    server: &Server,
    http: &reqwest::blocking::Client,
    did: &str,
    body: Value,
) -> (String, String) {
    let r = until_status(db, server, http, did, "POST", "/tasks", Some(body), 201);
    match (r.json()["id"].as_str(), &r.etag) {
        (Some(id), Some(etag)) => (id.to_string(), etag.clone()),
        _ => server
            .report()
            .did(did)
            .expected("201 with an ETag header and a JSON task with a string id")
            .got(r.describe())
            .fail(),
    }
}

// Through a fault proxy in front of PostgreSQL: while the database is unreachable (blackhole), slow (latency) or resetting connections, every request answers 503 with the error shape within REQUEST_TIMEOUT_MS (never hangs, never 500); once the fault is lifted the same process serves again.
#[test]
fn test_28_a_database_outage_is_a_prompt_503_and_the_service_recovers() {
    let db = Db::new();
    let http = http();
    let proxy = FaultProxy::for_url(db.url());
    let server = start(proxy.url(), &[("REQUEST_TIMEOUT_MS", TIMEOUT_MS)]);
    let started =
        format!("started the server with REQUEST_TIMEOUT_MS={TIMEOUT_MS} behind a fault proxy");
    let (id, etag) = create_retrying(&db, &server, &http, &started, json!({"title": "survivor"}));
    let path = format!("/tasks/{id}");
    let requests = [
        ("GET", path.clone(), None),
        ("POST", "/tasks".to_string(), Some(json!({"title": "lost"}))),
        ("PATCH", path.clone(), Some(json!({"done": true}))),
        ("GET", "/tasks".to_string(), None),
    ];
    for (fault, what) in [
        (
            Fault::Blackhole,
            "a blackhole (connections open, nothing moves)",
        ),
        (
            Fault::Latency(Duration::from_secs(2)),
            "2 s of latency each way",
        ),
        (Fault::Reset, "every connection reset"),
    ] {
        proxy.set(fault);
        let did = format!(
            "started the server with REQUEST_TIMEOUT_MS={TIMEOUT_MS} behind a fault proxy, created task {id}, switched the proxy to {what}"
        );
        expect_503(&server, &http, &did, &requests);
        proxy.set(Fault::Pass);
        let did = format!("{did}, got 503s, then lifted the fault");
        let r = until_status(&db, &server, &http, &did, "GET", &path, None, 200);
        if r.etag.as_deref() != Some(etag.as_str()) {
            server
                .report()
                .did(&did)
                .expected(format!("task {id} unchanged (ETag {etag}): the requests that answered 503 changed nothing"))
                .got(r.describe())
                .hint("a request cancelled by its timeout must roll its transaction back")
                .fail();
        }
    }
    create_retrying(
        &db,
        &server,
        &http,
        "lifted the last fault",
        json!({"title": "after the outages"}),
    );
}

// A request stuck behind a row lock (a slow database) answers 503 within REQUEST_TIMEOUT_MS instead of hanging, reads still work meanwhile, and writes work again once the lock is gone.
#[test]
fn test_29_a_request_stuck_on_a_lock_answers_503_in_time() {
    let db = Db::new();
    let http = http();
    let server = start(db.url(), &[("REQUEST_TIMEOUT_MS", TIMEOUT_MS)]);
    let started = format!("started the server with REQUEST_TIMEOUT_MS={TIMEOUT_MS}");
    let (id, etag) = create_retrying(&db, &server, &http, &started, json!({"title": "locked"}));
    let path = format!("/tasks/{id}");
    let held = db.hold(&id);
    let did = format!(
        "started the server with REQUEST_TIMEOUT_MS={TIMEOUT_MS}, created task {id}, locked its row in a transaction of the test's own (SELECT ... FOR UPDATE)"
    );
    expect_503(
        &server,
        &http,
        &did,
        &[
            ("PATCH", path.clone(), Some(json!({"done": true}))),
            (
                "PUT",
                path.clone(),
                Some(json!({"title": "x", "done": true, "priority": 1})),
            ),
            ("DELETE", path.clone(), None),
        ],
    );
    let did_get = format!(
        "{did}, sent PATCH, PUT and DELETE (each 503), then GET {path} while the lock was still held"
    );
    let r = until_status(&db, &server, &http, &did_get, "GET", &path, None, 200);
    if r.etag.as_deref() != Some(etag.as_str()) {
        server
            .report()
            .did(did_get)
            .expected(format!("200 with the unchanged task (ETag {etag}): a plain SELECT does not wait for a row lock"))
            .got(r.describe())
            .hint("a GET must not take a lock (no FOR UPDATE on reads), and the timed-out writes must not have changed anything")
            .fail();
    }
    db.release(held);
    let did = format!("{did}, got 503s, released the lock");
    until_status(
        &db,
        &server,
        &http,
        &did,
        "PATCH",
        &path,
        Some(json!({"done": true})),
        200,
    );
}

// DB_MAX_CONNECTIONS bounds the pool: with 2, four writes stuck behind a row lock hold two database connections, never more, and those that find no free connection answer 503 with the error shape (not 500, not a hang).
#[test]
fn test_30_db_max_connections_bounds_the_pool() {
    let db = Db::new();
    let http = http();
    let server = start(
        db.url(),
        &[("DB_MAX_CONNECTIONS", "2"), ("REQUEST_TIMEOUT_MS", "2000")],
    );
    let (id, _, _) = create(&http, &server, json!({"title": "crowded"}));
    let n = 4;
    let held = db.hold(&id);
    let answered = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            race_thread(
                &http,
                server.addr(),
                "PATCH",
                format!("/tasks/{id}"),
                "*",
                Some(json!({"priority": i % 5 + 1})),
                &answered,
            )
        })
        .collect();
    let most = std::sync::atomic::AtomicI64::new(0);
    db.block(eventually(
        IN_FLIGHT,
        &format!("{n} PATCHes each answered or waiting on the test's row lock"),
        "with DB_MAX_CONNECTIONS=2, two PATCHes wait on the lock inside PostgreSQL and the other two wait for a pool connection; those must give up (503) within REQUEST_TIMEOUT_MS",
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&db.pool)
            .await
            .map_err(|e| e.to_string())?;
            most.fetch_max(waiting, Ordering::SeqCst);
            let done = answered.load(Ordering::SeqCst);
            if waiting as usize + done >= n {
                Ok(())
            } else {
                Err(format!("{waiting} waiting on a lock and {done} answered, of {n}"))
            }
        },
    ));
    db.release(held);
    let results: Vec<String> = handles
        .into_iter()
        .map(|h| match h.join().expect("a request thread") {
            Ok(r) if r.status == 503 && !r.is_error_shape() => {
                format!("-> {} (not the error shape)", r.describe())
            }
            Ok(r) => format!("-> {}", r.describe()),
            Err(e) => format!("-> no response ({e})"),
        })
        .collect();
    let did = format!(
        "started the server with DB_MAX_CONNECTIONS=2 and REQUEST_TIMEOUT_MS=2000, locked task {id}'s row, sent {n} PATCHes (If-Match: *) at once, waited until each was answered or waiting on the lock, then released it"
    );
    let most = most.load(Ordering::SeqCst);
    if most > 2 {
        server
            .report()
            .did(&did)
            .expected(
                "at most 2 of the server's connections waiting on the lock (DB_MAX_CONNECTIONS=2)",
            )
            .got(format!("{most} waiting at once"))
            .hint("size the pool with DB_MAX_CONNECTIONS: PgPoolOptions::new().max_connections(n)")
            .fail();
    }
    let unavailable = count(&results, 503);
    let fine = results.iter().all(|r| {
        r.starts_with("-> 200 ")
            || (r.starts_with("-> 503 ") && !r.contains("(not the error shape)"))
    });
    if unavailable < 2 || !fine {
        server
            .report()
            .did(&did)
            .expected("at least 2 answered 503 with the error shape (no pool connection in time), the rest 200 or 503")
            .got(results.join("\n"))
            .hint("a pool with no free connection is the database being unavailable, not a bug: give the pool an acquire_timeout below the request timeout and map sqlx::Error::PoolTimedOut to 503 unavailable")
            .fail();
    }
}
