//! Privilege separation: the wire format between the unprivileged worker and the
//! privileged monitor, and the monitor's checks.
//!
//! Owns the request/response encoding and [`Validator`], which re-checks every field of a
//! request before the monitor lets it touch the firewall (OpenSSH monitor habit: the
//! privileged side trusts nothing the worker says). Pure code, tested on every platform;
//! the socket loops live in `monitor` and `worker`.
//!
//! Messages are fixed-size datagrams on a `SOCK_SEQPACKET` socketpair, so there is no
//! framing to get wrong and a short or long message is simply invalid.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use ftp6proxy_core::policy::MIN_DATA_PORT;
use ftp6proxy_core::{FwAction, HoleSpec, Mode, Slot};

/// Size of a request.
pub const REQUEST_LEN: usize = 48;
/// Size of a response.
pub const RESPONSE_LEN: usize = 8;

/// Byte offsets of a request:
/// ```text
///  0      1        2      3        4      6       8          12         28         44    48
/// +------+--------+------+--------+------+-------+----------+----------+----------+-----+
/// |  op  | family | mode | (zero) | slot | dport | ttl (ms) |  src[16] |  dst[16] |  id |
/// +------+--------+------+--------+------+-------+----------+----------+----------+-----+
/// ```
/// All integers big-endian; IPv4 addresses use the first 4 address bytes, the rest zero.
mod field {
    use std::ops::Range;
    pub const OP: usize = 0;
    pub const FAMILY: usize = 1;
    pub const MODE: usize = 2;
    pub const ZERO: usize = 3;
    pub const SLOT: Range<usize> = 4..6;
    pub const DPORT: Range<usize> = 6..8;
    pub const TTL: Range<usize> = 8..12;
    pub const SRC: Range<usize> = 12..28;
    pub const DST: Range<usize> = 28..44;
    pub const ID: Range<usize> = 44..48;
}

const OP_OPEN: u8 = 1;
const OP_REFRESH: u8 = 2;
const OP_CLOSE: u8 = 3;

/// A request: apply `action`; `id` pairs it with its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Chosen by the worker, echoed in the response.
    pub id: u32,
    /// What to do.
    pub action: FwAction,
}

/// Why a request was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// Occurs when the datagram has the wrong size or an unknown code.
    #[error("malformed request")]
    Malformed,
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

fn put_addr(out: &mut [u8], addr: IpAddr) {
    match addr {
        IpAddr::V4(a) => out[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => out.copy_from_slice(&a.octets()),
    }
}

fn get_addr(bytes: &[u8], family: u8) -> Option<IpAddr> {
    match family {
        4 => {
            let octets: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
            bytes[4..]
                .iter()
                .all(|&b| b == 0)
                .then(|| IpAddr::V4(Ipv4Addr::from(octets)))
        }
        6 => {
            let octets: [u8; 16] = bytes.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}

impl Request {
    /// The datagram.
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut out = [0u8; REQUEST_LEN];
        let (op, spec, ttl) = match self.action {
            FwAction::Open { spec, ttl, .. } => (OP_OPEN, spec, ttl),
            FwAction::Refresh { spec, ttl, .. } => (OP_REFRESH, spec, ttl),
            FwAction::Close { spec, .. } => (OP_CLOSE, spec, Duration::ZERO),
        };
        out[field::OP] = op;
        out[field::FAMILY] = if spec.dst.is_ipv4() { 4 } else { 6 };
        out[field::MODE] = match spec.mode {
            Mode::Passive => 0,
            Mode::Active => 1,
        };
        out[field::SLOT].copy_from_slice(&self.action.slot().0.to_be_bytes());
        out[field::DPORT].copy_from_slice(&spec.dport.to_be_bytes());
        let ttl_ms = u32::try_from(ttl.as_millis()).unwrap_or(u32::MAX);
        out[field::TTL].copy_from_slice(&ttl_ms.to_be_bytes());
        put_addr(&mut out[field::SRC], spec.src);
        put_addr(&mut out[field::DST], spec.dst);
        out[field::ID].copy_from_slice(&self.id.to_be_bytes());
        out
    }

    /// Parses a datagram (syntax only; [`Validator::check`] does the rest).
    ///
    /// # Errors
    /// [`Invalid::Malformed`].
    pub fn decode(bytes: &[u8]) -> Result<Request, Invalid> {
        let bytes: &[u8; REQUEST_LEN] = bytes.try_into().map_err(|_| Invalid::Malformed)?;
        let be16 =
            |r: std::ops::Range<usize>| u16::from_be_bytes([bytes[r.start], bytes[r.start + 1]]);
        let id = u32::from_be_bytes(
            bytes[field::ID]
                .try_into()
                .map_err(|_| Invalid::Malformed)?,
        );
        let ttl_ms = u32::from_be_bytes(
            bytes[field::TTL]
                .try_into()
                .map_err(|_| Invalid::Malformed)?,
        );
        let family = bytes[field::FAMILY];
        let src = get_addr(&bytes[field::SRC], family).ok_or(Invalid::Malformed)?;
        let dst = get_addr(&bytes[field::DST], family).ok_or(Invalid::Malformed)?;
        let mode = match bytes[field::MODE] {
            0 => Mode::Passive,
            1 => Mode::Active,
            _ => return Err(Invalid::Malformed),
        };
        if bytes[field::ZERO] != 0 {
            return Err(Invalid::Malformed);
        }
        let spec = HoleSpec {
            mode,
            src,
            dst,
            dport: be16(field::DPORT),
        };
        let slot = Slot(be16(field::SLOT));
        let ttl = Duration::from_millis(u64::from(ttl_ms));
        let action = match bytes[field::OP] {
            OP_OPEN => FwAction::Open { slot, spec, ttl },
            OP_REFRESH => FwAction::Refresh { slot, spec, ttl },
            OP_CLOSE => FwAction::Close { slot, spec },
            _ => return Err(Invalid::Malformed),
        };
        Ok(Request { id, action })
    }
}

/// The monitor's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// The request's id.
    pub id: u32,
    /// Whether the firewall now matches the request.
    pub ok: bool,
}

impl Response {
    /// The datagram.
    pub fn encode(&self) -> [u8; RESPONSE_LEN] {
        let mut out = [0u8; RESPONSE_LEN];
        out[..4].copy_from_slice(&self.id.to_be_bytes());
        out[4] = u8::from(self.ok);
        out
    }

    /// Parses a datagram.
    ///
    /// # Errors
    /// [`Invalid::Malformed`].
    pub fn decode(bytes: &[u8]) -> Result<Response, Invalid> {
        let bytes: &[u8; RESPONSE_LEN] = bytes.try_into().map_err(|_| Invalid::Malformed)?;
        let ok = match bytes[4] {
            0 => false,
            1 => true,
            _ => return Err(Invalid::Malformed),
        };
        Ok(Response {
            id: u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            ok,
        })
    }
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
        }
    }

    /// Checks `action`; on success the monitor applies it and then calls [`Validator::applied`].
    ///
    /// # Errors
    /// The first [`Invalid`] reason found.
    pub fn check(&self, action: &FwAction) -> Result<(), Invalid> {
        let slot = action.slot();
        let end = u32::from(self.base) + u32::from(self.count);
        if u32::from(slot.0) < u32::from(self.base) || u32::from(slot.0) >= end {
            return Err(Invalid::SlotOutOfRange(slot.0));
        }
        let spec = action.spec();
        match action {
            FwAction::Open { ttl, .. } | FwAction::Refresh { ttl, .. } => {
                if spec.dport < MIN_DATA_PORT {
                    return Err(Invalid::LowPort(spec.dport));
                }
                if !usable(spec.src) || !usable(spec.dst) || spec.src == spec.dst {
                    return Err(Invalid::BadAddress);
                }
                if *ttl > self.max_ttl || ttl.is_zero() {
                    return Err(Invalid::TtlTooLong(*ttl));
                }
            }
            FwAction::Close { .. } => {}
        }
        // An open of a slot still in use replaces that hole (the Firewall trait's
        // contract). The engine never reuses a busy slot; a parser started after a crash
        // knows nothing of its predecessor's holes, and replacing one only ends it early
        // (with nft the old element even lives on to its own timeout).
        match action {
            FwAction::Refresh { .. } | FwAction::Close { .. }
                if self.opened.get(&slot).map(|(open, _)| open) != Some(spec) =>
            {
                Err(Invalid::NotOurs(slot.0))
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
                self.opened.insert(*slot, (*spec, now + *ttl));
            }
            FwAction::Close { slot, .. } => {
                // Even if the firewall refused, forget it: shutdown flushes everything.
                self.opened.remove(slot);
            }
            _ => {}
        }
    }

    /// Holes still open `grace` after their deadline: the parser that should have closed
    /// them is gone (a replaced parser starts with an empty hole table).
    pub fn overdue(&self, now: Instant, grace: Duration) -> Vec<FwAction> {
        self.open_holes()
            .into_iter()
            .filter(|(_, deadline)| *deadline + grace <= now)
            .map(|(close, _)| close)
            .collect()
    }

    /// When the next hole becomes overdue (see [`Validator::overdue`]).
    pub fn next_overdue(&self, grace: Duration) -> Option<Instant> {
        self.open_holes()
            .first()
            .map(|(_, deadline)| *deadline + grace)
    }

    /// Holes the monitor believes are open, each with the close it needs and its deadline,
    /// earliest deadline first, for closing them when the worker is gone.
    pub fn open_holes(&self) -> Vec<(FwAction, Instant)> {
        let mut holes: Vec<(FwAction, Instant)> = self
            .opened
            .iter()
            .map(|(&slot, &(spec, deadline))| (FwAction::Close { slot, spec }, deadline))
            .collect();
        holes.sort_by_key(|(_, deadline)| *deadline);
        holes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::test_holes::{open, v4 as spec4, v6 as spec6};

    #[test]
    fn requests_round_trip() {
        for action in [
            open(64000, spec6()),
            open(64099, spec4()),
            FwAction::Refresh {
                slot: Slot(64001),
                spec: spec4(),
                ttl: Duration::from_millis(1500),
            },
            FwAction::Close {
                slot: Slot(64002),
                spec: spec6(),
            },
        ] {
            let request = Request { id: 77, action };
            assert_eq!(Request::decode(&request.encode()), Ok(request));
        }
        let response = Response { id: 9, ok: true };
        assert_eq!(Response::decode(&response.encode()), Ok(response));
    }

    #[test]
    fn malformed_requests_are_refused() {
        let good = Request {
            id: 1,
            action: open(64000, spec4()),
        }
        .encode();
        assert_eq!(Request::decode(&good[..47]), Err(Invalid::Malformed));
        for (index, value) in [
            (field::OP, 9),
            (field::FAMILY, 5),
            (field::MODE, 2),
            (field::ZERO, 1),
        ] {
            let mut bad = good;
            bad[index] = value;
            assert_eq!(
                Request::decode(&bad),
                Err(Invalid::Malformed),
                "byte {index}"
            );
        }
        // Garbage after an IPv4 address.
        let mut bad = good;
        bad[field::SRC.start + 5] = 1;
        assert_eq!(Request::decode(&bad), Err(Invalid::Malformed));
        assert_eq!(
            Response::decode(&[0, 0, 0, 1, 2, 0, 0, 0]),
            Err(Invalid::Malformed)
        );
    }

    #[test]
    fn validator_keeps_requests_inside_the_configuration() {
        let mut v = Validator::new(64000, 10, Duration::from_secs(2));
        assert_eq!(
            v.check(&open(63999, spec6())),
            Err(Invalid::SlotOutOfRange(63999))
        );
        assert_eq!(
            v.check(&open(64010, spec6())),
            Err(Invalid::SlotOutOfRange(64010))
        );
        let low = HoleSpec {
            dport: 80,
            ..spec6()
        };
        assert_eq!(v.check(&open(64000, low)), Err(Invalid::LowPort(80)));
        let same = HoleSpec {
            dst: spec6().src,
            ..spec6()
        };
        assert_eq!(v.check(&open(64000, same)), Err(Invalid::BadAddress));
        let multicast = HoleSpec {
            dst: "ff02::1".parse().unwrap(),
            ..spec6()
        };
        assert_eq!(v.check(&open(64000, multicast)), Err(Invalid::BadAddress));
        let long = FwAction::Open {
            slot: Slot(64000),
            spec: spec6(),
            ttl: Duration::from_secs(3),
        };
        assert!(matches!(v.check(&long), Err(Invalid::TtlTooLong(_))));
        // Close and refresh only what was opened, with the same hole.
        let close = FwAction::Close {
            slot: Slot(64000),
            spec: spec6(),
        };
        assert_eq!(v.check(&close), Err(Invalid::NotOurs(64000)));
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
        assert_eq!(v.check(&wrong), Err(Invalid::NotOurs(64000)));
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
    }

    #[test]
    fn failed_open_is_not_recorded() {
        let mut v = Validator::new(64000, 10, Duration::from_secs(2));
        v.applied(&open(64000, spec6()), false);
        assert!(v.open_holes().is_empty());
    }
}
