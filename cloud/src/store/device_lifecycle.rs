//! Device lifecycle operations of the [`Store`]: renewal bookkeeping, revocation,
//! rename/labels and deletion.

use std::collections::BTreeMap;

use heex_proto::{DeviceId, WorkspaceId};
use time::OffsetDateTime;

use super::{ops, AuditEntry, IssuedCert, Store, StoreError};

/// What deleting a device did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteDeviceOutcome {
    /// The device and its record are gone.
    Deleted,
    /// No such device in the workspace.
    NotFound,
    /// The device is not revoked; only revoked devices may be deleted.
    NotRevoked,
}

impl Store {
    /// Records a certificate renewed at `at` from the certificate with serial `from_serial`,
    /// which becomes the previous one (see [`ops::record_renewal`], which also takes a
    /// renewal repeated for the same key). False when the device does not exist, is revoked,
    /// or `from_serial` is not its current serial (then nothing changes).
    pub async fn record_renewal(
        &self,
        id: &DeviceId,
        from_serial: &str,
        cert: IssuedCert,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let (id, from) = (id.clone(), from_serial.to_owned());
        self.transact(move |tx| ops::record_renewal(tx, &id, &from, &cert, at))
            .await
    }

    /// How many devices that are not revoked hold a certificate from another CA than the
    /// one with fingerprint `ca` (`sha256:…`).
    pub async fn devices_not_on_ca(&self, ca: &str) -> Result<u64, StoreError> {
        let ca = ca.to_owned();
        self.transact(move |tx| tx.devices_not_on_ca(&ca)).await
    }

    /// Ends a CA rotation from CA `from` to `to` (fingerprints): see [`ops::retire_ca`].
    pub async fn retire_ca(
        &self,
        from: &str,
        to: &str,
        force: bool,
        at: OffsetDateTime,
    ) -> Result<ops::CaRetirement, StoreError> {
        let (from, to) = (from.to_owned(), to.to_owned());
        self.transact(move |tx| ops::retire_ca(tx, &from, &to, force, at))
            .await
    }

    /// Revokes a device of `workspace` at `at` with its audit event, once (a second revoke
    /// keeps the first time). False when no such device exists.
    pub async fn revoke_device(
        &self,
        workspace: &WorkspaceId,
        id: &DeviceId,
        at: OffsetDateTime,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        let (ws, id) = (workspace.clone(), id.clone());
        self.transact(move |tx| ops::revoke_device(tx, &ws, &id, at, &audit))
            .await
    }

    /// Renames a device and/or replaces its labels, with its audit event. False when no
    /// such device exists.
    pub async fn update_device(
        &self,
        workspace: &WorkspaceId,
        id: &DeviceId,
        name: Option<String>,
        labels: Option<BTreeMap<String, String>>,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        let (ws, id) = (workspace.clone(), id.clone());
        self.transact(move |tx| {
            ops::update_device(tx, &ws, &id, name.as_deref(), labels.as_ref(), &audit)
        })
        .await
    }

    /// Deletes a revoked device with its audit event.
    pub async fn delete_device(
        &self,
        workspace: &WorkspaceId,
        id: &DeviceId,
        audit: AuditEntry,
    ) -> Result<DeleteDeviceOutcome, StoreError> {
        let (ws, id) = (workspace.clone(), id.clone());
        self.transact(move |tx| ops::delete_device(tx, &ws, &id, &audit))
            .await
    }
}
