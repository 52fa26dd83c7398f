//! The grader for lab 05, processes versus threads.
//!
//! Tests 01-07 run the program to completion (`labkit::session`, with a
//! deadline; the stuck workers of a buggy run are killed with it) and read
//! what it printed: the main line, one line per worker,
//! the isolation line and the cost line. The identities are checked against
//! each other and against the test process (the program's parent). Tests
//! 08-10 use `--hold`: the program stops at `hold: workers alive` and at
//! `hold: workers gone` and waits for a line on stdin, so the test can look
//! at `/proc` at a point the program chose, with no sleep (`labkit::session`):
//! its children and their states, its threads in `/proc/<pid>/task`. The
//! cost line is shown, never judged.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use labkit::Report;
use labkit::procfs;
use labkit::session::Session;

const BIN: &str = env!("CARGO_BIN_EXE_proc_vs_thread");

/// How long the program may take to reach the next point of a held run.
const STEP: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `pid=.. tid=.. ppid=..` as printed on a main or worker line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ids {
    pid: u32,
    tid: u32,
    ppid: u32,
}

/// One worker line.
#[derive(Debug, Clone, Copy)]
struct Worker {
    index: usize,
    ids: Ids,
}

/// What a run printed, parsed.
#[derive(Debug)]
struct Printed {
    main: Ids,
    workers: Vec<Worker>,
    /// The line after the worker lines (`isolation: ...` / `shared: ...`).
    isolation: String,
    /// The last line (`creation cost: ...`).
    cost: String,
}

/// Parses `pid=1 tid=2 ppid=3`.
fn parse_ids(text: &str) -> Option<Ids> {
    let mut it = text.split(' ');
    let mut field = |name: &str| it.next()?.strip_prefix(name)?.parse::<u32>().ok();
    let ids = Ids {
        pid: field("pid=")?,
        tid: field("tid=")?,
        ppid: field("ppid=")?,
    };
    it.next().is_none().then_some(ids)
}

/// Parses `main pid=.. tid=.. ppid=..`.
fn parse_main(line: &str) -> Option<Ids> {
    parse_ids(line.strip_prefix("main ")?)
}

/// Parses `worker <i> pid=.. tid=.. ppid=..`.
fn parse_worker(line: &str) -> Option<Worker> {
    let rest = line.strip_prefix("worker ")?;
    let (index, ids) = rest.split_once(' ')?;
    Some(Worker {
        index: index.parse().ok()?,
        ids: parse_ids(ids)?,
    })
}

/// The line format, for messages.
const FORMATS: &str = "`main pid=<n> tid=<n> ppid=<n>`, then N lines `worker <i> pid=<n> tid=<n> ppid=<n>`, then the isolation line, then `creation cost: <x> us per worker`";

/// Checks the shape of the main and worker lines of `lines` (the output up
/// to the isolation line, or to `hold: workers alive`): a main line first,
/// then exactly one line per worker index `0..n`, in any order. `report`
/// describes the run for failure messages.
#[track_caller]
fn parse_head(lines: &[String], n: usize, report: impl Fn() -> Report) -> (Ids, Vec<Worker>) {
    let Some(main) = lines.first().and_then(|l| parse_main(l)) else {
        report()
            .expected("the first line to be `main pid=<n> tid=<n> ppid=<n>`")
            .got(match lines.first() {
                Some(l) => format!("{l:?}"),
                None => "no output".to_string(),
            })
            .hint("print the main thread's own getpid(), gettid() and getppid() first, before starting any worker")
            .fail()
    };
    let mut workers = Vec::new();
    for line in &lines[1..] {
        match parse_worker(line) {
            Some(w) => workers.push(w),
            None => report()
                .expected(format!("after the main line, {n} lines `worker <i> pid=<n> tid=<n> ppid=<n>`"))
                .got(format!("the line {line:?}"))
                .hint("one line per worker, printed by the worker itself, single spaces, nothing else on stdout")
                .fail(),
        }
    }
    let indices: Vec<usize> = {
        let mut v: Vec<usize> = workers.iter().map(|w| w.index).collect();
        v.sort_unstable();
        v
    };
    if indices != (0..n).collect::<Vec<_>>() {
        report()
            .expected(format!(
                "one worker line for each index 0..{n} (in any order)"
            ))
            .got(format!("worker lines for indices {indices:?}"))
            .hint("start exactly N workers, number them from 0, and make sure each has printed its line before the parent goes on")
            .fail();
    }
    (main, workers)
}

/// A run of the program. Dropping it (its `Session`) kills whatever
/// children the program still has (a buggy program's workers may block
/// forever, e.g. waiting for an end of file that their own copy of a pipe
/// prevents), then the program.
struct Program {
    session: Session,
}

impl Program {
    fn start(args: &[&str]) -> Program {
        Program {
            session: Session::start(BIN, args),
        }
    }
}

impl std::ops::Deref for Program {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.session
    }
}

impl std::ops::DerefMut for Program {
    fn deref_mut(&mut self) -> &mut Session {
        &mut self.session
    }
}

/// Runs `proc_vs_thread <mode> <n>` to completion (stdin closed), requires
/// exit code 0, stdout closed by then, and the documented shape, and parses
/// it.
#[track_caller]
fn run(mode: &str, n: usize) -> (Program, Printed) {
    let n_arg = n.to_string();
    let mut s = Program::start(&[mode, &n_arg]);
    s.close_stdin();
    let status = s.wait(STEP);
    let ended = s.read_to_end(Duration::from_secs(2));
    match status {
        Some(st) if st.code() == Some(0) => {}
        Some(st) => s
            .report()
            .expected("exit code 0")
            .got(labkit::session::describe(st))
            .hint("read the program's stderr below")
            .fail(),
        None => {
            let children: Vec<String> = procfs::children(s.pid())
                .into_iter()
                .map(describe_proc)
                .collect();
            s.report()
                .expected(format!("the program to exit within {STEP:?}"))
                .got(format!(
                    "it was still running; its children: {}",
                    if children.is_empty() { "none".to_string() } else { children.join(", ") }
                ))
                .hint("is the parent blocked in waitpid on a child that never exits? A child blocked reading a pipe sees end of file only when *every* copy of the write end is closed, including the one fork gave the child itself")
                .fail()
        }
    }
    if ended.is_err() {
        s.report()
            .expected("stdout to be closed once the program has exited")
            .got("it was still open 2 s later: a worker process outlived the program and still holds it")
            .hint("the parent must wait for every child (waitpid) before it exits")
            .fail();
    }
    let lines = s.lines_seen().to_vec();
    let report = || s.report();
    if lines.len() != n + 3 {
        report()
            .expected(format!(
                "{} lines on stdout: {FORMATS}",
                n + 3
            ))
            .got(format!("{} lines", lines.len()))
            .hint("each worker prints exactly one line; is anything printed twice (a child inherits a copy of unflushed output), or missing?")
            .fail();
    }
    let (main, workers) = parse_head(&lines[..n + 1], n, report);
    let printed = Printed {
        main,
        workers,
        isolation: lines[n + 1].clone(),
        cost: lines[n + 2].clone(),
    };
    // The program's parent is this test process: that checks the main line.
    let me = std::process::id();
    if printed.main.ppid != me
        || printed.main.tid != printed.main.pid
        || printed.main.pid != s.pid()
    {
        report()
            .expected(format!(
                "the main line to show the program's own ids: pid={0} tid={0} (the main thread's tid is the pid) ppid={me} (the test process started it)",
                s.pid()
            ))
            .got(format!("{:?}", lines[0]))
            .hint("use libc::getpid(), libc::gettid() and libc::getppid() on the main thread")
            .fail();
    }
    (s, printed)
}

/// Reads a held run up to `hold: workers alive` and parses the lines before.
#[track_caller]
fn hold_alive(s: &mut Program, n: usize) -> (Ids, Vec<Worker>) {
    let (before, _) = s.read_until(
        "the line `hold: workers alive` (after the main line and every worker line)",
        |l| l == "hold: workers alive",
        STEP,
    );
    let (main, workers) = parse_head(&before, n, || s.report());
    if main.pid != s.pid() {
        s.report()
            .expected(format!("the main line to say pid={}", s.pid()))
            .got(format!("pid={}", main.pid))
            .hint("print libc::getpid() on the main thread")
            .fail();
    }
    (main, workers)
}

/// Lets a held program go on from `hold: workers alive` to `hold: workers
/// gone`, and returns the lines in between.
#[track_caller]
fn hold_gone(s: &mut Program) -> Vec<String> {
    s.send_line("");
    s.read_until(
        "the line `hold: workers gone` (after the isolation and cost lines)",
        |l| l == "hold: workers gone",
        STEP,
    )
    .0
}

/// Lets a held program finish and requires exit code 0.
#[track_caller]
fn finish(mut s: Program) {
    s.send_line("");
    match s.wait(STEP) {
        Some(status) if status.code() == Some(0) => {}
        other => s
            .report()
            .did("sent a line to its stdin at `hold: workers gone`")
            .expected(format!("it to exit with code 0 within {STEP:?}"))
            .got(match other {
                Some(status) => labkit::session::describe(status),
                None => "still running".to_string(),
            })
            .hint("after `hold: workers gone` and one line of stdin, return from main")
            .fail(),
    }
}

/// How a process looks in /proc now, for messages.
fn describe_proc(pid: u32) -> String {
    match procfs::state(pid) {
        None => format!("{pid} (gone)"),
        Some('Z') => format!("{pid} (state Z: a zombie)"),
        Some(s) => format!("{pid} (state {s}, still running)"),
    }
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

// `processes 4` prints the main line, one line per worker, the isolation line and the cost line.
#[test]
fn test_01_processes_mode_prints_main_then_one_line_per_worker() {
    let (out, p) = run("processes", 4);
    if !p.isolation.starts_with("isolation: ") || !p.cost.starts_with("creation cost: ") {
        out.report()
            .expected(format!(
                "after the worker lines: `isolation: ...`, then `creation cost: ...`; {FORMATS}"
            ))
            .got(format!("{:?} and {:?}", p.isolation, p.cost))
            .hint("print the isolation line after every child has been reaped, then the cost line")
            .fail();
    }
}

// Each worker process is a separate process: a pid of its own, and the program as its parent.
#[test]
fn test_02_process_workers_are_distinct_children_of_the_program() {
    let (out, p) = run("processes", 8);
    let report = || out.report();
    let pids: HashSet<u32> = p.workers.iter().map(|w| w.ids.pid).collect();
    if pids.len() != 8 || pids.contains(&p.main.pid) {
        report()
            .expected(format!(
                "8 different pids, none of them the program's own ({})",
                p.main.pid
            ))
            .got(format!(
                "{} different pids: {:?}",
                pids.len(),
                pids.iter().collect::<BTreeSet<_>>()
            ))
            .hint("does each child call getpid() itself, after fork? A value computed before fork is the parent's")
            .fail();
    }
    for w in &p.workers {
        if w.ids.ppid != p.main.pid {
            report()
                .expected(format!(
                    "every worker's ppid to be the program's pid {}: the program forked it",
                    p.main.pid
                ))
                .got(format!("worker {} says ppid={}", w.index, w.ids.ppid))
                .hint("call getppid() in the child; and did the parent fork every child itself (not a child forking the next)?")
                .fail();
        }
        if w.ids.tid != w.ids.pid {
            report()
                .expected("each worker process to be single-threaded: its tid equal to its pid")
                .got(format!(
                    "worker {} says pid={} tid={}",
                    w.index, w.ids.pid, w.ids.tid
                ))
                .hint("a process made by fork has one thread, whose tid is the pid: call gettid() in the child")
                .fail();
        }
    }
}

// A child's write lands in its own copy of memory (copy-on-write): the parent still reads 0.
#[test]
fn test_03_a_childs_write_is_invisible_to_the_parent() {
    let (out, p) = run("processes", 3);
    let expected = "isolation: parent sees 0 after child wrote 42";
    if p.isolation != expected {
        out.report()
                        .expected(format!("the line {expected:?}"))
            .got(format!("{:?}", p.isolation))
            .hint("the parent prints what *it* reads from VALUE after reaping the children, and what a child read back from its own VALUE, which the child returns as its exit code (WEXITSTATUS of waitpid's status)")
            .fail();
    }
}

// ---------------------------------------------------------------------------
// Threads
// ---------------------------------------------------------------------------

// `threads 4` prints the main line, one line per worker, the shared line and the cost line.
#[test]
fn test_04_threads_mode_prints_main_then_one_line_per_worker() {
    let (out, p) = run("threads", 4);
    if !p.isolation.starts_with("shared: ") || !p.cost.starts_with("creation cost: ") {
        out.report()
            .expected(format!(
                "after the worker lines: `shared: ...`, then `creation cost: ...`; {FORMATS}"
            ))
            .got(format!("{:?} and {:?}", p.isolation, p.cost))
            .hint("print the shared line after joining every thread, then the cost line")
            .fail();
    }
}

// Threads are tasks of one process: the same pid and parent as the main thread, each its own tid.
#[test]
fn test_05_threads_share_the_pid_and_parent_with_distinct_tids() {
    let (out, p) = run("threads", 8);
    let report = || out.report();
    for w in &p.workers {
        if w.ids.pid != p.main.pid || w.ids.ppid != p.main.ppid {
            report()
                .expected(format!(
                    "every thread to report the process's pid={} and its parent ppid={} (the test process): a thread belongs to the process",
                    p.main.pid, p.main.ppid
                ))
                .got(format!(
                    "worker {} says pid={} ppid={}",
                    w.index, w.ids.pid, w.ids.ppid
                ))
                .hint("getpid() and getppid() are per process: the same in every thread. A thread's parent is not the main thread")
                .fail();
        }
    }
    let tids: HashSet<u32> = p.workers.iter().map(|w| w.ids.tid).collect();
    if tids.len() != 8 || tids.contains(&p.main.pid) {
        report()
            .expected(format!(
                "8 different tids, none of them the pid {} (that is the main thread's tid)",
                p.main.pid
            ))
            .got(format!(
                "{} different tids: {:?}",
                tids.len(),
                tids.iter().collect::<BTreeSet<_>>()
            ))
            .hint("call libc::gettid() inside each thread; getpid() is the same for all of them")
            .fail();
    }
}

// A thread writes the process's only copy of the variable: the main thread reads 42.
#[test]
fn test_06_a_threads_write_is_visible_to_the_parent() {
    let (out, p) = run("threads", 3);
    let expected = "shared: parent sees 42 after thread wrote 42";
    if p.isolation != expected {
        out.report()
                        .expected(format!("the line {expected:?}"))
            .got(format!("{:?}", p.isolation))
            .hint("the main thread prints what it reads from VALUE after joining every thread, and what a thread returned from its closure (through join)")
            .fail();
    }
}

// Both modes print their creation cost per worker (shown here, never judged: timing varies).
#[test]
fn test_07_prints_a_creation_cost_in_both_modes() {
    for mode in ["processes", "threads"] {
        let (out, p) = run(mode, 16);
        let number = p
            .cost
            .strip_prefix("creation cost: ")
            .and_then(|r| r.strip_suffix(" us per worker"))
            .and_then(|x| x.parse::<f64>().ok());
        match number {
            Some(us) if us.is_finite() && us >= 0.0 => {
                eprintln!("[test] {mode}: {us} us per worker (for your information)");
            }
            _ => out
                .report()
                                .expected("the last line `creation cost: <microseconds> us per worker`, e.g. `creation cost: 61.4 us per worker`")
                .got(format!("{:?}", p.cost))
                .hint("time the loop that creates the workers with std::time::Instant, divide by N, print microseconds")
                .fail(),
        }
    }
}

// ---------------------------------------------------------------------------
// Held runs: looking at /proc while the program waits
// ---------------------------------------------------------------------------

// While held, each reported worker pid is a live process whose parent is the program.
#[test]
fn test_08_held_process_workers_are_live_children_of_the_program() {
    let mut s = Program::start(&["processes", "4", "--hold"]);
    let (main, workers) = hold_alive(&mut s, 4);
    let reported: BTreeSet<u32> = workers.iter().map(|w| w.ids.pid).collect();
    for w in &workers {
        let (state, ppid) = (procfs::state(w.ids.pid), procfs::ppid(w.ids.pid));
        if ppid != Some(main.pid) || matches!(state, None | Some('Z')) {
            s.report()
                .did(format!(
                    "read /proc/{}/stat at `hold: workers alive`",
                    w.ids.pid
                ))
                .expected(format!(
                    "worker {}'s process {} to be alive (not a zombie) with parent {}",
                    w.index, w.ids.pid, main.pid
                ))
                .got(match (state, ppid) {
                    (None, _) => "no such process".to_string(),
                    (Some(s), p) => format!("state {s}, parent {p:?}"),
                })
                .hint("at `hold: workers alive` every child must still run, blocked until the parent releases it (e.g. reading a pipe); and the pid printed must be the child's own getpid()")
                .fail();
        }
    }
    let children: BTreeSet<u32> = procfs::children(main.pid).into_iter().collect();
    if children != reported {
        s.report()
            .did(format!("listed the children of {} in /proc", main.pid))
            .expected(format!(
                "exactly the reported worker processes {reported:?}"
            ))
            .got(format!("children {children:?}"))
            .hint("the program should fork exactly N children, all from the parent")
            .fail();
    }
    hold_gone(&mut s);
    finish(s);
}

// While held, each reported tid is a thread of the program (/proc/<pid>/task), and no child process exists.
#[test]
fn test_09_held_threads_are_tasks_of_the_program() {
    let mut s = Program::start(&["threads", "4", "--hold"]);
    let (main, workers) = hold_alive(&mut s, 4);
    let tasks: BTreeSet<u32> = procfs::thread_ids(main.pid).into_iter().collect();
    for w in &workers {
        if !tasks.contains(&w.ids.tid) {
            s.report()
                .did(format!(
                    "listed /proc/{}/task at `hold: workers alive`",
                    main.pid
                ))
                .expected(format!(
                    "worker {}'s tid {} among the program's threads",
                    w.index, w.ids.tid
                ))
                .got(format!("threads {tasks:?}"))
                .hint("at `hold: workers alive` every worker thread must still run, blocked until the main thread releases it (e.g. a Barrier); and the tid printed must be its own gettid()")
                .fail();
        }
    }
    let children = procfs::children(main.pid);
    if !children.is_empty() {
        s.report()
            .did(format!("listed the children of {} in /proc", main.pid))
            .expected("no child process: threads are not processes")
            .got(format!("children {children:?}"))
            .hint("threads mode uses std::thread::spawn, not fork")
            .fail();
    }
    let between = hold_gone(&mut s);
    if between.first().map(String::as_str) != Some("shared: parent sees 42 after thread wrote 42") {
        s.report()
            .expected("the line `shared: parent sees 42 after thread wrote 42` after `hold: workers alive`")
            .got(format!("{between:?}"))
            .fail();
    }
    finish(s);
}

// After every worker exits, the parent has reaped them all: no zombie, no child left at all.
#[test]
fn test_10_every_child_is_reaped_no_zombies() {
    let mut s = Program::start(&["processes", "5", "--hold"]);
    let (main, workers) = hold_alive(&mut s, 5);
    let between = hold_gone(&mut s);
    if between.first().map(String::as_str) != Some("isolation: parent sees 0 after child wrote 42")
    {
        s.report()
            .expected("the line `isolation: parent sees 0 after child wrote 42` after `hold: workers alive`")
            .got(format!("{between:?}"))
            .fail();
    }
    // The program is blocked at `hold: workers gone`: every child must be gone.
    let children = procfs::children(main.pid);
    if !children.is_empty() {
        let zombies = children.iter().any(|&c| procfs::state(c) == Some('Z'));
        let listed: Vec<String> = children.iter().map(|&c| describe_proc(c)).collect();
        s.report()
            .did(format!(
                "listed the children of {} in /proc at `hold: workers gone`",
                main.pid
            ))
            .expected("no child left: every worker exited and was reaped with waitpid")
            .got(format!("children {}", listed.join(", ")))
            .hint(if zombies {
                "a zombie is a child that has exited but was never waited for: call libc::waitpid(pid, &mut status, 0) for every child before printing the isolation line"
            } else {
                "a child still runs: did the parent release every child and waitpid for each one before going on?"
            })
            .fail();
    }
    finish(s);
    // And nothing of the workers survives the program.
    for w in &workers {
        if procfs::ppid(w.ids.pid) == Some(main.pid) {
            Report::new("ran: proc_vs_thread processes 5 --hold to the end")
                .expected(format!("worker process {} to be gone", w.ids.pid))
                .got(describe_proc(w.ids.pid))
                .fail();
        }
    }
}

// Bad arguments print the usage on stderr and exit with code 2 (after a good run works).
#[test]
fn test_11_rejects_bad_arguments_with_exit_code_2() {
    run("threads", 1);
    let bad: [&[&str]; 7] = [
        &[],
        &["processes"],
        &["fibers", "3"],
        &["processes", "0"],
        &["threads", "many"],
        &["threads", "-2"],
        &["processes", "3", "--wait"],
    ];
    for args in bad {
        let out = labkit::Cmd::new(BIN).args(args).run();
        if out.code != Some(2) || out.stderr.is_empty() || !out.stdout.is_empty() {
            out.report()
                .expected("the usage on stderr, nothing on stdout, exit code 2")
                .got(format!(
                    "{}, {} bytes on stderr, {} bytes on stdout",
                    out.ending(),
                    out.stderr.len(),
                    out.stdout.len()
                ))
                .hint("the starter's `parse` does this: keep its error path")
                .fail();
        }
    }
}
