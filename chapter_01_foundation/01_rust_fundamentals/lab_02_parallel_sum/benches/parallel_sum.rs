//! Sequential versus the three parallel sums on 10 million `u64`s (80 MB),
//! at 1, 2 and 4 threads.
//!
//! ```sh
//! cargo bench -p lab_02_parallel_sum                 # full run, about a minute
//! cargo bench -p lab_02_parallel_sum -- --quick      # a few seconds
//! cargo bench -p lab_02_parallel_sum -- channels     # only names containing "channels"
//! ```
//!
//! The data is built once, outside the timed code; the `Arc<[u64]>` the
//! spawning variants take is built once too, so each iteration pays only for
//! an `Arc::clone` (a counter increment), the threads and the summing.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use parallel_sum::{sum_channels, sum_mutex, sum_scoped, sum_sequential};

const ITEMS: usize = 10_000_000;

fn data() -> Vec<u64> {
    // Any values do: the time depends on the length, not on the numbers.
    // A cheap LCG keeps the bench free of extra crates.
    let mut x: u64 = 1;
    (0..ITEMS)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            x >> 16
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let vec = data();
    let shared: Arc<[u64]> = Arc::from(vec.as_slice());

    let mut group = c.benchmark_group("sum_10M");
    // Reports GB/s next to the time: summing is limited by memory bandwidth.
    group.throughput(Throughput::Bytes((ITEMS * size_of::<u64>()) as u64));

    group.bench_function("sequential", |b| b.iter(|| sum_sequential(black_box(&vec))));
    for threads in [1, 2, 4] {
        group.bench_with_input(BenchmarkId::new("scoped", threads), &threads, |b, &t| {
            b.iter(|| sum_scoped(black_box(&vec), t).total)
        });
        group.bench_with_input(BenchmarkId::new("channels", threads), &threads, |b, &t| {
            b.iter(|| sum_channels(Arc::clone(black_box(&shared)), t).total)
        });
        group.bench_with_input(BenchmarkId::new("mutex", threads), &threads, |b, &t| {
            b.iter(|| sum_mutex(Arc::clone(black_box(&shared)), t).total)
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
