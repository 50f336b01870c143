//! Delivery of outbox records over the session: which records to send next, and what the
//! cloud acknowledged.
//!
//! The session sends Report frames in sequence order with at most [`WINDOW`] unacknowledged
//! at once; the gateway answers `ReportAck{seq}` (cumulative) once the store committed them.
//! A new session starts again after the last acknowledged record, so a lost ack only means
//! a redelivery, which the cloud ignores.
//!
//! A rewound outbox (restored from a backup or snapshot) is put right with the cloud's
//! help: Welcome says where the cloud's free numbers start and the outbox's numbering moves
//! up to it ([`Reports::resume_at`]); a pending report whose number the cloud holds with
//! other content comes back as `ReportConflict` and is queued again under a fresh number
//! ([`Reports::requeue`]) before its old number counts as done.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::outbox::{self, Outbox, Reader, Record};

/// Most reports in flight (sent, not yet acknowledged) on one session.
pub const WINDOW: u64 = 64;
/// How often the outbox is checked for records appended by other processes when no wake-up
/// came: `heex-agent report` connects to the intake socket after appending and the daemon's
/// own intake wakes delivery at once, so this is only a safety net (an idle agent must not
/// wake up often).
pub const POLL: Duration = Duration::from_secs(30);
/// The ack cursor is written at most this often while reports stream (and whenever the
/// session catches up): losing a later ack only causes a harmless redelivery.
pub const CURSOR_INTERVAL: Duration = Duration::from_millis(100);

struct Inner {
    outbox: Outbox,
    reader: Reader,
    acked: u64,
    persisted: u64,
    last_persist: Instant,
}

/// The daemon's delivery state. Cheap to clone.
#[derive(Clone)]
pub struct Reports {
    inner: Arc<Mutex<Inner>>,
    appended: Arc<Notify>,
}

impl Reports {
    /// Delivery from `outbox`, woken by `appended`.
    pub fn new(outbox: Outbox, appended: Arc<Notify>) -> Reports {
        let acked = outbox::read_cursor(outbox.dir());
        let reader = Reader::new(outbox.dir());
        Reports {
            inner: Arc::new(Mutex::new(Inner {
                outbox,
                reader,
                acked,
                persisted: acked,
                last_persist: Instant::now(),
            })),
            appended,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        // A panic while holding the lock cannot leave Inner inconsistent in a way that
        // matters (the cursor only moves forward), so a poisoned lock is used as is.
        let mut guard = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut guard)
    }

    /// Highest sequence number the cloud acknowledged.
    pub fn acked(&self) -> u64 {
        self.with(|i| i.acked)
    }

    /// The number the next new report will get (Hello's `next_report_seq`), or 0 when the
    /// outbox cannot be read.
    pub fn next_seq(&self) -> u64 {
        self.with(|i| i.outbox.next_seq()).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the report outbox");
            0
        })
    }

    /// Welcome said the cloud's free numbers start at `cloud_next`: new reports are
    /// numbered from there at least, durably.
    pub fn resume_at(&self, cloud_next: u64) -> Result<(), outbox::OutboxError> {
        self.with(|i| {
            let own = i.outbox.next_seq()?;
            if cloud_next <= own {
                return Ok(());
            }
            i.outbox.raise_floor(cloud_next)?;
            outbox::notice(
                i.outbox.dir(),
                &format!(
                    "the report outbox was rewound (restored from a backup or snapshot?): the                      cloud holds reports up to {} but this outbox would have numbered its next                      report {own}; new reports are numbered from {cloud_next}, and pending ones                      the cloud holds differently are queued again",
                    cloud_next - 1
                ),
            );
            Ok(())
        })
    }

    /// The cloud holds another report under `seq` (every report below it is settled):
    /// appends this one again under a fresh number of at least `cloud_next`, then counts
    /// `seq` as done. Returns the new number. On an error nothing is counted as done, so the
    /// report is delivered (and conflicts) again on the next session.
    pub fn requeue(&self, seq: u64, cloud_next: u64) -> Result<u64, outbox::OutboxError> {
        self.with(|i| {
            let record = i.reader.read(seq.saturating_sub(1), 1)?;
            let Some(record) = record.into_iter().find(|r| r.seq == seq) else {
                // Not in the outbox (acknowledged and compacted meanwhile): nothing to do.
                tracing::warn!(seq, "the cloud reported a conflict for a report no longer queued");
                return Ok(seq);
            };
            i.outbox.raise_floor(cloud_next)?;
            let fresh = i
                .outbox
                .append(&[record.payload])?
                .pop()
                .ok_or(outbox::OutboxError::Closed)??;
            // Durably done at once: a redelivery of `seq` after a restart would queue it again.
            i.acked = i.acked.max(seq);
            persist(i);
            outbox::notice(
                i.outbox.dir(),
                &format!(
                    "report {seq} was queued again as report {fresh}: the cloud already held                      another report numbered {seq} (the outbox had been rewound)"
                ),
            );
            Ok(fresh)
        })
    }

    /// Up to `max` records after `after`; waits until there is at least one. Cancel-safe.
    pub async fn next(&self, after: u64, max: usize) -> Vec<Record> {
        loop {
            let records = self.with(|i| i.reader.read(after, max));
            match records {
                Ok(r) if !r.is_empty() => return r,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the report outbox"),
            }
            tokio::select! {
                _ = self.appended.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// The cloud stored every report up to `seq`.
    pub fn acknowledge(&self, seq: u64) {
        self.with(|i| {
            i.acked = i.acked.max(seq);
            if i.last_persist.elapsed() >= CURSOR_INTERVAL {
                persist(i);
            }
        });
    }

    /// Writes the ack cursor now if it moved.
    pub fn flush(&self) {
        self.with(persist);
    }
}

fn persist(i: &mut Inner) {
    if i.acked == i.persisted {
        return;
    }
    match i.outbox.ack(i.acked) {
        Ok(()) => i.persisted = i.acked,
        Err(e) => tracing::warn!(error = %e, "cannot record acknowledged reports"),
    }
    i.last_persist = Instant::now();
}

/// [`Reports::next`] when delivery is on and the window has room; never otherwise.
pub async fn next_batch(reports: Option<&Reports>, sent: u64) -> Vec<Record> {
    match reports {
        Some(r) => {
            let room = WINDOW.saturating_sub(sent.saturating_sub(r.acked()));
            if room == 0 {
                return std::future::pending().await;
            }
            r.next(sent, room as usize).await
        }
        None => std::future::pending().await,
    }
}
