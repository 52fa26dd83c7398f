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
//! | [`chat`] | chat-style (broadcast) servers: `join` a client and know it is registered (its probe line reached the others) |
//! | [`client`] | TCP clients with deadlines: send, read exactly, read a line, expect silence, half-close, reset; `many::connect_all` |
//! | [`faults`] | a fault-injecting TCP proxy in front of a real database or upstream: pass, latency, blackhole, reset, refuse, switched at run time |
//! | [`http`] | HTTP: a real client (reqwest with rustls/ring), raw requests and responses over a [`client::Client`] for malformed, fragmented and pipelined cases |
//! | [`http_suite`] | the HTTP servers' shared conformance suite (labs 15 and 16): `http_suite!` generates numbered tests |
//! | [`jsonlog`] | structured logs: a server's stderr as one JSON object per line (tracing-subscriber JSON), spans and fields |
//! | [`data`] | payloads in which a lost, doubled or reordered piece shows: printable [`data::text`], every byte value [`data::binary`] |
//! | [`echo`] | the echo servers' shared conformance suite: `echo_suite!` generates numbered tests |
//! | [`procfs`] | facts from `/proc`: threads, open fds, RSS, state, children, TCP and UDP queues, what a thread sleeps in |
//! | [`prom`] | the Prometheus text exposition format: a strict parser, lookups by label set, histogram series, consistency checks |
//! | [`process`] | the one child-process core under `run`, `server` and `session`: reaping without racing `kill`, killing the tree, describing an exit |
//! | [`services`] | real PostgreSQL and Redis: a fresh database or key prefix per test, a shared throwaway server when no URL is set |
//! | [`session`] | drive a running program: read stdout lines with deadlines, inspect it in `/proc` while it waits, answer on stdin; `start_role` runs a test of this binary as a child process (to SIGKILL it, or run two) |
//! | [`tasks_suite`] | the capstone's shared suite (labs 32-35): `tasks_suite!` generates numbered tests of the tasks REST API, with an observer hook for logs and metrics |
//! | [`strace`] | run under `strace` and count system calls by name |
//! | [`udp`] | a UDP socket of the test's own: receives with a deadline, fast failure when the server is parked |
//! | [`upstream`] | an HTTP upstream inside the test for proxy graders: records requests, answers as told (hang, reset, hold, stream in two parts), health endpoint, stop and restart |
//! | [`wait`] | every wait with a deadline: library calls, `/proc` facts settling, and telling a parked server from a slow one |
//!
//! Invariants: labkit never depends on a lab; every wait has a deadline and a
//! message; nothing here sleeps to synchronise (polling a
//! server's start, which has no event, is a deadline-bounded poll).

pub mod chat;
pub mod client;
pub mod data;
pub mod echo;
pub mod faults;
pub mod http;
pub mod http_suite;
pub mod jsonlog;
pub mod process;
pub mod procfs;
pub mod prom;
pub mod report;
pub mod run;
pub mod server;
pub mod services;
pub mod session;
pub mod strace;
pub mod tasks_suite;
pub mod udp;
pub mod upstream;
pub mod wait;

pub use report::Report;
pub use run::Cmd;
