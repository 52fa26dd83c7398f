//! The redis suite: the real `redis-benchmark` as the client, and the real
//! `redis-server` as the server every Redis-compatible lab is compared
//! with.
//!
//! - `loadgen redis --addr A --test get|set --clients 50 --pipeline 1
//!   --requests N` waits until the server answers `PING`, then runs
//!   `redis-benchmark` once and reports its rate and latencies in loadgen's
//!   protocol (`measuring`, `done`, `result <json>`). redis-benchmark has no
//!   warm-up of its own; a run of 100,000 requests or more is long enough
//!   that its first milliseconds do not matter.
//! - `loadgen serve-redis [ADDR]` picks a free port, prints `listening on`,
//!   and then *becomes* `redis-server` (`exec`): the same pid, so the bench
//!   tool's CPU and memory readings from `/proc/<pid>` are the real
//!   server's. No persistence, so no disk writes in the measurement.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{Opts, say};

pub fn run(o: &Opts) -> Result<String, String> {
    let addr = o.addr()?;
    let test = o.str("test").unwrap_or("get");
    if !matches!(test, "get" | "set") {
        return Err(format!("--test {test:?}: get or set"));
    }
    let clients = o.num("clients", 50)?;
    let pipeline = o.num("pipeline", 1)?;
    let requests = o.num("requests", 100_000)?;
    wait_for_pong(addr)?;
    say("measuring");
    let started = Instant::now();
    let out = Command::new("redis-benchmark")
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args([
            "-t",
            test,
            "-c",
            &clients.to_string(),
            "-P",
            &pipeline.to_string(),
        ])
        .args(["-n", &requests.to_string(), "--csv"])
        .output()
        .map_err(|e| {
            format!("cannot run redis-benchmark (install redis-server, which brings it): {e}")
        })?;
    let elapsed = started.elapsed();
    say("done");
    if !out.status.success() {
        return Err(format!(
            "redis-benchmark failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let csv = String::from_utf8_lossy(&out.stdout);
    let row =
        parse_csv(&csv).ok_or_else(|| format!("cannot read redis-benchmark's output: {csv:?}"))?;
    Ok(format!(
        "{{\"rps\":{:.1},\"requests\":{requests},\"p50_us\":{:.1},\"p99_us\":{:.1},\"elapsed_s\":{:.3}}}",
        row.rps,
        row.p50_ms * 1000.0,
        row.p99_ms * 1000.0,
        elapsed.as_secs_f64()
    ))
}

struct Row {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// The data row of `redis-benchmark --csv`: a header naming the columns
/// (`"test","rps","avg_latency_ms",...,"p50_latency_ms",...`), then one row.
fn parse_csv(csv: &str) -> Option<Row> {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let cells = |l: &str| -> Vec<String> {
        l.split(',')
            .map(|c| c.trim_matches('"').to_string())
            .collect()
    };
    let header = cells(lines.next()?);
    let row = cells(lines.next()?);
    let col = |name: &str| -> Option<f64> {
        let i = header.iter().position(|h| h == name)?;
        row.get(i)?.parse().ok()
    };
    Some(Row {
        rps: col("rps")?,
        p50_ms: col("p50_latency_ms")?,
        p99_ms: col("p99_latency_ms")?,
    })
}

/// Waits up to 10 s for `+PONG`: the server may print its address a moment
/// before it listens (`serve-redis` does).
fn wait_for_pong(addr: SocketAddr) -> Result<(), String> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let answered = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
            .and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(1)))?;
                s.write_all(b"PING\r\n")?;
                let mut reply = [0u8; 7];
                s.read_exact(&mut reply)?;
                Ok(&reply == b"+PONG\r\n")
            })
            .unwrap_or(false);
        if answered {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(format!("{addr} did not answer PING with +PONG within 10 s"));
        }
        // A retry interval: there is no event for "the server is up".
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Becomes `redis-server` on a free port; returns only on failure.
pub fn serve(_o: &Opts) -> Result<String, String> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("cannot find a free port: {e}"))?
        .port();
    say(&format!("listening on 127.0.0.1:{port}"));
    let err = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
        .exec();
    Err(format!("cannot exec redis-server: {err}"))
}
