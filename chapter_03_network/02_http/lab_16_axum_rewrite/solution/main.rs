//! # Lab 16: the hello service again, with axum (reference solution)
//!
//! ```text
//! axum_server [ADDR] [STATIC_DIR]     (defaults 127.0.0.1:8080 and public)
//! ```
//!
//! ## Layout
//!
//! | module | job |
//! |---|---|
//! | `main` (this file) | arguments, the accept loop, hyper's limits, graceful shutdown |
//! | [`app`] | the axum `Router`: routes, handlers, static files, body limit |
//! | [`error`] | the JSON error type and the extractors that produce it |
//!
//! ## Why not `axum::serve`
//!
//! `axum::serve(listener, app).with_graceful_shutdown(signal)` is the
//! usual one-liner, and it does almost everything here. What it does not
//! expose is hyper's connection builder, and that is where the header limit
//! lives: hyper reads a request's line and headers into a buffer and, when
//! they do not fit, answers `431 Request Header Fields Too Large` and closes.
//! `axum::serve` leaves hyper's limit at its default (about 400 KB of
//! buffer); the service promises 8 KiB, the limit of lab 15. So this file
//! runs the accept loop that `axum::serve` would run:
//!
//! 1. accept a TCP connection;
//! 2. hand it to `hyper::server::conn::http1::Builder` (with
//!    `max_header_size(8192)`), wrapped in `TokioIo` (hyper has its own I/O
//!    traits, hyper-util adapts tokio's), with the `Router` as the service;
//! 3. drive that connection in its own task: hyper parses requests
//!    incrementally (any fragmentation), answers pipelined requests in
//!    order, keeps the connection alive, decodes chunked bodies, and
//!    answers 400 to malformed requests, all before the router sees them.
//!
//! ## Graceful shutdown
//!
//! On SIGTERM or SIGINT:
//! 1. the accept loop ends and the listener is dropped: the kernel now
//!    refuses new connections (merely not calling `accept` would let them
//!    pile up in the backlog, unanswered);
//! 2. every connection task is told, through a `watch` channel, to call
//!    hyper's `graceful_shutdown` on its connection: an idle keep-alive
//!    connection is closed at once, one with a request in flight finishes
//!    that response (with `Connection: close`) and then closes;
//! 3. `main` waits until every connection task has ended, then returns, and
//!    the process exits 0. Each task holds a clone of the channel's
//!    receiver, and the sender's `closed()` resolves when the last clone is
//!    dropped: that is the "all connections done" signal, with no counter
//!    to keep. (hyper-util's `server::graceful::GracefulShutdown`, behind
//!    its `server-graceful` feature, packages the same mechanism.)
//!
//! A client that never finishes its request would hold the exit forever, so
//! the wait has a deadline ([`DRAIN_DEADLINE`]); real servers do the same
//! (Kubernetes sends SIGKILL 30 s after SIGTERM anyway).

mod app;
mod error;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tower::ServiceExt;

/// The address used when none is given.
const DEFAULT_ADDR: &str = "127.0.0.1:8080";

/// The static directory used when none is given.
const DEFAULT_STATIC_DIR: &str = "public";

/// The most a request line plus headers may take, in bytes (as in lab 15).
/// Past it hyper answers 431 and closes the connection.
const MAX_HEAD: usize = 8192;

/// How long a shutdown waits for requests in flight before giving up on
/// them.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| DEFAULT_ADDR.to_string());
    let static_dir = PathBuf::from(
        args.next()
            .unwrap_or_else(|| DEFAULT_STATIC_DIR.to_string()),
    );

    // Install the signal handlers before announcing the address: a test (or
    // an orchestrator) may send SIGTERM as soon as it sees the line, and
    // until a handler exists SIGTERM's default action kills the process.
    let shutdown = match shutdown_signal() {
        Ok(signal) => signal,
        Err(e) => {
            eprintln!("axum_server: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };

    let listener = match TcpListener::bind(&addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("axum_server: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = listener
        .local_addr()
        .expect("a bound listener has an address");
    // println! flushes at the newline: stdout is line-buffered in Rust.
    println!("listening on {local}");

    serve(listener, app::router(static_dir), shutdown).await;
    ExitCode::SUCCESS
}

/// Resolves on the first SIGTERM or SIGINT. The handlers are installed
/// now, when this is called, not when the future is first polled.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        eprintln!("axum_server: {name}: shutting down");
    })
}

/// Accepts connections until `shutdown` resolves, then drains them (see the
/// module doc).
async fn serve(listener: TcpListener, app: Router, shutdown: impl Future<Output = ()>) {
    // The value carries nothing: a change means "shut down". Each connection
    // task owns a receiver; when all are dropped, `stop.closed()` resolves.
    let (stop, stopped) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Typically EMFILE (out of file descriptors) or a
                    // connection reset before we accepted it. Not fatal;
                    // pause briefly so that EMFILE does not spin the loop.
                    eprintln!("axum_server: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        tokio::spawn(serve_connection(stream, peer, app.clone(), stopped.clone()));
    }

    // Step 1: closing the listener refuses new connections.
    drop(listener);
    // Step 2: tell every connection; then drop our own receiver so that
    // only the connections' receivers keep the channel open.
    let _ = stop.send(());
    drop(stopped);
    // Step 3: wait for the last connection task to end.
    if tokio::time::timeout(DRAIN_DEADLINE, stop.closed())
        .await
        .is_err()
    {
        eprintln!(
            "axum_server: {} connection(s) still busy after {DRAIN_DEADLINE:?}; exiting anyway",
            stop.receiver_count()
        );
    }
}

/// Serves one connection with hyper until the client leaves, an error ends
/// it, or a shutdown has closed it gracefully.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    mut stop: watch::Receiver<()>,
) {
    // Small responses (and pipelined ones) go out at once instead of
    // waiting for Nagle's algorithm to batch them with later writes.
    let _ = stream.set_nodelay(true);

    // The Router is a tower `Service` taking `&mut self`; hyper wants a
    // `Fn`. Cloning a Router is cheap (its routes are behind an `Arc`), and
    // `oneshot` waits for readiness and calls it once.
    let service = service_fn(move |req: Request<Incoming>| app.clone().oneshot(req));

    let mut builder = http1::Builder::new();
    builder
        // Request line + headers + blank line at most MAX_HEAD bytes, else
        // 431 (hyper counts the head as httparse parsed it).
        .max_header_size(MAX_HEAD)
        // hyper's timers (the 30 s limit for receiving a request's headers,
        // which also ends idle keep-alive connections) need a clock.
        .timer(TokioTimer::new());
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);

    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = stop.changed() => {
            // Finish the request in flight, if any, then close.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // Malformed requests (hyper answered 400 or 431), clients that
        // vanished mid-request: one line each, and the server goes on.
        eprintln!("axum_server: {peer}: {e}");
    }
    // `stop` is dropped here: one fewer connection to wait for.
}
