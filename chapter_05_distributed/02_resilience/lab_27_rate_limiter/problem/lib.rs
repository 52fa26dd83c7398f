//! Lab 27: a rate limiter.
//!
//! Write three limiters and the middleware that puts them in front of a
//! service:
//!
//! - [`TokenBucket`]: a bucket per key, `burst` tokens at most, one more
//!   every `interval`; a request takes one token or is denied.
//! - [`SlidingWindow`]: at most `limit` requests per key in any `window`,
//!   estimated from the counts of the current and the previous fixed window.
//! - [`RedisLimiter`]: the token bucket, kept in Redis so every instance of
//!   a service shares it, updated atomically by one Lua script.
//! - [`RateLimitLayer`]: a tower layer that asks a [`Limiter`] about each
//!   request and answers `429 Too Many Requests` with `Retry-After`.
//!
//! The in-process limiters read time from a [`Clock`], so the tests can
//! stop it, move it on and move it back. The names, signatures and doc
//! comments below are the contract; the private fields are yours to change.
//! Read the README for the rules in full.
//!
//! ```ignore
//! let limiter = Arc::new(TokenBucket::new(Quota::new(10, Duration::from_secs(1)), Arc::new(SystemClock)));
//! let app = Router::new()
//!     .route("/", get(handler))
//!     .layer(RateLimitLayer::new(limiter, |req: &Request<Body>| api_key(req)));
//! ```

#![allow(unused)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use redis::aio::ConnectionManager;
use tower::{Layer, Service};

/// A source of time for the in-process limiters.
pub trait Clock: Send + Sync + 'static {
    /// The time since a fixed origin of this clock's choosing. It usually
    /// grows; the limiters must behave when it does not (see
    /// [`TokenBucket`]).
    fn now(&self) -> Duration;
}

/// The machine's monotonic clock: the time since this clock was first read
/// in this process.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        todo!("the time since a fixed Instant (std::sync::OnceLock)")
    }
}

/// How much a key may send: `burst` requests at once, then one more every
/// `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub burst: u32,
    pub interval: Duration,
}

impl Quota {
    /// Panics if `burst` is 0 or `interval` is zero.
    pub fn new(burst: u32, interval: Duration) -> Quota {
        todo!()
    }
}

/// The answer of a limiter for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The request may go on; it has been counted.
    Allowed,
    /// The request must be refused; it was not counted. `retry_after` is
    /// how long until the same key would be allowed, if nothing else
    /// happens meanwhile. Never zero.
    Denied { retry_after: Duration },
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed)
    }
}

/// What [`RateLimitLayer`] asks: allow or deny one request of `key`.
pub trait Limiter: Send + Sync + 'static {
    /// Why a check could not be made (Redis unreachable, say).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Decides, and counts the request when it is allowed.
    fn check(&self, key: &str) -> impl Future<Output = Result<Decision, Self::Error>> + Send;
}

/// A token bucket per key.
///
/// - A key's bucket starts full (`burst` tokens) the first time the key is
///   checked.
/// - It gains one token per `interval` of clock time, continuously:
///   fractions count (half an interval now and half later make a token),
///   and it never holds more than `burst`.
/// - A check takes one token if the bucket holds a whole one (`Allowed`);
///   otherwise it takes nothing and is `Denied`, with `retry_after` the
///   exact time until the bucket holds one whole token.
/// - A clock that goes back is time standing still: no panic, no tokens
///   for the step back, and when it comes forward again only the time past
///   the latest instant seen counts.
/// - Thread-safe: checks from many threads at once on one key are allowed
///   exactly as often as the same checks one after another.
pub struct TokenBucket {
    quota: Quota,
    clock: Arc<dyn Clock>,
    // Your state per key.
}

impl TokenBucket {
    pub fn new(quota: Quota, clock: Arc<dyn Clock>) -> TokenBucket {
        todo!()
    }

    /// Takes one token from `key`'s bucket if it holds a whole one; see
    /// the rules above.
    pub fn check(&self, key: &str) -> Decision {
        todo!()
    }
}

impl Limiter for TokenBucket {
    type Error = Infallible;

    fn check(&self, key: &str) -> impl Future<Output = Result<Decision, Infallible>> + Send {
        std::future::ready(Ok(TokenBucket::check(self, key)))
    }
}

/// A sliding-window counter per key.
///
/// Clock time is cut into fixed windows `[k·window, (k+1)·window)`. For
/// each key, count the requests allowed in the current window (`current`)
/// and in the one before it (`previous`; 0 if that window is older). At a
/// time `e` into the current window, the sliding window of the last
/// `window` is estimated as
///
/// ```text
/// previous × (window − e) / window + current
/// ```
///
/// A request is allowed when that estimate plus one is at most `limit`,
/// and then counts in `current`. Denied: `retry_after` is the exact time
/// until that would hold (within this window, or in the next one, where
/// `current` becomes `previous`). A clock that goes back is time standing
/// still, as in [`TokenBucket`].
pub struct SlidingWindow {
    limit: u32,
    window: Duration,
    clock: Arc<dyn Clock>,
    // Your state per key.
}

impl SlidingWindow {
    /// Panics if `limit` is 0 or `window` is zero.
    pub fn new(limit: u32, window: Duration, clock: Arc<dyn Clock>) -> SlidingWindow {
        todo!()
    }

    /// Counts the request if it fits; see the rules above.
    pub fn check(&self, key: &str) -> Decision {
        todo!()
    }
}

impl Limiter for SlidingWindow {
    type Error = Infallible;

    fn check(&self, key: &str) -> impl Future<Output = Result<Decision, Infallible>> + Send {
        std::future::ready(Ok(SlidingWindow::check(self, key)))
    }
}

/// A token bucket per key in Redis, shared by every `RedisLimiter` with the
/// same Redis and prefix, in any process. The same rules as
/// [`TokenBucket`], on Redis's clock (`TIME`), each check one atomic step
/// in Redis (one Lua script: read, decide and write with nothing in
/// between). Clones share the connection.
#[derive(Clone)]
pub struct RedisLimiter {
    redis: ConnectionManager,
    prefix: String,
    quota: Quota,
}

impl RedisLimiter {
    /// Connects to `redis_url`. Each key's state lives in Redis under keys
    /// that start with `{prefix}{key}`, each with a TTL of at most
    /// `burst × interval`: an idle key's state disappears.
    pub async fn connect(
        redis_url: &str,
        prefix: impl Into<String>,
        quota: Quota,
    ) -> Result<RedisLimiter, redis::RedisError> {
        todo!()
    }

    /// The rules of [`TokenBucket::check`], in one atomic step in Redis.
    pub async fn check(&self, key: &str) -> Result<Decision, redis::RedisError> {
        todo!()
    }
}

impl Limiter for RedisLimiter {
    type Error = redis::RedisError;

    fn check(&self, key: &str) -> impl Future<Output = Result<Decision, redis::RedisError>> + Send {
        RedisLimiter::check(self, key)
    }
}

/// A tower layer that asks `limiter` about every request, under the key
/// that `key` extracts from it (say, an API key header).
pub struct RateLimitLayer<L, F> {
    limiter: Arc<L>,
    key: F,
}

impl<L, F> RateLimitLayer<L, F> {
    pub fn new(limiter: Arc<L>, key: F) -> RateLimitLayer<L, F> {
        RateLimitLayer { limiter, key }
    }
}

impl<L, F: Clone> Clone for RateLimitLayer<L, F> {
    fn clone(&self) -> Self {
        RateLimitLayer {
            limiter: Arc::clone(&self.limiter),
            key: self.key.clone(),
        }
    }
}

impl<S, L, F: Clone> Layer<S> for RateLimitLayer<L, F> {
    type Service = RateLimit<S, L, F>;

    fn layer(&self, inner: S) -> RateLimit<S, L, F> {
        RateLimit {
            inner,
            limiter: Arc::clone(&self.limiter),
            key: self.key.clone(),
        }
    }
}

/// The service [`RateLimitLayer`] wraps around `inner`:
/// - allowed: the request goes to `inner`, untouched, and so does its
///   response;
/// - denied: `inner` never sees it; the answer is `429 Too Many Requests`
///   with one `Retry-After: <seconds>` header, `retry_after` in whole
///   seconds rounded up, and at least 1;
/// - the limiter failed (`Err`): the request goes to `inner` (fail open).
pub struct RateLimit<S, L, F> {
    inner: S,
    limiter: Arc<L>,
    key: F,
}

impl<S: Clone, L, F: Clone> Clone for RateLimit<S, L, F> {
    fn clone(&self) -> Self {
        RateLimit {
            inner: self.inner.clone(),
            limiter: Arc::clone(&self.limiter),
            key: self.key.clone(),
        }
    }
}

impl<S, L, F, B> Service<Request<B>> for RateLimit<S, L, F>
where
    S: Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send,
    L: Limiter,
    F: Fn(&Request<B>) -> String,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        todo!()
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        todo!()
    }
}
