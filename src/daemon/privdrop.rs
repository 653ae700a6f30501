//! Dropping privileges in the worker and the parser, in OpenBSD ftp-proxy's order: resolve the user while
//! /etc/passwd is reachable, chroot and chdir, then groups, gid and uid — any failure is
//! fatal. On Linux the worker keeps exactly one capability, CAP_NET_ADMIN, because the
//! kernel checks it on every NFQUEUE verdict (`netlink_net_capable` looks at the sending
//! task as well as the socket's opener); on FreeBSD nothing is kept.
//!
//! Owns the process credentials and nothing else.

use std::path::Path;

use anyhow::{bail, Context};
use nix::unistd::{Gid, Uid, User};

/// The uid and gid of the original tool's default: 65535 (`nobody` on old systems).
pub const DEFAULT_ID: u32 = 65535;

/// Who the worker becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// User id.
    pub uid: Uid,
    /// Primary group id (the only group kept).
    pub gid: Gid,
}

/// Resolves `-u user` (a name, or a numeric uid) or the default 65535/65535.
///
/// # Errors
/// When the user does not exist.
pub fn resolve(user: Option<&str>) -> anyhow::Result<Identity> {
    let Some(user) = user else {
        return Ok(Identity {
            uid: Uid::from_raw(DEFAULT_ID),
            gid: Gid::from_raw(DEFAULT_ID),
        });
    };
    if let Some(entry) = User::from_name(user).context("read the password database")? {
        return Ok(Identity {
            uid: entry.uid,
            gid: entry.gid,
        });
    }
    match user.parse::<u32>() {
        Ok(uid) if uid != 0 => Ok(Identity {
            uid: Uid::from_raw(uid),
            gid: Gid::from_raw(uid),
        }),
        _ => bail!("-u {user}: no such user"),
    }
}

/// What a confined process keeps of its privileges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// CAP_NET_ADMIN on Linux, for NFQUEUE verdicts (the worker); nothing on FreeBSD.
    NetAdmin,
    /// Nothing (the parser).
    Nothing,
}

/// Chroots (if asked) and becomes `identity` for good, keeping only `keep`.
///
/// # Errors
/// When any step fails; the caller exits.
pub fn drop_to(identity: &Identity, chroot: Option<&Path>, keep: Keep) -> anyhow::Result<()> {
    if identity.uid.is_root() {
        bail!("refusing to run the worker as root; use -u with an unprivileged user");
    }
    if let Some(dir) = chroot {
        nix::unistd::chroot(dir).with_context(|| format!("chroot {}", dir.display()))?;
        nix::unistd::chdir("/").context("chdir / after chroot")?;
    }
    keep_capabilities_across_setuid()?;
    nix::unistd::setgroups(&[identity.gid]).context("setgroups")?;
    nix::unistd::setresgid(identity.gid, identity.gid, identity.gid).context("setresgid")?;
    nix::unistd::setresuid(identity.uid, identity.uid, identity.uid).context("setresuid")?;
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        bail!("privileges could be regained after dropping them");
    }
    limit_capabilities(keep)?;
    Ok(())
}

#[cfg(target_os = "linux")]
mod caps {
    //! Raw capset(2): two 32-bit words per set (capability ABI version 3).
    use anyhow::{bail, Context};

    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    /// CAP_NET_ADMIN from linux/capability.h.
    pub const CAP_NET_ADMIN: u32 = 12;

    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }

    pub fn keep_across_setuid() -> anyhow::Result<()> {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error()).context("prctl(PR_SET_KEEPCAPS)");
        }
        Ok(())
    }

    /// CAP_KILL from linux/capability.h.
    pub const CAP_KILL: u32 = 5;
    /// CAP_SETGID from linux/capability.h.
    pub const CAP_SETGID: u32 = 6;
    /// CAP_SETUID from linux/capability.h.
    pub const CAP_SETUID: u32 = 7;
    /// CAP_SYS_CHROOT from linux/capability.h.
    pub const CAP_SYS_CHROOT: u32 = 18;

    /// Leaves only `caps` (all below 32), and forbids gaining anything through exec.
    pub fn limit(caps: &[u32]) -> anyhow::Result<()> {
        let header = Header {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let mut data = [Data::default(); 2];
        let mask = caps.iter().fold(0u32, |mask, cap| mask | 1 << cap);
        data[0].effective = mask;
        data[0].permitted = mask;
        // SAFETY: header and data match the kernel's v3 layout (two Data structs).
        let rc = unsafe { libc::syscall(libc::SYS_capset, &raw const header, data.as_ptr()) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("capset");
        }
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            bail!(
                "prctl(PR_SET_NO_NEW_PRIVS): {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }
}

#[cfg(target_os = "linux")]
fn keep_capabilities_across_setuid() -> anyhow::Result<()> {
    caps::keep_across_setuid()
}

#[cfg(target_os = "linux")]
fn limit_capabilities(keep: Keep) -> anyhow::Result<()> {
    match keep {
        Keep::NetAdmin => caps::limit(&[caps::CAP_NET_ADMIN]),
        Keep::Nothing => caps::limit(&[]),
    }
}

/// Confines the monitor on Linux with nftables: it stays uid 0 (it removes the pidfile and
/// must outlive its children) but keeps only CAP_NET_ADMIN (nftables over netlink),
/// CAP_KILL (to signal its children, which run under another uid), and what it takes to
/// start a replacement child that drops its own privileges: CAP_SETUID, CAP_SETGID and
/// CAP_SYS_CHROOT (OpenSSH's monitor keeps all of root for the same job).
///
/// # Errors
/// When capset(2) or prctl(2) fails.
#[cfg(target_os = "linux")]
pub fn confine_monitor() -> anyhow::Result<()> {
    caps::limit(&[
        caps::CAP_NET_ADMIN,
        caps::CAP_KILL,
        caps::CAP_SETUID,
        caps::CAP_SETGID,
        caps::CAP_SYS_CHROOT,
    ])
}

/// On FreeBSD the monitor runs ipfw(8) and pfctl(8), which need full root: nothing to drop.
///
/// # Errors
/// Never.
#[cfg(not(target_os = "linux"))]
pub fn confine_monitor() -> anyhow::Result<()> {
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn keep_capabilities_across_setuid() -> anyhow::Result<()> {
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn limit_capabilities(_keep: Keep) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_identity_is_65535() {
        let id = resolve(None).unwrap();
        assert_eq!((id.uid.as_raw(), id.gid.as_raw()), (65535, 65535));
    }

    #[test]
    fn numeric_user_and_unknown_user() {
        assert_eq!(resolve(Some("4242")).unwrap().uid.as_raw(), 4242);
        let error = resolve(Some("no-such-user-f6p")).unwrap_err().to_string();
        assert!(error.contains("no such user"), "{error}");
        assert!(
            resolve(Some("0")).is_err(),
            "uid 0 is never a worker identity"
        );
    }

    #[test]
    fn root_is_refused_as_worker_identity() {
        let root = Identity {
            uid: Uid::from_raw(0),
            gid: Gid::from_raw(0),
        };
        assert!(drop_to(&root, None, Keep::Nothing).is_err());
    }
}
