//! Test harness: drives an [`Engine`] through a TCP conversation on a fake clock, with a
//! recording firewall that confirms every action, as the daemon's loop would.
//!
//! Packets are built with etherparse's `PacketBuilder`, so checksums are real.
#![allow(dead_code, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use ftp6proxy_core::engine::{Checksum, Config, Engine, Event, Outcome};
use ftp6proxy_core::{FwAction, HoleSpec, Slot};

pub const CLIENT6: &str = "[2001:db8:1::10]:40000";
pub const SERVER6: &str = "[2001:db8:2::21]:21";
pub const CLIENT4: &str = "192.0.2.10:40000";
pub const SERVER4: &str = "198.51.100.21:21";

/// Who sends a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

/// Builds one TCP/IP packet; with `A` in `flags` it acknowledges byte 1 (see
/// [`packet_acking`] for a real acknowledgment number).
pub fn packet(src: SocketAddr, dst: SocketAddr, seq: u32, flags: &str, payload: &[u8]) -> Vec<u8> {
    packet_acking(src, dst, seq, 1, flags, payload)
}

/// Builds one TCP/IP packet acknowledging `ack` (with `A` in `flags`).
pub fn packet_acking(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    flags: &str,
    payload: &[u8],
) -> Vec<u8> {
    let builder = match (src.ip(), dst.ip()) {
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        _ => panic!("mixed families"),
    };
    let mut tcp = builder.tcp(src.port(), dst.port(), seq, 65000);
    if flags.contains('S') {
        tcp = tcp.syn();
    }
    if flags.contains('A') {
        tcp = tcp.ack(ack);
    }
    if flags.contains('F') {
        tcp = tcp.fin();
    }
    if flags.contains('R') {
        tcp = tcp.rst();
    }
    if flags.contains('P') {
        tcp = tcp.psh();
    }
    let mut out = Vec::with_capacity(tcp.size(payload.len()));
    tcp.write(&mut out, payload).expect("write to a Vec");
    out
}

pub struct Harness {
    pub engine: Engine,
    pub now: Instant,
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// Next sequence number of each side.
    pub client_seq: u32,
    pub server_seq: u32,
    /// The simulated firewall: what is installed now.
    pub installed: BTreeMap<Slot, HoleSpec>,
    /// Every action applied, in order.
    pub applied: Vec<FwAction>,
    /// Every event logged, in order.
    pub events: Vec<Event>,
}

impl Harness {
    pub fn with(config: Config, client: &str, server: &str) -> Harness {
        Harness {
            engine: Engine::new(config),
            now: Instant::now(),
            client: client.parse().unwrap(),
            server: server.parse().unwrap(),
            client_seq: 1000,
            server_seq: 5_000_000,
            installed: BTreeMap::new(),
            applied: Vec::new(),
            events: Vec::new(),
        }
    }

    pub fn v6() -> Harness {
        Harness::with(Config::default(), CLIENT6, SERVER6)
    }

    pub fn v4() -> Harness {
        Harness::with(Config::default(), CLIENT4, SERVER4)
    }

    /// A connected harness (handshake seen).
    pub fn connected(mut self) -> Harness {
        self.handshake();
        self
    }

    pub fn handshake(&mut self) {
        let syn = packet(self.client, self.server, self.client_seq, "S", b"");
        self.feed(&syn);
        self.client_seq += 1;
        let syn_ack = packet(self.server, self.client, self.server_seq, "SA", b"");
        self.feed(&syn_ack);
        self.server_seq += 1;
        let ack = packet(self.client, self.server, self.client_seq, "A", b"");
        self.feed(&ack);
    }

    /// Feeds a packet, applies its outcome like the daemon does, returns the outcome.
    pub fn feed(&mut self, bytes: &[u8]) -> Outcome {
        self.feed_with(bytes, Checksum::Verify)
    }

    pub fn feed_with(&mut self, bytes: &[u8], checksum: Checksum) -> Outcome {
        let outcome = self
            .engine
            .on_packet_with_checksum(self.now, bytes, checksum);
        self.apply(&outcome.actions);
        outcome
    }

    fn apply(&mut self, actions: &[FwAction]) {
        for action in actions {
            match *action {
                FwAction::Open { slot, spec, .. } => {
                    assert!(
                        self.installed.insert(slot, spec).is_none(),
                        "slot {slot} opened twice"
                    );
                }
                FwAction::Refresh { slot, spec, .. } => {
                    assert_eq!(
                        self.installed.get(&slot),
                        Some(&spec),
                        "refresh of a closed slot"
                    );
                }
                FwAction::Close { slot, spec } => {
                    assert_eq!(
                        self.installed.remove(&slot),
                        Some(spec),
                        "close of a free slot"
                    );
                }
            }
            self.applied.push(*action);
            self.engine.action_done(action.handle());
        }
        self.drain_events();
    }

    pub fn drain_events(&mut self) {
        while let Some(event) = self.engine.poll_event() {
            self.events.push(event);
        }
    }

    /// Sends `data` from `side` as one segment at the side's next sequence number,
    /// acknowledging everything the other side has sent.
    pub fn send(&mut self, side: Side, data: &[u8]) -> Outcome {
        let (src, dst, seq) = self.next(side);
        let bytes = packet_acking(src, dst, seq, self.acked_by(side), "AP", data);
        self.advance_seq(side, data.len());
        self.feed(&bytes)
    }

    /// Sends `data` from `side` at an explicit sequence number (retransmission, reordering);
    /// the side's next sequence number is not changed.
    pub fn send_at(&mut self, side: Side, seq: u32, data: &[u8]) -> Outcome {
        let (src, dst, _) = self.next(side);
        let bytes = packet_acking(src, dst, seq, self.acked_by(side), "AP", data);
        self.feed(&bytes)
    }

    /// The acknowledgment number `side` sends: the other side's next sequence number
    /// (everything sent has arrived, as on a quiet LAN).
    pub fn acked_by(&self, side: Side) -> u32 {
        match side {
            Side::Client => self.server_seq,
            Side::Server => self.client_seq,
        }
    }

    /// `side` loses `data` on the way past the engine: the receiver gets it, the engine
    /// never sees it (NFQUEUE fail-open, a full divert buffer, a restart).
    pub fn lose(&mut self, side: Side, data: &[u8]) {
        self.advance_seq(side, data.len());
    }

    pub fn next(&self, side: Side) -> (SocketAddr, SocketAddr, u32) {
        match side {
            Side::Client => (self.client, self.server, self.client_seq),
            Side::Server => (self.server, self.client, self.server_seq),
        }
    }

    pub fn advance_seq(&mut self, side: Side, n: usize) {
        let n = u32::try_from(n).unwrap();
        match side {
            Side::Client => self.client_seq = self.client_seq.wrapping_add(n),
            Side::Server => self.server_seq = self.server_seq.wrapping_add(n),
        }
    }

    pub fn client(&mut self, line: &str) -> Outcome {
        self.send(Side::Client, line.as_bytes())
    }

    pub fn server(&mut self, line: &str) -> Outcome {
        self.send(Side::Server, line.as_bytes())
    }

    /// Moves the fake clock and fires the timer as the loop would.
    pub fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        while let Some(at) = self.engine.poll_timeout().filter(|at| *at <= until) {
            self.now = self.now.max(at);
            let actions = self.engine.tick(self.now);
            self.apply(&actions);
        }
        self.now = until;
        let actions = self.engine.tick(self.now);
        self.apply(&actions);
    }

    pub fn holes(&self) -> Vec<HoleSpec> {
        self.installed.values().copied().collect()
    }

    pub fn opens(&self) -> usize {
        self.applied
            .iter()
            .filter(|a| matches!(a, FwAction::Open { .. }))
            .count()
    }

    pub fn log(&self) -> Vec<String> {
        self.events.iter().map(ToString::to_string).collect()
    }

    pub fn logged(&self, needle: &str) -> bool {
        self.log().iter().any(|line| line.contains(needle))
    }

    /// Standard login.
    pub fn login(&mut self) {
        self.server("220 ftp.example.org ready\r\n");
        self.client("USER anonymous\r\n");
        self.server("331 Please specify the password.\r\n");
        self.client("PASS guest@\r\n");
        self.server("230 Login successful.\r\n");
    }
}

pub fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}
