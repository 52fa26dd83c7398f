//! `mini_ps`: list processes the way `ps` does, by reading `/proc`.
//!
//! ```text
//! mini_ps            every process, in ascending pid order
//! mini_ps --pid N    only process N (exit code 1 if there is none)
//! ```
//!
//! ```text
//!     PID    PPID S  THR    RSS_KB COMMAND
//!       1       0 S    1     12544 /sbin/init
//!       2       0 S    1         0 [kthreadd]
//!    4242    4100 S    6      3012 ./server --port 8080
//! ```
//!
//! Design: [`proc`] reads and parses one process (`stat`, `status`,
//! `cmdline`); this file lists the pids, prints the table and decides what
//! an error means. The one rule that shapes the code: **processes vanish**.
//! Between listing `/proc` and reading `/proc/<pid>/stat`, or between
//! reading `stat` and `status`, any process may exit and its directory
//! disappear. `ps` skips such a process silently, and so do we: the
//! listing is a snapshot that was never exactly true at any one instant.
//! Only with `--pid N` is a missing process the user's business (an error).

mod proc;

use std::env;
use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use proc::{Process, all_pids, is_gone, read_process};

const USAGE: &str = "usage: mini_ps [--pid N]";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let only: Option<u32> = match args.as_slice() {
        [] => None,
        [flag, n] if flag == "--pid" => match n.parse() {
            Ok(pid) => Some(pid),
            Err(_) => return usage(&format!("not a pid: {n}")),
        },
        _ => return usage("unexpected arguments"),
    };
    let result = match only {
        Some(pid) => show_one(pid),
        None => show_all(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mini_ps: {e}");
            ExitCode::from(1)
        }
    }
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("mini_ps: {msg}\n{USAGE}");
    ExitCode::from(2)
}

/// Lists every process. Only a failure to read `/proc` itself (or to write
/// the output) is an error.
fn show_all() -> io::Result<ExitCode> {
    // Hundreds of lines: buffer them, or each line is its own `write`.
    let mut out = BufWriter::new(io::stdout().lock());
    print_header(&mut out)?;
    for pid in all_pids()? {
        match read_process(pid) {
            Ok(p) => print_row(&mut out, &p)?,
            // It exited after we listed /proc: not an error, just no longer
            // there to show.
            Err(e) if is_gone(&e) => continue,
            // Anything else (a permission problem, a format we do not
            // understand) is worth a word on stderr, but not worth giving up
            // the rest of the listing.
            Err(e) => eprintln!("mini_ps: skipping pid {pid}: {e}"),
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Shows one process, or says clearly that it does not exist.
fn show_one(pid: u32) -> io::Result<ExitCode> {
    match read_process(pid) {
        Ok(p) => {
            let mut out = io::stdout().lock();
            print_header(&mut out)?;
            print_row(&mut out, &p)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if is_gone(&e) => {
            eprintln!("mini_ps: no process with pid {pid}");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(io::Error::new(e.kind(), format!("pid {pid}: {e}"))),
    }
}

/// Column widths fit pids up to 4194304 (the largest `pid_max`) and RSS up
/// to ~950 GiB; a wider value just pushes the line right, and since columns
/// are separated by whitespace a parser does not care.
fn print_header(out: &mut impl Write) -> io::Result<()> {
    // The same widths as `print_row`.
    writeln!(out, "    PID    PPID S  THR    RSS_KB COMMAND")
}

fn print_row(out: &mut impl Write, p: &Process) -> io::Result<()> {
    writeln!(
        out,
        "{:>7} {:>7} {} {:>4} {:>9} {}",
        p.pid, p.ppid, p.state, p.threads, p.rss_kib, p.command
    )
}
