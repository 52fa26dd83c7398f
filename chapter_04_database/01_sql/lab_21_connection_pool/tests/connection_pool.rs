//! Grader for lab 21: a connection pool.
//!
//! Tests 01-16 drive the pool with a counting manager: its connections are
//! numbered, it counts how many are open (a connection is closed when the
//! pool drops it), and a test can make `create` fail, make it wait, or
//! mark a connection broken. They run under `tokio::time::pause()`, so a
//! timeout is checked in paused time: exact, and instant. A call that hangs
//! fails at once too, since paused time jumps to the next deadline when
//! every task is idle.
//!
//! Tests 20-22 use `PgManager` against a real PostgreSQL (labkit's
//! throwaway server, or `DATABASE_URL`): backends counted in
//! `pg_stat_activity`, one terminated from outside, and the whole database
//! cut off and back through labkit's fault proxy.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use connection_pool::{Config, Manager, PgManager, Pool, PoolError, Pooled, Stats};
use futures::FutureExt;
use labkit::Report;
use labkit::faults::{Fault, FaultProxy};
use labkit::report::same;
use labkit::services::{self, TestDb};
use labkit::wait::{eventually, expect_ok, within_async};
use sqlx::{Connection, PgConnection};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// The deadline on each call of the pool (paused time for tests 01-16).
const CALL: Duration = Duration::from_secs(30);
/// The acquire timeout of the counting tests: long, so that only a test
/// that waits for it sees it.
const ACQUIRE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// The counting manager.

#[derive(Debug)]
struct TestError(u64);

impl std::fmt::Display for TestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "test manager: create number {} was told to fail", self.0)
    }
}

impl std::error::Error for TestError {}

/// A fake connection: a number, and a flag the test sets to say "broken".
#[derive(Debug)]
struct Conn {
    id: u64,
    broken: bool,
    counts: Arc<Counts>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.counts.open.fetch_sub(1, Ordering::SeqCst);
        self.counts.closed.lock().unwrap().push(self.id);
    }
}

#[derive(Debug, Default)]
struct Counts {
    /// Connections created and not yet dropped.
    open: AtomicUsize,
    /// The most ever open at once.
    peak: AtomicUsize,
    /// Calls of `create` that returned a connection.
    created: AtomicU64,
    /// Calls of `create` begun (including failed and unfinished ones).
    create_calls: AtomicU64,
    /// Ids of the connections dropped, in order.
    closed: Mutex<Vec<u64>>,
}

#[derive(Clone)]
struct Counting {
    counts: Arc<Counts>,
    /// The next this many calls of `create` fail.
    fail_next: Arc<AtomicUsize>,
    /// Ids that `is_valid` calls broken.
    invalid: Arc<Mutex<HashSet<u64>>>,
    /// When set, each `create` takes a permit first (the test holds them).
    gate: Option<Arc<Semaphore>>,
}

impl Counting {
    fn new() -> Counting {
        Counting {
            counts: Arc::default(),
            fail_next: Arc::default(),
            invalid: Arc::default(),
            gate: None,
        }
    }

    /// A manager whose `create` waits until the test adds permits to the
    /// returned semaphore.
    fn gated() -> (Counting, Arc<Semaphore>) {
        let gate = Arc::new(Semaphore::new(0));
        let mut m = Counting::new();
        m.gate = Some(Arc::clone(&gate));
        (m, gate)
    }

    fn open(&self) -> usize {
        self.counts.open.load(Ordering::SeqCst)
    }

    fn peak(&self) -> usize {
        self.counts.peak.load(Ordering::SeqCst)
    }

    fn created(&self) -> u64 {
        self.counts.created.load(Ordering::SeqCst)
    }

    fn create_calls(&self) -> u64 {
        self.counts.create_calls.load(Ordering::SeqCst)
    }

    fn closed(&self) -> Vec<u64> {
        self.counts.closed.lock().unwrap().clone()
    }
}

impl Manager for Counting {
    type Connection = Conn;
    type Error = TestError;

    async fn create(&self) -> Result<Conn, TestError> {
        let n = self.counts.create_calls.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(gate) = &self.gate {
            gate.acquire()
                .await
                .expect("the gate is never closed")
                .forget();
        }
        if self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(TestError(n));
        }
        let id = self.counts.created.fetch_add(1, Ordering::SeqCst) + 1;
        let open = self.counts.open.fetch_add(1, Ordering::SeqCst) + 1;
        self.counts.peak.fetch_max(open, Ordering::SeqCst);
        Ok(Conn {
            id,
            broken: false,
            counts: Arc::clone(&self.counts),
        })
    }

    async fn is_valid(&self, conn: &mut Conn) -> bool {
        !self.invalid.lock().unwrap().contains(&conn.id)
    }

    fn recycle(&self, conn: &mut Conn) -> bool {
        !conn.broken
    }
}

type TestPool = Pool<Counting>;
type Held = Pooled<Counting>;

fn pool(max_size: usize) -> (TestPool, Counting) {
    let m = Counting::new();
    (with(m.clone(), max_size), m)
}

fn with(m: Counting, max_size: usize) -> TestPool {
    Pool::new(
        m,
        Config {
            max_size,
            acquire_timeout: ACQUIRE,
        },
    )
}

fn hint_for(e: &PoolError<TestError>) -> &'static str {
    match e {
        PoolError::Timeout => {
            "a timeout where a connection was free: is one still counted as in use after it came back (size or a permit not given back on drop, discard, a failed create, or a cancelled get)?"
        }
        PoolError::Create(_) => {
            "the manager was not told to fail this create: do you call create more often than needed, or report an old error?"
        }
    }
}

/// `pool.get()`, which must succeed.
async fn get(pool: &TestPool, what: &str) -> Held {
    expect_ok(CALL, what, hint_for, pool.get()).await
}

/// Starts `pool.get()` on its own task.
fn spawn_get(pool: &TestPool) -> tokio::task::JoinHandle<Result<Held, PoolError<TestError>>> {
    let pool = pool.clone();
    tokio::spawn(async move { pool.get().await })
}

/// Waits until `stats().waiting` is `n`: the spawned calls are queued.
async fn waiting(pool: &TestPool, n: usize, did: &str) {
    let p = pool.clone();
    eventually(
        CALL,
        &format!("stats().waiting to be {n} after {did}"),
        "does get count itself in `waiting` while it waits for its turn (and out again when it has one, times out, or is cancelled)?",
        || {
            let s = p.stats();
            async move {
                if s.waiting == n {
                    Ok(())
                } else {
                    Err(format!("{s:?}"))
                }
            }
        },
    )
    .await;
}

/// Awaits a spawned `get`, which must give a connection.
async fn joined(
    task: tokio::task::JoinHandle<Result<Held, PoolError<TestError>>>,
    what: &str,
) -> Held {
    match within_async(CALL, what, task).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => Report::new(format!("called {what}"))
            .expected("Ok(a connection)")
            .got(format!("Err({e:?}): {e}"))
            .hint(hint_for(&e))
            .fail(),
        Err(e) => Report::new(format!("called {what} on its own task"))
            .expected("Ok(a connection)")
            .got(format!("the task failed: {e}"))
            .fail(),
    }
}

fn stats(size: usize, idle: usize, waiting: usize) -> Stats {
    Stats {
        size,
        idle,
        waiting,
    }
}

/// Polls `get()` once: a pool that has a free connection gives it at once.
fn now(pool: &TestPool) -> Option<Result<Held, PoolError<TestError>>> {
    pool.get().now_or_never()
}

// ---------------------------------------------------------------------------
// The pool's rules, with the counting manager.

// A connection given back is reused, not opened again: the point of a pool.
#[tokio::test(start_paused = true)]
async fn test_01_a_returned_connection_is_reused() {
    let (pool, m) = pool(4);
    same(
        "made a pool of max_size 4, then called stats()",
        stats(0, 0, 0),
        pool.stats(),
        "a new pool opens nothing until the first get",
    );
    let a = get(&pool, "pool.get()").await;
    same(
        "called get() on a new pool, then stats()",
        (1, stats(1, 0, 0)),
        (a.id, pool.stats()),
        "the first get opens connection 1 (size counts connections open, idle those not in use)",
    );
    drop(a);
    same(
        "dropped the connection, then called stats()",
        stats(1, 1, 0),
        pool.stats(),
        "does dropping a Pooled put the connection back on the idle list?",
    );
    let b = get(&pool, "pool.get() after the first connection came back").await;
    same(
        "called get() again, read the connection's id and the manager's count of creates",
        (1, 1),
        (b.id, m.created()),
        "an idle connection must be reused before a new one is opened",
    );
    drop(b);
    let zero = std::panic::catch_unwind(|| {
        Pool::new(
            Counting::new(),
            Config {
                max_size: 0,
                acquire_timeout: ACQUIRE,
            },
        )
    });
    Report::new("called Pool::new with max_size 0")
        .expected("a panic (the README: such a pool could never give a connection)")
        .got("a pool")
        .hint("assert! the size in Pool::new")
        .check(zero.is_err());
}

// max_size is a hard limit: the (max+1)-th caller waits, and nothing more
// is opened for it.
#[tokio::test(start_paused = true)]
async fn test_02_never_more_than_max_size_open() {
    let (pool, m) = pool(3);
    let mut held = Vec::new();
    for i in 1..=3 {
        held.push(get(&pool, &format!("pool.get() number {i} of 3")).await);
    }
    let ids: HashSet<u64> = held.iter().map(|c| c.id).collect();
    same(
        "held 3 connections of a pool of max_size 3",
        3,
        ids.len(),
        "each caller holding a connection needs its own",
    );
    let fourth = spawn_get(&pool);
    waiting(&pool, 1, "a 4th get() with all 3 in use").await;
    same(
        "held 3 of 3 and started a 4th get(); counted open connections and stats()",
        (3, stats(3, 0, 1)),
        (m.open(), pool.stats()),
        "max_size counts every open connection: with all in use, a caller waits instead of opening one more",
    );
    drop(held);
    let c = joined(fourth, "the 4th get(), after the 3 were returned").await;
    same(
        "returned the 3 connections; read the waiter's connection and the peak of open connections",
        (true, 3),
        (ids.contains(&c.id), m.peak()),
        "the waiter must get one of the returned connections, not a new one",
    );
}

// A pool of one is the degenerate case: the second caller waits for the
// first, every time.
#[tokio::test(start_paused = true)]
async fn test_03_a_pool_of_one_serialises_its_callers() {
    let (pool, m) = pool(1);
    for round in 1..=3 {
        let a = get(&pool, &format!("pool.get() in round {round}")).await;
        let next = spawn_get(&pool);
        waiting(&pool, 1, &format!("a second get() in round {round}")).await;
        drop(a);
        let b = joined(next, &format!("the second get() of round {round}")).await;
        same(
            &format!(
                "round {round}: held the only connection, a second caller waited, the first returned it"
            ),
            (1, 1, 1),
            (b.id, m.created(), m.peak()),
            "with max_size 1 there is one connection, passed from caller to caller",
        );
    }
}

// The caller that waits gets the first connection returned, at once: no
// new connection is opened while one comes back.
#[tokio::test(start_paused = true)]
async fn test_04_a_waiter_gets_the_first_connection_returned() {
    let (pool, m) = pool(2);
    let a = get(&pool, "pool.get() (a)").await;
    let b = get(&pool, "pool.get() (b)").await;
    let waiter = spawn_get(&pool);
    waiting(&pool, 1, "a 3rd get() with both in use").await;
    let b_id = b.id;
    drop(b);
    let c = joined(waiter, "the 3rd get(), after b was returned").await;
    same(
        "held a and b of max_size 2, started a 3rd get(), returned b",
        (b_id, 2),
        (c.id, m.created()),
        "the waiter gets the connection that was returned (no new one is opened: the pool is full)",
    );
    drop(a);
}

// Waiters are served in the order they came (FIFO), and a newcomer never
// overtakes them: under load, no caller starves.
#[tokio::test(start_paused = true)]
async fn test_05_waiters_are_served_in_arrival_order() {
    let (pool, _m) = pool(1);
    let held = get(&pool, "pool.get()").await;
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..5 {
        let (p, order) = (pool.clone(), Arc::clone(&order));
        tasks.push(tokio::spawn(async move {
            let conn = p.get().await;
            order.lock().unwrap().push(i);
            // Keep it across a yield, so that the next waiter must wait
            // for this drop and not for the scheduler.
            tokio::task::yield_now().await;
            drop(conn);
        }));
        waiting(&pool, i + 1, &format!("starting waiter {i}")).await;
    }
    drop(held);
    same(
        "with 5 waiters queued, returned the only connection and called get() once more at once",
        true,
        now(&pool).is_none(),
        "a newcomer must queue behind the waiters: does get take an idle connection before waiting its turn?",
    );
    for t in tasks {
        within_async(CALL, "a waiter task", t)
            .await
            .expect("a waiter panicked");
    }
    same(
        "started waiters 0 to 4 one after another on a full pool of 1, then returned the connection",
        vec![0, 1, 2, 3, 4],
        order.lock().unwrap().clone(),
        "waiters must be served first come, first served (a FIFO queue; tokio's Semaphore is fair)",
    );
}

// Idle connections are handed out most recently returned first (LIFO):
// the warm one is reused, and the cold ones can age out.
#[tokio::test(start_paused = true)]
async fn test_06_idle_connections_are_reused_last_in_first_out() {
    let (pool, _m) = pool(3);
    let a = get(&pool, "pool.get() (1)").await;
    let b = get(&pool, "pool.get() (2)").await;
    let c = get(&pool, "pool.get() (3)").await;
    drop(b);
    drop(a);
    drop(c);
    let mut got = Vec::new();
    let mut held = Vec::new();
    for i in 1..=3 {
        let conn = get(
            &pool,
            &format!("pool.get() number {i} after returning them"),
        )
        .await;
        got.push(conn.id);
        held.push(conn);
    }
    same(
        "took connections 1, 2, 3, returned 2, then 1, then 3, and took three again",
        vec![3, 1, 2],
        got,
        "the README's rule: the connection returned last is handed out first (a stack, not a queue)",
    );
}

// The acquire timeout: with every connection in use, get fails with
// Timeout after exactly acquire_timeout (paused time), and the pool works
// on once a connection is back.
#[tokio::test(start_paused = true)]
async fn test_07_get_times_out_when_every_connection_stays_in_use() {
    let m = Counting::new();
    let timeout = Duration::from_secs(2);
    let pool = Pool::new(
        m.clone(),
        Config {
            max_size: 1,
            acquire_timeout: timeout,
        },
    );
    let held = expect_ok(CALL, "pool.get()", hint_for, pool.get()).await;
    let start = Instant::now();
    let got = within_async(
        CALL,
        "pool.get() with the only connection in use",
        pool.get(),
    )
    .await;
    let waited = start.elapsed();
    let ok = matches!(got, Err(PoolError::Timeout)) && waited >= timeout && waited < timeout * 2;
    Report::new("held the only connection of a pool with acquire_timeout 2 s, called get()")
        .expected("Err(PoolError::Timeout) after 2 s (paused time, so exactly)")
        .got(format!("{:?} after {waited:?}", got.map(|c| c.id)))
        .hint("wrap the whole wait in tokio::time::timeout(acquire_timeout, ...)")
        .check(ok);
    same(
        "after the timed-out get(), called stats()",
        stats(1, 0, 0),
        pool.stats(),
        "a caller that timed out is no longer waiting",
    );
    drop(held);
    let again = expect_ok(
        CALL,
        "pool.get() once the connection was returned",
        hint_for,
        pool.get(),
    )
    .await;
    same(
        "returned the connection and called get() again",
        1,
        again.id,
        "a timeout must leave nothing behind",
    );
}

// The timeout bounds the whole call: a connect that hangs (a database
// that accepts and never answers) is a Timeout too, and leaves no slot
// taken.
#[tokio::test(start_paused = true)]
async fn test_08_the_timeout_covers_opening_a_connection() {
    let (m, gate) = Counting::gated();
    let pool = with(m.clone(), 1);
    let start = Instant::now();
    let got = within_async(
        CALL,
        "pool.get() with a create that never finishes",
        pool.get(),
    )
    .await;
    let waited = start.elapsed();
    let ok = matches!(got, Err(PoolError::Timeout)) && waited >= ACQUIRE && waited < ACQUIRE * 2;
    Report::new("called get() on an empty pool whose manager's create never finishes")
        .expected(format!("Err(PoolError::Timeout) after {ACQUIRE:?}"))
        .got(format!("{:?} after {waited:?}", got.map(|c| c.id)))
        .hint("does acquire_timeout cover the create too, and not only the wait for a turn?")
        .check(ok);
    same(
        "after the get() whose create timed out, called stats()",
        stats(0, 0, 0),
        pool.stats(),
        "a connection that was never opened is not in size: give the count back when the get is dropped mid-create",
    );
    gate.add_permits(1);
    let c = get(&pool, "pool.get() once create works").await;
    same(
        "let create finish and called get() again",
        (1, stats(1, 0, 0)),
        (c.id, pool.stats()),
        "the slot of the timed-out create must be free again",
    );

    // One deadline for the whole call: time spent waiting for a turn is
    // not given again for opening.
    let start = Instant::now();
    let waiter = spawn_get(&pool);
    waiting(&pool, 1, "a second get() on a full pool of 1").await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    Pooled::discard(c);
    let got = within_async(
        CALL,
        "the get() that waited 6 s, then had to open a connection",
        waiter,
    )
    .await
    .expect("the task ran");
    let waited = start.elapsed();
    let ok = matches!(got, Err(PoolError::Timeout))
        && waited >= ACQUIRE
        && waited < ACQUIRE + Duration::from_secs(1);
    Report::new("held the only connection; a get() waited 6 s for it, then the holder discarded it and the get() had to open one, with create never finishing")
        .expected(format!("Err(PoolError::Timeout) {ACQUIRE:?} after the get() started"))
        .got(format!("{:?} after {waited:?}", got.map(|c| c.id)))
        .hint("one tokio::time::timeout around all of get, not one per phase (which would allow 10 s of waiting plus 10 s of opening)")
        .check(ok);
}

// A waiter that is cancelled (its task aborted, its future dropped by a
// select!) leaves the queue: the next connection returned is not lost on
// it.
#[tokio::test(start_paused = true)]
async fn test_09_a_cancelled_waiter_leaves_the_queue() {
    let (pool, _m) = pool(1);
    let held = get(&pool, "pool.get()").await;
    let waiter = spawn_get(&pool);
    waiting(&pool, 1, "a second get() on a full pool of 1").await;
    waiter.abort();
    let _ = within_async(CALL, "the aborted waiter's task", waiter).await;
    same(
        "aborted the waiting get(), then called stats()",
        stats(1, 0, 0),
        pool.stats(),
        "a cancelled get is no longer waiting: count it out when its future is dropped",
    );
    drop(held);
    let next = now(&pool);
    same(
        "returned the connection, then polled a new get() once",
        Some(Ok(1)),
        next.map(|r| r.map(|c| c.id).map_err(|e| e.to_string())),
        "the connection must go to a live caller: was it handed to the cancelled waiter and lost?",
    );
}

// A get cancelled while its connection is being opened gives its slot
// back: cancelled gets must not shrink the pool.
#[tokio::test(start_paused = true)]
async fn test_10_a_get_cancelled_while_opening_gives_its_slot_back() {
    let (m, gate) = Counting::gated();
    let pool = with(m.clone(), 1);
    for round in 1..=3 {
        let task = spawn_get(&pool);
        let m2 = m.clone();
        eventually(
            CALL,
            &format!("create to be called (round {round})"),
            "does get call the manager's create when nothing is idle?",
            || {
                let calls = m2.create_calls();
                async move {
                    if calls == round {
                        Ok(())
                    } else {
                        Err(format!("{calls} calls of create"))
                    }
                }
            },
        )
        .await;
        task.abort();
        let _ = within_async(CALL, "the aborted get's task", task).await;
        same(
            &format!(
                "round {round}: aborted a get() while its create was in flight, then called stats()"
            ),
            stats(0, 0, 0),
            pool.stats(),
            "size counts a connection being opened; when the get is dropped, the count must go back (a guard with a Drop)",
        );
    }
    gate.add_permits(1);
    let c = get(
        &pool,
        "pool.get() after 3 cancelled opens, with create working",
    )
    .await;
    same(
        "after 3 gets cancelled mid-create on a pool of 1, called get() with create working",
        stats(1, 0, 0),
        pool.stats(),
        "each cancelled get must give back its slot, or a pool of 1 is full of nothing",
    );
    drop(c);
}

// A connection held by a task that panics, or is aborted, goes back to
// the pool: Drop runs during unwinding.
#[tokio::test(start_paused = true)]
async fn test_11_a_connection_comes_back_from_a_panicking_or_aborted_task() {
    labkit::report::quiet_panics();
    let (pool, m) = pool(1);
    let p = pool.clone();
    let task = tokio::spawn(async move {
        let conn = p.get().await;
        assert!(conn.is_ok(), "got no connection");
        panic!("the holder panics while holding its connection");
    });
    let joined = within_async(CALL, "a task that takes a connection and panics", task).await;
    Report::new("ran a task that takes a connection and panics")
        .expected("the task to panic")
        .got(format!("{joined:?}"))
        .check(joined.is_err());
    same(
        "after the holder panicked, called stats()",
        stats(1, 1, 0),
        pool.stats(),
        "Drop of Pooled runs during unwinding: it must put the connection back",
    );
    let (p, gate) = (pool.clone(), Arc::new(Semaphore::new(0)));
    let g = Arc::clone(&gate);
    let task = tokio::spawn(async move {
        let _conn = p.get().await;
        let _ = g.acquire().await; // waits until aborted
    });
    let pool2 = pool.clone();
    eventually(
        CALL,
        "the holder task to take the connection",
        "get on a pool with an idle connection should finish at once",
        || {
            let s = pool2.stats();
            async move {
                if s.idle == 0 {
                    Ok(())
                } else {
                    Err(format!("{s:?}"))
                }
            }
        },
    )
    .await;
    task.abort();
    let _ = within_async(CALL, "the aborted holder task", task).await;
    let c = get(&pool, "pool.get() after the holder was aborted").await;
    same(
        "a task holding the connection was aborted; called get() and read the id and creates",
        (1, 1),
        (c.id, m.created()),
        "an aborted task drops its Pooled too: the connection must come back",
    );
}

// A connection recycle() refuses is closed, and never handed out again;
// its slot goes to a new connection.
#[tokio::test(start_paused = true)]
async fn test_12_a_connection_recycle_refuses_is_closed() {
    let (pool, m) = pool(2);
    let mut a = get(&pool, "pool.get()").await;
    a.broken = true;
    drop(a);
    same(
        "marked connection 1 broken (recycle says false), dropped it; read stats() and which connections were closed",
        (stats(0, 0, 0), vec![1]),
        (pool.stats(), m.closed()),
        "on drop, ask the manager's recycle; if it says false, close the connection (drop it) and count it out of size",
    );
    let b = get(&pool, "pool.get() after the broken one was dropped").await;
    same(
        "called get() after connection 1 was refused by recycle",
        2,
        b.id,
        "a refused connection must never be handed out again",
    );
}

// On checkout, an idle connection that fails is_valid is closed and the
// next one is tried, until one passes or a new one is opened.
#[tokio::test(start_paused = true)]
async fn test_13_idle_connections_that_fail_is_valid_are_closed_and_skipped() {
    let (pool, m) = pool(3);
    let a = get(&pool, "pool.get() (1)").await;
    let b = get(&pool, "pool.get() (2)").await;
    let c = get(&pool, "pool.get() (3)").await;
    drop(a);
    drop(b);
    drop(c);
    m.invalid.lock().unwrap().extend([3, 2]);
    let got = get(&pool, "pool.get() with idle 1, 2, 3 and 3, 2 broken").await;
    same(
        "returned 1, 2, 3; made is_valid fail for 3 and 2; called get(); read its id, stats() and the closed ids",
        (1, stats(1, 0, 0), vec![3, 2]),
        (got.id, pool.stats(), m.closed()),
        "check each idle connection with is_valid before handing it out; close those that fail and try the next",
    );
    m.invalid.lock().unwrap().insert(1);
    drop(got);
    let fresh = get(&pool, "pool.get() with the only idle connection broken").await;
    same(
        "made connection 1 fail is_valid too, returned it and called get()",
        (4, stats(1, 0, 0), 1),
        (fresh.id, pool.stats(), m.open()),
        "with no good idle connection left, open a new one",
    );
}

// A failed create is returned as PoolError::Create at once, and frees its
// slot: a database that refuses connections for a while does not leave the
// pool stuck.
#[tokio::test(start_paused = true)]
async fn test_14_a_failed_create_is_an_error_and_frees_its_slot() {
    let (pool, m) = pool(2);
    m.fail_next.store(3, Ordering::SeqCst);
    for i in 1..=3 {
        let start = Instant::now();
        let got = within_async(
            CALL,
            &format!("pool.get() with create failing ({i} of 3)"),
            pool.get(),
        )
        .await;
        let ok = matches!(got, Err(PoolError::Create(TestError(n))) if n == i)
            && start.elapsed() < ACQUIRE;
        Report::new(format!("called get() on a pool of 2 whose manager's create fails (call {i} of 3)"))
            .expected(format!("Err(PoolError::Create(TestError({i}))) at once"))
            .got(format!("{:?} after {:?}", got.map(|c| c.id), start.elapsed()))
            .hint("return the manager's error as PoolError::Create, and give back the slot: no retry loop until the timeout")
            .check(ok);
    }
    same(
        "after 3 failed creates, called stats()",
        stats(0, 0, 0),
        pool.stats(),
        "a connection that failed to open is not in size",
    );
    let a = get(&pool, "pool.get() with create working again").await;
    let b = get(&pool, "a second pool.get()").await;
    same(
        "with create working again, held 2 connections of a pool of 2",
        (stats(2, 0, 0), 2),
        (pool.stats(), m.open()),
        "every failed create must give its slot back",
    );
    drop((a, b));
}

// Pooled::discard closes a connection the caller knows is broken, and its
// slot is free at once.
#[tokio::test(start_paused = true)]
async fn test_15_discard_closes_the_connection_and_frees_its_slot() {
    let (pool, m) = pool(1);
    let a = get(&pool, "pool.get()").await;
    let waiter = spawn_get(&pool);
    waiting(&pool, 1, "a second get() on a full pool of 1").await;
    Pooled::discard(a);
    let b = joined(waiter, "the waiting get() after Pooled::discard").await;
    same(
        "discarded the only connection while a get() waited; read the waiter's id and the closed ids",
        (2, vec![1]),
        (b.id, m.closed()),
        "discard closes the connection (never back to idle) and frees its slot for a new one",
    );
    drop(b);
    same(
        "returned the new connection, then called stats()",
        stats(1, 1, 0),
        pool.stats(),
        "size counts only the connections still open",
    );
}

// Many tasks on many threads, taking, discarding and returning: the limit
// holds, every task finishes, and the counters end consistent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_16_the_limit_holds_under_contention_on_many_threads() {
    let (pool, m) = pool(4);
    let mut tasks = Vec::new();
    for t in 0..64u64 {
        let p = pool.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50u64 {
                let conn = p.get().await.map_err(|e| e.to_string())?;
                if (t + i) % 3 == 0 {
                    tokio::task::yield_now().await;
                }
                if (t * 7 + i) % 10 == 0 {
                    Pooled::discard(conn);
                }
            }
            Ok::<(), String>(())
        }));
    }
    for (t, task) in tasks.into_iter().enumerate() {
        let r = within_async(
            Duration::from_secs(60),
            &format!("task {t} of 64 (50 gets each)"),
            task,
        )
        .await;
        if let Ok(Err(e)) | Err(e) = r.map_err(|e| e.to_string()) {
            Report::new(
                "ran 64 tasks on 4 threads, each taking a connection 50 times from a pool of 4",
            )
            .expected("every get to succeed")
            .got(format!("task {t}: {e}"))
            .hint("is a slot lost on some path (discard, a race between drop and a waiter)?")
            .fail();
        }
    }
    let s = pool.stats();
    same(
        "ran 64 tasks x 50 gets on a pool of 4 (1 in 10 discarded); read the peak open, stats(), and the open count",
        (true, s.size, stats(s.size, s.size, 0)),
        (m.peak() <= 4, m.open(), s),
        "never more than max_size open at once; at rest every open connection is idle and counted in size",
    );
}

// The limit holds while connections are being opened: five callers at
// once on an empty pool of 2 start two creates, not five.
#[tokio::test(start_paused = true)]
async fn test_17_concurrent_opens_stay_within_max_size() {
    let (m, gate) = Counting::gated();
    let pool = with(m.clone(), 2);
    let tasks: Vec<_> = (0..5).map(|_| spawn_get(&pool)).collect();
    // With the clock paused, a sleep ends only when every task is idle:
    // all five have run as far as they can.
    tokio::time::sleep(Duration::from_millis(1)).await;
    same(
        "started 5 get()s at once on an empty pool of 2 whose create waits, let every task run until idle; counted the creates begun and read stats()",
        (2, stats(2, 0, 3)),
        (m.create_calls(), pool.stats()),
        "a connection being opened counts against max_size (and in size): with two opens in flight, the other three callers wait their turn",
    );
    gate.add_permits(5);
    for (i, task) in tasks.into_iter().enumerate() {
        drop(joined(task, &format!("get() {i} of the 5, once create may finish")).await);
    }
    same(
        "let the creates finish and every caller take and return a connection; counted creates and the peak open",
        (2, 2),
        (m.created(), m.peak()),
        "the three that waited must get the two connections opened for the first two",
    );
}

// ---------------------------------------------------------------------------
// PgManager against a real PostgreSQL.

/// The backend pid of a pooled PostgreSQL connection.
async fn backend_pid(conn: &mut PgConnection, what: &str) -> i32 {
    let q = sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()").fetch_one(conn);
    match within_async(CALL, what, q).await {
        Ok(pid) => pid,
        Err(e) => Report::new(format!("ran SELECT pg_backend_pid() on {what}"))
            .got(format!("{e}"))
            .hint("is the connection PgManager made open and ready for queries?")
            .fail(),
    }
}

/// A connection of the test's own, outside the pool.
async fn side(db: &TestDb) -> PgConnection {
    match within_async(CALL, "a side connection", PgConnection::connect(&db.url)).await {
        Ok(c) => c,
        Err(e) => Report::new(format!("connected to {} outside the pool", db.url))
            .got(e)
            .fail(),
    }
}

/// Backends connected to the test's database, other than `side`'s own.
async fn backends(side: &mut PgConnection, db: &TestDb) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() ORDER BY pid",
    )
    .bind(&db.name)
    .fetch_all(side)
    .await
    .expect("pg_stat_activity is readable")
}

fn pg_pool(url: &str, max_size: usize, acquire_timeout: Duration) -> Pool<PgManager> {
    Pool::new(
        PgManager::new(url),
        Config {
            max_size,
            acquire_timeout,
        },
    )
}

fn pg_hint(e: &PoolError<sqlx::Error>) -> &'static str {
    match e {
        PoolError::Timeout => "is a connection still counted in use after it came back?",
        PoolError::Create(_) => "does PgManager::create connect to the URL it was given?",
    }
}

/// Runs `body` on a runtime of its own with a fresh database; the database
/// is dropped after the runtime, since dropping it blocks.
fn pg_test(body: impl AsyncFnOnce(&TestDb)) {
    let db = services::postgres();
    let rt = labkit::wait::runtime(0);
    rt.block_on(body(&db));
    drop(rt);
}

async fn pg_get(pool: &Pool<PgManager>, what: &str) -> Pooled<PgManager> {
    expect_ok(CALL, what, pg_hint, pool.get()).await
}

// A pool of 3 opens 3 PostgreSQL backends at most (seen in
// pg_stat_activity), and reuses them.
#[test]
fn test_20_postgres_sees_at_most_max_size_backends() {
    pg_test(async |db| {
        let pool = pg_pool(&db.url, 3, ACQUIRE);
        let mut held = Vec::new();
        let mut pids = Vec::new();
        for i in 1..=3 {
            let mut c = pg_get(&pool, &format!("pool.get() number {i} of 3")).await;
            pids.push(backend_pid(&mut c, &format!("pooled connection {i}")).await);
            held.push(c);
        }
        pids.sort();
        let fourth = tokio::spawn({
            let p = pool.clone();
            async move { p.get().await.map(|_| ()) }
        });
        let mut side = side(db).await;
        let seen = backends(&mut side, db).await;
        same(
            "held 3 connections of a PostgreSQL pool of 3, started a 4th get(), listed the database's backends in pg_stat_activity",
            pids.clone(),
            seen,
            "each pooled connection is one server process; a 4th caller must wait, not connect",
        );
        drop(held);
        within_async(CALL, "the 4th get() once the 3 were returned", fourth)
            .await
            .expect("the task ran")
            .unwrap_or_else(|e| Report::new("waited for the 4th get()").got(e).fail());
        let mut later = HashSet::new();
        for i in 1..=10 {
            let mut c = pg_get(&pool, &format!("pool.get() number {i} of 10 in a row")).await;
            later.insert(backend_pid(&mut c, &format!("reused connection {i}")).await);
        }
        let all: HashSet<i32> = pids.iter().copied().collect();
        same(
            "took and returned a connection 10 times; collected the backend pids",
            true,
            later.is_subset(&all) && backends(&mut side, db).await.len() <= 3,
            "connections are reused: no new backend should appear",
        );
    });
}

// A backend terminated while its connection sits idle is noticed on
// checkout (is_valid), and the caller gets a working connection.
#[test]
fn test_21_a_terminated_backend_is_replaced_on_checkout() {
    pg_test(async |db| {
        let pool = pg_pool(&db.url, 2, ACQUIRE);
        let mut c = pg_get(&pool, "pool.get()").await;
        let old = backend_pid(&mut c, "the pooled connection").await;
        drop(c);
        let mut side = side(db).await;
        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(old)
            .execute(&mut side)
            .await
            .expect("pg_terminate_backend runs");
        let db2 = db;
        let side = Arc::new(tokio::sync::Mutex::new(side));
        eventually(
            CALL,
            &format!("backend {old} to be gone from pg_stat_activity"),
            "pg_terminate_backend ends the server process",
            || {
                let side = Arc::clone(&side);
                async move {
                    let seen = backends(&mut *side.lock().await, db2).await;
                    if seen.contains(&old) {
                        Err(format!("backends {seen:?}"))
                    } else {
                        Ok(())
                    }
                }
            },
        )
        .await;
        let mut c = pg_get(
            &pool,
            "pool.get() after the idle connection's backend was terminated",
        )
        .await;
        let new = backend_pid(&mut c, "the connection handed out after the termination").await;
        same(
            &format!(
                "terminated backend {old} of the idle connection, then took a connection and queried it"
            ),
            (true, 1),
            (new != old, pool.stats().size),
            "is_valid (a ping) must catch the dead connection, which is closed and replaced",
        );
    });
}

// The database goes away (every connection reset) and comes back: the
// pool fails fast while it is gone and works again once it is back, with
// no restart.
#[test]
fn test_22_the_pool_recovers_when_the_database_comes_back() {
    pg_test(async |db| {
        let proxy = FaultProxy::for_url(&db.url);
        let pool = pg_pool(proxy.url(), 2, Duration::from_secs(3));
        let mut a = pg_get(&pool, "pool.get() through the proxy").await;
        let mut b = pg_get(&pool, "a second pool.get()").await;
        backend_pid(&mut a, "connection a").await;
        backend_pid(&mut b, "connection b").await;
        drop((a, b));

        proxy.set(Fault::Reset);
        let got = within_async(CALL, "pool.get() with the database unreachable", pool.get()).await;
        let desc = match &got {
            Ok(_) => "Ok(a connection)".to_string(),
            Err(e) => format!("Err({e})"),
        };
        Report::new("reset every connection to PostgreSQL (both pooled ones idle), refused new ones with a reset, called get()")
        .expected("an Err (Create or Timeout): the database is gone")
        .got(&desc)
        .hint("is_valid must fail on a reset connection (a ping), and create must fail too")
        .check(got.is_err());
        drop(got);
        same(
            "after the failed get(), called stats()",
            stats(0, 0, 0),
            pool.stats(),
            "both dead connections are closed when is_valid fails; the failed create takes no slot",
        );

        proxy.set(Fault::Blackhole);
        let start = std::time::Instant::now();
        let got = within_async(CALL, "pool.get() with the database silent", pool.get()).await;
        Report::new(
        "made the database accept connections and never answer, called get() (acquire_timeout 3 s)",
    )
    .expected("Err(PoolError::Timeout)")
    .got(match &got {
        Ok(_) => "Ok(a connection)".to_string(),
        Err(e) => format!("Err({e:?}) after {:?}", start.elapsed()),
    })
    .hint("a connect that hangs must be cut off by acquire_timeout")
    .check(matches!(got, Err(PoolError::Timeout)));

        proxy.set(Fault::Pass);
        let mut c = pg_get(&pool, "pool.get() once the database is back").await;
        let pid = backend_pid(&mut c, "the connection after recovery").await;
        same(
            "let traffic pass again and queried a connection from the same pool",
            (true, 1),
            (pid > 0, pool.stats().size),
            "the pool must open a fresh connection once the database answers again",
        );
    });
}
