//! Zero-copy views of intercepted IPv4/IPv6 packets, down to the TCP payload.
//!
//! Owns: IP version dispatch, the IPv4 header with options (RFC 791 §3.1), the IPv6 header and
//! its extension-header chain (RFC 8200 §4), fragments, the IP Authentication Header (RFC 4302),
//! the TCP header with its options (RFC 9293 §3.1) and the TCP checksum. Must not touch: FTP,
//! connection state, policy. This module knows bytes, not conversations.
//!
//! Contract: untrusted bytes go into [`parse`]; a [`Segment`] borrowing from them, or a typed
//! [`Error`], comes out. It never panics, never allocates and never indexes a slice before
//! checking its length. An error never stops a packet: the caller passes every packet on
//! unchanged (DESIGN.md invariant 1) and only logs or counts the error.
//!
//! etherparse reads the individual headers; its types stay inside this module. The walk over
//! the header chain is ours so that a fragment is reported as [`Error::Fragment`] before any
//! byte behind the Fragment header is read (those bytes are not headers in a non-first
//! fragment, RFC 8200 §4.5).

use std::fmt;
use std::net::IpAddr;

use crate::Family;

use etherparse::{
    err, IpAuthHeaderSlice, Ipv4HeaderSlice, Ipv6FragmentHeaderSlice, Ipv6HeaderSlice,
    Ipv6RawExtHeaderSlice, TcpSlice,
};

#[cfg(test)]
mod tests;

/// IANA "Assigned Internet Protocol Numbers" this module acts on. In IPv4 they appear in the
/// Protocol field (RFC 791 §3.1), in IPv6 in every Next Header field (RFC 8200 §3, §4).
mod protocol {
    /// IPv6 Hop-by-Hop Options (RFC 8200 §4.3); allowed only right after the IPv6 header.
    pub const HOP_BY_HOP: u8 = 0;
    /// TCP (RFC 9293).
    pub const TCP: u8 = 6;
    /// IPv6 Routing header (RFC 8200 §4.4).
    pub const ROUTING: u8 = 43;
    /// IPv6 Fragment header (RFC 8200 §4.5).
    pub const FRAGMENT: u8 = 44;
    /// IP Authentication Header (RFC 4302), in IPv4 and IPv6.
    pub const AUTH: u8 = 51;
    /// IPv6 Destination Options (RFC 8200 §4.6).
    pub const DEST_OPTS: u8 = 60;
}

/// The TCP flags the tracker needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpFlags {
    /// SYN: the sequence number is the initial one.
    pub syn: bool,
    /// ACK.
    pub ack: bool,
    /// FIN: the sender has finished.
    pub fin: bool,
    /// RST: the connection is gone.
    pub rst: bool,
}

impl fmt::Display for TcpFlags {
    /// Prints the set flags as letters in the order `S`, `F`, `R`, `A` (`SA`, `FA`), or `-`
    /// when none is set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let letters = [
            (self.syn, 'S'),
            (self.fin, 'F'),
            (self.rst, 'R'),
            (self.ack, 'A'),
        ];
        let mut any = false;
        for (set, letter) in letters {
            if set {
                any = true;
                write!(f, "{letter}")?;
            }
        }
        if !any {
            write!(f, "-")?;
        }
        Ok(())
    }
}

/// A TCP segment inside an IPv4 or IPv6 packet.
///
/// [`parse`] is the normal way to get one. A struct literal is fine in tests; then
/// `tcp_bytes` must hold the TCP header and payload for [`Segment::checksum_valid`] to mean
/// anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    /// IP source address.
    pub src: IpAddr,
    /// IP destination address.
    pub dst: IpAddr,
    /// TCP source port.
    pub src_port: u16,
    /// TCP destination port.
    pub dst_port: u16,
    /// TCP sequence number.
    pub seq: u32,
    /// TCP acknowledgment number: the next byte the sender expects from its peer. Only
    /// meaningful when `flags.ack` is set.
    pub ack: u32,
    /// TCP flags.
    pub flags: TcpFlags,
    /// TCP payload: the bytes after the TCP header, up to the end the IP length field gives
    /// (link-layer padding behind it is not included).
    pub payload: &'a [u8],
    /// The whole TCP segment, header (with options) followed by `payload`. It is what
    /// [`Segment::checksum_valid`] sums; `payload` is its tail.
    pub tcp_bytes: &'a [u8],
}

impl Segment<'_> {
    /// Whether the TCP checksum over pseudo-header, header and payload is correct.
    ///
    /// This is the receiver's check of RFC 1071 §1 (3): the one's complement sum over the
    /// pseudo-header (RFC 9293 §3.1 for IPv4, RFC 8200 §8.1 for IPv6) and `tcp_bytes`,
    /// checksum field included, must be all ones. Both encodings of zero (`0x0000` and
    /// `0xffff`) in the checksum field therefore pass.
    ///
    /// It is a separate call, not part of [`parse`], because a wrong checksum is normal in
    /// some places: a locally sent packet seen before checksum offload has filled the field in
    /// (Linux NFQUEUE on OUTPUT) carries only the pseudo-header sum. The caller decides.
    ///
    /// Returns false, without summing, when `src` and `dst` are of different families, when
    /// `tcp_bytes` is shorter than a TCP header, or longer than the pseudo-header's length
    /// field can express. With a source route (IPv4 LSRR/SSRR option, or an IPv6 Routing
    /// header whose Segments Left is not zero) the sender summed the final destination, not
    /// `dst`, so the check fails for such packets.
    pub fn checksum_valid(&self) -> bool {
        if self.tcp_bytes.len() < TCP_MIN_HEADER_LEN {
            return false;
        }
        let pseudo = match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                // RFC 9293 §3.1: src, dst, zero, PTCL, TCP Length (16 bits).
                let Ok(len) = u16::try_from(self.tcp_bytes.len()) else {
                    return false;
                };
                sum_words(sum_words(0, &src.octets()), &dst.octets())
                    + u64::from(protocol::TCP)
                    + u64::from(len)
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                // RFC 8200 §8.1: src, dst, Upper-Layer Packet Length (32 bits), zero,
                // Next Header.
                let Ok(len) = u32::try_from(self.tcp_bytes.len()) else {
                    return false;
                };
                sum_words(sum_words(0, &src.octets()), &dst.octets())
                    + u64::from(protocol::TCP)
                    + u64::from(len >> 16)
                    + u64::from(len & 0xffff)
            }
            _ => return false,
        };
        fold(sum_words(pseudo, self.tcp_bytes)) == 0xffff
    }
}

impl fmt::Display for Segment<'_> {
    /// One line for trace logs:
    /// `tcp 2001:db8::10.50000 > 2001:db8::21.21 seq=1000 flags=SA len=0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tcp {}.{} > {}.{} seq={} flags={} len={}",
            self.src,
            self.src_port,
            self.dst,
            self.dst_port,
            self.seq,
            self.flags,
            self.payload.len()
        )
    }
}

/// Minimum TCP header length: data offset 5 (RFC 9293 §3.1).
const TCP_MIN_HEADER_LEN: usize = 20;

/// Adds `bytes` as big-endian 16-bit words to `acc`, the last odd byte padded with a zero
/// (RFC 1071 §4.1). `acc` is not folded; a u64 cannot overflow for any slice that fits in
/// memory.
fn sum_words(mut acc: u64, bytes: &[u8]) -> u64 {
    for word in bytes.chunks(2) {
        acc += match *word {
            [hi, lo] => u64::from(u16::from_be_bytes([hi, lo])),
            [hi] => u64::from(u16::from_be_bytes([hi, 0])),
            _ => 0,
        };
    }
    acc
}

/// Folds the carries of a one's complement sum back into 16 bits (RFC 1071 §2 (C)).
fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    u16::try_from(acc).unwrap_or(0)
}

/// The header or length a [`Error::Truncated`] refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// The first byte, which holds the IP version: the input was empty.
    Ip,
    /// The IPv4 header with its options (IHL), or the datagram as long as Total Length says.
    Ipv4,
    /// The fixed IPv6 header, or the packet as long as Payload Length says.
    Ipv6,
    /// An IPv6 Hop-by-Hop, Routing, Fragment or Destination Options header.
    Ipv6Ext,
    /// An IP Authentication Header (RFC 4302).
    Auth,
    /// The TCP header with its options (data offset).
    Tcp,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layer::Ip => "ip",
            Layer::Ipv4 => "ipv4",
            Layer::Ipv6 => "ipv6",
            Layer::Ipv6Ext => "ipv6-ext",
            Layer::Auth => "ah",
            Layer::Tcp => "tcp",
        })
    }
}

/// Why a packet yields no TCP segment.
///
/// None of these stops the packet: the caller passes it on unchanged and logs or counts the
/// error. Typical causes are a capture cut short (NFQUEUE copy range, snap length), traffic
/// the firewall sent here by mistake (rule too broad), or a sender probing the parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Occurs when the bytes end before a header does, or before the end an IP length field
    /// announces (IPv4 Total Length, IPv6 Payload Length); also when a header chain or TCP
    /// header does not fit in the length the IP header gives it. `needed` and `available`
    /// count bytes from the start of `layer`. An empty input is `layer=ip needed=1`.
    #[error("truncated {layer}: {needed} bytes needed, {available} available")]
    Truncated {
        /// The header or length that did not fit.
        layer: Layer,
        /// Bytes that header or length field requires.
        needed: usize,
        /// Bytes there were.
        available: usize,
    },

    /// Occurs when the version nibble of the first byte is neither 4 nor 6: not an IP packet
    /// at all, or an intercept that hands over a link-layer frame.
    #[error("unknown IP version {version}")]
    UnknownVersion {
        /// The version nibble.
        version: u8,
    },

    /// Occurs when an IPv4 header's IHL is below 5, so the header would be shorter than its
    /// fixed part (RFC 791 §3.1).
    #[error("IPv4 IHL {ihl} is below 5")]
    Ipv4HeaderLength {
        /// The IHL field, in 32-bit words.
        ihl: u8,
    },

    /// Occurs when an IPv4 Total Length is smaller than the header's own length (IHL × 4);
    /// RFC 791 §3.1 counts the header in Total Length.
    #[error("IPv4 total length {total_len} is shorter than the {header_len}-byte header")]
    Ipv4TotalLength {
        /// The Total Length field.
        total_len: usize,
        /// IHL × 4.
        header_len: usize,
    },

    /// Occurs when an IPv6 Hop-by-Hop Options header appears anywhere but right after the
    /// IPv6 header (RFC 8200 §4.3, §4.1).
    #[error("IPv6 hop-by-hop header not first in the chain")]
    HopByHopNotFirst,

    /// Occurs when an IP Authentication Header has a Payload Length of 0, too short for its
    /// own fixed fields (RFC 4302 §2.2).
    #[error("authentication header with payload length 0")]
    AuthHeaderLength,

    /// Occurs when the packet is an IPv4 fragment (MF set or a non-zero Fragment Offset,
    /// RFC 791 §3.2) or carries an IPv6 Fragment header with M set or a non-zero offset
    /// (RFC 8200 §4.5). A first fragment with MF set counts too: the TCP payload is only
    /// partly there. An atomic fragment (offset 0, M clear, RFC 6946) is no fragment and
    /// parses normally. Both divert(4) and Linux conntrack reassemble before the packet
    /// reaches us, so a fragment here is rare.
    #[error("IP fragment")]
    Fragment,

    /// Occurs when the header chain ends in something other than TCP: UDP, ICMP, ESP (50,
    /// encrypted, RFC 4303), No Next Header (59), an IPv6 Mobility, HIP or Shim6 header
    /// (135, 139, 140; not walked), or an unknown number.
    #[error("not TCP: protocol {protocol}")]
    NotTcp {
        /// The IPv4 Protocol or IPv6 Next Header value that ended the chain.
        protocol: u8,
    },

    /// Occurs when a TCP data offset is below 5, so the header would be shorter than its
    /// fixed part (RFC 9293 §3.1).
    #[error("TCP data offset {data_offset} is below 5")]
    TcpDataOffset {
        /// The data offset field, in 32-bit words.
        data_offset: u8,
    },
}

/// Parses an IP packet (starting at the IP header) down to its TCP segment.
///
/// Accepts IPv4 with options and an optional Authentication Header, and IPv6 with any chain
/// of Hop-by-Hop, Routing, Destination Options, (atomic) Fragment and Authentication headers
/// before TCP. Bytes behind the end the IP length field gives (Ethernet padding) are ignored.
/// Checksums are not checked here: the IPv4 header checksum is the kernel's business, and
/// for TCP see [`Segment::checksum_valid`]. An IPv6 Payload Length of 0 (a jumbogram,
/// RFC 2675) is taken literally, so it yields [`Error::Truncated`]; an FTP control segment
/// never needs one.
///
/// # Errors
/// [`Error`] for anything that is not a complete, well-formed, unfragmented TCP segment.
pub fn parse(packet: &[u8]) -> Result<Segment<'_>, Error> {
    let Some(&first) = packet.first() else {
        return Err(Error::Truncated {
            layer: Layer::Ip,
            needed: 1,
            available: 0,
        });
    };
    let ip = match first >> 4 {
        4 => parse_ipv4(packet)?,
        6 => parse_ipv6(packet)?,
        version => return Err(Error::UnknownVersion { version }),
    };
    let tcp = TcpSlice::from_slice(ip.upper).map_err(|e| match e {
        err::tcp::HeaderSliceError::Len(len) => truncated(Layer::Tcp, &len),
        err::tcp::HeaderSliceError::Content(err::tcp::HeaderError::DataOffsetTooSmall {
            data_offset,
        }) => Error::TcpDataOffset { data_offset },
    })?;
    Ok(Segment {
        src: ip.src,
        dst: ip.dst,
        src_port: tcp.source_port(),
        dst_port: tcp.destination_port(),
        seq: tcp.sequence_number(),
        ack: tcp.acknowledgment_number(),
        flags: TcpFlags {
            syn: tcp.syn(),
            ack: tcp.ack(),
            fin: tcp.fin(),
            rst: tcp.rst(),
        },
        payload: tcp.payload(),
        tcp_bytes: tcp.slice(),
    })
}

/// The IP layer of a packet whose header chain ended in TCP.
struct IpPart<'a> {
    src: IpAddr,
    dst: IpAddr,
    /// From the start of the TCP header to the end the IP length field gives.
    upper: &'a [u8],
}

fn truncated(layer: Layer, len: &err::LenError) -> Error {
    Error::Truncated {
        layer,
        needed: len.required_len,
        available: len.len,
    }
}

/// IPv4 header (RFC 791 §3.1), then at most a chain of Authentication Headers.
fn parse_ipv4(packet: &[u8]) -> Result<IpPart<'_>, Error> {
    let header = Ipv4HeaderSlice::from_slice(packet).map_err(|e| match e {
        err::ipv4::HeaderSliceError::Len(len) => truncated(Layer::Ipv4, &len),
        err::ipv4::HeaderSliceError::Content(content) => match content {
            err::ipv4::HeaderError::UnexpectedVersion { version_number } => Error::UnknownVersion {
                version: version_number,
            },
            err::ipv4::HeaderError::HeaderLengthSmallerThanHeader { ihl } => {
                Error::Ipv4HeaderLength { ihl }
            }
        },
    })?;
    let header_len = header.slice().len();
    let total_len = usize::from(header.total_len());
    if total_len < header_len {
        return Err(Error::Ipv4TotalLength {
            total_len,
            header_len,
        });
    }
    // Total Length, not the buffer, ends the datagram: anything behind it is link padding.
    let Some(datagram) = packet.get(..total_len) else {
        return Err(Error::Truncated {
            layer: Layer::Ipv4,
            needed: total_len,
            available: packet.len(),
        });
    };
    // Before reading past the IP header: in a non-first fragment those bytes are the middle
    // of someone's payload, not headers.
    if header.is_fragmenting_payload() {
        return Err(Error::Fragment);
    }
    let rest = datagram.get(header_len..).unwrap_or_default();
    let upper = walk_chain(header.protocol().0, rest, Family::V4)?;
    Ok(IpPart {
        src: header.source_addr().into(),
        dst: header.destination_addr().into(),
        upper,
    })
}

/// IPv6 header (RFC 8200 §3), then the extension-header chain (RFC 8200 §4).
fn parse_ipv6(packet: &[u8]) -> Result<IpPart<'_>, Error> {
    let header = Ipv6HeaderSlice::from_slice(packet).map_err(|e| match e {
        err::ipv6::HeaderSliceError::Len(len) => truncated(Layer::Ipv6, &len),
        err::ipv6::HeaderSliceError::Content(err::ipv6::HeaderError::UnexpectedVersion {
            version_number,
        }) => Error::UnknownVersion {
            version: version_number,
        },
    })?;
    let header_len = header.slice().len();
    // Payload Length counts everything after the fixed header, extension headers included;
    // anything behind that is link padding. A 0 is not treated as a jumbogram (see `parse`).
    let end = header_len + usize::from(header.payload_length());
    let Some(datagram) = packet.get(..end) else {
        return Err(Error::Truncated {
            layer: Layer::Ipv6,
            needed: end,
            available: packet.len(),
        });
    };
    let rest = datagram.get(header_len..).unwrap_or_default();
    let upper = walk_chain(header.next_header().0, rest, Family::V6)?;
    Ok(IpPart {
        src: header.source_addr().into(),
        dst: header.destination_addr().into(),
        upper,
    })
}

/// Walks from the protocol number in the IP header over the headers that can precede TCP
/// and returns the bytes of the TCP segment. In IPv4 only the Authentication Header is
/// stepped over (RFC 4302 §3.1.1); IPv6 adds the extension headers of RFC 8200 §4.
///
/// The loop ends: every header consumes at least 8 bytes of a finite slice, or returns.
fn walk_chain(first: u8, mut rest: &[u8], family: Family) -> Result<&[u8], Error> {
    let mut next = first;
    let mut at_start = true;
    loop {
        let consumed = match next {
            protocol::TCP => return Ok(rest),
            protocol::HOP_BY_HOP | protocol::ROUTING | protocol::DEST_OPTS
                if family == Family::V6 =>
            {
                // RFC 8200 §4.3: Hop-by-Hop, when present, comes right after the IPv6 header.
                if next == protocol::HOP_BY_HOP && !at_start {
                    return Err(Error::HopByHopNotFirst);
                }
                // Same layout for all three: Next Header, Hdr Ext Len in 8-octet units not
                // counting the first 8 (RFC 8200 §4.3, §4.4, §4.6).
                let ext = Ipv6RawExtHeaderSlice::from_slice(rest)
                    .map_err(|len| truncated(Layer::Ipv6Ext, &len))?;
                next = ext.next_header().0;
                ext.slice().len()
            }
            protocol::FRAGMENT if family == Family::V6 => {
                let frag = Ipv6FragmentHeaderSlice::from_slice(rest)
                    .map_err(|len| truncated(Layer::Ipv6Ext, &len))?;
                // Stop here: behind a real fragment's header, RFC 8200 §4.5 has only
                // fragmentable data, which in a non-first fragment is no header at all.
                if frag.is_fragmenting_payload() {
                    return Err(Error::Fragment);
                }
                next = frag.next_header().0;
                frag.slice().len()
            }
            protocol::AUTH => {
                let auth = IpAuthHeaderSlice::from_slice(rest).map_err(|e| match e {
                    err::ip_auth::HeaderSliceError::Len(len) => truncated(Layer::Auth, &len),
                    err::ip_auth::HeaderSliceError::Content(
                        err::ip_auth::HeaderError::ZeroPayloadLen,
                    ) => Error::AuthHeaderLength,
                })?;
                next = auth.next_header().0;
                auth.slice().len()
            }
            protocol => return Err(Error::NotTcp { protocol }),
        };
        rest = rest.get(consumed..).unwrap_or_default();
        at_start = false;
    }
}
