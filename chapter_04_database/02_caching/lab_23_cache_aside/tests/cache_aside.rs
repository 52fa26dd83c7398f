//! Grader for lab 23: cache-aside over PostgreSQL and Redis.
//!
//! Every test gets a new PostgreSQL database and a Redis key prefix of its
//! own (labkit's throwaway servers, or `DATABASE_URL` and `REDIS_URL`). The
//! test looks behind the cache with its own connections: it reads keys and
//! their TTLs in Redis, and changes rows in PostgreSQL without the cache
//! knowing, so that a value can only come from the cache. It counts the
//! queries the cache sent with `db_reads()`, and makes the races certain:
//! a table lock holds the first reader of a single flight, and labkit's
//! fault proxy holds one cache's Redis traffic back while another writes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cache_aside::{CacheError, Config, User, UserCache};
use labkit::Report;
use labkit::faults::{Fault, FaultProxy};
use labkit::report::same;
use labkit::services::TestRedis;
use labkit::wait::{eventually, expect_ok, within_async};
use redis::aio::MultiplexedConnection;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// The deadline on each call of the cache.
const CALL: Duration = Duration::from_secs(10);

struct Lab {
    /// The test's database (the `TestDb` itself stays outside the runtime:
    /// dropping it blocks).
    db: String,
    kv: TestRedis,
    pool: PgPool,
    cache: Arc<UserCache>,
    raw: MultiplexedConnection,
}

impl Lab {
    /// Another cache over the same database, with its own Redis URL and
    /// config (two instances of a service share one database and Redis).
    fn cache(&self, redis_url: &str, config: Config) -> UserCache {
        match UserCache::new(self.pool.clone(), redis_url, self.kv.prefix.clone(), config) {
            Ok(c) => c,
            Err(e) => Report::new(format!("called UserCache::new(pool, {redis_url:?}, ...)"))
                .expected("Ok")
                .got(e)
                .fail(),
        }
    }

    /// A user created through the cache.
    async fn user(&self, name: &str, email: &str) -> User {
        let what = format!("create_user({name:?}, {email:?})");
        expect_ok(CALL, &what, hint_for, self.cache.create_user(name, email)).await
    }

    /// `PTTL` of user `id`'s key: -2 when missing, -1 with no TTL.
    async fn pttl(&self, id: i64) -> i64 {
        raw(&self.raw, &["PTTL", &self.cache.key(id)]).await
    }

    /// Changes a row behind the cache's back (no version bump).
    async fn rename_in_db(&self, id: i64, name: &str) {
        sqlx::query("UPDATE users SET name = $2 WHERE id = $1")
            .bind(id)
            .bind(name)
            .execute(&self.pool)
            .await
            .expect("the test's own UPDATE runs");
    }
}

fn config() -> Config {
    Config {
        ttl: Duration::from_secs(60),
        negative_ttl: Duration::from_secs(3),
        redis_timeout: Duration::from_millis(200),
    }
}

/// Runs `body` with a migrated cache over a fresh database and key prefix.
fn lab_test<F, Fut>(body: F)
where
    F: FnOnce(Lab) -> Fut,
    Fut: Future<Output = ()>,
{
    let db = labkit::services::postgres();
    let kv = labkit::services::redis();
    let rt = labkit::wait::runtime(2);
    rt.block_on(async {
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .connect(&db.url)
            .await
            .unwrap_or_else(|e| {
                Report::new(format!("connected to {}", db.url))
                    .got(e)
                    .fail()
            });
        let client = redis::Client::open(kv.url.as_str()).expect("a Redis URL");
        let raw = client
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| {
                Report::new(format!("connected to {}", kv.url))
                    .got(e)
                    .fail()
            });
        let cache = match UserCache::new(pool.clone(), &kv.url, kv.prefix.clone(), config()) {
            Ok(c) => Arc::new(c),
            Err(e) => Report::new("called UserCache::new").got(e).fail(),
        };
        expect_ok(CALL, "migrate()", hint_for, cache.migrate()).await;
        body(Lab {
            db: db.name.clone(),
            kv,
            pool,
            cache,
            raw,
        })
        .await;
    });
    rt.shutdown_background();
}

fn hint_for(e: &CacheError) -> &'static str {
    match e {
        CacheError::Db(_) => {
            "read PostgreSQL's message above; a Redis failure must never become an error (it is a miss)"
        }
        CacheError::RedisUrl(_) => "the URL was labkit's: is it parsed as given?",
    }
}

/// `get_user(id)`, which must succeed.
async fn get(cache: &UserCache, id: i64, what: &str) -> Option<User> {
    expect_ok(CALL, what, hint_for, cache.get_user(id)).await
}

/// One raw Redis command of the test's own.
async fn raw<T: redis::FromRedisValue>(conn: &MultiplexedConnection, args: &[&str]) -> T {
    let mut conn = conn.clone();
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    match cmd.query_async(&mut conn).await {
        Ok(v) => v,
        Err(e) => Report::new(format!("sent {args:?} to Redis")).got(e).fail(),
    }
}

// A miss reads PostgreSQL once and fills the user's key with the TTL;
// the next read is a hit.
#[test]
fn test_01_a_miss_reads_the_database_once_and_fills_the_key_with_its_ttl() {
    lab_test(|lab| async move {
        let ann = lab.user("Ann", "ann@example.com").await;
        same(
            "created Ann, then read db_reads() and the PTTL of her key",
            (1, 0, -2),
            (ann.version, lab.cache.db_reads(), lab.pttl(ann.id).await),
            "a new user has version 1; creating reads nothing and caches nothing",
        );
        let got = get(&lab.cache, ann.id, "get_user(ann)").await;
        let pttl = lab.pttl(ann.id).await;
        same(
            &format!("created Ann, called get_user({}) once", ann.id),
            (Some(ann.clone()), 1),
            (got, lab.cache.db_reads()),
            "a miss reads the row from PostgreSQL (one SELECT, counted in db_reads)",
        );
        Report::new(format!("after the miss, read the PTTL of {}", lab.cache.key(ann.id)))
            .expected("a TTL in (0, 60000] ms (ttl is 60 s)")
            .got(format!("{pttl}"))
            .hint("fill the key with SET ... PX ttl (or SET then PEXPIRE): -2 means no key, -1 means no TTL")
            .check(pttl > 0 && pttl <= 60_000);
        for i in 1..=3 {
            let again = get(&lab.cache, ann.id, &format!("get_user(ann) again ({i})")).await;
            same(
                &format!("read Ann a further {i} times"),
                (Some(ann.clone()), 1),
                (again, lab.cache.db_reads()),
                "a hit is answered from Redis: no SELECT",
            );
        }
    });
}

// A hit comes from Redis alone: a row changed behind the cache's back is
// not seen until the key is gone.
#[test]
fn test_02_a_hit_is_served_from_redis_until_the_key_goes() {
    lab_test(|lab| async move {
        let bob = lab.user("Bob", "bob@example.com").await;
        get(&lab.cache, bob.id, "get_user(bob)").await;
        lab.rename_in_db(bob.id, "Robert").await;
        let hit = get(
            &lab.cache,
            bob.id,
            "get_user(bob) after the row changed behind the cache",
        )
        .await;
        same(
            "read Bob (filling the cache), renamed him Robert in PostgreSQL directly, read him again",
            (Some("Bob".to_string()), 1),
            (hit.map(|u| u.name), lab.cache.db_reads()),
            "a hit must come from Redis, without a query",
        );
        let _: i64 = raw(&lab.raw, &["DEL", &lab.cache.key(bob.id)]).await;
        let fresh = get(
            &lab.cache,
            bob.id,
            "get_user(bob) after his key was deleted",
        )
        .await;
        same(
            "deleted Bob's key in Redis, read him again",
            (Some("Robert".to_string()), 2),
            (fresh.map(|u| u.name), lab.cache.db_reads()),
            "with the key gone, the next read is a miss and reads the row again (is an old result kept in memory?)",
        );
    });
}

// An update is visible to the next read at once, with its new version.
#[test]
fn test_03_an_update_is_read_back_at_once() {
    lab_test(|lab| async move {
        let ann = lab.user("Ann", "ann@example.com").await;
        get(&lab.cache, ann.id, "get_user(ann)").await;
        let updated = expect_ok(
            CALL,
            "update_user(ann, \"Anna\", \"anna@example.com\")",
            hint_for,
            lab.cache.update_user(ann.id, "Anna", "anna@example.com"),
        )
        .await;
        let want = User {
            id: ann.id,
            name: "Anna".into(),
            email: "anna@example.com".into(),
            version: 2,
        };
        same(
            "read Ann (cached), updated her to Anna",
            Some(want.clone()),
            updated,
            "update_user returns the row as stored, with its version bumped",
        );
        for i in 1..=2 {
            let got = get(
                &lab.cache,
                ann.id,
                &format!("get_user(ann) after the update ({i})"),
            )
            .await;
            same(
                &format!("after the update, read Ann (read {i})"),
                Some(want.clone()),
                got,
                "the cached copy must not outlive the update: invalidate (or overwrite) it when the update commits",
            );
        }
        let none = expect_ok(
            CALL,
            "update_user(unknown id)",
            hint_for,
            lab.cache.update_user(ann.id + 1000, "X", "x@example.com"),
        )
        .await;
        same(
            "updated an id that does not exist",
            None,
            none,
            "no row: None",
        );
    });
}

// A delete is visible to the next read at once.
#[test]
fn test_04_a_delete_is_read_back_at_once() {
    lab_test(|lab| async move {
        let ann = lab.user("Ann", "ann@example.com").await;
        get(&lab.cache, ann.id, "get_user(ann)").await;
        let deleted = expect_ok(
            CALL,
            "delete_user(ann)",
            hint_for,
            lab.cache.delete_user(ann.id),
        )
        .await;
        let got = get(&lab.cache, ann.id, "get_user(ann) after the delete").await;
        let again = expect_ok(
            CALL,
            "delete_user(ann) a second time",
            hint_for,
            lab.cache.delete_user(ann.id),
        )
        .await;
        same(
            "read Ann (cached), deleted her, read her, deleted her again",
            (true, None, false),
            (deleted, got, again),
            "a deleted user must not be served from the cache; a second delete finds nothing",
        );
    });
}

// "No such user" is cached too, with the short negative TTL: a flood of
// reads for a missing id costs one query.
#[test]
fn test_05_a_missing_user_is_cached_with_the_negative_ttl() {
    lab_test(|lab| async move {
        let missing = 987_654_321;
        for i in 1..=3 {
            let got = get(&lab.cache, missing, &format!("get_user(missing) ({i})")).await;
            same(
                &format!("read an id that does not exist, {i} times"),
                (None, 1),
                (got, lab.cache.db_reads()),
                "cache the miss too (negative caching): only the first read asks PostgreSQL",
            );
        }
        let pttl = lab.pttl(missing).await;
        Report::new(format!(
            "after reading a missing id, read the PTTL of {}",
            lab.cache.key(missing)
        ))
        .expected("a TTL in (0, 3000] ms (negative_ttl is 3 s, ttl 60 s)")
        .got(format!("{pttl}"))
        .hint(
            "a cached \"not found\" lives for negative_ttl, not ttl: the user may be created soon",
        )
        .check(pttl > 0 && pttl <= 3_000);
    });
}

// Names and emails are stored as given, whatever they hold: the cache's
// encoding must not confuse a name with its own markers.
#[test]
fn test_06_any_text_survives_the_cache() {
    lab_test(|lab| async move {
        for (name, email) in [
            ("-", ":"),
            ("1:-", "null"),
            ("\"quoted\" \\ back\nslash", "{\"json\": true}"),
            ("名前 🦀", "x@例え.jp"),
            ("", ""),
        ] {
            let u = lab.user(name, email).await;
            let miss = get(&lab.cache, u.id, &format!("get_user for name {name:?}")).await;
            let hit = get(
                &lab.cache,
                u.id,
                &format!("get_user for name {name:?}, again"),
            )
            .await;
            same(
                &format!(
                    "created a user named {name:?} with email {email:?}, read it twice (a miss, then a hit)"
                ),
                (Some(u.clone()), Some(u.clone())),
                (miss, hit),
                "the cached form must round-trip every string: use a real serialisation (JSON), and never tell a user from \"not found\" by its name",
            );
        }
        // An entry the cache cannot read (another writer, an old format) is
        // a miss, never a panic or an error.
        let u = lab.user("Cleo", "cleo@example.com").await;
        for junk in ["garbage", "", "7:{not json", "x:y:z"] {
            let _: () = raw(&lab.raw, &["SET", &lab.cache.key(u.id), junk]).await;
            let got = get(
                &lab.cache,
                u.id,
                &format!("get_user(cleo) with her key holding {junk:?}"),
            )
            .await;
            same(
                &format!("set Cleo's key to {junk:?} by hand, then read her"),
                Some(u.clone()),
                got,
                "an entry that does not parse is a miss: read PostgreSQL (and overwrite it), never panic or fail",
            );
        }
    });
}

/// Sessions waiting on a lock in PostgreSQL, for this test's database.
async fn lock_waiters(pool: &PgPool, db: &str) -> Result<i64, String> {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
    )
    .bind(db)
    .fetch_one(pool)
    .await
    .map_err(|e| e.to_string())
}

// Single-flight: 100 concurrent misses for one user (and for one missing
// id) cost one query. The first read is held on a table lock, so every
// caller has missed before any of them could fill the key.
#[test]
fn test_07_heavy_100_concurrent_misses_cost_one_query() {
    lab_test(|lab| async move {
        let ann = lab.user("Ann", "ann@example.com").await;
        for (id, want, what) in [
            (ann.id, Some(ann.clone()), "Ann"),
            (424_242, None, "a missing id"),
        ] {
            let before = lab.cache.db_reads();
            let mut lock = lab.pool.begin().await.expect("a transaction");
            sqlx::query("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
                .execute(&mut *lock)
                .await
                .expect("the test takes the table lock");
            let tasks: Vec<_> = (0..100)
                .map(|_| {
                    let cache = Arc::clone(&lab.cache);
                    tokio::spawn(async move { cache.get_user(id).await })
                })
                .collect();
            let (pool, db) = (lab.pool.clone(), lab.db.clone());
            eventually(
                CALL,
                &format!("a read of {what} to wait on the test's table lock"),
                "does get_user read PostgreSQL on a miss?",
                || {
                    let (pool, db) = (pool.clone(), db.clone());
                    async move {
                        match lock_waiters(&pool, &db).await? {
                            0 => Err("no session waiting on a lock".to_string()),
                            _ => Ok(()),
                        }
                    }
                },
            )
            .await;
            lock.commit().await.expect("the test releases the lock");
            for (i, t) in tasks.into_iter().enumerate() {
                let got = within_async(CALL, &format!("concurrent get_user {i} of 100"), t)
                    .await
                    .expect("the task ran");
                match got {
                    Ok(u) if u == want => {}
                    other => Report::new(format!("read {what} from 100 tasks at once"))
                        .expected(format!("Ok({want:?}) from each"))
                        .got(format!("task {i}: {other:?}"))
                        .fail(),
                }
            }
            same(
                &format!(
                    "held the table lock while 100 tasks read {what} on a cold cache, then released it; counted the queries"
                ),
                1,
                lab.cache.db_reads() - before,
                "concurrent misses for one id must share one query (single-flight: the first caller loads, the others wait for its result)",
            );
        }
    });
}

// The classic cache-aside race, made certain: one instance reads the old
// row, its fill is held back on the network, another instance updates the
// row; the late fill must not put the old row back.
#[test]
fn test_08_a_late_fill_of_the_old_row_does_not_undo_an_update() {
    lab_test(|lab| async move {
        let ann = lab.user("Ann", "ann@example.com").await;
        let proxy = FaultProxy::for_url(&lab.kv.url);
        let slow = lab.cache(proxy.url(), config());
        // Warm up the slow instance (its connection, and any script it
        // loads into Redis), then empty Ann's key again.
        get(
            &slow,
            ann.id,
            "get_user(ann) on the instance behind the proxy",
        )
        .await;
        let _: i64 = raw(&lab.raw, &["DEL", &slow.key(ann.id)]).await;
        proxy.set(Fault::Blackhole);
        let old = get(
            &slow,
            ann.id,
            "get_user(ann) on the instance whose Redis traffic is held",
        )
        .await;
        same(
            "held one instance's Redis traffic (it waits, as on a congested network), read Ann through it",
            Some(ann.clone()),
            old,
            "with Redis not answering, a read must fall back to PostgreSQL within redis_timeout",
        );
        let updated = expect_ok(
            CALL,
            "update_user(ann, \"Anna\", ...) on the other instance",
            hint_for,
            lab.cache.update_user(ann.id, "Anna", "anna@example.com"),
        )
        .await
        .map(|u| u.name);
        same(
            "updated Ann on the other instance",
            Some("Anna".to_string()),
            updated,
            "update_user returns the new row",
        );
        // Let the held traffic through, and close the slow instance: once
        // its connection is gone, Redis has run everything it sent.
        proxy.set(Fault::Pass);
        drop(slow);
        eventually(
            CALL,
            "the slow instance's Redis connection to close",
            "the test dropped that UserCache",
            || {
                let open = proxy.open();
                async move {
                    if open == 0 {
                        Ok(())
                    } else {
                        Err(format!("{open} connections open through the proxy"))
                    }
                }
            },
        )
        .await;
        let got = get(
            &lab.cache,
            ann.id,
            "get_user(ann) after the late fill landed",
        )
        .await
        .map(|u| u.name);
        same(
            "instance 1 read Ann (v1) and its fill was held; instance 2 updated her to Anna (v2); then the held fill reached Redis; read Ann",
            Some("Anna".to_string()),
            got,
            "a fill of version 1 that lands after the update put Ann back for a whole TTL: make the fill conditional (store only if the key holds no newer version, in one Lua script), and let the update write its version",
        );
    });
}

// Redis that does not answer: reads and writes keep working from
// PostgreSQL, each within a bounded time; when Redis answers again, the
// cache is used again, without a restart.
#[test]
fn test_09_redis_silent_then_back() {
    lab_test(|lab| async move {
        let ann = lab.user("Ann", "ann@example.com").await;
        let proxy = FaultProxy::for_url(&lab.kv.url);
        let cache = lab.cache(proxy.url(), config());
        get(&cache, ann.id, "get_user(ann) with Redis up").await;
        proxy.set(Fault::Blackhole);
        let before = cache.db_reads();
        for i in 1..=3 {
            let got = get(
                &cache,
                ann.id,
                &format!("get_user(ann) with Redis silent ({i})"),
            )
            .await;
            same(
                &format!(
                    "made Redis silent (connections open, nothing answered), read Ann {i} times"
                ),
                (Some(ann.clone()), i),
                (got, cache.db_reads() - before),
                "when Redis does not answer within redis_timeout, read PostgreSQL (and count it)",
            );
        }
        let renamed = expect_ok(
            CALL,
            "update_user with Redis silent",
            hint_for,
            cache.update_user(ann.id, "Anna", "anna@example.com"),
        )
        .await;
        same(
            "updated Ann with Redis silent",
            Some(2),
            renamed.map(|u| u.version),
            "PostgreSQL is the truth: the update must succeed",
        );
        recovers(&lab, &proxy, &cache, ann.id).await;
    });
}

// Redis that resets every connection, or refuses them: the same.
#[test]
fn test_10_redis_reset_or_refused_then_back() {
    lab_test(|lab| async move {
        let ann = lab.user("Ann", "ann@example.com").await;
        let proxy = FaultProxy::for_url(&lab.kv.url);
        let cache = lab.cache(proxy.url(), config());
        get(&cache, ann.id, "get_user(ann) with Redis up").await;
        for fault in [Fault::Reset, Fault::Refuse] {
            proxy.set(Fault::Reset);
            proxy.set(fault);
            for i in 1..=3 {
                let got = get(
                    &cache,
                    ann.id,
                    &format!("get_user(ann) with Redis {fault:?} ({i})"),
                )
                .await;
                same(
                    &format!("switched Redis to {fault:?}, read Ann (read {i})"),
                    Some(ann.clone()),
                    got,
                    "a Redis error is a miss, never an error of get_user",
                );
            }
            recovers(&lab, &proxy, &cache, ann.id).await;
        }
    });
}

/// Lets Redis answer again and waits until reads are hits again.
async fn recovers(lab: &Lab, proxy: &FaultProxy, cache: &UserCache, id: i64) {
    proxy.set(Fault::Pass);
    let cache_key = cache.key(id);
    eventually(
        Duration::from_secs(20),
        "two reads in a row to be answered from Redis once it is back",
        "does the cache reconnect by itself (redis::aio::ConnectionManager), instead of keeping a dead connection?",
        || async {
            let before = cache.db_reads();
            let _ = cache.get_user(id).await;
            let _ = cache.get_user(id).await;
            let reads = cache.db_reads() - before;
            if reads == 0 { Ok(()) } else { Err(format!("{reads} of the 2 reads went to PostgreSQL")) }
        },
    )
    .await;
    let exists: i64 = raw(&lab.raw, &["EXISTS", &cache_key]).await;
    same(
        "once Redis was back and reads were hits, checked the key",
        1,
        exists,
        "the hits must come from the user's key",
    );
}
