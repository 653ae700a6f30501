//! The divert(4) intercept backend (FreeBSD only).
//!
//! Owns one divert socket: its creation, `bind(2)` to the divert port, and the
//! `recvfrom(2)`/`sendto(2)` of whole packets. Must not look inside a packet, and must not
//! change one: every packet read is written back byte for byte with the sockaddr it came
//! with (DESIGN.md invariant 1). All sockaddr logic — byte orders, the interface name, the
//! IPv6 inbound caveat — lives in the pure [`super::divert_addr`], tested on every OS;
//! this file is the thin syscall glue around it.
//!
//! Socket creation follows research/freebsd.md §1.1: FreeBSD 14+ has its own domain,
//! `socket(PF_DIVERT, SOCK_RAW, 0)`; 13 and older only the inet form
//! `socket(PF_INET, SOCK_RAW, IPPROTO_DIVERT)` (14 still accepts it with a console
//! warning). We try the new form first and fall back on "unknown domain" errors.
//!
//! A divert rule with no socket bound drops its packets (research §1.6): the daemon opens
//! this socket before it installs or relies on any divert rule, and the rc.d script loads
//! `ipdivert` via `required_modules`.
//!
//! A full receive buffer drops packets too, silently unless the socket has `SO_RERROR`
//! (sys/netinet/ip_divert.c `divert_packet`, sys/kern/uipc_sockbuf.c `soroverflow_locked`;
//! the whole story is in [`super::divert_read`]). Both users of the socket, this inline
//! intercept and the `tee` copy source, ask for it and read through [`recv_packet`], which
//! counts the reports.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::divert_addr::{self, DivertAddr, SOCKADDR_IN_LEN};
use super::divert_read::{self, DivertRead};
use super::{Intercept, Packet};
use ftp6proxy_core::engine::Checksum;

/// `PF_DIVERT` from FreeBSD 14's `sys/socket.h` (`#define AF_DIVERT 44`); not in the libc
/// crate.
pub const PF_DIVERT: libc::c_int = 44;

/// Large enough for any IPv4 packet (64 KiB - 1) and any non-jumbo IPv6 packet (40-byte
/// header + 64 KiB - 1 payload).
const BUF_LEN: usize = 40 + 65535;

// The byte layout in divert_addr is FreeBSD's `struct sockaddr_in`.
const _: () = assert!(mem::size_of::<libc::sockaddr_in>() == SOCKADDR_IN_LEN);

/// A packet kept for later: its bytes and the sockaddr to reinject it with.
#[derive(Debug, Clone)]
pub struct DivertHeld {
    packet: Vec<u8>,
    addr: [u8; SOCKADDR_IN_LEN],
}

/// The current packet: its length in the buffer and its reinjection sockaddr.
#[derive(Debug, Clone, Copy)]
struct Current {
    len: usize,
    addr: [u8; SOCKADDR_IN_LEN],
}

/// An open, bound, non-blocking divert socket.
#[derive(Debug)]
pub struct Divert {
    fd: OwnedFd,
    buf: Box<[u8]>,
    current: Option<Current>,
    /// Packets that came from an `in` rule (see `divert_addr`): counted, warned about once.
    seen_inbound: u64,
    /// The divert port, for the warnings.
    port: u16,
    /// ENOBUFS reports: each says the kernel dropped at least one diverted packet.
    overflows: u64,
}

fn is_unknown_domain(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT | libc::EPFNOSUPPORT)
    )
}

fn new_socket(domain: libc::c_int, protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the returned fd is owned by nobody else.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: fd is a fresh, valid descriptor that we alone own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

fn to_sockaddr_in(bytes: &[u8; SOCKADDR_IN_LEN]) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain old data of exactly SOCKADDR_IN_LEN bytes (asserted
    // above); every bit pattern is valid.
    unsafe {
        let mut sin: libc::sockaddr_in = mem::zeroed();
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            (&mut sin as *mut libc::sockaddr_in).cast::<u8>(),
            SOCKADDR_IN_LEN,
        );
        sin
    }
}

/// Asks the kernel to report overflows of `fd`'s receive buffer as an ENOBUFS from the next
/// read (`SO_RERROR`: sys/sys/socket.h; sys/kern/uipc_socket.c `sosetopt` takes it as a
/// flag). Must come before the descriptor's rights are limited, which forbid
/// `setsockopt(2)`. A kernel that refuses gets one warning; the socket works as before,
/// its overflows just go uncounted.
pub(super) fn ask_for_overflow_reports(fd: &OwnedFd, port: u16) {
    let on: libc::c_int = 1;
    // SAFETY: `on` is a valid c_int for the length passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RERROR,
            (&on as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        let err = io::Error::last_os_error();
        log::warn!("{}", divert_read::no_overflow_reports_warning(port, &err));
    }
}

/// Reads the next waiting packet from divert socket `fd` into `buf` and its sockaddr into
/// `addr`: the packet's length, or `None` when nothing is waiting. An overflow report is
/// counted in `overflows` and reading goes on (the kernel returns it only once the packets
/// queued before the drop have been read, see `divert_read`).
///
/// # Errors
/// A receive error other than those.
pub(super) fn recv_packet(
    fd: &OwnedFd,
    buf: &mut [u8],
    addr: &mut [u8; SOCKADDR_IN_LEN],
    overflows: &mut u64,
) -> io::Result<Option<usize>> {
    loop {
        let mut addr_len = SOCKADDR_IN_LEN as libc::socklen_t;
        // SAFETY: buf and addr are valid for the lengths passed; the kernel writes at most
        // those lengths (a sockaddr has no alignment requirement for the kernel's copyout).
        let n = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                addr.as_mut_ptr().cast::<libc::sockaddr>(),
                &mut addr_len,
            )
        };
        let result = usize::try_from(n).map_err(|_| io::Error::last_os_error());
        match DivertRead::of(result)? {
            DivertRead::Packet(len) => return Ok(Some(len.min(buf.len()))),
            DivertRead::NothingWaiting => return Ok(None),
            DivertRead::Overflowed => *overflows += 1,
            DivertRead::Interrupted => {}
        }
    }
}

fn with_context(err: io::Error, port: u16, what: &str) -> io::Error {
    let hint = match err.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => {
            " (divert sockets need root, on the host or in a vnet jail)"
        }
        Some(libc::EADDRINUSE) => " (another process, perhaps another ftp6proxy, has it)",
        _ => "",
    };
    io::Error::new(
        err.kind(),
        format!("{what} divert socket on port {port}: {err}{hint}"),
    )
}

impl Divert {
    /// Creates a non-blocking divert socket and binds it to divert port `port`. Runs in
    /// the jail's child with `-j` (the socket keeps the jail's vnet), so it returns the bare
    /// socket; [`Divert::from_socket`] wraps it.
    ///
    /// # Errors
    /// When divert is not available (the message names `kldload ipdivert`), when we lack
    /// the privilege, or when the port is taken.
    pub fn bind_socket(port: u16) -> io::Result<OwnedFd> {
        let fd = match new_socket(PF_DIVERT, 0) {
            Ok(fd) => fd,
            Err(e) if is_unknown_domain(&e) => new_socket(libc::PF_INET, libc::IPPROTO_DIVERT)
                .map_err(|e| {
                    if is_unknown_domain(&e) {
                        io::Error::new(
                            e.kind(),
                            format!(
                                "divert(4) is not available ({e}): run `kldload ipdivert` \
                                 (ipdivert_load=\"YES\" in /boot/loader.conf, or \
                                 required_modules in the rc.d script)"
                            ),
                        )
                    } else {
                        with_context(e, port, "create")
                    }
                })?,
            Err(e) => return Err(with_context(e, port, "create")),
        };

        let sin = to_sockaddr_in(&divert_addr::bind_addr(port));
        // SAFETY: sin is a valid sockaddr_in and the length passed is its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sin as *const libc::sockaddr_in).cast::<libc::sockaddr>(),
                mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(with_context(io::Error::last_os_error(), port, "bind"));
        }
        Ok(fd)
    }

    /// The intercept around a socket from [`Divert::bind_socket`] on divert port `port`.
    pub fn from_socket(fd: OwnedFd, port: u16) -> Divert {
        ask_for_overflow_reports(&fd, port);
        Divert {
            fd,
            buf: vec![0u8; BUF_LEN].into_boxed_slice(),
            current: None,
            seen_inbound: 0,
            port,
            overflows: 0,
        }
    }

    fn send(&self, packet: &[u8], addr: &[u8; SOCKADDR_IN_LEN]) -> io::Result<()> {
        let sin = to_sockaddr_in(addr);
        loop {
            // SAFETY: packet and sin are valid for the lengths passed.
            let n = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    packet.as_ptr().cast(),
                    packet.len(),
                    0,
                    (&sin as *const libc::sockaddr_in).cast::<libc::sockaddr>(),
                    mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if n >= 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

impl AsRawFd for Divert {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Intercept for Divert {
    type Held = DivertHeld;

    fn recv(&mut self) -> io::Result<Option<Packet<'_>>> {
        self.current = None;
        let mut addr = [0u8; SOCKADDR_IN_LEN];
        let before = self.overflows;
        let read = recv_packet(&self.fd, &mut self.buf, &mut addr, &mut self.overflows);
        if self.overflows > before && crate::log_limit::is_power_of_ten(self.overflows) {
            log::warn!(
                "{}",
                divert_read::inline_overflow_warning(self.port, self.overflows)
            );
        }
        let Some(len) = read? else {
            return Ok(None);
        };
        // The sockaddr is echoed as received, so the packet goes on after its rule, in
        // the direction it was going (the rules divert `out` only: see divert_addr).
        if DivertAddr::decode(&addr).is_ok_and(|a| a.seen_inbound()) {
            self.seen_inbound += 1;
            if self.seen_inbound == 1 {
                log::warn!(
                    "divert: a packet came from an `in` rule; divert FTP control traffic \
                     with `out` rules only (an inbound IPv6 packet on an interface without \
                     IPv4 cannot be told from an outbound one and would be reinjected on \
                     the way out)"
                );
            }
        }
        self.current = Some(Current { len, addr });
        // divert(4) completes delayed checksums before handing a packet over.
        Ok(self.buf.get(..len).map(|bytes| Packet {
            bytes,
            checksum: Checksum::Verify,
        }))
    }

    fn pass_current(&mut self) -> io::Result<()> {
        match self.current.take() {
            Some(c) => {
                let packet = self.buf.get(..c.len).unwrap_or_default();
                self.send(packet, &c.addr)
            }
            None => Ok(()),
        }
    }

    /// Copies the current packet out. Without a current packet the result is empty and
    /// passing it does nothing.
    fn hold_current(&mut self) -> DivertHeld {
        match self.current.take() {
            Some(c) => DivertHeld {
                packet: self.buf.get(..c.len).unwrap_or_default().to_vec(),
                addr: c.addr,
            },
            None => DivertHeld {
                packet: Vec::new(),
                addr: [0; SOCKADDR_IN_LEN],
            },
        }
    }

    fn pass_held(&mut self, held: DivertHeld) -> io::Result<()> {
        if held.packet.is_empty() {
            return Ok(());
        }
        self.send(&held.packet, &held.addr)
    }

    fn overflows(&self) -> u64 {
        self.overflows
    }
}
