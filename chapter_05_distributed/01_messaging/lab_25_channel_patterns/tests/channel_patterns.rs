//! Grader for lab 25: channel patterns.
//!
//! Every test runs on its own current-thread runtime with tokio's clock
//! paused (`#[tokio::test(start_paused = true)]`). Two things follow:
//!
//! - Time is exact and free: a job that "takes" 5 s takes no real time, and
//!   a timeout is checked to the millisecond. A call that hangs fails at
//!   once, because paused time jumps to the test's deadline when every task
//!   is idle.
//! - "Every task has done all it can" is an event, not a guess: paused time
//!   moves only when no task can run, so [`quiet`] (a 1 ms sleep) returns
//!   exactly when everything else is blocked. That is how the tests see
//!   backpressure deterministically: hold the workers on a gate (a
//!   semaphore the test fills), let everything settle, count what was
//!   taken, and check the producer is still waiting.
//!
//! "No task left running" is checked two ways: each job, or the state an
//! actor owns, holds a guard whose drop is counted (a future that is
//! cancelled drops its locals), and the runtime's own count of live tasks
//! (`RuntimeMetrics::num_alive_tasks`) must be back to 0.

use std::collections::BTreeMap;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use channel_patterns::{
    CallError, CancelToken, Stopped, WorkerPool, fan_in, fan_out, join_with_timeout, spawn_actor,
    stage,
};
use futures::FutureExt;
use labkit::Report;
use labkit::report::same;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

/// The deadline on each call under test, in paused time: it passes at once
/// when the call can never finish.
const CALL: Duration = Duration::from_secs(600);

// ---------------------------------------------------------------------------
// Helpers.

/// Lets every other task run until all of them wait: paused time advances
/// (and this sleep ends) only when no task can make progress.
async fn quiet() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// Tasks alive on this test's runtime (the test's own body is not one).
fn tasks_alive() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Awaits `fut`, which must finish; on a hang, fails with `hint`.
async fn done<F: Future>(what: &str, hint: &str, fut: F) -> F::Output {
    match tokio::time::timeout(CALL, fut).await {
        Ok(v) => v,
        Err(_) => Report::new(format!("called {what}"))
            .expected("it to finish")
            .got(format!(
                "it was still waiting after {CALL:?} (of paused time) with every task idle: it can never finish"
            ))
            .hint(hint)
            .fail(),
    }
}

/// Receives everything from `rx` until it ends.
async fn collect<T>(rx: &mut mpsc::Receiver<T>, what: &str, hint: &str) -> Vec<T> {
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(CALL, rx.recv()).await {
            Ok(Some(v)) => got.push(v),
            Ok(None) => return got,
            Err(_) => Report::new(format!("received from {what} until it ended"))
                .expected("the channel to end (recv gives None) after the last item")
                .got(format!(
                    "{} items, then it stayed open with every task idle: it never ends",
                    got.len()
                ))
                .hint(hint)
                .fail(),
        }
    }
}

/// A pseudo-random delay per item, so that items finish out of order when
/// they run at once: 0 to 12 ms.
fn jitter(i: u64) -> Duration {
    Duration::from_millis((i * 7 + 3) % 13)
}

/// Counts guards alive: each job or state holds one; a future that is
/// dropped (finished or cancelled) drops it.
#[derive(Clone, Default)]
struct Tracker(Arc<AtomicUsize>);

#[derive(Debug)]
struct Guard(Arc<AtomicUsize>);

impl Tracker {
    fn guard(&self) -> Guard {
        self.0.fetch_add(1, Ordering::SeqCst);
        Guard(Arc::clone(&self.0))
    }
    fn alive(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts calls running at once and the most ever.
#[derive(Clone, Default)]
struct Busy {
    now: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    started: Arc<AtomicUsize>,
}

impl Busy {
    fn enter(&self) -> BusyGuard {
        self.started.fetch_add(1, Ordering::SeqCst);
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(n, Ordering::SeqCst);
        BusyGuard(Arc::clone(&self.now))
    }
    fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }
    fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

struct BusyGuard(Arc<AtomicUsize>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A gate the test opens: `pass` waits for one permit.
#[derive(Clone)]
struct Gate(Arc<Semaphore>);

impl Gate {
    fn closed() -> Gate {
        Gate(Arc::new(Semaphore::new(0)))
    }
    async fn pass(&self) {
        self.0
            .acquire()
            .await
            .expect("the gate is never closed")
            .forget();
    }
    fn open(&self, n: usize) {
        self.0.add_permits(n);
    }
}

/// Checks that every id in `got` appears once and that they are `0..n`.
fn exactly_once(did: &str, n: u64, got: &[u64], hint: &str) {
    let mut counts = BTreeMap::new();
    for id in got {
        *counts.entry(*id).or_insert(0) += 1;
    }
    let twice: Vec<u64> = counts
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(id, _)| *id)
        .collect();
    let missing: Vec<u64> = (0..n).filter(|id| !counts.contains_key(id)).collect();
    let unknown: Vec<u64> = counts.keys().copied().filter(|id| *id >= n).collect();
    if !(twice.is_empty() && missing.is_empty() && unknown.is_empty()) {
        Report::new(did)
            .expected(format!("each of the {n} items exactly once"))
            .got(format!(
                "{} results; more than once: {twice:?}; missing: {missing:?}; not sent at all: {unknown:?}",
                got.len()
            ))
            .hint(hint)
            .fail();
    }
}

/// A channel holding `items`, its sender dropped (so it ends after them).
fn source<T>(items: impl IntoIterator<Item = T>) -> mpsc::Receiver<T> {
    let items: Vec<T> = items.into_iter().collect();
    let (tx, rx) = mpsc::channel(items.len().max(1));
    for item in items {
        assert!(
            tx.try_send(item).is_ok(),
            "the source channel has room for every item"
        );
    }
    rx
}

// ---------------------------------------------------------------------------
// CancelToken.

// A cancel reaches every waiter and every clone, and sticks: a task that
// starts waiting after the cancel must not wait forever.
#[tokio::test(start_paused = true)]
async fn test_01_a_cancel_token_wakes_every_waiter_and_stays_cancelled() {
    let token = CancelToken::new();
    same(
        "made a CancelToken, then called is_cancelled()",
        false,
        token.is_cancelled(),
        "a new token is not cancelled",
    );
    let woken = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let (t, woken) = (token.clone(), Arc::clone(&woken));
        tokio::spawn(async move {
            t.cancelled().await;
            woken.fetch_add(1, Ordering::SeqCst);
        });
    }
    quiet().await;
    same(
        "started 3 tasks waiting in cancelled() on clones of a token nobody cancelled",
        0,
        woken.load(Ordering::SeqCst),
        "cancelled() must wait until cancel() is called",
    );
    token.clone().cancel();
    quiet().await;
    same(
        "called cancel() on a clone, then let the 3 waiting tasks run",
        3,
        woken.load(Ordering::SeqCst),
        "does cancel() wake every task waiting in cancelled(), on every clone?",
    );
    same(
        "called is_cancelled() on the original token after a clone was cancelled",
        true,
        token.is_cancelled(),
        "clones share one state",
    );
    let late = token.clone();
    same(
        "cancelled the token, then polled a new cancelled() once",
        true,
        late.cancelled().now_or_never().is_some(),
        "a token already cancelled must complete cancelled() at once: does it wait for the next change (watch's changed(), Notify::notify_waiters) instead of looking at the current state?",
    );
    token.cancel();
    same(
        "called cancel() a second time, then is_cancelled()",
        true,
        token.is_cancelled(),
        "cancelling twice is harmless",
    );
}

// ---------------------------------------------------------------------------
// Pipeline stages.

// Two stages in a row keep items in order even when each item takes a
// different time, and the end passes down after the last item.
#[tokio::test(start_paused = true)]
async fn test_02_a_pipeline_of_stages_keeps_order_and_ends_after_the_last_item() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let c = Arc::clone(&calls);
    let first = stage(source(0..50u64), 4, move |i| {
        c.lock().unwrap().push(i);
        async move {
            tokio::time::sleep(jitter(i)).await;
            i * 10
        }
    });
    let mut second = stage(first, 4, |v: u64| async move {
        tokio::time::sleep(jitter(v / 10 + 5)).await;
        v + 1
    });
    let got = collect(
        &mut second,
        "stage(stage(source of 0..50, f1), f2)",
        "does the stage drop its output sender once its input has ended (recv gave None), and only then?",
    )
    .await;
    let want: Vec<u64> = (0..50).map(|i| i * 10 + 1).collect();
    same(
        "sent 0..50 through two stages whose functions take 0-12 ms each, item by item",
        want,
        got,
        "a stage must keep order: one item at a time, f awaited before the next (spawning a task per item, or join_all/buffer_unordered, reorders)",
    );
    same(
        "looked at the items the first stage's f was called with",
        (0..50).collect::<Vec<u64>>(),
        calls.lock().unwrap().clone(),
        "f is called once per item, in order",
    );
    quiet().await;
    same(
        "let the pipeline end, then counted the tasks alive on the runtime",
        0,
        tasks_alive(),
        "a stage's task must end when its input ends",
    );
}

// A full output stops the stage from pulling more input: backpressure
// travels upstream instead of piling results up in memory.
#[tokio::test(start_paused = true)]
async fn test_03_a_stage_with_a_full_output_stops_taking_input() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let (tx, rx) = mpsc::channel(100);
    for i in 0..20u64 {
        tx.send(i).await.unwrap();
    }
    drop(tx);
    let mut out = stage(rx, 3, move |i: u64| {
        c.fetch_add(1, Ordering::SeqCst);
        async move { i }
    });
    quiet().await;
    let taken = calls.load(Ordering::SeqCst);
    Report::new("put 20 items in the input, made a stage with an output of capacity 3, read nothing, let it run until idle, counted calls of f")
        .expected("3 or 4 calls (3 results in the full output, at most 1 more waiting to be sent)")
        .got(format!("{taken} calls"))
        .hint(if taken < 3 {
            "does the stage run at all before someone reads its output? it should fill the output first"
        } else {
            "is the output channel bounded by `capacity` (mpsc::channel(capacity), not unbounded_channel or a bigger buffer), and does the stage await send before taking the next item?"
        })
        .check((3..=4).contains(&taken));
    let got = collect(
        &mut out,
        "the stage's output",
        "does the stage end its output after the last item?",
    )
    .await;
    same(
        "then read the whole output",
        (0..20).collect::<Vec<u64>>(),
        got,
        "every item once, in order, after the backpressure released",
    );
}

// A stage whose consumer is gone stops at once and drops its input, so the
// producer above learns it (send fails) instead of feeding a dead pipeline.
#[tokio::test(start_paused = true)]
async fn test_04_a_stage_stops_when_its_output_is_dropped() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let (tx, rx) = mpsc::channel(4);
    let mut out = stage(rx, 4, move |i: u64| {
        c.fetch_add(1, Ordering::SeqCst);
        async move { i + 1 }
    });
    tx.send(1).await.unwrap();
    same(
        "sent 1 into a stage computing i + 1, then received",
        Some(2),
        done(
            "out.recv()",
            "does the stage run f and send the result?",
            out.recv(),
        )
        .await,
        "the stage's output carries f's results",
    );
    drop(out);
    done(
        "tx.closed() on the stage's input after dropping the stage's output (the producer still holds its sender and sends nothing)",
        "while it waits for input, does the stage also watch its output (select! on Sender::closed()) and return, dropping its input, once the consumer is gone?",
        tx.closed(),
    )
    .await;
    quiet().await;
    same(
        "saw the stage drop its input, then counted calls of f and tasks alive",
        (1, 0),
        (calls.load(Ordering::SeqCst), tasks_alive()),
        "once the output is gone the stage must end without calling f again",
    );
}

// ---------------------------------------------------------------------------
// Fan-out / fan-in.

// A parallel stage: every item exactly once, on exactly `workers` calls at
// a time, and the output ends after the last result.
#[tokio::test(start_paused = true)]
async fn test_05_fan_out_processes_every_item_exactly_once_on_n_workers() {
    let busy = Busy::default();
    let b = busy.clone();
    let mut out = fan_out(source(0..200u64), 4, 8, move |i: u64| {
        let b = b.clone();
        async move {
            let _busy = b.enter();
            tokio::time::sleep(jitter(i)).await;
            i
        }
    });
    let got = collect(
        &mut out,
        "fan_out(source of 0..200, 4 workers, capacity 8, f)",
        "does the output end once every worker has ended? (a Sender kept outside the workers keeps it open)",
    )
    .await;
    exactly_once(
        "sent 0..200 through fan_out with 4 workers, collected the results",
        200,
        &got,
        "does each worker take its own items from the shared input (one receiver behind a Mutex), and send every result?",
    );
    same(
        "counted the most calls of f running at once (f takes 0-12 ms)",
        4,
        busy.peak(),
        "4 workers run f 4 at a time: 1 means the workers take turns (is the input's lock held while f runs?), more means f is not limited to the workers (a task per item?)",
    );
    quiet().await;
    same(
        "counted the tasks alive after the output ended",
        0,
        tasks_alive(),
        "every worker must end when the input is exhausted",
    );
}

// Workers held on a gate show the exact parallelism: 3 workers take 3
// items and no more until one is free.
#[tokio::test(start_paused = true)]
async fn test_06_fan_out_takes_one_item_per_free_worker() {
    let busy = Busy::default();
    let gate = Gate::closed();
    let (b, g) = (busy.clone(), gate.clone());
    let mut out = fan_out(source(0..10u64), 3, 16, move |i: u64| {
        let (b, g) = (b.clone(), g.clone());
        async move {
            let _busy = b.enter();
            g.pass().await;
            i
        }
    });
    quiet().await;
    same(
        "fan_out with 3 workers on 10 items whose f waits at a gate the test keeps shut; let it run until idle; counted calls of f started",
        3,
        busy.started(),
        "exactly one item per worker is in progress: does each worker run f itself (not spawn it) and release the input's lock before f?",
    );
    gate.open(1);
    quiet().await;
    same(
        "let one call of f through the gate, let it run until idle, counted calls started",
        4,
        busy.started(),
        "the worker that finished must take the next item",
    );
    gate.open(100);
    let got = collect(
        &mut out,
        "fan_out's output",
        "does the output end after the last result?",
    )
    .await;
    exactly_once(
        "opened the gate and collected every result",
        10,
        &got,
        "every item exactly once",
    );
}

// fan_in keeps the order of each input, loses nothing, and ends only when
// the last input ends, not when the first one does.
#[tokio::test(start_paused = true)]
async fn test_07_fan_in_merges_every_item_and_keeps_each_inputs_order() {
    let (a_tx, a) = mpsc::channel(4);
    let (b_tx, b) = mpsc::channel(4);
    let (c_tx, c) = mpsc::channel(4);
    let (_, empty) = mpsc::channel::<u64>(1);
    let mut out = fan_in(vec![empty, a, b, c], 2);
    // a: 5 items at once, then ends early. b: 50 items, slowly. c: 10 items
    // after a while, then ends.
    tokio::spawn(async move {
        for i in 0..5u64 {
            a_tx.send(i).await.unwrap();
        }
    });
    tokio::spawn(async move {
        for i in 100..150u64 {
            tokio::time::sleep(jitter(i)).await;
            b_tx.send(i).await.unwrap();
        }
    });
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(40)).await;
        for i in 200..210u64 {
            c_tx.send(i).await.unwrap();
        }
    });
    let got = collect(
        &mut out,
        "fan_in of an empty input, a (5 items), b (50 items, slowly), c (10 items, later)",
        "does the output end once every input has ended? (is a Sender left behind, or a forwarding task that never finishes?)",
    )
    .await;
    for (name, range) in [("a", 0..5u64), ("b", 100..150), ("c", 200..210)] {
        let of_input: Vec<u64> = got.iter().copied().filter(|v| range.contains(v)).collect();
        same(
            &format!("merged 4 inputs with fan_in, then picked out the items of input {name}"),
            range.clone().collect::<Vec<u64>>(),
            of_input,
            "each input's items, all of them, once, in their order: an input that ends (recv gives None) must not end the merge while others are open",
        );
    }
    same(
        "counted every item fan_in delivered",
        65,
        got.len(),
        "nothing extra: each item once",
    );
}

// The merged output stays open while any input is open, even after another
// input has ended; it ends with the last one.
#[tokio::test(start_paused = true)]
async fn test_08_fan_in_stays_open_until_the_last_input_ends() {
    let (a_tx, a) = mpsc::channel(4);
    let (b_tx, b) = mpsc::channel(4);
    let mut out = fan_in(vec![a, b], 4);
    a_tx.send(1u64).await.unwrap();
    drop(a_tx);
    same(
        "fan_in of a and b; sent 1 on a and dropped a's sender; received",
        Some(1),
        done(
            "out.recv()",
            "does fan_in forward items from every input?",
            out.recv(),
        )
        .await,
        "a's item comes through",
    );
    quiet().await;
    let next = out.recv().now_or_never();
    Report::new("then, with a ended and b open and silent, let everything settle and polled out.recv() once")
        .expected("Pending: b may still send")
        .got(format!("{next:?}"))
        .hint("an input that ends must not end the merge: keep polling the others (or let each forwarding task end on its own)")
        .check(next.is_none());
    b_tx.send(2).await.unwrap();
    same(
        "sent 2 on b, then received",
        Some(2),
        done(
            "out.recv()",
            "is b still forwarded after a ended?",
            out.recv(),
        )
        .await,
        "b's item comes through after a ended",
    );
    drop(b_tx);
    same(
        "dropped b's sender (every input has ended), then received",
        None,
        done(
            "out.recv()",
            "does the output end once every input has ended?",
            out.recv(),
        )
        .await,
        "with every input ended and drained, recv gives None",
    );
}

// ---------------------------------------------------------------------------
// Worker pool.

/// A job of the pool tests: an id, and a guard that shows whether the job
/// (queued or running) still exists.
#[derive(Debug)]
struct Job {
    id: u64,
    _alive: Guard,
}

// Every job submitted runs exactly once, `workers` at a time, and
// shutdown returns only when all of them are done.
#[tokio::test(start_paused = true)]
async fn test_09_the_pool_runs_every_job_exactly_once_then_shuts_down() {
    let busy = Busy::default();
    let ran = Arc::new(Mutex::new(Vec::new()));
    let (b, r) = (busy.clone(), Arc::clone(&ran));
    let pool = WorkerPool::new(4, 5, move |job: Job| {
        let (b, r) = (b.clone(), Arc::clone(&r));
        async move {
            let _busy = b.enter();
            tokio::time::sleep(jitter(job.id)).await;
            r.lock().unwrap().push(job.id);
        }
    });
    let jobs = Tracker::default();
    for id in 0..100u64 {
        let job = Job {
            id,
            _alive: jobs.guard(),
        };
        if done(
            &format!("pool.submit(job {id})"),
            "does submit wait for room in the queue, and do the workers keep taking jobs?",
            pool.submit(job),
        )
        .await
        .is_err()
        {
            Report::new(format!(
                "submitted jobs 0..{id} to a pool of 4 workers, then job {id}"
            ))
            .expected("Ok(())")
            .got("Err(job): the pool says no worker is left")
            .hint("do the workers stay alive between jobs (a loop around recv)?")
            .fail();
        }
    }
    done(
        "pool.shutdown() after 100 jobs",
        "does shutdown close the queue (drop the Sender) so the workers see recv() give None, and then wait for each of them?",
        pool.shutdown(),
    )
    .await;
    let got = ran.lock().unwrap().clone();
    exactly_once(
        "submitted jobs 0..100 (each takes 0-12 ms) to WorkerPool::new(4, 5, ..), called shutdown, looked at the jobs that ran",
        100,
        &got,
        "shutdown must return only after every queued job has run: does it wait for the workers (join them) after closing the queue?",
    );
    same(
        "counted the most jobs running at once",
        4,
        busy.peak(),
        "4 workers run 4 jobs at a time: 1 means they take turns (a lock held while the job runs?)",
    );
    same(
        "after shutdown returned, counted jobs not yet dropped and tasks alive",
        (0, 0),
        (jobs.alive(), tasks_alive()),
        "shutdown returns once every worker has ended",
    );
}

// The producer waits when the queue is full: exactly `workers` jobs run
// and `capacity` wait, and the next submit stays pending until a worker
// frees a place.
#[tokio::test(start_paused = true)]
async fn test_10_submit_waits_while_the_queue_is_full() {
    let busy = Busy::default();
    let gate = Gate::closed();
    let ran = Arc::new(Mutex::new(Vec::new()));
    let (b, g, r) = (busy.clone(), gate.clone(), Arc::clone(&ran));
    let pool = WorkerPool::new(2, 3, move |job: Job| {
        let (b, g, r) = (b.clone(), g.clone(), Arc::clone(&r));
        async move {
            let _busy = b.enter();
            g.pass().await;
            r.lock().unwrap().push(job.id);
        }
    });
    let jobs = Tracker::default();
    for id in 0..5u64 {
        let ok = done(
            &format!("pool.submit(job {id}) on WorkerPool::new(2, 3, ..) whose jobs wait at a gate the test keeps shut"),
            "2 workers each hold one job and the queue holds 3: the first 5 submits must finish. Is the queue a channel of `capacity` (not capacity - 1), and does each worker take a job while another worker's job runs (no lock held while a job runs)?",
            pool.submit(Job { id, _alive: jobs.guard() }),
        )
        .await;
        Report::new(format!("submitted job {id}"))
            .expected("Ok(())")
            .got("Err(job)")
            .hint("submit gives the job back only when no worker is left")
            .check(ok.is_ok());
    }
    quiet().await;
    same(
        "submitted 5 jobs, let everything run until idle, counted jobs started",
        2,
        busy.started(),
        "each of the 2 workers takes one job; the other 3 wait in the queue",
    );
    {
        let mut sixth = pin!(pool.submit(Job {
            id: 5,
            _alive: jobs.guard()
        }));
        let first = futures::poll!(sixth.as_mut());
        quiet().await;
        let again = futures::poll!(sixth.as_mut());
        Report::new("then called submit(job 5) and polled it, let everything settle, polled it again")
            .expected("Pending both times: 2 jobs running and 3 queued fill the pool, so the producer must wait")
            .got(format!("{first:?}, then {again:?}"))
            .hint("is the queue bounded (mpsc::channel(capacity), not unbounded_channel) and exactly `capacity` long?")
            .check(first.is_pending() && again.is_pending());
        same(
            "while job 5 waits to be queued, counted jobs started",
            2,
            busy.started(),
            "nothing new starts while both workers are busy",
        );
        gate.open(1);
        let ok = done(
            "the pending submit(job 5), after letting one job through the gate",
            "when a job finishes, its worker takes the next from the queue, which frees a place for the waiting submit",
            sixth,
        )
        .await;
        same(
            "the pending submit finished with",
            true,
            ok.is_ok(),
            "Ok(()) once there was room",
        );
    }
    gate.open(100);
    done(
        "pool.shutdown()",
        "does shutdown wait for the queued jobs and the workers?",
        pool.shutdown(),
    )
    .await;
    let got = ran.lock().unwrap().clone();
    exactly_once(
        "opened the gate, shut the pool down, looked at the jobs that ran",
        6,
        &got,
        "every job exactly once",
    );
    same(
        "counted jobs not yet dropped",
        0,
        jobs.alive(),
        "every job is dropped after it ran",
    );
}

// Cancelling stops the jobs in progress, drops the queued ones unrun, and
// returns only when no task of the pool is left.
#[tokio::test(start_paused = true)]
async fn test_11_cancel_stops_every_job_and_leaves_no_task_running() {
    let busy = Busy::default();
    let gate = Gate::closed();
    let (b, g) = (busy.clone(), gate.clone());
    let pool = WorkerPool::new(3, 10, move |job: Job| {
        let (b, g) = (b.clone(), g.clone());
        async move {
            let _busy = b.enter();
            g.pass().await; // never opened: only a cancel ends this job
            drop(job);
        }
    });
    let jobs = Tracker::default();
    for id in 0..8u64 {
        let _ = done(
            &format!("pool.submit(job {id}) on WorkerPool::new(3, 10, ..)"),
            "the queue has room for 10: submit must not wait",
            pool.submit(Job {
                id,
                _alive: jobs.guard(),
            }),
        )
        .await;
    }
    quiet().await;
    same(
        "submitted 8 jobs that wait at a shut gate, let them run until idle, counted jobs started",
        3,
        busy.started(),
        "each of the 3 workers takes one job",
    );
    done(
        "pool.cancel() with 3 jobs stuck at a gate and 5 queued",
        "cancel must not wait for the jobs to finish (they never will): does it abort the worker tasks (JoinSet::abort_all / JoinHandle::abort, or a select! on a cancel signal around each job)?",
        pool.cancel(),
    )
    .await;
    same(
        "the moment cancel() returned, counted jobs not dropped yet (3 running, 5 queued) and tasks alive",
        (0, 0),
        (jobs.alive(), tasks_alive()),
        "cancel returns only when nothing of the pool runs: abort() only asks, so wait for each aborted task to end (await its JoinHandle, JoinSet::shutdown); and the queued jobs go when the queue's receiver is dropped",
    );
    same(
        "then counted jobs started",
        3,
        busy.started(),
        "queued jobs are dropped, not run, after a cancel",
    );
}

// shutdown is the gentle stop: queued jobs still run.
#[tokio::test(start_paused = true)]
async fn test_12_shutdown_waits_for_the_queued_jobs() {
    let gate = Gate::closed();
    let ran = Arc::new(Mutex::new(Vec::new()));
    let (g, r) = (gate.clone(), Arc::clone(&ran));
    let pool = WorkerPool::new(1, 5, move |job: Job| {
        let (g, r) = (g.clone(), Arc::clone(&r));
        async move {
            g.pass().await;
            r.lock().unwrap().push(job.id);
        }
    });
    let jobs = Tracker::default();
    for id in 0..5u64 {
        let _ = done(
            &format!("pool.submit(job {id}) on WorkerPool::new(1, 5, ..)"),
            "1 job runs and 4 wait in a queue of 5: submit must not wait",
            pool.submit(Job {
                id,
                _alive: jobs.guard(),
            }),
        )
        .await;
    }
    let mut shutdown = pin!(pool.shutdown());
    let first = futures::poll!(shutdown.as_mut());
    quiet().await;
    Report::new(
        "submitted 5 jobs that wait at a shut gate to 1 worker, called shutdown() and polled it",
    )
    .expected("Pending: the jobs have not run yet")
    .got(format!("{first:?}"))
    .hint("shutdown waits for the workers to finish every queued job")
    .check(first.is_pending() && futures::poll!(shutdown.as_mut()).is_pending());
    gate.open(100);
    done(
        "the pending shutdown(), after opening the gate",
        "does shutdown wait for the workers?",
        shutdown,
    )
    .await;
    same(
        "opened the gate, waited for shutdown, looked at the jobs that ran",
        vec![0, 1, 2, 3, 4],
        ran.lock().unwrap().clone(),
        "shutdown closes the queue but does not drop what is in it: the worker runs every queued job (one worker: in queue order)",
    );
    same(
        "counted jobs not dropped and tasks alive",
        (0, 0),
        (jobs.alive(), tasks_alive()),
        "everything ends",
    );
}

// ---------------------------------------------------------------------------
// Request/response: an actor.

// An actor applies requests one at a time: concurrent callers see a
// consistent counter, each its own answers in order.
#[tokio::test(start_paused = true)]
async fn test_13_an_actor_answers_each_request_in_order() {
    let counter = spawn_actor(0u64, 8, |total: &mut u64, add: u64| {
        *total += add;
        Ok::<u64, String>(*total)
    });
    let mut callers = Vec::new();
    for _ in 0..4 {
        let h = counter.clone();
        callers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..50 {
                seen.push(h.call(1).await);
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for (n, caller) in callers.into_iter().enumerate() {
        let seen = done(
            &format!("caller {n}: 50 calls of counter.call(1)"),
            "does the actor answer each request (send on its oneshot)?",
            caller,
        )
        .await
        .expect("a caller task panicked");
        let totals: Vec<u64> = seen
            .into_iter()
            .map(|r| match r {
                Ok(t) => t,
                Err(e) => Report::new(format!("caller {n} called counter.call(1)"))
                    .expected("Ok(the new total)")
                    .got(format!("Err({e:?})"))
                    .hint("the handler never fails here: is the reply sent back to the caller that asked?")
                    .fail(),
            })
            .collect();
        Report::new(format!(
            "4 callers each called counter.call(1) 50 times at once; caller {n} got"
        ))
        .expected("strictly increasing totals: its requests are handled in the order it sent them")
        .got(format!("{totals:?}"))
        .hint("one task owns the state and handles one request at a time, in mailbox order")
        .check(totals.windows(2).all(|w| w[0] < w[1]));
        all.extend(totals);
    }
    all.sort_unstable();
    same(
        "put the 200 totals of all callers together, sorted",
        (1..=200).collect::<Vec<u64>>(),
        all,
        "each request applied exactly once and each caller got its own answer (a reply to the wrong caller, or a request applied twice, shows here)",
    );
}

// An error from the handler is an answer: the caller gets it, and the
// actor goes on serving.
#[tokio::test(start_paused = true)]
async fn test_14_a_handler_error_is_sent_back_not_dropped() {
    let divider = spawn_actor((), 4, |_: &mut (), (a, b): (u64, u64)| {
        a.checked_div(b).ok_or_else(|| format!("{a} / 0"))
    });
    same(
        "called divider.call((10, 2))",
        Ok(5),
        done(
            "divider.call((10, 2))",
            "does the actor answer?",
            divider.call((10, 2)),
        )
        .await,
        "the handler's Ok comes back",
    );
    same(
        "called divider.call((1, 0)), whose handler returns Err(\"1 / 0\")",
        Err(CallError::Failed("1 / 0".to_string())),
        done(
            "divider.call((1, 0))",
            "is the handler's Err sent on the reply channel?",
            divider.call((1, 0)),
        )
        .await,
        "an Err from the handler is an answer: send it (CallError::Failed). Dropping the reply sender instead makes the caller see Closed, as if the actor had died",
    );
    same(
        "then called divider.call((9, 3))",
        Ok(3),
        done(
            "divider.call((9, 3))",
            "does the actor keep running after an error?",
            divider.call((9, 3)),
        )
        .await,
        "an error does not stop the actor",
    );
}

// A caller that stops waiting (a timeout, a select!) must not take the
// actor down with it: its reply simply goes nowhere.
#[tokio::test(start_paused = true)]
async fn test_15_a_caller_that_gives_up_does_not_stop_the_actor() {
    let handled = Arc::new(AtomicUsize::new(0));
    let h2 = Arc::clone(&handled);
    let actor = spawn_actor(0u64, 4, move |n: &mut u64, add: u64| {
        h2.fetch_add(1, Ordering::SeqCst);
        *n += add;
        Ok::<u64, ()>(*n)
    });
    for round in 0..3 {
        let mut call = pin!(actor.call(1));
        let first = futures::poll!(call.as_mut());
        Report::new(format!(
            "round {round}: polled actor.call(1) once, before the actor ran"
        ))
        .expected("Pending (the request is in the mailbox, the answer not there yet)")
        .got(format!("{first:?}"))
        .check(first.is_pending());
        // The caller gives up: its call future, with the reply receiver, is dropped.
    }
    quiet().await;
    let h = handled.load(Ordering::SeqCst);
    let answer = done(
        "actor.call(10) after 3 callers had given up on their calls",
        "does the actor survive a reply nobody waits for? (oneshot::Sender::send fails then: ignore it, do not unwrap)",
        actor.call(10),
    )
    .await;
    same(
        "3 callers sent a request each and dropped their call before the answer; then a 4th called actor.call(10)",
        Ok(h as u64 + 10),
        answer,
        "the actor must keep serving: a reply that cannot be delivered (the caller is gone) is not an error of the actor (Err(Closed) means it died)",
    );
}

// The actor's task ends with its last handle, dropping its state; a
// handler that panics closes the actor, and callers hear it instead of
// hanging.
#[tokio::test(start_paused = true)]
async fn test_16_an_actor_ends_with_its_last_handle_and_a_panic_closes_it() {
    let states = Tracker::default();
    let a = spawn_actor(states.guard(), 4, |_: &mut Guard, x: u64| Ok::<u64, ()>(x));
    let b = a.clone();
    same(
        "called b.call(7) on a clone of the handle",
        Ok(7),
        done(
            "b.call(7)",
            "does the actor answer on every clone?",
            b.call(7),
        )
        .await,
        "clones talk to the same actor",
    );
    drop(a);
    quiet().await;
    same(
        "dropped one of the two handles, then counted the actor's state (alive) and tasks",
        (1, 1),
        (states.alive(), tasks_alive()),
        "the actor runs as long as any handle is left",
    );
    drop(b);
    quiet().await;
    same(
        "dropped the last handle, let the actor run, then counted the actor's state (alive) and tasks",
        (0, 0),
        (states.alive(), tasks_alive()),
        "with every handle gone the mailbox ends (recv gives None): the actor task must return and drop its state. Does the actor hold a Sender to its own mailbox?",
    );

    let fragile = spawn_actor((), 4, |_: &mut (), x: u64| {
        if x == 13 {
            panic!("the handler panics on 13 (this panic is part of the test)");
        }
        Ok::<u64, ()>(x)
    });
    same(
        "made an actor whose handler panics on 13, called fragile.call(13)",
        Err(CallError::Closed),
        done(
            "fragile.call(13)",
            "a dropped oneshot::Sender wakes its receiver with an error: does call turn that into CallError::Closed?",
            fragile.call(13),
        )
        .await,
        "a request whose actor died answers Closed, never hangs",
    );
    same(
        "then called fragile.call(1)",
        Err(CallError::Closed),
        done(
            "fragile.call(1) on an actor that has panicked",
            "a send into a mailbox whose receiver is gone fails at once: does call turn that into CallError::Closed?",
            fragile.call(1),
        )
        .await,
        "once the actor is gone every call answers Closed",
    );
}

// ---------------------------------------------------------------------------
// join_with_timeout.

// A task that finishes in time gives its value, at the moment it finishes;
// one that panics says so.
#[tokio::test(start_paused = true)]
async fn test_17_join_with_timeout_gives_the_value_of_a_task_in_time() {
    let token = CancelToken::new();
    let start = Instant::now();
    let task = tokio::spawn(async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        7
    });
    let got = done(
        "join_with_timeout(a task that returns 7 after 3 s, 5 s, token)",
        "does it await the JoinHandle?",
        join_with_timeout(task, Duration::from_secs(5), &token),
    )
    .await;
    same(
        "joined a task that returns 7 after 3 s, with a 5 s limit: (result, seconds elapsed)",
        (Ok(7), 3),
        (got, start.elapsed().as_secs()),
        "a task that finishes in time gives Ok(value) as soon as it finishes",
    );
    let boom = tokio::spawn(async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        panic!("the task panics (this panic is part of the test)");
    });
    same(
        "joined a task that panics after 1 s",
        Err(Stopped::Panicked),
        done(
            "join_with_timeout(a panicking task, 5 s, token)",
            "a JoinError says is_panic()",
            join_with_timeout(boom, Duration::from_secs(5), &token),
        )
        .await,
        "a panic in the task is Err(Stopped::Panicked)",
    );
}

// The timeout stops the work, not only the wait: dropping a JoinHandle
// detaches the task, so it must be aborted and then awaited.
#[tokio::test(start_paused = true)]
async fn test_18_a_timeout_aborts_the_task_and_returns_once_it_has_ended() {
    let token = CancelToken::new();
    let work = Tracker::default();
    let guard = work.guard();
    let task = tokio::spawn(async move {
        let _guard = guard;
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
    let start = Instant::now();
    let got = done(
        "join_with_timeout(a task of 1 hour, 2 s, token)",
        "does it race the task against tokio::time::sleep(limit)?",
        join_with_timeout(task, Duration::from_secs(2), &token),
    )
    .await;
    same(
        "joined a task that would run 1 hour, with a 2 s limit: (result, ms elapsed)",
        (Err(Stopped::TimedOut), 2000),
        (got, start.elapsed().as_millis()),
        "the limit passes after exactly 2 s",
    );
    same(
        "the moment join_with_timeout returned TimedOut, counted the task's guard (alive) and tasks alive",
        (0, 0),
        (work.alive(), tasks_alive()),
        "a timeout must stop the work: dropping a JoinHandle only detaches the task, so abort() it, and since abort() only asks, await the handle until the task has ended",
    );
}

// Cancelling the token stops the wait and the task at once, and a token
// cancelled beforehand stops it before it starts waiting.
#[tokio::test(start_paused = true)]
async fn test_19_cancelling_the_token_stops_the_wait_and_the_task() {
    let token = CancelToken::new();
    let work = Tracker::default();
    let guard = work.guard();
    let task = tokio::spawn(async move {
        let _guard = guard;
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
    let t = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        t.cancel();
    });
    let start = Instant::now();
    let got = done(
        "join_with_timeout(a task of 1 hour, 10 s, a token cancelled after 1 s)",
        "does it also wait on token.cancelled() (a select! of three)?",
        join_with_timeout(task, Duration::from_secs(10), &token),
    )
    .await;
    same(
        "joined a 1 hour task with a 10 s limit; another task cancelled the token after 1 s: (result, ms elapsed)",
        (Err(Stopped::Cancelled), 1000),
        (got, start.elapsed().as_millis()),
        "a cancel ends the wait at once with Err(Stopped::Cancelled)",
    );
    same(
        "the moment it returned Cancelled, counted the task's guard (alive) and tasks alive",
        (0, 0),
        (work.alive(), tasks_alive()),
        "a cancel must stop the task too: abort it, then await the handle",
    );

    let guard = work.guard();
    let task = tokio::spawn(async move {
        let _guard = guard;
        tokio::time::sleep(Duration::from_secs(1)).await;
    });
    let start = Instant::now();
    let got = done(
        "join_with_timeout(a task of 1 s, 10 s, a token already cancelled)",
        "is the token looked at before waiting?",
        join_with_timeout(task, Duration::from_secs(10), &token),
    )
    .await;
    same(
        "joined a 1 s task with a token cancelled beforehand: (result, ms elapsed, task guard alive)",
        (Err(Stopped::Cancelled), 0, 0),
        (got, start.elapsed().as_millis(), work.alive()),
        "an already cancelled token stops the task at once (its cancelled() completes immediately)",
    );
}
