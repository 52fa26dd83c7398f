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
//! # Design
//!
//! Two pieces of state, each with one job:
//!
//! - **`slots`, a semaphore of `max_size` permits.** A caller holds a
//!   permit from the moment it may use a connection until it gives the
//!   connection back: while it checks an idle one, while it opens a new one,
//!   and for as long as its [`Pooled`] lives. A permit is a right to one
//!   open connection, so the pool can never open more than `max_size`.
//!   Tokio's semaphore queues waiters in arrival order and hands a released
//!   permit straight to the oldest, so fairness (FIFO) comes for free, and a
//!   newcomer can never overtake a waiter. A waiter that is cancelled (its
//!   `get` future dropped by a timeout or a `select!`) leaves the queue
//!   without taking a permit with it.
//! - **`state`, a mutex over the idle list and the counters.** The idle
//!   list is a stack: the connection returned last is handed out first. It
//!   is the warmest (its server process and TCP window are in use), and the
//!   ones at the bottom can be closed by an idle timeout, which is how
//!   production pools shrink after a burst. The lock is never held across
//!   an `.await`, so it is a plain `std::sync::Mutex`.
//!
//! A connection that leaves the idle list, or is being opened, counts in
//! `size` before it is handed out. Until it is, a [`SizeGuard`] holds that
//! count: if the `get` future is dropped mid-way (the acquire timeout, a
//! caller's `select!`), or opening fails, the guard gives the count back.
//! Without it, every cancelled `get` would leak one slot of `size` and the
//! pool would report connections that do not exist.
//!
//! [`Pooled`]'s `Drop` asks the manager whether the connection may be
//! reused (`recycle`), pushes it onto the idle list, and only then releases
//! its permit (fields drop after `drop` runs): the waiter the permit wakes
//! finds the connection already there and takes it, instead of opening a
//! new one. `Drop` also runs while a task unwinds from a panic and when a
//! task is aborted, so a connection is never lost with its holder.

use std::fmt;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use sqlx::Connection as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
    shared: Arc<Shared<M>>,
}

struct Shared<M: Manager> {
    manager: M,
    config: Config,
    /// One permit per connection a caller may hold or open; see the module docs.
    slots: Arc<Semaphore>,
    state: Mutex<State<M::Connection>>,
}

struct State<C> {
    /// A stack: the last connection returned is the first handed out.
    idle: Vec<C>,
    size: usize,
    waiting: usize,
}

impl<M: Manager> Shared<M> {
    fn state(&self) -> MutexGuard<'_, State<M::Connection>> {
        // A panic never happens while the lock is held (no user code runs
        // under it), but a poisoned lock must not take the pool down.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
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
        assert!(config.max_size > 0, "a pool needs a max_size of at least 1");
        Pool {
            shared: Arc::new(Shared {
                manager,
                config,
                slots: Arc::new(Semaphore::new(config.max_size)),
                state: Mutex::new(State {
                    idle: Vec::with_capacity(config.max_size),
                    size: 0,
                    waiting: 0,
                }),
            }),
        }
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
        // One deadline for the whole call: a caller does not care whether
        // its time went on waiting, on a ping, or on a connect that hangs.
        tokio::time::timeout(self.shared.config.acquire_timeout, self.checkout())
            .await
            .unwrap_or(Err(PoolError::Timeout))
    }

    async fn checkout(&self) -> Result<Pooled<M>, PoolError<M::Error>> {
        let permit = {
            let _waiting = Waiting::new(&self.shared);
            Arc::clone(&self.shared.slots)
                .acquire_owned()
                .await
                .expect("the pool never closes its semaphore")
        };

        // Reuse an idle connection if one is still good. A broken one is
        // closed, and the next one tried: a database restart breaks every
        // idle connection at once, and the caller should not pay one error
        // per dead connection.
        loop {
            let Some(mut conn) = self.shared.state().idle.pop() else {
                break;
            };
            let counted = SizeGuard(&self.shared);
            if self.shared.manager.is_valid(&mut conn).await {
                counted.keep();
                return Ok(Pooled::new(&self.shared, conn, permit));
            }
            // `counted` drops here with `conn`: one connection fewer.
        }

        // Nothing idle, and our permit says there is room: open one. It
        // counts in `size` while it is being opened, so `stats()` shows
        // the connect in flight.
        self.shared.state().size += 1;
        let counted = SizeGuard(&self.shared);
        let conn = self
            .shared
            .manager
            .create()
            .await
            .map_err(PoolError::Create)?;
        counted.keep();
        Ok(Pooled::new(&self.shared, conn, permit))
    }

    /// The pool's counters now.
    pub fn stats(&self) -> Stats {
        let state = self.shared.state();
        Stats {
            size: state.size,
            idle: state.idle.len(),
            waiting: state.waiting,
        }
    }
}

impl<M: Manager> fmt::Debug for Pool<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("config", &self.shared.config)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Counts one caller in `waiting` for as long as it lives, so a waiter
/// that times out or is cancelled is counted out too.
struct Waiting<'a, M: Manager>(&'a Shared<M>);

impl<'a, M: Manager> Waiting<'a, M> {
    fn new(shared: &'a Shared<M>) -> Self {
        shared.state().waiting += 1;
        Waiting(shared)
    }
}

impl<M: Manager> Drop for Waiting<'_, M> {
    fn drop(&mut self) {
        self.0.state().waiting -= 1;
    }
}

/// One connection in `size` that is not handed out yet: dropped, it takes
/// itself out of the count; [`SizeGuard::keep`] hands the count over to a
/// [`Pooled`].
struct SizeGuard<'a, M: Manager>(&'a Shared<M>);

impl<M: Manager> SizeGuard<'_, M> {
    fn keep(self) {
        std::mem::forget(self);
    }
}

impl<M: Manager> Drop for SizeGuard<'_, M> {
    fn drop(&mut self) {
        self.0.state().size -= 1;
    }
}

/// A connection on loan from the pool; use it through `*` (it derefs to
/// `M::Connection`). Dropping it gives it back.
pub struct Pooled<M: Manager> {
    // Always `Some` until `drop` or `discard` takes it.
    conn: Option<M::Connection>,
    shared: Arc<Shared<M>>,
    // Declared last, so it is released after `drop` has put the connection
    // back: the waiter it wakes finds the connection idle.
    _permit: OwnedSemaphorePermit,
}

impl<M: Manager> Pooled<M> {
    fn new(shared: &Arc<Shared<M>>, conn: M::Connection, permit: OwnedSemaphorePermit) -> Self {
        Pooled {
            conn: Some(conn),
            shared: Arc::clone(shared),
            _permit: permit,
        }
    }

    /// Closes this connection instead of giving it back, for a caller that
    /// knows it is broken (an I/O error, a protocol left mid-way). An
    /// associated function, `Pooled::discard(conn)`, so that it cannot
    /// clash with a method of the connection.
    pub fn discard(mut this: Pooled<M>) {
        if let Some(conn) = this.conn.take() {
            this.shared.state().size -= 1;
            drop(conn);
        }
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
        let Some(mut conn) = self.conn.take() else {
            return; // discarded
        };
        if self.shared.manager.recycle(&mut conn) {
            self.shared.state().idle.push(conn);
        } else {
            self.shared.state().size -= 1;
            // Closed outside the lock: closing may take a system call.
            drop(conn);
        }
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
        sqlx::PgConnection::connect(&self.url).await
    }

    async fn is_valid(&self, conn: &mut sqlx::PgConnection) -> bool {
        // One round trip: a backend that was terminated, or a server that
        // restarted, fails it. A pool that skips this hands out a dead
        // connection after every restart, and the caller's first query
        // fails.
        conn.ping().await.is_ok()
    }

    fn recycle(&self, _conn: &mut sqlx::PgConnection) -> bool {
        // sqlx rolls back a transaction left open when its `Transaction` is
        // dropped, so a returned connection is clean; whether it is still
        // alive only a round trip can tell, and that is `is_valid`'s job.
        true
    }
}
