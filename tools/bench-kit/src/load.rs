//! The workloads of `tools/bench`, run from the client namespace against one FTP server:
//! idle NOOP round trips, transfers per second at a given concurrency (passive and active
//! small downloads alternating, each on a fresh data connection, with a NOOP probe
//! measuring the control round trip under that load), pipelined NOOPs (N sessions each
//! keeping one outstanding), one bulk download, and paced EPSV exchanges (the announcing
//! packets whose time in the gateway `tools/bench` captures for the hole latency).
//!
//! Each workload returns `(metric, value)` pairs; times are in microseconds.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::ftp::Session;
use crate::stats::percentile;

/// Metric name and value.
pub type Metrics = Vec<(String, f64)>;

fn open_retrying(server: SocketAddr) -> Session {
    let mut tries = 0;
    loop {
        match Session::open(server) {
            Ok(s) => return s,
            Err(e) => {
                tries += 1;
                assert!(tries < 20, "cannot open a session to {server}: {e}");
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn latency(prefix: &str, samples: &mut [u64]) -> Metrics {
    samples.sort_unstable();
    vec![
        (format!("{prefix}_p50_us"), percentile(samples, 50.0)),
        (format!("{prefix}_p99_us"), percentile(samples, 99.0)),
        (format!("{prefix}_n"), samples.len() as f64),
    ]
}

/// `count` NOOP round trips, one after the other, on an otherwise idle session.
pub fn noop_idle(server: SocketAddr, count: usize) -> Metrics {
    let mut s = open_retrying(server);
    for _ in 0..50 {
        s.noop().expect("NOOP");
    }
    let mut samples: Vec<u64> = (0..count)
        .map(|_| micros(s.noop().expect("NOOP")))
        .collect();
    s.quit();
    latency("noop_idle", &mut samples)
}

/// `clients` sessions downloading `path` for `secs`, alternating passive and active, while a
/// probe session sends a NOOP every 2 ms.
pub fn transfers(server: SocketAddr, clients: usize, secs: f64, path: &str) -> Metrics {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(clients + 2));
    let probe_samples = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for i in 0..clients {
        let (stop, ok, failed, barrier) =
            (stop.clone(), ok.clone(), failed.clone(), barrier.clone());
        let path = path.to_string();
        threads.push(thread::spawn(move || {
            let mut s = open_retrying(server);
            barrier.wait();
            let mut n = i;
            while !stop.load(Ordering::Relaxed) {
                let r = if n % 2 == 0 {
                    s.get_passive(&path)
                } else {
                    s.get_active(&path)
                };
                n += 1;
                match r {
                    // A transfer that ends after the window is not counted as done...
                    Ok(_) if stop.load(Ordering::Relaxed) => break,
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    // ...but one that fails is, whenever it fails.
                    Err(e) => {
                        if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("f6pb-load: transfer failed ({clients} clients): {e}");
                        }
                        s = open_retrying(server);
                    }
                }
            }
            s.quit();
        }));
    }
    {
        let (stop, barrier, probe_samples) = (stop.clone(), barrier.clone(), probe_samples.clone());
        threads.push(thread::spawn(move || {
            let mut s = open_retrying(server);
            barrier.wait();
            let mut mine = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match s.noop() {
                    Ok(d) => mine.push(micros(d)),
                    Err(_) => s = open_retrying(server),
                }
                thread::sleep(Duration::from_millis(2));
            }
            s.quit();
            *probe_samples.lock().expect("probe lock") = mine;
        }));
    }
    barrier.wait();
    let start = Instant::now();
    thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    for t in threads {
        t.join().expect("load thread");
    }
    let done = ok.load(Ordering::Relaxed) as f64;
    let mut m = vec![
        (format!("xfer_c{clients}_per_s"), done / elapsed),
        (
            format!("xfer_c{clients}_failed"),
            failed.load(Ordering::Relaxed) as f64,
        ),
    ];
    let mut samples = std::mem::take(&mut *probe_samples.lock().expect("probe lock"));
    m.extend(latency(&format!("noop_c{clients}"), &mut samples));
    m
}

/// `sessions` sessions each keeping one NOOP outstanding for `secs`: round trips per second
/// and their latency. One thread, poll(2) over all control connections.
pub fn pipelined(server: SocketAddr, sessions: usize, secs: f64) -> Metrics {
    let mut all: Vec<Session> = (0..sessions).map(|_| open_retrying(server)).collect();
    let mut sent = vec![Instant::now(); sessions];
    let mut pending = vec![Vec::<u8>::new(); sessions];
    let mut samples = Vec::new();
    for (i, s) in all.iter_mut().enumerate() {
        s.stream().set_nonblocking(true).expect("nonblocking");
        sent[i] = Instant::now();
        s.send("NOOP").expect("NOOP");
    }
    let mut fds: Vec<libc::pollfd> = all
        .iter()
        .map(|s| libc::pollfd {
            fd: s.stream().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(secs);
    let mut done = 0u64;
    let mut chunk = [0u8; 4096];
    while Instant::now() < until {
        let nfds = libc::nfds_t::try_from(fds.len()).expect("few fds");
        // SAFETY: fds is a valid array of pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), nfds, 100) };
        if n <= 0 {
            continue;
        }
        for i in 0..fds.len() {
            if fds[i].revents == 0 {
                continue;
            }
            fds[i].revents = 0;
            let mut stream = all[i].stream();
            let got = match std::io::Read::read(&mut stream, &mut chunk) {
                Ok(0) => panic!("server closed a pipelined session"),
                Ok(got) => got,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("pipelined session: {e}"),
            };
            pending[i].extend_from_slice(&chunk[..got]);
            while let Some(end) = pending[i].iter().position(|&b| b == b'\n') {
                pending[i].drain(..=end);
                samples.push(micros(sent[i].elapsed()));
                done += 1;
                sent[i] = Instant::now();
                std::io::Write::write_all(&mut stream, b"NOOP\r\n").expect("NOOP");
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut m = vec![("pipelined_rt_per_s".to_string(), done as f64 / elapsed)];
    m.extend(latency("pipelined", &mut samples));
    m
}

/// One download of `path`; MiB/s.
pub fn bulk(server: SocketAddr, path: &str) -> Metrics {
    let mut s = open_retrying(server);
    let t = Instant::now();
    let got = s.get_passive(path);
    let secs = t.elapsed().as_secs_f64();
    s.quit();
    match got {
        Ok(bytes) => vec![
            (
                "bulk_mib_s".into(),
                bytes as f64 / f64::from(1 << 20) / secs,
            ),
            ("bulk_mib".into(), bytes as f64 / f64::from(1 << 20)),
        ],
        Err(e) => {
            eprintln!("f6pb-load: bulk download failed: {e}");
            vec![("bulk_failed".into(), 1.0)]
        }
    }
}

/// EPSV every `gap` for `secs` on one session: the announcing exchange's round trip.
pub fn epsv_paced(server: SocketAddr, secs: f64, gap: Duration) -> Metrics {
    let mut s = open_retrying(server);
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let mut samples = Vec::new();
    while Instant::now() < until {
        samples.push(micros(s.epsv().expect("EPSV").0));
        thread::sleep(gap);
    }
    s.quit();
    latency("epsv", &mut samples)
}
