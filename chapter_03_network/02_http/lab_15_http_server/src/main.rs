//! # Lab 15: an HTTP/1.1 server by hand
//!
//! Write `http_server`, a small web server that speaks HTTP/1.1 itself, on
//! `std::net` (or mio): no HTTP library. It serves "the hello service":
//!
//! ```text
//! http_server [ADDR] [STATIC_DIR]     (defaults: 127.0.0.1:8080, public)
//! ```
//!
//! Routes (the path is matched without its query string):
//! - `GET /` -> 200, `Content-Type: text/plain; charset=utf-8`, body
//!   `hello, world\n`.
//! - `GET /hello/<name>` -> 200, text/plain, body `hello, <name>\n`, where
//!   `<name>` is one non-empty path segment, percent-decoded
//!   (`/hello/J%C3%BCrgen` -> `hello, Jürgen\n`). `/hello/` and
//!   `/hello/a/b` -> 404; a name that is not UTF-8 once decoded -> 400.
//! - `POST /echo` -> 200, the request body byte for byte, with the
//!   request's Content-Type (or `application/octet-stream` without one).
//! - `GET /static/<path>` -> the file `<path>` under STATIC_DIR, with a
//!   Content-Type by extension (.html, .txt, .css, .js, .json, .png, else
//!   `application/octet-stream`); missing or a directory -> 404; any path
//!   that would leave STATIC_DIR (`..`, also as `%2e%2e`, an encoded `/` or
//!   `\`, an absolute path) -> 404, never a file outside it.
//! - `HEAD` on every GET route: GET's status and headers, no body.
//! - A known path with another method -> 405 with an `Allow` header; any
//!   other path -> 404.
//!
//! Protocol:
//! - Connections are persistent (HTTP/1.1): answer, then read the next
//!   request, until `Connection: close` (answer with `Connection: close`,
//!   then close), HTTP/1.0 without `Connection: keep-alive`, end of file,
//!   or an error. Pipelined requests are answered in order.
//! - Requests arrive in any fragmentation, down to one byte per read.
//! - Bodies: `Content-Length`, or `Transfer-Encoding: chunked` (decode it).
//! - Every response carries `Content-Length`.
//! - Limits: request line + headers at most 8 KiB (8192 bytes), else 431;
//!   body at most 1 MiB (1,048,576 bytes), else 413 (answer as soon as
//!   `Content-Length` says so, without reading the body). Malformed
//!   requests -> 400. After a 400, 413 or 431: `Connection: close`, close.
//! - Many clients at once: an idle or slow client never blocks another.
//!   Client errors (resets, garbage) end that connection only; log to
//!   stderr.
//!
//! The README walks through the milestones and what each test checks;
//! `cargo test` grades. Everything below `main` is a suggestion: change
//! anything but the command-line contract.

#![allow(unused)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The address used when none is given.
const DEFAULT_ADDR: &str = "127.0.0.1:8080";

/// The static directory used when none is given.
const DEFAULT_STATIC_DIR: &str = "public";

/// The most bytes of request line + headers (the head) accepted.
const MAX_HEAD: usize = 8 * 1024;

/// The largest request body accepted.
const MAX_BODY: usize = 1024 * 1024;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let text = args.next().unwrap_or_else(|| DEFAULT_ADDR.to_string());
    let root = PathBuf::from(
        args.next()
            .unwrap_or_else(|| DEFAULT_STATIC_DIR.to_string()),
    );
    let addr: SocketAddr = match text.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("http_server: bad address {text:?}: {e}");
            eprintln!(
                "usage: http_server [ADDR] [STATIC_DIR]   (defaults {DEFAULT_ADDR}, {DEFAULT_STATIC_DIR})"
            );
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("http_server: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(a) => println!("listening on {a}"),
        Err(e) => {
            eprintln!("http_server: {e}");
            return ExitCode::FAILURE;
        }
    }
    let _ = io::stdout().flush();

    // TODO: accept connections and serve each one concurrently.
    loop {
        std::thread::park();
    }
}

/// One parsed request.
struct Request {
    method: String,
    /// The request target as sent, e.g. `/hello/J%C3%BCrgen?x=1`.
    target: String,
    /// `HTTP/1.0` or `HTTP/1.1`.
    version: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// One response, before it is written.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Serves one connection until it closes.
fn serve(stream: TcpStream, root: &Path) -> io::Result<()> {
    todo!("read into a buffer, parse every complete request in it, answer each, repeat")
}
