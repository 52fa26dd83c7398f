//! # Lab 31: idempotency keys
//!
//! ```text
//! DATABASE_URL=postgres://... idempotency [ADDR] [--key-ttl-secs N]   (default 127.0.0.1:8031, 86400)
//! ```
//!
//! A money-transfer service over PostgreSQL whose `POST /transfers` is safe
//! to retry: a request sent again with the same `Idempotency-Key` gets the
//! original response back, and the money moves once, even when the
//! duplicates arrive at the same moment on two copies of this server, and
//! even when the first attempt's client or server died half-way. The
//! README's Spec lists every endpoint, status code and the schema the
//! grader reads.
//!
//! This part is done: parsing the arguments, reading `DATABASE_URL`,
//! binding ADDR, printing exactly `listening on <actual address>` to
//! stdout, and routing; every handler answers 501 for now. Log to stderr
//! only from then on. Split the code into modules as you like.
//!
//! Still to do:
//! - connect a pool (`sqlx::postgres::PgPoolOptions`) and run the
//!   migrations in `src/migrations` at start, before listening
//!   (`sqlx::migrate!("src/migrations").run(&pool)`);
//! - finish the schema in `src/migrations/0001_schema.sql`;
//! - write the three handlers.
//!
//! Run the grader with `cargo test` in this folder; the README explains
//! each test.

#![allow(unused)]

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;

/// The address when none is given on the command line.
const DEFAULT_ADDR: &str = "127.0.0.1:8031";

/// How long a key is remembered unless `--key-ttl-secs` says otherwise.
const DEFAULT_TTL_SECS: i64 = 24 * 60 * 60;

/// What every handler shares. Add the connection pool here.
#[derive(Clone)]
struct App {
    database_url: String,
    ttl_secs: i64,
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
    let Ok(database_url) = std::env::var("DATABASE_URL") else {
        usage("set DATABASE_URL to the PostgreSQL database to use");
    };

    // TODO: connect a pool to `database_url` and run the migrations here,
    // before listening.

    let listener = match TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("idempotency: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    let local = listener
        .local_addr()
        .expect("a bound listener has an address");
    println!("listening on {local}");

    let app = Router::new()
        .route("/accounts", post(create_account))
        .route("/accounts/{id}", get(get_account))
        .route("/transfers", post(create_transfer))
        .with_state(App {
            database_url,
            ttl_secs,
        });
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("idempotency: server error: {e}");
        std::process::exit(1);
    }
}

/// `POST /accounts {"balance": n}` → 201 `{"id": .., "balance": n}`.
async fn create_account(State(app): State<App>, body: axum::body::Bytes) -> Response {
    StatusCode::NOT_IMPLEMENTED.into_response()
}

/// `GET /accounts/{id}` → 200 `{"id": .., "balance": ..}`, or 404.
async fn get_account(State(app): State<App>, Path(id): Path<String>) -> Response {
    StatusCode::NOT_IMPLEMENTED.into_response()
}

/// `POST /transfers` with `Idempotency-Key: <key>` and
/// `{"from": .., "to": .., "amount": ..}`: see the README's Spec.
async fn create_transfer(
    State(app): State<App>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    StatusCode::NOT_IMPLEMENTED.into_response()
}

fn usage(why: &str) -> ! {
    eprintln!("idempotency: {why}\nusage: idempotency [ADDR] [--key-ttl-secs N]");
    std::process::exit(2);
}
