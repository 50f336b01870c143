//! Device reports: stored once per (device, sequence number), listed in sequence order.

use heex_proto::api::ReportInfo;
use heex_proto::DeviceId;
use rusqlite::params;

use super::{conversion, time_at, SqliteStore};
use crate::store::StoreError;

pub(super) fn highest(c: &rusqlite::Connection, device: &DeviceId) -> Result<u64, StoreError> {
    let max: Option<i64> = c.query_row(
        "SELECT MAX(seq) FROM reports WHERE device_id = ?1",
        params![device.as_str()],
        |row| row.get(0),
    )?;
    Ok(max.and_then(|m| u64::try_from(m).ok()).unwrap_or(0))
}

impl SqliteStore {
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
        let after = crate::store::seq_to_sql(after)?;
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
        let stored = store
            .store_reports(&a, again.collect::<Vec<_>>(), now)
            .await
            .unwrap();
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
