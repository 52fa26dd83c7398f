//! HTTP/1.1 on the wire: the request, built once, and a response reader.
//!
//! A load generator sends the same request thousands of times a second, so
//! the request is serialised once into a byte string and every send is a
//! single `write` of it. Responses are read into one fixed buffer per
//! connection and parsed in place: the reader only needs the status code
//! and how the body is framed (RFC 9112 section 6.3), never the body
//! itself, which it skips.
//!
//! Framing, in the order the RFC applies it:
//! 1. responses to HEAD, and 1xx, 204 and 304 responses, have no body
//!    (1xx are interim: the real response follows them);
//! 2. `Transfer-Encoding: chunked`: chunks of `<hex size>[;ext]\r\n<data>\r\n`,
//!    ended by a zero-size chunk, optional trailer fields and an empty line;
//! 3. `Content-Length: n`: exactly n bytes;
//! 4. neither: the body runs until the server closes the connection.
//!
//! After the response the connection is reused (keep-alive, the HTTP/1.1
//! default) unless the server said `Connection: close`, spoke HTTP/1.0
//! without `Connection: keep-alive`, or delimited the body by closing.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Target;

/// The read buffer of one connection. A response head (status line and
/// headers) must fit in it; bodies of any size stream through it.
const BUF: usize = 16 * 1024;

/// Serialises the request every connection sends.
///
/// `Host` is required in HTTP/1.1; it is added unless the user gave one.
/// A body gets a `Content-Length` (unless the user gave one), so the
/// server knows where the request ends and the connection can be reused.
pub fn build_request(
    method: &str,
    target: &Target,
    headers: &[(String, String)],
    body: Option<&str>,
) -> Vec<u8> {
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let mut req = format!("{method} {} HTTP/1.1\r\n", target.path);
    if !has("host") {
        req.push_str(&format!("Host: {}\r\n", target.authority));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(body) = body
        && !has("content-length")
    {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    if let Some(body) = body {
        req.push_str(body);
    }
    req.into_bytes()
}

/// Why an exchange did not produce a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection failed, was reset, or was closed by the server
    /// before the whole response arrived (including a failed write).
    Reset,
    /// The server sent bytes that are not an HTTP/1.x response.
    Protocol,
}

impl From<io::Error> for Failure {
    fn from(_: io::Error) -> Self {
        Failure::Reset
    }
}

/// What the load generator keeps of a response.
#[derive(Debug, Clone, Copy)]
pub struct Response {
    pub status: u16,
    /// The connection cannot be reused after this response.
    pub close: bool,
}

/// How a response's body is delimited.
enum Framing {
    None,
    Chunked,
    Length(u64),
    UntilClose,
}

/// The parsed head of a response.
struct Head {
    status: u16,
    framing: Framing,
    close: bool,
}

/// One keep-alive connection to the server, with its read buffer.
pub struct Conn {
    stream: TcpStream,
    buf: Box<[u8]>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        // Requests are written whole in one call, so Nagle's algorithm
        // would only ever delay them (waiting for an ACK the server
        // delays in turn): turn it off.
        let _ = stream.set_nodelay(true);
        Conn {
            stream,
            buf: vec![0; BUF].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// Sends `request` and reads one whole response. `head_request` says
    /// the request was a HEAD (whose response has no body whatever its
    /// headers say). Cancel-safe in the sense that matters here: a
    /// cancelled exchange leaves the connection in an unknown state, and
    /// the caller drops it.
    pub async fn exchange(
        &mut self,
        request: &[u8],
        head_request: bool,
    ) -> Result<Response, Failure> {
        // Bytes left over from a previous response would mean the server
        // sent more than it framed: not a response to this request.
        if self.start != self.end {
            return Err(Failure::Protocol);
        }
        self.start = 0;
        self.end = 0;
        self.stream.write_all(request).await?;
        loop {
            let head = self.read_head().await?;
            // An interim response (100 Continue, 103 Early Hints): the real
            // one follows on the same connection. 101 would switch
            // protocols, which this client never asks for.
            if (100..200).contains(&head.status) && head.status != 101 {
                continue;
            }
            let framing = if head_request || head.status == 204 || head.status == 304 {
                Framing::None
            } else {
                head.framing
            };
            let mut close = head.close;
            match framing {
                Framing::None => {}
                Framing::Length(n) => self.skip(n).await?,
                Framing::Chunked => self.skip_chunked().await?,
                Framing::UntilClose => {
                    self.skip_to_eof().await?;
                    close = true;
                }
            }
            return Ok(Response {
                status: head.status,
                close,
            });
        }
    }

    /// Reads more bytes into the buffer; `Ok(0)` is end of stream. Makes
    /// room first by dropping consumed bytes.
    async fn fill(&mut self) -> Result<usize, Failure> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // A head or chunk-size line longer than the buffer.
            return Err(Failure::Protocol);
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }

    /// Waits until `buf[start..]` holds `pattern`; returns the length up
    /// to and including it. End of stream first is a `Reset`.
    async fn until(&mut self, pattern: &[u8]) -> Result<usize, Failure> {
        let mut from = self.start;
        loop {
            if let Some(i) = find(&self.buf[from..self.end], pattern) {
                return Ok(from + i + pattern.len() - self.start);
            }
            // Search only the new bytes next time (minus an overlap, in
            // case the pattern straddles two reads).
            from = self.end.saturating_sub(pattern.len() - 1).max(self.start);
            let before = self.start;
            if self.fill().await? == 0 {
                return Err(Failure::Reset);
            }
            // `fill` may have moved the data to the front of the buffer.
            from -= before - self.start;
        }
    }

    async fn read_head(&mut self) -> Result<Head, Failure> {
        let n = self.until(b"\r\n\r\n").await?;
        let head = parse_head(&self.buf[self.start..self.start + n])?;
        self.start += n;
        Ok(head)
    }

    /// Consumes exactly `n` body bytes, most of them straight from the
    /// socket into the (otherwise empty) buffer.
    async fn skip(&mut self, mut n: u64) -> Result<(), Failure> {
        loop {
            let here = ((self.end - self.start) as u64).min(n);
            self.start += here as usize;
            n -= here;
            if n == 0 {
                return Ok(());
            }
            if self.fill().await? == 0 {
                return Err(Failure::Reset);
            }
        }
    }

    async fn skip_chunked(&mut self) -> Result<(), Failure> {
        loop {
            let n = self.until(b"\r\n").await?;
            let line = &self.buf[self.start..self.start + n - 2];
            // `<hex size>[;extension]`; extensions are ignored.
            let digits = line.split(|&b| b == b';').next().unwrap_or_default();
            let size = parse_hex(digits.trim_ascii()).ok_or(Failure::Protocol)?;
            self.start += n;
            if size == 0 {
                // Trailer fields, if any, then the empty line.
                loop {
                    let n = self.until(b"\r\n").await?;
                    self.start += n;
                    if n == 2 {
                        return Ok(());
                    }
                }
            }
            self.skip(size).await?;
            let n = self.until(b"\r\n").await?;
            if n != 2 {
                return Err(Failure::Protocol);
            }
            self.start += n;
        }
    }

    async fn skip_to_eof(&mut self) -> Result<(), Failure> {
        self.start = self.end;
        while self.fill().await? > 0 {
            self.start = self.end;
        }
        Ok(())
    }
}

/// The first index of `needle` in `hay`. Heads are a few hundred bytes,
/// so a plain scan for the first byte is as fast as anything fancier.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if hay.len() < needle.len() {
        return None;
    }
    (0..=hay.len() - needle.len())
        .find(|&i| hay[i] == needle[0] && &hay[i..i + needle.len()] == needle)
}

fn parse_hex(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 15 {
        return None;
    }
    let s = std::str::from_utf8(digits).ok()?;
    u64::from_str_radix(s, 16).ok()
}

/// Parses a status line and header fields ending in an empty line.
fn parse_head(head: &[u8]) -> Result<Head, Failure> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = lines.next().ok_or(Failure::Protocol)?;
    // `HTTP/1.1 200 OK`: the version, a space, three digits, then an
    // optional reason phrase.
    let version = status_line.get(..8).ok_or(Failure::Protocol)?;
    let http10 = match version {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        _ => return Err(Failure::Protocol),
    };
    let code = status_line.get(8..12).ok_or(Failure::Protocol)?;
    if code[0] != b' ' || !code[1..].iter().all(u8::is_ascii_digit) {
        return Err(Failure::Protocol);
    }
    let status = code[1..]
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));

    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut close = http10;
    for line in lines {
        if line.is_empty() {
            break;
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(Failure::Protocol)?;
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(Failure::Protocol)?;
            // Two different lengths: the framing is ambiguous (a request
            // smuggling vector in proxies), so refuse the response.
            if length.is_some_and(|l| l != n) {
                return Err(Failure::Protocol);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Chunked must be the last coding applied.
            chunked = value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && http10 {
                    close = false;
                }
            }
        }
    }
    // Transfer-Encoding wins over Content-Length (RFC 9112 6.3).
    let framing = if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok(Head {
        status,
        framing,
        close,
    })
}
