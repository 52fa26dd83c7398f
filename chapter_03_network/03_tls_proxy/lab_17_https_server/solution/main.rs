//! # Lab 17: the hello service over HTTPS, with rustls (reference solution)
//!
//! ```text
//! https_server [ADDR] CERT_PEM KEY_PEM [STATIC_DIR] [--handshake-timeout-ms N]
//! ```
//!
//! ## Layout
//!
//! - `main.rs` (this file): arguments, startup, the accept loop, and one
//!   task per connection that runs the handshake and then HTTP.
//! - `tls.rs`: reading the chain and the key from PEM, building the
//!   `rustls::ServerConfig` (with ALPN).
//! - `routes.rs`: the axum router of the hello service; it knows nothing of
//!   TLS.
//!
//! ## The TLS 1.3 handshake, in this code's terms
//!
//! 1. `listener.accept()` returns a plain TCP stream. Nothing is encrypted
//!    yet; `TlsAcceptor::accept(tcp)` takes it over and waits for the
//!    client's first flight:
//!    **ClientHello**: the TLS versions and cipher suites it supports, a
//!    key share (an ephemeral X25519 public key, say), the server name it
//!    wants (SNI, `localhost`) and the application protocols it speaks
//!    (ALPN, `http/1.1`).
//! 2. rustls answers in **one flight**: **ServerHello** (its own key share;
//!    both sides now compute the same secret by Diffie-Hellman, and
//!    everything after this message is encrypted), **EncryptedExtensions**
//!    (the ALPN choice: `http/1.1`, from `config.alpn_protocols`),
//!    **Certificate** (the chain `tls::load_chain` read, leaf first),
//!    **CertificateVerify** (a signature over the handshake so far, made
//!    with the key `tls::load_key` read: the proof that we own the leaf) and
//!    **Finished** (a MAC over the whole transcript).
//! 3. The client checks the chain up to a root it trusts (it needs our
//!    intermediate for that), the name in the leaf, the signature, and
//!    answers with its own **Finished**. When that arrives, the `accept`
//!    future resolves to a `TlsStream`: one round trip after the
//!    ClientHello. (TLS 1.2 needs two: the key exchange and the `Finished`
//!    messages take a round trip each.)
//! 4. If the client does not like our certificate it sends an **alert**
//!    (`unknown_ca`, `bad_certificate`) instead of Finished, and `accept`
//!    fails with "received fatal alert". If the bytes are not TLS at all
//!    (plain HTTP on this port), rustls fails on the first record. Either
//!    way that is one connection's problem: log it and drop it.
//!
//! From then on, hyper reads and writes HTTP/1.1 on the `TlsStream` as if it
//! were TCP; rustls encrypts and decrypts records underneath.
//!
//! ## Why the handshake runs in its own task, under a timeout
//!
//! The handshake waits for the client. Awaited in the accept loop, one
//! client that connects and says nothing would stop the loop: no one else
//! gets accepted. So the loop only accepts and spawns; each task does its
//! own handshake. And each handshake has a deadline, because a task per
//! silent client is still a socket and some memory each: without one, a
//! few thousand idle connections (a "slowloris" attack) exhaust the
//! server's file descriptors. Production servers do the same (nginx's
//! `client_header_timeout` covers the handshake; Go's `http.Server` has
//! `ReadHeaderTimeout`).
//!
//! Idle keep-alive connections after the handshake are not timed out here;
//! a production server would add a header-read timeout
//! (`http1::Builder::header_read_timeout`) as well.

mod routes;
mod tls;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tower::Service;

/// The address when none is given on the command line.
const DEFAULT_ADDR: &str = "127.0.0.1:8443";

/// The static directory when none is given.
const DEFAULT_STATIC_DIR: &str = "public";

/// How long a client may take to finish its handshake, by default: ample
/// for a real client (a handshake takes one or two round trips), short
/// enough that silent connections do not pile up.
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

/// Prints one line to stderr and exits with `code`: the way a server
/// refuses to start, before it has printed `listening on`.
fn die(msg: impl std::fmt::Display, code: i32) -> ! {
    eprintln!("https_server: {msg}");
    std::process::exit(code)
}

#[tokio::main]
async fn main() {
    let args = parse_args().unwrap_or_else(|e| die(e, 2));

    // The course builds rustls without a default crypto provider, so we
    // choose one, once, before any TLS configuration is built. Err only
    // means a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();

    // Load the identity before binding: a server that cannot do TLS should
    // fail at startup, loudly, not accept connections it cannot serve.
    let chain = tls::load_chain(&args.cert).unwrap_or_else(|e| die(e, 1));
    let key = tls::load_key(&args.key).unwrap_or_else(|e| die(e, 1));
    let config = tls::server_config(chain, key).unwrap_or_else(|e| {
        die(
            format!(
                "the key in {} does not fit the certificate in {}: {e}",
                args.key.display(),
                args.cert.display()
            ),
            1,
        )
    });
    // A TlsAcceptor is an `Arc<ServerConfig>`: cloning it per connection is
    // a reference-count increment.
    let acceptor = TlsAcceptor::from(config);
    let app = routes::router(&args.static_dir);

    let listener = match TcpListener::bind(&args.addr).await {
        Ok(l) => l,
        Err(e) => die(format!("cannot listen on {}: {e}", args.addr), 1),
    };
    let local = listener
        .local_addr()
        .expect("a bound listener has an address");
    println!("listening on {local}");

    accept_loop(listener, acceptor, app, args.handshake_timeout).await;
}

/// Accepts connections forever and gives each one to its own task. It
/// awaits nothing but `accept`, so no client can hold it up.
async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Router,
    handshake_timeout: Duration,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors (EMFILE), or a connection reset
                // while still in the backlog: not fatal. Pause a moment so
                // that a lasting EMFILE does not turn into a busy loop.
                eprintln!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            match handshake(&acceptor, tcp, handshake_timeout).await {
                Ok(tls) => serve_http(tls, peer, app).await,
                // A failed handshake is routine on the open internet
                // (scanners, old clients, plain HTTP): log it, and the
                // task ends, which closes the socket.
                Err(e) => eprintln!("[{peer}] handshake failed: {e}"),
            }
        });
    }
}

/// Runs the server side of the TLS handshake on `tcp`, giving up after
/// `limit`. A timeout is reported as an `io::Error` like the others.
async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    limit: Duration,
) -> io::Result<TlsStream<TcpStream>> {
    match tokio::time::timeout(limit, acceptor.accept(tcp)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no complete handshake within {limit:?}"),
        )),
    }
}

/// Serves HTTP/1.1 (keep-alive, pipelining) on an established TLS stream
/// until the client closes it.
async fn serve_http(tls: TlsStream<TcpStream>, peer: SocketAddr, app: Router) {
    // ALPN agreed on http/1.1 (or the client did not use ALPN, which means
    // the same thing), so the plain HTTP/1 connection builder is right.
    // hyper wants its own I/O traits and a hyper `Service`: `TokioIo`
    // adapts the stream, and `service_fn` calls the tower `Router` with
    // each request.
    let service = hyper::service::service_fn(move |request| app.clone().call(request));
    if let Err(e) = http1::Builder::new()
        .serve_connection(TokioIo::new(tls), service)
        .await
    {
        // A client that vanished mid-request, a malformed request: this
        // connection only.
        eprintln!("[{peer}] connection error: {e}");
    }
}
