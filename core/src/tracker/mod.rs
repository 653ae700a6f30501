//! Connection tracking: the table of FTP control connections and, per connection, the two
//! line assemblers and the FTP session state.
//!
//! Owns the 4-tuple table (which side is the server is decided by the configured FTP ports),
//! its cap, eviction and idle reaping (DESIGN.md invariant 7), FIN/RST handling, the memory
//! of the last announcement per direction so a retransmitted announcement can re-arm its
//! hole, and a bounded record of evicted connections so that one that comes back resumes
//! exactly where it was (invariant 9). Knows no firewall and decides nothing about holes.
//!
//! The table is a `BTreeMap`: no randomly seeded hashing, so reaps and evictions happen in
//! the same order on every run.

pub mod assembler;
pub mod handover;
pub mod session;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::holes::HoleSpec;
use crate::ConnId;

pub use assembler::{After, Fed, Line, LineAssembler, MAX_LINE};
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

impl Conn {
    /// A FIN from `dir` was seen; returns the end of the connection once both sides sent
    /// one.
    pub fn fin_from(&mut self, dir: Dir) -> Option<EndReason> {
        self.fin[dir.index()] = true;
        (self.fin[0] && self.fin[1]).then_some(EndReason::Fin)
    }

    /// Whether the receiver would accept a RST from `dir` with sequence number `seq` (and
    /// acknowledgment `ack`, if set), as RFC 5961 §3 has it: exactly the next sequence
    /// number of its direction (one more after a FIN); or, refusing a connection whose
    /// sender has sent nothing, an acknowledgment of exactly the other side's next byte
    /// (RFC 9293 §3.10.7.3, the SYN-SENT case). An in-window but inexact RST only draws a
    /// challenge ACK from the endpoints, so it must not end tracking either.
    pub fn accepts_rst(&self, dir: Dir, seq: u32, ack: Option<u32>) -> bool {
        match self.streams[dir.index()].next_seq() {
            Some(next) => seq == next.wrapping_add(u32::from(self.fin[dir.index()])),
            None => ack.is_some() && ack == self.streams[dir.other().index()].next_seq(),
        }
    }

    /// Remembers that the line ending just before `end_seq` in `dir` announced `spec`, so a
    /// retransmission of it can re-arm the hole.
    pub fn remember_announcement(&mut self, dir: Dir, end_seq: u32, spec: HoleSpec) {
        self.last_hole[dir.index()] = Some((end_seq, spec));
    }

    /// The hole to re-arm when a segment of `dir` starting at `data_seq` repeated
    /// `old_bytes` already-seen bytes that include the end of the last announcement: the
    /// receiver evidently has not got it yet, and may act on it after the hole expired.
    pub fn rearm_for(&self, dir: Dir, data_seq: u32, old_bytes: usize) -> Option<HoleSpec> {
        let (end_seq, spec) = self.last_hole[dir.index()]?;
        let last_byte = end_seq.wrapping_sub(1);
        let into = last_byte.wrapping_sub(data_seq);
        usize::try_from(into)
            .is_ok_and(|into| into < old_bytes)
            .then_some(spec)
    }

    /// How much a connection is worth keeping when the table is full, lowest first: a
    /// closing one (a FIN was seen), then one that never carried data, then a live one.
    fn keep_rank(&self) -> u8 {
        if self.fin[0] || self.fin[1] {
            0
        } else if self
            .streams
            .iter()
            .all(|s| s.next_seq().is_none() || s.is_pristine())
        {
            1
        } else {
            2
        }
    }

    /// Strips the connection to what resuming it exactly needs: each stream's position if
    /// it rests on a line boundary, the session, the FIN flags and last announcements.
    fn into_grave(self) -> Grave {
        Grave {
            id: self.id,
            resume: [
                self.streams[0].resume_point(),
                self.streams[1].resume_point(),
            ],
            session: self.session,
            fin: self.fin,
            last_hole: self.last_hole,
        }
    }
}

/// Streams resumed where a record left them: synchronised at a kept line boundary, or
/// unseen (joined as after a gap) where none was kept.
fn resumed_streams(resume: [Option<u32>; 2]) -> [LineAssembler; 2] {
    resume.map(|at| {
        let mut stream = LineAssembler::new();
        if let Some(seq) = at {
            stream.resume_at(seq);
        }
        stream
    })
}

/// What is kept of an evicted connection: enough to resume it exactly.
#[derive(Debug)]
struct Grave {
    id: ConnId,
    /// Per direction: the next sequence number if the stream rested on a line boundary.
    resume: [Option<u32>; 2],
    session: Session,
    fin: [bool; 2],
    last_hole: [Option<(u32, HoleSpec)>; 2],
}

/// Share of the table evicted at once when it is full: one scan frees room for many
/// newcomers, so a flood costs O(1) per connection, not a scan each.
const EVICT_SHARE: usize = 64;

/// The connection table, capped at `max` entries.
#[derive(Debug)]
pub struct ConnTable {
    conns: BTreeMap<Key, Conn>,
    max: usize,
    next_id: u64,
    /// Evicted connections, oldest first, at most `max / 4` of them.
    graves: BTreeMap<Key, Grave>,
    grave_order: VecDeque<Key>,
}

/// How a new entry came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// A SYN: the connection starts here.
    Syn,
    /// Data from a connection never seen (or whose state was lost): mid-stream.
    Midstream,
    /// An evicted connection came back; its state was kept.
    Resumed,
}

/// The connections a full table made room by evicting.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Evicted {
    /// Their ids, in eviction order.
    pub ids: Vec<ConnId>,
    /// How many of them were closing or had never carried data.
    pub dead: usize,
}

impl ConnTable {
    /// An empty table that holds at most `max` connections (at least one).
    pub fn new(max: usize) -> ConnTable {
        ConnTable {
            conns: BTreeMap::new(),
            max: max.max(1),
            next_id: 1,
            graves: BTreeMap::new(),
            grave_order: VecDeque::new(),
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

    /// Number of evicted connections remembered for resuming.
    pub fn graves(&self) -> usize {
        self.graves.len()
    }

    /// The connection with `key`, if tracked.
    pub fn get_mut(&mut self, key: &Key) -> Option<&mut Conn> {
        self.conns.get_mut(key)
    }

    /// Starts tracking `key`, seen first with a SYN (`syn`) or with data. An evicted
    /// connection coming back with data resumes from its record. If the table is full, a
    /// share of it is evicted first — closing and dataless connections before live ones,
    /// least recently active first — and reported.
    pub fn insert(&mut self, key: Key, now: Instant, syn: bool) -> (ConnId, Start, Evicted) {
        let mut evicted = Evicted::default();
        if self.conns.len() >= self.max && !self.conns.contains_key(&key) {
            evicted = self.evict_share(now);
        }
        let grave = self.graves.remove(&key);
        if grave.is_some() {
            self.grave_order.retain(|k| *k != key);
        }
        let (id, start, conn) = match grave {
            Some(grave) if !syn => {
                let streams = resumed_streams(grave.resume);
                let mut session = grave.session;
                if grave.resume[Dir::ToClient.index()].is_none() {
                    // The server's stream was mid-line: what is lost of that line is a gap.
                    session.resync(Dir::ToClient);
                }
                let conn = Conn {
                    id: grave.id,
                    client: key.0,
                    server: key.1,
                    streams,
                    session,
                    last_seen: now,
                    fin: grave.fin,
                    last_hole: grave.last_hole,
                    midstream: false,
                };
                (grave.id, Start::Resumed, conn)
            }
            _ => {
                let id = ConnId(self.next_id);
                self.next_id += 1;
                let conn = Conn {
                    id,
                    client: key.0,
                    server: key.1,
                    streams: [LineAssembler::new(), LineAssembler::new()],
                    session: if syn {
                        Session::new()
                    } else {
                        Session::joined_midstream()
                    },
                    last_seen: now,
                    fin: [false; 2],
                    last_hole: [None; 2],
                    midstream: !syn,
                };
                (id, if syn { Start::Syn } else { Start::Midstream }, conn)
            }
        };
        self.conns.insert(key, conn);
        (id, start, evicted)
    }

    /// Evicts a share of the table: lowest [`Conn::keep_rank`] first, then least recently
    /// active. Live connections are remembered for resuming.
    fn evict_share(&mut self, _now: Instant) -> Evicted {
        let share = (self.max / EVICT_SHARE).max(1);
        let mut order: Vec<(u8, Instant, Key)> = self
            .conns
            .iter()
            .map(|(key, conn)| (conn.keep_rank(), conn.last_seen, *key))
            .collect();
        order.sort_unstable();
        let mut evicted = Evicted::default();
        for (rank, _, key) in order.into_iter().take(share) {
            let Some(conn) = self.conns.remove(&key) else {
                continue;
            };
            evicted.ids.push(conn.id);
            if rank < 2 {
                evicted.dead += 1;
            } else if !conn.streams.iter().any(LineAssembler::in_tls) {
                // A connection inside TLS cannot resume exactly (its record positions
                // are not kept): when it returns it is joined mid-stream.
                self.remember(key, conn.into_grave());
            }
        }
        evicted
    }

    /// Keeps `grave` for `key`, forgetting the oldest record past `max / 4`.
    fn remember(&mut self, key: Key, grave: Grave) {
        let cap = (self.max / 4).max(1);
        while self.graves.len() >= cap {
            match self.grave_order.pop_front() {
                Some(old) => {
                    self.graves.remove(&old);
                }
                None => break,
            }
        }
        self.graves.insert(key, grave);
        self.grave_order.push_back(key);
    }

    /// Every connection that can be handed over to the next instance: all but those inside
    /// TLS (their record positions are not kept).
    pub fn export(&self) -> Vec<handover::Record> {
        self.conns
            .values()
            .filter(|conn| !conn.streams.iter().any(LineAssembler::in_tls))
            .map(|conn| handover::Record {
                client: conn.client,
                server: conn.server,
                resume: [
                    conn.streams[0].resume_point(),
                    conn.streams[1].resume_point(),
                ],
                fin: conn.fin,
                session: conn.session.to_record(),
                last_hole: conn.last_hole,
            })
            .collect()
    }

    /// Takes over connections a previous instance handed over (already validated); returns
    /// the ones taken. A stream that did not rest on a line boundary resumes as
    /// after a gap.
    pub fn import(&mut self, records: Vec<handover::Record>, now: Instant) -> Vec<(ConnId, Key)> {
        let mut ids = Vec::new();
        for record in records {
            let key = (record.client, record.server);
            if self.conns.contains_key(&key) || self.conns.len() >= self.max {
                continue;
            }
            let streams = resumed_streams(record.resume);
            let mut session = Session::from_record(&record.session);
            if record.resume[Dir::ToClient.index()].is_none() {
                session.resync(Dir::ToClient);
            }
            let id = ConnId(self.next_id);
            self.next_id += 1;
            self.conns.insert(
                key,
                Conn {
                    id,
                    client: key.0,
                    server: key.1,
                    streams,
                    session,
                    last_seen: now,
                    fin: record.fin,
                    last_hole: record.last_hole,
                    midstream: false,
                },
            );
            ids.push((id, key));
        }
        ids
    }

    /// Stops tracking `key` (it ended: no record is kept).
    pub fn remove(&mut self, key: &Key) -> Option<Conn> {
        self.conns.remove(key)
    }

    /// Drops every connection idle for `idle` or longer; returns them. Records of evicted
    /// connections idle that long go too.
    pub fn reap(&mut self, now: Instant, idle: Duration) -> Vec<Conn> {
        let stale: Vec<Key> = self
            .conns
            .iter()
            .filter(|(_, conn)| now.saturating_duration_since(conn.last_seen) >= idle)
            .map(|(key, _)| *key)
            .collect();
        // A grave keeps no clock of its own: it goes with the idle reap after the one that
        // saw it made (records are bounded in number anyway).
        self.graves.clear();
        self.grave_order.clear();
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

    fn busy(table: &mut ConnTable, port: u16) {
        let conn = table.get_mut(&key(port)).unwrap();
        conn.streams[0].syn(1);
        conn.streams[0].feed(2, b"NOOP\r\n", |_| {});
    }

    /// Invariant 7: the table is capped; the least recently active entry goes first.
    #[test]
    fn full_table_evicts_least_recently_active() {
        let now = t0();
        let mut table = ConnTable::new(2);
        let (first, ..) = table.insert(key(1000), now, true);
        busy(&mut table, 1000);
        let (second, ..) = table.insert(key(1001), now + Duration::from_secs(1), true);
        busy(&mut table, 1001);
        table.get_mut(&key(1000)).unwrap().last_seen = now + Duration::from_secs(2);
        let (_, _, evicted) = table.insert(key(1002), now + Duration::from_secs(3), true);
        assert_eq!(evicted.ids, [second]);
        assert_ne!(evicted.ids, [first]);
        assert_eq!(table.len(), 2);
    }

    /// Dead and dataless connections go before live ones, however recent they are.
    #[test]
    fn eviction_takes_closing_and_dataless_connections_first() {
        let now = t0();
        let mut table = ConnTable::new(3);
        table.insert(key(1000), now, true);
        busy(&mut table, 1000);
        let (closing, ..) = table.insert(key(1001), now + Duration::from_secs(5), true);
        busy(&mut table, 1001);
        table.get_mut(&key(1001)).unwrap().fin[0] = true;
        let (dataless, ..) = table.insert(key(1002), now + Duration::from_secs(9), true);
        let (_, _, evicted) = table.insert(key(1003), now + Duration::from_secs(10), true);
        assert_eq!(evicted.ids, [closing]);
        assert_eq!(evicted.dead, 1);
        let (_, _, evicted) = table.insert(key(1004), now + Duration::from_secs(11), true);
        assert_eq!(evicted.ids, [dataless]);
    }

    /// Invariant 9: an evicted live connection is remembered and resumes exactly, with its
    /// id and its stream positions.
    #[test]
    fn evicted_connection_resumes_from_its_record() {
        let now = t0();
        let mut table = ConnTable::new(1);
        let (id, ..) = table.insert(key(1000), now, true);
        busy(&mut table, 1000);
        table.insert(key(1001), now, true);
        assert_eq!(table.graves(), 1);
        let (again, start, _) = table.insert(key(1000), now, false);
        assert_eq!((again, start), (id, Start::Resumed));
        let conn = table.get_mut(&key(1000)).unwrap();
        assert_eq!(conn.streams[0].next_seq(), Some(8));
        let mut lines = Vec::new();
        conn.streams[0].feed(8, b"EPSV\r\n", |l| {
            lines.push((l.bytes.to_vec(), l.fragment))
        });
        assert_eq!(
            lines,
            [(b"EPSV".to_vec(), false)],
            "a whole line, not a fragment"
        );
    }

    /// Invariant 7: idle connections are reaped.
    #[test]
    fn idle_connections_are_reaped() {
        let now = t0();
        let mut table = ConnTable::new(10);
        table.insert(key(1000), now, true);
        table.insert(key(1001), now + Duration::from_secs(50), true);
        let reaped = table.reap(now + Duration::from_secs(60), Duration::from_secs(60));
        assert_eq!(reaped.len(), 1);
        assert_eq!(reaped[0].client.port(), 1000);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn ids_are_unique_and_increasing() {
        let now = t0();
        let mut table = ConnTable::new(10);
        let (a, ..) = table.insert(key(1000), now, true);
        let (b, ..) = table.insert(key(1001), now, true);
        assert!(b > a);
    }
}
