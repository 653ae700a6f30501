//! The monitor: the small privileged process that owns the firewall and its children
//! (OpenSSH's `monitor.c`: the privileged parent that the sandboxed children talk to
//! directly, and log through).
//!
//! Owns the firewall backend, the [`Validator`], and the lives of the worker and the
//! parser (in copy mode: of the parser alone, which reads the copies itself). The parser
//! sends it hole requests on its own link; the monitor decodes each (`messages`),
//! re-checks it, applies it and answers. When the parser dies, the monitor starts a new
//! one and hands the worker its link (copy mode: the new parser reads the copy source the
//! monitor keeps); when the worker dies, it starts both again on the same intercept
//! socket; five deaths within a minute are a crash loop and end the daemon. At a stop it
//! has the parser hand its state over, lets the worker pass what it holds, and leaves no
//! hole behind past its deadline (DESIGN.md invariant 6). It parses
//! no packets and runs no FTP logic. It is the one process that writes the log: the
//! children's lines arrive on the log link (see `logging`).

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal as NixSignal};
use nix::sys::socket::{recv, MsgFlags};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::link::{self, send_nonblocking, Sent};
use super::logging;
use super::messages::{
    FromMonitor, Request, ToMonitor, MAX_LOG_MESSAGE, MAX_TO_MONITOR, NEW_PARSER,
};
use super::privsep::Validator;
use super::signals::{Event as Signal, SignalPipe};
use super::spawn::{Child, Spawn};
use crate::firewall::{self, Firewall, Op};
use ftp6proxy_core::{FwAction, HoleSpec, Slot};

/// How long the children get to stop after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_millis(3000);

/// How long after its deadline a hole is closed by the monitor itself: the parser closes
/// holes at their deadlines; one that stays open longer lost its parser (a crash, then a
/// fresh parser that knows nothing of it). Invariant 6: none stays forever.
const OVERDUE_GRACE: Duration = Duration::from_secs(2);

/// How close to its deadline a hole is left out of the check for used holes (see
/// [`Monitor::reclaim_used`]). While holes are open the firewall is asked which of them
/// their data connections used (nft: consumed by the hole rule; ipfw: its rule counted the
/// SYN; pf: its anchor's rules made states), so their slots free at once, as often as
/// [`Firewall::use_check_periods`] says (nft: every 100 ms, every 5 ms while three
/// quarters of the slots are taken: one dump of the sets, a few tens of microseconds).
const USE_CHECK: Duration = Duration::from_millis(100);

/// How often the intercept's drop counters are looked at.
const OVERFLOW_CHECK: Duration = Duration::from_secs(5);

/// How early a close may come and still count as at its hole's deadline (the engine's
/// clock reads the deadline a moment before the monitor's record of it ends).
const CLOSE_SLACK: Duration = Duration::from_millis(100);

/// Child restarts allowed within [`CRASH_WINDOW`] before the daemon gives up.
pub const MAX_RESTARTS: usize = 5;
/// The window in which [`MAX_RESTARTS`] restarts mean a crash loop.
pub const CRASH_WINDOW: Duration = Duration::from_secs(60);

/// The monitor's own sockets (its children's links come from [`Spawn`]).
#[derive(Debug)]
pub struct Links {
    /// Log lines from the worker and the parser (non-blocking).
    pub log: OwnedFd,
    /// The intercept's drop counters, where the kernel shows them (NFQUEUE).
    pub overflow: Option<crate::intercept::OverflowWatch>,
}

/// The parser as the monitor sees it: its link, and answers its socket would not take yet.
struct ParserChild {
    child: Child,
    outbox: VecDeque<Vec<u8>>,
    /// It said `Closed` (shutdown done).
    closed: bool,
}

/// What the monitor counts (logged on SIGUSR1/SIGINFO).
#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    requests: u64,
    holes_used: u64,
    closes_left_to_expire: u64,
    refused: u64,
    malformed: u64,
    firewall_errors: u64,
    parser_restarts: u64,
    worker_restarts: u64,
}

/// The firewall's failures, counted per operation and kind so that the log shows each
/// kind at once and a firewall that refuses everything cannot flood it: the first of each
/// (`op`, `kind`) is logged, then the 10th, the 100th, ... ([`logging::is_power_of_ten`],
/// as the worker's and the parser's counted errors).
#[derive(Debug, Default)]
struct FirewallFailures {
    seen: HashMap<(Op, &'static str), u64>,
}

impl FirewallFailures {
    /// Counts `error`; returns the line to log when this one is to be logged.
    fn count(&mut self, error: &firewall::Error) -> Option<String> {
        let seen = self.seen.entry((error.op, error.kind.name())).or_default();
        *seen += 1;
        logging::is_power_of_ten(*seen).then(|| failure_line(error, *seen))
    }

    /// Counts `error` and logs it if its turn has come.
    fn log(&mut self, error: &firewall::Error) {
        if let Some(line) = self.count(error) {
            log::error!("{line}");
        }
    }
}

/// `firewall op=open slot=64003 kind=refused: MESSAGE`: the operation, the slot when there
/// is one, the kind, from the second such failure on how many there were (`count=10`),
/// then the message with its system error.
fn failure_line(error: &firewall::Error, count: u64) -> String {
    let mut line = format!("firewall op={}", error.op);
    if let Some(slot) = error.slot {
        line.push_str(&format!(" slot={slot}"));
    }
    line.push_str(&format!(" kind={}", error.kind.name()));
    if count > 1 {
        line.push_str(&format!(" count={count}"));
    }
    line.push_str(&format!(": {:#}", error.kind));
    line
}

struct Monitor<'a, S: Spawn> {
    firewall: &'a mut dyn Firewall,
    failures: FirewallFailures,
    validator: Validator,
    spawn: S,
    worker: Option<Child>,
    /// How the worker ended, when `worker_alive` collected it.
    worker_exit: Option<WaitStatus>,
    parser: Option<ParserChild>,
    restarts: VecDeque<Instant>,
    counters: Counters,
}

/// Runs the monitor: starts the children, serves the parser, restarts whoever dies, and
/// at a stop cleans up. Returns the process exit status.
pub fn run<S: Spawn>(
    firewall: &mut dyn Firewall,
    validator: Validator,
    spawn: S,
    links: Links,
    signals: &SignalPipe,
) -> i32 {
    let Links { log, mut overflow } = links;
    let mut monitor = Monitor {
        firewall,
        failures: FirewallFailures::default(),
        validator,
        spawn,
        worker: None,
        worker_exit: None,
        parser: None,
        restarts: VecDeque::new(),
        counters: Counters::default(),
    };
    if let Err(e) = monitor.start_both() {
        log::error!("starting the children: {e:#}");
        monitor.shut_down(&log);
        return 1;
    }
    #[allow(clippy::disallowed_methods)]
    let started = Instant::now();
    let mut next_overflow_check = started + OVERFLOW_CHECK;
    let mut last_use_check = started;
    let mut terminating: Option<Instant> = None;
    let mut failed = false;
    loop {
        #[allow(clippy::disallowed_methods)]
        let overdue_in = monitor
            .validator
            .next_overdue(OVERDUE_GRACE)
            .map(|at| at.saturating_duration_since(Instant::now()));
        let (open_holes, slots) = monitor.validator.usage();
        let watching_use = monitor.firewall.reports_use() && open_holes > 0;
        let (idle_period, busy_period) = monitor.firewall.use_check_periods();
        let use_period = if open_holes * 4 >= slots * 3 {
            busy_period
        } else {
            idle_period
        };
        // The period follows the load: a check falls due `use_period` after the last one.
        let use_due = watching_use.then(|| last_use_check + use_period);
        let timeout = match (terminating, &overflow, overdue_in) {
            (Some(_), _, _) => PollTimeout::from(50u16),
            _ if watching_use => {
                #[allow(clippy::disallowed_methods)]
                let left = use_due.map_or(idle_period, |due| {
                    due.saturating_duration_since(Instant::now())
                });
                PollTimeout::from(u16::try_from(left.as_millis().max(1)).unwrap_or(100))
            }
            (None, Some(_), _) => PollTimeout::from(1000u16),
            (None, None, Some(left)) => {
                PollTimeout::from(u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX))
            }
            (None, None, None) => PollTimeout::NONE,
        };
        // What poll named (readable, writable as asked, or hung up): only those are read.
        // A read that finds nothing is a system call for nothing, and the monitor's turns
        // come with every hole request and every log line (measured: five of a request
        // turn's thirteen calls found nothing).
        let named = {
            // SAFETY: the signal pipe outlives this poll call.
            let signal_fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(signals.fd()) };
            let mut fds = vec![
                PollFd::new(signal_fd, PollFlags::POLLIN),
                PollFd::new(log.as_fd(), PollFlags::POLLIN),
            ];
            let worker_at = monitor.worker.as_ref().map(|worker| {
                fds.push(PollFd::new(worker.link.as_fd(), PollFlags::POLLIN));
                fds.len() - 1
            });
            let parser_at = monitor.parser.as_ref().map(|parser| {
                let mut flags = PollFlags::POLLIN;
                if !parser.outbox.is_empty() {
                    flags |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(parser.child.link.as_fd(), flags));
                fds.len() - 1
            });
            match poll(&mut fds, timeout) {
                Ok(_) => {
                    let is_named = |at: Option<usize>| {
                        at.and_then(|at| fds[at].revents())
                            .is_some_and(|events| !events.is_empty())
                    };
                    Named {
                        signals: is_named(Some(0)),
                        log: is_named(Some(1)),
                        worker: is_named(worker_at),
                        parser: is_named(parser_at),
                    }
                }
                // A signal interrupted the wait: look at everything.
                Err(Errno::EINTR) => Named::ALL,
                Err(e) => {
                    log::error!("monitor poll: {e}");
                    break;
                }
            }
        };
        // A child that exits raises SIGCHLD and hangs up its link: either names it.
        let mut child_exited = false;
        let arrived = if named.signals {
            signals.drain()
        } else {
            Vec::new()
        };
        for signal in arrived {
            match signal {
                Signal::Terminate if terminating.is_none() => {
                    #[allow(clippy::disallowed_methods)]
                    let now = Instant::now();
                    terminating = Some(now);
                    monitor.begin_stop();
                }
                Signal::Child => child_exited = true,
                Signal::Terminate => {}
                // Only this process writes the log (the others forward to it), and it runs
                // on the host, unconfined: it can always reconnect.
                Signal::Reopen => {
                    logging::reopen();
                    log::info!("log reopened");
                }
                Signal::Status => {
                    #[allow(clippy::disallowed_methods)]
                    let uptime = started.elapsed().as_secs();
                    let queue = overflow.as_ref().map(|watch| watch.totals());
                    monitor.status(uptime, queue);
                }
            }
        }
        if named.log {
            drain_log(&log);
        }
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        if now >= next_overflow_check {
            next_overflow_check = now + OVERFLOW_CHECK;
            if let Some(line) = overflow
                .as_mut()
                .and_then(crate::intercept::OverflowWatch::check)
            {
                log::warn!("{line}");
            }
        }
        monitor.close_overdue(now);
        if use_due.is_some_and(|due| now >= due) {
            last_use_check = now;
            monitor.reclaim_used(now);
        }
        // While stopping, every turn looks at everything: that path is rare and must not
        // miss a child's end.
        let everything = terminating.is_some();
        let parser_alive = if everything || named.parser || monitor.parser_has_mail() {
            monitor.serve_parser()
        } else {
            monitor.parser.is_some()
        };
        // Copy mode has no worker: only the parser can die.
        let worker_alive = !monitor.spawn.has_worker()
            || if everything || named.worker || child_exited {
                monitor.worker_alive()
            } else {
                monitor.worker.is_some()
            };
        if let Some(since) = terminating {
            let parser_done = monitor.parser.as_ref().is_none_or(|p| p.closed) || !parser_alive;
            let worker_done = !monitor.spawn.has_worker() || !worker_alive;
            if (worker_done && parser_done) || since.elapsed() > STOP_GRACE {
                break;
            }
            continue;
        }
        let restarted = match (worker_alive, parser_alive) {
            (true, true) => Ok(()),
            (true, false) => monitor.restart_parser(now),
            (false, _) => monitor.restart_both(now),
        };
        if let Err(e) = restarted {
            log::error!("{e:#}; exiting");
            failed = true;
            break;
        }
    }
    monitor.shut_down(&log);
    i32::from(failed)
}

/// Which of the monitor's descriptors a poll named.
#[derive(Debug, Clone, Copy)]
struct Named {
    signals: bool,
    log: bool,
    worker: bool,
    parser: bool,
}

impl Named {
    const ALL: Named = Named {
        signals: true,
        log: true,
        worker: true,
        parser: true,
    };
}

impl<S: Spawn> Monitor<'_, S> {
    /// Whether something waits to be sent to the parser (answers, `Used` reports, orders).
    fn parser_has_mail(&self) -> bool {
        self.parser.as_ref().is_some_and(|p| !p.outbox.is_empty())
    }

    /// The end, whichever way it came: the children stopped and their last words logged,
    /// the intercept released (nothing may wait in a queue nobody reads while holes are
    /// closed at their deadlines), then the holes dealt with ([`clean_up`]).
    fn shut_down(&mut self, log: &OwnedFd) {
        self.stop_children();
        drain_log(log);
        self.spawn.release_intercept();
        clean_up(self.firewall, &mut self.failures, &mut self.validator, log);
    }

    /// Starts a worker and a parser joined by a fresh link; in copy mode, the parser alone.
    fn start_both(&mut self) -> anyhow::Result<()> {
        if !self.spawn.has_worker() {
            self.parser = Some(self.new_parser_child(None)?);
            return Ok(());
        }
        let (worker_end, parser_end) = link::seqpacket_pair()?;
        self.worker = Some(self.spawn.worker(worker_end)?);
        self.parser = Some(self.new_parser_child(Some(parser_end))?);
        Ok(())
    }

    fn new_parser_child(&mut self, worker_link: Option<OwnedFd>) -> anyhow::Result<ParserChild> {
        let child = self.spawn.parser(worker_link)?;
        link::set_nonblocking(&child.link)?;
        Ok(ParserChild {
            child,
            outbox: VecDeque::new(),
            closed: false,
        })
    }

    /// Counts a restart; errs on a crash loop.
    fn count_restart(&mut self, now: Instant) -> anyhow::Result<usize> {
        while self
            .restarts
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) > CRASH_WINDOW)
        {
            self.restarts.pop_front();
        }
        if self.restarts.len() >= MAX_RESTARTS {
            anyhow::bail!(
                "crash loop: {MAX_RESTARTS} restarts within {}s",
                CRASH_WINDOW.as_secs()
            );
        }
        self.restarts.push_back(now);
        Ok(self.restarts.len())
    }

    /// The parser died: a new one, whose link the worker gets from us (copy mode: which
    /// reads the copy source we keep; copies made meanwhile wait in its socket buffer).
    fn restart_parser(&mut self, now: Instant) -> anyhow::Result<()> {
        let status = self.parser.take().map(|p| reap(p.child.pid));
        let restarts = self.count_restart(now)?;
        self.counters.parser_restarts += 1;
        let parser = if self.spawn.has_worker() {
            let (worker_end, parser_end) = link::seqpacket_pair()?;
            let parser = self.new_parser_child(Some(parser_end))?;
            if let Some(worker) = self.worker.as_ref().map(|w| &w.link) {
                link::send_with_fd(worker, &[NEW_PARSER], &worker_end)?;
            }
            parser
        } else {
            self.new_parser_child(None)?
        };
        self.parser = Some(parser);
        log::warn!(
            "parser died ({}); started a new one ({restarts} restarts in the last {}s): \
             connections are joined mid-stream",
            describe(status),
            CRASH_WINDOW.as_secs()
        );
        Ok(())
    }

    /// The worker died: both start again, on the same intercept socket.
    fn restart_both(&mut self, now: Instant) -> anyhow::Result<()> {
        let worker = self
            .worker
            .take()
            .map(|w| self.worker_exit.take().or_else(|| reap(w.pid)));
        if let Some(parser) = self.parser.take() {
            let _ = kill(parser.child.pid, NixSignal::SIGKILL);
            reap(parser.child.pid);
        }
        let restarts = self.count_restart(now)?;
        self.counters.worker_restarts += 1;
        self.start_both()?;
        log::warn!(
            "worker died ({}); started a new worker and parser on the same queue \
             ({restarts} restarts in the last {}s): connections are joined mid-stream",
            describe(worker),
            CRASH_WINDOW.as_secs()
        );
        Ok(())
    }

    /// Whether the worker still runs (its link is open and it has not exited).
    fn worker_alive(&mut self) -> bool {
        let Some(worker) = &self.worker else {
            return false;
        };
        let mut buf = [0u8; 1];
        let closed = matches!(
            recv(worker.link.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT),
            Ok(0) | Err(Errno::ECONNRESET)
        );
        let exited = match waitpid(worker.pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                self.worker_exit = Some(status);
                true
            }
            _ => false,
        };
        !(closed || exited)
    }

    /// Reads and serves the parser's requests and sends what it waits for; returns
    /// whether it is still there.
    fn serve_parser(&mut self) -> bool {
        let Some(parser) = self.parser.as_mut() else {
            return false;
        };
        let mut buf = [0u8; MAX_TO_MONITOR + 1];
        loop {
            let n = match recv(
                parser.child.link.as_raw_fd(),
                &mut buf,
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(0) => return false,
                Ok(n) => n,
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(_) => return false,
            };
            match ToMonitor::decode(&buf[..n]) {
                Ok(ToMonitor::Request(request)) => {
                    let ok = apply(
                        self.firewall,
                        &mut self.failures,
                        &mut self.validator,
                        &request,
                        &mut self.counters,
                    );
                    parser
                        .outbox
                        .push_back(FromMonitor::Response { id: request.id, ok }.encode());
                }
                Ok(ToMonitor::Closed) => parser.closed = true,
                Err(e) => {
                    self.counters.malformed += 1;
                    log::error!("the parser sent a {e} ({n} bytes)");
                }
            }
        }
        while let Some(message) = parser.outbox.front() {
            match send_nonblocking(&parser.child.link, message) {
                Sent::Yes => {
                    parser.outbox.pop_front();
                }
                Sent::Later => break,
                Sent::TooBig | Sent::Gone => return false,
            }
        }
        true
    }

    /// SIGTERM. The worker stops reading packets, sends the parser what it has read and
    /// then ends its stream; the parser reads every packet to the end, waits for the
    /// answers to its hole requests (so each packet it releases has its hole), hands its
    /// state over and exits; the worker passes what was released, and exits. In copy mode
    /// the parser reads the copies waiting, waits for its answers, hands over and exits.
    fn begin_stop(&mut self) {
        if let Some(parser) = self.parser.as_mut() {
            parser.outbox.push_back(FromMonitor::Shutdown.encode());
        }
        if let Some(worker) = &self.worker {
            let _ = kill(worker.pid, NixSignal::SIGTERM);
        }
    }

    /// Ends whatever child is left (killing one that did not stop in time) and collects it.
    fn stop_children(&mut self) {
        for pid in [
            self.worker.take().map(|w| w.pid),
            self.parser.take().map(|p| p.child.pid),
        ]
        .into_iter()
        .flatten()
        {
            if matches!(
                waitpid(pid, Some(WaitPidFlag::WNOHANG)),
                Ok(WaitStatus::StillAlive)
            ) {
                let _ = kill(pid, NixSignal::SIGTERM);
                std::thread::sleep(Duration::from_millis(100));
                if matches!(
                    waitpid(pid, Some(WaitPidFlag::WNOHANG)),
                    Ok(WaitStatus::StillAlive)
                ) {
                    log::error!("child {pid} did not stop; killing it");
                    let _ = kill(pid, NixSignal::SIGKILL);
                    let _ = waitpid(pid, None);
                }
            }
        }
    }

    /// Frees the slots of holes their data connections used up: the validator forgets
    /// them and the parser is told, so the engine can give the slot to the next
    /// announcement instead of waiting for the deadline (issue 10: enough slots). Holes
    /// within [`USE_CHECK`] of their deadline are left alone: their element may have
    /// timed out instead, and the engine closes them anyway (ipfw, pf: that close removes
    /// the rule). The firewall removes what is left of each used hole itself
    /// ([`Firewall::used`]). A re-arm (refresh) of a slot forgotten here is taken as an
    /// open by the validator, and the ipfw and pf backends install the hole again.
    fn reclaim_used(&mut self, now: Instant) {
        let holes: Vec<(Slot, HoleSpec)> = self
            .validator
            .open_holes()
            .into_iter()
            .filter(|(_, deadline)| *deadline > now + USE_CHECK)
            .map(|(close, _)| (close.slot(), *close.spec()))
            .collect();
        if holes.is_empty() {
            return;
        }
        let used = match self.firewall.used(&holes) {
            Ok(used) => used,
            Err(e) => {
                self.counters.firewall_errors += 1;
                self.failures.log(&e);
                return;
            }
        };
        for slot in used {
            let Some(&(_, spec)) = holes.iter().find(|(s, _)| *s == slot) else {
                continue;
            };
            self.validator
                .applied(&FwAction::Close { slot, spec }, true);
            self.counters.holes_used += 1;
            if let Some(parser) = self.parser.as_mut() {
                parser
                    .outbox
                    .push_back(FromMonitor::Used { slot, spec }.encode());
            }
        }
    }

    /// Closes holes whose parser is gone (still open [`OVERDUE_GRACE`] after their
    /// deadline).
    fn close_overdue(&mut self, now: Instant) {
        for close in self.validator.overdue(now, OVERDUE_GRACE) {
            log::warn!(
                "slot {} outlived its deadline (its parser is gone): closing it",
                close.slot()
            );
            if let Err(e) = self.firewall.apply(&close) {
                self.failures.log(&e);
            }
            self.validator.applied(&close, true);
        }
    }

    fn status(&mut self, uptime: u64, queue: Option<crate::intercept::QueueStats>) {
        let c = self.counters;
        let queue = queue.map_or(String::new(), |q| {
            format!(
                " queue_dropped={} queue_user_dropped={}",
                q.dropped, q.user_dropped
            )
        });
        log::info!(
            "monitor uptime={uptime}s holes_open={} requests={} refused={} malformed={} \
             firewall_errors={} holes_used={} closes_left_to_expire={} parser_restarts={} \
             worker_restarts={}{queue}",
            self.validator.open_holes().len(),
            c.requests,
            c.refused,
            c.malformed,
            c.firewall_errors,
            c.holes_used,
            c.closes_left_to_expire,
            c.parser_restarts,
            c.worker_restarts
        );
        if let Some(parser) = self.parser.as_mut() {
            parser.outbox.push_back(FromMonitor::Status.encode());
        }
        if let Some(worker) = &self.worker {
            let _ = kill(worker.pid, NixSignal::SIGUSR1);
        }
    }
}

/// Collects a child whose link closed (it exited, or is exiting; one that lingers is
/// killed so the wait cannot hang the monitor).
fn reap(pid: Pid) -> Option<WaitStatus> {
    for _ in 0..20 {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(5)),
            other => return other.ok(),
        }
    }
    let _ = kill(pid, NixSignal::SIGKILL);
    waitpid(pid, None).ok()
}

fn describe(status: Option<Option<WaitStatus>>) -> String {
    match status.flatten() {
        Some(WaitStatus::Exited(_, code)) => format!("exit status {code}"),
        Some(WaitStatus::Signaled(_, signal, _)) => format!("killed by {signal}"),
        Some(other) => format!("{other:?}"),
        None => "already collected".into(),
    }
}

/// Re-checks one request and applies it; returns whether the firewall now matches it.
fn apply(
    firewall: &mut dyn Firewall,
    failures: &mut FirewallFailures,
    validator: &mut Validator,
    request: &Request,
    counters: &mut Counters,
) -> bool {
    counters.requests += 1;
    if let Err(refused) = validator.check(&request.action) {
        counters.refused += 1;
        log::error!(
            "refused the parser's request slot={}: {refused}",
            request.action.slot()
        );
        return false;
    }
    // A close at the deadline of a hole that expires by itself (an nft element's own
    // timeout: the kernel never matches an expired element) needs no firewall call: under
    // load it would only queue behind the opens, and most such elements were used up and
    // are gone anyway. An early close is applied.
    #[allow(clippy::disallowed_methods)]
    let at_deadline = validator
        .deadline(request.action.slot())
        .is_some_and(|deadline| deadline <= Instant::now() + CLOSE_SLACK);
    if firewall.holes_expire() && matches!(request.action, FwAction::Close { .. }) && at_deadline {
        validator.applied(&request.action, true);
        counters.closes_left_to_expire += 1;
        return true;
    }
    match firewall.apply(&request.action) {
        Ok(()) => {
            validator.applied(&request.action, true);
            true
        }
        Err(e) => {
            counters.firewall_errors += 1;
            failures.log(&e);
            validator.applied(&request.action, false);
            false
        }
    }
}

/// Writes every log line waiting on the log link.
fn drain_log(log: &OwnedFd) {
    let mut buf = [0u8; MAX_LOG_MESSAGE];
    loop {
        match recv(log.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(n) if n > 0 => logging::write_forwarded(&buf[..n]),
            Err(Errno::EINTR) => {}
            _ => return,
        }
    }
}

/// The children are gone: no hole is cut short. Holes that expire by themselves (nft) are
/// left to their own timeouts — a restart hands their connections over and the next
/// instance adopts them. Holes that never expire (ipfw rules, pf anchors) are closed each
/// at its deadline, at most `-t` from now (rc.d's stop waits for the monitor), and then
/// anything else of ours is removed. Log lines of the other processes are still written
/// while it waits.
fn clean_up(
    firewall: &mut dyn Firewall,
    failures: &mut FirewallFailures,
    validator: &mut Validator,
    log: &OwnedFd,
) {
    let holes = validator.open_holes();
    if firewall.holes_expire() {
        if !holes.is_empty() {
            log::info!(
                "leaving {} live holes to expire by themselves (at most -t)",
                holes.len()
            );
        }
        return;
    }
    if !holes.is_empty() {
        log::info!(
            "closing {} live holes at their deadlines before exiting",
            holes.len()
        );
    }
    for (action, deadline) in holes {
        #[allow(clippy::disallowed_methods)]
        let left = deadline.saturating_duration_since(Instant::now());
        if !left.is_zero() {
            let mut fds = [PollFd::new(log.as_fd(), PollFlags::POLLIN)];
            let mut waited = Duration::ZERO;
            while waited < left {
                let step = (left - waited).min(Duration::from_millis(200));
                let ms = u16::try_from(step.as_millis().max(1)).unwrap_or(u16::MAX);
                let _ = poll(&mut fds, PollTimeout::from(ms));
                drain_log(log);
                waited += step;
            }
        }
        if let Err(e) = firewall.apply(&action) {
            failures.log(&e);
        }
        validator.applied(&action, true);
    }
    match firewall.flush_owned() {
        Ok(0) => {}
        Ok(n) => log::info!("removed {n} leftover holes at exit"),
        Err(e) => failures.log(&e),
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;
    use crate::firewall::{Error, ErrorKind};

    fn refused_open(slot: u16) -> Error {
        Error::new(
            Op::Open,
            Some(Slot(slot)),
            ErrorKind::Refused {
                what: format!("/sbin/ipfw -q add {slot} allow tcp from 2001:db8::10 to 2001:db8::21 dst-port 50123 setup keep-state // ftp6proxy"),
                detail: "ipfw: getsockopt(IP_FW_XADD): Operation not permitted (exit status: 71)"
                    .to_owned(),
            },
        )
    }

    #[test]
    fn failure_line_gives_op_slot_and_kind_as_keys_then_the_message() {
        assert_eq!(
            failure_line(&refused_open(64003), 1),
            "firewall op=open slot=64003 kind=refused: /sbin/ipfw -q add 64003 allow tcp from \
             2001:db8::10 to 2001:db8::21 dst-port 50123 setup keep-state // ftp6proxy: ipfw: \
             getsockopt(IP_FW_XADD): Operation not permitted (exit status: 71)"
        );
        let io = Error::new(
            Op::Used,
            None,
            ErrorKind::Io {
                context: "list nftables set ftp6proxy6".to_owned(),
                source: io::Error::from_raw_os_error(libc::EPERM),
            },
        );
        assert_eq!(
            failure_line(&io, 10),
            "firewall op=used kind=io count=10: list nftables set ftp6proxy6: Operation not \
             permitted (os error 1)"
        );
    }

    /// A firewall that refuses every open logs the 1st, 10th, 100th and 1000th refusal:
    /// four lines, not a thousand.
    #[test]
    fn failures_are_logged_first_then_at_powers_of_ten() {
        let mut failures = FirewallFailures::default();
        let logged: Vec<u64> = (1..=1000u64)
            .filter(|n| {
                let slot = 64000 + u16::try_from(n % 100).expect("below 100");
                failures.count(&refused_open(slot)).is_some()
            })
            .collect();
        assert_eq!(logged, [1, 10, 100, 1000]);
    }

    /// Each operation and kind is counted on its own: the first refused close shows even
    /// after a thousand refused opens, and so does the first I/O failure of an open.
    #[test]
    fn each_op_and_kind_is_logged_first_on_its_own() {
        let mut failures = FirewallFailures::default();
        for _ in 0..1000 {
            failures.count(&refused_open(64003));
        }
        let close = Error {
            op: Op::Close,
            ..refused_open(64003)
        };
        assert!(failures.count(&close).is_some());
        assert!(failures.count(&close).is_none());
        let io = Error::new(
            Op::Open,
            Some(Slot(64003)),
            ErrorKind::Io {
                context: "start `/sbin/ipfw -q add 64003 ...`".to_owned(),
                source: io::Error::from_raw_os_error(libc::ENOENT),
            },
        );
        let line = failures
            .count(&io)
            .expect("the first I/O failure is logged");
        assert!(
            line.starts_with("firewall op=open slot=64003 kind=io: "),
            "{line}"
        );
    }
}
