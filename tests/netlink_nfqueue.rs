//! The NFQUEUE intercept against the real kernel, each test in its own network namespace.
//!
//! Needs root. A local TCP connection to port 2121 is queued by an `ip6tables`/`iptables`
//! `-j NFQUEUE` rule on OUTPUT (this kernel has no native nft `queue`); the test reads the
//! SYN through [`NfQueue`] and passes it. The connection completing proves that an ACCEPT
//! verdict without payload reinjects the packet unchanged.
#![cfg(target_os = "linux")]

#[path = "support/netns.rs"]
mod common;

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU16, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::Netns;
use ftp6proxy::intercept::nfqueue::{self, NfQueue};
use ftp6proxy::intercept::Intercept;

const PORT: u16 = 2121;
const LIMIT: Duration = Duration::from_secs(5);

/// Queue numbers differ per test so a failure in one cannot look like "queue busy" in
/// another (queues are per namespace anyway).
static NEXT_QUEUE: AtomicU16 = AtomicU16::new(4100);

/// A namespace with 2001:db8::1/64 and 192.0.2.1/24 on lo and OUTPUT to port
/// 2121 queued to a fresh queue number.
fn setup() -> (Netns, u16) {
    let ns = Netns::enter();
    // This kernel has no dummy driver; lo (up since Netns::enter) carries the addresses.
    ns.ip(&["addr", "add", "2001:db8::1/64", "dev", "lo", "nodad"]);
    ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "lo"]);
    let queue = NEXT_QUEUE.fetch_add(1, Ordering::Relaxed);
    let q = queue.to_string();
    let port = PORT.to_string();
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
            "NFQUEUE",
            "--queue-num",
            &q,
        ]);
    }
    (ns, queue)
}

/// Connects from another thread (which inherits the namespace of the thread that spawns it).
fn connect_in_background(addr: SocketAddr) -> JoinHandle<std::io::Result<TcpStream>> {
    std::thread::spawn(move || TcpStream::connect_timeout(&addr, LIMIT))
}

/// Waits (bounded) for the next queued packet and returns a copy of it.
fn next_packet(q: &mut NfQueue) -> Vec<u8> {
    let start = Instant::now();
    loop {
        if let Some(packet) = q.recv().expect("recv from nfqueue") {
            return packet.bytes.to_vec();
        }
        assert!(start.elapsed() < LIMIT, "no packet queued within 5 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Offset of the TCP header: 40 for IPv6 without extension headers, IHL*4 for IPv4.
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

/// Passes every queued packet until the listener accepts (the handshake's last ACK is
/// queued too), bounded by 5 s.
fn pump_until_accepted(q: &mut NfQueue, listener: &TcpListener) {
    listener.set_nonblocking(true).unwrap();
    let start = Instant::now();
    loop {
        while q.recv().expect("recv from nfqueue").is_some() {
            q.pass_current().expect("pass");
        }
        match listener.accept() {
            Ok(_) => return,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("accept: {e}"),
        }
        assert!(
            start.elapsed() < LIMIT,
            "connection not accepted within 5 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn syn_is_queued_and_passed_unchanged(addr: &str, version: u8) {
    let (_ns, queue) = setup();
    let addr: SocketAddr = addr.parse().unwrap();
    let listener = TcpListener::bind(addr).unwrap();
    let mut q = NfQueue::open(queue).unwrap();
    assert_eq!(q.queue_num(), queue);
    let client = connect_in_background(addr);
    let syn = next_packet(&mut q);
    assert_syn_to_port(&syn, version);
    // A locally generated packet leaves its checksum to offload (lo advertises it), and
    // with NFQA_CFG_F_GSO the kernel queues it as is and says so in NFQA_SKB_INFO.
    assert!(
        !q.current_checksum_ready(),
        "local SYN should be marked NFQA_SKB_CSUMNOTREADY"
    );
    q.pass_current().unwrap();
    pump_until_accepted(&mut q, &listener);
    client
        .join()
        .unwrap()
        .expect("connect completes after ACCEPT");
    assert_eq!(q.overflows(), 0);
    assert_eq!(q.malformed(), 0);
}

#[test]
fn v6_syn_is_queued_and_passed_unchanged() {
    syn_is_queued_and_passed_unchanged("[2001:db8::1]:2121", 6);
}

#[test]
fn v4_syn_is_queued_and_passed_unchanged() {
    syn_is_queued_and_passed_unchanged("192.0.2.1:2121", 4);
}

/// A held packet stays in the kernel until its verdict; the connection cannot complete
/// meanwhile (a SYN retransmission would be queued, not passed), and does after pass_held.
#[test]
fn held_packet_is_passed_later() {
    let (_ns, queue) = setup();
    let addr: SocketAddr = "[2001:db8::1]:2121".parse().unwrap();
    let listener = TcpListener::bind(addr).unwrap();
    let mut q = NfQueue::open(queue).unwrap();
    let client = connect_in_background(addr);
    let syn = next_packet(&mut q);
    assert_syn_to_port(&syn, 6);
    let held = q.hold_current();
    // Nothing to pass now: pass_current without a current packet does nothing.
    q.pass_current().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !client.is_finished(),
        "connect finished while its SYN was held"
    );
    q.pass_held(held).unwrap();
    pump_until_accepted(&mut q, &listener);
    client
        .join()
        .unwrap()
        .expect("connect completes after pass_held");
}

#[test]
fn nothing_waiting_is_none() {
    let (_ns, queue) = setup();
    let mut q = NfQueue::open(queue).unwrap();
    assert!(q.recv().unwrap().is_none());
    assert!(q.current_checksum_ready());
}

/// A second process-level user of the same queue gets an error that says so.
#[test]
fn second_binding_of_a_queue_is_refused_clearly() {
    let (_ns, queue) = setup();
    let _first = NfQueue::open(queue).unwrap();
    let err = NfQueue::open(queue).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("another process holds queue {queue}")),
        "{msg}"
    );
}

/// Several held packets released at once go in one datagram of verdicts; the kernel
/// takes every one of them: each connection completes.
#[test]
fn held_packets_are_passed_together() {
    let (_ns, queue) = setup();
    let addr: SocketAddr = "[2001:db8::1]:2121".parse().unwrap();
    let listener = TcpListener::bind(addr).unwrap();
    let mut q = NfQueue::open(queue).unwrap();
    let clients: Vec<_> = (0..3).map(|_| connect_in_background(addr)).collect();
    let mut held = Vec::new();
    while held.len() < 3 {
        let syn = next_packet(&mut q);
        assert_syn_to_port(&syn, 6);
        held.push(q.hold_current());
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        clients.iter().all(|c| !c.is_finished()),
        "a held SYN went on"
    );
    q.pass_all(held).unwrap();
    // Every SYN went on with that one datagram: the handshakes complete before TCP would
    // send any SYN again (1 s), and no SYN comes back to the queue.
    listener.set_nonblocking(true).unwrap();
    let start = Instant::now();
    let mut accepted = 0;
    while accepted < 3 {
        while let Some(packet) = q.recv().expect("recv from nfqueue") {
            let tcp = tcp_offset(packet.bytes);
            assert_eq!(
                packet.bytes[tcp + 13] & 0x12,
                0x10,
                "a SYN came again: a verdict was lost"
            );
            q.pass_current().expect("pass");
        }
        match listener.accept() {
            Ok(_) => accepted += 1,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept: {e}"),
        }
        assert!(
            start.elapsed() < Duration::from_millis(900),
            "{accepted} of 3 accepted"
        );
    }
    for client in clients {
        client.join().unwrap().expect("every connect completes");
    }
}

/// The queue's length is set on purpose (NFQA_CFG_QUEUE_MAXLEN): with room for one packet,
/// a second SYN finds the queue full and fail-open passes it unseen — its connection
/// completes without any verdict — while the first waits for its own.
#[test]
fn queue_length_is_set_and_a_full_queue_fails_open() {
    let (_ns, queue) = setup();
    let addr: SocketAddr = "[2001:db8::1]:2121".parse().unwrap();
    let listener = TcpListener::bind(addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    let mut q = NfQueue::open_with(queue, 1, nfqueue::RCVBUF_BYTES).unwrap();
    let first = connect_in_background(addr);
    let syn = next_packet(&mut q);
    assert_syn_to_port(&syn, 6);
    let held = q.hold_current();
    let second = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(900))
        .expect("with the queue full, the second SYN passes without a verdict");
    drop(second);
    assert!(
        !first.is_finished(),
        "the first SYN still waits for its verdict"
    );
    q.pass_held(held).unwrap();
    pump_until_accepted(&mut q, &listener);
    first
        .join()
        .unwrap()
        .expect("the first connects after its verdict");
}

/// The last id the kernel gave a packet of queue `queue` (`id_sequence`, the eighth field of
/// /proc/net/netfilter/nfnetlink_queue), read in this thread's namespace.
fn id_sequence(queue: u16) -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/net/netfilter/nfnetlink_queue")
        .expect("nfnetlink_queue in /proc");
    text.lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() >= 8 && f[0] == queue.to_string())
        .map(|f| f[7].parse().expect("id_sequence is a number"))
        .expect("the queue is listed")
}

/// With our socket's buffer full, fail-open lets packets through without a verdict. The
/// kernel had already given each its id, so the ids we read skip them: counted exactly
/// (`passed_unseen`), where the queue's own counters say nothing with fail-open. A socket
/// that holds two or three messages, twenty connections at once: every id the kernel gave
/// is either read or counted as passed unseen, and every connection completes.
#[test]
fn packets_passed_unseen_at_a_full_socket_are_counted_from_their_ids() {
    let (_ns, queue) = setup();
    let addr: SocketAddr = "[2001:db8::1]:2121".parse().unwrap();
    let listener = TcpListener::bind(addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    let mut q = NfQueue::open_with(queue, nfqueue::QUEUE_MAXLEN, 1).unwrap();
    let clients: Vec<_> = (0..20).map(|_| connect_in_background(addr)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut read = 0u64;
    let start = Instant::now();
    let mut accepted = 0;
    while accepted < clients.len() {
        while q.recv().expect("recv from nfqueue").is_some() {
            read += 1;
            q.pass_current().expect("pass");
        }
        match listener.accept() {
            Ok(_) => accepted += 1,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("accept: {e}"),
        }
        assert!(
            start.elapsed() < LIMIT,
            "{accepted} of 20 accepted within 5 s"
        );
    }
    for client in clients {
        client.join().unwrap().expect("every connect completes");
    }
    assert!(q.overflows() >= 1, "the socket reported its overflow");
    assert!(q.passed_unseen() >= 1, "some packets passed unseen");
    // One more connection with the socket drained: its packets are read, so the last id
    // given is one we read, and every id is accounted for.
    let last = connect_in_background(addr);
    let start = Instant::now();
    loop {
        while q.recv().expect("recv from nfqueue").is_some() {
            read += 1;
            q.pass_current().expect("pass");
        }
        if listener.accept().is_ok() {
            break;
        }
        assert!(start.elapsed() < LIMIT, "the last connection not accepted");
    }
    last.join().unwrap().expect("connects");
    std::thread::sleep(Duration::from_millis(50));
    while q.recv().expect("recv from nfqueue").is_some() {
        read += 1;
        q.pass_current().expect("pass");
    }
    assert_eq!(
        read + q.passed_unseen(),
        id_sequence(queue),
        "every id the kernel gave was read or counted as passed unseen"
    );
}

/// recvmmsg(2) on a netlink socket, as the NFQUEUE reader uses it: every datagram waiting
/// is read with one call, at most as many as there are buffers, in order; a datagram
/// longer than its buffer reports its full length (MSG_TRUNC), so the reader can tell it
/// was cut; nothing waiting is `WouldBlock`. The datagrams are the kernel's answers to
/// read-only requests (`NFT_MSG_GETGEN` with an acknowledgement: an answer and an ACK
/// each, sent before `sendto` returns).
#[test]
fn several_datagrams_are_read_with_one_call() {
    use ftp6proxy::netlink::{build_getgen, Socket};
    let (_ns, _queue) = setup();
    let mut sock = Socket::open().unwrap();
    for _ in 0..3 {
        let seq = sock.next_seq();
        sock.send(&build_getgen(seq)).unwrap();
    }
    let mut bufs = vec![vec![0u8; 4096]; 4];
    let mut lens = vec![0usize; 4];
    assert_eq!(
        sock.recv_many(&mut bufs, &mut lens).unwrap(),
        4,
        "as many as there are buffers"
    );
    // Each answer is followed by its ACK (type NLMSG_ERROR = 2, error 0).
    let ty = |buf: &[u8]| u16::from_ne_bytes([buf[4], buf[5]]);
    assert_eq!(ty(&bufs[1]), 2);
    assert_eq!(ty(&bufs[3]), 2);
    assert!(lens.iter().all(|&n| n >= 16), "{lens:?}");
    // The last answer into a buffer too small for it: its full length is reported.
    let mut small = vec![vec![0u8; 8]; 4];
    let got = sock.recv_many(&mut small, &mut lens).unwrap();
    assert_eq!(got, 2, "the rest: one answer and one ACK");
    assert!(lens[0] > 8, "full length of a cut datagram: {lens:?}");
    let nothing = sock.recv_many(&mut bufs, &mut lens).unwrap_err();
    assert_eq!(nothing.kind(), ErrorKind::WouldBlock);
}
