//! Daemon plumbing: the order in which ftp6proxy comes up, splits in three (two in copy
//! mode), and goes down.
//!
//! Startup follows OpenBSD ftp-proxy's `main`: validate options (done in `cli`), lock the
//! pidfile, resolve the jail or network namespace (`-j`) the sockets are made in, open and
//! check the firewall, bind the intercept socket (exclusive, so only one instance ever
//! cleans up), deal with what a predecessor left, detach; then the process becomes the
//! privileged [`monitor`], which alone talks to the firewall and starts its two children
//! ([`spawn`]): the unprivileged [`worker`] (packet I/O) and the sandboxed [`parser`] (the
//! engine), and starts them again when they die. In copy mode (`--intercept
//! tee|netgraph|nflog`) the copy source is opened where the intercept would be, and the
//! monitor's only child is the parser, which reads the copies itself. Every message
//! between the processes is in [`messages`]. Owns process-level concerns only; no packet or FTP logic.

pub mod handover;
pub mod link;
pub mod logging;
pub mod messages;
pub mod monitor;
pub mod parser;
pub mod pidfile;
pub mod privdrop;
pub mod privsep;
pub mod signals;
pub mod spawn;
pub mod worker;

#[cfg(test)]
mod test_packets;

mod platform;

use anyhow::Context;

use crate::cli::{FirewallKind, Foreground, Settings};
use pidfile::Pidfile;
use privsep::Validator;
use signals::SignalPipe;
use spawn::Handover;

/// `--cpu N`: this process, and every process it forks from now on, runs on CPU `cpu`.
///
/// Why: a packet crosses the worker and the parser and comes back, three wake-ups where
/// the NFQUEUE floor has one. When the two run on different CPUs each hand-over is a
/// cross-CPU wake-up (an inter-processor interrupt; a VM exit on a virtual machine); on
/// one CPU it is a local context switch. Measured in the bench lab (2 vCPUs): NOOP p50
/// from about 2x the floor to 1.4x (A/B interleaved) or 1.8x (a full `tools/bench` run),
/// p99 from 1.9x to 1.5x; but round trips/s under the 32-session load about a quarter
/// lower, the three processes sharing one CPU. Latency for throughput: an option, not a
/// default.
///
/// A fork inherits the forking thread's mask: Linux's sched_setaffinity(2) ("a child
/// created by fork(2) inherits its parent's CPU affinity mask"); FreeBSD's libc
/// sched_setaffinity (lib/libc/gen/sched_setaffinity.c) sets the calling thread's mask
/// through cpuset_setaffinity(CPU_LEVEL_WHICH, CPU_WHICH_TIDPID, -1, ...), and a forked
/// thread takes the forking thread's set (sys/kern/sched_ule.c, sched_4bsd.c:
/// sched_fork_thread, `child->td_cpuset = cpuset_ref(td->td_cpuset)`). The monitor forks
/// every child from its only thread.
fn run_on_cpu(cpu: usize) -> anyhow::Result<()> {
    use nix::sched::{sched_setaffinity, CpuSet};
    let mut set = CpuSet::new();
    set.set(cpu).map_err(|_| {
        anyhow::anyhow!(
            "--cpu {cpu}: this system names CPUs 0..{} only",
            CpuSet::count() - 1
        )
    })?;
    sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).with_context(|| {
        format!("--cpu {cpu}: cannot run on CPU {cpu} (no such CPU, or not in this process's allowed set)")
    })
}

/// `--sched-policy batch` (Linux): every process of the daemon under `SCHED_BATCH`, set by
/// the monitor before it forks (sched(7): a child inherits its parent's policy). A woken
/// `SCHED_BATCH` task does not preempt the running one (kernel/sched/fair.c
/// `check_preempt_wakeup_fair`: "BATCH and IDLE tasks do not preempt others"), so a packet
/// handed from the worker to the parser, or a pass handed back, no longer interrupts the
/// sender in the middle of its turn: the receiver runs when the sender sleeps, and finds
/// every packet of the turn waiting. Measured in tools/bench (BENCHMARKS.md): NOOP round
/// trip p50 from 2.1 to 1.4 times the bare queue reader's, p99 from 1.9 to 1.3-1.5. Moving
/// between SCHED_OTHER
/// and SCHED_BATCH needs no privilege (kernel/sched/core.c, syscalls.c from 6.10:
/// `user_check_sched_setscheduler` checks only the nice value for a fair policy). A policy chosen by whoever started the daemon (chrt,
/// systemd's CPUSchedulingPolicy=) other than SCHED_OTHER is kept.
#[cfg(target_os = "linux")]
fn run_batch() {
    // SAFETY: plain syscalls on this process; `param` outlives the call.
    let current = unsafe { libc::sched_getscheduler(0) };
    if current != libc::SCHED_OTHER {
        log::info!("scheduling policy {current} kept (started with it): not SCHED_BATCH");
        return;
    }
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: as above.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
        log::warn!(
            "cannot run under SCHED_BATCH ({}): staying with SCHED_OTHER",
            std::io::Error::last_os_error()
        );
    }
}

/// Runs the daemon; returns the process exit status.
///
/// # Errors
/// Startup failures, each with the step that failed.
pub fn run(settings: &Settings) -> anyhow::Result<i32> {
    logging::init(settings.foreground, settings.facility);
    // Handlers before anything can be signalled: a SIGHUP or SIGTERM that arrives while the
    // daemon starts must be an event, not the default action (death, holes left behind).
    let signals = SignalPipe::install().context("signal handlers")?;
    // The pidfile first: a second instance must stop before it touches anything, and the
    // path is the host's even when -j attaches to a jail with a root of its own.
    let mut pidfile = match (settings.foreground, settings.check) {
        (Foreground::No, false) => Some(Pidfile::lock(&settings.pidfile)?),
        // A service manager (systemd) runs -d and names a pidfile: it gets the lock and the
        // hand-over at restarts all the same.
        (Foreground::Yes | Foreground::Debug, false) if settings.pidfile_given => {
            Some(Pidfile::lock(&settings.pidfile)?)
        }
        _ => None,
    };
    // Before anything is forked: every process of the daemon inherits the CPU.
    if let Some(cpu) = settings.cpu {
        run_on_cpu(cpu)?;
    }
    #[cfg(target_os = "linux")]
    if settings.sched_policy == crate::cli::SchedPolicy::Batch && !settings.check {
        run_batch();
    }
    // -j names where the sockets and firewall tools work; the daemon stays on the host,
    // where rc.subr sees it and its pidfile, syslog, user and chroot are (see `jail`).
    let target = settings
        .target
        .as_deref()
        .map(platform::resolve_target)
        .transpose()?;
    let mut firewall = platform::open_firewall(settings, target.as_ref())?;
    if settings.check {
        return check_only(settings, target.as_ref(), firewall.as_mut());
    }
    // The error names the operation ("firewall check: ..."): no second context.
    firewall.check()?;
    // A ruleset that feeds nothing to the queue gives a daemon that waits in silence.
    if let Err(e) = firewall.check_ruleset(&feed(settings)) {
        log::warn!(
            "{}; see ftp6proxy --check",
            format!("{e:#}").replace('\n', "; ")
        );
    }
    // Binding the queue, divert port or NFLOG group is exclusive: only the instance that
    // gets it may clean the firewall of leftovers, never a second one started by mistake.
    // A copy source is opened here too, while the monitor still has the privilege binding
    // needs; the sandboxed parser only reads it.
    let packets = if settings.intercept.is_copy() {
        spawn::Packets::Copies(platform::open_copy_source(settings, target.as_ref())?)
    } else {
        spawn::Packets::Inline(platform::open_intercept(settings, target.as_ref())?)
    };
    // The kernel's drop counters for the queue, opened where the queue lives (copy
    // sources count their own losses: the parser's status line).
    let overflow = match packets {
        spawn::Packets::Inline(_) => platform::overflow_watch(settings, target.as_ref()),
        spawn::Packets::Copies(_) => None,
    };
    // What an earlier run left: live holes that expire by themselves are adopted (a
    // transfer announced just before a restart keeps its hole), the rest removed.
    let taken = firewall.take_over(settings.engine.ttl)?;
    if taken.removed > 0 {
        log::info!("removed {} holes left by an earlier run", taken.removed);
    }
    if taken.kept > 0 {
        log::info!(
            "left {} live holes of an earlier run to expire by themselves (within {}s)",
            taken.kept,
            settings.engine.ttl.as_secs()
        );
    }
    // The previous instance's connections, if it stopped gracefully, and the file this
    // one leaves for the next (only with a pidfile: it names the instance).
    let handover = match pidfile {
        Some(_) => take_handover(settings)?,
        None => Handover::default(),
    };
    if settings.foreground == Foreground::No {
        // Detached, syslog is the only voice left: say so now if nobody listens there.
        let socket = std::path::Path::new(logging::SYSLOG_SOCKET);
        if !logging::syslog_reachable(socket) {
            eprintln!(
                "ftp6proxy: warning: no syslog daemon answers at {}: once detached, \
                 ftp6proxy's log goes nowhere (start syslogd, or run in the foreground with -d)",
                socket.display()
            );
        }
        nix::unistd::daemon(false, false).context("detach (daemon(3))")?;
    }
    if let Some(pidfile) = pidfile.as_mut() {
        pidfile.write_pid()?;
    }
    log::info!("{}", describe(settings));
    // The worker and the parser log through the monitor (see `logging`).
    let (log_reader, log_writer) = link::datagram_pair().context("socketpair for the log")?;
    link::set_nonblocking(&log_reader).context("log link")?;
    // Resolve the children's identity while the password database is still reachable.
    let identity = privdrop::resolve(settings.user.as_deref())?;
    if settings.foreground != Foreground::Debug && settings.firewall == FirewallKind::Nft {
        privdrop::confine_monitor().context("confine the monitor")?;
    }
    let validator = Validator::new(
        settings.engine.base,
        settings.engine.count,
        settings.engine.ttl,
    );
    let children = spawn::Processes::new(settings, identity, packets, log_writer, handover);
    let code = monitor::run(
        firewall.as_mut(),
        validator,
        children,
        monitor::Links {
            log: log_reader,
            overflow,
        },
        &signals,
    );
    log::info!("exiting");
    if let Some(pidfile) = pidfile {
        pidfile.remove();
    }
    Ok(code)
}

/// Takes the previous instance's hand-over (see `handover`) and creates this one's.
fn take_handover(settings: &Settings) -> anyhow::Result<Handover> {
    let path = handover::path_for(&settings.pidfile);
    let max = handover::max_bytes(settings.engine.max_connections);
    let found = handover::take(&path, max, std::time::SystemTime::now())
        .with_context(|| format!("hand-over file {}", path.display()))?;
    let inherited = match found {
        handover::Found::Nothing => None,
        handover::Found::Empty => {
            log::info!(
                "the previous instance did not stop gracefully: its connections are joined \
                 mid-stream"
            );
            None
        }
        handover::Found::Stale(why) => {
            log::warn!("hand-over file {} not taken: {why}", path.display());
            None
        }
        handover::Found::State(bytes) => Some(bytes),
    };
    let out = handover::create(&path)
        .with_context(|| format!("create the hand-over file {}", path.display()))?;
    Ok(Handover {
        inherited,
        out: Some(out),
    })
}

/// What the intercept needs the ruleset to send it.
fn feed(settings: &Settings) -> crate::firewall::Feed {
    crate::firewall::Feed {
        queue: settings.port,
        kind: if settings.intercept.is_copy() {
            crate::firewall::FeedKind::Copies
        } else {
            crate::firewall::FeedKind::Packets
        },
        ftp_ports: settings.engine.ftp_ports.to_vec(),
    }
}

/// `--check`: the sets, the intercept socket or copy source (bound, then released), the
/// rules that feed it and use the holes, and the `-u` user, each checked and every missing
/// piece named; exit 1 if any is.
fn check_only(
    settings: &Settings,
    target: Option<&crate::jail::Target>,
    firewall: &mut dyn crate::firewall::Firewall,
) -> anyhow::Result<i32> {
    let mut missing = Vec::new();
    if let Err(e) = firewall.check() {
        missing.push(format!("{e:#}"));
    }
    // Bound and let go at once: the check only asks whether it can be bound.
    let (what, opened) = if settings.intercept.is_copy() {
        (
            "copy source",
            platform::open_copy_source(settings, target).map(drop),
        )
    } else {
        (
            "intercept",
            platform::open_intercept(settings, target).map(drop),
        )
    };
    match opened {
        Ok(()) => println!(
            "ftp6proxy: {what}: {} {} can be bound",
            settings.intercept.name(),
            settings.port
        ),
        Err(e) => missing.push(format!("{e:#}")),
    }
    match firewall.check_ruleset(&feed(settings)) {
        Ok(lines) => lines.iter().for_each(|l| println!("ftp6proxy: {l}")),
        Err(e) => missing.push(format!("{e:#}")),
    }
    match (privdrop::resolve(settings.user.as_deref()), &settings.user) {
        (Ok(id), Some(user)) => println!("ftp6proxy: user: -u {user} is uid {}", id.uid),
        (Ok(id), None) => println!(
            "ftp6proxy: user: uid/gid {} (the default; -u to choose)",
            id.uid
        ),
        (Err(e), _) => missing.push(format!("user: {e:#}")),
    }
    if !missing.is_empty() {
        for m in &missing {
            eprintln!("ftp6proxy: {m}");
        }
        eprintln!(
            "ftp6proxy: configuration NOT OK ({} problems)",
            missing.len()
        );
        return Ok(1);
    }
    println!("ftp6proxy: configuration OK");
    println!("{}", describe(settings));
    Ok(0)
}

/// The start line: what this instance does.
pub fn describe(settings: &Settings) -> String {
    let e = &settings.engine;
    let ports: Vec<String> = e.ftp_ports.iter().map(u16::to_string).collect();
    format!(
        "ftp6proxy {} starting: firewall={} slots={}-{} timeout={}s {} port={} ftp-ports={}{}{}",
        env!("CARGO_PKG_VERSION"),
        settings.firewall.name(),
        e.base,
        u32::from(e.base) + u32::from(e.count) - 1,
        e.ttl.as_secs(),
        settings.intercept.name(),
        settings.port,
        ports.join(","),
        settings
            .target
            .as_ref()
            .map(|t| format!(" target={t}"))
            .unwrap_or_default(),
        settings
            .queue
            .as_ref()
            .map(|q| format!(" queue={q}"))
            .unwrap_or_default(),
    )
}
