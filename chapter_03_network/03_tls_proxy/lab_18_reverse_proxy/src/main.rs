//! # Lab 18: a reverse proxy
//!
//! ```text
//! reverse_proxy [ADDR] UPSTREAM [--timeout-ms N]
//!     ADDR       where to listen (default 127.0.0.1:8000)
//!     UPSTREAM   the server behind the proxy: http://host:port (or host:port)
//!     --timeout-ms N   how long to wait for the upstream's response head
//!                      (default 30000)
//! ```
//!
//! Write an HTTP/1.1 reverse proxy: every request a client sends to ADDR is
//! forwarded to UPSTREAM, and the upstream's answer goes back to the client.
//!
//! - Listening and the arguments are done: the starter parses them, binds,
//!   prints exactly `listening on <actual address>` to stdout, and then
//!   waits forever. Log to stderr only from then on.
//! - Forward the method, the path and the query exactly as received, the
//!   headers and the body. Return the upstream's status, headers and body.
//! - The client's `Host` header goes to the upstream unchanged.
//! - Add `X-Forwarded-For: <client ip>` (when the request already has one,
//!   append `, <client ip>` to it) and `X-Forwarded-Proto: http`.
//! - Hop-by-hop headers describe one connection, not the message: remove
//!   them in both directions (request and response): `Connection`,
//!   `Keep-Alive`, `Proxy-Connection`, `Proxy-Authenticate`,
//!   `Proxy-Authorization`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`,
//!   and every header that the `Connection` header names.
//! - The upstream refuses the connection, or drops it before answering:
//!   answer `502 Bad Gateway`. No response head within `--timeout-ms`:
//!   answer `504 Gateway Timeout`.
//! - Stream: a body flows through in pieces as it arrives, in both
//!   directions; never hold a whole body in memory.
//! - One slow upstream request never blocks the others; a client that
//!   disconnects never brings the proxy down.
//!
//! Suggested tools: hyper's server (`hyper::server::conn::http1` with
//! `hyper_util::rt::TokioIo`) and hyper-util's pooled client
//! (`hyper_util::client::legacy::Client`). Run the grader with `cargo test`
//! in this folder; the README explains each test.

#![allow(unused)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;

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

    // TODO: accept connections, serve HTTP/1.1 on each in its own task, and
    // forward every request to `config.upstream`. Until then the proxy waits
    // forever (without using the CPU).
    std::future::pending::<()>().await;
}
