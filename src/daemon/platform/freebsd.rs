//! FreeBSD: `-j` is a vnet jail, packets come from divert(4) (inline) or copies from ipfw
//! `tee` / `ngtee` (copy mode), holes go into ipfw or pf.

use anyhow::{bail, Context};

use super::open_tool_firewall;
use crate::cli::{FirewallKind, InterceptKind, Settings};
use crate::firewall::Firewall;
use crate::intercept::divert::Divert;
use crate::intercept::netgraph::Netgraph;
use crate::intercept::tee::Tee;
use crate::intercept::{CopySource, PacketCopy};
use crate::jail::{self, Target};

/// The intercept backend of this platform.
pub type PlatformIntercept = Divert;

/// The copy source of this platform (copy mode): `tee` or `netgraph`.
#[derive(Debug)]
pub enum PlatformCopy {
    /// ipfw `tee`: a divert socket, only read.
    Tee(Tee),
    /// ipfw `ngtee`: an ng_socket data socket on ng_ipfw's hook, only read.
    Netgraph(Netgraph),
}

impl std::os::fd::AsRawFd for PlatformCopy {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            PlatformCopy::Tee(tee) => tee.as_raw_fd(),
            PlatformCopy::Netgraph(ng) => ng.as_raw_fd(),
        }
    }
}

impl CopySource for PlatformCopy {
    fn recv(&mut self) -> std::io::Result<Option<PacketCopy<'_>>> {
        match self {
            PlatformCopy::Tee(tee) => tee.recv(),
            PlatformCopy::Netgraph(ng) => ng.recv(),
        }
    }

    fn lost(&self) -> u64 {
        match self {
            PlatformCopy::Tee(tee) => tee.lost(),
            PlatformCopy::Netgraph(ng) => ng.lost(),
        }
    }
}

/// Binds the divert socket on port `-p`. With `-j` a short-lived child attaches to the
/// jail, makes and binds the socket there, and hands it back: the socket diverts and
/// reinjects in the jail's vnet while the daemon stays on the host (see `jail`).
///
/// # Errors
/// When the socket cannot be created or bound (ipdivert not loaded, port in use), or the
/// jail cannot be attached.
pub fn open_intercept(settings: &Settings, target: Option<&Target>) -> anyhow::Result<Divert> {
    let port = settings.port;
    let socket = match target {
        Some(target) => {
            let jid = target.jid();
            jail::socket_from_child(|| jail::attach_in_child(jid), || Divert::bind_socket(port))
                .with_context(|| format!("-j {target}"))
        }
        None => Divert::bind_socket(port).map_err(anyhow::Error::from),
    };
    Ok(Divert::from_socket(
        socket.with_context(|| format!("divert socket on port {port}"))?,
        port,
    ))
}

/// Opens the copy source of `--intercept tee|netgraph` while the monitor is still root
/// (`div_attach` checks `PRIV_NETINET_DIVERT`, sys/netinet/ip_divert.c; a netgraph control
/// socket `PRIV_NETGRAPH_CONTROL`, sys/netgraph/ng_socket.c `ngc_attach`). Both limit
/// their descriptor to `CAP_RECV|CAP_EVENT` before anything is forked, so every parser
/// inherits a descriptor that can only be read.
///
/// - `tee`: a divert socket bound to `-p`, made in the jail's vnet with `-j` as the inline
///   divert socket is (ipfw `tee PORT` delivers to the divert socket bound to PORT).
/// - `netgraph`: a socket node connected to ng_ipfw's hook `-p`. Not with `-j`: ng_ipfw
///   has one node for the whole kernel while node names are per vnet (see `netgraph`).
///
/// # Errors
/// When the socket cannot be made, bound or connected, or `netgraph` is asked for with
/// `-j`.
pub fn open_copy_source(
    settings: &Settings,
    target: Option<&Target>,
) -> anyhow::Result<PlatformCopy> {
    let port = settings.port;
    match settings.intercept {
        InterceptKind::Tee => {
            let socket = match target {
                Some(target) => {
                    let jid = target.jid();
                    jail::socket_from_child(
                        || jail::attach_in_child(jid),
                        || Divert::bind_socket(port),
                    )
                    .with_context(|| format!("-j {target}"))
                }
                None => Divert::bind_socket(port).map_err(anyhow::Error::from),
            };
            let socket = socket.with_context(|| format!("tee: divert socket on port {port}"))?;
            Ok(PlatformCopy::Tee(Tee::from_socket(socket, port)?))
        }
        InterceptKind::Netgraph => {
            if target.is_some() {
                bail!(
                    "--intercept netgraph works with the host's own ipfw only (ng_ipfw has one \
                     node for the whole kernel, node names are per vnet); use --intercept tee \
                     with -j"
                );
            }
            Ok(PlatformCopy::Netgraph(
                Netgraph::connect(port).with_context(|| format!("ngtee cookie {port}"))?,
            ))
        }
        other => bail!("--intercept {}: not a copy source of FreeBSD", other.name()),
    }
}

/// The firewall backend from `--firewall`; with `-j` every tool it runs attaches to the
/// jail first.
///
/// # Errors
/// When the backend cannot be opened, or nft is asked for.
pub fn open_firewall(
    settings: &Settings,
    target: Option<&Target>,
) -> anyhow::Result<Box<dyn Firewall>> {
    if settings.firewall == FirewallKind::Nft {
        bail!("--firewall nft is only available on Linux; use ipfw or pf");
    }
    open_tool_firewall(settings, target.map(Target::jid))?.context("firewall backend")
}

/// Puts the parser into Capsicum capability mode once its descriptors are open: from here
/// on it can use only its links (to the worker, or in copy mode the copy source limited
/// to receiving) and the monitor's log link. The
/// worker itself cannot enter capability mode: reinjecting a diverted packet is a
/// `sendto(2)` with an address, which the kernel refuses there (`sendit()` in
/// sys/kern/uipc_syscalls.c returns ECAPMODE when `msg_name` is set).
///
/// # Errors
/// When cap_enter(2) fails.
pub fn sandbox() -> anyhow::Result<()> {
    capsicum::enter().context("enter Capsicum capability mode")
}

/// divert(4) keeps no per-socket drop counter (a full receive buffer only sets
/// `so_rerror` in `divert_packet`, sys/netinet/ip_divert.c; `net.inet.divert.stats`
/// counts diverted, noport, outbound and inbound packets): nothing to watch.
pub fn overflow_watch(
    _settings: &Settings,
    _target: Option<&Target>,
) -> Option<crate::intercept::OverflowWatch> {
    None
}

/// Names a child in `ps`: setproctitle(3) makes its command line `ftp6proxy: worker` or
/// `ftp6proxy: parser` (lib/libc/gen/setproctitle.c `setproctitle_internal` prefixes the
/// program name), so an administrator can tell the three processes apart. rc.subr finds
/// the daemon by its pidfile's process, the monitor, which keeps its name.
pub fn name_process(role: &str) {
    let title = if role == "worker" {
        c"worker"
    } else {
        c"parser"
    };
    // SAFETY: a "%s" format with one NUL-terminated string argument.
    unsafe { libc::setproctitle(c"%s".as_ptr(), title.as_ptr()) };
}
