//! FreeBSD: `-j` is a vnet jail, packets come from divert(4), holes go into ipfw or pf.

use anyhow::{bail, Context};

use super::open_tool_firewall;
use crate::cli::{FirewallKind, Settings};
use crate::firewall::Firewall;
use crate::intercept::divert::{Divert, DivertConfig};
use crate::intercept::divert_addr::DirectionHint;
use crate::jail::JailTarget;

/// The intercept backend of this platform.
pub type PlatformIntercept = Divert;

/// Attaches to the vnet jail `-j NAME|JID`.
///
/// # Errors
/// When the jail does not exist, has no vnet, or cannot be attached.
pub fn enter_target(target: &str) -> anyhow::Result<()> {
    let jail = JailTarget::parse(target).with_context(|| format!("-j {target}"))?;
    crate::jail::attach(&jail).with_context(|| format!("-j {target}"))
}

/// Binds the divert socket on port `-p`.
///
/// # Errors
/// When the socket cannot be created or bound (ipdivert not loaded, port in use).
pub fn open_intercept(settings: &Settings) -> anyhow::Result<Divert> {
    Divert::open(DivertConfig {
        port: settings.port,
        hint: DirectionHint::Auto,
    })
    .with_context(|| format!("divert socket on port {}", settings.port))
}

/// The firewall backend from `--firewall`.
///
/// # Errors
/// When the backend cannot be opened, or nft is asked for.
pub fn open_firewall(settings: &Settings) -> anyhow::Result<Box<dyn Firewall>> {
    if settings.firewall == FirewallKind::Nft {
        bail!("--firewall nft is only available on Linux; use ipfw or pf");
    }
    open_tool_firewall(settings)?.context("firewall backend")
}

/// Puts the parser into Capsicum capability mode once its descriptors are open: from here
/// on it can use only the socket to the worker (and syslog's, already connected). The
/// worker itself cannot enter capability mode: reinjecting a diverted packet is a
/// `sendto(2)` with an address, which the kernel refuses there (`sendit()` in
/// sys/kern/uipc_syscalls.c returns ECAPMODE when `msg_name` is set).
///
/// # Errors
/// When cap_enter(2) fails.
pub fn sandbox() -> anyhow::Result<()> {
    capsicum::enter().context("enter Capsicum capability mode")
}

/// Name of the intercept mechanism, for the start line.
pub fn intercept_name() -> &'static str {
    "divert"
}
