//! parallel sum: the same sum on one thread, then on worker threads that hand
//! their partial sums back by join handle, by channel, and through a mutex.
//!
//! # Design
//!
//! Every parallel variant has the same three steps, so the only thing that
//! differs between them is the lesson, the way results travel back:
//!
//! 1. **Split**: [`chunk_ranges`] cuts `0..len` into `min(threads, len)`
//!    contiguous chunks whose sizes differ by at most one. Balance matters:
//!    the parallel time is the time of the *slowest* worker, so with
//!    ceiling-division chunks (`len.div_ceil(threads)` each) 10 items on 4
//!    threads become 3 + 3 + 3 + 1 and one thread idles while the others
//!    work; balanced, they are 3 + 3 + 2 + 2.
//! 2. **Sum**: one worker thread per chunk runs [`sum_sequential`] on its
//!    slice. The calling thread does no summing, it only waits: that keeps the
//!    variants comparable, and the tests can check (through the `ThreadId` in
//!    each [`Partial`]) that `threads` workers really ran.
//! 3. **Combine**: the partials are put in chunk order and added up.
//!
//! | function | threads | data | results come back |
//! |---|---|---|---|
//! | [`sum_scoped`] | `thread::scope` | borrowed `&[u64]` | return values, via `join` |
//! | [`sum_channels`] | `thread::spawn` | `Arc<[u64]>` | `mpsc` messages |
//! | [`sum_mutex`] | `thread::spawn` | `Arc<[u64]>` | pushed into an `Arc<Mutex<Summary>>` |
//!
//! ## Why two variants take `Arc<[u64]>`
//!
//! `thread::spawn` requires a `'static` closure because the thread may
//! outlive the caller's stack frame, so it cannot borrow `&[u64]`. Sharing
//! ownership with an `Arc<[u64]>` (one allocation, reference-counted; a
//! clone bumps an atomic counter and copies a pointer) is the classic answer,
//! and `Arc<Mutex<_>>` is the classic shared-state pattern built on it.
//! `thread::scope` (Rust 1.63) is the modern answer for fork-join work like
//! this: the scope joins every thread before returning, so borrowing is safe
//! and no `Arc` is needed. Keeping both in one lab shows what scope buys.
//!
//! ## Overflow
//!
//! Sums are `u128`: at most `usize::MAX` items of at most `u64::MAX` each sum
//! to less than 2^128, so nothing here can overflow. (A `u64` accumulator
//! overflows after two large items: it panics in a debug build and silently
//! wraps in a release build.)
//!
//! ## Performance
//!
//! Summing is memory-bound: one add per 8 bytes loaded. One core streams a
//! few GB/s from DRAM, so two threads help until memory bandwidth is
//! saturated, not by a factor of the thread count; see the README's measured
//! numbers. A spawn costs some tens of microseconds, which is why real code
//! (rayon) keeps a pool of threads and splits only large inputs.

use std::ops::Range;
use std::panic::resume_unwind;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, ThreadId};

/// The sum of one chunk, and who computed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    /// The indices of the chunk in the input, one of [`chunk_ranges`].
    pub range: Range<usize>,
    /// The sum of `data[range]`.
    pub sum: u128,
    /// The worker thread that summed it: `std::thread::current().id()`,
    /// called on that thread.
    pub thread: ThreadId,
}

/// What a parallel sum computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The sum of all the data; equal to the sum of the partial sums.
    pub total: u128,
    /// One entry per chunk of [`chunk_ranges`]`(len, threads)`, in chunk order
    /// (sorted by `range.start`). Empty for empty input.
    pub partials: Vec<Partial>,
}

impl Summary {
    /// Combines partials that may have arrived in any order.
    fn from_partials(mut partials: Vec<Partial>) -> Summary {
        // Channel messages and mutex pushes arrive in the order threads
        // *finish*, which the scheduler decides; the contract is chunk order.
        partials.sort_unstable_by_key(|p| p.range.start);
        let total = partials.iter().map(|p| p.sum).sum();
        Summary { total, partials }
    }
}

/// Splits `0..len` into the balanced chunks every parallel variant uses.
///
/// Returns exactly `min(threads, len)` ranges (none for `len == 0`), which:
/// - are contiguous and in order: the first starts at 0, each starts where
///   the previous one ended, the last ends at `len`;
/// - are never empty, and differ in length by at most one: with
///   `q = len / n` and `r = len % n` (`n` the number of chunks), the first
///   `r` chunks have `q + 1` items and the others `q`.
///
/// ```text
/// chunk_ranges(10, 3) == [0..4, 4..7, 7..10]
/// chunk_ranges(2, 4)  == [0..1, 1..2]
/// chunk_ranges(0, 4)  == []
/// ```
///
/// # Panics
///
/// If `threads == 0`, with a message containing `threads must be at least 1`.
pub fn chunk_ranges(len: usize, threads: usize) -> Vec<Range<usize>> {
    // Zero workers cannot sum anything; silently using one would hide a bug
    // in the caller (a thread count read from a bad config, say).
    assert!(threads >= 1, "threads must be at least 1, got 0");
    // More threads than items would leave some with empty chunks: a thread
    // spawned to do nothing. Cap the count instead.
    let n = threads.min(len);
    if n == 0 {
        return Vec::new();
    }
    let (q, r) = (len / n, len % n);
    let mut ranges = Vec::with_capacity(n);
    let mut start = 0;
    for i in 0..n {
        // The remainder is spread one item each over the first `r` chunks,
        // so no chunk is more than one item longer than another.
        let size = q + usize::from(i < r);
        ranges.push(start..start + size);
        start += size;
    }
    debug_assert_eq!(start, len);
    ranges
}

/// Sums `data` on the calling thread: the baseline the others must equal.
/// Returns 0 for an empty slice; never overflows (see the crate docs).
pub fn sum_sequential(data: &[u64]) -> u128 {
    // Widen each item before adding. `data.iter().sum::<u64>() as u128`
    // would overflow first and widen too late.
    data.iter().map(|&x| u128::from(x)).sum()
}

/// Sums `data` with one scoped thread (`std::thread::scope`) per chunk of
/// [`chunk_ranges`]`(data.len(), threads)`; each thread borrows its chunk and
/// returns its [`Partial`] through its join handle.
///
/// # Panics
///
/// If `threads == 0`, with a message containing `threads must be at least 1`.
pub fn sum_scoped(data: &[u64], threads: usize) -> Summary {
    let ranges = chunk_ranges(data.len(), threads);
    let partials = thread::scope(|s| {
        // Spawn every worker *before* joining any: collecting the handles
        // into a Vec forces that. A lazy `map(spawn).map(join)` chain would
        // spawn, join, spawn, join... and run the chunks one at a time.
        let handles: Vec<_> = ranges
            .into_iter()
            .map(|range| {
                // A borrow of the caller's slice: allowed because the scope
                // outlives every thread spawned in it.
                let chunk = &data[range.clone()];
                s.spawn(move || Partial {
                    sum: sum_sequential(chunk),
                    thread: thread::current().id(),
                    range,
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|panic| resume_unwind(panic)))
            .collect::<Vec<_>>()
    });
    // Already in chunk order (we joined in spawn order); from_partials
    // sorts anyway, which costs nothing on sorted input.
    Summary::from_partials(partials)
}

/// Sums `data` with one `std::thread::spawn`ed thread per chunk of
/// [`chunk_ranges`]`(data.len(), threads)`; each thread holds a clone of the
/// `Arc` and sends its [`Partial`] on an `mpsc` channel, which the calling
/// thread reads until every worker has sent.
///
/// # Panics
///
/// If `threads == 0`, with a message containing `threads must be at least 1`.
pub fn sum_channels(data: Arc<[u64]>, threads: usize) -> Summary {
    let ranges = chunk_ranges(data.len(), threads);
    let (tx, rx) = mpsc::channel::<Partial>();
    let handles: Vec<_> = ranges
        .into_iter()
        .map(|range| {
            // Each worker owns a sender and a reference to the data; both
            // are moved into the 'static closure.
            let tx = tx.clone();
            let data = Arc::clone(&data);
            thread::spawn(move || {
                let partial = Partial {
                    sum: sum_sequential(&data[range.clone()]),
                    thread: thread::current().id(),
                    range,
                };
                // The receiver lives until every worker is done, so this
                // cannot fail; if it did, there would be no one to tell.
                let _ = tx.send(partial);
            })
        })
        .collect();
    // The receiving loop below ends when *every* sender is gone. Ours must go
    // first, or `rx.iter()` would wait forever for a message from us.
    drop(tx);
    let partials: Vec<Partial> = rx.iter().collect();
    // Every worker has sent, so these joins return at once; they pass on a
    // worker's panic (with its message) instead of returning a short, wrong
    // sum.
    for h in handles {
        h.join().unwrap_or_else(|panic| resume_unwind(panic));
    }
    Summary::from_partials(partials)
}

/// Sums `data` with one `std::thread::spawn`ed thread per chunk of
/// [`chunk_ranges`]`(data.len(), threads)`; each thread adds its [`Partial`]
/// (and its sum to the total) into one shared `Arc<Mutex<_>>`, and the
/// calling thread reads it after joining every worker.
///
/// # Panics
///
/// If `threads == 0`, with a message containing `threads must be at least 1`.
pub fn sum_mutex(data: Arc<[u64]>, threads: usize) -> Summary {
    let ranges = chunk_ranges(data.len(), threads);
    let shared = Arc::new(Mutex::new(Summary {
        total: 0,
        partials: Vec::with_capacity(ranges.len()),
    }));
    let handles: Vec<_> = ranges
        .into_iter()
        .map(|range| {
            let data = Arc::clone(&data);
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                // Sum *outside* the lock, then take it once to publish. Taking
                // the lock per item would serialise the workers and make this
                // slower than one thread.
                let sum = sum_sequential(&data[range.clone()]);
                let thread = thread::current().id();
                let mut summary = shared.lock().expect("no worker panics holding the lock");
                summary.total += sum;
                summary.partials.push(Partial { range, sum, thread });
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap_or_else(|panic| resume_unwind(panic));
    }
    // Every worker has been joined, so their clones of the Arc are dropped
    // and ours is the last: take the Summary out without copying it.
    let summary = Arc::try_unwrap(shared)
        .expect("every worker has been joined")
        .into_inner()
        .expect("no worker panics holding the lock");
    Summary::from_partials(summary.partials)
}
