//! The `sockaddr_in` that divert(4) hands over with each packet, as bytes.
//!
//! Owns the encoding and decoding of that one structure, nothing else: no socket, no
//! syscall, no `cfg` gate, so every byte of it is tested on Linux. `divert.rs` (FreeBSD
//! only) passes the raw bytes in and out.
//!
//! # What the kernel puts in it (FreeBSD `sys/netinet/ip_divert.c`, `divert_packet()`)
//! ```text
//!  0        1        2                 4                                 8
//! +--------+--------+--------+--------+--------+--------+--------+--------+
//! | len=16 | fam=2  | sin_port        | sin_addr                          |
//! +--------+--------+--------+--------+--------+--------+--------+--------+
//! | sin_zero: receiving interface name, NUL-terminated (<= 7 chars)       |
//! +--------+--------+--------+--------+--------+--------+--------+--------+
//! ```
//! - `sin_family` is AF_INET even for IPv6 packets (the payload's version nibble tells).
//! - `sin_port` is the number of the ipfw rule that diverted the packet, in **host** byte
//!   order (not `htons`'d). On reinjection the kernel resumes at that rule + 1.
//! - `sin_addr` is the first IPv4 address of the receiving interface for *incoming*
//!   packets and 0.0.0.0 for outgoing ones. It is the only direction indicator, and on
//!   reinjection it *decides* the direction: 0 → `ip_output`/`ip6_output`, else input.
//! - `sin_zero` holds the receiving interface's name whenever the packet has one; on an
//!   inbound reinjection the kernel looks the interface up by that name first.
//!
//! # The IPv6 inbound caveat: divert on the way out only
//! An inbound packet on an interface without an IPv4 address — typical for IPv6-only
//! links, the very case this daemon exists for — arrives with `sin_addr` 0.0.0.0
//! (`divert_packet()` copies only an IPv4 interface address). Echoing that sockaddr
//! reinjects the packet as *outbound*: it skips the input path (and the filter's inbound
//! rules, and delivery to a local server) and is routed out again.
//!
//! So the daemon is fed on the output path only: the samples divert with `out` rules, and
//! every control packet of a forwarding gateway passes there exactly once. Each sockaddr
//! is echoed unchanged, which is exactly right for an outbound packet (`sin_addr` 0.0.0.0
//! → `ip_output`/`ip6_output`, resuming after the diverting rule). A packet that arrives
//! with `sin_addr` set came from an `in` rule ([`DivertAddr::seen_inbound`]): the daemon
//! still passes it on as received, and warns once that the rules must say `out`; the ipfw
//! backend also checks the ruleset for `divert` rules without `out` when it starts.

use std::fmt;
use std::net::Ipv4Addr;

/// Size of FreeBSD's `struct sockaddr_in`.
pub const SOCKADDR_IN_LEN: usize = 16;
/// FreeBSD's AF_INET.
pub const AF_INET: u8 = 2;

mod field {
    use std::ops::Range;
    pub const LEN: usize = 0;
    pub const FAMILY: usize = 1;
    pub const PORT: Range<usize> = 2..4;
    pub const ADDR: Range<usize> = 4..8;
    pub const ZERO: Range<usize> = 8..16;
}

/// Why a received sockaddr was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Occurs when the kernel returned fewer bytes than a `sockaddr_in` (never seen from
    /// divert; it would mean we are not reading a divert socket).
    #[error("divert sockaddr too short: {len} bytes, expected {SOCKADDR_IN_LEN}")]
    Truncated {
        /// The length returned.
        len: usize,
    },
    /// Occurs when `sin_len` or `sin_family` is not that of a `sockaddr_in`.
    #[error("divert sockaddr has sin_len {len} and family {family}, expected 16 and AF_INET")]
    NotInet {
        /// `sin_len` as received.
        len: u8,
        /// `sin_family` as received.
        family: u8,
    },
}

/// A decoded divert sockaddr. Keeps every byte it was decoded from, so
/// `DivertAddr::decode(b)?.encode() == b`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DivertAddr {
    /// The ipfw rule number that diverted the packet (or pf's cookie), host order.
    pub rule: u16,
    /// The receiving interface's first IPv4 address; 0.0.0.0 = outbound, or inbound on an
    /// interface without IPv4 (see the module docs).
    pub addr: Ipv4Addr,
    /// `sin_zero` exactly as received: the interface name, NUL-terminated.
    pub zero: [u8; 8],
}

impl DivertAddr {
    /// Decodes the sockaddr bytes `recvfrom(2)` filled in.
    ///
    /// # Errors
    /// [`Error::Truncated`] or [`Error::NotInet`]; the packet itself is still passed on by
    /// the caller with a default sockaddr.
    pub fn decode(bytes: &[u8]) -> Result<DivertAddr, Error> {
        let b: &[u8; SOCKADDR_IN_LEN] = bytes
            .get(..SOCKADDR_IN_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(Error::Truncated { len: bytes.len() })?;
        let (len, family) = (b[field::LEN], b[field::FAMILY]);
        if usize::from(len) != SOCKADDR_IN_LEN || family != AF_INET {
            return Err(Error::NotInet { len, family });
        }
        let port = [b[field::PORT.start], b[field::PORT.start + 1]];
        let addr = [
            b[field::ADDR.start],
            b[field::ADDR.start + 1],
            b[field::ADDR.start + 2],
            b[field::ADDR.start + 3],
        ];
        let mut zero = [0u8; 8];
        zero.copy_from_slice(&b[field::ZERO]);
        Ok(DivertAddr {
            // divert_packet() stores the rule number without htons().
            rule: u16::from_ne_bytes(port),
            addr: Ipv4Addr::from(addr),
            zero,
        })
    }

    /// Encodes the sockaddr for `sendto(2)`.
    pub fn encode(&self) -> [u8; SOCKADDR_IN_LEN] {
        let mut b = [0u8; SOCKADDR_IN_LEN];
        b[field::LEN] = SOCKADDR_IN_LEN as u8;
        b[field::FAMILY] = AF_INET;
        b[field::PORT].copy_from_slice(&self.rule.to_ne_bytes());
        b[field::ADDR].copy_from_slice(&self.addr.octets());
        b[field::ZERO].copy_from_slice(&self.zero);
        b
    }

    /// The receiving interface's name, if the kernel recorded one (1..=7 bytes of UTF-8
    /// before the NUL). A name filling all 8 bytes has no NUL and is ignored, as the kernel
    /// itself does on reinjection.
    pub fn ifname(&self) -> Option<&str> {
        let end = self.zero.iter().position(|&b| b == 0)?;
        if end == 0 {
            return None;
        }
        std::str::from_utf8(&self.zero[..end]).ok()
    }

    /// Whether the kernel marked the packet as received (input path): `sin_addr` holds the
    /// receiving interface's IPv4 address. `false` means outbound — or inbound on an
    /// interface without IPv4, which is why the daemon is fed by `out` rules only.
    pub fn seen_inbound(&self) -> bool {
        !self.addr.is_unspecified()
    }
}

impl fmt::Debug for DivertAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DivertAddr")
            .field("rule", &self.rule)
            .field("addr", &self.addr)
            .field("ifname", &self.ifname())
            .finish()
    }
}

/// The sockaddr for `bind(2)` on a divert socket: only `sin_port` matters, and there it is
/// the divert port in **network** byte order (unlike the rule number on receive), matching
/// `ipfw ... divert PORT` / pf `divert-to ... port PORT`.
pub fn bind_addr(port: u16) -> [u8; SOCKADDR_IN_LEN] {
    let mut b = [0u8; SOCKADDR_IN_LEN];
    b[field::LEN] = SOCKADDR_IN_LEN as u8;
    b[field::FAMILY] = AF_INET;
    b[field::PORT].copy_from_slice(&port.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Rule 64003 in host order on a little-endian machine (amd64/arm64 FreeBSD), an
    /// inbound packet on `em0` whose first IPv4 address is 192.0.2.1. Built by hand from
    /// `divert_packet()`'s assignments.
    #[cfg(target_endian = "little")]
    static INBOUND_V4: [u8; 16] = [
        16, 2, 0x03, 0xfa, 192, 0, 2, 1, b'e', b'm', b'0', 0, 0, 0, 0, 0,
    ];

    /// An IPv6 packet received on `vtnet0` (no IPv4 address): sin_addr stays 0.
    static INBOUND_V6_NO_V4: [u8; 16] = [
        16, 2, 0x10, 0x27, 0, 0, 0, 0, b'v', b't', b'n', b'e', b't', b'0', 0, 0,
    ];

    /// An outbound packet of a locally originated connection: no interface, no address.
    static OUTBOUND_LOCAL: [u8; 16] = [16, 2, 0x10, 0x27, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

    #[cfg(target_endian = "little")]
    #[test]
    fn decode_inbound_v4() {
        let a = DivertAddr::decode(&INBOUND_V4).unwrap();
        assert_eq!(a.rule, 64003);
        assert_eq!(a.addr, Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(a.ifname(), Some("em0"));
        assert!(a.seen_inbound(), "an IPv4 address marks the input path");
        assert_eq!(a.encode(), INBOUND_V4);
    }

    #[test]
    fn rule_number_is_host_order() {
        let a = DivertAddr::decode(&OUTBOUND_LOCAL).unwrap();
        assert_eq!(a.rule, u16::from_ne_bytes([0x10, 0x27]));
    }

    #[test]
    fn bind_port_is_network_order() {
        let b = bind_addr(10004);
        assert_eq!(b, [16, 2, 0x27, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn outbound_without_interface() {
        let a = DivertAddr::decode(&OUTBOUND_LOCAL).unwrap();
        assert_eq!(a.ifname(), None);
        assert!(!a.seen_inbound());
        assert_eq!(a.encode(), OUTBOUND_LOCAL);
    }

    /// The IPv6 caveat that makes the rules `out` only: an inbound IPv6 packet on an
    /// interface without IPv4 looks exactly like an outbound one (ip_divert.c
    /// `divert_packet` sets `sin_addr` only from an IPv4 interface address), so echoing
    /// its sockaddr would reinject it on the output path.
    #[test]
    fn ipv6_inbound_without_ipv4_address_looks_outbound() {
        let a = DivertAddr::decode(&INBOUND_V6_NO_V4).unwrap();
        assert_eq!(a.ifname(), Some("vtnet0"));
        assert!(
            !a.seen_inbound(),
            "indistinguishable from an outbound packet"
        );
        assert_eq!(a.encode(), INBOUND_V6_NO_V4);
    }

    #[test]
    fn interface_name_edge_cases() {
        let with_zero = |zero: [u8; 8]| {
            let mut b = OUTBOUND_LOCAL;
            b[8..].copy_from_slice(&zero);
            DivertAddr::decode(&b).unwrap()
        };
        assert_eq!(with_zero(*b"igb1234\0").ifname(), Some("igb1234"));
        // No NUL within 8 bytes: the kernel ignores such a name too.
        assert_eq!(with_zero(*b"igb12345").ifname(), None);
        assert_eq!(with_zero([0xff, 0xfe, 0, 0, 0, 0, 0, 0]).ifname(), None);
        // Bytes after the NUL are kept for the echo but are not part of the name.
        let a = with_zero(*b"em0\0junk");
        assert_eq!(a.ifname(), Some("em0"));
        assert_eq!(&a.encode()[8..], b"em0\0junk");
    }

    #[test]
    fn truncated_and_foreign_sockaddrs_are_rejected() {
        assert_eq!(
            DivertAddr::decode(&OUTBOUND_LOCAL[..15]),
            Err(Error::Truncated { len: 15 })
        );
        assert_eq!(DivertAddr::decode(&[]), Err(Error::Truncated { len: 0 }));
        let mut v6 = OUTBOUND_LOCAL;
        v6[1] = 28; // AF_INET6
        assert_eq!(
            DivertAddr::decode(&v6),
            Err(Error::NotInet {
                len: 16,
                family: 28
            })
        );
        let mut short = OUTBOUND_LOCAL;
        short[0] = 8;
        assert!(matches!(
            DivertAddr::decode(&short),
            Err(Error::NotInet { .. })
        ));
        // Longer buffers (a sockaddr_storage) decode from their first 16 bytes.
        let mut long = [0u8; 128];
        long[..16].copy_from_slice(&OUTBOUND_LOCAL);
        assert!(DivertAddr::decode(&long).is_ok());
    }

    proptest! {
        /// Reinjection echoes the received sockaddr byte for byte.
        #[test]
        fn decode_encode_round_trip(port: u16, addr: [u8; 4], zero: [u8; 8]) {
            let mut b = [0u8; 16];
            b[0] = 16;
            b[1] = 2;
            b[2..4].copy_from_slice(&port.to_ne_bytes());
            b[4..8].copy_from_slice(&addr);
            b[8..].copy_from_slice(&zero);
            let a = DivertAddr::decode(&b).unwrap();
            prop_assert_eq!(a.encode(), b);
        }

        /// Any bytes decode or fail, never panic.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = DivertAddr::decode(&bytes);
        }
    }
}
