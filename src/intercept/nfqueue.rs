//! Linux NFQUEUE intercept over raw netlink (`NETLINK_NETFILTER`, subsystem
//! `NFNL_SUBSYS_QUEUE`), without libnetfilter_queue.
//!
//! Owns one queue: binding it, reading `NFQNL_MSG_PACKET` messages and sending
//! `NFQNL_MSG_VERDICT` with `NF_ACCEPT`. Parses nothing past what the kernel hands over
//! (packet id, payload, skb info flags); the packet bytes go to the core untouched. A verdict
//! never carries a payload attribute, so the kernel reinjects the packet exactly as it was
//! queued (DESIGN.md invariant 1). Must not touch the firewall rules that queue the packets:
//! the admin's `ip6tables/iptables -j NFQUEUE --queue-num N` (or nft `queue`) rule is theirs.
//!
//! Layouts and constants follow the uapi header `linux/netfilter/nfnetlink_queue.h`; the
//! verdict code `NF_ACCEPT` is from `linux/netfilter.h`.

use std::io;
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};

use super::{Intercept, Packet};
use crate::netlink::{
    attrs, nfnl_type, split_nfgenmsg, Datagram, MsgBuilder, ParseError, Socket, NFNL_SUBSYS_QUEUE,
    NLM_F_ACK, NLM_F_REQUEST,
};
use ftp6proxy_core::engine::Checksum;

// enum nfqnl_msg_types
/// `NFQNL_MSG_PACKET`: kernel → us, one queued packet.
pub const NFQNL_MSG_PACKET: u8 = 0;
/// `NFQNL_MSG_VERDICT`: us → kernel, what to do with a packet id.
pub const NFQNL_MSG_VERDICT: u8 = 1;
/// `NFQNL_MSG_VERDICT_BATCH`: us → kernel, one verdict for every queued packet up to an
/// id (linux/netfilter/nfnetlink_queue.h `enum nfqnl_msg_types`).
pub const NFQNL_MSG_VERDICT_BATCH: u8 = 3;
/// `NFQNL_MSG_CONFIG`: us → kernel, bind and configure a queue.
pub const NFQNL_MSG_CONFIG: u8 = 2;

// enum nfqnl_attr_type
/// `NFQA_PACKET_HDR`: struct nfqnl_msg_packet_hdr { __be32 packet_id; __be16 hw_protocol;
/// u8 hook; } (packed, 7 bytes).
pub const NFQA_PACKET_HDR: u16 = 1;
/// `NFQA_VERDICT_HDR`: struct nfqnl_msg_verdict_hdr { __be32 verdict; __be32 id; }.
pub const NFQA_VERDICT_HDR: u16 = 2;
/// `NFQA_PAYLOAD`: the packet from the IP header on (up to the copy range).
pub const NFQA_PAYLOAD: u16 = 10;
/// `NFQA_CAP_LEN`: the packet's real length when the payload was cut to the copy range.
pub const NFQA_CAP_LEN: u16 = 13;
/// `NFQA_SKB_INFO`: `NFQA_SKB_*` flags (__be32).
pub const NFQA_SKB_INFO: u16 = 14;

/// `NFQA_SKB_CSUMNOTREADY`: the checksum is not filled in yet (the packet was generated
/// locally and checksum offload will compute it), so the TCP checksum in the payload is not
/// meaningful.
pub const NFQA_SKB_CSUMNOTREADY: u32 = 1 << 0;

// enum nfqnl_msg_config_cmds
/// `NFQNL_CFG_CMD_BIND`.
pub const NFQNL_CFG_CMD_BIND: u8 = 1;
/// `NFQNL_CFG_CMD_UNBIND`.
pub const NFQNL_CFG_CMD_UNBIND: u8 = 2;
/// `NFQNL_CFG_CMD_PF_BIND`: obsolete since Linux 3.8 (accepted and ignored), needed before.
pub const NFQNL_CFG_CMD_PF_BIND: u8 = 3;
/// `NFQNL_CFG_CMD_PF_UNBIND`: as above.
pub const NFQNL_CFG_CMD_PF_UNBIND: u8 = 4;

// enum nfqnl_attr_config
/// `NFQA_CFG_CMD`: struct nfqnl_msg_config_cmd { u8 command; u8 _pad; __be16 pf; }.
pub const NFQA_CFG_CMD: u16 = 1;
/// `NFQA_CFG_PARAMS`: struct nfqnl_msg_config_params { __be32 copy_range; u8 copy_mode; }
/// (packed, 5 bytes).
pub const NFQA_CFG_PARAMS: u16 = 2;
/// `NFQA_CFG_QUEUE_MAXLEN` (__be32): how many packets the queue holds before fail-open
/// passes the rest unseen (net/netfilter/nfnetlink_queue.c `nfqnl_recv_config`; the
/// kernel's default is 1024, `NFQNL_QMAX_DEFAULT`).
pub const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
/// `NFQA_CFG_MASK`: which bits of `NFQA_CFG_FLAGS` to change (__be32); the kernel refuses
/// flags without a mask.
pub const NFQA_CFG_MASK: u16 = 4;
/// `NFQA_CFG_FLAGS` (__be32).
pub const NFQA_CFG_FLAGS: u16 = 5;

/// `NFQNL_COPY_PACKET` (enum nfqnl_config_mode).
pub const NFQNL_COPY_PACKET: u8 = 2;
/// `NFQA_CFG_F_FAIL_OPEN`: when the queue or our socket buffer is full, the kernel accepts
/// the packet instead of dropping it. A control packet we never saw may cost one data
/// connection; a dropped one would stall the FTP session.
pub const NFQA_CFG_F_FAIL_OPEN: u32 = 1 << 0;
/// `NFQA_CFG_F_GSO`: queue GSO packets whole instead of having the kernel segment them
/// first. Such packets may carry `NFQA_SKB_CSUMNOTREADY`.
pub const NFQA_CFG_F_GSO: u32 = 1 << 2;

/// `NF_ACCEPT` (linux/netfilter.h).
pub const NF_ACCEPT: u32 = 1;

/// The copy range we ask for: the whole packet up to 64 KiB.
pub const COPY_RANGE: u32 = 0xffff;
/// The queue's length, set on purpose so high that our socket's buffer fills first.
///
/// Where fail-open passes a packet unseen decides whether anyone can count it
/// (net/netfilter/nfnetlink_queue.c `__nfqnl_enqueue_packet`, read for 6.x): with
/// `NFQA_CFG_F_FAIL_OPEN` a packet that finds the queue full is accepted before it gets an
/// id, and counted nowhere (`queue_dropped` counts only without fail-open); a packet that
/// finds our socket's buffer full has already been given the next id
/// (`entry->id = ++queue->id_sequence` comes before `nfnetlink_unicast`), so the ids we
/// read skip it — an exact count ([`NfQueue::passed_unseen`]) — and the socket reports
/// ENOBUFS once per congestion (net/netlink/af_netlink.c `netlink_attachskb`,
/// `netlink_overrun`). The buffer ([`RCVBUF_BYTES`], doubled by the kernel to 16 MiB)
/// holds at most about 29,000 messages (each at least a 512-byte allocation), and the
/// worker holds at most 1,024 packets read from it, so a queue of 65,536 is never full.
pub const QUEUE_MAXLEN: u32 = 65_536;
/// Receive buffer for the queue socket: bursts of control packets must not overflow it.
pub const RCVBUF_BYTES: usize = 8 << 20;

/// How many ids the kernel gave packets that we never read between `last` and `id`
/// (ids count up by one per queued packet and wrap at 2^32); an id at or before `last`
/// (the queue was bound again) skips nothing.
pub fn ids_skipped(last: u32, id: u32) -> u32 {
    let ahead = id.wrapping_sub(last);
    if ahead == 0 || ahead > 1 << 31 {
        0
    } else {
        ahead - 1
    }
}
/// One datagram holds one packet of at most `COPY_RANGE` bytes plus a few hundred bytes of
/// headers and attributes.
const RECV_BUF_BYTES: usize = 0x1_0000 + 4096;

/// Datagrams (packets: the kernel sends each in its own) read with one system call when
/// that many wait. Under load the worker finds about a dozen per turn (measured: perf
/// stat, 32 sessions), and reading them one recv(2) each was its largest count of system
/// calls. The buffers cost address space, not memory, until a packet that long arrives.
const RECV_MANY: usize = 16;

/// One queued packet, as read from an `NFQNL_MSG_PACKET` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketMsg<'a> {
    /// The queue the packet came from (`nfgenmsg.res_id`).
    pub queue: u16,
    /// `packet_id` from `NFQA_PACKET_HDR`: what the verdict must name.
    pub id: u32,
    /// The layer-3 packet (`NFQA_PAYLOAD`); empty if the kernel sent none.
    pub payload: &'a [u8],
    /// `NFQA_SKB_INFO` flags, 0 when absent.
    pub skb_info: u32,
    /// `NFQA_CAP_LEN`: the packet's real length if `payload` was cut short.
    pub cap_len: Option<u32>,
}

impl PacketMsg<'_> {
    /// Whether the transport checksum in the payload is meaningful.
    pub fn checksum_ready(&self) -> bool {
        self.skb_info & NFQA_SKB_CSUMNOTREADY == 0
    }
}

/// Why an `NFQNL_MSG_PACKET` could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Occurs when the message or one of its attributes is cut short or inconsistent.
    #[error("malformed nfqueue message: {0}")]
    Malformed(#[from] ParseError),
    /// Occurs when the message has no (or a short) `NFQA_PACKET_HDR`, so it names no packet.
    #[error("nfqueue message without packet header")]
    NoPacketHeader,
}

/// Parses the body of an `NFQNL_MSG_PACKET` message (nfgenmsg + attributes).
///
/// # Errors
/// [`PacketError`] when the body is truncated or has no packet header.
pub fn parse_packet_msg(payload: &[u8]) -> Result<PacketMsg<'_>, PacketError> {
    let (hdr, body) = split_nfgenmsg(payload)?;
    let mut id = None;
    let mut packet = PacketMsg {
        queue: hdr.res_id,
        id: 0,
        payload: &[],
        skb_info: 0,
        cap_len: None,
    };
    for attr in attrs(body) {
        let attr = attr?;
        match attr.ty {
            NFQA_PACKET_HDR => id = attr.be_u32(),
            NFQA_PAYLOAD => packet.payload = attr.data,
            NFQA_SKB_INFO => packet.skb_info = attr.be_u32().unwrap_or(0),
            NFQA_CAP_LEN => packet.cap_len = attr.be_u32(),
            _ => {}
        }
    }
    packet.id = id.ok_or(PacketError::NoPacketHeader)?;
    Ok(packet)
}

/// Builds the verdict `NF_ACCEPT` for packet `id` on `queue`, without a payload attribute
/// and without `NLM_F_ACK` (a verdict is fire-and-forget; errors still come back).
///
/// As libnetfilter_queue's `nfq_set_verdict(qh, id, NF_ACCEPT, 0, NULL)` would send it.
pub fn build_verdict(queue: u16, id: u32, seq: u32) -> Vec<u8> {
    build_accept(NFQNL_MSG_VERDICT, queue, id, seq)
}

/// An `NF_ACCEPT` verdict message of type `kind` (one packet, or every packet up to `id`).
fn build_accept(kind: u8, queue: u16, id: u32, seq: u32) -> Vec<u8> {
    let mut hdr = [0u8; 8];
    hdr[..4].copy_from_slice(&NF_ACCEPT.to_be_bytes());
    hdr[4..].copy_from_slice(&id.to_be_bytes());
    let mut b = MsgBuilder::new();
    b.begin(
        nfnl_type(NFNL_SUBSYS_QUEUE, kind),
        NLM_F_REQUEST,
        seq,
        libc_af_unspec(),
        queue,
    )
    .attr(NFQA_VERDICT_HDR, &hdr)
    .end();
    b.finish()
}

/// Builds the batch verdict `NF_ACCEPT` for every packet still queued on `queue` with an id
/// up to `id` (net/netfilter/nfnetlink_queue.c `nfqnl_recv_verdict_batch` walks the queue
/// in order and stops at the first id after it). A new reader sends it once, for the
/// packets its dead predecessor held.
pub fn build_verdict_batch(queue: u16, id: u32, seq: u32) -> Vec<u8> {
    build_accept(NFQNL_MSG_VERDICT_BATCH, queue, id, seq)
}

/// An `NFQNL_MSG_CONFIG` message with ACK for `queue`, its attributes added by `attrs`.
fn build_config(queue: u16, seq: u32, attrs: impl FnOnce(&mut MsgBuilder)) -> Vec<u8> {
    let mut b = MsgBuilder::new();
    b.begin(
        nfnl_type(NFNL_SUBSYS_QUEUE, NFQNL_MSG_CONFIG),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        libc_af_unspec(),
        queue,
    );
    attrs(&mut b);
    b.end();
    b.finish()
}

/// Builds an `NFQA_CFG_CMD` config message (`command` for protocol family `pf`) with ACK.
pub fn build_config_cmd(queue: u16, command: u8, pf: u16, seq: u32) -> Vec<u8> {
    let mut cmd = [0u8; 4];
    cmd[0] = command;
    cmd[2..].copy_from_slice(&pf.to_be_bytes());
    build_config(queue, seq, |b| {
        b.attr(NFQA_CFG_CMD, &cmd);
    })
}

/// Builds the config message that sets copy mode `NFQNL_COPY_PACKET` with `range` bytes and
/// the queue `flags` (all bits in `flags` are also the mask).
pub fn build_config_params(queue: u16, range: u32, flags: u32, seq: u32) -> Vec<u8> {
    let mut params = [0u8; 5];
    params[..4].copy_from_slice(&range.to_be_bytes());
    params[4] = NFQNL_COPY_PACKET;
    build_config(queue, seq, |b| {
        b.attr(NFQA_CFG_PARAMS, &params)
            .attr_be_u32(NFQA_CFG_FLAGS, flags)
            .attr_be_u32(NFQA_CFG_MASK, flags);
    })
}

/// Builds the config message that sets the queue's length to `maxlen` packets.
pub fn build_config_maxlen(queue: u16, maxlen: u32, seq: u32) -> Vec<u8> {
    build_config(queue, seq, |b| {
        b.attr_be_u32(NFQA_CFG_QUEUE_MAXLEN, maxlen);
    })
}

/// `AF_UNSPEC` as the nfgenmsg family byte (0; queue messages do not depend on it).
const fn libc_af_unspec() -> u8 {
    0
}

/// What [`NfQueue::recv`] keeps about the current packet.
#[derive(Debug, Clone)]
struct Current {
    id: u32,
    payload: Range<usize>,
    checksum_ready: bool,
}

/// An NFQUEUE queue bound on a non-blocking netlink socket.
///
/// The admin's rule sends FTP control packets here, e.g.
/// `ip6tables -A FORWARD -p tcp --dport 21 -j NFQUEUE --queue-num 10004` (and the same for
/// `--sport 21` and for iptables).
#[derive(Debug)]
pub struct NfQueue {
    sock: Socket,
    queue: u16,
    datagram: Datagram,
    current: Option<Current>,
    /// A dead reader may have left packets held: release them before the next verdict.
    adopting: bool,
    /// The id of the last packet read.
    last_id: Option<u32>,
    /// Packets the kernel queued for us but passed without a verdict because our socket's
    /// buffer was full (fail-open): the ids we never read.
    passed_unseen: u64,
}

impl NfQueue {
    /// Binds queue `queue_num`, asks for whole packets (copy range 0xffff), sets fail-open
    /// (and GSO when the kernel knows it), enlarges the receive buffer and makes the socket
    /// non-blocking.
    ///
    /// # Errors
    /// With a message naming the likely cause: missing CAP_NET_ADMIN, another process
    /// holding the queue, or a kernel without nfnetlink_queue.
    pub fn open(queue_num: u16) -> io::Result<NfQueue> {
        Self::open_with(queue_num, QUEUE_MAXLEN, RCVBUF_BYTES)
    }

    /// [`open`](Self::open) with a queue of `maxlen` packets and a receive buffer of
    /// `rcvbuf` bytes (tests use tiny ones).
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_with(queue_num: u16, maxlen: u32, rcvbuf: usize) -> io::Result<NfQueue> {
        let mut sock = Socket::open().map_err(|e| {
            annotate(
                e,
                "open NETLINK_NETFILTER socket (kernel without CONFIG_NETFILTER_NETLINK?)",
            )
        })?;
        // Kernels before 3.8 need the protocol family bound to nfnetlink_queue once
        // (unbind first in case another tool left a different handler); newer kernels
        // accept and ignore both commands, so their answers do not matter.
        for pf in [libc::AF_INET, libc::AF_INET6] {
            let pf = u16::try_from(pf).expect("address family numbers are small");
            for cmd in [NFQNL_CFG_CMD_PF_UNBIND, NFQNL_CFG_CMD_PF_BIND] {
                let seq = sock.next_seq();
                if let Err(e) = sock.request(&build_config_cmd(queue_num, cmd, pf, seq), seq) {
                    log::debug!("nfqueue pf command {cmd} for family {pf}: {e} (ignored)");
                }
            }
        }
        let seq = sock.next_seq();
        if let Err(e) = sock.request(
            &build_config_cmd(queue_num, NFQNL_CFG_CMD_BIND, 0, seq),
            seq,
        ) {
            return Err(bind_error(&mut sock, queue_num, e));
        }
        let seq = sock.next_seq();
        let flags = NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO;
        if let Err(e) = sock.request(&build_config_params(queue_num, COPY_RANGE, flags, seq), seq) {
            // Kernels before 3.10 know fail-open but not GSO, and refuse unknown flags.
            log::debug!(
                "nfqueue {queue_num}: flags fail-open+gso refused ({e}), retrying without gso"
            );
            let seq = sock.next_seq();
            sock.request(
                &build_config_params(queue_num, COPY_RANGE, NFQA_CFG_F_FAIL_OPEN, seq),
                seq,
            )
            .map_err(|e| {
                annotate(
                    e,
                    &format!("nfqueue {queue_num}: set copy mode and fail-open"),
                )
            })?;
        }
        let seq = sock.next_seq();
        if let Err(e) = sock.request(&build_config_maxlen(queue_num, maxlen, seq), seq) {
            log::warn!("nfqueue {queue_num}: cannot set the queue length to {maxlen}: {e}");
        }
        if let Err(e) = sock.set_rcvbuf(rcvbuf) {
            log::warn!("nfqueue {queue_num}: cannot enlarge receive buffer: {e}");
        }
        sock.set_nonblocking()
            .map_err(|e| annotate(e, "make nfqueue socket non-blocking"))?;
        Ok(NfQueue {
            sock,
            queue: queue_num,
            // The socket overflowed: fail-open made the kernel accept what it could not
            // queue. Nothing is lost on our side, so it is counted and read on.
            datagram: Datagram::with_room_for(
                format!("nfqueue {queue_num}"),
                RECV_MANY,
                RECV_BUF_BYTES,
                "packets passed unseen",
                "kernel refused a verdict",
            ),
            current: None,
            adopting: false,
            last_id: None,
            passed_unseen: 0,
        })
    }

    /// The queue number.
    pub fn queue_num(&self) -> u16 {
        self.queue
    }

    /// Whether the kernel had the checksum of the current packet ready. `false` means
    /// `NFQA_SKB_CSUMNOTREADY`: a locally generated packet whose checksum offload has not
    /// run yet, so its TCP checksum must not be checked. `true` when there is no current
    /// packet.
    pub fn current_checksum_ready(&self) -> bool {
        self.current.as_ref().is_none_or(|c| c.checksum_ready)
    }

    /// How often the socket overflowed (ENOBUFS): each time, queued packets were accepted
    /// without us seeing them (fail-open).
    pub fn overflows(&self) -> u64 {
        self.datagram.overflows()
    }

    /// Packets passed without a verdict because the socket's buffer was full (fail-open),
    /// counted exactly from the ids missing from what was read (see [`QUEUE_MAXLEN`]).
    pub fn passed_unseen(&self) -> u64 {
        self.passed_unseen
    }

    /// Counts the ids skipped before packet `id`, and warns (at 1, 10, 100...).
    fn note_id(&mut self, id: u32) {
        if let Some(last) = self.last_id {
            let skipped = u64::from(ids_skipped(last, id));
            let before = self.passed_unseen;
            self.passed_unseen += skipped;
            if crate::log_limit::passed_power_of_ten(before, self.passed_unseen) {
                log::warn!(
                    "nfqueue {}: {} packets passed unseen so far (our socket's buffer was \
                     full and fail-open let them through without a verdict); the engine \
                     recovers from the gaps, but holes announced in them are missed: find \
                     what floods the queue",
                    self.queue,
                    self.passed_unseen
                );
            }
        }
        self.last_id = Some(id);
    }

    /// How many messages could not be parsed and were skipped.
    pub fn malformed(&self) -> u64 {
        self.datagram.malformed()
    }

    fn verdict(&mut self, id: u32) -> io::Result<()> {
        let seq = self.sock.next_seq();
        self.sock.send(&build_verdict(self.queue, id, seq))
    }

    /// Finds the next packet message in the current datagram; returns its id, payload
    /// range (within `buf`) and checksum flag.
    fn next_in_datagram(&mut self) -> Option<Current> {
        let packet = nfnl_type(NFNL_SUBSYS_QUEUE, NFQNL_MSG_PACKET);
        while let Some(range) = self.datagram.next_of(packet) {
            match parse_packet_msg(self.datagram.bytes(range)) {
                Ok(p) => {
                    let start = self.datagram.offset_of(p.payload);
                    return Some(Current {
                        id: p.id,
                        payload: start..start + p.payload.len(),
                        checksum_ready: p.checksum_ready(),
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

impl Intercept for NfQueue {
    type Held = u32;

    fn recv(&mut self) -> io::Result<Option<Packet<'_>>> {
        self.current = None;
        loop {
            if let Some(current) = self.next_in_datagram() {
                if std::mem::take(&mut self.adopting) && current.id > 1 {
                    // Every packet queued before this one was handed to the dead reader.
                    let seq = self.sock.next_seq();
                    self.sock
                        .send(&build_verdict_batch(self.queue, current.id - 1, seq))?;
                }
                self.note_id(current.id);
                let range = current.payload.clone();
                let checksum = if current.checksum_ready {
                    Checksum::Verify
                } else {
                    Checksum::NotReady
                };
                self.current = Some(current);
                return Ok(Some(Packet {
                    bytes: self.datagram.bytes(range),
                    checksum,
                }));
            }
            if !self
                .datagram
                .refill_many(|bufs, lens| self.sock.recv_many(bufs, lens))?
            {
                return Ok(None);
            }
        }
    }

    fn adopt(&mut self) {
        self.adopting = true;
    }

    fn overflows(&self) -> u64 {
        self.datagram.overflows()
    }

    fn passed_unseen(&self) -> u64 {
        self.passed_unseen
    }

    fn pass_current(&mut self) -> io::Result<()> {
        match self.current.take() {
            Some(current) => self.verdict(current.id),
            None => Ok(()),
        }
    }

    /// # Panics
    /// If there is no current packet: the loop holds only a packet it just received.
    fn hold_current(&mut self) -> u32 {
        self.current
            .take()
            .expect("hold_current follows a recv that returned a packet")
            .id
    }

    fn pass_held(&mut self, held: u32) -> io::Result<()> {
        self.verdict(held)
    }

    /// One datagram carries all the verdicts: the kernel reads every message in it
    /// (af_netlink.c `netlink_rcv_skb` loops over the messages of one skb), so many
    /// packets released at once cost one `sendto(2)`. Ids need not be contiguous (a
    /// packet waiting for its hole is skipped), which rules out NFQNL_MSG_VERDICT_BATCH.
    fn pass_all(&mut self, held: Vec<u32>) -> io::Result<()> {
        if held.len() < 2 {
            return held.into_iter().try_for_each(|id| self.verdict(id));
        }
        // Far below the 32 KiB netlink default: 28 bytes a verdict, sent in chunks.
        for chunk in held.chunks(512) {
            let mut bytes = Vec::with_capacity(chunk.len() * 28);
            for &id in chunk {
                let seq = self.sock.next_seq();
                bytes.extend_from_slice(&build_verdict(self.queue, id, seq));
            }
            self.sock.send(&bytes)?;
        }
        Ok(())
    }
}

impl AsRawFd for NfQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

/// Explains a failed `NFQNL_CFG_CMD_BIND`.
///
/// The kernel answers EPERM both when we lack CAP_NET_ADMIN (nfnetlink_rcv) and when another
/// socket owns the queue (nfqnl_recv_config). A `NFT_MSG_GETGEN` request tells them apart: it
/// passes the same capability check and touches no queue.
fn bind_error(sock: &mut Socket, queue: u16, err: io::Error) -> io::Error {
    match err.raw_os_error() {
        Some(libc::EPERM) => {
            let capable = sock.may_configure();
            if capable {
                annotate(
                    err,
                    &format!("bind nfqueue {queue}: another process holds queue {queue}"),
                )
            } else {
                annotate(err, &format!("bind nfqueue {queue}: needs CAP_NET_ADMIN"))
            }
        }
        Some(libc::EBUSY) => annotate(
            err,
            &format!("bind nfqueue {queue}: this socket already holds queue {queue}"),
        ),
        Some(libc::ENOENT | libc::EOPNOTSUPP | libc::EPROTONOSUPPORT) => annotate(
            err,
            &format!("bind nfqueue {queue}: kernel without nfnetlink_queue (CONFIG_NETFILTER_NETLINK_QUEUE)"),
        ),
        _ => annotate(err, &format!("bind nfqueue {queue}")),
    }
}

fn annotate(err: io::Error, context: &str) -> io::Error {
    io::Error::new(err.kind(), format!("{context}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_ids_are_the_gap_between_reads() {
        assert_eq!(ids_skipped(7, 8), 0, "the next id");
        assert_eq!(ids_skipped(7, 12), 4);
        assert_eq!(ids_skipped(u32::MAX, 0), 0, "ids wrap");
        assert_eq!(ids_skipped(u32::MAX - 1, 2), 3);
        assert_eq!(ids_skipped(7, 7), 0, "the same id again skips nothing");
        assert_eq!(ids_skipped(700, 5), 0, "a queue bound anew starts again");
    }

    /// `NFQNL_MSG_VERDICT` for packet id 0x01020304 on queue 10004, seq 9, as
    /// libnetfilter_queue lays it out: 32-byte message, nfgenmsg {AF_UNSPEC, 0, be16 queue},
    /// one 12-byte NFQA_VERDICT_HDR {be32 NF_ACCEPT, be32 id}. Header fields in host order
    /// (little-endian on the machines this runs on).
    #[cfg(target_endian = "little")]
    const VERDICT_10004_ID_01020304: [u8; 32] = [
        32, 0, 0, 0, // nlmsg_len
        0x01, 0x03, // nlmsg_type = NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_VERDICT
        0x01, 0x00, // NLM_F_REQUEST
        9, 0, 0, 0, // seq
        0, 0, 0, 0, // pid
        0, 0, 0x27, 0x14, // nfgenmsg: AF_UNSPEC, NFNETLINK_V0, res_id 10004
        12, 0, 2, 0, // nlattr len 12, NFQA_VERDICT_HDR
        0, 0, 0, 1, // NF_ACCEPT
        1, 2, 3, 4, // packet id
    ];

    #[cfg(target_endian = "little")]
    #[test]
    fn verdict_is_accept_with_id_and_no_payload() {
        assert_eq!(
            build_verdict(10004, 0x0102_0304, 9),
            VERDICT_10004_ID_01020304
        );
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn bind_command_layout() {
        let bytes = build_config_cmd(7, NFQNL_CFG_CMD_BIND, 0, 1);
        assert_eq!(
            bytes,
            [
                28, 0, 0, 0, 0x02, 0x03, 0x05, 0x00, 1, 0, 0, 0, 0, 0, 0, 0, // nlmsghdr
                0, 0, 0, 7, // nfgenmsg, queue 7
                8, 0, 1, 0, // NFQA_CFG_CMD
                1, 0, 0, 0, // BIND, pad, pf 0
            ]
        );
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn params_carry_copy_range_mode_flags_and_mask() {
        let bytes = build_config_params(7, 0xffff, NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO, 1);
        assert_eq!(
            &bytes[20..],
            &[
                9, 0, 2, 0, 0, 0, 0xff, 0xff, 2, 0, 0, 0, // NFQA_CFG_PARAMS, padded
                8, 0, 5, 0, 0, 0, 0, 5, // NFQA_CFG_FLAGS
                8, 0, 4, 0, 0, 0, 0, 5, // NFQA_CFG_MASK
            ]
        );
        assert_eq!(bytes.len(), 48);
    }

    /// Body of an `NFQNL_MSG_PACKET` (after nlmsghdr) shaped like what Linux 6.18 sends for
    /// a locally generated SYN: nfgenmsg, NFQA_PACKET_HDR, NFQA_SKB_INFO with
    /// CSUMNOTREADY, NFQA_PAYLOAD with a 5-byte stand-in payload.
    #[cfg(target_endian = "little")]
    const PACKET_BODY: [u8; 44] = [
        10, 0, 0x27, 0x14, // nfgenmsg: AF_INET6, v0, queue 10004
        11, 0, 1, 0, 0, 0, 0, 42, 0x86, 0xdd, 3, 0, // PACKET_HDR id 42, ETH_P_IPV6, hook 3
        8, 0, 14, 0, 0, 0, 0, 1, // SKB_INFO = CSUMNOTREADY
        8, 0, 13, 0, 0, 0, 0, 60, // CAP_LEN 60
        9, 0, 10, 0, 0x60, 0, 0, 0, 0, 0, 0, 0, // PAYLOAD 5 bytes + pad
    ];

    #[cfg(target_endian = "little")]
    #[test]
    fn packet_message_yields_id_payload_and_flags() {
        let p = parse_packet_msg(&PACKET_BODY).unwrap();
        assert_eq!(p.queue, 10004);
        assert_eq!(p.id, 42);
        assert_eq!(p.payload, &[0x60, 0, 0, 0, 0]);
        assert_eq!(p.skb_info, NFQA_SKB_CSUMNOTREADY);
        assert!(!p.checksum_ready());
        assert_eq!(p.cap_len, Some(60));
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn every_truncation_of_a_packet_message_is_an_error_or_shorter_packet() {
        for end in 0..PACKET_BODY.len() {
            match parse_packet_msg(&PACKET_BODY[..end]) {
                Err(_) => {}
                Ok(p) => assert!(p.payload.len() <= 5, "cut at {end}"),
            }
        }
    }

    #[test]
    fn packet_message_without_header_is_refused() {
        let body = [2, 0, 0, 1, 8, 0, 10, 0, 0x45, 0, 0, 20];
        assert_eq!(parse_packet_msg(&body), Err(PacketError::NoPacketHeader));
    }

    #[test]
    fn short_packet_header_is_refused() {
        let body = [2, 0, 0, 1, 6, 0, 1, 0, 0, 0, 0, 0];
        assert_eq!(parse_packet_msg(&body), Err(PacketError::NoPacketHeader));
    }

    #[test]
    fn missing_nfgenmsg_is_malformed() {
        assert!(matches!(
            parse_packet_msg(&[2, 0]),
            Err(PacketError::Malformed(ParseError::Truncated { .. }))
        ));
    }
}
