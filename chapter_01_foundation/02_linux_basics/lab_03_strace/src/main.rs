//! `syscall_lab`: make system calls visible with `strace`.
//!
//! Every mode below does something ordinary (print lines, write a file, read
//! a file) in a way whose system calls you can predict, then check with
//! `strace`. The grader runs each mode for its output, then under strace to
//! count its `write`, `read` and `close` calls. README.md has the full spec;
//! in short:
//!
//! ```text
//! syscall_lab unbuffered N         print N lines, one write(2) per line
//! syscall_lab buffered N           the same bytes through a 64 KiB BufWriter:
//!                                  at most 10 writes for 10,000 lines
//! syscall_lab write-file PATH N    the same lines into PATH (created or
//!                                  truncated); its descriptor is closed exactly
//!                                  once, by Drop, before the program exits
//! syscall_lab read-big PATH        print "<bytes> bytes, <lines> lines" for
//!                                  PATH, reading it in one go (at most 3 reads)
//! syscall_lab read-small PATH      the same, asking for 16 bytes per read
//! ```
//!
//! Line i (from 1 to N) is `line ` then i padded to 5 digits, then `\n`:
//! `line 00001\n`, `line 00002\n`, ... Every printing mode prints exactly
//! the same bytes.
//!
//! Errors: a usage error prints the usage to stderr and exits with code 2;
//! a file that cannot be opened prints `syscall_lab: <path>: <error>` to
//! stderr and exits with code 1. Never panic.
//!
//! The argument parsing is done for you; fill in the five functions at the
//! bottom. Run a mode under strace as you go:
//!
//! ```text
//! cargo build && strace -e trace=write ../../../target/debug/syscall_lab unbuffered 3
//! ```

#![allow(unused)]

use std::env;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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

/// Runs one mode. Errors about a file carry its path, so `main` prints
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

fn not_yet(mode: &str) -> io::Error {
    io::Error::other(format!("{mode}: not implemented yet"))
}

/// Prints lines 1..=N so that each line is its own `write` system call.
/// (What does `println!` do? Check with strace.)
fn unbuffered(n: u64) -> io::Result<()> {
    Err(not_yet("unbuffered"))
}

/// Prints the same lines through a 64 KiB buffer: a handful of `write`s.
/// Every byte must come out, however the program ends.
fn buffered(n: u64) -> io::Result<()> {
    Err(not_yet("buffered"))
}

/// Writes the same lines into `path` (created or truncated). Let the
/// descriptor close itself, exactly once.
fn write_file(path: &Path, n: u64) -> io::Result<()> {
    Err(not_yet("write-file"))
}

/// Prints `<bytes> bytes, <lines> lines` for `path`, reading it in one go.
fn read_big(path: &Path) -> io::Result<()> {
    Err(not_yet("read-big"))
}

/// The same, asking the kernel for 16 bytes per `read`.
fn read_small(path: &Path) -> io::Result<()> {
    Err(not_yet("read-small"))
}
