//! The replay as a whole, on hand-built captures: no files, no subprocess.

use super::capture::tests::{pcap_header, pcap_record};
use super::*;
use crate::cli::{self, Parsed};

fn settings(extra: &[&str]) -> Settings {
    let argv = ["ftp6proxy", "--replay", "x.pcap"]
        .iter()
        .chain(extra)
        .map(|s| s.to_string());
    match cli::parse(argv) {
        Parsed::Run(settings) => *settings,
        other => panic!("{other:?}"),
    }
}

/// One's complement sum of 16-bit words.
fn sum(bytes: &[u8]) -> u64 {
    bytes
        .chunks(2)
        .map(|w| u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

fn pseudo(src: IpAddr, dst: IpAddr, len: usize) -> u64 {
    let addrs = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => sum(&s.octets()) + sum(&d.octets()),
        (IpAddr::V6(s), IpAddr::V6(d)) => sum(&s.octets()) + sum(&d.octets()),
        _ => unreachable!(),
    };
    addrs + 6 + len as u64
}

#[derive(Clone, Copy, PartialEq)]
enum Sum {
    Right,
    /// The pseudo-header sum only, as checksum offload leaves it.
    Offload,
    Wrong,
}

/// An IP packet carrying one TCP segment. Built by hand, not with etherparse as the
/// other tests' packets are: the checksum must also be left as offload leaves it, or
/// wrong, which a builder that always computes it cannot do.
fn tcp(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: Option<u32>,
    flags: u8,
    data: &[u8],
    cksum: Sum,
) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&src.port().to_be_bytes());
    t.extend_from_slice(&dst.port().to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.unwrap_or(0).to_be_bytes());
    let flags = flags | if ack.is_some() { 0x10 } else { 0 };
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(data);
    let p = pseudo(src.ip(), dst.ip(), t.len());
    let check = match cksum {
        Sum::Right => !fold(p + sum(&t)),
        Sum::Offload => fold(p),
        Sum::Wrong => !fold(p + sum(&t)) ^ 0x5555,
    };
    t[16..18].copy_from_slice(&check.to_be_bytes());
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0];
            ip[2..4].copy_from_slice(&((20 + t.len()) as u16).to_be_bytes());
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let c = !fold(sum(&ip));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            ip.extend(t);
            ip
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut ip = vec![0x60, 0, 0, 0];
            ip.extend_from_slice(&(t.len() as u16).to_be_bytes());
            ip.extend_from_slice(&[6, 64]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            ip.extend(t);
            ip
        }
        _ => unreachable!(),
    }
}

const SYN: u8 = 0x02;
const PSH: u8 = 0x08;
const FIN: u8 = 0x01;

/// A control connection that the tests play both sides of.
struct Flow {
    client: SocketAddr,
    server: SocketAddr,
    cseq: u32,
    sseq: u32,
}

impl Flow {
    fn new(client: &str, server: &str) -> Flow {
        Flow {
            client: client.parse().unwrap(),
            server: server.parse().unwrap(),
            cseq: 1000,
            sseq: 5000,
        }
    }

    fn handshake(&mut self) -> Vec<Vec<u8>> {
        let a = tcp(
            self.client,
            self.server,
            self.cseq,
            None,
            SYN,
            b"",
            Sum::Right,
        );
        let b = tcp(
            self.server,
            self.client,
            self.sseq,
            Some(self.cseq + 1),
            SYN,
            b"",
            Sum::Right,
        );
        self.cseq += 1;
        self.sseq += 1;
        let c = tcp(
            self.client,
            self.server,
            self.cseq,
            Some(self.sseq),
            0,
            b"",
            Sum::Right,
        );
        vec![a, b, c]
    }

    fn client_says(&mut self, line: &str, cksum: Sum) -> Vec<u8> {
        let p = tcp(
            self.client,
            self.server,
            self.cseq,
            Some(self.sseq),
            PSH,
            line.as_bytes(),
            cksum,
        );
        self.cseq += line.len() as u32;
        p
    }

    fn server_says(&mut self, line: &str) -> Vec<u8> {
        let p = tcp(
            self.server,
            self.client,
            self.sseq,
            Some(self.cseq),
            PSH,
            line.as_bytes(),
            Sum::Right,
        );
        self.sseq += line.len() as u32;
        p
    }

    fn close(&mut self) -> Vec<Vec<u8>> {
        let a = tcp(
            self.client,
            self.server,
            self.cseq,
            Some(self.sseq),
            FIN,
            b"",
            Sum::Right,
        );
        let b = tcp(
            self.server,
            self.client,
            self.sseq,
            Some(self.cseq + 1),
            FIN,
            b"",
            Sum::Right,
        );
        vec![a, b]
    }
}

fn syn(src: &str, dst: &str, isn: u32) -> Vec<u8> {
    tcp(
        src.parse().unwrap(),
        dst.parse().unwrap(),
        isn,
        None,
        SYN,
        b"",
        Sum::Right,
    )
}

/// Ethernet frames of `packets`, one every 10 ms from t = 1700000000 s, in a pcap file.
fn ethernet_pcap(packets: &[Vec<u8>]) -> Vec<u8> {
    let mut file = pcap_header(1);
    for (i, ip) in packets.iter().enumerate() {
        let ethertype: &[u8] = if ip[0] >> 4 == 6 {
            &[0x86, 0xdd]
        } else {
            &[0x08, 0x00]
        };
        let frame = [&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2][..], ethertype, ip].concat();
        file.extend(pcap_record(1_700_000_000, i as u32 * 10_000, &frame));
    }
    file
}

fn replay(file: &[u8], extra: &[&str]) -> (Verdict, String) {
    let mut out = Vec::new();
    let verdict = run_reader("test.pcap", file, &settings(extra), &mut out).unwrap();
    (verdict, String::from_utf8(out).unwrap())
}

fn v4_session() -> Vec<Vec<u8>> {
    let mut f = Flow::new("192.0.2.10:40000", "198.51.100.21:21");
    let mut p = f.handshake();
    p.push(f.server_says("220 hello\r\n"));
    p.push(f.client_says("PASV\r\n", Sum::Right));
    p.push(f.server_says("227 Entering Passive Mode (198,51,100,21,195,80)\r\n"));
    p.push(syn("192.0.2.10:40001", "198.51.100.21:50000", 7));
    p.push(f.client_says("PORT 192,0,2,10,195,81\r\n", Sum::Right));
    p.push(f.server_says("200 ok\r\n"));
    p.push(syn("198.51.100.21:20", "192.0.2.10:50001", 8));
    p.extend(f.close());
    p
}

#[test]
fn passive_and_active_data_connections_find_their_holes() {
    let (verdict, out) = replay(&ethernet_pcap(&v4_session()), &[]);
    assert_eq!(verdict.data.len(), 2, "{out}");
    assert_eq!(verdict.blocked(), 0, "{out}");
    assert_eq!(verdict.exit_code(), 0);
    assert_eq!(verdict.counters.holes_opened, 2);
    assert_eq!(verdict.unused_holes, 0);
    assert_eq!(verdict.packets, 12);
    assert_eq!(verdict.control_packets, 10);
    assert_eq!(verdict.format, Format::Pcap);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "+0.000000 replay test.pcap (pcap), +0 is 2023-11-14T22:13:20.000000Z"
    );
    assert_eq!(
        lines[1],
        "+0.000000 #1 connection client=192.0.2.10:40000 server=198.51.100.21:21"
    );
    assert_eq!(
        lines[2],
        "+0.050000 #1 hole open slot=64000 mode=passive from=192.0.2.10 \
         to=198.51.100.21:50000 ttl=2s deadline=+2.050000"
    );
    assert_eq!(
        lines[3],
        "+0.060000 data 192.0.2.10:40001 > 198.51.100.21:50000 passed: hole slot=64000 of #1"
    );
    assert!(lines[4].starts_with("+0.070000 #1 hole open slot=64001 mode=active"));
    assert_eq!(
        lines[5],
        "+0.090000 data 198.51.100.21:20 > 192.0.2.10:50001 passed: hole slot=64001 of #1"
    );
    assert_eq!(
        *lines.last().unwrap(),
        "summary: packets=12 control=10 data=2 passed=2 blocked=0 holes=2 unused=0 rearmed=0 \
         refused=0 malformed=0"
    );
}

#[test]
fn flags_shape_the_engine() {
    // -b and --ftp-ports as given.
    let (verdict, out) = replay(&ethernet_pcap(&v4_session()), &["-b", "100", "-c", "5"]);
    assert!(out.contains("hole open slot=100 "), "{out}");
    assert_eq!(verdict.blocked(), 0);
    // Port 21 is not an FTP port now: nothing is read, and there are no data connections.
    let (verdict, out) = replay(&ethernet_pcap(&v4_session()), &["--ftp-ports", "2121"]);
    assert_eq!(
        (verdict.control_packets, verdict.data.len()),
        (0, 0),
        "{out}"
    );
}

#[test]
fn a_syn_with_no_announcement_is_blocked_and_sets_the_exit_status() {
    let mut packets = v4_session();
    packets.push(syn("192.0.2.10:40002", "198.51.100.21:50002", 9));
    let (verdict, out) = replay(&ethernet_pcap(&packets), &[]);
    assert_eq!(verdict.blocked(), 1, "{out}");
    assert_eq!(verdict.exit_code(), EX_BLOCKED);
    assert!(
        out.contains(
            "data 192.0.2.10:40002 > 198.51.100.21:50002 BLOCKED: no hole was opened from \
             192.0.2.10 to 198.51.100.21:50002"
        ),
        "{out}"
    );
    // A SYN between hosts that never talked FTP is no data connection.
    let mut packets = v4_session();
    packets.push(syn("192.0.2.10:40002", "203.0.113.99:50002", 9));
    let (verdict, _) = replay(&ethernet_pcap(&packets), &[]);
    assert_eq!((verdict.data.len(), verdict.blocked()), (2, 0));
}

#[test]
fn a_late_syn_is_told_which_hole_expired() {
    let mut packets = v4_session();
    packets.insert(6, vec![]); // an ARP frame: pads the clock by 10 ms
    let mut file = pcap_header(1);
    for (i, ip) in packets.iter().enumerate() {
        let ethertype: &[u8] = if ip.is_empty() {
            &[0x08, 0x06]
        } else {
            &[0x08, 0x00]
        };
        let frame = [&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2][..], ethertype, ip].concat();
        // From the passive data SYN (index 7 now) on, everything comes 3 s late.
        let sec = 1_700_000_000 + if i >= 7 { 3 } else { 0 };
        file.extend(pcap_record(sec, i as u32 * 10_000, &frame));
    }
    let (verdict, out) = replay(&file, &[]);
    assert_eq!(verdict.blocked(), 1, "{out}");
    assert!(
        out.contains(
            "+3.070000 data 192.0.2.10:40001 > 198.51.100.21:50000 BLOCKED: hole slot=64000 \
             of #1 for it closed at +2.050000 (opened at +0.050000"
        ),
        "{out}"
    );
    assert_eq!(verdict.unused_holes, 1, "{out}");
    assert!(out.contains("+2.050000 #1 hole unused slot=64000"), "{out}");
    assert_eq!(verdict.not_ip, 1);
    // -t 5 would have been enough.
    let (verdict, out) = replay(&file, &["-t", "5"]);
    assert_eq!((verdict.blocked(), verdict.unused_holes), (0, 0), "{out}");
}

#[test]
fn refusals_are_reported_with_their_reason() {
    let mut f = Flow::new("[2001:db8:1::10]:40000", "[2001:db8:2::21]:21");
    let mut p = f.handshake();
    p.push(f.server_says("220 hello\r\n"));
    p.push(f.client_says("EPRT |2|2001:db8:3::99|50000|\r\n", Sum::Right));
    p.push(f.server_says("200 ok\r\n"));
    // An unsolicited 229, and a client that connects to it.
    p.push(f.server_says("229 Entering Extended Passive Mode (|||50400|)\r\n"));
    p.push(syn("[2001:db8:1::10]:40001", "[2001:db8:2::21]:50400", 1));
    let (verdict, out) = replay(&ethernet_pcap(&p), &[]);
    assert!(
        out.contains(
            "#1 deny reason=bounce announced=2001:db8:3::99 sender=2001:db8:1::10 cmd=EPRT"
        ),
        "{out}"
    );
    assert!(out.contains("#1 deny reason=unsolicited code=229"), "{out}");
    assert_eq!(verdict.refused(), 2);
    assert_eq!(verdict.blocked(), 1);
    assert!(out.contains("refused=2"), "{out}");
}

#[test]
fn offloaded_checksums_are_read_and_wrong_ones_ignored() {
    let mut f = Flow::new("192.0.2.10:40000", "198.51.100.21:21");
    let mut p = f.handshake();
    p.push(f.server_says("220 hello\r\n"));
    p.push(f.client_says("PASV\r\n", Sum::Offload));
    p.push(f.server_says("227 Entering Passive Mode (198,51,100,21,195,80)\r\n"));
    p.push(syn("192.0.2.10:40001", "198.51.100.21:50000", 7));
    let (verdict, out) = replay(&ethernet_pcap(&p), &[]);
    assert_eq!(
        (verdict.offloaded_checksums, verdict.blocked()),
        (1, 0),
        "{out}"
    );
    assert!(
        out.contains("note: 1 control segments carried the partial checksum"),
        "{out}"
    );

    let mut f = Flow::new("192.0.2.10:40000", "198.51.100.21:21");
    let mut p = f.handshake();
    p.push(f.server_says("220 hello\r\n"));
    p.push(f.client_says("PASV\r\n", Sum::Wrong));
    p.push(f.server_says("227 Entering Passive Mode (198,51,100,21,195,80)\r\n"));
    p.push(syn("192.0.2.10:40001", "198.51.100.21:50000", 7));
    let (verdict, out) = replay(&ethernet_pcap(&p), &[]);
    assert_eq!(verdict.counters.bad_checksum, 1, "{out}");
    assert_eq!(verdict.blocked(), 1, "the PASV never counted: {out}");
    assert!(
        out.contains("note: 1 control segments had a wrong TCP checksum"),
        "{out}"
    );
}

#[test]
fn checksum_offload_is_recognised_in_both_families() {
    for (c, s) in [
        ("192.0.2.10:40000", "198.51.100.21:21"),
        ("[2001:db8:1::10]:40000", "[2001:db8:2::21]:21"),
    ] {
        let (c, s): (SocketAddr, SocketAddr) = (c.parse().unwrap(), s.parse().unwrap());
        for (kind, expect) in [
            (Sum::Right, (Checksum::Verify, false)),
            (Sum::Offload, (Checksum::NotReady, true)),
            (Sum::Wrong, (Checksum::Verify, false)),
        ] {
            let packet = tcp(c, s, 1, Some(1), PSH, b"NOOP\r\n", kind);
            let segment = wire::parse(&packet).unwrap();
            assert_eq!(checksum_for(&segment), expect, "{c}");
            assert_eq!(segment.checksum_valid(), kind == Sum::Right);
        }
        // Without payload the engine checks nothing: no verdict needed.
        let packet = tcp(c, s, 1, Some(1), 0, b"", Sum::Offload);
        assert_eq!(
            checksum_for(&wire::parse(&packet).unwrap()),
            (Checksum::Verify, false)
        );
    }
}

#[test]
fn the_clock_starts_at_the_first_packet_and_never_goes_back() {
    let mut clock = Clock::default();
    assert_eq!(clock.at(None), Duration::ZERO);
    assert_eq!(clock.at(Some(5_000_000_000)), Duration::ZERO);
    assert_eq!(clock.at(Some(5_250_000_000)), Duration::from_millis(250));
    assert_eq!(clock.at(Some(5_100_000_000)), Duration::from_millis(250));
    assert_eq!(clock.at(Some(1)), Duration::from_millis(250));
    assert_eq!(clock.at(None), Duration::from_millis(250));
    assert_eq!(clock.at(Some(6_000_000_000)), Duration::from_secs(1));
    assert_eq!(clock.at(Some(i128::MAX)), Duration::from_nanos(u64::MAX));
}

#[test]
fn stamps_and_dates() {
    assert_eq!(
        Stamp(Duration::from_nanos(2_050_000_999)).to_string(),
        "+2.050000"
    );
    assert_eq!(Stamp(Duration::ZERO).to_string(), "+0.000000");
    assert_eq!(utc(0).as_deref(), Some("1970-01-01T00:00:00.000000Z"));
    assert_eq!(
        utc(951_825_600_123_456_789).as_deref(),
        Some("2000-02-29T12:00:00.123456Z")
    );
    assert_eq!(
        utc(4_102_444_799_000_000_000).as_deref(),
        Some("2099-12-31T23:59:59.000000Z")
    );
    assert_eq!(utc(-1), None);
    assert_eq!(utc(i128::MAX), None);
}

#[test]
fn errors_name_the_file_and_offset_and_map_to_exit_codes() {
    let mut file = ethernet_pcap(&v4_session());
    let len = file.len();
    file.truncate(len - 5);
    let mut out = Vec::new();
    let err = run_reader("cut.pcap", &file[..], &settings(&[]), &mut out).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("cut.pcap: byte offset "), "{text}");
    assert!(text.contains("truncated capture"), "{text}");
    assert_eq!(err.exit_code(), EX_DATAERR);
    // What came before the damage was replayed.
    assert!(String::from_utf8(out).unwrap().contains("hole open"));

    let err = run(
        Path::new("/nonexistent/x.pcap"),
        &settings(&[]),
        &mut Vec::new(),
    )
    .unwrap_err();
    assert_eq!(err.exit_code(), EX_NOINPUT);
    assert!(
        err.to_string().starts_with("/nonexistent/x.pcap: "),
        "{err}"
    );

    let err = run_reader("x", &pcap_header(105)[..], &settings(&[]), &mut Vec::new()).unwrap_err();
    assert_eq!(err.exit_code(), EX_DATAERR);
    assert_eq!(
        err.to_string(),
        format!(
            "x: byte offset 20: link type 105 is not one --replay reads ({})",
            link::LinkType::SUPPORTED
        )
    );

    struct Full;
    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::StorageFull, "full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let file = ethernet_pcap(&v4_session());
    let err = run_reader("x", &file[..], &settings(&[]), &mut Full).unwrap_err();
    assert_eq!(err.exit_code(), EX_IOERR);
}

#[test]
fn an_empty_capture_is_an_empty_report() {
    let (verdict, out) = replay(&pcap_header(1), &[]);
    assert_eq!(verdict.packets, 0);
    assert_eq!(verdict.exit_code(), 0);
    assert_eq!(out.lines().count(), 1, "{out}");
}

#[test]
fn verbose_shows_closes_and_the_engine_status() {
    let (_, quiet) = replay(&ethernet_pcap(&v4_session()), &[]);
    assert!(!quiet.contains("connection end"));
    let (_, out) = replay(&ethernet_pcap(&v4_session()), &["-d"]);
    assert!(out.contains("#1 connection end reason=fin"), "{out}");
    assert!(
        out.contains("engine: status connections=0 holes=2/100"),
        "{out}"
    );
    let (_, out) = replay(&ethernet_pcap(&v4_session()), &["-d", "-d"]);
    assert!(out.contains("#1 client: PASV"), "{out}");
}

#[test]
fn packets_out_of_file_order_are_replayed_in_time_order() {
    // As dumpcap writes two interfaces: the 227 (server side) lands in the file after the
    // client's data SYN, which it preceded.
    let packets = v4_session();
    let order = [0, 1, 2, 3, 4, 6, 5, 7, 8, 9, 10, 11];
    let mut file = pcap_header(1);
    for i in order {
        let frame = [
            &[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00][..],
            &packets[i],
        ]
        .concat();
        file.extend(pcap_record(1_700_000_000, i as u32 * 10_000, &frame));
    }
    let (verdict, out) = replay(&file, &[]);
    assert_eq!((verdict.blocked(), verdict.reordered), (0, 1), "{out}");
    assert!(
        out.contains("note: 1 packets came later in the file"),
        "{out}"
    );
    let hole = out.find("+0.050000 #1 hole open slot=64000").expect(&out);
    let syn = out.find("+0.060000 data 192.0.2.10:40001").expect(&out);
    assert!(hole < syn, "{out}");
}

#[test]
fn a_syn_from_the_wrong_client_is_told_whose_hole_it_is() {
    let mut a = Flow::new("192.0.2.10:40000", "198.51.100.21:21");
    let mut b = Flow::new("192.0.2.11:40000", "198.51.100.21:21");
    let mut p = a.handshake();
    p.extend(b.handshake());
    p.push(a.server_says("220 hello\r\n"));
    p.push(a.client_says("PASV\r\n", Sum::Right));
    p.push(a.server_says("227 Entering Passive Mode (198,51,100,21,195,80)\r\n"));
    // B connects to the port announced to A.
    p.push(syn("192.0.2.11:40001", "198.51.100.21:50000", 7));
    let (verdict, out) = replay(&ethernet_pcap(&p), &[]);
    assert_eq!(verdict.blocked(), 1, "{out}");
    assert!(
        out.contains(
            "data 192.0.2.11:40001 > 198.51.100.21:50000 BLOCKED: the hole to \
             198.51.100.21:50000 (slot=64000 of #1) is from=192.0.2.10, not 192.0.2.11"
        ),
        "{out}"
    );
    assert_eq!(verdict.unused_holes, 1, "{out}");
    assert!(out.contains("still open when the capture ends"), "{out}");
}
