//! A UDP echo client: send once, wait a while, ask again, give up.
//!
//! ```text
//! udp_echo_client ADDR MESSAGE [--timeout-ms N] [--retries N]
//!                              (defaults: --timeout-ms 1000 --retries 3)
//! ```
//!
//! # Design
//!
//! UDP delivers a datagram or loses it, and says nothing either way; so the
//! only way to know a request arrived is an answer, and the only remedy for
//! silence is to ask again. The client makes at most `1 + retries` attempts;
//! each sends MESSAGE as one datagram and waits until that attempt's
//! deadline for the echo. The first echo ends it all: print, exit 0.
//!
//! Waiting uses the socket's read timeout (`SO_RCVTIMEO`): `recv_from`
//! returns `WouldBlock` when it passes. The deadline is per attempt and
//! fixed when the datagram leaves; every datagram that is not the echo
//! shortens the next wait rather than restarting it, or a stream of stray
//! datagrams would keep the client waiting forever.
//!
//! # What counts as the echo
//!
//! The socket is not connected, so the kernel hands us datagrams from
//! anybody who knows our port. The echo must come from the server's address
//! and hold exactly MESSAGE; anything else is ignored (and logged on
//! stderr). A late echo of an earlier attempt is welcome: it holds the same
//! bytes, and it proves the server answered. (`connect` on a UDP socket
//! would make the kernel do the address filtering, and report an ICMP "port
//! unreachable" as `ECONNREFUSED`; a real protocol also puts a request id in
//! each datagram, so that a reply can be matched to its request.)

use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How long to wait for each echo unless `--timeout-ms` says otherwise.
const DEFAULT_TIMEOUT_MS: u64 = 1000;

/// How many times to send again unless `--retries` says otherwise.
const DEFAULT_RETRIES: u32 = 3;

const USAGE: &str = "usage: udp_echo_client ADDR MESSAGE [--timeout-ms N] [--retries N]";

/// The parsed command line.
struct Args {
    server: SocketAddr,
    message: String,
    timeout: Duration,
    retries: u32,
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("udp_echo_client: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    match echo(&args) {
        Ok(Some(reply)) => {
            // The reply is exactly MESSAGE, which was a String: valid UTF-8.
            println!("{}", String::from_utf8_lossy(&reply));
            ExitCode::SUCCESS
        }
        Ok(None) => {
            let attempts = u64::from(args.retries) + 1;
            eprintln!(
                "udp_echo_client: no echo from {} after {attempts} attempts ({} ms each): giving up",
                args.server,
                args.timeout.as_millis()
            );
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("udp_echo_client: {}: {e}", args.server);
            ExitCode::from(1)
        }
    }
}

/// Sends the message up to `1 + retries` times; returns the echo, or `None`
/// when every attempt went unanswered.
fn echo(args: &Args) -> io::Result<Option<Vec<u8>>> {
    // Port 0: the kernel picks a free port, and the server answers there.
    // Bind the unspecified address of the server's family (IPv4 or IPv6).
    let local: SocketAddr = if args.server.is_ipv4() {
        "0.0.0.0:0".parse().expect("a valid address")
    } else {
        "[::]:0".parse().expect("a valid address")
    };
    let socket = UdpSocket::bind(local)?;
    let message = args.message.as_bytes();
    // Room for one byte more than the message: a longer datagram then shows
    // up as longer instead of being cut to look like a match.
    let mut buf = vec![0u8; message.len() + 1];

    for attempt in 0..=args.retries {
        if attempt > 0 {
            eprintln!(
                "udp_echo_client: no echo within {} ms, sending again (retry {attempt} of {})",
                args.timeout.as_millis(),
                args.retries
            );
        }
        socket.send_to(message, args.server)?;
        let deadline = Instant::now() + args.timeout;
        if let Some(n) = wait_for_echo(&socket, args, &mut buf, deadline)? {
            return Ok(Some(buf[..n].to_vec()));
        }
    }
    Ok(None)
}

/// Receives until the echo arrives (returns its length) or `deadline`
/// passes (returns `None`).
fn wait_for_echo(
    socket: &UdpSocket,
    args: &Args,
    buf: &mut [u8],
    deadline: Instant,
) -> io::Result<Option<usize>> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // A read timeout of zero is an error (it would mean "block forever"
        // to the kernel), so a deadline that has passed ends the attempt.
        if left.is_zero() {
            return Ok(None);
        }
        socket.set_read_timeout(Some(left))?;
        match socket.recv_from(buf) {
            Ok((n, from)) if from == args.server && &buf[..n] == args.message.as_bytes() => {
                return Ok(Some(n));
            }
            Ok((n, from)) if from != args.server => {
                eprintln!("udp_echo_client: ignoring {n} bytes from {from}, not the server");
            }
            Ok(_) => {
                eprintln!(
                    "udp_echo_client: ignoring a datagram from the server that is not the echo"
                );
            }
            // The timeout passed: this attempt is over.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // An ICMP error about an earlier datagram (on Linux only seen on
            // connected sockets): no echo for this attempt, but the next one
            // may get through. Wait out the attempt's time, not spin.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                eprintln!("udp_echo_client: {e}");
            }
            Err(e) => return Err(e),
        }
    }
}

/// Parses `ADDR MESSAGE [--timeout-ms N] [--retries N]` (flags anywhere).
fn parse_args(args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut positional = Vec::new();
    let mut timeout_ms = DEFAULT_TIMEOUT_MS;
    let mut retries = DEFAULT_RETRIES;
    let mut args = args;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--timeout-ms" => {
                let v = args.next().ok_or("--timeout-ms needs a value")?;
                timeout_ms = v
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or(format!("--timeout-ms: not a positive number: {v:?}"))?;
            }
            "--retries" => {
                let v = args.next().ok_or("--retries needs a value")?;
                retries = v
                    .parse()
                    .map_err(|_| format!("--retries: not a number: {v:?}"))?;
            }
            _ => positional.push(arg),
        }
    }
    let [addr, message] = <[String; 2]>::try_from(positional)
        .map_err(|p| format!("expected ADDR and MESSAGE, got {} arguments", p.len()))?;
    let server = addr
        .to_socket_addrs()
        .map_err(|e| format!("bad address {addr:?}: {e}"))?
        .next()
        .ok_or(format!("address {addr:?} resolves to nothing"))?;
    Ok(Args {
        server,
        message,
        timeout: Duration::from_millis(timeout_ms),
        retries,
    })
}
