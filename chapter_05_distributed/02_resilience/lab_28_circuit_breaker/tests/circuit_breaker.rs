//! Grader for lab 28: a circuit breaker, and retry with backoff.
//!
//! Tests 01-08 drive the breaker around a fake service that counts the
//! calls reaching it, under a manual clock the test moves by hand: no
//! sleeps, every transition exact. Concurrent probes are futures the test
//! polls itself (`futures::poll!`), so "two probes in flight" is a fact,
//! not a race.
//!
//! Tests 09-13 drive `Retry` under `tokio::time::pause()`: a sleep of 100
//! ms takes no real time and the paused clock moves by exactly 100 ms, so
//! the test records `Instant::now()` at each attempt and checks the gaps.
//!
//! Test 14 wraps a real HTTP upstream (labkit's) behind labkit's fault
//! proxy and checks the breaker opens on timeouts, fails fast without
//! opening connections, reopens on resets and closes once traffic passes.

use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use circuit_breaker::{
    BreakerError, CircuitBreaker, Clock, Config, Retry, RetryBudget, RetryPolicy, State,
};
use futures::poll;
use labkit::Report;
use labkit::faults::{Fault, FaultProxy};
use labkit::report::same;
use labkit::upstream::Upstream;
use labkit::wait::within_async;

/// The deadline on each call (real time for 01-08, paused time for 09-13).
const CALL: Duration = Duration::from_secs(5);
const COOLDOWN: Duration = Duration::from_secs(10);
const MS: Duration = Duration::from_millis(1);

// ---------------------------------------------------------------------------
// A manual clock and a counting fake service.

struct ManualClock {
    base: Instant,
    offset: Mutex<Duration>,
}

impl ManualClock {
    fn new() -> Arc<ManualClock> {
        Arc::new(ManualClock {
            base: Instant::now(),
            offset: Mutex::new(Duration::ZERO),
        })
    }

    fn advance(&self, d: Duration) {
        *self.offset.lock().unwrap() += d;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + *self.offset.lock().unwrap()
    }
}

fn breaker(threshold: u32, probes: u32) -> (Arc<ManualClock>, CircuitBreaker) {
    let clock = ManualClock::new();
    let config = Config {
        failure_threshold: threshold,
        cooldown: COOLDOWN,
        half_open_probes: probes,
    };
    (clock.clone(), CircuitBreaker::with_clock(config, clock))
}

/// What a call returned, for messages and comparisons.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Got {
    Ok,
    Open,
    Inner,
}

fn got<T, E>(r: &Result<T, BreakerError<E>>) -> Got {
    match r {
        Ok(_) => Got::Ok,
        Err(BreakerError::Open) => Got::Open,
        Err(BreakerError::Inner(_)) => Got::Inner,
    }
}

/// One call through the breaker to a fake that succeeds or fails at once
/// and counts in `calls` when it is reached.
async fn hit(b: &CircuitBreaker, calls: &AtomicUsize, ok: bool) -> Got {
    let r = within_async(
        CALL,
        "breaker.call(service)",
        b.call(|| async move {
            calls.fetch_add(1, Ordering::SeqCst);
            if ok { Ok(1u32) } else { Err("service failed") }
        }),
    )
    .await;
    got(&r)
}

/// Opens a breaker of threshold `t` with `t` failures.
async fn open(b: &CircuitBreaker, calls: &AtomicUsize, t: u32) {
    for _ in 0..t {
        hit(b, calls, false).await;
    }
    same(
        &format!("failed {t} calls in a row (failure_threshold = {t}), then asked breaker.state()"),
        State::Open,
        b.state(),
        "does the breaker open when the failure count reaches the threshold?",
    );
}

// ---------------------------------------------------------------------------
// The breaker.

// Closed passes calls through, returns the service's error as Inner, and a
// success resets the count: a breaker that counts failures in total opens
// on a healthy service that fails now and then.
#[tokio::test]
async fn test_01_closed_passes_calls_and_a_success_resets_the_count() {
    let (_clock, b) = breaker(3, 1);
    let calls = AtomicUsize::new(0);
    let mut seen = vec![];
    for ok in [false, false, true, false, false, true, false, false] {
        seen.push(hit(&b, &calls, ok).await);
    }
    use Got::*;
    same(
        "with failure_threshold = 3, made calls that failed, failed, succeeded, failed, failed, succeeded, failed, failed",
        vec![Inner, Inner, Ok, Inner, Inner, Ok, Inner, Inner],
        seen,
        "closed passes every call to the service; its error comes back as BreakerError::Inner; does a success reset the failure count?",
    );
    same(
        "counted the calls that reached the service",
        8,
        calls.load(Ordering::SeqCst),
        "a closed breaker calls the service every time",
    );
    same(
        "asked breaker.state() (never 3 failures in a row)",
        State::Closed,
        b.state(),
        "only consecutive failures count: a success resets the count",
    );
}

// The threshold is exact: the breaker is closed after threshold - 1
// failures and open right after the threshold-th, which itself reached the
// service and comes back as Inner.
#[tokio::test]
async fn test_02_opens_exactly_at_the_failure_threshold() {
    for t in [1u32, 4] {
        let (_clock, b) = breaker(t, 1);
        let calls = AtomicUsize::new(0);
        for i in 1..t {
            hit(&b, &calls, false).await;
            same(
                &format!("with failure_threshold = {t}, failed {i} call(s), asked breaker.state()"),
                State::Closed,
                b.state(),
                "does the breaker open one failure early (> vs >=)?",
            );
        }
        let last = hit(&b, &calls, false).await;
        same(
            &format!("made failure number {t} (failure_threshold = {t})"),
            Got::Inner,
            last,
            "the call that trips the breaker was admitted while closed: it reaches the service and returns its error",
        );
        same(
            &format!("after failure number {t} (failure_threshold = {t}), asked breaker.state()"),
            State::Open,
            b.state(),
            "does the breaker open one failure late? It opens when the count reaches the threshold",
        );
    }
}

// Open fails fast: Err(Open) at once and the service is not called, until
// the whole cooldown has passed (one millisecond short is still open).
#[tokio::test]
async fn test_03_open_fails_fast_without_calling_the_service() {
    let (clock, b) = breaker(2, 1);
    let calls = AtomicUsize::new(0);
    open(&b, &calls, 2).await;
    let before = calls.load(Ordering::SeqCst);
    for _ in 0..10 {
        same(
            "called through an open breaker",
            Got::Open,
            hit(&b, &calls, true).await,
            "an open breaker returns BreakerError::Open without calling the service",
        );
    }
    clock.advance(COOLDOWN - MS);
    same(
        "moved the clock to 1 ms before the cooldown ends, called again",
        Got::Open,
        hit(&b, &calls, true).await,
        "the breaker stays open for the whole cooldown, counted from the failure that opened it",
    );
    same(
        "counted the calls that reached the service while open",
        0,
        calls.load(Ordering::SeqCst) - before,
        "an open breaker must not call the inner function at all",
    );
    clock.advance(MS);
    same(
        "moved the clock to exactly the end of the cooldown, asked breaker.state()",
        State::HalfOpen,
        b.state(),
        "the breaker is half-open once now >= opened_at + cooldown",
    );
}

// Half-open admits at most half_open_probes calls in flight; the rest fail
// fast. A breaker with no limit sends the whole backlog at a service that
// is just coming back.
#[tokio::test]
async fn test_04_half_open_admits_a_limited_number_of_probes() {
    let (clock, b) = breaker(1, 2);
    let calls = AtomicUsize::new(0);
    open(&b, &calls, 1).await;
    clock.advance(COOLDOWN);
    let before = calls.load(Ordering::SeqCst);
    let (tx1, rx1) = tokio::sync::oneshot::channel::<()>();
    let (_tx2, rx2) = tokio::sync::oneshot::channel::<()>();
    let c = &calls;
    let probe = |rx: tokio::sync::oneshot::Receiver<()>| {
        b.call(move || async move {
            c.fetch_add(1, Ordering::SeqCst);
            let _ = rx.await;
            Ok::<u32, &str>(1)
        })
    };
    let mut p1 = pin!(probe(rx1));
    let mut p2 = pin!(probe(rx2));
    let r1 = poll!(p1.as_mut());
    let r2 = poll!(p2.as_mut());
    if r1.is_ready() || r2.is_ready() {
        Report::new(
            "with half_open_probes = 2, after the cooldown, started two probes whose service waits",
        )
        .expected("both to be admitted and waiting on the service")
        .got("at least one returned at once")
        .hint("half-open admits up to half_open_probes calls")
        .fail();
    }
    for i in 0..5 {
        same(
            &format!("with two probes in flight, made call {}", i + 1),
            Got::Open,
            hit(&b, &calls, true).await,
            "half-open admits at most half_open_probes calls in flight; the others fail fast with Open",
        );
    }
    same(
        "counted the calls that reached the service in half-open",
        2,
        calls.load(Ordering::SeqCst) - before,
        "only the probes may reach the service",
    );
    tx1.send(()).unwrap();
    let r1 = within_async(CALL, "the first probe", p1).await;
    same(
        "let the first probe succeed",
        Got::Ok,
        got(&r1),
        "the probe's service returned Ok",
    );
    same(
        "after a probe succeeded, asked breaker.state()",
        State::Closed,
        b.state(),
        "one probe success closes the breaker",
    );
}

// A probe's success closes the breaker for good: calls pass again and the
// failure count starts from zero.
#[tokio::test]
async fn test_05_a_probe_success_closes_the_breaker() {
    let (clock, b) = breaker(3, 1);
    let calls = AtomicUsize::new(0);
    open(&b, &calls, 3).await;
    clock.advance(COOLDOWN);
    same(
        "after the cooldown, sent a probe that succeeds",
        Got::Ok,
        hit(&b, &calls, true).await,
        "half-open admits a probe",
    );
    same(
        "after the probe succeeded, asked breaker.state()",
        State::Closed,
        b.state(),
        "does a probe success leave half-open? It closes the breaker",
    );
    let before = calls.load(Ordering::SeqCst);
    let mut seen = vec![];
    for ok in [true, true, false, false, true] {
        seen.push(hit(&b, &calls, ok).await);
    }
    use Got::*;
    same(
        "after closing, made calls ok, ok, fail, fail, ok",
        vec![Ok, Ok, Inner, Inner, Ok],
        seen,
        "a closed breaker passes calls; two failures are below the threshold of 3 (is the count reset on closing?)",
    );
    same(
        "counted the calls that reached the service",
        5,
        calls.load(Ordering::SeqCst) - before,
        "closed calls all reach the service",
    );
    same(
        "asked breaker.state()",
        State::Closed,
        b.state(),
        "still closed",
    );
}

// A failed probe reopens the breaker and the cooldown starts again from
// that failure: without the restart, the breaker goes half-open at once
// and hammers the service with probes.
#[tokio::test]
async fn test_06_a_probe_failure_reopens_and_restarts_the_cooldown() {
    let (clock, b) = breaker(2, 1);
    let calls = AtomicUsize::new(0);
    open(&b, &calls, 2).await;
    clock.advance(COOLDOWN);
    same(
        "after the cooldown, sent a probe that fails",
        Got::Inner,
        hit(&b, &calls, false).await,
        "half-open admits a probe; its error comes back as Inner",
    );
    same(
        "after the probe failed, asked breaker.state()",
        State::Open,
        b.state(),
        "one probe failure opens the breaker again",
    );
    clock.advance(COOLDOWN - MS);
    let before = calls.load(Ordering::SeqCst);
    same(
        "moved the clock to 1 ms before the new cooldown ends, called",
        Got::Open,
        hit(&b, &calls, true).await,
        "the cooldown restarts when the probe fails, not from the first opening",
    );
    same(
        "counted calls that reached the service",
        0,
        calls.load(Ordering::SeqCst) - before,
        "open calls must not reach the service",
    );
    clock.advance(MS);
    same(
        "moved the clock to the end of the new cooldown, sent a probe that succeeds",
        Got::Ok,
        hit(&b, &calls, true).await,
        "after the new cooldown the breaker is half-open again",
    );
    same(
        "asked breaker.state()",
        State::Closed,
        b.state(),
        "a probe success closes the breaker",
    );
}

// A probe whose future is dropped (a timeout around call, a cancelled
// request) gives its slot back; otherwise the breaker refuses forever.
#[tokio::test]
async fn test_07_a_cancelled_probe_gives_its_slot_back() {
    let (clock, b) = breaker(1, 1);
    let calls = AtomicUsize::new(0);
    open(&b, &calls, 1).await;
    clock.advance(COOLDOWN);
    {
        let c = &calls;
        let mut p = pin!(b.call(move || async move {
            c.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Result<u32, &str>>().await
        }));
        assert!(
            poll!(p.as_mut()).is_pending(),
            "[test] the probe's service never answers"
        );
        same(
            "with the only probe in flight, made a call",
            Got::Open,
            hit(&b, &calls, true).await,
            "half_open_probes = 1: a second call fails fast",
        );
    } // the probe is dropped here, unfinished
    same(
        "dropped the unfinished probe, made a call that succeeds",
        Got::Ok,
        hit(&b, &calls, true).await,
        "a dropped probe must give its slot back (a guard with Drop); did it count as still in flight?",
    );
    same(
        "asked breaker.state()",
        State::Closed,
        b.state(),
        "the new probe's success closes the breaker",
    );
}

// A result counts only in the state it was admitted in: a slow call that
// started while closed must not close an opened breaker when it succeeds
// (it is not a probe), nor reopen a breaker that has closed since when it
// fails.
#[tokio::test]
async fn test_08_a_stale_result_does_not_count() {
    let (clock, b) = breaker(1, 1);
    let calls = AtomicUsize::new(0);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let mut slow = pin!(b.call(move || async move {
        let _ = rx.await;
        Ok::<u32, &str>(1)
    }));
    assert!(
        poll!(slow.as_mut()).is_pending(),
        "[test] the slow call waits"
    );
    open(&b, &calls, 1).await;
    clock.advance(COOLDOWN);
    tx.send(()).unwrap();
    let r = within_async(CALL, "the slow call", slow).await;
    same(
        "started a slow call while closed, opened the breaker, waited the cooldown, then let the slow call succeed",
        Got::Ok,
        got(&r),
        "its service returned Ok",
    );
    same(
        "asked breaker.state()",
        State::HalfOpen,
        b.state(),
        "a call admitted while closed is not a probe: its late success must not close the breaker (remember the state, or a generation, each call was admitted in)",
    );

    // The other way round: a slow failure from before a close.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (clock, b) = breaker(1, 1);
    let mut slow = pin!(b.call(move || async move {
        let _ = rx.await;
        Err::<u32, &str>("late failure")
    }));
    assert!(
        poll!(slow.as_mut()).is_pending(),
        "[test] the slow call waits"
    );
    open(&b, &calls, 1).await;
    clock.advance(COOLDOWN);
    same(
        "after the cooldown, sent a probe that succeeds",
        Got::Ok,
        hit(&b, &calls, true).await,
        "half-open admits a probe",
    );
    tx.send(()).unwrap();
    let r = within_async(CALL, "the slow call", slow).await;
    same(
        "then let the slow call (started before the breaker opened) fail",
        Got::Inner,
        got(&r),
        "its service returned Err",
    );
    same(
        "asked breaker.state() (failure_threshold = 1)",
        State::Closed,
        b.state(),
        "a failure from a call admitted before the breaker opened and closed again is stale: it must not count",
    );
}

// ---------------------------------------------------------------------------
// Retry.

fn policy(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        base: Duration::from_millis(100),
        cap: Duration::from_millis(1000),
    }
}

/// Runs `retry` against a service that fails `fails` times (with the
/// given error) and then succeeds; returns the result and the paused-time
/// gaps between attempts in ms.
async fn attempts(
    retry: &mut Retry,
    fails: usize,
    error: &'static str,
) -> (Result<u32, &'static str>, Vec<u128>) {
    let times = Mutex::new(vec![]);
    let r = within_async(
        Duration::from_secs(3600),
        "retry.run(..)",
        retry.run(
            |e: &&str| *e == "retryable",
            || {
                let mut t = times.lock().unwrap();
                t.push(tokio::time::Instant::now());
                let n = t.len();
                async move { if n > fails { Ok(n as u32) } else { Err(error) } }
            },
        ),
    )
    .await;
    let t = times.into_inner().unwrap();
    let gaps = t.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
    (r, gaps)
}

// Delays grow as base * 2^n up to the cap, the jitter function gets that
// ceiling and its answer is the sleep, and there are exactly max_retries
// retries. The jitter here returns half the ceiling, so a Retry that
// ignores it is caught too.
#[tokio::test(start_paused = true)]
async fn test_09_backoff_doubles_up_to_the_cap() {
    let seen = Arc::new(Mutex::new(vec![]));
    let s = seen.clone();
    let mut retry = Retry::with_jitter(policy(6), move |c| {
        s.lock().unwrap().push(c.as_millis());
        c / 2
    });
    let (r, gaps) = attempts(&mut retry, usize::MAX, "retryable").await;
    same(
        "ran a service that always fails (max_retries = 6)",
        Err("retryable"),
        r,
        "after the last retry, run returns the last error",
    );
    same(
        "recorded the ceilings passed to the jitter function (base 100 ms, cap 1000 ms)",
        vec![100, 200, 400, 800, 1000, 1000],
        seen.lock().unwrap().clone(),
        "ceiling(n) = min(cap, base * 2^n), n counted from 0; is the cap applied?",
    );
    same(
        "measured the paused-time gaps between the 7 attempts (jitter returns ceiling / 2)",
        vec![50, 100, 200, 400, 500, 500],
        gaps,
        "sleep exactly jitter(ceiling(n)) before retry n; 1 + max_retries attempts in all",
    );
}

// A success ends the run with its value; a non-retryable error ends it at
// once, with no sleep and no second call.
#[tokio::test(start_paused = true)]
async fn test_10_success_and_non_retryable_errors_stop_at_once() {
    let mut retry = Retry::with_jitter(policy(5), |c| c);
    let (r, gaps) = attempts(&mut retry, 2, "retryable").await;
    same(
        "ran a service that fails twice then succeeds",
        Ok(3),
        r,
        "run returns the first Ok",
    );
    same(
        "measured the gaps between attempts",
        vec![100, 200],
        gaps,
        "no retry after a success",
    );
    let start = tokio::time::Instant::now();
    let (r, gaps) = attempts(&mut retry, usize::MAX, "fatal").await;
    same(
        "ran a service whose error is not retryable",
        Err("fatal"),
        r,
        "return that error",
    );
    same(
        "counted the attempts after a non-retryable error",
        0,
        gaps.len(),
        "a non-retryable error (retryable(&e) == false) must not be retried",
    );
    same(
        "measured the time the run took",
        Duration::ZERO,
        start.elapsed(),
        "no sleep after a non-retryable error",
    );
}

// ceiling(n) never overflows: huge n or a huge base give the cap.
#[test]
fn test_11_ceiling_saturates_at_the_cap() {
    let p = RetryPolicy {
        max_retries: 0,
        base: Duration::from_secs(u64::MAX / 4),
        cap: Duration::from_secs(60),
    };
    let got: Vec<Duration> = [0u32, 1, 2, 40, 64, 200, u32::MAX]
        .iter()
        .map(|&n| p.ceiling(n))
        .collect();
    same(
        "computed ceiling(n) for n = 0, 1, 2, 40, 64, 200, u32::MAX with a huge base and cap 60 s",
        vec![Duration::from_secs(60); 7],
        got,
        "min(cap, base * 2^n) must not overflow: use checked/saturating arithmetic",
    );
    let p = RetryPolicy {
        max_retries: 0,
        base: Duration::from_millis(3),
        cap: Duration::MAX,
    };
    same(
        "computed ceiling(10) with base 3 ms and no cap",
        Duration::from_millis(3 * 1024),
        p.ceiling(10),
        "base * 2^n",
    );
    same(
        "computed ceiling(100) with base 3 ms and cap Duration::MAX",
        Duration::MAX,
        p.ceiling(100),
        "saturate instead of overflowing or panicking",
    );
}

// Seeded full jitter: every delay is in [0, ceiling(n)], the same seed
// gives the same delays, other seeds others, and the delays cover the
// whole range (so "equal jitter" ceiling/2 + random(ceiling/2), or no
// jitter at all, is caught).
#[test]
fn test_12_seeded_full_jitter_is_uniform_over_the_whole_range() {
    let p = RetryPolicy {
        max_retries: 10,
        base: Duration::from_millis(10),
        cap: Duration::from_secs(1),
    };
    let draw = |seed: u64| {
        let mut r = Retry::new(p, seed);
        (0..400u32).map(|i| r.delay(i % 8)).collect::<Vec<_>>()
    };
    let a = draw(7);
    for (i, d) in a.iter().enumerate() {
        let c = p.ceiling(i as u32 % 8);
        if *d > c {
            Report::new(format!(
                "drew delay {i} (retry {}) from Retry::new(policy, 7)",
                i % 8
            ))
            .expected(format!("at most ceiling = {c:?}"))
            .got(format!("{d:?}"))
            .hint("full jitter is random(0..=ceiling(n))")
            .fail();
        }
    }
    same(
        "drew 400 delays twice with seed 7",
        true,
        a == draw(7),
        "the same seed must give the same delays (seed a StdRng)",
    );
    same(
        "drew 400 delays with seeds 7 and 8",
        false,
        a == draw(8),
        "different seeds must give different delays",
    );
    let c = p.ceiling(6).as_nanos();
    let mut r = Retry::new(p, 42);
    let d: Vec<u128> = (0..1000).map(|_| r.delay(6).as_nanos()).collect();
    let low = d.iter().filter(|&&x| x < c / 4).count();
    let high = d.iter().filter(|&&x| x > 3 * c / 4).count();
    if low < 100 || high < 100 {
        Report::new("drew 1000 delays for retry 6 (ceiling 640 ms) with seed 42")
            .expected("about a quarter below 160 ms and a quarter above 480 ms (uniform over 0..=640 ms)")
            .got(format!("{low} below 160 ms, {high} above 480 ms"))
            .hint("full jitter: uniform over the whole of 0..=ceiling, not ceiling/2 + random(ceiling/2), not a fixed value")
            .fail();
    }
}

// The retry budget: each retry spends a token, an empty budget means no
// retry, every calls_per_token-th run earns one back, and tokens are
// capped at the capacity.
#[tokio::test(start_paused = true)]
async fn test_13_the_retry_budget_limits_retries() {
    let budget = Arc::new(RetryBudget::new(2, 5));
    let mut retry = Retry::with_jitter(policy(5), |c| c).with_budget(budget.clone());
    let mut counts = vec![];
    for _ in 0..5 {
        let (_, gaps) = attempts(&mut retry, usize::MAX, "retryable").await;
        counts.push(gaps.len());
    }
    same(
        "with RetryBudget::new(2, 5) and max_retries 5, ran 5 runs against a service that always fails; counted retries per run",
        vec![2, 0, 0, 0, 1],
        counts,
        "each retry spends a token; an empty budget returns the last error; the 5th run earns a token back",
    );

    let budget = Arc::new(RetryBudget::new(2, 5));
    let mut retry = Retry::with_jitter(policy(5), |c| c).with_budget(budget.clone());
    for _ in 0..9 {
        let _ = attempts(&mut retry, 0, "retryable").await;
    }
    let (_, gaps) = attempts(&mut retry, usize::MAX, "retryable").await;
    same(
        "with a fresh RetryBudget::new(2, 5), ran 9 successful runs, then 1 that always fails (run 10 earns a token); counted its retries",
        2,
        gaps.len(),
        "tokens earned back are capped at the capacity (2)",
    );
}

// ---------------------------------------------------------------------------
// A real upstream behind the fault proxy.

// A breaker around an HTTP client: blackholed requests time out and open
// it; then calls fail fast without opening a single connection; after the
// cooldown a probe that is reset reopens it; after the next, a probe that
// passes closes it and traffic flows again.
#[test]
fn test_14_a_real_upstream_behind_the_fault_proxy() {
    labkit::http::install_ring();
    let upstream = Upstream::start("up");
    let proxy = FaultProxy::start(upstream.addr());
    let url = format!("http://{}/item", proxy.addr());
    let rt = labkit::wait::runtime(0);
    rt.block_on(async {
        // Each request opens its own connection, so each shows in accepted().
        // The 200 ms timeout is real time: a blackhole answers nothing.
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_millis(200))
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let (clock, b) = breaker(3, 1);
        let get = || async {
            let r = client.get(&url).send().await?;
            r.error_for_status()?.text().await
        };
        let step = |what: &str, want: Got, r: Got| {
            same(
                what,
                want,
                r,
                "see the test's comment for the sequence of faults",
            );
        };
        step(
            "GET through a passing proxy",
            Got::Ok,
            got(&b.call(get).await),
        );
        proxy.set(Fault::Blackhole);
        for i in 1..=3 {
            step(
                &format!("GET {i} through a blackholed proxy (200 ms client timeout)"),
                Got::Inner,
                got(&b.call(get).await),
            );
        }
        same(
            "after 3 timeouts (failure_threshold = 3), asked breaker.state()",
            State::Open,
            b.state(),
            "timeouts are failures",
        );
        let accepted = proxy.accepted();
        for i in 1..=10 {
            step(
                &format!("GET {i} through the open breaker"),
                Got::Open,
                got(&b.call(get).await),
            );
        }
        same(
            "counted connections the proxy accepted during 10 calls on an open breaker",
            accepted,
            proxy.accepted(),
            "an open breaker must not call the service: no connection at all",
        );
        clock.advance(COOLDOWN);
        proxy.set(Fault::Reset);
        step(
            "after the cooldown, sent a probe through a resetting proxy",
            Got::Inner,
            got(&b.call(get).await),
        );
        same(
            "after the probe was reset, asked breaker.state()",
            State::Open,
            b.state(),
            "a failed probe reopens",
        );
        if proxy.accepted() <= accepted {
            Report::new("sent a probe after the cooldown")
                .expected("it to reach the proxy")
                .got("no new connection")
                .hint("half-open admits a probe")
                .fail();
        }
        clock.advance(COOLDOWN);
        proxy.set(Fault::Pass);
        let before = upstream.requests().len();
        step(
            "after the next cooldown, sent a probe through a passing proxy",
            Got::Ok,
            got(&b.call(get).await),
        );
        same(
            "asked breaker.state()",
            State::Closed,
            b.state(),
            "a probe success closes the breaker",
        );
        for i in 1..=3 {
            step(
                &format!("GET {i} after closing"),
                Got::Ok,
                got(&b.call(get).await),
            );
        }
        same(
            "counted requests the upstream received since the proxy passed again",
            4,
            upstream.requests().len() - before,
            "a closed breaker passes every call",
        );
    });
}
