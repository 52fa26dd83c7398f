//! The table of upstreams, the two balancing policies, and the in-flight
//! counter.
//!
//! Everything here is shared by every connection task and every health
//! task at once, and it is read on every request, so it is built from
//! atomics rather than a mutex: choosing an upstream never waits for
//! another request to finish choosing. Each field is a separate fact
//! (healthy or not, how many requests are in flight, whose turn it is), no
//! invariant ties two of them together, so `Ordering::Relaxed` is enough:
//! a request that reads a health flag a few microseconds stale simply
//! makes the choice the balancer would have made a moment earlier.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use clap::ValueEnum;

/// How the balancer picks an upstream for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Policy {
    /// In turn, in command-line order.
    RoundRobin,
    /// The upstream with the fewest requests in flight.
    LeastConnections,
}

/// One server behind the balancer.
#[derive(Debug)]
pub struct Upstream {
    /// `host:port`, for URIs and log lines.
    pub authority: String,
    /// Written by this upstream's health task only, read by every request.
    /// Every upstream starts healthy: the balancer serves at once instead
    /// of refusing everything until the first round of probes is back.
    healthy: AtomicBool,
    /// Requests sent to this upstream whose response has not been passed
    /// on completely yet. Only [`InFlight`] changes it, so a request that
    /// ends in any way (finished, failed, client gone) is counted out.
    in_flight: AtomicUsize,
}

impl Upstream {
    pub fn new(authority: String) -> Upstream {
        Upstream {
            authority,
            healthy: AtomicBool::new(true),
            in_flight: AtomicUsize::new(0),
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Records a probe's verdict; returns the previous one, so the caller
    /// can log changes only.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        self.healthy.swap(healthy, Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// Counts one request in flight at an upstream for as long as it lives.
///
/// An RAII guard rather than an increment here and a decrement there: a
/// request can end in many places (the response body finished, the
/// upstream failed, the client closed the connection mid-body and hyper
/// dropped the whole future), and `Drop` runs in every one of them. A
/// counter that leaks one per dropped request would slowly steer
/// least-connections away from a perfectly good upstream.
#[derive(Debug)]
pub struct InFlight(Arc<Upstream>);

impl InFlight {
    pub fn start(upstream: &Arc<Upstream>) -> InFlight {
        upstream.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(upstream.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// All the upstreams, in command-line order, and the policy over them.
#[derive(Debug)]
pub struct Upstreams {
    list: Vec<Arc<Upstream>>,
    policy: Policy,
    /// Round robin's turn counter: each choice takes the next number. An
    /// atomic `fetch_add` gives every concurrent request a distinct turn
    /// without a lock.
    cursor: AtomicUsize,
}

impl Upstreams {
    pub fn new(authorities: Vec<String>, policy: Policy) -> Upstreams {
        Upstreams {
            list: authorities
                .into_iter()
                .map(|a| Arc::new(Upstream::new(a)))
                .collect(),
            policy,
            cursor: AtomicUsize::new(0),
        }
    }

    pub fn all(&self) -> &[Arc<Upstream>] {
        &self.list
    }

    /// The upstream for the next request: a healthy one, other than
    /// `exclude` (the one that just failed, when retrying), or `None` when
    /// there is none.
    pub fn pick(&self, exclude: Option<&Arc<Upstream>>) -> Option<&Arc<Upstream>> {
        let candidates = || {
            self.list
                .iter()
                .filter(move |u| u.is_healthy() && !exclude.is_some_and(|x| Arc::ptr_eq(x, u)))
        };
        match self.policy {
            Policy::RoundRobin => {
                // Turns are counted over the healthy upstreams only, so
                // when b is out, a and c alternate evenly (a, c, a, c)
                // rather than c taking b's turns too (a, c, c, a, c, c),
                // which is what skipping to the next healthy one would do.
                let count = candidates().count();
                if count == 0 {
                    return None;
                }
                let turn = self.cursor.fetch_add(1, Ordering::Relaxed);
                // A health flag may flip between the two passes; then any
                // healthy upstream will do.
                candidates()
                    .nth(turn % count)
                    .or_else(|| candidates().next())
            }
            // `min_by_key` returns the first of equal minimums, so ties go
            // to the first in command-line order. A loaded balancer sees
            // ties mostly when idle, where the choice does not matter.
            Policy::LeastConnections => candidates().min_by_key(|u| u.in_flight()),
        }
    }
}
