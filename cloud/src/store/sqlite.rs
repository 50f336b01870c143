//! The embedded SQLite backend: one data file, zero setup.
//!
//! Writes are durable (WAL, `synchronous=FULL`) and group-committed by one writer thread
//! ([`writer`]); reads run on a small pool of read-only connections ([`pool`]) so they never
//! queue behind the writer.

mod audit;
mod console;
mod device_lifecycle;
mod devices;
mod keys;
mod members;
pub mod pool;
mod reports;
pub mod writer;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::types::Type;
use rusqlite::{params, Connection, Row};
use serde_json::json;
use time::OffsetDateTime;

use super::{
    from_unix, migrations, to_unix, AuditAction, AuditEntry, NewKey, NewMember, NewWorkspace,
    StoreError,
};
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

    pub(crate) async fn create_workspace(&self, ws: NewWorkspace) -> Result<(), StoreError> {
        self.write(move |c| insert_workspace(c, &ws)).await
    }

    pub(crate) async fn create_member(&self, m: NewMember) -> Result<(), StoreError> {
        self.write(move |c| insert_member(c, &m)).await
    }

    pub(crate) async fn create_workspace_with_owner(
        &self,
        ws: NewWorkspace,
        owner: NewMember,
        key: NewKey,
    ) -> Result<(), StoreError> {
        self.write(move |c| {
            insert_workspace(c, &ws)?;
            insert_member(c, &owner)?;
            keys::insert_key(c, &key)?;
            let system = |action, target: String, details| AuditEntry {
                workspace_id: ws.id.clone(),
                at: ws.created_at,
                actor: SYSTEM_ACTOR.to_owned(),
                action,
                target,
                details,
                caller: None,
            };
            audit::insert(
                c,
                &system(
                    AuditAction::MemberJoin,
                    owner.email.clone(),
                    json!({"member_id": owner.id, "role": owner.role}),
                ),
            )?;
            audit::insert(
                c,
                &system(
                    AuditAction::KeyCreate,
                    key.id.to_string(),
                    json!({"name": key.name, "scope": key.scope, "owner": owner.email}),
                ),
            )
        })
        .await
    }

    pub(crate) async fn close(&self) {
        self.writer.close().await;
    }
}

/// The actor of what the server does on its own (e.g. `init`).
pub const SYSTEM_ACTOR: &str = "system";

fn insert_workspace(c: &Connection, ws: &NewWorkspace) -> Result<(), StoreError> {
    c.prepare_cached("INSERT INTO workspaces (id, name, created_at) VALUES (?1, ?2, ?3)")?
        .execute(params![ws.id.as_str(), ws.name, to_unix(ws.created_at)])?;
    Ok(())
}

fn insert_member(c: &Connection, m: &NewMember) -> Result<(), StoreError> {
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
