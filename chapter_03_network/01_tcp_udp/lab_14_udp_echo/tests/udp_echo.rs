//! The grader for lab 14, udp_echo.
//!
//! Tests 01-06 start `udp_echo_server` on `127.0.0.1:0` and talk to it with
//! `labkit::udp::Probe`s, UDP sockets of the test's own. Every wait for a
//! datagram has a deadline ([`REPLY_DEADLINE`]): on loopback an echo comes
//! back in microseconds, so a test that hits it has found a datagram that
//! will never come. A server asleep with the datagram still unread in its
//! socket fails at once, before the deadline.
//!
//! Tests 10-13 run `udp_echo_client` (with `labkit::Cmd`, which has a
//! deadline) against the real server, against a socket of the test's that
//! never answers and counts what arrives, and against sockets of the test's
//! that drop the first datagram or answer with impostors (once, or as a
//! stream that must not keep the client waiting).

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use labkit::Cmd;
use labkit::report::show;
use labkit::run::Outcome;
use labkit::server::Server;
use labkit::udp::{Probe, REPLY_DEADLINE, send_from};

const SERVER: &str = env!("CARGO_BIN_EXE_udp_echo_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_udp_echo_client");

/// The most data one UDP datagram carries over IPv4: 65,535 bytes of IP
/// packet, minus 20 of IP header and 8 of UDP header.
const MAX_DATAGRAM: usize = 65_507;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Receives the next datagram on `sock` and fails unless it comes from the
/// server and holds exactly `sent`. `did` says what the test did, for the
/// message; `hint` is where to look if the datagram never comes.
#[track_caller]
fn expect_echo(server: &Server, sock: &Probe, sent: &[u8], did: &str, hint: &str) {
    let (got, from) = sock.recv_from(server, did, hint);
    if from != server.addr() {
        server
            .report()
            .did(did)
            .expected(format!(
                "the echo to come from the server's address {}",
                server.addr()
            ))
            .got(format!("a datagram from {from}"))
            .hint("send the reply from the socket the request came in on")
            .fail();
    }
    if got != sent {
        let detail = if got.len() != sent.len() {
            format!(
                "{} bytes instead of {}: {}",
                got.len(),
                sent.len(),
                show(&got)
            )
        } else {
            let at = got.iter().zip(sent).position(|(a, b)| a != b).unwrap_or(0);
            format!(
                "the right length, but byte {at} differs ({:#04x} instead of {:#04x}): {}",
                got[at],
                sent[at],
                show(&got)
            )
        };
        let hint = if got.len() == 1500 || (got.len() < sent.len() && got.len().is_power_of_two()) {
            "a buffer smaller than the datagram cuts it short without an error: is your receive buffer 65,536 bytes?"
        } else {
            "do you send back exactly the bytes received (buf[..n], with n from recv_from), to the address recv_from gave you?"
        };
        server
            .report()
            .did(did)
            .expected(format!(
                "the same datagram back, {} bytes: {}",
                sent.len(),
                show(sent)
            ))
            .got(detail)
            .hint(hint)
            .fail();
    }
}

/// Runs the client with a 10-second deadline.
fn run_client(addr: SocketAddr, message: &str, timeout_ms: u64, retries: u32) -> Outcome {
    Cmd::new(CLIENT)
        .arg(addr.to_string())
        .arg(message)
        .args(["--timeout-ms", &timeout_ms.to_string()])
        .args(["--retries", &retries.to_string()])
        .deadline(Duration::from_secs(10))
        .run()
}

/// The datagram a test sends to its own stand-in server to say "the client
/// has exited": everything the client sent was sent before it.
const MARKER: &[u8] = b"[test] end-of-test marker";

/// A stand-in server on a thread of its own: a socket of the test's that
/// records every datagram and lets the test decide how to answer each one.
struct StandIn {
    addr: SocketAddr,
    received: mpsc::Receiver<Vec<Vec<u8>>>,
}

impl StandIn {
    /// Binds `127.0.0.1:0` and calls `answer(i, datagram, sender, socket)`
    /// for the i-th datagram (from 0). The thread ends at the [`MARKER`], or
    /// when nothing arrives for [`REPLY_DEADLINE`].
    fn spawn(
        mut answer: impl FnMut(usize, &[u8], SocketAddr, &UdpSocket) + Send + 'static,
    ) -> StandIn {
        let sock = Probe::new();
        let addr = sock.addr();
        let (tx, received) = mpsc::channel();
        thread::spawn(move || {
            let mut all: Vec<Vec<u8>> = Vec::new();
            while let Some((d, from)) = sock.recv() {
                if d == MARKER {
                    break;
                }
                answer(all.len(), &d, from, sock.socket());
                all.push(d);
            }
            let _ = tx.send(all);
        });
        StandIn { addr, received }
    }

    /// Every datagram the client sent, in order. Call it once the client has
    /// exited: the marker then arrives after all of them.
    fn finish(self) -> Vec<Vec<u8>> {
        Probe::new().send(self.addr, MARKER);
        self.received
            .recv_timeout(REPLY_DEADLINE)
            .expect("[test] the stand-in server did not finish in time")
    }
}

/// The sizes of datagrams, for messages: `3, 4, 1000`.
fn lengths(datagrams: &[Vec<u8>]) -> String {
    let sizes: Vec<String> = datagrams.iter().map(|d| d.len().to_string()).collect();
    sizes.join(", ")
}

/// `n datagrams: "a", "b"` for messages.
fn list(datagrams: &[Vec<u8>]) -> String {
    let shown: Vec<String> = datagrams.iter().take(8).map(show).collect();
    let more = if datagrams.len() > 8 { ", ..." } else { "" };
    format!(
        "{} datagrams: [{}{more}]",
        datagrams.len(),
        shown.join(", ")
    )
}

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

// One datagram in, the same datagram out, from the server's address: the whole job.
#[test]
fn test_01_echoes_one_datagram() {
    let server = Server::spawn(SERVER);
    let sock = Probe::new();
    sock.send(server.addr(), b"hello, udp");
    expect_echo(
        &server,
        &sock,
        b"hello, udp",
        "sent one datagram \"hello, udp\" (10 bytes)",
        "do you recv_from in a loop and send_to the bytes back to the address recv_from returned?",
    );
    server.expect_alive("got its echo");
}

// Datagrams sent back to back come back as the same separate datagrams: UDP never merges or splits them.
#[test]
fn test_02_keeps_datagram_boundaries() {
    let server = Server::spawn(SERVER);
    let sock = Probe::new();
    let sent: Vec<Vec<u8>> = [
        &b"one"[..],
        b"two\n",
        b"three, with a comma",
        b"x",
        b"line\nline\n",
        &[b'y'; 1000],
        b"\r\n",
        b"\0binary\xff",
        &[b'z'; 4000],
        b"last",
    ]
    .iter()
    .map(|d| d.to_vec())
    .collect();
    for d in &sent {
        sock.send(server.addr(), d);
    }
    let mut got = Vec::new();
    for _ in 0..sent.len() {
        match sock.next_from(
            &server,
            &format!("sent {} datagrams back to back", sent.len()),
        ) {
            Some((d, _)) => got.push(d),
            None => break,
        }
    }
    // A datagram is never merged or split; their order on loopback is the
    // order sent, but the test does not insist on it.
    let (mut want, mut have) = (sent.clone(), got.clone());
    want.sort();
    have.sort();
    if want != have {
        server
            .report()
            .did(format!("sent {} back to back", list(&sent)))
            .did(format!(
                "received datagram by datagram, up to {REPLY_DEADLINE:?} each"
            ))
            .expected(format!(
                "the same {} datagrams back, one per receive, of {} bytes",
                sent.len(),
                lengths(&sent)
            ))
            .got(format!("{}, of {} bytes", list(&got), lengths(&got)))
            .hint("answer each recv_from with exactly one send_to of buf[..n], into a buffer big enough for any datagram (65,536 bytes): one datagram in, the same datagram out")
            .fail();
    }
    server.expect_alive(format!("sent {} datagrams", sent.len()));
}

// The largest datagram IPv4 carries (65,507 bytes) round-trips byte for byte: the buffer must hold it.
#[test]
fn test_03_echoes_a_maximum_size_datagram_byte_for_byte() {
    let server = Server::spawn(SERVER);
    let sock = Probe::new();
    // Non-repeating over short spans, so a shifted or cut copy shows.
    let big: Vec<u8> = (0..MAX_DATAGRAM)
        .map(|i| (i % 251) as u8 ^ (i / 251) as u8)
        .collect();
    sock.send(server.addr(), &big);
    expect_echo(
        &server,
        &sock,
        &big,
        "sent one datagram of 65,507 bytes (the IPv4 maximum)",
        "is your receive buffer 65,536 bytes? recv_from cuts a datagram to the buffer's size without an error",
    );
    // Then something small, to see the buffer is reused correctly.
    sock.send(server.addr(), b"small after big");
    expect_echo(
        &server,
        &sock,
        b"small after big",
        "sent 65,507 bytes, got them back, then sent \"small after big\"",
        "do you send buf[..n], only the bytes of this datagram?",
    );
}

// An empty datagram is a datagram (not an end of file, as a read of 0 is in TCP): echoed, and the server goes on.
#[test]
fn test_04_echoes_an_empty_datagram_and_keeps_serving() {
    let server = Server::spawn(SERVER);
    let sock = Probe::new();
    sock.send(server.addr(), b"before");
    expect_echo(
        &server,
        &sock,
        b"before",
        "sent \"before\"",
        "do you recv_from in a loop and send_to the bytes back to the address recv_from returned?",
    );
    sock.send(server.addr(), b"");
    expect_echo(
        &server,
        &sock,
        b"",
        "sent \"before\", got it back, then sent an empty datagram (0 bytes)",
        "recv_from returning 0 means an empty datagram arrived, not that a client is done: echo it (an empty send_to) and go on",
    );
    sock.send(server.addr(), b"after");
    expect_echo(
        &server,
        &sock,
        b"after",
        "sent an empty datagram, got it back, then sent \"after\"",
        "does your loop stop after an empty datagram?",
    );
}

// Several clients share one server socket; each reply goes to the address its request came from.
#[test]
fn test_05_answers_each_client_at_its_own_address() {
    const N: usize = 5;
    let server = Server::spawn(SERVER);
    let clients: Vec<Probe> = (0..N).map(|_| Probe::new()).collect();
    // First round in order, second in reverse: a server that remembers the
    // first (or the last) client fails one of them.
    for round in 0..2 {
        let order: Vec<usize> = if round == 0 {
            (0..N).collect()
        } else {
            (0..N).rev().collect()
        };
        for &i in &order {
            clients[i].send(
                server.addr(),
                format!("round {round} from client {i}").as_bytes(),
            );
        }
        for &i in &order {
            let me = clients[i].addr();
            expect_echo(
                &server,
                &clients[i],
                format!("round {round} from client {i}").as_bytes(),
                &format!(
                    "round {round}: {N} clients on their own sockets each sent \"round {round} from client <i>\"; reading client {i}'s reply at {me}"
                ),
                "send each reply to the address recv_from returned for that datagram, not to an address you saved earlier",
            );
        }
    }
}

// A client that sends and vanishes gets an ICMP "port unreachable" for its echo; the server must not die of it.
#[test]
fn test_06_survives_datagrams_from_clients_that_have_gone() {
    let server = Server::spawn(SERVER);
    for i in 0..20 {
        // Send, then close the socket at once: its echo finds no one.
        let gone = Probe::new();
        gone.send(server.addr(), format!("gone {i}").as_bytes());
    }
    let sock = Probe::new();
    for i in 0..3 {
        let msg = format!("still here {i}");
        sock.send(server.addr(), msg.as_bytes());
        expect_echo(
            &server,
            &sock,
            msg.as_bytes(),
            &format!(
                "20 clients each sent a datagram and closed their socket at once; then a live client sent {msg:?}"
            ),
            "an error from recv_from or send_to (ECONNREFUSED when an echo hit a closed port) concerns one datagram: log it and keep serving",
        );
    }
    server.expect_alive("sent 20 datagrams from clients that had gone");
}

// ---------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------

// Against the real server, the client prints the echo and exits 0.
#[test]
fn test_10_client_prints_the_echo_from_the_server() {
    let server = Server::spawn(SERVER);
    // A long timeout: the echo comes in microseconds, so it is never hit.
    let out = run_client(server.addr(), "hello over udp", 2000, 3);
    out.expect_success();
    out.expect_stdout("hello over udp\n");
    server.expect_alive("ran the client");
}

// With nobody answering, the client sends exactly 1 + retries datagrams, each the message, then exits 1 with a message.
#[test]
fn test_11_client_gives_up_after_its_retries_when_nobody_answers() {
    let silent = StandIn::spawn(|_, _, _, _| {});
    let addr = silent.addr;
    let out = run_client(addr, "anybody there?", 100, 3);
    let did = format!(
        "bound a UDP socket at {addr} that receives and never answers; ran the client with --timeout-ms 100 --retries 3"
    );
    if out.timed_out {
        out.report()
            .did(&did)
            .expected("4 attempts of 100 ms, then exit code 1: done in well under a second")
            .got(out.ending())
            .hint("do you stop after 1 + retries attempts? A loop that only ends on an echo never ends here")
            .fail();
    }
    let got = silent.finish();
    let want = vec![b"anybody there?".to_vec(); 4];
    if got != want {
        let hint = match got.len() {
            0 => "send MESSAGE as one datagram with send_to(ADDR)",
            1 => {
                "when no echo comes within the timeout, send the message again, up to --retries more times"
            }
            n if n > 4 => {
                "--retries 3 means 3 more tries after the first: 4 datagrams in all. Check your loop bounds"
            }
            _ => "each attempt sends the same datagram: MESSAGE's bytes exactly, nothing added",
        };
        out.report()
            .did(&did)
            .expected(format!("the socket to receive {}", list(&want)))
            .got(format!("it received {}", list(&got)))
            .hint(hint)
            .fail();
    }
    if out.code != Some(1) {
        out.report()
            .did(&did)
            .expected("exit code 1 after the last attempt went unanswered")
            .got(out.ending())
            .hint("after the last retry, print why on stderr and exit with code 1")
            .fail();
    }
    if out.stderr.is_empty() || !out.stdout.is_empty() {
        out.report()
            .did(&did)
            .expected("a message on stderr saying nobody answered, nothing on stdout")
            .got(format!(
                "stderr {}, stdout {}",
                show(&out.stderr),
                show(&out.stdout)
            ))
            .hint("stdout carries only the echo; errors go to stderr (eprintln!)")
            .fail();
    }
}

// The first datagram is lost (the test drops it); the client sends again after its timeout, prints the echo, and stops.
#[test]
fn test_12_client_retries_after_a_lost_datagram() {
    // Drops datagram 0, echoes datagram 1 (and any later one).
    let lossy = StandIn::spawn(|i, d, from, sock| {
        if i >= 1 {
            send_from(sock, from, d);
        }
    });
    let addr = lossy.addr;
    let out = run_client(addr, "second time lucky", 100, 3);
    let did = format!(
        "bound a UDP socket at {addr} that drops the first datagram and echoes the next; ran the client with --timeout-ms 100 --retries 3"
    );
    if out.code != Some(0) || out.stdout != b"second time lucky\n" {
        out.report()
            .did(&did)
            .expected("the client to send again after 100 ms, then print \"second time lucky\\n\" and exit 0")
            .got(format!("{}, stdout {}", out.ending(), show(&out.stdout)))
            .hint("when no echo comes within the timeout, send the message again; print the echo when it comes")
            .fail();
    }
    let got = lossy.finish();
    let want = vec![b"second time lucky".to_vec(); 2];
    if got != want {
        out.report()
            .did(&did)
            .expected(format!(
                "exactly {}: the lost one and the answered one",
                list(&want)
            ))
            .got(format!("the socket received {}", list(&got)))
            .hint("once the echo has come, send nothing more")
            .fail();
    }
}

// Only a datagram from ADDR holding exactly MESSAGE is the echo: the same bytes from elsewhere, or other bytes from ADDR, are not.
#[test]
fn test_13_client_ignores_datagrams_that_are_not_the_echo() {
    let stranger = Probe::new();
    let stranger_addr = stranger.addr();
    // Answers the first datagram with two impostors only, the second with
    // the real echo.
    let fake = StandIn::spawn(move |i, d, from, sock| {
        if i == 0 {
            stranger.send(from, d);
            send_from(sock, from, b"not the echo");
        } else {
            send_from(sock, from, d);
        }
    });
    let addr = fake.addr;
    let out = run_client(addr, "the real one", 500, 1);
    let did = format!(
        "bound a UDP socket at {addr}; ran the client with it as ADDR, --timeout-ms 500 --retries 1"
    );
    let replies = format!(
        "answered the first datagram with the same bytes from another address ({stranger_addr}), then \"not the echo\" from {addr}; answered the second with the real echo"
    );
    if out.code != Some(0) || out.stdout != b"the real one\n" {
        let hint = if out.stdout.starts_with(b"not the echo") {
            "a datagram from the server that does not hold MESSAGE is not the echo: ignore it and keep waiting"
        } else {
            "ignore the datagrams that are not the echo and keep waiting until the timeout; then send again, and print the echo (followed by a newline) when it comes"
        };
        out.report()
            .did(&did)
            .did(&replies)
            .expected("the client to ignore both impostors, send again after 500 ms, print \"the real one\\n\" and exit 0")
            .got(format!("{}, stdout {}", out.ending(), show(&out.stdout)))
            .hint(hint)
            .fail();
    }
    let got = fake.finish();
    if got.len() != 2 {
        out.report()
            .did(&did)
            .did(&replies)
            .expected("the client to ignore both impostors and send again: 2 datagrams")
            .got(format!("the socket received {}", list(&got)))
            .hint(
                "a datagram from another address is not the echo, even with the right bytes: compare the address recv_from returns with ADDR",
            )
            .fail();
    }
}

/// How long test 14 keeps its stream of strays going if the client never
/// sends again: many times the client's 300 ms timeout.
const STRAYS_FOR_AT_MOST: Duration = Duration::from_secs(5);

// Strays keep arriving, every few milliseconds, from the first datagram on: the same bytes from
// another address, the message with more bytes after it and other bytes from ADDR. The attempt's
// deadline still holds: the client sends again after its timeout and takes the real echo.
#[test]
fn test_14_client_keeps_its_deadline_while_strays_keep_arriving() {
    const MESSAGE: &str = "the real one";
    const LONGER: &[u8] = b"the real one, and more";
    let (to_strays, first_from) = mpsc::channel::<(SocketAddr, UdpSocket)>();
    let retried = Arc::new(AtomicBool::new(false));
    let stranger = Probe::new();
    let stranger_addr = stranger.addr();
    // The stream of strays, on a thread of its own. It is paced (a few
    // milliseconds apart, far below the client's timeout) rather than
    // synchronised with anything: its only job is that no 300 ms pass
    // without a datagram. Returns how many rounds it sent, or `Err` when
    // it gave up waiting for the client's second datagram.
    let strays = {
        let retried = Arc::clone(&retried);
        thread::spawn(move || -> Result<usize, usize> {
            let Ok((client, sock)) = first_from.recv_timeout(REPLY_DEADLINE) else {
                return Ok(0);
            };
            let start = Instant::now();
            let mut rounds = 0;
            while !retried.load(Ordering::SeqCst) {
                if start.elapsed() > STRAYS_FOR_AT_MOST {
                    return Err(rounds);
                }
                stranger.send(client, MESSAGE.as_bytes());
                let _ = sock.send_to(LONGER, client);
                let _ = sock.send_to(b"not the echo", client);
                rounds += 1;
                thread::sleep(Duration::from_millis(5));
            }
            Ok(rounds)
        })
    };
    let fake = {
        let retried = Arc::clone(&retried);
        StandIn::spawn(move |i, d, from, sock| {
            if i == 0 {
                let sock = sock
                    .try_clone()
                    .expect("[test] clone the stand-in's socket");
                let _ = to_strays.send((from, sock));
            } else {
                retried.store(true, Ordering::SeqCst);
                send_from(sock, from, d);
            }
        })
    };
    let addr = fake.addr;
    let out = run_client(addr, MESSAGE, 300, 1);
    let got = fake.finish();
    let rounds = strays.join().expect("[test] the strays' thread");
    let did = format!(
        "bound a UDP socket at {addr}; ran the client with it as ADDR, --timeout-ms 300 --retries 1"
    );
    let replies = format!(
        "from the first datagram on, every 5 ms: {MESSAGE:?} from another address ({stranger_addr}), {:?} and \"not the echo\" from {addr}; the second datagram got the real echo",
        show(LONGER)
    );
    if let Err(rounds) = rounds {
        out.report()
            .did(&did)
            .did(&replies)
            .expected("a second datagram about 300 ms after the first: the attempt's deadline passed")
            .got(format!(
                "no second datagram in {STRAYS_FOR_AT_MOST:?}, while {} strays arrived",
                rounds * 3
            ))
            .hint("a stray datagram must not restart the wait: fix the attempt's deadline when the datagram leaves, and before each recv_from set the read timeout to the time left until it (Instant::saturating_duration_since)")
            .fail();
    }
    if got.len() == 1 && out.code == Some(0) {
        out.report()
            .did(&did)
            .did(&replies)
            .expected("the client to ignore every stray and send again")
            .got(format!(
                "it sent one datagram and exited 0, stdout {}",
                show(&out.stdout)
            ))
            .hint("a buffer of exactly MESSAGE's length cuts the longer datagram short without an error, so it looks like the echo: receive into a buffer at least one byte larger than MESSAGE, and compare buf[..n]")
            .fail();
    }
    if out.code != Some(0) || out.stdout != format!("{MESSAGE}\n").as_bytes() || got.len() != 2 {
        out.report()
            .did(&did)
            .did(&replies)
            .expected(format!(
                "2 datagrams sent, then {MESSAGE:?} and a newline on stdout, exit 0"
            ))
            .got(format!(
                "{}, stdout {}; the socket received {}",
                out.ending(),
                show(&out.stdout),
                list(&got)
            ))
            .hint("only a datagram from ADDR holding exactly MESSAGE is the echo; everything else is ignored until the attempt's deadline")
            .fail();
    }
}
