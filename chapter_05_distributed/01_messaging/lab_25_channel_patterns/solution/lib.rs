//! Channel patterns: the shapes in which async tasks talk to each other.
//!
//! ```ignore
//! let (tx, rx) = tokio::sync::mpsc::channel(16);
//! let parsed = stage(rx, 16, |line: String| async move { line.len() });
//! let doubled = fan_out(parsed, 4, 16, |n| async move { n * 2 });
//! let pool = WorkerPool::new(4, 100, |job: Job| async move { job.run().await });
//! let counter = spawn_actor(0u64, 32, |total, n: u64| Ok::<_, ()>({ *total += n; *total }));
//! let out = join_with_timeout(tokio::spawn(work()), Duration::from_secs(5), &token).await;
//! ```
//!
//! # Design
//!
//! Every piece here is a task (or a few) plus bounded channels, and each
//! answers the same three questions: who owns the data, when does it end,
//! and what happens when the other side is slower.
//!
//! - **Bounded everywhere.** Every channel has a capacity, and a full
//!   channel makes its sender wait. That wait is *backpressure*: a slow
//!   consumer slows its producer down instead of letting a queue grow
//!   until the process runs out of memory. An unbounded channel only moves
//!   the problem to the allocator.
//! - **Ending is closing.** A stage ends when its input's senders are all
//!   gone (`recv` gives `None`); it then drops its own sender, so its
//!   consumer sees the end in turn, after the last item. An end travels
//!   downstream through the same channels as the data, so nothing is lost.
//!   The other way, a stage whose consumer is gone stops and drops its
//!   input, so the producer above it sees `send` fail and stops too.
//! - **Order is a promise only one task can keep.** One task per stage
//!   keeps items in order; several workers ([`fan_out`], [`WorkerPool`])
//!   finish in any order. An actor ([`spawn_actor`]) is the one-task
//!   case again: its state needs no lock because only its task touches it,
//!   and requests take effect one at a time, in the order they arrived.
//! - **Cancellation is dropping a future.** Tokio cancels a task by
//!   dropping its future at the next `.await` (`JoinHandle::abort`). The
//!   future's locals are dropped with it, which is how held resources come
//!   back. An abort is a request, not an event: the task ends the next time
//!   the runtime polls it, so code that promises "no task left running"
//!   must *await* the aborted task, not just abort it. And dropping a
//!   `JoinHandle` does not cancel anything: the task runs on, detached.
//!
//! [`CancelToken`] is the one hand-made primitive: a `watch` channel of a
//! `bool`. A `watch` keeps its latest value, so a task that starts waiting
//! after the cancel still sees it; a `Notify::notify_waiters` would wake
//! only the tasks waiting at that moment, and a late one would wait forever.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

// ---------------------------------------------------------------------------
// Pipeline: one stage.

/// One pipeline stage: a task that applies `f` to each item of `input`, in
/// order, and sends the results on the returned channel of `capacity`.
///
/// - Order: results come out in the order their items came in, and `f`
///   runs on one item at a time.
/// - Backpressure: when the output is full, the stage waits to send and
///   takes nothing more from `input`.
/// - End: after the last item of `input` (every sender dropped), the output
///   ends too, once its results have been received.
/// - Downstream gone: as soon as the returned receiver is dropped, the
///   stage stops, whatever it is waiting for, and drops `input`, so a
///   producer's `send` fails (or its `closed()` completes).
///
/// # Panics
/// If `capacity` is 0 (a tokio channel needs room for one item).
pub fn stage<T, U, F, Fut>(
    mut input: mpsc::Receiver<T>,
    capacity: usize,
    mut f: F,
) -> mpsc::Receiver<U>
where
    T: Send + 'static,
    U: Send + 'static,
    F: FnMut(T) -> Fut + Send + 'static,
    Fut: Future<Output = U> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(capacity);
    tokio::spawn(async move {
        loop {
            // `closed()` completes when the consumer drops its receiver: a
            // stage waiting for input that may never come would otherwise
            // live (and keep its input open) as long as the producer does.
            let item = tokio::select! {
                _ = tx.closed() => return,
                item = input.recv() => match item {
                    Some(item) => item,
                    None => return,
                },
            };
            let out = tokio::select! {
                _ = tx.closed() => return,
                out = f(item) => out,
            };
            // Awaiting here, before the next `recv`, is the backpressure:
            // a full output keeps this stage from pulling more input.
            if tx.send(out).await.is_err() {
                return;
            }
        }
        // `input` and `tx` drop here: upstream sees its receiver gone,
        // downstream sees the end after the last result.
    });
    rx
}

// ---------------------------------------------------------------------------
// Fan-out / fan-in.

/// A parallel stage: `workers` tasks take items from `input` (fan-out),
/// each takes the next item as soon as it is free, apply `f`, and send the
/// results into one output channel of `capacity` (fan-in).
///
/// - Every item is processed exactly once; results come out in any order.
/// - At most `workers` calls of `f` run at once.
/// - The output ends once every worker has finished: after the last result.
///
/// # Panics
/// If `workers` or `capacity` is 0.
pub fn fan_out<T, U, F, Fut>(
    input: mpsc::Receiver<T>,
    workers: usize,
    capacity: usize,
    f: F,
) -> mpsc::Receiver<U>
where
    T: Send + 'static,
    U: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = U> + Send + 'static,
{
    assert!(workers > 0, "fan_out needs at least one worker");
    let (tx, rx) = mpsc::channel(capacity);
    // An mpsc receiver has one owner; the workers share it behind an async
    // mutex, held only for the `recv` (never while `f` runs, else the
    // workers would take turns instead of running together).
    let input = Arc::new(Mutex::new(input));
    let f = Arc::new(f);
    for _ in 0..workers {
        let (input, f, tx) = (Arc::clone(&input), Arc::clone(&f), tx.clone());
        tokio::spawn(async move {
            loop {
                let item = input.lock().await.recv().await;
                let Some(item) = item else { return };
                if tx.send(f(item).await).await.is_err() {
                    return; // nobody listens any more
                }
            }
        });
    }
    // The original sender drops here: only the workers' clones keep the
    // output open, so it ends exactly when the last worker ends.
    rx
}

/// Merges `inputs` into one channel of `capacity`: every item of every
/// input comes out exactly once, the items of one input in their order.
/// The output ends once every input has ended and its items have been
/// received; an input that ends early does not end the others.
///
/// # Panics
/// If `capacity` is 0.
pub fn fan_in<T: Send + 'static>(
    mut inputs: Vec<mpsc::Receiver<T>>,
    capacity: usize,
) -> mpsc::Receiver<T> {
    let (tx, rx) = mpsc::channel(capacity);
    // One task for all the inputs. (One forwarding task per input, each
    // with a clone of `tx`, is the other honest design: simpler, n tasks.)
    tokio::spawn(async move {
        // Where the next poll starts, so that a busy input cannot starve
        // the ones after it.
        let mut start = 0;
        loop {
            let item = std::future::poll_fn(|cx| {
                let n = inputs.len();
                let mut ended = 0;
                for k in 0..n {
                    let i = (start + k) % n;
                    match inputs[i].poll_recv(cx) {
                        Poll::Ready(Some(item)) => {
                            start = i + 1;
                            return Poll::Ready(Some(item));
                        }
                        // This input has ended (and will say so again,
                        // cheaply, next time): go on with the others.
                        // Ending here would lose every item they still hold.
                        Poll::Ready(None) => ended += 1,
                        Poll::Pending => {}
                    }
                }
                if ended == n {
                    Poll::Ready(None) // every input has ended
                } else {
                    // Each pending `poll_recv` registered `cx`'s waker:
                    // whichever input gets an item first wakes this task.
                    Poll::Pending
                }
            })
            .await;
            let Some(item) = item else { return };
            if tx.send(item).await.is_err() {
                return; // nobody listens any more
            }
        }
    });
    rx
}

// ---------------------------------------------------------------------------
// Worker pool over a bounded queue.

/// `workers` tasks that run `handler` on jobs taken from a queue of
/// `capacity` jobs.
pub struct WorkerPool<T> {
    queue: mpsc::Sender<T>,
    // A JoinSet owns its tasks: it can abort them all, wait for them all,
    // and aborts them if it is dropped.
    workers: JoinSet<()>,
}

impl<T: Send + 'static> WorkerPool<T> {
    /// Starts `workers` tasks. Each takes the next job from the queue as
    /// soon as it is free and awaits `handler(job)`; jobs run in parallel,
    /// in no promised order.
    ///
    /// # Panics
    /// If `workers` or `capacity` is 0. Call it inside a tokio runtime.
    pub fn new<F, Fut>(workers: usize, capacity: usize, handler: F) -> WorkerPool<T>
    where
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        assert!(workers > 0, "a worker pool needs at least one worker");
        let (queue, rx) = mpsc::channel(capacity);
        let rx = Arc::new(Mutex::new(rx));
        let handler = Arc::new(handler);
        let mut set = JoinSet::new();
        for _ in 0..workers {
            let (rx, handler) = (Arc::clone(&rx), Arc::clone(&handler));
            set.spawn(async move {
                loop {
                    // The lock guard is a temporary: released before the
                    // job runs.
                    let job = rx.lock().await.recv().await;
                    match job {
                        Some(job) => handler(job).await,
                        None => return, // queue closed and empty
                    }
                }
            });
        }
        // Only the workers hold the receiver: when the last of them ends,
        // it is dropped, and with it every job still queued.
        WorkerPool {
            queue,
            workers: set,
        }
    }

    /// Queues `job`. While the queue holds `capacity` jobs, waits for room:
    /// a producer can be at most `capacity` jobs ahead of the workers.
    ///
    /// # Errors
    /// Gives the job back when no worker is left to take it (they have all
    /// ended, e.g. because the handler panicked in each).
    pub async fn submit(&self, job: T) -> Result<(), T> {
        self.queue.send(job).await.map_err(|e| e.0)
    }

    /// Closes the queue and waits until every job queued has been run and
    /// every worker has ended.
    pub async fn shutdown(self) {
        let WorkerPool { queue, mut workers } = self;
        // The workers see the end (`recv` gives `None`) only after the
        // queue is empty: closing is not dropping what is queued.
        drop(queue);
        while workers.join_next().await.is_some() {}
    }

    /// Stops now: jobs in progress are dropped at their next `.await`, jobs
    /// still queued are dropped without being run. Returns once every task
    /// of the pool has ended (nothing of the pool is left running).
    pub async fn cancel(self) {
        let WorkerPool { queue, mut workers } = self;
        drop(queue);
        // abort_all, then wait for each task: an aborted task ends only
        // when the runtime next polls it, and only then are its job's
        // resources given back.
        workers.shutdown().await;
    }
}

// ---------------------------------------------------------------------------
// Request/response: an actor with oneshot replies.

/// One request in the actor's mailbox: the request and where to answer.
type Envelope<Req, Resp, E> = (Req, oneshot::Sender<Result<Resp, E>>);

/// Why a [`Handle::call`] did not get the handler's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError<E> {
    /// The handler answered with this error.
    Failed(E),
    /// The actor is gone (its handler panicked) and will answer no more.
    Closed,
}

/// Sends requests to an actor. Cloning it is cheap; the actor runs until
/// every handle is dropped.
pub struct Handle<Req, Resp, E> {
    mailbox: mpsc::Sender<Envelope<Req, Resp, E>>,
}

impl<Req, Resp, E> Clone for Handle<Req, Resp, E> {
    // By hand: a derive would ask for `Req: Clone` and the rest.
    fn clone(&self) -> Self {
        Handle {
            mailbox: self.mailbox.clone(),
        }
    }
}

/// Starts an actor: a task that owns `state` and runs
/// `handler(&mut state, request)` for one request at a time, in the order
/// the requests reached its mailbox of `capacity`.
///
/// Every request gets exactly one answer: the handler's `Ok` or `Err`. A
/// caller that stopped waiting does not disturb the actor. When every
/// [`Handle`] is dropped, the actor ends and drops `state`.
///
/// # Panics
/// If `capacity` is 0.
pub fn spawn_actor<S, Req, Resp, E, F>(
    mut state: S,
    capacity: usize,
    mut handler: F,
) -> Handle<Req, Resp, E>
where
    S: Send + 'static,
    Req: Send + 'static,
    Resp: Send + 'static,
    E: Send + 'static,
    F: FnMut(&mut S, Req) -> Result<Resp, E> + Send + 'static,
{
    let (mailbox, mut rx) = mpsc::channel::<Envelope<Req, Resp, E>>(capacity);
    tokio::spawn(async move {
        // Ends when every Handle (every Sender) is gone.
        while let Some((req, reply)) = rx.recv().await {
            // The error is an answer too: send whatever the handler says.
            // `send` fails only when the caller dropped its call; that is
            // its business, not a reason for the actor to stop.
            let _ = reply.send(handler(&mut state, req));
        }
    });
    Handle { mailbox }
}

impl<Req, Resp, E> Handle<Req, Resp, E> {
    /// Sends `req` (waiting for room in the mailbox) and waits for its
    /// answer.
    ///
    /// # Errors
    /// [`CallError::Failed`] with the handler's error;
    /// [`CallError::Closed`] when the actor is gone, never a hang.
    pub async fn call(&self, req: Req) -> Result<Resp, CallError<E>> {
        let (reply, answer) = oneshot::channel();
        self.mailbox
            .send((req, reply))
            .await
            .map_err(|_| CallError::Closed)?;
        // A reply sender dropped unanswered (the actor panicked mid-way)
        // wakes us with an error rather than leaving us waiting.
        match answer.await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(CallError::Failed(e)),
            Err(_) => Err(CallError::Closed),
        }
    }
}

// ---------------------------------------------------------------------------
// Cancellation and timeouts.

/// A cancellation signal shared by clones: once [`cancel`](Self::cancel)
/// is called on any clone, every clone is cancelled, for good.
#[derive(Debug, Clone)]
pub struct CancelToken {
    // The sender is shared so any clone can cancel; each `cancelled()`
    // subscribes its own receiver.
    tx: Arc<watch::Sender<bool>>,
}

impl Default for CancelToken {
    fn default() -> Self {
        CancelToken::new()
    }
}

impl CancelToken {
    /// A token not yet cancelled.
    pub fn new() -> CancelToken {
        CancelToken {
            tx: Arc::new(watch::Sender::new(false)),
        }
    }

    /// Cancels the token and wakes every task waiting in
    /// [`cancelled`](Self::cancelled). Calling it again does nothing.
    pub fn cancel(&self) {
        // send_replace, not send: `send` fails when no receiver exists,
        // and the value must stick for those that subscribe later.
        self.tx.send_replace(true);
    }

    /// Whether the token has been cancelled.
    pub fn is_cancelled(&self) -> bool {
        *self.tx.borrow()
    }

    /// Completes once the token is cancelled: at once if it already is.
    pub async fn cancelled(&self) {
        let mut rx = self.tx.subscribe();
        // wait_for looks at the current value first; `changed()` would
        // wait for the *next* change and miss a cancel made before.
        let _ = rx.wait_for(|cancelled| *cancelled).await;
    }
}

/// Why [`join_with_timeout`] gave no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// `limit` passed before the task finished.
    TimedOut,
    /// The token was cancelled (or the task was aborted elsewhere).
    Cancelled,
    /// The task panicked.
    Panicked,
}

/// Waits for `task` for at most `limit`, unless `cancel` fires first.
///
/// When the task finishes in time: `Ok` with its value. When the time
/// passes or the token is cancelled first (checked first, so an already
/// cancelled token wins at once): the task is aborted, and this returns
/// only after it has ended, so nothing of it is left running.
pub async fn join_with_timeout<T>(
    mut task: JoinHandle<T>,
    limit: Duration,
    cancel: &CancelToken,
) -> Result<T, Stopped> {
    let stopped = tokio::select! {
        biased;
        _ = cancel.cancelled() => Stopped::Cancelled,
        done = &mut task => {
            return done.map_err(|e| if e.is_panic() { Stopped::Panicked } else { Stopped::Cancelled });
        }
        _ = tokio::time::sleep(limit) => Stopped::TimedOut,
    };
    // Dropping a JoinHandle detaches the task, it does not stop it.
    task.abort();
    // abort() only asks; awaiting the handle waits until the task's future
    // has been dropped (its resources given back). The result is the
    // JoinError of the abort, or the value if it finished meanwhile:
    // either way it is too late to matter.
    let _ = task.await;
    Err(stopped)
}
