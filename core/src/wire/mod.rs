//! Zero-copy views of intercepted IPv4/IPv6 packets, down to the TCP payload.
//!
//! Owns: IP version dispatch, the IPv6 extension-header chain, fragments, the TCP header and
//! its options, and the TCP checksum. Knows nothing of FTP. Untrusted bytes go in; a
//! [`Segment`] borrowing from them, or a typed [`Error`], comes out, never a panic.
//!
//! PLACEHOLDER API: the implementation is being written; signatures are fixed.

use std::net::IpAddr;

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

/// A TCP segment inside an IPv4 or IPv6 packet.
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
    /// TCP flags.
    pub flags: TcpFlags,
    /// TCP payload.
    pub payload: &'a [u8],
}

impl Segment<'_> {
    /// Whether the TCP checksum over pseudo-header, header and payload is correct.
    pub fn checksum_valid(&self) -> bool {
        true
    }
}

/// Why a packet yields no TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Occurs when the packet is malformed.
    #[error("malformed")]
    Malformed,
}

/// Parses an IP packet (starting at the IP header) down to its TCP segment.
///
/// # Errors
/// [`Error`] for anything that is not a complete, well-formed, unfragmented TCP segment.
pub fn parse(_packet: &[u8]) -> Result<Segment<'_>, Error> {
    Err(Error::Malformed)
}
