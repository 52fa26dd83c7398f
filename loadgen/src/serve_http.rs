//! `loadgen serve-http [ADDR]`: the fixed server of the http suite.
//!
//! The http suite compares *load generators* (lab 36's `loadtest` and the
//! real `wrk`), so the server must be the same for both and never the
//! thing that limits a run: one thread, edge-triggered epoll through mio,
//! HTTP/1.1 keep-alive, one fixed small answer. Per readable event it reads
//! until `WouldBlock`, answers every complete request in the buffer at once
//! (so a pipelining client is answered with one write), and queues only
//! what the socket refuses.
//!
//! - `GET` and `HEAD` get `200 OK` with a 3-byte body (`HEAD` without it);
//!   any other method gets `405` (its `Content-Length` body is skipped, so
//!   the connection stays usable).
//! - `Connection: close`, or HTTP/1.0 without `Connection: keep-alive`,
//!   closes the connection after the answer.
//! - A request head over 16 KiB, or one that is not HTTP, gets `400` and
//!   the connection is closed.

use std::io::{self, Read, Write};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(usize::MAX);
const MAX_HEAD: usize = 16 * 1024;

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n";
const OK_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\n";
const NOT_ALLOWED: &[u8] =
    b"HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\nContent-Length: 0\r\n\r\n";
const BAD: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

struct Conn {
    stream: TcpStream,
    /// Bytes read but not yet a complete request.
    input: Vec<u8>,
    /// Body bytes of the last request still to skip.
    skip: usize,
    /// Answers the socket has not taken yet.
    pending: Vec<u8>,
    /// Close once `pending` is written.
    closing: bool,
}

pub fn run(o: &crate::Opts) -> Result<String, String> {
    let addr = o.positional(0).unwrap_or("127.0.0.1:0");
    let addr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an address"))?;
    crate::conns::raise_nofile(20_000).ok();

    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut listener = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(|e| e.to_string())?;
    crate::say(&format!(
        "listening on {}",
        listener.local_addr().map_err(|e| e.to_string())?
    ));

    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut events = Events::with_capacity(1024);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.to_string());
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let i = free.pop().unwrap_or_else(|| {
                                conns.push(None);
                                conns.len() - 1
                            });
                            let _ = stream.set_nodelay(true);
                            poll.registry()
                                .register(
                                    &mut stream,
                                    Token(i),
                                    Interest::READABLE | Interest::WRITABLE,
                                )
                                .map_err(|e| e.to_string())?;
                            conns[i] = Some(Conn {
                                stream,
                                input: Vec::new(),
                                skip: 0,
                                pending: Vec::new(),
                                closing: false,
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        // Out of fds or a connection gone before accept: keep serving.
                        Err(_) => break,
                    }
                }
                continue;
            }
            let i = ev.token().0;
            let Some(c) = conns.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            if serve(c, &mut buf).is_err() {
                let _ = poll.registry().deregister(&mut c.stream);
                conns[i] = None;
                free.push(i);
            }
        }
    }
}

/// Reads until `WouldBlock`, answering as it goes; Err when the
/// connection is over.
fn serve(c: &mut Conn, buf: &mut [u8]) -> io::Result<()> {
    flush(c)?;
    while !c.closing {
        match c.stream.read(buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                let mut out = Vec::new();
                if c.input.is_empty() {
                    // The usual case: whole requests in one read, parsed
                    // in place without a copy.
                    let used = answer(&buf[..n], &mut c.skip, &mut c.closing, &mut out);
                    c.input.extend_from_slice(&buf[used..n]);
                } else {
                    c.input.extend_from_slice(&buf[..n]);
                    let used = answer(&c.input, &mut c.skip, &mut c.closing, &mut out);
                    c.input.drain(..used);
                }
                if c.input.len() > MAX_HEAD {
                    out.extend_from_slice(BAD);
                    c.closing = true;
                }
                send(c, &out)?;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if c.closing && c.pending.is_empty() {
        return Err(io::ErrorKind::ConnectionAborted.into());
    }
    Ok(())
}

/// Answers every complete request at the start of `data` into `out`;
/// returns how many bytes it consumed. Stops at a request that asks to
/// close (setting `closing`).
fn answer(data: &[u8], skip: &mut usize, closing: &mut bool, out: &mut Vec<u8>) -> usize {
    let mut at = 0;
    while !*closing {
        if *skip > 0 {
            let k = (*skip).min(data.len() - at);
            *skip -= k;
            at += k;
            if *skip > 0 {
                break;
            }
        }
        let rest = &data[at..];
        let Some(end) = find_head_end(rest) else {
            break;
        };
        let head = &rest[..end];
        at += end + 4;
        match parse_head(head) {
            Some(req) => {
                out.extend_from_slice(match req.method {
                    b"GET" => OK,
                    b"HEAD" => OK_HEAD,
                    _ => NOT_ALLOWED,
                });
                *skip = req.content_length;
                *closing = req.close;
            }
            None => {
                out.extend_from_slice(BAD);
                *closing = true;
            }
        }
    }
    at
}

/// Where the blank line ending a request head starts.
fn find_head_end(data: &[u8]) -> Option<usize> {
    data.windows(4).position(|w| w == b"\r\n\r\n")
}

struct Head<'a> {
    method: &'a [u8],
    content_length: usize,
    close: bool,
}

/// The parts of a request head this server acts on; None if it is not HTTP.
fn parse_head(head: &[u8]) -> Option<Head<'_>> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let line = lines.next()?;
    let mut parts = line.split(|&b| b == b' ').filter(|p| !p.is_empty());
    let method = parts.next()?;
    let _target = parts.next()?;
    let version = parts.next()?;
    let http10 = match version {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        _ => return None,
    };
    let mut close = http10;
    let mut content_length = 0;
    for line in lines {
        let colon = line.iter().position(|&b| b == b':')?;
        let name = &line[..colon];
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            content_length = std::str::from_utf8(value).ok()?.parse().ok()?;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    close = false;
                }
            }
        }
    }
    Some(Head {
        method,
        content_length,
        close,
    })
}

/// Writes `out` (after anything already queued); queues what the socket refuses.
fn send(c: &mut Conn, out: &[u8]) -> io::Result<()> {
    if !c.pending.is_empty() {
        c.pending.extend_from_slice(out);
        return flush(c);
    }
    let mut off = 0;
    while off < out.len() {
        match c.stream.write(&out[off..]) {
            Ok(k) => off += k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    c.pending.extend_from_slice(&out[off..]);
    Ok(())
}

fn flush(c: &mut Conn) -> io::Result<()> {
    let mut off = 0;
    while off < c.pending.len() {
        match c.stream.write(&c.pending[off..]) {
            Ok(k) => off += k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    c.pending.drain(..off);
    if c.closing && c.pending.is_empty() {
        return Err(io::ErrorKind::ConnectionAborted.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(data: &[u8]) -> (usize, Vec<u8>, usize, bool) {
        let (mut skip, mut closing, mut out) = (0, false, Vec::new());
        let used = answer(data, &mut skip, &mut closing, &mut out);
        (used, out, skip, closing)
    }

    #[test]
    fn pipelined_gets_are_answered_in_order_and_a_partial_one_waits() {
        let one = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut data = one.repeat(3);
        data.extend_from_slice(b"GET / HT");
        let (used, out, _, closing) = run(&data);
        assert_eq!(used, one.len() * 3);
        assert_eq!(out, OK.repeat(3));
        assert!(!closing);
    }

    #[test]
    fn bodies_are_skipped_and_close_is_honoured() {
        let data = b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nConnection: Close\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        let (_, out, skip, closing) = run(data);
        assert_eq!(out, [NOT_ALLOWED, OK].concat());
        assert_eq!(skip, 0);
        assert!(
            closing,
            "Connection: close ends the connection after its answer"
        );
        let (_, _, _, closing) = run(b"GET / HTTP/1.0\r\n\r\n");
        assert!(closing, "HTTP/1.0 closes by default");
        let (_, _, _, closing) = run(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(!closing);
        let partial = b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc";
        let (used, out, skip, _) = run(partial);
        assert_eq!((used, skip, out), (partial.len(), 7, NOT_ALLOWED.to_vec()));
    }

    #[test]
    fn garbage_is_a_400_and_closes() {
        let (_, out, _, closing) = run(b"hello\r\n\r\n");
        assert_eq!(out, BAD);
        assert!(closing);
    }
}
