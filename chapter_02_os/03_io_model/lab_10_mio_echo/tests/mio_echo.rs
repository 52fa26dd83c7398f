//! The grader for lab 10, mio_echo.
//!
//! Tests 01-12 are the echo servers' shared suite (`labkit::echo_suite!`,
//! documented in `labkit/src/echo.rs`), with the two cases an event loop
//! must pass and a thread per client need not: 1000 connections at once,
//! and a slow reader that must not grow the server's memory. Tests from 20
//! are this lab's own: the whole server runs on one thread, and it survives
//! running out of file descriptors without spinning.

const BIN: &str = env!("CARGO_BIN_EXE_mio_echo");

labkit::echo_suite! {
    binary: env!("CARGO_BIN_EXE_mio_echo"),
    many: true,
    bounded_rss: true,
}

// ---------------------------------------------------------------------------
// This lab's own tests
// ---------------------------------------------------------------------------

// With 50 clients connected and served, the server is still one thread: the event loop does all the work.
#[test]
fn test_20_runs_on_one_thread_while_serving_50_clients() {
    labkit::echo::one_thread_serving_50(
        BIN,
        "this lab is one thread with one mio::Poll: do you spawn a thread per connection, or use a thread pool or runtime?",
    );
}

// With its open-file limit at 64 and 100 clients connecting, the server keeps serving, stays idle (no busy loop on EMFILE), and serves new clients once the crowd leaves.
#[test]
fn test_21_heavy_survives_running_out_of_file_descriptors_without_spinning() {
    labkit::echo::survives_fd_exhaustion_without_spinning(
        BIN,
        "poll",
        "accept fails with EMFILE while the connection stays queued, so the listener stays readable: what does your loop do then? Retrying at once fails again forever. Keep a spare fd to close, accept and close the connection, and reopen it, or stop polling the listener until a connection closes",
    );
}
