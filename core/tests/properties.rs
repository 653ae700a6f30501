//! Property tests: hostile bytes never panic the engine, and the holes a conversation opens
//! do not depend on how its bytes were cut into segments, retransmitted or reordered.

mod support;

use ftp6proxy_core::engine::{Config, Engine};
use ftp6proxy_core::{FwAction, HoleSpec};
use proptest::prelude::*;
use support::{Harness, Side, CLIENT6, SERVER6};

/// A conversation with every kind of announcement (and some that must open nothing).
const CONVERSATION: &[(Side, &str)] = &[
    (
        Side::Server,
        "220-Welcome\r\n227 Entering Passive Mode (198,51,100,21,1,1)\r\n220 ready\r\n",
    ),
    (Side::Client, "USER anonymous\r\n"),
    (Side::Server, "331 Password please.\r\n"),
    (Side::Client, "PASS x\r\n"),
    (Side::Server, "230 Logged in.\r\n"),
    (Side::Client, "EPSV\r\n"),
    (
        Side::Server,
        "229 Entering Extended Passive Mode (|||50001|)\r\n",
    ),
    (Side::Client, "LIST\r\n"),
    (
        Side::Server,
        "150 Here comes the listing.\r\n226 Directory send OK.\r\n",
    ),
    (Side::Client, "EPRT |2|2001:db8:1::10|50002|\r\n"),
    (Side::Server, "200 EPRT command successful.\r\n"),
    (Side::Client, "EPRT |2|2001:db8:3::99|50003|\r\n"),
    (Side::Server, "200 EPRT command successful.\r\n"),
    (
        Side::Server,
        "229 Entering Extended Passive Mode (|||50004|)\r\n",
    ),
    (Side::Client, "EPSV\r\n"),
    (
        Side::Server,
        "211-Status\r\n229 Entering Extended Passive Mode (|||50005|)\r\n211 End\r\n",
    ),
    (Side::Client, "EPSV\r\n"),
    (
        Side::Server,
        "229 Entering Extended Passive Mode (|||50006|)\r\n",
    ),
];

/// How one message is delivered: cut points, a chunk sent twice, two chunks swapped.
#[derive(Debug, Clone)]
struct Delivery {
    cuts: Vec<usize>,
    duplicate: Option<usize>,
    swap: Option<usize>,
}

fn delivery() -> impl Strategy<Value = Delivery> {
    (
        proptest::collection::vec(1usize..60, 0..6),
        proptest::option::of(0usize..8),
        proptest::option::of(0usize..8),
    )
        .prop_map(|(cuts, duplicate, swap)| Delivery {
            cuts,
            duplicate,
            swap,
        })
}

/// Plays the conversation and returns the holes opened, in order.
fn play(deliveries: Option<&[Delivery]>) -> Vec<HoleSpec> {
    let mut h = Harness::v6();
    h.handshake();
    for (index, &(side, text)) in CONVERSATION.iter().enumerate() {
        let bytes = text.as_bytes();
        let Some(delivery) = deliveries.map(|d| &d[index]) else {
            h.send(side, bytes);
            continue;
        };
        // Cut the message into chunks at the given (sorted, deduplicated) offsets.
        let mut points: Vec<usize> = delivery.cuts.iter().map(|c| c % bytes.len()).collect();
        points.push(0);
        points.push(bytes.len());
        points.sort_unstable();
        points.dedup();
        let base = h.next(side).2;
        let mut chunks: Vec<(u32, &[u8])> = points
            .windows(2)
            .map(|w| (base + u32::try_from(w[0]).unwrap(), &bytes[w[0]..w[1]]))
            .collect();
        if let Some(swap) = delivery.swap {
            let i = swap % chunks.len();
            if i + 1 < chunks.len() {
                chunks.swap(i, i + 1);
            }
        }
        if let Some(dup) = delivery.duplicate {
            let i = dup % chunks.len();
            let copy = chunks[i];
            chunks.insert(i + 1, copy);
        }
        for (seq, chunk) in chunks {
            h.send_at(side, seq, chunk);
        }
        h.advance_seq(side, bytes.len());
    }
    h.applied
        .iter()
        .filter_map(|a| match a {
            FwAction::Open { spec, .. } => Some(*spec),
            _ => None,
        })
        .collect()
}

#[test]
fn baseline_conversation_opens_exactly_the_legitimate_holes() {
    let ports: Vec<u16> = play(None).iter().map(|s| s.dport).collect();
    assert_eq!(ports, [50001, 50002, 50006]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Invariant 5: any segmentation, retransmission or local reordering of a valid
    /// conversation opens the same holes.
    #[test]
    fn segmentation_does_not_change_the_holes(
        deliveries in proptest::collection::vec(delivery(), CONVERSATION.len())
    ) {
        prop_assert_eq!(play(Some(&deliveries)), play(None));
    }

    /// Invariant 1 (core side): arbitrary bytes never panic the engine and open nothing.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
        let mut engine = Engine::new(Config::default());
        #[allow(clippy::disallowed_methods)]
        let now = std::time::Instant::now();
        let outcome = engine.on_packet(now, &bytes);
        prop_assert!(outcome.actions.is_empty());
    }

    /// Arbitrary payloads on a real control connection never panic, and any hole they open
    /// is between the connection's two endpoints on a port >= 1024 (invariant 3).
    #[test]
    fn arbitrary_payloads_only_open_holes_between_the_endpoints(
        payloads in proptest::collection::vec(
            (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..200)), 1..20)
    ) {
        let mut h = Harness::v6();
        h.handshake();
        for (from_client, payload) in payloads {
            let side = if from_client { Side::Client } else { Side::Server };
            h.send(side, &payload);
        }
        for spec in h.holes() {
            let client = CLIENT6.parse::<std::net::SocketAddr>().unwrap().ip();
            let server = SERVER6.parse::<std::net::SocketAddr>().unwrap().ip();
            prop_assert!((spec.src, spec.dst) == (client, server) || (spec.src, spec.dst) == (server, client));
            prop_assert!(spec.dport >= 1024);
        }
    }

    /// Lines built from FTP-ish pieces, to reach deeper than random bytes do.
    #[test]
    fn ftpish_lines_never_open_foreign_holes(
        lines in proptest::collection::vec(
            (any::<bool>(), prop_oneof![
                Just("EPSV".to_string()), Just("PASV".to_string()), Just("LPSV".to_string()),
                "(PORT|EPRT|LPRT) [0-9a-f:.,|]{0,40}",
                "22[789][ -][ -~]{0,60}",
                "[0-9]{3}[ -][ -~]{0,30}",
                "AUTH TLS", "234 ok",
            ]), 1..30)
    ) {
        let mut h = Harness::v6();
        h.handshake();
        for (from_client, line) in lines {
            let side = if from_client { Side::Client } else { Side::Server };
            h.send(side, format!("{line}\r\n").as_bytes());
        }
        let client = CLIENT6.parse::<std::net::SocketAddr>().unwrap().ip();
        let server = SERVER6.parse::<std::net::SocketAddr>().unwrap().ip();
        for spec in h.holes() {
            prop_assert!((spec.src, spec.dst) == (client, server) || (spec.src, spec.dst) == (server, client));
        }
    }
}
