//! # Lab 33: the tasks service on PostgreSQL (reference solution)
//!
//! ```text
//! DATABASE_URL=postgres://... tasks_db [ADDR]
//!     ADDR: first argument, else $LISTEN_ADDR, else 127.0.0.1:8080
//!     DB_MAX_CONNECTIONS (default 10), REQUEST_TIMEOUT_MS (default 5000)
//! ```
//!
//! Lab 32's service with its store moved into PostgreSQL. The HTTP side
//! (`api.rs`, `error.rs`, `model.rs`) is lab 32's, plus a request timeout
//! in `api.rs`; what is new lives here (configuration, the pool,
//! migrations) and in `store.rs` (SQL, transactions, error
//! classification).
//!
//! | module | job |
//! |---|---|
//! | `main` (this file) | configuration (arguments, environment), the pool, migrations, the listener, graceful shutdown |
//! | [`api`] | the router, handlers, the JSON body extractor, ETag / If-Match, the request timeout |
//! | [`error`] | `ApiError`, rendered as the one JSON error shape (`Unavailable` is a 503) |
//! | [`model`] | `Task`, `NewTask`, `TaskFields`, `TaskPatch`: validation as pure functions |
//! | [`store`] | the repository, on PostgreSQL |
//!
//! # Design
//!
//! - **Configuration from the environment**, as a container platform
//!   passes it (twelve-factor): the database URL is a secret and never a
//!   command-line argument (those show in `ps`). The listen address keeps
//!   the course's convention (first argument) and falls back to
//!   `LISTEN_ADDR`.
//! - **Fail fast, in one sentence.** A service that cannot reach its
//!   database at start exits non-zero before it listens, so the
//!   orchestrator restarts it and the load balancer never routes to it.
//!   The connect is bounded (min(REQUEST_TIMEOUT_MS, 5 s)): a database
//!   behind a dead network path (SYNs or bytes dropped) would otherwise
//!   keep the process waiting for the kernel's TCP timeouts, minutes.
//! - **Migrations at start, before listening**: a fresh database works,
//!   and no request ever meets a missing table. sqlx records what ran in
//!   `_sqlx_migrations` and takes an advisory lock while migrating, so two
//!   instances starting together on one database do not race, and a
//!   second start applies nothing.
//! - **Every request has a deadline** (`REQUEST_TIMEOUT_MS`, in `api.rs`).
//!   A slow or unreachable database then costs a client a prompt 503 it
//!   can retry, instead of a hung connection, and the server does not pile
//!   up waiting requests. The pool's acquire timeout is shorter, so
//!   running out of connections shows as "unavailable" from the pool
//!   itself; a request cancelled by the deadline drops its transaction,
//!   which rolls back.
//! - **The pool is the concurrency limit toward PostgreSQL**
//!   (`DB_MAX_CONNECTIONS`): each PostgreSQL connection is a process on the
//!   database server, so the sum over all instances must stay below its
//!   `max_connections`.
//! - **Graceful shutdown** is lab 32's: on SIGTERM or SIGINT, stop
//!   accepting, finish the requests in flight, close idle connections,
//!   exit 0. The request timeout now bounds how long that can take.

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

mod api;
mod error;
mod model;
mod store;

/// The address when neither an argument nor `LISTEN_ADDR` gives one.
const DEFAULT_ADDR: &str = "127.0.0.1:8080";

/// The longest a start waits for the database, whatever the request timeout.
const CONNECT_MAX: Duration = Duration::from_secs(5);

/// How long migrations may take (they may wait for another instance's
/// advisory lock).
const MIGRATE_MAX: Duration = Duration::from_secs(60);

/// What the service is configured with.
struct Config {
    addr: String,
    db: PgConnectOptions,
    max_connections: u32,
    request_timeout: Duration,
}

fn config() -> Config {
    let addr = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("LISTEN_ADDR").ok().filter(|a| !a.is_empty()))
        .unwrap_or_else(|| DEFAULT_ADDR.to_string());
    let url = match std::env::var("DATABASE_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => fail(
            "DATABASE_URL is not set: set it to the PostgreSQL database to use (postgres://user@host:port/db)",
        ),
    };
    let db = match PgConnectOptions::from_str(&url) {
        // sqlx logs every statement at INFO by default; keep stderr for
        // what matters.
        Ok(o) => o.disable_statement_logging(),
        Err(e) => fail(&format!("DATABASE_URL is not a PostgreSQL URL: {e}")),
    };
    let max_connections = number("DB_MAX_CONNECTIONS", 10);
    let request_timeout = Duration::from_millis(number("REQUEST_TIMEOUT_MS", 5000).into());
    Config {
        addr,
        db,
        max_connections,
        request_timeout,
    }
}

/// A whole number above 0 from the environment, or `default` when unset.
fn number(name: &str, default: u32) -> u32 {
    match std::env::var(name) {
        Err(_) => default,
        Ok(v) => match v.parse::<u32>() {
            Ok(n) if n > 0 => n,
            _ => fail(&format!("{name} must be a whole number above 0, not {v:?}")),
        },
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = config();
    let where_ = format!(
        "{}:{}/{}",
        config.db.get_host(),
        config.db.get_port(),
        config.db.get_database().unwrap_or("")
    );

    // One connection first, on its own: its error says what is wrong
    // (refused, bad password, no such database), where a pool would only
    // report that it timed out waiting for one.
    let connect_timeout = config.request_timeout.min(CONNECT_MAX);
    let connect = sqlx::PgConnection::connect_with(&config.db);
    let mut conn = match tokio::time::timeout(connect_timeout, connect).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => fail(&format!("cannot connect to PostgreSQL at {where_}: {e}")),
        Err(_) => fail(&format!(
            "cannot connect to PostgreSQL at {where_}: no answer within {} ms",
            connect_timeout.as_millis()
        )),
    };
    // Before listening, so a client never meets a server without its tables.
    let migrate = sqlx::migrate!("src/migrations").run(&mut conn);
    match tokio::time::timeout(MIGRATE_MAX, migrate).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => fail(&format!("migrations on {where_} failed: {e}")),
        Err(_) => fail(&format!(
            "migrations on {where_} did not finish within {} s",
            MIGRATE_MAX.as_secs()
        )),
    }
    let _ = conn.close().await;

    // The acquire timeout is below the request timeout: when every
    // connection is busy (or none can be opened), the pool says so while
    // the request still has time to answer 503 itself. Lazy: the
    // connection above proved the database is there; the pool opens its
    // own as requests need them.
    let pool = PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.request_timeout * 3 / 4)
        .connect_lazy_with(config.db);
    let store = store::Store::new(pool);

    // Before announcing the address: a test (or an orchestrator) may send
    // SIGTERM as soon as it sees the line, and until a handler is
    // installed SIGTERM's default action kills the process (no drain,
    // exit by signal).
    let shutdown = match shutdown_signal() {
        Ok(s) => s,
        Err(e) => fail(&format!("cannot install signal handlers: {e}")),
    };

    let listener = match TcpListener::bind(&config.addr).await {
        Ok(l) => l,
        Err(e) => fail(&format!("cannot listen on {}: {e}", config.addr)),
    };
    let local: SocketAddr = listener
        .local_addr()
        .expect("a bound listener has an address");
    // println! flushes at the newline (stdout is line-buffered).
    println!("listening on {local}");

    let app = api::router(store, config.request_timeout);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        fail(&format!("server error: {e}"));
    }
    eprintln!("tasks_db: every connection closed; bye");
    ExitCode::SUCCESS
}

/// Resolves on the first SIGTERM or SIGINT. The handlers are installed
/// when this is called, not when the future is first polled.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        eprintln!("tasks_db: {name}: shutting down, finishing requests in flight");
    })
}

/// One sentence on stderr, exit status 1. Before the server runs there is
/// nothing to clean up, so exiting right here is fine.
fn fail(why: &str) -> ! {
    eprintln!("tasks_db: {why}");
    std::process::exit(1);
}
