//! `ftp6proxy --replay` over the captures in tests/captures/, made in the namespace lab
//! with real clients and servers while the daemon ran (tests/captures/README.md says how).
//!
//! The captures differ from one run of tests/captures/make-captures to the next (ports,
//! times), so these tests check what must hold for every run: which data connections there
//! are, that each found the hole its announcement opened, and that nothing else happened (no
//! refusal, no hole that nothing used); and, for the captures made to show them, the
//! refusals and blocked connections.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use ftp6proxy::cli::{self, Parsed, Settings};
use ftp6proxy::replay::{self, capture::Format, matcher::Passage, Verdict};
use ftp6proxy_core::Mode;

fn capture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/captures")
        .join(name)
}

/// `--replay` with `extra`; the lab's FTP ports, as the daemon ran there, unless `extra`
/// names others.
fn settings(extra: &[&str]) -> Settings {
    let mut argv = vec!["ftp6proxy", "--replay", "-"];
    if !extra.contains(&"--ftp-ports") {
        argv.extend(["--ftp-ports", "21,2121,2122"]);
    }
    argv.extend(extra);
    match cli::parse(argv) {
        Parsed::Run(settings) => *settings,
        other => panic!("{other:?}"),
    }
}

fn replay(name: &str) -> (Verdict, String) {
    let mut out = Vec::new();
    let verdict = replay::run(&capture(name), &settings(&[]), &mut out)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    (verdict, String::from_utf8(out).unwrap())
}

/// Mode and family of each data connection, by the hole it found.
fn kinds(verdict: &Verdict) -> Vec<(Mode, bool)> {
    verdict
        .data
        .iter()
        .map(|d| match d.passage {
            Passage::Hole(hole) | Passage::Late { hole, .. } => {
                (hole.spec.mode, matches!(hole.spec.dst, IpAddr::V6(_)))
            }
            Passage::Blocked(_) => panic!("blocked: {d:?}"),
        })
        .collect()
}

/// Every data connection found a hole at its first SYN; every hole was used; nothing was
/// refused or malformed; every line of the report is accounted for.
fn all_covered(name: &str, verdict: &Verdict, out: &str) {
    assert!(
        !verdict.data.is_empty(),
        "{name}: no data connection\n{out}"
    );
    for d in &verdict.data {
        assert!(
            matches!(d.passage, Passage::Hole(_)),
            "{name}: {d:?}\n{out}"
        );
    }
    assert_eq!(verdict.exit_code(), 0, "{name}\n{out}");
    assert_eq!(verdict.unused_holes, 0, "{name}: unused holes\n{out}");
    assert_eq!(verdict.refused(), 0, "{name}: refusals\n{out}");
    assert_eq!(verdict.counters.malformed, 0, "{name}\n{out}");
    assert_eq!(verdict.counters.bad_checksum, 0, "{name}\n{out}");
    assert_eq!(verdict.cut_packets, 0, "{name}\n{out}");
    // Veth pairs leave checksums to the "hardware": the lab's captures are full of them.
    assert!(verdict.offloaded_checksums > 0, "{name}\n{out}");
    for line in out.lines() {
        let known = [
            "replay ",
            "connection client=",
            "hole open ",
            "data ",
            "note: ",
            "summary: ",
        ];
        assert!(
            known.iter().any(|k| line.contains(k)),
            "{name}: unexpected line {line:?}\n{out}"
        );
    }
}

#[test]
fn passive_ipv6_from_three_clients_linux_cooked_v2() {
    let (verdict, out) = replay("passive-v6.sll2.pcap");
    all_covered("passive-v6", &verdict, &out);
    // curl EPSV on vsftpd, lftp EPSV on pyftpdlib, ftplib LIST and RETR on vsftpd.
    assert_eq!(kinds(&verdict), [(Mode::Passive, true); 4], "{out}");
    assert_eq!(verdict.counters.holes_opened, 4);
    assert_eq!(verdict.format, Format::Pcap);
    assert_eq!(verdict.counters.connections, 3);
}

#[test]
fn active_ipv4_port_and_eprt_linux_cooked_v1() {
    let (verdict, out) = replay("active-v4.sll.pcap");
    all_covered("active-v4", &verdict, &out);
    // curl PORT on vsftpd, lftp PORT on pyftpdlib, ftplib EPRT on vsftpd.
    assert_eq!(kinds(&verdict), [(Mode::Active, false); 3], "{out}");
    assert!(out.contains("hole open slot=64000 mode=active from=198.51.100.21 to=192.0.2.10:"));
    // vsftpd connects from port 20.
    assert_eq!(verdict.data[0].src.port(), 20, "{out}");
}

/// One Ethernet capture with nanosecond timestamps, and the same packets behind raw IP,
/// BSD NULL and OpenBSD LOOP headers: four link layers, one result.
#[test]
fn ethernet_raw_null_and_loop_agree() {
    let (verdict, out) = replay("passive.eth-ns.pcap");
    all_covered("passive.eth-ns", &verdict, &out);
    assert_eq!(
        kinds(&verdict),
        [
            (Mode::Passive, false),
            (Mode::Passive, false),
            (Mode::Passive, true)
        ],
        "{out}"
    );
    for other in ["passive.raw.pcap", "passive.null.pcap", "passive.loop.pcap"] {
        let (theirs, their_out) = replay(other);
        all_covered(other, &theirs, &their_out);
        assert_eq!(theirs.data, verdict.data, "{other}");
        assert_eq!(theirs.counters, verdict.counters, "{other}");
        assert_eq!(theirs.not_ip, 0, "{other}");
        // The same report but for the file name in the first line.
        let body = |s: &str| s.lines().skip(1).collect::<Vec<_>>().join("\n");
        assert_eq!(body(&their_out), body(&out), "{other}");
    }
}

/// dumpcap's pcapng of two interfaces: each interface's packets come in bursts, so a reply
/// seen on one comes in the file after the data SYN seen on the other.
#[test]
fn pcapng_of_two_interfaces_is_replayed_in_time_order() {
    let (verdict, out) = replay("mixed.eth.pcapng");
    all_covered("mixed", &verdict, &out);
    assert_eq!(verdict.format, Format::Pcapng);
    assert!(verdict.reordered > 0, "{out}");
    let mut kinds = kinds(&verdict);
    kinds.sort_by_key(|(mode, v6)| (*mode == Mode::Active, *v6));
    assert_eq!(
        kinds,
        [
            (Mode::Passive, false),
            (Mode::Passive, true),
            (Mode::Active, false),
            (Mode::Active, true)
        ],
        "{out}"
    );
}

/// A normal transfer, then three the firewall blocks, against the hostile server: the exit
/// status says so.
#[test]
fn blocked_transfers_are_explained_and_set_the_exit_status() {
    let (verdict, out) = replay("blocked.sll2.pcap");
    assert_eq!(verdict.data.len(), 3, "{out}");
    assert_eq!((verdict.passed(), verdict.blocked()), (1, 2), "{out}");
    assert_eq!(verdict.exit_code(), replay::EX_BLOCKED);
    // 227 with port 80; curl connects there anyway.
    assert_eq!(verdict.counters.denied("low_port"), 1, "{out}");
    assert!(
        out.contains("deny reason=low_port port=80 cmd=227"),
        "{out}"
    );
    assert!(
        out.contains("> 198.51.100.21:80 BLOCKED: no hole was opened from 192.0.2.10"),
        "{out}"
    );
    // An unsolicited 229, and a client that connects to the port it names.
    assert_eq!(verdict.counters.denied("unsolicited"), 1, "{out}");
    assert!(out.contains("> [2001:db8:2::21]:50400 BLOCKED"), "{out}");
    // PORT to the third-party host: refused. The server's SYN goes to a host that is not an
    // end of the control connection, so it is no data connection of this capture.
    assert_eq!(verdict.counters.denied("bounce"), 1, "{out}");
    assert!(out.contains("deny reason=bounce announced=203.0.113.99 sender=192.0.2.10 cmd=PORT"));
    assert!(!out.contains("203.0.113.99:50500"), "{out}");
}

/// The client's RETR segment was cut from the capture: the engine never saw it, the
/// server did (as when NFQUEUE fails open). The server's ACK proves the gap; the engine
/// resumes at the next line and every later announcement is helped.
///
/// Recorded with the engine of commit 6713ce8 ("Engine: recover after gaps") and later.
/// Before it, both later 227s were refused as "unsolicited": one transfer was blocked, the
/// other passed only through the earlier hole to the same port (tests/captures/README.md
/// keeps that output).
#[test]
fn lost_client_segment_is_recovered() {
    let (verdict, out) = replay("lost-client-segment.sll2.pcap");
    assert_eq!(verdict.data.len(), 4, "{out}");
    assert_eq!(verdict.blocked(), 0, "{out}");
    assert_eq!(verdict.refused(), 0, "{out}");
    assert_eq!(verdict.unused_holes, 0, "{out}");
    assert!(out.contains("gap dir=client"), "{out}");
}

/// The server's first "150" reply was cut from the capture. The client's acknowledgment
/// proves the gap; the engine reads the server's stream again from the next line end,
/// forgets the commands whose replies may have been lost, and helps the next whole
/// exchange (ARCHITECTURE.md, "Gaps and rejoining"). Every data connection passes.
/// Before that, the three passive transfers after the gap were blocked (`after_gap`).
#[test]
fn lost_server_segment_is_recovered() {
    let (verdict, out) = replay("lost-server-segment.sll2.pcap");
    assert_eq!(verdict.data.len(), 4, "{out}");
    assert_eq!(verdict.blocked(), 0, "{out}");
    assert_eq!(verdict.refused(), 0, "{out}");
    assert_eq!(verdict.unused_holes, 0, "{out}");
    assert_eq!(verdict.exit_code(), 0);
    assert!(out.contains("gap dir=server"), "{out}");
}

/// One IPv6 control connection (ftplib, EPSV, vsftpd) across a graceful restart and a
/// crash of the daemon on the gateway: every transfer passed live, and the capture
/// replays with every data connection covered and nothing spurious.
#[test]
fn connection_across_restarts_replays_covered() {
    let (verdict, out) = replay("restart.sll2.pcap");
    assert_eq!(verdict.data.len(), 5, "{out}");
    assert_eq!(verdict.blocked(), 0, "{out}");
    assert_eq!(verdict.refused(), 0, "{out}");
    assert_eq!(verdict.unused_holes, 0, "{out}");
    assert_eq!(kinds(&verdict), [(Mode::Passive, true); 5], "{out}");
}

/// An nft rule on the gateway dropped the client's first RETR after tcpdump saw it; the
/// server retransmitted its 227 (its ACK had been lost too) and the client its RETR. The
/// retransmitted 227 re-arms its hole; everything passes.
#[test]
fn dropped_and_retransmitted_segment_changes_nothing() {
    let (verdict, out) = replay("lost-retransmitted.sll2.pcap");
    assert_eq!(verdict.data.len(), 3, "{out}");
    assert_eq!(verdict.blocked(), 0, "{out}");
    assert_eq!(verdict.refused(), 0, "{out}");
    assert_eq!(verdict.unused_holes, 0, "{out}");
    assert_eq!(verdict.counters.holes_rearmed, 1, "{out}");
}

/// -b, -c and --ftp-ports are the engine's (-t: see the unit tests).
#[test]
fn flags_are_honoured() {
    let run = |extra: &[&str]| {
        let mut out = Vec::new();
        let verdict =
            replay::run(&capture("passive-v6.sll2.pcap"), &settings(extra), &mut out).unwrap();
        (verdict, String::from_utf8(out).unwrap())
    };
    // Two slots from 1000: the third and fourth holes find the table full (the first two
    // live 2 s), and their data connections are blocked.
    let (verdict, out) = run(&["-b", "1000", "-c", "2"]);
    assert!(out.contains("hole open slot=1000 "), "{out}");
    assert_eq!(verdict.counters.denied("table_full"), 2, "{out}");
    assert_eq!((verdict.passed(), verdict.blocked()), (2, 2), "{out}");
    let (verdict, out) = run(&["-b", "1000", "-c", "3"]);
    assert_eq!((verdict.passed(), verdict.blocked()), (3, 1), "{out}");
    // Port 2121 not an FTP port: lftp's control connection to pyftpdlib is just another
    // TCP connection between the two hosts, and so is its data connection: neither finds
    // a hole.
    let (verdict, out) = run(&["--ftp-ports", "21"]);
    assert_eq!(verdict.blocked(), 2, "{out}");
    assert!(out.contains(":2121 BLOCKED"), "{out}");
}

/// The binary: report on stdout, one error line on stderr, the documented exit statuses.
#[test]
fn command_line_exit_statuses() {
    let bin = env!("CARGO_BIN_EXE_ftp6proxy");
    let run = |args: &[&str]| Command::new(bin).args(args).output().unwrap();
    let ports = ["--ftp-ports", "21,2121,2122"];

    let good = capture("active-v4.sll.pcap");
    let out = run(&[&["--replay", good.to_str().unwrap()][..], &ports].concat());
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stderr.is_empty());
    assert!(String::from_utf8_lossy(&out.stdout).contains("summary: "));

    // "-" is standard input, as from `tcpdump -w -`.
    let out = Command::new(bin)
        .args(["--replay", "-"])
        .args(ports)
        .stdin(std::fs::File::open(&good).unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.starts_with("+0.000000 replay (standard input) (pcap)"),
        "{report}"
    );

    let blocked = capture("blocked.sll2.pcap");
    let out = run(&[&["--replay", blocked.to_str().unwrap()][..], &ports].concat());
    assert_eq!(out.status.code(), Some(1));

    let dir = std::env::temp_dir().join(format!("ftp6proxy-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.join("cut.pcap");
    std::fs::write(&cut, &bytes[..bytes.len() - 7]).unwrap();
    let out = run(&["--replay", cut.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(replay::EX_DATAERR));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("ftp6proxy: {}: byte offset ", cut.display())),
        "{err}"
    );
    assert!(err.contains("truncated capture"), "{err}");

    let text = dir.join("notes.txt");
    std::fs::write(&text, "not a capture\n").unwrap();
    let out = run(&["--replay", text.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(replay::EX_DATAERR));

    let out = run(&["--replay", dir.join("missing.pcap").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(replay::EX_NOINPUT));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);

    let out = run(&["--replay", good.to_str().unwrap(), "--check"]);
    assert_eq!(out.status.code(), Some(64));
    std::fs::remove_dir_all(&dir).unwrap();
}
