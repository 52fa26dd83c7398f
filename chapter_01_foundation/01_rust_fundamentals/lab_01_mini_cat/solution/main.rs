//! mini_cat: print a file, or only the lines that contain a pattern, with
//! optional line numbers, in constant memory.
//!
//! ```text
//! mini_cat FILE [PATTERN] [-n]
//! ```
//!
//! # Design
//!
//! The whole program is one loop over the input that never holds more than
//! one line (or one block) in memory, so a 200 MB log costs the same few
//! hundred kilobytes as a 2 KB one:
//!
//! - **Arguments** are [`OsString`]s, not `String`s: on Linux a file name or a
//!   pattern is any bytes except NUL, and `std::env::args()` would panic on
//!   one that is not UTF-8. The pattern is kept as bytes for the same reason.
//! - **Input** is a [`BufReader`] with a 128 KiB buffer around either the file
//!   or standard input (`-`), behind `Box<dyn Read>` so the loop is written
//!   once. The buffer turns millions of tiny reads into a few thousand
//!   `read(2)` calls.
//! - **Lines** are *bytes*: [`BufRead::read_until`] with `b'\n'` into one
//!   `Vec<u8>` that is cleared, never reallocated, for every line. Nothing is
//!   decoded, so invalid UTF-8 and `\r\n` pass through untouched, and a last
//!   line without `\n` is printed without one. (`BufRead::lines()` would do
//!   three things wrong at once: fail on invalid UTF-8, strip `\r`, and lose
//!   track of whether the last line had a newline.)
//! - **Output** goes through one [`BufWriter`] around one lock of stdout:
//!   `println!` locks stdout and, when stdout is a terminal, flushes on every
//!   line; that is a system call per line.
//! - **Without a pattern or `-n`** lines do not matter, so the fast path copies
//!   in blocks straight from the read buffer and never looks for `\n`.
//! - **Errors** name their cause: reading `FILE` fails with
//!   `mini_cat: FILE: <reason>` and exit code 1; bad arguments print the usage
//!   and exit with 2; a closed stdout (`mini_cat big.log | head`) is not an
//!   error at all: the reader has seen enough, so we stop quietly with 0.
//!
//! Real tools go further: GNU `cat` uses `copy_file_range(2)`/`splice(2)` to
//! skip user space entirely, and `grep` searches whole buffers with a SIMD
//! substring search instead of splitting lines first.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::process::ExitCode;

/// Read and write buffers. 128 KiB is where sequential `read(2)` throughput
/// levels off on Linux (it is also what GNU coreutils uses); bigger buffers
/// only cost memory.
const BUF_SIZE: usize = 128 * 1024;

const USAGE: &str = "usage: mini_cat FILE [PATTERN] [-n]
  FILE     the file to print, or - for standard input
  PATTERN  print only the lines that contain these bytes
  -n       put the line number (in FILE) before each printed line";

/// What the command line asked for.
#[derive(Debug)]
struct Args {
    /// The file to read; `-` means standard input.
    file: OsString,
    /// Only lines containing these bytes are printed.
    pattern: Option<Vec<u8>>,
    /// Whether to number lines.
    number: bool,
}

/// Why the program stops early. Reading and writing fail differently: a read
/// error is about `FILE`, a write error about stdout, and one kind of write
/// error (the reader went away) is not a failure at all.
#[derive(Debug)]
enum Error {
    Read(io::Error),
    Write(io::Error),
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("mini_cat: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        // `mini_cat big.log | head`: head exits after 10 lines and our next
        // write fails with EPIPE. Rust ignores SIGPIPE, so instead of being
        // killed silently like C's cat we get this error: stop just as
        // quietly.
        Err(Error::Write(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(Error::Write(e)) => {
            eprintln!("mini_cat: write error: {e}");
            ExitCode::from(1)
        }
        Err(Error::Read(e)) => {
            eprintln!("mini_cat: {}: {e}", args.file.to_string_lossy());
            ExitCode::from(1)
        }
    }
}

/// `FILE [PATTERN] [-n]`: the first argument is always FILE (so a file may be
/// called `-n`), after it `-n` may come anywhere and the one other argument
/// is the pattern.
fn parse_args(mut argv: impl Iterator<Item = OsString>) -> Result<Args, String> {
    let file = argv.next().ok_or("missing FILE")?;
    let mut args = Args {
        file,
        pattern: None,
        number: false,
    };
    for arg in argv {
        if arg == "-n" {
            args.number = true;
        } else if args.pattern.is_none() {
            args.pattern = Some(arg.into_vec());
        } else {
            return Err(format!(
                "unexpected argument {:?} (only one PATTERN)",
                arg.to_string_lossy()
            ));
        }
    }
    Ok(args)
}

fn run(args: &Args) -> Result<(), Error> {
    let input: Box<dyn Read> = if args.file == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(&args.file).map_err(Error::Read)?)
    };
    let mut input = BufReader::with_capacity(BUF_SIZE, input);

    // Lock once: every `print!` would otherwise take and release the lock.
    let stdout = io::stdout().lock();
    let mut out = BufWriter::with_capacity(BUF_SIZE, stdout);

    if args.pattern.is_none() && !args.number {
        copy_blocks(&mut input, &mut out)?;
    } else {
        copy_lines(&mut input, &mut out, args.pattern.as_deref(), args.number)?;
    }
    // BufWriter flushes on drop too, but silently ignores the error there;
    // flushing here is the only way to hear about a failed last write.
    out.flush().map_err(Error::Write)
}

/// Copies everything as is, one buffer at a time.
fn copy_blocks(input: &mut impl BufRead, out: &mut impl Write) -> Result<(), Error> {
    loop {
        let block = match input.fill_buf() {
            Ok([]) => return Ok(()),
            Ok(block) => block,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::Read(e)),
        };
        // A block as large as BufWriter's buffer goes straight to write(2),
        // without a second copy.
        out.write_all(block).map_err(Error::Write)?;
        let n = block.len();
        input.consume(n);
    }
}

/// Copies the lines that contain `pattern` (all lines if `None`), each
/// prefixed with its number in the input when `number` is set.
fn copy_lines(
    input: &mut impl BufRead,
    out: &mut impl Write,
    pattern: Option<&[u8]>,
    number: bool,
) -> Result<(), Error> {
    // One buffer for every line: `clear` keeps its capacity, so after the
    // longest line has been seen there are no more allocations.
    let mut line = Vec::with_capacity(1024);
    // Counts every line read, printed or not: `-n` numbers lines of the
    // *file*, so `mini_cat log ERROR -n` tells you where to look.
    let mut line_no: u64 = 0;
    loop {
        line.clear();
        // read_until retries on EINTR itself.
        if input.read_until(b'\n', &mut line).map_err(Error::Read)? == 0 {
            return Ok(());
        }
        line_no += 1;
        if let Some(pattern) = pattern {
            // Match the line's content only: its `\n` is a terminator, not
            // part of the text.
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            if !contains(text, pattern) {
                continue;
            }
        }
        if number {
            // The format of `cat -n`: right-aligned in 6 columns, then a tab.
            write!(out, "{line_no:>6}\t").map_err(Error::Write)?;
        }
        // The line as read, with its own `\n` (or `\r\n`, or none at the end).
        out.write_all(&line).map_err(Error::Write)?;
    }
}

/// Whether `needle` occurs in `haystack`, as bytes. The naive search is
/// O(n * m), fine for short patterns; `grep` and the `memchr` crate use
/// SIMD and smarter algorithms (Two-Way) for long ones.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}
