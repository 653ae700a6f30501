//! The NFLOG copy source against the real kernel, each test in its own private network
//! namespace (`f6pc-*`, never the lab's `f6p-*` names).
//!
//! Needs root, `ip`, `iptables`/`ip6tables` and `nft`: without them the tests fail and say
//! so. A local TCP connection to port 2121 is logged to a group by an iptables `-j NFLOG`
//! rule or an nft `log group` rule on OUTPUT; the tests read the copies through [`NfLog`].
//! What they show:
//! - a copy is taken and the packet goes on without waiting: the connection completes
//!   before anything is read (copy mode holds nothing);
//! - both feeds work on this kernel, for IPv6 and IPv4, without `NFULNL_CFG_CMD_PF_BIND`
//!   (the namespace's default loggers stay as they were);
//! - **receiving needs no privilege once the group is bound**: a child process that got the
//!   bound socket and dropped to uid/gid 65534 with no capability reads copies, and the
//!   kernel refuses its attempt to unbind the group (EPERM), which changes nothing;
//! - a copy of a locally sent segment carries an unfinished TCP checksum, which is why
//!   NFLOG copies are never checksum-verified.
#![cfg(target_os = "linux")]

#[path = "support/netns.rs"]
mod common;

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use common::Netns;
use ftp6proxy::intercept::nflog::{build_config_cmd, NfLog, NFULNL_CFG_CMD_UNBIND};
use ftp6proxy::intercept::CopySource;
use ftp6proxy::netlink::{messages, parse_error, NLMSG_ERROR};

const PORT: u16 = 2121;
const LIMIT: Duration = Duration::from_secs(5);
/// `NF_INET_LOCAL_OUT`: the copies here are taken on OUTPUT.
const NF_INET_LOCAL_OUT: u8 = 3;
/// Environment of the child process in [`receiving_needs_no_privilege_after_bind`].
const CHILD_ENV: &str = "F6PC_NFLOG_CHILD";

static NEXT_GROUP: AtomicU16 = AtomicU16::new(6100);

/// How the namespace's OUTPUT copies are fed to the group.
#[derive(Clone, Copy, Debug)]
enum Feed {
    /// `ip6tables`/`iptables -A OUTPUT -p tcp --dport 2121 -j NFLOG --nflog-group N`.
    Iptables,
    /// nft `tcp dport 2121 log group N` in an inet table's output chain.
    Nft,
}

/// A private namespace with 2001:db8::1/64 and 192.0.2.1/24 on lo, and copies of OUTPUT
/// segments to port 2121 fed to a fresh group.
fn setup(feed: Feed) -> (Netns, u16) {
    let ns = Netns::enter_named("f6pc-nl");
    ns.ip(&["addr", "add", "2001:db8::1/64", "dev", "lo", "nodad"]);
    ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "lo"]);
    let group = NEXT_GROUP.fetch_add(1, Ordering::Relaxed);
    let (g, port) = (group.to_string(), PORT.to_string());
    match feed {
        Feed::Iptables => {
            for tool in ["ip6tables", "iptables"] {
                ns.exec(&[
                    tool,
                    "-A",
                    "OUTPUT",
                    "-p",
                    "tcp",
                    "--dport",
                    &port,
                    "-j",
                    "NFLOG",
                    "--nflog-group",
                    &g,
                ]);
            }
        }
        Feed::Nft => {
            ns.nft(&format!(
                "add table inet f6pc; \
                 add chain inet f6pc out {{ type filter hook output priority 0; }}; \
                 add rule inet f6pc out tcp dport {PORT} log group {group}"
            ));
        }
    }
    (ns, group)
}

/// Waits (bounded) for the next copy and returns its bytes and hook.
fn next_copy(log: &mut NfLog) -> (Vec<u8>, Option<u8>, Option<u32>) {
    let start = Instant::now();
    loop {
        if let Some(copy) = log.recv().expect("recv from nflog") {
            return (copy.bytes.to_vec(), copy.meta.hook, copy.meta.outdev);
        }
        assert!(start.elapsed() < LIMIT, "no copy arrived within 5 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn tcp_offset(packet: &[u8]) -> usize {
    match packet[0] >> 4 {
        6 => {
            assert_eq!(packet[6], 6, "next header is TCP");
            40
        }
        4 => {
            assert_eq!(packet[9], 6, "protocol is TCP");
            usize::from(packet[0] & 0x0f) * 4
        }
        v => panic!("IP version {v}"),
    }
}

fn assert_syn_to_port(packet: &[u8], version: u8) {
    assert_eq!(packet[0] >> 4, version, "IP version nibble");
    let tcp = tcp_offset(packet);
    assert_eq!(u16::from_be_bytes([packet[tcp + 2], packet[tcp + 3]]), PORT);
    let flags = packet[tcp + 13];
    assert_eq!(flags & 0x12, 0x02, "SYN without ACK, flags {flags:#x}");
}

/// Whether the TCP checksum in `packet` is the full one (RFC 793 / RFC 8200 §8.1
/// pseudo-header).
fn tcp_checksum_ok(packet: &[u8]) -> bool {
    let tcp = tcp_offset(packet);
    let segment = &packet[tcp..];
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            sum += hi | pair.get(1).copied().map_or(0, u32::from);
        }
    };
    let len = u32::try_from(segment.len()).unwrap();
    if packet[0] >> 4 == 6 {
        add(&packet[8..40]);
        add(&len.to_be_bytes());
        add(&[0, 0, 0, 6]);
    } else {
        add(&packet[12..20]);
        add(&[0, 6]);
        add(&u16::try_from(len).unwrap().to_be_bytes());
    }
    add(segment);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum == 0xffff
}

fn loopback_index() -> u32 {
    // SAFETY: a NUL-terminated name.
    unsafe { libc::if_nametoindex(c"lo".as_ptr()) }
}

/// The namespace's default loggers (`/proc/net/netfilter/nf_log`, read through the
/// calling thread, which is the one in the namespace).
fn default_loggers() -> String {
    std::fs::read_to_string("/proc/thread-self/net/netfilter/nf_log")
        .expect("read /proc/thread-self/net/netfilter/nf_log")
}

fn syn_is_copied_and_not_held(feed: Feed, addr: &str, version: u8) {
    let (_ns, group) = setup(feed);
    let loggers_before = default_loggers();
    let addr: SocketAddr = addr.parse().unwrap();
    let listener = TcpListener::bind(addr).unwrap();
    let mut log = NfLog::bind(group).unwrap();
    assert_eq!(log.group(), group);
    assert_eq!(
        default_loggers(),
        loggers_before,
        "binding the group changed no default logger (no PF_BIND)"
    );
    // Nothing is read yet: the handshake completes anyway, the copies only wait for us.
    let stream = TcpStream::connect_timeout(&addr, LIMIT)
        .expect("connect completes without anyone reading the copies");
    let (syn, hook, outdev) = next_copy(&mut log);
    assert_syn_to_port(&syn, version);
    assert_eq!(hook, Some(NF_INET_LOCAL_OUT));
    assert_eq!(outdev, Some(loopback_index()));
    assert!(
        !tcp_checksum_ok(&syn),
        "the copy of a locally sent SYN carries a finished checksum: this kernel completes \
         checksums before logging, so NFLOG copies could be verified after all"
    );
    // The handshake's ACK is copied too, and nothing was lost on the way.
    let (ack, _, _) = next_copy(&mut log);
    assert_eq!(ack[tcp_offset(&ack) + 13] & 0x12, 0x10, "the ACK");
    assert_eq!(log.lost(), 0);
    assert_eq!((log.overflows(), log.malformed()), (0, 0));
    assert!(log.recv().unwrap().is_none(), "nothing else was copied");
    drop((stream, listener));
}

#[test]
fn iptables_nflog_copies_a_v6_syn_without_holding_it() {
    syn_is_copied_and_not_held(Feed::Iptables, "[2001:db8::1]:2121", 6);
}

#[test]
fn iptables_nflog_copies_a_v4_syn_without_holding_it() {
    syn_is_copied_and_not_held(Feed::Iptables, "192.0.2.1:2121", 4);
}

#[test]
fn nft_log_group_copies_a_v6_syn_without_holding_it() {
    syn_is_copied_and_not_held(Feed::Nft, "[2001:db8::1]:2121", 6);
}

#[test]
fn nft_log_group_copies_a_v4_syn_without_holding_it() {
    syn_is_copied_and_not_held(Feed::Nft, "192.0.2.1:2121", 4);
}

#[test]
fn nothing_waiting_is_none() {
    let (_ns, group) = setup(Feed::Iptables);
    let mut log = NfLog::bind(group).unwrap();
    assert!(log.recv().unwrap().is_none());
}

#[test]
fn second_binding_of_a_group_is_refused_clearly() {
    let (_ns, group) = setup(Feed::Nft);
    let _first = NfLog::bind(group).unwrap();
    let msg = NfLog::bind(group).unwrap_err().to_string();
    assert!(
        msg.contains(&format!("another process holds group {group}")),
        "{msg}"
    );
}

/// The privilege finding: bound as root, the socket goes to a child process that drops to
/// uid/gid 65534 with no capability; it still reads copies, and cannot unbind the group.
#[test]
fn receiving_needs_no_privilege_after_bind() {
    let (_ns, group) = setup(Feed::Nft);
    let addr: SocketAddr = "[2001:db8::1]:2121".parse().unwrap();
    let _listener = TcpListener::bind(addr).unwrap();
    let fd = NfLog::bind(group).unwrap().into_fd();
    // The child gets a descriptor without close-on-exec; ours is closed after the spawn,
    // so from then on only the child holds the group.
    // SAFETY: dup(2) of a descriptor we own; the result is checked and owned below.
    let inherited = unsafe { libc::dup(fd.as_raw_fd()) };
    assert!(inherited >= 0, "dup: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh descriptor nothing else owns.
    let inherited = unsafe { OwnedFd::from_raw_fd(inherited) };
    drop(fd);
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_reads_copies_without_privilege",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{} {group}", inherited.as_raw_fd()))
        .output()
        .expect("run the child");
    drop(inherited);
    let out = String::from_utf8_lossy(&child.stdout);
    let err = String::from_utf8_lossy(&child.stderr);
    assert!(
        child.status.success() && out.contains("1 passed"),
        "child failed ({}):\n{out}\n{err}",
        child.status
    );
    assert!(out.contains("child: CapEff 0000000000000000"), "{out}");
}

/// Run only by [`receiving_needs_no_privilege_after_bind`] in a child process.
#[test]
#[ignore = "helper: run by receiving_needs_no_privilege_after_bind in a child process"]
fn child_reads_copies_without_privilege() {
    let spec = std::env::var(CHILD_ENV)
        .expect("this helper runs only as receiving_needs_no_privilege_after_bind's child");
    let mut words = spec.split_whitespace();
    let raw: i32 = words.next().unwrap().parse().unwrap();
    let group: u16 = words.next().unwrap().parse().unwrap();
    // SAFETY: the parent passed this descriptor to us, and nothing else here owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };

    // Drop to nobody: with every uid non-zero the kernel clears the permitted and
    // effective capability sets (capabilities(7), "Effect of user ID changes").
    let nobody_gid = nix::unistd::Gid::from_raw(65534);
    let nobody_uid = nix::unistd::Uid::from_raw(65534);
    nix::unistd::setgroups(&[]).unwrap();
    nix::unistd::setresgid(nobody_gid, nobody_gid, nobody_gid).unwrap();
    nix::unistd::setresuid(nobody_uid, nobody_uid, nobody_uid).unwrap();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(field("CapEff:"), "0000000000000000");
    assert_eq!(field("CapPrm:"), "0000000000000000");
    assert!(field("Uid:").split_whitespace().all(|u| u == "65534"));
    println!("child: CapEff {}", field("CapEff:"));

    // Receiving works.
    let addr: SocketAddr = SocketAddr::new(IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]), PORT);
    let first = TcpStream::connect_timeout(&addr, LIMIT).expect("connect as nobody");
    let mut log = NfLog::from_fd(fd, group);
    let (syn, _, _) = next_copy(&mut log);
    assert_syn_to_port(&syn, 6);
    let (_ack, _, _) = next_copy(&mut log);
    drop(first);
    // Drain the FIN's copies, if any came yet.
    std::thread::sleep(Duration::from_millis(100));
    while log.recv().unwrap().is_some() {}

    // Changing anything does not: the kernel refuses a configuration message from a
    // process without CAP_NET_ADMIN (nfnetlink_rcv), even on the socket that holds the
    // group. NfLog has no send method, so this goes around it on purpose.
    let seq = 0x00f6_0c01;
    let unbind = build_config_cmd(group, NFULNL_CFG_CMD_UNBIND, seq);
    // SAFETY: `unbind` is valid for its length; the kernel's address is implied.
    let sent = unsafe { libc::send(log.as_raw_fd(), unbind.as_ptr().cast(), unbind.len(), 0) };
    assert_eq!(usize::try_from(sent).ok(), Some(unbind.len()));
    let errno = answer_to(log.as_raw_fd(), seq);
    assert_eq!(
        errno,
        libc::EPERM,
        "unbind from an unprivileged process must be refused"
    );

    // And the group is still bound: the next connection is copied as well.
    let second = TcpStream::connect_timeout(&addr, LIMIT).expect("connect again");
    let (syn, _, _) = next_copy(&mut log);
    assert_syn_to_port(&syn, 6);
    drop(second);
    println!("child: received as uid 65534, unbind refused with EPERM");
}

/// Reads datagrams from the (non-blocking) socket until the kernel's answer to `seq`,
/// skipping copies; returns its errno (0 = acknowledged).
fn answer_to(fd: i32, seq: u32) -> i32 {
    let mut buf = vec![0u8; 0x1_0000 + 4096];
    let start = Instant::now();
    loop {
        // SAFETY: buf is valid for writes of its length.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if let Ok(n) = usize::try_from(n) {
            for msg in messages(&buf[..n]).flatten() {
                if msg.ty == NLMSG_ERROR && msg.seq == seq {
                    return parse_error(msg.payload).unwrap();
                }
            }
        }
        assert!(start.elapsed() < LIMIT, "no answer to the unbind request");
        std::thread::sleep(Duration::from_millis(5));
    }
}
