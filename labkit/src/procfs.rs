//! Facts about processes, read from `/proc` the way `ps` and `top` read them.
//!
//! Graders check operating-system facts where they are the lesson: how many
//! threads a server runs, how many file descriptors it holds, how much memory
//! it uses, whether it left a zombie behind. Every function here returns
//! `None` when the process is gone, rather than panicking: processes vanish.

use std::fs;

use crate::run::ExitStatus;

/// A field of `/proc/<pid>/status` in KiB, e.g. `VmRSS`, `VmHWM`.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    status_field(pid, field)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The raw value of a field of `/proc/<pid>/status` ("Threads", "State", ...).
pub fn status_field(pid: u32, field: &str) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k == field).then(|| v.trim().to_string())
    })
}

/// Resident memory (`VmRSS`) in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS")
}

/// Number of threads of the process.
pub fn threads(pid: u32) -> Option<usize> {
    status_field(pid, "Threads")?.parse().ok()
}

/// Number of open file descriptors (entries of `/proc/<pid>/fd`).
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// The one-letter state of the process (`R`, `S`, `D`, `Z`, `T`, ...), read
/// from `/proc/<pid>/stat` (after the command name, which may hold spaces and
/// parentheses, so the last `)` is the anchor).
pub fn state(pid: u32) -> Option<char> {
    stat_fields(pid)?.first()?.chars().next()
}

/// The parent pid of the process.
pub fn ppid(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// The fields of `/proc/<pid>/stat` after the command name: index 0 is the
/// state (field 3 in `man 5 proc`), index 1 the ppid, and so on.
pub fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// CPU time (user + system) a thread has used, in clock ticks, from
/// `/proc/<pid>/task/<tid>/stat`. Per thread, so it holds when other tests
/// share the process.
pub fn thread_cpu_ticks(pid: u32, tid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of `man 5 proc`, 11 and 12 here.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Linux reports CPU times in `/proc` in ticks of `USER_HZ`, which is 100
/// on every architecture Linux supports today (`getconf CLK_TCK`).
pub const TICKS_PER_SECOND: u64 = 100;

/// CPU time (user + system, all threads) a process has used, in ticks:
/// fields 14 and 15 of `/proc/<pid>/stat` (`man 5 proc`).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let f = stat_fields(pid)?;
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// The thread ids of a process (`/proc/<pid>/task`).
pub fn thread_ids(pid: u32) -> Vec<u32> {
    fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The pids of the direct children of `pid` (scanning `/proc`).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| ppid(p) == Some(pid))
        .collect()
}

/// The id of the calling thread (`gettid`).
pub fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

/// Waits for a child process to exit and reaps it, retrying on EINTR.
pub(crate) fn wait_for_exit(pid: libc::pid_t) -> ExitStatus {
    let mut status = 0;
    loop {
        // SAFETY: plain wait4 on a pid we spawned, with a valid status pointer
        // and no rusage.
        let r = unsafe { libc::wait4(pid, &mut status, 0, std::ptr::null_mut()) };
        if r == pid {
            break;
        }
        if r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return ExitStatus::default();
    }
    if libc::WIFEXITED(status) {
        ExitStatus {
            code: Some(libc::WEXITSTATUS(status)),
            signal: None,
        }
    } else if libc::WIFSIGNALED(status) {
        ExitStatus {
            code: None,
            signal: Some(libc::WTERMSIG(status)),
        }
    } else {
        ExitStatus::default()
    }
}

/// Raises this process's soft limit on open files to `want` (capped at the
/// hard limit) and returns the new soft limit. Tests that open many
/// connections call it first; see [`crate::report`] for the advice to give
/// when the hard limit is too low.
pub fn raise_nofile_limit(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_facts_about_this_process() {
        let me = std::process::id();
        assert!(rss_kib(me).unwrap() > 0);
        assert!(threads(me).unwrap() >= 1);
        assert!(open_fds(me).unwrap() >= 3);
        assert!(matches!(state(me), Some('R') | Some('S')));
        assert!(ppid(me).is_some());
        assert!(thread_ids(me).contains(&gettid()));
        assert!(thread_cpu_ticks(me, gettid()).is_some());
    }

    #[test]
    fn a_vanished_process_is_none_not_a_panic() {
        // pid_max is at most 2^22, so this pid cannot exist.
        let gone = 1 << 23;
        assert_eq!(rss_kib(gone), None);
        assert_eq!(state(gone), None);
        assert_eq!(open_fds(gone), None);
    }
}
