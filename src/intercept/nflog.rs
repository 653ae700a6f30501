//! Linux NFLOG copy source over raw netlink (`NETLINK_NETFILTER`, subsystem
//! `NFNL_SUBSYS_ULOG`), without libnetfilter_log.
//!
//! Owns one nfnetlink_log group: binding it once, at start, with the configuration that makes
//! the kernel copy whole packets and hand each over at once, and reading
//! `NFULNL_MSG_PACKET` messages afterwards. Sends nothing after [`NfLog::bind`] returns: the
//! socket it keeps is a [`RecvOnly`], which has no send method. Parses nothing past the
//! attributes the kernel hands over; the packet bytes go to the core untouched. Must not
//! touch the rules that feed the group: the administrator's nft `log group N` or iptables
//! `-j NFLOG --nflog-group N` are theirs. A copy changes nothing for the packet it was taken
//! from: the kernel logs it and lets it go on (DESIGN.md invariant 2, copy modes).
//!
//! Layouts and constants: the uapi header `linux/netfilter/nfnetlink_log.h`; the behaviour
//! from net/netfilter/nfnetlink_log.c (`nfulnl_recv_config`, `nfulnl_log_packet`,
//! `instance_create`).
//!
//! Why the configuration looks the way it does:
//! - **Threshold 1.** A new group batches up to `NFULNL_QTHRESH_DEFAULT` (100) packets or
//!   `NFULNL_TIMEOUT_DEFAULT` (1 s) before it sends (`instance_create`); a rule's own
//!   threshold can only lower that (`nfulnl_log_packet`: "per-rule qthreshold overrides
//!   per-instance" when smaller). `nfulnl_log_packet` flushes as soon as
//!   `inst->qlen >= qthreshold`, so with 1 every copy leaves at once: copy mode's race
//!   with fast peers must not get a second of batching on top.
//! - **Copy range 0xffff.** The kernel clamps it to `NFULNL_COPY_RANGE_MAX`; a rule's
//!   `snaplen` (nft) / `--nflog-size` (iptables) can still cut copies shorter.
//! - **`NFULNL_CFG_F_SEQ`.** Each copy carries the group's own sequence number
//!   (`NFULA_SEQ`), so copies lost on the way (our buffer full: the kernel's unicast
//!   fails and the batch is gone) show up as a jump, not as silence.
//! - **No `NFULNL_CFG_CMD_PF_BIND`.** It makes nfnetlink_log the namespace's default
//!   logger for a family (`nf_log_bind_pf`), which changes where every rule without a
//!   logger type logs. Rules that name a group (the NFLOG target, nft `log group`) use the
//!   ULOG logger type, registered for every family at module load, so they reach the group
//!   without it; `tests/netlink_nflog.rs` shows that on this kernel.

use std::io;
use std::ops::Range;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::{CopyMeta, CopySource, PacketCopy};
use crate::netlink::{
    attrs, nfnl_type, split_nfgenmsg, Datagram, MsgBuilder, ParseError, RecvOnly, Socket,
    NFNL_SUBSYS_ULOG, NLM_F_ACK, NLM_F_REQUEST,
};
use ftp6proxy_core::engine::Checksum;

// enum nfulnl_msg_types
/// `NFULNL_MSG_PACKET`: kernel → us, one logged packet.
pub const NFULNL_MSG_PACKET: u8 = 0;
/// `NFULNL_MSG_CONFIG`: us → kernel, bind and configure a group.
pub const NFULNL_MSG_CONFIG: u8 = 1;

// enum nfulnl_attr_type
/// `NFULA_PACKET_HDR`: struct nfulnl_msg_packet_hdr { __be16 hw_protocol; u8 hook; u8 _pad; }.
pub const NFULA_PACKET_HDR: u16 = 1;
/// `NFULA_IFINDEX_INDEV` (__be32).
pub const NFULA_IFINDEX_INDEV: u16 = 4;
/// `NFULA_IFINDEX_OUTDEV` (__be32).
pub const NFULA_IFINDEX_OUTDEV: u16 = 5;
/// `NFULA_PAYLOAD`: the packet from the network header on (up to the copy range).
pub const NFULA_PAYLOAD: u16 = 9;
/// `NFULA_PREFIX`: the rule's log prefix, NUL-terminated.
pub const NFULA_PREFIX: u16 = 10;
/// `NFULA_SEQ`: the group's own sequence number (__be32), with `NFULNL_CFG_F_SEQ`.
pub const NFULA_SEQ: u16 = 12;

// enum nfulnl_attr_config
/// `NFULA_CFG_CMD`: struct nfulnl_msg_config_cmd { u8 command; } (packed).
pub const NFULA_CFG_CMD: u16 = 1;
/// `NFULA_CFG_MODE`: struct nfulnl_msg_config_mode { __be32 copy_range; u8 copy_mode;
/// u8 _pad; } (packed, 6 bytes).
pub const NFULA_CFG_MODE: u16 = 2;
/// `NFULA_CFG_TIMEOUT`: flush timeout in 1/100 s (__be32).
pub const NFULA_CFG_TIMEOUT: u16 = 4;
/// `NFULA_CFG_QTHRESH`: flush after this many packets (__be32).
pub const NFULA_CFG_QTHRESH: u16 = 5;
/// `NFULA_CFG_FLAGS` (__be16).
pub const NFULA_CFG_FLAGS: u16 = 6;

// enum nfulnl_msg_config_cmds
/// `NFULNL_CFG_CMD_BIND`.
pub const NFULNL_CFG_CMD_BIND: u8 = 1;
/// `NFULNL_CFG_CMD_UNBIND`.
pub const NFULNL_CFG_CMD_UNBIND: u8 = 2;

/// `NFULNL_COPY_PACKET`.
pub const NFULNL_COPY_PACKET: u8 = 0x02;
/// `NFULNL_CFG_F_SEQ`: number the copies (`NFULA_SEQ`).
pub const NFULNL_CFG_F_SEQ: u16 = 0x0001;

/// The copy range we ask for; the kernel clamps it to `NFULNL_COPY_RANGE_MAX`.
pub const COPY_RANGE: u32 = 0xffff;
/// Hand every copy over at once (see the module header).
pub const QTHRESH: u32 = 1;
/// The flush timer, in 1/100 s, for a copy that did not reach the threshold (none does
/// with a threshold of 1; kept short in case a rule's threshold is not honoured).
pub const FLUSH_TIMEOUT: u32 = 1;
/// Receive buffer: bursts of control packets must not overflow it.
pub const RCVBUF_BYTES: usize = 8 << 20;
/// One datagram holds one copy of at most 64 KiB plus headers and attributes.
const RECV_BUF_BYTES: usize = 0x1_0000 + 4096;

/// One copy, as read from an `NFULNL_MSG_PACKET` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPacket<'a> {
    /// The group it was logged to (`nfgenmsg.res_id`).
    pub group: u16,
    /// `nfgenmsg.nfgen_family`: the protocol family of the hook (`NFPROTO_IPV4` 2,
    /// `NFPROTO_IPV6` 10).
    pub family: u8,
    /// `hw_protocol` from `NFULA_PACKET_HDR` (an ethertype; 0 on the output path).
    pub hw_protocol: u16,
    /// The netfilter hook (`NF_INET_LOCAL_IN` 1, `FORWARD` 2, `LOCAL_OUT` 3, ...).
    pub hook: u8,
    /// The packet from the IP header on (`NFULA_PAYLOAD`); empty if the kernel sent none.
    pub payload: &'a [u8],
    /// `NFULA_IFINDEX_INDEV`.
    pub indev: Option<u32>,
    /// `NFULA_IFINDEX_OUTDEV`.
    pub outdev: Option<u32>,
    /// `NFULA_SEQ`.
    pub seq: Option<u32>,
    /// `NFULA_PREFIX`, without its terminator.
    pub prefix: &'a [u8],
}

/// Why an `NFULNL_MSG_PACKET` could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Occurs when the message or one of its attributes is cut short or inconsistent.
    #[error("malformed nflog message: {0}")]
    Malformed(#[from] ParseError),
    /// Occurs when the message has no (or a short) `NFULA_PACKET_HDR`.
    #[error("nflog message without packet header")]
    NoPacketHeader,
}

/// Parses the body of an `NFULNL_MSG_PACKET` message (nfgenmsg + attributes).
///
/// # Errors
/// [`PacketError`] when the body is truncated or has no packet header.
pub fn parse_packet_msg(payload: &[u8]) -> Result<LogPacket<'_>, PacketError> {
    let (hdr, body) = split_nfgenmsg(payload)?;
    let mut packet_hdr = None;
    let mut packet = LogPacket {
        group: hdr.res_id,
        family: hdr.family,
        hw_protocol: 0,
        hook: 0,
        payload: &[],
        indev: None,
        outdev: None,
        seq: None,
        prefix: &[],
    };
    for attr in attrs(body) {
        let attr = attr?;
        match attr.ty {
            NFULA_PACKET_HDR => packet_hdr = attr.data.get(..3).map(|h| (h[0], h[1], h[2])),
            NFULA_PAYLOAD => packet.payload = attr.data,
            NFULA_IFINDEX_INDEV => packet.indev = attr.be_u32(),
            NFULA_IFINDEX_OUTDEV => packet.outdev = attr.be_u32(),
            NFULA_SEQ => packet.seq = attr.be_u32(),
            NFULA_PREFIX => {
                let end = attr.data.iter().position(|&b| b == 0);
                packet.prefix = &attr.data[..end.unwrap_or(attr.data.len())];
            }
            _ => {}
        }
    }
    let (p0, p1, hook) = packet_hdr.ok_or(PacketError::NoPacketHeader)?;
    packet.hw_protocol = u16::from_be_bytes([p0, p1]);
    packet.hook = hook;
    Ok(packet)
}

/// Builds an `NFULA_CFG_CMD` message for `group` with ACK. The family byte is
/// `AF_UNSPEC`: only the per-family commands (`PF_BIND`, `PF_UNBIND`) read it.
pub fn build_config_cmd(group: u16, command: u8, seq: u32) -> Vec<u8> {
    let mut b = MsgBuilder::new();
    b.begin(
        nfnl_type(NFNL_SUBSYS_ULOG, NFULNL_MSG_CONFIG),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        0,
        group,
    )
    .attr(NFULA_CFG_CMD, &[command])
    .end();
    b.finish()
}

/// Builds the message that configures a bound group: copy whole packets up to `range`,
/// flush after `qthresh` copies or `timeout` hundredths of a second, and `flags`.
pub fn build_config_params(
    group: u16,
    range: u32,
    qthresh: u32,
    timeout: u32,
    flags: u16,
    seq: u32,
) -> Vec<u8> {
    let mut mode = [0u8; 6];
    mode[..4].copy_from_slice(&range.to_be_bytes());
    mode[4] = NFULNL_COPY_PACKET;
    let mut b = MsgBuilder::new();
    b.begin(
        nfnl_type(NFNL_SUBSYS_ULOG, NFULNL_MSG_CONFIG),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        0,
        group,
    )
    .attr(NFULA_CFG_MODE, &mode)
    .attr_be_u32(NFULA_CFG_QTHRESH, qthresh)
    .attr_be_u32(NFULA_CFG_TIMEOUT, timeout)
    .attr(NFULA_CFG_FLAGS, &flags.to_be_bytes())
    .end();
    b.finish()
}

/// Counts copies lost between two sequence numbers (`NFULA_SEQ` counts every copy the
/// group made, whether or not it reached us).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeqGaps {
    next: Option<u32>,
    /// Copies skipped so far.
    pub lost: u64,
}

impl SeqGaps {
    /// Notes copy `seq`. A number behind the expected one (a reordering the kernel does
    /// not do, or a wrap we cannot tell apart) only resets the expectation.
    pub fn see(&mut self, seq: u32) {
        if let Some(next) = self.next {
            let ahead = seq.wrapping_sub(next);
            if ahead < 1 << 31 {
                self.lost += u64::from(ahead);
            }
        }
        self.next = Some(seq.wrapping_add(1));
    }
}

/// The current copy: where its bytes are in the buffer and what came with them.
#[derive(Debug, Clone)]
struct Current {
    payload: Range<usize>,
    meta: CopyMeta,
}

/// A bound nfnetlink_log group on a non-blocking socket that can only be read.
///
/// The administrator's rule feeds it, e.g. nft `tcp dport 21 log group 10004` and
/// `tcp sport 21 log group 10004` in the forward chain, or
/// `ip6tables -A FORWARD -p tcp --dport 21 -j NFLOG --nflog-group 10004`.
#[derive(Debug)]
pub struct NfLog {
    sock: RecvOnly,
    group: u16,
    datagram: Datagram,
    gaps: SeqGaps,
}

impl NfLog {
    /// Binds group `group` and configures it (whole packets, no batching, numbered
    /// copies), enlarges the receive buffer, makes the socket non-blocking and keeps only
    /// its receiving end.
    ///
    /// Needs CAP_NET_ADMIN (nfnetlink checks it on every configuration message);
    /// receiving afterwards needs nothing (`tests/netlink_nflog.rs`).
    ///
    /// # Errors
    /// With a message naming the likely cause: missing CAP_NET_ADMIN, another socket
    /// holding the group, or a kernel without nfnetlink_log.
    pub fn bind(group: u16) -> io::Result<NfLog> {
        let mut sock = Socket::open().map_err(|e| {
            annotate(
                e,
                "open NETLINK_NETFILTER socket (kernel without CONFIG_NETFILTER_NETLINK?)",
            )
        })?;
        let seq = sock.next_seq();
        if let Err(e) = sock.request(&build_config_cmd(group, NFULNL_CFG_CMD_BIND, seq), seq) {
            return Err(bind_error(&mut sock, group, e));
        }
        let seq = sock.next_seq();
        sock.request(
            &build_config_params(
                group,
                COPY_RANGE,
                QTHRESH,
                FLUSH_TIMEOUT,
                NFULNL_CFG_F_SEQ,
                seq,
            ),
            seq,
        )
        .map_err(|e| annotate(e, &format!("nflog group {group}: set copy mode")))?;
        if let Err(e) = sock.set_rcvbuf(RCVBUF_BYTES) {
            log::warn!("nflog group {group}: cannot enlarge receive buffer: {e}");
        }
        sock.set_nonblocking()
            .map_err(|e| annotate(e, "make nflog socket non-blocking"))?;
        Ok(NfLog::from_recv_only(sock.into_recv_only(), group))
    }

    fn from_recv_only(sock: RecvOnly, group: u16) -> NfLog {
        NfLog {
            sock,
            group,
            datagram: Datagram::new(
                format!("nflog {group}"),
                RECV_BUF_BYTES,
                "copies lost",
                "kernel reported",
            ),
            gaps: SeqGaps::default(),
        }
    }

    /// The descriptor, to hand to another process (it stays bound: the group belongs to
    /// the socket, not to the process, until the socket is closed).
    pub fn into_fd(self) -> OwnedFd {
        self.sock.into_fd()
    }

    /// Wraps a descriptor that [`NfLog::into_fd`] gave out (bound, configured and
    /// non-blocking) for group `group`.
    pub fn from_fd(fd: OwnedFd, group: u16) -> NfLog {
        NfLog::from_recv_only(RecvOnly::from_fd(fd), group)
    }

    /// The group number.
    pub fn group(&self) -> u16 {
        self.group
    }

    /// How often the socket overflowed (ENOBUFS).
    pub fn overflows(&self) -> u64 {
        self.datagram.overflows()
    }

    /// How many messages could not be parsed and were skipped.
    pub fn malformed(&self) -> u64 {
        self.datagram.malformed()
    }

    /// Finds the next packet message in the current datagram.
    fn next_in_datagram(&mut self) -> Option<Current> {
        let packet = nfnl_type(NFNL_SUBSYS_ULOG, NFULNL_MSG_PACKET);
        while let Some(range) = self.datagram.next_of(packet) {
            match parse_packet_msg(self.datagram.bytes(range)) {
                Ok(p) => {
                    if let Some(seq) = p.seq {
                        self.gaps.see(seq);
                    }
                    let start = self.datagram.offset_of(p.payload);
                    return Some(Current {
                        payload: start..start + p.payload.len(),
                        meta: CopyMeta {
                            hook: Some(p.hook),
                            indev: p.indev,
                            outdev: p.outdev,
                            ..CopyMeta::default()
                        },
                    });
                }
                Err(e) => self
                    .datagram
                    .skip_malformed(&format_args!("{e}; message skipped")),
            }
        }
        None
    }
}

impl CopySource for NfLog {
    /// Copies from NFLOG are never checksum-verified: nfnetlink_log copies the packet as
    /// it is at the hook (`__build_packet_message`: `skb_copy_bits`), and a packet whose
    /// checksum offload has not run yet (sent locally, or forwarded from a veth) carries
    /// only a partial checksum there; unlike NFQUEUE (`NFQA_SKB_CSUMNOTREADY`), NFLOG has no
    /// attribute that says so.
    fn recv(&mut self) -> io::Result<Option<PacketCopy<'_>>> {
        loop {
            if let Some(current) = self.next_in_datagram() {
                return Ok(Some(PacketCopy {
                    bytes: self.datagram.bytes(current.payload),
                    checksum: Checksum::NotReady,
                    meta: current.meta,
                }));
            }
            // The kernel could not deliver a batch at an overflow: those copies are gone
            // (the sequence numbers will show how many).
            if !self.datagram.refill(|buf| self.sock.recv(buf, true))? {
                return Ok(None);
            }
        }
    }

    fn lost(&self) -> u64 {
        self.gaps.lost
    }
}

impl AsRawFd for NfLog {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

/// Explains a failed `NFULNL_CFG_CMD_BIND`. The kernel answers EPERM both without
/// CAP_NET_ADMIN (`nfnetlink_rcv`) and when another socket holds the group
/// (`nfulnl_recv_config`: an instance whose `peer_portid` is not ours).
fn bind_error(sock: &mut Socket, group: u16, err: io::Error) -> io::Error {
    match err.raw_os_error() {
        Some(libc::EPERM) if sock.may_configure() => annotate(
            err,
            &format!("bind nflog group {group}: another process holds group {group}"),
        ),
        Some(libc::EPERM) => annotate(
            err,
            &format!("bind nflog group {group}: needs CAP_NET_ADMIN"),
        ),
        Some(libc::EBUSY) => annotate(
            err,
            &format!("bind nflog group {group}: this socket already holds group {group}"),
        ),
        Some(libc::ENOENT | libc::EOPNOTSUPP | libc::EPROTONOSUPPORT) => annotate(
            err,
            &format!(
                "bind nflog group {group}: kernel without nfnetlink_log \
                 (CONFIG_NETFILTER_NETLINK_LOG)"
            ),
        ),
        _ => annotate(err, &format!("bind nflog group {group}")),
    }
}

fn annotate(err: io::Error, context: &str) -> io::Error {
    io::Error::new(err.kind(), format!("{context}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `NFULNL_MSG_CONFIG` binding group 10004, seq 1, as libnetfilter_log's
    /// `nflog_bind_group` lays it out: nfgenmsg {AF_UNSPEC, 0, be16 group}, one
    /// 5-byte NFULA_CFG_CMD padded to 8. Header fields in host order (little-endian here).
    #[cfg(target_endian = "little")]
    #[test]
    fn bind_command_layout() {
        assert_eq!(
            build_config_cmd(10004, NFULNL_CFG_CMD_BIND, 1),
            [
                28, 0, 0, 0, // nlmsg_len
                0x01, 0x04, // NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_CONFIG
                0x05, 0x00, // NLM_F_REQUEST | NLM_F_ACK
                1, 0, 0, 0, 0, 0, 0, 0, // seq, pid
                0, 0, 0x27, 0x14, // nfgenmsg: AF_UNSPEC, v0, group 10004
                5, 0, 1, 0, 1, 0, 0, 0, // NFULA_CFG_CMD = BIND, padded
            ]
        );
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn params_carry_range_mode_threshold_timeout_and_seq_flag() {
        let bytes = build_config_params(7, 0xffff, 1, 1, NFULNL_CFG_F_SEQ, 2);
        assert_eq!(
            &bytes[20..],
            &[
                10, 0, 2, 0, 0, 0, 0xff, 0xff, 2, 0, 0, 0, // NFULA_CFG_MODE, padded
                8, 0, 5, 0, 0, 0, 0, 1, // NFULA_CFG_QTHRESH 1
                8, 0, 4, 0, 0, 0, 0, 1, // NFULA_CFG_TIMEOUT 1
                6, 0, 6, 0, 0, 1, 0, 0, // NFULA_CFG_FLAGS = SEQ, padded
            ]
        );
        assert_eq!(bytes.len(), 56);
        assert_eq!(u32::from_ne_bytes(bytes[..4].try_into().unwrap()), 56);
    }

    /// Body of an `NFULNL_MSG_PACKET` shaped like what Linux 6.18 sends for a locally
    /// generated IPv6 packet at LOCAL_OUT: nfgenmsg, NFULA_PACKET_HDR, OUTDEV, a prefix,
    /// NFULA_SEQ and a 5-byte stand-in payload.
    #[cfg(target_endian = "little")]
    const PACKET_BODY: [u8; 52] = [
        10, 0, 0x27, 0x14, // nfgenmsg: NFPROTO_IPV6, v0, group 10004
        8, 0, 1, 0, 0x86, 0xdd, 3, 0, // PACKET_HDR: ETH_P_IPV6, hook 3
        8, 0, 5, 0, 0, 0, 0, 1, // OUTDEV 1
        8, 0, 10, 0, b'f', b't', b'p', 0, // PREFIX "ftp"
        8, 0, 12, 0, 0, 0, 0, 41, // SEQ 41
        9, 0, 9, 0, 0x60, 0, 0, 0, 0, 0, 0, 0, // PAYLOAD 5 bytes + pad
        0, 0, 0, 0, // trailing bytes a later attribute would use (none: zero length)
    ];

    #[cfg(target_endian = "little")]
    #[test]
    fn packet_message_yields_payload_hook_device_and_seq() {
        let p = parse_packet_msg(&PACKET_BODY[..48]).unwrap();
        assert_eq!(p.group, 10004);
        assert_eq!(p.family, 10);
        assert_eq!((p.hw_protocol, p.hook), (0x86dd, 3));
        assert_eq!(p.payload, &[0x60, 0, 0, 0, 0]);
        assert_eq!((p.indev, p.outdev), (None, Some(1)));
        assert_eq!(p.seq, Some(41));
        assert_eq!(p.prefix, b"ftp");
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn a_zero_length_attribute_is_an_error_not_a_loop() {
        assert!(parse_packet_msg(&PACKET_BODY).is_err());
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn every_truncation_of_a_packet_message_is_an_error_or_a_shorter_packet() {
        for end in 0..48 {
            match parse_packet_msg(&PACKET_BODY[..end]) {
                Err(_) => {}
                Ok(p) => assert!(p.payload.len() <= 5, "cut at {end}"),
            }
        }
    }

    #[test]
    fn packet_message_without_header_is_refused() {
        let body = [2, 0, 0, 1, 8, 0, 9, 0, 0x45, 0, 0, 20];
        assert_eq!(parse_packet_msg(&body), Err(PacketError::NoPacketHeader));
    }

    #[test]
    fn sequence_jumps_count_lost_copies() {
        let mut gaps = SeqGaps::default();
        for seq in [7, 8, 9] {
            gaps.see(seq);
        }
        assert_eq!(gaps.lost, 0);
        gaps.see(12);
        assert_eq!(gaps.lost, 2, "10 and 11 never arrived");

        let mut gaps = SeqGaps::default();
        gaps.see(u32::MAX - 1);
        gaps.see(u32::MAX);
        gaps.see(1);
        assert_eq!(
            gaps.lost, 1,
            "0 never arrived: the wrap is a step like any other"
        );
        gaps.see(5);
        assert_eq!(gaps.lost, 4);
        gaps.see(3);
        gaps.see(4);
        assert_eq!(
            gaps.lost, 4,
            "a number behind the expected one adds nothing"
        );
    }
}
