//! Reading the outbox for delivery.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::scan::{scan_records, MAX_RECORD_LEN};
use super::{segments, OutboxError, Record, READ_CHUNK};

/// Reads records in order for delivery. Needs no lock: it only returns whole records whose
/// checksum holds, and makes them durable before returning them (a record written by a
/// process that died before its fsync must not be sent and then lost).
pub struct Reader {
    dir: PathBuf,
    /// Where the record after `pos_seq` starts: (segment first seq, offset).
    pos: Option<(u64, u64)>,
    pos_seq: u64,
}

impl Reader {
    /// A reader of the outbox in `dir`.
    pub fn new(dir: &Path) -> Reader {
        Reader {
            dir: dir.to_owned(),
            pos: None,
            pos_seq: 0,
        }
    }

    /// Up to `max` records with sequence numbers above `after`, oldest first.
    pub fn read(&mut self, after: u64, max: usize) -> Result<Vec<Record>, OutboxError> {
        let segs = segments(&self.dir)?;
        let mut out = Vec::new();
        // Start in the newest segment that begins at or before `after + 1`.
        let start = segs.iter().rposition(|s| s.0 <= after + 1).unwrap_or(0);
        for (i, (first, path, size)) in segs.iter().enumerate().skip(start) {
            let mut offset = match self.pos {
                Some((f, o)) if f == *first && self.pos_seq == after && i == start => o,
                _ => 0,
            };
            let mut file: Option<File> = None;
            let mut took = false;
            // Bounded reads: a long backlog is read a chunk at a time, not whole segments.
            while offset < *size && out.len() < max {
                let f = match &mut file {
                    Some(f) => f,
                    None => match File::open(path) {
                        Ok(f) => file.insert(f),
                        // Removed by compaction meanwhile: everything in it was acknowledged.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                        Err(e) => return Err(OutboxError::io(path)(e)),
                    },
                };
                let want = (size - offset).min(READ_CHUNK);
                let mut buf = Vec::with_capacity(want as usize);
                f.seek(SeekFrom::Start(offset))
                    .and_then(|_| f.take(want).read_to_end(&mut buf))
                    .map_err(OutboxError::io(path))?;
                let scan = scan_records(&buf);
                let at_end = offset + want >= *size;
                if scan.records.is_empty() && at_end {
                    break; // the end of the valid records
                }
                // Damaged bytes are skipped (the scan resynchronises); a chunk with no
                // record at all is damage longer than a chunk: no record that would end
                // within this chunk starts in it, so go on from where one still could.
                let mut consumed = if scan.records.is_empty() {
                    offset + want - (MAX_RECORD_LEN as u64 - 1).min(want - 1)
                } else {
                    offset
                };
                for found in scan.records {
                    if out.len() >= max {
                        break;
                    }
                    consumed = offset + found.record.end as u64;
                    if found.seq > after {
                        took = true;
                        out.push(Record {
                            seq: found.seq,
                            payload: buf[found.payload].to_vec(),
                        });
                    }
                }
                offset = consumed;
            }
            if took {
                if let Some(f) = &file {
                    f.sync_data().map_err(OutboxError::io(path))?;
                }
                if let Some(last) = out.last() {
                    self.pos = Some((*first, offset));
                    self.pos_seq = last.seq;
                }
            }
            if out.len() >= max {
                break;
            }
            if offset < *size {
                if i + 1 == segs.len() {
                    break; // a record still being written, or a torn tail
                }
                tracing::debug!(segment = %path.display(), "skipping the invalid rest of an outbox segment");
            }
        }
        Ok(out)
    }
}
