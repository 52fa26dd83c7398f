//! Facts about processes, read from `/proc` the way `ps` and `top` read them.
//!
//! Graders check operating-system facts where they are the lesson: how many
//! threads a server runs, how many file descriptors it holds, how much memory
//! it uses, whether it left a zombie behind. Every function here returns
//! `None` when the process is gone, rather than panicking: processes vanish.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

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

/// What a process's threads are doing right now: the facts that tell a
/// server that is working (or waiting for a CPU) from one that is parked.
///
/// Two snapshots that are equal mean no thread of the process ran in
/// between: `slices` counts every time a thread was put on a CPU, from
/// `/proc/<pid>/task/<tid>/schedstat` (the scheduler's own bookkeeping,
/// exact, unlike the 10 ms ticks of [`cpu_ticks`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    /// Threads in the process.
    pub threads: usize,
    /// Threads that are running, waiting for a CPU (`R`) or in an
    /// uninterruptible wait such as disk I/O (`D`): busy, not parked.
    pub busy: usize,
    /// Threads asleep in a system call with a timeout due within
    /// [`SOON`] (an `epoll_wait` with a timer pending, a `sleep` before a
    /// retry): they will wake by themselves, so the process is not parked.
    pub timed: usize,
    /// Nanoseconds the threads have spent on a CPU (schedstat field 1).
    pub run_ns: u64,
    /// Times the threads were put on a CPU (schedstat field 3).
    pub slices: u64,
}

/// A snapshot of [`Activity`], or `None` when the process is gone.
pub fn activity(pid: u32) -> Option<Activity> {
    let tids = thread_ids(pid);
    if tids.is_empty() {
        return None;
    }
    let mut a = Activity {
        threads: tids.len(),
        busy: 0,
        timed: 0,
        run_ns: 0,
        slices: 0,
    };
    for tid in tids {
        // A thread that exits between listing and reading is simply gone;
        // the changed thread count shows the process did something.
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")) else {
            continue;
        };
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .unwrap_or("?");
        if matches!(state, "R" | "D") {
            a.busy += 1;
        } else if sleeps_with_timeout(pid, tid) {
            a.timed += 1;
        }
        if let Ok(s) = fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")) {
            let f: Vec<u64> = s
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            a.run_ns += f.first().copied().unwrap_or(0);
            a.slices += f.get(2).copied().unwrap_or(0);
        }
    }
    Some(a)
}

/// How soon a sleeping thread's timeout must be due for
/// [`Activity::timed`] to count it.
pub const SOON: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether thread `tid` sleeps in a system call that its own timeout will
/// end within [`SOON`], from `/proc/<pid>/task/<tid>/syscall` (the call's
/// number and arguments; a timeout given by pointer is read from
/// `/proc/<pid>/mem`, which the test may read: the process is its child).
/// A wait with no timeout (`accept`, `read`, `epoll_wait(-1)`, a futex
/// without one, which is what `thread::park` and an idle tokio worker use)
/// is not timed; neither is `thread::sleep` for an hour. When the timeout
/// cannot be read, the thread counts as timed: it is never called parked
/// on a guess.
pub fn sleeps_with_timeout(pid: u32, tid: u32) -> bool {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")) else {
        return true;
    };
    let f: Vec<&str> = text.split_whitespace().collect();
    // "running", or -1 (not in a system call: e.g. a page fault).
    let Some(nr) = f.first().and_then(|n| n.parse::<i64>().ok()) else {
        return true;
    };
    let arg = |i: usize| -> u64 {
        f.get(i + 1)
            .and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
            .unwrap_or(0)
    };
    let soon_ms = |ms: u64| (ms as i32) >= 0 && (ms as i32 as u64) < SOON.as_millis() as u64;
    // A relative timeout in a `struct timespec` (or `timeval`) at `ptr`.
    let soon_ptr = |ptr: u64| {
        ptr != 0 && read_timespec(pid, ptr).is_none_or(|(sec, _)| sec < SOON.as_secs() as i64)
    };
    let sys = nr as libc::c_long;
    #[cfg(target_arch = "x86_64")]
    {
        if sys == libc::SYS_epoll_wait || sys == libc::SYS_poll {
            return soon_ms(arg(if sys == libc::SYS_poll { 2 } else { 3 }));
        }
        if sys == libc::SYS_select {
            return soon_ptr(arg(4));
        }
    }
    if sys == libc::SYS_epoll_pwait {
        return soon_ms(arg(3));
    }
    if sys == libc::SYS_epoll_pwait2 {
        return soon_ptr(arg(3));
    }
    if sys == libc::SYS_ppoll {
        return soon_ptr(arg(2));
    }
    if sys == libc::SYS_pselect6 {
        return soon_ptr(arg(4));
    }
    if sys == libc::SYS_nanosleep {
        return soon_ptr(arg(0));
    }
    if sys == libc::SYS_clock_nanosleep {
        // TIMER_ABSTIME: a deadline on the clock in arg 0, not a duration.
        return if arg(1) & 1 == 1 {
            absolute_soon(pid, arg(2), arg(0) as libc::clockid_t)
        } else {
            soon_ptr(arg(2))
        };
    }
    if sys == libc::SYS_futex {
        let op = arg(1) as i32 & !libc::FUTEX_PRIVATE_FLAG;
        let clock = if op & libc::FUTEX_CLOCK_REALTIME != 0 {
            libc::CLOCK_REALTIME
        } else {
            libc::CLOCK_MONOTONIC
        };
        return match op & !libc::FUTEX_CLOCK_REALTIME {
            libc::FUTEX_WAIT => soon_ptr(arg(3)),
            // The bitset wait takes an absolute deadline (std's Condvar and
            // park_timeout use it).
            libc::FUTEX_WAIT_BITSET => arg(3) != 0 && absolute_soon(pid, arg(3), clock),
            _ => false,
        };
    }
    false
}

/// Whether the absolute deadline in the `timespec` at `ptr` on `clock` is
/// due within [`SOON`] (or cannot be read).
fn absolute_soon(pid: u32, ptr: u64, clock: libc::clockid_t) -> bool {
    let Some((sec, _)) = read_timespec(pid, ptr) else {
        return true;
    };
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a valid local timespec.
    unsafe { libc::clock_gettime(clock, &mut now) };
    sec - now.tv_sec < SOON.as_secs() as i64
}

/// Reads a `struct timespec` (two 64-bit words) from another process's
/// memory.
fn read_timespec(pid: u32, ptr: u64) -> Option<(i64, i64)> {
    use std::os::unix::fs::FileExt;
    let mem = fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut buf = [0u8; 16];
    mem.read_exact_at(&mut buf, ptr).ok()?;
    let sec = i64::from_ne_bytes(buf[..8].try_into().ok()?);
    let nsec = i64::from_ne_bytes(buf[8..].try_into().ok()?);
    Some((sec, nsec))
}

/// One socket from the kernel's tables `/proc/net/tcp`, `tcp6`, `udp` and
/// `udp6` (what `ss -tan` and `ss -uan` print), for this process's network
/// namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketEntry {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The TCP state as the kernel numbers it (1 established, 10 listen).
    pub state: u8,
    /// Bytes written by the socket's owner, not yet acknowledged by the
    /// peer (`ss` shows it as Send-Q).
    pub tx_queue: u64,
    /// Bytes received, not yet read by the socket's owner (Recv-Q): for a
    /// connection, data the program has not read; for UDP, datagrams
    /// waiting to be received, with the kernel's per-packet overhead.
    pub rx_queue: u64,
    /// The socket's inode, or 0 for a TCP connection still waiting in its
    /// listener's accept queue (no program has accepted it yet).
    pub inode: u64,
}

/// TCP state `ESTABLISHED` in [`SocketEntry::state`].
pub const TCP_ESTABLISHED: u8 = 1;

/// TCP state `LISTEN` in [`SocketEntry::state`].
pub const TCP_LISTEN: u8 = 10;

/// Which kernel table to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

/// Every socket of `proto`, IPv4 and IPv6.
pub fn sockets(proto: Proto) -> Vec<SocketEntry> {
    let name = match proto {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    };
    let mut all = Vec::new();
    for file in [name.to_string(), format!("{name}6")] {
        if let Ok(table) = fs::read_to_string(format!("/proc/net/{file}")) {
            all.extend(table.lines().skip(1).filter_map(parse_socket_line));
        }
    }
    all
}

/// The TCP connection from `local` to `remote` (say the server's side of a
/// test's connection: local is the server's address, remote the client's).
pub fn tcp_connection(local: SocketAddr, remote: SocketAddr) -> Option<SocketEntry> {
    sockets(Proto::Tcp)
        .into_iter()
        .find(|s| s.local == local && s.remote == remote && s.state != TCP_LISTEN)
}

/// Parses one line of `/proc/net/{tcp,udp}[6]`:
/// `sl local rem st tx_queue:rx_queue tr:when retrnsmt uid timeout inode ...`
fn parse_socket_line(line: &str) -> Option<SocketEntry> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 10 {
        return None;
    }
    let (tx, rx) = f[4].split_once(':')?;
    Some(SocketEntry {
        local: parse_hex_addr(f[1])?,
        remote: parse_hex_addr(f[2])?,
        state: u8::from_str_radix(f[3], 16).ok()?,
        tx_queue: u64::from_str_radix(tx, 16).ok()?,
        rx_queue: u64::from_str_radix(rx, 16).ok()?,
        inode: f[9].parse().ok()?,
    })
}

/// `0100007F:1F90` is 127.0.0.1:8080: the address is the kernel's 32-bit
/// words printed in host byte order (little-endian here), the port in hex.
fn parse_hex_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words = |hex: &str| -> Option<Vec<u32>> {
        (0..hex.len() / 8)
            .map(|i| u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok())
            .collect()
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(words(ip)?[0].to_le_bytes())),
        32 => {
            let mut octets = [0u8; 16];
            for (i, w) in words(ip)?.into_iter().enumerate() {
                octets[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The pids of every descendant of `pid` (children, their children, ...),
/// deepest last, from one scan of `/proc`.
pub fn descendants(pid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(u32, u32)> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| Some((p, ppid(p)?)))
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// The id of the calling thread (`gettid`).
pub fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
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
    fn parses_the_kernels_socket_lines() {
        let v4 = "   1: 0100007F:1F90 0100007F:D431 01 0000000A:0000000C 00:00000000 00000000     0        0 12345 1 0000000000000000 20 4 30 10 -1";
        let s = parse_socket_line(v4).unwrap();
        assert_eq!(s.local, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(s.remote, "127.0.0.1:54321".parse().unwrap());
        assert_eq!(
            (s.state, s.tx_queue, s.rx_queue, s.inode),
            (1, 10, 12, 12345)
        );
        let v6 = "   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0";
        let s = parse_socket_line(v6).unwrap();
        assert_eq!(s.local, "[::1]:8080".parse().unwrap());
        assert_eq!(s.state, 10);
    }

    #[test]
    fn finds_a_connection_and_its_unread_bytes() {
        use std::io::Write;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        c.write_all(b"12 bytes sent").unwrap();
        let me = c.local_addr().unwrap();
        // Not accepted yet: in the accept queue, no inode; the bytes wait.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let queued = loop {
            let e = tcp_connection(l.local_addr().unwrap(), me).unwrap();
            if e.rx_queue == 13 || std::time::Instant::now() > deadline {
                break e;
            }
        };
        assert_eq!((queued.rx_queue, queued.inode), (13, 0));
        let (_server_side, _) = l.accept().unwrap();
        let accepted = tcp_connection(l.local_addr().unwrap(), me).unwrap();
        assert_ne!(accepted.inode, 0);
        assert_eq!(accepted.rx_queue, 13);
    }

    #[test]
    fn activity_sees_a_thread_run() {
        let me = std::process::id();
        let before = activity(me).unwrap();
        assert!(before.busy >= 1, "this thread is running: {before:?}");
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(20) {}
        let after = activity(me).unwrap();
        assert!(after.run_ns > before.run_ns, "{before:?} then {after:?}");
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
