//! What the engine counts, and the status line (SIGUSR1 / SIGINFO) that shows it all.
//!
//! Owns the counter set and its one-line `key=value` rendering (quinn-proto keeps its
//! `ConnectionStats` apart from the connection the same way). Counts only: the engine
//! decides when to count, and nothing here reads time or packets.

use std::fmt;

use std::ops::{Index, IndexMut};

use crate::policy::DenyReason;

/// Counters, for the status line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counters {
    /// Packets seen.
    pub packets: u64,
    /// Packets that were not a parseable TCP segment (passed on unread).
    pub unparsed: u64,
    /// Of those, IP fragments.
    pub fragments: u64,
    /// TCP segments not to or from an FTP port.
    pub not_ftp: u64,
    /// Segments with data and a wrong checksum (ignored).
    pub bad_checksum: u64,
    /// Control connections seen.
    pub connections: u64,
    /// Control connections dropped from a full table.
    pub evicted: u64,
    /// FTP lines read.
    pub lines: u64,
    /// Lines longer than the limit.
    pub overlong_lines: u64,
    /// Out-of-order segments dropped, and gaps given up on.
    pub reorder_drops: u64,
    /// Announcement lines that failed to parse.
    pub malformed: u64,
    /// Holes requested.
    pub holes_opened: u64,
    /// Holes re-armed by a retransmitted announcement.
    pub holes_rearmed: u64,
    /// Holes closed.
    pub holes_closed: u64,
    /// Holes the firewall refused.
    pub holes_failed: u64,
    /// Holes used up before their deadline: the firewall's rule consumed them on the data
    /// connection's first packet, and their slots were freed at once.
    pub holes_used: u64,
    /// Evicted connections that came back and resumed from their record.
    pub resumed: u64,
    /// Gaps: bytes of a direction the engine will never see (TCP acknowledged them, or
    /// the reorder buffer gave up).
    pub gaps: u64,
    /// RSTs ignored because the endpoints would ignore them too (RFC 5961 §3).
    pub rst_ignored: u64,
    /// Announcements denied, by reason.
    pub denied: DenyCounts,
    /// Control connections that switched to TLS.
    pub tls: u64,
}

/// One count per [`DenyReason`], indexed by it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DenyCounts([u64; DenyReason::ALL.len()]);

impl DenyCounts {
    /// Every count, in [`DenyReason::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().copied()
    }
}

impl Index<DenyReason> for DenyCounts {
    type Output = u64;
    fn index(&self, reason: DenyReason) -> &u64 {
        &self.0[reason as usize]
    }
}

impl IndexMut<DenyReason> for DenyCounts {
    fn index_mut(&mut self, reason: DenyReason) -> &mut u64 {
        &mut self.0[reason as usize]
    }
}

impl Counters {
    /// Denials whose reason is named `reason` ([`DenyReason::name`]); 0 for an unknown
    /// name.
    pub fn denied(&self, reason: &str) -> u64 {
        DenyReason::ALL
            .into_iter()
            .find(|r| r.name() == reason)
            .map_or(0, |r| self.denied[r])
    }
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "packets={} unparsed={} fragments={} not_ftp={} bad_checksum={} connections={} \
             evicted={} resumed={} lines={} overlong={} reorder_drops={} gaps={} rst_ignored={} \
             malformed={} opened={} rearmed={} closed={} used={} failed={} tls={}",
            self.packets,
            self.unparsed,
            self.fragments,
            self.not_ftp,
            self.bad_checksum,
            self.connections,
            self.evicted,
            self.resumed,
            self.lines,
            self.overlong_lines,
            self.reorder_drops,
            self.gaps,
            self.rst_ignored,
            self.malformed,
            self.holes_opened,
            self.holes_rearmed,
            self.holes_closed,
            self.holes_used,
            self.holes_failed,
            self.tls
        )?;
        for reason in DenyReason::ALL {
            write!(f, " denied_{}={}", reason.name(), self.denied[reason])?;
        }
        Ok(())
    }
}

/// One status line (SIGUSR1 / SIGINFO).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Control connections tracked.
    pub connections: usize,
    /// Holes open.
    pub holes: usize,
    /// Slots in all.
    pub slots: usize,
    /// Counters.
    pub counters: Counters,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "status connections={} holes={}/{} {}",
            self.connections, self.holes, self.slots, self.counters
        )
    }
}
