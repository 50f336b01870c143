//! Devices: enrollment (which spends one use of the enrolling key), listing, and what the
//! gateway records.

use heex_proto::api::Facts;
use heex_proto::{DeviceId, WorkspaceId};
use rusqlite::{params, OptionalExtension, Row};
use time::OffsetDateTime;

use super::{audit, conversion, opt_time, parsed, time_at, SqliteStore};
use crate::gateway::DeviceStatus;
use crate::store::{to_unix, AuditEntry, DeviceRecord, NewDevice, StoreError};

/// A device with its enrolling member's email, in the column order [`device_from_row`] reads.
const DEVICE_SELECT: &str = "
    SELECT d.id, d.workspace_id, d.name, d.labels, d.facts, d.spiffe_id,
           d.enrolled_at, d.enrolled_by_key, m.email, d.cert_serial,
           d.cert_expires_at, d.revoked_at, d.last_seen_at
    FROM devices d JOIN members m ON m.id = d.enrolled_by_member";

impl SqliteStore {
    pub(crate) async fn insert_device(
        &self,
        d: NewDevice,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        let labels = serde_json::to_string(&d.labels)
            .map_err(|e| StoreError::Database(format!("cannot encode labels: {e}")))?;
        let facts = d
            .facts
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Database(format!("cannot encode facts: {e}")))?;
        self.write(move |c| {
            super::keys::caller(c, &audit)?;
            // The use is counted in the same transaction as the device, so concurrent
            // enrollments cannot overspend a limited key. A revocation scheduled for the end
            // of a rotation overlap does not count until then.
            let usable = c
                .prepare_cached(
                    "UPDATE api_keys SET uses = uses + 1
                     WHERE id = ?1 AND (revoked_at IS NULL OR revoked_at > ?2)
                       AND expires_at > ?2 AND (max_uses IS NULL OR uses < max_uses)",
                )?
                .execute(params![d.enrolled_by_key.as_str(), to_unix(d.enrolled_at)])?;
            if usable == 0 {
                return Err(StoreError::KeyUnusable(d.enrolled_by_key));
            }
            c.prepare_cached(
                "INSERT INTO devices (id, workspace_id, name, labels, facts, spiffe_id,
                     enrolled_at, enrolled_by_key, enrolled_by_member, cert_serial, cert_expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                d.id.as_str(),
                d.workspace_id.as_str(),
                d.name,
                labels,
                facts,
                d.spiffe_id.to_string(),
                to_unix(d.enrolled_at),
                d.enrolled_by_key.as_str(),
                d.enrolled_by_member.as_str(),
                d.cert_serial,
                to_unix(d.cert_expires_at)
            ])?;
            audit::insert(c, &audit)
        })
        .await
    }

    pub(crate) async fn list_devices(
        &self,
        workspace: WorkspaceId,
    ) -> Result<Vec<DeviceRecord>, StoreError> {
        self.read(move |c| {
            let sql =
                format!("{DEVICE_SELECT} WHERE d.workspace_id = ?1 ORDER BY d.enrolled_at, d.id");
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map([workspace.as_str()], device_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
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
                            cert_superseded_at
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
                    })
                })
                .optional()?;
            Ok(status)
        })
        .await
    }

    pub(crate) async fn record_seen(
        &self,
        id: DeviceId,
        facts: Option<Facts>,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let facts = facts
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Database(format!("cannot encode facts: {e}")))?;
        self.write(move |c| {
            // A revoked device records nothing more; the caller learns it is not live.
            let n = c
                .prepare_cached(
                    "UPDATE devices
                     SET last_seen_at = MAX(COALESCE(last_seen_at, 0), ?1),
                         facts = COALESCE(?2, facts)
                     WHERE id = ?3 AND revoked_at IS NULL",
                )?
                .execute(params![to_unix(at), facts, id.as_str()])?;
            Ok(n == 1)
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
    })
}
