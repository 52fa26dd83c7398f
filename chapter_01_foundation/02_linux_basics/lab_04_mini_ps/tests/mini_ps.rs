//! The grader for lab 04: `mini_ps` lists processes from `/proc`.
//!
//! The tests start processes whose properties they know (the fixture binary
//! of this lab, `tests/fixtures/fixture.rs`): a sleeper with a unique
//! argument, a process with several threads, one holding a known amount of
//! memory, zombies, and one whose name is full of spaces and parentheses.
//! Each prints a `ready` line once set up, so no test guesses with a sleep.
//! Every child is killed and reaped by a guard when its test ends, pass or
//! fail.
//!
//! The test process itself is the parent of every fixture, so their PPID is
//! `std::process::id()`, under `cargo test` (threads) and nextest (processes).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use labkit::Report;
use labkit::report::show;
use labkit::run::{Cmd, Outcome};
use labkit::strace::Strace;

const BIN: &str = env!("CARGO_BIN_EXE_mini_ps");
const FIXTURE: &str = env!("CARGO_BIN_EXE_mini_ps_fixture");
const HEADER: [&str; 6] = ["PID", "PPID", "S", "THR", "RSS_KB", "COMMAND"];
/// A name that breaks every shortcut: split at the first `)` and the state
/// reads `Z` and the parent 1; split on spaces and the fields shift.
const NASTY_NAME: &str = "fake) Z 1 (x";
/// How long setting up a fixture may take.
const SETUP: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Fixture processes.

/// A running fixture; killed and reaped on drop.
struct Fixture {
    child: Child,
    pid: u32,
    /// The command line as mini_ps must show it.
    command: String,
}

impl Fixture {
    /// Starts `program` (the fixture, or a link to it) with `args` and waits
    /// for its `ready` line.
    #[track_caller]
    fn start(program: &Path, args: &[&str]) -> Fixture {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                Report::new(format!(
                    "started the fixture {} {args:?}",
                    program.display()
                ))
                .got(e)
                .hint("this is a problem in the test setup: does the lab build (`cargo build`)?")
                .fail()
            });
        let pid = child.id();
        let mut command = program.to_string_lossy().into_owned();
        for a in args {
            command.push(' ');
            command.push_str(a);
        }
        let stdout = child.stdout.take().expect("stdout is piped");
        let fixture = Fixture {
            child,
            pid,
            command,
        };
        // Read the ready line on a thread, so that the wait has a deadline.
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        match rx.recv_timeout(SETUP) {
            Ok(line) if line.starts_with("ready") => fixture,
            other => Report::new(format!("started the fixture: {}", fixture.command))
                .expected("it to print `ready`")
                .got(match other {
                    Ok(line) => format!("the line {}", show(line)),
                    Err(_) => format!("nothing within {SETUP:?}"),
                })
                .hint("this is a problem in the test setup, not in your code")
                .fail(),
        }
    }

    /// A fixture that blocks reading its stdin, with a unique argument.
    fn sleeper() -> Fixture {
        let f = Fixture::start(Path::new(FIXTURE), &["wait", &unique_token()]);
        f.wait_until_asleep();
        f
    }

    /// Waits until the process is blocked (state S): after printing `ready`
    /// it is on its way into `read`, and may still be running for a moment.
    #[track_caller]
    fn wait_until_asleep(&self) {
        wait_until(
            &format!("fixture {} to block reading stdin (state S)", self.pid),
            || labkit::procfs::state(self.pid) == Some('S'),
        );
    }
}

impl Drop for Fixture {
    /// Closes the fixture's stdin, which tells it to exit (the churn fixture
    /// first reaps its own children, so none is left an orphan), then waits
    /// for it; kills it if it has not exited within a few seconds.
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => thread::sleep(Duration::from_millis(1)),
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child that has exited but that the test has not reaped: a zombie.
struct Zombie {
    child: Child,
    pid: u32,
}

impl Zombie {
    /// Starts `program exit` and waits for it to exit without reaping it
    /// (`waitid` with `WNOWAIT`), so it stays a zombie until dropped.
    #[track_caller]
    fn start(program: &Path) -> Zombie {
        let child = Command::new(program)
            .arg("exit")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                Report::new(format!("started {} exit", program.display()))
                    .got(e)
                    .hint("this is a problem in the test setup")
                    .fail()
            });
        let pid = child.id();
        let zombie = Zombie { child, pid };
        // SAFETY: waitid on our own unreaped child, with a zeroed siginfo_t
        // that lives across the call. WNOWAIT leaves the child waitable.
        let r = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r != 0 {
            Report::new(format!("waited for {pid} to exit (without reaping it)"))
                .got(std::io::Error::last_os_error())
                .hint("this is a problem in the test setup")
                .fail();
        }
        wait_until(&format!("{pid} to be a zombie (state Z)"), || {
            labkit::procfs::state(pid) == Some('Z')
        });
        zombie
    }
}

impl Drop for Zombie {
    fn drop(&mut self) {
        let _ = self.child.wait(); // reaps it: the zombie disappears
    }
}

/// A directory holding a symbolic link to the fixture named [`NASTY_NAME`]:
/// a process started through it is named that (the kernel names a process
/// after the file name it was started by).
fn nasty_link() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let link = dir.path().join(NASTY_NAME);
    std::os::unix::fs::symlink(FIXTURE, &link).expect("create a symbolic link to the fixture");
    (dir, link)
}

/// Checks that the kernel named process `pid` `name` (test setup).
#[track_caller]
fn expect_comm(pid: u32, name: &str) {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    Report::new(format!(
        "started process {pid} through a link named {name:?}"
    ))
    .expected(format!("/proc/{pid}/comm to be {name:?}"))
    .got(format!("{comm:?}"))
    .hint("this is a problem in the test setup, not in your code")
    .check(comm.trim_end_matches('\n') == name);
}

/// An argument no other process has.
fn unique_token() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "token-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `cond` until it holds, failing after [`SETUP`].
#[track_caller]
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > SETUP {
            Report::new(format!("waited for {what}"))
                .got(format!("still not the case after {SETUP:?}"))
                .hint("this is a problem in the test setup (a very busy machine?)")
                .fail();
        }
        thread::sleep(Duration::from_millis(1));
    }
}

// ---------------------------------------------------------------------------
// Running mini_ps and reading its output.

/// One line of the listing, parsed.
#[derive(Debug, Clone)]
struct Row {
    pid: u32,
    ppid: u32,
    state: String,
    threads: u64,
    rss_kib: u64,
    command: String,
    line: String,
}

/// The parsed listing and the run that produced it.
struct Listing {
    outcome: Outcome,
    rows: Vec<Row>,
}

impl Listing {
    fn row(&self, pid: u32) -> Option<&Row> {
        self.rows.iter().find(|r| r.pid == pid)
    }

    /// The row of `pid`, or a failure that says it is missing.
    #[track_caller]
    fn expect_row(&self, pid: u32, what: &str) -> &Row {
        self.row(pid).unwrap_or_else(|| {
            self.report()
                .quote("your program (stdout)", &self.outcome.stdout)
                .expected(format!("a line for pid {pid} ({what})"))
                .got(format!(
                    "no line starts with {pid} ({} process lines in all)",
                    self.rows.len()
                ))
                .hint("do you list every numeric directory of /proc? a process the test started is still running")
                .fail()
        })
    }

    fn report(&self) -> Report {
        self.outcome.report()
    }
}

/// Runs `mini_ps ARGS`, checks it exits 0, and parses its output.
#[track_caller]
fn list(args: &[&str]) -> Listing {
    let outcome = Cmd::new(BIN).args(args).run();
    outcome.expect_success();
    parse_listing(outcome)
}

/// Splits a line into the first five whitespace-separated columns and the
/// rest (the command, which may contain spaces).
fn split_row(line: &str) -> Option<([&str; 5], &str)> {
    let mut rest = line.trim_start();
    let mut cols = [""; 5];
    for col in &mut cols {
        let end = rest.find(char::is_whitespace)?;
        *col = &rest[..end];
        rest = rest[end..].trim_start();
    }
    Some((cols, rest))
}

/// Parses the header and rows; fails with the offending line if any is
/// malformed, and checks that pids are unique and ascending.
#[track_caller]
fn parse_listing(outcome: Outcome) -> Listing {
    let text = outcome.stdout_text();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    if header != HEADER {
        outcome
            .report()
            .expected(format!(
                "a first line with the columns {}",
                HEADER.join(" ")
            ))
            .got(format!(
                "first line {}",
                show(text.lines().next().unwrap_or(""))
            ))
            .hint("print the header before the processes, columns separated by spaces")
            .fail();
    }
    let mut rows: Vec<Row> = Vec::new();
    for line in lines {
        let parsed = split_row(line).and_then(|(c, command)| {
            Some(Row {
                pid: c[0].parse().ok()?,
                ppid: c[1].parse().ok()?,
                state: c[2].to_string(),
                threads: c[3].parse().ok()?,
                rss_kib: c[4].parse().ok()?,
                command: command.to_string(),
                line: line.to_string(),
            })
        });
        let Some(row) = parsed.filter(|r| !r.command.is_empty() && r.state.len() == 1) else {
            outcome
                .report()
                .expected("every line after the header to be: PID PPID S THR RSS_KB COMMAND (numbers, one state letter, then a non-empty command)")
                .got(format!("the line {}", show(line)))
                .hint("a process without a command line (a kernel thread, a zombie) is shown as [name]")
                .fail();
        };
        if let Some(prev) = rows.last().filter(|prev| prev.pid >= row.pid) {
            outcome
                .report()
                .expected("one line per process, in ascending pid order")
                .got(format!("{}\nafter\n{}", show(&row.line), show(&prev.line)))
                .hint("sort the pids as numbers, and list each once")
                .fail();
        }
        rows.push(row);
    }
    Listing { outcome, rows }
}

/// Fails unless `row` has the expected PPID, state, threads and command.
#[track_caller]
fn expect_fields(
    listing: &Listing,
    row: &Row,
    what: &str,
    state: &str,
    threads: u64,
    command: &str,
) {
    let me = std::process::id();
    let expected = format!("PPID {me}, state {state}, {threads} thread(s), command {command:?}");
    let mut problems = Vec::new();
    if row.ppid != me {
        problems.push(format!(
            "PPID {} (its parent is this test process, {me}: field 4 of /proc/<pid>/stat)",
            row.ppid
        ));
    }
    if row.state != state {
        problems.push(format!(
            "state {} (field 3 of /proc/<pid>/stat, right after the name in parentheses)",
            row.state
        ));
    }
    if row.threads != threads {
        problems.push(format!(
            "{} threads (field 20 of /proc/<pid>/stat, or Threads: in /proc/<pid>/status)",
            row.threads
        ));
    }
    let stat_ok = problems.is_empty();
    if row.command != command {
        problems.push(format!("command {:?}", row.command));
    }
    let hint = if stat_ok {
        "COMMAND is /proc/<pid>/cmdline with its NUL separators turned into single spaces (no trailing space), or [name] when cmdline is empty"
    } else {
        "the name in /proc/<pid>/stat sits in parentheses and may contain spaces and ')': the fields start after the LAST ')'"
    };
    if !problems.is_empty() {
        listing
            .report()
            .did(format!("looked at the line for {what}, pid {}", row.pid))
            .expected(expected)
            .got(format!(
                "{}\nin the line {}",
                problems.join("; "),
                show(&row.line)
            ))
            .hint(hint)
            .fail();
    }
}

/// The text of `/proc/self/cmdline`, arguments joined by spaces.
fn own_command() -> String {
    let raw = std::fs::read("/proc/self/cmdline").unwrap_or_default();
    raw.split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------
// The tests.

// `mini_ps` prints the header, then one well-formed line per process in pid order, including pid 1 and this test.
#[test]
fn test_01_prints_a_header_then_one_line_per_process() {
    let listing = list(&[]);
    // Where /proc hides other users' processes (mount option hidepid), the
    // test cannot see pid 1 either, and neither can mini_ps: skip that check.
    let init_visible = labkit::procfs::ppid(1).is_some();
    let init = init_visible.then(|| listing.expect_row(1, "pid 1, the first process (init)"));
    if let Some(init) = init.filter(|init| init.ppid != 0) {
        listing
            .report()
            .expected("pid 1 to have PPID 0 (it was started by the kernel)")
            .got(show(&init.line))
            .hint("the PPID is field 4 of /proc/<pid>/stat")
            .fail();
    }
    let me = std::process::id();
    let row = listing.expect_row(me, "this test process");
    let (ppid, command) = (labkit::procfs::ppid(me).unwrap_or(0), own_command());
    if row.ppid != ppid || row.command != command {
        listing
            .report()
            .did(format!("looked at the line for this test process, pid {me}"))
            .expected(format!("PPID {ppid} and command {command:?}"))
            .got(show(&row.line))
            .hint("the command is /proc/<pid>/cmdline: arguments separated by NUL bytes, to be joined by spaces")
            .fail();
    }
}

// A sleeping child shows with its parent (this test), state S, 1 thread and its exact command line.
#[test]
fn test_02_shows_a_child_with_its_ppid_state_and_command() {
    let sleeper = Fixture::sleeper();
    let listing = list(&[]);
    let row = listing.expect_row(sleeper.pid, "a child process that sleeps");
    expect_fields(
        &listing,
        row,
        "the sleeping child",
        "S",
        1,
        &sleeper.command,
    );
}

// A process with 6 threads shows THR 6.
#[test]
fn test_03_counts_the_threads_of_a_process() {
    let token = unique_token();
    let f = Fixture::start(Path::new(FIXTURE), &["threads", "6", &token]);
    f.wait_until_asleep();
    let listing = list(&[]);
    let row = listing.expect_row(f.pid, "a child process with 6 threads");
    expect_fields(
        &listing,
        row,
        "the child with 6 threads",
        "S",
        6,
        &f.command,
    );
}

// RSS_KB is VmRSS of /proc/<pid>/status, in KiB: checked on a child holding 32 MiB.
#[test]
fn test_04_reports_rss_in_kib_as_vmrss() {
    let token = unique_token();
    let f = Fixture::start(Path::new(FIXTURE), &["memory", "32", &token]);
    f.wait_until_asleep();
    let vm_rss = || labkit::procfs::rss_kib(f.pid).unwrap_or(0);
    let before = vm_rss();
    let listing = list(&[]);
    let after = vm_rss();
    let row = listing.expect_row(f.pid, "a child holding 32 MiB");
    let (low, high) = (before.min(after), before.max(after));
    if !(low..=high).contains(&row.rss_kib) {
        // Field 24 of stat counts pages, and may lag VmRSS a little.
        let looks_like_pages = (row.rss_kib * 4).abs_diff(before) <= before / 20;
        let hint = if looks_like_pages {
            "that is a number of 4 KiB pages: the column is in KiB"
        } else if row.rss_kib > high {
            "is that VmSize (all the address space mapped) rather than VmRSS (what is resident in memory)?"
        } else {
            "read the VmRSS: line of /proc/<pid>/status (its unit, kB, is KiB)"
        };
        listing
            .report()
            .did(format!(
                "read VmRSS of pid {} before and after: {before} and {after} kB",
                f.pid
            ))
            .expected(format!(
                "RSS_KB {before}{}",
                if before == after {
                    String::new()
                } else {
                    format!(" to {after}")
                }
            ))
            .got(format!("{} in the line {}", row.rss_kib, show(&row.line)))
            .hint(hint)
            .fail();
    }
}

// A zombie (exited, not yet reaped by its parent) shows state Z, RSS 0 and its name in brackets.
#[test]
fn test_05_shows_a_zombie_with_its_name_in_brackets() {
    let zombie = Zombie::start(Path::new(FIXTURE));
    let listing = list(&[]);
    let row = listing.expect_row(zombie.pid, "a zombie child");
    expect_fields(&listing, row, "the zombie", "Z", 1, "[mini_ps_fixture]");
    if row.rss_kib != 0 {
        listing
            .report()
            .expected("RSS_KB 0 for a zombie: its memory is already freed")
            .got(show(&row.line))
            .hint("a zombie's /proc/<pid>/status has no VmRSS line: show 0")
            .fail();
    }
}

// A process named "fake) Z 1 (x" (spaces and parentheses) is parsed right, alive and as a zombie.
#[test]
fn test_06_survives_a_name_with_spaces_and_parentheses() {
    let (_dir, link) = nasty_link();
    let alive = Fixture::start(&link, &["wait", &unique_token()]);
    expect_comm(alive.pid, NASTY_NAME);
    alive.wait_until_asleep();
    let zombie = Zombie::start(&link);
    expect_comm(zombie.pid, NASTY_NAME);
    let listing = list(&[]);
    let row = listing.expect_row(alive.pid, "a child named \"fake) Z 1 (x\"");
    expect_fields(
        &listing,
        row,
        "the child named \"fake) Z 1 (x\"",
        "S",
        1,
        &alive.command,
    );
    let row = listing.expect_row(zombie.pid, "a zombie named \"fake) Z 1 (x\"");
    expect_fields(
        &listing,
        row,
        "the zombie named \"fake) Z 1 (x\"",
        "Z",
        1,
        "[fake) Z 1 (x]",
    );
}

// `mini_ps --pid N` prints the header and exactly one line, for a sleeper, a threaded process and a zombie.
#[test]
fn test_07_pid_option_shows_only_that_process() {
    let sleeper = Fixture::sleeper();
    let threaded = Fixture::start(Path::new(FIXTURE), &["threads", "3", &unique_token()]);
    threaded.wait_until_asleep();
    let zombie = Zombie::start(Path::new(FIXTURE));
    let cases = [
        (
            sleeper.pid,
            "a sleeping child",
            "S",
            1,
            sleeper.command.as_str(),
        ),
        (
            threaded.pid,
            "a child with 3 threads",
            "S",
            3,
            threaded.command.as_str(),
        ),
        (zombie.pid, "a zombie child", "Z", 1, "[mini_ps_fixture]"),
    ];
    for (pid, what, state, threads, command) in cases {
        let listing = list(&["--pid", &pid.to_string()]);
        if listing.rows.len() != 1 || listing.rows[0].pid != pid {
            listing
                .report()
                .expected(format!("the header and exactly one line, for pid {pid}"))
                .got(format!("{} lines after the header", listing.rows.len()))
                .hint("with --pid N, read only /proc/N")
                .fail();
        }
        expect_fields(&listing, &listing.rows[0], what, state, threads, command);
    }
}

// `mini_ps --pid N` for a pid that does not exist: a message on stderr, exit code 1, no panic.
#[test]
fn test_08_a_missing_pid_is_an_error_with_exit_code_1() {
    // First the positive case, so that a program that always fails cannot pass.
    let me = std::process::id();
    list(&["--pid", &me.to_string()]).expect_row(me, "this test process");
    // pid_max is at most 2^22, so this pid cannot exist.
    let missing = (1u32 << 23).to_string();
    let out = Cmd::new(BIN).args(["--pid", &missing]).run();
    out.expect_code(1);
    let listed = out
        .stdout_text()
        .lines()
        .any(|l| l.split_whitespace().next() == Some(missing.as_str()));
    if listed || !out.stderr_text().contains(&missing) {
        out.report()
            .quote("your program (stdout)", &out.stdout)
            .expected(format!(
                "no process line on stdout, and a message naming pid {missing} on stderr"
            ))
            .got(format!("stderr {}", show(&out.stderr)))
            .hint("e.g. `mini_ps: no process with pid 8388608`")
            .fail();
    }
}

// A process that vanishes mid-scan (strace makes its /proc files fail with ENOENT) is skipped, not a crash.
#[test]
fn test_09_skips_a_process_that_vanishes_mid_scan() {
    let doomed = Fixture::sleeper();
    let other = Fixture::sleeper();
    // Positive first: both are listed when nothing fails.
    let listing = list(&[]);
    listing.expect_row(doomed.pid, "a sleeping child");
    listing.expect_row(other.pid, "another sleeping child");

    // Every open of the files that describe `doomed` fails with ENOENT, as
    // if it exited right after mini_ps listed /proc.
    let injected = |cmd: Cmd| {
        let mut strace = Strace::new(cmd)
            .option("-a0")
            .option("--trace=openat,open")
            .option("--inject=openat,open:error=ENOENT");
        for file in ["stat", "status", "cmdline", "comm", "statm", "task"] {
            strace = strace.option(format!("--trace-path=/proc/{}/{file}", doomed.pid));
        }
        strace.run()
    };
    let traced = injected(Cmd::new(BIN));
    let how = format!(
        "made every open of /proc/{}/{{stat,status,cmdline,comm,statm,task}} fail with ENOENT (strace --inject), as if pid {} exited right after mini_ps listed /proc",
        doomed.pid, doomed.pid
    );
    let trace_tail = traced.tail(6);
    let outcome = traced.outcome;
    if outcome.code != Some(0) || outcome.timed_out {
        outcome
            .report()
            .did(&how)
            .quote("strace", &trace_tail)
            .expected("exit code 0: a vanished process is skipped")
            .got(outcome.ending())
            .hint("processes exit at any time: treat a NotFound error on /proc/<pid>/... as \"gone\" and move on, never unwrap it")
            .fail();
    }
    let listing = parse_listing(outcome);
    if let Some(row) = listing.row(doomed.pid) {
        listing
            .report()
            .did(&how)
            .expected(format!("no line for pid {}: its files could not be read", doomed.pid))
            .got(show(&row.line))
            .hint("skip a process whose stat, status or cmdline cannot be read, rather than printing made-up values")
            .fail();
    }
    let row = listing.expect_row(other.pid, "the other sleeping child");
    expect_fields(
        &listing,
        row,
        "the other sleeping child",
        "S",
        1,
        &other.command,
    );

    // With --pid, the vanished process is the user's business: exit code 1.
    let traced = injected(Cmd::new(BIN).args(["--pid", &doomed.pid.to_string()]));
    let out = traced.outcome;
    if out.code != Some(1) || out.timed_out {
        out.report()
            .did(&how)
            .expected("exit code 1 and a message, as for any missing pid")
            .got(out.ending())
            .hint("with --pid, a process that vanished is a process that does not exist")
            .fail();
    }
}

// The listing stays correct while processes start and exit during the scan (20 runs against a churn of children).
#[test]
fn test_10_lists_processes_while_others_come_and_go() {
    let churn = Fixture::start(Path::new(FIXTURE), &["churn", &unique_token()]);
    let me = std::process::id();
    for _ in 0..20 {
        let listing = list(&[]);
        listing.expect_row(me, "this test process");
        let row = listing.expect_row(
            churn.pid,
            "a child that keeps starting short-lived processes",
        );
        if row.ppid != me || row.command != churn.command {
            listing
                .report()
                .expected(format!("PPID {me} and command {:?}", churn.command))
                .got(show(&row.line))
                .fail();
        }
    }
}

// A process that vanishes after its first files were read (only `status`, or
// only `cmdline`, fails, with ENOENT or ESRCH), or whose `stat` cannot be read
// (EACCES), is skipped too: no row made up from half of its files, and the
// scan goes on.
#[test]
fn test_11_skips_a_process_that_vanishes_between_its_files() {
    let doomed = Fixture::sleeper();
    let other = Fixture::sleeper();
    let listing = list(&[]);
    listing.expect_row(doomed.pid, "a sleeping child");
    listing.expect_row(other.pid, "another sleeping child");
    for (file, errno) in [
        ("cmdline", "ENOENT"),
        ("status", "ESRCH"),
        ("cmdline", "ESRCH"),
        ("stat", "EACCES"),
    ] {
        let traced = Strace::new(Cmd::new(BIN))
            .option("-a0")
            .option("--trace=openat,open")
            .option(format!("--inject=openat,open:error={errno}"))
            .option(format!("--trace-path=/proc/{}/{file}", doomed.pid))
            .run();
        let how = format!(
            "made only the open of /proc/{}/{file} fail with {errno} (strace --inject), as if pid {} exited after its other files were read",
            doomed.pid, doomed.pid
        );
        let trace_tail = traced.tail(6);
        let outcome = traced.outcome;
        if outcome.code != Some(0) || outcome.timed_out {
            outcome
                .report()
                .did(&how)
                .quote("strace", &trace_tail)
                .expected("exit code 0: a process whose files cannot be read is skipped, whichever file fails and however")
                .got(outcome.ending())
                .hint(if errno == "EACCES" {
                    "one process you may not read is no reason to stop the whole listing: skip it (a note on stderr is fine) and go on"
                } else if errno == "ESRCH" {
                    "ESRCH (\"No such process\", raw OS error 3) also means the process is gone: do you treat only ErrorKind::NotFound as gone?"
                } else {
                    "every file of a process can fail, not only the first you read: is an error on a later one unwrapped?"
                })
                .fail();
        }
        let listing = parse_listing(outcome);
        if let Some(row) = listing.row(doomed.pid) {
            listing
                .report()
                .did(&how)
                .expected(format!(
                    "no line for pid {}: one of its files could not be read",
                    doomed.pid
                ))
                .got(show(&row.line))
                .hint(format!("an error reading {file} means the process is gone: skip it, rather than printing a row with a default for the missing file (an empty cmdline is not the same as an unreadable one)"))
                .fail();
        }
        let row = listing.expect_row(other.pid, "the other sleeping child");
        expect_fields(
            &listing,
            row,
            "the other sleeping child",
            "S",
            1,
            &other.command,
        );
    }
}
