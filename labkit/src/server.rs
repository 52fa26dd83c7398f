//! Spawn a server lab, wait until it listens, watch it, and kill it on drop.
//!
//! ```no_run
//! use labkit::{client::Client, server::Server};
//! let server = Server::spawn("/path/to/echo"); // env!("CARGO_BIN_EXE_echo") in a grader
//! let mut client = Client::connect_to(&server);
//! client.send_line("hi");
//! client.expect_bytes(b"hi\n");
//! server.expect_alive("sent one line");
//! ```
//!
//! # The contract it checks
//!
//! A server lab (COURSE_DESIGN.md, section 3) takes its listen address as
//! the first argument, binds it, prints exactly one line `listening on
//! <actual address>` to stdout, and logs to stderr from then on. [`Server`]
//! passes `127.0.0.1:0` (the kernel picks a free port, so tests never fight
//! over fixed ports), waits for that line with a deadline and parses the
//! address out of it. When the line does not come it fails with one sentence
//! saying why: the server exited first (with its exit code and stderr), it
//! printed something else first (quoted), or it printed nothing in time.
//!
//! # Draining the pipes
//!
//! A pipe holds 64 KiB; a server that logs more than that to a pipe nobody
//! reads blocks inside `write`, and the test would blame its networking. So
//! each pipe has a thread that waits (`poll`) until the pipe has data and
//! then drains it. The reading itself always happens under the state lock,
//! on a non-blocking pipe, and any query ([`Server::stderr_tail`],
//! [`Server::check_quiet_stdout`], a report) first drains the pipe itself
//! under that lock. That makes every query exact, not racy: whatever the
//! server wrote before the test asked is seen, with no sleep. (If a dedicated
//! thread did blocking reads, a line written before the test's check could
//! sit in that thread's buffer, not yet recorded, when the check runs.)
//!
//! Only bounded tails are kept: the last [`STDERR_TAIL_LINES`] lines of
//! stderr and the first 4 KiB of any stdout after the `listening on` line.
//! A grader that reads the server's logs line by line (structured logging:
//! every line is one JSON object) asks for every line with
//! [`ServerBuilder::keep_stderr`], then marks a point with
//! [`Server::stderr_mark`] and reads or waits for the lines written since
//! ([`Server::stderr_lines_since`], [`Server::wait_stderr_lines`]).
//! Later stdout is a failure (logs belong on stderr), reported by
//! [`Server::check_quiet_stdout`], by [`Server::expect_alive`] and
//! [`Server::stop_with`], and when the `Server` is dropped at the end of a
//! test that has not failed already.
//!
//! # Reaping without racing `kill`
//!
//! The process is labkit's one core, [`crate::process`]: it reaps the
//! server without racing a signal ([`Server::signal`] is the one way a
//! grader signals its server), and kills it with everything it started.
//! Its reaper records the exit here too and wakes whoever waits on the
//! server's state.
//!
//! # Knowing that it is dying
//!
//! When a server crashes, the kernel closes its sockets (the test sees EOF)
//! slightly before the process becomes a zombie. To say "the server exited
//! with code 101 (a panic)" rather than "still running" in that window,
//! [`Server::is_alive`] also reads the `PF_EXITING` flag of `/proc/<pid>/stat`,
//! which Linux sets at the very start of process exit, before any file is
//! closed; a dying server is then waited for (with a deadline) to get its
//! exit status.
//!
//! # What it does not do
//!
//! The server stays in the test's process group: nextest kills a timed-out
//! test's whole group, and a Ctrl-C at the terminal reaches it too, so no
//! server outlives its test. It does not set `PR_SET_PDEATHSIG`, which fires
//! when the *thread* that spawned the child exits, and would kill a server
//! shared between the tests of one binary.

use std::collections::VecDeque;

use std::fmt::Display;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{ChildStderr, ChildStdout, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

pub use crate::process::describe_exit;
use crate::process::signal_short_name;
use crate::process::{Launch, Process, launch_setters};
use crate::report::{Report, show};
use crate::wait::{Conn, ParkWatch};

/// How long a server gets to print `listening on <addr>` unless the test
/// sets another deadline with [`ServerBuilder::ready_deadline`]. Generous,
/// because a loaded machine (two cores, other builds) can be slow to start.
pub const READY_DEADLINE: Duration = Duration::from_secs(10);

/// How long [`Server::stop_with`] waits for the server to exit, and how long
/// a drop waits for a killed server to be reaped.
pub const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// How many lines of stderr are kept (the newest ones).
pub const STDERR_TAIL_LINES: usize = 200;

/// The longest stderr line kept by [`ServerBuilder::keep_stderr`]; a longer
/// one is cut there (and so no longer parses, if it was JSON).
pub const KEPT_LINE_MAX: usize = 64 * 1024;

/// A point in a server's stderr: the number of complete lines written
/// before it; see [`Server::stderr_mark`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct StderrMark(pub usize);

impl StderrMark {
    /// The start of the server's stderr.
    pub const START: StderrMark = StderrMark(0);
}

/// The longest stderr line kept, and the most stdout read while looking for
/// the first line: a server that prints megabytes without a newline must not
/// fill the test's memory.
const LINE_MAX: usize = 4096;

/// How much stdout after the `listening on` line is kept for the message.
const LATE_STDOUT_KEEP: usize = 4096;

/// The most one drain reads from a pipe while holding the lock, so that a
/// server writing without pause cannot keep a query waiting forever.
const PUMP_MAX: usize = 1 << 20;

/// `PF_EXITING` from the kernel's `include/linux/sched.h`: set when a task
/// starts to exit, before its files are closed.
const PF_EXITING: u64 = 0x4;

/// The server's placeholder for the address in messages.
const LINE: &str = "`listening on <addr>`";

/// Options for spawning a server; see [`Server::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until you call `spawn`"]
pub struct ServerBuilder {
    /// The program and its arguments, the listen address (`127.0.0.1:0`,
    /// so the kernel picks a free port) first.
    launch: Launch,
    /// `RLIMIT_NOFILE` for the child, for fd-exhaustion tests.
    nofile: Option<u64>,
    ready_deadline: Duration,
    /// Keep every stderr line, not only the tail.
    keep_stderr: bool,
}

impl ServerBuilder {
    launch_setters!("the server, after its listen address");

    /// Sets the server's limit on open files (soft and hard) to `n`, e.g. 64
    /// to test what it does when `accept` fails with `EMFILE`. Lowering the
    /// hard limit too means the server cannot simply raise it back. `n` may
    /// also be higher than the default soft limit, up to the hard limit, for
    /// servers that must hold many connections.
    pub fn nofile_limit(mut self, n: u64) -> Self {
        self.nofile = Some(n);
        self
    }

    /// How long the server gets to print `listening on <addr>`.
    pub fn ready_deadline(mut self, deadline: Duration) -> Self {
        self.ready_deadline = deadline;
        self
    }

    /// Keeps every line the server writes to stderr (each cut at
    /// [`KEPT_LINE_MAX`] bytes), not only the last [`STDERR_TAIL_LINES`], for
    /// graders that read its logs: [`Server::stderr_lines_since`],
    /// [`Server::wait_stderr_lines`]. Memory grows with the log, so only for
    /// servers that log a line or a few per request.
    pub fn keep_stderr(mut self) -> Self {
        self.keep_stderr = true;
        self
    }

    /// Starts the server and waits until it prints `listening on <addr>`;
    /// fails the test with one sentence saying why when it does not.
    #[track_caller]
    pub fn spawn(self) -> Server {
        let command_line = self.launch.command_line();
        let mut command = self.launch.command();
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(n) = self.nofile {
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: the closure runs in the forked child before exec and
            // only calls setrlimit, which is async-signal-safe, on a value
            // copied into the closure; it allocates nothing.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }

        // The state exists before the process so that the reaper's
        // callback can record the exit in it and wake the waiters; the
        // pipes are put in as soon as the process has started.
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                exit: None,
                out: None,
                err: None,
                stdout: StdoutLog::default(),
                stderr: StderrLog {
                    all: self.keep_stderr.then(Vec::new),
                    ..StderrLog::default()
                },
            }),
            changed: Condvar::new(),
            quoted: AtomicBool::new(false),
        });
        let on_exit = {
            let shared = Arc::clone(&shared);
            move |status| {
                let mut st = shared.lock();
                st.exit = Some(status);
                st.pump();
                drop(st);
                shared.changed.notify_all();
            }
        };
        let (process, pipes) = match Process::spawn(&mut command, on_exit) {
            Ok(p) => p,
            Err(e) => {
                let hint = match self.nofile {
                    Some(n) => format!(
                        "the test lowers or raises the server's open-file limit to {n}: is that above the hard limit (`ulimit -Hn`)?"
                    ),
                    None => "does the lab build? try `cargo build` in the lab folder".to_string(),
                };
                Report::new(format!("started: {command_line}"))
                    .expected("the server to start")
                    .got(format!("could not start it: {e}"))
                    .hint(hint)
                    .fail()
            }
        };
        let pid = process.pid();
        let out = pipes.stdout.expect("stdout is piped");
        let err = pipes.stderr.expect("stderr is piped");
        let (out_fd, err_fd) = (out.as_raw_fd(), err.as_raw_fd());
        // Reads happen under the lock and must never block; see the module docs.
        set_nonblocking(out_fd);
        set_nonblocking(err_fd);
        {
            let mut st = shared.lock();
            st.out = Some(out);
            st.err = Some(err);
        }
        for (fd, which) in [(out_fd, Stream::Out), (err_fd, Stream::Err)] {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("labkit-server-{pid}-{which:?}"))
                .spawn(move || drain(&shared, fd, which))
                .expect("spawn a thread to drain the server's output");
        }

        // From here on the `Server` owns the child: a failure below panics,
        // and its drop kills and reaps the process.
        let mut server = Server {
            view: ServerView { shared, process },
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            command_line,
        };
        server.addr = server.wait_ready(self.ready_deadline);
        server
    }
}

/// A running server lab; see the module docs. Killed (SIGKILL) and reaped
/// when dropped.
#[derive(Debug)]
pub struct Server {
    view: ServerView,
    /// The address from its `listening on` line.
    addr: SocketAddr,
    /// The command as a learner would type it, for messages.
    command_line: String,
}

impl Server {
    /// Spawns `program` (usually `env!("CARGO_BIN_EXE_<name>")`) with
    /// `127.0.0.1:0` as its only argument and waits for `listening on <addr>`.
    #[track_caller]
    pub fn spawn(program: impl AsRef<Path>) -> Server {
        Server::builder(program).spawn()
    }

    /// A builder for extra arguments, environment, a lowered open-file limit
    /// or another deadline; finish with [`ServerBuilder::spawn`].
    pub fn builder(program: impl AsRef<Path>) -> ServerBuilder {
        let mut launch = Launch::new(program);
        launch.arg("127.0.0.1:0");
        ServerBuilder {
            launch,
            nofile: None,
            ready_deadline: READY_DEADLINE,
            keep_stderr: false,
        }
    }

    /// The address the server said it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.view.pid()
    }

    /// The command line it was started with, as a learner would type it.
    pub fn command_line(&self) -> &str {
        &self.command_line
    }

    /// Whether the server is still running (and not in the middle of
    /// exiting). A check of this instant: to know that a request did not
    /// crash it, first wait for its answer (or for the connection to close).
    pub fn is_alive(&self) -> bool {
        self.view.is_alive()
    }

    /// How the server ended, if it has (without waiting).
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.view.shared.lock().exit
    }

    /// Waits up to `deadline` for the server to exit on its own (after a
    /// signal the test sent earlier, say); `None` if it still runs. Woken
    /// by the exit itself, not by polling.
    pub fn wait_exit(&self, deadline: Duration) -> Option<ExitStatus> {
        self.view
            .shared
            .wait_until(Instant::now() + deadline, |st| st.exit.is_some())
            .exit
    }

    /// Fails unless the server is still running. `what` says what the test
    /// just did, in the past tense ("sent a 2 MB line"), so the failure reads
    /// "the server exited with code 101 (a panic) after the test sent a 2 MB
    /// line". Also fails if the server printed to stdout after `listening on`.
    #[track_caller]
    pub fn expect_alive(&self, what: impl Display) {
        if let Some(ending) = self.view.fate() {
            self.report()
                .did(&what)
                .expected("the server to keep running")
                .got(format!("the server {ending} after the test {what}"))
                .hint(
                    "read the server's stderr below: a panic in one connection's handler must not take down the server; return an error and close that connection instead",
                )
                .fail();
        }
        self.check_quiet_stdout();
    }

    /// Fails if the server has written anything to stdout after its
    /// `listening on` line: stdout carries only that line, logs go to stderr.
    /// Also checked by [`Server::expect_alive`], [`Server::stop_with`] and
    /// when the `Server` is dropped at the end of a test.
    #[track_caller]
    pub fn check_quiet_stdout(&self) {
        let (late, len) = {
            let mut st = self.view.shared.lock();
            st.pump();
            (st.stdout.late.clone(), st.stdout.late_len)
        };
        if len > 0 {
            self.report()
                .expected(format!(
                    "nothing more on stdout after {LINE} (stdout carries only that line)"
                ))
                .got(format!(
                    "the server printed to stdout after `listening on`: {len} bytes, starting {}",
                    show(&late)
                ))
                .hint("log with eprintln! (stderr), never println! (stdout)")
                .fail();
        }
    }

    /// A report that starts with how the server was started and quotes the
    /// tail of its stderr as `[your server]`, ready for `did`, `expected`,
    /// `got` and `hint`.
    pub fn report(&self) -> Report {
        let r = Report::new(format!(
            "started: {} (pid {}, listening on {})",
            self.command_line,
            self.view.pid(),
            self.addr
        ));
        self.view.quote(r)
    }

    /// The newest lines of the server's stderr (up to [`STDERR_TAIL_LINES`]),
    /// including everything it wrote before this call.
    pub fn stderr_tail(&self) -> String {
        let mut st = self.view.shared.lock();
        st.pump();
        st.stderr.text()
    }

    /// How many complete lines the server has written to stderr so far
    /// (everything written before this call counts): a mark for
    /// [`Server::stderr_lines_since`]. Works with or without
    /// [`ServerBuilder::keep_stderr`].
    pub fn stderr_mark(&self) -> StderrMark {
        let mut st = self.view.shared.lock();
        st.pump();
        StderrMark(st.stderr.count)
    }

    /// Every complete stderr line (without its newline) the server wrote
    /// after `mark`, including everything written before this call; a line
    /// still being written (no newline yet) is not included. Needs
    /// [`ServerBuilder::keep_stderr`]; a test that forgot it fails with
    /// that advice.
    #[track_caller]
    pub fn stderr_lines_since(&self, mark: StderrMark) -> Vec<String> {
        let mut st = self.view.shared.lock();
        st.pump();
        let lines = st.stderr.lines_since(mark.0);
        drop(st);
        lines.unwrap_or_else(|| self.not_kept())
    }

    /// Every complete stderr line since the server started; see
    /// [`Server::stderr_lines_since`].
    #[track_caller]
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr_lines_since(StderrMark::START)
    }

    /// Waits until `done` holds for the complete stderr lines written since
    /// `mark` (or the server has exited and closed stderr, or written to
    /// stdout after its `listening on` line, a failure already certain, or
    /// `deadline` passes), and returns those lines, whether `done` held or
    /// not: the caller reports what was missing. Woken by the server's
    /// output, not by polling. Needs [`ServerBuilder::keep_stderr`].
    #[track_caller]
    pub fn wait_stderr_lines(
        &self,
        mark: StderrMark,
        deadline: Duration,
        mut done: impl FnMut(&[String]) -> bool,
    ) -> Vec<String> {
        if self.view.shared.lock().stderr.all.is_none() {
            self.not_kept();
        }
        let until = Instant::now() + deadline;
        let mut seen = None;
        let mut lines = Vec::new();
        let st = self.view.shared.wait_until(until, |st| {
            if seen != Some(st.stderr.count) {
                seen = Some(st.stderr.count);
                lines = st.stderr.lines_since(mark.0).unwrap_or_default();
            }
            done(&lines) || st.stderr.eof || st.stdout.late_len > 0
        });
        drop(st);
        lines
    }

    #[track_caller]
    fn not_kept(&self) -> ! {
        Report::new("read the server's stderr line by line")
            .expected("a server spawned with `ServerBuilder::keep_stderr()`")
            .got("a server that keeps only the tail of its stderr")
            .hint("this is a bug in the grader: spawn the server with Server::builder(..).keep_stderr()")
            .fail()
    }

    /// Sends `signal` (`libc::SIGSTOP`, `SIGCONT`, `SIGINT`, ...) without
    /// waiting for anything; fails if the server has already exited. The
    /// one way a grader signals its server: the signal is sent under the
    /// reaper's lock, so it can never reach a process that reused the pid.
    #[track_caller]
    pub fn signal(&self, signal: i32) {
        if !self.view.signal(signal) {
            let name = signal_short_name(signal);
            let ending = self.view.fate().unwrap_or_default();
            self.report()
                .did(format!("sent {name}"))
                .expected(format!(
                    "the server to be running when the test sent {name}"
                ))
                .got(format!("the server had already {ending}"))
                .hint("read the server's stderr below for why it stopped")
                .fail();
        }
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) and waits up to
    /// [`STOP_DEADLINE`] for the server to exit; returns how it exited. For
    /// graceful-shutdown tests: `assert_eq!(status.code(), Some(0))`.
    #[track_caller]
    pub fn stop_with(&self, signal: i32) -> ExitStatus {
        self.stop_with_deadline(signal, STOP_DEADLINE)
    }

    /// [`Server::stop_with`] with a deadline of your choosing.
    #[track_caller]
    pub fn stop_with_deadline(&self, signal: i32, deadline: Duration) -> ExitStatus {
        let name = signal_short_name(signal);
        self.signal(signal);
        let until = Instant::now() + deadline;
        let exit = self
            .view
            .shared
            .wait_until(until, |st| st.exit.is_some())
            .exit;
        let Some(status) = exit else {
            self.report()
                .did(format!("sent {name}"))
                .expected(format!("the server to exit within {deadline:?}"))
                .got(format!(
                    "the server was still running {deadline:?} after the test sent {name}"
                ))
                .hint(format!(
                    "does the server handle {name}: stop accepting, let open connections finish, then return from main?"
                ))
                .fail()
        };
        self.check_quiet_stdout();
        status
    }

    /// A watch that tells this server parked from slow while the test waits
    /// on any connection to it (see [`crate::wait`]).
    pub fn park_watch(&self) -> ParkWatch {
        ParkWatch::new(self.pid(), Conn::AnyTcp { server: self.addr })
    }

    /// Runs `f`, a wait that labkit cannot slice itself (a real HTTP or TLS
    /// client's request to this server), on a helper thread, and fails the
    /// test as soon as the server is seen parked with the request unread
    /// (see [`crate::wait`]); otherwise returns what `f` returned. `did`
    /// says what `f` sent, for the message. `f` must have its own timeout.
    #[track_caller]
    pub fn watched<T, F>(&self, did: impl Display, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let watch = self.park_watch();
        let conn = watch.conn();
        match crate::wait::watching(watch, f) {
            Ok(v) => v,
            Err(parked) => self
                .report()
                .did(did)
                .expected("the server to read the request and answer it")
                .got(parked.describe(conn))
                .hint(parked.hint(conn))
                .fail(),
        }
    }

    /// Number of threads of the server now (`/proc/<pid>/status`).
    #[track_caller]
    pub fn threads(&self) -> usize {
        self.proc_fact("its thread count", crate::procfs::threads(self.view.pid()))
    }

    /// Number of open file descriptors of the server now (`/proc/<pid>/fd`).
    #[track_caller]
    pub fn open_fds(&self) -> usize {
        self.proc_fact("its open files", crate::procfs::open_fds(self.view.pid()))
    }

    /// CPU time (user + system) the server has used so far, in ticks of
    /// [`crate::procfs::TICKS_PER_SECOND`].
    #[track_caller]
    pub fn cpu_ticks(&self) -> u64 {
        self.proc_fact("its CPU time", crate::procfs::cpu_ticks(self.view.pid()))
    }

    /// Resident memory of the server now, in KiB (`VmRSS`).
    #[track_caller]
    pub fn rss_kib(&self) -> u64 {
        self.proc_fact("its memory use", crate::procfs::rss_kib(self.view.pid()))
    }

    /// A `/proc` fact, or a failure saying the server is gone.
    #[track_caller]
    fn proc_fact<T>(&self, what: &str, fact: Option<T>) -> T {
        match fact {
            Some(v) if self.is_alive() => v,
            _ => {
                let ending = self.view.fate().unwrap_or_else(|| "vanished".into());
                self.report()
                    .did(format!("read {what} from /proc/{}", self.view.pid()))
                    .expected("the server to be running")
                    .got(format!("the server {ending}"))
                    .hint("read the server's stderr below for why it stopped")
                    .fail()
            }
        }
    }

    /// A handle that clients keep to quote this server in their failures.
    pub(crate) fn view(&self) -> ServerView {
        self.view.clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let shared = &self.view.shared;
        let ended_before = self.view.fate();
        self.view.kill_tree();
        let until = Instant::now() + STOP_DEADLINE;
        let st = shared.wait_until(until, |st| st.exit.is_some());
        let tail = st.stderr.text();
        let late = st.stdout.late_len;
        drop(st);
        if thread::panicking() {
            // The test failed: show what the server said, unless the failure
            // message already quoted it. `eprintln!` is captured per test.
            if !shared.quoted.load(Ordering::Relaxed) {
                if let Some(ending) = ended_before {
                    eprintln!("[test] the server had {ending} before the test ended");
                }
                for line in tail.lines() {
                    eprintln!("[your server] {line}");
                }
            }
        } else if late > 0 {
            self.check_quiet_stdout();
        }
    }
}

/// What clients hold of a server: enough to say whether it still runs and
/// to quote its stderr in their own failure messages.
#[derive(Debug, Clone)]
pub(crate) struct ServerView {
    shared: Arc<Shared>,
    process: Process,
}

impl ServerView {
    pub(crate) fn pid(&self) -> u32 {
        self.process.pid()
    }

    fn is_alive(&self) -> bool {
        self.process.exit_status().is_none() && !dying(self.pid())
    }

    /// `None` while the server runs; otherwise how it ended ("exited with
    /// code 3"), after waiting (with a deadline) for a dying server to finish.
    pub(crate) fn fate(&self) -> Option<String> {
        if self.is_alive() {
            return None;
        }
        let until = Instant::now() + STOP_DEADLINE;
        let st = self.shared.wait_until(until, |st| st.exit.is_some());
        Some(match st.exit {
            Some(status) => describe_exit(status, &st.stderr.text()),
            None => "was exiting but had not finished".to_string(),
        })
    }

    /// When the server has (nearly) as many files open as its soft
    /// `RLIMIT_NOFILE` allows, says so: its `accept` then fails with
    /// `EMFILE`, and connections sit unserved in the queue, which from the
    /// outside looks like a server that went quiet.
    pub(crate) fn fd_pressure(&self) -> Option<String> {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.pid())).ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        let limit: usize = line.split_whitespace().nth(3)?.parse().ok()?;
        let open = crate::procfs::open_fds(self.pid())?;
        (open + 2 >= limit).then(|| {
            format!("with {open} files open, at its limit of {limit} (RLIMIT_NOFILE): accept fails with EMFILE")
        })
    }

    /// Adds the server's stderr tail (and any stray stdout) to a report.
    pub(crate) fn quote(&self, report: Report) -> Report {
        let (tail, late) = {
            let mut st = self.shared.lock();
            st.pump();
            (st.stderr.text(), st.stdout.late.clone())
        };
        self.shared.quoted.store(true, Ordering::Relaxed);
        report
            .quote("your server", tail)
            .quote("your server (stdout)", late)
    }

    /// Sends a signal unless the server has already been reaped; returns
    /// whether it was sent (through [`crate::process`], never racing the reap).
    fn signal(&self, signal: i32) -> bool {
        self.process.signal(signal)
    }

    /// Kills the server and every process it started (a server run under
    /// a wrapper such as `strace -f` is the wrapper's child: killing the
    /// wrapper alone would leave it running, detached).
    fn kill_tree(&self) {
        self.process.kill_tree();
    }
}

impl Server {
    /// Waits for the `listening on` line; see the module docs.
    #[track_caller]
    fn wait_ready(&self, deadline: Duration) -> SocketAddr {
        let shared = &self.view.shared;
        let until = Instant::now() + deadline;
        let st = shared.wait_until(until, |st| {
            st.stdout.first_done || st.stdout.eof || st.exit.is_some()
        });
        let first = st.stdout.first.clone();
        let first_done = st.stdout.first_done;
        drop(st);
        let expected = format!("one line {LINE} on stdout within {deadline:?}");

        if !first_done {
            let got = match self.view.fate() {
                Some(ending) => format!("the server {ending} before printing {LINE}"),
                None if first.is_empty() => format!(
                    "the server did not print {LINE} within {deadline:?} (it printed nothing on stdout)"
                ),
                None => format!(
                    "the server did not print {LINE} within {deadline:?} (it printed {} with no end of line)",
                    show(&first)
                ),
            };
            let hint = if self.view.is_alive() {
                "bind the address from the first argument, then println!(\"listening on {}\", listener.local_addr()?) before serving"
            } else {
                "read the server's stderr below: did it fail to parse its arguments or to bind?"
            };
            self.startup_report()
                .expected(expected)
                .got(got)
                .hint(hint)
                .fail();
        }

        let text = String::from_utf8_lossy(&first);
        let line = text.trim_end_matches(['\n', '\r']);
        let Some(rest) = line.strip_prefix("listening on ") else {
            self.startup_report()
                .expected(expected)
                .got(format!("the server printed {} instead of {LINE}", show(&first)))
                .hint("print nothing to stdout before the `listening on` line; log to stderr with eprintln!")
                .fail()
        };
        match rest.trim().parse::<SocketAddr>() {
            Ok(addr) if addr.port() == 0 => self
                .startup_report()
                .expected(expected)
                .got(format!(
                    "the server printed port 0 ({}): the address it was asked for, not the one it got",
                    show(&first)
                ))
                .hint("print listener.local_addr(), which holds the port the kernel picked")
                .fail(),
            Ok(addr) => addr,
            Err(_) => self
                .startup_report()
                .expected(expected)
                .got(format!(
                    "the server printed {}, which does not end in an address like 127.0.0.1:40123",
                    show(&first)
                ))
                .hint("print the SocketAddr from listener.local_addr() with {}")
                .fail(),
        }
    }

    /// The report for startup failures (there is no address yet).
    fn startup_report(&self) -> Report {
        self.view.quote(Report::new(format!(
            "started: {} (pid {})",
            self.command_line,
            self.view.pid()
        )))
    }
}

/// Whether the process has started to exit (see "Knowing that it is dying").
fn dying(pid: u32) -> bool {
    let Some(f) = crate::procfs::stat_fields(pid) else {
        return true;
    };
    // Field 3 of `man 5 proc` (the state) is index 0 here; flags is field 9.
    let zombie = f.first().is_some_and(|s| s == "Z" || s == "X");
    let flags: u64 = f.get(6).and_then(|s| s.parse().ok()).unwrap_or(0);
    zombie || flags & PF_EXITING != 0
}

/// State shared by the `Server`, its clients and its three threads.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Notified when output arrives or the server exits.
    changed: Condvar,
    /// Set once a report has quoted the stderr tail, so that a drop during
    /// the resulting panic does not print it a second time.
    quoted: AtomicBool,
}

impl Shared {
    /// Locks the state; a poisoned lock is still usable (all updates leave
    /// it consistent), and a grader must not fail twice.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drains the pipes and waits until `done` holds or `until` passes.
    fn wait_until(
        &self,
        until: Instant,
        mut done: impl FnMut(&State) -> bool,
    ) -> MutexGuard<'_, State> {
        let mut st = self.lock();
        loop {
            st.pump();
            let now = Instant::now();
            if done(&st) || now >= until {
                return st;
            }
            st = match self.changed.wait_timeout(st, until - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

#[derive(Debug)]
struct State {
    /// How it exited, once reaped (recorded by the reaper's callback).
    exit: Option<ExitStatus>,
    /// The pipes stay open as long as `Shared` lives, so the drain threads
    /// never poll a closed (and possibly reused) descriptor. `None` only
    /// for the instant between spawning and putting them here.
    out: Option<ChildStdout>,
    err: Option<ChildStderr>,
    stdout: StdoutLog,
    stderr: StderrLog,
}

impl State {
    /// Reads whatever the pipes hold right now (they are non-blocking).
    fn pump(&mut self) {
        if let Some(out) = &mut self.out
            && !self.stdout.eof
            && read_available(out, |b| self.stdout.feed(b))
        {
            self.stdout.eof = true;
        }
        if let Some(err) = &mut self.err
            && !self.stderr.eof
            && read_available(err, |b| self.stderr.feed(b))
        {
            self.stderr.eof = true;
        }
    }
}

/// What the server wrote to stdout.
#[derive(Debug, Default)]
struct StdoutLog {
    /// Bytes up to and including the first newline (at most `LINE_MAX`).
    first: Vec<u8>,
    /// Whether the first line is complete.
    first_done: bool,
    /// The start of anything printed after the first line.
    late: Vec<u8>,
    /// How many bytes were printed after the first line.
    late_len: u64,
    eof: bool,
}

impl StdoutLog {
    fn feed(&mut self, mut bytes: &[u8]) {
        if !self.first_done {
            let room = LINE_MAX - self.first.len();
            let take = match bytes.iter().position(|&b| b == b'\n') {
                Some(i) if i < room => {
                    self.first_done = true;
                    i + 1
                }
                _ if bytes.len() >= room => {
                    // A "line" this long is not the `listening on` line.
                    self.first_done = true;
                    room
                }
                _ => bytes.len(),
            };
            self.first.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
        self.late_len += bytes.len() as u64;
        let keep = LATE_STDOUT_KEEP
            .saturating_sub(self.late.len())
            .min(bytes.len());
        self.late.extend_from_slice(&bytes[..keep]);
    }
}

/// The newest lines of the server's stderr (and all of them, if kept).
#[derive(Debug, Default)]
struct StderrLog {
    lines: VecDeque<Vec<u8>>,
    /// The line being written (no newline yet), cut at `LINE_MAX`.
    partial: Vec<u8>,
    /// How many complete lines were written.
    count: usize,
    /// Every complete line, without its newline, if the test asked
    /// ([`ServerBuilder::keep_stderr`]); each cut at [`KEPT_LINE_MAX`].
    all: Option<Vec<String>>,
    /// The line being written, for `all`.
    all_partial: Vec<u8>,
    eof: bool,
}

impl StderrLog {
    fn feed(&mut self, bytes: &[u8]) {
        for piece in bytes.split_inclusive(|&b| b == b'\n') {
            let room = LINE_MAX.saturating_sub(self.partial.len());
            self.partial
                .extend_from_slice(&piece[..room.min(piece.len())]);
            if let Some(all) = &mut self.all {
                let room = KEPT_LINE_MAX.saturating_sub(self.all_partial.len());
                self.all_partial
                    .extend_from_slice(&piece[..room.min(piece.len())]);
                if piece.ends_with(b"\n") {
                    let mut line = std::mem::take(&mut self.all_partial);
                    while line.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
                        line.pop();
                    }
                    all.push(String::from_utf8_lossy(&line).into_owned());
                }
            }
            if piece.ends_with(b"\n") {
                self.count += 1;
                let mut line = std::mem::take(&mut self.partial);
                if !line.ends_with(b"\n") {
                    line.push(b'\n');
                }
                self.lines.push_back(line);
                if self.lines.len() > STDERR_TAIL_LINES {
                    self.lines.pop_front();
                }
            }
        }
    }

    /// The kept lines after the first `from`; `None` if lines are not kept.
    fn lines_since(&self, from: usize) -> Option<Vec<String>> {
        let all = self.all.as_ref()?;
        Some(all.get(from..).map(<[String]>::to_vec).unwrap_or_default())
    }

    fn text(&self) -> String {
        let mut all: Vec<u8> = self.lines.iter().flatten().copied().collect();
        all.extend_from_slice(&self.partial);
        String::from_utf8_lossy(&all).into_owned()
    }
}

#[derive(Debug, Clone, Copy)]
enum Stream {
    Out,
    Err,
}

/// Reads a non-blocking pipe until it is empty (or `PUMP_MAX` bytes);
/// returns whether it reached end of file.
fn read_available(pipe: &mut impl Read, mut feed: impl FnMut(&[u8])) -> bool {
    let mut buf = [0u8; 16 * 1024];
    let mut total = 0;
    while total < PUMP_MAX {
        match pipe.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => {
                feed(&buf[..n]);
                total += n;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            // Any other error on a pipe means it is unusable: treat as closed.
            Err(_) => return true,
        }
    }
    false
}

/// The body of a drain thread: wait for data, drain under the lock, tell
/// waiters, until the pipe reaches end of file.
fn drain(shared: &Shared, fd: RawFd, which: Stream) {
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one valid pollfd; the descriptor stays open while
        // `shared` lives (see `State::out`). An error (EINTR) just loops.
        unsafe { libc::poll(&mut pfd, 1, -1) };
        let eof = {
            let mut st = shared.lock();
            st.pump();
            match which {
                Stream::Out => st.stdout.eof,
                Stream::Err => st.stderr.eof,
            }
        };
        shared.changed.notify_all();
        if eof {
            return;
        }
    }
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on a descriptor we own; no pointers involved.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdout_log_splits_the_first_line_from_the_rest() {
        let mut log = StdoutLog::default();
        log.feed(b"listening on 127.0.0.1:1");
        assert!(!log.first_done);
        log.feed(b"\nextra\n");
        assert!(log.first_done);
        assert_eq!(log.first, b"listening on 127.0.0.1:1\n");
        assert_eq!(log.late, b"extra\n");
        assert_eq!(log.late_len, 6);
    }

    #[test]
    fn stdout_log_gives_up_on_an_endless_first_line() {
        let mut log = StdoutLog::default();
        log.feed(&vec![b'x'; LINE_MAX + 10]);
        assert!(log.first_done);
        assert_eq!(log.first.len(), LINE_MAX);
        assert_eq!(log.late_len, 10);
    }

    #[test]
    fn stderr_log_keeps_the_newest_lines() {
        let mut log = StderrLog::default();
        for i in 0..STDERR_TAIL_LINES + 5 {
            log.feed(format!("line {i}\n").as_bytes());
        }
        log.feed(b"part");
        let text = log.text();
        assert!(text.starts_with("line 5\n"), "{text}");
        assert!(text.ends_with("line 204\npart"), "{text}");
        assert_eq!(log.count, STDERR_TAIL_LINES + 5);
        assert_eq!(log.lines_since(0), None);
    }

    #[test]
    fn kept_stderr_has_every_line_since_a_mark() {
        let mut log = StderrLog {
            all: Some(Vec::new()),
            ..StderrLog::default()
        };
        for i in 0..STDERR_TAIL_LINES + 5 {
            log.feed(format!("line {i}\n").as_bytes());
        }
        log.feed(b"{\"a\":");
        log.feed(b"1}\r\nhalf");
        let all = log.lines_since(0).unwrap();
        assert_eq!(all.len(), STDERR_TAIL_LINES + 6);
        assert_eq!(all[0], "line 0");
        assert_eq!(all[STDERR_TAIL_LINES + 5], "{\"a\":1}");
        assert_eq!(
            log.lines_since(STDERR_TAIL_LINES + 5).unwrap(),
            ["{\"a\":1}"]
        );
        assert_eq!(log.lines_since(10_000).unwrap(), Vec::<String>::new());
        assert_eq!(log.count, STDERR_TAIL_LINES + 6);
    }

    #[test]
    fn kept_stderr_cuts_endless_lines() {
        let mut log = StderrLog {
            all: Some(Vec::new()),
            ..StderrLog::default()
        };
        log.feed(&vec![b'x'; KEPT_LINE_MAX + 10]);
        log.feed(b"\n");
        assert_eq!(log.lines_since(0).unwrap()[0].len(), KEPT_LINE_MAX);
    }
}
