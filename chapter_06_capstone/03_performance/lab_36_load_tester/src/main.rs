//! Lab 36: `loadtest`, an HTTP/1.1 load generator (see README.md).
//!
//! ```text
//! loadtest URL [-c N] [-d 2s] [-n N] [-R REQS_PER_S] [-m GET] [-H 'k: v']...
//!              [--body STR] [--timeout 2s] [--json PATH|-] [-t THREADS]
//! ```
//!
//! Open `-c` connections to the URL's host and send the request over and
//! over, keeping each connection alive, until `-d` has passed or `-n`
//! requests have been sent. Then report, on stdout and (with `--json`) as
//! JSON: the requests answered, the rate, the count of each status code,
//! the errors by kind (connect, reset, timeout, protocol), and the
//! latency percentiles p50, p90, p99, p99.9 and max in microseconds.
//!
//! - Closed model (no `--rate`): each connection sends its next request as
//!   soon as the previous answer has arrived.
//! - Open model (`--rate R`): requests are due at R per second *in total*,
//!   request k at `start + k/R`, whatever the server does; latency counts
//!   from when a request was due, not from when it was actually sent (the
//!   coordinated-omission correction of wrk2).
//! - Errors are counted, never fatal. Exit code 0 when the run completed
//!   (whatever the server did), 1 when the setup failed (the host does not
//!   resolve, the report cannot be written), 2 for a bad command line.
//!
//! The command line is parsed for you below (it is not the lesson). The
//! rest is yours: `tokio` (raw TCP and your own HTTP/1.1 response parser,
//! or hyper's client), `hdrhistogram` for the latencies, `serde_json` for
//! the report. A good solution splits into modules (the HTTP wire, the
//! load loop, the report): add files next to this one.

#![allow(unused)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

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
    // TODO: resolve target.host_port once (exit 1 if it does not resolve).
    // TODO: build the request bytes once (request line, Host, your -H
    //       headers, Content-Length with --body).
    // TODO: open -c connections, start the clock, run the closed or the
    //       open model until -d or -n, wait for the answers in flight.
    // TODO: count statuses and errors, record latencies in an
    //       hdrhistogram (microseconds), then print the summary and write
    //       the JSON report (--json PATH, or stdout with --json -).
    eprintln!("loadtest: TODO: not implemented yet (see README.md)");
    ExitCode::from(1)
}
