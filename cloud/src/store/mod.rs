//! The store: workspaces, members, API key metadata and devices.
//!
//! [`Store`] is the backend-neutral, async interface the API and the gateway use. The
//! embedded SQLite backend ([`sqlite`]) is the default; every method is written so that a
//! networked SQL backend can implement the same semantics. No secret material is stored:
//! API key secrets are derived from the server secret, which lives in the data directory.

pub mod migrations;
mod records;
pub mod sqlite;

pub use records::{DeviceRecord, KeyRecord, NewDevice, NewKey, NewMember, NewWorkspace, Role};

use std::path::Path;

use heex_proto::api::Facts;
use heex_proto::{DeviceId, KeyId, MemberId, WorkspaceId};
use time::OffsetDateTime;

use crate::gateway::{DeviceDirectory, DeviceStatus};

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database reported an error.
    #[error("{0}")]
    Database(String),
    /// A uniqueness or reference constraint refused the write.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The schema on disk cannot be used by this version.
    #[error("{0}")]
    Schema(String),
    /// A stored value does not parse.
    #[error("stored {what} is corrupt: {detail}")]
    Corrupt {
        /// Which value.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The enrolling key was revoked, expired or used up between its check and the write.
    #[error("API key {0} can no longer be used")]
    KeyUnusable(KeyId),
    /// The store was closed.
    #[error("the store is closed")]
    Closed,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::Conflict(e.to_string()),
            _ => StoreError::Database(e.to_string()),
        }
    }
}

/// The store. Cheap to share behind an `Arc`; every method may be called concurrently.
pub struct Store {
    backend: Backend,
}

enum Backend {
    Sqlite(sqlite::SqliteStore),
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and brings its schema up to
    /// date.
    pub fn open_sqlite(path: &Path) -> Result<Store, StoreError> {
        Ok(Store {
            backend: Backend::Sqlite(sqlite::SqliteStore::open(path)?),
        })
    }

    /// Creates a workspace.
    pub async fn create_workspace(&self, ws: NewWorkspace) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.create_workspace(ws).await,
        }
    }

    /// Adds a member to a workspace.
    pub async fn create_member(&self, member: NewMember) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.create_member(member).await,
        }
    }

    /// Removes a member and revokes all of the member's keys in the same transaction.
    /// Returns false when no such current member exists.
    pub async fn remove_member(
        &self,
        id: &MemberId,
        by: &MemberId,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.remove_member(id.clone(), by.clone(), at).await,
        }
    }

    /// Records a new API key's metadata.
    pub async fn create_key(&self, key: NewKey) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.create_key(key).await,
        }
    }

    /// The key with this id, with its owner and workspace.
    pub async fn find_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.find_key(id.clone()).await,
        }
    }

    /// Revokes a key at `at` on behalf of member `by`. Revoking a revoked key changes
    /// nothing. Returns the key as it is afterwards, or `None` when no such key exists.
    pub async fn revoke_key(
        &self,
        id: &KeyId,
        by: &MemberId,
        at: OffsetDateTime,
    ) -> Result<Option<KeyRecord>, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.revoke_key(id.clone(), by.clone(), at).await,
        }
    }

    /// Notes that a key was used at `at`. Cheap: the time is kept in memory and written with
    /// the next batch of writes (or within about a second).
    pub fn touch_key_used(&self, id: &KeyId, at: OffsetDateTime) {
        match &self.backend {
            Backend::Sqlite(s) => s.touch_key_used(id, at),
        }
    }

    /// Records an enrolled device and counts one use of the enrolling key, which must still
    /// be unrevoked, unexpired and under its use limit ([`StoreError::KeyUnusable`]).
    pub async fn insert_device(&self, device: NewDevice) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.insert_device(device).await,
        }
    }

    /// The devices of a workspace, oldest first.
    pub async fn list_devices(
        &self,
        workspace: &WorkspaceId,
    ) -> Result<Vec<DeviceRecord>, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.list_devices(workspace.clone()).await,
        }
    }

    /// What the gateway needs to know about a device, or `None` when it does not exist.
    pub async fn device_status(&self, id: &DeviceId) -> Result<Option<DeviceStatus>, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.device_status(id.clone()).await,
        }
    }

    /// Records that a device was heard from, with fresh facts when it sent some.
    pub async fn record_seen(
        &self,
        id: &DeviceId,
        facts: Option<&Facts>,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.record_seen(id.clone(), facts.cloned(), at).await,
        }
    }

    /// Writes pending key-use times and stops the writer. Later writes fail with
    /// [`StoreError::Closed`].
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(s) => s.close().await,
        }
    }
}

impl DeviceDirectory for Store {
    async fn device_status(&self, id: &DeviceId) -> anyhow::Result<Option<DeviceStatus>> {
        Ok(Store::device_status(self, id).await?)
    }

    async fn record_seen(
        &self,
        id: &DeviceId,
        facts: Option<&Facts>,
        at: OffsetDateTime,
    ) -> anyhow::Result<()> {
        Ok(Store::record_seen(self, id, facts, at).await?)
    }
}

/// Unix seconds of a time.
pub(crate) fn to_unix(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

/// The time at Unix seconds `secs`.
pub(crate) fn from_unix(secs: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(secs).map_err(|e| StoreError::Corrupt {
        what: "timestamp",
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests;
