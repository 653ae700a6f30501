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

use std::fmt;
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

/// What the daemon asked of the firewall: the [`Firewall`] method, and for
/// [`Firewall::apply`] the [`FwAction`]. Printed as the `op=` key of the monitor's log
/// lines ([`Op::name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Building a backend: the command line's values (`-b`/`-c`, `-q`, `--anchor`,
    /// `--nft-table`) are checked and (nft) the netlink socket is opened. No firewall call
    /// has happened yet.
    Configure,
    /// [`Firewall::check`].
    Check,
    /// [`Firewall::check_ruleset`].
    CheckRuleset,
    /// [`Firewall::flush_owned`].
    Flush,
    /// [`Firewall::take_over`].
    TakeOver,
    /// [`Firewall::apply`] of [`FwAction::Open`].
    Open,
    /// [`Firewall::apply`] of [`FwAction::Refresh`].
    Refresh,
    /// [`Firewall::apply`] of [`FwAction::Close`].
    Close,
    /// [`Firewall::used`].
    Used,
}

impl Op {
    /// The operation that applies `action`.
    pub fn of(action: &FwAction) -> Op {
        match action {
            FwAction::Open { .. } => Op::Open,
            FwAction::Refresh { .. } => Op::Refresh,
            FwAction::Close { .. } => Op::Close,
        }
    }

    /// One lower-case word, for `op=` in log lines and for messages.
    pub fn name(self) -> &'static str {
        match self {
            Op::Configure => "configure",
            Op::Check => "check",
            Op::CheckRuleset => "check-ruleset",
            Op::Flush => "flush",
            Op::TakeOver => "take-over",
            Op::Open => "open",
            Op::Refresh => "refresh",
            Op::Close => "close",
            Op::Used => "used",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a firewall operation failed: the operation, the slot it was about (when there is
/// one), and what went wrong (globset's `Error { glob, kind }`).
///
/// `Display` gives one line, `firewall OP[ slot N]: MESSAGE` (a [`Op::Configure`] error
/// gives the message alone: it names the option it is about). For [`ErrorKind::Io`] the
/// system error is the [`source`](std::error::Error::source), so a chain printer
/// (anyhow's `{:#}`) shows it once; the alternate form `{:#}` of this type appends it
/// too, for a log line printed on its own.
#[derive(Debug)]
pub struct Error {
    /// What was asked of the firewall.
    pub op: Op,
    /// The hole's slot, for [`Op::Open`], [`Op::Refresh`] and [`Op::Close`].
    pub slot: Option<Slot>,
    /// What went wrong.
    pub kind: ErrorKind,
}

/// What went wrong in a firewall [`Error`].
#[derive(Debug)]
pub enum ErrorKind {
    /// Occurs when the firewall is not set up the way the daemon needs (a missing set, a
    /// sysctl with the wrong value, a foreign rule in our range), or a command-line value
    /// is unusable. The text says how to fix it.
    Setup(String),
    /// Occurs when the kernel or the firewall tool refused a change or a query.
    Refused {
        /// What was refused, as the admin would type it: the tool's command line, e.g.
        /// `/sbin/ipfw -q add 64003 allow tcp ...`, or the nft operation, e.g.
        /// `add element inet filter ftp6proxy6 { 2001:db8::10 . 2001:db8::21 . 50123 }`.
        what: String,
        /// The kernel's or tool's answer.
        detail: String,
    },
    /// Occurs when talking to the kernel or running the tool failed.
    Io {
        /// What was being done, e.g. ``start `/sbin/ipfw -S list 64000-64099` ``.
        context: String,
        /// The system error.
        source: std::io::Error,
    },
}

impl ErrorKind {
    /// One lower-case word, for `kind=` in log lines.
    pub fn name(&self) -> &'static str {
        match self {
            ErrorKind::Setup(_) => "setup",
            ErrorKind::Refused { .. } => "refused",
            ErrorKind::Io { .. } => "io",
        }
    }
}

/// The message alone; `{:#}` appends the system error of [`ErrorKind::Io`].
impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Setup(text) => f.write_str(text),
            ErrorKind::Refused { what, detail } => write!(f, "{what}: {detail}"),
            ErrorKind::Io { context, source } if f.alternate() => {
                write!(f, "{context}: {source}")
            }
            ErrorKind::Io { context, .. } => f.write_str(context),
        }
    }
}

impl Error {
    /// `kind`, met while doing `op` (on `slot`).
    pub fn new(op: Op, slot: Option<Slot>, kind: ErrorKind) -> Error {
        Error { op, slot, kind }
    }

    /// A command-line value that cannot work: [`Op::Configure`], [`ErrorKind::Setup`].
    pub(crate) fn configure(text: String) -> Error {
        Error::new(Op::Configure, None, ErrorKind::Setup(text))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.op != Op::Configure {
            write!(f, "firewall {}", self.op)?;
            if let Some(slot) = self.slot {
                write!(f, " slot {slot}")?;
            }
            f.write_str(": ")?;
        }
        if f.alternate() {
            write!(f, "{:#}", self.kind)
        } else {
            write!(f, "{}", self.kind)
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Io { source, .. } => Some(source),
            ErrorKind::Setup(_) | ErrorKind::Refused { .. } => None,
        }
    }
}

/// Runs `body`, the work of `op` (on `slot`), and gives its failure the op and slot: the
/// one place a backend's [`Firewall`] method turns the [`ErrorKind`] of its helpers into
/// an [`Error`].
fn during<T>(
    op: Op,
    slot: Option<Slot>,
    body: impl FnOnce() -> Result<T, ErrorKind>,
) -> Result<T, Error> {
    body().map_err(|kind| Error::new(op, slot, kind))
}

/// A firewall backend. Calls are synchronous; the daemon runs them in the privileged helper
/// so they never stall the packet loop. Each method's [`Error`] names its [`Op`], and
/// [`Firewall::apply`]'s the slot.
pub trait Firewall {
    /// Checks that the firewall is ready for us (sets, sysctls, permissions).
    ///
    /// # Errors
    /// [`ErrorKind::Setup`] with instructions when it is not.
    fn check(&mut self) -> Result<(), Error>;

    /// `--check` (and a warning at start): does the kernel's ruleset feed the intercept
    /// with the FTP control packets of both directions, and does a rule let new connections
    /// through the holes? Returns one line per piece found (and notes that do not fail).
    /// A backend that cannot read its ruleset says so in its one line.
    ///
    /// # Errors
    /// [`ErrorKind::Setup`] naming each missing piece.
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
        // The flush is this take-over's work: its failure is one of the take-over.
        let removed = self.flush_owned().map_err(|e| Error {
            op: Op::TakeOver,
            ..e
        })?;
        Ok(TakeOver { kept: 0, removed })
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

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    fn refused() -> ErrorKind {
        ErrorKind::Refused {
            what: "add element inet filter ftp6proxy6 { 2001:db8::10 . 2001:db8::21 . 50123 } \
                   timeout 2000ms"
                .to_owned(),
            detail: "Operation not permitted (os error 1) (needs CAP_NET_ADMIN)".to_owned(),
        }
    }

    fn io() -> ErrorKind {
        ErrorKind::Io {
            context: "start `/sbin/ipfw -S list 64000-64099`".to_owned(),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        }
    }

    #[test]
    fn refused_names_op_slot_and_what_was_refused() {
        let e = Error::new(Op::Open, Some(Slot(64003)), refused());
        assert_eq!(
            e.to_string(),
            "firewall open slot 64003: add element inet filter ftp6proxy6 { 2001:db8::10 . \
             2001:db8::21 . 50123 } timeout 2000ms: Operation not permitted (os error 1) \
             (needs CAP_NET_ADMIN)"
        );
        assert_eq!(format!("{e:#}"), e.to_string(), "no source to append");
        assert!(std::error::Error::source(&e).is_none());
    }

    #[test]
    fn refused_without_slot() {
        let e = Error::new(Op::Flush, None, refused());
        assert!(
            e.to_string()
                .starts_with("firewall flush: add element inet"),
            "{e}"
        );
    }

    /// The system error is the source: `{}` leaves it to a chain printer (anyhow), `{:#}`
    /// appends it for a line printed on its own; neither prints it twice.
    #[test]
    fn io_error_is_the_source_and_printed_once() {
        let e = Error::new(Op::Close, Some(Slot(64099)), io());
        assert_eq!(
            e.to_string(),
            "firewall close slot 64099: start `/sbin/ipfw -S list 64000-64099`"
        );
        assert_eq!(
            format!("{e:#}"),
            "firewall close slot 64099: start `/sbin/ipfw -S list 64000-64099`: \
             No such file or directory (os error 2)"
        );
        let source = std::error::Error::source(&e).expect("the io error");
        assert_eq!(source.to_string(), "No such file or directory (os error 2)");
        assert_eq!(
            format!(
                "{:#}",
                anyhow::Error::from(Error::new(Op::Flush, None, io()))
            ),
            "firewall flush: start `/sbin/ipfw -S list 64000-64099`: \
             No such file or directory (os error 2)"
        );
    }

    /// Setup texts are instructions: printed unchanged after the operation.
    #[test]
    fn setup_keeps_its_text_after_the_op() {
        let text = "ipfw is not loaded: run `kldload ipfw` (or set firewall_enable=\"YES\" in \
                    /etc/rc.conf)";
        let e = Error::new(Op::Check, None, ErrorKind::Setup(text.to_owned()));
        assert_eq!(e.to_string(), format!("firewall check: {text}"));
        assert_eq!(format!("{e:#}"), e.to_string());
        let with_slot = Error::new(Op::Open, Some(Slot(7)), ErrorKind::Setup(text.to_owned()));
        assert_eq!(
            with_slot.to_string(),
            format!("firewall open slot 7: {text}")
        );
    }

    /// A command-line value's error names its option itself and comes before any firewall
    /// call: no prefix.
    #[test]
    fn configure_error_is_the_text_alone() {
        let e = Error::configure("set prefix \"x\" is too long".to_owned());
        assert_eq!(e.to_string(), "set prefix \"x\" is too long");
        assert_eq!(
            (e.op, e.slot, e.kind.name()),
            (Op::Configure, None, "setup")
        );
    }

    #[test]
    fn ops_follow_the_actions() {
        use test_holes::{open, v6};
        assert_eq!(Op::of(&open(64003, v6())), Op::Open);
        let refresh = FwAction::Refresh {
            slot: Slot(1),
            spec: v6(),
            ttl: Duration::from_secs(2),
        };
        assert_eq!(Op::of(&refresh), Op::Refresh);
        let close = FwAction::Close {
            slot: Slot(1),
            spec: v6(),
        };
        assert_eq!(Op::of(&close), Op::Close);
        assert_eq!(Op::CheckRuleset.to_string(), "check-ruleset");
        assert_eq!(Op::TakeOver.name(), "take-over");
    }

    /// A backend that cannot flush.
    struct Stuck;

    impl Firewall for Stuck {
        fn check(&mut self) -> Result<(), Error> {
            Ok(())
        }
        fn flush_owned(&mut self) -> Result<usize, Error> {
            during(Op::Flush, None, || Err(io()))
        }
        fn apply(&mut self, action: &FwAction) -> Result<(), Error> {
            during(Op::of(action), Some(action.slot()), || Err(refused()))
        }
    }

    /// The default take-over is a flush; its failure is the take-over's.
    #[test]
    fn default_take_over_failure_names_take_over() {
        let e = Stuck.take_over(Duration::from_secs(2)).unwrap_err();
        assert_eq!((e.op, e.kind.name()), (Op::TakeOver, "io"));
        let e = Stuck
            .apply(&test_holes::open(64003, test_holes::v6()))
            .unwrap_err();
        assert_eq!((e.op, e.slot), (Op::Open, Some(Slot(64003))));
    }
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
