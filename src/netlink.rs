//! Raw `NETLINK_NETFILTER` plumbing shared by the NFQUEUE intercept, the NFLOG copy source
//! and the nftables firewall.
//!
//! Owns the netlink wire format (message headers, `nfgenmsg`, attribute TLVs, `NLMSG_ERROR`
//! acknowledgements) and one thin socket type. Knows nothing about queues, tables or sets:
//! [`crate::intercept::nfqueue`] and [`crate::firewall::nft`] build their messages with
//! [`MsgBuilder`] and read the kernel's answers with [`messages`] and [`attrs`]; the NFQUEUE
//! intercept and the NFLOG copy source read their packet datagrams with [`Datagram`].
//!
//! Contract: every parser here is bounds-checked and returns [`ParseError`] on short or
//! inconsistent input; nothing panics on bytes that came from the kernel. The builders only
//! ever see lengths we chose ourselves; an attribute longer than 64 KiB is a programming error.
//!
//! Layouts come from the kernel uapi headers `linux/netlink.h` (struct nlmsghdr, nlattr,
//! nlmsgerr) and `linux/netfilter/nfnetlink.h` (struct nfgenmsg, batch messages).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

// linux/netlink.h
/// `NLMSG_HDRLEN`: struct nlmsghdr { u32 len; u16 type; u16 flags; u32 seq; u32 pid; }.
pub const NLMSG_HDRLEN: usize = 16;
/// `NLA_HDRLEN`: struct nlattr { u16 nla_len; u16 nla_type; }.
pub const NLA_HDRLEN: usize = 4;
/// `NLMSG_NOOP`.
pub const NLMSG_NOOP: u16 = 1;
/// `NLMSG_ERROR`: an error, or an acknowledgement when the error code is 0.
pub const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`: end of a multi-part dump.
pub const NLMSG_DONE: u16 = 3;
/// `NLMSG_OVERRUN`.
pub const NLMSG_OVERRUN: u16 = 4;
/// `NLM_F_REQUEST`.
pub const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_ACK`: ask the kernel for an `NLMSG_ERROR` with code 0 on success.
pub const NLM_F_ACK: u16 = 0x4;
/// `NLM_F_DUMP` (= `NLM_F_ROOT | NLM_F_MATCH`).
pub const NLM_F_DUMP: u16 = 0x300;
/// `NLM_F_EXCL`: for a NEW request, fail with EEXIST if the object exists.
pub const NLM_F_EXCL: u16 = 0x200;
/// `NLM_F_CREATE`: for a NEW request, create the object if it does not exist.
pub const NLM_F_CREATE: u16 = 0x400;
/// `NLA_F_NESTED`: the attribute holds attributes.
pub const NLA_F_NESTED: u16 = 0x8000;
/// `NLA_F_NET_BYTEORDER`.
pub const NLA_F_NET_BYTEORDER: u16 = 0x4000;
/// `NLA_TYPE_MASK`: the attribute type without the two flag bits above.
pub const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);

// linux/netfilter/nfnetlink.h
/// `NFNETLINK_V0`: the only `nfgenmsg.version`.
pub const NFNETLINK_V0: u8 = 0;
/// `NFNL_SUBSYS_QUEUE`: nfnetlink_queue.
pub const NFNL_SUBSYS_QUEUE: u8 = 3;
/// `NFNL_SUBSYS_ULOG`: nfnetlink_log.
pub const NFNL_SUBSYS_ULOG: u8 = 4;
/// `NFNL_SUBSYS_NFTABLES`: nf_tables.
pub const NFNL_SUBSYS_NFTABLES: u8 = 10;
/// `NFNL_MSG_BATCH_BEGIN` (= `NLMSG_MIN_TYPE`): opens a transaction; `res_id` names the
/// subsystem the batch is for.
pub const NFNL_MSG_BATCH_BEGIN: u16 = 16;
/// `NFNL_MSG_BATCH_END`: commits the transaction.
pub const NFNL_MSG_BATCH_END: u16 = 17;
/// `sizeof(struct nfgenmsg)`: { u8 nfgen_family; u8 version; __be16 res_id; }.
pub const NFGENMSG_LEN: usize = 4;

/// `NLMSG_ALIGN` / `NLA_ALIGN`: netlink pads everything to 4 bytes.
pub const fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// The nfnetlink message type: subsystem in the high byte, message in the low byte
/// (`NFNL_SUBSYS_ID` / `NFNL_MSG_TYPE` in nfnetlink.h).
pub const fn nfnl_type(subsys: u8, msg: u8) -> u16 {
    ((subsys as u16) << 8) | msg as u16
}

/// Why a netlink message from the kernel could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Occurs when fewer bytes remain than a header needs.
    #[error("truncated {what}: {have} bytes, need {need}")]
    Truncated {
        /// Which structure.
        what: &'static str,
        /// Bytes present.
        have: usize,
        /// Bytes needed.
        need: usize,
    },
    /// Occurs when a length field is smaller than its own header or runs past the buffer.
    #[error("bad {what} length {len} (room {room})")]
    BadLength {
        /// Which structure.
        what: &'static str,
        /// The length field.
        len: usize,
        /// Bytes available from the header on.
        room: usize,
    },
}

/// One netlink message: header fields and the payload after the 16-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Msg<'a> {
    /// `nlmsg_type`.
    pub ty: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// `nlmsg_pid`.
    pub pid: u32,
    /// The bytes after the header, `nlmsg_len - 16` of them.
    pub payload: &'a [u8],
}

/// Iterates over the messages packed in one datagram (the kernel may put several in one).
pub fn messages(buf: &[u8]) -> Messages<'_> {
    Messages { rest: buf }
}

/// Iterator returned by [`messages`]. Stops after the first error.
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Msg<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let buf = self.rest;
        let Some(hdr) = buf.get(..NLMSG_HDRLEN) else {
            self.rest = &[];
            return Some(Err(ParseError::Truncated {
                what: "nlmsghdr",
                have: buf.len(),
                need: NLMSG_HDRLEN,
            }));
        };
        let len = usize::try_from(read_u32_ne(hdr, 0)).unwrap_or(usize::MAX);
        let Some(payload) = (len >= NLMSG_HDRLEN)
            .then(|| buf.get(NLMSG_HDRLEN..len))
            .flatten()
        else {
            self.rest = &[];
            return Some(Err(ParseError::BadLength {
                what: "nlmsg",
                len,
                room: buf.len(),
            }));
        };
        // The last message of a datagram need not carry its alignment padding.
        self.rest = buf.get(align4(len)..).unwrap_or(&[]);
        Some(Ok(Msg {
            ty: read_u16_ne(hdr, 4),
            flags: read_u16_ne(hdr, 6),
            seq: read_u32_ne(hdr, 8),
            pid: read_u32_ne(hdr, 12),
            payload,
        }))
    }
}

/// One attribute: its type without the flag bits, whether it is nested, and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr<'a> {
    /// `nla_type & NLA_TYPE_MASK`.
    pub ty: u16,
    /// `nla_type & NLA_F_NESTED`. Some kernels do not set it on nested attributes, so callers
    /// decide by type, not by this bit.
    pub nested: bool,
    /// The value, `nla_len - 4` bytes, without padding.
    pub data: &'a [u8],
}

impl Attr<'_> {
    /// The value as a big-endian u32 (nfnetlink sends numbers in network byte order).
    pub fn be_u32(&self) -> Option<u32> {
        Some(u32::from_be_bytes(self.data.get(..4)?.try_into().ok()?))
    }

    /// The value as a big-endian u64.
    pub fn be_u64(&self) -> Option<u64> {
        Some(u64::from_be_bytes(self.data.get(..8)?.try_into().ok()?))
    }

    /// The value as a NUL-terminated string (the terminator and anything after it dropped).
    pub fn c_str(&self) -> &[u8] {
        let end = self
            .data
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.data.len());
        &self.data[..end]
    }
}

/// Iterates over the attributes in `buf` (a message body after its fixed header, or the value
/// of a nested attribute).
pub fn attrs(buf: &[u8]) -> Attrs<'_> {
    Attrs { rest: buf }
}

/// Iterator returned by [`attrs`]. Stops after the first error.
#[derive(Debug, Clone)]
pub struct Attrs<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<Attr<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let buf = self.rest;
        let Some(hdr) = buf.get(..NLA_HDRLEN) else {
            self.rest = &[];
            return Some(Err(ParseError::Truncated {
                what: "nlattr",
                have: buf.len(),
                need: NLA_HDRLEN,
            }));
        };
        let len = usize::from(read_u16_ne(hdr, 0));
        let ty = read_u16_ne(hdr, 2);
        let Some(data) = (len >= NLA_HDRLEN)
            .then(|| buf.get(NLA_HDRLEN..len))
            .flatten()
        else {
            self.rest = &[];
            return Some(Err(ParseError::BadLength {
                what: "nlattr",
                len,
                room: buf.len(),
            }));
        };
        self.rest = buf.get(align4(len)..).unwrap_or(&[]);
        Some(Ok(Attr {
            ty: ty & NLA_TYPE_MASK,
            nested: ty & NLA_F_NESTED != 0,
            data,
        }))
    }
}

/// struct nfgenmsg, with `res_id` in host order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NfGenMsg {
    /// `nfgen_family` (`AF_*` / `NFPROTO_*`).
    pub family: u8,
    /// `version` (`NFNETLINK_V0`).
    pub version: u8,
    /// `res_id`: the queue number for nfnetlink_queue, the subsystem for batch markers.
    pub res_id: u16,
}

/// Splits an nfnetlink message body into its `nfgenmsg` and the attributes after it.
///
/// # Errors
/// [`ParseError::Truncated`] when the body is shorter than `nfgenmsg`.
pub fn split_nfgenmsg(payload: &[u8]) -> Result<(NfGenMsg, &[u8]), ParseError> {
    let Some(hdr) = payload.get(..NFGENMSG_LEN) else {
        return Err(ParseError::Truncated {
            what: "nfgenmsg",
            have: payload.len(),
            need: NFGENMSG_LEN,
        });
    };
    let hdr = NfGenMsg {
        family: hdr[0],
        version: hdr[1],
        res_id: u16::from_be_bytes([hdr[2], hdr[3]]),
    };
    Ok((hdr, &payload[NFGENMSG_LEN..]))
}

/// Reads an `NLMSG_ERROR` body (struct nlmsgerr { int error; struct nlmsghdr msg; }) and
/// returns the errno as a positive number (0 = acknowledgement).
///
/// # Errors
/// [`ParseError::Truncated`] when the body is shorter than the error code.
pub fn parse_error(payload: &[u8]) -> Result<i32, ParseError> {
    let Some(code) = payload.get(..4) else {
        return Err(ParseError::Truncated {
            what: "nlmsgerr",
            have: payload.len(),
            need: 4,
        });
    };
    let code = i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
    Ok(code.saturating_neg())
}

fn read_u16_ne(buf: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([buf[at], buf[at + 1]])
}

fn read_u32_ne(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// Builds one or more nfnetlink messages back to back in one buffer (a batch is one
/// datagram, so the kernel handles it as one transaction).
#[derive(Debug, Default)]
pub struct MsgBuilder {
    buf: Vec<u8>,
    msg_start: Option<usize>,
    nests: Vec<usize>,
}

impl MsgBuilder {
    /// An empty buffer.
    pub fn new() -> MsgBuilder {
        MsgBuilder::default()
    }

    /// Starts a message: nlmsghdr (length patched by [`MsgBuilder::end`], pid 0) and
    /// nfgenmsg with `res_id` in network byte order.
    pub fn begin(&mut self, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> &mut Self {
        assert!(
            self.msg_start.is_none(),
            "previous message ended before the next begins"
        );
        self.msg_start = Some(self.buf.len());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.push(family);
        self.buf.push(NFNETLINK_V0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        self
    }

    /// Appends an attribute with `data` and pads it to 4 bytes.
    pub fn attr(&mut self, ty: u16, data: &[u8]) -> &mut Self {
        let len = u16::try_from(NLA_HDRLEN + data.len())
            .expect("attributes we build are far below 64 KiB");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    /// Appends a big-endian u32 attribute.
    pub fn attr_be_u32(&mut self, ty: u16, value: u32) -> &mut Self {
        self.attr(ty, &value.to_be_bytes())
    }

    /// Appends a big-endian u64 attribute.
    pub fn attr_be_u64(&mut self, ty: u16, value: u64) -> &mut Self {
        self.attr(ty, &value.to_be_bytes())
    }

    /// Appends a NUL-terminated string attribute (`NLA_STRING` as nf_tables expects it).
    pub fn attr_str(&mut self, ty: u16, value: &str) -> &mut Self {
        let mut data = Vec::with_capacity(value.len() + 1);
        data.extend_from_slice(value.as_bytes());
        data.push(0);
        self.attr(ty, &data)
    }

    /// Opens a nested attribute (`NLA_F_NESTED` set); close it with [`MsgBuilder::nest_end`].
    pub fn nest_begin(&mut self, ty: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        self
    }

    /// Closes the innermost nested attribute.
    pub fn nest_end(&mut self) -> &mut Self {
        let start = self.nests.pop().expect("nest_end matches a nest_begin");
        let len = u16::try_from(self.buf.len() - start)
            .expect("nested attributes we build are far below 64 KiB");
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// Ends the current message and writes its length.
    pub fn end(&mut self) -> &mut Self {
        assert!(
            self.nests.is_empty(),
            "all nests closed before the message ends"
        );
        let start = self.msg_start.take().expect("end matches a begin");
        let len = u32::try_from(self.buf.len() - start).expect("messages we build fit in u32");
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// The finished bytes.
    pub fn finish(self) -> Vec<u8> {
        assert!(self.msg_start.is_none(), "last message ended");
        self.buf
    }

    fn pad(&mut self) {
        let padded = align4(self.buf.len());
        self.buf.resize(padded, 0);
    }
}

/// A `NETLINK_NETFILTER` socket bound to a kernel-chosen port id.
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    /// Opens and binds a `NETLINK_NETFILTER` socket (close-on-exec).
    ///
    /// # Errors
    /// The socket or bind error.
    pub fn open() -> io::Result<Socket> {
        // SAFETY: plain socket(2) call; the result is checked before it is wrapped.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let addr = sockaddr_nl();
        // SAFETY: `addr` is a valid sockaddr_nl and the length matches its type.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::from_ref(&addr).cast::<libc::sockaddr>(),
                socklen_of::<libc::sockaddr_nl>(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // Start sequence numbers somewhere other than 0 so a stale answer from an earlier
        // socket user is unlikely to match; uniqueness within this socket is what matters.
        let seq = std::process::id().wrapping_mul(0x9e37_79b9) | 1;
        Ok(Socket { fd, seq })
    }

    /// A fresh sequence number.
    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Switches the socket to non-blocking mode (for the event loop).
    ///
    /// # Errors
    /// The fcntl error.
    pub fn set_nonblocking(&self) -> io::Result<()> {
        // SAFETY: fcntl on a descriptor we own.
        let flags = unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        let rc =
            unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sets the receive buffer to `bytes`, above `net.core.rmem_max` if we may
    /// (`SO_RCVBUFFORCE` needs CAP_NET_ADMIN), else as far as `SO_RCVBUF` allows.
    ///
    /// # Errors
    /// When neither option can be set.
    pub fn set_rcvbuf(&self, bytes: usize) -> io::Result<()> {
        let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        if self
            .setsockopt_int(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, value)
            .is_ok()
        {
            return Ok(());
        }
        self.setsockopt_int(libc::SOL_SOCKET, libc::SO_RCVBUF, value)
    }

    /// Sets an int socket option.
    ///
    /// # Errors
    /// The setsockopt error.
    pub fn setsockopt_int(&self, level: i32, name: i32, value: libc::c_int) -> io::Result<()> {
        // SAFETY: `value` lives across the call and the length matches its type.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                std::ptr::from_ref(&value).cast::<libc::c_void>(),
                socklen_of::<libc::c_int>(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends `bytes` (one or more messages) to the kernel as one datagram.
    ///
    /// # Errors
    /// The sendto error, or a short send.
    pub fn send(&self, bytes: &[u8]) -> io::Result<()> {
        let addr = sockaddr_nl();
        // SAFETY: `bytes` and `addr` are valid for the duration of the call.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                bytes.as_ptr().cast::<libc::c_void>(),
                bytes.len(),
                0,
                std::ptr::from_ref(&addr).cast::<libc::sockaddr>(),
                socklen_of::<libc::sockaddr_nl>(),
            )
        };
        match usize::try_from(sent) {
            Err(_) => Err(io::Error::last_os_error()),
            Ok(n) if n != bytes.len() => Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("netlink short send: {n} of {} bytes", bytes.len()),
            )),
            Ok(_) => Ok(()),
        }
    }

    /// Receives one datagram into `buf`; `dontwait` adds `MSG_DONTWAIT`.
    ///
    /// Returns the datagram's length. A datagram longer than `buf` is an error
    /// (`MSG_TRUNC` tells us its real length) so a cut message is never parsed.
    ///
    /// # Errors
    /// The recv error (`WouldBlock` when nothing waits), or a truncated datagram.
    pub fn recv(&self, buf: &mut [u8], dontwait: bool) -> io::Result<usize> {
        recv_datagram(&self.fd, buf, dontwait)
    }

    /// Reads, without waiting, as many datagrams as are queued and fit `bufs` (at most
    /// [`MAX_RECV_MANY`]) with one recvmmsg(2): for [`Datagram::refill_many`].
    ///
    /// # Errors
    /// `WouldBlock` when nothing waits; the receive error otherwise. An error met after
    /// the first datagram is the kernel's to report on the next call (net/socket.c
    /// `do_recvmmsg` keeps it in `sk_err`), so none is lost.
    pub fn recv_many(&self, bufs: &mut [Vec<u8>], lens: &mut [usize]) -> io::Result<usize> {
        recv_datagrams(&self.fd, bufs, lens)
    }

    /// Sends one request carrying `NLM_F_ACK` and reads the kernel's answer to `seq` (the
    /// socket must still be blocking: the kernel answers configuration requests before
    /// `sendto` returns).
    ///
    /// # Errors
    /// The send or receive error, or the errno the kernel answered with.
    pub fn request(&self, bytes: &[u8], seq: u32) -> io::Result<()> {
        self.send(bytes)?;
        let mut buf = vec![0u8; 8192];
        loop {
            let n = self.recv(&mut buf, false)?;
            for msg in messages(&buf[..n]) {
                let msg = msg.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                if msg.ty == NLMSG_ERROR && msg.seq == seq {
                    let errno = parse_error(msg.payload)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    return if errno == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::from_raw_os_error(errno))
                    };
                }
            }
        }
    }

    /// Whether the kernel lets this process configure netfilter over netlink, asked with a
    /// `NFT_MSG_GETGEN` request: it passes the same CAP_NET_ADMIN check as every
    /// nfnetlink message (`nfnetlink_rcv`) and changes nothing. Tells "needs
    /// CAP_NET_ADMIN" from "another socket holds it", which the kernel answers with the
    /// same EPERM when binding a queue or a log group.
    pub fn may_configure(&mut self) -> bool {
        let seq = self.next_seq();
        !matches!(
            self.request(&build_getgen(seq), seq)
                .map_err(|e| e.raw_os_error()),
            Err(Some(libc::EPERM))
        )
    }

    /// Gives up the ability to send: what a copy source keeps once its configuration is
    /// acknowledged ([`RecvOnly`]).
    pub fn into_recv_only(self) -> RecvOnly {
        RecvOnly { fd: self.fd }
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A `NETLINK_NETFILTER` socket that can only be read: it has no send method, so code
/// holding it cannot bind, unbind or configure anything through it. (The descriptor itself
/// could still be written with raw syscalls; the kernel then checks CAP_NET_ADMIN on every
/// message it is sent, `nfnetlink_rcv` in net/netfilter/nfnetlink.c, so a process without
/// that capability changes nothing either way.)
#[derive(Debug)]
pub struct RecvOnly {
    fd: OwnedFd,
}

impl RecvOnly {
    /// The descriptor, to hand to another process.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// Wraps a descriptor that [`RecvOnly::into_fd`] gave out.
    pub fn from_fd(fd: OwnedFd) -> RecvOnly {
        RecvOnly { fd }
    }

    /// As [`Socket::recv`].
    ///
    /// # Errors
    /// The recv error (`WouldBlock` when nothing waits), or a truncated datagram.
    pub fn recv(&self, buf: &mut [u8], dontwait: bool) -> io::Result<usize> {
        recv_datagram(&self.fd, buf, dontwait)
    }
}

impl AsRawFd for RecvOnly {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// An `NFT_MSG_GETGEN` request with `NLM_F_ACK`: read-only (it asks for the ruleset's
/// generation), answered with the generation and an acknowledgement.
pub fn build_getgen(seq: u32) -> Vec<u8> {
    let mut b = MsgBuilder::new();
    // NFT_MSG_GETGEN = 16 (nf_tables.h)
    b.begin(
        nfnl_type(NFNL_SUBSYS_NFTABLES, 16),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        0,
        0,
    )
    .end();
    b.finish()
}

/// Received datagrams, read a message at a time: the receive side that the NFQUEUE
/// intercept and the NFLOG copy source share. It holds one datagram, or several read
/// with one recvmmsg(2) ([`Datagram::refill_many`]: NFQUEUE sends each packet in a
/// datagram of its own, so under load this saves a system call per packet). It walks the messages (the kernel packs
/// several into one datagram), answers the kernel's errors and end-of-batch markers, and
/// counts and logs what cannot be parsed and what the socket lost, each under `label`
/// (`nfqueue 10004`). Its users differ only in the message type they want and what they
/// read from it.
#[derive(Debug)]
pub struct Datagram {
    label: String,
    /// What an overflow of the socket means to its reader, for the warning.
    lost_means: &'static str,
    /// What an error message from the kernel means to its reader, for the warning.
    error_means: &'static str,
    /// One buffer per datagram a refill can read; the datagrams read are
    /// `bufs[i][..lens[i]]` for `i < filled`.
    bufs: Vec<Vec<u8>>,
    lens: Vec<usize>,
    filled: usize,
    /// The datagram being read, and where its next message starts.
    cur: usize,
    next: usize,
    malformed: u64,
    overflows: u64,
}

impl Datagram {
    /// A reader with room for one datagram of `size` bytes. `lost_means` ends the
    /// overflow warning ("packets passed unseen"), `error_means` starts the kernel-error
    /// one ("kernel refused a verdict").
    pub fn new(
        label: String,
        size: usize,
        lost_means: &'static str,
        error_means: &'static str,
    ) -> Datagram {
        Datagram::with_room_for(label, 1, size, lost_means, error_means)
    }

    /// As [`Datagram::new`], with room for `count` datagrams of `size` bytes each (the
    /// buffers are zeroed allocations: memory the kernel maps only once a datagram that
    /// long has been written into it).
    pub fn with_room_for(
        label: String,
        count: usize,
        size: usize,
        lost_means: &'static str,
        error_means: &'static str,
    ) -> Datagram {
        let count = count.max(1);
        Datagram {
            label,
            lost_means,
            error_means,
            bufs: vec![vec![0; size]; count],
            lens: vec![0; count],
            filled: 0,
            cur: 0,
            next: 0,
            malformed: 0,
            overflows: 0,
        }
    }

    /// Messages (or datagrams) that could not be parsed and were skipped.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// How often the socket overflowed (ENOBUFS).
    pub fn overflows(&self) -> u64 {
        self.overflows
    }

    /// The next message of type `wanted` in the datagram: the range of its payload, for
    /// [`Datagram::bytes`]. Other messages are dealt with on the way; a message whose
    /// framing is broken ends the datagram (nothing after it can be found).
    pub fn next_of(&mut self, wanted: u16) -> Option<std::ops::Range<usize>> {
        while self.cur < self.filled {
            if let Some(range) = self.next_in_current(wanted) {
                return Some(range);
            }
            self.cur += 1;
            self.next = 0;
        }
        None
    }

    fn next_in_current(&mut self, wanted: u16) -> Option<std::ops::Range<usize>> {
        let len = self.lens[self.cur];
        while self.next < len {
            let base = self.next;
            let msg = match messages(&self.bufs[self.cur][base..len]).next()? {
                Ok(msg) => msg,
                Err(e) => {
                    self.skip_malformed(&format_args!("{e}; rest of datagram skipped"));
                    self.next = len;
                    return None;
                }
            };
            // This message's end: header and payload, then the alignment.
            self.next = (base + align4(NLMSG_HDRLEN + msg.payload.len())).min(len);
            match msg.ty {
                t if t == wanted => {
                    let start = base + NLMSG_HDRLEN;
                    return Some(start..start + msg.payload.len());
                }
                NLMSG_ERROR => match parse_error(msg.payload) {
                    Ok(0) => {}
                    Ok(errno) => log::warn!(
                        "{}: {}: {}",
                        self.label,
                        self.error_means,
                        io::Error::from_raw_os_error(errno)
                    ),
                    Err(e) => self.skip_malformed(&e),
                },
                // A batch of several messages may end with NLMSG_DONE.
                NLMSG_NOOP | NLMSG_DONE => {}
                other => log::debug!("{}: ignoring message type {other}", self.label),
            }
        }
        None
    }

    /// The bytes of a range from [`Datagram::next_of`] (or [`Datagram::offset_of`]), in
    /// the datagram that call found it in.
    pub fn bytes(&self, range: std::ops::Range<usize>) -> &[u8] {
        &self.bufs[self.cur][range]
    }

    /// Where `part`, a sub-slice of [`Datagram::bytes`], starts in its datagram.
    pub fn offset_of(&self, part: &[u8]) -> usize {
        (part.as_ptr() as usize).saturating_sub(self.bufs[self.cur].as_ptr() as usize)
    }

    /// Counts one message its reader could not parse, and says so.
    pub fn skip_malformed(&mut self, why: &dyn std::fmt::Display) {
        self.malformed += 1;
        log::warn!("{}: {why}", self.label);
    }

    /// Reads the next datagram with `recv` (a non-blocking receive into the buffer).
    /// Returns `false` when nothing waits; an overflow, a datagram cut short or a signal
    /// is counted and logged, and `true` returned: read on.
    ///
    /// # Errors
    /// Any other receive error.
    pub fn refill(
        &mut self,
        recv: impl FnOnce(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<bool> {
        self.refill_many(|bufs, lens| {
            let n = recv(&mut bufs[0])?;
            lens[0] = n;
            Ok(1)
        })
    }

    /// As [`Datagram::refill`], reading up to as many datagrams as there is room for with
    /// `recv` (recvmmsg(2): [`Socket::recv_many`]), which fills `bufs[i]` and `lens[i]`
    /// and returns how many it read. A length past its buffer is a datagram cut short:
    /// counted and skipped.
    ///
    /// # Errors
    /// Any receive error other than those [`Datagram::refill`] reads on.
    pub fn refill_many(
        &mut self,
        recv: impl FnOnce(&mut [Vec<u8>], &mut [usize]) -> io::Result<usize>,
    ) -> io::Result<bool> {
        self.filled = 0;
        self.cur = 0;
        self.next = 0;
        match recv(&mut self.bufs, &mut self.lens) {
            Ok(n) => {
                self.filled = n.min(self.bufs.len());
                for i in 0..self.filled {
                    if self.lens[i] > self.bufs[i].len() {
                        let (got, room) = (self.lens[i], self.bufs[i].len());
                        self.skip_malformed(&format_args!(
                            "netlink datagram of {got} bytes cut to {room}; skipped"
                        ));
                        self.lens[i] = 0;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                self.overflows += 1;
                if crate::log_limit::is_power_of_ten(self.overflows) {
                    log::warn!(
                        "{}: receive buffer overflowed ({} times); {}",
                        self.label,
                        self.overflows,
                        self.lost_means
                    );
                }
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                self.skip_malformed(&format_args!("{e}; skipped"));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        Ok(true)
    }
}

/// Most datagrams one [`Socket::recv_many`] reads.
pub const MAX_RECV_MANY: usize = 32;

/// recvmmsg(2) without waiting into `bufs` (at most [`MAX_RECV_MANY`]): how many
/// datagrams it read, each one's length in `lens` (its full length when it was longer than
/// its buffer, as MSG_TRUNC asks).
fn recv_datagrams(fd: &OwnedFd, bufs: &mut [Vec<u8>], lens: &mut [usize]) -> io::Result<usize> {
    let count = bufs.len().min(lens.len()).min(MAX_RECV_MANY);
    // SAFETY: all-zero iovec and mmsghdr are valid (null pointers, zero lengths).
    let mut iovecs: [libc::iovec; MAX_RECV_MANY] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut headers: [libc::mmsghdr; MAX_RECV_MANY] = unsafe { std::mem::zeroed() };
    for i in 0..count {
        iovecs[i] = libc::iovec {
            iov_base: bufs[i].as_mut_ptr().cast::<libc::c_void>(),
            iov_len: bufs[i].len(),
        };
        headers[i].msg_hdr.msg_iov = &raw mut iovecs[i];
        headers[i].msg_hdr.msg_iovlen = 1;
    }
    let count_arg = libc::c_uint::try_from(count).expect("at most MAX_RECV_MANY");
    // SAFETY: `headers[..count]` point at `iovecs[..count]`, each describing the whole of
    // a live buffer of `bufs` that nothing else borrows during the call.
    let got = unsafe {
        libc::recvmmsg(
            fd.as_raw_fd(),
            headers.as_mut_ptr(),
            count_arg,
            libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            std::ptr::null_mut(),
        )
    };
    let got = usize::try_from(got).map_err(|_| io::Error::last_os_error())?;
    for i in 0..got {
        lens[i] = headers[i].msg_len as usize;
    }
    Ok(got)
}

fn recv_datagram(fd: &OwnedFd, buf: &mut [u8], dontwait: bool) -> io::Result<usize> {
    let flags = libc::MSG_TRUNC | if dontwait { libc::MSG_DONTWAIT } else { 0 };
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
    let got = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast::<libc::c_void>(),
            buf.len(),
            flags,
        )
    };
    let got = usize::try_from(got).map_err(|_| io::Error::last_os_error())?;
    if got > buf.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("netlink datagram of {got} bytes cut to {}", buf.len()),
        ));
    }
    Ok(got)
}

/// The kernel's address (pid 0, no multicast groups); also our bind address, where pid 0
/// lets the kernel pick a unique port id.
fn sockaddr_nl() -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is plain data for which all-zero is valid.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::sa_family_t::try_from(libc::AF_NETLINK).expect("AF_NETLINK fits");
    addr
}

fn socklen_of<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(std::mem::size_of::<T>()).expect("socket structs are small")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A raw message of type `ty` with `payload` (host-order header, padded to 4).
    fn raw_msg(ty: u16, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(NLMSG_HDRLEN + payload.len()).unwrap();
        let mut m = Vec::new();
        m.extend_from_slice(&len.to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(payload);
        m.resize(align4(m.len()), 0);
        m
    }

    fn reader_with(bytes: &[u8]) -> Datagram {
        let mut d = Datagram::new("test 1".into(), 256, "lost", "kernel said");
        assert!(d
            .refill(|buf| {
                buf[..bytes.len()].copy_from_slice(bytes);
                Ok(bytes.len())
            })
            .unwrap());
        d
    }

    /// The shared reader finds every wanted message of a datagram in order, past the
    /// kernel's acknowledgements, errors, NOOP and DONE, and gives each payload's range.
    #[test]
    fn datagram_yields_the_wanted_messages_past_the_others() {
        const WANTED: u16 = 0x0300;
        let mut bytes = raw_msg(WANTED, b"first");
        bytes.extend(raw_msg(NLMSG_ERROR, &0i32.to_ne_bytes()));
        bytes.extend(raw_msg(NLMSG_ERROR, &(-libc::EPERM).to_ne_bytes()));
        bytes.extend(raw_msg(NLMSG_NOOP, b""));
        bytes.extend(raw_msg(0x0999, b"other"));
        bytes.extend(raw_msg(WANTED, b"second"));
        bytes.extend(raw_msg(NLMSG_DONE, b""));
        let mut d = reader_with(&bytes);
        let first = d.next_of(WANTED).expect("first");
        assert_eq!(d.bytes(first.clone()), b"first");
        assert_eq!(d.offset_of(d.bytes(first.clone())), first.start);
        let range = d.next_of(WANTED).expect("second");
        assert_eq!(d.bytes(range), b"second");
        assert_eq!(d.next_of(WANTED), None);
        assert_eq!(d.malformed(), 0);
    }

    /// Broken framing ends the datagram (nothing after it can be trusted to start a
    /// message) and is counted; the next datagram is read as usual.
    #[test]
    fn datagram_with_broken_framing_is_counted_and_left() {
        const WANTED: u16 = 0x0300;
        let mut bytes = raw_msg(WANTED, b"ok");
        let mut broken = raw_msg(WANTED, b"cut");
        broken[0] = 200; // longer than what follows
        bytes.extend(broken);
        bytes.extend(raw_msg(WANTED, b"unreachable"));
        let mut d = reader_with(&bytes);
        let range = d.next_of(WANTED).unwrap();
        assert_eq!(d.bytes(range), b"ok");
        assert_eq!(d.next_of(WANTED), None);
        assert_eq!(d.malformed(), 1);
        let again = raw_msg(WANTED, b"next");
        assert!(d
            .refill(|buf| {
                buf[..again.len()].copy_from_slice(&again);
                Ok(again.len())
            })
            .unwrap());
        let range = d.next_of(WANTED).unwrap();
        assert_eq!(d.bytes(range), b"next");
    }

    /// Several datagrams read at once are walked in order, each message's bytes and
    /// offset taken from its own datagram; one cut short (longer than its buffer) is
    /// counted and skipped, and the others are read.
    #[test]
    fn datagrams_read_together_are_walked_in_order() {
        const WANTED: u16 = 0x0300;
        let mut first = raw_msg(WANTED, b"one");
        first.extend(raw_msg(WANTED, b"two"));
        let third = raw_msg(WANTED, b"three");
        let mut d = Datagram::with_room_for("test 1".into(), 4, 64, "lost", "kernel said");
        assert!(d
            .refill_many(|bufs, lens| {
                bufs[0][..first.len()].copy_from_slice(&first);
                lens[0] = first.len();
                lens[1] = 500; // cut: longer than its 64-byte buffer
                bufs[2][..third.len()].copy_from_slice(&third);
                lens[2] = third.len();
                Ok(3)
            })
            .unwrap());
        let mut got = Vec::new();
        while let Some(range) = d.next_of(WANTED) {
            let bytes = d.bytes(range.clone());
            assert_eq!(d.offset_of(bytes), range.start);
            got.push(bytes.to_vec());
        }
        assert_eq!(got, [&b"one"[..], b"two", b"three"]);
        assert_eq!(d.malformed(), 1, "the cut datagram");
        assert!(!d
            .refill_many(|_, _| Err(io::ErrorKind::WouldBlock.into()))
            .unwrap());
        assert_eq!(d.next_of(WANTED), None, "nothing left of the last read");
    }

    /// Nothing waiting stops the caller's loop; an overflow, a cut datagram or a signal
    /// is counted where it counts and the caller reads on; other errors are returned.
    #[test]
    fn datagram_refill_outcomes() {
        let mut d = Datagram::new("test 1".into(), 64, "lost", "kernel said");
        let err = |code| move |_: &mut [u8]| Err(io::Error::from_raw_os_error(code));
        assert!(!d.refill(err(libc::EAGAIN)).unwrap());
        assert!(d.refill(err(libc::ENOBUFS)).unwrap());
        assert!(d.refill(err(libc::EINTR)).unwrap());
        assert!(d
            .refill(|_| Err(io::Error::new(io::ErrorKind::InvalidData, "cut")))
            .unwrap());
        assert_eq!((d.overflows(), d.malformed()), (1, 1));
        assert_eq!(
            d.refill(err(libc::EBADF)).unwrap_err().raw_os_error(),
            Some(libc::EBADF)
        );
        assert_eq!(d.next_of(1), None, "a failed read leaves no datagram");
    }

    #[test]
    fn builder_lays_out_header_nfgenmsg_and_padded_attrs() {
        let mut b = MsgBuilder::new();
        b.begin(0x0a0c, NLM_F_REQUEST | NLM_F_ACK, 7, 1, 0)
            .attr_str(1, "filter")
            .nest_begin(3)
            .attr_be_u32(4, 5000)
            .nest_end()
            .end();
        let bytes = b.finish();
        let mut want = Vec::new();
        want.extend_from_slice(&44u32.to_ne_bytes());
        want.extend_from_slice(&0x0a0cu16.to_ne_bytes());
        want.extend_from_slice(&5u16.to_ne_bytes());
        want.extend_from_slice(&7u32.to_ne_bytes());
        want.extend_from_slice(&0u32.to_ne_bytes());
        want.extend_from_slice(&[1, 0, 0, 0]);
        want.extend_from_slice(&11u16.to_ne_bytes());
        want.extend_from_slice(&1u16.to_ne_bytes());
        want.extend_from_slice(b"filter\0\0");
        want.extend_from_slice(&12u16.to_ne_bytes());
        want.extend_from_slice(&(3u16 | NLA_F_NESTED).to_ne_bytes());
        want.extend_from_slice(&8u16.to_ne_bytes());
        want.extend_from_slice(&4u16.to_ne_bytes());
        want.extend_from_slice(&[0, 0, 0x13, 0x88]);
        assert_eq!(bytes, want);

        let msgs: Vec<_> = messages(&bytes).collect();
        assert_eq!(msgs.len(), 1);
        let msg = msgs[0].unwrap();
        assert_eq!((msg.ty, msg.flags, msg.seq), (0x0a0c, 5, 7));
        let (hdr, body) = split_nfgenmsg(msg.payload).unwrap();
        assert_eq!(
            hdr,
            NfGenMsg {
                family: 1,
                version: 0,
                res_id: 0
            }
        );
        let list: Vec<_> = attrs(body).map(Result::unwrap).collect();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].c_str(), b"filter");
        assert!(list[1].nested);
        let inner: Vec<_> = attrs(list[1].data).map(Result::unwrap).collect();
        assert_eq!(inner[0].be_u32(), Some(5000));
    }

    #[test]
    fn two_messages_in_one_datagram_are_both_seen() {
        let mut b = MsgBuilder::new();
        b.begin(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 1, 0, 10).end();
        b.begin(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 2, 0, 10).end();
        let bytes = b.finish();
        let seqs: Vec<u32> = messages(&bytes).map(|m| m.unwrap().seq).collect();
        assert_eq!(seqs, vec![1, 2]);
    }

    #[test]
    fn truncated_message_header_is_an_error() {
        let got: Vec<_> = messages(&[20, 0, 0]).collect();
        assert_eq!(
            got,
            vec![Err(ParseError::Truncated {
                what: "nlmsghdr",
                have: 3,
                need: 16
            })]
        );
    }

    #[test]
    fn message_length_past_the_buffer_is_an_error() {
        let mut bytes = vec![0u8; 16];
        bytes[..4].copy_from_slice(&64u32.to_ne_bytes());
        let got: Vec<_> = messages(&bytes).collect();
        assert!(matches!(
            got[..],
            [Err(ParseError::BadLength { len: 64, .. })]
        ));
    }

    #[test]
    fn message_length_below_header_is_an_error_not_a_loop() {
        let mut bytes = vec![0u8; 32];
        bytes[..4].copy_from_slice(&4u32.to_ne_bytes());
        let got: Vec<_> = messages(&bytes).collect();
        assert_eq!(got.len(), 1);
        assert!(got[0].is_err());
    }

    #[test]
    fn attribute_length_below_header_is_an_error_not_a_loop() {
        let got: Vec<_> = attrs(&[0, 0, 1, 0, 0, 0, 0, 0]).collect();
        assert_eq!(got.len(), 1);
        assert!(got[0].is_err());
    }

    #[test]
    fn attribute_running_past_the_buffer_is_an_error() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&8u16.to_ne_bytes());
        bytes.extend_from_slice(&1u16.to_ne_bytes());
        bytes.extend_from_slice(&[1, 2]);
        let got: Vec<_> = attrs(&bytes).collect();
        assert_eq!(
            got,
            vec![Err(ParseError::BadLength {
                what: "nlattr",
                len: 8,
                room: 6
            })]
        );
    }

    #[test]
    fn truncated_attribute_header_is_an_error() {
        let got: Vec<_> = attrs(&[5, 0]).collect();
        assert!(matches!(got[..], [Err(ParseError::Truncated { .. })]));
    }

    #[test]
    fn last_attribute_without_padding_is_accepted() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&5u16.to_ne_bytes());
        bytes.extend_from_slice(&2u16.to_ne_bytes());
        bytes.push(9);
        let got: Vec<_> = attrs(&bytes).map(Result::unwrap).collect();
        assert_eq!(got[0].data, &[9]);
    }

    #[test]
    fn garbage_never_panics() {
        // A cheap deterministic sweep: every prefix of a few byte patterns.
        let patterns: [&[u8]; 3] = [
            &[0xff; 40],
            &[16, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 4, 0, 1],
            &[4, 0, 1, 0, 3, 0, 2, 0, 255, 255, 0, 0, 8, 0],
        ];
        for pattern in patterns {
            for end in 0..=pattern.len() {
                let slice = &pattern[..end];
                for m in messages(slice).flatten() {
                    let _ = split_nfgenmsg(m.payload);
                    let _ = parse_error(m.payload);
                }
                for a in attrs(slice).flatten() {
                    let _ = (a.be_u32(), a.be_u64(), a.c_str());
                    attrs(a.data).for_each(drop);
                }
            }
        }
    }

    #[test]
    fn error_code_is_returned_positive() {
        assert_eq!(parse_error(&(-2i32).to_ne_bytes()), Ok(2));
        assert_eq!(parse_error(&0i32.to_ne_bytes()), Ok(0));
        assert!(parse_error(&[0, 0]).is_err());
    }
}
