//! What one non-blocking read of a divert(4) socket came to, and the words for a lost one.
//!
//! Owns the meaning of `recvfrom(2)`'s result on a divert socket that asked for overflow
//! reports with `SO_RERROR`; no socket, no syscall, no `cfg` gate, so it is tested on
//! Linux. `divert.rs` (FreeBSD only) makes the call, sets the option and keeps the count.
//!
//! What FreeBSD does at an overflow (freebsd/freebsd-src, read, not copied; the stored
//! freebsd/freebsd-src versions of these files are old, so the current text was read in
//! the fork fel1x-developer/freebsd-src at 2d614aa2, with divert's own PF_DIVERT domain):
//! - sys/netinet/ip_divert.c `divert_packet`: when `sbappendaddr_locked` finds the
//!   socket's receive buffer full, it calls `soroverflow_locked` and frees the packet
//!   (`m_freem`); `divstat` counts only `diverted` and `noport`, so nothing else says so.
//!   An older snapshot (sobomax/freebsd14_vendor at 0f7ff342, divert still in PF_INET)
//!   only unlocks the buffer there: on such a kernel the drop is silent whatever we ask.
//! - sys/kern/uipc_sockbuf.c `soroverflow_locked`: only when the socket has `SO_RERROR`
//!   in `so_options` does it set `so_rerror = ENOBUFS` and wake the reader
//!   (`sorwakeup_locked`); without it, it only unlocks. The error is one value, not a
//!   count: several drops before the next read are one ENOBUFS.
//! - sys/kern/uipc_socket.c `soreceive_generic` (divert's `div_protosw` names no
//!   `pr_soreceive`, and sys/kern/uipc_domain.c `pr_init` defaults it to this one):
//!   `so_rerror` is returned only once the buffer is empty (`if (m != NULL) goto
//!   dontblock`), so the packets queued before the drop are read first; it is returned
//!   once and cleared (`so->so_rerror = 0` unless `MSG_PEEK`). `sosetopt` takes
//!   `SO_RERROR` as an on/off flag in `so_options`.
//! - sys/sys/socketvar.h `soreadabledata` (what `sopoll_generic` asks) counts a pending
//!   `so_rerror` as readable, so poll(2) wakes the loop that reads the error.

use std::io;

/// What one `recvfrom(2)` on a non-blocking divert socket came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DivertRead {
    /// A packet of this many bytes.
    Packet(usize),
    /// Nothing is waiting.
    NothingWaiting,
    /// The kernel dropped at least one packet for want of buffer room since the last
    /// read (ENOBUFS from `so_rerror`); what was queued before it has been read. Read on.
    Overflowed,
    /// A signal came first: read again.
    Interrupted,
}

impl DivertRead {
    /// The meaning of `recvfrom`'s result.
    ///
    /// # Errors
    /// Any other receive error.
    pub fn of(result: io::Result<usize>) -> io::Result<DivertRead> {
        match result {
            Ok(n) => Ok(DivertRead::Packet(n)),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Ok(DivertRead::Overflowed),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(DivertRead::NothingWaiting),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(DivertRead::Interrupted),
            Err(e) => Err(e),
        }
    }
}

/// The warning for the `times`th overflow of the divert socket on `port` in inline mode.
/// divert(4) has no fail-open: a packet it could not queue is gone, not passed on.
pub fn inline_overflow_warning(port: u16, times: u64) -> String {
    format!(
        "divert port {port}: receive buffer overflowed ({times} times so far): the kernel \
         dropped diverted packets it could not queue (dropped, not passed: TCP sends them \
         again, through this socket, so a control connection only stalls; if it goes on, \
         find what floods the divert rule)"
    )
}

/// The warning for a divert socket that refused `SO_RERROR`.
pub fn no_overflow_reports_warning(port: u16, err: &io::Error) -> String {
    format!(
        "divert port {port}: SO_RERROR refused ({err}): this kernel will not tell when the \
         socket's buffer overflows, so packets it drops there are not counted"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os_error(errno: i32) -> io::Result<usize> {
        Err(io::Error::from_raw_os_error(errno))
    }

    #[test]
    fn a_read_means_what_the_kernel_said() {
        assert_eq!(DivertRead::of(Ok(60)).unwrap(), DivertRead::Packet(60));
        assert_eq!(DivertRead::of(Ok(0)).unwrap(), DivertRead::Packet(0));
        assert_eq!(
            DivertRead::of(os_error(libc::ENOBUFS)).unwrap(),
            DivertRead::Overflowed
        );
        assert_eq!(
            DivertRead::of(os_error(libc::EAGAIN)).unwrap(),
            DivertRead::NothingWaiting
        );
        assert_eq!(
            DivertRead::of(os_error(libc::EWOULDBLOCK)).unwrap(),
            DivertRead::NothingWaiting
        );
        assert_eq!(
            DivertRead::of(os_error(libc::EINTR)).unwrap(),
            DivertRead::Interrupted
        );
    }

    #[test]
    fn other_errors_stay_errors() {
        for errno in [libc::EBADF, libc::ENOTCONN, libc::EINVAL] {
            let err = DivertRead::of(os_error(errno)).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(errno));
        }
    }

    #[test]
    fn the_warnings_say_dropped_not_passed() {
        let line = inline_overflow_warning(8668, 3);
        assert!(line.contains("divert port 8668"), "{line}");
        assert!(line.contains("3 times so far"), "{line}");
        assert!(line.contains("dropped, not passed"), "{line}");
        let err = io::Error::from_raw_os_error(libc::ENOPROTOOPT);
        let line = no_overflow_reports_warning(8668, &err);
        assert!(line.contains("SO_RERROR refused"), "{line}");
        assert!(line.contains("not counted"), "{line}");
    }
}
