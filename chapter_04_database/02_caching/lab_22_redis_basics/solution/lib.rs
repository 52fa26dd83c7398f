//! Redis from Rust, one data structure at a time: strings with a TTL, an
//! atomic counter, a hash, a list used as a work queue, a pipeline, an
//! optimistic transaction (WATCH/MULTI/EXEC), the same compare-and-set as a
//! Lua script, and pub/sub.
//!
//! ```no_run
//! # async fn demo() -> Result<(), redis_basics::StoreError> {
//! use std::time::Duration;
//! use redis_basics::Store;
//! let store = Store::connect("redis://127.0.0.1:6379", "app:").await?;
//! store.set_with_ttl("session", "alice", Duration::from_secs(30)).await?; // key app:session
//! assert_eq!(store.incr("hits").await?, 1);
//! store.enqueue("jobs", "resize 1.png").await?;
//! assert_eq!(store.dequeue("jobs", Duration::from_secs(1)).await?.as_deref(), Some("resize 1.png"));
//! # Ok(()) }
//! ```
//!
//! # Design
//!
//! ```text
//!                 ┌──────────── one multiplexed connection ─────────────┐
//!   task ─GET──┐  │ commands of many tasks are written one after the    │
//!   task ─INCR─┼─>│ other on one socket; replies come back in the same  │──> Redis
//!   task ─SET──┘  │ order and are matched to their callers              │
//!                 └─────────────────────────────────────────────────────┘
//!   compare_and_set ─> an exclusive connection (WATCH ... EXEC)  ──────────> Redis
//!   dequeue         ─> an exclusive connection (BRPOP blocks it) ──────────> Redis
//!   subscribe       ─> a connection of its own, in subscriber mode ────────> Redis
//! ```
//!
//! - **One shared connection for plain commands.** Redis runs the commands
//!   of one connection one at a time, in order, and a command is a few
//!   microseconds of work, so one TCP connection carries the commands of
//!   every task: `redis::aio::MultiplexedConnection` queues them on the
//!   socket and hands each reply to the task that waits for it. That is
//!   pipelining across tasks, for free; a pool of connections would only add
//!   sockets.
//! - **Some commands change the state of the connection they run on**, and
//!   then that connection cannot be shared:
//!   - `WATCH` marks keys *for this connection*, and `MULTI` makes the
//!     connection queue every command until `EXEC`. On the shared connection
//!     another task's `GET` would land inside our transaction, and another
//!     task's `EXEC` would end our watch. So a transaction takes a connection
//!     of its own for its duration.
//!   - `BRPOP` blocks the connection until an item arrives or its timeout
//!     passes: every command queued behind it on the same socket would wait
//!     too, seconds later. So a blocking pop takes a connection of its own.
//!   - `SUBSCRIBE` turns a connection into a subscriber, which may only
//!     (un)subscribe and ping from then on. So a subscription is a connection
//!     of its own, for its whole life.
//!
//!   The exclusive connections of transactions and pops are kept in a small
//!   free list and reused; one that failed half-way (an error, a cancelled
//!   call) is dropped instead of returned, since it may still be in a
//!   transaction or blocked.
//! - **Atomicity is Redis's, never ours.** `INCR` is one command, so 100
//!   tasks incrementing at once give exactly 100: Redis runs them one after
//!   the other. A `GET` then a `SET` from the client would lose updates (two
//!   tasks read 5, both write 6). Compare-and-set needs a read and a write
//!   that nobody may come between; two ways to get it:
//!   - *optimistic*: `WATCH key`, `GET`, compare, then `MULTI` / `SET` /
//!     `EXEC`. If anyone wrote the key after the `WATCH`, `EXEC` does nothing
//!     and answers nil, and we start again (read the new value, compare
//!     again). Nothing is locked; a conflict costs a retry.
//!   - *a Lua script* (`EVAL`): Redis runs a script as one command, nothing
//!     else runs meanwhile, so the read and the write are atomic by
//!     construction, in one round trip, with no retry.
//! - **Every key and channel is `prefix + name`**, built in one place
//!   ([`Store::key`]), so that many stores (many tests, many applications)
//!   share one Redis without seeing each other's data.
//!
//! The real-world trade-off: a production service would also want
//! reconnection (`redis::aio::ConnectionManager` reconnects the shared
//! connection after a failure) and a bound on the exclusive connections;
//! here a lost connection is an error the caller sees.

use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use redis::aio::{MultiplexedConnection, PubSub};
use redis::{AsyncConnectionConfig, Client, RedisError};

/// How long a command may wait for its reply before the call fails. The
/// `redis` crate's default is 500 ms, which a busy server (or a paused one)
/// can exceed without anything being wrong.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a blocking pop may wait for its reply beyond its own timeout:
/// the server answers nil at the timeout, plus a round trip.
const BLOCKING_GRACE: Duration = Duration::from_secs(5);

/// How many idle exclusive connections the store keeps for reuse.
const MAX_IDLE: usize = 16;

/// The compare-and-set script. `KEYS[1]` is the key; `ARGV[1]` is `"1"`
/// when a value is expected (then `ARGV[2]` is it) and `"0"` when the key
/// must be missing; `ARGV[3]` is the new value. In Lua, `GET` of a missing
/// key gives `false`, never a string.
const CAS_SCRIPT: &str = r#"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
else
  if current ~= false then return 0 end
end
redis.call('SET', KEYS[1], ARGV[3])
return 1
"#;

/// What went wrong in a [`Store`] call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key holds a value of another type than the call works on (a
    /// hash where a string was expected, ...). Redis's `WRONGTYPE`.
    #[error("the key holds a value of another type")]
    WrongType,
    /// [`Store::incr`] on a string that is not a base-10 `i64`, or an
    /// increment that would overflow `i64::MAX`.
    #[error("the value is not an integer or the increment would overflow")]
    NotAnInteger,
    /// [`Store::set_with_ttl`] with a TTL of zero.
    #[error("a TTL must be greater than zero")]
    InvalidTtl,
    /// [`Store::load_profile`] found a hash that is not a complete
    /// [`Profile`] (a field missing, or `visits` not a number); says which.
    #[error("not a valid profile: {0}")]
    BadProfile(String),
    /// Anything else from Redis or the connection (refused, timed out, ...).
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
}

/// Turns Redis's `WRONGTYPE` reply into [`StoreError::WrongType`]. The code
/// is the first word of an error reply; inside a Lua script Redis keeps it.
fn classify(e: RedisError) -> StoreError {
    if e.code() == Some("WRONGTYPE") || e.to_string().contains("WRONGTYPE") {
        StoreError::WrongType
    } else {
        StoreError::Redis(e)
    }
}

/// The time to live of a key, as [`Store::ttl`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// The key does not exist (or has expired).
    Missing,
    /// The key exists and never expires.
    Persistent,
    /// The key expires after this long (millisecond precision).
    Expires(Duration),
}

/// A user profile, stored as a hash of three fields: `name`, `email`, and
/// `visits` (in decimal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub email: String,
    pub visits: u64,
}

/// A handle on one Redis, with every key under one prefix; see the crate
/// docs. `Send + Sync`: share it as `Arc<Store>` between tasks.
pub struct Store {
    /// Opens the exclusive and the subscriber connections.
    client: Client,
    /// The connection every plain command goes through. Cloning a
    /// `MultiplexedConnection` is cheap and shares the socket.
    shared: MultiplexedConnection,
    /// Idle exclusive connections (for WATCH/MULTI/EXEC and BRPOP).
    idle: Mutex<Vec<MultiplexedConnection>>,
    prefix: String,
}

impl Store {
    /// Connects to the Redis at `url` (`redis://host:port`), with every key
    /// and channel under `prefix`. Fails if the server cannot be reached.
    pub async fn connect(url: &str, prefix: &str) -> Result<Store, StoreError> {
        let client = Client::open(url)?;
        let shared = client
            .get_multiplexed_async_connection_with_config(&config())
            .await?;
        Ok(Store {
            client,
            shared,
            idle: Mutex::new(Vec::new()),
            prefix: prefix.to_string(),
        })
    }

    /// The Redis key (or channel) that `name` stands for: `prefix + name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// A handle on the shared connection (a clone shares the socket).
    fn conn(&self) -> MultiplexedConnection {
        self.shared.clone()
    }

    /// An exclusive connection: from the free list, or a new one.
    async fn exclusive(&self) -> Result<MultiplexedConnection, StoreError> {
        let idle = self.idle.lock().expect("idle list lock").pop();
        match idle {
            Some(mut conn) => {
                conn.set_response_timeout(RESPONSE_TIMEOUT);
                Ok(conn)
            }
            None => Ok(self
                .client
                .get_multiplexed_async_connection_with_config(&config())
                .await?),
        }
    }

    /// Returns an exclusive connection to the free list. Only called when
    /// the connection is known to be clean (no transaction, no WATCH, not
    /// blocked); on any error it is dropped instead.
    fn give_back(&self, conn: MultiplexedConnection) {
        let mut idle = self.idle.lock().expect("idle list lock");
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    // -- strings with a TTL ------------------------------------------------

    /// Sets `key` to `value`, expiring after `ttl`, in one command (`SET
    /// key value PX ms`; a `SET` then an `EXPIRE` would leave a key that
    /// never expires if the client died in between). Replaces whatever the
    /// key held, of any type, and its previous TTL. `ttl` has millisecond
    /// precision, rounded up (1 µs is 1 ms). A zero `ttl` is
    /// [`StoreError::InvalidTtl`] and leaves the key as it was.
    pub async fn set_with_ttl(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        if ttl.is_zero() {
            // Redis would refuse `PX 0` itself; saying so before the round
            // trip gives the caller a precise error.
            return Err(StoreError::InvalidTtl);
        }
        redis::cmd("SET")
            .arg(self.key(key))
            .arg(value)
            .arg("PX")
            .arg(millis_rounded_up(ttl))
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(classify)
    }

    /// The string at `key`; `None` if it is missing or has expired. A key
    /// holding another type is [`StoreError::WrongType`].
    pub async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        redis::cmd("GET")
            .arg(self.key(key))
            .query_async(&mut self.conn())
            .await
            .map_err(classify)
    }

    /// How long `key` has to live (`PTTL`), for a key of any type.
    pub async fn ttl(&self, key: &str) -> Result<Ttl, StoreError> {
        let ms: i64 = redis::cmd("PTTL")
            .arg(self.key(key))
            .query_async(&mut self.conn())
            .await
            .map_err(classify)?;
        // PTTL's answer mixes two flags into the number: -2 for a missing
        // key, -1 for one without expiry, else the milliseconds left.
        Ok(match ms {
            -2 => Ttl::Missing,
            -1 => Ttl::Persistent,
            ms => Ttl::Expires(Duration::from_millis(ms.max(0) as u64)),
        })
    }

    // -- a counter ---------------------------------------------------------

    /// Adds one to the integer at `key` and returns the new value; a
    /// missing key counts as 0, so the first call returns 1. Atomic: any
    /// number of concurrent calls, from any number of clients, each add
    /// exactly one. A string that is not a base-10 `i64`, or `i64::MAX`, is
    /// [`StoreError::NotAnInteger`] (the value is left as it was); another
    /// type is [`StoreError::WrongType`]. The key keeps its TTL, if any.
    pub async fn incr(&self, key: &str) -> Result<i64, StoreError> {
        // One command: the read, the addition and the write happen inside
        // Redis, where nothing can run between them.
        redis::cmd("INCR")
            .arg(self.key(key))
            .query_async(&mut self.conn())
            .await
            .map_err(|e| match classify(e) {
                // "ERR value is not an integer or out of range" and "ERR
                // increment or decrement would overflow".
                StoreError::Redis(e) if e.code() == Some("ERR") => StoreError::NotAnInteger,
                other => other,
            })
    }

    // -- a hash ------------------------------------------------------------

    /// Writes `profile` as the hash at `key`: the fields `name`, `email`
    /// and `visits` (decimal), in one `HSET`. Other fields of an existing
    /// hash are left alone. A key of another type is
    /// [`StoreError::WrongType`].
    pub async fn save_profile(&self, key: &str, profile: &Profile) -> Result<(), StoreError> {
        redis::cmd("HSET")
            .arg(self.key(key))
            .arg("name")
            .arg(&profile.name)
            .arg("email")
            .arg(&profile.email)
            .arg("visits")
            .arg(profile.visits)
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(classify)
    }

    /// Reads the hash at `key` as a [`Profile`] (one `HGETALL`); `None` if
    /// the key is missing. A hash without one of the three fields, or whose
    /// `visits` is not a `u64`, is [`StoreError::BadProfile`]; extra fields
    /// are ignored. A key of another type is [`StoreError::WrongType`].
    pub async fn load_profile(&self, key: &str) -> Result<Option<Profile>, StoreError> {
        let mut fields: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.key(key))
            .query_async(&mut self.conn())
            .await
            .map_err(classify)?;
        // Redis has no empty hashes: a hash whose last field is deleted is
        // deleted. So no fields means no key.
        if fields.is_empty() {
            return Ok(None);
        }
        let mut take = |field: &str| {
            fields
                .remove(field)
                .ok_or_else(|| StoreError::BadProfile(format!("no field {field:?}")))
        };
        let name = take("name")?;
        let email = take("email")?;
        let visits = take("visits")?;
        let visits = visits
            .parse()
            .map_err(|_| StoreError::BadProfile(format!("visits is {visits:?}, not a number")))?;
        Ok(Some(Profile {
            name,
            email,
            visits,
        }))
    }

    // -- a list as a work queue ----------------------------------------------

    /// Adds `item` to the queue `queue` (`LPUSH`: producers push at the
    /// head of the list) and returns the queue's length after the push. A
    /// key of another type is [`StoreError::WrongType`].
    pub async fn enqueue(&self, queue: &str, item: &str) -> Result<u64, StoreError> {
        redis::cmd("LPUSH")
            .arg(self.key(queue))
            .arg(item)
            .query_async(&mut self.conn())
            .await
            .map_err(classify)
    }

    /// Takes the oldest item of `queue` (from the tail of the list, so the
    /// queue is first in, first out), waiting up to `timeout` for one to
    /// arrive (`BRPOP`); `None` when the timeout passes with the queue
    /// still empty. A zero `timeout` does not wait at all (`RPOP`): Redis's
    /// own `BRPOP key 0` would wait forever. `timeout` has millisecond
    /// precision, rounded up. While it waits, the other calls of the store
    /// go on: the pop blocks a connection of its own. A key of another
    /// type is [`StoreError::WrongType`].
    pub async fn dequeue(
        &self,
        queue: &str,
        timeout: Duration,
    ) -> Result<Option<String>, StoreError> {
        let key = self.key(queue);
        if timeout.is_zero() {
            return redis::cmd("RPOP")
                .arg(key)
                .query_async(&mut self.conn())
                .await
                .map_err(classify);
        }
        let mut conn = self.exclusive().await?;
        // The reply comes when an item arrives or at the timeout, so the
        // connection's own response timeout must be longer than ours.
        conn.set_response_timeout(timeout + BLOCKING_GRACE);
        // BRPOP takes seconds, with decimals since Redis 6. Rounding up to
        // whole milliseconds keeps a tiny timeout from becoming 0 (forever).
        let ms = millis_rounded_up(timeout);
        let reply: Option<(String, String)> = redis::cmd("BRPOP")
            .arg(&key)
            .arg(format!("{}.{:03}", ms / 1000, ms % 1000))
            .query_async(&mut conn)
            .await
            .map_err(classify)?;
        // Reached only when Redis answered: the connection is idle again.
        self.give_back(conn);
        // BRPOP answers [key, item], since it can watch several keys.
        Ok(reply.map(|(_key, item)| item))
    }

    // -- a pipeline ----------------------------------------------------------

    /// Sets every `(key, value)` pair, without TTL (a previous TTL is
    /// removed), in one round trip: all the `SET`s are written to the
    /// socket at once and the replies read afterwards. Not atomic: another
    /// client may see some of the keys set and not others. An empty slice
    /// does nothing (and sends nothing).
    pub async fn set_many(&self, pairs: &[(&str, &str)]) -> Result<(), StoreError> {
        if pairs.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (key, value) in pairs {
            // `ignore`: we want to know that each SET worked (an error
            // still fails the call), not to collect n "OK"s.
            pipe.cmd("SET").arg(self.key(key)).arg(*value).ignore();
        }
        pipe.query_async::<()>(&mut self.conn())
            .await
            .map_err(classify)
    }

    /// The strings at `keys`, in the same order, in one command (`MGET`):
    /// `None` for a key that is missing *or holds another type* (that is
    /// what `MGET` answers, rather than an error). An empty slice gives an
    /// empty `Vec` (Redis refuses an `MGET` without keys).
    pub async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<String>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("MGET");
        for key in keys {
            cmd.arg(self.key(key));
        }
        cmd.query_async(&mut self.conn()).await.map_err(classify)
    }

    // -- compare-and-set, optimistic -----------------------------------------

    /// Sets `key` to `new` if and only if it currently holds `expected`
    /// (`None`: if the key is missing); returns whether it did. Atomic
    /// against every other client: the swap happens only if the value read
    /// is still the value when it is written. Uses WATCH/MULTI/EXEC on a
    /// connection of its own; when another client writes the key between
    /// the `WATCH` and the `EXEC` (even with the same value), `EXEC` does
    /// nothing and the call starts again, so it never fails spuriously:
    /// `false` means the value really was not `expected`. The new value has
    /// no TTL. A key of another type is [`StoreError::WrongType`].
    pub async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&str>,
        new: &str,
    ) -> Result<bool, StoreError> {
        let key = self.key(key);
        let mut conn = self.exclusive().await?;
        loop {
            // From here on, any write to the key by anyone makes our EXEC
            // fail. WATCH before GET: the other order leaves a window in
            // which a write would go unnoticed.
            redis::cmd("WATCH")
                .arg(&key)
                .query_async::<()>(&mut conn)
                .await
                .map_err(classify)?;
            let current: Option<String> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .map_err(classify)?;
            if current.as_deref() != expected {
                // No transaction to run: drop the watch, so the connection
                // goes back clean.
                redis::cmd("UNWATCH")
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(classify)?;
                self.give_back(conn);
                return Ok(false);
            }
            // MULTI, SET, EXEC in one round trip. EXEC answers nil when a
            // watched key changed: nothing was written.
            let committed: Option<()> = redis::pipe()
                .atomic()
                .cmd("SET")
                .arg(&key)
                .arg(new)
                .ignore()
                .query_async(&mut conn)
                .await
                .map_err(classify)?;
            if committed.is_some() {
                // EXEC also ends the watch: the connection is clean.
                self.give_back(conn);
                return Ok(true);
            }
            // Someone wrote the key since our WATCH. Their value may still
            // be `expected` (a write of the same value): look again.
        }
    }

    // -- compare-and-set, a Lua script ---------------------------------------

    /// The same contract as [`Store::compare_and_set`], as one Lua script
    /// (`EVAL`): Redis runs a script without running anything else, so the
    /// read and the write are atomic with no retry, in one round trip, on
    /// the shared connection.
    pub async fn compare_and_set_lua(
        &self,
        key: &str,
        expected: Option<&str>,
        new: &str,
    ) -> Result<bool, StoreError> {
        // The script names its key in KEYS (so Redis, and a cluster, know
        // which keys it touches), its values in ARGV. `redis::Script`
        // would send EVALSHA first and the script only when the server
        // does not know it; the course builds `redis` without its "script"
        // feature, so we send EVAL, which is the same without the cache.
        let (has_expected, expected) = match expected {
            Some(v) => ("1", v),
            None => ("0", ""),
        };
        let swapped: i64 = redis::cmd("EVAL")
            .arg(CAS_SCRIPT)
            .arg(1)
            .arg(self.key(key))
            .arg(has_expected)
            .arg(expected)
            .arg(new)
            .query_async(&mut self.conn())
            .await
            .map_err(classify)?;
        Ok(swapped == 1)
    }

    // -- pub/sub -------------------------------------------------------------

    /// Publishes `message` on `channel` and returns how many subscribers
    /// received it (0 when nobody listens: pub/sub keeps nothing for
    /// later).
    pub async fn publish(&self, channel: &str, message: &str) -> Result<u64, StoreError> {
        redis::cmd("PUBLISH")
            .arg(self.key(channel))
            .arg(message)
            .query_async(&mut self.conn())
            .await
            .map_err(classify)
    }

    /// Subscribes to `channel` on a connection of its own. When this
    /// returns, Redis has confirmed the subscription: every message
    /// published from then on reaches the [`Subscription`].
    pub async fn subscribe(&self, channel: &str) -> Result<Subscription, StoreError> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        // `subscribe` waits for Redis's confirmation, which is what makes
        // the promise above true.
        pubsub.subscribe(self.key(channel)).await?;
        Ok(Subscription { pubsub })
    }
}

/// Messages of one channel, in the order they were published; see
/// [`Store::subscribe`]. Dropping it closes its connection.
pub struct Subscription {
    pubsub: PubSub,
}

impl Subscription {
    /// Waits for the next message and returns its payload; `None` if the
    /// connection has closed. Messages published while nobody waits here
    /// are kept (by the client) until read.
    pub async fn next_message(&mut self) -> Option<String> {
        let msg = self.pubsub.on_message().next().await?;
        // A payload is bytes; one that is not UTF-8 is shown lossily.
        Some(String::from_utf8_lossy(msg.get_payload_bytes()).into_owned())
    }
}

/// The store's connection settings: a response timeout that a loaded
/// server does not trip by accident.
fn config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new().set_response_timeout(Some(RESPONSE_TIMEOUT))
}

/// Milliseconds, rounded up, so that no non-zero duration becomes 0.
fn millis_rounded_up(d: Duration) -> u64 {
    d.as_nanos()
        .div_ceil(1_000_000)
        .try_into()
        .unwrap_or(u64::MAX)
}
