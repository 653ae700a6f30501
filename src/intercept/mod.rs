//! Packet intercept backends: receive diverted/queued packets and pass them on unchanged
//! (inline mode), or read copies of them and send nothing at all (copy mode).
//!
//! Owns the OS interfaces that hand us packets: NFQUEUE (inline) and NFLOG (copies) on
//! Linux; divert(4) (inline), ipfw `tee` to a divert socket and ipfw `ngtee` to an
//! ng_socket(4) (copies) on FreeBSD. Parses nothing past what the OS hands over (the
//! NFQUEUE packet id, the divert sockaddr, the NFLOG attributes, the netgraph hook name).
//! Never modifies a packet: DESIGN.md invariant 1. Must not touch the firewall rules that
//! feed it: they are the administrator's.
//!
//! Two traits, one per mode: [`Intercept`] can pass packets on; [`CopySource`] can only
//! read. A copy source's type holds nothing that sends: that is what lets the process
//! reading copies run with no capability at all (issue 11).

#[cfg(target_os = "freebsd")]
pub mod divert;
pub mod divert_addr;
pub mod divert_read;
#[cfg(target_os = "freebsd")]
pub mod netgraph;
pub mod netgraph_msg;
#[cfg(target_os = "linux")]
pub mod nflog;
#[cfg(target_os = "linux")]
pub mod nfqueue;
#[cfg(target_os = "freebsd")]
pub mod tee;

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

    /// Passes several held packets on, in order; a backend that can say it in one
    /// system call does (NFQUEUE: one datagram of verdicts). Every packet is tried even
    /// when one fails; the first error is returned.
    ///
    /// # Errors
    /// A socket error.
    fn pass_all(&mut self, held: Vec<Self::Held>) -> io::Result<()> {
        let mut first = Ok(());
        for one in held {
            let result = self.pass_held(one);
            if first.is_ok() {
                first = result;
            }
        }
        first
    }

    /// This socket's previous reader (a worker that died) may have left packets held:
    /// let them go, where the backend can name them. Divert(4) cannot (a packet it handed
    /// over is in the dead reader's memory; TCP sends it again), NFQUEUE can.
    fn adopt(&mut self) {}

    /// Times this reader found its socket overflowed, where the backend can tell (an
    /// ENOBUFS from the socket); for the status line. NFQUEUE's fail-open passed those
    /// packets on unseen; divert(4) dropped them (TCP sends them again).
    fn overflows(&self) -> u64 {
        0
    }

    /// Packets the OS passed on without handing them to us, where the backend can count
    /// them (NFQUEUE fail-open at a full socket: the packet ids we never read).
    fn passed_unseen(&self) -> u64 {
        0
    }
}

/// One packet copy, borrowed from the copy source's receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketCopy<'a> {
    /// The packet, starting at the IP header (possibly cut short: see `cut`).
    pub bytes: &'a [u8],
    /// Whether its TCP checksum can be checked. Only a source that completes delayed
    /// checksums before copying (divert(4), so ipfw `tee`) says `Verify`.
    pub checksum: Checksum,
    /// What the OS said about the packet besides its bytes.
    pub meta: CopyMeta,
}

/// What a copy source knows about a packet besides its bytes; each field is `None` when the
/// source does not say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyMeta {
    /// Linux: the netfilter hook the copy was taken at (`NF_INET_*`: 1 INPUT, 2 FORWARD,
    /// 3 OUTPUT, ...).
    pub hook: Option<u8>,
    /// Linux: the interface index the packet came in on.
    pub indev: Option<u32>,
    /// Linux: the interface index the packet goes out on.
    pub outdev: Option<u32>,
    /// FreeBSD `tee`: the number of the ipfw rule that copied it.
    pub rule: Option<u16>,
    /// FreeBSD `tee`: `Some(true)` when the packet was seen on its way in (divert(4)
    /// puts the receiving interface's IPv4 address in the sockaddr only then), else
    /// `Some(false)` (which is also what an inbound IPv6 packet on an interface without
    /// IPv4 looks like: see `divert_addr`).
    pub inbound: Option<bool>,
    /// The packet's real length when `bytes` holds less of it.
    pub cut: Option<u32>,
}

/// A source of packet copies (copy mode): ipfw `tee` or `ngtee` on FreeBSD, an NFLOG group
/// on Linux. Registered in the event loop by its fd.
///
/// Read-only by construction: the trait has no way to pass, drop, reinject or change
/// anything, and no implementation keeps one. The packets it copies went on without
/// waiting for us, so a hole opened for an announcement can come after the announcing
/// packet (DESIGN.md invariant 2, copy modes).
pub trait CopySource: AsRawFd {
    /// Reads the next waiting copy, or `None` when nothing is waiting (the fd is
    /// non-blocking).
    ///
    /// # Errors
    /// A socket error other than "would block" or a buffer overflow (overflows are
    /// counted in [`CopySource::lost`] and reading goes on).
    fn recv(&mut self) -> io::Result<Option<PacketCopy<'_>>>;

    /// How many copies are known to have been lost so far (the socket buffer overflowed,
    /// or the source's own sequence numbers jumped). A source that learns only that its
    /// buffer overflowed, not by how much (ipfw `tee`), counts one per overflow: at least
    /// that many were lost. A lost copy is a gap in a stream, which the engine recovers
    /// from; holes announced in it are missed.
    fn lost(&self) -> u64;
}

/// The kernel's drop counters of one NFQUEUE (Linux `/proc/net/netfilter/nfnetlink_queue`,
/// written by `nfqnl_seq_show` in net/netfilter/nfnetlink_queue.c as `queue_num
/// peer_portid queue_total copy_mode copy_range queue_dropped queue_user_dropped
/// id_sequence 1`).
///
/// With fail-open, which the daemon always sets, current kernels count neither a packet
/// passed at a full queue nor one passed at a full socket here (nfnetlink_queue.c
/// `__nfqnl_enqueue_packet`: both are counted only `else`, without fail-open); older ones
/// counted the second in `queue_user_dropped` whatever the flags. The worker counts the
/// second exactly from the packet ids (`nfqueue::QUEUE_MAXLEN` says why the first cannot
/// happen); these counters stay watched for the kernels that do count, and for a queue
/// some other tool configured without fail-open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Packets the queue could not hold (dropped without fail-open).
    pub dropped: u64,
    /// Packets our socket's buffer could not hold (ENOBUFS), as far as the kernel counts.
    pub user_dropped: u64,
}

/// The counters of queue `queue` in the text of `/proc/net/netfilter/nfnetlink_queue`.
pub fn parse_queue_stats(text: &str, queue: u16) -> Option<QueueStats> {
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 7 || fields[0].parse::<u16>().ok()? != queue {
            return None;
        }
        Some(QueueStats {
            dropped: fields[5].parse().ok()?,
            user_dropped: fields[6].parse().ok()?,
        })
    })
}

/// Watches a queue's drop counters through a file opened once (in the queue's network
/// namespace: `/proc/net` shows the namespace of the process that opened it), so that
/// packets passed unseen are logged with counts instead of going unnoticed.
#[derive(Debug)]
pub struct OverflowWatch {
    file: std::fs::File,
    queue: u16,
    last: QueueStats,
}

impl OverflowWatch {
    /// Watches queue `queue` through `file` (`/proc/net/netfilter/nfnetlink_queue`).
    pub fn new(file: std::fs::File, queue: u16) -> OverflowWatch {
        let mut watch = OverflowWatch {
            file,
            queue,
            last: QueueStats::default(),
        };
        watch.last = watch.read().unwrap_or_default();
        watch
    }

    fn read(&mut self) -> Option<QueueStats> {
        use std::io::{Read, Seek, SeekFrom};
        self.file.seek(SeekFrom::Start(0)).ok()?;
        let mut text = String::new();
        self.file.read_to_string(&mut text).ok()?;
        parse_queue_stats(&text, self.queue)
    }

    /// The totals seen at the last check.
    pub fn totals(&self) -> QueueStats {
        self.last
    }

    /// A warning line if the counters grew since the last call.
    pub fn check(&mut self) -> Option<String> {
        let now = self.read()?;
        let grew = |new: u64, old: u64| new.saturating_sub(old);
        let (full, buffer) = (
            grew(now.dropped, self.last.dropped),
            grew(now.user_dropped, self.last.user_dropped),
        );
        self.last = now;
        (full + buffer > 0).then(|| {
            format!(
                "nfqueue {}: the kernel counted {} packets it could not queue for us since \
                 the last check ({full} with the queue full, {buffer} with the socket buffer \
                 full; totals {} and {}), passed unseen with fail-open, dropped without it; \
                 the engine recovers from the gaps they leave, but holes announced in them \
                 are missed: find what floods the queue",
                self.queue,
                full + buffer,
                now.dropped,
                now.user_dropped
            )
        })
    }
}

#[cfg(test)]
mod overflow_tests {
    use super::*;

    /// The kernel's line format (nfnetlink_queue.c `seq_show`).
    #[test]
    fn queue_counters_are_read_from_the_kernels_line() {
        let text = "10003   1234     0 2 65535     0     0       17  1\n\
                    10004   5678     3 2 65535    42     7     9001  1\n";
        assert_eq!(
            parse_queue_stats(text, 10004),
            Some(QueueStats {
                dropped: 42,
                user_dropped: 7
            })
        );
        assert_eq!(parse_queue_stats(text, 1), None);
        assert_eq!(parse_queue_stats("garbage\n", 10004), None);
    }

    #[test]
    fn growth_is_reported_once_with_counts() {
        let path = std::env::temp_dir().join(format!("f6p-nfq-{}", std::process::id()));
        std::fs::write(&path, "10004 1 0 2 65535 5 0 1 1\n").unwrap();
        let mut watch = OverflowWatch::new(std::fs::File::open(&path).unwrap(), 10004);
        assert_eq!(watch.check(), None, "nothing new since it started");
        std::fs::write(&path, "10004 1 0 2 65535 9 2 1 1\n").unwrap();
        let line = watch.check().unwrap();
        assert!(
            line.contains("counted 6 packets it could not queue"),
            "{line}"
        );
        assert!(
            line.contains("4 with the queue full, 2 with the socket buffer full"),
            "{line}"
        );
        assert_eq!(watch.check(), None);
        let _ = std::fs::remove_file(path);
    }
}
