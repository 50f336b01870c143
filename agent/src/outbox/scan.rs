//! The outbox's record scanner: a pure function over bytes (no I/O), so it can be fuzzed.
//!
//! A record is `len: u32 LE | crc32(len ‖ seq ‖ payload): u32 LE | seq: u64 LE | payload`.
//! The scanner reads records from the start; where the bytes at an offset are not a record
//! (a flipped bit, a torn write, garbage) it resynchronises: it looks for the next offset at
//! which a whole record checks out and keeps every record from there on. Only invalid bytes
//! with no valid record after them are a tail (possibly a write still in progress, or torn).
//!
//! A false resynchronisation needs a 32-bit checksum to match by chance. It cannot start
//! inside a payload either: payloads are compact JSON, which escapes control characters, so
//! they hold no zero byte, and a header of a record of at most [`MAX_REPORT_BYTES`] always
//! has one (the length's high byte).

use std::ops::Range;

use heex_proto::frame::MAX_REPORT_BYTES;

/// Bytes before each payload.
pub const HEADER_LEN: usize = 16;
/// Largest record in bytes (header and the largest payload).
pub const MAX_RECORD_LEN: usize = HEADER_LEN + MAX_REPORT_BYTES;

/// One valid record found by [`scan_records`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its sequence number.
    pub seq: u64,
    /// Where the whole record (header and payload) lies in the scanned bytes.
    pub record: Range<usize>,
    /// Where its payload lies in the scanned bytes.
    pub payload: Range<usize>,
}

/// What [`scan_records`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Every valid record, in file order.
    pub records: Vec<Found>,
    /// Invalid byte ranges that valid records follow (skipped by resynchronisation).
    pub skipped: Vec<Range<usize>>,
    /// Where the tail begins: the end of the last valid record (a skipped range always has
    /// a record after it). The bytes from here on hold no whole valid record: torn, still
    /// being written, or garbage.
    pub valid_len: usize,
}

impl Scan {
    /// Bytes skipped in the middle (not counting the tail).
    pub fn skipped_bytes(&self) -> usize {
        self.skipped.iter().map(|r| r.len()).sum()
    }

    /// The highest sequence number of any valid record.
    pub fn highest_seq(&self) -> Option<u64> {
        self.records.iter().map(|r| r.seq).max()
    }

    /// Sequence numbers that the skipped ranges must have held, judging by the valid
    /// records around them: (first, last) of each gap, inclusive. A skipped range between
    /// records numbered `a` and `b` held reports `a+1 ..= b-1` (none when `b == a + 1`, as
    /// when the damaged bytes were padding or a record cut short and written again); one
    /// before the first record, reports `first ..` (the number the bytes were to start at).
    pub fn lost_seqs(&self, first: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for gap in &self.skipped {
            let before = self
                .records
                .iter()
                .rfind(|r| r.record.end <= gap.start)
                .map(|r| r.seq);
            let after = self
                .records
                .iter()
                .find(|r| r.record.start >= gap.end)
                .map(|r| r.seq);
            match (before, after) {
                (Some(a), Some(b)) if b > a.saturating_add(1) => out.push((a + 1, b - 1)),
                (None, Some(b)) if b > first => out.push((first, b - 1)),
                _ => {}
            }
        }
        out
    }
}

/// What the bytes at an offset hold.
pub(crate) enum Parsed {
    /// A valid record of `len` bytes in all.
    Record { seq: u64, len: usize },
    /// The bytes end inside what may be a record.
    Incomplete,
    /// The bytes are not a record.
    Corrupt,
}

/// The record at the start of `buf`, if one checks out.
pub(crate) fn parse(buf: &[u8]) -> Parsed {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Parsed::Incomplete;
    };
    let word = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let len = word(0) as usize;
    let crc = word(4);
    let mut seq_bytes = [0u8; 8];
    seq_bytes.copy_from_slice(&header[8..16]);
    let seq = u64::from_le_bytes(seq_bytes);
    if len == 0 || len > MAX_REPORT_BYTES || seq == 0 {
        return Parsed::Corrupt;
    }
    let Some(payload) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
        return Parsed::Incomplete;
    };
    if checksum(&header[0..4], &seq_bytes, payload) != crc {
        return Parsed::Corrupt;
    }
    Parsed::Record {
        seq,
        len: HEADER_LEN + len,
    }
}

pub(crate) fn checksum(len: &[u8], seq: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len);
    h.update(seq);
    h.update(payload);
    h.finalize()
}

/// Appends one record to `out`. `payload` is at most [`MAX_REPORT_BYTES`] long.
pub fn encode_record(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    // Payloads are bounded to MAX_REPORT_BYTES, far below u32::MAX.
    let len = (payload.len() as u32).to_le_bytes();
    let seq_bytes = seq.to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&checksum(&len, &seq_bytes, payload).to_le_bytes());
    out.extend_from_slice(&seq_bytes);
    out.extend_from_slice(payload);
}

/// The next offset at or after `from` where a whole valid record starts.
fn resync(buf: &[u8], from: usize) -> Option<usize> {
    (from..buf.len().saturating_sub(HEADER_LEN - 1)).find(|&at| {
        // Cheap filters first: a plausible length (high bytes zero), then the checksum.
        let b = &buf[at..];
        b[3] == 0
            && b[2] <= (MAX_REPORT_BYTES >> 16) as u8
            && matches!(parse(b), Parsed::Record { .. })
    })
}

/// Scans `buf` for records, resynchronising past invalid bytes (see the module docs).
pub fn scan_records(buf: &[u8]) -> Scan {
    let mut scan = Scan::default();
    let mut at = 0;
    while at < buf.len() {
        match parse(&buf[at..]) {
            Parsed::Record { seq, len } => {
                scan.records.push(Found {
                    seq,
                    record: at..at + len,
                    payload: at + HEADER_LEN..at + len,
                });
                at += len;
                scan.valid_len = at;
            }
            Parsed::Incomplete | Parsed::Corrupt => match resync(buf, at + 1) {
                Some(next) => {
                    scan.skipped.push(at..next);
                    at = next;
                }
                None => break,
            },
        }
    }
    scan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(seqs: &[u64]) -> (Vec<u8>, Vec<Range<usize>>) {
        let mut out = Vec::new();
        let mut ranges = Vec::new();
        for s in seqs {
            let start = out.len();
            encode_record(*s, format!("{{\"n\":{s}}}").as_bytes(), &mut out);
            ranges.push(start..out.len());
        }
        (out, ranges)
    }

    #[test]
    fn clean_bytes_scan_whole() {
        let (buf, _) = records(&[1, 2, 3]);
        let s = scan_records(&buf);
        assert_eq!(
            s.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert!(s.skipped.is_empty());
        assert_eq!(s.valid_len, buf.len());
        assert!(scan_records(&[]).records.is_empty());
    }

    #[test]
    fn every_single_flipped_byte_loses_at_most_its_record() {
        let (buf, ranges) = records(&[1, 2, 3, 4, 5]);
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x5a;
            let s = scan_records(&bad);
            let hit = ranges.iter().position(|r| r.contains(&i)).unwrap() as u64 + 1;
            let kept: Vec<u64> = s.records.iter().map(|r| r.seq).collect();
            let want: Vec<u64> = (1..=5).filter(|&n| n != hit).collect();
            assert_eq!(kept, want, "byte {i}");
            if hit < 5 {
                assert_eq!(
                    s.skipped_bytes(),
                    ranges[hit as usize - 1].len(),
                    "byte {i}"
                );
                assert_eq!(s.lost_seqs(1), vec![(hit, hit)]);
                assert_eq!(s.valid_len, buf.len());
            } else {
                // The last record: a tail, not a skip.
                assert!(s.skipped.is_empty());
                assert_eq!(s.valid_len, ranges[3].end);
            }
        }
    }

    #[test]
    fn garbage_before_between_and_after_records() {
        let (a, _) = records(&[7]);
        let (b, _) = records(&[9]);
        let mut buf = vec![0xff; 40];
        buf.extend_from_slice(&a);
        buf.extend_from_slice(&[0u8; 100]);
        buf.extend_from_slice(&b);
        buf.extend_from_slice(&b[..b.len() - 1]);
        let s = scan_records(&buf);
        assert_eq!(s.records.iter().map(|r| r.seq).collect::<Vec<_>>(), [7, 9]);
        assert_eq!(s.skipped, vec![0..40, 40 + a.len()..140 + a.len()]);
        assert_eq!(s.valid_len, 140 + a.len() + b.len());
        assert_eq!(s.lost_seqs(1), vec![(1, 6), (8, 8)]);
        assert_eq!(s.highest_seq(), Some(9));
    }
}
