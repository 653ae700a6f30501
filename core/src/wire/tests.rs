//! One test per edge case. Packets are built at test time with etherparse's `PacketBuilder`
//! (a dev-dependency with default features), which also fills in every length field and the
//! TCP checksum, so a test that wants a broken packet breaks one field by hand afterwards.
//! `EPRT_V6_BYTES` is a fixed fixture, pinned against the builder by
//! `eprt_fixture_matches_builder`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{
    IpAuthHeader, IpFragOffset, IpHeaders, IpNumber, Ipv4Extensions, Ipv4Header, Ipv4Options,
    Ipv6Extensions, Ipv6FragmentHeader, Ipv6Header, Ipv6RawExtHeader, Ipv6RoutingExtensions,
    PacketBuilder, TcpOptionElement, TcpSlice,
};
use proptest::prelude::*;

use super::{parse, Error, Layer, Segment, TcpFlags};

const CLIENT4: [u8; 4] = [192, 0, 2, 10];
const SERVER4: [u8; 4] = [192, 0, 2, 21];
/// 2001:db8::10
const CLIENT6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
/// 2001:db8::21
const SERVER6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x21,
];

const EPRT: &[u8] = b"EPRT |2|2001:db8::10|50000|\r\n";

/// IPv6 2001:db8::10 -> 2001:db8::21, TCP 50000 -> 21, seq 1000, ack 2000, PSH+ACK,
/// window 512, payload "EPRT |2|2001:db8::10|50000|\r\n". Made with
/// `PacketBuilder::ipv6(CLIENT6, SERVER6, 64).tcp(50000, 21, 1000, 512).ack(2000).psh()`
/// (see `eprt_v6`) and printed as hex.
static EPRT_V6_BYTES: [u8; 89] = [
    0x60, 0x00, 0x00, 0x00, 0x00, 0x31, 0x06, 0x40, // version, payload len 49, TCP, hop 64
    0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, // src 2001:db8::10
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, //
    0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, // dst 2001:db8::21
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x21, //
    0xc3, 0x50, 0x00, 0x15, 0x00, 0x00, 0x03, 0xe8, // ports 50000 > 21, seq 1000
    0x00, 0x00, 0x07, 0xd0, 0x50, 0x18, 0x02, 0x00, // ack 2000, offset 5, PSH+ACK, win 512
    0xcb, 0x46, 0x00, 0x00, // checksum, urgent pointer
    b'E', b'P', b'R', b'T', b' ', b'|', b'2', b'|', b'2', b'0', b'0', b'1', b':', b'd', b'b', b'8',
    b':', b':', b'1', b'0', b'|', b'5', b'0', b'0', b'0', b'0', b'|', b'\r', b'\n',
];

fn eprt_v6() -> Vec<u8> {
    let builder = PacketBuilder::ipv6(CLIENT6, SERVER6, 64)
        .tcp(50000, 21, 1000, 512)
        .ack(2000)
        .psh();
    let mut out = Vec::new();
    builder.write(&mut out, EPRT).unwrap();
    out
}

/// IPv4 192.0.2.10:50000 -> 192.0.2.21:21, seq 1000, ACK, carrying `payload`.
fn tcp_v4(payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ipv4(CLIENT4, SERVER4, 64)
        .tcp(50000, 21, 1000, 512)
        .ack(2000);
    let mut out = Vec::new();
    builder.write(&mut out, payload).unwrap();
    out
}

/// A TCP packet 2001:db8::10.50000 > 2001:db8::21.21 behind the given extension headers.
fn tcp_v6_with(exts: Ipv6Extensions, payload: &[u8]) -> Vec<u8> {
    let header = Ipv6Header {
        hop_limit: 64,
        source: CLIENT6,
        destination: SERVER6,
        ..Default::default()
    };
    let builder = PacketBuilder::ip(IpHeaders::Ipv6(header, exts))
        .tcp(50000, 21, 1000, 512)
        .ack(2000);
    let mut out = Vec::new();
    builder.write(&mut out, payload).unwrap();
    out
}

/// The same behind an IPv4 header the caller shaped (options, fragment bits, AH).
fn tcp_v4_with(header: Ipv4Header, exts: Ipv4Extensions, payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ip(IpHeaders::Ipv4(header, exts))
        .tcp(50000, 21, 1000, 512)
        .ack(2000);
    let mut out = Vec::new();
    builder.write(&mut out, payload).unwrap();
    out
}

fn ipv4_header() -> Ipv4Header {
    Ipv4Header::new(0, 64, IpNumber::TCP, CLIENT4, SERVER4).unwrap()
}

fn fragment(offset: u16, more: bool) -> Ipv6FragmentHeader {
    Ipv6FragmentHeader {
        // The builder overwrites next_header to chain the headers.
        next_header: IpNumber::TCP,
        fragment_offset: IpFragOffset::try_new(offset).unwrap(),
        more_fragments: more,
        identification: 0x1234_5678,
    }
}

/// A 8-byte Hop-by-Hop or Destination Options header holding one PadN option.
fn pad_options() -> Ipv6RawExtHeader {
    Ipv6RawExtHeader::new_raw(IpNumber::TCP, &[1, 4, 0, 0, 0, 0]).unwrap()
}

/// Offset of the TCP header in an IPv4 packet without options.
const V4_TCP: usize = 20;
/// Offset of the TCP header in an IPv6 packet without extension headers.
const V6_TCP: usize = 40;

fn v4(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

fn v6(a: [u8; 16]) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(a))
}

#[test]
fn eprt_fixture_matches_builder() {
    assert_eq!(eprt_v6(), EPRT_V6_BYTES);
}

#[test]
fn payload_of_eprt_over_v6() {
    let seg = parse(&EPRT_V6_BYTES).unwrap();
    assert_eq!(seg.src, v6(CLIENT6));
    assert_eq!(seg.dst, v6(SERVER6));
    assert_eq!((seg.src_port, seg.dst_port), (50000, 21));
    assert_eq!(seg.seq, 1000);
    assert_eq!(
        seg.flags,
        TcpFlags {
            ack: true,
            ..TcpFlags::default()
        }
    );
    assert_eq!(seg.payload, EPRT);
    assert_eq!(seg.tcp_bytes, &EPRT_V6_BYTES[V6_TCP..]);
    assert!(seg.checksum_valid());
}

#[test]
fn plain_ipv4() {
    let bytes = tcp_v4(b"PORT 192,0,2,10,195,80\r\n");
    let seg = parse(&bytes).unwrap();
    assert_eq!((seg.src, seg.dst), (v4(CLIENT4), v4(SERVER4)));
    assert_eq!(seg.payload, b"PORT 192,0,2,10,195,80\r\n");
    assert_eq!(seg.tcp_bytes, &bytes[V4_TCP..]);
}

#[test]
fn ipv4_with_options() {
    let mut header = ipv4_header();
    // Record Route (RFC 791 §3.1): type 7, length 7, pointer 4, one empty slot, then EOL.
    header.options = Ipv4Options::try_from(&[7u8, 7, 4, 0, 0, 0, 0, 0][..]).unwrap();
    let bytes = tcp_v4_with(header, Ipv4Extensions::default(), b"PASV\r\n");
    assert_eq!(bytes[0], 0x47, "IHL 7");
    let seg = parse(&bytes).unwrap();
    assert_eq!(seg.payload, b"PASV\r\n");
    assert_eq!(seg.tcp_bytes, &bytes[28..]);
    assert!(seg.checksum_valid());
}

#[test]
fn tcp_with_options() {
    let builder = PacketBuilder::ipv4(CLIENT4, SERVER4, 64)
        .tcp(50000, 21, 7, 512)
        .syn()
        .options(&[
            TcpOptionElement::MaximumSegmentSize(1460),
            TcpOptionElement::Noop,
            TcpOptionElement::Noop,
            TcpOptionElement::Timestamp(1, 2),
        ])
        .unwrap();
    let mut bytes = Vec::new();
    builder.write(&mut bytes, &[]).unwrap();
    let seg = parse(&bytes).unwrap();
    assert_eq!(seg.seq, 7);
    assert_eq!(
        seg.flags,
        TcpFlags {
            syn: true,
            ..TcpFlags::default()
        }
    );
    assert_eq!(seg.payload, b"");
    assert_eq!(seg.tcp_bytes.len(), 20 + 16);
    assert!(seg.checksum_valid());
}

#[test]
fn fin_and_rst_flags() {
    let builder = PacketBuilder::ipv4(CLIENT4, SERVER4, 64)
        .tcp(50000, 21, 7, 512)
        .fin()
        .rst()
        .ack(1);
    let mut bytes = Vec::new();
    builder.write(&mut bytes, &[]).unwrap();
    let flags = parse(&bytes).unwrap().flags;
    assert_eq!(
        flags,
        TcpFlags {
            syn: false,
            ack: true,
            fin: true,
            rst: true
        }
    );
}

#[test]
fn ipv4_auth_header() {
    let mut header = ipv4_header();
    header.protocol = IpNumber::AUTHENTICATION_HEADER;
    let auth = IpAuthHeader::new(IpNumber::TCP, 1, 1, &[0; 12]).unwrap();
    let bytes = tcp_v4_with(header, Ipv4Extensions { auth: Some(auth) }, b"EPSV\r\n");
    let seg = parse(&bytes).unwrap();
    assert_eq!(seg.payload, b"EPSV\r\n");
    assert!(seg.checksum_valid());
}

/// An atomic fragment (offset 0, M clear, RFC 6946) is a whole packet.
#[test]
fn ipv6_hop_by_hop_fragment_tcp() {
    let exts = Ipv6Extensions {
        hop_by_hop_options: Some(pad_options()),
        fragment: Some(fragment(0, false)),
        ..Default::default()
    };
    let bytes = tcp_v6_with(exts, EPRT);
    assert_eq!(bytes[6], 0, "next header: hop-by-hop");
    let seg = parse(&bytes).unwrap();
    assert_eq!(seg.payload, EPRT);
    assert_eq!(seg.tcp_bytes, &bytes[V6_TCP + 16..]);
    assert!(seg.checksum_valid());
}

#[test]
fn ipv6_routing_and_destopts() {
    // Routing type 4 (RFC 8754), Segments Left 0: the destination is final, so the checksum
    // still uses it. Followed by Destination Options for the final destination.
    let routing = Ipv6RawExtHeader::new_raw(IpNumber::TCP, &[4, 0, 0, 0, 0, 0]).unwrap();
    let exts = Ipv6Extensions {
        destination_options: Some(pad_options()),
        routing: Some(Ipv6RoutingExtensions {
            routing,
            final_destination_options: Some(pad_options()),
        }),
        ..Default::default()
    };
    let bytes = tcp_v6_with(exts, b"227 ok\r\n");
    assert_eq!(bytes[6], 60, "next header: destination options");
    let seg = parse(&bytes).unwrap();
    assert_eq!(seg.payload, b"227 ok\r\n");
    assert_eq!(seg.tcp_bytes, &bytes[V6_TCP + 24..]);
    assert!(seg.checksum_valid());
}

#[test]
fn ipv6_auth_header() {
    let auth = IpAuthHeader::new(IpNumber::TCP, 1, 1, &[0; 12]).unwrap();
    let exts = Ipv6Extensions {
        auth: Some(auth),
        ..Default::default()
    };
    let bytes = tcp_v6_with(exts, b"229 (|||50000|)\r\n");
    let seg = parse(&bytes).unwrap();
    assert_eq!(seg.payload, b"229 (|||50000|)\r\n");
    assert!(seg.checksum_valid());
}

#[test]
fn non_first_fragment_is_fragment() {
    let mut header = ipv4_header();
    header.fragment_offset = IpFragOffset::try_new(100).unwrap();
    let bytes = tcp_v4_with(header, Ipv4Extensions::default(), b"x");
    assert_eq!(parse(&bytes), Err(Error::Fragment));

    let exts = Ipv6Extensions {
        fragment: Some(fragment(100, false)),
        ..Default::default()
    };
    assert_eq!(parse(&tcp_v6_with(exts, b"x")), Err(Error::Fragment));
}

#[test]
fn first_fragment_is_fragment() {
    let mut header = ipv4_header();
    header.more_fragments = true;
    let bytes = tcp_v4_with(header, Ipv4Extensions::default(), b"x");
    assert_eq!(parse(&bytes), Err(Error::Fragment));

    let exts = Ipv6Extensions {
        fragment: Some(fragment(0, true)),
        ..Default::default()
    };
    assert_eq!(parse(&tcp_v6_with(exts, b"x")), Err(Error::Fragment));
}

/// RFC 8200 §4.5: behind the Fragment header of a non-first fragment there is only payload,
/// even when its Next Header names an extension header. Those bytes must not be parsed.
#[test]
fn non_first_fragment_not_read_past_fragment_header() {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&[0x60, 0, 0, 0, 0, 10, 44, 64]); // payload len 10, next: Fragment
    bytes.extend_from_slice(&CLIENT6);
    bytes.extend_from_slice(&SERVER6);
    bytes.extend_from_slice(&[60, 0, 0x03, 0x20, 0, 0, 0, 1]); // next DestOpts, offset 100
    bytes.extend_from_slice(&[0xff, 0xff]); // two bytes of someone's payload
    assert_eq!(parse(&bytes), Err(Error::Fragment));

    // Same for IPv4 with Protocol = AH: the data is not an AH.
    let mut header = ipv4_header();
    header.protocol = IpNumber::AUTHENTICATION_HEADER;
    header.fragment_offset = IpFragOffset::try_new(100).unwrap();
    header.set_payload_len(2).unwrap();
    let mut bytes = header.to_bytes().to_vec();
    bytes.extend_from_slice(&[0, 0]);
    assert_eq!(parse(&bytes), Err(Error::Fragment));
}

#[test]
fn hop_by_hop_not_first() {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&[0x60, 0, 0, 0, 0, 16, 60, 64]); // payload len 16, DestOpts
    bytes.extend_from_slice(&CLIENT6);
    bytes.extend_from_slice(&SERVER6);
    bytes.extend_from_slice(&[0, 0, 1, 4, 0, 0, 0, 0]); // DestOpts -> Hop-by-Hop
    bytes.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]); // Hop-by-Hop -> TCP
    assert_eq!(parse(&bytes), Err(Error::HopByHopNotFirst));
}

#[test]
fn auth_header_zero_length() {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&[0x60, 0, 0, 0, 0, 12, 51, 64]); // payload len 12, AH
    bytes.extend_from_slice(&CLIENT6);
    bytes.extend_from_slice(&SERVER6);
    bytes.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1]); // Payload Len 0
    assert_eq!(parse(&bytes), Err(Error::AuthHeaderLength));
}

#[test]
fn truncated_ip_header() {
    let bytes = tcp_v4(b"");
    assert_eq!(
        parse(&bytes[..10]),
        Err(Error::Truncated {
            layer: Layer::Ipv4,
            needed: 20,
            available: 10
        })
    );
    let bytes = eprt_v6();
    assert_eq!(
        parse(&bytes[..39]),
        Err(Error::Truncated {
            layer: Layer::Ipv6,
            needed: 40,
            available: 39
        })
    );
}

#[test]
fn ipv4_options_cut_off() {
    let mut header = ipv4_header();
    header.options = Ipv4Options::try_from(&[1u8, 1, 1, 1][..]).unwrap();
    let bytes = tcp_v4_with(header, Ipv4Extensions::default(), b"");
    assert_eq!(
        parse(&bytes[..22]),
        Err(Error::Truncated {
            layer: Layer::Ipv4,
            needed: 24,
            available: 22
        })
    );
}

/// The capture holds less than Total Length / Payload Length announce (e.g. an NFQUEUE copy
/// range that is too small).
#[test]
fn packet_shorter_than_length_field() {
    let bytes = tcp_v4(b"USER anonymous\r\n");
    assert_eq!(
        parse(&bytes[..bytes.len() - 1]),
        Err(Error::Truncated {
            layer: Layer::Ipv4,
            needed: bytes.len(),
            available: bytes.len() - 1
        })
    );
    let bytes = eprt_v6();
    assert_eq!(
        parse(&bytes[..60]),
        Err(Error::Truncated {
            layer: Layer::Ipv6,
            needed: bytes.len(),
            available: 60
        })
    );
}

#[test]
fn truncated_ext_header() {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&[0x60, 0, 0, 0, 0, 4, 0, 64]); // payload len 4, Hop-by-Hop
    bytes.extend_from_slice(&CLIENT6);
    bytes.extend_from_slice(&SERVER6);
    bytes.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]); // 8 bytes, only 4 counted
    assert_eq!(
        parse(&bytes),
        Err(Error::Truncated {
            layer: Layer::Ipv6Ext,
            needed: 8,
            available: 4
        })
    );
}

/// The IP length field says the TCP header is cut short, whatever the buffer holds.
#[test]
fn truncated_tcp_header() {
    let mut bytes = tcp_v4(b"");
    bytes[2..4].copy_from_slice(&30u16.to_be_bytes()); // Total Length 30: 10 bytes of TCP
    assert_eq!(
        parse(&bytes),
        Err(Error::Truncated {
            layer: Layer::Tcp,
            needed: 20,
            available: 10
        })
    );
}

#[test]
fn tcp_data_offset_too_small() {
    let mut bytes = tcp_v4(b"NOOP\r\n");
    bytes[V4_TCP + 12] = 4 << 4;
    assert_eq!(parse(&bytes), Err(Error::TcpDataOffset { data_offset: 4 }));
}

#[test]
fn tcp_data_offset_past_end() {
    let mut bytes = tcp_v4(b"NOOP\r\n"); // 26 bytes of TCP
    bytes[V4_TCP + 12] = 15 << 4; // header of 60 bytes
    assert_eq!(
        parse(&bytes),
        Err(Error::Truncated {
            layer: Layer::Tcp,
            needed: 60,
            available: 26
        })
    );
}

#[test]
fn total_length_shorter_than_header() {
    let mut bytes = tcp_v4(b"");
    bytes[2..4].copy_from_slice(&12u16.to_be_bytes());
    assert_eq!(
        parse(&bytes),
        Err(Error::Ipv4TotalLength {
            total_len: 12,
            header_len: 20
        })
    );
}

#[test]
fn ipv4_ihl_too_small() {
    let mut bytes = tcp_v4(b"");
    bytes[0] = 0x44;
    assert_eq!(parse(&bytes), Err(Error::Ipv4HeaderLength { ihl: 4 }));
}

#[test]
fn udp_is_not_tcp() {
    let builder = PacketBuilder::ipv4(CLIENT4, SERVER4, 64).udp(53, 53);
    let mut bytes = Vec::new();
    builder.write(&mut bytes, b"dns").unwrap();
    assert_eq!(parse(&bytes), Err(Error::NotTcp { protocol: 17 }));

    let builder = PacketBuilder::ipv6(CLIENT6, SERVER6, 64).udp(53, 53);
    let mut bytes = Vec::new();
    builder.write(&mut bytes, b"dns").unwrap();
    assert_eq!(parse(&bytes), Err(Error::NotTcp { protocol: 17 }));
}

/// ESP (RFC 4303) ends the chain: what follows is ciphertext.
#[test]
fn esp_is_not_tcp() {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&[0x60, 0, 0, 0, 0, 8, 0, 64]); // Hop-by-Hop first
    bytes.extend_from_slice(&CLIENT6);
    bytes.extend_from_slice(&SERVER6);
    bytes.extend_from_slice(&[50, 0, 1, 4, 0, 0, 0, 0]); // -> ESP
    assert_eq!(parse(&bytes), Err(Error::NotTcp { protocol: 50 }));

    let mut header = ipv4_header();
    header.protocol = IpNumber::ENCAPSULATING_SECURITY_PAYLOAD;
    header.set_payload_len(8).unwrap();
    let mut bytes = header.to_bytes().to_vec();
    bytes.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
    assert_eq!(parse(&bytes), Err(Error::NotTcp { protocol: 50 }));
}

/// In IPv4 only AH is walked; an IPv6 extension-header number there is just a protocol.
#[test]
fn ipv6_ext_number_in_ipv4_is_not_tcp() {
    let mut header = ipv4_header();
    header.protocol = IpNumber::IPV6_ROUTE_HEADER;
    header.set_payload_len(8).unwrap();
    let mut bytes = header.to_bytes().to_vec();
    bytes.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(parse(&bytes), Err(Error::NotTcp { protocol: 43 }));
}

/// Ethernet pads frames to 60 bytes; the padding is not TCP payload.
#[test]
fn trailing_padding_ignored() {
    let mut bytes = tcp_v4(b"A");
    let len = bytes.len();
    bytes.resize(len + 5, 0xee);
    let seg = parse(&bytes).unwrap();
    assert_eq!(seg.payload, b"A");
    assert_eq!(seg.tcp_bytes, &bytes[V4_TCP..len]);
    assert!(seg.checksum_valid());

    let mut bytes = eprt_v6();
    let len = bytes.len();
    bytes.extend_from_slice(&[0xee; 7]);
    let seg = parse(&bytes).unwrap();
    assert_eq!(seg.payload, EPRT);
    assert_eq!(seg.tcp_bytes, &bytes[V6_TCP..len]);
    assert!(seg.checksum_valid());
}

/// A Payload Length of 0 is not read as a jumbogram (RFC 2675): whatever follows the fixed
/// header is padding, so there is no room for TCP.
#[test]
fn ipv6_zero_payload_length_is_not_jumbogram() {
    let mut bytes = eprt_v6();
    bytes[4..6].copy_from_slice(&[0, 0]);
    assert_eq!(
        parse(&bytes),
        Err(Error::Truncated {
            layer: Layer::Tcp,
            needed: 20,
            available: 0
        })
    );
}

#[test]
fn empty_input() {
    assert_eq!(
        parse(&[]),
        Err(Error::Truncated {
            layer: Layer::Ip,
            needed: 1,
            available: 0
        })
    );
}

#[test]
fn version_nibble_bogus() {
    for version in [0u8, 5, 15] {
        let mut bytes = tcp_v4(b"");
        bytes[0] = (version << 4) | 5;
        assert_eq!(parse(&bytes), Err(Error::UnknownVersion { version }));
    }
    // A single byte is enough to tell.
    assert_eq!(parse(&[0x00]), Err(Error::UnknownVersion { version: 0 }));
}

#[test]
fn bad_checksum_detected() {
    let mut bytes = tcp_v4(b"PORT 192,0,2,10,195,80\r\n");
    bytes[V4_TCP + 16] ^= 0x01;
    assert!(!parse(&bytes).unwrap().checksum_valid());

    // A flipped payload bit is caught as well.
    let mut bytes = EPRT_V6_BYTES;
    bytes[70] ^= 0x20;
    assert!(!parse(&bytes).unwrap().checksum_valid());

    // The pseudo-header covers the addresses.
    let mut bytes = EPRT_V6_BYTES;
    bytes[23] = 0x11;
    assert!(!parse(&bytes).unwrap().checksum_valid());
}

#[test]
fn good_checksum_v4_and_v6() {
    for payload in [&b""[..], b"A", b"AB", b"USER ftp\r\n", b"odd length\r\n."] {
        assert!(parse(&tcp_v4(payload)).unwrap().checksum_valid());
        assert!(parse(&tcp_v6_with(Ipv6Extensions::default(), payload))
            .unwrap()
            .checksum_valid());
    }
}

/// The checksum field holds the complement of the sum; a zero result may also be sent as
/// 0xffff (RFC 1071 §1, one's complement has two zeros), and both must pass.
#[test]
fn checksum_negative_zero_accepted() {
    // Find a packet whose checksum is 0 by varying the sequence number.
    let bytes = (0u32..200_000)
        .map(|seq| {
            let builder = PacketBuilder::ipv4(CLIENT4, SERVER4, 64).tcp(50000, 21, seq, 512);
            let mut out = Vec::new();
            builder.write(&mut out, b"").unwrap();
            out
        })
        .find(|b| b[V4_TCP + 16..V4_TCP + 18] == [0, 0])
        .expect("some sequence number gives checksum 0");
    assert!(parse(&bytes).unwrap().checksum_valid());
    let mut alt = bytes.clone();
    alt[V4_TCP + 16..V4_TCP + 18].copy_from_slice(&[0xff, 0xff]);
    assert!(parse(&alt).unwrap().checksum_valid());
}

#[test]
fn checksum_mixed_families_or_short_is_false() {
    let bytes = tcp_v4(b"");
    let seg = parse(&bytes).unwrap();
    let mixed = Segment {
        dst: v6(SERVER6),
        ..seg
    };
    assert!(!mixed.checksum_valid());
    let short = Segment {
        tcp_bytes: &seg.tcp_bytes[..19],
        ..seg
    };
    assert!(!short.checksum_valid());
}

#[test]
fn display_one_line() {
    let seg = parse(&EPRT_V6_BYTES).unwrap();
    assert_eq!(
        seg.to_string(),
        "tcp 2001:db8::10.50000 > 2001:db8::21.21 seq=1000 flags=A len=29"
    );
    assert_eq!(TcpFlags::default().to_string(), "-");
    let syn_ack = TcpFlags {
        syn: true,
        ack: true,
        ..TcpFlags::default()
    };
    assert_eq!(syn_ack.to_string(), "SA");
    assert_eq!(
        Error::Truncated {
            layer: Layer::Tcp,
            needed: 20,
            available: 3
        }
        .to_string(),
        "truncated tcp: 20 bytes needed, 3 available"
    );
}

/// Whether `inner` lies within `outer` (same allocation, in bounds).
fn is_subslice(outer: &[u8], inner: &[u8]) -> bool {
    let outer = outer.as_ptr_range();
    let inner = inner.as_ptr_range();
    outer.start <= inner.start && inner.end <= outer.end
}

/// Packets worth mutating: every header kind the parser walks.
fn seeds() -> Vec<Vec<u8>> {
    let mut v4_opts = ipv4_header();
    v4_opts.options = Ipv4Options::try_from(&[1u8, 1, 1, 0][..]).unwrap();
    let auth = IpAuthHeader::new(IpNumber::TCP, 1, 1, &[0; 4]).unwrap();
    vec![
        EPRT_V6_BYTES.to_vec(),
        tcp_v4(b"PORT 192,0,2,10,195,80\r\n"),
        tcp_v4_with(v4_opts, Ipv4Extensions::default(), b"PASV\r\n"),
        tcp_v6_with(
            Ipv6Extensions {
                hop_by_hop_options: Some(pad_options()),
                destination_options: Some(pad_options()),
                fragment: Some(fragment(0, false)),
                auth: Some(auth),
                ..Default::default()
            },
            b"EPSV\r\n",
        ),
    ]
}

fn check_no_panic(bytes: &[u8]) {
    if let Ok(seg) = parse(bytes) {
        assert!(is_subslice(bytes, seg.payload));
        assert!(is_subslice(bytes, seg.tcp_bytes));
        assert!(is_subslice(seg.tcp_bytes, seg.payload));
        assert_eq!(seg.checksum_valid(), etherparse_checksum_ok(&seg));
        let _ = seg.to_string();
    }
}

/// The same check done with etherparse's own sum, as a reference: its result must equal the
/// field, or be 0 with the field holding the other zero, 0xffff.
fn etherparse_checksum_ok(seg: &Segment<'_>) -> bool {
    let tcp = TcpSlice::from_slice(seg.tcp_bytes).unwrap();
    let calc = match (seg.src, seg.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => tcp.calc_checksum_ipv4(s.octets(), d.octets()),
        (IpAddr::V6(s), IpAddr::V6(d)) => tcp.calc_checksum_ipv6(s.octets(), d.octets()),
        _ => unreachable!("parse gives one family"),
    }
    .unwrap();
    calc == tcp.checksum() || (calc == 0 && tcp.checksum() == 0xffff)
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        check_no_panic(&bytes);
    }

    /// Arbitrary bytes behind a plausible first byte, to get past the version dispatch.
    #[test]
    fn arbitrary_ip_like_bytes_never_panic(
        first in prop_oneof![Just(0x45u8), Just(0x46u8), Just(0x60u8)],
        rest in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut bytes = vec![first];
        bytes.extend_from_slice(&rest);
        check_no_panic(&bytes);
    }

    #[test]
    fn mutated_valid_packet_never_panics(
        seed in 0usize..4,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<usize>(),
        pad in 0usize..8,
    ) {
        let mut bytes = seeds().swap_remove(seed);
        for (at, value) in edits {
            let at = at % bytes.len();
            bytes[at] = value;
        }
        check_no_panic(&bytes);
        bytes.extend(std::iter::repeat_n(0xaa, pad));
        check_no_panic(&bytes);
        bytes.truncate(cut % (bytes.len() + 1));
        check_no_panic(&bytes);
    }
}
