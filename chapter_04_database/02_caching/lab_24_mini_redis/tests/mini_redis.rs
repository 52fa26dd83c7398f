//! Grader for lab 24: a Redis-compatible server.
//!
//! Tests 01-16 speak RESP to the server byte for byte (labkit's client, so
//! every reply is compared exactly and every wait has a deadline), once
//! through the real `redis-cli` and once through the `redis` crate. Tests 20-23 make it a replica: of a fake
//! master played by the test, which checks the handshake and every byte the
//! replica sends back, and of a real `redis-server` that the test starts,
//! kills and starts again.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use labkit::Report;
use labkit::client::Client;
use labkit::run::Cmd;
use labkit::server::Server;
use labkit::services::RedisServer;
use labkit::wait::{settle, within_async};

/// The deadline on one call made with the redis crate.
const CALL: Duration = Duration::from_secs(10);

const BIN: &str = env!("CARGO_BIN_EXE_mini_redis");
/// How long a fact the test polls for (a key expiring, a write reaching
/// the replica) may take.
const SETTLE: Duration = Duration::from_secs(10);

fn server() -> Server {
    Server::spawn(BIN)
}

/// A command as a client sends it: an array of bulk strings.
fn cmd(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// `cmd` for text arguments split on spaces.
fn c(text: &str) -> Vec<u8> {
    let args: Vec<&[u8]> = text.split(' ').map(str::as_bytes).collect();
    cmd(&args)
}

fn bulk(b: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", b.len()).into_bytes();
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
    out
}

/// Sends `request` and expects exactly `reply`.
fn ask(client: &mut Client, request: &[u8], reply: &[u8], hint: &str) {
    client.hint(hint).send(request).expect_bytes(reply);
}

/// Sends one command (text) and reads its integer reply.
fn int(client: &mut Client, text: &str) -> i64 {
    client.send(&c(text));
    let line = client.read_line();
    match line
        .trim_end()
        .strip_prefix(':')
        .and_then(|n| n.parse().ok())
    {
        Some(n) => n,
        None => client
            .report()
            .expected(format!("an integer reply (:<n>) to {text}"))
            .got(format!("{line:?}"))
            .fail(),
    }
}

// PING and ECHO, the first commands every client sends.
#[test]
fn test_01_ping_and_echo() {
    let s = server();
    let mut cl = Client::connect_to(&s);
    ask(
        &mut cl,
        &c("PING"),
        b"+PONG\r\n",
        "PING with no argument is the simple string +PONG",
    );
    ask(
        &mut cl,
        &c("ping"),
        b"+PONG\r\n",
        "command names are case-insensitive",
    );
    ask(
        &mut cl,
        &c("PING hello"),
        &bulk(b"hello"),
        "PING with an argument returns it as a bulk string",
    );
    let odd: &[u8] = b"a\r\nb\0\xff";
    ask(
        &mut cl,
        &cmd(&[b"ECHO", odd]),
        &bulk(odd),
        "ECHO returns its argument as a bulk string, byte for byte",
    );
}

// SET and GET are binary safe: a value is bytes with a length, CRLF and
// NUL included.
#[test]
fn test_02_set_and_get_are_binary_safe() {
    let s = server();
    let mut cl = Client::connect_to(&s);
    ask(
        &mut cl,
        &c("GET nothing"),
        b"$-1\r\n",
        "a missing key is the null bulk string $-1",
    );
    let value: Vec<u8> = (0..=255u8).chain(*b"\r\n\r\n").collect();
    let key: &[u8] = b"k\r\ney \0";
    ask(
        &mut cl,
        &cmd(&[b"SET", key, &value]),
        b"+OK\r\n",
        "SET replies +OK",
    );
    ask(
        &mut cl,
        &cmd(&[b"GET", key]),
        &bulk(&value),
        "keys and values are byte strings: use the bulk length, never search for CRLF inside one",
    );
    ask(
        &mut cl,
        &cmd(&[b"SET", key, b""]),
        b"+OK\r\n",
        "SET replaces a value",
    );
    ask(
        &mut cl,
        &cmd(&[b"GET", key]),
        b"$0\r\n\r\n",
        "an empty string is $0 followed by an empty line, not a missing key",
    );
}

// SET's options: NX, XX, EX, PX, and their errors.
#[test]
fn test_03_set_options() {
    let s = server();
    let mut cl = Client::connect_to(&s);
    ask(
        &mut cl,
        &c("SET k v1 NX"),
        b"+OK\r\n",
        "NX sets a missing key",
    );
    ask(
        &mut cl,
        &c("SET k v2 NX"),
        b"$-1\r\n",
        "NX on an existing key sets nothing and replies null",
    );
    ask(
        &mut cl,
        &c("SET other v XX"),
        b"$-1\r\n",
        "XX on a missing key sets nothing and replies null",
    );
    ask(
        &mut cl,
        &c("SET k v3 xx"),
        b"+OK\r\n",
        "XX replaces an existing key (options are case-insensitive)",
    );
    ask(
        &mut cl,
        &c("GET k"),
        &bulk(b"v3"),
        "after NX refused and XX succeeded, k is v3",
    );
    ask(
        &mut cl,
        &c("SET k v EX 0"),
        b"-ERR invalid expire time in 'set' command\r\n",
        "a TTL must be positive",
    );
    ask(
        &mut cl,
        &c("SET k v PX -5"),
        b"-ERR invalid expire time in 'set' command\r\n",
        "a TTL must be positive",
    );
    ask(
        &mut cl,
        &c("SET k v EX ten"),
        b"-ERR value is not an integer or out of range\r\n",
        "EX takes an integer",
    );
    ask(
        &mut cl,
        &c("SET k v EX"),
        b"-ERR syntax error\r\n",
        "EX needs a number after it",
    );
    ask(
        &mut cl,
        &c("SET k v NX XX"),
        b"-ERR syntax error\r\n",
        "NX and XX together are a syntax error",
    );
    ask(
        &mut cl,
        &c("SET k v BOGUS"),
        b"-ERR syntax error\r\n",
        "an unknown option is a syntax error",
    );
    ask(
        &mut cl,
        &c("GET k"),
        &bulk(b"v3"),
        "a refused SET changes nothing",
    );
    ask(&mut cl, &c("SET k v4 EX 100"), b"+OK\r\n", "EX seconds");
    let ttl = int(&mut cl, "TTL k");
    Report::new("SET k v4 EX 100, then TTL k")
        .expected("99 or 100")
        .got(ttl)
        .check((99..=100).contains(&ttl));
    ask(&mut cl, &c("SET k v5"), b"+OK\r\n", "a plain SET");
    ask(
        &mut cl,
        &c("TTL k"),
        b":-1\r\n",
        "a plain SET clears the key's TTL",
    );
    ask(
        &mut cl,
        &c("SET short v PX 50"),
        b"+OK\r\n",
        "PX milliseconds",
    );
    let gone = settle(SETTLE, || int(&mut cl, "EXISTS short"), |n| n == 0);
    Report::new("SET short v PX 50, then EXISTS short until it is gone")
        .expected(format!("0 within {SETTLE:?}"))
        .got(format!("{gone:?}"))
        .hint("a key past its deadline must not be seen by any command (check the deadline on every read)")
        .check(gone.is_ok());
    ask(
        &mut cl,
        &c("GET short"),
        b"$-1\r\n",
        "an expired key reads as missing",
    );
}

// DEL and EXISTS take many keys and count them.
#[test]
fn test_04_del_and_exists_count_keys() {
    let s = server();
    let mut cl = Client::connect_to(&s);
    for k in ["a", "b", "c"] {
        ask(
            &mut cl,
            &c(&format!("SET {k} 1")),
            b"+OK\r\n",
            "SET replies +OK",
        );
    }
    ask(
        &mut cl,
        &c("EXISTS a b nope"),
        b":2\r\n",
        "EXISTS counts the keys that exist",
    );
    ask(
        &mut cl,
        &c("EXISTS a a a"),
        b":3\r\n",
        "a key named three times counts three times, as in Redis",
    );
    ask(
        &mut cl,
        &c("DEL a nope b"),
        b":2\r\n",
        "DEL replies how many keys it removed",
    );
    ask(
        &mut cl,
        &c("DEL a"),
        b":0\r\n",
        "a key already deleted counts 0",
    );
    ask(&mut cl, &c("EXISTS a b c"), b":1\r\n", "only c is left");
}

// INCR: counters, their errors, and the overflow edge.
#[test]
fn test_05_incr() {
    let s = server();
    let mut cl = Client::connect_to(&s);
    ask(
        &mut cl,
        &c("INCR n"),
        b":1\r\n",
        "INCR on a missing key starts from 0",
    );
    ask(&mut cl, &c("INCR n"), b":2\r\n", "INCR adds one");
    ask(&mut cl, &c("SET n -5"), b"+OK\r\n", "SET");
    ask(
        &mut cl,
        &c("INCR n"),
        b":-4\r\n",
        "negative numbers count up too",
    );
    ask(
        &mut cl,
        &c("GET n"),
        &bulk(b"-4"),
        "the counter is stored as its decimal string",
    );
    for bad in ["abc", "1.5", "9223372036854775808", "+1x"] {
        ask(&mut cl, &c(&format!("SET bad {bad}")), b"+OK\r\n", "SET");
        ask(
            &mut cl,
            &c("INCR bad"),
            b"-ERR value is not an integer or out of range\r\n",
            &format!("{bad:?} is not a 64-bit integer"),
        );
    }
    ask(
        &mut cl,
        &c("SET big 9223372036854775806"),
        b"+OK\r\n",
        "SET",
    );
    ask(
        &mut cl,
        &c("INCR big"),
        b":9223372036854775807\r\n",
        "i64::MAX itself is fine",
    );
    ask(
        &mut cl,
        &c("INCR big"),
        b"-ERR increment or decrement would overflow\r\n",
        "past i64::MAX is an error, never a wrap",
    );
    ask(
        &mut cl,
        &c("GET big"),
        &bulk(b"9223372036854775807"),
        "a refused INCR leaves the value",
    );
    ask(&mut cl, &c("SET t 1 EX 100"), b"+OK\r\n", "SET with a TTL");
    int(&mut cl, "INCR t");
    let ttl = int(&mut cl, "TTL t");
    Report::new("SET t 1 EX 100, INCR t, TTL t")
        .expected("a TTL of 99 or 100: INCR keeps the key's TTL")
        .got(ttl)
        .check((99..=100).contains(&ttl));
}

// EXPIRE, TTL and PTTL.
#[test]
fn test_06_expire_and_ttl() {
    let s = server();
    let mut cl = Client::connect_to(&s);
    ask(
        &mut cl,
        &c("TTL nope"),
        b":-2\r\n",
        "TTL of a missing key is -2",
    );
    ask(&mut cl, &c("SET k v"), b"+OK\r\n", "SET");
    ask(
        &mut cl,
        &c("TTL k"),
        b":-1\r\n",
        "TTL of a key without one is -1",
    );
    ask(
        &mut cl,
        &c("EXPIRE nope 10"),
        b":0\r\n",
        "EXPIRE on a missing key replies 0",
    );
    ask(
        &mut cl,
        &c("EXPIRE k 100"),
        b":1\r\n",
        "EXPIRE on a key replies 1",
    );
    let ttl = int(&mut cl, "TTL k");
    let pttl = int(&mut cl, "PTTL k");
    Report::new("EXPIRE k 100, then TTL k and PTTL k")
        .expected("TTL 99 or 100, PTTL in 98000..=100000")
        .got(format!("TTL {ttl}, PTTL {pttl}"))
        .check((99..=100).contains(&ttl) && (98_000..=100_000).contains(&pttl));
    ask(
        &mut cl,
        &c("EXPIRE k soon"),
        b"-ERR value is not an integer or out of range\r\n",
        "EXPIRE takes an integer",
    );
    ask(
        &mut cl,
        &c("EXPIRE k"),
        b"-ERR wrong number of arguments for 'expire' command\r\n",
        "EXPIRE takes two arguments",
    );
    ask(
        &mut cl,
        &c("EXPIRE k -1"),
        b":1\r\n",
        "a deadline in the past deletes the key, and replies 1",
    );
    ask(
        &mut cl,
        &c("EXISTS k"),
        b":0\r\n",
        "EXPIRE with a negative time deleted the key",
    );
}

// Keys expire even if nobody reads them again: DBSIZE counts keys without
// looking at their deadlines, so only an active sweep brings it down.
#[test]
fn test_07_keys_expire_without_being_read() {
    let s = server();
    let mut cl = Client::connect_to(&s);
    let mut batch = Vec::new();
    for i in 0..200 {
        batch.extend(c(&format!("SET tmp:{i} v PX {}", 20 + i)));
    }
    for i in 0..5 {
        batch.extend(c(&format!("SET keep:{i} v")));
    }
    cl.send(&batch).expect_bytes(&b"+OK\r\n".repeat(205));
    let left = settle(SETTLE, || int(&mut cl, "DBSIZE"), |n| n == 5);
    Report::new("set 200 keys with TTLs of 20-219 ms and 5 without, never read them, polled DBSIZE")
        .expected(format!("5 within {SETTLE:?}"))
        .got(format!("{left:?}"))
        .hint("lazy expiry alone never frees a key nobody reads: sweep expired keys in the background (a task that sleeps until the next deadline, or samples keys every 100 ms as Redis does)")
        .check(left.is_ok());
    // A SET without a TTL must forget the old deadline entirely: once a
    // later deadline has passed, the key is still there.
    ask(&mut cl, &c("SET k old PX 30"), b"+OK\r\n", "SET with PX");
    ask(&mut cl, &c("SET k new"), b"+OK\r\n", "SET without a TTL");
    ask(&mut cl, &c("SET marker x PX 60"), b"+OK\r\n", "SET with PX");
    let marker = settle(SETTLE, || int(&mut cl, "DBSIZE"), |n| n == 6);
    Report::new("SET k old PX 30, SET k new, SET marker x PX 60, waited for DBSIZE to drop by the marker")
        .expected(format!("DBSIZE 6 (k and the 5 kept keys) within {SETTLE:?}"))
        .got(format!("{marker:?}"))
        .hint("a plain SET clears the key's TTL: remove the old deadline from your expiry index too, or the sweep deletes the new value at the old deadline")
        .check(marker.is_ok());
    ask(
        &mut cl,
        &c("GET k"),
        &bulk(b"new"),
        "k was set again without a TTL: it must outlive its old deadline",
    );
}

// KEYS with Redis's glob patterns.
#[test]
fn test_08_keys_matches_glob_patterns() {
    let s = server();
    let mut cl = Client::connect_to(&s);
    let keys = [
        "hello", "hallo", "hxllo", "hllo", "heeeello", "h*llo", "other",
    ];
    for k in keys {
        cl.send(&c(&format!("SET {k} 1"))).expect_bytes(b"+OK\r\n");
    }
    for (pattern, want) in [
        ("*", &keys[..]),
        ("h?llo", &["hello", "hallo", "hxllo", "h*llo"][..]),
        (
            "h*llo",
            &["hello", "hallo", "hxllo", "hllo", "heeeello", "h*llo"][..],
        ),
        ("h[ae]llo", &["hello", "hallo"][..]),
        ("h[^e]llo", &["hallo", "hxllo", "h*llo"][..]),
        ("h[a-b]llo", &["hallo"][..]),
        ("h\\*llo", &["h*llo"][..]),
        ("nothing*", &[][..]),
    ] {
        cl.send(&c(&format!("KEYS {pattern}")));
        let mut got = read_array(&mut cl);
        got.sort();
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        Report::new(format!("set {keys:?}, sent KEYS {pattern}"))
            .expected(format!("{want:?} (in any order)"))
            .got(format!("{got:?}"))
            .hint("* is any run of bytes, ? one byte, [ae] a class, [^e] its complement, [a-b] a range, \\ escapes")
            .check(got == want);
    }
}

/// Reads an array of bulk strings.
fn read_array(cl: &mut Client) -> Vec<String> {
    let head = cl.read_line();
    let Some(n) = head
        .trim_end()
        .strip_prefix('*')
        .and_then(|n| n.parse::<usize>().ok())
    else {
        cl.report()
            .expected("an array reply (*<n>)")
            .got(format!("{head:?}"))
            .fail()
    };
    (0..n)
        .map(|_| {
            let len_line = cl.read_line();
            let len: usize = len_line
                .trim_end()
                .strip_prefix('$')
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| {
                    cl.report()
                        .expected("a bulk string ($<len>)")
                        .got(format!("{len_line:?}"))
                        .fail()
                });
            let body = cl.read_exact(len + 2);
            String::from_utf8_lossy(&body[..len]).into_owned()
        })
        .collect()
}

// Errors in Redis's own words, which clients and people recognise.
#[test]
fn test_09_errors_in_redis_format() {
    let s = server();
    let mut cl = Client::connect_to(&s);
    ask(
        &mut cl,
        &c("FOO bar baz"),
        b"-ERR unknown command 'FOO', with args beginning with: 'bar' 'baz' \r\n",
        "Redis 7's words: the name as sent, each argument quoted, a space after each",
    );
    ask(
        &mut cl,
        &c("GET"),
        b"-ERR wrong number of arguments for 'get' command\r\n",
        "the command name in lower case",
    );
    ask(
        &mut cl,
        &c("get a b"),
        b"-ERR wrong number of arguments for 'get' command\r\n",
        "GET takes exactly one key",
    );
    ask(
        &mut cl,
        &c("LPUSH list x y"),
        b":2\r\n",
        "LPUSH replies the list's new length",
    );
    ask(&mut cl, &c("RPUSH list z"), b":3\r\n", "RPUSH too");
    cl.send(&c("LRANGE list 0 -1"));
    let got = read_array(&mut cl);
    Report::new("LPUSH list x y, RPUSH list z, LRANGE list 0 -1")
        .expected("[\"y\", \"x\", \"z\"]")
        .got(format!("{got:?}"))
        .check(got == ["y", "x", "z"]);
    let wrongtype = b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";
    ask(
        &mut cl,
        &c("GET list"),
        wrongtype,
        "GET on a list is WRONGTYPE",
    );
    ask(
        &mut cl,
        &c("INCR list"),
        wrongtype,
        "INCR on a list is WRONGTYPE",
    );
    ask(&mut cl, &c("SET s v"), b"+OK\r\n", "SET");
    ask(
        &mut cl,
        &c("LPUSH s x"),
        wrongtype,
        "LPUSH on a string is WRONGTYPE",
    );
    ask(
        &mut cl,
        &c("PING"),
        b"+PONG\r\n",
        "an error reply leaves the connection open",
    );
}

// A command may arrive one byte at a time: the parser keeps its place.
#[test]
fn test_10_a_command_split_at_every_byte() {
    let s = server();
    let mut cl = Client::connect_to(&s);
    let value = vec![b'v'; 300];
    let set = cmd(&[b"SET", b"split", &value]);
    for b in &set {
        cl.send(&[*b]);
    }
    cl.hint("keep the partial command between reads: a read may end anywhere, inside a length or a bulk string")
        .expect_bytes(b"+OK\r\n");
    let mut two = c("GET split");
    two.extend(c("PING"));
    for chunk in two.chunks(3) {
        cl.send(chunk);
    }
    let mut want = bulk(&value);
    want.extend_from_slice(b"+PONG\r\n");
    cl.expect_bytes(&want);
}

// 10,000 commands in one write: every reply, in order.
#[test]
fn test_11_heavy_10000_pipelined_commands() {
    let s = server();
    let mut cl = Client::connect_to(&s);
    let mut batch = Vec::new();
    let mut want = Vec::new();
    for i in 1..=10_000 {
        batch.extend(c("INCR n"));
        want.extend(format!(":{i}\r\n").into_bytes());
        if i % 1000 == 0 {
            batch.extend(b"PING\r\n");
            want.extend(b"+PONG\r\n");
        }
    }
    cl.hint("answer every whole command in the buffer, not one per read")
        .send(&batch)
        .expect_bytes(&want);
}

// Malformed input gets a protocol error and a close, never a crash, and
// a hostile length never an allocation of that size.
#[test]
fn test_12_malformed_requests_get_an_error_and_a_close() {
    let s = server();
    let rss_before = s.rss_kib();
    let long_line = vec![b'a'; 100 * 1024];
    for (what, bytes) in [
        ("a bulk length that is not a number", &b"*1\r\n$abc\r\n"[..]),
        ("an array length that is not a number", b"*x\r\n"),
        ("a bulk length of 9999999999", b"*1\r\n$9999999999\r\n"),
        ("an array of 100,000,000 elements", b"*100000000\r\n"),
        ("a negative bulk length", b"*1\r\n$-7\r\n"),
        (
            "an array element that is not a bulk string",
            b"*1\r\n:5\r\n",
        ),
        ("a bulk string without its CRLF", b"*1\r\n$3\r\nabcXY"),
        ("a 100 KiB line with no newline", &long_line),
    ] {
        let mut cl = Client::connect_to(&s);
        cl.send(bytes);
        let reply = String::from_utf8_lossy(&cl.read_until_closed()).into_owned();
        Report::new(format!("sent {what}"))
            .expected("a reply starting \"-ERR Protocol error\", then the connection closed")
            .got(format!("{reply:?}"))
            .hint("check lengths against limits before using them (Redis: 512 MiB per bulk, and refuse absurd array sizes); on a protocol error reply and close")
            .check(reply.starts_with("-ERR Protocol error"));
    }
    let rss_after = s.rss_kib();
    Report::new("sent hostile lengths ($9999999999, *100000000), then read the server's RSS")
        .expected("it to grow by less than 64 MiB")
        .got(format!("{rss_before} KiB before, {rss_after} KiB after"))
        .hint(
            "never reserve memory for a length the client claims; grow the buffer as bytes arrive",
        )
        .check(rss_after < rss_before + 64 * 1024);
    let mut cl = Client::connect_to(&s);
    ask(
        &mut cl,
        &c("PING"),
        b"+PONG\r\n",
        "after the bad clients, the server must serve others",
    );
}

// Inline commands, as typed into nc or telnet.
#[test]
fn test_13_inline_commands() {
    let s = server();
    let mut cl = Client::connect_to(&s);
    ask(
        &mut cl,
        b"PING\r\n",
        b"+PONG\r\n",
        "a line not starting with * is an inline command",
    );
    ask(
        &mut cl,
        b"SET  greeting   hello\r\n",
        b"+OK\r\n",
        "inline words are separated by runs of spaces",
    );
    ask(
        &mut cl,
        b"GET greeting\n",
        &bulk(b"hello"),
        "a bare LF ends an inline line too",
    );
    ask(
        &mut cl,
        b"\r\nPING\r\n",
        b"+PONG\r\n",
        "an empty line is skipped",
    );
}

// The real redis-cli talks to it (it sends COMMAND DOCS first, and
// expects Redis's replies).
#[test]
fn test_14_redis_cli_works() {
    let s = server();
    let port = s.addr().port().to_string();
    let cli = |args: &[&str]| {
        Cmd::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port])
            .args(args)
            .deadline(Duration::from_secs(10))
            .run()
    };
    cli(&["SET", "from-cli", "hi there"])
        .expect_success()
        .expect_stdout("OK\n");
    cli(&["GET", "from-cli"])
        .expect_success()
        .expect_stdout("hi there\n");
    cli(&["INCR", "cli-n"])
        .expect_success()
        .expect_stdout("1\n");
    cli(&["GET", "missing"])
        .expect_success()
        .expect_stdout("\n");
}

// Many clients at once on one key: every increment counted.
#[test]
fn test_15_heavy_50_clients_incr_one_key() {
    let s = server();
    let addr = s.addr();
    let threads: Vec<_> = (0..50)
        .map(|_| {
            std::thread::spawn(move || {
                let mut cl = Client::connect(addr);
                let mut batch = Vec::new();
                for _ in 0..200 {
                    batch.extend(c("INCR shared"));
                }
                cl.send(&batch);
                for _ in 0..200 {
                    let line = cl.read_line();
                    assert!(line.starts_with(':'), "INCR replied {line:?}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join()
            .expect("a client thread failed; its message is above");
    }
    let mut cl = Client::connect_to(&s);
    ask(
        &mut cl,
        &c("GET shared"),
        &bulk(b"10000"),
        "50 clients x 200 INCR must count 10000: is the read-modify-write atomic?",
    );
}

// Clients that vanish mid-command, or reset, leave nothing behind.
#[test]
fn test_16_abrupt_disconnects_leave_the_server_serving() {
    let s = server();
    let mut probe = Client::connect_to(&s);
    ask(&mut probe, &c("PING"), b"+PONG\r\n", "PING");
    let baseline = s.open_fds();
    for i in 0..50 {
        let mut cl = Client::connect_to(&s);
        cl.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10\r\nhal");
        if i % 2 == 0 {
            cl.reset();
        }
    }
    let fds = settle(SETTLE, || s.open_fds(), |n| n <= baseline);
    Report::new("opened 50 connections that each sent half a SET, then closed or reset")
        .expected(format!("the server's open fds back to {baseline}"))
        .got(format!("{fds:?}"))
        .hint("a read of 0 bytes or an error ends the connection: close it, whatever the parser holds")
        .check(fds.is_ok());
    ask(
        &mut probe,
        &c("GET k"),
        b"$-1\r\n",
        "a half-sent SET must not be applied",
    );
}

// The redis crate, as a Rust service would use it: a multiplexed
// connection, a pipeline, binary values.
#[test]
fn test_17_the_redis_crate_works() {
    let s = server();
    let url = format!("redis://{}", s.addr());
    let rt = labkit::wait::runtime(0);
    rt.block_on(async {
        let client = redis::Client::open(url.as_str()).expect("a Redis URL");
        let what = "redis::Client::get_multiplexed_async_connection()";
        let mut conn = match within_async(CALL, what, client.get_multiplexed_async_connection()).await {
            Ok(c) => c,
            Err(e) => s
                .report()
                .did(format!("connected to {url} with the redis crate"))
                .got(e)
                .hint("the crate sends CLIENT SETINFO first and ignores an error reply to it: is your error reply well formed?")
                .fail(),
        };
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg("crate").arg(&b"bin\r\n\0ary"[..]);
        pipe.cmd("GET").arg("crate");
        pipe.cmd("INCR").arg("crate-n");
        pipe.cmd("INCR").arg("crate-n");
        pipe.cmd("DEL").arg("crate");
        pipe.cmd("GET").arg("crate");
        type Replies = (String, Vec<u8>, i64, i64, i64, Option<Vec<u8>>);
        let got: redis::RedisResult<Replies> = within_async(CALL, "a pipeline of 6 commands", pipe.query_async(&mut conn)).await;
        let want: Replies = ("OK".into(), b"bin\r\n\0ary".to_vec(), 1, 2, 1, None);
        Report::new("sent SET crate <binary>, GET crate, INCR crate-n twice, DEL crate, GET crate as one pipeline with the redis crate")
            .expected(format!("Ok({want:?})"))
            .got(format!("{got:?}"))
            .hint("a pipeline is many commands in one write: every reply, in order")
            .check(got.as_ref().ok() == Some(&want));
    });
}

// ---------------------------------------------------------------------------
// Replication.

/// A master played by the test: it accepts the replica's connection and
/// reads its commands byte for byte.
struct FakeMaster {
    listener: TcpListener,
}

struct Link {
    conn: TcpStream,
    buf: Vec<u8>,
}

impl FakeMaster {
    fn new() -> FakeMaster {
        FakeMaster {
            listener: TcpListener::bind("127.0.0.1:0").expect("bind a fake master"),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener")
    }

    fn accept(&self, replica: &Server) -> Link {
        self.listener.set_nonblocking(true).expect("non-blocking");
        let start = Instant::now();
        loop {
            match self.listener.accept() {
                Ok((conn, _)) => {
                    conn.set_nonblocking(false).expect("blocking");
                    conn.set_read_timeout(Some(Duration::from_millis(100)))
                        .expect("a read timeout");
                    conn.set_nodelay(true).expect("nodelay");
                    return Link {
                        conn,
                        buf: Vec::new(),
                    };
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if start.elapsed() > SETTLE {
                        replica
                            .report()
                            .did(format!("started mini_redis --replicaof {}", self.addr()))
                            .expected(format!("it to connect to the master within {SETTLE:?}"))
                            .got("no connection")
                            .hint("with --replicaof, connect to the master at startup (in a background task)")
                            .fail();
                    }
                    // A poll interval: accept has no deadline of its own here.
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("the fake master's accept failed: {e}"),
            }
        }
    }
}

impl Link {
    /// Reads one RESP array of bulk strings from the replica; `Err` says
    /// what came instead.
    fn try_read_command(&mut self) -> Result<Vec<String>, String> {
        let start = Instant::now();
        loop {
            if let Some((args, used)) = parse_command(&self.buf) {
                self.buf.drain(..used);
                return Ok(args);
            }
            if start.elapsed() > SETTLE {
                return Err(format!(
                    "{:?} and then nothing for {SETTLE:?}",
                    String::from_utf8_lossy(&self.buf)
                ));
            }
            let mut chunk = [0u8; 4096];
            match self.conn.read(&mut chunk) {
                Ok(0) => {
                    return Err(format!(
                        "{:?}, then it closed the connection",
                        String::from_utf8_lossy(&self.buf)
                    ));
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(format!("reading failed: {e}")),
            }
        }
    }

    fn read_command(&mut self, replica: &Server, after: &str) -> Vec<String> {
        self.try_read_command().unwrap_or_else(|got| {
            replica
                .report()
                .did(after)
                .expected("a command (an array of bulk strings) from the replica")
                .got(got)
                .hint("the replica speaks RESP to its master, as a client would")
                .fail()
        })
    }

    fn expect(&mut self, replica: &Server, after: &str, want: &[&str], hint: &str) {
        let got = self.read_command(replica, after);
        if got != want {
            replica
                .report()
                .did(after)
                .expected(format!("the replica to send {want:?}"))
                .got(format!("{got:?}"))
                .hint(hint)
                .fail();
        }
    }

    /// Expects `REPLCONF ACK <offset>`. Earlier ACKs with a smaller offset
    /// may come first (a real replica also acks once a second, unasked);
    /// anything else is a failure.
    fn expect_ack(&mut self, replica: &Server, after: &str, offset: i64, hint: &str) {
        let mut earlier = Vec::new();
        loop {
            let got = match self.try_read_command() {
                Ok(got) => got,
                Err(e) => replica
                    .report()
                    .did(after)
                    .expected(format!(
                        "the replica to send [\"REPLCONF\", \"ACK\", \"{offset}\"]"
                    ))
                    .got(format!("ACKs of {earlier:?} only, then {e}"))
                    .hint(hint)
                    .fail(),
            };
            let acked = match got.as_slice() {
                [r, a, n]
                    if r.eq_ignore_ascii_case("REPLCONF") && a.eq_ignore_ascii_case("ACK") =>
                {
                    n.parse::<i64>().ok()
                }
                _ => None,
            };
            match acked {
                Some(n) if n == offset => return,
                Some(n) if n < offset => earlier.push(n),
                _ => replica
                    .report()
                    .did(after)
                    .expected(format!("the replica to send [\"REPLCONF\", \"ACK\", \"{offset}\"] (earlier ACKs with smaller offsets are allowed)"))
                    .got(format!("{got:?}"))
                    .hint(hint)
                    .fail(),
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.conn.write_all(bytes).expect("write to the replica");
    }
}

/// `(arguments, bytes used)` of one whole array of bulk strings at the start
/// of `buf`, or `None` if it is not all there (or not RESP).
fn parse_command(buf: &[u8]) -> Option<(Vec<String>, usize)> {
    fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
        let end = buf[at..].windows(2).position(|w| w == b"\r\n")? + at;
        Some((&buf[at..end], end + 2))
    }
    let (head, mut at) = line(buf, 0)?;
    let n: usize = std::str::from_utf8(head.strip_prefix(b"*")?)
        .ok()?
        .parse()
        .ok()?;
    let mut args = Vec::new();
    for _ in 0..n {
        let (len, next) = line(buf, at)?;
        let len: usize = std::str::from_utf8(len.strip_prefix(b"$")?)
            .ok()?
            .parse()
            .ok()?;
        if buf.len() < next + len + 2 {
            return None;
        }
        args.push(String::from_utf8_lossy(&buf[next..next + len]).into_owned());
        at = next + len + 2;
    }
    Some((args, at))
}

/// The 88-byte RDB snapshot of an empty Redis 7.2 (header, aux fields,
/// EOF marker, checksum).
const EMPTY_RDB_HEX: &str = "524544495330303131fa0972656469732d76657205372e322e30fa0a72656469732d62697473c040fa056374696d65c26d08bc65fa08757365642d6d656dc2b0c41000fa08616f662d62617365c000fff06e3bfec0ff5aa2";

fn empty_rdb() -> Vec<u8> {
    (0..EMPTY_RDB_HEX.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&EMPTY_RDB_HEX[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Starts a replica of `master` and plays the handshake, up to PSYNC.
fn handshake(master: &FakeMaster) -> (Server, Link) {
    let replica = Server::builder(BIN)
        .arg("--replicaof")
        .arg(master.addr().to_string())
        .spawn();
    let mut link = master.accept(&replica);
    let port = replica.addr().port().to_string();
    link.expect(
        &replica,
        "accepted the replica's connection",
        &["PING"],
        "the handshake starts with PING",
    );
    link.send(b"+PONG\r\n");
    link.expect(
        &replica,
        "answered +PONG",
        &["REPLCONF", "listening-port", &port],
        "then REPLCONF listening-port <the port this server listens on>",
    );
    link.send(b"+OK\r\n");
    link.expect(
        &replica,
        "answered +OK to listening-port",
        &["REPLCONF", "capa", "psync2"],
        "then REPLCONF capa psync2",
    );
    link.send(b"+OK\r\n");
    link.expect(
        &replica,
        "answered +OK to capa",
        &["PSYNC", "?", "-1"],
        "then PSYNC ? -1: no replication id, no offset (a full sync)",
    );
    (replica, link)
}

// The replica side of the handshake, in order, with a master the test
// plays.
#[test]
fn test_20_replica_handshake_with_a_master() {
    let master = FakeMaster::new();
    let (replica, _link) = handshake(&master);
    let mut cl = Client::connect_to(&replica);
    ask(
        &mut cl,
        &c("PING"),
        b"+PONG\r\n",
        "a replica serves clients while it syncs",
    );
}

// The stream after the snapshot: applied, never answered, and the offset
// counted in bytes from the one in +FULLRESYNC.
#[test]
fn test_21_replica_applies_the_stream_and_acks_its_byte_offset() {
    let master = FakeMaster::new();
    let (replica, mut link) = handshake(&master);
    let start_offset = 5000i64;
    let rdb = empty_rdb();
    let mut stream = Vec::new();
    stream.extend(
        format!("+FULLRESYNC 8371b4fb1155b71f4a04d3e1bc3e18c4a990aeeb {start_offset}\r\n")
            .into_bytes(),
    );
    stream.extend(format!("${}\r\n", rdb.len()).into_bytes());
    stream.extend(&rdb);
    // The first command follows the snapshot directly: no CRLF between.
    let mut cmds = Vec::new();
    cmds.extend(c("SELECT 0"));
    cmds.extend(c("SET alpha 1"));
    cmds.extend(c("SET beta 2"));
    cmds.extend(c("PING"));
    cmds.extend(c("INCR alpha"));
    cmds.extend(c("DEL beta"));
    cmds.extend(cmd(&[b"SET", b"bin", b"x\r\ny"]));
    let getack = c("REPLCONF GETACK *");
    stream.extend(&cmds);
    stream.extend(&getack);
    // In small pieces, so that lengths and the snapshot are split too.
    for chunk in stream.chunks(7) {
        link.send(chunk);
    }
    let first = start_offset + cmds.len() as i64;
    link.expect_ack(
        &replica,
        "sent +FULLRESYNC <id> 5000, the snapshot, 7 commands and REPLCONF GETACK *",
        first,
        &format!(
            "the only thing a replica sends after the sync is ACKs; the offset is 5000 (from +FULLRESYNC) plus the {} bytes of the commands before the GETACK: count bytes, not commands, and skip exactly the snapshot's length (it has no CRLF after it)",
            cmds.len()
        ),
    );
    let mut cl = Client::connect_to(&replica);
    ask(
        &mut cl,
        &c("GET alpha"),
        &bulk(b"2"),
        "SET alpha 1 and INCR alpha came from the master: alpha is 2",
    );
    ask(
        &mut cl,
        &c("EXISTS beta"),
        b":0\r\n",
        "DEL beta came from the master",
    );
    ask(
        &mut cl,
        &cmd(&[b"GET", b"bin"]),
        &bulk(b"x\r\ny"),
        "the stream is RESP: binary values too",
    );
    ask(
        &mut cl,
        &c("SET mine 1"),
        b"-READONLY You can't write against a read only replica.\r\n",
        "a replica refuses writes from its clients, in Redis's words",
    );
    let more = c("SET gamma 3");
    link.send(&more);
    link.send(&getack);
    let second = first + getack.len() as i64 + more.len() as i64;
    link.expect_ack(
        &replica,
        "sent SET gamma 3 and REPLCONF GETACK * again",
        second,
        "the first GETACK's own bytes count in the offset after it",
    );
    ask(
        &mut cl,
        &c("GET gamma"),
        &bulk(b"3"),
        "SET gamma 3 came from the master",
    );
}

/// Sends a command to a real Redis and returns its reply line.
fn redis_line(cl: &mut Client, text: &str) -> String {
    cl.send(&c(text));
    cl.read_line()
}

/// Polls `fact` on the replica until it holds.
fn until_replicated(replica: &Server, did: &str, mut fact: impl FnMut() -> bool) {
    if settle(SETTLE, &mut fact, |ok| ok).is_err() {
        replica
            .report()
            .did(did)
            .expected(format!("the write to reach the replica within {SETTLE:?}"))
            .got("it did not")
            .hint("is the replica connected (INFO replication on the master), and does it apply the stream?")
            .fail();
    }
}

/// A replica of a real redis-server: writes reach it, WAIT counts it.
fn follow_real_master(master: &RedisServer, replica: &Server) {
    let mut m = Client::connect(master.addr());
    let mut r = Client::connect_to(replica);
    let connected = settle(SETTLE, || replica_count(&mut m), |n| n == 1);
    if connected.is_err() {
        replica
            .report()
            .did(format!("started mini_redis --replicaof {}", master.addr()))
            .expected(format!("the real master to list one connected replica within {SETTLE:?}"))
            .got(format!("connected_slaves: {connected:?}"))
            .hint("the handshake: PING, REPLCONF listening-port, REPLCONF capa psync2, PSYNC ? -1; then read +FULLRESYNC and the snapshot")
            .fail();
    }
    // A new value each time, so that a replica still holding an old one
    // does not pass.
    static ROUND: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let token = format!(
        "round-{}",
        ROUND.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    redis_line(&mut m, &format!("SET probe {token}"));
    until_replicated(replica, "SET probe on the master", || {
        r.send(&c("GET probe"));
        let head = r.read_line();
        if head.starts_with("$-1") {
            return false;
        }
        r.read_line().trim_end() == token
    });
    let mut burst = Vec::new();
    for i in 0..1000 {
        burst.extend(c(&format!("SET burst:{i} {i}")));
    }
    m.send(&burst).expect_bytes(&b"+OK\r\n".repeat(1000));
    let waited = redis_line(&mut m, "WAIT 1 5000");
    Report::new("wrote 1000 keys on the real master, then WAIT 1 5000 there")
        .expected(":1 (one replica acknowledged every byte)")
        .got(format!("{:?}", waited.trim_end()))
        .hint("answer REPLCONF GETACK * with REPLCONF ACK <offset>, the offset counting every byte of the stream, from the +FULLRESYNC offset")
        .check(waited.trim_end() == ":1");
    ask(
        &mut r,
        &c("GET burst:999"),
        &bulk(b"999"),
        "after WAIT, the replica holds the last write",
    );
}

/// `connected_slaves` in the master's INFO replication.
fn replica_count(m: &mut Client) -> i64 {
    m.send(&c("INFO replication"));
    let head = m.read_line();
    let len: usize = head.trim_end().trim_start_matches('$').parse().unwrap_or(0);
    let body = String::from_utf8_lossy(&m.read_exact(len + 2)).into_owned();
    body.lines()
        .find_map(|l| l.strip_prefix("connected_slaves:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(-1)
}

// A replica of a real redis-server: writes on the master reach it, and the
// master's WAIT counts it.
#[test]
fn test_22_replica_of_a_real_redis_server() {
    let master = RedisServer::start();
    let replica = Server::builder(BIN)
        .arg("--replicaof")
        .arg(master.addr().to_string())
        .spawn();
    follow_real_master(&master, &replica);
}

// The master crashes and comes back (empty, with a new replication id):
// the replica reconnects and follows it again.
#[test]
fn test_23_replica_resyncs_after_the_master_restarts() {
    let mut master = RedisServer::start();
    let replica = Server::builder(BIN)
        .arg("--replicaof")
        .arg(master.addr().to_string())
        .spawn();
    follow_real_master(&master, &replica);
    master.restart();
    follow_real_master(&master, &replica);
}
