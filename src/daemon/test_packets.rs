//! Packets for the daemon's tests (worker, parser): one IPv6 control conversation.

/// A TCP segment from client to server (IPv6, port 21) with `payload`.
pub fn segment(seq: u32, syn: bool, payload: &[u8]) -> Vec<u8> {
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&21u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = if syn { 0x02 } else { 0x18 };
    let src: std::net::Ipv6Addr = "2001:db8:1::10".parse().expect("literal");
    let dst: std::net::Ipv6Addr = "2001:db8:2::21".parse().expect("literal");
    let mut body = tcp.to_vec();
    body.extend_from_slice(payload);
    // TCP checksum over the IPv6 pseudo-header (RFC 8200 §8.1).
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            sum += u32::from(pair[0]) << 8 | pair.get(1).map_or(0, |&b| u32::from(b));
        }
    };
    let len = u32::try_from(body.len()).expect("small");
    add(&src.octets());
    add(&dst.octets());
    add(&len.to_be_bytes());
    add(&[0, 0, 0, 6]);
    add(&body);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let checksum = !u16::try_from(sum).expect("folded");
    body[16..18].copy_from_slice(&checksum.to_be_bytes());
    let mut packet = vec![0x60, 0, 0, 0];
    packet.extend_from_slice(&u16::try_from(body.len()).expect("small").to_be_bytes());
    packet.extend_from_slice(&[6, 64]);
    packet.extend_from_slice(&src.octets());
    packet.extend_from_slice(&dst.octets());
    packet.extend_from_slice(&body);
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
