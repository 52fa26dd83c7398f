//! The load itself: the schedule every connection draws from, one
//! connection's loop, and the statistics a worker thread keeps.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::net::TcpStream;

use crate::http::{Conn, Failure};

/// After a failed connect in the closed model, wait this long before the
/// next attempt, so a refused port costs a few hundred attempts a second
/// instead of a core. (The open model needs no pause: its schedule paces
/// the attempts.)
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);

/// The largest latency the histogram holds exactly; longer ones are
/// recorded as this (a minute is far beyond any sane `--timeout`).
const MAX_LATENCY_US: u64 = 60_000_000;

/// What every connection of the run sends, and how it decides when.
pub struct Plan {
    pub addr: SocketAddr,
    pub request: Vec<u8>,
    pub head_request: bool,
    pub timeout: Duration,
    pub schedule: Schedule,
}

/// Which request goes next, and when: shared by every connection on
/// every thread, so the limits (`-n`, `-d`, `-R`) hold for the run as a
/// whole, not per connection.
///
/// Requests are numbered 0, 1, 2, ... by one atomic counter (a "ticket").
/// - Closed model: a connection takes a ticket when its previous response
///   has arrived and sends at once; its latency counts from then.
/// - Open model at `rate` requests per second: ticket k is *due* at
///   `start + k / rate`, whatever the server does. A free connection takes
///   the next ticket, waits until it is due, and sends; when every
///   connection is busy (the server is slow or stalled), due tickets wait,
///   and their latency still counts from when they were due. That is the
///   correction for coordinated omission: a client that measured from the
///   moment it actually sent would leave out exactly the time the server
///   made its users wait.
pub struct Schedule {
    next: AtomicU64,
    start: OnceLock<Instant>,
    pub duration: Option<Duration>,
    pub max_requests: Option<u64>,
    /// `Some` for the open model.
    pub rate: Option<f64>,
}

impl Schedule {
    pub fn new(duration: Option<Duration>, max_requests: Option<u64>, rate: Option<f64>) -> Self {
        Schedule {
            next: AtomicU64::new(0),
            start: OnceLock::new(),
            duration,
            max_requests,
            rate,
        }
    }

    /// Opens the measurement window; called once, when every connection is up.
    pub fn start(&self, at: Instant) {
        let _ = self.start.set(at);
    }

    fn started(&self) -> Instant {
        *self.start.get().expect("the run has started")
    }

    /// The time the next request is due (its latency counts from it), or
    /// `None` when the run is over for this connection.
    fn next(&self, now: Instant) -> Option<Instant> {
        let start = self.started();
        match self.rate {
            None => {
                if self.duration.is_some_and(|d| now >= start + d) {
                    return None;
                }
                if let Some(max) = self.max_requests
                    && self.next.fetch_add(1, Ordering::Relaxed) >= max
                {
                    return None;
                }
                Some(now)
            }
            Some(rate) => {
                let k = self.next.fetch_add(1, Ordering::Relaxed);
                if self.max_requests.is_some_and(|max| k >= max) {
                    return None;
                }
                let due = start + Duration::from_secs_f64(k as f64 / rate);
                if self.duration.is_some_and(|d| due >= start + d) {
                    return None;
                }
                Some(due)
            }
        }
    }
}

/// Errors by kind. None of them stops the run: a load test exists to
/// see how a server fails, so failures are data.
#[derive(Debug, Default, Clone, Copy)]
pub struct Errors {
    pub connect: u64,
    pub reset: u64,
    pub timeout: u64,
    pub protocol: u64,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.connect + self.reset + self.timeout + self.protocol
    }
}

/// What one worker thread measured. Its connections share it through an
/// `Rc<RefCell<..>>` (one thread, no locks); the threads' stats are
/// merged once at the end.
pub struct Stats {
    /// Latency of every response, in microseconds.
    pub latency: Histogram<u64>,
    pub status: BTreeMap<u16, u64>,
    pub errors: Errors,
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            // 3 significant digits: 0.1% resolution at any magnitude, a
            // fixed ~100 KiB whatever the number of samples.
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("valid histogram bounds"),
            status: BTreeMap::new(),
            errors: Errors::default(),
        }
    }

    pub fn requests(&self) -> u64 {
        self.status.values().sum()
    }

    pub fn merge(&mut self, other: &Stats) {
        self.latency
            .add(&other.latency)
            .expect("histograms of equal bounds add");
        for (code, n) in &other.status {
            *self.status.entry(*code).or_default() += n;
        }
        let (a, b) = (&mut self.errors, other.errors);
        a.connect += b.connect;
        a.reset += b.reset;
        a.timeout += b.timeout;
        a.protocol += b.protocol;
    }

    fn record(&mut self, status: u16, latency: Duration) {
        // Every response is a request served, whatever its status: a 500
        // is the server's answer, not the load generator's error.
        *self.status.entry(status).or_default() += 1;
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency.saturating_record(us.max(1));
    }
}

/// Opens a connection, within `timeout`.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Option<Conn> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => Some(Conn::new(stream)),
        _ => None,
    }
}

/// One connection's life: take a ticket, send, read, record; reconnect
/// after a close or an error; stop when the schedule says so. `conn` is
/// the connection opened before the run started (`None` if that failed:
/// the first ticket then retries, and counts the error if it fails again).
pub async fn run_connection(plan: &Plan, stats: Rc<RefCell<Stats>>, mut conn: Option<Conn>) {
    let open = plan.schedule.rate.is_some();
    // One timer per connection, re-armed for every wait (pacing, then the
    // response timeout): cheaper than a new timer per request.
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    while let Some(due) = plan.schedule.next(Instant::now()) {
        if open && due > Instant::now() {
            timer.as_mut().reset(due.into());
            (&mut timer).await;
        }
        let c = match &mut conn {
            Some(c) => c,
            None => match connect(plan.addr, plan.timeout).await {
                Some(c) => conn.insert(c),
                None => {
                    stats.borrow_mut().errors.connect += 1;
                    if !open {
                        timer
                            .as_mut()
                            .reset((Instant::now() + CONNECT_BACKOFF).into());
                        (&mut timer).await;
                    }
                    continue;
                }
            },
        };
        // The timeout counts from the send: it bounds the server's answer,
        // not the time a request waited for a free connection.
        timer.as_mut().reset((Instant::now() + plan.timeout).into());
        let outcome = tokio::select! {
            biased;
            r = c.exchange(&plan.request, plan.head_request) => Some(r),
            _ = &mut timer => None,
        };
        // Latency from when the request was due. In the closed model
        // that is when the connection took the ticket (so a reconnect's
        // handshake counts, as a user would feel it); in the open model it
        // is the intended send time, however late the send really was.
        let latency = Instant::now().saturating_duration_since(due);
        let mut s = stats.borrow_mut();
        match outcome {
            Some(Ok(resp)) => {
                s.record(resp.status, latency);
                if resp.close {
                    conn = None;
                }
            }
            // After any failure the connection's state is unknown (half a
            // response may be in flight): drop it, the next ticket
            // reconnects.
            Some(Err(Failure::Reset)) => {
                s.errors.reset += 1;
                conn = None;
            }
            Some(Err(Failure::Protocol)) => {
                s.errors.protocol += 1;
                conn = None;
            }
            None => {
                s.errors.timeout += 1;
                conn = None;
            }
        }
    }
}
