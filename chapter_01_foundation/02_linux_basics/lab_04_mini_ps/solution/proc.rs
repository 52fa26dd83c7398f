//! Reading one process from `/proc/<pid>/`.
//!
//! Three small text files describe a process, each written by the kernel at
//! the moment we read it:
//!
//! - `stat`: one line of space-separated fields (`man 5 proc_pid_stat`):
//!   pid, `(comm)`, state, ppid, ... The command name sits between
//!   parentheses and may itself contain spaces and parentheses, so the only
//!   safe anchor is the *last* `)` in the line.
//! - `status`: the same facts and more as `Key:\tvalue` lines, meant for
//!   humans; we take `VmRSS` from it (absent for kernel threads and zombies,
//!   which have no memory of their own).
//! - `cmdline`: the arguments the process was started with, each followed by
//!   a NUL byte; empty for kernel threads and zombies.
//!
//! A process can exit between any two reads. Every function here returns an
//! `io::Error` rather than panicking, and [`is_gone`] tells the caller
//! whether the error means "this process no longer exists".

use std::fs::{self, File};
use std::io::{self, Read};

/// One row of the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    /// One letter: R running, S sleeping, D disk sleep, Z zombie, T stopped,
    /// t traced, I idle kernel thread, X dead.
    pub state: char,
    pub threads: u64,
    /// Resident memory in KiB (`VmRSS`), 0 when the process has none.
    pub rss_kib: u64,
    /// The arguments joined by spaces, or `[comm]` when there are none.
    pub command: String,
}

/// The fields of `/proc/<pid>/stat` that we show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub comm: String,
    pub state: char,
    pub ppid: u32,
    pub threads: u64,
}

/// Reads everything the listing shows about `pid`. Any error may mean the
/// process vanished while we were reading: ask [`is_gone`].
pub fn read_process(pid: u32) -> io::Result<Process> {
    // Arguments and names need not be UTF-8: read bytes, convert lossily.
    let stat_text = String::from_utf8_lossy(&read_file(pid, "stat")?).into_owned();
    let stat = parse_stat(&stat_text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/proc/{pid}/stat: unexpected format: {stat_text:?}"),
        )
    })?;
    let status = String::from_utf8_lossy(&read_file(pid, "status")?).into_owned();
    let cmdline = read_file(pid, "cmdline")?;
    let command = match join_args(&cmdline) {
        Some(args) => args,
        // No arguments: a kernel thread, or a zombie whose memory (where
        // its arguments lived) is already freed. `ps` shows the name in
        // brackets so that it cannot be mistaken for a command line.
        None => format!("[{}]", stat.comm),
    };
    Ok(Process {
        pid,
        ppid: stat.ppid,
        state: stat.state,
        threads: stat.threads,
        rss_kib: vm_rss_kib(&status),
        command: printable(&command),
    })
}

/// Reads `/proc/<pid>/<name>` whole: `openat`, `read`, `read` (= 0),
/// `close`.
///
/// Why not `fs::read`? It asks for the file's size first (`statx`) to size
/// its buffer, but `/proc` files are generated as they are read and report
/// a size of 0; `fs::read` then starts with a 32-byte read and doubles:
/// about 6 `read` calls for a 300-byte `stat`, plus the `statx`. A 4 KiB
/// buffer up front holds `stat` and `status` in one `read`. A full scan
/// reads three files of every process, so this halves the system calls of
/// `mini_ps` (compare with `strace -c`).
fn read_file(pid: u32, name: &str) -> io::Result<Vec<u8>> {
    let mut file = File::open(format!("/proc/{pid}/{name}"))?;
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(2 * len, 0); // a long command line: grow and go on
        }
        match file.read(&mut buf[len..]) {
            Ok(0) => break, // end of file
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    Ok(buf)
}

/// Parses the line of `/proc/<pid>/stat`:
/// `1234 (a (weird) name) S 1 1234 1234 0 -1 ...`.
///
/// The name is everything between the first `(` and the *last* `)`: a
/// process may call itself `a) Z 1 (b`, and splitting on the first `)` or on
/// spaces would then read its state as `Z` and its parent as 1. After the
/// last `)`, fields are plain numbers and letters separated by single
/// spaces; numbering from the state as index 0, the parent pid is 1 and the
/// number of threads is 17 (fields 3, 4 and 20 in `man 5 proc_pid_stat`).
pub fn parse_stat(line: &str) -> Option<Stat> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let comm = line.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = line[close + 1..].split_whitespace().collect();
    let mut state = fields.first()?.chars();
    let (Some(state), None) = (state.next(), state.next()) else {
        return None; // the state is exactly one letter
    };
    Some(Stat {
        comm,
        state,
        ppid: fields.get(1)?.parse().ok()?,
        threads: fields.get(17)?.parse().ok()?,
    })
}

/// `VmRSS` from the text of `/proc/<pid>/status`, in KiB (the kernel writes
/// `VmRSS:\t    1660 kB`, where "kB" means KiB). Kernel threads and zombies
/// have no such line: they hold no user memory, so 0.
///
/// Why not field 24 of `stat` (rss, in pages)? It is counted in pages, not
/// KiB, and on recent kernels it is a cheaper, approximate sum that can lag
/// `VmRSS` by a few hundred KiB. `VmSize` is something else entirely: all
/// the address space mapped, most of it never touched.
pub fn vm_rss_kib(status: &str) -> u64 {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Joins the NUL-terminated arguments of `cmdline` with spaces, or `None`
/// when there are none. A process may overwrite its arguments (`nginx:
/// worker process`), leaving one string with spaces and no NUL: also fine.
pub fn join_args(cmdline: &[u8]) -> Option<String> {
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    (!args.is_empty()).then(|| args.join(" "))
}

/// Replaces control characters with `?`, as `ps` does: an argument may
/// hold a newline or a terminal escape, and one process must not be able
/// to forge extra lines in our output.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Whether an error reading `/proc/<pid>/...` means the process is gone:
/// `ENOENT` when its directory disappeared before `open`, `ESRCH` ("no such
/// process") when it exited between `open` and `read`.
pub fn is_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(3 /* ESRCH */)
}

/// Every pid in `/proc`, in ascending order: the directories whose names
/// are numbers (the others are kernel files such as `meminfo`, `self`).
pub fn all_pids() -> io::Result<Vec<u32>> {
    let mut pids: Vec<u32> = fs::read_dir("/proc")?
        // An entry can fail to read if its process vanishes mid-listing.
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    Ok(pids)
}
