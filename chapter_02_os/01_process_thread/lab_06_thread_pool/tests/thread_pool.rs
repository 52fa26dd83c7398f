//! The grader for lab 06, a thread pool.
//!
//! Every test runs under `labkit::wait::within`, so a deadlocked pool
//! fails in seconds with a message instead of hanging. Nothing is timed.
//! Concurrency is proved with synchronisation, not clocks:
//!
//! - "n jobs run at the same time" is a `Barrier` of n inside n jobs: it only
//!   opens when all n are running at once.
//! - "job n+1 waits" is a job that must *not* start while n others block: the
//!   test waits for its start signal with a short deadline ([`QUIET`]). That
//!   deadline can only produce a false pass (a broken pool that happens to
//!   start the job late), never a false fail: a correct pool never starts it.
//! - Waits for something that must happen have a long deadline ([`EVENT`]),
//!   which a correct pool meets in microseconds.
//! - "an idle pool burns no CPU" reads each worker's CPU time from
//!   `/proc/self/task/<tid>/stat` (per thread, so other tests running in the
//!   same process do not count), before and after an idle period.
//!
//! When a test fails, the pool under test is leaked rather than dropped (see
//! [`Guarded`]): a broken pool's `Drop` may wait forever for workers stuck on
//! a barrier, which would turn a clear failure into a hang.

use std::collections::HashSet;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::thread::{self, ThreadId};
use std::time::Duration;

use labkit::Report;
use labkit::procfs;
use labkit::wait::within;
use thread_pool::{PoolError, ThreadPool};

/// How long a whole test may take before the watchdog calls it a deadlock.
const DEADLINE: Duration = Duration::from_secs(20);

/// How long the test waits for something that must happen (a job starting
/// when a worker is free, shutdown returning once the jobs are done).
const EVENT: Duration = Duration::from_secs(5);

/// How long the test waits for something that must NOT happen (a job
/// starting while every worker is busy, shutdown returning while jobs run).
/// Short, because it can only cause a false pass, never a false fail.
const QUIET: Duration = Duration::from_millis(200);

/// How long the pool is left idle while its workers' CPU time is measured.
const IDLE: Duration = Duration::from_millis(500);

/// CPU time the idle workers may use in all during [`IDLE`], in clock ticks
/// (usually 10 ms each). Sleeping threads use 0; two workers spinning on
/// `try_recv` used 23 here on a busy 2-core machine (they contend for one
/// lock, so part of the time one sleeps on it), up to 100 on an idle one.
const IDLE_TICKS_MAX: u64 = 5;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The pool under test, shared as an `Arc`. Dropped normally when the test
/// passes; leaked when the test is failing (see the module docs).
struct Guarded(ManuallyDrop<Arc<ThreadPool>>);

impl Guarded {
    fn new(n: usize) -> Guarded {
        Guarded(ManuallyDrop::new(Arc::new(ThreadPool::new(n))))
    }
}

impl Deref for Guarded {
    type Target = ThreadPool;
    fn deref(&self) -> &ThreadPool {
        &self.0
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if !thread::panicking() {
            // SAFETY: dropped once, here, and never used again.
            unsafe { ManuallyDrop::drop(&mut self.0) }
        }
    }
}

/// A gate that jobs wait at until the test opens it. The [`Opener`] opens
/// it when dropped too, so a failing test releases its blocked jobs.
#[derive(Clone)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

struct Opener(Gate);

fn gate() -> (Opener, Gate) {
    let g = Gate(Arc::new((Mutex::new(false), Condvar::new())));
    (Opener(g.clone()), g)
}

impl Gate {
    fn wait(&self) {
        let (open, cv) = &*self.0;
        let mut open = open.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
    }
}

impl Opener {
    fn open(&self) {
        let (open, cv) = &*(self.0).0;
        *open.lock().unwrap() = true;
        cv.notify_all();
    }
}

impl Drop for Opener {
    fn drop(&mut self) {
        self.open();
    }
}

/// Sends `()` when dropped: a job holding one reports that it has ended,
/// even when it ends by panicking.
struct SignalOnDrop(mpsc::Sender<()>);

impl Drop for SignalOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// `execute` that must succeed on a running pool.
#[track_caller]
fn submit(pool: &ThreadPool, what: &str, job: impl FnOnce() + Send + 'static) {
    if let Err(e) = pool.execute(job) {
        Report::new(format!("called execute({what}) on a pool that is running"))
            .expected("Ok(())")
            .got(format!("Err({e:?})"))
            .hint("execute returns an error only after shutdown")
            .fail();
    }
}

/// Waits for `count` messages on `rx`, each within [`EVENT`]; fails with a
/// report built from how many arrived.
#[track_caller]
fn expect_messages<T>(
    rx: &mpsc::Receiver<T>,
    count: usize,
    fail: impl Fn(usize) -> Report,
) -> Vec<T> {
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        match rx.recv_timeout(EVENT) {
            Ok(v) => got.push(v),
            Err(_) => fail(got.len()).fail(),
        }
    }
    got
}

/// Runs a test body under the watchdog.
#[track_caller]
fn run(what: &str, body: impl FnOnce() + Send + 'static) {
    within(DEADLINE, what, body);
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

// 1000 jobs queued from 4 threads each run exactly once, on the pool's 4 workers only.
#[test]
fn test_01_runs_every_job_exactly_once_on_the_workers() {
    run(
        "ThreadPool::new(4), 1000 jobs from 4 threads, shutdown()",
        || {
            let pool = Guarded::new(4);
            let runs: Arc<Vec<AtomicUsize>> =
                Arc::new((0..1000).map(|_| AtomicUsize::new(0)).collect());
            let ran_on: Arc<Mutex<HashSet<ThreadId>>> = Arc::default();
            let mut callers = HashSet::from([thread::current().id()]);
            thread::scope(|s| {
                let handles: Vec<_> = (0..4)
                    .map(|t| {
                        let (pool, runs, ran_on) = (&pool, &runs, &ran_on);
                        s.spawn(move || {
                            for i in t * 250..(t + 1) * 250 {
                                let (runs, ran_on) = (Arc::clone(runs), Arc::clone(ran_on));
                                submit(pool, &format!("job {i}"), move || {
                                    runs[i].fetch_add(1, Ordering::SeqCst);
                                    ran_on.lock().unwrap().insert(thread::current().id());
                                });
                            }
                            thread::current().id()
                        })
                    })
                    .collect();
                for h in handles {
                    callers.insert(h.join().unwrap());
                }
            });
            pool.shutdown();

            let wrong: Vec<String> = runs
                .iter()
                .enumerate()
                .filter(|(_, r)| r.load(Ordering::SeqCst) != 1)
                .take(10)
                .map(|(i, r)| format!("job {i} ran {} times", r.load(Ordering::SeqCst)))
                .collect();
            if !wrong.is_empty() {
                Report::new("queued jobs 0..1000 from 4 threads on ThreadPool::new(4), then called shutdown()")
                .expected("every job to have run exactly once when shutdown() returns")
                .got(wrong.join(", "))
                .hint("does shutdown wait for the queued jobs? Is a job ever handed to two workers, or lost?")
                .fail();
            }
            let ran_on = ran_on.lock().unwrap();
            if ran_on.len() > 4 || ran_on.iter().any(|t| callers.contains(t)) {
                Report::new(
                    "queued 1000 jobs on ThreadPool::new(4) and recorded the thread each ran on",
                )
                .expected("every job to run on one of the pool's 4 worker threads")
                .got(format!(
                    "jobs ran on {} different threads{}",
                    ran_on.len(),
                    if ran_on.iter().any(|t| callers.contains(t)) {
                        ", some on the thread that called execute"
                    } else {
                        ""
                    }
                ))
                .hint("start the n workers once, in new(); execute only queues the job for them")
                .fail();
            }
        },
    );
}

// n jobs run at the same time: 4 jobs that wait at a Barrier(4) all get through on a pool of 4.
#[test]
fn test_02_runs_n_jobs_at_the_same_time() {
    run(
        "ThreadPool::new(4) with 4 jobs waiting at a Barrier(4)",
        || {
            let pool = Guarded::new(4);
            let barrier = Arc::new(Barrier::new(4));
            let (tx, rx) = mpsc::channel();
            for i in 0..4 {
                let (barrier, tx) = (Arc::clone(&barrier), tx.clone());
                submit(&pool, &format!("barrier job {i}"), move || {
                    barrier.wait();
                    let _ = tx.send(i);
                });
            }
            expect_messages(&rx, 4, |passed| {
                Report::new("queued 4 jobs on ThreadPool::new(4); each waits at a shared Barrier(4), which opens only when all 4 wait at once")
                .expected(format!("all 4 jobs through the barrier within {EVENT:?}"))
                .got(format!("{passed} got through: the pool never ran 4 jobs at the same time"))
                .hint("do your workers keep the queue locked while they run a job? Take the job out, release the lock, then run it")
            });
            pool.shutdown();
        },
    );
}

// With n jobs blocked, job n+1 waits in the queue, and starts as soon as a worker is free.
#[test]
fn test_03_job_n_plus_one_waits_for_a_free_worker() {
    run("ThreadPool::new(3) with 3 blocked jobs, then a 4th", || {
        let pool = Guarded::new(3);
        let (opener, gate) = gate();
        let (started_tx, started_rx) = mpsc::channel();
        for i in 0..3 {
            let (gate, started_tx) = (gate.clone(), started_tx.clone());
            submit(&pool, &format!("blocking job {i}"), move || {
                let _ = started_tx.send(i);
                gate.wait();
            });
        }
        expect_messages(&started_rx, 3, |n| {
            Report::new(
                "queued 3 jobs on ThreadPool::new(3), each blocks until the test releases it",
            )
            .expected(format!("all 3 to start within {EVENT:?}"))
            .got(format!("{n} started"))
            .hint("does new(n) start n workers, and do they all take jobs?")
        });
        let (fourth_tx, fourth_rx) = mpsc::channel();
        submit(&pool, "job 4", move || {
            let _ = fourth_tx.send(());
        });
        if fourth_rx.recv_timeout(QUIET).is_ok() {
            Report::new("queued 3 jobs on ThreadPool::new(3) that block, then a 4th")
                .expected("the 4th job to wait in the queue while all 3 workers are busy")
                .got("the 4th job started: the pool ran 4 jobs at once")
                .hint("does the pool start exactly n workers, and never a thread per job?")
                .fail();
        }
        opener.open();
        if fourth_rx.recv_timeout(EVENT).is_err() {
            Report::new("queued 3 blocking jobs on ThreadPool::new(3), a 4th, then released the 3")
                .expected(format!(
                    "the 4th job to start within {EVENT:?} of a worker becoming free"
                ))
                .got("it did not start")
                .hint("after a job, does the worker go back to the queue for the next one?")
                .fail();
        }
        pool.shutdown();
    });
}

// A panicking job does not cost a worker: after 9 panics, 3 jobs still run at once on a pool of 3.
#[test]
fn test_04_a_panicking_job_does_not_shrink_the_pool() {
    run(
        "ThreadPool::new(3), 9 panicking jobs, then 3 jobs at a Barrier(3)",
        || {
            let pool = Guarded::new(3);
            let (ended_tx, ended_rx) = mpsc::channel();
            for i in 0..9 {
                let signal = SignalOnDrop(ended_tx.clone());
                submit(&pool, &format!("panicking job {i}"), move || {
                    let _signal = signal;
                    panic!("[test] job {i} panics on purpose (test_04)");
                });
            }
            expect_messages(&ended_rx, 9, |n| {
                Report::new("queued 9 jobs that panic on ThreadPool::new(3)")
                .expected(format!("all 9 to have run within {EVENT:?}"))
                .got(format!("{n} ran: the others are stuck in the queue"))
                .hint("when a job panics, does its worker die with it? std::panic::catch_unwind keeps the worker alive")
            });
            let barrier = Arc::new(Barrier::new(3));
            let (tx, rx) = mpsc::channel();
            for i in 0..3 {
                let (barrier, tx) = (Arc::clone(&barrier), tx.clone());
                submit(&pool, &format!("barrier job {i}"), move || {
                    barrier.wait();
                    let _ = tx.send(i);
                });
            }
            expect_messages(&rx, 3, |passed| {
                Report::new("after 9 panicking jobs, queued 3 jobs that wait at a Barrier(3) on ThreadPool::new(3)")
                .expected(format!("all 3 through the barrier within {EVENT:?}: the pool still has 3 workers"))
                .got(format!("{passed} got through: the pool has fewer than 3 live workers"))
                .hint("a panic in a job must not end the worker's loop: catch it (std::panic::catch_unwind) and take the next job; and is a lock poisoned by the panic?")
            });
            pool.shutdown();
        },
    );
}

/// The scene of tests 05 and 06: 2 workers busy with blocked jobs, 20 jobs
/// queued behind them, then `stop` (shutdown or drop) on another thread.
/// `stop` must wait for all 22 jobs.
#[track_caller]
fn check_stop_waits_for_jobs(
    how: &'static str,
    stop: impl FnOnce(Arc<ThreadPool>) + Send + 'static,
) {
    let pool = Arc::new(ThreadPool::new(2));
    let (opener, gate) = gate();
    let (started_tx, started_rx) = mpsc::channel();
    let done = Arc::new(AtomicUsize::new(0));
    for i in 0..2 {
        let (gate, started_tx, done) = (gate.clone(), started_tx.clone(), Arc::clone(&done));
        submit(&pool, &format!("blocking job {i}"), move || {
            let _ = started_tx.send(());
            gate.wait();
            done.fetch_add(1, Ordering::SeqCst);
        });
    }
    expect_messages(&started_rx, 2, |n| {
        Report::new("queued 2 blocking jobs on ThreadPool::new(2)")
            .expected(format!("both to start within {EVENT:?}"))
            .got(format!("{n} started"))
    });
    for i in 0..20 {
        let done = Arc::clone(&done);
        submit(&pool, &format!("queued job {i}"), move || {
            done.fetch_add(1, Ordering::SeqCst);
        });
    }
    let (stopped_tx, stopped_rx) = mpsc::channel();
    thread::spawn(move || {
        stop(pool);
        let _ = stopped_tx.send(());
    });
    let setup = format!(
        "ThreadPool::new(2) running 2 blocked jobs with 20 more queued; called {how} on another thread"
    );
    if stopped_rx.recv_timeout(QUIET).is_ok() {
        Report::new(&setup)
            .expected(format!("{how} to wait while jobs are still running"))
            .got(format!(
                "{how} returned while 2 jobs were blocked, after {} of 22 jobs had finished",
                done.load(Ordering::SeqCst)
            ))
            .hint(format!("{how} must join the workers (JoinHandle::join), after they have run every queued job"))
            .fail();
    }
    opener.open();
    if stopped_rx.recv_timeout(EVENT).is_err() {
        Report::new(&setup)
            .did("released the 2 blocked jobs")
            .expected(format!("{how} to return within {EVENT:?}"))
            .got(format!(
                "it had not returned; {} of 22 jobs had finished",
                done.load(Ordering::SeqCst)
            ))
            .hint("once the queue is closed and empty, does every worker leave its loop (so that join returns)?")
            .fail();
    }
    let finished = done.load(Ordering::SeqCst);
    if finished != 22 {
        Report::new(&setup)
            .did("released the 2 blocked jobs; it returned")
            .expected(format!("all 22 jobs finished when {how} returned"))
            .got(format!("{finished} had finished"))
            .hint("a graceful shutdown runs every job already queued: close the queue to new jobs, let the workers empty it, then join them")
            .fail();
    }
}

// shutdown() waits for the running jobs and every queued one, then returns.
#[test]
fn test_05_shutdown_waits_for_running_and_queued_jobs() {
    run("shutdown() with jobs running and queued", || {
        check_stop_waits_for_jobs("shutdown()", |pool| pool.shutdown());
    });
}

// Dropping the pool does the same graceful shutdown.
#[test]
fn test_06_drop_waits_for_running_and_queued_jobs() {
    run("drop(pool) with jobs running and queued", || {
        check_stop_waits_for_jobs("drop(pool)", drop);
    });
}

// After shutdown, execute returns Err(PoolError::ShutDown) at once: no hang, no panic, the job never runs.
#[test]
fn test_07_execute_after_shutdown_is_an_error() {
    run("execute after shutdown()", || {
        let pool = Guarded::new(2);
        let (tx, rx) = mpsc::channel();
        submit(&pool, "a job before shutdown", move || {
            let _ = tx.send(());
        });
        if rx.recv_timeout(EVENT).is_err() {
            Report::new("queued one job on ThreadPool::new(2)")
                .expected(format!("it to run within {EVENT:?}"))
                .got("it did not run")
                .fail();
        }
        pool.shutdown();
        for attempt in ["after shutdown()", "after a second shutdown()"] {
            let ran = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&ran);
            let result = catch_unwind(AssertUnwindSafe(|| {
                pool.execute(move || flag.store(true, Ordering::SeqCst))
            }));
            match result {
                Ok(Err(PoolError::ShutDown)) => {}
                Ok(Ok(())) => Report::new(format!("called execute {attempt}"))
                    .expected("Err(PoolError::ShutDown)")
                    .got("Ok(())")
                    .hint("after shutdown the pool accepts no job: how does execute know that the queue is closed?")
                    .fail(),
                Err(_) => Report::new(format!("called execute {attempt}"))
                    .expected("Err(PoolError::ShutDown)")
                    .got("a panic")
                    .hint("return the error instead of unwrapping or expecting a sender that is gone")
                    .fail(),
            }
            if ran.load(Ordering::SeqCst) {
                Report::new(format!("called execute {attempt}"))
                    .expected("the job not to run")
                    .got("it ran (on the caller's thread?)")
                    .fail();
            }
            // Shutting down twice is allowed and does nothing.
            pool.shutdown();
        }
    });
}

// An idle pool burns no CPU: each worker's CPU time (from /proc/self/task/<tid>/stat) stays flat while idle.
#[test]
fn test_08_an_idle_pool_burns_no_cpu() {
    run("ThreadPool::new(2) left idle", || {
        let pool = Guarded::new(2);
        // Two jobs that meet at a barrier run on two different workers, and
        // each reports its worker's thread id.
        let barrier = Arc::new(Barrier::new(2));
        let (tx, rx) = mpsc::channel();
        for i in 0..2 {
            let (barrier, tx) = (Arc::clone(&barrier), tx.clone());
            submit(&pool, &format!("tid job {i}"), move || {
                barrier.wait();
                let _ = tx.send(procfs::gettid());
            });
        }
        let tids = expect_messages(&rx, 2, |n| {
            Report::new("queued 2 jobs that wait at a Barrier(2) on ThreadPool::new(2)")
                .expected(format!("both through within {EVENT:?}"))
                .got(format!("{n} got through"))
        });
        let me = std::process::id();
        let ticks = |tid: u32| procfs::thread_cpu_ticks(me, tid);
        let before: Vec<Option<u64>> = tids.iter().map(|&t| ticks(t)).collect();
        // Wait out the idle period on a channel that never receives: a
        // deadline, not a sleep used to synchronise anything.
        let (_never_tx, never_rx) = mpsc::channel::<()>();
        let _ = never_rx.recv_timeout(IDLE);
        let mut total = 0;
        let mut used = Vec::new();
        for (i, &tid) in tids.iter().enumerate() {
            let after = ticks(tid);
            let (Some(b), Some(a)) = (before[i], after) else {
                Report::new(format!(
                    "read /proc/{me}/task/{tid}/stat of a worker while the pool was idle"
                ))
                .expected("the worker thread to exist")
                .got("it had exited")
                .hint("workers live until shutdown: after a job, a worker waits for the next one")
                .fail()
            };
            used.push(format!("worker {tid}: {} ticks", a - b));
            total += a - b;
        }
        // Judged on the total: two spinning workers that contend for one
        // lock share the CPU between them, but together they stay busy.
        if total > IDLE_TICKS_MAX {
            Report::new(format!(
                "left ThreadPool::new(2) idle for {IDLE:?} and read its workers' CPU time from /proc/{me}/task/<tid>/stat"
            ))
            .expected(format!(
                "at most {IDLE_TICKS_MAX} clock ticks in all (an idle worker sleeps in the kernel: 0)"
            ))
            .got(format!(
                "{total} ticks ({}): the workers were busy doing nothing",
                used.join(", ")
            ))
            .hint("does an idle worker loop on try_recv (or check a flag) instead of blocking in recv or Condvar::wait?")
            .fail();
        }
        pool.shutdown();
    });
}

// ThreadPool::new(0) panics: a pool with no worker would accept jobs and never run them.
#[test]
#[should_panic(expected = "at least one thread")]
fn test_09_a_pool_of_zero_threads_is_refused() {
    run("ThreadPool::new(0)", || {
        drop(ThreadPool::new(0));
    });
}

// A pool of one thread is valid, and runs its jobs one after another in the
// order they were queued, also past a job that panics.
#[test]
fn test_10_a_pool_of_one_runs_jobs_in_queue_order() {
    run(
        "ThreadPool::new(1), a blocking job, then 40 jobs recording their order",
        || {
            let pool = match catch_unwind(|| ThreadPool::new(1)) {
                Ok(pool) => Guarded(ManuallyDrop::new(Arc::new(pool))),
                Err(p) => {
                    let msg = labkit::wait::panic_message(&*p);
                    Report::new("called ThreadPool::new(1)")
                        .expected("a pool with one worker: only 0 threads is refused")
                        .got(format!("a panic: {msg}"))
                        .hint(if msg.contains("at least one") {
                            "is the check for a pool that is too small `n > 0` (or `n >= 1`), not `n > 1`?"
                        } else {
                            "new(1) must start one worker; read the panic message above"
                        })
                        .fail()
                }
            };
            let (opener, gate) = gate();
            let (started_tx, started_rx) = mpsc::channel();
            let order: Arc<Mutex<Vec<usize>>> = Arc::default();
            {
                let order = Arc::clone(&order);
                submit(&pool, "blocking job 0", move || {
                    let _ = started_tx.send(());
                    gate.wait();
                    order.lock().unwrap().push(0);
                });
            }
            expect_messages(&started_rx, 1, |_| {
                Report::new("queued one blocking job on ThreadPool::new(1)")
                    .expected(format!("it to start within {EVENT:?}"))
                    .got("it did not start")
                    .hint("does new(1) start one worker that takes jobs from the queue?")
            });
            // Queued while the only worker is busy, so they wait in the queue
            // together; job 20 panics after recording itself.
            for i in 1..=40 {
                let order = Arc::clone(&order);
                submit(&pool, &format!("job {i}"), move || {
                    order.lock().unwrap_or_else(|e| e.into_inner()).push(i);
                    if i == 20 {
                        panic!("[test] job 20 panics on purpose (test_10)");
                    }
                });
            }
            opener.open();
            pool.shutdown();
            let order = order.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let expected: Vec<usize> = (0..=40).collect();
            if order != expected {
                Report::new("ThreadPool::new(1): queued a blocking job 0, then jobs 1..=40 behind it (job 20 panics), released job 0, called shutdown()")
                    .expected(format!("the jobs to have run one by one in queue order: {expected:?}"))
                    .got(format!("{order:?}"))
                    .hint(if order.len() < expected.len() {
                        "are all queued jobs run before shutdown returns, and does the worker go on after job 20 panics?"
                    } else {
                        "is the queue first in, first out? A worker that takes several jobs at once must still run them oldest first"
                    })
                    .fail();
            }
        },
    );
}

// Two shutdown() calls racing on two threads: neither returns while jobs are
// still running or queued, and both return once they are done.
#[test]
fn test_11_a_concurrent_second_shutdown_also_waits() {
    run(
        "ThreadPool::new(2) with jobs blocked, shutdown() on two threads",
        || {
            let pool = Guarded::new(2);
            let (opener, gate) = gate();
            let (started_tx, started_rx) = mpsc::channel();
            let done = Arc::new(AtomicUsize::new(0));
            for i in 0..2 {
                let (gate, started_tx, done) =
                    (gate.clone(), started_tx.clone(), Arc::clone(&done));
                submit(&pool, &format!("blocking job {i}"), move || {
                    let _ = started_tx.send(());
                    gate.wait();
                    done.fetch_add(1, Ordering::SeqCst);
                });
            }
            expect_messages(&started_rx, 2, |n| {
                Report::new("queued 2 blocking jobs on ThreadPool::new(2)")
                    .expected(format!("both to start within {EVENT:?}"))
                    .got(format!("{n} started"))
            });
            for i in 0..10 {
                let done = Arc::clone(&done);
                submit(&pool, &format!("queued job {i}"), move || {
                    done.fetch_add(1, Ordering::SeqCst);
                });
            }
            // Each shutdown thread reports who it is and how many jobs had
            // finished when its call returned.
            let (returned_tx, returned_rx) = mpsc::channel::<(&str, usize)>();
            let spawn_shutdown = |who: &'static str| {
                let (pool, done, tx) =
                    (Arc::clone(&pool.0), Arc::clone(&done), returned_tx.clone());
                let (calling_tx, calling_rx) = mpsc::channel();
                thread::spawn(move || {
                    let _ = calling_tx.send(());
                    pool.shutdown();
                    let _ = tx.send((who, done.load(Ordering::SeqCst)));
                });
                let _ = calling_rx.recv_timeout(EVENT);
            };
            spawn_shutdown("the first shutdown()");
            // The first call has begun once the pool refuses jobs; there is no
            // event for that, so poll execute (probes queued before that
            // are harmless no-ops).
            let closed = labkit::wait::settle(EVENT, || pool.execute(|| ()).is_err(), |c| c);
            if closed.is_err() {
                Report::new("ThreadPool::new(2) with 2 blocked jobs and 10 queued: called shutdown() on another thread, then execute() repeatedly")
                    .expected(format!("execute to return Err(PoolError::ShutDown) within {EVENT:?}: shutdown stops accepting jobs before it waits"))
                    .got("execute kept returning Ok(())")
                    .hint("does shutdown close the queue (drop the sender) first, and only then join the workers?")
                    .fail();
            }
            spawn_shutdown("the second shutdown()");
            let setup = "ThreadPool::new(2) running 2 blocked jobs with 10 more queued; called shutdown() on one thread, then, while it waited, shutdown() on a second thread";
            if let Ok((who, finished)) = returned_rx.recv_timeout(QUIET) {
                Report::new(setup)
                    .expected("neither call to return while jobs are still running or queued")
                    .got(format!("{who} returned after {finished} of 12 jobs had finished"))
                    .hint("does a second shutdown() find the workers already taken by the first and return at once? It must wait until the first has joined them (hold the lock on the workers while joining)")
                    .fail();
            }
            opener.open();
            for _ in 0..2 {
                match returned_rx.recv_timeout(EVENT) {
                    Ok((_, 12)) => {}
                    Ok((who, finished)) => Report::new(setup)
                        .did("released the 2 blocked jobs")
                        .expected("each shutdown() to return with all 12 jobs finished")
                        .got(format!("{who} returned after {finished} of 12"))
                        .hint("whichever call returns, every queued job must have run")
                        .fail(),
                    Err(_) => Report::new(setup)
                        .did("released the 2 blocked jobs")
                        .expected(format!("both shutdown() calls to return within {EVENT:?}"))
                        .got(format!("at least one had not; {} of 12 jobs had finished", done.load(Ordering::SeqCst)))
                        .hint("does the second call wait for something the first never signals, or a lock the first never releases?")
                        .fail(),
                }
            }
        },
    );
}
