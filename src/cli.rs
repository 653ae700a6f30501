//! The command line: the original ftp6proxy flags with their original meanings and
//! defaults, plus the long options of this version, turned into a validated [`Settings`].
//!
//! Owns option syntax, defaults and every range check, so a bad value is refused before
//! anything is opened, with one clear line and exit status 64 (EX_USAGE, sysexits(3)).
//! Opens nothing and touches no system state.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser, ValueEnum};

/// EX_USAGE from sysexits(3): the command was used incorrectly.
pub const EX_USAGE: i32 = 64;

/// Firewall backend that holds the holes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FirewallKind {
    /// ipfw(8) rules numbered base..base+count-1 (FreeBSD).
    Ipfw,
    /// pf(4) anchors `<anchor>/<slot>` (FreeBSD).
    Pf,
    /// nftables set elements with timeouts (Linux).
    Nft,
}

impl FirewallKind {
    /// The platform's natural backend.
    pub fn platform_default() -> FirewallKind {
        if cfg!(target_os = "linux") {
            FirewallKind::Nft
        } else {
            FirewallKind::Ipfw
        }
    }

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FirewallKind::Ipfw => "ipfw",
            FirewallKind::Pf => "pf",
            FirewallKind::Nft => "nft",
        }
    }
}

/// How packets reach the daemon (`--intercept`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterceptKind {
    /// FreeBSD, inline: divert(4) from ipfw `divert` (or pf `divert-to`); the default there.
    Divert,
    /// FreeBSD, copies: ipfw `tee PORT` to a divert socket bound to `-p`, only read.
    Tee,
    /// FreeBSD, copies: ipfw `ngtee COOKIE` to ng_ipfw(4)'s hook named by `-p`.
    Netgraph,
    /// Linux, inline: the NFQUEUE `-p`; the default there.
    Nfqueue,
    /// Linux, copies: the nfnetlink_log group `-p` (nft `log group`, iptables `NFLOG`).
    Nflog,
}

impl InterceptKind {
    /// Every kind, as the command line spells it.
    pub const ALL: [InterceptKind; 5] = [
        InterceptKind::Divert,
        InterceptKind::Tee,
        InterceptKind::Netgraph,
        InterceptKind::Nfqueue,
        InterceptKind::Nflog,
    ];

    /// The platform's default: the inline kind.
    pub fn platform_default() -> InterceptKind {
        if cfg!(target_os = "linux") {
            InterceptKind::Nfqueue
        } else {
            InterceptKind::Divert
        }
    }

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            InterceptKind::Divert => "divert",
            InterceptKind::Tee => "tee",
            InterceptKind::Netgraph => "netgraph",
            InterceptKind::Nfqueue => "nfqueue",
            InterceptKind::Nflog => "nflog",
        }
    }

    /// Whether the daemon reads copies (and holds nothing) rather than the packets.
    pub fn is_copy(self) -> bool {
        matches!(
            self,
            InterceptKind::Tee | InterceptKind::Netgraph | InterceptKind::Nflog
        )
    }

    /// The operating system that has it.
    pub fn platform(self) -> &'static str {
        match self {
            InterceptKind::Divert | InterceptKind::Tee | InterceptKind::Netgraph => "FreeBSD",
            InterceptKind::Nfqueue | InterceptKind::Nflog => "Linux",
        }
    }

    /// Whether this build's platform has it.
    pub fn available(self) -> bool {
        match self {
            InterceptKind::Nfqueue | InterceptKind::Nflog => cfg!(target_os = "linux"),
            InterceptKind::Divert | InterceptKind::Tee | InterceptKind::Netgraph => {
                cfg!(target_os = "freebsd")
            }
        }
    }

    /// Reads `--intercept KIND`: a known kind this platform has.
    ///
    /// # Errors
    /// [`UsageError`] naming the value and what this platform offers.
    pub fn parse(text: &str) -> Result<InterceptKind, UsageError> {
        let offered = || {
            InterceptKind::ALL
                .iter()
                .filter(|k| k.available())
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let kind = InterceptKind::ALL
            .into_iter()
            .find(|k| k.name() == text.trim())
            .ok_or_else(|| {
                usage(format!(
                    "--intercept {text:?}: unknown kind (divert, tee, netgraph on FreeBSD; \
                     nfqueue, nflog on Linux)"
                ))
            })?;
        if !kind.available() {
            return Err(usage(format!(
                "--intercept {}: {} only; this build offers {}",
                kind.name(),
                kind.platform(),
                offered()
            )));
        }
        Ok(kind)
    }
}

/// The raw command line, as clap parses it.
#[derive(Debug, Parser)]
#[command(
    name = "ftp6proxy",
    version,
    about = "ftp6proxy - IPv6/IPv4 FTP firewall helper without NAT",
    long_about = "ftp6proxy watches the FTP control channel that the firewall diverts or \
                  queues to it, and opens a short-lived hole for exactly the data connection \
                  that a PORT/EPRT/LPRT command or a 227/228/229 reply announces, before \
                  passing the announcing packet on unchanged.",
    after_help = "Signals: SIGTERM/SIGINT remove all holes and exit; SIGHUP reopens the log; \
                  SIGUSR1 (and SIGINFO on FreeBSD) log one status line."
)]
pub struct Args {
    /// Punch holes into the firewall starting at this rule number / slot
    #[arg(short = 'b', value_name = "base", default_value = "64000")]
    pub base: String,
    /// Use up to <count> firewall rules / slots at once
    #[arg(short = 'c', value_name = "count", default_value = "100")]
    pub count: String,
    /// Run in the foreground (no pidfile unless -i is given); twice: also debug log to stderr, no privilege drop
    #[arg(short = 'd', action = ArgAction::Count)]
    pub debug: u8,
    /// Syslog facility
    #[arg(short = 'f', value_name = "facility", default_value = "daemon")]
    pub facility: String,
    /// Write the pid to this file (locked; a second instance refuses to start) [default: /var/run/ftp6proxy.pid]
    #[arg(short = 'i', value_name = "pidfile")]
    pub pidfile: Option<PathBuf>,
    /// FreeBSD: attach to this vnet jail (name or JID); Linux: enter this network namespace
    #[arg(short = 'j', value_name = "target")]
    pub target: Option<String>,
    /// Divert port (FreeBSD) or NFQUEUE number (Linux) to read packets from
    #[arg(short = 'p', value_name = "port", default_value = "10004")]
    pub port: String,
    /// Place data connections into this QoS class (ipfw: dummynet queue number; pf: queue name or dnqueue number)
    #[arg(short = 'q', value_name = "queue")]
    pub queue: Option<String>,
    /// Chroot to this directory once the sockets are open
    #[arg(short = 'r', value_name = "dir")]
    pub chroot: Option<PathBuf>,
    /// Keep a hole open this many seconds for the data connection to start
    #[arg(short = 't', value_name = "timeout", default_value = "2")]
    pub timeout: String,
    /// Drop privileges to this user (default: uid 65535, gid 65535)
    #[arg(short = 'u', value_name = "user")]
    pub user: Option<String>,
    /// Firewall that holds the holes [default: ipfw on FreeBSD, nft on Linux]
    #[arg(long, value_name = "ipfw|pf|nft", value_enum)]
    pub firewall: Option<FirewallKind>,
    /// pf anchor for the holes / prefix of the nftables sets (<name>6, <name>4)
    #[arg(long, value_name = "name", default_value = "ftp6proxy")]
    pub anchor: String,
    /// nftables table holding the sets, as "FAMILY NAME"
    #[arg(
        long = "nft-table",
        value_name = "family name",
        default_value = "inet filter"
    )]
    pub nft_table: String,
    /// Comma-separated TCP ports of FTP servers; the side using one is the server
    #[arg(long = "ftp-ports", value_name = "list", default_value = "21")]
    pub ftp_ports: String,
    /// Control connections followed at once; past this the least useful are evicted (and resume if they return)
    #[arg(long = "max-connections", value_name = "n", default_value = "16384")]
    pub max_connections: String,
    /// Seconds a silent control connection is followed (it is silent during a long transfer)
    #[arg(long = "idle-timeout", value_name = "seconds", default_value = "7200")]
    pub idle_timeout: String,
    /// Run the daemon's processes on this CPU: the worker and the parser then hand each packet over without a cross-CPU wake-up
    #[arg(long, value_name = "n")]
    pub cpu: Option<String>,
    /// Linux scheduling policy of the daemon's processes: batch (woken, they wait for the running process's turn to end instead of preempting it) or other [default: batch inline on Linux, other in copy mode and elsewhere]
    #[arg(long = "sched-policy", value_name = "policy")]
    pub sched_policy: Option<String>,
    /// Microseconds the worker and the parser keep polling for the next packet before they sleep (0: never): less latency for more CPU
    #[arg(long = "busy-poll", value_name = "usec", default_value = "0")]
    pub busy_poll: String,
    /// ipfw: start even if net.inet.ip.fw.dyn_keep_states=0 (closing a hole then cuts its transfer)
    #[arg(long = "ipfw-allow-state-loss")]
    pub ipfw_allow_state_loss: bool,
    /// How packets arrive: divert (FreeBSD) or nfqueue (Linux) hold each control packet until its hole is open; tee, netgraph (FreeBSD) or nflog (Linux) read copies and hold nothing [default: divert on FreeBSD, nfqueue on Linux]
    #[arg(long, value_name = "kind")]
    pub intercept: Option<String>,
    /// Check the configuration, firewall and permissions, print what would be done, and exit
    #[arg(long)]
    pub check: bool,
    /// Replay a pcap/pcapng capture through the engine (with -t, -b, -c, --ftp-ports): print every hole, refusal and data connection, exit 1 if one would be blocked
    #[arg(long, value_name = "file", conflicts_with = "check")]
    pub replay: Option<PathBuf>,
}

/// A syslog facility, as its syslog(3) code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facility {
    /// Its name.
    pub name: &'static str,
    /// Its code (`LOG_DAEMON` and so on, already shifted as syslog(3) expects).
    pub code: i32,
}

/// Facilities by name, with the values of syslog.h (identical on FreeBSD and Linux).
const FACILITIES: &[(&str, i32)] = &[
    ("kern", 0),
    ("user", 1 << 3),
    ("mail", 2 << 3),
    ("daemon", 3 << 3),
    ("auth", 4 << 3),
    ("syslog", 5 << 3),
    ("lpr", 6 << 3),
    ("news", 7 << 3),
    ("uucp", 8 << 3),
    ("cron", 9 << 3),
    ("authpriv", 10 << 3),
    ("ftp", 11 << 3),
    ("security", 13 << 3),
    ("local0", 16 << 3),
    ("local1", 17 << 3),
    ("local2", 18 << 3),
    ("local3", 19 << 3),
    ("local4", 20 << 3),
    ("local5", 21 << 3),
    ("local6", 22 << 3),
    ("local7", 23 << 3),
];

/// The nftables table that holds the sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftTable {
    /// `inet`, `ip` or `ip6`.
    pub family: String,
    /// The table's name.
    pub name: String,
}

/// How verbose and how detached the daemon is (`-d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Foreground {
    /// Detach, write the pidfile, log to syslog, drop privileges.
    No,
    /// `-d`: stay in the foreground, no pidfile unless `-i` names one; log to syslog.
    Yes,
    /// `-d -d`: foreground, debug log to stderr, no privilege drop.
    Debug,
}

/// The validated command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// What the core needs.
    pub engine: ftp6proxy_core::Config,
    /// `-d`.
    pub foreground: Foreground,
    /// `-f`.
    pub facility: Facility,
    /// `-i`, or its default.
    pub pidfile: PathBuf,
    /// `-i` was given: in the foreground too, the pidfile is kept (and with it the
    /// hand-over of connections to the next instance, `<pidfile>.state`), as a service
    /// manager that runs the daemon in the foreground wants.
    pub pidfile_given: bool,
    /// `-j`.
    pub target: Option<String>,
    /// `-p`.
    pub port: u16,
    /// `-q`, checked against the firewall's syntax.
    pub queue: Option<String>,
    /// `-r`.
    pub chroot: Option<PathBuf>,
    /// `-u`; `None` means uid/gid 65535.
    pub user: Option<String>,
    /// `--firewall`.
    pub firewall: FirewallKind,
    /// `--anchor`.
    pub anchor: String,
    /// `--nft-table`.
    pub nft_table: NftTable,
    /// `--ipfw-allow-state-loss`.
    pub ipfw_allow_state_loss: bool,
    /// `--intercept`.
    pub intercept: InterceptKind,
    /// `--check`.
    pub check: bool,
    /// `--replay`: the capture to replay instead of running the daemon.
    pub replay: Option<PathBuf>,
    /// `--cpu`: the CPU every process of the daemon runs on.
    pub cpu: Option<usize>,
    /// `--busy-poll`: how long the worker and the parser poll before they sleep.
    pub busy_poll: Duration,
    /// `--sched-policy`.
    pub sched_policy: SchedPolicy,
}

/// The scheduling policy the daemon's processes run under (`--sched-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedPolicy {
    /// Whatever the daemon was started with (SCHED_OTHER unless a service manager or
    /// chrt(1) chose otherwise).
    Other,
    /// Linux `SCHED_BATCH`: a woken process never preempts the running one.
    Batch,
}

impl SchedPolicy {
    /// The default: batch where it exists (Linux) for the inline modes, whose worker and
    /// parser hand every packet to each other. In copy mode the parser alone reads the
    /// copies, so there is no hand-over to spare, and a hole must follow its announcement
    /// as soon as it can: a woken parser may preempt.
    pub fn default_for(intercept: InterceptKind) -> SchedPolicy {
        if cfg!(target_os = "linux") && !intercept.is_copy() {
            SchedPolicy::Batch
        } else {
            SchedPolicy::Other
        }
    }

    fn parse(text: &str) -> Result<SchedPolicy, UsageError> {
        match text {
            "other" => Ok(SchedPolicy::Other),
            "batch" if cfg!(target_os = "linux") => Ok(SchedPolicy::Batch),
            "batch" => Err(usage("--sched-policy batch: Linux only (SCHED_BATCH)")),
            _ => Err(usage(format!(
                "--sched-policy {text:?}: must be batch (Linux) or other"
            ))),
        }
    }
}

/// A command-line value that is out of range; the message names the option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn usage(message: impl Into<String>) -> UsageError {
    UsageError(message.into())
}

fn number<T: std::str::FromStr>(option: &str, text: &str, what: &str) -> Result<T, UsageError> {
    text.trim()
        .parse()
        .map_err(|_| usage(format!("{option} {text:?}: {what}")))
}

/// A name made of letters, digits, `_` and `-` (pf anchors, nft tables and sets).
fn is_simple_name(text: &str, max: usize) -> bool {
    !text.is_empty()
        && text.len() <= max
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Args {
    /// Checks every value and builds the settings.
    ///
    /// # Errors
    /// [`UsageError`] naming the first bad option.
    pub fn validate(self) -> Result<Settings, UsageError> {
        let base: u32 = number("-b", &self.base, "rule number must be 1..65535")?;
        if !(1..=65535).contains(&base) {
            return Err(usage(format!("-b {base}: rule number must be 1..65535")));
        }
        let count: u32 = number("-c", &self.count, "count must be a number of at least 1")?;
        if count == 0 {
            return Err(usage("-c 0: count must be at least 1"));
        }
        if base + count - 1 > 65535 {
            return Err(usage(format!(
                "-b {base} -c {count}: the last rule would be {}, past 65535",
                base + count - 1
            )));
        }
        let timeout: u64 = number("-t", &self.timeout, "timeout must be 1..3600 seconds")?;
        if !(1..=3600).contains(&timeout) {
            return Err(usage(format!(
                "-t {timeout}: timeout must be 1..3600 seconds"
            )));
        }
        let port: u16 = number("-p", &self.port, "port must be 0..65535")?;
        let facility = FACILITIES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(self.facility.trim()))
            .map(|&(name, code)| Facility { name, code })
            .ok_or_else(|| {
                let names: Vec<&str> = FACILITIES.iter().map(|(n, _)| *n).collect();
                usage(format!(
                    "-f {:?}: unknown syslog facility (one of {})",
                    self.facility,
                    names.join(", ")
                ))
            })?;
        let mut ftp_ports = Vec::new();
        for item in self.ftp_ports.split(',') {
            let port: u16 = number("--ftp-ports", item, "each port must be 1..65535")?;
            if port == 0 {
                return Err(usage("--ftp-ports 0: each port must be 1..65535"));
            }
            if !ftp_ports.contains(&port) {
                ftp_ports.push(port);
            }
        }
        if ftp_ports.len() > 16 {
            return Err(usage("--ftp-ports: at most 16 ports"));
        }
        if !is_simple_name(&self.anchor, 24) {
            return Err(usage(format!(
                "--anchor {:?}: use 1..24 letters, digits, '_' or '-'",
                self.anchor
            )));
        }
        let mut words = self.nft_table.split_whitespace();
        let nft_table = match (words.next(), words.next(), words.next()) {
            (Some(family), Some(name), None)
                if ["inet", "ip", "ip6"].contains(&family) && is_simple_name(name, 64) =>
            {
                NftTable {
                    family: family.to_string(),
                    name: name.to_string(),
                }
            }
            _ => {
                return Err(usage(format!(
                    "--nft-table {:?}: expected \"FAMILY NAME\" with FAMILY inet, ip or ip6",
                    self.nft_table
                )))
            }
        };
        let intercept = match &self.intercept {
            Some(text) => InterceptKind::parse(text)?,
            None => InterceptKind::platform_default(),
        };
        let firewall = self.firewall.unwrap_or_else(FirewallKind::platform_default);
        // 65535 is ipfw's default rule, always present and never ours
        // (sys/netinet/ip_fw.h: `#define IPFW_DEFAULT_RULE 65535`, "the last one").
        if firewall == FirewallKind::Ipfw && base + count - 1 > 65534 {
            return Err(usage(format!(
                "-b {base} -c {count}: the last rule would be {}, but 65535 is ipfw's \
                 default rule; the range must end at 65534 or below",
                base + count - 1
            )));
        }
        if let Some(queue) = &self.queue {
            let expected = match firewall {
                FirewallKind::Ipfw if queue.parse::<u16>().is_ok_and(|q| q >= 1) => None,
                FirewallKind::Pf if is_simple_name(queue, 15) => None,
                FirewallKind::Ipfw => Some("a dummynet queue number 1..65535"),
                FirewallKind::Pf => Some("a pf queue name, or dnqueue number (1..15 characters)"),
                // A set element cannot carry a class; the rule that matches the set can.
                FirewallKind::Nft => Some(
                    "nothing with --firewall nft (set a mark or priority in the rule \
                     that accepts @ftp6proxy6/@ftp6proxy4 instead)",
                ),
            };
            if let Some(expected) = expected {
                return Err(usage(format!("-q {queue:?}: expected {expected}")));
            }
        }
        if self.user.as_deref() == Some("") {
            return Err(usage("-u \"\": empty user name"));
        }
        let foreground = match self.debug {
            0 => Foreground::No,
            1 => Foreground::Yes,
            _ => Foreground::Debug,
        };
        let (base, count) = (
            u16::try_from(base).expect("checked above"),
            u16::try_from(count).expect("checked above"),
        );
        let max_connections: usize = number(
            "--max-connections",
            &self.max_connections,
            "must be 16..1048576 connections",
        )?;
        if !(16..=1_048_576).contains(&max_connections) {
            return Err(usage(format!(
                "--max-connections {max_connections}: must be 16..1048576 connections"
            )));
        }
        // 1024: Linux's CPU_SETSIZE, and FreeBSD's since 14 (256 before). A CPU the system
        // does not have is refused by the kernel, and the daemon says so at start.
        let cpu = match &self.cpu {
            Some(text) => {
                let cpu: usize = number("--cpu", text, "must be a CPU number 0..1023")?;
                if cpu > 1023 {
                    return Err(usage(format!("--cpu {cpu}: must be a CPU number 0..1023")));
                }
                Some(cpu)
            }
            None => None,
        };
        let busy_poll: u64 = number(
            "--busy-poll",
            &self.busy_poll,
            "must be 0..1000 microseconds",
        )?;
        if busy_poll > 1000 {
            return Err(usage(format!(
                "--busy-poll {busy_poll}: must be 0..1000 microseconds"
            )));
        }
        let idle: u64 = number(
            "--idle-timeout",
            &self.idle_timeout,
            "must be 60..604800 seconds",
        )?;
        if !(60..=604_800).contains(&idle) {
            return Err(usage(format!(
                "--idle-timeout {idle}: must be 60..604800 seconds"
            )));
        }
        Ok(Settings {
            engine: ftp6proxy_core::Config {
                ftp_ports,
                base,
                count,
                ttl: Duration::from_secs(timeout),
                log_lines: foreground == Foreground::Debug,
                max_connections,
                idle_timeout: Duration::from_secs(idle),
            },
            foreground,
            facility,
            pidfile_given: self.pidfile.is_some(),
            pidfile: self
                .pidfile
                .unwrap_or_else(|| PathBuf::from("/var/run/ftp6proxy.pid")),
            target: self.target,
            port,
            queue: self.queue,
            chroot: self.chroot,
            user: self.user,
            firewall,
            anchor: self.anchor,
            nft_table,
            ipfw_allow_state_loss: self.ipfw_allow_state_loss,
            intercept,
            check: self.check,
            replay: self.replay,
            cpu,
            busy_poll: Duration::from_micros(busy_poll),
            sched_policy: match &self.sched_policy {
                Some(text) => SchedPolicy::parse(text)?,
                None => SchedPolicy::default_for(intercept),
            },
        })
    }
}

/// What `main` should do after parsing.
#[derive(Debug)]
pub enum Parsed {
    /// Run with these settings.
    Run(Box<Settings>),
    /// Print this (help or version) to stdout and exit 0.
    Print(String),
    /// Print this one line to stderr and exit with [`EX_USAGE`].
    Usage(String),
}

/// Parses `argv` (including the program name).
pub fn parse<I, T>(argv: I) -> Parsed
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    match Args::try_parse_from(argv) {
        Ok(args) => match args.validate() {
            Ok(settings) => Parsed::Run(Box::new(settings)),
            Err(error) => Parsed::Usage(format!("ftp6proxy: {error}")),
        },
        Err(error) => match error.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                Parsed::Print(error.to_string())
            }
            _ => {
                // clap explains over several lines; the first one says what is wrong.
                let text = error.to_string();
                let first = text
                    .lines()
                    .next()
                    .unwrap_or("bad command line")
                    .trim_start_matches("error: ");
                Parsed::Usage(format!("ftp6proxy: {first} (see ftp6proxy -h)"))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Parsed {
        parse(std::iter::once("ftp6proxy").chain(args.iter().copied()))
    }

    fn settings(args: &[&str]) -> Settings {
        match run(args) {
            Parsed::Run(settings) => *settings,
            other => panic!("expected settings for {args:?}, got {other:?}"),
        }
    }

    fn usage_error(args: &[&str]) -> String {
        match run(args) {
            Parsed::Usage(line) => line,
            other => panic!("expected a usage error for {args:?}, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_the_originals() {
        let s = settings(&[]);
        assert_eq!(s.engine.base, 64000);
        assert_eq!(s.engine.count, 100);
        assert_eq!(s.engine.ttl, Duration::from_secs(2));
        assert_eq!(s.engine.ftp_ports, [21]);
        assert_eq!(s.port, 10004);
        assert_eq!(s.pidfile, PathBuf::from("/var/run/ftp6proxy.pid"));
        assert!(!s.pidfile_given);
        assert_eq!(s.facility.name, "daemon");
        assert_eq!(s.foreground, Foreground::No);
        assert_eq!(s.anchor, "ftp6proxy");
        assert_eq!(
            s.nft_table,
            NftTable {
                family: "inet".into(),
                name: "filter".into()
            }
        );
        assert_eq!(s.firewall, FirewallKind::platform_default());
        assert!(s.user.is_none() && s.target.is_none() && s.queue.is_none());
    }

    #[test]
    fn every_option_is_read() {
        let s = settings(&[
            "-b",
            "1000",
            "-c",
            "10",
            "-d",
            "-d",
            "-f",
            "local3",
            "-i",
            "/tmp/x.pid",
            "-j",
            "gw",
            "-p",
            "8021",
            "-q",
            "7",
            "-r",
            "/var/empty",
            "-t",
            "5",
            "-u",
            "proxy",
            "--firewall",
            "ipfw",
            "--anchor",
            "ftpx",
            "--nft-table",
            "ip6 gate",
            "--ftp-ports",
            "21,2121",
            "--ipfw-allow-state-loss",
            "--check",
        ]);
        assert_eq!((s.engine.base, s.engine.count), (1000, 10));
        assert_eq!(s.foreground, Foreground::Debug);
        assert!(s.engine.log_lines);
        assert_eq!(s.facility.code, 19 << 3);
        assert_eq!(s.target.as_deref(), Some("gw"));
        assert_eq!(s.port, 8021);
        assert_eq!(s.queue.as_deref(), Some("7"));
        assert_eq!(s.engine.ttl, Duration::from_secs(5));
        assert_eq!(s.user.as_deref(), Some("proxy"));
        assert_eq!(s.firewall, FirewallKind::Ipfw);
        assert_eq!(s.nft_table.family, "ip6");
        assert_eq!(s.engine.ftp_ports, [21, 2121]);
        assert!(s.ipfw_allow_state_loss && s.check);
        assert_eq!(s.pidfile, PathBuf::from("/tmp/x.pid"));
        assert!(s.pidfile_given, "-i keeps a pidfile in the foreground too");
    }

    #[test]
    fn count_zero_is_refused() {
        assert_eq!(
            usage_error(&["-c", "0"]),
            "ftp6proxy: -c 0: count must be at least 1"
        );
    }

    #[test]
    fn connection_table_size_and_idle_timeout_are_settable_and_bounded() {
        let s = settings(&[]);
        assert_eq!(s.engine.max_connections, 16384);
        assert_eq!(s.engine.idle_timeout, Duration::from_secs(7200));
        let s = settings(&["--max-connections", "100000", "--idle-timeout", "600"]);
        assert_eq!(s.engine.max_connections, 100_000);
        assert_eq!(s.engine.idle_timeout, Duration::from_secs(600));
        assert!(usage_error(&["--max-connections", "8"]).contains("--max-connections"));
        assert!(usage_error(&["--idle-timeout", "10"]).contains("--idle-timeout"));
        assert!(usage_error(&["--max-connections", "many"]).contains("--max-connections"));
    }

    #[test]
    fn ipfw_range_stops_before_the_default_rule_65535() {
        let err = usage_error(&["--firewall", "ipfw", "-b", "65500", "-c", "36"]);
        assert!(err.contains("65535 is ipfw's default rule"), "{err}");
        let ok = settings(&["--firewall", "ipfw", "-b", "65500", "-c", "35"]);
        assert_eq!(ok.engine.count, 35);
        let pf = settings(&["--firewall", "pf", "-b", "65500", "-c", "36"]);
        assert_eq!(
            pf.engine.count, 36,
            "pf slots are anchor names, not rule numbers"
        );
    }

    #[test]
    fn range_past_65535_is_refused() {
        assert!(usage_error(&["-b", "65500", "-c", "100"]).contains("past 65535"));
        // The last possible range is fine.
        assert_eq!(settings(&["-b", "65436", "-c", "100"]).engine.count, 100);
    }

    #[test]
    fn bad_values_get_one_line_naming_the_option() {
        for (args, option) in [
            (&["-t", "0"][..], "-t"),
            (&["-t", "x"][..], "-t"),
            (&["-p", "70000"][..], "-p"),
            (&["-b", "0"][..], "-b"),
            (&["-f", "nosuch"][..], "-f"),
            (&["--ftp-ports", "21,0"][..], "--ftp-ports"),
            (&["--ftp-ports", "21,,22"][..], "--ftp-ports"),
            (&["--nft-table", "bridge filter"][..], "--nft-table"),
            (&["--anchor", "a/b"][..], "--anchor"),
            (&["--firewall", "ipfw", "-q", "fast"][..], "-q"),
            (&["--firewall", "pf", "-q", "x y"][..], "-q"),
            (&["--firewall", "nft", "-q", "1"][..], "-q"),
            (&["--busy-poll", "1001"][..], "--busy-poll"),
            (&["--busy-poll", "fast"][..], "--busy-poll"),
            (&["--cpu", "1024"][..], "--cpu"),
            (&["--cpu", "first"][..], "--cpu"),
        ] {
            let line = usage_error(args);
            assert!(line.starts_with(&format!("ftp6proxy: {option} ")), "{line}");
            assert!(!line.contains('\n'), "{line}");
        }
    }

    #[test]
    fn sched_policy_is_batch_on_linux_unless_asked_otherwise() {
        let inline = InterceptKind::platform_default();
        assert_eq!(settings(&[]).sched_policy, SchedPolicy::default_for(inline));
        let copy = if cfg!(target_os = "linux") {
            "nflog"
        } else {
            "tee"
        };
        assert_eq!(
            settings(&["--intercept", copy]).sched_policy,
            SchedPolicy::Other,
            "copy mode: a woken parser may preempt, its holes are late enough"
        );
        assert_eq!(
            settings(&["--sched-policy", "other"]).sched_policy,
            SchedPolicy::Other
        );
        if cfg!(target_os = "linux") {
            assert_eq!(SchedPolicy::default_for(inline), SchedPolicy::Batch);
            assert_eq!(
                settings(&["--sched-policy", "batch"]).sched_policy,
                SchedPolicy::Batch
            );
        } else {
            assert!(usage_error(&["--sched-policy", "batch"]).contains("Linux only"));
        }
        for bad in ["fifo", "BATCH", ""] {
            let line = usage_error(&["--sched-policy", bad]);
            assert!(line.starts_with("ftp6proxy: --sched-policy "), "{line}");
        }
    }

    #[test]
    fn busy_poll_is_microseconds_up_to_a_millisecond() {
        assert_eq!(settings(&[]).busy_poll, Duration::ZERO, "off unless asked");
        assert_eq!(
            settings(&["--busy-poll", "200"]).busy_poll,
            Duration::from_micros(200)
        );
        assert_eq!(
            settings(&["--busy-poll", "1000"]).busy_poll,
            Duration::from_millis(1)
        );
    }

    #[test]
    fn cpu_is_a_cpu_number_or_nothing() {
        assert_eq!(settings(&["--cpu", "0"]).cpu, Some(0));
        assert_eq!(settings(&["--cpu", "1023"]).cpu, Some(1023));
        assert_eq!(settings(&[]).cpu, None, "not pinned unless asked");
    }

    #[test]
    fn unknown_flag_is_a_usage_error() {
        let line = usage_error(&["-x"]);
        assert!(line.contains("'-x'"), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn help_and_version_print() {
        let Parsed::Print(help) = run(&["-h"]) else {
            panic!("-h prints help")
        };
        for option in [
            "-b",
            "-c",
            "-d",
            "-f",
            "-i",
            "-j",
            "-p",
            "-q",
            "-r",
            "-t",
            "-u",
            "--firewall",
            "--check",
        ] {
            assert!(help.contains(option), "{option} missing from help");
        }
        let Parsed::Print(version) = run(&["-V"]) else {
            panic!("-V prints version")
        };
        assert!(version.starts_with("ftp6proxy "));
    }

    #[test]
    fn replay_takes_a_file_and_not_check() {
        let s = settings(&["--replay", "x.pcap", "-t", "5", "--ftp-ports", "2121"]);
        assert_eq!(s.replay, Some(PathBuf::from("x.pcap")));
        assert_eq!(s.engine.ttl, Duration::from_secs(5));
        assert!(settings(&[]).replay.is_none());
        let line = usage_error(&["--replay", "x.pcap", "--check"]);
        assert!(line.contains("--check"), "{line}");
        assert!(usage_error(&["--replay"]).contains("--replay"));
        let Parsed::Print(help) = run(&["-h"]) else {
            panic!("-h prints help")
        };
        assert!(help.contains("--replay <file>"), "{help}");
    }

    #[test]
    fn intercept_defaults_to_the_platforms_inline_kind() {
        let s = settings(&[]);
        assert_eq!(s.intercept, InterceptKind::platform_default());
        assert!(!s.intercept.is_copy());
        let native = if cfg!(target_os = "linux") {
            "nfqueue"
        } else {
            "divert"
        };
        assert_eq!(s.intercept.name(), native);
    }

    #[test]
    fn intercept_kinds_of_this_platform_are_read() {
        let ours: &[(&str, InterceptKind)] = if cfg!(target_os = "linux") {
            &[
                ("nfqueue", InterceptKind::Nfqueue),
                ("nflog", InterceptKind::Nflog),
            ]
        } else {
            &[
                ("divert", InterceptKind::Divert),
                ("tee", InterceptKind::Tee),
                ("netgraph", InterceptKind::Netgraph),
            ]
        };
        for &(text, kind) in ours {
            assert_eq!(settings(&["--intercept", text]).intercept, kind, "{text}");
        }
    }

    #[test]
    fn intercept_kind_of_the_other_platform_is_a_usage_error() {
        let theirs: &[&str] = if cfg!(target_os = "linux") {
            &["divert", "tee", "netgraph"]
        } else {
            &["nfqueue", "nflog"]
        };
        for text in theirs {
            let line = usage_error(&["--intercept", text]);
            assert!(
                line.starts_with(&format!("ftp6proxy: --intercept {text}: ")),
                "{line}"
            );
            assert!(line.contains(" only; this build offers "), "{line}");
            assert!(!line.contains('\n'), "{line}");
        }
    }

    #[test]
    fn unknown_intercept_kind_is_a_usage_error() {
        for text in ["", "queue", "NFLOG", "divert,tee", "pflog"] {
            let line = usage_error(&["--intercept", text]);
            assert!(line.starts_with("ftp6proxy: --intercept "), "{line}");
            assert!(line.contains("unknown kind"), "{line}");
            assert!(!line.contains('\n'), "{line}");
        }
        assert!(usage_error(&["--intercept"]).contains("--intercept"));
    }

    #[test]
    fn copy_modes_are_read_as_copy_modes() {
        let copy = if cfg!(target_os = "linux") {
            "nflog"
        } else {
            "tee"
        };
        let s = settings(&["--intercept", copy]);
        assert!(s.intercept.is_copy());
        assert_eq!(s.intercept.name(), copy);
        assert!(settings(&["--intercept", copy, "--check"]).check);
    }

    #[test]
    fn every_kind_has_one_platform_and_copy_kinds_are_three() {
        let copies: Vec<&str> = InterceptKind::ALL
            .iter()
            .filter(|k| k.is_copy())
            .map(|k| k.name())
            .collect();
        assert_eq!(copies, ["tee", "netgraph", "nflog"]);
        assert_eq!(
            InterceptKind::ALL.iter().filter(|k| k.available()).count(),
            if cfg!(target_os = "linux") { 2 } else { 3 }
        );
        let Parsed::Print(help) = run(&["-h"]) else {
            panic!("-h prints help")
        };
        assert!(help.contains("--intercept <kind>"), "{help}");
    }

    #[test]
    fn pf_queue_names_and_ipfw_queue_numbers() {
        assert_eq!(
            settings(&["--firewall", "pf", "-q", "ftp_data"])
                .queue
                .as_deref(),
            Some("ftp_data")
        );
        assert_eq!(
            settings(&["--firewall", "ipfw", "-q", "3"])
                .queue
                .as_deref(),
            Some("3")
        );
    }
}
