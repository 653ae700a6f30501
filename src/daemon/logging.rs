//! Log output: syslog(3) when detached, stderr in the foreground with `-d -d`.
//!
//! Owns the one `log` backend of each process. Uses the C library's syslog(3) (which
//! keeps its socket across chroot and reconnects after a syslogd restart on both FreeBSD
//! and glibc) rather than a socket of our own. Formats nothing but the level prefix: the
//! core's events already are one line each, with untrusted text escaped.

use std::ffi::CString;
use std::io::Write;

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
        match self.sink {
            Sink::Stderr => {
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "ftp6proxy[{}]: {}: {}",
                    std::process::id(),
                    record.level().as_str().to_ascii_lowercase(),
                    text
                );
            }
            Sink::Syslog => {
                // Interior NULs cannot come from the core (it escapes), but never panic.
                let line = CString::new(text.replace('\0', "\\0")).unwrap_or_default();
                // SAFETY: both pointers are valid NUL-terminated strings; "%s" consumes
                // exactly one string argument.
                unsafe {
                    libc::syslog(priority(record.level()), c"%s".as_ptr(), line.as_ptr());
                }
            }
        }
    }

    fn flush(&self) {}
}

static FACILITY: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(libc::LOG_DAEMON);

fn open_syslog() {
    let facility = FACILITY.load(std::sync::atomic::Ordering::Relaxed);
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
    FACILITY.store(facility.code, std::sync::atomic::Ordering::Relaxed);
    if sink == Sink::Syslog {
        open_syslog();
    }
    // A second init (tests) keeps the first logger.
    if log::set_boxed_logger(Box::new(Logger { sink })).is_ok() {
        log::set_max_level(level);
    }
}

/// SIGHUP: reconnect to syslogd (a no-op for stderr).
pub fn reopen() {
    // SAFETY: closelog/openlog have no preconditions.
    unsafe { libc::closelog() };
    open_syslog();
}
