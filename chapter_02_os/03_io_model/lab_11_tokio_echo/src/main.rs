//! # Lab 11: an async echo server with tokio, one task per connection
//!
//! ```text
//! tokio_echo [ADDR]        (default 127.0.0.1:7011)
//! ```
//!
//! Write the echo server of lab 09 again, on tokio:
//!
//! - Listen on ADDR (the first argument). This part is done: the starter
//!   binds, prints exactly `listening on <actual address>` to stdout, and
//!   then waits forever. Log to stderr only from then on.
//! - Accept connections in a loop and serve each one in its own task
//!   (`tokio::spawn`), never on a thread of its own: the number of OS
//!   threads must not grow with the number of connections.
//! - Serving: write back every byte as soon as it is read, until the client
//!   closes its sending side; then close the connection. A write may be
//!   partial: send every byte (`write_all`, or `tokio::io::copy`).
//! - An error on one connection ends that connection only (log it).
//! - On SIGINT or SIGTERM (`tokio::signal`): stop accepting and exit with
//!   code 0, promptly, even while idle clients are still connected.
//!
//! Run the grader with `cargo test` in this folder; the README explains each
//! test.

#![allow(unused)]

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The address when none is given on the command line.
const DEFAULT_ADDR: &str = "127.0.0.1:7011";

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEFAULT_ADDR.to_string());
    let listener = match TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tokio_echo: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    let local = listener
        .local_addr()
        .expect("a bound listener has an address");
    println!("listening on {local}");

    // TODO: accept connections and spawn a task for each; handle SIGINT and
    // SIGTERM. Until then the server waits forever (without using the CPU).
    std::future::pending::<()>().await;
}
