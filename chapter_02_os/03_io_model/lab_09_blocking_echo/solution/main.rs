//! A blocking TCP echo server: one thread per connection.
//!
//! ```text
//! blocking_echo [ADDR]        (default 127.0.0.1:7009)
//! ```
//!
//! # Design
//!
//! The main thread does one thing: `accept` in a loop. Each accepted
//! connection gets its own OS thread, which runs [`serve`]: `read` into a
//! buffer, `write_all` what was read, repeat until `read` returns 0 (the
//! client closed its sending side) or fails. Returning from `serve` drops the
//! `TcpStream`, which closes the socket; the thread then exits.
//!
//! Every call blocks, and that is the point: the kernel parks a thread that
//! waits for bytes (`read`) or for room in the send buffer (`write`), and
//! wakes it when it can continue. The code reads top to bottom, like a
//! conversation with one client, and the scheduler interleaves the clients.
//!
//! The price is one thread per connection: a stack (8 MiB of address space
//! reserved by default for the main thread, 2 MiB for spawned Rust threads,
//! only touched pages are resident), a kernel task, and a context switch
//! every time a thread blocks or wakes. Ten thousand idle clients are ten
//! thousand sleeping threads. Labs 10-12 serve them from a handful of threads.
//!
//! Backpressure comes for free: when a client does not read its echo, the
//! kernel's send buffer fills, `write_all` blocks, so this thread stops
//! reading, the client's data piles up in *kernel* buffers (bounded), and
//! eventually the client's own `write` blocks. Nothing grows in our memory.
//!
//! # Errors
//!
//! An error on one connection (a reset, `EPIPE`) ends that connection's
//! thread only. An error from `accept` must not end the server: the usual
//! one is `EMFILE` (this process has as many files open as its limit
//! allows). The connection then stays in the kernel's accept queue; calling
//! `accept` again at once would fail again at once, a busy loop that eats a
//! core and floods the log. So we log it and back off briefly: when another
//! connection closes, a descriptor is free and the next try succeeds.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

/// The address when none is given on the command line.
const DEFAULT_ADDR: &str = "127.0.0.1:7009";

/// The size of each connection's buffer. Big enough that a bulk transfer
/// takes few system calls; small enough that a thousand connections cost
/// 16 MiB. (It lives on the thread's stack, which is reserved anyway.)
const BUF_SIZE: usize = 16 * 1024;

/// How long to wait before calling `accept` again after it failed.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEFAULT_ADDR.to_string());
    let listener = match TcpListener::bind(&addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("blocking_echo: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    let local = listener
        .local_addr()
        .expect("a bound listener has an address");
    // Rust's stdout is line-buffered even into a pipe (unlike C's), so this
    // line leaves at the newline: the tests wait for it before connecting.
    println!("listening on {local}");

    loop {
        match listener.accept() {
            Ok((stream, peer)) => spawn_connection(stream, peer),
            Err(e) => {
                eprintln!("blocking_echo: accept failed: {e}");
                // EMFILE, ENFILE, ENOBUFS, ENOMEM: retrying at once fails at
                // once. Give other connections a moment to close. (Other
                // errors, like ECONNABORTED, concern one connection only;
                // the pause is harmless for them.)
                thread::sleep(ACCEPT_BACKOFF);
            }
        }
    }
}

/// Starts a thread that serves one connection.
fn spawn_connection(stream: TcpStream, peer: SocketAddr) {
    let spawned = thread::Builder::new()
        .name(format!("conn {peer}"))
        .spawn(move || {
            if let Err(e) = serve(stream) {
                // A client that resets or vanishes is normal life for a
                // server: log it and let this connection go.
                eprintln!("blocking_echo: {peer}: {e}");
            }
            // `stream` was moved into `serve` and dropped there: the socket
            // is closed, and this thread ends here.
        });
    if let Err(e) = spawned {
        // Out of threads (EAGAIN) or memory: the closure, and the stream in
        // it, were dropped, so this client sees its connection close.
        eprintln!("blocking_echo: {peer}: cannot start a thread: {e}");
    }
}

/// Echoes everything until the client closes its sending side.
fn serve(mut stream: TcpStream) -> io::Result<()> {
    // Nagle's algorithm holds back a small write while an earlier one is
    // unacknowledged, and the client delays its ACKs (up to 40 ms) hoping to
    // piggyback them on data: small echoes would wait for each other. An
    // echo is a reply to be sent at once, so turn Nagle off.
    stream.set_nodelay(true)?;

    // One buffer per connection, reused for every read: no allocation per
    // message.
    let mut buf = [0u8; BUF_SIZE];
    loop {
        let n = match stream.read(&mut buf) {
            // End of file: the client will send nothing more, and everything
            // it sent has been echoed. Returning drops (closes) the socket.
            Ok(0) => return Ok(()),
            Ok(n) => n,
            // A signal interrupted the call before any data: just retry.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        // `write` may send fewer bytes than asked (the send buffer had less
        // room); `write_all` loops until all of `buf[..n]` is sent, blocking
        // while the client does not read: that is the backpressure.
        stream.write_all(&buf[..n])?;
    }
}
