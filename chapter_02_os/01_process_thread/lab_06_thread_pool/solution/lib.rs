//! A fixed-size thread pool: N long-lived workers take jobs from one queue.
//!
//! ```
//! use thread_pool::ThreadPool;
//! let pool = ThreadPool::new(4);
//! pool.execute(|| println!("hello from a worker")).unwrap();
//! pool.shutdown(); // waits for every queued job, then for the workers
//! assert!(pool.execute(|| ()).is_err());
//! ```
//!
//! # Design
//!
//! ```text
//!   execute(job) ──> Sender<Job> ──> [ queue ] ──> Arc<Mutex<Receiver<Job>>>
//!                                                     │ lock, recv, unlock
//!                                       ┌─────────────┼─────────────┐
//!                                   worker 0      worker 1  ...  worker n-1
//!                                   run job       run job        run job
//! ```
//!
//! - **The queue** is a `std::sync::mpsc` channel: unbounded, FIFO, and its
//!   `recv` blocks in the kernel (a futex) while the queue is empty, so an
//!   idle worker uses no CPU at all. The receiving end can only be used by
//!   one thread at a time, so the workers share it behind a `Mutex`.
//! - **A worker** loops: lock the receiver, `recv` one job, *unlock*, run the
//!   job. The lock guard is a temporary of the `let` statement, dropped at
//!   its `;`, so the lock is never held while a job runs; if it were, the
//!   workers would take turns and the pool would run one job at a time.
//! - **A panicking job** is caught with `catch_unwind` and the worker goes
//!   on to the next job, so panics never shrink the pool. (The panic message
//!   is still printed by the default panic hook.) Rust's `Mutex` is never
//!   poisoned by it, since the job runs with the lock released.
//! - **Shutdown** drops the `Sender`. The channel then delivers every job
//!   already queued and after that `recv` fails, which is each worker's
//!   signal to exit; `shutdown` joins them all. So a graceful shutdown falls
//!   out of the channel's semantics: no flag, no special message. Later
//!   `execute` calls find no sender and return [`PoolError::ShutDown`].
//!   `Drop` does the same, so a pool that goes out of scope finishes its
//!   work before the program moves on.
//!
//! The shortcut: one shared queue behind one lock. With many cores and very
//! short jobs that lock becomes the bottleneck; rayon and tokio give each
//! worker its own deque and let idle workers steal from the others.

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};

/// A unit of work: any closure that can be sent to another thread and run once.
type Job = Box<dyn FnOnce() + Send + 'static>;

/// Why [`ThreadPool::execute`] refused a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolError {
    /// The pool has been shut down: it accepts no more jobs.
    ShutDown,
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::ShutDown => write!(f, "the thread pool has been shut down"),
        }
    }
}

impl std::error::Error for PoolError {}

/// A pool of a fixed number of worker threads; see the crate docs.
///
/// `ThreadPool` is `Send + Sync`: it can be shared (`Arc<ThreadPool>`) and
/// `execute` called from many threads at once.
pub struct ThreadPool {
    /// The sending end of the job queue; `None` once shut down. A `Mutex`
    /// because `shutdown(&self)` must take it out while other threads may be
    /// calling `execute`.
    sender: Mutex<Option<Sender<Job>>>,
    /// The workers, to join on shutdown; emptied by the first shutdown.
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl ThreadPool {
    /// Starts a pool of `n` worker threads, all idle.
    ///
    /// # Panics
    ///
    /// If `n` is 0 (`a thread pool needs at least one thread`), or if the
    /// operating system refuses to create a thread.
    pub fn new(n: usize) -> ThreadPool {
        assert!(n > 0, "a thread pool needs at least one thread");
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let workers = (0..n)
            .map(|i| {
                let receiver = Arc::clone(&receiver);
                thread::Builder::new()
                    // A name shows in `top -H`, in panic messages and in
                    // /proc/<pid>/task/<tid>/comm.
                    .name(format!("pool-worker-{i}"))
                    .spawn(move || work(&receiver))
                    .expect("failed to spawn a worker thread")
            })
            .collect();
        ThreadPool {
            sender: Mutex::new(Some(sender)),
            workers: Mutex::new(workers),
        }
    }

    /// Queues `job` to run on one of the workers, and returns at once. Jobs
    /// start in the order they were queued, as workers become free.
    ///
    /// Returns [`PoolError::ShutDown`] (and drops the job without running
    /// it) once [`ThreadPool::shutdown`] has been called.
    pub fn execute<F>(&self, job: F) -> Result<(), PoolError>
    where
        F: FnOnce() + Send + 'static,
    {
        let sender = lock(&self.sender);
        match sender.as_ref() {
            // `send` fails only if every receiver is gone, which cannot
            // happen while we hold the sender: the workers outlive it.
            Some(tx) => tx.send(Box::new(job)).map_err(|_| PoolError::ShutDown),
            None => Err(PoolError::ShutDown),
        }
    }

    /// Stops accepting jobs, waits until every job already queued has run,
    /// then waits for every worker to exit. A call made on another thread
    /// while a first one is still waiting also waits until the pool has
    /// stopped; once it has, calling it again does nothing.
    ///
    /// Must not be called from inside a job of this pool: the worker running
    /// that job would wait for itself.
    pub fn shutdown(&self) {
        // The workers' lock is taken first and held through the joins, so
        // that a second `shutdown` on another thread waits
        // here until the first one has joined every worker: whichever call
        // returns, the pool is fully stopped. Taking the handles out and
        // unlocking would let a concurrent caller find an empty list and
        // return while jobs still run. Jobs never touch this lock (only
        // `execute`, which locks `sender`), so holding it cannot deadlock.
        let mut workers = lock(&self.workers);
        // Dropping the only sender closes the queue: workers drain what is
        // left, then their `recv` fails and they exit. The sender's lock is
        // released at the end of this statement, so concurrent `execute`
        // calls are not kept waiting during the joins below.
        drop(lock(&self.sender).take());
        for worker in workers.drain(..) {
            // A worker never panics (jobs' panics are caught), so a join
            // error would be a bug in the pool itself; nothing to do then.
            let _ = worker.join();
        }
    }
}

impl Drop for ThreadPool {
    /// Shuts the pool down gracefully: every queued job runs first.
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A worker's life: take a job, run it, repeat until the queue is closed.
fn work(receiver: &Mutex<Receiver<Job>>) {
    loop {
        // The guard is a temporary: the lock is released at the `;`, before
        // the job runs. `recv` blocks while holding the lock, which is fine:
        // the other idle workers queue up on the mutex, also asleep.
        let next = lock(receiver).recv();
        let Ok(job) = next else {
            // The sender is gone and the queue is empty: shut down.
            return;
        };
        // A panicking job must not take the worker with it. The `Err` holds
        // the panic's payload; the panic hook has already printed its
        // message, so there is nothing more to do with it. AssertUnwindSafe:
        // the job is consumed by the call, so nothing it touched is seen
        // again by this thread in a half-updated state.
        let _ = panic::catch_unwind(AssertUnwindSafe(job));
    }
}

/// Locks `m`, ignoring poisoning: the data behind these locks (a sender, a
/// receiver, join handles) is never left half-updated by a panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
