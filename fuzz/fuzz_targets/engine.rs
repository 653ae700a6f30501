//! libFuzzer target for `Engine::on_packet`: the whole path an untrusted packet takes.
//!
//! The input is a sequence of records. Each record is either a raw packet (to fuzz `wire`)
//! or a TCP segment built around fuzzed payload bytes on one fixed control connection (to
//! reach the line assembler, the FTP parsers and the policy, which random IP headers
//! rarely do). After every record the engine's invariants are checked: no panic, every
//! hole between the connection's two endpoints on a port >= 1024, never more holes than
//! slots.
#![no_main]

use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use ftp6proxy_core::engine::{Config, Engine};
use ftp6proxy_core::FwAction;
use libfuzzer_sys::fuzz_target;

const CLIENT: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10);
const SERVER: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x21);

fn segment(to_server: bool, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let (src, dst, sport, dport) = if to_server {
        (CLIENT, SERVER, 40000, 21)
    } else {
        (SERVER, CLIENT, 21, 40000)
    };
    let mut tcp = PacketBuilder::ipv6(src.octets(), dst.octets(), 64).tcp(sport, dport, seq, 65000);
    if flags & 1 != 0 {
        tcp = tcp.syn();
    }
    if flags & 2 != 0 {
        tcp = tcp.fin();
    }
    if flags & 4 != 0 {
        tcp = tcp.rst();
    }
    tcp = tcp.ack(1);
    let mut out = Vec::with_capacity(tcp.size(payload.len()));
    tcp.write(&mut out, payload).expect("write to a Vec");
    out
}

fuzz_target!(|data: &[u8]| {
    let config = Config {
        count: 8,
        ..Config::default()
    };
    let mut engine = Engine::new(config);
    let start = Instant::now();
    let mut now = start;
    let mut seqs = [1000u32, 9000u32];
    let mut rest = data;
    while let [kind, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (body, next) = tail.split_at(len);
        rest = next;
        let outcome = if kind & 0x80 != 0 {
            engine.on_packet(now, body)
        } else {
            let side = usize::from(kind & 1);
            // Mostly in order; sometimes rewind or skip to exercise reassembly.
            let jitter = u32::from(kind >> 4 & 0x7);
            let seq = match kind >> 1 & 3 {
                0 => seqs[side],
                1 => seqs[side].wrapping_sub(jitter),
                _ => seqs[side].wrapping_add(jitter),
            };
            let flags = if kind & 0x08 != 0 { kind >> 4 } else { 0 };
            let packet = segment(side == 0, seq, flags, body);
            let syn = u32::from(flags & 1);
            seqs[side] = seq.wrapping_add(syn + u32::try_from(body.len()).unwrap_or(0));
            engine.on_packet(now, &packet)
        };
        for action in &outcome.actions {
            if let FwAction::Open { spec, .. } | FwAction::Refresh { spec, .. } = action {
                let ends = [IpAddr::V6(CLIENT), IpAddr::V6(SERVER)];
                assert!(ends.contains(&spec.src) && ends.contains(&spec.dst));
                assert_ne!(spec.src, spec.dst);
                assert!(spec.dport >= 1024);
            }
            engine.action_done(action.handle());
        }
        assert!(engine.open_holes() <= 8);
        now += Duration::from_millis(u64::from(kind & 0x3f) * 50);
        engine.tick(now);
        while engine.poll_event().is_some() {}
    }
});
