//! An async TCP echo server on tokio: one task per connection.
//!
//! ```text
//! tokio_echo [ADDR]        (default 127.0.0.1:7011)
//! ```
//!
//! # Design
//!
//! The code looks like lab 09's, one function serving one client top to
//! bottom, but [`serve`] is an `async fn` run as a *task*, not a thread. A
//! task is a state machine on the heap (here a few hundred bytes; its 8 KiB
//! buffer exists only while it has data to echo, see [`serve`]); at each
//! `.await` that cannot proceed (no bytes to read, no
//! room to write) it returns control to the runtime, which runs another task
//! on the same thread. The runtime has a few worker threads (one per core by
//! default) and one `epoll` instance; when a socket becomes ready, epoll
//! says so and the runtime polls the task waiting on it again. So a
//! thousand idle clients are a thousand small structs and a thousand
//! registrations in epoll, not a thousand threads, and the thread count does
//! not grow with the connections.
//!
//! Backpressure is the same as with blocking threads: `write_all` does not
//! complete while the client does not read, so the task does not read
//! either, and the client's data waits in the kernel's (bounded) buffers.
//! Memory stays flat however much a slow client pushes.
//!
//! # Shutdown
//!
//! The accept loop waits on two things at once with `tokio::select!`: the
//! next connection, or SIGINT/SIGTERM. On a signal it stops accepting and
//! returns from `main`. That drops the runtime, which cancels every task at
//! its current `.await` and drops its socket (closing the connection), so
//! the process exits 0 at once even with idle clients connected. A server
//! that must finish in-flight requests would instead tell the tasks to stop
//! (a `watch` channel or a `CancellationToken`) and wait for them, with a
//! deadline; for echo, nothing is lost by cutting a connection.
//!
//! Without a handler, SIGTERM's default action kills the process at once:
//! no logs flushed, exit status "killed by signal 15", which supervisors
//! (systemd, Kubernetes) report as a failure.

use std::io;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};

/// The address when none is given on the command line.
const DEFAULT_ADDR: &str = "127.0.0.1:7011";

/// The most one read takes: 64 KiB, like the shared buffer of the mio and
/// epoll servers. The buffer is allocated when the socket is readable and
/// freed before the task waits again, so idle connections hold none (see
/// [`serve`]) and its size costs nothing while they wait. A smaller one
/// (`tokio::io::copy` uses 8 KiB) means more syscalls on a bulk transfer:
/// `cargo course bench echo` measured 8 KiB at about 0.6 of the mio
/// server's pipelined throughput, 64 KiB at about 0.9.
const BUF_SIZE: usize = 64 * 1024;

/// How long to wait before calling `accept` again after it failed.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEFAULT_ADDR.to_string());
    let listener = match TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tokio_echo: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    // Install the signal handlers before announcing the address: from the
    // moment a client (or a supervisor) can see us, SIGTERM must mean "shut
    // down cleanly", not the default "die at once".
    let (mut sigint, mut sigterm) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(i), Ok(t)) => (i, t),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("tokio_echo: cannot handle signals: {e}");
            std::process::exit(1);
        }
    };
    let local = listener
        .local_addr()
        .expect("a bound listener has an address");
    println!("listening on {local}");

    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // The task owns the stream: when it returns (or is
                    // cancelled at shutdown), the socket is dropped and closed.
                    tokio::spawn(async move {
                        if let Err(e) = serve(stream).await {
                            eprintln!("tokio_echo: {peer}: {e}");
                        }
                    });
                }
                Err(e) => {
                    // EMFILE and friends: retrying at once fails at once.
                    // Pause (the pause is a timer, not a blocked thread).
                    eprintln!("tokio_echo: accept failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            _ = sigint.recv() => {
                eprintln!("tokio_echo: SIGINT, shutting down");
                break;
            }
            _ = sigterm.recv() => {
                eprintln!("tokio_echo: SIGTERM, shutting down");
                break;
            }
        }
    }
    // Returning drops the listener (no more connections) and then the
    // runtime, which cancels the connection tasks; see the module docs.
}

/// Echoes everything until the client closes its sending side.
///
/// # Memory per idle connection
///
/// The obvious loop, `let mut buf = vec![0; 8192]; loop { read(&mut buf).await; .. }`,
/// keeps the buffer alive across every `.await`, so it belongs to the task
/// for the connection's whole life: 10,000 idle clients hold 80 MiB of
/// buffers that are almost never used. Here the task waits for readiness
/// with no buffer (`readable().await`), then allocates one, reads what is
/// there without blocking (`try_read_buf`), writes it back, and drops the
/// buffer before it waits again. An idle connection costs its task and its
/// socket; the price is one allocation per burst of data, which the
/// allocator serves from a free list in tens of nanoseconds, next to
/// syscalls that cost microseconds. (This is what mio and epoll servers get
/// for free by sharing one read buffer on their single thread.)
async fn serve(mut stream: TcpStream) -> io::Result<()> {
    // As in lab 09: an echo is a reply to send now, not to batch (Nagle's
    // algorithm would hold a small write until the previous one is acked).
    stream.set_nodelay(true)?;

    loop {
        stream.readable().await?;
        let mut buf = Vec::with_capacity(BUF_SIZE);
        let n = match stream.try_read_buf(&mut buf) {
            Ok(n) => n,
            // Readiness is a hint: the bytes may be gone (or the wakeup
            // spurious). Wait again rather than block.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            // End of file: everything has been echoed. Returning drops the
            // stream, which closes the connection.
            return Ok(());
        }
        // On a non-blocking socket a write is partial whenever the send
        // buffer has less room than we have bytes; `write_all` waits for
        // room and sends the rest. While it waits the buffer is still
        // needed, and held; it is dropped at the end of this iteration.
        stream.write_all(&buf[..n]).await?;
    }
}
