//! Byte-level readers shared by the command and reply parsers.
//!
//! Owns number, separator and delimiter syntax, nothing FTP-specific. Every read goes through
//! `split_first`, `get` or a slice pattern, so no input can make one panic, and numbers are
//! checked against their field's maximum digit by digit, so no input can overflow one.

use std::net::{IpAddr, SocketAddr};

use super::ParseError;

/// Largest value of one byte field (address byte, port byte, LPRT length).
const BYTE_MAX: u32 = 255;
/// Largest value of a decimal port field (EPRT, 229).
const PORT_MAX: u32 = 65_535;

/// Reads fields from the front of a byte slice.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Cursor { rest: bytes }
    }

    /// Consumes `expected` if it comes next.
    pub(super) fn eat(&mut self, expected: u8) -> bool {
        match self.rest.split_first() {
            Some((&b, tail)) if b == expected => {
                self.rest = tail;
                true
            }
            _ => false,
        }
    }

    /// Consumes and returns the next byte.
    pub(super) fn next_byte(&mut self) -> Option<u8> {
        let (&b, tail) = self.rest.split_first()?;
        self.rest = tail;
        Some(b)
    }

    /// Reads the run of ASCII digits at the front as a number no larger than `max`.
    fn decimal(&mut self, max: u32) -> Result<u32, ParseError> {
        let len = self.rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let (digits, tail) = self
            .rest
            .split_at_checked(len)
            .ok_or(ParseError::Malformed)?;
        let value = decimal(digits, max)?;
        self.rest = tail;
        Ok(value)
    }

    /// Reads one byte-sized decimal field (0..=255).
    pub(super) fn byte(&mut self) -> Result<u8, ParseError> {
        let value = self.decimal(BYTE_MAX)?;
        u8::try_from(value).map_err(|_| ParseError::NumberTooLarge)
    }

    /// Reads a decimal TCP port (1..=65535) from the front.
    pub(super) fn port(&mut self) -> Result<u16, ParseError> {
        let value = self.decimal(PORT_MAX)?;
        port_from(value)
    }

    /// Consumes the comma between two list fields; a missing one means the list ended early.
    pub(super) fn comma(&mut self) -> Result<(), ParseError> {
        if self.eat(b',') {
            Ok(())
        } else {
            Err(ParseError::TooFewFields)
        }
    }

    /// Reads `N` comma-separated byte fields, stopping right after the last digit.
    pub(super) fn byte_list<const N: usize>(&mut self) -> Result<[u8; N], ParseError> {
        let mut out = [0u8; N];
        for (i, slot) in out.iter_mut().enumerate() {
            if i > 0 {
                self.comma()?;
            }
            *slot = self.byte()?;
        }
        Ok(out)
    }

    /// Reads `h1,h2,h3,h4,p1,p2` (RFC 959 §4.1.2 `<host-port>`).
    pub(super) fn host_port(&mut self) -> Result<SocketAddr, ParseError> {
        let [h1, h2, h3, h4, p1, p2] = self.byte_list::<6>()?;
        Ok(SocketAddr::new(
            IpAddr::from([h1, h2, h3, h4]),
            u16::from_be_bytes([p1, p2]),
        ))
    }

    /// Reads `af,hal,h1..hN,pal,p1,p2` (RFC 1639 §2 `<long-host-port>`): family 4 with 4
    /// address bytes or family 6 with 16, and always 2 port bytes.
    pub(super) fn long_host_port(&mut self) -> Result<SocketAddr, ParseError> {
        let af = self.byte()?;
        self.comma()?;
        let hal = self.byte()?;
        self.comma()?;
        let ip = match (af, hal) {
            (4, 4) => IpAddr::from(self.byte_list::<4>()?),
            (6, 16) => IpAddr::from(self.byte_list::<16>()?),
            _ => return Err(ParseError::UnsupportedFamily),
        };
        self.comma()?;
        if self.byte()? != 2 {
            return Err(ParseError::UnsupportedFamily);
        }
        self.comma()?;
        let [p1, p2] = self.byte_list::<2>()?;
        Ok(SocketAddr::new(ip, u16::from_be_bytes([p1, p2])))
    }

    /// After a complete list inside reply text: anything may follow except another field.
    pub(super) fn no_more_fields(&self) -> Result<(), ParseError> {
        if self.rest.first() == Some(&b',') {
            Err(ParseError::TooManyFields)
        } else {
            Ok(())
        }
    }

    /// After a complete command argument (already trimmed): nothing may follow.
    pub(super) fn finish(&self) -> Result<(), ParseError> {
        self.no_more_fields()?;
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(ParseError::Malformed)
        }
    }
}

/// Parses a whole field as a decimal number no larger than `max`.
///
/// Checking against `max` after every digit keeps the value at or below `max`, so a field of
/// a million digits costs one pass and cannot overflow.
pub(super) fn decimal(digits: &[u8], max: u32) -> Result<u32, ParseError> {
    if digits.is_empty() {
        return Err(ParseError::NotANumber);
    }
    let mut value: u32 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return Err(ParseError::NotANumber);
        }
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u32::from(b - b'0')))
            .filter(|&v| v <= max)
            .ok_or(ParseError::NumberTooLarge)?;
    }
    Ok(value)
}

/// Parses a whole field as a decimal TCP port, 1..=65535 (RFC 2428 §2 `<tcp-port>`).
pub(super) fn decimal_port(digits: &[u8]) -> Result<u16, ParseError> {
    port_from(decimal(digits, PORT_MAX)?)
}

fn port_from(value: u32) -> Result<u16, ParseError> {
    match u16::try_from(value) {
        Ok(0) => Err(ParseError::PortZero),
        Ok(port) => Ok(port),
        Err(_) => Err(ParseError::NumberTooLarge),
    }
}

/// Checks an RFC 2428 delimiter: printable ASCII 33..=126, and not a digit, because a digit
/// delimiter would run into the port number (Linux nf_conntrack_ftp refuses digits as well).
pub(super) fn check_delimiter(d: u8) -> Result<(), ParseError> {
    if (33..=126).contains(&d) && !d.is_ascii_digit() {
        Ok(())
    } else {
        Err(ParseError::BadDelimiter)
    }
}
