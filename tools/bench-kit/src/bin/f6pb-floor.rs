//! The floor of any userspace FTP helper on Linux: a do-nothing NFQUEUE reader that accepts
//! every packet at once (issue 12). `tools/bench` compares ftp6proxy against it.
//!
//! Owns one queue, bound with raw libc netlink, not with the daemon's `src/netlink.rs` /
//! `src/intercept/nfqueue.rs`: those carry what a real helper needs (bounds-checked parsing
//! of every attribute, a non-blocking socket behind an event loop, whole packets, logging),
//! and the floor must be what a do-nothing reader costs and no more. So: one blocking
//! `recv` per datagram, the packet id read at a fixed offset after a bounds check, a copy
//! range of 128 bytes (`--copy-range`; the lab's control packets are shorter anyway, so the
//! daemon's 0xffff copies the same bytes), and one `NFQNL_MSG_VERDICT_BATCH` per datagram
//! accepting every id up to the last one read, without payload and without an ACK. Same
//! queue flags as the daemon (fail-open, GSO), so both see the same packets.
//!
//! Usage: f6pb-floor QUEUE [--copy-range N]   (as root, in the gateway's namespace)

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("f6pb-floor: NFQUEUE is Linux only");
    std::process::exit(1);
}

#[cfg(target_os = "linux")]
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = || -> ! {
        eprintln!("usage: f6pb-floor QUEUE [--copy-range N]");
        std::process::exit(64)
    };
    let queue: u16 = args
        .get(1)
        .and_then(|q| q.parse().ok())
        .unwrap_or_else(|| usage());
    let copy_range: u32 = match args.get(2).map(String::as_str) {
        Some("--copy-range") => args
            .get(3)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| usage()),
        Some(_) => usage(),
        None => 128,
    };
    if let Err(e) = floor::run(queue, copy_range) {
        eprintln!("f6pb-floor: {e}");
        std::process::exit(1);
    }
}

#[cfg(target_os = "linux")]
mod floor {
    use std::io;

    const NFNL_SUBSYS_QUEUE: u16 = 3;
    const NFQNL_MSG_PACKET: u16 = 0;
    const NFQNL_MSG_CONFIG: u16 = 2;
    const NFQNL_MSG_VERDICT_BATCH: u16 = 3;
    const NFQA_PACKET_HDR: u16 = 1;
    const NFQA_VERDICT_HDR: u16 = 2;
    const NFQA_CFG_CMD: u16 = 1;
    const NFQA_CFG_PARAMS: u16 = 2;
    const NFQA_CFG_MASK: u16 = 4;
    const NFQA_CFG_FLAGS: u16 = 5;
    const NFQNL_CFG_CMD_BIND: u8 = 1;
    const NFQNL_COPY_PACKET: u8 = 2;
    const FLAGS: u32 = 1 | 4; // NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO, as the daemon
    const NF_ACCEPT: u32 = 1;
    const NLMSG_HDRLEN: usize = 16;
    const NFGEN_HDRLEN: usize = 4;

    fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(ret)
        }
    }

    /// nlmsghdr + nfgenmsg (AF_UNSPEC, version 0, res_id = queue) + attributes.
    fn message(ty: u16, flags: u16, seq: u32, queue: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut m = vec![0u8; NLMSG_HDRLEN];
        m.extend_from_slice(&[0, 0]);
        m.extend_from_slice(&queue.to_be_bytes());
        for (kind, data) in attrs {
            let len = u16::try_from(4 + data.len()).expect("small attribute");
            m.extend_from_slice(&len.to_ne_bytes());
            m.extend_from_slice(&kind.to_ne_bytes());
            m.extend_from_slice(data);
            while !m.len().is_multiple_of(4) {
                m.push(0);
            }
        }
        let len = u32::try_from(m.len()).expect("small message");
        m[0..4].copy_from_slice(&len.to_ne_bytes());
        m[4..6].copy_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | ty).to_ne_bytes());
        m[6..8].copy_from_slice(&flags.to_ne_bytes());
        m[8..12].copy_from_slice(&seq.to_ne_bytes());
        m
    }

    fn send(fd: libc::c_int, m: &[u8]) -> io::Result<()> {
        // SAFETY: m is a valid buffer of m.len() bytes; the socket is connected to the kernel.
        check(unsafe { libc::send(fd, m.as_ptr().cast(), m.len(), 0) as libc::c_int })?;
        Ok(())
    }

    /// Sends a config request with NLM_F_ACK and returns the kernel's errno (0 = done).
    fn request(fd: libc::c_int, m: &[u8]) -> io::Result<()> {
        send(fd, m)?;
        let mut buf = [0u8; 8192];
        // SAFETY: buf is writable for its length.
        let n = check(unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) as i32 })?;
        let n = usize::try_from(n).unwrap_or(0);
        if n >= NLMSG_HDRLEN + 4 && u16::from_ne_bytes([buf[4], buf[5]]) == 2 {
            let errno = i32::from_ne_bytes(buf[16..20].try_into().expect("4 bytes"));
            if errno != 0 {
                return Err(io::Error::from_raw_os_error(-errno));
            }
        }
        Ok(())
    }

    pub fn run(queue: u16, copy_range: u32) -> io::Result<()> {
        // SAFETY: plain socket(2) call.
        let fd = check(unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        })?;
        // SAFETY: sockaddr_nl is plain data; zero is a valid value.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let sa_len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: sa is a valid sockaddr_nl of sa_len bytes.
        check(unsafe { libc::bind(fd, (&raw const sa).cast(), sa_len) })?;
        let rcvbuf: libc::c_int = 8 << 20;
        // SAFETY: valid int option; failure (no CAP_NET_ADMIN) only leaves the default.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&raw const rcvbuf).cast(),
                4,
            );
        }
        let req = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
        let bind = [NFQNL_CFG_CMD_BIND, 0, 0, 0];
        request(
            fd,
            &message(NFQNL_MSG_CONFIG, req, 1, queue, &[(NFQA_CFG_CMD, &bind)]),
        )
        .map_err(|e| io::Error::new(e.kind(), format!("bind queue {queue}: {e}")))?;
        let mut params = copy_range.to_be_bytes().to_vec();
        params.push(NFQNL_COPY_PACKET);
        request(
            fd,
            &message(
                NFQNL_MSG_CONFIG,
                req,
                2,
                queue,
                &[
                    (NFQA_CFG_PARAMS, &params),
                    (NFQA_CFG_MASK, &FLAGS.to_be_bytes()),
                    (NFQA_CFG_FLAGS, &FLAGS.to_be_bytes()),
                ],
            ),
        )
        .map_err(|e| io::Error::new(e.kind(), format!("configure queue {queue}: {e}")))?;
        eprintln!("f6pb-floor: queue {queue} bound, copy range {copy_range}");

        let mut verdict = message(
            NFQNL_MSG_VERDICT_BATCH,
            libc::NLM_F_REQUEST as u16,
            0,
            queue,
            &[(NFQA_VERDICT_HDR, &[0u8; 8])],
        );
        verdict[NLMSG_HDRLEN + NFGEN_HDRLEN + 4..][..4].copy_from_slice(&NF_ACCEPT.to_be_bytes());
        let id_at = NLMSG_HDRLEN + NFGEN_HDRLEN + 8;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            // SAFETY: buf is writable for its length.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            let Ok(n) = usize::try_from(n) else {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR | libc::ENOBUFS) => continue,
                    _ => return Err(e),
                }
            };
            let mut last = None;
            let mut at = 0;
            while at + NLMSG_HDRLEN <= n {
                let len = u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4")) as usize;
                let ty = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
                if len < NLMSG_HDRLEN || at + len > n {
                    break;
                }
                // The first attribute of a packet message is NFQA_PACKET_HDR (the kernel
                // puts it there); its first 4 bytes are the big-endian packet id.
                let a = at + NLMSG_HDRLEN + NFGEN_HDRLEN;
                if ty == (NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET)
                    && a + 8 <= at + len
                    && u16::from_ne_bytes([buf[a + 2], buf[a + 3]]) == NFQA_PACKET_HDR
                {
                    last = Some(u32::from_be_bytes(buf[a + 4..a + 8].try_into().expect("4")));
                }
                at += (len + 3) & !3;
            }
            if let Some(id) = last {
                verdict[id_at..id_at + 4].copy_from_slice(&id.to_be_bytes());
                send(fd, &verdict)?;
            }
        }
    }
}
