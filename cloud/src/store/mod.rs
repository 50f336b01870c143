//! The store: workspaces, members, API key metadata and devices.
//!
//! [`Store`] is the backend-neutral, async interface the API and the gateway use. Its
//! changes are the domain operations of [`ops`], written once over the primitive reads and
//! writes of [`backend::Tx`] and run in one transaction by whichever [`backend::Backend`]
//! holds the data; the embedded SQLite backend ([`sqlite`]) is the default. No secret
//! material is stored: API key secrets are derived from the server secret, which lives in
//! the data directory.

pub mod access;
pub mod backend;
mod device_lifecycle;
pub mod device_list;
mod device_view;
pub mod migrations;
pub mod ops;
pub mod paging;
pub mod postgres;
mod records;
pub mod sqlite;

pub use device_lifecycle::DeleteDeviceOutcome;
pub use device_list::{DeviceCounts, DeviceQuery, DeviceSort, LabelSelector};
pub use device_view::{DeviceStatus, Seen, StoredReports};
pub use ops::SYSTEM_ACTOR;
pub use paging::{PageOf, PageRequest, SortValue};
pub use records::{
    AcceptOutcome, Acceptance, AuditAction, AuditEntry, AuditFilter, CallerCheck, CancelOutcome,
    DeviceRecord, InvitationCancel, InvitationRecord, IssuedCert, KeyRecord, KeyUsability,
    MemberRecord, NewDevice, NewInvitation, NewKey, NewMember, NewWorkspace, RemoveOutcome,
    Revocation, Role, Rotation,
};

use std::path::Path;
use std::sync::{Arc, Mutex};

use heex_proto::api::{AuditEvent, Facts};
use heex_proto::{DeviceId, KeyId, MemberId, WorkspaceId};
use time::OffsetDateTime;

use backend::{Backend, Tx};
pub use backend::{Change, ConnectionMark, Deployment};

/// A web console session, as stored: the SHA-256 of its id, the key it is bound to, and its
/// times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    /// Hex SHA-256 of the session id (the cookie's value).
    pub id_hash: String,
    /// The API key the member signed in with; checked again on every request.
    pub key_id: KeyId,
    /// When it started.
    pub created_at: OffsetDateTime,
    /// Its last request.
    pub last_seen_at: OffsetDateTime,
    /// When it ends, however active.
    pub expires_at: OffsetDateTime,
}

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database reported an error.
    #[error("{0}")]
    Database(String),
    /// A uniqueness or reference constraint refused the write.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The schema on disk cannot be used by this version.
    #[error("{0}")]
    Schema(String),
    /// A stored value does not parse.
    #[error("stored {what} is corrupt: {detail}")]
    Corrupt {
        /// Which value.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The enrolling key was revoked, expired or used up between its check and the write.
    #[error("API key {0} can no longer be used")]
    KeyUnusable(KeyId),
    /// The store was closed.
    #[error("the store is closed")]
    Closed,
    /// The database cannot be reached (a networked backend's server is down or out of
    /// reach): nothing was read or written.
    #[error("the database cannot be reached: {0}")]
    Unavailable(String),
    /// The filesystem holding the database is full: nothing was written.
    #[error("the disk holding the database is full: {0}")]
    DiskFull(String),
    /// The caller's key (see [`AuditEntry::caller`]) may not make this change, as decided
    /// inside its transaction; nothing was written.
    #[error("{0}")]
    Refused(crate::store::access::Refusal),
    /// The device is revoked or no longer exists: nothing was written for it.
    #[error("device {0} is revoked or deleted")]
    DeviceNotLive(DeviceId),
    /// The transaction met a concurrent one and must run again (the backend retries it).
    #[error("the change met a concurrent one; try again")]
    Retry,
    /// The transaction kept meeting concurrent ones, as many times as the backend tries:
    /// nothing was written, and trying again later may succeed.
    #[error("the change met concurrent ones {0} times in a row")]
    Contended(u32),
    /// A page position does not fit the list it was used on.
    #[error("the page position does not fit this list")]
    BadPosition,
    /// The certificate was signed by a CA that `heex-cloud ca retire` retired (this process
    /// has not reread its CA files yet): nothing was written.
    #[error("the certificate was signed by the retired CA {0}; this process rereads its CA files within --ca-reload-interval")]
    CaRetired(String),
}

/// The store. Cheap to share behind an `Arc`; every method may be called concurrently.
pub struct Store {
    backend: Box<dyn Backend>,
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and brings its schema up to
    /// date.
    pub fn open_sqlite(path: &Path) -> Result<Store, StoreError> {
        Ok(Store::with_backend(Box::new(sqlite::SqliteStore::open(
            path,
        )?)))
    }

    /// Connects to the PostgreSQL database at `url` and brings its schema up to date (once,
    /// whichever replicas start together).
    pub fn open_postgres(url: &str) -> Result<Store, StoreError> {
        Ok(Store::with_backend(Box::new(postgres::PgStore::open(url)?)))
    }

    /// The store over `backend`.
    pub fn with_backend(backend: Box<dyn Backend>) -> Store {
        Store { backend }
    }

    /// Runs `op` (a domain operation of [`ops`]) in one transaction of the backend, which
    /// may run it more than once (a retried transaction); its last run's result.
    async fn transact<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&mut dyn Tx) -> Result<T, StoreError> + Send + 'static,
    {
        self.run(false, op).await
    }

    /// Like [`Store::transact`], with [`Backend::transact_locking`]: for operations that lock
    /// the rows they decide on.
    async fn transact_locking<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&mut dyn Tx) -> Result<T, StoreError> + Send + 'static,
    {
        self.run(true, op).await
    }

    async fn run<T, F>(&self, locking: bool, mut op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&mut dyn Tx) -> Result<T, StoreError> + Send + 'static,
    {
        let out = Arc::new(Mutex::new(None));
        let slot = Arc::clone(&out);
        let op: backend::TxOp = Box::new(move |tx| {
            let value = op(tx)?;
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
            Ok(())
        });
        let started = std::time::Instant::now();
        let result = if locking {
            self.backend.transact_locking(op).await
        } else {
            self.backend.transact(op).await
        };
        crate::metrics::get().store_operation(operation::<F>(), started.elapsed().as_secs_f64());
        result?;
        let value = out.lock().unwrap_or_else(|e| e.into_inner()).take();
        value.ok_or_else(|| StoreError::Database("a committed transaction left no result".into()))
    }

    /// A key record with a use time noted and not yet written, so readers never see it go
    /// back.
    fn with_pending_use(&self, mut key: KeyRecord) -> KeyRecord {
        if let Some(at) = self.backend.pending_key_use(&key.id) {
            if key.last_used_at.is_none_or(|prev| prev < at) {
                key.last_used_at = Some(at);
            }
        }
        key
    }

    /// Members with the number of keys each can use at `now`, by the key rule.
    async fn with_key_counts(
        &self,
        mut members: Vec<MemberRecord>,
        now: OffsetDateTime,
    ) -> Result<Vec<MemberRecord>, StoreError> {
        if members.is_empty() {
            return Ok(members);
        }
        let ids = members.iter().map(|m| m.id.clone()).collect();
        let keys = self.backend.keys_of_members(ids).await?;
        for m in &mut members {
            m.active_keys = ops::usable_keys(keys.iter().filter(|k| k.member_id == m.id), now);
        }
        Ok(members)
    }

    /// Creates a workspace (no audit event: for tests and tools).
    pub async fn create_workspace(&self, ws: NewWorkspace) -> Result<(), StoreError> {
        self.transact(move |tx| tx.insert_workspace(&ws)).await
    }

    /// Adds a member to a workspace (no audit event: for tests and tools).
    pub async fn create_member(&self, member: NewMember) -> Result<(), StoreError> {
        self.transact(move |tx| tx.insert_member(&member)).await
    }

    /// Creates a workspace, its owner and the owner's first key in one transaction, with
    /// their audit events (actor "system").
    pub async fn create_workspace_with_owner(
        &self,
        ws: NewWorkspace,
        owner: NewMember,
        key: NewKey,
    ) -> Result<(), StoreError> {
        self.transact(move |tx| ops::create_workspace_with_owner(tx, &ws, &owner, &key))
            .await
    }

    /// The members of a workspace (removed ones included), oldest first, with the number
    /// of keys each can use at `now`.
    pub async fn list_members(
        &self,
        workspace: &WorkspaceId,
        now: OffsetDateTime,
        page: PageRequest,
    ) -> Result<PageOf<MemberRecord>, StoreError> {
        let page = self.backend.list_members(workspace.clone(), page).await?;
        let items = self.with_key_counts(page.items, now).await?;
        Ok(PageOf {
            items,
            next: page.next,
        })
    }

    /// The member with this id in this workspace.
    pub async fn find_member(
        &self,
        workspace: &WorkspaceId,
        id: &MemberId,
        now: OffsetDateTime,
    ) -> Result<Option<MemberRecord>, StoreError> {
        let Some(m) = self
            .backend
            .find_member(workspace.clone(), id.clone())
            .await?
        else {
            return Ok(None);
        };
        Ok(self.with_key_counts(vec![m], now).await?.pop())
    }

    /// Removes a member of `workspace` and revokes all of the member's keys (revoked by
    /// `by`) in the same transaction, with `audit` (to which the store adds the revoked
    /// keys). Refuses to remove the last owner.
    pub async fn remove_member(
        &self,
        workspace: &WorkspaceId,
        id: &MemberId,
        by: &MemberId,
        at: OffsetDateTime,
        audit: AuditEntry,
    ) -> Result<RemoveOutcome, StoreError> {
        let (ws, id, by) = (workspace.clone(), id.clone(), by.clone());
        self.transact(move |tx| ops::remove_member(tx, &ws, &id, &by, at, &audit))
            .await
    }

    /// Records an invitation with its audit event. Returns false (and records nothing) when
    /// the email belongs to a current member of the workspace.
    pub async fn create_invitation(
        &self,
        invitation: NewInvitation,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        self.transact(move |tx| ops::create_invitation(tx, &invitation, &audit))
            .await
    }

    /// Accepts an invitation: checks it is known, unused and unexpired, then creates the
    /// member and their first key (admin scope), marks the invitation used and records
    /// the audit events, all in one transaction.
    pub async fn accept_invitation(
        &self,
        acceptance: Acceptance,
    ) -> Result<AcceptOutcome, StoreError> {
        self.transact(move |tx| ops::accept_invitation(tx, &acceptance))
            .await
    }

    /// The pending invitations of a workspace (neither accepted, cancelled nor expired at
    /// `now`), oldest first.
    pub async fn list_invitations(
        &self,
        workspace: &WorkspaceId,
        now: OffsetDateTime,
        page: PageRequest,
    ) -> Result<PageOf<InvitationRecord>, StoreError> {
        self.backend
            .list_invitations(workspace.clone(), now, page)
            .await
    }

    /// Cancels a pending invitation of `workspace` by its id, with `audit`.
    pub async fn cancel_invitation(
        &self,
        workspace: &WorkspaceId,
        id: &str,
        by: &MemberId,
        audit: AuditEntry,
    ) -> Result<CancelOutcome, StoreError> {
        let (ws, id, by) = (workspace.clone(), id.to_owned(), by.clone());
        self.transact(move |tx| ops::cancel_invitation(tx, &ws, &id, &by, &audit))
            .await
    }

    /// Records a new API key's metadata with its audit event.
    pub async fn create_key(&self, key: NewKey, audit: AuditEntry) -> Result<(), StoreError> {
        self.transact(move |tx| ops::create_key(tx, &key, &audit))
            .await
    }

    /// The key with this id, with its owner and workspace.
    pub async fn find_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let found = self.backend.find_key(id.clone()).await?;
        Ok(found.map(|k| self.with_pending_use(k)))
    }

    /// The keys of a workspace, or of one member of it, oldest first, revoked and expired
    /// ones included.
    pub async fn list_keys(
        &self,
        workspace: &WorkspaceId,
        owner: Option<&MemberId>,
        page: PageRequest,
    ) -> Result<PageOf<KeyRecord>, StoreError> {
        let keys = self
            .backend
            .list_keys(workspace.clone(), owner.cloned(), page)
            .await?;
        Ok(keys.map(|k| self.with_pending_use(k)))
    }

    /// Revokes a key at `at` on behalf of member `by`, recording `audit` when it changed
    /// anything. Revoking a revoked key changes nothing; a key whose revocation was only
    /// scheduled (rotation overlap) is revoked at `at`. Returns the key as it is afterwards,
    /// or `None` when no such key exists.
    pub async fn revoke_key(
        &self,
        id: &KeyId,
        by: &MemberId,
        at: OffsetDateTime,
        audit: AuditEntry,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let (id, by) = (id.clone(), by.clone());
        let found = self
            .transact(move |tx| ops::revoke_key(tx, &id, &by, at, &audit))
            .await?;
        Ok(found.map(|k| self.with_pending_use(k)))
    }

    /// Creates the replacement key and schedules the old key's revocation, in one
    /// transaction. [`StoreError::KeyUnusable`] (and nothing written) when the old key is
    /// already revoked, rotated or expired. Returns the new key.
    pub async fn rotate_key(&self, rotation: Rotation) -> Result<KeyRecord, StoreError> {
        self.transact(move |tx| ops::rotate_key(tx, &rotation))
            .await
    }

    /// Records an audit event that goes with no other change (e.g. a key copied).
    pub async fn record_audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        self.transact(move |tx| ops::record_audit(tx, &entry)).await
    }

    /// A workspace's audit events matching `filter`, newest first.
    pub async fn audit_events(
        &self,
        workspace: &WorkspaceId,
        filter: AuditFilter,
    ) -> Result<PageOf<AuditEvent>, StoreError> {
        self.backend.audit_events(workspace.clone(), filter).await
    }

    /// Notes that a key was used at `at`. Cheap: the time is kept in memory and written with
    /// the next batch of writes (or within about a second).
    pub fn touch_key_used(&self, id: &KeyId, at: OffsetDateTime) {
        self.backend.touch_key_used(id, at);
    }

    /// Records an enrolled device, its audit event, and one use of the enrolling key, which
    /// must still be usable ([`StoreError::KeyUnusable`]), all in one transaction.
    pub async fn insert_device(
        &self,
        device: NewDevice,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        self.transact_locking(move |tx| ops::insert_device(tx, &device, &audit))
            .await
    }

    /// One page of the devices of a workspace matching `query`, in its order.
    pub async fn query_devices(
        &self,
        workspace: &WorkspaceId,
        query: DeviceQuery,
    ) -> Result<PageOf<DeviceRecord>, StoreError> {
        self.backend.query_devices(workspace.clone(), query).await
    }

    /// Device counts of a workspace: all, connected, revoked, and those not revoked whose
    /// certificate expires before `expiring_before`. Counted by the store, not by listing.
    pub async fn device_counts(
        &self,
        workspace: &WorkspaceId,
        expiring_before: OffsetDateTime,
    ) -> Result<DeviceCounts, StoreError> {
        self.backend
            .device_counts(workspace.clone(), expiring_before)
            .await
    }

    /// The device with this id in this workspace.
    pub async fn find_device(
        &self,
        workspace: &WorkspaceId,
        id: &DeviceId,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        self.backend
            .find_device(workspace.clone(), id.clone())
            .await
    }

    /// What the gateway needs to know about a device, or `None` when it does not exist.
    pub async fn device_status(&self, id: &DeviceId) -> Result<Option<DeviceStatus>, StoreError> {
        self.backend.device_status(id.clone()).await
    }

    /// Records that a device was heard from, with fresh facts and its agent's version when
    /// it sent them, by the session `connection` (a name unique to one session of one
    /// gateway process), which takes the device's connection mark at Hello (`claim`) and
    /// later only refreshes it; see [`ops::record_connected`].
    pub async fn record_connected(
        &self,
        id: &DeviceId,
        facts: Option<&Facts>,
        agent_version: Option<&str>,
        at: OffsetDateTime,
        connection: &str,
        claim: bool,
    ) -> Result<Seen, StoreError> {
        let (id, facts) = (id.clone(), facts.cloned());
        let (agent_version, connection) = (agent_version.map(str::to_owned), connection.to_owned());
        self.transact(move |tx| {
            ops::record_connected(
                tx,
                &id,
                facts.as_ref(),
                agent_version.as_deref(),
                at,
                &connection,
                claim,
            )
        })
        .await
    }

    /// Clears the device's connection mark if it is still `connection`'s (a newer session of
    /// the device may have replaced it).
    pub async fn record_disconnected(
        &self,
        id: &DeviceId,
        connection: &str,
    ) -> Result<(), StoreError> {
        let (id, connection) = (id.clone(), connection.to_owned());
        self.transact(move |tx| tx.clear_device_connection(&id, &connection))
            .await
    }

    /// Starts replica `instance`'s lease (see [`ops::start_replica`]); how many stale
    /// connection marks were cleared.
    pub async fn start_replica(
        &self,
        instance: &str,
        name: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let (instance, name) = (instance.to_owned(), name.to_owned());
        self.transact(move |tx| ops::start_replica(tx, &instance, &name, now, until))
            .await
    }

    /// Extends replica `instance`'s lease and ends lapsed ones (see [`ops::renew_replica`]);
    /// false when the lease had been ended.
    pub async fn renew_replica(
        &self,
        instance: &str,
        name: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let (instance, name) = (instance.to_owned(), name.to_owned());
        self.transact(move |tx| ops::renew_replica(tx, &instance, &name, now, until))
            .await
    }

    /// Ends replica `instance`'s lease and clears its marks; how many.
    pub async fn stop_replica(&self, instance: &str) -> Result<u64, StoreError> {
        let instance = instance.to_owned();
        self.transact(move |tx| ops::stop_replica(tx, &instance))
            .await
    }

    /// Marks these sessions (device, connection) connected again where nobody holds the
    /// device's mark.
    pub async fn mark_sessions_again(
        &self,
        held: Vec<(DeviceId, String)>,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.transact(move |tx| ops::mark_sessions_again(tx, &held, at))
            .await
    }

    /// The connection marks of these devices (unknown ones left out).
    pub async fn connection_marks(
        &self,
        ids: Vec<DeviceId>,
    ) -> Result<Vec<ConnectionMark>, StoreError> {
        self.transact(move |tx| tx.connection_marks(&ids)).await
    }

    /// The changes other processes sharing the store make; `None` when this process owns
    /// the store.
    pub fn watch(&self) -> Option<tokio::sync::mpsc::Receiver<Change>> {
        self.backend.watch()
    }

    /// The warning an owner gets when their last usable admin key is about to expire (see
    /// [`ops::admin_key_warning`]).
    pub async fn admin_key_warning(
        &self,
        member: &MemberId,
        role: Role,
        now: OffsetDateTime,
    ) -> Result<Option<String>, StoreError> {
        if role != Role::Owner {
            return Ok(None);
        }
        let keys = self.backend.keys_of_members(vec![member.clone()]).await?;
        Ok(ops::admin_key_warning(role, &keys, now))
    }

    /// The workspace with this name.
    pub async fn workspace_named(&self, name: &str) -> Result<Option<WorkspaceId>, StoreError> {
        let name = name.to_owned();
        self.transact(move |tx| tx.workspace_named(&name)).await
    }

    /// Makes a key for a current member, as the host's operator (see
    /// [`ops::operator_create_key`]).
    pub async fn operator_create_key(
        &self,
        workspace: &str,
        email: &str,
        key: ops::OperatorKey,
    ) -> Result<ops::OperatorKeyOutcome, StoreError> {
        let (workspace, email) = (workspace.to_owned(), email.to_owned());
        self.transact(move |tx| ops::operator_create_key(tx, &workspace, &email, &key))
            .await
    }

    /// Who the store belongs to, if recorded.
    pub async fn recorded_deployment(&self) -> Result<Option<Deployment>, StoreError> {
        self.transact(|tx| tx.deployment()).await
    }

    /// Records who the store belongs to when nobody is recorded yet; the recorded owner
    /// otherwise.
    pub async fn claim_deployment(
        &self,
        deployment: Deployment,
    ) -> Result<Option<Deployment>, StoreError> {
        self.transact(move |tx| ops::claim_deployment(tx, &deployment))
            .await
    }

    /// Creates the first workspace with its owner and records who the store belongs to, in
    /// one transaction; the recorded owner (nothing written) when there is one already.
    pub async fn init_deployment(
        &self,
        deployment: Deployment,
        ws: NewWorkspace,
        owner: NewMember,
        key: NewKey,
    ) -> Result<Option<Deployment>, StoreError> {
        self.transact(move |tx| ops::init_deployment(tx, &deployment, &ws, &owner, &key))
            .await
    }

    /// Stores a device's reports (sequence number, compact JSON) exactly once each; a number
    /// already stored with other content is a conflict, left as it is. Durable when this
    /// returns.
    /// [`StoreError::DeviceNotLive`] (nothing stored) when the device is revoked or gone.
    pub async fn store_reports(
        &self,
        device: &DeviceId,
        reports: impl Into<Arc<[(u64, String)]>>,
        at: OffsetDateTime,
    ) -> Result<StoredReports, StoreError> {
        let (device, reports) = (device.clone(), reports.into());
        let (stored, (new, again)) = self
            .transact(move |tx| ops::store_reports(tx, &device, &reports, at))
            .await?;
        crate::metrics::get().reports(new, again);
        Ok(stored)
    }

    /// The highest stored report sequence number of a device (0 when none).
    pub async fn highest_report_seq(&self, device: &DeviceId) -> Result<u64, StoreError> {
        self.backend.highest_report_seq(device.clone()).await
    }

    /// Up to `limit` of a device's reports with sequence numbers above `after`, in order.
    pub async fn list_reports(
        &self,
        device: &DeviceId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<heex_proto::api::ReportInfo>, StoreError> {
        self.backend
            .list_reports(device.clone(), after, limit)
            .await
    }

    /// Records a console session (and drops the expired ones), with its sign-in's audit
    /// event; the event's caller check (the session's key, usable and admin) is made again
    /// inside the transaction.
    pub async fn create_console_session(
        &self,
        session: ConsoleSession,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        self.transact(move |tx| ops::create_console_session(tx, &session, &audit))
            .await
    }

    /// The console session whose id hashes to `id_hash`.
    pub async fn find_console_session(
        &self,
        id_hash: &str,
    ) -> Result<Option<ConsoleSession>, StoreError> {
        self.backend.find_console_session(id_hash.to_owned()).await
    }

    /// Notes a console session's request at `at` (its idle timeout counts from there).
    pub async fn touch_console_session(
        &self,
        id_hash: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let hash = id_hash.to_owned();
        self.transact(move |tx| tx.touch_console_session(&hash, at))
            .await
    }

    /// Ends a console session, recording `audit` (a sign-out) with it when given.
    pub async fn delete_console_session(
        &self,
        id_hash: &str,
        audit: Option<AuditEntry>,
    ) -> Result<(), StoreError> {
        let hash = id_hash.to_owned();
        self.transact(move |tx| ops::delete_console_session(tx, &hash, audit.as_ref()))
            .await
    }

    /// Records a one-time console sign-in token (its SHA-256) for `key_id`.
    pub async fn create_signin_token(
        &self,
        token_hash: &str,
        key_id: &KeyId,
        at: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let (hash, key) = (token_hash.to_owned(), key_id.clone());
        self.transact(move |tx| tx.insert_signin_token(&hash, &key, at, expires_at))
            .await
    }

    /// Spends a sign-in token: the key it was issued for when it is unused and unexpired at
    /// `at`, and `None` otherwise. A token is spent once, whatever happens next.
    pub async fn redeem_signin_token(
        &self,
        token_hash: &str,
        at: OffsetDateTime,
    ) -> Result<Option<KeyId>, StoreError> {
        let hash = token_hash.to_owned();
        self.transact(move |tx| ops::redeem_signin_token(tx, &hash, at))
            .await
    }

    /// Answers when the database does (a trivial read); for readiness checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.backend.ping().await
    }

    /// Writes pending key-use times and stops the backend. Later writes fail with
    /// [`StoreError::Closed`].
    pub async fn close(&self) {
        self.backend.close().await;
    }
}

/// Unix seconds of a time.
pub(crate) fn to_unix(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

/// The time at Unix seconds `secs`.
pub(crate) fn from_unix(secs: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(secs).map_err(|e| StoreError::Corrupt {
        what: "timestamp",
        detail: e.to_string(),
    })
}

/// A report sequence number as the databases store it (a signed 64-bit integer).
pub(crate) fn seq_to_sql(seq: u64) -> Result<i64, StoreError> {
    i64::try_from(seq)
        .map_err(|_| StoreError::Database(format!("report sequence {seq} is out of range")))
}

/// A value as the JSON text the databases store (labels, facts, audit details).
pub(crate) fn encode<T: serde::Serialize>(what: &str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Database(format!("cannot encode {what}: {e}")))
}

/// `s` with LIKE's wildcards and the escape character escaped (escape `\`).
pub(crate) fn like_escaped(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for ch in s.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// The name of the [`Store`] method a transaction's closure `F` was written in (its type's
/// path names it): the `operation` label of the store's latency metric, one per method.
fn operation<F>() -> &'static str {
    let name = std::any::type_name::<F>();
    let name = name.split("::{{closure}}").next().unwrap_or(name);
    name.rsplit("::").next().unwrap_or(name)
}

#[cfg(test)]
mod operation_names {
    #[test]
    fn a_closure_is_named_by_its_method() {
        fn name_of<F: FnOnce()>(_: F) -> &'static str {
            super::operation::<F>()
        }
        fn insert_device() -> &'static str {
            name_of(|| {})
        }
        assert_eq!(insert_device(), "insert_device");
    }
}

#[cfg(test)]
mod tests;
