//! Opening many connections from one event loop, and what every mode
//! shares: the histogram, the phases of a run, reading and writing until
//! `WouldBlock`.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// Connects in flight at once: below a typical listen backlog (128), so a
/// server that accepts slowly sees retries, not dropped SYNs.
const CONNECTS_IN_FLIGHT: usize = 64;

/// Raises this process's soft open-file limit to fit `n` connections, as
/// far as the hard limit allows.
pub fn raise_nofile(n: usize) -> Result<(), String> {
    let want = n as u64 + 64;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read the struct we pass, nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(format!("getrlimit: {}", io::Error::last_os_error()));
        }
        if lim.rlim_cur >= want {
            return Ok(());
        }
        if lim.rlim_max < want {
            return Err(format!(
                "{n} connections need {want} open files, but the hard limit is {} (raise it: ulimit -Hn, or /etc/security/limits.conf)",
                lim.rlim_max
            ));
        }
        lim.rlim_cur = want;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            return Err(format!("setrlimit: {}", io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Opens `n` connections to `addr`, registered with `poll` for reading and
/// writing under tokens `0..n`, `TCP_NODELAY` set (so a 64-byte message
/// leaves at once). Fails if they are not all up within `deadline`.
pub fn connect_all(
    poll: &mut Poll,
    addr: SocketAddr,
    n: usize,
    deadline: Duration,
) -> Result<Vec<TcpStream>, String> {
    raise_nofile(n)?;
    let until = Instant::now() + deadline;
    let mut streams: Vec<Option<TcpStream>> = Vec::with_capacity(n);
    let mut up = vec![false; n];
    let mut pending = 0;
    let mut done = 0;
    let mut events = Events::with_capacity(1024);
    while done < n {
        while pending < CONNECTS_IN_FLIGHT && streams.len() < n {
            let i = streams.len();
            let mut s = TcpStream::connect(addr)
                .map_err(|e| format!("connecting #{i} to {addr} failed: {e}"))?;
            poll.registry()
                .register(&mut s, Token(i), Interest::READABLE | Interest::WRITABLE)
                .map_err(|e| format!("register: {e}"))?;
            streams.push(Some(s));
            pending += 1;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "only {done} of {n} connections to {addr} were up after {deadline:?}"
            ));
        }
        poll.poll(&mut events, Some(left))
            .map_err(|e| format!("poll: {e}"))?;
        for ev in events.iter() {
            let i = ev.token().0;
            if up[i] || !(ev.is_writable() || ev.is_error()) {
                continue;
            }
            let s = streams[i].as_ref().expect("registered");
            if let Ok(Some(e)) | Err(e) = s.take_error() {
                return Err(format!("connection #{i} to {addr} failed: {e}"));
            }
            match s.peer_addr() {
                Ok(_) => {
                    let _ = s.set_nodelay(true);
                    up[i] = true;
                    pending -= 1;
                    done += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                Err(e) => return Err(format!("connection #{i} to {addr} failed: {e}")),
            }
        }
    }
    Ok(streams.into_iter().map(|s| s.expect("opened")).collect())
}

/// A latency histogram in microseconds, 1 us to 60 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// Records `d` in `h`, clamped into its range.
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = (d.as_micros() as u64).clamp(1, 60_000_000);
    let _ = h.record(us);
}

/// Where a run is: warming up, measuring, or over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Warmup,
    Measure,
    Over,
}

/// The clock of a run: warm-up, then the measured window, whose real
/// length is taken when it closes.
pub struct Clock {
    pub phase: Phase,
    warmup_end: Instant,
    duration: Duration,
    pub measure_start: Option<Instant>,
    pub measure_end: Option<Instant>,
}

impl Clock {
    pub fn start(warmup: Duration, duration: Duration) -> Clock {
        Clock {
            phase: Phase::Warmup,
            warmup_end: Instant::now() + warmup,
            duration,
            measure_start: None,
            measure_end: None,
        }
    }

    /// Moves to the next phase when its time has come; true if it moved
    /// (the caller resets its counters when the window opens).
    pub fn tick(&mut self, now: Instant) -> bool {
        match self.phase {
            Phase::Warmup if now >= self.warmup_end => {
                self.phase = Phase::Measure;
                self.measure_start = Some(now);
                crate::say("measuring");
                true
            }
            Phase::Measure if now >= self.measure_start.expect("set") + self.duration => {
                self.phase = Phase::Over;
                self.measure_end = Some(now);
                crate::say("done");
                true
            }
            _ => false,
        }
    }

    /// How long the event loop may sleep before the next phase change.
    pub fn timeout(&self, now: Instant) -> Duration {
        let next = match self.phase {
            Phase::Warmup => self.warmup_end,
            Phase::Measure => self.measure_start.expect("set") + self.duration,
            Phase::Over => now,
        };
        next.saturating_duration_since(now)
    }

    /// The real length of the measured window.
    pub fn elapsed(&self) -> Duration {
        match (self.measure_start, self.measure_end) {
            (Some(a), Some(b)) => b - a,
            _ => Duration::ZERO,
        }
    }
}

/// Reads everything available into `buf` (appending); returns the number
/// of bytes read, or an error saying the server closed or reset.
pub fn read_all(s: &mut TcpStream, scratch: &mut [u8], buf: &mut Vec<u8>) -> Result<usize, String> {
    let mut total = 0;
    loop {
        match s.read(scratch) {
            Ok(0) => return Err("the server closed a connection".into()),
            Ok(n) => {
                buf.extend_from_slice(&scratch[..n]);
                total += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(total),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading from the server failed: {e}")),
        }
    }
}

/// Writes from `out[*off..]` until done or `WouldBlock`; compacts `out`
/// when everything is written.
pub fn write_some(s: &mut TcpStream, out: &mut Vec<u8>, off: &mut usize) -> Result<(), String> {
    while *off < out.len() {
        match s.write(&out[*off..]) {
            Ok(0) => return Err("the server stopped accepting data".into()),
            Ok(n) => *off += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("writing to the server failed: {e}")),
        }
    }
    out.clear();
    *off = 0;
    Ok(())
}

/// p50 and p99 of `h` in microseconds, and the count.
pub fn quantiles(h: &Histogram<u64>) -> serde_json::Value {
    serde_json::json!({
        "p50_us": h.value_at_quantile(0.50),
        "p99_us": h.value_at_quantile(0.99),
        "max_us": h.max(),
        "samples": h.len(),
    })
}
