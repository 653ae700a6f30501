//! Running a firewall tool (`ipfw`, `pfctl`, `sysctl`) with an argv vector and optional stdin.
//!
//! Owns process spawning for the exec-based backends and nothing else: no rule syntax, no
//! interpretation of the tool's output. Arguments are passed as a vector straight to
//! `execve(2)` — never through a shell — so no address or name can be re-parsed as shell
//! syntax. With `-j` on FreeBSD the child attaches to the jail between fork and exec, as
//! jexec(8) does, so the tool acts on the jail's vnet (see `crate::jail` for why the
//! daemon itself stays on the host). Free of `cfg` gates: the same code runs the real
//! tools on FreeBSD and the fake tools (small shell scripts) in the Linux tests.

use std::ffi::OsStr;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use super::ErrorKind;

/// One command to run: the tool and its arguments, exactly as they go to `execve(2)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    /// Absolute path of the tool, e.g. `/sbin/ipfw`.
    pub program: PathBuf,
    /// The arguments after the program name.
    pub args: Vec<String>,
    /// The jail (JID) to run it in: the child attaches before it executes `program`,
    /// which is then the jail's own (`-j`).
    pub jail: Option<i32>,
}

impl Cmd {
    /// A command running `program` with `args`.
    pub fn new<I, S>(program: impl Into<PathBuf>, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Cmd {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            jail: None,
        }
    }

    /// The same command, run inside jail `jail` (or here, for `None`).
    #[must_use]
    pub fn in_jail(mut self, jail: Option<i32>) -> Cmd {
        self.jail = jail;
        self
    }
}

/// Prints the command as an operator would type it (for log lines and error messages only;
/// it is never executed in this form).
impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(jid) = self.jail {
            write!(f, "jexec {jid} ")?;
        }
        write!(f, "{}", self.program.display())?;
        for arg in &self.args {
            write!(f, " {arg}")?;
        }
        Ok(())
    }
}

/// What a finished tool left behind.
#[derive(Debug, Clone)]
pub struct Output {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it wrote to stdout, lossily decoded.
    pub stdout: String,
    /// Everything it wrote to stderr, lossily decoded.
    pub stderr: String,
}

impl Output {
    /// Whether the tool exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// A one-line description of a failure, for [`ErrorKind::Refused`]: the tool's stderr
    /// (trimmed, or stdout when stderr is empty) and the exit status.
    pub fn failure_detail(&self) -> String {
        let text = match self.stderr.trim() {
            "" => self.stdout.trim(),
            err => err,
        };
        let text = text.replace('\n', "; ");
        if text.is_empty() {
            format!("{}", self.status)
        } else {
            format!("{text} ({})", self.status)
        }
    }
}

/// Runs `cmd` to completion, feeding it `stdin` (or an empty stdin), and captures its
/// output.
///
/// # Errors
/// [`ErrorKind::Io`] when the tool cannot be started or its pipes fail. A tool that runs
/// and exits non-zero is *not* an error here: the caller reads [`Output::status`], because
/// some non-zero exits are expected answers (`ipfw list` of an empty range).
pub fn run(cmd: &Cmd, stdin: Option<&[u8]>) -> Result<Output, ErrorKind> {
    let io_err = |what: &str, source: io::Error| ErrorKind::Io {
        context: format!("{what} `{cmd}`"),
        source,
    };
    let mut command = Command::new(&cmd.program);
    command
        .args(cmd.args.iter().map(OsStr::new))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // The tools print messages we parse; keep them in the C locale.
        .env("LC_ALL", "C");
    if let Some(jid) = cmd.jail {
        // SAFETY: the closure makes one syscall (jail_attach) and allocates nothing,
        // which is what may run between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
                crate::jail::attach_in_child(jid)
            });
        }
    }
    let mut child = spawn(&mut command).map_err(|e| io_err("start", e))?;

    // Write stdin from a second thread so a tool that answers before reading all of its
    // input cannot deadlock us on a full pipe.
    let output = std::thread::scope(|scope| {
        let writer = match (stdin, child.stdin.take()) {
            (Some(bytes), Some(mut pipe)) => Some(scope.spawn(move || -> io::Result<()> {
                match pipe.write_all(bytes) {
                    // The tool may exit without reading everything (e.g. a syntax error on
                    // line 1); its exit status tells the story, not our EPIPE.
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
                    other => other,
                }
                // `pipe` drops here: the tool sees end of input.
            })),
            _ => None,
        };
        let output = child.wait_with_output();
        let written = match writer {
            Some(handle) => handle
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("stdin writer panicked"))),
            None => Ok(()),
        };
        written.and(output)
    })
    .map_err(|e| io_err("run", e))?;

    Ok(Output {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Starts `command`, retrying briefly on ETXTBSY: the executable was open for writing at
/// that instant (a package upgrade replacing the tool, or, in tests, another thread forking
/// while a fake tool was being written). Any other error is returned at once.
fn spawn(command: &mut Command) -> io::Result<std::process::Child> {
    const ETXTBSY_RETRIES: u32 = 5;
    let mut attempt = 0;
    loop {
        match command.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < ETXTBSY_RETRIES => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(5 * u64::from(attempt)));
            }
            other => return other,
        }
    }
}

/// Runs `cmd` and requires exit status 0.
///
/// # Errors
/// [`ErrorKind::Refused`] naming `what` when the tool exits non-zero, [`ErrorKind::Io`]
/// when it cannot be run.
pub fn run_ok(cmd: &Cmd, stdin: Option<&[u8]>, what: &str) -> Result<Output, ErrorKind> {
    let output = run(cmd, stdin)?;
    if output.success() {
        Ok(output)
    } else {
        Err(ErrorKind::Refused {
            what: what.to_owned(),
            detail: output.failure_detail(),
        })
    }
}

/// Reads one sysctl value as text with `sysctl -n NAME`.
///
/// Returns `Ok(None)` when the tool reports the name as unknown (the kernel module that
/// provides it is not loaded).
///
/// # Errors
/// [`ErrorKind::Io`] when `sysctl` cannot be run.
pub fn sysctl_value(
    sysctl: &Path,
    jail: Option<i32>,
    name: &str,
) -> Result<Option<String>, ErrorKind> {
    let output = run(&Cmd::new(sysctl, ["-n", name]).in_jail(jail), None)?;
    if output.success() {
        Ok(Some(output.stdout.trim().to_owned()))
    } else {
        Ok(None)
    }
}

/// Helpers for tests of the exec-based backends: a fake tool in a private temporary
/// directory that logs its argv and stdin and prints canned answers.
#[cfg(test)]
pub(crate) mod fake {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A private directory under the system temp dir, removed on drop.
    pub(crate) struct TempDir(pub(crate) PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> TempDir {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("ftp6proxy-test-{tag}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("create test temp dir");
            TempDir(dir)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }

        /// Writes an executable shell script `name` with `body` and returns its path.
        pub(crate) fn script(&self, name: &str, body: &str) -> PathBuf {
            let path = self.0.join(name);
            fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write fake tool");
            let mut perms = fs::metadata(&path).expect("stat fake tool").permissions();
            perms.set_mode(0o755);
            fs::set_permissions(&path, perms).expect("chmod fake tool");
            path
        }

        /// The lines a fake tool appended to `file` in this directory (empty if none).
        pub(crate) fn lines(&self, file: &str) -> Vec<String> {
            fs::read_to_string(self.0.join(file))
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::TempDir;
    use super::*;

    #[test]
    fn argv_is_passed_verbatim_without_a_shell() {
        let dir = TempDir::new("exec-argv");
        let tool = dir.script("tool", r#"for a in "$@"; do printf '%s\n' "$a"; done"#);
        let out = run(&Cmd::new(&tool, ["a b", "$(id)", "'x'", "//"]), None).unwrap();
        assert!(out.success());
        assert_eq!(out.stdout, "a b\n$(id)\n'x'\n//\n");
    }

    #[test]
    fn stdin_is_fed_and_closed() {
        let out = run(
            &Cmd::new("/bin/cat", Vec::<String>::new()),
            Some(b"pass quick\n"),
        )
        .unwrap();
        assert_eq!(out.stdout, "pass quick\n");
    }

    #[test]
    fn large_stdin_does_not_deadlock() {
        let big = vec![b'x'; 1 << 20];
        let out = run(&Cmd::new("/bin/cat", Vec::<String>::new()), Some(&big)).unwrap();
        assert_eq!(out.stdout.len(), big.len());
    }

    #[test]
    fn tool_exiting_without_reading_stdin_is_not_an_io_error() {
        let big = vec![b'x'; 1 << 20];
        let out = run(
            &Cmd::new("/bin/sh", ["-c", "echo nope >&2; exit 3"]),
            Some(&big),
        )
        .unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.failure_detail(), "nope (exit status: 3)");
    }

    #[test]
    fn run_ok_reports_refusal_with_stderr() {
        let err = run_ok(
            &Cmd::new("/bin/sh", ["-c", "echo 'line 1: syntax error' >&2; exit 1"]),
            None,
            "load anchor",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "load anchor: line 1: syntax error (exit status: 1)"
        );
    }

    #[test]
    fn missing_tool_is_an_io_error_naming_the_command() {
        let err = run(&Cmd::new("/nonexistent/ipfw", ["list"]), None).unwrap_err();
        assert!(matches!(err, super::ErrorKind::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/ipfw list"), "{err}");
    }

    #[test]
    fn sysctl_value_trims_and_reports_unknown_names() {
        let dir = TempDir::new("exec-sysctl");
        let sysctl = dir.script(
            "sysctl",
            r#"case "$2" in known) echo ' 1 ';; *) echo "sysctl: unknown oid '$2'" >&2; exit 1;; esac"#,
        );
        assert_eq!(
            sysctl_value(&sysctl, None, "known").unwrap().as_deref(),
            Some("1")
        );
        assert_eq!(sysctl_value(&sysctl, None, "other").unwrap(), None);
    }

    #[test]
    fn display_shows_the_command_line() {
        let cmd = Cmd::new("/sbin/ipfw", ["-q", "delete", "64003"]);
        assert_eq!(cmd.to_string(), "/sbin/ipfw -q delete 64003");
    }

    /// With `-j` every tool run attaches to the jail before it executes, as jexec(8)
    /// does; where jail_attach(2) fails the tool never runs and the error says why.
    #[test]
    fn a_tool_for_a_jail_attaches_before_it_runs() {
        let cmd = Cmd::new("/bin/echo", ["list"]).in_jail(Some(3));
        assert_eq!(cmd.to_string(), "jexec 3 /bin/echo list");
        let err = run(&cmd, None).unwrap_err();
        assert!(matches!(err, super::ErrorKind::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("jexec 3 /bin/echo list"), "{err}");
    }
}
