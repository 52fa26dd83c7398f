//! What a pool saves: one query on a pooled PostgreSQL connection against
//! the same query on a connection opened for it and closed after.
//!
//! ```sh
//! cargo bench -p lab_21_connection_pool                  # about half a minute
//! cargo bench -p lab_21_connection_pool -- --quick       # a few seconds
//! ```
//!
//! The database is labkit's (a throwaway server, or `DATABASE_URL`), on
//! this machine: the numbers leave out the network, which only widens the
//! gap (a new connection costs several round trips, a pooled one none).
//! - `select_1/pooled`: `get()`, `SELECT 1`, drop (back to the pool).
//! - `select_1/connect`: connect (TCP, startup, authentication, a new
//!   server process), `SELECT 1`, close.

use std::hint::black_box;

use connection_pool::{Config, PgManager, Pool};
use criterion::{Criterion, criterion_group, criterion_main};
use sqlx::{Connection, PgConnection};

fn bench(c: &mut Criterion) {
    let db = labkit::services::postgres();
    let rt = labkit::wait::runtime(0);
    let pool = Pool::new(PgManager::new(db.url.clone()), Config::new(1));

    let mut group = c.benchmark_group("select_1");
    group.bench_function("pooled", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut conn = pool.get().await.expect("a pooled connection");
                let one: i32 = sqlx::query_scalar("SELECT 1")
                    .fetch_one(&mut *conn)
                    .await
                    .expect("SELECT 1");
                black_box(one)
            })
        })
    });
    group.bench_function("connect", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut conn = PgConnection::connect(&db.url).await.expect("a connection");
                let one: i32 = sqlx::query_scalar("SELECT 1")
                    .fetch_one(&mut conn)
                    .await
                    .expect("SELECT 1");
                conn.close().await.expect("a clean close");
                black_box(one)
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
