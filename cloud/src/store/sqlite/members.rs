//! Members and invitations: list, remove (revoking every key in the same transaction),
//! invite, accept.

use std::str::FromStr;

use heex_proto::api::Scope;
use heex_proto::{KeyId, MemberId, WorkspaceId};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};
use serde_json::json;
use time::OffsetDateTime;

use super::keys::{caller, insert_key, select_key};
use super::{audit, conversion, insert_member, opt_time, parsed, time_at, SqliteStore};
use crate::access;
use crate::store::{
    to_unix, AcceptOutcome, Acceptance, AuditAction, AuditEntry, CancelOutcome, InvitationCancel,
    InvitationRecord, MemberRecord, NewInvitation, NewKey, NewMember, PageOf, PageRequest,
    RemoveOutcome, Revocation, Role, SortValue, StoreError,
};

/// A member with the count of their usable keys (at the second bound as `?1`), in the column
/// order [`member_from_row`] reads.
const MEMBER_SELECT: &str = "
    SELECT m.id, m.workspace_id, m.email, m.role, m.created_at, m.removed_at,
           (SELECT COUNT(*) FROM api_keys k
            WHERE k.member_id = m.id
              AND (k.revoked_at IS NULL OR k.revoked_at > ?1)
              AND k.expires_at > ?1
              AND (k.max_uses IS NULL OR k.uses < k.max_uses))
    FROM members m";

impl SqliteStore {
    pub(crate) async fn list_members(
        &self,
        workspace: WorkspaceId,
        now: OffsetDateTime,
        page: PageRequest,
    ) -> Result<PageOf<MemberRecord>, StoreError> {
        self.read(move |c| {
            let mut sql = format!("{MEMBER_SELECT} WHERE m.workspace_id = ?2");
            let mut values = vec![
                Value::Integer(to_unix(now)),
                Value::Text(workspace.as_str().to_owned()),
            ];
            // A bare `?` numbers itself after the highest number so far (?2).
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
        now: OffsetDateTime,
    ) -> Result<Option<MemberRecord>, StoreError> {
        self.read(move |c| select_member(c, &workspace, &id, now))
            .await
    }

    pub(crate) async fn remove_member(
        &self,
        workspace: WorkspaceId,
        id: MemberId,
        by: MemberId,
        at: OffsetDateTime,
        mut audit: AuditEntry,
    ) -> Result<RemoveOutcome, StoreError> {
        self.write(move |c| {
            let actor = caller(c, &audit)?;
            let Some(member) = select_member(c, &workspace, &id, at)? else {
                return Ok(RemoveOutcome::NotFound);
            };
            if let Some(actor) = &actor {
                access::remove_member(actor, &member.email, member.role, OffsetDateTime::now_utc())
                    .map_err(StoreError::Refused)?;
            }
            let already_removed_at = member.removed_at;
            if already_removed_at.is_none() && member.role == Role::Owner {
                let other_owners: i64 = c
                    .prepare_cached(
                        "SELECT COUNT(*) FROM members
                         WHERE workspace_id = ?1 AND role = 'owner' AND removed_at IS NULL
                           AND id != ?2",
                    )?
                    .query_row([workspace.as_str(), id.as_str()], |r| r.get(0))?;
                if other_owners == 0 {
                    return Ok(RemoveOutcome::LastOwner);
                }
            }
            c.prepare_cached(
                "UPDATE members SET removed_at = ?1 WHERE id = ?2 AND removed_at IS NULL",
            )?
            .execute(params![to_unix(at), id.as_str()])?;
            // Every key still usable now, including one whose revocation is only scheduled
            // after a rotation, is revoked by the same transaction. A repeated removal revokes
            // whatever is still active (e.g. a key created while the first removal ran).
            let mut revoked_keys = c
                .prepare_cached(
                    "UPDATE api_keys SET revoked_at = ?1, revoked_by = ?2, revoked_reason = ?3
                     WHERE member_id = ?4 AND (revoked_at IS NULL OR revoked_at > ?1)
                     RETURNING id",
                )?
                .query_map(
                    params![
                        to_unix(at),
                        by.as_str(),
                        Revocation::MemberRemoved.as_str(),
                        id.as_str()
                    ],
                    |row| parsed::<KeyId>(row, 0),
                )?
                .collect::<Result<Vec<_>, _>>()?;
            revoked_keys.sort();
            let mut cancelled_invitations = cancel_pending(
                c,
                "invited_by = ?3",
                &[&id.as_str()],
                at,
                &by,
                InvitationCancel::InviterRemoved,
            )?;
            cancelled_invitations.extend(cancel_pending(
                c,
                "workspace_id = ?3 AND lower(email) = lower(?4)",
                &[&workspace.as_str(), &member.email.as_str()],
                at,
                &by,
                InvitationCancel::InviteeRemoved,
            )?);
            cancelled_invitations.sort();
            if let Some(removed_at) = already_removed_at {
                if revoked_keys.is_empty() && cancelled_invitations.is_empty() {
                    return Ok(RemoveOutcome::AlreadyRemoved(removed_at));
                }
            }
            if let Some(details) = audit.details.as_object_mut() {
                details.insert("member_id".into(), json!(id));
                details.insert("role".into(), json!(member.role));
                details.insert("revoked_keys".into(), json!(revoked_keys));
                details.insert("cancelled_invitations".into(), json!(cancelled_invitations));
                if let Some(removed_at) = already_removed_at {
                    details.insert("already_removed_at".into(), json!(to_unix(removed_at)));
                }
            }
            audit::insert(c, &audit)?;
            let member = select_member(c, &workspace, &id, at)?
                .ok_or_else(|| StoreError::Database(format!("removed member {id} vanished")))?;
            Ok(RemoveOutcome::Removed {
                member,
                revoked_keys,
                cancelled_invitations,
                already_removed_at,
            })
        })
        .await
    }

    pub(crate) async fn create_invitation(
        &self,
        inv: NewInvitation,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        self.write(move |c| {
            if let Some(actor) = caller(c, &audit)? {
                access::invite(&actor, inv.role, OffsetDateTime::now_utc())
                    .map_err(StoreError::Refused)?;
            }
            if current_member_with_email(c, &inv.workspace_id, &inv.email)? {
                return Ok(false);
            }
            c.prepare_cached(
                "INSERT INTO invitations
                     (token_hash, workspace_id, email, role, created_at, expires_at, invited_by, id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                inv.token_hash,
                inv.workspace_id.as_str(),
                inv.email,
                inv.role.as_str(),
                to_unix(inv.created_at),
                to_unix(inv.expires_at),
                inv.invited_by.as_str(),
                inv.id
            ])?;
            audit::insert(c, &audit)?;
            Ok(true)
        })
        .await
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

    pub(crate) async fn cancel_invitation(
        &self,
        workspace: WorkspaceId,
        id: String,
        by: MemberId,
        audit: AuditEntry,
    ) -> Result<CancelOutcome, StoreError> {
        self.write(move |c| {
            caller(c, &audit)?;
            let found = c
                .prepare_cached(
                    "SELECT accepted_at, cancelled_at FROM invitations
                     WHERE id = ?1 AND workspace_id = ?2",
                )?
                .query_row([id.as_str(), workspace.as_str()], |r| {
                    Ok((opt_time(r, 0)?, opt_time(r, 1)?))
                })
                .optional()?;
            match found {
                None => return Ok(CancelOutcome::NotFound),
                Some((Some(at), _)) => return Ok(CancelOutcome::AlreadyAccepted(at)),
                Some((None, Some(at))) => return Ok(CancelOutcome::AlreadyCancelled(at)),
                Some((None, None)) => {}
            }
            let at = audit.at;
            cancel_pending(
                c,
                "id = ?3",
                &[&id.as_str()],
                at,
                &by,
                InvitationCancel::Cancelled,
            )?;
            audit::insert(c, &audit)?;
            let sql = format!("{INVITATION_SELECT} WHERE i.id = ?1");
            let record = c
                .prepare_cached(&sql)?
                .query_row([id.as_str()], invitation_from_row)?;
            Ok(CancelOutcome::Cancelled(record))
        })
        .await
    }

    pub(crate) async fn accept_invitation(
        &self,
        a: Acceptance,
    ) -> Result<AcceptOutcome, StoreError> {
        self.write(move |c| accept(c, &a)).await
    }
}

/// An invitation as read at acceptance.
struct Invitation {
    workspace_id: WorkspaceId,
    email: String,
    role: Role,
    expires_at: OffsetDateTime,
    accepted_at: Option<OffsetDateTime>,
    invited_by: String,
    cancelled_at: Option<OffsetDateTime>,
    cancelled_reason: Option<InvitationCancel>,
    inviter_role: Role,
    inviter_removed_at: Option<OffsetDateTime>,
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

/// Cancels the pending invitations matching `filter` (whose parameters start at `?3`) at
/// `at`, by `by`, for `reason`; returns their ids.
fn cancel_pending(
    c: &Connection,
    filter: &str,
    args: &[&dyn rusqlite::ToSql],
    at: OffsetDateTime,
    by: &MemberId,
    reason: InvitationCancel,
) -> Result<Vec<String>, StoreError> {
    let sql = format!(
        "UPDATE invitations SET cancelled_at = ?1, cancelled_by = ?2, cancelled_reason = '{}'
         WHERE accepted_at IS NULL AND cancelled_at IS NULL AND {filter}
         RETURNING id",
        reason.as_str()
    );
    let at = to_unix(at);
    let by = by.as_str();
    let mut params: Vec<&dyn rusqlite::ToSql> = vec![&at, &by];
    params.extend_from_slice(args);
    let ids = c
        .prepare_cached(&sql)?
        .query_map(params.as_slice(), |row| row.get::<_, Option<String>>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ids.into_iter().flatten().collect())
}

fn accept(c: &Connection, a: &Acceptance) -> Result<AcceptOutcome, StoreError> {
    let invitation = c
        .prepare_cached(
            "SELECT i.workspace_id, i.email, i.role, i.expires_at, i.accepted_at, m.email,
                    i.cancelled_at, i.cancelled_reason, m.role, m.removed_at
             FROM invitations i JOIN members m ON m.id = i.invited_by
             WHERE i.token_hash = ?1",
        )?
        .query_row([&a.token_hash], |row| {
            let role: String = row.get(2)?;
            let reason: Option<String> = row.get(7)?;
            let inviter_role: String = row.get(8)?;
            Ok(Invitation {
                workspace_id: parsed(row, 0)?,
                email: row.get(1)?,
                role: Role::from_str(&role).map_err(|e| conversion(2, e))?,
                expires_at: time_at(row, 3)?,
                accepted_at: opt_time(row, 4)?,
                invited_by: row.get(5)?,
                cancelled_at: opt_time(row, 6)?,
                cancelled_reason: reason.as_deref().and_then(InvitationCancel::parse),
                inviter_role: Role::from_str(&inviter_role).map_err(|e| conversion(8, e))?,
                inviter_removed_at: opt_time(row, 9)?,
            })
        })
        .optional()?;
    let Some(inv) = invitation else {
        return Ok(AcceptOutcome::Unknown);
    };
    if let Some(at) = inv.accepted_at {
        return Ok(AcceptOutcome::AlreadyAccepted(at));
    }
    if let Some(at) = inv.cancelled_at {
        return Ok(AcceptOutcome::Cancelled(
            at,
            inv.cancelled_reason.unwrap_or(InvitationCancel::Cancelled),
        ));
    }
    if inv.expires_at <= a.at {
        return Ok(AcceptOutcome::Expired(inv.expires_at));
    }
    // The invitation speaks for its inviter: it holds only while they could still issue it.
    let inviter_may = inv.inviter_removed_at.is_none()
        && match inv.role {
            Role::Owner => inv.inviter_role == Role::Owner,
            _ => matches!(inv.inviter_role, Role::Owner | Role::Admin),
        };
    if !inviter_may {
        return Ok(AcceptOutcome::InviterGone(inv.invited_by));
    }
    if current_member_with_email(c, &inv.workspace_id, &inv.email)? {
        return Ok(AcceptOutcome::AlreadyMember(inv.email));
    }
    insert_member(
        c,
        &NewMember {
            id: a.member_id.clone(),
            workspace_id: inv.workspace_id.clone(),
            email: inv.email.clone(),
            role: inv.role,
            created_at: a.at,
        },
    )?;
    let key = NewKey {
        id: a.key_id.clone(),
        workspace_id: inv.workspace_id.clone(),
        member_id: a.member_id.clone(),
        name: a.key_name.clone(),
        scope: Scope::Admin,
        created_at: a.at,
        expires_at: a.at + a.key_lifetime,
        max_uses: None,
    };
    insert_key(c, &key)?;
    let used = c
        .prepare_cached(
            "UPDATE invitations SET accepted_at = ?1, accepted_by = ?2
             WHERE token_hash = ?3 AND accepted_at IS NULL",
        )?
        .execute(params![to_unix(a.at), a.member_id.as_str(), a.token_hash])?;
    if used != 1 {
        return Err(StoreError::Conflict("invitation accepted twice".into()));
    }
    let event = |action, target: String, details| AuditEntry {
        workspace_id: inv.workspace_id.clone(),
        at: a.at,
        actor: inv.email.clone(),
        action,
        target,
        details,
        caller: None,
    };
    audit::insert(
        c,
        &event(
            AuditAction::MemberJoin,
            inv.email.clone(),
            json!({"member_id": a.member_id, "role": inv.role, "invited_by": inv.invited_by}),
        ),
    )?;
    audit::insert(
        c,
        &event(
            AuditAction::KeyCreate,
            key.id.to_string(),
            json!({"name": key.name, "scope": key.scope, "owner": inv.email}),
        ),
    )?;
    let member = select_member(c, &inv.workspace_id, &a.member_id, a.at)?
        .ok_or_else(|| StoreError::Database("new member vanished".into()))?;
    let key =
        select_key(c, &key.id)?.ok_or_else(|| StoreError::Database("new key vanished".into()))?;
    Ok(AcceptOutcome::Joined {
        member: Box::new(member),
        key: Box::new(key),
    })
}

/// True when a current (not removed) member of `workspace` has this email, in any case.
fn current_member_with_email(
    c: &Connection,
    workspace: &WorkspaceId,
    email: &str,
) -> Result<bool, StoreError> {
    let found: Option<i64> = c
        .prepare_cached(
            "SELECT 1 FROM members
             WHERE workspace_id = ?1 AND removed_at IS NULL AND lower(email) = lower(?2)",
        )?
        .query_row([workspace.as_str(), email], |r| r.get(0))
        .optional()?;
    Ok(found.is_some())
}

fn select_member(
    c: &Connection,
    workspace: &WorkspaceId,
    id: &MemberId,
    now: OffsetDateTime,
) -> Result<Option<MemberRecord>, StoreError> {
    let sql = format!("{MEMBER_SELECT} WHERE m.workspace_id = ?2 AND m.id = ?3");
    let member = c
        .prepare_cached(&sql)?
        .query_row(
            params![to_unix(now), workspace.as_str(), id.as_str()],
            member_from_row,
        )
        .optional()?;
    Ok(member)
}

fn member_from_row(row: &Row<'_>) -> rusqlite::Result<MemberRecord> {
    let role: String = row.get(3)?;
    let active: i64 = row.get(6)?;
    Ok(MemberRecord {
        id: parsed(row, 0)?,
        workspace_id: parsed(row, 1)?,
        email: row.get(2)?,
        role: Role::from_str(&role).map_err(|e| conversion(3, e))?,
        created_at: time_at(row, 4)?,
        removed_at: opt_time(row, 5)?,
        active_keys: u64::try_from(active).unwrap_or(0),
    })
}
