//! Conversation replays through the whole engine: which holes open, when they close, and
//! which lines open nothing. Each DESIGN.md invariant that lives in the core has a test
//! here (or in the module named next to it) marked `/// Invariant N`.

mod support;

use std::time::Duration;

use ftp6proxy_core::engine::{Checksum, Config};
use ftp6proxy_core::{FwAction, HoleSpec, Mode};
use support::{ip, packet, Harness, Side, CLIENT4, CLIENT6, SERVER4, SERVER6};

fn passive(client: &str, server: &str, port: u16) -> HoleSpec {
    HoleSpec {
        mode: Mode::Passive,
        src: ip(client),
        dst: ip(server),
        dport: port,
    }
}

fn active(server: &str, client: &str, port: u16) -> HoleSpec {
    HoleSpec {
        mode: Mode::Active,
        src: ip(server),
        dst: ip(client),
        dport: port,
    }
}

#[test]
fn epsv_over_ipv6_opens_client_to_server_hole() {
    let mut h = Harness::v6().connected();
    h.login();
    h.client("EPSV\r\n");
    h.server("229 Entering Extended Passive Mode (|||50123|)\r\n");
    assert_eq!(
        h.holes(),
        [passive("2001:db8:1::10", "2001:db8:2::21", 50123)]
    );
    assert!(
        h.logged("hole open slot=64000 mode=passive from=2001:db8:1::10 to=[2001:db8:2::21]:50123")
    );
}

#[test]
fn pasv_over_ipv4_opens_client_to_server_hole() {
    let mut h = Harness::v4().connected();
    h.login();
    h.client("PASV\r\n");
    h.server("227 Entering Passive Mode (198,51,100,21,195,80).\r\n");
    assert_eq!(h.holes(), [passive("192.0.2.10", "198.51.100.21", 50000)]);
}

#[test]
fn lpsv_228_opens_hole() {
    let mut h = Harness::v6().connected();
    h.login();
    h.client("LPSV\r\n");
    h.server(
        "228 Entering Long Passive Mode (6,16,32,1,13,184,0,2,0,0,0,0,0,0,0,0,0,33,2,195,81)\r\n",
    );
    assert_eq!(
        h.holes(),
        [passive("2001:db8:1::10", "2001:db8:2::21", 50001)]
    );
}

#[test]
fn eprt_over_ipv6_opens_server_to_client_hole() {
    let mut h = Harness::v6().connected();
    h.login();
    h.client("EPRT |2|2001:db8:1::10|50600|\r\n");
    assert_eq!(
        h.holes(),
        [active("2001:db8:2::21", "2001:db8:1::10", 50600)]
    );
}

#[test]
fn port_over_ipv4_opens_server_to_client_hole() {
    let mut h = Harness::v4().connected();
    h.login();
    h.client("port 192,0,2,10,197,200\r\n");
    assert_eq!(h.holes(), [active("198.51.100.21", "192.0.2.10", 50632)]);
}

#[test]
fn lprt_opens_hole() {
    let mut h = Harness::v4().connected();
    h.login();
    h.client("LPRT 4,4,192,0,2,10,2,197,201\r\n");
    assert_eq!(h.holes(), [active("198.51.100.21", "192.0.2.10", 50633)]);
}

/// Invariant 2: the hole is opened before the packet that announced it is passed on.
#[test]
fn hole_opened_before_announcing_packet_is_passed() {
    let mut h = Harness::v6().connected();
    h.login();
    let request = h.client("EPSV\r\n");
    assert!(request.actions.is_empty() && !request.must_wait());
    let reply = h.server("229 Entering Extended Passive Mode (|||50124|)\r\n");
    assert!(reply.must_wait(), "the 229 segment must wait for its hole");
    assert!(matches!(reply.actions[..], [FwAction::Open { .. }]));
    let active = h.client("EPRT |2|2001:db8:1::10|50601|\r\n");
    assert!(
        active.must_wait(),
        "the EPRT segment must wait for its hole"
    );
}

/// Invariant 6: each hole closes at its deadline (the `-t` timeout) at the latest.
#[test]
fn hole_closes_after_timeout() {
    let mut h = Harness::v6().connected();
    h.login();
    h.client("EPSV\r\n");
    h.server("229 Entering Extended Passive Mode (|||50125|)\r\n");
    h.advance(Duration::from_millis(1999));
    assert_eq!(h.holes().len(), 1);
    h.advance(Duration::from_millis(1));
    assert!(h.holes().is_empty());
    assert!(h.logged("hole close slot=64000"));
}

/// Invariant 3: FTP bounce — PORT naming another host opens nothing and logs both addresses.
#[test]
fn port_with_foreign_address_is_denied() {
    let mut h = Harness::v4().connected();
    h.login();
    let outcome = h.client("PORT 203,0,113,99,195,80\r\n");
    assert!(outcome.actions.is_empty());
    assert!(h.holes().is_empty());
    assert!(h.logged("deny reason=bounce announced=203.0.113.99 sender=192.0.2.10 cmd=PORT"));
    assert_eq!(h.engine.counters().denied("bounce"), 1);
}

/// Invariant 3: bounce via EPRT in IPv6.
#[test]
fn eprt_with_foreign_address_is_denied() {
    let mut h = Harness::v6().connected();
    h.login();
    h.client("EPRT |2|2001:db8:3::99|50000|\r\n");
    assert!(h.holes().is_empty());
    assert!(h.logged("reason=bounce announced=2001:db8:3::99 sender=2001:db8:1::10"));
}

/// Invariant 3: a server announcing another host opens nothing.
#[test]
fn pasv_reply_with_foreign_address_is_denied() {
    let mut h = Harness::v4().connected();
    h.login();
    h.client("PASV\r\n");
    h.server("227 Entering Passive Mode (203,0,113,99,195,80)\r\n");
    assert!(h.holes().is_empty());
    assert!(h.logged("reason=bounce announced=203.0.113.99 sender=198.51.100.21 cmd=227"));
}

/// Invariant 3: ports below 1024 get no hole.
#[test]
fn privileged_port_is_denied() {
    let mut h = Harness::v4().connected();
    h.login();
    h.client("PORT 192,0,2,10,0,22\r\n");
    h.server("200 PORT command successful.\r\n");
    h.client("EPSV\r\n");
    h.server("229 Entering Extended Passive Mode (|||25|)\r\n");
    assert!(h.holes().is_empty());
    assert_eq!(h.engine.counters().denied("low_port"), 2);
}

/// Invariant 4: a reply-looking line from the client never counts.
#[test]
fn reply_sent_by_client_opens_nothing() {
    let mut h = Harness::v4().connected();
    h.login();
    h.client("227 Entering Passive Mode (198,51,100,21,195,80)\r\n");
    h.client("229 Entering Extended Passive Mode (|||50000|)\r\n");
    assert!(h.holes().is_empty());
    assert_eq!(h.engine.counters().denied("reply_from_client"), 2);
}

/// Invariant 4: a 227/229 that answers no PASV/EPSV opens nothing (CERT VU#328867).
#[test]
fn unsolicited_passive_reply_opens_nothing() {
    let mut h = Harness::v6().connected();
    h.login();
    h.server("229 Entering Extended Passive Mode (|||50400|)\r\n");
    h.client("NLST\r\n");
    h.server("227 Entering Passive Mode (0,0,0,0,195,80)\r\n");
    assert!(h.holes().is_empty());
    assert_eq!(h.engine.counters().denied("unsolicited"), 2);
}

/// Invariant 4: the reply code must match the request (229 for EPSV, 227 for PASV).
#[test]
fn passive_reply_of_the_wrong_kind_opens_nothing() {
    let mut h = Harness::v4().connected();
    h.login();
    h.client("PASV\r\n");
    h.server("229 Entering Extended Passive Mode (|||50000|)\r\n");
    assert!(h.holes().is_empty());
}

/// Invariant 4: a reply-looking line inside a multi-line reply never counts, even when a
/// passive request is outstanding; and the request is still answered by the final line.
#[test]
fn reply_inside_multiline_reply_opens_no_hole() {
    let mut h = Harness::v6().connected();
    h.login();
    h.client("EPSV\r\n");
    h.server("211-Status of ftp.example.org:\r\n229 Entering Extended Passive Mode (|||50401|)\r\n 229 (|||50402|)\r\n211 End of status\r\n");
    assert!(h.holes().is_empty());
    assert_eq!(h.engine.counters().denied("inside_multiline"), 1);
    // The EPSV was consumed by the 211: a 229 now is unsolicited.
    h.server("229 Entering Extended Passive Mode (|||50403|)\r\n");
    assert!(h.holes().is_empty());
}

/// Invariant 4: a multi-line 229 reply is not an announcement either.
#[test]
fn multiline_passive_reply_opens_no_hole() {
    let mut h = Harness::v6().connected();
    h.login();
    h.client("EPSV\r\n");
    h.server("229-Entering Extended Passive Mode (|||50404|)\r\n229 Entering Extended Passive Mode (|||50404|)\r\n");
    assert!(h.holes().is_empty());
}

/// Invariant 5: a command split across TCP segments is read whole, and the hole is
/// requested by the segment that completes it.
#[test]
fn command_split_across_segments_opens_hole_on_the_last_segment() {
    let mut h = Harness::v6().connected();
    h.login();
    let first = h.client("EPRT |2|2001:db8:1");
    assert!(first.actions.is_empty());
    let second = h.client("::10|50602|");
    assert!(second.actions.is_empty());
    let last = h.client("\r\n");
    assert!(last.must_wait());
    assert_eq!(
        h.holes(),
        [active("2001:db8:2::21", "2001:db8:1::10", 50602)]
    );
}

/// Invariant 5: a reply line split across segments, with the reply code in the first.
#[test]
fn reply_split_across_segments_opens_hole() {
    let mut h = Harness::v4().connected();
    h.login();
    h.client("PASV\r\n");
    h.server("227 Entering Passive Mode (198,51,");
    h.server("100,21,195,82).\r\n");
    assert_eq!(h.holes(), [passive("192.0.2.10", "198.51.100.21", 50002)]);
}

/// Invariant 5: a segment boundary is not a line start (NAT Slipstreaming-style alignment).
#[test]
fn segment_starting_with_reply_text_mid_line_opens_nothing() {
    let mut h = Harness::v6().connected();
    h.login();
    h.client("EPSV\r\n");
    h.server("150-Here comes text ");
    h.server("229 Entering Extended Passive Mode (|||50405|)\r\n");
    assert!(h.holes().is_empty());
}

/// Retransmitted announcement re-arms its existing hole instead of taking another slot.
#[test]
fn retransmitted_announcement_rearms_its_hole() {
    let mut h = Harness::v6().connected();
    h.login();
    h.client("EPSV\r\n");
    let seq = h.server_seq;
    let line = b"229 Entering Extended Passive Mode (|||50126|)\r\n";
    h.server(std::str::from_utf8(line).unwrap());
    h.advance(Duration::from_millis(1500));
    let again = h.send_at(Side::Server, seq, line);
    assert!(matches!(again.actions[..], [FwAction::Refresh { .. }]));
    assert!(again.must_wait());
    assert_eq!(h.opens(), 1);
    assert_eq!(h.holes().len(), 1);
    // The deadline moved: still open 1.9 s after the retransmission.
    h.advance(Duration::from_millis(1900));
    assert_eq!(h.holes().len(), 1);
    h.advance(Duration::from_millis(100));
    assert!(h.holes().is_empty());
    assert_eq!(h.engine.counters().holes_rearmed, 1);
}

/// A retransmission after the hole closed opens it again (the receiver never got it).
#[test]
fn retransmitted_announcement_after_expiry_reopens() {
    let mut h = Harness::v4().connected();
    h.login();
    let seq = h.client_seq;
    h.client("PORT 192,0,2,10,197,200\r\n");
    h.advance(Duration::from_secs(3));
    assert!(h.holes().is_empty());
    h.send_at(Side::Client, seq, b"PORT 192,0,2,10,197,200\r\n");
    assert_eq!(h.holes().len(), 1);
    assert_eq!(h.opens(), 2);
}

/// Invariant 5: an out-of-order segment is read when the gap is filled, and the hole is
/// requested by the segment that fills it.
#[test]
fn out_of_order_announcement_is_read_when_the_gap_fills() {
    let mut h = Harness::v6().connected();
    h.login();
    let seq = h.client_seq;
    let early = h.send_at(Side::Client, seq + 5, b"|2|2001:db8:1::10|50603|\r\n");
    assert!(early.actions.is_empty());
    let filler = h.send_at(Side::Client, seq, b"EPRT ");
    assert!(filler.must_wait());
    assert_eq!(h.holes().len(), 1);
}

/// Invariant 5: a connection first seen mid-stream resynchronises at the next line end.
#[test]
fn midstream_connection_resynchronises_at_next_line_end() {
    let mut h = Harness::v6();
    // No handshake: the daemon started while the session was open.
    h.send(Side::Client, b" |2|2001:db8:1::10|50604|\r\n");
    assert!(h.holes().is_empty());
    h.client("EPRT |2|2001:db8:1::10|50605|\r\n");
    assert_eq!(
        h.holes(),
        [active("2001:db8:2::21", "2001:db8:1::10", 50605)]
    );
}

/// Pipelined commands: the 227 answers the PASV even though LIST was sent after it.
#[test]
fn pipelined_commands_keep_reply_pairing() {
    let mut h = Harness::v4().connected();
    h.login();
    h.client("TYPE I\r\nPASV\r\nRETR big.bin\r\n");
    h.server("200 Switching to Binary mode.\r\n");
    h.server("227 Entering Passive Mode (198,51,100,21,195,83).\r\n");
    assert_eq!(h.holes(), [passive("192.0.2.10", "198.51.100.21", 50003)]);
}

/// Preliminary replies (1yz) do not consume the outstanding command.
#[test]
fn preliminary_reply_does_not_consume_the_request() {
    let mut h = Harness::v6().connected();
    h.login();
    h.client("EPSV\r\n");
    h.server("120 Service ready in 1 minute.\r\n");
    h.server("229 Entering Extended Passive Mode (|||50127|)\r\n");
    assert_eq!(h.holes().len(), 1);
}

/// Invariant 6: exhaustion is refused, logged and counted; the packet still passes.
#[test]
fn exhausted_slots_refuse_and_count() {
    let config = Config {
        count: 1,
        ..Config::default()
    };
    let mut h = Harness::with(config, CLIENT6, SERVER6).connected();
    h.login();
    h.client("EPRT |2|2001:db8:1::10|50606|\r\n");
    let refused = h.client("EPRT |2|2001:db8:1::10|50607|\r\n");
    assert!(refused.actions.is_empty());
    assert_eq!(h.holes().len(), 1);
    assert_eq!(h.engine.counters().denied("table_full"), 1);
    assert!(h.logged("deny reason=table_full"));
}

/// Issue 10 item 6: a hole its data connection used up (the firewall's rule consumed it)
/// frees its slot at once: with one slot, the next announcement gets a hole without
/// waiting for the deadline. A stale report (the slot holds another hole by then)
/// changes nothing.
#[test]
fn used_hole_frees_its_slot_at_once() {
    let config = Config {
        count: 1,
        ..Config::default()
    };
    let mut h = Harness::with(config, CLIENT6, SERVER6).connected();
    h.login();
    h.client("EPRT |2|2001:db8:1::10|50606|\r\n");
    let (slot, spec) = h.installed.iter().map(|(s, p)| (*s, *p)).next().unwrap();
    // The rule deleted the element on the data connection's SYN; the monitor reports it.
    h.installed.remove(&slot);
    h.engine.hole_used(slot, spec);
    h.drain_events();
    assert!(h.logged("hole used"));
    h.client("EPRT |2|2001:db8:1::10|50607|\r\n");
    assert_eq!(
        h.holes(),
        [active("2001:db8:2::21", "2001:db8:1::10", 50607)],
        "the freed slot took the next hole"
    );
    h.engine.hole_used(slot, spec);
    assert_eq!(
        h.engine.counters().holes_used,
        1,
        "the stale report freed nothing"
    );
    h.client("EPRT |2|2001:db8:1::10|50608|\r\n");
    assert_eq!(
        h.engine.counters().denied("table_full"),
        1,
        "the slot is still busy"
    );
}

/// Invariant 6: shutdown closes every hole.
#[test]
fn shutdown_closes_every_hole() {
    let mut h = Harness::v6().connected();
    h.login();
    h.client("EPRT |2|2001:db8:1::10|50608|\r\n");
    h.client("EPRT |2|2001:db8:1::10|50609|\r\n");
    let actions = h.engine.shutdown();
    assert_eq!(actions.len(), 2);
    assert!(actions.iter().all(|a| matches!(a, FwAction::Close { .. })));
    assert_eq!(h.engine.open_holes(), 0);
}

/// Invariant 8: after AUTH TLS is accepted, nothing more is read from the connection.
#[test]
fn tls_session_is_not_read_and_logged_once() {
    let mut h = Harness::v6().connected();
    h.server("220 ready\r\n");
    h.client("AUTH TLS\r\n");
    h.server("234 Proceed with negotiation.\r\n");
    // Records whose bodies happen to look like a conversation: nothing inside a record
    // is read.
    h.send(Side::Client, &record(22, b"\r\nEPSV\r\n"));
    h.send(
        Side::Server,
        &record(22, b"229 Entering Extended Passive Mode (|||50128|)\r\n"),
    );
    h.send(
        Side::Client,
        &record(23, b"\r\nEPRT |2|2001:db8:1::10|50610|\r\n"),
    );
    assert!(h.holes().is_empty());
    let tls_lines: Vec<String> = h
        .log()
        .into_iter()
        .filter(|l| l.contains(" tls "))
        .collect();
    assert_eq!(tls_lines.len(), 1, "{tls_lines:?}");
    assert!(
        tls_lines[0].contains("client=[2001:db8:1::10]:40000")
            && tls_lines[0].contains("server=[2001:db8:2::21]:21"),
        "{tls_lines:?}"
    );
    assert_eq!(h.engine.counters().tls, 1);
}

/// A refused AUTH leaves the channel readable.
#[test]
fn refused_auth_keeps_reading() {
    let mut h = Harness::v4().connected();
    h.client("AUTH TLS\r\n");
    h.server("530 Please login with USER and PASS.\r\n");
    h.client("PASV\r\n");
    h.server("227 Entering Passive Mode (198,51,100,21,195,84)\r\n");
    assert_eq!(h.holes().len(), 1);
}

#[test]
fn segment_with_bad_checksum_is_ignored() {
    let mut h = Harness::v6().connected();
    h.login();
    let (src, dst, seq) = h.next(Side::Client);
    let mut bytes = packet(src, dst, seq, "AP", b"EPRT |2|2001:db8:1::10|50611|\r\n");
    let last_digit = bytes.len() - 4;
    bytes[last_digit] ^= 0x01; // port 50611 -> 50610: the checksum no longer matches
    let outcome = h.feed(&bytes);
    assert!(outcome.actions.is_empty());
    assert_eq!(h.engine.counters().bad_checksum, 1);
    // With the checksum not ready (offload), the same bytes are read.
    let unverified = h.feed_with(&bytes, Checksum::NotReady);
    assert_eq!(unverified.actions.len(), 1);
}

#[test]
fn malformed_announcement_is_logged_and_opens_nothing() {
    let mut h = Harness::v4().connected();
    h.login();
    h.client("PORT 192,0,2,10,300,1\r\n");
    h.client("EPRT |1|192.0.2.10|\r\n");
    assert!(h.holes().is_empty());
    assert_eq!(h.engine.counters().malformed, 2);
    assert!(h.logged("malformed cmd=PORT"));
}

#[test]
fn unspecified_eprt_address_opens_hole_to_the_client() {
    let mut h = Harness::v6().connected();
    h.login();
    h.client("EPRT |2|::|50612|\r\n");
    assert_eq!(
        h.holes(),
        [active("2001:db8:2::21", "2001:db8:1::10", 50612)]
    );
}

#[test]
fn family_mismatch_is_denied() {
    let mut h = Harness::v6().connected();
    h.login();
    h.client("EPRT |1|192.0.2.10|50613|\r\n");
    assert!(h.holes().is_empty());
    assert_eq!(h.engine.counters().denied("family_mismatch"), 1);
}

#[test]
fn non_ftp_traffic_is_counted_and_ignored() {
    let mut h = Harness::v6();
    let bytes = packet(
        "[2001:db8:1::10]:40000".parse().unwrap(),
        "[2001:db8:2::21]:80".parse().unwrap(),
        1,
        "AP",
        b"EPRT |2|2001:db8:1::10|50614|\r\n",
    );
    assert!(h.feed(&bytes).actions.is_empty());
    assert_eq!(h.engine.counters().not_ftp, 1);
    assert_eq!(h.engine.connections(), 0);
}

#[test]
fn other_ftp_ports_are_honoured() {
    let config = Config {
        ftp_ports: vec![21, 2121],
        ..Config::default()
    };
    let mut h = Harness::with(config, CLIENT4, "198.51.100.21:2121").connected();
    h.login();
    h.client("PASV\r\n");
    h.server("227 Entering passive mode (198,51,100,21,195,85).\r\n");
    assert_eq!(h.holes().len(), 1);
}

#[test]
fn fin_from_both_sides_ends_the_connection_but_not_its_holes() {
    let mut h = Harness::v4().connected();
    h.login();
    h.client("PORT 192,0,2,10,197,202\r\n");
    let (src, dst, seq) = h.next(Side::Client);
    h.feed(&packet(src, dst, seq, "FA", b""));
    assert_eq!(h.engine.connections(), 1);
    let (src, dst, seq) = h.next(Side::Server);
    h.feed(&packet(src, dst, seq, "FA", b""));
    assert_eq!(h.engine.connections(), 0);
    assert_eq!(h.holes().len(), 1, "the hole lives until its deadline");
    h.advance(Duration::from_secs(2));
    assert!(h.holes().is_empty());
}

#[test]
fn last_ack_after_close_does_not_start_a_new_connection() {
    let mut h = Harness::v4().connected();
    let (src, dst, seq) = h.next(Side::Client);
    h.feed(&packet(src, dst, seq, "FA", b""));
    let (src, dst, seq) = h.next(Side::Server);
    h.feed(&packet(src, dst, seq, "FA", b""));
    assert_eq!(h.engine.connections(), 0);
    let (src, dst, seq) = h.next(Side::Client);
    h.feed(&packet(src, dst, seq + 1, "A", b""));
    assert_eq!(h.engine.connections(), 0);
    assert_eq!(h.engine.counters().connections, 1);
}

#[test]
fn rst_ends_the_connection() {
    let mut h = Harness::v6().connected();
    let (src, dst, seq) = h.next(Side::Server);
    h.feed(&packet(src, dst, seq, "R", b""));
    assert_eq!(h.engine.connections(), 0);
    assert!(h.logged("connection end reason=rst"));
}

/// Invariant 7: idle connections are forgotten.
#[test]
fn idle_connection_is_reaped() {
    let config = Config {
        idle_timeout: Duration::from_secs(60),
        ..Config::default()
    };
    let mut h = Harness::with(config, CLIENT4, SERVER4).connected();
    h.advance(Duration::from_secs(75));
    assert_eq!(h.engine.connections(), 0);
    assert!(h.logged("reason=idle"));
    assert_eq!(h.engine.poll_timeout(), None);
}

/// Invariant 7: the table is capped; a flood of connections evicts, never grows.
#[test]
fn connection_table_is_capped() {
    let config = Config {
        max_connections: 8,
        ..Config::default()
    };
    let mut h = Harness::with(config, CLIENT6, SERVER6);
    for port in 0..100u16 {
        let src = std::net::SocketAddr::new(ip("2001:db8:1::10"), 30000 + port);
        let bytes = packet(src, h.server, 1, "S", b"");
        h.feed(&bytes);
    }
    assert_eq!(h.engine.connections(), 8);
    assert_eq!(h.engine.counters().evicted, 92);
}

/// Peer-triggered warnings are rate limited, and the suppressed count is reported.
#[test]
fn denial_log_lines_are_rate_limited() {
    let mut h = Harness::v4().connected();
    h.login();
    for _ in 0..20 {
        h.client("PORT 203,0,113,99,195,80\r\n");
    }
    let bounce_lines = h
        .log()
        .iter()
        .filter(|l| l.contains("reason=bounce"))
        .count();
    assert_eq!(bounce_lines, 5);
    assert_eq!(h.engine.counters().denied("bounce"), 20);
    // The summary is due when the window ends: the engine's own timer says so, without
    // waiting for another refusal of that kind.
    assert!(h.engine.poll_timeout().is_some());
    h.advance(Duration::from_secs(11));
    assert!(h.logged("suppressed 15 more of this kind (reason=bounce)"));
}

/// Every refusal names both ends of the control connection, `table_full` included.
#[test]
fn refusals_name_both_endpoints() {
    let config = Config {
        count: 1,
        ..Config::default()
    };
    let mut h = Harness::with(config, CLIENT6, SERVER6).connected();
    h.login();
    h.client("EPRT |2|2001:db8:1::10|50616|\r\n");
    h.client("EPRT |2|2001:db8:1::10|50617|\r\n");
    h.client("EPRT |2|2001:db8:9::66|50618|\r\n");
    for reason in ["table_full", "bounce"] {
        let line = h
            .log()
            .into_iter()
            .find(|l| l.contains(&format!("reason={reason}")))
            .unwrap_or_else(|| panic!("no {reason} line"));
        assert!(
            line.contains("client=[2001:db8:1::10]:40000")
                && line.contains("server=[2001:db8:2::21]:21"),
            "{line}"
        );
    }
}

/// Invariant 1 (core side): a firewall failure frees the slot; the packet was still
/// returned to the caller with its actions, never dropped by the engine.
#[test]
fn firewall_failure_frees_the_slot_and_is_logged() {
    let mut h = Harness::v6().connected();
    h.login();
    let outcome = h.engine.on_packet(
        h.now,
        &packet(
            h.client,
            h.server,
            h.client_seq,
            "AP",
            b"EPRT |2|2001:db8:1::10|50615|\r\n",
        ),
    );
    let [action] = outcome.actions[..] else {
        panic!("one action")
    };
    h.engine.action_failed(action.handle());
    h.drain_events();
    assert_eq!(h.engine.open_holes(), 0);
    assert_eq!(h.engine.counters().holes_failed, 1);
    assert!(h.logged("hole failed"));
}

#[test]
fn status_line_names_connections_holes_and_counters() {
    let mut h = Harness::v4().connected();
    h.login();
    h.client("PORT 192,0,2,10,197,203\r\n");
    let status = h.engine.status().to_string();
    assert!(
        status.starts_with("status connections=1 holes=1/100 packets="),
        "{status}"
    );
    assert!(status.contains("denied_bounce=0"));
}

#[test]
fn debug_line_events_escape_untrusted_bytes() {
    let config = Config {
        log_lines: true,
        ..Config::default()
    };
    let mut h = Harness::with(config, CLIENT4, SERVER4).connected();
    h.send(Side::Client, b"USER \x1b[31mevil\x00\r\n");
    assert!(h.logged("client: USER \\x1b[31mevil\\x00"), "{:?}", h.log());
}

// ---------------------------------------------------------------------------------------
// Gaps: bytes the engine never saw (NFQUEUE fail-open, a full divert buffer, a restart).

/// The motivating case (issue 9): one client segment, a `RETR`, passes unseen. The server's
/// acknowledgment proves the gap at once; the replies to the lost command pair with
/// nothing; every later `PASV` gets its hole, transfer after transfer.
#[test]
fn lost_client_command_leaves_later_passive_replies_helped() {
    let mut h = Harness::v4().connected();
    h.login();
    for (i, p2) in (80u16..84).enumerate() {
        h.client("PASV\r\n");
        h.server(&format!(
            "227 Entering Passive Mode (198,51,100,21,195,{p2}).\r\n"
        ));
        assert_eq!(h.holes().len(), 1, "transfer {i}");
        if i == 1 {
            h.lose(Side::Client, b"RETR lost.bin\r\n");
        } else {
            h.client("RETR file.bin\r\n");
        }
        h.server("150 Opening BINARY mode data connection.\r\n");
        h.server("226 Transfer complete.\r\n");
        h.advance(Duration::from_secs(3));
    }
    assert_eq!(h.opens(), 4);
    assert_eq!(h.engine.counters().gaps, 1);
    assert_eq!(h.engine.counters().denied("unsolicited"), 0);
    assert!(h.logged("gap dir=client"));
}

/// The acknowledgment rule: a reply can only answer a command the server had received.
/// A reply sent before the server had the `EPSV` (its acknowledgment falls short of the
/// command's end) pairs with nothing, even when it looks like the answer.
#[test]
fn reply_sent_before_the_server_had_the_command_pairs_with_nothing() {
    let mut h = Harness::v6().connected();
    h.login();
    let before_epsv = h.client_seq;
    h.client("EPSV\r\n");
    let (src, dst, seq) = h.next(Side::Server);
    let early = b"229 Entering Extended Passive Mode (|||50410|)\r\n";
    h.feed(&support::packet_acking(
        src,
        dst,
        seq,
        before_epsv,
        "AP",
        early,
    ));
    assert!(h.holes().is_empty());
    assert_eq!(h.engine.counters().denied("unsolicited"), 1);
}

/// A lost server segment, the start of a multi-line reply: the engine reads on from the
/// next line end, the first reply line it reads whole settles the multi-line state, and
/// the next whole exchange (an `EPSV` read after the gap, its 229) is helped.
#[test]
fn lost_server_segment_is_recovered_at_the_next_whole_exchange() {
    let mut h = Harness::v6().connected();
    h.login();
    h.client("STAT\r\n");
    h.lose(Side::Server, b"211-FTP server status:\r\n");
    h.client("EPSV\r\n"); // acknowledges the lost reply: the gap is proven
    h.server("     Connected to 2001:db8:1::10\r\n211 End of status\r\n");
    h.server("229 Entering Extended Passive Mode (|||50411|)\r\n");
    assert_eq!(
        h.holes(),
        [passive("2001:db8:1::10", "2001:db8:2::21", 50411)]
    );
    assert!(h.logged("gap dir=server"));
    h.client("EPRT |2|2001:db8:1::10|50412|\r\n");
    assert_eq!(h.holes().len(), 2);
}

/// Replies owed to commands lost with a server gap do not put pairing out of step: the
/// `226` of a `RETR` whose `150` was lost, and a reply owed to a command the engine never
/// saw, arrive after the next `PASV` was read; they are skipped, and the `227` still
/// answers that `PASV` — transfer after transfer.
#[test]
fn replies_owed_across_a_server_gap_leave_later_passive_replies_helped() {
    let mut h = Harness::v4().connected();
    h.login();
    h.client("PASV\r\n");
    h.server("227 Entering Passive Mode (198,51,100,21,195,100).\r\n");
    h.client("RETR a\r\n");
    h.lose(
        Side::Server,
        b"150 Opening BINARY mode data connection.\r\n",
    );
    h.client("PASV\r\n"); // pipelined; its acknowledgment proves the gap
    h.server("226 Transfer complete.\r\n"); // a fragment: its start is unproven
    h.server("200 Noted.\r\n"); // owed to a command the engine never saw
    h.server("227 Entering Passive Mode (198,51,100,21,195,101).\r\n");
    for p2 in 102..105 {
        h.client("RETR b\r\n");
        h.server("150 Opening BINARY mode data connection.\r\n");
        h.server("226 Transfer complete.\r\n");
        h.client("PASV\r\n");
        h.server(&format!(
            "227 Entering Passive Mode (198,51,100,21,195,{p2}).\r\n"
        ));
    }
    assert_eq!(h.opens(), 5);
    assert_eq!(h.engine.counters().denied("unsolicited"), 0);
}

/// A segment start proves no line start, after any kind of loss: a client has the server
/// echo `229 ...` text and pipelines an `EPSV`, so that a server segment begins exactly at
/// the echo, at the position the `EPSV` acknowledged. It opens nothing; the next whole
/// exchange is helped.
#[test]
fn pipelined_echo_at_a_segment_start_opens_nothing_after_any_loss() {
    const ECHO: &[u8] =
        b"229 Entering Extended Passive Mode (|||6000|)': command not understood\r\n";
    for loss in ["server gap", "client gap", "crash", "no loss"] {
        let mut h = Harness::v6().connected();
        h.login();
        h.client("SITE '229 Entering Extended Passive Mode (|||6000|)'\r\n");
        match loss {
            "server gap" => h.lose(Side::Server, b"500 '"),
            "client gap" => {
                h.lose(Side::Client, b"NOOP\r\n");
                h.server("500 '");
            }
            "crash" => {
                h.engine = ftp6proxy_core::Engine::new(Config::default());
                // The next instance never saw the reply's first bytes.
                h.lose(Side::Server, b"500 '");
            }
            _ => {
                h.server("500 '");
            }
        }
        h.client("EPSV\r\n");
        h.send(Side::Server, ECHO);
        h.server("200 NOOP ok.\r\n");
        assert!(h.holes().is_empty(), "{loss}");
        h.server("229 Entering Extended Passive Mode (|||50420|)\r\n");
        h.client("EPSV\r\n");
        h.server("229 Entering Extended Passive Mode (|||50421|)\r\n");
        let opened: Vec<u16> = h.holes().iter().map(|hole| hole.dport).collect();
        assert!(!opened.contains(&6000), "{loss}: {opened:?}");
        assert!(
            opened.contains(&50421),
            "{loss}: the next whole exchange: {opened:?}"
        );
    }
}

/// What the engine trusts after a gap is what it trusts without one: the server's own
/// line starts. A server that starts reply lines with text a client chose (here a `STAT`
/// listing that prints client-made names at line starts) lets that client forge replies
/// whether or not bytes were lost: the client closes the multi-line reply itself with a
/// `213 ` line. A gap changes nothing about what such a server allows.
#[test]
fn a_gap_adds_nothing_to_what_a_server_echoing_line_starts_allows() {
    let outcome = |lose: bool| {
        let mut h = Harness::v6().connected();
        h.login();
        h.client("STAT -1\r\n");
        if lose {
            h.lose(Side::Server, b"213-status of -1:\r\n");
        } else {
            h.server("213-status of -1:\r\n");
        }
        h.client("EPSV\r\n"); // with the loss, its acknowledgment proves the gap
        h.server("a.txt\r\n213 x\r\n229 Entering Extended Passive Mode (|||6000|)\r\n");
        h.holes()
    };
    assert_eq!(outcome(true), outcome(false));
}

/// The pipelined-echo attack across a server gap, inside a multi-line reply: the echoed
/// `229` line arrives at the first bytes after the gap, which are no proven line start.
/// It opens nothing; the reply's end settles the multi-line state, and the next whole
/// exchange is helped.
#[test]
fn pipelined_echo_inside_a_reply_cut_by_a_gap_opens_nothing() {
    let mut h = Harness::v6().connected();
    h.login();
    h.client("STAT *\r\n");
    h.server("213-status of *:\r\n");
    h.lose(Side::Server, b"-rw-r--r-- 1 ftp ftp 0 Nov 30 a\r\n");
    h.client("EPSV\r\n");
    h.server("229 Entering Extended Passive Mode (|||6000|)\r\n213 End of status\r\n");
    assert!(h.holes().is_empty());
    h.server("229 Entering Extended Passive Mode (|||50416|)\r\n");
    assert_eq!(
        h.holes(),
        [passive("2001:db8:1::10", "2001:db8:2::21", 50416)]
    );
}

/// A client segment that starts mid-line after a gap is not read from its start: the
/// slipstream defence holds when the gap is proven by an acknowledgment.
#[test]
fn client_segment_after_a_gap_is_read_from_the_next_line_end() {
    let mut h = Harness::v6().connected();
    h.login();
    h.lose(Side::Client, b"SITE ECHO ");
    h.client("EPRT |2|2001:db8:1::10|50413|\r\n");
    h.server("500 Unknown command.\r\n"); // acknowledges both: the gap is proven
    assert!(h.holes().is_empty());
    h.client("EPRT |2|2001:db8:1::10|50414|\r\n");
    assert_eq!(
        h.holes(),
        [active("2001:db8:2::21", "2001:db8:1::10", 50414)]
    );
}

/// Invariants 5 and 9 after a crash: a connection joined mid-stream is helped from the
/// next whole exchange — the first `PASV` and its `227` are cut (their starts unseen), the
/// second pair is read whole and helped; commands from the next line end.
#[test]
fn midstream_connection_is_helped_from_the_next_whole_exchange() {
    let mut h = Harness::v4();
    h.client("PASV\r\n");
    h.server("227 Entering Passive Mode (198,51,100,21,195,90).\r\n");
    assert!(h.holes().is_empty());
    h.client("PASV\r\n");
    h.server("227 Entering Passive Mode (198,51,100,21,195,91).\r\n");
    assert_eq!(h.holes(), [passive("192.0.2.10", "198.51.100.21", 50011)]);
    h.client("PORT 192,0,2,10,197,210\r\n");
    assert_eq!(h.holes().len(), 2);
}

/// A RST the endpoints would ignore (not exactly the next sequence number, RFC 5961 §3) is
/// ignored here too: an off-path guess cannot make the engine forget a connection.
#[test]
fn inexact_rst_is_ignored_and_the_exact_one_ends_tracking() {
    let mut h = Harness::v6().connected();
    h.login();
    let (src, dst, seq) = h.next(Side::Server);
    h.feed(&packet(src, dst, seq.wrapping_add(1000), "R", b""));
    assert_eq!(h.engine.connections(), 1);
    assert_eq!(h.engine.counters().rst_ignored, 1);
    assert!(h.logged("rst ignored dir=server"));
    h.client("EPSV\r\n");
    h.server("229 Entering Extended Passive Mode (|||50415|)\r\n");
    assert_eq!(h.holes().len(), 1, "the session goes on");
    let (src, dst, seq) = h.next(Side::Server);
    h.feed(&packet(src, dst, seq, "R", b""));
    assert_eq!(h.engine.connections(), 0);
}

/// A server refusing the connection: its RST acknowledges exactly the client's SYN.
#[test]
fn rst_refusing_a_syn_ends_tracking() {
    let mut h = Harness::v4();
    let syn = packet(h.client, h.server, h.client_seq, "S", b"");
    h.feed(&syn);
    assert_eq!(h.engine.connections(), 1);
    let wrong = support::packet_acking(h.server, h.client, 0, h.client_seq + 7, "RA", b"");
    h.feed(&wrong);
    assert_eq!(h.engine.connections(), 1);
    let refusal = support::packet_acking(h.server, h.client, 0, h.client_seq + 1, "RA", b"");
    h.feed(&refusal);
    assert_eq!(h.engine.connections(), 0);
}

// ---------------------------------------------------------------------------------------
// Eviction and resuming (invariant 9).

/// Switches the harness to another control connection from the same client host.
fn switch_to(h: &mut Harness, client_port: u16) -> (std::net::SocketAddr, u32, u32) {
    let saved = (h.client, h.client_seq, h.server_seq);
    h.client = std::net::SocketAddr::new(h.client.ip(), client_port);
    h.client_seq = 1000;
    h.server_seq = 5_000_000;
    saved
}

fn switch_back(h: &mut Harness, saved: (std::net::SocketAddr, u32, u32)) {
    (h.client, h.client_seq, h.server_seq) = saved;
}

/// A connection evicted from a full table is remembered; when it comes back it resumes
/// exactly, and its next `EPSV` is helped. The eviction is logged at info with counts.
#[test]
fn evicted_connection_resumes_and_its_next_passive_reply_is_helped() {
    let config = Config {
        max_connections: 1,
        ..Config::default()
    };
    let mut h = Harness::with(config, CLIENT6, SERVER6).connected();
    h.login();
    let saved = switch_to(&mut h, 41000);
    h.handshake();
    switch_back(&mut h, saved);
    assert!(h.logged("connection table full (1): evicted 1"));
    h.client("EPSV\r\n");
    h.server("229 Entering Extended Passive Mode (|||50620|)\r\n");
    assert_eq!(
        h.holes(),
        [passive("2001:db8:1::10", "2001:db8:2::21", 50620)]
    );
    assert_eq!(h.engine.counters().resumed, 1);
    assert!(h.logged("resumed"));
}

/// The pipelined-echo attack across an eviction: the multi-line reply open when the
/// connection was evicted is still open when it resumes, so the echoed 229 is text.
#[test]
fn pipelined_echo_across_an_eviction_opens_nothing() {
    let config = Config {
        max_connections: 1,
        ..Config::default()
    };
    let mut h = Harness::with(config, CLIENT6, SERVER6).connected();
    h.login();
    h.client("STAT *\r\n");
    h.server("213-status of *:\r\n");
    let saved = switch_to(&mut h, 41001);
    h.handshake();
    switch_back(&mut h, saved);
    h.client("EPSV\r\n");
    h.server("229 Entering Extended Passive Mode (|||6000|)\r\n");
    assert!(h.holes().is_empty());
    assert_eq!(h.engine.counters().denied("inside_multiline"), 1);
    h.server("213 End of status\r\n");
    h.server("229 Entering Extended Passive Mode (|||50621|)\r\n");
    assert_eq!(
        h.holes().len(),
        1,
        "the real reply to EPSV, after the multi-line one"
    );
}

/// A full table evicts closing and dataless connections before live ones.
#[test]
fn full_table_evicts_dead_connections_before_live_ones() {
    let config = Config {
        max_connections: 2,
        ..Config::default()
    };
    let mut h = Harness::with(config, CLIENT4, SERVER4).connected();
    h.login();
    let saved = switch_to(&mut h, 41002);
    let syn = packet(h.client, h.server, h.client_seq, "S", b"");
    h.feed(&syn); // a SYN that never carries data
    h.advance(Duration::from_secs(1));
    let _ = switch_to(&mut h, 41003);
    h.handshake();
    switch_back(&mut h, saved);
    h.client("PASV\r\n");
    h.server("227 Entering Passive Mode (198,51,100,21,195,95).\r\n");
    assert_eq!(h.holes().len(), 1, "the live session was kept");
    assert!(h.logged("closing or dataless 1"));
    assert_eq!(h.engine.counters().resumed, 0);
}

// ---------------------------------------------------------------------------------------
// FTPS with CCC (RFC 4217 §6): TLS record framing is followed, never read inside.

/// A TLS record of content type `kind` around `body` (TLS 1.2 record version).
fn record(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind, 3, 3];
    out.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Through TLS and out again with `CCC`: the handshake, the encrypted `CCC` and its
/// reply, a close_notify (an alert, or under TLS 1.3 an application-data record), then
/// clear text. The first clear-text passive exchange is helped.
#[test]
fn ccc_returns_to_clear_text_and_the_next_passive_reply_is_helped() {
    for close_notify in [21u8, 23] {
        let mut h = Harness::v4().connected();
        h.server("220 ready\r\n");
        h.client("AUTH TLS\r\n");
        h.server("234 AUTH TLS successful\r\n");
        h.send(Side::Client, &record(22, &[1; 300])); // ClientHello
        h.send(
            Side::Server,
            &[record(22, &[2; 90]), record(20, &[1])].concat(),
        );
        h.send(Side::Client, &record(23, b"garbled CCC"));
        h.send(Side::Server, &record(23, b"garbled 200 CCC"));
        h.send(Side::Server, &record(close_notify, &[0; 2]));
        h.client("PASV\r\n");
        h.server("227 Entering Passive Mode (198,51,100,21,195,96).\r\n");
        assert_eq!(
            h.holes(),
            [passive("192.0.2.10", "198.51.100.21", 50016)],
            "close_notify type {close_notify}"
        );
        assert!(h.logged("cleartext dir=client") && h.logged("cleartext dir=server"));
    }
}

/// Record headers and bodies split anywhere across segments change nothing.
#[test]
fn tls_records_split_across_segments_are_followed() {
    let mut h = Harness::v6().connected();
    h.client("AUTH TLS\r\n");
    h.server("234 ok\r\n");
    let server_bytes = [record(22, &[9; 70]), record(23, b"229 (|||6001|)\r\n")].concat();
    for chunk in server_bytes.chunks(3) {
        h.send(Side::Server, chunk);
    }
    h.send(Side::Client, &record(23, b"EPSV\r\n")[..4]);
    h.send(Side::Client, &record(23, b"EPSV\r\n")[4..]);
    h.client("EPSV\r\n");
    h.server("229 Entering Extended Passive Mode (|||50417|)\r\n");
    assert_eq!(
        h.holes(),
        [passive("2001:db8:1::10", "2001:db8:2::21", 50417)]
    );
}

/// A `234` at the first bytes after a server gap is no proven line start: it starts no
/// TLS, and the replies after it are read.
#[test]
fn reply_fragment_after_a_gap_starts_no_tls() {
    let mut h = Harness::v6().connected();
    h.login();
    h.client("STAT *\r\n");
    h.lose(Side::Server, b"213-status of *:\r\n");
    h.client("EPSV\r\n");
    h.server("234 x\r\n213 End\r\n229 Entering Extended Passive Mode (|||50422|)\r\n");
    assert_eq!(h.engine.counters().tls, 0);
    assert_eq!(h.holes().len(), 1);
}

/// A gap inside TLS loses the record alignment: nothing of that stream is read again.
#[test]
fn gap_inside_tls_blinds_the_stream() {
    let mut h = Harness::v6().connected();
    h.client("AUTH TLS\r\n");
    h.server("234 ok\r\n");
    h.lose(Side::Client, &record(22, &[1; 40]));
    h.send(Side::Client, b"EPRT |2|2001:db8:1::10|50418|\r\n");
    h.server("x"); // its acknowledgment proves the client's gap
    h.client("EPRT |2|2001:db8:1::10|50419|\r\n");
    assert!(h.holes().is_empty());
}

// ---------------------------------------------------------------------------------------
// Graceful restart: the stopping instance hands its connections to the next one.

/// The next instance resumes exactly: the first `EPSV` after the restart is helped.
#[test]
fn handed_over_connection_is_helped_at_once_after_a_restart() {
    let mut h = Harness::v6().connected();
    h.login();
    h.client("EPSV\r\n"); // sent while the old instance stops...
    let state = h.engine.export_state();
    h.engine = ftp6proxy_core::Engine::new(Config::default());
    assert_eq!(h.engine.import_state(h.now, &state), Ok(1));
    h.server("229 Entering Extended Passive Mode (|||50630|)\r\n"); // ...answered after
    assert_eq!(
        h.holes(),
        [passive("2001:db8:1::10", "2001:db8:2::21", 50630)]
    );
    h.client("EPRT |2|2001:db8:1::10|50631|\r\n");
    assert_eq!(h.holes().len(), 2);
}

/// The pipelined-echo attack across a restart: a multi-line reply open at the stop is
/// still open after it.
#[test]
fn pipelined_echo_across_a_restart_with_state_opens_nothing() {
    let mut h = Harness::v6().connected();
    h.login();
    h.client("STAT *\r\n");
    h.server("213-status of *:\r\n");
    let state = h.engine.export_state();
    h.engine = ftp6proxy_core::Engine::new(Config::default());
    h.engine.import_state(h.now, &state).unwrap();
    h.client("EPSV\r\n");
    h.server("229 Entering Extended Passive Mode (|||6000|)\r\n");
    assert!(h.holes().is_empty());
}

/// Without state (a crash), the same connection is joined mid-stream: the first `EPSV`
/// exchange is cut, the next whole one is helped, and commands from the next line.
#[test]
fn restart_without_state_joins_mid_stream() {
    let mut h = Harness::v6().connected();
    h.login();
    h.engine = ftp6proxy_core::Engine::new(Config::default());
    h.client("EPSV\r\n");
    h.server("229 Entering Extended Passive Mode (|||50632|)\r\n");
    assert!(h.holes().is_empty());
    h.client("EPSV\r\n");
    h.server("229 Entering Extended Passive Mode (|||50633|)\r\n");
    assert_eq!(
        h.holes(),
        [passive("2001:db8:1::10", "2001:db8:2::21", 50633)]
    );
    h.client("EPRT |2|2001:db8:1::10|50634|\r\n");
    assert_eq!(h.holes().len(), 2);
}
