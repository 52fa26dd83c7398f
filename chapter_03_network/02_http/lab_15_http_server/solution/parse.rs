//! An incremental HTTP/1.1 request parser.
//!
//! TCP delivers a byte stream, not requests: one read may hold half a
//! request line, or three whole requests and the start of a fourth. So the
//! parser never assumes anything about where a read ends. The connection
//! appends what it reads to one buffer and calls [`Parser::advance`], which
//! consumes as much of the buffer as it can and either returns a complete
//! [`Request`], asks for more bytes (`Ok(None)`), or rejects the stream
//! with a status code ([`Reject`]).
//!
//! The parser is a small state machine, because a request has three
//! phases that need different information:
//!
//! ```text
//!   Head ──(blank line)──┬─ no body ─────────────────────────────> done
//!                        ├─ Content-Length n ──> Body { n left } ─> done
//!                        └─ chunked ──> Chunked { Size, Data, DataEnd, Trailer } ─> done
//! ```
//!
//! It keeps its place between calls (how far it already searched for the
//! blank line, how many body bytes are still due), so bytes arriving one at
//! a time cost O(1) each instead of a re-parse from the start.
//!
//! Limits are checked as early as possible: the head limit while the head
//! is still arriving (a client that never sends the blank line must not
//! grow our buffer), the body limit as soon as `Content-Length` is read
//! (before a single body byte arrives) or as chunks add up.
//!
//! A production parser (httparse, used by hyper) works the same way but on
//! borrowed slices with no allocation per header, and uses SIMD to find
//! delimiters; this one allocates a `String` per header for clarity.

/// The most bytes of head (request line, headers, and the blank line).
pub const MAX_HEAD: usize = 8 * 1024;

/// The largest body accepted, after chunked decoding.
pub const MAX_BODY: usize = 1024 * 1024;

/// The longest chunk-size line or trailer line we wait for.
const MAX_LINE: usize = 1024;

/// One complete request.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The request target exactly as sent, e.g. `/hello/J%C3%BCrgen?x=1`.
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// In order, names as sent; look them up with [`Request::header`].
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first header called `name` (header names are case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the `Connection` header(s) hold `token` (a comma-separated
    /// list, any case).
    fn connection_has(&self, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("connection"))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Whether the connection ends after this request's response: HTTP/1.1
    /// is persistent unless the client says `close`; HTTP/1.0 closes unless
    /// the client says `keep-alive`.
    pub fn wants_close(&self) -> bool {
        if self.connection_has("close") {
            return true;
        }
        self.minor == 0 && !self.connection_has("keep-alive")
    }
}

/// Why a stream was rejected: the status to answer with (400, 413 or 431)
/// and a reason for the log. After a rejection the connection's bytes can
/// no longer be trusted to be framed correctly, so the caller closes it.
#[derive(Debug, PartialEq, Eq)]
pub struct Reject {
    pub status: u16,
    pub why: String,
}

fn bad(why: impl Into<String>) -> Reject {
    Reject {
        status: 400,
        why: why.into(),
    }
}

fn too_large() -> Reject {
    Reject {
        status: 413,
        why: format!("body over {MAX_BODY} bytes"),
    }
}

/// Where the parser is within the current request.
enum State {
    /// Waiting for the blank line that ends the head. `scanned` bytes of
    /// the buffer are known not to hold it (searching resumes 3 bytes
    /// earlier, since `\r\n\r\n` may straddle two reads).
    Head { scanned: usize },
    /// A `Content-Length` body with `left` bytes still to come.
    Body { req: Request, left: usize },
    /// A chunked body, at `step`.
    Chunked { req: Request, step: Chunk },
}

/// Where a chunked body is.
#[derive(Clone, Copy)]
enum Chunk {
    /// Waiting for a size line: hex digits, maybe `;extensions`, CRLF.
    Size,
    /// Inside a chunk's data, `left` bytes to go.
    Data { left: usize },
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last (size 0) chunk: trailer lines, until an empty one.
    Trailer,
}

/// How the head says the body is framed.
enum Framing {
    None,
    Length(usize),
    Chunked,
}

pub struct Parser {
    state: State,
}

impl Parser {
    pub fn new() -> Parser {
        Parser {
            state: State::Head { scanned: 0 },
        }
    }

    /// Consumes bytes from the front of `buf`: returns the next complete
    /// request, `Ok(None)` when `buf` holds no complete request yet (read
    /// more, then call again), or a rejection. Bytes after the request stay
    /// in `buf`: they are the start of the next one (pipelining).
    pub fn advance(&mut self, buf: &mut Vec<u8>) -> Result<Option<Request>, Reject> {
        loop {
            match &mut self.state {
                State::Head { scanned } => {
                    let from = scanned.saturating_sub(3);
                    let Some(at) = find(&buf[from..], b"\r\n\r\n") else {
                        // Not there yet. Refuse to buffer more than the
                        // limit: a client could otherwise send headers
                        // forever and we would keep them all in memory.
                        if buf.len() > MAX_HEAD {
                            return Err(head_too_large());
                        }
                        *scanned = buf.len();
                        return Ok(None);
                    };
                    let end = from + at + 4;
                    if end > MAX_HEAD {
                        return Err(head_too_large());
                    }
                    let (req, framing) = parse_head(&buf[..end])?;
                    buf.drain(..end);
                    match framing {
                        Framing::None | Framing::Length(0) => {
                            self.state = State::Head { scanned: 0 };
                            return Ok(Some(req));
                        }
                        // Checked on the announced length, before reading
                        // a byte of the body: a 10 GiB upload is refused
                        // at once, not after we buffered 1 MiB of it.
                        Framing::Length(n) if n > MAX_BODY => return Err(too_large()),
                        Framing::Length(n) => self.state = State::Body { req, left: n },
                        Framing::Chunked => {
                            self.state = State::Chunked {
                                req,
                                step: Chunk::Size,
                            }
                        }
                    }
                }
                State::Body { req, left } => {
                    // Take what has arrived, up to what is still due; the
                    // rest of `buf` belongs to the next request.
                    let take = (*left).min(buf.len());
                    req.body.extend(buf.drain(..take));
                    *left -= take;
                    if *left > 0 {
                        return Ok(None);
                    }
                    return Ok(Some(self.finish()));
                }
                State::Chunked { req, step } => match *step {
                    Chunk::Size => {
                        let Some(line) = take_line(buf)? else {
                            return Ok(None);
                        };
                        let size = chunk_size(&line)?;
                        if size == 0 {
                            *step = Chunk::Trailer;
                        } else if req.body.len() + size > MAX_BODY {
                            return Err(too_large());
                        } else {
                            *step = Chunk::Data { left: size };
                        }
                    }
                    Chunk::Data { left } => {
                        let take = left.min(buf.len());
                        req.body.extend(buf.drain(..take));
                        if take < left {
                            *step = Chunk::Data { left: left - take };
                            return Ok(None);
                        }
                        *step = Chunk::DataEnd;
                    }
                    Chunk::DataEnd => {
                        if buf.len() < 2 {
                            return Ok(None);
                        }
                        if &buf[..2] != b"\r\n" {
                            return Err(bad("chunk data not followed by CRLF"));
                        }
                        buf.drain(..2);
                        *step = Chunk::Size;
                    }
                    Chunk::Trailer => {
                        let Some(line) = take_line(buf)? else {
                            return Ok(None);
                        };
                        // Trailer fields are allowed and ignored; the
                        // empty line ends the body.
                        if line.is_empty() {
                            return Ok(Some(self.finish()));
                        }
                    }
                },
            }
        }
    }

    /// Hands out the request whose body is complete and starts over.
    fn finish(&mut self) -> Request {
        match std::mem::replace(&mut self.state, State::Head { scanned: 0 }) {
            State::Body { req, .. } | State::Chunked { req, .. } => req,
            State::Head { .. } => unreachable!("finish is only called with a body in progress"),
        }
    }
}

fn head_too_large() -> Reject {
    Reject {
        status: 431,
        why: format!("request head over {MAX_HEAD} bytes"),
    }
}

/// Parses a complete head (ending in the blank line).
fn parse_head(head: &[u8]) -> Result<(Request, Framing), Reject> {
    // A head is ASCII in practice; refusing other bytes keeps the rest
    // simple (RFC 9110 allows obs-text in values, which real clients do
    // not send).
    let text = std::str::from_utf8(head).map_err(|_| bad("head is not UTF-8"))?;
    let mut lines = text[..text.len() - 4].split("\r\n");
    let request_line = lines.next().unwrap_or_default();

    // METHOD SP TARGET SP HTTP/1.x, exactly: three parts, single spaces.
    let parts: Vec<&str> = request_line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return Err(bad(format!("bad request line {request_line:?}")));
    };
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Err(bad(format!("bad method {method:?}")));
    }
    // Only the origin form (`/path?query`) is served here; a proxy would
    // also take `http://host/path`.
    if !target.starts_with('/') || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(bad(format!("bad target {target:?}")));
    }
    let minor = match version {
        "HTTP/1.1" => 1,
        "HTTP/1.0" => 0,
        _ => return Err(bad(format!("bad version {version:?}"))),
    };

    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("header line without a colon: {line:?}")))?;
        // No space before the colon (RFC 9112 section 5.1): lenient parsers
        // that trim it have been used for request smuggling.
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(bad(format!("bad header name {name:?}")));
        }
        headers.push((
            name.to_string(),
            value.trim_matches([' ', '\t']).to_string(),
        ));
    }
    let req = Request {
        method: method.to_string(),
        target: target.to_string(),
        minor,
        headers,
        body: Vec::new(),
    };
    let framing = framing(&req)?;
    Ok((req, framing))
}

/// How the body is framed, from Content-Length and Transfer-Encoding
/// (RFC 9112 section 6). Ambiguity is an error, never a guess: a server
/// and a proxy in front of it that guess differently disagree on where
/// a request ends ("request smuggling").
fn framing(req: &Request) -> Result<Framing, Reject> {
    let te: Vec<&str> = req
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"))
        .map(|(_, v)| v.as_str())
        .collect();
    let mut length = None;
    for (_, v) in req
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        // Digits only: `+5`, `5 5` and `0x5` are not lengths.
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(format!("Content-Length {v:?} is not a number")));
        }
        // More digits than a usize holds is certainly over the limit.
        let n = v.parse::<usize>().unwrap_or(usize::MAX);
        if length.is_some_and(|m| m != n) {
            return Err(bad("two different Content-Lengths"));
        }
        length = Some(n);
    }
    match (te.is_empty(), length) {
        (true, None) => Ok(Framing::None),
        (true, Some(n)) => Ok(Framing::Length(n)),
        (false, Some(_)) => Err(bad("both Content-Length and Transfer-Encoding")),
        (false, None) => {
            // The last coding must be `chunked`, the only one we decode.
            let last = te
                .iter()
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .next_back()
                .unwrap_or_default();
            if req.minor == 1 && last.eq_ignore_ascii_case("chunked") {
                Ok(Framing::Chunked)
            } else {
                Err(bad(format!("unsupported Transfer-Encoding {te:?}")))
            }
        }
    }
}

/// A chunk-size line: hex digits, then optional `;extensions` (ignored).
fn chunk_size(line: &str) -> Result<usize, Reject> {
    let digits = line.split(';').next().unwrap_or_default().trim_end();
    // At most 8 hex digits: anything larger is far over MAX_BODY anyway,
    // and this keeps the arithmetic from overflowing.
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(format!("bad chunk size {line:?}")));
    }
    Ok(usize::from_str_radix(digits, 16).expect("checked hex digits"))
}

/// Takes one CRLF-terminated line from the front of `buf` (without the
/// CRLF), `None` if it is not complete yet.
fn take_line(buf: &mut Vec<u8>) -> Result<Option<String>, Reject> {
    let Some(at) = find(buf, b"\r\n") else {
        if buf.len() > MAX_LINE {
            return Err(bad("chunk line too long"));
        }
        return Ok(None);
    };
    let line = String::from_utf8(buf[..at].to_vec()).map_err(|_| bad("chunk line not UTF-8"))?;
    buf.drain(..at + 2);
    Ok(Some(line))
}

/// The characters of a token (method, header name), RFC 9110 section 5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` in pieces of `step` and collects every request.
    fn feed(bytes: &[u8], step: usize) -> Result<Vec<Request>, Reject> {
        let mut p = Parser::new();
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for piece in bytes.chunks(step) {
            buf.extend_from_slice(piece);
            while let Some(r) = p.advance(&mut buf)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    #[test]
    fn parses_pipelined_requests_in_any_fragmentation() {
        let wire = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcPOST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2;x=y\r\nhi\r\n0\r\nT: v\r\n\r\n";
        for step in [1, 2, 3, 7, wire.len()] {
            let reqs = feed(wire, step).unwrap();
            assert_eq!(reqs.len(), 3, "step {step}");
            assert_eq!(reqs[1].body, b"abc");
            assert_eq!(reqs[2].body, b"hi");
        }
    }

    #[test]
    fn rejects_what_the_spec_calls_malformed() {
        for wire in [
            &b"GARBAGE\r\n\r\n"[..],
            b"GET / HTTP/1.1 x\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            assert_eq!(feed(wire, 1).unwrap_err().status, 400, "{wire:?}");
        }
    }

    #[test]
    fn limits_head_and_body() {
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(feed(long.as_bytes(), 100).unwrap_err().status, 431);
        let big = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(feed(big.as_bytes(), 1).unwrap_err().status, 413);
    }
}
