//! `loadgen`: the course's load generator, driven by `cargo course bench`.
//!
//! One thread and one `mio` event loop for every connection, so the client
//! costs as little CPU per request as the best server it measures and is
//! never what limits a run. It:
//! - opens every connection before timing starts (a bounded number of
//!   connects in flight, since a listen backlog is often 128);
//! - warms up, then measures over the real elapsed time of the window
//!   (never its nominal length);
//! - handles short reads and writes (a message may arrive in pieces);
//! - records each latency in an HDR histogram (microseconds, 3 significant
//!   digits), so p99 costs no sorting and no memory per sample.
//!
//! Modes:
//! ```text
//! loadgen echo  --addr A --conns N [--size 64] [--depth 1] [--warmup-ms 500] [--duration-ms 2000]
//! loadgen chat  --addr A --receivers N [--senders 1] [--rate 0] [--window 64] [--warmup-ms ..] [--duration-ms ..]
//! loadgen serve-echo [ADDR] [--delay-us N] [--die-after N]
//! loadgen redis --addr A [--test get|set] [--clients 50] [--pipeline 1] [--requests 100000]
//! loadgen serve-redis [ADDR]
//! loadgen http  --addr A --conns N --tool wrk|loadtest [--program P] [--warmup-ms ..] [--duration-ms ..]
//! loadgen serve-http [ADDR]
//! ```
//! `echo` keeps `depth` messages of `size` bytes in flight per connection
//! (depth 1 is ping-pong; more is pipelining). `chat` measures a broadcast
//! server: senders send 64-byte lines, receivers count them, and a line's
//! fan-out latency is the time from its send until the *last* receiver has
//! it; `--rate 0` runs closed-loop at saturation, `--rate R` offers R lines
//! per second in all. `serve-echo` is the ceiling: the smallest echo server
//! (also made slow or mortal on purpose, for the bench tool's own tests).
//! `redis` and `serve-redis` wrap the real `redis-benchmark` and
//! `redis-server` for the redis suite (see `redis.rs`). The http suite
//! turns the roles around: `serve-http` is a fixed, fast HTTP/1.1 server
//! (see `serve_http.rs`) and `http` runs a load generator under test, the
//! real `wrk` or lab 36's `loadtest`, against it (see `http.rs`).
//!
//! Output, on stdout, one line each: `connected <n>` when every connection
//! is up, `measuring` when the window opens, `done` when it closes, then
//! `result <json>`; on failure `error <reason>` and exit code 1. The bench
//! tool samples the server's `/proc` at `measuring` and `done`.

mod chat;
mod conns;
mod echo;
mod http;
mod redis;
mod serve;
mod serve_http;

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

/// `--key value` options after the mode.
pub struct Opts {
    values: HashMap<String, String>,
    positional: Vec<String>,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Opts, String> {
        let mut values = HashMap::new();
        let mut positional = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if let Some(key) = a.strip_prefix("--") {
                let v = it.next().ok_or(format!("--{key} needs a value"))?;
                values.insert(key.to_string(), v.clone());
            } else {
                positional.push(a.clone());
            }
        }
        Ok(Opts { values, positional })
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    pub fn num(&self, key: &str, default: u64) -> Result<u64, String> {
        match self.values.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{key} {v:?} is not a number")),
        }
    }

    pub fn ms(&self, key: &str, default: u64) -> Result<Duration, String> {
        self.num(key, default).map(Duration::from_millis)
    }

    pub fn positional(&self, i: usize) -> Option<&str> {
        self.positional.get(i).map(String::as_str)
    }

    pub fn addr(&self) -> Result<std::net::SocketAddr, String> {
        let a = self.str("addr").ok_or("--addr is required")?;
        a.parse()
            .map_err(|_| format!("--addr {a:?} is not an address"))
    }
}

/// Prints one protocol line and flushes it: the bench tool acts on it.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = args.first() else {
        eprintln!(
            "usage: loadgen echo|chat|serve-echo|redis|serve-redis|http|serve-http [options] (see the module docs)"
        );
        return ExitCode::from(2);
    };
    let result = Opts::parse(&args[1..]).and_then(|opts| match mode.as_str() {
        "echo" => echo::run(&opts),
        "chat" => chat::run(&opts),
        "serve-echo" => serve::run(&opts),
        "redis" => redis::run(&opts),
        "serve-redis" => redis::serve(&opts),
        "serve-http" => serve_http::run(&opts),
        "http" => http::run(&opts),
        other => Err(format!(
            "unknown mode {other:?}: echo, chat, serve-echo, redis, serve-redis, http or serve-http"
        )),
    });
    match result {
        Ok(json) => {
            say(&format!("result {json}"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            say(&format!("error {e}"));
            ExitCode::from(1)
        }
    }
}
