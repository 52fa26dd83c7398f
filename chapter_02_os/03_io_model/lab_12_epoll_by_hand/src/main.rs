//! # Lab 12: epoll by hand
//!
//! Write `epoll_echo`, the echo server of lab 10 without mio: raw
//! `epoll_create1`, `epoll_ctl` and `epoll_wait` through `libc`, on one
//! thread, behind a small event loop that applications plug into.
//!
//! ```text
//! epoll_echo [ADDR] [echo|broadcast]      (defaults: 127.0.0.1:8080 echo)
//! ```
//!
//! - It binds `ADDR`, prints `listening on <actual address>` on stdout (this
//!   part is written for you, below), then serves until killed. Logs go to
//!   stderr. An unknown mode exits with code 2 and a usage message.
//! - `echo`: every byte a client sends comes back to it, in order, at once.
//!   On end of file everything is echoed, then the connection closes.
//! - `broadcast`: every chunk a client sends goes to every *other* connected
//!   client (not back to the sender).
//! - One thread. Edge-triggered (`EPOLLET`): accept, read and write until
//!   `EAGAIN`. Keep unsent output per connection; stop reading from a client
//!   whose own output is above a high-water mark (a slow reader must not grow
//!   the server past 32 MiB).
//! - Structure: an `EventLoop` that owns the sockets and a `Handler` trait
//!   for the application (a sketch is below); echo and broadcast are two
//!   handlers on the same loop.
//! - Every `unsafe` block carries a `// SAFETY:` comment. Every descriptor is
//!   owned by an `OwnedFd` (or a std type that wraps one), so it is closed
//!   exactly once.
//!
//! A public epoll "worker" framework had four bugs, and the grader checks
//! for each: it closed every connection after the first reply; it closed
//! file descriptors twice; it lost the last message when the data and the
//! FIN arrived together; it busy-looped when `accept` failed with `EMFILE`.
//!
//! The README has the milestones and what each test checks; `cargo test`
//! grades. The skeleton below is a suggestion: change anything but the
//! command-line contract.

#![allow(unused)]

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::ExitCode;

const DEFAULT_ADDR: &str = "127.0.0.1:8080";
const USAGE: &str = "usage: epoll_echo [ADDR] [echo|broadcast]   (default 127.0.0.1:8080 echo)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let text = args.first().map(String::as_str).unwrap_or(DEFAULT_ADDR);
    let addr: SocketAddr = match text.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("epoll_echo: bad address {text:?}: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mode = args.get(1).map(String::as_str).unwrap_or("echo");
    if !matches!(mode, "echo" | "broadcast") || args.len() > 2 {
        eprintln!("epoll_echo: unknown mode {mode:?}\n{USAGE}");
        return ExitCode::from(2);
    }

    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("epoll_echo: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(a) => println!("listening on {a}"),
        Err(e) => {
            eprintln!("epoll_echo: {e}");
            return ExitCode::FAILURE;
        }
    }
    let _ = io::stdout().flush();

    // TODO: build an EventLoop with the Echo or Broadcast handler and run it.
    loop {
        std::thread::park();
    }
}

/// A connection's name, for handlers and for epoll's `data` field. Hint:
/// what goes wrong if it is just the fd number, and the fd is closed and
/// reused by a new connection while an old event for it is still queued?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnId(u64);

/// What an application does on the loop. Callbacks must not block.
pub trait Handler {
    /// A connection was accepted.
    fn on_open(&mut self, _conn: ConnId, _out: &mut Outbox) {}
    /// `conn` sent `data` (one read's worth).
    fn on_data(&mut self, conn: ConnId, data: &[u8], out: &mut Outbox);
    /// `conn` is closing.
    fn on_close(&mut self, _conn: ConnId, _out: &mut Outbox) {}
}

/// How a handler sends bytes to a connection without blocking.
pub struct Outbox {
    // What does it need to reach the connections' output buffers?
}

impl Outbox {
    pub fn send(&mut self, to: ConnId, data: &[u8]) {
        todo!("queue data for `to`, writing what the socket takes now")
    }
}

/// Sends every byte back to its sender.
pub struct Echo;

impl Handler for Echo {
    fn on_data(&mut self, conn: ConnId, data: &[u8], out: &mut Outbox) {
        todo!()
    }
}

/// Sends every chunk to every other connection.
#[derive(Default)]
pub struct Broadcast {}

impl Handler for Broadcast {
    fn on_data(&mut self, conn: ConnId, data: &[u8], out: &mut Outbox) {
        todo!()
    }
}

/// The loop: one epoll instance, the listener, the connections.
pub struct EventLoop<H> {
    epoll: OwnedFd,
    listener: TcpListener,
    handler: H,
}

impl<H: Handler> EventLoop<H> {
    pub fn new(listener: TcpListener, handler: H) -> io::Result<EventLoop<H>> {
        todo!("epoll_create1, register the listener")
    }

    pub fn run(&mut self) -> io::Result<()> {
        todo!("epoll_wait, then accept or serve each event")
    }
}
