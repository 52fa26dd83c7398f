//! A durable, at-least-once message queue with two backends behind one trait.
//!
//! # The contract ([`Queue`])
//!
//! `publish` stores a message durably and returns its id. `consume` hands
//! out one message that is *ready* and makes it invisible for
//! `visibility_timeout`; the consumer must `ack` it within that time, or the
//! message becomes ready again and is delivered again (to this consumer or
//! another). A message delivered `max_deliveries` times and never acked is
//! not delivered once more: it moves to the dead-letter queue, where an
//! operator can look at it ([`Queue::dead_letters`]). That is
//! *at-least-once*: a consumer that dies after doing the work but before its
//! ack makes the work happen twice, so consumers must be idempotent.
//!
//! # Backend 1: [`DiskQueue`], an append-only log
//!
//! Every change is a record appended to one file:
//!
//! ```text
//! record  = len: u32 LE | crc32: u32 LE | body (len bytes)
//! body    = kind: u8 | id: u64 LE | rest
//! kind 1  publish       rest = payload
//! kind 2  deliver       rest = at_ms: u64 LE (the clock when delivered)
//! kind 3  ack           rest = (nothing)
//! kind 4  dead-letter   rest = (nothing)
//! ```
//!
//! The state (which messages are live, how often each was delivered, when
//! each becomes visible again, the dead letters) lives in memory and is
//! rebuilt by replaying the log on [`DiskQueue::open`]. The CRC covers the
//! whole body, kind and id included, so a torn or garbled record is
//! detected and replay stops before it: a crash can tear only the last
//! write, so everything after the first bad record is treated as never
//! written, and the file is truncated there so that new records follow the
//! last good one.
//!
//! Publish and ack are `fsync`ed (`sync_data`) before they return: a
//! message the caller was told is stored survives a power cut, and an ack
//! survives too (a lost ack would only mean a redelivery, but an ack the
//! consumer was told of should hold). Deliver and dead-letter records are
//! written but not synced: after a SIGKILL they are in the page cache and
//! survive; after a power cut losing one only means a lower delivery count,
//! i.e. one more delivery, which at-least-once allows. See the README for
//! what each fsync costs and group commit, the batching that real logs use.
//!
//! # Backend 2: [`RedisQueue`], on Redis Streams
//!
//! The stream is the log; a consumer group tracks delivery. `XADD` appends,
//! `XREADGROUP ... >` hands out never-delivered entries and records each in
//! the group's pending entries list (PEL) with its consumer, delivery count
//! and idle time; `XACK` removes it from the PEL. Redelivery is
//! `XAUTOCLAIM` with `min-idle-time` = the visibility timeout: an entry
//! pending longer than that is claimed by the caller, and its delivery
//! count goes up. So two processes in one group share the work, and a
//! consumer that dies holding messages loses them to the others after the
//! timeout. Dead letters go to a second stream, `<name>:dead`.
//!
//! The visibility clock there is Redis's own (the PEL idle time), which is
//! why that backend takes no [`Clock`].

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::Value;
use redis::aio::MultiplexedConnection;

/// How a queue treats messages that are not acked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// How long a delivered message stays invisible waiting for its ack.
    pub visibility_timeout: Duration,
    /// How many times a message is delivered at most; when the last of
    /// those deliveries times out, the message is dead-lettered.
    pub max_deliveries: u32,
}

impl Config {
    /// A config; panics if `max_deliveries` is 0 (nothing could ever be delivered).
    pub fn new(visibility_timeout: Duration, max_deliveries: u32) -> Config {
        assert!(max_deliveries > 0, "max_deliveries must be at least 1");
        Config {
            visibility_timeout,
            max_deliveries,
        }
    }
}

/// The id of a message, as `publish` returned it: opaque, unique within a
/// queue, never reused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(String);

impl MessageId {
    /// The id as text (a number for [`DiskQueue`], a stream id such as
    /// `1700000000000-0` for [`RedisQueue`]).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One message as `consume` hands it out (or as `dead_letters` lists it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: MessageId,
    pub payload: Vec<u8>,
    /// How many times this message has been delivered, this time included
    /// (1 the first time). For a dead letter: how many times it was
    /// delivered before it was dead-lettered (`max_deliveries`).
    pub deliveries: u32,
}

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("i/o error on the log: {0}")]
    Io(#[from] io::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply from Redis: {0}")]
    Protocol(String),
}

/// The queue, whatever stores it.
pub trait Queue: Send + Sync {
    /// Stores `payload` durably; when this returns `Ok`, the message
    /// survives a crash of the process (and, on disk, of the machine).
    fn publish(&self, payload: &[u8])
    -> impl Future<Output = Result<MessageId, QueueError>> + Send;

    /// Delivers one ready message, or `Ok(None)` when none is ready now
    /// (it does not wait). A message is ready when it was never delivered,
    /// or when its last delivery was `visibility_timeout` ago or more and it
    /// was not acked. Never-delivered messages come in publish order. A
    /// ready message already delivered `max_deliveries` times is moved to
    /// the dead-letter queue instead, and `consume` looks further.
    fn consume(&self) -> impl Future<Output = Result<Option<Delivery>, QueueError>> + Send;

    /// Acknowledges a delivered message: it is never delivered again.
    /// `Ok(true)` if the message was delivered and not yet acked or
    /// dead-lettered (also after its visibility timeout passed); otherwise
    /// `Ok(false)`, and nothing changes.
    fn ack(&self, id: &MessageId) -> impl Future<Output = Result<bool, QueueError>> + Send;

    /// The dead-lettered messages, in the order they were dead-lettered.
    fn dead_letters(&self) -> impl Future<Output = Result<Vec<Delivery>, QueueError>> + Send;
}

// ---------------------------------------------------------------------------
// Time.

/// Where [`DiskQueue`] reads the time: milliseconds on some fixed scale
/// (the Unix epoch for [`SystemClock`]). Tests pass a clock they move by
/// hand, so a visibility timeout is tested exactly and without sleeping.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
}

/// The real time: milliseconds since the Unix epoch. Wall-clock time, not
/// `Instant`, because delivery times are written to the log and must mean
/// the same after the process restarts.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

// ---------------------------------------------------------------------------
// CRC-32 (IEEE 802.3, the one zlib, gzip and PNG use), bit by bit.

/// CRC-32 of `bytes`: reflected polynomial 0xEDB88320, initial value and
/// final xor 0xFFFFFFFF. `crc32(b"123456789") == 0xCBF43926`.
///
/// Bitwise is about 8 times slower than a table, and still far cheaper
/// than the fsync that follows every record.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            // Shift right; where a 1 falls off, xor in the polynomial.
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

// ---------------------------------------------------------------------------
// Backend 1: the log on disk.

const PUBLISH: u8 = 1;
const DELIVER: u8 = 2;
const ACK: u8 = 3;
const DEAD: u8 = 4;

/// Bytes before the body: length and CRC.
const HEADER: usize = 8;
/// Bytes of every body before its `rest`: kind and id.
const BODY_MIN: usize = 9;

/// A queue in one append-only file; see the module docs.
pub struct DiskQueue {
    config: Config,
    clock: Arc<dyn Clock>,
    // One lock around file and state: a record and the state change it
    // stands for happen together, in the same order for both.
    inner: Mutex<Disk>,
}

struct Disk {
    file: File,
    /// Bytes of whole, good records in the file: where the next one goes.
    len: u64,
    /// The next id to hand out: one more than the highest ever published,
    /// acked ones included, so an id is never reused.
    next_id: u64,
    /// Live messages (published, not acked, not dead), by id.
    live: BTreeMap<u64, Live>,
    dead: Vec<Delivery>,
}

struct Live {
    payload: Vec<u8>,
    deliveries: u32,
    /// Clock time from which it is ready (0: never delivered).
    visible_at: u64,
}

/// One decoded record.
struct Record<'a> {
    kind: u8,
    id: u64,
    rest: &'a [u8],
}

/// Splits the next record off `buf`: `None` if it is short (torn) or its
/// CRC does not match (garbled).
fn next_record(buf: &[u8]) -> Option<(Record<'_>, usize)> {
    let header = buf.get(..HEADER)?;
    let len = u32::from_le_bytes(header[0..4].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().unwrap());
    // A garbled length may be huge: `get` checks it against what is there
    // instead of allocating it.
    let body = buf.get(HEADER..HEADER.checked_add(len)?)?;
    if len < BODY_MIN || crc32(body) != crc {
        return None;
    }
    let record = Record {
        kind: body[0],
        id: u64::from_le_bytes(body[1..9].try_into().unwrap()),
        rest: &body[BODY_MIN..],
    };
    Some((record, HEADER + len))
}

fn encode(kind: u8, id: u64, rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(BODY_MIN + rest.len());
    body.push(kind);
    body.extend_from_slice(&id.to_le_bytes());
    body.extend_from_slice(rest);
    let mut record = Vec::with_capacity(HEADER + body.len());
    record.extend_from_slice(&(body.len() as u32).to_le_bytes());
    record.extend_from_slice(&crc32(&body).to_le_bytes());
    record.extend_from_slice(&body);
    record
}

fn bad_data(msg: String) -> QueueError {
    QueueError::Io(io::Error::new(io::ErrorKind::InvalidData, msg))
}

impl DiskQueue {
    /// Opens the log at `path`, creating it if missing, and replays it. A
    /// torn or garbled tail is cut off (the file is truncated after the
    /// last good record). `clock` gives the time for visibility timeouts.
    pub fn open(
        path: impl AsRef<Path>,
        config: Config,
        clock: Arc<dyn Clock>,
    ) -> Result<DiskQueue, QueueError> {
        let path = path.as_ref();
        let existed = path.exists();
        // Append mode: every write goes to the end, whatever the offset.
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        if !existed {
            // A new file's name lives in its directory: sync that too, or a
            // power cut can lose the whole file along with what was synced.
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir)?.sync_all()?;
            }
        }
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;

        let mut disk = Disk {
            file,
            len: 0,
            next_id: 1,
            live: BTreeMap::new(),
            dead: Vec::new(),
        };
        let mut at = 0;
        while let Some((record, size)) = next_record(&buf[at..]) {
            disk.apply(&record, &config)?;
            at += size;
        }
        disk.len = at as u64;
        if disk.len < buf.len() as u64 {
            // Cut the torn tail: a record appended after garbage would be
            // behind the point where the next replay stops, i.e. lost.
            disk.file.set_len(disk.len)?;
            disk.file.sync_data()?;
        }
        Ok(DiskQueue {
            config,
            clock,
            inner: Mutex::new(disk),
        })
    }
}

impl Disk {
    /// Replays one good record.
    fn apply(&mut self, r: &Record<'_>, config: &Config) -> Result<(), QueueError> {
        match r.kind {
            PUBLISH => {
                self.live.insert(
                    r.id,
                    Live {
                        payload: r.rest.to_vec(),
                        deliveries: 0,
                        visible_at: 0,
                    },
                );
                self.next_id = self.next_id.max(r.id + 1);
            }
            DELIVER => {
                let at: [u8; 8] = r
                    .rest
                    .try_into()
                    .map_err(|_| bad_data(format!("deliver record of {} has no time", r.id)))?;
                if let Some(m) = self.live.get_mut(&r.id) {
                    m.deliveries += 1;
                    m.visible_at =
                        u64::from_le_bytes(at) + config.visibility_timeout.as_millis() as u64;
                }
            }
            ACK => {
                self.live.remove(&r.id);
            }
            DEAD => {
                if let Some(m) = self.live.remove(&r.id) {
                    self.dead.push(Delivery {
                        id: MessageId(r.id.to_string()),
                        payload: m.payload,
                        deliveries: m.deliveries,
                    });
                }
            }
            // A good CRC with a kind we do not know: a newer program wrote
            // it, or a bug did. Refuse rather than guess.
            kind => return Err(bad_data(format!("unknown record kind {kind}"))),
        }
        Ok(())
    }

    /// Appends one record; with `sync`, waits until it is on the disk.
    fn append(&mut self, record: &[u8], sync: bool) -> Result<(), QueueError> {
        // One write for the whole record; if it fails half way, cut the
        // half record off so the next append does not land after it.
        if let Err(e) = self.file.write_all(record) {
            let _ = self.file.set_len(self.len);
            return Err(e.into());
        }
        if sync {
            // fdatasync: the data and the file size, not the timestamps.
            self.file.sync_data()?;
        }
        self.len += record.len() as u64;
        Ok(())
    }
}

impl DiskQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Disk> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn parse_disk_id(id: &MessageId) -> Option<u64> {
    id.0.parse().ok()
}

impl Queue for DiskQueue {
    async fn publish(&self, payload: &[u8]) -> Result<MessageId, QueueError> {
        // Blocking I/O inside an async fn: acceptable for a lab; a service
        // would use `spawn_blocking` or a writer thread (and group commit).
        let mut disk = self.lock();
        let id = disk.next_id;
        disk.append(&encode(PUBLISH, id, payload), true)?;
        // Memory changes only once the record is durable.
        disk.next_id += 1;
        disk.live.insert(
            id,
            Live {
                payload: payload.to_vec(),
                deliveries: 0,
                visible_at: 0,
            },
        );
        Ok(MessageId(id.to_string()))
    }

    async fn consume(&self) -> Result<Option<Delivery>, QueueError> {
        let now = self.clock.now_ms();
        let timeout = self.config.visibility_timeout.as_millis() as u64;
        let mut disk = self.lock();
        loop {
            // The oldest ready message. A linear scan: fine for a lab; a
            // real queue keeps a ready list and a timer wheel.
            let Some((&id, m)) = disk.live.iter().find(|(_, m)| m.visible_at <= now) else {
                return Ok(None);
            };
            if m.deliveries >= self.config.max_deliveries {
                // Delivered max_deliveries times already and timed out
                // again: dead-letter it and look further.
                disk.append(&encode(DEAD, id, &[]), false)?;
                let m = disk.live.remove(&id).expect("found above");
                disk.dead.push(Delivery {
                    id: MessageId(id.to_string()),
                    payload: m.payload,
                    deliveries: m.deliveries,
                });
                continue;
            }
            // Not synced: losing this record in a power cut costs one extra
            // delivery, never a message.
            disk.append(&encode(DELIVER, id, &now.to_le_bytes()), false)?;
            let m = disk.live.get_mut(&id).expect("found above");
            m.deliveries += 1;
            m.visible_at = now + timeout;
            return Ok(Some(Delivery {
                id: MessageId(id.to_string()),
                payload: m.payload.clone(),
                deliveries: m.deliveries,
            }));
        }
    }

    async fn ack(&self, id: &MessageId) -> Result<bool, QueueError> {
        let Some(n) = parse_disk_id(id) else {
            return Ok(false);
        };
        let mut disk = self.lock();
        // Only a delivered, live message can be acked; anything else is a
        // no-op that writes nothing.
        match disk.live.get(&n) {
            Some(m) if m.deliveries > 0 => {}
            _ => return Ok(false),
        }
        disk.append(&encode(ACK, n, &[]), true)?;
        disk.live.remove(&n);
        Ok(true)
    }

    async fn dead_letters(&self) -> Result<Vec<Delivery>, QueueError> {
        Ok(self.lock().dead.clone())
    }
}

// ---------------------------------------------------------------------------
// Backend 2: Redis Streams.

/// The consumer group every [`RedisQueue`] of one stream joins.
const GROUP: &str = "workers";

/// A queue on a Redis stream; see the module docs. Every process (or
/// handle) that consumes gives its own consumer name.
pub struct RedisQueue {
    conn: MultiplexedConnection,
    stream: String,
    dead: String,
    consumer: String,
    config: Config,
}

impl RedisQueue {
    /// Connects to `url` and uses the stream `name` (created if missing),
    /// the group `workers` on it, consumer `consumer`, and the stream
    /// `<name>:dead` for dead letters.
    pub async fn connect(
        url: &str,
        name: &str,
        consumer: &str,
        config: Config,
    ) -> Result<RedisQueue, QueueError> {
        let client = redis::Client::open(url)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        // Start at 0: a group created after messages were published still
        // sees them. MKSTREAM creates the stream if it does not exist.
        let created: Result<Value, _> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(name)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Ok(_) => {}
            // Another handle created it first: fine.
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(e.into()),
        }
        Ok(RedisQueue {
            conn,
            stream: name.to_string(),
            dead: format!("{name}:dead"),
            consumer: consumer.to_string(),
            config,
        })
    }

    fn timeout_ms(&self) -> u64 {
        self.config.visibility_timeout.as_millis() as u64
    }

    /// How often the group has delivered `id` (from the PEL), if pending.
    async fn delivery_count(&self, id: &str) -> Result<Option<u32>, QueueError> {
        let mut conn = self.conn.clone();
        let reply: Value = redis::cmd("XPENDING")
            .arg(&self.stream)
            .arg(GROUP)
            .arg(id)
            .arg(id)
            .arg(1)
            .query_async(&mut conn)
            .await?;
        // [[id, consumer, idle_ms, count]]
        let rows = array(reply)?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        let row = array(row)?;
        let count = row
            .get(3)
            .ok_or_else(|| QueueError::Protocol("short XPENDING row".into()))?;
        Ok(Some(int(count)? as u32))
    }

    /// Moves a claimed message to the dead-letter stream. The XACK decides
    /// who does it: when two consumers race, only one gets 1 back.
    async fn dead_letter(
        &self,
        id: &str,
        payload: &[u8],
        deliveries: u32,
    ) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let acked: i64 = redis::cmd("XACK")
            .arg(&self.stream)
            .arg(GROUP)
            .arg(id)
            .query_async(&mut conn)
            .await?;
        if acked == 1 {
            let _: Value = redis::cmd("XADD")
                .arg(&self.dead)
                .arg("*")
                .arg("id")
                .arg(id)
                .arg("payload")
                .arg(payload)
                .arg("deliveries")
                .arg(deliveries)
                .query_async(&mut conn)
                .await?;
        }
        Ok(())
    }
}

/// The elements of an array reply.
fn array(v: Value) -> Result<Vec<Value>, QueueError> {
    match v {
        Value::Array(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(QueueError::Protocol(format!(
            "expected an array, got {other:?}"
        ))),
    }
}

fn bytes(v: &Value) -> Result<Vec<u8>, QueueError> {
    match v {
        Value::BulkString(b) => Ok(b.clone()),
        Value::SimpleString(s) => Ok(s.clone().into_bytes()),
        other => Err(QueueError::Protocol(format!(
            "expected a string, got {other:?}"
        ))),
    }
}

fn text(v: &Value) -> Result<String, QueueError> {
    String::from_utf8(bytes(v)?).map_err(|e| QueueError::Protocol(e.to_string()))
}

fn int(v: &Value) -> Result<i64, QueueError> {
    match v {
        Value::Int(n) => Ok(*n),
        other => text(other)?
            .parse()
            .map_err(|e| QueueError::Protocol(format!("expected a number: {e}"))),
    }
}

/// The fields of a stream entry, as (name, value) pairs.
type Fields = Vec<(String, Vec<u8>)>;

/// One stream entry `[id, [field, value, ...]]`: its id and fields.
fn entry(v: Value) -> Result<(String, Fields), QueueError> {
    let mut parts = array(v)?.into_iter();
    let id = text(
        &parts
            .next()
            .ok_or_else(|| QueueError::Protocol("empty entry".into()))?,
    )?;
    let fields = array(parts.next().unwrap_or(Value::Nil))?;
    let mut out = Vec::new();
    for pair in fields.chunks(2) {
        if let [k, v] = pair {
            out.push((text(k)?, bytes(v)?));
        }
    }
    Ok((id, out))
}

fn field<'a>(fields: &'a Fields, name: &str) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_slice())
}

impl Queue for RedisQueue {
    async fn publish(&self, payload: &[u8]) -> Result<MessageId, QueueError> {
        let mut conn = self.conn.clone();
        // Durability is Redis's: with appendfsync everysec (a common
        // setting) up to a second of acknowledged writes can be lost.
        let id: String = redis::cmd("XADD")
            .arg(&self.stream)
            .arg("*")
            .arg("payload")
            .arg(payload)
            .query_async(&mut conn)
            .await?;
        Ok(MessageId(id))
    }

    async fn consume(&self) -> Result<Option<Delivery>, QueueError> {
        let mut conn = self.conn.clone();
        // 1. Redeliveries first: claim one entry idle for at least the
        // visibility timeout. XAUTOCLAIM scans at most 10 * COUNT PEL
        // entries per call and returns a cursor; "0-0" means the scan is
        // done. An empty answer with another cursor means "look further".
        let mut cursor = "0-0".to_string();
        loop {
            let reply: Value = redis::cmd("XAUTOCLAIM")
                .arg(&self.stream)
                .arg(GROUP)
                .arg(&self.consumer)
                .arg(self.timeout_ms())
                .arg(&cursor)
                .arg("COUNT")
                .arg(1)
                .query_async(&mut conn)
                .await?;
            // [next_cursor, [entries], [deleted ids]]
            let mut parts = array(reply)?.into_iter();
            let next = text(
                &parts
                    .next()
                    .ok_or_else(|| QueueError::Protocol("empty XAUTOCLAIM reply".into()))?,
            )?;
            let entries = array(parts.next().unwrap_or(Value::Nil))?;
            for e in entries {
                let (id, fields) = entry(e)?;
                let payload = field(&fields, "payload").unwrap_or_default().to_vec();
                // The claim counted as a delivery: this is number `count`.
                let count = self.delivery_count(&id).await?.unwrap_or(1);
                if count > self.config.max_deliveries {
                    self.dead_letter(&id, &payload, count - 1).await?;
                    continue;
                }
                return Ok(Some(Delivery {
                    id: MessageId(id),
                    payload,
                    deliveries: count,
                }));
            }
            if next == "0-0" {
                break;
            }
            cursor = next;
        }
        // 2. A message never delivered to the group. `>` means exactly
        // that; without BLOCK the call answers at once (nil when empty).
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(">")
            .query_async(&mut conn)
            .await?;
        // [[stream, [entries]]] (RESP2), or nil.
        for stream in array(reply)? {
            let mut parts = array(stream)?.into_iter();
            let _name = parts.next();
            if let Some(e) = array(parts.next().unwrap_or(Value::Nil))?
                .into_iter()
                .next()
            {
                let (id, fields) = entry(e)?;
                let payload = field(&fields, "payload").unwrap_or_default().to_vec();
                return Ok(Some(Delivery {
                    id: MessageId(id),
                    payload,
                    deliveries: 1,
                }));
            }
        }
        Ok(None)
    }

    async fn ack(&self, id: &MessageId) -> Result<bool, QueueError> {
        let mut conn = self.conn.clone();
        // XACK answers how many of the ids were pending: 0 for an id never
        // delivered, already acked, or dead-lettered.
        let n: i64 = redis::cmd("XACK")
            .arg(&self.stream)
            .arg(GROUP)
            .arg(id.as_str())
            .query_async(&mut conn)
            .await?;
        Ok(n == 1)
    }

    async fn dead_letters(&self) -> Result<Vec<Delivery>, QueueError> {
        let mut conn = self.conn.clone();
        let reply: Value = redis::cmd("XRANGE")
            .arg(&self.dead)
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await?;
        let mut out = Vec::new();
        for e in array(reply)? {
            let (_, fields) = entry(e)?;
            let id = String::from_utf8_lossy(field(&fields, "id").unwrap_or_default()).into_owned();
            let deliveries =
                String::from_utf8_lossy(field(&fields, "deliveries").unwrap_or_default())
                    .parse()
                    .unwrap_or(0);
            out.push(Delivery {
                id: MessageId(id),
                payload: field(&fields, "payload").unwrap_or_default().to_vec(),
                deliveries,
            });
        }
        Ok(out)
    }
}
