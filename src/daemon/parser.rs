//! The parser: the process that reads untrusted packets, sandboxed as tightly as the
//! platform allows (Capsicum capability mode on FreeBSD; on Linux no capabilities, no
//! new privileges and a seccomp allowlist), holding nothing but its links.
//!
//! Owns the [`Engine`], the hole requests it has sent the monitor and not had answered,
//! and the packets waiting for those answers. Its links (OpenSSH's shape: the sandboxed
//! child talks to the privileged monitor directly):
//! - inline mode ([`run`]): from the worker it gets each packet's bytes, and tells it which
//!   packets may go on — a packet goes on once it is read and every hole it announced is
//!   confirmed;
//! - copy mode ([`run_copies`]): no worker; it reads the copies itself from a read-only
//!   [`CopySource`] (the kernel passed the packets on already, so nothing waits for it);
//! - to the monitor it sends hole requests (for packets, and for timers) and gets the
//!   answers, and the monitor's orders (status, shutdown).
//!
//! It opens nothing, signals nobody and touches no firewall; the monitor re-checks every
//! request. The byte formats are `messages`'. Its log lines go to the monitor (`logging`).

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use ftp6proxy_core::engine::{Engine, Event, Level};
use ftp6proxy_core::FwAction;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, send, MsgFlags};

use super::link;
use super::messages::{
    FromMonitor, Request, ToMonitor, ToParser, ToWorker, MAX_FROM_MONITOR, MAX_PACKET_MESSAGE,
};
use crate::intercept::CopySource;

/// How long a shutdown waits for the answers to hole requests in flight.
const FINISH_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Copies read per turn before the monitor's answers get a look in (copy mode).
const COPY_BATCH: usize = 256;

/// The parser's sockets.
#[derive(Debug)]
pub struct Links {
    /// Packets in, passes out.
    pub worker: OwnedFd,
    /// Requests out, answers and orders in.
    pub monitor: OwnedFd,
}

/// A request the monitor has not answered yet.
#[derive(Debug, Clone, Copy)]
struct Pending {
    action: FwAction,
    /// The packet that waits for it, if one does.
    packet: Option<u64>,
    /// When it was sent (the packet that caused it had just been read).
    sent: Instant,
}

/// How long holes took to open: from reading the announcing packet to the monitor's
/// answer that the firewall has the hole (the last [`LATENCY_SAMPLES`] opens), for the
/// status line and `tools/bench`.
#[derive(Debug, Default)]
struct HoleLatency {
    /// Microseconds, oldest first.
    samples: std::collections::VecDeque<u32>,
}

/// How many hole latencies the status line's percentiles are taken over.
const LATENCY_SAMPLES: usize = 1024;

impl HoleLatency {
    fn record(&mut self, took: std::time::Duration) {
        if self.samples.len() == LATENCY_SAMPLES {
            self.samples.pop_front();
        }
        self.samples
            .push_back(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
    }

    /// `hole_latency_us_p50=A hole_latency_us_p99=B` (nearest rank), or nothing before
    /// the first hole.
    fn describe(&self) -> String {
        if self.samples.is_empty() {
            return String::new();
        }
        let mut sorted: Vec<u32> = self.samples.iter().copied().collect();
        sorted.sort_unstable();
        let rank = |p: usize| sorted[(sorted.len() * p).div_ceil(100).max(1) - 1];
        format!(
            " hole_latency_us_p50={} hole_latency_us_p99={}",
            rank(50),
            rank(99)
        )
    }
}

/// Why [`run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The monitor ordered a shutdown; the hand-over is written.
    Shutdown,
    /// The worker or the monitor went away (the monitor starts a new parser if it lives).
    PeerGone,
}

struct Parser {
    engine: Engine,
    /// Requests out, answers and orders in.
    monitor: OwnedFd,
    /// Packets in, passes out (inline mode); `None` in copy mode.
    worker: Option<OwnedFd>,
    pending: HashMap<u32, Pending>,
    /// Per packet still held: how many of its requests are unanswered.
    waiting: HashMap<u64, usize>,
    /// Packets ready to go on, sent to the worker at the end of each turn.
    passes: Vec<u64>,
    next_request: u32,
    latency: HoleLatency,
    /// The monitor ordered a stop. Kept here, not returned, because any of the readers of
    /// the monitor's link may be the one that sees the order: one that is only waiting for
    /// answers must not lose it (a lost order left the parser waiting for it until the
    /// monitor killed it, with no hand-over and the control channel stalled).
    stop_ordered: bool,
}

/// The poll timeout that wakes the loop at the engine's next timer (`at`), or never.
/// Rounded up so the timer is never early; an early wake-up only costs a turn.
fn until(at: Option<Instant>) -> PollTimeout {
    at.map_or(PollTimeout::NONE, |at| {
        #[allow(clippy::disallowed_methods)]
        let left = at.saturating_duration_since(Instant::now());
        let ms = left.as_millis().saturating_add(1).min(u128::from(u16::MAX));
        PollTimeout::from(u16::try_from(ms).unwrap_or(u16::MAX))
    })
}

/// Sends one whole message on a blocking link, retrying on EINTR. Both peers always read,
/// so this waits at most for them to catch up.
fn tell(link: &OwnedFd, bytes: &[u8]) -> nix::Result<()> {
    loop {
        match send(link.as_raw_fd(), bytes, MsgFlags::empty()) {
            Err(Errno::EINTR) => {}
            other => return other.map(drop),
        }
    }
}

/// Writes one engine event at its level.
pub fn log_event(event: &Event) {
    match event.level() {
        Level::Error => log::error!("{event}"),
        Level::Warn => log::warn!("{event}"),
        Level::Info => log::info!("{event}"),
        Level::Debug => log::debug!("{event}"),
    }
}

impl Parser {
    fn new(engine: Engine, monitor: OwnedFd, worker: Option<OwnedFd>) -> Self {
        Self {
            engine,
            monitor,
            worker,
            pending: HashMap::new(),
            waiting: HashMap::new(),
            passes: Vec::new(),
            next_request: 0,
            latency: HoleLatency::default(),
            stop_ordered: false,
        }
    }

    /// Sends `action` to the monitor; `packet` (if any) waits for the answer.
    fn submit(&mut self, action: FwAction, packet: Option<u64>) -> nix::Result<()> {
        let id = self.next_request;
        self.next_request = self.next_request.wrapping_add(1);
        #[allow(clippy::disallowed_methods)]
        let sent = Instant::now();
        self.pending.insert(
            id,
            Pending {
                action,
                packet,
                sent,
            },
        );
        if let Some(packet) = packet {
            *self.waiting.entry(packet).or_default() += 1;
        }
        tell(
            &self.monitor,
            &ToMonitor::Request(Request { id, action }).encode(),
        )
    }

    /// One packet from the worker: read it, request its holes, and release it at once if
    /// it needs none.
    fn read_packet(&mut self, now: Instant, packet: ToParser<'_>) -> nix::Result<()> {
        let outcome = self
            .engine
            .on_packet_with_checksum(now, packet.bytes, packet.checksum);
        for action in outcome.actions {
            let waits = action.needs_confirmation().then_some(packet.id);
            self.submit(action, waits)?;
        }
        if !self.waiting.contains_key(&packet.id) {
            self.passes.push(packet.id);
        }
        Ok(())
    }

    /// The monitor's answer to request `id`.
    fn answer(&mut self, id: u32, ok: bool) {
        let Some(pending) = self.pending.remove(&id) else {
            log::error!("monitor answered request {id}, which was never asked");
            return;
        };
        if ok {
            if matches!(pending.action, FwAction::Open { .. }) {
                self.latency.record(pending.sent.elapsed());
            }
            self.engine.action_done(pending.action.handle());
        } else {
            self.engine.action_failed(pending.action.handle());
        }
        let Some(packet) = pending.packet else {
            return;
        };
        if let Some(left) = self.waiting.get_mut(&packet) {
            *left -= 1;
            if *left == 0 {
                self.waiting.remove(&packet);
                self.passes.push(packet);
            }
        }
    }

    /// Tells the worker which packets may go on (copy mode: none ever waits).
    fn flush_passes(&mut self) -> nix::Result<()> {
        let Some(worker) = &self.worker else {
            self.passes.clear();
            return Ok(());
        };
        if self.passes.is_empty() {
            return Ok(());
        }
        for datagram in ToWorker::encode_all(&self.passes) {
            tell(worker, &datagram)?;
        }
        self.passes.clear();
        Ok(())
    }

    /// The worker's stream ended: waits (at most [`FINISH_WAIT`]) for the answers to the
    /// requests in flight, releasing their packets to a worker that is stopping (a dead
    /// one takes nothing: those passes are dropped).
    fn finish_pending(&mut self, buf: &mut [u8]) -> nix::Result<()> {
        #[allow(clippy::disallowed_methods)]
        let deadline = Instant::now() + FINISH_WAIT;
        loop {
            if self.flush_passes().is_err() {
                self.passes.clear();
            }
            #[allow(clippy::disallowed_methods)]
            let left = deadline.saturating_duration_since(Instant::now());
            if self.pending.is_empty() || left.is_zero() {
                return Ok(());
            }
            let mut fds = [PollFd::new(self.monitor.as_fd(), PollFlags::POLLIN)];
            let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e),
            }
            if !self.read_monitor(buf, &engine_status)? {
                return Ok(());
            }
        }
    }

    /// The worker's stream ended: either the monitor ordered a stop (its order may still
    /// be on its way: the worker got SIGTERM first), or the worker died and the monitor is
    /// about to replace this parser too. Returns whether the order came.
    fn await_stop(&mut self, buf: &mut [u8]) -> nix::Result<bool> {
        while !self.stop_ordered {
            let mut fds = [PollFd::new(self.monitor.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e),
            }
            if !self.read_monitor(buf, &engine_status)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Reads every message the monitor has sent: an answer releases the packets waiting
    /// for it, a used hole frees its slot, a status request logs `status`, a stop order is
    /// recorded in `stop_ordered`. Returns whether the monitor is still there.
    fn read_monitor(
        &mut self,
        buf: &mut [u8],
        status: &dyn Fn(&Engine) -> String,
    ) -> nix::Result<bool> {
        loop {
            let n = match read(&self.monitor, buf)? {
                Read::Message(n) => n,
                Read::Empty => return Ok(true),
                Read::Gone => return Ok(false),
            };
            match FromMonitor::decode(&buf[..n]) {
                Ok(FromMonitor::Response { id, ok }) => self.answer(id, ok),
                // A request for that slot still on its way (a re-arm) puts the hole back:
                // the monitor takes it as an open, so the engine keeps the slot.
                Ok(FromMonitor::Used { slot, spec }) => {
                    if !self.pending.values().any(|p| p.action.slot() == slot) {
                        self.engine.hole_used(slot, spec);
                    }
                }
                Ok(FromMonitor::Status) => log::info!(
                    "{}{} log_dropped={}",
                    status(&self.engine),
                    self.latency.describe(),
                    super::logging::forward_dropped()
                ),
                Ok(FromMonitor::Shutdown) => self.stop_ordered = true,
                Err(e) => log::error!("the monitor sent a {e}"),
            }
        }
    }

    /// The end of a stop: every packet read and its holes answered, the connections are
    /// handed over and the monitor told. No hole is closed here: the monitor lets each
    /// live to its deadline (see monitor::clean_up), and the next instance adopts them.
    fn finish(&mut self, handover: Option<std::fs::File>) -> nix::Result<Exit> {
        log::info!("terminating with {} holes open", self.engine.open_holes());
        self.drain_events();
        if let Some(mut file) = handover {
            hand_over(&self.engine, &mut file);
        }
        tell(&self.monitor, &ToMonitor::Closed.encode())?;
        Ok(Exit::Shutdown)
    }

    fn drain_events(&mut self) {
        while let Some(event) = self.engine.poll_event() {
            log_event(&event);
        }
    }
}

/// The inline parser's status line: the engine's.
fn engine_status(engine: &Engine) -> String {
    engine.status().to_string()
}

/// What one read of a link found.
enum Read {
    /// A message of `n` bytes.
    Message(usize),
    /// Nothing waiting.
    Empty,
    /// The peer closed the link.
    Gone,
}

fn read(link: &OwnedFd, buf: &mut [u8]) -> nix::Result<Read> {
    loop {
        return match recv(link.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => Ok(Read::Gone),
            Ok(n) => Ok(Read::Message(n)),
            Err(Errno::EAGAIN) => Ok(Read::Empty),
            Err(Errno::EINTR) => continue,
            Err(Errno::ECONNRESET) => Ok(Read::Gone),
            Err(e) => Err(e),
        };
    }
}

/// Runs the parser until the monitor orders a shutdown or a peer goes away. At a
/// shutdown the engine's connections are written to `handover` for the next instance.
///
/// # Errors
/// When a link fails other than by its peer closing it.
pub fn run(
    engine: Engine,
    links: Links,
    mut handover: Option<std::fs::File>,
    busy_poll: Duration,
) -> nix::Result<Exit> {
    let Links { worker, monitor } = links;
    let mut parser = Parser::new(engine, monitor, Some(worker));
    let mut packet_buf = vec![0u8; MAX_PACKET_MESSAGE];
    let mut monitor_buf = [0u8; MAX_FROM_MONITOR + 1];
    // The worker ended its stream (it stops, or died): no packet comes any more.
    let mut worker_done = false;
    let mut worked = false;
    loop {
        if worker_done {
            // Every packet is read and every hole answered (or waited for in vain).
            parser.finish_pending(&mut monitor_buf)?;
            // A stop hands over once the worker's stream has ended.
            if !parser.await_stop(&mut monitor_buf)? {
                return Ok(Exit::PeerGone);
            }
            return parser.finish(handover.take());
        }
        let timeout = until(parser.engine.poll_timeout());
        let Some(worker) = &parser.worker else {
            unreachable!("inline mode has a worker link");
        };
        let mut fds = [
            PollFd::new(worker.as_fd(), PollFlags::POLLIN),
            PollFd::new(parser.monitor.as_fd(), PollFlags::POLLIN),
        ];
        // `--busy-poll`: after a turn that read packets, the next one may be microseconds
        // away (the reply to the command just passed).
        let timeout = if worked && link::busy_poll(&mut fds, busy_poll) {
            PollTimeout::ZERO
        } else {
            timeout
        };
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
        // Only a link poll named is read (readable, or hung up: the read says which): a
        // read that finds nothing is a system call per packet for nothing (measured: a
        // fifth of this loop's calls went to the monitor's link, which is quiet while no
        // hole is asked for).
        let named = |fd: &PollFd| fd.revents().is_some_and(|events| !events.is_empty());
        let (worker_named, monitor_named) = (named(&fds[0]), named(&fds[1]));
        worked = worker_named;
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        // Answers first: they release packets already waiting. A stop order does not end
        // the loop: the packets the worker read before it stopped are still coming, and
        // each is read, so none goes on unread and the hand-over includes them.
        if monitor_named && !parser.read_monitor(&mut monitor_buf, &engine_status)? {
            return Ok(Exit::PeerGone);
        }
        while let Some(worker) = parser.worker.as_ref().filter(|_| worker_named) {
            let n = match read(worker, &mut packet_buf)? {
                Read::Message(n) => n,
                Read::Empty => break,
                Read::Gone => {
                    worker_done = true;
                    break;
                }
            };
            match ToParser::records(&packet_buf[..n]) {
                Ok(packets) => {
                    for packet in packets {
                        parser.read_packet(now, packet)?;
                    }
                }
                Err(e) => log::error!("the worker sent a {e}"),
            }
        }
        if parser.engine.poll_timeout().is_some_and(|at| at <= now) {
            for action in parser.engine.tick(now) {
                parser.submit(action, None)?;
            }
        }
        // A worker that died cannot take passes any more; one that stops still can.
        if let Err(e) = parser.flush_passes() {
            if !worker_done {
                return Err(e);
            }
            parser.passes.clear();
        }
        parser.drain_events();
    }
}

/// What the copy loop counts besides the engine (on the status line).
#[derive(Debug, Default)]
struct CopyCounters {
    /// Copies read.
    copies: u64,
    /// Read errors of the copy source (other than "nothing waiting").
    read_errors: u64,
    /// The source's lost count at the last look (a warning each time it passes 1, 10,
    /// 100, ...).
    lost_seen: u64,
}

/// Reads up to [`COPY_BATCH`] copies and gives each to the engine at once, sending the
/// monitor each hole request the copy causes before the next copy is read: the packet has
/// gone on already, so the hole must follow it as fast as it can (DESIGN.md invariant 2,
/// copy modes). Returns whether more may be waiting.
fn read_copies(
    parser: &mut Parser,
    copies: &mut dyn CopySource,
    counters: &mut CopyCounters,
) -> nix::Result<bool> {
    for _ in 0..COPY_BATCH {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let outcome = match copies.recv() {
            Ok(Some(copy)) => parser
                .engine
                .on_packet_with_checksum(now, copy.bytes, copy.checksum),
            Ok(None) => return Ok(false),
            Err(e) => {
                counters.read_errors += 1;
                if super::logging::is_power_of_ten(counters.read_errors) {
                    log::error!(
                        "reading copies: {e} (count={}); the engine recovers from the gap",
                        counters.read_errors
                    );
                }
                return Ok(false);
            }
        };
        counters.copies += 1;
        for action in outcome.actions {
            parser.submit(action, None)?;
        }
    }
    Ok(true)
}

/// The copy-mode parser's status line: the engine's, and what the copy source counts.
fn copy_status(engine: &Engine, copies: &dyn CopySource, counters: &CopyCounters) -> String {
    format!(
        "{} copies={} copies_lost={} copy_read_errors={}",
        engine.status(),
        counters.copies,
        copies.lost(),
        counters.read_errors
    )
}

/// Copy mode: runs the parser on a read-only copy source until the monitor orders a
/// shutdown or goes away. There is no worker and no packet to release: each copy goes to
/// the engine the moment it is read, its hole requests to the monitor right after, and the
/// answers only tell the engine whether the holes are open. At a shutdown the copies
/// already waiting are read, the answers in flight awaited (at most [`FINISH_WAIT`]) and
/// the engine's connections written to `handover`.
///
/// # Errors
/// When the monitor's link fails other than by the monitor closing it.
pub fn run_copies(
    engine: Engine,
    monitor: OwnedFd,
    copies: &mut dyn CopySource,
    mut handover: Option<std::fs::File>,
    busy_poll: Duration,
) -> nix::Result<Exit> {
    let mut parser = Parser::new(engine, monitor, None);
    let mut worked = false;
    let mut monitor_buf = [0u8; MAX_FROM_MONITOR + 1];
    let mut counters = CopyCounters::default();
    let mut more = true;
    loop {
        let timeout = if more {
            PollTimeout::ZERO
        } else {
            until(parser.engine.poll_timeout())
        };
        let monitor_named = {
            // SAFETY: the copy source outlives this poll call.
            let source = unsafe { std::os::fd::BorrowedFd::borrow_raw(copies.as_raw_fd()) };
            let mut fds = [
                PollFd::new(source, PollFlags::POLLIN),
                PollFd::new(parser.monitor.as_fd(), PollFlags::POLLIN),
            ];
            let timeout = if !more && worked && link::busy_poll(&mut fds, busy_poll) {
                PollTimeout::ZERO
            } else {
                timeout
            };
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e),
            }
            // As inline: the monitor's link is read only when poll named it.
            fds[1].revents().is_some_and(|events| !events.is_empty())
        };
        // Copies first: the engine's reaction to a copy is the first thing done with it.
        let copies_before = counters.copies;
        more = read_copies(&mut parser, copies, &mut counters)?;
        worked = counters.copies > copies_before;
        let status = |engine: &Engine| copy_status(engine, copies, &counters);
        if monitor_named && !parser.read_monitor(&mut monitor_buf, &status)? {
            return Ok(Exit::PeerGone);
        }
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        if parser.engine.poll_timeout().is_some_and(|at| at <= now) {
            for action in parser.engine.tick(now) {
                parser.submit(action, None)?;
            }
        }
        let lost = copies.lost();
        if crate::log_limit::passed_power_of_ten(counters.lost_seen, lost) {
            log::warn!(
                "{lost} copies lost so far (the copy source's socket buffer overflowed, or its \
                 sequence numbers jumped); the engine recovers from the gaps, but holes \
                 announced in them are missed"
            );
        }
        counters.lost_seen = lost;
        if parser.stop_ordered {
            // The copies made before the order: read them, so the hand-over includes them.
            while read_copies(&mut parser, copies, &mut counters)? {}
            parser.finish_pending(&mut monitor_buf)?;
            return parser.finish(handover.take());
        }
        parser.drain_events();
    }
}

/// Writes the connections for the next instance into the hand-over file the monitor opened
/// before the sandbox was entered (a write on an inherited descriptor is all it takes).
fn hand_over(engine: &Engine, file: &mut std::fs::File) {
    use std::io::Write;
    let state = engine.export_state();
    match file.write_all(&state) {
        Ok(()) => log::info!(
            "handed over {} connections to the next instance ({} bytes)",
            engine.connections(),
            state.len()
        ),
        Err(e) => log::error!("writing the hand-over file: {e}"),
    }
}

#[cfg(test)]
mod tests {
    //! The parser between a scripted worker and a scripted monitor (the test plays both).
    use super::*;
    use crate::daemon::messages::MAX_TO_MONITOR;
    use crate::daemon::test_packets::conversation;
    use ftp6proxy_core::engine::Checksum;
    use ftp6proxy_core::Config;

    struct Ends {
        worker: OwnedFd,
        monitor: OwnedFd,
    }

    fn start(
        handover: Option<std::fs::File>,
    ) -> (Ends, std::thread::JoinHandle<nix::Result<Exit>>) {
        start_busy_polling(handover, Duration::ZERO)
    }

    fn start_busy_polling(
        handover: Option<std::fs::File>,
        busy_poll: Duration,
    ) -> (Ends, std::thread::JoinHandle<nix::Result<Exit>>) {
        let (worker, parser_worker) = crate::daemon::link::seqpacket_pair().unwrap();
        let (monitor, parser_monitor) = crate::daemon::link::seqpacket_pair().unwrap();
        let links = Links {
            worker: parser_worker,
            monitor: parser_monitor,
        };
        let thread = std::thread::spawn(move || {
            run(Engine::new(Config::default()), links, handover, busy_poll)
        });
        (Ends { worker, monitor }, thread)
    }

    fn send_packet(ends: &Ends, id: u64, bytes: &[u8]) {
        let mut out = Vec::new();
        ToParser {
            id,
            checksum: Checksum::Verify,
            bytes,
        }
        .encode(&mut out);
        send(ends.worker.as_raw_fd(), &out, MsgFlags::empty()).unwrap();
    }

    /// Blocks for the next pass datagram and returns its ids.
    fn passes(ends: &Ends) -> Vec<u64> {
        let mut buf = [0u8; crate::daemon::messages::MAX_PASS_MESSAGE];
        let n = recv(ends.worker.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
        let mut ids = Vec::new();
        ToWorker::decode_each(&buf[..n], |id| ids.push(id)).unwrap();
        ids
    }

    fn next_request(ends: &Ends) -> ToMonitor {
        let mut buf = [0u8; MAX_TO_MONITOR];
        let n = recv(ends.monitor.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
        ToMonitor::decode(&buf[..n]).unwrap()
    }

    /// The next message to the monitor, which must be a hole request.
    fn next_hole_request(ends: &Ends) -> Request {
        match next_request(ends) {
            ToMonitor::Request(request) => request,
            other => panic!("a request, not {other:?}"),
        }
    }

    /// The monitor confirms request `id`.
    fn confirm(ends: &Ends, id: u32) {
        order(ends, FromMonitor::Response { id, ok: true });
    }

    /// The worker stops: its stream to the parser ends.
    fn end_worker_stream(ends: &Ends) {
        nix::sys::socket::shutdown(ends.worker.as_raw_fd(), nix::sys::socket::Shutdown::Write)
            .unwrap();
    }

    fn order(ends: &Ends, message: FromMonitor) {
        send(
            ends.monitor.as_raw_fd(),
            &message.encode(),
            MsgFlags::empty(),
        )
        .unwrap();
    }

    /// Invariant 2 in the parser: packets without announcements are released at once; the
    /// EPRT's packet only after the monitor confirmed its hole (refused holes release it
    /// too: invariant 1). At shutdown no hole is closed and the hand-over is written.
    #[test]
    fn announcing_packet_is_released_only_after_its_answer() {
        announcing_packet_waits_for_its_answer(Duration::ZERO, "sleeping");
    }

    /// Packets that come in one datagram are each read, in order: those that announce
    /// nothing are passed together, the EPRT once its hole is confirmed.
    #[test]
    fn packets_sent_together_are_each_read() {
        let (ends, thread) = start(None);
        let packets = conversation();
        let mut datagram = Vec::new();
        for (id, bytes) in packets.iter().enumerate().take(4) {
            ToParser {
                id: id as u64,
                checksum: Checksum::Verify,
                bytes,
            }
            .append_to(&mut datagram);
        }
        send(ends.worker.as_raw_fd(), &datagram, MsgFlags::empty()).unwrap();
        let request = next_hole_request(&ends);
        assert!(matches!(request.action, FwAction::Open { .. }));
        assert_eq!(passes(&ends), [0, 1, 3], "all but the EPRT, in one pass");
        confirm(&ends, request.id);
        assert_eq!(passes(&ends), [2], "the EPRT, once its hole is confirmed");
        end_worker_stream(&ends);
        drop(ends);
        let _ = thread.join().unwrap();
    }

    /// The same with `--busy-poll`: polling changes when the parser looks, not what it does.
    #[test]
    fn announcing_packet_is_released_only_after_its_answer_when_busy_polling() {
        announcing_packet_waits_for_its_answer(Duration::from_micros(300), "polling");
    }

    fn announcing_packet_waits_for_its_answer(busy_poll: Duration, name: &str) {
        let path =
            std::env::temp_dir().join(format!("f6p-parser-{name}-{}.state", std::process::id()));
        let handover = crate::daemon::handover::create(&path).unwrap();
        let (ends, thread) = start_busy_polling(Some(handover), busy_poll);
        let packets = conversation();
        for (id, bytes) in packets.iter().enumerate().take(2) {
            send_packet(&ends, id as u64, bytes);
            assert_eq!(passes(&ends), [id as u64]);
        }
        send_packet(&ends, 2, &packets[2]);
        let request = next_hole_request(&ends);
        assert!(matches!(request.action, FwAction::Open { .. }));
        send_packet(&ends, 3, &packets[3]);
        assert_eq!(passes(&ends), [3], "the NOOP behind it goes on");
        confirm(&ends, request.id);
        assert_eq!(passes(&ends), [2], "the EPRT, once its hole is confirmed");
        order(&ends, FromMonitor::Shutdown);
        // The worker stops: its stream ends; the parser then hands over and says so.
        end_worker_stream(&ends);
        assert_eq!(
            next_request(&ends),
            ToMonitor::Closed,
            "no close at shutdown: the monitor lets the hole live to its deadline"
        );
        assert_eq!(thread.join().unwrap(), Ok(Exit::Shutdown));
        let state = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let mut next = Engine::new(Config::default());
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        assert_eq!(
            next.import_state(now, &state),
            Ok(1),
            "the connection handed over"
        );
    }

    /// The stop order may reach the parser after the worker's stream has ended, while the
    /// parser waits for the answer to a hole request (the monitor flushes its order after
    /// signalling the worker). It must be kept: the parser then hands over and says
    /// `Closed` at once, instead of waiting for an order it has already read until the
    /// monitor kills it (seen in CI: a 3 s stall of every control connection, no hand-over,
    /// and the hole announced just before the stop expired before it was used).
    #[test]
    fn stop_order_read_while_waiting_for_an_answer_is_kept() {
        let (ends, thread) = start(None);
        let timeout = nix::sys::time::TimeVal::new(5, 0);
        nix::sys::socket::setsockopt(
            &ends.monitor,
            nix::sys::socket::sockopt::ReceiveTimeout,
            &timeout,
        )
        .unwrap();
        let packets = conversation();
        for (id, bytes) in packets.iter().enumerate().take(2) {
            send_packet(&ends, id as u64, bytes);
            assert_eq!(passes(&ends), [id as u64]);
        }
        send_packet(&ends, 2, &packets[2]);
        end_worker_stream(&ends);
        let request = next_hole_request(&ends);
        // The parser now waits for the answer; the order comes first.
        order(&ends, FromMonitor::Shutdown);
        std::thread::sleep(std::time::Duration::from_millis(50));
        confirm(&ends, request.id);
        assert_eq!(passes(&ends), [2], "the EPRT, once its hole is confirmed");
        assert_eq!(next_request(&ends), ToMonitor::Closed, "the order was kept");
        assert_eq!(thread.join().unwrap(), Ok(Exit::Shutdown));
    }

    #[test]
    fn refused_hole_still_releases_its_packet() {
        let (ends, thread) = start(None);
        let packets = conversation();
        for (id, bytes) in packets.iter().enumerate().take(3) {
            send_packet(&ends, id as u64, bytes);
        }
        let mut released = passes(&ends);
        if released.len() < 2 {
            released.extend(passes(&ends));
        }
        assert_eq!(released, [0, 1]);
        let request = next_hole_request(&ends);
        order(
            &ends,
            FromMonitor::Response {
                id: request.id,
                ok: false,
            },
        );
        assert_eq!(passes(&ends), [2]);
        drop(ends);
        assert_eq!(thread.join().unwrap(), Ok(Exit::PeerGone));
    }

    /// A copy source the test feeds: each datagram sent on the test's end is one copy;
    /// `lost` is what the source reports as lost.
    struct Fed {
        sock: std::os::unix::net::UnixDatagram,
        buf: Vec<u8>,
        lost: u64,
    }

    /// The copy loop in a thread, fed by a datagram socket that reports `lost` copies:
    /// returns the kernel's end (send copies), the monitor's end, and the thread.
    fn start_copies(
        handover: Option<std::fs::File>,
        lost: u64,
    ) -> (
        std::os::unix::net::UnixDatagram,
        OwnedFd,
        std::thread::JoinHandle<nix::Result<Exit>>,
    ) {
        let (kernel, ours) = std::os::unix::net::UnixDatagram::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let (monitor, parser_monitor) = crate::daemon::link::seqpacket_pair().unwrap();
        let thread = std::thread::spawn(move || {
            let mut fed = Fed {
                sock: ours,
                buf: vec![0; 65_536],
                lost,
            };
            run_copies(
                Engine::new(Config::default()),
                parser_monitor,
                &mut fed,
                handover,
                Duration::ZERO,
            )
        });
        (kernel, monitor, thread)
    }

    impl AsRawFd for Fed {
        fn as_raw_fd(&self) -> std::os::fd::RawFd {
            self.sock.as_raw_fd()
        }
    }

    impl CopySource for Fed {
        fn recv(&mut self) -> std::io::Result<Option<crate::intercept::PacketCopy<'_>>> {
            match self.sock.recv(&mut self.buf) {
                Ok(n) => Ok(Some(crate::intercept::PacketCopy {
                    bytes: &self.buf[..n],
                    checksum: Checksum::Verify,
                    meta: crate::intercept::CopyMeta::default(),
                })),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
                Err(e) => Err(e),
            }
        }

        fn lost(&self) -> u64 {
            self.lost
        }
    }

    /// Copy mode, with the test as the kernel (copies) and the monitor: every copy is read
    /// at once (nothing is held, no answer awaited before the next one), an announcement's
    /// hole is requested the moment its copy is read, the status line carries the copy
    /// counts, and a shutdown hands the connection over.
    #[test]
    fn copies_are_read_at_once_and_their_holes_requested() {
        let path = std::env::temp_dir().join(format!("f6p-copies-{}.state", std::process::id()));
        let handover = crate::daemon::handover::create(&path).unwrap();
        let (kernel, monitor, thread) = start_copies(Some(handover), 3);
        let ends = Ends {
            worker: kernel.try_clone().map(OwnedFd::from).unwrap(),
            monitor,
        };
        // The whole conversation, the EPRT among it, before the monitor answers anything.
        for packet in conversation() {
            kernel.send(&packet).unwrap();
        }
        let request = next_hole_request(&ends);
        assert!(
            matches!(request.action, FwAction::Open { .. }),
            "{request:?}"
        );
        confirm(&ends, request.id);
        order(&ends, FromMonitor::Shutdown);
        assert_eq!(next_request(&ends), ToMonitor::Closed);
        assert_eq!(thread.join().unwrap(), Ok(Exit::Shutdown));
        let state = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let mut next = Engine::new(Config::default());
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        assert_eq!(next.import_state(now, &state), Ok(1), "handed over");
    }

    #[test]
    fn copy_status_line_names_what_the_source_counts() {
        let (_kernel, ours) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let fed = Fed {
            sock: ours,
            buf: Vec::new(),
            lost: 7,
        };
        let counters = CopyCounters {
            copies: 12,
            read_errors: 1,
            lost_seen: 0,
        };
        let line = copy_status(&Engine::new(Config::default()), &fed, &counters);
        assert!(line.starts_with("status connections="), "{line}");
        assert!(
            line.ends_with(" copies=12 copies_lost=7 copy_read_errors=1"),
            "{line}"
        );
    }

    /// The monitor going away ends the copy loop (the monitor, if alive, starts another).
    #[test]
    fn copy_loop_ends_when_the_monitor_goes() {
        let (_kernel, monitor, thread) = start_copies(None, 0);
        drop(monitor);
        assert_eq!(thread.join().unwrap(), Ok(Exit::PeerGone));
    }

    /// The status line's hole latency: nearest-rank percentiles over the last opens.
    #[test]
    fn hole_latency_percentiles() {
        let mut latency = HoleLatency::default();
        assert_eq!(latency.describe(), "", "nothing before the first hole");
        for us in 1..=100u64 {
            latency.record(std::time::Duration::from_micros(us));
        }
        assert_eq!(
            latency.describe(),
            " hole_latency_us_p50=50 hole_latency_us_p99=99"
        );
        for _ in 0..LATENCY_SAMPLES {
            latency.record(std::time::Duration::from_micros(7));
        }
        assert_eq!(
            latency.describe(),
            " hole_latency_us_p50=7 hole_latency_us_p99=7",
            "only the last samples count"
        );
    }

    /// A hole found used up while a request for its slot (a re-arm) is on its way to the
    /// monitor keeps its slot: the monitor takes the re-arm as an open, so freeing the
    /// slot would leave the engine and the monitor disagreeing.
    #[test]
    fn used_report_for_a_slot_with_a_request_in_flight_is_ignored() {
        let (monitor, parser_end) = crate::daemon::link::seqpacket_pair().unwrap();
        let mut parser = Parser::new(Engine::new(Config::default()), parser_end, None);
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        for (id, bytes) in conversation().iter().enumerate().take(3) {
            let packet = ToParser {
                id: id as u64,
                checksum: Checksum::Verify,
                bytes,
            };
            parser.read_packet(now, packet).unwrap();
        }
        let mut buf = [0u8; MAX_TO_MONITOR];
        let n = recv(monitor.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
        let ToMonitor::Request(open) = ToMonitor::decode(&buf[..n]).unwrap() else {
            panic!("a request")
        };
        let (slot, spec) = (open.action.slot(), *open.action.spec());
        assert_eq!(parser.engine.open_holes(), 1);
        let mut from = [0u8; MAX_FROM_MONITOR + 1];
        // The open is not answered yet: the report does not free the slot.
        order_on(&monitor, FromMonitor::Used { slot, spec });
        parser.read_monitor(&mut from, &engine_status).unwrap();
        assert_eq!(
            parser.engine.open_holes(),
            1,
            "kept while the request is in flight"
        );
        order_on(
            &monitor,
            FromMonitor::Response {
                id: open.id,
                ok: true,
            },
        );
        order_on(&monitor, FromMonitor::Used { slot, spec });
        parser.read_monitor(&mut from, &engine_status).unwrap();
        assert_eq!(
            parser.engine.open_holes(),
            0,
            "freed once nothing is in flight"
        );
    }

    fn order_on(monitor: &OwnedFd, message: FromMonitor) {
        send(monitor.as_raw_fd(), &message.encode(), MsgFlags::empty()).unwrap();
    }

    /// Garbage from either peer is logged and changes nothing; the parser goes on.
    #[test]
    fn malformed_messages_are_ignored() {
        let (ends, thread) = start(None);
        send(ends.worker.as_raw_fd(), &[9, 9, 9], MsgFlags::empty()).unwrap();
        send(ends.monitor.as_raw_fd(), &[1, 2], MsgFlags::empty()).unwrap();
        order(&ends, FromMonitor::Response { id: 5, ok: true });
        send_packet(&ends, 0, &conversation()[1]);
        assert_eq!(passes(&ends), [0]);
        drop(ends);
        assert_eq!(thread.join().unwrap(), Ok(Exit::PeerGone));
    }
}
