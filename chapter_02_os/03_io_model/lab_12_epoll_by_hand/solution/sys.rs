//! Thin, safe wrappers around the system calls the event loop makes.
//!
//! Each function turns the C convention (return -1 and set `errno`) into an
//! `io::Result`, and every descriptor that a call creates comes back as an
//! [`OwnedFd`]: the one owner that closes it, exactly once, when dropped.
//! No other code in this program calls `close`. That is how it avoids
//! closing a descriptor twice, a bug that is harmless only until the number
//! is reused: the second `close` then shuts a stranger's connection.
//!
//! All `unsafe` in the program lives here, one `// SAFETY:` per block.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `-1` means "failed, see errno"; anything else is the result.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Same for calls that return a size.
fn check_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// A new epoll instance. `EPOLL_CLOEXEC` so a child process would not
/// inherit it.
pub fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1 takes no pointers; it returns a new descriptor
    // or -1.
    let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    // SAFETY: `fd` was just created by the kernel for us and nothing else
    // owns it, so OwnedFd may take ownership (and close it on drop).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `epoll_ctl(op)` for `fd` with `events` and the caller's 64-bit `data`,
/// which comes back with every event for `fd`.
pub fn epoll_ctl(
    epoll: BorrowedFd<'_>,
    op: libc::c_int,
    fd: BorrowedFd<'_>,
    events: u32,
    data: u64,
) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: both descriptors are borrowed, so they are open for this call;
    // `ev` is a valid epoll_event that the kernel only reads.
    check(unsafe { libc::epoll_ctl(epoll.as_raw_fd(), op, fd.as_raw_fd(), &mut ev) })?;
    Ok(())
}

/// Waits (forever) for events; fills the front of `events` and returns how
/// many. An interrupted wait returns 0 events.
pub fn epoll_wait(epoll: BorrowedFd<'_>, events: &mut [libc::epoll_event]) -> io::Result<usize> {
    let max = events.len().min(libc::c_int::MAX as usize) as libc::c_int;
    // SAFETY: the kernel writes at most `max` entries into `events`, which
    // has room for that many; the descriptor is borrowed, so open.
    let ret = unsafe { libc::epoll_wait(epoll.as_raw_fd(), events.as_mut_ptr(), max, -1) };
    match check(ret) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}

/// Accepts one connection, already non-blocking and close-on-exec (one
/// call instead of accept + two fcntl).
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: null address pointers are allowed (we do not ask for the
    // peer's address); the listener is borrowed, so open.
    let fd = check(unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    })?;
    // SAFETY: a new descriptor from the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads into `buf`; `Ok(0)` is end of file.
pub fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which
    // is valid for writes of that length; the descriptor is borrowed.
    check_size(unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) })
}

/// Writes from `buf`; may write less than all of it. `MSG_NOSIGNAL`: a
/// client that has gone away gives `EPIPE`, not a `SIGPIPE` that would kill
/// the whole server.
pub fn send(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: the kernel reads at most `buf.len()` bytes from `buf`, which
    // is valid for reads of that length; the descriptor is borrowed.
    check_size(unsafe {
        libc::send(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL,
        )
    })
}

/// Turns off Nagle's algorithm, so a small echo leaves at once.
pub fn set_nodelay(fd: BorrowedFd<'_>) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: `one` is a valid c_int for the duration of the call and the
    // length passed is its size; the descriptor is borrowed.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}
