//! `ftp6proxy --replay FILE`: the engine over a capture, explaining every hole and refusal
//! and checking every data connection against the holes.
//!
//! The operator's answer to "why did this transfer fail?" from a `tcpdump -w`, and this
//! project's harness for real traffic. It reads a pcap or pcapng file ([`capture`]), takes
//! each frame down to its IP packet ([`link`]), and feeds every TCP segment to or from an FTP
//! port (`--ftp-ports`) to a core [`Engine`] built from the command line (`-t`, `-b`, `-c`),
//! with the capture's own timestamps as the engine's clock: the first packet is a fixed
//! origin, packets are replayed in timestamp order ([`order`]: a capture of several
//! interfaces is not in file order), and time never goes backwards (a packet stamped
//! earlier than one already replayed counts as simultaneous with it). Every hole the engine
//! asks for counts as installed at once.
//!
//! Each SYN without ACK between the two ends of a control connection seen so far, to a port
//! that is not an FTP port, is a data connection; [`matcher`] says whether a hole let it
//! through. One line per event and per data connection goes to the report, a summary line
//! ends it, and the [`Verdict`] says how it went: [`Verdict::exit_code`] is 1 when a data
//! connection would have been blocked.
//!
//! Checksums: a capture taken where the packets were sent (or forwarded over a veth pair)
//! holds segments whose TCP checksum is only the pseudo-header sum, left for the NIC to
//! finish. Those are read as the kernel would hand them to the daemon (NFQUEUE's "checksum
//! not ready"); any other wrong checksum makes the engine ignore the segment, as the receiver
//! would.

pub mod capture;
pub mod link;
pub mod matcher;
pub mod order;

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use ftp6proxy_core::engine::Checksum;
use ftp6proxy_core::wire::{self, Segment};
use ftp6proxy_core::{Counters, Engine, Event};

use crate::cli::{Foreground, Settings};
use capture::{Format, Packet};
use link::Skip;
use matcher::{DataConn, DataConns, Firewall, Hole, Miss, Passage, SynSeen};
use order::Reorder;

/// Exit status when a data connection in the capture would have been blocked.
pub const EX_BLOCKED: i32 = 1;
/// EX_DATAERR (sysexits(3)): the capture is truncated or corrupt, or of an unknown link type.
pub const EX_DATAERR: i32 = 65;
/// EX_NOINPUT (sysexits(3)): the capture cannot be opened.
pub const EX_NOINPUT: i32 = 66;
/// EX_IOERR (sysexits(3)): reading the capture or writing the report failed.
pub const EX_IOERR: i32 = 74;

/// Why a replay stopped before the end of the capture.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file cannot be opened.
    #[error("{file}: {error}")]
    Open {
        /// The file as given.
        file: String,
        /// Why.
        error: io::Error,
    },
    /// The capture is not one, is truncated or corrupt, uses an unknown link type, or
    /// reading it failed.
    #[error("{file}: {error}")]
    Capture {
        /// The file as given.
        file: String,
        /// What and where.
        error: capture::Error,
    },
    /// Writing the report failed.
    #[error("writing the report: {0}")]
    Output(io::Error),
}

impl Error {
    /// The exit status for it (sysexits(3)).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Open { .. } => EX_NOINPUT,
            Error::Capture {
                error: capture::Error::Io { .. },
                ..
            }
            | Error::Output(_) => EX_IOERR,
            Error::Capture { .. } => EX_DATAERR,
        }
    }
}

/// How the replay went.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The capture's format.
    pub format: Format,
    /// Packets in the capture.
    pub packets: u64,
    /// TCP segments to or from an FTP port, fed to the engine.
    pub control_packets: u64,
    /// Data connections, in the order their first SYN was seen.
    pub data: Vec<DataConn>,
    /// Holes closed, or still open at the end, that no data connection used.
    pub unused_holes: u64,
    /// Control segments whose checksum was the pseudo-header sum of checksum offload.
    pub offloaded_checksums: u64,
    /// Packets the capture kept only part of (the snap length).
    pub cut_packets: u64,
    /// Frames that carried no IP packet, or were too short for their link-layer header.
    pub not_ip: u64,
    /// Packets stamped earlier than one before them in the file (several interfaces),
    /// replayed in time order.
    pub reordered: u64,
    /// The engine's counters at the end.
    pub counters: Counters,
}

impl Verdict {
    /// Data connections that would have been blocked.
    pub fn blocked(&self) -> usize {
        self.data.iter().filter(|d| !d.passage.passed()).count()
    }

    /// Data connections that would have passed (maybe after a retransmitted SYN).
    pub fn passed(&self) -> usize {
        self.data.len() - self.blocked()
    }

    /// Announcements the engine refused, of every reason.
    pub fn refused(&self) -> u64 {
        self.counters.denied.iter().sum()
    }

    /// 0 when every data connection found a hole, [`EX_BLOCKED`] otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.blocked() == 0 {
            0
        } else {
            EX_BLOCKED
        }
    }
}

impl fmt::Display for Verdict {
    /// The summary line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "summary: packets={} control={} data={} passed={} blocked={} holes={} \
             unused={} rearmed={} refused={} malformed={}",
            self.packets,
            self.control_packets,
            self.data.len(),
            self.passed(),
            self.blocked(),
            self.counters.holes_opened,
            self.unused_holes,
            self.counters.holes_rearmed,
            self.refused(),
            self.counters.malformed
        )
    }
}

/// Replays the capture in `path` (`-`: standard input) with `settings`, writing the report
/// to `out`.
///
/// # Errors
/// [`Error`] when the file cannot be opened or read to its end, or `out` fails. What was
/// replayed up to there has been written to `out`.
pub fn run(path: &Path, settings: &Settings, out: &mut impl Write) -> Result<Verdict, Error> {
    if path == Path::new("-") {
        return run_reader("(standard input)", io::stdin().lock(), settings, out);
    }
    let file_name = path.display().to_string();
    let file = File::open(path).map_err(|error| Error::Open {
        file: file_name.clone(),
        error,
    })?;
    run_reader(&file_name, io::BufReader::new(file), settings, out)
}

/// Replays the capture read from `input`; `name` names it in errors.
///
/// # Errors
/// As [`run`].
pub fn run_reader(
    name: &str,
    input: impl Read,
    settings: &Settings,
    out: &mut impl Write,
) -> Result<Verdict, Error> {
    let mut replay = Replay::new(name, settings, out);
    let read = capture::read(input, |format, packet| replay.packet(format, packet));
    match read {
        Ok(format) => replay.finish(format).map_err(Error::Output),
        Err(Stop::Capture(error)) => {
            // What was read before the damage is replayed and reported first.
            replay.flush().map_err(Error::Output)?;
            Err(Error::Capture {
                file: name.to_string(),
                error,
            })
        }
        Err(Stop::Output(error)) => Err(Error::Output(error)),
    }
}

/// The command line's `--replay FILE`: the report on stdout, an error line on stderr, and
/// the exit status.
pub fn main(path: &Path, settings: &Settings) -> i32 {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let result = run(path, settings, &mut out);
    let flushed = out.flush();
    drop(out);
    match (result, flushed) {
        (Ok(verdict), Ok(())) => verdict.exit_code(),
        (Ok(_), Err(error)) => {
            eprintln!("ftp6proxy: {}", Error::Output(error));
            EX_IOERR
        }
        (Err(error), _) => {
            eprintln!("ftp6proxy: {error}");
            error.exit_code()
        }
    }
}

/// What stops the read: the capture's fault or the report's.
enum Stop {
    Capture(capture::Error),
    Output(io::Error),
}

impl From<capture::Error> for Stop {
    fn from(error: capture::Error) -> Stop {
        Stop::Capture(error)
    }
}

impl From<io::Error> for Stop {
    fn from(error: io::Error) -> Stop {
        Stop::Output(error)
    }
}

/// The capture's timestamps as offsets from its first packet, never going backwards.
#[derive(Debug, Default, Clone, Copy)]
pub struct Clock {
    first: Option<i128>,
    last: Duration,
}

impl Clock {
    /// The offset of a packet stamped `time` (ns since the epoch); `None` (no timestamp)
    /// and times before the last one give the last offset again.
    pub fn at(&mut self, time: Option<i128>) -> Duration {
        if let Some(time) = time {
            let first = *self.first.get_or_insert(time);
            let since = time.saturating_sub(first);
            let since = if since <= 0 {
                0
            } else {
                u64::try_from(since).unwrap_or(u64::MAX)
            };
            self.last = self.last.max(Duration::from_nanos(since));
        }
        self.last
    }
}

/// `+S.UUUUUU`: an offset from the first packet, to the microsecond.
pub struct Stamp(pub Duration);

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{}.{:06}", self.0.as_secs(), self.0.subsec_micros())
    }
}

/// A capture timestamp as UTC, `2026-01-31T12:00:00.123456Z`; `None` outside years
/// 1970..=9999.
pub fn utc(nanos: i128) -> Option<String> {
    const DAY: i128 = 86_400;
    if nanos < 0 {
        return None;
    }
    let secs = nanos / 1_000_000_000;
    let micros = (nanos % 1_000_000_000) / 1000;
    let (days, rest) = (secs / DAY, secs % DAY);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i128::from(month <= 2);
    if year > 9999 {
        return None;
    }
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    ))
}

/// How the engine must treat a control segment's checksum, and whether it carries the
/// partial checksum of checksum offload: the folded pseudo-header sum (RFC 9293 §3.1,
/// RFC 8200 §8.1) that Linux (`tcp_v4_send_check`, `tcp_v6_send_check`) and FreeBSD
/// (`in_pseudo`, `in6_cksum_pseudo`) leave in the field for the NIC to complete.
pub fn checksum_for(segment: &Segment<'_>) -> (Checksum, bool) {
    if segment.payload.is_empty() || segment.checksum_valid() {
        return (Checksum::Verify, false);
    }
    let Some(field) = segment.tcp_bytes.get(16..18) else {
        return (Checksum::Verify, false);
    };
    let field = u16::from_be_bytes([field[0], field[1]]);
    let len = segment.tcp_bytes.len() as u64;
    let words = |bytes: &[u8]| -> u64 {
        bytes
            .chunks(2)
            .map(|w| u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
            .sum()
    };
    let mut sum = match (segment.src, segment.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => words(&s.octets()) + words(&d.octets()),
        (IpAddr::V6(s), IpAddr::V6(d)) => words(&s.octets()) + words(&d.octets()),
        _ => return (Checksum::Verify, false),
    };
    sum += 6 + (len >> 16) + (len & 0xffff);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let partial = sum as u16;
    // One's complement has two zeros.
    let same = field == partial || (field | partial == 0xffff && (field == 0 || partial == 0));
    if same {
        (Checksum::NotReady, true)
    } else {
        (Checksum::Verify, false)
    }
}

/// One replay in progress.
struct Replay<'o, W: Write> {
    name: String,
    out: &'o mut W,
    engine: Engine,
    ftp_ports: Vec<u16>,
    verbose: bool,
    origin: Instant,
    last_tick: Instant,
    clock: Clock,
    firewall: Firewall,
    data: DataConns,
    started: bool,
    format: Format,
    pending: Reorder<(Option<i128>, Vec<u8>)>,
    packets: u64,
    control: u64,
    unused: u64,
    offloaded: u64,
    cut: u64,
    not_ip: u64,
    not_tcp: u64,
}

impl<'o, W: Write> Replay<'o, W> {
    fn new(name: &str, settings: &Settings, out: &'o mut W) -> Replay<'o, W> {
        // The one real instant: the origin the capture's offsets are added to.
        let origin = Instant::now();
        Replay {
            name: name.to_string(),
            out,
            engine: Engine::new(settings.engine.clone()),
            ftp_ports: settings.engine.ftp_ports.clone(),
            verbose: settings.foreground != Foreground::No,
            origin,
            last_tick: origin,
            clock: Clock::default(),
            firewall: Firewall::new(),
            data: DataConns::new(),
            started: false,
            format: Format::Pcap,
            pending: Reorder::new(),
            packets: 0,
            control: 0,
            unused: 0,
            offloaded: 0,
            cut: 0,
            not_ip: 0,
            not_tcp: 0,
        }
    }

    /// Reads one packet of the capture, in file order: counts it, and keeps it for
    /// [`Replay::process`] if it is a control segment or a SYN.
    fn packet(&mut self, format: Format, packet: Packet<'_>) -> Result<(), Stop> {
        self.format = format;
        self.packets += 1;
        if packet.cut {
            self.cut += 1;
        }
        let ip = match link::ip_packet(packet.link, packet.data) {
            Ok(ip) => ip,
            Err(Skip::NotIp | Skip::Short) => {
                self.not_ip += 1;
                return Ok(());
            }
        };
        let Ok(segment) = wire::parse(ip) else {
            self.not_tcp += 1;
            return Ok(());
        };
        let control = self.ftp_ports.contains(&segment.dst_port)
            || self.ftp_ports.contains(&segment.src_port);
        if control || (segment.flags.syn && !segment.flags.ack) {
            self.pending.push(packet.time, (packet.time, ip.to_vec()));
            while let Some((time, ip)) = self.pending.pop_ready() {
                self.process(time, &ip)?;
            }
        }
        Ok(())
    }

    /// Replays everything still waiting for its turn.
    fn flush(&mut self) -> io::Result<()> {
        while let Some((time, ip)) = self.pending.pop() {
            self.process(time, &ip)?;
        }
        Ok(())
    }

    /// Replays one control segment or SYN (an IP packet that parsed), in time order.
    fn process(&mut self, time: Option<i128>, ip: &[u8]) -> io::Result<()> {
        let at = self.clock.at(time);
        if !self.started {
            self.started = true;
            let when = time
                .and_then(utc)
                .map_or_else(String::new, |t| format!(", +0 is {t}"));
            writeln!(
                self.out,
                "{} replay {} ({}){when}",
                Stamp(at),
                self.name,
                self.format
            )?;
        }
        self.advance(at)?;
        let Ok(segment) = wire::parse(ip) else {
            return Ok(());
        };
        let src = SocketAddr::new(segment.src, segment.src_port);
        let dst = SocketAddr::new(segment.dst, segment.dst_port);
        if self.ftp_ports.contains(&dst.port()) || self.ftp_ports.contains(&src.port()) {
            self.control += 1;
            self.data.control_seen(src.ip(), dst.ip());
            let (checksum, offloaded) = checksum_for(&segment);
            if offloaded {
                self.offloaded += 1;
            }
            let now = self.origin + at;
            let outcome = self.engine.on_packet_with_checksum(now, ip, checksum);
            for action in &outcome.actions {
                if let Some(old) = self.firewall.apply(at, action) {
                    self.retired(at, &old)?;
                }
                self.engine.action_done(action.handle());
            }
            self.events(at)?;
        } else {
            match self.data.syn(at, src, dst, segment.seq, &mut self.firewall) {
                SynSeen::New(index) | SynSeen::NowPassed(index) => {
                    let conn = self.data.all()[index];
                    writeln!(self.out, "{} {}", Stamp(at), DataLine(&conn))?;
                }
                SynSeen::Again | SynSeen::NotData => {}
            }
        }
        Ok(())
    }

    /// Runs the engine's timers up to `at`, at the instants they were due.
    fn advance(&mut self, at: Duration) -> io::Result<()> {
        let now = self.origin + at;
        while let Some(due) = self.engine.poll_timeout() {
            if due > now {
                break;
            }
            let when = due.max(self.last_tick);
            let offset = when - self.origin;
            for action in self.engine.tick(when) {
                if let Some(old) = self.firewall.apply(offset, &action) {
                    self.retired(offset, &old)?;
                }
                self.engine.action_done(action.handle());
            }
            self.events(offset)?;
            self.last_tick = when;
            if self.engine.poll_timeout() == Some(due) {
                break;
            }
        }
        Ok(())
    }

    /// A hole left the firewall: say so if nothing used it.
    fn retired(&mut self, at: Duration, hole: &Hole) -> io::Result<()> {
        if hole.used == 0 {
            self.unused += 1;
            writeln!(
                self.out,
                "{} {} hole unused slot={} {}: no data connection in the capture used it",
                Stamp(at.min(hole.deadline)),
                Owner(hole),
                hole.slot,
                hole.spec
            )?;
        }
        Ok(())
    }

    /// Writes the engine's events, as of `at`.
    fn events(&mut self, at: Duration) -> io::Result<()> {
        while let Some(event) = self.engine.poll_event() {
            let deadline = match &event {
                Event::HoleOpen { conn, slot, .. } => {
                    self.firewall.set_owner(*slot, *conn);
                    self.firewall.get(*slot).map(|h| h.deadline)
                }
                Event::HoleRearm { slot, .. } => self.firewall.get(*slot).map(|h| h.deadline),
                // Implied by the deadlines, and by the connection's last line.
                Event::HoleClose { .. } | Event::ConnEnd { .. } if !self.verbose => continue,
                _ => None,
            };
            match deadline {
                Some(deadline) => writeln!(
                    self.out,
                    "{} {event} deadline={}",
                    Stamp(at),
                    Stamp(deadline)
                )?,
                None => writeln!(self.out, "{} {event}", Stamp(at))?,
            }
        }
        Ok(())
    }

    fn finish(mut self, format: Format) -> io::Result<Verdict> {
        self.format = format;
        self.flush()?;
        let end = self.clock.at(None);
        let unused: Vec<Hole> = self
            .firewall
            .still_open()
            .filter(|h| h.used == 0)
            .copied()
            .collect();
        for hole in unused {
            self.unused += 1;
            writeln!(
                self.out,
                "{} {} hole unused slot={} {}: still open when the capture ends, no data \
                 connection used it",
                Stamp(end),
                Owner(&hole),
                hole.slot,
                hole.spec
            )?;
        }
        let verdict = Verdict {
            format,
            packets: self.packets,
            control_packets: self.control,
            data: self.data.into_list(),
            unused_holes: self.unused,
            offloaded_checksums: self.offloaded,
            cut_packets: self.cut,
            not_ip: self.not_ip,
            reordered: self.pending.inversions,
            counters: self.engine.counters().clone(),
        };
        let c = &verdict.counters;
        if self.verbose {
            writeln!(self.out, "engine: {}", self.engine.status())?;
        }
        if verdict.offloaded_checksums > 0 {
            writeln!(
                self.out,
                "note: {} control segments carried the partial checksum of checksum offload \
                 and were read as the kernel would hand them over",
                verdict.offloaded_checksums
            )?;
        }
        if verdict.reordered > 0 {
            writeln!(
                self.out,
                "note: {} packets came later in the file than packets stamped after them \
                 (a capture of several interfaces) and were replayed in time order",
                verdict.reordered
            )?;
        }
        if c.bad_checksum > 0 {
            writeln!(
                self.out,
                "note: {} control segments had a wrong TCP checksum and were ignored, as \
                 their receiver would have",
                c.bad_checksum
            )?;
        }
        if verdict.cut_packets > 0 {
            writeln!(
                self.out,
                "note: {} packets were cut short by the capture's snap length (capture with \
                 tcpdump -s 0)",
                verdict.cut_packets
            )?;
        }
        if c.reorder_drops > 0 {
            writeln!(
                self.out,
                "note: the engine gave up on {} gaps or out-of-order segments in control \
                 streams (segments missing from the capture, or lost before the daemon)",
                c.reorder_drops
            )?;
        }
        if self.not_tcp > 0 || verdict.not_ip > 0 {
            writeln!(
                self.out,
                "note: {} frames carried no IP, {} IP packets no whole TCP segment \
                 (fragments, other protocols)",
                verdict.not_ip, self.not_tcp
            )?;
        }
        writeln!(self.out, "{verdict}")?;
        Ok(verdict)
    }
}

/// `#N` of the connection that announced a hole, or `#?` before the engine said.
struct Owner<'a>(&'a Hole);

impl fmt::Display for Owner<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.conn {
            Some(conn) => conn.fmt(f),
            None => f.write_str("#?"),
        }
    }
}

/// A data connection's line, as of its first SYN (or the retransmission that passed).
struct DataLine<'a>(&'a DataConn);

impl fmt::Display for DataLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let conn = self.0;
        write!(f, "data {} > {} ", conn.src, conn.dst)?;
        match &conn.passage {
            Passage::Hole(hole) => write!(f, "passed: hole slot={} of {}", hole.slot, Owner(hole)),
            Passage::Late { hole, first, .. } => write!(
                f,
                "passed late: a retransmitted SYN found hole slot={} of {}; the first SYN at {} \
                 did not ({})",
                hole.slot,
                Owner(hole),
                Stamp(conn.first_syn),
                MissText(first, conn)
            ),
            Passage::Blocked(miss) => write!(f, "BLOCKED: {}", MissText(miss, conn)),
        }
    }
}

/// Why a SYN found no hole.
struct MissText<'a>(&'a Miss, &'a DataConn);

impl fmt::Display for MissText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let conn = self.1;
        match self.0 {
            Miss::NoHole => write!(
                f,
                "no hole was opened from {} to {}",
                conn.src.ip(),
                conn.dst
            ),
            Miss::Expired(hole) => write!(
                f,
                "hole slot={} of {} for it closed at {} (opened at {}; -t is the time a \
                 data connection has to start)",
                hole.slot,
                Owner(hole),
                Stamp(hole.closed.unwrap_or(hole.deadline).min(hole.deadline)),
                Stamp(hole.opened)
            ),
            Miss::OtherSource(hole) => write!(
                f,
                "the hole to {} (slot={} of {}) is from={}, not {}",
                conn.dst,
                hole.slot,
                Owner(hole),
                hole.spec.src,
                conn.src.ip()
            ),
        }
    }
}

#[cfg(test)]
mod tests;
