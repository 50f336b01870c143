//! The PostgreSQL backend: one database shared by several `heex-cloud` replicas.
//!
//! Each domain operation runs in one SERIALIZABLE transaction on a pooled connection, retried
//! when PostgreSQL reports a serialization failure, so what an operation read (a key's uses,
//! the other owners, an invitation's state) still holds when it commits, whichever replica
//! ran the concurrent one. The driver is tokio-postgres through its blocking client
//! (`postgres`), run on the blocking thread pool, with an r2d2 pool of connections: the
//! store's rules run synchronously inside a transaction on both backends.

mod changes;
mod conn;
mod schema;
mod tx;

pub(crate) use changes::CHANNEL as CHANGES_CHANNEL;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use heex_proto::api::{AuditEvent, ReportInfo, Role, Scope};
use heex_proto::{DeviceId, KeyId, MemberId, WorkspaceId};
use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, IsolationLevel, NoTls, Row};
use r2d2_postgres::PostgresConnectionManager;
use time::OffsetDateTime;

use super::backend::{Backend, BoxFuture, TxOp};
use super::device_list::LabelSelector;
use super::{
    from_unix, like_escaped, to_unix, AuditFilter, ConsoleSession, DeviceCounts, DeviceQuery,
    DeviceRecord, DeviceSort, InvitationRecord, KeyRecord, MemberRecord, PageOf, PageRequest,
    Revocation, SortValue, StoreError,
};
use crate::store::DeviceStatus;

type Pool = r2d2::Pool<conn::Manager>;

/// Connections per replica.
const POOL_SIZE: u32 = 16;
/// How long a request waits for a connection (the database down or every connection busy).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts of a transaction that keeps meeting serialization failures.
const MAX_ATTEMPTS: u32 = 20;
/// How often noted key-use times are written.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// The PostgreSQL store.
pub struct PgStore {
    /// `None` once closed. The blocking client's connections must not be dropped on an
    /// async thread: [`Drop`] hands the pool to a thread of its own.
    pool: Option<Pool>,
    touches: Arc<Mutex<HashMap<KeyId, i64>>>,
    /// The connection settings of the change feed's own connection.
    listen: tokio_postgres::Config,
    /// Dropping it stops the key-use writer thread, which writes what is pending first.
    flusher: Mutex<Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        let flusher = self
            .flusher
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let pool = self.pool.take();
        let _ = std::thread::Builder::new()
            .name("heex-pg-close".to_owned())
            .spawn(move || {
                if let Some((stop, thread)) = flusher {
                    drop(stop);
                    let _ = thread.join();
                }
                drop(pool);
            })
            .map(|t| t.join());
    }
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        match e.code() {
            Some(c)
                if *c == SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == SqlState::T_R_DEADLOCK_DETECTED =>
            {
                StoreError::Retry
            }
            Some(c)
                if *c == SqlState::UNIQUE_VIOLATION
                    || *c == SqlState::FOREIGN_KEY_VIOLATION
                    || *c == SqlState::CHECK_VIOLATION =>
            {
                StoreError::Conflict(e.to_string())
            }
            Some(c) if *c == SqlState::DISK_FULL => StoreError::DiskFull(e.to_string()),
            Some(c)
                if c.code().starts_with("08")
                    || *c == SqlState::ADMIN_SHUTDOWN
                    || *c == SqlState::CANNOT_CONNECT_NOW =>
            {
                StoreError::Unavailable(e.to_string())
            }
            Some(_) => StoreError::Database(e.to_string()),
            // No SQLSTATE: the connection failed or closed.
            None if e.is_closed() || e.to_string().contains("connect") => {
                StoreError::Unavailable(e.to_string())
            }
            None => StoreError::Database(e.to_string()),
        }
    }
}

impl From<r2d2::Error> for StoreError {
    fn from(e: r2d2::Error) -> Self {
        StoreError::Unavailable(format!("no database connection: {e}"))
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`), migrates it and
    /// starts the key-use writer.
    pub fn open(url: &str) -> Result<PgStore, StoreError> {
        let config: postgres::Config = url.parse().map_err(|e| {
            StoreError::Database(format!(
                "the store URL is not a PostgreSQL connection string ({e}); use \
                 postgres://USER@HOST:PORT/DATABASE"
            ))
        })?;
        let listen = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::Database(format!("the store URL does not parse: {e}")))?;
        let mut first = config.connect(NoTls).map_err(|e| {
            let cause = std::error::Error::source(&e)
                .map(|c| format!(" ({c})"))
                .unwrap_or_default();
            StoreError::Unavailable(format!(
                "cannot connect to PostgreSQL: {e}{cause}; check that it runs and the URL"
            ))
        })?;
        schema::migrate(&mut first, to_unix(OffsetDateTime::now_utc()))?;
        drop(first);
        let manager = conn::Manager(PostgresConnectionManager::new(config, NoTls));
        let pool = r2d2::Pool::builder()
            .max_size(
                std::env::var("XPOOL")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(POOL_SIZE),
            )
            .min_idle(Some(2))
            .connection_timeout(CONNECT_TIMEOUT)
            .build(manager)?;
        let touches = Arc::new(Mutex::new(HashMap::new()));
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let (writer_pool, writer_touches) = (pool.clone(), Arc::clone(&touches));
        let thread = std::thread::Builder::new()
            .name("heex-pg-key-use".to_owned())
            .spawn(move || loop {
                let last = !matches!(
                    stopped.recv_timeout(FLUSH_INTERVAL),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                );
                flush(&writer_pool, &writer_touches, last);
                if last {
                    return;
                }
            })
            .map_err(|e| StoreError::Database(format!("cannot start the key-use writer: {e}")))?;
        Ok(PgStore {
            pool: Some(pool),
            listen,
            touches,
            flusher: Mutex::new(Some((stop, thread))),
        })
    }

    /// Runs `f` with a pooled connection on the blocking pool.
    async fn with_client<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut conn::Conn) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = self.pool.clone().ok_or(StoreError::Closed)?;
        tokio::task::spawn_blocking(move || {
            let mut c = pool.get()?;
            let out = f(&mut c);
            if out.is_ok() {
                c.answered();
            }
            // Back to the pool here, not on an async thread.
            drop(c);
            drop(pool);
            out
        })
        .await
        .map_err(|e| StoreError::Database(format!("store task failed: {e}")))?
    }
}

/// Writes the noted key-use times (each only moves forward), in one statement. A key whose
/// row another transaction holds (an enrollment counting a use, a revocation) is left for the
/// next round rather than waited for, so this writer never holds up enrollments nor
/// deadlocks with the writer of another replica; the `last` round, at close, waits.
fn flush(pool: &Pool, touches: &Mutex<HashMap<KeyId, i64>>, last: bool) {
    let (ids, times): (Vec<String>, Vec<i64>) = {
        let map = touches.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(k, v)| (k.as_str().to_owned(), *v)).unzip()
    };
    if ids.is_empty() {
        return;
    }
    let sql = if last {
        FLUSH_KEY_USE.replace("SKIP LOCKED", "")
    } else {
        FLUSH_KEY_USE.to_owned()
    };
    let written = (|| -> Result<Vec<String>, StoreError> {
        let mut c = pool.get()?;
        let rows = c.cached().query(&sql, &[&ids, &times])?;
        rows.iter()
            .map(|r| Ok(r.try_get::<_, String>(0)?))
            .collect()
    })();
    match written {
        Ok(done) => {
            let at: HashMap<&str, i64> = ids.iter().map(String::as_str).zip(times).collect();
            let mut map = touches.lock().unwrap_or_else(|e| e.into_inner());
            for id in done {
                let Ok(key) = id.parse::<KeyId>() else {
                    continue;
                };
                if map.get(&key) == at.get(id.as_str()) {
                    map.remove(&key);
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot write key use times yet; retrying"),
    }
}

/// Key-use times: the rows locked in id order (two writers cannot deadlock), busy ones
/// skipped; answers the ids written.
const FLUSH_KEY_USE: &str = "
    WITH free AS (
        SELECT id FROM api_keys WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE SKIP LOCKED
    )
    UPDATE api_keys k SET last_used_at = GREATEST(COALESCE(k.last_used_at, 0), t.at)
    FROM free JOIN unnest($1::text[], $2::int8[]) AS t (id, at) ON t.id = free.id
    WHERE k.id = free.id
    RETURNING k.id";

/// Runs `op` in one SERIALIZABLE transaction, retried on serialization failures.
fn run_transaction(
    c: &mut conn::Conn,
    op: &mut TxOp,
    isolation: IsolationLevel,
) -> Result<(), StoreError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = (|| {
            let (client, statements) = c.parts();
            let mut tx = client
                .build_transaction()
                .isolation_level(isolation)
                .start()?;
            let mut held = tx::PgTx::new(conn::Cached::new(&mut tx, statements));
            op(&mut held)?;
            held.flush()?;
            drop(held);
            tx.commit()?;
            Ok(())
        })();
        match result {
            Err(StoreError::Retry) if attempt < MAX_ATTEMPTS => {
                // Concurrent transactions touched the same rows: back off a little, at random.
                let jitter = rand::random::<u64>() % (1 << attempt.min(6));
                std::thread::sleep(Duration::from_millis(jitter));
            }
            Err(StoreError::Retry) => return Err(StoreError::Contended(MAX_ATTEMPTS)),
            other => return other,
        }
    }
}

// Conversions of stored values.

pub(super) fn time(secs: i64) -> Result<OffsetDateTime, StoreError> {
    from_unix(secs)
}

pub(super) fn opt_time(secs: Option<i64>) -> Result<Option<OffsetDateTime>, StoreError> {
    secs.map(from_unix).transpose()
}

pub(super) fn parse<T>(what: &'static str, s: &str) -> Result<T, StoreError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e: T::Err| StoreError::Corrupt {
        what,
        detail: format!("{s:?}: {e}"),
    })
}

pub(super) fn count(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A key with its workspace, owner and revoker, in the column order [`key_from_row`] reads.
pub(super) const KEY_SELECT: &str = "
    SELECT k.id, k.workspace_id, w.name, k.member_id, m.email, m.role, k.name, k.scope,
           k.created_at, k.expires_at, k.last_used_at, k.revoked_at, r.email,
           k.max_uses, k.uses, k.revoked_reason, k.replaced_by, m.removed_at
    FROM api_keys k
    JOIN workspaces w ON w.id = k.workspace_id
    JOIN members m ON m.id = k.member_id
    LEFT JOIN members r ON r.id = k.revoked_by";

pub(super) fn key_from_row(r: &Row) -> Result<KeyRecord, StoreError> {
    let reason: Option<String> = r.try_get(15)?;
    let replaced_by: Option<String> = r.try_get(16)?;
    Ok(KeyRecord {
        id: parse("key id", r.try_get(0)?)?,
        workspace_id: parse("workspace id", r.try_get(1)?)?,
        workspace_name: r.try_get(2)?,
        member_id: parse("member id", r.try_get(3)?)?,
        member_email: r.try_get(4)?,
        member_role: parse::<Role>("role", r.try_get(5)?)?,
        name: r.try_get(6)?,
        scope: parse::<Scope>("scope", r.try_get(7)?)?,
        created_at: time(r.try_get(8)?)?,
        expires_at: time(r.try_get(9)?)?,
        last_used_at: opt_time(r.try_get(10)?)?,
        revoked_at: opt_time(r.try_get(11)?)?,
        revoked_by: r.try_get(12)?,
        max_uses: r.try_get::<_, Option<i64>>(13)?.map(count),
        uses: count(r.try_get(14)?),
        revoked_reason: reason
            .map(|s| {
                Revocation::parse(&s).ok_or(StoreError::Corrupt {
                    what: "revocation reason",
                    detail: s,
                })
            })
            .transpose()?,
        replaced_by: replaced_by.map(|s| parse("key id", &s)).transpose()?,
        member_removed_at: opt_time(r.try_get(17)?)?,
    })
}

pub(super) const MEMBER_SELECT: &str =
    "SELECT m.id, m.workspace_id, m.email, m.role, m.created_at, m.removed_at FROM members m";

pub(super) fn member_from_row(r: &Row) -> Result<MemberRecord, StoreError> {
    Ok(MemberRecord {
        id: parse("member id", r.try_get(0)?)?,
        workspace_id: parse("workspace id", r.try_get(1)?)?,
        email: r.try_get(2)?,
        role: parse::<Role>("role", r.try_get(3)?)?,
        created_at: time(r.try_get(4)?)?,
        removed_at: opt_time(r.try_get(5)?)?,
        active_keys: 0,
    })
}

const DEVICE_SELECT: &str = "
    SELECT d.id, d.workspace_id, d.name, d.labels, d.facts, d.spiffe_id,
           d.enrolled_at, d.enrolled_by_key, m.email, d.cert_serial,
           d.cert_expires_at, d.revoked_at, d.last_seen_at, d.connection IS NOT NULL,
           d.agent_version
    FROM devices d JOIN members m ON m.id = d.enrolled_by_member";

fn device_from_row(r: &Row) -> Result<DeviceRecord, StoreError> {
    let labels: String = r.try_get(3)?;
    let facts: Option<String> = r.try_get(4)?;
    let corrupt = |what, e: serde_json::Error| StoreError::Corrupt {
        what,
        detail: e.to_string(),
    };
    Ok(DeviceRecord {
        id: parse("device id", r.try_get(0)?)?,
        workspace_id: parse("workspace id", r.try_get(1)?)?,
        name: r.try_get(2)?,
        labels: serde_json::from_str(&labels).map_err(|e| corrupt("labels", e))?,
        facts: facts
            .map(|f| serde_json::from_str(&f))
            .transpose()
            .map_err(|e| corrupt("facts", e))?,
        spiffe_id: parse("SPIFFE ID", r.try_get(5)?)?,
        enrolled_at: time(r.try_get(6)?)?,
        enrolled_by_key: parse("key id", r.try_get(7)?)?,
        enrolled_by_member: r.try_get(8)?,
        cert_serial: r.try_get(9)?,
        cert_expires_at: time(r.try_get(10)?)?,
        revoked_at: opt_time(r.try_get(11)?)?,
        last_seen_at: opt_time(r.try_get(12)?)?,
        connected: r.try_get(13)?,
        agent_version: r.try_get(14)?,
    })
}

/// A query under construction: SQL with `$n` parameters and their values.
struct Query {
    sql: String,
    values: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Query {
    fn new(sql: &str) -> Query {
        Query {
            sql: sql.to_owned(),
            values: Vec::new(),
        }
    }

    /// Appends `$n` bound to `v`.
    fn bind(&mut self, v: impl ToSql + Sync + Send + 'static) -> String {
        self.values.push(Box::new(v));
        format!("${}", self.values.len())
    }

    fn push(&mut self, s: &str) {
        self.sql.push_str(s);
    }

    /// Ends the query with the page: the keyset condition over `columns` (id last), the
    /// order and the LIMIT.
    fn finish_page(
        &mut self,
        page: &PageRequest,
        columns: &[&str],
        descending: bool,
    ) -> Result<(), StoreError> {
        let (op, dir) = if descending {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        if let Some(after) = &page.after {
            if after.len() != columns.len() {
                return Err(StoreError::BadPosition);
            }
            let marks: Vec<String> = after
                .iter()
                .map(|v| match v {
                    SortValue::Int(i) => self.bind(*i),
                    SortValue::Text(s) => self.bind(s.clone()),
                })
                .collect();
            let cond = format!(" AND ({}) {op} ({})", columns.join(", "), marks.join(", "));
            self.push(&cond);
        }
        let order: Vec<String> = columns.iter().map(|c| format!("{c} {dir}")).collect();
        let limit = self.bind(page.fetch());
        self.push(&format!(" ORDER BY {} LIMIT {limit}", order.join(", ")));
        Ok(())
    }

    fn run(&self, c: &mut Client) -> Result<Vec<Row>, StoreError> {
        let params: Vec<&(dyn ToSql + Sync)> = self
            .values
            .iter()
            .map(|v| v.as_ref() as &(dyn ToSql + Sync))
            .collect();
        Ok(c.query(self.sql.as_str(), &params)?)
    }
}

fn rows<T>(
    rows: Vec<Row>,
    f: impl Fn(&Row) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    rows.iter().map(f).collect()
}

impl PgStore {
    fn devices_page(
        c: &mut Client,
        ws: &WorkspaceId,
        q: &DeviceQuery,
    ) -> Result<PageOf<DeviceRecord>, StoreError> {
        let mut query = Query::new(DEVICE_SELECT);
        let w = query.bind(ws.as_str().to_owned());
        query.push(&format!(" WHERE d.workspace_id = {w}"));
        match q.connected {
            Some(true) => query.push(" AND d.connection IS NOT NULL"),
            Some(false) => query.push(" AND d.connection IS NULL"),
            None => {}
        }
        match q.revoked {
            Some(true) => query.push(" AND d.revoked_at IS NOT NULL"),
            Some(false) => query.push(" AND d.revoked_at IS NULL"),
            None => {}
        }
        for sel in &q.labels {
            let k = query.bind(sel.key().to_owned());
            let exists = |value: Option<String>| {
                format!(
                    "EXISTS (SELECT 1 FROM device_labels l WHERE l.device_id = d.id AND l.key = {k}{})",
                    value.map(|v| format!(" AND l.value = {v}")).unwrap_or_default()
                )
            };
            let cond = match sel {
                LabelSelector::Equals(_, v) => {
                    let v = query.bind(v.clone());
                    format!(" AND {}", exists(Some(v)))
                }
                LabelSelector::NotEquals(_, v) => {
                    let v = query.bind(v.clone());
                    format!(" AND NOT {}", exists(Some(v)))
                }
                LabelSelector::Exists(_) => format!(" AND {}", exists(None)),
                LabelSelector::Absent(_) => format!(" AND NOT {}", exists(None)),
            };
            query.push(&cond);
        }
        if let Some(text) = &q.search {
            let p = query.bind(format!("%{}%", like_escaped(text)));
            query.push(&format!(
                " AND (d.name ILIKE {p} ESCAPE '\\' OR d.id ILIKE {p} ESCAPE '\\')"
            ));
        }
        if let Some(member) = &q.enrolled_by {
            let p = query.bind(member.clone());
            query.push(&format!(
                " AND (d.enrolled_by_member = {p} OR m.email = {p})"
            ));
        }
        if let Some(key) = &q.enrolled_with_key {
            let p = query.bind(key.as_str().to_owned());
            query.push(&format!(" AND d.enrolled_by_key = {p}"));
        }
        if let Some(t) = q.cert_expires_before {
            let p = query.bind(to_unix(t));
            query.push(&format!(" AND d.cert_expires_at < {p}"));
        }
        if let Some(t) = q.last_seen_before {
            let p = query.bind(to_unix(t));
            query.push(&format!(" AND COALESCE(d.last_seen_at, 0) < {p}"));
        }
        let first = match q.sort {
            DeviceSort::Enrolled => "d.enrolled_at",
            DeviceSort::Name => "d.name",
            DeviceSort::LastSeen => "COALESCE(d.last_seen_at, 0)",
        };
        query.finish_page(&q.page, &[first, "d.id"], q.descending)?;
        let found = rows(query.run(c)?, device_from_row)?;
        let sort = q.sort;
        Ok(PageOf::from_rows(found, &q.page, |d| sort.key(d)))
    }

    fn audit_page(
        c: &mut Client,
        ws: &WorkspaceId,
        f: &AuditFilter,
    ) -> Result<PageOf<AuditEvent>, StoreError> {
        let mut query = Query::new(
            "SELECT id, at, actor, action, target, details FROM audit_events WHERE workspace_id = ",
        );
        let w = query.bind(ws.as_str().to_owned());
        query.push(&w);
        if let Some(actor) = &f.actor {
            let p = query.bind(actor.clone());
            query.push(&format!(" AND actor = {p}"));
        }
        if let Some(action) = &f.action {
            if let Some(prefix) = action.strip_suffix('.') {
                // A prefix: a range, so the index serves it.
                let lo = query.bind(format!("{prefix}."));
                let hi = query.bind(format!("{prefix}/"));
                query.push(&format!(" AND action >= {lo} AND action < {hi}"));
            } else {
                let p = query.bind(action.clone());
                query.push(&format!(" AND action = {p}"));
            }
        }
        if let Some(target) = &f.target {
            let p = query.bind(target.clone());
            query.push(&format!(" AND target = {p}"));
        }
        if let Some(since) = f.since {
            let p = query.bind(to_unix(since));
            query.push(&format!(" AND at >= {p}"));
        }
        query.finish_page(&f.page, &["id"], true)?;
        let events = rows(query.run(c)?, |r| {
            let details: String = r.try_get(5)?;
            Ok(AuditEvent {
                id: r.try_get(0)?,
                at: time(r.try_get(1)?)?,
                actor: r.try_get(2)?,
                action: r.try_get(3)?,
                target: r.try_get(4)?,
                details: serde_json::from_str(&details).map_err(|e| StoreError::Corrupt {
                    what: "audit details",
                    detail: e.to_string(),
                })?,
            })
        })?;
        Ok(PageOf::from_rows(events, &f.page, |e| {
            vec![SortValue::Int(e.id)]
        }))
    }
}

impl Backend for PgStore {
    fn transact(&self, mut op: TxOp) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(
            self.with_client(move |c| run_transaction(c, &mut op, IsolationLevel::Serializable)),
        )
    }

    fn transact_locking(&self, mut op: TxOp) -> BoxFuture<'_, Result<(), StoreError>> {
        // The operation locks the rows it decides on; each statement reads what is
        // committed. Deadlocks (two operations locking rows in opposite orders) are retried.
        Box::pin(
            self.with_client(move |c| run_transaction(c, &mut op, IsolationLevel::ReadCommitted)),
        )
    }

    fn find_key(&self, id: KeyId) -> BoxFuture<'_, Result<Option<KeyRecord>, StoreError>> {
        Box::pin(self.with_client(move |c| {
            let sql = format!("{KEY_SELECT} WHERE k.id = $1");
            c.cached()
                .query_opt(sql.as_str(), &[&id.as_str()])?
                .map(|r| key_from_row(&r))
                .transpose()
        }))
    }

    fn list_keys(
        &self,
        ws: WorkspaceId,
        owner: Option<MemberId>,
        page: PageRequest,
    ) -> BoxFuture<'_, Result<PageOf<KeyRecord>, StoreError>> {
        Box::pin(self.with_client(move |c| {
            let mut q = Query::new(KEY_SELECT);
            let w = q.bind(ws.as_str().to_owned());
            q.push(&format!(" WHERE k.workspace_id = {w}"));
            if let Some(owner) = &owner {
                let o = q.bind(owner.as_str().to_owned());
                q.push(&format!(" AND k.member_id = {o}"));
            }
            q.finish_page(&page, &["k.created_at", "k.id"], false)?;
            let keys = rows(q.run(&mut c.client)?, key_from_row)?;
            Ok(PageOf::from_rows(keys, &page, |k| {
                vec![
                    SortValue::Int(to_unix(k.created_at)),
                    SortValue::Text(k.id.to_string()),
                ]
            }))
        }))
    }

    fn keys_of_members(
        &self,
        members: Vec<MemberId>,
    ) -> BoxFuture<'_, Result<Vec<KeyRecord>, StoreError>> {
        Box::pin(self.with_client(move |c| {
            let ids: Vec<String> = members.iter().map(|m| m.as_str().to_owned()).collect();
            let sql = format!("{KEY_SELECT} WHERE k.member_id = ANY($1)");
            rows(c.cached().query(sql.as_str(), &[&ids])?, key_from_row)
        }))
    }

    fn list_members(
        &self,
        ws: WorkspaceId,
        page: PageRequest,
    ) -> BoxFuture<'_, Result<PageOf<MemberRecord>, StoreError>> {
        Box::pin(self.with_client(move |c| {
            let mut q = Query::new(MEMBER_SELECT);
            let w = q.bind(ws.as_str().to_owned());
            q.push(&format!(" WHERE m.workspace_id = {w}"));
            q.finish_page(&page, &["m.created_at", "m.id"], false)?;
            let members = rows(q.run(&mut c.client)?, member_from_row)?;
            Ok(PageOf::from_rows(members, &page, |m| {
                vec![
                    SortValue::Int(to_unix(m.created_at)),
                    SortValue::Text(m.id.to_string()),
                ]
            }))
        }))
    }

    fn find_member(
        &self,
        ws: WorkspaceId,
        id: MemberId,
    ) -> BoxFuture<'_, Result<Option<MemberRecord>, StoreError>> {
        Box::pin(self.with_client(move |c| {
            let sql = format!("{MEMBER_SELECT} WHERE m.workspace_id = $1 AND m.id = $2");
            c.cached()
                .query_opt(sql.as_str(), &[&ws.as_str(), &id.as_str()])?
                .map(|r| member_from_row(&r))
                .transpose()
        }))
    }

    fn list_invitations(
        &self,
        ws: WorkspaceId,
        now: OffsetDateTime,
        page: PageRequest,
    ) -> BoxFuture<'_, Result<PageOf<InvitationRecord>, StoreError>> {
        Box::pin(self.with_client(move |c| {
            let mut q = Query::new(
                "SELECT i.id, i.email, i.role, m.email, i.created_at, i.expires_at
                 FROM invitations i JOIN members m ON m.id = i.invited_by",
            );
            let w = q.bind(ws.as_str().to_owned());
            let n = q.bind(to_unix(now));
            q.push(&format!(
                " WHERE i.workspace_id = {w} AND i.accepted_at IS NULL
                   AND i.cancelled_at IS NULL AND i.expires_at > {n}"
            ));
            q.finish_page(&page, &["i.created_at", "i.id"], false)?;
            let found = rows(q.run(&mut c.client)?, |r| {
                Ok(InvitationRecord {
                    id: r.try_get(0)?,
                    email: r.try_get(1)?,
                    role: parse::<Role>("role", r.try_get(2)?)?,
                    invited_by: r.try_get(3)?,
                    created_at: time(r.try_get(4)?)?,
                    expires_at: time(r.try_get(5)?)?,
                })
            })?;
            Ok(PageOf::from_rows(found, &page, |i| {
                vec![
                    SortValue::Int(to_unix(i.created_at)),
                    SortValue::Text(i.id.clone()),
                ]
            }))
        }))
    }

    fn audit_events(
        &self,
        ws: WorkspaceId,
        filter: AuditFilter,
    ) -> BoxFuture<'_, Result<PageOf<AuditEvent>, StoreError>> {
        Box::pin(self.with_client(move |c| PgStore::audit_page(&mut c.client, &ws, &filter)))
    }

    fn query_devices(
        &self,
        ws: WorkspaceId,
        query: DeviceQuery,
    ) -> BoxFuture<'_, Result<PageOf<DeviceRecord>, StoreError>> {
        Box::pin(self.with_client(move |c| PgStore::devices_page(&mut c.client, &ws, &query)))
    }

    fn device_counts(
        &self,
        ws: WorkspaceId,
        expiring_before: OffsetDateTime,
    ) -> BoxFuture<'_, Result<DeviceCounts, StoreError>> {
        Box::pin(self.with_client(move |c| {
            let r = c.cached().query_one(
                // One index-only count each (see the schema's partial indexes), rather than
                // one pass over every row of the workspace.
                "SELECT (SELECT COUNT(*) FROM devices WHERE workspace_id = $1),
                        (SELECT COUNT(*) FROM devices
                         WHERE workspace_id = $1 AND connection IS NOT NULL),
                        (SELECT COUNT(*) FROM devices
                         WHERE workspace_id = $1 AND revoked_at IS NULL
                           AND cert_expires_at < $2),
                        (SELECT COUNT(*) FROM devices
                         WHERE workspace_id = $1 AND revoked_at IS NOT NULL)",
                &[&ws.as_str(), &to_unix(expiring_before)],
            )?;
            Ok(DeviceCounts {
                total: count(r.try_get(0)?),
                connected: count(r.try_get(1)?),
                expiring: count(r.try_get(2)?),
                revoked: count(r.try_get(3)?),
            })
        }))
    }

    fn find_device(
        &self,
        ws: WorkspaceId,
        id: DeviceId,
    ) -> BoxFuture<'_, Result<Option<DeviceRecord>, StoreError>> {
        Box::pin(self.with_client(move |c| {
            let sql = format!("{DEVICE_SELECT} WHERE d.id = $1 AND d.workspace_id = $2");
            c.cached()
                .query_opt(sql.as_str(), &[&id.as_str(), &ws.as_str()])?
                .map(|r| device_from_row(&r))
                .transpose()
        }))
    }

    fn device_status(
        &self,
        id: DeviceId,
    ) -> BoxFuture<'_, Result<Option<DeviceStatus>, StoreError>> {
        Box::pin(self.with_client(move |c| {
            let Some(r) = c.cached().query_opt(
                "SELECT workspace_id, revoked_at, cert_serial, previous_cert_serial,
                        cert_superseded_at, cert_key
                 FROM devices WHERE id = $1",
                &[&id.as_str()],
            )?
            else {
                return Ok(None);
            };
            let previous: Option<String> = r.try_get(3)?;
            let superseded_at = opt_time(r.try_get(4)?)?;
            Ok(Some(DeviceStatus {
                workspace_id: parse("workspace id", r.try_get(0)?)?,
                revoked_at: opt_time(r.try_get(1)?)?,
                cert_serial: r.try_get(2)?,
                previous_cert: previous.zip(superseded_at),
                cert_key: r.try_get(5)?,
            }))
        }))
    }

    fn highest_report_seq(&self, device: DeviceId) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.with_client(move |c| tx::highest(&mut c.cached(), &device)))
    }

    fn list_reports(
        &self,
        device: DeviceId,
        after: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<ReportInfo>, StoreError>> {
        Box::pin(self.with_client(move |c| {
            let after = super::seq_to_sql(after)?;
            let found = c.cached().query(
                "SELECT seq, received_at, payload FROM reports
                 WHERE device_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[&device.as_str(), &after, &i64::from(limit)],
            )?;
            rows(found, |r| {
                let payload: String = r.try_get(2)?;
                Ok(ReportInfo {
                    seq: count(r.try_get(0)?),
                    received_at: time(r.try_get(1)?)?,
                    payload: serde_json::from_str(&payload).map_err(|e| StoreError::Corrupt {
                        what: "report",
                        detail: e.to_string(),
                    })?,
                })
            })
        }))
    }

    fn find_console_session(
        &self,
        hash: String,
    ) -> BoxFuture<'_, Result<Option<ConsoleSession>, StoreError>> {
        Box::pin(self.with_client(move |c| {
            let Some(r) = c.cached().query_opt(
                "SELECT id_hash, key_id, created_at, last_seen_at, expires_at
                 FROM console_sessions WHERE id_hash = $1",
                &[&hash],
            )?
            else {
                return Ok(None);
            };
            Ok(Some(ConsoleSession {
                id_hash: r.try_get(0)?,
                key_id: parse("key id", r.try_get(1)?)?,
                created_at: time(r.try_get(2)?)?,
                last_seen_at: time(r.try_get(3)?)?,
                expires_at: time(r.try_get(4)?)?,
            }))
        }))
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.with_client(|c| {
            c.cached()
                .query_one("SELECT COUNT(*) FROM schema_version", &[])?;
            Ok(())
        }))
    }

    fn touch_key_used(&self, id: &KeyId, at: OffsetDateTime) {
        let mut map = self.touches.lock().unwrap_or_else(|e| e.into_inner());
        let at = to_unix(at);
        let slot = map.entry(id.clone()).or_insert(at);
        *slot = (*slot).max(at);
    }

    fn pending_key_use(&self, id: &KeyId) -> Option<OffsetDateTime> {
        let map = self.touches.lock().unwrap_or_else(|e| e.into_inner());
        map.get(id).and_then(|s| from_unix(*s).ok())
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        let flusher = self
            .flusher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        Box::pin(async move {
            if let Some((stop, thread)) = flusher {
                drop(stop);
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
        })
    }

    fn watch(&self) -> Option<tokio::sync::mpsc::Receiver<super::backend::Change>> {
        let (out, changes) = tokio::sync::mpsc::channel(4096);
        tokio::spawn(changes::listen(self.listen.clone(), out));
        Some(changes)
    }
}

/// A PostgreSQL connection URL (`postgres://…` or `postgresql://…`). It may hold a password:
/// its `Display` and `Debug` show it with the password replaced by `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl(String);

impl PostgresUrl {
    /// The URL itself, password included: only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for PostgresUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if !(s.starts_with("postgres://") || s.starts_with("postgresql://")) {
            return Err(
                "must be a postgres:// or postgresql:// URL (leave --store out to keep \
                        the SQLite database in the data directory)"
                    .to_owned(),
            );
        }
        // The driver's message names the part that is wrong, never the password.
        tokio_postgres::Config::from_str(s)
            .map_err(|e| format!("is not a PostgreSQL connection URL: {e}"))?;
        Ok(PostgresUrl(s.to_owned()))
    }
}

impl std::fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_password(&self.0))
    }
}

impl std::fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgresUrl({self})")
    }
}

/// `url` with the password of its user info and of a `password=` parameter replaced (the
/// query is rewritten only when it holds one); a fixed text if it does not parse as a URL.
fn redact_password(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "<a PostgreSQL URL>".to_owned();
    };
    if parsed.password().is_some() {
        // Fails only for URLs without a host, which have no password either.
        let _ = parsed.set_password(Some("***"));
    }
    if parsed
        .query_pairs()
        .any(|(k, _)| k.eq_ignore_ascii_case("password"))
    {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if k.eq_ignore_ascii_case("password") {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        for (url, shown) in [
            (
                "postgres://heex:s3cret@db.example:5432/heex",
                "postgres://heex:***@db.example:5432/heex",
            ),
            (
                "postgresql://heex@db/heex?password=s3cret&sslmode=disable",
                "postgresql://heex@db/heex?password=***&sslmode=disable",
            ),
            ("postgres://db", "postgres://db"),
            (
                "postgresql://postgres@localhost/postgres?host=/tmp/x",
                "postgresql://postgres@localhost/postgres?host=/tmp/x",
            ),
        ] {
            let parsed: PostgresUrl = url.parse().unwrap();
            assert_eq!(parsed.to_string(), shown);
            assert!(!format!("{parsed:?}").contains("s3cret"));
            assert_eq!(parsed.expose(), url);
        }
        for bad in ["sqlite://x", "db.example", "postgres://h:notaport/db"] {
            let err = bad.parse::<PostgresUrl>().unwrap_err();
            assert!(!err.contains("s3cret"), "{err}");
        }
    }
}
