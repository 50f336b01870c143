//! API keys: find and list.

use super::paging::SqlPage;
use std::str::FromStr;

use heex_proto::api::Scope;
use heex_proto::{KeyId, MemberId, WorkspaceId};
use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection, OptionalExtension, Row};

use super::{conversion, opt_time, parsed, time_at, SqliteStore};
use crate::store::{
    to_unix, KeyRecord, PageOf, PageRequest, Revocation, Role, SortValue, StoreError,
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
    pub(crate) async fn find_key(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.read(move |c| select_key(c, &id)).await
    }

    pub(crate) async fn list_keys(
        &self,
        workspace: WorkspaceId,
        owner: Option<MemberId>,
        page: PageRequest,
    ) -> Result<PageOf<KeyRecord>, StoreError> {
        self.read(move |c| {
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
        .await
    }
}

/// The keys of these members.
pub(super) fn keys_of_members(
    c: &Connection,
    members: &[MemberId],
) -> Result<Vec<KeyRecord>, StoreError> {
    let mut keys = Vec::new();
    let sql = format!("{KEY_SELECT} WHERE k.member_id = ?1");
    let mut stmt = c.prepare_cached(&sql)?;
    for m in members {
        for key in stmt.query_map([m.as_str()], key_from_row)? {
            keys.push(key?);
        }
    }
    Ok(keys)
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
