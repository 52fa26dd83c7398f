//! # Lab 10: an echo server on one thread with mio
//!
//! Write `mio_echo`, a TCP echo server that serves thousands of clients at
//! once from **one thread**, with one `mio::Poll` (epoll underneath).
//!
//! ```text
//! mio_echo [ADDR]        (default 127.0.0.1:8080)
//! ```
//!
//! - It binds `ADDR`, prints `listening on <actual address>` on stdout (this
//!   part is written for you, below), then serves until killed. Logs go to
//!   stderr.
//! - Every byte a client sends comes back to that client, in order, as soon
//!   as it is read (no framing: do not wait for a newline).
//! - When a client shuts down its sending side (end of file), everything it
//!   sent is echoed, then the connection is closed. Errors (a reset, a
//!   broken pipe) close that connection only.
//! - One thread: no `thread::spawn`, no runtime.
//! - mio is **edge-triggered**: an event says a socket *became* ready. Accept
//!   until `WouldBlock`, read until `WouldBlock`, write until `WouldBlock`.
//! - A write may be partial: keep the unsent tail in the connection's
//!   buffer, ask for `WRITABLE` while (and only while) something is pending,
//!   and write the rest when the event comes.
//! - Backpressure: stop reading from a client whose unsent output is above a
//!   high-water mark (say 64 KiB), and resume when it drains. A client that
//!   sends without reading must not grow the server's memory (the grader
//!   pushes 64 MiB and requires the server to stay under 32 MiB).
//! - Close and deregister finished connections (no fd leak); reuse their
//!   tokens (a `Vec` with a free list; the `slab` crate is not available).
//! - Running out of file descriptors (`accept` fails with `EMFILE`) must not
//!   make the server spin or stop serving; explain your choice in a comment.
//! - Performance: one reused read buffer, no allocation per message, and
//!   `TCP_NODELAY` on every connection.
//!
//! The README has the milestones and what each test checks; `cargo test`
//! grades. The skeleton below is a suggestion: change anything but the
//! command-line contract.

#![allow(unused)]

use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

/// The address used when none is given.
const DEFAULT_ADDR: &str = "127.0.0.1:8080";

/// The listener's token; connections could use their index in a `Vec`.
const LISTENER: Token = Token(usize::MAX);

/// Size of the one read buffer shared by all connections.
const READ_BUF: usize = 64 * 1024;

/// Stop reading from a client whose unsent output is above this.
const HIGH_WATER: usize = 64 * 1024;

fn main() -> ExitCode {
    let arg = std::env::args().nth(1);
    let text = arg.as_deref().unwrap_or(DEFAULT_ADDR);
    let addr: SocketAddr = match text.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("mio_echo: bad address {text:?}: {e}");
            eprintln!("usage: mio_echo [ADDR]   (default {DEFAULT_ADDR})");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mio_echo: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(a) => println!("listening on {a}"),
        Err(e) => {
            eprintln!("mio_echo: {e}");
            return ExitCode::FAILURE;
        }
    }
    let _ = io::stdout().flush();

    // TODO: replace this with `Server::new(listener)?.run()`.
    loop {
        std::thread::park();
    }
}

/// One client: its socket, and the echo it could not write yet.
struct Conn {
    stream: TcpStream,
    /// Bytes read but not yet written back.
    out: Vec<u8>,
    // What else does a connection need to remember between events?
}

struct Server {
    poll: Poll,
    listener: TcpListener,
    // The connections (a Vec of slots plus a free list?), the read buffer...
}

impl Server {
    fn new(listener: TcpListener) -> io::Result<Server> {
        todo!("create the Poll and register the listener")
    }

    fn run(&mut self) -> io::Result<()> {
        todo!("poll, then handle each event: the listener, or a connection")
    }
}
