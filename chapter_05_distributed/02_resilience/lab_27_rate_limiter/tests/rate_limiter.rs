//! Grader for lab 27: rate limiters in process, in Redis, and as a tower
//! layer.
//!
//! The in-process limiters run on the test's own clock ([`TestClock`]): it
//! stands still until the test moves it, so every count is exact. The
//! steps the tests take are whole intervals, halves and quarters, which
//! are exact in binary floating point too, so a limiter that keeps its
//! tokens in `f64` passes as well as one that counts nanoseconds.
//!
//! The Redis limiter takes its time from Redis, so its tests use an
//! interval of an hour where counts must be exact (no token can come back
//! while a test runs), and one short interval where a refill must happen
//! (a deadline-bounded poll). Its atomicity is tested with many checks in
//! flight at once: from one process (all sent before any answer is read),
//! and from two server processes (this test binary run twice as a child,
//! `role_server`) sharing one Redis prefix.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::routing::get;
use labkit::Report;
use labkit::report::same;
use labkit::session::{Session, role_param};
use labkit::wait::{expect_ok, within, within_async};
use rate_limiter::{
    Clock, Decision, Limiter, Quota, RateLimitLayer, RedisLimiter, SlidingWindow, SystemClock,
    TokenBucket,
};

/// The deadline on one call of the code under test.
const CALL: Duration = Duration::from_secs(5);
const SEC: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);

/// A clock that moves only when the test moves it, forward or back. It
/// starts at 1000 s (a multiple of every window the tests use), so it can
/// also go back.
#[derive(Debug)]
struct TestClock(Mutex<Duration>);

impl TestClock {
    fn new() -> Arc<TestClock> {
        Arc::new(TestClock(Mutex::new(Duration::from_secs(1000))))
    }
    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
    fn back(&self, by: Duration) {
        *self.0.lock().unwrap() -= by;
    }
    fn set(&self, to: Duration) {
        *self.0.lock().unwrap() = to;
    }
}

impl Clock for TestClock {
    fn now(&self) -> Duration {
        *self.0.lock().unwrap()
    }
}

fn bucket(burst: u32, interval: Duration, clock: &Arc<TestClock>) -> Arc<TokenBucket> {
    let clock: Arc<dyn Clock> = clock.clone();
    within(
        CALL,
        &format!("TokenBucket::new(Quota::new({burst}, {interval:?}), clock)"),
        move || Arc::new(TokenBucket::new(Quota::new(burst, interval), clock)),
    )
}

/// `TokenBucket::check(key)`, with a deadline.
fn tb(limiter: &Arc<TokenBucket>, key: &str) -> Decision {
    let (l, k) = (Arc::clone(limiter), key.to_string());
    within(CALL, &format!("TokenBucket::check({key:?})"), move || {
        l.check(&k)
    })
}

/// `SlidingWindow::check(key)`, with a deadline.
fn sw(limiter: &Arc<SlidingWindow>, key: &str) -> Decision {
    let (l, k) = (Arc::clone(limiter), key.to_string());
    within(CALL, &format!("SlidingWindow::check({key:?})"), move || {
        l.check(&k)
    })
}

/// "A" for allowed, "D(1.25s)" for denied: a sequence of answers at a glance.
fn show(d: &Decision) -> String {
    match d {
        Decision::Allowed => "A".to_string(),
        Decision::Denied { retry_after } => format!("D({retry_after:?})"),
    }
}

fn shows(ds: &[Decision]) -> String {
    ds.iter().map(show).collect::<Vec<_>>().join(" ")
}

/// The answers of `n` checks in a row, clock standing still.
fn checks(n: usize, mut f: impl FnMut() -> Decision) -> Vec<Decision> {
    (0..n).map(|_| f()).collect()
}

/// How many answers were `Allowed`.
fn allowed(ds: &[Decision]) -> usize {
    ds.iter().filter(|d| d.is_allowed()).count()
}

/// `retry_after` of a denial; fails the test on `Allowed`.
#[track_caller]
fn retry_of(d: Decision, did: &str, hint: &str) -> Duration {
    match d {
        Decision::Denied { retry_after } => retry_after,
        Decision::Allowed => Report::new(did)
            .expected("Denied { retry_after: .. }")
            .got("Allowed")
            .hint(hint)
            .fail(),
    }
}

/// Fails unless the answers are `want`, given as "A A D(1s)": denied
/// answers must carry that `retry_after` (to within a microsecond).
#[track_caller]
fn expect_seq(did: &str, want: &str, got: &[Decision], hint: &str) {
    let want: Vec<&str> = want.split_whitespace().collect();
    let ok = want.len() == got.len()
        && want.iter().zip(got).all(|(w, g)| match (*w, g) {
            ("A", Decision::Allowed) => true,
            (w, Decision::Denied { retry_after }) if w.starts_with("D(") => {
                let secs: f64 = w[2..w.len() - 2].parse().expect("a D(<secs>s) in the test");
                let want = Duration::from_secs_f64(secs);
                retry_after.abs_diff(want) <= Duration::from_micros(1)
            }
            _ => false,
        });
    if !ok {
        Report::new(did)
            .expected(want.join(" "))
            .got(shows(got))
            .hint(hint)
            .fail();
    }
}

// A new key gets exactly `burst` requests at once, and the next is denied
// with the exact time until a token comes back; a denied check takes
// nothing (asking again does not push the retry further out).
#[test]
fn test_01_a_new_key_gets_exactly_the_burst_then_is_denied() {
    let clock = TestClock::new();
    let l = bucket(3, SEC, &clock);
    let got = checks(6, || tb(&l, "k"));
    expect_seq(
        "TokenBucket with burst 3, interval 1 s; checked key \"k\" 6 times, clock standing still",
        "A A A D(1s) D(1s) D(1s)",
        &got,
        "a new bucket starts full (burst tokens); each allowed check takes one; a denied check takes none, and retry_after is the time until one whole token is back",
    );
    let l = bucket(1, Duration::from_secs(4), &clock);
    let got = checks(2, || tb(&l, "k"));
    expect_seq(
        "TokenBucket with burst 1, interval 4 s; checked \"k\" twice",
        "A D(4s)",
        &got,
        "with burst 1 only the first check passes, and the next token is one interval away",
    );
}

// After the burst, exactly one request per interval: the bucket refills
// at the rate the quota says, and several intervals give several tokens.
#[test]
fn test_02_after_the_burst_one_request_per_interval() {
    let clock = TestClock::new();
    let l = bucket(2, SEC, &clock);
    checks(2, || tb(&l, "k"));
    for round in 1..=5 {
        clock.advance(SEC);
        let got = checks(2, || tb(&l, "k"));
        expect_seq(
            &format!(
                "burst 2, interval 1 s; used the burst, then moved the clock 1 s on, {round} time(s), checking twice each time"
            ),
            "A D(1s)",
            &got,
            "one interval gives back exactly one token",
        );
    }
    clock.advance(Duration::from_secs(2));
    let got = checks(3, || tb(&l, "k"));
    expect_seq(
        "burst 2, interval 1 s, bucket empty; moved the clock 2 s on, checked 3 times",
        "A A D(1s)",
        &got,
        "two intervals give back two tokens",
    );
    clock.advance(Duration::from_millis(1500));
    let got = checks(2, || tb(&l, "k"));
    expect_seq(
        "burst 2, interval 1 s, bucket empty; moved the clock 1.5 s on, checked twice",
        "A D(0.5s)",
        &got,
        "1.5 intervals are one token and a half: one request, and the half counts toward the next",
    );
}

// Refill stops at the burst: however long a key was idle, it gets at most
// `burst` requests at once (else an idle client could save up a flood).
#[test]
fn test_03_refill_never_goes_past_the_burst() {
    let clock = TestClock::new();
    let l = bucket(4, SEC, &clock);
    checks(4, || tb(&l, "k"));
    clock.advance(HOUR);
    let got = checks(6, || tb(&l, "k"));
    expect_seq(
        "burst 4, interval 1 s; used the burst, moved the clock an hour on, checked 6 times",
        "A A A A D(1s) D(1s)",
        &got,
        "the bucket holds at most burst tokens: cap the refill (min(tokens + earned, burst))",
    );
    // Full, one taken, then a long wait: still only the burst.
    clock.advance(HOUR);
    tb(&l, "k");
    clock.advance(Duration::from_secs(10));
    let got = checks(5, || tb(&l, "k"));
    expect_seq(
        "burst 4, a full bucket; took 1, moved the clock 10 s on, checked 5 times",
        "A A A A D(1s)",
        &got,
        "a bucket that is nearly full fills up to burst, not burst + the time since",
    );
    // Checking often while full does not lift the cap either.
    let l = bucket(2, SEC, &clock);
    for _ in 0..8 {
        clock.advance(Duration::from_millis(500));
        tb(&l, "fresh").is_allowed();
        clock.advance(Duration::from_millis(500));
    }
    // 8 s passed with 8 takes: the bucket is full at 2.
    clock.advance(HOUR);
    let got = checks(3, || tb(&l, "fresh"));
    expect_seq(
        "burst 2, interval 1 s; a key checked once a second for 8 s, then idle an hour, checked 3 times",
        "A A D(1s)",
        &got,
        "is the cap applied on every refill?",
    );
}

// Fractions of an interval add up: half an interval, then another half,
// is one token. A bucket that counts whole tokens and restarts its clock
// at every call loses the halves, and a client checking twice per interval
// never gets a token back.
#[test]
fn test_04_fractions_of_an_interval_add_up() {
    let clock = TestClock::new();
    let l = bucket(1, SEC, &clock);
    tb(&l, "k");
    let mut got = Vec::new();
    for _ in 0..2 {
        clock.advance(Duration::from_millis(500));
        got.push(tb(&l, "k"));
    }
    expect_seq(
        "burst 1, interval 1 s; used the token, then twice: moved the clock 0.5 s on and checked",
        "D(0.5s) A",
        &got,
        "keep the fraction of a token between calls (or the time it was earned since): 0.5 + 0.5 is one token",
    );
    let mut got = Vec::new();
    for _ in 0..4 {
        clock.advance(Duration::from_millis(250));
        got.push(tb(&l, "k"));
    }
    expect_seq(
        "then four times: moved the clock 0.25 s on and checked",
        "D(0.75s) D(0.5s) D(0.25s) A",
        &got,
        "a denied check must not throw away the time earned so far",
    );
    let l = bucket(3, Duration::from_secs(4), &clock);
    checks(3, || tb(&l, "k"));
    let mut got = Vec::new();
    for _ in 0..8 {
        clock.advance(SEC);
        got.push(tb(&l, "k"));
    }
    expect_seq(
        "burst 3, interval 4 s; used the burst, then 8 times: moved the clock 1 s on and checked",
        "D(3s) D(2s) D(1s) A D(3s) D(2s) D(1s) A",
        &got,
        "a quarter of a token per second: every fourth check gets one",
    );
}

// Waiting exactly `retry_after` is enough, and a quarter of an interval
// less is not: clients and the 429's Retry-After rely on it.
#[test]
fn test_05_waiting_retry_after_is_exactly_enough() {
    let clock = TestClock::new();
    let l = bucket(2, Duration::from_secs(8), &clock);
    checks(2, || tb(&l, "k"));
    clock.advance(Duration::from_secs(3));
    let r = retry_of(
        tb(&l, "k"),
        "burst 2, interval 8 s; used the burst, moved the clock 3 s on, checked",
        "3 s of 8 is not a token",
    );
    same(
        "burst 2, interval 8 s; used the burst, 3 s later asked for retry_after",
        Duration::from_secs(5),
        r,
        "retry_after is the time until a whole token: interval minus what was earned",
    );
    clock.advance(r - Duration::from_secs(2));
    let early = tb(&l, "k");
    clock.advance(Duration::from_secs(2));
    let on_time = tb(&l, "k");
    expect_seq(
        "waited retry_after less 2 s and checked, then the 2 s more and checked",
        "D(2s) A",
        &[early, on_time],
        "retry_after must be neither too short nor too long",
    );
}

// Each key has its own bucket: one client using up its quota does not
// touch anyone else's.
#[test]
fn test_06_each_key_has_its_own_bucket() {
    let clock = TestClock::new();
    let l = bucket(2, SEC, &clock);
    let a = checks(3, || tb(&l, "alice"));
    let b = checks(3, || tb(&l, "bob"));
    let a2 = tb(&l, "alice");
    expect_seq(
        "burst 2; checked \"alice\" 3 times, \"bob\" 3 times, \"alice\" once more",
        "A A D(1s) A A D(1s) D(1s)",
        &[a, b, vec![a2]].concat(),
        "keep one bucket per key (a HashMap<String, _>), not one for all",
    );
    let mut counts = HashMap::new();
    for _round in 0..3 {
        for i in 0..50 {
            let key = format!("client-{i}");
            if tb(&l, &key).is_allowed() {
                *counts.entry(key).or_insert(0) += 1;
            }
        }
    }
    let wrong: Vec<_> = (0..50)
        .map(|i| format!("client-{i}"))
        .filter(|k| counts.get(k) != Some(&2))
        .map(|k| format!("{k}: {}", counts.get(&k).unwrap_or(&0)))
        .collect();
    Report::new("burst 2; checked 50 keys, 3 rounds over all of them, clock standing still")
        .expected("each key allowed exactly 2 times")
        .got(format!("{wrong:?}"))
        .hint("is a key's bucket found again by its name, and a new one full?")
        .check(wrong.is_empty());
    // Keys that look alike are different keys.
    let l = bucket(1, SEC, &clock);
    let got = vec![
        tb(&l, "ab"),
        tb(&l, "a"),
        tb(&l, "b"),
        tb(&l, ""),
        tb(&l, "ab"),
    ];
    expect_seq(
        "burst 1; checked \"ab\", \"a\", \"b\", \"\", \"ab\"",
        "A A A A D(1s)",
        &got,
        "the key is the whole string",
    );
}

// A clock that goes back (an NTP step, a VM resumed) is time standing
// still: no panic, no tokens for the step back, and when it comes forward
// again only time past the latest instant seen counts.
#[test]
fn test_07_a_clock_that_goes_back_gives_no_tokens() {
    let clock = TestClock::new();
    let l = bucket(2, SEC, &clock);
    checks(2, || tb(&l, "k"));
    clock.back(Duration::from_secs(10));
    let back = labkit::wait::try_within(CALL, "check after the clock went back", {
        let l = Arc::clone(&l);
        move || l.check("k")
    });
    let back = back.unwrap_or_else(|p| {
        Report::new("burst 2; used the burst at t=1000 s, moved the clock back to 990 s, checked")
            .expected("Denied")
            .got(format!("a panic: {p}"))
            .hint("Duration subtraction panics when the result would be negative: use saturating_sub or compare first")
            .fail()
    });
    Report::new("burst 2; used the burst at t=1000 s, moved the clock back to 990 s, checked")
        .expected("Denied (no time passed)")
        .got(show(&back))
        .hint("a clock going back must not add tokens (did a subtraction wrap around?)")
        .check(!back.is_allowed());
    clock.advance(Duration::from_secs(5));
    let mid = tb(&l, "k");
    clock.advance(Duration::from_secs(5));
    let at = tb(&l, "k");
    clock.advance(SEC);
    let after = checks(2, || tb(&l, "k"));
    let all = [vec![mid, at], after].concat();
    let got: Vec<String> = all.iter().map(show).collect();
    let ok = !mid.is_allowed() && !at.is_allowed() && all[2].is_allowed() && allowed(&all) == 1;
    Report::new("then moved it to 995 s (checked), 1000 s (checked), 1001 s (checked twice)")
        .expected("D D A D: only the second after 1000 s earns a token")
        .got(got.join(" "))
        .hint("keep the latest time seen: if the bucket's time follows the clock back, the same 10 s are counted again on the way forward")
        .check(ok);
    // A new key seen while the clock is behind starts full, and works on.
    let got = checks(3, || tb(&l, "new"));
    expect_seq(
        "then checked a new key 3 times",
        "A A D(1s)",
        &got,
        "a new bucket is full",
    );
}

// Many threads checking one key at once are admitted exactly `burst`
// times: the read and the update of a bucket must be one step under a
// lock, or two threads take the same last token.
#[test]
fn test_08_many_threads_on_one_key_admit_exactly_the_burst() {
    let clock = TestClock::new();
    let l = bucket(600, SEC, &clock);
    let per_key = within(Duration::from_secs(20), "8 threads × 1000 checks", {
        let l = Arc::clone(&l);
        move || {
            let barrier = Arc::new(std::sync::Barrier::new(8));
            let threads: Vec<_> = (0..8)
                .map(|t| {
                    let (l, barrier) = (Arc::clone(&l), Arc::clone(&barrier));
                    std::thread::spawn(move || {
                        barrier.wait();
                        let mut n = [0usize; 2];
                        for i in 0..1000 {
                            // Threads 0-5 hammer "hot"; 6 and 7 alternate.
                            let k = if t < 6 || i % 2 == 0 { 0 } else { 1 };
                            if l.check(["hot", "cool"][k]).is_allowed() {
                                n[k] += 1;
                            }
                        }
                        n
                    })
                })
                .collect();
            let mut total = [0usize; 2];
            for t in threads {
                let n = t.join().expect("a checking thread panicked");
                total[0] += n[0];
                total[1] += n[1];
            }
            total
        }
    });
    same(
        "burst 600, clock standing still; 8 threads at once: 7000 checks of \"hot\" and 1000 of \"cool\" (a new key two threads meet at once); counted Allowed per key",
        [600, 600],
        per_key,
        "hold one lock from reading the tokens to writing them back; is a new key's bucket created only once, even when two threads see it first?",
    );
}

// `SystemClock` is a real, monotonic clock; and a quota of 0 requests or
// a zero interval is refused when it is made, not at the first request.
#[test]
fn test_09_system_clock_and_quota_checks() {
    let c = SystemClock;
    let (a, b) = (c.now(), c.now());
    Report::new("read SystemClock::now() twice")
        .expected("the second reading not earlier than the first")
        .got(format!("{a:?}, then {b:?}"))
        .hint("use std::time::Instant (monotonic), measured from a fixed origin")
        .check(b >= a);
    let l = within(
        CALL,
        "TokenBucket::new(Quota::new(3, 1 h), Arc::new(SystemClock))",
        || Arc::new(TokenBucket::new(Quota::new(3, HOUR), Arc::new(SystemClock))),
    );
    let got = checks(4, || tb(&l, "k"));
    let r = retry_of(
        got[3],
        "a real-clock bucket of burst 3, interval 1 h; the 4th check",
        "",
    );
    Report::new("burst 3, interval 1 h, on SystemClock; checked 4 times")
        .expected("A A A D(a little under 1h)")
        .got(shows(&got))
        .hint("does the bucket read the clock it was given?")
        .check(allowed(&got[..3]) == 3 && r <= HOUR && r > HOUR - Duration::from_secs(60));
    for (burst, interval, what) in [
        (0, SEC, "Quota::new(0, 1 s)"),
        (1, Duration::ZERO, "Quota::new(1, 0 s)"),
    ] {
        let r = std::panic::catch_unwind(|| Quota::new(burst, interval));
        Report::new(format!("called {what}"))
            .expected("a panic: such a quota admits nothing, or everything")
            .got(format!("{r:?}"))
            .hint("assert! on both fields in Quota::new")
            .check(r.is_err());
    }
}

fn window(limit: u32, w: Duration, clock: &Arc<TestClock>) -> Arc<SlidingWindow> {
    let clock: Arc<dyn Clock> = clock.clone();
    within(
        CALL,
        &format!("SlidingWindow::new({limit}, {w:?}, clock)"),
        move || Arc::new(SlidingWindow::new(limit, w, clock)),
    )
}

// A sliding window admits `limit` requests in a window; the next is denied
// until enough of the window has slid by, and denied checks count nothing.
#[test]
fn test_10_a_sliding_window_admits_the_limit_per_window() {
    let clock = TestClock::new();
    let l = window(4, SEC, &clock);
    let got = checks(6, || sw(&l, "k"));
    expect_seq(
        "SlidingWindow limit 4, window 1 s; checked \"k\" 6 times at the start of a window",
        "A A A A D(1.25s) D(1.25s)",
        &got,
        "4 fit; the 5th must wait until the next window (1 s) and until a quarter of it has slid by (4 × 0.75 + 1 ≤ 4): 1.25 s",
    );
    clock.advance(Duration::from_millis(500));
    let got = checks(1, || sw(&l, "k"));
    expect_seq(
        "then moved the clock 0.5 s on, checked",
        "D(0.75s)",
        &got,
        "the window is still full",
    );
    let got = checks(1, || sw(&l, "other"));
    expect_seq(
        "then checked another key",
        "A",
        &got,
        "each key has its own counts",
    );
    clock.advance(Duration::from_millis(750));
    let got = checks(2, || sw(&l, "k"));
    expect_seq(
        "then moved the clock on to 1.25 s, checked twice",
        "A D(0.25s)",
        &got,
        "waiting retry_after is enough; after one more the weighted count is 4 again",
    );
}

// The previous window's count still weighs, less and less as the window
// slides: right after a boundary a client does not get a fresh `limit`
// (the burst of 2 × limit a fixed window allows).
#[test]
fn test_11_a_sliding_window_weights_the_previous_window() {
    let clock = TestClock::new();
    let l = window(4, SEC, &clock);
    checks(4, || sw(&l, "k"));
    clock.advance(SEC);
    let mut got = checks(1, || sw(&l, "k"));
    for _ in 0..3 {
        clock.advance(Duration::from_millis(250));
        got.extend(checks(2, || sw(&l, "k")));
    }
    expect_seq(
        "limit 4, window 1 s; 4 requests in window 0; then at 1.0 s checked once, and at 1.25, 1.5, 1.75 s twice each",
        "D(0.25s) A D(0.25s) A D(0.25s) A D(0.25s)",
        &got,
        "the estimate is previous × (window − elapsed) / window + current: 4 × 0.75 + 0 + 1 ≤ 4 at 1.25 s, 4 × 0.5 + 1 + 1 ≤ 4 at 1.5 s, ...",
    );
    // A fixed window would have allowed all 4 at 1.0 s: make sure the
    // previous window's weight is there at the boundary itself.
    let l = window(2, Duration::from_secs(4), &clock);
    // Windows of 4 s start at multiples of 4 s of clock time.
    clock.set(Duration::from_secs(1008));
    checks(2, || sw(&l, "b"));
    clock.advance(Duration::from_secs(4));
    let got = checks(2, || sw(&l, "b"));
    expect_seq(
        "limit 2, window 4 s; 2 requests at the start of a window, then 4 s later (at the boundary) checked twice",
        "D(2s) D(2s)",
        &got,
        "at the boundary the whole previous window is still inside the sliding one",
    );
    clock.advance(Duration::from_secs(2));
    let got = checks(2, || sw(&l, "b"));
    expect_seq(
        "then 2 s later checked twice",
        "A D(2s)",
        &got,
        "2 × 0.5 + 0 + 1 ≤ 2",
    );
}

// Counts older than the previous window are gone: after two idle windows
// a key gets the whole limit again.
#[test]
fn test_12_a_sliding_window_forgets_windows_older_than_the_previous() {
    let clock = TestClock::new();
    let l = window(4, SEC, &clock);
    checks(4, || sw(&l, "k"));
    clock.advance(Duration::from_secs(2));
    let got = checks(5, || sw(&l, "k"));
    expect_seq(
        "limit 4, window 1 s; 4 requests in window 0; then at 2.0 s (window 2) checked 5 times",
        "A A A A D(1.25s)",
        &got,
        "window 1 was empty, so the previous count is 0, not window 0's",
    );
    clock.advance(Duration::from_secs(3600));
    let got = checks(5, || sw(&l, "k"));
    expect_seq(
        "then an hour later checked 5 times",
        "A A A A D(1.25s)",
        &got,
        "an hour of silence leaves the previous window empty",
    );
    // A clock that goes back: no panic, and nothing is counted twice.
    clock.back(Duration::from_secs(10));
    let back = labkit::wait::try_within(CALL, "check after the clock went back", {
        let l = Arc::clone(&l);
        move || l.check("k")
    });
    Report::new("then moved the clock 10 s back and checked")
        .expected("Denied (time stood still)")
        .got(match &back {
            Ok(d) => show(d),
            Err(p) => format!("a panic: {p}"),
        })
        .hint("treat a clock that goes back as time standing still (keep the latest time seen)")
        .check(matches!(back, Ok(Decision::Denied { .. })));
}

/// An axum app on `127.0.0.1:0` whose `/` answers "hello" and counts its
/// calls, behind the layer with `limiter`, keyed by the `x-key` header.
fn serve<L: Limiter>(
    rt: &tokio::runtime::Runtime,
    limiter: Arc<L>,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&hits);
    let app = Router::new()
        .route(
            "/",
            get(move || {
                let h = Arc::clone(&h);
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    "hello"
                }
            }),
        )
        .layer(RateLimitLayer::new(limiter, |req: &Request<Body>| {
            req.headers()
                .get("x-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("anonymous")
                .to_string()
        }));
    let addr = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    });
    (addr, hits)
}

/// One GET with header `x-key: key`: (status, Retry-After values, body).
fn hit(
    client: &reqwest::blocking::Client,
    addr: SocketAddr,
    key: &str,
) -> (u16, Vec<String>, String) {
    let url = format!("http://{addr}/");
    match client.get(&url).header("x-key", key).send() {
        Ok(r) => {
            let status = r.status().as_u16();
            let retry = r
                .headers()
                .get_all("retry-after")
                .iter()
                .map(|v| v.to_str().unwrap_or("<not text>").to_string())
                .collect();
            (status, retry, r.text().unwrap_or_default())
        }
        Err(e) => Report::new(format!("sent GET {url} with x-key: {key}"))
            .expected("an HTTP response")
            .got(labkit::report::error_chain(&e))
            .hint("did the service panic (a todo!() in poll_ready or call)? is the 429 a valid response?")
            .fail(),
    }
}

/// "200", "429 Retry-After: 1", for sequences of HTTP answers.
fn show_http(r: &(u16, Vec<String>, String)) -> String {
    match r.1.as_slice() {
        [] => format!("{}", r.0),
        vs => format!("{} Retry-After: {}", r.0, vs.join(", ")),
    }
}

// Over real HTTP, the layer passes allowed requests to the service and
// answers the others itself: 429 with Retry-After in whole seconds, rounded
// up, the service never called; each key counted on its own.
#[test]
fn test_13_the_layer_answers_429_with_retry_after_over_http() {
    let rt = labkit::wait::runtime(2);
    let clock = TestClock::new();
    let limiter = bucket(2, SEC, &clock);
    let (addr, hits) = serve(&rt, limiter);
    let client = labkit::http::client();
    let got: Vec<_> = (0..4).map(|_| hit(&client, addr, "alice")).collect();
    let shown: Vec<_> = got.iter().map(show_http).collect();
    same(
        "a TokenBucket of burst 2, interval 1 s, behind the layer; sent 4 GET / with x-key: alice",
        vec!["200", "200", "429 Retry-After: 1", "429 Retry-After: 1"],
        shown.iter().map(String::as_str).collect(),
        "a denied request gets 429 Too Many Requests and one Retry-After header: the seconds to wait, rounded up",
    );
    same(
        "then counted the calls of the service and read the 200s' bodies",
        (2, "hello".to_string()),
        (hits.load(Ordering::SeqCst), got[0].2.clone()),
        "an allowed request reaches the service untouched; a denied one must not reach it",
    );
    clock.advance(Duration::from_millis(250));
    let r = show_http(&hit(&client, addr, "alice"));
    same(
        "moved the clock 0.25 s on; sent GET / as alice",
        "429 Retry-After: 1",
        &r,
        "0.75 s to wait is 1 whole second rounded up, never 0",
    );
    let r = show_http(&hit(&client, addr, "bob"));
    same(
        "sent GET / as bob",
        "200",
        &r,
        "bob's key has its own bucket",
    );
    clock.advance(Duration::from_millis(750));
    let r = show_http(&hit(&client, addr, "alice"));
    same(
        "moved the clock 0.75 s more; sent GET / as alice",
        "200",
        &r,
        "a token is back",
    );
    same(
        "counted the calls of the service",
        4,
        hits.load(Ordering::SeqCst),
        "only allowed requests reach the service",
    );
    rt.shutdown_background();
}

/// A limiter of the test's own: the key says what to answer. "deny:<ns>"
/// denies with that `retry_after`; "fail" errs; anything else allows.
struct Scripted;

impl Limiter for Scripted {
    type Error = std::io::Error;

    fn check(&self, key: &str) -> impl Future<Output = Result<Decision, std::io::Error>> + Send {
        let answer = if key == "fail" {
            Err(std::io::Error::other(
                "the limiter is down (a test's limiter)",
            ))
        } else if let Some(ns) = key.strip_prefix("deny:") {
            Ok(Decision::Denied {
                retry_after: Duration::from_nanos(ns.parse().expect("deny:<ns> in the test")),
            })
        } else {
            Ok(Decision::Allowed)
        };
        std::future::ready(answer)
    }
}

// Retry-After is whole seconds (RFC 9110 has no fractions), rounded up so
// a client that waits that long is let in, and never 0 (a client told 0
// retries at once); and a limiter that fails lets requests through.
#[test]
fn test_14_retry_after_is_whole_seconds_rounded_up_and_errors_fail_open() {
    let rt = labkit::wait::runtime(2);
    let (addr, hits) = serve(&rt, Arc::new(Scripted));
    let client = labkit::http::client();
    for (retry, want) in [
        (Duration::from_nanos(1), "1"),
        (Duration::from_millis(999), "1"),
        (SEC, "1"),
        (SEC + Duration::from_nanos(1), "2"),
        (Duration::from_millis(1500), "2"),
        (Duration::from_secs(2), "2"),
        (Duration::from_millis(59_001), "60"),
        (HOUR, "3600"),
        (Duration::ZERO, "1"),
    ] {
        let key = format!("deny:{}", retry.as_nanos());
        let r = hit(&client, addr, &key);
        same(
            &format!("a limiter that denies with retry_after {retry:?}; sent GET /"),
            format!("429 Retry-After: {want}"),
            show_http(&r),
            "Retry-After is retry_after in whole seconds, rounded up (div_ceil), at least 1; not milliseconds, not truncated",
        );
    }
    same(
        "counted the calls of the service",
        0,
        hits.load(Ordering::SeqCst),
        "denied requests never reach it",
    );
    let r = hit(&client, addr, "fail");
    same(
        "a limiter whose check returns Err; sent GET /",
        ("200".to_string(), "hello".to_string(), 1),
        (show_http(&r), r.2.clone(), hits.load(Ordering::SeqCst)),
        "when the limiter itself fails, the layer serves the request (fails open)",
    );
    rt.shutdown_background();
}

/// A Redis limiter on `url` and `prefix`.
async fn redis_limiter(url: &str, prefix: &str, quota: Quota) -> RedisLimiter {
    expect_ok(
        CALL,
        &format!("RedisLimiter::connect({url:?}, {prefix:?}, {quota:?})"),
        |_| "is Redis reachable at that URL? the test reached it",
        RedisLimiter::connect(url, prefix, quota),
    )
    .await
}

async fn rl(l: &RedisLimiter, key: &str) -> Decision {
    expect_ok(
        CALL,
        &format!("RedisLimiter::check({key:?})"),
        |_| "read Redis's message: a Lua error names the line of the script",
        l.check(key),
    )
    .await
}

/// Every key under `prefix` with its PTTL.
async fn keys_under(url: &str, prefix: &str) -> Vec<(String, i64)> {
    let client = redis::Client::open(url).expect("a Redis URL");
    let mut conn = within_async(
        CALL,
        "the test's own Redis connection",
        client.get_multiplexed_async_connection(),
    )
    .await
    .expect("the test connects to Redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    let mut out = Vec::new();
    for k in keys {
        let pttl: i64 = redis::cmd("PTTL")
            .arg(&k)
            .query_async(&mut conn)
            .await
            .expect("PTTL");
        out.push((k, pttl));
    }
    out
}

// The Redis limiter keeps the token-bucket rule: the burst, then denied
// with about one interval to wait (Redis's clock runs while the test
// does, so "about": within a minute of an hour); keys are separate; and
// its state expires (an idle key costs no memory for ever).
#[test]
fn test_15_the_redis_limiter_admits_the_burst_then_denies() {
    let kv = labkit::services::redis();
    let rt = labkit::wait::runtime(0);
    rt.block_on(async {
        let l = redis_limiter(&kv.url, &kv.prefix, Quota::new(5, HOUR)).await;
        let mut got = Vec::new();
        for _ in 0..7 {
            got.push(rl(&l, "alice").await);
        }
        let b = rl(&l, "bob").await;
        let r = retry_of(got[5], "a RedisLimiter of burst 5, interval 1 h; the 6th check of alice", "5 fit, the 6th must not");
        Report::new("a RedisLimiter of burst 5, interval 1 h; checked alice 7 times, then bob once")
            .expected("A A A A A D(≈1h) D(≈1h), then A for bob")
            .got(format!("{}, then {} for bob", shows(&got), show(&b)))
            .hint("the same rule as TokenBucket, in one Lua script; the key in Redis is prefix + key, so bob's bucket is not alice's")
            .check(
                allowed(&got[..5]) == 5
                    && allowed(&got[5..]) == 0
                    && r <= HOUR
                    && r > HOUR - Duration::from_secs(60)
                    && b.is_allowed(),
            );
        let keys = keys_under(&kv.url, &kv.prefix).await;
        let max = (5 * HOUR).as_millis() as i64;
        Report::new(format!("then listed every Redis key under the prefix {:?} with its PTTL", kv.prefix))
            .expected(format!("at least one key, each with a TTL in (0, {max}] ms (burst × interval)"))
            .got(format!("{keys:?}"))
            .hint("keep the state under prefix + key, and set a TTL that ends when the bucket would be full again (PX in the SET, or PEXPIRE)")
            .check(!keys.is_empty() && keys.iter().all(|(_, t)| *t > 0 && *t <= max));
    });
}

// Two limiters on one prefix share the buckets (two instances of a
// service); a limiter on another prefix does not.
#[test]
fn test_16_limiters_on_one_prefix_share_their_buckets() {
    let kv = labkit::services::redis();
    let rt = labkit::wait::runtime(0);
    rt.block_on(async {
        let q = Quota::new(5, HOUR);
        let a = redis_limiter(&kv.url, &kv.prefix, q).await;
        let b = redis_limiter(&kv.url, &kv.prefix, q).await;
        let other = redis_limiter(&kv.url, &format!("{}other:", kv.prefix), q).await;
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(rl(&a, "k").await);
        }
        for _ in 0..4 {
            got.push(rl(&b, "k").await);
        }
        for _ in 0..6 {
            got.push(rl(&other, "k").await);
        }
        let pattern: String = got.iter().map(|d| if d.is_allowed() { 'A' } else { 'D' }).collect();
        same(
            "burst 5, interval 1 h; limiter a checked \"k\" 3 times, limiter b (same URL and prefix) 4 times, a limiter on another prefix 6 times",
            "AAA AADD AAAAAD",
            &format!("{} {} {}", &pattern[..3], &pattern[3..7], &pattern[7..]),
            "the bucket lives in Redis under prefix + key, nothing of it in the process",
        );
    });
}

// Checks in flight at once, all sent before any answer is read, are
// admitted exactly `burst` times: the read, the decision and the write
// must be one step in Redis (a script), not a GET then a SET.
#[test]
fn test_17_concurrent_checks_on_redis_admit_exactly_the_burst() {
    let kv = labkit::services::redis();
    // One thread: every check below sends its first command before any
    // reply is read, so a GET-then-SET limiter reads the same count in all.
    let rt = labkit::wait::runtime(0);
    rt.block_on(async {
        let a = redis_limiter(&kv.url, &kv.prefix, Quota::new(10, HOUR)).await;
        let b = redis_limiter(&kv.url, &kv.prefix, Quota::new(10, HOUR)).await;
        let mut all = Vec::new();
        for i in 0..100 {
            let l = if i % 2 == 0 { a.clone() } else { b.clone() };
            all.push(async move { l.check("hot").await });
        }
        let results = within_async(Duration::from_secs(10), "100 RedisLimiter::check(\"hot\") at once", futures::future::join_all(all)).await;
        let mut decisions = Vec::new();
        for r in results {
            match r {
                Ok(d) => decisions.push(d),
                Err(e) => Report::new("100 checks at once").got(format!("an error: {e}")).fail(),
            }
        }
        same(
            "burst 10, interval 1 h; two limiters on one prefix, 100 checks of \"hot\" in flight at once; counted Allowed",
            10,
            allowed(&decisions),
            "is the whole read-decide-write one EVAL? A GET, then a SET from the process, lets every check read the same tokens",
        );
    });
}

// The Redis limiter refills with Redis's clock: after the burst, a token
// comes back within a few intervals of real time, `retry_after` is never
// more than one interval (nor zero), and an idle key refills to the burst,
// not past it.
#[test]
fn test_18_the_redis_limiter_refills_on_redis_time() {
    let kv = labkit::services::redis();
    let rt = labkit::wait::runtime(0);
    rt.block_on(async {
        let interval = Duration::from_millis(200);
        let l = redis_limiter(&kv.url, &kv.prefix, Quota::new(1, interval)).await;
        let first = rl(&l, "k").await;
        same("burst 1, interval 200 ms; checked once", "A", &show(&first), "a new bucket is full");
        // Real time: Redis's clock cannot be paused. A deadline-bounded
        // poll, each check a real request.
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut seen = Vec::new();
        loop {
            let d = rl(&l, "k").await;
            if let Decision::Denied { retry_after } = d {
                Report::new("burst 1, interval 200 ms; checked again until allowed")
                    .expected("every denial's retry_after in (0, 200 ms]")
                    .got(show(&d))
                    .hint("retry_after is the time until the next token: at most one interval, and not zero (it is in microseconds from the script?)")
                    .check(!retry_after.is_zero() && retry_after <= interval);
            }
            seen.push(d);
            if d.is_allowed() {
                break;
            }
            if tokio::time::Instant::now() >= until {
                Report::new("burst 1, interval 200 ms; used the token, then checked until allowed")
                    .expected("Allowed within 5 s (a token per 200 ms)")
                    .got(format!("{} denials, the last {}", seen.len(), show(&d)))
                    .hint("does the script refill from Redis's TIME (seconds and microseconds)? are the units the same on both sides?")
                    .fail();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Idle for longer than the burst takes to refill: still only the
        // burst. Waiting is a poll of Redis's own clock (it cannot be
        // paused); the three checks after it take a few milliseconds, far
        // under the 1 s it would take to earn another token meanwhile.
        let l = redis_limiter(&kv.url, &kv.prefix, Quota::new(2, SEC)).await;
        let start = redis_time(&kv.url).await;
        let used = [rl(&l, "idle").await, rl(&l, "idle").await];
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        while redis_time(&kv.url).await < start + Duration::from_millis(3500) {
            if tokio::time::Instant::now() >= until {
                Report::new("waited for Redis's TIME to move 3.5 s on").got("it did not within 10 s").fail();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let after = [rl(&l, "idle").await, rl(&l, "idle").await, rl(&l, "idle").await];
        let pattern: String = used.iter().chain(&after).map(|d| if d.is_allowed() { 'A' } else { 'D' }).collect();
        same(
            "burst 2, interval 1 s; checked a new key twice, waited 3.5 s of Redis time, checked 3 times",
            "AA AAD",
            &format!("{} {}", &pattern[..2], &pattern[2..]),
            "an idle bucket fills up to the burst and no further: in the GCRA, a theoretical arrival time in the past counts as now",
        );
    });
}

/// Redis's clock (`TIME`), as the time since 1970.
async fn redis_time(url: &str) -> Duration {
    let client = redis::Client::open(url).expect("a Redis URL");
    let mut conn = within_async(
        CALL,
        "the test's own Redis connection",
        client.get_multiplexed_async_connection(),
    )
    .await
    .expect("the test connects to Redis");
    let (s, us): (u64, u64) = redis::cmd("TIME")
        .query_async(&mut conn)
        .await
        .expect("TIME");
    Duration::from_secs(s) + Duration::from_micros(us)
}

/// The role of the two server processes of test 19: an axum app with the
/// Redis limiter behind the layer, on 127.0.0.1:0, keyed by `x-key`.
#[test]
#[ignore = "a child process of test_19"]
fn role_server() {
    let url = role_param("REDIS_URL");
    let prefix = role_param("PREFIX");
    let burst: u32 = role_param("BURST").parse().expect("BURST");
    let rt = labkit::wait::runtime(2);
    let limiter = rt.block_on(redis_limiter(&url, &prefix, Quota::new(burst, HOUR)));
    let (addr, _hits) = serve(&rt, Arc::new(limiter));
    println!("listening on {addr}");
    rt.block_on(std::future::pending::<()>());
}

fn start_server(kv: &labkit::services::TestRedis, burst: u32) -> (Session, SocketAddr) {
    let burst = burst.to_string();
    let mut s = Session::start_role(
        "role_server",
        &[
            ("REDIS_URL", &kv.url),
            ("PREFIX", &kv.prefix),
            ("BURST", &burst),
        ],
    );
    let (_, line) = s.read_until(
        "`listening on <addr>`",
        |l| l.starts_with("listening on "),
        Duration::from_secs(20),
    );
    let addr = line["listening on ".len()..].parse().expect("an address");
    (s, addr)
}

// Two server processes sharing one Redis admit exactly the limit between
// them: one after the other, and with many requests at both at once.
#[test]
fn test_19_two_servers_sharing_redis_admit_exactly_the_limit() {
    let kv = labkit::services::redis();
    let (s1, a1) = start_server(&kv, 40);
    let (s2, a2) = start_server(&kv, 40);
    let client = labkit::http::client();
    let first: Vec<u16> = (0..25).map(|_| hit(&client, a1, "seq").0).collect();
    let second: Vec<u16> = (0..20).map(|_| hit(&client, a2, "seq").0).collect();
    let ok = |v: &[u16]| v.iter().filter(|s| **s == 200).count();
    let report = |r: Report| {
        r.quote("server 1 (stderr)", s1.stderr())
            .quote("server 2 (stderr)", s2.stderr())
    };
    report(
        Report::new("two servers, one Redis prefix, burst 40 per hour; sent 25 requests as \"seq\" to server 1, then 20 to server 2")
            .expected("25 × 200 from server 1, then 15 × 200 and 5 × 429 from server 2")
            .got(format!("server 1: {first:?}\nserver 2: {second:?}"))
            .hint("the two processes must share one bucket in Redis"),
    )
    .check(ok(&first) == 25 && ok(&second) == 15 && second[..15].iter().all(|s| *s == 200));
    // Both at once: 4 threads per server, 30 requests each.
    let counts = within(
        Duration::from_secs(20),
        "240 requests to two servers at once",
        move || {
            let threads: Vec<_> = (0..8)
                .map(|t| {
                    let addr = if t % 2 == 0 { a1 } else { a2 };
                    std::thread::spawn(move || {
                        let client = labkit::http::client();
                        let mut n = (0, 0);
                        for _ in 0..30 {
                            match hit(&client, addr, "race").0 {
                                200 => n.0 += 1,
                                429 => n.1 += 1,
                                other => panic!("[test] got status {other} from {addr}"),
                            }
                        }
                        n
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().expect("a client thread"))
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
        },
    );
    report(
        Report::new("then 8 client threads, 4 per server, sent 30 requests each as \"race\", all at once")
            .expected("(200s, 429s) = (40, 200)")
            .got(format!("{counts:?}"))
            .hint("a read and a write in two round trips let both servers spend the same tokens: make it one script"),
    )
    .check(counts == (40, 200));
}
