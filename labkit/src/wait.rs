//! Waiting, the one way every grader waits: with a deadline and a message.
//!
//! | item | for |
//! |---|---|
//! | [`within`] | a deadline around a library call (a deadlock fails in seconds, a panic passes through) |
//! | [`try_within`] | the same, with a panic turned into its message |
//! | [`within_async`] | a deadline around an `.await` on the code under test (async library and service labs) |
//! | [`expect_ok`], [`expect_err`] | the same for a call returning `Result`: it must finish, and with `Ok` (or the named error) |
//! | [`eventually`] | polling an async fact with no event to wait on (rows in `pg_stat_activity`, a key in Redis) until it holds |
//! | [`settle`] | polling a `/proc` fact that has no event to wait on, until it holds or a deadline passes |
//! | [`panic_message`] | the text of a panic payload |
//! | [`runtime`] | a tokio runtime for a grader that cannot be `#[tokio::test]` |
//! | [`ParkWatch`] | telling a parked server from a slow one while a client waits for its answer |
//!
//! # Parked, or only slow?
//!
//! An untouched starter prints its `listening on` line and sleeps forever;
//! so does a server whose event loop never registered the connection. A
//! test waiting for such a server's answer would wait out its whole read
//! deadline (5 s) for every step, and a starter's first `cargo test` would
//! take minutes to say what one look at `ss -tn` says at once: the bytes
//! the test sent are still in the server's receive queue, unread.
//!
//! So while a client waits, [`ParkWatch`] looks at the server every
//! [`SAMPLE`] and calls it *parked* only when all of these held,
//! unchanged, for [`PARKED_AFTER`]:
//! - the server's side of the connection holds unread bytes (`rx_queue` in
//!   `/proc/net/tcp`, Recv-Q in `ss`), the same number throughout; when the
//!   waiting connection holds none, another connection of the test's
//!   server that does counts (a chat: the receiver waits for a line the
//!   server never read from its sender); a connection still in the listen
//!   queue counts with nothing sent (a silent client waiting to be closed);
//! - no thread of the server is running or waiting for a CPU (state `R`)
//!   or for the disk (`D`);
//! - no thread sleeps with a timeout that will wake it soon (an
//!   `epoll_wait` with a timer pending, a back-off `sleep` before retrying
//!   an `accept` that failed with `EMFILE`): see
//!   [`procfs::sleeps_with_timeout`];
//! - no thread of the server was put on a CPU at all: the scheduler's count
//!   of time slices in `/proc/<pid>/task/<tid>/schedstat` did not move.
//!
//! A correct server never looks like that while a test waits for it: data
//! arriving on a socket it waits on wakes it at once, and a woken thread is
//! runnable (`R`) until it has run, after which its slice count has moved. A
//! server that is merely slow (a loaded machine, a handler that sleeps
//! before answering) has read the bytes, or is runnable, or has run: it
//! keeps the whole read deadline. What remains is a server that will not
//! answer: it has not read what it was sent, and nothing will wake it.
//!
//! A test can also wait for the server to act on its own (a periodic health
//! probe): then no input is involved ([`Conn::Timer`]), and the server is
//! parked when the last three conditions held: a server that will act on a
//! timer sleeps with one.
//!
//! The one thing a correct server could do to look parked is to leave a
//! connection unread on purpose with no timer set (backpressure: its output
//! to that client is full) and nothing else to do. A test meets that only
//! while it waits, on another connection, for something that needs the
//! unread input, which no README asks of a server; and the watch runs only
//! while a client waits to *receive*, or to send while receiving nothing.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::procfs::{self, Activity, Proto};
use crate::report::Report;

/// How often a waiting client looks at its server.
pub const SAMPLE: Duration = Duration::from_millis(50);

/// How long a server must show no sign of life, with the test's bytes
/// unread, to be called parked.
pub const PARKED_AFTER: Duration = Duration::from_millis(500);

/// How long a `/proc` fact (open files, threads) gets to settle after the
/// clients have closed: closing is asynchronous, the server notices each end
/// of file in its own time.
pub const SETTLE_DEADLINE: Duration = Duration::from_secs(10);

/// Runs `f` with a deadline; see the module docs. `what` says what the call
/// was ("ThreadPool::new(4) then 100 jobs"), for the failure message.
#[track_caller]
pub fn within<T, F>(deadline: Duration, what: &str, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    let handle = thread::Builder::new()
        .name(format!("labkit-watchdog: {what}"))
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawn a thread for the call under test");
    match rx.recv_timeout(deadline) {
        Ok(v) => {
            let _ = handle.join();
            v
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The call panicked: re-raise its panic so its message shows.
            match handle.join() {
                Err(payload) => std::panic::resume_unwind(payload),
                Ok(()) => unreachable!("the sender is dropped only by a panic"),
            }
        }
        // The thread is left behind: it cannot be killed, and the test ends.
        Err(mpsc::RecvTimeoutError::Timeout) => Report::new(format!("called {what}"))
            .expected(format!("it to return within {deadline:?}"))
            .got("it was still running (a deadlock, or a wait that nothing wakes?)")
            .hint("look for a lock held while waiting, a join on a thread that never ends, or a loop whose exit condition never holds")
            .fail(),
    }
}

/// Awaits `fut`, the code under test, for at most `deadline`; fails the
/// test with one sentence when it does not finish. `what` names the call
/// (`repo.transfer(a, b, 10)`). A panic in `fut` passes through.
///
/// Under `tokio::time::pause()` the deadline is in paused time: it passes
/// only when every task is idle, which is exactly a call that hangs.
pub async fn within_async<F: std::future::Future>(
    deadline: Duration,
    what: &str,
    fut: F,
) -> F::Output {
    match tokio::time::timeout(deadline, fut).await {
        Ok(v) => v,
        Err(_) => Report::new(format!("called {what}"))
            .expected(format!("it to finish within {deadline:?}"))
            .got("it was still waiting")
            .hint("what is it waiting for: a lock, a connection from a pool that is never returned, an answer nothing sends?")
            .fail(),
    }
}

/// Awaits `call`, which must finish within `deadline` with `Ok`; returns
/// the value. On `Err(e)` the test fails quoting `e` (its `Debug` and its
/// `Display`) with `hint(&e)`: the question to ask for that kind of error.
pub async fn expect_ok<T, E, F>(
    deadline: Duration,
    what: &str,
    hint: impl FnOnce(&E) -> &'static str,
    call: F,
) -> T
where
    E: std::fmt::Debug + std::fmt::Display,
    F: std::future::Future<Output = Result<T, E>>,
{
    match within_async(deadline, what, call).await {
        Ok(v) => v,
        Err(e) => Report::new(format!("called {what}"))
            .expected("Ok")
            .got(format!("Err({e:?}): {e}"))
            .hint(hint(&e))
            .fail(),
    }
}

/// Awaits `call`, which must finish within `deadline` with the error that
/// `is_want` accepts; `want` names it for the message
/// (`RepoError::NotFound`). Any other error, or an `Ok`, fails the test
/// with `hint`.
pub async fn expect_err<T, E, F>(
    deadline: Duration,
    what: &str,
    want: &str,
    is_want: impl FnOnce(&E) -> bool,
    hint: &str,
    call: F,
) where
    T: std::fmt::Debug,
    E: std::fmt::Debug + std::fmt::Display,
    F: std::future::Future<Output = Result<T, E>>,
{
    let got = match within_async(deadline, what, call).await {
        Err(e) if is_want(&e) => return,
        Err(e) => format!("Err({e:?}): {e}"),
        Ok(v) => format!("Ok({v:?})"),
    };
    Report::new(format!("called {what}"))
        .expected(format!("Err({want})"))
        .got(got)
        .hint(hint)
        .fail()
}

/// A tokio runtime for a grader that runs its async body itself rather
/// than as `#[tokio::test]`: one that holds a `TestDb` (whose drop blocks,
/// so it must outlive the runtime), or drives a server from a test thread.
/// `workers` 0 gives a current-thread runtime, more a multi-thread one.
pub fn runtime(workers: usize) -> tokio::runtime::Runtime {
    let mut b = if workers == 0 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    b.enable_all().build().expect("a tokio runtime")
}

/// Polls `check` every few milliseconds until it returns `Ok` or
/// `deadline` passes; then the test fails, quoting the last `Err` (what was
/// seen instead). For facts with no event to wait on, outside the code
/// under test: backends waiting on a lock in `pg_stat_activity`, a key a
/// service wrote. `what` is what should come true; `hint` is the question
/// for the learner when it does not.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, hint: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let seen = match check().await {
            Ok(v) => return v,
            Err(seen) => seen,
        };
        if tokio::time::Instant::now() >= until {
            Report::new(format!("waited for {what}"))
                .expected(format!("it within {deadline:?}"))
                .got(seen)
                .hint(hint)
                .fail();
        }
        // A poll interval: there is no event for these facts.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// [`within`], catching a panic of the call: `Err` holds its message.
/// For graders that report a panic in their own words ("called
/// `pool.alloc()`, expected it to return, got a panic: ...").
pub fn try_within<T, F>(deadline: Duration, what: &str, f: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| within(deadline, what, f)))
        .map_err(|p| panic_message(&*p))
}

/// The message of a panic payload (`panic!` gives a `&str` or a `String`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(a panic without a message)".to_string())
}

/// Polls `read` until `done` holds or `deadline` passes; returns the last
/// value read, `Ok` if `done` held. For operating-system facts that have no
/// event to wait for (a thread count or fd count in `/proc` settling after
/// clients close); everything else waits on an event.
pub fn settle<T: Copy>(
    deadline: Duration,
    mut read: impl FnMut() -> T,
    done: impl Fn(T) -> bool,
) -> Result<T, T> {
    let until = Instant::now() + deadline;
    loop {
        let v = read();
        if done(v) {
            return Ok(v);
        }
        if Instant::now() >= until {
            return Err(v);
        }
        // Not a synchronisation sleep: the pause between two polls of /proc.
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Which of the server's sockets holds the bytes a test is waiting on.
#[derive(Debug, Clone, Copy)]
pub enum Conn {
    /// The server's side of one TCP connection: `server` is its listening
    /// address, `client` the test's end.
    Tcp {
        server: SocketAddr,
        client: SocketAddr,
    },
    /// Any TCP connection to `server` (a real HTTP client hides its own
    /// address; the test's server has no other clients).
    AnyTcp { server: SocketAddr },
    /// The server's UDP socket at `server`.
    Udp { server: SocketAddr },
    /// The server's listening socket at `server`: its Recv-Q is the number
    /// of connections waiting to be accepted.
    Listener { server: SocketAddr },
    /// Nothing of the test's: the test waits for the server to act on its
    /// own, on a timer (a health probe every `--health-interval-ms`). Such
    /// a server sleeps with a timer between its turns; one asleep without
    /// any, with no thread run, will never act.
    Timer,
}

/// What a parked server looked like when the watch gave up on it.
#[derive(Debug, Clone)]
pub struct Parked {
    /// Bytes unread in the server's receive queue.
    pub unread: u64,
    /// Whether the server had accepted the connection (TCP); a connection
    /// still in the accept queue has not been.
    pub accepted: bool,
    /// Whether the unread bytes were on another connection of the test than
    /// the one waiting (a chat: the sender's line never read, so no
    /// receiver gets it).
    pub elsewhere: bool,
    /// How long the server showed no sign of life.
    pub quiet_for: Duration,
    /// The server's threads, all asleep.
    pub threads: usize,
}

impl Parked {
    /// One sentence on what was seen, for the report's `got`, e.g. "the
    /// server has not read the 12 bytes sent: they have been in its
    /// receive queue for 0.5 s (ss -tn shows Recv-Q 12) while none of its 1
    /// threads ran".
    pub fn describe(&self, conn: Conn) -> String {
        let secs = self.quiet_for.as_secs_f64();
        let threads = match self.threads {
            1 => "its only thread did not run".to_string(),
            n => format!("none of its {n} threads ran"),
        };
        match conn {
            Conn::Udp { .. } => format!(
                "the server has not received the datagram the test sent: it has been waiting in the server's socket for {secs:.1} s (ss -uan shows Recv-Q {}) and {threads} at all",
                self.unread
            ),
            Conn::Listener { .. } => format!(
                "the server has not accepted any of the {} connections waiting in its listen queue for {secs:.1} s (ss -tln shows Recv-Q {} on its listener), and {threads} at all",
                self.unread, self.unread
            ),
            Conn::Timer => format!(
                "the server has done nothing on its own for {secs:.1} s: {threads} at all, and none sleeps with a timer that would wake it"
            ),
            _ if !self.accepted && self.elsewhere => format!(
                "the server never accepted the connection that sent what this client is waiting for: it has waited {secs:.1} s in the listen queue with the {} bytes sent still unread (ss -tn shows Recv-Q {}), and {threads} at all",
                self.unread, self.unread
            ),
            _ if !self.accepted && self.unread == 0 => format!(
                "the server never accepted this connection: it has waited {secs:.1} s in the listen queue (ss -tln shows it in the Recv-Q of the listener), and {threads} at all"
            ),
            _ if !self.accepted => format!(
                "the server never accepted this connection: it has waited {secs:.1} s in the listen queue with the {} bytes sent still unread (ss -tn shows Recv-Q {}), and {threads} at all",
                self.unread, self.unread
            ),
            _ if self.elsewhere => format!(
                "the server has not read the {} bytes another client of this test sent (what this client is waiting for): they have been in its receive queue for {secs:.1} s (ss -tn shows Recv-Q {}) and {threads} at all",
                self.unread, self.unread
            ),
            _ => format!(
                "the server has not read the {} bytes waiting for it: they have been in its receive queue for {secs:.1} s (ss -tn shows Recv-Q {}) and {threads} at all",
                self.unread, self.unread
            ),
        }
    }

    /// Where to look, for the report's `hint`.
    pub fn hint(&self, conn: Conn) -> &'static str {
        match conn {
            Conn::Udp { .. } => {
                "your server is asleep with a datagram waiting: does it call recv_from in a loop on the socket it bound (not a second socket)?"
            }
            Conn::Timer => {
                "your server is asleep with no timer set: is the periodic task (a thread with a sleep loop, or tokio::time::interval in a spawned task) started at all?"
            }
            Conn::Listener { .. } => {
                "your server is asleep with connections waiting to be accepted: does it call accept in a loop (in an event loop: is the listener registered for readable events, and do you accept until WouldBlock)?"
            }
            _ if !self.accepted => {
                "your server is asleep and has not accepted the connection: does it call accept in a loop (in an event loop: is the listener registered for readable events)?"
            }
            _ => {
                "your server is asleep with input waiting: is the connection registered with your event loop for readable events, and do you read until WouldBlock each time it is readable?"
            }
        }
    }
}

/// Watches a server while a client waits; see "Parked, or only slow?".
#[derive(Debug)]
pub struct ParkWatch {
    pid: u32,
    conn: Conn,
    /// The first sample of the current quiet stretch: when, and what.
    quiet: Option<(Instant, Sample)>,
    last_look: Option<Instant>,
}

/// What one look at the server saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sample {
    unread: u64,
    accepted: bool,
    elsewhere: bool,
    activity: Activity,
}

impl ParkWatch {
    /// A watch on process `pid` for the bytes waiting on `conn`.
    pub fn new(pid: u32, conn: Conn) -> Self {
        ParkWatch {
            pid,
            conn,
            quiet: None,
            last_look: None,
        }
    }

    /// Which socket the watch looks at.
    pub fn conn(&self) -> Conn {
        self.conn
    }

    /// Forgets the quiet stretch so far: call it when the wait made progress
    /// (bytes arrived), since the server is evidently alive.
    pub fn reset(&mut self) {
        self.quiet = None;
    }

    /// Looks at the server (at most once per [`SAMPLE`]); `Some` once it has
    /// been parked for [`PARKED_AFTER`].
    pub fn look(&mut self) -> Option<Parked> {
        let now = Instant::now();
        if self.last_look.is_some_and(|t| now - t < SAMPLE) {
            return None;
        }
        self.last_look = Some(now);
        let Some(sample) = self.sample() else {
            self.quiet = None;
            return None;
        };
        match self.quiet {
            Some((since, first)) if first == sample => {
                let quiet_for = now - since;
                (quiet_for >= PARKED_AFTER).then_some(Parked {
                    unread: sample.unread,
                    accepted: sample.accepted,
                    elsewhere: sample.elsewhere,
                    quiet_for,
                    threads: sample.activity.threads,
                })
            }
            _ => {
                self.quiet = Some((now, sample));
                None
            }
        }
    }

    /// A sample, or `None` when the server is not quiet with bytes unread
    /// (or is gone: its exit is reported elsewhere).
    fn sample(&self) -> Option<Sample> {
        let activity = procfs::activity(self.pid)?;
        if activity.busy > 0 || activity.timed > 0 {
            return None;
        }
        // Any connection to the server with bytes unread: what a client
        // waits on may come from another client's input (a broadcast).
        let any = |server: SocketAddr| {
            procfs::sockets(Proto::Tcp)
                .into_iter()
                .filter(|s| s.local == server && s.state == procfs::TCP_ESTABLISHED)
                .max_by_key(|s| s.rx_queue)
                .map(|s| (s.rx_queue, s.inode != 0))
        };
        let (unread, accepted, elsewhere) = match self.conn {
            Conn::Tcp { server, client } => {
                let s = procfs::tcp_connection(server, client)?;
                // Not accepted counts even with nothing sent: a silent
                // client waiting to be closed (a handshake timeout) waits
                // on a server that has not taken the connection at all.
                if s.rx_queue > 0 || s.inode == 0 {
                    (s.rx_queue, s.inode != 0, false)
                } else {
                    let (unread, accepted) = any(server)?;
                    (unread, accepted, true)
                }
            }
            Conn::AnyTcp { server } => {
                let (unread, accepted) = any(server)?;
                (unread, accepted, false)
            }
            Conn::Udp { server } => {
                let s = procfs::sockets(Proto::Udp)
                    .into_iter()
                    .find(|s| s.local == server)?;
                (s.rx_queue, true, false)
            }
            Conn::Listener { server } => {
                let s = procfs::sockets(Proto::Tcp)
                    .into_iter()
                    .find(|s| s.local == server && s.state == procfs::TCP_LISTEN)?;
                (s.rx_queue, true, false)
            }
            Conn::Timer => (0, true, false),
        };
        let timer = matches!(self.conn, Conn::Timer);
        (timer || unread > 0 || (!accepted && !elsewhere)).then_some(Sample {
            unread,
            accepted,
            elsewhere,
            activity,
        })
    }
}

/// Runs `f` on a helper thread while `watch` looks at the server; returns
/// `f`'s result, or `Err` with what was seen once the server is parked. For
/// waits labkit cannot slice itself, such as a real HTTP client's request,
/// whose own timeout bounds `f`. On `Err` the helper thread is left to end
/// on its own (killing the server, as the failing test does, ends it).
pub fn watching<T, F>(mut watch: ParkWatch, f: F) -> Result<T, Parked>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    let handle = thread::Builder::new()
        .name("labkit-watched-call".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawn a thread for the watched call");
    loop {
        match rx.recv_timeout(SAMPLE) {
            Ok(v) => return Ok(v),
            Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
                Err(payload) => std::panic::resume_unwind(payload),
                Ok(()) => unreachable!("the sender is dropped only by a panic"),
            },
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(p) = watch.look() {
                    return Err(p);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_value() {
        assert_eq!(within(Duration::from_secs(5), "add", || 1 + 1), 2);
    }

    #[test]
    #[should_panic(expected = "was still running")]
    fn fails_a_call_that_hangs() {
        within(
            Duration::from_millis(50),
            "recv on a channel nobody sends to",
            || {
                let (_tx, rx) = mpsc::channel::<()>();
                let _ = rx.recv();
            },
        );
    }

    #[test]
    #[should_panic(expected = "not yet implemented")]
    fn passes_a_panic_through() {
        within(Duration::from_secs(5), "todo", || -> u8 { todo!() });
    }
}
