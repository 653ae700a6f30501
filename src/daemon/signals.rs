//! Signals as readable events: a self-pipe the event loop watches.
//!
//! Owns the process's signal dispositions. The handler only writes the signal number into a
//! non-blocking pipe (async-signal-safe); everything else happens in the loop. mio has no
//! signal support, so this is the classic pattern, and it is the same on FreeBSD and Linux.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::fcntl::OFlag;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

static WRITE_END: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signal: libc::c_int) {
    let fd = WRITE_END.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = u8::try_from(signal).unwrap_or(0);
        // SAFETY: write(2) is async-signal-safe; a full pipe just drops the byte (the loop
        // is already awake then).
        unsafe { libc::write(fd, (&raw const byte).cast(), 1) };
    }
}

/// The signals the daemon reacts to, in a form the loop can match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// SIGTERM or SIGINT: remove the holes and exit.
    Terminate,
    /// SIGHUP: reopen the log.
    Reopen,
    /// SIGUSR1 (and SIGINFO on FreeBSD): log a status line.
    Status,
    /// SIGCHLD: a child changed state.
    Child,
}

#[cfg_attr(not(target_os = "freebsd"), allow(unused_mut))]
fn watched() -> Vec<(Signal, Event)> {
    let mut list = vec![
        (Signal::SIGTERM, Event::Terminate),
        (Signal::SIGINT, Event::Terminate),
        (Signal::SIGHUP, Event::Reopen),
        (Signal::SIGUSR1, Event::Status),
        (Signal::SIGCHLD, Event::Child),
    ];
    #[cfg(target_os = "freebsd")]
    list.push((Signal::SIGINFO, Event::Status));
    list
}

/// The read end of the self-pipe.
#[derive(Debug)]
pub struct SignalPipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Drop for SignalPipe {
    fn drop(&mut self) {
        // The handler stays installed; make sure it never writes into whatever file gets
        // this descriptor number next.
        let _ = WRITE_END.compare_exchange(
            self.write.as_raw_fd(),
            -1,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
}

impl SignalPipe {
    /// Creates the pipe and installs the handlers. Call once per process, after `fork`.
    ///
    /// # Errors
    /// When the pipe or a handler cannot be set up.
    pub fn install() -> io::Result<SignalPipe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        WRITE_END.store(write.as_raw_fd(), Ordering::Relaxed);
        let action = SigAction::new(
            SigHandler::Handler(on_signal),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        for (signal, _) in watched() {
            // SAFETY: the handler only performs an async-signal-safe write(2).
            unsafe { sigaction(signal, &action) }?;
        }
        // A closed worker socket must be an error return, not a process kill.
        // SAFETY: ignoring SIGPIPE has no preconditions.
        unsafe {
            sigaction(
                Signal::SIGPIPE,
                &SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty()),
            )
        }?;
        Ok(SignalPipe { read, write })
    }

    /// The fd to watch for readability.
    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Reads every signal that arrived since the last call.
    pub fn drain(&self) -> Vec<Event> {
        let mut events = Vec::new();
        let mut buf = [0u8; 64];
        let table = watched();
        while let Ok(n @ 1..) = nix::unistd::read(&self.read, &mut buf) {
            for &byte in &buf[..n] {
                if let Some((_, event)) = table.iter().find(|(s, _)| *s as i32 == i32::from(byte)) {
                    events.push(*event);
                }
            }
        }
        events
    }
}

/// In a new child: the handlers inherited from the parent write nowhere until the child
/// installs its own pipe (the parent's pipe descriptors are about to be closed, and their
/// numbers reused).
pub fn forget_pipe() {
    WRITE_END.store(-1, Ordering::Relaxed);
}

/// Ignores every signal the daemon reacts to (the parser: the monitor tells it when to stop,
/// and a Ctrl-C to the foreground process group must not kill it before that).
///
/// # Errors
/// When a disposition cannot be set.
pub fn ignore_all() -> io::Result<()> {
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    for (signal, _) in watched() {
        if signal == Signal::SIGCHLD {
            continue;
        }
        // SAFETY: SIG_IGN has no handler code.
        unsafe { sigaction(signal, &ignore) }?;
    }
    WRITE_END.store(-1, Ordering::Relaxed);
    Ok(())
}
