//! labkit's fault proxy, against an echo upstream inside the test and
//! against real PostgreSQL and Redis: every fault does what the table in
//! `labkit::faults` says, and switching back to `Pass` heals.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use labkit::client::Client;
use labkit::faults::{Fault, FaultProxy};

/// How long a must-not-happen check watches; can only let a broken proxy
/// pass late, never fail a correct one.
const QUIET: Duration = Duration::from_millis(300);

/// An echo server on a free port, counting the connections it accepted.
fn echo_upstream() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&accepted);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = stream.shutdown(Shutdown::Write);
            });
        }
    });
    (addr, accepted)
}

/// A raw client whose next read must fail with a reset within a deadline.
fn expect_reset(stream: &mut TcpStream, what: &str) {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("{what}: expected a reset, got {other:?}"),
    }
}

#[test]
fn test_01_passes_bytes_both_ways_and_passes_on_a_half_close() {
    let (up, accepted) = echo_upstream();
    let proxy = FaultProxy::start(up);
    let mut c = Client::connect(proxy.addr());
    let payload = labkit::data::binary(3 << 20, 1);
    c.send(&payload).expect_bytes(&payload);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!((proxy.accepted(), proxy.open()), (1, 1));
    // The client's end of file reaches the upstream, whose own close comes
    // back: the proxy forgets the connection.
    c.half_close().expect_closed();
    let until = Instant::now() + Duration::from_secs(5);
    while proxy.open() != 0 {
        assert!(
            Instant::now() < until,
            "the proxy still counts the closed connection"
        );
        thread::yield_now();
    }
}

#[test]
fn test_02_latency_holds_every_chunk_and_keeps_their_order() {
    let (up, _) = echo_upstream();
    let proxy = FaultProxy::start(up);
    let mut c = Client::connect(proxy.addr());
    c.send(b"warm").expect_bytes(b"warm");
    let delay = Duration::from_millis(200);
    proxy.set(Fault::Latency(delay));
    let start = Instant::now();
    c.send(b"one ").send(b"two ").send(b"three");
    c.expect_bytes(b"one two three");
    // Each way is held: a round trip takes at least twice the latency.
    assert!(
        start.elapsed() >= 2 * delay,
        "a round trip through {delay:?} of latency each way took {:?}",
        start.elapsed()
    );
    proxy.set(Fault::Pass);
    c.send(b"again").expect_bytes(b"again");
}

#[test]
fn test_03_a_blackhole_holds_bytes_on_old_and_new_connections_until_pass() {
    let (up, _) = echo_upstream();
    let proxy = FaultProxy::start(up);
    let mut old = Client::connect(proxy.addr());
    old.send(b"before").expect_bytes(b"before");
    proxy.set(Fault::Blackhole);
    old.send(b"held");
    old.expect_silence(QUIET);
    // New connections are accepted (the connect succeeds) and go silent.
    let mut new = Client::connect(proxy.addr());
    new.send(b"new");
    new.expect_silence(QUIET);
    proxy.set(Fault::Pass);
    old.expect_bytes(b"held");
    new.expect_bytes(b"new");
}

#[test]
fn test_04_reset_resets_every_open_connection_and_every_new_one() {
    let (up, _) = echo_upstream();
    let proxy = FaultProxy::start(up);
    let mut raw = TcpStream::connect(proxy.addr()).unwrap();
    raw.write_all(b"hi").unwrap();
    let mut two = [0u8; 2];
    raw.read_exact(&mut two).unwrap();
    proxy.set(Fault::Reset);
    expect_reset(&mut raw, "an open connection after Fault::Reset");
    assert_eq!(proxy.open(), 0);
    let mut late = TcpStream::connect(proxy.addr()).unwrap();
    expect_reset(&mut late, "a new connection under Fault::Reset");
    proxy.set(Fault::Pass);
    Client::connect(proxy.addr())
        .send(b"healed")
        .expect_bytes(b"healed");
}

#[test]
fn test_05_refuse_refuses_new_connections_and_keeps_open_ones() {
    let (up, _) = echo_upstream();
    let proxy = FaultProxy::start(up);
    let mut open = Client::connect(proxy.addr());
    open.send(b"a").expect_bytes(b"a");
    proxy.set(Fault::Refuse);
    match TcpStream::connect(proxy.addr()) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
        other => panic!("a connect under Fault::Refuse: expected ECONNREFUSED, got {other:?}"),
    }
    open.send(b"b").expect_bytes(b"b");
    proxy.set(Fault::Pass);
    Client::connect(proxy.addr())
        .send(b"back")
        .expect_bytes(b"back");
}

#[test]
fn test_06_a_dead_upstream_resets_the_client() {
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let proxy = FaultProxy::start(dead);
    let mut raw = TcpStream::connect(proxy.addr()).unwrap();
    expect_reset(&mut raw, "a connection whose upstream refuses");
}

#[test]
fn test_07_a_url_through_the_proxy_reaches_real_redis_until_reset() {
    let kv = labkit::services::redis();
    let proxy = FaultProxy::for_url(&kv.url);
    assert!(proxy.url().contains(&proxy.addr().to_string()));
    assert_eq!(proxy.upstream().port(), kv.addr.port());
    let mut c = Client::connect(proxy.addr());
    c.send(b"*1\r\n$4\r\nPING\r\n").expect_bytes(b"+PONG\r\n");
    proxy.set(Fault::Reset);
    c.expect_closed();
}

#[test]
fn test_08_postgres_through_the_proxy_fails_under_reset_and_heals() {
    use sqlx::Connection;
    let db = labkit::services::postgres();
    let proxy = FaultProxy::for_url(&db.url);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut conn = sqlx::PgConnection::connect(proxy.url()).await.unwrap();
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(one, 1);
        proxy.set(Fault::Reset);
        assert!(
            sqlx::query_scalar::<_, i32>("SELECT 1")
                .fetch_one(&mut conn)
                .await
                .is_err(),
            "a query on a reset connection succeeded"
        );
        proxy.set(Fault::Pass);
        let mut again = sqlx::PgConnection::connect(proxy.url()).await.unwrap();
        let two: i32 = sqlx::query_scalar("SELECT 2")
            .fetch_one(&mut again)
            .await
            .unwrap();
        assert_eq!(two, 2);
    });
}
