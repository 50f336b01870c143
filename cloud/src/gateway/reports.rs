//! Reports of one session: stored in batches while the session keeps reading, acknowledged
//! cumulatively once stored.
//!
//! The frame loop hands each Report to a [`ReportSink`]; its task takes everything queued,
//! stores it in one call (one job of the store's group commit, once per (device, seq)), and
//! only then yields the ack. The agent sends in sequence order on one stream and batches
//! are stored in arrival order, so the highest stored sequence number is a cumulative ack.
//! Created on the first report, so idle sessions cost no task.
//!
//! A rewound outbox (a restored backup or VM snapshot) numbers new reports with numbers
//! the cloud already holds. The gateway notices at Hello (the agent's next number is not
//! above the highest stored one) and tells the agent in Welcome where free numbers start;
//! a pending report whose number is taken by a different report is answered with
//! `ReportConflict` before the ack that covers it, and the agent queues it again under a
//! fresh number. Nothing is overwritten, dropped or stored twice.

use std::sync::Arc;
use std::time::Duration;

use heex_proto::frame::MAX_REPORT_BYTES;
use heex_proto::DeviceId;
use tokio::sync::mpsc;

use heex_proto::frame::Message;

use super::{DeviceDirectory, DeviceNotLive, StoredReports};

/// Most reports queued for storage per session; an agent keeps far fewer in flight.
pub(super) const MAX_QUEUED: usize = 1024;
/// Most reports stored in one call.
pub(super) const MAX_BATCH: usize = 512;
/// The largest report sequence number (the store keeps them as signed 64-bit integers).
pub(super) const MAX_SEQ: u64 = i64::MAX as u64;

/// Why reports could not be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreFailure {
    /// The device was revoked: nothing more is stored for it.
    DeviceRevoked,
    /// The store failed (logged); the agent resends later.
    Failed,
}

/// The storage side of one session's reports.
pub(crate) struct ReportSink {
    queue: mpsc::Sender<(u64, String)>,
    acks: mpsc::UnboundedReceiver<Result<StoredReports, StoreFailure>>,
}

impl ReportSink {
    /// Starts the storage task for `device`.
    pub(crate) fn spawn<D: DeviceDirectory>(directory: Arc<D>, device: DeviceId) -> ReportSink {
        let (queue, mut rx) = mpsc::channel::<(u64, String)>(MAX_QUEUED);
        let (ack_tx, acks) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let n = batch.len();
                let reports = std::mem::take(&mut batch).into();
                let Some(result) = store_retrying(&*directory, &device, reports, &ack_tx).await
                else {
                    // The session is gone: the agent resends what was not acknowledged.
                    break;
                };
                let answer = match result {
                    Ok(stored) => {
                        tracing::debug!(%device, reports = n, seq = stored.highest, "reports stored");
                        Ok(stored)
                    }
                    Err(_) => {
                        tracing::info!(%device, "reports refused: device revoked");
                        Err(StoreFailure::DeviceRevoked)
                    }
                };
                let failed = answer.is_err();
                if ack_tx.send(answer).is_err() || failed {
                    // The session is gone, or it will close on the error: the agent resends
                    // whatever was not acknowledged.
                    break;
                }
            }
        });
        ReportSink { queue, acks }
    }

    /// Queues one report; an error is the protocol violation to close the session with.
    pub(crate) fn push(&self, seq: u64, payload: serde_json::Value) -> Result<(), String> {
        if seq == 0 {
            return Err("report sequence numbers start at 1".to_owned());
        }
        if seq > MAX_SEQ {
            return Err(format!(
                "report seq {seq} exceeds the largest sequence number, {MAX_SEQ}"
            ));
        }
        let text = payload.to_string();
        if text.len() > MAX_REPORT_BYTES {
            return Err(format!(
                "report {seq} is {} bytes of JSON; the maximum is {MAX_REPORT_BYTES}",
                text.len()
            ));
        }
        self.queue.try_send((seq, text)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                format!("more than {MAX_QUEUED} reports awaiting storage")
            }
            mpsc::error::TrySendError::Closed(_) => "report storage stopped".to_owned(),
        })
    }

    /// What the next stored batches need the agent to hear (all of those ready), or the
    /// storage error. Cancel-safe.
    pub(crate) async fn next_ack(&mut self) -> Result<StoredReports, StoreFailure> {
        let mut latest = self
            .acks
            .recv()
            .await
            .unwrap_or(Err(StoreFailure::Failed))?;
        while let Ok(next) = self.acks.try_recv() {
            let next = next?;
            latest.highest = latest.highest.max(next.highest);
            latest.next_seq = latest.next_seq.max(next.next_seq);
            latest.conflicts.extend(next.conflicts);
        }
        Ok(latest)
    }
}

/// The frames that tell the agent about stored batches: a `ReportConflict` for each
/// conflict (each settles every report up to it), then the cumulative `ReportAck`.
pub(crate) fn answers(stored: &StoredReports) -> Vec<Message> {
    let mut out: Vec<Message> = stored
        .conflicts
        .iter()
        .map(|&seq| Message::ReportConflict {
            seq,
            next_seq: stored.next_seq,
        })
        .collect();
    out.push(Message::ReportAck {
        seq: stored.highest,
    });
    out
}

/// Where the device's new reports must be numbered from (Welcome's `next_report_seq`):
/// the highest stored number plus one. Warns when the agent's `hello_next` (the number its
/// next new report gets) is not above it: its outbox was rewound. 0 when unknown.
pub(crate) async fn resume_point<D: DeviceDirectory>(
    directory: &D,
    device: &DeviceId,
    hello_next: u64,
) -> u64 {
    match directory.highest_report_seq(device).await {
        Ok(0) => 0,
        Ok(stored) => {
            // 0 means an agent that does not say (it reports nothing).
            if hello_next != 0 && stored >= hello_next {
                tracing::warn!(
                    %device,
                    stored,
                    agent_next = hello_next,
                    "the device's outbox was rewound (restored backup or snapshot?): the cloud \
                     holds reports up to {stored} but the agent would number its next report \
                     {hello_next}; it is told to continue at {}",
                    stored + 1
                );
            }
            stored.saturating_add(1)
        }
        Err(e) => {
            tracing::warn!(%device, error = %e, "cannot read the device's report position");
            0
        }
    }
}

/// First and longest wait between attempts to store a batch the store refused.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// A store that keeps failing is logged again this often.
const RETRY_LOG_EVERY: Duration = Duration::from_secs(60);

/// Stores `reports`, trying again with backoff while the store fails (the
/// database is out of reach, say) and the session lives: the session stays up, the agent's
/// window of unacknowledged reports bounds what waits, and the acknowledgement comes once
/// the reports are stored. `Err` when the device is revoked or gone; `None` when the
/// session ended meanwhile.
async fn store_retrying<D: DeviceDirectory>(
    directory: &D,
    device: &DeviceId,
    reports: Arc<[(u64, String)]>,
    session: &mpsc::UnboundedSender<Result<StoredReports, StoreFailure>>,
) -> Option<Result<StoredReports, DeviceNotLive>> {
    let mut wait = RETRY_FIRST;
    let mut failing_since: Option<tokio::time::Instant> = None;
    let mut last_log: Option<tokio::time::Instant> = None;
    loop {
        match directory.store_reports(device, Arc::clone(&reports)).await {
            Ok(stored) => {
                if let Some(since) = failing_since {
                    tracing::info!(%device, after = ?since.elapsed(), "reports stored again");
                }
                return Some(Ok(stored));
            }
            Err(e) if e.is::<DeviceNotLive>() => return Some(Err(DeviceNotLive)),
            Err(e) => {
                let now = tokio::time::Instant::now();
                failing_since.get_or_insert(now);
                if last_log.is_none_or(|t| now - t >= RETRY_LOG_EVERY) {
                    last_log = Some(now);
                    tracing::error!(
                        %device,
                        error = %e,
                        "cannot store reports; trying again (they stay unacknowledged in the \
                         agent's outbox meanwhile)"
                    );
                }
            }
        }
        tokio::select! {
            () = session.closed() => return None,
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(RETRY_MAX);
    }
}

/// [`ReportSink::next_ack`] of the session's sink; never when it has none.
pub(crate) async fn next_ack(sink: &mut Option<ReportSink>) -> Result<StoredReports, StoreFailure> {
    match sink {
        Some(s) => s.next_ack().await,
        None => std::future::pending().await,
    }
}
