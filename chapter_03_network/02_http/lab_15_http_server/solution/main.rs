//! # Lab 15: an HTTP/1.1 server by hand (reference solution)
//!
//! `http_server [ADDR] [STATIC_DIR]` serves the hello service over
//! HTTP/1.1 on `std::net`, with no HTTP library.
//!
//! ## Design
//!
//! ```text
//!   main ── accept loop ──> one thread per connection: serve()
//!                                 │  read ──> buf ──> Parser::advance ──> Request
//!                                 │                                        │
//!                                 └── write_response <── routes::handle <──┘
//! ```
//!
//! - `parse.rs`: an incremental request parser. Bytes go into one buffer per
//!   connection; the parser takes complete requests off its front, keeping
//!   its place between reads, so any fragmentation works and pipelined
//!   requests are simply "the bytes after the previous request".
//! - `routes.rs`: the routes, percent-decoding, and the static files with
//!   their traversal checks.
//! - This file: the accept loop, the per-connection loop (keep-alive,
//!   pipelining, errors), and writing responses.
//!
//! ## Why a thread per connection
//!
//! Blocking I/O on a thread per connection is the simplest correct design:
//! each connection's code reads top to bottom (read, parse, answer, repeat),
//! and an idle or slow client blocks only its own thread. The cost is a
//! thread (an 8 MiB stack reservation, a few KiB actually touched, and a
//! scheduler entry) per open connection: fine for hundreds, heavy for tens of
//! thousands of mostly idle keep-alive connections. That is where an event
//! loop (mio, as in labs 10 and 13) or async (lab 16) wins: a connection
//! then costs only its buffers. nginx and hyper are event-driven for that
//! reason; Apache's classic prefork/worker models are thread/process per
//! connection. An unbounded number of threads is also a denial-of-service
//! risk; a production server caps connections (a semaphore around accept)
//! and closes idle ones ([`IDLE_TIMEOUT`] here).

mod parse;
mod routes;

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use parse::{Parser, Reject};
use routes::Response;

/// The address used when none is given.
const DEFAULT_ADDR: &str = "127.0.0.1:8080";

/// The static directory used when none is given.
const DEFAULT_STATIC_DIR: &str = "public";

/// How much one read takes at most. 64 KiB keeps large bodies to a few
/// system calls without holding much memory per connection.
const READ_CHUNK: usize = 64 * 1024;

/// A connection that sends nothing for this long is closed, so idle
/// keep-alive connections do not hold a thread forever. (nginx defaults to
/// 75 s, Apache to 5 s.)
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// After an error response, how long we keep reading (and discarding) what
/// the client still sends before closing; see [`lingering_close`].
const LINGER: Duration = Duration::from_secs(2);

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

    // Shared, read-only: an Arc is all the threads need.
    let root: Arc<Path> = root.into();
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            // A connection that died in the accept queue (ECONNABORTED), or
            // the file-descriptor limit (EMFILE): log and keep accepting.
            // (On EMFILE this retries at once; lab 10 shows how to back off.)
            Err(e) => {
                eprintln!("http_server: accept: {e}");
                continue;
            }
        };
        let root = Arc::clone(&root);
        let spawned = thread::Builder::new().name("conn".into()).spawn(move || {
            let peer = stream
                .peer_addr()
                .map_or_else(|_| "?".to_string(), |a| a.to_string());
            // An error here (a reset, a timeout) ends this connection
            // only: it is logged, never unwrapped.
            if let Err(e) = serve(stream, &root) {
                eprintln!("{peer}: {e}");
            }
        });
        if let Err(e) = spawned {
            // Out of threads: the stream was moved into the failed closure
            // and is dropped (closed) with it.
            eprintln!("http_server: cannot spawn a thread: {e}");
        }
    }
    ExitCode::SUCCESS
}

/// Serves one connection: requests in, responses out, until the client
/// closes, asks to close, goes idle, or sends something we reject.
fn serve(mut stream: TcpStream, root: &Path) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    // Responses are written in one `write_all`, but a HEAD response or a
    // small body would otherwise still wait for Nagle's algorithm when the
    // client delays its ACKs.
    stream.set_nodelay(true)?;
    let mut parser = Parser::new();
    // Bytes read but not yet parsed: the rest of the current request, and
    // any pipelined requests after it.
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        // First answer every complete request already in `buf`: with
        // pipelining, one read can hold several, and the client waits for
        // all their answers before sending more.
        match parser.advance(&mut buf) {
            Ok(Some(req)) => {
                let close = req.wants_close();
                let head_only = req.method == "HEAD";
                let resp = routes::handle(&req, root);
                eprintln!("{} {} -> {}", req.method, req.target, resp.status);
                write_response(&mut stream, &resp, head_only, close)?;
                if close {
                    return Ok(());
                }
                continue;
            }
            Ok(None) => {}
            Err(Reject { status, why }) => {
                eprintln!("rejected with {status}: {why}");
                // The stream is out of step (we do not know where the next
                // request would start): answer, then close.
                write_response(&mut stream, &Response::error(status), false, true)?;
                lingering_close(stream);
                return Ok(());
            }
        }
        let n = match stream.read(&mut chunk) {
            // End of file: the client is done. (A half-sent request is
            // simply dropped.)
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // The idle timeout: close quietly.
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Writes a response: status line, headers, `Content-Length`, and the body
/// unless it answers a HEAD (which keeps GET's Content-Length, so a client
/// learns the size without the bytes).
fn write_response(
    stream: &mut TcpStream,
    resp: &Response,
    head_only: bool,
    close: bool,
) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        resp.status,
        routes::reason(resp.status)
    );
    for (name, value) in &resp.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(&resp.body);
    }
    // One write_all: head and body leave together (no small-packet delay),
    // and write_all loops over partial writes.
    stream.write_all(&bytes)
}

/// Closes after an error response without destroying it. If we closed while
/// unread request bytes sit in our receive buffer (the rest of an oversized
/// head, say), the kernel would answer with a reset (RST) instead of a FIN,
/// and the client might lose our response before reading it. So: shut down
/// our sending side (the client sees end of file after the response), then
/// read and discard until the client closes or [`LINGER`] passes. Apache
/// calls this a "lingering close".
fn lingering_close(mut stream: TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(LINGER));
    let mut sink = [0u8; 16 * 1024];
    let mut total = 0;
    // Bounded in bytes too: a client streaming forever cannot keep us here.
    while total < (4 << 20) {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
}
