//! FTP control-channel line parsers: one line in, one typed command or reply out.
//!
//! Owns the syntax of RFC 959 (PORT, PASV, 227, multi-line replies), RFC 2428 (EPRT, EPSV,
//! 229), RFC 1639 (LPRT, LPSV, 228) and the reply variants real servers send (RFC 1123
//! §4.1.2.6). Pure functions without state, I/O, logging or allocation. A parser only says
//! what a line *means*; whether that meaning may open a hole (bounce check, low ports, pairing
//! with a PASV, multi-line context) is decided in `tracker` and `policy`, so no parser ever
//! says no for security reasons. It must not touch sockets, the clock or the firewall.
//!
//! # Contract
//! - Lines are passed in without their terminating CR LF (the tracker strips `"\r\n"` or
//!   `"\n"`). They may hold any bytes a hostile peer chooses: NUL, non-ASCII, megabytes of
//!   digits. Every parser returns a value for every input; none panics, indexes a slice before
//!   checking its length, or overflows an integer (the proptests in `tests.rs` hold them to it).
//! - Addresses are returned exactly as announced, including the unspecified address (`::`,
//!   `0.0.0.0`, which lftp can send in EPRT) and IPv4-mapped IPv6 addresses. Port 0 is returned
//!   as is where the encoding can express it (two bytes in PORT/LPRT/227/228); a decimal port
//!   (EPRT, 229) of 0 is an error, because "0" is not a TCP port number (RFC 2428 §2).
//!   Low ports and foreign addresses are `policy`'s business.
//!
//! # Leniency, decided once for all parsers
//! - Command verbs are case-insensitive (RFC 959 §5.3). The verb is everything before the
//!   first space; the argument is the rest with ASCII whitespace trimmed at both ends.
//! - No whitespace inside an argument: `PORT 192, 0, 2, 1, 195, 80` is rejected. RFC 959 §5.3.2
//!   has none in `<host-port>`, no client we checked sends any, and Linux nf_conntrack_ftp does
//!   not accept it either. A rejected line only means "no hole" (the transfer fails closed).
//! - Numbers are ASCII decimal digits only (no sign, no spaces); leading zeros are fine. Any
//!   byte value above 255 is an error, in the address *and* the port bytes: we never reduce
//!   modulo 256 as DJB suggests for clients, because a server that sends `256` is broken or
//!   lying, and the hole must match what a correct client would connect to.
//! - Replies: 227 and 228 text is scanned from its first digit (RFC 1123 §4.1.2.6), so
//!   parentheses, `=` (DJB publicfile) and trailing text are all optional. 229 must contain
//!   `(` followed by three identical delimiters; the closing `)` is not checked.

mod command;
mod reply;
mod scan;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;

pub use command::parse_command;
pub use reply::{parse_227, parse_228, parse_229, parse_reply_line};

/// A client command, as far as ftp6proxy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `PORT h1,h2,h3,h4,p1,p2` (RFC 959 §4.1.2): active mode, IPv4.
    Port(SocketAddr),
    /// `EPRT <d>af<d>addr<d>port<d>` (RFC 2428 §2). The address may be unspecified
    /// (`::` or `0.0.0.0`), as lftp sends.
    Eprt(SocketAddr),
    /// `LPRT af,hal,h1..,pal,p1,p2` (RFC 1639).
    Lprt(SocketAddr),
    /// `PASV` (RFC 959). Any argument is ignored: PASV takes none, and the server decides.
    Pasv,
    /// `LPSV` (RFC 1639). Any argument is ignored, as for PASV.
    Lpsv,
    /// `EPSV`, `EPSV 1`, `EPSV 2` (RFC 2428 §3).
    Epsv,
    /// `EPSV ALL` (RFC 2428 §4): the client promises to use only EPSV from now on.
    EpsvAll,
    /// `AUTH <mechanism>` (RFC 2228, RFC 4217): may switch the channel to TLS. A bare `AUTH`
    /// counts too: the tracker waits for the server's 234 either way.
    Auth,
    /// Any other command.
    Other,
}

/// The first line of a reply, or a line that is not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyLine<'a> {
    /// The three-digit reply code, 100..=599.
    pub code: u16,
    /// `true` for `NNN-text` (a multi-line reply starts or goes on), `false` for `NNN text`.
    pub continues: bool,
    /// Everything after the code and its separator (empty for a bare `NNN`).
    pub text: &'a [u8],
}

/// What a parser found wrong with a line that claimed to be an announcement.
///
/// The variants say what was wrong, not whose fault it is: all of them come from bytes a peer
/// sent, so the usual causes are a broken client or server, a middlebox that rewrote the line,
/// or an attacker probing the parser. None of them is a security decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Occurs when the argument or reply text does not have the shape its form requires and
    /// no more specific variant applies, e.g. bytes follow a complete PORT/EPRT/LPRT argument
    /// (`PORT 192,0,2,1,195,80x`).
    #[error("malformed")]
    Malformed,
    /// Occurs when PORT, EPRT or LPRT comes without an argument.
    #[error("missing argument")]
    MissingArgument,
    /// Occurs when a number field is empty or holds anything but ASCII decimal digits
    /// (`1,,2`, `+1`, ` 1`, a non-ASCII byte).
    #[error("field is not a decimal number")]
    NotANumber,
    /// Occurs when a number is larger than its field allows: above 255 for an address, port or
    /// length byte, above 65535 for a decimal port. Also catches digit strings that would
    /// overflow any integer.
    #[error("number too large for its field")]
    NumberTooLarge,
    /// Occurs when a decimal port (EPRT, 229) is 0, which is not a TCP port number.
    #[error("port 0")]
    PortZero,
    /// Occurs when a comma-separated list (PORT, LPRT, 227, 228) or a delimited EPRT/229 field
    /// list ends, at the end of the text or at an unexpected byte, before all of its fields
    /// were read.
    #[error("too few fields")]
    TooFewFields,
    /// Occurs when a complete address is followed by another field (`1,2,3,4,5,6,7`,
    /// `|1|192.0.2.1|80|x|`).
    #[error("too many fields")]
    TooManyFields,
    /// Occurs when an EPRT or 229 delimiter is not printable ASCII (33..=126, RFC 2428 §2), is a
    /// digit (which would make the port ambiguous; Linux nf_conntrack_ftp refuses them too), or
    /// when the delimiters of one 229 reply differ.
    #[error("bad delimiter")]
    BadDelimiter,
    /// Occurs when the address family is not IPv4 or IPv6: an EPRT/EPSV family other than 1 or
    /// 2 (RFC 2428), an LPRT/228 family other than 4 with length 4 or 6 with length 16, or a
    /// port length other than 2 (RFC 1639).
    #[error("unsupported address family")]
    UnsupportedFamily,
    /// Occurs when the EPRT address field is not the textual form of an address of its
    /// family: not ASCII, an IPv6 address under family 1, a zone index (`fe80::1%em0`), or
    /// just garbage.
    #[error("bad address")]
    BadAddress,
    /// Occurs when a 227 or 228 reply text holds no digit at all, or a 229 reply text no `(`,
    /// so there is nothing to parse.
    #[error("no address in reply")]
    NotFound,
    /// Occurs when a 229 reply fills in the protocol or address field
    /// (`(|2|2001:db8::1|6446|)`). RFC 2428 §3 says the reply carries the port only; the
    /// client connects to the control connection's server address, so a filled-in address
    /// would describe a connection no client makes.
    #[error("229 reply carries an address")]
    UnexpectedAddress,
}
