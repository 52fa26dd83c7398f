//! # Lab 10: an echo server on one thread with mio
//!
//! `mio_echo [ADDR]` (default `127.0.0.1:8080`) echoes every byte each client
//! sends back to that client, for thousands of clients at once, on **one
//! thread**, with memory that stays small when a client reads slowly.
//!
//! ## Design
//!
//! One `mio::Poll` (epoll underneath) watches the listener and every
//! connection. The loop waits for events and, for each, does as much work as
//! the socket allows without blocking, then goes back to waiting.
//!
//! - **Edge-triggered.** mio reports a socket once when it *becomes* readable
//!   or writable, not again while it stays so. So every handler works until
//!   the kernel says `WouldBlock`: accept until `WouldBlock`, read until
//!   `WouldBlock`, write until `WouldBlock`. Stopping earlier leaves bytes in
//!   the kernel that no future event will announce.
//! - **Partial writes.** A write may take only part of what we offer (the
//!   client's receive window and our send buffer are full). The unsent tail
//!   goes into the connection's `out` buffer, and only then do we ask for
//!   `WRITABLE` events; when `out` is empty again we drop that interest, so
//!   a connection with nothing to send never wakes the loop for writing.
//! - **Backpressure.** A client that sends but does not read would make us
//!   buffer everything it sends. When `out` holds more than [`HIGH_WATER`]
//!   we stop reading that client: its data waits in the kernel, the kernel's
//!   buffers fill, TCP flow control tells the client to stop sending. When a
//!   write brings `out` back under the mark we read again, *at once*: with
//!   edge triggering no new event will come for data that is already there.
//! - **Closing.** End of file (the client's FIN) ends the reading side; the
//!   connection closes once everything read has been echoed, so a client
//!   that half-closes still gets all its bytes back. Errors (reset, broken
//!   pipe) close at once. Closing deregisters the socket, drops it (which
//!   closes the fd) and frees its slot.
//! - **Running out of file descriptors.** When `accept` fails with `EMFILE`
//!   the connection stays in the kernel's accept queue, the listener stays
//!   readable, and a naive loop retries forever at 100% CPU. We keep one
//!   spare descriptor open (`/dev/null`): on `EMFILE` we close it, accept
//!   the connection into the freed slot, close that connection at once (the
//!   client sees the close instead of hanging), and reopen the spare. The
//!   queue drains, the loop goes back to sleep, and new clients are served
//!   as soon as old ones leave. (libuv does this; the alternative is to
//!   deregister the listener until a connection closes, which makes clients
//!   wait in the queue instead of being refused.)
//!
//! ## Performance
//!
//! One read buffer ([`READ_BUF`]) is shared by all connections: a read
//! fills it and the bytes are written straight back, so the common case
//! (the client reads as fast as it writes) copies nothing into `out` and
//! allocates nothing. `out` keeps its capacity between uses. Sockets set
//! `TCP_NODELAY`, so a small echo leaves at once instead of waiting for
//! Nagle's algorithm to batch it with the next one.

use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

mod slab;
use slab::Slab;

/// The address used when none is given.
const DEFAULT_ADDR: &str = "127.0.0.1:8080";

/// The listener's token; connections use their slab index, which never
/// gets this large.
const LISTENER: Token = Token(usize::MAX);

/// The one read buffer. 64 KiB is what a loopback read usually returns at
/// most; a bigger buffer would rarely be filled.
const READ_BUF: usize = 64 * 1024;

/// Stop reading from a client whose unsent output exceeds this. The most a
/// connection ever holds is this plus one read buffer.
const HIGH_WATER: usize = 64 * 1024;

/// How many events one `poll` returns at most; more wait for the next call.
const EVENTS: usize = 1024;

fn main() -> ExitCode {
    let arg = std::env::args().nth(1);
    let text = arg.as_deref().unwrap_or(DEFAULT_ADDR);
    let addr: SocketAddr = match text.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("mio_echo: bad address {text:?}: {e}");
            eprintln!("usage: mio_echo [ADDR]   (default {DEFAULT_ADDR})");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mio_echo: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(a) => println!("listening on {a}"),
        Err(e) => {
            eprintln!("mio_echo: {e}");
            return ExitCode::FAILURE;
        }
    }
    // The test (and any supervisor) waits for this line: flush it now.
    let _ = io::stdout().flush();

    match Server::new(listener).and_then(|mut s| s.run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mio_echo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One client.
struct Conn {
    stream: TcpStream,
    /// Echo bytes not yet written: `out[sent..]`. Kept (with its capacity)
    /// for the life of the connection; empty in the common case.
    out: Vec<u8>,
    /// How much of `out` has been written already. Advancing an index is
    /// cheaper than shifting the buffer after every partial write.
    sent: usize,
    /// The client sent FIN: nothing more to read; close once `out` drains.
    read_closed: bool,
    /// Whether `WRITABLE` is part of the registered interest.
    want_write: bool,
}

/// What a handler decided about a connection.
#[derive(PartialEq)]
enum Next {
    Keep,
    Close,
}

impl Conn {
    fn pending(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Reads until `WouldBlock` (edge-triggered!), end of file, or the
    /// output buffer passes the high-water mark, echoing as it goes.
    fn read_and_echo(&mut self, buf: &mut [u8]) -> Next {
        while !self.read_closed && self.pending() < HIGH_WATER {
            match self.stream.read(buf) {
                Ok(0) => self.read_closed = true,
                Ok(n) => {
                    if self.echo(&buf[..n]) == Next::Close {
                        return Next::Close;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // Reset by the peer, or another error: nothing to save.
                Err(_) => return Next::Close,
            }
        }
        Next::Keep
    }

    /// Sends `data` back: straight from the read buffer when nothing is
    /// queued, otherwise behind the queued bytes (order matters).
    fn echo(&mut self, data: &[u8]) -> Next {
        let mut written = 0;
        if self.pending() == 0 {
            while written < data.len() {
                match self.stream.write(&data[written..]) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => return Next::Close,
                }
            }
        }
        // The tail the kernel would not take yet: keep it, in order.
        self.out.extend_from_slice(&data[written..]);
        Next::Keep
    }

    /// Writes queued output until it is all sent or `WouldBlock`.
    fn flush(&mut self) -> Next {
        while self.pending() > 0 {
            match self.stream.write(&self.out[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Next::Keep,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Next::Close,
            }
        }
        // All sent: reset without freeing, so the capacity is reused.
        self.out.clear();
        self.sent = 0;
        Next::Keep
    }
}

struct Server {
    poll: Poll,
    listener: TcpListener,
    conns: Slab<Conn>,
    /// Read buffer shared by every connection (see "Performance").
    buf: Box<[u8]>,
    /// A descriptor held in reserve for `EMFILE` (see the module docs).
    spare: Option<File>,
}

impl Server {
    fn new(mut listener: TcpListener) -> io::Result<Server> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Server {
            poll,
            listener,
            conns: Slab::new(),
            buf: vec![0; READ_BUF].into_boxed_slice(),
            spare: open_spare(),
        })
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS);
        loop {
            match self.poll.poll(&mut events, None) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    Token(key) => self.serve(key, event.is_writable()),
                }
            }
        }
    }

    /// Accepts until `WouldBlock`: one readiness event may stand for many
    /// waiting connections.
    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => self.add(stream),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if is_fd_exhaustion(&e) => {
                    if !self.refuse_one() {
                        // The queue is empty, or there is no spare to trade:
                        // done with this event. The next connection to
                        // arrive brings a new one.
                        return;
                    }
                }
                // ECONNABORTED and friends concern one connection, which is
                // gone; keep accepting the others.
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::ConnectionAborted => {}
                Err(e) => {
                    eprintln!("mio_echo: accept: {e}");
                    return;
                }
            }
        }
    }

    /// Out of descriptors: spends the spare one to accept a waiting
    /// connection and close it at once, so the accept queue drains instead
    /// of keeping the listener readable forever. Returns whether it refused
    /// one (so there may be more to refuse).
    ///
    /// Note that `accept` reserves a descriptor *before* it looks at the
    /// queue: at the limit it fails with `EMFILE` even when no connection is
    /// waiting. So `EMFILE` alone does not mean "keep going"; only a refused
    /// connection does. Looping on `EMFILE` would spin forever once the
    /// queue is empty.
    fn refuse_one(&mut self) -> bool {
        let Some(spare) = self.spare.take() else {
            eprintln!("mio_echo: out of file descriptors and no spare; waiting");
            self.spare = open_spare();
            return false;
        };
        drop(spare);
        let refused = match self.listener.accept() {
            Ok((stream, peer)) => {
                eprintln!("mio_echo: out of file descriptors, refusing {peer}");
                drop(stream);
                true
            }
            // Most likely `WouldBlock`: the queue is empty.
            Err(_) => false,
        };
        self.spare = open_spare();
        refused && self.spare.is_some()
    }

    fn add(&mut self, mut stream: TcpStream) {
        // Small echoes should leave at once, not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let key = self.conns.vacant_key();
        // Only READABLE for now: WRITABLE is requested when a write is
        // partial, so idle connections cost no wake-ups.
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(key), Interest::READABLE)
        {
            eprintln!("mio_echo: register: {e}");
            return;
        }
        self.conns.insert(Conn {
            stream,
            out: Vec::new(),
            sent: 0,
            read_closed: false,
            want_write: false,
        });
        // Data may have arrived before registration; with edge triggering
        // the registration itself reports it, so nothing more to do here.
    }

    /// Handles an event for connection `key`.
    fn serve(&mut self, key: usize, writable: bool) {
        // A slot freed earlier in this batch of events: nothing to do.
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut next = Next::Keep;
        if writable || conn.pending() > 0 {
            next = conn.flush();
        }
        // Read whenever there is room, on any event: after a flush that
        // freed room there may be data waiting that no new event will
        // announce (edge triggering), and a readable event is handled here
        // too. A read that finds nothing costs one `WouldBlock`.
        if next == Next::Keep {
            next = conn.read_and_echo(&mut self.buf);
        }
        if next == Next::Keep && conn.read_closed && conn.pending() == 0 {
            // Half-closed by the client and everything echoed: done.
            next = Next::Close;
        }
        if next == Next::Close {
            self.close(key);
            return;
        }
        // WRITABLE interest exactly while output is pending.
        let want_write = conn.pending() > 0;
        if want_write != conn.want_write {
            let interest = if want_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if self
                .poll
                .registry()
                .reregister(&mut conn.stream, Token(key), interest)
                .is_err()
            {
                self.close(key);
                return;
            }
            conn.want_write = want_write;
        }
    }

    fn close(&mut self, key: usize) {
        if let Some(mut conn) = self.conns.remove(key) {
            // Closing the fd would remove it from epoll too, but only when
            // no other descriptor refers to the same socket; deregistering
            // says what we mean.
            let _ = self.poll.registry().deregister(&mut conn.stream);
            // Dropping `conn` closes the socket.
        }
    }
}

/// `EMFILE` (this process is at its limit) or `ENFILE` (the whole system is).
fn is_fd_exhaustion(e: &io::Error) -> bool {
    // Raw numbers from <errno.h>, to avoid a libc dependency for two
    // constants: EMFILE is 24 and ENFILE 23 on Linux.
    matches!(e.raw_os_error(), Some(24) | Some(23))
}

/// The spare descriptor; `None` when even that cannot be opened.
fn open_spare() -> Option<File> {
    File::open("/dev/null").ok()
}
