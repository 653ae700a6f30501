//! The worker: the unprivileged process that moves packets. It receives every intercepted
//! packet, copies its bytes to the sandboxed [`parser`](super::parser), and passes the
//! packet on when the parser says so — or when it has waited [`HOLD_LIMIT`] — so every
//! packet is passed exactly once and unchanged (DESIGN.md invariant 1).
//!
//! Owns the mio event loop (epoll on Linux, kqueue on FreeBSD — one loop, tested here, run
//! there), the packets held ([`HeldPackets`], a pure table with time as a value) and the
//! packets queued for the parser, which get the packets of one turn in one datagram (under
//! load a turn holds a dozen: one send instead of twelve, and one wake-up). Decodes nothing but the parser's list of packets to
//! release: it never looks inside a packet and never sees a firewall action (the parser
//! asks the monitor for holes itself). When the parser dies the worker passes what it held
//! and, until the monitor hands it a new parser's link, passes packets unread. It keeps
//! only what it needs to issue verdicts (CAP_NET_ADMIN on Linux; a divert socket on
//! FreeBSD, where reinjection — `sendto(2)` with an address — rules out Capsicum).
//!
//! Every packet is held for the parser's answer (a few microseconds), so the order of a
//! connection's segments is kept unless one of them waits for a hole; a later segment may
//! then overtake it, which the receiver's TCP reorders as it would any reordering on the
//! path.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, MsgFlags, Shutdown};

use super::link::{self, send_nonblocking, Sent};
use super::logging;
use super::messages::{ToParser, ToWorker, MAX_PACKET_MESSAGE, MAX_PASS_MESSAGE, NEW_PARSER};
use super::signals::{Event as Signal, SignalPipe};
use crate::intercept::Intercept;

/// Longest a packet waits for the parser and its holes. Both normally answer in well under
/// a millisecond (nftables) or a few (ipfw/pfctl); past this the packet goes on regardless.
pub const HOLD_LIMIT: Duration = Duration::from_secs(1);

/// How long a stopping worker waits for the parser to read and release what it holds.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// Packets read per loop turn before the parser and the monitor get a look in.
const BATCH: usize = 256;

/// Packets held at once. Past this the worker stops reading until some are passed, so a
/// flood waits in the kernel's queue (bounded there, fail-open on Linux) rather than in
/// our memory.
pub const MAX_HELD: usize = 1024;

const INTERCEPT: Token = Token(0);
const MONITOR: Token = Token(1);
const PARSER: Token = Token(2);
const SIGNALS: Token = Token(3);

/// The packets held until the parser releases them or their hold limit passes: a pure
/// table, time given as a value, tested without sockets or sleeps.
#[derive(Debug)]
pub struct HeldPackets<H> {
    by_id: HashMap<u64, (H, Instant)>,
    /// (deadline, id): the next to expire first. Ids are unique, so entries are too.
    deadlines: BTreeMap<(Instant, u64), ()>,
}

impl<H> Default for HeldPackets<H> {
    fn default() -> Self {
        HeldPackets {
            by_id: HashMap::new(),
            deadlines: BTreeMap::new(),
        }
    }
}

impl<H> HeldPackets<H> {
    /// Holds `held` as packet `id` from `now` for at most [`HOLD_LIMIT`].
    pub fn hold(&mut self, id: u64, held: H, now: Instant) {
        let deadline = now + HOLD_LIMIT;
        self.by_id.insert(id, (held, deadline));
        self.deadlines.insert((deadline, id), ());
    }

    /// The parser released packet `id`: it goes on (`None`: it went on already).
    pub fn release(&mut self, id: u64) -> Option<H> {
        let (held, deadline) = self.by_id.remove(&id)?;
        self.deadlines.remove(&(deadline, id));
        Some(held)
    }

    /// Packets whose hold limit is over at `now`, earliest first.
    pub fn overdue(&mut self, now: Instant) -> Vec<H> {
        let mut out = Vec::new();
        while let Some((&(deadline, id), ())) = self.deadlines.first_key_value() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some((held, _)) = self.by_id.remove(&id) {
                out.push(held);
            }
        }
        out
    }

    /// Everything held, in no particular order (the parser is gone, or shutdown).
    pub fn drain(&mut self) -> Vec<H> {
        self.deadlines.clear();
        self.by_id.drain().map(|(_, (held, _))| held).collect()
    }

    /// When the next hold limit ends.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first_key_value().map(|(&(at, _), ())| at)
    }

    /// How many are held.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// SIGTERM/SIGINT: everything held passed, exit 0.
    Terminated,
    /// The monitor went away: nothing can be opened any more, exit 1.
    MonitorGone,
}

/// What the worker counts (logged on SIGUSR1/SIGINFO).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Packets passed because their hold limit was over.
    pub passed_late: u64,
    /// Packets too large for the link to the parser: passed on unread.
    pub passed_unread: u64,
    /// Packets passed unread because no parser was running.
    pub passed_without_parser: u64,
    /// Parsers that died and were replaced.
    pub parser_restarts: u64,
}

/// The worker's state.
pub struct Worker<I: Intercept> {
    intercept: I,
    /// From the monitor: a new parser's link when one is (re)started. Nothing else.
    monitor: OwnedFd,
    parser: Option<OwnedFd>,
    signals: SignalPipe,
    held: HeldPackets<I::Held>,
    /// Datagrams the parser's socket would not take yet, in order.
    to_parser: VecDeque<Batch>,
    /// The datagram of packets being filled in this turn (sent at its end), reused.
    batch: Batch,
    next_packet: u64,
    counters: Counters,
    /// `--busy-poll`.
    busy_poll: Duration,
}

/// A socket peer that has gone away.
#[derive(Debug)]
struct Gone;

/// One datagram of packets for the parser ([`ToParser`] records) and their ids, in order.
#[derive(Debug, Default, Clone)]
struct Batch {
    ids: Vec<u64>,
    message: Vec<u8>,
}

impl<I: Intercept> Worker<I> {
    /// A worker around an opened intercept, its link from the monitor, and its first
    /// parser's link (`None`: wait for the monitor to send one). Links are non-blocking.
    pub fn new(
        intercept: I,
        monitor: OwnedFd,
        parser: Option<OwnedFd>,
        signals: SignalPipe,
    ) -> Self {
        Worker {
            intercept,
            monitor,
            parser,
            signals,
            held: HeldPackets::default(),
            to_parser: VecDeque::new(),
            batch: Batch::default(),
            next_packet: 0,
            counters: Counters::default(),
            busy_poll: Duration::ZERO,
        }
    }

    /// With `--busy-poll`: after a turn with packets or answers, polls for up to `limit`
    /// before it sleeps.
    #[must_use]
    pub fn busy_polling(mut self, limit: Duration) -> Self {
        self.busy_poll = limit;
        self
    }

    /// Runs until a terminating signal or the loss of the monitor.
    ///
    /// # Errors
    /// When the event loop itself fails (not for packet trouble, which is logged and
    /// counted).
    pub fn run(mut self) -> anyhow::Result<Exit> {
        let mut poll = Poll::new()?;
        for (fd, token) in [
            (self.intercept.as_raw_fd(), INTERCEPT),
            (self.monitor.as_raw_fd(), MONITOR),
            (self.signals.fd(), SIGNALS),
        ] {
            poll.registry()
                .register(&mut SourceFd(&fd), token, Interest::READABLE)?;
        }
        if let Some(parser) = &self.parser {
            poll.registry().register(
                &mut SourceFd(&parser.as_raw_fd()),
                PARSER,
                Interest::READABLE,
            )?;
        }
        let mut events = Events::with_capacity(16);
        // mio is edge-triggered: a source read only partly must be read again without
        // waiting for a new edge.
        let mut intercept_pending = true;
        // Whether the last turn had packets or answers to handle (`--busy-poll`).
        let mut worked = false;
        loop {
            let timeout = if intercept_pending && self.held.len() < MAX_HELD {
                Some(Duration::ZERO)
            } else if worked && self.busy_poll_ready() {
                // Something became ready while polling: its edge is waiting in `poll`.
                Some(Duration::ZERO)
            } else {
                self.held
                    .next_deadline()
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
            worked = parser_ready || intercept_pending;
            if parser_ready && self.read_parser().is_err() {
                self.parser_gone(poll.registry())?;
            }
            if monitor_ready {
                match self.read_monitor() {
                    Ok(Some(link)) => self.new_parser(poll.registry(), link)?,
                    Ok(None) => {}
                    Err(Gone) => {
                        log::error!("monitor process is gone; exiting");
                        self.pass_all_held();
                        return Ok(Exit::MonitorGone);
                    }
                }
            }
            if intercept_pending {
                intercept_pending = self.read_packets(now);
            }
            if signals_ready {
                for signal in self.signals.drain() {
                    match signal {
                        Signal::Terminate => return Ok(self.stop(Instant::now())),
                        Signal::Status => log::info!("{}", self.status()),
                        // The monitor reopens the log; this process only forwards to it.
                        Signal::Reopen | Signal::Child => {}
                    }
                }
            }
            self.pass_overdue(Instant::now());
            self.flush();
        }
    }

    /// SIGTERM (the monitor has told the parser too): no packet is read any more — those
    /// still in the kernel's queue wait there for the next instance, or are sent again by
    /// TCP — every packet read goes to the parser, whose stream then ends; the parser
    /// reads them all, releases each once its hole is confirmed, and exits. Whatever is
    /// still held after [`STOP_WAIT`] goes on regardless.
    fn stop(&mut self, now: Instant) -> Exit {
        let deadline = now + STOP_WAIT;
        while !self.to_parser.is_empty() && self.parser.is_some() && Instant::now() < deadline {
            self.flush();
            if self.wait_for_parser(PollFlags::POLLIN | PollFlags::POLLOUT)
                && self.read_parser().is_err()
            {
                break;
            }
        }
        if let Some(parser) = &self.parser {
            // The end of the stream: the parser reads every packet up to here.
            let _ = nix::sys::socket::shutdown(parser.as_raw_fd(), Shutdown::Write);
        }
        while !self.held.is_empty() && self.parser.is_some() && Instant::now() < deadline {
            if self.wait_for_parser(PollFlags::POLLIN) && self.read_parser().is_err() {
                break;
            }
        }
        self.pass_all_held();
        Exit::Terminated
    }

    /// `--busy-poll`: polls the intercept and the parser's link for up to the configured
    /// time after a turn with work; whether one of them became ready.
    fn busy_poll_ready(&self) -> bool {
        let Some(parser) = &self.parser else {
            return false;
        };
        if self.busy_poll.is_zero() {
            return false;
        }
        // SAFETY: the descriptor belongs to `self.intercept`, which outlives this borrow.
        let intercept = unsafe { BorrowedFd::borrow_raw(self.intercept.as_raw_fd()) };
        let mut fds = [
            PollFd::new(parser.as_fd(), PollFlags::POLLIN),
            PollFd::new(intercept, PollFlags::POLLIN),
        ];
        // With MAX_HELD held no packet is read, so a waiting one must not end the poll
        // (the loop would spin until the parser releases some): only answers count then.
        let watched = if self.held.len() < MAX_HELD { 2 } else { 1 };
        link::busy_poll(&mut fds[..watched], self.busy_poll)
    }

    /// Waits up to 50 ms for the parser's link to be ready for `flags`.
    fn wait_for_parser(&self, flags: PollFlags) -> bool {
        let Some(parser) = &self.parser else {
            return false;
        };
        let mut fds = [PollFd::new(parser.as_fd(), flags)];
        matches!(poll(&mut fds, PollTimeout::from(50u16)), Ok(1..))
    }

    /// The worker's status line.
    pub fn status(&self) -> String {
        let c = self.counters;
        format!(
            "worker held={} parser={} passed_late={} passed_unread={} \
             passed_without_parser={} parser_restarts={} socket_overflows={} passed_unseen={} \
             log_dropped={}",
            self.held.len(),
            if self.parser.is_some() { "up" } else { "down" },
            c.passed_late,
            c.passed_unread,
            c.passed_without_parser,
            c.parser_restarts,
            self.intercept.overflows(),
            self.intercept.passed_unseen(),
            super::logging::forward_dropped()
        )
    }

    /// Reads up to [`BATCH`] packets (fewer once [`MAX_HELD`] are held), holds each and
    /// sends them to the parser together, in as few datagrams as fit; returns whether more
    /// may be waiting.
    fn read_packets(&mut self, now: Instant) -> bool {
        let more = self.read_into_batch(now);
        self.send_batch();
        more
    }

    fn read_into_batch(&mut self, now: Instant) -> bool {
        for _ in 0..BATCH {
            if self.held.len() >= MAX_HELD {
                return true;
            }
            let id = self.next_packet;
            match self.intercept.recv() {
                Ok(Some(packet)) if self.parser.is_some() => {
                    let packet = ToParser {
                        id,
                        checksum: packet.checksum,
                        bytes: packet.bytes,
                    };
                    let full = 1 + self.batch.message.len() + packet.encoded_len();
                    if !self.batch.ids.is_empty() && full > MAX_PACKET_MESSAGE {
                        // Full: it goes after anything queued, and `flush` sends both.
                        self.to_parser.push_back(std::mem::take(&mut self.batch));
                    }
                    packet.append_to(&mut self.batch.message);
                }
                Ok(Some(_)) => {
                    // No parser (it died; the monitor is starting a new one): nothing would
                    // read the packet, so it goes on at once.
                    self.counters.passed_without_parser += 1;
                    if let Err(e) = self.intercept.pass_current() {
                        log::error!("passing a packet on: {e}");
                    }
                    continue;
                }
                Ok(None) => return false,
                Err(e) => {
                    log::error!("reading intercepted packets: {e}");
                    return false;
                }
            }
            self.next_packet += 1;
            let held = self.intercept.hold_current();
            self.held.hold(id, held, now);
            self.batch.ids.push(id);
        }
        true
    }

    /// Sends the batch now if nothing is queued before it and the parser's socket takes
    /// it; otherwise queues it (in order). The batch's buffers are kept for reuse.
    fn send_batch(&mut self) {
        if self.batch.ids.is_empty() {
            return;
        }
        if self.to_parser.is_empty() {
            if let Some(parser) = &self.parser {
                match send_nonblocking(parser, &self.batch.message) {
                    Sent::Yes => {
                        self.batch.ids.clear();
                        self.batch.message.clear();
                        return;
                    }
                    Sent::TooBig => {
                        let batch = self.batch.clone();
                        self.batch.ids.clear();
                        self.batch.message.clear();
                        self.too_big(batch);
                        self.flush();
                        return;
                    }
                    Sent::Later | Sent::Gone => {}
                }
            }
        }
        self.to_parser.push_back(self.batch.clone());
        self.batch.ids.clear();
        self.batch.message.clear();
    }

    /// Sends queued datagrams to the parser until its socket would block.
    fn flush(&mut self) {
        while let Some(batch) = self.to_parser.front() {
            let Some(parser) = &self.parser else {
                return;
            };
            debug_assert!(batch.message.len() <= MAX_PACKET_MESSAGE);
            match send_nonblocking(parser, &batch.message) {
                Sent::Yes => {
                    self.to_parser.pop_front();
                }
                Sent::TooBig => {
                    if let Some(batch) = self.to_parser.pop_front() {
                        self.too_big(batch);
                    }
                }
                // A lost parser shows as the end of its link, read next turn.
                Sent::Later | Sent::Gone => break,
            }
        }
    }

    /// A datagram the link can never take (its buffer is smaller: FreeBSD 14's 8 KiB
    /// default if sizing failed). Retrying would block every later datagram behind it.
    /// Several packets are sent again one to a datagram, at the front of the queue; a
    /// single packet goes on unread instead, and the count says so.
    fn too_big(&mut self, batch: Batch) {
        if let [id] = batch.ids[..] {
            self.pass_unread(id);
            return;
        }
        let Ok(packets) = ToParser::records(&batch.message) else {
            unreachable!("the worker's own batch decodes");
        };
        let singles: Vec<Batch> = packets
            .map(|packet| {
                let mut message = Vec::with_capacity(1 + packet.encoded_len());
                packet.encode(&mut message);
                Batch {
                    ids: vec![packet.id],
                    message,
                }
            })
            .collect();
        for single in singles.into_iter().rev() {
            self.to_parser.push_front(single);
        }
    }

    /// Passes a packet that the parser will never see, and counts it.
    fn pass_unread(&mut self, packet: u64) {
        let Some(held) = self.held.release(packet) else {
            return;
        };
        self.counters.passed_unread += 1;
        if logging::is_power_of_ten(self.counters.passed_unread) {
            log::warn!(
                "packet too large for the link to the parser passed on unread \
                 (count={}); the FTP stream of its connection has a gap",
                self.counters.passed_unread
            );
        }
        self.pass(held);
    }

    fn pass(&mut self, held: I::Held) {
        if let Err(e) = self.intercept.pass_held(held) {
            log::error!("passing a packet on: {e}");
        }
    }

    /// Reads the parser's passes and lets those packets go.
    fn read_parser(&mut self) -> Result<(), Gone> {
        let Some(parser) = self.parser.as_ref().map(AsRawFd::as_raw_fd) else {
            return Ok(());
        };
        let mut buf = [0u8; MAX_PASS_MESSAGE];
        loop {
            let n = match recv(parser, &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => return Err(Gone),
                Ok(n) => n,
                Err(Errno::EAGAIN) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(_) => return Err(Gone),
            };
            let mut released = Vec::new();
            // A packet already passed (its hold limit) is simply not found.
            let decoded =
                ToWorker::decode_each(&buf[..n], |id| released.extend(self.held.release(id)));
            if let Err(e) = decoded {
                log::error!("the parser sent a {e}");
            }
            if let Err(e) = self.intercept.pass_all(released) {
                log::error!("passing packets on: {e}");
            }
        }
    }

    /// The parser's link ended: it died. What it held goes on (its state is gone), and
    /// packets pass unread until the monitor sends a new parser's link.
    fn parser_gone(&mut self, registry: &mio::Registry) -> anyhow::Result<()> {
        if let Some(parser) = self.parser.take() {
            // Closing the descriptor drops its registration anyway; a failure here changes
            // nothing.
            let _ = registry.deregister(&mut SourceFd(&parser.as_raw_fd()));
        }
        let held = self.held.len();
        self.pass_all_held();
        self.to_parser.clear();
        log::warn!(
            "parser is gone; {held} packets it held passed on, and packets pass unread \
             until the monitor starts a new one"
        );
        Ok(())
    }

    /// The monitor started a new parser: packets go to it from now on.
    fn new_parser(&mut self, registry: &mio::Registry, link: OwnedFd) -> anyhow::Result<()> {
        if self.parser.is_some() {
            // The monitor replaced a parser whose end this worker had not seen yet.
            self.parser_gone(registry)?;
        }
        link::set_nonblocking(&link)?;
        registry.register(&mut SourceFd(&link.as_raw_fd()), PARSER, Interest::READABLE)?;
        self.parser = Some(link);
        self.counters.parser_restarts += 1;
        log::info!("a new parser is reading packets");
        Ok(())
    }

    /// Reads the monitor's link: a new parser's link, or `Gone`.
    fn read_monitor(&mut self) -> Result<Option<OwnedFd>, Gone> {
        let mut newest = None;
        loop {
            match link::recv_with_fd(&self.monitor) {
                Ok(link::Received::Message(bytes, fd)) => match (bytes.as_slice(), fd) {
                    ([NEW_PARSER], Some(fd)) => newest = Some(fd),
                    _ => log::error!("the monitor sent a malformed message"),
                },
                Ok(link::Received::Empty) => return Ok(newest),
                Ok(link::Received::Gone) | Err(_) => return Err(Gone),
            }
        }
    }

    /// Passes every packet whose hold limit is over.
    fn pass_overdue(&mut self, now: Instant) {
        for held in self.held.overdue(now) {
            self.counters.passed_late += 1;
            if logging::is_power_of_ten(self.counters.passed_late) {
                log::error!(
                    "no answer from the parser within {HOLD_LIMIT:?}: packet passed without \
                     waiting (count={})",
                    self.counters.passed_late
                );
            }
            self.pass(held);
        }
    }

    fn pass_all_held(&mut self) {
        for held in self.held.drain() {
            self.pass(held);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The worker's half of invariant 1, with a scripted intercept and the test playing
    //! the parser and the monitor: every packet is passed exactly once and unchanged —
    //! when the parser releases it, when its hold limit passes, when the parser is gone.
    use super::*;
    use crate::daemon::messages::MAX_PACKET_MESSAGE;
    use crate::daemon::test_packets::{conversation, segment};
    use crate::intercept::Packet;
    use ftp6proxy_core::engine::Checksum;
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

    struct Rig {
        worker: Worker<Scripted>,
        /// The test's end of the parser link.
        parser: Option<OwnedFd>,
        /// The test's end of the monitor link.
        monitor: OwnedFd,
    }

    fn rig_with(parser_link: Option<(OwnedFd, OwnedFd)>) -> Rig {
        let (monitor, worker_monitor_end) = link::seqpacket_pair().unwrap();
        link::set_nonblocking(&worker_monitor_end).unwrap();
        let (worker_parser_end, parser) = match parser_link {
            Some((worker_end, parser_end)) => {
                link::set_nonblocking(&worker_end).unwrap();
                (Some(worker_end), Some(parser_end))
            }
            None => (None, None),
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
            parser,
            monitor,
        }
    }

    fn rig() -> Rig {
        rig_with(Some(link::seqpacket_pair().unwrap()))
    }

    impl Rig {
        /// The packets the parser got, as (id, bytes).
        fn parser_got(&self) -> Vec<(u64, Vec<u8>)> {
            self.parser_datagrams().concat()
        }

        /// What the parser received, a list of packets per datagram.
        fn parser_datagrams(&self) -> Vec<Vec<(u64, Vec<u8>)>> {
            let mut out = Vec::new();
            let mut buf = vec![0u8; MAX_PACKET_MESSAGE];
            let parser = self.parser.as_ref().expect("a parser");
            while let Ok(n @ 1..) = recv(parser.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                let packets = ToParser::records(&buf[..n]).unwrap();
                out.push(packets.map(|p| (p.id, p.bytes.to_vec())).collect());
            }
            out
        }

        fn release(&mut self, ids: &[u64]) {
            let parser = self.parser.as_ref().expect("a parser");
            for datagram in ToWorker::encode_all(ids) {
                send(parser.as_raw_fd(), &datagram, MsgFlags::empty()).unwrap();
            }
            self.worker.read_parser().unwrap();
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

    /// Invariant 1: every packet goes to the parser unchanged and is passed exactly once,
    /// when the parser releases it, in the order released (a packet waiting for its hole
    /// is overtaken by those behind it).
    #[test]
    fn packets_pass_when_released_exactly_once_and_unchanged() {
        let mut rig = rig();
        assert!(
            !rig.worker.read_packets(now()),
            "all four read in one batch"
        );
        let got = rig.parser_got();
        let packets = conversation();
        assert_eq!(got.len(), 4);
        for (index, (_, bytes)) in got.iter().enumerate() {
            assert_eq!(
                bytes, &packets[index],
                "packet {index} reached the parser changed"
            );
        }
        let ids: Vec<u64> = got.iter().map(|(id, _)| *id).collect();
        rig.release(&[ids[0], ids[1], ids[3]]);
        assert_eq!(rig.passed(), [0, 1, 3], "packet 2 waits (for its hole)");
        rig.release(&[ids[2], ids[2], 999]);
        assert_eq!(
            rig.passed(),
            [0, 1, 3, 2],
            "a repeated or unknown id passes nothing"
        );
        for (index, bytes) in &rig.worker.intercept.passed {
            assert_eq!(bytes, &packets[*index], "packet {index} changed");
        }
        assert!(rig.worker.held.is_empty());
    }

    /// `--busy-poll`: the worker notices the parser's answer while polling (its next wait
    /// then returns at once), gives up when nothing comes, and polls not at all when off.
    #[test]
    fn busy_polling_sees_an_answer_and_gives_up_on_silence() {
        let mut rig = rig();
        // A quiet intercept (the scripted one's /dev/null is always readable).
        let (quiet, _far_end) = link::seqpacket_pair().unwrap();
        rig.worker.intercept.fd = File::from(quiet);
        rig.worker.busy_poll = Duration::from_millis(2);
        assert!(!rig.worker.read_packets(now()));
        assert!(
            !rig.worker.busy_poll_ready(),
            "nothing answered, nothing arrived"
        );
        let ids: Vec<u64> = rig.parser_got().iter().map(|(id, _)| *id).collect();
        let parser = rig.parser.as_ref().unwrap();
        for datagram in ToWorker::encode_all(&ids) {
            send(parser.as_raw_fd(), &datagram, MsgFlags::empty()).unwrap();
        }
        rig.worker.busy_poll = Duration::ZERO;
        assert!(!rig.worker.busy_poll_ready(), "off: no polling");
        rig.worker.busy_poll = Duration::from_millis(2);
        assert!(rig.worker.busy_poll_ready(), "the answer is seen");
        rig.worker.read_parser().unwrap();
        assert_eq!(rig.passed(), [0, 1, 2, 3]);
        // With MAX_HELD held no packet is read: a waiting one must not end the poll.
        let (waiting, far_end) = link::seqpacket_pair().unwrap();
        send(far_end.as_raw_fd(), b"a packet", MsgFlags::empty()).unwrap();
        rig.worker.intercept.fd = File::from(waiting);
        assert!(rig.worker.busy_poll_ready(), "a waiting packet is seen");
        for id in 0..MAX_HELD as u64 {
            rig.worker.held.hold(1000 + id, (0, Vec::new()), now());
        }
        assert!(
            !rig.worker.busy_poll_ready(),
            "with the table full only answers end the poll"
        );
    }

    /// Invariant 1: a silent parser delays packets by at most HOLD_LIMIT.
    #[test]
    fn silent_parser_delays_packets_at_most_the_hold_limit() {
        let mut rig = rig();
        let start = now();
        rig.worker.read_packets(start);
        rig.worker
            .pass_overdue(start + HOLD_LIMIT - Duration::from_millis(1));
        assert!(rig.passed().is_empty());
        rig.worker.pass_overdue(start + HOLD_LIMIT);
        assert_eq!(rig.passed().len(), 4);
        assert_eq!(rig.worker.counters.passed_late, 4);
    }

    /// Invariant 7 in the shell: a flood waits in the kernel, not in the worker's memory.
    #[test]
    fn held_packets_are_bounded() {
        // A parser link that holds every packet: the test reads none.
        let mut rig = rig();
        let extra: Vec<Vec<u8>> = (0..MAX_HELD + 10)
            .map(|_| conversation()[1].clone())
            .collect();
        rig.worker.intercept.queue.extend(extra);
        let start = now();
        while rig.worker.held.len() < MAX_HELD {
            rig.worker.read_packets(start);
        }
        assert!(rig.worker.read_packets(start), "more is waiting");
        assert_eq!(rig.worker.held.len(), MAX_HELD);
        assert_eq!(rig.worker.intercept.delivered, MAX_HELD);
        rig.worker.pass_overdue(start + HOLD_LIMIT);
        assert!(rig.worker.held.is_empty());
        rig.worker.read_packets(start + HOLD_LIMIT);
        assert_eq!(rig.worker.held.len(), 14);
    }

    /// Invariant 1: when the parser goes away, what it held passes, later packets pass
    /// unread, and a new parser's link from the monitor puts packets through it again.
    #[test]
    fn lost_parser_releases_held_packets_and_a_new_one_takes_over() {
        let mut rig = rig();
        rig.worker.read_packets(now());
        drop(rig.parser.take());
        assert!(rig.worker.read_parser().is_err());
        let poll = Poll::new().unwrap();
        rig.worker.parser_gone(poll.registry()).unwrap();
        assert_eq!(rig.passed().len(), 4);
        rig.worker
            .intercept
            .queue
            .push_back(conversation()[1].clone());
        rig.worker.read_packets(now());
        assert_eq!(rig.passed().len(), 5, "no parser: passed at once");
        assert_eq!(rig.worker.counters.passed_without_parser, 1);
        // The monitor hands over a new parser's link.
        let (worker_end, parser_end) = link::seqpacket_pair().unwrap();
        link::send_with_fd(&rig.monitor, &[NEW_PARSER], &worker_end).unwrap();
        drop(worker_end);
        let link = rig
            .worker
            .read_monitor()
            .unwrap()
            .expect("a new parser link");
        rig.worker.new_parser(poll.registry(), link).unwrap();
        rig.parser = Some(parser_end);
        rig.worker
            .intercept
            .queue
            .push_back(conversation()[3].clone());
        rig.worker.read_packets(now());
        let got = rig.parser_got();
        assert_eq!(got.len(), 1, "the new parser reads the next packet");
        rig.release(&[got[0].0]);
        assert_eq!(rig.passed().len(), 6);
        assert!(rig.worker.status().contains("parser_restarts=1"));
    }

    /// The monitor's link ending is seen (the worker then exits, passing what it held).
    #[test]
    fn lost_monitor_is_seen() {
        let mut rig = rig();
        rig.worker.read_packets(now());
        let Rig {
            mut worker,
            monitor,
            ..
        } = rig;
        drop(monitor);
        assert!(worker.read_monitor().is_err());
        worker.pass_all_held();
        assert_eq!(worker.intercept.passed.len(), 4);
    }

    /// FreeBSD 14's 8 KiB SEQPACKET send space (uipc_usrreq.c `unpsp_sendspace = PIPSIZ`)
    /// refuses a larger packet with EMSGSIZE. That packet passes on unread and is counted;
    /// it never wedges the link: the packets behind it reach the parser.
    #[test]
    fn packet_larger_than_freebsd_14_link_passes_unread_and_blocks_nothing() {
        let small = crate::daemon::link::tests::pair_as_small_as_freebsd_14();
        let mut rig = rig_with(Some(small));
        let jumbo = segment(500, false, &[b'x'; 9000]);
        rig.worker.intercept.queue.push_front(jumbo.clone());
        rig.worker.read_packets(now());
        assert_eq!(rig.worker.counters.passed_unread, 1);
        assert_eq!(rig.passed(), [0], "the jumbo packet passed at once");
        assert_eq!(rig.worker.intercept.passed[0].1, jumbo, "passed unchanged");
        assert_eq!(
            rig.parser_got().len(),
            4,
            "the packets behind it reach the parser"
        );
    }

    /// The packets of one turn reach the parser together, in order, in one datagram while
    /// they fit one and in as few as they fit otherwise.
    #[test]
    fn packets_of_one_turn_go_to_the_parser_together() {
        let mut rig = rig();
        let sent: Vec<Vec<u8>> = rig.worker.intercept.queue.iter().cloned().collect();
        assert!(sent.len() > 1);
        rig.worker.read_packets(now());
        let datagrams = rig.parser_datagrams();
        assert_eq!(datagrams.len(), 1, "one datagram for the turn");
        let ids: Vec<u64> = (0..sent.len() as u64).collect();
        assert_eq!(datagrams[0].iter().map(|p| p.0).collect::<Vec<_>>(), ids);
        assert_eq!(
            datagrams[0].iter().map(|p| p.1.clone()).collect::<Vec<_>>(),
            sent,
            "unchanged"
        );

        // Three packets of 30,000 bytes: two fill a datagram, the third starts the next.
        let mut rig = super::tests::rig();
        rig.worker.intercept.queue.clear();
        let big: Vec<Vec<u8>> = (0..3u8)
            .map(|n| segment(1000 + u32::from(n), false, &[b'a' + n; 30_000]))
            .collect();
        rig.worker.intercept.queue.extend(big.iter().cloned());
        rig.worker.read_packets(now());
        rig.worker.flush();
        let datagrams = rig.parser_datagrams();
        let shape: Vec<usize> = datagrams.iter().map(Vec::len).collect();
        assert_eq!(shape, [2, 1]);
        let got: Vec<Vec<u8>> = datagrams.concat().into_iter().map(|p| p.1).collect();
        assert_eq!(got, big, "in order, unchanged");
        assert_eq!(rig.worker.counters.passed_unread, 0);
        assert!(rig.passed().is_empty(), "all held for the parser");
    }

    /// The held table is a pure state machine: time is a value.
    #[test]
    fn held_table_releases_expires_and_drains() {
        let mut held = HeldPackets::default();
        let t0 = now();
        held.hold(1, "a", t0);
        held.hold(2, "b", t0 + Duration::from_millis(10));
        held.hold(3, "c", t0 + Duration::from_millis(20));
        assert_eq!(held.next_deadline(), Some(t0 + HOLD_LIMIT));
        assert_eq!(held.release(2), Some("b"));
        assert_eq!(held.release(2), None);
        assert!(held
            .overdue(t0 + HOLD_LIMIT - Duration::from_millis(1))
            .is_empty());
        assert_eq!(
            held.overdue(t0 + HOLD_LIMIT + Duration::from_millis(15)),
            ["a"]
        );
        assert_eq!(
            held.next_deadline(),
            Some(t0 + Duration::from_millis(20) + HOLD_LIMIT)
        );
        assert_eq!(held.drain(), ["c"]);
        assert!(held.is_empty() && held.next_deadline().is_none());
    }
}
