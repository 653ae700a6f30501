//! The ipfw `tee` copy source (FreeBSD only): a divert(4) socket that is only ever read.
//!
//! Owns the reading end of one divert socket bound to the `tee` port. Creating and binding
//! it is [`super::divert::Divert::bind_socket`]'s job (the same socket as inline mode:
//! ipfw's `tee PORT` delivers to the divert socket bound to PORT); this type takes the bare
//! descriptor, limits it to receiving and keeps nothing that writes: it has no send path,
//! and after [`Tee::from_socket`] the descriptor itself refuses `sendto(2)`
//! (cap_rights_limit(2) to `CAP_RECV` and `CAP_EVENT`), whoever holds it. Must not look
//! inside a packet; the sockaddr is decoded by the pure [`super::divert_addr`].
//!
//! What the kernel does (freebsd/freebsd-src, read, not copied):
//! - sys/netpfil/ipfw/ip_fw_pfil.c: `ipfw_check_packet`, the pfil hook for both IPv4 and
//!   IPv6 (`ipfw_hook` registers it for `AF_INET` and `AF_INET6`), handles `IP_FW_TEE`
//!   with `ipfw_divert(..., tee = true)`, which queues an `m_dup` copy to divert and lets
//!   the original continue with the next rule. A copy is made before any reassembly:
//!   "listeners on a tee rule may get fragments" (the engine treats a fragment as not
//!   TCP). If the copy cannot be made, it is skipped, and the original still goes on.
//! - sys/netinet/ip_divert.c `divert_packet`: delayed TCP checksums (`CSUM_DELAY_DATA`,
//!   `CSUM_DELAY_DATA_IPV6`) are completed before the packet is queued, so a copy's
//!   checksum can be verified; the sockaddr carries the rule number and the direction
//!   hint as for `divert` (see `divert_addr`).
//! - Only `div_attach` checks a privilege (`PRIV_NETINET_DIVERT`), so reading the bound
//!   socket needs none, also in capability mode (`recvfrom` names no address).
//! - sys/netinet/ip_divert.c `divert_packet`: a copy that does not fit in the socket's
//!   buffer is freed; only the copy is lost, the original has gone on. With `SO_RERROR`
//!   (asked for before the rights are limited) the next read says so with ENOBUFS, which
//!   [`super::divert::recv_packet`] counts: one per report, at least one copy each (see
//!   `divert_read`).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use capsicum::{CapRights, FileRights, Right};

use super::divert::{ask_for_overflow_reports, recv_packet};
use super::divert_addr::{DivertAddr, SOCKADDR_IN_LEN};
use super::{CopyMeta, CopySource, PacketCopy};
use ftp6proxy_core::engine::Checksum;

/// Large enough for any IPv4 packet and any non-jumbo IPv6 packet.
const BUF_LEN: usize = 40 + 65535;

/// Limits `fd` to what reading it in an event loop needs (`CAP_RECV` is `CAP_READ`;
/// `CAP_EVENT` lets kqueue watch it). From then on `sendto(2)`, `connect(2)`,
/// `setsockopt(2)` and the rest fail with ENOTCAPABLE, in this process and in any it is
/// handed to.
pub(super) fn limit_to_receiving(fd: &OwnedFd) -> io::Result<()> {
    FileRights::new()
        .allow(Right::Read)
        .allow(Right::Event)
        .limit(fd)
}

/// A divert socket bound to the `tee` port, readable only.
#[derive(Debug)]
pub struct Tee {
    fd: OwnedFd,
    buf: Box<[u8]>,
    /// ENOBUFS reports: each says at least one copy was dropped.
    overflows: u64,
}

impl Tee {
    /// Takes a socket from [`super::divert::Divert::bind_socket`] (bound to `tee` port
    /// `port`, non-blocking), asks for its overflows to be reported and limits it to
    /// receiving.
    ///
    /// # Errors
    /// When the rights cannot be limited.
    pub fn from_socket(fd: OwnedFd, port: u16) -> io::Result<Tee> {
        ask_for_overflow_reports(&fd, port);
        limit_to_receiving(&fd).map_err(|e| {
            io::Error::new(e.kind(), format!("limit the tee socket to receiving: {e}"))
        })?;
        Ok(Tee {
            fd,
            buf: vec![0u8; BUF_LEN].into_boxed_slice(),
            overflows: 0,
        })
    }
}

impl AsRawFd for Tee {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl CopySource for Tee {
    fn recv(&mut self) -> io::Result<Option<PacketCopy<'_>>> {
        let mut addr = [0u8; SOCKADDR_IN_LEN];
        let Some(len) = recv_packet(&self.fd, &mut self.buf, &mut addr, &mut self.overflows)?
        else {
            return Ok(None);
        };
        let meta = match DivertAddr::decode(&addr) {
            Ok(a) => CopyMeta {
                rule: Some(a.rule),
                inbound: Some(a.seen_inbound()),
                ..CopyMeta::default()
            },
            Err(_) => CopyMeta::default(),
        };
        Ok(Some(PacketCopy {
            bytes: &self.buf[..len],
            // divert_packet() completes delayed checksums before queueing the copy.
            checksum: Checksum::Verify,
            meta,
        }))
    }

    /// The overflow reports so far (a lower bound: one report may stand for several
    /// copies); 0 on a kernel that refused `SO_RERROR` or drops without telling.
    fn lost(&self) -> u64 {
        self.overflows
    }
}
