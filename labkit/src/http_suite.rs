//! The HTTP servers' shared conformance suite: [`http_suite!`](crate::http_suite).
//!
//! Chapter 3 builds "the hello service" twice: by hand on `std::net`
//! (lab 15) and with axum (lab 16). From the outside they must behave the
//! same, so they share one grader. A lab's test file says:
//!
//! ```text
//! labkit::http_suite! {
//!     binary: env!("CARGO_BIN_EXE_http_server"),
//!     // The most bytes of request line + headers the server accepts; the
//!     // suite sends half of it (must work) and twice it (must get 431).
//!     header_limit: 8 * 1024,
//! }
//!
//! // Lab-specific tests follow, numbered from 20.
//! ```
//!
//! and gets these `#[test]` functions, numbered so that `cargo test 05`
//! still picks one step (numbers 01..19 belong to the suite):
//!
//! | test | checks |
//! |---|---|
//! | `test_01_get_root_says_hello_world` | a real client gets `hello, world\n` as text/plain, query ignored |
//! | `test_02_hello_greets_a_percent_decoded_name` | `/hello/J%C3%BCrgen`; `/hello/` and `/hello/a/b` are 404, invalid UTF-8 is 400 |
//! | `test_03_echo_returns_a_512_kib_binary_body` | a real client's large POST comes back byte for byte, with its Content-Type |
//! | `test_04_parses_requests_sent_one_byte_at_a_time` | fragmentation of the head and of the body |
//! | `test_05_keeps_the_connection_open_between_requests` | HTTP/1.1 is persistent: five requests, one connection |
//! | `test_06_answers_pipelined_requests_in_order` | three requests in one write, three answers in order |
//! | `test_07_closes_after_connection_close` | the request's `Connection: close` is honoured |
//! | `test_08_answers_http_1_0_then_closes` | HTTP/1.0 defaults to one request per connection |
//! | `test_09_head_sends_the_get_headers_without_a_body` | Content-Length of the GET body, no body, next request still parses |
//! | `test_10_unknown_paths_get_404` | unknown paths, near misses of the routes |
//! | `test_11_wrong_method_gets_405_with_allow` | 405 and an `Allow` header naming the right methods |
//! | `test_12_malformed_requests_get_400_and_the_server_survives` | bad request lines, headers, lengths, chunk sizes |
//! | `test_13_a_body_over_1_mib_gets_413_without_being_sent` | exactly 1 MiB is echoed; 1 MiB + 1 announced gets 413 at once |
//! | `test_14_headers_over_the_limit_get_431` | heads of limit - 1 and limit bytes (blank line included) are served; limit + 1 and twice the limit get 431 |
//! | `test_15_serves_static_files_with_their_content_type` | by extension, nested, spaces in names, binary; 404 when missing |
//! | `test_16_never_serves_a_file_outside_the_static_dir` | `..`, `%2e%2e`, `%2f`, absolute paths: a 4xx, never the secret |
//! | `test_17_decodes_a_chunked_request_body` | `Transfer-Encoding: chunked` bodies are decoded, the next request parses |
//! | `test_18_serves_a_second_client_while_the_first_is_idle` | an idle or half-sent request blocks nobody |
//! | `test_19_survives_clients_that_vanish_mid_request` | resets mid-head, mid-body, and before reading the answer |
//!
//! # What it asserts, and what it leaves open
//!
//! The suite checks what chapter 3's spec fixes and a correct hyper/axum
//! server also does: status codes, bodies, the media type of
//! `Content-Type` (parameters such as `; charset=utf-8` are ignored), the
//! `Allow` header's methods, whether the connection stays open. It does not
//! look at reason phrases, `Date`, `Server`, the bodies of error responses,
//! or how a response body is framed (`Content-Length` or chunked: a
//! framework may chunk; lab 15 checks its own `Content-Length` in its
//! lab-specific tests). Where hyper answers a malformed request by itself
//! (400 then close), the suite asks for exactly that; where a framework
//! legitimately differs (how large a head it accepts) it is a parameter.
//!
//! # Design
//!
//! Like [`echo`](crate::echo), the macro stays small: each generated test
//! calls one plain function here, which makes its own [`Site`] (a fresh
//! temporary static directory and a server started on it), so tests share
//! nothing and run in any order, as threads of one process or one process
//! each. Tests use the real client ([`http::client`]) where a real client
//! is the point (large bodies, content types) and raw sockets
//! ([`Client`] with [`http::request`] and [`http::read_response`]) for what
//! no real client sends and for seeing the connection itself.

use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Instant;

use crate::client::Client;
use crate::http::{self, Response};
use crate::report::show;
use crate::server::Server;

/// The largest request body the spec accepts: 1 MiB.
pub const MAX_BODY: usize = 1 << 20;

/// The size of test_03's body.
pub const ECHO_BYTES: usize = 512 << 10;

/// The bytes of the file outside the static directory; no response may
/// carry them.
pub const SECRET: &[u8] = b"TOP SECRET: this file lies outside the static directory\n";

/// The files of the static directory: path under `public/`, content.
pub fn static_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "index.html",
            b"<!doctype html>\n<title>lab</title>\n<p>hello from index.html</p>\n".to_vec(),
        ),
        ("hello.txt", b"hello from a static file\n".to_vec()),
        ("style.css", b"body { font-family: sans-serif; }\n".to_vec()),
        ("data/nested.json", b"{\"nested\": true}\n".to_vec()),
        (
            "with space.txt",
            b"a file with a space in its name\n".to_vec(),
        ),
        ("blob.bin", crate::data::binary(64 << 10, 5)),
    ]
}

/// The suite; see the module docs. Generates numbered `#[test]` functions in
/// the calling test file.
#[macro_export]
macro_rules! http_suite {
    (binary: $bin:expr, header_limit: $limit:expr $(,)?) => {
        // GET / with a real client: 200, text/plain, "hello, world\n"; the query string is ignored.
        #[test]
        fn test_01_get_root_says_hello_world() {
            $crate::http_suite::root($bin)
        }

        // /hello/<name> greets the percent-decoded name; /hello/ and /hello/a/b are 404, invalid UTF-8 is 400.
        #[test]
        fn test_02_hello_greets_a_percent_decoded_name() {
            $crate::http_suite::hello($bin)
        }

        // POST /echo with a real client: 512 KiB of binary come back byte for byte, with their Content-Type.
        #[test]
        fn test_03_echo_returns_a_512_kib_binary_body() {
            $crate::http_suite::echo_large($bin)
        }

        // A GET and a POST arrive one byte per segment: the parser must not assume a read holds a whole request.
        #[test]
        fn test_04_parses_requests_sent_one_byte_at_a_time() {
            $crate::http_suite::one_byte_at_a_time($bin)
        }

        // Five requests, one after the other, on one connection: HTTP/1.1 connections are persistent.
        #[test]
        fn test_05_keeps_the_connection_open_between_requests() {
            $crate::http_suite::keep_alive($bin)
        }

        // Three requests in one write get three responses, in order: a read may hold several requests.
        #[test]
        fn test_06_answers_pipelined_requests_in_order() {
            $crate::http_suite::pipelining($bin)
        }

        // A request with Connection: close is answered, the response says close, and the server closes.
        #[test]
        fn test_07_closes_after_connection_close() {
            $crate::http_suite::connection_close($bin)
        }

        // An HTTP/1.0 request is answered, then the connection is closed.
        #[test]
        fn test_08_answers_http_1_0_then_closes() {
            $crate::http_suite::http_1_0($bin)
        }

        // HEAD gets GET's status and Content-Length and no body; the next request on the connection still parses.
        #[test]
        fn test_09_head_sends_the_get_headers_without_a_body() {
            $crate::http_suite::head($bin)
        }

        // Paths no route knows get 404, including near misses of the real routes.
        #[test]
        fn test_10_unknown_paths_get_404() {
            $crate::http_suite::not_found($bin)
        }

        // A known path with the wrong method gets 405 and an Allow header naming the right ones.
        #[test]
        fn test_11_wrong_method_gets_405_with_allow() {
            $crate::http_suite::method_not_allowed($bin)
        }

        // Malformed requests (request line, header line, Content-Length, chunk size) get 400; the server survives.
        #[test]
        fn test_12_malformed_requests_get_400_and_the_server_survives() {
            $crate::http_suite::malformed($bin)
        }

        // Exactly 1 MiB is echoed; a Content-Length over 1 MiB gets 413 before the body is sent.
        #[test]
        fn test_13_a_body_over_1_mib_gets_413_without_being_sent() {
            $crate::http_suite::too_large($bin)
        }

        // Headers of half the limit are served; twice the limit gets 431.
        #[test]
        fn test_14_headers_over_the_limit_get_431() {
            $crate::http_suite::header_limit($bin, $limit)
        }

        // /static/<path> serves files with the Content-Type of their extension, and 404 when missing.
        #[test]
        fn test_15_serves_static_files_with_their_content_type() {
            $crate::http_suite::static_files_served($bin)
        }

        // Traversal attempts (.., %2e%2e, %2f, an absolute path) get a 4xx and never the file outside.
        #[test]
        fn test_16_never_serves_a_file_outside_the_static_dir() {
            $crate::http_suite::traversal($bin)
        }

        // A chunked request body is decoded for POST /echo, and the request after it still parses.
        #[test]
        fn test_17_decodes_a_chunked_request_body() {
            $crate::http_suite::chunked_body($bin)
        }

        // A client idle mid-request, and one that sends nothing, block nobody; the first is served when it finishes.
        #[test]
        fn test_18_serves_a_second_client_while_the_first_is_idle() {
            $crate::http_suite::idle_client($bin)
        }

        // Clients that reset mid-head, mid-body, or before reading their answer hurt only themselves.
        #[test]
        fn test_19_survives_clients_that_vanish_mid_request() {
            $crate::http_suite::vanishing_clients($bin)
        }
    };
}

// ---------------------------------------------------------------------------
// The site: a static directory and a server on it
// ---------------------------------------------------------------------------

/// A server started on a fresh static directory. Fields drop in order: the
/// server is killed before its directory is removed.
pub struct Site {
    pub server: Server,
    /// `<tmp>/public`, the static directory the server was given.
    pub public: PathBuf,
    /// `<tmp>/secret.txt`, next to `public/`, outside it.
    pub secret: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Site {
    /// Makes `<tmp>/public` with [`static_files`] and `<tmp>/secret.txt`,
    /// and starts `<bin> 127.0.0.1:0 <tmp>/public`.
    #[track_caller]
    pub fn spawn(bin: &str) -> Site {
        let dir = tempfile::Builder::new()
            .prefix("http-suite-")
            .tempdir()
            .unwrap_or_else(|e| panic!("[test] could not make a temporary directory: {e}"));
        let public = dir.path().join("public");
        for (path, content) in static_files() {
            let file = public.join(path);
            std::fs::create_dir_all(file.parent().expect("a file has a parent"))
                .and_then(|()| std::fs::write(&file, content))
                .unwrap_or_else(|e| panic!("[test] could not write {}: {e}", file.display()));
        }
        let secret = dir.path().join("secret.txt");
        std::fs::write(&secret, SECRET)
            .unwrap_or_else(|e| panic!("[test] could not write {}: {e}", secret.display()));
        let server = Server::builder(bin).arg(&public).spawn();
        Site {
            server,
            public,
            secret,
            dir,
        }
    }

    /// A raw connection to the server.
    #[track_caller]
    pub fn connect(&self) -> Client {
        Client::connect_to(&self.server)
    }
}

// ---------------------------------------------------------------------------
// Real-client requests and checks
// ---------------------------------------------------------------------------

/// What a real client got.
pub struct Got {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Got {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    fn describe(&self) -> String {
        format!(
            "status {}, Content-Type {}, body ({} bytes) {}",
            self.status,
            self.header("content-type")
                .map_or("(none)".to_string(), |v| format!("{v:?}")),
            self.body.len(),
            show(&self.body)
        )
    }
}

/// Sends `method path` with a real client (and a body with its
/// Content-Type, when given); fails with the server's stderr when no
/// response comes.
#[track_caller]
pub fn fetch(site: &Site, method: &str, path: &str, body: Option<(Option<&str>, Vec<u8>)>) -> Got {
    let client = http::client();
    let method_v = reqwest::Method::from_bytes(method.as_bytes()).expect("a valid method");
    let mut req = client.request(method_v, http::url(&site.server, path));
    let mut did = format!("sent {method} {path} with a real HTTP client (reqwest)");
    if let Some((content_type, bytes)) = body {
        did.push_str(&format!(
            " with a {}-byte body{}",
            bytes.len(),
            content_type.map_or(String::new(), |t| format!(" of Content-Type {t}"))
        ));
        if let Some(t) = content_type {
            req = req.header("content-type", t);
        }
        req = req.body(bytes);
    }
    // On a helper thread, watched: a parked server fails at once.
    let res = site.server.watched(&did, move || {
        req.send().and_then(|r| {
            let status = r.status().as_u16();
            let headers = r.headers().clone();
            r.bytes().map(|b| Got {
                status,
                headers,
                body: b.to_vec(),
            })
        })
    });
    match res {
        Ok(got) => got,
        Err(e) => site
            .server
            .report()
            .did(did)
            .expected("an HTTP response")
            .got(format!("the client failed: {}", crate::report::error_chain(&e)))
            .hint("do you answer every request with a complete response (status line, headers with Content-Length, a blank line, the body), and keep reading the next request?")
            .fail(),
    }
}

/// The media type of a Content-Type value: lower case, without parameters.
pub fn media_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// What a response should be; `None` fields are not checked.
#[derive(Default, Clone, Copy)]
pub struct Want<'a> {
    pub status: u16,
    pub media: Option<&'a str>,
    pub body: Option<&'a [u8]>,
}

impl Want<'_> {
    fn describe(&self) -> String {
        let mut s = format!("status {}", self.status);
        if let Some(m) = self.media {
            s.push_str(&format!(", Content-Type {m}"));
        }
        if let Some(b) = self.body {
            s.push_str(&format!(", body ({} bytes) {}", b.len(), show(b)));
        }
        s
    }

    /// What does not match, if anything.
    fn mismatch(&self, status: u16, content_type: Option<&str>, body: &[u8]) -> Option<String> {
        if status != self.status {
            return Some(format!("status {status} instead of {}", self.status));
        }
        if let Some(m) = self.media {
            let got = content_type.map(media_type);
            if got.as_deref() != Some(m) {
                return Some(format!(
                    "Content-Type {} instead of {m}",
                    content_type.map_or("(none)".to_string(), |v| format!("{v:?}"))
                ));
            }
        }
        if let Some(b) = self.body
            && body != b
        {
            let at = crate::report::first_difference(b, body).unwrap_or_default();
            return Some(format!(
                "a body of {} bytes instead of {} {at}",
                body.len(),
                b.len()
            ));
        }
        None
    }
}

/// Fails unless a real client's response matches `want`.
#[track_caller]
pub fn check(site: &Site, did: &str, got: &Got, want: Want, hint: &str) {
    let ct = got.header("content-type");
    if let Some(what) = want.mismatch(got.status, ct.as_deref(), &got.body) {
        site.server
            .report()
            .did(did)
            .expected(want.describe())
            .got(format!("{what}: {}", got.describe()))
            .hint(hint)
            .fail();
    }
}

/// Fetches with a real client and checks in one go.
#[track_caller]
pub fn fetch_check(
    site: &Site,
    method: &str,
    path: &str,
    body: Option<(Option<&str>, Vec<u8>)>,
    want: Want,
    hint: &str,
) -> Got {
    let did = format!("sent {method} {path} with a real HTTP client");
    let got = fetch(site, method, path, body);
    check(site, &did, &got, want, hint);
    got
}

// ---------------------------------------------------------------------------
// Raw-socket requests and checks
// ---------------------------------------------------------------------------

/// Fails unless a raw response matches `want`, quoting the connection.
#[track_caller]
pub fn expect(c: &Client, r: &Response, want: Want, hint: &str) {
    if let Some(what) = want.mismatch(r.status, r.header("content-type"), &r.body) {
        c.report()
            .expected(want.describe())
            .got(format!("{what}:\n{}", r.describe()))
            .hint(hint)
            .fail();
    }
}

/// Fails if the response says it closes the connection (an HTTP/1.1
/// server keeps it open unless asked otherwise).
#[track_caller]
pub fn expect_kept_open(c: &Client, r: &Response, hint: &str) {
    if r.says_close() {
        c.report()
            .expected(
                "a response that keeps the connection open (HTTP/1.1 without Connection: close)",
            )
            .got(r.describe())
            .hint(hint)
            .fail();
    }
}

/// Sends `bytes` raw, tolerating the server closing or resetting the
/// connection meanwhile (it may answer and close before reading all of an
/// oversized request); returns how many bytes went out. Gives up when
/// nothing can be written for the client's read deadline.
pub fn send_while_open(c: &mut Client, bytes: &[u8]) -> usize {
    let fd = c.as_raw_fd();
    let mut off = 0;
    let mut progress = Instant::now();
    while off < bytes.len() {
        // SAFETY: `fd` is the client's open socket for the whole call and
        // the buffer is valid for its length. MSG_NOSIGNAL: a closed peer
        // gives EPIPE, not SIGPIPE.
        let n = unsafe {
            libc::send(
                fd,
                bytes[off..].as_ptr().cast(),
                bytes.len() - off,
                libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            off += n as usize;
            progress = Instant::now();
            continue;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => {
                let left = crate::client::READ_DEADLINE.saturating_sub(progress.elapsed());
                if left.is_zero() {
                    break;
                }
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut p, 1, left.as_millis().min(1000) as i32) };
            }
            // EPIPE, ECONNRESET: the server has closed; what it answered
            // is still there to read.
            _ => break,
        }
    }
    off
}

fn text(body: &str) -> Want<'_> {
    Want {
        status: 200,
        media: Some("text/plain"),
        body: Some(body.as_bytes()),
    }
}

fn status(status: u16) -> Want<'static> {
    Want {
        status,
        ..Want::default()
    }
}

// ---------------------------------------------------------------------------
// The cases
// ---------------------------------------------------------------------------

/// test_01: GET / with a real client, then with a query string.
#[track_caller]
pub fn root(bin: &str) {
    let site = Site::spawn(bin);
    fetch_check(
        &site,
        "GET",
        "/",
        None,
        text("hello, world\n"),
        "GET / answers 200 with Content-Type text/plain; charset=utf-8 and the body \"hello, world\\n\": do you parse the request line and write a complete response?",
    );
    fetch_check(
        &site,
        "GET",
        "/?lang=en&x=1",
        None,
        text("hello, world\n"),
        "the query string is not part of the path: do you cut the target at '?' before routing?",
    );
    site.server.expect_alive("sent GET /");
}

/// test_02: /hello/<name>, percent-decoded; the near misses.
#[track_caller]
pub fn hello(bin: &str) {
    let site = Site::spawn(bin);
    fetch_check(
        &site,
        "GET",
        "/hello/ferris",
        None,
        text("hello, ferris\n"),
        "GET /hello/<name> answers \"hello, <name>\\n\"",
    );
    let decode_hint =
        "<name> is percent-decoded: %XX is the byte 0xXX, and the bytes are UTF-8 (%C3%BC is ü)";
    fetch_check(
        &site,
        "GET",
        "/hello/J%C3%BCrgen",
        None,
        text("hello, Jürgen\n"),
        decode_hint,
    );
    fetch_check(
        &site,
        "GET",
        "/hello/a%20b?greeting=formal",
        None,
        text("hello, a b\n"),
        "%20 is a space; and the query string is not part of the name",
    );
    for path in ["/hello/", "/hello/a/b"] {
        fetch_check(
            &site,
            "GET",
            path,
            None,
            status(404),
            "<name> is exactly one non-empty path segment: /hello/ and /hello/a/b match no route (404)",
        );
    }
    fetch_check(
        &site,
        "GET",
        "/hello/%FF",
        None,
        status(400),
        "%FF decodes to the byte 0xFF, which is not valid UTF-8: that name is a bad request (400)",
    );
    site.server.expect_alive("sent /hello requests");
}

/// test_03: 512 KiB of binary through POST /echo with a real client, with
/// a Content-Type and without one.
#[track_caller]
pub fn echo_large(bin: &str) {
    let site = Site::spawn(bin);
    let data = crate::data::binary(ECHO_BYTES, 3);
    let got = fetch(
        &site,
        "POST",
        "/echo",
        Some((Some("application/x-lab-test"), data.clone())),
    );
    check(
        &site,
        "sent POST /echo with 512 KiB of binary data (Content-Type: application/x-lab-test) with a real HTTP client",
        &got,
        Want {
            status: 200,
            media: Some("application/x-lab-test"),
            body: Some(&data),
        },
        "the body arrives over many reads: read exactly Content-Length bytes (loop), then answer with the same bytes and the request's Content-Type",
    );
    let small = b"no content type here".to_vec();
    let got = fetch(&site, "POST", "/echo", Some((None, small.clone())));
    check(
        &site,
        "sent POST /echo with a 20-byte body and no Content-Type",
        &got,
        Want {
            status: 200,
            media: Some("application/octet-stream"),
            body: Some(&small),
        },
        "without a Content-Type in the request, /echo answers application/octet-stream",
    );
    site.server.expect_alive("posted 512 KiB to /echo");
}

/// test_04: a GET then a POST, each byte in its own segment, on one
/// connection.
#[track_caller]
pub fn one_byte_at_a_time(bin: &str) {
    let site = Site::spawn(bin);
    let mut c = site.connect();
    c.hint("the request arrived one byte per read: do you keep reading until the blank line that ends the head (and then until the whole body is there), rather than parsing whatever one read returned?");
    for b in http::request("GET", "/hello/bytes", &[("User-Agent", "one-byte")], b"") {
        c.send(&[b]);
    }
    let r = http::read_response(&mut c);
    expect(
        &c,
        &r,
        text("hello, bytes\n"),
        "a request sent one byte at a time is still one request",
    );
    let body = b"a body that also arrives one byte at a time";
    for b in http::request("POST", "/echo", &[("Content-Type", "text/plain")], body) {
        c.send(&[b]);
    }
    let r = http::read_response(&mut c);
    expect(
        &c,
        &r,
        Want {
            status: 200,
            media: Some("text/plain"),
            body: Some(body),
        },
        "the body arrived one byte per read: do you wait for all Content-Length bytes before answering?",
    );
    site.server
        .expect_alive("sent two requests one byte at a time");
}

/// test_05: five requests one after the other on one connection.
#[track_caller]
pub fn keep_alive(bin: &str) {
    let site = Site::spawn(bin);
    let mut c = site.connect();
    let hint = "HTTP/1.1 connections are persistent: after answering, read the next request on the same connection; close only on Connection: close, HTTP/1.0, end of file or an error";
    c.hint(hint);
    for i in 1..=5 {
        let (req, want_body) = if i % 2 == 0 {
            let body = format!("request {i} on one connection");
            (
                http::request("POST", "/echo", &[], body.as_bytes()),
                body.into_bytes(),
            )
        } else {
            (
                http::request("GET", &format!("/hello/number{i}"), &[], b""),
                format!("hello, number{i}\n").into_bytes(),
            )
        };
        c.send(&req);
        let r = http::read_response(&mut c);
        expect(
            &c,
            &r,
            Want {
                status: 200,
                body: Some(&want_body),
                ..Want::default()
            },
            hint,
        );
        expect_kept_open(&c, &r, hint);
    }
    site.server
        .expect_alive("sent five requests on one connection");
}

/// test_06: three requests in one write.
#[track_caller]
pub fn pipelining(bin: &str) {
    let site = Site::spawn(bin);
    let mut c = site.connect();
    let mut all = http::request("GET", "/hello/first", &[], b"");
    all.extend(http::request("POST", "/echo", &[], b"second, a body"));
    all.extend(http::request("GET", "/hello/third", &[], b""));
    c.hint("three requests arrived in one write: after answering one, look for the next request in what you already read before reading again; answer them in order");
    c.send(&all);
    let hint = "pipelined requests are answered in the order they came";
    let r = http::read_response(&mut c);
    expect(&c, &r, text("hello, first\n"), hint);
    let r = http::read_response(&mut c);
    expect(
        &c,
        &r,
        Want {
            status: 200,
            body: Some(b"second, a body"),
            ..Want::default()
        },
        hint,
    );
    let r = http::read_response(&mut c);
    expect(&c, &r, text("hello, third\n"), hint);
    site.server.expect_alive("sent three pipelined requests");
}

/// test_07: a normal request, then one with Connection: close.
#[track_caller]
pub fn connection_close(bin: &str) {
    let site = Site::spawn(bin);
    let mut c = site.connect();
    c.send(&http::request("GET", "/hello/before", &[], b""));
    let r = http::read_response(&mut c);
    expect(
        &c,
        &r,
        text("hello, before\n"),
        "GET /hello/before on a fresh connection",
    );
    c.send(&http::request("GET", "/", &[("Connection", "close")], b""));
    let r = http::read_response(&mut c);
    expect(
        &c,
        &r,
        text("hello, world\n"),
        "a request with Connection: close is still answered",
    );
    if !r.says_close() {
        c.report()
            .expected("the response to a request with Connection: close to say Connection: close")
            .got(r.describe())
            .hint("when the client asks to close, answer with Connection: close, then close the connection")
            .fail();
    }
    c.hint("the client sent Connection: close: after the response, close the connection (drop the socket)");
    c.expect_closed();
    site.server.expect_alive("sent Connection: close");
}

/// test_08: an HTTP/1.0 request.
#[track_caller]
pub fn http_1_0(bin: &str) {
    let site = Site::spawn(bin);
    let mut c = site.connect();
    c.send(b"GET /hello/old HTTP/1.0\r\nHost: test\r\n\r\n");
    let r = http::read_response(&mut c);
    expect(
        &c,
        &r,
        text("hello, old\n"),
        "an HTTP/1.0 request is answered like an HTTP/1.1 one",
    );
    c.hint("HTTP/1.0 connections carry one request unless the client sends Connection: keep-alive: close after the response");
    c.expect_closed();
    site.server.expect_alive("sent an HTTP/1.0 request");
}

/// test_09: GET, HEAD, and a request after the HEAD, on one connection;
/// also HEAD of a static file.
#[track_caller]
pub fn head(bin: &str) {
    let site = Site::spawn(bin);
    let mut c = site.connect();
    c.send(&http::request("GET", "/hello/head", &[], b""));
    let get = http::read_response(&mut c);
    expect(
        &c,
        &get,
        text("hello, head\n"),
        "GET /hello/head before the HEAD",
    );
    let hint = "HEAD gets exactly GET's status and headers (Content-Length is the GET body's length) and no body at all: the next bytes on the connection are the next response";
    for (path, len) in [
        ("/hello/head", "hello, head\n".len()),
        ("/static/hello.txt", "hello from a static file\n".len()),
    ] {
        c.send(&http::request("HEAD", path, &[], b""));
        let r = http::read_head_response(&mut c);
        expect(
            &c,
            &r,
            Want {
                status: 200,
                media: Some("text/plain"),
                body: None,
            },
            hint,
        );
        let cl = r.header("content-length");
        if cl != Some(len.to_string().as_str()) {
            c.report()
                .expected(format!(
                    "HEAD {path} to carry Content-Length: {len}, the length of GET's body"
                ))
                .got(r.describe())
                .hint(hint)
                .fail();
        }
    }
    c.hint("after a HEAD, the next request on the connection got no proper answer: did the HEAD response carry a body after all (it would be read as the start of the next response)?");
    c.send(&http::request("GET", "/hello/after", &[], b""));
    let r = http::read_response(&mut c);
    expect(&c, &r, text("hello, after\n"), hint);
    site.server.expect_alive("sent HEAD requests");
}

/// test_10: 404 for paths no route knows, after a known one works.
#[track_caller]
pub fn not_found(bin: &str) {
    let site = Site::spawn(bin);
    fetch_check(
        &site,
        "GET",
        "/",
        None,
        text("hello, world\n"),
        "GET / first",
    );
    for path in [
        "/nope",
        "/hello",
        "/echo/more",
        "/index.html",
        "/static/missing.txt",
        "/statics/hello.txt",
    ] {
        fetch_check(
            &site,
            "GET",
            path,
            None,
            status(404),
            "a path that matches no route, or a static file that does not exist, gets 404 Not Found (and the connection stays usable)",
        );
    }
    site.server.expect_alive("sent requests for unknown paths");
}

/// test_11: 405 with Allow for known paths and the wrong method.
#[track_caller]
pub fn method_not_allowed(bin: &str) {
    let site = Site::spawn(bin);
    fetch_check(
        &site,
        "GET",
        "/",
        None,
        text("hello, world\n"),
        "GET / first",
    );
    for (method, path, allowed) in [
        ("POST", "/", "GET"),
        ("DELETE", "/hello/ferris", "GET"),
        ("GET", "/echo", "POST"),
        ("PUT", "/echo", "POST"),
        ("POST", "/static/hello.txt", "GET"),
    ] {
        let body = (method != "GET").then(|| (None, b"x".to_vec()));
        let got = fetch(&site, method, path, body);
        let did = format!("sent {method} {path} with a real HTTP client");
        check(
            &site,
            &did,
            &got,
            status(405),
            "a known path with a method it does not take gets 405 Method Not Allowed",
        );
        let allow = got.header("allow").unwrap_or_default();
        let methods: Vec<String> = allow
            .split(',')
            .map(|m| m.trim().to_ascii_uppercase())
            .collect();
        if !methods.iter().any(|m| m == allowed) || methods.iter().any(|m| m == method) {
            site.server
                .report()
                .did(did)
                .expected(format!(
                    "405 with an Allow header listing {allowed} (and not {method})"
                ))
                .got(format!("Allow: {allow:?}"))
                .hint(
                    "a 405 must say which methods the path takes: Allow: GET, HEAD or Allow: POST",
                )
                .fail();
        }
    }
    site.server
        .expect_alive("sent requests with the wrong method");
}

/// test_12: malformed requests, each on a fresh connection: 400; those
/// broken in the head also close the connection.
#[track_caller]
pub fn malformed(bin: &str) {
    let site = Site::spawn(bin);
    let head_cases: [(&str, &[u8]); 7] = [
        ("a request line with one word", b"GARBAGE\r\n\r\n"),
        ("a request line without a version", b"GET /\r\nHost: test\r\n\r\n"),
        (
            "a request line with an extra word",
            b"GET / HTTP/1.1 extra\r\nHost: test\r\n\r\n",
        ),
        ("a version that is not HTTP/1.x", b"GET / FTP/1.1\r\nHost: test\r\n\r\n"),
        (
            "a header line without a colon",
            b"GET / HTTP/1.1\r\nHost: test\r\nthis line has no colon\r\n\r\n",
        ),
        (
            "a Content-Length that is not a number",
            b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: twelve\r\n\r\n",
        ),
        (
            "two different Content-Lengths",
            b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        ),
    ];
    for (what, bytes) in head_cases {
        let mut c = site.connect();
        c.hint(format!("{what} is a bad request: answer 400 Bad Request, then close the connection (the rest of the stream cannot be trusted)"));
        c.send(bytes);
        let r = http::read_response(&mut c);
        expect(&c, &r, status(400), &format!("{what}: 400 Bad Request"));
        c.expect_closed();
    }
    // A bad chunk size is found while reading the body; the answer must
    // still be 400 (whether the connection closes is left open here).
    let mut c = site.connect();
    c.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\nabc\r\n0\r\n\r\n");
    let r = http::read_response(&mut c);
    expect(
        &c,
        &r,
        status(400),
        "a chunk size must be hexadecimal digits: \"xyz\" makes the body malformed, 400 Bad Request",
    );
    drop(c);
    let mut c = site.connect();
    c.send(&http::request("GET", "/hello/survivor", &[], b""));
    let r = http::read_response(&mut c);
    expect(
        &c,
        &r,
        text("hello, survivor\n"),
        "after the malformed requests, a good one on a new connection",
    );
    site.server.expect_alive("sent malformed requests");
}

/// test_13: exactly 1 MiB is echoed; 1 MiB + 1 (and 10 GiB) announced get
/// 413 without the body ever being sent.
#[track_caller]
pub fn too_large(bin: &str) {
    let site = Site::spawn(bin);
    let data = crate::data::binary(MAX_BODY, 13);
    let mut c = site.connect();
    c.send(&http::request("POST", "/echo", &[], &data));
    let r = http::read_response(&mut c);
    expect(
        &c,
        &r,
        Want {
            status: 200,
            body: Some(&data),
            ..Want::default()
        },
        "a body of exactly 1 MiB (1048576 bytes) is within the limit: echo it",
    );
    drop(c);
    for announced in [MAX_BODY as u64 + 1, 10 << 30] {
        let mut c = site.connect();
        c.hint(format!("the request announced Content-Length: {announced} and sent no body: answer 413 as soon as you read the head, without waiting for (or buffering) a body over 1 MiB"));
        let len = announced.to_string();
        c.send(&http::request(
            "POST",
            "/echo",
            &[("Content-Length", &len)],
            b"",
        ));
        let r = http::read_response(&mut c);
        expect(
            &c,
            &r,
            status(413),
            &format!("Content-Length: {announced} is over the 1 MiB limit: 413 Payload Too Large"),
        );
    }
    site.server.expect_alive("announced bodies over 1 MiB");
}

/// test_14: the head limit counts the request line, the headers and the
/// blank line: heads of limit - 1 and limit bytes are served, limit + 1
/// and twice the limit get 431 (an off-by-one at the limit is the classic
/// bug, so both sides of it are sent).
#[track_caller]
pub fn header_limit(bin: &str, limit: usize) {
    let site = Site::spawn(bin);
    // The request without the filler, to size the filler exactly.
    let bare = http::request("GET", "/hello/big", &[("X-Fill", "")], b"").len();
    for total in [limit / 2, limit - 1, limit, limit + 1, limit * 2] {
        let fill = "f".repeat(total - bare);
        let req = http::request("GET", "/hello/big", &[("X-Fill", &fill)], b"");
        debug_assert_eq!(req.len(), total);
        let mut c = site.connect();
        c.hint(format!(
            "the head (request line + headers + the blank line that ends them) was {total} bytes; the limit is {limit}: up to {limit} bytes are served, {} and more get 431 Request Header Fields Too Large, then close",
            limit + 1
        ));
        send_while_open(&mut c, &req);
        let r = http::read_response(&mut c);
        if total <= limit {
            expect(
                &c,
                &r,
                text("hello, big\n"),
                &format!("a {total}-byte head is within the {limit}-byte limit: serve it"),
            );
        } else {
            expect(
                &c,
                &r,
                status(431),
                &format!("a {total}-byte head is over the {limit}-byte limit: 431"),
            );
        }
    }
    site.server.expect_alive("sent heads around the limit");
}

/// test_15: every static file with its type and bytes; missing ones 404.
#[track_caller]
pub fn static_files_served(bin: &str) {
    let site = Site::spawn(bin);
    let files = static_files();
    for (path, media) in [
        ("index.html", "text/html"),
        ("hello.txt", "text/plain"),
        ("style.css", "text/css"),
        ("data/nested.json", "application/json"),
        ("with space.txt", "text/plain"),
        ("blob.bin", "application/octet-stream"),
    ] {
        let content = &files.iter().find(|(p, _)| *p == path).expect("a file").1;
        let url = format!("/static/{}", path.replace(' ', "%20"));
        fetch_check(
            &site,
            "GET",
            &url,
            None,
            Want {
                status: 200,
                media: Some(media),
                body: Some(content),
            },
            &format!(
                "/static/<path> serves <static dir>/<path> byte for byte (percent-decoded: %20 is a space), Content-Type by extension ({media})"
            ),
        );
    }
    for path in [
        "/static/missing.txt",
        "/static/data/missing.json",
        "/static/hello.txt.bak",
    ] {
        fetch_check(
            &site,
            "GET",
            path,
            None,
            status(404),
            "a file that does not exist gets 404",
        );
    }
    site.server.expect_alive("fetched static files");
}

/// test_16: a static file is served; then each traversal attempt, on a
/// fresh raw connection, gets a 4xx and not the secret's bytes.
#[track_caller]
pub fn traversal(bin: &str) {
    let site = Site::spawn(bin);
    let mut c = site.connect();
    c.send(&http::request("GET", "/static/hello.txt", &[], b""));
    let r = http::read_response(&mut c);
    expect(
        &c,
        &r,
        Want {
            status: 200,
            media: Some("text/plain"),
            body: Some(b"hello from a static file\n"),
        },
        "GET /static/hello.txt serves the file",
    );
    drop(c);
    let secret_abs = site.secret.to_string_lossy().into_owned();
    let attacks = [
        "/static/../secret.txt".to_string(),
        "/static/%2e%2e/secret.txt".to_string(),
        "/static/%2E%2E%2fsecret.txt".to_string(),
        "/static/..%2fsecret.txt".to_string(),
        "/static/data/../../secret.txt".to_string(),
        "/static/data/%2e%2e%2F%2e%2e%2Fsecret.txt".to_string(),
        "/static/..%5csecret.txt".to_string(),
        format!("/static/{secret_abs}"),
        format!("/static/{}", secret_abs.replace('/', "%2f")),
    ];
    for target in attacks {
        let mut c = site.connect();
        c.send(&http::request("GET", &target, &[], b""));
        let r = http::read_response(&mut c);
        let leaked = http_contains(&r.body, SECRET);
        if leaked || !(400..500).contains(&r.status) {
            c.report()
                .did(format!("the secret file is {secret_abs}, outside the static directory {}", site.public.display()))
                .expected(format!("a 4xx (e.g. 404) for {target}, never the secret file"))
                .got(if leaked {
                    format!("the secret file's content:\n{}", r.describe())
                } else {
                    r.describe()
                })
                .hint("decode each path segment first, then refuse any segment that is empty, `.` or `..`, or holds a `/` or `\\` after decoding; checking the raw path misses %2e%2e and %2f")
                .fail();
        }
    }
    site.server.expect_alive("sent traversal attempts");
}

fn http_contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// test_17: a chunked body (an upper-case size with an extension, then
/// many small chunks) to POST /echo; then another request on the
/// connection.
#[track_caller]
pub fn chunked_body(bin: &str) {
    let site = Site::spawn(bin);
    let data = crate::data::binary(64 << 10, 17);
    let mut body = b"A;note=upper-case-size\r\n".to_vec();
    body.extend_from_slice(&data[..10]);
    body.extend_from_slice(b"\r\n");
    body.extend(http::chunked(&data[10..], 1000));
    let mut c = site.connect();
    c.hint("Transfer-Encoding: chunked: read a hexadecimal size line (ignore anything after ';'), that many bytes, CRLF, repeat until size 0, then the trailer lines up to an empty line");
    let mut req = http::request(
        "POST",
        "/echo",
        &[
            ("Transfer-Encoding", "chunked"),
            ("Content-Type", "application/x-chunked-test"),
        ],
        b"",
    );
    req.extend(&body);
    c.send(&req);
    let r = http::read_response(&mut c);
    expect(
        &c,
        &r,
        Want {
            status: 200,
            media: Some("application/x-chunked-test"),
            body: Some(&data),
        },
        "the echoed body is the decoded data, without sizes or CRLFs",
    );
    c.hint("after a chunked body, the next request starts right after the final \"0\\r\\n\\r\\n\": did you consume all of it?");
    c.send(&http::request("GET", "/hello/after", &[], b""));
    let r = http::read_response(&mut c);
    expect(
        &c,
        &r,
        text("hello, after\n"),
        "the request after a chunked body",
    );
    site.server.expect_alive("sent a chunked body");
}

/// test_18: one client sends half a head and waits, another sends nothing;
/// a third is served meanwhile, then the first finishes and is served.
#[track_caller]
pub fn idle_client(bin: &str) {
    let site = Site::spawn(bin);
    let mut half = site.connect();
    half.send(b"GET /hello/patient HTTP/1.1\r\nHo");
    let silent = site.connect();
    let mut other = site.connect();
    other.hint("two other clients are connected and idle (one stopped halfway through its head): is your server stuck reading from one of them? Serve each connection concurrently (a thread each, or an event loop)");
    other.send(&http::request("GET", "/", &[], b""));
    let r = http::read_response(&mut other);
    expect(
        &other,
        &r,
        text("hello, world\n"),
        "another client is served while two are idle",
    );
    half.hint("this client paused halfway through its head while another was served: keep what you have read and continue parsing when the rest arrives");
    half.send(b"st: test\r\n\r\n");
    let r = http::read_response(&mut half);
    expect(
        &half,
        &r,
        text("hello, patient\n"),
        "the paused request, completed",
    );
    drop(silent);
    site.server
        .expect_alive("served clients while others were idle");
}

/// test_19: resets mid-head, mid-body and before the answer is read; then
/// a new client is served.
#[track_caller]
pub fn vanishing_clients(bin: &str) {
    let site = Site::spawn(bin);
    let mut first = site.connect();
    first.send(&http::request("GET", "/hello/first", &[], b""));
    let r = http::read_response(&mut first);
    expect(&first, &r, text("hello, first\n"), "a first request");

    let mut c = site.connect();
    c.send(b"GET /hello/gone HTTP/1.1\r\nHost: te");
    c.reset();
    let mut c = site.connect();
    c.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\r\n");
    c.send(&crate::data::binary(1000, 1));
    c.reset();
    let mut c = site.connect();
    let big = crate::data::binary(256 << 10, 2);
    c.send(&http::request("POST", "/echo", &[], &big));
    c.reset();

    let mut last = site.connect();
    last.hint("three clients reset their connections (mid-head, mid-body, before reading a 256 KiB answer): a read or write error ends that connection only; never unwrap it");
    last.send(&http::request("GET", "/hello/last", &[], b""));
    let r = http::read_response(&mut last);
    expect(
        &last,
        &r,
        text("hello, last\n"),
        "a new client after three vanished",
    );
    // The first connection, idle all along, still works.
    first.send(&http::request("GET", "/hello/again", &[], b""));
    let r = http::read_response(&mut first);
    expect(
        &first,
        &r,
        text("hello, again\n"),
        "the first client, still connected",
    );
    site.server.expect_alive("had clients vanish mid-request");
}
