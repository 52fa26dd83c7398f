//! The receive side of TCP: put a byte stream back together from numbered
//! segments that arrive out of order, twice, or overlapping; deliver it in
//! order; report the cumulative ACK and the SACK blocks; bound the buffer
//! by a window; and survive the 32-bit sequence numbers wrapping around.
//!
//! ```ignore
//! let mut r = Reassembler::new(u32::MAX - 1, 64); // the stream starts 2 bytes before the wrap
//! assert_eq!(r.receive(1, b"lo"), Outcome::Buffered); // after a hole of 3 bytes
//! assert_eq!(r.sack(), vec![(1, 3)]);
//! assert_eq!(r.receive(u32::MAX - 1, b"hel"), Outcome::Delivered); // fills the hole
//! assert_eq!(r.ack(), 3);
//! assert_eq!(r.read(usize::MAX), b"hello");
//! ```
//!
//! # Design
//!
//! Sequence numbers live on a circle of 2^32 points, so "before" has no
//! meaning on its own: `5` is after `u32::MAX` once the stream wrapped.
//! [`seq_before`] is RFC 1982's answer, the one every TCP stack uses
//! (Linux's `before()` in `include/net/tcp.h` is the same line): `a` is
//! before `b` when going forward from `a` reaches `b` in at most half the
//! circle. That
//! holds as long as nothing the receiver compares is 2^31 or more apart,
//! which the window guarantees (at most 2^30, TCP's own limit).
//!
//! The comparisons happen once, at the door: [`Reassembler::receive`]
//! classifies a segment against `rcv_nxt` and the right edge of the window
//! with [`seq_before`], trims it to the part inside the window, and turns
//! that part into 64-bit *stream offsets* (bytes since `initial_seq`).
//! Offsets never wrap, so everything behind the door (the map of blocks,
//! the byte store) uses plain `<`. This is what QUIC does with packet
//! numbers (truncated on the wire, expanded to 62 bits on receipt), and
//! CS144's "Wrap32"; Linux instead keeps `u32` everywhere and calls
//! `before()`/`after()` at every comparison, which saves the conversion
//! but leaves a dozen places to get wrong.
//!
//! The state behind the door:
//!
//! - **`bytes`, one `VecDeque<u8>`** holding the stream from the first byte
//!   the application has not read yet, `read_off`, up to the end of the
//!   last buffered block. `[read_off, nxt)` is the in-order data waiting
//!   for [`Reassembler::read`]; past `nxt` are buffered blocks and holes
//!   (zeros, never read). A byte is written once, where it belongs, and
//!   delivering a block is moving `nxt`: no copy. The right edge of the
//!   window is `read_off + capacity`, so `bytes` never grows past
//!   `capacity`, whatever arrives.
//! - **`blocks`, a `BTreeMap` of start offset to end and recency**: the
//!   byte ranges held beyond `nxt`, kept disjoint and never touching (two
//!   ranges that meet are one block), so they are exactly the SACK blocks.
//!   Linux keeps its out-of-order queue in a red-black tree for the same
//!   reason: a segment finds its neighbours in O(log n).
//!
//! When a byte arrives twice, the first copy wins: the new segment only
//! fills the gaps between blocks. RFC 793 leaves the choice open, and
//! stacks differ, which intrusion-detection systems have to model (an
//! attacker sends two different versions of the same bytes, and the IDS
//! must know which one the host will keep).
//!
//! The window slides as the application reads, like TCP's: `window =
//! capacity - unread`. Delivering bytes moves `rcv_nxt` and the unread
//! count up together, so the right edge stays put; reading moves it right.
//! It never moves left, which RFC 9293 asks of a receiver (a sender may
//! already have sent up to the edge it was told).

use std::cmp::Reverse;
use std::collections::{BTreeMap, VecDeque};

/// RFC 1982 serial comparison: `a` comes before `b` on the circle of 2^32
/// sequence numbers, that is `b - a` (mod 2^32) is in `1..=2^31`. At
/// exactly 2^31 apart both are "before" the other (RFC 1982 leaves it
/// undefined); a receiver never compares numbers that far apart.
pub fn seq_before(a: u32, b: u32) -> bool {
    // `a - b` wraps; read as signed it is the distance from b to a, negative
    // when a is behind b.
    (a.wrapping_sub(b) as i32) < 0
}

/// What [`Reassembler::receive`] did with one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// New bytes at `ack()`: the cumulative ACK moved forward (over any
    /// buffered bytes that now follow without a hole).
    Delivered,
    /// New bytes after a hole: they wait in the buffer, the ACK did not move.
    Buffered,
    /// No new byte: every byte of it was received before (it ends at or
    /// before `ack()`, or lies inside buffered data), or it had none.
    Duplicate,
    /// It starts at or beyond the right edge of the window: nothing kept.
    Dropped,
}

/// Counters since [`Reassembler::new`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Calls of [`Reassembler::receive`], empty segments included.
    pub segments: u64,
    /// Bytes delivered in order (how far the ACK moved, without wrapping).
    pub delivered_bytes: u64,
    /// Bytes received again: before `ack()`, or already buffered.
    pub duplicate_bytes: u64,
    /// Segments [`Outcome::Dropped`].
    pub dropped_segments: u64,
    /// Bytes at or beyond the right edge of the window, discarded: all of a
    /// dropped segment, and the trimmed tail of an accepted one.
    pub beyond_window_bytes: u64,
}

/// One range of bytes held beyond `nxt`.
#[derive(Debug, Clone, Copy)]
struct Block {
    /// Stream offset one past its last byte.
    end: u64,
    /// The number of the last segment that brought a new byte into it:
    /// SACK reports the most recent block first.
    recency: u64,
}

/// The receive buffer of one TCP connection; see the module docs.
#[derive(Debug)]
pub struct Reassembler {
    /// Sequence number of stream offset 0.
    initial: u32,
    capacity: u32,
    /// Stream offset of `bytes[0]`: the first byte not yet read.
    read_off: u64,
    /// Stream offset of `rcv_nxt`: the first byte not yet received.
    nxt: u64,
    /// Stream offsets `read_off..`, up to the end of the last block.
    bytes: VecDeque<u8>,
    /// Start offset -> block, for the ranges held beyond `nxt`.
    blocks: BTreeMap<u64, Block>,
    stats: Stats,
}

impl Reassembler {
    /// The largest capacity: 2^30 bytes, TCP's largest window (a 16-bit
    /// window shifted by the largest scale, 14). It keeps every distance the
    /// receiver compares below 2^31, where [`seq_before`] stops working.
    pub const MAX_CAPACITY: u32 = 1 << 30;

    /// A receiver whose next expected byte is `initial_seq` (in TCP, the
    /// peer's ISN + 1) with a buffer of `capacity` bytes.
    ///
    /// # Panics
    ///
    /// If `capacity` is 0 or more than [`Reassembler::MAX_CAPACITY`].
    pub fn new(initial_seq: u32, capacity: u32) -> Reassembler {
        assert!(
            (1..=Self::MAX_CAPACITY).contains(&capacity),
            "capacity must be in 1..=2^30, got {capacity}"
        );
        Reassembler {
            initial: initial_seq,
            capacity,
            read_off: 0,
            nxt: 0,
            // Allocated as data arrives, not up front: most connections
            // never fill their window.
            bytes: VecDeque::new(),
            blocks: BTreeMap::new(),
            stats: Stats::default(),
        }
    }

    /// Takes in the segment whose first byte has sequence number `seq`.
    ///
    /// # Panics
    ///
    /// If `data` is longer than [`Reassembler::MAX_CAPACITY`].
    pub fn receive(&mut self, seq: u32, data: &[u8]) -> Outcome {
        assert!(
            data.len() <= Self::MAX_CAPACITY as usize,
            "a segment of {} bytes is longer than any window",
            data.len()
        );
        self.stats.segments += 1;
        let recency = self.stats.segments;
        if data.is_empty() {
            return Outcome::Duplicate;
        }
        let len = data.len() as u32;
        let rcv_nxt = self.ack();
        let edge = rcv_nxt.wrapping_add(self.window());
        let end = seq.wrapping_add(len);

        // The door: every sequence-number comparison is here.
        if !seq_before(seq, edge) {
            // Starts at or past the edge (a zero window included): TCP drops
            // it and ACKs what it has, so the sender learns the window.
            self.stats.dropped_segments += 1;
            self.stats.beyond_window_bytes += u64::from(len);
            return Outcome::Dropped;
        }
        if !seq_before(rcv_nxt, end) {
            // Ends at or before rcv_nxt: an old retransmission whose ACK
            // was lost. Not an error, and not dropped for lack of room.
            self.stats.duplicate_bytes += u64::from(len);
            return Outcome::Duplicate;
        }
        // Trim to [rcv_nxt, edge): the front was delivered already, the
        // tail does not fit (TCP trims; it does not drop the whole segment).
        let front = if seq_before(seq, rcv_nxt) {
            rcv_nxt.wrapping_sub(seq)
        } else {
            0
        };
        let back = if seq_before(edge, end) {
            end.wrapping_sub(edge)
        } else {
            0
        };
        self.stats.duplicate_bytes += u64::from(front);
        self.stats.beyond_window_bytes += u64::from(back);
        let kept = &data[front as usize..(len - back) as usize];
        if kept.is_empty() {
            // Old at the front, beyond the edge at the back, nothing between
            // (a zero window).
            return Outcome::Duplicate;
        }
        // Not negative: after the front trim, the segment starts at or after
        // rcv_nxt. From here on, offsets: no wrapping.
        let start = self.nxt + u64::from(seq.wrapping_add(front).wrapping_sub(rcv_nxt));

        // Fast path, the common case on a healthy connection: the next
        // bytes in order, with no buffered block in their way or touching
        // them. Deliver them straight away, without a block (Linux's
        // "header prediction" is the same idea).
        let stop = start + kept.len() as u64;
        let clear = match self.blocks.first_key_value() {
            None => true,
            Some((&first, _)) => first > stop,
        };
        if start == self.nxt && clear {
            if self.blocks.is_empty() {
                self.bytes.extend(kept);
            } else {
                self.write(start, kept);
            }
            self.nxt = stop;
            self.stats.delivered_bytes += kept.len() as u64;
            return Outcome::Delivered;
        }

        let was = self.nxt;
        let new = self.store(start, kept, recency);
        self.stats.duplicate_bytes += (kept.len() - new) as u64;
        if new == 0 {
            return Outcome::Duplicate;
        }
        // A segment that filled the hole at nxt made a block starting there
        // (blocks never touch, so it is the only one): deliver all of it,
        // the bytes that waited behind the hole included.
        if let Some(block) = self.blocks.remove(&self.nxt) {
            self.stats.delivered_bytes += block.end - self.nxt;
            self.nxt = block.end;
        }
        if self.nxt != was {
            Outcome::Delivered
        } else {
            Outcome::Buffered
        }
    }

    /// Writes the bytes of `data` (stream offsets `start..`) that no block
    /// holds yet, merges the blocks it overlaps or touches into one, and
    /// returns how many bytes were new. `data` lies inside the window.
    fn store(&mut self, start: u64, data: &[u8], recency: u64) -> usize {
        let end = start + data.len() as u64;

        let need = (end - self.read_off) as usize;
        if self.bytes.len() < need {
            self.bytes.resize(need, 0);
        }
        // The blocks that overlap or touch [start, end): the one that starts
        // before `start` if it reaches it, then every one starting up to
        // `end`. `<=` on both sides: touching blocks merge.
        let mut touching: Vec<u64> = Vec::new();
        if let Some((&s, b)) = self.blocks.range(..start).next_back()
            && b.end >= start
        {
            touching.push(s);
        }
        touching.extend(self.blocks.range(start..=end).map(|(&s, _)| s));

        let (mut lo, mut hi) = (start, end);
        let mut old_recency = 0;
        let mut new = 0;
        // Walk the segment left to right; `pos` is the first offset not yet
        // covered by a block or written from the segment.
        let mut pos = start;
        for s in touching {
            let b = self.blocks.remove(&s).expect("a key just listed");
            if pos < s {
                // The gap before this block: new bytes.
                self.write(pos, &data[(pos - start) as usize..(s - start) as usize]);
                new += (s - pos) as usize;
            }
            lo = lo.min(s);
            hi = hi.max(b.end);
            pos = pos.max(b.end);
            old_recency = old_recency.max(b.recency);
        }
        if pos < end {
            self.write(pos, &data[(pos - start) as usize..]);
            new += (end - pos) as usize;
        }
        // A segment that brought nothing new does not make its block the
        // most recent: SACK is about what arrived, and nothing did.
        let recency = if new > 0 { recency } else { old_recency };
        self.blocks.insert(lo, Block { end: hi, recency });
        new
    }

    /// Copies `src` into `bytes` at stream offset `off` (inside `bytes`).
    fn write(&mut self, off: u64, src: &[u8]) {
        let i = (off - self.read_off) as usize;
        // A VecDeque is a ring: the range may wrap from its first slice into
        // its second.
        let (a, b) = self.bytes.as_mut_slices();
        if i >= a.len() {
            b[i - a.len()..][..src.len()].copy_from_slice(src);
        } else {
            let n = (a.len() - i).min(src.len());
            a[i..i + n].copy_from_slice(&src[..n]);
            b[..src.len() - n].copy_from_slice(&src[n..]);
        }
    }

    /// Takes up to `max` delivered bytes, in stream order, and opens the
    /// window by as many.
    pub fn read(&mut self, max: usize) -> Vec<u8> {
        let n = max.min(self.readable());
        self.read_off += n as u64;
        self.bytes.drain(..n).collect()
    }

    /// Delivered bytes not yet read.
    pub fn readable(&self) -> usize {
        (self.nxt - self.read_off) as usize
    }

    /// The cumulative ACK: the sequence number of the first byte not yet
    /// received (`rcv_nxt`).
    pub fn ack(&self) -> u32 {
        self.seq_of(self.nxt)
    }

    /// The receive window: `capacity - readable()`. Bytes from `ack()` up
    /// to, not including, `ack() + window()` are accepted.
    pub fn window(&self) -> u32 {
        self.capacity - self.readable() as u32
    }

    /// Bytes held beyond a hole, waiting to be delivered.
    pub fn buffered(&self) -> usize {
        self.blocks.iter().map(|(&s, b)| (b.end - s) as usize).sum()
    }

    /// The SACK blocks: every range of bytes held beyond `ack()`, as
    /// `(left, right)` sequence numbers (`right` one past the last byte),
    /// the most recently extended first.
    pub fn sack(&self) -> Vec<(u32, u32)> {
        let mut blocks: Vec<(u64, &Block)> = self.blocks.iter().map(|(&s, b)| (s, b)).collect();
        // Most recent first (RFC 2018): a sender that sees only the first
        // three or four blocks still learns about the newest arrivals.
        blocks.sort_by_key(|(_, b)| Reverse(b.recency));
        blocks
            .into_iter()
            .map(|(s, b)| (self.seq_of(s), self.seq_of(b.end)))
            .collect()
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The sequence number of a stream offset: `initial + off` mod 2^32.
    fn seq_of(&self, off: u64) -> u32 {
        // Truncating to 32 bits is the "mod 2^32".
        self.initial.wrapping_add(off as u32)
    }
}
