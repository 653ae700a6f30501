//! Starting the monitor's children at startup and again when one dies: fork, then in the
//! child keep only its own descriptors, log through the monitor, set its signals, drop
//! privileges (and, for the parser, enter the sandbox), and run; a child never returns
//! into the monitor's code. Inline mode has two children, the worker and the parser; copy
//! mode has one, a parser that reads the copies itself (there is nothing to pass on, so
//! there is no worker).
//!
//! Owns what a child is made from: the settings, the identity to drop to, the monitor's
//! copy of the intercept socket or copy source (kept so that a new worker or copy-mode
//! parser reads the same bound queue, divert port or NFLOG group: nothing is rebound,
//! nothing is lost to another process meanwhile), the log link's writing end, and the
//! hand-over of the previous instance (for the first parser only). Decides nothing about
//! when to start a child: that is the monitor's.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use anyhow::Context;
use ftp6proxy_core::Engine;
use nix::unistd::{fork, ForkResult, Pid};

use super::messages::Process;
use super::signals::{self, SignalPipe};
use super::{logging, parser, platform, privdrop, worker};
use crate::cli::{Foreground, Settings};
use crate::intercept::{CopySource, Intercept};

/// A started child: its pid and the monitor's end of its link.
#[derive(Debug)]
pub struct Child {
    /// Its process id.
    pub pid: Pid,
    /// The monitor's end of the link to it.
    pub link: OwnedFd,
}

/// How the monitor starts its children (a trait, so the monitor's loop can be tested with
/// children of the test's making).
pub trait Spawn {
    /// Whether packets come through a worker (inline mode). Without one (copy mode) the
    /// parser reads the copies itself and [`Spawn::worker`] is never called.
    fn has_worker(&self) -> bool;

    /// Starts a parser that reads packets from the worker on `worker_link` (inline mode),
    /// or from the copy source (copy mode: `None`).
    ///
    /// # Errors
    /// When the link or the fork fails.
    fn parser(&mut self, worker_link: Option<OwnedFd>) -> anyhow::Result<Child>;

    /// Starts a worker that sends packets to the parser on `parser_link`.
    ///
    /// # Errors
    /// When the link or the fork fails, or the intercept was released.
    fn worker(&mut self, parser_link: OwnedFd) -> anyhow::Result<Child>;

    /// Gives up the monitor's copy of the intercept or copy source, so that the queue,
    /// divert port or NFLOG group is released the moment the last child reading it is gone
    /// (at shutdown, before holes are closed at their deadlines: nothing must sit unread in
    /// a queue meanwhile).
    fn release_intercept(&mut self);
}

/// The graceful-restart hand-over: what the previous instance left, and where this one
/// leaves its own (see `handover`).
#[derive(Debug, Default)]
pub struct Handover {
    /// The previous instance's state, for the first parser.
    pub inherited: Option<Vec<u8>>,
    /// Where the parser writes this instance's state at shutdown.
    pub out: Option<std::fs::File>,
}

/// Where packets come from: the packets themselves (inline) or copies of them.
pub enum Packets {
    /// The intercept a worker reads and passes packets on from (divert, NFQUEUE).
    Inline(platform::PlatformIntercept),
    /// The read-only copy source the parser reads itself (tee, ngtee, NFLOG).
    Copies(platform::PlatformCopy),
}

/// The daemon's children, as it runs them.
pub struct Processes<'a> {
    settings: &'a Settings,
    identity: privdrop::Identity,
    /// `None` once released.
    packets: Option<Packets>,
    /// Copy mode: no worker, the parser reads the copy source.
    copy_mode: bool,
    log_writer: OwnedFd,
    handover: Handover,
    /// Workers started so far: every one after the first takes over a queue whose
    /// previous reader died holding packets.
    workers: u32,
}

impl<'a> Processes<'a> {
    /// Children made from `settings`, dropping to `identity`, reading `packets`, logging
    /// on `log_writer`; the first parser takes `handover`.
    pub fn new(
        settings: &'a Settings,
        identity: privdrop::Identity,
        packets: Packets,
        log_writer: OwnedFd,
        handover: Handover,
    ) -> Self {
        Processes {
            settings,
            identity,
            copy_mode: matches!(packets, Packets::Copies(_)),
            packets: Some(packets),
            log_writer,
            handover,
            workers: 0,
        }
    }

    /// In a new child: log through the monitor as `process`, and close every descriptor
    /// but `keep` (the monitor's firewall, pidfile, signal pipe, other links: none is the
    /// child's business).
    fn become_child(&self, process: Process, keep: &[RawFd]) -> anyhow::Result<()> {
        // First, so that no signal handler writes into a descriptor number reused below.
        signals::forget_pipe();
        let log = self.log_writer.try_clone().context("log link")?;
        let mut kept = keep.to_vec();
        kept.push(log.as_raw_fd());
        logging::forward_to(log, process);
        platform::name_process(process.name());
        close_all_but(&kept).context("close the monitor's descriptors")
    }

    fn run_parser(
        &mut self,
        worker_link: Option<OwnedFd>,
        monitor_link: OwnedFd,
    ) -> anyhow::Result<()> {
        let handover = std::mem::take(&mut self.handover);
        let out_fd = handover.out.as_ref().map(AsRawFd::as_raw_fd);
        // Copy mode: this child's copy of the monitor's copy source (the monitor keeps its
        // own, so the group or port stays bound while parsers come and go).
        let mut copies = match &worker_link {
            Some(_) => None,
            None => match self.packets.take() {
                Some(Packets::Copies(copies)) => Some(copies),
                _ => anyhow::bail!("copy mode without a copy source (it was released)"),
            },
        };
        let keep: Vec<RawFd> = [monitor_link.as_raw_fd()]
            .into_iter()
            .chain(worker_link.as_ref().map(AsRawFd::as_raw_fd))
            .chain(copies.as_ref().map(AsRawFd::as_raw_fd))
            .chain(out_fd)
            .collect();
        self.become_child(Process::Parser, &keep)?;
        signals::ignore_all().context("ignore signals in the parser")?;
        let settings = self.settings;
        self.confine(privdrop::Keep::Nothing)?;
        if settings.foreground != Foreground::Debug {
            platform::sandbox()?;
        }
        let mut engine = Engine::new(settings.engine.clone());
        if let Some(bytes) = &handover.inherited {
            #[allow(clippy::disallowed_methods)]
            let now = std::time::Instant::now();
            match engine.import_state(now, bytes) {
                Ok(n) => log::info!("took over {n} connections from the previous instance"),
                Err(e) => log::warn!(
                    "hand-over from the previous instance not taken ({e}); its connections \
                     are joined mid-stream"
                ),
            }
        }
        match (worker_link, copies.as_mut()) {
            (Some(worker), _) => {
                let links = parser::Links {
                    worker,
                    monitor: monitor_link,
                };
                parser::run(engine, links, handover.out, settings.busy_poll)
                    .context("links of the parser")?;
            }
            (None, Some(copies)) => {
                let copies: &mut dyn CopySource = copies;
                parser::run_copies(
                    engine,
                    monitor_link,
                    copies,
                    handover.out,
                    settings.busy_poll,
                )
                .context("the copy-mode parser")?;
            }
            (None, None) => unreachable!("checked above"),
        }
        Ok(())
    }

    /// Chroots (`-r`) and drops to `-u`, keeping `keep`; under `-d -d` only the chroot.
    fn confine(&self, keep: privdrop::Keep) -> anyhow::Result<()> {
        if self.settings.foreground == Foreground::Debug {
            return chroot_only(self.settings);
        }
        privdrop::drop_to(&self.identity, self.settings.chroot.as_deref(), keep)
    }

    fn run_worker(&mut self, parser_link: OwnedFd, monitor_link: OwnedFd) -> anyhow::Result<i32> {
        let Some(Packets::Inline(mut intercept)) = self.packets.take() else {
            anyhow::bail!("no intercept for a worker (released, or copy mode)");
        };
        let keep = [
            intercept.as_raw_fd(),
            parser_link.as_raw_fd(),
            monitor_link.as_raw_fd(),
        ];
        self.become_child(Process::Worker, &keep)?;
        let signals = SignalPipe::install().context("signal handlers")?;
        if self.workers > 1 {
            intercept.adopt();
        }
        super::link::set_nonblocking(&parser_link)?;
        super::link::set_nonblocking(&monitor_link)?;
        self.confine(privdrop::Keep::NetAdmin)?;
        let exit = worker::Worker::new(intercept, monitor_link, Some(parser_link), signals)
            .busy_polling(self.settings.busy_poll)
            .run()?;
        Ok(match exit {
            worker::Exit::Terminated => 0,
            worker::Exit::MonitorGone => 1,
        })
    }
}

impl Spawn for Processes<'_> {
    fn has_worker(&self) -> bool {
        !self.copy_mode
    }

    fn parser(&mut self, worker_link: Option<OwnedFd>) -> anyhow::Result<Child> {
        if worker_link.is_none() && self.packets.is_none() {
            anyhow::bail!("the copy source was released");
        }
        let (monitor_end, parser_end) =
            super::link::seqpacket_pair().context("socketpair for the parser")?;
        // SAFETY: the monitor is single-threaded; the child only runs its own code and
        // ends with exit, never returning into the monitor's.
        match unsafe { fork() }.context("fork a parser")? {
            ForkResult::Child => {
                let code = match self.run_parser(worker_link, parser_end) {
                    Ok(()) => 0,
                    Err(e) => {
                        log::error!("{e:#}");
                        1
                    }
                };
                std::process::exit(code);
            }
            ForkResult::Parent { child } => {
                // Only the first parser hands over; the file stays with it.
                self.handover = Handover::default();
                drop((worker_link, parser_end));
                Ok(Child {
                    pid: child,
                    link: monitor_end,
                })
            }
        }
    }

    fn worker(&mut self, parser_link: OwnedFd) -> anyhow::Result<Child> {
        if !matches!(self.packets, Some(Packets::Inline(_))) {
            anyhow::bail!("no intercept for a worker (released, or copy mode)");
        }
        let (monitor_end, worker_end) =
            super::link::seqpacket_pair().context("socketpair for the worker")?;
        self.workers += 1;
        // SAFETY: as in `parser`.
        match unsafe { fork() }.context("fork a worker")? {
            ForkResult::Child => {
                let code = self
                    .run_worker(parser_link, worker_end)
                    .unwrap_or_else(|e| {
                        log::error!("{e:#}");
                        1
                    });
                std::process::exit(code);
            }
            ForkResult::Parent { child } => {
                drop((parser_link, worker_end));
                Ok(Child {
                    pid: child,
                    link: monitor_end,
                })
            }
        }
    }

    fn release_intercept(&mut self) {
        self.packets = None;
    }
}

/// Closes every descriptor of this process but `keep` (close_range(2): Linux 5.9+,
/// FreeBSD 13+, sys/kern/kern_descrip.c `kern_close_range`; one call per gap).
///
/// # Errors
/// When close_range fails other than by being missing; then each descriptor up to the
/// open-files limit is closed one by one instead.
pub fn close_all_but(keep: &[RawFd]) -> std::io::Result<()> {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter_map(|&fd| u32::try_from(fd).ok())
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut from = 3u32;
    let mut gaps: Vec<(u32, u32)> = Vec::new();
    for &fd in &keep {
        if fd > from {
            gaps.push((from, fd - 1));
        }
        from = from.max(fd + 1);
    }
    gaps.push((from, u32::MAX));
    for (first, last) in gaps {
        // SAFETY: closes descriptors this process owns; the kept ones are outside the range.
        if unsafe { libc::close_range(first, last, 0) } != 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::ENOSYS) {
                return Err(error);
            }
            // SAFETY: sysconf has no preconditions.
            let limit = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) }.clamp(256, 65_536);
            let limit = u32::try_from(limit).unwrap_or(65_536);
            for fd in first..=last.min(limit) {
                // SAFETY: as above; EBADF for a closed descriptor is harmless.
                unsafe { libc::close(fd as RawFd) };
            }
        }
    }
    Ok(())
}

/// `-r` under `-d -d`, where privileges are kept.
fn chroot_only(settings: &Settings) -> anyhow::Result<()> {
    if let Some(dir) = &settings.chroot {
        nix::unistd::chroot(dir.as_path()).with_context(|| format!("chroot {}", dir.display()))?;
        nix::unistd::chdir("/")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a forked child: after close_all_but, exactly the kept descriptors (and 0-2) are
    /// open.
    #[test]
    fn close_all_but_keeps_exactly_the_kept() {
        let files: Vec<std::fs::File> = (0..6)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        let keep = [files[1].as_raw_fd(), files[4].as_raw_fd()];
        let others = [
            files[0].as_raw_fd(),
            files[2].as_raw_fd(),
            files[5].as_raw_fd(),
        ];
        // SAFETY: the child only makes syscalls and exits.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                let ok = close_all_but(&keep).is_ok()
                    && keep
                        .iter()
                        .all(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0)
                    && others
                        .iter()
                        .all(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0);
                // SAFETY: _exit skips the test harness's atexit handlers in this child.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}
