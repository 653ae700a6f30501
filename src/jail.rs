//! `-j target`: run inside another network stack — a vnet jail on FreeBSD, a network
//! namespace on Linux.
//!
//! Owns the parsing of the `-j` value (pure, every platform) and the one syscall that moves
//! the process: `jail_attach(2)` via the `jail` crate on FreeBSD, `setns(2)` with
//! `CLONE_NEWNET` on Linux. Must not touch anything else of the process (no chroot, no
//! privilege drop: `daemon` does those after this). Call it first, before the intercept
//! socket is opened and before any firewall tool runs, so that both belong to the target's
//! network stack.
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

/// Attaches the calling process to the jail `target` after checking that it exists and
/// owns its vnet.
///
/// # Errors
/// [`Error::NoSuchJail`], [`Error::NotVnet`], or [`Error::Attach`] (not root, kernel
/// without VIMAGE, ...).
#[cfg(target_os = "freebsd")]
pub fn attach(target: &JailTarget) -> Result<(), Error> {
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

    running.attach().map_err(|e| Error::Attach {
        target: target.clone(),
        detail: format!("jail_attach failed: {e}"),
    })
}

/// Moves the calling thread into the Linux network namespace `name` (as created by
/// `ip netns add NAME`, bound at `/run/netns/NAME`). Call it before any other thread is
/// started: `setns(2)` changes only the calling thread, and sockets opened afterwards
/// belong to the new namespace.
///
/// # Errors
/// [`Error::InvalidTarget`] for a name that is not a single path component,
/// [`Error::Netns`] when it does not exist or cannot be entered (not root).
#[cfg(target_os = "linux")]
pub fn enter_netns(name: &str) -> Result<(), Error> {
    use nix::sched::{setns, CloneFlags};

    let path = netns_path(name)?;
    let file = std::fs::File::open(&path).map_err(|e| Error::Netns {
        name: name.to_owned(),
        detail: if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "{} does not exist (see `ip netns list`; create it with `ip netns add {name}`)",
                path.display()
            )
        } else {
            format!("open {}: {e}", path.display())
        },
    })?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| Error::Netns {
        name: name.to_owned(),
        detail: format!("setns: {e}"),
    })
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
        let err = enter_netns("ftp6proxy-test-does-not-exist").unwrap_err();
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
}
