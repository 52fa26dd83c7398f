//! An upstream HTTP server inside the test, for proxy and load-balancer
//! graders: it records what reached it and misbehaves on demand.
//!
//! ```no_run
//! use labkit::{http, server::Server, upstream::Upstream};
//! let up = Upstream::start("a");
//! let proxy = Server::builder("/path/to/reverse_proxy")
//!     .arg(up.url())
//!     .spawn();
//! let r = http::client().get(http::url(&proxy, "/x?y=1")).send().unwrap();
//! assert_eq!(r.text().unwrap(), "a");
//! assert_eq!(up.wait_for_requests(1)[0].target, "/x?y=1");
//! ```
//!
//! # Design
//!
//! hyper's HTTP/1.1 server on a small tokio runtime of its own, so the test
//! stays plain blocking code. Every request except `GET /health` is
//! recorded ([`Recorded`]: method, target, headers, body, peer) and
//! answered by default with status 200, `x-upstream: <name>` and the name as
//! body, so a test can tell which upstream served a request. `GET /health`
//! is the health endpoint: 200, or 503 after [`Upstream::set_healthy`]
//! `(false)`; probes are counted, not recorded.
//!
//! A test switches what happens to the next requests ([`Behaviour`]): hang
//! without answering (a proxy's 504), close the connection without an
//! answer (a 502, or a load balancer's retry), or hold each request until
//! released (requests in flight, for least-connections). [`Upstream::stop`]
//! closes the port and every connection; [`Upstream::restart`] opens the
//! same port again. For streaming, [`Upstream::respond_in_two_parts`] sends
//! a response body's second part only when the test opens a [`Gate`] (or
//! breaks the response off mid-body when the test fails it), and
//! [`Upstream::wait_for_body_bytes`] sees a request body arrive before it
//! is complete.
//!
//! Every wait has a deadline ([`WAIT_DEADLINE`]) and fails with what the
//! upstream did see. State lives under one mutex; the test thread waits on
//! a condition variable, the server's tasks on a `watch` channel, and every
//! change wakes both.

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::report::{Report, show};
use crate::server::{Server, ServerView};
use crate::wait::{Conn, ParkWatch, SAMPLE};

/// How long a test waits for the upstream to see something.
pub const WAIT_DEADLINE: Duration = Duration::from_secs(5);

/// The health endpoint's path.
pub const HEALTH_PATH: &str = "/health";

/// What the upstream does with a request (other than a health probe) once
/// it has read it whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answer at once (the default).
    Normal,
    /// Never answer, until the behaviour changes.
    Hang,
    /// Close the connection without answering.
    Reset,
    /// Wait for [`Upstream::release_all`], then answer.
    Hold,
}

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query, as received.
    pub target: String,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    /// In order; names in lower case (hyper's).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The address the request came from (the proxy's side).
    pub peer: SocketAddr,
}

impl Recorded {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers_named(name).into_iter().next()
    }

    /// Every header called `name` (any case), in order.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        crate::http::values(&self.headers, name)
    }

    /// One line for messages: `GET /x?y=1 HTTP/1.1 (12 bytes of body)`.
    pub fn summary(&self) -> String {
        format!(
            "{} {} {} ({} bytes of body)",
            self.method,
            self.target,
            self.version,
            self.body.len()
        )
    }
}

/// Opens the second part of a [`Upstream::respond_in_two_parts`] response.
/// Dropping it unopened ends the body without the second part.
#[derive(Debug)]
pub struct Gate(watch::Sender<GateState>);

/// Where a [`Gate`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GateState {
    Shut,
    Open,
    Fail,
}

impl Gate {
    /// Lets the second part go.
    pub fn open(&self) {
        let _ = self.0.send(GateState::Open);
    }

    /// Breaks the response off instead: the upstream closes the connection
    /// mid-body, without the second part and without the chunked body's
    /// last (empty) chunk, as an upstream that crashes mid-response does.
    pub fn fail(&self) {
        let _ = self.0.send(GateState::Fail);
    }
}

/// A fixed answer: status, headers, body.
type Fixed = (u16, Vec<(String, String)>, Vec<u8>);

/// The next body in two parts, and the gate between them.
type TwoParts = (Vec<u8>, Vec<u8>, watch::Receiver<GateState>);

struct State {
    requests: Vec<Recorded>,
    probes: usize,
    healthy: bool,
    behaviour: Behaviour,
    /// Bumped by `release_all`; a held request waits for it to move.
    releases: u64,
    in_flight: usize,
    /// The most bytes of one request body seen so far (complete or not).
    body_bytes_max: usize,
    response: Option<Fixed>,
    two_parts: Option<TwoParts>,
    /// Connections being served, to cut them on `stop`.
    connections: Vec<JoinHandle<()>>,
}

struct Shared {
    name: String,
    state: Mutex<State>,
    /// Wakes the test thread.
    changed: Condvar,
    /// Wakes the server's tasks.
    tick: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the upstream's state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `f` to the state and wakes every waiter.
    fn update<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let out = f(&mut self.lock());
        self.changed.notify_all();
        self.tick.send_modify(|t| *t += 1);
        out
    }

    /// Waits (in a server task) until `ready` holds.
    async fn until(&self, ready: impl Fn(&State) -> bool) {
        let mut tick = self.tick.subscribe();
        loop {
            if ready(&self.lock()) {
                return;
            }
            if tick.changed().await.is_err() {
                return;
            }
        }
    }
}

/// A test's upstream server; see the module docs. Stops when dropped.
pub struct Upstream {
    shared: Arc<Shared>,
    addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
    acceptor: Mutex<Option<JoinHandle<()>>>,
    /// The server in front (the proxy), watched while the test waits here.
    watched: Mutex<Option<(ServerView, SocketAddr)>>,
}

impl Upstream {
    /// Starts an upstream called `name` on `127.0.0.1:<free port>`.
    #[track_caller]
    pub fn start(name: &str) -> Upstream {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("upstream-{name}"))
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("[test] could not start upstream {name}'s runtime: {e}"));
        let shared = Arc::new(Shared {
            name: name.to_string(),
            state: Mutex::new(State {
                requests: Vec::new(),
                probes: 0,
                healthy: true,
                behaviour: Behaviour::Normal,
                releases: 0,
                in_flight: 0,
                body_bytes_max: 0,
                response: None,
                two_parts: None,
                connections: Vec::new(),
            }),
            changed: Condvar::new(),
            tick: watch::channel(0).0,
        });
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .unwrap_or_else(|e| panic!("[test] could not start upstream {name}: {e}"));
        let addr = listener
            .local_addr()
            .expect("a bound socket has an address");
        let up = Upstream {
            shared,
            addr,
            runtime: Some(runtime),
            acceptor: Mutex::new(None),
            watched: Mutex::new(None),
        };
        up.serve(listener);
        up
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its name, sent back in `x-upstream` and as the default body.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Answers later requests with `status`, `headers` (plus
    /// `x-upstream`) and `body` instead of the default.
    pub fn set_response(&self, status: u16, headers: &[(&str, &str)], body: Vec<u8>) {
        let headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.shared
            .update(|s| s.response = Some((status, headers, body)));
    }

    /// What later requests get; see [`Behaviour`].
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        self.shared.update(|s| s.behaviour = behaviour);
    }

    /// Whether `GET /health` answers 200 (true, the default) or 503.
    pub fn set_healthy(&self, healthy: bool) {
        self.shared.update(|s| s.healthy = healthy);
    }

    /// Lets every request held so far ([`Behaviour::Hold`]) be answered.
    pub fn release_all(&self) {
        self.shared.update(|s| s.releases += 1);
    }

    /// The requests recorded so far, in the order they were read whole.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// Health probes received so far.
    pub fn probes(&self) -> usize {
        self.shared.lock().probes
    }

    /// Requests being handled now (read or not, answered or not).
    pub fn in_flight(&self) -> usize {
        self.shared.lock().in_flight
    }

    /// Watches `server` (the proxy or balancer in front of this upstream)
    /// while the test waits here: a server that is parked with the client's
    /// request unread fails the wait at once instead of after
    /// [`WAIT_DEADLINE`] (see [`crate::wait`]). Call it right after
    /// spawning the server.
    pub fn watch(&self, server: &Server) {
        *self.watched.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((server.view(), server.addr()));
    }

    /// Waits until `n` requests in all have been recorded; returns them.
    #[track_caller]
    pub fn wait_for_requests(&self, n: usize) -> Vec<Recorded> {
        self.wait(
            &format!("{n} request(s) in all"),
            "is the request forwarded to this upstream at all? Read the stderr below",
            |s| s.requests.len() >= n,
        );
        self.requests()
    }

    /// Waits until at least `n` health probes in all have arrived.
    #[track_caller]
    pub fn wait_for_probes(&self, n: usize) {
        // Probes come on the server's own timer: a server asleep with none
        // set will never send one.
        self.wait_on(
            &format!("{n} health probe(s) (GET {HEALTH_PATH}) in all"),
            "do you probe every upstream every --health-interval-ms, including after it failed?",
            |_| Conn::Timer,
            |s| s.probes >= n,
        );
    }

    /// Waits until `n` requests are in flight here at once.
    #[track_caller]
    pub fn wait_for_in_flight(&self, n: usize) {
        self.wait(
            &format!("{n} request(s) in flight at once"),
            "are requests forwarded while others are still waiting for their answer (concurrency)?",
            |s| s.in_flight >= n,
        );
    }

    /// Waits until one request body has reached `n` bytes, complete or not.
    #[track_caller]
    pub fn wait_for_body_bytes(&self, n: usize) {
        self.wait(
            &format!("a request body to reach {n} bytes"),
            "do you forward the body as it arrives, or wait for all of it first?",
            |s| s.body_bytes_max >= n,
        );
    }

    /// The next response's body goes out in two parts: `first` at once,
    /// `second` when the returned gate opens.
    pub fn respond_in_two_parts(&self, first: Vec<u8>, second: Vec<u8>) -> Gate {
        let (tx, rx) = watch::channel(GateState::Shut);
        self.shared
            .update(|s| s.two_parts = Some((first, second, rx)));
        Gate(tx)
    }

    /// Closes the listening socket and every connection: connecting is
    /// refused until [`Upstream::restart`].
    pub fn stop(&self) {
        let runtime = self.runtime.as_ref().expect("running");
        let acceptor = self
            .acceptor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let connections = self.shared.update(|s| std::mem::take(&mut s.connections));
        runtime.block_on(async move {
            // Aborted tasks drop their sockets; awaiting them makes sure
            // they have, so the port is closed when this returns.
            for task in acceptor.into_iter().chain(connections) {
                task.abort();
                let _ = task.await;
            }
        });
    }

    /// Listens on the same port again after [`Upstream::stop`].
    #[track_caller]
    pub fn restart(&self) {
        let listener = bind(self.addr).unwrap_or_else(|e| {
            panic!(
                "[test] could not restart upstream {} on {}: {e}",
                self.name(),
                self.addr
            )
        });
        self.serve(listener);
    }

    fn serve(&self, listener: StdListener) {
        let runtime = self.runtime.as_ref().expect("running");
        let shared = self.shared.clone();
        let task = runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener)
                .expect("a non-blocking listener inside the runtime");
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let conn_shared = shared.clone();
                let conn = tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        handle(conn_shared.clone(), peer, req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                shared.update(|s| {
                    s.connections.retain(|c| !c.is_finished());
                    s.connections.push(conn);
                });
            }
        });
        *self.acceptor.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    }

    #[track_caller]
    fn wait(&self, what: &str, hint: &str, ready: impl Fn(&State) -> bool) {
        self.wait_on(what, hint, |addr| Conn::AnyTcp { server: addr }, ready);
    }

    /// [`Upstream::wait`], the watched server's park judged on `conn`.
    #[track_caller]
    fn wait_on(
        &self,
        what: &str,
        hint: &str,
        conn: impl Fn(SocketAddr) -> Conn,
        ready: impl Fn(&State) -> bool,
    ) {
        let until = Instant::now() + WAIT_DEADLINE;
        let watched = self
            .watched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut park = watched
            .as_ref()
            .map(|(view, addr)| ParkWatch::new(view.pid(), conn(*addr)));
        let mut state = self.shared.lock();
        while !ready(&state) {
            let left = until.saturating_duration_since(Instant::now());
            if let Some(parked) = park.as_mut().and_then(ParkWatch::look) {
                let seen = describe(&state);
                drop(state);
                let (view, addr) = watched.expect("a park watch has a server");
                let conn = conn(addr);
                view.quote(Report::new(format!(
                    "waited for upstream {} ({}), behind the server at {addr}",
                    self.name(),
                    self.addr
                )))
                .expected(format!("{what} within {WAIT_DEADLINE:?}"))
                .got(format!("{seen}; {}", parked.describe(conn)))
                .hint(parked.hint(conn))
                .fail();
            }
            if left.is_zero() {
                let seen = describe(&state);
                drop(state);
                Report::new(format!(
                    "waited for upstream {} ({})",
                    self.name(),
                    self.addr
                ))
                .expected(format!("{what} within {WAIT_DEADLINE:?}"))
                .got(seen)
                .hint(hint)
                .fail();
            }
            // In slices while a server is watched, so the watch looks at it.
            let slice = if park.is_some() {
                left.min(SAMPLE)
            } else {
                left
            };
            state = self
                .shared
                .changed
                .wait_timeout(state, slice)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // Held and hanging requests must not keep the test waiting.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A listener that can take its port back right after a stop (TIME_WAIT
/// connections on it must not block the bind).
fn bind(addr: SocketAddr) -> std::io::Result<StdListener> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

fn describe(s: &State) -> String {
    let mut out = format!(
        "{} request(s) recorded, {} health probe(s), {} in flight, largest body so far {} bytes",
        s.requests.len(),
        s.probes,
        s.in_flight,
        s.body_bytes_max
    );
    for r in s.requests.iter().rev().take(5).rev() {
        out.push_str(&format!("\n  {}", r.summary()));
    }
    out
}

type Body = BoxBody<Bytes, BrokenOff>;

/// The error a [`Gate::fail`]ed body ends with: hyper closes the
/// connection mid-body when a response body fails.
#[derive(Debug)]
struct BrokenOff;

impl std::fmt::Display for BrokenOff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("response broken off mid-body, as the test asked")
    }
}

impl std::error::Error for BrokenOff {}

/// Counts a request in flight until dropped, however the request ends.
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.update(|s| s.in_flight -= 1);
    }
}

/// Error returned to hyper to close a connection without answering.
#[derive(Debug)]
struct CloseWithoutAnswer;

impl std::fmt::Display for CloseWithoutAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("closing without an answer, as the test asked")
    }
}

impl std::error::Error for CloseWithoutAnswer {}

async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, CloseWithoutAnswer> {
    if req.method() == hyper::Method::GET && req.uri().path() == HEALTH_PATH {
        let healthy = shared.update(|s| {
            s.probes += 1;
            s.healthy
        });
        let (status, body) = if healthy {
            (StatusCode::OK, "ok\n")
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n")
        };
        return Ok(fixed(status, &[], body.as_bytes().to_vec(), &shared.name));
    }

    shared.update(|s| s.in_flight += 1);
    let _in_flight = InFlight(shared.clone());
    let (parts, mut incoming) = req.into_parts();
    let mut body = Vec::new();
    while let Some(frame) = incoming.frame().await {
        // A sender that vanishes mid-body: record what came.
        let Ok(frame) = frame else { break };
        if let Some(data) = frame.data_ref() {
            body.extend_from_slice(data);
            let len = body.len();
            shared.update(|s| s.body_bytes_max = s.body_bytes_max.max(len));
        }
    }
    let recorded = Recorded {
        method: parts.method.to_string(),
        target: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_else(|| parts.uri.to_string()),
        version: format!("{:?}", parts.version),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
        peer,
    };
    let (behaviour, releases) = shared.update(|s| {
        s.requests.push(recorded);
        (s.behaviour, s.releases)
    });

    match behaviour {
        Behaviour::Normal => {}
        Behaviour::Reset => return Err(CloseWithoutAnswer),
        Behaviour::Hang => shared.until(|s| s.behaviour != Behaviour::Hang).await,
        Behaviour::Hold => shared.until(|s| s.releases != releases).await,
    }

    let (response, two_parts) = {
        let mut s = shared.lock();
        (s.response.clone(), s.two_parts.take())
    };
    let (status, headers, body) =
        response.unwrap_or_else(|| (200, Vec::new(), shared.name.clone().into_bytes()));
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let Some((first, second, mut gate)) = two_parts else {
        return Ok(fixed(status, &headers, body, &shared.name));
    };

    // A streamed body: the first part now, the second once the gate opens.
    let (tx, rx) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, BrokenOff>>(2);
    tokio::spawn(async move {
        let mut tx = tx;
        use futures::SinkExt;
        if tx.send(Ok(Frame::data(Bytes::from(first)))).await.is_err() {
            return;
        }
        let state = gate
            .wait_for(|state| *state != GateState::Shut)
            .await
            .map(|state| *state);
        match state {
            Ok(GateState::Open) => {
                let _ = tx.send(Ok(Frame::data(Bytes::from(second)))).await;
            }
            Ok(_) => {
                let _ = tx.send(Err(BrokenOff)).await;
            }
            // The gate was dropped unopened: the body ends here, cleanly.
            Err(_) => {}
        }
    });
    let mut response = Response::new(BoxBody::new(StreamBody::new(rx)));
    *response.status_mut() = status;
    add_headers(&mut response, &headers, &shared.name);
    Ok(response)
}

fn fixed(
    status: StatusCode,
    headers: &[(String, String)],
    body: Vec<u8>,
    name: &str,
) -> Response<Body> {
    let full = Full::new(Bytes::from(body)).map_err(|never: Infallible| match never {});
    let mut response = Response::new(BoxBody::new(full));
    *response.status_mut() = status;
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain"),
        );
    }
    add_headers(&mut response, headers, name);
    response
}

fn add_headers(response: &mut Response<Body>, headers: &[(String, String)], name: &str) {
    let map = response.headers_mut();
    for (k, v) in headers {
        match (
            hyper::header::HeaderName::from_bytes(k.as_bytes()),
            hyper::header::HeaderValue::from_str(v),
        ) {
            (Ok(k), Ok(v)) => {
                map.append(k, v);
            }
            _ => panic!("[test] bad upstream header {k}: {}", show(v)),
        }
    }
    if let Ok(v) = hyper::header::HeaderValue::from_str(name) {
        map.insert("x-upstream", v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Client;
    use crate::http;

    #[test]
    fn records_and_answers() {
        let up = Upstream::start("a");
        let mut c = Client::connect(up.addr());
        c.send(&http::request(
            "POST",
            "/x?y=1",
            &[("X-Test", "1")],
            b"body",
        ));
        let r = http::read_response(&mut c);
        assert_eq!((r.status, r.text().as_str()), (200, "a"));
        assert_eq!(r.header("x-upstream"), Some("a"));
        let seen = up.wait_for_requests(1);
        assert_eq!(seen[0].target, "/x?y=1");
        assert_eq!(seen[0].method, "POST");
        assert_eq!(seen[0].header("x-test"), Some("1"));
        assert_eq!(seen[0].body, b"body");
        assert_eq!(up.in_flight(), 0);
    }

    #[test]
    fn health_probes_are_counted_not_recorded() {
        let up = Upstream::start("h");
        up.set_healthy(false);
        let mut c = Client::connect(up.addr());
        c.send(&http::request("GET", HEALTH_PATH, &[], b""));
        assert_eq!(http::read_response(&mut c).status, 503);
        up.wait_for_probes(1);
        assert!(up.requests().is_empty());
    }

    #[test]
    fn holds_until_released_and_resets_on_demand() {
        let up = Upstream::start("b");
        up.set_behaviour(Behaviour::Hold);
        let mut c1 = Client::connect(up.addr());
        let mut c2 = Client::connect(up.addr());
        c1.send(&http::request("GET", "/1", &[], b""));
        c2.send(&http::request("GET", "/2", &[], b""));
        up.wait_for_in_flight(2);
        c1.expect_silence(Duration::from_millis(50));
        up.release_all();
        assert_eq!(http::read_response(&mut c1).status, 200);
        assert_eq!(http::read_response(&mut c2).status, 200);

        up.set_behaviour(Behaviour::Reset);
        let mut c3 = Client::connect(up.addr());
        c3.send(&http::request("GET", "/3", &[], b""));
        c3.expect_closed();
        assert_eq!(up.wait_for_requests(3).len(), 3);
    }

    #[test]
    fn streams_in_two_parts_and_sees_bodies_arrive() {
        let up = Upstream::start("s");
        let gate = up.respond_in_two_parts(b"first".to_vec(), b"second".to_vec());
        let mut c = Client::connect(up.addr());
        c.send(b"POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n12345");
        up.wait_for_body_bytes(5);
        c.send(b"67890");
        // Chunked: the head, then the first chunk, before the gate opens.
        let head = c.read_framed("a head", "", |b, _| {
            b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
        });
        assert!(String::from_utf8_lossy(&head).contains("chunked"));
        c.expect_bytes(b"5\r\nfirst\r\n");
        gate.open();
        c.expect_bytes(b"6\r\nsecond\r\n0\r\n\r\n");
        assert_eq!(up.wait_for_requests(1)[0].body, b"1234567890");
    }

    #[test]
    fn a_failed_gate_breaks_the_response_off_mid_body() {
        let up = Upstream::start("f");
        let gate = up.respond_in_two_parts(b"first".to_vec(), b"second".to_vec());
        let mut c = Client::connect(up.addr());
        c.send(&http::request("GET", "/", &[], b""));
        let head = c.read_framed("a head", "", |b, _| {
            b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
        });
        assert!(String::from_utf8_lossy(&head).contains("chunked"));
        c.expect_bytes(b"5\r\nfirst\r\n");
        gate.fail();
        let rest = c.read_until_closed();
        assert!(rest.is_empty(), "{rest:?}");
        // The upstream goes on serving.
        let mut c = Client::connect(up.addr());
        c.send(&http::request("GET", "/", &[], b""));
        assert_eq!(http::read_response(&mut c).status, 200);
    }

    #[test]
    fn stops_and_restarts_on_the_same_port() {
        let up = Upstream::start("r");
        let mut c = Client::connect(up.addr());
        c.send(&http::request("GET", "/", &[], b""));
        assert_eq!(http::read_response(&mut c).status, 200);
        up.stop();
        c.expect_closed();
        assert!(std::net::TcpStream::connect(up.addr()).is_err());
        up.restart();
        let mut c = Client::connect(up.addr());
        c.send(&http::request("GET", "/", &[], b""));
        assert_eq!(http::read_response(&mut c).status, 200);
    }
}
