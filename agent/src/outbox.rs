//! The durable report outbox under `<state_dir>/outbox/`.
//!
//! Reports wait here until the cloud acknowledged them. The outbox is an append-only log
//! split into segments `seg-<first seq>.log`; each record is
//!
//! ```text
//! len: u32 LE | crc32(len ‖ seq ‖ payload): u32 LE | seq: u64 LE | payload (compact JSON)
//! ```
//!
//! * Appends happen under an exclusive lock on `outbox/lock` (`flock`), so the daemon and any
//!   number of `heex-agent report` processes may append at once. The appender assigns the
//!   per-device sequence numbers, writes a whole batch with one `write`, `fdatasync`s once and
//!   only then releases the lock and answers: success means durable.
//! * Damaged bytes (a flipped bit, a bad sector) cost only the records they hit: the scanner
//!   ([`scan_records`]) resynchronises at the next record that checks out and keeps every
//!   valid record after it, and the skipped bytes and sequence numbers are logged and shown
//!   by `heex-agent status`. Only invalid bytes with no valid record after them are a torn
//!   tail: a writer that died mid-write. Whoever takes the lock next cuts it (a live writer
//!   always holds the lock, so anything invalid under the lock is garbage).
//! * `acked` holds the highest sequence number the cloud confirmed, `floor` the lowest the
//!   cloud allows next (see [`position`]); both are written atomically. The next sequence
//!   number is above every valid record ever seen in any segment, above `acked` and at
//!   least `floor`, so numbers never go backwards and a report is never numbered where
//!   delivery would take it for acknowledged. Segments whose every record is acknowledged
//!   are deleted; the newest segment is always kept.
//! * The total size of the segments is bounded: an append beyond it fails with
//!   [`OutboxError::Full`]; nothing is ever dropped silently.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use heex_proto::frame::MAX_REPORT_BYTES;

/// Default bound on the outbox's size (`outbox_max_bytes`).
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Smallest accepted bound: room for two reports of the largest size.
pub const MIN_MAX_BYTES: u64 = 2 * (MAX_REPORT_BYTES as u64 + HEADER_LEN as u64);
pub use scan::HEADER_LEN;
/// Largest segment before a new one is started (smaller for small outboxes, so acknowledged
/// records do not hold on to much of the bound).
pub const MAX_SEGMENT_BYTES: u64 = 4 * 1024 * 1024;

/// Bytes read at once when delivering; holds any whole record.
const READ_CHUNK: u64 = 256 * 1024;
const LOCK_FILE: &str = "lock";
const SEGMENT_PREFIX: &str = "seg-";
const SEGMENT_SUFFIX: &str = ".log";

/// Why a report could not be queued, or the outbox not used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// A file of the outbox could not be read or written.
    #[error("cannot use the report outbox at {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The outbox holds as many unacknowledged bytes as it may.
    #[error(
        "the report outbox is full ({used} of {max} bytes hold reports the cloud has not \
         acknowledged yet); retry later, or raise outbox_max_bytes in agent.toml"
    )]
    Full {
        /// Bytes in use.
        used: u64,
        /// The bound.
        max: u64,
    },
    /// The report exceeds [`MAX_REPORT_BYTES`].
    #[error("the report is {len} bytes of JSON; the maximum is {max}")]
    TooLarge {
        /// Its size (compact JSON).
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A line on the report socket is longer than any report can be; reading stopped there.
    #[error(
        "the report line is more than {line_max} bytes long; a report may be at most {max} \
         bytes of compact JSON"
    )]
    LineTooLong {
        /// The longest line accepted.
        line_max: usize,
        /// The largest report.
        max: usize,
    },
    /// The report is not JSON.
    #[error("the report is not valid JSON: {0}")]
    Invalid(String),
    /// The process's outbox writer stopped.
    #[error("the report outbox writer stopped")]
    Closed,
    /// The filesystem holding the outbox has no space left (or the quota is used up).
    #[error(
        "no space left on the disk holding the report outbox ({}): the report was not \
         queued; free space there and retry (reports already queued are kept)",
        .path.display()
    )]
    DiskFull {
        /// The file or directory that could not grow.
        path: PathBuf,
    },
}

impl OutboxError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OutboxError + '_ {
        move |source| match source.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                OutboxError::DiskFull {
                    path: path.to_owned(),
                }
            }
            _ => OutboxError::Io {
                path: path.to_owned(),
                source,
            },
        }
    }
}

/// Validates a submitted report and returns its compact JSON, the form the outbox stores.
pub fn prepare(raw: &[u8]) -> Result<Vec<u8>, OutboxError> {
    // Compact JSON is never longer than its source minus insignificant whitespace, but the
    // source may be padded: refuse absurd input before parsing it.
    if raw.len() > heex_proto::frame::MAX_FRAME_LEN {
        return Err(OutboxError::TooLarge {
            len: raw.len(),
            max: MAX_REPORT_BYTES,
        });
    }
    let value: serde_json::Value =
        serde_json::from_slice(raw).map_err(|e| OutboxError::Invalid(e.to_string()))?;
    let compact = serde_json::to_vec(&value).map_err(|e| OutboxError::Invalid(e.to_string()))?;
    if compact.len() > MAX_REPORT_BYTES {
        return Err(OutboxError::TooLarge {
            len: compact.len(),
            max: MAX_REPORT_BYTES,
        });
    }
    Ok(compact)
}

/// One stored report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its per-device sequence number.
    pub seq: u64,
    /// Compact JSON.
    pub payload: Vec<u8>,
}

/// Appends one record to `out` (see [`scan::encode_record`]).
fn encode(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    scan::encode_record(seq, payload, out);
}

fn segment_name(first: u64) -> String {
    format!("{SEGMENT_PREFIX}{first:020}{SEGMENT_SUFFIX}")
}

/// The segments of `dir`: (first seq, path, size), oldest first.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf, u64)>, OutboxError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(OutboxError::io(dir))? {
        let entry = entry.map_err(OutboxError::io(dir))?;
        let name = entry.file_name();
        let Some(first) = name
            .to_str()
            .and_then(|n| n.strip_prefix(SEGMENT_PREFIX))
            .and_then(|n| n.strip_suffix(SEGMENT_SUFFIX))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let path = entry.path();
        // A segment deleted by a concurrent compaction simply is no longer there.
        match entry.metadata() {
            Ok(m) => out.push((first, path, m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(OutboxError::io(&path)(e)),
        }
    }
    out.sort_by_key(|s| s.0);
    Ok(out)
}

fn sync_dir(dir: &Path) -> Result<(), OutboxError> {
    heex_fs::sync_dir(dir).map_err(|e| OutboxError::io(dir)(e.source))
}

/// The newest segment as this handle last saw it under the lock.
struct Tail {
    first: u64,
    path: PathBuf,
    file: File,
    len: u64,
    next_seq: u64,
}

/// An appending and acknowledging handle on the outbox. Several handles, in one process or
/// many, may be used at once; they serialize on the directory's lock.
pub struct Outbox {
    dir: PathBuf,
    lock: File,
    max_bytes: u64,
    segment_limit: u64,
    tail: Option<Tail>,
    /// The highest sequence number this handle saw in any segment.
    seen: u64,
}

/// Releases the outbox lock when dropped.
struct Locked<'a>(&'a File);

impl<'a> Locked<'a> {
    /// Waits for the exclusive lock on `file`. `flock` locks belong to the open file
    /// description, so two handles exclude each other even within one process, and the
    /// kernel releases the lock of a process that dies.
    fn take(file: &'a File, dir: &Path) -> Result<Locked<'a>, OutboxError> {
        rustix::fs::flock(file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| OutboxError::io(dir)(e.into()))?;
        Ok(Locked(file))
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(self.0, rustix::fs::FlockOperation::Unlock);
    }
}

impl Outbox {
    /// Opens (creating if needed) the outbox in `dir`, bounded to `max_bytes`, and cuts a
    /// torn tail off its newest segment ([`Outbox::repair`] checks all of them).
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Outbox, OutboxError> {
        fs::create_dir_all(dir).map_err(OutboxError::io(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(OutboxError::io(&lock_path))?;
        let mut outbox = Outbox {
            dir: dir.to_owned(),
            lock,
            max_bytes,
            segment_limit: (max_bytes / 16).clamp(64 * 1024, MAX_SEGMENT_BYTES),
            tail: None,
            seen: 0,
        };
        let lock = outbox.lock.try_clone().map_err(OutboxError::io(dir))?;
        let _locked = Locked::take(&lock, dir)?;
        outbox.refresh()?;
        Ok(outbox)
    }

    /// The outbox directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Checks every segment (not only the newest, which [`Outbox::open`] checks): logs and
    /// records a notice for damaged bytes skipped in the middle (the valid records after
    /// them are kept), and cuts each segment's torn tail. The daemon runs this once at
    /// start-up.
    pub fn repair(&mut self) -> Result<(), OutboxError> {
        let lock = self.lock.try_clone().map_err(OutboxError::io(&self.dir))?;
        let _locked = Locked::take(&lock, &self.dir)?;
        let segs = segments(&self.dir)?;
        for (first, path, _) in &segs {
            let buf = fs::read(path).map_err(OutboxError::io(path))?;
            let scan = scan_records(&buf);
            self.seen = self.seen.max(scan.highest_seq().unwrap_or(0));
            if !scan.skipped.is_empty() {
                let lost: Vec<String> = scan
                    .lost_seqs(*first)
                    .iter()
                    .map(|(a, b)| {
                        if a == b {
                            a.to_string()
                        } else {
                            format!("{a}-{b}")
                        }
                    })
                    .collect();
                let lost = if lost.is_empty() {
                    String::new()
                } else {
                    format!(" (reports numbered {} are unreadable)", lost.join(", "))
                };
                notice(
                    &self.dir,
                    &format!(
                        "outbox segment {} is damaged: skipped {} bytes in {} place(s){lost}; \
                         kept the {} valid records around them",
                        path.display(),
                        scan.skipped_bytes(),
                        scan.skipped.len(),
                        scan.records.len()
                    ),
                );
            }
            if scan.valid_len < buf.len() {
                tracing::warn!(
                    segment = %path.display(),
                    cut = buf.len() - scan.valid_len,
                    "outbox segment ends in a torn or corrupt record; cutting it"
                );
                truncate(path, scan.valid_len as u64)?;
            }
        }
        self.tail = None;
        self.refresh()
    }

    /// The lowest number the next report may get from what is recorded besides the
    /// segments: above the last acknowledged report, at least the cloud's floor, above any
    /// record this handle ever saw.
    fn numbering_floor(&self) -> u64 {
        read_cursor(&self.dir)
            .saturating_add(1)
            .max(read_floor(&self.dir))
            .max(self.seen.saturating_add(1))
    }

    /// Brings the cached tail up to date. Must hold the lock.
    fn refresh(&mut self) -> Result<(), OutboxError> {
        let segs = segments(&self.dir)?;
        let floor = self.numbering_floor();
        let Some((first, path, size)) = segs.last().cloned() else {
            // A fresh outbox (or one whose segments were removed by hand): continue after
            // the last acknowledged report so numbers never repeat.
            return self.start_segment(floor);
        };
        let reuse = matches!(&self.tail, Some(t) if t.first == first && t.len <= size);
        if !reuse {
            let file = open_segment(&path)?;
            self.tail = Some(Tail {
                first,
                path: path.clone(),
                file,
                len: 0,
                next_seq: first,
            });
        }
        let Some(tail) = self.tail.as_mut() else {
            return Ok(());
        };
        tail.next_seq = tail.next_seq.max(floor);
        if size == tail.len {
            return Ok(());
        }
        // Records other handles appended since we last looked, or a torn tail.
        let mut buf = Vec::with_capacity((size - tail.len) as usize);
        tail.file
            .seek(SeekFrom::Start(tail.len))
            .and_then(|_| tail.file.read_to_end(&mut buf))
            .map_err(OutboxError::io(&path))?;
        let scan = scan_records(&buf);
        if let Some(seq) = scan.highest_seq() {
            tail.next_seq = tail.next_seq.max(seq.saturating_add(1));
            self.seen = self.seen.max(seq);
        }
        if !scan.skipped.is_empty() {
            // Logged loudly (and recorded) by repair(), which the daemon runs at start-up.
            tracing::debug!(
                segment = %path.display(),
                skipped = scan.skipped_bytes(),
                "skipping damaged bytes in the outbox"
            );
        }
        tail.len += scan.valid_len as u64;
        if tail.len < size {
            tracing::warn!(
                segment = %path.display(),
                cut = size - tail.len,
                "outbox ends in a torn or corrupt record; cutting it"
            );
            tail.file
                .set_len(tail.len)
                .and_then(|()| tail.file.sync_data())
                .map_err(OutboxError::io(&path))?;
        }
        Ok(())
    }

    /// The sequence number the next report will get.
    pub fn next_seq(&mut self) -> Result<u64, OutboxError> {
        let lock = self.lock.try_clone().map_err(OutboxError::io(&self.dir))?;
        let _locked = Locked::take(&lock, &self.dir)?;
        self.refresh()?;
        Ok(self.tail.as_ref().map_or(0, |t| t.next_seq))
    }

    /// Makes sure the next report gets a number of at least `seq`, durably (the `floor`
    /// file). True when that raised the numbering.
    pub fn raise_floor(&mut self, seq: u64) -> Result<bool, OutboxError> {
        let lock = self.lock.try_clone().map_err(OutboxError::io(&self.dir))?;
        let _locked = Locked::take(&lock, &self.dir)?;
        self.refresh()?;
        let Some(tail) = self.tail.as_mut() else {
            return Err(OutboxError::Closed);
        };
        if seq <= tail.next_seq {
            return Ok(false);
        }
        position::write_mark(&self.dir, position::FLOOR_FILE, seq)?;
        tail.next_seq = seq;
        Ok(true)
    }

    /// Appends each payload (compact JSON from [`prepare`]) durably. Answers per payload:
    /// its sequence number, or [`OutboxError::Full`] for those that do not fit.
    pub fn append(
        &mut self,
        payloads: &[Vec<u8>],
    ) -> Result<Vec<Result<u64, OutboxError>>, OutboxError> {
        let lock = self.lock.try_clone().map_err(OutboxError::io(&self.dir))?;
        let _locked = Locked::take(&lock, &self.dir)?;
        self.refresh()?;
        self.rotate_if_large()?;
        let mut used: u64 = segments(&self.dir)?.iter().map(|s| s.2).sum();
        let max = self.max_bytes;
        let Some(tail) = self.tail.as_mut() else {
            return Err(OutboxError::Closed);
        };
        let mut buf = Vec::new();
        let mut answers = Vec::with_capacity(payloads.len());
        let mut seq = tail.next_seq;
        for p in payloads {
            let need = (HEADER_LEN + p.len()) as u64;
            if used + need > max {
                answers.push(Err(OutboxError::Full { used, max }));
                continue;
            }
            encode(seq, p, &mut buf);
            answers.push(Ok(seq));
            used += need;
            seq += 1;
        }
        if buf.is_empty() {
            return Ok(answers);
        }
        let written = tail
            .file
            .seek(SeekFrom::Start(tail.len))
            .and_then(|_| tail.file.write_all(&buf))
            .and_then(|()| tail.file.sync_data());
        if let Err(e) = written {
            // Leave no half-written batch behind for the next appender to cut.
            let _ = tail.file.set_len(tail.len);
            return Err(OutboxError::io(&tail.path)(e));
        }
        tail.len += buf.len() as u64;
        tail.next_seq = seq;
        Ok(answers)
    }

    /// Creates an empty segment whose first report will be `first` and makes it the tail.
    /// Must hold the lock.
    fn start_segment(&mut self, first: u64) -> Result<(), OutboxError> {
        let path = self.dir.join(segment_name(first));
        let file = open_segment(&path)?;
        sync_dir(&self.dir)?;
        self.tail = Some(Tail {
            first,
            path,
            file,
            len: 0,
            next_seq: first,
        });
        Ok(())
    }

    /// Starts a new segment when the newest one is large. Must hold the lock.
    fn rotate_if_large(&mut self) -> Result<(), OutboxError> {
        let Some(tail) = self.tail.as_ref() else {
            return Ok(());
        };
        if tail.len < self.segment_limit {
            return Ok(());
        }
        self.start_segment(tail.next_seq)?;
        // Acknowledged segments may be removable now.
        self.compact(read_cursor(&self.dir))
    }

    /// Records that the cloud stored every report up to `seq`, and deletes segments that
    /// hold only acknowledged reports.
    pub fn ack(&mut self, seq: u64) -> Result<(), OutboxError> {
        if seq <= read_cursor(&self.dir) {
            return Ok(());
        }
        position::write_mark(&self.dir, position::CURSOR_FILE, seq)?;
        let lock = self.lock.try_clone().map_err(OutboxError::io(&self.dir))?;
        let _locked = Locked::take(&lock, &self.dir)?;
        self.compact(seq)
    }

    /// Deletes every segment but the newest whose successor starts at or below `acked + 1`.
    /// Must hold the lock.
    fn compact(&mut self, acked: u64) -> Result<(), OutboxError> {
        let segs = segments(&self.dir)?;
        let mut removed = false;
        for pair in segs.windows(2) {
            if pair[1].0 <= acked + 1 {
                fs::remove_file(&pair[0].1).map_err(OutboxError::io(&pair[0].1))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Bytes the segments take.
    pub fn used_bytes(&self) -> Result<u64, OutboxError> {
        Ok(segments(&self.dir)?.iter().map(|s| s.2).sum())
    }
}

fn open_segment(path: &Path) -> Result<File, OutboxError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(OutboxError::io(path))
}

fn truncate(path: &Path, len: u64) -> Result<(), OutboxError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len).and_then(|()| f.sync_data()))
        .map_err(OutboxError::io(path))
}

mod position;
mod reader;
pub mod scan;
#[cfg(test)]
mod tests;

pub use position::{notice, position, read_cursor, read_floor, read_notice, Notice, Position};
pub use reader::Reader;
pub use scan::{encode_record, scan_records, Found, Scan};
