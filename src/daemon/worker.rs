//! The worker: the unprivileged process that reads every intercepted packet, drives the
//! engine, and passes every packet on (DESIGN.md invariant 1).
//!
//! Owns the mio event loop (epoll on Linux, kqueue on FreeBSD — one loop, tested here, run
//! there), the packets held while their hole is being installed, and the requests in flight
//! to the monitor. Contains no protocol logic: it reads the clock once per turn, hands
//! bytes and time to the [`Engine`], sends the actions it returns to the monitor, and
//! passes a held packet once every action it caused is answered (or after
//! [`HOLD_LIMIT`], so a stuck firewall can delay a packet but never lose it).
//!
//! A later segment of the same connection that announces nothing is not held behind a
//! held one: it may overtake it by the time the firewall answers, which the receiver's TCP
//! reorders as it would any reordering on the path.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use ftp6proxy_core::engine::{Engine, Event as EngineEvent, Level};
use ftp6proxy_core::FwAction;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::socket::{recv, send, MsgFlags};

use super::logging;
use super::privsep::{Request, Response, RESPONSE_LEN};
use super::signals::{Event as Signal, SignalPipe};
use crate::intercept::Intercept;

/// Longest a packet waits for its hole. The firewall normally answers in well under a
/// millisecond (nftables) or a few (ipfw/pfctl); past this the packet goes on without it.
pub const HOLD_LIMIT: Duration = Duration::from_secs(1);

/// Packets read per loop turn before timers and the monitor get a look in.
const BATCH: usize = 256;

/// How long shutdown waits for the monitor to confirm the last closes.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

const INTERCEPT: Token = Token(0);
const MONITOR: Token = Token(1);
const SIGNALS: Token = Token(2);

/// A packet waiting for its holes.
struct Held<H> {
    held: H,
    waiting: usize,
    deadline: Instant,
}

/// One request to the monitor awaiting its answer.
struct InFlight {
    action: FwAction,
    packet: Option<u64>,
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// SIGTERM/SIGINT: holes closed, exit 0.
    Terminated,
    /// The monitor went away: nothing can be opened any more, exit 1.
    MonitorGone,
}

/// The worker's state.
pub struct Worker<I: Intercept> {
    engine: Engine,
    intercept: I,
    monitor: OwnedFd,
    signals: SignalPipe,
    held: HashMap<u64, Held<I::Held>>,
    in_flight: HashMap<u32, InFlight>,
    /// Requests the monitor's socket would not take yet, in order.
    backlog: VecDeque<Request>,
    next_packet: u64,
    next_request: u32,
    passed_late: u64,
}

impl<I: Intercept> Worker<I> {
    /// A worker around an opened intercept and the monitor's socket end.
    pub fn new(engine: Engine, intercept: I, monitor: OwnedFd, signals: SignalPipe) -> Self {
        Worker {
            engine,
            intercept,
            monitor,
            signals,
            held: HashMap::new(),
            in_flight: HashMap::new(),
            backlog: VecDeque::new(),
            next_packet: 0,
            next_request: 0,
            passed_late: 0,
        }
    }

    /// Runs until a terminating signal or the monitor's exit.
    ///
    /// # Errors
    /// When the event loop itself fails (not for packet or firewall trouble, which is
    /// logged and counted).
    pub fn run(mut self) -> anyhow::Result<Exit> {
        let mut poll = Poll::new()?;
        let registry = poll.registry();
        registry.register(
            &mut SourceFd(&self.intercept.as_raw_fd()),
            INTERCEPT,
            Interest::READABLE,
        )?;
        registry.register(
            &mut SourceFd(&self.monitor.as_raw_fd()),
            MONITOR,
            Interest::READABLE,
        )?;
        registry.register(
            &mut SourceFd(&self.signals.fd()),
            SIGNALS,
            Interest::READABLE,
        )?;
        let mut events = Events::with_capacity(16);
        // mio is edge-triggered: a source read only partly must be read again without
        // waiting for a new edge.
        let mut intercept_pending = true;
        loop {
            let now = Instant::now();
            let timeout = if intercept_pending {
                Some(Duration::ZERO)
            } else {
                self.next_deadline()
                    .map(|at| at.saturating_duration_since(now))
            };
            if let Err(e) = poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e.into());
                }
            }
            let mut monitor_ready = false;
            let mut signals_ready = false;
            for event in &events {
                match event.token() {
                    INTERCEPT => intercept_pending = true,
                    MONITOR => monitor_ready = true,
                    SIGNALS => signals_ready = true,
                    _ => {}
                }
            }
            let now = Instant::now();
            if monitor_ready && self.read_monitor(now).is_err() {
                self.pass_all_held();
                self.log_events();
                log::error!("monitor process is gone; exiting");
                return Ok(Exit::MonitorGone);
            }
            if intercept_pending {
                intercept_pending = self.read_packets(now);
            }
            if signals_ready {
                for signal in self.signals.drain() {
                    match signal {
                        Signal::Terminate => return Ok(self.shutdown()),
                        Signal::Reopen => {
                            logging::reopen();
                            log::info!("log reopened");
                        }
                        Signal::Status => log::info!("{}", self.status()),
                        Signal::Child => {}
                    }
                }
            }
            self.on_timers(Instant::now());
            self.flush_backlog();
            self.log_events();
        }
    }

    fn status(&self) -> String {
        format!(
            "{} held={} in_flight={} passed_late={}",
            self.engine.status(),
            self.held.len(),
            self.in_flight.len(),
            self.passed_late
        )
    }

    /// The earliest of the engine's timer and the held packets' limits.
    fn next_deadline(&self) -> Option<Instant> {
        let held = self.held.values().map(|h| h.deadline).min();
        match (self.engine.poll_timeout(), held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Reads up to [`BATCH`] packets; returns whether more may be waiting.
    fn read_packets(&mut self, now: Instant) -> bool {
        for _ in 0..BATCH {
            let outcome = match self.intercept.recv() {
                // The engine reads the bytes in place; nothing is copied.
                Ok(Some(packet)) => self
                    .engine
                    .on_packet_with(now, packet.bytes, packet.checksum),
                Ok(None) => return false,
                Err(e) => {
                    log::error!("reading intercepted packets: {e}");
                    return false;
                }
            };
            if outcome.must_wait() {
                let id = self.next_packet;
                self.next_packet += 1;
                let waiting = outcome
                    .actions
                    .iter()
                    .filter(|a| a.needs_confirmation())
                    .count();
                let held = self.intercept.hold_current();
                self.held.insert(
                    id,
                    Held {
                        held,
                        waiting,
                        deadline: now + HOLD_LIMIT,
                    },
                );
                for action in outcome.actions {
                    let packet = action.needs_confirmation().then_some(id);
                    self.submit(action, packet);
                }
            } else {
                for action in outcome.actions {
                    self.submit(action, None);
                }
                if let Err(e) = self.intercept.pass_current() {
                    log::error!("passing a packet on: {e}");
                }
            }
        }
        true
    }

    /// Sends one action to the monitor.
    fn submit(&mut self, action: FwAction, packet: Option<u64>) {
        let id = self.next_request;
        self.next_request = self.next_request.wrapping_add(1);
        self.in_flight.insert(id, InFlight { action, packet });
        self.backlog.push_back(Request { id, action });
        self.flush_backlog();
    }

    /// Sends queued requests until the socket would block.
    fn flush_backlog(&mut self) {
        while let Some(request) = self.backlog.front() {
            match send(
                self.monitor.as_raw_fd(),
                &request.encode(),
                MsgFlags::empty(),
            ) {
                Ok(_) => {
                    self.backlog.pop_front();
                }
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    // The monitor is gone; read_monitor sees the EOF and ends the loop.
                    log::error!("sending a firewall request: {e}");
                    return;
                }
            }
        }
    }

    /// Reads the monitor's answers. `Err` when the monitor has gone away.
    fn read_monitor(&mut self, now: Instant) -> Result<(), ()> {
        let mut buf = [0u8; 64];
        loop {
            match recv(self.monitor.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => return Err(()),
                Ok(n) => match Response::decode(&buf[..n.min(RESPONSE_LEN + 1)]) {
                    Ok(response) => self.answer(now, response),
                    Err(e) => log::error!("monitor sent a {e}"),
                },
                Err(nix::errno::Errno::EAGAIN) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return Err(()),
            }
        }
    }

    fn answer(&mut self, now: Instant, response: Response) {
        let Some(in_flight) = self.in_flight.remove(&response.id) else {
            return;
        };
        self.engine.hole_result(now, &in_flight.action, response.ok);
        if let Some(packet) = in_flight.packet {
            self.release(packet, 1);
        }
    }

    /// One of the packet's actions was answered; pass it when all are.
    fn release(&mut self, packet: u64, answered: usize) {
        let Some(held) = self.held.get_mut(&packet) else {
            return;
        };
        held.waiting = held.waiting.saturating_sub(answered);
        if held.waiting == 0 {
            let held = self.held.remove(&packet).expect("present above");
            if let Err(e) = self.intercept.pass_held(held.held) {
                log::error!("passing a held packet on: {e}");
            }
        }
    }

    fn on_timers(&mut self, now: Instant) {
        if self.engine.poll_timeout().is_some_and(|at| at <= now) {
            for action in self.engine.tick(now) {
                self.submit(action, None);
            }
        }
        let late: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, h)| h.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for packet in late {
            if let Some(held) = self.held.remove(&packet) {
                self.passed_late += 1;
                log::error!(
                    "firewall did not answer within {HOLD_LIMIT:?}; packet passed without waiting"
                );
                if let Err(e) = self.intercept.pass_held(held.held) {
                    log::error!("passing a held packet on: {e}");
                }
            }
        }
    }

    fn pass_all_held(&mut self) {
        for (_, held) in self.held.drain() {
            if let Err(e) = self.intercept.pass_held(held.held) {
                log::error!("passing a held packet on: {e}");
            }
        }
    }

    /// Closes every hole, waits (bounded) for the monitor to confirm, passes what is held.
    fn shutdown(&mut self) -> Exit {
        log::info!("terminating: closing {} holes", self.engine.open_holes());
        for action in self.engine.shutdown() {
            self.submit(action, None);
        }
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        while (!self.in_flight.is_empty() || !self.backlog.is_empty()) && Instant::now() < deadline
        {
            self.flush_backlog();
            let mut fds = [nix::poll::PollFd::new(
                std::os::fd::AsFd::as_fd(&self.monitor),
                nix::poll::PollFlags::POLLIN,
            )];
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(50u16));
            if self.read_monitor(Instant::now()).is_err() {
                break;
            }
        }
        self.pass_all_held();
        self.log_events();
        Exit::Terminated
    }

    fn log_events(&mut self) {
        while let Some(event) = self.engine.poll_event() {
            log_event(&event);
        }
    }
}

/// Writes one engine event at its level.
pub fn log_event(event: &EngineEvent) {
    match event.level() {
        Level::Error => log::error!("{event}"),
        Level::Warn => log::warn!("{event}"),
        Level::Info => log::info!("{event}"),
        Level::Debug => log::debug!("{event}"),
    }
}

#[cfg(test)]
mod tests {
    //! The worker's half of invariant 1, with a scripted intercept and the test playing the
    //! monitor: every packet is passed exactly once — at once when it announces nothing,
    //! after its hole is confirmed when it does, and also when the firewall refuses, stays
    //! silent, or goes away.
    use super::*;
    use crate::intercept::Packet;
    use ftp6proxy_core::engine::{Checksum, Config};
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    use std::fs::File;
    use std::os::fd::{AsRawFd, RawFd};

    /// Packets to deliver, and what was passed (by index, in order).
    struct Scripted {
        queue: VecDeque<Vec<u8>>,
        current: Option<(usize, Vec<u8>)>,
        delivered: usize,
        passed: Vec<(usize, Vec<u8>)>,
        fd: File,
    }

    impl AsRawFd for Scripted {
        fn as_raw_fd(&self) -> RawFd {
            self.fd.as_raw_fd()
        }
    }

    impl Intercept for Scripted {
        type Held = (usize, Vec<u8>);

        fn recv(&mut self) -> io::Result<Option<Packet<'_>>> {
            let Some(bytes) = self.queue.pop_front() else {
                return Ok(None);
            };
            self.current = Some((self.delivered, bytes));
            self.delivered += 1;
            Ok(self.current.as_ref().map(|(_, bytes)| Packet {
                bytes,
                checksum: Checksum::Verify,
            }))
        }

        fn pass_current(&mut self) -> io::Result<()> {
            let current = self.current.take().expect("a current packet to pass");
            self.passed.push(current);
            Ok(())
        }

        fn hold_current(&mut self) -> Self::Held {
            self.current.take().expect("a current packet to hold")
        }

        fn pass_held(&mut self, held: Self::Held) -> io::Result<()> {
            self.passed.push(held);
            Ok(())
        }
    }

    /// A TCP segment from client to server (IPv6, port 21) with `payload`.
    fn segment(seq: u32, syn: bool, payload: &[u8]) -> Vec<u8> {
        let mut tcp = [0u8; 20];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&21u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = if syn { 0x02 } else { 0x18 };
        let src: std::net::Ipv6Addr = "2001:db8:1::10".parse().unwrap();
        let dst: std::net::Ipv6Addr = "2001:db8:2::21".parse().unwrap();
        let mut body = tcp.to_vec();
        body.extend_from_slice(payload);
        // TCP checksum over the IPv6 pseudo-header (RFC 8200 §8.1).
        let mut sum: u32 = 0;
        let mut add = |bytes: &[u8]| {
            for pair in bytes.chunks(2) {
                let hi = u32::from(pair[0]) << 8;
                sum += hi | pair.get(1).map_or(0, |&b| u32::from(b));
            }
        };
        add(&src.octets());
        add(&dst.octets());
        add(&u32::try_from(body.len()).unwrap().to_be_bytes());
        add(&[0, 0, 0, 6]);
        add(&body);
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        let checksum = !u16::try_from(sum).unwrap();
        body[16..18].copy_from_slice(&checksum.to_be_bytes());
        let mut packet = vec![0x60, 0, 0, 0];
        packet.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        packet.extend_from_slice(&[6, 64]);
        packet.extend_from_slice(&src.octets());
        packet.extend_from_slice(&dst.octets());
        packet.extend_from_slice(&body);
        packet
    }

    fn worker(packets: Vec<Vec<u8>>) -> (Worker<Scripted>, OwnedFd) {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )
        .unwrap();
        let intercept = Scripted {
            queue: packets.into(),
            current: None,
            delivered: 0,
            passed: Vec::new(),
            fd: File::open("/dev/null").unwrap(),
        };
        let engine = Engine::new(Config::default());
        let signals = SignalPipe::install().unwrap();
        (Worker::new(engine, intercept, ours, signals), theirs)
    }

    fn conversation() -> Vec<Vec<u8>> {
        let eprt = b"EPRT |2|2001:db8:1::10|50000|\r\n";
        vec![
            segment(1000, true, b""),
            segment(1001, false, b"NOOP\r\n"),
            segment(1007, false, eprt),
            segment(1007 + 32, false, b"NOOP\r\n"),
        ]
    }

    /// The monitor's side: read every request waiting.
    fn requests(monitor: &OwnedFd) -> Vec<Request> {
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok(n @ 1..) = recv(monitor.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            out.push(Request::decode(&buf[..n]).unwrap());
        }
        out
    }

    fn answer(monitor: &OwnedFd, id: u32, ok: bool) {
        send(
            monitor.as_raw_fd(),
            &Response { id, ok }.encode(),
            MsgFlags::empty(),
        )
        .unwrap();
    }

    fn passed(w: &Worker<Scripted>) -> Vec<usize> {
        w.intercept.passed.iter().map(|(i, _)| *i).collect()
    }

    /// Invariant 1 and 2: the announcing packet waits for its hole, all others pass at
    /// once, and every packet is passed exactly once, unchanged.
    #[test]
    fn announcing_packet_waits_for_its_hole_and_every_packet_passes_once() {
        let packets = conversation();
        let (mut w, monitor) = worker(packets.clone());
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        assert!(!w.read_packets(now), "all four packets read in one batch");
        assert_eq!(
            passed(&w),
            [0, 1, 3],
            "packet 2 (EPRT) must wait for its hole"
        );
        let sent = requests(&monitor);
        assert_eq!(sent.len(), 1);
        assert!(matches!(sent[0].action, FwAction::Open { .. }));
        answer(&monitor, sent[0].id, true);
        w.read_monitor(now).unwrap();
        assert_eq!(passed(&w), [0, 1, 3, 2]);
        for (index, bytes) in &w.intercept.passed {
            assert_eq!(bytes, &packets[*index], "packet {index} changed");
        }
        assert!(w.held.is_empty());
    }

    /// Invariant 1: a refused hole still lets the packet go.
    #[test]
    fn refused_hole_still_passes_the_packet() {
        let (mut w, monitor) = worker(conversation());
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        while w.read_packets(now) {}
        let sent = requests(&monitor);
        answer(&monitor, sent[0].id, false);
        w.read_monitor(now).unwrap();
        assert_eq!(passed(&w), [0, 1, 3, 2]);
        assert_eq!(w.engine.open_holes(), 0);
    }

    /// Invariant 1: a silent firewall delays the packet by at most HOLD_LIMIT.
    #[test]
    fn silent_monitor_delays_the_packet_at_most_the_hold_limit() {
        let (mut w, _monitor) = worker(conversation());
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        while w.read_packets(now) {}
        w.on_timers(now + HOLD_LIMIT - Duration::from_millis(1));
        assert_eq!(passed(&w), [0, 1, 3]);
        w.on_timers(now + HOLD_LIMIT);
        assert_eq!(passed(&w), [0, 1, 3, 2]);
        assert_eq!(w.passed_late, 1);
    }

    /// Invariant 1: when the monitor goes away, held packets are passed before exiting.
    #[test]
    fn lost_monitor_releases_held_packets() {
        let (mut w, monitor) = worker(conversation());
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        while w.read_packets(now) {}
        drop(monitor);
        assert!(w.read_monitor(now).is_err());
        w.pass_all_held();
        assert_eq!(passed(&w), [0, 1, 3, 2]);
    }

    /// Invariant 6: shutdown sends a close for every open hole and passes what is held.
    #[test]
    fn shutdown_closes_holes_and_passes_everything() {
        let (mut w, monitor) = worker(conversation());
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        while w.read_packets(now) {}
        let open = requests(&monitor);
        answer(&monitor, open[0].id, true);
        w.read_monitor(now).unwrap();
        let closer = std::thread::spawn(move || {
            // Play the monitor: confirm the close the worker sends while shutting down.
            for _ in 0..100 {
                if let Some(request) = requests(&monitor).first() {
                    assert!(matches!(request.action, FwAction::Close { .. }));
                    answer(&monitor, request.id, true);
                    return monitor;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            panic!("no close request within 1 s");
        });
        assert_eq!(w.shutdown(), Exit::Terminated);
        drop(closer.join().unwrap());
        assert_eq!(w.engine.open_holes(), 0);
        assert!(w.in_flight.is_empty());
        assert_eq!(passed(&w).len(), 4);
    }
}
