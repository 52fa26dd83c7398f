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
//! The contract is the doc comment of each item below (README.md has it in
//! full, the tests check it). In short:
//!
//! - Every key and channel the store touches is `prefix + name`
//!   ([`Store::key`]): many stores share one Redis without seeing each
//!   other's data.
//! - Plain commands can share one connection
//!   (`redis::aio::MultiplexedConnection` carries the commands of many tasks
//!   on one socket). Three things cannot, and each needs a connection of its
//!   own while it runs: a WATCH/MULTI/EXEC transaction (WATCH and MULTI are
//!   state of the connection), a blocking BRPOP (it blocks the connection),
//!   and a subscription (a subscribed connection can only (un)subscribe).
//! - Atomicity comes from Redis: one command (INCR), a transaction that
//!   Redis aborts when a watched key changed (then try again), or a Lua
//!   script (EVAL), which Redis runs with nothing else in between.
//! - The `redis` crate's connections give up on a reply after 500 ms by
//!   default (`AsyncConnectionConfig::set_response_timeout`): a BRPOP waits
//!   longer than that on purpose.
//!
//! The `redis` crate is built without its `script` feature here, so there is
//! no `redis::Script`: send `EVAL` with `redis::cmd`.

// Remove this line once you have started: it keeps the starter free of
// warnings about the parameters that the todo!() bodies do not use yet.
#![allow(unused)]

use std::time::Duration;

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
    Redis(#[from] redis::RedisError),
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
/// docs. Must be `Send + Sync`: the tests share it as `Arc<Store>` between
/// tasks.
pub struct Store {
    // TODO: what does a store need? A connection for plain commands, a way
    // to open more connections (redis::Client), and the prefix.
}

impl Store {
    /// Connects to the Redis at `url` (`redis://host:port`), with every key
    /// and channel under `prefix`. Fails if the server cannot be reached.
    pub async fn connect(url: &str, prefix: &str) -> Result<Store, StoreError> {
        todo!()
    }

    /// The Redis key (or channel) that `name` stands for: `prefix + name`.
    pub fn key(&self, name: &str) -> String {
        todo!()
    }

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
        todo!()
    }

    /// The string at `key`; `None` if it is missing or has expired. A key
    /// holding another type is [`StoreError::WrongType`].
    pub async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        todo!()
    }

    /// How long `key` has to live (`PTTL`), for a key of any type.
    pub async fn ttl(&self, key: &str) -> Result<Ttl, StoreError> {
        todo!()
    }

    /// Adds one to the integer at `key` and returns the new value; a
    /// missing key counts as 0, so the first call returns 1. Atomic: any
    /// number of concurrent calls, from any number of clients, each add
    /// exactly one. A string that is not a base-10 `i64`, or `i64::MAX`, is
    /// [`StoreError::NotAnInteger`] (the value is left as it was); another
    /// type is [`StoreError::WrongType`]. The key keeps its TTL, if any.
    pub async fn incr(&self, key: &str) -> Result<i64, StoreError> {
        todo!()
    }

    /// Writes `profile` as the hash at `key`: the fields `name`, `email`
    /// and `visits` (decimal), in one `HSET`. Other fields of an existing
    /// hash are left alone. A key of another type is
    /// [`StoreError::WrongType`].
    pub async fn save_profile(&self, key: &str, profile: &Profile) -> Result<(), StoreError> {
        todo!()
    }

    /// Reads the hash at `key` as a [`Profile`] (one `HGETALL`); `None` if
    /// the key is missing. A hash without one of the three fields, or whose
    /// `visits` is not a `u64`, is [`StoreError::BadProfile`]; extra fields
    /// are ignored. A key of another type is [`StoreError::WrongType`].
    pub async fn load_profile(&self, key: &str) -> Result<Option<Profile>, StoreError> {
        todo!()
    }

    /// Adds `item` to the queue `queue` (`LPUSH`: producers push at the
    /// head of the list) and returns the queue's length after the push. A
    /// key of another type is [`StoreError::WrongType`].
    pub async fn enqueue(&self, queue: &str, item: &str) -> Result<u64, StoreError> {
        todo!()
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
        todo!()
    }

    /// Sets every `(key, value)` pair, without TTL (a previous TTL is
    /// removed), in one round trip: all the `SET`s are written to the
    /// socket at once and the replies read afterwards. Not atomic: another
    /// client may see some of the keys set and not others. An empty slice
    /// does nothing (and sends nothing).
    pub async fn set_many(&self, pairs: &[(&str, &str)]) -> Result<(), StoreError> {
        todo!()
    }

    /// The strings at `keys`, in the same order, in one command (`MGET`):
    /// `None` for a key that is missing *or holds another type* (that is
    /// what `MGET` answers, rather than an error). An empty slice gives an
    /// empty `Vec` (Redis refuses an `MGET` without keys).
    pub async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<String>>, StoreError> {
        todo!()
    }

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
        todo!()
    }

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
        todo!()
    }

    /// Publishes `message` on `channel` and returns how many subscribers
    /// received it (0 when nobody listens: pub/sub keeps nothing for
    /// later).
    pub async fn publish(&self, channel: &str, message: &str) -> Result<u64, StoreError> {
        todo!()
    }

    /// Subscribes to `channel` on a connection of its own. When this
    /// returns, Redis has confirmed the subscription: every message
    /// published from then on reaches the [`Subscription`].
    pub async fn subscribe(&self, channel: &str) -> Result<Subscription, StoreError> {
        todo!()
    }
}

/// Messages of one channel, in the order they were published; see
/// [`Store::subscribe`]. Dropping it closes its connection.
pub struct Subscription {
    // TODO: the subscribed connection (redis::aio::PubSub).
}

impl Subscription {
    /// Waits for the next message and returns its payload; `None` if the
    /// connection has closed. Messages published while nobody waits here
    /// are kept (by the client) until read.
    pub async fn next_message(&mut self) -> Option<String> {
        todo!()
    }
}
