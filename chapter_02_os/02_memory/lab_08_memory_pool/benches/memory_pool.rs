//! The pool against the general-purpose allocator: the cost of getting a
//! slot for a value and giving it back.
//!
//! ```sh
//! cargo bench -p lab_08_memory_pool                  # about half a minute
//! cargo bench -p lab_08_memory_pool -- --quick       # a few seconds
//! ```
//!
//! Two patterns, each with a 64-byte value (a typical small request or
//! connection record):
//! - `one`: allocate one value and free it at once, again and again; the
//!   best case for `malloc`, whose per-thread cache (glibc's tcache) hands
//!   the same chunk back every time.
//! - `batch_1000`: allocate 1000 values, then free them all, like a server
//!   that builds up state for a burst of requests and tears it down.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use memory_pool::{Handle, Pool};

/// A 64-byte value: one cache line.
#[derive(Clone, Copy)]
struct Record(#[allow(dead_code)] [u64; 8]);

const BATCH: usize = 1000;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("alloc_free");

    group.throughput(Throughput::Elements(1));
    group.bench_function("one/box", |b| {
        // black_box on the Box keeps the compiler from removing the
        // allocation altogether (it may elide a malloc/free pair it can see).
        b.iter(|| drop(black_box(Box::new(Record([1; 8])))))
    });
    let pool = Pool::with_capacity(1);
    group.bench_function("one/pool", |b| {
        b.iter(|| drop(black_box(pool.try_alloc(Record([1; 8])).ok().unwrap())))
    });

    group.throughput(Throughput::Elements(BATCH as u64));
    let mut boxes: Vec<Box<Record>> = Vec::with_capacity(BATCH);
    group.bench_function("batch_1000/box", |b| {
        b.iter(|| {
            for i in 0..BATCH {
                boxes.push(black_box(Box::new(Record([i as u64; 8]))));
            }
            boxes.clear();
        })
    });
    let pool = Pool::with_capacity(BATCH);
    let mut handles: Vec<Handle<Record>> = Vec::with_capacity(BATCH);
    group.bench_function("batch_1000/pool", |b| {
        b.iter(|| {
            for i in 0..BATCH {
                let h = pool.try_alloc(Record([i as u64; 8])).ok().unwrap();
                handles.push(black_box(h));
            }
            handles.clear();
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
