//! FTP session state of one control connection: which commands await a reply, whether a
//! multi-line reply is open, whether the channel turned to TLS.
//!
//! Owns the pairing facts DESIGN.md invariant 4 needs (the decision itself is
//! `policy::check_reply_pairing`) and invariant 8 (after `AUTH` is accepted with 234 the
//! channel is ciphertext). Takes whole lines from the assembler, asks `ftp` what they mean
//! and `policy` whether a passive reply pairs; returns what the line meant. Never opens
//! holes itself and never checks addresses.

use std::collections::VecDeque;

use crate::ftp::{self, Command, ParseError};
use crate::policy::{self, Announcement, Deny, PassiveRequest, Source};

/// Commands kept waiting for their replies. Clients rarely pipeline more than a few; on
/// overflow the oldest is dropped, which can only make a later passive reply look
/// unsolicited (fail closed), never the other way round.
pub const MAX_OUTSTANDING: usize = 32;

/// A client command waiting for its final reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outstanding {
    Passive(PassiveRequest),
    Auth,
    Other,
}

/// What one line meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineMeaning {
    /// Nothing ftp6proxy acts on.
    Nothing,
    /// A data connection was announced; `policy::check_announcement` decides next.
    Announce(Announcement),
    /// A line that looked like an announcement but may not count.
    Deny(Deny),
    /// An announcement whose argument could not be parsed.
    Malformed {
        /// The verb or code.
        what: &'static str,
        /// What was wrong.
        error: ParseError,
    },
    /// The server accepted `AUTH`: from now on the channel is encrypted.
    TlsStarted,
}

/// FTP state of one control connection.
#[derive(Debug, Default)]
pub struct Session {
    outstanding: VecDeque<Outstanding>,
    /// The code of the multi-line reply being read, if one is open.
    multiline: Option<u16>,
    encrypted: bool,
}

/// Whether `line` starts with the verb `verb` (case-insensitive, RFC 959 §5.3).
fn starts_with_verb(line: &[u8], verb: &[u8]) -> bool {
    line.len() >= verb.len()
        && line[..verb.len()].eq_ignore_ascii_case(verb)
        && line.get(verb.len()).is_none_or(|&b| b == b' ')
}

impl Session {
    /// A session that has seen nothing.
    pub fn new() -> Session {
        Session::default()
    }

    /// Whether the channel is encrypted (nothing more can be read from it).
    pub fn is_encrypted(&self) -> bool {
        self.encrypted
    }

    fn expect(&mut self, outstanding: Outstanding) {
        if self.outstanding.len() == MAX_OUTSTANDING {
            self.outstanding.pop_front();
        }
        self.outstanding.push_back(outstanding);
    }

    /// A line the client sent.
    pub fn client_line(&mut self, line: &[u8], truncated: bool) -> LineMeaning {
        if truncated {
            self.expect(Outstanding::Other);
            let announces = [&b"PORT"[..], b"EPRT", b"LPRT"]
                .iter()
                .any(|verb| starts_with_verb(line, verb));
            return if announces {
                LineMeaning::Deny(Deny::Truncated)
            } else {
                LineMeaning::Nothing
            };
        }
        if let Some(reply) = ftp::parse_reply_line(line) {
            if policy::is_passive_reply_code(reply.code) {
                // A client has no business sending replies; the server will answer it
                // with 500, so it is tracked like any other command.
                self.expect(Outstanding::Other);
                return LineMeaning::Deny(Deny::ReplyFromClient { code: reply.code });
            }
        }
        let (outstanding, meaning) = match ftp::parse_command(line) {
            Ok(Command::Port(addr)) => (Outstanding::Other, announce(Source::Port, addr)),
            Ok(Command::Eprt(addr)) => (Outstanding::Other, announce(Source::Eprt, addr)),
            Ok(Command::Lprt(addr)) => (Outstanding::Other, announce(Source::Lprt, addr)),
            Ok(Command::Pasv) => (
                Outstanding::Passive(PassiveRequest::Pasv),
                LineMeaning::Nothing,
            ),
            Ok(Command::Lpsv) => (
                Outstanding::Passive(PassiveRequest::Lpsv),
                LineMeaning::Nothing,
            ),
            Ok(Command::Epsv) => (
                Outstanding::Passive(PassiveRequest::Epsv),
                LineMeaning::Nothing,
            ),
            Ok(Command::Auth) => (Outstanding::Auth, LineMeaning::Nothing),
            Ok(Command::EpsvAll | Command::Other) => (Outstanding::Other, LineMeaning::Nothing),
            Err(error) => (
                Outstanding::Other,
                LineMeaning::Malformed {
                    what: verb_name(line),
                    error,
                },
            ),
        };
        self.expect(outstanding);
        meaning
    }

    /// A line the server sent.
    pub fn server_line(&mut self, line: &[u8], truncated: bool) -> LineMeaning {
        let reply = ftp::parse_reply_line(line);
        if let Some(open) = self.multiline {
            // RFC 959 §4.2: a multi-line reply ends at the first line that starts with the
            // same code followed by a space; everything before it is text, whatever it
            // looks like.
            return match reply {
                Some(r) if r.code == open && !r.continues => {
                    self.multiline = None;
                    self.final_reply(open, true, line, truncated)
                }
                Some(r) if policy::is_passive_reply_code(r.code) => {
                    LineMeaning::Deny(Deny::InsideMultiline { code: r.code })
                }
                _ => LineMeaning::Nothing,
            };
        }
        match reply {
            None => LineMeaning::Nothing,
            Some(r) if r.continues => {
                self.multiline = Some(r.code);
                if policy::is_passive_reply_code(r.code) {
                    LineMeaning::Deny(Deny::InsideMultiline { code: r.code })
                } else {
                    LineMeaning::Nothing
                }
            }
            Some(r) => self.final_reply(r.code, false, line, truncated),
        }
    }

    /// The last line of a reply with `code` (`multiline`: it closes a multi-line reply).
    fn final_reply(
        &mut self,
        code: u16,
        multiline: bool,
        line: &[u8],
        truncated: bool,
    ) -> LineMeaning {
        if code < 200 {
            // 1yz is preliminary (RFC 959 §4.2): the final reply is still to come.
            return LineMeaning::Nothing;
        }
        let answered = self.outstanding.pop_front();
        if code == 234 && answered == Some(Outstanding::Auth) {
            self.encrypted = true;
            return LineMeaning::TlsStarted;
        }
        if !policy::is_passive_reply_code(code) {
            return LineMeaning::Nothing;
        }
        let request = match answered {
            Some(Outstanding::Passive(request)) => Some(request),
            _ => None,
        };
        if let Err(deny) = policy::check_reply_pairing(code, multiline, request) {
            return LineMeaning::Deny(deny);
        }
        if truncated {
            return LineMeaning::Deny(Deny::Truncated);
        }
        let Some(reply) = ftp::parse_reply_line(line) else {
            return LineMeaning::Nothing;
        };
        let (source, parsed) = match code {
            227 => (
                Source::Reply227,
                ftp::parse_227(reply.text).map(|a| (Some(a.ip()), a.port())),
            ),
            228 => (
                Source::Reply228,
                ftp::parse_228(reply.text).map(|a| (Some(a.ip()), a.port())),
            ),
            _ => (
                Source::Reply229,
                ftp::parse_229(reply.text).map(|port| (None, port)),
            ),
        };
        match parsed {
            Ok((addr, port)) => LineMeaning::Announce(Announcement { source, addr, port }),
            Err(error) => LineMeaning::Malformed {
                what: source.name(),
                error,
            },
        }
    }
}

fn announce(source: Source, addr: std::net::SocketAddr) -> LineMeaning {
    LineMeaning::Announce(Announcement {
        source,
        addr: Some(addr.ip()),
        port: addr.port(),
    })
}

/// The verb of a command line that failed to parse, for the log.
fn verb_name(line: &[u8]) -> &'static str {
    for verb in ["PORT", "EPRT", "LPRT"] {
        if starts_with_verb(line, verb.as_bytes()) {
            return verb;
        }
    }
    "command"
}
