//! Policy: may this announcement open a hole, and exactly which one?
//!
//! Owns DESIGN.md invariants 3 and 4 as pure decisions: a hole only ever between the two
//! endpoints of the control connection; the announced address must be the sender's own (FTP
//! bounce, RFC 2577); no hole to a port below 1024; no mixing of families; a 227/228/229
//! counts only as the final reply to the passive request this client just sent. Takes facts
//! from `tracker` and parsed values from `ftp`; touches no state and knows no firewall.
//! A denial is a decision, not an error: the packet still passes, and the engine logs it.

use std::fmt;
use std::net::IpAddr;

use crate::holes::{HoleSpec, Mode};
use crate::Family;

/// Lowest port a hole may be opened to. Ports below are privileged services (RFC 2577 §3,
/// and every peer in research/ftp-alg-peers.md except Linux refuses them).
pub const MIN_DATA_PORT: u16 = 1024;

/// What announced the data connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `PORT` (RFC 959).
    Port,
    /// `EPRT` (RFC 2428).
    Eprt,
    /// `LPRT` (RFC 1639).
    Lprt,
    /// `227` reply to `PASV`.
    Reply227,
    /// `228` reply to `LPSV`.
    Reply228,
    /// `229` reply to `EPSV` (carries no address).
    Reply229,
}

impl Source {
    /// Who sends it.
    pub fn mode(self) -> Mode {
        match self {
            Source::Port | Source::Eprt | Source::Lprt => Mode::Active,
            Source::Reply227 | Source::Reply228 | Source::Reply229 => Mode::Passive,
        }
    }

    /// The verb or code, for log lines.
    pub fn name(self) -> &'static str {
        match self {
            Source::Port => "PORT",
            Source::Eprt => "EPRT",
            Source::Lprt => "LPRT",
            Source::Reply227 => "227",
            Source::Reply228 => "228",
            Source::Reply229 => "229",
        }
    }
}

/// A data connection announced on a control connection, as parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announcement {
    /// What announced it.
    pub source: Source,
    /// The announced address; `None` for 229, which has none (RFC 2428 §3).
    pub addr: Option<IpAddr>,
    /// The announced port.
    pub port: u16,
}

/// Why an announcement opens no hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deny {
    /// The announced address is not the sender's: an FTP bounce attempt (RFC 2577), or a
    /// server behind NAT announcing its private address.
    Bounce {
        /// The address in the line.
        announced: IpAddr,
        /// The sender's address on the control connection.
        sender: IpAddr,
    },
    /// The announced address has the other family than the control connection.
    FamilyMismatch {
        /// The address in the line.
        announced: IpAddr,
        /// The sender's address on the control connection.
        sender: IpAddr,
    },
    /// The announced port is below [`MIN_DATA_PORT`].
    LowPort {
        /// The port in the line.
        port: u16,
    },
    /// A passive reply that answers no PASV/EPSV/LPSV of this client (CERT VU#328867).
    Unsolicited {
        /// The reply code.
        code: u16,
    },
    /// A passive-reply-looking line inside a multi-line reply (`NNN-` ... `NNN `).
    InsideMultiline {
        /// The code the line carried.
        code: u16,
    },
    /// A reply-looking line sent by the client.
    ReplyFromClient {
        /// The code the line carried.
        code: u16,
    },
    /// The announcement came in a line that was too long to be read whole.
    Truncated,
    /// Every hole slot is in use.
    TableFull,
    /// An announcement in the tail of a line whose start the engine never saw (after a
    /// gap, or joining mid-stream): it may be the middle of some other line.
    MidLine,
}

/// The kinds of [`Deny`], without their details: what the counters are indexed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DenyReason {
    /// [`Deny::Bounce`].
    Bounce,
    /// [`Deny::FamilyMismatch`].
    FamilyMismatch,
    /// [`Deny::LowPort`].
    LowPort,
    /// [`Deny::Unsolicited`].
    Unsolicited,
    /// [`Deny::InsideMultiline`].
    InsideMultiline,
    /// [`Deny::ReplyFromClient`].
    ReplyFromClient,
    /// [`Deny::Truncated`].
    Truncated,
    /// [`Deny::TableFull`].
    TableFull,
    /// [`Deny::MidLine`].
    MidLine,
}

impl DenyReason {
    /// Every reason, in counter order.
    pub const ALL: [DenyReason; 9] = [
        DenyReason::Bounce,
        DenyReason::FamilyMismatch,
        DenyReason::LowPort,
        DenyReason::Unsolicited,
        DenyReason::InsideMultiline,
        DenyReason::ReplyFromClient,
        DenyReason::Truncated,
        DenyReason::TableFull,
        DenyReason::MidLine,
    ];

    /// A short stable name, used in log lines, counters and the log limiter.
    pub fn name(self) -> &'static str {
        match self {
            DenyReason::Bounce => "bounce",
            DenyReason::FamilyMismatch => "family_mismatch",
            DenyReason::LowPort => "low_port",
            DenyReason::Unsolicited => "unsolicited",
            DenyReason::InsideMultiline => "inside_multiline",
            DenyReason::ReplyFromClient => "reply_from_client",
            DenyReason::Truncated => "truncated",
            DenyReason::TableFull => "table_full",
            DenyReason::MidLine => "mid_line",
        }
    }
}

impl Deny {
    /// Its kind.
    pub fn kind(&self) -> DenyReason {
        match self {
            Deny::Bounce { .. } => DenyReason::Bounce,
            Deny::FamilyMismatch { .. } => DenyReason::FamilyMismatch,
            Deny::LowPort { .. } => DenyReason::LowPort,
            Deny::Unsolicited { .. } => DenyReason::Unsolicited,
            Deny::InsideMultiline { .. } => DenyReason::InsideMultiline,
            Deny::ReplyFromClient { .. } => DenyReason::ReplyFromClient,
            Deny::Truncated => DenyReason::Truncated,
            Deny::TableFull => DenyReason::TableFull,
            Deny::MidLine => DenyReason::MidLine,
        }
    }

    /// Its kind's name ([`DenyReason::name`]).
    pub fn reason(&self) -> &'static str {
        self.kind().name()
    }
}

impl fmt::Display for Deny {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reason={}", self.reason())?;
        match self {
            Deny::Bounce { announced, sender } | Deny::FamilyMismatch { announced, sender } => {
                write!(f, " announced={announced} sender={sender}")
            }
            Deny::LowPort { port } => write!(f, " port={port}"),
            Deny::Unsolicited { code }
            | Deny::InsideMultiline { code }
            | Deny::ReplyFromClient { code } => write!(f, " code={code}"),
            Deny::TableFull => write!(
                f,
                " (every slot holds a live hole: give -c at least the new data connections \
                 per second times -t, or let an nftables hole rule use holes up with delete)"
            ),
            Deny::Truncated | Deny::MidLine => Ok(()),
        }
    }
}

/// The passive request a client sent and is waiting on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassiveRequest {
    /// `PASV`, answered by 227.
    Pasv,
    /// `LPSV`, answered by 228.
    Lpsv,
    /// `EPSV`, answered by 229.
    Epsv,
}

impl PassiveRequest {
    /// The reply code that answers this request.
    pub fn reply_code(self) -> u16 {
        match self {
            PassiveRequest::Pasv => 227,
            PassiveRequest::Lpsv => 228,
            PassiveRequest::Epsv => 229,
        }
    }
}

/// The reply codes that announce a passive data connection.
pub fn is_passive_reply_code(code: u16) -> bool {
    matches!(code, 227..=229)
}

/// Invariant 4: may a server line with `code` be read as a passive announcement?
///
/// `answered` is the client command this final reply answers (`None` if the client has no
/// command outstanding, or the one outstanding is not a passive request); `in_multiline`
/// says the line sits inside a multi-line reply.
///
/// # Errors
/// [`Deny::InsideMultiline`] or [`Deny::Unsolicited`].
pub fn check_reply_pairing(
    code: u16,
    in_multiline: bool,
    answered: Option<PassiveRequest>,
) -> Result<(), Deny> {
    if in_multiline {
        return Err(Deny::InsideMultiline { code });
    }
    match answered {
        Some(request) if request.reply_code() == code => Ok(()),
        _ => Err(Deny::Unsolicited { code }),
    }
}

/// Invariant 3: the hole `announcement` may open on the control connection between
/// `client` and `server`.
///
/// An unspecified announced address of either family (`EPRT |2|::|port|` as lftp sends,
/// `227 (0,0,0,0,p1,p2)` as vsftpd sends on IPv6) names no other host, so it stands for the
/// sender itself; 229 carries no address and means the server.
///
/// # Errors
/// [`Deny::FamilyMismatch`], [`Deny::Bounce`] or [`Deny::LowPort`].
pub fn check_announcement(
    announcement: &Announcement,
    client: IpAddr,
    server: IpAddr,
) -> Result<HoleSpec, Deny> {
    let mode = announcement.source.mode();
    let sender = match mode {
        Mode::Active => client,
        Mode::Passive => server,
    };
    let announced = match announcement.addr {
        None => sender,
        // vsftpd answers PASV on an IPv6 connection with 227 (0,0,0,0,p1,p2), and clients
        // then connect to the control connection's server address.
        Some(addr) if addr.is_unspecified() => sender,
        Some(addr) if Family::of(addr) != Family::of(sender) => {
            return Err(Deny::FamilyMismatch {
                announced: addr,
                sender,
            })
        }
        Some(addr) => addr,
    };
    if announced != sender {
        return Err(Deny::Bounce { announced, sender });
    }
    if announcement.port < MIN_DATA_PORT {
        return Err(Deny::LowPort {
            port: announcement.port,
        });
    }
    let (src, dst) = match mode {
        Mode::Active => (server, client),
        Mode::Passive => (client, server),
    };
    Ok(HoleSpec {
        mode,
        src,
        dst,
        dport: announcement.port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT6: &str = "2001:db8:1::10";
    const SERVER6: &str = "2001:db8:2::21";
    const CLIENT4: &str = "192.0.2.10";
    const SERVER4: &str = "198.51.100.21";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn check(source: Source, addr: Option<&str>, port: u16, v6: bool) -> Result<HoleSpec, Deny> {
        let (client, server) = if v6 {
            (ip(CLIENT6), ip(SERVER6))
        } else {
            (ip(CLIENT4), ip(SERVER4))
        };
        let announcement = Announcement {
            source,
            addr: addr.map(ip),
            port,
        };
        check_announcement(&announcement, client, server)
    }

    /// Invariant 3: active hole is server → client:port.
    #[test]
    fn active_hole_goes_from_server_to_client() {
        let spec = check(Source::Eprt, Some(CLIENT6), 50000, true).unwrap();
        assert_eq!(
            spec,
            HoleSpec {
                mode: Mode::Active,
                src: ip(SERVER6),
                dst: ip(CLIENT6),
                dport: 50000
            }
        );
    }

    /// Invariant 3: passive hole is client → server:port.
    #[test]
    fn passive_hole_goes_from_client_to_server() {
        let spec = check(Source::Reply227, Some(SERVER4), 50001, false).unwrap();
        assert_eq!(
            spec,
            HoleSpec {
                mode: Mode::Passive,
                src: ip(CLIENT4),
                dst: ip(SERVER4),
                dport: 50001
            }
        );
    }

    /// Invariant 3: EPSV uses the server's address.
    #[test]
    fn epsv_reply_uses_the_server_address() {
        let spec = check(Source::Reply229, None, 50002, true).unwrap();
        assert_eq!((spec.src, spec.dst), (ip(CLIENT6), ip(SERVER6)));
    }

    /// Invariant 3: bounce.
    #[test]
    fn port_with_foreign_address_is_denied() {
        assert_eq!(
            check(Source::Port, Some("203.0.113.99"), 50000, false),
            Err(Deny::Bounce {
                announced: ip("203.0.113.99"),
                sender: ip(CLIENT4)
            })
        );
    }

    #[test]
    fn passive_reply_with_foreign_address_is_denied() {
        assert!(matches!(
            check(Source::Reply228, Some("2001:db8:3::99"), 50000, true),
            Err(Deny::Bounce { .. })
        ));
    }

    /// Invariant 3: the client's address does not make a passive reply acceptable.
    #[test]
    fn passive_reply_naming_the_client_is_a_bounce() {
        assert!(matches!(
            check(Source::Reply227, Some(CLIENT4), 50000, false),
            Err(Deny::Bounce { .. })
        ));
    }

    /// Invariant 3: ports below 1024 get no hole.
    #[test]
    fn privileged_port_is_denied() {
        assert_eq!(
            check(Source::Eprt, Some(CLIENT6), 1023, true),
            Err(Deny::LowPort { port: 1023 })
        );
        assert!(check(Source::Eprt, Some(CLIENT6), 1024, true).is_ok());
        assert_eq!(
            check(Source::Reply229, None, 22, true),
            Err(Deny::LowPort { port: 22 })
        );
    }

    #[test]
    fn family_mismatch_is_denied() {
        assert!(matches!(
            check(Source::Eprt, Some(CLIENT4), 50000, true),
            Err(Deny::FamilyMismatch { .. })
        ));
        assert!(matches!(
            check(Source::Eprt, Some("::ffff:192.0.2.10"), 50000, false),
            Err(Deny::FamilyMismatch { .. })
        ));
    }

    #[test]
    fn unspecified_address_means_the_sender() {
        let spec = check(Source::Eprt, Some("::"), 50000, true).unwrap();
        assert_eq!(spec.dst, ip(CLIENT6));
        let spec = check(Source::Reply227, Some("0.0.0.0"), 50000, true).unwrap();
        assert_eq!((spec.src, spec.dst), (ip(CLIENT6), ip(SERVER6)));
    }

    /// Invariant 4.
    #[test]
    fn passive_reply_counts_only_as_the_answer_to_its_request() {
        assert_eq!(
            check_reply_pairing(229, false, Some(PassiveRequest::Epsv)),
            Ok(())
        );
        assert_eq!(
            check_reply_pairing(227, false, Some(PassiveRequest::Epsv)),
            Err(Deny::Unsolicited { code: 227 })
        );
        assert_eq!(
            check_reply_pairing(229, false, None),
            Err(Deny::Unsolicited { code: 229 })
        );
        assert_eq!(
            check_reply_pairing(227, true, Some(PassiveRequest::Pasv)),
            Err(Deny::InsideMultiline { code: 227 })
        );
    }

    #[test]
    fn reasons_are_listed_once() {
        let all = [
            Deny::Bounce {
                announced: ip(CLIENT4),
                sender: ip(CLIENT4),
            },
            Deny::FamilyMismatch {
                announced: ip(CLIENT4),
                sender: ip(CLIENT4),
            },
            Deny::LowPort { port: 1 },
            Deny::Unsolicited { code: 227 },
            Deny::InsideMultiline { code: 227 },
            Deny::ReplyFromClient { code: 227 },
            Deny::Truncated,
            Deny::TableFull,
            Deny::MidLine,
        ];
        for (deny, reason) in all.iter().zip(DenyReason::ALL) {
            assert_eq!(deny.kind(), reason);
            assert_eq!(
                reason as usize,
                DenyReason::ALL.iter().position(|r| *r == reason).unwrap()
            );
        }
        assert_eq!(all.len(), DenyReason::ALL.len());
    }
}
