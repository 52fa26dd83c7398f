//! HTTP for graders: a real client, and raw requests and responses.
//!
//! Two ways in, because graders need both:
//! - [`client`] is a real HTTP client (reqwest, blocking, rustls with the
//!   ring provider): what a learner's server meets in production, with its
//!   own view of what is valid HTTP.
//! - [`request`] and [`read_response`] speak HTTP/1.1 by hand over a
//!   [`Client`](crate::client::Client), for what no real client sends:
//!   malformed requests, a request one byte at a time, several requests
//!   in one write (pipelining), and for seeing exactly what came back,
//!   header by header, and whether the connection stayed open.
//!
//! ```no_run
//! use labkit::{client::Client, http, server::Server};
//! let server = Server::spawn("/path/to/http_server");
//! let mut c = Client::connect_to(&server);
//! c.send(&http::request("GET", "/", &[], b""));
//! let r = http::read_response(&mut c);
//! assert_eq!(r.status, 200);
//! ```
//!
//! [`read_response`] frames a response the way RFC 9112 section 6.3 says a
//! client must: no body for 1xx, 204 and 304 (and for a response to HEAD:
//! [`read_head_response`]), else chunked, else `Content-Length`, else
//! everything up to the server closing the connection.

use std::sync::Once;
use std::time::Duration;

use crate::client::Client;
use crate::report::show;
use crate::server::Server;

/// How long a real-client request may take in all: generous, since a
/// failing server fails fast anyway (refused, reset), and a hung one must
/// not hold a test for long.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest response head [`read_response`] accepts.
const MAX_HEAD: usize = 64 * 1024;

/// Installs rustls's ring provider as the process default, once. The
/// workspace builds rustls without a default provider (so no aws-lc), and
/// reqwest and tokio-rustls need one before the first TLS config is built.
pub fn install_ring() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another provider is already installed: fine too.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A blocking HTTP client with a [`CLIENT_TIMEOUT`], no proxy from the
/// environment (a learner's `http_proxy` must not reroute tests), and no
/// redirects followed (a grader wants to see the 3xx itself).
pub fn client() -> reqwest::blocking::Client {
    client_builder()
        .build()
        .unwrap_or_else(|e| panic!("[test] could not build the HTTP client: {e}"))
}

/// [`client`]'s settings, to add more (e.g. a root certificate).
pub fn client_builder() -> reqwest::blocking::ClientBuilder {
    install_ring();
    reqwest::blocking::Client::builder()
        .timeout(CLIENT_TIMEOUT)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
}

/// `http://<server address><path>`.
pub fn url(server: &Server, path: &str) -> String {
    format!("http://{}{path}", server.addr())
}

/// An HTTP/1.1 request, byte for byte: the request line, `Host: test`
/// unless `headers` has a Host, `headers` in order, `Content-Length` when
/// `body` is not empty and `headers` has no Content-Length or
/// Transfer-Encoding, then the body.
pub fn request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let mut out = format!("{method} {target} HTTP/1.1\r\n");
    if !has("host") {
        out.push_str("Host: test\r\n");
    }
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() && !has("content-length") && !has("transfer-encoding") {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// One response as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    pub status: u16,
    pub reason: String,
    /// In order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// The head as sent (status line and headers), for failure messages.
    pub head: String,
}

/// Every value of the headers called `name` (any case), in order: the one
/// lookup behind [`Response::headers_named`] and the upstream's
/// [`crate::upstream::Recorded::headers_named`].
pub fn values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

impl Response {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers_named(name).into_iter().next()
    }

    /// Every header called `name` (any case), in order.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        values(&self.headers, name)
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Whether the response says the server will close the connection:
    /// `Connection: close`, or HTTP/1.0 without `Connection: keep-alive`.
    pub fn says_close(&self) -> bool {
        let tokens = |want: &str| {
            self.headers_named("connection")
                .iter()
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case(want))
        };
        tokens("close") || (self.version == "HTTP/1.0" && !tokens("keep-alive"))
    }

    /// The head and the start of the body, for messages.
    pub fn describe(&self) -> String {
        format!(
            "{}\n(body: {} bytes {})",
            self.head.trim_end(),
            self.body.len(),
            show(&self.body)
        )
    }
}

/// Reads one response (to a request that was not HEAD) from `c`.
#[track_caller]
pub fn read_response(c: &mut Client) -> Response {
    read(c, false)
}

/// Reads one response to a HEAD request: a head and no body, whatever its
/// Content-Length says.
#[track_caller]
pub fn read_head_response(c: &mut Client) -> Response {
    read(c, true)
}

#[track_caller]
fn read(c: &mut Client, to_head: bool) -> Response {
    let bytes = c.read_framed(
        "an HTTP response",
        "do you write a complete response (status line, headers, a blank line, then exactly Content-Length bytes of body) and flush it?",
        |buf, closed| frame(buf, closed, to_head).map(|f| f.len),
    );
    match parse(&bytes, to_head) {
        Ok(r) => r,
        Err(why) => c
            .report()
            .expected("a valid HTTP/1.1 response")
            .got(format!("{why}: {}", show(&bytes)))
            .hint("a response is `HTTP/1.1 <code> <reason>\\r\\n`, headers `Name: value\\r\\n`, a blank line `\\r\\n`, then the body")
            .fail(),
    }
}

/// Where one response ends, as far as it can be known yet.
struct Frame {
    len: usize,
}

/// Frames the response at the start of `buf`; `None` until it is complete.
/// A head that cannot be parsed (or is too large) frames as the whole
/// buffer, so [`parse`] reports it.
fn frame(buf: &[u8], closed: bool, to_head: bool) -> Option<Frame> {
    let Some(head_end) = find(buf, b"\r\n\r\n").map(|i| i + 4) else {
        return (closed || buf.len() > MAX_HEAD).then_some(Frame { len: buf.len() });
    };
    let Ok(head) = parse_head(&buf[..head_end]) else {
        return Some(Frame { len: buf.len() });
    };
    let body = &buf[head_end..];
    let no_body = to_head || head.status < 200 || head.status == 204 || head.status == 304;
    let len = if no_body {
        Some(0)
    } else if head.chunked {
        dechunk(body).map(|(_, used)| used)
    } else if let Some(n) = head.content_length {
        (body.len() >= n).then_some(n)
    } else {
        // Delimited by the close of the connection.
        closed.then_some(body.len())
    };
    match len {
        Some(n) => Some(Frame { len: head_end + n }),
        // A server that closes mid-body: hand over what there is, so the
        // failure can show it.
        None if closed => Some(Frame { len: buf.len() }),
        None => None,
    }
}

struct Head {
    version: String,
    status: u16,
    reason: String,
    headers: Vec<(String, String)>,
    chunked: bool,
    content_length: Option<usize>,
}

fn parse_head(head: &[u8]) -> Result<Head, String> {
    let text = std::str::from_utf8(head).map_err(|_| "the head is not valid UTF-8".to_string())?;
    let mut lines = text.strip_suffix("\r\n\r\n").unwrap_or(text).split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default().to_string();
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(format!(
            "the status line {status_line:?} does not start with HTTP/1.1"
        ));
    }
    let status = parts
        .next()
        .and_then(|s| (s.len() == 3).then(|| s.parse::<u16>().ok()).flatten())
        .ok_or_else(|| format!("the status line {status_line:?} has no 3-digit status code"))?;
    let reason = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    for line in lines {
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| format!("the header line {line:?} has no colon"))?;
        headers.push((k.to_string(), v.trim().to_string()));
    }
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    let content_length = match headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        Some((_, v)) => Some(
            v.parse::<usize>()
                .map_err(|_| format!("Content-Length {v:?} is not a number"))?,
        ),
        None => None,
    };
    Ok(Head {
        version,
        status,
        reason,
        headers,
        chunked,
        content_length,
    })
}

fn parse(bytes: &[u8], to_head: bool) -> Result<Response, String> {
    let head_end = find(bytes, b"\r\n\r\n")
        .map(|i| i + 4)
        .ok_or("the connection ended before the end of the head (a blank line)")?;
    let head = parse_head(&bytes[..head_end])?;
    let raw = &bytes[head_end..];
    let body = if to_head || head.status < 200 || head.status == 204 || head.status == 304 {
        Vec::new()
    } else if head.chunked {
        dechunk(raw)
            .ok_or("the chunked body ended early or is malformed")?
            .0
    } else {
        if let Some(n) = head.content_length
            && raw.len() < n
        {
            return Err(format!(
                "Content-Length is {n} but the connection ended after {} bytes of body",
                raw.len()
            ));
        }
        raw.to_vec()
    };
    Ok(Response {
        version: head.version,
        status: head.status,
        reason: head.reason,
        headers: head.headers,
        body,
        head: String::from_utf8_lossy(&bytes[..head_end]).into_owned(),
    })
}

/// Decodes a complete chunked body at the start of `buf`: the data and how
/// many bytes of `buf` it used (trailers included); `None` if incomplete
/// or malformed.
pub fn dechunk(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut data = Vec::new();
    let mut at = 0;
    loop {
        let line_end = at + find(&buf[at..], b"\r\n")?;
        let line = std::str::from_utf8(&buf[at..line_end]).ok()?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let end = at + find(&buf[at..], b"\r\n")?;
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Some((data, at));
                }
            }
        }
        if buf.len() < at + size + 2 {
            return None;
        }
        data.extend_from_slice(&buf[at..at + size]);
        if &buf[at + size..at + size + 2] != b"\r\n" {
            return None;
        }
        at += size + 2;
    }
}

/// `data` as a chunked body in chunks of `chunk` bytes, with the final
/// zero-size chunk.
pub fn chunked(data: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_by_content_length_chunked_and_close() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1";
        assert_eq!(frame(r, false, false).map(|f| f.len), Some(r.len() - 8));
        let c = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        assert_eq!(frame(c, false, false).map(|f| f.len), Some(c.len()));
        assert!(frame(&c[..c.len() - 1], false, false).is_none());
        let parsed = parse(c, false).unwrap();
        assert_eq!(parsed.body, b"abc");
        let eof = b"HTTP/1.0 200 OK\r\n\r\nall of it";
        assert!(frame(eof, false, false).is_none());
        assert_eq!(frame(eof, true, false).map(|f| f.len), Some(eof.len()));
        assert!(parse(eof, false).unwrap().says_close());
    }

    #[test]
    fn a_response_to_head_has_no_body() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(frame(r, false, true).map(|f| f.len), Some(r.len()));
        assert!(frame(r, false, false).is_none());
    }

    #[test]
    fn chunked_round_trips() {
        let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let enc = chunked(&data, 77);
        assert_eq!(dechunk(&enc), Some((data, enc.len())));
    }

    #[test]
    fn request_adds_host_and_length() {
        let r = request("POST", "/echo", &[], b"hi");
        assert_eq!(
            r,
            b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\n\r\nhi"
        );
    }

    #[test]
    fn garbage_is_reported_not_framed_forever() {
        let g = b"garbage\r\n\r\n";
        assert_eq!(frame(g, false, false).map(|f| f.len), Some(g.len()));
        assert!(parse(g, false).is_err());
    }
}
