//! The single writer thread and its group commit.
//!
//! The thread owns the only write connection. It takes every queued operation (up to
//! [`MAX_BATCH`]), runs each inside its own savepoint of one transaction, commits once (one
//! fsync for the whole batch) and only then answers each caller. A failing operation rolls
//! back to its savepoint without disturbing the others in its batch. Key-use times noted
//! in memory ride along with the next batch, or are written on their own within
//! [`FLUSH_INTERVAL`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use heex_proto::KeyId;
use rusqlite::{params, Connection};
use tokio::sync::oneshot;

use crate::store::StoreError;

/// Most operations committed in one transaction.
pub const MAX_BATCH: usize = 1024;
/// How long pending key-use times may wait for a batch before they are written on their own.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Counters of the writer thread.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Transactions committed.
    pub commits: AtomicU64,
    /// Operations applied.
    pub jobs: AtomicU64,
}

/// The handle callers use to queue writes. Dropping every handle stops the thread after it
/// wrote what was queued.
pub struct Writer {
    jobs: mpsc::Sender<Msg>,
    touches: Arc<Mutex<HashMap<KeyId, i64>>>,
    stats: Arc<WriterStats>,
}

enum Msg {
    Job(Box<dyn Job>),
    Close(oneshot::Sender<()>),
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub fn spawn(conn: Connection) -> Result<Writer, StoreError> {
        let (jobs, rx) = mpsc::channel();
        let touches = Arc::new(Mutex::new(HashMap::new()));
        let stats = Arc::new(WriterStats::default());
        let thread = WriterThread {
            conn,
            touches: Arc::clone(&touches),
            stats: Arc::clone(&stats),
        };
        std::thread::Builder::new()
            .name("heex-store-writer".to_owned())
            .spawn(move || thread.run(rx))
            .map_err(|e| StoreError::Database(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer {
            jobs,
            touches,
            stats,
        })
    }

    /// Runs `op` in the writer's next transaction and waits until that transaction
    /// committed. An error from `op` rolls back only `op`'s changes.
    pub async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = TypedJob {
            op: Some(op),
            result: None,
            reply: Some(reply),
        };
        self.jobs
            .send(Msg::Job(Box::new(job)))
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Notes that key `id` was used at Unix second `at`; written with a later batch.
    pub fn touch(&self, id: &KeyId, at: i64) {
        if let Ok(mut touches) = self.touches.lock() {
            let slot = touches.entry(id.clone()).or_insert(at);
            *slot = (*slot).max(at);
        }
    }

    /// A use time of `id` noted but not yet written.
    pub fn pending_touch(&self, id: &KeyId) -> Option<i64> {
        self.touches.lock().ok().and_then(|t| t.get(id).copied())
    }

    /// Writes what is queued and pending, then stops the thread. Later writes fail with
    /// [`StoreError::Closed`].
    pub async fn close(&self) {
        let (done, wait) = oneshot::channel();
        if self.jobs.send(Msg::Close(done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// The thread's counters.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }
}

/// One queued write: applied inside the batch transaction, answered after the commit.
trait Job: Send {
    fn apply(&mut self, conn: &Connection);
    fn finish(self: Box<Self>, committed: Result<(), StoreError>);
}

struct TypedJob<T, F> {
    op: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: Option<oneshot::Sender<Result<T, StoreError>>>,
}

impl<T, F> Job for TypedJob<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
{
    fn apply(&mut self, conn: &Connection) {
        let Some(op) = self.op.take() else { return };
        if let Err(e) = run_sql(conn, "SAVEPOINT job") {
            self.result = Some(Err(e));
            return;
        }
        let result = op(conn);
        let end = match result {
            Ok(_) => run_sql(conn, "RELEASE job"),
            Err(_) => run_sql(conn, "ROLLBACK TO job").and_then(|()| run_sql(conn, "RELEASE job")),
        };
        self.result = Some(match (result, end) {
            (Err(e), _) | (Ok(_), Err(e)) => Err(e),
            (Ok(v), Ok(())) => Ok(v),
        });
    }

    fn finish(mut self: Box<Self>, committed: Result<(), StoreError>) {
        let result = match committed {
            Ok(()) => self.result.take().unwrap_or(Err(StoreError::Closed)),
            Err(e) => Err(e),
        };
        if let Some(reply) = self.reply.take() {
            // The caller may have gone away; the write stands regardless.
            let _ = reply.send(result);
        }
    }
}

fn run_sql(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// The writer thread's state.
struct WriterThread {
    conn: Connection,
    touches: Arc<Mutex<HashMap<KeyId, i64>>>,
    stats: Arc<WriterStats>,
}

impl WriterThread {
    fn run(self, rx: mpsc::Receiver<Msg>) {
        let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
        loop {
            let mut close = None;
            let mut disconnected = false;
            match rx.recv_timeout(FLUSH_INTERVAL) {
                Ok(Msg::Job(job)) => batch.push(job),
                Ok(Msg::Close(done)) => close = Some(done),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => disconnected = true,
            }
            while close.is_none() && !disconnected && batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(Msg::Job(job)) => batch.push(job),
                    Ok(Msg::Close(done)) => close = Some(done),
                    Err(_) => break,
                }
            }
            let touches = self
                .touches
                .lock()
                .map(|mut t| std::mem::take(&mut *t))
                .unwrap_or_default();
            if !batch.is_empty() || !touches.is_empty() {
                self.commit(&mut batch, &touches);
            }
            if let Some(done) = close {
                let _ = done.send(());
                return;
            }
            if disconnected {
                return;
            }
        }
    }

    /// Applies `batch` and the key-use times in one transaction, commits once, then answers.
    fn commit(&self, batch: &mut Vec<Box<dyn Job>>, touches: &HashMap<KeyId, i64>) {
        let outcome = run_sql(&self.conn, "BEGIN IMMEDIATE").and_then(|()| {
            for job in batch.iter_mut() {
                job.apply(&self.conn);
            }
            for (id, at) in touches {
                let touched = self
                    .conn
                    .prepare_cached(
                        "UPDATE api_keys SET last_used_at = ?1
                         WHERE id = ?2 AND (last_used_at IS NULL OR last_used_at < ?1)",
                    )
                    .and_then(|mut s| s.execute(params![at, id.as_str()]));
                if let Err(e) = touched {
                    tracing::warn!(key = %id, error = %e, "cannot record key use");
                }
            }
            run_sql(&self.conn, "COMMIT")
        });
        match &outcome {
            Ok(()) => {
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .jobs
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::error!(error = %e, jobs = batch.len(), "store transaction failed");
                if !self.conn.is_autocommit() {
                    let _ = run_sql(&self.conn, "ROLLBACK");
                }
            }
        }
        for job in batch.drain(..) {
            job.finish(outcome.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(dir: &tempfile::TempDir) -> (Writer, std::path::PathBuf) {
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE t (name TEXT PRIMARY KEY);",
        )
        .unwrap();
        (Writer::spawn(conn).unwrap(), path)
    }

    fn insert(name: String) -> impl FnOnce(&Connection) -> Result<usize, StoreError> {
        move |c| Ok(c.execute("INSERT INTO t (name) VALUES (?1)", [name])?)
    }

    fn count(path: &std::path::Path) -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    #[tokio::test]
    async fn failing_job_does_not_spoil_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (w, path) = writer(&dir);
        let two_rows_then_fail = |c: &Connection| -> Result<(), StoreError> {
            c.execute("INSERT INTO t (name) VALUES ('x1')", [])?;
            c.execute("INSERT INTO t (name) VALUES ('a')", [])?;
            Ok(())
        };
        let (a, dup, b) = tokio::join!(
            w.write(insert("a".into())),
            w.write(two_rows_then_fail),
            w.write(insert("b".into())),
        );
        a.unwrap();
        b.unwrap();
        assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
        // 'x1' was rolled back with its failing job; 'a' and 'b' committed.
        assert_eq!(count(&path), 2);
    }

    #[tokio::test]
    async fn concurrent_writes_are_group_committed() {
        let dir = tempfile::tempdir().unwrap();
        let (w, path) = writer(&dir);
        let w = Arc::new(w);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..300 {
            let w = Arc::clone(&w);
            tasks.spawn(async move { w.write(insert(format!("n{i}"))).await });
        }
        while let Some(r) = tasks.join_next().await {
            assert_eq!(r.unwrap().unwrap(), 1);
        }
        // Every answer came after its commit: all rows are visible to another connection.
        assert_eq!(count(&path), 300);
        // All 300 were queued before the writer could commit many: far fewer commits.
        let commits = w.stats().commits.load(Ordering::Relaxed);
        assert!(commits <= 30, "{commits} commits for 300 writes");
        assert_eq!(w.stats().jobs.load(Ordering::Relaxed), 300);

        w.close().await;
        assert!(matches!(
            w.write(insert("late".into())).await,
            Err(StoreError::Closed)
        ));
        assert_eq!(count(&path), 300);
    }
}
