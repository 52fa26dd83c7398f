//! The grader for lab 22, Redis basics.
//!
//! Every test talks to a real Redis (`labkit::services::redis`: `REDIS_URL`
//! if set, else a throwaway `redis-server`) and gets a key prefix of its
//! own, so tests running at the same time never see each other's keys. The
//! test checks what the store did with a connection of its own ("raw"),
//! under the documented key layout: the store's `name` is the Redis key
//! `prefix + name`. Every call has a deadline ([`CALL`]); nothing sleeps.
//!
//! Races are made certain, or as good as certain, rather than hoped for:
//! - 100 `incr` calls start together behind a barrier: a read-then-write
//!   counter would need all 100 read/write pairs to line up one after the
//!   other by chance to reach 100.
//! - "one round trip" is checked by pausing Redis's writes (`CLIENT PAUSE
//!   ... WRITE`, for milliseconds): the first `SET` of a pipeline then waits
//!   in Redis with every other command already behind it in the connection's
//!   query buffer (`CLIENT LIST` shows it as `qbuf`). A store that awaits
//!   each reply before sending the next command has sent only one.
//! - compare-and-set runs from many tasks at once while the test writes the
//!   same key as fast as it can: a transaction that was not watched loses
//!   updates, one that gives up on a conflict says "no swap" wrongly.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use labkit::Report;
use labkit::report::same;
use labkit::services::TestRedis;
use labkit::wait::{eventually, expect_err, expect_ok, within_async};
use redis::aio::MultiplexedConnection;
use redis::{FromRedisValue, Value};
use redis_basics::{Profile, Store, StoreError, Ttl};
use tokio::sync::Barrier;

/// The deadline of one call of the store.
const CALL: Duration = Duration::from_secs(10);

/// The deadline of the tests that run many calls at once.
const MANY: Duration = Duration::from_secs(60);

/// A TTL long enough never to pass during a test, with a fraction of a
/// second that a TTL set in whole seconds loses.
const LONG_TTL: Duration = Duration::from_millis(100_900);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// One test's store, its Redis and the test's own connection to it.
struct Lab {
    store: Arc<Store>,
    kv: TestRedis,
    raw: MultiplexedConnection,
}

impl Lab {
    /// The Redis key the store's `name` stands for.
    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.kv.prefix)
    }
}

/// Runs `body` with a store connected to a fresh key prefix.
fn lab_test<F, Fut>(body: F)
where
    F: FnOnce(Lab) -> Fut,
    Fut: Future<Output = ()>,
{
    let kv = labkit::services::redis();
    let rt = labkit::wait::runtime(2);
    rt.block_on(async {
        let store = connect(&kv).await;
        let raw = raw_connection(&kv).await;
        body(Lab {
            store: Arc::new(store),
            kv,
            raw,
        })
        .await;
    });
    // Tasks left behind by a failing test (a dequeue still waiting) end here.
    rt.shutdown_background();
}

/// `Store::connect` that must succeed.
async fn connect(kv: &TestRedis) -> Store {
    let what = format!("Store::connect({:?}, {:?})", kv.url, kv.prefix);
    match within_async(CALL, &what, Store::connect(&kv.url, &kv.prefix)).await {
        Ok(store) => store,
        Err(e) => Report::new(format!("called {what}"))
            .expected("Ok(store)")
            .got(format!("Err({e:?}): {e}"))
            .hint("does connect open a connection to the URL it is given?")
            .fail(),
    }
}

/// The test's own connection, for checking what the store did.
async fn raw_connection(kv: &TestRedis) -> MultiplexedConnection {
    let client = redis::Client::open(kv.url.as_str()).expect("a valid Redis URL");
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(CALL));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap_or_else(|e| {
            Report::new(format!(
                "connected to {} (the test's own connection)",
                kv.url
            ))
            .got(e)
            .fail()
        })
}

/// Runs a command on the test's own connection; it must succeed.
async fn raw<T: FromRedisValue>(conn: &MultiplexedConnection, args: &[&str]) -> T {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    let mut conn = conn.clone();
    match tokio::time::timeout(CALL, cmd.query_async::<T>(&mut conn)).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => Report::new(format!("sent {}", args.join(" ")))
            .got(e)
            .hint("the test's own command failed: is the Redis server healthy (`redis-cli ping`)?")
            .fail(),
        Err(_) => Report::new(format!("sent {}", args.join(" ")))
            .got(format!("no answer within {CALL:?}"))
            .fail(),
    }
}

/// The variant's name, for messages and comparisons.
fn variant(e: &StoreError) -> &'static str {
    match e {
        StoreError::WrongType => "WrongType",
        StoreError::NotAnInteger => "NotAnInteger",
        StoreError::InvalidTtl => "InvalidTtl",
        StoreError::BadProfile(_) => "BadProfile",
        StoreError::Redis(_) => "Redis",
    }
}

fn hint_for(e: &StoreError) -> &'static str {
    match e {
        StoreError::Redis(_) => {
            "read Redis's message above: a command Redis refused (a wrong argument, PX 0, BRPOP without a timeout), or a reply that came later than the connection's response timeout (500 ms by default in the redis crate)?"
        }
        _ => "which rule of the README does this input break, if any?",
    }
}

/// Awaits a call of the store that must succeed.
async fn ok<T>(what: &str, call: impl Future<Output = Result<T, StoreError>>) -> T {
    expect_ok(CALL, what, hint_for, call).await
}

/// Awaits a call that must fail with the variant named `want`.
async fn fails<T: std::fmt::Debug>(
    what: &str,
    want: &str,
    hint: &str,
    call: impl Future<Output = Result<T, StoreError>>,
) {
    let name = format!("StoreError::{want}");
    expect_err(CALL, what, &name, |e| variant(e) == want, hint, call).await
}

/// Waits until `get(name)` gives `None`: the key's TTL, `ttl` in words,
/// has passed and Redis has expired it.
async fn expires(lab: &Lab, name: &str, ttl: &str, hint: &str) {
    let store = lab.store.clone();
    let what = format!("get({name:?}) to be None once its {ttl} TTL has passed");
    eventually(Duration::from_secs(10), &what, hint, || {
        let store = store.clone();
        async move {
            match store.get(name).await {
                Ok(None) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
}

/// Redis's own clock, in milliseconds (`TIME`).
async fn server_ms(conn: &MultiplexedConnection) -> i64 {
    let (secs, micros): (i64, i64) = raw(conn, &["TIME"]).await;
    secs * 1000 + micros / 1000
}

/// A blocking redis connection of the test's own, for `Drop` guards.
fn sync_connection(kv: &TestRedis) -> redis::Connection {
    redis::Client::open(kv.url.as_str())
        .and_then(|c| c.get_connection_with_timeout(CALL))
        .unwrap_or_else(|e| {
            Report::new(format!("connected to {}", kv.url))
                .got(e)
                .fail()
        })
}

/// Pauses every client's writes (`CLIENT PAUSE ... WRITE`) until dropped.
/// Redis lifts the pause by itself after 5 s, should the test die.
struct WritePause(redis::Connection);

impl WritePause {
    fn start(kv: &TestRedis) -> WritePause {
        let mut conn = sync_connection(kv);
        redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg("5000")
            .arg("WRITE")
            .query::<()>(&mut conn)
            .unwrap_or_else(|e| {
                Report::new("sent CLIENT PAUSE 5000 WRITE")
                    .got(e)
                    .hint("the test needs Redis 6.2 or newer (`redis-server --version`)")
                    .fail()
            });
        WritePause(conn)
    }
}

impl Drop for WritePause {
    fn drop(&mut self) {
        let _ = redis::cmd("CLIENT").arg("UNPAUSE").query::<()>(&mut self.0);
    }
}

/// The clients of `CLIENT LIST`, each a map of its fields.
async fn client_list(conn: &MultiplexedConnection) -> Vec<BTreeMap<String, String>> {
    let text: String = raw(conn, &["CLIENT", "LIST"]).await;
    text.lines()
        .map(|line| {
            line.split(' ')
                .filter_map(|f| f.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// How many clients wait in a blocking list pop (`BRPOP`, `BLPOP`, ...)
/// right now: flag `b`, and a command whose name starts with `b`.
async fn clients_in_brpop(conn: &MultiplexedConnection) -> usize {
    client_list(conn)
        .await
        .iter()
        .filter(|c| {
            c.get("cmd").is_some_and(|cmd| cmd.starts_with('b'))
                && c.get("flags").is_some_and(|f| f.contains('b'))
        })
        .count()
}

/// Every key under `prefix`, found with `SCAN` (never `KEYS` on a shared server).
async fn keys_under(conn: &MultiplexedConnection, prefix: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut cursor = "0".to_string();
    let pattern = format!("{prefix}*");
    loop {
        let (next, batch): (String, Vec<String>) =
            raw(conn, &["SCAN", &cursor, "MATCH", &pattern, "COUNT", "1000"]).await;
        keys.extend(batch.into_iter().map(|k| k[prefix.len()..].to_string()));
        if next == "0" {
            return keys;
        }
        cursor = next;
    }
}

/// Awaits a spawned task; a panic in it (a failed report) goes on here.
async fn join<T>(task: tokio::task::JoinHandle<T>) -> T {
    match task.await {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("a task of the test was cancelled: {e}"),
    }
}

/// The two compare-and-set implementations, graded by the same tests.
#[derive(Clone, Copy, Debug)]
enum Cas {
    Watch,
    Lua,
}

impl Cas {
    fn name(self) -> &'static str {
        match self {
            Cas::Watch => "compare_and_set",
            Cas::Lua => "compare_and_set_lua",
        }
    }

    async fn call(
        self,
        store: &Store,
        key: &str,
        expected: Option<&str>,
        new: &str,
    ) -> Result<bool, StoreError> {
        match self {
            Cas::Watch => store.compare_and_set(key, expected, new).await,
            Cas::Lua => store.compare_and_set_lua(key, expected, new).await,
        }
    }

    fn what(self, key: &str, expected: Option<&str>, new: &str) -> String {
        format!("{}({key:?}, {expected:?}, {new:?})", self.name())
    }
}

// ---------------------------------------------------------------------------
// Strings with a TTL
// ---------------------------------------------------------------------------

// set_with_ttl stores the value at prefix + key, expiring exactly ttl (in
// milliseconds) after the SET: a TTL in seconds loses the fraction.
#[test]
fn test_01_set_with_ttl_stores_the_value_with_a_millisecond_ttl() {
    lab_test(|lab| async move {
        let t0 = server_ms(&lab.raw).await;
        ok(
            "set_with_ttl(\"greeting\", \"hello\", 100.9 s)",
            lab.store.set_with_ttl("greeting", "hello", LONG_TTL),
        )
        .await;
        let t1 = server_ms(&lab.raw).await;
        let key = lab.key("greeting");
        let stored: Option<String> = raw(&lab.raw, &["GET", &key]).await;
        same(
            &format!(
                "called set_with_ttl(\"greeting\", \"hello\", 100.9 s), then [test] GET {key}"
            ),
            Some("hello".to_string()),
            stored,
            "is the Redis key the prefix followed by the name (Store::key)?",
        );
        let got = ok("get(\"greeting\")", lab.store.get("greeting")).await;
        same(
            "called set_with_ttl(\"greeting\", \"hello\", 100.9 s), then get(\"greeting\")",
            Some("hello".to_string()),
            got,
            "does get read the same key that set_with_ttl wrote?",
        );
        let at: i64 = raw(&lab.raw, &["PEXPIRETIME", &key]).await;
        let ttl = LONG_TTL.as_millis() as i64;
        if at < t0 + ttl || at > t1 + ttl {
            Report::new(format!(
                "called set_with_ttl(\"greeting\", \"hello\", 100.9 s) between Redis times {t0} and {t1} ms, then [test] PEXPIRETIME {key}"
            ))
            .expected(format!("an expiry between {} and {} (the SET's time + 100900 ms)", t0 + ttl, t1 + ttl))
            .got(format!("{at} ({})", match at {
                -1 => "no expiry at all".to_string(),
                -2 => "the key is missing".to_string(),
                at => format!("{} ms from the SET", at - (t0 + t1) / 2),
            }))
            .hint("is the TTL sent in milliseconds (SET key value PX ms), or in whole seconds (EX), which drops the 900 ms?")
            .fail();
        }
    });
}

// ttl tells a missing key, a key without expiry and the time left (PTTL) apart.
#[test]
fn test_02_ttl_reports_missing_persistent_and_the_time_left() {
    lab_test(|lab| async move {
        let got = ok("ttl(\"nothing\")", lab.store.ttl("nothing")).await;
        same(
            "called ttl(\"nothing\") on a key that does not exist",
            Ttl::Missing,
            got,
            "PTTL answers -2 for a missing key: do you tell it from -1?",
        );
        let plain = lab.key("plain");
        raw::<()>(&lab.raw, &["SET", &plain, "x"]).await;
        let got = ok("ttl(\"plain\")", lab.store.ttl("plain")).await;
        same(
            &format!("SET {plain} x (no expiry), then called ttl(\"plain\")"),
            Ttl::Persistent,
            got,
            "PTTL answers -1 for a key without expiry",
        );
        ok(
            "set_with_ttl(\"short\", \"v\", 100.9 s)",
            lab.store.set_with_ttl("short", "v", LONG_TTL),
        )
        .await;
        let key = lab.key("short");
        let before: i64 = raw(&lab.raw, &["PTTL", &key]).await;
        let got = ok("ttl(\"short\")", lab.store.ttl("short")).await;
        let after: i64 = raw(&lab.raw, &["PTTL", &key]).await;
        let fits =
            matches!(got, Ttl::Expires(d) if (after..=before).contains(&(d.as_millis() as i64)));
        if !fits {
            Report::new("called set_with_ttl(\"short\", \"v\", 100.9 s), then ttl(\"short\") between two PTTLs of the test")
                .expected(format!("Ttl::Expires(d) with {after} ms <= d <= {before} ms"))
                .got(format!("{got:?}"))
                .hint("do you read the TTL in milliseconds (PTTL), not seconds (TTL)?")
                .fail();
        }
        let hash = lab.key("hash");
        raw::<()>(&lab.raw, &["HSET", &hash, "f", "v"]).await;
        raw::<()>(&lab.raw, &["PEXPIRE", &hash, "100000"]).await;
        let got = ok("ttl(\"hash\")", lab.store.ttl("hash")).await;
        if !matches!(got, Ttl::Expires(d) if d <= Duration::from_secs(100) && !d.is_zero()) {
            Report::new(format!(
                "HSET {hash} f v, PEXPIRE {hash} 100000, then called ttl(\"hash\")"
            ))
            .expected("Ttl::Expires(d) with 0 < d <= 100 s: every type of key has a TTL")
            .got(format!("{got:?}"))
            .hint("does ttl work for a key of any type, as PTTL does?")
            .fail();
        }
    });
}

// A key whose TTL has passed is gone: get gives None and ttl Missing.
#[test]
fn test_03_an_expired_key_reads_as_missing() {
    lab_test(|lab| async move {
        ok(
            "set_with_ttl(\"flash\", \"v\", 50 ms)",
            lab.store
                .set_with_ttl("flash", "v", Duration::from_millis(50)),
        )
        .await;
        expires(
            &lab,
            "flash",
            "50 ms",
            "is the TTL given to Redis with the SET (PX), so that Redis expires the key?",
        )
        .await;
        let got = ok("ttl(\"flash\")", lab.store.ttl("flash")).await;
        same(
            "called ttl(\"flash\") once the key had expired",
            Ttl::Missing,
            got,
            "an expired key is a missing key: PTTL answers -2",
        );
    });
}

// A zero TTL is refused before it can touch the key; a sub-millisecond TTL
// rounds up to 1 ms, never down to 0.
#[test]
fn test_04_a_zero_ttl_is_refused_and_a_tiny_ttl_rounds_up() {
    lab_test(|lab| async move {
        let kept = lab.key("kept");
        raw::<()>(&lab.raw, &["SET", &kept, "old"]).await;
        fails(
            "set_with_ttl(\"kept\", \"new\", 0 s)",
            "InvalidTtl",
            "what should a TTL of zero mean? The README says: an error, before anything is sent",
            lab.store.set_with_ttl("kept", "new", Duration::ZERO),
        )
        .await;
        let value: Option<String> = raw(&lab.raw, &["GET", &kept]).await;
        let pttl: i64 = raw(&lab.raw, &["PTTL", &kept]).await;
        same(
            &format!(
                "SET {kept} old, called set_with_ttl(\"kept\", \"new\", 0 s), then GET and PTTL"
            ),
            (Some("old".to_string()), -1),
            (value, pttl),
            "a refused call must leave the key as it was: do you check the TTL before sending anything?",
        );
        ok(
            "set_with_ttl(\"tiny\", \"v\", 1 µs)",
            lab.store
                .set_with_ttl("tiny", "v", Duration::from_micros(1)),
        )
        .await;
        expires(
            &lab,
            "tiny",
            "1 µs (rounded up to 1 ms)",
            "a duration of 1 µs is 0 whole milliseconds: do you round up?",
        )
        .await;
    });
}

// get on a missing key is Ok(None); on a hash it is WrongType, not a panic.
#[test]
fn test_05_get_is_none_when_missing_and_wrong_type_on_a_hash() {
    lab_test(|lab| async move {
        let got = ok("get(\"missing\")", lab.store.get("missing")).await;
        same(
            "called get(\"missing\") on a key that does not exist",
            None,
            got,
            "GET answers nil for a missing key",
        );
        let hash = lab.key("hash");
        raw::<()>(&lab.raw, &["HSET", &hash, "f", "v"]).await;
        fails(
            "get(\"hash\") on a hash",
            "WrongType",
            "Redis answers WRONGTYPE: do you map that error (RedisError::code) to StoreError::WrongType?",
            lab.store.get("hash"),
        )
        .await;
    });
}

// ---------------------------------------------------------------------------
// INCR
// ---------------------------------------------------------------------------

// incr starts from 1, keeps a TTL, and refuses non-integers and overflow.
#[test]
fn test_06_incr_counts_from_one_and_refuses_what_is_not_an_integer() {
    lab_test(|lab| async move {
        for want in 1..=3 {
            let got = ok("incr(\"hits\")", lab.store.incr("hits")).await;
            same(
                &format!("called incr(\"hits\") {want} times on a missing key"),
                want,
                got,
                "a missing key counts as 0; INCR returns the new value",
            );
        }
        let hits = lab.key("hits");
        let stored: Option<String> = raw(&lab.raw, &["GET", &hits]).await;
        same(
            &format!("called incr(\"hits\") 3 times, then [test] GET {hits}"),
            Some("3".to_string()),
            stored,
            "is the Redis key the prefix followed by the name?",
        );
        let ttl_key = lab.key("with_ttl");
        raw::<()>(&lab.raw, &["SET", &ttl_key, "5", "PX", "100000"]).await;
        let got = ok("incr(\"with_ttl\")", lab.store.incr("with_ttl")).await;
        let pttl: i64 = raw(&lab.raw, &["PTTL", &ttl_key]).await;
        same(
            &format!("SET {ttl_key} 5 PX 100000, called incr(\"with_ttl\"), then PTTL > 0"),
            (6, true),
            (got, pttl > 0),
            "INCR keeps the key's TTL; a SET of the new value would remove it. Is the increment one INCR?",
        );
        let text = lab.key("text");
        raw::<()>(&lab.raw, &["SET", &text, "abc"]).await;
        fails(
            "incr(\"text\") on the string \"abc\"",
            "NotAnInteger",
            "Redis answers ERR value is not an integer: do you map it to StoreError::NotAnInteger?",
            lab.store.incr("text"),
        )
        .await;
        let value: Option<String> = raw(&lab.raw, &["GET", &text]).await;
        same(
            "called incr(\"text\") on \"abc\", then [test] GET",
            Some("abc".to_string()),
            value,
            "a refused increment leaves the value alone",
        );
        let max = lab.key("max");
        raw::<()>(&lab.raw, &["SET", &max, &i64::MAX.to_string()]).await;
        fails(
            "incr(\"max\") on i64::MAX",
            "NotAnInteger",
            "Redis answers ERR increment or decrement would overflow: is that NotAnInteger too?",
            lab.store.incr("max"),
        )
        .await;
        let list = lab.key("list");
        raw::<()>(&lab.raw, &["RPUSH", &list, "x"]).await;
        fails(
            "incr(\"list\") on a list",
            "WrongType",
            "Redis answers WRONGTYPE: do you map it to StoreError::WrongType?",
            lab.store.incr("list"),
        )
        .await;
    });
}

// 100 tasks incrementing at once end at exactly 100, each seeing its own value.
#[test]
fn test_07_incr_from_100_concurrent_tasks_counts_exactly_100() {
    lab_test(|lab| async move {
        const TASKS: usize = 100;
        let barrier = Arc::new(Barrier::new(TASKS));
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let store = lab.store.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    // All start together: a read-then-write counter has no
                    // chance to line the pairs up one after the other.
                    barrier.wait().await;
                    store.incr("count").await
                })
            })
            .collect();
        let mut seen = Vec::new();
        for task in tasks {
            match within_async(MANY, "100 concurrent incr(\"count\")", join(task)).await {
                Ok(v) => seen.push(v),
                Err(e) => Report::new("called incr(\"count\") from 100 tasks at once")
                    .expected("Ok from every call")
                    .got(format!("Err({e:?}): {e}"))
                    .hint(hint_for(&e))
                    .fail(),
            }
        }
        let key = lab.key("count");
        let stored: Option<String> = raw(&lab.raw, &["GET", &key]).await;
        seen.sort_unstable();
        let distinct = seen.iter().collect::<BTreeSet<_>>().len();
        let fine =
            stored.as_deref() == Some("100") && seen == (1..=TASKS as i64).collect::<Vec<_>>();
        if !fine {
            Report::new("called incr(\"count\") from 100 tasks at once (a barrier releases them together)")
                .expected("the key at 100, and the calls returning 1..=100, each once")
                .got(format!(
                    "the key at {stored:?}; {distinct} distinct return values, from {:?} to {:?}",
                    seen.first(),
                    seen.last()
                ))
                .hint("two tasks that GET 5 and then SET 6 lose one increment: is the increment one INCR, done inside Redis?")
                .fail();
        }
    });
}

// ---------------------------------------------------------------------------
// Hashes
// ---------------------------------------------------------------------------

// A profile is a hash of name, email and visits; it reads back as written.
#[test]
fn test_08_a_profile_round_trips_through_a_hash() {
    lab_test(|lab| async move {
        let got = ok("load_profile(\"user:1\")", lab.store.load_profile("user:1")).await;
        same(
            "called load_profile(\"user:1\") on a key that does not exist",
            None,
            got,
            "HGETALL of a missing key is an empty hash: is that None?",
        );
        let ada = Profile {
            name: "Ada Lovelace".to_string(),
            email: "ada@example.com".to_string(),
            visits: 42,
        };
        ok(
            "save_profile(\"user:1\", ada)",
            lab.store.save_profile("user:1", &ada),
        )
        .await;
        let key = lab.key("user:1");
        let kind: String = raw(&lab.raw, &["TYPE", &key]).await;
        let fields: BTreeMap<String, String> = raw(&lab.raw, &["HGETALL", &key]).await;
        let want: BTreeMap<String, String> = [
            ("name", "Ada Lovelace"),
            ("email", "ada@example.com"),
            ("visits", "42"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        same(
            &format!("called save_profile(\"user:1\", ada), then [test] TYPE and HGETALL {key}"),
            ("hash".to_string(), want),
            (kind, fields),
            "is the profile one hash with exactly the fields name, email and visits (decimal)?",
        );
        let got = ok("load_profile(\"user:1\")", lab.store.load_profile("user:1")).await;
        same(
            "called save_profile(\"user:1\", ada), then load_profile(\"user:1\")",
            Some(ada),
            got,
            "does load_profile read back the fields save_profile wrote?",
        );
        let grace = Profile {
            name: "Grace Hopper".to_string(),
            email: "grace@example.com".to_string(),
            visits: u64::MAX,
        };
        ok(
            "save_profile(\"user:1\", grace)",
            lab.store.save_profile("user:1", &grace),
        )
        .await;
        raw::<()>(&lab.raw, &["HSET", &key, "extra", "ignored"]).await;
        let got = ok("load_profile(\"user:1\")", lab.store.load_profile("user:1")).await;
        same(
            "saved ada, then grace (visits u64::MAX) over it, [test] HSET an extra field, then load_profile",
            Some(grace),
            got,
            "does a second save replace every field, and does load ignore fields it does not know?",
        );
    });
}

// A hash missing a field, or with visits not a number, is BadProfile;
// another type is WrongType, for load and save.
#[test]
fn test_09_an_incomplete_profile_or_another_type_is_an_error() {
    lab_test(|lab| async move {
        let half = lab.key("half");
        raw::<()>(&lab.raw, &["HSET", &half, "name", "n", "visits", "1"]).await;
        fails(
            "load_profile(\"half\") on a hash without email",
            "BadProfile",
            "what do you do when a field is missing from the hash?",
            lab.store.load_profile("half"),
        )
        .await;
        let bad = lab.key("bad");
        raw::<()>(
            &lab.raw,
            &["HSET", &bad, "name", "n", "email", "e", "visits", "lots"],
        )
        .await;
        fails(
            "load_profile(\"bad\") on a hash whose visits is \"lots\"",
            "BadProfile",
            "do you parse visits as a u64 and report a failure as BadProfile?",
            lab.store.load_profile("bad"),
        )
        .await;
        let text = lab.key("text");
        raw::<()>(&lab.raw, &["SET", &text, "x"]).await;
        fails(
            "load_profile(\"text\") on a string",
            "WrongType",
            "Redis answers WRONGTYPE to HGETALL on a string: do you map it?",
            lab.store.load_profile("text"),
        )
        .await;
        let p = Profile {
            name: "n".to_string(),
            email: "e".to_string(),
            visits: 1,
        };
        fails(
            "save_profile(\"text\", p) on a string",
            "WrongType",
            "Redis answers WRONGTYPE to HSET on a string: do you map it?",
            lab.store.save_profile("text", &p),
        )
        .await;
    });
}

// ---------------------------------------------------------------------------
// A list as a work queue
// ---------------------------------------------------------------------------

// Producers push at the head (LPUSH), the consumer takes the oldest: FIFO,
// also for an item pushed by another client.
#[test]
fn test_10_the_queue_is_first_in_first_out() {
    lab_test(|lab| async move {
        for (i, item) in ["a", "b", "c"].into_iter().enumerate() {
            let len = ok(
                &format!("enqueue(\"jobs\", {item:?})"),
                lab.store.enqueue("jobs", item),
            )
            .await;
            same(
                &format!(
                    "called enqueue(\"jobs\", {item:?}) as push number {}",
                    i + 1
                ),
                i as u64 + 1,
                len,
                "enqueue returns the queue's length after the push (LPUSH's answer)",
            );
        }
        let key = lab.key("jobs");
        let list: Vec<String> = raw(&lab.raw, &["LRANGE", &key, "0", "-1"]).await;
        same(
            &format!("enqueued a, b, c, then [test] LRANGE {key} 0 -1"),
            vec!["c".to_string(), "b".to_string(), "a".to_string()],
            list,
            "producers push at the head of the list (LPUSH): is the queue a list at prefix + name?",
        );
        raw::<()>(&lab.raw, &["LPUSH", &key, "d"]).await;
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(
                ok(
                    "dequeue(\"jobs\", 1 s)",
                    lab.store.dequeue("jobs", Duration::from_secs(1)),
                )
                .await,
            );
        }
        same(
            "enqueued a, b, c, [test] LPUSH d, then called dequeue(\"jobs\", 1 s) four times",
            ["a", "b", "c", "d"].map(|s| Some(s.to_string())).to_vec(),
            got,
            "the oldest item is at the tail of the list: do you pop from the tail (BRPOP), the other end from the push?",
        );
        let exists: i64 = raw(&lab.raw, &["EXISTS", &key]).await;
        same(
            &format!("took every item, then [test] EXISTS {key}"),
            0,
            exists,
            "Redis deletes a list when its last item is popped",
        );
    });
}

// On an empty queue dequeue answers None after its timeout, also one longer
// than the redis crate's default response timeout; a zero timeout does not wait.
#[test]
fn test_11_dequeue_gives_none_after_its_timeout_on_an_empty_queue() {
    lab_test(|lab| async move {
        let got = ok(
            "dequeue(\"empty\", 1.5 s)",
            lab.store.dequeue("empty", Duration::from_millis(1500)),
        )
        .await;
        same(
            "called dequeue(\"empty\", 1.5 s) on an empty queue",
            None,
            got,
            "BRPOP answers nil at its timeout",
        );
        let got = ok(
            "dequeue(\"empty\", 0 s), which must not wait",
            lab.store.dequeue("empty", Duration::ZERO),
        )
        .await;
        same(
            "called dequeue(\"empty\", 0 s) on an empty queue",
            None,
            got,
            "BRPOP with timeout 0 waits forever: what does the README say a zero timeout does?",
        );
        let got = ok(
            "dequeue(\"empty\", 1 µs)",
            lab.store.dequeue("empty", Duration::from_micros(1)),
        )
        .await;
        same(
            "called dequeue(\"empty\", 1 µs) on an empty queue",
            None,
            got,
            "1 µs in whole milliseconds is 0, which BRPOP reads as forever: do you round up?",
        );
        ok("enqueue(\"empty\", \"x\")", lab.store.enqueue("empty", "x")).await;
        let got = ok(
            "dequeue(\"empty\", 0 s)",
            lab.store.dequeue("empty", Duration::ZERO),
        )
        .await;
        same(
            "called enqueue(\"empty\", \"x\"), then dequeue(\"empty\", 0 s)",
            Some("x".to_string()),
            got,
            "a zero timeout still takes an item that is there",
        );
        let text = lab.key("text");
        raw::<()>(&lab.raw, &["SET", &text, "x"]).await;
        fails(
            "dequeue(\"text\", 100 ms) on a string",
            "WrongType",
            "Redis answers WRONGTYPE to BRPOP on a string: do you map it?",
            lab.store.dequeue("text", Duration::from_millis(100)),
        )
        .await;
        fails(
            "enqueue(\"text\", \"x\") on a string",
            "WrongType",
            "Redis answers WRONGTYPE to LPUSH on a string: do you map it?",
            lab.store.enqueue("text", "x"),
        )
        .await;
    });
}

// A dequeue waiting in Redis gets an item pushed later, and while it waits
// the store's other calls still go through: BRPOP blocks its own connection.
#[test]
fn test_12_a_waiting_dequeue_gets_a_later_item_and_blocks_no_other_call() {
    lab_test(|lab| async move {
        let before = clients_in_brpop(&lab.raw).await;
        let store = lab.store.clone();
        let waiting =
            tokio::spawn(async move { store.dequeue("work", Duration::from_secs(30)).await });
        let raw_conn = lab.raw.clone();
        eventually(
            Duration::from_secs(10),
            "a client blocked in BRPOP in Redis (CLIENT LIST: flags b, cmd=brpop)",
            "does dequeue wait inside Redis (BRPOP with a timeout), rather than return at once?",
            || {
                let raw_conn = raw_conn.clone();
                let done = waiting.is_finished();
                async move {
                    if done {
                        return Ok(());
                    }
                    let now = clients_in_brpop(&raw_conn).await;
                    if now > before {
                        Ok(())
                    } else {
                        Err(format!(
                            "{now} clients in BRPOP, as many as before the dequeue ({before})"
                        ))
                    }
                }
            },
        )
        .await;
        if waiting.is_finished() {
            let got = join(waiting).await;
            Report::new("called dequeue(\"work\", 30 s) on an empty queue, pushing nothing")
                .expected("it to wait (up to 30 s) for an item")
                .got(format!("it returned at once: {got:?}"))
                .hint("does dequeue use BRPOP with the timeout it is given?")
                .fail();
        }
        match tokio::time::timeout(CALL, lab.store.incr("other")).await {
            Ok(Ok(1)) => {}
            Ok(other) => Report::new("called incr(\"other\") while a dequeue waits on the same store")
                .expected("Ok(1)")
                .got(format!("{other:?}"))
                .fail(),
            Err(_) => Report::new("called incr(\"other\") while dequeue(\"work\", 30 s) waits on the same store")
                .expected("an answer at once")
                .got(format!("no answer within {CALL:?}"))
                .hint("BRPOP blocks the connection it runs on: is it on the connection every other call shares? Give it one of its own")
                .fail(),
        }
        ok(
            "enqueue(\"work\", \"late\")",
            lab.store.enqueue("work", "late"),
        )
        .await;
        let got = match tokio::time::timeout(CALL, join(waiting)).await {
            Ok(got) => got,
            Err(_) => {
                Report::new("called dequeue(\"work\", 30 s), then enqueue(\"work\", \"late\")")
                    .expected("the waiting dequeue to return the item at once")
                    .got(format!("it was still waiting {CALL:?} later"))
                    .hint("does the waiting BRPOP watch the same key that enqueue pushes to?")
                    .fail()
            }
        };
        match got {
            Ok(Some(item)) if item == "late" => {}
            other => {
                Report::new("called dequeue(\"work\", 30 s), then enqueue(\"work\", \"late\")")
                    .expected("Ok(Some(\"late\")) from the waiting dequeue")
                    .got(format!("{other:?}"))
                    .hint("BRPOP answers [key, item]: do you return the item?")
                    .fail()
            }
        }
    });
}

// ---------------------------------------------------------------------------
// A pipeline
// ---------------------------------------------------------------------------

// set_many writes every SET before it reads a reply: with Redis's writes
// paused, the whole batch is already in Redis, queued behind the first SET.
#[test]
fn test_13_set_many_sends_every_set_in_one_round_trip() {
    lab_test(|lab| async move {
        const N: usize = 40;
        let names: Vec<String> = (0..N).map(|i| format!("bulk:{i:02}")).collect();
        let values: Vec<String> = (0..N)
            .map(|i| format!("{i:02}{}", "v".repeat(248)))
            .collect();
        let total: usize = names.iter().map(|n| lab.key(n).len()).sum::<usize>()
            + values.iter().map(String::len).sum::<usize>();
        let pause = WritePause::start(&lab.kv);
        let store = lab.store.clone();
        let (n2, v2) = (names.clone(), values.clone());
        let writing = tokio::spawn(async move {
            let pairs: Vec<(&str, &str)> = n2
                .iter()
                .map(String::as_str)
                .zip(v2.iter().map(String::as_str))
                .collect();
            store.set_many(&pairs).await
        });
        let raw_conn = lab.raw.clone();
        eventually(
            Duration::from_secs(3),
            &format!("a client paused in a write with the data of all {N} SETs ({total} bytes of keys and values) already in Redis (CLIENT LIST: qbuf + argv-mem + multi-mem)"),
            "with Redis's writes paused, the first SET waits in Redis: did you send the other SETs without waiting for its reply (redis::pipe())?",
            || {
                let raw_conn = raw_conn.clone();
                async move {
                    let clients = client_list(&raw_conn).await;
                    let num = |c: &BTreeMap<String, String>, f: &str| c.get(f).and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
                    let best = clients
                        .iter()
                        .filter(|c| c.get("flags").is_some_and(|f| f.contains('b')))
                        .map(|c| (num(c, "qbuf") + num(c, "argv-mem") + num(c, "multi-mem"), c.get("cmd").cloned().unwrap_or_default()))
                        .max();
                    match best {
                        Some((bytes, _)) if bytes >= total => Ok(()),
                        Some((bytes, cmd)) => Err(format!("at most {bytes} bytes in Redis (a client paused in {cmd})")),
                        None => Err("no client paused in a write".to_string()),
                    }
                }
            },
        )
        .await;
        drop(pause);
        ok("set_many(40 pairs)", join(writing)).await;
        let keys: Vec<String> = names.iter().map(|n| lab.key(n)).collect();
        let mut args = vec!["MGET"];
        args.extend(keys.iter().map(String::as_str));
        let stored: Vec<Option<String>> = raw(&lab.raw, &args).await;
        same(
            "called set_many(40 pairs), then [test] MGET of the 40 keys",
            values.iter().cloned().map(Some).collect::<Vec<_>>(),
            stored,
            "is every pair written, each at prefix + name?",
        );
    });
}

// get_many answers in the order asked, None for missing keys and other
// types; empty batches send nothing; set_many removes a TTL.
#[test]
fn test_14_get_many_keeps_the_order_with_none_for_missing_and_other_types() {
    lab_test(|lab| async move {
        ok(
            "set_many([(\"a\", \"1\"), (\"b\", \"2\")])",
            lab.store.set_many(&[("a", "1"), ("b", "2")]),
        )
        .await;
        let hash = lab.key("h");
        raw::<()>(&lab.raw, &["HSET", &hash, "f", "v"]).await;
        let got = ok(
            "get_many([\"b\", \"missing\", \"a\", \"h\"])",
            lab.store.get_many(&["b", "missing", "a", "h"]),
        )
        .await;
        same(
            "set a=1 and b=2, [test] HSET h, then called get_many([\"b\", \"missing\", \"a\", \"h\"])",
            vec![Some("2".to_string()), None, Some("1".to_string()), None],
            got,
            "MGET answers in the order of its keys, nil for a missing key and for a key of another type",
        );
        ok("set_many([])", lab.store.set_many(&[])).await;
        let got = ok("get_many([])", lab.store.get_many(&[])).await;
        same(
            "called get_many([])",
            Vec::<Option<String>>::new(),
            got,
            "Redis refuses MGET without keys: what should an empty batch do?",
        );
        let t = lab.key("t");
        raw::<()>(&lab.raw, &["SET", &t, "x", "PX", "100000"]).await;
        ok(
            "set_many([(\"t\", \"y\")])",
            lab.store.set_many(&[("t", "y")]),
        )
        .await;
        let value: Option<String> = raw(&lab.raw, &["GET", &t]).await;
        let pttl: i64 = raw(&lab.raw, &["PTTL", &t]).await;
        same(
            &format!("SET {t} x PX 100000, called set_many([(\"t\", \"y\")]), then GET and PTTL"),
            (Some("y".to_string()), -1),
            (value, pttl),
            "a plain SET replaces the value and removes the TTL",
        );
    });
}

// ---------------------------------------------------------------------------
// Compare-and-set, twice
// ---------------------------------------------------------------------------

/// The contract of one compare-and-set, case by case.
async fn cas_semantics(lab: &Lab, cas: Cas) {
    let store = &lab.store;
    let k = lab.key("k");
    let steps: [(Option<&str>, &str, bool, &str); 4] = [
        (None, "v1", true, "v1"),
        (None, "v2", false, "v1"),
        (Some("nope"), "v2", false, "v1"),
        (Some("v1"), "v2", true, "v2"),
    ];
    for (expected, new, swap, after) in steps {
        let what = cas.what("k", expected, new);
        let got = ok(&what, cas.call(store, "k", expected, new)).await;
        let value: Option<String> = raw(&lab.raw, &["GET", &k]).await;
        same(
            &format!("called {what}, then [test] GET {k}"),
            (swap, Some(after.to_string())),
            (got, value),
            "swap if and only if the current value is the expected one (None: the key is missing), and return whether you did",
        );
    }
    let what = cas.what("missing", Some("x"), "y");
    let got = ok(&what, cas.call(store, "missing", Some("x"), "y")).await;
    let exists: i64 = raw(&lab.raw, &["EXISTS", &lab.key("missing")]).await;
    same(
        &format!("called {what} on a missing key, then [test] EXISTS"),
        (false, 0),
        (got, exists),
        "a missing key holds no value, so it never matches Some(..)",
    );
    let empty = lab.key("empty");
    raw::<()>(&lab.raw, &["SET", &empty, ""]).await;
    let what = cas.what("empty", None, "z");
    let got = ok(&what, cas.call(store, "empty", None, "z")).await;
    same(
        &format!("SET {empty} \"\" (an empty string), then called {what}"),
        false,
        got,
        "an empty string is a value, not a missing key: how do you tell them apart?",
    );
    let what = cas.what("empty", Some(""), "z");
    let got = ok(&what, cas.call(store, "empty", Some(""), "z")).await;
    same(
        &format!("SET {empty} \"\", then called {what}"),
        true,
        got,
        "the empty string matches Some(\"\")",
    );
    let t = lab.key("t");
    raw::<()>(&lab.raw, &["SET", &t, "a", "PX", "100000"]).await;
    let what = cas.what("t", Some("a"), "b");
    let got = ok(&what, cas.call(store, "t", Some("a"), "b")).await;
    let pttl: i64 = raw(&lab.raw, &["PTTL", &t]).await;
    same(
        &format!("SET {t} a PX 100000, called {what}, then PTTL"),
        (true, -1),
        (got, pttl),
        "the README says the new value has no TTL: a plain SET",
    );
    let list = lab.key("list");
    raw::<()>(&lab.raw, &["RPUSH", &list, "x"]).await;
    fails(
        &cas.what("list", None, "x"),
        "WrongType",
        "GET on a list answers WRONGTYPE (inside a script too): do you map it?",
        cas.call(store, "list", None, "x"),
    )
    .await;
    let kind: String = raw(&lab.raw, &["TYPE", &list]).await;
    same(
        &format!(
            "called {} on a list, then [test] TYPE",
            cas.what("list", None, "x")
        ),
        "list".to_string(),
        kind,
        "a refused compare-and-set must leave the key alone",
    );
}

/// 20 tasks add 5 each to one counter by compare-and-set (read, then swap
/// if unchanged, retry if not): it ends at 100 and 100 swaps succeeded.
async fn cas_contention(lab: &Lab, cas: Cas) {
    const TASKS: usize = 20;
    const EACH: usize = 5;
    let barrier = Arc::new(Barrier::new(TASKS));
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let store = lab.store.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let mut swaps = 0;
                for _attempt in 0..100_000 {
                    if swaps == EACH {
                        break;
                    }
                    let current = store.get("n").await?;
                    let next = current
                        .as_deref()
                        .map_or(0, |v| v.parse::<i64>().unwrap_or(-1_000_000))
                        + 1;
                    if cas
                        .call(&store, "n", current.as_deref(), &next.to_string())
                        .await?
                    {
                        swaps += 1;
                    }
                }
                Ok::<usize, StoreError>(swaps)
            })
        })
        .collect();
    let mut swaps = 0;
    for task in tasks {
        match within_async(
            MANY,
            &format!("20 tasks adding 5 each with {}", cas.name()),
            join(task),
        )
        .await
        {
            Ok(n) => swaps += n,
            Err(e) => Report::new(format!(
                "called get and {} from 20 tasks at once",
                cas.name()
            ))
            .expected("Ok from every call")
            .got(format!("Err({e:?}): {e}"))
            .hint(hint_for(&e))
            .fail(),
        }
    }
    let stored: Option<String> = raw(&lab.raw, &["GET", &lab.key("n")]).await;
    same(
        &format!(
            "20 tasks each added 5 to \"n\" (loop: v = get(\"n\"); {}(\"n\", v, v + 1) until 5 swaps)",
            cas.name()
        ),
        (Some((TASKS * EACH).to_string()), TASKS * EACH),
        (stored, swaps),
        "two tasks read 7 and both swap 7 for 8: one update is lost. Is the swap conditional inside Redis (WATCH before the GET, then MULTI/EXEC; or one script)?",
    );
}

/// While the test rewrites a key with the value it already has, as fast as
/// it can, compare-and-set from 8 tasks must swap every time: the value is
/// always the expected one. A transaction whose EXEC was aborted by such a
/// write must try again, not report "no swap".
async fn cas_same_value_writes(lab: &Lab, cas: Cas) {
    let key = lab.key("same");
    raw::<()>(&lab.raw, &["SET", &key, "x"]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let conn = raw_connection(&lab.kv).await;
        let stop = stop.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let mut writes = 0u64;
            while !stop.load(Ordering::Relaxed) {
                raw::<()>(&conn, &["SET", &key, "x"]).await;
                writes += 1;
            }
            writes
        })
    };
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = lab.store.clone();
            tokio::spawn(async move {
                let mut refused = 0;
                for _ in 0..25 {
                    if !cas.call(&store, "same", Some("x"), "x").await? {
                        refused += 1;
                    }
                }
                Ok::<usize, StoreError>(refused)
            })
        })
        .collect();
    let mut refused = 0;
    for task in tasks {
        match within_async(
            MANY,
            &format!("8 tasks calling {} 25 times", cas.name()),
            join(task),
        )
        .await
        {
            Ok(n) => refused += n,
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                Report::new(format!(
                    "called {} from 8 tasks",
                    cas.what("same", Some("x"), "x")
                ))
                .expected("Ok(true) from every call")
                .got(format!("Err({e:?}): {e}"))
                .hint(hint_for(&e))
                .fail()
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let writes = join(writer).await;
    same(
        &format!(
            "SET {key} x over and over ({writes} times) while 8 tasks each called {} 25 times; counted the false answers",
            cas.what("same", Some("x"), "x")
        ),
        0,
        refused,
        "the value was \"x\" all along, so every call should swap. When EXEC answers nil (a watched key was written, even with the same value), do you start again from WATCH rather than answer false?",
    );
}

// compare_and_set (WATCH/MULTI/EXEC) swaps only on a match: missing vs
// empty, no TTL after, WrongType on a list.
#[test]
fn test_15_compare_and_set_swaps_only_on_a_match() {
    lab_test(|lab| async move { cas_semantics(&lab, Cas::Watch).await });
}

// compare_and_set from 20 tasks at once loses no update.
#[test]
fn test_16_compare_and_set_under_contention_loses_no_update() {
    lab_test(|lab| async move { cas_contention(&lab, Cas::Watch).await });
}

// compare_and_set retries when EXEC is aborted by a write that kept the value.
#[test]
fn test_17_compare_and_set_retries_after_an_aborted_exec() {
    lab_test(|lab| async move { cas_same_value_writes(&lab, Cas::Watch).await });
}

// compare_and_set_lua keeps the same contract in one script.
#[test]
fn test_18_compare_and_set_lua_swaps_only_on_a_match() {
    lab_test(|lab| async move { cas_semantics(&lab, Cas::Lua).await });
}

// compare_and_set_lua from 20 tasks at once loses no update.
#[test]
fn test_19_compare_and_set_lua_under_contention_loses_no_update() {
    lab_test(|lab| async move { cas_contention(&lab, Cas::Lua).await });
}

// compare_and_set_lua never refuses a swap while the value stays the expected one.
#[test]
fn test_20_compare_and_set_lua_swaps_while_others_write_the_same_value() {
    lab_test(|lab| async move { cas_same_value_writes(&lab, Cas::Lua).await });
}

// ---------------------------------------------------------------------------
// Pub/sub
// ---------------------------------------------------------------------------

/// The next message of `sub`, which must come within [`CALL`].
async fn next_message(sub: &mut redis_basics::Subscription, did: &str, want: &str) {
    match tokio::time::timeout(CALL, sub.next_message()).await {
        Ok(Some(got)) if got == want => {}
        Ok(other) => Report::new(did)
            .expected(format!("the subscription's next message to be {want:?}"))
            .got(format!("{other:?}"))
            .hint("are messages delivered in order, one payload per message?")
            .fail(),
        Err(_) => Report::new(did)
            .expected(format!("the message {want:?} within {CALL:?}"))
            .got("nothing")
            .hint("is the subscription on the channel publish sends to (prefix + name)?")
            .fail(),
    }
}

// A subscriber gets, in order, what is published after subscribe returned,
// and only from its own channel; publish says how many received it.
#[test]
fn test_21_publish_reaches_a_subscriber_that_subscribed_first() {
    lab_test(|lab| async move {
        let got = ok(
            "publish(\"news\", \"nobody\")",
            lab.store.publish("news", "nobody"),
        )
        .await;
        same(
            "called publish(\"news\", \"nobody\") with no subscriber",
            0,
            got,
            "PUBLISH answers how many subscribers received the message",
        );
        let mut sub = ok("subscribe(\"news\")", lab.store.subscribe("news")).await;
        let channel = lab.key("news");
        let (_, count): (String, i64) = raw(&lab.raw, &["PUBSUB", "NUMSUB", &channel]).await;
        same(
            &format!("called subscribe(\"news\"), then [test] PUBSUB NUMSUB {channel}"),
            1,
            count,
            "when subscribe returns, Redis must have confirmed the subscription, on the channel prefix + name: do you await it?",
        );
        let mut other = ok("subscribe(\"other\")", lab.store.subscribe("other")).await;
        for msg in ["one", "two"] {
            let got = ok(
                &format!("publish(\"news\", {msg:?})"),
                lab.store.publish("news", msg),
            )
            .await;
            same(
                &format!("subscribed to \"news\", then called publish(\"news\", {msg:?})"),
                1,
                got,
                "one subscriber is listening: PUBLISH answers 1",
            );
        }
        next_message(
            &mut sub,
            "subscribed to \"news\", published \"one\" and \"two\", then read the subscription",
            "one",
        )
        .await;
        next_message(&mut sub, "subscribed to \"news\", published \"one\" and \"two\", then read the subscription again", "two").await;
        ok(
            "publish(\"other\", \"probe\")",
            lab.store.publish("other", "probe"),
        )
        .await;
        next_message(
            &mut other,
            "subscribed to \"other\", published \"one\" and \"two\" on \"news\" and \"probe\" on \"other\", then read the \"other\" subscription",
            "probe",
        )
        .await;
    });
}

// ---------------------------------------------------------------------------
// Isolation
// ---------------------------------------------------------------------------

// Two stores with two prefixes share one Redis: each call of one touches only
// keys under its own prefix, found with SCAN.
#[test]
fn test_22_every_key_stays_under_the_prefix() {
    lab_test(|lab| async move {
        let kv2 = labkit::services::redis();
        let other = connect(&kv2).await;
        let p = Profile {
            name: "n".to_string(),
            email: "e".to_string(),
            visits: 7,
        };
        // The other store's keys, with the same names the first one uses.
        ok(
            "other.set_with_ttl(\"s\", \"two\", 100.9 s)",
            other.set_with_ttl("s", "two", LONG_TTL),
        )
        .await;
        ok("other.incr(\"c\")", other.incr("c")).await;
        ok("other.save_profile(\"p\", p)", other.save_profile("p", &p)).await;
        ok("other.enqueue(\"q\", \"two\")", other.enqueue("q", "two")).await;
        ok(
            "other.set_many([(\"m\", \"two\")])",
            other.set_many(&[("m", "two")]),
        )
        .await;
        ok(
            "other.compare_and_set(\"x\", None, \"two\")",
            other.compare_and_set("x", None, "two"),
        )
        .await;
        ok(
            "other.compare_and_set_lua(\"y\", None, \"two\")",
            other.compare_and_set_lua("y", None, "two"),
        )
        .await;
        let mut snapshot = BTreeMap::new();
        for name in keys_under(&lab.raw, &kv2.prefix).await {
            let dump: Value = raw(&lab.raw, &["DUMP", &format!("{}{name}", kv2.prefix)]).await;
            snapshot.insert(name, dump);
        }
        let s = &lab.store;
        let steps = "set_with_ttl s, incr c, save_profile p, enqueue q, dequeue q, set_many m, get_many, compare_and_set x and y (both kinds), publish";
        ok(
            "set_with_ttl(\"s\", \"one\", 100.9 s)",
            s.set_with_ttl("s", "one", LONG_TTL),
        )
        .await;
        ok("incr(\"c\")", s.incr("c")).await;
        ok("incr(\"c\")", s.incr("c")).await;
        ok("save_profile(\"p\", p)", s.save_profile("p", &p)).await;
        ok("enqueue(\"q\", \"one\")", s.enqueue("q", "one")).await;
        ok("enqueue(\"q\", \"two\")", s.enqueue("q", "two")).await;
        let got = ok(
            "dequeue(\"q\", 1 s)",
            s.dequeue("q", Duration::from_secs(1)),
        )
        .await;
        same(
            "enqueued one, two on \"q\", then dequeue(\"q\", 1 s)",
            Some("one".to_string()),
            got,
            "is the queue under the store's own prefix?",
        );
        ok("set_many([(\"m\", \"one\")])", s.set_many(&[("m", "one")])).await;
        ok("get_many([\"m\", \"s\"])", s.get_many(&["m", "s"])).await;
        for cas in [Cas::Watch, Cas::Lua] {
            for key in ["x", "y"] {
                ok(&cas.what(key, None, "one"), cas.call(s, key, None, "one")).await;
            }
        }
        ok("publish(\"c\", \"hi\")", s.publish("c", "hi")).await;
        let mut after = BTreeMap::new();
        for name in keys_under(&lab.raw, &kv2.prefix).await {
            let dump: Value = raw(&lab.raw, &["DUMP", &format!("{}{name}", kv2.prefix)]).await;
            after.insert(name, dump);
        }
        if after != snapshot {
            let changed: Vec<&String> = snapshot
                .keys()
                .chain(after.keys())
                .filter(|k| snapshot.get(*k) != after.get(*k))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            Report::new(format!("a second store on prefix {} wrote s, c, p, q, m, x, y; then the first store ran {steps}", kv2.prefix))
                .expected("every key under the second prefix unchanged (SCAN and DUMP)")
                .got(format!("changed: {changed:?}"))
                .hint("does every call of the store build its keys from its own prefix (Store::key)?")
                .fail();
        }
        let mine = keys_under(&lab.raw, &lab.kv.prefix).await;
        let want: BTreeSet<String> = ["c", "m", "p", "q", "s", "x", "y"]
            .into_iter()
            .map(String::from)
            .collect();
        same(
            &format!(
                "the store ran {steps}, then [test] SCAN MATCH {}*",
                lab.kv.prefix
            ),
            want,
            mine,
            "every key the store writes is prefix + name: is one call using the bare name, or another prefix?",
        );
    });
}
