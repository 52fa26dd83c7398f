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
//! The public items below (names, signatures, doc comments) are the
//! contract the tests call; the private fields are yours. Read the
//! README's Spec first: it says, rule by rule, what happens to a segment
//! that is old, overlapping, or beyond the window, and in which order the
//! SACK blocks come.
#![allow(unused)]

/// RFC 1982 serial comparison: `a` comes before `b` on the circle of 2^32
/// sequence numbers, that is `b - a` (mod 2^32) is in `1..=2^31`. At
/// exactly 2^31 apart both are "before" the other (RFC 1982 leaves it
/// undefined); a receiver never compares numbers that far apart.
pub fn seq_before(a: u32, b: u32) -> bool {
    todo!("RFC 1982: is a before b on the circle?")
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

/// The receive buffer of one TCP connection.
#[derive(Debug)]
pub struct Reassembler {
    // Your fields here.
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
        todo!("a receiver expecting initial_seq, with a buffer of capacity bytes")
    }

    /// Takes in the segment whose first byte has sequence number `seq`.
    ///
    /// # Panics
    ///
    /// If `data` is longer than [`Reassembler::MAX_CAPACITY`].
    pub fn receive(&mut self, seq: u32, data: &[u8]) -> Outcome {
        todo!("classify, trim to the window, store the new bytes, deliver")
    }

    /// Takes up to `max` delivered bytes, in stream order, and opens the
    /// window by as many.
    pub fn read(&mut self, max: usize) -> Vec<u8> {
        todo!()
    }

    /// Delivered bytes not yet read.
    pub fn readable(&self) -> usize {
        todo!()
    }

    /// The cumulative ACK: the sequence number of the first byte not yet
    /// received (`rcv_nxt`).
    pub fn ack(&self) -> u32 {
        todo!()
    }

    /// The receive window: `capacity - readable()`. Bytes from `ack()` up
    /// to, not including, `ack() + window()` are accepted.
    pub fn window(&self) -> u32 {
        todo!()
    }

    /// Bytes held beyond a hole, waiting to be delivered.
    pub fn buffered(&self) -> usize {
        todo!()
    }

    /// The SACK blocks: every range of bytes held beyond `ack()`, as
    /// `(left, right)` sequence numbers (`right` one past the last byte),
    /// the most recently extended first.
    pub fn sack(&self) -> Vec<(u32, u32)> {
        todo!()
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        todo!()
    }
}
