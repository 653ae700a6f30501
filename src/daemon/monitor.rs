//! The monitor: the small privileged process that owns the firewall.
//!
//! Owns the firewall backend and the worker's lifetime. Accepts only fixed-size requests
//! from the worker, re-checks each with [`Validator`], applies it, and answers. When the
//! worker goes away — by SIGTERM (forwarded from here) or by a crash — it closes every hole
//! it knows of and flushes whatever else is ours (DESIGN.md invariant 6). It parses no
//! packets and runs no FTP logic. It is also the one process that writes the log: the
//! worker's and the parser's lines arrive on the log link (see `logging`).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal as NixSignal};
use nix::sys::socket::{recv, send, MsgFlags};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::logging;
use super::privsep::{Request, Response, Validator, REQUEST_LEN};
use super::signals::{Event as Signal, SignalPipe};
use crate::firewall::Firewall;

/// How long the worker gets to close its holes after SIGTERM before it is killed.
const WORKER_GRACE: Duration = Duration::from_millis(1500);

/// The monitor's sockets.
#[derive(Debug)]
pub struct Links {
    /// Requests from the worker, answers to it.
    pub worker: OwnedFd,
    /// Log lines from the worker and the parser (non-blocking).
    pub log: OwnedFd,
    /// The intercept's drop counters, where the kernel shows them (NFQUEUE).
    pub overflow: Option<crate::intercept::OverflowWatch>,
}

/// How long after its deadline a hole is closed by the monitor itself: the parser closes
/// holes at their deadlines; one that stays open longer lost its parser (a crash, then a
/// fresh parser that knows nothing of it). Invariant 6: none stays forever.
const OVERDUE_GRACE: Duration = Duration::from_secs(2);

/// How often the intercept's drop counters are looked at.
const OVERFLOW_CHECK: Duration = Duration::from_secs(5);

/// Writes every log line waiting on the log link.
fn drain_log(log: &OwnedFd) {
    let mut buf = [0u8; logging::MAX_FORWARDED + 2];
    loop {
        match recv(log.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(n) if n > 0 => logging::write_forwarded(&buf[..n]),
            Err(nix::errno::Errno::EINTR) => {}
            _ => return,
        }
    }
}

/// Runs the monitor until the worker is gone; returns the process exit status.
pub fn run(
    firewall: &mut dyn Firewall,
    mut validator: Validator,
    links: Links,
    worker: Pid,
    signals: &SignalPipe,
) -> i32 {
    let Links {
        worker: socket,
        log,
        mut overflow,
    } = links;
    #[allow(clippy::disallowed_methods)]
    let started = Instant::now();
    let mut next_overflow_check = started + OVERFLOW_CHECK;
    let mut terminating: Option<Instant> = None;
    let mut buf = [0u8; REQUEST_LEN + 1];
    let worker_status = loop {
        #[allow(clippy::disallowed_methods)]
        let overdue_in = validator
            .next_overdue(OVERDUE_GRACE)
            .map(|at| at.saturating_duration_since(Instant::now()));
        let timeout = match (terminating, &overflow, overdue_in) {
            (Some(_), _, _) => PollTimeout::from(100u16),
            (None, Some(_), _) => PollTimeout::from(1000u16),
            (None, None, Some(left)) => {
                PollTimeout::from(u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX))
            }
            (None, None, None) => PollTimeout::NONE,
        };
        let mut fds = [
            PollFd::new(socket.as_fd(), PollFlags::POLLIN),
            PollFd::new(
                // SAFETY: the signal pipe outlives this poll call.
                unsafe { std::os::fd::BorrowedFd::borrow_raw(signals.fd()) },
                PollFlags::POLLIN,
            ),
            PollFd::new(log.as_fd(), PollFlags::POLLIN),
        ];
        if let Err(e) = poll(&mut fds, timeout) {
            if e != nix::errno::Errno::EINTR {
                log::error!("monitor poll: {e}");
                break None;
            }
        }
        for signal in signals.drain() {
            match signal {
                Signal::Terminate => {
                    if terminating.is_none() {
                        terminating = Some(Instant::now());
                        let _ = kill(worker, NixSignal::SIGTERM);
                    }
                }
                // Only this process writes the log (the others forward to it), and it runs
                // on the host, unconfined: it can always reconnect.
                Signal::Reopen => {
                    logging::reopen();
                    log::info!("log reopened");
                }
                Signal::Status => {
                    #[allow(clippy::disallowed_methods)]
                    let uptime = started.elapsed().as_secs();
                    log::info!(
                        "monitor uptime={uptime}s holes_open={}",
                        validator.open_holes().len()
                    );
                    let _ = kill(worker, NixSignal::SIGUSR1);
                }
                Signal::Child => {}
            }
        }
        drain_log(&log);
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
        for close in validator.overdue(now, OVERDUE_GRACE) {
            log::warn!(
                "slot {} outlived its deadline (its parser is gone): closing it",
                close.slot()
            );
            if let Err(e) = firewall.apply(&close) {
                log::error!("firewall: {e}");
            }
            validator.applied(&close, true);
        }
        // Serve every waiting request, then check on the worker.
        let mut worker_closed = false;
        loop {
            match recv(socket.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => {
                    worker_closed = true;
                    break;
                }
                Ok(n) => serve(firewall, &mut validator, &socket, &buf[..n]),
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    log::error!("monitor: reading the worker's requests: {e}");
                    worker_closed = true;
                    break;
                }
            }
        }
        if let Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) =
            waitpid(worker, Some(WaitPidFlag::WNOHANG))
        {
            break Some(status);
        }
        if worker_closed {
            // Its socket closed: it is exiting; collect it.
            break waitpid(worker, None).ok();
        }
        if terminating.is_some_and(|since| since.elapsed() > WORKER_GRACE) {
            log::error!("worker did not stop within {WORKER_GRACE:?}; killing it");
            let _ = kill(worker, NixSignal::SIGKILL);
            break waitpid(worker, None).ok();
        }
    };
    // The worker's and the parser's last words.
    drain_log(&log);
    clean_up(firewall, &mut validator, &log);
    match (terminating, worker_status) {
        (Some(_), _) => 0,
        (None, Some(WaitStatus::Exited(_, 0))) => 0,
        (None, status) => {
            log::error!("worker ended unexpectedly ({status:?}); holes removed, exiting");
            1
        }
    }
}

/// Applies one request and answers it.
fn serve(firewall: &mut dyn Firewall, validator: &mut Validator, socket: &OwnedFd, bytes: &[u8]) {
    let request = match Request::decode(bytes) {
        Ok(request) => request,
        Err(e) => {
            log::error!("monitor: refused a {e} from the worker");
            return;
        }
    };
    let ok = match validator.check(&request.action) {
        Err(invalid) => {
            log::error!(
                "monitor: refused request slot={}: {invalid}",
                request.action.slot()
            );
            false
        }
        Ok(()) => match firewall.apply(&request.action) {
            Ok(()) => {
                validator.applied(&request.action, true);
                true
            }
            Err(e) => {
                log::error!("firewall: {e}");
                validator.applied(&request.action, false);
                false
            }
        },
    };
    let response = Response { id: request.id, ok }.encode();
    if let Err(e) = send(socket.as_raw_fd(), &response, MsgFlags::empty()) {
        log::error!("monitor: answering the worker: {e}");
    }
}

/// The worker is gone: no hole is cut short. Holes that expire by themselves (nft) are
/// left to their own timeouts — a restart hands their connections over and the next
/// instance adopts them. Holes that never expire (ipfw rules, pf anchors) are closed each
/// at its deadline, at most `-t` from now (rc.d's stop waits for the monitor), and then
/// anything else of ours is removed. Log lines of the other processes are still written
/// while it waits.
fn clean_up(firewall: &mut dyn Firewall, validator: &mut Validator, log: &OwnedFd) {
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
            log::error!("firewall: closing slot {} at exit: {e}", action.slot());
        }
        validator.applied(&action, true);
    }
    match firewall.flush_owned() {
        Ok(0) => {}
        Ok(n) => log::info!("removed {n} leftover holes at exit"),
        Err(e) => log::error!("firewall: flushing our holes at exit: {e}"),
    }
}
