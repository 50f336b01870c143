//! Where the outbox stands: the ack cursor (`acked`), the numbering floor (`floor`), the
//! last notable event (`notice.json`), and the summary `heex-agent status` shows.
//!
//! `acked` and `floor` are 8 bytes of u64 LE and their CRC-32, each written atomically.
//! `floor` is the lowest sequence number the next report may get: the cloud raised it after
//! the outbox was found rewound (a restored backup or VM snapshot), so new reports never
//! reuse numbers the cloud already holds.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::scan::scan_records;
use super::{segments, OutboxError};

pub(super) const CURSOR_FILE: &str = "acked";
pub(super) const FLOOR_FILE: &str = "floor";
const NOTICE_FILE: &str = "notice.json";

fn read_mark(dir: &Path, name: &str, what: &str) -> u64 {
    let Ok(bytes) = fs::read(dir.join(name)) else {
        return 0;
    };
    let valid = (bytes.len() == 12).then(|| {
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&bytes[..8]);
        let crc = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        (crc32fast::hash(&seq) == crc).then_some(u64::from_le_bytes(seq))
    });
    match valid.flatten() {
        Some(seq) => seq,
        None => {
            tracing::warn!(file = %dir.join(name).display(), "outbox {what} is corrupt; ignoring it");
            0
        }
    }
}

pub(super) fn write_mark(dir: &Path, name: &str, seq: u64) -> Result<(), OutboxError> {
    let mut bytes = seq.to_le_bytes().to_vec();
    bytes.extend_from_slice(&crc32fast::hash(&seq.to_le_bytes()).to_le_bytes());
    let path = dir.join(name);
    heex_fs::write(&path, &bytes, heex_fs::Options::private())
        .map_err(|e| OutboxError::io(&e.path)(e.source))
}

/// The highest acknowledged sequence number recorded in `dir` (0 when none).
pub fn read_cursor(dir: &Path) -> u64 {
    read_mark(dir, CURSOR_FILE, "ack cursor")
}

/// The lowest sequence number the next report may get, as raised by the cloud (0 when
/// never raised).
pub fn read_floor(dir: &Path) -> u64 {
    read_mark(dir, FLOOR_FILE, "numbering floor")
}

/// The last notable outbox event: damaged records skipped, a rewound outbox, a report
/// renumbered after a conflict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// When it happened.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// One line saying what happened.
    pub message: String,
}

/// Records `message` as the outbox's latest notice (best effort: it is for people) and logs
/// it as a warning.
pub fn notice(dir: &Path, message: &str) {
    tracing::warn!("{message}");
    let notice = Notice {
        at: OffsetDateTime::now_utc(),
        message: message.to_owned(),
    };
    let options = heex_fs::Options::private().not_durable();
    let written = heex_fs::write_with(&dir.join(NOTICE_FILE), options, |w| {
        serde_json::to_writer(&mut *w, &notice).map_err(std::io::Error::other)
    });
    if let Err(e) = written {
        tracing::warn!(error = %e, "cannot record the outbox notice");
    }
}

/// The outbox's latest notice, if any.
pub fn read_notice(dir: &Path) -> Option<Notice> {
    serde_json::from_slice(&fs::read(dir.join(NOTICE_FILE)).ok()?).ok()
}

/// Where the outbox stands, for `heex-agent status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Position {
    /// Highest sequence number the cloud acknowledged.
    pub acked: u64,
    /// The sequence number the next report will get.
    pub next_seq: u64,
    /// Reports queued and not acknowledged yet.
    pub pending: u64,
    /// Bytes the segments take.
    pub bytes: u64,
    /// The latest notice.
    pub notice: Option<Notice>,
}

/// Reads where the outbox in `dir` stands, without taking its lock (a snapshot).
pub fn position(dir: &Path) -> Result<Position, OutboxError> {
    let acked = read_cursor(dir);
    let segs = segments(dir)?;
    let (mut pending, mut highest) = (0, 0);
    for (_, path, _) in &segs {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            // Removed by compaction meanwhile: everything in it was acknowledged.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(OutboxError::io(path)(e)),
        };
        let scan = scan_records(&bytes);
        pending += scan.records.iter().filter(|r| r.seq > acked).count() as u64;
        highest = highest.max(scan.highest_seq().unwrap_or(0));
    }
    let next_seq = segs
        .last()
        .map_or(0, |s| s.0)
        .max(highest.saturating_add(1))
        .max(acked.saturating_add(1))
        .max(read_floor(dir));
    Ok(Position {
        acked,
        next_seq,
        pending,
        bytes: segs.iter().map(|s| s.2).sum(),
        notice: read_notice(dir),
    })
}
