//! Run a lab's binary to completion, with a deadline.
//!
//! [`Cmd`] starts the program with arguments and standard input, drains its
//! stdout and stderr on their own threads (so a chatty program never blocks on
//! a full pipe), watches its peak memory, and kills it when the deadline
//! passes. The [`Outcome`] holds everything a grader checks, and describes
//! itself for failure messages.
//!
//! Peak memory is the `VmHWM` of the program, sampled from `/proc/<pid>/status`
//! every few milliseconds. (`wait4`'s `ru_maxrss` is no use here: when a
//! process `exec`s, Linux folds the memory of the process that spawned it
//! into that number, and the spawner is this test process.) `VmHWM` never
//! goes down, so any sample taken after the peak sees it; a program that
//! holds a large buffer while it writes its output is always caught.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use crate::process::{Launch, Process, launch_setters, signal_name};
use crate::report::{Report, show};

/// The deadline a command gets unless the test sets another.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

/// How long a program killed at its deadline gets to be reaped.
const KILL_DEADLINE: Duration = Duration::from_secs(10);

/// Where a program's standard input comes from.
#[derive(Debug, Clone)]
enum Input {
    Null,
    Bytes(Vec<u8>),
    File(PathBuf),
}

/// What happens to a program's standard output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Capture {
    /// Keep every byte.
    Keep,
    /// Count the bytes and hash them, keep only the first and last 4 KiB
    /// (for outputs too large to hold).
    Digest,
    /// A pipe whose reader is already closed: every write fails with EPIPE.
    Closed,
}

/// A command to run; see the module docs.
#[derive(Debug, Clone)]
pub struct Cmd {
    pub(crate) launch: Launch,
    input: Input,
    capture: Capture,
    deadline: Duration,
}

impl Cmd {
    /// A command for `program`, usually `env!("CARGO_BIN_EXE_<name>")`.
    pub fn new(program: impl AsRef<Path>) -> Self {
        Cmd {
            launch: Launch::new(program),
            input: Input::Null,
            capture: Capture::Keep,
            deadline: DEFAULT_DEADLINE,
        }
    }

    launch_setters!("the program");

    /// Feeds these bytes to standard input, then closes it.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.input = Input::Bytes(bytes.into());
        self
    }

    /// Connects standard input to a file.
    pub fn stdin_file(mut self, path: impl AsRef<Path>) -> Self {
        self.input = Input::File(path.as_ref().to_path_buf());
        self
    }

    /// Does not keep the whole standard output, only its length, a hash and
    /// its first and last 4 KiB: for outputs of hundreds of megabytes, which
    /// must not inflate the test process.
    pub fn digest_stdout(mut self) -> Self {
        self.capture = Capture::Digest;
        self
    }

    /// Connects standard output to a pipe whose read end is already closed,
    /// so the program's first write fails with EPIPE ("Broken pipe"), as in
    /// `program | head -1` once `head` has exited. Rust programs ignore
    /// SIGPIPE, so they see the error; the outcome's stdout is empty.
    pub fn stdout_closed(mut self) -> Self {
        self.capture = Capture::Closed;
        self
    }

    /// Kills the program if it has not exited after `deadline`.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The command as a learner would type it (program name without its path).
    pub fn command_line(&self) -> String {
        let mut line = self.launch.command_line();
        match &self.input {
            Input::Null => {}
            Input::Bytes(b) => {
                let _ = write!(line, " (stdin: {})", show(b));
            }
            Input::File(p) => {
                let _ = write!(line, " < {}", p.display());
            }
        }
        line
    }

    /// Runs the program to completion (or until the deadline) and returns
    /// what happened. Fails the test with a clear message only when the
    /// program cannot be started at all.
    #[track_caller]
    pub fn run(&self) -> Outcome {
        let mut command = self.launch.command();
        command.stderr(Stdio::piped());
        if self.capture == Capture::Closed {
            let (reader, writer) = std::io::pipe().expect("create a pipe for stdout");
            // Nobody will ever read: writes to `writer` fail with EPIPE.
            drop(reader);
            command.stdout(writer);
        } else {
            command.stdout(Stdio::piped());
        }
        command.stdin(match &self.input {
            Input::Null => Stdio::null(),
            Input::Bytes(_) => Stdio::piped(),
            Input::File(p) => match File::open(p) {
                Ok(f) => Stdio::from(f),
                Err(e) => Report::new(format!("opened {} as stdin", p.display()))
                    .got(e)
                    .hint("this is a problem in the test setup, not in your code")
                    .fail(),
            },
        });

        let started = Instant::now();
        let (process, pipes) = match Process::spawn(&mut command, |_| {}) {
            Ok(p) => p,
            Err(e) => Report::new(format!("started: {}", self.command_line()))
                .got(format!("could not start it: {e}"))
                .hint("does the lab build? try `cargo build` in the lab folder")
                .fail(),
        };
        let pid = process.pid();

        // Feed stdin from its own thread: a program that writes before it has
        // read everything would otherwise deadlock with us.
        let stdin_thread = match (&self.input, pipes.stdin) {
            (Input::Bytes(bytes), Some(mut pipe)) => {
                let bytes = bytes.clone();
                Some(thread::spawn(move || {
                    // A program may exit without reading its input: EPIPE is fine.
                    let _ = pipe.write_all(&bytes);
                }))
            }
            _ => None,
        };
        let stderr = pipes.stderr.expect("stderr is piped");
        let capture = self.capture;
        let out_stream = Drained::start(pipes.stdout, capture);
        let err_stream = Drained::start(Some(stderr), Capture::Keep);

        // Sample the peak memory until the program exits.
        let peak = Arc::new(AtomicU64::new(0));
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let sampler = {
            let peak = Arc::clone(&peak);
            thread::spawn(move || {
                loop {
                    if let Some(kib) = crate::procfs::status_kib(pid, "VmHWM") {
                        peak.fetch_max(kib, Ordering::Relaxed);
                    }
                    match done_rx.recv_timeout(Duration::from_millis(2)) {
                        Err(mpsc::RecvTimeoutError::Timeout) => continue,
                        _ => break,
                    }
                }
            })
        };

        // Wait with the deadline; past it, kill the program (and anything it
        // started) and take the exit the kill caused.
        let (status, timed_out) = match process.wait(self.deadline) {
            Some(status) => (status, false),
            None => {
                process.kill_tree();
                let status = process
                    .wait(KILL_DEADLINE)
                    .unwrap_or_else(|| ExitStatus::from_raw(libc::SIGKILL));
                (status, true)
            }
        };
        let elapsed = started.elapsed();
        let _ = done_tx.send(());
        let _ = sampler.join();
        // The stdin writer is not joined: if a process the program started
        // still holds stdin without reading, it would block forever. It ends
        // on its own when the last reader goes.
        drop(stdin_thread);
        // Output pipes reach end-of-file when every process holding them has
        // exited. A program that left a child behind with its stdout (a bug
        // some labs test for) would make us wait forever, so wait a short
        // grace period, then take what has arrived.
        let grace = Duration::from_secs(2);
        let (stdout, out_open) = out_stream.finish(grace);
        let (stderr, err_open) = err_stream.finish(grace);

        Outcome {
            command_line: self.command_line(),
            code: status.code(),
            signal: status.signal(),
            timed_out,
            deadline: self.deadline,
            stdout: stdout.bytes,
            stdout_len: stdout.len,
            stdout_hash: stdout.hash,
            stdout_tail: stdout.tail,
            stderr: stderr.bytes,
            peak_rss_kib: peak.load(Ordering::Relaxed),
            elapsed,
            output_left_open: out_open || err_open,
        }
    }
}

/// A pipe being drained on its own thread into a shared [`Stream`], so the
/// output can be taken even if the pipe never reaches end-of-file.
struct Drained {
    stream: Arc<std::sync::Mutex<Stream>>,
    done: mpsc::Receiver<()>,
    capture: Capture,
}

impl Drained {
    fn start(pipe: Option<impl Read + Send + 'static>, capture: Capture) -> Drained {
        let stream = Arc::new(std::sync::Mutex::new(Stream {
            hash: FNV_OFFSET,
            ..Stream::default()
        }));
        let (tx, done) = mpsc::channel();
        let shared = Arc::clone(&stream);
        thread::spawn(move || {
            if let Some(pipe) = pipe {
                Stream::drain(pipe, capture, &shared);
            }
            let _ = tx.send(());
        });
        Drained {
            stream,
            done,
            capture,
        }
    }

    /// Waits up to `grace` for end-of-file, then takes the output; the bool
    /// says whether the pipe was still open.
    fn finish(self, grace: Duration) -> (Stream, bool) {
        let open = self.done.recv_timeout(grace).is_err();
        let mut s = std::mem::take(&mut *self.stream.lock().unwrap_or_else(|e| e.into_inner()));
        if self.capture == Capture::Digest && s.tail.len() > Stream::KEEP {
            s.tail.drain(..s.tail.len() - Stream::KEEP);
        }
        (s, open)
    }
}

/// Output drained from one pipe.
#[derive(Debug, Default)]
struct Stream {
    bytes: Vec<u8>,
    tail: Vec<u8>,
    len: u64,
    hash: u64,
}

impl Stream {
    const KEEP: usize = 4096;

    fn drain(mut pipe: impl Read, capture: Capture, shared: &std::sync::Mutex<Stream>) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let chunk = &buf[..n];
            let mut guard = shared.lock().unwrap_or_else(|e| e.into_inner());
            let s = &mut *guard;
            s.len += n as u64;
            s.hash = fnv1a(s.hash, chunk);
            match capture {
                Capture::Keep | Capture::Closed => s.bytes.extend_from_slice(chunk),
                Capture::Digest => {
                    if s.bytes.len() < Self::KEEP {
                        let take = (Self::KEEP - s.bytes.len()).min(n);
                        s.bytes.extend_from_slice(&chunk[..take]);
                    }
                    s.tail.extend_from_slice(chunk);
                    if s.tail.len() > 2 * Self::KEEP {
                        s.tail.drain(..s.tail.len() - Self::KEEP);
                    }
                }
            }
        }
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// 64-bit FNV-1a, continued from `hash`: cheap, and enough to tell two large
/// outputs apart. Start from [`fnv1a_start`].
pub fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The starting value for [`fnv1a`].
pub fn fnv1a_start() -> u64 {
    FNV_OFFSET
}

/// What a finished (or killed) program did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The command as typed, for messages.
    pub command_line: String,
    /// Exit code, if it exited normally.
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// Whether the test killed it at the deadline.
    pub timed_out: bool,
    /// The deadline it had.
    pub deadline: Duration,
    /// Standard output (with [`Cmd::digest_stdout`]: only its first 4 KiB).
    pub stdout: Vec<u8>,
    /// Length of the whole standard output in bytes.
    pub stdout_len: u64,
    /// FNV-1a hash of the whole standard output (see [`fnv1a`]).
    pub stdout_hash: u64,
    /// With [`Cmd::digest_stdout`]: the last 4 KiB of standard output.
    pub stdout_tail: Vec<u8>,
    /// Standard error, whole.
    pub stderr: Vec<u8>,
    /// Peak resident memory of the program in KiB (`VmHWM`), sampled every
    /// 2 ms: 0 for a program that exits before the first sample.
    pub peak_rss_kib: u64,
    /// Wall time from start to exit.
    pub elapsed: Duration,
    /// Whether stdout or stderr was still open after the program ended: a
    /// process it started outlived it and kept them (output after that
    /// point is not captured).
    pub output_left_open: bool,
}

impl Outcome {
    /// Standard output as text (invalid UTF-8 replaced).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Standard error as text (invalid UTF-8 replaced).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Whether the program panicked (Rust's panic message is on stderr).
    pub fn panicked(&self) -> bool {
        let err = self.stderr_text();
        err.contains("panicked at") || err.contains("RUST_BACKTRACE")
    }

    /// One phrase for how the program ended: "exit code 0", "a panic
    /// (exit code 101)", "killed by signal 11 (SIGSEGV)", "still running after
    /// 10s (killed by the test)".
    pub fn ending(&self) -> String {
        if self.timed_out {
            return format!(
                "still running after {:?} (killed by the test)",
                self.deadline
            );
        }
        match (self.code, self.signal) {
            (Some(101), _) if self.panicked() => "a panic (exit code 101)".to_string(),
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => format!("killed by signal {s} ({})", signal_name(s)),
            (None, None) => "an unknown ending".to_string(),
        }
    }

    /// A report that starts with "ran: <command>" and quotes the program's
    /// stderr, ready for `expected`/`got`/`hint`.
    pub fn report(&self) -> Report {
        Report::new(format!("ran: {}", self.command_line))
            .quote("your program (stderr)", &self.stderr)
    }

    /// Fails unless the program exited on its own with exit code 0.
    #[track_caller]
    pub fn expect_success(&self) -> &Self {
        self.expect_code(0)
    }

    /// Fails unless the program exited on its own with `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        if self.code != Some(code) || self.timed_out {
            let hint = if self.timed_out {
                "does it wait for input that never comes, or loop forever?"
            } else if self.panicked() {
                "a panic is never the right way to report an error: print a message to stderr and exit with a code"
            } else if code == 0 {
                "read the message your program printed below"
            } else {
                "use std::process::exit(code) (or return an ExitCode from main) after printing the error"
            };
            self.report()
                .expected(format!("exit code {code}"))
                .got(self.ending())
                .hint(hint)
                .fail();
        }
        self
    }

    /// Fails unless standard output is exactly `expected`, showing the first
    /// difference.
    #[track_caller]
    pub fn expect_stdout(&self, expected: impl AsRef<[u8]>) -> &Self {
        let expected = expected.as_ref();
        if let Some(diff) = crate::report::first_difference(expected, &self.stdout) {
            self.report()
                .expected(format!("stdout {}", show(expected)))
                .got(format!("stdout {}\n{diff}", show(&self.stdout)))
                .fail();
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_exit_code_and_stdin() {
        let out = Cmd::new("/bin/sh")
            .args(["-c", "cat; echo err >&2; exit 3"])
            .stdin("in\n")
            .run();
        assert_eq!(out.stdout, b"in\n");
        assert_eq!(out.stderr, b"err\n");
        assert_eq!(out.code, Some(3));
        assert!(!out.timed_out && !out.output_left_open);
    }

    #[test]
    fn a_child_left_holding_stdout_does_not_hang_the_run() {
        // The shell exits at once; the `sleep` it started keeps stdout open.
        let out = Cmd::new("/bin/sh")
            .args(["-c", "sleep 60 & echo started"])
            .deadline(Duration::from_secs(10))
            .run();
        assert_eq!(out.stdout, b"started\n");
        assert_eq!(out.code, Some(0));
        assert!(out.output_left_open);
        assert!(out.elapsed < Duration::from_secs(10));
    }

    #[test]
    fn a_program_past_its_deadline_is_killed() {
        let out = Cmd::new("/bin/sh")
            .args(["-c", "exec sleep 60"])
            .deadline(Duration::from_millis(200))
            .run();
        assert!(out.timed_out);
        assert_eq!(out.signal, Some(libc::SIGKILL));
        assert!(out.ending().contains("killed by the test"));
    }
}
