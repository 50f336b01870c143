//! Members and invitations: the listings.

use super::paging::SqlPage;
use std::str::FromStr;

use heex_proto::{MemberId, WorkspaceId};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};
use time::OffsetDateTime;

use super::{conversion, opt_time, parsed, time_at, SqliteStore};
use crate::store::{
    to_unix, InvitationRecord, MemberRecord, PageOf, PageRequest, Role, SortValue, StoreError,
};

/// A member, in the column order [`member_from_row`] reads (the count of usable keys is the
/// store's, by the key rule).
const MEMBER_SELECT: &str = "
    SELECT m.id, m.workspace_id, m.email, m.role, m.created_at, m.removed_at FROM members m";

impl SqliteStore {
    pub(crate) async fn list_members(
        &self,
        workspace: WorkspaceId,
        page: PageRequest,
    ) -> Result<PageOf<MemberRecord>, StoreError> {
        self.read(move |c| {
            let mut sql = format!("{MEMBER_SELECT} WHERE m.workspace_id = ?");
            let mut values = vec![Value::Text(workspace.as_str().to_owned())];
            page.finish_query(&mut sql, &mut values, &["m.created_at", "m.id"], false)?;
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt
                .query_map(params_from_iter(values), member_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(PageOf::from_rows(rows, &page, |m: &MemberRecord| {
                vec![
                    SortValue::Int(to_unix(m.created_at)),
                    SortValue::Text(m.id.to_string()),
                ]
            }))
        })
        .await
    }

    pub(crate) async fn find_member(
        &self,
        workspace: WorkspaceId,
        id: MemberId,
    ) -> Result<Option<MemberRecord>, StoreError> {
        self.read(move |c| select_member(c, &workspace, &id)).await
    }

    pub(crate) async fn list_invitations(
        &self,
        workspace: WorkspaceId,
        now: OffsetDateTime,
        page: PageRequest,
    ) -> Result<PageOf<InvitationRecord>, StoreError> {
        self.read(move |c| {
            let mut sql = format!(
                "{INVITATION_SELECT} WHERE i.workspace_id = ? AND i.accepted_at IS NULL
                   AND i.cancelled_at IS NULL AND i.expires_at > ?"
            );
            let mut values = vec![
                Value::Text(workspace.as_str().to_owned()),
                Value::Integer(to_unix(now)),
            ];
            page.finish_query(&mut sql, &mut values, &["i.created_at", "i.id"], false)?;
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt
                .query_map(params_from_iter(values), invitation_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(PageOf::from_rows(rows, &page, |i: &InvitationRecord| {
                vec![
                    SortValue::Int(to_unix(i.created_at)),
                    SortValue::Text(i.id.clone()),
                ]
            }))
        })
        .await
    }
}

/// A pending invitation with its inviter's email, in the column order
/// [`invitation_from_row`] reads.
const INVITATION_SELECT: &str = "
    SELECT i.id, i.email, i.role, m.email, i.created_at, i.expires_at
    FROM invitations i JOIN members m ON m.id = i.invited_by";

fn invitation_from_row(row: &Row<'_>) -> rusqlite::Result<InvitationRecord> {
    let role: String = row.get(2)?;
    Ok(InvitationRecord {
        id: row.get(0)?,
        email: row.get(1)?,
        role: Role::from_str(&role).map_err(|e| conversion(2, e))?,
        invited_by: row.get(3)?,
        created_at: time_at(row, 4)?,
        expires_at: time_at(row, 5)?,
    })
}

pub(super) fn select_member(
    c: &Connection,
    workspace: &WorkspaceId,
    id: &MemberId,
) -> Result<Option<MemberRecord>, StoreError> {
    let sql = format!("{MEMBER_SELECT} WHERE m.workspace_id = ?1 AND m.id = ?2");
    let member = c
        .prepare_cached(&sql)?
        .query_row(params![workspace.as_str(), id.as_str()], member_from_row)
        .optional()?;
    Ok(member)
}

fn member_from_row(row: &Row<'_>) -> rusqlite::Result<MemberRecord> {
    let role: String = row.get(3)?;
    Ok(MemberRecord {
        id: parsed(row, 0)?,
        workspace_id: parsed(row, 1)?,
        email: row.get(2)?,
        role: Role::from_str(&role).map_err(|e| conversion(3, e))?,
        created_at: time_at(row, 4)?,
        removed_at: opt_time(row, 5)?,
        active_keys: 0,
    })
}
