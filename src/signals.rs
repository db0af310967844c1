//! Stopping cleanly on SIGTERM and SIGINT (Ctrl-C), so the log says "stopped" and is flushed.
//!
//! A signal handler may do almost nothing safely: here it sets a flag and writes one byte to
//! a pipe (the "self-pipe trick"). The pipe's other end is registered in the poll, so a
//! signal that lands just before `epoll_wait` still wakes the loop, which then sees the flag
//! and stops between two turns, never in the middle of one.

use std::io;
use std::os::fd::IntoRawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(_signal: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // write(2) is async-signal-safe; a full pipe just means a wake is already pending.
        unsafe { libc::write(fd, b"!".as_ptr().cast(), 1) };
    }
}

/// Installs the handler for SIGTERM and SIGINT, and ignores SIGXFSZ.
pub fn install() -> io::Result<()> {
    // A log file that reaches the process's file size limit (`ulimit -f`) makes the kernel
    // send SIGXFSZ, whose default action kills the process. Ignored, the write fails with
    // EFBIG instead, which the logger drops like a full disk: the server keeps serving
    // (found by tests/hostile.rs).
    // SAFETY: a zeroed sigaction whose handler is SIG_IGN is valid.
    unsafe {
        let mut ignore: libc::sigaction = std::mem::zeroed();
        ignore.sa_sigaction = libc::SIG_IGN;
        if libc::sigaction(libc::SIGXFSZ, &ignore, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: a zeroed sigaction is valid; the handler only touches atomics and write(2).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// The read end of the self-pipe, to register in the poll. Its write end is kept open for the
/// life of the process, for the handler.
pub fn wake_pipe() -> io::Result<mio::net::UnixStream> {
    let (reader, writer) = mio::net::UnixStream::pair()?;
    let old = WAKE_FD.swap(writer.into_raw_fd(), Ordering::SeqCst);
    if old >= 0 {
        unsafe { libc::close(old) };
    }
    Ok(reader)
}

/// True once SIGTERM or SIGINT arrived.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}
