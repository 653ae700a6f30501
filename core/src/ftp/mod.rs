//! FTP control-channel line parsers: one line in, one typed command or reply out.
//!
//! Owns the syntax of RFC 959 (PORT, PASV, 227, multi-line replies), RFC 2428 (EPRT, EPSV,
//! 229), RFC 1639 (LPRT, LPSV, 228) and the reply variants real servers send (RFC 1123
//! §4.1.2.6). Pure functions without state, I/O or logging. A parser only says what a line
//! *means*; whether that meaning may open a hole (bounce check, low ports, pairing with a
//! PASV) is decided in `policy`, so no parser ever says no for security reasons.
//!
//! Lines are passed in without their terminating CR LF.
//!
//! PLACEHOLDER API: the implementation is being written; signatures are fixed.

use std::net::SocketAddr;

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
    /// `PASV` (RFC 959).
    Pasv,
    /// `LPSV` (RFC 1639).
    Lpsv,
    /// `EPSV`, `EPSV 1`, `EPSV 2` (RFC 2428 §3).
    Epsv,
    /// `EPSV ALL` (RFC 2428 §4): the client promises to use only EPSV from now on.
    EpsvAll,
    /// `AUTH <mechanism>` (RFC 2228, RFC 4217): may switch the channel to TLS.
    Auth,
    /// Any other command.
    Other,
}

/// The first line of a reply, or a line that is not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyLine<'a> {
    /// The three-digit reply code.
    pub code: u16,
    /// `true` for `NNN-text` (a multi-line reply starts or goes on), `false` for `NNN text`.
    pub continues: bool,
    /// Everything after the code and its separator.
    pub text: &'a [u8],
}

/// What a parser found wrong with a line that claimed to be an announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Occurs when the line is malformed.
    #[error("malformed")]
    Malformed,
}

/// Parses one client line (without CR LF). Unknown verbs are `Ok(Command::Other)`; a known
/// verb with a broken argument is an error.
///
/// # Errors
/// [`ParseError`] when PORT/EPRT/LPRT arguments are malformed.
pub fn parse_command(_line: &[u8]) -> Result<Command, ParseError> {
    Ok(Command::Other)
}

/// Splits a server line into code, separator and text; `None` if it does not start with a
/// reply code (a continuation line of a multi-line reply).
pub fn parse_reply_line(_line: &[u8]) -> Option<ReplyLine<'_>> {
    None
}

/// Parses the text of a `227` reply (RFC 959, scanned as RFC 1123 §4.1.2.6 says).
///
/// # Errors
/// [`ParseError`] when no `h1,h2,h3,h4,p1,p2` can be found.
pub fn parse_227(_text: &[u8]) -> Result<SocketAddr, ParseError> {
    Err(ParseError::Malformed)
}

/// Parses the text of a `228` reply (RFC 1639).
///
/// # Errors
/// [`ParseError`] when the long address is malformed.
pub fn parse_228(_text: &[u8]) -> Result<SocketAddr, ParseError> {
    Err(ParseError::Malformed)
}

/// Parses the text of a `229` reply (RFC 2428 §3): the port only.
///
/// # Errors
/// [`ParseError`] when `(<d><d><d>port<d>)` cannot be found.
pub fn parse_229(_text: &[u8]) -> Result<u16, ParseError> {
    Err(ParseError::Malformed)
}
