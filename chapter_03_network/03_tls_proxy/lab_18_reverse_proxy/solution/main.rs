//! # Lab 18: a reverse proxy (reference solution)
//!
//! ```text
//! reverse_proxy [ADDR] UPSTREAM [--timeout-ms N]
//! ```
//!
//! ## What a reverse proxy is for
//!
//! A reverse proxy stands in front of one or more servers and speaks for
//! them: clients connect to it, and it forwards each request to an upstream
//! and relays the answer. nginx, HAProxy, Envoy and Caddy earn their living
//! this way: they terminate TLS, absorb slow clients (thousands of idle or
//! trickling connections cost the proxy a few KiB each, not an application
//! thread), keep a small pool of warm connections to the application,
//! balance load (lab 19), add headers the application needs to know who the
//! client was (`X-Forwarded-For`), and answer 502/504 when the application
//! is down or stuck instead of letting the client hang.
//!
//! ## Design
//!
//! - [`main`]: one tokio task per client connection; each runs hyper's
//!   HTTP/1.1 server (`hyper::server::conn::http1`) with a service that
//!   calls [`proxy::Proxy::forward`]. hyper does the parsing, keep-alive,
//!   pipelining and body framing; the lab is about what a proxy does *with*
//!   the messages.
//! - `proxy`: rewrites the request (URI for the upstream, hop-by-hop
//!   headers out, `X-Forwarded-*` in), sends it through hyper-util's pooled
//!   client under a timeout, and maps failures to 502 and 504.
//! - `hop`: the hop-by-hop header rule, a pure function with unit tests.
//!
//! ## Why hop-by-hop headers are per connection
//!
//! A proxy holds two connections per request, and each has its own
//! framing and lifetime. `Connection: close` from the client closes the
//! client's connection, not the pooled one to the upstream;
//! `Transfer-Encoding: chunked` describes how *this* hop framed the body.
//! Forwarding them would break the other connection (see `hop`).
//!
//! ## Why streaming matters
//!
//! A proxy that reads a whole body before forwarding it needs memory for
//! every body in flight (a thousand 100 MB uploads is 100 GB), adds the full
//! transfer time as latency, and breaks anything that streams: a download
//! the client wants to start playing, server-sent events, a response whose
//! second half the upstream produces only later. Here bodies are
//! `hyper::body::Incoming` streams handed from one connection to the other:
//! each chunk is written on as soon as it is read, and back-pressure flows
//! both ways (nginx buffers by default, `proxy_buffering off` streams; Envoy
//! streams).
//!
//! ## Concurrency and failures
//!
//! Every client connection is its own task and every forwarded request its
//! own upstream connection from the pool, so a request stuck on a slow
//! upstream holds only its own task. A client that vanishes makes hyper
//! return an error from that connection's task, which is logged; nothing
//! else notices.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::http::uri::Authority;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

mod hop;
mod proxy;

use proxy::Proxy;

/// The listen address when none is given on the command line.
const DEFAULT_ADDR: &str = "127.0.0.1:8000";

/// How long to wait for the upstream's response head unless `--timeout-ms`
/// says otherwise.
const DEFAULT_TIMEOUT_MS: u64 = 30_000;

/// What the command line asks for.
struct Config {
    /// Where to listen.
    listen: String,
    /// The upstream as `host:port` (an `http://` prefix removed).
    upstream: String,
    /// How long to wait for the upstream's response head.
    timeout: Duration,
}

/// Parses `[ADDR] UPSTREAM [--timeout-ms N]`: one positional argument is
/// the upstream, two are the listen address and the upstream.
fn parse_args(args: impl Iterator<Item = String>) -> Result<Config, String> {
    let mut positional = Vec::new();
    let mut timeout_ms = DEFAULT_TIMEOUT_MS;
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let value = if arg == "--timeout-ms" {
            Some(args.next().ok_or("--timeout-ms needs a value")?)
        } else {
            arg.strip_prefix("--timeout-ms=").map(str::to_string)
        };
        match value {
            Some(v) => {
                timeout_ms = v
                    .parse()
                    .map_err(|_| format!("--timeout-ms: not a number of milliseconds: {v:?}"))?
            }
            None if arg.starts_with("--") => return Err(format!("unknown option {arg}")),
            None => positional.push(arg),
        }
    }
    let (listen, upstream) = match positional.len() {
        1 => (DEFAULT_ADDR.to_string(), positional.remove(0)),
        2 => (positional.remove(0), positional.remove(0)),
        _ => return Err("expected [ADDR] UPSTREAM".to_string()),
    };
    if upstream.starts_with("https://") {
        return Err(format!("{upstream}: only http:// upstreams are supported"));
    }
    let upstream = upstream.strip_prefix("http://").unwrap_or(&upstream);
    let upstream = upstream.trim_end_matches('/').to_string();
    if upstream.is_empty() || upstream.contains('/') {
        return Err(format!(
            "{upstream:?}: the upstream must be http://host:port"
        ));
    }
    Ok(Config {
        listen,
        upstream,
        timeout: Duration::from_millis(timeout_ms),
    })
}

#[tokio::main]
async fn main() {
    let config = match parse_args(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("reverse_proxy: {e}");
            eprintln!("usage: reverse_proxy [ADDR] UPSTREAM [--timeout-ms N]");
            std::process::exit(2);
        }
    };
    let upstream: Authority = match config.upstream.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("reverse_proxy: {:?}: not a host:port: {e}", config.upstream);
            std::process::exit(2);
        }
    };
    let listener = match TcpListener::bind(&config.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("reverse_proxy: cannot listen on {}: {e}", config.listen);
            std::process::exit(1);
        }
    };
    let local = listener
        .local_addr()
        .expect("a bound listener has an address");
    println!("listening on {local}");
    eprintln!(
        "reverse_proxy: forwarding to http://{upstream} (response head timeout {:?})",
        config.timeout
    );

    let proxy = Arc::new(Proxy::new(upstream, config.timeout));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // EMFILE and friends: this connection is lost, the listener
                // is fine. A short pause keeps a persistent error (out of
                // descriptors) from turning into a busy loop.
                eprintln!("reverse_proxy: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Streamed bodies go out in small writes; do not let Nagle hold
        // them back waiting for an ACK.
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve(stream, peer, Arc::clone(&proxy)));
    }
}

/// Serves one client connection: hyper reads requests off it one after the
/// other (keep-alive) and calls the service for each.
async fn serve(stream: tokio::net::TcpStream, peer: SocketAddr, proxy: Arc<Proxy>) {
    let service = service_fn(move |req| {
        let proxy = Arc::clone(&proxy);
        async move { Ok::<_, std::convert::Infallible>(proxy.forward(req, peer).await) }
    });
    let result = http1::Builder::new()
        // hyper's default limit on reading a request head (30 s) needs a
        // timer to run; a client that never finishes its head is dropped.
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = result {
        // A client that disconnects mid-request, sends garbage, or resets:
        // its own connection ends, the proxy goes on.
        eprintln!("reverse_proxy: connection from {peer}: {e}");
    }
}
