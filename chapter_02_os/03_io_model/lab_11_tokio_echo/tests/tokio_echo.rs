//! The grader for lab 11, tokio_echo.
//!
//! Tests 01-12 are the echo suite every echo server of this chapter passes
//! (`labkit::echo_suite!`; see labkit/src/echo.rs for what each does), here
//! with 1000 concurrent connections and a memory bound for the slow reader.
//! Tests from 20 are about this lab: a clean exit on SIGTERM and SIGINT with
//! clients still connected, an OS thread count that does not grow with
//! the connections (`/proc/<pid>/status`), and running out of file
//! descriptors without exiting or spinning.

use labkit::client::{Client, many};
use labkit::server::Server;

const BIN: &str = env!("CARGO_BIN_EXE_tokio_echo");

labkit::echo_suite! {
    binary: BIN,
    many: true,
    bounded_rss: true,
}

/// Connects `n` clients and proves each one is served; they stay idle.
fn idle_clients(server: &Server, n: usize) -> Vec<Client> {
    let mut clients: Vec<Client> = (0..n).map(|_| Client::connect_to(server)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send_line(&format!("idle client {i}"));
        c.expect_bytes(format!("idle client {i}\n").as_bytes());
    }
    clients
}

/// Sends `signal` with idle clients connected and expects exit code 0; then
/// the clients see their connections closed.
fn exits_cleanly_on(signal: i32, name: &str) {
    let server = Server::spawn(BIN);
    let mut clients = idle_clients(&server, 3);
    let status = server.stop_with(signal);
    if status.code() != Some(0) {
        let how = match status.code() {
            Some(c) => format!("exited with code {c}"),
            None => "was killed by the signal (its default action)".to_string(),
        };
        server
            .report()
            .did("connected 3 clients, got each one's line echoed, left them connected and idle")
            .did(format!("sent {name}"))
            .expected(format!("the server to exit with code 0 within 5s of {name}"))
            .got(format!("the server {how}"))
            .hint(format!(
                "do you wait for {name} (tokio::signal::unix::signal, or tokio::signal::ctrl_c for SIGINT) alongside accept, with tokio::select!, then return from main? Install the handler before printing `listening on`"
            ))
            .fail();
    }
    // The process is gone, so its sockets are closed.
    for c in &mut clients {
        c.expect_closed();
    }
}

// On SIGTERM the server stops accepting and exits 0, even with idle clients still connected.
#[test]
fn test_20_exits_0_on_sigterm_with_idle_clients_connected() {
    exits_cleanly_on(libc::SIGTERM, "SIGTERM");
}

// On SIGINT (Ctrl-C) the server stops accepting and exits 0, even with idle clients still connected.
#[test]
fn test_21_exits_0_on_sigint_with_idle_clients_connected() {
    exits_cleanly_on(libc::SIGINT, "SIGINT");
}

/// How many idle clients test 22 holds open.
const IDLE: usize = 200;

/// How many threads beyond the count with one client test 22 allows: the
/// runtime's blocking pool may start a few, but not one per connection.
const SPARE_THREADS: usize = 16;

// 200 idle clients do not add OS threads: tasks, not threads, serve connections.
#[test]
fn test_22_thread_count_does_not_grow_with_connections() {
    let server = Server::spawn(BIN);
    let first = idle_clients(&server, 1);
    let base = server.threads();
    many::ensure_nofile_for(IDLE);
    let mut clients = many::connect_all_to(&server, IDLE);
    for (i, c) in clients.iter_mut().enumerate() {
        c.send_line(&format!("idle client {i}"));
    }
    for (i, c) in clients.iter_mut().enumerate() {
        c.expect_bytes(format!("idle client {i}\n").as_bytes());
    }
    // Every client has had its echo, so whatever serves it exists now.
    let with = server.threads();
    if with > base + SPARE_THREADS {
        server
            .report()
            .did(format!("connected 1 client, got its echo; the server had {base} threads"))
            .did(format!(
                "connected {IDLE} more clients, got each one's line echoed, left them idle"
            ))
            .expected(format!(
                "at most {} threads: the runtime's workers serve every connection",
                base + SPARE_THREADS
            ))
            .got(format!("{with} threads"))
            .hint(
                "do you serve each connection with tokio::spawn (a task), not std::thread::spawn or spawn_blocking (a thread each)? Blocking std::net I/O inside a task also needs a thread per connection",
            )
            .fail();
    }
    server.expect_alive(format!("held {IDLE} idle connections"));
    drop(first);
}

// With its open-file limit at 64 and 100 clients connecting, the server keeps serving, stays idle (no busy loop on EMFILE), and serves new clients once the crowd leaves.
#[test]
fn test_23_heavy_survives_running_out_of_file_descriptors_without_spinning() {
    labkit::echo::survives_fd_exhaustion_without_spinning(
        BIN,
        "epoll_wait (the runtime's driver)",
        "accept fails with EMFILE while the connection stays queued, so the listener stays ready and the next accept fails at once: log the error and pause (tokio::time::sleep) before accepting again; returning the error with `?` ends the accept loop and the server",
    );
}
