//! A circuit breaker, and retry with exponential backoff, full jitter and
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

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
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

#[derive(Debug)]
struct Inner {
    state: State,
    /// Consecutive failures while closed.
    failures: u32,
    /// When the breaker last opened (meaningful while open).
    opened_at: Instant,
    /// Probes admitted and not yet finished (meaningful while half-open).
    probes: u32,
    /// Bumped on every change of state.
    generation: u64,
}

/// A circuit breaker around an async service.
pub struct CircuitBreaker {
    config: Config,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("config", &self.config)
            .field("inner", &*self.lock())
            .finish()
    }
}

impl CircuitBreaker {
    /// A closed breaker on the system clock.
    pub fn new(config: Config) -> Self {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// A closed breaker that reads the time from `clock`.
    pub fn with_clock(config: Config, clock: Arc<dyn Clock>) -> Self {
        let now = clock.now();
        CircuitBreaker {
            config,
            clock,
            inner: Mutex::new(Inner {
                state: State::Closed,
                failures: 0,
                opened_at: now,
                probes: 0,
                generation: 0,
            }),
        }
    }

    /// The state now (an open breaker whose cooldown is over is half-open).
    pub fn state(&self) -> State {
        let mut inner = self.lock();
        self.refresh(&mut inner);
        inner.state
    }

    /// Calls `f` unless the breaker refuses, and records its result.
    ///
    /// Closed: `f` is called; a failure counts toward the threshold, a
    /// success resets the count. Open: `Err(BreakerError::Open)` at once,
    /// `f` is not called. Half-open: `f` is called if fewer than
    /// `half_open_probes` probes are in flight, else `Err(Open)`; a probe's
    /// success closes the breaker, its failure opens it again with a fresh
    /// cooldown. A result counts only if the state has not changed since
    /// the call was admitted. A probe dropped before it finishes gives its
    /// slot back.
    pub async fn call<T, E, F, Fut>(&self, f: F) -> Result<T, BreakerError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let admission = self.admit().ok_or(BreakerError::Open)?;
        // No lock held here: the service may take as long as it likes.
        let result = f().await;
        admission.finish(result.is_ok());
        result.map_err(BreakerError::Inner)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves consistent state
        // (every update is a few assignments), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Open becomes half-open once the cooldown is over.
    fn refresh(&self, inner: &mut Inner) {
        if inner.state == State::Open && self.clock.now() >= inner.opened_at + self.config.cooldown
        {
            inner.state = State::HalfOpen;
            inner.probes = 0;
            inner.generation += 1;
        }
    }

    fn trip(&self, inner: &mut Inner) {
        inner.state = State::Open;
        // The cooldown starts when the failure is recorded, not when the
        // call started: a call that timed out after 2 s has told us about
        // the service's state now.
        inner.opened_at = self.clock.now();
        inner.failures = 0;
        inner.generation += 1;
    }

    fn admit(&self) -> Option<Admission<'_>> {
        let mut inner = self.lock();
        self.refresh(&mut inner);
        let probe = match inner.state {
            State::Closed => false,
            State::Open => return None,
            State::HalfOpen => {
                if inner.probes >= self.config.half_open_probes.max(1) {
                    return None;
                }
                inner.probes += 1;
                true
            }
        };
        Some(Admission {
            breaker: self,
            generation: inner.generation,
            probe,
            done: false,
        })
    }
}

/// One admitted call. Records its result with [`Admission::finish`]; if
/// dropped unfinished (the caller's future was cancelled), a probe gives
/// its slot back and nothing else is recorded.
struct Admission<'a> {
    breaker: &'a CircuitBreaker,
    generation: u64,
    probe: bool,
    done: bool,
}

impl Admission<'_> {
    fn finish(mut self, ok: bool) {
        self.done = true;
        let breaker = self.breaker;
        let mut inner = breaker.lock();
        if inner.generation != self.generation {
            // The state changed while this call ran: its result is about a
            // world that is gone.
            return;
        }
        match inner.state {
            State::Closed if ok => inner.failures = 0,
            State::Closed => {
                inner.failures += 1;
                if inner.failures >= breaker.config.failure_threshold.max(1) {
                    breaker.trip(&mut inner);
                }
            }
            State::HalfOpen if ok => {
                inner.state = State::Closed;
                inner.failures = 0;
                inner.generation += 1;
            }
            State::HalfOpen => breaker.trip(&mut inner),
            // Open is never the state of a live generation's call: a call
            // is not admitted while open.
            State::Open => {}
        }
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if self.done || !self.probe {
            return;
        }
        let mut inner = self.breaker.lock();
        if inner.generation == self.generation && inner.state == State::HalfOpen {
            inner.probes -= 1;
        }
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
        // 2^n fits a u32 up to n = 31; beyond that (or if the product
        // saturates) the cap wins anyway.
        match 1u32.checked_shl(n) {
            Some(factor) => self.base.saturating_mul(factor).min(self.cap),
            None => self.cap,
        }
    }
}

/// A token bucket of retries, shared by many [`Retry`]s.
///
/// Starts with `capacity` tokens. Each retry spends one; every
/// `calls_per_token`-th run (counted from the budget's creation) earns one
/// back, up to `capacity`. With `calls_per_token = 10`, retries are at most
/// about 10% of calls once the initial tokens are spent. `calls_per_token
/// = 0` never earns tokens back.
#[derive(Debug)]
pub struct RetryBudget {
    capacity: u32,
    calls_per_token: u32,
    state: Mutex<BudgetState>,
}

#[derive(Debug)]
struct BudgetState {
    tokens: u32,
    runs: u64,
}

impl RetryBudget {
    pub fn new(capacity: u32, calls_per_token: u32) -> Self {
        RetryBudget {
            capacity,
            calls_per_token,
            state: Mutex::new(BudgetState {
                tokens: capacity,
                runs: 0,
            }),
        }
    }

    /// Tokens left.
    pub fn tokens(&self) -> u32 {
        self.lock().tokens
    }

    fn lock(&self) -> MutexGuard<'_, BudgetState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record_run(&self) {
        let mut s = self.lock();
        s.runs += 1;
        if self.calls_per_token > 0 && s.runs.is_multiple_of(u64::from(self.calls_per_token)) {
            s.tokens = (s.tokens + 1).min(self.capacity);
        }
    }

    fn try_spend(&self) -> bool {
        let mut s = self.lock();
        if s.tokens == 0 {
            return false;
        }
        s.tokens -= 1;
        true
    }
}

type Jitter = Box<dyn FnMut(Duration) -> Duration + Send>;

/// Retries an async operation with exponential backoff and jitter.
pub struct Retry {
    policy: RetryPolicy,
    jitter: Jitter,
    budget: Option<Arc<RetryBudget>>,
}

impl std::fmt::Debug for Retry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retry")
            .field("policy", &self.policy)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl Retry {
    /// Full jitter from a `StdRng` seeded with `seed`: the delay before
    /// retry `n` is uniform in `0..=ceiling(n)` (nanoseconds). The same
    /// seed gives the same delays.
    pub fn new(policy: RetryPolicy, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        Self::with_jitter(policy, move |ceiling| {
            let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
            Duration::from_nanos(rng.random_range(0..=nanos))
        })
    }

    /// The delay before retry `n` is `jitter(policy.ceiling(n))`.
    pub fn with_jitter(
        policy: RetryPolicy,
        jitter: impl FnMut(Duration) -> Duration + Send + 'static,
    ) -> Self {
        Retry {
            policy,
            jitter: Box::new(jitter),
            budget: None,
        }
    }

    /// Each retry must spend a token from `budget`; each run counts as a
    /// call toward earning tokens back.
    pub fn with_budget(mut self, budget: Arc<RetryBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Draws the delay before retry `n` (0-based): `jitter(ceiling(n))`.
    pub fn delay(&mut self, n: u32) -> Duration {
        (self.jitter)(self.policy.ceiling(n))
    }

    /// Calls `f` until it succeeds, returns an error `retryable` rejects,
    /// has been retried `max_retries` times, or the budget is empty; sleeps
    /// `delay(n)` (tokio's timer) before retry `n`. Returns the last result.
    pub async fn run<T, E, F, Fut>(
        &mut self,
        retryable: impl Fn(&E) -> bool,
        mut f: F,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        if let Some(budget) = &self.budget {
            budget.record_run();
        }
        let mut n = 0;
        loop {
            let error = match f().await {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            // Order matters: a non-retryable error must not spend a token.
            if n >= self.policy.max_retries || !retryable(&error) {
                return Err(error);
            }
            if let Some(budget) = &self.budget
                && !budget.try_spend()
            {
                return Err(error);
            }
            tokio::time::sleep(self.delay(n)).await;
            n += 1;
        }
    }
}
