//! Linux: `-j` is a network namespace, packets come from NFQUEUE, holes go into nftables.

use anyhow::Context;

use super::open_tool_firewall;
use crate::cli::{FirewallKind, Settings};
use crate::firewall::nft::Nft;
use crate::firewall::Firewall;
use crate::intercept::nfqueue::NfQueue;

/// The intercept backend of this platform.
pub type PlatformIntercept = NfQueue;

/// Enters the network namespace `-j NAME` (as `ip netns` names it).
///
/// # Errors
/// When it does not exist or cannot be entered.
pub fn enter_target(target: &str) -> anyhow::Result<()> {
    crate::jail::enter_netns(target).with_context(|| format!("-j {target}"))
}

/// Binds NFQUEUE `-p`.
///
/// # Errors
/// When the queue cannot be bound (permission, or another process holds it).
pub fn open_intercept(settings: &Settings) -> anyhow::Result<NfQueue> {
    NfQueue::open(settings.port).with_context(|| format!("bind NFQUEUE {}", settings.port))
}

/// The firewall backend from `--firewall`.
///
/// # Errors
/// When the backend cannot be opened.
pub fn open_firewall(settings: &Settings) -> anyhow::Result<Box<dyn Firewall>> {
    if settings.firewall == FirewallKind::Nft {
        let table = format!("{} {}", settings.nft_table.family, settings.nft_table.name);
        return Ok(Box::new(
            Nft::open(&table, &settings.anchor).context("open nftables")?,
        ));
    }
    open_tool_firewall(settings)?.context("firewall backend")
}

/// Confines the parser with a seccomp-bpf allowlist (Capsicum's role on FreeBSD); it has
/// already dropped every capability and set no_new_privs.
///
/// # Errors
/// When the kernel refuses the filter.
pub fn sandbox() -> anyhow::Result<()> {
    super::seccomp::enter()
}

/// Name of the intercept mechanism, for the start line.
pub fn intercept_name() -> &'static str {
    "nfqueue"
}
