//! Grader for lab 30: sequence numbers (the receive side of TCP).
//!
//! Tests 01-11 are scripted: each feeds a few segments and checks every
//! observable (outcome, `ack`, `window`, `readable`, `buffered`, `sack`,
//! `stats`, the bytes read). Test 12 counts the heap with a per-thread
//! counting allocator. Tests 13 and 14 are seeded random runs: 13 compares
//! every step with a byte-by-byte model of the README's rules, 14 feeds a
//! whole stream cut into overlapping, duplicated, shuffled segments (with a
//! sender that retransmits what the window dropped) and checks the bytes
//! read are exactly the stream. Half of the random streams start just
//! below 2^32 and cross the wrap. A failure prints its seed; set
//! `LAB30_SEED=<seed>` to replay only that one.
//!
//! Every test runs inside `labkit::wait::within`, so a loop that never
//! ends fails in seconds with a message, not after nextest's timeout.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::time::Duration;

use labkit::Report;
use labkit::report::same;
use labkit::wait::within;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use sequence_numbers::{Outcome, Reassembler, Stats, seq_before};

/// How long one test may take (the random ones run a few hundred seeds).
const DEADLINE: Duration = Duration::from_secs(20);

fn run(what: &'static str, f: impl FnOnce() + Send + 'static) {
    within(DEADLINE, what, f)
}

// ---------------------------------------------------------------------------
// A per-thread counting allocator (test 12)
// ---------------------------------------------------------------------------

/// Forwards to the system allocator and counts the heap bytes the calling
/// thread holds, so a test measures its own reassembler, not the other
/// tests running as threads of the same process.
struct CountingAlloc;

thread_local! {
    // `const` initialiser, plain `Cell`: no lazy initialisation and no
    // destructor, so using it inside the allocator never allocates.
    static LIVE_BYTES: Cell<i64> = const { Cell::new(0) };
}

fn record(bytes: i64) {
    // `try_with`: during thread teardown the slot may already be gone.
    let _ = LIVE_BYTES.try_with(|c| c.set(c.get() + bytes));
}

// SAFETY: every method forwards to `System` with the same arguments; the
// counting touches only a thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size() as i64);
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size() as i64);
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        record(-(layout.size() as i64));
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size as i64 - layout.size() as i64);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

fn live_bytes() -> i64 {
    LIVE_BYTES.with(Cell::get)
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The stream of a test: printable, and no two pieces alike, so a byte
/// delivered twice, lost or out of place shows.
fn stream(len: usize, seed: u64) -> Vec<u8> {
    labkit::data::text(len, seed)
}

fn show(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    if s.len() > 80 {
        format!("{:?}... ({} bytes)", &s[..80], bytes.len())
    } else {
        format!("{s:?}")
    }
}

/// A reassembler with a log of what was done to it, for failure messages.
struct R {
    r: Reassembler,
    log: Vec<String>,
}

impl R {
    fn new(initial_seq: u32, capacity: u32) -> R {
        R {
            r: Reassembler::new(initial_seq, capacity),
            log: vec![format!("Reassembler::new({initial_seq}, {capacity})")],
        }
    }

    fn did(&self) -> String {
        self.log.join(", then ")
    }

    /// `receive`, which must give `want`.
    #[track_caller]
    fn recv(&mut self, seq: u32, data: &[u8], want: Outcome, hint: &str) {
        self.log.push(format!("receive({seq}, {})", show(data)));
        let got = self.r.receive(seq, data);
        same(&self.did(), want, got, hint);
    }

    #[track_caller]
    fn read(&mut self, max: usize, want: &[u8], hint: &str) {
        self.log.push(format!("read({max})"));
        let got = self.r.read(max);
        if got != want {
            Report::new(self.did())
                .expected(format!("read to return {}", show(want)))
                .got(show(&got))
                .hint(hint)
                .fail();
        }
    }

    #[track_caller]
    fn ack(&self, want: u32, hint: &str) {
        same(
            &format!("{}, then ack()", self.did()),
            want,
            self.r.ack(),
            hint,
        );
    }

    #[track_caller]
    fn window(&self, want: u32, hint: &str) {
        same(
            &format!("{}, then window()", self.did()),
            want,
            self.r.window(),
            hint,
        );
    }

    #[track_caller]
    fn readable(&self, want: usize, hint: &str) {
        same(
            &format!("{}, then readable()", self.did()),
            want,
            self.r.readable(),
            hint,
        );
    }

    #[track_caller]
    fn buffered(&self, want: usize, hint: &str) {
        same(
            &format!("{}, then buffered()", self.did()),
            want,
            self.r.buffered(),
            hint,
        );
    }

    #[track_caller]
    fn sack(&self, want: &[(u32, u32)], hint: &str) {
        same(
            &format!("{}, then sack()", self.did()),
            want.to_vec(),
            self.r.sack(),
            hint,
        );
    }

    #[track_caller]
    fn stats(&self, want: Stats, hint: &str) {
        same(
            &format!("{}, then stats()", self.did()),
            want,
            self.r.stats(),
            hint,
        );
    }
}

fn stats(
    segments: u64,
    delivered_bytes: u64,
    duplicate_bytes: u64,
    dropped_segments: u64,
    beyond_window_bytes: u64,
) -> Stats {
    Stats {
        segments,
        delivered_bytes,
        duplicate_bytes,
        dropped_segments,
        beyond_window_bytes,
    }
}

const WRAP: &str = "do you compare sequence numbers with seq_before (RFC 1982: (a.wrapping_sub(b) as i32) < 0) everywhere, never with a plain < on u32, and do all your offsets use wrapping_sub?";

// ---------------------------------------------------------------------------
// Scripted cases
// ---------------------------------------------------------------------------

// seq_before is RFC 1982's "less than" on the circle of 2^32 numbers: the base of every other test.
#[test]
fn test_01_seq_before_compares_on_the_circle() {
    run("seq_before", || {
        let half = 1u32 << 31;
        let cases = [
            (1, 2, true, "1 is just before 2"),
            (2, 1, false, "2 is after 1"),
            (5, 5, false, "a number is not before itself"),
            (u32::MAX, 0, true, "u32::MAX is just before 0: the wrap"),
            (0, u32::MAX, false, "0 comes after u32::MAX"),
            (
                u32::MAX - 10,
                5,
                true,
                "16 steps forward from u32::MAX - 10 reach 5",
            ),
            (5, u32::MAX - 10, false, "5 is 16 steps after u32::MAX - 10"),
            (0, half - 1, true, "2^31 - 1 ahead is still ahead"),
            (0, half + 1, false, "2^31 + 1 ahead is 2^31 - 1 behind"),
            (half + 1, 0, true, "0 is 2^31 - 1 after 2^31 + 1"),
            (100, 100 + (3 << 30), false, "3 * 2^30 ahead is 2^30 behind"),
        ];
        for (a, b, want, why) in cases {
            same(
                &format!("called seq_before({a}, {b}) ({why})"),
                want,
                seq_before(a, b),
                "RFC 1982: a is before b when b - a (mod 2^32) is in 1..2^31; (a.wrapping_sub(b) as i32) < 0",
            );
        }
    });
}

// The simple path: bytes in order are delivered, the ACK and the window follow, empty segments change nothing.
#[test]
fn test_02_in_order_segments_are_delivered_and_acked() {
    run("Reassembler in order", || {
        let mut r = R::new(1000, 64);
        r.ack(
            1000,
            "a new reassembler acks its initial_seq: the first byte it expects",
        );
        r.window(64, "a new reassembler's window is its capacity");
        r.readable(0, "nothing was received yet");
        r.buffered(0, "nothing was received yet");
        r.sack(&[], "nothing was received yet");
        r.stats(Stats::default(), "nothing was received yet");
        r.read(10, b"", "nothing was received yet");

        r.recv(
            1000,
            b"hello",
            Outcome::Delivered,
            "the segment starts at ack(): its bytes are delivered",
        );
        r.ack(
            1005,
            "ack() is the sequence number after the last byte delivered",
        );
        r.window(
            59,
            "window() = capacity - readable(): 5 bytes wait to be read",
        );
        r.readable(5, "5 bytes were delivered and not read");
        r.read(3, b"hel", "read(max) takes at most max bytes, in order");
        r.window(62, "reading 3 bytes frees 3 bytes of window: 2 unread");
        r.read(100, b"lo", "read takes what is left, no more");
        r.read(100, b"", "everything was read");
        r.window(64, "everything was read: the whole capacity is free");
        r.recv(
            1005,
            b" world",
            Outcome::Delivered,
            "the next bytes in order",
        );
        r.ack(1011, "5 + 6 bytes after 1000");
        r.recv(
            1011,
            b"",
            Outcome::Duplicate,
            "an empty segment brings nothing new: Duplicate",
        );
        r.ack(1011, "an empty segment changes nothing");
        r.read(usize::MAX, b" world", "read in order");
        r.stats(stats(3, 11, 0, 0, 0), "segments counts every receive (the empty one too), delivered_bytes the 11 bytes; nothing was duplicate, dropped or beyond the window");

        for cap in [0, Reassembler::MAX_CAPACITY + 1] {
            let p = std::panic::catch_unwind(|| Reassembler::new(0, cap));
            Report::new(format!("called Reassembler::new(0, {cap})"))
                .expected("a panic: the capacity must be in 1..=2^30")
                .got("a reassembler")
                .hint("assert the capacity in new")
                .check(p.is_err());
        }
        let r = Reassembler::new(7, Reassembler::MAX_CAPACITY);
        same(
            "called Reassembler::new(7, MAX_CAPACITY) then window()",
            Reassembler::MAX_CAPACITY,
            r.window(),
            "the largest capacity is allowed (and allocate as data arrives, not up front)",
        );
    });
}

// Bytes after a hole wait in the buffer; the segment that fills the hole delivers them too.
#[test]
fn test_03_bytes_after_a_hole_wait_until_it_is_filled() {
    run("Reassembler with a hole", || {
        let mut r = R::new(100, 64);
        r.recv(
            105,
            b"fghij",
            Outcome::Buffered,
            "bytes 100..105 are missing: these wait",
        );
        r.ack(100, "the ACK stays at the hole");
        r.readable(0, "nothing can be read past a hole");
        r.read(10, b"", "nothing can be read past a hole");
        r.buffered(5, "5 bytes wait after the hole");
        r.window(
            64,
            "the window counts only bytes delivered and not read; buffered bytes lie inside it",
        );
        r.sack(
            &[(105, 110)],
            "a SACK block is (left, right): the first byte held and the one after the last",
        );
        r.recv(112, b"mn", Outcome::Buffered, "another hole, 110..112");
        r.buffered(7, "5 + 2 bytes wait");
        r.recv(100, b"abcde", Outcome::Delivered, "it fills the first hole");
        r.ack(110, "once the hole is filled, the ACK moves over the bytes that waited behind it (105..110): does yours stop at the end of the segment?");
        r.readable(10, "100..110 are delivered");
        r.buffered(2, "112..114 still wait behind the hole at 110");
        r.sack(&[(112, 114)], "delivered bytes leave the SACK blocks");
        r.read(
            usize::MAX,
            b"abcdefghij",
            "the segment's bytes, then the bytes that waited",
        );
        r.recv(110, b"kl", Outcome::Delivered, "it fills the second hole");
        r.ack(114, "the ACK moves over 112..114 too");
        r.sack(&[], "nothing waits");
        r.read(usize::MAX, b"klmn", "in order");
        r.stats(stats(4, 14, 0, 0, 0), "14 bytes delivered, none twice");

        // One byte at a time, backwards: 31 blocks that grow into one.
        let data = stream(32, 3);
        let mut r = R::new(0, 64);
        for i in (1..32).rev() {
            r.recv(
                i,
                &data[i as usize..i as usize + 1],
                Outcome::Buffered,
                "every byte but byte 0 waits",
            );
        }
        r.sack(&[(1, 32)], "31 single bytes that touch are one block");
        r.buffered(31, "31 bytes wait");
        r.recv(0, &data[..1], Outcome::Delivered, "byte 0 fills the hole");
        r.ack(32, "everything is delivered once byte 0 arrives");
        r.read(usize::MAX, &data, "the 32 bytes, in order");
    });
}

// A retransmission of bytes already received is a duplicate: counted, never delivered twice, never counted as dropped.
#[test]
fn test_04_old_and_repeated_segments_are_duplicates_not_drops() {
    run("Reassembler with duplicates", || {
        let mut r = R::new(0, 64);
        r.recv(0, b"abcdef", Outcome::Delivered, "in order");
        r.recv(
            0,
            b"abcdef",
            Outcome::Duplicate,
            "the same segment again brings nothing new",
        );
        r.recv(
            2,
            b"cd",
            Outcome::Duplicate,
            "a segment entirely before ack() is old",
        );
        r.ack(6, "duplicates do not move the ACK");
        r.readable(6, "a duplicate is not delivered twice");
        r.stats(stats(3, 6, 8, 0, 0), "6 + 2 duplicate bytes; a segment before ack() is a duplicate, not a dropped segment (dropped is for the window)");
        r.recv(20, b"xyz", Outcome::Buffered, "after a hole");
        r.recv(20, b"xyz", Outcome::Duplicate, "already buffered");
        r.recv(21, b"y", Outcome::Duplicate, "inside buffered bytes");
        r.sack(&[(20, 23)], "duplicates add no block");
        r.buffered(3, "duplicates are not stored twice");
        r.read(usize::MAX, b"abcdef", "delivered once");
        r.recv(
            0,
            b"abc",
            Outcome::Duplicate,
            "bytes read by the application are still old",
        );
        r.recv(6u32.wrapping_sub(1000), &stream(10, 4), Outcome::Duplicate, "a segment from long before ack() (across the wrap below 0) is old, not beyond the window");
        r.window(64, "duplicates take no room");
        r.stats(
            stats(8, 6, 25, 0, 0),
            "duplicate_bytes 6 + 2 + 3 + 1 + 3 + 10 = 25, no dropped segment",
        );
    });
}

// A segment that overlaps what was received keeps only its new bytes, before ack() and around buffered blocks.
#[test]
fn test_05_overlapping_segments_are_trimmed_to_their_new_bytes() {
    run("Reassembler with overlaps", || {
        let s = b"abcdefghijklmnopqrstuvwxyz";
        let mut r = R::new(0, 64);
        r.recv(0, &s[0..4], Outcome::Delivered, "in order");
        r.recv(
            2,
            &s[2..8],
            Outcome::Delivered,
            "starts before ack(): its first 2 bytes are old, the other 4 new",
        );
        r.ack(8, "2 old bytes trimmed, 4 delivered");
        r.read(usize::MAX, &s[0..8], "each byte once");
        r.recv(12, &s[12..16], Outcome::Buffered, "after a hole");
        r.recv(
            10,
            &s[10..18],
            Outcome::Buffered,
            "covers the buffered 12..16 and more, still after the hole at 8",
        );
        r.sack(
            &[(10, 18)],
            "one block: 10..12 and 16..18 are new, 12..16 was there",
        );
        r.buffered(8, "10..18");
        r.recv(8, &s[8..10], Outcome::Delivered, "fills the hole");
        r.ack(18, "the ACK moves over the block");
        r.read(usize::MAX, &s[8..18], "each byte once, in order");
        r.recv(
            16,
            &s[16..22],
            Outcome::Delivered,
            "starts 2 bytes before ack()",
        );
        r.read(usize::MAX, &s[18..22], "only the new bytes");
        r.stats(
            stats(6, 22, 2 + 4 + 2, 0, 0),
            "duplicate_bytes counts exactly the bytes received before: 2 + 4 + 2",
        );
    });
}

// When a byte arrives twice with different contents, the first copy is kept (the README's rule; stacks differ, and IDSs must model it).
#[test]
fn test_06_the_first_copy_of_a_byte_wins() {
    run("Reassembler with conflicting overlaps", || {
        let mut r = R::new(0, 64);
        let hint = "a byte already held (buffered or delivered) is never replaced: write only into the gaps";
        r.recv(4, b"EFGH", Outcome::Buffered, "after a hole");
        r.recv(
            0,
            b"abcdefgh",
            Outcome::Delivered,
            "fills the hole; bytes 4..8 are held already",
        );
        r.read(usize::MAX, b"abcdEFGH", hint);
        r.recv(
            6,
            b"XYij",
            Outcome::Delivered,
            "6..8 were delivered, 8..10 are new",
        );
        r.read(usize::MAX, b"ij", hint);
        r.recv(20, b"tu", Outcome::Buffered, "after a hole");
        r.recv(
            18,
            b"QRSTUV",
            Outcome::Buffered,
            "around the buffered 20..22",
        );
        r.recv(10, b"klmnopqr", Outcome::Delivered, "fills the hole");
        r.read(usize::MAX, b"klmnopqrQRtuUV", hint);
        r.stats(
            stats(6, 24, 4 + 2 + 2, 0, 0),
            "the bytes not kept are duplicates",
        );
    });
}

// The window's right edge is exclusive: a segment ending exactly on it is kept whole, a byte at it is dropped or trimmed.
#[test]
fn test_07_the_window_edge_is_exact() {
    run("Reassembler at the window edge", || {
        let d = b"0123456789";
        let mut r = R::new(50, 10);
        r.recv(
            50,
            d,
            Outcome::Delivered,
            "10 bytes into a window of 10: it ends exactly at the edge, so all of it fits",
        );
        r.window(0, "10 bytes unread in a capacity of 10");
        r.stats(stats(1, 10, 0, 0, 0), "nothing was beyond the window");
        r.recv(
            60,
            b"x",
            Outcome::Dropped,
            "the window is 0: a segment at ack() starts at the edge",
        );
        r.stats(
            stats(2, 10, 0, 1, 1),
            "one segment dropped, its 1 byte beyond the window",
        );
        r.recv(59, b"9x", Outcome::Duplicate, "byte 59 is old and byte 60 beyond the edge: nothing new, and it does not start beyond the edge, so not Dropped");
        r.stats(
            stats(3, 10, 1, 1, 2),
            "1 duplicate byte, 1 more byte beyond the window, still 1 dropped segment",
        );
        r.read(usize::MAX, d, "the 10 bytes");

        let mut r = R::new(50, 10);
        r.recv(
            59,
            b"j",
            Outcome::Buffered,
            "the window is 50..60: 59 is its last byte",
        );
        r.sack(&[(59, 60)], "byte 59 is held");
        r.recv(
            60,
            b"k",
            Outcome::Dropped,
            "60 is the edge itself: beyond the window",
        );
        r.recv(52, b"cdefghijkl", Outcome::Buffered, "52..62: 52..60 fit (59 held already), 60..62 are trimmed off, the rest kept (TCP trims, it does not drop the segment)");
        r.sack(&[(52, 60)], "the trimmed segment ends at the edge");
        r.buffered(8, "52..60");
        r.stats(stats(3, 0, 1, 1, 3), "byte 59 twice: 1 duplicate; 1 + 2 bytes beyond the window; 1 dropped segment (the trimmed one was accepted)");
        r.recv(50, b"ab", Outcome::Delivered, "fills the hole");
        r.ack(60, "everything up to the edge");
        r.read(
            usize::MAX,
            b"abcdefghij",
            "in order, without the trimmed bytes",
        );

        let mut r = R::new(0, 4);
        r.recv(0, b"ab", Outcome::Delivered, "in order");
        r.recv(
            1,
            b"bcdefg",
            Outcome::Delivered,
            "bigger than the window: byte 1 is old, 2..4 fit, 4..7 are beyond the edge",
        );
        r.ack(4, "trimmed at both ends, the middle delivered");
        r.stats(
            stats(2, 4, 1, 0, 3),
            "1 duplicate byte, 3 beyond the window, nothing dropped",
        );
        r.read(usize::MAX, b"abcd", "in order");
    });
}

// The window slides as the application reads (capacity - unread), like TCP's: the right edge never moves left.
#[test]
fn test_08_reading_opens_the_window() {
    run("Reassembler window and reads", || {
        let mut r = R::new(0, 8);
        r.recv(0, b"abcdefgh", Outcome::Delivered, "fills the capacity");
        r.window(0, "8 unread bytes in a capacity of 8");
        r.recv(8, b"i", Outcome::Dropped, "a zero window accepts nothing");
        r.read(3, b"abc", "the first 3 bytes");
        r.window(3, "reading 3 bytes frees 3");
        r.ack(8, "reading does not move the ACK");
        r.recv(
            8,
            b"ijklm",
            Outcome::Delivered,
            "3 of its bytes fit the window",
        );
        r.ack(11, "8 + 3: the last 2 bytes were trimmed");
        r.window(0, "full again");
        r.stats(
            stats(3, 11, 0, 1, 3),
            "1 dropped segment; 1 + 2 bytes beyond the window",
        );
        r.read(100, b"defghijk", "the unread bytes, in order");
        r.window(8, "everything read: the whole capacity");
        r.recv(13, b"np", Outcome::Buffered, "after a hole at 11");
        r.window(
            8,
            "buffered bytes are inside the window, they do not shrink it",
        );
        let edge = r.r.ack().wrapping_add(r.r.window());
        r.recv(
            18,
            b"s",
            Outcome::Buffered,
            "the window is 11..19: 18 is its last byte",
        );
        r.recv(19, b"t", Outcome::Dropped, "19 is the edge");
        r.recv(11, b"lm", Outcome::Delivered, "fills the hole");
        same(
            &format!("{}, then ack() + window()", r.did()),
            edge,
            r.r.ack().wrapping_add(r.r.window()),
            "delivering moves ack() forward and window() down by the same amount: the right edge must not move until the application reads",
        );
        r.read(2, b"lm", "read(2) takes 2 bytes");
        r.window(8 - 2, "13..15 are still unread");
        r.read(usize::MAX, b"np", "then the rest");
    });
}

// SACK blocks are the maximal ranges held: overlapping and touching ranges are one block.
#[test]
fn test_09_sack_blocks_are_merged_and_coalesced() {
    run("Reassembler SACK merging", || {
        let s = stream(64, 9);
        let seg = |a: u32, b: u32| s[a as usize..b as usize].to_vec();
        let mut r = R::new(0, 100);
        let merge = "a SACK block is a maximal range: merge blocks that overlap, and coalesce blocks that touch (one ends where the next starts)";
        r.recv(10, &seg(10, 12), Outcome::Buffered, "after a hole");
        r.recv(20, &seg(20, 22), Outcome::Buffered, "after a hole");
        r.recv(30, &seg(30, 32), Outcome::Buffered, "after a hole");
        r.sack(
            &[(30, 32), (20, 22), (10, 12)],
            "three blocks, the most recently received first",
        );
        r.recv(
            12,
            &seg(12, 15),
            Outcome::Buffered,
            "touches 10..12 on its right",
        );
        r.sack(&[(10, 15), (30, 32), (20, 22)], merge);
        r.recv(
            18,
            &seg(18, 20),
            Outcome::Buffered,
            "touches 20..22 on its left",
        );
        r.sack(&[(18, 22), (10, 15), (30, 32)], merge);
        r.recv(
            15,
            &seg(15, 18),
            Outcome::Buffered,
            "bridges 10..15 and 18..22, touching both",
        );
        r.sack(&[(10, 22), (30, 32)], merge);
        r.recv(28, &seg(28, 35), Outcome::Buffered, "overlaps 30..32");
        r.sack(&[(28, 35), (10, 22)], merge);
        r.recv(20, &seg(20, 30), Outcome::Buffered, "overlaps both blocks");
        r.sack(&[(10, 35)], merge);
        r.buffered(25, "10..35");
        r.stats(
            stats(8, 0, 2 + 2 + 2, 0, 0),
            "duplicate bytes: 30..32, then 20..22 and 28..30",
        );
        r.recv(0, &seg(0, 10), Outcome::Delivered, "fills the hole");
        r.sack(&[], "everything is delivered");
        r.buffered(0, "everything is delivered");
        r.read(usize::MAX, &s[..35], "in order");
    });
}

// RFC 2018: the first SACK block holds the most recently received data; blocks follow by recency, and a duplicate reorders nothing.
#[test]
fn test_10_sack_reports_the_most_recent_block_first() {
    run("Reassembler SACK order", || {
        let s = stream(64, 10);
        let seg = |a: u32, b: u32| s[a as usize..b as usize].to_vec();
        let order = "order the blocks by the last segment that brought a new byte into each, most recent first (RFC 2018), not by sequence number";
        let mut r = R::new(0, 100);
        r.recv(40, &seg(40, 42), Outcome::Buffered, "after a hole");
        r.recv(10, &seg(10, 12), Outcome::Buffered, "after a hole");
        r.recv(30, &seg(30, 32), Outcome::Buffered, "after a hole");
        r.recv(20, &seg(20, 22), Outcome::Buffered, "after a hole");
        r.sack(&[(20, 22), (30, 32), (10, 12), (40, 42)], order);
        r.recv(12, &seg(12, 13), Outcome::Buffered, "extends 10..12");
        r.sack(&[(10, 13), (20, 22), (30, 32), (40, 42)], order);
        r.recv(40, &seg(40, 42), Outcome::Duplicate, "nothing new");
        r.sack(
            &[(10, 13), (20, 22), (30, 32), (40, 42)],
            "a segment that brought no new byte does not make its block the most recent",
        );
        r.recv(
            29,
            &seg(29, 32),
            Outcome::Buffered,
            "one new byte, 29, then 30..32 again",
        );
        r.sack(&[(29, 32), (10, 13), (20, 22), (40, 42)], order);
        r.recv(
            0,
            &seg(0, 10),
            Outcome::Delivered,
            "fills the first hole: 0..13 delivered",
        );
        r.ack(13, "the ACK moves over 10..13");
        r.sack(
            &[(29, 32), (20, 22), (40, 42)],
            "the delivered block leaves; the others keep their order",
        );
    });
}

// Streams cross 2^32: in-order, out-of-order, SACK blocks, the window edge and old segments all work across the wrap.
#[test]
fn test_11_sequence_numbers_wrap_around() {
    run("Reassembler across the wrap", || {
        let s = stream(40, 11);
        let init = u32::MAX - 4;
        let at = |i: u32| init.wrapping_add(i);
        let seg = |a: usize, b: usize| s[a..b].to_vec();
        let mut r = R::new(init, 64);
        r.recv(at(0), &seg(0, 3), Outcome::Delivered, WRAP);
        r.recv(at(3), &seg(3, 10), Outcome::Delivered, "this segment's bytes are numbered u32::MAX - 1, u32::MAX, 0, 1, ...: it crosses the wrap");
        r.ack(5, "10 bytes after u32::MAX - 4 is 5, after the wrap");
        r.window(54, "10 unread bytes");
        r.recv(at(15), &seg(15, 20), Outcome::Buffered, WRAP);
        r.sack(&[(10, 15)], WRAP);
        r.recv(at(0), &seg(0, 5), Outcome::Duplicate, "this segment (u32::MAX - 4 .. 0) ends before ack() = 5: old, even though u32::MAX - 4 > 5 as plain numbers");
        r.recv(at(3), &seg(3, 12), Outcome::Delivered, "starts before the wrap (u32::MAX - 1), 7 bytes before ack(): trimmed to its last 2 bytes, 5..7");
        r.ack(7, WRAP);
        r.recv(
            at(12),
            &seg(12, 15),
            Outcome::Delivered,
            "fills the hole 7..10",
        );
        r.ack(15, "the ACK moves over the buffered block 10..15");
        r.read(usize::MAX, &s[..20], WRAP);
        r.stats(
            stats(6, 20, 5 + 7, 0, 0),
            "duplicates across the wrap: 5, then 7",
        );

        let mut r = R::new(init, 64);
        r.recv(at(2), &seg(2, 8), Outcome::Buffered, WRAP);
        r.sack(&[(u32::MAX - 2, 3)], "a block can cross the wrap: its left edge is then above its right edge as plain numbers");
        r.buffered(6, WRAP);
        r.recv(at(0), &seg(0, 2), Outcome::Delivered, WRAP);
        r.ack(3, WRAP);

        let mut r = R::new(init, 10);
        r.recv(
            at(9),
            &seg(9, 10),
            Outcome::Buffered,
            "the window is u32::MAX - 4 .. 5, across the wrap: 4 is its last byte",
        );
        r.recv(
            at(10),
            &seg(10, 11),
            Outcome::Dropped,
            "5 is the window's edge",
        );
        r.recv(
            at(0),
            &seg(0, 12),
            Outcome::Delivered,
            "trimmed at the edge, 5",
        );
        r.ack(5, WRAP);
        r.read(usize::MAX, &s[..10], WRAP);
        r.stats(
            stats(3, 10, 1, 1, 3),
            "1 duplicate byte; 1 + 2 bytes beyond the window",
        );

        let mut r = R::new(100, 64);
        let far = stream(10, 12);
        r.recv(
            100 + (1 << 30),
            &far,
            Outcome::Dropped,
            "2^30 ahead of ack(): far beyond the window",
        );
        r.recv(100u32.wrapping_add(3 << 30), &far, Outcome::Duplicate, "3 * 2^30 ahead is 2^30 behind on the circle (RFC 1982): an old segment, not one beyond the window. Do you compute seq - ack as a u32 offset and compare it with the window, without asking seq_before whether it is behind?");
        r.stats(stats(2, 0, 10, 1, 10), "one dropped, one duplicate");
    });
}

// The buffer is bounded by the capacity, whatever arrives: duplicates, floods beyond the window, a huge segment.
#[test]
fn test_12_memory_stays_bounded_by_the_capacity() {
    run("Reassembler memory", || {
        const CAP: u32 = 4096;
        let s = stream(CAP as usize, 13);
        let huge = stream(1 << 20, 14);
        let flood = stream(100, 15);
        let bound = 512 * 1024 + 16 * i64::from(CAP);
        let base = live_bytes();
        let mut r = Reassembler::new(0, CAP);
        let check = |r: &Reassembler, did: &str| {
            let used = live_bytes() - base;
            Report::new(format!("Reassembler::new(0, {CAP}), then {did}"))
                .expected(format!("the reassembler to hold at most {bound} bytes of heap (a generous bound for {CAP} bytes of capacity)"))
                .got(format!("{used} bytes held by this thread since new(); ack() = {}, buffered() = {}", r.ack(), r.buffered()))
                .hint("the buffer holds only bytes inside the window: trim the tail beyond the edge, store duplicates once, and keep nothing of a dropped segment")
                .check(used <= bound);
        };
        // Every other byte: 2048 blocks, the worst case for the block list.
        for i in (1..CAP).step_by(2) {
            r.receive(i, &s[i as usize..i as usize + 1]);
        }
        check(&r, "every odd byte of the window (2048 one-byte blocks)");
        for _ in 0..20_000 {
            r.receive(CAP + 10, &flood);
        }
        check(&r, "20000 segments of 100 bytes beyond the window");
        for k in 0..20_000u32 {
            let i = 1 + 2 * (k % (CAP / 2));
            r.receive(i, &s[i as usize..i as usize + 1]);
        }
        check(&r, "20000 duplicates of buffered bytes");
        r.receive(2, &huge);
        check(&r, "a segment of 1 MiB starting inside the window");
        same(
            "the same, then stats().beyond_window_bytes",
            20_000 * 100 + (1 << 20) - u64::from(CAP - 2),
            r.stats().beyond_window_bytes,
            "all that does not fit the window is beyond it",
        );
        r.receive(0, &s[..2]);
        same(
            "the same, then receive(0, 2 bytes) and ack()",
            CAP,
            r.ack(),
            "the window is full now",
        );
        for _ in 0..20_000 {
            r.receive(0, &flood);
        }
        check(&r, "a full window and 20000 old segments");
        let read = r.read(usize::MAX);
        let mut want = s[..2].to_vec();
        for i in 2..CAP as usize {
            want.push(if i % 2 == 1 { s[i] } else { huge[i - 2] });
        }
        Report::new("the same, then read(usize::MAX)")
            .expected(format!("the {CAP} bytes of the window: odd bytes from the first segments, even ones from the 1 MiB segment"))
            .got(format!("{} bytes, first difference at {:?}", read.len(), read.iter().zip(&want).position(|(a, b)| a != b)))
            .hint("the first copy of a byte wins; only gaps are filled")
            .check(read == want);
    });
}

// ---------------------------------------------------------------------------
// The model (test 13): the README's rules, one byte at a time
// ---------------------------------------------------------------------------

/// The README's rules in stream offsets (bytes since `initial_seq`), one
/// byte at a time: slow and obviously right. A segment here is given by its
/// offset, which the test turns into a sequence number.
struct Model {
    initial: u32,
    capacity: u64,
    nxt: u64,
    unread: VecDeque<u8>,
    /// Bytes held beyond `nxt`: offset -> (byte, the segment that brought it).
    held: BTreeMap<u64, (u8, u64)>,
    stats: Stats,
}

impl Model {
    fn new(initial: u32, capacity: u32) -> Model {
        Model {
            initial,
            capacity: u64::from(capacity),
            nxt: 0,
            unread: VecDeque::new(),
            held: BTreeMap::new(),
            stats: Stats::default(),
        }
    }

    fn window(&self) -> u64 {
        self.capacity - self.unread.len() as u64
    }

    fn receive(&mut self, off: u64, data: &[u8]) -> Outcome {
        self.stats.segments += 1;
        let stamp = self.stats.segments;
        let len = data.len() as u64;
        if len == 0 {
            return Outcome::Duplicate;
        }
        let edge = self.nxt + self.window();
        if off >= edge {
            self.stats.dropped_segments += 1;
            self.stats.beyond_window_bytes += len;
            return Outcome::Dropped;
        }
        let mut new = 0;
        for (i, &b) in data.iter().enumerate() {
            let o = off + i as u64;
            if o < self.nxt || self.held.contains_key(&o) {
                self.stats.duplicate_bytes += 1;
            } else if o >= edge {
                self.stats.beyond_window_bytes += 1;
            } else {
                self.held.insert(o, (b, stamp));
                new += 1;
            }
        }
        if new == 0 {
            return Outcome::Duplicate;
        }
        let was = self.nxt;
        while let Some((b, _)) = self.held.remove(&self.nxt) {
            self.unread.push_back(b);
            self.nxt += 1;
            self.stats.delivered_bytes += 1;
        }
        if self.nxt > was {
            Outcome::Delivered
        } else {
            Outcome::Buffered
        }
    }

    fn read(&mut self, max: usize) -> Vec<u8> {
        let n = max.min(self.unread.len());
        self.unread.drain(..n).collect()
    }

    fn sack(&self) -> Vec<(u32, u32)> {
        // Maximal runs of held offsets, each with its newest stamp.
        let mut runs: Vec<(u64, u64, u64)> = Vec::new();
        for (&o, &(_, stamp)) in &self.held {
            match runs.last_mut() {
                Some(run) if run.1 == o => {
                    run.1 = o + 1;
                    run.2 = run.2.max(stamp);
                }
                _ => runs.push((o, o + 1, stamp)),
            }
        }
        runs.sort_by_key(|run| std::cmp::Reverse(run.2));
        runs.iter()
            .map(|&(a, b, _)| (self.seq(a), self.seq(b)))
            .collect()
    }

    fn seq(&self, off: u64) -> u32 {
        self.initial.wrapping_add(off as u32)
    }
}

/// The seeds to run: `LAB30_SEED` replays one.
fn seeds(n: u64) -> Vec<u64> {
    match std::env::var("LAB30_SEED") {
        Ok(s) => vec![s.trim().parse().expect("LAB30_SEED must be a number")],
        Err(_) => (0..n).collect(),
    }
}

/// An initial sequence number: half the time a few bytes below 2^32, so
/// the stream crosses the wrap.
fn initial_seq(rng: &mut SmallRng, len: usize) -> u32 {
    if rng.random_bool(0.5) {
        u32::MAX - rng.random_range(0..=len as u32)
    } else {
        rng.random()
    }
}

// Seeded random segments (old, overlapping, beyond the window, conflicting) and reads, compared after every step with the README's rules.
#[test]
fn test_13_random_segments_match_a_byte_by_byte_model() {
    run("Reassembler against the model", || {
        for seed in seeds(300) {
            let mut rng = SmallRng::seed_from_u64(seed);
            let len = rng.random_range(1..3000);
            let s = stream(len, seed);
            let capacity = rng.random_range(1..300u32);
            let init = initial_seq(&mut rng, len);
            let mut m = Model::new(init, capacity);
            let mut r = Reassembler::new(init, capacity);
            let mut log: Vec<String> = vec![format!("Reassembler::new({init}, {capacity})")];
            let fail = |log: &[String], what: &str, want: String, got: String| -> ! {
                let mut did = format!("seed {seed}: ");
                let skip = log.len().saturating_sub(12);
                if skip > 0 {
                    let _ = write!(did, "({skip} earlier steps) ");
                }
                did.push_str(&log[skip..].join(", "));
                Report::new(did)
                    .did(format!("then {what}"))
                    .expected(want)
                    .got(got)
                    .hint(format!("replay this case alone with LAB30_SEED={seed} cargo test test_13; offsets in the log are bytes since initial_seq. Which README rule does this step exercise?"))
                    .fail()
            };
            for _ in 0..400 {
                if m.nxt as usize >= len {
                    break;
                }
                if rng.random_bool(0.2) {
                    let max = rng.random_range(0..=capacity as usize);
                    log.push(format!("read({max})"));
                    let (want, got) = (m.read(max), r.read(max));
                    if want != got {
                        fail(&log, "the bytes read", show(&want), show(&got));
                    }
                } else {
                    // A segment near the window: some old, some past the edge.
                    let lo = m.nxt.saturating_sub(40);
                    let hi = m.nxt + m.window() + 20;
                    let off = rng.random_range(lo..=hi).min(len as u64 - 1);
                    let n = rng
                        .random_range(0..=(capacity as u64 / 2 + 3))
                        .min(len as u64 - off);
                    let mut data = s[off as usize..(off + n) as usize].to_vec();
                    if rng.random_bool(0.1) {
                        // A conflicting copy: the first copy must win.
                        data.iter_mut().for_each(|b| *b = b.to_ascii_uppercase());
                    }
                    let seq = init.wrapping_add(off as u32);
                    log.push(format!("receive({seq} = offset {off}, {n} bytes)"));
                    let (want, got) = (m.receive(off, &data), r.receive(seq, &data));
                    if want != got {
                        fail(&log, "the outcome", format!("{want:?}"), format!("{got:?}"));
                    }
                }
                if m.seq(m.nxt) != r.ack() {
                    fail(&log, "ack()", m.seq(m.nxt).to_string(), r.ack().to_string());
                }
                if m.window() != u64::from(r.window()) {
                    fail(
                        &log,
                        "window()",
                        m.window().to_string(),
                        r.window().to_string(),
                    );
                }
                if m.unread.len() != r.readable() {
                    fail(
                        &log,
                        "readable()",
                        m.unread.len().to_string(),
                        r.readable().to_string(),
                    );
                }
                if m.held.len() != r.buffered() {
                    fail(
                        &log,
                        "buffered()",
                        m.held.len().to_string(),
                        r.buffered().to_string(),
                    );
                }
                let (want, got) = (m.sack(), r.sack());
                if want != got {
                    fail(&log, "sack()", format!("{want:?}"), format!("{got:?}"));
                }
                if m.stats != r.stats() {
                    fail(
                        &log,
                        "stats()",
                        format!("{:?}", m.stats),
                        format!("{:?}", r.stats()),
                    );
                }
            }
        }
    });
}

// ---------------------------------------------------------------------------
// The property (test 14)
// ---------------------------------------------------------------------------

// Any order, with duplicates and overlaps, and a sender that retransmits what the window refused: the bytes read are exactly the stream.
#[test]
fn test_14_any_permutation_with_duplicates_delivers_the_original_bytes() {
    run("Reassembler property", || {
        for seed in seeds(300) {
            let mut rng = SmallRng::seed_from_u64(seed ^ 0x5EED);
            let len = rng.random_range(1..6000usize);
            let s = stream(len, seed + 1000);
            let capacity = rng.random_range(16..2048u32);
            let init = initial_seq(&mut rng, len);
            let did = format!(
                "seed {seed}: a stream of {len} bytes from initial_seq {init} (wraps: {}), capacity {capacity}",
                u64::from(init) + len as u64 > 1 << 32
            );
            let hint = format!("replay this case alone with LAB30_SEED={seed} cargo test test_14");

            // Segments: a cover of the stream, plus overlapping pieces and
            // copies of some of them.
            let mut segs: Vec<(usize, usize)> = Vec::new();
            let mut at = 0;
            while at < len {
                let n = rng.random_range(1..=300).min(len - at);
                segs.push((at, at + n));
                at += n;
            }
            for _ in 0..segs.len() / 2 + 1 {
                let a = rng.random_range(0..len);
                let b = (a + rng.random_range(1..=400)).min(len);
                segs.push((a, b));
            }
            for _ in 0..segs.len() / 3 {
                let k = rng.random_range(0..segs.len());
                segs.push(segs[k]);
            }

            let mut r = Reassembler::new(init, capacity);
            let mut out: Vec<u8> = Vec::with_capacity(len);
            let mut pending = segs.clone();
            let mut rounds = 0;
            let mut fed = 0usize;
            let mut offered = 0u64;
            while !pending.is_empty() {
                rounds += 1;
                if rounds > 2 * len / 16 + 10 {
                    Report::new(&did)
                        .did(format!("fed {fed} segments in {rounds} rounds, retransmitting every segment not yet acked, reading between them"))
                        .expected(format!("ack() to reach {}", init.wrapping_add(len as u32)))
                        .got(format!("ack() = {}, {} bytes read, sack() = {:?}", r.ack(), out.len(), r.sack()))
                        .hint(format!("each round the whole window is offered again, so the ACK must move: does it stop after a hole is filled, or does the window stay closed? {hint}"))
                        .fail();
                }
                pending.shuffle(&mut rng);
                for &(a, b) in &pending {
                    r.receive(init.wrapping_add(a as u32), &s[a..b]);
                    fed += 1;
                    offered += (b - a) as u64;
                    if rng.random_bool(0.3) {
                        let max = rng.random_range(0..=capacity as usize);
                        out.extend(r.read(max));
                    }
                }
                out.extend(r.read(usize::MAX));
                // The sender retransmits what is not acked yet, as TCP does.
                let acked = (r.ack().wrapping_sub(init) as usize).min(len);
                pending = segs.iter().copied().filter(|&(_, b)| b > acked).collect();
                if out.len() >= len {
                    break;
                }
            }
            if out != s {
                let first = out.iter().zip(&s).position(|(a, b)| a != b);
                Report::new(&did)
                    .did(format!("fed {} segments (overlapping, duplicated, shuffled) in {rounds} rounds, reading as it went", fed))
                    .expected(format!("to read the {len} bytes of the stream, exactly"))
                    .got(format!("{} bytes; first difference at {:?}", out.len(), first.or(Some(out.len().min(len)))))
                    .hint(format!("is a byte lost, doubled or misplaced when segments overlap or cross the wrap? {hint}"))
                    .fail();
            }
            let end = init.wrapping_add(len as u32);
            same(
                &format!("{did}, fed every segment, then ack()"),
                end,
                r.ack(),
                &hint,
            );
            same(
                &format!("{did}, fed every segment, then sack()"),
                vec![],
                r.sack(),
                &hint,
            );
            let st = r.stats();
            same(
                &format!("{did}, then stats().segments"),
                fed as u64,
                st.segments,
                "segments counts every receive call",
            );
            same(
                &format!("{did}, then stats().delivered_bytes"),
                len as u64,
                st.delivered_bytes,
                &hint,
            );
            // Every byte offered went exactly one way: new, old, or beyond.
            same(
                &format!("{did}, then delivered_bytes + duplicate_bytes + beyond_window_bytes"),
                offered,
                st.delivered_bytes + st.duplicate_bytes + st.beyond_window_bytes,
                "each byte of a segment is counted once: new (delivered in the end), a duplicate, or beyond the window",
            );
            same(
                &format!("{did}, fed every segment, then buffered()"),
                0,
                r.buffered(),
                &hint,
            );
        }
    });
}
