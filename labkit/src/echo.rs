//! The echo servers' shared conformance suite: [`echo_suite!`](crate::echo_suite).
//!
//! Chapter 2 builds the same TCP echo server four times (blocking threads,
//! mio, tokio, epoll by hand). They must behave the same from the outside, so
//! they share one grader. A lab's test file says:
//!
//! ```text
//! labkit::echo_suite! {
//!     binary: env!("CARGO_BIN_EXE_blocking_echo"),
//!     many: false,        // also open 1000 connections at once (labs 10-12)
//!     bounded_rss: false, // the slow reader must not grow the server past 32 MiB (labs 10-12)
//! }
//!
//! // Lab-specific tests follow, numbered from 20.
//! ```
//!
//! and gets these `#[test]` functions, numbered so that `cargo test 03`
//! still picks one step (numbers 01..19 belong to the suite; cases that do
//! not apply to a lab are not generated, so a number may be missing):
//!
//! | test | checks |
//! |---|---|
//! | `test_01_echoes_one_line` | a line comes back, byte for byte |
//! | `test_02_echoes_many_lines_on_one_connection` | one at a time, then 1000 in one write |
//! | `test_03_echoes_a_1_mib_payload_byte_for_byte` | partial reads and writes |
//! | `test_04_echoes_bytes_sent_one_at_a_time_without_waiting_for_a_newline` | fragmentation; no framing |
//! | `test_05_serves_a_second_client_while_the_first_is_idle` | concurrency at all |
//! | `test_06_serves_50_clients_at_once_with_interleaved_traffic` | no cross-talk |
//! | `test_07_echoes_everything_then_closes_after_a_half_close` | end of file ends the connection, not the echo |
//! | `test_08_survives_a_client_that_resets_mid_transfer` | RST: `ECONNRESET` / `EPIPE` are per connection, and release its socket |
//! | `test_09_serves_others_while_a_client_stops_reading` | a vanished client blocks only itself |
//! | `test_10_closes_every_finished_connection_no_fd_leak` | 200 connections, fds back to where they were |
//! | `test_11_heavy_slow_reader_gets_every_byte` (`bounded_rss: false`) or `test_11_heavy_slow_reader_gets_every_byte_in_bounded_memory` (`true`) | backpressure |
//! | `test_12_heavy_1000_concurrent_connections` (`many: true` only) | scale |
//!
//! Tests with `heavy` in their name push a lot of data or open many
//! connections; `.config/nextest.toml` runs them one at a time.
//!
//! # The spec every echo lab keeps
//!
//! An echo server writes back every byte it reads on a connection, in order,
//! to that connection only, as soon as it has read it (no framing: it does
//! not wait for a newline). When the client closes its sending side (end of
//! file), the server writes back whatever is still pending and then closes
//! the connection. Errors on one connection (a reset, a vanished client)
//! end that connection only.
//!
//! # Design
//!
//! The macro stays small: each generated test calls one plain function here
//! (`labkit::echo::one_line(bin)`), which spawns its own server
//! ([`Server::spawn`]), so tests never share state and can run in any order,
//! as threads of one process (`cargo test`) or one process each (nextest).
//! The functions use [`Client`]s made with `connect_to`, so every failure
//! shows what was sent and what came back and quotes the server's stderr as
//! `[your server]`. Facts with no event to wait for (the server's open
//! files settling after clients close) are polled with a deadline, by
//! [`settle`](crate::wait::settle).

use std::time::Duration;

use crate::client::{Client, many};
use crate::data;
use crate::server::Server;
use crate::wait::{SETTLE_DEADLINE, settle};

/// How long `send_until_stalled` waits without progress before calling the
/// client stalled (COURSE_DESIGN section 4: "about a second").
pub const STALL: Duration = Duration::from_secs(1);

/// The most a slow reader may push: a server that keeps reading while it
/// cannot write would hold all of it in memory.
pub const SLOW_READER_BYTES: usize = 64 << 20;

/// The memory bound for `bounded_rss: true`, in KiB (32 MiB).
pub const RSS_LIMIT_KIB: u64 = 32 * 1024;

/// How many connections `test_12` holds open at once.
pub const MANY: usize = 1000;

/// The suite; see the module docs. Generates numbered `#[test]` functions in
/// the calling test file.
#[macro_export]
macro_rules! echo_suite {
    (binary: $bin:expr, many: $many:tt, bounded_rss: $rss:tt $(,)?) => {
        // One line goes out and the same bytes come back: the whole contract in one step.
        #[test]
        fn test_01_echoes_one_line() {
            $crate::echo::one_line($bin)
        }

        // Lines one at a time, then 1000 in one write: a read may hold many messages.
        #[test]
        fn test_02_echoes_many_lines_on_one_connection() {
            $crate::echo::many_lines($bin)
        }

        // 1 MiB comes back byte for byte: reads and writes are partial, the server must loop.
        #[test]
        fn test_03_echoes_a_1_mib_payload_byte_for_byte() {
            $crate::echo::one_mib_payload($bin)
        }

        // Bytes arriving one per segment are echoed as they come: TCP is a stream, not messages.
        #[test]
        fn test_04_echoes_bytes_sent_one_at_a_time_without_waiting_for_a_newline() {
            $crate::echo::one_byte_at_a_time($bin)
        }

        // A second client is served while the first sits idle: one client must not block the server.
        #[test]
        fn test_05_serves_a_second_client_while_the_first_is_idle() {
            $crate::echo::second_client_while_first_idle($bin)
        }

        // 50 clients talk in turns, each gets exactly its own bytes: no cross-talk, no starvation.
        #[test]
        fn test_06_serves_50_clients_at_once_with_interleaved_traffic() {
            $crate::echo::fifty_clients_interleaved($bin)
        }

        // After the client shuts down its sending side, everything is echoed, then the server closes.
        #[test]
        fn test_07_echoes_everything_then_closes_after_a_half_close() {
            $crate::echo::half_close($bin)
        }

        // A client that resets (RST) mid-transfer breaks only its own connection.
        #[test]
        fn test_08_survives_a_client_that_resets_mid_transfer() {
            $crate::echo::reset_mid_transfer($bin)
        }

        // A client that stops reading (vanishes) blocks only itself; the others are served.
        #[test]
        fn test_09_serves_others_while_a_client_stops_reading() {
            $crate::echo::vanished_client($bin)
        }

        // After 200 connections open and close, the server's open files are back where they were.
        #[test]
        fn test_10_closes_every_finished_connection_no_fd_leak() {
            $crate::echo::no_fd_leak($bin)
        }

        $crate::echo_suite!(@slow_reader $rss, $bin);
        $crate::echo_suite!(@many $many, $bin);
    };

    (@slow_reader false, $bin:expr) => {
        // A client that pushes without reading stalls, then gets every byte back: nothing lost.
        #[test]
        fn test_11_heavy_slow_reader_gets_every_byte() {
            $crate::echo::slow_reader($bin, false)
        }
    };
    (@slow_reader true, $bin:expr) => {
        // A client that pushes without reading stalls the server (RSS stays under 32 MiB), then gets every byte back.
        #[test]
        fn test_11_heavy_slow_reader_gets_every_byte_in_bounded_memory() {
            $crate::echo::slow_reader($bin, true)
        }
    };

    (@many false, $bin:expr) => {};
    (@many true, $bin:expr) => {
        // 1000 connections open at once, each echoed: the design scales past a thread per client.
        #[test]
        fn test_12_heavy_1000_concurrent_connections() {
            $crate::echo::many_connections($bin, $crate::echo::MANY)
        }
    };
}

// ---------------------------------------------------------------------------
// The cases
// ---------------------------------------------------------------------------

/// test_01: one line.
#[track_caller]
pub fn one_line(bin: &str) {
    let server = Server::spawn(bin);
    let mut c = Client::connect_to(&server);
    c.send_line("hello, echo");
    c.expect_bytes(b"hello, echo\n");
    server.expect_alive("got one line echoed");
}

/// test_02: 20 lines one at a time, then 1000 lines in a single write.
#[track_caller]
pub fn many_lines(bin: &str) {
    let server = Server::spawn(bin);
    let mut c = Client::connect_to(&server);
    for i in 0..20 {
        let line = format!("line {i} of 20, sent on its own");
        c.send_line(&line);
        c.expect_bytes(format!("{line}\n").as_bytes());
    }
    let batch: String = (0..1000)
        .map(|i| format!("line {i} of 1000, all sent in one write\n"))
        .collect();
    c.hint(
        "after the first lines worked, a batch of 1000 lines sent in one write did not come back whole: do you echo everything each read returns (it may hold many lines, or end mid-line), and keep reading?",
    );
    c.send(batch.as_bytes());
    c.expect_bytes(batch.as_bytes());
    server.expect_alive("sent 1020 lines on one connection");
}

/// test_03: 1 MiB of non-repeating bytes.
#[track_caller]
pub fn one_mib_payload(bin: &str) {
    let server = Server::spawn(bin);
    let mut c = Client::connect_to(&server);
    let data = data::text(1 << 20, 3);
    c.send(&data);
    c.expect_bytes(&data);
    server.expect_alive("sent 1 MiB");
}

/// test_04: each byte in its own segment (the client sets `TCP_NODELAY`),
/// and no newline at the end: an echo server has no framing.
#[track_caller]
pub fn one_byte_at_a_time(bin: &str) {
    let server = Server::spawn(bin);
    let mut c = Client::connect_to(&server);
    let text = b"one byte at a time, and no newline at the end";
    for b in text {
        c.send(&[*b]);
    }
    c.hint(
        "bytes arrived one per read and the last ones had no newline: do you write back whatever each read returns, at once, rather than waiting for a full line or a full buffer?",
    );
    c.expect_bytes(text);
    server.expect_alive("sent a message one byte at a time");
}

/// test_05: the first client is served, then sits idle; a second client
/// must be served meanwhile.
#[track_caller]
pub fn second_client_while_first_idle(bin: &str) {
    let server = Server::spawn(bin);
    let mut first = Client::connect_to(&server);
    first.send_line("first client");
    first.expect_bytes(b"first client\n");
    // `first` stays connected and sends nothing more.
    let mut second = Client::connect_to(&server);
    second.hint(
        "the first client is still connected and idle: is your server stuck serving it (blocked in read) instead of accepting and serving others? Serve each connection concurrently (a thread, a task, or an event loop)",
    );
    second.send_line("second client, while the first is idle");
    second.expect_bytes(b"second client, while the first is idle\n");
    // And the first is still served too.
    first.send_line("first client again");
    first.expect_bytes(b"first client again\n");
    server.expect_alive("served two clients");
}

/// test_06: 50 clients, 5 rounds; in each round every client sends, then
/// every client reads. Each line names its client, with a length of its own.
#[track_caller]
pub fn fifty_clients_interleaved(bin: &str) {
    let server = Server::spawn(bin);
    let mut clients: Vec<Client> = (0..50).map(|_| Client::connect_to(&server)).collect();
    for c in &mut clients {
        c.hint(
            "50 clients each sent a line before any read its echo: does each connection get its own bytes back, and does the server serve all of them at once?",
        );
    }
    let line = |i: usize, round: usize| format!("client {i} round {round} {}\n", "*".repeat(i));
    for round in 0..5 {
        for (i, c) in clients.iter_mut().enumerate() {
            c.send(line(i, round).as_bytes());
        }
        for (i, c) in clients.iter_mut().enumerate() {
            c.expect_bytes(line(i, round).as_bytes());
        }
    }
    server.expect_alive("served 50 clients at once");
}

/// test_07: 256 KiB, then `shutdown(SHUT_WR)`; everything must come back,
/// then end of file.
#[track_caller]
pub fn half_close(bin: &str) {
    let server = Server::spawn(bin);
    let mut c = Client::connect_to(&server);
    let data = data::text(256 << 10, 7);
    c.send(&data);
    c.half_close();
    c.hint(
        "after the client shut down its sending side, your read returns 0 (end of file): write back anything still pending, then close the connection (return from the handler, dropping the socket). Is the socket kept alive somewhere else?",
    );
    let rest = c.read_until_closed();
    // `send` read what arrived while it wrote; `read_until_closed` returns
    // all of it that no read took yet, so `rest` is the whole echo.
    if let Some(diff) = crate::report::first_difference(&data, &rest) {
        c.report()
            .expected(format!(
                "all {} bytes back, then the connection closed",
                data.len()
            ))
            .got(format!("{} bytes back before the close\n{diff}", rest.len()))
            .hint("do you echo everything you read before you close, even what arrives just before end of file?")
            .fail();
    }
    server.expect_alive("half-closed a connection");
}

/// How many clients reset an idle connection in [`reset_mid_transfer`]:
/// several, so a rare kernel race that would hide one leak cannot hide all.
const IDLE_RESETS: usize = 8;

/// test_08: clients reset (RST) while idle, another while its echo is in
/// flight (so both the read and the write error paths run); a client
/// connected all along and a new one are still served, and every reset
/// connection's socket is released.
#[track_caller]
pub fn reset_mid_transfer(bin: &str) {
    let server = Server::spawn(bin);
    let mut other = Client::connect_to(&server);
    other.send_line("a client connected before the reset");
    other.expect_bytes(b"a client connected before the reset\n");
    let base = server.open_fds();

    // Idle resets first: everything echoed, nothing pending, so the server
    // learns of the RST only from its next read (ECONNRESET). The echo to
    // `other` in between is a barrier: an event loop has finished this
    // client's read (seen EAGAIN) before it serves `other`, so the RST
    // arrives at an idle socket and only the read's error reports it.
    // Without the barrier the RST can land inside the read loop, where a
    // second wakeup hides a mishandled error behind a clean end of file.
    for i in 0..IDLE_RESETS {
        let mut idle = Client::connect_to(&server);
        idle.send_line(&format!("this client will reset while idle {i}"));
        idle.expect_bytes(format!("this client will reset while idle {i}\n").as_bytes());
        other.send_line(&format!("barrier {i}"));
        other.expect_bytes(format!("barrier {i}\n").as_bytes());
        idle.reset();
    }

    let mut bad = Client::connect_to(&server);
    bad.send_line("this client will reset");
    bad.expect_bytes(b"this client will reset\n");
    // Push data without reading, so the server has echo in flight to a
    // socket that is about to be reset: its next read or write fails with
    // ECONNRESET or EPIPE.
    bad.send_until_stalled(&data::text(512 << 10, 8), STALL);
    bad.reset();

    other.hint(
        "another client reset its connection (RST) mid-transfer: its read or write failed with ECONNRESET or EPIPE. Does that error end only that connection's handler, not the server or the other connections?",
    );
    other.send_line("a client connected before the reset, after it");
    other.expect_bytes(b"a client connected before the reset, after it\n");
    let mut fresh = Client::connect_to(&server);
    fresh.send_line("a client connected after the reset");
    fresh.expect_bytes(b"a client connected after the reset\n");
    drop(fresh);
    // The error path releases what the connection held: its socket. A
    // /proc fact with no event to wait on, so it is polled with a deadline.
    if let Err(now) = settle(SETTLE_DEADLINE, || server.open_fds(), |n| n <= base) {
        server
            .report()
            .did(format!(
                "one client connected and was served; the server had {base} files open"
            ))
            .did(format!("{IDLE_RESETS} clients, one after another, were served, then reset their connections (RST) while idle: the server's next read fails with ECONNRESET"))
            .did("another client pushed data without reading, then reset its connection: the server's next write fails with ECONNRESET or EPIPE")
            .did("a last one connected, was served, and closed")
            .expected(format!(
                "the server's open files (/proc/{}/fd) back to {base} within {SETTLE_DEADLINE:?}",
                server.pid()
            ))
            .got(format!(
                "{now} files still open, {} more than before",
                now.saturating_sub(base)
            ))
            .hint(
                "when a read or write fails (ECONNRESET, EPIPE), do you close that connection (deregister it and drop the socket), as you do at end of file? An error that is only logged, or a WouldBlock-style retry, keeps the socket open forever",
            )
            .fail();
    }
    server.expect_alive("reset a connection mid-transfer");
}

/// test_09: one client fills the pipes and stops reading (but stays
/// connected); the others are served meanwhile.
#[track_caller]
pub fn vanished_client(bin: &str) {
    let server = Server::spawn(bin);
    let mut silent = Client::builder().recv_buffer(4096).connect_to(&server);
    silent.send_line("this client will stop reading");
    silent.expect_bytes(b"this client will stop reading\n");
    // Until it stalls: the server's writes to this client would now block.
    let sent = silent.send_until_stalled(&data::text(8 << 20, 9), STALL);

    let mut other = Client::connect_to(&server);
    other.hint(format!(
        "another client sent {sent} bytes and stopped reading its echo, so writes to it cannot proceed: does a write to that one client block the whole server (one thread for everyone, or a blocking write in an event loop)?"
    ));
    let data = data::text(256 << 10, 10);
    other.send(&data);
    other.expect_bytes(&data);
    let mut fresh = Client::connect_to(&server);
    fresh.hint(format!(
        "another client sent {sent} bytes and stopped reading its echo: does the server still accept new connections meanwhile?"
    ));
    fresh.send_line("a new client while one is stuck");
    fresh.expect_bytes(b"a new client while one is stuck\n");
    server.expect_alive("served others while one client did not read");
    drop(silent);
}

/// test_10: 4 batches of 50 connections, each proven served, then closed;
/// the server's open files must come back to where they were.
#[track_caller]
pub fn no_fd_leak(bin: &str) {
    let server = Server::spawn(bin);
    // A first connection, kept open, so that anything the server sets up
    // lazily on its first connection is already counted in the baseline.
    let mut first = Client::connect_to(&server);
    first.send_line("first");
    first.expect_bytes(b"first\n");
    let base = server.open_fds();

    for batch in 0..4 {
        let mut clients = many::connect_all_to(&server, 50);
        for (i, c) in clients.iter_mut().enumerate() {
            c.send_line(&format!("batch {batch} client {i}"));
        }
        for (i, c) in clients.iter_mut().enumerate() {
            c.expect_bytes(format!("batch {batch} client {i}\n").as_bytes());
        }
        // Dropping closes all 50 (a FIN each).
    }

    // Closing is asynchronous (each handler notices its end of file in its
    // own time) and /proc has no event to wait for: poll with a deadline.
    if let Err(now) = settle(SETTLE_DEADLINE, || server.open_fds(), |n| n <= base) {
        server
            .report()
            .did(format!(
                "one client connected and was served; the server had {base} files open"
            ))
            .did("opened 200 more connections (4 batches of 50), got each one's line echoed, closed them all")
            .expected(format!(
                "the server's open files (/proc/{}/fd) back to {base} within {SETTLE_DEADLINE:?}",
                server.pid()
            ))
            .got(format!(
                "{now} files still open, {} more than before",
                now.saturating_sub(base)
            ))
            .hint(
                "when a client closes, your read returns 0: do you then drop the socket (return from the handler)? Is a copy of it kept somewhere (a Vec of clients, a try_clone, a map never cleaned up)?",
            )
            .fail();
    }
    first.send_line("first, still served");
    first.expect_bytes(b"first, still served\n");
    server.expect_alive("opened and closed 200 connections");
}

/// test_11: a client with a small receive buffer pushes up to 64 MiB
/// without reading, until the socket stalls; with `bounded_rss` the server's
/// resident memory must then be under 32 MiB; then the client drains and
/// every byte must have come back, and the connection still works.
#[track_caller]
pub fn slow_reader(bin: &str, bounded_rss: bool) {
    let server = Server::spawn(bin);
    let mut c = Client::builder().recv_buffer(4096).connect_to(&server);
    c.send_line("before the flood");
    c.expect_bytes(b"before the flood\n");

    let data = data::text(SLOW_READER_BYTES, 11);
    let sent = c.send_until_stalled(&data, STALL);
    let what = if sent == data.len() {
        format!(
            "pushed {sent} bytes without reading any echo, and the server took them all (it never stopped reading)"
        )
    } else {
        format!(
            "pushed {sent} bytes without reading any echo, until the connection stalled for {STALL:?}"
        )
    };
    server.expect_alive(&what);

    if bounded_rss {
        let rss = server.rss_kib();
        if rss > RSS_LIMIT_KIB {
            server
                .report()
                .did("connected a client with a 4 KiB receive buffer (SO_RCVBUF), got one line echoed")
                .did(&what)
                .expected(format!(
                    "the server's resident memory (VmRSS) under {} MiB: it should stop reading from a client whose echo it cannot write",
                    RSS_LIMIT_KIB / 1024
                ))
                .got(format!("VmRSS {} MiB", rss / 1024))
                .hint(
                    "do you keep reading from a client while its echo is still waiting to be written? Then every byte it sends piles up in your buffers: stop reading (drop read interest) while output is pending, and resume when it drains (backpressure)",
                )
                .fail();
        }
    }

    c.hint(format!(
        "the client {what}, then read: every byte must come back in order. Does your server drop what a partial write did not send (write instead of write_all), or lose data when a write would block?"
    ));
    c.expect_bytes(&data[..sent]);
    c.send_line("after the flood");
    c.expect_bytes(b"after the flood\n");
    server.expect_alive("drained a slow reader");
}

/// test_12: `n` connections at once from one thread
/// ([`many::connect_all_to`]), each sends a line before any reads.
#[track_caller]
pub fn many_connections(bin: &str, n: usize) {
    // The server inherits this process's limit on open files when it is
    // spawned: raise it first, so the server can hold `n` sockets too.
    many::ensure_nofile_for(n);
    let server = Server::spawn(bin);
    let mut clients = many::connect_all_to(&server, n);
    for c in &mut clients {
        c.hint(format!(
            "{n} clients are connected at once: is each one served (not queued behind the others), and does the server have enough file descriptors?"
        ));
    }
    for (i, c) in clients.iter_mut().enumerate() {
        c.send_line(&format!("connection {i} of {n}"));
    }
    for (i, c) in clients.iter_mut().enumerate() {
        c.expect_bytes(format!("connection {i} of {n}\n").as_bytes());
    }
    server.expect_alive(format!("served {n} connections at once"));
}

// ---------------------------------------------------------------------------
// Checks for the single-threaded servers' own tests (labs 10 and 12)
// ---------------------------------------------------------------------------

/// 50 clients connected and served, and the server is still one thread: an
/// event loop does all the work. `hint` names the lab's design.
#[track_caller]
pub fn one_thread_serving_50(bin: &str, hint: &str) {
    let server = Server::spawn(bin);
    let mut clients = many::connect_all_to(&server, 50);
    for (i, c) in clients.iter_mut().enumerate() {
        c.send_line(&format!("client {i} of 50"));
    }
    for (i, c) in clients.iter_mut().enumerate() {
        c.expect_bytes(format!("client {i} of 50\n").as_bytes());
    }
    // All 50 are connected and served: any thread serving one of them
    // exists right now, so there is nothing to wait for.
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
            .hint(hint)
            .fail();
    }
    server.expect_alive("served 50 clients");
}

/// With its open-file limit at 64 and 100 clients connecting, the server
/// keeps serving the client it had, stays idle (no busy loop on EMFILE), and
/// serves new clients once the crowd leaves. `waits_in` names the call the
/// server should sleep in (`poll`, `epoll_wait`); `spin_hint` says how to
/// avoid the busy loop in the lab's design.
#[track_caller]
pub fn survives_fd_exhaustion_without_spinning(bin: &str, waits_in: &str, spin_hint: &str) {
    use crate::procfs::TICKS_PER_SECOND;
    const LIMIT: u64 = 64;
    const CROWD: usize = 100;
    let server = Server::builder(bin).nofile_limit(LIMIT).spawn();
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

    // The idle period: the crowd just sits there and the server should
    // sleep. The window is a measurement, not a synchronisation; the client
    // checks meanwhile that nothing arrives.
    let window = Duration::from_secs(2);
    let before = server.cpu_ticks();
    first.expect_silence(window);
    let used = server.cpu_ticks() - before;
    let window_ticks = window.as_secs() * TICKS_PER_SECOND;
    // A busy loop burns about all of the window (a core); a sleeping server
    // close to nothing. A quarter leaves room for a loaded machine.
    if used * 4 > window_ticks {
        server
            .report()
            .did(&did)
            .did(format!(
                "got a line echoed, then left everything idle for {window:?}"
            ))
            .expected(format!(
                "the server to sleep in {waits_in}: well under {} ms of CPU time in {window:?}",
                window_ticks * 1000 / TICKS_PER_SECOND / 4
            ))
            .got(format!(
                "it used {} ms of CPU time (/proc/{}/stat utime + stime): a busy loop",
                used * 1000 / TICKS_PER_SECOND,
                server.pid()
            ))
            .hint(spin_hint)
            .fail();
    }

    drop(crowd);
    let mut late = Client::connect_to(&server);
    late.hint(format!(
        "{did}, closed all the crowd's connections, then connected a new client: it got no echo. Once connections close the server has descriptors again: does it accept again?"
    ));
    late.send_line("after the crowd left");
    late.expect_bytes(b"after the crowd left\n");
    first.send_line("still here");
    first.expect_bytes(b"still here\n");
    server.expect_alive(format!("{did}, then closed them"));
}

// ---------------------------------------------------------------------------
// Helpers, also for labs' own tests
// ---------------------------------------------------------------------------
