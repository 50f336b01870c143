//! Read connections: opened on demand, reused, at most [`MAX_READERS`] in use at once, each
//! read run on the blocking thread pool so it never stalls the async runtime. In WAL mode a
//! reader sees the last committed state and never waits for the writer.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::Semaphore;

use crate::store::StoreError;

/// Read connections; reads beyond this many at once wait for one to be free.
pub const MAX_READERS: usize = 8;

/// The read connections of one database.
pub struct ReadPool {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl ReadPool {
    /// A pool for the database at `path`; opens one connection now to fail early.
    pub fn open(path: PathBuf, busy_timeout: Duration) -> Result<Arc<ReadPool>, StoreError> {
        let pool = Arc::new(ReadPool {
            path,
            busy_timeout,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(MAX_READERS),
        });
        let first = pool.take()?;
        pool.put(first);
        Ok(pool)
    }

    /// Runs `op` on a read connection.
    pub async fn read<T, F>(self: &Arc<Self>, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let conn = pool.take()?;
            let result = op(&conn);
            pool.put(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Database(format!("read task failed: {e}")))?
    }

    fn take(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = self.idle.lock().ok().and_then(|mut idle| idle.pop()) {
            return Ok(conn);
        }
        let conn = Connection::open(&self.path)?;
        conn.pragma_update(None, "query_only", "ON")?;
        conn.busy_timeout(self.busy_timeout)?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(conn)
    }

    fn put(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < MAX_READERS {
                idle.push(conn);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readers_are_read_only_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (7);")
            .unwrap();
        let pool = ReadPool::open(path, Duration::from_secs(1)).unwrap();
        let x: i64 = pool
            .read(|c| Ok(c.query_row("SELECT x FROM t", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(x, 7);
        let write = pool
            .read(|c| Ok(c.execute("INSERT INTO t VALUES (8)", [])?))
            .await;
        assert!(write.is_err(), "query_only");
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let pool = Arc::clone(&pool);
            tasks.spawn(async move {
                pool.read(|c| Ok(c.query_row("SELECT x FROM t", [], |r| r.get::<_, i64>(0))?))
                    .await
            });
        }
        while let Some(r) = tasks.join_next().await {
            assert_eq!(r.unwrap().unwrap(), 7);
        }
        assert!(pool.idle.lock().unwrap().len() <= MAX_READERS);
    }
}
