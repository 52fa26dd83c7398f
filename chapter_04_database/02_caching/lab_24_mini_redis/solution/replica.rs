//! Following a master: the replica side of Redis replication.
//!
//! ```text
//! replica                                master
//!   PING                          ->
//!                                 <-     +PONG
//!   REPLCONF listening-port 6380  ->
//!                                 <-     +OK
//!   REPLCONF capa psync2          ->
//!                                 <-     +OK
//!   PSYNC ? -1                    ->     ("no history: send me everything")
//!                                 <-     +FULLRESYNC <replid> <offset>
//!                                 <-     $<len>\r\n<RDB snapshot, len bytes>   (no CRLF after it)
//!                                 <-     *3\r\n$3\r\nSET\r\n...               (the write stream, for ever)
//!                                 <-     *3\r\n$8\r\nREPLCONF\r\n$6\r\nGETACK\r\n$1\r\n*\r\n
//!   REPLCONF ACK <offset>         ->
//! ```
//!
//! - The RDB is a bulk string *without* the trailing CRLF every other bulk
//!   has: the bytes after it are the first command. It is skipped here
//!   (loading its string keys is the README's "going further"), and the key
//!   space is emptied, since the snapshot replaces it. While the master is
//!   still writing the snapshot it may send bare `\n`s as keep-alives.
//! - The stream's commands are applied and never answered: the master is
//!   not a client, and a reply would be read by it as a command.
//! - The offset is a count of **bytes** of the stream processed, starting
//!   from the offset in `+FULLRESYNC`, the same count the master keeps. A
//!   `REPLCONF GETACK *` is answered with the offset of everything before
//!   it (its own bytes are added after), which is what `WAIT` compares
//!   against the master's own offset.
//! - When the link breaks, the replica connects again and resyncs, for as
//!   long as it runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::db::{Db, Kind};
use crate::resp::{MAX_BULK, Parser, reply};

/// The replica's view of its link, for `INFO replication`.
#[derive(Debug)]
pub struct Link {
    master: String,
    up: AtomicBool,
    offset: AtomicI64,
}

impl Link {
    pub fn info(&self) -> String {
        let (host, port) = self.master.rsplit_once(':').unwrap_or((&self.master, ""));
        format!(
            "# Replication\r\nrole:slave\r\nmaster_host:{host}\r\nmaster_port:{port}\r\nmaster_link_status:{}\r\nslave_repl_offset:{}\r\n",
            if self.up.load(Ordering::SeqCst) {
                "up"
            } else {
                "down"
            },
            self.offset.load(Ordering::SeqCst),
        )
    }
}

/// Starts following `master` (`HOST:PORT`) in the background.
pub fn start(master: String, my_port: u16, db: Db) -> Arc<Link> {
    let link = Arc::new(Link {
        master,
        up: AtomicBool::new(false),
        offset: AtomicI64::new(0),
    });
    let l = Arc::clone(&link);
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(50);
        loop {
            match follow(&l, my_port, &db).await {
                Ok(()) => eprintln!("mini_redis: master {} closed the link", l.master),
                Err(e) => eprintln!("mini_redis: replication from {}: {e}", l.master),
            }
            if l.up.swap(false, Ordering::SeqCst) {
                delay = Duration::from_millis(50);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    });
    link
}

type Result<T> = std::result::Result<T, String>;

/// One connection to the master: handshake, snapshot, then the stream
/// until the link breaks.
async fn follow(link: &Link, my_port: u16, db: &Db) -> Result<()> {
    let mut conn = TcpStream::connect(&link.master)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    conn.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut buf = BytesMut::with_capacity(16 * 1024);

    let port = my_port.to_string();
    let handshake: [(&[&[u8]], &str); 3] = [
        (&[b"PING"], "+PONG"),
        (&[b"REPLCONF", b"listening-port", port.as_bytes()], "+OK"),
        (&[b"REPLCONF", b"capa", b"psync2"], "+OK"),
    ];
    for (cmd, want) in handshake {
        send(&mut conn, cmd).await?;
        let line = read_line(&mut conn, &mut buf).await?;
        if line != want {
            return Err(format!("expected {want}, got {line:?}"));
        }
    }
    send(&mut conn, &[b"PSYNC".as_slice(), b"?", b"-1"]).await?;
    let line = read_line(&mut conn, &mut buf).await?;
    let mut offset: i64 = match line
        .strip_prefix("+FULLRESYNC ")
        .map(|r| r.split(' ').collect::<Vec<_>>())
    {
        Some(parts) if parts.len() == 2 => parts[1]
            .parse()
            .map_err(|_| format!("bad offset in {line:?}"))?,
        _ => return Err(format!("expected +FULLRESYNC, got {line:?}")),
    };

    // The snapshot: `$<len>\r\n` and `len` bytes, after any keep-alives.
    let header = loop {
        let line = read_line(&mut conn, &mut buf).await?;
        if !line.is_empty() {
            break line;
        }
    };
    let len: usize = header
        .strip_prefix('$')
        .and_then(|n| n.parse().ok())
        .filter(|&n| n <= MAX_BULK)
        .ok_or_else(|| format!("expected the RDB's $<length>, got {header:?}"))?;
    let mut left = len;
    while left > 0 {
        if buf.is_empty() {
            fill(&mut conn, &mut buf).await?;
        }
        let n = left.min(buf.len());
        buf.advance(n);
        left -= n;
    }
    db.flush();
    link.offset.store(offset, Ordering::SeqCst);
    link.up.store(true, Ordering::SeqCst);
    eprintln!(
        "mini_redis: in sync with {} at offset {offset} ({len} byte snapshot skipped)",
        link.master
    );

    // The stream.
    let mut parser = Parser::default();
    let mut scratch = Vec::new();
    // Bytes consumed for the command being parsed, not yet in `offset`.
    let mut pending = 0i64;
    loop {
        loop {
            let before = buf.len();
            let cmd = parser
                .next(&mut buf)
                .map_err(|e| format!("master sent bad RESP: {}", e.0))?;
            pending += (before - buf.len()) as i64;
            let Some(cmd) = cmd else { break };
            let name = cmd[0].to_ascii_uppercase();
            if name == b"REPLCONF"
                && cmd
                    .get(1)
                    .is_some_and(|a| a.eq_ignore_ascii_case(b"GETACK"))
            {
                let ack = offset.to_string();
                send(&mut conn, &[b"REPLCONF".as_slice(), b"ACK", ack.as_bytes()]).await?;
            } else if Db::kind(&name) == Some(Kind::Write) {
                scratch.clear();
                db.execute(&name, &cmd[1..], &mut scratch);
            }
            // PING, SELECT, MULTI/EXEC and the like change nothing here,
            // but their bytes count like any other.
            offset += pending;
            pending = 0;
            link.offset.store(offset, Ordering::SeqCst);
        }
        fill(&mut conn, &mut buf).await?;
    }
}

async fn send(conn: &mut TcpStream, args: &[&[u8]]) -> Result<()> {
    let mut out = Vec::new();
    reply::command(&mut out, args);
    conn.write_all(&out)
        .await
        .map_err(|e| format!("write: {e}"))
}

/// Reads more bytes; the master closing is an error here (mid-sync).
async fn fill(conn: &mut TcpStream, buf: &mut BytesMut) -> Result<()> {
    buf.reserve(16 * 1024);
    match conn.read_buf(buf).await {
        Ok(0) => Err("the master closed the connection".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("read: {e}")),
    }
}

/// One line, without its `\r\n` (a bare `\n` keep-alive gives "").
async fn read_line(conn: &mut TcpStream, buf: &mut BytesMut) -> Result<String> {
    loop {
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            let line = buf.split_to(i + 1);
            let text = String::from_utf8_lossy(&line[..i]);
            return Ok(text.trim_end_matches('\r').to_string());
        }
        if buf.len() > 64 * 1024 {
            return Err("a line from the master is too long".into());
        }
        fill(conn, buf).await?;
    }
}
