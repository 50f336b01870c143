//! Devices: enrollment (which spends one use of the enrolling key), listing, and what the
//! gateway records.

use super::paging::SqlPage;
use heex_proto::{DeviceId, WorkspaceId};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, OptionalExtension, Row};
use time::OffsetDateTime;

use super::{conversion, opt_time, parsed, time_at, SqliteStore};
use crate::store::device_list::{DeviceCounts, DeviceQuery, DeviceSort, LabelSelector};
use crate::store::paging::PageOf;
use crate::store::DeviceStatus;
use crate::store::{like_escaped, to_unix, DeviceRecord, StoreError};

/// The columns of a device (`d`) with its enrolling member's (`m`) email, in the order
/// [`device_from_row`] reads.
macro_rules! device_columns {
    () => {
        "SELECT d.id, d.workspace_id, d.name, d.labels, d.facts, d.spiffe_id,
                d.enrolled_at, d.enrolled_by_key, m.email, d.cert_serial,
                d.cert_expires_at, d.revoked_at, d.last_seen_at, d.connection IS NOT NULL,
                d.agent_version"
    };
}
const DEVICE_COLUMNS: &str = device_columns!();

/// A device with its enrolling member's email.
const DEVICE_SELECT: &str = concat!(
    device_columns!(),
    " FROM devices d JOIN members m ON m.id = d.enrolled_by_member"
);

/// Most trigram-index matches of a search text for which the index drives the page (the
/// matches are then sorted); above, the walk in page order does.
const SEARCH_DRIVES_UP_TO: i64 = 10_000;

impl SqliteStore {
    pub(crate) async fn query_devices(
        &self,
        workspace: WorkspaceId,
        q: DeviceQuery,
    ) -> Result<PageOf<DeviceRecord>, StoreError> {
        self.read(move |c| {
            // Only the conditions in use appear, so each combination gets its own cached
            // statement and the planner can pick the matching index.
            let ws = || Value::Text(workspace.as_str().to_owned());
            // A search whose text matches few devices is driven by the trigram index: its
            // matches are read, then sorted (at most SEARCH_DRIVES_UP_TO of them). A text
            // matching more is frequent enough for the walk in page order to meet a page
            // of matches soon.
            let searched = match &q.search {
                Some(text) if text.chars().count() >= 3 => {
                    let phrase = format!("\"{}\"", text.replace('"', "\"\""));
                    let candidates: i64 = c
                        .prepare_cached(
                            "SELECT COUNT(*) FROM (SELECT 1 FROM device_search
                             WHERE device_search MATCH ?1 AND workspace_id = ?2 LIMIT ?3)",
                        )?
                        .query_row(
                            params![phrase, workspace.as_str(), SEARCH_DRIVES_UP_TO + 1],
                            |r| r.get(0),
                        )?;
                    (candidates <= SEARCH_DRIVES_UP_TO).then_some(phrase)
                }
                _ => None,
            };
            // Otherwise, in enrollment order with a label that must be set, the label index
            // drives: it holds exactly the matching devices, in page order (otherwise a rare
            // label would cost a walk over every device between two matches).
            let driver = match q.sort {
                DeviceSort::Enrolled if searched.is_none() => q.labels.iter().position(|s| {
                    matches!(s, LabelSelector::Equals(..) | LabelSelector::Exists(_))
                }),
                _ => None,
            };
            let (mut sql, mut values, columns) = match driver.map(|i| &q.labels[i]) {
                None if searched.is_some() => (
                    format!(
                        "{DEVICE_COLUMNS} FROM device_search s
                         CROSS JOIN device_search_rows r ON r.id = s.rowid
                         CROSS JOIN devices d ON d.id = r.device_id
                         JOIN members m ON m.id = d.enrolled_by_member
                         WHERE device_search MATCH ? AND s.workspace_id = ?
                         AND d.workspace_id = ?"
                    ),
                    vec![
                        Value::Text(searched.clone().unwrap_or_default()),
                        ws(),
                        ws(),
                    ],
                    [q.sort.column(), "d.id"],
                ),
                Some(sel) => {
                    let mut sql = format!(
                        "{DEVICE_COLUMNS} FROM device_labels l
                         CROSS JOIN devices d ON d.id = l.device_id
                         JOIN members m ON m.id = d.enrolled_by_member
                         WHERE l.workspace_id = ? AND l.key = ?"
                    );
                    let mut values = vec![ws(), Value::Text(sel.key().to_owned())];
                    if let LabelSelector::Equals(_, v) = sel {
                        sql.push_str(" AND l.value = ?");
                        values.push(Value::Text(v.clone()));
                    }
                    (sql, values, ["l.enrolled_at", "l.device_id"])
                }
                None => (
                    format!("{DEVICE_SELECT} WHERE d.workspace_id = ?"),
                    vec![ws()],
                    [q.sort.column(), "d.id"],
                ),
            };
            match q.connected {
                Some(true) => sql.push_str(" AND d.connection IS NOT NULL"),
                Some(false) => sql.push_str(" AND d.connection IS NULL"),
                None => {}
            }
            match q.revoked {
                Some(true) => sql.push_str(" AND d.revoked_at IS NOT NULL"),
                Some(false) => sql.push_str(" AND d.revoked_at IS NULL"),
                None => {}
            }
            const LABEL: &str =
                "EXISTS (SELECT 1 FROM device_labels l WHERE l.device_id = d.id AND l.key = ?";
            for (i, sel) in q.labels.iter().enumerate() {
                if Some(i) == driver {
                    continue;
                }
                let key = Value::Text(sel.key().to_owned());
                match sel {
                    LabelSelector::Equals(_, v) | LabelSelector::NotEquals(_, v) => {
                        let not = matches!(sel, LabelSelector::NotEquals(..));
                        sql.push_str(if not { " AND NOT " } else { " AND " });
                        sql.push_str(LABEL);
                        sql.push_str(" AND l.value = ?)");
                        values.extend([key, Value::Text(v.clone())]);
                    }
                    LabelSelector::Exists(_) | LabelSelector::Absent(_) => {
                        let not = matches!(sel, LabelSelector::Absent(_));
                        sql.push_str(if not { " AND NOT " } else { " AND " });
                        sql.push_str(LABEL);
                        sql.push(')');
                        values.push(key);
                    }
                }
            }
            // The exact test, also behind the trigram index (whose case folding is wider).
            if let Some(text) = &q.search {
                sql.push_str(" AND (d.name LIKE ? ESCAPE '\\' OR d.id LIKE ? ESCAPE '\\')");
                let pattern = format!("%{}%", like_escaped(text));
                values.extend([Value::Text(pattern.clone()), Value::Text(pattern)]);
            }
            if let Some(member) = &q.enrolled_by {
                sql.push_str(" AND (d.enrolled_by_member = ? OR m.email = ?)");
                values.extend([Value::Text(member.clone()), Value::Text(member.clone())]);
            }
            if let Some(key) = &q.enrolled_with_key {
                sql.push_str(" AND d.enrolled_by_key = ?");
                values.push(Value::Text(key.as_str().to_owned()));
            }
            if let Some(t) = q.cert_expires_before {
                sql.push_str(" AND d.cert_expires_at < ?");
                values.push(Value::Integer(to_unix(t)));
            }
            if let Some(t) = q.last_seen_before {
                sql.push_str(" AND COALESCE(d.last_seen_at, 0) < ?");
                values.push(Value::Integer(to_unix(t)));
            }
            q.page
                .finish_query(&mut sql, &mut values, &columns, q.descending)?;
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt
                .query_map(params_from_iter(values), device_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            let sort = q.sort;
            Ok(PageOf::from_rows(rows, &q.page, |d| sort.key(d)))
        })
        .await
    }

    pub(crate) async fn device_counts(
        &self,
        workspace: WorkspaceId,
        expiring_before: OffsetDateTime,
    ) -> Result<DeviceCounts, StoreError> {
        self.read(move |c| {
            let ws = workspace.as_str();
            let (total, connected, revoked): (i64, i64, i64) = c
                .prepare_cached(
                    "SELECT total, connected, revoked FROM device_counts WHERE workspace_id = ?1",
                )?
                .query_row([ws], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?
                .unwrap_or((0, 0, 0));
            // Whole days before the boundary's day from the day counts; that day itself
            // from the expiry index (at most one day of certificates).
            let before = to_unix(expiring_before);
            let day = before.div_euclid(86_400);
            let whole: i64 = c
                .prepare_cached(
                    "SELECT COALESCE(SUM(n), 0) FROM device_expiry_days
                     WHERE workspace_id = ?1 AND day < ?2",
                )?
                .query_row(params![ws, day], |r| r.get(0))?;
            let partial: i64 = c
                .prepare_cached(
                    "SELECT COUNT(*) FROM devices
                     WHERE workspace_id = ?1 AND revoked_at IS NULL
                       AND cert_expires_at >= ?2 AND cert_expires_at < ?3",
                )?
                .query_row(params![ws, day * 86_400, before], |r| r.get(0))?;
            let n = |v: i64| u64::try_from(v).unwrap_or(0);
            Ok(DeviceCounts {
                total: n(total),
                connected: n(connected),
                expiring: n(whole + partial),
                revoked: n(revoked),
            })
        })
        .await
    }

    pub(crate) async fn find_device(
        &self,
        workspace: WorkspaceId,
        id: DeviceId,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        self.read(move |c| {
            let sql = format!("{DEVICE_SELECT} WHERE d.id = ?1 AND d.workspace_id = ?2");
            let device = c
                .prepare_cached(&sql)?
                .query_row([id.as_str(), workspace.as_str()], device_from_row)
                .optional()?;
            Ok(device)
        })
        .await
    }

    pub(crate) async fn device_status(
        &self,
        id: DeviceId,
    ) -> Result<Option<DeviceStatus>, StoreError> {
        self.read(move |c| {
            let status = c
                .prepare_cached(
                    "SELECT workspace_id, revoked_at, cert_serial, previous_cert_serial,
                            cert_superseded_at, cert_key
                     FROM devices WHERE id = ?1",
                )?
                .query_row([id.as_str()], |row| {
                    let previous: Option<String> = row.get(3)?;
                    let superseded_at = opt_time(row, 4)?;
                    Ok(DeviceStatus {
                        workspace_id: parsed(row, 0)?,
                        revoked_at: opt_time(row, 1)?,
                        cert_serial: row.get(2)?,
                        previous_cert: previous.zip(superseded_at),
                        cert_key: row.get(5)?,
                    })
                })
                .optional()?;
            Ok(status)
        })
        .await
    }
}

fn device_from_row(row: &Row<'_>) -> rusqlite::Result<DeviceRecord> {
    let labels: String = row.get(3)?;
    let facts: Option<String> = row.get(4)?;
    Ok(DeviceRecord {
        id: parsed(row, 0)?,
        workspace_id: parsed(row, 1)?,
        name: row.get(2)?,
        labels: serde_json::from_str(&labels).map_err(|e| conversion(3, e))?,
        facts: facts
            .map(|f| serde_json::from_str(&f))
            .transpose()
            .map_err(|e| conversion(4, e))?,
        spiffe_id: parsed(row, 5)?,
        enrolled_at: time_at(row, 6)?,
        enrolled_by_key: parsed(row, 7)?,
        enrolled_by_member: row.get(8)?,
        cert_serial: row.get(9)?,
        cert_expires_at: time_at(row, 10)?,
        revoked_at: opt_time(row, 11)?,
        last_seen_at: opt_time(row, 12)?,
        connected: row.get(13)?,
        agent_version: row.get(14)?,
    })
}
