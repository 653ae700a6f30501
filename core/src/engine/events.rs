//! The engine's log events: what happened, how severe it is, and the one line that says
//! it.
//!
//! Owns the event types and their `Display` (connection id first, then `key=value` pairs in
//! a fixed order, untrusted text already escaped by the engine). Decides nothing and holds
//! no state; the engine queues events and the daemon drains them with `poll_event`.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::ftp::ParseError;
use crate::holes::{HoleSpec, Slot};
use crate::policy::Deny;
use crate::tracker::{Dir, EndReason, Start};
use crate::ConnId;

/// Severity of an [`Event`], mapped onto the daemon's logger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// A firewall failure.
    Error,
    /// A security denial.
    Warn,
    /// Holes and connections coming and going.
    Info,
    /// Every FTP line.
    Debug,
}

/// Something worth a log line. `Display` gives the line: connection id first, then
/// `key=value` pairs in a fixed order; untrusted text is escaped and cut short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A control connection is tracked from now on.
    ConnStart {
        /// Its id.
        conn: ConnId,
        /// Client end.
        client: SocketAddr,
        /// Server end.
        server: SocketAddr,
        /// How it started: with its SYN, mid-stream (lines resume at the next line end,
        /// passive replies are not helped), or resumed from its eviction record.
        start: Start,
    },
    /// The connection table was full: connections were evicted to make room.
    Evicted {
        /// Evicted this time.
        count: u64,
        /// Of those, how many were closing or had never carried data.
        dead: u64,
        /// Evicted since the start.
        total: u64,
        /// The table's size (`--max-connections`).
        max: usize,
    },
    /// A control connection is no longer tracked.
    ConnEnd {
        /// Its id.
        conn: ConnId,
        /// Why.
        reason: EndReason,
    },
    /// One FTP line (only with [`Config::log_lines`]).
    Line {
        /// Connection.
        conn: ConnId,
        /// Who sent it.
        dir: Dir,
        /// The escaped, shortened line.
        text: String,
    },
    /// The firewall confirmed a hole.
    HoleOpen {
        /// Connection that announced it.
        conn: ConnId,
        /// Slot.
        slot: Slot,
        /// The hole.
        spec: HoleSpec,
        /// Its lifetime.
        ttl: Duration,
    },
    /// A retransmitted announcement re-armed its hole.
    HoleRearm {
        /// Connection.
        conn: ConnId,
        /// Slot.
        slot: Slot,
        /// The hole.
        spec: HoleSpec,
    },
    /// A hole reached its deadline or the daemon is stopping.
    HoleClose {
        /// Connection that announced it.
        conn: ConnId,
        /// Slot.
        slot: Slot,
        /// The hole.
        spec: HoleSpec,
    },
    /// A hole was used up by its data connection; its slot is free again.
    HoleUsed {
        /// Connection that announced it.
        conn: ConnId,
        /// Slot.
        slot: Slot,
        /// The hole.
        spec: HoleSpec,
    },
    /// The firewall refused to install a hole; the packet was passed on anyway.
    HoleFailed {
        /// Connection that announced it.
        conn: ConnId,
        /// Slot.
        slot: Slot,
        /// The hole.
        spec: HoleSpec,
    },
    /// An announcement opened no hole.
    Denied {
        /// Connection.
        conn: ConnId,
        /// Its client end.
        client: SocketAddr,
        /// Its server end.
        server: SocketAddr,
        /// The verb or reply code that announced it.
        what: &'static str,
        /// Why.
        deny: Deny,
    },
    /// An announcement could not be parsed.
    Malformed {
        /// Connection.
        conn: ConnId,
        /// The verb or reply code.
        what: &'static str,
        /// What was wrong.
        error: ParseError,
        /// The escaped, shortened line.
        text: String,
    },
    /// The server accepted `AUTH`: this connection is encrypted from now on (invariant 8),
    /// unless it leaves TLS with `CCC`.
    TlsStarted {
        /// Connection.
        conn: ConnId,
        /// Its client end.
        client: SocketAddr,
        /// Its server end.
        server: SocketAddr,
    },
    /// Clear text resumed in one direction after TLS (`CCC`): lines are read again.
    ClearText {
        /// Connection.
        conn: ConnId,
        /// Which direction.
        dir: Dir,
    },
    /// The engine lost bytes of one direction of a connection for good (TCP proved it, or
    /// the reorder buffer gave up): lines resume at the next line end.
    Gap {
        /// Connection.
        conn: ConnId,
        /// Which direction lost bytes.
        dir: Dir,
    },
    /// A RST that the endpoints would not accept (its sequence number is not the exact
    /// next one, RFC 5961 §3) was ignored.
    RstIgnored {
        /// Connection.
        conn: ConnId,
        /// Who it claims to come from.
        dir: Dir,
    },
    /// Events of one reason were held back by the log limiter.
    Suppressed {
        /// The reason.
        reason: &'static str,
        /// How many.
        count: u64,
    },
}

impl Event {
    /// How severe it is.
    pub fn level(&self) -> Level {
        match self {
            Event::HoleFailed { .. } => Level::Error,
            Event::Denied { .. } | Event::Malformed { .. } | Event::Suppressed { .. } => {
                Level::Warn
            }
            Event::HoleOpen { .. }
            | Event::HoleRearm { .. }
            | Event::TlsStarted { .. }
            | Event::ClearText { .. }
            | Event::Gap { .. }
            | Event::RstIgnored { .. }
            | Event::Evicted { .. } => Level::Info,
            // A hole's end is one line per transfer that adds nothing an administrator
            // acts on (its open said where and for how long).
            Event::HoleClose { .. }
            | Event::HoleUsed { .. }
            | Event::ConnStart { .. }
            | Event::ConnEnd { .. }
            | Event::Line { .. } => Level::Debug,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::ConnStart {
                conn,
                client,
                server,
                start,
            } => write!(
                f,
                "{conn} connection client={client} server={server}{}",
                match start {
                    Start::Syn => "",
                    Start::Midstream => " midstream",
                    Start::Resumed => " resumed",
                }
            ),
            Event::Evicted {
                count,
                dead,
                total,
                max,
            } => write!(
                f,
                "connection table full ({max}): evicted {count} (closing or dataless {dead}, \
                 total {total}); live ones are remembered and resume if they return; raise \
                 --max-connections if this repeats"
            ),
            Event::ConnEnd { conn, reason } => {
                write!(f, "{conn} connection end reason={}", reason.name())
            }
            Event::Line { conn, dir, text } => write!(f, "{conn} {}: {text}", dir.name()),
            Event::Gap { conn, dir } => write!(
                f,
                "{conn} gap dir={}: bytes lost for good, lines resume at the next line end{}",
                dir.name(),
                match dir {
                    Dir::ToClient => "; replies are paired again from the next one read whole",
                    Dir::ToServer => "",
                }
            ),
            Event::RstIgnored { conn, dir } => write!(
                f,
                "{conn} rst ignored dir={}: sequence number not the exact next one (RFC 5961)",
                dir.name()
            ),
            Event::HoleOpen {
                conn,
                slot,
                spec,
                ttl,
            } => write!(
                f,
                "{conn} hole open slot={slot} {spec} ttl={}s",
                ttl.as_secs_f32()
            ),
            Event::HoleRearm { conn, slot, spec } => {
                write!(f, "{conn} hole rearm slot={slot} {spec}")
            }
            Event::HoleClose { conn, slot, spec } => {
                write!(f, "{conn} hole close slot={slot} {spec}")
            }
            Event::HoleUsed { conn, slot, spec } => {
                write!(f, "{conn} hole used slot={slot} {spec}")
            }
            Event::HoleFailed { conn, slot, spec } => {
                write!(f, "{conn} hole failed slot={slot} {spec}")
            }
            Event::Denied {
                conn,
                client,
                server,
                what,
                deny,
            } => write!(
                f,
                "{conn} deny {deny} cmd={what} client={client} server={server}"
            ),
            Event::Malformed {
                conn,
                what,
                error,
                text,
            } => write!(
                f,
                "{conn} malformed cmd={what} error=\"{error}\" line=\"{text}\""
            ),
            Event::TlsStarted {
                conn,
                client,
                server,
            } => write!(
                f,
                "{conn} tls client={client} server={server}: the control channel is \
                 encrypted; its data connections cannot be helped unless the client leaves \
                 TLS with CCC (otherwise open the server's passive port range)"
            ),
            Event::ClearText { conn, dir } => write!(
                f,
                "{conn} cleartext dir={}: TLS ended (CCC), lines are read again",
                dir.name()
            ),
            Event::Suppressed { reason, count } => {
                write!(f, "suppressed {count} more of this kind (reason={reason})")
            }
        }
    }
}
