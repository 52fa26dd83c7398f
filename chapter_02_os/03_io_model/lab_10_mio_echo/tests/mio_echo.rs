//! The grader for lab 10, mio_echo.
//!
//! Tests 01-12 are the echo servers' shared suite (`labkit::echo_suite!`,
//! documented in `labkit/src/echo.rs`), with the two cases an event loop
//! must pass and a thread per client need not: 1000 connections at once,
//! and a slow reader that must not grow the server's memory. Tests from 20
//! are this lab's own: the whole server runs on one thread, and it survives
//! running out of file descriptors without spinning.

use std::time::Duration;

use labkit::client::{Client, many};
use labkit::server::Server;

const BIN: &str = env!("CARGO_BIN_EXE_mio_echo");

labkit::echo_suite! {
    binary: env!("CARGO_BIN_EXE_mio_echo"),
    many: true,
    bounded_rss: true,
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Linux reports CPU times in `/proc` in clock ticks of `USER_HZ`, which is
/// 100 on every architecture Linux supports today (`getconf CLK_TCK`).
const TICKS_PER_SECOND: u64 = 100;

/// CPU time (user + system, all threads) the process has used, in ticks:
/// fields 14 and 15 of `/proc/<pid>/stat` (`man 5 proc`).
fn cpu_ticks(server: &Server) -> u64 {
    let fields = labkit::procfs::stat_fields(server.pid()).unwrap_or_default();
    let field = |i: usize| fields.get(i).and_then(|s| s.parse::<u64>().ok());
    match (field(11), field(12)) {
        (Some(utime), Some(stime)) => utime + stime,
        _ => {
            server.expect_alive("read its CPU time");
            server
                .report()
                .did(format!("read /proc/{}/stat", server.pid()))
                .got("no utime and stime fields")
                .hint("this is a problem in the test setup, not in your code")
                .fail()
        }
    }
}

// ---------------------------------------------------------------------------
// This lab's own tests
// ---------------------------------------------------------------------------

// With 50 clients connected and served, the server is still one thread: the event loop does all the work.
#[test]
fn test_20_runs_on_one_thread_while_serving_50_clients() {
    let server = Server::spawn(BIN);
    let mut clients = many::connect_all_to(&server, 50);
    for (i, c) in clients.iter_mut().enumerate() {
        c.send_line(&format!("client {i} of 50"));
    }
    for (i, c) in clients.iter_mut().enumerate() {
        c.expect_bytes(format!("client {i} of 50\n").as_bytes());
    }
    // All 50 are connected and have been served: any thread serving one of
    // them exists right now, so there is nothing to wait for.
    let threads = server.threads();
    if threads != 1 {
        server
            .report()
            .did("connected 50 clients, each sent a line and got it back; all still connected")
            .expected(format!(
                "1 thread in the server (/proc/{}/status: Threads)",
                server.pid()
            ))
            .got(format!("{threads} threads"))
            .hint("this lab is one thread with one mio::Poll: do you spawn a thread per connection, or use a thread pool or runtime?")
            .fail();
    }
    server.expect_alive("served 50 clients");
}

// With its open-file limit at 64 and 100 clients connecting, the server keeps serving, stays idle (no busy loop on EMFILE), and serves new clients once the crowd leaves.
#[test]
fn test_21_heavy_survives_running_out_of_file_descriptors_without_spinning() {
    const LIMIT: u64 = 64;
    const CROWD: usize = 100;
    let server = Server::builder(BIN).nofile_limit(LIMIT).spawn();
    let mut first = Client::connect_to(&server);
    first.send_line("before the crowd");
    first.expect_bytes(b"before the crowd\n");

    // More connections than the server can hold: the kernel completes them
    // all (they wait in the accept queue), and the server's accept fails
    // with EMFILE once it is at its limit.
    let crowd = many::connect_all_to(&server, CROWD);
    let did = format!(
        "started the server with RLIMIT_NOFILE {LIMIT}, connected one client and got a line echoed, then opened {CROWD} more connections (more than it can accept)"
    );

    // The first client must still be served: a server stuck retrying
    // accept never gets back to its other sockets.
    first.hint(format!(
        "{did}; this client, connected before, got no answer: is your server stuck in a loop retrying accept after EMFILE (Too many open files)?"
    ));
    first.send_line("during the crowd");
    first.expect_bytes(b"during the crowd\n");

    // The idle period: the crowd just sits there. Nothing is asked of the
    // server, so it should sleep in poll. The window is a measurement, not
    // a synchronisation: the client checks meanwhile that nothing arrives.
    let window = Duration::from_secs(2);
    let before = cpu_ticks(&server);
    first.expect_silence(window);
    let used = cpu_ticks(&server) - before;
    let window_ticks = window.as_secs() * TICKS_PER_SECOND;
    // A busy loop burns about all of the window (a core); a sleeping
    // server close to nothing. A quarter leaves room for a loaded machine.
    if used * 4 > window_ticks {
        server
            .report()
            .did(&did)
            .did(format!(
                "got a line echoed, then left everything idle for {window:?}"
            ))
            .expected(format!(
                "the server to sleep in poll: well under {} ms of CPU time in {window:?}",
                window_ticks * 1000 / TICKS_PER_SECOND / 4
            ))
            .got(format!(
                "it used {} ms of CPU time (/proc/{}/stat utime + stime): a busy loop",
                used * 1000 / TICKS_PER_SECOND,
                server.pid()
            ))
            .hint("accept fails with EMFILE while the connection stays queued, so the listener stays readable: what does your loop do then? Retrying at once fails again forever. Keep a spare fd to close, accept and close the connection, and reopen it, or stop polling the listener until a connection closes")
            .fail();
    }

    // The crowd leaves; the server closes those connections and has file
    // descriptors again. A new client must be served.
    drop(crowd);
    let base_note = "closed all the crowd's connections";
    let mut late = Client::connect_to(&server);
    late.hint(format!(
        "{did}, {base_note}, then connected a new client: it got no echo. Once connections close, the server has descriptors again: does it accept again (is the listener still registered)?"
    ));
    late.send_line("after the crowd left");
    late.expect_bytes(b"after the crowd left\n");
    first.send_line("still here");
    first.expect_bytes(b"still here\n");
    server.expect_alive(format!("{did}, then {base_note}"));
}
