//! `loadtest`: an HTTP/1.1 load generator, in the spirit of wrk and wrk2.
//!
//! ```text
//! loadtest URL [-c N] [-d 2s] [-n N] [-R REQS_PER_S] [-m GET] [-H 'k: v']...
//!              [--body STR] [--timeout 2s] [--json PATH|-] [-t THREADS]
//! ```
//!
//! # Design
//!
//! - **Shared nothing on the hot path.** `-t` worker threads (default: one
//!   per core, at most one per connection), each running its own
//!   single-threaded tokio runtime with its share of the connections, as
//!   wrk runs one event loop per thread. A connection is one task that
//!   owns its socket and read buffer; a thread's tasks record into one
//!   `Stats` without locks (`Rc<RefCell<..>>`); the threads' stats are
//!   merged once at the end. The only thing the threads share while
//!   running is the [`load::Schedule`]'s atomic ticket counter.
//! - **Raw HTTP/1.1** ([`http`]): the request is serialised once and sent
//!   with one `write`; responses are parsed in place in a fixed buffer,
//!   bodies skipped, not stored. Keep-alive by default; a new connection
//!   only after `Connection: close`, a close-delimited body, or an error.
//! - **Two load models** ([`load`]). Closed (no `--rate`): each connection
//!   sends its next request as soon as the previous answer arrives, so
//!   the server's speed sets the rate. Open (`--rate R`): requests are due
//!   at `R` per second in total, whatever the server does, and latency
//!   counts from when a request was *due*, not from when it could be sent
//!   (wrk2's correction for coordinated omission).
//! - **Failures are data.** Connect errors, resets, timeouts and
//!   malformed responses are counted by kind; the connection is dropped
//!   and the next request reconnects. Only a bad command line (exit 2) or
//!   an unusable setup (exit 1: a host that does not resolve, a report
//!   file that cannot be written) stops the program.
//! - **Exact counts.** Every connection is opened before the clock
//!   starts. At the end no new request is sent, and every request in
//!   flight is waited for (up to `--timeout`), so "requests" is exactly
//!   what the server answered, and with `-n N` every one of the N
//!   attempts ends as either a response or one error.

mod http;
mod load;
mod report;

use std::cell::RefCell;
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use clap::Parser;

use load::{Plan, Schedule, Stats};

/// An HTTP/1.1 load generator: closed model by default, open model with --rate.
#[derive(Parser, Debug)]
#[command(name = "loadtest")]
struct Args {
    /// The URL to load: http://host[:port][/path][?query] (no https)
    url: String,
    /// Connections to keep open (and requests in flight at most)
    #[arg(short = 'c', long = "connections", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    connections: u64,
    /// How long to send for (default 10s, unless -n is given)
    #[arg(short = 'd', long = "duration", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Send exactly this many requests (with -d too: whichever ends first)
    #[arg(short = 'n', long = "requests", value_parser = clap::value_parser!(u64).range(1..))]
    requests: Option<u64>,
    /// Open model: this many requests per second in total, across all connections
    #[arg(short = 'R', long = "rate", value_parser = parse_rate)]
    rate: Option<f64>,
    /// The request method
    #[arg(short = 'm', long = "method", default_value = "GET")]
    method: String,
    /// A request header, 'Name: value' (repeatable)
    #[arg(short = 'H', long = "header", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// A request body (sent with a Content-Length)
    #[arg(long)]
    body: Option<String>,
    /// Give up on a connect or a response after this long
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    timeout: Duration,
    /// Write the JSON report to this file ('-': to stdout, instead of the summary)
    #[arg(long)]
    json: Option<PathBuf>,
    /// Worker threads (default: one per core, at most one per connection)
    #[arg(short = 't', long = "threads", value_parser = clap::value_parser!(u64).range(1..=1024))]
    threads: Option<u64>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (try 500ms, 2s, 1m)"))?;
    if d.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(d)
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err("must be a number of requests per second above zero".into()),
    }
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once(':').ok_or("expected 'Name: value'")?;
    let k = k.trim();
    if k.is_empty() || !k.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the header name must be visible ASCII without spaces".into());
    }
    if v.contains(['\r', '\n']) {
        return Err("the header value must be one line".into());
    }
    Ok((k.to_string(), v.trim().to_string()))
}

/// Where the requests go.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port` to connect to.
    pub host_port: String,
    /// The `Host` header: the URL's authority as written.
    pub authority: String,
    /// The request target: path and query, at least `/`.
    pub path: String,
}

/// Parses `http://host[:port][/path][?query]`.
fn parse_url(url: &str) -> Result<Target, String> {
    if url.starts_with("https://") {
        return Err("https is not supported (plain http:// only)".into());
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or("the URL must start with http://")?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    let path = path.split('#').next().unwrap_or("/").to_string();
    if authority.is_empty() || authority.contains('@') {
        return Err("the URL needs a host (and no user:password@)".into());
    }
    // The port follows the last colon, unless that colon is inside an
    // IPv6 literal (`[::1]`).
    let host_port = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => {
            let port = &authority[i + 1..];
            port.parse::<u16>()
                .map_err(|_| format!("{port:?} is not a port number"))?;
            authority.to_string()
        }
        _ => format!("{authority}:80"),
    };
    Ok(Target {
        host_port,
        authority: authority.to_string(),
        path,
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let target = match parse_url(&args.url) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("loadtest: {}: {e}", args.url);
            return ExitCode::from(2);
        }
    };
    // Resolved once: a load test measures the server, not the resolver.
    let addr: SocketAddr = match target.host_port.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(a)) => a,
        Ok(None) | Err(_) => {
            eprintln!("loadtest: cannot resolve {}", target.host_port);
            return ExitCode::from(1);
        }
    };

    let connections = args.connections as usize;
    // -d by default, unless -n alone was given.
    let duration = match (args.duration, args.requests) {
        (None, None) => Some(Duration::from_secs(10)),
        (d, _) => d,
    };
    let plan = Arc::new(Plan {
        addr,
        request: http::build_request(&args.method, &target, &args.headers, args.body.as_deref()),
        head_request: args.method.eq_ignore_ascii_case("HEAD"),
        timeout: args.timeout,
        schedule: Schedule::new(duration, args.requests, args.rate),
    });

    let (stats, elapsed) = run(&plan, connections, args.threads);

    let run = report::Run {
        url: &args.url,
        connections,
        rate: args.rate,
        elapsed,
        stats: &stats,
    };
    let json = serde_json::to_string_pretty(&run.json()).expect("a JSON value serialises");
    let mut stdout = std::io::stdout().lock();
    match args.json.as_deref() {
        Some(p) if p.as_os_str() == "-" => {
            let _ = writeln!(stdout, "{json}");
        }
        Some(p) => {
            if let Err(e) = std::fs::write(p, format!("{json}\n")) {
                eprintln!("loadtest: cannot write the report to {}: {e}", p.display());
                return ExitCode::from(1);
            }
            let _ = write!(stdout, "{}", run.text());
        }
        None => {
            let _ = write!(stdout, "{}", run.text());
        }
    }
    let _ = stdout.flush();
    // A run that completed is a success, whatever the server did: errors
    // are in the report, for the caller to judge.
    ExitCode::SUCCESS
}

/// Runs the load on worker threads; returns the merged statistics and the
/// length of the measurement window (from the start signal until the last
/// response or error).
fn run(plan: &Arc<Plan>, connections: usize, threads: Option<u64>) -> (Stats, Duration) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = threads
        .map_or(cores, |t| t as usize)
        .min(connections)
        .max(1);
    // Two rendezvous: "every connection is open" and "the clock has started".
    let ready = Arc::new(Barrier::new(threads + 1));
    let mut workers = Vec::with_capacity(threads);
    for t in 0..threads {
        // Connections dealt out as evenly as possible.
        let mine = connections / threads + usize::from(t < connections % threads);
        let (plan, ready) = (plan.clone(), ready.clone());
        workers.push(std::thread::spawn(move || worker(&plan, mine, &ready)));
    }
    ready.wait(); // every worker has connected
    let start = Instant::now();
    plan.schedule.start(start);
    ready.wait(); // go
    let mut stats = Stats::new();
    for w in workers {
        stats.merge(&w.join().expect("a worker thread panicked"));
    }
    (stats, start.elapsed())
}

/// One worker thread: a single-threaded runtime driving `n` connections.
fn worker(plan: &Arc<Plan>, n: usize, ready: &Barrier) -> Stats {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    // Open every connection before the clock starts, so the handshakes
    // are not part of the first requests' latency. A failure here is not
    // counted: that connection's first request tries again, and that
    // attempt's failure is.
    let conns = rt.block_on(futures::future::join_all(
        (0..n).map(|_| load::connect(plan.addr, plan.timeout)),
    ));
    ready.wait();
    ready.wait();
    let stats = Rc::new(RefCell::new(Stats::new()));
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let tasks: Vec<_> = conns
            .into_iter()
            .map(|conn| {
                let (plan, stats) = (plan.clone(), stats.clone());
                tokio::task::spawn_local(async move {
                    load::run_connection(&plan, stats, conn).await;
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("a connection task panicked");
        }
    });
    Rc::try_unwrap(stats)
        .ok()
        .expect("every connection task has finished")
        .into_inner()
}
