//! # Lab 24: a Redis-compatible server
//!
//! ```text
//! mini_redis [ADDR] [--replicaof HOST:PORT]        (default 127.0.0.1:6380)
//! ```
//!
//! # Design
//!
//! One tokio task per connection, as in tokio's mini-redis, over one shared
//! key space ([`db::Db`]). A connection task loops:
//! 1. parse every whole command in its read buffer ([`resp::Parser`]
//!    keeps a half-read command between reads),
//! 2. run each and append its reply to one output buffer,
//! 3. write the buffer once, then read again.
//!
//! So a pipeline of 10,000 commands read in a few `read`s is answered in a
//! few `write`s, which is where Redis's own speed comes from: the cost of a
//! command is dominated by the system calls around it, and batching shares
//! them. The output is flushed early once it passes [`OUT_FLUSH`], so a
//! client that pipelines without reading makes the task wait on its
//! writes (backpressure) instead of growing the buffer without bound.
//!
//! With `--replicaof`, a background task ([`replica`]) follows a master
//! and applies its writes; clients may then only read.

mod db;
mod replica;
mod resp;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::db::{Db, Kind};
use crate::resp::{Parser, reply};

/// The address when none is given on the command line.
const DEFAULT_ADDR: &str = "127.0.0.1:6380";
/// Write the replies out once this many bytes are waiting.
const OUT_FLUSH: usize = 64 * 1024;

/// What the whole server shares.
struct Server {
    db: Db,
    /// Set when this server is a replica.
    replica: Option<Arc<replica::Link>>,
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut addr = None;
    let mut master = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--replicaof" => match args.next() {
                Some(m) => master = Some(m),
                None => usage("--replicaof needs HOST:PORT"),
            },
            _ if addr.is_none() && !a.starts_with("--") => addr = Some(a),
            _ => usage(&format!("unexpected argument {a:?}")),
        }
    }
    let addr = addr.unwrap_or_else(|| DEFAULT_ADDR.to_string());
    let listener = match TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mini_redis: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    let local = listener
        .local_addr()
        .expect("a bound listener has an address");
    println!("listening on {local}");

    let db = Db::new();
    let replica = master.map(|m| replica::start(m, local.port(), db.clone()));
    let server = Arc::new(Server { db, replica });

    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let server = Arc::clone(&server);
                tokio::spawn(async move {
                    if let Err(e) = serve(stream, &server).await {
                        eprintln!("mini_redis: connection ended: {e}");
                    }
                });
            }
            Err(e) => {
                // EMFILE and friends: the listener is fine; wait a moment
                // for a connection to close instead of spinning.
                eprintln!("mini_redis: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

fn usage(why: &str) -> ! {
    eprintln!("mini_redis: {why}\nusage: mini_redis [ADDR] [--replicaof HOST:PORT]");
    std::process::exit(2);
}

/// Serves one client until it closes, errs, or breaks the protocol.
async fn serve(mut stream: TcpStream, server: &Server) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut parser = Parser::default();
    let mut out = Vec::with_capacity(16 * 1024);
    loop {
        loop {
            match parser.next(&mut buf) {
                Ok(Some(cmd)) => execute(server, &cmd, &mut out),
                Ok(None) => break,
                Err(e) => {
                    // As Redis: say why, then close; the stream cannot be
                    // trusted to be in step any more.
                    reply::error(&mut out, &format!("ERR Protocol error: {}", e.0));
                    stream.write_all(&out).await?;
                    return Ok(());
                }
            }
            if out.len() >= OUT_FLUSH {
                stream.write_all(&out).await?;
                out.clear();
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

/// The most arguments (and the fewest) each command takes, after its name;
/// `None` for "any number".
fn arity(name: &[u8]) -> Option<(usize, Option<usize>)> {
    Some(match name {
        b"PING" => (0, Some(1)),
        b"ECHO" | b"GET" | b"INCR" | b"TTL" | b"PTTL" | b"KEYS" | b"LLEN" => (1, Some(1)),
        b"SET" => (2, None),
        b"DEL" | b"EXISTS" => (1, None),
        b"EXPIRE" | b"PEXPIRE" | b"EXPIREAT" | b"PEXPIREAT" => (2, Some(2)),
        b"LPUSH" | b"RPUSH" => (2, None),
        b"LRANGE" => (3, Some(3)),
        b"DBSIZE" => (0, Some(0)),
        b"SELECT" => (1, Some(1)),
        b"INFO" => (0, Some(1)),
        b"COMMAND" => (0, None),
        _ => return None,
    })
}

/// Runs one client command and appends its reply.
fn execute(server: &Server, cmd: &[Bytes], out: &mut Vec<u8>) {
    let name = cmd[0].to_ascii_uppercase();
    let args = &cmd[1..];
    let Some((min, max)) = arity(&name) else {
        return unknown(cmd, out);
    };
    if args.len() < min || max.is_some_and(|m| args.len() > m) {
        let lower = String::from_utf8_lossy(&cmd[0]).to_lowercase();
        return reply::error(
            out,
            &format!("ERR wrong number of arguments for '{lower}' command"),
        );
    }
    match name.as_slice() {
        b"PING" => match args.first() {
            None => reply::simple(out, "PONG"),
            Some(msg) => reply::bulk(out, msg),
        },
        b"ECHO" => reply::bulk(out, &args[0]),
        // redis-cli asks for the command table (`COMMAND DOCS`) to offer
        // hints; an empty one is a valid answer.
        b"COMMAND" => reply::array_len(out, 0),
        b"SELECT" => match &args[0][..] {
            b"0" => reply::simple(out, "OK"),
            _ => reply::error(out, "ERR DB index is out of range"),
        },
        b"INFO" => {
            let text = match &server.replica {
                Some(link) => link.info(),
                None => "# Replication\r\nrole:master\r\nconnected_slaves:0\r\n".to_string(),
            };
            reply::bulk(out, text.as_bytes());
        }
        _ => {
            let kind = Db::kind(&name).expect("arity() and kind() know the same commands");
            if kind == Kind::Write && server.replica.is_some() {
                return reply::error(out, "READONLY You can't write against a read only replica.");
            }
            server.db.execute(&name, args, out);
        }
    }
}

/// Redis's answer to a command it does not know, word for word.
fn unknown(cmd: &[Bytes], out: &mut Vec<u8>) {
    let clip = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(128)]).into_owned();
    let mut msg = format!(
        "ERR unknown command '{}', with args beginning with: ",
        clip(&cmd[0])
    );
    for a in &cmd[1..] {
        msg.push_str(&format!("'{}' ", clip(a)));
    }
    // A reply line cannot hold a newline.
    let msg: String = msg
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    reply::error(out, &msg);
}
