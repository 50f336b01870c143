//! [`Tx`] on the writer's connection: the primitive reads and writes of the store's
//! operations, inside the writer's transaction (one writer: what a transaction reads holds
//! until it commits).

use std::collections::BTreeMap;
use std::str::FromStr;

use heex_proto::api::Facts;
use heex_proto::{DeviceId, KeyId, MemberId, WorkspaceId};
use rusqlite::{params, Connection, OptionalExtension, Row};
use time::OffsetDateTime;

use crate::store::IssuedCert;

use super::{audit, conversion, opt_time, parsed, time_at};
use crate::store::backend::{
    ConnectionMark, Deployment, DeviceState, InvitationsOf, SigninToken, StoredInvitation, Tx,
};
use crate::store::{
    encode, seq_to_sql, to_unix, AuditEntry, ConsoleSession, InvitationCancel, KeyRecord,
    MemberRecord, NewDevice, NewInvitation, NewKey, NewMember, NewWorkspace, Revocation, Role,
    StoreError,
};

/// The writer's connection, inside its transaction.
pub(super) struct SqliteTx<'c>(pub(super) &'c Connection);

/// The columns of an invitation with its inviter, in the order [`invitation_from_row`]
/// reads.
const INVITATION_SELECT: &str = "
    SELECT i.id, i.workspace_id, i.email, i.role, i.created_at, i.expires_at, i.accepted_at,
           i.cancelled_at, i.cancelled_reason, m.email, m.role, m.removed_at
    FROM invitations i JOIN members m ON m.id = i.invited_by";

fn invitation_from_row(row: &Row<'_>) -> rusqlite::Result<StoredInvitation> {
    let role: String = row.get(3)?;
    let reason: Option<String> = row.get(8)?;
    let inviter_role: String = row.get(10)?;
    let cancelled_at = opt_time(row, 7)?;
    Ok(StoredInvitation {
        id: row.get(0)?,
        workspace_id: parsed(row, 1)?,
        email: row.get(2)?,
        role: Role::from_str(&role).map_err(|e| conversion(3, e))?,
        created_at: time_at(row, 4)?,
        expires_at: time_at(row, 5)?,
        accepted_at: opt_time(row, 6)?,
        cancelled: cancelled_at.map(|at| {
            (
                at,
                reason
                    .as_deref()
                    .and_then(InvitationCancel::parse)
                    .unwrap_or(InvitationCancel::Cancelled),
            )
        }),
        inviter_email: row.get(9)?,
        inviter_role: Role::from_str(&inviter_role).map_err(|e| conversion(10, e))?,
        inviter_removed_at: opt_time(row, 11)?,
    })
}

impl Tx for SqliteTx<'_> {
    fn insert_workspace(&mut self, ws: &NewWorkspace) -> Result<(), StoreError> {
        self.0
            .prepare_cached("INSERT INTO workspaces (id, name, created_at) VALUES (?1, ?2, ?3)")?
            .execute(params![ws.id.as_str(), ws.name, to_unix(ws.created_at)])?;
        Ok(())
    }

    fn insert_member(&mut self, m: &NewMember) -> Result<(), StoreError> {
        self.0
            .prepare_cached(
                "INSERT INTO members (id, workspace_id, email, role, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                m.id.as_str(),
                m.workspace_id.as_str(),
                m.email,
                m.role.as_str(),
                to_unix(m.created_at)
            ])?;
        Ok(())
    }

    fn member(
        &mut self,
        ws: &WorkspaceId,
        id: &MemberId,
    ) -> Result<Option<MemberRecord>, StoreError> {
        super::members::select_member(self.0, ws, id)
    }

    fn current_owners(&mut self, ws: &WorkspaceId) -> Result<Vec<MemberId>, StoreError> {
        let owners = self
            .0
            .prepare_cached(
                "SELECT id FROM members
                 WHERE workspace_id = ?1 AND role = 'owner' AND removed_at IS NULL",
            )?
            .query_map([ws.as_str()], |r| parsed(r, 0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(owners)
    }

    fn current_member_with_email(
        &mut self,
        ws: &WorkspaceId,
        email: &str,
    ) -> Result<Option<MemberId>, StoreError> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT id FROM members
                 WHERE workspace_id = ?1 AND removed_at IS NULL AND lower(email) = lower(?2)",
            )?
            .query_row([ws.as_str(), email], |r| parsed(r, 0))
            .optional()?)
    }

    fn workspace_named(&mut self, name: &str) -> Result<Option<WorkspaceId>, StoreError> {
        Ok(self
            .0
            .prepare_cached("SELECT id FROM workspaces WHERE name = ?1")?
            .query_row([name], |r| parsed(r, 0))
            .optional()?)
    }

    fn set_member_removed(&mut self, id: &MemberId, at: OffsetDateTime) -> Result<(), StoreError> {
        self.0
            .prepare_cached("UPDATE members SET removed_at = ?1 WHERE id = ?2")?
            .execute(params![to_unix(at), id.as_str()])?;
        Ok(())
    }

    fn key(&mut self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        super::keys::select_key(self.0, id)
    }

    fn member_keys(&mut self, member: &MemberId) -> Result<Vec<KeyRecord>, StoreError> {
        super::keys::keys_of_members(self.0, std::slice::from_ref(member))
    }

    fn insert_key(&mut self, k: &NewKey) -> Result<(), StoreError> {
        self.0
            .prepare_cached(
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

    fn set_key_revoked(
        &mut self,
        id: &KeyId,
        at: OffsetDateTime,
        by: &MemberId,
        reason: Revocation,
        replaced_by: Option<&KeyId>,
    ) -> Result<(), StoreError> {
        self.0
            .prepare_cached(
                "UPDATE api_keys SET revoked_at = ?1, revoked_by = ?2, revoked_reason = ?3,
                     replaced_by = COALESCE(?4, replaced_by)
                 WHERE id = ?5",
            )?
            .execute(params![
                to_unix(at),
                by.as_str(),
                reason.as_str(),
                replaced_by.map(KeyId::as_str),
                id.as_str()
            ])?;
        Ok(())
    }

    fn add_key_use(&mut self, id: &KeyId) -> Result<(), StoreError> {
        self.0
            .prepare_cached("UPDATE api_keys SET uses = uses + 1 WHERE id = ?1")?
            .execute([id.as_str()])?;
        Ok(())
    }

    fn lock_key(&mut self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        // One writer: the transaction holds the whole database.
        self.key(id)
    }

    fn insert_invitation(&mut self, inv: &NewInvitation) -> Result<(), StoreError> {
        self.0
            .prepare_cached(
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
        Ok(())
    }

    fn invitation_by_token(&mut self, hash: &str) -> Result<Option<StoredInvitation>, StoreError> {
        let sql = format!("{INVITATION_SELECT} WHERE i.token_hash = ?1");
        Ok(self
            .0
            .prepare_cached(&sql)?
            .query_row([hash], invitation_from_row)
            .optional()?)
    }

    fn invitation(
        &mut self,
        ws: &WorkspaceId,
        id: &str,
    ) -> Result<Option<StoredInvitation>, StoreError> {
        let sql = format!("{INVITATION_SELECT} WHERE i.id = ?1 AND i.workspace_id = ?2");
        Ok(self
            .0
            .prepare_cached(&sql)?
            .query_row([id, ws.as_str()], invitation_from_row)
            .optional()?)
    }

    fn pending_invitations(&mut self, which: InvitationsOf<'_>) -> Result<Vec<String>, StoreError> {
        const PENDING: &str = "SELECT id FROM invitations
             WHERE accepted_at IS NULL AND cancelled_at IS NULL AND id IS NOT NULL";
        let ids = match which {
            InvitationsOf::InvitedBy(member) => self
                .0
                .prepare_cached(&format!("{PENDING} AND invited_by = ?1"))?
                .query_map([member.as_str()], |r| r.get(0))?
                .collect::<Result<Vec<_>, _>>()?,
            InvitationsOf::Invitee(ws, email) => self
                .0
                .prepare_cached(&format!(
                    "{PENDING} AND workspace_id = ?1 AND lower(email) = lower(?2)"
                ))?
                .query_map([ws.as_str(), email], |r| r.get(0))?
                .collect::<Result<Vec<_>, _>>()?,
        };
        Ok(ids)
    }

    fn set_invitation_cancelled(
        &mut self,
        id: &str,
        at: OffsetDateTime,
        by: &MemberId,
        reason: InvitationCancel,
    ) -> Result<(), StoreError> {
        self.0
            .prepare_cached(
                "UPDATE invitations SET cancelled_at = ?1, cancelled_by = ?2, cancelled_reason = ?3
                 WHERE id = ?4",
            )?
            .execute(params![to_unix(at), by.as_str(), reason.as_str(), id])?;
        Ok(())
    }

    fn set_invitation_accepted(
        &mut self,
        id: &str,
        member: &MemberId,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.0
            .prepare_cached(
                "UPDATE invitations SET accepted_at = ?1, accepted_by = ?2 WHERE id = ?3",
            )?
            .execute(params![to_unix(at), member.as_str(), id])?;
        Ok(())
    }

    fn insert_audit(&mut self, e: &AuditEntry) -> Result<(), StoreError> {
        audit::insert(self.0, e)
    }

    fn insert_device(&mut self, d: &NewDevice) -> Result<(), StoreError> {
        let labels = encode("labels", &d.labels)?;
        let facts = d.facts.as_ref().map(|f| encode("facts", f)).transpose()?;
        self.0
            .prepare_cached(
                "INSERT INTO devices (id, workspace_id, name, labels, facts, spiffe_id,
                     enrolled_at, enrolled_by_key, enrolled_by_member, cert_serial, cert_expires_at,
                     cert_ca, cert_key)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?
            .execute(params![
                d.id.as_str(),
                d.workspace_id.as_str(),
                d.name,
                labels,
                facts,
                d.spiffe_id.to_string(),
                to_unix(d.enrolled_at),
                d.enrolled_by_key.as_str(),
                d.enrolled_by_member.as_str(),
                d.cert_serial,
                to_unix(d.cert_expires_at),
                d.cert_ca,
                d.cert_key
            ])?;
        write_labels(self.0, &d.id, &d.labels)
    }

    fn device_state(&mut self, id: &DeviceId) -> Result<Option<DeviceState>, StoreError> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT workspace_id, enrolled_by_member, revoked_at, cert_serial,
                        previous_cert_serial, cert_key
                 FROM devices WHERE id = ?1",
            )?
            .query_row([id.as_str()], |r| {
                Ok(DeviceState {
                    workspace_id: parsed(r, 0)?,
                    enrolled_by_member: parsed(r, 1)?,
                    revoked_at: opt_time(r, 2)?,
                    cert_serial: r.get(3)?,
                    previous_serial: r.get(4)?,
                    cert_key: r.get(5)?,
                })
            })
            .optional()?)
    }

    fn update_device(
        &mut self,
        id: &DeviceId,
        name: Option<&str>,
        labels: Option<&BTreeMap<String, String>>,
    ) -> Result<(), StoreError> {
        let encoded = labels.map(|l| encode("labels", l)).transpose()?;
        self.0
            .prepare_cached(
                "UPDATE devices SET name = COALESCE(?1, name), labels = COALESCE(?2, labels)
                 WHERE id = ?3",
            )?
            .execute(params![name, encoded, id.as_str()])?;
        if let Some(labels) = labels {
            write_labels(self.0, id, labels)?;
        }
        Ok(())
    }

    fn set_device_revoked(&mut self, id: &DeviceId, at: OffsetDateTime) -> Result<(), StoreError> {
        self.0
            .prepare_cached(
                "UPDATE devices SET revoked_at = ?1, connection = NULL, connected_at = NULL
                 WHERE id = ?2",
            )?
            .execute(params![to_unix(at), id.as_str()])?;
        Ok(())
    }

    fn delete_device(&mut self, id: &DeviceId) -> Result<(), StoreError> {
        self.0
            .prepare_cached("DELETE FROM devices WHERE id = ?1")?
            .execute([id.as_str()])?;
        // Reports do not reference devices; they go with their device.
        self.0
            .prepare_cached("DELETE FROM reports WHERE device_id = ?1")?
            .execute([id.as_str()])?;
        Ok(())
    }

    fn set_device_certificate(
        &mut self,
        id: &DeviceId,
        cert: &IssuedCert,
        at: OffsetDateTime,
        supersede: bool,
    ) -> Result<(), StoreError> {
        self.0
            .prepare_cached(
                "UPDATE devices
                 SET previous_cert_serial =
                         CASE WHEN ?7 THEN cert_serial ELSE previous_cert_serial END,
                     cert_superseded_at = CASE WHEN ?7 THEN ?1 ELSE cert_superseded_at END,
                     cert_serial = ?2, cert_expires_at = ?3, cert_ca = ?5, cert_key = ?6
                 WHERE id = ?4",
            )?
            .execute(params![
                to_unix(at),
                cert.serial_hex,
                to_unix(cert.not_after),
                id.as_str(),
                cert.ca,
                cert.key,
                supersede
            ])?;
        Ok(())
    }

    fn devices_not_on_ca(&mut self, ca: &str) -> Result<u64, StoreError> {
        let n: i64 = self
            .0
            .prepare_cached(
                "SELECT COUNT(*) FROM devices
                 WHERE revoked_at IS NULL AND (cert_ca IS NULL OR cert_ca <> ?1)",
            )?
            .query_row([ca], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn set_device_seen(
        &mut self,
        id: &DeviceId,
        facts: Option<&Facts>,
        agent_version: Option<&str>,
        at: OffsetDateTime,
        connection: &str,
        claim: bool,
    ) -> Result<bool, StoreError> {
        let facts = facts.map(|f| encode("facts", f)).transpose()?;
        let n = self
            .0
            .prepare_cached(
                "UPDATE devices
                 SET last_seen_at = MAX(COALESCE(last_seen_at, 0), ?1),
                     facts = COALESCE(?2, facts),
                     agent_version = COALESCE(?5, agent_version),
                     connected_at = CASE WHEN connection IS ?3 THEN connected_at ELSE ?1 END,
                     connection = ?3
                 WHERE id = ?4 AND (?6 OR connection IS NULL OR connection = ?3)",
            )?
            .execute(params![
                to_unix(at),
                facts,
                connection,
                id.as_str(),
                agent_version,
                claim
            ])?;
        Ok(n == 1)
    }

    fn clear_device_connection(
        &mut self,
        id: &DeviceId,
        connection: &str,
    ) -> Result<(), StoreError> {
        self.0
            .prepare_cached(
                "UPDATE devices SET connection = NULL, connected_at = NULL
                 WHERE id = ?1 AND connection = ?2",
            )?
            .execute(params![id.as_str(), connection])?;
        Ok(())
    }

    fn clear_instance_connections(&mut self, instance: &str) -> Result<u64, StoreError> {
        // Marks are `<instance>-<n>`: the range of strings with that prefix ('-' < '.').
        let n = self
            .0
            .prepare_cached(
                "UPDATE devices SET connection = NULL, connected_at = NULL
                 WHERE connection >= ?1 || '-' AND connection < ?1 || '.'",
            )?
            .execute([instance])?;
        Ok(n as u64)
    }

    fn clear_orphan_connections(&mut self) -> Result<u64, StoreError> {
        let n = self
            .0
            .prepare_cached(
                "UPDATE devices SET connection = NULL, connected_at = NULL
                 WHERE connection IS NOT NULL AND NOT EXISTS (
                     SELECT 1 FROM replicas r
                     WHERE devices.connection >= r.instance || '-'
                       AND devices.connection < r.instance || '.')",
            )?
            .execute([])?;
        Ok(n as u64)
    }

    fn connection_marks(&mut self, ids: &[DeviceId]) -> Result<Vec<ConnectionMark>, StoreError> {
        let mut stmt = self.0.prepare_cached(
            "SELECT connection, revoked_at IS NOT NULL FROM devices WHERE id = ?1",
        )?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let found = stmt
                .query_row([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            if let Some((connection, revoked)) = found {
                out.push(ConnectionMark {
                    device: id.clone(),
                    connection,
                    revoked,
                });
            }
        }
        Ok(out)
    }

    fn notify_device_changed(
        &mut self,
        _id: &DeviceId,
        _connection: Option<&str>,
    ) -> Result<(), StoreError> {
        // One process owns a SQLite store: it sees its own changes.
        Ok(())
    }

    fn deployment(&mut self) -> Result<Option<Deployment>, StoreError> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT ca_fingerprint, secret_check, created_at FROM deployment WHERE id = 1",
            )?
            .query_row([], |r| {
                Ok(Deployment {
                    ca_fingerprint: r.get(0)?,
                    secret_check: r.get(1)?,
                    created_at: time_at(r, 2)?,
                })
            })
            .optional()?)
    }

    fn set_deployment_ca(&mut self, ca_fingerprint: &str) -> Result<(), StoreError> {
        self.0
            .prepare_cached("UPDATE deployment SET ca_fingerprint = ?1 WHERE id = 1")?
            .execute([ca_fingerprint])?;
        Ok(())
    }

    fn insert_retired_ca(
        &mut self,
        fingerprint: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.0
            .prepare_cached(
                "INSERT INTO retired_cas (fingerprint, retired_at) VALUES (?1, ?2)
                 ON CONFLICT (fingerprint) DO NOTHING",
            )?
            .execute(rusqlite::params![fingerprint, to_unix(at)])?;
        Ok(())
    }

    fn ca_retired(&mut self, fingerprint: &str) -> Result<bool, StoreError> {
        Ok(self
            .0
            .prepare_cached("SELECT 1 FROM retired_cas WHERE fingerprint = ?1")?
            .exists([fingerprint])?)
    }

    fn insert_deployment(&mut self, d: &Deployment) -> Result<(), StoreError> {
        self.0
            .prepare_cached(
                "INSERT INTO deployment (id, ca_fingerprint, secret_check, created_at)
                 VALUES (1, ?1, ?2, ?3)",
            )?
            .execute(params![
                d.ca_fingerprint,
                d.secret_check,
                to_unix(d.created_at)
            ])?;
        Ok(())
    }

    fn renew_replica(&mut self, instance: &str, until: OffsetDateTime) -> Result<bool, StoreError> {
        let n = self
            .0
            .prepare_cached("UPDATE replicas SET lease_until = ?2 WHERE instance = ?1")?
            .execute(params![instance, to_unix(until)])?;
        Ok(n == 1)
    }

    fn insert_replica(
        &mut self,
        instance: &str,
        name: &str,
        at: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.0
            .prepare_cached(
                "INSERT INTO replicas (instance, name, started_at, lease_until)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![instance, name, to_unix(at), to_unix(until)])?;
        Ok(())
    }

    fn ended_replicas(
        &mut self,
        now: OffsetDateTime,
        name: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT instance FROM replicas WHERE lease_until < ?1 OR name = ?2")?;
        let rows = stmt.query_map(params![to_unix(now), name], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn delete_replica(&mut self, instance: &str) -> Result<(), StoreError> {
        self.0
            .prepare_cached("DELETE FROM replicas WHERE instance = ?1")?
            .execute([instance])?;
        Ok(())
    }

    fn insert_report(
        &mut self,
        device: &DeviceId,
        seq: u64,
        at: OffsetDateTime,
        payload: &str,
    ) -> Result<bool, StoreError> {
        let n = self
            .0
            .prepare_cached(
                "INSERT OR IGNORE INTO reports (device_id, seq, received_at, payload)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                device.as_str(),
                seq_to_sql(seq)?,
                to_unix(at),
                payload
            ])?;
        Ok(n == 1)
    }

    fn report_payload(
        &mut self,
        device: &DeviceId,
        seq: u64,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .0
            .prepare_cached("SELECT payload FROM reports WHERE device_id = ?1 AND seq = ?2")?
            .query_row(params![device.as_str(), seq_to_sql(seq)?], |r| r.get(0))
            .optional()?)
    }

    fn highest_report_seq(&mut self, device: &DeviceId) -> Result<u64, StoreError> {
        super::reports::highest(self.0, device)
    }

    fn delete_expired_console(&mut self, now: OffsetDateTime) -> Result<(), StoreError> {
        let now = to_unix(now);
        self.0
            .prepare_cached("DELETE FROM console_sessions WHERE expires_at <= ?1")?
            .execute([now])?;
        self.0
            .prepare_cached("DELETE FROM console_signin_tokens WHERE expires_at <= ?1")?
            .execute([now])?;
        Ok(())
    }

    fn insert_console_session(&mut self, s: &ConsoleSession) -> Result<(), StoreError> {
        self.0
            .prepare_cached(
                "INSERT INTO console_sessions (id_hash, key_id, created_at, last_seen_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                s.id_hash,
                s.key_id.as_str(),
                to_unix(s.created_at),
                to_unix(s.last_seen_at),
                to_unix(s.expires_at)
            ])?;
        Ok(())
    }

    fn touch_console_session(&mut self, hash: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        self.0
            .prepare_cached("UPDATE console_sessions SET last_seen_at = ?2 WHERE id_hash = ?1")?
            .execute(params![hash, to_unix(at)])?;
        Ok(())
    }

    fn delete_console_session(&mut self, hash: &str) -> Result<bool, StoreError> {
        let n = self
            .0
            .prepare_cached("DELETE FROM console_sessions WHERE id_hash = ?1")?
            .execute([hash])?;
        Ok(n == 1)
    }

    fn insert_signin_token(
        &mut self,
        hash: &str,
        key: &KeyId,
        at: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.0
            .prepare_cached(
                "INSERT INTO console_signin_tokens (token_hash, key_id, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                hash,
                key.as_str(),
                to_unix(at),
                to_unix(expires_at)
            ])?;
        Ok(())
    }

    fn signin_token(&mut self, hash: &str) -> Result<Option<SigninToken>, StoreError> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT key_id, expires_at, used_at FROM console_signin_tokens
                 WHERE token_hash = ?1",
            )?
            .query_row([hash], |r| {
                Ok(SigninToken {
                    key_id: parsed(r, 0)?,
                    expires_at: time_at(r, 1)?,
                    used_at: opt_time(r, 2)?,
                })
            })
            .optional()?)
    }

    fn set_signin_token_used(&mut self, hash: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        self.0
            .prepare_cached("UPDATE console_signin_tokens SET used_at = ?2 WHERE token_hash = ?1")?
            .execute(params![hash, to_unix(at)])?;
        Ok(())
    }
}

/// Replaces the label rows of device `id` with `labels` (inside the caller's transaction).
fn write_labels(
    c: &Connection,
    id: &DeviceId,
    labels: &BTreeMap<String, String>,
) -> Result<(), StoreError> {
    c.prepare_cached("DELETE FROM device_labels WHERE device_id = ?1")?
        .execute([id.as_str()])?;
    // The device's workspace and enrollment time ride along (see migration 6).
    let mut insert = c.prepare_cached(
        "INSERT INTO device_labels (device_id, workspace_id, enrolled_at, key, value)
         SELECT id, workspace_id, enrolled_at, ?2, ?3 FROM devices WHERE id = ?1",
    )?;
    for (k, v) in labels {
        insert.execute(params![id.as_str(), k, v])?;
    }
    Ok(())
}
