//! # Lab 12: epoll by hand
//!
//! `epoll_echo [ADDR] [echo|broadcast]` (defaults `127.0.0.1:8080` and
//! `echo`) is the echo server of lab 10 without mio: raw `epoll_create1`,
//! `epoll_ctl` and `epoll_wait` through `libc`, on one thread, behind a
//! small event loop that applications plug into with a [`Handler`]:
//!
//! - `echo` sends every byte back to the client that sent it;
//! - `broadcast` sends every chunk a client sends to every *other* client.
//!
//! ## Layout
//!
//! | file | job |
//! |---|---|
//! | `main.rs` | arguments, bind, the `listening on` line, pick a handler |
//! | `event_loop.rs` | [`EventLoop`], [`Handler`], [`Outbox`], [`ConnId`]: sockets, epoll, buffers, closing |
//! | `handlers.rs` | [`Echo`] and [`Broadcast`], which never see a socket |
//! | `sys.rs` | safe wrappers over the system calls; all the `unsafe` lives there |
//!
//! `event_loop.rs` opens with the four rules that keep it clear of the bugs
//! of a public epoll framework; the grader tests each of them.
//!
//! [`Handler`]: event_loop::Handler
//! [`Outbox`]: event_loop::Outbox
//! [`ConnId`]: event_loop::ConnId
//! [`Echo`]: handlers::Echo
//! [`Broadcast`]: handlers::Broadcast

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;

mod event_loop;
mod handlers;
mod sys;

use event_loop::{EventLoop, Handler};
use handlers::{Broadcast, Echo};

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

    // std binds and listens; everything after that is epoll by hand.
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

    let result = match mode {
        "broadcast" => serve(listener, Broadcast::default()),
        _ => serve(listener, Echo),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("epoll_echo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `handler` on a new event loop; generic, so each handler's calls are
/// static (no `dyn` on the hot path).
fn serve<H: Handler>(listener: TcpListener, handler: H) -> io::Result<()> {
    EventLoop::new(listener, handler)?.run()
}
