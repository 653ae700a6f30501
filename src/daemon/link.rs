//! The sockets between the daemon's processes: how they are made, how big their buffers
//! are, and what a non-blocking send can answer.
//!
//! Owns socket creation and sizing for every inter-process link (monitor ↔ worker,
//! worker ↔ parser, parser ↔ monitor, the log link), the classification of a send's
//! outcome, and passing a descriptor over a link (`SCM_RIGHTS`). Knows no message format:
//! those are `messages`'.
//!
//! Sizes are set on purpose, never left to the system's defaults. FreeBSD 14 gives a
//! `SOCK_SEQPACKET` socket 8 KiB of send space (sys/kern/uipc_usrreq.c:
//! `unpsp_sendspace = PIPSIZ`, 8192; 64 KiB from 15 on), and an atomic send larger than
//! the send space fails with `EMSGSIZE` (sys/kern/uipc_socket.c `sosend_generic`:
//! `atomic && resid > so->so_snd.sb_hiwat`). A diverted control packet can be larger (jumbo
//! frames, TSO on the gateway's own traffic), so each end asks for [`LINK_BUFFER`]; and a
//! message that still does not fit is reported as [`Sent::TooBig`], so the caller drops
//! that one message instead of retrying it forever behind everything else.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollTimeout};
use nix::sys::socket::{
    send, setsockopt, socketpair, sockopt, AddressFamily, MsgFlags, SockFlag, SockType,
};

/// Send and receive space asked for on each end of a link: four messages of the largest
/// kind (a 64 KiB packet plus its header), well below FreeBSD's `kern.ipc.maxsockbuf`
/// (2 MiB by default). Linux caps the request at `net.core.wmem_max` (208 KiB by default)
/// and doubles it, which still holds several such messages.
pub const LINK_BUFFER: usize = 256 * 1024;

/// `--busy-poll`: asks `fds` whether one is ready, again and again without sleeping, for
/// up to `limit`; returns whether one became ready (the caller's next wait then returns at
/// once). A process that sleeps after every packet is woken for the next one, and on an
/// idle machine, and more so in a virtual machine whose idle CPU halts, that wake-up costs
/// more than the packet's whole work (measured: tools/bench, NOOP round trip). Polling
/// keeps the process awake across the short gaps between the packets of one exchange, at
/// the price of up to `limit` of CPU time each time it finds nothing. `limit` zero: no
/// system call at all.
pub fn busy_poll(fds: &mut [PollFd<'_>], limit: Duration) -> bool {
    if limit.is_zero() {
        return false;
    }
    #[allow(clippy::disallowed_methods)]
    let until = Instant::now() + limit;
    loop {
        if matches!(poll(fds, PollTimeout::ZERO), Ok(1..)) {
            return true;
        }
        #[allow(clippy::disallowed_methods)]
        if Instant::now() >= until {
            return false;
        }
        std::hint::spin_loop();
    }
}

/// A connected pair of `SOCK_SEQPACKET` sockets (close-on-exec) with both buffers of both
/// ends sized to [`LINK_BUFFER`].
///
/// # Errors
/// When the socketpair cannot be created. A buffer the kernel will not enlarge is not an
/// error: the link still works, and an oversized message is then [`Sent::TooBig`].
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    sized_pair(SockType::SeqPacket)
}

/// A connected pair of `SOCK_DGRAM` sockets (close-on-exec), sized like
/// [`seqpacket_pair`]; used where a sender must never wait (the log link).
///
/// # Errors
/// When the socketpair cannot be created.
pub fn datagram_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    sized_pair(SockType::Datagram)
}

fn sized_pair(kind: SockType) -> io::Result<(OwnedFd, OwnedFd)> {
    let (a, b) = socketpair(AddressFamily::Unix, kind, None, SockFlag::SOCK_CLOEXEC)?;
    for end in [&a, &b] {
        size_buffers(end, LINK_BUFFER);
    }
    Ok((a, b))
}

/// Asks for `bytes` of send and receive space on `socket`; logs (once per socket) what
/// the kernel refused.
pub fn size_buffers(socket: &OwnedFd, bytes: usize) {
    if let Err(e) = setsockopt(socket, sockopt::SndBuf, &bytes) {
        log::warn!("link: cannot set the send buffer to {bytes} bytes: {e}");
    }
    if let Err(e) = setsockopt(socket, sockopt::RcvBuf, &bytes) {
        log::warn!("link: cannot set the receive buffer to {bytes} bytes: {e}");
    }
}

/// The send space the kernel granted `socket` (Linux reports twice what was asked, the
/// bookkeeping overhead included).
///
/// # Errors
/// When getsockopt(2) fails.
#[cfg(test)]
pub fn send_space(socket: &OwnedFd) -> io::Result<usize> {
    Ok(nix::sys::socket::getsockopt(socket, sockopt::SndBuf)?)
}

/// Sets `O_NONBLOCK` on `socket`.
///
/// # Errors
/// When fcntl(2) fails.
pub fn set_nonblocking(socket: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_retain(fcntl(socket, FcntlArg::F_GETFL)?);
    fcntl(socket, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// The outcome of one non-blocking send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The whole message went.
    Yes,
    /// The peer's buffer is full: try the same message again later.
    Later,
    /// The message can never fit this link (`EMSGSIZE`): drop it, or it blocks the rest.
    TooBig,
    /// The peer is gone (or the socket failed): the caller's read sees the end.
    Gone,
}

/// Sends `bytes` as one message without blocking.
pub fn send_nonblocking(socket: &OwnedFd, bytes: &[u8]) -> Sent {
    loop {
        match send(socket.as_raw_fd(), bytes, MsgFlags::MSG_DONTWAIT) {
            Ok(_) => return Sent::Yes,
            Err(Errno::EAGAIN | Errno::ENOBUFS) => return Sent::Later,
            Err(Errno::EINTR) => {}
            Err(Errno::EMSGSIZE) => return Sent::TooBig,
            Err(_) => return Sent::Gone,
        }
    }
}

/// Sends `bytes` as one message on `socket` with `fd` attached (`SCM_RIGHTS`): the
/// receiver gets its own descriptor for the same open socket or file.
///
/// # Errors
/// When sendmsg(2) fails.
pub fn send_with_fd(socket: &OwnedFd, bytes: &[u8], fd: &OwnedFd) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage};
    let fds = [fd.as_raw_fd()];
    let iov = [io::IoSlice::new(bytes)];
    loop {
        match sendmsg::<()>(
            socket.as_raw_fd(),
            &iov,
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        ) {
            Err(Errno::EINTR) => {}
            other => return other.map(drop).map_err(io::Error::from),
        }
    }
}

/// What one non-blocking [`recv_with_fd`] found.
#[derive(Debug)]
pub enum Received {
    /// A message, with the descriptor it carried, if any (extra ones are closed).
    Message(Vec<u8>, Option<OwnedFd>),
    /// Nothing waiting.
    Empty,
    /// The peer closed the link.
    Gone,
}

/// Receives one short message (at most 64 bytes) and the descriptor it may carry,
/// without blocking.
///
/// # Errors
/// When recvmsg(2) fails other than by "would block".
pub fn recv_with_fd(socket: &OwnedFd) -> io::Result<Received> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned};
    use std::os::fd::FromRawFd;
    let mut buf = [0u8; 64];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    loop {
        let mut iov = [io::IoSliceMut::new(&mut buf)];
        let message = match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(message) => message,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Ok(Received::Empty),
            Err(e) => return Err(e.into()),
        };
        let mut fds = Vec::new();
        for cmsg in message.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                // SAFETY: the kernel just installed these descriptors for this process;
                // nothing else owns them.
                fds.extend(
                    received
                        .into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        let n = message.bytes;
        if n == 0 && fds.is_empty() {
            return Ok(Received::Gone);
        }
        let first = (!fds.is_empty()).then(|| fds.swap_remove(0));
        return Ok(Received::Message(buf[..n].to_vec(), first));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// FreeBSD 14's SEQPACKET send space is 8 KiB (uipc_usrreq.c `unpsp_sendspace =
    /// PIPSIZ`); Linux reproduces it with a 4 KiB request, which it doubles.
    pub(crate) fn pair_as_small_as_freebsd_14() -> (OwnedFd, OwnedFd) {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .expect("socketpair");
        for end in [&a, &b] {
            size_buffers(end, 4096);
        }
        (a, b)
    }

    #[test]
    fn freebsd_14_seqpacket_send_space_refuses_a_9000_byte_packet_with_emsgsize() {
        let (a, _b) = pair_as_small_as_freebsd_14();
        assert!(
            send_space(&a).unwrap() <= 8192,
            "the stand-in is as small as FreeBSD 14"
        );
        assert_eq!(send_nonblocking(&a, &[0u8; 9000]), Sent::TooBig);
        assert_eq!(
            send_nonblocking(&a, &[0u8; 100]),
            Sent::Yes,
            "the link still works"
        );
    }

    #[test]
    fn links_are_sized_for_the_largest_packet() {
        let (a, b) = seqpacket_pair().unwrap();
        assert!(send_space(&a).unwrap() >= 65_536 + 64);
        let big = vec![7u8; 65_535 + 16];
        assert_eq!(send_nonblocking(&a, &big), Sent::Yes);
        let mut buf = vec![0u8; big.len() + 1];
        let n = nix::sys::socket::recv(b.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
        assert_eq!(&buf[..n], &big[..]);
    }

    #[test]
    fn full_link_says_later_and_closed_link_says_gone() {
        let (a, b) = seqpacket_pair().unwrap();
        let chunk = vec![1u8; 60_000];
        let mut sent = 0;
        while send_nonblocking(&a, &chunk) == Sent::Yes {
            sent += 1;
            assert!(sent < 1000, "a link is bounded");
        }
        assert_eq!(send_nonblocking(&a, &chunk), Sent::Later);
        drop(b);
        assert_eq!(send_nonblocking(&a, &chunk), Sent::Gone);
    }
}
