//! The grader for lab 01, mini_cat.
//!
//! Every test writes its input files into a fresh temporary directory, runs
//! `mini_cat` there (so messages show `mini_cat notes.txt -n`, not a long
//! path) and checks stdout byte for byte, stderr and the exit code. Tests are
//! ordered like the README's milestones: plain cat, errors, filtering,
//! numbering, stdin, then the two that need a streaming design (a 200 MiB
//! file in small memory, and a reader that goes away).

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use labkit::report::{first_difference, show};
use labkit::run::{Outcome, fnv1a, fnv1a_start};
use labkit::{Cmd, Report};

const BIN: &str = env!("CARGO_BIN_EXE_mini_cat");

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A temporary directory with the test's input files; commands run in it.
struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        Dir {
            dir: tempfile::tempdir().expect("create a temporary directory for the test"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `bytes` to `name` and returns a description for messages.
    fn file(&self, name: &str, bytes: &[u8]) -> String {
        fs::write(self.path().join(name), bytes).expect("write a test input file");
        format!("wrote {name} ({} bytes): {}", bytes.len(), show(bytes))
    }

    /// `mini_cat` with `args`, run inside this directory.
    fn cmd(&self, args: &[&str]) -> Cmd {
        Cmd::new(BIN).current_dir(self.path()).args(args)
    }
}

/// A hint about how the program ended, for a run that should have exited 0.
fn ending_hint(out: &Outcome) -> &'static str {
    if out.timed_out {
        "does it wait for input that never comes (reading stdin when a FILE was given?) or loop forever?"
    } else if out.panicked() {
        "your program panicked: read its message below (an unwrap or expect on an error, or an index out of bounds?)"
    } else {
        "read what your program printed on stderr below"
    }
}

/// Runs `cmd` and checks that it exits with code 0 after printing exactly
/// `expected`. `setup` says what the test prepared; `hint` is where to look
/// when the output differs.
#[track_caller]
fn expect_prints(setup: &str, cmd: Cmd, expected: &[u8], hint: &str) {
    let out = cmd.run();
    if out.code != Some(0) || out.timed_out {
        Report::new(setup)
            .did(format!("ran: {}", out.command_line))
            .expected(format!("exit code 0, stdout {}", show(expected)))
            .got(format!("{}, stdout {}", out.ending(), show(&out.stdout)))
            .hint(ending_hint(&out))
            .quote("your program (stderr)", &out.stderr)
            .fail();
    }
    if let Some(diff) = first_difference(expected, &out.stdout) {
        Report::new(setup)
            .did(format!("ran: {}", out.command_line))
            .expected(format!("stdout {}", show(expected)))
            .got(format!("stdout {}\n{diff}", show(&out.stdout)))
            .hint(hint)
            .quote("your program (stderr)", &out.stderr)
            .fail();
    }
}

/// Checks that a run failed the way the Spec says: exit `code`, nothing on
/// stdout, no panic, and stderr containing `needle` (case-insensitive).
#[track_caller]
fn expect_error(setup: &str, out: &Outcome, code: i32, needle: &str, hint: &str) {
    let stderr = out.stderr_text();
    let report = || {
        Report::new(setup)
            .did(format!("ran: {}", out.command_line))
            .quote("your program (stderr)", &out.stderr)
    };
    if out.panicked() {
        report()
            .expected(format!("a message on stderr and exit code {code}"))
            .got(out.ending())
            .hint("a panic is not an error message: match on the Result (or use `?` up to a place that prints `mini_cat: ...` and exits)")
            .fail();
    }
    if out.code != Some(code) || out.timed_out {
        report()
            .expected(format!("exit code {code}"))
            .got(out.ending())
            .hint(hint)
            .fail();
    }
    if !stderr.to_lowercase().contains(&needle.to_lowercase()) {
        report()
            .expected(format!("a message on stderr that contains {needle:?}"))
            .got(format!("stderr {}", show(&out.stderr)))
            .hint(hint)
            .fail();
    }
    if !out.stdout.is_empty() {
        report()
            .expected("nothing on stdout (errors go to stderr)")
            .got(format!("stdout {}", show(&out.stdout)))
            .hint("print errors with eprintln!, never println!")
            .fail();
    }
}

/// Length, FNV-1a hash, first and last 4 KiB of a byte stream, computed as
/// it goes: the expected output of the 200 MiB test is never held whole.
/// The first and last 4 KiB match what `Cmd::digest_stdout` keeps.
struct Digest {
    len: u64,
    hash: u64,
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl Digest {
    const KEEP: usize = 4096;

    fn new() -> Digest {
        Digest {
            len: 0,
            hash: fnv1a_start(),
            head: Vec::new(),
            tail: Vec::new(),
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.len += bytes.len() as u64;
        self.hash = fnv1a(self.hash, bytes);
        if self.head.len() < Self::KEEP {
            let take = (Self::KEEP - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
        }
        let from = bytes.len().saturating_sub(Self::KEEP);
        self.tail.extend_from_slice(&bytes[from..]);
        if self.tail.len() > Self::KEEP {
            self.tail.drain(..self.tail.len() - Self::KEEP);
        }
    }
}

/// Checks a digested run against the expected digest: exit 0, same length
/// and hash, and (for a streaming program) a small peak memory.
#[track_caller]
fn expect_digest(setup: &str, out: &Outcome, expected: &Digest, input_mib: u64, max_rss_mib: u64) {
    let report = || {
        Report::new(setup)
            .did(format!("ran: {}", out.command_line))
            .quote("your program (stderr)", &out.stderr)
    };
    if out.code != Some(0) || out.timed_out {
        report()
            .expected("exit code 0")
            .got(format!(
                "{} after {} bytes of stdout",
                out.ending(),
                out.stdout_len
            ))
            .hint(if out.timed_out {
                "is it very slow? use a BufReader and a BufWriter, and write each line with one write_all, not byte by byte"
            } else {
                ending_hint(out)
            })
            .fail();
    }
    if out.stdout_len != expected.len || out.stdout_hash != expected.hash {
        let head_diff = first_difference(&expected.head, &out.stdout);
        let tail_diff = first_difference(&expected.tail, &out.stdout_tail);
        let where_ = match (head_diff, tail_diff) {
            (Some(d), _) => format!("in the first 4 KiB: {d}"),
            (None, Some(d)) => format!("in the last 4 KiB: {d}"),
            (None, None) => "somewhere in the middle (the first and last 4 KiB are right)".into(),
        };
        report()
            .expected(format!(
                "{} bytes of stdout with FNV-1a hash {:#018x}",
                expected.len, expected.hash
            ))
            .got(format!(
                "{} bytes with hash {:#018x}; they differ {where_}",
                out.stdout_len, out.stdout_hash
            ))
            .hint("the small tests above check the same rules on small files; do they pass?")
            .fail();
    }
    let peak_mib = out.peak_rss_kib / 1024;
    if peak_mib >= max_rss_mib {
        report()
            .expected(format!(
                "the right output, with a peak memory (VmHWM) under {max_rss_mib} MiB"
            ))
            .got(format!(
                "the right output, but a peak memory of {peak_mib} MiB for {input_mib} MiB of input"
            ))
            .hint("does it read the whole file into memory (fs::read, read_to_string, read_to_end, lines().collect())? stream it instead: a BufReader with read_until(b'\\n', &mut line) into one reused Vec<u8>, or a loop over a fixed-size buffer")
            .fail();
    }
}

/// Size of the large test file, in MiB.
const BIG_MIB: u64 = 200;

/// Writes a file of about `mib` MiB of text lines, in 1 MiB chunks (never
/// held whole), and returns its name and the digests of two outputs:
/// `mini_cat FILE` (the file itself) and `mini_cat FILE NEEDLE -n`.
fn write_big_file(dir: &Dir, name: &str, mib: u64) -> (Digest, Digest) {
    const FILLER: &[u8] =
        b"the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. ";
    // One ~1 MiB block of lines, written `mib` times; every 997th line holds
    // the pattern.
    let mut block = Vec::with_capacity(1 << 20);
    let mut matches: Vec<(u64, std::ops::Range<usize>)> = Vec::new();
    let mut lines: u64 = 0;
    while block.len() < (1 << 20) - 200 {
        let start = block.len();
        let is_match = lines % 997 == 500;
        write!(block, "{lines:07} ").unwrap();
        if is_match {
            block.extend_from_slice(b"NEEDLE ");
        }
        block.extend_from_slice(&FILLER[..(lines as usize * 37) % FILLER.len()]);
        block.push(b'\n');
        if is_match {
            matches.push((lines, start..block.len()));
        }
        lines += 1;
    }
    let last_line: &[u8] = b"last line, NEEDLE too, and no newline";

    let mut file = std::io::BufWriter::new(
        File::create(dir.path().join(name)).expect("create the large test file"),
    );
    let mut plain = Digest::new();
    let mut numbered = Digest::new();
    let mut prefixed = Vec::new();
    for rep in 0..mib {
        file.write_all(&block).expect("write the large test file");
        plain.push(&block);
        for (line, range) in &matches {
            prefixed.clear();
            write!(prefixed, "{:>6}\t", rep * lines + line + 1).unwrap();
            prefixed.extend_from_slice(&block[range.clone()]);
            numbered.push(&prefixed);
        }
    }
    file.write_all(last_line)
        .expect("write the large test file");
    file.flush().expect("write the large test file");
    plain.push(last_line);
    numbered.push(format!("{:>6}\t", mib * lines + 1).as_bytes());
    numbered.push(last_line);
    (plain, numbered)
}

// ---------------------------------------------------------------------------
// Milestone 1: print a file byte for byte
// ---------------------------------------------------------------------------

// A plain file comes out exactly as it went in: the basic contract of cat.
#[test]
fn test_01_prints_a_file_byte_for_byte() {
    let dir = Dir::new();
    let text = b"first line\nsecond line\n\n  indented fourth line\nlast line\n";
    let setup = dir.file("notes.txt", text);
    expect_prints(
        &setup,
        dir.cmd(&["notes.txt"]),
        text,
        "print the bytes you read, unchanged: do you trim, skip empty lines, or add anything?",
    );
}

// A file whose last line has no newline must not gain one: cat never changes bytes.
#[test]
fn test_02_keeps_a_last_line_without_a_newline() {
    let dir = Dir::new();
    let text = b"one\ntwo\nthree, and no newline after me";
    let setup = dir.file("notes.txt", text);
    expect_prints(
        &setup,
        dir.cmd(&["notes.txt"]),
        text,
        "the last line has no \\n: do you add one to every line, or stop at the last \\n? (read_until returns that last line without a \\n)",
    );
}

// An empty file prints nothing and is not an error, with or without options.
#[test]
fn test_03_prints_nothing_for_an_empty_file() {
    let dir = Dir::new();
    let setup = dir.file("empty.txt", b"");
    let hint = "an empty file has no lines: nothing to print, and exit code 0";
    expect_prints(&setup, dir.cmd(&["empty.txt"]), b"", hint);
    expect_prints(&setup, dir.cmd(&["empty.txt", "x", "-n"]), b"", hint);
    expect_prints(&setup, dir.cmd(&["empty.txt", "-n"]), b"", hint);
}

// Windows line endings stay "\r\n": the input is bytes, not text to normalise.
#[test]
fn test_04_keeps_crlf_line_endings() {
    let dir = Dir::new();
    let text = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";
    let setup = dir.file("request.txt", text);
    expect_prints(
        &setup,
        dir.cmd(&["request.txt"]),
        text,
        "is a \\r lost? BufRead::lines() strips \"\\r\\n\"; read_until(b'\\n') keeps every byte",
    );
}

// Bytes that are not UTF-8 pass through unchanged: a file is bytes, and cat must not crash or replace them.
#[test]
fn test_05_passes_invalid_utf8_through_unchanged() {
    let dir = Dir::new();
    let bytes = b"caf\xe9 in latin-1\n\xff\xfe binary\x00 with a NUL\ncaf\xc3\xa9 in UTF-8\n";
    let setup = dir.file("mixed.bin", bytes);
    expect_prints(
        &setup,
        dir.cmd(&["mixed.bin"]),
        bytes,
        "do you read into a String (read_to_string, lines(), String::from_utf8_lossy)? read bytes into a Vec<u8> and write them back as they are",
    );
}

// ---------------------------------------------------------------------------
// Milestone 2: errors
// ---------------------------------------------------------------------------

// Without arguments (or with two patterns) the program explains its usage and exits 2 instead of panicking.
#[test]
fn test_06_prints_usage_and_exits_2_on_bad_arguments() {
    let dir = Dir::new();
    let setup = dir.file("notes.txt", b"a\nb\n");
    let hint = "check the arguments first: print a message containing \"usage: mini_cat FILE [PATTERN] [-n]\" to stderr and exit with std::process::exit(2)";
    let out = dir.cmd(&[]).run();
    expect_error("ran it without arguments", &out, 2, "usage", hint);
    let out = dir.cmd(&["notes.txt", "a", "b"]).run();
    expect_error(
        &format!("{setup} (two patterns are one too many)"),
        &out,
        2,
        "usage",
        hint,
    );
}

// A missing file is an error message naming the file and exit code 1, not a panic and not success.
#[test]
fn test_07_reports_a_missing_file_by_name_with_exit_code_1() {
    let dir = Dir::new();
    let out = dir.cmd(&["no_such_file.txt"]).run();
    expect_error(
        "made sure no_such_file.txt does not exist",
        &out,
        1,
        "no_such_file.txt",
        "when File::open fails, print `mini_cat: no_such_file.txt: <the error>` to stderr and exit with code 1",
    );
    let out = dir.cmd(&["no_such_file.txt", "x", "-n"]).run();
    expect_error(
        "made sure no_such_file.txt does not exist",
        &out,
        1,
        "no_such_file.txt",
        "with a PATTERN and -n the file must be opened and reported the same way",
    );
}

// A directory opens fine but fails on the first read: read errors are reported like open errors.
#[test]
fn test_08_reports_a_read_error_by_name_with_exit_code_1() {
    let dir = Dir::new();
    fs::create_dir(dir.path().join("a_directory")).expect("create a directory");
    let hint = "File::open succeeds on a directory and the first read fails (EISDIR): report read errors like open errors, with the file name, and exit code 1";
    let out = dir.cmd(&["a_directory"]).run();
    expect_error(
        "created the directory a_directory",
        &out,
        1,
        "a_directory",
        hint,
    );
    let out = dir.cmd(&["a_directory", "x", "-n"]).run();
    expect_error(
        "created the directory a_directory",
        &out,
        1,
        "a_directory",
        hint,
    );
}

// ---------------------------------------------------------------------------
// Milestone 3: filter lines
// ---------------------------------------------------------------------------

// With a PATTERN only the lines containing it are printed (case-sensitive, anywhere in the line); no match is not an error.
#[test]
fn test_09_prints_only_the_lines_containing_the_pattern() {
    let dir = Dir::new();
    let setup = dir.file(
        "fruit.txt",
        b"apple pie\nbanana\npineapple\nAPPLE\ngrape\nan apple a day\n",
    );
    expect_prints(
        &setup,
        dir.cmd(&["fruit.txt", "apple"]),
        b"apple pie\npineapple\nan apple a day\n",
        "a line is printed when PATTERN occurs anywhere in it, with exact (case-sensitive) bytes",
    );
    expect_prints(
        &setup,
        dir.cmd(&["fruit.txt", "kiwi"]),
        b"",
        "no line contains kiwi: print nothing and exit 0 (no match is not an error here)",
    );
    expect_prints(
        &setup,
        dir.cmd(&["fruit.txt", "e\npi"]),
        b"",
        "the pattern is matched inside one line, never across a \\n",
    );
    expect_prints(
        &setup,
        dir.cmd(&["fruit.txt", ""]),
        b"apple pie\nbanana\npineapple\nAPPLE\ngrape\nan apple a day\n",
        "every line contains the empty pattern (careful: slice.windows(0) panics)",
    );
}

// Filtering keeps each printed line's bytes as they were: its "\r\n", and no newline added to a last line that had none.
#[test]
fn test_10_filtering_keeps_line_endings_as_they_were() {
    let dir = Dir::new();
    let setup = dir.file(
        "log.txt",
        b"GET /\r\nHost: a\r\nGET /favicon.ico\r\nok\nGET /last, no newline",
    );
    expect_prints(
        &setup,
        dir.cmd(&["log.txt", "GET"]),
        b"GET /\r\nGET /favicon.ico\r\nGET /last, no newline",
        "print each matching line exactly as read: keep its \\r\\n, and do not add a \\n to a last line that had none (or drop it)",
    );
    expect_prints(
        &setup,
        dir.cmd(&["log.txt", "no newline"]),
        b"GET /last, no newline",
        "the last line has no \\n but is a line like the others: is it dropped, or given a \\n?",
    );
}

// Filtering works on bytes: lines that are not UTF-8 are matched and printed unchanged, and a UTF-8 pattern matches its bytes.
#[test]
fn test_11_filters_lines_that_are_not_utf8() {
    let dir = Dir::new();
    let setup = dir.file(
        "mixed.bin",
        b"ok \xff\xfe raw bytes\nno match \xc3\x28\ncaf\xc3\xa9 ok\n\xe9t\xe9 latin-1\n",
    );
    expect_prints(
        &setup,
        dir.cmd(&["mixed.bin", "ok"]),
        b"ok \xff\xfe raw bytes\ncaf\xc3\xa9 ok\n",
        "match PATTERN's bytes against each line's bytes; never decode lines as UTF-8 (a lossy decode changes them)",
    );
    expect_prints(
        &setup,
        dir.cmd(&["mixed.bin", "é"]),
        b"caf\xc3\xa9 ok\n",
        "\"é\" is the two bytes C3 A9 in UTF-8; the Latin-1 byte E9 is not a match",
    );
}

// ---------------------------------------------------------------------------
// Milestone 4: number lines
// ---------------------------------------------------------------------------

// -n prefixes every line like `cat -n` ("{n:>6}\t"), counting from 1, wherever -n appears after FILE.
#[test]
fn test_12_numbers_lines_like_cat_n() {
    let dir = Dir::new();
    let mut text = Vec::new();
    let mut expected = Vec::new();
    for i in 1..=11 {
        let line = match i {
            3 => String::new(),
            7 => "seven\r".to_string(),
            _ => format!("line {i}"),
        };
        writeln!(text, "{line}").unwrap();
        writeln!(expected, "{i:>6}\t{line}").unwrap();
    }
    text.extend_from_slice(b"twelve, no newline");
    expected.extend_from_slice(b"    12\ttwelve, no newline");
    let setup = dir.file("notes.txt", &text);
    expect_prints(
        &setup,
        dir.cmd(&["notes.txt", "-n"]),
        &expected,
        "each line gets format!(\"{n:>6}\\t\") in front (6 columns, right-aligned, then a tab), counting from 1; empty lines are numbered too; the line itself is unchanged",
    );
}

// With a PATTERN, -n shows each line's number in the original file, so you know where to look; -n may come before or after PATTERN.
#[test]
fn test_13_numbers_the_original_lines_when_filtering() {
    let dir = Dir::new();
    let setup = dir.file(
        "server.log",
        b"INFO start\nERROR disk full\nINFO retry\nINFO retry\nERROR network down\nINFO stop",
    );
    let expected = b"     2\tERROR disk full\n     5\tERROR network down\n";
    let hint = "count every line you read, printed or not: the number is the line's position in the file, not in the output";
    expect_prints(
        &setup,
        dir.cmd(&["server.log", "ERROR", "-n"]),
        expected,
        hint,
    );
    expect_prints(
        &setup,
        dir.cmd(&["server.log", "-n", "ERROR"]),
        expected,
        hint,
    );
    expect_prints(
        &setup,
        dir.cmd(&["server.log", "stop", "-n"]),
        b"     6\tINFO stop",
        "the last line (6, without a newline) is printed as is after its number",
    );
}

// ---------------------------------------------------------------------------
// Milestone 5: standard input
// ---------------------------------------------------------------------------

// "-" as FILE reads standard input, so mini_cat works in a pipeline; all options apply.
#[test]
fn test_14_reads_standard_input_when_file_is_dash() {
    let input = b"alpha\nbeta\n\xffgamma beta\r\ndelta";
    let setup = format!("will send {} on stdin", show(input));
    let hint = "when FILE is \"-\", read std::io::stdin() (e.g. io::stdin().lock(), which is already a BufRead) instead of opening a file";
    expect_prints(&setup, Cmd::new(BIN).arg("-").stdin(*input), input, hint);
    expect_prints(
        &setup,
        Cmd::new(BIN).args(["-", "beta", "-n"]).stdin(*input),
        b"     2\tbeta\n     3\t\xffgamma beta\r\n",
        hint,
    );
}

// ---------------------------------------------------------------------------
// Milestone 6: stream
// ---------------------------------------------------------------------------

// A 200 MiB file is printed in full (plain, and filtered with -n) while the program's peak memory stays under 64 MiB: it streams.
#[test]
fn test_15_streams_a_200_mib_file_in_small_memory() {
    let dir = Dir::new();
    let (plain, numbered) = write_big_file(&dir, "big.txt", BIG_MIB);
    let setup = format!(
        "wrote big.txt: {BIG_MIB} MiB of text lines, every 997th containing NEEDLE, the last without a newline"
    );
    let out = dir
        .cmd(&["big.txt"])
        .digest_stdout()
        .deadline(Duration::from_secs(90))
        .run();
    expect_digest(&setup, &out, &plain, BIG_MIB, 64);
    let out = dir
        .cmd(&["big.txt", "NEEDLE", "-n"])
        .digest_stdout()
        .deadline(Duration::from_secs(90))
        .run();
    expect_digest(&setup, &out, &numbered, BIG_MIB, 64);
}

// When the reader goes away (`mini_cat big.txt | head -1`), writes fail with EPIPE: the program stops quietly, without a panic or a message.
#[test]
fn test_16_stops_quietly_when_stdout_is_closed() {
    let dir = Dir::new();
    let (plain, _) = write_big_file(&dir, "big.txt", 4);
    let setup = "wrote big.txt: 4 MiB of text lines";
    // First the positive case: the file is printed in full into a real reader.
    let out = dir.cmd(&["big.txt"]).digest_stdout().run();
    expect_digest(setup, &out, &plain, 4, 1024);

    for args in [&["big.txt"][..], &["big.txt", "-n"][..]] {
        let out = dir
            .cmd(args)
            .stdout_closed()
            .deadline(Duration::from_secs(30))
            .run();
        let stderr = &out.stderr;
        let by_sigpipe = out.signal == Some(libc::SIGPIPE);
        let report = || {
            Report::new(setup)
                .did(format!(
                    "ran: mini_cat {} with stdout connected to a pipe whose reader has closed, so writes fail with EPIPE (\"Broken pipe\")",
                    args.join(" ")
                ))
                .quote("your program (stderr)", stderr)
        };
        if out.panicked() {
            report()
                .expected("a quiet exit with code 0")
                .got(out.ending())
                .hint("println!/print! panic when stdout is closed, and so does unwrap() on a write: write through a BufWriter with write_all and treat io::ErrorKind::BrokenPipe as the end of the job")
                .fail();
        }
        if !(out.code == Some(0) || by_sigpipe) {
            report()
                .expected("exit code 0 (or death by SIGPIPE, like C's cat)")
                .got(out.ending())
                .hint("a reader that has seen enough (head, less quitting) is not an error: on io::ErrorKind::BrokenPipe stop and exit 0")
                .fail();
        }
        if !stderr.is_empty() {
            report()
                .expected("nothing on stderr")
                .got(format!("stderr {}", show(stderr)))
                .hint("stop quietly on io::ErrorKind::BrokenPipe: `mini_cat big.txt | head` should print only what head prints")
                .fail();
        }
    }
}

// ---------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------

// PATTERN at its limits: as long as the line (matches), one byte longer than
// the line or than an empty line (no match, no panic), at the very end of a
// line and of an unterminated last line (matches).
#[test]
fn test_17_matches_a_pattern_at_the_edges_of_a_line() {
    let dir = Dir::new();
    let setup = dir.file("edges.txt", b"abc\nab\nabcd\n\nzabc\nxyabc");
    expect_prints(
        &setup,
        dir.cmd(&["edges.txt", "abc", "-n"]),
        b"     1\tabc\n     3\tabcd\n     5\tzabc\n     6\txyabc",
        "PATTERN matches when it is the whole line, and when it ends where the line ends (a search loop over 0..len - pattern_len misses the last position, and underflows on a line shorter than the pattern)",
    );
}

// -n at the width limit: line numbers up to 999999 fill the 6 columns, and
// from 1000000 on they are printed in full (7 digits), never cut or panicking.
#[test]
fn test_18_numbers_wider_than_six_columns_are_printed_in_full() {
    let dir = Dir::new();
    let marked = [9, 10, 99_999, 100_000, 999_999, 1_000_000, 1_000_001];
    let mut text = Vec::with_capacity(1_100_000);
    let mut expected = Vec::new();
    for n in 1..=1_000_001u32 {
        if marked.contains(&n) {
            writeln!(text, "x{n}").unwrap();
            writeln!(expected, "{n:>6}\tx{n}").unwrap();
        } else {
            text.push(b'\n');
        }
    }
    fs::write(dir.path().join("long.txt"), &text).expect("write a test input file");
    let setup = format!(
        "wrote long.txt ({} bytes): 1000001 lines, empty except lines {marked:?}, which read \"x<n>\"",
        text.len()
    );
    expect_prints(
        &setup,
        dir.cmd(&["long.txt", "x", "-n"])
            .deadline(Duration::from_secs(30)),
        &expected,
        "the number is format!(\"{n:>6}\\t\"): right-aligned in at least 6 columns; 1000000 has 7 digits and is printed whole (does your padding compute 6 - digits, which underflows?)",
    );
}
