//! The outbox record scanner, on arbitrary segment bytes (a torn write, a flipped bit, a
//! foreign file), and the record codec's round trip.
//!
//! Properties: scanning never panics; every record found re-encodes to exactly the bytes it
//! was found at, and found records and skipped ranges never overlap; records encoded from
//! any (seq, payload) list scan back to that list; a cut anywhere keeps every whole record
//! before the cut; a flipped byte keeps every record before it; the report intake (`prepare`) is idempotent on what it accepts.
#![no_main]

use heex_agent::outbox::{self, encode_record, scan_records, HEADER_LEN};
use heex_proto::frame::MAX_REPORT_BYTES;
use libfuzzer_sys::fuzz_target;

// The first byte chooses what the rest is, so seeds are plain files (fuzz/make-seeds):
// 0: raw segment bytes; 1: a submitted report; 2: records to encode, as
// cut: u32 LE | flip at: u32 LE | flip mask: u8 | then (seq: u64 LE | len: u16 LE | bytes)*.
fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => check_scan(rest),
        1 => {
            if let Ok(compact) = outbox::prepare(rest) {
                assert!(compact.len() <= MAX_REPORT_BYTES);
                let again = outbox::prepare(&compact).expect("prepared JSON is accepted again");
                assert_eq!(again, compact, "prepare is not idempotent");
            }
        }
        _ => records(rest),
    }
});

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if buf.len() < n {
        return None;
    }
    let (head, tail) = buf.split_at(n);
    *buf = tail;
    Some(head)
}

fn records(mut rest: &[u8]) {
    let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let (Some(cut), Some(at), Some(mask)) = (take(&mut rest, 4), take(&mut rest, 4), take(&mut rest, 1))
    else {
        return;
    };
    let (cut, at, mask) = (word(cut), word(at), mask[0]);
    let mut records: Vec<(u64, &[u8])> = Vec::new();
    while let (Some(seq), Some(len)) = (take(&mut rest, 8), take(&mut rest, 2)) {
        let mut s = [0u8; 8];
        s.copy_from_slice(seq);
        let seq = u64::from_le_bytes(s);
        let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
        let n = len.min(rest.len());
        let Some(payload) = take(&mut rest, n) else {
            break;
        };
        // Stored payloads are compact JSON, which never holds a NUL byte, while every record
        // header does (its length is below 2^24): a payload never looks like a header.
        let json_like = !payload.contains(&0);
        if seq != 0 && json_like && !payload.is_empty() && payload.len() <= MAX_REPORT_BYTES {
            records.push((seq, payload));
        }
    }
    let mut buf = Vec::new();
    let mut ends = Vec::new();
    for (seq, p) in &records {
        encode_record(*seq, p, &mut buf);
        ends.push(buf.len());
    }
    // encode -> scan gives the records back, covering every byte.
    let (got, valid) = decode_records(&buf);
    assert_eq!(valid, buf.len());
    assert_eq!(got.len(), records.len());
    for (r, (seq, p)) in got.iter().zip(&records) {
        assert_eq!(r.seq, *seq);
        assert_eq!(&r.payload[..], *p);
    }
    // A torn tail: every record ending at or before the cut survives, nothing after it.
    let cut = cut % (buf.len() + 1);
    let (got, valid) = decode_records(&buf[..cut]);
    let whole = ends.iter().filter(|&&e| e <= cut).count();
    assert_eq!(got.len(), whole);
    assert_eq!(valid, if whole == 0 { 0 } else { ends[whole - 1] });
    // A flipped byte: every record before the damaged one survives.
    if !buf.is_empty() && mask != 0 {
        let at = at % buf.len();
        buf[at] ^= mask;
        let (got, _) = decode_records(&buf);
        let before = ends.iter().filter(|&&e| e <= at).count();
        assert!(got.len() >= before);
        for (r, (seq, p)) in got.iter().zip(&records).take(before) {
            assert_eq!(r.seq, *seq);
            assert_eq!(&r.payload[..], *p);
        }
        check_scan(&buf);
    }
}

struct Record {
    seq: u64,
    payload: Vec<u8>,
}

/// The records found in `buf` and the end of the last one.
fn decode_records(buf: &[u8]) -> (Vec<Record>, usize) {
    let scan = scan_records(buf);
    let records = scan
        .records
        .iter()
        .map(|f| Record {
            seq: f.seq,
            payload: buf[f.payload.clone()].to_vec(),
        })
        .collect();
    (records, scan.valid_len)
}

/// Whatever the bytes, each record found re-encodes to exactly the bytes it was found at, in
/// order, and no skipped range overlaps a record.
fn check_scan(buf: &[u8]) {
    let scan = scan_records(buf);
    assert!(scan.valid_len <= buf.len());
    let mut last_end = 0;
    for f in &scan.records {
        assert!(f.record.start >= last_end, "records overlap");
        last_end = f.record.end;
        assert_ne!(f.seq, 0);
        let payload = &buf[f.payload.clone()];
        assert!(!payload.is_empty() && payload.len() <= MAX_REPORT_BYTES);
        let mut again = Vec::new();
        encode_record(f.seq, payload, &mut again);
        assert_eq!(&again[..], &buf[f.record.clone()]);
        assert!(f.record.len() >= HEADER_LEN);
        for s in &scan.skipped {
            assert!(s.end <= f.record.start || s.start >= f.record.end, "skipped a record");
        }
    }
}
