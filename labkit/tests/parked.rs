//! Tests of early detection (`labkit::wait::ParkWatch`): a server that will
//! never answer fails a test in well under a second, and a server that is
//! merely slow keeps the whole deadline and passes. The servers are the
//! `labkit_fixture` binary in its `park`, `no-read`, `slow`, `late-accept`
//! and `udp-*` modes.
//!
//! "Fails fast" is checked against the read deadline it would otherwise
//! wait out (5 s): the bound is the point of the feature, not a performance
//! figure.

use std::process::Command;
use std::time::{Duration, Instant};

use labkit::client::{Client, READ_DEADLINE, many};
use labkit::server::Server;
use labkit::udp::Probe;
use labkit::wait::panic_message;

const FIXTURE: &str = env!("CARGO_BIN_EXE_labkit_fixture");

fn fixture(mode: &str) -> Server {
    Server::builder(FIXTURE).arg(mode).spawn()
}

/// The failure `f` raises and how long it took to raise it.
fn failure(f: impl FnOnce()) -> (String, Duration) {
    let started = Instant::now();
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .expect_err("expected the call to fail the test");
    (panic_message(&*err), started.elapsed())
}

fn assert_contains(text: &str, part: &str) {
    assert!(text.contains(part), "expected {part:?} in:\n{text}");
}

#[track_caller]
fn assert_fast(took: Duration) {
    assert!(
        took < READ_DEADLINE / 2,
        "the parked server was recognised only after {took:?}; the read deadline is {READ_DEADLINE:?}"
    );
}

// A server that never accepts: the bytes wait in the listen queue, and the test says so at once.
#[test]
fn test_01_a_parked_server_fails_fast_naming_the_listen_queue() {
    let server = fixture("park");
    let mut c = Client::connect_to(&server);
    let (text, took) = failure(|| {
        c.send(b"hello, 12 b\n");
        c.expect_bytes(b"hello, 12 b\n");
    });
    assert_fast(took);
    assert_contains(&text, "never accepted this connection");
    assert_contains(&text, "ss -tn shows Recv-Q 12");
    assert_contains(&text, "does it call accept in a loop");
}

// A server that accepts but never reads: the bytes wait in its receive queue.
#[test]
fn test_02_a_server_that_accepts_and_never_reads_fails_fast() {
    let server = fixture("no-read");
    let mut c = Client::connect_to(&server);
    let (text, took) = failure(|| {
        c.send_line("are you there?");
        c.read_line();
    });
    assert_fast(took);
    assert_contains(&text, "has not read the 15 bytes waiting for it");
    assert_contains(&text, "registered with your event loop");
}

// A slow but correct server: it reads, sleeps 2 s, then answers; the test passes.
#[test]
fn test_03_a_server_that_reads_then_sleeps_2_s_passes() {
    let server = fixture("slow");
    let mut c = Client::connect_to(&server);
    c.send_line("take your time");
    c.expect_bytes(b"take your time\n");
    c.send(b"and again");
    c.expect_bytes(b"and again");
}

// A server asleep on a timer before it accepts (a back-off) will wake by itself: not parked.
#[test]
fn test_04_a_server_sleeping_on_a_timer_before_accepting_passes() {
    let server = fixture("late-accept");
    let mut c = Client::connect_to(&server);
    c.send_line("wake up soon");
    c.expect_bytes(b"wake up soon\n");
}

// A server that reads and answers nothing keeps the whole deadline: only unread input is "parked".
#[test]
fn test_05_a_server_that_reads_and_never_answers_keeps_the_deadline() {
    let server = fixture("silent");
    let mut c = Client::connect_to(&server);
    c.set_read_deadline(Duration::from_millis(1500));
    let (text, took) = failure(|| {
        c.send_line("hello");
        c.read_line();
    });
    assert!(
        took >= Duration::from_millis(1500),
        "gave up after {took:?}"
    );
    assert_contains(&text, "went quiet for 1.5s");
    assert_contains(&text, "nothing came back at all");
}

// Connections piling up unaccepted in the listen queue of a parked server fail fast too.
#[test]
fn test_06_many_connections_to_a_parked_server_fail_fast() {
    let server = fixture("park");
    let (text, took) = failure(|| {
        many::connect_all_to(&server, 300);
    });
    assert_fast(took);
    assert_contains(&text, "waiting in its listen queue");
}

// A real HTTP client's request to a parked server fails fast (the watch runs beside it).
#[test]
fn test_07_a_request_with_a_real_client_to_a_parked_server_fails_fast() {
    let server = fixture("park");
    let url = labkit::http::url(&server, "/");
    let (text, took) = failure(|| {
        let _ = server.watched("sent GET / with a real HTTP client", move || {
            labkit::http::client().get(url).send().map(|r| r.status())
        });
    });
    assert_fast(took);
    assert_contains(&text, "never accepted this connection");
}

// A datagram left in a parked UDP server's socket fails fast; a working one is echoed.
#[test]
fn test_08_udp_a_parked_server_fails_fast_and_a_working_one_echoes() {
    let parked = fixture("udp-park");
    let probe = Probe::new();
    probe.send(parked.addr(), b"ping");
    let (text, took) = failure(|| {
        probe.recv_from(&parked, "sent a 4-byte datagram", "do you recv_from?");
    });
    assert_fast(took);
    assert_contains(&text, "has not received the datagram");

    let server = fixture("udp-echo");
    probe.send(server.addr(), b"ping");
    let (got, from) = probe.recv_from(&server, "sent a 4-byte datagram", "do you recv_from?");
    assert_eq!((got.as_slice(), from), (&b"ping"[..], server.addr()));
}

// A failed report prints the report and no labkit backtrace, even with RUST_BACKTRACE=1.
#[test]
fn test_09_a_report_prints_without_a_backtrace_even_with_rust_backtrace_set() {
    for setting in ["1", "full"] {
        let out = Command::new(FIXTURE)
            .args(["127.0.0.1:0", "report-fails"])
            .env("RUST_BACKTRACE", setting)
            .output()
            .expect("run the fixture");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_contains(
            &err,
            "[test] expected: one thing\n[test] got: another\n[hint] look here",
        );
        assert!(
            !err.contains("stack backtrace"),
            "RUST_BACKTRACE={setting}:\n{err}"
        );
        assert!(
            !err.contains("panicked at"),
            "RUST_BACKTRACE={setting}:\n{err}"
        );
    }
}

// A panic in the learner's own code keeps its backtrace when one is asked for.
#[test]
fn test_10_a_learners_panic_keeps_its_backtrace() {
    let out = Command::new(FIXTURE)
        .args(["127.0.0.1:0", "learner-panics"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run the fixture");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_contains(&err, "not yet implemented: the learner's own panic");
    assert_contains(&err, "stack backtrace");
}

// A broadcast that never comes: the receiver waits for a line the server never read from its
// sender; the unread bytes are on the sender's connection, and the test still fails fast.
#[test]
fn test_11_a_receiver_waiting_on_another_clients_unread_line_fails_fast() {
    let server = fixture("no-read");
    let mut receiver = Client::connect_to(&server);
    let mut sender = Client::connect_to(&server);
    let (text, took) = failure(|| {
        sender.send_line("hello, everyone");
        receiver.read_line();
    });
    assert_fast(took);
    assert_contains(
        &text,
        "has not read the 16 bytes another client of this test sent",
    );
}

// A silent client waiting to be closed (a handshake timeout) on a server that never accepted
// it: nothing was sent, but the connection sits in the listen queue, and the test fails fast.
#[test]
fn test_12_a_silent_client_never_accepted_fails_fast() {
    let server = fixture("park");
    let mut c = Client::connect_to(&server);
    let (text, took) = failure(|| {
        c.expect_closed();
    });
    assert_fast(took);
    assert_contains(&text, "never accepted this connection");
    assert_contains(&text, "Recv-Q of the listener");
}

// Waiting for the server to act on its own (a health probe): one asleep with no timer set is
// parked within a second, one with a timer pending (the late-accept fixture's back-off) is not.
#[test]
fn test_13_a_server_asleep_with_no_timer_never_acts_on_its_own() {
    use labkit::wait::{Conn, PARKED_AFTER, ParkWatch};
    let look_for = |server: &Server, how_long: Duration| {
        let mut watch = ParkWatch::new(server.pid(), Conn::Timer);
        let until = Instant::now() + how_long;
        while Instant::now() < until {
            if let Some(p) = watch.look() {
                return Some(p.describe(Conn::Timer));
            }
            // Between looks: ParkWatch samples at most once per SAMPLE anyway.
            std::thread::sleep(labkit::wait::SAMPLE);
        }
        None
    };
    let parked = fixture("park");
    let seen = look_for(&parked, PARKED_AFTER * 4).expect("a parked server was not recognised");
    assert_contains(&seen, "none sleeps with a timer");
    let waiting = fixture("late-accept");
    assert_eq!(
        look_for(&waiting, PARKED_AFTER + Duration::from_millis(300)),
        None
    );
}
