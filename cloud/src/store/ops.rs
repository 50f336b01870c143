//! The store's changes, written once over [`Tx`] and run by every backend inside one
//! transaction: what is checked again at the write (the caller's key, a key's usability, a
//! device's revocation), the rules (the last owner stays, an invitation speaks for its
//! inviter, a member's removal revokes every key), and the audit events that go with them.

use std::collections::BTreeMap;

use heex_proto::api::{Facts, Scope};
use heex_proto::{DeviceId, KeyId, MemberId, WorkspaceId};
use serde_json::json;
use time::OffsetDateTime;

use super::backend::{Deployment, DeviceState, InvitationsOf, Tx};
use super::{
    AcceptOutcome, Acceptance, AuditAction, AuditEntry, CancelOutcome, ConsoleSession,
    DeleteDeviceOutcome, InvitationCancel, IssuedCert, KeyRecord, KeyUsability, MemberRecord,
    NewDevice, NewInvitation, NewKey, NewMember, NewWorkspace, RemoveOutcome, Revocation, Role,
    Rotation, StoreError,
};
use crate::store::access::{self, DeviceAction, Refusal};
use crate::store::{Seen, StoredReports};

/// The actor of what the server does on its own (e.g. `init`).
pub const SYSTEM_ACTOR: &str = "system";

/// The caller's key of a change (see [`AuditEntry::caller`]) as this transaction sees it,
/// checked against what the change needs; `None` for a change made by no key (the system).
/// [`StoreError::Refused`] when the key is gone, revoked, expired, its member removed, or
/// its scope or role falls short.
pub fn caller(tx: &mut dyn Tx, audit: &AuditEntry) -> Result<Option<KeyRecord>, StoreError> {
    let Some(check) = &audit.caller else {
        return Ok(None);
    };
    checked_caller(audit, tx.key(&check.key)?).map(Some)
}

/// [`caller`] given the caller's key as the transaction read it.
fn checked_caller(audit: &AuditEntry, key: Option<KeyRecord>) -> Result<KeyRecord, StoreError> {
    let Some(check) = &audit.caller else {
        return Err(StoreError::Refused(Refusal::Unauthorized));
    };
    let key = key
        .filter(|k| k.id == check.key && k.workspace_id == audit.workspace_id)
        .ok_or(StoreError::Refused(Refusal::Unauthorized))?;
    access::check(&key, check.need, check.action, OffsetDateTime::now_utc())
        .map_err(StoreError::Refused)?;
    Ok(key)
}

/// How many of `keys` can be used at `now`.
pub fn usable_keys<'a>(keys: impl IntoIterator<Item = &'a KeyRecord>, now: OffsetDateTime) -> u64 {
    keys.into_iter()
        .filter(|k| k.usability(now) == KeyUsability::Usable)
        .count() as u64
}

/// The member with this id, with the number of keys they can use at `now`.
pub fn member(
    tx: &mut dyn Tx,
    ws: &WorkspaceId,
    id: &MemberId,
    now: OffsetDateTime,
) -> Result<Option<MemberRecord>, StoreError> {
    let Some(mut m) = tx.member(ws, id)? else {
        return Ok(None);
    };
    m.active_keys = usable_keys(&tx.member_keys(id)?, now);
    Ok(Some(m))
}

/// Creates a workspace, its owner and the owner's first key, with their audit events
/// (actor "system"). The first key is whatever `key` says (the server's `init` makes it an
/// admin key).
pub fn create_workspace_with_owner(
    tx: &mut dyn Tx,
    ws: &NewWorkspace,
    owner: &NewMember,
    key: &NewKey,
) -> Result<(), StoreError> {
    tx.insert_workspace(ws)?;
    tx.insert_member(owner)?;
    tx.insert_key(key)?;
    let system = |action, target: String, details| AuditEntry {
        workspace_id: ws.id.clone(),
        at: ws.created_at,
        actor: SYSTEM_ACTOR.to_owned(),
        action,
        target,
        details,
        caller: None,
    };
    tx.insert_audit(&system(
        AuditAction::MemberJoin,
        owner.email.clone(),
        json!({"member_id": owner.id, "role": owner.role}),
    ))?;
    tx.insert_audit(&system(
        AuditAction::KeyCreate,
        key.id.to_string(),
        json!({"name": key.name, "scope": key.scope, "owner": owner.email}),
    ))
}

/// Removes a member and revokes every key of theirs still usable (one whose revocation is
/// only scheduled after a rotation included), cancels the invitations they made and those
/// inviting them, and records `audit` with what was done. The last owner stays.
pub fn remove_member(
    tx: &mut dyn Tx,
    ws: &WorkspaceId,
    id: &MemberId,
    by: &MemberId,
    at: OffsetDateTime,
    audit: &AuditEntry,
) -> Result<RemoveOutcome, StoreError> {
    let actor = caller(tx, audit)?;
    let Some(found) = tx.member(ws, id)? else {
        return Ok(RemoveOutcome::NotFound);
    };
    if let Some(actor) = &actor {
        access::remove_member(actor, &found.email, found.role, OffsetDateTime::now_utc())
            .map_err(StoreError::Refused)?;
    }
    let already_removed_at = found.removed_at;
    if already_removed_at.is_none() {
        if found.role == Role::Owner && !tx.current_owners(ws)?.iter().any(|o| o != id) {
            return Ok(RemoveOutcome::LastOwner);
        }
        tx.set_member_removed(id, at)?;
    }
    // A repeated removal revokes whatever is still usable (e.g. a key created while the
    // first removal ran).
    let mut revoked_keys = Vec::new();
    for key in tx.member_keys(id)? {
        if !key.is_revoked(at) {
            tx.set_key_revoked(&key.id, at, by, Revocation::MemberRemoved, None)?;
            revoked_keys.push(key.id);
        }
    }
    revoked_keys.sort();
    let mut cancelled_invitations = Vec::new();
    for (which, reason) in [
        (
            InvitationsOf::InvitedBy(id),
            InvitationCancel::InviterRemoved,
        ),
        (
            InvitationsOf::Invitee(ws, &found.email),
            InvitationCancel::InviteeRemoved,
        ),
    ] {
        for inv in tx.pending_invitations(which)? {
            tx.set_invitation_cancelled(&inv, at, by, reason)?;
            cancelled_invitations.push(inv);
        }
    }
    cancelled_invitations.sort();
    if let Some(removed_at) = already_removed_at {
        if revoked_keys.is_empty() && cancelled_invitations.is_empty() {
            return Ok(RemoveOutcome::AlreadyRemoved(removed_at));
        }
    }
    let mut audit = audit.clone();
    if let Some(details) = audit.details.as_object_mut() {
        details.insert("member_id".into(), json!(id));
        details.insert("role".into(), json!(found.role));
        details.insert("revoked_keys".into(), json!(revoked_keys));
        details.insert("cancelled_invitations".into(), json!(cancelled_invitations));
        if let Some(removed_at) = already_removed_at {
            details.insert(
                "already_removed_at".into(),
                json!(removed_at.unix_timestamp()),
            );
        }
    }
    tx.insert_audit(&audit)?;
    let member = member(tx, ws, id, at)?
        .ok_or_else(|| StoreError::Database(format!("removed member {id} vanished")))?;
    Ok(RemoveOutcome::Removed {
        member,
        revoked_keys,
        cancelled_invitations,
        already_removed_at,
    })
}

/// Records an invitation with its audit event; false (nothing recorded) when the email
/// belongs to a current member.
pub fn create_invitation(
    tx: &mut dyn Tx,
    inv: &NewInvitation,
    audit: &AuditEntry,
) -> Result<bool, StoreError> {
    if let Some(actor) = caller(tx, audit)? {
        access::invite(&actor, inv.role, OffsetDateTime::now_utc()).map_err(StoreError::Refused)?;
    }
    if tx
        .current_member_with_email(&inv.workspace_id, &inv.email)?
        .is_some()
    {
        return Ok(false);
    }
    tx.insert_invitation(inv)?;
    tx.insert_audit(audit)?;
    Ok(true)
}

/// Cancels a pending invitation with `audit`.
pub fn cancel_invitation(
    tx: &mut dyn Tx,
    ws: &WorkspaceId,
    id: &str,
    by: &MemberId,
    audit: &AuditEntry,
) -> Result<CancelOutcome, StoreError> {
    caller(tx, audit)?;
    let Some(inv) = tx.invitation(ws, id)? else {
        return Ok(CancelOutcome::NotFound);
    };
    if let Some(at) = inv.accepted_at {
        return Ok(CancelOutcome::AlreadyAccepted(at));
    }
    if let Some((at, _)) = inv.cancelled {
        return Ok(CancelOutcome::AlreadyCancelled(at));
    }
    tx.set_invitation_cancelled(id, audit.at, by, InvitationCancel::Cancelled)?;
    tx.insert_audit(audit)?;
    Ok(CancelOutcome::Cancelled(inv.record()))
}

/// Accepts an invitation: known, unused, unexpired, its inviter still able to issue it, the
/// email not a member yet; creates the member and their first key (admin scope), marks the
/// invitation used, with the audit events.
pub fn accept_invitation(tx: &mut dyn Tx, a: &Acceptance) -> Result<AcceptOutcome, StoreError> {
    let Some(inv) = tx.invitation_by_token(&a.token_hash)? else {
        return Ok(AcceptOutcome::Unknown);
    };
    if let Some(at) = inv.accepted_at {
        return Ok(AcceptOutcome::AlreadyAccepted(at));
    }
    if let Some((at, reason)) = inv.cancelled {
        return Ok(AcceptOutcome::Cancelled(at, reason));
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
        return Ok(AcceptOutcome::InviterGone(inv.inviter_email));
    }
    if tx
        .current_member_with_email(&inv.workspace_id, &inv.email)?
        .is_some()
    {
        return Ok(AcceptOutcome::AlreadyMember(inv.email));
    }
    tx.insert_member(&NewMember {
        id: a.member_id.clone(),
        workspace_id: inv.workspace_id.clone(),
        email: inv.email.clone(),
        role: inv.role,
        created_at: a.at,
    })?;
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
    tx.insert_key(&key)?;
    tx.set_invitation_accepted(&inv.id, &a.member_id, a.at)?;
    let event = |action, target: String, details| AuditEntry {
        workspace_id: inv.workspace_id.clone(),
        at: a.at,
        actor: inv.email.clone(),
        action,
        target,
        details,
        caller: None,
    };
    tx.insert_audit(&event(
        AuditAction::MemberJoin,
        inv.email.clone(),
        json!({"member_id": a.member_id, "role": inv.role, "invited_by": inv.inviter_email}),
    ))?;
    tx.insert_audit(&event(
        AuditAction::KeyCreate,
        key.id.to_string(),
        json!({"name": key.name, "scope": key.scope, "owner": inv.email}),
    ))?;
    let member = member(tx, &inv.workspace_id, &a.member_id, a.at)?
        .ok_or_else(|| StoreError::Database("new member vanished".into()))?;
    let key = tx
        .key(&key.id)?
        .ok_or_else(|| StoreError::Database("new key vanished".into()))?;
    Ok(AcceptOutcome::Joined {
        member: Box::new(member),
        key: Box::new(key),
    })
}

/// Records a new key with its audit event.
pub fn create_key(tx: &mut dyn Tx, key: &NewKey, audit: &AuditEntry) -> Result<(), StoreError> {
    caller(tx, audit)?;
    tx.insert_key(key)?;
    tx.insert_audit(audit)
}

/// Revokes a key at `at` (one whose revocation is only scheduled is revoked now), recording
/// `audit` when that changed anything; the key as it is afterwards.
pub fn revoke_key(
    tx: &mut dyn Tx,
    id: &KeyId,
    by: &MemberId,
    at: OffsetDateTime,
    audit: &AuditEntry,
) -> Result<Option<KeyRecord>, StoreError> {
    let actor = caller(tx, audit)?;
    let Some(target) = tx.key(id)? else {
        return Ok(None);
    };
    if let Some(actor) = actor {
        access::revoke_key(&actor, &target, OffsetDateTime::now_utc())
            .map_err(StoreError::Refused)?;
    }
    if !target.is_revoked(at) {
        tx.set_key_revoked(id, at, by, Revocation::Revoked, None)?;
        tx.insert_audit(audit)?;
    }
    tx.key(id)
}

/// Creates the replacement key and schedules the old key's revocation.
/// [`StoreError::KeyUnusable`] (nothing written) when the old key is revoked (or its
/// revocation scheduled), or expired.
pub fn rotate_key(tx: &mut dyn Tx, r: &Rotation) -> Result<KeyRecord, StoreError> {
    for entry in &r.audit {
        caller(tx, entry)?;
    }
    let old = tx.key(&r.old)?;
    if !old.is_some_and(|k| k.revoked_at.is_none() && k.expires_at > r.at) {
        return Err(StoreError::KeyUnusable(r.old.clone()));
    }
    // The replacement first: the old key's replaced_by references it.
    tx.insert_key(&r.new)?;
    tx.set_key_revoked(
        &r.old,
        r.old_revoked_at,
        &r.by,
        Revocation::Rotated,
        Some(&r.new.id),
    )?;
    for entry in &r.audit {
        tx.insert_audit(entry)?;
    }
    tx.key(&r.new.id)?
        .ok_or_else(|| StoreError::Database(format!("rotated key {} vanished", r.new.id)))
}

/// Records an audit event that goes with no other change.
pub fn record_audit(tx: &mut dyn Tx, entry: &AuditEntry) -> Result<(), StoreError> {
    caller(tx, entry)?;
    tx.insert_audit(entry)
}

/// Records an enrolled device with its audit event and one use of the enrolling key, which
/// must be usable at the enrollment time ([`StoreError::KeyUnusable`]): counted here, so
/// concurrent enrollments cannot overspend a limited key.
///
/// Runs with [`Backend::transact_locking`](super::backend::Backend::transact_locking): the
/// enrolling key (and the caller's, when another) is locked before it is read, so concurrent
/// enrollments with one key take turns and a revocation, a removal or the last use cannot
/// slip between the check and the write.
pub fn insert_device(tx: &mut dyn Tx, d: &NewDevice, audit: &AuditEntry) -> Result<(), StoreError> {
    // Always in id order: two enrollments locking the same two keys cannot deadlock.
    let mut locks = vec![&d.enrolled_by_key];
    if let Some(c) = &audit.caller {
        locks.push(&c.key);
    }
    locks.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    locks.dedup();
    // Each read as it stays until this transaction ends.
    let mut locked: Vec<KeyRecord> = Vec::with_capacity(locks.len());
    for id in locks {
        locked.extend(tx.lock_key(id)?);
    }
    let read = |id: &KeyId| locked.iter().find(|k| &k.id == id).cloned();
    if let Some(c) = &audit.caller {
        checked_caller(audit, read(&c.key))?;
    }
    let usable = read(&d.enrolled_by_key)
        .is_some_and(|k| k.usability(d.enrolled_at) == KeyUsability::Usable);
    if !usable {
        return Err(StoreError::KeyUnusable(d.enrolled_by_key.clone()));
    }
    refuse_retired_ca(tx, &d.cert_ca)?;
    tx.add_key_use(&d.enrolled_by_key)?;
    tx.insert_device(d)?;
    tx.insert_audit(audit)
}

/// The device's state when it exists and is not revoked.
fn live_device(tx: &mut dyn Tx, id: &DeviceId) -> Result<Option<DeviceState>, StoreError> {
    Ok(tx.device_state(id)?.filter(|d| d.revoked_at.is_none()))
}

/// Records that a device was heard from by the session `connection`. At Hello (`claim`) the
/// session takes the device's connection mark, whoever held it, and the other processes
/// sharing the store are told (a session of the device they hold is now an older one);
/// later records only refresh a mark that is still the session's, or that nobody holds (a
/// lease that ended while the session lived). [`Seen::Superseded`] when another session
/// holds it, [`Seen::NotLive`] when the device is revoked or gone; then nothing is written.
pub fn record_connected(
    tx: &mut dyn Tx,
    id: &DeviceId,
    facts: Option<&Facts>,
    agent_version: Option<&str>,
    at: OffsetDateTime,
    connection: &str,
    claim: bool,
) -> Result<Seen, StoreError> {
    if live_device(tx, id)?.is_none() {
        return Ok(Seen::NotLive);
    }
    if !tx.set_device_seen(id, facts, agent_version, at, connection, claim)? {
        return Ok(Seen::Superseded);
    }
    if claim {
        tx.notify_device_changed(id, Some(connection))?;
    }
    Ok(Seen::Recorded)
}

/// Starts the lease of replica `instance` (named `name`) until `until`: the marks of
/// replicas whose lease ended, of an earlier run of the same name, and of processes that
/// hold no lease at all are cleared first. How many marks were cleared.
pub fn start_replica(
    tx: &mut dyn Tx,
    instance: &str,
    name: &str,
    now: OffsetDateTime,
    until: OffsetDateTime,
) -> Result<u64, StoreError> {
    let mut cleared = end_replicas(tx, now, Some(name))?;
    tx.insert_replica(instance, name, now, until)?;
    cleared += tx.clear_orphan_connections()?;
    Ok(cleared)
}

/// Extends replica `instance`'s lease to `until` and ends the leases of the others that
/// lapsed (clearing their marks). False when `instance` held no lease any more (the others
/// ended it while it could not reach the store): it is recorded again, and the caller marks
/// its sessions again.
pub fn renew_replica(
    tx: &mut dyn Tx,
    instance: &str,
    name: &str,
    now: OffsetDateTime,
    until: OffsetDateTime,
) -> Result<bool, StoreError> {
    let held = tx.renew_replica(instance, until)?;
    if !held {
        tx.clear_instance_connections(instance)?;
        tx.insert_replica(instance, name, now, until)?;
    }
    end_replicas(tx, now, None)?;
    Ok(held)
}

/// Ends replica `instance`'s lease and clears its marks (a clean stop).
pub fn stop_replica(tx: &mut dyn Tx, instance: &str) -> Result<u64, StoreError> {
    let cleared = tx.clear_instance_connections(instance)?;
    tx.delete_replica(instance)?;
    Ok(cleared)
}

/// Ends the leases that lapsed before `now` (and those named `name`), clearing their marks.
fn end_replicas(
    tx: &mut dyn Tx,
    now: OffsetDateTime,
    name: Option<&str>,
) -> Result<u64, StoreError> {
    let mut cleared = 0;
    for instance in tx.ended_replicas(now, name)? {
        cleared += stop_replica(tx, &instance)?;
    }
    Ok(cleared)
}

/// Marks the sessions `held` (device, connection) connected again where nobody holds the
/// device's mark (after this replica's lease was ended while it lived).
pub fn mark_sessions_again(
    tx: &mut dyn Tx,
    held: &[(DeviceId, String)],
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    for (id, connection) in held {
        if live_device(tx, id)?.is_some() {
            tx.set_device_seen(id, None, None, at, connection, false)?;
        }
    }
    Ok(())
}

/// How long before an owner's last usable admin key expires the owner is warned.
pub const ADMIN_KEY_WARNING: time::Duration = time::Duration::days(14);

/// The warning for an owner whose usable admin keys (among `keys`, theirs) all expire
/// within [`ADMIN_KEY_WARNING`] of `now`, or who has none: without one, nothing over the API
/// can make another. `None` for other roles, or when a usable admin key outlives the window.
pub fn admin_key_warning(role: Role, keys: &[KeyRecord], now: OffsetDateTime) -> Option<String> {
    if role != Role::Owner {
        return None;
    }
    let last = keys
        .iter()
        .filter(|k| k.scope == Scope::Admin && k.usability(now) == KeyUsability::Usable)
        .map(|k| k.expires_at)
        .max();
    let fix = "create another admin key (heex keys create NAME --scope admin) or rotate it; \
               if none is left, the server's operator can make one (heex-cloud keys create)";
    match last {
        None => Some(format!("you have no usable admin key: {fix}")),
        Some(at) if at - now < ADMIN_KEY_WARNING => {
            let days = (at - now).whole_days();
            Some(format!(
                "your last admin key expires in {days} day{} ({}): {fix}",
                if days == 1 { "" } else { "s" },
                access::rfc3339(at)
            ))
        }
        Some(_) => None,
    }
}

/// A key the host's operator has made for a member (break-glass, `heex-cloud keys create`).
#[derive(Debug, Clone)]
pub struct OperatorKey {
    /// The new key's id.
    pub id: KeyId,
    /// Its name.
    pub name: String,
    /// Its scope.
    pub scope: Scope,
    /// When.
    pub created_at: OffsetDateTime,
    /// When it expires.
    pub expires_at: OffsetDateTime,
    /// Who made it, as the audit log shows (the host's operator, not a member).
    pub actor: String,
}

/// What became of an operator's key request.
#[derive(Debug, Clone)]
pub enum OperatorKeyOutcome {
    /// Made for this member of this workspace.
    Created(MemberRecord),
    /// No workspace has that name.
    NoWorkspace,
    /// The workspace has no current member with that email (never invited, or removed).
    NoMember,
}

/// Makes a key for the current member `email` of the workspace named `workspace`, audited
/// as the operator's action (no caller key: the operator proves themselves by holding the
/// data directory). A removed member gets none.
pub fn operator_create_key(
    tx: &mut dyn Tx,
    workspace: &str,
    email: &str,
    key: &OperatorKey,
) -> Result<OperatorKeyOutcome, StoreError> {
    let Some(ws) = tx.workspace_named(workspace)? else {
        return Ok(OperatorKeyOutcome::NoWorkspace);
    };
    let Some(member_id) = tx.current_member_with_email(&ws, email)? else {
        return Ok(OperatorKeyOutcome::NoMember);
    };
    let Some(member) = tx.member(&ws, &member_id)? else {
        return Ok(OperatorKeyOutcome::NoMember);
    };
    tx.insert_key(&NewKey {
        id: key.id.clone(),
        workspace_id: ws.clone(),
        member_id,
        name: key.name.clone(),
        scope: key.scope,
        created_at: key.created_at,
        expires_at: key.expires_at,
        max_uses: None,
    })?;
    tx.insert_audit(&AuditEntry {
        workspace_id: ws,
        at: key.created_at,
        actor: key.actor.clone(),
        action: AuditAction::KeyCreate,
        target: key.id.to_string(),
        details: json!({
            "name": key.name,
            "scope": key.scope,
            "owner": member.email,
            "by": "operator",
        }),
        caller: None,
    })?;
    Ok(OperatorKeyOutcome::Created(member))
}

/// Records who the store belongs to unless it is recorded; the recorded one when it was.
pub fn claim_deployment(
    tx: &mut dyn Tx,
    deployment: &Deployment,
) -> Result<Option<Deployment>, StoreError> {
    if let Some(existing) = tx.deployment()? {
        return Ok(Some(existing));
    }
    tx.insert_deployment(deployment)?;
    Ok(None)
}

/// [`StoreError::CaRetired`] when `ca` (a CA fingerprint) was retired: decided inside the
/// transaction that records a certificate it signed, so a process that has not yet reread
/// its CA files after `heex-cloud ca retire` cannot put a device back on the retired CA.
fn refuse_retired_ca(tx: &mut dyn Tx, ca: &str) -> Result<(), StoreError> {
    if tx.ca_retired(ca)? {
        return Err(StoreError::CaRetired(ca.to_owned()));
    }
    Ok(())
}

/// What [`retire_ca`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaRetirement {
    /// `from` is retired and `to` is the recorded CA; this many devices that are not revoked
    /// still held a certificate from another CA than `to` (only with `force`).
    Retired {
        /// Devices cut off.
        stranded: u64,
    },
    /// Not retired: this many devices that are not revoked hold a certificate from another
    /// CA than `to`, and `force` was not given.
    Refused {
        /// Devices still on another CA.
        remaining: u64,
    },
    /// The store records neither CA: it belongs to another data directory.
    NotOurs,
}

/// Ends a CA rotation in one transaction: counts the devices not on `to`, and unless some
/// are (and not `force`), records `from` as retired and moves the recorded owner's CA from
/// `from` to `to` (CA fingerprints). Counting and retiring together, against renewals that
/// refuse a retired CA ([`refuse_retired_ca`]), leaves no moment in which a renewal from
/// the old CA could be recorded after the count.
pub fn retire_ca(
    tx: &mut dyn Tx,
    from: &str,
    to: &str,
    force: bool,
    at: OffsetDateTime,
) -> Result<CaRetirement, StoreError> {
    let remaining = tx.devices_not_on_ca(to)?;
    if remaining > 0 && !force {
        return Ok(CaRetirement::Refused { remaining });
    }
    match tx.deployment()? {
        Some(d) if d.ca_fingerprint == to => {}
        Some(d) if d.ca_fingerprint == from => tx.set_deployment_ca(to)?,
        Some(_) => return Ok(CaRetirement::NotOurs),
        // A SQLite store from before owners were recorded: the next start claims it.
        None => {}
    }
    tx.insert_retired_ca(from, at)?;
    Ok(CaRetirement::Retired {
        stranded: remaining,
    })
}

/// Creates the first workspace of a new store with its owner, and records who the store
/// belongs to, in one transaction; the recorded owner (and nothing written) when the store
/// already has one.
pub fn init_deployment(
    tx: &mut dyn Tx,
    deployment: &Deployment,
    ws: &NewWorkspace,
    owner: &NewMember,
    key: &NewKey,
) -> Result<Option<Deployment>, StoreError> {
    if let Some(existing) = claim_deployment(tx, deployment)? {
        return Ok(Some(existing));
    }
    create_workspace_with_owner(tx, ws, owner, key)?;
    Ok(None)
}

/// True when two stored forms of a report say the same: byte-equal, or equal as JSON (a
/// number written differently by another encoder).
fn same_report(stored: &str, new: &str) -> bool {
    stored == new
        || matches!(
            (
                serde_json::from_str::<serde_json::Value>(stored),
                serde_json::from_str::<serde_json::Value>(new),
            ),
            (Ok(a), Ok(b)) if a == b
        )
}

/// Stores a device's reports once each. A number already stored with the same content is a
/// redelivery (a lost acknowledgement) and left alone; with other content it is a conflict:
/// the stored report stays, and the number is returned among the conflicts with the next
/// free number. [`StoreError::DeviceNotLive`] when the device is revoked or gone: decided in
/// the write itself, so a revocation committed before this batch wins. Also answers how many
/// reports it stored and how many were redelivered.
pub fn store_reports(
    tx: &mut dyn Tx,
    device: &DeviceId,
    reports: &[(u64, String)],
    at: OffsetDateTime,
) -> Result<(StoredReports, (u64, u64)), StoreError> {
    if live_device(tx, device)?.is_none() {
        return Err(StoreError::DeviceNotLive(device.clone()));
    }
    let mut redelivered: u64 = 0;
    let mut stored: u64 = 0;
    let mut conflicts = Vec::new();
    for (seq, payload) in reports {
        if tx.insert_report(device, *seq, at, payload)? {
            stored += 1;
            continue;
        }
        match tx.report_payload(device, *seq)? {
            Some(stored) if same_report(&stored, payload) => redelivered += 1,
            _ => conflicts.push(*seq),
        }
    }
    if redelivered > 0 {
        tracing::info!(
            %device,
            redelivered,
            "reports already stored were delivered again and ignored"
        );
    }
    let next_seq = tx.highest_report_seq(device)?.saturating_add(1);
    if !conflicts.is_empty() {
        tracing::warn!(
            %device,
            ?conflicts,
            next_seq,
            "the device sent other reports under numbers already stored (its outbox was \
             rewound); it is told to queue them again under fresh numbers"
        );
    }
    Ok((
        StoredReports {
            highest: reports.iter().map(|r| r.0).max().unwrap_or(0),
            conflicts,
            next_seq,
        },
        (stored, redelivered),
    ))
}

/// Records a renewed certificate; false (nothing changed) when the device is revoked or
/// gone, or `from_serial` is not its current certificate (a concurrent renewal from the
/// same serial, or one from a superseded copy). Decided in the write: a revocation that
/// lands between the gateway's check and this write wins.
pub fn record_renewal(
    tx: &mut dyn Tx,
    id: &DeviceId,
    from_serial: &str,
    cert: &IssuedCert,
    at: OffsetDateTime,
) -> Result<bool, StoreError> {
    refuse_retired_ca(tx, &cert.ca)?;
    match live_device(tx, id)? {
        Some(d) if d.cert_serial == from_serial => {
            tx.set_device_certificate(id, cert, at, true)?;
            Ok(true)
        }
        // The renewal that superseded `from_serial` repeated for the same key: its answer
        // never reached the agent's disk (a crash). The new certificate replaces the one
        // that answer carried, which nobody installed; `from_serial` stays the previous
        // one, so a second crash can repeat again. A request for another key stays refused.
        Some(d)
            if d.previous_serial.as_deref() == Some(from_serial)
                && d.cert_key.as_deref() == Some(cert.key.as_str()) =>
        {
            tx.set_device_certificate(id, cert, at, false)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// A device of `ws` (`None` when there is no such device), after the access policy decided
/// on `action` for the change's caller, inside the change's transaction.
fn device_for(
    tx: &mut dyn Tx,
    ws: &WorkspaceId,
    id: &DeviceId,
    audit: &AuditEntry,
    action: DeviceAction,
) -> Result<Option<DeviceState>, StoreError> {
    let actor = caller(tx, audit)?;
    let Some(device) = tx.device_state(id)?.filter(|d| d.workspace_id == *ws) else {
        return Ok(None);
    };
    if let Some(actor) = actor {
        access::manage_device(
            &actor,
            &device.enrolled_by_member,
            action,
            OffsetDateTime::now_utc(),
        )
        .map_err(StoreError::Refused)?;
    }
    Ok(Some(device))
}

/// Revokes a device once (a second revoke keeps the first time and records nothing); false
/// when there is no such device. A revoked device is no longer connected: the gateway closes
/// its sessions next, and their ends find no mark of theirs to clear.
pub fn revoke_device(
    tx: &mut dyn Tx,
    ws: &WorkspaceId,
    id: &DeviceId,
    at: OffsetDateTime,
    audit: &AuditEntry,
) -> Result<bool, StoreError> {
    match device_for(tx, ws, id, audit, DeviceAction::Revoke)? {
        None => Ok(false),
        Some(d) if d.revoked_at.is_some() => Ok(true),
        Some(_) => {
            tx.set_device_revoked(id, at)?;
            tx.notify_device_changed(id, None)?;
            tx.insert_audit(audit)?;
            Ok(true)
        }
    }
}

/// Renames a device and/or replaces its labels, with `audit`; false when there is no such
/// device.
pub fn update_device(
    tx: &mut dyn Tx,
    ws: &WorkspaceId,
    id: &DeviceId,
    name: Option<&str>,
    labels: Option<&BTreeMap<String, String>>,
    audit: &AuditEntry,
) -> Result<bool, StoreError> {
    if device_for(tx, ws, id, audit, DeviceAction::Update)?.is_none() {
        return Ok(false);
    }
    tx.update_device(id, name, labels)?;
    tx.insert_audit(audit)?;
    Ok(true)
}

/// Deletes a revoked device and its reports, with `audit`.
pub fn delete_device(
    tx: &mut dyn Tx,
    ws: &WorkspaceId,
    id: &DeviceId,
    audit: &AuditEntry,
) -> Result<DeleteDeviceOutcome, StoreError> {
    match device_for(tx, ws, id, audit, DeviceAction::Delete)? {
        None => Ok(DeleteDeviceOutcome::NotFound),
        Some(d) if d.revoked_at.is_none() => Ok(DeleteDeviceOutcome::NotRevoked),
        Some(_) => {
            tx.delete_device(id)?;
            tx.notify_device_changed(id, None)?;
            tx.insert_audit(audit)?;
            Ok(DeleteDeviceOutcome::Deleted)
        }
    }
}

/// Records a console session with its sign-in's audit event, the session's key checked
/// again (it may have been revoked since the sign-in checked it); expired sessions and
/// sign-in tokens are dropped whenever a session starts.
pub fn create_console_session(
    tx: &mut dyn Tx,
    session: &ConsoleSession,
    audit: &AuditEntry,
) -> Result<(), StoreError> {
    caller(tx, audit)?;
    tx.delete_expired_console(session.created_at)?;
    tx.insert_console_session(session)?;
    tx.insert_audit(audit)
}

/// Ends a console session, with `audit` when there was one.
pub fn delete_console_session(
    tx: &mut dyn Tx,
    hash: &str,
    audit: Option<&AuditEntry>,
) -> Result<(), StoreError> {
    let deleted = tx.delete_console_session(hash)?;
    match audit {
        Some(audit) if deleted => tx.insert_audit(audit),
        _ => Ok(()),
    }
}

/// Spends a sign-in token: its key when unused and unexpired at `at`.
pub fn redeem_signin_token(
    tx: &mut dyn Tx,
    hash: &str,
    at: OffsetDateTime,
) -> Result<Option<KeyId>, StoreError> {
    match tx.signin_token(hash)? {
        Some(t) if t.used_at.is_none() && t.expires_at > at => {
            tx.set_signin_token_used(hash, at)?;
            Ok(Some(t.key_id))
        }
        _ => Ok(None),
    }
}
