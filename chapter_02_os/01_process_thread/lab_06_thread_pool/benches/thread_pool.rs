//! 10 000 tiny jobs: on a pool of 2 workers versus one `thread::spawn` each.
//!
//! ```sh
//! cargo bench -p lab_06_thread_pool                 # full run, under a minute
//! cargo bench -p lab_06_thread_pool -- --quick      # a few seconds
//! ```
//!
//! A job adds 1 to a shared counter: the work is nothing, so the numbers
//! are the cost of getting a job onto a thread. The pool is created once,
//! outside the timed code, the way a server keeps its pool for its whole
//! life; each iteration queues 10 000 jobs and waits until they have all
//! run (the last job to finish says so on a channel).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use thread_pool::ThreadPool;

const JOBS: usize = 10_000;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("10k_tiny_jobs");
    group.throughput(Throughput::Elements(JOBS as u64));
    // Each spawn iteration creates 10 000 threads: keep the sample small.
    group.sample_size(10);

    let pool = ThreadPool::new(2);
    group.bench_function("pool_of_2", |b| {
        b.iter(|| {
            let left = Arc::new(AtomicUsize::new(JOBS));
            let (done_tx, done_rx) = mpsc::channel();
            for _ in 0..JOBS {
                let (left, done_tx) = (Arc::clone(&left), done_tx.clone());
                pool.execute(move || {
                    if left.fetch_sub(1, Ordering::AcqRel) == 1 {
                        let _ = done_tx.send(());
                    }
                })
                .expect("the pool is running");
            }
            done_rx.recv().expect("the last job signals");
        })
    });
    pool.shutdown();

    group.bench_function("spawn_per_job", |b| {
        b.iter(|| {
            let counter = Arc::new(AtomicUsize::new(0));
            let handles: Vec<_> = (0..JOBS)
                .map(|_| {
                    let counter = Arc::clone(&counter);
                    thread::spawn(move || {
                        counter.fetch_add(1, Ordering::AcqRel);
                    })
                })
                .collect();
            for h in handles {
                h.join().expect("a job thread");
            }
            black_box(counter.load(Ordering::Acquire))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
