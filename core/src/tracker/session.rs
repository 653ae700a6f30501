//! FTP session state of one control connection: which commands await a reply, whether a
//! multi-line reply is open, whether the channel turned to TLS.
//!
//! Owns the pairing facts DESIGN.md invariant 4 needs (the decision itself is
//! `policy::check_reply_pairing`) and invariant 8 (after `AUTH` is accepted with 234 the
//! channel is ciphertext). Takes whole lines from the assembler, asks `ftp` what they mean
//! and `policy` whether a passive reply pairs; returns what the line meant. Never opens
//! holes itself and never checks addresses.
//!
//! Two facts come from TCP rather than from the lines:
//! - A final reply can only answer a command the server had received when it sent the
//!   reply: the segment's acknowledgment number must cover the command's last byte. So
//!   replies to commands the engine never saw (lost in a gap) cannot pair with later
//!   commands it did see.
//! - After the server's stream lost bytes (a gap, or joining it mid-stream) the engine
//!   does not know whether a multi-line reply is open, nor how many replies the server
//!   still owes to commands it never saw. The multi-line state is unknown until the next
//!   reply line the engine reads from a proven line start settles it (RFC 959 §4.2: a
//!   `NNN-` line opens or continues a reply, a `NNN ` line ends one); the outstanding
//!   commands are forgotten, and from then on a passive reply pairs with the first
//!   passive command of its kind that the server had received, skipping replies owed to
//!   commands lost with the gap. ARCHITECTURE.md ("Gaps and rejoining") says why a line
//!   start the engine proved, not a segment start, is what makes this safe.

use std::collections::VecDeque;

use crate::ftp::{self, Command, ParseError};
use crate::policy::{self, Announcement, Deny, PassiveRequest, Source};
use crate::tracker::assembler::seq_diff;
use crate::tracker::Dir;

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

/// Whether a multi-line reply is open in the server's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Multiline {
    /// Between replies.
    #[default]
    Closed,
    /// Inside the multi-line reply with this code.
    Open(u16),
    /// Not known: the server's stream lost bytes, and no reply line has been read since
    /// (see the module docs).
    Unknown,
}

/// The session as a hand-over record keeps it (`tracker::handover` encodes and validates
/// it; the session owns its meaning).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionRecord {
    /// TLS was seen (the connection is not handed over while inside TLS).
    pub tls_seen: bool,
    /// The server's stream lost bytes at some point (replies may be owed to commands
    /// never seen).
    pub after_loss: bool,
    /// 0 closed, 1 open (with `code`), 2 unknown.
    pub multiline: u8,
    /// The open multi-line reply's code.
    pub code: u16,
    /// Outstanding commands: (kind, end_seq), kinds as in the module docs.
    pub outstanding: Vec<(u8, u32)>,
}

/// FTP state of one control connection.
#[derive(Debug, Default)]
pub struct Session {
    /// Commands awaiting their final reply, each with the client-stream sequence number
    /// just past its line end.
    outstanding: VecDeque<(Outstanding, u32)>,
    multiline: Multiline,
    encrypted: bool,
    /// The server's stream lost bytes at some point: replies may still be owed to
    /// commands the engine never saw, so the FIFO is not in step with the replies and a
    /// passive reply searches it (`answered_after_loss`).
    after_loss: bool,
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

    /// A session joined in the middle of the conversation (the engine restarted, or lost
    /// the connection's state): the server's stream is as good as after a gap.
    pub fn joined_midstream() -> Session {
        Session {
            multiline: Multiline::Unknown,
            after_loss: true,
            ..Session::default()
        }
    }

    /// Bytes of `dir`'s stream were lost. Lost client bytes are commands the FIFO never
    /// got; their replies pair with nothing, by the acknowledgment rule, so nothing needs
    /// forgetting. Lost server bytes are replies: which commands they answered is not
    /// known, so the FIFO is emptied (a passive reply then counts only for a passive
    /// command read after this point), and the multi-line state is unknown until the next
    /// reply line.
    pub fn resync(&mut self, dir: Dir) {
        if dir == Dir::ToClient {
            self.outstanding.clear();
            self.multiline = Multiline::Unknown;
            self.after_loss = true;
        }
    }

    /// The session as handed over to the next instance (`tracker::handover`).
    pub fn to_record(&self) -> SessionRecord {
        let (multiline, code) = match self.multiline {
            Multiline::Closed => (0, 0),
            Multiline::Open(code) => (1, code),
            Multiline::Unknown => (2, 0),
        };
        let outstanding = self
            .outstanding
            .iter()
            .map(|(command, end_seq)| {
                let kind = match command {
                    Outstanding::Other => 0,
                    Outstanding::Auth => 1,
                    Outstanding::Passive(PassiveRequest::Pasv) => 2,
                    Outstanding::Passive(PassiveRequest::Lpsv) => 3,
                    Outstanding::Passive(PassiveRequest::Epsv) => 4,
                };
                (kind, *end_seq)
            })
            .collect();
        SessionRecord {
            tls_seen: self.encrypted,
            after_loss: self.after_loss,
            multiline,
            code,
            outstanding,
        }
    }

    /// A session from a validated hand-over record (`handover::decode` checked every
    /// value; anything else found here fails closed: unknown multi-line state).
    pub fn from_record(record: &SessionRecord) -> Session {
        let multiline = match (record.multiline, record.code) {
            (0, _) => Multiline::Closed,
            (1, code) => Multiline::Open(code),
            _ => Multiline::Unknown,
        };
        let outstanding = record
            .outstanding
            .iter()
            .map(|&(kind, end_seq)| {
                let command = match kind {
                    1 => Outstanding::Auth,
                    2 => Outstanding::Passive(PassiveRequest::Pasv),
                    3 => Outstanding::Passive(PassiveRequest::Lpsv),
                    4 => Outstanding::Passive(PassiveRequest::Epsv),
                    _ => Outstanding::Other,
                };
                (command, end_seq)
            })
            .collect();
        Session {
            outstanding,
            multiline,
            encrypted: record.tls_seen,
            after_loss: record.after_loss || multiline == Multiline::Unknown,
        }
    }

    /// Whether the server started TLS on this connection at some point (it may have left
    /// it again with `CCC`).
    pub fn tls_seen(&self) -> bool {
        self.encrypted
    }

    /// Clear text resumed in `dir` at a TLS record boundary (`CCC`, RFC 4217 §6). For the
    /// server that is a reply boundary: no multi-line reply is open. Commands and replies
    /// inside TLS were all invisible, so the FIFO (emptied when TLS began) holds only what
    /// was read in clear text since.
    pub fn cleartext_resumed(&mut self, dir: Dir) {
        if dir == Dir::ToClient {
            self.multiline = Multiline::Closed;
        }
    }

    fn expect(&mut self, outstanding: Outstanding, end_seq: u32) {
        if self.outstanding.len() == MAX_OUTSTANDING {
            self.outstanding.pop_front();
        }
        self.outstanding.push_back((outstanding, end_seq));
    }

    /// The command a final reply answers: the oldest outstanding one, if the server had
    /// received it when it sent the reply (`ack`, the reply segment's acknowledgment
    /// number, covers its line end). Otherwise the reply answers a command the engine
    /// never saw, and pairs with nothing.
    fn answered(&mut self, ack: Option<u32>) -> Option<Outstanding> {
        let (_, end_seq) = *self.outstanding.front()?;
        if ack.is_some_and(|ack| seq_diff(ack, end_seq) < 0) {
            return None;
        }
        self.outstanding.pop_front().map(|(command, _)| command)
    }

    /// After a loss in the server's stream: the command a final reply with `code`
    /// answers. The server may still owe replies to commands the engine never saw, so the
    /// FIFO's head need not be this reply's command. A passive reply takes the first
    /// outstanding passive command of its kind the server had received (those before it
    /// were answered, replies come in order); it pairs with nothing if there is none. Any
    /// other final reply takes the head if the server had received it, except that a
    /// positive reply does not take a passive command (whose positive answer is a passive
    /// reply): it is one owed to a command lost with the gap.
    fn answered_after_loss(&mut self, code: u16, ack: Option<u32>) -> Option<Outstanding> {
        let received = |end_seq: u32| ack.is_none_or(|ack| seq_diff(ack, end_seq) >= 0);
        if policy::is_passive_reply_code(code) {
            let at = self.outstanding.iter().position(|&(command, end_seq)| {
                received(end_seq)
                    && matches!(command, Outstanding::Passive(request) if request.reply_code() == code)
            })?;
            self.outstanding.drain(..at);
            return self.outstanding.pop_front().map(|(command, _)| command);
        }
        let &(head, end_seq) = self.outstanding.front()?;
        if !received(end_seq) || (matches!(head, Outstanding::Passive(_)) && code < 400) {
            return None;
        }
        self.outstanding.pop_front().map(|(command, _)| command)
    }

    /// A line the client sent; `end_seq` is the client-stream sequence number just past
    /// its line end.
    pub fn client_line(&mut self, line: &[u8], truncated: bool, end_seq: u32) -> LineMeaning {
        if truncated {
            self.expect(Outstanding::Other, end_seq);
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
                self.expect(Outstanding::Other, end_seq);
                return LineMeaning::Deny(Deny::ReplyFromClient { code: reply.code });
            }
        }
        let (outstanding, meaning) = match ftp::parse_command(line) {
            Ok(Command::Port(addr)) => (Outstanding::Other, announce(Source::Port, addr)),
            Ok(Command::Eprt(addr)) => (Outstanding::Other, announce(Source::Eprt, addr)),
            Ok(Command::Lprt(addr)) => (Outstanding::Other, announce(Source::Lprt, addr)),
            Ok(command @ (Command::Pasv | Command::Lpsv | Command::Epsv)) => {
                (passive_request(&command), LineMeaning::Nothing)
            }
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
        self.expect(outstanding, end_seq);
        meaning
    }

    /// The tail of a client line whose start was never seen (after a gap). It cannot
    /// announce anything (it may be the middle of another line), but it is counted for
    /// reply pairing: the server answers the real line, and the only way a passive request
    /// recorded from a tail such as `EPSV` could matter is a final passive reply from the
    /// server, which it sends only to a real passive command.
    pub fn client_fragment(&mut self, line: &[u8], end_seq: u32) -> LineMeaning {
        let (outstanding, meaning) = match ftp::parse_command(line) {
            Ok(command @ (Command::Pasv | Command::Lpsv | Command::Epsv)) => {
                (passive_request(&command), LineMeaning::Nothing)
            }
            Ok(Command::Port(_) | Command::Eprt(_) | Command::Lprt(_)) => {
                (Outstanding::Other, LineMeaning::Deny(Deny::MidLine))
            }
            _ => (Outstanding::Other, LineMeaning::Nothing),
        };
        self.expect(outstanding, end_seq);
        meaning
    }

    /// A line the server sent, in a segment acknowledging client bytes up to `ack` (`None`
    /// when the segment carries no acknowledgment).
    pub fn server_line(&mut self, line: &[u8], truncated: bool, ack: Option<u32>) -> LineMeaning {
        let reply = ftp::parse_reply_line(line);
        if self.multiline == Multiline::Unknown {
            // The first reply line read from a proven line start after a loss settles the
            // state (RFC 959 §4.2): `NNN-` opens or continues a reply that ends at `NNN `;
            // `NNN ` is the last line of a reply, after which replies start again.
            // Anything else is text inside a reply and settles nothing.
            match reply {
                None => return LineMeaning::Nothing,
                Some(r) if r.continues => self.multiline = Multiline::Open(r.code),
                Some(_) => self.multiline = Multiline::Closed,
            }
            if let Multiline::Open(code) = self.multiline {
                return if policy::is_passive_reply_code(code) {
                    LineMeaning::Deny(Deny::InsideMultiline { code })
                } else {
                    LineMeaning::Nothing
                };
            }
        }
        if let Multiline::Open(open) = self.multiline {
            // RFC 959 §4.2: a multi-line reply ends at the first line that starts with the
            // same code followed by a space; everything before it is text, whatever it
            // looks like.
            return match reply {
                Some(r) if r.code == open && !r.continues => {
                    self.multiline = Multiline::Closed;
                    self.final_reply(open, true, line, truncated, ack)
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
                self.multiline = Multiline::Open(r.code);
                if policy::is_passive_reply_code(r.code) {
                    LineMeaning::Deny(Deny::InsideMultiline { code: r.code })
                } else {
                    LineMeaning::Nothing
                }
            }
            Some(r) => self.final_reply(r.code, false, line, truncated, ack),
        }
    }

    /// The last line of a reply with `code` (`multiline`: it closes a multi-line reply).
    fn final_reply(
        &mut self,
        code: u16,
        multiline: bool,
        line: &[u8],
        truncated: bool,
        ack: Option<u32>,
    ) -> LineMeaning {
        if code < 200 {
            // 1yz is preliminary (RFC 959 §4.2): the final reply is still to come.
            return LineMeaning::Nothing;
        }
        let answered = if self.after_loss {
            self.answered_after_loss(code, ack)
        } else {
            self.answered(ack)
        };
        // 234 starts TLS even when its AUTH was lost in a gap: reading on would mean
        // reading ciphertext as lines. Commands sent inside TLS are invisible, so nothing
        // outstanding can be answered in clear text afterwards.
        if code == 234 {
            self.encrypted = true;
            self.outstanding.clear();
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

/// What a passive command leaves outstanding (anything else: a plain command).
fn passive_request(command: &Command) -> Outstanding {
    match command {
        Command::Pasv => Outstanding::Passive(PassiveRequest::Pasv),
        Command::Lpsv => Outstanding::Passive(PassiveRequest::Lpsv),
        Command::Epsv => Outstanding::Passive(PassiveRequest::Epsv),
        _ => Outstanding::Other,
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
