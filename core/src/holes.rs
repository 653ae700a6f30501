//! The hole table: which firewall slots are in use, for which hole, until when.
//!
//! Owns the slots `base..base+count` (ipfw rule numbers, pf anchor names, or just labels
//! for nftables elements), one deadline per hole, and the [`FwAction`]s that open, refresh
//! and close them. Knows no firewall syntax and no policy: it is asked to open a hole that
//! `policy` already allowed, and answers with a slot or "full" (DESIGN.md invariant 6:
//! at most `count` holes at once, each closed at its deadline at the latest).
//!
//! A hole goes through two states: *pending* (the open action was handed to the firewall,
//! the announcing packet is held) and *confirmed*. A firewall failure frees the slot without
//! a close action, because nothing was installed.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::{ConnId, Family};

/// A firewall slot: the ipfw rule number, or the pf anchor `<anchor>/<slot>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot(pub u16);

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Which side announced the data connection, and so which side connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The server announced a port (227/228/229); the client connects to the server.
    Passive,
    /// The client announced a port (PORT/EPRT/LPRT); the server connects to the client.
    Active,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Passive => "passive",
            Mode::Active => "active",
        })
    }
}

/// One hole: TCP from `src` (any port) to `dst` port `dport`, connection setup only.
///
/// Passive: `src` = client, `dst` = server. Active: `src` = server, `dst` = client.
/// `policy` guarantees that `src` and `dst` are the two ends of a control connection
/// and have the same family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HoleSpec {
    /// Who announced it.
    pub mode: Mode,
    /// The side that opens the data connection.
    pub src: IpAddr,
    /// The side that listens.
    pub dst: IpAddr,
    /// The announced port (>= 1024).
    pub dport: u16,
}

impl HoleSpec {
    /// The address family of both ends.
    pub fn family(&self) -> Family {
        Family::of(self.dst)
    }
}

impl fmt::Display for HoleSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mode={} from={} to={}",
            self.mode,
            self.src,
            std::net::SocketAddr::new(self.dst, self.dport)
        )
    }
}

/// What the firewall backend must do. The daemon applies actions in order.
/// Names one action the engine returned, for reporting its outcome; opaque to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionHandle(pub(crate) FwAction);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FwAction {
    /// Install the hole in `slot`. The packet that caused it waits for the confirmation.
    Open {
        /// Where.
        slot: Slot,
        /// What.
        spec: HoleSpec,
        /// How long it may live (backends with kernel timeouts use it; the others rely on
        /// the [`FwAction::Close`] that follows at the deadline).
        ttl: Duration,
    },
    /// The hole in `slot` was announced again (a retransmission): keep it `ttl` longer.
    Refresh {
        /// Where.
        slot: Slot,
        /// What (unchanged).
        spec: HoleSpec,
        /// The new lifetime from now.
        ttl: Duration,
    },
    /// Remove the hole in `slot`.
    Close {
        /// Where.
        slot: Slot,
        /// What was there.
        spec: HoleSpec,
    },
}

impl FwAction {
    /// The slot the action is about.
    /// The handle the caller gives back to the engine once the firewall has applied (or
    /// refused) this action: [`Engine::action_done`](crate::Engine::action_done) /
    /// [`Engine::action_failed`](crate::Engine::action_failed).
    pub fn handle(&self) -> ActionHandle {
        ActionHandle(*self)
    }

    pub fn slot(&self) -> Slot {
        match *self {
            FwAction::Open { slot, .. }
            | FwAction::Refresh { slot, .. }
            | FwAction::Close { slot, .. } => slot,
        }
    }

    /// The hole the action is about.
    pub fn spec(&self) -> &HoleSpec {
        match self {
            FwAction::Open { spec, .. }
            | FwAction::Refresh { spec, .. }
            | FwAction::Close { spec, .. } => spec,
        }
    }

    /// Whether the packet that caused this action must wait for its confirmation.
    pub fn needs_confirmation(&self) -> bool {
        !matches!(self, FwAction::Close { .. })
    }
}

/// The answer to [`HoleTable::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// A free slot was taken; the action installs the hole.
    New(Slot, FwAction),
    /// The same hole was already open: its deadline moved, the action refreshes it.
    Rearmed(Slot, FwAction),
    /// Every slot is in use. The packet still passes; the refusal is logged and counted.
    Full,
}

/// A hole that closed, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed {
    /// Its slot.
    pub slot: Slot,
    /// Its spec.
    pub spec: HoleSpec,
    /// The control connection that announced it.
    pub conn: ConnId,
}

#[derive(Debug, Clone, Copy)]
struct Hole {
    spec: HoleSpec,
    conn: ConnId,
    deadline: Instant,
}

/// Slots `base..base+count`, each free or holding one hole with a deadline.
#[derive(Debug)]
pub struct HoleTable {
    base: u16,
    ttl: Duration,
    slots: Vec<Option<Hole>>,
    by_spec: HashMap<HoleSpec, usize>,
    deadlines: BTreeSet<(Instant, usize)>,
    /// Where the search for a free slot starts: rotating keeps a slot that was just closed
    /// out of use for as long as possible, which keeps log lines and rule numbers apart.
    cursor: usize,
}

impl HoleTable {
    /// A table of `count` slots starting at `base`; every hole lives `ttl`.
    ///
    /// # Panics
    /// If `base + count - 1` exceeds 65535 or `count` is 0: the command line refuses both.
    pub fn new(base: u16, count: u16, ttl: Duration) -> HoleTable {
        assert!(
            count > 0,
            "hole table needs at least one slot (cli checks -c)"
        );
        assert!(
            u32::from(base) + u32::from(count) - 1 <= u32::from(u16::MAX),
            "slot range must fit in 16 bits (cli checks -b/-c)"
        );
        HoleTable {
            base,
            ttl,
            slots: vec![None; usize::from(count)],
            by_spec: HashMap::new(),
            deadlines: BTreeSet::new(),
            cursor: 0,
        }
    }

    /// Lifetime of every hole.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Number of holes open (or being opened) now.
    pub fn len(&self) -> usize {
        self.by_spec.len()
    }

    /// Whether no hole is open.
    pub fn is_empty(&self) -> bool {
        self.by_spec.is_empty()
    }

    /// The slot label of index `i`.
    fn slot(&self, index: usize) -> Slot {
        // The constructor proved base + index fits in u16.
        Slot(self.base + u16::try_from(index).expect("index < count <= u16::MAX"))
    }

    fn index(&self, slot: Slot) -> Option<usize> {
        let index = usize::from(slot.0.checked_sub(self.base)?);
        (index < self.slots.len()).then_some(index)
    }

    /// Opens `spec` for `conn` until `now + ttl`, or re-arms it if it is already open.
    pub fn open(&mut self, now: Instant, spec: HoleSpec, conn: ConnId) -> Opened {
        let deadline = now + self.ttl;
        if let Some(&index) = self.by_spec.get(&spec) {
            let hole = self.slots[index]
                .as_mut()
                .expect("by_spec points at a used slot");
            self.deadlines.remove(&(hole.deadline, index));
            hole.deadline = deadline;
            self.deadlines.insert((deadline, index));
            let slot = self.slot(index);
            return Opened::Rearmed(
                slot,
                FwAction::Refresh {
                    slot,
                    spec,
                    ttl: self.ttl,
                },
            );
        }
        let count = self.slots.len();
        let Some(index) = (0..count)
            .map(|offset| (self.cursor + offset) % count)
            .find(|&i| self.slots[i].is_none())
        else {
            return Opened::Full;
        };
        self.cursor = (index + 1) % count;
        self.slots[index] = Some(Hole {
            spec,
            conn,
            deadline,
        });
        self.by_spec.insert(spec, index);
        self.deadlines.insert((deadline, index));
        let slot = self.slot(index);
        Opened::New(
            slot,
            FwAction::Open {
                slot,
                spec,
                ttl: self.ttl,
            },
        )
    }

    /// The firewall could not install the hole in `slot`: free it without a close action.
    /// Returns what was there, or `None` if the slot was already free.
    pub fn forget(&mut self, slot: Slot) -> Option<Closed> {
        let index = self.index(slot)?;
        let hole = self.slots[index].take()?;
        self.by_spec.remove(&hole.spec);
        self.deadlines.remove(&(hole.deadline, index));
        Some(Closed {
            slot,
            spec: hole.spec,
            conn: hole.conn,
        })
    }

    /// Closes every hole whose deadline is at or before `now`, appending the close actions
    /// to `actions` and returning what closed.
    pub fn expire(&mut self, now: Instant, actions: &mut Vec<FwAction>) -> Vec<Closed> {
        let mut closed = Vec::new();
        while let Some(&(deadline, index)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            let slot = self.slot(index);
            if let Some(hole) = self.forget(slot) {
                actions.push(FwAction::Close {
                    slot,
                    spec: hole.spec,
                });
                closed.push(hole);
            }
        }
        closed
    }

    /// Closes every hole (shutdown).
    pub fn close_all(&mut self, actions: &mut Vec<FwAction>) -> Vec<Closed> {
        let mut closed = Vec::new();
        for index in 0..self.slots.len() {
            let slot = self.slot(index);
            if let Some(hole) = self.forget(slot) {
                actions.push(FwAction::Close {
                    slot,
                    spec: hole.spec,
                });
                closed.push(hole);
            }
        }
        closed
    }

    /// The earliest deadline, for the event loop's timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(deadline, _)| deadline)
    }

    /// The hole in `slot` and the connection that announced it, if any.
    pub fn owner(&self, slot: Slot) -> Option<(HoleSpec, ConnId)> {
        self.slots[self.index(slot)?]
            .as_ref()
            .map(|hole| (hole.spec, hole.conn))
    }

    /// The hole in `slot`, if any.
    pub fn get(&self, slot: Slot) -> Option<&HoleSpec> {
        self.slots[self.index(slot)?]
            .as_ref()
            .map(|hole| &hole.spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(port: u16) -> HoleSpec {
        HoleSpec {
            mode: Mode::Passive,
            src: "2001:db8::10".parse().unwrap(),
            dst: "2001:db8::21".parse().unwrap(),
            dport: port,
        }
    }

    use crate::test_clock::t0;

    #[test]
    fn slots_are_numbered_from_base() {
        let mut table = HoleTable::new(64000, 3, Duration::from_secs(2));
        let now = t0();
        let Opened::New(slot, action) = table.open(now, spec(5000), ConnId(1)) else {
            panic!("expected a new hole");
        };
        assert_eq!(slot, Slot(64000));
        assert_eq!(
            action,
            FwAction::Open {
                slot,
                spec: spec(5000),
                ttl: Duration::from_secs(2)
            }
        );
        let Opened::New(second, _) = table.open(now, spec(5001), ConnId(1)) else {
            panic!("expected a new hole");
        };
        assert_eq!(second, Slot(64001));
    }

    /// Invariant 6: at most `count` holes at once.
    #[test]
    fn exhaustion_is_reported_and_takes_no_slot() {
        let mut table = HoleTable::new(100, 2, Duration::from_secs(2));
        let now = t0();
        assert!(matches!(
            table.open(now, spec(2000), ConnId(1)),
            Opened::New(..)
        ));
        assert!(matches!(
            table.open(now, spec(2001), ConnId(1)),
            Opened::New(..)
        ));
        assert_eq!(table.open(now, spec(2002), ConnId(1)), Opened::Full);
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn retransmitted_announcement_rearms_the_same_slot() {
        let mut table = HoleTable::new(100, 4, Duration::from_secs(2));
        let now = t0();
        let Opened::New(slot, _) = table.open(now, spec(3000), ConnId(7)) else {
            panic!()
        };
        let later = now + Duration::from_secs(1);
        let Opened::Rearmed(again, action) = table.open(later, spec(3000), ConnId(7)) else {
            panic!("expected a re-arm")
        };
        assert_eq!(again, slot);
        assert!(matches!(action, FwAction::Refresh { .. }));
        assert_eq!(table.len(), 1);
        assert_eq!(table.next_deadline(), Some(later + Duration::from_secs(2)));
    }

    /// Invariant 6: each hole closes at its deadline at the latest.
    #[test]
    fn holes_close_at_their_deadline_not_before() {
        let mut table = HoleTable::new(100, 4, Duration::from_secs(2));
        let now = t0();
        table.open(now, spec(3000), ConnId(1));
        table.open(now + Duration::from_secs(1), spec(3001), ConnId(1));
        let mut actions = Vec::new();
        assert!(table
            .expire(now + Duration::from_millis(1999), &mut actions)
            .is_empty());
        let closed = table.expire(now + Duration::from_secs(2), &mut actions);
        assert_eq!(closed.len(), 1);
        assert_eq!(
            actions,
            vec![FwAction::Close {
                slot: Slot(100),
                spec: spec(3000)
            }]
        );
        assert_eq!(table.len(), 1);
        assert_eq!(table.next_deadline(), Some(now + Duration::from_secs(3)));
    }

    #[test]
    fn forgotten_slot_is_reusable_and_needs_no_close() {
        let mut table = HoleTable::new(100, 1, Duration::from_secs(2));
        let now = t0();
        table.open(now, spec(3000), ConnId(1));
        assert!(table.forget(Slot(100)).is_some());
        assert!(table.forget(Slot(100)).is_none());
        assert!(table.forget(Slot(99)).is_none());
        assert!(table.forget(Slot(101)).is_none());
        let mut actions = Vec::new();
        assert!(table
            .expire(now + Duration::from_secs(5), &mut actions)
            .is_empty());
        assert!(actions.is_empty());
        assert!(matches!(
            table.open(now, spec(3001), ConnId(1)),
            Opened::New(Slot(100), _)
        ));
    }

    #[test]
    fn free_slots_rotate() {
        let mut table = HoleTable::new(10, 3, Duration::from_secs(2));
        let now = t0();
        table.open(now, spec(3000), ConnId(1));
        table.forget(Slot(10));
        assert!(matches!(
            table.open(now, spec(3001), ConnId(1)),
            Opened::New(Slot(11), _)
        ));
    }

    /// Invariant 6: all holes are removed at shutdown.
    #[test]
    fn close_all_empties_the_table() {
        let mut table = HoleTable::new(65534, 2, Duration::from_secs(2));
        let now = t0();
        table.open(now, spec(3000), ConnId(1));
        table.open(now, spec(3001), ConnId(2));
        let mut actions = Vec::new();
        assert_eq!(table.close_all(&mut actions).len(), 2);
        assert_eq!(actions.len(), 2);
        assert!(table.is_empty());
        assert_eq!(table.next_deadline(), None);
    }
}
