//! Reads pcap and pcapng files, one packet at a time, with the byte offset of every record.
//!
//! pcap-parser does the block syntax (both formats, both byte orders, pcapng sections);
//! this module keeps the bookkeeping it leaves to its caller: the interfaces of the current
//! section, their link types and timestamp units, and where in the file each record starts,
//! so that every error names a byte offset. The input is untrusted: a truncated or corrupt
//! file is an [`Error`], never a panic, and no record may make it allocate more than
//! [`MAX_BLOCK`].

use std::cell::RefCell;
use std::fmt;
use std::io::{self, Read};
use std::rc::Rc;

use pcap_parser::traits::PcapReaderIterator;
use pcap_parser::{Block, LegacyPcapReader, PcapBlockOwned, PcapError, PcapNGReader};

use super::link::LinkType;

/// The reader's buffer to begin with; it grows for larger records.
const INITIAL_BUFFER: usize = 256 * 1024;

/// The largest record read. libpcap never captures more than 256 KiB of a packet
/// (`MAXIMUM_SNAPLEN`); a record claiming more than this is taken as corrupt.
pub const MAX_BLOCK: usize = 16 * 1024 * 1024;

/// Nanoseconds per second.
const NANOS: i128 = 1_000_000_000;

/// The two file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// libpcap's classic format, microsecond or nanosecond timestamps, either byte order.
    Pcap,
    /// pcapng.
    Pcapng,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Pcap => "pcap",
            Format::Pcapng => "pcapng",
        })
    }
}

/// One captured packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// Where its record starts in the file.
    pub offset: u64,
    /// When it was captured, in nanoseconds since the Unix epoch; `None` for a pcapng
    /// Simple Packet Block, which has no timestamp.
    pub time: Option<i128>,
    /// Its link layer.
    pub link: LinkType,
    /// The captured bytes, from the link-layer header on.
    pub data: &'a [u8],
    /// Whether the capture kept fewer bytes than the packet had (the snap length).
    pub cut: bool,
}

/// Why the capture cannot be read on. `offset` is where the record that failed starts.
#[derive(Debug)]
pub enum Error {
    /// Neither a pcap nor a pcapng file.
    NotACapture {
        /// The first bytes, for the message.
        magic: Vec<u8>,
    },
    /// The file ends inside a record.
    Truncated {
        /// Start of the incomplete record.
        offset: u64,
        /// How many bytes of it there are.
        have: usize,
    },
    /// A record that does not parse, or refers to something that is not there.
    Corrupt {
        /// Start of the record.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// A link-layer type `--replay` does not read.
    UnknownLinkType {
        /// Start of the pcap file header or of the pcapng Interface Description Block.
        offset: u64,
        /// The registry number.
        code: u32,
    },
    /// Reading the file failed.
    Io {
        /// Where reading stopped.
        offset: u64,
        /// The error.
        error: io::Error,
    },
}

impl Error {
    /// The byte offset the error is about.
    pub fn offset(&self) -> u64 {
        match self {
            Error::NotACapture { .. } => 0,
            Error::Truncated { offset, .. }
            | Error::Corrupt { offset, .. }
            | Error::UnknownLinkType { offset, .. }
            | Error::Io { offset, .. } => *offset,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotACapture { magic } if magic.is_empty() => {
                write!(f, "byte offset 0: empty file, not a pcap or pcapng capture")
            }
            Error::NotACapture { magic } => write!(
                f,
                "byte offset 0: not a pcap or pcapng capture (it starts with {})",
                magic
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            Error::Truncated { offset, have } => write!(
                f,
                "byte offset {offset}: truncated capture: the file ends {have} bytes into a record"
            ),
            Error::Corrupt { offset, what } => {
                write!(f, "byte offset {offset}: corrupt capture: {what}")
            }
            Error::UnknownLinkType { offset, code } => write!(
                f,
                "byte offset {offset}: link type {code} is not one --replay reads ({})",
                LinkType::SUPPORTED
            ),
            Error::Io { offset, error } => write!(f, "byte offset {offset}: read error: {error}"),
        }
    }
}

/// An interface of the current pcapng section (or the one of a pcap file).
#[derive(Debug, Clone, Copy)]
struct Interface {
    link: LinkType,
    /// Timestamp units per second.
    units: u64,
    /// Seconds added to every timestamp (pcapng `if_tsoffset`).
    offset_secs: i64,
    /// Snap length, 0 for none.
    snaplen: u32,
}

/// Units per second of a pcapng `if_tsresol` value: a power of ten, or with the top bit set
/// a power of two (pcapng §4.2). `None` when the unit does not fit in 64 bits.
fn ts_units(tsresol: u8) -> Option<u64> {
    let exponent = u32::from(tsresol & 0x7f);
    if tsresol & 0x80 == 0 {
        10u64.checked_pow(exponent)
    } else {
        1u64.checked_shl(exponent).filter(|_| exponent < 64)
    }
}

/// A timestamp of `ticks` units of `1/units` s, plus `offset_secs`, in nanoseconds.
fn nanos(ticks: u64, units: u64, offset_secs: i64) -> i128 {
    let units = i128::from(units.max(1));
    let ticks = i128::from(ticks);
    // i128 holds 2^64 * 10^9 with room to spare.
    i128::from(offset_secs) * NANOS + ticks / units * NANOS + ticks % units * NANOS / units
}

/// A [`Read`] that fills the buffer it is given as far as the input allows (pcap-parser
/// takes a short read for the end of a header), and keeps the last error, which
/// pcap-parser reduces to `ReadError`.
struct Keep<R> {
    inner: R,
    error: Rc<RefCell<Option<io::Error>>>,
}

impl<R: Read> Read for Keep<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let copy = io::Error::new(e.kind(), e.to_string());
                    *self.error.borrow_mut() = Some(e);
                    return Err(copy);
                }
            }
        }
        Ok(filled)
    }
}

/// Reads up to `n` bytes, fewer only at the end of the input.
fn read_head(input: &mut impl Read, n: usize) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(n);
    input.take(n as u64).read_to_end(&mut head)?;
    Ok(head)
}

const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// The pcap magic numbers (libpcap's sf-pcap.c), as the file's first four bytes.
const PCAP_MAGICS: [[u8; 4]; 5] = [
    [0xd4, 0xc3, 0xb2, 0xa1], // microseconds, little-endian
    [0xa1, 0xb2, 0xc3, 0xd4], // microseconds, big-endian
    [0x4d, 0x3c, 0xb2, 0xa1], // nanoseconds, little-endian
    [0xa1, 0xb2, 0x3c, 0x4d], // nanoseconds, big-endian
    [0x34, 0xcd, 0xb2, 0xa1], // Alexey Kuznetsov's "modified" format, little-endian
];

/// Reads the capture in `input` and calls `on_packet` for every packet, in file order.
/// Returns the file's format once it has been read to the end.
///
/// # Errors
/// [`Error`] for a file that is not a capture, is truncated or corrupt, or uses a link type
/// that [`LinkType`] does not know; `on_packet`'s own error, converted, stops the read too.
pub fn read<R, E>(
    mut input: R,
    mut on_packet: impl FnMut(Format, Packet<'_>) -> Result<(), E>,
) -> Result<Format, E>
where
    R: Read,
    E: From<Error>,
{
    let head = read_head(&mut input, 4).map_err(|error| Error::Io { offset: 0, error })?;
    let format = if head == PCAPNG_MAGIC {
        Format::Pcapng
    } else if PCAP_MAGICS.iter().any(|m| m[..] == head[..]) {
        Format::Pcap
    } else {
        return Err(Error::NotACapture { magic: head }.into());
    };
    let error = Rc::new(RefCell::new(None));
    let input = Keep {
        inner: io::Cursor::new(head).chain(input),
        error: Rc::clone(&error),
    };
    let opened = match format {
        Format::Pcap => LegacyPcapReader::new(INITIAL_BUFFER, input)
            .map(|r| Box::new(r) as Box<dyn PcapReaderIterator>),
        Format::Pcapng => PcapNGReader::new(INITIAL_BUFFER, input)
            .map(|r| Box::new(r) as Box<dyn PcapReaderIterator>),
    };
    let mut reader = match opened {
        Ok(reader) => reader,
        Err(e) => return Err(header_error(&e, &error).into()),
    };

    let mut interfaces: Vec<Interface> = Vec::new();
    let mut legacy_nanos = false;
    let mut big_endian = false;
    let mut capacity = INITIAL_BUFFER;
    loop {
        let offset = reader.consumed() as u64;
        if format == Format::Pcapng {
            check_block_length(reader.data(), big_endian, offset)?;
        }
        match reader.next() {
            Ok((len, block)) => {
                match block {
                    PcapBlockOwned::LegacyHeader(header) => {
                        // The upper bits may carry FCS information (pcap spec, LinkType field).
                        let code = (header.network.0 as u32) & 0xffff;
                        let link = LinkType::from_code(code)
                            .ok_or(Error::UnknownLinkType { offset: 20, code })?;
                        legacy_nanos = header.is_nanosecond_precision();
                        interfaces = vec![Interface {
                            link,
                            units: if legacy_nanos {
                                1_000_000_000
                            } else {
                                1_000_000
                            },
                            offset_secs: 0,
                            snaplen: header.snaplen,
                        }];
                    }
                    PcapBlockOwned::Legacy(record) => {
                        // pcap-parser hands out the file header first.
                        let interface = *interfaces
                            .first()
                            .ok_or_else(|| no_interface(offset, 0, 0))?;
                        let fraction = u64::from(record.ts_usec);
                        let scale = if legacy_nanos { 1 } else { 1000 };
                        let time = i128::from(record.ts_sec) * NANOS
                            + i128::from(fraction) * i128::from(scale);
                        on_packet(
                            format,
                            Packet {
                                offset,
                                time: Some(time),
                                link: interface.link,
                                data: record.data,
                                cut: record.caplen < record.origlen,
                            },
                        )?;
                    }
                    PcapBlockOwned::NG(Block::SectionHeader(shb)) => {
                        big_endian = shb.big_endian();
                        interfaces.clear();
                    }
                    PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                        let code = u32::from(idb.linktype.0 as u16);
                        let link = LinkType::from_code(code)
                            .ok_or(Error::UnknownLinkType { offset, code })?;
                        let units = ts_units(idb.if_tsresol).ok_or_else(|| Error::Corrupt {
                            offset,
                            what: format!(
                                "interface {} has timestamp resolution {:#04x}, which does not fit in 64 bits",
                                interfaces.len(),
                                idb.if_tsresol
                            ),
                        })?;
                        interfaces.push(Interface {
                            link,
                            units,
                            offset_secs: idb.if_tsoffset,
                            snaplen: idb.snaplen,
                        });
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                        let interface = usize::try_from(epb.if_id)
                            .ok()
                            .and_then(|i| interfaces.get(i))
                            .ok_or_else(|| no_interface(offset, epb.if_id, interfaces.len()))?;
                        let ticks = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                        let caplen = usize::try_from(epb.caplen).unwrap_or(usize::MAX);
                        let data = epb.data.get(..caplen).unwrap_or(epb.data);
                        on_packet(
                            format,
                            Packet {
                                offset,
                                time: Some(nanos(ticks, interface.units, interface.offset_secs)),
                                link: interface.link,
                                data,
                                cut: epb.caplen < epb.origlen,
                            },
                        )?;
                    }
                    PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                        // pcapng §4.4: always interface 0; captured length is the smaller of
                        // the original length and the interface's snap length.
                        let interface = interfaces
                            .first()
                            .ok_or_else(|| no_interface(offset, 0, 0))?;
                        let mut keep = usize::try_from(spb.origlen).unwrap_or(usize::MAX);
                        if interface.snaplen != 0 {
                            keep = keep.min(interface.snaplen as usize);
                        }
                        let data = spb.data.get(..keep).unwrap_or(spb.data);
                        on_packet(
                            format,
                            Packet {
                                offset,
                                time: None,
                                link: interface.link,
                                data,
                                cut: (data.len() as u64) < u64::from(spb.origlen),
                            },
                        )?;
                    }
                    PcapBlockOwned::NG(_) => {}
                }
                reader.consume(len);
            }
            Err(PcapError::Eof) => return Ok(format),
            Err(PcapError::Incomplete(_)) => {
                let before = (reader.data().len(), reader.reader_exhausted());
                refill(&mut *reader, offset, &error)?;
                let after = (reader.data().len(), reader.reader_exhausted());
                if before == after && !grow(&mut *reader, &mut capacity) {
                    return Err(too_large(offset).into());
                }
            }
            Err(PcapError::BufferTooSmall) => {
                if !grow(&mut *reader, &mut capacity) {
                    return Err(too_large(offset).into());
                }
                refill(&mut *reader, offset, &error)?;
            }
            Err(PcapError::UnexpectedEof) => {
                let have = reader.data().len();
                if have == 0 {
                    return Ok(format);
                }
                return Err(Error::Truncated { offset, have }.into());
            }
            Err(PcapError::ReadError) => return Err(io_error(offset, &error).into()),
            Err(e) => {
                let what = match e {
                    PcapError::NomError(_, kind) | PcapError::OwnedNomError(_, kind) => {
                        format!("a record does not parse ({})", kind.description())
                    }
                    other => other.to_string(),
                };
                return Err(Error::Corrupt { offset, what }.into());
            }
        }
    }
}

/// pcapng §3.1: a block is at least 12 bytes (type, two lengths) and a multiple of 4 long.
/// Checked before pcap-parser sees the block: 0.17 subtracts 12 from the length of a
/// Process Information Block that it only checked against 4, which overflows.
fn check_block_length(data: &[u8], big_endian: bool, offset: u64) -> Result<(), Error> {
    const SHB: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];
    let Some(head) = data.get(..8) else {
        return Ok(());
    };
    // A Section Header Block brings its own byte order; its parser checks it.
    if head[..4] == SHB {
        return Ok(());
    }
    let raw = [head[4], head[5], head[6], head[7]];
    let len = if big_endian {
        u32::from_be_bytes(raw)
    } else {
        u32::from_le_bytes(raw)
    };
    if len < 12 || len % 4 != 0 {
        return Err(Error::Corrupt {
            offset,
            what: format!("a block of {len} bytes (at least 12, and a multiple of 4)"),
        });
    }
    Ok(())
}

fn no_interface(offset: u64, id: u32, known: usize) -> Error {
    Error::Corrupt {
        offset,
        what: format!("a packet on interface {id}, but the section describes {known} interface(s)"),
    }
}

fn too_large(offset: u64) -> Error {
    Error::Corrupt {
        offset,
        what: format!(
            "a record longer than {} MiB (a broken length field?)",
            MAX_BLOCK / (1024 * 1024)
        ),
    }
}

fn io_error(offset: u64, kept: &Rc<RefCell<Option<io::Error>>>) -> Error {
    let error = kept
        .borrow_mut()
        .take()
        .unwrap_or_else(|| io::Error::other("read failed"));
    Error::Io { offset, error }
}

fn refill(
    reader: &mut dyn PcapReaderIterator,
    offset: u64,
    kept: &Rc<RefCell<Option<io::Error>>>,
) -> Result<(), Error> {
    reader.refill().map_err(|_| io_error(offset, kept))
}

/// Doubles the reader's buffer, up to [`MAX_BLOCK`]; false when it is that large already.
fn grow(reader: &mut dyn PcapReaderIterator, capacity: &mut usize) -> bool {
    if *capacity >= MAX_BLOCK {
        return false;
    }
    *capacity = (*capacity * 2).min(MAX_BLOCK);
    reader.grow(*capacity)
}

/// The error for a file whose first record, the file header or Section Header Block, does
/// not read.
fn header_error(e: &PcapError<&'static [u8]>, kept: &Rc<RefCell<Option<io::Error>>>) -> Error {
    match e {
        PcapError::Incomplete(_) | PcapError::UnexpectedEof | PcapError::Eof => {
            Error::Truncated { offset: 0, have: 0 }
        }
        PcapError::ReadError => io_error(0, kept),
        PcapError::NomError(_, kind) | PcapError::OwnedNomError(_, kind) => Error::Corrupt {
            offset: 0,
            what: format!("the file header does not parse ({})", kind.description()),
        },
        other => Error::Corrupt {
            offset: 0,
            what: format!("the file header does not parse ({other})"),
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A little-endian microsecond pcap header with link type `link`.
    pub(crate) fn pcap_header(link: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        v.extend_from_slice(&2u16.to_le_bytes());
        v.extend_from_slice(&4u16.to_le_bytes());
        v.extend_from_slice(&0i32.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&262_144u32.to_le_bytes());
        v.extend_from_slice(&link.to_le_bytes());
        v
    }

    /// A little-endian pcap record.
    pub(crate) fn pcap_record(sec: u32, usec: u32, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for n in [sec, usec, data.len() as u32, data.len() as u32] {
            v.extend_from_slice(&n.to_le_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    /// A pcapng block of `kind` with `body` (padded to 32 bits), in the given byte order.
    fn ng_block(kind: u32, body: &[u8], be: bool) -> Vec<u8> {
        let u32b = |n: u32| if be { n.to_be_bytes() } else { n.to_le_bytes() };
        let pad = (4 - body.len() % 4) % 4;
        let len = (12 + body.len() + pad) as u32;
        let mut v = Vec::new();
        v.extend_from_slice(&u32b(kind));
        v.extend_from_slice(&u32b(len));
        v.extend_from_slice(body);
        v.extend(std::iter::repeat_n(0, pad));
        v.extend_from_slice(&u32b(len));
        v
    }

    fn shb(be: bool) -> Vec<u8> {
        let mut body = Vec::new();
        let u16b = |n: u16| if be { n.to_be_bytes() } else { n.to_le_bytes() };
        body.extend_from_slice(&if be {
            0x1a2b_3c4du32.to_be_bytes()
        } else {
            0x1a2b_3c4du32.to_le_bytes()
        });
        body.extend_from_slice(&u16b(1));
        body.extend_from_slice(&u16b(0));
        body.extend_from_slice(&[0xff; 8]); // section length: unknown
        ng_block(0x0a0d_0d0a, &body, be)
    }

    /// An Interface Description Block; `tsresol` adds an `if_tsresol` option.
    fn idb(link: u16, tsresol: Option<u8>, be: bool) -> Vec<u8> {
        let u16b = |n: u16| if be { n.to_be_bytes() } else { n.to_le_bytes() };
        let mut body = Vec::new();
        body.extend_from_slice(&u16b(link));
        body.extend_from_slice(&u16b(0));
        body.extend_from_slice(&if be {
            0u32.to_be_bytes()
        } else {
            0u32.to_le_bytes()
        });
        if let Some(r) = tsresol {
            body.extend_from_slice(&u16b(9)); // if_tsresol
            body.extend_from_slice(&u16b(1));
            body.extend_from_slice(&[r, 0, 0, 0]);
            body.extend_from_slice(&u16b(0)); // opt_endofopt
            body.extend_from_slice(&u16b(0));
        }
        ng_block(1, &body, be)
    }

    fn epb(if_id: u32, ticks: u64, data: &[u8], be: bool) -> Vec<u8> {
        let u32b = |n: u32| if be { n.to_be_bytes() } else { n.to_le_bytes() };
        let mut body = Vec::new();
        body.extend_from_slice(&u32b(if_id));
        body.extend_from_slice(&u32b((ticks >> 32) as u32));
        body.extend_from_slice(&u32b(ticks as u32));
        body.extend_from_slice(&u32b(data.len() as u32));
        body.extend_from_slice(&u32b(data.len() as u32));
        body.extend_from_slice(data);
        body.extend(std::iter::repeat_n(0, (4 - data.len() % 4) % 4));
        ng_block(6, &body, be)
    }

    fn spb(data: &[u8], be: bool) -> Vec<u8> {
        let mut body = if be {
            (data.len() as u32).to_be_bytes().to_vec()
        } else {
            (data.len() as u32).to_le_bytes().to_vec()
        };
        body.extend_from_slice(data);
        ng_block(3, &body, be)
    }

    type Seen = (Format, u64, Option<i128>, LinkType, Vec<u8>, bool);

    fn read_all(bytes: &[u8]) -> Result<Vec<Seen>, Error> {
        let mut seen = Vec::new();
        read(bytes, |format, p: Packet<'_>| {
            seen.push((format, p.offset, p.time, p.link, p.data.to_vec(), p.cut));
            Ok::<(), Error>(())
        })?;
        Ok(seen)
    }

    #[test]
    fn pcap_records_with_offsets_and_microsecond_times() {
        let mut file = pcap_header(1);
        file.extend(pcap_record(1_700_000_000, 250_000, b"frame one"));
        let second = file.len() as u64;
        file.extend(pcap_record(1_700_000_001, 5, b"two"));
        let seen = read_all(&file).unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].0, Format::Pcap);
        assert_eq!(seen[0].1, 24);
        assert_eq!(seen[0].2, Some(1_700_000_000_250_000_000));
        assert_eq!(seen[0].3, LinkType::Ethernet);
        assert_eq!(seen[0].4, b"frame one");
        assert_eq!(seen[1].1, second);
        assert_eq!(seen[1].2, Some(1_700_000_001_000_005_000));
    }

    #[test]
    fn big_endian_nanosecond_pcap() {
        let mut file = Vec::new();
        file.extend_from_slice(&0xa1b2_3c4du32.to_be_bytes());
        file.extend_from_slice(&2u16.to_be_bytes());
        file.extend_from_slice(&4u16.to_be_bytes());
        file.extend_from_slice(&[0; 8]);
        file.extend_from_slice(&65535u32.to_be_bytes());
        file.extend_from_slice(&276u32.to_be_bytes());
        for n in [10u32, 7, 3, 60] {
            file.extend_from_slice(&n.to_be_bytes());
        }
        file.extend_from_slice(b"abc");
        let seen = read_all(&file).unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].2, Some(10 * 1_000_000_000 + 7));
        assert_eq!(seen[0].3, LinkType::LinuxSll2);
        assert!(seen[0].5, "caplen 3 < origlen 60: cut by the snap length");
    }

    #[test]
    fn pcapng_interfaces_resolutions_and_sections() {
        for be in [false, true] {
            let mut file = shb(be);
            file.extend(idb(1, None, be)); // microseconds
            file.extend(idb(113, Some(9), be)); // nanoseconds
            file.extend(idb(101, Some(0x80 | 10), be)); // 1/1024 s
            let first = file.len() as u64;
            file.extend(epb(0, 1_500_000, b"eth", be));
            file.extend(epb(1, 2_000_000_001, b"sll", be));
            file.extend(epb(2, 3 * 1024 + 512, b"raw", be));
            file.extend(spb(b"simple", be));
            // A new section forgets the interfaces of the last one.
            file.extend(shb(be));
            file.extend(idb(276, None, be));
            file.extend(epb(0, 1, b"x", be));
            let seen = read_all(&file).unwrap();
            let times: Vec<_> = seen.iter().map(|s| s.2).collect();
            assert_eq!(
                times,
                [
                    Some(1_500_000_000),
                    Some(2_000_000_001),
                    Some(3_500_000_000),
                    None,
                    Some(1000)
                ],
                "big-endian: {be}"
            );
            let links: Vec<_> = seen.iter().map(|s| s.3).collect();
            assert_eq!(
                links,
                [
                    LinkType::Ethernet,
                    LinkType::LinuxSll,
                    LinkType::Raw,
                    LinkType::Ethernet,
                    LinkType::LinuxSll2
                ]
            );
            assert_eq!(seen[0].1, first);
            assert_eq!(seen[0].4, b"eth", "padding is not part of the packet");
            assert_eq!(seen[3].4, b"simple");
            assert!(seen.iter().all(|s| s.0 == Format::Pcapng));
        }
    }

    #[test]
    fn packet_on_an_undescribed_interface_is_corrupt() {
        let mut file = shb(false);
        file.extend(idb(1, None, false));
        let at = file.len() as u64;
        file.extend(epb(3, 0, b"x", false));
        let err = read_all(&file).unwrap_err();
        assert_eq!(err.offset(), at);
        assert!(err.to_string().contains("interface 3"), "{err}");
        let mut file = shb(false);
        file.extend(spb(b"x", false));
        assert!(matches!(read_all(&file), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn unknown_link_types_name_their_offset() {
        let err = read_all(&pcap_header(147)).unwrap_err();
        assert!(matches!(
            err,
            Error::UnknownLinkType {
                offset: 20,
                code: 147
            }
        ));
        let text = err.to_string();
        assert!(
            text.starts_with("byte offset 20: link type 147 is not one --replay reads"),
            "{text}"
        );
        let mut file = shb(false);
        file.extend(idb(1, None, false));
        let at = file.len() as u64;
        file.extend(idb(220, None, false));
        let err = read_all(&file).unwrap_err();
        assert!(matches!(err, Error::UnknownLinkType { code: 220, .. }));
        assert_eq!(err.offset(), at);
    }

    #[test]
    fn not_a_capture() {
        let err = read_all(b"GET / HTTP/1.1\r\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "byte offset 0: not a pcap or pcapng capture (it starts with 47 45 54 20)"
        );
        let err = read_all(b"").unwrap_err();
        assert!(err.to_string().contains("empty file"), "{err}");
    }

    #[test]
    fn truncated_records_are_reported_where_they_start() {
        let mut file = pcap_header(1);
        file.extend(pcap_record(1, 0, b"complete"));
        let at = file.len();
        file.extend(pcap_record(2, 0, b"incomplete"));
        let err = read_all(&file[..file.len() - 3]).unwrap_err();
        assert!(
            matches!(err, Error::Truncated { offset, have } if offset == at as u64 && have == 23),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("byte offset {at}: truncated capture: the file ends 23 bytes into a record")
        );
        // Only part of the file header.
        assert!(matches!(
            read_all(&file[..10]),
            Err(Error::Truncated { offset: 0, .. })
        ));
    }

    /// Every prefix of a valid capture, in both formats, reads without a panic: either to
    /// the end (a prefix that ends between records) or to an error inside the prefix.
    #[test]
    fn every_prefix_reads_or_fails_cleanly() {
        let mut pcap = pcap_header(1);
        pcap.extend(pcap_record(1, 0, b"one"));
        pcap.extend(pcap_record(2, 0, b"second frame"));
        let mut ng = shb(false);
        ng.extend(idb(1, Some(9), false));
        ng.extend(epb(0, 5, b"one", false));
        ng.extend(spb(b"two", false));
        for file in [pcap, ng] {
            for cut in 0..=file.len() {
                match read_all(&file[..cut]) {
                    Ok(seen) => assert!(seen.iter().all(|s| s.1 < cut as u64)),
                    Err(e) => assert!(e.offset() <= cut as u64, "{cut}: {e}"),
                }
            }
        }
    }

    #[test]
    fn an_absurd_record_length_is_refused_without_reading_it() {
        let mut file = pcap_header(1);
        for n in [1u32, 0, u32::MAX - 8, 100] {
            file.extend_from_slice(&n.to_le_bytes());
        }
        file.extend_from_slice(&[0; 64]);
        let err = read_all(&file).unwrap_err();
        assert_eq!(err.offset(), 24);
        let mut ng = shb(false);
        ng.extend(idb(1, None, false));
        let at = ng.len() as u64;
        ng.extend_from_slice(&6u32.to_le_bytes());
        ng.extend_from_slice(&0x4000_0000u32.to_le_bytes());
        ng.extend_from_slice(&[0; 40]);
        assert_eq!(read_all(&ng).unwrap_err().offset(), at);
    }

    /// Found by the fuzz target: pcap-parser 0.17 underflowed on this Process Information
    /// Block of length 8.
    #[test]
    fn short_or_misaligned_blocks_are_corrupt() {
        let mut file = shb(false);
        let at = file.len() as u64;
        file.extend_from_slice(&0x8000_0001u32.to_le_bytes());
        file.extend_from_slice(&8u32.to_le_bytes());
        file.extend_from_slice(&[0; 12]);
        let err = read_all(&file).unwrap_err();
        assert_eq!(err.offset(), at);
        assert!(err.to_string().contains("a block of 8 bytes"), "{err}");
        let mut file = shb(true);
        file.extend_from_slice(&6u32.to_be_bytes());
        file.extend_from_slice(&14u32.to_be_bytes());
        file.extend_from_slice(&[0; 12]);
        assert!(read_all(&file)
            .unwrap_err()
            .to_string()
            .contains("14 bytes"));
        // The fuzzer's own input.
        let crash = b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00\x4d\x3c\x2b\x1a\x01\x00\x00\x00\
            \xff\xff\xff\xff\xff\xff\xff\xff\x20\x00\x00\x00\x01\x00\x00\x80\x06\x00\x00\x00\
            \x00\x00\x00\x00\x00";
        assert!(matches!(read_all(crash), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn resolution_and_offsets() {
        assert_eq!(ts_units(6), Some(1_000_000));
        assert_eq!(ts_units(9), Some(1_000_000_000));
        assert_eq!(ts_units(19), Some(10_000_000_000_000_000_000));
        assert_eq!(ts_units(20), None);
        assert_eq!(ts_units(0x80 | 20), Some(1 << 20));
        assert_eq!(ts_units(0x80 | 63), Some(1 << 63));
        assert_eq!(ts_units(0x80 | 64), None);
        assert_eq!(ts_units(0xff), None);
        assert_eq!(nanos(1_500_000, 1_000_000, 0), 1_500_000_000);
        assert_eq!(nanos(1, 1, -2), -1_000_000_000);
        assert!(nanos(u64::MAX, 1, i64::MAX) > 0);
    }

    #[test]
    fn pcapng_tsresol_that_does_not_fit_is_corrupt() {
        let mut file = shb(false);
        file.extend(idb(1, Some(25), false));
        let err = read_all(&file).unwrap_err();
        assert!(err.to_string().contains("timestamp resolution"), "{err}");
    }

    #[test]
    fn read_errors_keep_their_cause() {
        struct Failing(Vec<u8>);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() {
                    return Err(io::Error::other("disk on fire"));
                }
                let n = buf.len().min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0.drain(..n);
                Ok(n)
            }
        }
        let mut file = pcap_header(1);
        file.extend(pcap_record(1, 0, b"one"));
        file.extend_from_slice(&[1, 2, 3]);
        let err = read(Failing(file), |_, _| Ok::<(), Error>(())).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("disk on fire"), "{err}");
    }
}
