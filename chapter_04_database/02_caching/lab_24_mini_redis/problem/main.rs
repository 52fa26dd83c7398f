//! # Lab 24: a Redis-compatible server
//!
//! ```text
//! mini_redis [ADDR] [--replicaof HOST:PORT]        (default 127.0.0.1:6380)
//! ```
//!
//! Speak RESP2 to any Redis client (`redis-cli`, the `redis` crate, `nc`):
//! strings with expiry, a few list commands, Redis's own error replies,
//! and, with `--replicaof`, follow a real `redis-server` as its replica.
//! The README's Spec lists every command and reply.
//!
//! This part is done: parsing the arguments, binding ADDR, and printing
//! exactly `listening on <actual address>` to stdout. Log to stderr only
//! from then on. Split your server into modules as you like (`mod resp;`
//! for the protocol is a good start).
//!
//! Run the grader with `cargo test` in this folder; the README explains each
//! test.

#![allow(unused)]

use tokio::net::TcpListener;

/// The address when none is given on the command line.
const DEFAULT_ADDR: &str = "127.0.0.1:6380";

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut addr = None;
    let mut master: Option<String> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--replicaof" => match args.next() {
                Some(m) => master = Some(m),
                None => usage("--replicaof needs HOST:PORT"),
            },
            _ if addr.is_none() && !a.starts_with("--") => addr = Some(a),
            _ => usage(&format!("unexpected argument {a:?}")),
        }
    }
    let addr = addr.unwrap_or_else(|| DEFAULT_ADDR.to_string());
    let listener = match TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mini_redis: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    let local = listener
        .local_addr()
        .expect("a bound listener has an address");
    println!("listening on {local}");

    // TODO: accept connections and serve each one; with `master`, follow it
    // as a replica. Until then the server waits forever (without using the
    // CPU).
    std::future::pending::<()>().await;
}

fn usage(why: &str) -> ! {
    eprintln!("mini_redis: {why}\nusage: mini_redis [ADDR] [--replicaof HOST:PORT]");
    std::process::exit(2);
}
