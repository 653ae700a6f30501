//! Log output: syslog(3) when detached, stderr in the foreground with `-d -d` — written by
//! the monitor alone; the worker and the parser forward their lines to it.
//!
//! Owns the one `log` backend of each process (the log link's format is `messages`'). The
//! monitor writes with the C library's syslog(3) (or to stderr). The worker and the
//! parser cannot: they are chrooted, the parser is in Capsicum capability mode, and libc's
//! syslog reconnects by `connect(2)` to /var/run/log (lib/libc/gen/syslog.c), which a
//! chroot does not contain and capability mode refuses (sys/kern/uipc_syscalls.c
//! `kern_connectat`: ECAPMODE for AT_FDCWD). So after a syslogd restart they would go
//! silent. Instead each sends every line as one datagram on the log link, an inherited
//! socketpair, and the monitor — unsandboxed, on the host — writes it, tagged with the
//! process (OpenSSH's `mm_log_handler`). One writer means whole lines, and a SIGHUP
//! reconnects the one process that can. Formats nothing but the level and process prefix:
//! the core's events already are one line each, with untrusted text escaped.

use std::ffi::CString;
use std::io::Write;

use std::sync::atomic::{AtomicI32, AtomicU64, AtomicU8, Ordering};

use log::{Level, LevelFilter, Log, Metadata, Record};

use super::messages::{decode_log_line, encode_log_line, Process};
use crate::cli::{Facility, Foreground};

/// Where lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    Stderr,
    Syslog,
}

struct Logger {
    sink: Sink,
}

/// The log link's descriptor in a forwarding process (-1: write locally).
static FORWARD_FD: AtomicI32 = AtomicI32::new(-1);
/// The forwarding process's [`Process`] byte.
static FORWARD_AS: AtomicU8 = AtomicU8::new(Process::Monitor as u8);
/// Lines a forwarding process could not send (the monitor's buffer was full).
static FORWARD_DROPPED: AtomicU64 = AtomicU64::new(0);

const IDENT: &std::ffi::CStr = c"ftp6proxy";

fn priority(level: Level) -> libc::c_int {
    match level {
        Level::Error => libc::LOG_ERR,
        Level::Warn => libc::LOG_WARNING,
        Level::Info => libc::LOG_INFO,
        Level::Debug | Level::Trace => libc::LOG_DEBUG,
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let text = record.args().to_string();
        let forward = FORWARD_FD.load(Ordering::Relaxed);
        if forward >= 0 {
            let process = if FORWARD_AS.load(Ordering::Relaxed) == Process::Parser as u8 {
                Process::Parser
            } else {
                Process::Worker
            };
            let message = encode_log_line(record.level(), process, &text);
            // SAFETY: `forward` is the log link, kept open for the life of this process
            // (forward_to leaks it on purpose); message is valid for its length.
            let sent = unsafe {
                libc::send(
                    forward,
                    message.as_ptr().cast(),
                    message.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if sent < 0 {
                FORWARD_DROPPED.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        self.write(record.level(), None, &text);
    }

    fn flush(&self) {}
}

impl Logger {
    /// Writes one line to this process's own sink.
    fn write(&self, level: Level, from: Option<Process>, text: &str) {
        let prefix = from.map(|p| format!("{}: ", p.name())).unwrap_or_default();
        match self.sink {
            Sink::Stderr => {
                // Formatted first and written with one write(2): stderr is unbuffered, so
                // `writeln!` on it writes each piece on its own, and anything else writing
                // to the same descriptor (a child's panic message, the rc script) could
                // land in the middle of the line.
                let line = format!(
                    "ftp6proxy[{}]: {}{}: {}\n",
                    std::process::id(),
                    prefix,
                    level.as_str().to_ascii_lowercase(),
                    text
                );
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
            Sink::Syslog => {
                // Interior NULs cannot come from the core (it escapes), but never panic.
                let line = CString::new(format!("{prefix}{text}").replace('\0', "\\0"))
                    .unwrap_or_default();
                // SAFETY: both pointers are valid NUL-terminated strings; "%s" consumes
                // exactly one string argument.
                unsafe {
                    libc::syslog(priority(level), c"%s".as_ptr(), line.as_ptr());
                }
            }
        }
    }
}

/// The installed logger's sink (set once by [`init`]).
static SINK: std::sync::OnceLock<Sink> = std::sync::OnceLock::new();

static FACILITY: AtomicI32 = AtomicI32::new(libc::LOG_DAEMON);

fn open_syslog() {
    let facility = FACILITY.load(Ordering::Relaxed);
    // SAFETY: IDENT is 'static; LOG_NDELAY connects now, before any chroot.
    unsafe { libc::openlog(IDENT.as_ptr(), libc::LOG_PID | libc::LOG_NDELAY, facility) };
}

/// Installs the logger for this process (once, before forking).
///
/// `-d -d` logs everything down to debug on stderr; otherwise info and above go to syslog —
/// except in the foreground (`-d`) when no syslog daemon listens at start: then to stderr,
/// where a service manager collects it, rather than nowhere (and rather than a failed
/// reconnection to the missing socket at every line).
pub fn init(foreground: Foreground, facility: Facility) {
    let (sink, level) = match foreground {
        Foreground::Debug => (Sink::Stderr, LevelFilter::Debug),
        Foreground::Yes if !syslog_reachable(std::path::Path::new(SYSLOG_SOCKET)) => {
            (Sink::Stderr, LevelFilter::Info)
        }
        Foreground::Yes | Foreground::No => (Sink::Syslog, LevelFilter::Info),
    };
    FACILITY.store(facility.code, Ordering::Relaxed);
    if sink == Sink::Syslog {
        open_syslog();
    }
    // A second init (tests) keeps the first logger.
    if log::set_boxed_logger(Box::new(Logger { sink })).is_ok() {
        let _ = SINK.set(sink);
        log::set_max_level(level);
    }
}

/// In a child (worker or parser): from now on every line goes to the monitor over `link`,
/// tagged `process`. The link stays open until this process exits. The inherited syslog
/// connection is closed: this process no longer needs a way to syslogd.
pub fn forward_to(link: std::os::fd::OwnedFd, process: Process) {
    use std::os::fd::IntoRawFd;
    FORWARD_AS.store(process as u8, Ordering::Relaxed);
    let previous = FORWARD_FD.swap(link.into_raw_fd(), Ordering::Relaxed);
    if previous >= 0 {
        // SAFETY: the previous link was ours alone (a second call only re-tags; tests).
        unsafe { libc::close(previous) };
    }
    // SAFETY: closelog has no preconditions.
    unsafe { libc::closelog() };
}

/// Lines this process could not forward because the monitor's buffer was full.
pub fn forward_dropped() -> u64 {
    FORWARD_DROPPED.load(Ordering::Relaxed)
}

/// In the monitor: writes one datagram read from the log link, prefixed with the process
/// it came from. A datagram that is not a log line is ignored.
pub fn write_forwarded(bytes: &[u8]) {
    let Ok((level, process, text)) = decode_log_line(bytes) else {
        return;
    };
    if level > log::max_level() {
        return;
    }
    if let Some(&sink) = SINK.get() {
        Logger { sink }.write(level, Some(process), &text);
    }
}

pub use crate::log_limit::is_power_of_ten;

/// The socket syslog(3) writes to: `/var/run/log` on FreeBSD (lib/libc/gen/syslog.c
/// `_PATH_LOG`), `/dev/log` elsewhere.
pub const SYSLOG_SOCKET: &str = if cfg!(target_os = "freebsd") {
    "/var/run/log"
} else {
    "/dev/log"
};

/// Whether a syslog daemon takes datagrams at `path` (syslog(3) itself would drop every
/// line silently when none does).
pub fn syslog_reachable(path: &std::path::Path) -> bool {
    std::os::unix::net::UnixDatagram::unbound()
        .and_then(|socket| socket.connect(path))
        .is_ok()
}

/// SIGHUP: reconnect to syslogd (a no-op for stderr).
pub fn reopen() {
    // SAFETY: closelog/openlog have no preconditions.
    unsafe { libc::closelog() };
    open_syslog();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_is_reachable_only_where_a_daemon_listens() {
        let dir = std::env::temp_dir().join(format!("f6p-syslog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        assert!(!syslog_reachable(&path), "nothing there");
        let listener = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        assert!(syslog_reachable(&path));
        drop(listener);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_forwarding_process_sends_whole_lines_to_its_link() {
        let (monitor_end, child_end) = super::super::link::datagram_pair().unwrap();
        init(
            Foreground::Debug,
            Facility {
                name: "daemon",
                code: libc::LOG_DAEMON,
            },
        );
        forward_to(child_end, Process::Worker);
        log::info!("hello from the worker");
        FORWARD_FD.store(-1, Ordering::Relaxed);
        // Other tests may log meanwhile; ours is among the lines.
        let mut lines = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = nix::sys::socket::recv(
            std::os::fd::AsRawFd::as_raw_fd(&monitor_end),
            &mut buf,
            nix::sys::socket::MsgFlags::MSG_DONTWAIT,
        ) {
            lines.push(decode_log_line(&buf[..n]).ok());
        }
        assert!(
            lines.contains(&Some((
                Level::Info,
                Process::Worker,
                "hello from the worker".into()
            ))),
            "{lines:?}"
        );
    }
}
