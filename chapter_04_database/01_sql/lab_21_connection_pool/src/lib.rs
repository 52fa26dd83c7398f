//! A generic async connection pool: at most `max_size` connections, handed
//! out fairly, returned on drop, checked before reuse.
//!
//! ```ignore
//! let pool = Pool::new(PgManager::new(url), Config::new(10));
//! let mut conn = pool.get().await?; // waits its turn, at most 5 s
//! sqlx::query("SELECT 1").execute(&mut *conn).await?;
//! // dropped here: back to the pool for the next caller
//! ```
//!
//! The public items below (names, signatures, doc comments) are the
//! contract the tests call; the private fields are yours to change. Read
//! the README's Spec first: it says what `size`, `idle` and `waiting`
//! count, and in which order waiters and idle connections are served.
#![allow(unused)]

use std::fmt;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::Connection as _;
use tokio::sync::Semaphore;

/// Opens, checks and recycles the connections of one kind of server.
pub trait Manager: Send + Sync + 'static {
    /// One open connection.
    type Connection: Send + 'static;
    /// Why opening a connection failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Opens a new connection.
    fn create(&self) -> impl Future<Output = Result<Self::Connection, Self::Error>> + Send;

    /// Checks an idle connection before the pool hands it out again (a
    /// ping): `false` means it is broken, and the pool closes it.
    fn is_valid(&self, conn: &mut Self::Connection) -> impl Future<Output = bool> + Send;

    /// Called when a connection comes back from its user: `false` means it
    /// must not be reused, and the pool closes it. Synchronous, because it
    /// runs inside `Drop`; it can look at the connection's state, not talk
    /// to the server.
    fn recycle(&self, conn: &mut Self::Connection) -> bool;
}

/// How big the pool may grow and how long `get` may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// The most connections open at once (idle, in use, or being opened).
    pub max_size: usize,
    /// The longest [`Pool::get`] takes, waiting and opening included.
    pub acquire_timeout: Duration,
}

impl Config {
    /// `max_size` connections, and the default acquire timeout of 5 s.
    pub fn new(max_size: usize) -> Config {
        Config {
            max_size,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// Why [`Pool::get`] gave no connection.
#[derive(Debug, thiserror::Error)]
pub enum PoolError<E> {
    /// No connection within `acquire_timeout`: every connection stayed in
    /// use, or opening one took too long.
    #[error("no connection within the acquire timeout")]
    Timeout,
    /// The manager failed to open a connection.
    #[error("could not open a connection: {0}")]
    Create(#[source] E),
}

/// A snapshot of the pool's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Connections open: idle, in use, or being opened.
    pub size: usize,
    /// Connections open and not in use.
    pub idle: usize,
    /// Calls of `get` waiting for their turn.
    pub waiting: usize,
}

/// A pool of connections made by `M`. Cloning it is cheap: the clones
/// share the same connections.
pub struct Pool<M: Manager> {
    // Shared by every clone and every `Pooled`; add what you need.
    shared: Arc<Shared<M>>,
}

struct Shared<M: Manager> {
    manager: M,
    config: Config,
}

impl<M: Manager> Clone for Pool<M> {
    fn clone(&self) -> Self {
        Pool {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<M: Manager> Pool<M> {
    /// A pool that opens connections with `manager` when they are first
    /// needed (none are opened here).
    ///
    /// # Panics
    /// If `config.max_size` is 0: such a pool could never give a connection.
    pub fn new(manager: M, config: Config) -> Pool<M> {
        todo!("assert max_size > 0, then build the shared state")
    }

    /// A connection: an idle one that passes `is_valid` (the one returned
    /// last first), else a new one if fewer than `max_size` are open, else
    /// the first one returned after every earlier caller has been served.
    ///
    /// # Errors
    /// [`PoolError::Timeout`] when none is ready within `acquire_timeout`;
    /// [`PoolError::Create`] when the manager fails to open one.
    ///
    /// Cancel safe: dropping the future gives back whatever it held.
    pub async fn get(&self) -> Result<Pooled<M>, PoolError<M::Error>> {
        todo!(
            "wait your turn, then reuse an idle connection or open one, all within acquire_timeout"
        )
    }

    /// The pool's counters now.
    pub fn stats(&self) -> Stats {
        todo!()
    }
}

/// A connection on loan from the pool; use it through `*` (it derefs to
/// `M::Connection`). Dropping it gives it back.
pub struct Pooled<M: Manager> {
    // `Option`, so that `drop` can move the connection out.
    conn: Option<M::Connection>,
    shared: Arc<Shared<M>>,
}

impl<M: Manager> Pooled<M> {
    /// Closes this connection instead of giving it back, for a caller that
    /// knows it is broken (an I/O error, a protocol left mid-way). An
    /// associated function, `Pooled::discard(conn)`, so that it cannot
    /// clash with a method of the connection.
    pub fn discard(mut this: Pooled<M>) {
        todo!()
    }
}

impl<M: Manager> Deref for Pooled<M> {
    type Target = M::Connection;

    fn deref(&self) -> &M::Connection {
        self.conn
            .as_ref()
            .expect("a Pooled holds its connection until dropped")
    }
}

impl<M: Manager> DerefMut for Pooled<M> {
    fn deref_mut(&mut self) -> &mut M::Connection {
        self.conn
            .as_mut()
            .expect("a Pooled holds its connection until dropped")
    }
}

impl<M: Manager> Drop for Pooled<M> {
    fn drop(&mut self) {
        // Give the connection back (or close it, if `recycle` says so).
        // Never `todo!()` here: a panic inside a drop during a panic
        // aborts the whole test binary.
    }
}

impl<M: Manager> fmt::Debug for Pooled<M>
where
    M::Connection: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pooled").field(&self.conn).finish()
    }
}

/// Opens PostgreSQL connections with sqlx.
#[derive(Debug, Clone)]
pub struct PgManager {
    url: String,
}

impl PgManager {
    /// A manager for the database at `url` (`postgres://user@host:port/db`).
    pub fn new(url: impl Into<String>) -> PgManager {
        PgManager { url: url.into() }
    }
}

impl Manager for PgManager {
    type Connection = sqlx::PgConnection;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<sqlx::PgConnection, sqlx::Error> {
        todo!("sqlx::PgConnection::connect")
    }

    async fn is_valid(&self, conn: &mut sqlx::PgConnection) -> bool {
        todo!("one round trip")
    }

    fn recycle(&self, conn: &mut sqlx::PgConnection) -> bool {
        todo!()
    }
}
