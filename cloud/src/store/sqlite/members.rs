//! Members and invitations: list, remove (revoking every key in the same transaction),
//! invite, accept.

use std::str::FromStr;

use heex_proto::api::Scope;
use heex_proto::{KeyId, MemberId, WorkspaceId};
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::json;
use time::OffsetDateTime;

use super::keys::{insert_key, select_key};
use super::{audit, conversion, insert_member, opt_time, parsed, time_at, SqliteStore};
use crate::store::{
    to_unix, AcceptOutcome, Acceptance, AuditAction, AuditEntry, MemberRecord, NewInvitation,
    NewKey, NewMember, RemoveOutcome, Revocation, Role, StoreError,
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
    ) -> Result<Vec<MemberRecord>, StoreError> {
        self.read(move |c| {
            let sql =
                format!("{MEMBER_SELECT} WHERE m.workspace_id = ?2 ORDER BY m.created_at, m.id");
            let mut stmt = c.prepare_cached(&sql)?;
            let rows =
                stmt.query_map(params![to_unix(now), workspace.as_str()], member_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
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
            let Some(member) = select_member(c, &workspace, &id, at)? else {
                return Ok(RemoveOutcome::NotFound);
            };
            if let Some(removed_at) = member.removed_at {
                return Ok(RemoveOutcome::AlreadyRemoved(removed_at));
            }
            if member.role == Role::Owner {
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
            // after a rotation, is revoked by the same transaction.
            let revoked_keys = c
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
            let mut revoked_keys = revoked_keys;
            revoked_keys.sort();
            if let Some(details) = audit.details.as_object_mut() {
                details.insert("member_id".into(), json!(id));
                details.insert("role".into(), json!(member.role));
                details.insert("revoked_keys".into(), json!(revoked_keys));
            }
            audit::insert(c, &audit)?;
            let member = select_member(c, &workspace, &id, at)?
                .ok_or_else(|| StoreError::Database(format!("removed member {id} vanished")))?;
            Ok(RemoveOutcome::Removed {
                member,
                revoked_keys,
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
            if current_member_with_email(c, &inv.workspace_id, &inv.email)? {
                return Ok(false);
            }
            c.prepare_cached(
                "INSERT INTO invitations
                     (token_hash, workspace_id, email, role, created_at, expires_at, invited_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                inv.token_hash,
                inv.workspace_id.as_str(),
                inv.email,
                inv.role.as_str(),
                to_unix(inv.created_at),
                to_unix(inv.expires_at),
                inv.invited_by.as_str()
            ])?;
            audit::insert(c, &audit)?;
            Ok(true)
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
}

fn accept(c: &Connection, a: &Acceptance) -> Result<AcceptOutcome, StoreError> {
    let invitation = c
        .prepare_cached(
            "SELECT i.workspace_id, i.email, i.role, i.expires_at, i.accepted_at, m.email
             FROM invitations i JOIN members m ON m.id = i.invited_by
             WHERE i.token_hash = ?1",
        )?
        .query_row([&a.token_hash], |row| {
            let role: String = row.get(2)?;
            Ok(Invitation {
                workspace_id: parsed(row, 0)?,
                email: row.get(1)?,
                role: Role::from_str(&role).map_err(|e| conversion(2, e))?,
                expires_at: time_at(row, 3)?,
                accepted_at: opt_time(row, 4)?,
                invited_by: row.get(5)?,
            })
        })
        .optional()?;
    let Some(inv) = invitation else {
        return Ok(AcceptOutcome::Unknown);
    };
    if let Some(at) = inv.accepted_at {
        return Ok(AcceptOutcome::AlreadyAccepted(at));
    }
    if inv.expires_at <= a.at {
        return Ok(AcceptOutcome::Expired(inv.expires_at));
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
