//! RESP2 requests, parsed incrementally, and the replies written back.
//!
//! A client sends a command as an array of bulk strings:
//!
//! ```text
//! *3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n
//! ```
//!
//! or, typed into `nc` or `telnet`, as an *inline* command: one line,
//! words separated by spaces (`SET k hello\r\n`).
//!
//! # An incremental state machine
//!
//! TCP delivers a byte stream: one read may hold half a command, or a
//! thousand. [`Parser`] keeps where it is between reads (inside an array,
//! `n` elements to go; inside a bulk string, waiting for its bytes) and
//! consumes each element from the buffer as soon as it is whole, so no byte
//! is looked at twice however the command is split. (Re-parsing from the
//! start of the command after every read, as simple parsers do, costs
//! quadratic time on a large command arriving in small pieces.)
//!
//! # Limits
//!
//! A length is a claim by the client, not a fact: `$9999999999` must not
//! make the server reserve 10 GB. Lengths above [`MAX_BULK`] and
//! [`MAX_ARRAY`] are protocol errors (the connection is then closed, as
//! Redis does), and the buffer only ever grows by what actually arrived.
//! A line (a header or an inline command) longer than [`MAX_LINE`] is an
//! error too, so a client sending bytes with no newline cannot grow the
//! buffer without bound.

use bytes::{Buf, Bytes, BytesMut};

/// The longest bulk string accepted (Redis's `proto-max-bulk-len`).
pub const MAX_BULK: usize = 512 * 1024 * 1024;
/// The most elements in one command.
pub const MAX_ARRAY: usize = 1024 * 1024;
/// The longest header or inline command line, CRLF included.
pub const MAX_LINE: usize = 64 * 1024;

/// A request that is not RESP; the text follows `-ERR Protocol error: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

#[derive(Debug, Default)]
enum State {
    /// Between commands.
    #[default]
    Start,
    /// Inside `*<n>`: `left` bulk strings still to come.
    Array { left: usize, args: Vec<Bytes> },
    /// Inside `$<len>` of an array: waiting for `len` bytes and CRLF.
    Bulk {
        len: usize,
        left: usize,
        args: Vec<Bytes>,
    },
}

/// Turns bytes into commands, one element at a time; see the module docs.
#[derive(Debug, Default)]
pub struct Parser {
    state: State,
}

impl Parser {
    /// The next whole command in `buf`, consuming its bytes; `Ok(None)`
    /// when more bytes are needed (what was read so far is kept, in `self`
    /// and in `buf`). An empty array or an empty inline line is skipped,
    /// as Redis does.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        loop {
            match std::mem::take(&mut self.state) {
                State::Start => {
                    let Some(first) = buf.first() else {
                        return Ok(None);
                    };
                    if *first != b'*' {
                        let Some(line) = take_line(buf)? else {
                            return Ok(None);
                        };
                        let args = inline(&line);
                        if args.is_empty() {
                            continue;
                        }
                        return Ok(Some(args));
                    }
                    let Some(line) = take_line(buf)? else {
                        return Ok(None);
                    };
                    let n = length(&line[1..], MAX_ARRAY, "invalid multibulk length")?;
                    if n == 0 {
                        continue;
                    }
                    // Capped: the count is the client's claim.
                    let args = Vec::with_capacity(n.min(64));
                    self.state = State::Array { left: n, args };
                }
                State::Array { left, args } => {
                    let Some(first) = buf.first() else {
                        self.state = State::Array { left, args };
                        return Ok(None);
                    };
                    if *first != b'$' {
                        return Err(ProtocolError(format!(
                            "expected '$', got '{}'",
                            char::from(*first).escape_default()
                        )));
                    }
                    let Some(line) = take_line(buf)? else {
                        self.state = State::Array { left, args };
                        return Ok(None);
                    };
                    let len = length(&line[1..], MAX_BULK, "invalid bulk length")?;
                    self.state = State::Bulk { len, left, args };
                }
                State::Bulk {
                    len,
                    left,
                    mut args,
                } => {
                    if buf.len() < len + 2 {
                        // Make room for the rest, but only as much as is
                        // still missing, and never a hostile amount at once.
                        buf.reserve((len + 2 - buf.len()).min(1 << 20));
                        self.state = State::Bulk { len, left, args };
                        return Ok(None);
                    }
                    if &buf[len..len + 2] != b"\r\n" {
                        return Err(ProtocolError("bulk string not followed by CRLF".into()));
                    }
                    args.push(buf.split_to(len).freeze());
                    buf.advance(2);
                    if left == 1 {
                        return Ok(Some(args));
                    }
                    self.state = State::Array {
                        left: left - 1,
                        args,
                    };
                }
            }
        }
    }
}

/// Takes one line (without its CRLF, or lone LF as Redis accepts inline)
/// off the front of `buf`.
fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, ProtocolError> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(i) if i < MAX_LINE => {
            let mut line = buf.split_to(i + 1);
            line.truncate(i);
            if line.last() == Some(&b'\r') {
                line.truncate(i - 1);
            }
            Ok(Some(line))
        }
        Some(_) => Err(ProtocolError("too big inline request".into())),
        None if buf.len() >= MAX_LINE => Err(ProtocolError("too big inline request".into())),
        None => Ok(None),
    }
}

/// A decimal length in `0..=max`.
fn length(digits: &[u8], max: usize, what: &str) -> Result<usize, ProtocolError> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|&n| n <= max)
        .ok_or_else(|| ProtocolError(what.to_string()))
}

/// An inline command: words split on spaces and tabs.
fn inline(line: &[u8]) -> Vec<Bytes> {
    line.split(|&b| b == b' ' || b == b'\t')
        .filter(|w| !w.is_empty())
        .map(Bytes::copy_from_slice)
        .collect()
}

/// Appends replies to an output buffer, written out once per batch of
/// commands (so 10,000 pipelined commands cost a few writes, not 10,000).
pub mod reply {
    use std::io::Write as _;

    pub fn simple(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(b"+");
        out.extend_from_slice(s.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    pub fn error(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(b"-");
        out.extend_from_slice(s.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    pub fn int(out: &mut Vec<u8>, n: i64) {
        let _ = write!(out, ":{n}\r\n");
    }

    pub fn bulk(out: &mut Vec<u8>, b: &[u8]) {
        let _ = write!(out, "${}\r\n", b.len());
        out.extend_from_slice(b);
        out.extend_from_slice(b"\r\n");
    }

    pub fn nil(out: &mut Vec<u8>) {
        out.extend_from_slice(b"$-1\r\n");
    }

    pub fn array_len(out: &mut Vec<u8>, n: usize) {
        let _ = write!(out, "*{n}\r\n");
    }

    /// A command as RESP, as a replica sends `REPLCONF ...` to its master.
    pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
        array_len(out, args.len());
        for a in args {
            bulk(out, a);
        }
    }
}
