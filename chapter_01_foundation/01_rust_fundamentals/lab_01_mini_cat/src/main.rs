//! # Lab 01: mini_cat
//!
//! Write `mini_cat`, a small `cat` with a built-in `grep`:
//!
//! ```text
//! mini_cat FILE [PATTERN] [-n]
//! ```
//!
//! - `mini_cat notes.txt` prints the file exactly as it is, byte for byte.
//! - `mini_cat notes.txt TODO` prints only the lines that contain `TODO`.
//! - `-n` puts each printed line's number *in the file* in front of it, in the
//!   format of `cat -n`: the number right-aligned in 6 columns, a tab, then
//!   the line (`format!("{n:>6}\t")`). With a pattern, the numbers are those
//!   of the original lines (3, 17, 42), not 1, 2, 3.
//! - `-` as FILE reads standard input. The first argument is always FILE;
//!   after it `-n` may come anywhere, and the one other argument is PATTERN.
//!
//! Exactly:
//!
//! - A *line* is everything up to and including a `\n`, or the bytes after
//!   the last `\n` if the file does not end with one. Lines are printed as
//!   they were read: a `\r\n` stays `\r\n`, a last line without `\n` is
//!   printed without one, an empty file prints nothing.
//! - Input is bytes, not text: a file that is not valid UTF-8 passes through
//!   unchanged, and PATTERN is matched as bytes against each line (without its
//!   final `\n`). An empty PATTERN matches every line.
//! - Exit code 0 on success, also when no line matches.
//! - A file that cannot be opened or read: print `mini_cat: FILE: <reason>` to
//!   stderr, nothing to stdout, exit code 1. Never panic.
//! - No arguments, or more than one PATTERN: print a usage message containing
//!   the word `usage` to stderr, exit code 2.
//! - Memory stays small whatever the size of the input: a 200 MB file must be
//!   streamed, never read whole into memory.
//! - If stdout is closed early (`mini_cat big.log | head -1`), stop quietly:
//!   no message and no panic, exit code 0.
//!
//! Run `cargo test` in this folder to be graded; README.md has the details,
//! hints.md a few hints.

fn main() {
    // Delete these two lines and write mini_cat here.
    eprintln!("mini_cat: not implemented yet: read the doc comment at the top of src/main.rs");
    std::process::exit(1);
}
