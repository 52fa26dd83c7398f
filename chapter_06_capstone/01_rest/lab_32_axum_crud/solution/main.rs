//! # Lab 32: the tasks service, in memory (reference solution)
//!
//! ```text
//! tasks_mem [ADDR]        (default 127.0.0.1:8080)
//! ```
//!
//! A REST service for tasks (create, read, list with keyset pagination,
//! replace, patch, delete, optimistic concurrency with ETag and If-Match)
//! on axum, kept in memory. Labs 33 to 35 grow this same service: it moves
//! to PostgreSQL, gets traces, then metrics.
//!
//! ## Layout
//!
//! | module | job |
//! |---|---|
//! | `main` (this file) | configuration (the address), the listener, graceful shutdown |
//! | [`api`] | the router, handlers, the JSON body extractor, ETag / If-Match |
//! | [`error`] | `ApiError`, rendered as the one JSON error shape |
//! | [`model`] | `Task`, `NewTask`, `TaskFields`, `TaskPatch`: validation as pure functions |
//! | [`store`] | the repository: here a map behind a mutex; PostgreSQL in lab 33 |
//!
//! Handlers never touch storage details and the store never sees HTTP,
//! so lab 33 replaces `store.rs` and leaves the rest alone.
//!
//! ## Graceful shutdown
//!
//! On SIGTERM (what `kill`, systemd and Kubernetes send) or SIGINT
//! (Ctrl-C), `axum::serve(..).with_graceful_shutdown(signal)`:
//! 1. stops accepting and drops the listener, so the kernel refuses new
//!    connections at once (instead of queueing them in the backlog of a
//!    process that will never accept them);
//! 2. tells every connection to shut down gracefully (hyper's
//!    `graceful_shutdown`): an idle keep-alive connection is closed now,
//!    one with a request in flight finishes it (reads the rest of the
//!    body, runs the handler, sends the response) and then closes;
//! 3. returns once every connection is gone, and `main` returns: exit 0.
//!
//! A deploy that replaces this process therefore loses no request: the
//! load balancer stops sending new ones, the old process finishes what it
//! has. (What it does not bound is a client that never finishes its
//! request; an orchestrator's SIGKILL after a grace period does, and lab
//! 33's request timeout will.)

mod api;
mod error;
mod model;
mod store;

use std::future::Future;
use std::process::ExitCode;

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

/// The address when none is given.
const DEFAULT_ADDR: &str = "127.0.0.1:8080";

#[tokio::main]
async fn main() -> ExitCode {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEFAULT_ADDR.to_string());

    // Before announcing the address: a test (or an orchestrator) may send
    // SIGTERM as soon as it sees the line, and until a handler is
    // installed SIGTERM's default action kills the process (no drain,
    // exit by signal).
    let shutdown = match shutdown_signal() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tasks_mem: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };

    let listener = match TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tasks_mem: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = listener
        .local_addr()
        .expect("a bound listener has an address");
    // println! flushes at the newline (stdout is line-buffered).
    println!("listening on {local}");

    let app = api::router(store::Store::new());
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        eprintln!("tasks_mem: server error: {e}");
        return ExitCode::FAILURE;
    }
    eprintln!("tasks_mem: every connection closed; bye");
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
        eprintln!("tasks_mem: {name}: shutting down, finishing requests in flight");
    })
}
