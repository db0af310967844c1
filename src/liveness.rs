//! How a link notices that its neighbour is gone when nothing is being sent (issue 16).
//!
//! A neighbour whose host dies, reboots or drops off the network sends no FIN and no reset:
//! its end of the connection simply stops existing. A link with nothing to send then looks
//! "up" for ever, and a rebooted neighbour is never caught up. So every link socket, ours and
//! the ones neighbours open to us, asks the kernel to check on the other end:
//!
//! - **TCP keepalive with short timers**: after [`IDLE`] of silence the kernel sends an empty
//!   probe every [`INTERVAL`]. A live peer's kernel acknowledges it (the program is not
//!   involved, so a busy neighbour still passes); a *rebooted* host answers with a reset,
//!   because it has never heard of the connection, and the link fails at once; a vanished
//!   host answers nothing.
//! - **`TCP_USER_TIMEOUT`**: a connection whose sent bytes or probes go unacknowledged for
//!   [`USER_TIMEOUT`] is aborted, instead of after the kernel's default of about 15 minutes
//!   of retransmissions. It covers a host that vanishes while floods are under way.
//!
//! Either way the socket reports an error, the link goes down like any other failure, and the
//! reconnect (with its catch-up) follows. The tour explains why this was chosen over an
//! application-level probe.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Silence on a link before the kernel starts probing it.
pub const IDLE: Duration = Duration::from_secs(1);
/// Time between probes.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Unanswered probes before the connection is aborted, where `TCP_USER_TIMEOUT` is missing.
pub const PROBES: u32 = 3;
/// Sent data or probes unacknowledged this long abort the connection (Linux).
pub const USER_TIMEOUT: Duration = Duration::from_secs(3);

/// Turns on the dead-peer checks for one link socket.
pub fn watch(socket: &impl AsRawFd) -> io::Result<()> {
    let fd = socket.as_raw_fd();
    set(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        set(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, secs(IDLE))?;
        set(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, secs(INTERVAL))?;
        set(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_KEEPCNT,
            PROBES as libc::c_int,
        )?;
        let millis = USER_TIMEOUT.as_millis() as libc::c_int;
        set(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, millis)?;
    }
    Ok(())
}

/// Bytes written to `socket` that its peer has not acknowledged yet (`SIOCOUTQ`): the
/// part of a link's queue the kernel holds (see `peer`'s flow control). 0 where unknown.
pub fn unsent(socket: &impl AsRawFd) -> usize {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let mut n: libc::c_int = 0;
        // SAFETY: `socket` is an open socket borrowed for this call; TIOCOUTQ (SIOCOUTQ on
        // a socket) writes one c_int through the pointer, which lives across the call.
        let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
        if rc == 0 {
            return usize::try_from(n).unwrap_or(0);
        }
    }
    let _ = socket;
    0
}

/// A whole number of seconds, as the keepalive options take them.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn secs(d: Duration) -> libc::c_int {
    d.as_secs() as libc::c_int
}

/// One integer socket option (also used for the links' kernel buffer sizes, `server`).
pub(crate) fn set(
    fd: libc::c_int,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `fd` is an open socket borrowed for this call; the option value is a c_int
    // that lives across the call, and its exact size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads an integer socket option back.
    fn get(fd: libc::c_int, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        let mut value: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` and `len` outlive the call and `len` holds the size of `value`.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                level,
                name,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        value
    }

    #[test]
    fn options_are_set_on_the_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let fd = stream.as_raw_fd();
        assert_eq!(get(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE), 0);
        watch(&stream).unwrap();
        assert_eq!(get(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE), 1);
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            assert_eq!(get(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE), 1);
            assert_eq!(get(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL), 1);
            assert_eq!(get(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT), 3);
            assert_eq!(get(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT), 3000);
        }
    }
}
