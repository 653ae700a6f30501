//! The nftables backend against the real kernel, each test in its own network namespace.
//!
//! Needs root. Sets are created with the `nft` tool, as an admin would; the backend's work
//! is checked with `nft list set`.
#![cfg(target_os = "linux")]

#[path = "support/netns.rs"]
mod common;

use std::time::{Duration, Instant};

use common::Netns;
use ftp6proxy::firewall::nft::Nft;
use ftp6proxy::firewall::{Error, ErrorKind, Firewall, Op};
use ftp6proxy_core::{FwAction, HoleSpec, Mode, Slot};

const SET6: &str = "{ type ipv6_addr . ipv6_addr . inet_service; flags timeout; }";
const SET4: &str = "{ type ipv4_addr . ipv4_addr . inet_service; flags timeout; }";
const ADVICE6: &str = "nft add set inet filter ftp6proxy6 '{ type ipv6_addr . ipv6_addr . inet_service; flags timeout; }'";
const ADVICE4: &str = "nft add set inet filter ftp6proxy4 '{ type ipv4_addr . ipv4_addr . inet_service; flags timeout; }'";

fn with_sets() -> Netns {
    let ns = Netns::enter();
    ns.nft("add table inet filter");
    ns.nft(&format!("add set inet filter ftp6proxy6 {SET6}"));
    ns.nft(&format!("add set inet filter ftp6proxy4 {SET4}"));
    ns
}

fn spec6(port: u16) -> HoleSpec {
    HoleSpec {
        mode: Mode::Passive,
        src: "2001:db8::10".parse().unwrap(),
        dst: "2001:db8::21".parse().unwrap(),
        dport: port,
    }
}

fn spec4(port: u16) -> HoleSpec {
    HoleSpec {
        mode: Mode::Active,
        src: "198.51.100.21".parse().unwrap(),
        dst: "203.0.113.10".parse().unwrap(),
        dport: port,
    }
}

fn open(spec: HoleSpec, ttl: Duration) -> FwAction {
    FwAction::Open {
        slot: Slot(64003),
        spec,
        ttl,
    }
}

fn setup_message(result: Result<(), Error>) -> String {
    match result {
        Err(Error {
            kind: ErrorKind::Setup(msg),
            ..
        }) => msg,
        other => panic!("expected a setup error, got {other:?}"),
    }
}

#[test]
fn check_accepts_sets_declared_with_type() {
    let _ns = with_sets();
    let mut nft = Nft::open("inet filter", "ftp6proxy").unwrap();
    nft.check().unwrap();
}

/// nft stores the same concatenated datatype id for `typeof` as for `type`.
#[test]
fn check_accepts_sets_declared_with_typeof() {
    let ns = Netns::enter();
    ns.nft("add table ip6 fw");
    ns.nft("add set ip6 fw holes6 { typeof ip6 saddr . ip6 daddr . tcp dport; flags timeout; }");
    ns.nft("add set ip6 fw holes4 { typeof ip saddr . ip daddr . tcp dport; flags timeout; }");
    let mut nft = Nft::open("ip6 fw", "holes").unwrap();
    nft.check().unwrap();
}

#[test]
fn check_prints_exact_commands_for_missing_set() {
    let ns = Netns::enter();
    ns.nft("add table inet filter");
    ns.nft(&format!("add set inet filter ftp6proxy4 {SET4}"));
    let mut nft = Nft::open("inet filter", "ftp6proxy").unwrap();
    let msg = setup_message(nft.check());
    assert!(msg.contains("ftp6proxy6 is missing"), "{msg}");
    assert!(msg.contains(ADVICE6), "{msg}");
    assert!(!msg.contains(ADVICE4), "{msg}");
}

#[test]
fn check_prints_exact_commands_for_missing_table() {
    let _ns = Netns::enter();
    let mut nft = Nft::open("inet filter", "ftp6proxy").unwrap();
    let msg = setup_message(nft.check());
    assert!(msg.contains("nft add table inet filter"), "{msg}");
    assert!(msg.contains(ADVICE6), "{msg}");
    assert!(msg.contains(ADVICE4), "{msg}");
}

#[test]
fn check_refuses_set_without_timeout_flag() {
    let ns = Netns::enter();
    ns.nft("add table inet filter");
    ns.nft("add set inet filter ftp6proxy6 { type ipv6_addr . ipv6_addr . inet_service; }");
    ns.nft(&format!("add set inet filter ftp6proxy4 {SET4}"));
    let mut nft = Nft::open("inet filter", "ftp6proxy").unwrap();
    let msg = setup_message(nft.check());
    assert!(msg.contains("flags timeout"), "{msg}");
    assert!(
        msg.contains("nft delete set inet filter ftp6proxy6"),
        "{msg}"
    );
    assert!(msg.contains(ADVICE6), "{msg}");
}

#[test]
fn check_refuses_set_with_wrong_key_type() {
    let ns = Netns::enter();
    ns.nft("add table inet filter");
    ns.nft(&format!("add set inet filter ftp6proxy6 {SET6}"));
    ns.nft("add set inet filter ftp6proxy4 { type ipv4_addr . inet_service; flags timeout; }");
    let mut nft = Nft::open("inet filter", "ftp6proxy").unwrap();
    let msg = setup_message(nft.check());
    assert!(
        msg.contains("ftp6proxy4 in table inet filter has key type"),
        "{msg}"
    );
    assert!(msg.contains(ADVICE4), "{msg}");
}

#[test]
fn open_v6_adds_element_with_timeout_and_close_removes_it() {
    let ns = with_sets();
    let mut nft = Nft::open("inet filter", "ftp6proxy").unwrap();
    nft.apply(&open(spec6(50123), Duration::from_secs(30)))
        .unwrap();
    let listed = ns.nft("list set inet filter ftp6proxy6");
    assert!(
        listed.contains("2001:db8::10 . 2001:db8::21 . 50123 timeout 30s"),
        "{listed}"
    );
    assert!(
        listed.contains("comment \"ftp6proxy slot 64003\""),
        "{listed}"
    );
    let close = FwAction::Close {
        slot: Slot(64003),
        spec: spec6(50123),
    };
    nft.apply(&close).unwrap();
    let listed = ns.nft("list set inet filter ftp6proxy6");
    assert!(!listed.contains("50123"), "{listed}");
    // Closing again (the kernel timeout got there first) is not an error.
    nft.apply(&close).unwrap();
}

#[test]
fn open_v4_adds_element_with_timeout_and_close_removes_it() {
    let ns = with_sets();
    let mut nft = Nft::open("inet filter", "ftp6proxy").unwrap();
    nft.apply(&open(spec4(40000), Duration::from_secs(30)))
        .unwrap();
    let listed = ns.nft("list set inet filter ftp6proxy4");
    assert!(
        listed.contains("198.51.100.21 . 203.0.113.10 . 40000 timeout 30s"),
        "{listed}"
    );
    nft.apply(&FwAction::Close {
        slot: Slot(64003),
        spec: spec4(40000),
    })
    .unwrap();
    let listed = ns.nft("list set inet filter ftp6proxy4");
    assert!(!listed.contains("40000"), "{listed}");
}

/// Open of an element that is already there, and Refresh, restart its timeout: the element
/// carries the new ttl afterwards.
#[test]
fn open_again_and_refresh_restart_the_timeout() {
    let ns = with_sets();
    let mut nft = Nft::open("inet filter", "ftp6proxy").unwrap();
    nft.apply(&open(spec6(50000), Duration::from_secs(20)))
        .unwrap();
    nft.apply(&open(spec6(50000), Duration::from_secs(40)))
        .unwrap();
    let listed = ns.nft("list set inet filter ftp6proxy6");
    assert!(listed.contains("50000 timeout 40s"), "{listed}");
    nft.apply(&FwAction::Refresh {
        slot: Slot(64003),
        spec: spec6(50000),
        ttl: Duration::from_secs(50),
    })
    .unwrap();
    let listed = ns.nft("list set inet filter ftp6proxy6");
    assert!(listed.contains("50000 timeout 50s"), "{listed}");
    assert_eq!(listed.matches("50000").count(), 1, "{listed}");
}

fn wait_until_gone(ns: &Netns, set: &str, needle: &str) {
    let start = Instant::now();
    loop {
        let listed = ns.nft(&format!("list set inet filter {set}"));
        if !listed.contains(needle) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "element {needle} still there after 5 s: {listed}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn element_with_short_ttl_expires_by_itself_v6_and_v4() {
    let ns = with_sets();
    let mut nft = Nft::open("inet filter", "ftp6proxy").unwrap();
    nft.apply(&open(spec6(51000), Duration::from_secs(1)))
        .unwrap();
    nft.apply(&open(spec4(51000), Duration::from_secs(1)))
        .unwrap();
    assert!(ns.nft("list set inet filter ftp6proxy6").contains("51000"));
    wait_until_gone(&ns, "ftp6proxy6", "51000");
    wait_until_gone(&ns, "ftp6proxy4", "51000");
}

/// Invariant 6: a crashed predecessor's holes are removed, and nothing else is touched.
#[test]
fn flush_owned_empties_both_sets_and_nothing_else() {
    let ns = with_sets();
    ns.nft(&format!("add set inet filter other6 {SET6}"));
    ns.nft("add element inet filter other6 { 2001:db8::99 . 2001:db8::98 . 7000 timeout 1m }");
    let mut nft = Nft::open("inet filter", "ftp6proxy").unwrap();
    nft.apply(&open(spec6(52000), Duration::from_secs(60)))
        .unwrap();
    nft.apply(&open(spec6(52001), Duration::from_secs(60)))
        .unwrap();
    nft.apply(&open(spec4(52002), Duration::from_secs(60)))
        .unwrap();
    assert_eq!(nft.flush_owned().unwrap(), 3);
    for set in ["ftp6proxy6", "ftp6proxy4"] {
        let listed = ns.nft(&format!("list set inet filter {set}"));
        assert!(!listed.contains("elements"), "{listed}");
    }
    assert!(ns.nft("list set inet filter other6").contains("7000"));
    assert_eq!(nft.flush_owned().unwrap(), 0);
    nft.check().unwrap();
}

#[test]
fn open_into_missing_set_is_refused_with_the_element_named() {
    let ns = Netns::enter();
    ns.nft("add table inet filter");
    let mut nft = Nft::open("inet filter", "ftp6proxy").unwrap();
    match nft.apply(&open(spec6(53000), Duration::from_secs(2))) {
        Err(Error {
            op: Op::Open,
            slot: Some(Slot(64003)),
            kind: ErrorKind::Refused { what, detail },
        }) => {
            assert!(
                what.contains("2001:db8::10 . 2001:db8::21 . 53000"),
                "{what}"
            );
            assert!(detail.contains("--check"), "{detail}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(!ns.nft_ok("list set inet filter ftp6proxy6"));
}

/// Issue 10, restarts lose no transfer: a starting instance adopts the live holes an
/// earlier one left (their element timeouts are at most -t) and removes the rest: anything
/// with longer to live, or no timeout at all, is no live hole of ours.
#[test]
fn take_over_keeps_live_holes_and_removes_the_rest() {
    let ns = with_sets();
    let mut nft = Nft::open("inet filter", "ftp6proxy").unwrap();
    nft.apply(&open(spec6(50200), Duration::from_secs(2)))
        .unwrap();
    nft.apply(&open(spec4(50201), Duration::from_secs(2)))
        .unwrap();
    ns.nft(
        "add element inet filter ftp6proxy6 { 2001:db8::10 . 2001:db8::21 . 50202 timeout 300s }",
    );
    ns.nft("add element inet filter ftp6proxy4 { 192.0.2.10 . 198.51.100.21 . 50203 timeout 60s }");
    let taken = nft.take_over(Duration::from_secs(2)).unwrap();
    assert_eq!((taken.kept, taken.removed), (2, 2));
    let v6 = ns.nft("list set inet filter ftp6proxy6");
    let v4 = ns.nft("list set inet filter ftp6proxy4");
    assert!(v6.contains("50200") && !v6.contains("50202"), "{v6}");
    assert!(v4.contains("50201") && !v4.contains("50203"), "{v4}");
    assert!(nft.holes_expire());
}
