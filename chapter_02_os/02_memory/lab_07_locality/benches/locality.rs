//! The same work on two layouts, three times: the gaps `cargo test` cannot
//! see.
//!
//! ```sh
//! cargo bench -p lab_07_locality                       # everything, a few minutes
//! cargo bench -p lab_07_locality -- --quick            # a rough pass, about a minute
//! cargo bench -p lab_07_locality -- 'matrix/.*/4096'   # a regex over the names
//! ```
//!
//! Inputs are built once, outside the timed code. Sizes are chosen against
//! the caches of a typical server core (32-64 KiB L1d, 0.5-2 MiB L2, tens of
//! MiB of shared L3): the smallest matrix fits in L1, the largest inputs
//! only in RAM.

use std::collections::LinkedList;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use locality::{
    IndexList, Matrix, Particle, Particles, advance_aos, sum_linked_list, sum_vec, total_mass_aos,
};

/// A cheap deterministic generator, so the bench needs no extra crate.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 16
    }
}

fn matrices(c: &mut Criterion) {
    let mut group = c.benchmark_group("matrix");
    // 16 KiB (L1), 1 MiB (L2-sized), 64 MiB (RAM only).
    for n in [64usize, 512, 4096] {
        let mut rng = Lcg(n as u64);
        let m = Matrix::from_fn(n, n, |_, _| rng.next() as u32);
        group.throughput(Throughput::Bytes((n * n * 4) as u64));
        if n == 4096 {
            // A column-major pass over 64 MiB takes a good fraction of a
            // second; ten samples are plenty to see a 10x gap.
            group.sample_size(10);
        }
        group.bench_with_input(BenchmarkId::new("row_major", n), &m, |b, m| {
            b.iter(|| black_box(m).sum_row_major())
        });
        group.bench_with_input(BenchmarkId::new("col_major", n), &m, |b, m| {
            b.iter(|| black_box(m).sum_col_major())
        });
    }
    group.finish();
}

fn particles(c: &mut Criterion) {
    const N: usize = 1 << 20; // 32 MiB as structs, 4 MiB per field
    let mut rng = Lcg(7);
    let mut aos: Vec<Particle> = (0..N)
        .map(|i| Particle {
            x: (rng.next() % 1000) as f32,
            y: (rng.next() % 1000) as f32,
            z: (rng.next() % 1000) as f32,
            vx: 1.0,
            vy: -1.0,
            vz: 0.5,
            mass: (rng.next() % 100) as f32,
            id: i as u32,
        })
        .collect();
    let mut soa = Particles::from_aos(&aos);

    let mut group = c.benchmark_group("particles");
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function("total_mass/aos", |b| {
        b.iter(|| total_mass_aos(black_box(&aos)))
    });
    group.bench_function("total_mass/soa", |b| {
        b.iter(|| black_box(&soa).total_mass())
    });
    // advance mutates in place; a tiny dt keeps the numbers finite however
    // many iterations criterion runs.
    group.bench_function("advance/aos", |b| {
        b.iter(|| advance_aos(black_box(&mut aos), 1e-6))
    });
    group.bench_function("advance/soa", |b| {
        b.iter(|| black_box(&mut soa).advance(1e-6))
    });
    group.finish();
}

fn lists(c: &mut Criterion) {
    const N: usize = 1 << 20; // 8 MiB of values
    let mut rng = Lcg(11);
    let values: Vec<u64> = (0..N).map(|_| rng.next()).collect();
    let list: LinkedList<u64> = values.iter().copied().collect();
    let sequential = IndexList::sequential(&values);
    // A shuffled placement (Fisher-Yates): every step of the walk lands on
    // a random slot of a 16 MiB array.
    let mut placement: Vec<usize> = (0..N).collect();
    for i in (1..N).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        placement.swap(i, j);
    }
    let shuffled = IndexList::with_placement(&values, &placement);

    let mut group = c.benchmark_group("list_sum");
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function("vec", |b| b.iter(|| sum_vec(black_box(&values))));
    group.bench_function("linked_list", |b| {
        b.iter(|| sum_linked_list(black_box(&list)))
    });
    group.bench_function("index_list_sequential", |b| {
        b.iter(|| black_box(&sequential).sum())
    });
    group.bench_function("index_list_shuffled", |b| {
        b.iter(|| black_box(&shuffled).sum())
    });
    group.finish();
}

criterion_group!(benches, matrices, particles, lists);
criterion_main!(benches);
