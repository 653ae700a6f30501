//! The pf(4) backend: one anchor per hole, `<anchor>/<slot>` (default `ftp6proxy/64003`).
//!
//! Owns the child anchors of its anchor whose names are slot numbers of its range, and
//! nothing else: not the main ruleset, not the anchor's own rules, not children with other
//! names (DESIGN.md invariant 6). The operator hooks us in once with
//! `anchor "ftp6proxy/*"` in pf.conf; [`Pf::check`] verifies that line and that pf is on.
//!
//! Talks to the kernel only through the host's own `/sbin/pfctl` (pf's ioctls change
//! between FreeBSD 13, 14 and 15: research/freebsd.md §3.3), via [`super::exec`] with argv
//! vectors; the rule text goes in on stdin (`pfctl -a ANCHOR -f -`), which replaces the
//! anchor's ruleset atomically. The rule text builder, the argv builders and the output
//! parsers are pure and golden-tested on every platform; the exec part is tested against a
//! fake `pfctl`.
//!
//! # The rules of one hole
//! As OpenBSD ftp-proxy (`add_filter` is called once per direction), a hole is a pair:
//! ```text
//! pass in quick inet6 proto tcp from 2001:db8::10 to 2001:db8::21 port 50123 flags S/SA keep state (max 1)
//! pass out quick inet6 proto tcp from 2001:db8::10 to 2001:db8::21 port 50123 flags S/SA keep state (max 1)
//! ```
//! A gateway filters a forwarded SYN twice, inbound on one interface and outbound on the
//! other, and pf creates one state for each. A single direction-less rule with `max 1`
//! would allow the first state and then drop the SYN on the way out ("max states"
//! reached). One rule per direction, each with `max 1`, lets exactly one connection
//! through. pf states outlive their rule (research §3.2), so flushing the anchor after
//! `-t` seconds does not cut the transfer: sys/netpfil/pf/pf_ioctl.c
//! `pf_unlink_rule_locked` takes a rule out of its ruleset onto `V_pf_unlinked_rules`
//! (marked `PFRULE_REFS`) instead of freeing it, where the states that point to it keep it.
//!
//! # Freeing a slot on use
//! [`Pf::used`] reads the rule counters of every hole in one `pfctl -a '*' -vsr`
//! ([`show_all_args`], [`parse_hole_states`]) and flushes the anchor of each hole whose
//! *two* rules have made a state, so no second connection gets through and the slot is
//! free. Both, because pf looks a packet's state up by direction: sys/netpfil/pf/pf.c
//! `pf_test_state_tcp` builds the lookup key straight for `PF_IN` ("wire side") and
//! reversed for `PF_OUT` ("stack side"), so the forwarded SYN, going out after it came in,
//! does not find the inbound state and is matched against the rules again, where the `out`
//! rule makes the second state. Flushing the anchor once the `in` state alone exists could
//! drop that SYN on its way out. A hole on a host that filters the data connection in one
//! direction only (the FTP server or client is this host) never has both: it keeps its
//! slot to the deadline, as before.
//!
//! # `-q`: queue
//! pf has two kinds of queues. A numeric `-q 5` means a dummynet queue (`dnqueue 5`,
//! configured with `dnctl queue 5 config ...`; FreeBSD 13.1+). Anything else is an ALTQ
//! queue name (`queue ftp_bulk`, defined by `queue` lines in pf.conf; needs a kernel with
//! `options ALTQ`). A bare number cannot be an ALTQ name anyway: pfctl's grammar reads it
//! as a number, so this split loses nothing. Names are restricted to characters that need
//! no quoting, so the value can never inject pf.conf syntax.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ftp6proxy_core::{Family, FwAction, HoleSpec, Slot};

use super::exec::{self, Cmd};
use super::{during, Error, ErrorKind, Firewall, Op};

/// The default anchor (`--anchor`).
pub const DEFAULT_ANCHOR: &str = "ftp6proxy";

/// pf's limit on queue names (PF_QNAME_SIZE, including the NUL).
const QNAME_MAX: usize = 63;
/// pf's limit on anchor paths (MAXPATHLEN, generous; we keep it short and simple).
const ANCHOR_MAX: usize = 64;

/// What `-q` asks pf to do with a hole's packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Queue {
    /// An ALTQ queue defined in pf.conf: `queue NAME`.
    Altq(String),
    /// A dummynet queue configured with dnctl: `dnqueue N`.
    Dummynet(u16),
}

impl Queue {
    /// Parses a `-q` value: a number 1..=65535 is a dummynet queue, a name of
    /// `[A-Za-z_][A-Za-z0-9_.-]*` (up to 63 characters) an ALTQ queue.
    ///
    /// # Errors
    /// [`ErrorKind::Setup`] for anything else.
    pub fn parse(value: &str) -> Result<Queue, Error> {
        let bad = || {
            Error::configure(format!(
                "-q {}: with pf the queue is a dummynet queue number 1-65535 (dnqueue) or an \
                 ALTQ queue name of letters, digits, _ . - starting with a letter or _ \
                 (at most {QNAME_MAX} characters)",
                value.escape_debug()
            ))
        };
        let bytes = value.as_bytes();
        match bytes.first() {
            None => Err(bad()),
            Some(b) if b.is_ascii_digit() => match value.parse::<u16>() {
                Ok(n) if n > 0 => Ok(Queue::Dummynet(n)),
                _ => Err(bad()),
            },
            Some(b) if b.is_ascii_alphabetic() || *b == b'_' => {
                let ok = bytes.len() <= QNAME_MAX
                    && bytes
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
                if ok {
                    Ok(Queue::Altq(value.to_owned()))
                } else {
                    Err(bad())
                }
            }
            Some(_) => Err(bad()),
        }
    }
}

/// The rule option: `queue NAME` or `dnqueue N`.
impl fmt::Display for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Queue::Altq(name) => write!(f, "queue {name}"),
            Queue::Dummynet(n) => write!(f, "dnqueue {n}"),
        }
    }
}

/// Everything the pf backend needs to know. The daemon fills it from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PfConfig {
    /// The `pfctl` tool (`/sbin/pfctl`).
    pub pfctl: PathBuf,
    /// Our anchor (`--anchor`, default [`DEFAULT_ANCHOR`]); holes go in `<anchor>/<slot>`.
    pub anchor: String,
    /// First slot (`-b`).
    pub base: u16,
    /// Number of slots (`-c`).
    pub count: u16,
    /// `-q`, see the module docs.
    pub queue: Option<Queue>,
    /// The vnet jail pfctl runs in (`-j`), or `None` for the host.
    pub jail: Option<i32>,
}

impl PfConfig {
    /// Defaults: anchor `ftp6proxy`, `/sbin/pfctl`, no queue.
    pub fn new(base: u16, count: u16) -> PfConfig {
        PfConfig {
            pfctl: PathBuf::from("/sbin/pfctl"),
            anchor: DEFAULT_ANCHOR.to_owned(),
            base,
            count,
            queue: None,
            jail: None,
        }
    }

    fn contains(&self, slot: u16) -> bool {
        let end = u32::from(self.base) + u32::from(self.count);
        (u32::from(self.base)..end).contains(&u32::from(slot))
    }
}

/// Whether `anchor` is a plain name pfctl takes without quoting: letters, digits, `_ - .`,
/// not starting with `_` (pf reserves those names) and no `/` (we are one level).
fn valid_anchor(anchor: &str) -> bool {
    !anchor.is_empty()
        && anchor.len() <= ANCHOR_MAX
        && !anchor.starts_with('_')
        && !anchor.starts_with('.')
        && anchor
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

// ---------------------------------------------------------------------------------------
// Pure builders. Each one is written above it the way an operator would type it.
// ---------------------------------------------------------------------------------------

/// The ruleset of one hole, loaded into `<anchor>/<slot>`:
///
/// ```text
/// pass in quick inet6 proto tcp from 2001:db8::10 to 2001:db8::21 port 50123 flags S/SA keep state (max 1)
/// pass out quick inet6 proto tcp from 2001:db8::10 to 2001:db8::21 port 50123 flags S/SA keep state (max 1)
/// ```
///
/// `inet` for IPv4; ` queue NAME` or ` dnqueue N` appended when `-q` is set. Why two
/// rules: see the module docs.
pub fn hole_rules(spec: &HoleSpec, queue: Option<&Queue>) -> String {
    let af = match spec.family() {
        Family::V4 => "inet",
        Family::V6 => "inet6",
    };
    let queue = queue.map(|q| format!(" {q}")).unwrap_or_default();
    let mut text = String::new();
    for dir in ["in", "out"] {
        text.push_str(&format!(
            "pass {dir} quick {af} proto tcp from {} to {} port {} flags S/SA keep state (max 1){queue}\n",
            addr(spec.src),
            addr(spec.dst),
            spec.dport,
        ));
    }
    text
}

fn addr(ip: IpAddr) -> String {
    ip.to_string()
}

/// The anchor path of a slot: `ftp6proxy/64003`.
pub fn slot_anchor(anchor: &str, slot: Slot) -> String {
    format!("{anchor}/{slot}")
}

/// `pfctl -a ftp6proxy/64003 -f -` (the rules on stdin)
pub fn load_args(anchor: &str, slot: Slot) -> Vec<String> {
    vec![
        "-a".to_owned(),
        slot_anchor(anchor, slot),
        "-f".to_owned(),
        "-".to_owned(),
    ]
}

/// `pfctl -a ftp6proxy/64003 -F rules`
pub fn flush_args(anchor: &str, slot: Slot) -> Vec<String> {
    vec![
        "-a".to_owned(),
        slot_anchor(anchor, slot),
        "-F".to_owned(),
        "rules".to_owned(),
    ]
}

/// `pfctl -a ftp6proxy -s Anchors`
pub fn list_anchors_args(anchor: &str) -> Vec<String> {
    vec![
        "-a".to_owned(),
        anchor.to_owned(),
        "-s".to_owned(),
        "Anchors".to_owned(),
    ]
}

/// `pfctl -a '*' -v -s rules`
///
/// The whole ruleset with each rule's counters, every anchor included: sbin/pfctl/pfctl.c
/// `main` takes a `-a` ending in `*` as "recurse" (`PF_OPT_RECURSE`; `*` alone leaves the
/// main ruleset as the start), and `pfctl_show_rules` then descends into every anchor rule,
/// a wildcard one (`anchor "ftp6proxy/*"`) by listing its child rulesets, each printed as
/// `anchor "64003" all {` ... `}`. `-a 'ftp6proxy/*'` would not do: it starts at the
/// `ftp6proxy` ruleset itself, which holds no rules (`main` passes `wildcard` 0), so
/// nothing of its children is printed. One run for all holes, whatever their number.
pub fn show_all_args() -> Vec<String> {
    vec![
        "-a".to_owned(),
        "*".to_owned(),
        "-v".to_owned(),
        "-s".to_owned(),
        "rules".to_owned(),
    ]
}

/// `pfctl -s info`
pub fn info_args() -> Vec<String> {
    vec!["-s".to_owned(), "info".to_owned()]
}

/// `pfctl -s rules`
pub fn main_rules_args() -> Vec<String> {
    vec!["-s".to_owned(), "rules".to_owned()]
}

/// The pf.conf line that evaluates our anchors: `anchor "ftp6proxy/*"`.
pub fn hook_line(anchor: &str) -> String {
    format!("anchor \"{anchor}/*\"")
}

// ---------------------------------------------------------------------------------------
// Output parsers.
// ---------------------------------------------------------------------------------------

/// The child anchors of `anchor` as `pfctl -a ANCHOR -s Anchors` lists them, one per line
/// with two leading spaces and the full path:
///
/// ```text
///   ftp6proxy/64003
///   ftp6proxy/64010
/// ```
///
/// Returns `(slots, others)`: the children named by a slot number, and every other child
/// (names we did not create; the caller leaves them alone). A bare child name without the
/// `anchor/` prefix is accepted too.
pub fn parse_anchors(output: &str, anchor: &str) -> (Vec<u16>, Vec<String>) {
    let mut slots = BTreeSet::new();
    let mut others = Vec::new();
    let prefix = format!("{anchor}/");
    for line in output.lines() {
        let name = line.trim();
        if name.is_empty() {
            continue;
        }
        let child = name.strip_prefix(&prefix).unwrap_or(name);
        let numeric = !child.is_empty() && child.bytes().all(|b| b.is_ascii_digit());
        match child.parse::<u16>() {
            // "064003" is not a name we create: leave it alone.
            Ok(slot) if numeric && slot.to_string() == child => {
                slots.insert(slot);
            }
            _ => others.push(name.to_owned()),
        }
    }
    (slots.into_iter().collect(), others)
}

/// The states the two rules of one hole made, as [`parse_hole_states`] reads them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HoleStates {
    /// States made by the `pass in` rule.
    pub inbound: u64,
    /// States made by the `pass out` rule.
    pub outbound: u64,
}

impl HoleStates {
    /// Whether the data connection came through both directions (module docs).
    pub fn used(&self) -> bool {
        self.inbound > 0 && self.outbound > 0
    }
}

/// The states made by the rules of our hole anchors, per slot, from `pfctl -a '*' -vsr`
/// ([`show_all_args`]):
///
/// ```text
/// anchor "ftp6proxy/*" all {
///   [ Evaluations: 95        Packets: 12        Bytes: 776         States: 0     ]
///   [ Inserted: uid 0 pid 812 State Creations: 0     ]
/// anchor "64003" all {
/// pass in quick inet6 proto tcp from 2001:db8::10 to 2001:db8::21 port = 50123 flags S/SA keep state (max 1)
///   [ Evaluations: 2         Packets: 3         Bytes: 240         States: 1     ]
///   [ Inserted: uid 0 pid 4711 State Creations: 1     ]
/// pass out quick inet6 ...
/// ...
/// }
/// }
/// ```
///
/// sbin/pfctl/pfctl.c: `pfctl_show_rules` prints each rule (`print_rule`) and after it
/// `pfctl_print_rule_counters`, whose `-v` lines are `  [ Evaluations: %-8llu  Packets:
/// %-8llu  Bytes: %-10llu  States: %-6ju]` (states now) and `  [ Inserted: uid %u pid %u
/// State Creations: %-6ju]` (states ever made); an anchor rule it recurses into ends in
/// ` {`, its block in a line `}`; `INDENT` indents nothing under `-v`. The wildcard
/// branch prints one more counters block, of no rule, before the first child: counters
/// outside a child block are ignored. A hole counts the larger of its rule's two numbers
/// (a connection already closed has no state now but made one). Blocks are matched by
/// name: a child named by a slot number directly inside `anchor "<anchor>/*"`.
pub fn parse_hole_states(output: &str, anchor: &str) -> BTreeMap<u16, HoleStates> {
    let hook = format!("{anchor}/*");
    let mut found: BTreeMap<u16, HoleStates> = BTreeMap::new();
    // The names of the blocks we are in, outermost first ("" for a block not an anchor).
    let mut blocks: Vec<String> = Vec::new();
    // The direction of the last rule line seen in a hole's block: `Some(true)` for in.
    let mut inbound: Option<bool> = None;
    for line in output.lines() {
        let line = line.trim();
        if line == "}" {
            blocks.pop();
            inbound = None;
            continue;
        }
        if let Some(open) = line.strip_suffix('{') {
            let name = open
                .strip_prefix("anchor \"")
                .and_then(|rest| rest.split_once('"'))
                .map_or("", |(name, _)| name);
            blocks.push(name.to_owned());
            inbound = None;
            continue;
        }
        let slot = match blocks.as_slice() {
            [.., parent, child] if *parent == hook => slot_name(child),
            _ => None,
        };
        let Some(slot) = slot else {
            continue;
        };
        if let Some(rule) = line.strip_prefix("pass ") {
            inbound = match rule.split_whitespace().next() {
                Some("in") => Some(true),
                Some("out") => Some(false),
                _ => None,
            };
            continue;
        }
        let Some(dir) = inbound else {
            continue;
        };
        let count = ["State Creations:", "States:"]
            .iter()
            .filter_map(|label| counter_after(line, label))
            .max();
        if let Some(count) = count {
            let entry = found.entry(slot).or_default();
            let field = if dir {
                &mut entry.inbound
            } else {
                &mut entry.outbound
            };
            *field = (*field).max(count);
        }
    }
    found
}

/// The slot a child anchor's name stands for: a number as we write it (no leading 0).
fn slot_name(name: &str) -> Option<u16> {
    let numeric = !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit());
    let slot = name.parse::<u16>().ok()?;
    (numeric && slot.to_string() == name).then_some(slot)
}

/// The number after `label` in a counters line (`States: 1     ]` gives 1).
fn counter_after(line: &str, label: &str) -> Option<u64> {
    let (_, rest) = line.split_once(label)?;
    let word = rest.split_whitespace().next()?;
    word.trim_end_matches(']').parse().ok()
}

/// Whether `pfctl -s info` says pf is enabled (`Status: Enabled for 0 days 01:02:03 ...`).
pub fn parse_enabled(info: &str) -> bool {
    info.lines().any(|line| {
        let mut words = line.split_whitespace();
        words.next() == Some("Status:") && words.next() == Some("Enabled")
    })
}

/// Whether the main ruleset (`pfctl -s rules`) evaluates our anchors: a line starting with
/// `anchor "ftp6proxy/*"` (pfctl prints `anchor "ftp6proxy/*" all`, possibly with
/// direction or interface options after the name).
pub fn has_hook(rules: &str, anchor: &str) -> bool {
    let hook = hook_line(anchor);
    rules.lines().any(|line| {
        line.trim_start()
            .strip_prefix(&hook)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
    })
}

// ---------------------------------------------------------------------------------------
// The backend.
// ---------------------------------------------------------------------------------------

/// The pf backend: runs `/sbin/pfctl` for every change.
#[derive(Debug)]
pub struct Pf {
    config: PfConfig,
    /// Slots whose anchor we loaded and have not flushed since: a `Refresh` of a slot not
    /// in it (flushed on use) loads the hole again.
    loaded: HashSet<u16>,
}

impl Pf {
    /// A backend for `config`. Runs nothing yet.
    ///
    /// # Errors
    /// [`ErrorKind::Setup`] when the anchor name is unusable or the slot range is empty or
    /// runs past 65535.
    pub fn new(config: PfConfig) -> Result<Pf, Error> {
        if !valid_anchor(&config.anchor) {
            return Err(Error::configure(format!(
                "--anchor {:?}: use 1-{ANCHOR_MAX} characters of A-Z a-z 0-9 _ - ., not \
                 starting with _ or . and without /",
                config.anchor
            )));
        }
        if config.count == 0 || u32::from(config.base) + u32::from(config.count) - 1 > 65535 {
            return Err(Error::configure(format!(
                "slot range -b {} -c {} must be non-empty and end at 65535 at most",
                config.base, config.count
            )));
        }
        Ok(Pf {
            config,
            loaded: HashSet::new(),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &PfConfig {
        &self.config
    }

    fn cmd(&self, args: Vec<String>) -> Cmd {
        Cmd::new(&self.config.pfctl, args).in_jail(self.config.jail)
    }

    fn flush_slot(&mut self, slot: Slot) -> Result<(), ErrorKind> {
        let cmd = self.cmd(flush_args(&self.config.anchor, slot));
        exec::run_ok(&cmd, None, &cmd.to_string())?;
        self.loaded.remove(&slot.0);
        Ok(())
    }

    /// Loads the rules of a hole into its anchor (replacing what was there).
    fn load(&mut self, slot: Slot, spec: &HoleSpec) -> Result<(), ErrorKind> {
        let cmd = self.cmd(load_args(&self.config.anchor, slot));
        let rules = hole_rules(spec, self.config.queue.as_ref());
        exec::run_ok(&cmd, Some(rules.as_bytes()), &cmd.to_string())?;
        self.loaded.insert(slot.0);
        Ok(())
    }

    /// The slots of our range that currently have an anchor.
    fn listed_slots(&self) -> Result<Vec<u16>, ErrorKind> {
        let cmd = self.cmd(list_anchors_args(&self.config.anchor));
        let output = exec::run(&cmd, None)?;
        if !output.success() {
            // pfctl's "Anchor 'ftp6proxy' not found." (EINVAL): nothing was ever loaded
            // under it, so there is nothing to flush.
            if output.stderr.contains("not found") {
                return Ok(Vec::new());
            }
            return Err(ErrorKind::Refused {
                what: cmd.to_string(),
                detail: output.failure_detail(),
            });
        }
        let (slots, others) = parse_anchors(&output.stdout, &self.config.anchor);
        if !others.is_empty() {
            log::warn!(
                "pf anchors not created by ftp6proxy left alone: {}",
                others.join(" ")
            );
        }
        let (ours, foreign): (Vec<u16>, Vec<u16>) =
            slots.into_iter().partition(|&s| self.config.contains(s));
        if !foreign.is_empty() {
            log::warn!(
                "pf anchors outside our slot range {}-{} left alone (another instance?): {:?}",
                self.config.base,
                u32::from(self.config.base) + u32::from(self.config.count) - 1,
                foreign
            );
        }
        Ok(ours)
    }

    fn check_slot(&self, slot: Slot) -> Result<(), ErrorKind> {
        if self.config.contains(slot.0) {
            Ok(())
        } else {
            Err(ErrorKind::Refused {
                what: format!("pf anchor {}", slot_anchor(&self.config.anchor, slot)),
                detail: "slot outside our range".to_owned(),
            })
        }
    }
}

impl Firewall for Pf {
    fn check(&mut self) -> Result<(), Error> {
        during(Op::Check, None, || {
            let cmd = self.cmd(info_args());
            let info = exec::run_ok(&cmd, None, &cmd.to_string())?;
            if !parse_enabled(&info.stdout) {
                return Err(ErrorKind::Setup(
                    "pf is not enabled: run `pfctl -e` (pf_enable=\"YES\" in /etc/rc.conf)"
                        .to_owned(),
                ));
            }
            let cmd = self.cmd(main_rules_args());
            let rules = exec::run_ok(&cmd, None, &cmd.to_string())?;
            if !has_hook(&rules.stdout, &self.config.anchor) {
                return Err(ErrorKind::Setup(format!(
                    "the pf ruleset never evaluates ftp6proxy's anchors: add the line\n    {}\n\
                 to /etc/pf.conf before the rules that block FTP data connections, then run \
                 `pfctl -f /etc/pf.conf`",
                    hook_line(&self.config.anchor)
                )));
            }
            Ok(())
        })
    }

    fn reports_use(&self) -> bool {
        true
    }

    /// Each check runs `pfctl` once over the whole ruleset (the operator's included, so
    /// its cost grows with it, and the monitor serves no hole request meanwhile). Freeing
    /// a used slot early only matters when slots run short: a hole's `max 1` rules admit
    /// one connection anyway (unlike ipfw's rule, which admits more until removed). So
    /// once a second while slots are plentiful, and every 25 ms once three quarters are
    /// taken.
    fn use_check_periods(&self) -> (Duration, Duration) {
        (Duration::from_secs(1), Duration::from_millis(25))
    }

    /// One `pfctl -a '*' -vsr`; the anchor of every hole of `holes` whose two rules made
    /// a state is flushed (module docs) and its slot returned.
    fn used(&mut self, holes: &[(Slot, HoleSpec)]) -> Result<Vec<Slot>, Error> {
        during(Op::Used, None, || {
            if holes.is_empty() {
                return Ok(Vec::new());
            }
            let cmd = self.cmd(show_all_args());
            let output = exec::run_ok(&cmd, None, &cmd.to_string())?;
            let states = parse_hole_states(&output.stdout, &self.config.anchor);
            let mut used = Vec::new();
            for &(slot, _) in holes {
                if self.config.contains(slot.0) && states.get(&slot.0).is_some_and(HoleStates::used)
                {
                    self.flush_slot(slot)?;
                    used.push(slot);
                }
            }
            Ok(used)
        })
    }

    fn flush_owned(&mut self) -> Result<usize, Error> {
        during(Op::Flush, None, || {
            let slots = self.listed_slots()?;
            for &slot in &slots {
                self.flush_slot(Slot(slot))?;
            }
            Ok(slots.len())
        })
    }

    fn apply(&mut self, action: &FwAction) -> Result<(), Error> {
        during(Op::of(action), Some(action.slot()), || {
            self.check_slot(action.slot())?;
            match *action {
                // Loading replaces the anchor's whole ruleset, so re-opening a slot replaces it.
                FwAction::Open { slot, spec, .. } => self.load(slot, &spec),
                // A re-arm of a hole flushed on use (the monitor takes it as an open): the
                // rules go in again.
                FwAction::Refresh { slot, spec, .. } if !self.loaded.contains(&slot.0) => {
                    self.load(slot, &spec)
                }
                // The rules have no lifetime of their own; the Close at the new deadline
                // removes them.
                FwAction::Refresh { .. } => Ok(()),
                FwAction::Close { slot, .. } => self.flush_slot(slot),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::exec::fake::TempDir;
    use super::*;
    use crate::firewall::test_holes::{v4, v6};
    use std::time::Duration;

    // --- golden rule text and argv -----------------------------------------------------

    #[test]
    fn rules_v6_golden() {
        assert_eq!(
            hole_rules(&v6(), None),
            "pass in quick inet6 proto tcp from 2001:db8::10 to 2001:db8::21 port 50123 flags S/SA keep state (max 1)\n\
             pass out quick inet6 proto tcp from 2001:db8::10 to 2001:db8::21 port 50123 flags S/SA keep state (max 1)\n"
        );
    }

    #[test]
    fn rules_v4_golden() {
        assert_eq!(
            hole_rules(&v4(), None),
            "pass in quick inet proto tcp from 192.0.2.21 to 192.0.2.10 port 40000 flags S/SA keep state (max 1)\n\
             pass out quick inet proto tcp from 192.0.2.21 to 192.0.2.10 port 40000 flags S/SA keep state (max 1)\n"
        );
    }

    #[test]
    fn rules_with_altq_queue_golden() {
        let q = Queue::parse("ftp_bulk").unwrap();
        assert_eq!(
            hole_rules(&v6(), Some(&q)),
            "pass in quick inet6 proto tcp from 2001:db8::10 to 2001:db8::21 port 50123 flags S/SA keep state (max 1) queue ftp_bulk\n\
             pass out quick inet6 proto tcp from 2001:db8::10 to 2001:db8::21 port 50123 flags S/SA keep state (max 1) queue ftp_bulk\n"
        );
    }

    #[test]
    fn rules_with_dummynet_queue_golden() {
        let q = Queue::parse("5").unwrap();
        assert_eq!(
            hole_rules(&v4(), Some(&q)),
            "pass in quick inet proto tcp from 192.0.2.21 to 192.0.2.10 port 40000 flags S/SA keep state (max 1) dnqueue 5\n\
             pass out quick inet proto tcp from 192.0.2.21 to 192.0.2.10 port 40000 flags S/SA keep state (max 1) dnqueue 5\n"
        );
    }

    #[test]
    fn argv_golden() {
        let j = |v: Vec<String>| v.join(" ");
        assert_eq!(
            j(load_args("ftp6proxy", Slot(64003))),
            "-a ftp6proxy/64003 -f -"
        );
        assert_eq!(
            j(flush_args("ftp6proxy", Slot(64003))),
            "-a ftp6proxy/64003 -F rules"
        );
        assert_eq!(j(list_anchors_args("ftp6proxy")), "-a ftp6proxy -s Anchors");
        assert_eq!(j(load_args("ftp-v6", Slot(1))), "-a ftp-v6/1 -f -");
        assert_eq!(j(info_args()), "-s info");
        assert_eq!(j(show_all_args()), "-a * -v -s rules");
        assert_eq!(j(main_rules_args()), "-s rules");
        assert_eq!(hook_line("ftp6proxy"), "anchor \"ftp6proxy/*\"");
    }

    #[test]
    fn queue_values() {
        assert_eq!(Queue::parse("5").unwrap(), Queue::Dummynet(5));
        assert_eq!(Queue::parse("65535").unwrap(), Queue::Dummynet(65535));
        assert_eq!(Queue::parse("ftp").unwrap(), Queue::Altq("ftp".into()));
        assert_eq!(
            Queue::parse("_q.1-a").unwrap(),
            Queue::Altq("_q.1-a".into())
        );
        for bad in [
            "",
            "0",
            "65536",
            "5a",
            "-5",
            "ftp bulk",
            "ftp\"",
            "q)",
            "q\nblock",
            "é",
            &"q".repeat(64),
        ] {
            assert!(Queue::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn anchor_and_range_are_validated() {
        let with = |anchor: &str| {
            let mut c = PfConfig::new(64000, 100);
            c.anchor = anchor.to_owned();
            Pf::new(c)
        };
        assert!(with("ftp6proxy").is_ok());
        assert!(with("ftp-proxy6.jail1").is_ok());
        for bad in ["", "_pf", ".x", "a/b", "a b", "a\"", "ftp*"] {
            assert!(with(bad).is_err(), "{bad:?}");
        }
        assert!(Pf::new(PfConfig::new(65500, 36)).is_ok());
        assert!(Pf::new(PfConfig::new(65500, 37)).is_err());
        assert!(Pf::new(PfConfig::new(1, 0)).is_err());
    }

    // --- parsers -------------------------------------------------------------------------

    #[test]
    fn anchors_listing_splits_slots_from_other_names() {
        let out = "  ftp6proxy/64003\n  ftp6proxy/64010\n  ftp6proxy/manual\n  ftp6proxy/064001\n\n  64011\n";
        let (slots, others) = parse_anchors(out, "ftp6proxy");
        assert_eq!(slots, vec![64003, 64010, 64011]);
        assert_eq!(others, vec!["ftp6proxy/manual", "ftp6proxy/064001"]);
        assert_eq!(parse_anchors("", "ftp6proxy"), (vec![], vec![]));
        // Too large for a slot.
        assert_eq!(
            parse_anchors("  ftp6proxy/70000\n", "ftp6proxy").0,
            Vec::<u16>::new()
        );
    }

    /// `pfctl -s info` as printed by FreeBSD 14 (first lines).
    #[test]
    fn info_status() {
        let on = "Status: Enabled for 0 days 00:12:09           Debug: Urgent\n\nState Table                          Total             Rate\n";
        let off = "Status: Disabled for 0 days 00:00:03          Debug: Urgent\n";
        assert!(parse_enabled(on));
        assert!(!parse_enabled(off));
        assert!(!parse_enabled(""));
    }

    #[test]
    fn hook_detection() {
        let rules = "scrub in all fragment reassemble\nblock drop in all\nanchor \"ftp6proxy/*\" all\npass out all flags S/SA keep state\n";
        assert!(has_hook(rules, "ftp6proxy"));
        assert!(has_hook("anchor \"ftp6proxy/*\"\n", "ftp6proxy"));
        assert!(!has_hook(rules, "ftp"));
        assert!(!has_hook("anchor \"ftp6proxy/*x\" all\n", "ftp6proxy"));
        assert!(!has_hook("anchor \"ftp6proxy\" all\n", "ftp6proxy"));
        assert!(!has_hook("# anchor \"ftp6proxy/*\"\n", "ftp6proxy"));
    }

    /// `pfctl -a '*' -vsr` as sbin/pfctl/pfctl.c prints it (`pfctl_show_rules`,
    /// `pfctl_print_rule_counters`: `%-8llu`, `%-10llu`, `%-6ju` columns, no indent under
    /// -v, an extra counters block of no rule after a wildcard anchor's header): 64003 used
    /// (both rules made a state), 64004 only inbound (the SYN may still be on its way
    /// out), 64005 unused, 64006 used and already closed (no state now, one made by each
    /// rule), `manual` not ours, 64007 under another instance's anchor.
    const SHOW_ALL: &str = r#"block drop in all
  [ Evaluations: 120       Packets: 30        Bytes: 2400        States: 0     ]
  [ Inserted: uid 0 pid 812 State Creations: 0     ]
anchor "ftp6proxy/*" all {
  [ Evaluations: 95        Packets: 12        Bytes: 776         States: 0     ]
  [ Inserted: uid 0 pid 812 State Creations: 0     ]
  [ Evaluations: 0         Packets: 0         Bytes: 0           States: 0     ]
  [ Inserted: uid 0 pid 0 State Creations: 0     ]
anchor "64003" all {
pass in quick inet6 proto tcp from 2001:db8::10 to 2001:db8::21 port = 50123 flags S/SA keep state (max 1)
  [ Evaluations: 2         Packets: 3         Bytes: 240         States: 1     ]
  [ Inserted: uid 0 pid 4711 State Creations: 1     ]
pass out quick inet6 proto tcp from 2001:db8::10 to 2001:db8::21 port = 50123 flags S/SA keep state (max 1)
  [ Evaluations: 1         Packets: 3         Bytes: 240         States: 1     ]
  [ Inserted: uid 0 pid 4711 State Creations: 1     ]
}
anchor "64004" all {
pass in quick inet proto tcp from 192.0.2.21 to 192.0.2.10 port = 40000 flags S/SA keep state (max 1)
  [ Evaluations: 1         Packets: 1         Bytes: 60          States: 1     ]
  [ Inserted: uid 0 pid 4711 State Creations: 1     ]
pass out quick inet proto tcp from 192.0.2.21 to 192.0.2.10 port = 40000 flags S/SA keep state (max 1)
  [ Evaluations: 0         Packets: 0         Bytes: 0           States: 0     ]
  [ Inserted: uid 0 pid 4711 State Creations: 0     ]
}
anchor "64005" all {
pass in quick inet proto tcp from 192.0.2.21 to 192.0.2.10 port = 40001 flags S/SA keep state (max 1)
  [ Evaluations: 0         Packets: 0         Bytes: 0           States: 0     ]
  [ Inserted: uid 0 pid 4711 State Creations: 0     ]
pass out quick inet proto tcp from 192.0.2.21 to 192.0.2.10 port = 40001 flags S/SA keep state (max 1)
  [ Evaluations: 0         Packets: 0         Bytes: 0           States: 0     ]
  [ Inserted: uid 0 pid 4711 State Creations: 0     ]
}
anchor "64006" all {
pass in quick inet proto tcp from 192.0.2.21 to 192.0.2.10 port = 40002 flags S/SA keep state (max 1)
  [ Evaluations: 4         Packets: 9         Bytes: 1200        States: 0     ]
  [ Inserted: uid 0 pid 4711 State Creations: 1     ]
pass out quick inet proto tcp from 192.0.2.21 to 192.0.2.10 port = 40002 flags S/SA keep state (max 1)
  [ Evaluations: 2         Packets: 9         Bytes: 1200        States: 0     ]
  [ Inserted: uid 0 pid 4711 State Creations: 1     ]
}
anchor "manual" all {
pass in quick inet proto tcp from any to any port = 40003 flags S/SA keep state
  [ Evaluations: 0         Packets: 5         Bytes: 300         States: 1     ]
  [ Inserted: uid 0 pid 99 State Creations: 1     ]
}
}
anchor "other/*" all {
  [ Evaluations: 0         Packets: 0         Bytes: 0           States: 0     ]
  [ Inserted: uid 0 pid 812 State Creations: 0     ]
  [ Evaluations: 0         Packets: 0         Bytes: 0           States: 0     ]
  [ Inserted: uid 0 pid 0 State Creations: 0     ]
anchor "64007" all {
pass in quick inet proto tcp from 192.0.2.21 to 192.0.2.10 port = 40004 flags S/SA keep state (max 1)
  [ Evaluations: 1         Packets: 1         Bytes: 60          States: 1     ]
  [ Inserted: uid 0 pid 77 State Creations: 1     ]
pass out quick inet proto tcp from 192.0.2.21 to 192.0.2.10 port = 40004 flags S/SA keep state (max 1)
  [ Evaluations: 1         Packets: 1         Bytes: 60          States: 1     ]
  [ Inserted: uid 0 pid 77 State Creations: 1     ]
}
}
pass out all flags S/SA keep state
  [ Evaluations: 300       Packets: 900       Bytes: 81234       States: 4     ]
  [ Inserted: uid 0 pid 812 State Creations: 57    ]
"#;

    #[test]
    fn hole_states_per_slot_and_direction() {
        let states = parse_hole_states(SHOW_ALL, "ftp6proxy");
        let got: Vec<(u16, u64, u64)> = states
            .iter()
            .map(|(slot, s)| (*slot, s.inbound, s.outbound))
            .collect();
        assert_eq!(
            got,
            vec![(64003, 1, 1), (64004, 1, 0), (64005, 0, 0), (64006, 1, 1)]
        );
        let used: Vec<u16> = states
            .iter()
            .filter(|(_, s)| s.used())
            .map(|(slot, _)| *slot)
            .collect();
        assert_eq!(used, vec![64003, 64006], "64004 has its inbound state only");
        // The other instance's anchor, read with its name.
        assert_eq!(
            parse_hole_states(SHOW_ALL, "other")
                .keys()
                .collect::<Vec<_>>(),
            vec![&64007]
        );
        assert!(parse_hole_states("", "ftp6proxy").is_empty());
        assert!(parse_hole_states("No ALTQ support in kernel\n", "ftp6proxy").is_empty());
    }

    // --- exec against a fake pfctl ---------------------------------------------------------

    /// A fake `pfctl` logging argv to `pfctl.log` and stdin to `stdin.log`, answering
    /// `-s info`, `-s rules` and `-s Anchors` from files of those names and
    /// `-a * -v -s rules` from the file `all` (a failure when it is absent).
    fn fake(tag: &str) -> (TempDir, Pf) {
        let dir = TempDir::new(tag);
        let d = dir.path().display().to_string();
        dir.script(
            "pfctl",
            &format!(
                r#"echo "$*" >> '{d}/pfctl.log'
case "$*" in
*" -f -") cat >> '{d}/stdin.log'; if [ -f '{d}/refuse' ]; then echo "stdin:1: syntax error" >&2; exit 1; fi ;;
"-s info") cat '{d}/info' ;;
"-s rules") cat '{d}/rules' ;;
*" -s Anchors") if [ -f '{d}/Anchors' ]; then cat '{d}/Anchors'; else echo "Anchor '$2' not found." >&2; exit 1; fi ;;
*" -F rules") if [ -f '{d}/refuse_flush' ]; then echo "pfctl: DIOCXBEGIN: Operation not permitted" >&2; exit 1; fi; echo "rules cleared" >&2 ;;
"-a * -v -s rules") if [ -f '{d}/all' ]; then cat '{d}/all'; else echo "pfctl: /dev/pf: Permission denied" >&2; exit 1; fi ;;
esac"#
            ),
        );
        let mut config = PfConfig::new(64000, 100);
        config.pfctl = dir.path().join("pfctl");
        (dir, Pf::new(config).unwrap())
    }

    fn write(dir: &TempDir, name: &str, text: &str) {
        std::fs::write(dir.path().join(name), text).unwrap();
    }

    #[test]
    fn fake_pfctl_open_refresh_close() {
        let (dir, mut pf) = fake("pf-open");
        let open = FwAction::Open {
            slot: Slot(64003),
            spec: v6(),
            ttl: Duration::from_secs(2),
        };
        pf.apply(&open).unwrap();
        pf.apply(&FwAction::Refresh {
            slot: Slot(64003),
            spec: v6(),
            ttl: Duration::from_secs(2),
        })
        .unwrap();
        pf.apply(&FwAction::Close {
            slot: Slot(64003),
            spec: v6(),
        })
        .unwrap();
        assert_eq!(
            dir.lines("pfctl.log"),
            vec!["-a ftp6proxy/64003 -f -", "-a ftp6proxy/64003 -F rules"]
        );
        assert_eq!(
            dir.lines("stdin.log").join("\n") + "\n",
            hole_rules(&v6(), None)
        );
    }

    #[test]
    fn fake_pfctl_refusal_is_reported() {
        let (dir, mut pf) = fake("pf-refuse");
        write(&dir, "refuse", "");
        let err = pf
            .apply(&FwAction::Open {
                slot: Slot(64000),
                spec: v4(),
                ttl: Duration::from_secs(2),
            })
            .unwrap_err();
        assert!(err.to_string().contains("syntax error"), "{err}");
    }

    #[test]
    fn fake_pfctl_flush_touches_only_our_slots() {
        let (dir, mut pf) = fake("pf-flush");
        write(
            &dir,
            "Anchors",
            "  ftp6proxy/64003\n  ftp6proxy/manual\n  ftp6proxy/65000\n  ftp6proxy/64099\n",
        );
        assert_eq!(pf.flush_owned().unwrap(), 2);
        assert_eq!(
            dir.lines("pfctl.log"),
            vec![
                "-a ftp6proxy -s Anchors",
                "-a ftp6proxy/64003 -F rules",
                "-a ftp6proxy/64099 -F rules",
            ]
        );
    }

    #[test]
    fn fake_pfctl_flush_of_missing_anchor_is_empty() {
        let (dir, mut pf) = fake("pf-noanchor");
        assert_eq!(pf.flush_owned().unwrap(), 0);
        assert_eq!(dir.lines("pfctl.log"), vec!["-a ftp6proxy -s Anchors"]);
    }

    #[test]
    fn fake_pfctl_check() {
        let (dir, mut pf) = fake("pf-check");
        write(
            &dir,
            "info",
            "Status: Disabled for 0 days 00:00:03 Debug: Urgent\n",
        );
        let Err(Error {
            kind: ErrorKind::Setup(text),
            ..
        }) = pf.check()
        else {
            panic!("expected a setup error")
        };
        assert!(text.contains("pfctl -e"), "{text}");

        write(
            &dir,
            "info",
            "Status: Enabled for 0 days 00:00:03 Debug: Urgent\n",
        );
        write(&dir, "rules", "block drop in all\n");
        let Err(Error {
            kind: ErrorKind::Setup(text),
            ..
        }) = pf.check()
        else {
            panic!("expected a setup error")
        };
        assert!(text.contains("anchor \"ftp6proxy/*\""), "{text}");
        assert!(text.contains("/etc/pf.conf"), "{text}");

        write(
            &dir,
            "rules",
            "anchor \"ftp6proxy/*\" all\nblock drop in all\n",
        );
        pf.check().unwrap();
    }

    #[test]
    fn slot_outside_range_is_refused_without_exec() {
        let (dir, mut pf) = fake("pf-range");
        assert!(pf
            .apply(&FwAction::Close {
                slot: Slot(64100),
                spec: v4()
            })
            .is_err());
        assert!(dir.lines("pfctl.log").is_empty());
    }

    fn open_action(slot: u16, spec: HoleSpec) -> FwAction {
        FwAction::Open {
            slot: Slot(slot),
            spec,
            ttl: Duration::from_secs(2),
        }
    }

    #[test]
    fn fake_pfctl_used_holes_are_flushed_and_reported() {
        let (dir, mut pf) = fake("pf-used");
        assert!(pf.reports_use());
        for (slot, spec) in [(64003, v6()), (64004, v4()), (64005, v4()), (64006, v4())] {
            pf.apply(&open_action(slot, spec)).unwrap();
        }
        write(&dir, "all", SHOW_ALL);
        let holes: Vec<(Slot, HoleSpec)> = [(64003, v6()), (64004, v4()), (64005, v4())]
            .into_iter()
            .map(|(slot, spec)| (Slot(slot), spec))
            .collect();
        let before = dir.lines("pfctl.log").len();
        assert_eq!(pf.used(&holes).unwrap(), vec![Slot(64003)]);
        assert_eq!(
            dir.lines("pfctl.log")[before..],
            ["-a * -v -s rules", "-a ftp6proxy/64003 -F rules"],
            "64004 (inbound only) and 64005 (unused) are kept; 64006 was not asked about"
        );
        // A re-arm of the flushed hole loads it again; of a kept one, nothing runs.
        for slot in [64003, 64004] {
            pf.apply(&FwAction::Refresh {
                slot: Slot(slot),
                spec: if slot == 64003 { v6() } else { v4() },
                ttl: Duration::from_secs(2),
            })
            .unwrap();
        }
        assert_eq!(
            dir.lines("pfctl.log")[before + 2..],
            ["-a ftp6proxy/64003 -f -"]
        );
    }

    #[test]
    fn fake_pfctl_no_holes_runs_nothing() {
        let (dir, mut pf) = fake("pf-noholes");
        assert!(pf.used(&[]).unwrap().is_empty());
        assert!(dir.lines("pfctl.log").is_empty());
    }

    #[test]
    fn fake_pfctl_failures_are_errors() {
        let (dir, mut pf) = fake("pf-usedfail");
        let holes = [(Slot(64003), v6())];
        let err = pf.used(&holes).unwrap_err();
        assert!(err.to_string().contains("Permission denied"), "{err}");
        write(&dir, "all", SHOW_ALL);
        write(&dir, "refuse_flush", "");
        let err = pf.used(&holes).unwrap_err();
        assert!(err.to_string().contains("Operation not permitted"), "{err}");
    }
}
