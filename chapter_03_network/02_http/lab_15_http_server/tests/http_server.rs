//! The grader for lab 15, http_server.
//!
//! Tests 01..19 are the HTTP suite shared with lab 16 (labkit's
//! `http_suite!`; its module docs list them). Lab 15's own tests follow
//! from 20: what a hand-written server must get right that a framework
//! does for you.

use labkit::client::Client;
use labkit::data;
use labkit::http::{self, Response};
use labkit::http_suite::{MAX_BODY, Site, Want, expect, send_while_open};

labkit::http_suite! {
    binary: env!("CARGO_BIN_EXE_http_server"),
    // The spec's limit on request line + headers: 8 KiB.
    header_limit: 8 * 1024,
}

const BIN: &str = env!("CARGO_BIN_EXE_http_server");

/// Fails unless `r` frames its body with a Content-Length that matches it
/// (`len` for a response to HEAD, which has no body).
#[track_caller]
fn expect_content_length(c: &Client, r: &Response, len: usize) {
    let chunked = r
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked || r.header("content-length") != Some(len.to_string().as_str()) {
        c.report()
            .expected(format!(
                "a response framed by Content-Length: {len} (the spec: every response carries Content-Length)"
            ))
            .got(r.describe())
            .hint("add Content-Length to every response you write, errors included: a keep-alive client needs it to know where the body ends")
            .fail();
    }
}

// Every response, success or error, carries a Content-Length that matches its body.
#[test]
fn test_20_every_response_carries_content_length() {
    let site = Site::spawn(BIN);
    let mut c = site.connect();
    for (method, path, status) in [
        ("GET", "/", 200),
        ("GET", "/nope", 404),
        ("POST", "/", 405),
        ("GET", "/static/blob.bin", 200),
        ("GET", "/hello/%FF", 400),
    ] {
        c.send(&http::request(method, path, &[], b""));
        let r = http::read_response(&mut c);
        expect(
            &c,
            &r,
            Want {
                status,
                ..Want::default()
            },
            &format!("{method} {path} gets {status}"),
        );
        expect_content_length(&c, &r, r.body.len());
    }
    c.send(&http::request("HEAD", "/", &[], b""));
    let r = http::read_head_response(&mut c);
    expect_content_length(&c, &r, "hello, world\n".len());
    let mut c = site.connect();
    c.send(b"NOT HTTP AT ALL\r\n\r\n");
    let r = http::read_response(&mut c);
    expect(
        &c,
        &r,
        Want {
            status: 400,
            ..Want::default()
        },
        "garbage gets 400",
    );
    expect_content_length(&c, &r, r.body.len());
    site.server
        .expect_alive("checked Content-Length on every response");
}

// Six mixed requests (GET, POST with Content-Length, chunked POST, HEAD) pipelined and cut into odd-sized pieces, answered in order.
#[test]
fn test_21_answers_a_fragmented_pipelined_mix() {
    let site = Site::spawn(BIN);
    let plain = data::binary(3000, 21);
    let chunky = data::binary(2000, 22);
    let mut wire = http::request("GET", "/hello/mix", &[], b"");
    wire.extend(http::request("POST", "/echo", &[], &plain));
    wire.extend(http::request(
        "POST",
        "/echo",
        &[("Transfer-Encoding", "chunked")],
        b"",
    ));
    wire.extend(http::chunked(&chunky, 333));
    wire.extend(http::request("HEAD", "/static/hello.txt", &[], b""));
    wire.extend(http::request("GET", "/static/hello.txt", &[], b""));
    wire.extend(http::request("GET", "/", &[], b""));
    let mut c = site.connect();
    c.hint("six requests arrived back to back, cut at arbitrary places (mid-line, mid-body, mid-chunk): keep unparsed bytes between reads, take each request off the front of the buffer, and answer every complete one before reading again");
    let sizes = [1, 2, 3, 5, 8, 13, 100, 1000, 7];
    let mut at = 0;
    for size in sizes.iter().cycle() {
        if at == wire.len() {
            break;
        }
        let end = (at + size).min(wire.len());
        c.send(&wire[at..end]);
        at = end;
    }
    let hint = "pipelined requests are answered in order, each with its own body";
    let r = http::read_response(&mut c);
    expect(
        &c,
        &r,
        Want {
            status: 200,
            body: Some(b"hello, mix\n"),
            ..Want::default()
        },
        hint,
    );
    let r = http::read_response(&mut c);
    expect(
        &c,
        &r,
        Want {
            status: 200,
            body: Some(&plain),
            ..Want::default()
        },
        hint,
    );
    let r = http::read_response(&mut c);
    expect(
        &c,
        &r,
        Want {
            status: 200,
            body: Some(&chunky),
            ..Want::default()
        },
        hint,
    );
    let r = http::read_head_response(&mut c);
    expect(
        &c,
        &r,
        Want {
            status: 200,
            ..Want::default()
        },
        hint,
    );
    let r = http::read_response(&mut c);
    expect(
        &c,
        &r,
        Want {
            status: 200,
            body: Some(b"hello from a static file\n"),
            ..Want::default()
        },
        hint,
    );
    let r = http::read_response(&mut c);
    expect(
        &c,
        &r,
        Want {
            status: 200,
            body: Some(b"hello, world\n"),
            ..Want::default()
        },
        hint,
    );
    site.server.expect_alive("sent a fragmented pipelined mix");
}

// Ambiguous framing (Content-Length with Transfer-Encoding, an unknown coding, a space before a colon) gets 400, then close.
#[test]
fn test_22_rejects_ambiguous_framing_with_400_then_closes() {
    let site = Site::spawn(BIN);
    let mut c = site.connect();
    c.send(&http::request("POST", "/echo", &[], b"fine"));
    let r = http::read_response(&mut c);
    expect(
        &c,
        &r,
        Want {
            status: 200,
            body: Some(b"fine"),
            ..Want::default()
        },
        "a plain POST /echo first",
    );
    let cases: [(&str, &[u8]); 3] = [
        (
            "both Content-Length and Transfer-Encoding",
            b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "a Transfer-Encoding other than chunked",
            b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: gzip\r\n\r\nxx",
        ),
        (
            "a space between a header name and its colon",
            b"GET / HTTP/1.1\r\nHost : test\r\n\r\n",
        ),
    ];
    for (what, bytes) in cases {
        let mut c = site.connect();
        c.hint(format!("{what}: a server and a proxy in front of it could disagree on where this request ends (request smuggling); answer 400 and close"));
        c.send(bytes);
        let r = http::read_response(&mut c);
        expect(
            &c,
            &r,
            Want {
                status: 400,
                ..Want::default()
            },
            &format!("{what} gets 400"),
        );
        c.expect_closed();
    }
    site.server.expect_alive("sent ambiguously framed requests");
}

// After a 413 or a 431 the server says Connection: close and closes; a chunked body over 1 MiB gets 413 too.
#[test]
fn test_23_closes_after_413_and_431() {
    let site = Site::spawn(BIN);
    let mut c = site.connect();
    c.send(&http::request("GET", "/", &[], b""));
    let r = http::read_response(&mut c);
    expect(
        &c,
        &r,
        Want {
            status: 200,
            ..Want::default()
        },
        "GET / first",
    );
    let over = (MAX_BODY + 1).to_string();
    let huge_head = http::request("GET", "/", &[("X-Fill", &"h".repeat(9000))], b"");
    let mut chunked = http::request("POST", "/echo", &[("Transfer-Encoding", "chunked")], b"");
    chunked.extend(http::chunked(
        &data::binary(MAX_BODY + 64 * 1024, 23),
        64 * 1024,
    ));
    let cases: [(&str, Vec<u8>, u16); 3] = [
        (
            "announced a body of 1 MiB + 1",
            http::request("POST", "/echo", &[("Content-Length", &over)], b""),
            413,
        ),
        ("sent a chunked body of 1 MiB + 64 KiB", chunked, 413),
        ("sent a 9000-byte header", huge_head, 431),
    ];
    for (what, bytes, status) in cases {
        let mut c = site.connect();
        c.hint(format!(
            "the client {what}: answer {status} with Connection: close, then close the connection"
        ));
        send_while_open(&mut c, &bytes);
        let r = http::read_response(&mut c);
        expect(
            &c,
            &r,
            Want {
                status,
                ..Want::default()
            },
            &format!("{what}: {status}"),
        );
        if !r.says_close() {
            c.report()
                .expected(format!("the {status} response to say Connection: close"))
                .got(r.describe())
                .hint("after a 400, 413 or 431 the rest of the stream cannot be trusted: say Connection: close, then close")
                .fail();
        }
        c.expect_closed();
    }
    site.server.expect_alive("sent requests over the limits");
}

// An HTTP/1.0 request with Connection: keep-alive keeps the connection open for the next request.
#[test]
fn test_24_http_1_0_with_keep_alive_stays_open() {
    let site = Site::spawn(BIN);
    let mut c = site.connect();
    c.hint("an HTTP/1.0 client that sends Connection: keep-alive asks for a persistent connection: answer, and keep reading");
    for name in ["one", "two"] {
        c.send(
            format!("GET /hello/{name} HTTP/1.0\r\nHost: test\r\nConnection: keep-alive\r\n\r\n")
                .as_bytes(),
        );
        let r = http::read_response(&mut c);
        expect(
            &c,
            &r,
            Want {
                status: 200,
                body: Some(format!("hello, {name}\n").as_bytes()),
                ..Want::default()
            },
            "HTTP/1.0 with Connection: keep-alive",
        );
    }
    site.server
        .expect_alive("sent HTTP/1.0 keep-alive requests");
}

/// Sends `req` on a fresh connection and expects a client error (one of
/// `statuses`), then a close, with the server still running after it.
#[track_caller]
fn expect_rejected(site: &Site, req: &[u8], statuses: &[u16], what: &str, hint: &str) {
    let mut c = site.connect();
    c.hint(hint.to_string());
    send_while_open(&mut c, req);
    let r = http::read_response(&mut c);
    if !statuses.contains(&r.status) {
        let want: Vec<String> = statuses.iter().map(u16::to_string).collect();
        c.report()
            .expected(format!("{what}: status {}", want.join(" or ")))
            .got(r.describe())
            .hint(hint)
            .fail();
    }
    c.expect_closed();
    site.server.expect_alive(format!("sent {what}"));
}

// Lengths are digits only, and sizes from the client never wrap: `+5`, `-1`, `5 5` and `0x5` are
// 400; a Content-Length or a chunk size too large for any integer is a client error (400 or
// 413), never a wrapped small number, a panic, or a hang.
#[test]
fn test_25_content_length_and_chunk_sizes_are_checked_digit_by_digit() {
    let site = Site::spawn(BIN);
    for bad in ["+5", "-1", "5 5", "0x5"] {
        let req =
            format!("POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: {bad}\r\n\r\nhello");
        expect_rejected(
            &site,
            req.as_bytes(),
            &[400],
            &format!("Content-Length: {bad}"),
            "Content-Length is 1*DIGIT (RFC 9112): anything else is a bad request. Note that Rust's str::parse::<usize>() accepts a leading '+': check the bytes are all digits first",
        );
    }
    expect_rejected(
        &site,
        b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 99999999999999999999999999\r\n\r\nhello",
        &[400, 413],
        "a Content-Length of 26 digits (more than any integer holds)",
        "a length that does not fit in a usize is a client error (400, or 413: it announces more than 1 MiB); does your parse overflow or wrap?",
    );
    // 2^64 + 5 in hex: a chunk-size parser that wraps reads a 5-byte chunk.
    expect_rejected(
        &site,
        b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n",
        &[400, 413],
        "a chunk size of 17 hex digits (2^64 + 5)",
        "a chunk size too large for a usize must be rejected (400 or 413), not wrapped: do you multiply by 16 with overflow checks, or limit the number of digits?",
    );
}

// Header names and the Connection header's tokens are case-insensitive: `connection: Close`,
// `CONNECTION: keep-alive, CLOSE` close the connection, `content-LENGTH` frames a body, and an
// HTTP/1.0 client's `Connection: Keep-Alive` keeps it open.
#[test]
fn test_26_header_names_and_connection_tokens_in_any_case() {
    let site = Site::spawn(BIN);
    for connection in ["connection: Close", "CONNECTION: keep-alive, CLOSE"] {
        let mut c = site.connect();
        let req = format!("GET /hello/case HTTP/1.1\r\nHost: test\r\n{connection}\r\n\r\n");
        c.hint(format!(
            "the client sent `{connection}`: header names and Connection's comma-separated tokens compare case-insensitively (eq_ignore_ascii_case), so this asks to close"
        ));
        c.send(req.as_bytes());
        let r = http::read_response(&mut c);
        expect(
            &c,
            &r,
            Want {
                status: 200,
                body: Some(b"hello, case\n"),
                ..Want::default()
            },
            &format!("GET with `{connection}`"),
        );
        c.expect_closed();
    }
    let mut c = site.connect();
    c.hint("`content-LENGTH: 5` is Content-Length: header names are case-insensitive");
    c.send(b"POST /echo HTTP/1.1\r\nHost: test\r\ncontent-LENGTH: 5\r\n\r\nhello");
    let r = http::read_response(&mut c);
    expect(
        &c,
        &r,
        Want {
            status: 200,
            body: Some(b"hello"),
            ..Want::default()
        },
        "POST /echo framed by `content-LENGTH: 5`",
    );
    let mut c = site.connect();
    c.hint("an HTTP/1.0 client that sends `Connection: Keep-Alive` (any case) asks to stay open");
    for name in ["one", "two"] {
        c.send(
            format!("GET /hello/{name} HTTP/1.0\r\nHost: test\r\nConnection: Keep-Alive\r\n\r\n")
                .as_bytes(),
        );
        let r = http::read_response(&mut c);
        expect(
            &c,
            &r,
            Want {
                status: 200,
                body: Some(format!("hello, {name}\n").as_bytes()),
                ..Want::default()
            },
            "HTTP/1.0 with `Connection: Keep-Alive`",
        );
    }
    site.server.expect_alive("sent headers in mixed case");
}
