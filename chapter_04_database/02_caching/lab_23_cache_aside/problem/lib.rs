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
//! The public items (names, signatures, doc comments) are the contract the
//! tests call; `new`, `migrate`, `key` and `db_reads` are written for you.
//! The private fields are yours to change. Read the README's Spec first:
//! what a read, an update and a delete must guarantee, and what happens
//! when Redis is slow or gone.
#![allow(unused)]

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

/// Users, read through the cache.
pub struct UserCache {
    db: PgPool,
    redis: ConnectionManager,
    prefix: String,
    config: Config,
    db_reads: AtomicU64,
}

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

    /// How many `SELECT`s `get_user` has sent to PostgreSQL (add one to
    /// `self.db_reads` for each).
    pub fn db_reads(&self) -> u64 {
        self.db_reads.load(Ordering::SeqCst)
    }

    /// Stores a new user (version 1). The cache is not touched: the id is
    /// new, so nothing can be cached for it yet.
    pub async fn create_user(&self, name: &str, email: &str) -> Result<User, CacheError> {
        todo!("INSERT ... RETURNING id, name, email, version")
    }

    /// User `id`, from the cache if it holds it, else from PostgreSQL
    /// (one query however many callers miss at once). `None` if there is
    /// no such user.
    pub async fn get_user(&self, id: i64) -> Result<Option<User>, CacheError> {
        todo!("the cache first, then PostgreSQL, one query per id however many miss at once")
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
        todo!("update the row, then make sure no cache read gives the old one")
    }

    /// Deletes a user; `false` if there was none. When it returns, cache
    /// reads give `None`.
    pub async fn delete_user(&self, id: i64) -> Result<bool, CacheError> {
        todo!("delete the row, then make sure cache reads give None")
    }
}
