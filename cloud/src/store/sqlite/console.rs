//! Web console sessions and one-time sign-in tokens (only their SHA-256 is stored).

use heex_proto::KeyId;
use rusqlite::{params, OptionalExtension};
use time::OffsetDateTime;

use super::{audit, keys, parsed, time_at, SqliteStore};
use crate::store::{to_unix, AuditEntry, ConsoleSession, StoreError};

impl SqliteStore {
    pub(crate) async fn create_console_session(
        &self,
        session: ConsoleSession,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        self.write(move |c| {
            // The key may have been revoked since the sign-in checked it.
            keys::caller(c, &audit)?;
            // Expired sessions and sign-in tokens are dropped whenever a session starts.
            let now = to_unix(session.created_at);
            c.prepare_cached("DELETE FROM console_sessions WHERE expires_at <= ?1")?
                .execute([now])?;
            c.prepare_cached("DELETE FROM console_signin_tokens WHERE expires_at <= ?1")?
                .execute([now])?;
            c.prepare_cached(
                "INSERT INTO console_sessions (id_hash, key_id, created_at, last_seen_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                session.id_hash,
                session.key_id.as_str(),
                to_unix(session.created_at),
                to_unix(session.last_seen_at),
                to_unix(session.expires_at)
            ])?;
            audit::insert(c, &audit)
        })
        .await
    }

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

    pub(crate) async fn touch_console_session(
        &self,
        id_hash: String,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.write(move |c| {
            c.prepare_cached("UPDATE console_sessions SET last_seen_at = ?2 WHERE id_hash = ?1")?
                .execute(params![id_hash, to_unix(at)])?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn delete_console_session(
        &self,
        id_hash: String,
        audit: Option<AuditEntry>,
    ) -> Result<(), StoreError> {
        self.write(move |c| {
            let n = c
                .prepare_cached("DELETE FROM console_sessions WHERE id_hash = ?1")?
                .execute([id_hash])?;
            match audit {
                Some(audit) if n == 1 => audit::insert(c, &audit),
                _ => Ok(()),
            }
        })
        .await
    }

    pub(crate) async fn create_signin_token(
        &self,
        token_hash: String,
        key_id: KeyId,
        at: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO console_signin_tokens (token_hash, key_id, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                token_hash,
                key_id.as_str(),
                to_unix(at),
                to_unix(expires_at)
            ])?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn redeem_signin_token(
        &self,
        token_hash: String,
        at: OffsetDateTime,
    ) -> Result<Option<KeyId>, StoreError> {
        self.write(move |c| {
            let key: Option<String> = c
                .prepare_cached(
                    "UPDATE console_signin_tokens SET used_at = ?2
                     WHERE token_hash = ?1 AND used_at IS NULL AND expires_at > ?2
                     RETURNING key_id",
                )?
                .query_row(params![token_hash, to_unix(at)], |row| row.get(0))
                .optional()?;
            key.map(|k| {
                k.parse::<KeyId>().map_err(|e| StoreError::Corrupt {
                    what: "key id",
                    detail: e.to_string(),
                })
            })
            .transpose()
        })
        .await
    }
}
