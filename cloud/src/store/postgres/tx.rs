//! [`Tx`] on a PostgreSQL transaction (SERIALIZABLE: what it reads holds until it commits,
//! or the commit fails and the operation runs again).

use std::collections::BTreeMap;

use heex_proto::api::{Facts, Role};
use heex_proto::{DeviceId, KeyId, MemberId, WorkspaceId};
use postgres::types::ToSql;
use postgres::{GenericClient, Row, Transaction};
use time::OffsetDateTime;

use crate::store::IssuedCert;

use super::conn::Cached;
use super::{
    count, key_from_row, member_from_row, opt_time, parse, time, KEY_SELECT, MEMBER_SELECT,
};
use crate::store::backend::{
    ConnectionMark, Deployment, DeviceState, InvitationsOf, SigninToken, StoredInvitation, Tx,
};
use crate::store::{
    encode, seq_to_sql, to_unix, AuditEntry, ConsoleSession, InvitationCancel, KeyRecord,
    MemberRecord, NewDevice, NewInvitation, NewKey, NewMember, NewWorkspace, Revocation,
    StoreError,
};

/// One transaction. Writes whose outcome nothing waits for (inserts, a key's use count) are
/// held back and sent together, as one statement, before the next read or other write and
/// before the commit: an enrollment's key use, device, labels and audit event cost one round
/// trip instead of four. An error in one of them surfaces at that statement, in the same
/// transaction, which then rolls back as it would have.
pub(super) struct PgTx<'a, 'b> {
    c: Cached<'a, Transaction<'b>>,
    held: Vec<Held>,
}

/// A write held back: its SQL (placeholders from `$1`) and its parameters.
struct Held {
    sql: &'static str,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
    /// An UPDATE: one statement may not change the same row twice, so a batch holds one.
    update: bool,
}

/// Most writes sent as one statement.
const MAX_HELD: usize = 8;

pub(super) fn highest(
    c: &mut Cached<'_, impl GenericClient>,
    device: &DeviceId,
) -> Result<u64, StoreError> {
    let max: Option<i64> = c
        .query_one(
            "SELECT MAX(seq) FROM reports WHERE device_id = $1",
            &[&device.as_str()],
        )?
        .try_get(0)?;
    Ok(max.map_or(0, count))
}

const INVITATION_SELECT: &str = "
    SELECT i.id, i.workspace_id, i.email, i.role, i.created_at, i.expires_at, i.accepted_at,
           i.cancelled_at, i.cancelled_reason, m.email, m.role, m.removed_at
    FROM invitations i JOIN members m ON m.id = i.invited_by";

fn invitation_from_row(r: &Row) -> Result<StoredInvitation, StoreError> {
    let reason: Option<String> = r.try_get(8)?;
    Ok(StoredInvitation {
        id: r.try_get(0)?,
        workspace_id: parse("workspace id", r.try_get(1)?)?,
        email: r.try_get(2)?,
        role: parse::<Role>("role", r.try_get(3)?)?,
        created_at: time(r.try_get(4)?)?,
        expires_at: time(r.try_get(5)?)?,
        accepted_at: opt_time(r.try_get(6)?)?,
        cancelled: opt_time(r.try_get(7)?)?.map(|at| {
            (
                at,
                reason
                    .as_deref()
                    .and_then(InvitationCancel::parse)
                    .unwrap_or(InvitationCancel::Cancelled),
            )
        }),
        inviter_email: r.try_get(9)?,
        inviter_role: parse::<Role>("role", r.try_get(10)?)?,
        inviter_removed_at: opt_time(r.try_get(11)?)?,
    })
}

impl<'a, 'b> PgTx<'a, 'b> {
    pub(super) fn new(c: Cached<'a, Transaction<'b>>) -> Self {
        PgTx {
            c,
            held: Vec::new(),
        }
    }

    /// The transaction, once the writes held back are sent.
    fn c(&mut self) -> Result<&mut Cached<'a, Transaction<'b>>, StoreError> {
        self.flush()?;
        Ok(&mut self.c)
    }

    fn exec(
        &mut self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        Ok(self.c()?.execute(sql, params)?)
    }

    /// Holds back a write until the next statement that needs it sent.
    fn hold(
        &mut self,
        sql: &'static str,
        params: Vec<Box<dyn ToSql + Sync + Send>>,
        update: bool,
    ) -> Result<(), StoreError> {
        if self.held.len() >= MAX_HELD || (update && self.held.iter().any(|h| h.update)) {
            self.flush()?;
        }
        self.held.push(Held {
            sql,
            params,
            update,
        });
        Ok(())
    }

    /// Sends the writes held back, as one statement.
    pub(super) fn flush(&mut self) -> Result<(), StoreError> {
        if self.held.is_empty() {
            return Ok(());
        }
        let held = std::mem::take(&mut self.held);
        let sql = combined(held.iter().map(|h| h.sql));
        let params: Vec<&(dyn ToSql + Sync)> = held
            .iter()
            .flat_map(|h| h.params.iter().map(|p| &**p as &(dyn ToSql + Sync)))
            .collect();
        self.c.execute(&sql, &params)?;
        Ok(())
    }
}

/// One statement running `statements` in order: all but the last as data-modifying `WITH`
/// parts (each runs exactly once), their placeholders numbered on from the one before.
fn combined<'s>(statements: impl Iterator<Item = &'s str>) -> String {
    let statements: Vec<&str> = statements.collect();
    let mut out = String::new();
    let mut offset = 0;
    let last = statements.len().saturating_sub(1);
    for (i, sql) in statements.iter().enumerate() {
        let (renumbered, used) = renumber(sql, offset);
        offset += used;
        if i < last {
            out.push_str(if i == 0 { "WITH " } else { ", " });
            out.push_str(&format!("w{i} AS ({renumbered})"));
        } else {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(&renumbered);
        }
    }
    out
}

/// `sql` with each placeholder `$n` made `$(n + offset)`, and the highest `n` it uses.
fn renumber(sql: &str, offset: usize) -> (String, usize) {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut highest = 0;
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        match after[..digits].parse::<usize>() {
            Ok(n) => {
                highest = highest.max(n);
                out.push_str(&format!("${}", n + offset));
            }
            Err(_) => out.push('$'),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    (out, highest)
}

impl Tx for PgTx<'_, '_> {
    fn insert_workspace(&mut self, ws: &NewWorkspace) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3)",
            &[&ws.id.as_str(), &ws.name, &to_unix(ws.created_at)],
        )?;
        Ok(())
    }

    fn insert_member(&mut self, m: &NewMember) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO members (id, workspace_id, email, role, created_at)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &m.id.as_str(),
                &m.workspace_id.as_str(),
                &m.email,
                &m.role.as_str(),
                &to_unix(m.created_at),
            ],
        )?;
        Ok(())
    }

    fn member(
        &mut self,
        ws: &WorkspaceId,
        id: &MemberId,
    ) -> Result<Option<MemberRecord>, StoreError> {
        let sql = format!("{MEMBER_SELECT} WHERE m.workspace_id = $1 AND m.id = $2");
        self.c()?
            .query_opt(sql.as_str(), &[&ws.as_str(), &id.as_str()])?
            .map(|r| member_from_row(&r))
            .transpose()
    }

    fn current_owners(&mut self, ws: &WorkspaceId) -> Result<Vec<MemberId>, StoreError> {
        self.c()?
            .query(
                "SELECT id FROM members
                 WHERE workspace_id = $1 AND role = 'owner' AND removed_at IS NULL",
                &[&ws.as_str()],
            )?
            .iter()
            .map(|r| parse("member id", r.try_get(0)?))
            .collect()
    }

    fn current_member_with_email(
        &mut self,
        ws: &WorkspaceId,
        email: &str,
    ) -> Result<Option<MemberId>, StoreError> {
        self.c()?
            .query_opt(
                "SELECT id FROM members
                 WHERE workspace_id = $1 AND removed_at IS NULL AND lower(email) = lower($2)",
                &[&ws.as_str(), &email],
            )?
            .map(|r| parse("member id", r.try_get(0)?))
            .transpose()
    }

    fn workspace_named(&mut self, name: &str) -> Result<Option<WorkspaceId>, StoreError> {
        self.c()?
            .query_opt("SELECT id FROM workspaces WHERE name = $1", &[&name])?
            .map(|r| parse("workspace id", r.try_get(0)?))
            .transpose()
    }

    fn set_member_removed(&mut self, id: &MemberId, at: OffsetDateTime) -> Result<(), StoreError> {
        self.exec(
            "UPDATE members SET removed_at = $1 WHERE id = $2",
            &[&to_unix(at), &id.as_str()],
        )?;
        Ok(())
    }

    fn key(&mut self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let sql = format!("{KEY_SELECT} WHERE k.id = $1");
        self.c()?
            .query_opt(sql.as_str(), &[&id.as_str()])?
            .map(|r| key_from_row(&r))
            .transpose()
    }

    fn member_keys(&mut self, member: &MemberId) -> Result<Vec<KeyRecord>, StoreError> {
        let sql = format!("{KEY_SELECT} WHERE k.member_id = $1");
        self.c()?
            .query(sql.as_str(), &[&member.as_str()])?
            .iter()
            .map(key_from_row)
            .collect()
    }

    fn insert_key(&mut self, k: &NewKey) -> Result<(), StoreError> {
        let max_uses = k.max_uses.map(|m| i64::try_from(m).unwrap_or(i64::MAX));
        self.exec(
            "INSERT INTO api_keys
                 (id, workspace_id, member_id, name, scope, created_at, expires_at, max_uses)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &k.id.as_str(),
                &k.workspace_id.as_str(),
                &k.member_id.as_str(),
                &k.name,
                &k.scope.as_str(),
                &to_unix(k.created_at),
                &to_unix(k.expires_at),
                &max_uses,
            ],
        )?;
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
        self.exec(
            "UPDATE api_keys SET revoked_at = $1, revoked_by = $2, revoked_reason = $3,
                 replaced_by = COALESCE($4, replaced_by)
             WHERE id = $5",
            &[
                &to_unix(at),
                &by.as_str(),
                &reason.as_str(),
                &replaced_by.map(KeyId::as_str),
                &id.as_str(),
            ],
        )?;
        Ok(())
    }

    fn add_key_use(&mut self, id: &KeyId) -> Result<(), StoreError> {
        self.hold(
            "UPDATE api_keys SET uses = uses + 1 WHERE id = $1",
            vec![Box::new(id.as_str().to_owned())],
            true,
        )
    }

    fn lock_key(&mut self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        // After waiting for the lock, READ COMMITTED reads the key's row as last committed;
        // the joined rows are as the statement began, and what of them matters to the key's
        // usability (its member's removal) also wrote the key's row.
        let sql = format!("{KEY_SELECT} WHERE k.id = $1 FOR UPDATE OF k");
        self.c()?
            .query_opt(sql.as_str(), &[&id.as_str()])?
            .map(|r| key_from_row(&r))
            .transpose()
    }

    fn insert_invitation(&mut self, inv: &NewInvitation) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO invitations
                 (token_hash, workspace_id, email, role, created_at, expires_at, invited_by, id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &inv.token_hash,
                &inv.workspace_id.as_str(),
                &inv.email,
                &inv.role.as_str(),
                &to_unix(inv.created_at),
                &to_unix(inv.expires_at),
                &inv.invited_by.as_str(),
                &inv.id,
            ],
        )?;
        Ok(())
    }

    fn invitation_by_token(&mut self, hash: &str) -> Result<Option<StoredInvitation>, StoreError> {
        let sql = format!("{INVITATION_SELECT} WHERE i.token_hash = $1");
        self.c()?
            .query_opt(sql.as_str(), &[&hash])?
            .map(|r| invitation_from_row(&r))
            .transpose()
    }

    fn invitation(
        &mut self,
        ws: &WorkspaceId,
        id: &str,
    ) -> Result<Option<StoredInvitation>, StoreError> {
        let sql = format!("{INVITATION_SELECT} WHERE i.id = $1 AND i.workspace_id = $2");
        self.c()?
            .query_opt(sql.as_str(), &[&id, &ws.as_str()])?
            .map(|r| invitation_from_row(&r))
            .transpose()
    }

    fn pending_invitations(&mut self, which: InvitationsOf<'_>) -> Result<Vec<String>, StoreError> {
        const PENDING: &str =
            "SELECT id FROM invitations WHERE accepted_at IS NULL AND cancelled_at IS NULL";
        let found = match which {
            InvitationsOf::InvitedBy(member) => self.c()?.query(
                format!("{PENDING} AND invited_by = $1").as_str(),
                &[&member.as_str()],
            )?,
            InvitationsOf::Invitee(ws, email) => self.c()?.query(
                format!("{PENDING} AND workspace_id = $1 AND lower(email) = lower($2)").as_str(),
                &[&ws.as_str(), &email],
            )?,
        };
        found.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    fn set_invitation_cancelled(
        &mut self,
        id: &str,
        at: OffsetDateTime,
        by: &MemberId,
        reason: InvitationCancel,
    ) -> Result<(), StoreError> {
        self.exec(
            "UPDATE invitations SET cancelled_at = $1, cancelled_by = $2, cancelled_reason = $3
             WHERE id = $4",
            &[&to_unix(at), &by.as_str(), &reason.as_str(), &id],
        )?;
        Ok(())
    }

    fn set_invitation_accepted(
        &mut self,
        id: &str,
        member: &MemberId,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.exec(
            "UPDATE invitations SET accepted_at = $1, accepted_by = $2 WHERE id = $3",
            &[&to_unix(at), &member.as_str(), &id],
        )?;
        Ok(())
    }

    fn insert_audit(&mut self, e: &AuditEntry) -> Result<(), StoreError> {
        let details = encode("audit details", &e.details)?;
        self.hold(
            "INSERT INTO audit_events (workspace_id, at, actor, action, target, details)
             VALUES ($1, $2, $3, $4, $5, $6)",
            vec![
                Box::new(e.workspace_id.as_str().to_owned()),
                Box::new(to_unix(e.at)),
                Box::new(e.actor.clone()),
                Box::new(e.action.as_str().to_owned()),
                Box::new(e.target.clone()),
                Box::new(details),
            ],
            false,
        )
    }

    fn insert_device(&mut self, d: &NewDevice) -> Result<(), StoreError> {
        let labels = encode("labels", &d.labels)?;
        let facts = d.facts.as_ref().map(|f| encode("facts", f)).transpose()?;
        self.hold(
            "INSERT INTO devices (id, workspace_id, name, labels, facts, spiffe_id,
                 enrolled_at, enrolled_by_key, enrolled_by_member, cert_serial, cert_expires_at,
                 cert_ca, cert_key)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            vec![
                Box::new(d.id.as_str().to_owned()),
                Box::new(d.workspace_id.as_str().to_owned()),
                Box::new(d.name.clone()),
                Box::new(labels),
                Box::new(facts),
                Box::new(d.spiffe_id.to_string()),
                Box::new(to_unix(d.enrolled_at)),
                Box::new(d.enrolled_by_key.as_str().to_owned()),
                Box::new(d.enrolled_by_member.as_str().to_owned()),
                Box::new(d.cert_serial.clone()),
                Box::new(to_unix(d.cert_expires_at)),
                Box::new(d.cert_ca.clone()),
                Box::new(d.cert_key.clone()),
            ],
            false,
        )?;
        insert_labels(self, &d.id, &d.workspace_id, d.enrolled_at, &d.labels)
    }

    fn device_state(&mut self, id: &DeviceId) -> Result<Option<DeviceState>, StoreError> {
        let Some(r) = self.c()?.query_opt(
            "SELECT workspace_id, enrolled_by_member, revoked_at, cert_serial,
                    previous_cert_serial, cert_key
             FROM devices WHERE id = $1",
            &[&id.as_str()],
        )?
        else {
            return Ok(None);
        };
        Ok(Some(DeviceState {
            workspace_id: parse("workspace id", r.try_get(0)?)?,
            enrolled_by_member: parse("member id", r.try_get(1)?)?,
            revoked_at: opt_time(r.try_get(2)?)?,
            cert_serial: r.try_get(3)?,
            previous_serial: r.try_get(4)?,
            cert_key: r.try_get(5)?,
        }))
    }

    fn update_device(
        &mut self,
        id: &DeviceId,
        name: Option<&str>,
        labels: Option<&BTreeMap<String, String>>,
    ) -> Result<(), StoreError> {
        let encoded = labels.map(|l| encode("labels", l)).transpose()?;
        self.exec(
            "UPDATE devices SET name = COALESCE($1, name), labels = COALESCE($2, labels)
             WHERE id = $3",
            &[&name, &encoded, &id.as_str()],
        )?;
        if let Some(labels) = labels {
            write_labels(self, id, labels)?;
        }
        Ok(())
    }

    fn set_device_revoked(&mut self, id: &DeviceId, at: OffsetDateTime) -> Result<(), StoreError> {
        self.exec(
            "UPDATE devices SET revoked_at = $1, connection = NULL, connected_at = NULL
             WHERE id = $2",
            &[&to_unix(at), &id.as_str()],
        )?;
        Ok(())
    }

    fn delete_device(&mut self, id: &DeviceId) -> Result<(), StoreError> {
        self.exec("DELETE FROM devices WHERE id = $1", &[&id.as_str()])?;
        self.exec("DELETE FROM reports WHERE device_id = $1", &[&id.as_str()])?;
        Ok(())
    }

    fn set_device_certificate(
        &mut self,
        id: &DeviceId,
        cert: &IssuedCert,
        at: OffsetDateTime,
        supersede: bool,
    ) -> Result<(), StoreError> {
        self.exec(
            "UPDATE devices
             SET previous_cert_serial =
                     CASE WHEN $7 THEN cert_serial ELSE previous_cert_serial END,
                 cert_superseded_at = CASE WHEN $7 THEN $1 ELSE cert_superseded_at END,
                 cert_serial = $2, cert_expires_at = $3, cert_ca = $5, cert_key = $6
             WHERE id = $4",
            &[
                &to_unix(at),
                &cert.serial_hex,
                &to_unix(cert.not_after),
                &id.as_str(),
                &cert.ca,
                &cert.key,
                &supersede,
            ],
        )?;
        Ok(())
    }

    fn devices_not_on_ca(&mut self, ca: &str) -> Result<u64, StoreError> {
        let n: i64 = self
            .c()?
            .query_one(
                "SELECT COUNT(*) FROM devices
                 WHERE revoked_at IS NULL AND (cert_ca IS NULL OR cert_ca <> $1)",
                &[&ca],
            )?
            .try_get(0)?;
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
        let n = self.exec(
            "UPDATE devices
             SET last_seen_at = GREATEST(COALESCE(last_seen_at, 0), $1),
                 facts = COALESCE($2, facts),
                 agent_version = COALESCE($5, agent_version),
                 connected_at = CASE WHEN connection IS NOT DISTINCT FROM $3
                                     THEN connected_at ELSE $1 END,
                 connection = $3
             WHERE id = $4 AND ($6 OR connection IS NULL OR connection = $3)",
            &[
                &to_unix(at),
                &facts,
                &connection,
                &id.as_str(),
                &agent_version,
                &claim,
            ],
        )?;
        Ok(n == 1)
    }

    fn clear_device_connection(
        &mut self,
        id: &DeviceId,
        connection: &str,
    ) -> Result<(), StoreError> {
        self.exec(
            "UPDATE devices SET connection = NULL, connected_at = NULL
             WHERE id = $1 AND connection = $2",
            &[&id.as_str(), &connection],
        )?;
        Ok(())
    }

    fn clear_instance_connections(&mut self, instance: &str) -> Result<u64, StoreError> {
        // Marks are `<instance>-<n>`: the range of strings with that prefix ('-' < '.').
        self.exec(
            r#"UPDATE devices SET connection = NULL, connected_at = NULL
               WHERE connection COLLATE "C" >= $1 || '-'
                 AND connection COLLATE "C" < $1 || '.'"#,
            &[&instance],
        )
    }

    fn clear_orphan_connections(&mut self) -> Result<u64, StoreError> {
        self.exec(
            r#"UPDATE devices SET connection = NULL, connected_at = NULL
               WHERE connection IS NOT NULL AND NOT EXISTS (
                   SELECT 1 FROM replicas r
                   WHERE devices.connection COLLATE "C" >= r.instance || '-'
                     AND devices.connection COLLATE "C" < r.instance || '.')"#,
            &[],
        )
    }

    fn connection_marks(&mut self, ids: &[DeviceId]) -> Result<Vec<ConnectionMark>, StoreError> {
        let ids: Vec<&str> = ids.iter().map(DeviceId::as_str).collect();
        self.c()?
            .query(
                "SELECT id, connection, revoked_at IS NOT NULL FROM devices
                 WHERE id = ANY($1)",
                &[&ids],
            )?
            .iter()
            .map(|r| {
                Ok(ConnectionMark {
                    device: parse("device id", r.try_get(0)?)?,
                    connection: r.try_get(1)?,
                    revoked: r.try_get(2)?,
                })
            })
            .collect()
    }

    fn notify_device_changed(
        &mut self,
        id: &DeviceId,
        connection: Option<&str>,
    ) -> Result<(), StoreError> {
        // Delivered to every listener when the transaction commits, never if it rolls back.
        // The payload: the device id, then the connecting session's name, or for a
        // revocation or a deletion `@` and the writer's clock in Unix milliseconds (how long
        // it took to reach the sessions, for the metric).
        let payload = match connection {
            Some(c) => format!("{id} {c}"),
            None => {
                let millis = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
                format!("{id} @{millis}")
            }
        };
        self.c()?.execute(
            "SELECT pg_notify($1, $2)",
            &[&super::CHANGES_CHANNEL, &payload],
        )?;
        Ok(())
    }

    fn deployment(&mut self) -> Result<Option<Deployment>, StoreError> {
        self.c()?
            .query_opt(
                "SELECT ca_fingerprint, secret_check, created_at FROM deployment WHERE id = 1",
                &[],
            )?
            .map(|r| {
                Ok(Deployment {
                    ca_fingerprint: r.try_get(0)?,
                    secret_check: r.try_get(1)?,
                    created_at: time(r.try_get(2)?)?,
                })
            })
            .transpose()
    }

    fn set_deployment_ca(&mut self, ca_fingerprint: &str) -> Result<(), StoreError> {
        self.exec(
            "UPDATE deployment SET ca_fingerprint = $1 WHERE id = 1",
            &[&ca_fingerprint],
        )?;
        Ok(())
    }

    fn insert_retired_ca(
        &mut self,
        fingerprint: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO retired_cas (fingerprint, retired_at) VALUES ($1, $2)
             ON CONFLICT (fingerprint) DO NOTHING",
            &[&fingerprint, &to_unix(at)],
        )?;
        Ok(())
    }

    fn ca_retired(&mut self, fingerprint: &str) -> Result<bool, StoreError> {
        Ok(self
            .c()?
            .query_opt(
                "SELECT 1 FROM retired_cas WHERE fingerprint = $1",
                &[&fingerprint],
            )?
            .is_some())
    }

    fn insert_deployment(&mut self, d: &Deployment) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO deployment (id, ca_fingerprint, secret_check, created_at)
             VALUES (1, $1, $2, $3)",
            &[&d.ca_fingerprint, &d.secret_check, &to_unix(d.created_at)],
        )?;
        Ok(())
    }

    fn renew_replica(&mut self, instance: &str, until: OffsetDateTime) -> Result<bool, StoreError> {
        let n = self.exec(
            "UPDATE replicas SET lease_until = $2 WHERE instance = $1",
            &[&instance, &to_unix(until)],
        )?;
        Ok(n == 1)
    }

    fn insert_replica(
        &mut self,
        instance: &str,
        name: &str,
        at: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO replicas (instance, name, started_at, lease_until)
             VALUES ($1, $2, $3, $4)",
            &[&instance, &name, &to_unix(at), &to_unix(until)],
        )?;
        Ok(())
    }

    fn ended_replicas(
        &mut self,
        now: OffsetDateTime,
        name: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        self.c()?
            .query(
                "SELECT instance FROM replicas WHERE lease_until < $1 OR name = $2",
                &[&to_unix(now), &name],
            )?
            .iter()
            .map(|r| Ok(r.try_get(0)?))
            .collect()
    }

    fn delete_replica(&mut self, instance: &str) -> Result<(), StoreError> {
        self.exec("DELETE FROM replicas WHERE instance = $1", &[&instance])?;
        Ok(())
    }

    fn insert_report(
        &mut self,
        device: &DeviceId,
        seq: u64,
        at: OffsetDateTime,
        payload: &str,
    ) -> Result<bool, StoreError> {
        let n = self.exec(
            "INSERT INTO reports (device_id, seq, received_at, payload)
             VALUES ($1, $2, $3, $4) ON CONFLICT (device_id, seq) DO NOTHING",
            &[&device.as_str(), &seq_to_sql(seq)?, &to_unix(at), &payload],
        )?;
        Ok(n == 1)
    }

    fn report_payload(
        &mut self,
        device: &DeviceId,
        seq: u64,
    ) -> Result<Option<String>, StoreError> {
        let seq = seq_to_sql(seq)?;
        Ok(self
            .c()?
            .query_opt(
                "SELECT payload FROM reports WHERE device_id = $1 AND seq = $2",
                &[&device.as_str(), &seq],
            )?
            .map(|r| r.try_get(0))
            .transpose()?)
    }

    fn highest_report_seq(&mut self, device: &DeviceId) -> Result<u64, StoreError> {
        highest(self.c()?, device)
    }

    fn delete_expired_console(&mut self, now: OffsetDateTime) -> Result<(), StoreError> {
        let now = to_unix(now);
        self.exec(
            "DELETE FROM console_sessions WHERE expires_at <= $1",
            &[&now],
        )?;
        self.exec(
            "DELETE FROM console_signin_tokens WHERE expires_at <= $1",
            &[&now],
        )?;
        Ok(())
    }

    fn insert_console_session(&mut self, s: &ConsoleSession) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO console_sessions (id_hash, key_id, created_at, last_seen_at, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &s.id_hash,
                &s.key_id.as_str(),
                &to_unix(s.created_at),
                &to_unix(s.last_seen_at),
                &to_unix(s.expires_at),
            ],
        )?;
        Ok(())
    }

    fn touch_console_session(&mut self, hash: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        self.exec(
            "UPDATE console_sessions SET last_seen_at = $2 WHERE id_hash = $1",
            &[&hash, &to_unix(at)],
        )?;
        Ok(())
    }

    fn delete_console_session(&mut self, hash: &str) -> Result<bool, StoreError> {
        Ok(self.exec("DELETE FROM console_sessions WHERE id_hash = $1", &[&hash])? == 1)
    }

    fn insert_signin_token(
        &mut self,
        hash: &str,
        key: &KeyId,
        at: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO console_signin_tokens (token_hash, key_id, created_at, expires_at)
             VALUES ($1, $2, $3, $4)",
            &[&hash, &key.as_str(), &to_unix(at), &to_unix(expires_at)],
        )?;
        Ok(())
    }

    fn signin_token(&mut self, hash: &str) -> Result<Option<SigninToken>, StoreError> {
        let Some(r) = self.c()?.query_opt(
            "SELECT key_id, expires_at, used_at FROM console_signin_tokens WHERE token_hash = $1",
            &[&hash],
        )?
        else {
            return Ok(None);
        };
        Ok(Some(SigninToken {
            key_id: parse("key id", r.try_get(0)?)?,
            expires_at: time(r.try_get(1)?)?,
            used_at: opt_time(r.try_get(2)?)?,
        }))
    }

    fn set_signin_token_used(&mut self, hash: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        self.exec(
            "UPDATE console_signin_tokens SET used_at = $2 WHERE token_hash = $1",
            &[&hash, &to_unix(at)],
        )?;
        Ok(())
    }
}

/// Replaces the label rows of device `id` with `labels`.
fn write_labels(
    tx: &mut PgTx<'_, '_>,
    id: &DeviceId,
    labels: &BTreeMap<String, String>,
) -> Result<(), StoreError> {
    tx.exec(
        "DELETE FROM device_labels WHERE device_id = $1",
        &[&id.as_str()],
    )?;
    if labels.is_empty() {
        return Ok(());
    }
    let (keys, values): (Vec<&str>, Vec<&str>) =
        labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).unzip();
    tx.exec(
        "INSERT INTO device_labels (device_id, workspace_id, enrolled_at, key, value)
         SELECT d.id, d.workspace_id, d.enrolled_at, l.key, l.value
         FROM devices d, unnest($2::text[], $3::text[]) AS l (key, value)
         WHERE d.id = $1",
        &[&id.as_str(), &keys, &values],
    )?;
    Ok(())
}

/// Adds the label rows of device `id` (held back with the device's own row: the values are
/// given, not read from it).
fn insert_labels(
    tx: &mut PgTx<'_, '_>,
    id: &DeviceId,
    workspace: &WorkspaceId,
    enrolled_at: OffsetDateTime,
    labels: &BTreeMap<String, String>,
) -> Result<(), StoreError> {
    if labels.is_empty() {
        return Ok(());
    }
    let (keys, values): (Vec<String>, Vec<String>) =
        labels.iter().map(|(k, v)| (k.clone(), v.clone())).unzip();
    tx.hold(
        "INSERT INTO device_labels (device_id, workspace_id, enrolled_at, key, value)
         SELECT $1, $2, $3, l.key, l.value FROM unnest($4::text[], $5::text[]) AS l (key, value)",
        vec![
            Box::new(id.as_str().to_owned()),
            Box::new(workspace.as_str().to_owned()),
            Box::new(to_unix(enrolled_at)),
            Box::new(keys),
            Box::new(values),
        ],
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::{combined, renumber};

    #[test]
    fn placeholders_are_numbered_on() {
        assert_eq!(
            renumber("a = $1 AND b = $12 OR c = $2", 3),
            ("a = $4 AND b = $15 OR c = $5".to_owned(), 12)
        );
        assert_eq!(renumber("x = $ y", 2), ("x = $ y".to_owned(), 0));
        assert_eq!(
            combined(
                [
                    "UPDATE k SET u = u + 1 WHERE id = $1",
                    "INSERT INTO d VALUES ($1, $2)"
                ]
                .into_iter()
            ),
            "WITH w0 AS (UPDATE k SET u = u + 1 WHERE id = $1) INSERT INTO d VALUES ($2, $3)"
        );
        assert_eq!(
            combined(["INSERT INTO a VALUES ($1)"].into_iter()),
            "INSERT INTO a VALUES ($1)"
        );
    }
}
