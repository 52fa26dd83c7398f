//! Lab 28: a circuit breaker, and retry with exponential backoff, full jitter and
//! a retry budget.
//!
//! # Design
//!
//! [`CircuitBreaker`] is a small state machine under one `std::sync::Mutex`:
//!
//! ```text
//!   Closed --(failure_threshold consecutive failures)--> Open
//!   Open   --(cooldown elapsed, seen lazily)-----------> HalfOpen
//!   HalfOpen --(a probe succeeds)----------------------> Closed
//!   HalfOpen --(a probe fails: cooldown starts again)--> Open
//! ```
//!
//! The lock is held only to decide (admit or refuse a call) and to record
//! a result, never across the `.await` on the inner service: a slow
//! service must not block every other caller's fast failure.
//!
//! There is no timer task: `Open` becomes `HalfOpen` when somebody looks
//! (a call or [`CircuitBreaker::state`]) and the [`Clock`] says the cooldown
//! is over. The clock is injected so a test can move time by hand.
//!
//! Every change of state bumps a generation counter. A call remembers the
//! generation it was admitted in, and its result counts only if the
//! generation is still the same: a slow call started while closed must not
//! close a breaker that has since opened, and a late failure must not
//! reopen a breaker that a probe has already closed.
//!
//! In half-open, at most `half_open_probes` calls are in flight. An
//! admitted probe holds a slot through a guard ([`Admission`]) whose `Drop`
//! gives the slot back: a probe whose future is dropped (a timeout around
//! `call`, a cancelled request) must not hold the breaker half-open and
//! refusing forever.
//!
//! [`Retry`] runs an operation again after a retryable error, sleeping
//! `random(0..=min(cap, base * 2^n))` before retry `n` ("full jitter", see
//! the AWS architecture blog's "Exponential Backoff And Jitter"): the
//! randomness spreads a crowd of clients that failed together, so they do
//! not come back together. A shared [`RetryBudget`] caps retries as a
//! fraction of calls, so that retries cannot multiply the load on a
//! service that is already failing.

#![allow(unused)]

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Where the breaker reads the time.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

/// The real clock: `Instant::now()`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// How the breaker trips and recovers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Consecutive failures (while closed) that open the breaker; 0 acts as 1.
    pub failure_threshold: u32,
    /// How long the breaker stays open before it lets probes through.
    pub cooldown: Duration,
    /// How many probes may be in flight at once while half-open; 0 acts as 1.
    pub half_open_probes: u32,
}

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

/// Why [`CircuitBreaker::call`] failed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BreakerError<E> {
    /// The breaker refused the call; the inner service was not called.
    #[error("circuit breaker is open")]
    Open,
    /// The inner service was called and failed with this error.
    #[error("{0}")]
    Inner(E),
}

/// A circuit breaker around an async service.
pub struct CircuitBreaker {
    config: Config,
    clock: Arc<dyn Clock>,
    // TODO: the state, under a std Mutex (never held across an .await).
}

impl CircuitBreaker {
    /// A closed breaker on the system clock.
    pub fn new(config: Config) -> Self {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// A closed breaker that reads the time from `clock`.
    pub fn with_clock(config: Config, clock: Arc<dyn Clock>) -> Self {
        todo!()
    }

    /// The state now (an open breaker whose cooldown is over is half-open).
    pub fn state(&self) -> State {
        todo!()
    }

    /// Calls `f` unless the breaker refuses, and records its result.
    ///
    /// Closed: `f` is called; a failure counts toward the threshold
    /// (`failure_threshold` consecutive failures open the breaker, the
    /// cooldown starting when that failure is recorded), a success resets
    /// the count. Open: `Err(BreakerError::Open)` at once, `f` is not
    /// called; once `now >= opened_at + cooldown` the breaker is half-open.
    /// Half-open: `f` is called if fewer than `half_open_probes` probes are
    /// in flight, else `Err(Open)`; a probe's success closes the breaker,
    /// its failure opens it again with a fresh cooldown. A result counts
    /// only if the state has not changed since the call was admitted. A
    /// probe dropped before it finishes gives its slot back.
    pub async fn call<T, E, F, Fut>(&self, f: F) -> Result<T, BreakerError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        todo!()
    }
}

/// How often and how long to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (so at most `max_retries + 1` calls).
    pub max_retries: u32,
    /// The ceiling of the first retry's delay.
    pub base: Duration,
    /// No delay's ceiling is above this.
    pub cap: Duration,
}

impl RetryPolicy {
    /// The ceiling of the delay before retry `n` (0-based):
    /// `min(cap, base * 2^n)`, without overflow for any `n`.
    pub fn ceiling(&self, n: u32) -> Duration {
        todo!()
    }
}

/// A token bucket of retries, shared by many [`Retry`]s.
///
/// Starts with `capacity` tokens. Each retry spends one; every
/// `calls_per_token`-th run (counted from the budget's creation) earns one
/// back, up to `capacity`. `calls_per_token = 0` never earns tokens back.
#[derive(Debug)]
pub struct RetryBudget {
    capacity: u32,
    calls_per_token: u32,
    // TODO: tokens and runs, under a Mutex.
}

impl RetryBudget {
    pub fn new(capacity: u32, calls_per_token: u32) -> Self {
        todo!()
    }

    /// Tokens left.
    pub fn tokens(&self) -> u32 {
        todo!()
    }
}

/// Retries an async operation with exponential backoff and jitter.
pub struct Retry {
    policy: RetryPolicy,
    // TODO: the jitter function (a Box<dyn FnMut(Duration) -> Duration +
    // Send>) and an optional Arc<RetryBudget>.
}

impl Retry {
    /// Full jitter from a `StdRng` seeded with `seed`: the delay before
    /// retry `n` is uniform in `0..=ceiling(n)` (nanoseconds). The same
    /// seed gives the same delays.
    pub fn new(policy: RetryPolicy, seed: u64) -> Self {
        todo!()
    }

    /// The delay before retry `n` is `jitter(policy.ceiling(n))`.
    pub fn with_jitter(
        policy: RetryPolicy,
        jitter: impl FnMut(Duration) -> Duration + Send + 'static,
    ) -> Self {
        todo!()
    }

    /// Each retry must spend a token from `budget`; each run counts as a
    /// call toward earning tokens back.
    pub fn with_budget(mut self, budget: Arc<RetryBudget>) -> Self {
        todo!()
    }

    /// Draws the delay before retry `n` (0-based): `jitter(ceiling(n))`.
    pub fn delay(&mut self, n: u32) -> Duration {
        todo!()
    }

    /// Calls `f` until it succeeds, returns an error `retryable` rejects,
    /// has been retried `max_retries` times, or the budget is empty; sleeps
    /// `delay(n)` (tokio's timer) before retry `n`. Returns the last result.
    /// A non-retryable error spends no token.
    pub async fn run<T, E, F, Fut>(
        &mut self,
        retryable: impl Fn(&E) -> bool,
        mut f: F,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        todo!()
    }
}
