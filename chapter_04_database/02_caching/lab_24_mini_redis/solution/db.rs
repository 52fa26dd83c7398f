//! The key space: strings and lists, with expiry, and the commands on it.
//!
//! # Design
//!
//! One `HashMap` behind one `std::sync::Mutex`, shared by every connection
//! task (tokio's mini-redis does the same). A command holds the lock for a
//! few hash operations and never across an `.await`, so the lock is
//! uncontended in practice and much cheaper than an async one. Redis itself
//! is single-threaded for the same reason: the work per command is tiny
//! next to the system calls around it.
//!
//! Expiry is both lazy and active:
//! - **lazy**: every read looks at the key's deadline first, and a key
//!   past it is removed then and there, so no command ever sees it;
//! - **active**: a `BTreeSet` of `(deadline, key)` orders the keys that
//!   have one, and a background task sleeps until the earliest deadline,
//!   removes every key that is due, and sleeps again (woken early by a
//!   `Notify` when a sooner deadline is set). Without it a key written once
//!   and never read again would hold its memory forever (`DBSIZE` shows it).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::{Duration, Instant};

use crate::resp::reply;

#[derive(Debug)]
enum Value {
    Str(Bytes),
    List(VecDeque<Bytes>),
}

#[derive(Debug)]
struct Entry {
    value: Value,
    expires: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    keys: HashMap<Bytes, Entry>,
    /// Every key with a deadline, earliest first.
    expiries: BTreeSet<(Instant, Bytes)>,
}

impl State {
    /// The live entry at `key`, removing it first if it has expired.
    fn live(&mut self, key: &[u8], now: Instant) -> Option<&mut Entry> {
        let expired = matches!(self.keys.get(key), Some(e) if e.expires.is_some_and(|t| t <= now));
        if expired {
            self.remove(key);
        }
        self.keys.get_mut(key)
    }

    fn remove(&mut self, key: &[u8]) -> bool {
        match self.keys.remove(key) {
            Some(e) => {
                if let Some(t) = e.expires {
                    self.expiries.remove(&(t, Bytes::copy_from_slice(key)));
                }
                true
            }
            None => false,
        }
    }

    fn set_expiry(&mut self, key: &Bytes, at: Option<Instant>) {
        if let Some(e) = self.keys.get_mut(key) {
            if let Some(old) = e.expires.take() {
                self.expiries.remove(&(old, key.clone()));
            }
            e.expires = at;
            if let Some(t) = at {
                self.expiries.insert((t, key.clone()));
            }
        }
    }

    /// Removes every key due by `now`; returns the next deadline.
    fn purge(&mut self, now: Instant) -> Option<Instant> {
        while let Some((t, key)) = self.expiries.first().cloned() {
            if t > now {
                return Some(t);
            }
            self.expiries.pop_first();
            self.keys.remove(&key);
        }
        None
    }
}

/// The shared key space; cloning it is cheap.
#[derive(Debug, Clone)]
pub struct Db {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the purge task when a sooner deadline is set.
    sooner: Notify,
}

/// What a command did, for the caller: replicas refuse writes, and a
/// master would propagate them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
}

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
const NOT_INT: &str = "ERR value is not an integer or out of range";

impl Db {
    /// An empty key space, and its purge task on the current runtime.
    pub fn new() -> Db {
        let db = Db {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                sooner: Notify::new(),
            }),
        };
        tokio::spawn(purge_task(Arc::downgrade(&db.shared)));
        db
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Empties the key space (a replica about to take a master's data).
    pub fn flush(&self) {
        let mut s = self.state();
        s.keys.clear();
        s.expiries.clear();
    }

    /// Whether `name` (upper case) changes the key space.
    pub fn kind(name: &[u8]) -> Option<Kind> {
        Some(match name {
            b"GET" | b"EXISTS" | b"TTL" | b"PTTL" | b"KEYS" | b"DBSIZE" | b"LRANGE" | b"LLEN" => {
                Kind::Read
            }
            b"SET" | b"DEL" | b"INCR" | b"EXPIRE" | b"PEXPIRE" | b"EXPIREAT" | b"PEXPIREAT"
            | b"LPUSH" | b"RPUSH" => Kind::Write,
            _ => return None,
        })
    }

    /// Runs a key-space command (`name` upper case, `args` after it) and
    /// appends its reply to `out`. The caller has checked `kind(name)`.
    pub fn execute(&self, name: &[u8], args: &[Bytes], out: &mut Vec<u8>) {
        let now = Instant::now();
        let r = match name {
            b"GET" => self.get(args, now, out),
            b"SET" => self.set(args, now, out),
            b"DEL" => {
                let mut s = self.state();
                let n = args.iter().filter(|k| s.remove(k)).count();
                {
                    reply::int(out, n as i64);
                    Ok(())
                }
            }
            b"EXISTS" => {
                let mut s = self.state();
                // Like Redis: a key named twice counts twice.
                let n = args.iter().filter(|k| s.live(k, now).is_some()).count();
                {
                    reply::int(out, n as i64);
                    Ok(())
                }
            }
            b"INCR" => self.incr(&args[0], now, out),
            b"EXPIRE" | b"PEXPIRE" | b"EXPIREAT" | b"PEXPIREAT" => {
                self.expire(name, args, now, out)
            }
            b"TTL" | b"PTTL" => {
                let mut s = self.state();
                let n = match s.live(&args[0], now) {
                    None => -2,
                    Some(Entry { expires: None, .. }) => -1,
                    Some(Entry {
                        expires: Some(t), ..
                    }) => {
                        let left = t.saturating_duration_since(now);
                        // Rounded to the nearest unit, as Redis does.
                        if name == b"TTL" {
                            ((left.as_millis() + 500) / 1000) as i64
                        } else {
                            left.as_millis() as i64
                        }
                    }
                };
                {
                    reply::int(out, n);
                    Ok(())
                }
            }
            b"KEYS" => {
                let mut s = self.state();
                s.purge(now);
                let keys: Vec<&Bytes> = s.keys.keys().filter(|k| glob(&args[0], k)).collect();
                reply::array_len(out, keys.len());
                for k in keys {
                    reply::bulk(out, k);
                }
                Ok(())
            }
            b"DBSIZE" => {
                reply::int(out, self.state().keys.len() as i64);
                Ok(())
            }
            b"LPUSH" | b"RPUSH" => self.push(name == b"LPUSH", args, now, out),
            b"LLEN" => {
                let mut s = self.state();
                match s.live(&args[0], now).map(|e| &e.value) {
                    None => {
                        reply::int(out, 0);
                        Ok(())
                    }
                    Some(Value::List(l)) => {
                        reply::int(out, l.len() as i64);
                        Ok(())
                    }
                    Some(_) => Err(WRONGTYPE.to_string()),
                }
            }
            b"LRANGE" => self.lrange(args, now, out),
            _ => unreachable!("execute is called only for commands kind() knows"),
        };
        if let Err(e) = r {
            reply::error(out, &e);
        }
    }

    fn get(&self, args: &[Bytes], now: Instant, out: &mut Vec<u8>) -> Result<(), String> {
        let mut s = self.state();
        match s.live(&args[0], now).map(|e| &e.value) {
            None => reply::nil(out),
            Some(Value::Str(v)) => reply::bulk(out, v),
            Some(_) => return Err(WRONGTYPE.to_string()),
        }
        Ok(())
    }

    /// `SET key value [NX|XX] [EX seconds|PX milliseconds]`.
    fn set(&self, args: &[Bytes], now: Instant, out: &mut Vec<u8>) -> Result<(), String> {
        let (key, value) = (&args[0], &args[1]);
        let (mut nx, mut xx, mut ttl) = (false, false, None);
        let mut opts = args[2..].iter();
        while let Some(opt) = opts.next() {
            match opt.to_ascii_uppercase().as_slice() {
                b"NX" if !xx => nx = true,
                b"XX" if !nx => xx = true,
                unit @ (b"EX" | b"PX" | b"EXAT" | b"PXAT") if ttl.is_none() => {
                    let n = parse_int(opts.next().ok_or("ERR syntax error")?).ok_or(NOT_INT)?;
                    let bad = "ERR invalid expire time in 'set' command";
                    if n <= 0 {
                        return Err(bad.into());
                    }
                    // A master propagates `SET .. EX` as an absolute `PXAT`,
                    // so that its replicas expire the key at the same moment.
                    let d = match unit {
                        b"EX" | b"PX" => duration(n, unit == b"EX"),
                        _ => until(n, unit == b"EXAT"),
                    };
                    ttl = Some(d.ok_or(bad)?);
                }
                _ => return Err("ERR syntax error".into()),
            }
        }
        let mut s = self.state();
        let exists = s.live(key, now).is_some();
        if (nx && exists) || (xx && !exists) {
            reply::nil(out);
            return Ok(());
        }
        // A plain SET replaces the value and clears any old TTL.
        s.remove(key);
        // Copied out of the read buffer: the parser's `Bytes` share the
        // connection's 16 KiB buffer, and a 3-byte value kept in the map
        // would keep all of it alive.
        let key = Bytes::copy_from_slice(key);
        s.keys.insert(
            key.clone(),
            Entry {
                value: Value::Str(Bytes::copy_from_slice(value)),
                expires: None,
            },
        );
        let at = ttl.map(|d| now + d);
        s.set_expiry(&key, at);
        let sooner = at.is_some_and(|t| s.expiries.first().is_some_and(|(first, _)| *first == t));
        drop(s);
        if sooner {
            self.shared.sooner.notify_one();
        }
        reply::simple(out, "OK");
        Ok(())
    }

    fn incr(&self, key: &Bytes, now: Instant, out: &mut Vec<u8>) -> Result<(), String> {
        let mut s = self.state();
        let n = match s.live(key, now) {
            None => 1,
            Some(Entry {
                value: Value::Str(v),
                ..
            }) => {
                let n = parse_int(v).ok_or(NOT_INT)?;
                let n = n
                    .checked_add(1)
                    .ok_or("ERR increment or decrement would overflow")?;
                // In place: INCR keeps the key's TTL.
                *v = Bytes::from(n.to_string());
                reply::int(out, n);
                return Ok(());
            }
            Some(_) => return Err(WRONGTYPE.to_string()),
        };
        s.keys.insert(
            Bytes::copy_from_slice(key),
            Entry {
                value: Value::Str(Bytes::from(n.to_string())),
                expires: None,
            },
        );
        reply::int(out, n);
        Ok(())
    }

    fn expire(
        &self,
        name: &[u8],
        args: &[Bytes],
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        let n = parse_int(&args[1]).ok_or(NOT_INT)?;
        // The absolute forms: a deadline already passed is a delete.
        let (n, secs) = match name {
            b"EXPIREAT" | b"PEXPIREAT" => match until(n, name == b"EXPIREAT") {
                Some(d) => (d.as_millis() as i64, false),
                None => (0, false),
            },
            _ => (n, name == b"EXPIRE"),
        };
        let mut s = self.state();
        if s.live(&args[0], now).is_none() {
            reply::int(out, 0);
            return Ok(());
        }
        if n <= 0 {
            // A deadline in the past deletes the key, as in Redis.
            s.remove(&args[0]);
        } else {
            let d = duration(n, secs).ok_or("ERR invalid expire time in 'expire' command")?;
            s.set_expiry(&args[0], Some(now + d));
            drop(s);
            self.shared.sooner.notify_one();
        }
        reply::int(out, 1);
        Ok(())
    }

    fn push(
        &self,
        left: bool,
        args: &[Bytes],
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        let mut s = self.state();
        if s.live(&args[0], now).is_none() {
            s.keys.insert(
                Bytes::copy_from_slice(&args[0]),
                Entry {
                    value: Value::List(VecDeque::new()),
                    expires: None,
                },
            );
        }
        let Some(Entry {
            value: Value::List(list),
            ..
        }) = s.keys.get_mut(&args[0])
        else {
            return Err(WRONGTYPE.to_string());
        };
        for v in &args[1..] {
            if left {
                list.push_front(Bytes::copy_from_slice(v));
            } else {
                list.push_back(Bytes::copy_from_slice(v));
            }
        }
        reply::int(out, list.len() as i64);
        Ok(())
    }

    fn lrange(&self, args: &[Bytes], now: Instant, out: &mut Vec<u8>) -> Result<(), String> {
        let (start, stop) = match (parse_int(&args[1]), parse_int(&args[2])) {
            (Some(a), Some(b)) => (a, b),
            _ => return Err(NOT_INT.to_string()),
        };
        let mut s = self.state();
        let list = match s.live(&args[0], now).map(|e| &e.value) {
            None => {
                reply::array_len(out, 0);
                return Ok(());
            }
            Some(Value::List(l)) => l,
            Some(_) => return Err(WRONGTYPE.to_string()),
        };
        // Negative indexes count from the end; out of range is clamped.
        let len = list.len() as i64;
        let start = if start < 0 {
            (len + start).max(0)
        } else {
            start
        };
        let stop = if stop < 0 {
            len + stop
        } else {
            stop.min(len - 1)
        };
        if start > stop || start >= len {
            reply::array_len(out, 0);
            return Ok(());
        }
        reply::array_len(out, (stop - start + 1) as usize);
        for v in list.range(start as usize..=stop as usize) {
            reply::bulk(out, v);
        }
        Ok(())
    }
}

/// Sleeps until the earliest deadline, removes what is due, again; ends
/// when the key space is dropped.
async fn purge_task(shared: std::sync::Weak<Shared>) {
    loop {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let next = shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .purge(Instant::now());
        let sooner = shared.sooner.notified();
        match next {
            Some(t) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(t) => {}
                    _ = sooner => {}
                }
            }
            None => sooner.await,
        }
    }
}

fn parse_int(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// `n` seconds or milliseconds, if that fits a deadline.
fn duration(n: i64, secs: bool) -> Option<Duration> {
    let ms = if secs { n.checked_mul(1000)? } else { n };
    // About 3 years at most: far enough for any TTL, and `Instant + d`
    // cannot overflow.
    (ms <= 100_000_000_000).then(|| Duration::from_millis(ms as u64))
}

/// The time from now until the Unix time `n` (seconds or milliseconds);
/// `None` if it has passed.
fn until(n: i64, secs: bool) -> Option<Duration> {
    let at_ms = if secs { n.checked_mul(1000)? } else { n };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_millis() as i64;
    let left = at_ms.checked_sub(now_ms)?;
    if left <= 0 {
        None
    } else {
        duration(left, false)
    }
}

/// Redis's glob: `*`, `?`, `[abc]`, `[a-z]`, `[^a]`, and `\` to escape.
pub fn glob(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    // Where to resume after the last `*`: its pattern position and the
    // string position it has swallowed up to.
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, i));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    i += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class(pattern, p, s[i])
                        && matched
                    {
                        p = next;
                        i += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() && pattern[p + 1] == s[i] => {
                    p += 2;
                    i += 1;
                    continue;
                }
                // An escaped byte that does not match: no match here.
                b'\\' if p + 1 < pattern.len() => {}
                c if c == s[i] => {
                    p += 1;
                    i += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, si)) => {
                star = Some((sp, si + 1));
                p = sp + 1;
                i = si + 1;
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at `pattern[p] == b'['`:
/// `(matched, index after the class)`, or `None` if it is not closed.
fn class(pattern: &[u8], p: usize, c: u8) -> Option<(bool, usize)> {
    let mut j = p + 1;
    let negate = pattern.get(j) == Some(&b'^');
    if negate {
        j += 1;
    }
    let mut matched = false;
    while j < pattern.len() && pattern[j] != b']' {
        if pattern[j] == b'\\' && j + 1 < pattern.len() {
            matched |= pattern[j + 1] == c;
            j += 2;
        } else if j + 2 < pattern.len() && pattern[j + 1] == b'-' && pattern[j + 2] != b']' {
            let (lo, hi) = (
                pattern[j].min(pattern[j + 2]),
                pattern[j].max(pattern[j + 2]),
            );
            matched |= (lo..=hi).contains(&c);
            j += 3;
        } else {
            matched |= pattern[j] == c;
            j += 1;
        }
    }
    (j < pattern.len()).then_some((matched != negate, j + 1))
}
