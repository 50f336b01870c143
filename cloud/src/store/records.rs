//! The records the store keeps: what is written and what is read back.

use std::collections::BTreeMap;

use heex_proto::api::{DeviceInfo, Facts, KeyInfo, KeyListEntry, KeyStatus, MemberInfo, Scope};
use heex_proto::{DeviceId, KeyId, MemberId, SpiffeId, WorkspaceId};
use time::OffsetDateTime;

pub use heex_proto::api::Role;

/// Why a key was revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// Revoked by a member (its owner or an admin).
    Revoked,
    /// Replaced by a rotation; revoked at the end of the overlap window.
    Rotated,
    /// Its owner was removed from the workspace.
    MemberRemoved,
}

impl Revocation {
    /// The reason as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Revocation::Revoked => "revoked",
            Revocation::Rotated => "rotated",
            Revocation::MemberRemoved => "member_removed",
        }
    }

    /// Parses a stored reason.
    pub fn parse(s: &str) -> Option<Revocation> {
        match s {
            "revoked" => Some(Revocation::Revoked),
            "rotated" => Some(Revocation::Rotated),
            "member_removed" => Some(Revocation::MemberRemoved),
            _ => None,
        }
    }
}

/// A workspace to create.
#[derive(Debug, Clone)]
pub struct NewWorkspace {
    /// Id.
    pub id: WorkspaceId,
    /// Unique name.
    pub name: String,
    /// Creation time.
    pub created_at: OffsetDateTime,
}

/// A member to add.
#[derive(Debug, Clone)]
pub struct NewMember {
    /// Id.
    pub id: MemberId,
    /// Workspace.
    pub workspace_id: WorkspaceId,
    /// Email (unique among the workspace's current members).
    pub email: String,
    /// Role.
    pub role: Role,
    /// Creation time.
    pub created_at: OffsetDateTime,
}

/// An API key's metadata to record. The secret is never stored.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// Public key id.
    pub id: KeyId,
    /// Workspace.
    pub workspace_id: WorkspaceId,
    /// Owner.
    pub member_id: MemberId,
    /// Name/use label.
    pub name: String,
    /// Scope.
    pub scope: Scope,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Expiry time.
    pub expires_at: OffsetDateTime,
    /// How many enrollments the key may perform, if limited.
    pub max_uses: Option<u64>,
}

/// An API key's metadata with its owner and workspace, as authentication needs it.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    /// Public key id.
    pub id: KeyId,
    /// Workspace.
    pub workspace_id: WorkspaceId,
    /// Workspace name.
    pub workspace_name: String,
    /// Owner.
    pub member_id: MemberId,
    /// Owner's email.
    pub member_email: String,
    /// Owner's role.
    pub member_role: Role,
    /// Name/use label.
    pub name: String,
    /// Scope.
    pub scope: Scope,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Expiry time.
    pub expires_at: OffsetDateTime,
    /// Last successful use.
    pub last_used_at: Option<OffsetDateTime>,
    /// Revocation time.
    pub revoked_at: Option<OffsetDateTime>,
    /// Email of the member who revoked it.
    pub revoked_by: Option<String>,
    /// Why it was revoked.
    pub revoked_reason: Option<Revocation>,
    /// The key that replaced it, when it was rotated.
    pub replaced_by: Option<KeyId>,
    /// Enrollment limit.
    pub max_uses: Option<u64>,
    /// Enrollments performed.
    pub uses: u64,
    /// When the owner was removed from the workspace (then the key is unusable, whatever
    /// its own revocation says).
    pub member_removed_at: Option<OffsetDateTime>,
}

/// Whether an API key can be used, by [`KeyRecord::usability`]; the first reason found, in
/// this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUsability {
    /// It can be used (and, with a use limit, still enroll).
    Usable,
    /// Revoked at this time.
    Revoked(OffsetDateTime),
    /// Its member was removed at this time.
    OwnerRemoved(OffsetDateTime),
    /// Expired at this time.
    Expired(OffsetDateTime),
    /// Every one of its (this many) enrollments was made; it can still do what needs no
    /// enrollment.
    UsesSpent(u64),
}

impl KeyRecord {
    /// The metadata as the API shows it.
    pub fn info(&self) -> KeyInfo {
        KeyInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            scope: self.scope,
            owner: self.member_email.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            last_used_at: self.last_used_at,
            revoked_at: self.revoked_at,
            revoked_by: self.revoked_by.clone(),
        }
    }

    /// Whether the key can be used at `now`: the one rule for it, which every check (the
    /// API's, the store's inside its transactions, the listings') applies.
    pub fn usability(&self, now: OffsetDateTime) -> KeyUsability {
        // A revocation scheduled for the end of a rotation overlap does not count before then.
        if let Some(at) = self.revoked_at.filter(|at| *at <= now) {
            return KeyUsability::Revoked(at);
        }
        // A key that outlived its member's removal (created while the removal ran) cannot
        // be used either.
        if let Some(at) = self.member_removed_at {
            return KeyUsability::OwnerRemoved(at);
        }
        if self.expires_at <= now {
            return KeyUsability::Expired(self.expires_at);
        }
        match self.max_uses {
            Some(max) if self.uses >= max => KeyUsability::UsesSpent(max),
            _ => KeyUsability::Usable,
        }
    }

    /// True when the key is revoked at `now`. A rotated key's revocation may be scheduled
    /// for the end of its overlap window; until then it is not revoked.
    pub fn is_revoked(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_some_and(|at| at <= now)
    }

    /// The key's status at `now`, as listed.
    pub fn status(&self, now: OffsetDateTime) -> KeyStatus {
        match self.usability(now) {
            KeyUsability::Revoked(_) | KeyUsability::OwnerRemoved(_) => KeyStatus::Revoked,
            KeyUsability::Expired(_) => KeyStatus::Expired,
            KeyUsability::UsesSpent(_) => KeyStatus::Exhausted,
            KeyUsability::Usable => KeyStatus::Active,
        }
    }

    /// The key as `GET /v1/keys` lists it at `now`.
    pub fn list_entry(&self, now: OffsetDateTime) -> KeyListEntry {
        KeyListEntry {
            info: self.info(),
            status: self.status(now),
            uses: self.uses,
            max_uses: self.max_uses,
            replaced_by: self.replaced_by.clone(),
        }
    }
}

/// A rotation: the replacement key, and when the old one stops working.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// The key being replaced.
    pub old: KeyId,
    /// Its replacement (same owner, name and scope).
    pub new: NewKey,
    /// When the old key becomes revoked: now, or the end of the overlap window.
    pub old_revoked_at: OffsetDateTime,
    /// Who rotated it.
    pub by: MemberId,
    /// Now.
    pub at: OffsetDateTime,
    /// Audit events written with the rotation.
    pub audit: Vec<AuditEntry>,
}

/// A member as stored, with the number of their keys usable now.
#[derive(Debug, Clone)]
pub struct MemberRecord {
    /// Id.
    pub id: MemberId,
    /// Workspace.
    pub workspace_id: WorkspaceId,
    /// Email.
    pub email: String,
    /// Role.
    pub role: Role,
    /// When they joined.
    pub created_at: OffsetDateTime,
    /// When they were removed.
    pub removed_at: Option<OffsetDateTime>,
    /// Their keys that are neither revoked, expired nor used up.
    pub active_keys: u64,
}

impl MemberRecord {
    /// The member as the API lists it.
    pub fn info(&self) -> MemberInfo {
        MemberInfo {
            id: self.id.to_string(),
            email: self.email.clone(),
            role: self.role,
            created_at: self.created_at,
            removed_at: self.removed_at,
            active_keys: self.active_keys,
        }
    }
}

/// An invitation to record. The token itself is never stored.
#[derive(Debug, Clone)]
pub struct NewInvitation {
    /// Hex SHA-256 of the token.
    pub token_hash: String,
    /// Workspace the invitee joins.
    pub workspace_id: WorkspaceId,
    /// Invitee's email.
    pub email: String,
    /// Role they will have.
    pub role: Role,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// When the token stops working.
    pub expires_at: OffsetDateTime,
    /// Who invited them.
    pub invited_by: MemberId,
    /// Public id (`inv_…`).
    pub id: String,
}

/// Accepting an invitation: who the new member and their first key will be.
#[derive(Debug, Clone)]
pub struct Acceptance {
    /// Hex SHA-256 of the presented token.
    pub token_hash: String,
    /// Id of the new member.
    pub member_id: MemberId,
    /// Id of their first key (admin scope).
    pub key_id: KeyId,
    /// Name of that key.
    pub key_name: String,
    /// Lifetime of that key.
    pub key_lifetime: time::Duration,
    /// Now.
    pub at: OffsetDateTime,
}

/// What accepting an invitation did.
#[derive(Debug, Clone)]
pub enum AcceptOutcome {
    /// The member exists now, with their first key.
    Joined {
        /// The new member.
        member: Box<MemberRecord>,
        /// Their first key.
        key: Box<KeyRecord>,
    },
    /// No invitation has this token.
    Unknown,
    /// The invitation was accepted already, at this time.
    AlreadyAccepted(OffsetDateTime),
    /// The invitation expired at this time.
    Expired(OffsetDateTime),
    /// The invitee's email already belongs to a current member of the workspace.
    AlreadyMember(String),
    /// The invitation was cancelled at this time, for this reason.
    Cancelled(OffsetDateTime, InvitationCancel),
    /// Whoever issued the invitation can no longer invite with its role (removed, or no
    /// longer an owner or admin): it is void.
    InviterGone(String),
}

/// Why an invitation was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvitationCancel {
    /// A member cancelled it.
    Cancelled,
    /// The member who issued it was removed.
    InviterRemoved,
    /// The member it was addressed to was removed.
    InviteeRemoved,
}

impl InvitationCancel {
    /// The reason as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            InvitationCancel::Cancelled => "cancelled",
            InvitationCancel::InviterRemoved => "inviter_removed",
            InvitationCancel::InviteeRemoved => "invitee_removed",
        }
    }

    /// Parses a stored reason.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "cancelled" => Some(InvitationCancel::Cancelled),
            "inviter_removed" => Some(InvitationCancel::InviterRemoved),
            "invitee_removed" => Some(InvitationCancel::InviteeRemoved),
            _ => None,
        }
    }
}

/// A pending invitation as listed.
#[derive(Debug, Clone)]
pub struct InvitationRecord {
    /// Public id.
    pub id: String,
    /// Invitee's email.
    pub email: String,
    /// Role they will have.
    pub role: Role,
    /// Email of the member who invited them.
    pub invited_by: String,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Expiry.
    pub expires_at: OffsetDateTime,
}

impl InvitationRecord {
    /// The invitation as the API lists it.
    pub fn info(&self) -> heex_proto::api::InvitationInfo {
        heex_proto::api::InvitationInfo {
            id: self.id.clone(),
            email: self.email.clone(),
            role: self.role,
            invited_by: self.invited_by.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
        }
    }
}

/// What cancelling an invitation did.
#[derive(Debug, Clone)]
pub enum CancelOutcome {
    /// Cancelled now.
    Cancelled(InvitationRecord),
    /// No such invitation in the workspace.
    NotFound,
    /// It was accepted already, at this time: nothing to cancel.
    AlreadyAccepted(OffsetDateTime),
    /// It was cancelled already, at this time.
    AlreadyCancelled(OffsetDateTime),
}

/// What removing a member did.
#[derive(Debug, Clone)]
pub enum RemoveOutcome {
    /// The member is removed and these keys were revoked, these invitations cancelled, in
    /// the same transaction.
    Removed {
        /// The member as it is now.
        member: MemberRecord,
        /// Keys revoked by the removal.
        revoked_keys: Vec<KeyId>,
        /// Pending invitations cancelled: those the member issued or was sent.
        cancelled_invitations: Vec<String>,
        /// When the member had been removed already (this removal only revoked and
        /// cancelled what was still active).
        already_removed_at: Option<OffsetDateTime>,
    },
    /// No such member in the workspace.
    NotFound,
    /// The member was removed already, at this time, and nothing of theirs was still active.
    AlreadyRemoved(OffsetDateTime),
    /// The member is the workspace's last owner.
    LastOwner,
}

/// What an audit event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    /// An API key was created.
    KeyCreate,
    /// An API key was revoked.
    KeyRevoke,
    /// An API key was rotated.
    KeyRotate,
    /// An API key was copied (re-derived for its owner).
    KeyCopy,
    /// Someone was invited.
    MemberInvite,
    /// An invitation was accepted.
    MemberJoin,
    /// A member was removed.
    MemberRemove,
    /// A device was enrolled.
    DeviceEnroll,
    /// A device was revoked.
    DeviceRevoke,
    /// A device was renamed or relabelled.
    DeviceUpdate,
    /// A revoked device was deleted.
    DeviceDelete,
    /// An invitation was cancelled.
    InvitationCancel,
    /// A member signed in to the web console.
    ConsoleSignIn,
    /// A member signed out of the web console.
    ConsoleSignOut,
}

impl AuditAction {
    /// Every action.
    pub const ALL: [AuditAction; 14] = [
        AuditAction::KeyCreate,
        AuditAction::KeyRevoke,
        AuditAction::KeyRotate,
        AuditAction::KeyCopy,
        AuditAction::MemberInvite,
        AuditAction::MemberJoin,
        AuditAction::MemberRemove,
        AuditAction::DeviceEnroll,
        AuditAction::DeviceRevoke,
        AuditAction::DeviceUpdate,
        AuditAction::DeviceDelete,
        AuditAction::InvitationCancel,
        AuditAction::ConsoleSignIn,
        AuditAction::ConsoleSignOut,
    ];

    /// The action's name, e.g. "key.create".
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::KeyCreate => "key.create",
            AuditAction::KeyRevoke => "key.revoke",
            AuditAction::KeyRotate => "key.rotate",
            AuditAction::KeyCopy => "key.copy",
            AuditAction::MemberInvite => "member.invite",
            AuditAction::MemberJoin => "member.join",
            AuditAction::MemberRemove => "member.remove",
            AuditAction::DeviceEnroll => "device.enroll",
            AuditAction::DeviceRevoke => "device.revoke",
            AuditAction::DeviceUpdate => "device.update",
            AuditAction::DeviceDelete => "device.delete",
            AuditAction::InvitationCancel => "invitation.cancel",
            AuditAction::ConsoleSignIn => "console.signin",
            AuditAction::ConsoleSignOut => "console.signout",
        }
    }
}

/// An audit event to record, in the same transaction as the change it describes.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    /// Workspace.
    pub workspace_id: WorkspaceId,
    /// When.
    pub at: OffsetDateTime,
    /// Who: a member's email, or "system".
    pub actor: String,
    /// What.
    pub action: AuditAction,
    /// The object acted on: key id, member email or device id.
    pub target: String,
    /// Extra details (never a secret).
    pub details: serde_json::Value,
    /// The API key the change is made with, when a key's holder makes it: the store checks
    /// it again (and the policy of the change) inside the change's transaction.
    pub caller: Option<CallerCheck>,
}

/// The API key a change is made with and what the change needs of it.
#[derive(Debug, Clone)]
pub struct CallerCheck {
    /// The key.
    pub key: KeyId,
    /// What the change needs of it, besides being usable.
    pub need: crate::store::access::Need,
    /// The change, for refusals ("creating keys").
    pub action: &'static str,
}

/// Which audit events to read, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Exact actor.
    pub actor: Option<String>,
    /// Exact action, or a prefix when it ends with '.' ("key.").
    pub action: Option<String>,
    /// Exact target.
    pub target: Option<String>,
    /// Only events at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Which page (newest first; a position is an event id).
    pub page: super::PageRequest,
}

/// A device to record at enrollment.
#[derive(Debug, Clone)]
pub struct NewDevice {
    /// Id (the certificate's CN).
    pub id: DeviceId,
    /// Workspace the device belongs to.
    pub workspace_id: WorkspaceId,
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Facts reported at enrollment.
    pub facts: Option<Facts>,
    /// SPIFFE ID (the certificate's URI SAN).
    pub spiffe_id: SpiffeId,
    /// Enrollment time.
    pub enrolled_at: OffsetDateTime,
    /// The key that enrolled it (audit only).
    pub enrolled_by_key: KeyId,
    /// That key's owner (audit only).
    pub enrolled_by_member: MemberId,
    /// Serial number of the issued certificate, hex.
    pub cert_serial: String,
    /// Expiry of the issued certificate.
    pub cert_expires_at: OffsetDateTime,
    /// Fingerprint (`sha256:…`) of the CA that signed it.
    pub cert_ca: String,
    /// SHA-256 (hex) of its public key (SubjectPublicKeyInfo, DER).
    pub cert_key: String,
}

/// A device certificate issued by a renewal, as the store records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    /// Serial number, lowercase hex.
    pub serial_hex: String,
    /// notAfter.
    pub not_after: OffsetDateTime,
    /// Fingerprint (`sha256:…`) of the CA that signed it.
    pub ca: String,
    /// SHA-256 (hex) of its public key (SubjectPublicKeyInfo, DER).
    pub key: String,
}

/// A device as stored.
#[derive(Debug, Clone)]
pub struct DeviceRecord {
    /// Id.
    pub id: DeviceId,
    /// Workspace.
    pub workspace_id: WorkspaceId,
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Latest facts.
    pub facts: Option<Facts>,
    /// SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// Enrollment time.
    pub enrolled_at: OffsetDateTime,
    /// The key that enrolled it.
    pub enrolled_by_key: KeyId,
    /// Email of that key's owner.
    pub enrolled_by_member: String,
    /// Current certificate's serial, hex.
    pub cert_serial: String,
    /// Current certificate's expiry.
    pub cert_expires_at: OffsetDateTime,
    /// Revocation time.
    pub revoked_at: Option<OffsetDateTime>,
    /// Last time a gateway heard from it.
    pub last_seen_at: Option<OffsetDateTime>,
    /// Whether a gateway marked a live session of it (set at Hello, cleared when the session
    /// ends or the device is revoked).
    pub connected: bool,
    /// The version its agent gave in its latest Hello.
    pub agent_version: Option<String>,
}

impl DeviceRecord {
    /// The device as the API lists it.
    pub fn info(&self, connected: bool) -> DeviceInfo {
        DeviceInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            labels: self.labels.clone(),
            spiffe_id: self.spiffe_id.clone(),
            enrolled_at: self.enrolled_at,
            enrolled_by_key: self.enrolled_by_key.clone(),
            enrolled_by_member: self.enrolled_by_member.clone(),
            connected,
            last_seen_at: self.last_seen_at,
            facts: self.facts.clone(),
            certificate_expires_at: self.cert_expires_at,
            revoked_at: self.revoked_at,
            certificate_serial: self.cert_serial.clone(),
            session_serial: None,
            agent_version: self.agent_version.clone(),
        }
    }
}
