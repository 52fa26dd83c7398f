//! A fault-injecting TCP proxy inside the test: it sits between the code
//! under test and a real PostgreSQL, Redis or upstream, and the test switches
//! what it does to the traffic at run time (Toxiproxy is the model).
//!
//! ```no_run
//! use labkit::faults::{Fault, FaultProxy};
//! let db = labkit::services::postgres();
//! let proxy = FaultProxy::for_url(&db.url);
//! // connect the learner's code to proxy.url() instead of db.url ...
//! proxy.set(Fault::Reset);      // every open connection gets an RST, new ones too
//! proxy.set(Fault::Pass);       // the database is back
//! ```
//!
//! The faults, and what the code under test sees:
//!
//! | fault | existing connections | new connections |
//! |---|---|---|
//! | [`Fault::Pass`] | bytes go through both ways | accepted, connected upstream |
//! | [`Fault::Latency`] | every chunk is held that long, both ways, order kept | as existing |
//! | [`Fault::Blackhole`] | nothing moves either way; bytes wait (as TCP would retransmit them), and flow again on `Pass` | accepted (the handshake completes), then silence |
//! | [`Fault::Reset`] | reset (RST) on both sides, at once | accepted, then reset |
//! | [`Fault::Refuse`] | keep passing | refused: the port has no listener (`ECONNREFUSED`) |
//!
//! [`FaultProxy::set`] returns once the fault is in force: after
//! `set(Fault::Reset)` every connection that was open has been reset, so a
//! test needs no sleep between switching a fault and checking its effect.
//!
//! # Design
//!
//! One thread runs a mio event loop over the listener and both sockets of
//! every connection; the test talks to it over a channel and a
//! [`mio::Waker`]. Each direction of a connection is a queue of chunks, each
//! with the instant it may leave (now, or now plus the latency). Reading
//! stops while a direction holds more than [`QUEUE_MAX`] bytes, so a slow
//! reader slows the writer down as a real network would, instead of filling
//! the test's memory. An end of file on one side is passed on as a
//! half-close (`shutdown(SHUT_WR)`) once everything before it has been
//! written; a reset or error on one side resets the other.
//!
//! `Refuse` closes the listening socket, which is the only way to make a
//! connect fail with `ECONNREFUSED`; leaving `Refuse` binds the same address
//! again (`SO_REUSEADDR`).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream as StdTcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use socket2::SockRef;

use crate::report::Report;

/// The most bytes one direction of a connection holds before the proxy
/// stops reading that side.
pub const QUEUE_MAX: usize = 1 << 20;

/// How long [`FaultProxy::set`] waits for the proxy's thread to apply a
/// fault; it takes microseconds unless the thread is gone.
const CONTROL_DEADLINE: Duration = Duration::from_secs(5);

/// How long the proxy waits to connect to its upstream.
const CONNECT_DEADLINE: Duration = Duration::from_secs(5);

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);

/// What the proxy does to the traffic; see the table in the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward every byte both ways, as soon as it arrives.
    Pass,
    /// Hold every chunk this long before forwarding it, both ways.
    Latency(Duration),
    /// Accept connections, forward nothing either way.
    Blackhole,
    /// Reset every open connection and every new one.
    Reset,
    /// Close the listener: new connections are refused; open ones pass.
    Refuse,
}

/// A TCP proxy to one upstream address, on `127.0.0.1:<free port>`; stops
/// (closing every connection) when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    url: Option<String>,
    control: mpsc::Sender<Control>,
    waker: Arc<Waker>,
    stats: Arc<Stats>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
enum Control {
    Set(Fault, mpsc::Sender<()>),
    Stop,
}

#[derive(Debug, Default)]
struct Stats {
    accepted: AtomicU64,
    open: AtomicU64,
}

impl FaultProxy {
    /// Starts a proxy to `upstream`, passing traffic through.
    #[track_caller]
    pub fn start(upstream: impl ToSocketAddrs) -> FaultProxy {
        let upstream = match upstream.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(a)) => a,
            Ok(None) | Err(_) => Report::new("started a fault proxy")
                .got("its upstream address does not resolve")
                .fail(),
        };
        let listener = match bind("127.0.0.1:0".parse().expect("a literal address")) {
            Ok(l) => l,
            Err(e) => Report::new("started a fault proxy on 127.0.0.1:0")
                .got(format!("bind failed: {e}"))
                .fail(),
        };
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let poll = Poll::new().expect("create the fault proxy's epoll instance");
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).expect("create a mio waker"));
        let (control, commands) = mpsc::channel();
        let stats = Arc::new(Stats::default());
        let mut event_loop = Loop {
            poll,
            listener: Some(listener),
            addr,
            upstream,
            fault: Fault::Pass,
            conns: Vec::new(),
            free: Vec::new(),
            commands,
            stats: Arc::clone(&stats),
        };
        let thread = thread::Builder::new()
            .name(format!("labkit-faults-{}", addr.port()))
            .spawn(move || event_loop.run())
            .expect("spawn the fault proxy's thread");
        FaultProxy {
            addr,
            upstream,
            url: None,
            control,
            waker,
            stats,
            thread: Some(thread),
        }
    }

    /// Starts a proxy to the host and port of `url` (`postgres://...`,
    /// `redis://...`); [`FaultProxy::url`] is the same URL through the proxy.
    #[track_caller]
    pub fn for_url(url: &str) -> FaultProxy {
        let Some((start, end)) = host_port_span(url) else {
            Report::new(format!("started a fault proxy for {url}"))
                .got("the URL has no host:port")
                .fail()
        };
        let mut proxy = FaultProxy::start(&url[start..end]);
        proxy.url = Some(proxy.rewrite(url));
        proxy
    }

    /// The URL given to [`FaultProxy::for_url`], pointing at the proxy.
    #[track_caller]
    pub fn url(&self) -> &str {
        match &self.url {
            Some(u) => u,
            None => Report::new("asked a fault proxy for its URL")
                .got("it was started with an address, not a URL")
                .hint("start it with FaultProxy::for_url, or use rewrite(url)")
                .fail(),
        }
    }

    /// `url` with its host and port replaced by the proxy's address.
    #[track_caller]
    pub fn rewrite(&self, url: &str) -> String {
        match host_port_span(url) {
            Some((start, end)) => format!("{}{}{}", &url[..start], self.addr, &url[end..]),
            None => Report::new(format!("pointed {url} at a fault proxy"))
                .got("the URL has no host:port")
                .fail(),
        }
    }

    /// The address the code under test connects to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address the proxy forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Connections accepted since the start (including those reset at once).
    pub fn accepted(&self) -> u64 {
        self.stats.accepted.load(Ordering::SeqCst)
    }

    /// Connections open through the proxy now.
    pub fn open(&self) -> u64 {
        self.stats.open.load(Ordering::SeqCst)
    }

    /// Switches the fault; returns once it is in force for every connection.
    #[track_caller]
    pub fn set(&self, fault: Fault) {
        let (ack, acked) = mpsc::channel();
        let sent = self.control.send(Control::Set(fault, ack)).is_ok();
        let _ = self.waker.wake();
        if !sent || acked.recv_timeout(CONTROL_DEADLINE).is_err() {
            Report::new(format!("switched the fault proxy to {fault:?}"))
                .expected(format!("it to apply the fault within {CONTROL_DEADLINE:?}"))
                .got("its thread did not answer (it has stopped)")
                .fail();
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.control.send(Control::Stop);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where `host:port` stands in a URL: after `scheme://` and any `user@`,
/// up to the path, query or end.
fn host_port_span(url: &str) -> Option<(usize, usize)> {
    let after_scheme = url.find("://")? + 3;
    let rest = &url[after_scheme..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let host_start = authority.rfind('@').map_or(0, |i| i + 1);
    let host_port = &authority[host_start..];
    if !host_port.contains(':') || host_port.ends_with(']') {
        return None;
    }
    Some((after_scheme + host_start, after_scheme + authority_len))
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// Closes a socket with an RST instead of a FIN.
fn reset(stream: &TcpStream) {
    let _ = SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// One direction of a connection: chunks read from one side, waiting to be
/// written to the other.
#[derive(Debug, Default)]
struct Pipe {
    chunks: VecDeque<Chunk>,
    queued: usize,
    /// The source sent end of file.
    eof: bool,
    /// The end of file was passed on (`shutdown(SHUT_WR)` on the sink).
    shut: bool,
}

#[derive(Debug)]
struct Chunk {
    due: Instant,
    data: Vec<u8>,
    written: usize,
}

#[derive(Debug)]
struct Conn {
    client: TcpStream,
    upstream: TcpStream,
    /// Client to upstream.
    up: Pipe,
    /// Upstream to client.
    down: Pipe,
}

/// What driving one direction found.
enum Flow {
    Ok,
    /// A read or write failed (a reset, or the peer vanished).
    Broken,
}

impl Pipe {
    /// Moves what is due from the queue to `to`, then reads what `from`
    /// has (unless `hold`), stamping it with `due`.
    fn drive(
        &mut self,
        from: &mut TcpStream,
        to: &mut TcpStream,
        now: Instant,
        delay: Duration,
        hold: bool,
        buf: &mut [u8],
    ) -> Flow {
        if hold {
            return Flow::Ok;
        }
        loop {
            if let Flow::Broken = self.write_due(to, now) {
                return Flow::Broken;
            }
            if self.eof || self.queued >= QUEUE_MAX {
                break;
            }
            match from.read(buf) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.queued += n;
                    self.chunks.push_back(Chunk {
                        due: now + delay,
                        data: buf[..n].to_vec(),
                        written: 0,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Flow::Broken,
            }
        }
        if let Flow::Broken = self.write_due(to, now) {
            return Flow::Broken;
        }
        if self.eof && self.chunks.is_empty() && !self.shut {
            self.shut = true;
            let _ = to.shutdown(Shutdown::Write);
        }
        Flow::Ok
    }

    fn write_due(&mut self, to: &mut TcpStream, now: Instant) -> Flow {
        while let Some(chunk) = self.chunks.front_mut() {
            if chunk.due > now {
                break;
            }
            match to.write(&chunk.data[chunk.written..]) {
                Ok(n) => {
                    chunk.written += n;
                    self.queued -= n;
                    if chunk.written == chunk.data.len() {
                        self.chunks.pop_front();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Flow::Broken,
            }
        }
        Flow::Ok
    }

    /// When the next held chunk may leave, if it is not due yet.
    fn next_due(&self, now: Instant) -> Option<Instant> {
        self.chunks.front().map(|c| c.due).filter(|&d| d > now)
    }

    fn done(&self) -> bool {
        self.shut
    }
}

struct Loop {
    poll: Poll,
    listener: Option<TcpListener>,
    addr: SocketAddr,
    upstream: SocketAddr,
    fault: Fault,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    commands: mpsc::Receiver<Control>,
    stats: Arc<Stats>,
}

impl Loop {
    fn run(&mut self) {
        if let Some(l) = &mut self.listener {
            self.poll
                .registry()
                .register(l, LISTENER, Interest::READABLE)
                .expect("register the fault proxy's listener");
        }
        let mut events = Events::with_capacity(256);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let timeout = self
                .next_due()
                .map(|d| d.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != io::ErrorKind::Interrupted
            {
                eprintln!("[labkit faults] poll failed: {e}");
                return;
            }
            let mut touched: Vec<usize> = Vec::new();
            for event in &events {
                match event.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {}
                    Token(t) => touched.push((t - 2) / 2),
                }
            }
            let mut switched = false;
            loop {
                match self.commands.try_recv() {
                    Ok(Control::Set(fault, ack)) => {
                        self.apply(fault);
                        // Bytes held by a blackhole move at once, before
                        // the test hears that the fault is lifted.
                        let all: Vec<usize> = (0..self.conns.len()).collect();
                        for id in all {
                            self.drive(id, &mut buf);
                        }
                        switched = true;
                        let _ = ack.send(());
                    }
                    Ok(Control::Stop) | Err(mpsc::TryRecvError::Disconnected) => return,
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
            // Timers carry no event: a chunk coming due, or a fault lifted,
            // means every connection is driven, not only those with events.
            if !switched && (timeout.is_some() || events.is_empty()) {
                touched = (0..self.conns.len()).collect();
            }
            touched.sort_unstable();
            touched.dedup();
            for id in touched {
                self.drive(id, &mut buf);
            }
        }
    }

    fn next_due(&self) -> Option<Instant> {
        let now = Instant::now();
        self.conns
            .iter()
            .flatten()
            .flat_map(|c| [c.up.next_due(now), c.down.next_due(now)])
            .flatten()
            .min()
    }

    fn accept_all(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((client, _)) => {
                    self.stats.accepted.fetch_add(1, Ordering::SeqCst);
                    self.admit(client);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and the like: the connection stays in the
                    // backlog; say so once and try again on the next event.
                    eprintln!("[labkit faults] accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// Connects a new client to the upstream, or resets it.
    fn admit(&mut self, client: TcpStream) {
        if self.fault == Fault::Reset {
            reset(&client);
            return;
        }
        let upstream = match StdTcpStream::connect_timeout(&self.upstream, CONNECT_DEADLINE)
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
        {
            Ok(s) => TcpStream::from_std(s),
            Err(_) => {
                // The upstream is down: the client sees what it would see
                // talking to a dead server through a load balancer.
                reset(&client);
                return;
            }
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let id = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        let mut conn = Conn {
            client,
            upstream,
            up: Pipe::default(),
            down: Pipe::default(),
        };
        let both = Interest::READABLE | Interest::WRITABLE;
        let registry = self.poll.registry();
        if registry
            .register(&mut conn.client, Token(2 + 2 * id), both)
            .and_then(|()| registry.register(&mut conn.upstream, Token(3 + 2 * id), both))
            .is_err()
        {
            reset(&conn.client);
            self.free.push(id);
            return;
        }
        self.stats.open.fetch_add(1, Ordering::SeqCst);
        self.conns[id] = Some(conn);
    }

    fn apply(&mut self, fault: Fault) {
        self.fault = fault;
        match fault {
            Fault::Reset => {
                for id in 0..self.conns.len() {
                    if let Some(conn) = &self.conns[id] {
                        reset(&conn.client);
                        reset(&conn.upstream);
                        self.close(id);
                    }
                }
            }
            Fault::Refuse => {
                if let Some(mut l) = self.listener.take() {
                    let _ = self.poll.registry().deregister(&mut l);
                }
            }
            Fault::Pass | Fault::Latency(_) | Fault::Blackhole => {}
        }
        if fault != Fault::Refuse && self.listener.is_none() {
            match bind(self.addr) {
                Ok(mut l) => {
                    let _ = self
                        .poll
                        .registry()
                        .register(&mut l, LISTENER, Interest::READABLE);
                    self.listener = Some(l);
                    // Connections may have queued while it was rebinding.
                    self.accept_all();
                }
                Err(e) => eprintln!(
                    "[labkit faults] could not listen on {} again: {e}",
                    self.addr
                ),
            }
        }
    }

    fn drive(&mut self, id: usize, buf: &mut [u8]) {
        let Some(Some(conn)) = self.conns.get_mut(id) else {
            return;
        };
        let now = Instant::now();
        let hold = self.fault == Fault::Blackhole;
        let delay = match self.fault {
            Fault::Latency(d) => d,
            _ => Duration::ZERO,
        };
        let up = conn
            .up
            .drive(&mut conn.client, &mut conn.upstream, now, delay, hold, buf);
        let down = conn
            .down
            .drive(&mut conn.upstream, &mut conn.client, now, delay, hold, buf);
        if matches!(up, Flow::Broken) || matches!(down, Flow::Broken) {
            // One side reset or vanished: the other learns it the same way.
            reset(&conn.client);
            reset(&conn.upstream);
            self.close(id);
        } else if conn.up.done() && conn.down.done() {
            self.close(id);
        }
    }

    fn close(&mut self, id: usize) {
        if let Some(mut conn) = self.conns[id].take() {
            let registry = self.poll.registry();
            let _ = registry.deregister(&mut conn.client);
            let _ = registry.deregister(&mut conn.upstream);
            self.free.push(id);
            self.stats.open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::host_port_span;

    #[test]
    fn finds_host_and_port_in_database_urls() {
        let span = |u: &str| host_port_span(u).map(|(a, b)| u[a..b].to_string());
        assert_eq!(
            span("postgres://postgres@127.0.0.1:5432/db?sslmode=disable").as_deref(),
            Some("127.0.0.1:5432")
        );
        assert_eq!(
            span("postgres://u:p@ss@localhost:5433").as_deref(),
            Some("localhost:5433")
        );
        assert_eq!(
            span("redis://127.0.0.1:6379/0").as_deref(),
            Some("127.0.0.1:6379")
        );
        assert_eq!(span("redis://127.0.0.1/0"), None);
        assert_eq!(span("127.0.0.1:6379"), None);
    }
}
