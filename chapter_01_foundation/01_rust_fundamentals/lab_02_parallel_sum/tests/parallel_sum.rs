//! The grader for lab 02, parallel sum.
//!
//! Every call into the library runs under `labkit::wait::within`, so a
//! deadlock (a channel that is never closed, a join on a thread that waits
//! forever) fails in seconds with a message instead of hanging the run. The
//! expected values come from the Spec, computed here independently: the
//! balanced split by its formula, sums by a plain loop over `u128`.
//!
//! Nothing is timed. That the work really was split is checked through the
//! `Summary` each variant returns: its partials must be exactly the balanced
//! chunks, each summed right, each on its own thread (distinct `ThreadId`s,
//! none of them the caller's).

use std::collections::HashSet;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::{self, ThreadId};
use std::time::Duration;

use labkit::Report;
use labkit::wait::{panic_message, within};
use parallel_sum::{Summary, chunk_ranges, sum_channels, sum_mutex, sum_scoped, sum_sequential};

/// How long one library call may take. The largest input here is a few
/// million items, milliseconds of work even in a debug build.
const DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `len` deterministic pseudo-random numbers below `2^bits` (SplitMix64, so
/// no extra crate and the same data on every run).
fn random_data(len: usize, seed: u64, bits: u32) -> Vec<u64> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) >> (64 - bits)
        })
        .collect()
}

/// The exact sum, the slow obvious way.
fn exact_sum(data: &[u64]) -> u128 {
    let mut total: u128 = 0;
    for &x in data {
        total += x as u128;
    }
    total
}

/// The split the Spec defines: `min(threads, len)` chunks, the first
/// `len % n` of them one item longer.
fn expected_ranges(len: usize, threads: usize) -> Vec<Range<usize>> {
    let n = threads.min(len);
    (0..n)
        .map(|i| {
            let (q, r) = (len / n, len % n);
            let start = i * q + i.min(r);
            start..start + q + usize::from(i < r)
        })
        .collect()
}

/// Ranges for a message, shortened when there are many.
fn show_ranges(ranges: &[Range<usize>]) -> String {
    if ranges.len() <= 12 {
        return format!("{ranges:?}");
    }
    let head: Vec<_> = ranges[..5].iter().map(|r| format!("{r:?}")).collect();
    let tail: Vec<_> = ranges[ranges.len() - 3..]
        .iter()
        .map(|r| format!("{r:?}"))
        .collect();
    format!(
        "[{}, ... ({} more) ..., {}] ({} ranges)",
        head.join(", "),
        ranges.len() - 8,
        tail.join(", "),
        ranges.len()
    )
}

/// A short description of the input, for messages.
fn describe(data: &[u64]) -> String {
    if data.len() <= 8 {
        format!("{data:?}")
    } else {
        format!("{} items", data.len())
    }
}

/// What is wrong with a split, property by property, if anything.
fn split_problem(len: usize, threads: usize, got: &[Range<usize>]) -> Option<String> {
    let want = threads.min(len);
    if got.len() != want {
        return Some(format!(
            "{} ranges, but there must be exactly min(threads, len) = {want}",
            got.len()
        ));
    }
    if let Some(r) = got.iter().find(|r| r.is_empty()) {
        return Some(format!(
            "an empty range {r:?}: every chunk must hold at least one item"
        ));
    }
    let mut next = 0;
    for r in got {
        if r.start != next {
            return Some(format!(
                "range {r:?} should start at {next}, where the previous one ended (or at 0 for the first)"
            ));
        }
        next = r.end;
    }
    if next != len {
        return Some(format!(
            "the last range ends at {next}, but must end at len = {len}: items {next}..{len} are never summed"
        ));
    }
    let min = got.iter().map(|r| r.len()).min().unwrap_or(0);
    let max = got.iter().map(|r| r.len()).max().unwrap_or(0);
    if max - min > 1 {
        return Some(format!(
            "chunk sizes range from {min} to {max}; they may differ by at most 1"
        ));
    }
    if got != expected_ranges(len, threads) {
        return Some(
            "the sizes are balanced, but the longer chunks must come first (the first len % n chunks get one more item)".to_string(),
        );
    }
    None
}

/// The three parallel variants, so each check is written once.
#[derive(Debug, Clone, Copy)]
enum Variant {
    Scoped,
    Channels,
    Mutex,
}

impl Variant {
    fn call_text(self, data: &[u64], threads: usize) -> String {
        match self {
            Variant::Scoped => format!(
                "sum_scoped(&data, {threads}) with data = {}",
                describe(data)
            ),
            Variant::Channels => format!(
                "sum_channels(Arc::from(data), {threads}) with data = {}",
                describe(data)
            ),
            Variant::Mutex => format!(
                "sum_mutex(Arc::from(data), {threads}) with data = {}",
                describe(data)
            ),
        }
    }

    /// Where to look when a call never returns.
    fn hang_hint(self) -> &'static str {
        match self {
            Variant::Scoped => {
                "does a worker wait for something that never happens? thread::scope returns only when every thread in it has finished"
            }
            Variant::Channels => {
                "rx.iter() (and recv()) ends only when every Sender is dropped, including the one you made with channel(): did you drop(tx) after cloning it for the workers?"
            }
            Variant::Mutex => {
                "is a MutexGuard still alive while you wait for a thread that needs the lock? do you join a thread that never finishes?"
            }
        }
    }

    /// Calls the variant on a fresh thread, with a deadline. Returns that
    /// thread's id (the caller's, which must not sum any chunk) and the
    /// result.
    fn call(self, data: &Arc<[u64]>, threads: usize) -> Result<(ThreadId, Summary), CallError> {
        let what = self.call_text(data, threads);
        let data = Arc::clone(data);
        catch_unwind(AssertUnwindSafe(|| {
            within(DEADLINE, &what, move || {
                let caller = thread::current().id();
                let summary = match self {
                    Variant::Scoped => sum_scoped(&data, threads),
                    Variant::Channels => sum_channels(data, threads),
                    Variant::Mutex => sum_mutex(data, threads),
                };
                (caller, summary)
            })
        }))
        .map_err(|payload| {
            let msg = panic_message(&*payload);
            // `within` reports a call that never returned with this phrase.
            if msg.contains("it was still running") {
                CallError::Hung
            } else {
                CallError::Panicked(msg)
            }
        })
    }

    /// Fails the test for a call that panicked or hung.
    #[track_caller]
    fn fail_call(self, data: &[u64], threads: usize, error: CallError, panic_hint: &str) -> ! {
        let report = Report::new(format!("called {}", self.call_text(data, threads)));
        match error {
            CallError::Hung => report
                .expected(format!("it to return within {DEADLINE:?}"))
                .got("it was still running: a deadlock, or a wait that nothing ends")
                .hint(self.hang_hint())
                .fail(),
            CallError::Panicked(msg) => report
                .expected("it to return a Summary")
                .got(format!("a panic: {msg}"))
                .hint(panic_hint)
                .fail(),
        }
    }

    /// Calls the variant and fails the test if it panicked or hung.
    #[track_caller]
    fn run(self, data: &[u64], threads: usize) -> (ThreadId, Summary) {
        let shared: Arc<[u64]> = Arc::from(data);
        match self.call(&shared, threads) {
            Ok(r) => r,
            Err(e) => self.fail_call(data, threads, e, PANIC_HINT),
        }
    }
}

/// Why a call returned no Summary.
enum CallError {
    /// It panicked, with this message.
    Panicked(String),
    /// It had not returned by the deadline.
    Hung,
}

/// Hint for a panic while summing.
const PANIC_HINT: &str = "read the panic above: `not yet implemented` is a todo!() still to replace; `attempt to add with overflow` means a u64 accumulator (add u128s)";

/// Checks only the total against the exact sum.
#[track_caller]
fn check_total(v: Variant, data: &[u64], threads: usize) {
    let (_, summary) = v.run(data, threads);
    // Checked first, on small inputs first: a variant that spawns a thread
    // per item (or per `threads` items) fails here before a large input
    // makes it start a million threads.
    if summary.partials.len() > threads {
        Report::new(format!("called {}", v.call_text(data, threads)))
            .expected(format!(
                "at most {threads} partials (one per chunk of chunk_ranges(len, threads))"
            ))
            .got(format!("{} partials", summary.partials.len()))
            .hint("split into `threads` chunks, not chunks *of* `threads` items (that is what data.chunks(threads) does)")
            .fail();
    }
    let expected = exact_sum(data);
    if summary.total != expected {
        let hint = if summary.total == expected % (1u128 << 64) {
            "the total wrapped around at 2^64: accumulate in u128 (u128::from(x)), in the workers and when combining"
        } else if summary.total < expected {
            "too small: is a chunk never summed (the last one, when len % threads != 0?) or a partial sum never received?"
        } else {
            "too large: is a chunk summed twice, or do chunks overlap?"
        };
        Report::new(format!("called {}", v.call_text(data, threads)))
            .expected(format!("total {expected} (the sequential sum)"))
            .got(format!(
                "total {} from {} partials: {}",
                summary.total,
                summary.partials.len(),
                show_ranges(
                    &summary
                        .partials
                        .iter()
                        .map(|p| p.range.clone())
                        .collect::<Vec<_>>()
                )
            ))
            .hint(hint)
            .fail();
    }
}

/// Checks everything a Summary promises: the total, the partials' ranges
/// (the balanced split, in chunk order), each partial's sum, and that each
/// chunk was summed on its own thread, not the caller's.
#[track_caller]
fn check_summary(v: Variant, data: &[u64], threads: usize) {
    check_total(v, data, threads);
    let (caller, summary) = v.run(data, threads);
    let report = || Report::new(format!("called {}", v.call_text(data, threads)));
    let ranges: Vec<_> = summary.partials.iter().map(|p| p.range.clone()).collect();
    let expected = expected_ranges(data.len(), threads);
    if ranges != expected {
        let mut sorted = ranges.clone();
        sorted.sort_by_key(|r| r.start);
        let hint = if sorted == expected {
            "the right chunks, in the wrong order: partials arrive in the order threads finish; sort them by range.start before returning".to_string()
        } else {
            format!(
                "split with chunk_ranges(data.len(), threads) and sum each range on its own thread ({})",
                split_problem(data.len(), threads, &sorted).unwrap_or_default()
            )
        };
        report()
            .expected(format!(
                "partials for the chunks {}",
                show_ranges(&expected)
            ))
            .got(format!("partials for {}", show_ranges(&ranges)))
            .hint(hint)
            .fail();
    }
    for p in &summary.partials {
        let want = exact_sum(&data[p.range.clone()]);
        if p.sum != want {
            report()
                .expected(format!("the partial for {:?} to be {want}", p.range))
                .got(format!("{}", p.sum))
                .hint("each partial is sum_sequential(&data[range]) for its own range")
                .fail();
        }
    }
    let threads_used: HashSet<ThreadId> = summary.partials.iter().map(|p| p.thread).collect();
    if summary.partials.iter().any(|p| p.thread == caller) {
        report()
            .expected("every chunk summed on a worker thread")
            .got(format!(
                "a partial with the calling thread's id ({caller:?})"
            ))
            .hint("the calling thread only splits, waits and combines: spawn a thread for every chunk, including the last")
            .fail();
    }
    if threads_used.len() != summary.partials.len() {
        report()
            .expected(format!(
                "{} partials from {} different threads (one thread per chunk)",
                summary.partials.len(),
                summary.partials.len()
            ))
            .got(format!("{} different threads", threads_used.len()))
            .hint("spawn one thread per chunk, and record thread::current().id() on that thread, inside the closure")
            .fail();
    }
}

/// Checks that a variant matches the sequential sum on random data of
/// several shapes: even and uneven splits, one thread, many threads.
fn matches_sequential(v: Variant) {
    for (len, threads) in [
        (1000, 1),
        (1000, 2),
        (1000, 4),
        (1001, 4),
        (999, 7),
        (65, 64),
        (10_000, 16),
        (1_000_003, 3),
        (1_000_003, 4),
    ] {
        // Below 2^40 each: no overflow here, that is test *_sums_beyond_u64_max.
        check_total(v, &random_data(len, len as u64, 40), threads);
    }
}

/// Checks the partials on inputs whose split is easy to follow.
fn splits_into_balanced_chunks(v: Variant) {
    for (len, threads) in [
        (10, 3),
        (10, 4),
        (7, 2),
        (12, 4),
        (1000, 4),
        (1001, 4),
        (1003, 8),
    ] {
        check_summary(v, &random_data(len, 7 + len as u64, 20), threads);
    }
}

/// Checks the edges: no data, fewer items than threads, one thread, many threads.
fn handles_edge_cases(v: Variant) {
    for (data, threads) in [
        (vec![], 1),
        (vec![], 4),
        (vec![42], 4),
        (vec![1, 2, 3], 8),
        (random_data(1000, 3, 32), 1),
        (random_data(1000, 4, 32), 100),
        (random_data(5000, 5, 32), 128),
    ] {
        check_summary(v, &data, threads);
    }
}

/// Checks sums above u64::MAX: inside one chunk, and only when combining.
fn sums_beyond_u64_max(v: Variant) {
    for (data, threads) in [
        (vec![u64::MAX, u64::MAX, 5], 1),
        (vec![u64::MAX, 1], 2),
        (vec![u64::MAX; 1000], 4),
        (random_data(100_001, 9, 64), 4),
    ] {
        check_summary(v, &data, threads);
    }
}

/// Checks that zero threads panics with the documented message.
fn rejects_zero_threads(v: Variant) {
    let data: Arc<[u64]> = Arc::from(vec![1, 2, 3]);
    let report = || Report::new(format!("called {}", v.call_text(&data, 0)));
    match v.call(&data, 0) {
        Ok((_, summary)) => report()
            .expected("a panic with a message containing \"threads must be at least 1\"")
            .got(format!("it returned {summary:?}"))
            .hint("zero workers cannot sum anything: assert!(threads >= 1, \"threads must be at least 1\") (chunk_ranges is a good place)")
            .fail(),
        Err(CallError::Panicked(msg)) if msg.contains("threads must be at least 1") => {}
        Err(CallError::Panicked(msg)) => report()
            .expected("a panic with a message containing \"threads must be at least 1\"")
            .got(format!("a panic: {msg}"))
            .hint("check threads before dividing by it: assert!(threads >= 1, \"threads must be at least 1\")")
            .fail(),
        Err(hung) => v.fail_call(&data, 0, hung, ""),
    }
}

// ---------------------------------------------------------------------------
// Milestone 1: the split and the baseline
// ---------------------------------------------------------------------------

// chunk_ranges gives the documented balanced split on small cases you can check by hand.
#[test]
fn test_01_chunk_ranges_splits_into_balanced_contiguous_ranges() {
    for (len, threads) in [
        (10, 3),
        (9, 3),
        (10, 4),
        (2, 4),
        (0, 4),
        (0, 1),
        (5, 1),
        (1, 1),
        (7, 7),
    ] {
        let got = within(
            DEADLINE,
            &format!("chunk_ranges({len}, {threads})"),
            move || chunk_ranges(len, threads),
        );
        let expected = expected_ranges(len, threads);
        if got != expected {
            Report::new(format!("called chunk_ranges({len}, {threads})"))
                .expected(format!("{expected:?}"))
                .got(format!("{got:?}"))
                .hint(split_problem(len, threads, &got).unwrap_or_default())
                .fail();
        }
    }
}

// chunk_ranges keeps every property of the split for every length 0..=200 and thread count 1..=20, and for a large input.
#[test]
fn test_02_chunk_ranges_is_balanced_for_every_length_and_thread_count() {
    let mut cases: Vec<(usize, usize)> = (0..=200)
        .flat_map(|len| (1..=20).map(move |t| (len, t)))
        .collect();
    cases.extend([(10_000_019, 7), (10_000_000, 3), (1 << 20, 1000)]);
    for (len, threads) in cases {
        let got = within(
            DEADLINE,
            &format!("chunk_ranges({len}, {threads})"),
            move || chunk_ranges(len, threads),
        );
        if let Some(problem) = split_problem(len, threads, &got) {
            Report::new(format!("called chunk_ranges({len}, {threads})"))
                .expected(show_ranges(&expected_ranges(len, threads)))
                .got(format!("{}: {problem}", show_ranges(&got)))
                .hint("n = min(threads, len) chunks; q = len / n, r = len % n; chunk i has q + 1 items if i < r, else q")
                .fail();
        }
    }
}

// chunk_ranges with zero threads panics with the documented message, rather than dividing by zero or returning nothing.
#[test]
#[should_panic(expected = "threads must be at least 1")]
fn test_03_chunk_ranges_rejects_zero_threads() {
    within(DEADLINE, "chunk_ranges(10, 0)", || chunk_ranges(10, 0));
}

// sum_sequential is exact: 0 for no data, and totals above u64::MAX without wrapping or panicking.
#[test]
fn test_04_sum_sequential_adds_everything_in_u128() {
    let big = random_data(100_000, 1, 64);
    let cases: Vec<(Vec<u64>, u128)> = vec![
        (vec![], 0),
        (vec![1, 2, 3], 6),
        (vec![u64::MAX], u64::MAX as u128),
        (vec![u64::MAX, u64::MAX, 2], 1u128 << 65),
        (vec![u64::MAX; 1000], 1000 * (u64::MAX as u128)),
        (big.clone(), exact_sum(&big)),
    ];
    for (data, expected) in cases {
        let what = format!("sum_sequential(&data) with data = {}", describe(&data));
        let shown = describe(&data);
        let got = catch_unwind(AssertUnwindSafe(|| {
            within(DEADLINE, &what, move || sum_sequential(&data))
        }));
        match got {
            Ok(got) if got == expected => {}
            Ok(got) => Report::new(format!("called sum_sequential(&data) with data = {shown}"))
                .expected(format!("{expected}"))
                .got(format!("{got}"))
                .hint(if got == expected % (1u128 << 64) {
                    "it wrapped around at 2^64: widen each item before adding (u128::from(x)), not the u64 total after"
                } else {
                    "add every item exactly once"
                })
                .fail(),
            Err(p) => Report::new(format!("called sum_sequential(&data) with data = {shown}"))
                .expected(format!("{expected}"))
                .got(format!("a panic: {}", panic_message(&*p)))
                .hint(PANIC_HINT)
                .fail(),
        }
    }
}

// ---------------------------------------------------------------------------
// Milestone 2: scoped threads
// ---------------------------------------------------------------------------

// sum_scoped equals the sequential sum on random data, for even and uneven splits and 1 to 64 threads.
#[test]
fn test_05_scoped_matches_the_sequential_sum() {
    matches_sequential(Variant::Scoped);
}

// sum_scoped sums exactly the balanced chunks, in order, each on its own thread.
#[test]
fn test_06_scoped_sums_each_balanced_chunk_on_its_own_thread() {
    splits_into_balanced_chunks(Variant::Scoped);
}

// sum_scoped handles no data, fewer items than threads, one thread and 128 threads.
#[test]
fn test_07_scoped_handles_empty_input_few_items_and_many_threads() {
    handles_edge_cases(Variant::Scoped);
}

// sum_scoped totals above u64::MAX exactly, within one chunk and across chunks.
#[test]
fn test_08_scoped_sums_beyond_u64_max() {
    sums_beyond_u64_max(Variant::Scoped);
}

// sum_scoped with zero threads panics with the documented message.
#[test]
fn test_09_scoped_rejects_zero_threads() {
    rejects_zero_threads(Variant::Scoped);
}

// ---------------------------------------------------------------------------
// Milestone 3: channels
// ---------------------------------------------------------------------------

// sum_channels equals the sequential sum on random data, for even and uneven splits and 1 to 64 threads.
#[test]
fn test_10_channels_matches_the_sequential_sum() {
    matches_sequential(Variant::Channels);
}

// sum_channels sums exactly the balanced chunks, returned in chunk order, each on its own thread.
#[test]
fn test_11_channels_sums_each_balanced_chunk_on_its_own_thread() {
    splits_into_balanced_chunks(Variant::Channels);
}

// sum_channels handles no data (no messages at all), fewer items than threads, one thread and 128 threads.
#[test]
fn test_12_channels_handles_empty_input_few_items_and_many_threads() {
    handles_edge_cases(Variant::Channels);
}

// sum_channels totals above u64::MAX exactly, within one chunk and across chunks.
#[test]
fn test_13_channels_sums_beyond_u64_max() {
    sums_beyond_u64_max(Variant::Channels);
}

// sum_channels with zero threads panics with the documented message.
#[test]
fn test_14_channels_rejects_zero_threads() {
    rejects_zero_threads(Variant::Channels);
}

// ---------------------------------------------------------------------------
// Milestone 4: Arc<Mutex<_>>
// ---------------------------------------------------------------------------

// sum_mutex equals the sequential sum on random data, for even and uneven splits and 1 to 64 threads.
#[test]
fn test_15_mutex_matches_the_sequential_sum() {
    matches_sequential(Variant::Mutex);
}

// sum_mutex sums exactly the balanced chunks, returned in chunk order, each on its own thread.
#[test]
fn test_16_mutex_sums_each_balanced_chunk_on_its_own_thread() {
    splits_into_balanced_chunks(Variant::Mutex);
}

// sum_mutex handles no data, fewer items than threads, one thread and 128 threads.
#[test]
fn test_17_mutex_handles_empty_input_few_items_and_many_threads() {
    handles_edge_cases(Variant::Mutex);
}

// sum_mutex totals above u64::MAX exactly, within one chunk and across chunks.
#[test]
fn test_18_mutex_sums_beyond_u64_max() {
    sums_beyond_u64_max(Variant::Mutex);
}

// sum_mutex with zero threads panics with the documented message.
#[test]
fn test_19_mutex_rejects_zero_threads() {
    rejects_zero_threads(Variant::Mutex);
}
