//! `loadgen echo`: messages of `size` bytes, `depth` in flight per
//! connection, each checked byte for byte when it comes back.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Poll};

use crate::Opts;
use crate::conns::{self, Clock, Phase};

struct Conn {
    stream: TcpStream,
    out: Vec<u8>,
    off: usize,
    inbuf: Vec<u8>,
    /// When each message in flight was queued, oldest first.
    sent_at: VecDeque<Instant>,
    next_send: u64,
    next_recv: u64,
}

/// Byte `i` of message `seq`: differs between messages and positions, so a
/// server that mixes up or drops bytes is caught.
fn byte(seq: u64, i: usize) -> u8 {
    (seq.wrapping_mul(31).wrapping_add(i as u64)) as u8
}

fn push_message(c: &mut Conn, size: usize, now: Instant) {
    let seq = c.next_send;
    c.next_send += 1;
    c.out.extend((0..size).map(|i| byte(seq, i)));
    c.sent_at.push_back(now);
}

pub fn run(o: &Opts) -> Result<String, String> {
    let addr = o.addr()?;
    let n = o.num("conns", 1)? as usize;
    let size = o.num("size", 64)?.max(1) as usize;
    let depth = o.num("depth", 1)?.max(1) as usize;
    let warmup = o.ms("warmup-ms", 500)?;
    let duration = o.ms("duration-ms", 2000)?;
    let stall = o.ms("stall-ms", 3000)?;
    let connect_deadline = o.ms("connect-ms", 30_000)?;

    let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let streams = conns::connect_all(&mut poll, addr, n, connect_deadline)?;
    crate::say(&format!("connected {n}"));

    let start = Instant::now();
    let mut conns: Vec<Conn> = streams
        .into_iter()
        .map(|stream| Conn {
            stream,
            out: Vec::with_capacity(size * depth),
            off: 0,
            inbuf: Vec::new(),
            sent_at: VecDeque::with_capacity(depth),
            next_send: 0,
            next_recv: 0,
        })
        .collect();
    for c in conns.iter_mut() {
        for _ in 0..depth {
            push_message(c, size, start);
        }
        conns::write_some(&mut c.stream, &mut c.out, &mut c.off)?;
    }

    let mut clock = Clock::start(warmup, duration);
    let mut hist = conns::histogram();
    let mut done: u64 = 0;
    let mut last_progress = Instant::now();
    let mut events = Events::with_capacity(4096);
    let mut scratch = vec![0u8; 64 * 1024];
    while clock.phase != Phase::Over {
        let now = Instant::now();
        let wait = clock.timeout(now).min(Duration::from_millis(100));
        poll.poll(&mut events, Some(wait))
            .map_err(|e| format!("poll: {e}"))?;
        let now = Instant::now();
        for ev in events.iter() {
            let c = &mut conns[ev.token().0];
            if ev.is_readable() {
                conns::read_all(&mut c.stream, &mut scratch, &mut c.inbuf)
                    .map_err(|e| format!("{e} after {done} echoes in this window"))?;
                let mut at = 0;
                while c.inbuf.len() - at >= size {
                    let seq = c.next_recv;
                    let msg = &c.inbuf[at..at + size];
                    if let Some(i) = (0..size).find(|&i| msg[i] != byte(seq, i)) {
                        return Err(format!(
                            "message {seq} came back wrong at byte {i} (0x{:02x}, expected 0x{:02x})",
                            msg[i],
                            byte(seq, i)
                        ));
                    }
                    at += size;
                    c.next_recv += 1;
                    let sent = c.sent_at.pop_front().expect("one per message");
                    if clock.phase == Phase::Measure {
                        conns::record(&mut hist, now - sent);
                        done += 1;
                    }
                    push_message(c, size, now);
                    last_progress = now;
                }
                c.inbuf.drain(..at);
                if c.inbuf.len() > size * depth {
                    return Err("the server sent more than was sent to it".into());
                }
            }
            conns::write_some(&mut c.stream, &mut c.out, &mut c.off)?;
        }
        if now - last_progress > stall {
            return Err(format!(
                "stalled: no echo for {stall:?} ({done} echoes in this window)"
            ));
        }
        if clock.tick(now) && clock.phase == Phase::Measure {
            hist.reset();
            done = 0;
        }
    }
    let secs = clock.elapsed().as_secs_f64();
    let rps = done as f64 / secs;
    let mut json = serde_json::json!({
        "mode": "echo",
        "conns": n,
        "size": size,
        "depth": depth,
        "requests": done,
        "elapsed_s": secs,
        "rps": rps,
        "mb_per_s": rps * size as f64 / 1e6,
    });
    json.as_object_mut()
        .expect("object")
        .extend(conns::quantiles(&hist).as_object().expect("object").clone());
    Ok(json.to_string())
}
