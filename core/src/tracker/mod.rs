//! Connection tracking: the table of FTP control connections and, per connection, the two
//! line assemblers and the FTP session state.
//!
//! Owns the 4-tuple table (which side is the server is decided by the configured FTP ports),
//! its cap and idle reaping (DESIGN.md invariant 7), FIN/RST handling, and the memory of the
//! last announcement per direction so a retransmitted announcement can re-arm its hole.
//! Knows no firewall and decides nothing about holes.

pub mod assembler;
pub mod session;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::holes::HoleSpec;
use crate::ConnId;

pub use assembler::{Fed, Line, LineAssembler, MAX_LINE};
pub use session::{LineMeaning, Session};

/// Direction of a segment on a control connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Client to server: commands.
    ToServer,
    /// Server to client: replies.
    ToClient,
}

impl Dir {
    /// Index for per-direction arrays.
    pub fn index(self) -> usize {
        match self {
            Dir::ToServer => 0,
            Dir::ToClient => 1,
        }
    }

    /// Short name for log lines.
    pub fn name(self) -> &'static str {
        match self {
            Dir::ToServer => "client",
            Dir::ToClient => "server",
        }
    }

    /// The opposite direction.
    pub fn other(self) -> Dir {
        match self {
            Dir::ToServer => Dir::ToClient,
            Dir::ToClient => Dir::ToServer,
        }
    }
}

/// Key of the table: (client, server).
pub type Key = (SocketAddr, SocketAddr);

/// One FTP control connection.
#[derive(Debug)]
pub struct Conn {
    /// Its id in log lines.
    pub id: ConnId,
    /// The client's end.
    pub client: SocketAddr,
    /// The server's end.
    pub server: SocketAddr,
    /// Per direction ([`Dir::index`]): the line assembler.
    pub streams: [LineAssembler; 2],
    /// The FTP session state.
    pub session: Session,
    /// Last time a segment was seen.
    pub last_seen: Instant,
    /// Per direction: a FIN was seen.
    pub fin: [bool; 2],
    /// Per direction: the last announcement that opened a hole, with the sequence number
    /// just past its line end, so a retransmission of it can re-arm the hole.
    pub last_hole: [Option<(u32, HoleSpec)>; 2],
    /// The connection was first seen mid-stream.
    pub midstream: bool,
}

/// Why a connection left the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Both sides sent FIN.
    Fin,
    /// A side sent RST.
    Reset,
    /// Nothing was seen for the idle timeout.
    Idle,
    /// The table was full and this was the least recently active connection.
    Evicted,
}

impl EndReason {
    /// Short name for log lines.
    pub fn name(self) -> &'static str {
        match self {
            EndReason::Fin => "fin",
            EndReason::Reset => "rst",
            EndReason::Idle => "idle",
            EndReason::Evicted => "evicted",
        }
    }
}

/// The connection table, capped at `max` entries.
#[derive(Debug)]
pub struct ConnTable {
    conns: HashMap<Key, Conn>,
    max: usize,
    next_id: u64,
}

impl ConnTable {
    /// An empty table that holds at most `max` connections (at least one).
    pub fn new(max: usize) -> ConnTable {
        ConnTable {
            conns: HashMap::new(),
            max: max.max(1),
            next_id: 1,
        }
    }

    /// Number of connections tracked.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether no connection is tracked.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// The connection with `key`, if tracked.
    pub fn get_mut(&mut self, key: &Key) -> Option<&mut Conn> {
        self.conns.get_mut(key)
    }

    /// Starts tracking `key`. If the table is full, the least recently active connection
    /// is dropped first and returned (an O(n) scan, only when full).
    pub fn insert(&mut self, key: Key, now: Instant, midstream: bool) -> (ConnId, Option<Conn>) {
        let mut evicted = None;
        if self.conns.len() >= self.max && !self.conns.contains_key(&key) {
            let oldest = self
                .conns
                .iter()
                .min_by_key(|(_, conn)| conn.last_seen)
                .map(|(key, _)| *key);
            evicted = oldest.and_then(|key| self.conns.remove(&key));
        }
        let id = ConnId(self.next_id);
        self.next_id += 1;
        self.conns.insert(
            key,
            Conn {
                id,
                client: key.0,
                server: key.1,
                streams: [LineAssembler::new(), LineAssembler::new()],
                session: if midstream {
                    Session::joined_midstream()
                } else {
                    Session::new()
                },
                last_seen: now,
                fin: [false; 2],
                last_hole: [None; 2],
                midstream,
            },
        );
        (id, evicted)
    }

    /// Stops tracking `key`.
    pub fn remove(&mut self, key: &Key) -> Option<Conn> {
        self.conns.remove(key)
    }

    /// Drops every connection idle for `idle` or longer; returns them.
    pub fn reap(&mut self, now: Instant, idle: Duration) -> Vec<Conn> {
        let stale: Vec<Key> = self
            .conns
            .iter()
            .filter(|(_, conn)| now.saturating_duration_since(conn.last_seen) >= idle)
            .map(|(key, _)| *key)
            .collect();
        stale
            .iter()
            .filter_map(|key| self.conns.remove(key))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_clock::t0;

    fn key(port: u16) -> Key {
        (
            SocketAddr::new("2001:db8:1::10".parse().unwrap(), port),
            "[2001:db8:2::21]:21".parse().unwrap(),
        )
    }

    /// Invariant 7: the table is capped; the least recently active entry goes first.
    #[test]
    fn full_table_evicts_least_recently_active() {
        let now = t0();
        let mut table = ConnTable::new(2);
        table.insert(key(1000), now, false);
        table.insert(key(1001), now + Duration::from_secs(1), false);
        table.get_mut(&key(1000)).unwrap().last_seen = now + Duration::from_secs(2);
        let (_, evicted) = table.insert(key(1002), now + Duration::from_secs(3), false);
        assert_eq!(evicted.map(|c| c.client.port()), Some(1001));
        assert_eq!(table.len(), 2);
    }

    /// Invariant 7: idle connections are reaped.
    #[test]
    fn idle_connections_are_reaped() {
        let now = t0();
        let mut table = ConnTable::new(10);
        table.insert(key(1000), now, false);
        table.insert(key(1001), now + Duration::from_secs(50), false);
        let reaped = table.reap(now + Duration::from_secs(60), Duration::from_secs(60));
        assert_eq!(reaped.len(), 1);
        assert_eq!(reaped[0].client.port(), 1000);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn ids_are_unique_and_increasing() {
        let now = t0();
        let mut table = ConnTable::new(10);
        let (a, _) = table.insert(key(1000), now, false);
        let (b, _) = table.insert(key(1001), now, false);
        assert!(b > a);
    }
}
