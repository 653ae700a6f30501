//! Per-direction line assembly from the TCP byte stream (DESIGN.md invariant 5).
//!
//! Owns: the next expected sequence number of one direction, the partial line, and a small
//! bounded buffer of segments that arrived ahead of a gap. Cuts lines at `\n` (a `\r` before
//! it is dropped) from the reassembled stream, so retransmissions, overlaps, reordering and
//! commands split over several segments all yield the same lines, and a segment boundary is
//! never mistaken for a line start (the NAT Slipstreaming lesson, see research/ftp-alg-peers.md).
//! Knows nothing of FTP.
//!
//! Overlapping data is resolved first-come: bytes already consumed are never read again, so
//! a retransmission that differs from the original cannot change a line after the fact.
//!
//! A gap is given up on in two ways: when the reorder buffer overflows, or at once when the
//! other direction acknowledges bytes of this one that never arrived here
//! ([`LineAssembler::gap_proven_by`]): the receiver has them, so TCP will not send them
//! again. Either way the stream goes on unsynchronised, skipping to the next line end, and
//! the first line read after that is marked ([`Line::after_resync`]) so the session can
//! forget what the lost bytes may have changed.

/// Longest line kept, in bytes. RFC 959 sets no limit, but every announcement is far
/// shorter; a longer line is still tracked (its head is kept for the reply code) but flagged
/// truncated, and the engine never opens a hole from it.
pub const MAX_LINE: usize = 1024;

/// Bytes of out-of-order data kept per direction. A control channel carries a few lines per
/// round trip, so a gap is filled long before this fills up; if it does (packets bypassed
/// the daemon, or hostile traffic), the assembler gives up on the gap and resynchronises.
pub const MAX_REORDER_BYTES: usize = 4096;

/// Out-of-order segments kept per direction.
pub const MAX_REORDER_SEGMENTS: usize = 8;

/// A segment further ahead of the expected sequence number than this is not kept: no sane
/// control channel has that much data in flight, so the stream went on without us and
/// starts over at that segment, as after a gap.
pub const REORDER_WINDOW: u32 = 64 * 1024;

/// The largest TLS record body: 2^14 bytes of plaintext plus 2048 of expansion (RFC 5246
/// §6.2.3; RFC 8446 §5.2 allows less).
pub const MAX_TLS_RECORD: u32 = 16_384 + 2048;

/// What the line consumer wants after a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Go on cutting lines.
    Lines,
    /// TLS starts right after this line (the server's 234): follow record framing.
    Tls,
}

/// Position inside TLS record framing.
#[derive(Debug, Clone, Copy, Default)]
struct Tls {
    /// Header bytes of the next record read so far (a header may span segments).
    header: [u8; 5],
    header_len: usize,
    /// Body bytes of the current record still to skip.
    remaining: u32,
    /// The record alignment is lost (a gap inside TLS, or a malformed header): the rest of
    /// the stream is skipped unread.
    blind: bool,
}

/// Whether `byte` can start a TLS record: content types change_cipher_spec (20), alert
/// (21), handshake (22), application_data (23) and heartbeat (24). No FTP line starts with
/// one of these control characters.
fn starts_tls_record(byte: u8) -> bool {
    (20..=24).contains(&byte)
}

/// One complete line, without its line end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    /// The line's bytes, at most [`MAX_LINE`] of them.
    pub bytes: &'a [u8],
    /// The line was longer than [`MAX_LINE`]; `bytes` is its head.
    pub truncated: bool,
    /// Sequence number just past the line's `\n`.
    pub end_seq: u32,
    /// The first line read after the assembler gave up on a gap: bytes before it were lost.
    pub after_resync: bool,
    /// The tail of a line whose start was never seen (the first line end after a gap, or
    /// after joining mid-stream): `bytes` may begin anywhere inside the real line. No hole
    /// may come from it (DESIGN.md invariant 5); it is handed on so that the client's
    /// command can still be counted for reply pairing.
    pub fragment: bool,
    /// The first line after TLS framing ended in this direction: clear text resumed at a
    /// record boundary (after `CCC`), a proven line start.
    pub after_tls: bool,
}

/// What one segment did to the stream, besides the lines it completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fed {
    /// How many leading bytes of the segment had been seen before (a retransmission).
    pub old_bytes: usize,
    /// The segment was ahead of a gap and kept for later.
    pub stashed: bool,
    /// The segment was dropped (too far ahead).
    pub dropped: bool,
    /// The assembler gave up on a gap and started over at the next line end.
    pub resynced: bool,
}

/// Reassembles one direction of a TCP connection into lines.
#[derive(Debug, Default)]
pub struct LineAssembler {
    /// Initial sequence number from the SYN, if seen.
    isn: Option<u32>,
    /// Sequence number of the next byte we expect; `None` until the first segment.
    next_seq: Option<u32>,
    /// `false` while skipping to the next line end (stream joined mid-line).
    synced: bool,
    line: Vec<u8>,
    truncated: bool,
    /// Segments ahead of `next_seq`: (first sequence number, bytes).
    reorder: Vec<(u32, Vec<u8>)>,
    reorder_bytes: usize,
    /// A resync happened and no line has been read since.
    resync_pending: bool,
    /// TLS record framing is being followed instead of lines (after `AUTH` + 234).
    tls: Option<Tls>,
    /// Clear text resumed after TLS and no line has been read since.
    after_tls_pending: bool,
}

/// Signed distance from `b` to `a` in sequence space (RFC 9293 §3.4 modular arithmetic).
pub(crate) fn seq_diff(a: u32, b: u32) -> i64 {
    // Reinterpreting the wrapped difference as i32 is the modular comparison itself.
    i64::from(a.wrapping_sub(b) as i32)
}

impl LineAssembler {
    /// A fresh assembler that has seen nothing.
    pub fn new() -> LineAssembler {
        LineAssembler::default()
    }

    /// The sender's SYN with initial sequence number `isn`: the stream starts at `isn + 1`,
    /// on a line boundary. A repeated SYN with the same number changes nothing.
    pub fn syn(&mut self, isn: u32) {
        if self.isn == Some(isn) {
            return;
        }
        *self = LineAssembler {
            isn: Some(isn),
            next_seq: Some(isn.wrapping_add(1)),
            synced: true,
            ..LineAssembler::default()
        };
    }

    /// Whether the stream start was seen (`false` after joining mid-stream).
    pub fn is_started(&self) -> bool {
        self.next_seq.is_some()
    }

    /// Whether the stream carried no data yet (only its SYN, if that).
    pub fn is_pristine(&self) -> bool {
        self.isn
            .zip(self.next_seq)
            .is_some_and(|(isn, next)| next == isn.wrapping_add(1))
    }

    /// Where the stream can resume exactly if its state is dropped now: the next sequence
    /// number, when the stream rests on a line boundary (synchronised, no partial line,
    /// nothing kept ahead of a gap).
    pub fn resume_point(&self) -> Option<u32> {
        let at_boundary =
            self.synced && self.line.is_empty() && self.reorder.is_empty() && self.tls.is_none();
        self.next_seq.filter(|_| at_boundary)
    }

    /// Resumes a stream dropped at `resume_point`: synchronised at `seq`, a line start.
    pub fn resume_at(&mut self, seq: u32) {
        *self = LineAssembler {
            next_seq: Some(seq),
            synced: true,
            ..LineAssembler::default()
        };
    }

    /// Whether the stream started over (a gap) and no line has been read since: the
    /// caller resynchronises what depends on the stream now, at the jump, rather than at
    /// the next line end, which may come after lines of the other direction that the
    /// lost bytes cannot concern. Clears the mark, so the next line no longer carries
    /// [`Line::after_resync`].
    pub fn take_resync_pending(&mut self) -> bool {
        std::mem::take(&mut self.resync_pending)
    }

    /// Sequence number of the next byte expected, once the stream has been seen.
    pub fn next_seq(&self) -> Option<u32> {
        self.next_seq
    }

    /// Whether the peer's acknowledgment `ack` proves a gap in this stream: it acknowledges
    /// bytes beyond everything read here, so the receiver has bytes we never saw, and TCP
    /// will not send them again. `fin` says this direction sent a FIN, which takes one
    /// sequence number of its own.
    pub fn gap_proven_by(&self, ack: u32, fin: bool) -> bool {
        let Some(next) = self.next_seq else {
            return false;
        };
        seq_diff(ack, next) - i64::from(fin) > 0
    }

    /// Gives up on the gap [`gap_proven_by`](Self::gap_proven_by) found: the stream goes
    /// on at the earliest kept segment within the acknowledged bytes, or at `ack`, skipping
    /// to the next line end; kept segments that are now reachable are read. Calls `on_line`
    /// for the lines they complete.
    pub fn skip_gap(&mut self, ack: u32, mut on_line: impl FnMut(Line<'_>)) {
        self.skip_gap_with(ack, |line| {
            on_line(line);
            After::Lines
        });
    }

    /// [`skip_gap`](Self::skip_gap) with a consumer that may switch the stream to TLS.
    pub fn skip_gap_with(&mut self, ack: u32, mut on_line: impl FnMut(Line<'_>) -> After) {
        let Some(next) = self.next_seq else { return };
        let resume = self
            .reorder
            .iter()
            .map(|(seq, _)| *seq)
            .filter(|seq| seq_diff(*seq, next) > 0 && seq_diff(*seq, ack) <= 0)
            .min_by_key(|seq| seq_diff(*seq, next))
            .unwrap_or(ack);
        self.start_over_at(resume);
        self.drain_reorder(&mut on_line);
    }

    /// Continues the stream at `seq`, unsynchronised: the line in progress lost its middle.
    /// Inside TLS the record alignment is lost for good.
    fn start_over_at(&mut self, seq: u32) {
        if let Some(tls) = self.tls.as_mut() {
            tls.blind = true;
        }
        self.next_seq = Some(seq);
        self.synced = false;
        self.line.clear();
        self.truncated = false;
        self.resync_pending = true;
    }

    /// Feeds one segment's payload starting at sequence number `seq`; calls `on_line` for
    /// every line it completes, in stream order.
    pub fn feed(&mut self, seq: u32, payload: &[u8], mut on_line: impl FnMut(Line<'_>)) -> Fed {
        self.feed_with(seq, payload, |line| {
            on_line(line);
            After::Lines
        })
    }

    /// From here on, follow TLS record framing: the stream carries records, not lines,
    /// until a record boundary shows bytes that cannot start one (see [`Line::after_tls`]).
    pub fn start_tls(&mut self) {
        self.tls = Some(Tls::default());
        self.line.clear();
        self.truncated = false;
    }

    /// Whether the stream is following TLS records.
    pub fn in_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// [`feed`](Self::feed) with a consumer that may switch the stream to TLS after a line.
    pub fn feed_with(
        &mut self,
        seq: u32,
        payload: &[u8],
        mut on_line: impl FnMut(Line<'_>) -> After,
    ) -> Fed {
        let mut fed = Fed::default();
        if payload.is_empty() {
            return fed;
        }
        let next = match self.next_seq {
            Some(next) => next,
            None => {
                // Joined mid-stream: whatever precedes the first line end is a fragment
                // of a line we cannot know the start of.
                self.next_seq = Some(seq);
                self.synced = false;
                seq
            }
        };
        let offset = seq_diff(seq, next);
        if offset > i64::from(REORDER_WINDOW) {
            // Far beyond anything a control channel has in flight: the stream went on
            // without us (a restart, state resumed long after). Waiting for bytes that
            // passed long ago would stall the stream for good; it starts over here, as
            // after a gap.
            self.reorder.clear();
            self.reorder_bytes = 0;
            self.start_over_at(seq);
            fed.resynced = true;
            self.consume(payload, &mut on_line);
            return fed;
        }
        if offset > 0 {
            fed.dropped = !self.stash(seq, payload, offset);
            fed.stashed = !fed.dropped;
            if self.reorder.len() > MAX_REORDER_SEGMENTS || self.reorder_bytes > MAX_REORDER_BYTES {
                self.resync_at_first_stashed();
                fed.resynced = true;
                self.drain_reorder(&mut on_line);
            }
            return fed;
        }
        let old = usize::try_from(-offset).unwrap_or(usize::MAX);
        fed.old_bytes = old.min(payload.len());
        if let Some(new) = payload.get(old..).filter(|new| !new.is_empty()) {
            self.consume(new, &mut on_line);
            self.drain_reorder(&mut on_line);
        }
        fed
    }

    /// Keeps a segment that lies `offset` bytes ahead; `false` if it was not kept.
    fn stash(&mut self, seq: u32, payload: &[u8], offset: i64) -> bool {
        if offset > i64::from(REORDER_WINDOW) {
            return false;
        }
        if self
            .reorder
            .iter()
            .any(|(s, b)| *s == seq && b.len() >= payload.len())
        {
            return true; // a retransmission of something already kept
        }
        self.reorder_bytes += payload.len();
        self.reorder.push((seq, payload.to_vec()));
        true
    }

    /// Gives up on the gap: the stream goes on at the earliest kept segment, and the line
    /// in progress (whose middle is missing) is discarded up to the next line end.
    fn resync_at_first_stashed(&mut self) {
        let Some(next) = self.next_seq else { return };
        if let Some(&(first, _)) = self.reorder.iter().min_by_key(|(s, _)| seq_diff(*s, next)) {
            self.start_over_at(first);
        }
    }

    /// Consumes every kept segment that the stream has now reached.
    fn drain_reorder(&mut self, on_line: &mut impl FnMut(Line<'_>) -> After) {
        loop {
            let Some(next) = self.next_seq else { return };
            let Some(index) = self
                .reorder
                .iter()
                .position(|(seq, _)| seq_diff(*seq, next) <= 0)
            else {
                return;
            };
            let (seq, bytes) = self.reorder.swap_remove(index);
            self.reorder_bytes -= bytes.len();
            let old = usize::try_from(seq_diff(next, seq)).unwrap_or(usize::MAX);
            if let Some(new) = bytes.get(old..).filter(|new| !new.is_empty()) {
                self.consume(new, on_line);
            }
        }
    }

    /// Appends in-order bytes to the stream.
    fn consume(&mut self, mut bytes: &[u8], on_line: &mut impl FnMut(Line<'_>) -> After) {
        while !bytes.is_empty() {
            if self.tls.is_some() {
                bytes = self.consume_tls(bytes);
                continue;
            }
            let newline = bytes.iter().position(|&b| b == b'\n');
            let (chunk, rest) = match newline {
                Some(i) => bytes.split_at(i + 1),
                None => (bytes, &[][..]),
            };
            self.advance(chunk.len());
            let body = if newline.is_some() {
                &chunk[..chunk.len() - 1]
            } else {
                chunk
            };
            let room = MAX_LINE - self.line.len();
            if body.len() > room {
                self.truncated = true;
            }
            self.line.extend_from_slice(&body[..body.len().min(room)]);
            if newline.is_some() {
                // Before the first line end after a gap the line's start is unknown: it is
                // handed on as a fragment, never as a line.
                let fragment = !self.synced;
                self.synced = true;
                if self.emit(on_line, fragment) == After::Tls {
                    self.start_tls();
                }
            }
            bytes = rest;
        }
    }

    /// Follows TLS record framing through `bytes`; returns what is left once clear text
    /// resumes (or nothing). Reads nothing inside a record. At a record boundary, a byte
    /// that cannot start a record means the peer left TLS (`CCC`, RFC 4217 §6): the bytes
    /// from there on are clear text, starting a line — the record boundaries come from the
    /// sender's own TLS stack, which writes nothing but records while TLS lasts.
    fn consume_tls<'b>(&mut self, mut bytes: &'b [u8]) -> &'b [u8] {
        while let Some(mut tls) = self.tls {
            if bytes.is_empty() {
                return bytes;
            }
            if tls.blind {
                // Record alignment was lost in a gap: nothing in this stream can be read
                // again (ciphertext must never be taken for lines).
                self.advance(bytes.len());
                return &[];
            }
            if tls.remaining > 0 {
                let n = bytes
                    .len()
                    .min(usize::try_from(tls.remaining).unwrap_or(usize::MAX));
                tls.remaining -= u32::try_from(n).unwrap_or(u32::MAX);
                self.tls = Some(tls);
                bytes = &bytes[n..];
                self.advance(n);
                continue;
            }
            if tls.header_len == 0 && !starts_tls_record(bytes[0]) {
                self.tls = None;
                self.synced = true;
                self.after_tls_pending = true;
                return bytes;
            }
            let take = (5 - tls.header_len).min(bytes.len());
            tls.header[tls.header_len..tls.header_len + take].copy_from_slice(&bytes[..take]);
            tls.header_len += take;
            bytes = &bytes[take..];
            self.advance(take);
            if tls.header_len == 5 {
                let [_, major, _, hi, lo] = tls.header;
                let length = u32::from(u16::from_be_bytes([hi, lo]));
                tls.header_len = 0;
                if major == 3 && length <= MAX_TLS_RECORD {
                    tls.remaining = length;
                } else {
                    // A record type but no record: the framing is lost. Read nothing more.
                    tls.blind = true;
                }
            }
            self.tls = Some(tls);
        }
        bytes
    }

    fn advance(&mut self, n: usize) {
        if let Some(next) = self.next_seq.as_mut() {
            // A segment is never longer than 64 KiB, so n fits in u32.
            *next = next.wrapping_add(u32::try_from(n).unwrap_or(u32::MAX));
        }
    }

    fn emit(&mut self, on_line: &mut impl FnMut(Line<'_>) -> After, fragment: bool) -> After {
        let mut end = self.line.len();
        if !self.truncated && self.line.last() == Some(&b'\r') {
            end -= 1;
        }
        let after = on_line(Line {
            bytes: &self.line[..end],
            truncated: self.truncated,
            end_seq: self.next_seq.unwrap_or(0),
            after_resync: std::mem::take(&mut self.resync_pending),
            fragment,
            after_tls: std::mem::take(&mut self.after_tls_pending),
        });
        self.line.clear();
        self.truncated = false;
        after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(assembler: &mut LineAssembler, segments: &[(u32, &[u8])]) -> Vec<String> {
        let mut out = Vec::new();
        for &(seq, payload) in segments {
            assembler.feed(seq, payload, |line| {
                let mut text = String::from_utf8_lossy(line.bytes).into_owned();
                if line.truncated {
                    text.push_str("<truncated>");
                }
                if line.fragment {
                    text.insert_str(0, "<fragment>");
                }
                out.push(text);
            });
        }
        out
    }

    fn started(isn: u32) -> LineAssembler {
        let mut a = LineAssembler::new();
        a.syn(isn);
        a
    }

    #[test]
    fn in_order_lines_with_crlf_and_bare_lf() {
        let mut a = started(99);
        let lines = lines_of(
            &mut a,
            &[(100, b"USER anonymous\r\nPASS x\nPA"), (125, b"SV\r\n")],
        );
        assert_eq!(lines, ["USER anonymous", "PASS x", "PASV"]);
    }

    #[test]
    fn command_split_over_three_segments_yields_one_line() {
        let mut a = started(0);
        let lines = lines_of(
            &mut a,
            &[
                (1, b"EPRT |2|2001:d"),
                (15, b"b8::10|5"),
                (23, b"0000|\r\n"),
            ],
        );
        assert_eq!(lines, ["EPRT |2|2001:db8::10|50000|"]);
    }

    #[test]
    fn retransmission_is_not_read_twice() {
        let mut a = started(0);
        let mut fed = Fed::default();
        let mut count = 0;
        for (seq, payload) in [(1u32, &b"PASV\r\n"[..]), (1, b"PASV\r\n")] {
            fed = a.feed(seq, payload, |_| count += 1);
        }
        assert_eq!(count, 1);
        assert_eq!(fed.old_bytes, 6);
    }

    #[test]
    fn overlapping_retransmission_contributes_only_new_bytes() {
        let mut a = started(0);
        let lines = lines_of(&mut a, &[(1, b"PA"), (1, b"PASV\r\nLIST\r\n")]);
        assert_eq!(lines, ["PASV", "LIST"]);
    }

    #[test]
    fn first_bytes_win_over_a_differing_retransmission() {
        let mut a = started(0);
        let lines = lines_of(&mut a, &[(1, b"NOOP"), (1, b"PORT\r\n")]);
        assert_eq!(lines, ["NOOP"]);
    }

    #[test]
    fn out_of_order_segments_are_reordered() {
        let mut a = started(0);
        let lines = lines_of(&mut a, &[(7, b"LIST\r\n"), (1, b"PASV\r\n")]);
        assert_eq!(lines, ["PASV", "LIST"]);
    }

    #[test]
    fn stashed_segment_overlapping_the_stream_is_trimmed() {
        let mut a = started(0);
        let lines = lines_of(&mut a, &[(4, b"V\r\nNOOP\r\n"), (1, b"PASV\r\n")]);
        assert_eq!(lines, ["PASV", "NOOP"]);
    }

    #[test]
    fn midstream_join_resynchronises_at_next_line_end() {
        let mut a = LineAssembler::new();
        let lines = lines_of(
            &mut a,
            &[(5000, b"ering Passive Mode (1,2,3,4,5,6)\r\n227 x\r\n")],
        );
        assert_eq!(
            lines,
            ["<fragment>ering Passive Mode (1,2,3,4,5,6)", "227 x"],
            "the text before the first line end is only a fragment"
        );
        assert!(a.is_started());
    }

    #[test]
    fn overlong_line_is_flagged_and_the_next_line_is_clean() {
        let mut a = started(0);
        let mut long = vec![b'A'; MAX_LINE + 10];
        long.extend_from_slice(b"\r\nPASV\r\n");
        let mut seen = Vec::new();
        a.feed(1, &long, |line| {
            seen.push((line.bytes.len(), line.truncated))
        });
        assert_eq!(seen, [(MAX_LINE, true), (4, false)]);
    }

    /// A segment far beyond the window means the stream went on without us: it starts
    /// over there, and what precedes its first line end is only a fragment.
    #[test]
    fn far_future_segment_restarts_the_stream_there() {
        let mut a = started(0);
        let far = 1 + REORDER_WINDOW + 1;
        let lines = lines_of(&mut a, &[(far, b"T\r\nPASV\r\n")]);
        assert_eq!(lines, ["<fragment>T", "PASV"]);
        assert_eq!(a.next_seq(), Some(far + 9));
    }

    #[test]
    fn permanent_gap_resynchronises_when_the_buffer_fills() {
        let mut a = started(0);
        // Bytes 1..=10 never arrive (they bypassed the daemon).
        let mut seq = 11;
        let mut lines = Vec::new();
        let mut resynced = false;
        for _ in 0..=MAX_REORDER_SEGMENTS {
            let fed = a.feed(seq, b"NOOP\r\n", |l| lines.push(l.bytes.to_vec()));
            resynced |= fed.resynced;
            seq += 6;
        }
        assert!(resynced);
        // The first kept segment starts on a line we cannot trust; later ones are lines.
        assert!(!lines.is_empty());
        assert!(lines.iter().all(|l| l == b"NOOP"));
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut a = started(u32::MAX - 2);
        let lines = lines_of(&mut a, &[(u32::MAX - 1, b"PA"), (0, b"SV\r\n")]);
        assert_eq!(lines, ["PASV"]);
    }

    #[test]
    fn end_seq_points_past_the_newline() {
        let mut a = started(0);
        let mut ends = Vec::new();
        a.feed(1, b"A\r\nBB\r\n", |l| ends.push(l.end_seq));
        assert_eq!(ends, [4, 8]);
    }

    #[test]
    fn repeated_syn_keeps_state_new_isn_resets() {
        let mut a = started(0);
        a.feed(1, b"PA", |_| {});
        a.syn(0);
        let lines = lines_of(&mut a, &[(3, b"SV\r\n")]);
        assert_eq!(lines, ["PASV"]);
        a.syn(1000);
        let lines = lines_of(&mut a, &[(1001, b"LIST\r\n")]);
        assert_eq!(lines, ["LIST"]);
    }

    /// TCP's own proof of a gap: the peer acknowledges bytes never seen here. The stream
    /// resumes at once (no waiting for the reorder buffer to overflow), at the kept
    /// segment inside the acknowledged range, unsynchronised, and marks its first line.
    #[test]
    fn acknowledged_gap_resumes_at_once_at_the_kept_segment() {
        let mut a = LineAssembler::new();
        a.syn(99);
        assert_eq!(lines_of(&mut a, &[(100, b"NOOP\r\n")]), ["NOOP"]);
        assert!(
            !a.gap_proven_by(106, false),
            "everything acknowledged was read"
        );
        // Lost: "RETR a\r\n" at 106..114. Kept: the tail of a line, then a whole one.
        a.feed(114, b"ST x\r\nPASV\r\n", |_| {});
        assert!(a.gap_proven_by(120, false));
        let mut got = Vec::new();
        a.skip_gap(120, |line| {
            got.push((
                String::from_utf8_lossy(line.bytes).into_owned(),
                line.after_resync,
                line.fragment,
            ))
        });
        assert_eq!(
            got,
            [
                ("ST x".to_owned(), true, true),
                ("PASV".to_owned(), false, false)
            ],
            "the partial line comes as a fragment, then whole lines"
        );
        assert_eq!(a.next_seq(), Some(126));
    }

    #[test]
    fn acknowledged_fin_is_not_a_gap_and_wild_acks_prove_nothing() {
        let mut a = LineAssembler::new();
        a.syn(99);
        lines_of(&mut a, &[(100, b"QUIT\r\n")]);
        assert!(!a.gap_proven_by(107, true), "the FIN's own sequence number");
        assert!(a.gap_proven_by(107, false));
        assert!(
            a.gap_proven_by(106 + REORDER_WINDOW + 1, false),
            "however far: the receiver has those bytes"
        );
        assert!(
            !LineAssembler::new().gap_proven_by(5, false),
            "nothing seen yet"
        );
    }
}
