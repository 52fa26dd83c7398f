//! A UDP echo server: every datagram goes back to whoever sent it.
//!
//! ```text
//! udp_echo_server [ADDR]        (default 127.0.0.1:7014)
//! ```
//!
//! # Design
//!
//! UDP has no connections, so there is nothing to accept and nothing to
//! close: one socket receives the datagrams of every client, and
//! `recv_from` says who sent each one. The whole server is one loop on one
//! thread: `recv_from` a datagram, `send_to` the same bytes back to the
//! address it came from. Nothing is remembered between two datagrams, so a
//! thousand clients cost exactly what one costs.
//!
//! A datagram is a message, not a slice of a stream: one `send_to` on the
//! client is one `recv_from` here, whole or not at all. The kernel never
//! merges two datagrams, never splits one. That is why the buffer must be big
//! enough for the largest datagram: when it is too small, `recv_from` fills
//! it, *throws the rest away* and returns the buffer's length, with no error
//! (the `MSG_TRUNC` flag of `recvmsg` is the only trace). Over IPv4 a
//! datagram carries at most 65,507 bytes of data (65,535 for the IP packet,
//! minus 20 of IP header and 8 of UDP header), so one 64 KiB buffer,
//! allocated once and reused, holds any of them.
//!
//! # Errors
//!
//! On a connected UDP socket, Linux reports an ICMP "port unreachable"
//! (a reply to a client that has gone) as `ECONNREFUSED` on the *next*
//! receive; on an unconnected one, like ours, it stays silent unless asked
//! (`IP_RECVERR`), while Windows reports it as `WSAECONNRESET` even then.
//! Either way such an error concerns one past datagram, not the socket: a
//! server that ends on it lets any client that vanishes take it down. So
//! every error is logged and the loop goes on.

use std::io;
use std::net::UdpSocket;
use std::thread;
use std::time::Duration;

/// The address when none is given on the command line.
const DEFAULT_ADDR: &str = "127.0.0.1:7014";

/// Big enough for the largest datagram there is (65,507 bytes of data over
/// IPv4; a little more would fit in an IPv6 jumbogram, which nobody sends).
const BUF_SIZE: usize = 64 * 1024;

/// How long to pause after an error that is not about one datagram, so a
/// broken socket cannot turn the loop into a busy one.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEFAULT_ADDR.to_string());
    let socket = match UdpSocket::bind(&addr) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("udp_echo_server: cannot bind {addr}: {e}");
            std::process::exit(1);
        }
    };
    let local = socket.local_addr().expect("a bound socket has an address");
    // Rust's stdout is line-buffered even into a pipe: this line leaves at
    // the newline, and the tests wait for it before sending.
    println!("listening on {local}");

    serve(&socket)
}

/// Echoes datagrams forever.
fn serve(socket: &UdpSocket) -> ! {
    // One buffer for the life of the server: no allocation per datagram. It
    // lives on the heap because 64 KiB is a lot for a stack frame.
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf) {
            // `n` may be 0: an empty datagram is still a datagram (unlike
            // TCP, where a read of 0 means the other side is done).
            Ok(got) => got,
            Err(e) => {
                eprintln!("udp_echo_server: receive failed: {e}");
                if !about_one_datagram(&e) {
                    thread::sleep(ERROR_BACKOFF);
                }
                continue;
            }
        };
        // Exactly the `n` bytes received, to exactly the address they came
        // from: the reply is addressed per datagram, never to "the client".
        match socket.send_to(&buf[..n], peer) {
            Ok(sent) if sent == n => {}
            // UDP sends a datagram whole or not at all; this cannot happen,
            // but a silent short echo would be the worst way to find out.
            Ok(sent) => eprintln!("udp_echo_server: {peer}: sent {sent} of {n} bytes"),
            // A full send queue (ENOBUFS) or an unreachable address: that
            // datagram's echo is lost, which UDP allows. Carry on.
            Err(e) => eprintln!("udp_echo_server: {peer}: send failed: {e}"),
        }
    }
}

/// Whether an error reports something about one earlier datagram (so the
/// next call may well succeed at once) rather than about the socket.
fn about_one_datagram(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}
