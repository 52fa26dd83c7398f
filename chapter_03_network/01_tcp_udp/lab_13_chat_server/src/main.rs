//! # Lab 13: a broadcast chat server on one thread with mio
//!
//! Write `chat_server`, the server of the tutorial "Learn epoll by Building a
//! Simple Broadcast Server": every line a client sends goes to every other
//! connected client, from **one thread**, with one `mio::Poll`.
//!
//! ```text
//! chat_server [ADDR]        (default 127.0.0.1:8080)
//! ```
//!
//! - It binds `ADDR`, prints `listening on <actual address>` on stdout (this
//!   part is written for you, below), then serves until killed. Logs go to
//!   stderr.
//! - Messages are lines ending in `\n`. Each complete line, newline
//!   included, is written unchanged to every *other* connected client, never
//!   back to its sender. A line that arrives in pieces is sent on only once
//!   its newline has arrived, in one piece; several lines in one read are
//!   several messages. Lines from one client reach each receiver in order.
//! - End of file (the client closed or half-closed) or an error (a reset)
//!   means the client has left: send on the complete lines it sent before
//!   its end of file (they often arrive in the same event), drop an
//!   unterminated tail and anything still queued for it, and close it.
//! - Slow clients: a client that does not read must not stall the others or
//!   grow the server's memory. When the output queued for one client passes
//!   [`MAX_PENDING`] (1 MiB), disconnect that client.
//! - Over-long lines: a line may hold at most [`MAX_LINE`] (65,536) bytes,
//!   its newline included. Once a client has sent that many bytes of a line
//!   without its newline, write `error: line too long\n` to it (best
//!   effort), and disconnect it; none of that line goes to the others.
//! - One thread: no `thread::spawn`, no runtime. mio is **edge-triggered**:
//!   accept until `WouldBlock`, read until `WouldBlock`, write until
//!   `WouldBlock`; ask for `WRITABLE` only while output is pending.
//! - Close and deregister clients that leave (no fd leak).
//! - Performance: one read buffer shared by all connections, no allocation
//!   per message beyond what a slow receiver's queue needs, `TCP_NODELAY`.
//!
//! The README walks through the milestones and what each test checks;
//! `cargo test` grades. The skeleton below is a suggestion: change anything
//! but the command-line contract.

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

/// The longest line, newline included.
const MAX_LINE: usize = 64 * 1024;

/// Disconnect a client whose queued output passes this.
const MAX_PENDING: usize = 1024 * 1024;

/// What an over-long line earns its sender before the server hangs up.
const TOO_LONG: &[u8] = b"error: line too long\n";

fn main() -> ExitCode {
    let arg = std::env::args().nth(1);
    let text = arg.as_deref().unwrap_or(DEFAULT_ADDR);
    let addr: SocketAddr = match text.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("chat_server: bad address {text:?}: {e}");
            eprintln!("usage: chat_server [ADDR]   (default {DEFAULT_ADDR})");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("chat_server: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(a) => println!("listening on {a}"),
        Err(e) => {
            eprintln!("chat_server: {e}");
            return ExitCode::FAILURE;
        }
    }
    let _ = io::stdout().flush();

    // TODO: replace this with `Server::new(listener)?.run()`.
    loop {
        std::thread::park();
    }
}

/// One client.
struct Conn {
    stream: TcpStream,
    /// Lines from other clients not yet written to this one.
    out: Vec<u8>,
    /// The start of a line this client is still sending (no newline yet).
    partial: Vec<u8>,
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
