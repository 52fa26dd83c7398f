//! labkit's real-service support against real servers: a database per test
//! that the test can use and that is gone afterwards, and a Redis that
//! answers. With DATABASE_URL / REDIS_URL unset, this starts the shared
//! throwaway servers (as the `postgres` user when run as root).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use sqlx::Connection;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn test_01_each_test_gets_its_own_empty_database_dropped_after() {
    let (a, b) = (labkit::services::postgres(), labkit::services::postgres());
    assert_ne!(a.name, b.name);
    let admin = a.url.replace(&format!("/{}", a.name), "/postgres");
    let name = a.name.clone();
    block_on(async {
        let mut conn = sqlx::PgConnection::connect(&a.url).await.unwrap();
        sqlx::raw_sql("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
            .execute(&mut conn)
            .await
            .unwrap();
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(n, 1);
        // The other database does not see this table.
        let mut other = sqlx::PgConnection::connect(&b.url).await.unwrap();
        assert!(
            sqlx::query("SELECT * FROM t")
                .fetch_all(&mut other)
                .await
                .is_err()
        );
        conn.close().await.unwrap();
    });
    drop(a);
    let exists: bool = block_on(async {
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await
            .unwrap()
    });
    assert!(!exists, "database {name} should be dropped with its TestDb");
}

#[test]
fn test_02_redis_answers_and_prefixes_are_unique() {
    let (a, b) = (labkit::services::redis(), labkit::services::redis());
    assert_ne!(a.prefix, b.prefix);
    let mut s = TcpStream::connect(a.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"PING\r\n").unwrap();
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"+PONG\r\n");
}

/// `PING` on `addr`, with a deadline: whether `+PONG` came back.
fn pong(addr: std::net::SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut reply = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

#[test]
fn test_03_a_private_redis_server_stops_and_restarts_on_its_port() {
    let mut master = labkit::services::RedisServer::start();
    let addr = master.addr();
    assert!(pong(addr), "a started RedisServer answers PING");
    assert_eq!(master.url(), format!("redis://{addr}"));
    master.stop();
    assert!(!pong(addr), "a stopped RedisServer is gone");
    master.restart();
    assert_eq!(master.addr(), addr, "restart keeps the port");
    assert!(pong(addr), "a restarted RedisServer answers PING");
    drop(master);
    assert!(!pong(addr), "a dropped RedisServer is gone");
}
