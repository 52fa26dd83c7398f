//! `syscall_lab`: five small jobs whose cost is counted in system calls.
//!
//! Every mode does something ordinary (print lines, write a file, read a
//! file) in a way whose system calls are easy to predict, so that running it
//! under `strace` shows what the code costs the kernel:
//!
//! | mode | what it does | what strace shows |
//! |---|---|---|
//! | `unbuffered N` | prints N lines with `println!` | one `write(1, ...)` per line |
//! | `buffered N` | the same bytes through a 64 KiB `BufWriter` | a handful of large writes |
//! | `write-file PATH N` | the same lines into a file, closed by `Drop` | `openat`, a few writes, one `close` |
//! | `read-big PATH` | counts bytes and lines, reading the file in one go | `openat`, 2 or 3 `read`s, `close` |
//! | `read-small PATH` | the same count, 16 bytes per `read` | one `read` per 16 bytes |
//!
//! Design: `main` parses the arguments into a [`Mode`] (a usage error exits
//! with code 2), [`run`] dispatches, and any I/O error comes back as an
//! `io::Error` that `main` prints with the path it concerns (exit code 1).
//! No mode panics: a failed `open` is the kernel's answer (`= -1 ENOENT`),
//! not a bug in the program.
//!
//! The one thing worth remembering: Rust's standard output is *always*
//! line-buffered (a `LineWriter` around fd 1), whether it goes to a
//! terminal, a pipe or a file. C's stdio switches to full buffering when the
//! output is not a terminal; Rust does not. So `println!` in a loop costs one
//! `write` system call per line, and a program that prints a lot wants its
//! own `BufWriter`.

use std::env;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The buffer of `buffered` and `write-file`. 64 KiB is also the default
/// capacity of a Linux pipe, so one full buffer is one pipe's worth.
/// (`BufWriter::new` would give 8 KiB: fine, just 8 times more writes.)
const BUFFER_SIZE: usize = 64 * 1024;

/// How many bytes `read-small` asks the kernel for at a time.
const SMALL_READ: usize = 16;

const USAGE: &str = "\
usage: syscall_lab unbuffered N
       syscall_lab buffered N
       syscall_lab write-file PATH N
       syscall_lab read-big PATH
       syscall_lab read-small PATH";

/// What the command line asked for.
#[derive(Debug)]
enum Mode {
    Unbuffered(u64),
    Buffered(u64),
    WriteFile(PathBuf, u64),
    ReadBig(PathBuf),
    ReadSmall(PathBuf),
}

fn main() -> ExitCode {
    let args: Vec<OsString> = env::args_os().skip(1).collect();
    let mode = match parse(&args) {
        Ok(mode) => mode,
        Err(msg) => {
            eprintln!("syscall_lab: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(mode) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("syscall_lab: {e}");
            ExitCode::from(1)
        }
    }
}

/// Turns the arguments into a [`Mode`], or a message for a usage error.
fn parse(args: &[OsString]) -> Result<Mode, String> {
    let count = |s: &OsString| -> Result<u64, String> {
        s.to_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not a number of lines: {}", s.to_string_lossy()))
    };
    let mode = args
        .first()
        .and_then(|m| m.to_str())
        .ok_or("missing mode")?;
    match (mode, &args[1..]) {
        ("unbuffered", [n]) => Ok(Mode::Unbuffered(count(n)?)),
        ("buffered", [n]) => Ok(Mode::Buffered(count(n)?)),
        ("write-file", [path, n]) => Ok(Mode::WriteFile(path.into(), count(n)?)),
        ("read-big", [path]) => Ok(Mode::ReadBig(path.into())),
        ("read-small", [path]) => Ok(Mode::ReadSmall(path.into())),
        _ => Err(format!("wrong arguments for mode {mode:?}")),
    }
}

/// Runs one mode. Errors about a file carry its path, so `main` can print
/// `syscall_lab: missing.txt: No such file or directory (os error 2)`.
fn run(mode: Mode) -> io::Result<()> {
    match mode {
        Mode::Unbuffered(n) => unbuffered(n),
        Mode::Buffered(n) => buffered(n),
        Mode::WriteFile(path, n) => write_file(&path, n).map_err(|e| with_path(&path, e)),
        Mode::ReadBig(path) => read_big(&path).map_err(|e| with_path(&path, e)),
        Mode::ReadSmall(path) => read_small(&path).map_err(|e| with_path(&path, e)),
    }
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Writes lines `line 00001\n` .. `line N\n` (numbers padded to 5 digits).
/// Generic over the writer, so every mode produces exactly the same bytes
/// and only the buffering between them and the kernel differs.
fn write_lines(out: &mut impl Write, n: u64) -> io::Result<()> {
    for i in 1..=n {
        writeln!(out, "line {i:05}")?;
    }
    Ok(())
}

/// One `write` system call per line: the stdout lock is a `LineWriter`,
/// which hands everything up to a newline to the kernel at once. This is
/// what every `println!` loop costs; we take the lock once only to avoid
/// re-locking per line (it changes no system call).
fn unbuffered(n: u64) -> io::Result<()> {
    let mut out = io::stdout().lock();
    write_lines(&mut out, n)
}

/// The same bytes, gathered in a 64 KiB buffer in our own memory first: the
/// kernel sees one `write` per full buffer (Rust's `LineWriter` underneath
/// may split one flush in two: the complete lines, then the partial last
/// line it keeps until the next newline).
fn buffered(n: u64) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(BUFFER_SIZE, io::stdout().lock());
    write_lines(&mut out, n)?;
    // `Drop` would flush too, but it swallows errors (a full disk, a closed
    // pipe) and it never runs if the program leaves through
    // `std::process::exit`. Flush explicitly and let `?` report failures.
    out.flush()
}

/// `openat` (via `File::create`), a few large `write`s, then exactly one
/// `close`: not called by us, but by `File`'s `Drop` when `out` (which owns
/// the file) goes out of scope at the end of this function. That is RAII:
/// the descriptor's lifetime is the value's lifetime, so it cannot leak and
/// cannot be closed twice.
fn write_file(path: &Path, n: u64) -> io::Result<()> {
    let file = File::create(path)?;
    let mut out = BufWriter::with_capacity(BUFFER_SIZE, file);
    write_lines(&mut out, n)?;
    out.flush()?;
    // `close` errors are ignored by `Drop`. A program that must know its data
    // reached the disk calls `out.get_ref().sync_all()` (an `fsync`) here;
    // we do not, because durability is not what this lab measures.
    Ok(())
}

/// Counts bytes and lines, reading the whole file in one go. `fs::read` asks
/// the kernel for the file's size (`statx`), allocates a buffer that large
/// and reads into it: one `read` returns all the data, and one more returns
/// 0 to confirm the end of the file.
fn read_big(path: &Path) -> io::Result<()> {
    let data = fs::read(path)?;
    let lines = data.iter().filter(|&&b| b == b'\n').count();
    println!("{} bytes, {lines} lines", data.len());
    Ok(())
}

/// The same count, 16 bytes per `read` system call, on purpose: an
/// unbuffered `File` does exactly one system call per `read`. A 1 MiB file
/// costs 65,537 calls here against 2 in `read_big`; wrapping the file in a
/// `BufReader` is the usual cure when a parser wants small pieces.
fn read_small(path: &Path) -> io::Result<()> {
    let mut file = File::open(path)?;
    let mut buf = [0u8; SMALL_READ];
    let (mut bytes, mut lines) = (0usize, 0usize);
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break, // end of file
            Ok(n) => n,
            // A signal interrupted the call before any data moved: retry.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        bytes += n;
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count();
    }
    println!("{bytes} bytes, {lines} lines");
    Ok(())
}
