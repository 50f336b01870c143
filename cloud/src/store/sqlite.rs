//! The embedded SQLite backend: one data file, zero setup.
//!
//! Writes are durable (WAL, `synchronous=FULL`) and group-committed by one writer thread
//! ([`writer`]); reads run on a small pool of read-only connections ([`pool`]) so they never
//! queue behind the writer.

mod audit;
mod console;
mod devices;
mod keys;
mod members;
mod paging;
pub mod pool;
mod reports;
mod tx;
pub mod writer;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use heex_proto::api::{AuditEvent, ReportInfo};
use heex_proto::{DeviceId, KeyId, MemberId, WorkspaceId};
use rusqlite::types::Type;
use rusqlite::{Connection, Row};
use time::OffsetDateTime;

use super::backend::{Backend, BoxFuture, TxOp};
use super::{
    from_unix, migrations, to_unix, AuditFilter, ConsoleSession, DeviceCounts, DeviceQuery,
    DeviceRecord, InvitationRecord, KeyRecord, MemberRecord, PageOf, PageRequest, StoreError,
};
use crate::store::DeviceStatus;
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
}

impl Backend for SqliteStore {
    fn transact(&self, mut op: TxOp) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |c| op(&mut tx::SqliteTx(c))))
    }

    fn find_key(&self, id: KeyId) -> BoxFuture<'_, Result<Option<KeyRecord>, StoreError>> {
        Box::pin(SqliteStore::find_key(self, id))
    }

    fn list_keys(
        &self,
        ws: WorkspaceId,
        owner: Option<MemberId>,
        page: PageRequest,
    ) -> BoxFuture<'_, Result<PageOf<KeyRecord>, StoreError>> {
        Box::pin(SqliteStore::list_keys(self, ws, owner, page))
    }

    fn keys_of_members(
        &self,
        members: Vec<MemberId>,
    ) -> BoxFuture<'_, Result<Vec<KeyRecord>, StoreError>> {
        Box::pin(self.read(move |c| keys::keys_of_members(c, &members)))
    }

    fn list_members(
        &self,
        ws: WorkspaceId,
        page: PageRequest,
    ) -> BoxFuture<'_, Result<PageOf<MemberRecord>, StoreError>> {
        Box::pin(SqliteStore::list_members(self, ws, page))
    }

    fn find_member(
        &self,
        ws: WorkspaceId,
        id: MemberId,
    ) -> BoxFuture<'_, Result<Option<MemberRecord>, StoreError>> {
        Box::pin(SqliteStore::find_member(self, ws, id))
    }

    fn list_invitations(
        &self,
        ws: WorkspaceId,
        now: OffsetDateTime,
        page: PageRequest,
    ) -> BoxFuture<'_, Result<PageOf<InvitationRecord>, StoreError>> {
        Box::pin(SqliteStore::list_invitations(self, ws, now, page))
    }

    fn audit_events(
        &self,
        ws: WorkspaceId,
        filter: AuditFilter,
    ) -> BoxFuture<'_, Result<PageOf<AuditEvent>, StoreError>> {
        Box::pin(SqliteStore::audit_events(self, ws, filter))
    }

    fn query_devices(
        &self,
        ws: WorkspaceId,
        query: DeviceQuery,
    ) -> BoxFuture<'_, Result<PageOf<DeviceRecord>, StoreError>> {
        Box::pin(SqliteStore::query_devices(self, ws, query))
    }

    fn device_counts(
        &self,
        ws: WorkspaceId,
        expiring_before: OffsetDateTime,
    ) -> BoxFuture<'_, Result<DeviceCounts, StoreError>> {
        Box::pin(SqliteStore::device_counts(self, ws, expiring_before))
    }

    fn find_device(
        &self,
        ws: WorkspaceId,
        id: DeviceId,
    ) -> BoxFuture<'_, Result<Option<DeviceRecord>, StoreError>> {
        Box::pin(SqliteStore::find_device(self, ws, id))
    }

    fn device_status(
        &self,
        id: DeviceId,
    ) -> BoxFuture<'_, Result<Option<DeviceStatus>, StoreError>> {
        Box::pin(SqliteStore::device_status(self, id))
    }

    fn highest_report_seq(&self, device: DeviceId) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(SqliteStore::highest_report_seq(self, device))
    }

    fn list_reports(
        &self,
        device: DeviceId,
        after: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<ReportInfo>, StoreError>> {
        Box::pin(SqliteStore::list_reports(self, device, after, limit))
    }

    fn find_console_session(
        &self,
        hash: String,
    ) -> BoxFuture<'_, Result<Option<ConsoleSession>, StoreError>> {
        Box::pin(SqliteStore::find_console_session(self, hash))
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.read(|c| {
            c.query_row("SELECT COUNT(*) FROM schema_version", [], |_| Ok(()))?;
            Ok(())
        }))
    }

    fn touch_key_used(&self, id: &KeyId, at: OffsetDateTime) {
        self.writer.touch(id, to_unix(at));
    }

    fn pending_key_use(&self, id: &KeyId) -> Option<OffsetDateTime> {
        self.writer
            .pending_touch(id)
            .and_then(|s| from_unix(s).ok())
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.writer.close())
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::Conflict(e.to_string()),
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::DiskFull(e.to_string()),
            _ => StoreError::Database(e.to_string()),
        }
    }
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
