//! Tests of `labkit::server` and `labkit::client` against a real server,
//! the `labkit_fixture` binary (tests/fixtures/fixture.rs), whose second
//! argument picks a behaviour. Each failure mode is provoked for real and its
//! message checked, because the messages are what learners read.

use std::io::Read;
use std::net::TcpListener;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use labkit::client::{Client, many};
use labkit::server::Server;

const FIXTURE: &str = env!("CARGO_BIN_EXE_labkit_fixture");

/// The fixture in `mode`.
fn fixture(mode: &str) -> Server {
    Server::builder(FIXTURE).arg(mode).spawn()
}

/// The message of the panic `f` raises (it must raise one).
fn panic_text(f: impl FnOnce()) -> String {
    let err = catch_unwind(AssertUnwindSafe(f)).expect_err("expected the call to fail the test");
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

fn assert_contains(text: &str, part: &str) {
    assert!(text.contains(part), "expected {part:?} in:\n{text}");
}

// ---- server: startup ----

// The address comes from the `listening on` line and accepts connections.
#[test]
fn test_01_spawn_reads_the_listening_address() {
    let server = Server::spawn(FIXTURE);
    assert!(server.addr().ip().is_loopback());
    assert_ne!(server.addr().port(), 0);
    assert!(server.pid() > 0);
    assert!(server.is_alive());
    let mut c = Client::connect_to(&server);
    c.send_line("hi").expect_bytes(b"hi\n");
    server.expect_alive("sent one line");
}

// Extra arguments come after the address; environment variables are set.
#[test]
fn test_02_extra_arguments_and_environment_reach_the_server() {
    let server = Server::builder(FIXTURE)
        .args(["echo", "extra argument"])
        .env("LABKIT_TEST_VAR", "hello")
        .spawn();
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", server.pid())).unwrap();
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    assert_eq!(
        args[1..4],
        [&b"127.0.0.1:0"[..], b"echo", b"extra argument"]
    );
    let environ = std::fs::read(format!("/proc/{}/environ", server.pid())).unwrap();
    assert!(
        environ
            .split(|&b| b == 0)
            .any(|v| v == b"LABKIT_TEST_VAR=hello")
    );
}

// `nofile_limit` sets the server's RLIMIT_NOFILE, soft and hard.
#[test]
fn test_03_nofile_limit_is_set_in_the_server() {
    let server = Server::builder(FIXTURE).nofile_limit(64).spawn();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers, ["64", "64"], "{line}");
}

// A server that exits before listening fails with its exit code.
#[test]
#[should_panic(expected = "the server exited with code 3 before printing `listening on <addr>`")]
fn test_04_a_server_that_exits_early_fails_with_its_exit_code() {
    fixture("exit-early");
}

// ... and the failure quotes what it printed on stderr.
#[test]
fn test_05_an_early_exit_quotes_the_servers_stderr() {
    let text = panic_text(|| {
        fixture("exit-early");
    });
    assert_contains(
        &text,
        "[your server] error: cannot read the configuration file",
    );
    assert_contains(
        &text,
        "[test] started: labkit_fixture 127.0.0.1:0 exit-early",
    );
}

// A server that prints something else first fails, showing what it printed.
#[test]
#[should_panic(
    expected = "the server printed \"hello from the server\\n\" instead of `listening on <addr>`"
)]
fn test_06_a_server_that_prints_something_else_first_fails_showing_it() {
    fixture("wrong-line");
}

// A server that never prints the line fails at the deadline.
#[test]
#[should_panic(
    expected = "the server did not print `listening on <addr>` within 300ms (it printed nothing on stdout)"
)]
fn test_07_a_server_that_never_listens_fails_at_the_deadline() {
    Server::builder(FIXTURE)
        .arg("never-listen")
        .ready_deadline(Duration::from_millis(300))
        .spawn();
}

// Printing the requested port 0 instead of the bound one is caught.
#[test]
#[should_panic(expected = "the server printed port 0")]
fn test_08_printing_port_zero_fails() {
    fixture("port-zero");
}

// ---- server: stdout, liveness, signals ----

// Stdout after the listening line fails `check_quiet_stdout`.
#[test]
#[should_panic(
    expected = "the server printed to stdout after `listening on`: 17 bytes, starting \"client connected\\n\""
)]
fn test_09_stdout_after_the_listening_line_fails_the_check() {
    let server = fixture("chatty-stdout");
    Client::connect_to(&server)
        .send_line("x")
        .expect_bytes(b"x\n");
    server.check_quiet_stdout();
}

// ... and fails at the end of the test even without an explicit check.
#[test]
#[should_panic(expected = "the server printed to stdout after `listening on`")]
fn test_10_stdout_after_the_listening_line_fails_when_the_server_is_dropped() {
    let server = fixture("chatty-stdout");
    Client::connect_to(&server)
        .send_line("x")
        .expect_bytes(b"x\n");
}

// `expect_alive` names what the test did and how the server ended.
#[test]
#[should_panic(expected = "the server exited with code 101 (a panic) after the test sent an X")]
fn test_11_expect_alive_fails_after_a_crash() {
    let server = fixture("crash-on-x");
    let mut c = Client::connect_to(&server);
    c.send(b"ab").expect_bytes(b"ab");
    server.expect_alive("sent \"ab\"");
    c.send(b"X").expect_closed();
    server.expect_alive("sent an X");
}

// SIGTERM to a server without a handler ends it by that signal.
#[test]
fn test_12_stop_with_returns_the_exit_status() {
    use std::os::unix::process::ExitStatusExt;
    let server = fixture("echo");
    let status = server.stop_with(libc::SIGTERM);
    assert_eq!(status.signal(), Some(libc::SIGTERM));
    assert!(!server.is_alive());

    let graceful = fixture("graceful");
    Client::connect_to(&graceful)
        .send_line("x")
        .expect_bytes(b"x\n");
    let status = graceful.stop_with(libc::SIGTERM);
    assert_eq!(status.code(), Some(0));
    assert_contains(&graceful.stderr_tail(), "shutting down");
}

// A server that ignores SIGTERM fails `stop_with` at its deadline.
#[test]
#[should_panic(expected = "the server was still running 300ms after the test sent SIGTERM")]
fn test_13_stop_with_fails_when_the_server_does_not_exit() {
    let server = fixture("ignore-term");
    server.stop_with_deadline(libc::SIGTERM, Duration::from_millis(300));
}

// /proc facts: one thread and one descriptor per connection in the fixture.
#[test]
fn test_14_proc_helpers_count_threads_and_fds() {
    let server = fixture("echo");
    let (threads, fds) = (server.threads(), server.open_fds());
    let clients: Vec<Client> = (0..3)
        .map(|i| {
            let mut c = Client::connect_to(&server);
            c.send_line(&format!("{i}"));
            c.expect_bytes(format!("{i}\n").as_bytes());
            c
        })
        .collect();
    assert!(server.threads() >= threads + 3);
    assert!(server.open_fds() >= fds + 3);
    assert!(server.rss_kib() > 0);
    drop(clients);
}

// Reports and the stderr tail include everything logged before the query.
#[test]
fn test_15_report_and_stderr_tail_quote_the_server() {
    let server = fixture("log");
    Client::connect_to(&server)
        .send_line("hello")
        .expect_bytes(b"hello\n");
    assert_contains(&server.stderr_tail(), "got line: hello\n");
    let report = server.report().expected("a").got("b").to_string();
    assert_contains(
        &report,
        "[test] started: labkit_fixture 127.0.0.1:0 log (pid ",
    );
    assert_contains(&report, "[your server] got line: hello\n");
}

// Only the newest 200 lines of stderr are kept.
#[test]
fn test_16_the_stderr_tail_is_bounded() {
    let server = fixture("log");
    let text: String = (0..300).map(|i| format!("{i}\n")).collect();
    Client::connect_to(&server)
        .send(text.as_bytes())
        .expect_bytes(text.as_bytes());
    let tail = server.stderr_tail();
    let lines: Vec<&str> = tail.lines().collect();
    assert_eq!(lines.len(), labkit::server::STDERR_TAIL_LINES);
    assert_eq!(lines[0], "got line: 100");
    assert_eq!(lines[199], "got line: 299");
}

// Dropping the handle kills and reaps the server.
#[test]
fn test_17_drop_kills_and_reaps_the_server() {
    let server = fixture("echo");
    let pid = server.pid();
    assert!(labkit::procfs::state(pid).is_some());
    drop(server);
    assert_eq!(
        labkit::procfs::state(pid),
        None,
        "no process, not even a zombie"
    );
}

// ---- client ----

// Lines and exact reads, with bytes left over kept for the next read.
#[test]
fn test_18_sends_and_reads_lines_and_bytes() {
    let server = fixture("echo");
    let mut c = Client::connect_to(&server);
    c.send(b"one\ntwo\nthree");
    assert_eq!(c.read_line(), "one\n");
    assert_eq!(c.read_line(), "two\n");
    assert_eq!(c.read_exact(5), b"three");
    c.send_line("four").expect_bytes(b"four\n");
    assert_eq!(c.sent_total(), 18);
    assert_eq!(c.received_total(), 18);
}

// A payload larger than all socket buffers round-trips: `send` reads while
// it writes, so an echo cannot deadlock it.
#[test]
fn test_19_a_16_mib_payload_round_trips_without_deadlock() {
    let server = fixture("echo");
    let data: Vec<u8> = (0..16 << 20).map(|i: u32| (i % 251) as u8).collect();
    let mut c = Client::connect_to(&server);
    c.send(&data).expect_bytes(&data);
}

// A server that echoes only part says how much came back.
#[test]
#[should_panic(
    expected = "sent 1048576 bytes, got 65536 back before the connection went quiet for 300ms (the server is still running)"
)]
fn test_20_a_partial_echo_fails_saying_what_came_back() {
    let server = fixture("partial");
    let data = vec![b'x'; 1 << 20];
    let mut c = Client::connect_to(&server);
    c.set_read_deadline(Duration::from_millis(300));
    c.send(&data).expect_bytes(&data);
}

// A wrong byte is pointed at.
#[test]
#[should_panic(
    expected = "first difference at byte 0 (line 1): byte 0 is \"H\" but should be \"h\""
)]
fn test_21_a_wrong_answer_shows_the_first_difference() {
    let server = fixture("upper");
    Client::connect_to(&server)
        .send_line("hello")
        .expect_bytes(b"hello\n");
}

// Silence holds on a server that does not answer.
#[test]
fn test_22_expect_silence_passes_when_nothing_arrives() {
    let server = fixture("silent");
    Client::connect_to(&server)
        .send_line("hello")
        .expect_silence(Duration::from_millis(200));
}

// ... and fails, showing what arrived, on one that does.
#[test]
#[should_panic(expected = "6 bytes within 200ms: \"hello\\n\"")]
fn test_23_expect_silence_fails_showing_what_arrived() {
    let server = fixture("echo");
    Client::connect_to(&server)
        .send_line("hello")
        .expect_silence(Duration::from_millis(200));
}

// Closing: a server that closes at once, and an echo after a half-close.
#[test]
fn test_24_expect_closed_and_half_close() {
    let closing = fixture("close");
    Client::connect_to(&closing).expect_closed();

    let echo = fixture("echo");
    let mut c = Client::connect_to(&echo);
    c.send(b"abc").half_close();
    assert_eq!(c.read_until_closed(), b"abc");
}

// A connection left open fails `expect_closed` at the deadline.
#[test]
#[should_panic(expected = "the connection was still open after 200ms of silence")]
fn test_25_expect_closed_fails_on_an_open_connection() {
    let server = fixture("silent");
    let mut c = Client::connect_to(&server);
    c.set_read_deadline(Duration::from_millis(200));
    c.expect_closed();
}

// A client failure shows the transcript, the server's state and its stderr.
#[test]
fn test_26_failures_quote_the_transcript_and_the_server() {
    let server = fixture("silent");
    let text = panic_text(|| {
        let mut c = Client::connect_to(&server);
        c.set_read_deadline(Duration::from_millis(200));
        c.hint("do you answer at all?");
        c.send_line("hello");
        c.read_line();
    });
    assert_contains(&text, &format!("[test] connected to {}\n", server.addr()));
    assert_contains(&text, "[test] sent 6 bytes: \"hello\\n\"\n");
    assert_contains(&text, "[test] expected: a line ending in \"\\n\"\n");
    assert_contains(
        &text,
        "[test] got: sent 6 bytes, got 0 back before the connection went quiet for 200ms (the server is still running)\n",
    );
    assert_contains(&text, "[hint] do you answer at all?\n");
    assert_contains(&text, "[your server] mode silent\n");
}

// A crash seen by a client is reported with the exit code and the panic.
#[test]
fn test_27_a_crash_is_reported_by_the_client() {
    let server = fixture("crash-on-x");
    let text = panic_text(|| {
        let mut c = Client::connect_to(&server);
        c.send_line("X");
        c.read_line();
    });
    assert_contains(
        &text,
        "then the server closed the connection (the server exited with code 101 (a panic))",
    );
    // Rust 1.89+ prints the thread id after the name: `thread 'main' (42)`.
    assert_contains(&text, "[your server] thread 'main'");
    assert_contains(&text, "panicked at");
    assert_contains(&text, "[your server] the fixture received an X");
}

// A listener that is gone: the message says the server printed the line but
// refuses connections.
#[test]
#[should_panic(expected = "but refuses connections there")]
fn test_28_connecting_to_a_closed_listener_fails_with_advice() {
    let server = fixture("refuse");
    Client::connect_to(&server);
}

// `reset` closes with RST: the peer's read fails with ECONNRESET.
#[test]
fn test_29_reset_sends_a_reset() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = Client::connect(listener.local_addr().unwrap());
    let (mut peer, _) = listener.accept().unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.reset();
    let err = peer.read(&mut [0u8; 16]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
}

// A small receive buffer, and writes that stop when a server does not read.
#[test]
fn test_30_recv_buffer_and_send_until_stalled() {
    let server = fixture("no-read");
    let mut c = Client::builder().recv_buffer(4096).connect_to(&server);
    let rcvbuf = socket2::SockRef::from(&c).recv_buffer_size().unwrap();
    assert!(rcvbuf <= 16384, "SO_RCVBUF is {rcvbuf}");
    let data = vec![0u8; 64 << 20];
    let sent = c.send_until_stalled(&data, Duration::from_millis(300));
    assert!(sent > 0 && sent < data.len(), "sent {sent}");
}

// `send` fails, saying so, when the server stops reading.
#[test]
#[should_panic(expected = "then the server stopped reading for 300ms")]
fn test_31_send_fails_when_the_server_stops_reading() {
    let server = fixture("no-read");
    let mut c = Client::connect_to(&server);
    c.set_read_deadline(Duration::from_millis(300));
    c.send(&vec![0u8; 64 << 20]);
}

// Hundreds of connections, more than a listen backlog, from one thread.
#[test]
fn test_32_connect_all_opens_many_connections() {
    // Before spawning, so that the server inherits the raised limit too.
    many::ensure_nofile_for(300);
    let server = fixture("echo");
    let mut clients = many::connect_all_to(&server, 300);
    assert_eq!(clients.len(), 300);
    for (i, c) in clients.iter_mut().enumerate() {
        c.send_line(&i.to_string());
    }
    for (i, c) in clients.iter_mut().enumerate() {
        c.expect_bytes(format!("{i}\n").as_bytes());
    }
    assert!(server.open_fds() >= 300);
}

// A server out of file descriptors: client failures say it is at its limit.
#[test]
#[should_panic(expected = "at its limit of 64 (RLIMIT_NOFILE): accept fails with EMFILE")]
fn test_33_a_server_at_its_fd_limit_is_named_in_failures() {
    let server = Server::builder(FIXTURE).nofile_limit(64).spawn();
    let mut clients = many::connect_all_to(&server, 100);
    for c in &mut clients {
        c.set_read_deadline(Duration::from_millis(300));
        c.send_line("x").expect_bytes(b"x\n");
    }
}
