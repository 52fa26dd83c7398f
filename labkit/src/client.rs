//! TCP clients for graders: every read has a deadline, every failure says
//! what was sent and what came back.
//!
//! ```no_run
//! use labkit::{client::Client, server::Server};
//! let server = Server::spawn("/path/to/echo");
//! let mut c = Client::connect_to(&server);
//! c.send(&vec![b'x'; 1 << 20]);
//! c.expect_bytes(&vec![b'x'; 1 << 20]);
//! c.half_close();
//! c.expect_closed();
//! ```
//!
//! # Design
//!
//! The socket is non-blocking and every wait is a `poll(2)` with a timeout,
//! so a hung server fails a test in seconds. Reads wait at most the *read
//! deadline* ([`READ_DEADLINE`] unless set) for the next byte: a transfer that
//! keeps making progress is not cut off on a slow machine, one that goes
//! quiet fails with "went quiet for 5s". A whole call is still capped at
//! [`TOTAL_FACTOR`] times the read deadline, so a server trickling a byte now
//! and then cannot hold a test forever.
//!
//! [`Client::send`] keeps reading while it writes. An echo server answers as
//! it reads; a client that only writes fills its own receive buffer, then
//! the server's send buffer, and the server stops reading: both sides wait
//! forever, and a correct server would be blamed. What arrives meanwhile is
//! kept for the next read. (For slow-reader tests, which want exactly that
//! pile-up, [`Client::send_until_stalled`] writes without reading.)
//!
//! Each client keeps a short transcript (the last steps, consecutive writes
//! or reads merged, each shown by its first and last bytes) and puts it in
//! every failure. A client made with [`Client::connect_to`] also remembers
//! the server: its failures say whether the server still runs (or how it
//! ended) and quote its stderr as `[your server]`:
//!
//! ```text
//! [test] connected to 127.0.0.1:40123
//! [test] sent 1048576 bytes: "xxxx..." ... "...xxxx"
//! [test] received 65536 bytes: "xxxx..." ... "...xxxx"
//! [test] expected: 1048576 bytes back: "xxxx..."
//! [test] got: sent 1048576 bytes, got 65536 back before the connection went quiet for 5s (the server is still running)
//! [hint] do you keep writing until the whole buffer is sent (partial writes)?
//! [your server] ...
//! ```
//!
//! The test client sets `TCP_NODELAY`, so each `send` leaves as its own
//! segment instead of waiting for Nagle's algorithm to batch it: tests that
//! send a message one byte at a time (fragmentation) really fragment it.
//!
//! [`many::connect_all`] opens hundreds of connections from one thread.

use std::collections::VecDeque;
use std::fmt::Display;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockRef, Socket, Type};

use crate::report::{Report, first_difference, show};
use crate::server::{Server, ServerView};
use crate::wait::{Conn, ParkWatch, Parked, SAMPLE};

/// How long a read waits for the next byte unless the test sets another
/// deadline ([`Client::set_read_deadline`]).
pub const READ_DEADLINE: Duration = Duration::from_secs(5);

/// How long a connect may take.
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(5);

/// A whole read or send call is capped at this many read deadlines, however
/// steadily the bytes trickle.
pub const TOTAL_FACTOR: u32 = 10;

/// How many steps a transcript keeps (the newest).
const TRANSCRIPT_STEPS: usize = 12;

/// How many bytes of each step a transcript shows from its start and end.
const EDGE: usize = 60;

/// Options for a connection; see [`Client::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until you call `connect` or `connect_to`"]
pub struct ClientBuilder {
    recv_buffer: Option<usize>,
    read_deadline: Duration,
    connect_deadline: Duration,
}

impl ClientBuilder {
    /// Sets `SO_RCVBUF` before connecting, where it also limits the TCP
    /// window the client offers: the way to make a slow reader whose data
    /// piles up in the server. (Linux doubles the value for bookkeeping.)
    pub fn recv_buffer(mut self, bytes: usize) -> Self {
        self.recv_buffer = Some(bytes);
        self
    }

    /// How long a read waits for the next byte.
    pub fn read_deadline(mut self, deadline: Duration) -> Self {
        self.read_deadline = deadline;
        self
    }

    /// How long the connect may take.
    pub fn connect_deadline(mut self, deadline: Duration) -> Self {
        self.connect_deadline = deadline;
        self
    }

    /// Connects to `addr`.
    #[track_caller]
    pub fn connect(self, addr: SocketAddr) -> Client {
        self.open(addr, None)
    }

    /// Connects to `server`, and quotes it in every failure.
    #[track_caller]
    pub fn connect_to(self, server: &Server) -> Client {
        self.open(server.addr(), Some(server.view()))
    }

    #[track_caller]
    fn open(self, addr: SocketAddr, server: Option<ServerView>) -> Client {
        let fail = |e: io::Error| -> ! {
            let mut r = Report::new(format!("connected to {addr}"));
            let mut got = match e.kind() {
                io::ErrorKind::TimedOut => {
                    format!("no connection within {:?}", self.connect_deadline)
                }
                io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
                _ => e.to_string(),
            };
            if let Some(s) = &server {
                got.push_str(&fate_suffix(s));
                r = s.quote(r);
            }
            r.expected(format!(
                "the connection to be accepted within {:?}",
                self.connect_deadline
            ))
            .got(got)
            .hint(connect_hint(addr, &e))
            .fail()
        };
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .unwrap_or_else(|e| fail(e));
        if let Some(n) = self.recv_buffer {
            socket.set_recv_buffer_size(n).unwrap_or_else(|e| fail(e));
        }
        socket
            .connect_timeout(&addr.into(), self.connect_deadline)
            .unwrap_or_else(|e| fail(e));
        Client::from_connected(socket.into(), addr, self.read_deadline, server)
    }
}

/// One TCP connection of a test; see the module docs.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    peer: SocketAddr,
    read_deadline: Duration,
    /// Bytes received but not yet taken by a read: `send` reads while it
    /// writes, and `read_line` may read past the newline.
    inbox: Vec<u8>,
    /// How the connection ended on the reading side, once it has.
    closed: Option<Closed>,
    sent: u64,
    received: u64,
    transcript: Transcript,
    /// The server to quote in failures, from `connect_to`.
    server: Option<ServerView>,
    /// A hint set by the test, used instead of the default ones.
    hint: Option<String>,
}

/// How the reading side of a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Closed {
    /// End of file: the server closed (or shut down) its side.
    Eof,
    /// The server reset the connection (RST).
    Reset,
    /// Another read error.
    Error(String),
}

/// Why a read stopped before it had what it wanted.
enum Stop {
    Quiet(Duration),
    Closed,
    TooLong(Duration),
    /// The server is asleep with the test's bytes unread (see
    /// [`crate::wait`]): it will not answer.
    Parked(Parked),
}

/// What one wait for data brought.
enum Fill {
    Progress,
    Quiet,
    Closed,
    Parked(Parked),
}

impl Client {
    /// Options (receive buffer, deadlines) before connecting.
    pub fn builder() -> ClientBuilder {
        ClientBuilder {
            recv_buffer: None,
            read_deadline: READ_DEADLINE,
            connect_deadline: CONNECT_DEADLINE,
        }
    }

    /// Connects to `addr` with a deadline.
    #[track_caller]
    pub fn connect(addr: SocketAddr) -> Client {
        Client::builder().connect(addr)
    }

    /// Connects to `server`; failures then say whether the server still runs
    /// and quote its stderr as `[your server]`.
    #[track_caller]
    pub fn connect_to(server: &Server) -> Client {
        Client::builder().connect_to(server)
    }

    fn from_connected(
        stream: TcpStream,
        peer: SocketAddr,
        read_deadline: Duration,
        server: Option<ServerView>,
    ) -> Client {
        // Both matter for what tests measure; see the module docs. Neither
        // can fail on a connected TCP socket.
        let _ = stream.set_nodelay(true);
        let _ = stream.set_nonblocking(true);
        Client {
            stream,
            peer,
            read_deadline,
            inbox: Vec::new(),
            closed: None,
            sent: 0,
            received: 0,
            transcript: Transcript::default(),
            server,
            hint: None,
        }
    }

    /// The server's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// This end's address (the server sees it as the client's address).
    pub fn local_addr(&self) -> SocketAddr {
        self.stream
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Bytes sent so far.
    pub fn sent_total(&self) -> u64 {
        self.sent
    }

    /// Bytes received so far (including those not yet read by the test).
    pub fn received_total(&self) -> u64 {
        self.received
    }

    /// How long reads wait for the next byte from now on.
    pub fn set_read_deadline(&mut self, deadline: Duration) -> &mut Self {
        self.read_deadline = deadline;
        self
    }

    /// The hint for this client's failures from now on, instead of the
    /// default ones; best a question about the learner's code ("do you send
    /// the message to every client except the sender?").
    pub fn hint(&mut self, hint: impl Display) -> &mut Self {
        self.hint = Some(hint.to_string());
        self
    }

    /// Sets `SO_RCVBUF` now. After the handshake the window scale is fixed,
    /// so [`ClientBuilder::recv_buffer`] limits the window more reliably.
    #[track_caller]
    pub fn set_recv_buffer(&mut self, bytes: usize) -> &mut Self {
        if let Err(e) = SockRef::from(&self.stream).set_recv_buffer_size(bytes) {
            self.report()
                .did(format!("set SO_RCVBUF to {bytes}"))
                .got(e)
                .hint("this is a problem in the test setup, not in your code")
                .fail();
        }
        self
    }

    /// Sends all of `bytes`, reading what arrives meanwhile (kept for the next
    /// read). Fails if the server stops reading for the read deadline or
    /// closes the connection.
    #[track_caller]
    pub fn send(&mut self, bytes: &[u8]) -> &mut Self {
        let started = Instant::now();
        let cap = self.read_deadline * TOTAL_FACTOR;
        let mut off = 0;
        let mut progress = Instant::now();
        // A server that stops reading because it is parked is told apart
        // from one that is busy; one that answers meanwhile is not parked.
        let mut watch = self.park_watch();
        while off < bytes.len() {
            match self.stream.write(&bytes[off..]) {
                Ok(n) => {
                    self.record_sent(&bytes[off..off + n]);
                    off += n;
                    progress = Instant::now();
                    watch.as_mut().map(ParkWatch::reset);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let idle = self.read_deadline.saturating_sub(progress.elapsed());
                    if idle.is_zero() || started.elapsed() >= cap {
                        self.fail_send(off, bytes.len(), None);
                    }
                    // Wait to write, and read while waiting (see module docs);
                    // once the reading side has ended there is nothing to read.
                    let mut events = libc::POLLOUT;
                    if self.closed.is_none() {
                        events |= libc::POLLIN;
                    }
                    let slice = if watch.is_some() {
                        idle.min(SAMPLE)
                    } else {
                        idle
                    };
                    let rev = poll_fd(self.stream.as_raw_fd(), events, slice);
                    if rev & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
                        && self.closed.is_none()
                        && matches!(self.read_available(), Fill::Progress)
                    {
                        watch.as_mut().map(ParkWatch::reset);
                    }
                    if rev == 0
                        && let Some(parked) = watch.as_mut().and_then(ParkWatch::look)
                    {
                        self.fail_send_parked(off, bytes.len(), parked);
                    }
                }
                Err(e) => self.fail_send(off, bytes.len(), Some(e)),
            }
        }
        self
    }

    /// Sends `line` followed by `"\n"`.
    #[track_caller]
    pub fn send_line(&mut self, line: &str) -> &mut Self {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.send(&bytes)
    }

    /// Writes `bytes` without reading anything, until all are written or the
    /// socket accepts nothing more for `stall`; returns how many were
    /// written. For slow-reader tests: the server's output piles up in its
    /// own memory (or it stops reading) while this client does not read.
    #[track_caller]
    pub fn send_until_stalled(&mut self, bytes: &[u8], stall: Duration) -> usize {
        let mut off = 0;
        let mut progress = Instant::now();
        while off < bytes.len() {
            match self.stream.write(&bytes[off..]) {
                Ok(n) => {
                    self.record_sent(&bytes[off..off + n]);
                    off += n;
                    progress = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let idle = stall.saturating_sub(progress.elapsed());
                    if idle.is_zero() {
                        break;
                    }
                    poll_fd(self.stream.as_raw_fd(), libc::POLLOUT, idle);
                }
                Err(e) => self.fail_send(off, bytes.len(), Some(e)),
            }
        }
        off
    }

    /// Reads exactly `n` bytes.
    #[track_caller]
    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        match self.gather(|inbox| (inbox.len() >= n).then_some(n)) {
            Ok(bytes) => bytes,
            Err(stop) => self.fail_read(format!("{n} bytes back"), stop, Hints::bytes()),
        }
    }

    /// Reads one line, up to and including `"\n"` (invalid UTF-8 replaced).
    #[track_caller]
    pub fn read_line(&mut self) -> String {
        let line = |inbox: &[u8]| inbox.iter().position(|&b| b == b'\n').map(|i| i + 1);
        match self.gather(line) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(stop) => self.fail_read(
                "a line ending in \"\\n\"".to_string(),
                stop,
                Hints {
                    nothing: "nothing came back at all: does your server write its answer to this connection (and flush it, if it writes through a buffer)?",
                    partial: "part of a line came back: do you end each line with \"\\n\", and flush or write it out before waiting for more input?",
                },
            ),
        }
    }

    /// Reads until the server closes the connection (end of file or reset);
    /// returns everything received that was not read yet.
    #[track_caller]
    pub fn read_until_closed(&mut self) -> Vec<u8> {
        let started = Instant::now();
        let cap = self.read_deadline * TOTAL_FACTOR;
        loop {
            if self.closed.is_some() {
                return std::mem::take(&mut self.inbox);
            }
            let stop = if started.elapsed() >= cap {
                Stop::TooLong(cap)
            } else {
                match self.fill(self.read_deadline) {
                    Fill::Progress | Fill::Closed => continue,
                    Fill::Quiet => Stop::Quiet(self.read_deadline),
                    Fill::Parked(p) => Stop::Parked(p),
                }
            };
            self.fail_read(
                "the server to close the connection".to_string(),
                stop,
                Hints::same(
                    "do you close (drop) the connection when you are done with it, e.g. after the client half-closed?",
                ),
            );
        }
    }

    /// Reads one protocol unit: `enough(received, closed)` looks at the
    /// bytes received and not yet taken (and whether the server has closed
    /// its side) and says how many of them make the unit, or `None` to wait
    /// for more. `what` names the unit in a failure ("an HTTP response"),
    /// `hint` is the hint for a server that went quiet after sending part
    /// of it (one that sent nothing at all gets a hint of its own). Used by
    /// [`crate::http`] to frame responses.
    #[track_caller]
    pub fn read_framed(
        &mut self,
        what: &str,
        hint: &str,
        enough: impl Fn(&[u8], bool) -> Option<usize>,
    ) -> Vec<u8> {
        let started = Instant::now();
        let cap = self.read_deadline * TOTAL_FACTOR;
        loop {
            if let Some(n) = enough(&self.inbox, self.closed.is_some()) {
                return self.inbox.drain(..n).collect();
            }
            let stop = if started.elapsed() >= cap {
                Stop::TooLong(cap)
            } else {
                match self.fill(self.read_deadline) {
                    Fill::Progress => continue,
                    Fill::Quiet => Stop::Quiet(self.read_deadline),
                    Fill::Parked(p) => Stop::Parked(p),
                    // Closed: `enough` gets one more look, knowing it.
                    Fill::Closed if enough(&self.inbox, true).is_some() => continue,
                    Fill::Closed => Stop::Closed,
                }
            };
            let nothing = format!(
                "nothing of {what} came back: does your server answer this at all (read it, then write the answer to this same connection)?"
            );
            let hints = Hints {
                nothing: &nothing,
                partial: hint,
            };
            self.fail_read(what.to_string(), stop, hints);
        }
    }

    /// Whether a read has seen the server close its side (end of file, reset
    /// or a read error). Only reads notice; see [`Client::expect_closed`] to
    /// wait for it.
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// Reads `expected.len()` bytes and fails unless they are `expected`,
    /// showing the first difference. Stops early at the first wrong byte.
    #[track_caller]
    pub fn expect_bytes(&mut self, expected: &[u8]) -> &mut Self {
        let n = expected.len();
        let enough = |inbox: &[u8]| {
            let k = inbox.len().min(n);
            (k == n || inbox[..k] != expected[..k]).then_some(k)
        };
        let got = match self.gather(enough) {
            Ok(got) => got,
            Err(stop) => self.fail_read(
                format!("{n} bytes back: {}", show(expected)),
                stop,
                Hints::bytes(),
            ),
        };
        if let Some(diff) = first_difference(expected, &got) {
            self.fail_with(
                format!("{n} bytes back: {}", show(expected)),
                format!("{} bytes that differ", got.len()),
                Some(format!("\n{diff}")),
                "compare the bytes above: is something added, dropped or reordered (a buffer written twice, or bytes past the end of what was read)?",
            );
        }
        self
    }

    /// Fails if anything arrives within `duration` (or the connection
    /// closes). For "must not receive" checks; prove first that the message
    /// went where it should, so the check is not passed by a server that
    /// sends nothing at all.
    #[track_caller]
    pub fn expect_silence(&mut self, duration: Duration) -> &mut Self {
        if self.inbox.is_empty() {
            // Silence is the expected outcome: no park watch here.
            match self.wait_and_read(duration, None) {
                Fill::Quiet | Fill::Parked(_) => return self,
                Fill::Progress => {}
                Fill::Closed => {
                    self.fail_with(
                        format!("nothing for {duration:?}, on an open connection"),
                        self.closed_phrase(),
                        None,
                        "why does the server close this connection?",
                    );
                }
            }
        }
        self.fail_with(
            format!("nothing for {duration:?}"),
            format!(
                "{} bytes within {duration:?}: {}",
                self.inbox.len(),
                show(&self.inbox)
            ),
            None,
            "should this client receive that at all? e.g. is a message sent back to its own sender?",
        )
    }

    /// Fails unless the server closes the connection (end of file or reset)
    /// within the read deadline, with nothing more sent first.
    #[track_caller]
    pub fn expect_closed(&mut self) -> &mut Self {
        if self.inbox.is_empty() {
            match self.fill(self.read_deadline) {
                Fill::Closed => return self,
                Fill::Progress => {}
                Fill::Parked(p) => self.fail_with(
                    expected_close(self.read_deadline),
                    p.describe(self.conn()),
                    None,
                    p.hint(self.conn()),
                ),
                Fill::Quiet => self.fail_with(
                    expected_close(self.read_deadline),
                    format!(
                        "the connection was still open after {:?} of silence",
                        self.read_deadline
                    ),
                    None,
                    "do you close (drop) the socket here, in every path, including errors?",
                ),
            }
        }
        self.fail_with(
            "the server to close the connection, sending nothing more",
            format!("{} more bytes: {}", self.inbox.len(), show(&self.inbox)),
            None,
            "what does the server still send here, and why?",
        )
    }

    /// Closes the sending side (`shutdown(SHUT_WR)`): the server reads end of
    /// file but can still send.
    #[track_caller]
    pub fn half_close(&mut self) -> &mut Self {
        if let Err(e) = self.stream.shutdown(Shutdown::Write) {
            self.report()
                .did("closed its sending side (shutdown(SHUT_WR))")
                .got(e)
                .hint("the connection was already broken")
                .fail();
        }
        self.transcript
            .note("closed its sending side (shutdown(SHUT_WR))");
        self
    }

    /// Closes the connection abruptly: `SO_LINGER` 0 makes the close send a
    /// reset (RST) instead of the usual FIN, as when a client crashes
    /// mid-request. The server's next read or write fails with
    /// `ECONNRESET` (or `EPIPE`).
    pub fn reset(self) {
        // A failure only means the socket is already dead, which is fine.
        let _ = SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
        drop(self);
    }

    /// A report with the connection's transcript (and, for `connect_to`, the
    /// server's stderr), ready for `expected`, `got`, `hint`.
    pub fn report(&self) -> Report {
        let mut r = Report::new(format!("connected to {}", self.peer));
        if self.transcript.dropped > 0 {
            r = r.did(format!(
                "... ({} earlier steps not shown)",
                self.transcript.dropped
            ));
        }
        for step in &self.transcript.steps {
            r = r.did(step);
        }
        if let Some(s) = &self.server {
            r = s.quote(r);
        }
        r
    }

    // ---- internals ----

    fn record_sent(&mut self, bytes: &[u8]) {
        self.sent += bytes.len() as u64;
        self.transcript.push(Dir::Sent, bytes);
    }

    /// Reads whatever is available now (up to 4 MiB) into the inbox.
    fn read_available(&mut self) -> Fill {
        let mut buf = [0u8; 16 * 1024];
        let mut got = 0;
        while got < 4 << 20 {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.closed = Some(Closed::Eof);
                    self.transcript.note("the server closed the connection");
                    break;
                }
                Ok(n) => {
                    self.inbox.extend_from_slice(&buf[..n]);
                    self.received += n as u64;
                    self.transcript.push(Dir::Received, &buf[..n]);
                    got += n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    self.closed = Some(Closed::Reset);
                    self.transcript
                        .note("the server reset the connection (RST)");
                    break;
                }
                Err(e) => {
                    self.transcript.note(format!("reading failed: {e}"));
                    self.closed = Some(Closed::Error(e.to_string()));
                    break;
                }
            }
        }
        if got > 0 {
            Fill::Progress
        } else if self.closed.is_some() {
            Fill::Closed
        } else {
            Fill::Quiet
        }
    }

    /// Waits up to `idle` for data and reads it; gives up early when the
    /// server is parked (see [`crate::wait`]).
    fn fill(&mut self, idle: Duration) -> Fill {
        let watch = self.park_watch();
        self.wait_and_read(idle, watch)
    }

    /// Waits up to `idle` for data and reads it, looking at the server
    /// between slices of [`SAMPLE`] when there is a `watch`.
    fn wait_and_read(&mut self, idle: Duration, mut watch: Option<ParkWatch>) -> Fill {
        if self.closed.is_some() {
            return Fill::Closed;
        }
        let until = Instant::now() + idle;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let slice = if watch.is_some() {
                left.min(SAMPLE)
            } else {
                left
            };
            if poll_fd(self.stream.as_raw_fd(), libc::POLLIN, slice) == 0 {
                if Instant::now() >= until {
                    return Fill::Quiet;
                }
                if let Some(parked) = watch.as_mut().and_then(ParkWatch::look) {
                    return Fill::Parked(parked);
                }
                continue;
            }
            match self.read_available() {
                // Readable but nothing there (spurious): wait the rest.
                Fill::Quiet if Instant::now() < until => continue,
                other => return other,
            }
        }
    }

    /// A watch on the server's side of this connection, for clients that
    /// know their server.
    fn park_watch(&self) -> Option<ParkWatch> {
        let server = self.server.as_ref()?;
        Some(ParkWatch::new(server.pid(), self.conn()))
    }

    /// This connection as the park watch names it.
    fn conn(&self) -> Conn {
        Conn::Tcp {
            server: self.peer,
            client: self.local_addr(),
        }
    }

    /// Reads until `enough` says how many inbox bytes to take.
    fn gather(&mut self, enough: impl Fn(&[u8]) -> Option<usize>) -> Result<Vec<u8>, Stop> {
        let started = Instant::now();
        let cap = self.read_deadline * TOTAL_FACTOR;
        loop {
            if let Some(n) = enough(&self.inbox) {
                return Ok(self.inbox.drain(..n).collect());
            }
            if started.elapsed() >= cap {
                return Err(Stop::TooLong(cap));
            }
            match self.fill(self.read_deadline) {
                Fill::Progress => {}
                Fill::Quiet => return Err(Stop::Quiet(self.read_deadline)),
                Fill::Closed => return Err(Stop::Closed),
                Fill::Parked(p) => return Err(Stop::Parked(p)),
            }
        }
    }

    #[track_caller]
    fn fail_read(&self, expected: String, stop: Stop, hints: Hints<'_>) -> ! {
        let mut got = format!("sent {} bytes, got {} back", self.sent, self.received);
        match &stop {
            Stop::Quiet(d) => {
                got.push_str(&format!(" before the connection went quiet for {d:?}"));
            }
            Stop::TooLong(d) => got.push_str(&format!(", still waiting after {d:?}")),
            Stop::Closed => {
                got.push_str(", then ");
                got.push_str(&self.closed_phrase());
            }
            Stop::Parked(p) => {
                got.push_str("; ");
                got.push_str(&p.describe(self.conn()));
            }
        }
        got.push_str(&self.server_suffix());
        if !self.inbox.is_empty() {
            got.push_str(&format!(
                "; received for this read: {} bytes {}",
                self.inbox.len(),
                show(&self.inbox)
            ));
        }
        let hint = match (&stop, &self.closed) {
            (Stop::Closed, Some(Closed::Reset)) => self.hint_or(
                "a reset (RST) means your server closed the socket with unread input, or crashed: read the stderr below",
            ),
            (Stop::Closed, _) => self.hint_or(
                "does a handler return (dropping the socket) before it has written everything, or did the server crash?",
            ),
            (Stop::Parked(p), _) => self.hint_or(p.hint(self.conn())),
            // Nothing of what was awaited arrived, or a part of it: two
            // different failures.
            _ if self.inbox.is_empty() => self.hint_or(hints.nothing),
            _ => self.hint_or(hints.partial),
        };
        self.report().expected(expected).got(got).hint(hint).fail()
    }

    #[track_caller]
    fn fail_send(&self, off: usize, len: usize, err: Option<io::Error>) -> ! {
        let (got, hint) = match err {
            None => (
                format!(
                    "sent {off} of {len} bytes, then the server stopped reading for {:?} (the socket's send buffer stayed full; the test was reading all the while)",
                    self.read_deadline
                ),
                "does your server keep reading while it has output to write, and read everything a client sends?",
            ),
            Some(e) => (
                format!("sent {off} of {len} bytes, then sending failed: {e}"),
                "did the server close or reset the connection before reading everything?",
            ),
        };
        self.fail_with(format!("to send all {len} bytes"), got, None, hint)
    }

    #[track_caller]
    fn fail_send_parked(&self, off: usize, len: usize, parked: Parked) -> ! {
        self.fail_with(
            format!("to send all {len} bytes"),
            format!(
                "sent {off} of {len} bytes, then the socket's send buffer stayed full; {}",
                parked.describe(self.conn())
            ),
            None,
            parked.hint(self.conn()),
        )
    }

    fn closed_phrase(&self) -> String {
        match &self.closed {
            Some(Closed::Reset) => "the server reset the connection (RST)".into(),
            Some(Closed::Error(e)) => format!("reading failed: {e}"),
            _ => "the server closed the connection".into(),
        }
    }

    /// "; the server is still running" or "; the server exited with code 3",
    /// for clients that know their server.
    fn server_suffix(&self) -> String {
        self.server.as_ref().map(fate_suffix).unwrap_or_default()
    }

    fn hint_or(&self, default: &str) -> String {
        self.hint.clone().unwrap_or_else(|| default.to_string())
    }

    /// Fails the test: `got`, then how the server fared (if it exited),
    /// then `after` (a diff); the test's own hint wins over `hint`.
    #[track_caller]
    fn fail_with(
        &self,
        expected: impl Display,
        got: impl Display,
        after: Option<String>,
        hint: impl AsRef<str>,
    ) -> ! {
        let got = format!("{got}{}{}", self.server_suffix(), after.unwrap_or_default());
        self.report()
            .expected(expected)
            .got(got)
            .hint(self.hint_or(hint.as_ref()))
            .fail()
    }
}

/// What `expect_closed` waited for.
fn expected_close(deadline: Duration) -> String {
    format!("the server to close the connection within {deadline:?}")
}

/// The hints of a read that went quiet: one for when nothing of what was
/// awaited arrived, one for when a part of it did.
struct Hints<'a> {
    nothing: &'a str,
    partial: &'a str,
}

impl<'a> Hints<'a> {
    /// For reads that expect bytes back (an echo).
    fn bytes() -> Hints<'static> {
        Hints {
            nothing: "nothing came back for this read: does your server write what it reads back to the same connection, as soon as it has read it?",
            partial: "part of it came back: do you write back everything you read (a write can be partial: loop, or use write_all), and keep reading?",
        }
    }

    /// The same hint either way.
    fn same(hint: &'a str) -> Hints<'a> {
        Hints {
            nothing: hint,
            partial: hint,
        }
    }
}

impl AsRawFd for Client {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

/// For socket options a test needs beyond these (`socket2::SockRef::from(&client)`).
impl AsFd for Client {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

fn fate_suffix(server: &ServerView) -> String {
    match (server.fate(), server.fd_pressure()) {
        (None, None) => " (the server is still running)".into(),
        (None, Some(pressure)) => format!(" (the server is still running, {pressure})"),
        (Some(ending), _) => format!(" (the server {ending})"),
    }
}

fn connect_hint(addr: SocketAddr, e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE) => {
            "the test process ran out of file descriptors: check `ulimit -n` (and `ulimit -Hn`)"
                .to_string()
        }
        _ if e.kind() == io::ErrorKind::ConnectionRefused => format!(
            "the server printed `listening on {addr}` but refuses connections there: do you print the address of the listener you actually bound, and keep that listener open while serving?"
        ),
        _ => format!(
            "the server printed `listening on {addr}` but does not complete connections: is its accept queue full (does it accept while it serves others)?"
        ),
    }
}

/// Waits up to `timeout` for `events` on `fd`; returns the events that
/// happened (0 on timeout).
fn poll_fd(fd: RawFd, events: i16, timeout: Duration) -> i16 {
    let until = Instant::now() + timeout;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        // Round up, so a wait of 0.4 ms does not become a busy poll of 0 ms.
        let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: poll on one valid pollfd for a socket this client owns.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r > 0 {
            return pfd.revents;
        }
        if r == 0 && Instant::now() >= until {
            return 0;
        }
        if r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return libc::POLLERR;
        }
    }
}

/// Which way bytes went in a transcript step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Sent,
    Received,
    Note,
}

/// One step: consecutive writes (or reads) are merged into one.
#[derive(Debug)]
struct Step {
    dir: Dir,
    len: u64,
    /// The first `2 * EDGE` bytes.
    head: Vec<u8>,
    /// The last `EDGE` bytes.
    tail: Vec<u8>,
    note: String,
}

impl Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = match self.dir {
            Dir::Note => return f.write_str(&self.note),
            Dir::Sent => "sent",
            Dir::Received => "received",
        };
        if self.len as usize <= self.head.len() {
            write!(f, "{verb} {} bytes: {}", self.len, show(&self.head))
        } else {
            write!(
                f,
                "{verb} {} bytes: {} ... {}",
                self.len,
                show(&self.head[..EDGE]),
                show(&self.tail)
            )
        }
    }
}

/// The newest steps of a connection, for failure messages.
#[derive(Debug, Default)]
struct Transcript {
    steps: VecDeque<Step>,
    /// How many older steps were dropped.
    dropped: usize,
}

impl Transcript {
    fn push(&mut self, dir: Dir, bytes: &[u8]) {
        let step = match self.steps.back_mut() {
            Some(last) if last.dir == dir => last,
            _ => {
                self.add(Step {
                    dir,
                    len: 0,
                    head: Vec::new(),
                    tail: Vec::new(),
                    note: String::new(),
                });
                self.steps.back_mut().expect("just added")
            }
        };
        step.len += bytes.len() as u64;
        let room = (2 * EDGE).saturating_sub(step.head.len()).min(bytes.len());
        step.head.extend_from_slice(&bytes[..room]);
        step.tail
            .extend_from_slice(&bytes[bytes.len().saturating_sub(EDGE)..]);
        let extra = step.tail.len().saturating_sub(EDGE);
        step.tail.drain(..extra);
    }

    fn note(&mut self, note: impl Into<String>) {
        self.add(Step {
            dir: Dir::Note,
            len: 0,
            head: Vec::new(),
            tail: Vec::new(),
            note: note.into(),
        });
    }

    fn add(&mut self, step: Step) {
        self.steps.push_back(step);
        if self.steps.len() > TRANSCRIPT_STEPS {
            self.steps.pop_front();
            self.dropped += 1;
        }
    }
}

/// Many connections from one thread.
pub mod many {
    use std::collections::HashMap;
    use std::io;
    use std::net::SocketAddr;
    use std::os::fd::{FromRawFd, IntoRawFd};
    use std::time::Instant;

    use mio::net::TcpStream;
    use mio::{Events, Interest, Poll, Token};

    use super::{CONNECT_DEADLINE, Client, READ_DEADLINE, fate_suffix};
    use crate::report::Report;
    use crate::server::{Server, ServerView};
    use crate::wait::{Conn, ParkWatch, SAMPLE};

    /// How many connects are in flight at once. A listen backlog is often
    /// 128; staying below it means a server that accepts promptly never
    /// sees a SYN dropped (and a 1 s retransmit) because its queue was full.
    pub const IN_FLIGHT: usize = 64;

    /// Opens `n` connections to `addr` from this thread, at most
    /// [`IN_FLIGHT`] connects at a time, each with [`CONNECT_DEADLINE`].
    /// Raises this process's soft `RLIMIT_NOFILE` first, failing with advice
    /// when the hard limit is too low.
    ///
    /// The server needs as many descriptors, and inherits its limit when it
    /// is spawned: call [`ensure_nofile_for`] *before* spawning it (or give
    /// it [`ServerBuilder::nofile_limit`](crate::server::ServerBuilder::nofile_limit)),
    /// unless the test is about a server running out of them. (Failures of
    /// clients made with [`connect_all_to`] say when the server is at its
    /// limit.)
    #[track_caller]
    pub fn connect_all(addr: SocketAddr, n: usize) -> Vec<Client> {
        connect_many(addr, n, None)
    }

    /// [`connect_all`] to `server`, whose clients quote it in failures.
    #[track_caller]
    pub fn connect_all_to(server: &Server, n: usize) -> Vec<Client> {
        connect_many(server.addr(), n, Some(server.view()))
    }

    /// Raises the soft limit on open files to what `n` more connections
    /// need, or fails with advice.
    #[track_caller]
    pub fn ensure_nofile_for(n: usize) {
        let open = crate::procfs::open_fds(std::process::id()).unwrap_or(64);
        // Some room for what other tests in this process open meanwhile.
        let want = (open + n + 64) as u64;
        let got = crate::procfs::raise_nofile_limit(want);
        if got < want {
            Report::new(format!(
                "raised this test's limit on open files for {n} connections ({open} files already open)"
            ))
            .expected(format!("a limit of at least {want}"))
            .got(format!("the hard limit allows only {got}"))
            .hint("raise the hard limit on open files (`ulimit -Hn` shows it): e.g. `ulimit -n 65536` as root, `nofile` in /etc/security/limits.conf, or LimitNOFILE= for a service; then run the tests again")
            .fail();
        }
    }

    #[track_caller]
    fn connect_many(addr: SocketAddr, n: usize, server: Option<ServerView>) -> Vec<Client> {
        ensure_nofile_for(n);
        let fail = |did: String, got: String, hint: &str| -> ! {
            let mut r = Report::new(did);
            let mut got = got;
            if let Some(s) = &server {
                got.push_str(&fate_suffix(s));
                r = s.quote(r);
            }
            r.expected(format!("{n} connections, each within {CONNECT_DEADLINE:?}"))
                .got(got)
                .hint(hint)
                .fail()
        };
        let setup = |e: io::Error| -> ! {
            fail(
                "set up an event loop (mio)".into(),
                e.to_string(),
                "this is a problem in the test setup, not in your code",
            )
        };
        let mut poll = Poll::new().unwrap_or_else(|e| setup(e));
        let mut watch = server
            .as_ref()
            .map(|s| ParkWatch::new(s.pid(), Conn::Listener { server: addr }));
        let mut events = Events::with_capacity(256);
        let mut pending: HashMap<usize, (TcpStream, Instant)> = HashMap::new();
        let mut done: Vec<Option<Client>> = (0..n).map(|_| None).collect();
        let (mut next, mut connected) = (0, 0);

        while connected < n {
            while pending.len() < super::many::IN_FLIGHT && next < n {
                let mut s = TcpStream::connect(addr).unwrap_or_else(|e| {
                    fail(
                        format!("opened connection {} of {n} to {addr}", next + 1),
                        format!("{connected} connected, then: {e}"),
                        "if this says \"too many open files\", check `ulimit -n`",
                    )
                });
                poll.registry()
                    .register(&mut s, Token(next), Interest::WRITABLE)
                    .unwrap_or_else(|e| setup(e));
                pending.insert(next, (s, Instant::now()));
                next += 1;
            }
            let oldest = pending.values().map(|(_, t)| *t).min().expect("in flight");
            let left = CONNECT_DEADLINE.saturating_sub(oldest.elapsed());
            if left.is_zero() {
                let (i, _) = pending
                    .iter()
                    .min_by_key(|(_, (_, t))| *t)
                    .expect("in flight");
                fail(
                    format!(
                        "opened {n} connections to {addr}, {} at a time",
                        super::many::IN_FLIGHT
                    ),
                    format!(
                        "connection {} was not established within {CONNECT_DEADLINE:?} ({connected} connected, {} in flight)",
                        i + 1,
                        pending.len()
                    ),
                    "does the server keep accepting while it serves other clients? (a full accept queue drops new connections; backlogs are often 128)",
                );
            }
            // With a server to watch, wake every SAMPLE to see whether it
            // is parked with connections waiting in its listen queue.
            let slice = if watch.is_some() {
                left.min(SAMPLE)
            } else {
                left
            };
            if let Err(e) = poll.poll(&mut events, Some(slice))
                && e.kind() != io::ErrorKind::Interrupted
            {
                setup(e);
            }
            if events.is_empty() {
                if let Some(parked) = watch.as_mut().and_then(ParkWatch::look) {
                    let conn = watch.as_ref().expect("watching").conn();
                    let mut r = Report::new(format!(
                        "opened {n} connections to {addr}, {} at a time",
                        super::many::IN_FLIGHT
                    ));
                    if let Some(s) = &server {
                        r = s.quote(r);
                    }
                    r.expected(format!("{n} connections, each within {CONNECT_DEADLINE:?}"))
                        .got(format!(
                            "{connected} connected, {} in flight; {}",
                            pending.len(),
                            parked.describe(conn)
                        ))
                        .hint(parked.hint(conn))
                        .fail();
                }
            } else if let Some(w) = watch.as_mut() {
                w.reset();
            }
            for ev in events.iter() {
                let i = ev.token().0;
                let Some((s, _)) = pending.get(&i) else {
                    continue;
                };
                // The mio way to finish a non-blocking connect: an error
                // means it failed; a peer address means it is established;
                // NotConnected means not yet (a spurious wake-up).
                let err = match s.take_error() {
                    Ok(Some(e)) | Err(e) => Some(e),
                    Ok(None) => match s.peer_addr() {
                        Ok(_) => None,
                        Err(e) if e.kind() == io::ErrorKind::NotConnected => continue,
                        Err(e) => Some(e),
                    },
                };
                if let Some(e) = err {
                    let hint = if e.kind() == io::ErrorKind::ConnectionRefused {
                        "the server refuses connections: did it close its listener, or crash?"
                    } else {
                        "read the server's stderr below"
                    };
                    fail(
                        format!("opened {n} connections to {addr}"),
                        format!(
                            "connection {} of {n} failed ({connected} connected): {e}",
                            i + 1
                        ),
                        hint,
                    );
                }
                let (mut s, _) = pending.remove(&i).expect("present");
                let _ = poll.registry().deregister(&mut s);
                // SAFETY: the descriptor comes straight from `into_raw_fd`,
                // so the std stream becomes its only owner.
                let std = unsafe { std::net::TcpStream::from_raw_fd(s.into_raw_fd()) };
                done[i] = Some(Client::from_connected(
                    std,
                    addr,
                    READ_DEADLINE,
                    server.clone(),
                ));
                connected += 1;
            }
        }
        done.into_iter()
            .map(|c| c.expect("all connected"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcript_merges_and_shortens_steps() {
        let mut t = Transcript::default();
        t.push(Dir::Sent, b"he");
        t.push(Dir::Sent, b"llo");
        t.push(Dir::Received, &[b'x'; 1000]);
        t.note("closed");
        let lines: Vec<String> = t.steps.iter().map(|s| s.to_string()).collect();
        assert_eq!(lines[0], "sent 5 bytes: \"hello\"");
        assert!(
            lines[1].starts_with("received 1000 bytes: \"xxx"),
            "{}",
            lines[1]
        );
        assert!(lines[1].contains("\" ... \""), "{}", lines[1]);
        assert_eq!(lines[2], "closed");
    }

    #[test]
    fn transcript_keeps_the_newest_steps() {
        let mut t = Transcript::default();
        for i in 0..TRANSCRIPT_STEPS + 3 {
            t.note(format!("step {i}"));
        }
        assert_eq!(t.dropped, 3);
        assert_eq!(t.steps.front().unwrap().to_string(), "step 3");
    }

    #[test]
    fn transcript_tail_holds_the_last_bytes() {
        let mut t = Transcript::default();
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        for chunk in data.chunks(7) {
            t.push(Dir::Received, chunk);
        }
        let step = t.steps.back().unwrap();
        assert_eq!(step.tail, data[data.len() - EDGE..]);
        assert_eq!(step.head, data[..2 * EDGE]);
    }
}
