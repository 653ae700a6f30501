//! The ipfw `ngtee` copy source (FreeBSD only), the original V0.4's way: an ng_socket(4)
//! data socket connected to the ng_ipfw(4) hook named by the cookie.
//!
//! Owns the setup (a control socket that creates and names our socket node, a data socket
//! that joins it, one `NGM_CONNECT` that links our hook to ipfw's hook of the same name)
//! and the reading afterwards. [`Netgraph::connect`] closes the control socket before it
//! returns, so what it keeps cannot send a control message to any node; the data socket is
//! then limited to receiving (cap_rights_limit(2): `CAP_RECV`, `CAP_EVENT`). Even without
//! that limit, data written to the hook could not reach the network: `ng_ipfw_rcvdata`
//! frees any packet without the ipfw rule tag the kernel puts only on `netgraph` (not
//! `ngtee`) packets, and a user's packet has none. Must not look inside a packet.
//!
//! The message formats and the kernel facts they rest on, with their sources in
//! freebsd/freebsd-src, are in the pure [`super::netgraph_msg`]. In addition:
//! - sys/netpfil/ipfw/ip_fw_pfil.c: `ipfw_check_packet` serves IPv4 and IPv6 alike; for
//!   `IP_FW_NGTEE` it calls `ng_ipfw_input_p(..., tee = true)` and goes on with the packet
//!   ("ignore errors for NGTEE"), so IPv6 works with `ngtee` and a copy that cannot be
//!   made or delivered never holds the original.
//! - sys/netgraph/ng_ipfw.c `ng_ipfw_input`: the copy is an `m_dup` of the packet as it is
//!   at that point; nothing completes delayed checksums (divert does, ng_ipfw does not), so
//!   a locally sent packet's TCP checksum may be unfinished: copies are never verified.
//! - ng_ipfw has one node for the whole kernel, made and named at module load
//!   (`static node_p fw_node`), while node names are per vnet (`V_ng_name_hash` in
//!   ng_base.c). Inside a vnet jail "ipfw:" is therefore not expected to resolve: this
//!   source is for the host's own ipfw, not for `-j` (untested: there is no FreeBSD host
//!   here).
//! - sys/netgraph/ng_socket.c: a data socket's receive space is `net.graph.recvspace`
//!   (20 KiB by default, `ngpdg_recvspace`), so it is raised with `SO_RCVBUF`; a packet
//!   that does not fit is dropped in `ngs_rcvdata` (ENOBUFS to ng_ipfw, which ignores it
//!   for `ngtee`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::netgraph_msg::{
    self, bind_addr, connect_msg, hook_of, ipfw_hook_name, node_name, sockaddr_ng, HookName,
    IPFW_NODE_PATH, NG_CONTROL, NG_DATA, OWN_NODE_PATH, RECV_ADDR_LEN,
};
use super::tee::limit_to_receiving;
use super::{CopyMeta, CopySource, PacketCopy};
use ftp6proxy_core::engine::Checksum;

/// Large enough for any IPv4 packet and any non-jumbo IPv6 packet.
const BUF_LEN: usize = 40 + 65535;
/// Receive space asked for on the data socket (the default is 20 KiB).
const RCVBUF_BYTES: libc::c_int = 1 << 20;

fn ng_socket(protocol: i32, nonblocking: bool) -> io::Result<OwnedFd> {
    let flags = libc::SOCK_CLOEXEC | if nonblocking { libc::SOCK_NONBLOCK } else { 0 };
    // SAFETY: plain socket(2) call; the result is checked before it is wrapped.
    let fd = unsafe { libc::socket(libc::PF_NETGRAPH, libc::SOCK_DGRAM | flags, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn socklen(len: usize) -> libc::socklen_t {
    libc::socklen_t::try_from(len).expect("netgraph addresses are short")
}

fn to_io(e: netgraph_msg::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e)
}

fn context(err: io::Error, what: &str) -> io::Error {
    let hint = match err.raw_os_error() {
        Some(libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT | libc::EPFNOSUPPORT) => {
            " (netgraph sockets are not available: `kldload ng_socket`)"
        }
        Some(libc::EPERM | libc::EACCES) => " (a netgraph control socket needs root)",
        Some(libc::ENOENT) => " (no \"ipfw:\" node: `kldload ng_ipfw`)",
        Some(libc::EEXIST | libc::EADDRINUSE) => {
            " (another process, perhaps another ftp6proxy, has this cookie)"
        }
        _ => "",
    };
    io::Error::new(err.kind(), format!("{what}: {err}{hint}"))
}

/// An ng_socket data socket connected to ng_ipfw's hook for one cookie, readable only.
#[derive(Debug)]
pub struct Netgraph {
    data: OwnedFd,
    hook: String,
    buf: Box<[u8]>,
    foreign: u64,
}

impl Netgraph {
    /// Connects a new socket node, named `ftp6proxy-COOKIE`, to ng_ipfw's hook `COOKIE`
    /// (fed by `ipfw add ... ngtee COOKIE`), raises the data socket's receive space, closes
    /// the control socket and limits the data socket to receiving.
    ///
    /// Needs root (`PRIV_NETGRAPH_CONTROL`, checked when the control socket is made).
    ///
    /// # Errors
    /// With a message naming the likely cause: ng_socket or ng_ipfw not loaded, no root,
    /// the cookie taken.
    pub fn connect(cookie: u16) -> io::Result<Netgraph> {
        let hook = ipfw_hook_name(cookie);
        let name = node_name(cookie);
        let control =
            ng_socket(NG_CONTROL, false).map_err(|e| context(e, "netgraph control socket"))?;
        let addr = bind_addr(&name).map_err(to_io)?;
        // SAFETY: addr holds a sockaddr_ng of exactly addr.len() bytes.
        let rc = unsafe {
            libc::bind(
                control.as_raw_fd(),
                addr.as_ptr().cast::<libc::sockaddr>(),
                socklen(addr.len()),
            )
        };
        if rc != 0 {
            return Err(context(
                io::Error::last_os_error(),
                &format!("name netgraph node {name}"),
            ));
        }
        let data = ng_socket(NG_DATA, true).map_err(|e| context(e, "netgraph data socket"))?;
        let path = sockaddr_ng(&format!("{name}:")).map_err(to_io)?;
        // SAFETY: path holds a sockaddr_ng of exactly path.len() bytes.
        let rc = unsafe {
            libc::connect(
                data.as_raw_fd(),
                path.as_ptr().cast::<libc::sockaddr>(),
                socklen(path.len()),
            )
        };
        if rc != 0 {
            return Err(context(
                io::Error::last_os_error(),
                &format!("attach the data socket to {name}"),
            ));
        }
        let msg = connect_msg(1, IPFW_NODE_PATH, &hook, &hook).map_err(to_io)?;
        let to = sockaddr_ng(OWN_NODE_PATH).map_err(to_io)?;
        // ngc_send() returns only once the message has been applied, with its error.
        // SAFETY: msg and to are valid for the lengths passed.
        let sent = unsafe {
            libc::sendto(
                control.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                to.as_ptr().cast::<libc::sockaddr>(),
                socklen(to.len()),
            )
        };
        if sent < 0 {
            return Err(context(
                io::Error::last_os_error(),
                &format!("connect {name}:{hook} to {IPFW_NODE_PATH}{hook}"),
            ));
        }
        // SAFETY: the value lives across the call and the length matches its type.
        let rc = unsafe {
            libc::setsockopt(
                data.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                std::ptr::from_ref(&RCVBUF_BYTES).cast(),
                socklen(std::mem::size_of::<libc::c_int>()),
            )
        };
        if rc != 0 {
            log::warn!(
                "netgraph {name}: cannot raise the receive space ({}); copies of large \
                 packets may be dropped (kern.ipc.maxsockbuf, net.graph.recvspace)",
                io::Error::last_os_error()
            );
        }
        // The node lives on with its data socket (ng_socket_free_priv); nothing we keep
        // can send a control message.
        drop(control);
        limit_to_receiving(&data)
            .map_err(|e| context(e, "limit the netgraph data socket to receiving"))?;
        Ok(Netgraph {
            data,
            hook,
            buf: vec![0u8; BUF_LEN].into_boxed_slice(),
            foreign: 0,
        })
    }

    /// The hook name (the cookie in decimal).
    pub fn hook(&self) -> &str {
        &self.hook
    }
}

impl AsRawFd for Netgraph {
    fn as_raw_fd(&self) -> RawFd {
        self.data.as_raw_fd()
    }
}

impl CopySource for Netgraph {
    fn recv(&mut self) -> io::Result<Option<PacketCopy<'_>>> {
        loop {
            let mut addr = [0u8; RECV_ADDR_LEN];
            let mut addr_len = socklen(addr.len());
            // SAFETY: buf and addr are valid for the lengths passed; the kernel writes at
            // most those lengths.
            let n = unsafe {
                libc::recvfrom(
                    self.data.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    0,
                    addr.as_mut_ptr().cast::<libc::sockaddr>(),
                    &mut addr_len,
                )
            };
            let Ok(n) = usize::try_from(n) else {
                let err = io::Error::last_os_error();
                match err.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => return Ok(None),
                    _ => return Err(err),
                }
            };
            let got = usize::try_from(addr_len).unwrap_or(0).min(addr.len());
            let hook = hook_of(&addr[..got]);
            if hook != Some(self.hook.as_bytes()) {
                // Our node has one hook; anything else is not ours to read.
                self.foreign += 1;
                if self.foreign == 1 {
                    log::warn!(
                        "netgraph: data from hook {} (expected {}) ignored",
                        HookName(hook.unwrap_or_default()),
                        self.hook
                    );
                }
                continue;
            }
            let len = n.min(self.buf.len());
            return Ok(Some(PacketCopy {
                bytes: &self.buf[..len],
                // ng_ipfw_input() copies the packet without completing delayed checksums.
                checksum: Checksum::NotReady,
                // An ngtee copy comes "without a tag": no rule, no direction.
                meta: CopyMeta::default(),
            }));
        }
    }

    /// Always 0: copies the data socket could not take are dropped in the kernel
    /// (`ngs_rcvdata`) without a count we can read; the engine still sees the gap.
    fn lost(&self) -> u64 {
        0
    }
}
