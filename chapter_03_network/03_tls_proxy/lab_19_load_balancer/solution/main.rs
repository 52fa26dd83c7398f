//! # Lab 19: a load balancer (reference solution)
//!
//! ```text
//! load_balancer [ADDR] UPSTREAM... [--policy round-robin|least-connections]
//!               [--health-interval-ms N] [--health-path PATH]
//! ```
//!
//! A reverse proxy with several upstreams behind it: for each request it
//! chooses a healthy upstream, forwards the request, and passes the answer
//! back; a background task per upstream keeps the "healthy" flags current;
//! a request whose upstream fails before answering is retried once
//! elsewhere, when doing it twice is harmless.
//!
//! ## Layout
//!
//! | file | job |
//! |---|---|
//! | `main.rs` | arguments, the accept loop, one hyper connection task per client |
//! | `upstreams.rs` | the shared table: health flags, in-flight counters (an RAII guard), the two policies |
//! | `health.rs` | active health checks: one probing task per upstream |
//! | `proxy.rs` | forwarding one request: headers, retry, the answer with its in-flight guard |
//!
//! ## Policies, and what real balancers do
//!
//! - **Round robin** (nginx's default, HAProxy's `balance roundrobin`):
//!   stateless apart from a counter, perfect when requests cost the same.
//!   When they do not (one request takes 5 s, the next 5 ms), an upstream
//!   can pile up slow requests while it keeps getting its turns.
//! - **Least connections** (nginx `least_conn`, HAProxy `balance
//!   leastconn`, Envoy `LEAST_REQUEST`): sends each request where the fewest
//!   are in flight, so a slow or overloaded upstream naturally gets less.
//!   It only knows about the requests that go through *this* balancer; with
//!   several balancers each has its own view. Envoy's default flavour
//!   compares just two upstreams chosen at random ("power of two
//!   choices"), nearly as good and cheap with thousands of upstreams.
//! - Others, not done here: weights (a bigger machine gets more), hashing
//!   on the client address or a key (the same user lands on the same
//!   upstream: caches stay warm, sessions stick; consistent hashing moves
//!   few keys when an upstream joins or leaves), EWMA of latency (Envoy,
//!   Finagle, linkerd).
//!
//! ## Health: active and passive
//!
//! *Active* checks (this lab; HAProxy's `check`, Envoy's health checker,
//! nginx Plus's `health_check`) probe every upstream on a timer, whether or
//! not traffic flows: a dead upstream is found before a client meets it,
//! and a recovered one is taken back without risking a real request. The
//! cost: probes load the upstreams, and a failure is only seen at the next
//! probe. *Passive* checks (open-source nginx's `max_fails`/`fail_timeout`,
//! Envoy's outlier detection) watch real traffic instead: after N errors an
//! upstream is ejected for a while. They need no extra requests and react
//! at once, but they learn about a failure by failing a client's request,
//! and an ejected upstream gets no traffic to prove it has recovered
//! (hence "try again after fail_timeout"). Production setups combine both.
//! Here one failed probe takes an upstream out and one good probe puts it
//! back; real balancers damp flapping with thresholds (HAProxy's `rise 2
//! fall 3`).
//!
//! ## Retries need idempotency
//!
//! When the connection to an upstream fails before any response head, the
//! balancer cannot know how far the request got: refused means it never
//! arrived, but a reset after sending means the upstream may have read it
//! and acted on it. Sending it again elsewhere is safe only when doing it
//! twice is the same as doing it once: the idempotent methods (GET, HEAD,
//! PUT, DELETE, OPTIONS, TRACE). A POST (place an order) or PATCH
//! (append to a list) gets a 502 instead; the client, which knows what the
//! request means, decides (perhaps with an idempotency key, as payment APIs
//! do). nginx's `proxy_next_upstream` behaves the same by default
//! (`non_idempotent` is off). To send a request again the balancer needs
//! its body again: small idempotent bodies are kept in memory; big ones
//! are streamed and, like Envoy past its retry buffer, not retried. Once a
//! response head has arrived nothing is retried: the answer is already on
//! its way to the client. And only one retry: with every upstream failing,
//! retries multiply the load exactly when the system is weakest (Envoy
//! adds retry budgets for that reason).
//!
//! ## What is left out
//!
//! No timeouts towards upstreams (lab 18's `--timeout-ms`), no connection
//! limits, no TLS, no HTTP/2, no graceful shutdown: each would be a few
//! lines on top of this shape.

mod health;
mod proxy;
mod upstreams;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::proxy::Balancer;
use crate::upstreams::{Policy, Upstreams};

/// The listen address when none is given on the command line.
const DEFAULT_ADDR: &str = "127.0.0.1:8080";

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
    if !args.health_path.starts_with('/') {
        eprintln!(
            "load_balancer: --health-path must start with '/', got {:?}",
            args.health_path
        );
        std::process::exit(2);
    }
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

    let lb = Arc::new(Balancer {
        upstreams: Upstreams::new(upstreams, args.policy),
        client: proxy::client(),
    });
    let every = Duration::from_millis(args.health_interval_ms);
    for upstream in lb.upstreams.all() {
        tokio::spawn(health::run(
            upstream.clone(),
            lb.client.clone(),
            every,
            args.health_path.clone(),
        ));
    }

    println!("listening on {local}");
    eprintln!(
        "balancing over {} upstream(s), policy {:?}, probing {} every {every:?}",
        lb.upstreams.all().len(),
        args.policy,
        args.health_path
    );

    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, usually: back off a little
                // rather than spin on an error that will not go away.
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve(lb.clone(), stream, peer));
    }
}

/// One client connection: hyper reads requests (keep-alive, pipelining)
/// and calls the proxy for each.
async fn serve(lb: Arc<Balancer>, stream: tokio::net::TcpStream, peer: SocketAddr) {
    let service = service_fn(move |request| proxy::handle(lb.clone(), peer, request));
    if let Err(e) = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        // A client that vanished mid-request ends up here: its business.
        eprintln!("{peer}: {e}");
    }
}
