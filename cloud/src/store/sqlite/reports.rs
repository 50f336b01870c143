//! Device reports: stored once per (device, sequence number), listed in sequence order.

use heex_proto::api::ReportInfo;
use heex_proto::DeviceId;
use rusqlite::params;
use time::OffsetDateTime;

use super::{conversion, time_at, SqliteStore};
use crate::gateway::StoredReports;
use crate::store::{to_unix, StoreError};

fn seq_to_sql(seq: u64) -> Result<i64, StoreError> {
    i64::try_from(seq)
        .map_err(|_| StoreError::Database(format!("report sequence {seq} is out of range")))
}

/// True when two stored forms of a report say the same: byte-equal, or equal as JSON (a
/// number written differently by another encoder).
fn same_report(stored: &str, new: &str) -> bool {
    stored == new
        || matches!(
            (
                serde_json::from_str::<serde_json::Value>(stored),
                serde_json::from_str::<serde_json::Value>(new),
            ),
            (Ok(a), Ok(b)) if a == b
        )
}

fn highest(c: &rusqlite::Connection, device: &DeviceId) -> Result<u64, StoreError> {
    let max: Option<i64> = c.query_row(
        "SELECT MAX(seq) FROM reports WHERE device_id = ?1",
        params![device.as_str()],
        |row| row.get(0),
    )?;
    Ok(max.and_then(|m| u64::try_from(m).ok()).unwrap_or(0))
}

impl SqliteStore {
    /// Stores `reports` (sequence number, compact JSON) of `device` in one job of the next
    /// group commit. A number already stored with the same content is a redelivery (a lost
    /// acknowledgement) and left alone; with different content it is a conflict: the stored
    /// report stays, the number is returned among the conflicts, and the agent queues its
    /// report again under a fresh number. Durable once this returns.
    pub(crate) async fn store_reports(
        &self,
        device: DeviceId,
        reports: Vec<(u64, String)>,
        at: OffsetDateTime,
    ) -> Result<StoredReports, StoreError> {
        let batch_highest = reports.iter().map(|r| r.0).max().unwrap_or(0);
        let rows = reports
            .into_iter()
            .map(|(seq, payload)| Ok((seq, seq_to_sql(seq)?, payload)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let at = to_unix(at);
        self.write(move |c| {
            // Decided in the write itself: a revocation committed before this batch wins,
            // whatever the session was told when it was admitted.
            let live: bool = c
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM devices WHERE id = ?1 AND revoked_at IS NULL)",
                )?
                .query_row([device.as_str()], |r| r.get(0))?;
            if !live {
                return Err(StoreError::DeviceNotLive(device.clone()));
            }
            let mut insert = c.prepare_cached(
                "INSERT OR IGNORE INTO reports (device_id, seq, received_at, payload)
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut existing =
                c.prepare_cached("SELECT payload FROM reports WHERE device_id = ?1 AND seq = ?2")?;
            let mut redelivered = 0;
            let mut conflicts = Vec::new();
            for (seq, sql_seq, payload) in &rows {
                if insert.execute(params![device.as_str(), sql_seq, at, payload])? == 1 {
                    continue;
                }
                let stored: String =
                    existing.query_row(params![device.as_str(), sql_seq], |row| row.get(0))?;
                if same_report(&stored, payload) {
                    redelivered += 1;
                } else {
                    conflicts.push(*seq);
                }
            }
            if redelivered > 0 {
                tracing::info!(
                    %device,
                    redelivered,
                    "reports already stored were delivered again and ignored"
                );
            }
            let next_seq = highest(c, &device)?.saturating_add(1);
            if !conflicts.is_empty() {
                tracing::warn!(
                    %device,
                    ?conflicts,
                    next_seq,
                    "the device sent other reports under numbers already stored (its outbox \
                     was rewound); it is told to queue them again under fresh numbers"
                );
            }
            Ok(StoredReports {
                highest: batch_highest,
                conflicts,
                next_seq,
            })
        })
        .await
    }

    /// The highest stored report sequence number of `device` (0 when none).
    pub(crate) async fn highest_report_seq(&self, device: DeviceId) -> Result<u64, StoreError> {
        self.read(move |c| highest(c, &device)).await
    }

    /// Up to `limit` reports of `device` with sequence numbers above `after`.
    pub(crate) async fn list_reports(
        &self,
        device: DeviceId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<ReportInfo>, StoreError> {
        let after = seq_to_sql(after)?;
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, received_at, payload FROM reports
                 WHERE device_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![device.as_str(), after, limit], |row| {
                let seq: i64 = row.get(0)?;
                let payload: String = row.get(2)?;
                Ok(ReportInfo {
                    seq: u64::try_from(seq).map_err(|e| conversion(0, e))?,
                    received_at: time_at(row, 1)?,
                    payload: serde_json::from_str(&payload).map_err(|e| conversion(2, e))?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    #[tokio::test]
    async fn each_device_sequence_is_stored_once_and_listed_in_order() {
        let (f, ids) = crate::store::tests::with_devices(2).await;
        let store = &f.store;
        let (a, b) = (ids[0].clone(), ids[1].clone());
        let now = OffsetDateTime::now_utc();
        let batch = |seqs: &[u64], tag: &str| -> Vec<(u64, String)> {
            seqs.iter()
                .map(|s| (*s, format!("{{\"seq\":{s},\"tag\":\"{tag}\"}}")))
                .collect()
        };
        let stored = store
            .store_reports(&a, batch(&[1, 2], "first"), now)
            .await
            .unwrap();
        assert_eq!((stored.highest, stored.next_seq), (2, 3));
        assert!(stored.conflicts.is_empty());
        // A redelivery after a lost ack (same content): nothing is duplicated or changed.
        let again = batch(&[2], "first").into_iter().chain(batch(&[3], "first"));
        let stored = store.store_reports(&a, again.collect(), now).await.unwrap();
        assert_eq!(stored.highest, 3);
        assert!(stored.conflicts.is_empty());
        // Other content under numbers already stored (a rewound outbox): conflicts, the
        // stored reports stay, and the cloud says where free numbers start.
        let stored = store
            .store_reports(&a, batch(&[1, 2, 3], "x"), now)
            .await
            .unwrap();
        assert_eq!(stored.conflicts, vec![1, 2, 3]);
        assert_eq!(stored.next_seq, 4);
        assert_eq!(store.highest_report_seq(&a).await.unwrap(), 3);
        // The same JSON written differently is the same report.
        let stored = store
            .store_reports(
                &a,
                vec![(1, "{ \"tag\": \"first\", \"seq\": 1 }".into())],
                now,
            )
            .await
            .unwrap();
        assert!(stored.conflicts.is_empty(), "{stored:?}");
        // Another device's numbers are its own.
        let stored = store
            .store_reports(&b, batch(&[1], "b"), now)
            .await
            .unwrap();
        assert_eq!((stored.highest, stored.next_seq), (1, 2));
        assert_eq!(store.highest_report_seq(&b).await.unwrap(), 1);
        assert_eq!(
            store
                .highest_report_seq(&heex_proto::DeviceId::generate())
                .await
                .unwrap(),
            0
        );

        let all = store.list_reports(&a, 0, 100).await.unwrap();
        assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(all[1].payload["tag"], "first");
        assert_eq!(all[2].payload["tag"], "first");
        let page = store.list_reports(&a, 1, 1).await.unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].seq, 2);
        assert_eq!(store.list_reports(&b, 0, 100).await.unwrap().len(), 1);
        assert!(store.list_reports(&a, 3, 100).await.unwrap().is_empty());
    }
}
