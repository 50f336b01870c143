//! The embedded SQLite backend: one data file, zero setup.
//!
//! Writes are durable (WAL, `synchronous=FULL`) and group-committed by one writer thread
//! ([`writer`]); reads run on a small pool of read-only connections ([`pool`]) so they never
//! queue behind the writer.

pub mod pool;
pub mod writer;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use heex_proto::api::{Facts, Scope};
use heex_proto::{DeviceId, KeyId, MemberId, WorkspaceId};
use rusqlite::types::Type;
use rusqlite::{params, Connection, OptionalExtension, Row};
use time::OffsetDateTime;

use super::{
    from_unix, migrations, to_unix, DeviceRecord, KeyRecord, NewDevice, NewKey, NewMember,
    NewWorkspace, Role, StoreError,
};
use crate::gateway::DeviceStatus;
use pool::ReadPool;
use writer::{Writer, WriterStats};

/// How long a connection waits for a lock held by another process before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite store.
pub struct SqliteStore {
    writer: Writer,
    readers: Arc<ReadPool>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, migrates it and starts the writer.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Database(format!(
                "cannot switch {} to WAL mode (got {mode})",
                path.display()
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.set_prepared_statement_cache_capacity(64);
        migrations::migrate(&mut conn, to_unix(OffsetDateTime::now_utc()))?;

        let readers = ReadPool::open(path.to_owned(), BUSY_TIMEOUT)?;
        let writer = Writer::spawn(conn)?;
        Ok(SqliteStore { writer, readers })
    }

    /// The writer's counters.
    pub fn stats(&self) -> &WriterStats {
        self.writer.stats()
    }

    async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.writer.write(op).await
    }

    async fn read<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.readers.read(op).await
    }

    pub(super) async fn create_workspace(&self, ws: NewWorkspace) -> Result<(), StoreError> {
        self.write(move |c| {
            c.prepare_cached("INSERT INTO workspaces (id, name, created_at) VALUES (?1, ?2, ?3)")?
                .execute(params![ws.id.as_str(), ws.name, to_unix(ws.created_at)])?;
            Ok(())
        })
        .await
    }

    pub(super) async fn create_member(&self, m: NewMember) -> Result<(), StoreError> {
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO members (id, workspace_id, email, role, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                m.id.as_str(),
                m.workspace_id.as_str(),
                m.email,
                m.role.as_str(),
                to_unix(m.created_at)
            ])?;
            Ok(())
        })
        .await
    }

    pub(super) async fn remove_member(
        &self,
        id: MemberId,
        by: MemberId,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.write(move |c| {
            let removed = c
                .prepare_cached(
                    "UPDATE members SET removed_at = ?1 WHERE id = ?2 AND removed_at IS NULL",
                )?
                .execute(params![to_unix(at), id.as_str()])?;
            if removed == 0 {
                return Ok(false);
            }
            c.prepare_cached(
                "UPDATE api_keys SET revoked_at = ?1, revoked_by = ?2
                 WHERE member_id = ?3 AND revoked_at IS NULL",
            )?
            .execute(params![to_unix(at), by.as_str(), id.as_str()])?;
            Ok(true)
        })
        .await
    }

    pub(super) async fn create_key(&self, k: NewKey) -> Result<(), StoreError> {
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO api_keys
                     (id, workspace_id, member_id, name, scope, created_at, expires_at, max_uses)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                k.id.as_str(),
                k.workspace_id.as_str(),
                k.member_id.as_str(),
                k.name,
                k.scope.as_str(),
                to_unix(k.created_at),
                to_unix(k.expires_at),
                k.max_uses
            ])?;
            Ok(())
        })
        .await
    }

    pub(super) async fn find_key(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let found = self.read(move |c| select_key(c, &id)).await?;
        Ok(found.map(|k| self.with_pending_touch(k)))
    }

    pub(super) async fn revoke_key(
        &self,
        id: KeyId,
        by: MemberId,
        at: OffsetDateTime,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let found = self
            .write(move |c| {
                c.prepare_cached(
                    "UPDATE api_keys SET revoked_at = ?1, revoked_by = ?2
                     WHERE id = ?3 AND revoked_at IS NULL",
                )?
                .execute(params![to_unix(at), by.as_str(), id.as_str()])?;
                select_key(c, &id)
            })
            .await?;
        Ok(found.map(|k| self.with_pending_touch(k)))
    }

    pub(super) fn touch_key_used(&self, id: &KeyId, at: OffsetDateTime) {
        self.writer.touch(id, to_unix(at));
    }

    /// A key record with a use time not yet written, so readers never see it go back.
    fn with_pending_touch(&self, mut key: KeyRecord) -> KeyRecord {
        let pending = self.writer.pending_touch(&key.id);
        if let Some(at) = pending.and_then(|s| from_unix(s).ok()) {
            if key.last_used_at.is_none_or(|prev| prev < at) {
                key.last_used_at = Some(at);
            }
        }
        key
    }

    pub(super) async fn insert_device(&self, d: NewDevice) -> Result<(), StoreError> {
        let labels = serde_json::to_string(&d.labels)
            .map_err(|e| StoreError::Database(format!("cannot encode labels: {e}")))?;
        let facts = d
            .facts
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Database(format!("cannot encode facts: {e}")))?;
        self.write(move |c| {
            let usable = c
                .prepare_cached(
                    "UPDATE api_keys SET uses = uses + 1
                     WHERE id = ?1 AND revoked_at IS NULL AND expires_at > ?2
                       AND (max_uses IS NULL OR uses < max_uses)",
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
            Ok(())
        })
        .await
    }

    pub(super) async fn list_devices(
        &self,
        workspace: WorkspaceId,
    ) -> Result<Vec<DeviceRecord>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT d.id, d.workspace_id, d.name, d.labels, d.facts, d.spiffe_id,
                        d.enrolled_at, d.enrolled_by_key, m.email, d.cert_serial,
                        d.cert_expires_at, d.revoked_at, d.last_seen_at
                 FROM devices d JOIN members m ON m.id = d.enrolled_by_member
                 WHERE d.workspace_id = ?1
                 ORDER BY d.enrolled_at, d.id",
            )?;
            let rows = stmt.query_map([workspace.as_str()], device_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    pub(super) async fn device_status(
        &self,
        id: DeviceId,
    ) -> Result<Option<DeviceStatus>, StoreError> {
        self.read(move |c| {
            let status = c
                .prepare_cached("SELECT workspace_id, revoked_at FROM devices WHERE id = ?1")?
                .query_row([id.as_str()], |row| {
                    Ok(DeviceStatus {
                        workspace_id: parsed(row, 0)?,
                        revoked_at: opt_time(row, 1)?,
                    })
                })
                .optional()?;
            Ok(status)
        })
        .await
    }

    pub(super) async fn record_seen(
        &self,
        id: DeviceId,
        facts: Option<Facts>,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let facts = facts
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Database(format!("cannot encode facts: {e}")))?;
        self.write(move |c| {
            c.prepare_cached(
                "UPDATE devices
                 SET last_seen_at = MAX(COALESCE(last_seen_at, 0), ?1),
                     facts = COALESCE(?2, facts)
                 WHERE id = ?3",
            )?
            .execute(params![to_unix(at), facts, id.as_str()])?;
            Ok(())
        })
        .await
    }

    pub(super) async fn close(&self) {
        self.writer.close().await;
    }
}

fn select_key(c: &Connection, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
    let key = c
        .prepare_cached(
            "SELECT k.id, k.workspace_id, w.name, k.member_id, m.email, m.role, k.name, k.scope,
                    k.created_at, k.expires_at, k.last_used_at, k.revoked_at, r.email,
                    k.max_uses, k.uses
             FROM api_keys k
             JOIN workspaces w ON w.id = k.workspace_id
             JOIN members m ON m.id = k.member_id
             LEFT JOIN members r ON r.id = k.revoked_by
             WHERE k.id = ?1",
        )?
        .query_row([id.as_str()], |row| {
            Ok(KeyRecord {
                id: parsed(row, 0)?,
                workspace_id: parsed(row, 1)?,
                workspace_name: row.get(2)?,
                member_id: parsed(row, 3)?,
                member_email: row.get(4)?,
                member_role: {
                    let s: String = row.get(5)?;
                    Role::parse(&s).ok_or_else(|| conversion(5, format!("unknown role {s:?}")))?
                },
                name: row.get(6)?,
                scope: {
                    let s: String = row.get(7)?;
                    Scope::from_str(&s).map_err(|e| conversion(7, e))?
                },
                created_at: time_at(row, 8)?,
                expires_at: time_at(row, 9)?,
                last_used_at: opt_time(row, 10)?,
                revoked_at: opt_time(row, 11)?,
                revoked_by: row.get(12)?,
                max_uses: row.get(13)?,
                uses: row.get(14)?,
            })
        })
        .optional()?;
    Ok(key)
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

fn conversion(col: usize, e: impl ToString) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(col, Type::Text, e.to_string().into())
}

fn parsed<T>(row: &Row<'_>, col: usize) -> rusqlite::Result<T>
where
    T: FromStr,
    T::Err: ToString,
{
    let s: String = row.get(col)?;
    s.parse().map_err(|e: T::Err| conversion(col, e))
}

fn time_at(row: &Row<'_>, col: usize) -> rusqlite::Result<OffsetDateTime> {
    let secs: i64 = row.get(col)?;
    from_unix(secs).map_err(|e| conversion(col, e))
}

fn opt_time(row: &Row<'_>, col: usize) -> rusqlite::Result<Option<OffsetDateTime>> {
    let secs: Option<i64> = row.get(col)?;
    secs.map(from_unix)
        .transpose()
        .map_err(|e| conversion(col, e))
}
