//! Rate limiters: a token bucket and a sliding window per key, in process;
//! a token bucket in Redis shared by every instance of a service; and a
//! tower layer that answers `429 Too Many Requests` with `Retry-After`.
//!
//! ```ignore
//! let limiter = Arc::new(TokenBucket::new(Quota::new(10, Duration::from_secs(1)), Arc::new(SystemClock)));
//! let app = Router::new()
//!     .route("/", get(handler))
//!     .layer(RateLimitLayer::new(limiter, |req: &Request<Body>| api_key(req)));
//! ```
//!
//! # Design
//!
//! - **A token bucket counts in nanoseconds, not tokens.** A bucket holds
//!   `credit`: clock time saved up, at most `burst × interval`. Time
//!   passing adds to it; a request spends one `interval`. That is the whole
//!   algorithm, and it is exact: nothing is rounded, so half an interval
//!   now and half an interval later add up to one token (a bucket that
//!   counted whole tokens, and restarted its count at every call, would
//!   lose the halves and slow a steady client down for good). The cap is
//!   the burst: a key idle for a day gets `burst` requests at once, not a
//!   day's worth.
//! - **Time comes from a [`Clock`]**, so a test can stop it, move it, and
//!   even move it back. A clock that goes back (an NTP step on a wall
//!   clock, a test) is treated as time standing still: a bucket remembers
//!   the latest time it saw and earns credit only beyond it. Subtracting
//!   blindly would panic (`Duration` cannot be negative), or wrap and fill
//!   every bucket; forgetting the latest time would count the same
//!   seconds twice when the clock comes forward again.
//! - **One mutex over one map.** A check is a few arithmetic operations, so
//!   a single `Mutex<HashMap>` serves millions of checks a second; what
//!   matters is that the read and the write of a bucket happen under one
//!   lock, or two threads both see the last token and both take it. A
//!   service with many cores would shard the map (one mutex per shard).
//!   Buckets of idle keys are never removed here; see the README's "Going
//!   further".
//! - **A sliding window** (the counter variant Cloudflare describes) keeps
//!   two counts per key: requests in the current fixed window and in the
//!   previous one. It estimates the last `window` of traffic as the
//!   current count plus the previous count weighted by how much of the
//!   previous window still lies inside the sliding one. A fixed window
//!   alone lets a client send `2 × limit` across a boundary; the weight
//!   closes that gap for two integers of memory per key.
//! - **Redis: one script, one round trip, one clock.** Every instance of a
//!   service must see the same bucket, so it lives in Redis, and the read,
//!   the decision and the write must be one atomic step: a `GET` then a
//!   `SET` lets two instances read the same last token and both spend it.
//!   Redis runs a Lua script with nothing in between, so the script does
//!   all three. It stores the bucket as one number, the GCRA's "theoretical
//!   arrival time" (the time at which the bucket would be full again), with
//!   a TTL that ends exactly then: an idle key costs no memory, and a key
//!   that expired is a full bucket, which is what a new key is. The time is
//!   Redis's own (`TIME`), not each instance's: instances' clocks differ by
//!   milliseconds or worse, and a bucket that moves between clocks gains or
//!   loses tokens on every hop. The cost: the limiter cannot be tested with
//!   a paused clock, so its tests use an interval long enough that real
//!   time cannot refill a token while they run.
//! - **The layer fails open.** When the limiter itself fails (Redis down),
//!   the request is served, not refused: the limiter protects the service,
//!   and an outage of the limiter should not become an outage of the
//!   service. Services that would rather shed load fail closed instead
//!   (Envoy makes it an option, `failure_mode_deny`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
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
        // `Instant` is monotonic (CLOCK_MONOTONIC): it never jumps when an
        // administrator or NTP sets the wall clock.
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        ORIGIN.get_or_init(Instant::now).elapsed()
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
        assert!(burst > 0, "a quota's burst must be at least 1");
        assert!(!interval.is_zero(), "a quota's interval must not be zero");
        Quota { burst, interval }
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while the map was locked leaves it consistent (each update is
    // a few assignments), so a poisoned lock is used as it is.
    m.lock().unwrap_or_else(PoisonError::into_inner)
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
    /// `interval` in nanoseconds: the price of one request.
    price: u128,
    /// `burst × interval` in nanoseconds: the most credit a bucket holds.
    capacity: u128,
    clock: Arc<dyn Clock>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    /// Saved-up time in nanoseconds, `0..=capacity`.
    credit: u128,
    /// The latest clock time this bucket has seen.
    seen: Duration,
}

impl TokenBucket {
    /// Every key's bucket starts full (`burst` tokens) the first time the
    /// key is checked, and gains one token per `interval` of clock time,
    /// fractions kept, up to `burst`.
    pub fn new(quota: Quota, clock: Arc<dyn Clock>) -> TokenBucket {
        let price = quota.interval.as_nanos();
        TokenBucket {
            price,
            capacity: price * u128::from(quota.burst),
            clock,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from `key`'s bucket if it holds a whole one.
    /// Denied: `retry_after` is the exact time until it holds one.
    pub fn check(&self, key: &str) -> Decision {
        let now = self.clock.now();
        // The clock is read before the lock: a check that waited for the
        // lock uses a time slightly in the past, which `seen` turns into
        // "no time passed", never into a wrong refill.
        let mut buckets = lock(&self.buckets);
        let bucket = match buckets.get_mut(key) {
            Some(b) => b,
            None => buckets.entry(key.to_string()).or_insert(Bucket {
                credit: self.capacity,
                seen: now,
            }),
        };
        // A clock that went back adds nothing, and `seen` stays at the
        // latest time, so that stretch is not counted twice later.
        if now > bucket.seen {
            let earned = (now - bucket.seen).as_nanos();
            bucket.credit = (bucket.credit + earned).min(self.capacity);
            bucket.seen = now;
        }
        if bucket.credit >= self.price {
            bucket.credit -= self.price;
            Decision::Allowed
        } else {
            let missing = self.price - bucket.credit;
            Decision::Denied {
                retry_after: nanos(missing),
            }
        }
    }
}

/// A `Duration` of `n` nanoseconds (`n` fits: it is below one interval, or
/// two windows).
fn nanos(n: u128) -> Duration {
    Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX))
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
    limit: u128,
    /// The window in nanoseconds.
    window: u128,
    clock: Arc<dyn Clock>,
    counters: Mutex<HashMap<String, Counter>>,
}

struct Counter {
    /// The number of the current window: clock time / window.
    index: u128,
    previous: u128,
    current: u128,
    /// The latest clock time seen, in nanoseconds.
    seen: u128,
}

impl SlidingWindow {
    /// At most `limit` requests per key in any `window`, estimated from
    /// fixed windows `[k·window, (k+1)·window)` of clock time. Panics if
    /// `limit` is 0 or `window` is zero.
    pub fn new(limit: u32, window: Duration, clock: Arc<dyn Clock>) -> SlidingWindow {
        assert!(limit > 0, "a sliding window's limit must be at least 1");
        assert!(!window.is_zero(), "a sliding window must not be empty");
        SlidingWindow {
            limit: u128::from(limit),
            window: window.as_nanos(),
            clock,
            counters: Mutex::new(HashMap::new()),
        }
    }

    /// At time `t`, `e = t − k·window` into window `k`: allowed when
    /// `previous × (window − e) / window + current + 1 ≤ limit`, and then
    /// counted in `current`. Denied: `retry_after` is the exact time until
    /// that holds.
    pub fn check(&self, key: &str) -> Decision {
        let now = self.clock.now().as_nanos();
        let (w, limit) = (self.window, self.limit);
        let mut counters = lock(&self.counters);
        let c = counters.entry(key.to_string()).or_insert(Counter {
            index: now / w,
            previous: 0,
            current: 0,
            seen: now,
        });
        // Time that went back stands still, as in the token bucket.
        c.seen = c.seen.max(now);
        let index = c.seen / w;
        if index != c.index {
            // One window on: the current count becomes the previous one.
            // Further on: both windows are empty.
            c.previous = if index == c.index + 1 { c.current } else { 0 };
            c.current = 0;
            c.index = index;
        }
        let e = c.seen - index * w;
        // Everything multiplied by `w`, so the test is exact in integers.
        if c.previous * (w - e) + (c.current + 1) * w <= limit * w {
            c.current += 1;
            return Decision::Allowed;
        }
        let retry = if c.current < limit {
            // Within this window, once enough of the previous one has slid
            // out: `previous × (w − e') ≤ (limit − current − 1) × w`.
            let need = w - (limit - c.current - 1) * w / c.previous;
            need - e
        } else {
            // This window is full: in the next one, `current` is the
            // previous count and must slide out to `limit − 1`.
            (w - e) + (w - (limit - 1) * w / c.current)
        };
        Decision::Denied {
            retry_after: nanos(retry),
        }
    }
}

impl Limiter for SlidingWindow {
    type Error = Infallible;

    fn check(&self, key: &str) -> impl Future<Output = Result<Decision, Infallible>> + Send {
        std::future::ready(Ok(SlidingWindow::check(self, key)))
    }
}

/// The GCRA in one step. KEYS[1]: the key; ARGV[1]: burst; ARGV[2]: the
/// interval in microseconds. The key holds `tat`, the time (Redis's own, in
/// microseconds) when the bucket is full again; a missing key is a full
/// bucket. Returns 0 when allowed, else the microseconds to wait.
///
/// Lua numbers are doubles: microseconds since 1970 (about 2^51) are exact.
const GCRA: &str = r"
local burst = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local wait = tat - now - (burst - 1) * interval
if wait > 0 then return wait end
tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', tat),
  'PX', math.max(1, math.ceil((tat - now) / 1000)))
return 0
";

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
    /// The script's SHA1, from `SCRIPT LOAD`.
    sha: String,
}

impl RedisLimiter {
    /// Connects to `redis_url`. Each key's state lives in Redis under keys
    /// that start with `{prefix}{key}`, each with a TTL of at most
    /// `burst × interval`: an idle key's state disappears. (Here: one key,
    /// `{prefix}{key}`, whose TTL ends when the bucket would be full again.)
    pub async fn connect(
        redis_url: &str,
        prefix: impl Into<String>,
        quota: Quota,
    ) -> Result<RedisLimiter, redis::RedisError> {
        let client = redis::Client::open(redis_url)?;
        // A connection manager reconnects by itself after Redis restarts.
        let mut redis = ConnectionManager::new(client).await?;
        // Loaded once, the script is then called by its SHA1: each check
        // sends 40 bytes of name instead of the whole script.
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(GCRA)
            .query_async(&mut redis)
            .await?;
        Ok(RedisLimiter {
            redis,
            prefix: prefix.into(),
            quota,
            sha,
        })
    }

    /// The same rule as [`TokenBucket::check`], in one atomic step in
    /// Redis, on Redis's clock (`TIME`).
    pub async fn check(&self, key: &str) -> Result<Decision, redis::RedisError> {
        let mut conn = self.redis.clone();
        // Whole microseconds, at least one: the script's unit.
        let interval = self.quota.interval.as_micros().max(1) as u64;
        let key = format!("{}{key}", self.prefix);
        let run = |cmd: &str, script: &str| {
            let mut c = redis::cmd(cmd);
            c.arg(script)
                .arg(1)
                .arg(&key)
                .arg(self.quota.burst)
                .arg(interval);
            c
        };
        let wait: u64 = match run("EVALSHA", &self.sha).query_async(&mut conn).await {
            Ok(wait) => wait,
            // A restarted Redis has forgotten the script (the script cache
            // is not persisted): send it whole, which caches it again.
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                run("EVAL", GCRA).query_async(&mut conn).await?
            }
            Err(e) => return Err(e),
        };
        Ok(match wait {
            0 => Decision::Allowed,
            us => Decision::Denied {
                retry_after: Duration::from_micros(us),
            },
        })
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
/// - the limiter failed: the request goes to `inner` (fail open).
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
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let key = (self.key)(&req);
        let limiter = Arc::clone(&self.limiter);
        // `self.inner` is the clone that `poll_ready` made ready: take it
        // into the future and leave a fresh clone behind (tower's docs on
        // `Service::call` explain why a clone may not be ready).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            match limiter.check(&key).await {
                Ok(Decision::Denied { retry_after }) => Ok(too_many_requests(retry_after)),
                Ok(Decision::Allowed) => inner.call(req).await,
                Err(e) => {
                    eprintln!("rate limiter failed, serving the request anyway: {e}");
                    inner.call(req).await
                }
            }
        })
    }
}

/// `429` with `Retry-After` in whole seconds, rounded up: the header has
/// no fractions (RFC 9110, 10.2.3), and a client told `0` would retry at
/// once, into another 429.
fn too_many_requests(retry_after: Duration) -> Response {
    let secs = retry_after.as_nanos().div_ceil(1_000_000_000).max(1);
    let mut resp = (StatusCode::TOO_MANY_REQUESTS, "rate limited\n").into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs as u64));
    resp
}
