//! Link layers of a capture: from a captured frame to the IP packet inside it.
//!
//! Pure functions over untrusted bytes: every length is checked before a slice is taken, and
//! nothing here panics. Link-type numbers are those of the tcpdump.org LINKTYPE registry
//! (the values pcap and pcapng files carry), not the platform's DLT_ values.

use std::fmt;

/// The link-layer header types `--replay` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    /// `LINKTYPE_NULL` (0): BSD loopback; a 4-byte address family in the capturing host's
    /// byte order.
    Null,
    /// `LINKTYPE_ETHERNET` (1): Ethernet II, with up to two 802.1Q/802.1ad tags.
    Ethernet,
    /// `LINKTYPE_RAW` (101): the IP header first; its version nibble says which.
    Raw,
    /// `LINKTYPE_LOOP` (108): OpenBSD loopback; the address family in network byte order.
    Loop,
    /// `LINKTYPE_LINUX_SLL` (113): Linux cooked capture v1 (`tcpdump -i any` before libpcap
    /// 1.10, or `-y LINUX_SLL`).
    LinuxSll,
    /// `LINKTYPE_IPV4` (228): raw IPv4.
    Ipv4,
    /// `LINKTYPE_IPV6` (229): raw IPv6.
    Ipv6,
    /// `LINKTYPE_LINUX_SLL2` (276): Linux cooked capture v2 (`tcpdump -i any` since
    /// libpcap 1.10).
    LinuxSll2,
}

impl LinkType {
    /// The link type with registry number `code`, if `--replay` reads it.
    pub fn from_code(code: u32) -> Option<LinkType> {
        Some(match code {
            0 => LinkType::Null,
            1 => LinkType::Ethernet,
            101 => LinkType::Raw,
            108 => LinkType::Loop,
            113 => LinkType::LinuxSll,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            276 => LinkType::LinuxSll2,
            _ => return None,
        })
    }

    /// Its registry number.
    pub fn code(self) -> u32 {
        match self {
            LinkType::Null => 0,
            LinkType::Ethernet => 1,
            LinkType::Raw => 101,
            LinkType::Loop => 108,
            LinkType::LinuxSll => 113,
            LinkType::Ipv4 => 228,
            LinkType::Ipv6 => 229,
            LinkType::LinuxSll2 => 276,
        }
    }

    /// Its registry name, as tcpdump's `-y` and `-L` print it.
    pub fn name(self) -> &'static str {
        match self {
            LinkType::Null => "NULL",
            LinkType::Ethernet => "EN10MB",
            LinkType::Raw => "RAW",
            LinkType::Loop => "LOOP",
            LinkType::LinuxSll => "LINUX_SLL",
            LinkType::Ipv4 => "IPV4",
            LinkType::Ipv6 => "IPV6",
            LinkType::LinuxSll2 => "LINUX_SLL2",
        }
    }

    /// What the replay accepts, for error messages.
    pub const SUPPORTED: &'static str = "EN10MB (1), LINUX_SLL (113), LINUX_SLL2 (276), \
                                         RAW (101), IPV4 (228), IPV6 (229), NULL (0), LOOP (108)";
}

impl fmt::Display for LinkType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

/// Why a frame yields no IP packet. Such frames are counted, never an error: a capture
/// holds ARP, LLDP and the like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Shorter than its link-layer header.
    Short,
    /// Carries something other than IPv4 or IPv6.
    NotIp,
}

/// EtherType of IPv4 (IEEE 802 numbers, as in RFC 894).
const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of IPv6 (RFC 2464).
const ETHERTYPE_IPV6: u16 = 0x86dd;
/// EtherTypes of a VLAN tag: 802.1Q, 802.1ad, and the pre-standard QinQ value.
const ETHERTYPE_VLAN: [u16; 3] = [0x8100, 0x88a8, 0x9100];
/// At most this many VLAN tags are stepped over.
const MAX_VLAN_TAGS: usize = 2;

/// BSD address families for IPv4 and IPv6 in a NULL/LOOP header: AF_INET is 2 everywhere;
/// AF_INET6 is 24 (NetBSD, OpenBSD), 28 (FreeBSD, DragonFly) or 30 (macOS), which is why
/// libpcap accepts all three.
const AF_INET: u32 = 2;
const AF_INET6: [u32; 3] = [24, 28, 30];

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// The IP packet after an EtherType, or why there is none.
fn by_ethertype(ethertype: u16, rest: &[u8]) -> Result<&[u8], Skip> {
    match ethertype {
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => Ok(rest),
        _ => Err(Skip::NotIp),
    }
}

/// The IP packet after a BSD address family, or why there is none.
fn by_family(family: u32, rest: &[u8]) -> Result<&[u8], Skip> {
    if family == AF_INET || AF_INET6.contains(&family) {
        Ok(rest)
    } else {
        Err(Skip::NotIp)
    }
}

/// The IP packet inside `frame`, a frame of link type `link`.
///
/// Only the link-layer header is removed: whatever follows (the IP header, or garbage) is
/// the engine's to judge, and trailing bytes (Ethernet padding, a frame check sequence) are
/// left for the IP length fields to cut off.
///
/// # Errors
/// [`Skip`] when the frame is too short for its link-layer header or carries no IP.
pub fn ip_packet(link: LinkType, frame: &[u8]) -> Result<&[u8], Skip> {
    match link {
        LinkType::Ethernet => {
            // Destination and source MAC, then the EtherType (IEEE 802.3 clause 3).
            let mut at = 12;
            let mut ethertype = be16(frame, at).ok_or(Skip::Short)?;
            for _ in 0..MAX_VLAN_TAGS {
                if !ETHERTYPE_VLAN.contains(&ethertype) {
                    break;
                }
                // A tag: 2 bytes of TCI, then the next EtherType.
                at += 4;
                ethertype = be16(frame, at).ok_or(Skip::Short)?;
            }
            by_ethertype(ethertype, frame.get(at + 2..).ok_or(Skip::Short)?)
        }
        LinkType::LinuxSll => {
            // Packet type, ARPHRD type, address length, 8 address bytes, protocol (16 bytes).
            let ethertype = be16(frame, 14).ok_or(Skip::Short)?;
            by_ethertype(ethertype, frame.get(16..).ok_or(Skip::Short)?)
        }
        LinkType::LinuxSll2 => {
            // Protocol, reserved, interface index, ARPHRD type, packet type, address
            // length, 8 address bytes (20 bytes).
            let ethertype = be16(frame, 0).ok_or(Skip::Short)?;
            by_ethertype(ethertype, frame.get(20..).ok_or(Skip::Short)?)
        }
        LinkType::Null => {
            let b = frame.get(..4).ok_or(Skip::Short)?;
            let raw = [b[0], b[1], b[2], b[3]];
            // Host byte order of the machine that captured: try both.
            let le = u32::from_le_bytes(raw);
            let family = if le == AF_INET || AF_INET6.contains(&le) {
                le
            } else {
                u32::from_be_bytes(raw)
            };
            by_family(family, &frame[4..])
        }
        LinkType::Loop => {
            let b = frame.get(..4).ok_or(Skip::Short)?;
            by_family(u32::from_be_bytes([b[0], b[1], b[2], b[3]]), &frame[4..])
        }
        LinkType::Raw => match frame.first().map(|b| b >> 4) {
            Some(4 | 6) => Ok(frame),
            Some(_) => Err(Skip::NotIp),
            None => Err(Skip::Short),
        },
        LinkType::Ipv4 | LinkType::Ipv6 => {
            if frame.is_empty() {
                Err(Skip::Short)
            } else {
                Ok(frame)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first bytes of an IPv4 and an IPv6 header, enough to tell them apart.
    const V4: &[u8] = &[0x45, 0, 0, 20];
    const V6: &[u8] = &[0x60, 0, 0, 0];

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    const MACS: &[u8] = &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

    #[test]
    fn codes_round_trip_and_unknown_ones_are_refused() {
        for code in [0, 1, 101, 108, 113, 228, 229, 276] {
            let link = LinkType::from_code(code).expect("supported");
            assert_eq!(link.code(), code);
            assert!(LinkType::SUPPORTED.contains(&format!("{} ({code})", link.name())));
        }
        for code in [2, 12, 14, 105, 127, 147, 220, 65535] {
            assert_eq!(LinkType::from_code(code), None, "{code}");
        }
        assert_eq!(LinkType::LinuxSll2.to_string(), "LINUX_SLL2 (276)");
    }

    #[test]
    fn ethernet_carries_ipv4_and_ipv6() {
        let frame = cat(&[MACS, &[0x08, 0x00], V4]);
        assert_eq!(ip_packet(LinkType::Ethernet, &frame), Ok(V4));
        let frame = cat(&[MACS, &[0x86, 0xdd], V6]);
        assert_eq!(ip_packet(LinkType::Ethernet, &frame), Ok(V6));
    }

    #[test]
    fn ethernet_vlan_tags_are_stepped_over() {
        let frame = cat(&[MACS, &[0x81, 0x00, 0x00, 0x05, 0x86, 0xdd], V6]);
        assert_eq!(ip_packet(LinkType::Ethernet, &frame), Ok(V6));
        // QinQ: an 802.1ad tag, then an 802.1Q tag.
        let frame = cat(&[
            MACS,
            &[0x88, 0xa8, 0x00, 0x07, 0x81, 0x00, 0x00, 0x05, 0x08, 0x00],
            V4,
        ]);
        assert_eq!(ip_packet(LinkType::Ethernet, &frame), Ok(V4));
        // A third tag is not looked into.
        let frame = cat(&[
            MACS,
            &[
                0x81, 0x00, 0, 1, 0x81, 0x00, 0, 2, 0x81, 0x00, 0, 3, 0x08, 0x00,
            ],
            V4,
        ]);
        assert_eq!(ip_packet(LinkType::Ethernet, &frame), Err(Skip::NotIp));
    }

    #[test]
    fn ethernet_without_ip_or_too_short_is_skipped() {
        let arp = cat(&[MACS, &[0x08, 0x06], &[0; 28]]);
        assert_eq!(ip_packet(LinkType::Ethernet, &arp), Err(Skip::NotIp));
        // 802.3 length field instead of an EtherType (LLC frames, e.g. STP).
        let llc = cat(&[MACS, &[0x00, 0x26], &[0x42; 38]]);
        assert_eq!(ip_packet(LinkType::Ethernet, &llc), Err(Skip::NotIp));
        assert_eq!(ip_packet(LinkType::Ethernet, &MACS[..11]), Err(Skip::Short));
        assert_eq!(ip_packet(LinkType::Ethernet, &[]), Err(Skip::Short));
        let tag_cut = cat(&[MACS, &[0x81, 0x00, 0x00]]);
        assert_eq!(ip_packet(LinkType::Ethernet, &tag_cut), Err(Skip::Short));
        // An EtherType with nothing behind it is still IP: the engine finds it truncated.
        let empty = cat(&[MACS, &[0x08, 0x00]]);
        assert_eq!(ip_packet(LinkType::Ethernet, &empty), Ok(&[][..]));
    }

    #[test]
    fn linux_cooked_v1() {
        // Incoming (0), ARPHRD_ETHER (1), 6 address bytes, 2 padding, protocol.
        let head: &[u8] = &[0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0];
        let frame = cat(&[head, &[0x86, 0xdd], V6]);
        assert_eq!(ip_packet(LinkType::LinuxSll, &frame), Ok(V6));
        let frame = cat(&[head, &[0x08, 0x00], V4]);
        assert_eq!(ip_packet(LinkType::LinuxSll, &frame), Ok(V4));
        let frame = cat(&[head, &[0x08, 0x06]]);
        assert_eq!(ip_packet(LinkType::LinuxSll, &frame), Err(Skip::NotIp));
        assert_eq!(
            ip_packet(LinkType::LinuxSll, &frame[..15]),
            Err(Skip::Short)
        );
    }

    #[test]
    fn linux_cooked_v2() {
        // Protocol, reserved, ifindex 2, ARPHRD_ETHER, outgoing (4), 6 address bytes.
        let tail: &[u8] = &[0, 0, 0, 0, 0, 2, 0, 1, 4, 6, 1, 2, 3, 4, 5, 6, 0, 0];
        let frame = cat(&[&[0x08, 0x00], tail, V4]);
        assert_eq!(ip_packet(LinkType::LinuxSll2, &frame), Ok(V4));
        let frame = cat(&[&[0x86, 0xdd], tail, V6]);
        assert_eq!(ip_packet(LinkType::LinuxSll2, &frame), Ok(V6));
        let frame = cat(&[&[0x88, 0xcc], tail]);
        assert_eq!(ip_packet(LinkType::LinuxSll2, &frame), Err(Skip::NotIp));
        assert_eq!(
            ip_packet(LinkType::LinuxSll2, &[0x08, 0x00]),
            Err(Skip::Short)
        );
    }

    #[test]
    fn bsd_null_in_either_byte_order() {
        // Little-endian host (amd64): AF_INET = 2, FreeBSD's AF_INET6 = 28.
        assert_eq!(
            ip_packet(LinkType::Null, &cat(&[&[2, 0, 0, 0], V4])),
            Ok(V4)
        );
        assert_eq!(
            ip_packet(LinkType::Null, &cat(&[&[28, 0, 0, 0], V6])),
            Ok(V6)
        );
        // Big-endian host: OpenBSD's 24, macOS's 30.
        assert_eq!(
            ip_packet(LinkType::Null, &cat(&[&[0, 0, 0, 24], V6])),
            Ok(V6)
        );
        assert_eq!(
            ip_packet(LinkType::Null, &cat(&[&[0, 0, 0, 30], V6])),
            Ok(V6)
        );
        assert_eq!(
            ip_packet(LinkType::Null, &cat(&[&[7, 0, 0, 0], V4])),
            Err(Skip::NotIp)
        );
        assert_eq!(ip_packet(LinkType::Null, &[2, 0, 0]), Err(Skip::Short));
    }

    #[test]
    fn openbsd_loop_is_network_order_only() {
        assert_eq!(
            ip_packet(LinkType::Loop, &cat(&[&[0, 0, 0, 2], V4])),
            Ok(V4)
        );
        assert_eq!(
            ip_packet(LinkType::Loop, &cat(&[&[0, 0, 0, 24], V6])),
            Ok(V6)
        );
        assert_eq!(
            ip_packet(LinkType::Loop, &cat(&[&[2, 0, 0, 0], V4])),
            Err(Skip::NotIp)
        );
        assert_eq!(ip_packet(LinkType::Loop, &[]), Err(Skip::Short));
    }

    #[test]
    fn raw_ip_goes_by_the_version_nibble() {
        assert_eq!(ip_packet(LinkType::Raw, V4), Ok(V4));
        assert_eq!(ip_packet(LinkType::Raw, V6), Ok(V6));
        assert_eq!(ip_packet(LinkType::Raw, &[0x50, 0]), Err(Skip::NotIp));
        assert_eq!(ip_packet(LinkType::Raw, &[]), Err(Skip::Short));
        assert_eq!(ip_packet(LinkType::Ipv4, V4), Ok(V4));
        assert_eq!(ip_packet(LinkType::Ipv6, V6), Ok(V6));
        assert_eq!(ip_packet(LinkType::Ipv6, &[]), Err(Skip::Short));
    }
}
