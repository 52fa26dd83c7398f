//! The grader for lab 03: `syscall_lab`, run for real and under `strace`.
//!
//! Each mode is checked twice: once for its output (a program that makes
//! the right system calls but prints the wrong bytes is still wrong), then
//! under `strace` for the system calls it makes. Counts are derived from
//! sizes (output size / buffer size), never from timing.

use labkit::Report;
use labkit::run::{Cmd, Outcome};
use labkit::strace::{Strace, Syscall, Traced};
use std::path::Path;

const BIN: &str = env!("CARGO_BIN_EXE_syscall_lab");

/// The buffer size the README asks for in `buffered` and `write-file`.
const BUFFER_SIZE: usize = 64 * 1024;

/// The calls that can write a buffer to a descriptor.
const WRITE_CALLS: [&str; 4] = ["write", "writev", "pwrite64", "pwritev"];
/// The calls that can read into a buffer from a descriptor.
const READ_CALLS: [&str; 4] = ["read", "readv", "pread64", "preadv"];
/// The calls that create a descriptor (so a number may be reused after a close).
const FD_CREATING: [&str; 9] = [
    "openat", "open", "creat", "dup", "dup2", "dup3", "fcntl", "socket", "pipe2",
];

/// What every mode prints or writes for N lines: `line 00001\n` .. `line N\n`.
fn expected_lines(n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 1..=n {
        out.extend_from_slice(format!("line {i:05}\n").as_bytes());
    }
    out
}

/// A fresh temporary directory to run in (tests run concurrently).
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a temporary directory")
}

/// `syscall_lab <args>` run in `dir`.
fn cmd(dir: &Path, args: &[&str]) -> Cmd {
    Cmd::new(BIN).args(args).current_dir(dir)
}

/// Runs the command under strace, tracing `calls` (plus `exit_group`, so the
/// trace is never empty and shows where the program ended).
fn trace(cmd: Cmd, calls: &[&str]) -> Traced {
    let mut set = calls.to_vec();
    set.push("exit_group");
    // `-a0`: no padding before ` = result`, one space like every other line.
    Strace::new(cmd).option("-a0").trace(&set.join(",")).run()
}

/// The calls of `traced` in `names` whose first argument is descriptor `fd`.
fn calls_on<'a>(calls: &'a [Syscall], names: &[&str], fd: i64) -> Vec<&'a Syscall> {
    calls
        .iter()
        .filter(|c| names.contains(&c.name.as_str()) && c.first_arg() == Some(fd))
        .collect()
}

/// The calls made while `fd` named the file opened by call number
/// `open_at`: from that open to its first close (or to the end). The same
/// number names other files before (the loader reads libraries on fd 3 too).
fn while_open(traced: &Traced, open_at: usize, fd: i64) -> &[Syscall] {
    let rest = &traced.calls[open_at + 1..];
    let end = rest
        .iter()
        .position(|c| c.name == "close" && c.first_arg() == Some(fd))
        .unwrap_or(rest.len());
    &rest[..end]
}

/// The trace lines of `calls`, shortened for a failure message.
fn show_calls(calls: &[&Syscall], max: usize) -> String {
    let mut text: Vec<String> = calls.iter().take(max).map(|c| c.line()).collect();
    if calls.len() > max {
        text.push(format!("... and {} more", calls.len() - max));
    }
    text.join("\n")
}

/// A report for a traced run: the command, then the tail of the trace.
fn traced_report(traced: &Traced) -> Report {
    traced
        .outcome
        .report()
        .quote("strace (last lines)", traced.tail(10))
}

/// The first `openat` (or `open`, `creat`) of `name`, and its index.
fn find_open_call<'a>(traced: &'a Traced, name: &str) -> Option<(usize, &'a Syscall)> {
    let quoted = format!("\"{name}\"");
    traced.calls.iter().enumerate().find(|(_, c)| {
        ["openat", "open", "creat"].contains(&c.name.as_str()) && c.args.contains(&quoted)
    })
}

/// Finds the successful `openat` of `name` (as the program was given it,
/// relative to its working directory) and returns its index and descriptor.
#[track_caller]
fn opened(traced: &Traced, name: &str) -> (usize, i64) {
    match find_open_call(traced, name) {
        Some((i, c)) => match c.ret_value() {
            Some(fd) if fd >= 0 => (i, fd),
            _ => traced_report(traced)
                .expected(format!("the open of {name} to succeed"))
                .got(c.line())
                .hint("the file exists: is the path the one from the command line?")
                .fail(),
        },
        None => traced_report(traced)
            .expected(format!("an openat(AT_FDCWD, \"{name}\", ...) in the trace"))
            .got("no system call opened that path")
            .hint("open the path from the command line with File::open / File::create / fs::read")
            .fail(),
    }
}

/// Checks that the descriptor `fd`, opened by call number `open_at`, is
/// closed exactly once, successfully, before the program ends.
#[track_caller]
fn expect_closed_once(traced: &Traced, name: &str, open_at: usize, fd: i64) {
    let mut closes = Vec::new();
    for c in &traced.calls[open_at + 1..] {
        if c.name == "exit_group" {
            break;
        }
        if c.name == "close" && c.first_arg() == Some(fd) {
            closes.push(c);
        } else if FD_CREATING.contains(&c.name.as_str()) && c.ret_value() == Some(fd) {
            break; // the number now names another file
        }
    }
    let report = traced_report(traced).did(format!(
        "looked for close({fd}) between the openat of {name} (which returned {fd}) and exit_group"
    ));
    match closes.as_slice() {
        [] => report
            .expected(format!("exactly one close({fd}) = 0 before exit_group"))
            .got(format!("descriptor {fd} was never closed: the program leaked it, and only the kernel's clean-up at exit closed it"))
            .hint("is the File dropped before main returns? std::mem::forget, a static, or process::exit() all skip its Drop")
            .fail(),
        [one] if one.ret_value() == Some(0) => {}
        [one] => report
            .expected(format!("close({fd}) = 0"))
            .got(one.line())
            .fail(),
        many => report
            .expected(format!("exactly one close({fd})"))
            .got(format!(
                "{} closes of the same descriptor:\n{}",
                many.len(),
                show_calls(many, 5)
            ))
            .hint("two owners of one descriptor (File::from_raw_fd on a fd that a File still owns?) each close it; the second close fails with EBADF, or worse, closes a file opened in between")
            .fail(),
    }
}

/// Runs a mode that prints N lines and checks its exit and exact output.
#[track_caller]
fn expect_lines(outcome: &Outcome, n: u64, hint: &str) {
    outcome.expect_success();
    let expected = expected_lines(n);
    if let Some(diff) = labkit::report::first_difference(&expected, &outcome.stdout) {
        outcome
            .report()
            .expected(format!(
                "{n} lines `line 00001` .. `line {n:05}`, {} bytes",
                expected.len()
            ))
            .got(format!("{} bytes\n{diff}", outcome.stdout.len()))
            .hint(hint)
            .fail();
    }
}

/// Writes `n` numbered lines into `dir/name` for the read modes.
fn input_file(dir: &Path, name: &str, n: u64) -> usize {
    let bytes = expected_lines(n);
    std::fs::write(dir.join(name), &bytes).expect("write the input file");
    bytes.len()
}

// `unbuffered N` prints exactly N numbered lines: the output every mode shares.
#[test]
fn test_01_unbuffered_prints_n_numbered_lines() {
    let dir = scratch();
    let out = cmd(dir.path(), &["unbuffered", "3"]).run();
    expect_lines(
        &out,
        3,
        "each line is `line ` and the number padded to 5 digits (`{i:05}`), then \\n",
    );
    let out = cmd(dir.path(), &["unbuffered", "1000"]).run();
    expect_lines(&out, 1000, "print lines 1 to N, each once");
}

// Under strace, `unbuffered N` makes one write(1, ...) per line: what every println! costs.
#[test]
fn test_02_unbuffered_makes_one_write_per_line() {
    let n = 1000;
    let dir = scratch();
    let traced = trace(cmd(dir.path(), &["unbuffered", "1000"]), &WRITE_CALLS);
    expect_lines(&traced.outcome, n, "print lines 1 to N, each once");
    let writes = calls_on(&traced.calls, &WRITE_CALLS, 1);
    if writes.len() < n as usize {
        traced_report(&traced)
            .did("counted the write calls on descriptor 1 (stdout)")
            .expected(format!("at least {n} writes, one per line"))
            .got(format!(
                "{} writes, e.g.:\n{}",
                writes.len(),
                show_calls(&writes, 3)
            ))
            .hint("this mode shows the cost of line buffering: print each line with println! (or writeln! on io::stdout()), with no BufWriter")
            .fail();
    }
}

// `buffered N` prints exactly the same bytes, all 10,000 lines: a forgotten flush loses the tail.
#[test]
fn test_03_buffered_prints_the_same_bytes() {
    let dir = scratch();
    let out = cmd(dir.path(), &["buffered", "3"]).run();
    expect_lines(
        &out,
        3,
        "a BufWriter keeps bytes in memory until it is flushed: is it flushed before the program ends?",
    );
    let out = cmd(dir.path(), &["buffered", "10000"]).run();
    expect_lines(
        &out,
        10_000,
        "a BufWriter keeps up to a buffer of bytes in memory: do you flush it at the end (a process::exit or mem::forget skips the flush in Drop)?",
    );
}

// Under strace, `buffered 10000` (110,000 bytes) needs at most 10 writes with a 64 KiB buffer.
#[test]
fn test_04_buffered_makes_a_handful_of_writes() {
    let n = 10_000u64;
    let dir = scratch();
    let traced = trace(cmd(dir.path(), &["buffered", "10000"]), &WRITE_CALLS);
    expect_lines(&traced.outcome, n, "flush the BufWriter at the end");
    let size = expected_lines(n).len();
    // Two buffer-fulls; Rust's stdout (a LineWriter) may split each flush
    // into up to three writes; the rest is slack for a smaller buffer.
    let fills = size.div_ceil(BUFFER_SIZE);
    let bound = 10;
    let writes = calls_on(&traced.calls, &WRITE_CALLS, 1);
    if writes.len() > bound {
        let hint = if writes.len() >= n as usize {
            "one write per line: is the BufWriter flushed after every line, or are lines printed with println! instead of through the BufWriter?"
        } else {
            "is the buffer 64 KiB (BufWriter::with_capacity(64 * 1024, ...))? BufWriter::new gives only 8 KiB"
        };
        traced_report(&traced)
            .did(format!(
                "counted the write calls on descriptor 1 for {size} bytes of output"
            ))
            .expected(format!(
                "at most {bound} writes ({size} bytes / {BUFFER_SIZE}-byte buffer = {fills} buffer-fulls, each at most 3 writes through stdout's LineWriter, plus slack)"
            ))
            .got(format!(
                "{} writes, the first ones:\n{}",
                writes.len(),
                show_calls(&writes, 5)
            ))
            .hint(hint)
            .fail();
    }
}

// `write-file PATH N` puts exactly the N lines into the file.
#[test]
fn test_05_write_file_writes_the_lines_into_the_file() {
    let dir = scratch();
    for n in [3, 10_000] {
        let out = cmd(dir.path(), &["write-file", "out.txt", &n.to_string()]).run();
        out.expect_success();
        let expected = expected_lines(n);
        let got = std::fs::read(dir.path().join("out.txt")).unwrap_or_default();
        if let Some(diff) = labkit::report::first_difference(&expected, &got) {
            out.report()
                .did("read out.txt back")
                .expected(format!("{n} lines, {} bytes", expected.len()))
                .got(format!("{} bytes\n{diff}", got.len()))
                .hint("a BufWriter<File> must be flushed before the file is closed; does anything skip its Drop (mem::forget, process::exit)?")
                .fail();
        }
    }
}

// Under strace, the file's descriptor is closed exactly once, by Drop, before exit_group.
#[test]
fn test_06_write_file_closes_its_descriptor_exactly_once() {
    let dir = scratch();
    let traced = trace(
        cmd(dir.path(), &["write-file", "out.txt", "10000"]),
        &[
            "openat", "open", "creat", "close", "dup", "dup2", "dup3", "fcntl", "write",
        ],
    );
    // A second owner of the descriptor makes a debug build abort with "IO
    // Safety violation" (Rust checks the fd is still open before closing it);
    // a release build closes it twice, which expect_closed_once reports.
    traced.outcome.expect_success();
    let (open_at, fd) = opened(&traced, "out.txt");
    let size = expected_lines(10_000).len();
    let writes = calls_on(while_open(&traced, open_at, fd), &WRITE_CALLS, fd);
    let written: i64 = writes.iter().filter_map(|c| c.ret_value()).sum();
    if written != size as i64 {
        traced_report(&traced)
            .did(format!("summed the writes on descriptor {fd} (out.txt)"))
            .expected(format!("{size} bytes written to it"))
            .got(format!("{written} bytes in {} writes", writes.len()))
            .hint("is every line written to the file, and the buffer flushed?")
            .fail();
    }
    expect_closed_once(&traced, "out.txt", open_at, fd);
}

// `read-big PATH` and `read-small PATH` print `<bytes> bytes, <lines> lines` for the file.
#[test]
fn test_07_read_modes_count_bytes_and_lines() {
    let dir = scratch();
    let size = input_file(dir.path(), "in.txt", 2000);
    let expected = format!("{size} bytes, 2000 lines\n");
    std::fs::write(dir.path().join("empty.txt"), "").expect("write the input file");
    for mode in ["read-big", "read-small"] {
        cmd(dir.path(), &[mode, "in.txt"])
            .run()
            .expect_success()
            .expect_stdout(&expected);
        cmd(dir.path(), &[mode, "empty.txt"])
            .run()
            .expect_success()
            .expect_stdout("0 bytes, 0 lines\n");
    }
}

// Under strace, `read-big` reads a 440,000-byte file in at most 3 reads, and closes it once.
#[test]
fn test_08_read_big_reads_the_file_in_one_go() {
    let dir = scratch();
    let size = input_file(dir.path(), "in.txt", 40_000);
    let traced = trace(
        cmd(dir.path(), &["read-big", "in.txt"]),
        &[
            "openat", "open", "close", "dup", "dup2", "dup3", "fcntl", "read", "readv", "pread64",
            "preadv",
        ],
    );
    traced
        .outcome
        .expect_success()
        .expect_stdout(format!("{size} bytes, 40000 lines\n"));
    let (open_at, fd) = opened(&traced, "in.txt");
    let reads = calls_on(while_open(&traced, open_at, fd), &READ_CALLS, fd);
    if reads.len() > 3 {
        traced_report(&traced)
            .did(format!("counted the read calls on descriptor {fd} (in.txt, {size} bytes)"))
            .expected("at most 3 reads: one returns the whole file (the buffer is at least as large as the file), one returns 0 at end of file, plus one for slack")
            .got(format!("{} reads, the first ones:\n{}", reads.len(), show_calls(&reads, 5)))
            .hint("read the whole file at once with std::fs::read (or read_to_end), or a buffer of at least 1 MiB, not in small chunks")
            .fail();
    }
    expect_closed_once(&traced, "in.txt", open_at, fd);
}

// Under strace, `read-small` asks for at most 16 bytes per read: a 3,300-byte file takes >= 206 reads.
#[test]
fn test_09_read_small_reads_16_bytes_at_a_time() {
    let dir = scratch();
    let size = input_file(dir.path(), "in.txt", 300);
    let traced = trace(
        cmd(dir.path(), &["read-small", "in.txt"]),
        &[
            "openat", "open", "close", "dup", "dup2", "dup3", "fcntl", "read", "readv", "pread64",
            "preadv",
        ],
    );
    traced
        .outcome
        .expect_success()
        .expect_stdout(format!("{size} bytes, 300 lines\n"));
    let (open_at, fd) = opened(&traced, "in.txt");
    let reads = calls_on(while_open(&traced, open_at, fd), &READ_CALLS, fd);
    // The last argument of read(fd, buf, count) is how many bytes were asked for.
    let asked = |c: &Syscall| -> Option<usize> { c.args.rsplit(", ").next()?.trim().parse().ok() };
    let too_big: Vec<&Syscall> = reads
        .iter()
        .copied()
        .filter(|c| c.name != "read" || asked(c).is_none_or(|n| n > 16))
        .collect();
    let least = size.div_ceil(16);
    if reads.len() < least || !too_big.is_empty() {
        traced_report(&traced)
            .did(format!("looked at the read calls on descriptor {fd} (in.txt, {size} bytes)"))
            .expected(format!("plain read calls of at most 16 bytes each, so at least {size}/16 = {least} of them"))
            .got(format!(
                "{} reads; {} of them ask for more than 16 bytes:\n{}",
                reads.len(),
                too_big.len(),
                show_calls(&too_big, 5)
            ))
            .hint("call File::read with a 16-byte buffer in a loop, on the File itself: a BufReader reads 8 KiB at a time behind your back")
            .fail();
    }
    expect_closed_once(&traced, "in.txt", open_at, fd);
}

// A missing file: strace shows `openat(...) = -1 ENOENT`, and the program says so and exits 1 (no panic).
#[test]
fn test_10_a_missing_file_is_an_error_not_a_panic() {
    let dir = scratch();
    for mode in ["read-big", "read-small"] {
        let traced = trace(cmd(dir.path(), &[mode, "missing.txt"]), &["openat", "open"]);
        let quoted = "\"missing.txt\"";
        let open = traced.calls.iter().find(|c| c.args.contains(quoted));
        match open {
            Some(c) if c.ret.contains("ENOENT") => {}
            Some(c) => traced_report(&traced)
                .expected("the open of missing.txt to fail with -1 ENOENT")
                .got(c.line())
                .fail(),
            None => traced_report(&traced)
                .expected("an openat of \"missing.txt\" in the trace (failing with -1 ENOENT)")
                .got("the program never tried to open it")
                .hint(
                    "open the path from the command line and let the kernel say whether it exists",
                )
                .fail(),
        }
        let out = &traced.outcome;
        out.expect_code(1);
        if !out.stderr_text().contains("missing.txt") {
            out.report()
                .expected("an error message on stderr that names missing.txt")
                .got(format!("stderr {}", labkit::report::show(&out.stderr)))
                .hint("print the path with the error, e.g. `syscall_lab: missing.txt: No such file or directory (os error 2)`")
                .fail();
        }
    }
}

// Both read modes count right when the file ends mid-chunk, on a chunk edge, or without a final newline: only the bytes each read returned count.
#[test]
fn test_11_read_modes_count_files_ending_at_and_around_a_16_byte_edge() {
    let dir = scratch();
    // Each file starts with a chunk of newlines, so a count over the whole
    // 16-byte buffer after a short last read sees stale newlines.
    let newlines = "\n".repeat(16);
    let cases: Vec<(String, &str)> = vec![
        (
            format!("{newlines}ab"),
            "a short last read without a newline",
        ),
        (newlines.clone(), "exactly one 16-byte chunk"),
        (
            format!("{newlines}{newlines}"),
            "exactly two 16-byte chunks",
        ),
        (
            format!("{}x", &newlines[2..]),
            "14 newlines and an unterminated x: one byte short of the edge",
        ),
        (
            format!("{newlines}\n"),
            "17 newlines: one byte past the edge",
        ),
        ("no newline at all".to_string(), "text with no newline"),
    ];
    for (i, (text, what)) in cases.iter().enumerate() {
        let name = format!("case{i}.txt");
        std::fs::write(dir.path().join(&name), text).expect("write the input file");
        let lines = text.bytes().filter(|&b| b == b'\n').count();
        let expected = format!("{} bytes, {lines} lines\n", text.len());
        for mode in ["read-big", "read-small"] {
            let out = cmd(dir.path(), &[mode, &name]).run();
            out.expect_success();
            if out.stdout_text() != expected {
                out.report()
                    .did(format!("wrote {name}: {what}, {} bytes", text.len()))
                    .expected(format!("stdout {}", labkit::report::show(expected.as_bytes())))
                    .got(format!("stdout {}", labkit::report::show(&out.stdout)))
                    .hint("count the bytes each read returned (`n`) and the newlines in `buf[..n]`: after a short read the rest of the buffer still holds the previous chunk")
                    .fail();
            }
        }
    }
}
