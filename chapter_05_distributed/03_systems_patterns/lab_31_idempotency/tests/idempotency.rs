//! The grader for lab 31: a money-transfer service with idempotency keys.
//!
//! Every test gets a fresh PostgreSQL database (`labkit::services::postgres`:
//! `DATABASE_URL` if set, else a throwaway server) and starts TWO copies of
//! the learner's server against it, as two instances behind a load
//! balancer would run: whatever makes a key work once must live in the
//! database, not in one process's memory. Tests speak HTTP to both and read
//! the balances straight from the `accounts` table, so a transfer that
//! happened twice shows however the responses look.
//!
//! The concurrency tests make the race certain instead of hoping for it:
//! the test locks the accounts' rows itself (`SELECT ... FOR UPDATE` in a
//! transaction of its own), sends every request, waits until each one
//! has either answered or is blocked on a lock inside PostgreSQL
//! (`pg_stat_activity`), and only then lets them all go. A server that
//! checked the key before taking it has, by then, let every duplicate past
//! the check.
//!
//! Expiry is measured on the database's clock, so the test ages a key by
//! moving its `created_at` back (`UPDATE idempotency_keys ...`), as the
//! README specifies, and never waits for a TTL to pass.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use labkit::Report;
use labkit::client::Client;
use labkit::report::same;
use labkit::server::Server;
use labkit::services::TestDb;
use labkit::wait::{eventually, within_async};
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres, Transaction};

const BIN: &str = env!("CARGO_BIN_EXE_idempotency");

/// The deadline of one database call made by the test.
const CALL: Duration = Duration::from_secs(10);

/// How long the requests get to reach the test's row locks (or answer).
const IN_FLIGHT: Duration = Duration::from_secs(10);

/// How long a retry may keep getting `409 Conflict` (in progress) after the
/// original request's transaction can have ended.
const SETTLE: Duration = Duration::from_secs(5);

/// One test's world: two servers on one database, the test's own pool.
/// Fields drop in order: servers first, the database last (its drop
/// blocks, so it must not run inside the runtime).
struct Lab {
    a: Option<Server>,
    b: Server,
    http: reqwest::blocking::Client,
    pool: PgPool,
    rt: tokio::runtime::Runtime,
    _db: TestDb,
}

/// One HTTP response, as the test needs it.
#[derive(Debug, Clone)]
struct Resp {
    status: u16,
    body: String,
    replayed: bool,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    fn describe(&self) -> String {
        format!(
            "{} {}{}",
            self.status,
            self.body,
            if self.replayed {
                " (Idempotent-Replayed: true)"
            } else {
                ""
            }
        )
    }
}

/// Starts two servers with `args` on a fresh database.
fn lab(args: &[&str]) -> Lab {
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
            Report::new(format!("connected to {}", db.url))
                .got(e)
                .fail()
        })
    });
    let spawn = || {
        Server::builder(BIN)
            .args(args)
            .env("DATABASE_URL", &db.url)
            .spawn()
    };
    // One after the other: each applies the migrations before it listens.
    let a = spawn();
    let b = spawn();
    Lab {
        a: Some(a),
        b,
        http: labkit::http::client(),
        pool,
        rt,
        _db: db,
    }
}

/// The test's own transaction holding row locks. If a check fails while
/// it is held, it is dropped during the unwind: sqlx needs a runtime to
/// drop a transaction, and a panic inside that drop would abort the whole
/// test process and leave its servers running, so the drop enters the
/// test's runtime first.
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

/// Which of the two servers a request goes to.
#[derive(Clone, Copy, Debug)]
enum To {
    A,
    B,
}

impl Lab {
    fn server(&self, to: To) -> &Server {
        match to {
            To::A => self.a.as_ref().expect("server A is running"),
            To::B => &self.b,
        }
    }

    fn send(
        &self,
        to: To,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: &[u8],
    ) -> Resp {
        send(&self.http, self.server(to), method, path, key, body)
    }

    /// `POST /transfers` with `key` (None: no header) and `body`.
    fn transfer(&self, to: To, key: Option<&str>, body: &str) -> Resp {
        self.send(
            to,
            reqwest::Method::POST,
            "/transfers",
            key,
            body.as_bytes(),
        )
    }

    /// Opens an account through the API; returns its id.
    fn account(&self, balance: i64) -> i64 {
        let body = format!(r#"{{"balance": {balance}}}"#);
        let r = self.send(
            To::A,
            reqwest::Method::POST,
            "/accounts",
            None,
            body.as_bytes(),
        );
        let id = r.json().get("id").and_then(Value::as_i64);
        match (r.status, id) {
            (201, Some(id)) => id,
            _ => self
                .server(To::A)
                .report()
                .did(format!("sent POST /accounts {body}"))
                .expected(r#"201 with a JSON body {"id": <integer>, "balance": ...}"#)
                .got(r.describe())
                .hint("see the README's Spec for POST /accounts")
                .fail(),
        }
    }

    fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The balances of `ids`, read from the `accounts` table.
    fn balances(&self, ids: &[i64]) -> Vec<i64> {
        self.block(async {
            let mut out = Vec::new();
            for id in ids {
                let b: Option<i64> = within_async(
                    CALL,
                    "SELECT balance FROM accounts",
                    sqlx::query_scalar("SELECT balance FROM accounts WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool),
                )
                .await
                .unwrap_or_else(|e| {
                    Report::new("read SELECT balance FROM accounts WHERE id = $1")
                        .got(e)
                        .hint("is the table named accounts with columns id and balance (BIGINT), as the README's schema says? Do your migrations run at start?")
                        .fail()
                });
                out.push(b.unwrap_or_else(|| {
                    Report::new(format!("read the balance of account {id}"))
                        .got("no such row in accounts")
                        .hint("does POST /accounts insert into the accounts table and return that row's id?")
                        .fail()
                }));
            }
            out
        })
    }

    /// Fails unless the balances of `ids` are `want`.
    fn expect_balances(&self, ids: &[i64], want: &[i64], after: &str, hint: &str) {
        let got = self.balances(ids);
        if got != want {
            self.b
                .report()
                .did(after)
                .did(format!(
                    "read the balances of accounts {ids:?} in PostgreSQL"
                ))
                .expected(format!("{want:?}"))
                .got(format!("{got:?}"))
                .hint(hint)
                .fail();
        }
    }

    /// Locks the accounts' rows in a transaction of the test's own.
    fn hold(&self, ids: &[i64]) -> Held {
        let tx = self.block(async {
            let mut tx = self.pool.begin().await.expect("begin the test's transaction");
            let locked: Vec<i64> = sqlx::query_scalar(
                "SELECT id FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            )
            .bind(ids)
            .fetch_all(&mut *tx)
            .await
            .unwrap_or_else(|e| {
                Report::new("locked the accounts' rows: SELECT id FROM accounts WHERE id = ANY($1) FOR UPDATE")
                    .got(e)
                    .hint("is the table named accounts with a column id, as the README's schema says?")
                    .fail()
            });
            same(
                "locked the accounts the test opened",
                ids.len(),
                locked.len(),
                "does POST /accounts return the id of the row it inserted into accounts?",
            );
            tx
        });
        Held {
            tx: Some(tx),
            rt: self.rt.handle().clone(),
        }
    }

    fn release(&self, mut held: Held) {
        let tx = held.tx.take().expect("a held transaction");
        self.block(async { tx.rollback().await.expect("end the test's transaction") });
    }

    /// Waits until `n` requests are each either answered (`answered`) or
    /// waiting on a lock in PostgreSQL.
    fn wait_in_flight(&self, n: usize, answered: &AtomicUsize) {
        self.block(eventually(
            IN_FLIGHT,
            &format!("{n} requests each answered or waiting on a lock in PostgreSQL, behind the rows the test locked"),
            "does a transfer wait in the database (a row lock, FOR UPDATE) while the test holds the accounts' rows? Does a duplicate wait (or answer 409) rather than poll? Each server must serve several requests at once (a pool of several connections)",
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

    /// Moves a key's `created_at` back by `secs` seconds.
    fn age_key(&self, key: &str, secs: i64) {
        let rows = self.block(async {
            sqlx::query(
                "UPDATE idempotency_keys SET created_at = created_at - $2 * interval '1 second' WHERE key = $1",
            )
            .bind(key)
            .bind(secs)
            .execute(&self.pool)
            .await
        });
        match rows {
            Ok(r) if r.rows_affected() == 1 => {}
            Ok(r) => Report::new(format!("aged the key {key:?} by {secs} s: UPDATE idempotency_keys SET created_at = created_at - ... WHERE key = $1"))
                .expected("1 row updated")
                .got(format!("{} rows", r.rows_affected()))
                .hint("does the table idempotency_keys hold one row per key, with the key as sent in the column key, as the README's schema says?")
                .fail(),
            Err(e) => Report::new(format!("aged the key {key:?} by {secs} s: UPDATE idempotency_keys SET created_at = created_at - ... WHERE key = $1"))
                .got(e)
                .hint("the README's schema names a table idempotency_keys with columns key (TEXT) and created_at (TIMESTAMPTZ)")
                .fail(),
        }
    }

    /// Retries `POST /transfers` while it answers 409 (in progress), for at
    /// most [`SETTLE`]. A poll: nothing tells the test when the server has
    /// finished rolling back a request whose client or process is gone.
    fn retry_past_409(&self, to: To, key: &str, body: &str) -> Resp {
        let until = Instant::now() + SETTLE;
        loop {
            let r = self.transfer(to, Some(key), body);
            if r.status != 409 || Instant::now() >= until {
                return r;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

fn send(
    http: &reqwest::blocking::Client,
    server: &Server,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: &[u8],
) -> Resp {
    let what = format!(
        "sent {method} {path}{} {}",
        key.map(|k| format!(" (Idempotency-Key: {k})"))
            .unwrap_or_default(),
        String::from_utf8_lossy(body)
    );
    let mut req = http
        .request(method, labkit::http::url(server, path))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let r = req.send().and_then(|r| {
        let status = r.status().as_u16();
        let replayed = r
            .headers()
            .get("idempotent-replayed")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        r.text().map(|body| Resp {
            status,
            body,
            replayed,
        })
    });
    r.unwrap_or_else(|e| {
        server
            .report()
            .did(what)
            .expected("an HTTP response")
            .got(labkit::report::error_chain(&e))
            .hint("did the handler panic (stderr below), or wait for something that never comes (a lock, a pool connection)?")
            .fail()
    })
}

/// A transfer's JSON body.
fn body(from: i64, to: i64, amount: i64) -> String {
    format!(r#"{{"from":{from},"to":{to},"amount":{amount}}}"#)
}

/// Fails unless `r` has status `want`.
fn expect_status(lab: &Lab, to: To, did: &str, r: &Resp, want: u16, hint: &str) {
    if r.status != want {
        lab.server(to)
            .report()
            .did(did)
            .expected(format!("status {want}"))
            .got(r.describe())
            .hint(hint)
            .fail();
    }
}

/// Fails unless `r` is a 201 with the transfer's fields; returns its id.
fn expect_created(
    lab: &Lab,
    to: To,
    did: &str,
    r: &Resp,
    from: i64,
    dest: i64,
    amount: i64,
) -> i64 {
    let hint = if r.status == 409 {
        "the key still looked in progress after the first attempt could have ended: was it committed before its transfer? A key must become visible only together with its transfer and response (one transaction), so a request that dies half-way leaves nothing behind"
    } else {
        "see the README: a transfer that happens answers 201"
    };
    expect_status(lab, to, did, r, 201, hint);
    let j = r.json();
    let fields = (
        j.get("id").and_then(Value::as_i64),
        j.get("from").and_then(Value::as_i64),
        j.get("to").and_then(Value::as_i64),
        j.get("amount").and_then(Value::as_i64),
    );
    match fields {
        (Some(id), Some(f), Some(t), Some(a)) if (f, t, a) == (from, dest, amount) => id,
        _ => lab
            .server(to)
            .report()
            .did(did)
            .expected(format!(
                r#"201 {{"id": <integer>, "from": {from}, "to": {dest}, "amount": {amount}}}"#
            ))
            .got(r.describe())
            .hint("see the README's Spec for the body of a 201")
            .fail(),
    }
}

/// Fails unless `r` is a replay of `original`: same status, same body
/// bytes, marked `Idempotent-Replayed: true`.
fn expect_replay(lab: &Lab, to: To, did: &str, r: &Resp, original: &Resp, hint: &str) {
    if r.status != original.status || r.body != original.body || !r.replayed {
        lab.server(to)
            .report()
            .did(did)
            .expected(format!(
                "the original response again, marked as a replay: {} {} (Idempotent-Replayed: true)",
                original.status, original.body
            ))
            .got(r.describe())
            .hint(hint)
            .fail();
    }
}

// Accounts can be opened and read on either instance, and the balance is the one in PostgreSQL: every later test builds on this.
#[test]
fn test_01_accounts_are_created_and_read_on_both_instances() {
    let lab = lab(&[]);
    let id = lab.account(100);
    let other = lab.account(0);
    if id == other {
        Report::new("opened two accounts")
            .got(format!("both have the id {id}"))
            .fail();
    }
    let r = lab.send(
        To::B,
        reqwest::Method::GET,
        &format!("/accounts/{id}"),
        None,
        b"",
    );
    let j = r.json();
    if r.status != 200
        || j.get("id").and_then(Value::as_i64) != Some(id)
        || j.get("balance").and_then(Value::as_i64) != Some(100)
    {
        lab.b
            .report()
            .did(format!("opened account {id} with 100 on server A, then GET /accounts/{id} on server B"))
            .expected(format!(r#"200 {{"id": {id}, "balance": 100}}"#))
            .got(r.describe())
            .hint("both servers share one database: read the account from PostgreSQL, not from memory")
            .fail();
    }
    lab.expect_balances(
        &[id, other],
        &[100, 0],
        "opened accounts with 100 and 0",
        "does POST /accounts insert the balance it was given?",
    );
    let r = lab.send(
        To::A,
        reqwest::Method::GET,
        "/accounts/987654321",
        None,
        b"",
    );
    expect_status(
        &lab,
        To::A,
        "sent GET /accounts/987654321 (no such account)",
        &r,
        404,
        "an unknown account is 404",
    );
    let r = lab.send(
        To::A,
        reqwest::Method::POST,
        "/accounts",
        None,
        br#"{"balance": -1}"#,
    );
    expect_status(
        &lab,
        To::A,
        r#"sent POST /accounts {"balance": -1}"#,
        &r,
        400,
        "a negative balance is refused with 400",
    );
}

// A transfer moves the money in the database and answers 201; two different keys are two transfers.
#[test]
fn test_02_a_transfer_moves_the_money_and_answers_201() {
    let lab = lab(&[]);
    let (x, y) = (lab.account(100), lab.account(0));
    let b = body(x, y, 30);
    let did = format!("sent POST /transfers {b} with key t2-first");
    let r = lab.transfer(To::A, Some("t2-first"), &b);
    let first = expect_created(&lab, To::A, &did, &r, x, y, 30);
    if r.replayed {
        lab.b
            .report()
            .did(&did)
            .expected("a first response, not marked Idempotent-Replayed")
            .got(r.describe())
            .hint("only a replay carries Idempotent-Replayed: true")
            .fail();
    }
    lab.expect_balances(
        &[x, y],
        &[70, 30],
        &did,
        "does the transfer subtract from `from` and add to `to` in the accounts table, and commit?",
    );
    let did = "then sent the same body with another key, t2-second, to server B".to_string();
    let r = lab.transfer(To::B, Some("t2-second"), &b);
    let second = expect_created(&lab, To::B, &did, &r, x, y, 30);
    if second == first {
        lab.b
            .report()
            .did(&did)
            .expected("a new transfer with a new id")
            .got(r.describe())
            .hint("a different key is a different request, even with the same body")
            .fail();
    }
    lab.expect_balances(
        &[x, y],
        &[40, 60],
        &did,
        "a different key is a different request, even with the same body: it transfers again",
    );
    let all = body(x, y, 40);
    let did = format!("then sent {all} (the whole balance of account {x}) with key t2-all");
    let r = lab.transfer(To::A, Some("t2-all"), &all);
    expect_created(&lab, To::A, &did, &r, x, y, 40);
    lab.expect_balances(
        &[x, y],
        &[0, 100],
        &did,
        "an account may send its whole balance: refuse only when the balance is below the amount",
    );
    let one = body(x, y, 1);
    let did = format!("then sent {one} from the empty account with key t2-empty");
    let r = lab.transfer(To::B, Some("t2-empty"), &one);
    expect_status(
        &lab,
        To::B,
        &did,
        &r,
        402,
        "a balance below the amount is 402 insufficient funds",
    );
    lab.expect_balances(&[x, y], &[0, 100], &did, "a refused transfer moves nothing");
}

// A retry with the same key, on either instance, gets the original response back byte for byte and moves no money: the heart of the lab.
#[test]
fn test_03_a_retry_with_the_same_key_replays_the_original_response() {
    let lab = lab(&[]);
    let (x, y) = (lab.account(100), lab.account(0));
    let b = body(x, y, 30);
    let did = format!("sent POST /transfers {b} with key t3");
    let original = lab.transfer(To::A, Some("t3"), &b);
    expect_created(&lab, To::A, &did, &original, x, y, 30);
    for (to, name) in [(To::A, "A"), (To::B, "B"), (To::B, "B")] {
        let did = format!(
            "{did}, got {}, then sent it again to server {name}",
            original.describe()
        );
        let r = lab.transfer(to, Some("t3"), &b);
        expect_replay(
            &lab,
            to,
            &did,
            &r,
            &original,
            "look the key up in PostgreSQL (both servers share it), and send back the stored status and body, with Idempotent-Replayed: true",
        );
        lab.expect_balances(
            &[x, y],
            &[70, 30],
            &did,
            "a retry with the same key must not transfer again",
        );
    }
}

// The same key with another body is a client bug, 422, and the body is compared byte for byte; the stored response survives it.
#[test]
fn test_04_the_same_key_with_another_body_is_422() {
    let lab = lab(&[]);
    let (x, y) = (lab.account(100), lab.account(0));
    let b = body(x, y, 30);
    let did = format!("sent POST /transfers {b} with key t4");
    let original = lab.transfer(To::A, Some("t4"), &b);
    expect_created(&lab, To::A, &did, &original, x, y, 30);
    let others = [
        (body(x, y, 31), "another amount"),
        (body(y, x, 30), "the other direction"),
        (
            format!(r#"{{"from": {x}, "to": {y}, "amount": 30}}"#),
            "the same JSON with spaces (the README: the exact bytes are compared)",
        ),
        (
            format!(r#"{{"amount":30,"from":{x},"to":{y}}}"#),
            "the same fields in another order (the README: the exact bytes are compared)",
        ),
    ];
    for (to, (other, why)) in [To::A, To::B, To::A, To::B].into_iter().zip(others) {
        let did = format!("{did}, then the same key with {why}: {other}");
        let r = lab.transfer(to, Some("t4"), &other);
        expect_status(
            &lab,
            to,
            &did,
            &r,
            422,
            "store a fingerprint of the request body's exact bytes with the key, and compare it before replaying",
        );
        lab.expect_balances(
            &[x, y],
            &[70, 30],
            &did,
            "a key reused with another body must do nothing",
        );
    }
    let did = format!(
        "{did}, then sent it 4 times with other bodies (422), then the original body again"
    );
    let r = lab.transfer(To::B, Some("t4"), &b);
    expect_replay(
        &lab,
        To::B,
        &did,
        &r,
        &original,
        "a 422 must leave the key and its stored response as they were",
    );
}

// A transfer that failed (402 insufficient funds, 404 unknown account) is an answer too: a retry replays it even after the balance has changed.
#[test]
fn test_05_a_failed_transfer_is_replayed_with_its_status() {
    let lab = lab(&[]);
    let (x, y, rich) = (lab.account(10), lab.account(0), lab.account(100));
    let b = body(x, y, 50);
    let did = format!("sent POST /transfers {b} (account {x} holds 10) with key t5-poor");
    let poor = lab.transfer(To::A, Some("t5-poor"), &b);
    expect_status(
        &lab,
        To::A,
        &did,
        &poor,
        402,
        "insufficient funds is 402 (see the README)",
    );
    lab.expect_balances(&[x, y], &[10, 0], &did, "a refused transfer moves nothing");
    let r = lab.transfer(To::A, Some("t5-topup"), &body(rich, x, 100));
    expect_created(
        &lab,
        To::A,
        "then moved 100 into the poor account with another key",
        &r,
        rich,
        x,
        100,
    );
    let did = format!(
        "{did}, got {}, then moved 100 into account {x} and retried with key t5-poor on server B",
        poor.describe()
    );
    let r = lab.transfer(To::B, Some("t5-poor"), &b);
    expect_replay(
        &lab,
        To::B,
        &did,
        &r,
        &poor,
        "store every response with its key, its status too, and replay both: the retry must not run the transfer again now that the money is there",
    );
    lab.expect_balances(
        &[x, y],
        &[110, 0],
        &did,
        "the replay of a 402 must not transfer",
    );

    let b = body(x, 987_654_321, 5);
    let did = format!("sent POST /transfers {b} (no such account) with key t5-missing");
    let missing = lab.transfer(To::A, Some("t5-missing"), &b);
    expect_status(
        &lab,
        To::A,
        &did,
        &missing,
        404,
        "a transfer to an unknown account is 404",
    );
    let r = lab.transfer(To::B, Some("t5-missing"), &b);
    expect_replay(
        &lab,
        To::B,
        &format!("{did}, then sent it again to server B"),
        &r,
        &missing,
        "a 404 is stored with its key and replayed too",
    );
    lab.expect_balances(
        &[x],
        &[110],
        &did,
        "a transfer to an unknown account moves nothing",
    );
}

// Requests refused before any transfer (400: no key, a bad key, a bad body) do not use up their key, so the client can fix them and send again.
#[test]
fn test_06_rejected_requests_are_400_and_do_not_use_the_key() {
    let lab = lab(&[]);
    let (x, y) = (lab.account(100), lab.account(0));
    let good = body(x, y, 10);
    let long = "k".repeat(256);
    let keyless: [(Option<&str>, &str); 3] = [
        (None, "no Idempotency-Key header"),
        (Some(""), "an empty Idempotency-Key"),
        (Some(long.as_str()), "a 256-character Idempotency-Key"),
    ];
    for (key, why) in keyless {
        let r = lab.transfer(To::A, key, &good);
        let did = format!("sent POST /transfers {good} with {why}");
        expect_status(
            &lab,
            To::A,
            &did,
            &r,
            400,
            "a transfer needs an Idempotency-Key of 1 to 255 characters (see the README)",
        );
        lab.expect_balances(&[x, y], &[100, 0], &did, "a 400 moves nothing");
    }
    let bad = [
        "not json".to_string(),
        format!(r#"{{"from":{x},"to":{y}}}"#),
        body(x, y, 0),
        body(x, y, -5),
        body(x, x, 10),
        format!(r#"{{"from":{x},"to":{y},"amount":"10"}}"#),
    ];
    for b in &bad {
        let did = format!("sent POST /transfers {b} with key t6");
        let r = lab.transfer(To::A, Some("t6"), b);
        expect_status(
            &lab,
            To::A,
            &did,
            &r,
            400,
            "a body that is not {\"from\", \"to\", \"amount\"} with integers, amount above 0 and from != to is 400 (note: axum's Json extractor answers 422 for a missing field or a wrong type; parse the raw bytes yourself, which you need for the fingerprint anyway)",
        );
        lab.expect_balances(&[x, y], &[100, 0], &did, "a 400 moves nothing");
    }
    let did = format!(
        "sent {} bad bodies with key t6 (each 400), then a good one {good} with the same key",
        bad.len()
    );
    let r = lab.transfer(To::B, Some("t6"), &good);
    expect_status(
        &lab,
        To::B,
        &did,
        &r,
        201,
        "a request refused with 400 must not store its key (validate before you claim the key)",
    );
    lab.expect_balances(&[x, y], &[90, 10], &did, "the good request transfers once");
    let max = "m".repeat(255);
    let did = format!("sent POST /transfers {good} with a 255-character key");
    let r = lab.transfer(To::A, Some(&max), &good);
    expect_created(&lab, To::A, &did, &r, x, y, 10);
}

/// Sends `n` copies of one request at once, alternately to A and B, each
/// counted in `answered` when its response arrives.
fn fire(
    lab: &Lab,
    n: usize,
    key: &str,
    body: &str,
    answered: &Arc<AtomicUsize>,
) -> Vec<thread::JoinHandle<(To, Resp)>> {
    (0..n)
        .map(|i| {
            let to = if i % 2 == 0 { To::A } else { To::B };
            let http = lab.http.clone();
            let url = labkit::http::url(lab.server(to), "/transfers");
            let (key, body) = (key.to_string(), body.to_string());
            let answered = Arc::clone(answered);
            thread::spawn(move || {
                let r = http
                    .post(url)
                    .header("content-type", "application/json")
                    .header("idempotency-key", &key)
                    .body(body)
                    .send()
                    .and_then(|r| {
                        let status = r.status().as_u16();
                        let replayed = r
                            .headers()
                            .get("idempotent-replayed")
                            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
                        r.text().map(|body| Resp {
                            status,
                            body,
                            replayed,
                        })
                    });
                answered.fetch_add(1, Ordering::SeqCst);
                let r = r.unwrap_or_else(|e| Resp {
                    status: 0,
                    body: format!("(no response: {})", labkit::report::error_chain(&e)),
                    replayed: false,
                });
                (to, r)
            })
        })
        .collect()
}

/// Checks `n` concurrent duplicates: exactly one 201 body, every other
/// answer that body (a replay) or 409; returns the 201.
fn one_winner(lab: &Lab, did: &str, results: &[(To, Resp)]) -> Resp {
    let all: Vec<String> = results
        .iter()
        .map(|(to, r)| format!("{to:?}: {}", r.describe()))
        .collect();
    let created: Vec<&Resp> = results
        .iter()
        .map(|(_, r)| r)
        .filter(|r| r.status == 201)
        .collect();
    let first = created.first().copied();
    let ok = first.is_some()
        && results.iter().all(|(_, r)| {
            r.status == 409
                || (r.status == 201 && Some(r.body.as_str()) == first.map(|f| f.body.as_str()))
        });
    if !ok {
        let mut bodies: Vec<&str> = created.iter().map(|r| r.body.as_str()).collect();
        bodies.sort();
        bodies.dedup();
        let hint = if bodies.len() > 1 {
            "several duplicates each ran the transfer: they all passed your key check before the first one committed. The check and the claim of the key must be one statement inside the transfer's transaction (a primary key on the key, INSERT ... ON CONFLICT), not a SELECT before it"
        } else {
            "a duplicate must wait for the original and replay its response, or answer 409; never run the transfer itself, and never answer as if it had succeeded"
        };
        lab.b
            .report()
            .did(did)
            .expected("at least one 201, every 201 with the same body (one transfer, replayed), any other answer 409 (in progress)")
            .got(all.join("\n"))
            .hint(hint)
            .fail();
    }
    first.expect("checked above").clone()
}

// Duplicates sent at once to both instances execute once: the key is taken in the same transaction as the transfer, and the database, not a process, decides.
#[test]
fn test_07_concurrent_duplicates_on_both_instances_execute_once() {
    let lab = lab(&[]);
    let (x, y) = (lab.account(1000), lab.account(0));
    let b = body(x, y, 10);
    let n = 8;
    let held = lab.hold(&[x, y]);
    let answered = Arc::new(AtomicUsize::new(0));
    let handles = fire(&lab, n, "t7", &b, &answered);
    lab.wait_in_flight(n, &answered);
    lab.release(held);
    let results: Vec<(To, Resp)> = handles
        .into_iter()
        .map(|h| h.join().expect("a request thread"))
        .collect();
    let did = format!(
        "locked accounts {x} and {y}, sent {n} copies of POST /transfers {b} with key t7 at once (4 to each server), waited until each was answered or waiting on a lock in PostgreSQL, then released the lock"
    );
    let winner = one_winner(&lab, &did, &results);
    lab.expect_balances(&[x, y], &[990, 10], &did, "every duplicate passed your key check before the first one committed: the check and the claim of the key must be one statement in the transfer's transaction (a unique key, INSERT ... ON CONFLICT), not a SELECT before it");
    let r = lab.retry_past_409(To::B, "t7", &b);
    expect_replay(
        &lab,
        To::B,
        &format!("{did}, then sent it once more"),
        &r,
        &winner,
        "once the first request committed, the key replays its response",
    );

    // Again without the test's lock: duplicates racing freely.
    let answered = Arc::new(AtomicUsize::new(0));
    let handles = fire(&lab, 12, "t7-free", &b, &answered);
    let results: Vec<(To, Resp)> = handles
        .into_iter()
        .map(|h| h.join().expect("a request thread"))
        .collect();
    let did = format!(
        "sent 12 copies of POST /transfers {b} with key t7-free at once (half to each server)"
    );
    one_winner(&lab, &did, &results);
    lab.expect_balances(
        &[x, y],
        &[980, 20],
        &did,
        "duplicates racing across two processes must transfer once",
    );
}

// A request whose client disconnects mid-flight leaves no stuck key and no half transfer: its retry gets a proper answer and the money moves exactly once.
#[test]
fn test_08_a_retry_after_the_client_vanished_mid_flight_transfers_once() {
    let lab = lab(&[]);
    let (x, y) = (lab.account(100), lab.account(0));
    let b = body(x, y, 30);
    let held = lab.hold(&[x, y]);
    let mut client = Client::connect(lab.server(To::A).addr());
    client.send(&labkit::http::request(
        "POST",
        "/transfers",
        &[
            ("Content-Type", "application/json"),
            ("Idempotency-Key", "t8"),
        ],
        b.as_bytes(),
    ));
    let none = AtomicUsize::new(0);
    lab.wait_in_flight(1, &none);
    // The client vanishes: a reset, as when it crashes or times out.
    client.reset();
    lab.release(held);
    let did = format!(
        "locked accounts {x} and {y}, sent POST /transfers {b} with key t8 to server A, waited until it waited on the lock, reset the connection, released the lock, then retried on server B"
    );
    let r = lab.retry_past_409(To::B, "t8", &b);
    expect_created(&lab, To::B, &did, &r, x, y, 30);
    lab.expect_balances(&[x, y], &[70, 30], &did, "the vanished request and its retry must make one transfer together: when hyper drops a handler whose client left, its transaction must roll back whole (or commit whole)");
    let again = lab.transfer(To::A, Some("t8"), &b);
    expect_replay(
        &lab,
        To::A,
        &format!("{did}, then sent it once more"),
        &again,
        &r,
        "the retry's response is now the key's response",
    );
}

// A server killed in the middle of a transfer leaves nothing behind: the retry on the other instance does the transfer, once (a key committed before its transfer would block it forever).
#[test]
fn test_09_a_retry_after_the_server_died_mid_flight_transfers_once() {
    let mut lab = lab(&[]);
    let (x, y) = (lab.account(100), lab.account(0));
    let b = body(x, y, 30);
    let held = lab.hold(&[x, y]);
    let mut client = Client::connect(lab.server(To::A).addr());
    client.send(&labkit::http::request(
        "POST",
        "/transfers",
        &[
            ("Content-Type", "application/json"),
            ("Idempotency-Key", "t9"),
        ],
        b.as_bytes(),
    ));
    let none = AtomicUsize::new(0);
    lab.wait_in_flight(1, &none);
    // SIGKILL, as a crash or an OOM kill: no handler code runs after this.
    drop(lab.a.take());
    drop(client);
    lab.release(held);
    let did = format!(
        "locked accounts {x} and {y}, sent POST /transfers {b} with key t9 to server A, waited until it waited on the lock, killed server A (SIGKILL), released the lock, then sent the request to server B"
    );
    let r = lab.retry_past_409(To::B, "t9", &b);
    expect_created(&lab, To::B, &did, &r, x, y, 30);
    lab.expect_balances(
        &[x, y],
        &[70, 30],
        &did,
        "the dead server's transaction must roll back whole, and the retry transfer once",
    );
    let again = lab.transfer(To::B, Some("t9"), &b);
    expect_replay(
        &lab,
        To::B,
        &format!("{did}, then sent it once more"),
        &again,
        &r,
        "the retry's response is now the key's response",
    );
}

// A key is remembered for exactly --key-ttl-secs on the database's clock: a retry within the TTL replays, after it the key is new again (another body included).
#[test]
fn test_10_keys_expire_after_the_ttl() {
    let lab = lab(&["--key-ttl-secs", "3600"]);
    let (x, y) = (lab.account(100), lab.account(0));
    let b = body(x, y, 10);
    let did = format!(
        "started both servers with --key-ttl-secs 3600, sent POST /transfers {b} with key t10"
    );
    let original = lab.transfer(To::A, Some("t10"), &b);
    expect_created(&lab, To::A, &did, &original, x, y, 10);

    lab.age_key("t10", 3590);
    let did = format!("{did}, aged the key by 3590 s (created_at moved back), then sent it again");
    let r = lab.transfer(To::B, Some("t10"), &b);
    expect_replay(
        &lab,
        To::B,
        &did,
        &r,
        &original,
        "a key younger than the TTL (in seconds) still replays: compare created_at with the database's now() minus --key-ttl-secs seconds",
    );
    lab.expect_balances(
        &[x, y],
        &[90, 10],
        &did,
        "a key within its TTL must not transfer again",
    );

    lab.age_key("t10", 20);
    let did = format!("{did}, aged it by 20 s more (3610 s in all), then sent it again");
    let r = lab.transfer(To::A, Some("t10"), &b);
    let id = expect_created(&lab, To::A, &did, &r, x, y, 10);
    if r.body == original.body || r.replayed {
        lab.b
            .report()
            .did(&did)
            .expected("a new transfer (a new id), not a replay")
            .got(r.describe())
            .hint("a key older than the TTL is forgotten: the request runs as new")
            .fail();
    }
    lab.expect_balances(
        &[x, y],
        &[80, 20],
        &did,
        "an expired key must not block the request: it runs as new",
    );
    let again = lab.transfer(To::B, Some("t10"), &b);
    expect_replay(
        &lab,
        To::B,
        &format!("{did}, then once more"),
        &again,
        &r,
        "the request that reused an expired key owns it now, with a fresh created_at",
    );

    lab.age_key("t10", 3600);
    let other = body(x, y, 5);
    let did = format!(
        "aged key t10 (transfer {id}) by exactly 3600 s, then sent it with another body {other}"
    );
    let r = lab.transfer(To::A, Some("t10"), &other);
    expect_created(&lab, To::A, &did, &r, x, y, 5);
    lab.expect_balances(&[x, y], &[75, 25], &did, "a key exactly TTL old has expired, and an expired key says nothing about the body: no 422, the request runs as new");
}

// Without the flag a key lives a day (86400 s), no more, no less.
#[test]
fn test_11_the_default_ttl_is_a_day() {
    let lab = lab(&[]);
    let (x, y) = (lab.account(100), lab.account(0));
    let b = body(x, y, 10);
    let original = lab.transfer(To::A, Some("t11"), &b);
    expect_created(
        &lab,
        To::A,
        &format!("sent POST /transfers {b} with key t11"),
        &original,
        x,
        y,
        10,
    );
    lab.age_key("t11", 86_400 - 60);
    let did = format!(
        "sent POST /transfers {b} with key t11, aged the key by 23 h 59 min, then sent it again"
    );
    let r = lab.transfer(To::B, Some("t11"), &b);
    expect_replay(
        &lab,
        To::B,
        &did,
        &r,
        &original,
        "the default --key-ttl-secs is 86400 (a day)",
    );
    lab.age_key("t11", 61);
    let did = format!("{did}, aged it past 24 h, then sent it again");
    let r = lab.transfer(To::B, Some("t11"), &b);
    expect_created(&lab, To::B, &did, &r, x, y, 10);
    lab.expect_balances(
        &[x, y],
        &[80, 20],
        &did,
        "after a day the key has expired and the request runs as new",
    );
}

// Transfers with different keys queued on the same accounts, both ways, all happen: no lost update (balances read without a lock) and no deadlock (rows locked in a fixed order).
#[test]
fn test_12_concurrent_transfers_both_ways_lose_nothing_and_never_deadlock() {
    let lab = lab(&[]);
    let (x, y) = (lab.account(1000), lab.account(1000));
    let held = lab.hold(&[x, y]);
    let answered = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for i in 0..3 {
        handles.extend(fire(
            &lab,
            1,
            &format!("t12-xy-{i}"),
            &body(x, y, 10),
            &answered,
        ));
        // Each key from y to x goes to both servers: duplicates in the mix.
        handles.extend(fire(
            &lab,
            2,
            &format!("t12-yx-{i}"),
            &body(y, x, 1),
            &answered,
        ));
    }
    let did = format!(
        "locked accounts {x} and {y} (1000 each), sent 3 transfers of 10 from {x} to {y} and 3 of 1 from {y} to {x} (each of those last 3 keys sent twice, once to each server), waited until each was answered or waiting on a lock, then released both rows at once"
    );
    lab.wait_in_flight(handles.len(), &answered);
    lab.release(held);
    let results: Vec<(To, Resp)> = handles
        .into_iter()
        .map(|h| h.join().expect("a request thread"))
        .collect();
    let bad: Vec<String> = results
        .iter()
        .filter(|(_, r)| r.status != 201 && r.status != 409)
        .map(|(to, r)| format!("{to:?}: {}", r.describe()))
        .collect();
    if !bad.is_empty() {
        lab.b
            .report()
            .did(&did)
            .expected("every transfer to answer 201 (or 409 for a duplicate in progress)")
            .got(bad.join("\n"))
            .hint("a 500 here is often a deadlock PostgreSQL broke (\"deadlock detected\" on stderr): lock both accounts in one order, e.g. by id, whatever the direction")
            .fail();
    }
    lab.expect_balances(&[x, y], &[1000 - 30 + 3, 1000 + 30 - 3], &did, "each transfer must read and change the balances under the row locks (SELECT ... FOR UPDATE, or UPDATE ... SET balance = balance - $1): a balance read before the lock is stale by the time it is written");
}

// Two opposite transfers, the first already waiting on one account and the second holding the other, must not deadlock: every transfer locks its two rows in one fixed order.
#[test]
fn test_13_opposite_transfers_lock_in_one_order_and_never_deadlock() {
    let lab = lab(&[]);
    let (x, y) = (lab.account(1000), lab.account(1000));
    for (round, held_id) in [(1, x), (2, y)] {
        // The test holds one account; the first transfer queues on it.
        // A transfer that locks its accounts one by one in its own
        // direction's order then makes the second one take the other
        // account and wait for the first: released, the two wait on each
        // other, every time.
        let held = lab.hold(&[held_id]);
        let answered = Arc::new(AtomicUsize::new(0));
        let first = fire(
            &lab,
            1,
            &format!("t13-xy-{round}"),
            &body(x, y, 10),
            &answered,
        );
        lab.wait_in_flight(1, &answered);
        // `fire` sends its first copy to A: this one goes to A too, which
        // is fine, the two transfers still run on two connections.
        let second = fire(
            &lab,
            1,
            &format!("t13-yx-{round}"),
            &body(y, x, 5),
            &answered,
        );
        lab.wait_in_flight(2, &answered);
        lab.release(held);
        let results: Vec<(To, Resp)> = first
            .into_iter()
            .chain(second)
            .map(|h| h.join().expect("a request thread"))
            .collect();
        let did = format!(
            "round {round}: locked account {held_id}, sent a transfer of 10 from {x} to {y}, waited until it waited on a lock, sent a transfer of 5 from {y} to {x}, waited until both waited, then released the account"
        );
        if results.iter().any(|(_, r)| r.status != 201) {
            let all: Vec<String> = results
                .iter()
                .map(|(to, r)| format!("{to:?}: {}", r.describe()))
                .collect();
            lab.b
                .report()
                .did(&did)
                .expected("both transfers to answer 201")
                .got(all.join("\n"))
                .hint("a 500 here is usually a deadlock PostgreSQL broke (\"deadlock detected\" on stderr): lock the two accounts in one order whatever the direction, e.g. SELECT ... WHERE id = ANY($1) ORDER BY id FOR UPDATE")
                .fail();
        }
    }
    lab.expect_balances(
        &[x, y],
        &[990, 1010],
        "ran two rounds of opposite transfers (10 one way, 5 the other)",
        "every transfer must happen once",
    );
}
