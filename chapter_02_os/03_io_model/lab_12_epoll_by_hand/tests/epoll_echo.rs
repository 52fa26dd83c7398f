//! The grader for lab 12, epoll by hand.
//!
//! Tests 01-12 are the echo servers' shared suite (`labkit::echo_suite!`,
//! documented in `labkit/src/echo.rs`), run on `epoll_echo ADDR` (echo
//! mode), with 1000 connections at once and a slow reader in bounded memory.
//! Tests from 20 are this lab's own: one thread, then one test for each bug
//! of the public epoll framework the README tells about (a connection closed
//! after its first reply, data lost when it arrives with the FIN, a
//! descriptor closed twice, a busy loop on `EMFILE`), then broadcast mode.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use labkit::Report;
use labkit::chat::join;
use labkit::client::Client;
use labkit::data;
use labkit::server::Server;
use labkit::strace::{Syscall, find_in_path, parse};
use labkit::wait::{SETTLE_DEADLINE, settle};

const BIN: &str = env!("CARGO_BIN_EXE_epoll_echo");

labkit::echo_suite! {
    binary: env!("CARGO_BIN_EXE_epoll_echo"),
    many: true,
    bounded_rss: true,
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The calls in the trace that return or take a socket: `accept`/`accept4`
/// returning fd N, and `close(N)` with its result.
fn read_trace(path: &Path) -> Vec<Syscall> {
    parse(&fs::read_to_string(path).unwrap_or_default())
}

/// Fds returned by accept calls, in order.
fn accepted(calls: &[Syscall]) -> Vec<i64> {
    calls
        .iter()
        .filter(|c| c.name.starts_with("accept"))
        .filter_map(|c| c.ret_value().filter(|&fd| fd >= 0))
        .collect()
}

/// Whether every accepted fd except the last `open` ones has been closed
/// after its accept.
fn all_closed_but(calls: &[Syscall], open: usize) -> bool {
    let mut live: Vec<i64> = Vec::new();
    let mut seen = 0;
    for c in calls {
        if c.name.starts_with("accept") {
            if let Some(fd) = c.ret_value().filter(|&fd| fd >= 0) {
                live.push(fd);
                seen += 1;
            }
        } else if c.name == "close" && c.ret_value() == Some(0) {
            let fd = c.first_arg();
            live.retain(|&l| Some(l) != fd);
        }
    }
    seen > open && live.len() <= open
}

// ---------------------------------------------------------------------------
// This lab's own tests
// ---------------------------------------------------------------------------

// With 50 clients connected and served, the server is still one thread: the event loop does all the work.
#[test]
fn test_20_runs_on_one_thread_while_serving_50_clients() {
    labkit::echo::one_thread_serving_50(
        BIN,
        "this lab is one thread around epoll_wait: do you spawn a thread per connection or use a pool?",
    );
}

// 200 request/reply round trips on one connection: a reply does not end the connection (the framework closed after its first reply).
#[test]
fn test_21_keeps_a_connection_open_for_many_exchanges() {
    let server = Server::spawn(BIN);
    let mut c = Client::connect_to(&server);
    c.send_line("exchange 1 of 200");
    c.expect_bytes(b"exchange 1 of 200\n");
    c.hint("the first exchange worked, a later one did not: does your loop close a connection after it has replied once? It closes only on end of file or an error");
    for i in 2..=200 {
        let line = format!("exchange {i} of 200");
        c.send_line(&line);
        c.expect_bytes(format!("{line}\n").as_bytes());
    }
    server.expect_alive("made 200 exchanges on one connection");
}

// Data and the FIN are already both waiting when the server first looks at the connection: every byte is echoed before it closes.
#[test]
fn test_22_echoes_data_that_arrives_together_with_the_fin() {
    let server = Server::spawn(BIN);
    let mut warm = Client::connect_to(&server);
    warm.send_line("warm up");
    warm.expect_bytes(b"warm up\n");

    // Freeze the server so that the connection, its data and its FIN all
    // reach the kernel before the server can see any of them: one event
    // will then report data and hang-up at once. Whether SIGSTOP has taken
    // effect is a /proc fact with no event: poll it with a deadline.
    server.signal(libc::SIGSTOP);
    let stopped = settle(
        SETTLE_DEADLINE,
        || labkit::procfs::state(server.pid()),
        |s| s == Some('T'),
    );
    if stopped.is_err() {
        server.signal(libc::SIGCONT);
        server.expect_alive("sent SIGSTOP");
        server
            .report()
            .did("sent SIGSTOP to the server")
            .expected("its state in /proc to become T (stopped)")
            .got("it did not stop")
            .hint("this is a problem in the test setup, not in your code")
            .fail();
    }
    let data = data::text(48 << 10, 22);
    let mut c = Client::connect_to(&server);
    c.send(&data);
    c.half_close();
    server.signal(libc::SIGCONT);

    c.hint("the data and the FIN arrived before your server looked: one event said both 'readable' and 'hung up' (EPOLLIN with EPOLLRDHUP or EPOLLHUP). Do you close on the hang-up flag before reading? Read until recv returns 0, echo everything, then close");
    let back = c.read_until_closed();
    if let Some(diff) = labkit::report::first_difference(&data, &back) {
        c.report()
            .expected(format!(
                "all {} bytes back, then the connection closed",
                data.len()
            ))
            .got(format!("{} bytes back before the close: {diff}", back.len()))
            .hint("data that arrives with the FIN must still be read and echoed: read until recv returns 0, write everything pending, then close")
            .fail();
    }
    warm.send_line("still served");
    warm.expect_bytes(b"still served\n");
    server.expect_alive("sent 48 KiB and a FIN while the server was stopped");
}

// Under strace, every accepted socket is closed exactly once and no close fails with EBADF: a second close of a reused fd number would hit another client's connection.
#[test]
fn test_23_closes_each_accepted_socket_exactly_once() {
    let Some(strace) = find_in_path("strace") else {
        Report::new("looked for strace on PATH")
            .expected("strace to be installed: this test counts the server's close calls")
            .got("strace is not installed")
            .hint("install it (Debian/Ubuntu: `sudo apt-get install strace`) or run `cargo course doctor`")
            .fail();
    };
    let dir = tempfile::tempdir().expect("create a temporary directory for the trace");
    let trace = dir.path().join("trace.txt");
    // A wrapper that runs the server under strace with the arguments the
    // test gives it (the listen address first), so `Server` can start it
    // like any server and read its `listening on` line.
    let wrapper = dir.path().join("traced_epoll_echo");
    fs::write(
        &wrapper,
        "#!/bin/sh\nexec \"$STRACE\" -f -qq -a0 -o \"$TRACE\" -e trace=accept,accept4,close -- \"$LAB_BIN\" \"$@\"\n",
    )
    .expect("write the strace wrapper");
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755))
        .expect("make the strace wrapper executable");
    let server = Server::builder(&wrapper)
        .env("STRACE", &strace)
        .env("TRACE", &trace)
        .env("LAB_BIN", BIN)
        .spawn();
    // Dropping `server` kills strace and the lab under it (its descendant).

    // Ways a connection can end: a plain close, a half-close after data,
    // a reset.
    for i in 0..10 {
        let mut c = Client::connect_to(&server);
        c.send_line(&format!("closes normally {i}"));
        c.expect_bytes(format!("closes normally {i}\n").as_bytes());
    }
    for i in 0..5 {
        let mut c = Client::connect_to(&server);
        c.send_line(&format!("half-closes {i}"));
        c.half_close();
        c.read_until_closed();
    }
    // A reset while idle: the echo to `barrier` shows the event loop has
    // finished this client's read, so only the next read's ECONNRESET
    // reports the RST (see `labkit::echo::reset_mid_transfer`).
    let mut barrier = Client::connect_to(&server);
    for i in 0..8 {
        let mut c = Client::connect_to(&server);
        c.send_line(&format!("resets {i}"));
        c.expect_bytes(format!("resets {i}\n").as_bytes());
        barrier.send_line(&format!("barrier {i}"));
        barrier.expect_bytes(format!("barrier {i}\n").as_bytes());
        c.reset();
    }
    drop(barrier);
    let did = "ran the server under strace; 24 clients connected, got a line echoed and left (10 closed, 5 half-closed first, 8 reset while idle, 1 closed)";
    // Whether the server has closed them all yet has no event to wait for:
    // poll the trace with a deadline.
    if settle(
        SETTLE_DEADLINE,
        || all_closed_but(&read_trace(&trace), 0),
        |done| done,
    )
    .is_err()
    {
        let calls = read_trace(&trace);
        server
            .report()
            .did(did)
            .expected(format!("a close for each of the {} accepted sockets within {SETTLE_DEADLINE:?}", accepted(&calls).len()))
            .got("some accepted sockets were never closed")
            .hint("when recv returns 0 or an error, do you remove the connection (dropping its OwnedFd)?")
            .quote("strace", calls.iter().rev().take(20).rev().map(|c| c.line() + "\n").collect::<String>())
            .fail();
    }
    // One more exchange: the server has gone back to epoll_wait since it
    // handled those closes, so anything it did after them is in the trace.
    let mut last = Client::connect_to(&server);
    last.send_line("last");
    last.expect_bytes(b"last\n");

    let calls = read_trace(&trace);
    // Each accept opens fd N; from then until the next accept that returns
    // N, exactly one close(N) may happen. A close that fails with EBADF
    // closed something already closed.
    let mut open: Vec<i64> = Vec::new();
    let mut problem = None;
    for c in &calls {
        if c.name.starts_with("accept") {
            if let Some(fd) = c.ret_value().filter(|&fd| fd >= 0) {
                open.push(fd);
            }
        } else if c.name == "close" {
            if c.ret.contains("EBADF") {
                problem = Some(format!(
                    "`{}`: a close of a descriptor that was already closed",
                    c.line()
                ));
                break;
            }
            let fd = c.first_arg();
            open.retain(|&l| Some(l) != fd);
        }
    }
    if let Some(problem) = problem {
        let tail: String = calls
            .iter()
            .rev()
            .take(12)
            .rev()
            .map(|c| c.line() + "\n")
            .collect();
        server
            .report()
            .did(did)
            .did("then one more client got a line echoed")
            .expected("each accepted fd closed exactly once")
            .got(problem)
            .hint("who closes a connection's fd? If it is an OwnedFd (or a TcpStream), dropping it closes it: do not also call libc::close on it. Had the number been reused by a new connection in between, the second close would have cut that stranger off")
            .quote("strace (accept and close calls)", tail)
            .fail();
    }
    server.expect_alive(did);
}

// With its open-file limit at 64 and 100 clients connecting, the server keeps serving, stays idle (no busy loop on EMFILE), and serves new clients once the crowd leaves.
#[test]
fn test_24_heavy_survives_running_out_of_file_descriptors_without_spinning() {
    labkit::echo::survives_fd_exhaustion_without_spinning(
        BIN,
        "epoll_wait",
        "accept fails with EMFILE while the connection stays queued: with a level-triggered listener, epoll_wait reports it again at once, forever; and accept fails with EMFILE even when the queue is empty. Keep a spare fd to trade for the waiting connection (then close it), and stop when the queue is empty",
    );
}

// Broadcast mode: a line from one client reaches every other client, and not the sender.
#[test]
fn test_25_broadcast_sends_each_line_to_every_other_client_not_the_sender() {
    let server = Server::builder(BIN).arg("broadcast").spawn();
    let mut a = Client::connect_to(&server);
    let mut b = join(&server, "b", &mut [&mut a]);
    let mut c = join(&server, "c", &mut [&mut a, &mut b]);

    a.send_line("hello from a");
    // First prove the others got it...
    for (name, o) in [("b", &mut b), ("c", &mut c)] {
        o.hint(format!("a sent a line; {name} is connected and registered (its probe reached the others) but did not get it: do you send to every connection except the sender?"));
        o.expect_bytes(b"hello from a\n");
    }
    // ...then that the sender did not: the next thing `a` receives must be
    // b's next line. Had the server echoed a's line back to a, it would
    // have written it before b even received it, so it would come first.
    b.send_line("from b");
    a.hint("a's next bytes should be b's line: did a get its own line back? Broadcast skips the sender");
    a.expect_bytes(b"from b\n");
    c.expect_bytes(b"from b\n");
    server.expect_alive("broadcast between three clients");
}

// Broadcast mode: when a client resets and another closes, the rest keep talking, and a newcomer joins.
#[test]
fn test_26_broadcast_keeps_serving_the_others_when_clients_leave() {
    let server = Server::builder(BIN).arg("broadcast").spawn();
    let mut a = Client::connect_to(&server);
    let mut b = join(&server, "b", &mut [&mut a]);
    let c = join(&server, "c", &mut [&mut a, &mut b]);
    let d = join(&server, "d", &mut [&mut a, &mut b]);
    c.reset();
    drop(d);

    a.send_line("after c and d left");
    b.hint("c reset its connection and d closed; then a sent a line and b did not get it: does a failed send to a departed client stop the broadcast, or take the server down?");
    b.expect_bytes(b"after c and d left\n");
    let mut e = join(&server, "e", &mut [&mut a, &mut b]);
    b.send_line("welcome e");
    a.expect_bytes(b"welcome e\n");
    e.expect_bytes(b"welcome e\n");
    server.expect_alive("had clients leave during a broadcast");
}
