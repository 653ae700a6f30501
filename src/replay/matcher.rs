//! The firewall as the replay models it, and the data connections it would let through.
//!
//! Every hole the engine asks for counts as installed the moment it is asked for, and lives
//! until its deadline (`-t` after the announcement, or after the retransmission that
//! re-armed it) or until the engine closes it, whichever comes first. A data connection's
//! SYN passes if a hole is open at its timestamp that matches it exactly as the firewall
//! rule does: TCP from the hole's `src` address (any port) to its `dst` address and `dport`
//! (`ip6 saddr . ip6 daddr . tcp dport @ftp6proxy6` in nft, `allow tcp from S to D dst-port
//! P setup` in ipfw, `pass quick proto tcp from S to D port P flags S/SA` in pf).
//!
//! Times are offsets from the first packet of the capture. Pure: no I/O, no clock.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ftp6proxy_core::{ConnId, FwAction, HoleSpec, Slot};

/// Closed holes kept to explain a blocked SYN.
const HISTORY: usize = 1024;

/// One hole, open or closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hole {
    /// Its slot.
    pub slot: Slot,
    /// What it lets through.
    pub spec: HoleSpec,
    /// The control connection that announced it (known once the engine has said so).
    pub conn: Option<ConnId>,
    /// When it was opened.
    pub opened: Duration,
    /// When it stops letting SYNs through.
    pub deadline: Duration,
    /// When the engine closed it, if it did.
    pub closed: Option<Duration>,
    /// SYNs it let through.
    pub used: u32,
}

impl Hole {
    /// Whether it lets a SYN from `src` to `dst`:`dport` through at `at`.
    pub fn admits(&self, at: Duration, src: IpAddr, dst: IpAddr, dport: u16) -> bool {
        self.open_at(at) && self.matches(src, dst, dport)
    }

    /// Whether its spec matches a SYN from `src` to `dst`:`dport`.
    pub fn matches(&self, src: IpAddr, dst: IpAddr, dport: u16) -> bool {
        self.spec.src == src && self.spec.dst == dst && self.spec.dport == dport
    }

    fn open_at(&self, at: Duration) -> bool {
        self.opened <= at && at < self.deadline && self.closed.is_none_or(|c| at < c)
    }
}

/// Why no hole let a SYN through: the nearest miss, to point at the cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// Nothing was ever opened to that address and port.
    NoHole,
    /// A matching hole existed but was closed by then (`-t` too short, or a late SYN).
    Expired(Hole),
    /// A hole to that address and port was open, but for another source address.
    OtherSource(Hole),
}

/// The holes the engine asked for, by slot, and those closed lately.
#[derive(Debug, Default)]
pub struct Firewall {
    open: BTreeMap<Slot, Hole>,
    history: VecDeque<Hole>,
}

impl Firewall {
    /// An empty firewall.
    pub fn new() -> Firewall {
        Firewall::default()
    }

    /// Applies `action` at `at`, as a firewall that installs everything at once would.
    /// Returns the hole an `Open` replaced or a `Close` removed, if any.
    pub fn apply(&mut self, at: Duration, action: &FwAction) -> Option<Hole> {
        match *action {
            FwAction::Open { slot, spec, ttl } => {
                let hole = Hole {
                    slot,
                    spec,
                    conn: None,
                    opened: at,
                    deadline: at + ttl,
                    closed: None,
                    used: 0,
                };
                let old = self.open.insert(slot, hole);
                old.map(|old| self.retire(old, at))
            }
            FwAction::Refresh { slot, spec, ttl } => {
                match self.open.get_mut(&slot) {
                    Some(hole) if hole.spec == spec => hole.deadline = at + ttl,
                    // A refresh of a hole we never saw: install it, as nft's delete+add does.
                    _ => {
                        return self.apply(at, &FwAction::Open { slot, spec, ttl });
                    }
                }
                None
            }
            FwAction::Close { slot, .. } => {
                let old = self.open.remove(&slot)?;
                Some(self.retire(old, at))
            }
        }
    }

    fn retire(&mut self, mut hole: Hole, at: Duration) -> Hole {
        hole.closed = Some(at.min(hole.deadline));
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(hole);
        hole
    }

    /// Records which control connection announced the hole in `slot`.
    pub fn set_owner(&mut self, slot: Slot, conn: ConnId) {
        if let Some(hole) = self.open.get_mut(&slot) {
            hole.conn = Some(conn);
        }
    }

    /// The hole in `slot`, if open.
    pub fn get(&self, slot: Slot) -> Option<&Hole> {
        self.open.get(&slot)
    }

    /// Lets a SYN from `src` to `dst`:`dport` at `at` through the first hole that admits
    /// it, counting the use, or says why none did.
    ///
    /// # Errors
    /// The nearest [`Miss`].
    pub fn pass(
        &mut self,
        at: Duration,
        src: IpAddr,
        dst: IpAddr,
        dport: u16,
    ) -> Result<Hole, Miss> {
        if let Some(hole) = self
            .open
            .values_mut()
            .find(|h| h.admits(at, src, dst, dport))
        {
            hole.used += 1;
            return Ok(*hole);
        }
        let all = || self.open.values().chain(self.history.iter().rev());
        if let Some(hole) = all().find(|h| h.matches(src, dst, dport)) {
            return Err(Miss::Expired(*hole));
        }
        if let Some(hole) = all().find(|h| {
            h.open_at(at) && h.spec.dst == dst && h.spec.dport == dport && h.spec.src != src
        }) {
            return Err(Miss::OtherSource(*hole));
        }
        Err(Miss::NoHole)
    }

    /// Holes still open at the end, in slot order.
    pub fn still_open(&self) -> impl Iterator<Item = &Hole> {
        self.open.values()
    }
}

/// How a data connection fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passage {
    /// Its first SYN found this hole.
    Hole(Hole),
    /// Its first SYN was blocked, a retransmitted one found this hole at `at`.
    Late {
        /// The hole.
        hole: Hole,
        /// When the SYN that passed was seen.
        at: Duration,
        /// Why the first one did not.
        first: Miss,
    },
    /// No SYN of it found a hole.
    Blocked(Miss),
}

impl Passage {
    /// Whether the connection would have been set up (maybe after a retransmission).
    pub fn passed(&self) -> bool {
        !matches!(self, Passage::Blocked(_))
    }
}

/// One data connection: a SYN (without ACK) between the two ends of a control connection,
/// to a port that is not an FTP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataConn {
    /// When its first SYN was seen.
    pub first_syn: Duration,
    /// The side that connects.
    pub src: SocketAddr,
    /// The side that listens.
    pub dst: SocketAddr,
    /// Its initial sequence number: a SYN with another one is a new connection.
    pub isn: u32,
    /// SYNs seen (the first and its retransmissions).
    pub syns: u32,
    /// What became of it.
    pub passage: Passage,
}

/// What a SYN turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynSeen {
    /// The first SYN of a new data connection; its index in [`DataConns::all`].
    New(usize),
    /// A retransmitted SYN whose connection was blocked so far and now found a hole.
    NowPassed(usize),
    /// A retransmission that changes nothing.
    Again,
    /// Not between the ends of a control connection seen so far.
    NotData,
}

/// The control connections' address pairs seen so far, and the data connections between
/// them.
#[derive(Debug, Default)]
pub struct DataConns {
    /// Unordered address pairs, as (smaller, larger).
    control: HashSet<(IpAddr, IpAddr)>,
    by_tuple: HashMap<(SocketAddr, SocketAddr), usize>,
    list: Vec<DataConn>,
}

fn pair(a: IpAddr, b: IpAddr) -> (IpAddr, IpAddr) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

impl DataConns {
    /// None yet.
    pub fn new() -> DataConns {
        DataConns::default()
    }

    /// A packet of a control connection between `a` and `b` was seen.
    pub fn control_seen(&mut self, a: IpAddr, b: IpAddr) {
        self.control.insert(pair(a, b));
    }

    /// A SYN without ACK from `src` to `dst` (not to an FTP port) was seen at `at`; checks
    /// it against `firewall` if it belongs to a data connection.
    pub fn syn(
        &mut self,
        at: Duration,
        src: SocketAddr,
        dst: SocketAddr,
        isn: u32,
        firewall: &mut Firewall,
    ) -> SynSeen {
        if !self.control.contains(&pair(src.ip(), dst.ip())) {
            return SynSeen::NotData;
        }
        if let Some(&index) = self.by_tuple.get(&(src, dst)) {
            let conn = &mut self.list[index];
            if conn.isn == isn {
                conn.syns += 1;
                if let Passage::Blocked(first) = conn.passage {
                    if let Ok(hole) = firewall.pass(at, src.ip(), dst.ip(), dst.port()) {
                        conn.passage = Passage::Late { hole, at, first };
                        return SynSeen::NowPassed(index);
                    }
                }
                return SynSeen::Again;
            }
        }
        let passage = match firewall.pass(at, src.ip(), dst.ip(), dst.port()) {
            Ok(hole) => Passage::Hole(hole),
            Err(miss) => Passage::Blocked(miss),
        };
        let index = self.list.len();
        self.list.push(DataConn {
            first_syn: at,
            src,
            dst,
            isn,
            syns: 1,
            passage,
        });
        self.by_tuple.insert((src, dst), index);
        SynSeen::New(index)
    }

    /// Every data connection, in the order their first SYN was seen.
    pub fn all(&self) -> &[DataConn] {
        &self.list
    }

    /// Consumes the table.
    pub fn into_list(self) -> Vec<DataConn> {
        self.list
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ftp6proxy_core::Mode;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    const CLIENT: &str = "2001:db8:1::10";
    const SERVER: &str = "2001:db8:2::21";

    fn passive(port: u16) -> HoleSpec {
        HoleSpec {
            mode: Mode::Passive,
            src: ip(CLIENT),
            dst: ip(SERVER),
            dport: port,
        }
    }

    fn open(slot: u16, spec: HoleSpec) -> FwAction {
        FwAction::Open {
            slot: Slot(slot),
            spec,
            ttl: Duration::from_secs(2),
        }
    }

    #[test]
    fn a_hole_admits_exactly_its_source_destination_and_port() {
        let mut fw = Firewall::new();
        fw.apply(ms(100), &open(64000, passive(50000)));
        let (c, s) = (ip(CLIENT), ip(SERVER));
        let hole = fw.pass(ms(150), c, s, 50000).unwrap();
        assert_eq!((hole.slot, hole.used), (Slot(64000), 1));
        assert_eq!(fw.get(Slot(64000)).unwrap().used, 1);
        // Any source port is fine (not even part of the question); anything else is not.
        assert_eq!(fw.pass(ms(150), c, s, 50001), Err(Miss::NoHole));
        assert!(matches!(
            fw.pass(ms(150), ip("2001:db8:3::99"), s, 50000),
            Err(Miss::OtherSource(h)) if h.slot == Slot(64000)
        ));
        // The reverse direction is another connection.
        assert_eq!(fw.pass(ms(150), s, c, 50000), Err(Miss::NoHole));
        // Not before it was opened.
        assert!(fw.pass(ms(99), c, s, 50000).is_err());
    }

    #[test]
    fn a_hole_lives_until_its_deadline_or_its_close() {
        let mut fw = Firewall::new();
        let (c, s) = (ip(CLIENT), ip(SERVER));
        fw.apply(ms(0), &open(1, passive(50000)));
        assert!(fw.pass(ms(1999), c, s, 50000).is_ok());
        assert!(matches!(
            fw.pass(ms(2000), c, s, 50000),
            Err(Miss::Expired(h)) if h.deadline == ms(2000)
        ));
        // A refresh moves the deadline.
        fw.apply(ms(1000), &open(2, passive(50001)));
        fw.apply(
            ms(2500),
            &FwAction::Refresh {
                slot: Slot(2),
                spec: passive(50001),
                ttl: Duration::from_secs(2),
            },
        );
        assert!(fw.pass(ms(4000), c, s, 50001).is_ok());
        // An explicit close ends it early, and it is remembered for the explanation.
        let closed = fw
            .apply(
                ms(4100),
                &FwAction::Close {
                    slot: Slot(2),
                    spec: passive(50001),
                },
            )
            .unwrap();
        assert_eq!(closed.closed, Some(ms(4100)));
        assert_eq!(closed.used, 1);
        assert!(matches!(
            fw.pass(ms(4200), c, s, 50001),
            Err(Miss::Expired(h)) if h.slot == Slot(2)
        ));
        assert_eq!(fw.still_open().count(), 1);
    }

    #[test]
    fn a_close_after_the_deadline_is_dated_at_the_deadline() {
        let mut fw = Firewall::new();
        fw.apply(ms(0), &open(1, passive(50000)));
        let closed = fw
            .apply(
                ms(5000),
                &FwAction::Close {
                    slot: Slot(1),
                    spec: passive(50000),
                },
            )
            .unwrap();
        assert_eq!(closed.closed, Some(ms(2000)));
        assert!(fw
            .apply(
                ms(5000),
                &FwAction::Close {
                    slot: Slot(1),
                    spec: passive(50000),
                },
            )
            .is_none());
    }

    #[test]
    fn owner_is_recorded() {
        let mut fw = Firewall::new();
        fw.apply(ms(0), &open(7, passive(50000)));
        fw.set_owner(Slot(7), ConnId(3));
        fw.set_owner(Slot(8), ConnId(4));
        assert_eq!(fw.get(Slot(7)).unwrap().conn, Some(ConnId(3)));
        assert!(fw.get(Slot(8)).is_none());
    }

    #[test]
    fn only_syns_between_control_endpoints_are_data_connections() {
        let mut fw = Firewall::new();
        let mut data = DataConns::new();
        let src = sa("[2001:db8:1::10]:40000");
        let dst = sa("[2001:db8:2::21]:50000");
        assert_eq!(data.syn(ms(0), src, dst, 1, &mut fw), SynSeen::NotData);
        data.control_seen(ip(SERVER), ip(CLIENT));
        assert_eq!(data.syn(ms(1), src, dst, 1, &mut fw), SynSeen::New(0));
        assert_eq!(data.syn(ms(1), dst, src, 9, &mut fw), SynSeen::New(1));
        let third = sa("[2001:db8:3::99]:50000");
        assert_eq!(data.syn(ms(1), src, third, 1, &mut fw), SynSeen::NotData);
        assert_eq!(data.all().len(), 2);
        assert!(data.all().iter().all(|d| !d.passage.passed()));
    }

    #[test]
    fn retransmissions_and_new_connections_on_the_same_ports() {
        let mut fw = Firewall::new();
        let mut data = DataConns::new();
        data.control_seen(ip(CLIENT), ip(SERVER));
        let src = sa("[2001:db8:1::10]:40000");
        let dst = sa("[2001:db8:2::21]:50000");
        assert_eq!(data.syn(ms(0), src, dst, 1, &mut fw), SynSeen::New(0));
        assert_eq!(data.syn(ms(1000), src, dst, 1, &mut fw), SynSeen::Again);
        // The hole opens late; the next retransmission passes.
        fw.apply(ms(1500), &open(1, passive(50000)));
        assert_eq!(
            data.syn(ms(3000), src, dst, 1, &mut fw),
            SynSeen::NowPassed(0)
        );
        assert_eq!(data.syn(ms(3100), src, dst, 1, &mut fw), SynSeen::Again);
        let conn = data.all()[0];
        assert_eq!(conn.syns, 4);
        assert!(matches!(
            conn.passage,
            Passage::Late { at, first: Miss::NoHole, .. } if at == ms(3000)
        ));
        assert!(conn.passage.passed());
        // Same ports, another ISN: a new connection.
        assert_eq!(data.syn(ms(3200), src, dst, 2, &mut fw), SynSeen::New(1));
        assert!(matches!(data.all()[1].passage, Passage::Hole(h) if h.used == 2));
    }
}
