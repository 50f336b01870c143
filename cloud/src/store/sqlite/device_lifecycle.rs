//! Device lifecycle writes: certificate renewal, revocation, rename/labels, deletion.

use std::collections::BTreeMap;

use heex_proto::{DeviceId, MemberId, WorkspaceId};
use rusqlite::{params, Connection, OptionalExtension};
use time::OffsetDateTime;

use super::{audit, parsed, SqliteStore};
use crate::access::{self, DeviceAction};
use crate::store::{to_unix, AuditEntry, DeleteDeviceOutcome, StoreError};

/// A device of `workspace`: who enrolled it and when it was revoked; `None` when there is no
/// such device. When the change is made with an API key, the access policy decides on
/// `action` here, inside the change's transaction.
fn device_for(
    c: &Connection,
    workspace: &WorkspaceId,
    id: &DeviceId,
    audit_entry: &AuditEntry,
    action: DeviceAction,
) -> Result<Option<Option<i64>>, StoreError> {
    let actor = super::keys::caller(c, audit_entry)?;
    let device = c
        .prepare_cached(
            "SELECT enrolled_by_member, revoked_at FROM devices WHERE id = ?1 AND workspace_id = ?2",
        )?
        .query_row([id.as_str(), workspace.as_str()], |r| {
            Ok((parsed::<MemberId>(r, 0)?, r.get::<_, Option<i64>>(1)?))
        })
        .optional()?;
    let Some((enrolled_by, revoked_at)) = device else {
        return Ok(None);
    };
    if let Some(actor) = actor {
        access::manage_device(&actor, &enrolled_by, action, OffsetDateTime::now_utc())
            .map_err(StoreError::Refused)?;
    }
    Ok(Some(revoked_at))
}

impl SqliteStore {
    pub(crate) async fn record_renewal(
        &self,
        id: DeviceId,
        from_serial: String,
        serial_hex: String,
        not_after: OffsetDateTime,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.write(move |c| {
            // Decided here, in the write: a revocation that lands between the gateway's
            // check and this write wins, and only the current certificate renews (a
            // concurrent renewal from the same serial, or one from a superseded copy,
            // changes nothing).
            let n = c
                .prepare_cached(
                    "UPDATE devices
                     SET previous_cert_serial = cert_serial, cert_superseded_at = ?1,
                         cert_serial = ?2, cert_expires_at = ?3
                     WHERE id = ?4 AND revoked_at IS NULL AND cert_serial = ?5",
                )?
                .execute(params![
                    to_unix(at),
                    serial_hex,
                    to_unix(not_after),
                    id.as_str(),
                    from_serial
                ])?;
            Ok(n == 1)
        })
        .await
    }

    pub(crate) async fn revoke_device(
        &self,
        workspace: WorkspaceId,
        id: DeviceId,
        at: OffsetDateTime,
        audit_entry: AuditEntry,
    ) -> Result<bool, StoreError> {
        self.write(move |c| {
            let exists = device_for(c, &workspace, &id, &audit_entry, DeviceAction::Revoke)?;
            match exists {
                None => Ok(false),
                // Already revoked: keep the first revocation time, record nothing new.
                Some(Some(_)) => Ok(true),
                Some(None) => {
                    // A revoked device is no longer connected: the gateway closes its sessions
                    // next, and their ends find no mark of theirs to clear.
                    c.prepare_cached(
                        "UPDATE devices SET revoked_at = ?1, connection = NULL, connected_at = NULL
                         WHERE id = ?2",
                    )?
                    .execute(params![to_unix(at), id.as_str()])?;
                    audit::insert(c, &audit_entry)?;
                    Ok(true)
                }
            }
        })
        .await
    }

    pub(crate) async fn update_device(
        &self,
        workspace: WorkspaceId,
        id: DeviceId,
        name: Option<String>,
        labels: Option<BTreeMap<String, String>>,
        audit_entry: AuditEntry,
    ) -> Result<bool, StoreError> {
        let label_rows = labels.clone();
        let labels = labels
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Database(format!("cannot encode labels: {e}")))?;
        self.write(move |c| {
            if device_for(c, &workspace, &id, &audit_entry, DeviceAction::Update)?.is_none() {
                return Ok(false);
            }
            let n = c
                .prepare_cached(
                    "UPDATE devices SET name = COALESCE(?1, name), labels = COALESCE(?2, labels)
                     WHERE id = ?3 AND workspace_id = ?4",
                )?
                .execute(params![name, labels, id.as_str(), workspace.as_str()])?;
            if n == 1 {
                if let Some(rows) = &label_rows {
                    super::devices::write_labels(c, &id, rows)?;
                }
                audit::insert(c, &audit_entry)?;
            }
            Ok(n == 1)
        })
        .await
    }

    pub(crate) async fn delete_device(
        &self,
        workspace: WorkspaceId,
        id: DeviceId,
        audit_entry: AuditEntry,
    ) -> Result<DeleteDeviceOutcome, StoreError> {
        self.write(move |c| {
            let revoked = device_for(c, &workspace, &id, &audit_entry, DeviceAction::Delete)?;
            match revoked {
                None => Ok(DeleteDeviceOutcome::NotFound),
                Some(None) => Ok(DeleteDeviceOutcome::NotRevoked),
                Some(Some(_)) => {
                    c.prepare_cached("DELETE FROM devices WHERE id = ?1")?
                        .execute([id.as_str()])?;
                    // Reports do not reference devices; they go with their device.
                    let has_reports: bool = c.query_row(
                        "SELECT EXISTS (SELECT 1 FROM sqlite_master
                                        WHERE type = 'table' AND name = 'reports')",
                        [],
                        |r| r.get(0),
                    )?;
                    if has_reports {
                        c.prepare_cached("DELETE FROM reports WHERE device_id = ?1")?
                            .execute([id.as_str()])?;
                    }
                    audit::insert(c, &audit_entry)?;
                    Ok(DeleteDeviceOutcome::Deleted)
                }
            }
        })
        .await
    }
}
