//! Test support for the course's graders.
//!
//! Every lab's `tests/` uses this crate so that no grader repeats
//! spawn-and-wait code, and every failure message looks alike. It is never
//! part of a learner's API.
//!
//! | module | for |
//! |---|---|
//! | [`report`] | failure messages: what the test did, expected, got, hint |
//! | [`run`] | run a binary with arguments and stdin, with a deadline; exit code, output, peak memory |
//! | [`server`] | spawn a server lab on `127.0.0.1:0`, wait for `listening on <addr>`, kill on drop |
//! | [`client`] | TCP clients with deadlines: send, read exactly, read a line, expect silence, half-close, reset; `many::connect_all` |
//! | [`procfs`] | facts from `/proc`: threads, open fds, RSS, state, children |
//! | [`strace`] | run under `strace` and count system calls by name |
//! | [`watchdog`] | a deadline around a library call |
//!
//! Invariants: labkit never depends on a lab; every wait has a deadline and a
//! message; nothing here sleeps to synchronise.

pub mod client;
pub mod procfs;
pub mod report;
pub mod run;
pub mod server;
pub mod strace;
pub mod watchdog;

pub use report::Report;
pub use run::Cmd;
