//! # Lab 31: idempotency keys (reference solution)
//!
//! ```text
//! DATABASE_URL=postgres://... idempotency [ADDR] [--key-ttl-secs N]   (default 127.0.0.1:8031, 86400)
//! ```
//!
//! A small money-transfer service whose `POST /transfers` is safe to retry:
//! a client that timed out, lost its connection or crashed sends the same
//! request again with the same `Idempotency-Key`, and the money moves once.
//! Several copies of the server may run behind a load balancer, so the
//! guarantee lives in PostgreSQL, never in a process's memory.
//!
//! # Design
//!
//! - **The key and the transfer share one transaction** (`transfers.rs`).
//!   The handler inserts the key's row first, then moves the money, then
//!   writes the response into the key's row, and commits all three at once.
//!   Either everything happened (and the key replays the response) or
//!   nothing did (and the key is free again): there is no moment, and no
//!   crash point, at which a key exists without its transfer.
//! - **The primary key serialises duplicates.** A second request with the
//!   same key, on this process or another, runs the same `INSERT`; PostgreSQL
//!   makes it wait for the first transaction (the row is uncommitted, so it
//!   cannot yet say whether it conflicts). When the first commits, the
//!   second sees a conflict and replays the stored response; when the first
//!   rolls back (its client vanished, its server died), the second inserts
//!   the key itself and does the transfer. Duplicates therefore wait
//!   instead of failing with 409: that costs a connection per waiter, and
//!   buys every caller the real answer.
//! - **Cancellation is a rollback.** When a client disconnects, hyper drops
//!   the handler's future; dropping a sqlx `Transaction` that was not
//!   committed rolls it back (sqlx sends the `ROLLBACK` when the connection
//!   is next used). When the whole process dies, PostgreSQL rolls back the
//!   transactions of its closed connections.
//! - **The body's fingerprint is its exact bytes** (`sha256` in SQL). No
//!   JSON canonicalisation: any two bodies that differ by one byte are
//!   different requests, which is simple to state and to test.
//! - **Expiry on the database's clock.** A key older than the TTL is
//!   deleted by the request that finds it, inside the same transaction, so
//!   every server process agrees on what "expired" means.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;

mod transfers;

/// The address when none is given on the command line.
const DEFAULT_ADDR: &str = "127.0.0.1:8031";

/// How long a key is remembered unless `--key-ttl-secs` says otherwise: a
/// day, like Stripe's. Long enough for any client's retries, short enough
/// that the table does not grow forever.
const DEFAULT_TTL_SECS: i64 = 24 * 60 * 60;

/// What every handler shares: the pool (a handle, cheap to clone) and the
/// key TTL.
#[derive(Clone)]
pub struct App {
    pub pool: PgPool,
    pub ttl_secs: i64,
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut addr = None;
    let mut ttl_secs = DEFAULT_TTL_SECS;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--key-ttl-secs" => match args.next().and_then(|v| v.parse::<i64>().ok()) {
                Some(n) if n > 0 => ttl_secs = n,
                _ => usage("--key-ttl-secs needs a whole number of seconds above 0"),
            },
            _ if addr.is_none() && !a.starts_with("--") => addr = Some(a),
            _ => usage(&format!("unexpected argument {a:?}")),
        }
    }
    let addr = addr.unwrap_or_else(|| DEFAULT_ADDR.to_string());
    let Ok(url) = std::env::var("DATABASE_URL") else {
        usage("set DATABASE_URL to the PostgreSQL database to use");
    };

    // Ten connections: a request holds one for its whole transaction, and
    // a duplicate waiting on a key holds one too while it waits.
    let pool = match PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&url)
        .await
    {
        Ok(p) => p,
        Err(e) => fail(&format!("cannot connect to {url}: {e}")),
    };
    // Before listening, so a client never meets a server without its
    // tables. sqlx takes an advisory lock around the migrations, so two
    // servers starting at once on one database do not race.
    if let Err(e) = sqlx::migrate!("src/migrations").run(&pool).await {
        fail(&format!("migrations failed: {e}"));
    }

    let listener = match TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => fail(&format!("cannot listen on {addr}: {e}")),
    };
    let local: SocketAddr = listener
        .local_addr()
        .expect("a bound listener has an address");
    println!("listening on {local}");

    let app = Router::new()
        .route("/accounts", post(create_account))
        .route("/accounts/{id}", get(get_account))
        .route("/transfers", post(transfers::create_transfer))
        .with_state(App { pool, ttl_secs });
    if let Err(e) = axum::serve(listener, app).await {
        fail(&format!("server error: {e}"));
    }
}

#[derive(Deserialize)]
struct NewAccount {
    balance: i64,
}

/// `POST /accounts {"balance": n}`: 201 with the new account.
async fn create_account(State(app): State<App>, body: axum::body::Bytes) -> Response {
    let Ok(new) = serde_json::from_slice::<NewAccount>(&body) else {
        return error(StatusCode::BAD_REQUEST, "expected {\"balance\": <integer>}");
    };
    if new.balance < 0 {
        return error(StatusCode::BAD_REQUEST, "a balance cannot be negative");
    }
    let id: Result<i64, _> =
        sqlx::query_scalar("INSERT INTO accounts (balance) VALUES ($1) RETURNING id")
            .bind(new.balance)
            .fetch_one(&app.pool)
            .await;
    match id {
        Ok(id) => (
            StatusCode::CREATED,
            Json(json!({"id": id, "balance": new.balance})),
        )
            .into_response(),
        Err(e) => internal(e),
    }
}

/// `GET /accounts/{id}`: 200 with the account, or 404.
async fn get_account(State(app): State<App>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return error(StatusCode::NOT_FOUND, "no such account");
    };
    let balance: Result<Option<i64>, _> =
        sqlx::query_scalar("SELECT balance FROM accounts WHERE id = $1")
            .bind(id)
            .fetch_optional(&app.pool)
            .await;
    match balance {
        Ok(Some(balance)) => Json(json!({"id": id, "balance": balance})).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "no such account"),
        Err(e) => internal(e),
    }
}

/// A JSON error response, `{"error": "..."}`.
pub fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// A 500 for a database error; the details go to stderr, not to the client.
pub fn internal(e: sqlx::Error) -> Response {
    eprintln!("idempotency: database error: {e}");
    error(StatusCode::INTERNAL_SERVER_ERROR, "database error")
}

fn usage(why: &str) -> ! {
    eprintln!("idempotency: {why}\nusage: idempotency [ADDR] [--key-ttl-secs N]");
    std::process::exit(2);
}

fn fail(why: &str) -> ! {
    eprintln!("idempotency: {why}");
    std::process::exit(1);
}
