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
//! * A writer that dies mid-write leaves a torn record; whoever takes the lock next finds the
//!   first record that does not check out and cuts the segment there (a live writer always
//!   holds the lock, so anything invalid under the lock is garbage). Valid records are kept.
//! * `acked` holds the highest sequence number the cloud confirmed (written atomically).
//!   Segments whose every record is acknowledged are deleted; the newest segment is always
//!   kept, so sequence numbers never go backwards.
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
/// Bytes before each payload.
pub const HEADER_LEN: usize = 16;
/// Largest segment before a new one is started (smaller for small outboxes, so acknowledged
/// records do not hold on to much of the bound).
pub const MAX_SEGMENT_BYTES: u64 = 4 * 1024 * 1024;

/// Bytes read at once when delivering; holds any whole record.
const READ_CHUNK: u64 = 256 * 1024;
const LOCK_FILE: &str = "lock";
const CURSOR_FILE: &str = "acked";
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
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OutboxError + '_ {
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

/// What the bytes at an offset hold.
enum Parsed {
    /// A valid record of `len` bytes in all.
    Record { seq: u64, len: usize },
    /// The bytes end inside a record.
    Incomplete,
    /// The bytes are not a record.
    Corrupt,
}

fn parse(buf: &[u8]) -> Parsed {
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

fn checksum(len: &[u8], seq: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len);
    h.update(seq);
    h.update(payload);
    h.finalize()
}

fn encode(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    // prepare() bounds payloads to MAX_REPORT_BYTES, far below u32::MAX.
    let len = (payload.len() as u32).to_le_bytes();
    let seq_bytes = seq.to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&checksum(&len, &seq_bytes, payload).to_le_bytes());
    out.extend_from_slice(&seq_bytes);
    out.extend_from_slice(payload);
}

/// Scans `buf` from the start: (records, valid length, whether something invalid follows).
fn scan(buf: &[u8]) -> (Vec<(u64, std::ops::Range<usize>)>, usize, bool) {
    let mut at = 0;
    let mut out = Vec::new();
    loop {
        match parse(&buf[at..]) {
            Parsed::Record { seq, len } => {
                out.push((seq, at + HEADER_LEN..at + len));
                at += len;
            }
            Parsed::Incomplete => return (out, at, at < buf.len()),
            Parsed::Corrupt => return (out, at, true),
        }
    }
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
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(OutboxError::io(dir))
}

/// The highest acknowledged sequence number recorded in `dir` (0 when none).
pub fn read_cursor(dir: &Path) -> u64 {
    let Ok(bytes) = fs::read(dir.join(CURSOR_FILE)) else {
        return 0;
    };
    if bytes.len() != 12 {
        tracing::warn!("outbox ack cursor is corrupt; unacknowledged reports will be resent");
        return 0;
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&bytes[..8]);
    let crc = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if crc32fast::hash(&seq) != crc {
        tracing::warn!("outbox ack cursor is corrupt; unacknowledged reports will be resent");
        return 0;
    }
    u64::from_le_bytes(seq)
}

fn write_cursor(dir: &Path, seq: u64) -> Result<(), OutboxError> {
    let mut bytes = seq.to_le_bytes().to_vec();
    bytes.extend_from_slice(&crc32fast::hash(&seq.to_le_bytes()).to_le_bytes());
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(OutboxError::io(dir))?;
    tmp.write_all(&bytes).map_err(OutboxError::io(dir))?;
    tmp.as_file().sync_data().map_err(OutboxError::io(dir))?;
    let path = dir.join(CURSOR_FILE);
    tmp.persist(&path)
        .map_err(|e| OutboxError::io(&path)(e.error))?;
    sync_dir(dir)
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
    /// Opens (creating if needed) the outbox in `dir`, bounded to `max_bytes`, and repairs
    /// it: in each segment, records after the first one that does not check out are cut.
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

    /// Checks every segment (not only the newest, which [`Outbox::open`] checks) and cuts
    /// each at its first invalid record. The daemon runs this once at start-up.
    pub fn repair(&mut self) -> Result<(), OutboxError> {
        let lock = self.lock.try_clone().map_err(OutboxError::io(&self.dir))?;
        let _locked = Locked::take(&lock, &self.dir)?;
        let segs = segments(&self.dir)?;
        let last = segs.len().saturating_sub(1);
        for (i, (_, path, _)) in segs.iter().enumerate() {
            if i == last {
                break; // the newest is checked by refresh() below
            }
            let buf = fs::read(path).map_err(OutboxError::io(path))?;
            let (records, valid, bad) = scan(&buf);
            if bad {
                tracing::warn!(
                    segment = %path.display(),
                    kept = records.len(),
                    "outbox segment is corrupt after its last valid record; cutting it there"
                );
                truncate(path, valid as u64)?;
            }
        }
        self.tail = None;
        self.refresh()
    }

    /// Brings the cached tail up to date. Must hold the lock.
    fn refresh(&mut self) -> Result<(), OutboxError> {
        let segs = segments(&self.dir)?;
        let Some((first, path, size)) = segs.last().cloned() else {
            // A fresh outbox (or one whose segments were removed by hand): continue after
            // the last acknowledged report so numbers never repeat.
            return self.start_segment(read_cursor(&self.dir) + 1);
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
        if size == tail.len {
            return Ok(());
        }
        // Records other handles appended since we last looked, or a torn tail.
        let mut buf = Vec::with_capacity((size - tail.len) as usize);
        tail.file
            .seek(SeekFrom::Start(tail.len))
            .and_then(|_| tail.file.read_to_end(&mut buf))
            .map_err(OutboxError::io(&path))?;
        let (records, valid, bad) = scan(&buf);
        if let Some((seq, _)) = records.last() {
            tail.next_seq = tail.next_seq.max(seq + 1);
        }
        tail.len += valid as u64;
        if bad || tail.len < size {
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
        write_cursor(&self.dir, seq)?;
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

mod reader;
#[cfg(test)]
mod tests;

pub use reader::Reader;

/// One record as the outbox stores it: `seq` and its compact JSON `payload` (at most
/// [`MAX_REPORT_BYTES`], as [`prepare`] guarantees). Appending goes through
/// [`Outbox::append`]; this is for tools and tests of the record format.
pub fn encode_record(seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    encode(seq, payload, &mut out);
    out
}

/// The records at the start of `buf`, read the way the outbox reads a segment: up to the
/// first bytes that are not a whole valid record. Returns the records and the number of
/// bytes they take. Never panics, whatever `buf` holds.
pub fn decode_records(buf: &[u8]) -> (Vec<Record>, usize) {
    let (records, valid, _) = scan(buf);
    let records = records
        .into_iter()
        .map(|(seq, range)| Record {
            seq,
            payload: buf.get(range).unwrap_or_default().to_vec(),
        })
        .collect();
    (records, valid)
}
