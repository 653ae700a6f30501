//! The worker: the unprivileged process that reads every intercepted packet, drives the
//! engine, and passes every packet on (DESIGN.md invariant 1).
//!
//! Owns the mio event loop (epoll on Linux, kqueue on FreeBSD — one loop, tested here, run
//! there), the packets held while their hole is being installed, and the requests in flight
//! to the monitor. Contains no protocol logic: it reads the clock once per turn, hands
//! bytes and time to the [`Engine`], sends the actions it returns to the monitor, and
//! passes a held packet once every action it caused is answered (or after
//! [`HOLD_LIMIT`], so a stuck firewall can delay a packet but never lose it).

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
                intercept_pending = self.read_packets(now)?;
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
    fn read_packets(&mut self, now: Instant) -> anyhow::Result<bool> {
        for _ in 0..BATCH {
            let outcome = match self.intercept.recv() {
                // The engine reads the bytes in place; nothing is copied.
                Ok(Some(packet)) => self
                    .engine
                    .on_packet_with(now, packet.bytes, packet.checksum),
                Ok(None) => return Ok(false),
                Err(e) => {
                    log::error!("reading intercepted packets: {e}");
                    return Ok(false);
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
        Ok(true)
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
