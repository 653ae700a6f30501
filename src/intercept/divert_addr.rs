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
//! # The IPv6 inbound caveat, and what we do about it
//! An inbound packet on an interface without an IPv4 address — typical for IPv6-only
//! links, the very case this daemon exists for — arrives with `sin_addr` 0.0.0.0. Echoing
//! that sockaddr reinjects the packet as *outbound*: it skips the input path (and the
//! filter's inbound rules, and delivery to a local server) and is routed out again.
//!
//! Handling: the operator diverts the two directions to **separate ports**
//! (`ipfw add divert 10004 tcp from any to any 21 in` / `... divert 10005 ... out`, as the
//! sample rulesets do), and each socket is told its [`DirectionHint`]. For a socket that
//! only ever sees inbound packets, [`DivertAddr::for_reinjection`] makes `sin_addr`
//! non-zero when the kernel left it 0 but named the interface: the kernel then finds the
//! interface by name and only needs the address to be non-zero. We use 0.0.0.1 as that
//! marker, an address no interface can own, so if the named interface has vanished the
//! fallback lookup by address fails cleanly (EADDRNOTAVAIL) instead of picking some other
//! interface. With [`DirectionHint::Auto`] (one port for both directions) the sockaddr is
//! echoed unchanged, which is exactly right for IPv4 and for interfaces with an IPv4
//! address; the daemon warns about the IPv6 case at startup.

use std::fmt;
use std::net::Ipv4Addr;

/// Size of FreeBSD's `struct sockaddr_in`.
pub const SOCKADDR_IN_LEN: usize = 16;
/// FreeBSD's AF_INET.
pub const AF_INET: u8 = 2;

/// The marker put in `sin_addr` to force inbound reinjection (see the module docs).
pub const INBOUND_MARKER: Ipv4Addr = Ipv4Addr::new(0, 0, 0, 1);

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

/// Which way the packets of one divert socket travel, as configured by the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DirectionHint {
    /// Both directions arrive on this socket: trust `sin_addr` and echo it unchanged.
    #[default]
    Auto,
    /// Only inbound packets arrive (`divert PORT ... in`): reinject as inbound.
    In,
    /// Only outbound packets arrive (`divert PORT ... out`): reinject as outbound.
    Out,
}

/// Which way one packet was going when the kernel diverted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Received on an interface (input path).
    In,
    /// Being sent (output path).
    Out,
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

    /// The packet's direction, given the socket's hint.
    pub fn direction(&self, hint: DirectionHint) -> Direction {
        match hint {
            DirectionHint::In => Direction::In,
            DirectionHint::Out => Direction::Out,
            DirectionHint::Auto if self.addr.is_unspecified() => Direction::Out,
            DirectionHint::Auto => Direction::In,
        }
    }

    /// The sockaddr to reinject with, so the packet continues after the diverting rule in
    /// the direction it was going (see the module docs for the IPv6 caveat).
    ///
    /// - `Auto`: unchanged.
    /// - `In`: unchanged if `sin_addr` is already set; else [`INBOUND_MARKER`] when the
    ///   interface is named (the kernel looks it up by name). Without a name there is
    ///   nothing to mark the input interface with, and the sockaddr stays as received.
    /// - `Out`: `sin_addr` 0.0.0.0, the rest unchanged.
    pub fn for_reinjection(&self, hint: DirectionHint) -> DivertAddr {
        let mut out = *self;
        match hint {
            DirectionHint::Auto => {}
            DirectionHint::In => {
                if self.addr.is_unspecified() && self.ifname().is_some() {
                    out.addr = INBOUND_MARKER;
                }
            }
            DirectionHint::Out => out.addr = Ipv4Addr::UNSPECIFIED,
        }
        out
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
        assert_eq!(a.direction(DirectionHint::Auto), Direction::In);
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
        assert_eq!(a.direction(DirectionHint::Auto), Direction::Out);
        for hint in [DirectionHint::Auto, DirectionHint::In, DirectionHint::Out] {
            assert_eq!(a.for_reinjection(hint).encode(), OUTBOUND_LOCAL, "{hint:?}");
        }
    }

    /// The IPv6 caveat: with `Auto` the packet would be reinjected outbound; a socket
    /// configured `In` marks it inbound and keeps the interface name.
    #[test]
    fn ipv6_inbound_without_ipv4_address() {
        let a = DivertAddr::decode(&INBOUND_V6_NO_V4).unwrap();
        assert_eq!(a.ifname(), Some("vtnet0"));
        assert_eq!(a.direction(DirectionHint::Auto), Direction::Out);
        assert_eq!(a.direction(DirectionHint::In), Direction::In);
        assert_eq!(
            a.for_reinjection(DirectionHint::Auto).encode(),
            INBOUND_V6_NO_V4
        );
        let r = a.for_reinjection(DirectionHint::In).encode();
        let mut want = INBOUND_V6_NO_V4;
        want[4..8].copy_from_slice(&[0, 0, 0, 1]);
        assert_eq!(r, want);
    }

    #[test]
    fn out_hint_clears_the_address_only() {
        let mut bytes = INBOUND_V6_NO_V4;
        bytes[4..8].copy_from_slice(&[192, 0, 2, 1]);
        let a = DivertAddr::decode(&bytes).unwrap();
        let r = a.for_reinjection(DirectionHint::Out);
        assert_eq!(r.addr, Ipv4Addr::UNSPECIFIED);
        assert_eq!((r.rule, r.zero), (a.rule, a.zero));
        // In with an address already set: unchanged.
        assert_eq!(a.for_reinjection(DirectionHint::In), a);
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
        assert_eq!(a.for_reinjection(DirectionHint::In).addr, INBOUND_MARKER);
        // No name: an In hint has no interface to mark the packet inbound on.
        let nameless = with_zero([0; 8]);
        assert_eq!(nameless.for_reinjection(DirectionHint::In), nameless);
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
            prop_assert_eq!(a.for_reinjection(DirectionHint::Auto).encode(), b);
        }

        /// Any bytes decode or fail, never panic.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = DivertAddr::decode(&bytes);
        }
    }
}
