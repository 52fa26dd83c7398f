//! `loadgen chat`: a broadcast server under load. Senders send 64-byte
//! lines; every receiver must get each one; a line's fan-out latency is
//! the time from its send until the *last* receiver has it.
//!
//! Joining a chat has no acknowledgement, so before timing the first
//! sender repeats a probe line until every other connection has seen one:
//! then everyone is registered. Probes still in flight are ignored.
//!
//! `--rate 0` is closed-loop: each sender keeps `--window` lines in flight
//! (sent, not yet delivered to every receiver), which finds the saturation
//! throughput without overrunning the server's per-client output bound.
//! `--rate R` offers R lines per second in all, paced by the clock, for
//! latency at a load the server can carry; if more than `--backlog` lines
//! pile up undelivered the server is not keeping up and the run fails.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use mio::{Events, Poll};

use crate::Opts;
use crate::conns::{self, Clock, Phase};

const LINE: usize = 64;

/// `<kind><sender, 4 digits> <seq, 12 digits> ....\n`, 64 bytes, formatted
/// in place: the sender's hot path allocates nothing.
fn line(kind: u8, sender: usize, seq: u64) -> [u8; LINE] {
    use std::io::Write;
    let mut l = [b'.'; LINE];
    let mut head = &mut l[..LINE - 1];
    // 18 bytes always fit in 63.
    let _ = write!(head, "{}{:04} {:012} ", kind as char, sender, seq);
    l[LINE - 1] = b'\n';
    l
}

/// (kind, sender, seq) of a received line.
fn parse(l: &[u8]) -> Option<(u8, usize, u64)> {
    let text = std::str::from_utf8(&l[1..18]).ok()?;
    let sender = text[..4].parse().ok()?;
    let seq = text[5..17].parse().ok()?;
    Some((l[0], sender, seq))
}

struct Sender {
    /// seq of `outstanding[0]`.
    base: u64,
    next: u64,
    /// Per line in flight: when it was sent and how many receivers lack it.
    outstanding: VecDeque<(Instant, usize)>,
}

pub fn run(o: &Opts) -> Result<String, String> {
    let addr = o.addr()?;
    let receivers = o.num("receivers", 10)?.max(1) as usize;
    let senders = o.num("senders", 1)?.max(1) as usize;
    let rate = o.num("rate", 0)?;
    let window = o.num("window", 256)?.max(1) as usize;
    let backlog = o.num("backlog", 100_000)? as usize;
    let warmup = o.ms("warmup-ms", 500)?;
    let duration = o.ms("duration-ms", 2000)?;
    let stall = o.ms("stall-ms", 3000)?;
    let connect_deadline = o.ms("connect-ms", 30_000)?;

    let total = receivers + senders;
    let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let mut streams = conns::connect_all(&mut poll, addr, total, connect_deadline)?;
    crate::say(&format!("connected {total}"));
    let mut inbufs: Vec<Vec<u8>> = vec![Vec::new(); total];
    let mut outs: Vec<(Vec<u8>, usize)> = vec![(Vec::new(), 0); total];
    let mut scratch = vec![0u8; 64 * 1024];
    let mut events = Events::with_capacity(4096);

    // Join: probe until every other connection has seen a probe.
    let mut seen_probe = vec![false; total];
    seen_probe[receivers] = true; // the prober itself
    let join_deadline = Instant::now() + connect_deadline;
    let mut probes = 0u64;
    let mut next_probe = Instant::now();
    while seen_probe.iter().any(|s| !s) {
        let now = Instant::now();
        if now > join_deadline {
            let missing = seen_probe.iter().filter(|s| !**s).count();
            return Err(format!(
                "{missing} of {total} clients never received a line: not registered?"
            ));
        }
        if now >= next_probe {
            let (out, off) = &mut outs[receivers];
            out.extend_from_slice(&line(b'P', 0, probes));
            probes += 1;
            conns::write_some(&mut streams[receivers], out, off)?;
            next_probe = now + Duration::from_millis(20);
        }
        poll.poll(&mut events, Some(Duration::from_millis(5)))
            .map_err(|e| format!("poll: {e}"))?;
        for ev in events.iter() {
            let i = ev.token().0;
            if ev.is_readable() {
                conns::read_all(&mut streams[i], &mut scratch, &mut inbufs[i])?;
                if !inbufs[i].is_empty() {
                    seen_probe[i] = true;
                }
                // Keep only a partial line's tail: what came is a probe.
                let whole = inbufs[i].len() / LINE * LINE;
                inbufs[i].drain(..whole);
            }
            let (out, off) = &mut outs[i];
            conns::write_some(&mut streams[i], out, off)?;
        }
    }

    let mut state: Vec<Sender> = (0..senders)
        .map(|_| Sender {
            base: 0,
            next: 0,
            outstanding: VecDeque::new(),
        })
        .collect();
    let start = Instant::now();
    let per_sender = rate as f64 / senders as f64;
    let mut clock = Clock::start(warmup, duration);
    let mut hist = conns::histogram();
    let mut deliveries: u64 = 0;
    let mut lines_done: u64 = 0;
    let mut last_progress = Instant::now();
    while clock.phase != Phase::Over {
        let now = Instant::now();
        // Send what is due.
        for (s, st) in state.iter_mut().enumerate() {
            let due = if rate == 0 {
                window.saturating_sub(st.outstanding.len()) as u64
            } else {
                let target = (now.duration_since(start).as_secs_f64() * per_sender) as u64;
                target.saturating_sub(st.next)
            };
            if due == 0 {
                continue;
            }
            if st.outstanding.len() + due as usize > backlog {
                return Err(format!(
                    "the server is not keeping up: {} lines of sender {s} still undelivered at {rate} lines/s",
                    st.outstanding.len()
                ));
            }
            let i = receivers + s;
            let (out, off) = &mut outs[i];
            for _ in 0..due {
                out.extend_from_slice(&line(b'M', s, st.next));
                st.next += 1;
                st.outstanding.push_back((now, receivers));
            }
            conns::write_some(&mut streams[i], out, off)?;
        }
        let wait = if rate == 0 {
            clock.timeout(now).min(Duration::from_millis(100))
        } else {
            Duration::from_millis(1)
        };
        poll.poll(&mut events, Some(wait))
            .map_err(|e| format!("poll: {e}"))?;
        let now = Instant::now();
        for ev in events.iter() {
            let i = ev.token().0;
            if ev.is_readable() {
                conns::read_all(&mut streams[i], &mut scratch, &mut inbufs[i])
                    .map_err(|e| format!("{e} ({deliveries} deliveries in this window)"))?;
                let whole = inbufs[i].len() / LINE * LINE;
                if i < receivers {
                    for l in inbufs[i][..whole].chunks(LINE) {
                        let Some((kind, s, seq)) = parse(l) else {
                            return Err(format!(
                                "receiver {i} got a garbled line: {:?}",
                                String::from_utf8_lossy(l)
                            ));
                        };
                        if kind != b'M' {
                            continue;
                        }
                        let st = state.get_mut(s).ok_or("a line from an unknown sender")?;
                        let Some(k) = seq.checked_sub(st.base) else {
                            return Err(format!("receiver {i} got line {seq} of sender {s} twice"));
                        };
                        let Some(entry) = st.outstanding.get_mut(k as usize) else {
                            return Err(format!(
                                "receiver {i} got line {seq} of sender {s} twice or before it was sent"
                            ));
                        };
                        entry.1 -= 1;
                        if clock.phase == Phase::Measure {
                            deliveries += 1;
                            if entry.1 == 0 {
                                conns::record(&mut hist, now - entry.0);
                                lines_done += 1;
                            }
                        }
                        last_progress = now;
                        while st.outstanding.front().is_some_and(|e| e.1 == 0) {
                            st.outstanding.pop_front();
                            st.base += 1;
                        }
                    }
                }
                inbufs[i].drain(..whole);
            }
            let (out, off) = &mut outs[i];
            conns::write_some(&mut streams[i], out, off)?;
        }
        if now - last_progress > stall {
            return Err(format!("stalled: no line delivered for {stall:?}"));
        }
        if clock.tick(now) && clock.phase == Phase::Measure {
            hist.reset();
            deliveries = 0;
            lines_done = 0;
        }
    }
    let secs = clock.elapsed().as_secs_f64();
    let mut json = serde_json::json!({
        "mode": "chat",
        "receivers": receivers,
        "senders": senders,
        "offered_rate": rate,
        "deliveries": deliveries,
        "lines": lines_done,
        "elapsed_s": secs,
        "deliveries_per_s": deliveries as f64 / secs,
        "lines_per_s": lines_done as f64 / secs,
    });
    json.as_object_mut()
        .expect("object")
        .extend(conns::quantiles(&hist).as_object().expect("object").clone());
    Ok(json.to_string())
}
