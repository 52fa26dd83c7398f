//! A fixed-size thread pool: N long-lived worker threads take jobs from one
//! queue, so running a job costs a queue operation instead of a new thread.
//!
//! ```
//! use thread_pool::ThreadPool;
//! let pool = ThreadPool::new(4);
//! pool.execute(|| println!("hello from a worker")).unwrap();
//! pool.shutdown(); // waits for every queued job, then for the workers
//! assert!(pool.execute(|| ()).is_err());
//! ```
//!
//! The contract (README.md has it in full, the tests check it):
//!
//! - `ThreadPool::new(n)` starts exactly `n` worker threads (panics if `n`
//!   is 0, with a message containing `at least one thread`).
//! - `execute(job)` queues the job and returns at once; jobs start in queue
//!   order as workers become free. Every job runs exactly once, on a worker
//!   (never on the caller's thread). Up to `n` jobs run at the same time, and
//!   never more: with `n` jobs running, the next one waits in the queue.
//! - A job that panics does not take its worker with it: after any number of
//!   panics, `n` jobs can still run at the same time.
//! - `shutdown()` stops accepting jobs, waits until every job already queued
//!   has run, then until every worker has exited. Calling it twice is fine.
//!   Dropping the pool does the same.
//! - After shutdown, `execute` returns `Err(PoolError::ShutDown)` at once:
//!   never a hang, never a panic.
//! - An idle worker sleeps (blocks in the kernel): it uses no CPU.
//! - `ThreadPool` is `Send + Sync`: tests share it as `Arc<ThreadPool>` and
//!   call `execute` and `shutdown` from several threads.
//!
//! Write the bodies below (and add fields, types and functions as you
//! like); keep the public signatures.

#![allow(unused)]

use std::fmt;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

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
pub struct ThreadPool {
    // TODO: what does the pool need to hold? Something to send jobs with,
    // and something to wait for the workers with.
}

impl ThreadPool {
    /// Starts a pool of `n` worker threads, all idle.
    ///
    /// # Panics
    ///
    /// If `n` is 0, with a message containing `at least one thread`.
    pub fn new(n: usize) -> ThreadPool {
        todo!("start {n} worker threads")
    }

    /// Queues `job` to run on one of the workers, and returns at once.
    /// Jobs start in the order they were queued, as workers become free.
    ///
    /// Returns `Err(PoolError::ShutDown)`, without running the job, once
    /// [`ThreadPool::shutdown`] has been called.
    pub fn execute<F>(&self, job: F) -> Result<(), PoolError>
    where
        F: FnOnce() + Send + 'static,
    {
        todo!("queue the job")
    }

    /// Stops accepting jobs, waits until every queued job has run, then
    /// until every worker has exited. A call made on another thread while
    /// a first one is still waiting also waits until the pool has stopped;
    /// once it has, calling it again does nothing.
    pub fn shutdown(&self) {
        todo!("close the queue, then join the workers")
    }
}

impl Drop for ThreadPool {
    /// Shuts the pool down gracefully, like [`ThreadPool::shutdown`].
    fn drop(&mut self) {
        // TODO: shut down here too. Never `todo!()` in a `Drop`: a panic
        // while the test is already failing aborts the whole test run.
    }
}
