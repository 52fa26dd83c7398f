//! Deadlines for library calls.
//!
//! A learner's `todo!()` panics, but a learner's deadlock hangs, and a hung
//! test costs minutes. [`within`] runs a call on its own thread and fails the
//! test with a clear sentence if it has not returned by the deadline; a panic
//! inside the call is passed through unchanged, so `todo!()` still reads as
//! "not yet implemented".

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::report::Report;

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
