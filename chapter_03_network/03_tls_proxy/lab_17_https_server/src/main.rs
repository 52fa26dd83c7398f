//! # Lab 17: the hello service over HTTPS, with rustls
//!
//! ```text
//! https_server [ADDR] CERT_PEM KEY_PEM [STATIC_DIR] [--handshake-timeout-ms N]
//!   ADDR       default 127.0.0.1:8443
//!   STATIC_DIR default public
//!   N          default 10000
//! ```
//!
//! Serve the hello service of labs 15 and 16 over TLS (1.3 and 1.2) with
//! rustls and its `ring` crypto provider:
//!
//! - Routes: `GET /` -> 200 `hello, world\n`; `GET /hello/<name>` -> 200
//!   `hello, <name>\n` (one path segment, percent-decoded); `POST /echo` ->
//!   200 with the request body and its Content-Type (or
//!   `application/octet-stream`); text answers are `text/plain;
//!   charset=utf-8`. `GET /static/<path>` serves STATIC_DIR. Anything else
//!   -> 404. (axum and lab 16's router do all of this: reuse them.)
//! - At startup, before anything else TLS: install rustls's ring provider
//!   (`rustls::crypto::ring::default_provider().install_default()`).
//! - Read the certificate chain from CERT_PEM: *every* certificate in the
//!   file, leaf first, then the intermediates (`CertificateDer::pem_file_iter`
//!   from `rustls_pki_types::pem::PemObject`), and the private key from
//!   KEY_PEM (PKCS#8, SEC1 or PKCS#1: `PrivateKeyDer::from_pem_file`). A file
//!   that cannot be read or holds nothing usable: print one line to stderr
//!   naming the file, and exit with a non-zero code, before listening.
//! - Build a `rustls::ServerConfig` with that chain and key, and ALPN
//!   advertising `http/1.1` (`alpn_protocols`).
//! - Accept TCP connections in a loop, and run each TLS handshake *off* that
//!   loop, in a task of its own, under a timeout of N milliseconds
//!   (`--handshake-timeout-ms`): a client that connects and says nothing
//!   must block nobody, and is disconnected when its time is up.
//! - A failed handshake (plain HTTP sent to this port, a client that does not
//!   trust the certificate, a timeout) is logged on stderr and ends that
//!   connection only: the server keeps serving.
//! - After a handshake, serve HTTP/1.1 on the encrypted stream (hyper's
//!   `http1::Builder::serve_connection`, with the axum router as the service).
//!
//! Parsing the arguments, binding and the `listening on` line are done
//! below. Run the grader with `cargo test` in this folder; the README
//! explains each test, and how to make a certificate by hand.

#![allow(unused)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// The address when none is given on the command line.
const DEFAULT_ADDR: &str = "127.0.0.1:8443";

/// The static directory when none is given.
const DEFAULT_STATIC_DIR: &str = "public";

/// How long a client may take to finish its handshake, by default.
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The command line, parsed.
struct Args {
    addr: String,
    cert: PathBuf,
    key: PathBuf,
    static_dir: PathBuf,
    handshake_timeout: Duration,
}

/// Parses `[ADDR] CERT_PEM KEY_PEM [STATIC_DIR] [--handshake-timeout-ms N]`.
/// With three positional arguments, the first is ADDR when it parses as a
/// socket address, else they are CERT_PEM KEY_PEM STATIC_DIR.
fn parse_args() -> Result<Args, String> {
    let mut positional = Vec::new();
    let mut handshake_timeout = DEFAULT_HANDSHAKE_TIMEOUT;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--handshake-timeout-ms" {
            let n = args
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or("--handshake-timeout-ms needs a number of milliseconds")?;
            handshake_timeout = Duration::from_millis(n);
        } else {
            positional.push(arg);
        }
    }
    let first_is_addr = positional
        .first()
        .is_some_and(|a| a.parse::<SocketAddr>().is_ok());
    let (addr, rest) = match positional.len() {
        4 => (positional[0].clone(), &positional[1..]),
        3 if first_is_addr => (positional[0].clone(), &positional[1..]),
        2 | 3 => (DEFAULT_ADDR.to_string(), &positional[..]),
        _ => return Err(
            "usage: https_server [ADDR] CERT_PEM KEY_PEM [STATIC_DIR] [--handshake-timeout-ms N]"
                .into(),
        ),
    };
    Ok(Args {
        addr,
        cert: PathBuf::from(&rest[0]),
        key: PathBuf::from(&rest[1]),
        static_dir: PathBuf::from(rest.get(2).map_or(DEFAULT_STATIC_DIR, String::as_str)),
        handshake_timeout,
    })
}

#[tokio::main]
async fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("https_server: {e}");
        std::process::exit(2);
    });

    // TODO: install the ring provider, load the chain and the key (exit
    // with a message naming the file when that fails), build the
    // ServerConfig with ALPN, and wrap it in a tokio_rustls::TlsAcceptor.

    let listener = match TcpListener::bind(&args.addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("https_server: cannot listen on {}: {e}", args.addr);
            std::process::exit(1);
        }
    };
    let local = listener
        .local_addr()
        .expect("a bound listener has an address");
    println!("listening on {local}");

    // TODO: accept connections; for each, spawn a task that runs the
    // handshake under the timeout and then serves HTTP/1.1 on the TLS
    // stream. Until then the server waits forever (without using the CPU).
    std::future::pending::<()>().await;
}
