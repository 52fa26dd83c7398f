//! Users read from PostgreSQL through a Redis cache (cache-aside), safe
//! against the races a cache brings and alive when Redis is not.
//!
//! ```ignore
//! let users = UserCache::new(pg_pool, "redis://127.0.0.1/", "app:", Config::default())?;
//! users.migrate().await?;
//! let ann = users.create_user("Ann", "ann@example.com").await?;
//! users.get_user(ann.id).await?; // a miss: PostgreSQL, then cached for `ttl`
//! users.get_user(ann.id).await?; // a hit: Redis only
//! ```
//!
//! # Design
//!
//! - **Cache-aside.** PostgreSQL is the truth; Redis holds copies. A read
//!   asks Redis first (`GET {prefix}user:{id}`); on a miss it reads the row
//!   and fills the key with a TTL. A user that does not exist is cached too
//!   (negative caching), with a short TTL, so a flood of requests for a
//!   missing id costs one query per `negative_ttl`, not one per request.
//! - **Versions stop stale fills.** Every row has a `version`, bumped by
//!   each update. A cache entry is `"<version>:<json>"`, or `"<version>:-"`
//!   for "no such user". Every write to the cache goes through one Lua
//!   script that stores the entry only if the key holds no entry of the same
//!   or a newer version, atomically (Redis runs a script with nothing in
//!   between). An update writes the new version (which beats any fill of
//!   the old one), and a delete writes "gone" at version `i64::MAX` (which
//!   beats every fill). So a reader that read the old row before an update
//!   and whose fill arrives after it (a slow network, a pause) is refused,
//!   instead of putting the old row back for a whole TTL, the classic
//!   cache-aside race, which a plain `DEL` after the write does not close.
//! - **Single-flight.** Concurrent misses for one id share one database
//!   read: the first caller puts a `OnceCell` in `flights` and loads; the
//!   others find the cell and wait on it. If the first caller is cancelled
//!   mid-load, `OnceCell` lets the next waiter load instead, so nobody waits
//!   forever.
//! - **Redis is optional.** Every Redis call has a deadline
//!   (`redis_timeout`); an error or a timeout is logged and treated as a
//!   miss (on read) or skipped (on fill). Reads then cost a query each but
//!   keep working, within a bounded time. The connection is a
//!   `ConnectionManager`, created lazily: it reconnects by itself once Redis
//!   is back, so the cache recovers without a restart.
//! - **One counter, `db_reads`,** counts the `SELECT`s that `get_user` sent,
//!   so tests and dashboards can see the hit rate.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::OnceCell;

/// A stored user; `version` starts at 1 and grows by one per update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub email: String,
    pub version: i64,
}

/// The cache's timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// How long a found user stays cached.
    pub ttl: Duration,
    /// How long "no such user" stays cached.
    pub negative_ttl: Duration,
    /// The longest one Redis call may take before it counts as failed.
    pub redis_timeout: Duration,
}

impl Default for Config {
    /// 60 s, 5 s and 200 ms.
    fn default() -> Config {
        Config {
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
            redis_timeout: Duration::from_millis(200),
        }
    }
}

/// Why a call failed. Redis trouble is never an error: see the module docs.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// PostgreSQL failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// The Redis URL is not one (`UserCache::new` only).
    #[error("bad Redis URL: {0}")]
    RedisUrl(#[source] redis::RedisError),
}

/// The result of one load, shared by every caller of a single flight. The
/// error is a string: `sqlx::Error` is not `Clone`.
type Loaded = Result<Option<User>, String>;

/// Users, read through the cache.
pub struct UserCache {
    db: PgPool,
    redis: ConnectionManager,
    prefix: String,
    config: Config,
    flights: Mutex<HashMap<i64, Arc<OnceCell<Loaded>>>>,
    db_reads: AtomicU64,
}

/// Stores `ARGV[2]` at `KEYS[1]` for `ARGV[3]` ms unless the key holds an
/// entry whose version (the digits before the first `:`) is `ARGV[1]` or
/// newer. Returns 1 if it stored, 0 if it kept the newer entry.
const FILL: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then
  local v = tonumber(string.match(cur, '^(%-?%d+):'))
  if v and v >= tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

/// The version of the entry a delete leaves: newer than any row's.
const GONE: i64 = i64::MAX;

impl UserCache {
    /// A cache over `db`, keeping its keys in Redis at `redis_url` under
    /// `prefix`. Does not connect to Redis yet: a service starts even while
    /// Redis is down.
    pub fn new(
        db: PgPool,
        redis_url: &str,
        prefix: impl Into<String>,
        config: Config,
    ) -> Result<UserCache, CacheError> {
        let client = redis::Client::open(redis_url).map_err(CacheError::RedisUrl)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(config.redis_timeout))
            .set_connection_timeout(Some(config.redis_timeout))
            // Give up a reconnect quickly; the next call tries again. Our
            // own deadline (`redis_timeout`) bounds every call anyway.
            .set_number_of_retries(1)
            .set_max_delay(config.redis_timeout);
        let redis = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(CacheError::RedisUrl)?;
        Ok(UserCache {
            db,
            redis,
            prefix: prefix.into(),
            config,
            flights: Mutex::new(HashMap::new()),
            db_reads: AtomicU64::new(0),
        })
    }

    /// Creates the `users` table if it is missing.
    pub async fn migrate(&self) -> Result<(), CacheError> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS users (
                id      bigserial PRIMARY KEY,
                name    text   NOT NULL,
                email   text   NOT NULL,
                version bigint NOT NULL DEFAULT 1
            )",
        )
        .execute(&self.db)
        .await?;
        Ok(())
    }

    /// The Redis key of user `id`.
    pub fn key(&self, id: i64) -> String {
        format!("{}user:{id}", self.prefix)
    }

    /// How many `SELECT`s `get_user` has sent to PostgreSQL.
    pub fn db_reads(&self) -> u64 {
        self.db_reads.load(Ordering::SeqCst)
    }

    /// Stores a new user (version 1). The cache is not touched: the id is
    /// new, so nothing can be cached for it yet.
    pub async fn create_user(&self, name: &str, email: &str) -> Result<User, CacheError> {
        let user = sqlx::query_as(
            "INSERT INTO users (name, email) VALUES ($1, $2) RETURNING id, name, email, version",
        )
        .bind(name)
        .bind(email)
        .fetch_one(&self.db)
        .await?;
        Ok(user)
    }

    /// User `id`, from the cache if it holds it, else from PostgreSQL
    /// (one query however many callers miss at once). `None` if there is
    /// no such user.
    pub async fn get_user(&self, id: i64) -> Result<Option<User>, CacheError> {
        if let Some(cached) = self.cached(id).await {
            return Ok(cached);
        }
        let cell = {
            let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(flights.entry(id).or_default())
        };
        let loaded = cell.get_or_init(|| self.load(id)).await.clone();
        // The flight is over: the next miss (after the TTL) loads afresh.
        // Only remove our own cell: a later flight may have replaced it.
        {
            let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
            if flights.get(&id).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                flights.remove(&id);
            }
        }
        // Every caller of the flight gets the leader's error, as text
        // (`sqlx::Error` is not `Clone`).
        loaded.map_err(|e| CacheError::Db(sqlx::Error::Protocol(e)))
    }

    /// Changes a user's name and email, bumping its version; `None` if
    /// there is no such user. When it returns, no cache read gives the old
    /// name or email.
    pub async fn update_user(
        &self,
        id: i64,
        name: &str,
        email: &str,
    ) -> Result<Option<User>, CacheError> {
        let user: Option<User> = sqlx::query_as(
            "UPDATE users SET name = $2, email = $3, version = version + 1
             WHERE id = $1 RETURNING id, name, email, version",
        )
        .bind(id)
        .bind(name)
        .bind(email)
        .fetch_optional(&self.db)
        .await?;
        if let Some(user) = &user {
            // Write the new version rather than DEL: a fill of the old
            // version that is still in flight will be refused by it.
            self.store(id, user.version, Some(user), self.config.ttl)
                .await;
        }
        Ok(user)
    }

    /// Deletes a user; `false` if there was none. When it returns, cache
    /// reads give `None`.
    pub async fn delete_user(&self, id: i64) -> Result<bool, CacheError> {
        let deleted = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&self.db)
            .await?
            .rows_affected()
            == 1;
        if deleted {
            // "Gone" at a version no fill can beat; ids are never reused.
            self.store(id, GONE, None, self.config.negative_ttl).await;
        }
        Ok(deleted)
    }

    /// What the cache holds for `id`: `Some(Some(user))`, `Some(None)` for a
    /// cached "no such user", `None` for a miss (or Redis failing).
    async fn cached(&self, id: i64) -> Option<Option<User>> {
        let mut conn = self.redis.clone();
        let got = tokio::time::timeout(
            self.config.redis_timeout,
            redis::cmd("GET")
                .arg(self.key(id))
                .query_async::<Option<String>>(&mut conn),
        )
        .await;
        let entry = match got {
            Ok(Ok(entry)) => entry?,
            Ok(Err(e)) => {
                eprintln!("cache: GET user {id} failed, reading PostgreSQL: {e}");
                return None;
            }
            Err(_) => {
                eprintln!("cache: GET user {id} timed out, reading PostgreSQL");
                return None;
            }
        };
        match decode(&entry) {
            Some(hit) => Some(hit),
            None => {
                // Not ours (or corrupt): read the truth; the fill replaces
                // it (the script sees no version in it).
                eprintln!("cache: user {id} holds an entry it cannot read");
                None
            }
        }
    }

    /// Reads user `id` from PostgreSQL and fills the cache: the one query of
    /// a single flight.
    async fn load(&self, id: i64) -> Loaded {
        self.db_reads.fetch_add(1, Ordering::SeqCst);
        let user: Option<User> =
            sqlx::query_as("SELECT id, name, email, version FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.db)
                .await
                .map_err(|e| e.to_string())?;
        match &user {
            Some(u) => self.store(id, u.version, Some(u), self.config.ttl).await,
            // Version 0: older than any row, so a user created with this id
            // later (never, with bigserial) would win.
            None => self.store(id, 0, None, self.config.negative_ttl).await,
        }
        Ok(user)
    }

    /// Writes an entry through the versioned script; a failure only logs.
    async fn store(&self, id: i64, version: i64, user: Option<&User>, ttl: Duration) {
        let value = encode(version, user);
        let mut conn = self.redis.clone();
        let ms = ttl.as_millis().max(1) as u64;
        // EVAL sends the script each time (a few hundred bytes); EVALSHA
        // would save them, at the price of handling NOSCRIPT after a
        // Redis restart.
        let mut call = redis::cmd("EVAL");
        call.arg(FILL)
            .arg(1)
            .arg(self.key(id))
            .arg(version)
            .arg(value)
            .arg(ms);
        let done = tokio::time::timeout(
            self.config.redis_timeout,
            call.query_async::<i64>(&mut conn),
        )
        .await;
        match done {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => eprintln!("cache: storing user {id} failed: {e}"),
            Err(_) => eprintln!("cache: storing user {id} timed out"),
        }
    }
}

fn encode(version: i64, user: Option<&User>) -> String {
    match user {
        Some(u) => format!(
            "{version}:{}",
            serde_json::to_string(u).expect("a User always serialises")
        ),
        None => format!("{version}:-"),
    }
}

/// `Some(Some(user))`, `Some(None)` for "no such user", `None` if `entry`
/// is not one of ours.
fn decode(entry: &str) -> Option<Option<User>> {
    let (_version, body) = entry.split_once(':')?;
    if body == "-" {
        return Some(None);
    }
    serde_json::from_str(body).ok().map(Some)
}
