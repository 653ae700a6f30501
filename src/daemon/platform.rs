//! The few startup steps that differ between FreeBSD and Linux, selected by `cfg` at module
//! level: entering `-j`, opening the intercept socket, building the firewall backend, and
//! the worker's sandbox. Everything they call is in `intercept`, `firewall` and `jail`.

#[cfg(target_os = "freebsd")]
mod freebsd;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
mod seccomp;

#[cfg(target_os = "freebsd")]
pub use freebsd::*;
#[cfg(target_os = "linux")]
pub use linux::*;

use anyhow::Context;

use crate::cli::{FirewallKind, Settings};
use crate::firewall::ipfw::{Ipfw, IpfwConfig};
use crate::firewall::pf::{Pf, PfConfig, Queue};
use crate::firewall::Firewall;

/// Resolves `-j`: the vnet jail (FreeBSD) or network namespace (Linux) the sockets and
/// firewall tools work in. The daemon itself stays on the host.
///
/// # Errors
/// When the value is invalid, or the target does not exist (or is not a vnet jail).
pub fn resolve_target(value: &str) -> anyhow::Result<crate::jail::Target> {
    let target = crate::jail::JailTarget::parse(value)?;
    crate::jail::resolve(&target).with_context(|| format!("-j {value}"))
}

/// Builds the ipfw or pf backend (both drive the system's tools, in jail `jail` when one
/// is given; available everywhere so `--check` can explain what is missing).
fn open_tool_firewall(
    settings: &Settings,
    jail: Option<i32>,
) -> anyhow::Result<Option<Box<dyn Firewall>>> {
    let e = &settings.engine;
    Ok(match settings.firewall {
        FirewallKind::Ipfw => {
            let mut config = IpfwConfig::new(e.base, e.count);
            config.jail = jail;
            config.divert_port = cfg!(target_os = "freebsd").then_some(settings.port);
            config.allow_dyn_drop = settings.ipfw_allow_state_loss;
            config.queue = settings
                .queue
                .as_deref()
                .map(str::parse)
                .transpose()
                .context("-q for ipfw")?;
            Some(Box::new(Ipfw::new(config)?))
        }
        FirewallKind::Pf => {
            let mut config = PfConfig::new(e.base, e.count);
            config.jail = jail;
            config.anchor.clone_from(&settings.anchor);
            config.queue = settings.queue.as_deref().map(Queue::parse).transpose()?;
            Some(Box::new(Pf::new(config)?))
        }
        FirewallKind::Nft => None,
    })
}
