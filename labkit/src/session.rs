//! Drive a command-line program step by step while it runs.
//!
//! [`crate::run::Cmd`] runs a program to completion; some lessons need to look
//! at a program *while* it runs, at a point it chooses: its threads in
//! `/proc/<pid>/task`, its children and their states (a zombie is only
//! visible while its parent lives). A [`Session`] starts the program with
//! pipes on all three standard streams, lets the test read its stdout line by
//! line with a deadline (so the program can announce "I am at point X, now
//! look"), inspect it, answer on stdin, and finally wait for its exit with a
//! deadline.
//!
//! ```no_run
//! use std::time::Duration;
//! use labkit::session::Session;
//! let mut s = Session::start("/path/to/program", ["--hold"]);
//! let (before, _line) = s.read_until("a `hold:` line", |l| l.starts_with("hold:"), Duration::from_secs(10));
//! let children = labkit::procfs::children(s.pid()); // the program is waiting now
//! s.send_line("");
//! let status = s.wait(Duration::from_secs(10));
//! ```
//!
//! Stdout is read by a thread that forwards whole lines over a channel, so a
//! read has a deadline; stderr is drained by another thread and kept for
//! failure messages ([`Session::report`] quotes both). The process itself
//! is labkit's one core, [`crate::process`]: its exit is recorded without
//! racing a signal, and dropping a `Session` kills (SIGKILL) the program and
//! anything it started, and reaps it.
//!
//! Note that processes the program forks inherit its stdout: the test sees
//! the end of stdout only when they have all exited or closed it.

use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ChildStdin, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use crate::process::{Launch, Process, signal_name};
use crate::report::Report;

/// How long a dropped session waits for the killed program to be reaped.
const DROP_DEADLINE: Duration = Duration::from_secs(5);

/// How long [`Session::wait`] waits, after the exit, for the end of stderr.
pub const STDERR_EOF_WAIT: Duration = Duration::from_secs(2);

/// The most stderr kept for messages (the newest bytes).
const STDERR_KEEP: usize = 64 * 1024;

/// Set in the environment of a child started by [`Session::start_role`].
const ROLE_MARK: &str = "LABKIT_ROLE";

/// A parameter of a role started by [`Session::start_role`]: the value of
/// the environment variable `key`. Run by hand (`cargo test -- --ignored`),
/// a role has no parent and fails with a sentence that says so.
#[track_caller]
pub fn role_param(key: &str) -> String {
    if std::env::var_os(ROLE_MARK).is_none() {
        Report::new("ran a role test directly")
            .got("it is not a test of its own: another test starts it as a child process")
            .hint("run the tests without --ignored; the test that uses this role starts it")
            .fail();
    }
    match std::env::var(key) {
        Ok(v) => v,
        Err(_) => Report::new(format!("read the role parameter {key}"))
            .got("it is not set")
            .hint("the parent test passes it to Session::start_role")
            .fail(),
    }
}

/// A running program; see the module docs.
#[derive(Debug)]
pub struct Session {
    command_line: String,
    pid: u32,
    stdin: Option<ChildStdin>,
    /// Whole lines of stdout (without the newline), from the reader thread;
    /// disconnected at the end of stdout.
    lines: mpsc::Receiver<String>,
    /// Every line read so far, for messages.
    seen: Vec<String>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// Disconnected when the stderr thread has read the pipe to its end,
    /// so that [`Session::wait`] can return with all of stderr kept.
    stderr_eof: Mutex<mpsc::Receiver<()>>,
    process: Process,
}

impl Session {
    /// Starts `program` (usually `env!("CARGO_BIN_EXE_<name>")`) with `args`.
    /// Fails the test with a clear message when it cannot be started.
    #[track_caller]
    pub fn start<I, S>(program: impl AsRef<Path>, args: I) -> Session
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut launch = Launch::new(program);
        for a in args {
            launch.arg(a);
        }
        Session::launch(launch)
    }

    /// Starts this test binary again as a child process that runs only the
    /// `#[ignore]`d test named `role`, with `env` set. That is how a grader
    /// runs a library lab's code in a process of its own, one it can kill
    /// with SIGKILL mid-stream or run twice side by side (two consumers, two
    /// server instances), without a binary target in the lab. The role reads
    /// its parameters with [`role_param`] and talks to the parent through
    /// stdout lines; libtest's own lines ("running 1 test") come too, so read
    /// with a predicate ([`Session::read_until`]).
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use labkit::session::{Session, role_param};
    /// #[test]
    /// fn test_09_survives_sigkill() {
    ///     let mut child = Session::start_role("role_publisher", &[("QUEUE_DIR", "/tmp/q")]);
    ///     child.read_until("`published 100`", |l| l == "published 100", Duration::from_secs(10));
    ///     drop(child); // SIGKILL
    /// }
    ///
    /// #[test]
    /// #[ignore = "a child process of test_09"]
    /// fn role_publisher() {
    ///     let dir = role_param("QUEUE_DIR");
    ///     // ... publish, println!("published {n}") ...
    /// }
    /// ```
    #[track_caller]
    pub fn start_role(role: &str, env: &[(&str, &str)]) -> Session {
        let exe = match std::env::current_exe() {
            Ok(exe) => exe,
            Err(e) => Report::new(format!("looked up this test binary to start role `{role}`"))
                .got(format!("current_exe failed: {e}"))
                .fail(),
        };
        let mut launch = Launch::new(exe);
        for a in [
            role,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ] {
            launch.arg(a);
        }
        launch.env.push((ROLE_MARK.into(), role.into()));
        for (k, v) in env {
            launch.env.push((k.into(), v.into()));
        }
        Session::launch(launch)
    }

    #[track_caller]
    fn launch(launch: Launch) -> Session {
        let command_line = launch.command_line();
        let mut command = launch.command();
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let (process, pipes) = match Process::spawn(&mut command, |_| {}) {
            Ok(p) => p,
            Err(e) => Report::new(format!("started: {command_line}"))
                .got(format!("could not start it: {e}"))
                .hint("does the lab build? try `cargo build` in the lab folder")
                .fail(),
        };
        let pid = process.pid();
        let stdin = pipes.stdin;
        let stdout = pipes.stdout.expect("stdout is piped");
        let mut stderr_pipe = pipes.stderr.expect("stderr is piped");

        let (tx, lines) = mpsc::channel();
        thread::Builder::new()
            .name(format!("labkit-session-{pid}-stdout"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn a thread to read the program's stdout");

        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (eof_tx, stderr_eof) = mpsc::channel::<()>();
        {
            let stderr = Arc::clone(&stderr);
            thread::Builder::new()
                .name(format!("labkit-session-{pid}-stderr"))
                .spawn(move || {
                    // Dropped when the loop ends: the pipe is at its end.
                    let _eof = eof_tx;
                    let mut buf = [0u8; 8192];
                    loop {
                        match stderr_pipe.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => {
                                let mut kept = stderr.lock().unwrap_or_else(|e| e.into_inner());
                                kept.extend_from_slice(&buf[..n]);
                                if kept.len() > STDERR_KEEP {
                                    let cut = kept.len() - STDERR_KEEP;
                                    kept.drain(..cut);
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => break,
                        }
                    }
                })
                .expect("spawn a thread to drain the program's stderr");
        }

        Session {
            command_line,
            pid,
            stdin,
            lines,
            seen: Vec::new(),
            stderr,
            stderr_eof: Mutex::new(stderr_eof),
            process,
        }
    }

    /// The program's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The command as a learner would type it.
    pub fn command_line(&self) -> &str {
        &self.command_line
    }

    /// Every stdout line read so far, in order.
    pub fn lines_seen(&self) -> &[String] {
        &self.seen
    }

    /// The next line of stdout (without its newline), or `None` when stdout
    /// ended or no line came within `deadline`.
    pub fn read_line(&mut self, deadline: Duration) -> Option<String> {
        let line = self.lines.recv_timeout(deadline).ok()?;
        self.seen.push(line.clone());
        Some(line)
    }

    /// Reads every remaining line until stdout ends. `Err` holds the lines
    /// read when `deadline` passed first (stdout still open: the program, or
    /// a process it started, still holds it).
    pub fn read_to_end(&mut self, deadline: Duration) -> Result<Vec<String>, Vec<String>> {
        let until = Instant::now() + deadline;
        let mut lines = Vec::new();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    lines.push(line);
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(lines),
                Err(mpsc::RecvTimeoutError::Timeout) => return Err(lines),
            }
        }
    }

    /// Reads lines until one satisfies `stop`, within `deadline` in all.
    /// Returns the lines before that one and the line itself; fails the test
    /// (quoting the output so far) when stdout ends or the deadline passes
    /// first. `what` names the awaited line for that message, e.g. "the line
    /// `hold: workers alive`".
    #[track_caller]
    pub fn read_until(
        &mut self,
        what: &str,
        stop: impl Fn(&str) -> bool,
        deadline: Duration,
    ) -> (Vec<String>, String) {
        let until = Instant::now() + deadline;
        let mut before = Vec::new();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if stop(&line) {
                        return (before, line);
                    }
                    before.push(line);
                }
                Err(e) => {
                    if e == mpsc::RecvTimeoutError::Disconnected {
                        // Stdout ends a moment before the exit is recorded.
                        let _ = self.wait(Duration::from_secs(2));
                    }
                    let got = match (e, self.exit_status()) {
                        (_, Some(status)) => format!(
                            "the program ended ({}) without printing it",
                            describe(status)
                        ),
                        (mpsc::RecvTimeoutError::Disconnected, None) => {
                            "the program closed its stdout without printing it".to_string()
                        }
                        (mpsc::RecvTimeoutError::Timeout, None) => {
                            format!(
                                "no such line within {deadline:?}; the program is still running"
                            )
                        }
                    };
                    self.report()
                        .expected(format!("{what} on stdout within {deadline:?}"))
                        .got(got)
                        .hint("read the program's output below: did it stop early, or wait for something before printing?")
                        .fail()
                }
            }
        }
    }

    /// Writes `line` and a newline to the program's stdin. A program that
    /// has closed its stdin (or exited) is not an error here: the test finds
    /// out when it waits.
    pub fn send_line(&mut self, line: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin.write_all(format!("{line}\n").as_bytes());
            let _ = stdin.flush();
        }
    }

    /// Closes the program's stdin (it reads end of file).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// How the program ended, if it has (without waiting).
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.process.exit_status()
    }

    /// Waits up to `deadline` for the program to exit; `None` if it is still
    /// running then (it is not killed: dropping the session does that).
    /// Once it has exited, the last of its stderr is read in too (up to
    /// [`STDERR_EOF_WAIT`]: a grandchild may hold the pipe open), so
    /// [`Session::stderr`] then has everything it wrote.
    pub fn wait(&self, deadline: Duration) -> Option<ExitStatus> {
        let status = self.process.wait(deadline)?;
        let eof = self.stderr_eof.lock().unwrap_or_else(|e| e.into_inner());
        // Disconnected at the end of the pipe; a timeout leaves what was read.
        let _ = eof.recv_timeout(STDERR_EOF_WAIT);
        Some(status)
    }

    /// The program's stderr so far (the newest 64 KiB at most).
    pub fn stderr(&self) -> String {
        let kept = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&kept).into_owned()
    }

    /// A report that starts with how the program was started and quotes its
    /// stdout so far and its stderr, ready for `did`, `expected`, `got`, `hint`.
    pub fn report(&self) -> Report {
        Report::new(format!("started: {} (pid {})", self.command_line, self.pid))
            .quote("your program (stdout)", self.seen.join("\n"))
            .quote("your program (stderr)", self.stderr())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stdin = None;
        // The program's own children too: a program that forks must not
        // leave them running.
        self.process.kill_tree();
        let _ = self.wait(DROP_DEADLINE);
    }
}

/// "exit code 3", "killed by signal 9".
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s} ({})", signal_name(s)),
        (None, None) => "an unknown ending".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lines_answers_and_waits() {
        let mut s = Session::start(
            "/bin/sh",
            ["-c", "echo one; echo hold; read x; echo \"got $x\"; exit 3"],
        );
        let (before, line) = s.read_until("`hold`", |l| l == "hold", Duration::from_secs(10));
        assert_eq!(before, ["one"]);
        assert_eq!(line, "hold");
        assert!(crate::procfs::state(s.pid()).is_some());
        s.send_line("yes");
        assert_eq!(
            s.read_line(Duration::from_secs(10)).as_deref(),
            Some("got yes")
        );
        let status = s.wait(Duration::from_secs(10)).expect("sh exits");
        assert_eq!(status.code(), Some(3));
        assert_eq!(s.read_to_end(Duration::from_secs(10)), Ok(vec![]));
    }

    #[test]
    fn read_to_end_waits_for_every_holder_of_stdout() {
        // The shell exits at once; its background child keeps stdout open.
        let mut s = Session::start(
            "/bin/sh",
            ["-c", "exec 3<&0; echo a; (read x <&3; echo b) &"],
        );
        assert_eq!(
            s.wait(Duration::from_secs(10)).and_then(|st| st.code()),
            Some(0)
        );
        assert_eq!(
            s.read_to_end(Duration::from_millis(50)),
            Err(vec!["a".to_string()])
        );
        s.send_line("go");
        assert_eq!(
            s.read_to_end(Duration::from_secs(10)),
            Ok(vec!["b".to_string()])
        );
    }

    #[test]
    #[should_panic(expected = "ended (exit code 0) without printing it")]
    fn read_until_fails_when_the_program_ends_first() {
        let mut s = Session::start("/bin/sh", ["-c", "echo one"]);
        let _ = s.wait(Duration::from_secs(10));
        s.read_until("`never`", |l| l == "never", Duration::from_secs(10));
    }

    #[test]
    fn drop_kills_a_program_that_waits_forever() {
        let s = Session::start("/bin/sh", ["-c", "read x"]);
        let pid = s.pid();
        drop(s);
        assert_eq!(crate::procfs::state(pid), None);
    }
}
