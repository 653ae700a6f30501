//! Linux: `-j` is a network namespace, packets come from NFQUEUE (inline) or copies from an
//! NFLOG group (copy mode), holes go into nftables.

use anyhow::Context;

use super::open_tool_firewall;
use crate::cli::{FirewallKind, Settings};
use crate::firewall::nft::Nft;
use crate::firewall::Firewall;
use crate::intercept::nflog::NfLog;
use crate::intercept::nfqueue::NfQueue;
use crate::jail::Target;

/// The intercept backend of this platform.
pub type PlatformIntercept = NfQueue;

/// The copy source of this platform (copy mode).
pub type PlatformCopy = NfLog;

/// Runs `open` in the network namespace `-j` names, or here without `-j`: the sockets it
/// makes stay in that namespace while the daemon stays on the host (see `jail`).
fn in_target<T>(target: Option<&Target>, open: impl FnOnce() -> T) -> anyhow::Result<T> {
    Ok(match target {
        Some(target) => target
            .within(open)
            .with_context(|| format!("-j {target}"))?,
        None => open(),
    })
}

/// Binds NFQUEUE `-p`, in the namespace of `-j`.
///
/// # Errors
/// When the queue cannot be bound (permission, or another process holds it).
pub fn open_intercept(settings: &Settings, target: Option<&Target>) -> anyhow::Result<NfQueue> {
    // NfQueue::open names the queue and the step that failed: no second context.
    Ok(in_target(target, || NfQueue::open(settings.port))??)
}

/// Binds NFLOG group `-p` for `--intercept nflog`, in the namespace of `-j`, while the
/// monitor still has CAP_NET_ADMIN: binding and configuring need it, receiving afterwards
/// does not (`tests/netlink_nflog.rs`), so the sandboxed parser reads what this binds.
///
/// # Errors
/// When the group cannot be bound (permission, or another process holds it), or the
/// kind is not this platform's copy kind.
pub fn open_copy_source(settings: &Settings, target: Option<&Target>) -> anyhow::Result<NfLog> {
    anyhow::ensure!(
        settings.intercept == crate::cli::InterceptKind::Nflog,
        "--intercept {}: not a copy source of Linux",
        settings.intercept.name()
    );
    // NfLog::bind names the group and the step that failed: no second context.
    Ok(in_target(target, || NfLog::bind(settings.port))??)
}

/// The firewall backend from `--firewall`, talking to the namespace of `-j`.
///
/// # Errors
/// When the backend cannot be opened.
pub fn open_firewall(
    settings: &Settings,
    target: Option<&Target>,
) -> anyhow::Result<Box<dyn Firewall>> {
    if settings.firewall == FirewallKind::Nft {
        let table = format!("{} {}", settings.nft_table.family, settings.nft_table.name);
        // Nft::open names the option or the socket step that failed: no second context.
        let nft = in_target(target, || Nft::open(&table, &settings.anchor))??;
        return Ok(Box::new(nft));
    }
    open_tool_firewall(settings, None)?.context("firewall backend")
}

/// Confines the parser with a seccomp-bpf allowlist (Capsicum's role on FreeBSD); it has
/// already dropped every capability and set no_new_privs.
///
/// # Errors
/// When the kernel refuses the filter.
pub fn sandbox() -> anyhow::Result<()> {
    super::seccomp::enter()
}

/// The NFQUEUE's drop counters (`/proc/net/netfilter/nfnetlink_queue`), opened in the
/// namespace of `-j` so the monitor on the host reads that namespace's queues.
pub fn overflow_watch(
    settings: &Settings,
    target: Option<&Target>,
) -> Option<crate::intercept::OverflowWatch> {
    let open = || std::fs::File::open("/proc/net/netfilter/nfnetlink_queue");
    match in_target(target, open) {
        Ok(Ok(file)) => Some(crate::intercept::OverflowWatch::new(file, settings.port)),
        Ok(Err(e)) => {
            log::warn!("cannot watch NFQUEUE drops (/proc/net/netfilter/nfnetlink_queue): {e}");
            None
        }
        Err(e) => {
            log::warn!("cannot watch NFQUEUE drops: {e:#}");
            None
        }
    }
}

/// Names a child in `ps` and `top`: its `comm` (15 bytes at most, prctl(2) `PR_SET_NAME`)
/// becomes `ftp6proxy-wkr` or `ftp6proxy-prs`, so an administrator (and the tests) can
/// tell the three processes apart.
pub fn name_process(role: &str) {
    let short = if role == "worker" {
        c"ftp6proxy-wkr"
    } else {
        c"ftp6proxy-prs"
    };
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, short.as_ptr(), 0, 0, 0) };
}
