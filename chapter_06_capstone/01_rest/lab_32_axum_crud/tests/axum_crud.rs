//! The grader for lab 32, tasks_mem: the tasks REST service in memory.
//!
//! Tests 01 to 18 are the capstone's shared suite (`labkit::tasks_suite`,
//! the same for labs 32 to 35): each starts its own `tasks_mem` on
//! `127.0.0.1:0` and speaks HTTP to it, a real client for most requests
//! and raw sockets where the bytes on the wire are the point (requests
//! held in flight, garbage, resets). Lab 32 has no observer: there are no
//! logs or metrics to grade yet.

use labkit::server::Server;
use labkit::tasks_suite::App;

/// Starts the lab's server: one process, nothing to keep alive beside it.
fn app() -> App {
    App::new(Server::spawn(env!("CARGO_BIN_EXE_tasks_mem")))
}

labkit::tasks_suite! { app: crate::app }
