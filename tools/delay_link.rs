//! `delay_link QUEUE MICROSECONDS`: holds every packet of NFQUEUE `QUEUE` for a fixed time,
//! then passes it on unchanged, in arrival order — a link delay for kernels without
//! `sch_netem` (the lab's has none: `CONFIG_NET_SCH_NETEM` is not set), used by
//! `tests/lab/copy-race` to add 1 ms and 10 ms to each direction of the client's link.
//!
//! Owns nothing of the daemon: it reuses the daemon's NFQUEUE intercept as a library and
//! decides nothing about packets. A packet is passed `delay` after this process read it
//! (plus the kernel's wake-up latency, reported at the end as the worst overshoot), so the
//! added delay is constant and the order of packets is kept. Runs until SIGTERM/SIGINT,
//! then passes everything it holds.

#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("delay_link: Linux only (NFQUEUE)");
    std::process::exit(1);
}

#[cfg(target_os = "linux")]
mod linux {
    use std::collections::VecDeque;
    use std::os::fd::{AsRawFd, BorrowedFd};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use ftp6proxy::intercept::nfqueue::NfQueue;
    use ftp6proxy::intercept::Intercept;
    use nix::poll::{PollFd, PollFlags};
    use nix::sys::signal::{SigHandler, Signal};
    use nix::sys::time::TimeSpec;

    static STOP: AtomicBool = AtomicBool::new(false);

    extern "C" fn on_signal(_: libc::c_int) {
        STOP.store(true, Ordering::Relaxed);
    }

    pub fn main() {
        let args: Vec<String> = std::env::args().collect();
        let (Some(queue), Some(micros)) = (
            args.get(1).and_then(|a| a.parse::<u16>().ok()),
            args.get(2).and_then(|a| a.parse::<u64>().ok()),
        ) else {
            eprintln!("usage: delay_link QUEUE MICROSECONDS");
            std::process::exit(64);
        };
        let delay = Duration::from_micros(micros);
        let mut queue = NfQueue::open(queue).unwrap_or_else(|e| {
            eprintln!("delay_link: {e}");
            std::process::exit(1);
        });
        for signal in [Signal::SIGTERM, Signal::SIGINT] {
            // SAFETY: the handler only stores to an atomic.
            unsafe { nix::sys::signal::signal(signal, SigHandler::Handler(on_signal)) }
                .expect("signal handler");
        }
        let mut held: VecDeque<(Instant, u32)> = VecDeque::new();
        let (mut passed, mut worst) = (0u64, Duration::ZERO);
        while !STOP.load(Ordering::Relaxed) {
            let timeout = held.front().map(|(due, _)| {
                let left = due.saturating_duration_since(Instant::now());
                TimeSpec::from_duration(left)
            });
            // SAFETY: the queue's descriptor outlives this call.
            let fd = unsafe { BorrowedFd::borrow_raw(queue.as_raw_fd()) };
            let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
            let _ = nix::poll::ppoll(&mut fds, timeout, None);
            let now = Instant::now();
            while let Ok(Some(_)) = queue.recv() {
                let id = queue.hold_current();
                held.push_back((now + delay, id));
            }
            let now = Instant::now();
            while held.front().is_some_and(|(due, _)| *due <= now) {
                let (due, id) = held.pop_front().expect("a held packet");
                worst = worst.max(now - due);
                if let Err(e) = queue.pass_held(id) {
                    eprintln!("delay_link: pass: {e}");
                }
                passed += 1;
            }
        }
        for (_, id) in held.drain(..) {
            let _ = queue.pass_held(id);
        }
        eprintln!("delay_link: passed {passed} packets {delay:?} late (worst overshoot {worst:?})");
    }
}
