//! Firewall backends: turn one [`FwAction`] into a change of the kernel's ruleset.
//!
//! Owns all firewall syntax (ipfw rule text, pf rule text, nftables set elements). Decides
//! nothing: every action arrives already checked by the core's `policy` and `holes`, and
//! (in the privileged helper) checked again by `privsep`. Each backend touches only what it
//! owns — rules numbered in its range and tagged with its comment, anchors under its anchor,
//! elements of its sets (DESIGN.md invariant 6).
//!
//! Rule builders are pure functions without a `cfg` gate so they are golden-tested on every
//! platform; only the step that talks to the kernel or execs a tool is platform-gated.

use std::time::Duration;

use ftp6proxy_core::{FwAction, HoleSpec, Slot};

pub mod exec;
pub mod ipfw;
#[cfg(target_os = "linux")]
pub mod nft;
#[cfg(target_os = "linux")]
pub mod nft_msg;
#[cfg(target_os = "linux")]
pub mod nft_ruleset;
pub mod pf;

/// Why a firewall operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Occurs when the firewall is not set up the way the daemon needs (a missing set, a
    /// sysctl with the wrong value, a foreign rule in our range). The text says how to fix it.
    #[error("{0}")]
    Setup(String),
    /// Occurs when the kernel or the firewall tool refused a change.
    #[error("{what}: {detail}")]
    Refused {
        /// The operation, e.g. `add element 2001:db8::10 . 2001:db8::21 . 50123`.
        what: String,
        /// The kernel's or tool's answer.
        detail: String,
    },
    /// Occurs when talking to the kernel or running the tool failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
}

/// A firewall backend. Calls are synchronous; the daemon runs them in the privileged helper
/// so they never stall the packet loop.
pub trait Firewall {
    /// Checks that the firewall is ready for us (sets, sysctls, permissions).
    ///
    /// # Errors
    /// [`Error::Setup`] with instructions when it is not.
    fn check(&mut self) -> Result<(), Error>;

    /// `--check` (and a warning at start): does the kernel's ruleset feed the intercept
    /// with the FTP control packets of both directions, and does a rule let new connections
    /// through the holes? Returns one line per piece found (and notes that do not fail).
    /// A backend that cannot read its ruleset says so in its one line.
    ///
    /// # Errors
    /// [`Error::Setup`] naming each missing piece.
    fn check_ruleset(&mut self, feed: &Feed) -> Result<Vec<String>, Error> {
        let _ = feed;
        Ok(vec![
            "the ruleset's queue/divert and hole rules are not read by this backend's check"
                .to_owned(),
        ])
    }

    /// Removes every hole a previous run may have left; returns how many were removed.
    ///
    /// # Errors
    /// When the firewall refuses, or when something we do not own sits in our range.
    fn flush_owned(&mut self) -> Result<usize, Error>;

    /// Applies one action. Opening a slot that already holds a hole replaces it.
    ///
    /// # Errors
    /// When the firewall refuses the change.
    fn apply(&mut self, action: &FwAction) -> Result<(), Error>;

    /// Whether a hole closes by itself at its deadline (nft element timeouts). Then a
    /// stopping instance leaves live holes to expire instead of cutting them short; ipfw
    /// rules and pf anchors never expire, so the monitor closes each at its deadline.
    fn holes_expire(&self) -> bool {
        false
    }

    /// Whether [`Firewall::used`] can tell which holes their data connections used up
    /// (nft: the sample's hole rule deletes its element on first match; ipfw: the hole
    /// rule's packet counter, when dynamic states outlive their rule; pf: the state
    /// counters of the hole's anchor).
    fn reports_use(&self) -> bool {
        false
    }

    /// How often the monitor calls [`Firewall::used`] while holes are open: every `.0`,
    /// and every `.1` while three quarters of the slots are taken. The default suits a
    /// backend that asks the kernel directly (nft: one netlink dump); one that runs a tool
    /// for it asks less often.
    fn use_check_periods(&self) -> (Duration, Duration) {
        (Duration::from_millis(100), Duration::from_millis(5))
    }

    /// Which of `holes` (each open, its deadline still ahead) their data connections used
    /// before their deadline, so their slots can be freed now. The backend removes what is
    /// left of each hole it returns (nft: nothing, the kernel's rule deleted the element on
    /// first match; ipfw: the hole's rule; pf: the rules of the hole's anchor), so that once
    /// `used` returns a slot nothing of that hole can admit another connection, while the
    /// connection that used it goes on (its state outlives the rule). A backend that
    /// cannot tell returns none, and slots free at deadlines.
    ///
    /// # Errors
    /// When the firewall cannot be read, or a used hole cannot be removed (its slot is
    /// then not reported, and frees at its deadline).
    fn used(&mut self, holes: &[(Slot, HoleSpec)]) -> Result<Vec<Slot>, Error> {
        let _ = holes;
        Ok(Vec::new())
    }

    /// At start: deals with what a previous instance left. Holes that expire by themselves
    /// are adopted if they have at most `max_left` (`-t`) to live, the rest removed; a
    /// backend whose holes never expire removes everything of ours ([`flush_owned`]): a
    /// previous instance that stopped gracefully removed its holes at their deadlines, so
    /// whatever is left was left by a crash.
    ///
    /// [`flush_owned`]: Firewall::flush_owned
    ///
    /// # Errors
    /// As [`Firewall::flush_owned`].
    fn take_over(&mut self, max_left: Duration) -> Result<TakeOver, Error> {
        let _ = max_left;
        Ok(TakeOver {
            kept: 0,
            removed: self.flush_owned()?,
        })
    }
}

/// Whether the ruleset must hand over the packets or copies of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedKind {
    /// Inline: the packets themselves (NFQUEUE; divert).
    Packets,
    /// Copy mode: copies (NFLOG; ipfw tee/ngtee).
    Copies,
}

/// What the intercept needs the ruleset to send it, for [`Firewall::check_ruleset`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feed {
    /// The NFQUEUE number, NFLOG group, divert port or ngtee cookie (`-p`).
    pub queue: u16,
    /// Packets or copies.
    pub kind: FeedKind,
    /// The FTP control ports (`--ftp-ports`).
    pub ftp_ports: Vec<u16>,
}

/// What [`Firewall::take_over`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TakeOver {
    /// Live holes left to expire by themselves.
    pub kept: usize,
    /// Holes removed.
    pub removed: usize,
}

/// Holes shared by the backends' golden tests and the privsep tests.
#[cfg(test)]
pub(crate) mod test_holes {
    use std::time::Duration;

    use ftp6proxy_core::{FwAction, HoleSpec, Mode, Slot};

    /// Opening `spec` in `slot` for 2 s.
    pub fn open(slot: u16, spec: HoleSpec) -> FwAction {
        FwAction::Open {
            slot: Slot(slot),
            spec,
            ttl: Duration::from_secs(2),
        }
    }

    /// A passive IPv6 hole: client 2001:db8::10 to server 2001:db8::21 port 50123.
    pub fn v6() -> HoleSpec {
        HoleSpec {
            mode: Mode::Passive,
            src: "2001:db8::10".parse().expect("literal"),
            dst: "2001:db8::21".parse().expect("literal"),
            dport: 50123,
        }
    }

    /// An active IPv4 hole: server 192.0.2.21 to client 192.0.2.10 port 40000.
    pub fn v4() -> HoleSpec {
        HoleSpec {
            mode: Mode::Active,
            src: "192.0.2.21".parse().expect("literal"),
            dst: "192.0.2.10".parse().expect("literal"),
            dport: 40000,
        }
    }
}
