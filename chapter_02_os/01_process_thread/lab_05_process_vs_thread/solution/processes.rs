//! Workers as processes: `fork`, two pipes, `waitpid`.
//!
//! The life of one child, and what the parent does meanwhile:
//!
//! ```text
//! parent                              child i (a copy of the parent at fork)
//! fork() -> child's pid               fork() -> 0
//!                                     closes the ends it does not use
//!                                     VALUE = 42 (its own copy)
//!                                     prints its worker line
//! reads 1 byte per child from ready   writes 1 byte to ready
//! [hold: workers alive]               reads release: blocks...
//! closes release's write end   --->   ...reads end of file
//!                                     _exit(VALUE as seen by the child)
//! waitpid(child) -> exit code 42      (a zombie until this waitpid)
//! VALUE is still 0 here
//! ```
//!
//! Two pipes coordinate without any sleep. `ready`: each child writes one
//! byte after printing, so once the parent has read N bytes every line is
//! out. `release`: every child blocks reading it; the parent closing the
//! write end is a broadcast, since every reader then sees end of file. That
//! only works if *no child* holds a copy of the write end: `fork` duplicates
//! every open file descriptor, so each child must close the ends it does not
//! use, or it would wait forever for an end of file it is itself preventing.
//!
//! The child reports what it saw through its exit code, the one value a
//! parent always gets back from `waitpid`. `waitpid` is also what frees the
//! child's last trace (its zombie: pid, exit status, resource usage), so a
//! parent that never waits leaks one process-table slot per child.

use std::io::{self, PipeReader, PipeWriter, Read, Write};
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::{VALUE, WRITTEN, hold, report_worker};

/// Runs `n` worker processes; see the module docs.
pub fn run(n: usize, hold_points: bool) -> io::Result<()> {
    let (mut ready_r, ready_w) = io::pipe()?;
    let (release_r, release_w) = io::pipe()?;

    let started = Instant::now();
    let mut children = Vec::with_capacity(n);
    let mut fork_error = None;
    for index in 0..n {
        // Anything still in stdout's buffer would be copied into the child
        // and printed twice (once by each). `println!` flushes at each
        // newline, but flushing here makes it true whatever was printed.
        io::stdout().flush()?;
        // SAFETY: this process is single-threaded at this point (the main
        // thread is the only one; nothing here spawns threads), so the child
        // is a consistent copy: no lock (the allocator's, stdout's) can be
        // held by a thread that does not exist in the child. In a
        // multi-threaded program only async-signal-safe calls would be
        // allowed in the child until `exec`.
        match unsafe { libc::fork() } {
            -1 => {
                fork_error = Some(io::Error::last_os_error());
                break;
            }
            0 => child(index, ready_w, release_r, release_w),
            pid => children.push(pid),
        }
    }
    // Only the parent's part of `fork` is timed: what it costs to create a
    // process (copy the page tables, duplicate the descriptors), not to run it.
    let per_worker = started.elapsed().as_secs_f64() * 1e6 / n as f64;

    // The parent's copies of the children's ends: without closing `ready_w`
    // a read on `ready_r` could never see end of file if a child died early.
    drop(ready_w);
    drop(release_r);

    if fork_error.is_none() {
        // One byte per child that has printed its line.
        let mut bytes = vec![0u8; children.len()];
        ready_r.read_exact(&mut bytes)?;
        if hold_points {
            hold("workers alive")?;
        }
    }

    // Release every child at once: they all see end of file on `release`.
    drop(release_w);

    // Reap every child, even after an error, so none is left a zombie.
    let mut seen = Vec::with_capacity(children.len());
    for &pid in &children {
        seen.push(wait_for(pid)?);
    }
    if let Some(e) = fork_error {
        return Err(e);
    }

    // Every child exits with the value it read back from its own VALUE.
    let wrote = seen[0];
    if let Some(other) = seen.iter().find(|&&v| v != wrote) {
        return Err(io::Error::other(format!(
            "children disagree about what they wrote: {wrote} and {other}"
        )));
    }
    println!(
        "isolation: parent sees {} after child wrote {wrote}",
        VALUE.load(Ordering::SeqCst)
    );
    println!("creation cost: {per_worker:.1} us per worker");
    if hold_points {
        hold("workers gone")?;
    }
    Ok(())
}

/// The child's whole life; never returns (see the module docs).
fn child(
    index: usize,
    mut ready_w: PipeWriter,
    mut release_r: PipeReader,
    release_w: PipeWriter,
) -> ! {
    // Close our copy of the release pipe's write end first, or the end of
    // file the parent sends by closing its own copy would never come.
    drop(release_w);

    // The same variable, at the same address as in the parent; this write
    // makes the kernel give the child its own copy of the page.
    VALUE.store(WRITTEN, Ordering::SeqCst);
    report_worker(index);
    let _ = io::stdout().flush();
    let _ = ready_w.write_all(&[1]);

    // Block until the parent closes its end (read returns 0), or fails.
    let mut buf = [0u8; 1];
    while matches!(release_r.read(&mut buf), Ok(n) if n > 0) {}

    let seen = VALUE.load(Ordering::SeqCst);
    // `_exit`, not `std::process::exit` or a return from `main`: those run
    // the parent's exit-time cleanup (C `atexit` handlers, stdio flushing)
    // a second time, in the copy. The child's work is done; leave at once.
    // SAFETY: _exit has no preconditions and does not return.
    unsafe { libc::_exit(seen as i32) }
}

/// Waits for child `pid` to exit and returns its exit code.
fn wait_for(pid: libc::pid_t) -> io::Result<u32> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    if libc::WIFEXITED(status) {
        Ok(libc::WEXITSTATUS(status) as u32)
    } else {
        Err(io::Error::other(format!(
            "child {pid} did not exit normally (wait status {status:#x})"
        )))
    }
}
