//! Line framing, three ways: what one read of a chat client costs before
//! any byte is sent on.
//!
//! ```sh
//! cargo bench -p lab_13_chat_server                # about half a minute
//! cargo bench -p lab_13_chat_server -- --quick     # a few seconds
//! ```
//!
//! A read hands the server up to 64 KiB holding many lines (a client that
//! types fast, or a bot). Each strategy turns it into "complete lines to
//! broadcast, plus the tail to keep", the job of the reference's `on_data`:
//! - `copy_per_line`: the tutorial's way: find a newline, `drain` the line
//!   out of the front of the connection's buffer into a `Vec` of its own,
//!   repeat. Every line moves the rest of the buffer forward (quadratic in
//!   the lines per read) and allocates.
//! - `slice_per_line`: walk the read with a cursor and hand out borrowed
//!   slices, one per line: no copying, but one broadcast (one `write` per
//!   receiver) per line.
//! - `one_batch`: the reference's way: one search from the end for the last
//!   newline (and one from the start for the first, to check the length of
//!   a line begun in an earlier read); everything before the last newline
//!   goes out as one block, the rest is the tail. The work does not depend
//!   on the number of lines.
//!
//! The inputs are 64-byte and 1024-byte lines filling 64 KiB. The syscalls
//! saved by batching do not show here (no socket is involved); they show in
//! `cargo course bench chat`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const READ: usize = 64 * 1024;

/// The tutorial's framing: copy each line out of the front of `buf`.
fn copy_per_line(buf: &mut Vec<u8>, out: &mut Vec<Vec<u8>>) {
    while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
        out.push(buf.drain(..=pos).collect());
    }
}

/// Borrowed slices, one per line; returns the tail's start.
fn slice_per_line<'a>(data: &'a [u8], out: &mut Vec<&'a [u8]>) -> usize {
    let mut start = 0;
    while let Some(pos) = data[start..].iter().position(|&b| b == b'\n') {
        out.push(&data[start..start + pos + 1]);
        start += pos + 1;
    }
    start
}

/// One block of complete lines, the tail's start, and the length of the
/// first line (which the reference checks against the line limit: it may
/// continue a line from an earlier read).
fn one_batch(data: &[u8]) -> (&[u8], usize, usize) {
    match data.iter().rposition(|&b| b == b'\n') {
        Some(last) => {
            let first = data.iter().position(|&b| b == b'\n').unwrap_or(last) + 1;
            (&data[..=last], last + 1, first)
        }
        None => (&[], 0, 0),
    }
}

fn input(line_len: usize) -> Vec<u8> {
    let mut line = vec![b'x'; line_len - 1];
    line.push(b'\n');
    let mut data = line.repeat(READ / line_len);
    // A partial line at the end, as a real read usually has.
    data.extend_from_slice(&line[..line_len / 2]);
    data
}

fn bench(c: &mut Criterion) {
    for line_len in [64, 1024] {
        let data = input(line_len);
        let mut group = c.benchmark_group(format!("frame_64KiB_read/{line_len}B_lines"));
        group.throughput(Throughput::Bytes(data.len() as u64));
        let mut lines: Vec<Vec<u8>> = Vec::new();
        group.bench_function("copy_per_line", |b| {
            b.iter(|| {
                let mut buf = data.clone();
                copy_per_line(&mut buf, &mut lines);
                black_box((&lines, &buf));
                lines.clear();
            })
        });
        group.bench_function("slice_per_line", |b| {
            let mut slices = Vec::new();
            b.iter(|| {
                let tail = slice_per_line(black_box(&data), &mut slices);
                black_box((&slices, tail));
                slices.clear();
            })
        });
        group.bench_function("one_batch", |b| {
            b.iter(|| black_box(one_batch(black_box(&data))))
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
