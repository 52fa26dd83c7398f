//! # Lab 19: a load balancer
//!
//! ```text
//! load_balancer [ADDR] UPSTREAM... [--policy round-robin|least-connections]
//!               [--health-interval-ms N] [--health-path PATH]
//!     ADDR        where to listen (default 127.0.0.1:8080); with a single
//!                 positional argument, that argument is the UPSTREAM
//!     UPSTREAM    one or more servers behind the balancer: http://host:port
//!                 (or host:port), in the order that round robin follows
//!     --policy               round-robin (default) or least-connections
//!     --health-interval-ms   time between health probes (default 1000)
//!     --health-path          what a probe asks for (default /health)
//! ```
//!
//! Write an HTTP/1.1 load balancer: a reverse proxy (lab 18) with several
//! upstreams behind it.
//!
//! - Listening and the arguments are done: the starter parses them, binds,
//!   prints exactly `listening on <actual address>` to stdout, and then
//!   waits forever. Log to stderr only from then on.
//! - Proxy every request like lab 18: method, path and query exactly as
//!   received, headers (the client's `Host` unchanged), body; the
//!   upstream's status, headers and body back. Add
//!   `X-Forwarded-For: <client ip>` (appended as `, <client ip>` to an
//!   existing one) and `X-Forwarded-Proto: http`. Remove hop-by-hop headers
//!   in both directions (`Connection`, `Keep-Alive`, `Proxy-Connection`,
//!   `Proxy-Authenticate`, `Proxy-Authorization`, `TE`, `Trailer`,
//!   `Transfer-Encoding`, `Upgrade`, and every header `Connection` names).
//! - Choose an upstream per request, among the healthy ones only:
//!   - `round-robin`: in turn, in command-line order (a, b, c, a, b, c...);
//!   - `least-connections`: the one with the fewest requests in flight
//!     through the balancer now (a request is in flight from the moment it
//!     is sent upstream until its response body has been passed on, or the
//!     client went away); ties go to the first in command-line order (or in
//!     turn).
//! - Active health checks: every upstream starts healthy. Every
//!   `--health-interval-ms`, send `GET <health-path>` to every upstream. A
//!   2xx answer marks it healthy; anything else (a connection error, a
//!   non-2xx status, no answer within the interval) marks it unhealthy. One
//!   failed probe takes it out, one good probe puts it back.
//! - No healthy upstream: answer `503 Service Unavailable`.
//! - Retry: when the connection to the chosen upstream fails before any
//!   response head (refused, closed or reset), and the method is idempotent
//!   (GET, HEAD, PUT, DELETE, OPTIONS, TRACE), send the request once more
//!   to another healthy upstream. A POST or PATCH that fails that way gets
//!   `502 Bad Gateway` and never goes to a second upstream: the first may
//!   already have acted on it. A failed retry is a 502 too.
//! - One slow upstream never blocks other requests; clients that vanish
//!   never bring the balancer down.
//!
//! Suggested tools: hyper's server (`hyper::server::conn::http1` with
//! `hyper_util::rt::TokioIo`), hyper-util's pooled client
//! (`hyper_util::client::legacy::Client`), atomics for the shared state
//! (`AtomicBool`, `AtomicUsize`), one `tokio::time::interval` task per
//! upstream for the probes. Run the grader with `cargo test` in this
//! folder; the README explains each test.

#![allow(unused)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use tokio::net::TcpListener;

/// The listen address when none is given on the command line.
const DEFAULT_ADDR: &str = "127.0.0.1:8080";

/// How the balancer picks an upstream for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Policy {
    /// In turn, in command-line order.
    RoundRobin,
    /// The upstream with the fewest requests in flight.
    LeastConnections,
}

/// The command line.
#[derive(Debug, Parser)]
#[command(name = "load_balancer", about = "an HTTP/1.1 load balancer")]
struct Args {
    /// [ADDR] UPSTREAM...: the listen address (optional), then the
    /// upstreams as http://host:port or host:port.
    #[arg(required = true, value_name = "ADDR_AND_UPSTREAMS")]
    positional: Vec<String>,
    /// How to choose an upstream.
    #[arg(long, value_enum, default_value = "round-robin")]
    policy: Policy,
    /// Milliseconds between health probes of each upstream.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    health_interval_ms: u64,
    /// The path a health probe asks for.
    #[arg(long, default_value = "/health")]
    health_path: String,
}

/// `host:port` from `http://host:port` or `host:port`.
fn parse_upstream(arg: &str) -> Result<String, String> {
    let authority = arg.strip_prefix("http://").unwrap_or(arg);
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    if authority.is_empty() || authority.contains('/') || !authority.contains(':') {
        return Err(format!(
            "bad upstream {arg:?}: expected http://host:port or host:port"
        ));
    }
    Ok(authority.to_string())
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    // One positional argument is an upstream; with more, the first is ADDR.
    let (listen, upstreams) = match args.positional.as_slice() {
        [only] => (DEFAULT_ADDR.to_string(), vec![only.clone()]),
        [addr, rest @ ..] => (addr.clone(), rest.to_vec()),
        [] => unreachable!("clap requires one positional argument"),
    };
    let upstreams: Vec<String> = match upstreams.iter().map(|u| parse_upstream(u)).collect() {
        Ok(u) => u,
        Err(e) => {
            eprintln!("load_balancer: {e}");
            std::process::exit(2);
        }
    };
    let listener = match TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("load_balancer: cannot listen on {listen}: {e}");
            std::process::exit(1);
        }
    };
    let local = listener
        .local_addr()
        .expect("a bound listener has an address");
    println!("listening on {local}");

    // TODO: start a health-check task per upstream, accept connections,
    // serve each with hyper, pick an upstream per request, forward, retry.
    // Until then the balancer waits forever (without using the CPU).
    std::future::pending::<()>().await;
}
