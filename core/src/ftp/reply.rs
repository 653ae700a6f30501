//! Server replies: the reply-code prefix of any line, and the texts of 227, 228 and 229.
//!
//! Owns the reply line syntax of RFC 959 §4.2 and the passive-mode texts of RFC 959 (227),
//! RFC 1639 (228) and RFC 2428 §3 (229). Which reply lines count (final line, after a PASV
//! this client sent) is the tracker's business, not this module's.

use std::net::SocketAddr;

use super::scan::{check_delimiter, Cursor};
use super::{ParseError, ReplyLine};

/// Splits a server line into code, separator and text; `None` if it does not start with a
/// reply code.
///
/// A reply line is exactly three ASCII digits, the first 1..=5 (RFC 959 §4.2), then a space
/// (final line), a hyphen (first line of a multi-line reply) or the end of the line. Anything
/// else, including `2270 ...` or ` 227 ...`, is `None`: a line inside a multi-line reply, or
/// not a reply at all.
pub fn parse_reply_line(line: &[u8]) -> Option<ReplyLine<'_>> {
    let (code, rest) = line.split_at_checked(3)?;
    let &[c1, c2, c3] = code else {
        return None;
    };
    if !(b'1'..=b'5').contains(&c1) || !c2.is_ascii_digit() || !c3.is_ascii_digit() {
        return None;
    }
    let code = u16::from(c1 - b'0') * 100 + u16::from(c2 - b'0') * 10 + u16::from(c3 - b'0');
    let (continues, text) = match rest.split_first() {
        None => (false, rest),
        Some((b' ', text)) => (false, text),
        Some((b'-', text)) => (true, text),
        Some(_) => return None,
    };
    Some(ReplyLine {
        code,
        continues,
        text,
    })
}

/// Parses the text of a `227` reply (RFC 959 §4.1.2), scanned as RFC 1123 §4.1.2.6 says.
///
/// `text` is [`ReplyLine::text`], without the code. The format "is not well standardized"
/// (RFC 1123), so the scan starts at the first digit and reads `h1,h2,h3,h4,p1,p2`; what comes
/// before (`Entering Passive Mode (`, `=`) and after (`).`, more text) does not matter, unless
/// it is a seventh field.
///
/// # Errors
/// [`ParseError::NotFound`] without any digit; otherwise the list errors of
/// [`ParseError`] (too few or many fields, a number above 255, an empty field).
pub fn parse_227(text: &[u8]) -> Result<SocketAddr, ParseError> {
    let mut cur = from_first_digit(text)?;
    let addr = cur.host_port()?;
    cur.no_more_fields()?;
    Ok(addr)
}

/// Parses the text of a `228` reply (RFC 1639 §2): `af,hal,h1..hN,pal,p1,p2`, scanned from
/// the first digit like a 227, e.g. `Entering Long Passive Mode (6,16,h1..h16,2,p1,p2)`.
///
/// # Errors
/// [`ParseError::NotFound`] without any digit, [`ParseError::UnsupportedFamily`] for a
/// family/length other than 4/4 or 6/16 or a port length other than 2, and the list errors.
pub fn parse_228(text: &[u8]) -> Result<SocketAddr, ParseError> {
    let mut cur = from_first_digit(text)?;
    let addr = cur.long_host_port()?;
    cur.no_more_fields()?;
    Ok(addr)
}

/// Parses the text of a `229` reply (RFC 2428 §3): the port only.
///
/// Finds the first `(` and expects `<d><d><d><port><d>` with one delimiter `d` in 33..=126
/// (not a digit) used four times, e.g. `Entering Extended Passive Mode (|||6446|)`. The reply
/// carries no address: the data connection goes to the control connection's server address.
///
/// # Errors
/// [`ParseError::NotFound`] without `(`, [`ParseError::UnexpectedAddress`] when the protocol
/// or address field is filled in, [`ParseError::BadDelimiter`] for an illegal or mismatched
/// delimiter, [`ParseError::TooFewFields`] when the text ends early, and the port errors
/// ([`ParseError::NotANumber`], [`ParseError::NumberTooLarge`], [`ParseError::PortZero`]).
pub fn parse_229(text: &[u8]) -> Result<u16, ParseError> {
    let open = text
        .iter()
        .position(|&b| b == b'(')
        .ok_or(ParseError::NotFound)?;
    let inner = text.get(open + 1..).unwrap_or_default();
    let (&d, rest) = inner.split_first().ok_or(ParseError::TooFewFields)?;
    check_delimiter(d)?;
    let tail = match rest {
        [d2, d3, tail @ ..] if *d2 == d && *d3 == d => tail,
        _ => return Err(not_three_delimiters(d, rest)),
    };
    let mut cur = Cursor::new(tail);
    let port = cur.port()?;
    match cur.next_byte() {
        Some(b) if b == d => Ok(port),
        Some(_) => Err(ParseError::BadDelimiter),
        None => Err(ParseError::TooFewFields),
    }
}

/// Tells why a 229 text did not start with three identical delimiters: if at least three more
/// delimiters follow before `)`, the protocol/address fields were filled in; otherwise the
/// delimiters differ or the text ends.
fn not_three_delimiters(d: u8, rest: &[u8]) -> ParseError {
    let inside = rest.split(|&b| b == b')').next().unwrap_or_default();
    if inside.iter().filter(|&&b| b == d).count() >= 3 {
        ParseError::UnexpectedAddress
    } else if rest.len() < 2 {
        ParseError::TooFewFields
    } else {
        ParseError::BadDelimiter
    }
}

/// A cursor at the first ASCII digit of `text` (RFC 1123 §4.1.2.6).
fn from_first_digit(text: &[u8]) -> Result<Cursor<'_>, ParseError> {
    let start = text
        .iter()
        .position(u8::is_ascii_digit)
        .ok_or(ParseError::NotFound)?;
    Ok(Cursor::new(text.get(start..).unwrap_or_default()))
}
