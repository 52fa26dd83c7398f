//! The grader for lab 09, blocking_echo.
//!
//! Tests 01-11 are the echo suite every echo server of this chapter passes
//! (`labkit::echo_suite!`; see labkit/src/echo.rs for what each does). Tests
//! from 20 are about this lab's design, one thread per connection, seen
//! from the outside through `/proc/<pid>/`: its thread count follows its
//! connections, an idle client costs a thread but blocks nobody, and
//! running out of file descriptors is survived.

use labkit::client::{Client, many};
use labkit::server::Server;
use labkit::wait::{SETTLE_DEADLINE, settle};

const BIN: &str = env!("CARGO_BIN_EXE_blocking_echo");

labkit::echo_suite! {
    binary: BIN,
    many: false,
    bounded_rss: false,
}

/// How many idle clients test 20 holds open.
const IDLE: usize = 20;

// k connected clients mean k more threads, and the threads end when the clients leave.
#[test]
fn test_20_one_thread_per_connection_and_back_down_after_close() {
    let server = Server::spawn(BIN);
    let base = server.threads();

    let mut clients: Vec<Client> = (0..IDLE).map(|_| Client::connect_to(&server)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send_line(&format!("idle client {i}"));
        c.expect_bytes(format!("idle client {i}\n").as_bytes());
    }
    // Each client has had its echo, so its thread exists and now waits in
    // `read`: no settling needed for the count to be up.
    let with = server.threads();
    if with < base + IDLE {
        server
            .report()
            .did(format!("the server had {base} threads"))
            .did(format!(
                "connected {IDLE} clients, got each one's line echoed, kept them open"
            ))
            .expected(format!(
                "at least {} threads ({base} + one per connection)",
                base + IDLE
            ))
            .got(format!("{with} threads"))
            .hint("do you spawn a thread (std::thread::spawn) for each accepted connection?")
            .fail();
    }

    drop(clients);
    // A thread ends when its handler sees end of file and returns, in its
    // own time; /proc has no event to wait for, so poll with a deadline.
    if let Err(now) = settle(SETTLE_DEADLINE, || server.threads(), |n| n <= base) {
        server
            .report()
            .did(format!("the server had {base} threads, {with} with {IDLE} clients connected"))
            .did(format!("closed all {IDLE} clients"))
            .expected(format!(
                "the thread count back to {base} within {SETTLE_DEADLINE:?}"
            ))
            .got(format!("{now} threads"))
            .hint(
                "when read returns 0 (the client closed), does the handler return, so its thread ends? A loop that keeps reading after end of file never ends",
            )
            .fail();
    }
    server.expect_alive(format!("closed {IDLE} idle clients"));
}

// A client that connects and never sends a byte holds one thread, and everyone else is served.
#[test]
fn test_21_survives_a_client_that_connects_and_sends_nothing() {
    let server = Server::spawn(BIN);
    let mut mute = Client::connect_to(&server);
    let mut others: Vec<Client> = (0..5).map(|_| Client::connect_to(&server)).collect();
    for (i, c) in others.iter_mut().enumerate() {
        c.hint(
            "another client connected first and has sent nothing at all: is your accept loop stuck in that client's read?",
        );
        let data = labkit::data::text(64 << 10, i as u64);
        c.send(&data);
        c.expect_bytes(&data);
    }
    drop(others);
    // The mute client was served all along, too: it just had nothing to say.
    mute.hint(
        "this client connected first and was silent while others were served: is it still served?",
    );
    mute.send_line("finally something");
    mute.expect_bytes(b"finally something\n");
    server.expect_alive("served 5 clients while one sent nothing");
}

/// The open-file limit test 22 gives the server.
const NOFILE: usize = 32;

// Out of file descriptors, accept fails (EMFILE); the server survives and serves the waiting client once one closes.
#[test]
fn test_22_survives_running_out_of_file_descriptors() {
    let server = Server::builder(BIN).nofile_limit(NOFILE as u64).spawn();
    // Fill every free descriptor with a served connection. (Count only the
    // descriptors below the limit: one inherited with a high number, e.g.
    // from the test runner, takes no slot a new socket could use.)
    let room = NOFILE.saturating_sub(fds_below(&server, NOFILE));
    let mut held = many::connect_all_to(&server, room);
    for (i, c) in held.iter_mut().enumerate() {
        c.hint(format!(
            "the server runs with a limit of {NOFILE} open files, and the test opened {room} connections, one for each free descriptor: once they are all in use, accept fails with EMFILE (too many open files) at once. Does your accept loop survive that error (log it, pause briefly, try again) instead of panicking (unwrap) or exiting?"
        ));
        c.send_line(&format!("held {i}"));
        c.expect_bytes(format!("held {i}\n").as_bytes());
    }
    // Every descriptor is in use now, so the server's accept fails with
    // EMFILE (Linux allocates the descriptor before it waits for a
    // connection). This client completes its handshake in the kernel's
    // accept queue and waits there until a descriptor is free.
    let mut waiting = Client::connect_to(&server);
    waiting.send_line("waiting for a free descriptor");
    let first = held.remove(0);
    drop(first);
    waiting.hint(format!(
        "the server ran with a limit of {NOFILE} open files and had {room} connections open, so accept failed with EMFILE (too many open files); then one client closed. Does your accept loop survive an error (log it, pause briefly, try again) instead of panicking (unwrap) or exiting?"
    ));
    waiting.expect_bytes(b"waiting for a free descriptor\n");
    for (i, c) in held.iter_mut().enumerate() {
        c.send_line(&format!("held {} again", i + 1));
        c.expect_bytes(format!("held {} again\n", i + 1).as_bytes());
    }
    server.expect_alive("ran out of file descriptors and got one back");
}

/// How many of the server's open descriptors have a number below `limit`.
fn fds_below(server: &Server, limit: usize) -> usize {
    let dir = std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .expect("read the server's /proc/<pid>/fd");
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<usize>().ok())
        .filter(|&fd| fd < limit)
        .count()
}
