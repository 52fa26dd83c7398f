//! # Lab 14: a UDP echo client with a timeout and retries
//!
//! ```text
//! udp_echo_client ADDR MESSAGE [--timeout-ms N] [--retries N]
//!                              (defaults: --timeout-ms 1000 --retries 3)
//! ```
//!
//! UDP promises nothing: a datagram can be lost, and nobody tells you. So a
//! client waits a while for the answer and, if none comes, asks again:
//!
//! - Send MESSAGE (its UTF-8 bytes, nothing added) as one datagram to ADDR.
//! - Wait up to `--timeout-ms` milliseconds for the echo. A datagram counts
//!   as the echo only if it comes from ADDR and holds exactly MESSAGE; ignore
//!   anything else (from another address, or other bytes) and keep waiting
//!   until that attempt's time is up.
//! - No echo in time: send MESSAGE again, up to `--retries` more times (so
//!   1 + retries datagrams at most, each the same MESSAGE).
//! - Echo received: print it to stdout followed by a newline, exit 0, and
//!   send nothing more.
//! - No echo after the last attempt: print a message saying so to stderr and
//!   exit 1. Bad arguments: a usage message on stderr, exit 2.
//!
//! The argument parsing is done; the talking is yours.

#![allow(unused)]

use std::io::{self, Write};
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How long to wait for each echo unless `--timeout-ms` says otherwise.
const DEFAULT_TIMEOUT_MS: u64 = 1000;

/// How many times to send again unless `--retries` says otherwise.
const DEFAULT_RETRIES: u32 = 3;

const USAGE: &str = "usage: udp_echo_client ADDR MESSAGE [--timeout-ms N] [--retries N]";

/// The parsed command line.
struct Args {
    server: SocketAddr,
    message: String,
    timeout: Duration,
    retries: u32,
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("udp_echo_client: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    // TODO: bind a socket, send the message, wait for the echo with a
    // timeout, retry, print the echo (exit 0) or give up (exit 1).
    eprintln!("udp_echo_client: not implemented yet");
    ExitCode::from(1)
}

/// Parses `ADDR MESSAGE [--timeout-ms N] [--retries N]` (flags anywhere).
fn parse_args(args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut positional = Vec::new();
    let mut timeout_ms = DEFAULT_TIMEOUT_MS;
    let mut retries = DEFAULT_RETRIES;
    let mut args = args;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--timeout-ms" => {
                let v = args.next().ok_or("--timeout-ms needs a value")?;
                timeout_ms = v
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or(format!("--timeout-ms: not a positive number: {v:?}"))?;
            }
            "--retries" => {
                let v = args.next().ok_or("--retries needs a value")?;
                retries = v
                    .parse()
                    .map_err(|_| format!("--retries: not a number: {v:?}"))?;
            }
            _ => positional.push(arg),
        }
    }
    let [addr, message] = <[String; 2]>::try_from(positional)
        .map_err(|p| format!("expected ADDR and MESSAGE, got {} arguments", p.len()))?;
    let server = addr
        .to_socket_addrs()
        .map_err(|e| format!("bad address {addr:?}: {e}"))?
        .next()
        .ok_or(format!("address {addr:?} resolves to nothing"))?;
    Ok(Args {
        server,
        message,
        timeout: Duration::from_millis(timeout_ms),
        retries,
    })
}
