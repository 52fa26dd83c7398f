//! The grader for lab 36: `loadtest`, an HTTP/1.1 load generator.
//!
//! Every test starts an HTTP server of its own, inside the test process
//! (raw HTTP/1.1 on tokio, below), whose behaviour it knows exactly: how
//! many requests it read and answered, how many connections it accepted,
//! how many requests were in flight at once, when each request arrived,
//! and what each one said. It can be told to delay a path
//! (`/delay/5ms`), to answer every n-th request with a 500, to reset or
//! never answer every n-th one, to close after every response, to frame
//! responses every way HTTP/1.1 allows, and to stall every response once
//! for a while. Then it runs `loadtest` against that server with
//! `--json PATH` and compares the report with what the server saw.
//!
//! Counts are compared exactly (the server's counters are the truth).
//! Latencies and rates are compared with wide bands around what the
//! server's known delays imply: never a tight timing threshold, since the
//! machine may be busy. Every run is short (under a second).

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use labkit::Report;
use labkit::run::{Cmd, Outcome};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const BIN: &str = env!("CARGO_BIN_EXE_loadtest");

/// How long one run of `loadtest` may take before the test kills it.
/// Every run asks for well under a second of load.
const RUN_DEADLINE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// The test's own HTTP server.

/// What the test's server does, beyond answering `200 ok`.
#[derive(Debug, Clone, Copy, Default)]
struct Behaviour {
    /// Every n-th request (the n-th, 2n-th, ...) is answered `500`.
    error_every: u64,
    /// Every n-th request is not answered: its connection is reset (RST).
    reset_every: u64,
    /// Every n-th request is never answered (until the client closes).
    hang_every: u64,
    /// Every response says `Connection: close`, and the server closes.
    close_each: bool,
    /// Responses cycle through four framings: Content-Length, chunked (in
    /// pieces, with a chunk extension and a trailer), a 300 KB body, and a
    /// body delimited by closing the connection.
    mixed_framing: bool,
    /// When request number `.0` (0-based) arrives, every response is held
    /// until `.1` later: a server-wide stall (a GC pause, a lock, a full
    /// disk), once.
    stall: Option<(u64, Duration)>,
}

/// One request as the server read it.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    method: String,
    target: String,
    /// Header lines, as sent.
    headers: Vec<String>,
    body: Vec<u8>,
}

#[derive(Default)]
struct State {
    /// Requests read whole.
    read: AtomicU64,
    /// Responses the server answered (counted as it starts writing one).
    served: AtomicU64,
    connections: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    resets: AtomicU64,
    hung: AtomicU64,
    seen: Mutex<Vec<Seen>>,
    stall_until: Mutex<Option<Instant>>,
}

struct TestServer {
    addr: SocketAddr,
    state: Arc<State>,
    behaviour: Behaviour,
    // Dropped last: stops the server's tasks.
    _rt: tokio::runtime::Runtime,
}

impl TestServer {
    fn start(behaviour: Behaviour) -> TestServer {
        let rt = labkit::wait::runtime(2);
        let state = Arc::new(State::default());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("listener address");
        let st = state.clone();
        rt.spawn(async move {
            let listener = TcpListener::from_std(listener).expect("tokio listener");
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                st.connections.fetch_add(1, SeqCst);
                tokio::spawn(serve(stream, st.clone(), behaviour));
            }
        });
        TestServer {
            addr,
            state,
            behaviour,
            _rt: rt,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Waits (up to 5 s) until no request is being handled, so that the
    /// counters are final: a response the load generator abandoned may
    /// still be in the server's delay when `loadtest` exits.
    fn wait_idle(&self) {
        let _ = labkit::wait::settle(
            Duration::from_secs(5),
            || self.state.in_flight.load(SeqCst),
            |n| n == 0,
        );
    }

    fn served(&self) -> u64 {
        self.wait_idle();
        self.state.served.load(SeqCst)
    }
    fn connections(&self) -> u64 {
        self.state.connections.load(SeqCst)
    }
    fn max_in_flight(&self) -> u64 {
        self.state.max_in_flight.load(SeqCst)
    }
    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// What the server saw, for failure messages.
    fn summary(&self) -> String {
        let s = &self.state;
        format!(
            "the test's server ({:?}) read {} requests, answered {}, reset {}, left {} unanswered; \
             accepted {} connections; at most {} requests in flight at once",
            self.behaviour,
            s.read.load(SeqCst),
            s.served.load(SeqCst),
            s.resets.load(SeqCst),
            s.hung.load(SeqCst),
            s.connections.load(SeqCst),
            s.max_in_flight.load(SeqCst),
        )
    }
}

/// The delay a path asks for: `/delay/<n>ms`, or `/levels`, whose delay
/// depends on the request's number (below).
fn delay_for(target: &str, n: u64) -> Duration {
    let path = target.split('?').next().unwrap_or("");
    if let Some(ms) = path
        .strip_prefix("/delay/")
        .and_then(|d| d.strip_suffix("ms"))
        .and_then(|d| d.parse::<u64>().ok())
    {
        return Duration::from_millis(ms);
    }
    if path == "/levels" {
        return Duration::from_millis(level(n));
    }
    Duration::ZERO
}

/// `/levels`: of every 1000 consecutive requests, 800 take 1 ms, 160 take
/// 20 ms, 36 take 50 ms, 3 take 100 ms and 1 takes 200 ms (spread through
/// the run by a permutation of 0..1000). Sorted, the ranks that the
/// percentiles pick (500, 900, 990, 999, 1000 of 1000) fall on 1, 20, 50,
/// 100 and 200 ms.
fn level(n: u64) -> u64 {
    match (n * 389) % 1000 {
        0..800 => 1,
        800..960 => 20,
        960..996 => 50,
        996..999 => 100,
        _ => 200,
    }
}

async fn serve(stream: TcpStream, st: Arc<State>, b: Behaviour) {
    let mut s = BufReader::new(stream);
    loop {
        // The head: request line and header lines up to an empty line.
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            match s.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let line = line.trim_end_matches(['\r', '\n']).to_string();
            if line.is_empty() {
                if lines.is_empty() {
                    continue; // tolerated before a request line (RFC 9112 2.2)
                }
                break;
            }
            lines.push(line);
            if lines.len() > 200 {
                return;
            }
        }
        let mut request_line = lines[0].split(' ');
        let method = request_line.next().unwrap_or("").to_string();
        let target = request_line.next().unwrap_or("").to_string();
        let headers = lines[1..].to_vec();
        let length = headers
            .iter()
            .filter_map(|h| h.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0; length.min(1 << 20)];
        if s.read_exact(&mut body).await.is_err() {
            return;
        }
        let n = st.read.fetch_add(1, SeqCst);
        st.seen.lock().unwrap().push(Seen {
            at: Instant::now(),
            method,
            target: target.clone(),
            headers,
            body,
        });
        let nth = |every: u64| every > 0 && (n + 1).is_multiple_of(every);

        if nth(b.reset_every) {
            st.resets.fetch_add(1, SeqCst);
            // SO_LINGER 0: closing sends RST instead of FIN.
            let _ = socket2::SockRef::from(s.get_ref()).set_linger(Some(Duration::ZERO));
            return;
        }
        if nth(b.hang_every) {
            st.hung.fetch_add(1, SeqCst);
            // Never answer; return when the client gives up and closes.
            let mut one = [0u8; 1];
            let _ = s.read(&mut one).await;
            return;
        }

        let now_in_flight = st.in_flight.fetch_add(1, SeqCst) + 1;
        st.max_in_flight.fetch_max(now_in_flight, SeqCst);
        let delay = delay_for(&target, n);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if let Some((at, hold)) = b.stall {
            let until = {
                let mut until = st.stall_until.lock().unwrap();
                if n == at {
                    *until = Some(Instant::now() + hold);
                }
                *until
            };
            if let Some(until) = until
                && Instant::now() < until
            {
                tokio::time::sleep_until(until.into()).await;
            }
        }
        let status = if nth(b.error_every) { 500 } else { 200 };
        let framing = if b.mixed_framing { n % 4 } else { 0 };
        let close = b.close_each || framing == 3;
        st.served.fetch_add(1, SeqCst);
        let ok = respond(s.get_mut(), status, framing, close).await;
        st.in_flight.fetch_sub(1, SeqCst);
        if !ok || close {
            let _ = s.get_mut().shutdown().await;
            return;
        }
    }
}

/// Writes one response in the given framing (see `Behaviour::mixed_framing`).
async fn respond(w: &mut TcpStream, status: u16, framing: u64, close: bool) -> bool {
    let reason = if status == 200 {
        "OK"
    } else {
        "Internal Server Error"
    };
    let connection = if close { "Connection: close\r\n" } else { "" };
    let body: &[u8] = if status == 200 { b"ok\n" } else { b"error\n" };
    let head = |framing_header: String| {
        format!("HTTP/1.1 {status} {reason}\r\n{framing_header}{connection}\r\n").into_bytes()
    };
    let parts: Vec<Vec<u8>> = match framing {
        // Chunked, split inside a chunk-size line: "3;note=x", "abc",
        // then a 0x10-byte chunk, the last chunk and a trailer field.
        1 => vec![
            [
                head("Transfer-Encoding: chunked\r\n".into()),
                b"3;note=x\r\nabc\r\n1".to_vec(),
            ]
            .concat(),
            b"0\r\n0123456789abcdef\r\n0\r\nX-Trailer: yes\r\n\r\n".to_vec(),
        ],
        // A body much larger than any read buffer, in two writes.
        2 => {
            let big = vec![b'x'; 300_000];
            vec![
                head(format!("Content-Length: {}\r\n", big.len())),
                big[..100_000].to_vec(),
                big[100_000..].to_vec(),
            ]
        }
        // No length: the body ends when the server closes (close is set).
        3 => vec![[head(String::new()), b"until the server closes\n".to_vec()].concat()],
        _ => vec![
            [
                head(format!("Content-Length: {}\r\n", body.len())),
                body.to_vec(),
            ]
            .concat(),
        ],
    };
    for p in parts {
        if w.write_all(&p).await.is_err() {
            return false;
        }
    }
    true
}

/// A port with no listener: connecting to it is refused.
fn refused_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("listener address")
    // `l` is dropped here: the port is closed.
}

// ---------------------------------------------------------------------------
// Running loadtest.

/// One run of `loadtest` and its JSON report.
struct Run {
    out: Outcome,
    json: Value,
    text: String,
}

impl Run {
    fn report(&self) -> Report {
        self.out
            .report()
            .quote("your program (JSON report)", &self.text)
            .quote("your program (stdout)", &self.out.stdout)
    }

    /// The value at a JSON pointer (`/latency_us/p50`); fails if absent.
    fn field(&self, pointer: &str) -> &Value {
        match self.json.pointer(pointer) {
            Some(v) if !v.is_null() => v,
            _ => self
                .report()
                .expected(format!("the report to have the field {pointer}"))
                .got("no such field (or null)")
                .hint("see the README's report schema: every field is required")
                .fail(),
        }
    }

    fn int(&self, pointer: &str) -> u64 {
        let v = self.field(pointer);
        v.as_u64().unwrap_or_else(|| {
            self.report()
                .expected(format!("{pointer} to be a non-negative integer"))
                .got(v.to_string())
                .fail()
        })
    }

    fn float(&self, pointer: &str) -> f64 {
        let v = self.field(pointer);
        v.as_f64().unwrap_or_else(|| {
            self.report()
                .expected(format!("{pointer} to be a number"))
                .got(v.to_string())
                .fail()
        })
    }

    /// `status` as a map from code to count.
    fn statuses(&self) -> BTreeMap<String, u64> {
        let v = self.field("/status");
        let Some(obj) = v.as_object() else {
            self.report()
                .expected("/status to be an object such as {\"200\": 150, \"500\": 50}")
                .got(v.to_string())
                .fail()
        };
        obj.keys()
            .map(|k| (k.clone(), self.int(&format!("/status/{k}"))))
            .collect()
    }

    /// Latency percentile `name` (p50, p90, p99, p99.9, max) in ms.
    fn ms(&self, name: &str) -> f64 {
        self.int(&format!("/latency_us/{name}")) as f64 / 1000.0
    }

    fn errors(&self) -> [u64; 4] {
        ["connect", "reset", "timeout", "protocol"].map(|k| self.int(&format!("/errors/{k}")))
    }

    /// Fails with a message unless `ok`.
    #[track_caller]
    fn check(
        &self,
        ok: bool,
        server: Option<&TestServer>,
        expected: impl Display,
        got: impl Display,
        hint: &str,
    ) {
        if !ok {
            let mut r = self.report();
            if let Some(s) = server {
                r = r.did(s.summary());
            }
            r.expected(expected).got(got).hint(hint).fail();
        }
    }

    /// Fails unless no error of any kind was reported.
    #[track_caller]
    fn check_no_errors(&self, server: &TestServer, hint: &str) {
        let e = self.errors();
        self.check(
            e == [0; 4],
            Some(server),
            "errors: connect 0, reset 0, timeout 0, protocol 0 (the server answered every request)",
            format!(
                "connect {}, reset {}, timeout {}, protocol {}",
                e[0], e[1], e[2], e[3]
            ),
            hint,
        );
    }

    /// Fails unless the report's requests equal what the server answered
    /// and the status counts are exactly `want`.
    #[track_caller]
    fn check_counts(&self, server: &TestServer, want: &[(&str, u64)], hint: &str) {
        let served = server.served();
        let requests = self.int("/requests");
        let total: u64 = want.iter().map(|(_, n)| n).sum();
        self.check(
            served == total,
            Some(server),
            format!("the server to answer {total} requests"),
            format!("it answered {served}"),
            hint,
        );
        self.check(
            requests == served,
            Some(server),
            format!("\"requests\": {served}, the number of responses the server sent"),
            format!("\"requests\": {requests}"),
            hint,
        );
        let want: BTreeMap<String, u64> = want.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        let got = self.statuses();
        self.check(
            got == want,
            Some(server),
            format!("\"status\": {want:?}"),
            format!("\"status\": {got:?}"),
            "is every response counted once under its own status code, whatever the code?",
        );
    }
}

/// Runs `loadtest` to completion.
fn run_raw(args: &[String]) -> Outcome {
    Cmd::new(BIN).args(args).deadline(RUN_DEADLINE).run()
}

/// Runs `loadtest ARGS --json <file>`, requires exit code 0 and a report
/// that parses as a JSON object.
fn loadtest(args: &[&str]) -> Run {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("report.json");
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.push("--json".into());
    all.push(path.display().to_string());
    let out = run_raw(&all);
    out.expect_success();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        out.report()
            .expected(format!("a JSON report in {}", path.display()))
            .got(format!("could not read it: {e}"))
            .hint("does --json PATH write the report to PATH?")
            .fail()
    });
    let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        out.report()
            .quote("your program (report file)", &text)
            .expected("the report file to hold one JSON object")
            .got(format!("it does not parse: {e}"))
            .fail()
    });
    if !json.is_object() {
        out.report()
            .quote("your program (report file)", &text)
            .expected("the report to be a JSON object")
            .got(&text)
            .fail();
    }
    Run { out, json, text }
}

// ---------------------------------------------------------------------------
// The tests.

// -n N sends exactly N requests over exactly C kept-alive connections, all C busy at once.
#[test]
fn test_20_sends_exactly_n_requests_over_c_kept_alive_connections() {
    let server = TestServer::start(Behaviour::default());
    let url = server.url("/delay/5ms");
    let run = loadtest(&[&url, "-c", "4", "-n", "203"]);
    run.check_no_errors(
        &server,
        "the server answers everything here: what did you count as an error?",
    );
    run.check_counts(
        &server,
        &[("200", 203)],
        "-n 203 means 203 requests in total over all connections, not per connection: \
         do the connections share one counter, checked before each send?",
    );
    let conns = server.connections();
    run.check(
        conns == 4,
        Some(&server),
        "4 connections (-c 4), each kept alive for many requests",
        format!("{conns} connections"),
        "HTTP/1.1 connections stay open after a response unless the server says `Connection: close`: \
         do you reuse the connection for the next request instead of opening a new one?",
    );
    let busy = server.max_in_flight();
    run.check(
        busy == 4,
        Some(&server),
        "4 requests in flight at once at some point (one per connection)",
        format!("at most {busy}"),
        "do the connections run concurrently (one task each), rather than one after another?",
    );
    let model = run.field("/model");
    run.check(
        model == "closed",
        None,
        "\"model\": \"closed\" without --rate",
        model,
        "see the README's report schema",
    );
    run.check(
        run.int("/connections") == 4,
        None,
        "\"connections\": 4",
        run.field("/connections"),
        "report the -c value",
    );

    // The smallest run: one request on a single connection.
    let one = TestServer::start(Behaviour::default());
    let run = loadtest(&[&one.url("/"), "-c", "1", "-n", "1"]);
    run.check_counts(
        &one,
        &[("200", 1)],
        "-n 1 sends exactly one request: an off-by-one in the count?",
    );
}

// The JSON report has every documented field, in the documented units; `--json -` prints it.
#[test]
fn test_21_the_json_report_has_the_documented_schema() {
    let server = TestServer::start(Behaviour::default());
    let url = server.url("/delay/2ms");
    let run = loadtest(&[&url, "-c", "2", "-n", "40"]);
    run.check_counts(&server, &[("200", 40)], "see the README's report schema");
    run.check_no_errors(&server, "every request was answered");
    let url_field = run.field("/url");
    run.check(
        url_field == url.as_str(),
        None,
        format!("\"url\": {url:?}"),
        url_field,
        "report the URL as given",
    );
    let target = run.json.pointer("/target_rate");
    run.check(
        target.is_some_and(Value::is_null),
        None,
        "\"target_rate\": null without --rate (the field present, its value null)",
        format!("{target:?}"),
        "see the README's report schema",
    );
    let secs = run.float("/duration_s");
    let rps = run.float("/rps");
    run.check(
        secs > 0.0 && secs < RUN_DEADLINE.as_secs_f64(),
        None,
        "duration_s: the run's length in seconds (more than 0)",
        secs,
        "duration_s is in seconds, a number such as 0.05",
    );
    let want_rps = 40.0 / secs;
    run.check(
        (rps - want_rps).abs() <= want_rps * 0.05,
        None,
        format!("rps = requests / duration_s = {want_rps:.1}"),
        rps,
        "rps is the responses per second over the measured duration",
    );
    let names = ["p50", "p90", "p99", "p99.9", "max"];
    let values: Vec<u64> = names
        .iter()
        .map(|n| run.int(&format!("/latency_us/{n}")))
        .collect();
    run.check(
        values.windows(2).all(|w| w[0] <= w[1]),
        None,
        "p50 <= p90 <= p99 <= p99.9 <= max",
        format!("{values:?}"),
        "are the percentiles taken at the right quantiles (0.5, 0.9, 0.99, 0.999, 1)?",
    );
    // Every request takes at least the server's 2 ms, and far less than
    // a second: microseconds between 2000 and 1_000_000.
    run.check(
        values[0] >= 2000 && values[4] < 1_000_000,
        Some(&server),
        "latency_us in microseconds: p50 at least 2000 (the server waits 2 ms), max under 1000000",
        format!("{values:?}"),
        "latencies are whole microseconds (Duration::as_micros), measured until the whole response was read",
    );

    // `--json -` prints the report on stdout instead of the summary.
    let again = TestServer::start(Behaviour::default());
    let out = run_raw(&[
        again.url("/"),
        "-c".into(),
        "1".into(),
        "-n".into(),
        "3".into(),
        "--json".into(),
        "-".into(),
    ]);
    out.expect_success();
    let parsed: Result<Value, _> = serde_json::from_slice(&out.stdout);
    match parsed {
        Ok(v) if v.pointer("/requests").and_then(Value::as_u64) == Some(3) => {}
        other => out
            .report()
            .expected(
                "with --json -, stdout is exactly the JSON report (\"requests\": 3), nothing else",
            )
            .got(format!("{other:?}"))
            .hint("print the human summary only when the JSON goes to a file (or nowhere)")
            .fail(),
    }
}

// Every response counts under its status; a 500 is an answer, not an error.
#[test]
fn test_22_status_counts_are_exact_and_non_2xx_are_not_errors() {
    let server = TestServer::start(Behaviour {
        error_every: 4,
        ..Behaviour::default()
    });
    let run = loadtest(&[&server.url("/delay/1ms"), "-c", "3", "-n", "200"]);
    run.check_counts(
        &server,
        &[("200", 150), ("500", 50)],
        "a 500 is a response like any other: count it under \"500\" and in \"requests\"",
    );
    run.check_no_errors(
        &server,
        "errors are failures to get a response (connect, reset, timeout, protocol); a 500 is a response",
    );
}

// The percentiles match the server's known delays (1, 20, 50, 100, 200 ms at ranks 50%, 90%, 99%, 99.9%, max).
#[test]
fn test_23_percentiles_match_the_known_delays() {
    let server = TestServer::start(Behaviour::default());
    let run = loadtest(&[&server.url("/levels"), "-c", "16", "-n", "1000"]);
    run.check_counts(&server, &[("200", 1000)], "-n 1000 sends 1000 requests");
    run.check_no_errors(&server, "every request was answered");
    // (percentile, the delay at its rank, the next level up): a value
    // at least the delay and below the next level is right, with room
    // for a busy machine.
    for (name, delay, next) in [
        ("p50", 1.0, 15.0),
        ("p90", 20.0, 45.0),
        ("p99", 50.0, 95.0),
        ("p99.9", 100.0, 250.0),
        ("max", 200.0, 500.0),
    ] {
        let got = run.ms(name);
        run.check(
            got >= delay * 0.98 && got < next,
            Some(&server),
            format!(
                "{name} between {delay} ms and {next} ms: of 1000 requests 800 took 1 ms, 160 took 20 ms, \
                 36 took 50 ms, 3 took 100 ms and 1 took 200 ms"
            ),
            format!("{name} = {got} ms"),
            "is every latency recorded (microseconds, from send until the whole response was read), \
             and each percentile read at its own quantile (0.5, 0.9, 0.99, 0.999, max)?",
        );
    }
}

// Bodies framed by Content-Length, by chunks (split across reads), by size (300 KB) or by close are all read whole.
#[test]
fn test_24_reads_every_framing_of_a_response_body() {
    let server = TestServer::start(Behaviour {
        mixed_framing: true,
        ..Behaviour::default()
    });
    let run = loadtest(&[&server.url("/"), "-c", "3", "-n", "80"]);
    run.check_no_errors(
        &server,
        "a quarter of the responses are chunked (`3;note=x`, a 0x10-byte chunk, `0`, a trailer, the empty line), \
         a quarter carry 300000 bytes, a quarter end when the server closes: \
         do you read each body to its end, by its framing, before the next request?",
    );
    run.check_counts(&server, &[("200", 80)], "every response counts once");
}

// After `Connection: close` the connection is replaced, and no request is lost.
#[test]
fn test_25_reconnects_after_connection_close() {
    let server = TestServer::start(Behaviour {
        close_each: true,
        ..Behaviour::default()
    });
    let run = loadtest(&[&server.url("/"), "-c", "2", "-n", "30"]);
    run.check_no_errors(
        &server,
        "every response says `Connection: close` and the server closes: \
         do you open a new connection for the next request instead of writing to the closed one?",
    );
    run.check_counts(&server, &[("200", 30)], "every response counts once");
    let conns = server.connections();
    run.check(
        (30..=32).contains(&conns),
        Some(&server),
        "one connection per request (30, or up to 32 if you reconnect before knowing a request follows)",
        format!("{conns} connections"),
        "a connection closed by the server cannot carry another request",
    );
}

// The method, headers and body given on the command line reach the server on every request.
#[test]
fn test_26_sends_the_given_method_headers_and_body() {
    let server = TestServer::start(Behaviour::default());
    let run = loadtest(&[
        &server.url("/submit?x=1"),
        "-c",
        "2",
        "-n",
        "10",
        "-m",
        "POST",
        "-H",
        "X-Load-Test: yes",
        "-H",
        "Content-Type: text/plain",
        "--body",
        "hello, server",
    ]);
    run.check_counts(&server, &[("200", 10)], "-n 10");
    let host = format!("host: {}", server.addr);
    for s in server.seen() {
        let has = |h: &str| s.headers.iter().any(|l| l.eq_ignore_ascii_case(h));
        let ok = s.method == "POST"
            && s.target == "/submit?x=1"
            && s.body == b"hello, server"
            && has("x-load-test: yes")
            && has("content-type: text/plain")
            && has(&host);
        run.check(
            ok,
            Some(&server),
            format!(
                "every request: POST /submit?x=1 with headers X-Load-Test: yes, Content-Type: text/plain, \
                 {host} (and a Content-Length), body \"hello, server\""
            ),
            format!(
                "{} {} headers {:?} body {:?}",
                s.method,
                s.target,
                s.headers,
                String::from_utf8_lossy(&s.body)
            ),
            "the request line carries the path and query; Host is required in HTTP/1.1; \
             a body needs a Content-Length so the server knows where it ends",
        );
    }
}

// A refused port or a server that resets connections is counted by kind, and the run completes with exit code 0.
#[test]
fn test_27_connection_errors_are_counted_and_never_fatal() {
    // A server that resets every 5th request.
    let server = TestServer::start(Behaviour {
        reset_every: 5,
        ..Behaviour::default()
    });
    let run = loadtest(&[&server.url("/"), "-c", "2", "-n", "50"]);
    run.check_counts(
        &server,
        &[("200", 40)],
        "after a reset, reconnect and go on: the other requests are answered",
    );
    let e = run.errors();
    run.check(
        e == [0, 10, 0, 0],
        Some(&server),
        "errors: reset 10 (the server reset 10 connections), the others 0",
        format!(
            "connect {}, reset {}, timeout {}, protocol {}",
            e[0], e[1], e[2], e[3]
        ),
        "a connection closed or reset before the whole response arrived is one \"reset\" error; \
         -n 50 means 50 attempts, each a response or one error",
    );

    // A port nobody listens on: every attempt is a connect error.
    let refused = format!("http://{}/", refused_port());
    let run = loadtest(&[&refused, "-c", "2", "-n", "5"]);
    let e = run.errors();
    run.check(
        e == [5, 0, 0, 0] && run.int("/requests") == 0 && run.statuses().is_empty(),
        None,
        "exit code 0, \"requests\": 0, \"status\": {}, errors: connect 5 (each of the 5 attempts was refused)",
        format!(
            "requests {}, status {:?}, connect {}, reset {}, timeout {}, protocol {}",
            run.int("/requests"),
            run.statuses(),
            e[0],
            e[1],
            e[2],
            e[3]
        ),
        "a refused connect is a result, not a crash: count it and go on to the next attempt",
    );
    // By duration: the run ends on time and reports the refusals.
    let run = loadtest(&[&refused, "-c", "2", "-d", "300ms"]);
    let e = run.errors();
    run.check(
        e[0] >= 1 && run.int("/requests") == 0,
        None,
        "exit code 0, \"requests\": 0 and at least one connect error",
        format!("requests {}, connect errors {}", run.int("/requests"), e[0]),
        "count every failed connect under errors.connect",
    );

    // A bad command line is the one fatal case: exit code 2.
    for bad in [
        vec!["https://127.0.0.1:1/"],
        vec!["127.0.0.1:1"],
        vec!["http://127.0.0.1:1/", "-c", "0"],
    ] {
        let args: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
        run_raw(&args).expect_code(2);
    }
}

// A request unanswered within --timeout is a timeout error, its connection replaced.
#[test]
fn test_28_timeouts_are_counted_and_the_connection_replaced() {
    let server = TestServer::start(Behaviour {
        hang_every: 10,
        ..Behaviour::default()
    });
    let run = loadtest(&[
        &server.url("/"),
        "-c",
        "3",
        "-n",
        "30",
        "--timeout",
        "300ms",
    ]);
    run.check_counts(
        &server,
        &[("200", 27)],
        "after a timeout, close that connection (its answer may still come) and open a new one",
    );
    let e = run.errors();
    run.check(
        e == [0, 0, 3, 0],
        Some(&server),
        "errors: timeout 3 (the server never answered 3 requests), the others 0",
        format!(
            "connect {}, reset {}, timeout {}, protocol {}",
            e[0], e[1], e[2], e[3]
        ),
        "bound every wait for a response by --timeout, and count the ones that run out",
    );
}

// --rate R offers R requests per second in total (not per connection), evenly, not in bursts.
#[test]
fn test_29_open_model_holds_the_total_rate_without_bursts() {
    let server = TestServer::start(Behaviour::default());
    let run = loadtest(&[
        &server.url("/delay/1ms"),
        "-c",
        "4",
        "-R",
        "400",
        "-d",
        "800ms",
    ]);
    run.check_no_errors(&server, "every request was answered");
    let requests = run.int("/requests");
    let served = server.served();
    run.check(
        requests == served,
        Some(&server),
        format!("\"requests\": {served} (what the server answered)"),
        requests,
        "count every response, including the ones in flight when the time is up",
    );
    run.check(
        (256..=356).contains(&requests),
        Some(&server),
        "about 400/s x 0.8 s = 320 requests (256 to 356)",
        format!("{requests} requests"),
        "the rate is for the whole run, shared by all connections: 400/s with -c 4 is 100/s per connection, \
         and requests are due at start + k/400 whatever the server does",
    );
    let (model, target) = (run.field("/model"), run.float("/target_rate"));
    run.check(
        model == "open" && target == 400.0,
        None,
        "\"model\": \"open\", \"target_rate\": 400",
        format!("model {model}, target_rate {target}"),
        "see the README's report schema",
    );
    let p50 = run.ms("p50");
    run.check(
        (1.0..50.0).contains(&p50),
        Some(&server),
        "p50 between 1 ms and 50 ms (the server takes 1 ms and never falls behind)",
        format!("p50 = {p50} ms"),
        "latency counts from each request's own intended send time, not from the start of the run",
    );
    // No burst: in any 100 ms, at most twice the 40 requests due, plus one per connection.
    let times: Vec<Instant> = server.seen().iter().map(|s| s.at).collect();
    let mut worst = 0;
    for (i, t) in times.iter().enumerate() {
        let n = times[i..]
            .iter()
            .take_while(|u| u.duration_since(*t) < Duration::from_millis(100))
            .count();
        worst = worst.max(n);
    }
    run.check(
        worst <= 84,
        Some(&server),
        "at most 84 requests arriving in any 100 ms (40 are due)",
        format!("{worst} requests within 100 ms"),
        "space the sends out: request k is due at start + k/rate, so wait until then before sending it",
    );

    // With -n: exactly N requests, still paced.
    let paced = TestServer::start(Behaviour::default());
    let run = loadtest(&[&paced.url("/"), "-c", "2", "-R", "200", "-n", "40"]);
    run.check_counts(&paced, &[("200", 40)], "-n 40 with --rate sends exactly 40");
    let seen = paced.seen();
    let span = seen.last().unwrap().at.duration_since(seen[0].at);
    run.check(
        span >= Duration::from_millis(120),
        Some(&paced),
        "40 requests at 200/s spread over about 195 ms (at least 120 ms from first to last)",
        format!("{span:?} from first to last"),
        "does -n bypass the rate? the schedule applies with either limit",
    );
}

// Under --rate, a server stall shows in the percentiles: latency counts from the intended send time.
#[test]
fn test_30_open_model_latency_counts_from_the_intended_send_time() {
    // Requests are due every 2.5 ms; at request 60 (about 0.15 s in) the
    // server holds every response for 300 ms. 120 requests fall due
    // during the stall and wait, on 4 busy connections, for between 0
    // and 300 ms: those due in its first half wait 150 ms or more, about
    // 400/s x 0.15 s = 60 of the ~320 requests (19%). Measured from the
    // moment a connection was free to send, only the 4 requests caught on
    // the wire would show the stall: coordinated omission.
    let stall = Duration::from_millis(300);
    let server = TestServer::start(Behaviour {
        stall: Some((60, stall)),
        ..Behaviour::default()
    });
    let run = loadtest(&[
        &server.url("/delay/1ms"),
        "-c",
        "4",
        "-R",
        "400",
        "-d",
        "800ms",
    ]);
    run.check_no_errors(
        &server,
        "the stall is shorter than the timeout: every request was answered",
    );
    let requests = run.int("/requests");
    run.check(
        requests == server.served() && (256..=356).contains(&requests),
        Some(&server),
        "about 320 requests, all answered",
        format!("{requests} requests"),
        "keep the schedule through the stall: requests that fell due are sent late, not dropped",
    );
    let (p50, p90, p99, max) = (run.ms("p50"), run.ms("p90"), run.ms("p99"), run.ms("max"));
    let hint = "in the open model a request's latency starts when it was due (start + k/rate), \
                not when a connection became free to send it: otherwise the requests that waited \
                out the stall report only their own short round trip";
    run.check(
        p90 >= 150.0,
        Some(&server),
        "p90 of at least 150 ms: about 19% of the requests fell due in the stall's first half and waited 150 ms or more",
        format!("p50 {p50} ms, p90 {p90} ms, p99 {p99} ms, max {max} ms"),
        hint,
    );
    run.check(
        (240.0..900.0).contains(&p99) && max >= 270.0,
        Some(&server),
        "p99 between 240 and 900 ms, and max at least 270 ms (the stall lasted 300 ms)",
        format!("p50 {p50} ms, p90 {p90} ms, p99 {p99} ms, max {max} ms"),
        hint,
    );
    run.check(
        p50 < 150.0,
        Some(&server),
        "p50 below 150 ms: most requests were due outside the stall",
        format!("p50 {p50} ms"),
        "latency starts at each request's own due time, not at the start of the run",
    );
}

// Without --rate, -d keeps every connection busy until the time is up, then waits for the answers in flight.
#[test]
fn test_31_closed_model_runs_for_the_duration_and_counts_what_was_in_flight() {
    let server = TestServer::start(Behaviour::default());
    let run = loadtest(&[&server.url("/delay/10ms"), "-c", "4", "-d", "500ms"]);
    run.check_no_errors(
        &server,
        "when the time is up, stop sending, but wait for the answers still on the way: \
         they are not timeouts",
    );
    let requests = run.int("/requests");
    let served = server.served();
    run.check(
        requests == served,
        Some(&server),
        format!("\"requests\": {served}, every response the server sent, including the last ones in flight"),
        format!("\"requests\": {requests}"),
        "when the time is up, stop sending, then wait for the responses in flight before reporting",
    );
    run.check(
        (80..=204).contains(&requests),
        Some(&server),
        "4 connections x 0.5 s / 10 ms = at most 200 (+4) requests, and at least 80",
        format!("{requests} requests"),
        "in the closed model each connection sends its next request as soon as the previous answer arrives",
    );
    let (conns, busy) = (server.connections(), server.max_in_flight());
    run.check(
        conns == 4 && busy == 4,
        Some(&server),
        "4 connections, 4 requests in flight at once",
        format!("{conns} connections, at most {busy} in flight"),
        "open -c connections and keep each one busy",
    );
    let secs = run.float("/duration_s");
    run.check(
        (0.5..2.0).contains(&secs),
        None,
        "duration_s about 0.5 (-d 500ms, plus the last answers)",
        secs,
        "duration_s is the measured length of the run in seconds",
    );
}
