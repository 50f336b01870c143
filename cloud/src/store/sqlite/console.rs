//! Web console sessions and one-time sign-in tokens (only their SHA-256 is stored).

use rusqlite::OptionalExtension;

use super::{parsed, time_at, SqliteStore};
use crate::store::{ConsoleSession, StoreError};

impl SqliteStore {
    pub(crate) async fn find_console_session(
        &self,
        id_hash: String,
    ) -> Result<Option<ConsoleSession>, StoreError> {
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT id_hash, key_id, created_at, last_seen_at, expires_at
                 FROM console_sessions WHERE id_hash = ?1",
            )?
            .query_row([&id_hash], |row| {
                Ok(ConsoleSession {
                    id_hash: row.get(0)?,
                    key_id: parsed(row, 1)?,
                    created_at: time_at(row, 2)?,
                    last_seen_at: time_at(row, 3)?,
                    expires_at: time_at(row, 4)?,
                })
            })
            .optional()?)
        })
        .await
    }
}
