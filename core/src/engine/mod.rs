//! The engine: the only type the daemon calls. Ties `wire`, `tracker`, `ftp`, `policy` and
//! `holes` together.
//!
//! It performs no I/O and reads no clock: every input carries `now` (monotonic), every
//! output is a value. Methods fall into four groups, as in quinn-proto:
//!
//! - inputs: [`Engine::on_packet`] for each intercepted packet, [`Engine::action_done`] / [`Engine::action_failed`]
//!   when the firewall confirmed or refused an action, [`Engine::tick`] when the timer fires;
//! - commands: [`Engine::shutdown`];
//! - outputs the caller must act on: the [`Outcome`] of `on_packet` (firewall actions to apply
//!   **before** the packet is passed on), the actions `tick` and `shutdown` return, and
//!   [`Engine::poll_event`] (log lines) until it returns `None`;
//! - getters: [`Engine::poll_timeout`] (when to call `tick` next), [`Engine::counters`],
//!   [`Engine::status`].
//!
//! The packet itself is never changed and is always passed on (DESIGN.md invariant 1): no
//! error here stops a packet, it becomes a counter and maybe a log event.

mod counters;
mod events;

pub use counters::{Counters, DenyCounts, Status};
pub use events::{Event, Level};

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::holes::{ActionHandle, FwAction, HoleSpec, HoleTable, Opened, Slot};
use crate::limiter::{Admit, RateLimiter};
use crate::policy::{self, Deny};
use crate::tracker::{
    After, ConnTable, Dir, EndReason, Evicted, Key, Line, LineMeaning, Session, Start,
};
use crate::wire;
use crate::ConnId;

/// How long a control connection may stay silent before it is forgotten. Long, because the
/// control channel is idle for the whole of a big transfer; memory stays bounded by
/// [`Config::max_connections`] anyway.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(2 * 60 * 60);

/// How often idle connections are looked for.
const REAP_INTERVAL: Duration = Duration::from_secs(10);

/// Log lines per reason and window for events a peer can trigger.
const LOG_BURST: u32 = 5;
const LOG_WINDOW: Duration = Duration::from_secs(10);

/// Longest piece of untrusted text put into a log line.
const LOG_TEXT_MAX: usize = 80;

/// Engine settings, from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// TCP ports of FTP servers (`--ftp-ports`); the side using one is the server.
    pub ftp_ports: Vec<u16>,
    /// First slot (`-b`).
    pub base: u16,
    /// Number of slots (`-c`).
    pub count: u16,
    /// Hole lifetime (`-t`).
    pub ttl: Duration,
    /// Most control connections tracked at once.
    pub max_connections: usize,
    /// Forget a control connection after this long without a packet.
    pub idle_timeout: Duration,
    /// Emit a debug event for every FTP line (`-d -d`).
    pub log_lines: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            ftp_ports: vec![21],
            base: 64000,
            count: 100,
            ttl: Duration::from_secs(2),
            max_connections: 16384,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            log_lines: false,
        }
    }
}

/// Whether the packet's TCP checksum can be trusted to be filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// Verify it; a segment with a wrong checksum is ignored (the receiver will drop it
    /// too, so reading it would put us out of step with the receiver).
    Verify,
    /// The kernel has not computed it yet (checksum offload on a locally sent packet).
    NotReady,
}

/// What the caller must do with the packet it passed to [`Engine::on_packet`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Firewall actions to apply, in order, before the packet is passed on. If any of them
    /// [`FwAction::needs_confirmation`], the packet waits for the firewall's answer.
    pub actions: Vec<FwAction>,
}

impl Outcome {
    /// Whether the packet must wait for the firewall before it is passed on.
    pub fn must_wait(&self) -> bool {
        self.actions.iter().any(FwAction::needs_confirmation)
    }
}

/// Escapes untrusted bytes for a log line and cuts them to [`LOG_TEXT_MAX`] characters.
fn escape(bytes: &[u8]) -> String {
    let mut text: String = bytes.escape_ascii().to_string();
    if text.len() > LOG_TEXT_MAX {
        let mut cut = LOG_TEXT_MAX;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

/// The sans-IO FTP firewall helper.
#[derive(Debug)]
pub struct Engine {
    config: Config,
    conns: ConnTable,
    holes: HoleTable,
    counters: Counters,
    events: VecDeque<Event>,
    limiter: RateLimiter,
    next_reap: Option<Instant>,
}

impl Engine {
    /// An engine with no connections and no holes.
    ///
    /// # Panics
    /// If `config.count` is 0 or the slot range passes 65535 (the command line refuses both).
    pub fn new(config: Config) -> Engine {
        Engine {
            conns: ConnTable::new(config.max_connections),
            holes: HoleTable::new(config.base, config.count, config.ttl),
            counters: Counters::default(),
            events: VecDeque::new(),
            limiter: RateLimiter::new(LOG_BURST, LOG_WINDOW),
            next_reap: None,
            config,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Number of holes open now.
    pub fn open_holes(&self) -> usize {
        self.holes.len()
    }

    /// Number of control connections tracked now.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// The status line.
    pub fn status(&self) -> Status {
        Status {
            connections: self.conns.len(),
            holes: self.holes.len(),
            slots: self.holes.capacity(),
            counters: self.counters.clone(),
        }
    }

    /// The next log event, if any. Call until `None` after every input.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Engine::tick`] must be called next, if ever. Changes after every input.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.holes.next_deadline(),
            self.next_reap,
            self.limiter.next_flush(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Reads one intercepted packet (starting at the IP header), verifying its checksum.
    pub fn on_packet(&mut self, now: Instant, packet: &[u8]) -> Outcome {
        self.on_packet_with_checksum(now, packet, Checksum::Verify)
    }

    /// Reads one intercepted packet. The caller passes it on, unchanged, after applying the
    /// outcome's actions (and waiting for those that need confirmation).
    pub fn on_packet_with_checksum(
        &mut self,
        now: Instant,
        packet: &[u8],
        checksum: Checksum,
    ) -> Outcome {
        let mut outcome = Outcome::default();
        self.counters.packets += 1;
        let segment = match wire::parse(packet) {
            Ok(segment) => segment,
            Err(error) => {
                self.counters.unparsed += 1;
                if error == wire::Error::Fragment {
                    self.counters.fragments += 1;
                }
                return outcome;
            }
        };
        let dir = if self.config.ftp_ports.contains(&segment.dst_port) {
            Dir::ToServer
        } else if self.config.ftp_ports.contains(&segment.src_port) {
            Dir::ToClient
        } else {
            self.counters.not_ftp += 1;
            return outcome;
        };
        if !segment.payload.is_empty() && checksum == Checksum::Verify && !segment.checksum_valid()
        {
            self.counters.bad_checksum += 1;
            return outcome;
        }
        let src = SocketAddr::new(segment.src, segment.src_port);
        let dst = SocketAddr::new(segment.dst, segment.dst_port);
        let key = match dir {
            Dir::ToServer => (src, dst),
            Dir::ToClient => (dst, src),
        };
        let flags = segment.flags;
        if self.conns.get_mut(&key).is_none() {
            // Only a SYN or data starts tracking: the last ACK of a closed connection, or
            // stray RST/FIN, must not bring it back as a new entry.
            if flags.rst || (segment.payload.is_empty() && !flags.syn) {
                return outcome;
            }
            let (conn, start, evicted) = self.conns.insert(key, now, flags.syn);
            if start == Start::Resumed {
                self.counters.resumed += 1;
            } else {
                self.counters.connections += 1;
            }
            if !evicted.ids.is_empty() {
                self.evicted(now, &evicted);
            }
            self.events.push_back(Event::ConnStart {
                conn,
                client: key.0,
                server: key.1,
                start,
            });
            if self.next_reap.is_none() {
                self.next_reap = Some(now + REAP_INTERVAL);
            }
        }
        self.read_segment(now, &key, dir, &segment, checksum, &mut outcome);

        let Some(conn) = self.conns.get_mut(&key) else {
            return outcome;
        };
        let ended = if flags.rst {
            // RFC 5961 §3: the endpoints accept a RST only at exactly the next sequence
            // number (an in-window one only draws a challenge ACK). Ending on anything
            // less would let an off-path guesser make the engine forget a connection.
            if conn.accepts_rst(dir, segment.seq, flags.ack.then_some(segment.ack)) {
                Some(EndReason::Reset)
            } else {
                let id = conn.id;
                self.counters.rst_ignored += 1;
                if let Admit::Yes { suppressed } = self.limiter.admit(now, "rst_ignored") {
                    self.push_suppressed("rst_ignored", suppressed);
                    self.events.push_back(Event::RstIgnored { conn: id, dir });
                }
                return outcome;
            }
        } else if flags.fin {
            conn.fin_from(dir)
        } else {
            None
        };
        if let Some(reason) = ended {
            let id = conn.id;
            self.conns.remove(&key);
            self.events.push_back(Event::ConnEnd { conn: id, reason });
        }
        outcome
    }

    /// Feeds one segment into its connection and acts on the lines it completes.
    fn read_segment(
        &mut self,
        now: Instant,
        key: &(SocketAddr, SocketAddr),
        dir: Dir,
        segment: &wire::Segment<'_>,
        checksum: Checksum,
        outcome: &mut Outcome,
    ) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.last_seen = now;
        if segment.flags.syn {
            conn.streams[dir.index()].syn(segment.seq);
        }
        let id = conn.id;
        let (client, server) = (conn.client.ip(), conn.server.ip());
        let ack = segment.flags.ack.then_some(segment.ack);
        let mut reader = LineReader {
            log_lines: self.config.log_lines,
            cleartext: Vec::new(),
            meanings: Vec::new(),
            overlong: 0,
        };
        let mut gaps: Vec<Dir> = Vec::new();

        // TCP's proof of a gap in the other direction: this segment acknowledges bytes the
        // engine never saw. The receiver has them; they will not come again.
        let other = dir.other();
        // Only a segment its receiver would take proves anything: not a RST (checked
        // against RFC 5961 separately), and not one with a bad checksum (data segments
        // were checked on the way in; a bare ACK is checked here, only when it matters).
        let proves = |segment: &wire::Segment<'_>| {
            !segment.flags.rst
                && (!segment.payload.is_empty()
                    || checksum == Checksum::NotReady
                    || segment.checksum_valid())
        };
        if let Some(ack) = ack {
            if conn.streams[other.index()].gap_proven_by(ack, conn.fin[other.index()])
                && proves(segment)
            {
                gaps.push(other);
                let session = &mut conn.session;
                // Lines of the other direction kept behind the gap: their segments'
                // acknowledgments are not kept, so none is claimed for them. The first
                // one read resynchronises the session (`Line::after_resync`).
                let stream = &mut conn.streams[other.index()];
                stream.skip_gap_with(ack, |line| reader.read(session, other, line, None));
                // No line yet: the session forgets now, before this segment's own lines.
                if stream.take_resync_pending() {
                    conn.session.resync(other);
                }
            }
        }

        let mut rearm = None;
        if !segment.payload.is_empty() {
            // With SYN, the data starts one past the initial sequence number.
            let data_seq = segment.seq.wrapping_add(u32::from(segment.flags.syn));
            let session = &mut conn.session;
            let fed = conn.streams[dir.index()].feed_with(data_seq, segment.payload, |line| {
                reader.read(session, dir, line, ack)
            });
            if fed.resynced {
                // The reorder buffer gave up on a gap. A line read after the jump already
                // made the session forget; without one, it forgets now.
                if conn.streams[dir.index()].take_resync_pending() {
                    conn.session.resync(dir);
                }
                gaps.push(dir);
            }
            if fed.dropped || fed.resynced {
                self.counters.reorder_drops += 1;
            }
            rearm = conn.rearm_for(dir, data_seq, fed.old_bytes);
        }
        self.counters.overlong_lines += reader.overlong;
        for cleartext_dir in std::mem::take(&mut reader.cleartext) {
            self.events.push_back(Event::ClearText {
                conn: id,
                dir: cleartext_dir,
            });
        }
        for gap_dir in gaps {
            self.counters.gaps += 1;
            if let Admit::Yes { suppressed } = self.limiter.admit(now, "gap") {
                self.push_suppressed("gap", suppressed);
                self.events.push_back(Event::Gap {
                    conn: id,
                    dir: gap_dir,
                });
            }
        }
        if let Some(spec) = rearm {
            self.open_hole(now, id, key, dir, None, spec, outcome);
        }
        for (line_dir, meaning, end_seq, text) in reader.meanings {
            self.counters.lines += 1;
            if let Some(text) = text.clone().filter(|_| self.config.log_lines) {
                self.events.push_back(Event::Line {
                    conn: id,
                    dir: line_dir,
                    text,
                });
            }
            match meaning {
                LineMeaning::Nothing => {}
                LineMeaning::TlsStarted => {
                    self.counters.tls += 1;
                    // The client's TLS records start with its next byte (it waits for
                    // the 234 before its ClientHello, RFC 4217 §4).
                    if let Some(conn) = self.conns.get_mut(key) {
                        conn.streams[Dir::ToServer.index()].start_tls();
                    }
                    self.events.push_back(Event::TlsStarted {
                        conn: id,
                        client: key.0,
                        server: key.1,
                    });
                }
                LineMeaning::Malformed { what, error } => {
                    self.counters.malformed += 1;
                    if let Admit::Yes { suppressed } = self.limiter.admit(now, "malformed") {
                        self.push_suppressed("malformed", suppressed);
                        self.events.push_back(Event::Malformed {
                            conn: id,
                            what,
                            error,
                            text: text.unwrap_or_default(),
                        });
                    }
                }
                LineMeaning::Deny(deny) => self.deny(now, id, key, "line", deny),
                LineMeaning::Announce(announcement) => {
                    let what = announcement.source.name();
                    match policy::check_announcement(&announcement, client, server) {
                        Ok(spec) => {
                            self.open_hole(now, id, key, line_dir, Some(end_seq), spec, outcome)
                        }
                        Err(deny) => self.deny(now, id, key, what, deny),
                    }
                }
            }
        }
    }

    /// A full table evicted connections: each one's end at debug level, and one line at
    /// info (rate limited) with the counts and what to do about it.
    fn evicted(&mut self, now: Instant, evicted: &Evicted) {
        let count = evicted.ids.len() as u64;
        self.counters.evicted += count;
        for &conn in &evicted.ids {
            self.events.push_back(Event::ConnEnd {
                conn,
                reason: EndReason::Evicted,
            });
        }
        if let Admit::Yes { suppressed } = self.limiter.admit(now, "evicted") {
            self.push_suppressed("evicted", suppressed);
            self.events.push_back(Event::Evicted {
                count,
                dead: evicted.dead as u64,
                total: self.counters.evicted,
                max: self.config.max_connections,
            });
        }
    }

    fn push_suppressed(&mut self, reason: &'static str, count: u64) {
        if count > 0 {
            self.events.push_back(Event::Suppressed { reason, count });
        }
    }

    fn deny(&mut self, now: Instant, conn: ConnId, key: &Key, what: &'static str, deny: Deny) {
        self.counters.denied[deny.kind()] += 1;
        if let Admit::Yes { suppressed } = self.limiter.admit(now, deny.reason()) {
            self.push_suppressed(deny.reason(), suppressed);
            self.events.push_back(Event::Denied {
                conn,
                client: key.0,
                server: key.1,
                what,
                deny,
            });
        }
    }

    /// Asks the hole table for `spec`; `end_seq` is the announcement's line end (`None`
    /// for a re-arm by retransmission).
    #[allow(clippy::too_many_arguments)]
    fn open_hole(
        &mut self,
        now: Instant,
        conn: ConnId,
        key: &Key,
        dir: Dir,
        end_seq: Option<u32>,
        spec: HoleSpec,
        outcome: &mut Outcome,
    ) {
        match self.holes.open(now, spec, conn) {
            Opened::New(_, action) => {
                self.counters.holes_opened += 1;
                outcome.actions.push(action);
            }
            Opened::Rearmed(slot, action) => {
                self.counters.holes_rearmed += 1;
                self.events.push_back(Event::HoleRearm { conn, slot, spec });
                outcome.actions.push(action);
            }
            Opened::Full => {
                self.deny(now, conn, key, "hole", Deny::TableFull);
                return;
            }
        }
        if let Some(end_seq) = end_seq {
            if let Some(tracked) = self.conns.get_mut(key) {
                tracked.remember_announcement(dir, end_seq, spec);
            }
        }
    }

    /// The connection state to hand to the next instance at a graceful stop
    /// (`tracker::handover` format): with it, the next instance resumes every connection
    /// exactly and helps its next announcement (DESIGN.md invariant 9).
    pub fn export_state(&self) -> Vec<u8> {
        crate::tracker::handover::encode(&self.conns.export())
    }

    /// Takes over the connections a previous instance handed over. The bytes are
    /// untrusted: any invalid field rejects the whole file (then every connection is
    /// joined mid-stream, which is always safe). Returns how many connections were taken.
    ///
    /// # Errors
    /// [`StateError`](crate::tracker::handover::StateError) naming the first problem.
    pub fn import_state(
        &mut self,
        now: Instant,
        bytes: &[u8],
    ) -> Result<usize, crate::tracker::handover::StateError> {
        let records = crate::tracker::handover::decode(bytes, self.config.max_connections)?;
        let taken = self.conns.import(records, now);
        self.counters.resumed += taken.len() as u64;
        for (id, key) in &taken {
            self.events.push_back(Event::ConnStart {
                conn: *id,
                client: key.0,
                server: key.1,
                start: Start::Resumed,
            });
        }
        if !taken.is_empty() && self.next_reap.is_none() {
            self.next_reap = Some(now + REAP_INTERVAL);
        }
        Ok(taken.len())
    }

    /// Input: the firewall applied the action `handle` names.
    pub fn action_done(&mut self, handle: ActionHandle) {
        let FwAction::Open { slot, spec, ttl } = handle.0 else {
            return;
        };
        let conn = self.holes.owner(slot).map_or(ConnId(0), |(_, c)| c);
        self.events.push_back(Event::HoleOpen {
            conn,
            slot,
            spec,
            ttl,
        });
    }

    /// Input: the firewall refused the action `handle` names. A refused open or refresh
    /// frees its slot (the packet was passed on anyway, invariant 1).
    pub fn action_failed(&mut self, handle: ActionHandle) {
        let action = handle.0;
        let slot = action.slot();
        let spec = *action.spec();
        let conn = self.holes.owner(slot).map_or(ConnId(0), |(_, c)| c);
        self.counters.holes_failed += 1;
        if !matches!(action, FwAction::Close { .. }) && self.holes.get(slot) == Some(&spec) {
            self.holes.forget(slot);
        }
        self.events
            .push_back(Event::HoleFailed { conn, slot, spec });
    }

    /// Input: the firewall saw the hole `spec` in `slot` used — its rule consumed the
    /// element on the data connection's first packet (nftables `delete @set`) — so the slot
    /// is free at once instead of at its deadline, and no close is needed. A report about
    /// a slot that now holds another hole (it expired and was reused meanwhile) is stale
    /// and changes nothing.
    pub fn hole_used(&mut self, slot: Slot, spec: HoleSpec) {
        if self.holes.get(slot) != Some(&spec) {
            return;
        }
        if let Some(closed) = self.holes.forget(slot) {
            self.counters.holes_used += 1;
            self.events.push_back(Event::HoleUsed {
                conn: closed.conn,
                slot,
                spec,
            });
        }
    }

    /// Timer input: closes holes past their deadline and forgets idle connections.
    /// Calling it early or twice does nothing harmful.
    pub fn tick(&mut self, now: Instant) -> Vec<FwAction> {
        let mut actions = Vec::new();
        for closed in self.holes.expire(now, &mut actions) {
            self.counters.holes_closed += 1;
            self.events.push_back(Event::HoleClose {
                conn: closed.conn,
                slot: closed.slot,
                spec: closed.spec,
            });
        }
        if self.next_reap.is_some_and(|at| at <= now) {
            for conn in self.conns.reap(now, self.config.idle_timeout) {
                self.events.push_back(Event::ConnEnd {
                    conn: conn.id,
                    reason: EndReason::Idle,
                });
            }
            self.next_reap = (!self.conns.is_empty()).then(|| now + REAP_INTERVAL);
        }
        for (reason, count) in self.limiter.flush(now) {
            self.push_suppressed(reason, count);
        }
        actions
    }

    /// Command: closes every hole (the daemon is stopping).
    pub fn shutdown(&mut self) -> Vec<FwAction> {
        let mut actions = Vec::new();
        for closed in self.holes.close_all(&mut actions) {
            self.counters.holes_closed += 1;
            self.events.push_back(Event::HoleClose {
                conn: closed.conn,
                slot: closed.slot,
                spec: closed.spec,
            });
        }
        actions
    }
}

/// Reads the lines one segment completes into their meanings, in stream order.
struct LineReader {
    log_lines: bool,
    /// Directions whose clear text resumed after TLS in this segment.
    cleartext: Vec<Dir>,
    /// (direction, meaning, line end, escaped text when it is to be logged)
    meanings: Vec<(Dir, LineMeaning, u32, Option<String>)>,
    overlong: u64,
}

impl LineReader {
    /// One line of `dir`, carried by a segment acknowledging `ack` (server lines only).
    fn read(&mut self, session: &mut Session, dir: Dir, line: Line<'_>, ack: Option<u32>) -> After {
        if line.truncated {
            self.overlong += 1;
        }
        if line.after_resync {
            session.resync(dir);
        }
        if line.after_tls {
            session.cleartext_resumed(dir);
            self.cleartext.push(dir);
        }
        let meaning = match (dir, line.fragment) {
            (Dir::ToServer, false) => session.client_line(line.bytes, line.truncated, line.end_seq),
            (Dir::ToServer, true) => session.client_fragment(line.bytes, line.end_seq),
            (Dir::ToClient, false) => session.server_line(line.bytes, line.truncated, ack),
            // A reply's tail tells nothing that can be trusted (the session already
            // treats the server's stream as cut).
            (Dir::ToClient, true) => LineMeaning::Nothing,
        };
        let wanted = self.log_lines || matches!(meaning, LineMeaning::Malformed { .. });
        let text = wanted.then(|| escape(line.bytes));
        self.meanings.push((dir, meaning, line.end_seq, text));
        // The server's 234: its stream carries TLS records from the next byte on.
        if meaning == LineMeaning::TlsStarted {
            After::Tls
        } else {
            After::Lines
        }
    }
}
