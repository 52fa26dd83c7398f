//! # Lab 02: parallel sum
//!
//! Sum a slice of `u64` four ways: on one thread, then split into balanced
//! chunks summed in parallel by worker threads that hand their partial sums
//! back in three different ways:
//!
//! | function | threads | how partial sums come back |
//! |---|---|---|
//! | [`sum_sequential`] | the caller's | it is the baseline |
//! | [`sum_scoped`] | `std::thread::scope`, borrowing `&[u64]` | each thread's return value, via `join` |
//! | [`sum_channels`] | `std::thread::spawn`, sharing `Arc<[u64]>` | messages on a `std::sync::mpsc` channel |
//! | [`sum_mutex`] | `std::thread::spawn`, sharing `Arc<[u64]>` | added into an `Arc<Mutex<_>>` |
//!
//! ## Why two of them take `Arc<[u64]>`
//!
//! A thread from `std::thread::spawn` may outlive the function that started
//! it, so its closure must be `'static`: it cannot borrow the caller's slice.
//! The data must be *shared and owned*: an `Arc<[u64]>` is one allocation that
//! every worker holds a counted reference to (`Arc::clone` copies a pointer
//! and bumps a counter, never the data). `std::thread::scope` lifts that rule:
//! the scope joins every thread before it returns, so its threads may borrow.
//! Doing both in one lab is the point: you will feel why scoped threads
//! exist. The caller builds the `Arc` once, e.g. `Arc::from(vec)`.
//!
//! ## The contract every parallel variant keeps
//!
//! - The data is split with [`chunk_ranges`]`(data.len(), threads)`: contiguous
//!   ranges, in order, covering everything, sizes differing by at most one.
//! - Every chunk is summed on its **own newly spawned thread**; the calling
//!   thread only splits, waits and combines. So `threads` workers (or fewer,
//!   when there are fewer items than threads) really run.
//! - The result is a [`Summary`]: the total, and one [`Partial`] per chunk *in
//!   chunk order* (whatever order the threads finished in), saying which range
//!   it summed, the sum, and the `ThreadId` of the worker that summed it. The
//!   tests use it to check that the work was split the way it should be,
//!   without timing anything.
//! - `threads == 0` panics with a message containing
//!   `threads must be at least 1`.
//!
//! ## Overflow
//!
//! The sum of a few `u64`s easily exceeds `u64::MAX`, so every sum here is a
//! `u128`: a slice holds at most `usize::MAX` (2^64 - 1) items, each at most
//! 2^64 - 1, and their sum stays below 2^128. A `u128` total can never
//! overflow, so no function here ever wraps or panics on overflow.
//!
//! Replace every `todo!()`; keep the signatures, they are what the tests call.
//! Run `cargo test` in this folder to be graded, `cargo bench` to compare the
//! variants' speed (README.md has the details, hints.md a few hints).

#![allow(unused)]

use std::ops::Range;
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
    todo!("split 0..len into min(threads, len) balanced ranges")
}

/// Sums `data` on the calling thread: the baseline the others must equal.
/// Returns 0 for an empty slice; never overflows (see the crate docs).
pub fn sum_sequential(data: &[u64]) -> u128 {
    todo!("add every item as a u128")
}

/// Sums `data` with one scoped thread (`std::thread::scope`) per chunk of
/// [`chunk_ranges`]`(data.len(), threads)`; each thread borrows its chunk and
/// returns its [`Partial`] through its join handle.
///
/// # Panics
///
/// If `threads == 0`, with a message containing `threads must be at least 1`.
pub fn sum_scoped(data: &[u64], threads: usize) -> Summary {
    todo!("spawn one scoped thread per chunk, then join them all")
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
    todo!("spawn one thread per chunk, each sends its partial sum on a channel")
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
    todo!("spawn one thread per chunk, each adds its partial sum under a mutex")
}
