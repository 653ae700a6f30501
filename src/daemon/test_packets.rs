//! Packets for the daemon's tests (worker, parser): one IPv6 control conversation.

/// A TCP segment from client to server (IPv6, port 21) with `payload`, built with
/// etherparse as the core's tests build theirs (real checksums).
pub fn segment(seq: u32, syn: bool, payload: &[u8]) -> Vec<u8> {
    let src: std::net::Ipv6Addr = "2001:db8:1::10".parse().expect("literal");
    let dst: std::net::Ipv6Addr = "2001:db8:2::21".parse().expect("literal");
    let tcp =
        etherparse::PacketBuilder::ipv6(src.octets(), dst.octets(), 64).tcp(40000, 21, seq, 65535);
    let tcp = if syn { tcp.syn() } else { tcp.psh().ack(1) };
    let mut packet = Vec::with_capacity(tcp.size(payload.len()));
    tcp.write(&mut packet, payload).expect("write to a Vec");
    packet
}

/// SYN, NOOP, an EPRT (the only announcement: packet 2), NOOP.
pub fn conversation() -> Vec<Vec<u8>> {
    let eprt = b"EPRT |2|2001:db8:1::10|50000|\r\n";
    vec![
        segment(1000, true, b""),
        segment(1001, false, b"NOOP\r\n"),
        segment(1007, false, eprt),
        segment(1007 + 32, false, b"NOOP\r\n"),
    ]
}
