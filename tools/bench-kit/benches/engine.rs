//! Core micro-benchmarks (issue 12, item 3): `Engine` packets per second for typical control
//! packets (NOOP / 200 exchanges), announcing packets (EPSV / 229, each opening a hole), and
//! lines assembled across segments (each command cut into three segments). Standard
//! library timing only (`harness = false`): the best of several rounds, each on a fresh
//! engine fed pre-built IPv6 packets with real checksums (etherparse), so only the engine's
//! own work is timed. Run: `cargo bench -p ftp6proxy-bench-kit --bench engine`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use ftp6proxy_core::engine::{Checksum, Config, Engine};

const CLIENT: &str = "[2001:db8:1::10]:40000";
const SERVER: &str = "[2001:db8:2::21]:21";
const ROUNDS: usize = 7;

fn packet(src: SocketAddr, dst: SocketAddr, seq: u32, ack: u32, syn: bool, data: &[u8]) -> Vec<u8> {
    let (SocketAddr::V6(s), SocketAddr::V6(d)) = (src, dst) else {
        panic!("IPv6 only")
    };
    let mut tcp = PacketBuilder::ipv6(s.ip().octets(), d.ip().octets(), 64).tcp(
        src.port(),
        dst.port(),
        seq,
        65000,
    );
    if syn {
        tcp = tcp.syn();
    }
    if ack != 0 {
        tcp = tcp.ack(ack);
    }
    if !data.is_empty() {
        tcp = tcp.psh();
    }
    let mut out = Vec::with_capacity(tcp.size(data.len()));
    tcp.write(&mut out, data).expect("write to a Vec");
    out
}

/// A conversation: both directions' packets in order, sequence numbers tracked.
struct Conversation {
    client: SocketAddr,
    server: SocketAddr,
    cseq: u32,
    sseq: u32,
    packets: Vec<Vec<u8>>,
}

impl Conversation {
    fn new() -> Conversation {
        let mut c = Conversation {
            client: CLIENT.parse().unwrap(),
            server: SERVER.parse().unwrap(),
            cseq: 1000,
            sseq: 5_000_000,
            packets: Vec::new(),
        };
        c.packets
            .push(packet(c.client, c.server, c.cseq, 0, true, b""));
        c.cseq += 1;
        let syn_ack = packet(c.server, c.client, c.sseq, c.cseq, true, b"");
        c.packets.push(syn_ack);
        c.sseq += 1;
        c.server_says(b"220 ready\r\n");
        c.client_says(b"USER anonymous\r\n");
        c.server_says(b"230 Login successful.\r\n");
        c
    }

    fn client_says(&mut self, data: &[u8]) {
        let p = packet(self.client, self.server, self.cseq, self.sseq, false, data);
        self.packets.push(p);
        self.cseq = self.cseq.wrapping_add(data.len() as u32);
    }

    fn server_says(&mut self, data: &[u8]) {
        let p = packet(self.server, self.client, self.sseq, self.cseq, false, data);
        self.packets.push(p);
        self.sseq = self.sseq.wrapping_add(data.len() as u32);
    }
}

/// Times `packets` fed to a fresh engine (after `setup` packets, untimed); the best round.
fn best(config: &Config, setup: usize, packets: &[Vec<u8>]) -> (Duration, usize) {
    let mut best = Duration::MAX;
    let mut actions = 0;
    for _ in 0..ROUNDS {
        let mut engine = Engine::new(config.clone());
        let now = Instant::now();
        for p in &packets[..setup] {
            engine.on_packet_with_checksum(now, p, Checksum::Verify);
        }
        let start = Instant::now();
        let mut n = 0;
        for p in &packets[setup..] {
            let out = engine.on_packet_with_checksum(now, black_box(p), Checksum::Verify);
            n += out.actions.len();
            for a in &out.actions {
                engine.action_done(a.handle());
            }
            while engine.poll_event().is_some() {}
        }
        best = best.min(start.elapsed());
        actions = n;
    }
    (best, actions)
}

fn show(name: &str, timed: usize, (t, actions): (Duration, usize), lines: usize) {
    let per = t.as_nanos() as f64 / timed as f64;
    println!(
        "{name:<44} {timed:>7} packets  {:>6.2} M packets/s  {per:>6.0} ns/packet  {:>6.2} M lines/s  holes {actions}",
        1e3 / per,
        lines as f64 / t.as_secs_f64() / 1e6,
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    const N: usize = 20_000;
    let config = Config {
        base: 1,
        count: 65_000,
        ..Config::default()
    };

    let mut c = Conversation::new();
    let setup = c.packets.len();
    for _ in 0..N {
        c.client_says(b"NOOP\r\n");
        c.server_says(b"200 NOOP ok.\r\n");
    }
    show(
        "typical control packets (NOOP / 200)",
        2 * N,
        best(&config, setup, &c.packets),
        2 * N,
    );

    let mut c = Conversation::new();
    let setup = c.packets.len();
    for i in 0..N {
        c.client_says(b"EPSV\r\n");
        let reply = format!(
            "229 Entering Extended Passive Mode (|||{}|)\r\n",
            10_000 + i
        );
        c.server_says(reply.as_bytes());
    }
    show(
        "announcing packets (EPSV / 229, hole each)",
        2 * N,
        best(&config, setup, &c.packets),
        2 * N,
    );

    let mut c = Conversation::new();
    let setup = c.packets.len();
    for _ in 0..N {
        c.client_says(b"NO");
        c.client_says(b"OP");
        c.client_says(b"\r\n");
        c.server_says(b"200 NOOP ok.\r\n");
    }
    show(
        "lines across segments (NOOP in 3 + reply)",
        4 * N,
        best(&config, setup, &c.packets),
        2 * N,
    );
}
