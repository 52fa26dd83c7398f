//! Workers as threads: `spawn`, a channel, a barrier, `join`.
//!
//! The same choreography as the processes, with the tools threads have:
//! each worker writes [`VALUE`], prints its line and says so on a channel;
//! the main thread waits for N messages, then meets the workers at a
//! `Barrier` of N + 1 to release them, then joins each one. Since a thread
//! writes the process's only copy of `VALUE`, the main thread reads 42.
//!
//! A thread has its own thread id (`gettid`), but the process id (`getpid`)
//! and the parent (`getppid`) belong to the process, so every worker reports
//! the same `pid` and `ppid` as the main thread. (In Linux a thread is a task
//! made by `clone` with the memory, files and signal handlers shared; the
//! main thread's tid equals the pid, the "thread group id".)

use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier, mpsc};
use std::thread;
use std::time::Instant;

use crate::{VALUE, WRITTEN, hold, report_worker};

/// Runs `n` worker threads; see the module docs.
pub fn run(n: usize, hold_points: bool) -> io::Result<()> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let release = Arc::new(Barrier::new(n + 1));

    let started = Instant::now();
    let mut workers = Vec::with_capacity(n);
    for index in 0..n {
        let ready_tx = ready_tx.clone();
        let release = Arc::clone(&release);
        workers.push(thread::spawn(move || {
            VALUE.store(WRITTEN, Ordering::SeqCst);
            report_worker(index);
            // The receiver lives until every worker has reported.
            let _ = ready_tx.send(());
            release.wait();
            WRITTEN
        }));
    }
    // Only the spawning is timed, as with the processes: `clone` and a new
    // stack, no copy of the address space.
    let per_worker = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    drop(ready_tx);

    for _ in 0..n {
        ready_rx
            .recv()
            .map_err(|_| io::Error::other("a worker thread ended before reporting"))?;
    }
    if hold_points {
        hold("workers alive")?;
    }
    release.wait();

    let mut wrote = WRITTEN;
    for worker in workers {
        wrote = worker
            .join()
            .map_err(|_| io::Error::other("a worker thread panicked"))?;
    }
    println!(
        "shared: parent sees {} after thread wrote {wrote}",
        VALUE.load(Ordering::SeqCst)
    );
    println!("creation cost: {per_worker:.1} us per worker");
    if hold_points {
        hold("workers gone")?;
    }
    Ok(())
}
