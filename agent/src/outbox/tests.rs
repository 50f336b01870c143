use std::collections::BTreeSet;
use std::sync::Arc;

use super::*;
use crate::intake::Intake;

fn report(i: usize) -> Vec<u8> {
    prepare(format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 50)).as_bytes()).unwrap()
}

fn all(dir: &Path) -> Vec<Record> {
    Reader::new(dir).read(0, usize::MAX).unwrap()
}

fn newest_segment(dir: &Path) -> PathBuf {
    segments(dir).unwrap().last().unwrap().1.clone()
}

fn append_one(ob: &mut Outbox, p: Vec<u8>) -> Result<u64, OutboxError> {
    ob.append(&[p]).unwrap().pop().unwrap()
}

#[test]
fn appends_are_numbered_in_order_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = Outbox::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
    let answers = ob.append(&(0..10).map(report).collect::<Vec<_>>()).unwrap();
    let seqs: Vec<u64> = answers.into_iter().map(Result::unwrap).collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    assert_eq!(append_one(&mut ob, report(10)).unwrap(), 11);
    let got = all(dir.path());
    assert_eq!(got.len(), 11);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1);
        assert_eq!(r.payload, report(i));
    }
    // A reader continues where it left off, and from any point.
    let mut reader = Reader::new(dir.path());
    assert_eq!(reader.read(0, 4).unwrap().last().unwrap().seq, 4);
    assert_eq!(reader.read(4, 4).unwrap()[0].seq, 5);
    assert_eq!(reader.read(9, 100).unwrap().len(), 2);
    assert!(reader.read(11, 100).unwrap().is_empty());
}

#[test]
fn torn_tail_is_cut_and_earlier_records_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = Outbox::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
    for i in 0..5 {
        append_one(&mut ob, report(i)).unwrap();
    }
    drop(ob);
    let seg = newest_segment(dir.path());
    let good = fs::metadata(&seg).unwrap().len();
    // Half a record, as from a writer killed mid-write.
    let mut torn = Vec::new();
    encode(6, &report(5), &mut torn);
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&torn[..torn.len() / 2]).unwrap();
    drop(f);
    // The reader never returns it...
    assert_eq!(all(dir.path()).len(), 5);
    // ...and opening cuts it; numbering continues after the last valid record.
    let mut ob = Outbox::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
    assert_eq!(fs::metadata(&seg).unwrap().len(), good);
    assert_eq!(append_one(&mut ob, report(5)).unwrap(), 6);
    assert_eq!(all(dir.path()).len(), 6);
}

/// Flips one payload byte of record `nth` (0-based) of the newest segment.
fn flip_payload_byte(dir: &Path, nth: usize) {
    let seg = newest_segment(dir);
    let mut bytes = fs::read(&seg).unwrap();
    let at = scan_records(&bytes).records[nth].payload.start + 2;
    bytes[at] ^= 0x55;
    fs::write(&seg, &bytes).unwrap();
}

#[test]
fn corruption_in_the_middle_costs_only_the_damaged_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = Outbox::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
    for i in 0..10 {
        append_one(&mut ob, report(i)).unwrap();
    }
    drop(ob);
    flip_payload_byte(dir.path(), 3);
    let seqs = |dir: &Path| all(dir).iter().map(|r| r.seq).collect::<Vec<_>>();
    let want: Vec<u64> = (1..=10).filter(|&s| s != 4).collect();
    // The reader skips the damaged record and delivers everything after it...
    assert_eq!(seqs(dir.path()), want);
    // ...opening and repairing keep them (the damage is not a torn tail)...
    let mut ob = Outbox::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
    ob.repair().unwrap();
    assert_eq!(seqs(dir.path()), want);
    // ...numbering continues after the highest valid record, never reusing a number...
    assert_eq!(append_one(&mut ob, report(0)).unwrap(), 11);
    // ...and the damage is recorded for `heex-agent status`.
    let notice = read_notice(dir.path()).unwrap();
    assert!(
        notice.message.contains("skipped") && notice.message.contains("numbered 4"),
        "{notice:?}"
    );
    let pos = position(dir.path()).unwrap();
    assert_eq!((pos.next_seq, pos.pending), (12, 10));
}

#[test]
fn numbering_stays_above_what_was_acknowledged_when_records_are_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = Outbox::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
    for i in 0..10 {
        append_one(&mut ob, report(i)).unwrap();
    }
    ob.ack(10).unwrap();
    drop(ob);
    // The last (acknowledged) record is damaged: it is a torn tail now, and cut.
    flip_payload_byte(dir.path(), 9);
    let mut ob = Outbox::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
    ob.repair().unwrap();
    // Reusing 10 would make the report look acknowledged: it would never be delivered.
    let seq = append_one(&mut ob, report(10)).unwrap();
    assert_eq!(seq, 11);
    let pending = Reader::new(dir.path())
        .read(read_cursor(dir.path()), 100)
        .unwrap();
    assert_eq!(pending.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![11]);
    // Even with every segment gone.
    drop(ob);
    for (_, p, _) in segments(dir.path()).unwrap() {
        fs::remove_file(p).unwrap();
    }
    let mut ob = Outbox::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
    assert_eq!(append_one(&mut ob, report(11)).unwrap(), 11);
    assert_eq!(read_cursor(dir.path()), 10);
}

#[test]
fn the_floor_raised_by_the_cloud_holds_across_handles_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = Outbox::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
    append_one(&mut ob, report(0)).unwrap();
    assert!(ob.raise_floor(50).unwrap());
    assert!(!ob.raise_floor(20).unwrap(), "the floor never goes down");
    assert_eq!(ob.next_seq().unwrap(), 50);
    // Another handle (another process) sees it at once.
    let mut other = Outbox::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
    assert_eq!(append_one(&mut other, report(1)).unwrap(), 50);
    assert_eq!(append_one(&mut ob, report(2)).unwrap(), 51);
    drop((ob, other));
    let mut ob = Outbox::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
    assert_eq!(append_one(&mut ob, report(3)).unwrap(), 52);
    let got = all(dir.path());
    assert_eq!(
        got.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 50, 51, 52]
    );
    assert_eq!(read_floor(dir.path()), 50);
}

#[test]
fn damage_longer_than_a_read_chunk_is_skipped_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = Outbox::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
    let big = prepare(format!("\"{}\"", "q".repeat(60_000)).as_bytes()).unwrap();
    for _ in 0..12 {
        append_one(&mut ob, big.clone()).unwrap();
    }
    drop(ob);
    // Zero out records 2..=7 (about 360 KiB, more than one read chunk).
    let seg = newest_segment(dir.path());
    let mut bytes = fs::read(&seg).unwrap();
    let recs = scan_records(&bytes).records;
    bytes[recs[1].record.start..recs[6].record.end].fill(0);
    fs::write(&seg, &bytes).unwrap();
    let got = all(dir.path());
    assert_eq!(
        got.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 8, 9, 10, 11, 12]
    );
}

#[test]
fn full_outbox_refuses_with_a_clear_error_and_recovers_after_acks() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = Outbox::open(dir.path(), MIN_MAX_BYTES).unwrap();
    let big = prepare(format!("\"{}\"", "y".repeat(8000)).as_bytes()).unwrap();
    let mut last = 0;
    let err = loop {
        match append_one(&mut ob, big.clone()) {
            Ok(seq) => last = seq,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, OutboxError::Full { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("full") && msg.contains("outbox_max_bytes"),
        "{msg}"
    );
    assert!(ob.used_bytes().unwrap() <= MIN_MAX_BYTES);
    // Nothing was dropped: every accepted report is still there.
    assert_eq!(all(dir.path()).len() as u64, last);
    // Once the cloud acknowledged everything, room comes back.
    ob.ack(last).unwrap();
    assert_eq!(read_cursor(dir.path()), last);
    for _ in 0..5 {
        append_one(&mut ob, big.clone()).unwrap();
    }
    assert!(ob.used_bytes().unwrap() <= MIN_MAX_BYTES);
}

#[test]
fn acknowledged_segments_are_removed_and_numbering_never_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = Outbox::open(dir.path(), 2 * 1024 * 1024).unwrap();
    // segment_limit is 128 KiB here: ~1 KiB reports make several segments.
    let payload = prepare(format!("\"{}\"", "z".repeat(1000)).as_bytes()).unwrap();
    for _ in 0..600 {
        append_one(&mut ob, payload.clone()).unwrap();
    }
    let before = segments(dir.path()).unwrap().len();
    assert!(before >= 4, "{before} segments");
    ob.ack(300).unwrap();
    let after = segments(dir.path()).unwrap();
    assert!(after.len() < before);
    // Every unacknowledged record is still readable.
    let rest = Reader::new(dir.path()).read(300, usize::MAX).unwrap();
    assert_eq!(rest.first().unwrap().seq, 301);
    assert_eq!(rest.len(), 300);
    ob.ack(600).unwrap();
    assert_eq!(segments(dir.path()).unwrap().len(), 1);
    drop(ob);
    let mut ob = Outbox::open(dir.path(), 2 * 1024 * 1024).unwrap();
    assert_eq!(append_one(&mut ob, payload.clone()).unwrap(), 601);
    // Even with every segment gone, the cursor keeps the numbering going.
    for (_, p, _) in segments(dir.path()).unwrap() {
        fs::remove_file(p).unwrap();
    }
    ob.ack(601).unwrap();
    let mut ob = Outbox::open(dir.path(), 2 * 1024 * 1024).unwrap();
    assert_eq!(append_one(&mut ob, payload).unwrap(), 602);
}

#[test]
fn concurrent_appenders_in_threads_get_distinct_gapless_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let dir = dir.path().to_owned();
            std::thread::spawn(move || {
                // Each thread its own handle (own lock descriptor), like separate processes.
                let mut ob = Outbox::open(&dir, DEFAULT_MAX_BYTES).unwrap();
                (0..50)
                    .map(|i| append_one(&mut ob, report(t * 1000 + i)).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seqs = BTreeSet::new();
    for t in threads {
        for s in t.join().unwrap() {
            assert!(seqs.insert(s), "sequence {s} handed out twice");
        }
    }
    assert_eq!(seqs, (1..=400).collect());
    let got = all(dir.path());
    assert_eq!(got.len(), 400);
    assert!(got.windows(2).all(|w| w[1].seq == w[0].seq + 1));
}

#[test]
fn concurrent_appenders_in_processes_get_distinct_gapless_numbers() {
    // Re-runs this test binary as child processes that append through `heex-agent report`'s
    // code path (Outbox::open + append) under the directory lock.
    if let Ok(dir) = std::env::var("HEEX_OUTBOX_CHILD_DIR") {
        let mut ob = Outbox::open(Path::new(&dir), DEFAULT_MAX_BYTES).unwrap();
        for i in 0..100 {
            append_one(&mut ob, report(i)).unwrap();
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..4)
        .map(|_| {
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "outbox::tests::concurrent_appenders_in_processes_get_distinct_gapless_numbers",
                    "--nocapture",
                ])
                .env("HEEX_OUTBOX_CHILD_DIR", dir.path())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let got = all(dir.path());
    assert_eq!(
        got.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=400).collect::<Vec<_>>()
    );
}

#[test]
fn group_committer_answers_every_submission() {
    let dir = tempfile::tempdir().unwrap();
    let ob = Outbox::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
    let intake = Intake::spawn(ob, Arc::new(tokio::sync::Notify::new())).unwrap();
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let intake = intake.clone();
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| intake.submit_blocking(report(t * 100 + i)).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seqs = BTreeSet::new();
    for t in threads {
        seqs.extend(t.join().unwrap());
    }
    assert_eq!(seqs, (1..=800).collect());
    assert_eq!(all(dir.path()).len(), 800);
}

#[test]
fn prepare_checks_json_and_size() {
    assert_eq!(prepare(b" { \"a\" : 1 } ").unwrap(), b"{\"a\":1}");
    assert!(matches!(prepare(b"{nope"), Err(OutboxError::Invalid(_))));
    let big = format!("\"{}\"", "a".repeat(MAX_REPORT_BYTES));
    let err = prepare(big.as_bytes()).unwrap_err();
    assert!(matches!(err, OutboxError::TooLarge { .. }));
    assert!(err.to_string().contains("maximum"), "{err}");
}

/// Found by the `outbox_records` fuzz target: a 70-digit integer became a float whose
/// printed form parsed back 1 ULP away, so a report's number changed on its way to the cloud.
#[test]
fn prepare_keeps_every_number_exact() {
    let raw = format!("{}1", "4".repeat(70));
    let compact = prepare(raw.as_bytes()).unwrap();
    assert_eq!(prepare(&compact).unwrap(), compact);
    for n in [
        "0.1",
        "1e-7",
        "5e-324",
        "1.7976931348623157e308",
        "2.2250738585072014e-308",
    ] {
        let once = prepare(n.as_bytes()).unwrap();
        assert_eq!(prepare(&once).unwrap(), once, "{n}");
    }
}
