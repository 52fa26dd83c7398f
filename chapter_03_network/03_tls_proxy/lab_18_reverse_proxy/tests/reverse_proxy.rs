//! The grader for lab 18: reverse_proxy.
//!
//! Each test starts an upstream inside the test process
//! (`labkit::upstream::Upstream`, which records every request it receives
//! and misbehaves on demand), then the proxy on `127.0.0.1:0` in front of
//! it, and talks to the proxy over raw sockets so that every byte sent and
//! received is visible. Nothing here sleeps to synchronise: the upstream
//! says when it has seen something (`wait_for_requests`,
//! `wait_for_in_flight`, `wait_for_body_bytes`), and every wait has a
//! deadline.

use labkit::client::Client;
use labkit::http::{self, Response};
use labkit::report::{first_difference, show};
use labkit::server::Server;
use labkit::upstream::{Behaviour, Recorded, Upstream};

const BIN: &str = env!("CARGO_BIN_EXE_reverse_proxy");

/// Starts the proxy in front of `up`, with `extra` arguments after the
/// upstream (e.g. `--timeout-ms`).
fn proxy(up: &Upstream, extra: &[&str]) -> Server {
    let server = Server::builder(BIN).arg(up.url()).args(extra).spawn();
    up.watch(&server);
    server
}

/// Sends `request` on a new connection and reads one response.
#[track_caller]
fn exchange(server: &Server, request: &[u8]) -> Response {
    let mut c = Client::connect_to(server);
    c.send(request);
    http::read_response(&mut c)
}

/// Fails unless `r` has status `want`.
#[track_caller]
fn expect_status(server: &Server, did: &str, r: &Response, want: u16, hint: &str) {
    if r.status != want {
        server
            .report()
            .did(did)
            .expected(format!("status {want}"))
            .got(r.describe())
            .hint(hint)
            .fail();
    }
}

/// The tokens of every `Connection` header, lower case.
fn connection_tokens(headers: &[&str]) -> Vec<String> {
    headers
        .iter()
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Every header of a recorded request, one per line, for messages.
fn recorded_headers(r: &Recorded) -> String {
    r.headers
        .iter()
        .map(|(k, v)| format!("\n  {k}: {v}"))
        .collect()
}

/// Reads a response whose body arrives in pieces: the head first, then as
/// many body bytes as asked for, decoding chunked framing as it goes.
struct StreamedResponse {
    head: Response,
    framing: Framing,
    /// Raw bytes read past what has been decoded.
    raw: Vec<u8>,
    body: Vec<u8>,
}

enum Framing {
    Chunked(Chunk),
    Length(usize),
    UntilClose,
}

enum Chunk {
    Size,
    Data(usize),
    DataEnd,
    Done,
}

impl StreamedResponse {
    /// Reads the status line and headers.
    #[track_caller]
    fn read_head(c: &mut Client) -> StreamedResponse {
        let bytes = c.read_framed(
            "a response head (status line and headers)",
            "do you send the response head as soon as the upstream's head arrives, before the whole body has come?",
            |b, _| b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4),
        );
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_string();
        let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let reason = parts.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let head = Response {
            version,
            status,
            reason,
            headers,
            body: Vec::new(),
            head: text,
        };
        let framing = if head
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            Framing::Chunked(Chunk::Size)
        } else if let Some(n) = head.header("content-length").and_then(|v| v.parse().ok()) {
            Framing::Length(n)
        } else {
            Framing::UntilClose
        };
        StreamedResponse {
            head,
            framing,
            raw: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Reads until at least `n` body bytes have arrived in all (or the body
    /// is complete), and returns the body so far.
    #[track_caller]
    fn read_body_until(&mut self, c: &mut Client, n: usize, hint: &str) -> &[u8] {
        while self.body.len() < n && !self.complete() {
            let more = c.read_framed(
                &format!(
                    "response body bytes: {} so far, waiting for {n}",
                    self.body.len()
                ),
                hint,
                |b, closed| (!b.is_empty() || closed).then_some(b.len()),
            );
            if more.is_empty() {
                // Closed by the other side: whatever came is the body.
                self.framing = Framing::Length(self.body.len());
                break;
            }
            self.raw.extend_from_slice(&more);
            self.decode();
        }
        &self.body
    }

    fn complete(&self) -> bool {
        match &self.framing {
            Framing::Chunked(Chunk::Done) => true,
            Framing::Length(n) => self.body.len() >= *n,
            _ => false,
        }
    }

    /// Moves what can be decoded from `raw` to `body`.
    fn decode(&mut self) {
        match &mut self.framing {
            Framing::Length(_) | Framing::UntilClose => self.body.append(&mut self.raw),
            Framing::Chunked(state) => loop {
                match state {
                    Chunk::Size => {
                        let Some(end) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                            return;
                        };
                        let line = String::from_utf8_lossy(&self.raw[..end]).into_owned();
                        let hex = line.split(';').next().unwrap_or_default().trim();
                        let size = usize::from_str_radix(hex, 16)
                            .unwrap_or_else(|_| panic!("[test] bad chunk size line {line:?}"));
                        self.raw.drain(..end + 2);
                        *state = if size == 0 {
                            Chunk::Done
                        } else {
                            Chunk::Data(size)
                        };
                    }
                    Chunk::Data(left) => {
                        let take = (*left).min(self.raw.len());
                        if take == 0 {
                            return;
                        }
                        self.body.extend(self.raw.drain(..take));
                        *left -= take;
                        if *left == 0 {
                            *state = Chunk::DataEnd;
                        }
                    }
                    Chunk::DataEnd => {
                        if self.raw.len() < 2 {
                            return;
                        }
                        self.raw.drain(..2);
                        *state = Chunk::Size;
                    }
                    // Trailers and the final CRLF are not needed.
                    Chunk::Done => return,
                }
            },
        }
    }
}

// A GET goes upstream with its method, path and query exactly as sent, and
// the upstream's status, headers and body come back to the client.
#[test]
fn test_01_forwards_method_path_and_query_and_returns_the_upstreams_answer() {
    let up = Upstream::start("a");
    up.set_response(
        201,
        &[("x-custom", "v1"), ("content-type", "text/x-lab")],
        b"made by the upstream\n".to_vec(),
    );
    let server = proxy(&up, &[]);
    let target = "/some/path/here?q=1&r=a%20b&empty=&q=2";
    let did = format!("sent GET {target} through the proxy");
    let r = exchange(&server, &http::request("GET", target, &[], b""));
    expect_status(
        &server,
        &did,
        &r,
        201,
        "do you return the upstream's status code, not 200 every time?",
    );
    let seen = up.wait_for_requests(1);
    let got = &seen[0];
    if got.method != "GET" || got.target != target {
        server
            .report()
            .did(&did)
            .expected(format!("the upstream to receive GET {target}"))
            .got(format!("it received {}", got.summary()))
            .hint("forward the path *and* the query string exactly as received (no decoding, no normalising)")
            .fail();
    }
    for (name, want) in [
        ("x-custom", "v1"),
        ("content-type", "text/x-lab"),
        ("x-upstream", "a"),
    ] {
        if r.header(name) != Some(want) {
            server
                .report()
                .did(&did)
                .expected(format!("the upstream's header `{name}: {want}` in the response"))
                .got(r.describe())
                .hint("copy the upstream's response headers (all but the hop-by-hop ones) to the client")
                .fail();
        }
    }
    if r.body != b"made by the upstream\n" {
        server
            .report()
            .did(&did)
            .expected(format!(
                "the upstream's body {}",
                show(b"made by the upstream\n")
            ))
            .got(r.describe())
            .fail();
    }

    // Other methods and a second request on the same connection.
    let mut c = Client::connect_to(&server);
    for (method, target) in [("DELETE", "/items/7?force=true"), ("PUT", "/items/8")] {
        c.send(&http::request(method, target, &[], b"x"));
        let r = http::read_response(&mut c);
        expect_status(
            &server,
            &format!("sent {method} {target}"),
            &r,
            201,
            "forward every method, not only GET",
        );
    }
    let seen = up.wait_for_requests(3);
    let got: Vec<_> = seen[1..]
        .iter()
        .map(|r| (r.method.as_str(), r.target.as_str()))
        .collect();
    if got != [("DELETE", "/items/7?force=true"), ("PUT", "/items/8")] {
        server
            .report()
            .did("sent DELETE /items/7?force=true, then PUT /items/8 on one connection")
            .expected("the upstream to receive both, with those methods and targets")
            .got(format!("{got:?}"))
            .hint("forward the request's method as it is")
            .fail();
    }
}

// A 1 MiB binary request body reaches the upstream byte for byte, whether
// the client frames it with Content-Length or chunked.
#[test]
fn test_02_forwards_a_1_mib_binary_post_body_byte_for_byte() {
    let up = Upstream::start("a");
    let server = proxy(&up, &[]);
    let body = labkit::data::binary(1 << 20, 18);
    let did = "sent POST /upload with a 1 MiB binary body (Content-Length)";
    let r = exchange(
        &server,
        &http::request(
            "POST",
            "/upload",
            &[("Content-Type", "application/octet-stream")],
            &body,
        ),
    );
    expect_status(
        &server,
        did,
        &r,
        200,
        "is the body forwarded, and the upstream's answer relayed?",
    );
    let seen = up.wait_for_requests(1);
    if let Some(diff) = first_difference(&body, &seen[0].body) {
        server
            .report()
            .did(did)
            .expected("the upstream to receive the same 1,048,576 bytes")
            .got(format!("it received {} bytes; {diff}", seen[0].body.len()))
            .hint("pass the body through as bytes (never as a String), all of it")
            .fail();
    }
    if seen[0].header("content-type") != Some("application/octet-stream") {
        server
            .report()
            .did(did)
            .expected("the upstream to receive `Content-Type: application/octet-stream`")
            .got(format!("its headers:{}", recorded_headers(&seen[0])))
            .fail();
    }

    let did = "sent POST /chunked with a chunked body: \"hello, \" then \"chunked world\"";
    let r = exchange(
        &server,
        b"POST /chunked HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n7\r\nhello, \r\nd\r\nchunked world\r\n0\r\n\r\n",
    );
    expect_status(
        &server,
        did,
        &r,
        200,
        "is a chunked request body forwarded?",
    );
    let seen = up.wait_for_requests(2);
    if seen[1].body != b"hello, chunked world" {
        server
            .report()
            .did(did)
            .expected(format!(
                "the upstream to receive the body {}",
                show(b"hello, chunked world")
            ))
            .got(format!("it received {}", show(&seen[1].body)))
            .hint("the upstream must get the decoded body, framed for its own connection")
            .fail();
    }
}

// The client's headers reach the upstream, Host unchanged, plus
// X-Forwarded-For (appended to one the client sent) and X-Forwarded-Proto.
#[test]
fn test_03_passes_headers_and_host_and_appends_x_forwarded_for() {
    let up = Upstream::start("a");
    let server = proxy(&up, &[]);
    let did = "sent GET / with Host: shop.example:8443, User-Agent: lab18-test, X-Request-Id: 42";
    let r = exchange(
        &server,
        &http::request(
            "GET",
            "/",
            &[
                ("Host", "shop.example:8443"),
                ("User-Agent", "lab18-test"),
                ("X-Request-Id", "42"),
                ("Accept", "text/plain"),
            ],
            b"",
        ),
    );
    expect_status(&server, did, &r, 200, "is the request forwarded at all?");
    let seen = up.wait_for_requests(1);
    for (name, want, hint) in [
        (
            "host",
            "shop.example:8443",
            "pass the client's Host header unchanged (do not replace it with the upstream's address)",
        ),
        ("user-agent", "lab18-test", "forward the client's headers"),
        ("x-request-id", "42", "forward the client's headers"),
        ("accept", "text/plain", "forward the client's headers"),
        (
            "x-forwarded-for",
            "127.0.0.1",
            "add `X-Forwarded-For: <the client's IP>` (the peer address of the client's connection)",
        ),
        ("x-forwarded-proto", "http", "add `X-Forwarded-Proto: http`"),
    ] {
        if seen[0].headers_named(name).join(", ") != want {
            server
                .report()
                .did(did)
                .expected(format!("the upstream to receive `{name}: {want}`"))
                .got(format!("its headers:{}", recorded_headers(&seen[0])))
                .hint(hint)
                .fail();
        }
    }

    let did = "sent GET / with X-Forwarded-For: 203.0.113.7, 198.51.100.2";
    let r = exchange(
        &server,
        &http::request(
            "GET",
            "/",
            &[("X-Forwarded-For", "203.0.113.7, 198.51.100.2")],
            b"",
        ),
    );
    expect_status(&server, did, &r, 200, "is the request forwarded at all?");
    let seen = up.wait_for_requests(2);
    let xff = seen[1].headers_named("x-forwarded-for").join(", ");
    if xff != "203.0.113.7, 198.51.100.2, 127.0.0.1" {
        server
            .report()
            .did(did)
            .expected("the upstream to receive `X-Forwarded-For: 203.0.113.7, 198.51.100.2, 127.0.0.1`")
            .got(format!("x-forwarded-for: {xff:?}"))
            .hint("append `, <client ip>` to an existing X-Forwarded-For: earlier proxies' entries must survive")
            .fail();
    }
}

// Hop-by-hop request headers (and the headers Connection names) stay on
// the client's connection; end-to-end headers go on.
#[test]
fn test_04_strips_hop_by_hop_request_headers() {
    let up = Upstream::start("a");
    let server = proxy(&up, &[]);
    let headers = [
        ("Connection", "keep-alive, X-Hop-Secret"),
        ("X-Hop-Secret", "only for the proxy"),
        ("Keep-Alive", "timeout=5, max=100"),
        ("Proxy-Authorization", "Basic dXNlcjpwYXNz"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"),
        ("Trailer", "X-Checksum"),
        ("X-End", "kept"),
    ];
    let did = format!(
        "sent GET /hop with headers{}",
        headers
            .iter()
            .map(|(k, v)| format!("\n  {k}: {v}"))
            .collect::<String>()
    );
    let r = exchange(&server, &http::request("GET", "/hop", &headers, b""));
    expect_status(&server, &did, &r, 200, "is the request forwarded at all?");
    let seen = up.wait_for_requests(1);
    let got = &seen[0];
    if got.header("x-end") != Some("kept") {
        server
            .report()
            .did(&did)
            .expected("the upstream to receive the end-to-end header `X-End: kept`")
            .got(format!("its headers:{}", recorded_headers(got)))
            .hint("only hop-by-hop headers are removed; the others are forwarded")
            .fail();
    }
    for name in [
        "x-hop-secret",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
    ] {
        if got.header(name).is_some() {
            server
                .report()
                .did(&did)
                .expected(format!("the upstream not to receive `{name}` (hop-by-hop)"))
                .got(format!("its headers:{}", recorded_headers(got)))
                .hint("remove Connection, Keep-Alive, Proxy-Connection, Proxy-Authenticate, Proxy-Authorization, TE, Trailer, Transfer-Encoding, Upgrade, and every header the Connection header names (read it before you remove it)")
                .fail();
        }
    }
    let tokens = connection_tokens(&got.headers_named("connection"));
    if tokens.iter().any(|t| t == "x-hop-secret") {
        server
            .report()
            .did(&did)
            .expected("the client's Connection header not to reach the upstream")
            .got(format!("its headers:{}", recorded_headers(got)))
            .hint("Connection is hop-by-hop: the upstream connection is the proxy's own")
            .fail();
    }
}

// Hop-by-hop response headers from the upstream stay on the upstream's
// connection; end-to-end headers reach the client.
#[test]
fn test_05_strips_hop_by_hop_response_headers() {
    let up = Upstream::start("a");
    let headers = [
        ("Connection", "X-Hop-Secret"),
        ("X-Hop-Secret", "only for the proxy"),
        ("Keep-Alive", "timeout=5, max=100"),
        ("Proxy-Authenticate", "Basic realm=\"upstream\""),
        ("Trailer", "X-Checksum"),
        ("Upgrade", "h2c"),
        ("X-End", "kept"),
    ];
    up.set_response(200, &headers, b"hop\n".to_vec());
    let server = proxy(&up, &[]);
    let did = format!(
        "had the upstream answer GET /hop with headers{}",
        headers
            .iter()
            .map(|(k, v)| format!("\n  {k}: {v}"))
            .collect::<String>()
    );
    let r = exchange(&server, &http::request("GET", "/hop", &[], b""));
    expect_status(&server, &did, &r, 200, "is the request forwarded at all?");
    if r.header("x-end") != Some("kept") || r.body != b"hop\n" {
        server
            .report()
            .did(&did)
            .expected(
                "the response to carry the end-to-end header `X-End: kept` and the body \"hop\\n\"",
            )
            .got(r.describe())
            .hint("copy the upstream's headers except the hop-by-hop ones")
            .fail();
    }
    for name in [
        "x-hop-secret",
        "keep-alive",
        "proxy-authenticate",
        "trailer",
        "upgrade",
    ] {
        if r.header(name).is_some() {
            server
                .report()
                .did(&did)
                .expected(format!("the client not to receive `{name}` (hop-by-hop)"))
                .got(r.describe())
                .hint("strip hop-by-hop headers from the response too, including the ones its Connection header names")
                .fail();
        }
    }
    if connection_tokens(&r.headers_named("connection"))
        .iter()
        .any(|t| t == "x-hop-secret")
    {
        server
            .report()
            .did(&did)
            .expected("the upstream's Connection header not to reach the client")
            .got(r.describe())
            .hint("Connection is hop-by-hop in responses as well")
            .fail();
    }
}

// An upstream that is down (connection refused) or drops the connection
// without answering gets the client a 502; it serves again once back.
#[test]
fn test_06_answers_502_when_the_upstream_is_down_or_drops_the_connection() {
    let up = Upstream::start("a");
    let server = proxy(&up, &[]);
    let r = exchange(&server, &http::request("GET", "/before", &[], b""));
    expect_status(
        &server,
        "sent GET /before (upstream running)",
        &r,
        200,
        "is the request forwarded at all?",
    );

    up.stop();
    let did = "stopped the upstream (connections refused), then sent GET /down";
    let r = exchange(&server, &http::request("GET", "/down", &[], b""));
    expect_status(
        &server,
        did,
        &r,
        502,
        "when connecting to the upstream fails, answer 502 Bad Gateway (and keep running)",
    );
    server.expect_alive(did);

    up.restart();
    up.set_behaviour(Behaviour::Reset);
    let did =
        "restarted the upstream, made it close each connection without answering, sent GET /reset";
    let r = exchange(&server, &http::request("GET", "/reset", &[], b""));
    expect_status(
        &server,
        did,
        &r,
        502,
        "an upstream that closes the connection before a response head is a 502 too",
    );

    up.set_behaviour(Behaviour::Normal);
    let did = "let the upstream answer normally again, sent GET /after";
    let r = exchange(&server, &http::request("GET", "/after", &[], b""));
    expect_status(
        &server,
        did,
        &r,
        200,
        "after a failure, does the proxy connect again (and not reuse a dead connection)?",
    );
}

// An upstream that never answers gets the client a 504 after --timeout-ms,
// and the proxy keeps serving afterwards.
#[test]
fn test_07_answers_504_when_the_upstream_does_not_answer_in_time() {
    let up = Upstream::start("a");
    let server = proxy(&up, &["--timeout-ms", "500"]);
    let r = exchange(&server, &http::request("GET", "/before", &[], b""));
    expect_status(
        &server,
        "sent GET /before with --timeout-ms 500 (upstream answering at once)",
        &r,
        200,
        "is the request forwarded at all?",
    );

    up.set_behaviour(Behaviour::Hang);
    let did = "made the upstream read requests and never answer, then sent GET /hang (proxy started with --timeout-ms 500)";
    let r = exchange(&server, &http::request("GET", "/hang", &[], b""));
    expect_status(
        &server,
        did,
        &r,
        504,
        "wrap the wait for the upstream's response head in a timeout (tokio::time::timeout) and answer 504 Gateway Timeout when it expires",
    );

    up.set_behaviour(Behaviour::Normal);
    let did = "let the upstream answer again, then sent GET /after";
    let r = exchange(&server, &http::request("GET", "/after", &[], b""));
    expect_status(
        &server,
        did,
        &r,
        200,
        "does the proxy keep serving after a timeout?",
    );
    if r.body != b"a" {
        server
            .report()
            .did(did)
            .expected("the upstream's answer to GET /after, body \"a\"")
            .got(r.describe())
            .fail();
    }
}

// The response body flows through as it arrives: the client gets the first
// half while the upstream is still holding back the second half.
#[test]
fn test_08_streams_the_response_body_as_it_arrives() {
    let up = Upstream::start("a");
    let server = proxy(&up, &[]);
    let first = labkit::data::binary(100_000, 1);
    let second = labkit::data::binary(50_000, 2);
    let gate = up.respond_in_two_parts(first.clone(), second.clone());
    let mut c = Client::connect_to(&server);
    c.send(&http::request("GET", "/stream", &[], b""));
    let hint = "do you pass the upstream's body on as it arrives (hyper's Incoming as the response body), or collect it all first?";
    let mut resp = StreamedResponse::read_head(&mut c);
    if resp.head.status != 200 {
        server
            .report()
            .did("sent GET /stream; the upstream answered 200 with the first 100,000 bytes of its body and holds the rest")
            .expected("status 200")
            .got(resp.head.head.trim_end())
            .fail();
    }
    let got = resp.read_body_until(&mut c, first.len(), hint).to_vec();
    if let Some(diff) = first_difference(&first, &got) {
        server
            .report()
            .did("sent GET /stream; the upstream sent the first 100,000 bytes of its body and holds the rest")
            .expected("those 100,000 bytes before the rest is sent")
            .got(diff)
            .hint(hint)
            .fail();
    }
    gate.open();
    let all = resp
        .read_body_until(&mut c, usize::MAX, "is the end of the body passed on?")
        .to_vec();
    let want = [first, second].concat();
    if let Some(diff) = first_difference(&want, &all) {
        server
            .report()
            .did("let the upstream send the last 50,000 bytes of the body")
            .expected("the whole 150,000-byte body, in order")
            .got(diff)
            .fail();
    }
}

// The request body flows through as it arrives: the upstream sees the
// first half of a large body before the client has sent the second half.
#[test]
fn test_09_streams_the_request_body_as_it_arrives() {
    let up = Upstream::start("a");
    let server = proxy(&up, &[]);
    let body = labkit::data::binary(2 << 20, 9);
    let half = body.len() / 2;
    let mut c = Client::connect_to(&server);
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.send(head.as_bytes());
    c.send(&body[..half]);
    up.wait_for_body_bytes(half);
    c.send(&body[half..]);
    let r = http::read_response(&mut c);
    let did = "sent the head and 1 MiB of a 2 MiB body, waited for the upstream to see that 1 MiB, then sent the rest";
    expect_status(&server, did, &r, 200, "is the request forwarded at all?");
    let seen = up.wait_for_requests(1);
    if let Some(diff) = first_difference(&body, &seen[0].body) {
        server
            .report()
            .did(did)
            .expected("the upstream to receive all 2 MiB in order")
            .got(diff)
            .fail();
    }
}

// A request held by the upstream does not keep a second request from
// being forwarded: both are in flight at the upstream at once.
#[test]
fn test_10_a_slow_upstream_request_does_not_block_another() {
    let up = Upstream::start("a");
    let server = proxy(&up, &[]);
    up.set_behaviour(Behaviour::Hold);
    let mut slow = Client::connect_to(&server);
    slow.send(&http::request("GET", "/slow", &[], b""));
    up.wait_for_in_flight(1);
    let mut other = Client::connect_to(&server);
    other.send(&http::request("GET", "/other", &[], b""));
    up.wait_for_in_flight(2);
    up.set_behaviour(Behaviour::Normal);
    up.release_all();
    for (c, target) in [(&mut slow, "/slow"), (&mut other, "/other")] {
        let r = http::read_response(c);
        expect_status(
            &server,
            &format!(
                "held GET /slow at the upstream, forwarded GET /other meanwhile, then released both; read the answer to {target}"
            ),
            &r,
            200,
            "is each answer sent back on its own client's connection?",
        );
    }
}

// Clients that vanish mid-head, mid-body, or while their request waits at
// the upstream never bring the proxy down.
#[test]
fn test_11_survives_clients_that_disconnect_mid_request() {
    let up = Upstream::start("a");
    let server = proxy(&up, &[]);

    up.set_behaviour(Behaviour::Hold);
    let mut c = Client::connect_to(&server);
    c.send(&http::request("GET", "/gone", &[], b""));
    up.wait_for_in_flight(1);
    c.reset();
    up.set_behaviour(Behaviour::Normal);
    up.release_all();

    let mut c = Client::connect_to(&server);
    c.send(b"GET /half-a-head HTTP/1.1\r\nHost: te");
    c.reset();

    let mut c = Client::connect_to(&server);
    c.send(b"POST /half-a-body HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\r\n");
    c.send(&labkit::data::binary(1000, 3));
    c.reset();

    let did = "reset three clients: one while its request was held at the upstream, one mid-head, one mid-body; then sent GET /after";
    let r = exchange(&server, &http::request("GET", "/after", &[], b""));
    expect_status(
        &server,
        did,
        &r,
        200,
        "an error on one connection must end that connection's task only",
    );
    server.expect_alive(did);
}

// Header lists spread over several lines, in any case: every `Connection`
// line names hop-by-hop headers (request and response), every
// `X-Forwarded-For` line is part of the chain, and the client's own
// `X-Forwarded-Proto` is replaced, not kept.
#[test]
fn test_12_handles_repeated_and_mixed_case_connection_and_forwarding_headers() {
    let up = Upstream::start("a");
    up.set_response(
        200,
        &[
            ("connection", "x-resp-one"),
            ("CONNECTION", "X-RESP-TWO"),
            ("X-Resp-One", "1"),
            ("x-resp-two", "2"),
            ("X-Resp-Kept", "1"),
        ],
        b"ok\n".to_vec(),
    );
    let server = proxy(&up, &[]);
    let headers = [
        ("connection", "keep-alive"),
        ("CONNECTION", "X-Second-Hop,x-third-hop"),
        ("x-second-hop", "hop"),
        ("X-THIRD-HOP", "hop"),
        ("X-Forwarded-For", "203.0.113.7"),
        ("x-forwarded-for", "198.51.100.2"),
        ("X-Forwarded-Proto", "https"),
        ("X-End", "kept"),
    ];
    let did = format!(
        "sent GET /lists with headers{}",
        headers
            .iter()
            .map(|(k, v)| format!("\n  {k}: {v}"))
            .collect::<String>()
    );
    let r = exchange(&server, &http::request("GET", "/lists", &headers, b""));
    expect_status(&server, &did, &r, 200, "is the request forwarded at all?");
    let seen = up.wait_for_requests(1);
    let got = &seen[0];
    for (name, want, hint) in [
        (
            "x-end",
            Some("kept"),
            "only hop-by-hop headers are removed; the others are forwarded",
        ),
        (
            "x-second-hop",
            None,
            "a request may carry several Connection lines: do you read every one (get_all), not just the first?",
        ),
        (
            "x-third-hop",
            None,
            "split every Connection line on commas, trim each name, and compare names in any case",
        ),
    ] {
        if got.header(name) != want {
            server
                .report()
                .did(&did)
                .expected(match want {
                    Some(v) => format!("the upstream to receive `{name}: {v}`"),
                    None => {
                        format!("the upstream not to receive `{name}` (named by a Connection line)")
                    }
                })
                .got(format!("its headers:{}", recorded_headers(got)))
                .hint(hint)
                .fail();
        }
    }
    let xff = got.headers_named("x-forwarded-for").join(", ");
    if xff != "203.0.113.7, 198.51.100.2, 127.0.0.1" {
        server
            .report()
            .did(&did)
            .expected("the upstream to receive `X-Forwarded-For: 203.0.113.7, 198.51.100.2, 127.0.0.1`")
            .got(format!("x-forwarded-for: {xff:?}"))
            .hint("two X-Forwarded-For lines are one list: do you keep every line (get_all), then append the client?")
            .fail();
    }
    let proto = got.headers_named("x-forwarded-proto");
    if proto != ["http"] {
        server
            .report()
            .did(&did)
            .expected("the upstream to receive exactly one `X-Forwarded-Proto: http`")
            .got(format!("x-forwarded-proto: {proto:?}"))
            .hint("the client cannot vouch for the scheme of this hop: do you replace (insert) X-Forwarded-Proto rather than add a second one?")
            .fail();
    }
    for name in ["x-resp-one", "x-resp-two"] {
        if r.header(name).is_some() {
            server
                .report()
                .did("had the upstream answer with two Connection lines (`connection: x-resp-one`, `CONNECTION: X-RESP-TWO`) and both headers")
                .expected(format!("the client not to receive `{name}`"))
                .got(r.describe())
                .hint("read every Connection line of the response too, and compare names in any case")
                .fail();
        }
    }
    if r.header("x-resp-kept") != Some("1") {
        server
            .report()
            .did("had the upstream answer with X-Resp-Kept: 1 among hop-by-hop headers")
            .expected("the client to receive `X-Resp-Kept: 1`")
            .got(r.describe())
            .fail();
    }
}

// An upstream that breaks its response off mid-body: the head is gone, so
// the proxy closes the client's connection without ending the body (a
// truncated body must never look complete), and keeps serving.
#[test]
fn test_13_an_upstream_failing_mid_body_closes_the_clients_connection() {
    let up = Upstream::start("a");
    let server = proxy(&up, &[]);
    let gate = up.respond_in_two_parts(b"first part;".to_vec(), b"second part.".to_vec());
    let mut c = Client::connect_to(&server);
    c.send(&http::request("GET", "/broken", &[], b""));
    let seen = c.read_framed(
        "a response head and the first part of its body (\"first part;\")",
        "do you pass the upstream's head and body on as they arrive?",
        |got, _| {
            got.windows(11)
                .position(|w| w == b"first part;")
                .map(|i| i + 11)
        },
    );
    gate.fail();
    // Until the connection closes, or the body ends as if it were complete.
    let rest = c.read_framed(
        "the connection to close (the upstream broke its response off mid-body)",
        "once the upstream's body fails, is the client's connection closed?",
        |got, closed| (closed || got.ends_with(b"0\r\n\r\n")).then_some(got.len()),
    );
    let all = [seen, rest].concat();
    let text = String::from_utf8_lossy(&all).into_owned();
    if text.contains("second part.") || text.ends_with("0\r\n\r\n") {
        server
            .report()
            .did("sent GET /broken; the upstream sent a chunked head and \"first part;\", then closed its connection mid-body")
            .expected("the proxy to close the client's connection without ending the body (no last chunk `0`)")
            .got(format!(
                "after the head and \"first part;\": {}",
                show(text.split("first part;").nth(1).unwrap_or("").as_bytes())
            ))
            .hint("an error while reading the upstream's body must reach the client as a broken connection, never as a clean end of the body: do you turn a body error into end-of-stream?")
            .fail();
    }
    let did = "an upstream broke its response off mid-body; then sent GET /after";
    server.expect_alive(did);
    let r = exchange(&server, &http::request("GET", "/after", &[], b""));
    expect_status(
        &server,
        did,
        &r,
        200,
        "an error on one upstream connection must end that request only",
    );
}
