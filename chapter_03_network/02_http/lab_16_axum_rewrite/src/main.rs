//! # Lab 16: the hello service again, with axum
//!
//! ```text
//! axum_server [ADDR] [STATIC_DIR]     (defaults 127.0.0.1:8080 and public)
//! ```
//!
//! Write lab 15's HTTP server again, this time on axum 0.8 (over hyper and
//! tokio), and add what a framework makes cheap:
//!
//! - Binds `ADDR`, prints exactly `listening on <actual address>` on stdout
//!   (this part is written for you, below), then serves; logs go to stderr.
//! - The routes of lab 15, unchanged:
//!   - `GET /` -> 200 `text/plain; charset=utf-8`, body `hello, world\n`;
//!   - `GET /hello/<name>` -> 200 `text/plain; charset=utf-8`, body
//!     `hello, <name>\n`, `<name>` being one non-empty, percent-decoded path
//!     segment (not valid UTF-8 after decoding -> 400);
//!   - `POST /echo` -> 200, the request body byte for byte, with the
//!     request's `Content-Type` (or `application/octet-stream`);
//!   - `GET /static/<path>` -> the file under `STATIC_DIR` (Content-Type by
//!     extension; missing file or directory -> 404; never a file outside the
//!     directory, whatever the encoding of `..`; tower-http's `ServeDir`);
//!   - HEAD on every GET route; a known path with another method -> 405 with
//!     an `Allow` header; any other path -> 404.
//! - The protocol rules of lab 15 (persistent connections, pipelining,
//!   fragmented requests, chunked bodies, 400 for malformed requests) come
//!   with hyper. The limits are yours to set: request line and headers at
//!   most 8 KiB (8192 bytes) -> 431, then close; a body over 1 MiB
//!   (1,048,576 bytes) -> 413, without reading the body when its
//!   Content-Length already says it is too large.
//! - JSON errors: every 4xx that reaches the router (404, 405, 413, and the
//!   400/415/422 of extractors) has the body `{"error": "<message>"}` and
//!   `Content-Type: application/json`. (What hyper answers before routing,
//!   such as 431 or 400 for a broken request line, stays hyper's.)
//! - Typed extractors:
//!   - `GET /sum?a=<i64>&b=<i64>` -> 200 `{"sum": a+b}`; a missing or
//!     non-integer parameter -> 400 JSON error;
//!   - `POST /greet` with the JSON `{"name": string, "age": u32}` -> 200
//!     `{"greeting": "hello, <name>", "next_age": age+1}`; malformed JSON or
//!     the wrong shape -> 400 or 422 JSON error; a Content-Type other than
//!     `application/json` -> 415 JSON error.
//! - Graceful shutdown: on SIGTERM or SIGINT, stop accepting (close the
//!   listener: new connections are refused), let requests in flight finish,
//!   close idle connections, and exit with code 0.
//!
//! `axum::serve` cannot set hyper's header limit: run hyper's HTTP/1
//! connection builder yourself in an accept loop (the README shows where).
//! The README walks through the milestones and each test; `cargo test` in
//! this folder grades.

#![allow(unused)]

use std::path::PathBuf;
use std::process::ExitCode;

use tokio::net::TcpListener;

/// The address used when none is given.
const DEFAULT_ADDR: &str = "127.0.0.1:8080";

/// The static directory used when none is given.
const DEFAULT_STATIC_DIR: &str = "public";

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| DEFAULT_ADDR.to_string());
    let static_dir = PathBuf::from(
        args.next()
            .unwrap_or_else(|| DEFAULT_STATIC_DIR.to_string()),
    );

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

    // TODO: build the axum Router, serve connections with hyper's HTTP/1
    // builder, and shut down gracefully on SIGTERM and SIGINT. Until then
    // the server waits forever (without using the CPU).
    std::future::pending::<()>().await;
    ExitCode::SUCCESS
}
