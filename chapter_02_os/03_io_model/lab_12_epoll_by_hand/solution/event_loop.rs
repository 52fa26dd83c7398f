//! A small event loop on raw epoll, and the [`Handler`] trait that
//! applications implement on top of it.
//!
//! The loop owns the sockets and does everything that is about the kernel:
//! accepting, reading until `EAGAIN`, buffering what a client cannot take
//! yet, backpressure, closing. A [`Handler`] only sees connections open,
//! send bytes and close, and answers through an [`Outbox`]. The echo and
//! broadcast servers are two handlers (`handlers.rs`) on the same loop.
//!
//! Each rule below fixes a bug found in a public epoll "worker" framework:
//!
//! 1. **A connection lives until the client leaves.** The loop closes a
//!    connection only on end of file (after echoing everything), on an
//!    error, or when a slow consumer overflows; never because one reply was
//!    sent. (The framework closed every connection after its first reply.)
//! 2. **Every descriptor is closed exactly once.** Connections hold their
//!    socket as an [`OwnedFd`]; closing a connection removes it from the
//!    table and drops it, and nothing calls `close` by hand. Events carry a
//!    [`ConnId`], an index *and a generation*, not the raw fd: an event
//!    still queued for a connection that closed earlier in the same batch
//!    names an old generation and is ignored, instead of landing on a new
//!    connection that reused the fd number. (The framework closed fds twice,
//!    and a reused number then lost a stranger's connection.)
//! 3. **Data that arrives with FIN is read before the FIN is acted on.**
//!    `EPOLLRDHUP`/`EPOLLHUP` do not mean "close now"; they mean "read": the
//!    read loop drains every byte, reaches end of file (`recv` returns 0)
//!    only after them, and the connection closes once they are echoed. (The
//!    framework checked the hang-up flag first and lost the last message.)
//! 4. **`EMFILE` does not spin.** A failed `accept` leaves the connection in
//!    the queue; retrying at once fails again forever. A spare descriptor is
//!    kept open and traded for the waiting connection, which is closed at
//!    once, until the queue is empty. (The framework busy-looped.)
//!
//! ## Edge-triggered, registered once
//!
//! Each socket is registered once, for `EPOLLIN | EPOLLOUT | EPOLLRDHUP`
//! with `EPOLLET`, and never modified. Edge-triggered epoll reports a change
//! (new data, buffer space freed), not a state, so a connection with nothing
//! to send is not woken for writing, and there is no `epoll_ctl` per partial
//! write (lab 10 re-registers instead, as mio's API invites). The price is
//! the rule of edge triggering: after an event, work until `EAGAIN`, because
//! no new event comes for bytes already there. Level-triggered epoll would
//! forgive a handler that reads once per event, at the cost of being
//! reminded of every ready socket on every `epoll_wait`, and of changing the
//! interest with `epoll_ctl` whenever output starts or stops being pending.

use std::fs::File;
use std::io::{self, ErrorKind};
use std::net::TcpListener;
use std::os::fd::{AsFd, OwnedFd};

use crate::sys;

/// The one read buffer, shared by all connections.
const READ_BUF: usize = 64 * 1024;

/// Stop reading from a connection whose own unsent output is above this
/// (backpressure: a client that does not read cannot make us buffer all it
/// sends). Reading resumes when a write brings it back under.
const HIGH_WATER: usize = 64 * 1024;

/// A connection whose unsent output grows past this although it is not
/// reading what *others* send it (broadcast) is disconnected: we cannot
/// pause every sender for one slow receiver. Redis does the same
/// (`client-output-buffer-limit` for pub/sub).
const MAX_PENDING: usize = 4 << 20;

/// Events fetched per `epoll_wait`.
const EVENTS: usize = 1024;

/// The `data` of the listener's registration; connections use
/// [`ConnId::to_u64`], which never reaches this value.
const LISTENER: u64 = u64::MAX;

/// A connection's name for handlers and for epoll: its slot in the table
/// and the generation of that slot, which changes every time the slot is
/// reused. Unlike an fd number, an old `ConnId` never names a new
/// connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnId {
    index: u32,
    generation: u32,
}

impl ConnId {
    fn to_u64(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    fn from_u64(data: u64) -> ConnId {
        ConnId {
            index: data as u32,
            generation: (data >> 32) as u32,
        }
    }
}

/// What an application does on the loop. Callbacks must not block: they
/// run on the loop's only thread.
pub trait Handler {
    /// A connection was accepted.
    fn on_open(&mut self, _conn: ConnId, _out: &mut Outbox<'_>) {}

    /// `conn` sent `data` (one read's worth: any size, any boundary).
    fn on_data(&mut self, conn: ConnId, data: &[u8], out: &mut Outbox<'_>);

    /// `conn` is closing; sending to it now does nothing.
    fn on_close(&mut self, _conn: ConnId, _out: &mut Outbox<'_>) {}
}

/// How a handler sends: to any open connection, without blocking.
pub struct Outbox<'a> {
    conns: &'a mut Conns,
}

impl Outbox<'_> {
    /// Queues `data` for `to` and writes as much as the socket takes now.
    /// Sending to a connection that is gone or closing does nothing.
    pub fn send(&mut self, to: ConnId, data: &[u8]) {
        let Some(conn) = self.conns.get_mut(to) else {
            return;
        };
        if conn.broken {
            return;
        }
        conn.queue(data);
        if conn.broken {
            self.conns.doomed.push(to);
        }
    }
}

/// One client.
struct Conn {
    /// The socket. Dropping the `Conn` closes it: the only `close`.
    fd: OwnedFd,
    /// Unsent output is `out[sent..]`; the buffer keeps its capacity.
    out: Vec<u8>,
    sent: usize,
    /// The client sent FIN: close once `out` is drained.
    read_closed: bool,
    /// An error, or a slow consumer: close as soon as the event is handled.
    broken: bool,
}

impl Conn {
    fn pending(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Writes `data` directly when nothing is queued; keeps the rest, in
    /// order, behind what is queued.
    fn queue(&mut self, data: &[u8]) {
        let mut written = 0;
        if self.pending() == 0 {
            while written < data.len() {
                match sys::send(self.fd.as_fd(), &data[written..]) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        self.broken = true;
                        return;
                    }
                }
            }
        }
        self.out.extend_from_slice(&data[written..]);
        if self.pending() > MAX_PENDING {
            eprintln!("epoll_echo: a client is not reading; disconnecting it");
            self.broken = true;
        }
    }

    /// Writes queued output until done or `EAGAIN`; the `EPOLLOUT` edge
    /// brings us back when there is room again.
    fn flush(&mut self) {
        while self.pending() > 0 {
            match sys::send(self.fd.as_fd(), &self.out[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.broken = true;
                    return;
                }
            }
        }
        self.out.clear();
        self.sent = 0;
    }
}

/// The connection table: a slab of slots with generations.
#[derive(Default)]
struct Conns {
    slots: Vec<Slot>,
    /// Indexes of empty slots, reused newest first.
    free: Vec<u32>,
    /// Connections marked broken while handling an event (possibly not the
    /// event's own: a broadcast can overflow a receiver); closed before the
    /// next event is handled.
    doomed: Vec<ConnId>,
}

#[derive(Default)]
struct Slot {
    generation: u32,
    conn: Option<Conn>,
}

impl Conns {
    fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.conn.as_mut()
    }

    fn insert(&mut self, conn: Conn) -> ConnId {
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot::default());
            (self.slots.len() - 1) as u32
        });
        let slot = &mut self.slots[index as usize];
        slot.conn = Some(conn);
        ConnId {
            index,
            generation: slot.generation,
        }
    }

    fn remove(&mut self, id: ConnId) -> Option<Conn> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        let conn = slot.conn.take()?;
        // Any id of the old generation is now stale.
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.index);
        Some(conn)
    }
}

pub struct EventLoop<H> {
    epoll: OwnedFd,
    listener: TcpListener,
    /// Held in reserve for `EMFILE` (rule 4).
    spare: Option<File>,
    conns: Conns,
    buf: Box<[u8]>,
    handler: H,
}

impl<H: Handler> EventLoop<H> {
    /// A loop serving `listener` with `handler`.
    pub fn new(listener: TcpListener, handler: H) -> io::Result<EventLoop<H>> {
        listener.set_nonblocking(true)?;
        let epoll = sys::epoll_create()?;
        // Edge-triggered too: one event per burst of connections, and the
        // accept loop drains them all.
        sys::epoll_ctl(
            epoll.as_fd(),
            libc::EPOLL_CTL_ADD,
            listener.as_fd(),
            (libc::EPOLLIN | libc::EPOLLET) as u32,
            LISTENER,
        )?;
        Ok(EventLoop {
            epoll,
            listener,
            spare: open_spare(),
            conns: Conns::default(),
            buf: vec![0; READ_BUF].into_boxed_slice(),
            handler,
        })
    }

    /// Serves forever (returns only if epoll itself fails).
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        loop {
            let n = sys::epoll_wait(self.epoll.as_fd(), &mut events)?;
            for ev in &events[..n] {
                // Copy out of the (packed) struct before use.
                let (flags, data) = (ev.events, ev.u64);
                if data == LISTENER {
                    self.accept_all();
                } else {
                    self.serve(ConnId::from_u64(data), flags);
                }
                self.close_doomed();
            }
        }
    }

    /// Accepts until `EAGAIN` (edge-triggered: one event, many connections).
    fn accept_all(&mut self) {
        loop {
            match sys::accept(self.listener.as_fd()) {
                Ok(fd) => self.add(fd),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    if !self.refuse_one() {
                        // The queue is empty, or there is no spare: done
                        // with this event; the next connection brings one.
                        return;
                    }
                }
                // The connection was reset while queued, or a signal came:
                // neither concerns the rest of the queue.
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
                Err(e) => {
                    eprintln!("epoll_echo: accept: {e}");
                    return;
                }
            }
        }
    }

    /// Rule 4: trades the spare descriptor for one waiting connection, which
    /// is closed at once. Returns whether it refused one (so there may be
    /// more waiting).
    ///
    /// `accept` reserves a descriptor *before* it looks at the queue, so at
    /// the limit it fails with `EMFILE` even when the queue is empty: only a
    /// refused connection is a reason to try again, never `EMFILE` itself.
    fn refuse_one(&mut self) -> bool {
        if self.spare.take().is_none() {
            eprintln!("epoll_echo: out of file descriptors and no spare; waiting");
            self.spare = open_spare();
            return false;
        }
        // The spare is closed (dropped) now, so this accept can succeed;
        // dropping the accepted fd closes it. An error is most likely
        // `EAGAIN`: the queue is empty.
        let refused = sys::accept(self.listener.as_fd()).is_ok();
        if refused {
            eprintln!("epoll_echo: out of file descriptors, refused a connection");
        }
        self.spare = open_spare();
        refused && self.spare.is_some()
    }

    fn add(&mut self, fd: OwnedFd) {
        // Best effort: an echo works without it, only slower for small
        // messages.
        let _ = sys::set_nodelay(fd.as_fd());
        let id = self.conns.insert(Conn {
            fd,
            out: Vec::new(),
            sent: 0,
            read_closed: false,
            broken: false,
        });
        let conn = self.conns.get_mut(id).expect("just inserted");
        let events = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
        if let Err(e) = sys::epoll_ctl(
            self.epoll.as_fd(),
            libc::EPOLL_CTL_ADD,
            conn.fd.as_fd(),
            events,
            id.to_u64(),
        ) {
            eprintln!("epoll_echo: epoll_ctl: {e}");
            // Never registered: drop it (closing the fd) without `on_close`.
            self.conns.remove(id);
            return;
        }
        self.handler.on_open(
            id,
            &mut Outbox {
                conns: &mut self.conns,
            },
        );
        // Bytes that arrived before the registration are reported by the
        // registration itself (epoll checks readiness on EPOLL_CTL_ADD).
    }

    /// Handles one event for `id`. The event's flags are deliberately not
    /// consulted: whatever they say, writing what is pending and reading
    /// until `EAGAIN` is the right response, and reading tells more than
    /// the flags (which bytes came before the hang-up, which error it was).
    fn serve(&mut self, id: ConnId, _flags: u32) {
        // Stale: the connection closed earlier in this batch (rule 2).
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        // Write first: it may free room below the high-water mark for the
        // read below.
        if conn.pending() > 0 {
            conn.flush();
        }
        // Every flag (IN, RDHUP, HUP, ERR, even OUT after a flush) leads to
        // the read loop, which finds out what happened by reading: data
        // first, then end of file or the error (rule 3).
        self.read(id);

        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if conn.broken || (conn.read_closed && conn.pending() == 0) {
            self.close(id);
        }
    }

    /// Reads until `EAGAIN`, end of file, an error, or backpressure, and
    /// hands each chunk to the handler.
    fn read(&mut self, id: ConnId) {
        // Borrow the fields separately: the handler gets the read buffer
        // and an outbox over the connection table at the same time.
        let EventLoop {
            conns,
            buf,
            handler,
            ..
        } = self;
        loop {
            let Some(conn) = conns.get_mut(id) else {
                return;
            };
            if conn.read_closed || conn.broken || conn.pending() >= HIGH_WATER {
                return;
            }
            match sys::recv(conn.fd.as_fd(), buf) {
                Ok(0) => conn.read_closed = true,
                Ok(n) => handler.on_data(id, &buf[..n], &mut Outbox { conns }),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => conn.broken = true,
            }
        }
    }

    /// Closes connections that became broken while handling an event.
    fn close_doomed(&mut self) {
        while let Some(id) = self.conns.doomed.pop() {
            self.close(id);
        }
    }

    /// Removes `id` from epoll and the table; dropping it closes the fd,
    /// once. A stale or already closed id does nothing.
    fn close(&mut self, id: ConnId) {
        let Some(conn) = self.conns.remove(id) else {
            return;
        };
        let _ = sys::epoll_ctl(
            self.epoll.as_fd(),
            libc::EPOLL_CTL_DEL,
            conn.fd.as_fd(),
            0,
            0,
        );
        self.handler.on_close(
            id,
            &mut Outbox {
                conns: &mut self.conns,
            },
        );
        drop(conn);
    }
}

/// The spare descriptor for rule 4; `None` when even that cannot be opened.
fn open_spare() -> Option<File> {
    File::open("/dev/null").ok()
}
