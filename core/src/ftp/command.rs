//! Client commands: the verbs that announce or request a data connection, and AUTH.
//!
//! Owns the argument syntax of PORT (RFC 959 §4.1.2), EPRT and EPSV (RFC 2428 §2-4) and LPRT
//! (RFC 1639 §2). Every other verb is [`Command::Other`] without looking at its argument.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::scan::{check_delimiter, decimal, decimal_port, Cursor};
use super::{Command, ParseError};

/// Parses one client line (without CR LF). Unknown verbs are `Ok(Command::Other)`; a known
/// verb with a broken argument is an error.
///
/// The verb is the bytes before the first space, compared case-insensitively (RFC 959 §5.3);
/// the argument is the rest with ASCII whitespace trimmed at both ends. PASV and LPSV ignore
/// any argument, AUTH accepts any (or none).
///
/// # Errors
/// A [`ParseError`] variant naming the first problem when the argument of PORT, EPRT, LPRT or
/// EPSV is malformed; see the module docs for what counts as well-formed.
pub fn parse_command(line: &[u8]) -> Result<Command, ParseError> {
    let mut parts = line.trim_ascii_end().splitn(2, |&b| b == b' ');
    let verb = parts.next().unwrap_or_default();
    let arg = parts.next().unwrap_or_default().trim_ascii();

    if verb.eq_ignore_ascii_case(b"PORT") {
        parse_port(arg).map(Command::Port)
    } else if verb.eq_ignore_ascii_case(b"EPRT") {
        parse_eprt(arg).map(Command::Eprt)
    } else if verb.eq_ignore_ascii_case(b"LPRT") {
        parse_lprt(arg).map(Command::Lprt)
    } else if verb.eq_ignore_ascii_case(b"PASV") {
        Ok(Command::Pasv)
    } else if verb.eq_ignore_ascii_case(b"LPSV") {
        Ok(Command::Lpsv)
    } else if verb.eq_ignore_ascii_case(b"EPSV") {
        parse_epsv(arg)
    } else if verb.eq_ignore_ascii_case(b"AUTH") {
        Ok(Command::Auth)
    } else {
        Ok(Command::Other)
    }
}

/// `PORT h1,h2,h3,h4,p1,p2`: six byte fields and nothing else.
fn parse_port(arg: &[u8]) -> Result<SocketAddr, ParseError> {
    if arg.is_empty() {
        return Err(ParseError::MissingArgument);
    }
    let mut cur = Cursor::new(arg);
    let addr = cur.host_port()?;
    cur.finish()?;
    Ok(addr)
}

/// `LPRT af,hal,h1..hN,pal,p1,p2` and nothing else.
fn parse_lprt(arg: &[u8]) -> Result<SocketAddr, ParseError> {
    if arg.is_empty() {
        return Err(ParseError::MissingArgument);
    }
    let mut cur = Cursor::new(arg);
    let addr = cur.long_host_port()?;
    cur.finish()?;
    Ok(addr)
}

/// `EPRT <d><af><d><addr><d><port><d>` (RFC 2428 §2).
///
/// The first byte is the delimiter; splitting the rest on it must give exactly the three
/// fields and an empty remainder. The address text goes to std's `Ipv4Addr`/`Ipv6Addr`
/// parsers (strict dotted quad without leading zeros; RFC 4291 text without zone index).
fn parse_eprt(arg: &[u8]) -> Result<SocketAddr, ParseError> {
    let (&d, rest) = arg.split_first().ok_or(ParseError::MissingArgument)?;
    check_delimiter(d)?;
    let mut fields = rest.split(|&b| b == d);
    let (Some(af), Some(addr), Some(port), Some(end)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(ParseError::TooFewFields);
    };
    if fields.next().is_some() {
        return Err(ParseError::TooManyFields);
    }
    if !end.is_empty() {
        return Err(ParseError::Malformed);
    }
    let ip = match decimal(af, u32::from(u16::MAX))? {
        1 => IpAddr::V4(parse_text_addr::<Ipv4Addr>(addr)?),
        2 => IpAddr::V6(parse_text_addr::<Ipv6Addr>(addr)?),
        _ => return Err(ParseError::UnsupportedFamily),
    };
    Ok(SocketAddr::new(ip, decimal_port(port)?))
}

/// Parses an address field with std, after making sure it is ASCII text.
fn parse_text_addr<A: std::str::FromStr>(field: &[u8]) -> Result<A, ParseError> {
    if !field.is_ascii() {
        return Err(ParseError::BadAddress);
    }
    std::str::from_utf8(field)
        .map_err(|_| ParseError::BadAddress)?
        .parse()
        .map_err(|_| ParseError::BadAddress)
}

/// `EPSV`, `EPSV <net-prt>` (RFC 2428 §3) or `EPSV ALL` (§4).
fn parse_epsv(arg: &[u8]) -> Result<Command, ParseError> {
    if arg.is_empty() {
        return Ok(Command::Epsv);
    }
    if arg.eq_ignore_ascii_case(b"ALL") {
        return Ok(Command::EpsvAll);
    }
    match decimal(arg, u32::from(u16::MAX))? {
        1 | 2 => Ok(Command::Epsv),
        _ => Err(ParseError::UnsupportedFamily),
    }
}
