//! # Lab 14: a UDP echo server (and its client, in `client.rs`)
//!
//! ```text
//! udp_echo_server [ADDR]        (default 127.0.0.1:7014)
//! ```
//!
//! Write a UDP echo server with `std::net::UdpSocket`:
//!
//! - Bind ADDR (the first argument). This part is done: the starter binds,
//!   prints exactly `listening on <actual address>` to stdout, and then waits
//!   forever. Log to stderr only from then on.
//! - Receive datagrams in a loop (`recv_from`) and send each one back, as one
//!   datagram with exactly the same bytes, to the address it came from
//!   (`send_to`). Every client is answered at its own address.
//! - Use one receive buffer of 65,536 bytes, allocated once and reused: a UDP
//!   datagram carries at most 65,507 bytes of data over IPv4, and a buffer
//!   that is too small silently cuts the datagram short.
//! - An empty datagram (0 bytes) is a datagram like any other: echo it.
//! - An error from `recv_from` or `send_to` concerns one datagram: log it to
//!   stderr and carry on. The server never exits because of a client.
//!
//! Run the grader with `cargo test` in this folder; the README explains each
//! test.

#![allow(unused)]

use std::io;
use std::net::{SocketAddr, UdpSocket};

/// The address when none is given on the command line.
const DEFAULT_ADDR: &str = "127.0.0.1:7014";

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEFAULT_ADDR.to_string());
    let socket = match UdpSocket::bind(&addr) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("udp_echo_server: cannot bind {addr}: {e}");
            std::process::exit(1);
        }
    };
    let local = socket.local_addr().expect("a bound socket has an address");
    println!("listening on {local}");

    // TODO: receive each datagram and send it back to its sender.
    // Until then the server waits forever (without using the CPU).
    loop {
        std::thread::park();
    }
}
