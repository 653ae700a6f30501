//! Every message the daemon's three processes exchange, in one place: the byte formats,
//! their sizes, and their decoding (models: quinn-proto's `shared.rs`, OpenSSH's
//! `monitor_wrap.c`/`monitor.c`, where both ends of each message sit side by side).
//!
//! Owns the formats only. Sockets are `link`'s; what a process does with a message is its
//! own module's (`worker`, `parser`, `monitor`); whether a well-formed request may touch
//! the firewall is the monitor's [`Validator`](super::privsep::Validator). A datagram that
//! does not decode is [`Malformed`] here; a request that decodes but is refused is the
//! validator's business (rustls keeps `InvalidMessage` and `PeerMisbehaved` apart for the
//! same reason: one is noise, the other is a peer breaking the rules).
//!
//! The links, each a `SOCK_SEQPACKET` socketpair (one datagram, one message), plus the log
//! link (`SOCK_DGRAM`):
//! ```text
//!   worker  → parser   ToParser { id, checksum, bytes }, one or more  ≤ MAX_PACKET_MESSAGE
//!   parser  → worker   ToWorker::Pass { ids }                         ≤ MAX_PASS_MESSAGE
//!   parser  → monitor  ToMonitor::Request (48 bytes) | Closed (1)
//!   monitor → parser   FromMonitor::Response (6) | Status (1) | Shutdown (1) | Used (49)
//!   monitor → worker   NEW_PARSER (1 byte, with the new parser link as SCM_RIGHTS)
//!   worker, parser → monitor (log link)  [level][process][text ≤ MAX_FORWARDED]
//! ```
//! Every integer is big-endian. Sizes are explicit on both ends: a receiver reads into a
//! buffer of the largest size its link carries, and anything of another size is malformed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ftp6proxy_core::engine::Checksum;
use ftp6proxy_core::{FwAction, HoleSpec, Mode, Slot};
use log::Level;

/// A datagram that is not a message of its link (wrong size, unknown code, bad field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed message")]
pub struct Malformed;

// ---------------------------------------------------------------------------------------
// Worker ↔ parser: packets in, permission to pass them out. The worker never looks
// inside either: it copies bytes one way and releases packets the other.

/// Largest packet message: room for a packet of 64 KiB and its record (NFQUEUE copies at
/// most 0xffff bytes; divert hands over at most an IP packet). The worker fills a datagram
/// with packets up to this size.
pub const MAX_PACKET_MESSAGE: usize = 65_536 + 16;

/// Packets released by one `Pass` at most (the parser sends more passes if it has more).
pub const MAX_PASS_IDS: usize = 512;
/// Largest pass message.
pub const MAX_PASS_MESSAGE: usize = 1 + 8 * MAX_PASS_IDS;

const PACKET: u8 = 1;
const PASS: u8 = 2;

/// Worker → parser: read this packet. One datagram carries one or more of them, each a
/// record `[id u64][checksum u8][length u32][bytes]` after the datagram's `PACKET` code:
/// the worker sends what it read in one turn together, so under load the link costs one
/// send and one receive per turn instead of per packet (measured: perf stat, 32 sessions,
/// about 14 packets a turn).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToParser<'a> {
    /// The worker's handle for the packet.
    pub id: u64,
    /// Whether the TCP checksum can be verified.
    pub checksum: Checksum,
    /// The packet, from the IP header.
    pub bytes: &'a [u8],
}

/// Bytes of a packet record before the packet: id, checksum flag, length.
const RECORD_HEADER: usize = 8 + 1 + 4;

impl<'a> ToParser<'a> {
    /// The datagram of this one packet, written into `out` (cleared first).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        self.append_to(out);
    }

    /// Appends this packet to the datagram being built in `out` (starting it when `out`
    /// is empty). The caller keeps the datagram within [`MAX_PACKET_MESSAGE`]: see
    /// [`ToParser::encoded_len`].
    ///
    /// # Panics
    /// If the packet is longer than 4 GiB (no intercept hands over more than 64 KiB).
    pub fn append_to(&self, out: &mut Vec<u8>) {
        if out.is_empty() {
            out.push(PACKET);
        }
        out.extend_from_slice(&self.id.to_be_bytes());
        out.push(u8::from(self.checksum == Checksum::Verify));
        let len = u32::try_from(self.bytes.len()).expect("a packet is shorter than 4 GiB");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(self.bytes);
    }

    /// Bytes this packet adds to a datagram.
    pub fn encoded_len(&self) -> usize {
        RECORD_HEADER + self.bytes.len()
    }

    /// The packets of a datagram, in order. The whole datagram is checked first, so a
    /// malformed one yields no packet at all.
    ///
    /// # Errors
    /// [`Malformed`]: no `PACKET` code, no record, a length past the end, a checksum flag
    /// other than 0 or 1, or bytes after the last record.
    pub fn records(bytes: &'a [u8]) -> Result<Records<'a>, Malformed> {
        let Some((&PACKET, mut rest)) = bytes.split_first() else {
            return Err(Malformed);
        };
        let records = Records { rest };
        if rest.is_empty() {
            return Err(Malformed);
        }
        while !rest.is_empty() {
            let (_, after) = split_record(rest)?;
            rest = after;
        }
        Ok(records)
    }
}

/// One record off the front of `bytes`, and what follows it.
fn split_record(bytes: &[u8]) -> Result<(ToParser<'_>, &[u8]), Malformed> {
    let header = bytes.get(..RECORD_HEADER).ok_or(Malformed)?;
    let id = u64::from_be_bytes(header[..8].try_into().map_err(|_| Malformed)?);
    let checksum = match header[8] {
        1 => Checksum::Verify,
        0 => Checksum::NotReady,
        _ => return Err(Malformed),
    };
    let len = u32::from_be_bytes(header[9..].try_into().map_err(|_| Malformed)?);
    let len = usize::try_from(len).map_err(|_| Malformed)?;
    let rest = &bytes[RECORD_HEADER..];
    if len > rest.len() {
        return Err(Malformed);
    }
    let (packet, rest) = rest.split_at(len);
    Ok((
        ToParser {
            id,
            checksum,
            bytes: packet,
        },
        rest,
    ))
}

/// The packets of a checked datagram ([`ToParser::records`]).
#[derive(Debug, Clone)]
pub struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Records<'a> {
    type Item = ToParser<'a>;

    fn next(&mut self) -> Option<ToParser<'a>> {
        // Checked whole by `records`: a record that does not split cannot occur.
        let (packet, rest) = split_record(self.rest).ok()?;
        self.rest = rest;
        Some(packet)
    }
}

/// Parser → worker: these packets may go on (read, and their holes confirmed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToWorker {
    /// The worker's handles, at most [`MAX_PASS_IDS`].
    pub ids: Vec<u64>,
}

impl ToWorker {
    /// The datagrams for `ids`, [`MAX_PASS_IDS`] to a datagram.
    pub fn encode_all(ids: &[u64]) -> impl Iterator<Item = Vec<u8>> + '_ {
        ids.chunks(MAX_PASS_IDS).map(|chunk| {
            let mut out = Vec::with_capacity(1 + 8 * chunk.len());
            out.push(PASS);
            for id in chunk {
                out.extend_from_slice(&id.to_be_bytes());
            }
            out
        })
    }

    /// Parses a datagram; calls `release` for each id in it.
    ///
    /// # Errors
    /// [`Malformed`] (then nothing was released).
    pub fn decode_each(bytes: &[u8], mut release: impl FnMut(u64)) -> Result<(), Malformed> {
        let Some((&PASS, ids)) = bytes.split_first() else {
            return Err(Malformed);
        };
        if ids.is_empty() || ids.len() % 8 != 0 || ids.len() > 8 * MAX_PASS_IDS {
            return Err(Malformed);
        }
        for id in ids.chunks_exact(8) {
            release(u64::from_be_bytes(id.try_into().map_err(|_| Malformed)?));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Parser ↔ monitor: hole requests and their answers, and the monitor's orders.

/// Size of a request.
pub const REQUEST_LEN: usize = 48;
/// Largest message to the monitor.
pub const MAX_TO_MONITOR: usize = REQUEST_LEN;
/// Largest message from the monitor (`Used`: a tag and a request's layout).
pub const MAX_FROM_MONITOR: usize = 1 + REQUEST_LEN;

/// Byte offsets of a request:
/// ```text
///  0      1        2      3        4      6       8          12         28         44    48
/// +------+--------+------+--------+------+-------+----------+----------+----------+-----+
/// |  op  | family | mode | (zero) | slot | dport | ttl (ms) |  src[16] |  dst[16] |  id |
/// +------+--------+------+--------+------+-------+----------+----------+----------+-----+
/// ```
/// IPv4 addresses use the first 4 address bytes, the rest zero.
mod field {
    use std::ops::Range;
    pub const OP: usize = 0;
    pub const FAMILY: usize = 1;
    pub const MODE: usize = 2;
    pub const ZERO: usize = 3;
    pub const SLOT: Range<usize> = 4..6;
    pub const DPORT: Range<usize> = 6..8;
    pub const TTL: Range<usize> = 8..12;
    pub const SRC: Range<usize> = 12..28;
    pub const DST: Range<usize> = 28..44;
    pub const ID: Range<usize> = 44..48;
}

const OP_OPEN: u8 = 1;
const OP_REFRESH: u8 = 2;
const OP_CLOSE: u8 = 3;
const CLOSED: u8 = 0x80;

const RESPONSE: u8 = 1;
const STATUS: u8 = 2;
const SHUTDOWN: u8 = 3;
const USED: u8 = 4;

/// A request: apply `action`; `id` pairs it with its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Chosen by the parser, echoed in the response.
    pub id: u32,
    /// What to do.
    pub action: FwAction,
}

/// Parser → monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToMonitor {
    /// Apply an action.
    Request(Request),
    /// Shutdown is done: the hand-over is written; the parser exits.
    Closed,
}

/// Monitor → parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromMonitor {
    /// The answer to request `id`: whether the firewall now matches it.
    Response {
        /// The request's id.
        id: u32,
        /// Applied.
        ok: bool,
    },
    /// Log the engine's status line (SIGUSR1/SIGINFO).
    Status,
    /// Write the hand-over and exit (SIGTERM).
    Shutdown,
    /// The hole `spec` in `slot` was used up by its data connection (the firewall's rule
    /// consumed it): the slot is free.
    Used {
        /// The slot.
        slot: Slot,
        /// The hole it held.
        spec: HoleSpec,
    },
}

fn put_addr(out: &mut [u8], addr: IpAddr) {
    match addr {
        IpAddr::V4(a) => out[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => out.copy_from_slice(&a.octets()),
    }
}

fn get_addr(bytes: &[u8], family: u8) -> Option<IpAddr> {
    match family {
        4 => {
            let octets: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
            bytes[4..]
                .iter()
                .all(|&b| b == 0)
                .then(|| IpAddr::V4(Ipv4Addr::from(octets)))
        }
        6 => {
            let octets: [u8; 16] = bytes.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}

impl Request {
    /// The datagram.
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut out = [0u8; REQUEST_LEN];
        let (op, spec, ttl) = match self.action {
            FwAction::Open { spec, ttl, .. } => (OP_OPEN, spec, ttl),
            FwAction::Refresh { spec, ttl, .. } => (OP_REFRESH, spec, ttl),
            FwAction::Close { spec, .. } => (OP_CLOSE, spec, Duration::ZERO),
        };
        out[field::OP] = op;
        out[field::FAMILY] = if spec.dst.is_ipv4() { 4 } else { 6 };
        out[field::MODE] = match spec.mode {
            Mode::Passive => 0,
            Mode::Active => 1,
        };
        out[field::SLOT].copy_from_slice(&self.action.slot().0.to_be_bytes());
        out[field::DPORT].copy_from_slice(&spec.dport.to_be_bytes());
        let ttl_ms = u32::try_from(ttl.as_millis()).unwrap_or(u32::MAX);
        out[field::TTL].copy_from_slice(&ttl_ms.to_be_bytes());
        put_addr(&mut out[field::SRC], spec.src);
        put_addr(&mut out[field::DST], spec.dst);
        out[field::ID].copy_from_slice(&self.id.to_be_bytes());
        out
    }

    /// Parses a datagram (syntax only; the monitor's validator does the rest).
    ///
    /// # Errors
    /// [`Malformed`].
    pub fn decode(bytes: &[u8]) -> Result<Request, Malformed> {
        let bytes: &[u8; REQUEST_LEN] = bytes.try_into().map_err(|_| Malformed)?;
        let be16 =
            |r: std::ops::Range<usize>| u16::from_be_bytes([bytes[r.start], bytes[r.start + 1]]);
        let be32 = |r: std::ops::Range<usize>| {
            u32::from_be_bytes([
                bytes[r.start],
                bytes[r.start + 1],
                bytes[r.start + 2],
                bytes[r.start + 3],
            ])
        };
        let family = bytes[field::FAMILY];
        let src = get_addr(&bytes[field::SRC], family).ok_or(Malformed)?;
        let dst = get_addr(&bytes[field::DST], family).ok_or(Malformed)?;
        let mode = match bytes[field::MODE] {
            0 => Mode::Passive,
            1 => Mode::Active,
            _ => return Err(Malformed),
        };
        if bytes[field::ZERO] != 0 {
            return Err(Malformed);
        }
        let spec = HoleSpec {
            mode,
            src,
            dst,
            dport: be16(field::DPORT),
        };
        let slot = Slot(be16(field::SLOT));
        let ttl = Duration::from_millis(u64::from(be32(field::TTL)));
        let action = match bytes[field::OP] {
            OP_OPEN => FwAction::Open { slot, spec, ttl },
            OP_REFRESH => FwAction::Refresh { slot, spec, ttl },
            OP_CLOSE => FwAction::Close { slot, spec },
            _ => return Err(Malformed),
        };
        Ok(Request {
            id: be32(field::ID),
            action,
        })
    }
}

impl ToMonitor {
    /// The datagram.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ToMonitor::Request(request) => request.encode().to_vec(),
            ToMonitor::Closed => vec![CLOSED],
        }
    }

    /// Parses a datagram.
    ///
    /// # Errors
    /// [`Malformed`].
    pub fn decode(bytes: &[u8]) -> Result<ToMonitor, Malformed> {
        match bytes {
            [CLOSED] => Ok(ToMonitor::Closed),
            _ => Request::decode(bytes).map(ToMonitor::Request),
        }
    }
}

impl FromMonitor {
    /// The datagram.
    pub fn encode(&self) -> Vec<u8> {
        match *self {
            FromMonitor::Response { id, ok } => {
                let mut out = vec![RESPONSE];
                out.extend_from_slice(&id.to_be_bytes());
                out.push(u8::from(ok));
                out
            }
            FromMonitor::Status => vec![STATUS],
            FromMonitor::Shutdown => vec![SHUTDOWN],
            FromMonitor::Used { slot, spec } => {
                let mut out = vec![USED];
                let close = FwAction::Close { slot, spec };
                out.extend_from_slice(
                    &Request {
                        id: 0,
                        action: close,
                    }
                    .encode(),
                );
                out
            }
        }
    }

    /// Parses a datagram.
    ///
    /// # Errors
    /// [`Malformed`].
    pub fn decode(bytes: &[u8]) -> Result<FromMonitor, Malformed> {
        match *bytes {
            [RESPONSE, a, b, c, d, ok @ (0 | 1)] => Ok(FromMonitor::Response {
                id: u32::from_be_bytes([a, b, c, d]),
                ok: ok == 1,
            }),
            [STATUS] => Ok(FromMonitor::Status),
            [SHUTDOWN] => Ok(FromMonitor::Shutdown),
            [USED, ref request @ ..] => match Request::decode(request)? {
                Request {
                    id: 0,
                    action: FwAction::Close { slot, spec },
                } => Ok(FromMonitor::Used { slot, spec }),
                _ => Err(Malformed),
            },
            _ => Err(Malformed),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Monitor → worker: a new parser's link (the descriptor travels as SCM_RIGHTS).

/// The one byte that carries a new parser's link.
pub const NEW_PARSER: u8 = 1;

// ---------------------------------------------------------------------------------------
// The log link: worker and parser lines, written by the monitor alone.

/// Which process a log line comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Process {
    /// The privileged monitor (writes its own lines).
    Monitor = 0,
    /// The unprivileged packet mover.
    Worker = 1,
    /// The sandboxed engine.
    Parser = 2,
}

impl Process {
    /// Its name in the log.
    pub fn name(self) -> &'static str {
        match self {
            Process::Monitor => "monitor",
            Process::Worker => "worker",
            Process::Parser => "parser",
        }
    }

    fn from_byte(byte: u8) -> Option<Process> {
        match byte {
            0 => Some(Process::Monitor),
            1 => Some(Process::Worker),
            2 => Some(Process::Parser),
            _ => None,
        }
    }
}

/// Longest text forwarded on the log link; longer lines are cut.
pub const MAX_FORWARDED: usize = 2048;
/// Largest log datagram.
pub const MAX_LOG_MESSAGE: usize = 2 + MAX_FORWARDED;

fn level_byte(level: Level) -> u8 {
    match level {
        Level::Error => 1,
        Level::Warn => 2,
        Level::Info => 3,
        Level::Debug => 4,
        Level::Trace => 5,
    }
}

fn level_from_byte(byte: u8) -> Option<Level> {
    match byte {
        1 => Some(Level::Error),
        2 => Some(Level::Warn),
        3 => Some(Level::Info),
        4 => Some(Level::Debug),
        5 => Some(Level::Trace),
        _ => None,
    }
}

/// One forwarded line: `[level][process][text...]`, the text cut at [`MAX_FORWARDED`].
pub fn encode_log_line(level: Level, process: Process, text: &str) -> Vec<u8> {
    let mut cut = text.len().min(MAX_FORWARDED);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = Vec::with_capacity(2 + cut);
    out.push(level_byte(level));
    out.push(process as u8);
    out.extend_from_slice(&text.as_bytes()[..cut]);
    out
}

/// A forwarded line as the monitor will write it. A compromised parser may send anything:
/// the text is bounded, control characters are escaped, and a wrong level or process byte
/// (or a child claiming to be the monitor) makes it [`Malformed`].
///
/// # Errors
/// [`Malformed`].
pub fn decode_log_line(bytes: &[u8]) -> Result<(Level, Process, String), Malformed> {
    let (&level, rest) = bytes.split_first().ok_or(Malformed)?;
    let (&process, text) = rest.split_first().ok_or(Malformed)?;
    let level = level_from_byte(level).ok_or(Malformed)?;
    let process = Process::from_byte(process)
        .filter(|p| *p != Process::Monitor)
        .ok_or(Malformed)?;
    let text = String::from_utf8_lossy(&text[..text.len().min(MAX_FORWARDED)]);
    Ok((level, process, text.escape_debug().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::test_holes::{open, v4 as spec4, v6 as spec6};

    #[test]
    fn worker_parser_messages_round_trip() {
        let packets = [
            ToParser {
                id: 7,
                checksum: Checksum::NotReady,
                bytes: b"\x60abc",
            },
            ToParser {
                id: u64::MAX,
                checksum: Checksum::Verify,
                bytes: b"",
            },
        ];
        let mut out = Vec::new();
        for packet in packets {
            packet.encode(&mut out);
            assert_eq!(out.len(), 1 + packet.encoded_len());
            let got: Vec<_> = ToParser::records(&out).unwrap().collect();
            assert_eq!(got, [packet]);
        }
        // Several in one datagram, in order.
        out.clear();
        for packet in packets.iter().chain(&packets) {
            packet.append_to(&mut out);
        }
        assert_eq!(
            out.len(),
            1 + 2 * packets.iter().map(ToParser::encoded_len).sum::<usize>()
        );
        let got: Vec<_> = ToParser::records(&out).unwrap().collect();
        assert_eq!(got, [packets, packets].concat());
        // The largest packet fits the largest message.
        let largest = vec![0u8; 65_536];
        ToParser {
            id: 1,
            checksum: Checksum::Verify,
            bytes: &largest,
        }
        .encode(&mut out);
        assert!(out.len() <= MAX_PACKET_MESSAGE);
        let ids: Vec<u64> = (0..1000).collect();
        let mut got = Vec::new();
        let datagrams: Vec<Vec<u8>> = ToWorker::encode_all(&ids).collect();
        assert_eq!(datagrams.len(), 2, "512 ids to a datagram");
        for datagram in &datagrams {
            assert!(datagram.len() <= MAX_PASS_MESSAGE);
            ToWorker::decode_each(datagram, |id| got.push(id)).unwrap();
        }
        assert_eq!(got, ids);
    }

    #[test]
    fn malformed_worker_parser_messages_are_refused() {
        for bytes in [
            &[][..],
            &[9],
            &[PACKET, 0, 0],
            // No record at all.
            &[PACKET],
            // A record without its length.
            &[PACKET, 0, 0, 0, 0, 0, 0, 0, 1, 1],
            // A checksum flag that is neither 0 nor 1.
            &[PACKET, 0, 0, 0, 0, 0, 0, 0, 1, 7, 0, 0, 0, 0],
            // A length past the end.
            &[PACKET, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 2, 0x60],
            // A whole record, then a torn one: nothing of the datagram is read.
            &[PACKET, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 9],
        ] {
            assert_eq!(
                ToParser::records(bytes).map(|r| r.count()),
                Err(Malformed),
                "{bytes:?}"
            );
        }
        let mut released = 0;
        for bytes in [&[][..], &[PASS], &[PASS, 1, 2, 3], &[PACKET; 9]] {
            assert_eq!(
                ToWorker::decode_each(bytes, |_| released += 1),
                Err(Malformed),
                "{bytes:?}"
            );
        }
        let too_many = vec![0u8; 1 + 8 * (MAX_PASS_IDS + 1)];
        let mut too_many = too_many;
        too_many[0] = PASS;
        assert_eq!(
            ToWorker::decode_each(&too_many, |_| released += 1),
            Err(Malformed)
        );
        assert_eq!(released, 0);
    }

    #[test]
    fn parser_monitor_messages_round_trip() {
        for action in [
            open(64000, spec6()),
            open(64099, spec4()),
            FwAction::Refresh {
                slot: Slot(64001),
                spec: spec4(),
                ttl: Duration::from_millis(1500),
            },
            FwAction::Close {
                slot: Slot(64002),
                spec: spec6(),
            },
        ] {
            let request = ToMonitor::Request(Request { id: 77, action });
            let bytes = request.encode();
            assert!(bytes.len() <= MAX_TO_MONITOR);
            assert_eq!(ToMonitor::decode(&bytes), Ok(request));
        }
        assert_eq!(
            ToMonitor::decode(&ToMonitor::Closed.encode()),
            Ok(ToMonitor::Closed)
        );
        for message in [
            FromMonitor::Response {
                id: u32::MAX,
                ok: true,
            },
            FromMonitor::Response { id: 9, ok: false },
            FromMonitor::Status,
            FromMonitor::Shutdown,
            FromMonitor::Used {
                slot: Slot(64003),
                spec: spec6(),
            },
        ] {
            let bytes = message.encode();
            assert!(bytes.len() <= MAX_FROM_MONITOR);
            assert_eq!(FromMonitor::decode(&bytes), Ok(message));
        }
    }

    #[test]
    fn malformed_parser_monitor_messages_are_refused() {
        let good = Request {
            id: 1,
            action: open(64000, spec4()),
        }
        .encode();
        assert_eq!(Request::decode(&good[..47]), Err(Malformed));
        for (index, value) in [
            (field::OP, 9),
            (field::FAMILY, 5),
            (field::MODE, 2),
            (field::ZERO, 1),
        ] {
            let mut bad = good;
            bad[index] = value;
            assert_eq!(Request::decode(&bad), Err(Malformed), "byte {index}");
        }
        // Garbage after an IPv4 address.
        let mut bad = good;
        bad[field::SRC.start + 5] = 1;
        assert_eq!(Request::decode(&bad), Err(Malformed));
        assert_eq!(ToMonitor::decode(&[CLOSED, 0]), Err(Malformed));
        for bytes in [
            &[][..],
            &[RESPONSE, 0, 0, 0, 1, 2],
            &[RESPONSE, 0, 0, 0, 1],
            &[STATUS, 0],
            &[9],
        ] {
            assert_eq!(FromMonitor::decode(bytes), Err(Malformed), "{bytes:?}");
        }
    }

    #[test]
    fn log_lines_round_trip_and_are_bounded() {
        let bytes = encode_log_line(Level::Warn, Process::Parser, "gap dir=server");
        assert_eq!(
            decode_log_line(&bytes),
            Ok((Level::Warn, Process::Parser, "gap dir=server".into()))
        );
        let long = "é".repeat(MAX_FORWARDED);
        let bytes = encode_log_line(Level::Info, Process::Worker, &long);
        assert!(bytes.len() <= MAX_LOG_MESSAGE);
        let (_, _, text) = decode_log_line(&bytes).unwrap();
        assert!(text.len() <= MAX_FORWARDED);
        // Hostile bytes: escaped; a child posing as the monitor, or a bad level: refused.
        let (_, _, text) = decode_log_line(&[3, 2, b'a', 0x1b, b'\n']).unwrap();
        assert_eq!(text, "a\\u{1b}\\n");
        assert_eq!(decode_log_line(&[3, 0, b'x']), Err(Malformed));
        assert_eq!(decode_log_line(&[9, 2, b'x']), Err(Malformed));
        assert_eq!(
            decode_log_line(&[3, 7, b'x']),
            Err(Malformed),
            "unknown process"
        );
        assert_eq!(decode_log_line(&[3]), Err(Malformed));
        let mut forged = vec![3, 2];
        forged.extend_from_slice(b"ok\nftp6proxy: monitor: opened hole\0");
        let (_, _, text) = decode_log_line(&forged).unwrap();
        assert!(!text.contains('\n') && !text.contains('\0'), "{text}");
        let huge = [vec![3, 1], vec![b'a'; 100_000]].concat();
        assert!(decode_log_line(&huge).unwrap().2.len() <= MAX_FORWARDED);
    }
}
