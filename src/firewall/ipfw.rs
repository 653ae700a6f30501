//! The ipfw(8) backend: one numbered rule per hole, `base..base+count-1`, tagged
//! `// ftp6proxy`.
//!
//! Owns the rule numbers of its range and only the rules in it that carry its comment tag.
//! Must not touch any other rule: a rule in the range without our tag makes [`Ipfw::check`]
//! and [`Ipfw::flush_owned`] refuse to start instead of deleting it (DESIGN.md invariant 6;
//! `ipfw delete N` deletes *every* rule numbered N, so a shared number cannot be cleaned).
//!
//! Talks to the kernel only through the host's own `/sbin/ipfw` (the IP_FW3 sockopt ABI
//! changed in FreeBSD 15: research/freebsd.md §2.5), via [`super::exec`] with argv vectors.
//! The argv builders and the `ipfw list` parser are pure and golden-tested on every
//! platform; the exec part is plain `std::process` and is tested against a fake `ipfw`.
//!
//! # Dynamic states
//! The hole rule is `setup keep-state`: the data connection's SYN creates a dynamic state,
//! and every later packet of that connection matches the state, not the rule. ipfw deletes
//! a rule's states with the rule, unless `net.inet.ip.fw.dyn_keep_states=1` (research §2.2),
//! in which case the states are kept and still run the deleted rule's action. Closing the
//! hole after `-t` seconds therefore needs that sysctl; [`Ipfw::check`] insists on it unless
//! [`IpfwConfig::allow_dyn_drop`] says the operator knows (e.g. transfers shorter than `-t`).
//!
//! # Freeing a slot on use
//! A hole's rule counts the packets it decides: sys/netpfil/ipfw/ip_fw2.c `ipfw_chk` adds
//! the packet to the counter of the rule it ends on (`IPFW_INC_RULE_COUNTER` once `done`),
//! and with `setup` only a SYN reaches our rule's action, after `O_KEEP_STATE` installed
//! its dynamic state (`ipfw_dyn_install_state`; should that fail, the SYN is denied and
//! still counted, the state table being full: then the retried SYN finds no hole, as it
//! would find a full table). So a packet counter above 0 means the data connection came,
//! and [`Ipfw::used`] deletes the rule at once, so that no second connection gets through
//! it and the slot is free for the next announcement. All counters of the range come from
//! one `ipfw -S show LO-HI` per check ([`show_args`], [`parse_show`]).
//!
//! This needs the states to outlive their rule: sys/netpfil/ipfw/ip_fw_dynamic.c
//! `dyn_match_ipv4_state` / `dyn_match_ipv6_state` leave a state matched by a rule
//! deletion in place when `dyn_keep_states` is set, taking a reference on the deleted rule
//! (`dyn_acquire_rule`), which the state goes on running; with it unset
//! `dyn_expire_states` unlinks the state with the rule. So use is reported only when
//! [`Ipfw::check`] found `net.inet.ip.fw.dyn_keep_states=1`. With
//! `--ipfw-allow-state-loss` and the sysctl at 0, deleting the rule early would cut the
//! transfer that just started, so such holes keep their slot to the deadline, as before
//! (their transfers are meant to end within `-t` anyway).
//!
//! # `-q N`: dummynet queue
//! With a queue the hole rule's action is `queue N` instead of `allow`:
//! `ipfw add 64003 queue 5 tcp from A to B dst-port P setup keep-state // ftp6proxy`.
//! ipfw(8): the dynamic state runs its parent rule's action, so every packet of the data
//! connection goes through dummynet queue N; with `net.inet.ip.fw.one_pass=1` (the default)
//! a packet leaving dummynet is accepted, exactly like `allow`. With `one_pass=0` it would
//! re-enter the ruleset after our rule and meet the operator's later rules (usually a
//! deny), so [`Ipfw::check`] requires `one_pass=1` and a loaded dummynet when `-q` is set.
//! A second, separate `queue` rule was considered and rejected: it would have to be
//! ordered before the hole, share its number and its state, and would double the rule
//! churn per hole. The queue itself (`dnctl queue N config ...`) is the operator's.

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ftp6proxy_core::{FwAction, HoleSpec, Slot};

use super::exec::{self, Cmd};
use super::{during, Error, ErrorKind, Firewall, Op};

/// The comment every rule of ours carries (`// ftp6proxy`).
pub const DEFAULT_TAG: &str = "ftp6proxy";

/// The sysctl that keeps dynamic states alive when their rule is deleted.
pub const SYSCTL_KEEP_STATES: &str = "net.inet.ip.fw.dyn_keep_states";
/// The sysctl that accepts packets leaving dummynet instead of re-filtering them.
pub const SYSCTL_ONE_PASS: &str = "net.inet.ip.fw.one_pass";
/// A sysctl that exists exactly when ipfw is loaded.
pub const SYSCTL_IPFW_ENABLE: &str = "net.inet.ip.fw.enable";
/// A sysctl that exists exactly when dummynet is loaded.
pub const SYSCTL_DUMMYNET: &str = "net.inet.ip.dummynet.io_fast";

/// Everything the ipfw backend needs to know. The daemon fills it from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpfwConfig {
    /// The `ipfw` tool (`/sbin/ipfw`).
    pub ipfw: PathBuf,
    /// The `sysctl` tool (`/sbin/sysctl`).
    pub sysctl: PathBuf,
    /// First rule number (`-b`, default 64000).
    pub base: u16,
    /// Number of rules (`-c`, default 100).
    pub count: u16,
    /// Dummynet queue for the data connections (`-q N`), see the module docs.
    pub queue: Option<u16>,
    /// Start even when `net.inet.ip.fw.dyn_keep_states` is 0: closing a hole will then cut
    /// any data connection still running through it (CLI: `--ipfw-allow-state-loss`).
    pub allow_dyn_drop: bool,
    /// The comment that marks our rules (default [`DEFAULT_TAG`]).
    pub tag: String,
    /// The vnet jail the tools run in (`-j`), or `None` for the host.
    pub jail: Option<i32>,
    /// The divert port the daemon reads (`-p`): at start, rules diverting to it without
    /// `out` are reported (see [`divert_rules_not_out`]).
    pub divert_port: Option<u16>,
}

impl IpfwConfig {
    /// The defaults of the original tool: rules 64000..64099, tools in `/sbin`.
    pub fn new(base: u16, count: u16) -> IpfwConfig {
        IpfwConfig {
            ipfw: PathBuf::from("/sbin/ipfw"),
            sysctl: PathBuf::from("/sbin/sysctl"),
            base,
            count,
            queue: None,
            allow_dyn_drop: false,
            tag: DEFAULT_TAG.to_owned(),
            jail: None,
            divert_port: None,
        }
    }

    /// The last rule number of the range.
    pub fn end(&self) -> u16 {
        // `Ipfw::new` proved the range fits.
        self.base.saturating_add(self.count.saturating_sub(1))
    }

    fn contains(&self, number: u32) -> bool {
        (u32::from(self.base)..=u32::from(self.end())).contains(&number)
    }
}

/// Parses the `-q` value for ipfw: a dummynet queue number, 1..=65535.
///
/// # Errors
/// [`ErrorKind::Setup`] when the value is not such a number (pf queue *names* mean nothing to
/// ipfw).
pub fn parse_queue(value: &str) -> Result<u16, Error> {
    match value.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Error::configure(format!(
            "-q {}: with ipfw the queue must be a dummynet queue number 1-65535 \
             (configured with `dnctl queue N config ...`)",
            value.escape_debug()
        ))),
    }
}

/// Whether `tag` can be a one-word ipfw comment that `ipfw list` prints back unchanged.
fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 64
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

// ---------------------------------------------------------------------------------------
// Pure argv builders. Each one is written above it the way an operator would type it.
// ---------------------------------------------------------------------------------------

/// `ipfw -q add 64003 allow tcp from 2001:db8::10 to 2001:db8::21 dst-port 50123 setup keep-state // ftp6proxy`
///
/// or, with `-q 5`:
///
/// `ipfw -q add 64003 queue 5 tcp from 2001:db8::10 to 2001:db8::21 dst-port 50123 setup keep-state // ftp6proxy`
///
/// Addresses are written in their standard text form, which ipfw accepts for both families
/// (an IPv6 address makes the rule IPv6-only). `//` must be its own argument: ipfw takes
/// every argument after it as the comment.
pub fn add_args(slot: Slot, spec: &HoleSpec, queue: Option<u16>, tag: &str) -> Vec<String> {
    let mut args = vec!["-q".to_owned(), "add".to_owned(), slot.to_string()];
    match queue {
        None => args.push("allow".to_owned()),
        Some(n) => {
            args.push("queue".to_owned());
            args.push(n.to_string());
        }
    }
    args.extend([
        "tcp".to_owned(),
        "from".to_owned(),
        addr(spec.src),
        "to".to_owned(),
        addr(spec.dst),
        "dst-port".to_owned(),
        spec.dport.to_string(),
        "setup".to_owned(),
        "keep-state".to_owned(),
        "//".to_owned(),
        tag.to_owned(),
    ]);
    args
}

/// `ipfw delete 64003 [64004 ...]`
///
/// Without `-q` on purpose: `ipfw -q delete` exits 69 silently both for "rule not found"
/// (harmless, the hole is gone) and for "permission denied"; without it the two can be
/// told apart by the message.
pub fn delete_args(numbers: &[u16]) -> Vec<String> {
    std::iter::once("delete".to_owned())
        .chain(numbers.iter().map(u16::to_string))
        .collect()
}

/// `ipfw -S list 64000-64099`
///
/// `-S` shows the set of each rule and, above all, also lists rules in *disabled* sets
/// (prefixed `# DISABLED`), which plain `list` hides: a hidden foreign rule in our range
/// must still stop us.
pub fn list_args(base: u16, end: u16) -> Vec<String> {
    vec!["-S".to_owned(), "list".to_owned(), format!("{base}-{end}")]
}

/// `ipfw -S show 64000-64099`
///
/// `show` is `list` with each rule's packet and byte counters (sbin/ipfw/main.c
/// `ipfw_main`: "show" calls `ipfw_list(ac, av, 1 /* show counters */)`). A range
/// `LO-HI` is one argument (sbin/ipfw/ipfw2.c `ipfw_list` and `ipfw_show_config` read the
/// number after a `-` with strtoul), and the kernel is asked for that range only
/// (`ipfw_get_config`: `start_rule`, `end_rule`). `-S` as in [`list_args`].
pub fn show_args(base: u16, end: u16) -> Vec<String> {
    vec!["-S".to_owned(), "show".to_owned(), format!("{base}-{end}")]
}

/// The rules of an `ipfw -S list` listing that divert to `port` but may match packets on
/// their way in: neither `out` nor `xmit IF` (which matches only on the output path,
/// ipfw(8)). Such a rule hands the daemon inbound packets, and an inbound IPv6 packet on an
/// interface without an IPv4 address comes back from divert(4) looking outbound
/// (sys/netinet/ip_divert.c `divert_packet` sets `sin_addr` only from an IPv4 interface
/// address), so echoing its sockaddr reinjects it on the way out. The daemon needs each
/// control packet once, and the output path of a gateway sees every one: `out` only.
pub fn divert_rules_not_out(listing: &str, port: u16) -> Vec<String> {
    let port = port.to_string();
    listing
        .lines()
        .filter(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let diverts_here = words
                .windows(2)
                .any(|pair| pair[0] == "divert" && pair[1] == port);
            diverts_here && !words.iter().any(|w| *w == "out" || *w == "xmit")
        })
        .map(|line| line.trim().to_owned())
        .collect()
}

fn addr(ip: IpAddr) -> String {
    ip.to_string()
}

// ---------------------------------------------------------------------------------------
// `ipfw list` parsing and the cleanup plan.
// ---------------------------------------------------------------------------------------

/// One static rule as `ipfw -S list` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedRule {
    /// Its number (32 bits since FreeBSD 15).
    pub number: u32,
    /// Whether its comment is exactly our tag.
    pub ours: bool,
}

/// Parses the output of `ipfw [-S] list`, one rule per line:
///
/// ```text
/// 64003 allow tcp from 2001:db8::10 to 2001:db8::21 dst-port 50123 setup keep-state :default // ftp6proxy
/// 64004 set 0 queue 5 tcp from 192.0.2.10 to 192.0.2.21 dst-port 50000 setup keep-state :default // ftp6proxy
/// # DISABLED 64005 set 3 deny ip from any to any
/// 00100 allow ip from any to any via lo0
/// ```
///
/// Lines that do not start with a rule number (blank lines, messages) are skipped, and
/// parsing stops at `## Dynamic rules` (printed with `-d`, which we do not pass; the state
/// lines after it also start with a rule number). A rule is ours when the text after its
/// last ` // ` is exactly `tag`.
pub fn parse_list(output: &str, tag: &str) -> Vec<ListedRule> {
    rule_lines(output)
        .filter_map(|line| {
            let (number, rest) = line.split_once(' ').unwrap_or((line, ""));
            if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let number = number.parse::<u32>().ok()?;
            let ours = tagged(rest, tag);
            Some(ListedRule { number, ours })
        })
        .collect()
}

/// The lines of an `ipfw [-S] list|show` listing that may be static rules: up to
/// `## Dynamic rules`, trimmed, with a disabled set's `# DISABLED ` taken off.
fn rule_lines(output: &str) -> impl Iterator<Item = &str> {
    output
        .lines()
        .take_while(|line| !line.starts_with("## Dynamic rules"))
        .map(|line| {
            let line = line.trim();
            line.strip_prefix("# DISABLED ").unwrap_or(line)
        })
}

/// Whether the text after a rule's last ` // ` is exactly `tag`.
fn tagged(rule: &str, tag: &str) -> bool {
    rule.rsplit_once("// ")
        .is_some_and(|(_, comment)| comment.trim_end() == tag)
}

/// One static rule with its packet counter, as `ipfw -S show` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountedRule {
    /// Its number.
    pub number: u32,
    /// Whether its comment is exactly our tag.
    pub ours: bool,
    /// How many packets it decided.
    pub packets: u64,
}

/// Parses the output of `ipfw [-S] show`, one rule per line:
///
/// ```text
/// 64003 1 64 set 0 allow tcp from 2001:db8::10 to 2001:db8::21 dst-port 50123 setup keep-state :default // ftp6proxy
/// 64004 0  0 set 0 allow tcp from 192.0.2.10 to 192.0.2.21 dst-port 50000 setup keep-state :default // ftp6proxy
/// ```
///
/// sbin/ipfw/ipfw2.c `show_static_rule` prints the number (`%05u `), then the packet and
/// the byte counter (`pr_u64`: `%*llu ` each, right-aligned to the widest counter of the
/// listing, which `prepare_format_opts` measures over every rule returned, so a column can
/// hold padding blanks), then with `-S` the set, the action, the body and the comment; a
/// rule in a disabled set starts `# DISABLED ` (`-S` only). So the words of a line are
/// number, packets, bytes, the rest; ownership as in [`parse_list`]. A line whose first two
/// words are not numbers is skipped (messages, and a format this parser does not know:
/// then no hole is ever found used, and slots free at their deadlines as without this
/// check).
pub fn parse_show(output: &str, tag: &str) -> Vec<CountedRule> {
    rule_lines(output)
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let number = words.next()?;
            let packets = words.next()?;
            if !number.bytes().all(|b| b.is_ascii_digit())
                || !packets.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            let number = number.parse::<u32>().ok()?;
            let packets = packets.parse::<u64>().ok()?;
            let ours = tagged(line, tag);
            Some(CountedRule {
                number,
                ours,
                packets,
            })
        })
        .collect()
}

/// Which of `slots` were used: a rule of ours numbered so has counted a packet. A number
/// that also holds a rule not ours is never returned: `ipfw delete N` would delete that one
/// too (the range is checked for such rules at start; one added later is left alone).
pub fn used_slots(rules: &[CountedRule], slots: &[u16]) -> Vec<u16> {
    let foreign: HashSet<u32> = rules.iter().filter(|r| !r.ours).map(|r| r.number).collect();
    slots
        .iter()
        .copied()
        .filter(|&slot| {
            let n = u32::from(slot);
            !foreign.contains(&n)
                && rules
                    .iter()
                    .any(|r| r.ours && r.number == n && r.packets > 0)
        })
        .collect()
}

/// Decides which rule numbers to delete at start or exit: every number in
/// `config`'s range that holds only rules of ours.
///
/// # Errors
/// [`ErrorKind::Setup`] when any rule in the range is not ours — including one that shares a
/// number with one of ours, since `ipfw delete N` cannot delete one without the other.
pub fn plan_cleanup(rules: &[ListedRule], config: &IpfwConfig) -> Result<Vec<u16>, ErrorKind> {
    let in_range = rules.iter().filter(|r| config.contains(r.number));
    let foreign: BTreeSet<u32> = in_range
        .clone()
        .filter(|r| !r.ours)
        .map(|r| r.number)
        .collect();
    if !foreign.is_empty() {
        let numbers: Vec<String> = foreign.iter().map(u32::to_string).collect();
        return Err(ErrorKind::Setup(format!(
            "ipfw rule(s) {} sit in ftp6proxy's range {}-{} but do not carry the comment \
             `// {}`; refusing to touch them. Move them (`ipfw -S list {}-{}` shows them) or \
             choose another range with -b/-c",
            numbers.join(", "),
            config.base,
            config.end(),
            config.tag,
            config.base,
            config.end(),
        )));
    }
    let ours: BTreeSet<u16> = in_range
        .filter_map(|r| u16::try_from(r.number).ok())
        .collect();
    Ok(ours.into_iter().collect())
}

/// Whether a failed `ipfw list RANGE` only means "the range is empty".
fn is_empty_range(output: &exec::Output) -> bool {
    output.stderr.contains("no rules in range") || output.stderr.contains("does not exist")
}

/// Whether a failed `ipfw delete N` only means "there was no such rule".
fn is_not_found(output: &exec::Output) -> bool {
    output.stderr.contains("not found") || output.stderr.contains("no rules rules in")
}

// ---------------------------------------------------------------------------------------
// The backend.
// ---------------------------------------------------------------------------------------

/// The ipfw backend: runs `/sbin/ipfw` for every change.
#[derive(Debug)]
pub struct Ipfw {
    config: IpfwConfig,
    /// Slots we added and have not deleted since: only those need a delete before an
    /// `Open` replaces them, which keeps the common case at one exec per hole; and a
    /// `Refresh` of a slot not in it (its rule was deleted on use) adds the rule again.
    installed: HashSet<u16>,
    /// [`Firewall::check`] found `dyn_keep_states=1`: used holes are reported and their
    /// rules deleted at once (module docs).
    states_survive: bool,
}

impl Ipfw {
    /// A backend for `config`. Runs nothing yet.
    ///
    /// # Errors
    /// [`ErrorKind::Setup`] when the range is empty, runs past 65535 or reaches the default
    /// rule, or when the tag cannot be a one-word comment.
    pub fn new(config: IpfwConfig) -> Result<Ipfw, Error> {
        let last = u32::from(config.base) + u32::from(config.count);
        if config.count == 0 || config.base == 0 || last > 65535 {
            return Err(Error::configure(format!(
                "ipfw rule range -b {} -c {} must be non-empty and lie within 1-65534 \
                 (65535 is the default rule)",
                config.base, config.count
            )));
        }
        if !valid_tag(&config.tag) {
            return Err(Error::configure(format!(
                "ipfw comment tag {:?} must be 1-64 characters of A-Z a-z 0-9 _ - .",
                config.tag
            )));
        }
        Ok(Ipfw {
            config,
            installed: HashSet::new(),
            states_survive: false,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &IpfwConfig {
        &self.config
    }

    fn cmd(&self, args: Vec<String>) -> Cmd {
        Cmd::new(&self.config.ipfw, args).in_jail(self.config.jail)
    }

    /// Lists the static rules in our range.
    fn list(&self) -> Result<Vec<ListedRule>, ErrorKind> {
        self.read_range(list_args, parse_list)
    }

    /// The static rules in our range with their counters.
    fn show(&self) -> Result<Vec<CountedRule>, ErrorKind> {
        self.read_range(show_args, parse_show)
    }

    /// Runs the listing `args(base, end)` of our range and parses what it prints; a range
    /// with no rule at all is an empty list, not an error.
    fn read_range<T>(
        &self,
        args: fn(u16, u16) -> Vec<String>,
        parse: fn(&str, &str) -> Vec<T>,
    ) -> Result<Vec<T>, ErrorKind> {
        let cmd = self.cmd(args(self.config.base, self.config.end()));
        let output = exec::run(&cmd, None)?;
        if output.success() {
            Ok(parse(&output.stdout, &self.config.tag))
        } else if is_empty_range(&output) {
            Ok(Vec::new())
        } else {
            Err(ErrorKind::Refused {
                what: cmd.to_string(),
                detail: output.failure_detail(),
            })
        }
    }

    /// Adds the rule of a hole.
    fn add(&mut self, slot: Slot, spec: &HoleSpec) -> Result<(), ErrorKind> {
        let cmd = self.cmd(add_args(slot, spec, self.config.queue, &self.config.tag));
        exec::run_ok(&cmd, None, &cmd.to_string())?;
        self.installed.insert(slot.0);
        Ok(())
    }

    /// Deletes rule numbers; a number that is already gone is not an error.
    fn delete(&mut self, numbers: &[u16]) -> Result<(), ErrorKind> {
        if numbers.is_empty() {
            return Ok(());
        }
        let cmd = self.cmd(delete_args(numbers));
        let output = exec::run(&cmd, None)?;
        if !output.success() && !is_not_found(&output) {
            return Err(ErrorKind::Refused {
                what: cmd.to_string(),
                detail: output.failure_detail(),
            });
        }
        for n in numbers {
            self.installed.remove(n);
        }
        Ok(())
    }

    fn sysctl(&self, name: &str) -> Result<Option<String>, ErrorKind> {
        exec::sysctl_value(&self.config.sysctl, self.config.jail, name)
    }

    fn check_slot(&self, slot: Slot) -> Result<(), ErrorKind> {
        if self.config.contains(u32::from(slot.0)) {
            Ok(())
        } else {
            Err(ErrorKind::Refused {
                what: format!("ipfw rule {slot}"),
                detail: format!(
                    "outside our range {}-{}",
                    self.config.base,
                    self.config.end()
                ),
            })
        }
    }
}

impl Firewall for Ipfw {
    fn check(&mut self) -> Result<(), Error> {
        during(Op::Check, None, || {
            if self.sysctl(SYSCTL_IPFW_ENABLE)?.is_none() {
                return Err(ErrorKind::Setup(
                    "ipfw is not loaded: run `kldload ipfw` (or set firewall_enable=\"YES\" in \
                 /etc/rc.conf)"
                        .to_owned(),
                ));
            }
            let keep = self.sysctl(SYSCTL_KEEP_STATES)?;
            self.states_survive = keep.as_deref() == Some("1");
            if !self.states_survive && !self.config.allow_dyn_drop {
                return Err(ErrorKind::Setup(format!(
                    "{SYSCTL_KEEP_STATES} is {}, so deleting a hole's rule after -t seconds \
                 would also kill the data connection's dynamic state. Run \
                 `sysctl {SYSCTL_KEEP_STATES}=1` and add `{SYSCTL_KEEP_STATES}=1` to \
                 /etc/sysctl.conf (or start with --ipfw-allow-state-loss if transfers \
                 never outlive -t)",
                    keep.as_deref()
                        .unwrap_or("missing (kernel older than FreeBSD 11.2?)")
                )));
            }
            if let Some(queue) = self.config.queue {
                if self.sysctl(SYSCTL_DUMMYNET)?.is_none() {
                    return Err(ErrorKind::Setup(format!(
                    "-q {queue} needs dummynet: run `kldload dummynet` (dummynet_enable=\"YES\" \
                     in /etc/rc.conf) and configure the queue with `dnctl queue {queue} config ...`"
                )));
                }
                let one_pass = self.sysctl(SYSCTL_ONE_PASS)?;
                if one_pass.as_deref() != Some("1") {
                    return Err(ErrorKind::Setup(format!(
                    "-q {queue}: {SYSCTL_ONE_PASS} is {}, so packets leaving dummynet would be \
                     filtered again after the hole rule instead of accepted. Run \
                     `sysctl {SYSCTL_ONE_PASS}=1` and add it to /etc/sysctl.conf",
                    one_pass.as_deref().unwrap_or("missing")
                )));
                }
            }
            if let Some(port) = self.config.divert_port {
                let cmd = self.cmd(vec!["-S".to_owned(), "list".to_owned()]);
                let output = exec::run(&cmd, None)?;
                for rule in divert_rules_not_out(&output.stdout, port) {
                    log::warn!(
                        "ipfw rule `{rule}` diverts to port {port} without `out`: divert FTP \
                     control traffic on the way out only (an inbound IPv6 packet would be \
                     reinjected as outbound; see ipfw.rules.sample)"
                    );
                }
            }
            // Also proves we may run ipfw, and finds foreign rules before the first hole.
            plan_cleanup(&self.list()?, &self.config).map(drop)
        })
    }

    /// Only when states outlive their rule (module docs, "Freeing a slot on use").
    fn reports_use(&self) -> bool {
        self.states_survive
    }

    /// Each check runs `ipfw` once (about a millisecond of the monitor's time, during
    /// which it serves no hole request), so not as often as nft's netlink dump.
    fn use_check_periods(&self) -> (Duration, Duration) {
        (Duration::from_millis(100), Duration::from_millis(25))
    }

    /// One `ipfw -S show LO-HI`; every hole of `holes` whose rule counted its SYN is
    /// deleted (one `ipfw delete N ...`) and returned.
    fn used(&mut self, holes: &[(Slot, HoleSpec)]) -> Result<Vec<Slot>, Error> {
        during(Op::Used, None, || {
            if !self.states_survive || holes.is_empty() {
                return Ok(Vec::new());
            }
            let slots: Vec<u16> = holes
                .iter()
                .map(|(slot, _)| slot.0)
                .filter(|&n| self.config.contains(u32::from(n)))
                .collect();
            let used = used_slots(&self.show()?, &slots);
            self.delete(&used)?;
            Ok(used.into_iter().map(Slot).collect())
        })
    }

    fn flush_owned(&mut self) -> Result<usize, Error> {
        during(Op::Flush, None, || {
            let numbers = plan_cleanup(&self.list()?, &self.config)?;
            self.delete(&numbers)?;
            self.installed.clear();
            Ok(numbers.len())
        })
    }

    fn apply(&mut self, action: &FwAction) -> Result<(), Error> {
        during(Op::of(action), Some(action.slot()), || {
            self.check_slot(action.slot())?;
            match *action {
                FwAction::Open { slot, spec, .. } => {
                    if self.installed.contains(&slot.0) {
                        self.delete(&[slot.0])?;
                    }
                    self.add(slot, &spec)
                }
                // A re-arm of a hole whose rule was deleted on use (the monitor takes it as an
                // open): the rule goes in again.
                FwAction::Refresh { slot, spec, .. } if !self.installed.contains(&slot.0) => {
                    self.add(slot, &spec)
                }
                // The rule has no lifetime of its own; the Close at the new deadline removes it.
                FwAction::Refresh { .. } => Ok(()),
                FwAction::Close { slot, .. } => self.delete(&[slot.0]),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::exec::fake::TempDir;
    use super::*;

    #[test]
    fn divert_rules_must_say_out_or_xmit() {
        let listing = "\
00100 set 0 divert 10004 tcp from any to any 21 out via em0
00110 set 0 divert 10004 tcp from any 21 to any xmit em0
00120 set 0 divert 10004 tcp from any to any 21 in recv em1
00130 set 0 divert 10004 tcp from any 21 to any
00140 set 0 divert 10005 tcp from any to any 21
00150 set 0 allow tcp from any to any 10004
";
        assert_eq!(
            divert_rules_not_out(listing, 10004),
            [
                "00120 set 0 divert 10004 tcp from any to any 21 in recv em1",
                "00130 set 0 divert 10004 tcp from any 21 to any"
            ]
        );
        assert!(divert_rules_not_out("", 10004).is_empty());
    }
    use crate::firewall::test_holes::{open, v4, v6};
    use std::time::Duration;

    fn joined(args: &[String]) -> String {
        args.join(" ")
    }

    // --- golden argv -------------------------------------------------------------------

    #[test]
    fn add_v6_golden() {
        assert_eq!(
            joined(&add_args(Slot(64003), &v6(), None, "ftp6proxy")),
            "-q add 64003 allow tcp from 2001:db8::10 to 2001:db8::21 dst-port 50123 \
             setup keep-state // ftp6proxy"
        );
    }

    #[test]
    fn add_v4_golden() {
        assert_eq!(
            joined(&add_args(Slot(64000), &v4(), None, "ftp6proxy")),
            "-q add 64000 allow tcp from 192.0.2.21 to 192.0.2.10 dst-port 40000 \
             setup keep-state // ftp6proxy"
        );
    }

    #[test]
    fn add_with_queue_golden() {
        assert_eq!(
            joined(&add_args(Slot(64099), &v6(), Some(5), "ftp6proxy")),
            "-q add 64099 queue 5 tcp from 2001:db8::10 to 2001:db8::21 dst-port 50123 \
             setup keep-state // ftp6proxy"
        );
        assert_eq!(
            joined(&add_args(Slot(64001), &v4(), Some(65535), "ftp6proxy")),
            "-q add 64001 queue 65535 tcp from 192.0.2.21 to 192.0.2.10 dst-port 40000 \
             setup keep-state // ftp6proxy"
        );
    }

    #[test]
    fn comment_marker_is_its_own_argument() {
        let args = add_args(Slot(64003), &v6(), None, "ftp6proxy");
        assert_eq!(&args[args.len() - 2..], ["//", "ftp6proxy"]);
    }

    #[test]
    fn delete_and_list_golden() {
        assert_eq!(joined(&show_args(64000, 64099)), "-S show 64000-64099");
        assert_eq!(joined(&delete_args(&[64003])), "delete 64003");
        assert_eq!(joined(&delete_args(&[64000, 64007])), "delete 64000 64007");
        assert_eq!(joined(&list_args(64000, 64099)), "-S list 64000-64099");
    }

    #[test]
    fn queue_value_must_be_a_dummynet_number() {
        assert_eq!(parse_queue("5").unwrap(), 5);
        assert_eq!(parse_queue("65535").unwrap(), 65535);
        for bad in ["0", "65536", "-1", "ftp_bulk", "", "5 ", "5;reboot"] {
            assert!(
                matches!(
                    parse_queue(bad),
                    Err(Error {
                        op: Op::Configure,
                        kind: ErrorKind::Setup(_),
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
    }

    // --- list parsing -------------------------------------------------------------------

    /// Shapes printed by ipfw2.c show_static_rule(): `%05u` numbers, `set N` with -S,
    /// `# DISABLED` for rules in disabled sets (-S only), `:default` flow name after
    /// keep-state, the comment last.
    const LISTING: &str = "\
00100 set 0 allow ip from any to any via lo0
64003 set 0 allow tcp from 2001:db8::10 to 2001:db8::21 dst-port 50123 setup keep-state :default // ftp6proxy
64004 allow tcp from 192.0.2.10 to 192.0.2.21 dst-port 50000 setup keep-state // ftp6proxy
64005 set 0 queue 5 tcp from 192.0.2.10 to 192.0.2.21 dst-port 50001 setup keep-state :default // ftp6proxy
# DISABLED 64006 set 3 deny ip from any to any
64007 set 0 allow tcp from any to any // ftp6proxy-old
64008 set 0 allow tcp from any to any // not ftp6proxy
64009 set 0 count ip from any to any

## Dynamic rules (1 max 8192):
64003 0 0 (20s) STATE tcp 2001:db8::10 51000 <-> 2001:db8::21 50123 :default
";

    #[test]
    fn list_numbers_and_ownership() {
        let rules = parse_list(LISTING, "ftp6proxy");
        let got: Vec<(u32, bool)> = rules.iter().map(|r| (r.number, r.ours)).collect();
        assert_eq!(
            got,
            vec![
                (100, false),
                (64003, true),
                (64004, true),
                (64005, true),
                (64006, false),
                (64007, false),
                (64008, false),
                (64009, false),
            ]
        );
    }

    #[test]
    fn list_parsing_ignores_noise() {
        assert!(parse_list("", "ftp6proxy").is_empty());
        assert!(parse_list("\n\n## Dynamic rules:\nipfw: no rules\n", "ftp6proxy").is_empty());
        // A number too large for 32 bits is not a rule line.
        assert!(parse_list("99999999999 allow ip from any to any", "t").is_empty());
        assert_eq!(
            parse_list("65535 deny ip from any to any", "t"),
            vec![ListedRule {
                number: 65535,
                ours: false
            }]
        );
    }

    /// `ipfw -S show 64000-64099` as sbin/ipfw/ipfw2.c `show_static_rule` prints it: the
    /// number `%05u `, then packets and bytes `%*llu ` each, padded to the widest value
    /// of the listing (here 2 and 4 digits, from rule 64005), then `set N` (-S).
    const SHOW: &str = "\
64003  1   80 set 0 allow tcp from 2001:db8::10 to 2001:db8::21 dst-port 50123 setup keep-state :default // ftp6proxy
64004  0    0 set 0 allow tcp from 192.0.2.10 to 192.0.2.21 dst-port 50000 setup keep-state :default // ftp6proxy
64005 12 1424 set 0 count ip from any to any
64006  3  180 set 0 allow tcp from 192.0.2.10 to 192.0.2.21 dst-port 50001 setup keep-state :default // ftp6proxy
64006  0    0 set 0 deny ip from any to any
# DISABLED 64007  5  300 set 3 allow tcp from 192.0.2.10 to 192.0.2.21 dst-port 50002 setup keep-state :default // ftp6proxy
";

    #[test]
    fn show_counters_and_ownership() {
        let got: Vec<(u32, bool, u64)> = parse_show(SHOW, "ftp6proxy")
            .iter()
            .map(|r| (r.number, r.ours, r.packets))
            .collect();
        assert_eq!(
            got,
            vec![
                (64003, true, 1),
                (64004, true, 0),
                (64005, false, 12),
                (64006, true, 3),
                (64006, false, 0),
                (64007, true, 5),
            ]
        );
        assert!(parse_show("", "ftp6proxy").is_empty());
        assert!(parse_show("ipfw: no rules in range 64000-64099\n", "ftp6proxy").is_empty());
        // Without counters (a `list` line) the second word is no number: skipped.
        assert!(parse_show(
            "64003 allow tcp from any to any // ftp6proxy\n",
            "ftp6proxy"
        )
        .is_empty());
    }

    #[test]
    fn used_slots_need_a_count_and_no_foreign_rule() {
        let rules = parse_show(SHOW, "ftp6proxy");
        assert_eq!(
            used_slots(&rules, &[64003, 64004, 64005, 64006, 64007, 64010]),
            vec![64003, 64007],
            "64004 unused, 64005 not ours, 64006 shares its number, 64010 absent"
        );
        assert!(used_slots(&rules, &[]).is_empty());
    }

    fn cfg(base: u16, count: u16) -> IpfwConfig {
        IpfwConfig::new(base, count)
    }

    #[test]
    fn cleanup_deletes_our_rules_in_range_once_each() {
        let rules = vec![
            ListedRule {
                number: 63999,
                ours: false,
            },
            ListedRule {
                number: 64001,
                ours: true,
            },
            ListedRule {
                number: 64001,
                ours: true,
            },
            ListedRule {
                number: 64099,
                ours: true,
            },
            ListedRule {
                number: 64100,
                ours: false,
            },
        ];
        assert_eq!(
            plan_cleanup(&rules, &cfg(64000, 100)).unwrap(),
            vec![64001, 64099]
        );
    }

    #[test]
    fn foreign_rule_in_range_refuses_start() {
        let rules = parse_list(LISTING, "ftp6proxy");
        let err = plan_cleanup(&rules, &cfg(64000, 100)).unwrap_err();
        let ErrorKind::Setup(text) = err else {
            panic!("expected a setup error")
        };
        assert!(text.contains("64006, 64007, 64008, 64009"), "{text}");
        assert!(text.contains("64000-64099"), "{text}");
        assert!(text.contains("// ftp6proxy"), "{text}");
    }

    #[test]
    fn foreign_rule_sharing_our_number_refuses_start() {
        let rules = vec![
            ListedRule {
                number: 64001,
                ours: true,
            },
            ListedRule {
                number: 64001,
                ours: false,
            },
        ];
        assert!(plan_cleanup(&rules, &cfg(64000, 100)).is_err());
    }

    #[test]
    fn range_and_tag_are_validated() {
        assert!(Ipfw::new(cfg(64000, 100)).is_ok());
        assert!(Ipfw::new(cfg(65435, 100)).is_ok());
        assert!(Ipfw::new(cfg(65436, 100)).is_err(), "would reach 65535");
        assert!(Ipfw::new(cfg(64000, 0)).is_err());
        assert!(Ipfw::new(cfg(0, 10)).is_err());
        let mut bad = cfg(64000, 100);
        bad.tag = "two words".to_owned();
        assert!(Ipfw::new(bad).is_err());
    }

    // --- exec against a fake ipfw --------------------------------------------------------

    /// A fake `ipfw` that logs each argv (one line, space-joined) to `ipfw.log`, answers
    /// `-S list` from the file `listing` and `-S show` from the file `show` (or "no rules
    /// in range" when it is absent), fails
    /// `delete` of numbers listed in `missing`, and a fake `sysctl` that answers from
    /// files named after the oid.
    struct Fake {
        dir: TempDir,
    }

    impl Fake {
        fn new(tag: &str) -> Fake {
            let dir = TempDir::new(tag);
            let d = dir.path().display().to_string();
            dir.script(
                "ipfw",
                &format!(
                    r#"echo "$*" >> '{d}/ipfw.log'
case "$1 $2" in
"-S list")
    if [ -f '{d}/listing' ]; then cat '{d}/listing'; else echo "ipfw: no rules in range $3" >&2; exit 69; fi ;;
"delete "*)
    shift
    for n in "$@"; do
        if grep -qx "$n" '{d}/missing' 2>/dev/null; then echo "ipfw: rule $n not found" >&2; exit 69; fi
    done ;;
"-q add")
    if [ -f '{d}/refuse' ]; then echo "ipfw: getsockopt(IP_FW_XADD): Operation not permitted" >&2; exit 71; fi ;;
"-S show")
    if [ -f '{d}/refuse' ]; then echo "ipfw: retrieving config failed: Operation not permitted" >&2; exit 71; fi
    if [ -f '{d}/show' ]; then cat '{d}/show'; else echo "ipfw: no rules in range $3" >&2; exit 69; fi ;;
esac"#
                ),
            );
            dir.script(
                "sysctl",
                &format!(
                    r#"if [ -f "{d}/sysctl.$2" ]; then cat "{d}/sysctl.$2"; else echo "sysctl: unknown oid '$2'" >&2; exit 1; fi"#
                ),
            );
            Fake { dir }
        }

        fn file(&self, name: &str, text: &str) {
            std::fs::write(self.dir.path().join(name), text).unwrap();
        }

        fn ipfw(&self, config: IpfwConfig) -> Ipfw {
            let mut config = config;
            config.ipfw = self.dir.path().join("ipfw");
            config.sysctl = self.dir.path().join("sysctl");
            Ipfw::new(config).unwrap()
        }

        fn log(&self) -> Vec<String> {
            self.dir.lines("ipfw.log")
        }
    }

    #[test]
    fn fake_ipfw_open_refresh_close() {
        let fake = Fake::new("ipfw-open");
        let mut fw = fake.ipfw(cfg(64000, 100));
        fw.apply(&open(64003, v6())).unwrap();
        fw.apply(&FwAction::Refresh {
            slot: Slot(64003),
            spec: v6(),
            ttl: Duration::from_secs(2),
        })
        .unwrap();
        fw.apply(&FwAction::Close {
            slot: Slot(64003),
            spec: v6(),
        })
        .unwrap();
        assert_eq!(
            fake.log(),
            vec![
                "-q add 64003 allow tcp from 2001:db8::10 to 2001:db8::21 dst-port 50123 \
                 setup keep-state // ftp6proxy",
                "delete 64003",
            ]
        );
    }

    #[test]
    fn fake_ipfw_reopen_of_installed_slot_replaces_it() {
        let fake = Fake::new("ipfw-reopen");
        let mut fw = fake.ipfw(cfg(64000, 100));
        fw.apply(&open(64000, v4())).unwrap();
        fw.apply(&open(64000, v6())).unwrap();
        let log = fake.log();
        assert_eq!(log.len(), 3, "{log:?}");
        assert_eq!(log[1], "delete 64000");
    }

    #[test]
    fn fake_ipfw_close_of_missing_rule_is_fine() {
        let fake = Fake::new("ipfw-missing");
        fake.file("missing", "64003\n");
        let mut fw = fake.ipfw(cfg(64000, 100));
        fw.apply(&FwAction::Close {
            slot: Slot(64003),
            spec: v6(),
        })
        .unwrap();
    }

    #[test]
    fn fake_ipfw_refused_add_is_reported() {
        let fake = Fake::new("ipfw-refuse");
        fake.file("refuse", "");
        let mut fw = fake.ipfw(cfg(64000, 100));
        let err = fw.apply(&open(64003, v6())).unwrap_err();
        assert!(err.to_string().contains("Operation not permitted"), "{err}");
    }

    #[test]
    fn slot_outside_range_is_refused_without_exec() {
        let fake = Fake::new("ipfw-range");
        let mut fw = fake.ipfw(cfg(64000, 100));
        assert!(fw.apply(&open(64100, v6())).is_err());
        assert!(fw.apply(&open(63999, v6())).is_err());
        assert!(fake.log().is_empty());
    }

    #[test]
    fn fake_ipfw_flush_deletes_only_ours_in_one_call() {
        let fake = Fake::new("ipfw-flush");
        fake.file(
            "listing",
            "64003 set 0 allow tcp from 2001:db8::10 to 2001:db8::21 dst-port 50123 setup keep-state :default // ftp6proxy\n\
             64010 set 0 allow tcp from 192.0.2.1 to 192.0.2.2 dst-port 4000 setup keep-state :default // ftp6proxy\n",
        );
        let mut fw = fake.ipfw(cfg(64000, 100));
        assert_eq!(fw.flush_owned().unwrap(), 2);
        assert_eq!(
            fake.log(),
            vec!["-S list 64000-64099", "delete 64003 64010"]
        );
    }

    #[test]
    fn fake_ipfw_flush_of_empty_range() {
        let fake = Fake::new("ipfw-empty");
        let mut fw = fake.ipfw(cfg(64000, 100));
        assert_eq!(fw.flush_owned().unwrap(), 0);
        assert_eq!(fake.log(), vec!["-S list 64000-64099"]);
    }

    #[test]
    fn fake_ipfw_flush_refuses_foreign_rule_and_deletes_nothing() {
        let fake = Fake::new("ipfw-foreign");
        fake.file(
            "listing",
            "64003 set 0 allow tcp from any to any // ftp6proxy\n64004 set 0 deny ip from any to any\n",
        );
        let mut fw = fake.ipfw(cfg(64000, 100));
        assert!(matches!(
            fw.flush_owned(),
            Err(Error {
                op: Op::Flush,
                kind: ErrorKind::Setup(_),
                ..
            })
        ));
        assert_eq!(fake.log(), vec!["-S list 64000-64099"]);
    }

    #[test]
    fn fake_check_requires_keep_states() {
        let fake = Fake::new("ipfw-check");
        fake.file("sysctl.net.inet.ip.fw.enable", "1\n");
        fake.file("sysctl.net.inet.ip.fw.dyn_keep_states", "0\n");
        let mut fw = fake.ipfw(cfg(64000, 100));
        let Err(Error {
            kind: ErrorKind::Setup(text),
            ..
        }) = fw.check()
        else {
            panic!("expected a setup error")
        };
        assert!(
            text.contains("sysctl net.inet.ip.fw.dyn_keep_states=1"),
            "{text}"
        );
        assert!(text.contains("/etc/sysctl.conf"), "{text}");

        let mut relaxed = cfg(64000, 100);
        relaxed.allow_dyn_drop = true;
        fake.ipfw(relaxed).check().unwrap();

        fake.file("sysctl.net.inet.ip.fw.dyn_keep_states", "1\n");
        fw.check().unwrap();
    }

    #[test]
    fn fake_check_reports_unloaded_ipfw() {
        let fake = Fake::new("ipfw-unloaded");
        let Err(Error {
            kind: ErrorKind::Setup(text),
            ..
        }) = fake.ipfw(cfg(64000, 100)).check()
        else {
            panic!("expected a setup error")
        };
        assert!(text.contains("kldload ipfw"), "{text}");
    }

    #[test]
    fn fake_check_with_queue_requires_dummynet_and_one_pass() {
        let fake = Fake::new("ipfw-queue");
        fake.file("sysctl.net.inet.ip.fw.enable", "1\n");
        fake.file("sysctl.net.inet.ip.fw.dyn_keep_states", "1\n");
        let mut queued = cfg(64000, 100);
        queued.queue = Some(5);
        let mut fw = fake.ipfw(queued);
        let Err(Error {
            kind: ErrorKind::Setup(text),
            ..
        }) = fw.check()
        else {
            panic!("expected a setup error")
        };
        assert!(text.contains("kldload dummynet"), "{text}");
        fake.file("sysctl.net.inet.ip.dummynet.io_fast", "0\n");
        fake.file("sysctl.net.inet.ip.fw.one_pass", "0\n");
        let Err(Error {
            kind: ErrorKind::Setup(text),
            ..
        }) = fw.check()
        else {
            panic!("expected a setup error")
        };
        assert!(text.contains("sysctl net.inet.ip.fw.one_pass=1"), "{text}");
        fake.file("sysctl.net.inet.ip.fw.one_pass", "1\n");
        fw.check().unwrap();
    }

    /// A fake backend that passed `check` with `dyn_keep_states` at `keep`.
    fn checked(fake: &Fake, keep: &str, allow_dyn_drop: bool) -> Ipfw {
        fake.file("sysctl.net.inet.ip.fw.enable", "1\n");
        fake.file("sysctl.net.inet.ip.fw.dyn_keep_states", keep);
        let mut config = cfg(64000, 100);
        config.allow_dyn_drop = allow_dyn_drop;
        let mut fw = fake.ipfw(config);
        fw.check().unwrap();
        fw
    }

    fn hole(slot: u16, spec: HoleSpec) -> (Slot, HoleSpec) {
        (Slot(slot), spec)
    }

    #[test]
    fn fake_ipfw_used_hole_is_reported_and_deleted_in_one_call() {
        let fake = Fake::new("ipfw-used");
        let mut fw = checked(&fake, "1\n", false);
        assert!(fw.reports_use());
        fw.apply(&open(64003, v6())).unwrap();
        fw.apply(&open(64004, v4())).unwrap();
        fake.file("show", SHOW);
        let before = fake.log().len();
        let used = fw
            .used(&[hole(64003, v6()), hole(64004, v4()), hole(64006, v4())])
            .unwrap();
        assert_eq!(
            used,
            vec![Slot(64003)],
            "64004 unused; 64006 shares its number"
        );
        assert_eq!(
            fake.log()[before..],
            ["-S show 64000-64099", "delete 64003"]
        );
        // The slot's rule is gone: a re-arm adds it again, a new open needs no delete.
        fw.apply(&FwAction::Refresh {
            slot: Slot(64003),
            spec: v6(),
            ttl: Duration::from_secs(2),
        })
        .unwrap();
        fw.apply(&FwAction::Refresh {
            slot: Slot(64004),
            spec: v4(),
            ttl: Duration::from_secs(2),
        })
        .unwrap();
        let log = fake.log();
        assert_eq!(
            log[before + 2..],
            [
                "-q add 64003 allow tcp from 2001:db8::10 to 2001:db8::21 dst-port 50123 \
              setup keep-state // ftp6proxy"
            ],
            "only the deleted hole is added again"
        );
    }

    #[test]
    fn fake_ipfw_nothing_used_runs_no_delete() {
        let fake = Fake::new("ipfw-unused");
        let mut fw = checked(&fake, "1\n", false);
        fake.file(
            "show",
            "64004 0 0 set 0 allow tcp from 192.0.2.10 to 192.0.2.21 dst-port 50000 setup keep-state :default // ftp6proxy\n",
        );
        let before = fake.log().len();
        assert!(fw.used(&[hole(64004, v4())]).unwrap().is_empty());
        assert_eq!(fake.log()[before..], ["-S show 64000-64099"]);
        // An empty range (every rule deleted meanwhile) is nothing used, not an error.
        std::fs::remove_file(fake.dir.path().join("show")).unwrap();
        assert!(fw.used(&[hole(64004, v4())]).unwrap().is_empty());
        // No holes: no exec at all.
        let before = fake.log().len();
        assert!(fw.used(&[]).unwrap().is_empty());
        assert_eq!(fake.log().len(), before);
    }

    /// With --ipfw-allow-state-loss and dyn_keep_states=0, deleting the rule would cut the
    /// transfer that just started: no use is reported, nothing is run.
    #[test]
    fn fake_ipfw_state_loss_reports_no_use() {
        let fake = Fake::new("ipfw-stateloss");
        let mut fw = checked(&fake, "0\n", true);
        assert!(!fw.reports_use());
        fake.file("show", SHOW);
        let before = fake.log().len();
        assert!(fw.used(&[hole(64003, v6())]).unwrap().is_empty());
        assert_eq!(fake.log().len(), before);
        // Before `check` nothing is known about the sysctl: no use reporting either.
        assert!(!fake.ipfw(cfg(64000, 100)).reports_use());
    }

    #[test]
    fn fake_ipfw_show_failure_is_an_error() {
        let fake = Fake::new("ipfw-showfail");
        let mut fw = checked(&fake, "1\n", false);
        fake.file("refuse", "");
        let err = fw.used(&[hole(64003, v6())]).unwrap_err();
        assert!(err.to_string().contains("Operation not permitted"), "{err}");
    }
}
