//! Packet intercept backends: receive diverted/queued packets and pass them on unchanged.
//!
//! Owns the OS interface that hands us packets (NFQUEUE on Linux, divert(4) on FreeBSD).
//! Parses nothing past what the OS hands over (the NFQUEUE packet id, the divert sockaddr).
//! Never modifies a packet: DESIGN.md invariant 1.

#[cfg(target_os = "freebsd")]
pub mod divert;
pub mod divert_addr;
#[cfg(target_os = "linux")]
pub mod nfqueue;

use std::io;
use std::os::fd::AsRawFd;

use ftp6proxy_core::engine::Checksum;

/// One intercepted packet, borrowed from the backend's receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The packet, starting at the IP header.
    pub bytes: &'a [u8],
    /// Whether its TCP checksum is filled in. Linux hands over locally sent packets before
    /// checksum offload has filled it in; divert(4) completes it before handing it over.
    pub checksum: Checksum,
}

/// A source of intercepted packets, registered in the event loop by its fd.
///
/// One packet at a time is *current*: the one [`Intercept::recv`] returned last. The loop
/// either passes it at once or holds it until its hole is confirmed.
pub trait Intercept: AsRawFd {
    /// What must be kept of a held packet to pass it on later.
    type Held;

    /// Reads the next waiting packet, or `None` when nothing is waiting (the fd is
    /// non-blocking).
    ///
    /// # Errors
    /// A socket error other than "would block".
    fn recv(&mut self) -> io::Result<Option<Packet<'_>>>;

    /// Passes the current packet on, unchanged.
    ///
    /// # Errors
    /// A socket error.
    fn pass_current(&mut self) -> io::Result<()>;

    /// Keeps the current packet to pass it on later with [`Intercept::pass_held`].
    fn hold_current(&mut self) -> Self::Held;

    /// Passes a held packet on, unchanged.
    ///
    /// # Errors
    /// A socket error.
    fn pass_held(&mut self, held: Self::Held) -> io::Result<()>;
}
