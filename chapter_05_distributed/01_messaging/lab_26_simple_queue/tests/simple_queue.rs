//! Grader for lab 26: a simple queue, on disk and on Redis Streams.
//!
//! One conformance suite, `queue_suite!`, runs the same seven tests against
//! both backends (`disk::test_01_...` and `redis::test_01_...`). What
//! differs between them is time:
//! - the disk queue takes a `Clock`; the suite gives it one it moves by
//!   hand, so "not before the timeout, yes at the timeout" is checked to
//!   the millisecond and nothing sleeps;
//! - the Redis queue's visibility is Redis's own idle time of a pending
//!   entry (`XAUTOCLAIM min-idle-time`), a real clock nobody can pause. So
//!   its timeout is short (300 ms), "after the timeout" is a poll with a
//!   deadline, and "not before the timeout" is checked only while less
//!   than the timeout has passed on the test's own clock.
//!
//! Tests 20-26 are the disk log's own: a publisher/consumer child process
//! killed with SIGKILL mid-stream, and logs cut or garbled in their last
//! record, CRC-32's check values, and the syncs counted with strace.
//! Tests 30-31 are Redis's own: two consumer processes in one
//! group, one killed holding a message, and a redelivery that sits behind
//! many fresh pending entries.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use labkit::Report;
use labkit::report::same;
use labkit::session::{Session, role_param};
use simple_queue::{
    Clock, Config, Delivery, DiskQueue, MessageId, Queue, QueueError, RedisQueue, SystemClock,
};

/// The deadline on each call of the queue.
const CALL: Duration = Duration::from_secs(5);
/// How long a real-time redelivery (Redis) may take to show up.
const REDELIVERY: Duration = Duration::from_secs(5);
/// The visibility timeout of the disk suite (fake time: any value is instant).
const DISK_TIMEOUT: Duration = Duration::from_secs(10);
/// The visibility timeout of the Redis suite: real time, so short.
const REDIS_TIMEOUT: Duration = Duration::from_millis(300);
/// max_deliveries in the suite.
const MAX: u32 = 3;

// ---------------------------------------------------------------------------
// Helpers.

/// A clock the test moves by hand.
#[derive(Debug)]
struct ManualClock(AtomicU64);

impl ManualClock {
    fn at(ms: u64) -> Arc<ManualClock> {
        Arc::new(ManualClock(AtomicU64::new(ms)))
    }
    fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

fn hint(e: &QueueError) -> &'static str {
    match e {
        QueueError::Io(_) => {
            "an I/O error on the log: does open create the file, and do you write where you read?"
        }
        QueueError::Redis(_) => {
            "a Redis error: check the command's arguments (redis-cli and MONITOR show what you sent)"
        }
        QueueError::Protocol(_) => {
            "a reply you did not expect: print the raw redis::Value to see its shape"
        }
    }
}

/// Awaits a queue call with a deadline; it must be `Ok`.
async fn ok<T>(what: &str, fut: impl Future<Output = Result<T, QueueError>>) -> T {
    labkit::wait::expect_ok(CALL, what, hint, fut).await
}

fn show(p: &[u8]) -> String {
    labkit::report::show(p)
}

/// Runs an async test body on a current-thread runtime.
fn run(body: impl Future<Output = ()>) {
    labkit::wait::runtime(0).block_on(body)
}

/// What a suite needs of a backend: fresh storage, (re)opening a queue on
/// it, and moving time.
trait Backend: Sized {
    type Q: Queue;
    /// Real time (Redis) rather than a clock the test moves.
    const REAL_TIME: bool;
    fn new() -> Self;
    fn config(&self) -> Config;
    /// Opens a queue on this backend's storage; again after a drop, it must
    /// see everything the last one did.
    async fn open(&self) -> Self::Q;
    /// Moves the fake clock; real time moves by itself (does nothing).
    fn advance(&self, d: Duration);
    fn timeout(&self) -> Duration {
        self.config().visibility_timeout
    }
}

struct Disk {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
}

impl Disk {
    fn path(&self) -> PathBuf {
        self.dir.path().join("queue.log")
    }
}

impl Backend for Disk {
    type Q = DiskQueue;
    const REAL_TIME: bool = false;
    fn new() -> Disk {
        Disk {
            dir: tempfile::tempdir().expect("a temporary directory"),
            clock: ManualClock::at(1_700_000_000_000),
        }
    }
    fn config(&self) -> Config {
        Config::new(DISK_TIMEOUT, MAX)
    }
    async fn open(&self) -> DiskQueue {
        let path = self.path();
        let clock: Arc<dyn Clock> = self.clock.clone();
        ok(&format!("DiskQueue::open({path:?}, ..)"), async {
            DiskQueue::open(&path, self.config(), clock)
        })
        .await
    }
    fn advance(&self, d: Duration) {
        self.clock.advance(d)
    }
}

struct Redis {
    kv: labkit::services::TestRedis,
}

impl Backend for Redis {
    type Q = RedisQueue;
    const REAL_TIME: bool = true;
    fn new() -> Redis {
        Redis {
            kv: labkit::services::redis(),
        }
    }
    fn config(&self) -> Config {
        Config::new(REDIS_TIMEOUT, MAX)
    }
    async fn open(&self) -> RedisQueue {
        let name = format!("{}queue", self.kv.prefix);
        ok(
            &format!(
                "RedisQueue::connect({:?}, {name:?}, \"suite\", ..)",
                self.kv.url
            ),
            RedisQueue::connect(&self.kv.url, &name, "suite", self.config()),
        )
        .await
    }
    fn advance(&self, _: Duration) {}
}

async fn publish<Q: Queue>(q: &Q, payload: &[u8]) -> MessageId {
    ok(&format!("publish({})", show(payload)), q.publish(payload)).await
}

async fn consume<Q: Queue>(q: &Q) -> Option<Delivery> {
    ok("consume()", q.consume()).await
}

async fn ack<Q: Queue>(q: &Q, id: &MessageId) -> bool {
    ok(&format!("ack({id})"), q.ack(id)).await
}

/// `consume` must return `want` (payload, id, deliveries).
fn expect_delivery(
    did: &str,
    got: Option<Delivery>,
    id: &MessageId,
    payload: &[u8],
    deliveries: u32,
    hint: &str,
) {
    let want = Delivery {
        id: id.clone(),
        payload: payload.to_vec(),
        deliveries,
    };
    same(did, Some(want), got, hint);
}

/// `consume` right now must find nothing. `since` is when the test made
/// the delivery that must not come back yet; on real time, once the
/// timeout has passed since then the check cannot tell (a slow machine),
/// and is skipped.
async fn expect_none_yet<B: Backend>(b: &B, q: &B::Q, since: Instant, did: &str, hint: &str) {
    let got = consume(q).await;
    if got.is_some() && B::REAL_TIME && since.elapsed() >= b.timeout() {
        eprintln!(
            "[test] note: {:?} passed before the check, so it could not tell; skipped",
            since.elapsed()
        );
        return;
    }
    same(did, None, got, hint);
}

/// Moves time by `by` (fake clock) and returns the next delivery: on a fake
/// clock `consume` must have one at once; on real time it is polled for
/// until [`REDELIVERY`].
async fn redelivered<B: Backend>(b: &B, q: &B::Q, by: Duration, did: &str) -> Delivery {
    b.advance(by);
    let start = Instant::now();
    loop {
        if let Some(d) = consume(q).await {
            return d;
        }
        if !B::REAL_TIME {
            Report::new(did)
                .expected("consume() to redeliver a message whose visibility timeout has passed")
                .got("None")
                .hint("is a delivered message kept until it is acked (not deleted on delivery), and is it ready again once now >= delivered_at + visibility_timeout?")
                .fail();
        }
        if start.elapsed() > REDELIVERY {
            Report::new(did)
                .expected(format!("consume() to redeliver a message unacked for {:?} (polled for {REDELIVERY:?})", b.timeout()))
                .got("None every time")
                .hint("do you XAUTOCLAIM entries idle for at least the visibility timeout before reading new ones with XREADGROUP `>`? Is the message still pending (not read with NOACK)?")
                .fail();
        }
        // A poll interval: Redis's idle time has no event to wait on.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------
// The suite.

/// Generates the conformance suite for one backend, in a module of its
/// own: `queue_suite!(disk, Disk)` gives `disk::test_01_...`.
macro_rules! queue_suite {
    ($module:ident, $backend:ty) => {
        mod $module {
            use super::*;

            // Messages come out as they went in, in order, once each, with every byte value: the basic contract.
            #[test]
            fn test_01_published_messages_are_consumed_in_order_byte_for_byte() {
                run(suite_in_order::<$backend>())
            }

            // A delivered message stays invisible until its timeout, then comes back: the visibility timeout.
            #[test]
            fn test_02_an_unacked_message_is_redelivered_at_its_timeout_not_before() {
                run(suite_timeout::<$backend>())
            }

            // Acked means gone for good, while an unacked neighbour comes back: delete on ack, not on delivery.
            #[test]
            fn test_03_an_acked_message_is_never_redelivered() {
                run(suite_acked_gone::<$backend>())
            }

            // Acking a message not delivered, or twice, is a no-op: a confused consumer must not corrupt the queue.
            #[test]
            fn test_04_ack_of_an_undelivered_or_acked_message_changes_nothing() {
                run(suite_bad_acks::<$backend>())
            }

            // After max_deliveries timed-out deliveries a message moves to the dead-letter queue: a poison message must not loop forever.
            #[test]
            fn test_05_a_message_is_dead_lettered_after_max_deliveries() {
                run(suite_dead_letter::<$backend>())
            }

            // A reopened queue remembers acks, deliveries and their counts: the state is in the storage, not in memory.
            #[test]
            fn test_06_a_reopened_queue_keeps_acks_and_delivery_counts() {
                run(suite_reopen::<$backend>())
            }

            // A hundred messages, each delivered and acked once, then nothing: no loss, no duplicate at volume.
            #[test]
            fn test_07_a_hundred_messages_are_each_delivered_once() {
                run(suite_hundred::<$backend>())
            }
        }
    };
}

queue_suite!(disk, Disk);
queue_suite!(redis, Redis);

async fn suite_in_order<B: Backend>() {
    let b = B::new();
    let q = b.open().await;
    let every_byte: Vec<u8> = (0..=255u8).collect();
    let payloads: [&[u8]; 4] = [b"first", b"", &every_byte, b"last\n\0"];
    let mut ids = Vec::new();
    for p in payloads {
        ids.push(publish(&q, p).await);
    }
    let distinct: BTreeSet<_> = ids.iter().collect();
    same(
        "published 4 messages; their ids, distinct",
        4,
        distinct.len(),
        "publish returns a new id for every message",
    );
    for (i, p) in payloads.iter().enumerate() {
        let got = consume(&q).await;
        expect_delivery(
            &format!(
                "published 4 messages (\"first\", an empty one, bytes 0..=255, \"last\\n\\0\"), then consume() number {}",
                i + 1
            ),
            got,
            &ids[i],
            p,
            1,
            "are messages delivered oldest first, with the id publish returned, every byte kept (an empty payload too), and deliveries = 1 the first time?",
        );
    }
    let got = consume(&q).await;
    same(
        "consumed all 4 messages, then consume() once more",
        None,
        got,
        "consume returns None when no message is ready; a delivered one is invisible until its timeout",
    );
    for id in &ids {
        same(
            &format!("ack({id}) of a delivered message"),
            true,
            ack(&q, id).await,
            "ack of a message delivered and not yet acked returns true",
        );
    }
}

async fn suite_timeout<B: Backend>() {
    let b = B::new();
    let q = b.open().await;
    let id = publish(&q, b"x").await;
    let since = Instant::now();
    let first = consume(&q).await;
    expect_delivery(
        "published \"x\", then consume()",
        first,
        &id,
        b"x",
        1,
        "consume hands out the ready message",
    );
    expect_none_yet(&b, &q, since, "consumed \"x\" and did not ack it; consume() again at once", "a delivered message is invisible for visibility_timeout: do you mark it in flight with a deadline?").await;
    b.advance(b.timeout() - Duration::from_millis(1));
    expect_none_yet(
        &b,
        &q,
        since,
        &format!(
            "consumed \"x\"; then {:?} later (1 ms before its timeout) consume()",
            b.timeout() - Duration::from_millis(1)
        ),
        "a message is ready again only once now >= delivered_at + visibility_timeout, not before",
    )
    .await;
    let again = redelivered(
        &b,
        &q,
        Duration::from_millis(1),
        &format!(
            "consumed \"x\", did not ack it; {:?} later, consume()",
            b.timeout()
        ),
    )
    .await;
    expect_delivery(
        "consumed \"x\", did not ack it, waited out the timeout, consume()",
        Some(again),
        &id,
        b"x",
        2,
        "a redelivery has the same id and payload, and deliveries counts it (2)",
    );
    same(
        "ack of the redelivered \"x\"",
        true,
        ack(&q, &id).await,
        "ack works on a redelivered message",
    );
}

async fn suite_acked_gone<B: Backend>() {
    let b = B::new();
    let q = b.open().await;
    let a = publish(&q, b"a").await;
    let bb = publish(&q, b"b").await;
    let got = consume(&q).await;
    expect_delivery(
        "published a, b; consume()",
        got,
        &a,
        b"a",
        1,
        "oldest first",
    );
    let got = consume(&q).await;
    expect_delivery(
        "published a, b; consume() twice",
        got,
        &bb,
        b"b",
        1,
        "oldest first",
    );
    same(
        "ack(a)",
        true,
        ack(&q, &a).await,
        "ack of a delivered message returns true",
    );
    let did = "consumed a and b, acked a only, waited out the timeout; consume()";
    let got = redelivered(&b, &q, b.timeout(), did).await;
    expect_delivery(
        did,
        Some(got),
        &bb,
        b"b",
        2,
        "only the unacked b comes back; an acked message is gone for good",
    );
    same(
        "after b's redelivery, consume() again",
        None,
        consume(&q).await,
        "a was acked: it must never be delivered again",
    );
    same(
        "ack(b)",
        true,
        ack(&q, &bb).await,
        "ack of a redelivered message returns true",
    );
    // A marker delivered after a and b were acked: once it comes back, any
    // unacked older delivery would have come back before it.
    let m = publish(&q, b"marker").await;
    let got = consume(&q).await;
    expect_delivery(
        "acked a and b; published and consumed \"marker\"",
        got,
        &m,
        b"marker",
        1,
        "the new message is the only ready one",
    );
    let did = "acked a and b, consumed \"marker\", waited out the timeout; consume()";
    let got = redelivered(&b, &q, b.timeout(), did).await;
    expect_delivery(
        did,
        Some(got),
        &m,
        b"marker",
        2,
        "acked a and b must not come back; only the unacked marker does",
    );
}

async fn suite_bad_acks<B: Backend>() {
    let b = B::new();
    let q = b.open().await;
    let a = publish(&q, b"a").await;
    let bb = publish(&q, b"b").await;
    same(
        "published a and b; ack(a) before any consume",
        false,
        ack(&q, &a).await,
        "only a delivered message can be acked: an ack of a message never delivered returns false and changes nothing",
    );
    let got = consume(&q).await;
    expect_delivery(
        "acked a before delivery (refused), then consume()",
        got,
        &a,
        b"a",
        1,
        "an ack that returned false must not remove the message",
    );
    same(
        "ack(a) after its delivery",
        true,
        ack(&q, &a).await,
        "ack of a delivered message returns true",
    );
    same(
        "ack(a) a second time",
        false,
        ack(&q, &a).await,
        "an already acked message: ack returns false",
    );
    let got = consume(&q).await;
    expect_delivery(
        "acked a twice, then consume()",
        got,
        &bb,
        b"b",
        1,
        "a repeated ack must not touch other messages",
    );
    let did = "consumed b, did not ack it, waited out the timeout; consume()";
    let got = redelivered(&b, &q, b.timeout(), did).await;
    expect_delivery(
        did,
        Some(got),
        &bb,
        b"b",
        2,
        "b is still pending after the bad acks, and a (acked) must not come back",
    );
    same(
        "ack(b)",
        true,
        ack(&q, &bb).await,
        "ack of a redelivered message returns true",
    );
    same(
        "ack(b) again",
        false,
        ack(&q, &bb).await,
        "an already acked message: ack returns false",
    );
    same(
        "dead_letters() after these acks",
        Vec::<Delivery>::new(),
        ok("dead_letters()", q.dead_letters()).await,
        "nothing was delivered more than once past its timeout",
    );
}

async fn suite_dead_letter<B: Backend>() {
    let b = B::new();
    let q = b.open().await;
    let p = publish(&q, b"poison").await;
    let got = consume(&q).await;
    expect_delivery(
        "published \"poison\"; consume()",
        got,
        &p,
        b"poison",
        1,
        "first delivery",
    );
    for n in 2..=MAX {
        let did = format!(
            "max_deliveries {MAX}: \"poison\" delivered {} times, never acked; waited out the timeout; consume()",
            n - 1
        );
        let got = redelivered(&b, &q, b.timeout(), &did).await;
        expect_delivery(
            &did,
            Some(got),
            &p,
            b"poison",
            n,
            "a message is delivered up to max_deliveries times, counting each",
        );
    }
    // The marker is delivered after the last delivery of "poison": when it
    // comes back, "poison" timed out before it.
    let m = publish(&q, b"marker").await;
    let got = consume(&q).await;
    expect_delivery(
        "after poison's last delivery, published and consumed \"marker\"",
        got,
        &m,
        b"marker",
        1,
        "the new message is the only ready one",
    );
    let did = format!(
        "\"poison\" delivered {MAX} times (max_deliveries {MAX}) and \"marker\" once, neither acked; waited out the timeout; consume()"
    );
    let got = redelivered(&b, &q, b.timeout(), &did).await;
    expect_delivery(
        &did,
        Some(got),
        &m,
        b"marker",
        2,
        &format!(
            "a message already delivered max_deliveries ({MAX}) times is dead-lettered, not delivered a {}th time (deliveries >= max, not >)",
            MAX + 1
        ),
    );
    let want = vec![Delivery {
        id: p.clone(),
        payload: b"poison".to_vec(),
        deliveries: MAX,
    }];
    same(
        "dead_letters() after \"poison\" timed out its last delivery",
        want.clone(),
        ok("dead_letters()", q.dead_letters()).await,
        "the dead letter keeps the message's id, payload and how often it was delivered",
    );
    same(
        "ack of the dead-lettered \"poison\"",
        false,
        ack(&q, &p).await,
        "a dead-lettered message is no longer pending: ack returns false",
    );
    drop(q);
    let q = b.open().await;
    same(
        "dead-lettered \"poison\", dropped the queue, opened it again; dead_letters()",
        want,
        ok("dead_letters()", q.dead_letters()).await,
        "the dead-letter queue is stored too",
    );
    same(
        "after reopening, ack of the pending \"marker\"",
        true,
        ack(&q, &m).await,
        "a pending delivery survives a reopen and can be acked",
    );
}

async fn suite_reopen<B: Backend>() {
    let b = B::new();
    let q = b.open().await;
    let a = publish(&q, b"a").await;
    let bb = publish(&q, b"b").await;
    let c = publish(&q, b"c").await;
    expect_delivery(
        "published a, b, c; consume()",
        consume(&q).await,
        &a,
        b"a",
        1,
        "oldest first",
    );
    same(
        "ack(a)",
        true,
        ack(&q, &a).await,
        "ack of a delivered message returns true",
    );
    let since = Instant::now();
    expect_delivery(
        "acked a; consume()",
        consume(&q).await,
        &bb,
        b"b",
        1,
        "oldest first",
    );
    drop(q);
    let q = b.open().await;
    let did = "published a, b, c; acked a; consumed b (no ack); dropped the queue and opened it again; consume()";
    let got = consume(&q).await;
    if B::REAL_TIME && since.elapsed() >= b.timeout() && got.as_ref().is_some_and(|d| d.id == bb) {
        eprintln!("[test] note: b's timeout passed before the check; skipped");
    } else {
        expect_delivery(
            did,
            got,
            &c,
            b"c",
            1,
            "after a reopen, acked a must stay gone (do you replay the acks?), b is still in flight until its timeout (its delivery time is stored), so c comes next",
        );
    }
    let did = "reopened with b in flight; waited out b's timeout; consume()";
    let got = redelivered(&b, &q, b.timeout(), did).await;
    expect_delivery(
        did,
        Some(got),
        &bb,
        b"b",
        2,
        "b's delivery before the reopen counts: this is its 2nd (do you store deliveries?), and acked a never comes back",
    );
    same(
        "after the reopen, ack(a) again",
        false,
        ack(&q, &a).await,
        "a was acked before the reopen",
    );
    same(
        "after the reopen, ack(b)",
        true,
        ack(&q, &bb).await,
        "b is pending",
    );
}

async fn suite_hundred<B: Backend>() {
    let b = B::new();
    let q = b.open().await;
    let mut want = Vec::new();
    for i in 0..100 {
        let p = format!("m{i:03}").into_bytes();
        want.push((publish(&q, &p).await, p));
    }
    let mut got = Vec::new();
    while let Some(d) = consume(&q).await {
        got.push((d.id.clone(), d.payload.clone()));
        same(
            &format!("ack({}) of {}", d.id, show(&d.payload)),
            true,
            ack(&q, &d.id).await,
            "ack of a delivered message returns true",
        );
        if got.len() > 200 {
            break;
        }
    }
    same(
        "published m000..m099, then consumed and acked until consume() returned None; (id, payload) in order",
        want,
        got,
        "each message is delivered once, oldest first, and consume returns None only when none is ready",
    );
}

// ---------------------------------------------------------------------------
// The disk log's own tests.

/// The log file of a test, in its temporary directory.
fn log_in(dir: &Path) -> PathBuf {
    dir.join("queue.log")
}

fn open_disk(path: &Path, clock: Arc<dyn Clock>, timeout: Duration) -> DiskQueue {
    match DiskQueue::open(path, Config::new(timeout, 1000), clock) {
        Ok(q) => q,
        Err(e) => Report::new(format!("DiskQueue::open({path:?})"))
            .expected("Ok: a torn or garbled last record is skipped, never an error")
            .got(format!("Err({e:?}): {e}"))
            .hint("replay stops at the first record that is short or fails its checksum, and treats it as never written")
            .fail(),
    }
}

/// Everything `consume` hands out now, until `None`.
async fn drain(q: &DiskQueue, what: &str) -> Vec<Delivery> {
    let mut out = Vec::new();
    while let Some(d) = ok(&format!("consume() {what}"), q.consume()).await {
        out.push(d);
        if out.len() > 100_000 {
            break;
        }
    }
    out
}

/// The child of test 20: publishes r<round>-0, r<round>-1, ... and after
/// every second publish consumes one and acks it, announcing each only
/// after the call returned (`published`, `delivered`, `acked`). Runs until the parent kills it.
#[test]
#[ignore = "a child process of test_20"]
fn role_disk_worker() {
    let path = role_param("QUEUE_PATH");
    let round = role_param("ROUND");
    // Every announcement goes to stdout and, in one write(2), to a file:
    // what a write returned is in the page cache and survives the SIGKILL,
    // so the parent reads all of them, also those it had not read from the
    // pipe when it killed.
    let mut told = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(role_param("ANNOUNCE_PATH"))
        .expect("the worker opens its announcement file");
    let mut announce = move |line: String| {
        use std::io::Write;
        told.write_all(format!("{line}\n").as_bytes())
            .expect("announce");
        println!("{line}");
    };
    run(async {
        let q = DiskQueue::open(
            &path,
            Config::new(Duration::from_secs(60), 1000),
            Arc::new(SystemClock),
        )
        .expect("the worker opens the log");
        for i in 0..1_000_000u64 {
            let payload = format!("r{round}-{i}");
            q.publish(payload.as_bytes()).await.expect("publish");
            announce(format!("published {payload}"));
            if i % 2 == 1
                && let Some(d) = q.consume().await.expect("consume")
            {
                announce(format!("delivered {}", String::from_utf8_lossy(&d.payload)));
                assert!(
                    q.ack(&d.id).await.expect("ack"),
                    "the worker's ack of its own delivery"
                );
                announce(format!("acked {}", String::from_utf8_lossy(&d.payload)));
            }
        }
    });
}

// A publisher/consumer killed with SIGKILL mid-stream, twice: every message it announced as published is there, none announced as acked comes back.
#[test]
fn test_20_a_sigkilled_worker_loses_no_published_message_and_redelivers_no_acked_one() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = log_in(dir.path());
    let path_str = path.to_str().expect("a UTF-8 temp path").to_string();

    let mut published: Vec<String> = Vec::new();
    let mut acked: BTreeSet<String> = BTreeSet::new();
    // The last message each round delivered and did not announce as
    // acked: the kill may have come while its ack was being written.
    let mut maybe_acked: BTreeSet<String> = BTreeSet::new();
    // The payload each round may have been publishing when it was killed.
    let mut in_flight: BTreeSet<String> = BTreeSet::new();
    for round in 0..2 {
        let r = round.to_string();
        let told = dir.path().join(format!("announced_{round}.txt"));
        let told_str = told.to_str().expect("a UTF-8 temp path").to_string();
        let mut child = Session::start_role(
            "role_disk_worker",
            &[
                ("QUEUE_PATH", &path_str),
                ("ROUND", &r),
                ("ANNOUNCE_PATH", &told_str),
            ],
        );
        let stop = format!("published r{round}-150");
        child.read_until(
            &format!("the line `{stop}`"),
            |l| l == stop,
            Duration::from_secs(20),
        );
        // Dropping the session SIGKILLs the worker while it keeps publishing
        // and acking (no destructor, no flush), and reaps it.
        drop(child);
        let told_text = std::fs::read_to_string(&told).expect("read the announcements");
        let mut last = 0;
        let mut last_delivered = None;
        // A line without its newline was cut by the kill: not announced.
        for line in told_text
            .split_inclusive('\n')
            .filter_map(|l| l.strip_suffix('\n'))
        {
            if let Some(p) = line.strip_prefix("published ") {
                published.push(p.to_string());
                last = last.max(
                    p.rsplit('-')
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0),
                );
            } else if let Some(p) = line.strip_prefix("delivered ") {
                last_delivered = Some(p.to_string());
            } else if let Some(p) = line.strip_prefix("acked ") {
                acked.insert(p.to_string());
            }
        }
        in_flight.insert(format!("r{round}-{}", last + 1));
        if let Some(p) = last_delivered.filter(|p| !acked.contains(p)) {
            maybe_acked.insert(p);
        }

        // Look at a copy, so the next round continues the original log.
        let copy = dir.path().join(format!("after_round_{round}.log"));
        std::fs::copy(&path, &copy).expect("copy the log");
        // An hour later: every delivery of the worker has timed out.
        let clock = ManualClock::at(SystemClock.now_ms() + 3_600_000);
        let got: Vec<String> = run_get(async {
            let q = open_disk(&copy, clock, Duration::from_secs(60));
            drain(&q, "after the worker was killed").await
        })
        .into_iter()
        .map(|d| String::from_utf8_lossy(&d.payload).into_owned())
        .collect();

        let did = format!(
            "ran the worker (publish, and after every second publish consume + ack), SIGKILLed it after `{stop}` ({} rounds so far; it announced {} published, {} acked); reopened its log an hour later and consumed everything",
            round + 1,
            published.len(),
            acked.len()
        );
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for p in &got {
            *seen.entry(p.as_str()).or_default() += 1;
        }
        if let Some((p, n)) = seen.iter().find(|(_, n)| **n > 1) {
            Report::new(&did)
                .expected("each message delivered once in one drain")
                .got(format!("{p} delivered {n} times"))
                .hint("is a delivered message invisible until its timeout?")
                .fail();
        }
        let lost: Vec<&String> = published
            .iter()
            .filter(|p| {
                !acked.contains(*p) && !maybe_acked.contains(*p) && !seen.contains_key(p.as_str())
            })
            .collect();
        if !lost.is_empty() {
            Report::new(&did)
                .expected("every message announced as published (publish returned Ok) and not acked to be delivered")
                .got(format!("{} missing, e.g. {:?}", lost.len(), &lost[..lost.len().min(5)]))
                .hint("does publish write the whole record and fsync before returning, and does replay keep every good record up to a torn tail?")
                .fail();
        }
        let back: Vec<&String> = got.iter().filter(|p| acked.contains(*p)).collect();
        if !back.is_empty() {
            Report::new(&did)
                .expected("no message announced as acked (ack returned true) to come back")
                .got(format!("{} came back, e.g. {:?}", back.len(), &back[..back.len().min(5)]))
                .hint("does ack write a record and fsync before returning, and does replay apply the acks?")
                .fail();
        }
        let known: BTreeSet<&String> = published.iter().chain(in_flight.iter()).collect();
        let strange: Vec<&String> = got.iter().filter(|p| !known.contains(p)).collect();
        if !strange.is_empty() {
            Report::new(&did)
                .expected("only messages the worker published")
                .got(format!(
                    "{} others, e.g. {:?}",
                    strange.len(),
                    &strange[..strange.len().min(5)]
                ))
                .hint("is every record checked (length and checksum) before it is trusted?")
                .fail();
        }
    }
}

fn run_get<T>(body: impl Future<Output = T>) -> T {
    labkit::wait::runtime(0).block_on(body)
}

/// Publishes alpha, bravo, charlie to a new log; returns the ids and the
/// file's length after bravo and after charlie.
fn three_records(path: &Path) -> (Vec<MessageId>, u64, u64) {
    run_get(async {
        let q = open_disk(path, ManualClock::at(1_000), DISK_TIMEOUT);
        let a = publish(&q, b"alpha").await;
        let b = publish(&q, b"bravo").await;
        let two = std::fs::metadata(path).expect("the log exists").len();
        let c = publish(&q, b"charlie").await;
        let three = std::fs::metadata(path).expect("the log exists").len();
        (vec![a, b, c], two, three)
    })
}

/// Opens `path` and checks it holds exactly alpha and bravo.
fn expect_alpha_bravo(path: &Path, ids: &[MessageId], did: &str, hint: &str) {
    let got: Vec<(MessageId, Vec<u8>)> = run_get(async {
        let q = open_disk(path, ManualClock::at(1_000), DISK_TIMEOUT);
        drain(&q, did)
            .await
            .into_iter()
            .map(|d| (d.id, d.payload))
            .collect()
    });
    let want = vec![
        (ids[0].clone(), b"alpha".to_vec()),
        (ids[1].clone(), b"bravo".to_vec()),
    ];
    same(did, want, got, hint);
}

// A log cut at every byte of its last record opens, with exactly the records before it: a crash tears only the tail.
#[test]
fn test_21_a_log_cut_anywhere_in_its_last_record_opens_with_the_intact_records() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = log_in(dir.path());
    let (ids, two, three) = three_records(&path);
    let bytes = std::fs::read(&path).expect("read the log");
    Report::new("published alpha, bravo, charlie")
        .expected("the log to grow with each publish")
        .got(format!("{two} bytes after bravo, {three} after charlie"))
        .check(three > two);
    for cut in two..three {
        let torn = dir.path().join(format!("cut_{cut}.log"));
        std::fs::write(&torn, &bytes[..cut as usize]).expect("write the cut log");
        expect_alpha_bravo(
            &torn,
            &ids,
            &format!(
                "published alpha, bravo, charlie ({three} bytes); kept the first {cut} bytes (charlie's record torn); opened it and consumed everything"
            ),
            "a short record at the end is a write the crash cut off: skip it, keep every record before it",
        );
    }
}

// Every byte of the last record garbled in turn: the checksum catches it, and open yields the intact records, never a wrong message.
#[test]
fn test_22_a_garbled_last_record_is_caught_by_its_checksum() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = log_in(dir.path());
    let (ids, two, three) = three_records(&path);
    let bytes = std::fs::read(&path).expect("read the log");
    for at in two..three {
        for flip in [0x01u8, 0x80, 0xFF] {
            let mut bad = bytes.clone();
            bad[at as usize] ^= flip;
            let garbled = dir.path().join(format!("garbled_{at}_{flip}.log"));
            std::fs::write(&garbled, &bad).expect("write the garbled log");
            expect_alpha_bravo(
                &garbled,
                &ids,
                &format!(
                    "published alpha, bravo, charlie; xor-ed byte {at} (in charlie's record, bytes {two}..{three}) with {flip:#04x}; opened it and consumed everything"
                ),
                "does the checksum cover every byte of the record after it (kind, id, payload), and is the length checked against what is left of the file before it is used?",
            );
        }
    }
}

// After a torn tail, new records follow the last good one: a message published after the recovery survives the next open.
#[test]
fn test_23_a_message_published_after_a_torn_tail_survives_the_next_open() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = log_in(dir.path());
    let (ids, two, three) = three_records(&path);
    let bytes = std::fs::read(&path).expect("read the log");
    let cut = two + (three - two) / 2;
    std::fs::write(&path, &bytes[..cut as usize]).expect("write the cut log");
    let delta = run_get(async {
        let q = open_disk(&path, ManualClock::at(1_000), DISK_TIMEOUT);
        publish(&q, b"delta").await
    });
    let got: Vec<(MessageId, Vec<u8>)> = run_get(async {
        let q = open_disk(&path, ManualClock::at(1_000), DISK_TIMEOUT);
        drain(&q, "after the second open")
            .await
            .into_iter()
            .map(|d| (d.id, d.payload))
            .collect()
    });
    let want = vec![
        (ids[0].clone(), b"alpha".to_vec()),
        (ids[1].clone(), b"bravo".to_vec()),
        (delta, b"delta".to_vec()),
    ];
    same(
        &format!(
            "published alpha, bravo, charlie; cut the log to {cut} bytes (charlie torn); opened it, published delta, dropped it; opened it again and consumed everything"
        ),
        want,
        got,
        "after skipping a torn tail, truncate the file to the last good record: a record appended after the garbage is behind the point where the next replay stops",
    );
}

// Ids are never reused, even once every message was acked and the log reopened: an old ack must not hit a new message.
#[test]
fn test_24_ids_are_never_reused_after_a_reopen() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = log_in(dir.path());
    let clock = ManualClock::at(1_000);
    let (a, b) = run_get(async {
        let q = open_disk(&path, clock.clone(), DISK_TIMEOUT);
        let a = publish(&q, b"a").await;
        let b = publish(&q, b"b").await;
        for _ in 0..2 {
            let d = consume(&q).await.expect("a message to consume");
            assert!(ack(&q, &d.id).await);
        }
        (a, b)
    });
    run_get(async {
        let q = open_disk(&path, clock.clone(), DISK_TIMEOUT);
        let c = publish(&q, b"c").await;
        Report::new("published a and b, consumed and acked both, reopened the log, published c")
            .expected(format!("c's id to differ from a's ({a}) and b's ({b})"))
            .got(format!("c's id is {c}"))
            .hint("the next id is one past the highest id ever published (acked ones too), not one past the live messages")
            .check(c != a && c != b);
        same(
            "then ack(a), acked before the reopen",
            false,
            ack(&q, &a).await,
            "a was acked already",
        );
        expect_delivery(
            "then consume()",
            consume(&q).await,
            &c,
            b"c",
            1,
            "c is the one live message",
        );
    });
}

// crc32 is the standard CRC-32 (IEEE): the check value every implementation agrees on.
#[test]
fn test_25_crc32_gives_the_standard_check_values() {
    let crc =
        |b: &'static [u8]| labkit::wait::within(CALL, "crc32(..)", move || simple_queue::crc32(b));
    for (input, want) in [
        (&b"123456789"[..], 0xCBF4_3926u32),
        (b"", 0),
        (b"a", 0xE8B7_BE43),
        (b"The quick brown fox jumps over the lazy dog", 0x414F_A339),
    ] {
        same(
            &format!("crc32({})", show(input)),
            format!("{want:#010x}"),
            format!("{:#010x}", crc(input)),
            "reflected polynomial 0xEDB88320, start at 0xFFFFFFFF, xor the result with 0xFFFFFFFF",
        );
    }
}

/// The child of test 26: opens the log, publishes 10 messages, consumes
/// and acks 5, each call awaited before the next.
#[test]
#[ignore = "a child process of test_26"]
fn role_sync_worker() {
    let Ok(path) = std::env::var("QUEUE_PATH") else {
        panic!("a child process of test_26: run the tests without --ignored");
    };
    run(async {
        let q = DiskQueue::open(
            &path,
            Config::new(Duration::from_secs(60), 5),
            Arc::new(SystemClock),
        )
        .expect("the worker opens the log");
        for i in 0..10 {
            q.publish(format!("m{i}").as_bytes())
                .await
                .expect("publish");
        }
        for _ in 0..5 {
            let d = q.consume().await.expect("consume").expect("a message");
            assert!(q.ack(&d.id).await.expect("ack"));
        }
        println!("done");
    });
}

// Every publish and every ack is synced before it returns (strace counts fsync/fdatasync): a SIGKILL cannot show a missing fsync, a power cut would.
#[test]
fn test_26_every_publish_and_ack_is_synced_before_it_returns() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = log_in(dir.path());
    let exe = std::env::current_exe().expect("this test binary");
    let cmd = labkit::run::Cmd::new(exe)
        .args([
            "role_sync_worker",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env("QUEUE_PATH", &path)
        .deadline(Duration::from_secs(20));
    let traced = labkit::strace::Strace::new(cmd)
        .trace("fsync,fdatasync,openat")
        .run();
    traced.outcome.expect_success();
    let syncs = traced.count("fsync") + traced.count("fdatasync");
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("queue.log")
        .to_string();
    // Opening the log with O_SYNC or O_DSYNC makes every write synced: as good.
    let sync_flag = traced.named("openat").any(|c| {
        c.args.contains(&name) && (c.args.contains("O_SYNC") || c.args.contains("O_DSYNC"))
    });
    Report::new("ran a child process under strace: opened a new log, published 10 messages, consumed and acked 5, one call after the other")
        .expected("at least 15 fsync/fdatasync calls (one per publish and per ack), or the log opened with O_SYNC/O_DSYNC")
        .got(format!("{syncs} fsync/fdatasync calls, and no O_SYNC/O_DSYNC on the log"))
        .hint("call File::sync_data (fdatasync) after writing a publish or an ack record, before returning: until then the record is only in the page cache, and a power cut loses it")
        .check(syncs >= 15 || sync_flag);
}

// ---------------------------------------------------------------------------
// Redis Streams' own tests.

/// The child of test 30: a consumer in the group, driven by lines on
/// stdin: `consume` (poll until a message comes, up to 10 s) answers
/// `got <id> <payload> <deliveries>`; `ack <id>` answers `acked <id> <bool>`.
#[test]
#[ignore = "a child process of test_30"]
fn role_redis_consumer() {
    let url = role_param("REDIS_URL");
    let name = role_param("QUEUE_NAME");
    let consumer = role_param("CONSUMER");
    run(async {
        let q = RedisQueue::connect(&url, &name, &consumer, Config::new(REDIS_TIMEOUT, 5))
            .await
            .expect("the consumer connects");
        // Ids travel to the parent as text; keep the real ones to ack them.
        let mut known: HashMap<String, MessageId> = HashMap::new();
        println!("ready");
        let mut lines = std::io::stdin().lines();
        while let Some(Ok(line)) = lines.next() {
            if line == "consume" {
                let start = Instant::now();
                loop {
                    if let Some(d) = q.consume().await.expect("consume") {
                        println!(
                            "got {} {} {}",
                            d.id,
                            String::from_utf8_lossy(&d.payload),
                            d.deliveries
                        );
                        known.insert(d.id.to_string(), d.id);
                        break;
                    }
                    if start.elapsed() > Duration::from_secs(10) {
                        println!("none");
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            } else if let Some(id) = line.strip_prefix("ack ") {
                let acked = match known.get(id) {
                    Some(id) => q.ack(id).await.expect("ack"),
                    None => false,
                };
                println!("acked {id} {acked}");
            }
        }
    });
}

/// Parses `got <id> <payload> <n>`.
fn parse_got(line: &str) -> (String, String, u32) {
    let parts: Vec<&str> = line.split(' ').collect();
    match parts.as_slice() {
        ["got", id, payload, n] => (id.to_string(), payload.to_string(), n.parse().unwrap_or(0)),
        _ => Report::new("read a consumer's answer")
            .got(format!("{line:?}"))
            .fail(),
    }
}

// Two consumer processes in one group get different messages, and one that dies holding a message loses it to the other after the timeout.
#[test]
fn test_30_two_consumer_processes_share_a_group_and_reclaim_from_a_dead_one() {
    let kv = labkit::services::redis();
    let name = format!("{}queue", kv.prefix);
    let publisher =
        || RedisQueue::connect(&kv.url, &name, "publisher", Config::new(REDIS_TIMEOUT, 5));
    run(async {
        let q = ok("RedisQueue::connect (the publisher)", publisher()).await;
        publish(&q, b"one").await;
        publish(&q, b"two").await;
    });
    let start = |consumer: &str| {
        let mut s = Session::start_role(
            "role_redis_consumer",
            &[
                ("REDIS_URL", &kv.url),
                ("QUEUE_NAME", &name),
                ("CONSUMER", consumer),
            ],
        );
        s.read_until("`ready`", |l| l == "ready", Duration::from_secs(20));
        s
    };
    let mut a = start("a");
    a.send_line("consume");
    let (_, line) = a.read_until(
        "consumer a's `got ...` line",
        |l| l.starts_with("got ") || l == "none",
        Duration::from_secs(15),
    );
    let (a_id, a_payload, a_n) = parse_got(&line);
    let mut b = start("b");
    b.send_line("consume");
    let (_, line) = b.read_until(
        "consumer b's `got ...` line",
        |l| l.starts_with("got ") || l == "none",
        Duration::from_secs(15),
    );
    let (b_id, b_payload, b_n) = parse_got(&line);
    let did = "published \"one\" and \"two\"; consumer process a consumed one (no ack), then consumer process b consumed";
    Report::new(did)
        .expected("b to get the other message, each delivered for the first time")
        .got(format!("a got {a_payload} ({a_id}, deliveries {a_n}), b got {b_payload} ({b_id}, deliveries {b_n})"))
        .hint("both consumers must read with XREADGROUP in the same group (`>`: only entries never delivered to the group), each under its own consumer name")
        .check(a_id != b_id && a_n == 1 && b_n == 1);

    // a dies holding its message.
    drop(a);
    b.send_line("consume");
    let (_, line) = b.read_until(
        "consumer b's `got ...` line",
        |l| l.starts_with("got ") || l == "none",
        Duration::from_secs(15),
    );
    let (id, payload, n) = parse_got(&line);
    same(
        &format!(
            "{did}; a was SIGKILLed holding {a_payload}; b consumed again (polling up to 10 s)"
        ),
        (a_id.clone(), a_payload.clone(), 2),
        (id, payload, n),
        "after the visibility timeout, XAUTOCLAIM moves a dead consumer's pending entry to the one that asks; its delivery count becomes 2",
    );
    for id in [&b_id, &a_id] {
        b.send_line(&format!("ack {id}"));
        let want = format!("acked {id} true");
        b.read_until(
            &format!("consumer b's `{want}`"),
            |l| l.starts_with("acked "),
            Duration::from_secs(15),
        );
        let last = b.lines_seen().last().cloned().unwrap_or_default();
        same(
            &format!("consumer b acked {id}"),
            want,
            last,
            "XACK of an entry pending in the group returns 1, whichever consumer it was first delivered to",
        );
    }
    drop(b);
    run(async {
        let parent = ok("RedisQueue::connect (the publisher)", publisher()).await;
        same(
            "both messages acked by b; the publisher's consume()",
            None,
            consume(&parent).await,
            "every message is acked: nothing is ready",
        );
        same(
            "dead_letters()",
            Vec::<Delivery>::new(),
            ok("dead_letters()", parent.dead_letters()).await,
            "no message reached max_deliveries",
        );
    });
}

// A timed-out message behind many pending ones is still found: XAUTOCLAIM scans the pending list in steps, and its cursor must be followed.
#[test]
fn test_31_a_redelivery_is_found_behind_many_fresh_pending_messages() {
    let kv = labkit::services::redis();
    let name = format!("{}queue", kv.prefix);
    run(async {
        let q = ok(
            "RedisQueue::connect",
            RedisQueue::connect(&kv.url, &name, "solo", Config::new(REDIS_TIMEOUT, 5)),
        )
        .await;
        let mut ids = Vec::new();
        for i in 0..25 {
            ids.push(publish(&q, format!("m{i:02}").as_bytes()).await);
        }
        for id in &ids {
            let got = consume(&q).await;
            same(
                "published m00..m24; consume() each",
                Some(id.clone()),
                got.map(|d| d.id),
                "oldest first",
            );
        }
        // Each redelivery makes that entry fresh again, so the later ones
        // sit behind more and more fresh entries in the pending list.
        let mut back = BTreeSet::new();
        let start = Instant::now();
        while back.len() < ids.len() {
            match consume(&q).await {
                Some(d) => {
                    same(&format!("redelivery of {}", d.id), 2, d.deliveries, "the second delivery");
                    back.insert(d.id);
                }
                None if start.elapsed() > REDELIVERY => Report::new("consumed m00..m24 without acking, then polled consume() for their redeliveries")
                    .expected(format!("all 25 back within {REDELIVERY:?}"))
                    .got(format!("{} back", back.len()))
                    .hint("XAUTOCLAIM looks at no more than 10 x COUNT pending entries per call and answers a cursor: an empty answer with a cursor other than 0-0 means keep scanning from it")
                    .fail(),
                None => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    });
}
