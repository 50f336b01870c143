//! Device reports: stored once per (device, sequence number), listed in sequence order.

use heex_proto::api::ReportInfo;
use heex_proto::DeviceId;
use rusqlite::params;
use time::OffsetDateTime;

use super::{conversion, time_at, SqliteStore};
use crate::store::{to_unix, StoreError};

fn seq_to_sql(seq: u64) -> Result<i64, StoreError> {
    i64::try_from(seq)
        .map_err(|_| StoreError::Database(format!("report sequence {seq} is out of range")))
}

impl SqliteStore {
    /// Stores `reports` (sequence number, compact JSON) of `device` in one job of the next
    /// group commit; those already stored are left as they are. Returns the highest sequence
    /// number of the batch, which is stored once this returns.
    pub(crate) async fn store_reports(
        &self,
        device: DeviceId,
        reports: Vec<(u64, String)>,
        at: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let highest = reports.iter().map(|r| r.0).max().unwrap_or(0);
        let rows = reports
            .into_iter()
            .map(|(seq, payload)| Ok((seq_to_sql(seq)?, payload)))
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
            let mut inserted = 0;
            for (seq, payload) in &rows {
                inserted += insert.execute(params![device.as_str(), seq, at, payload])?;
            }
            if inserted < rows.len() {
                tracing::info!(
                    %device,
                    ignored = rows.len() - inserted,
                    "reports already stored were delivered again and ignored"
                );
            }
            Ok(highest)
        })
        .await
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
        assert_eq!(
            store
                .store_reports(&a, batch(&[1, 2], "first"), now)
                .await
                .unwrap(),
            2
        );
        // A redelivery after a lost ack: the stored copies stay, nothing is duplicated.
        assert_eq!(
            store
                .store_reports(&a, batch(&[2, 3], "again"), now)
                .await
                .unwrap(),
            3
        );
        assert_eq!(
            store
                .store_reports(&a, batch(&[1, 2, 3], "x"), now)
                .await
                .unwrap(),
            3
        );
        // Another device's numbers are its own.
        assert_eq!(
            store
                .store_reports(&b, batch(&[1], "b"), now)
                .await
                .unwrap(),
            1
        );

        let all = store.list_reports(&a, 0, 100).await.unwrap();
        assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(all[1].payload["tag"], "first");
        assert_eq!(all[2].payload["tag"], "again");
        let page = store.list_reports(&a, 1, 1).await.unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].seq, 2);
        assert_eq!(store.list_reports(&b, 0, 100).await.unwrap().len(), 1);
        assert!(store.list_reports(&a, 3, 100).await.unwrap().is_empty());
    }
}
