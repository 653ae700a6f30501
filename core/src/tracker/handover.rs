//! The hand-over of connection state from a stopping instance to the next one: a bounded,
//! versioned byte format, written at a graceful stop and read, as untrusted input, at the
//! next start (DESIGN.md invariant 9).
//!
//! Owns the encoding and the validation. What is handed over per connection is exactly
//! what an eviction record keeps (`Grave`): each stream's next sequence number if it
//! rested on a line boundary, the session (outstanding commands, multi-line state, TLS
//! seen), the FIN flags and the last announcement per direction. A record that a stopping
//! instance could only have written if it had been tampered with — an announcement whose
//! hole would not lie between the two endpoints, a port below 1024, a code out of range,
//! more connections than the table holds, trailing bytes — rejects the whole file: the
//! next instance then starts empty, which is always safe (every connection is joined
//! mid-stream). Knows no files: the daemon moves the bytes.
//!
//! ```text
//! file    = "F6PSTATE" version:u8(=2) count:u32 record*count
//! record  = client:addr server:addr resume:opt_u32*2 fin:u8 session hole*2
//! addr    = family:u8(4|6) ip:[u8;16] port:u16          (IPv4 in the first 4 bytes)
//! opt_u32 = 0 | 1 value:u32
//! session = flags:u8(bit 0 TLS seen, bit 1 server bytes lost) multiline:u8(0 closed|1 open|2 unknown) code:u16 n:u8(<=32)
//!           (kind:u8(0 other|1 auth|2 pasv|3 lpsv|4 epsv) end_seq:u32)*n
//! hole    = 0 | 1 end_seq:u32 mode:u8(0 passive|1 active) src:addr dst:addr
//! ```
//! Integers are big-endian; a hole's `addr` ports are zero and its port follows as `u16`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::holes::{HoleSpec, Mode};
use crate::policy::MIN_DATA_PORT;

/// The file's first bytes.
pub const MAGIC: &[u8; 8] = b"F6PSTATE";
/// The format version this build writes and reads.
pub const VERSION: u8 = 2;

/// Why a hand-over file was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Occurs when the file does not start with the magic bytes (not a state file).
    #[error("not an ftp6proxy state file")]
    NotState,
    /// Occurs when the file was written by another version of the format.
    #[error("state file version {0}, this build reads version {VERSION}")]
    Version(u8),
    /// Occurs when the file ends early or has bytes after its last record.
    #[error("state file truncated or with trailing bytes at offset {0}")]
    Length(usize),
    /// Occurs when a field holds a value no stopping instance writes: the file was damaged
    /// or forged.
    #[error("state file field `{field}` invalid at offset {offset}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Where.
        offset: usize,
    },
    /// Occurs when the file holds more connections than this instance's table.
    #[error("state file holds {0} connections, more than --max-connections")]
    TooMany(u32),
}

/// One connection as handed over (the tracker builds and consumes these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Client end.
    pub client: SocketAddr,
    /// Server end.
    pub server: SocketAddr,
    /// Per direction (`Dir::index`): where the stream resumes, if on a line boundary.
    pub resume: [Option<u32>; 2],
    /// Per direction: a FIN was seen.
    pub fin: [bool; 2],
    /// The session, in its own encoding (`Session::encode`).
    pub session: SessionRecord,
    /// Per direction: the last announcement's line end and hole.
    pub last_hole: [Option<(u32, HoleSpec)>; 2],
}

pub use crate::tracker::session::SessionRecord;

/// Writes `records` as a hand-over file.
pub fn encode(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::with_capacity(13 + records.len() * 96);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(
        &u32::try_from(records.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    for r in records {
        put_addr(&mut out, r.client.ip(), r.client.port());
        put_addr(&mut out, r.server.ip(), r.server.port());
        for resume in r.resume {
            put_opt(&mut out, resume);
        }
        out.push(u8::from(r.fin[0]) | u8::from(r.fin[1]) << 1);
        out.push(u8::from(r.session.tls_seen) | u8::from(r.session.after_loss) << 1);
        out.push(r.session.multiline);
        out.extend_from_slice(&r.session.code.to_be_bytes());
        out.push(u8::try_from(r.session.outstanding.len()).unwrap_or(u8::MAX));
        for (kind, end_seq) in &r.session.outstanding {
            out.push(*kind);
            out.extend_from_slice(&end_seq.to_be_bytes());
        }
        for hole in r.last_hole {
            match hole {
                None => out.push(0),
                Some((end_seq, spec)) => {
                    out.push(1);
                    out.extend_from_slice(&end_seq.to_be_bytes());
                    out.push(match spec.mode {
                        Mode::Passive => 0,
                        Mode::Active => 1,
                    });
                    put_addr(&mut out, spec.src, 0);
                    put_addr(&mut out, spec.dst, spec.dport);
                }
            }
        }
    }
    out
}

fn put_addr(out: &mut Vec<u8>, ip: IpAddr, port: u16) {
    let mut bytes = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => {
            out.push(4);
            bytes[..4].copy_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.push(6);
            bytes = v6.octets();
        }
    }
    out.extend_from_slice(&bytes);
    out.extend_from_slice(&port.to_be_bytes());
}

fn put_opt(out: &mut Vec<u8>, value: Option<u32>) {
    match value {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

/// A bounds-checked cursor over untrusted bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], StateError> {
        let end = self.at.checked_add(n).ok_or(StateError::Length(self.at))?;
        let slice = self
            .bytes
            .get(self.at..end)
            .ok_or(StateError::Length(self.at))?;
        self.at = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, StateError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, StateError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, StateError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn invalid(&self, field: &'static str) -> StateError {
        StateError::Invalid {
            field,
            offset: self.at,
        }
    }

    fn flag(&mut self, field: &'static str) -> Result<bool, StateError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.invalid(field)),
        }
    }

    fn addr(&mut self, field: &'static str) -> Result<SocketAddr, StateError> {
        let family = self.u8()?;
        let raw: [u8; 16] = self.take(16)?.try_into().map_err(|_| self.invalid(field))?;
        let port = self.u16()?;
        let ip = match family {
            4 if raw[4..].iter().all(|&b| b == 0) => {
                IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
            }
            6 => IpAddr::V6(Ipv6Addr::from(raw)),
            _ => return Err(self.invalid(field)),
        };
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(self.invalid(field));
        }
        Ok(SocketAddr::new(ip, port))
    }

    fn opt(&mut self, field: &'static str) -> Result<Option<u32>, StateError> {
        Ok(if self.flag(field)? {
            Some(self.u32()?)
        } else {
            None
        })
    }
}

/// Reads a hand-over file, validating every field as untrusted input; at most `max`
/// connections. All or nothing.
///
/// # Errors
/// [`StateError`] naming the first problem and its offset.
pub fn decode(bytes: &[u8], max: usize) -> Result<Vec<Record>, StateError> {
    let mut r = Reader { bytes, at: 0 };
    if r.take(MAGIC.len()).map_err(|_| StateError::NotState)? != MAGIC {
        return Err(StateError::NotState);
    }
    let version = r.u8()?;
    if version != VERSION {
        return Err(StateError::Version(version));
    }
    let count = r.u32()?;
    if usize::try_from(count).map_or(true, |c| c > max) {
        return Err(StateError::TooMany(count));
    }
    let mut records = Vec::new();
    for _ in 0..count {
        let client = r.addr("client")?;
        let server = r.addr("server")?;
        if client.is_ipv4() != server.is_ipv4() || client.ip() == server.ip() {
            return Err(r.invalid("endpoints"));
        }
        let resume = [r.opt("resume")?, r.opt("resume")?];
        let fin_bits = r.u8()?;
        if fin_bits > 3 {
            return Err(r.invalid("fin"));
        }
        let flags = r.u8()?;
        if flags > 3 {
            return Err(r.invalid("session flags"));
        }
        let (tls_seen, after_loss) = (flags & 1 != 0, flags & 2 != 0);
        let multiline = r.u8()?;
        let code = r.u16()?;
        let code_ok = match multiline {
            0 | 2 => code == 0,
            1 => (100..=599).contains(&code),
            _ => false,
        };
        if !code_ok {
            return Err(r.invalid("multiline"));
        }
        let n = r.u8()?;
        if usize::from(n) > crate::tracker::session::MAX_OUTSTANDING {
            return Err(r.invalid("outstanding"));
        }
        let mut outstanding = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            let kind = r.u8()?;
            if kind > 4 {
                return Err(r.invalid("outstanding kind"));
            }
            outstanding.push((kind, r.u32()?));
        }
        let mut last_hole = [None, None];
        for slot in &mut last_hole {
            if !r.flag("hole")? {
                continue;
            }
            let end_seq = r.u32()?;
            let mode = match r.u8()? {
                0 => Mode::Passive,
                1 => Mode::Active,
                _ => return Err(r.invalid("hole mode")),
            };
            let src = r.addr("hole src")?;
            let dst = r.addr("hole dst")?;
            // Invariant 3, checked again: a handed-over announcement can only ever re-arm
            // a hole between the two endpoints, the right way round, to a high port.
            let (want_src, want_dst) = match mode {
                Mode::Passive => (client.ip(), server.ip()),
                Mode::Active => (server.ip(), client.ip()),
            };
            if src.ip() != want_src || dst.ip() != want_dst || src.port() != 0 {
                return Err(r.invalid("hole endpoints"));
            }
            if dst.port() < MIN_DATA_PORT {
                return Err(r.invalid("hole port"));
            }
            *slot = Some((
                end_seq,
                HoleSpec {
                    mode,
                    src: src.ip(),
                    dst: dst.ip(),
                    dport: dst.port(),
                },
            ));
        }
        records.push(Record {
            client,
            server,
            resume,
            fin: [fin_bits & 1 != 0, fin_bits & 2 != 0],
            session: SessionRecord {
                tls_seen,
                after_loss,
                multiline,
                code,
                outstanding,
            },
            last_hole,
        });
    }
    if r.at != bytes.len() {
        return Err(StateError::Length(r.at));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Record {
        Record {
            client: "[2001:db8:1::10]:40000".parse().unwrap(),
            server: "[2001:db8:2::21]:21".parse().unwrap(),
            resume: [Some(1234), None],
            fin: [false, true],
            session: SessionRecord {
                tls_seen: false,
                after_loss: true,
                multiline: 1,
                code: 213,
                outstanding: vec![(4, 1234), (0, 1240)],
            },
            last_hole: [
                None,
                Some((
                    99,
                    HoleSpec {
                        mode: Mode::Passive,
                        src: "2001:db8:1::10".parse().unwrap(),
                        dst: "2001:db8:2::21".parse().unwrap(),
                        dport: 50000,
                    },
                )),
            ],
        }
    }

    #[test]
    fn records_round_trip() {
        let bytes = encode(&[sample(), sample()]);
        assert_eq!(decode(&bytes, 10).unwrap(), [sample(), sample()]);
        assert_eq!(decode(&encode(&[]), 0).unwrap(), []);
    }

    #[test]
    fn damaged_or_forged_files_are_rejected_whole() {
        let good = encode(&[sample()]);
        assert_eq!(decode(b"garbage", 10), Err(StateError::NotState));
        let mut version = good.clone();
        version[8] = 1;
        assert_eq!(decode(&version, 10), Err(StateError::Version(1)));
        assert!(matches!(
            decode(&good[..good.len() - 1], 10),
            Err(StateError::Length(_))
        ));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(decode(&trailing, 10), Err(StateError::Length(_))));
        assert_eq!(decode(&good, 0), Err(StateError::TooMany(1)));
        // A hole that would lead to a third host: the bounce the live engine refuses.
        let mut bounce = sample();
        bounce.last_hole[1].as_mut().unwrap().1.dst = "2001:db8:9::66".parse().unwrap();
        assert!(matches!(
            decode(&encode(&[bounce]), 10),
            Err(StateError::Invalid {
                field: "hole endpoints",
                ..
            })
        ));
        let mut low = sample();
        low.last_hole[1].as_mut().unwrap().1.dport = 22;
        assert!(matches!(
            decode(&encode(&[low]), 10),
            Err(StateError::Invalid {
                field: "hole port",
                ..
            })
        ));
    }

    proptest! {
        /// Any bytes decode or fail with an error; never a panic, never an allocation
        /// beyond the input's size.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes, 4);
        }

        /// Flipping any one byte of a valid file either still decodes or is rejected.
        #[test]
        fn flipped_bytes_are_decoded_or_rejected(at in 0usize..140, value: u8) {
            let mut bytes = encode(&[sample()]);
            if at < bytes.len() {
                bytes[at] = value;
            }
            let _ = decode(&bytes, 4);
        }
    }
}
