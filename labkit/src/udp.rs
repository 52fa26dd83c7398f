//! UDP for graders: a socket of the test's own whose every receive has a
//! deadline, and whose waits for a server's datagram fail fast when the
//! server is parked.
//!
//! ```no_run
//! use labkit::{server::Server, udp::Probe};
//! let server = Server::spawn("/path/to/udp_echo_server");
//! let probe = Probe::new();
//! probe.send(server.addr(), b"ping");
//! let (got, from) = probe.recv_from(&server, "sent a 4-byte datagram", "do you send_to the address recv_from gave you?");
//! assert_eq!(got, b"ping");
//! ```
//!
//! On loopback a datagram arrives in microseconds, so a wait that reaches
//! [`REPLY_DEADLINE`] has found a datagram that will never come. Before
//! that, [`Probe::recv_from`] looks at the server between slices of
//! [`SAMPLE`](crate::wait::SAMPLE): a server asleep with the test's datagram
//! still in its socket's queue (Recv-Q in `ss -uan`) is not going to answer,
//! and the test says so at once (see [`crate::wait`]).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::report::show;
use crate::server::Server;
use crate::wait::{Conn, ParkWatch, SAMPLE};

/// How long a test waits for a datagram before calling it lost.
pub const REPLY_DEADLINE: Duration = Duration::from_secs(5);

/// A receive buffer one byte larger than any datagram (65,507 bytes of data
/// over IPv4), so nothing the test receives is ever cut short.
pub const RECV_BUF: usize = 64 * 1024 + 1;

/// A UDP socket of the test's own on `127.0.0.1:0`; see the module docs.
#[derive(Debug)]
pub struct Probe {
    sock: UdpSocket,
}

impl Default for Probe {
    fn default() -> Self {
        Probe::new()
    }
}

impl Probe {
    /// Binds `127.0.0.1:0`.
    pub fn new() -> Probe {
        let sock = UdpSocket::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("[test] could not bind a UDP socket on 127.0.0.1:0: {e}"));
        Probe { sock }
    }

    /// The probe's own address (where replies must go).
    pub fn addr(&self) -> SocketAddr {
        self.sock
            .local_addr()
            .expect("[test] a bound socket has an address")
    }

    /// The socket, for a stand-in server that answers from it.
    pub fn socket(&self) -> &UdpSocket {
        &self.sock
    }

    /// Sends one datagram to `to`; a failure here is the test's own.
    pub fn send(&self, to: SocketAddr, bytes: &[u8]) {
        send_from(&self.sock, to, bytes);
    }

    /// The next datagram from anyone, or `None` when none comes within
    /// [`REPLY_DEADLINE`]. For stand-in servers and "nothing may arrive"
    /// checks; to wait for a server's answer use [`Probe::recv_from`].
    pub fn recv(&self) -> Option<(Vec<u8>, SocketAddr)> {
        self.recv_until(Instant::now() + REPLY_DEADLINE, None)
            .unwrap_or(None)
    }

    /// The next datagram, waiting for `server`'s answer: fails the test
    /// when none comes within [`REPLY_DEADLINE`], or as soon as the server
    /// is seen parked with a datagram unread. `did` says what the test
    /// sent; `hint` is where to look when nothing comes back.
    #[track_caller]
    pub fn recv_from(&self, server: &Server, did: &str, hint: &str) -> (Vec<u8>, SocketAddr) {
        self.next_from(server, did).unwrap_or_else(|| {
            // A dead server explains a missing datagram best.
            server.expect_alive(did);
            server
                .report()
                .did(did)
                .expected(format!("a datagram back at {}", self.addr()))
                .got(format!("nothing within {REPLY_DEADLINE:?}"))
                .hint(hint)
                .fail()
        })
    }

    /// The next datagram while waiting for `server`'s answers, or `None`
    /// when none comes within [`REPLY_DEADLINE`]; fails the test as soon
    /// as the server is seen parked with a datagram unread. For tests that
    /// collect several answers and judge them together.
    #[track_caller]
    pub fn next_from(&self, server: &Server, did: &str) -> Option<(Vec<u8>, SocketAddr)> {
        let conn = Conn::Udp {
            server: server.addr(),
        };
        let watch = ParkWatch::new(server.pid(), conn);
        match self.recv_until(Instant::now() + REPLY_DEADLINE, Some(watch)) {
            Ok(got) => got,
            Err(parked) => server
                .report()
                .did(did)
                .expected(format!("a datagram back at {}", self.addr()))
                .got(parked.describe(conn))
                .hint(parked.hint(conn))
                .fail(),
        }
    }

    /// Receives until `until`; `Err` once the watched server is parked.
    fn recv_until(
        &self,
        until: Instant,
        mut watch: Option<ParkWatch>,
    ) -> Result<Option<(Vec<u8>, SocketAddr)>, crate::wait::Parked> {
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let slice = if watch.is_some() {
                left.min(SAMPLE)
            } else {
                left
            };
            self.sock
                .set_read_timeout(Some(slice))
                .expect("[test] set a read timeout");
            match self.sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    buf.truncate(n);
                    return Ok(Some((buf, from)));
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    if let Some(parked) = watch.as_mut().and_then(ParkWatch::look) {
                        return Err(parked);
                    }
                }
                Err(e) => panic!("[test] receiving on {} failed: {e}", self.addr()),
            }
        }
    }
}

/// Sends one datagram from `from` to `to`; a failure here is the test's own.
pub fn send_from(from: &UdpSocket, to: SocketAddr, bytes: &[u8]) {
    let n = from
        .send_to(bytes, to)
        .unwrap_or_else(|e| panic!("[test] could not send {} bytes to {to}: {e}", bytes.len()));
    assert_eq!(
        n,
        bytes.len(),
        "[test] sent only part of a datagram: {}",
        show(bytes)
    );
}
