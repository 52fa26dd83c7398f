//! # Lab 09: a blocking echo server, one thread per connection
//!
//! ```text
//! blocking_echo [ADDR]        (default 127.0.0.1:7009)
//! ```
//!
//! Write a TCP echo server with `std::net` and blocking calls only:
//!
//! - Listen on ADDR (the first argument). This part is done: the starter
//!   binds, prints exactly `listening on <actual address>` to stdout, and
//!   then waits forever. Log to stderr only from then on.
//! - Accept connections in a loop and serve each one on its own thread.
//! - Serving: read bytes, write back exactly those bytes, as soon as they are
//!   read (no waiting for a newline), until the client closes its sending
//!   side (`read` returns 0); then close the connection. The thread exits.
//! - `write` may write less than you asked: send every byte.
//! - Set `TCP_NODELAY` on each connection (the README says why).
//! - An error on one connection (the client reset or vanished) ends that
//!   connection only; log it to stderr.
//! - An error from `accept` (e.g. `EMFILE`: too many open files) must not
//!   end the server: log it, wait a moment, and try again.
//!
//! Run the grader with `cargo test` in this folder; the README explains each
//! test.

#![allow(unused)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

/// The address when none is given on the command line.
const DEFAULT_ADDR: &str = "127.0.0.1:7009";

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEFAULT_ADDR.to_string());
    let listener = match TcpListener::bind(&addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("blocking_echo: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    let local = listener
        .local_addr()
        .expect("a bound listener has an address");
    println!("listening on {local}");

    // TODO: accept connections and serve each on its own thread.
    // Until then the server waits forever (without using the CPU).
    loop {
        thread::park();
    }
}
