//! `-j target`: do the daemon's network work in another network stack — a vnet jail on
//! FreeBSD, a network namespace on Linux — while the daemon itself stays on the host.
//!
//! Owns the parsing of the `-j` value (pure, every platform), its resolution to a
//! [`Target`], and the few ways anything enters it: a socket made in the target
//! ([`socket_from_child`] on FreeBSD, [`Target::within`] on Linux) and, on FreeBSD, a
//! firewall tool that attaches to the jail between fork and exec ([`attach_in_child`]).
//! Must not touch anything else of the process (no chroot, no privilege drop).
//!
//! Why the daemon never attaches itself (FreeBSD; ARCHITECTURE.md, "-j"):
//! - rc.subr finds a daemon only at JID 0: `_find_processes` (libexec/rc/rc.subr) keeps a
//!   pid only if `ps -o jid` equals `$JID` (0), and for a process attached to a jail the
//!   host reads that jail's id (sys/kern/kern_proc.c: `kp->ki_jid =
//!   cred->cr_prison->pr_id` when the reader is in another prison). An attached monitor
//!   would make `status`, `stop`, `restart` and shutdown's `faststop` miss it.
//! - jail_attach(2) also changes the root (sys/kern/kern_jail.c `do_jail_attach` →
//!   `pwd_chroot_chdir(td, pr->pr_root)`): the pidfile, /var/run/log, `-u` and `-r` would
//!   all be the jail's.
//! - None of that is needed: a socket keeps the vnet it was made in. `socreate` takes it
//!   from the creator's credential (`soalloc(CRED_TO_VNET(cred))`), and `sobind`,
//!   `sousrsend`, `soreceive`, `sosetopt` run under `CURVNET_SET(so->so_vnet)`
//!   (sys/kern/uipc_socket.c); divert binds into and looks up the per-vnet `V_divhash`
//!   (sys/netinet/ip_divert.c `div_bind`, `divert_packet`). So a divert socket made by a
//!   short-lived child inside the jail, and handed back, diverts and reinjects in the
//!   jail's vnet for whoever holds it.
//! - ipfw(8), pfctl(8) and sysctl(8) act on the vnet of the process that runs them, so each
//!   run attaches first, as jexec(8) does, and executes the jail's own tool: the one the
//!   jail's rc.d/ipfw and rc.d/pf load its ruleset with. The host's tool cannot be used
//!   instead: FreeBSD's tools are dynamically linked, and their run-time linker and
//!   libraries are looked up from the process root, which is the jail's after the attach
//!   (sys/kern/imgact_elf.c `load_file`: namei from the root); the one way to point the
//!   linker at the host's libraries, LD_LIBRARY_PATH_FDS directory descriptors, cannot
//!   cross jail_attach(2), which refuses a process holding an open directory
//!   (sys/kern/kern_descrip.c `pwd_chroot_chdir` → `chroot_refuse_vdir_fds`: EPERM).
//!
//! On FreeBSD the jail must own its vnet (`vnet` parameter = `new`): only then does it
//! have its own ipfw, pf and divert port space, and only then may its root use them
//! (research/freebsd.md §4). A jail sharing the host's stack is refused with a clear error
//! rather than silently filtering the host.

use std::fmt;

/// Longest jail name we accept (the kernel's MAXHOSTNAMELEN-sized limit is 256 with the
/// NUL; hierarchical names `parent.child` included).
const NAME_MAX: usize = 255;

/// Why `-j` could not be honoured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Occurs when the `-j` value is neither a positive JID nor a plausible name.
    #[error("-j {input:?}: {reason}")]
    InvalidTarget {
        /// The value given.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Occurs when no running jail has that JID or name (check `jls`).
    #[error("jail {0} does not exist (see `jls`)")]
    NoSuchJail(JailTarget),
    /// Occurs when the jail shares the host's network stack: it has no ipfw/pf/divert of
    /// its own.
    #[error(
        "jail {0} has no vnet of its own (vnet={1}); ftp6proxy needs a vnet jail \
         (`vnet;` in jail.conf) to get its own ipfw, pf and divert sockets"
    )]
    NotVnet(JailTarget, String),
    /// Occurs when attaching to the jail or reading its parameters failed.
    #[error("jail {target}: {detail}")]
    Attach {
        /// The jail.
        target: JailTarget,
        /// The system's answer.
        detail: String,
    },
    /// Occurs when the Linux network namespace cannot be opened or entered.
    #[error("network namespace {name:?}: {detail}")]
    Netns {
        /// The namespace name (`ip netns list`).
        name: String,
        /// What failed.
        detail: String,
    },
}

/// A `-j` value: a jail ID or a jail name (on Linux: a network namespace name).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JailTarget {
    /// A JID, as `jls` prints it (always > 0; 0 is the host).
    Jid(i32),
    /// A jail name (`jail.conf` block name), or a Linux netns name.
    Name(String),
}

impl JailTarget {
    /// Parses `-j`: all digits = a JID (1..=i32::MAX), otherwise a name of letters, digits,
    /// `_ - .` (dots separate hierarchical jail names), not starting with `-` or `.`, not
    /// ending with `.`, without `..`, at most 255 bytes.
    ///
    /// # Errors
    /// [`Error::InvalidTarget`] with the reason.
    pub fn parse(input: &str) -> Result<JailTarget, Error> {
        let invalid = |reason| Error::InvalidTarget {
            input: input.escape_debug().to_string(),
            reason,
        };
        if input.is_empty() {
            return Err(invalid("empty"));
        }
        if input.bytes().all(|b| b.is_ascii_digit()) {
            return match input.parse::<i32>() {
                Ok(0) => Err(invalid("JID 0 is the host itself")),
                Ok(jid) => Ok(JailTarget::Jid(jid)),
                Err(_) => Err(invalid("JID out of range")),
            };
        }
        if input.len() > NAME_MAX {
            return Err(invalid("name longer than 255 bytes"));
        }
        if !input
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(invalid(
                "a name may contain only letters, digits, _ - and .",
            ));
        }
        if input.starts_with(['-', '.']) || input.ends_with('.') || input.contains("..") {
            return Err(invalid(
                "a name may not start with - or ., end with . or contain ..",
            ));
        }
        Ok(JailTarget::Name(input.to_owned()))
    }
}

/// `17` or `www6`, as given.
impl fmt::Display for JailTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JailTarget::Jid(jid) => jid.fmt(f),
            JailTarget::Name(name) => f.write_str(name),
        }
    }
}

/// Whether a jail's `vnet` parameter value means "its own vnet" (JAIL_SYS_NEW = 1;
/// `inherit` = 2, `disable` = 0).
pub fn vnet_is_own(value: i64) -> bool {
    value == 1
}

/// A resolved `-j`: where the daemon's sockets and firewall tools do their work.
#[derive(Debug)]
pub struct Target {
    /// The `-j` value, for messages.
    shown: JailTarget,
    /// The jail's id, found by name or checked by number (FreeBSD).
    #[cfg(target_os = "freebsd")]
    jid: i32,
    /// The namespace, open (Linux).
    #[cfg(target_os = "linux")]
    netns: std::fs::File,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shown.fmt(f)
    }
}

/// Finds the vnet jail `target` (by name or JID) and checks that it owns its vnet. Does
/// not attach: see the module docs.
///
/// # Errors
/// [`Error::NoSuchJail`], [`Error::NotVnet`], or [`Error::Attach`] (kernel without
/// VIMAGE, ...).
#[cfg(target_os = "freebsd")]
pub fn resolve(target: &JailTarget) -> Result<Target, Error> {
    use ::jail::param::Value;
    use ::jail::RunningJail;

    let running = match target {
        JailTarget::Jid(jid) => RunningJail::from_jid(*jid),
        JailTarget::Name(name) => RunningJail::from_name(name).ok(),
    }
    .ok_or_else(|| Error::NoSuchJail(target.clone()))?;

    let vnet = running.param("vnet").map_err(|e| Error::Attach {
        target: target.clone(),
        detail: format!("cannot read its vnet parameter (kernel without VIMAGE?): {e}"),
    })?;
    let value = match vnet {
        Value::Int(v) => Some(i64::from(v)),
        Value::Uint(v) => Some(i64::from(v)),
        Value::S32(v) => Some(i64::from(v)),
        Value::U32(v) => Some(i64::from(v)),
        _ => None,
    };
    if !value.is_some_and(vnet_is_own) {
        let shown = value.map_or_else(|| format!("{vnet:?}"), |v| v.to_string());
        return Err(Error::NotVnet(target.clone(), shown));
    }
    Ok(Target {
        shown: target.clone(),
        jid: running.jid,
    })
}

#[cfg(target_os = "freebsd")]
impl Target {
    /// The jail's id, for [`attach_in_child`].
    pub fn jid(&self) -> i32 {
        self.jid
    }
}

/// Opens the network namespace `-j NAME` (as `ip netns` names it) for [`Target::within`].
///
/// # Errors
/// [`Error::InvalidTarget`] for a name that is not a single path component,
/// [`Error::Netns`] when it does not exist.
#[cfg(target_os = "linux")]
pub fn resolve(target: &JailTarget) -> Result<Target, Error> {
    let name = target.to_string();
    let path = netns_path(&name)?;
    let netns = std::fs::File::open(&path).map_err(|e| Error::Netns {
        name: name.clone(),
        detail: if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "{} does not exist (see `ip netns list`; create it with `ip netns add {name}`)",
                path.display()
            )
        } else {
            format!("open {}: {e}", path.display())
        },
    })?;
    Ok(Target {
        shown: target.clone(),
        netns,
    })
}

#[cfg(target_os = "linux")]
impl Target {
    /// Runs `make` with the calling thread in the namespace, then brings the thread back.
    /// Sockets made by `make` keep the namespace (Linux ties a socket to the network
    /// namespace of its creation), so the daemon uses them from the host, as it uses the
    /// jail's divert socket on FreeBSD. Call it while the process has one thread:
    /// setns(2) moves only the calling thread.
    ///
    /// # Errors
    /// [`Error::Netns`] when the namespace cannot be entered or left; leaving failed means
    /// the thread is stranded in the target, and the daemon must stop.
    pub fn within<T>(&self, make: impl FnOnce() -> T) -> Result<T, Error> {
        use nix::sched::{setns, CloneFlags};

        let fail = |what: &str, e: &dyn fmt::Display| Error::Netns {
            name: self.shown.to_string(),
            detail: format!("{what}: {e}"),
        };
        let home = std::fs::File::open("/proc/thread-self/ns/net")
            .map_err(|e| fail("open /proc/thread-self/ns/net", &e))?;
        setns(&self.netns, CloneFlags::CLONE_NEWNET).map_err(|e| fail("setns", &e))?;
        let made = make();
        setns(&home, CloneFlags::CLONE_NEWNET).map_err(|e| fail("setns back to the host", &e))?;
        Ok(made)
    }
}

/// In a child between fork and exec: attaches the process to jail `jid` (FreeBSD's
/// jail_attach(2), as jexec(8) does), so the tool it executes acts on the jail's vnet.
/// Only a syscall: safe between fork and exec.
///
/// # Errors
/// The system's error (EPERM when not root or when a directory is open, EINVAL for a
/// dying jail); `Unsupported` elsewhere than FreeBSD.
pub fn attach_in_child(jid: i32) -> std::io::Result<()> {
    #[cfg(target_os = "freebsd")]
    {
        // SAFETY: jail_attach takes a plain integer and touches no user memory.
        if unsafe { libc::jail_attach(jid) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
    #[cfg(not(target_os = "freebsd"))]
    {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!("jail_attach({jid}): jails exist only on FreeBSD"),
        ))
    }
}

/// Makes a socket in a short-lived child: the child runs `enter` (on FreeBSD
/// [`attach_in_child`]: attaching is one-way, so the daemon sends a child), then `make`,
/// and hands the descriptor back over a socketpair (`SCM_RIGHTS`); a failure comes back
/// as an error with the child's text and errno kind. Call it while the process has one
/// thread.
///
/// # Errors
/// The child's error from `enter` or `make`, or a failure to fork or to pass the socket.
pub fn socket_from_child(
    enter: impl FnOnce() -> std::io::Result<()>,
    make: impl FnOnce() -> std::io::Result<std::os::fd::OwnedFd>,
) -> std::io::Result<std::os::fd::OwnedFd> {
    use nix::sys::socket::{
        recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
        SockFlag, SockType,
    };
    use nix::sys::wait::waitpid;
    use nix::unistd::{fork, ForkResult};
    use std::io::{Error as IoError, IoSlice, IoSliceMut};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    let (parent_end, child_end) = socketpair(
        AddressFamily::Unix,
        SockType::Datagram,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    // SAFETY: the caller runs single-threaded (documented); the child only makes the
    // socket, sends one message and _exits.
    match unsafe { fork() }.map_err(IoError::from)? {
        ForkResult::Child => {
            drop(parent_end);
            let outcome = enter().and_then(|()| make());
            let sent = match &outcome {
                Ok(socket) => {
                    let fds = [socket.as_raw_fd()];
                    sendmsg::<()>(
                        child_end.as_raw_fd(),
                        &[IoSlice::new(&[0u8])],
                        &[ControlMessage::ScmRights(&fds)],
                        MsgFlags::empty(),
                        None,
                    )
                }
                Err(e) => {
                    let mut report = vec![1u8];
                    report.extend_from_slice(&e.raw_os_error().unwrap_or(0).to_be_bytes());
                    report.extend_from_slice(e.to_string().as_bytes());
                    report.truncate(1024);
                    sendmsg::<()>(
                        child_end.as_raw_fd(),
                        &[IoSlice::new(&report)],
                        &[],
                        MsgFlags::empty(),
                        None,
                    )
                }
            };
            // SAFETY: _exit ends the child without running the parent's destructors.
            unsafe { libc::_exit(i32::from(sent.is_err())) }
        }
        ForkResult::Parent { child } => {
            drop(child_end);
            let mut report = [0u8; 1024];
            let mut iov = [IoSliceMut::new(&mut report)];
            let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
            let received = recvmsg::<()>(
                parent_end.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            );
            let _ = waitpid(child, None);
            let message = received.map_err(IoError::from)?;
            let len = message.bytes;
            let mut socket = None;
            for cmsg in message.cmsgs().map_err(IoError::from)? {
                if let ControlMessageOwned::ScmRights(fds) = cmsg {
                    for fd in fds {
                        // SAFETY: the kernel just installed fd in this process for us.
                        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                        socket.get_or_insert(owned);
                    }
                }
            }
            if let Some(socket) = socket {
                return Ok(socket);
            }
            match report[..len] {
                [1, a, b, c, d, ref text @ ..] => {
                    let text = String::from_utf8_lossy(text).into_owned();
                    let errno = i32::from_be_bytes([a, b, c, d]);
                    let kind = if errno == 0 {
                        std::io::ErrorKind::Other
                    } else {
                        IoError::from_raw_os_error(errno).kind()
                    };
                    Err(IoError::new(kind, text))
                }
                _ => Err(IoError::other(
                    "the child making the socket ended without an answer",
                )),
            }
        }
    }
}

/// `/run/netns/NAME`, after checking that `name` is a valid `-j` name (no `/`, no `..`).
///
/// # Errors
/// [`Error::InvalidTarget`].
pub fn netns_path(name: &str) -> Result<std::path::PathBuf, Error> {
    // Same character rules as a jail name. A netns may well be called "1": then the digits
    // are its name, not a JID, so the path uses the input as given.
    JailTarget::parse(name)?;
    Ok(std::path::Path::new("/run/netns").join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! target_ok {
        ($($name:ident: $input:expr => $want:expr;)*) => {$(
            #[test]
            fn $name() {
                assert_eq!(JailTarget::parse($input).unwrap(), $want);
            }
        )*};
    }

    macro_rules! target_err {
        ($($name:ident: $input:expr;)*) => {$(
            #[test]
            fn $name() {
                let err = JailTarget::parse($input).unwrap_err();
                assert!(matches!(err, Error::InvalidTarget { .. }), "{err:?}");
            }
        )*};
    }

    target_ok! {
        jid_small: "1" => JailTarget::Jid(1);
        jid_leading_zero: "017" => JailTarget::Jid(17);
        jid_max: "2147483647" => JailTarget::Jid(i32::MAX);
        name_simple: "www6" => JailTarget::Name("www6".into());
        name_hierarchical: "gw.ftp" => JailTarget::Name("gw.ftp".into());
        name_with_dash_underscore: "ftp_gw-1" => JailTarget::Name("ftp_gw-1".into());
        name_starting_with_digit: "6gw" => JailTarget::Name("6gw".into());
    }

    target_err! {
        err_empty: "";
        err_jid_zero: "0";
        err_jid_too_large: "2147483648";
        err_negative: "-1";
        err_option_like: "-vnet";
        err_slash: "a/b";
        err_dotdot: "a..b";
        err_dot: ".";
        err_dot_start: ".hidden";
        err_dot_end: "gw.";
        err_space: "my jail";
        err_quote: "gw\"";
        err_non_ascii: "jäil";
        err_nul: "gw\0";
    }

    #[test]
    fn name_length_limit() {
        assert!(JailTarget::parse(&"j".repeat(255)).is_ok());
        assert!(JailTarget::parse(&"j".repeat(256)).is_err());
    }

    #[test]
    fn display_round_trips() {
        for input in ["17", "gw.ftp"] {
            assert_eq!(JailTarget::parse(input).unwrap().to_string(), input);
        }
    }

    #[test]
    fn vnet_values() {
        assert!(vnet_is_own(1));
        assert!(!vnet_is_own(2), "inherit = the host's stack");
        assert!(!vnet_is_own(0));
    }

    #[test]
    fn netns_paths() {
        assert_eq!(
            netns_path("blue").unwrap(),
            std::path::PathBuf::from("/run/netns/blue")
        );
        assert_eq!(
            netns_path("1").unwrap(),
            std::path::PathBuf::from("/run/netns/1")
        );
        assert!(netns_path("../../proc/1/ns/net").is_err());
        assert!(netns_path("..").is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn missing_netns_is_a_clear_error() {
        let target = JailTarget::Name("ftp6proxy-test-does-not-exist".into());
        let err = resolve(&target).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("does not exist"), "{text}");
        assert!(text.contains("ip netns add"), "{text}");
    }

    #[test]
    fn errors_read_well() {
        assert_eq!(
            Error::NoSuchJail(JailTarget::Name("www6".into())).to_string(),
            "jail www6 does not exist (see `jls`)"
        );
        assert!(Error::NotVnet(JailTarget::Jid(3), "2".into())
            .to_string()
            .contains("`vnet;` in jail.conf"));
    }
    /// FreeBSD keeps a socket in the vnet of its creation (sys/kern/uipc_socket.c
    /// `socreate`: `soalloc(CRED_TO_VNET(cred))`): so the socket a child makes inside the
    /// jail is the one the daemon gets. Here: a socket made in a child comes back whole.
    #[test]
    fn a_socket_made_in_a_child_comes_back_working() {
        use std::io::{Read, Write};
        use std::os::fd::OwnedFd;
        let (mine, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let theirs = OwnedFd::from(theirs);
        let got = socket_from_child(|| Ok(()), move || theirs.try_clone()).unwrap();
        let mut got = std::os::unix::net::UnixStream::from(got);
        got.write_all(b"divert").unwrap();
        let mut buf = [0u8; 6];
        (&mine).read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"divert");
    }

    /// A child that cannot enter the target (FreeBSD: jail_attach refused) or cannot make
    /// the socket reports the reason, with its errno kind and text, to the daemon.
    #[test]
    fn a_childs_failure_comes_back_with_its_reason() {
        let err = socket_from_child(
            || Err(std::io::Error::from_raw_os_error(libc::EPERM)),
            || unreachable!("not reached after a failed enter"),
        )
        .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
        let err = socket_from_child(
            || Ok(()),
            || {
                Err(std::io::Error::other(
                    "divert(4) is not available: run `kldload ipdivert`",
                ))
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("kldload ipdivert"), "{err}");
    }

    #[cfg(not(target_os = "freebsd"))]
    #[test]
    fn jail_attach_exists_only_on_freebsd() {
        assert_eq!(
            attach_in_child(1).unwrap_err().kind(),
            std::io::ErrorKind::Unsupported
        );
    }

    /// Linux ties a socket to the namespace it was made in; `within` makes it there and
    /// brings the thread back.
    #[cfg(target_os = "linux")]
    #[test]
    fn within_makes_sockets_in_the_namespace_and_comes_back() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root (it makes a network namespace); run `cargo test` as root"
        );
        let ns_of = |path: &str| std::fs::read_link(path).unwrap();
        // A thread of its own unshares a fresh namespace and lends it as the target.
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let lender = std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            tx.send(std::fs::File::open("/proc/thread-self/ns/net").unwrap())
                .unwrap();
            done_rx.recv().unwrap();
        });
        let netns = rx.recv().unwrap();
        let target = Target {
            shown: JailTarget::Name("test".into()),
            netns,
        };
        let home = ns_of("/proc/thread-self/ns/net");
        let inside = target.within(|| ns_of("/proc/thread-self/ns/net")).unwrap();
        assert_ne!(inside, home, "the closure ran in the target");
        assert_eq!(
            ns_of("/proc/thread-self/ns/net"),
            home,
            "and the thread came back"
        );
        done_tx.send(()).unwrap();
        lender.join().unwrap();
    }
}
