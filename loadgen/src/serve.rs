//! `loadgen serve-echo`: the ceiling. The least an echo server can do per
//! message (one thread, edge-triggered epoll through mio, one read buffer
//! shared by every connection, write back at once, queue only what the
//! socket refuses), so the bench can report every server as a fraction of
//! what this machine allows.
//!
//! `--delay-us N` sleeps N microseconds per read (a deliberately slow
//! server) and `--die-after N` exits with code 3 after echoing N bytes (a
//! server that crashes mid-run): both for the bench tool's own tests.

use std::io::{self, Read, Write};
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(usize::MAX);

struct Conn {
    stream: TcpStream,
    pending: Vec<u8>,
}

pub fn run(o: &crate::Opts) -> Result<String, String> {
    let addr = o.positional(0).unwrap_or("127.0.0.1:0");
    let addr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an address"))?;
    let delay = Duration::from_micros(o.num("delay-us", 0)?);
    let die_after = o.num("die-after", 0)?;
    crate::conns::raise_nofile(20_000).ok();

    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut listener = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(|e| e.to_string())?;
    crate::say(&format!(
        "listening on {}",
        listener.local_addr().map_err(|e| e.to_string())?
    ));

    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut echoed: u64 = 0;
    let mut events = Events::with_capacity(1024);
    loop {
        poll.poll(&mut events, None).map_err(|e| e.to_string())?;
        for ev in events.iter() {
            if ev.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let i = free.pop().unwrap_or_else(|| {
                                conns.push(None);
                                conns.len() - 1
                            });
                            let _ = stream.set_nodelay(true);
                            poll.registry()
                                .register(
                                    &mut stream,
                                    Token(i),
                                    Interest::READABLE | Interest::WRITABLE,
                                )
                                .map_err(|e| e.to_string())?;
                            conns[i] = Some(Conn {
                                stream,
                                pending: Vec::new(),
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        // Out of fds or a connection gone before accept: keep serving.
                        Err(_) => break,
                    }
                }
                continue;
            }
            let i = ev.token().0;
            let Some(c) = conns[i].as_mut() else { continue };
            if serve(c, &mut buf, &mut echoed, delay).is_err() {
                let _ = poll.registry().deregister(&mut c.stream);
                conns[i] = None;
                free.push(i);
            }
            if die_after > 0 && echoed >= die_after {
                eprintln!("serve-echo: dying after {echoed} bytes, as asked");
                std::process::exit(3);
            }
        }
    }
}

/// Reads until `WouldBlock`, echoing as it goes; Err when the connection is over.
fn serve(c: &mut Conn, buf: &mut [u8], echoed: &mut u64, delay: Duration) -> io::Result<()> {
    flush(c)?;
    loop {
        match c.stream.read(buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                if !delay.is_zero() {
                    std::thread::sleep(delay);
                }
                *echoed += n as u64;
                if c.pending.is_empty() {
                    let mut off = 0;
                    while off < n {
                        match c.stream.write(&buf[off..n]) {
                            Ok(k) => off += k,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => return Err(e),
                        }
                    }
                    c.pending.extend_from_slice(&buf[off..n]);
                } else {
                    c.pending.extend_from_slice(&buf[..n]);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn flush(c: &mut Conn) -> io::Result<()> {
    let mut off = 0;
    while off < c.pending.len() {
        match c.stream.write(&c.pending[off..]) {
            Ok(k) => off += k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    c.pending.drain(..off);
    Ok(())
}
