//! API keys: create, find, list, revoke, rotate, and the in-memory use times.

use std::str::FromStr;

use heex_proto::api::Scope;
use heex_proto::{KeyId, MemberId, WorkspaceId};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};
use time::OffsetDateTime;

use super::{audit, conversion, opt_time, parsed, time_at, SqliteStore};
use crate::access::{self, Refusal};
use crate::store::{
    from_unix, to_unix, AuditEntry, KeyRecord, NewKey, PageOf, PageRequest, Revocation, Role,
    Rotation, SortValue, StoreError,
};

/// A key with its workspace, owner and revoker, in the column order [`key_from_row`] reads.
const KEY_SELECT: &str = "
    SELECT k.id, k.workspace_id, w.name, k.member_id, m.email, m.role, k.name, k.scope,
           k.created_at, k.expires_at, k.last_used_at, k.revoked_at, r.email,
           k.max_uses, k.uses, k.revoked_reason, k.replaced_by, m.removed_at
    FROM api_keys k
    JOIN workspaces w ON w.id = k.workspace_id
    JOIN members m ON m.id = k.member_id
    LEFT JOIN members r ON r.id = k.revoked_by";

impl SqliteStore {
    pub(crate) async fn create_key(&self, k: NewKey, audit: AuditEntry) -> Result<(), StoreError> {
        self.write(move |c| {
            caller(c, &audit)?;
            insert_key(c, &k)?;
            audit::insert(c, &audit)
        })
        .await
    }

    pub(crate) async fn find_key(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let found = self.read(move |c| select_key(c, &id)).await?;
        Ok(found.map(|k| self.with_pending_touch(k)))
    }

    pub(crate) async fn list_keys(
        &self,
        workspace: WorkspaceId,
        owner: Option<MemberId>,
        page: PageRequest,
    ) -> Result<PageOf<KeyRecord>, StoreError> {
        let keys = self
            .read(move |c| {
                let mut sql = format!("{KEY_SELECT} WHERE k.workspace_id = ?");
                let mut values = vec![Value::Text(workspace.as_str().to_owned())];
                if let Some(owner) = &owner {
                    sql.push_str(" AND k.member_id = ?");
                    values.push(Value::Text(owner.as_str().to_owned()));
                }
                page.finish_query(&mut sql, &mut values, &["k.created_at", "k.id"], false)?;
                let mut stmt = c.prepare_cached(&sql)?;
                let rows = stmt
                    .query_map(params_from_iter(values), key_from_row)?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(PageOf::from_rows(rows, &page, |k: &KeyRecord| {
                    vec![
                        SortValue::Int(to_unix(k.created_at)),
                        SortValue::Text(k.id.to_string()),
                    ]
                }))
            })
            .await?;
        Ok(keys.map(|k| self.with_pending_touch(k)))
    }

    pub(crate) async fn revoke_key(
        &self,
        id: KeyId,
        by: MemberId,
        at: OffsetDateTime,
        audit: AuditEntry,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let found = self
            .write(move |c| {
                let actor = caller(c, &audit)?;
                if let (Some(actor), Some(target)) = (actor, select_key(c, &id)?) {
                    access::revoke_key(&actor, &target, OffsetDateTime::now_utc())
                        .map_err(StoreError::Refused)?;
                }
                // A key whose revocation is only scheduled (rotation overlap) is revoked now.
                let changed = c
                    .prepare_cached(
                        "UPDATE api_keys SET revoked_at = ?1, revoked_by = ?2, revoked_reason = ?3
                         WHERE id = ?4 AND (revoked_at IS NULL OR revoked_at > ?1)",
                    )?
                    .execute(params![
                        to_unix(at),
                        by.as_str(),
                        Revocation::Revoked.as_str(),
                        id.as_str()
                    ])?;
                if changed > 0 {
                    audit::insert(c, &audit)?;
                }
                select_key(c, &id)
            })
            .await?;
        Ok(found.map(|k| self.with_pending_touch(k)))
    }

    pub(crate) async fn rotate_key(&self, r: Rotation) -> Result<KeyRecord, StoreError> {
        let new_id = r.new.id.clone();
        let created = self
            .write(move |c| {
                for entry in &r.audit {
                    caller(c, entry)?;
                }
                // The replacement first: the old key's replaced_by references it.
                insert_key(c, &r.new)?;
                let changed = c
                    .prepare_cached(
                        "UPDATE api_keys
                         SET revoked_at = ?1, revoked_by = ?2, revoked_reason = ?3, replaced_by = ?4
                         WHERE id = ?5 AND revoked_at IS NULL AND expires_at > ?6",
                    )?
                    .execute(params![
                        to_unix(r.old_revoked_at),
                        r.by.as_str(),
                        Revocation::Rotated.as_str(),
                        r.new.id.as_str(),
                        r.old.as_str(),
                        to_unix(r.at)
                    ])?;
                if changed == 0 {
                    // Revoked, rotated or expired since it was checked: undo the insert.
                    return Err(StoreError::KeyUnusable(r.old));
                }
                for entry in &r.audit {
                    audit::insert(c, entry)?;
                }
                select_key(c, &r.new.id)
            })
            .await?;
        created.ok_or_else(|| StoreError::Database(format!("rotated key {new_id} vanished")))
    }

    pub(crate) fn touch_key_used(&self, id: &KeyId, at: OffsetDateTime) {
        self.writer.touch(id, to_unix(at));
    }

    /// A key record with a use time not yet written, so readers never see it go back.
    pub(super) fn with_pending_touch(&self, mut key: KeyRecord) -> KeyRecord {
        let pending = self.writer.pending_touch(&key.id);
        if let Some(at) = pending.and_then(|s| from_unix(s).ok()) {
            if key.last_used_at.is_none_or(|prev| prev < at) {
                key.last_used_at = Some(at);
            }
        }
        key
    }
}

/// Inserts a key's metadata.
pub(super) fn insert_key(c: &Connection, k: &NewKey) -> Result<(), StoreError> {
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
}

/// The key with this id, as the connection sees it.
pub(super) fn select_key(c: &Connection, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
    let sql = format!("{KEY_SELECT} WHERE k.id = ?1");
    let key = c
        .prepare_cached(&sql)?
        .query_row([id.as_str()], key_from_row)
        .optional()?;
    Ok(key)
}

fn key_from_row(row: &Row<'_>) -> rusqlite::Result<KeyRecord> {
    let role: String = row.get(5)?;
    let scope: String = row.get(7)?;
    let reason: Option<String> = row.get(15)?;
    let replaced_by: Option<String> = row.get(16)?;
    Ok(KeyRecord {
        id: parsed(row, 0)?,
        workspace_id: parsed(row, 1)?,
        workspace_name: row.get(2)?,
        member_id: parsed(row, 3)?,
        member_email: row.get(4)?,
        member_role: Role::from_str(&role).map_err(|e| conversion(5, e))?,
        name: row.get(6)?,
        scope: Scope::from_str(&scope).map_err(|e| conversion(7, e))?,
        created_at: time_at(row, 8)?,
        expires_at: time_at(row, 9)?,
        last_used_at: opt_time(row, 10)?,
        revoked_at: opt_time(row, 11)?,
        revoked_by: row.get(12)?,
        max_uses: row.get(13)?,
        uses: row.get(14)?,
        revoked_reason: reason
            .map(|r| Revocation::parse(&r).ok_or_else(|| conversion(15, format!("{r:?}"))))
            .transpose()?,
        replaced_by: replaced_by
            .map(|id| {
                id.parse()
                    .map_err(|e: heex_proto::KeyParseError| conversion(16, e))
            })
            .transpose()?,
        member_removed_at: opt_time(row, 17)?,
    })
}

/// The caller's key of a change (see [`AuditEntry::caller`]) as this transaction sees it,
/// checked against what the change needs; `None` for a change made by no key (the system).
/// [`StoreError::Refused`] when the key is gone, revoked, expired, its member removed, or
/// its scope or role falls short.
pub(super) fn caller(c: &Connection, audit: &AuditEntry) -> Result<Option<KeyRecord>, StoreError> {
    let Some(check) = &audit.caller else {
        return Ok(None);
    };
    let key = select_key(c, &check.key)?
        .filter(|k| k.workspace_id == audit.workspace_id)
        .ok_or(StoreError::Refused(Refusal::Unauthorized))?;
    access::check(&key, check.need, check.action, OffsetDateTime::now_utc())
        .map_err(StoreError::Refused)?;
    Ok(Some(key))
}
