//! The worker: the unprivileged process that does the packet I/O. It receives every
//! intercepted packet, has the sandboxed [`parser`](super::parser) read it, applies the
//! firewall actions through the monitor, and passes every packet on (DESIGN.md invariant 1).
//!
//! Owns the mio event loop (epoll on Linux, kqueue on FreeBSD — one loop, tested here, run
//! there), the packets held until the parser has read them and the monitor has confirmed
//! their holes, and the messages in flight to both. Contains no protocol logic and never
//! looks inside a packet: untrusted bytes are only copied to the parser. A packet waits at
//! most [`HOLD_LIMIT`], so a stuck parser or firewall can delay it but never lose it.
//!
//! Every packet is held for the parser's answer (a few microseconds), so the order of a
//! connection's segments is kept unless one of them waits for a hole; a later segment may
//! then overtake it, which the receiver's TCP reorders as it would any reordering on the
//! path.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use ftp6proxy_core::engine::{Event as EngineEvent, Level};
use ftp6proxy_core::FwAction;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::socket::{recv, MsgFlags};

use super::link::{send_nonblocking, Sent};
use super::parser::{ToParser, ToWorker, MAX_MESSAGE};
use super::privsep::{Request, Response, RESPONSE_LEN};
use super::signals::{Event as Signal, SignalPipe};
use crate::intercept::Intercept;

/// Longest a packet waits for the parser and its holes. Both normally answer in well under
/// a millisecond (nftables) or a few (ipfw/pfctl); past this the packet goes on regardless.
pub const HOLD_LIMIT: Duration = Duration::from_secs(1);

/// Packets read per loop turn before the parser and the monitor get a look in.
const BATCH: usize = 256;

/// Packets held at once. Past this the worker stops reading until some are passed, so a
/// flood waits in the kernel's queue (bounded there, fail-open on Linux) rather than in
/// our memory.
const MAX_HELD: usize = 1024;

/// How long shutdown waits for the parser's closes and the monitor's confirmations.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

const INTERCEPT: Token = Token(0);
const MONITOR: Token = Token(1);
const PARSER: Token = Token(2);
const SIGNALS: Token = Token(3);

/// A packet waiting for the parser and for its holes.
struct Held<H> {
    held: H,
    /// The parser has sent everything this packet needs.
    parsed: bool,
    /// Actions of this packet the monitor has not answered yet.
    waiting: usize,
    deadline: Instant,
}

/// One request to the monitor awaiting its answer.
struct InFlight {
    action: FwAction,
    packet: Option<u64>,
    /// Asked for by a parser that has since died: its answer goes to nobody.
    orphan: bool,
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// SIGTERM/SIGINT: holes closed, exit 0.
    Terminated,
    /// The monitor went away: nothing can be opened any more, exit 1.
    MonitorGone,
    /// The parser went away (it crashed): exit 1, the monitor cleans up.
    ParserGone,
}

/// The worker's state.
pub struct Worker<I: Intercept> {
    intercept: I,
    monitor: OwnedFd,
    parser: OwnedFd,
    signals: SignalPipe,
    held: HashMap<u64, Held<I::Held>>,
    in_flight: HashMap<u32, InFlight>,
    /// Requests the monitor's socket would not take yet, in order.
    to_monitor: VecDeque<Request>,
    /// Messages the parser's socket would not take yet, in order, each with the packet
    /// it carries (if it carries one).
    to_parser: VecDeque<(Option<u64>, Vec<u8>)>,
    parser_closed: bool,
    next_packet: u64,
    next_request: u32,
    passed_late: u64,
    /// Packets too large for the link to the parser: passed on unread.
    passed_unread: u64,
    /// How to start a new parser when one dies (none: the worker exits instead).
    respawn: Option<Respawn>,
}

/// A socket peer that has gone away.
#[derive(Debug)]
struct Gone;

/// Starts a fresh parser process and returns the worker's end of its link (non-blocking)
/// and its pid. The child closes the descriptors it is given (the worker's own).
pub type SpawnParser = Box<dyn FnMut(&[RawFd]) -> anyhow::Result<(OwnedFd, nix::unistd::Pid)>>;

/// Parser restarts allowed within [`CRASH_WINDOW`] before the daemon gives up.
pub const MAX_RESTARTS: usize = 5;
/// The window in which [`MAX_RESTARTS`] parser restarts mean a crash loop.
pub const CRASH_WINDOW: Duration = Duration::from_secs(60);

/// How the worker replaces a dead parser.
struct Respawn {
    spawn: SpawnParser,
    pid: Option<nix::unistd::Pid>,
    restarts: VecDeque<Instant>,
}

impl<I: Intercept> Worker<I> {
    /// A worker around an opened intercept and its sockets to the monitor and the parser
    /// (both non-blocking).
    pub fn new(intercept: I, monitor: OwnedFd, parser: OwnedFd, signals: SignalPipe) -> Self {
        Worker {
            intercept,
            monitor,
            parser,
            signals,
            held: HashMap::new(),
            in_flight: HashMap::new(),
            to_monitor: VecDeque::new(),
            to_parser: VecDeque::new(),
            parser_closed: false,
            next_packet: 0,
            next_request: 0,
            passed_late: 0,
            passed_unread: 0,
            respawn: None,
        }
    }

    /// Replaces a parser that dies with one from `spawn` (the current one is `pid`), up to
    /// [`MAX_RESTARTS`] in [`CRASH_WINDOW`].
    #[must_use]
    pub fn with_respawn(mut self, spawn: SpawnParser, pid: nix::unistd::Pid) -> Self {
        self.respawn = Some(Respawn {
            spawn,
            pid: Some(pid),
            restarts: VecDeque::new(),
        });
        self
    }

    /// The parser died: collect it, pass what it held (its state is gone), and start a
    /// fresh one, which joins every connection mid-stream. Errs when there is no way to
    /// restart it, or on a crash loop.
    fn replace_parser(&mut self, registry: &mio::Registry, now: Instant) -> anyhow::Result<()> {
        let closes = [
            self.intercept.as_raw_fd(),
            self.monitor.as_raw_fd(),
            self.parser.as_raw_fd(),
            self.signals.fd(),
        ];
        let Some(respawn) = self.respawn.as_mut() else {
            anyhow::bail!("no way to restart it");
        };
        // Its link is closed, so it is dead or dying; one that lingers is killed, so the
        // wait cannot hang the packet loop.
        let status = respawn.pid.take().map(|pid| {
            use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                    waitpid(pid, None)
                }
                other => other,
            }
        });
        while respawn
            .restarts
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) > CRASH_WINDOW)
        {
            respawn.restarts.pop_front();
        }
        if respawn.restarts.len() >= MAX_RESTARTS {
            anyhow::bail!(
                "crash loop: {MAX_RESTARTS} restarts within {}s",
                CRASH_WINDOW.as_secs()
            );
        }
        respawn.restarts.push_back(now);
        let restarts = respawn.restarts.len();
        let (link, pid) = (respawn.spawn)(&closes)?;
        respawn.pid = Some(pid);
        registry.deregister(&mut SourceFd(&self.parser.as_raw_fd()))?;
        self.pass_all_held();
        self.to_parser.clear();
        // Answers still due from the monitor belong to the dead parser's actions.
        for in_flight in self.in_flight.values_mut() {
            in_flight.packet = None;
            in_flight.orphan = true;
        }
        self.parser = link;
        self.parser_closed = false;
        registry.register(
            &mut SourceFd(&self.parser.as_raw_fd()),
            PARSER,
            Interest::READABLE,
        )?;
        log::warn!(
            "parser died ({status:?}); started a new one ({restarts} in the last {}s): \
             its connections are joined mid-stream",
            CRASH_WINDOW.as_secs()
        );
        Ok(())
    }

    /// Runs until a terminating signal or the loss of the monitor or the parser.
    ///
    /// # Errors
    /// When the event loop itself fails (not for packet or firewall trouble, which is
    /// logged and counted).
    pub fn run(mut self) -> anyhow::Result<Exit> {
        let mut poll = Poll::new()?;
        let registry = poll.registry();
        let sources = [
            (self.intercept.as_raw_fd(), INTERCEPT),
            (self.monitor.as_raw_fd(), MONITOR),
            (self.parser.as_raw_fd(), PARSER),
            (self.signals.fd(), SIGNALS),
        ];
        for (fd, token) in sources {
            registry.register(&mut SourceFd(&fd), token, Interest::READABLE)?;
        }
        let mut events = Events::with_capacity(16);
        // mio is edge-triggered: a source read only partly must be read again without
        // waiting for a new edge.
        let mut intercept_pending = true;
        loop {
            let timeout = if intercept_pending && self.held.len() < MAX_HELD {
                Some(Duration::ZERO)
            } else {
                self.next_deadline()
                    .map(|at| at.saturating_duration_since(Instant::now()))
            };
            if let Err(e) = poll.poll(&mut events, timeout) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e.into());
                }
            }
            let (mut monitor_ready, mut parser_ready, mut signals_ready) = (false, false, false);
            for event in &events {
                match event.token() {
                    INTERCEPT => intercept_pending = true,
                    MONITOR => monitor_ready = true,
                    PARSER => parser_ready = true,
                    SIGNALS => signals_ready = true,
                    _ => {}
                }
            }
            let now = Instant::now();
            if intercept_pending {
                intercept_pending = self.read_packets(now);
            }
            if parser_ready && self.read_parser().is_err() {
                if let Err(e) = self.replace_parser(poll.registry(), now) {
                    log::error!("parser process is gone ({e:#}); exiting");
                    self.pass_all_held();
                    return Ok(Exit::ParserGone);
                }
            }
            if monitor_ready && self.read_monitor().is_err() {
                log::error!("monitor process is gone; exiting");
                self.pass_all_held();
                return Ok(Exit::MonitorGone);
            }
            if signals_ready {
                for signal in self.signals.drain() {
                    match signal {
                        Signal::Terminate => return Ok(self.shutdown()),
                        // The monitor reopens the log; this process only forwards to it.
                        Signal::Reopen => {}
                        Signal::Status => {
                            self.tell_parser(&ToParser::Status);
                            log::info!(
                                "worker held={} in_flight={} passed_late={} passed_unread={}",
                                self.held.len(),
                                self.in_flight.len(),
                                self.passed_late,
                                self.passed_unread
                            );
                        }
                        Signal::Child => {}
                    }
                }
            }
            self.pass_overdue(Instant::now());
            self.flush();
        }
    }

    /// The earliest hold limit of a held packet.
    fn next_deadline(&self) -> Option<Instant> {
        self.held.values().map(|h| h.deadline).min()
    }

    /// Reads up to [`BATCH`] packets (fewer once [`MAX_HELD`] are held), holds each and
    /// sends it to the parser; returns whether more may be waiting.
    fn read_packets(&mut self, now: Instant) -> bool {
        for _ in 0..BATCH {
            if self.held.len() >= MAX_HELD {
                return true;
            }
            let id = self.next_packet;
            let mut message = Vec::new();
            match self.intercept.recv() {
                Ok(Some(packet)) => ToParser::Packet {
                    id,
                    checksum: packet.checksum,
                    bytes: packet.bytes,
                }
                .encode(&mut message),
                Ok(None) => return false,
                Err(e) => {
                    log::error!("reading intercepted packets: {e}");
                    return false;
                }
            }
            self.next_packet += 1;
            let held = self.intercept.hold_current();
            self.held.insert(
                id,
                Held {
                    held,
                    parsed: false,
                    waiting: 0,
                    deadline: now + HOLD_LIMIT,
                },
            );
            self.to_parser.push_back((Some(id), message));
            self.flush();
        }
        true
    }

    fn tell_parser(&mut self, message: &ToParser<'_>) {
        let mut bytes = Vec::new();
        message.encode(&mut bytes);
        self.to_parser.push_back((None, bytes));
        self.flush();
    }

    /// Sends one action to the monitor.
    fn submit(&mut self, action: FwAction, packet: Option<u64>) {
        let id = self.next_request;
        self.next_request = self.next_request.wrapping_add(1);
        self.in_flight.insert(
            id,
            InFlight {
                action,
                packet,
                orphan: false,
            },
        );
        self.to_monitor.push_back(Request { id, action });
    }

    /// Sends queued messages to both peers until a socket would block.
    fn flush(&mut self) {
        while let Some(request) = self.to_monitor.front() {
            match send_nonblocking(&self.monitor, &request.encode()) {
                Sent::Yes => {
                    self.to_monitor.pop_front();
                }
                // A request is 48 bytes: TooBig cannot happen; treat it like a lost peer,
                // whose EOF read_monitor sees and ends the loop on.
                Sent::Later | Sent::TooBig | Sent::Gone => break,
            }
        }
        while let Some((packet, message)) = self.to_parser.front() {
            debug_assert!(message.len() <= MAX_MESSAGE);
            match send_nonblocking(&self.parser, message) {
                Sent::Yes => {
                    self.to_parser.pop_front();
                }
                Sent::TooBig => {
                    // The link's buffer is smaller than this packet (FreeBSD 14's 8 KiB
                    // default if sizing failed). Retrying would block every later message
                    // behind it: the packet goes on unread instead, and the count says so.
                    let packet = *packet;
                    self.to_parser.pop_front();
                    self.pass_unread(packet);
                }
                Sent::Later | Sent::Gone => break,
            }
        }
    }

    /// Passes a packet that the parser will never see, and counts it.
    fn pass_unread(&mut self, packet: Option<u64>) {
        let Some(held) = packet.and_then(|id| self.held.remove(&id)) else {
            return;
        };
        self.passed_unread += 1;
        if is_power_of_ten(self.passed_unread) {
            log::warn!(
                "packet too large for the link to the parser passed on unread \
                 (count={}); the FTP stream of its connection has a gap",
                self.passed_unread
            );
        }
        if let Err(e) = self.intercept.pass_held(held.held) {
            log::error!("passing a packet on: {e}");
        }
    }

    /// Reads the parser's messages.
    fn read_parser(&mut self) -> Result<(), Gone> {
        let mut buf = [0u8; 128];
        loop {
            let n = match recv(self.parser.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => return Err(Gone),
                Ok(n) => n,
                Err(nix::errno::Errno::EAGAIN) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return Err(Gone),
            };
            match ToWorker::decode(&buf[..n]) {
                Ok(ToWorker::Action { packet, action }) => {
                    // A packet already passed on (hold limit) no longer waits for its hole.
                    let packet = packet.filter(|id| self.held.contains_key(id));
                    if let Some(held) = packet.and_then(|id| self.held.get_mut(&id)) {
                        held.waiting += usize::from(action.needs_confirmation());
                    }
                    let waits = packet.filter(|_| action.needs_confirmation());
                    self.submit(action, waits);
                }
                Ok(ToWorker::Done { packet }) => {
                    if let Some(held) = self.held.get_mut(&packet) {
                        held.parsed = true;
                    }
                    self.release_if_ready(packet);
                }
                Ok(ToWorker::Closed) => self.parser_closed = true,
                Err(e) => log::error!("parser sent a {e}"),
            }
        }
    }

    /// Reads the monitor's answers and forwards them to the parser.
    fn read_monitor(&mut self) -> Result<(), Gone> {
        let mut buf = [0u8; 64];
        loop {
            match recv(self.monitor.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => return Err(Gone),
                Ok(n) => match Response::decode(&buf[..n.min(RESPONSE_LEN + 1)]) {
                    Ok(response) => self.answer(response),
                    Err(e) => log::error!("monitor sent a {e}"),
                },
                Err(nix::errno::Errno::EAGAIN) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return Err(Gone),
            }
        }
    }

    fn answer(&mut self, response: Response) {
        let Some(in_flight) = self.in_flight.remove(&response.id) else {
            return;
        };
        if !self.parser_closed && !in_flight.orphan {
            self.tell_parser(&ToParser::Answer {
                action: in_flight.action,
                ok: response.ok,
            });
        }
        if let Some(packet) = in_flight.packet {
            if let Some(held) = self.held.get_mut(&packet) {
                held.waiting = held.waiting.saturating_sub(1);
            }
            self.release_if_ready(packet);
        }
    }

    /// Passes the packet on once the parser is done with it and its holes are confirmed.
    fn release_if_ready(&mut self, packet: u64) {
        if self
            .held
            .get(&packet)
            .is_some_and(|h| h.parsed && h.waiting == 0)
        {
            let held = self.held.remove(&packet).expect("present above");
            if let Err(e) = self.intercept.pass_held(held.held) {
                log::error!("passing a packet on: {e}");
            }
        }
    }

    /// Passes every packet whose hold limit is over.
    fn pass_overdue(&mut self, now: Instant) {
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
                    "no answer within {HOLD_LIMIT:?} (parser done: {}, holes pending: {}); \
                     packet passed without waiting",
                    held.parsed,
                    held.waiting
                );
                if let Err(e) = self.intercept.pass_held(held.held) {
                    log::error!("passing a packet on: {e}");
                }
            }
        }
    }

    fn pass_all_held(&mut self) {
        for (_, held) in self.held.drain() {
            if let Err(e) = self.intercept.pass_held(held.held) {
                log::error!("passing a packet on: {e}");
            }
        }
    }

    /// Has the parser close every hole, waits (bounded) for the monitor to confirm, and
    /// passes what is held.
    fn shutdown(&mut self) -> Exit {
        self.tell_parser(&ToParser::Shutdown);
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        while Instant::now() < deadline {
            self.flush();
            let settled = self.parser_closed
                && self.in_flight.is_empty()
                && self.to_monitor.is_empty()
                && self.to_parser.is_empty();
            if settled {
                break;
            }
            let mut fds = [
                nix::poll::PollFd::new(
                    std::os::fd::AsFd::as_fd(&self.monitor),
                    nix::poll::PollFlags::POLLIN,
                ),
                nix::poll::PollFd::new(
                    std::os::fd::AsFd::as_fd(&self.parser),
                    nix::poll::PollFlags::POLLIN,
                ),
            ];
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(50u16));
            let parser_gone = self.read_parser().is_err();
            if self.read_monitor().is_err() {
                break;
            }
            if parser_gone && !self.parser_closed {
                break;
            }
        }
        self.pass_all_held();
        Exit::Terminated
    }
}

/// 1, 10, 100, ...: when a counted warning is logged, so it shows at once and never floods.
fn is_power_of_ten(mut n: u64) -> bool {
    while n >= 10 && n.is_multiple_of(10) {
        n /= 10;
    }
    n == 1
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

/// Packets for the worker's and the parser's tests.
#[cfg(test)]
pub(crate) mod tests_support {
    /// A TCP segment from client to server (IPv6, port 21) with `payload`.
    pub fn segment(seq: u32, syn: bool, payload: &[u8]) -> Vec<u8> {
        let mut tcp = [0u8; 20];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&21u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = if syn { 0x02 } else { 0x18 };
        let src: std::net::Ipv6Addr = "2001:db8:1::10".parse().expect("literal");
        let dst: std::net::Ipv6Addr = "2001:db8:2::21".parse().expect("literal");
        let mut body = tcp.to_vec();
        body.extend_from_slice(payload);
        // TCP checksum over the IPv6 pseudo-header (RFC 8200 §8.1).
        let mut sum: u32 = 0;
        let mut add = |bytes: &[u8]| {
            for pair in bytes.chunks(2) {
                sum += u32::from(pair[0]) << 8 | pair.get(1).map_or(0, |&b| u32::from(b));
            }
        };
        let len = u32::try_from(body.len()).expect("small");
        add(&src.octets());
        add(&dst.octets());
        add(&len.to_be_bytes());
        add(&[0, 0, 0, 6]);
        add(&body);
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        let checksum = !u16::try_from(sum).expect("folded");
        body[16..18].copy_from_slice(&checksum.to_be_bytes());
        let mut packet = vec![0x60, 0, 0, 0];
        packet.extend_from_slice(&u16::try_from(body.len()).expect("small").to_be_bytes());
        packet.extend_from_slice(&[6, 64]);
        packet.extend_from_slice(&src.octets());
        packet.extend_from_slice(&dst.octets());
        packet.extend_from_slice(&body);
        packet
    }

    /// SYN, NOOP, an EPRT (the only announcement: packet 2), NOOP.
    pub fn conversation() -> Vec<Vec<u8>> {
        let eprt = b"EPRT |2|2001:db8:1::10|50000|\r\n";
        vec![
            segment(1000, true, b""),
            segment(1001, false, b"NOOP\r\n"),
            segment(1007, false, eprt),
            segment(1007 + 32, false, b"NOOP\r\n"),
        ]
    }
}

#[cfg(test)]
mod tests {
    //! The worker's half of invariant 1, with a scripted intercept, a real parser thread
    //! (or a silent one) and the test playing the monitor: every packet is passed exactly
    //! once and unchanged — after the parser read it, and after its hole is confirmed when
    //! it announces one — also when the firewall refuses, a peer stays silent or goes away.
    use super::tests_support::conversation;
    use super::*;
    use crate::intercept::Packet;
    use ftp6proxy_core::engine::{Checksum, Config, Engine};
    use nix::sys::socket::send;
    use std::fs::File;
    use std::io;
    use std::os::fd::RawFd;

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

    fn pair() -> (OwnedFd, OwnedFd) {
        crate::daemon::link::seqpacket_pair().expect("socketpair")
    }

    struct Rig {
        worker: Worker<Scripted>,
        monitor: OwnedFd,
        parser: Option<std::thread::JoinHandle<nix::Result<()>>>,
        silent_parser: Option<OwnedFd>,
    }

    /// A worker wired to a real parser thread (or, `real_parser == false`, to a parser
    /// that never answers) and to the test as monitor.
    fn rig(real_parser: bool) -> Rig {
        rig_with_parser_link(real_parser, pair())
    }

    fn rig_with_parser_link(real_parser: bool, parser_link: (OwnedFd, OwnedFd)) -> Rig {
        let (monitor, worker_monitor_end) = pair();
        let (worker_parser_end, parser_end) = parser_link;
        for fd in [&worker_monitor_end, &worker_parser_end] {
            crate::daemon::link::set_nonblocking(fd).unwrap();
        }
        let (parser, silent_parser) = if real_parser {
            let thread = std::thread::spawn(move || {
                super::super::parser::run(Engine::new(Config::default()), &parser_end, None)
            });
            (Some(thread), None)
        } else {
            (None, Some(parser_end))
        };
        let intercept = Scripted {
            queue: conversation().into(),
            current: None,
            delivered: 0,
            passed: Vec::new(),
            fd: File::open("/dev/null").unwrap(),
        };
        let signals = SignalPipe::install().unwrap();
        Rig {
            worker: Worker::new(intercept, worker_monitor_end, worker_parser_end, signals),
            monitor,
            parser,
            silent_parser,
        }
    }

    impl Rig {
        /// Lets the parser thread answer, then reads its answers (bounded wait).
        fn settle(&mut self, until: impl Fn(&Worker<Scripted>) -> bool) {
            for _ in 0..200 {
                self.worker.flush();
                let _ = self.worker.read_parser();
                let _ = self.worker.read_monitor();
                self.worker.flush();
                if until(&self.worker) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            panic!("the worker did not settle within 1 s");
        }

        /// The monitor's side: the requests waiting.
        fn requests(&self) -> Vec<Request> {
            let mut out = Vec::new();
            let mut buf = [0u8; 64];
            while let Ok(n @ 1..) = recv(self.monitor.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT)
            {
                out.push(Request::decode(&buf[..n]).unwrap());
            }
            out
        }

        fn answer(&self, id: u32, ok: bool) {
            send(
                self.monitor.as_raw_fd(),
                &Response { id, ok }.encode(),
                MsgFlags::empty(),
            )
            .unwrap();
        }

        fn passed(&self) -> Vec<usize> {
            self.worker
                .intercept
                .passed
                .iter()
                .map(|(i, _)| *i)
                .collect()
        }
    }

    #[allow(clippy::disallowed_methods)]
    fn now() -> Instant {
        Instant::now()
    }

    /// Invariants 1 and 2: the announcing packet waits for its hole, the others pass once
    /// the parser has read them, and every packet is passed exactly once, unchanged.
    #[test]
    fn announcing_packet_waits_for_its_hole_and_every_packet_passes_once() {
        let mut rig = rig(true);
        assert!(
            !rig.worker.read_packets(now()),
            "all four packets read in one batch"
        );
        rig.settle(|w| w.intercept.passed.len() == 3 && !w.in_flight.is_empty());
        assert_eq!(
            rig.passed(),
            [0, 1, 3],
            "packet 2 (EPRT) must wait for its hole"
        );
        let sent = rig.requests();
        assert_eq!(sent.len(), 1);
        assert!(matches!(sent[0].action, FwAction::Open { .. }));
        rig.answer(sent[0].id, true);
        rig.settle(|w| w.intercept.passed.len() == 4);
        assert_eq!(rig.passed(), [0, 1, 3, 2]);
        let packets = conversation();
        for (index, bytes) in &rig.worker.intercept.passed {
            assert_eq!(bytes, &packets[*index], "packet {index} changed");
        }
        assert!(rig.worker.held.is_empty());
    }

    /// Invariant 1: a refused hole still lets the packet go.
    #[test]
    fn refused_hole_still_passes_the_packet() {
        let mut rig = rig(true);
        rig.worker.read_packets(now());
        rig.settle(|w| !w.in_flight.is_empty());
        let sent = rig.requests();
        rig.answer(sent[0].id, false);
        rig.settle(|w| w.intercept.passed.len() == 4);
        assert_eq!(rig.passed(), [0, 1, 3, 2]);
    }

    /// Invariant 1: a silent parser delays packets by at most HOLD_LIMIT.
    #[test]
    fn silent_parser_delays_packets_at_most_the_hold_limit() {
        let mut rig = rig(false);
        let start = now();
        rig.worker.read_packets(start);
        rig.worker
            .pass_overdue(start + HOLD_LIMIT - Duration::from_millis(1));
        assert!(rig.passed().is_empty());
        rig.worker.pass_overdue(start + HOLD_LIMIT);
        assert_eq!(rig.passed().len(), 4);
        assert_eq!(rig.worker.passed_late, 4);
        drop(rig.silent_parser.take());
    }

    /// Invariant 7 in the shell: a flood waits in the kernel, not in the worker's memory.
    #[test]
    fn held_packets_are_bounded() {
        let mut rig = rig(false);
        let extra: Vec<Vec<u8>> = (0..MAX_HELD + 10)
            .map(|_| conversation()[1].clone())
            .collect();
        rig.worker.intercept.queue.extend(extra);
        let start = now();
        while rig.worker.held.len() < MAX_HELD {
            assert!(rig.worker.read_packets(start) || rig.worker.held.len() == MAX_HELD);
        }
        assert!(rig.worker.read_packets(start), "more is waiting");
        assert_eq!(rig.worker.held.len(), MAX_HELD);
        assert_eq!(rig.worker.intercept.delivered, MAX_HELD);
        rig.worker.pass_overdue(start + HOLD_LIMIT);
        assert!(rig.worker.held.is_empty());
        rig.worker.read_packets(start + HOLD_LIMIT);
        assert_eq!(rig.worker.held.len(), 14);
        drop(rig.silent_parser.take());
    }

    /// Invariant 1: when the parser goes away, the loss is seen and held packets pass.
    #[test]
    fn lost_parser_releases_held_packets() {
        let mut rig = rig(false);
        rig.worker.read_packets(now());
        drop(rig.silent_parser.take());
        assert!(rig.worker.read_parser().is_err());
        rig.worker.pass_all_held();
        assert_eq!(rig.passed().len(), 4);
    }

    /// Invariant 1: when the monitor goes away, the loss is seen and held packets pass.
    #[test]
    fn lost_monitor_releases_held_packets() {
        let mut rig = rig(true);
        rig.worker.read_packets(now());
        rig.settle(|w| !w.in_flight.is_empty());
        let Rig {
            mut worker,
            monitor,
            parser,
            ..
        } = rig;
        drop(monitor);
        assert!(worker.read_monitor().is_err());
        worker.pass_all_held();
        assert_eq!(worker.intercept.passed.len(), 4);
        drop(worker);
        parser.unwrap().join().unwrap().unwrap();
    }

    /// Invariants 1 and 6: shutdown passes everything and cuts no hole short — the parser
    /// asks for no close (the monitor lets each hole live to its deadline).
    #[test]
    fn shutdown_passes_everything_and_closes_no_hole() {
        let mut rig = rig(true);
        rig.worker.read_packets(now());
        rig.settle(|w| !w.in_flight.is_empty());
        let open = rig.requests();
        rig.answer(open[0].id, true);
        rig.settle(|w| w.intercept.passed.len() == 4);
        assert_eq!(rig.worker.shutdown(), Exit::Terminated);
        assert!(rig.worker.parser_closed);
        assert!(rig.worker.in_flight.is_empty());
        assert!(rig.requests().is_empty(), "no close sent to the monitor");
        rig.parser.take().unwrap().join().unwrap().unwrap();
    }

    /// FreeBSD 14's 8 KiB SEQPACKET send space (uipc_usrreq.c `unpsp_sendspace = PIPSIZ`)
    /// refuses a larger packet with EMSGSIZE. That packet passes on unread and is counted;
    /// it never wedges the link: the packets behind it are read, and the EPRT among them
    /// still gets its hole before it passes.
    #[test]
    fn packet_larger_than_freebsd_14_link_passes_unread_and_blocks_nothing() {
        let small = crate::daemon::link::tests::pair_as_small_as_freebsd_14();
        let mut rig = rig_with_parser_link(true, small);
        let jumbo = super::tests_support::segment(500, false, &[b'x'; 9000]);
        rig.worker.intercept.queue.push_front(jumbo.clone());
        rig.worker.read_packets(now());
        rig.settle(|w| w.intercept.passed.len() == 4 && !w.in_flight.is_empty());
        assert_eq!(rig.worker.passed_unread, 1);
        assert_eq!(
            rig.passed(),
            [0, 1, 2, 4],
            "the jumbo packet (0) passed; EPRT (3) waits"
        );
        let sent = rig.requests();
        assert!(matches!(sent[0].action, FwAction::Open { .. }));
        rig.answer(sent[0].id, true);
        rig.settle(|w| w.intercept.passed.len() == 5);
        assert_eq!(rig.worker.intercept.passed[0].1, jumbo, "passed unchanged");
    }

    #[test]
    fn counted_warnings_are_logged_at_powers_of_ten() {
        let logged: Vec<u64> = (1..=1000).filter(|&n| is_power_of_ten(n)).collect();
        assert_eq!(logged, [1, 10, 100, 1000]);
    }
}
