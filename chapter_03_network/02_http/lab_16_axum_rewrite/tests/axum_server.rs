//! The grader for lab 16, axum_server.
//!
//! Tests 01 to 19 are the hello service's shared conformance suite
//! (`labkit::http_suite`, the same as lab 15's). Tests from 20 on check
//! what axum adds: JSON errors, the typed routes `/sum` and `/greet`, and a
//! graceful shutdown. Every test starts its own server on `127.0.0.1:0`
//! with a fresh static directory.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use labkit::client::Client;
use labkit::http;
use labkit::http_suite::{Got, MAX_BODY, Site, fetch, media_type, send_while_open};
use labkit::report::show;
use serde_json::{Value, json};

labkit::http_suite! {
    binary: env!("CARGO_BIN_EXE_axum_server"),
    // hyper's `max_header_size`, set to lab 15's limit.
    header_limit: 8 * 1024,
}

const BIN: &str = env!("CARGO_BIN_EXE_axum_server");

/// How long a shutdown may take, and how long the server may take to stop
/// accepting after a signal.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// What `did` returned, as JSON; fails unless it is `status` with
/// `Content-Type: application/json`.
#[track_caller]
fn expect_json(site: &Site, did: &str, got: &Got, status: u16, hint: &str) -> Value {
    let media = got.header("content-type").map(|v| media_type(&v));
    let parsed = serde_json::from_slice::<Value>(&got.body);
    match (&parsed, media.as_deref()) {
        (Ok(value), Some("application/json")) if got.status == status => value.clone(),
        _ => site
            .server
            .report()
            .did(did)
            .expected(format!(
                "status {status} with Content-Type application/json and a JSON body"
            ))
            .got(format!(
                "status {}, Content-Type {}, body {}{}",
                got.status,
                got.header("content-type")
                    .map_or("(none)".into(), |v| format!("{v:?}")),
                show(&got.body),
                match &parsed {
                    Err(e) => format!(" (not JSON: {e})"),
                    Ok(_) => String::new(),
                }
            ))
            .hint(hint)
            .fail(),
    }
}

/// Fails unless `got` is a JSON error: `status`, application/json, and a
/// body `{"error": "<a non-empty message>"}`.
#[track_caller]
fn expect_json_error(site: &Site, did: &str, got: &Got, status: u16, hint: &str) {
    expect_json_error_in(site, did, got, &[status], hint);
}

/// [`expect_json_error`] where any of `statuses` will do.
#[track_caller]
fn expect_json_error_in(site: &Site, did: &str, got: &Got, statuses: &[u16], hint: &str) {
    let status = if statuses.contains(&got.status) {
        got.status
    } else {
        statuses[0]
    };
    let value = expect_json(site, did, got, status, hint);
    let message = value.get("error").and_then(Value::as_str);
    if message.is_none_or(str::is_empty) {
        site.server
            .report()
            .did(did)
            .expected(r#"a body of the form {"error": "<message>"}"#)
            .got(format!("{value}"))
            .hint("every error body is one JSON object with an \"error\" string: wrap the extractors and map their rejections into it")
            .fail();
    }
}

/// Sends `method path` with a real client and a JSON-ish body of the
/// given Content-Type.
#[track_caller]
fn post(site: &Site, path: &str, content_type: Option<&str>, body: &str) -> Got {
    fetch(
        site,
        "POST",
        path,
        Some((content_type, body.as_bytes().to_vec())),
    )
}

/// Waits until a new connection to the server is refused: the listener is
/// closed. Fails after [`SHUTDOWN_DEADLINE`].
#[track_caller]
fn wait_until_refused(site: &Site, what: &str) {
    let until = Instant::now() + SHUTDOWN_DEADLINE;
    let addr = site.server.addr();
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            // Accepted (or queued in the backlog): the listener is still
            // open. Poll again, with a deadline: there is no event for it.
            _ if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
            other => site
                .server
                .report()
                .did(what)
                .expected(format!(
                    "new connections to be refused within {SHUTDOWN_DEADLINE:?} (the listener closed)"
                ))
                .got(format!("connecting still gives {other:?}"))
                .hint("on SIGTERM or SIGINT, leave the accept loop and drop the TcpListener: the kernel then refuses new connections")
                .fail(),
        }
    }
}

/// Waits for the server to exit on its own; fails unless it exits with
/// code 0 within [`SHUTDOWN_DEADLINE`].
#[track_caller]
fn expect_exit_0(site: &Site, what: &str) {
    let status = site.server.wait_exit(SHUTDOWN_DEADLINE);
    if status.and_then(|s| s.code()) != Some(0) {
        site.server
            .report()
            .did(what)
            .expected(format!("the server to exit with code 0 within {SHUTDOWN_DEADLINE:?}"))
            .got(match status {
                Some(s) => format!("it ended with {s}"),
                None => format!("it was still running after {SHUTDOWN_DEADLINE:?}"),
            })
            .hint("once the connections are done, return from main (exit code 0); a request in flight is finished, an idle connection is closed (hyper's graceful_shutdown)")
            .fail();
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

// GET /sum?a=..&b=.. answers {"sum": a+b} as JSON, negative numbers included.
#[test]
fn test_20_sum_adds_two_integers_as_json() {
    let site = Site::spawn(BIN);
    for (query, sum) in [
        ("a=2&b=40", 42),
        ("b=3&a=-5", -2),
        ("a=9000000000&b=1", 9_000_000_001_i64),
        // The edges of i64: right at them is still a sum.
        ("a=9223372036854775807&b=0", i64::MAX),
        ("a=-9223372036854775808&b=9223372036854775807", -1),
    ] {
        let path = format!("/sum?{query}");
        let got = fetch(&site, "GET", &path, None);
        let did = format!("sent GET {path}");
        let value = expect_json(
            &site,
            &did,
            &got,
            200,
            "GET /sum takes a and b (i64) from the query string (axum's Query extractor) and answers Json(json!({\"sum\": a + b}))",
        );
        if value != json!({ "sum": sum }) {
            site.server
                .report()
                .did(did)
                .expected(format!("{}", json!({ "sum": sum })))
                .got(format!("{value}"))
                .hint("the body is one JSON object with the field \"sum\"")
                .fail();
        }
    }
    site.server.expect_alive("sent GET /sum");
}

// /sum with a missing or non-integer parameter, or a sum past i64, is a 400 with a JSON error body, not a sum of 0 or a wrapped one.
#[test]
fn test_21_sum_rejects_missing_or_bad_parameters_with_a_json_400() {
    let site = Site::spawn(BIN);
    let got = fetch(&site, "GET", "/sum?a=1&b=2", None);
    expect_json(
        &site,
        "sent GET /sum?a=1&b=2",
        &got,
        200,
        "GET /sum?a=1&b=2 answers {\"sum\": 3}",
    );
    let missing = "a and b are both required i64s: a missing one is not 0. Let Query<T> reject it, and turn its rejection into 400 {\"error\": \"...\"} with Content-Type application/json";
    // Arithmetic on what the client sent: a sum past i64 is a client error,
    // never a wrapped number (release builds) or a panic (debug builds,
    // which kill the connection's task: no answer at all).
    let overflow = "a + b can overflow i64 (and a number past i64 cannot be parsed at all): i64::checked_add gives None instead of a wrapped sum or a panic; answer that with 400 {\"error\": \"...\"}";
    let bad = ["?a=1", "?b=1", "", "?a=1&b=two", "?a=1.5&b=2", "?a=&b=1"].map(|q| (q, missing));
    let past_i64 = [
        "?a=9223372036854775807&b=1",
        "?a=-9223372036854775808&b=-1",
        "?a=9223372036854775807&b=9223372036854775807",
        "?a=9223372036854775808&b=0",
    ]
    .map(|q| (q, overflow));
    for (query, hint) in bad.into_iter().chain(past_i64) {
        let path = format!("/sum{query}");
        let got = fetch(&site, "GET", &path, None);
        expect_json_error(&site, &format!("sent GET {path}"), &got, 400, hint);
    }
    site.server.expect_alive("sent bad /sum requests");
}

// POST /greet with {"name", "age"} answers {"greeting": "hello, <name>", "next_age": age + 1}.
#[test]
fn test_22_greet_answers_json() {
    let site = Site::spawn(BIN);
    for (body, want) in [
        (
            r#"{"name": "Ada", "age": 36}"#,
            json!({ "greeting": "hello, Ada", "next_age": 37 }),
        ),
        (
            r#"{"age": 0, "name": "Jürgen \"J\" Müller"}"#,
            json!({ "greeting": "hello, Jürgen \"J\" Müller", "next_age": 1 }),
        ),
        (
            r#"{"name": "max", "age": 4294967295}"#,
            json!({ "greeting": "hello, max", "next_age": 4_294_967_296_u64 }),
        ),
    ] {
        let got = post(&site, "/greet", Some("application/json"), body);
        let did = format!("sent POST /greet (Content-Type: application/json) with {body}");
        let value = expect_json(
            &site,
            &did,
            &got,
            200,
            "POST /greet reads Json<Greet> with name: String and age: u32",
        );
        if value != want {
            site.server
                .report()
                .did(did)
                .expected(format!("{want}"))
                .got(format!("{value}"))
                .hint("greeting is \"hello, \" followed by the name; next_age is age + 1 (u32::MAX + 1 must not overflow)")
                .fail();
        }
    }
    site.server.expect_alive("sent POST /greet");
}

// /greet answers malformed JSON (400), the wrong shape (400 or 422) and the wrong Content-Type (415) with JSON errors.
#[test]
fn test_23_greet_rejects_bad_bodies_with_json_errors() {
    let site = Site::spawn(BIN);
    let got = post(
        &site,
        "/greet",
        Some("application/json"),
        r#"{"name": "Ada", "age": 36}"#,
    );
    expect_json(
        &site,
        "sent a valid POST /greet",
        &got,
        200,
        "POST /greet answers 200 with JSON",
    );
    let hint = "let Json<T> reject the request, and turn its rejection (JsonRejection: status() and body_text()) into {\"error\": \"...\"} with Content-Type application/json";
    for body in [r#"{"name": "Ada", "age": "#, "not json at all", ""] {
        let got = post(&site, "/greet", Some("application/json"), body);
        expect_json_error(
            &site,
            &format!("sent POST /greet with the malformed JSON {body:?}"),
            &got,
            400,
            hint,
        );
    }
    for body in [
        r#"{"name": "Ada"}"#,
        r#"{"name": "Ada", "age": -1}"#,
        r#"{"name": "Ada", "age": 3.5}"#,
        r#"{"name": 7, "age": 36}"#,
        r#"["Ada", 36, "extra"]"#,
    ] {
        let got = post(&site, "/greet", Some("application/json"), body);
        expect_json_error_in(
            &site,
            &format!("sent POST /greet with the wrong shape {body}"),
            &got,
            &[422, 400],
            hint,
        );
    }
    for content_type in [Some("text/plain"), None] {
        let got = post(
            &site,
            "/greet",
            content_type,
            r#"{"name": "Ada", "age": 36}"#,
        );
        expect_json_error(
            &site,
            &format!(
                "sent POST /greet with valid JSON but {}",
                content_type.map_or("no Content-Type".into(), |t| format!("Content-Type: {t}"))
            ),
            &got,
            415,
            hint,
        );
    }
    site.server.expect_alive("sent bad POST /greet requests");
}

// 404 and 405 (from the router and from the static files) have JSON bodies; the 405s keep their Allow header.
#[test]
fn test_24_not_found_and_method_not_allowed_are_json() {
    let site = Site::spawn(BIN);
    let got = fetch(&site, "GET", "/static/hello.txt", None);
    if got.status != 200 {
        site.server
            .report()
            .did("sent GET /static/hello.txt")
            .expected("200 and the file")
            .got(format!("status {}", got.status))
            .hint("serve STATIC_DIR under /static (tower-http's ServeDir)")
            .fail();
    }
    for path in ["/nope", "/hello/a/b", "/static/missing.txt", "/static/data"] {
        let got = fetch(&site, "GET", path, None);
        expect_json_error(
            &site,
            &format!("sent GET {path}"),
            &got,
            404,
            "Router::fallback for unknown paths, and a fallback on ServeDir for missing files: both answer 404 {\"error\": \"...\"} as JSON",
        );
    }
    for (method, path, allowed) in [
        ("POST", "/", "GET"),
        ("GET", "/echo", "POST"),
        ("DELETE", "/sum", "GET"),
        ("POST", "/static/hello.txt", "GET"),
    ] {
        let body = (method == "POST").then(|| (None, b"x".to_vec()));
        let got = fetch(&site, method, path, body);
        let did = format!("sent {method} {path}");
        expect_json_error(
            &site,
            &did,
            &got,
            405,
            "Router::method_not_allowed_fallback gives 405 a JSON body (axum still adds Allow); ServeDir's 405 goes to its fallback",
        );
        let allow = got.header("allow").unwrap_or_default();
        if !allow
            .split(',')
            .any(|m| m.trim().eq_ignore_ascii_case(allowed))
        {
            site.server
                .report()
                .did(did)
                .expected(format!("the 405 to keep an Allow header listing {allowed}"))
                .got(format!("Allow: {allow:?}"))
                .hint("a JSON 405 is still a 405: it says which methods the path takes")
                .fail();
        }
    }
    site.server.expect_alive("sent requests for 404 and 405");
}

// Over 1 MiB is a JSON 413, whether Content-Length announces it or a chunked body turns out that long (axum's default limit is 2 MB).
#[test]
fn test_25_bodies_over_1_mib_get_a_json_413() {
    let site = Site::spawn(BIN);
    // Just under the limit, chunked: echoed.
    let fits = vec![b'f'; MAX_BODY];
    let mut c = site.connect();
    let mut req = http::request("POST", "/echo", &[("Transfer-Encoding", "chunked")], b"");
    req.extend(http::chunked(&fits, 64 << 10));
    c.send(&req);
    let r = http::read_response(&mut c);
    if r.status != 200 || r.body != fits {
        c.report()
            .expected(
                "200 and the 1 MiB (1048576-byte) chunked body echoed: exactly 1 MiB is allowed",
            )
            .got(r.describe())
            .hint("POST /echo echoes chunked bodies up to 1 MiB")
            .fail();
    }
    drop(c);

    // Exactly 1 MiB, announced by Content-Length: echoed (the limit is
    // "at most", so a check with >= is off by one).
    let got = fetch(
        &site,
        "POST",
        "/echo",
        Some((Some("text/plain"), fits.clone())),
    );
    if got.status != 200 || got.body != fits {
        site.server
            .report()
            .did(format!("sent POST /echo with Content-Length: {MAX_BODY} and that many bytes"))
            .expected("200 and the body echoed: a body of exactly 1 MiB is allowed")
            .got(format!("status {}, a {}-byte body", got.status, got.body.len()))
            .hint("the limit is at most 1 MiB: refuse a Content-Length greater than 1048576 (n > MAX_BODY), not one equal to it")
            .fail();
    }

    // One byte over, chunked: 413 (the limit is 1 MiB exactly, not a
    // little more).
    let over = vec![b'o'; MAX_BODY + 1];
    let mut req = http::request("POST", "/echo", &[("Transfer-Encoding", "chunked")], b"");
    req.extend(http::chunked(&over, 64 << 10));
    let got = fetch_raw_json(
        &site,
        &req,
        "sent POST /echo with a chunked body of 1 MiB + 1 byte",
    );
    expect_json_error(
        &site,
        "sent a chunked body of 1 MiB + 1 byte",
        &got,
        413,
        "DefaultBodyLimit::max(1048576) lets through at most 1048576 bytes: one more is a JSON 413",
    );

    // Announced too large: 413 at once.
    let announced = (MAX_BODY + 1).to_string();
    let got = fetch_raw_json(
        &site,
        &http::request("POST", "/echo", &[("Content-Length", &announced)], b""),
        &format!("sent POST /echo announcing Content-Length: {announced}, and no body"),
    );
    expect_json_error(
        &site,
        "announced a body of 1 MiB + 1",
        &got,
        413,
        "a Content-Length over 1 MiB is refused before reading the body: 413 {\"error\": \"...\"}",
    );

    // Chunked and too large: the limit must be 1 MiB, not axum's 2 MB.
    let big = vec![b'b'; MAX_BODY + MAX_BODY / 2];
    let mut req = http::request(
        "POST",
        "/echo",
        &[
            ("Transfer-Encoding", "chunked"),
            ("Content-Type", "text/plain"),
        ],
        b"",
    );
    req.extend(http::chunked(&big, 64 << 10));
    let got = fetch_raw_json(
        &site,
        &req,
        "sent POST /echo with a 1.5 MiB chunked body (no Content-Length to check up front)",
    );
    expect_json_error(
        &site,
        "sent a 1.5 MiB chunked body",
        &got,
        413,
        "a chunked body has no length up front: DefaultBodyLimit::max(1 MiB) stops reading it at 1 MiB (axum's default is 2 MB), and the rejection becomes a JSON 413",
    );
    site.server.expect_alive("sent bodies over 1 MiB");
}

/// Sends `req` raw on a new connection (tolerating a server that answers
/// and closes before reading all of it) and reads one response, as a
/// [`Got`].
#[track_caller]
fn fetch_raw_json(site: &Site, req: &[u8], did: &str) -> Got {
    let mut c = site.connect();
    c.hint(did);
    send_while_open(&mut c, req);
    let r = http::read_response(&mut c);
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in &r.headers {
        if let (Ok(k), Ok(v)) = (
            reqwest::header::HeaderName::from_bytes(k.as_bytes()),
            reqwest::header::HeaderValue::from_str(v),
        ) {
            headers.append(k, v);
        }
    }
    Got {
        status: r.status,
        headers,
        body: r.body,
    }
}

// SIGTERM with an idle keep-alive connection open: the connection is closed, new ones are refused, and the server exits 0.
#[test]
fn test_26_sigterm_closes_idle_connections_and_exits_0() {
    let site = Site::spawn(BIN);
    let mut idle = site.connect();
    idle.send(&http::request("GET", "/", &[], b""));
    let r = http::read_response(&mut idle);
    if r.status != 200 || r.says_close() {
        idle.report()
            .expected("200 on a connection that stays open")
            .got(r.describe())
            .hint("GET / answers hello, world on a keep-alive connection")
            .fail();
    }
    // The connection is now idle between requests, as a browser's is.
    let status = site.server.stop_with(libc::SIGTERM);
    if status.code() != Some(0) {
        site.server
            .report()
            .did("sent SIGTERM with one idle keep-alive connection open")
            .expected("exit code 0")
            .got(format!("the server ended with {status}"))
            .hint("handle SIGTERM (tokio::signal::unix): stop accepting, let the connections finish, return from main")
            .fail();
    }
    idle.hint("the server exited: its idle connection must have been closed");
    idle.expect_closed();
    match TcpStream::connect(site.server.addr()) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
        other => site
            .server
            .report()
            .did("connected after the server exited")
            .expected("connection refused")
            .got(format!("{other:?}"))
            .hint("is something else listening on the port?")
            .fail(),
    }
}

// SIGINT while a request is in flight: new connections are refused at once, but that request is finished before the server exits 0.
#[test]
fn test_27_sigint_finishes_the_request_in_flight_then_exits_0() {
    let site = Site::spawn(BIN);
    let mut c: Client = site.connect();
    // `Expect: 100-continue` makes hyper say "100 Continue" when the
    // handler starts reading the body: from then on the request is in
    // flight, in the handler, waiting for its body.
    let body = b"0123456789";
    c.hint("POST /echo with Expect: 100-continue: hyper answers 100 Continue when the handler starts reading the body");
    c.send(&http::request(
        "POST",
        "/echo",
        &[("Expect", "100-continue"), ("Content-Length", "10")],
        b"",
    ));
    let r = http::read_response(&mut c);
    if r.status != 100 {
        c.report()
            .expected("HTTP/1.1 100 Continue")
            .got(r.describe())
            .hint("serve POST /echo through hyper: it sends 100 Continue once the handler reads the body")
            .fail();
    }
    site.server.signal(libc::SIGINT);
    wait_until_refused(&site, "sent SIGINT while a POST /echo waited for its body");
    // A server that does not drain exits as soon as it stops listening, and
    // the kernel then closes this connection: half a second shows it.
    c.hint("the server got SIGINT while this request was in flight: it must keep the connection open and wait for the body, not exit");
    c.expect_silence(Duration::from_millis(500));
    c.hint("the server got SIGINT while this request was in flight: it must finish it (send the response) before exiting");
    c.send(body);
    let r = http::read_response(&mut c);
    if r.status != 200 || r.body != body {
        c.report()
            .expected(format!("200 and the body {} echoed", show(body)))
            .got(r.describe())
            .hint("graceful shutdown: call graceful_shutdown() on each hyper connection and wait for them to end before returning from main")
            .fail();
    }
    c.hint("after the last response of a shutdown the connection is closed");
    c.expect_closed();
    expect_exit_0(&site, "sent SIGINT, then finished the request in flight");
}
