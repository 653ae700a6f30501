//! Privilege separation: the monitor's independent check of every hole request.
//!
//! Owns [`Validator`], which re-checks every field of a request before the monitor lets it
//! touch the firewall, and keeps the monitor's own record of what it opened (OpenSSH
//! monitor habit: the privileged side trusts nothing the sandboxed side says). Pure code,
//! tested on every platform; the byte formats are `messages`', the socket loop `monitor`'s.
//! A request that does not decode never gets here (`messages::Malformed`); one that
//! decodes but breaks the rules is [`Refused`] here, and logged as such.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ftp6proxy_core::policy::MIN_DATA_PORT;
use ftp6proxy_core::{FwAction, HoleSpec, Slot};

/// Why a well-formed request was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Occurs when the slot is outside `base..base+count`.
    #[error("slot {0} outside our range")]
    SlotOutOfRange(u16),
    /// Occurs when the port is below 1024 (policy never asks for that).
    #[error("port {0} below 1024")]
    LowPort(u16),
    /// Occurs when an address is unspecified, multicast, or both ends are the same.
    #[error("bad address")]
    BadAddress,
    /// Occurs when the lifetime exceeds the configured `-t`.
    #[error("lifetime {0:?} exceeds the configured timeout")]
    TtlTooLong(Duration),
    /// Occurs when a refresh or close names a slot the monitor did not open with that hole.
    #[error("slot {0} does not hold that hole")]
    NotOurs(u16),
}

/// The monitor's independent check of every request, and its own record of what it opened,
/// so a compromised worker can at most open `count` well-formed holes of at most `-t`
/// seconds on high ports — never touch a rule outside the range or one it did not open.
#[derive(Debug)]
pub struct Validator {
    base: u16,
    count: u16,
    max_ttl: Duration,
    /// Holes opened and not closed since, with their deadlines.
    opened: BTreeMap<Slot, (HoleSpec, Instant)>,
    /// The same holes by deadline, earliest first: the monitor asks for the next overdue
    /// one every turn, which must not cost a sort of every open hole.
    by_deadline: BTreeSet<(Instant, Slot)>,
}

fn usable(addr: IpAddr) -> bool {
    !(addr.is_unspecified()
        || addr.is_multicast()
        || addr.is_loopback()
        || matches!(addr, IpAddr::V4(a) if a.is_broadcast()))
}

impl Validator {
    /// Slots `base..base+count`, lifetimes up to `max_ttl`.
    pub fn new(base: u16, count: u16, max_ttl: Duration) -> Validator {
        Validator {
            base,
            count,
            max_ttl,
            opened: BTreeMap::new(),
            by_deadline: BTreeSet::new(),
        }
    }

    /// The deadline of the hole open in `slot`, if one is.
    pub fn deadline(&self, slot: Slot) -> Option<Instant> {
        self.opened.get(&slot).map(|(_, deadline)| *deadline)
    }

    /// How many holes are open, and how many slots there are.
    pub fn usage(&self) -> (usize, usize) {
        (self.opened.len(), usize::from(self.count))
    }

    /// Checks `action`; on success the monitor applies it and then calls [`Validator::applied`].
    ///
    /// # Errors
    /// The first [`Refused`] reason found.
    pub fn check(&self, action: &FwAction) -> Result<(), Refused> {
        let slot = action.slot();
        let end = u32::from(self.base) + u32::from(self.count);
        if u32::from(slot.0) < u32::from(self.base) || u32::from(slot.0) >= end {
            return Err(Refused::SlotOutOfRange(slot.0));
        }
        let spec = action.spec();
        match action {
            FwAction::Open { ttl, .. } | FwAction::Refresh { ttl, .. } => {
                if spec.dport < MIN_DATA_PORT {
                    return Err(Refused::LowPort(spec.dport));
                }
                if !usable(spec.src) || !usable(spec.dst) || spec.src == spec.dst {
                    return Err(Refused::BadAddress);
                }
                if *ttl > self.max_ttl || ttl.is_zero() {
                    return Err(Refused::TtlTooLong(*ttl));
                }
            }
            FwAction::Close { .. } => {}
        }
        // An open of a slot still in use replaces that hole (the Firewall trait's
        // contract). The engine never reuses a busy slot; a parser started after a crash
        // knows nothing of its predecessor's holes, and replacing one only ends it early
        // (with nft the old element even lives on to its own timeout).
        // A refresh of a free slot is an open (every check above applies): the monitor may
        // have found the hole used up and forgotten it while the engine, not told yet,
        // re-armed it for a retransmitted announcement. A refresh or close naming another
        // hole than the slot holds is refused.
        let holds = self.opened.get(&slot).map(|(open, _)| open);
        match action {
            FwAction::Refresh { .. } if holds.is_none() => Ok(()),
            FwAction::Refresh { .. } | FwAction::Close { .. } if holds != Some(spec) => {
                Err(Refused::NotOurs(slot.0))
            }
            _ => Ok(()),
        }
    }

    /// Records that `action` was applied (`installed`: the firewall accepted it).
    pub fn applied(&mut self, action: &FwAction, installed: bool) {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        match action {
            FwAction::Open { slot, spec, ttl } | FwAction::Refresh { slot, spec, ttl }
                if installed =>
            {
                let deadline = now + *ttl;
                if let Some((_, old)) = self.opened.insert(*slot, (*spec, deadline)) {
                    self.by_deadline.remove(&(old, *slot));
                }
                self.by_deadline.insert((deadline, *slot));
            }
            FwAction::Close { slot, .. } => {
                // Even if the firewall refused, forget it: shutdown flushes everything.
                if let Some((_, deadline)) = self.opened.remove(slot) {
                    self.by_deadline.remove(&(deadline, *slot));
                }
            }
            _ => {}
        }
    }

    /// Holes still open `grace` after their deadline: the parser that should have closed
    /// them is gone (a replaced parser starts with an empty hole table).
    pub fn overdue(&self, now: Instant, grace: Duration) -> Vec<FwAction> {
        self.by_deadline_order()
            .take_while(|(_, deadline)| *deadline + grace <= now)
            .map(|(close, _)| close)
            .collect()
    }

    /// When the next hole becomes overdue (see [`Validator::overdue`]).
    pub fn next_overdue(&self, grace: Duration) -> Option<Instant> {
        self.by_deadline
            .first()
            .map(|(deadline, _)| *deadline + grace)
    }

    /// Holes the monitor believes are open, each with the close it needs and its deadline,
    /// earliest deadline first, for closing them when the worker is gone.
    pub fn open_holes(&self) -> Vec<(FwAction, Instant)> {
        self.by_deadline_order().collect()
    }

    /// Each open hole's close and deadline, earliest deadline first.
    fn by_deadline_order(&self) -> impl Iterator<Item = (FwAction, Instant)> + '_ {
        self.by_deadline.iter().filter_map(|&(deadline, slot)| {
            let (spec, _) = self.opened.get(&slot)?;
            Some((FwAction::Close { slot, spec: *spec }, deadline))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::test_holes::{open, v4 as spec4, v6 as spec6};

    #[test]
    fn validator_keeps_requests_inside_the_configuration() {
        let mut v = Validator::new(64000, 10, Duration::from_secs(2));
        assert_eq!(
            v.check(&open(63999, spec6())),
            Err(Refused::SlotOutOfRange(63999))
        );
        assert_eq!(
            v.check(&open(64010, spec6())),
            Err(Refused::SlotOutOfRange(64010))
        );
        let low = HoleSpec {
            dport: 80,
            ..spec6()
        };
        assert_eq!(v.check(&open(64000, low)), Err(Refused::LowPort(80)));
        let same = HoleSpec {
            dst: spec6().src,
            ..spec6()
        };
        assert_eq!(v.check(&open(64000, same)), Err(Refused::BadAddress));
        let multicast = HoleSpec {
            dst: "ff02::1".parse().unwrap(),
            ..spec6()
        };
        assert_eq!(v.check(&open(64000, multicast)), Err(Refused::BadAddress));
        let long = FwAction::Open {
            slot: Slot(64000),
            spec: spec6(),
            ttl: Duration::from_secs(3),
        };
        assert!(matches!(v.check(&long), Err(Refused::TtlTooLong(_))));
        // Close and refresh only what was opened, with the same hole.
        let close = FwAction::Close {
            slot: Slot(64000),
            spec: spec6(),
        };
        assert_eq!(v.check(&close), Err(Refused::NotOurs(64000)));
        assert_eq!(v.check(&open(64000, spec6())), Ok(()));
        v.applied(&open(64000, spec6()), true);
        assert_eq!(
            v.check(&open(64000, spec4())),
            Ok(()),
            "a busy slot may be opened again: it replaces the hole"
        );
        let wrong = FwAction::Close {
            slot: Slot(64000),
            spec: spec4(),
        };
        assert_eq!(v.check(&wrong), Err(Refused::NotOurs(64000)));
        assert_eq!(v.check(&close), Ok(()));
        let holes = v.open_holes();
        assert_eq!(
            holes.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
            vec![close]
        );
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        assert!(
            holes[0].1 <= now + Duration::from_secs(2),
            "its deadline is the open's ttl from when it was applied"
        );
        v.applied(&close, true);
        assert!(v.open_holes().is_empty());
        // A refresh of a free slot is an open, with every check of one; of a busy slot,
        // only with the hole it holds.
        let refresh = |slot: u16, spec: HoleSpec| FwAction::Refresh {
            slot: Slot(slot),
            spec,
            ttl: Duration::from_secs(2),
        };
        assert_eq!(v.check(&refresh(64001, spec6())), Ok(()), "free slot");
        let low = HoleSpec {
            dport: 21,
            ..spec6()
        };
        assert_eq!(v.check(&refresh(64001, low)), Err(Refused::LowPort(21)));
        v.applied(&open(64001, spec6()), true);
        assert_eq!(v.check(&refresh(64001, spec6())), Ok(()));
        assert_eq!(
            v.check(&refresh(64001, spec4())),
            Err(Refused::NotOurs(64001)),
            "a busy slot's other hole"
        );
    }

    /// Holes come out earliest deadline first; a refresh moves its hole, a close removes
    /// it, and the overdue ones are exactly those past deadline and grace.
    #[test]
    fn holes_are_kept_in_deadline_order() {
        let mut v = Validator::new(64000, 10, Duration::from_secs(2));
        let with_ttl = |slot: u16, ms: u64| FwAction::Open {
            slot: Slot(slot),
            spec: spec6(),
            ttl: Duration::from_millis(ms),
        };
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        v.applied(&with_ttl(64000, 2000), true);
        v.applied(&with_ttl(64001, 1000), true);
        v.applied(&with_ttl(64002, 1500), true);
        let slots = |v: &Validator| -> Vec<u16> {
            v.open_holes().iter().map(|(a, _)| a.slot().0).collect()
        };
        assert_eq!(slots(&v), [64001, 64002, 64000]);
        let refresh = FwAction::Refresh {
            slot: Slot(64000),
            spec: spec6(),
            ttl: Duration::from_millis(500),
        };
        v.applied(&refresh, true);
        assert_eq!(slots(&v), [64000, 64001, 64002], "the refresh moved it");
        assert_eq!(
            v.next_overdue(Duration::from_millis(100)),
            v.deadline(Slot(64000))
                .map(|d| d + Duration::from_millis(100))
        );
        let overdue: Vec<u16> = v
            .overdue(t0 + Duration::from_millis(1200), Duration::from_millis(100))
            .iter()
            .map(|a| a.slot().0)
            .collect();
        assert_eq!(overdue, [64000, 64001]);
        v.applied(
            &FwAction::Close {
                slot: Slot(64001),
                spec: spec6(),
            },
            true,
        );
        assert_eq!(slots(&v), [64000, 64002]);
        assert_eq!(v.usage().0, 2);
    }

    #[test]
    fn failed_open_is_not_recorded() {
        let mut v = Validator::new(64000, 10, Duration::from_secs(2));
        v.applied(&open(64000, spec6()), false);
        assert!(v.open_holes().is_empty());
    }
}
