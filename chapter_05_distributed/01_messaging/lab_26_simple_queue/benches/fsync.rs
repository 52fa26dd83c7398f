//! What durability costs: one publish with an fsync each, against the same
//! records written in batches with one fsync per batch (group commit).
//!
//! ```sh
//! cargo bench -p lab_26_simple_queue                  # about half a minute
//! cargo bench -p lab_26_simple_queue -- --quick       # a few seconds
//! ```
//!
//! - `publish/fsync_each`: `DiskQueue::publish` of 100 bytes: one write and
//!   one `fdatasync` per message (what the lab asks for).
//! - `publish/no_fsync`: the same write with no sync at all: what the page
//!   cache alone costs; a SIGKILL loses nothing, a power cut loses it all.
//! - `publish/group_commit_64`: 64 records of the same size written with one
//!   `write` and one `fdatasync`, per record: what a log that batches the
//!   publishes waiting at the same moment pays per message.
//!
//! The log is in the temporary directory: run with `TMPDIR` on the disk you
//! care about (a tmpfs makes every fsync free and the comparison pointless).

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use simple_queue::{Config, DiskQueue, Queue, SystemClock};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let rt = labkit::wait::runtime(0);
    let q = DiskQueue::open(
        dir.path().join("bench.log"),
        Config::new(Duration::from_secs(30), 5),
        Arc::new(SystemClock),
    )
    .expect("open the log");
    let payload = [b'x'; 100];
    // 100 bytes of payload plus about 17 of framing: the same size as a
    // publish record.
    let record = [b'r'; 117];

    let mut group = c.benchmark_group("publish");
    group.throughput(Throughput::Elements(1));
    group.bench_function("fsync_each", |b| {
        b.iter(|| rt.block_on(q.publish(&payload)).expect("publish"))
    });
    let mut raw = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("raw.log"))
        .expect("open the raw log");
    group.bench_function("no_fsync", |b| {
        b.iter(|| raw.write_all(&record).expect("write"))
    });
    group.throughput(Throughput::Elements(64));
    let batch: Vec<u8> = record.iter().copied().cycle().take(64 * 117).collect();
    group.bench_function("group_commit_64", |b| {
        b.iter(|| {
            raw.write_all(&batch).expect("write");
            raw.sync_data().expect("fdatasync");
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
