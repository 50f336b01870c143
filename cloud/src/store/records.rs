//! The records the store keeps: what is written and what is read back.

use std::collections::BTreeMap;

use heex_proto::api::{DeviceInfo, Facts, KeyInfo, Scope};
use heex_proto::{DeviceId, KeyId, MemberId, SpiffeId, WorkspaceId};
use time::OffsetDateTime;

/// A member's role in a workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Created the workspace; may do everything.
    Owner,
    /// May manage keys, members and devices.
    Admin,
    /// May hold keys and enroll devices.
    Member,
}

impl Role {
    /// The role's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    /// Parses a stored role name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "owner" => Some(Role::Owner),
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
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
    /// Enrollment limit.
    pub max_uses: Option<u64>,
    /// Enrollments performed.
    pub uses: u64,
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
        }
    }
}
