//! The seam between the store's rules and a database.
//!
//! A database backend implements two traits and decides nothing:
//!
//! - [`Tx`]: the primitive reads and writes of one transaction. Every change the store makes
//!   is a domain operation ([`super::ops`]) written once over `&mut dyn Tx`: the caller's key
//!   checked again, the usability of a key, the last-owner rule, the audit events. A backend
//!   runs it inside one transaction, isolated so that what it read still holds when it
//!   commits (SQLite: one writer; PostgreSQL: serializable, retried on a serialization
//!   failure — so an operation may run more than once and must only touch the store).
//! - [`Backend`]: running those transactions, and the reads that only fetch (lists, pages,
//!   lookups), as a trait object behind [`super::Store`].

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use heex_proto::api::{AuditEvent, Facts, ReportInfo};
use heex_proto::{DeviceId, KeyId, MemberId, WorkspaceId};
use time::OffsetDateTime;

use super::{
    AuditEntry, AuditFilter, ConsoleSession, DeviceCounts, DeviceQuery, DeviceRecord,
    InvitationCancel, InvitationRecord, IssuedCert, KeyRecord, MemberRecord, NewDevice,
    NewInvitation, NewKey, NewMember, NewWorkspace, PageOf, PageRequest, Revocation, Role,
    StoreError,
};
use crate::store::DeviceStatus;

/// A boxed future, as trait objects return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One domain operation, run by [`Backend::transact`] inside one transaction; it may run
/// again when the backend retries the transaction.
pub type TxOp = Box<dyn FnMut(&mut dyn Tx) -> Result<(), StoreError> + Send>;

/// An invitation as one transaction reads it, with its inviter as they are now.
#[derive(Debug, Clone)]
pub struct StoredInvitation {
    /// Its public id.
    pub id: String,
    /// Its workspace.
    pub workspace_id: WorkspaceId,
    /// Who is invited.
    pub email: String,
    /// The role they get.
    pub role: Role,
    /// When it was made.
    pub created_at: OffsetDateTime,
    /// When it lapses.
    pub expires_at: OffsetDateTime,
    /// When it was accepted.
    pub accepted_at: Option<OffsetDateTime>,
    /// When it was cancelled, and why.
    pub cancelled: Option<(OffsetDateTime, InvitationCancel)>,
    /// The inviter's email.
    pub inviter_email: String,
    /// The inviter's role now.
    pub inviter_role: Role,
    /// When the inviter was removed.
    pub inviter_removed_at: Option<OffsetDateTime>,
}

impl StoredInvitation {
    /// The pending invitation as listed.
    pub fn record(&self) -> InvitationRecord {
        InvitationRecord {
            id: self.id.clone(),
            email: self.email.clone(),
            role: self.role,
            invited_by: self.inviter_email.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
        }
    }
}

/// Which pending invitations to find.
#[derive(Debug, Clone)]
pub enum InvitationsOf<'a> {
    /// Made by this member.
    InvitedBy(&'a MemberId),
    /// Inviting this email (in any case) to this workspace.
    Invitee(&'a WorkspaceId, &'a str),
}

/// What the store's rules need to know of a device inside a transaction.
#[derive(Debug, Clone)]
pub struct DeviceState {
    /// Its workspace.
    pub workspace_id: WorkspaceId,
    /// The member who enrolled it.
    pub enrolled_by_member: MemberId,
    /// When it was revoked.
    pub revoked_at: Option<OffsetDateTime>,
    /// Its current certificate's serial.
    pub cert_serial: String,
    /// The serial of the certificate its last renewal superseded.
    pub previous_serial: Option<String>,
    /// SHA-256 (hex) of its current certificate's public key (`None`: issued before it was
    /// recorded).
    pub cert_key: Option<String>,
}

/// Who a store belongs to: the CA and the server secret of the data directory that
/// initialized it. Every replica's data directory must hold the same ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// `sha256:<hex>` of the CA certificate.
    pub ca_fingerprint: String,
    /// A check value of the server secret (a keyed hash, not the secret).
    pub secret_check: String,
    /// When it was recorded.
    pub created_at: OffsetDateTime,
}

/// A device's connection mark and liveness, as a session check reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionMark {
    /// The device.
    pub device: DeviceId,
    /// The session that marked it connected, if any.
    pub connection: Option<String>,
    /// True when it is revoked.
    pub revoked: bool,
}

/// Something other processes sharing the store changed, for the sessions this one holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// This device was connected by the named session.
    Device(DeviceId, String),
    /// This device was revoked or deleted, by a transaction the writer committed at about
    /// this time (its clock; `None` from a writer that does not say).
    Ended(DeviceId, Option<OffsetDateTime>),
    /// Changes may have been missed (the feed was down): check every session again.
    Resync,
}

/// A one-time console sign-in token as stored.
#[derive(Debug, Clone)]
pub struct SigninToken {
    /// The key it signs in with.
    pub key_id: KeyId,
    /// When it lapses.
    pub expires_at: OffsetDateTime,
    /// When it was spent.
    pub used_at: Option<OffsetDateTime>,
}

/// The primitive reads and writes of one transaction. Implementations store and fetch; the
/// rules are in [`super::ops`].
pub trait Tx {
    /// Creates a workspace.
    fn insert_workspace(&mut self, ws: &NewWorkspace) -> Result<(), StoreError>;
    /// Adds a member.
    fn insert_member(&mut self, m: &NewMember) -> Result<(), StoreError>;
    /// The member with this id in this workspace (`active_keys` left 0).
    fn member(
        &mut self,
        ws: &WorkspaceId,
        id: &MemberId,
    ) -> Result<Option<MemberRecord>, StoreError>;
    /// The current (not removed) owners of a workspace.
    fn current_owners(&mut self, ws: &WorkspaceId) -> Result<Vec<MemberId>, StoreError>;
    /// The current member of `ws` with this email, in any case.
    fn current_member_with_email(
        &mut self,
        ws: &WorkspaceId,
        email: &str,
    ) -> Result<Option<MemberId>, StoreError>;
    /// The workspace with this name.
    fn workspace_named(&mut self, name: &str) -> Result<Option<WorkspaceId>, StoreError>;
    /// Marks a member removed at `at`.
    fn set_member_removed(&mut self, id: &MemberId, at: OffsetDateTime) -> Result<(), StoreError>;

    /// The key with this id, with its owner and workspace.
    fn key(&mut self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError>;
    /// The keys of a member.
    fn member_keys(&mut self, member: &MemberId) -> Result<Vec<KeyRecord>, StoreError>;
    /// Records a new key.
    fn insert_key(&mut self, k: &NewKey) -> Result<(), StoreError>;
    /// Sets a key's revocation (time, by whom, why, and its replacement after a rotation).
    fn set_key_revoked(
        &mut self,
        id: &KeyId,
        at: OffsetDateTime,
        by: &MemberId,
        reason: Revocation,
        replaced_by: Option<&KeyId>,
    ) -> Result<(), StoreError>;
    /// Counts one use of a key.
    fn add_key_use(&mut self, id: &KeyId) -> Result<(), StoreError>;
    /// Locks a key's row until the transaction ends and reads the key: every change of the
    /// key's usability (revocation, a use, its member's removal, which revokes the member's
    /// keys) writes that row, so a transaction run by [`Backend::transact_locking`] reads the
    /// key as it stays until it commits. Where transactions run one at a time, a plain
    /// read.
    fn lock_key(&mut self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError>;

    /// Records an invitation.
    fn insert_invitation(&mut self, inv: &NewInvitation) -> Result<(), StoreError>;
    /// The invitation with this token hash.
    fn invitation_by_token(&mut self, hash: &str) -> Result<Option<StoredInvitation>, StoreError>;
    /// The invitation of `ws` with this id.
    fn invitation(
        &mut self,
        ws: &WorkspaceId,
        id: &str,
    ) -> Result<Option<StoredInvitation>, StoreError>;
    /// The ids of the pending (neither accepted nor cancelled) invitations matching `which`.
    fn pending_invitations(&mut self, which: InvitationsOf<'_>) -> Result<Vec<String>, StoreError>;
    /// Cancels an invitation.
    fn set_invitation_cancelled(
        &mut self,
        id: &str,
        at: OffsetDateTime,
        by: &MemberId,
        reason: InvitationCancel,
    ) -> Result<(), StoreError>;
    /// Marks an invitation accepted by `member`.
    fn set_invitation_accepted(
        &mut self,
        id: &str,
        member: &MemberId,
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Appends an audit event.
    fn insert_audit(&mut self, e: &AuditEntry) -> Result<(), StoreError>;

    /// Records an enrolled device (with its labels).
    fn insert_device(&mut self, d: &NewDevice) -> Result<(), StoreError>;
    /// What the rules need to know of a device.
    fn device_state(&mut self, id: &DeviceId) -> Result<Option<DeviceState>, StoreError>;
    /// Renames a device and/or replaces its labels.
    fn update_device(
        &mut self,
        id: &DeviceId,
        name: Option<&str>,
        labels: Option<&BTreeMap<String, String>>,
    ) -> Result<(), StoreError>;
    /// Marks a device revoked at `at` and no longer connected.
    fn set_device_revoked(&mut self, id: &DeviceId, at: OffsetDateTime) -> Result<(), StoreError>;
    /// Deletes a device and its reports.
    fn delete_device(&mut self, id: &DeviceId) -> Result<(), StoreError>;
    /// Replaces a device's certificate; with `supersede` the current one becomes the
    /// previous, superseded at `at` (without, the previous one stays).
    fn set_device_certificate(
        &mut self,
        id: &DeviceId,
        cert: &IssuedCert,
        at: OffsetDateTime,
        supersede: bool,
    ) -> Result<(), StoreError>;
    /// How many devices that are not revoked hold a certificate not signed by the CA with
    /// fingerprint `ca` (certificates issued before the store recorded their CA count as
    /// not signed by it).
    fn devices_not_on_ca(&mut self, ca: &str) -> Result<u64, StoreError>;
    /// Records that a device was heard from at `at` (the last-seen time never goes back),
    /// with fresh facts and agent version when given, connected by `connection`. With
    /// `claim` the mark becomes `connection`'s whoever held it; without, nothing is written
    /// when another connection holds the mark. True when written.
    fn set_device_seen(
        &mut self,
        id: &DeviceId,
        facts: Option<&Facts>,
        agent_version: Option<&str>,
        at: OffsetDateTime,
        connection: &str,
        claim: bool,
    ) -> Result<bool, StoreError>;
    /// Clears a device's connection mark if it is `connection`'s.
    fn clear_device_connection(
        &mut self,
        id: &DeviceId,
        connection: &str,
    ) -> Result<(), StoreError>;
    /// Clears the connection marks of every session of the process `instance` (marks are
    /// `<instance>-<n>`); how many there were.
    fn clear_instance_connections(&mut self, instance: &str) -> Result<u64, StoreError>;
    /// Clears the connection marks of processes that hold no replica lease; how many.
    fn clear_orphan_connections(&mut self) -> Result<u64, StoreError>;
    /// The connection marks of these devices (unknown ones left out).
    fn connection_marks(&mut self, ids: &[DeviceId]) -> Result<Vec<ConnectionMark>, StoreError>;
    /// Tells the other processes sharing the store, when this transaction commits, that the
    /// device's record changed: connected by session `connection` ([`Change::Device`]), or
    /// revoked or deleted (`None`, [`Change::Ended`]). A no-op for a store one process owns.
    fn notify_device_changed(
        &mut self,
        id: &DeviceId,
        connection: Option<&str>,
    ) -> Result<(), StoreError>;

    /// The store's owner, once recorded.
    fn deployment(&mut self) -> Result<Option<Deployment>, StoreError>;
    /// Records the store's owner.
    fn insert_deployment(&mut self, d: &Deployment) -> Result<(), StoreError>;
    /// Replaces the recorded owner's CA fingerprint (after a CA rotation).
    fn set_deployment_ca(&mut self, ca_fingerprint: &str) -> Result<(), StoreError>;
    /// Records that the CA with this fingerprint was retired at `at` (once).
    fn insert_retired_ca(
        &mut self,
        fingerprint: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// True when the CA with this fingerprint was retired: nothing it signs may be recorded.
    fn ca_retired(&mut self, fingerprint: &str) -> Result<bool, StoreError>;

    /// Extends the lease of replica `instance` to `until`; false when it holds none.
    fn renew_replica(&mut self, instance: &str, until: OffsetDateTime) -> Result<bool, StoreError>;
    /// Records replica `instance` (named `name`, e.g. `host:port`) with a lease to `until`.
    fn insert_replica(
        &mut self,
        instance: &str,
        name: &str,
        at: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// The replicas whose lease ended before `now`, or that are named `name`.
    fn ended_replicas(
        &mut self,
        now: OffsetDateTime,
        name: Option<&str>,
    ) -> Result<Vec<String>, StoreError>;
    /// Drops a replica's lease.
    fn delete_replica(&mut self, instance: &str) -> Result<(), StoreError>;

    /// Stores a report unless its (device, seq) is stored; true when it was stored.
    fn insert_report(
        &mut self,
        device: &DeviceId,
        seq: u64,
        at: OffsetDateTime,
        payload: &str,
    ) -> Result<bool, StoreError>;
    /// The stored payload of a report.
    fn report_payload(&mut self, device: &DeviceId, seq: u64)
        -> Result<Option<String>, StoreError>;
    /// The highest stored report sequence number of a device (0 when none).
    fn highest_report_seq(&mut self, device: &DeviceId) -> Result<u64, StoreError>;

    /// Drops the console sessions and sign-in tokens expired at `now`.
    fn delete_expired_console(&mut self, now: OffsetDateTime) -> Result<(), StoreError>;
    /// Records a console session.
    fn insert_console_session(&mut self, s: &ConsoleSession) -> Result<(), StoreError>;
    /// Notes a console session's request at `at`.
    fn touch_console_session(&mut self, hash: &str, at: OffsetDateTime) -> Result<(), StoreError>;
    /// Deletes a console session; true when there was one.
    fn delete_console_session(&mut self, hash: &str) -> Result<bool, StoreError>;
    /// Records a sign-in token.
    fn insert_signin_token(
        &mut self,
        hash: &str,
        key: &KeyId,
        at: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// The sign-in token with this hash.
    fn signin_token(&mut self, hash: &str) -> Result<Option<SigninToken>, StoreError>;
    /// Marks a sign-in token spent at `at`.
    fn set_signin_token_used(&mut self, hash: &str, at: OffsetDateTime) -> Result<(), StoreError>;
}

/// A database behind the store: transactions of domain operations, and the reads that only
/// fetch. Every method may be called concurrently.
pub trait Backend: Send + Sync {
    /// Runs `op` in one transaction and commits it (durably) when it returns `Ok`; nothing
    /// it wrote stays when it returns an error.
    fn transact(&self, op: TxOp) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Like [`Backend::transact`], for an operation that locks ([`Tx::lock_key`]) the rows
    /// its decision rests on before reading them: isolation may then be weaker (PostgreSQL:
    /// READ COMMITTED), so that operations contending for one row wait for each other
    /// instead of failing to serialize (a fleet enrolling with one key).
    fn transact_locking(&self, op: TxOp) -> BoxFuture<'_, Result<(), StoreError>> {
        self.transact(op)
    }

    /// The key with this id.
    fn find_key(&self, id: KeyId) -> BoxFuture<'_, Result<Option<KeyRecord>, StoreError>>;
    /// The keys of a workspace, or of one of its members, oldest first.
    fn list_keys(
        &self,
        ws: WorkspaceId,
        owner: Option<MemberId>,
        page: PageRequest,
    ) -> BoxFuture<'_, Result<PageOf<KeyRecord>, StoreError>>;
    /// The keys of these members.
    fn keys_of_members(
        &self,
        members: Vec<MemberId>,
    ) -> BoxFuture<'_, Result<Vec<KeyRecord>, StoreError>>;
    /// The members of a workspace, removed ones included, oldest first (`active_keys` 0).
    fn list_members(
        &self,
        ws: WorkspaceId,
        page: PageRequest,
    ) -> BoxFuture<'_, Result<PageOf<MemberRecord>, StoreError>>;
    /// The member with this id (`active_keys` 0).
    fn find_member(
        &self,
        ws: WorkspaceId,
        id: MemberId,
    ) -> BoxFuture<'_, Result<Option<MemberRecord>, StoreError>>;
    /// The pending invitations of a workspace at `now`, oldest first.
    fn list_invitations(
        &self,
        ws: WorkspaceId,
        now: OffsetDateTime,
        page: PageRequest,
    ) -> BoxFuture<'_, Result<PageOf<InvitationRecord>, StoreError>>;
    /// A workspace's audit events matching `filter`, newest first.
    fn audit_events(
        &self,
        ws: WorkspaceId,
        filter: AuditFilter,
    ) -> BoxFuture<'_, Result<PageOf<AuditEvent>, StoreError>>;
    /// One page of the devices matching `query`.
    fn query_devices(
        &self,
        ws: WorkspaceId,
        query: DeviceQuery,
    ) -> BoxFuture<'_, Result<PageOf<DeviceRecord>, StoreError>>;
    /// Device counts of a workspace.
    fn device_counts(
        &self,
        ws: WorkspaceId,
        expiring_before: OffsetDateTime,
    ) -> BoxFuture<'_, Result<DeviceCounts, StoreError>>;
    /// The device with this id in this workspace.
    fn find_device(
        &self,
        ws: WorkspaceId,
        id: DeviceId,
    ) -> BoxFuture<'_, Result<Option<DeviceRecord>, StoreError>>;
    /// What the gateway needs to know about a device.
    fn device_status(
        &self,
        id: DeviceId,
    ) -> BoxFuture<'_, Result<Option<DeviceStatus>, StoreError>>;
    /// The highest stored report sequence number of a device (0 when none).
    fn highest_report_seq(&self, device: DeviceId) -> BoxFuture<'_, Result<u64, StoreError>>;
    /// Up to `limit` reports of a device after `after`, in order.
    fn list_reports(
        &self,
        device: DeviceId,
        after: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<ReportInfo>, StoreError>>;
    /// The console session whose id hashes to `hash`.
    fn find_console_session(
        &self,
        hash: String,
    ) -> BoxFuture<'_, Result<Option<ConsoleSession>, StoreError>>;

    /// Answers when the database does: a trivial read, for readiness checks.
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Notes that a key was used at `at`, cheaply (written later, with other writes).
    fn touch_key_used(&self, id: &KeyId, at: OffsetDateTime);
    /// A use time noted by [`Backend::touch_key_used`] and not yet written.
    fn pending_key_use(&self, id: &KeyId) -> Option<OffsetDateTime>;
    /// Writes what is pending and stops; later writes fail with [`StoreError::Closed`].
    fn close(&self) -> BoxFuture<'_, ()>;

    /// The changes other processes sharing the store make, for a process that holds device
    /// sessions; `None` for a store one process owns (it sees its own changes).
    fn watch(&self) -> Option<tokio::sync::mpsc::Receiver<Change>> {
        None
    }
}
