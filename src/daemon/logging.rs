//! Log output: syslog(3) when detached, stderr in the foreground with `-d -d` — written by
//! the monitor alone; the worker and the parser forward their lines to it.
//!
//! Owns the one `log` backend of each process and the log link's message format. The
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

/// Which process a line comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Process {
    /// The privileged monitor (writes its own lines).
    Monitor = 0,
    /// The unprivileged packet mover.
    Worker = 1,
    /// The sandboxed engine.
    Parser = 2,
}

impl Process {
    fn name(self) -> &'static str {
        match self {
            Process::Monitor => "monitor",
            Process::Worker => "worker",
            Process::Parser => "parser",
        }
    }

    fn from_byte(byte: u8) -> Option<Process> {
        match byte {
            0 => Some(Process::Monitor),
            1 => Some(Process::Worker),
            2 => Some(Process::Parser),
            _ => None,
        }
    }
}

/// Longest text forwarded on the log link; longer lines are cut (and say so).
pub const MAX_FORWARDED: usize = 2048;

/// The log link's descriptor in a forwarding process (-1: write locally).
static FORWARD_FD: AtomicI32 = AtomicI32::new(-1);
/// The forwarding process's [`Process`] byte.
static FORWARD_AS: AtomicU8 = AtomicU8::new(Process::Monitor as u8);
/// Lines a forwarding process could not send (the monitor's buffer was full).
static FORWARD_DROPPED: AtomicU64 = AtomicU64::new(0);

fn level_byte(level: Level) -> u8 {
    match level {
        Level::Error => 1,
        Level::Warn => 2,
        Level::Info => 3,
        Level::Debug => 4,
        Level::Trace => 5,
    }
}

fn level_from_byte(byte: u8) -> Option<Level> {
    match byte {
        1 => Some(Level::Error),
        2 => Some(Level::Warn),
        3 => Some(Level::Info),
        4 => Some(Level::Debug),
        5 => Some(Level::Trace),
        _ => None,
    }
}

/// One forwarded line: `[level][process][text...]`, the text cut at [`MAX_FORWARDED`].
pub fn encode_forwarded(level: Level, process: Process, text: &str) -> Vec<u8> {
    let mut cut = text.len().min(MAX_FORWARDED);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = Vec::with_capacity(2 + cut);
    out.push(level_byte(level));
    out.push(process as u8);
    out.extend_from_slice(&text.as_bytes()[..cut]);
    out
}

/// A forwarded line as the monitor will write it, or `None` for a datagram that is not
/// one (a compromised parser may send anything: the text is bounded, control characters
/// are escaped, and a wrong level or process byte drops it).
pub fn decode_forwarded(bytes: &[u8]) -> Option<(Level, Process, String)> {
    let (&level, rest) = bytes.split_first()?;
    let (&process, text) = rest.split_first()?;
    let level = level_from_byte(level)?;
    let process = Process::from_byte(process).filter(|p| *p != Process::Monitor)?;
    let text = String::from_utf8_lossy(&text[..text.len().min(MAX_FORWARDED)]);
    Some((level, process, text.escape_debug().to_string()))
}

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
            let process =
                Process::from_byte(FORWARD_AS.load(Ordering::Relaxed)).unwrap_or(Process::Worker);
            let message = encode_forwarded(record.level(), process, &text);
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
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "ftp6proxy[{}]: {}{}: {}",
                    std::process::id(),
                    prefix,
                    level.as_str().to_ascii_lowercase(),
                    text
                );
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
/// `-d -d` logs everything down to debug on stderr; otherwise info and above go to syslog.
pub fn init(foreground: Foreground, facility: Facility) {
    let (sink, level) = match foreground {
        Foreground::Debug => (Sink::Stderr, LevelFilter::Debug),
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

/// In a child that inherited a forwarding parent's link (the parser, forked by the
/// worker): the same link, its own tag.
pub fn forward_as(process: Process) {
    FORWARD_AS.store(process as u8, Ordering::Relaxed);
}

/// Lines this process could not forward because the monitor's buffer was full.
pub fn forward_dropped() -> u64 {
    FORWARD_DROPPED.load(Ordering::Relaxed)
}

/// In the monitor: writes one datagram read from the log link, prefixed with the process
/// it came from. A datagram that is not a log line is ignored.
pub fn write_forwarded(bytes: &[u8]) {
    let Some((level, process, text)) = decode_forwarded(bytes) else {
        return;
    };
    if level > log::max_level() {
        return;
    }
    if let Some(&sink) = SINK.get() {
        Logger { sink }.write(level, Some(process), &text);
    }
}

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
    fn forwarded_lines_round_trip_with_level_and_process() {
        let bytes = encode_forwarded(
            Level::Warn,
            Process::Parser,
            "refused PORT from 2001:db8::1",
        );
        assert_eq!(
            decode_forwarded(&bytes),
            Some((
                Level::Warn,
                Process::Parser,
                "refused PORT from 2001:db8::1".into()
            ))
        );
    }

    #[test]
    fn forwarded_text_is_bounded_and_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_FORWARDED);
        let bytes = encode_forwarded(Level::Info, Process::Worker, &long);
        assert!(bytes.len() <= 2 + MAX_FORWARDED);
        let (_, _, text) = decode_forwarded(&bytes).unwrap();
        assert!(text.chars().all(|c| c == 'é'));
    }

    /// A compromised parser may send anything on the log link: nothing it sends can
    /// forge a second syslog line, pose as the monitor, or grow without bound.
    #[test]
    fn hostile_datagrams_are_escaped_or_dropped() {
        let mut forged = vec![3, 2];
        forged.extend_from_slice(b"ok\nftp6proxy: monitor: opened hole\0");
        let (_, _, text) = decode_forwarded(&forged).unwrap();
        assert!(!text.contains('\n') && !text.contains('\0'), "{text}");
        assert_eq!(
            decode_forwarded(&[3, 0, b'x']),
            None,
            "poses as the monitor"
        );
        assert_eq!(decode_forwarded(&[9, 1, b'x']), None, "unknown level");
        assert_eq!(decode_forwarded(&[3, 7, b'x']), None, "unknown process");
        assert_eq!(decode_forwarded(&[3]), None, "short");
        let huge = [vec![3, 1], vec![b'a'; 100_000]].concat();
        assert!(decode_forwarded(&huge).unwrap().2.len() <= MAX_FORWARDED);
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
            lines.push(decode_forwarded(&buf[..n]));
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
