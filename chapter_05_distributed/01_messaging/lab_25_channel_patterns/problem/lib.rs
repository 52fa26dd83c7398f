//! Lab 25: channel patterns.
//!
//! Write the shapes in which async tasks talk to each other, on tokio's
//! own channels (`tokio::sync::{mpsc, oneshot, watch}`) and tasks:
//!
//! 1. [`CancelToken`]: a cancellation signal that clones share and that
//!    sticks (a task that starts waiting after the cancel sees it at once).
//! 2. [`stage`]: one pipeline stage, a task applying `f` to each item in
//!    order, with a bounded output (backpressure), ending after the last
//!    item, and stopping as soon as its consumer is gone.
//! 3. [`fan_out`]: a parallel stage, `workers` tasks sharing one input and
//!    one output; every item exactly once, in any order.
//! 4. [`fan_in`]: many inputs merged into one output; each input's order
//!    kept, nothing lost, ends with the last input.
//! 5. [`WorkerPool`]: workers over a bounded queue; `submit` waits while
//!    the queue is full; `shutdown` finishes the queued jobs, `cancel`
//!    stops everything and returns once no task of the pool is left.
//! 6. [`spawn_actor`] and [`Handle::call`]: request/response, each request
//!    carrying a `oneshot` sender for its answer; the handler's errors are
//!    answers too.
//! 7. [`join_with_timeout`]: a `select!` of a task, a timeout and a cancel
//!    token; when the task loses, it is aborted *and* waited for.
//!
//! Rules that hold everywhere:
//!
//! - Every channel is bounded (`mpsc::channel(capacity)`): a full channel
//!   makes its sender wait. Every `capacity` here is at least 1 (tokio's
//!   `mpsc::channel(0)` panics, and so may you).
//! - A channel ends when all its senders are dropped: that is how "the
//!   input is over" travels down a pipeline, after the last item.
//! - "No task left running" means it: when a call says it returns once the
//!   tasks have ended, their futures (and everything they hold) have been
//!   dropped by the time it returns. `JoinHandle::abort` only asks; and
//!   dropping a `JoinHandle` does not stop its task.
//!
//! The names, signatures and doc comments below are the contract that
//! `tests/channel_patterns.rs` grades; the private fields are a suggestion,
//! change them as you like. The README says what each test checks.

#![allow(unused)]

use std::future::Future;
use std::sync::Arc;
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
pub fn stage<T, U, F, Fut>(input: mpsc::Receiver<T>, capacity: usize, f: F) -> mpsc::Receiver<U>
where
    T: Send + 'static,
    U: Send + 'static,
    F: FnMut(T) -> Fut + Send + 'static,
    Fut: Future<Output = U> + Send + 'static,
{
    todo!("spawn a task: recv, f, send, until the input ends or the output is dropped")
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
    todo!("share the input between `workers` tasks, each with a clone of the output's sender")
}

/// Merges `inputs` into one channel of `capacity`: every item of every
/// input comes out exactly once, the items of one input in their order.
/// The output ends once every input has ended and its items have been
/// received; an input that ends early does not end the others.
///
/// # Panics
/// If `capacity` is 0.
pub fn fan_in<T: Send + 'static>(
    inputs: Vec<mpsc::Receiver<T>>,
    capacity: usize,
) -> mpsc::Receiver<T> {
    todo!("forward every input into one output; end when the last input ends")
}

// ---------------------------------------------------------------------------
// Worker pool over a bounded queue.

/// `workers` tasks that run `handler` on jobs taken from a queue of
/// `capacity` jobs.
pub struct WorkerPool<T> {
    // A suggestion: the queue's sender, and the worker tasks.
    queue: mpsc::Sender<T>,
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
        todo!("a bounded queue and `workers` tasks that take jobs from it")
    }

    /// Queues `job`. While the queue holds `capacity` jobs, waits for room:
    /// a producer can be at most `capacity` jobs ahead of the workers.
    ///
    /// # Errors
    /// Gives the job back when no worker is left to take it (they have all
    /// ended, e.g. because the handler panicked in each).
    pub async fn submit(&self, job: T) -> Result<(), T> {
        todo!()
    }

    /// Closes the queue and waits until every job queued has been run and
    /// every worker has ended.
    pub async fn shutdown(self) {
        todo!()
    }

    /// Stops now: jobs in progress are dropped at their next `.await`, jobs
    /// still queued are dropped without being run. Returns once every task
    /// of the pool has ended (nothing of the pool is left running).
    pub async fn cancel(self) {
        todo!()
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
    state: S,
    capacity: usize,
    handler: F,
) -> Handle<Req, Resp, E>
where
    S: Send + 'static,
    Req: Send + 'static,
    Resp: Send + 'static,
    E: Send + 'static,
    F: FnMut(&mut S, Req) -> Result<Resp, E> + Send + 'static,
{
    todo!("a mailbox, and a task that answers each envelope in turn")
}

impl<Req, Resp, E> Handle<Req, Resp, E> {
    /// Sends `req` (waiting for room in the mailbox) and waits for its
    /// answer.
    ///
    /// # Errors
    /// [`CallError::Failed`] with the handler's error;
    /// [`CallError::Closed`] when the actor is gone, never a hang.
    pub async fn call(&self, req: Req) -> Result<Resp, CallError<E>> {
        todo!("a oneshot for the answer, sent along with the request")
    }
}

// ---------------------------------------------------------------------------
// Cancellation and timeouts.

/// A cancellation signal shared by clones: once [`cancel`](Self::cancel)
/// is called on any clone, every clone is cancelled, for good.
#[derive(Debug, Clone)]
pub struct CancelToken {
    // A suggestion: a watch channel of "cancelled yet?".
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
        todo!()
    }

    /// Cancels the token and wakes every task waiting in
    /// [`cancelled`](Self::cancelled). Calling it again does nothing.
    pub fn cancel(&self) {
        todo!()
    }

    /// Whether the token has been cancelled.
    pub fn is_cancelled(&self) -> bool {
        todo!()
    }

    /// Completes once the token is cancelled: at once if it already is.
    pub async fn cancelled(&self) {
        todo!()
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
    task: JoinHandle<T>,
    limit: Duration,
    cancel: &CancelToken,
) -> Result<T, Stopped> {
    todo!("tokio::select! of the token, the task and a sleep")
}
