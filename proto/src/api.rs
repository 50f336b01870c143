//! Bodies of the cloud's HTTPS API (`/v1/...`), shared by the server, installer, agent and CLI.
//!
//! Timestamps travel as RFC 3339 strings in UTC.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{DeviceId, KeyId, SpiffeId, WorkspaceId};

/// Largest request body the API accepts, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Facts about a machine, reported at enrollment and by the agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct Facts {
    /// Host name.
    pub hostname: Option<String>,
    /// Operating system name, e.g. "Debian GNU/Linux".
    pub os: Option<String>,
    /// Operating system version, e.g. "12".
    pub os_version: Option<String>,
    /// Kernel version.
    pub kernel: Option<String>,
    /// CPU architecture, e.g. "x86_64".
    pub arch: Option<String>,
    /// Number of logical CPUs.
    pub cpus: Option<u32>,
    /// Total memory in bytes.
    pub memory_total_bytes: Option<u64>,
    /// Available memory in bytes.
    pub memory_available_bytes: Option<u64>,
    /// Total size of the disks in bytes.
    pub disk_total_bytes: Option<u64>,
    /// Available disk space in bytes.
    pub disk_available_bytes: Option<u64>,
    /// Seconds since boot.
    pub uptime_secs: Option<u64>,
}

/// `POST /v1/enroll` request (Bearer API key).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// PKCS#10 CSR in PEM, made with the device's freshly generated private key.
    pub csr_pem: String,
    /// Human-friendly device name (1–128 characters).
    pub name: String,
    /// Free-form labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Facts about the machine, if the installer gathered any.
    #[serde(default)]
    pub facts: Option<Facts>,
}

/// `POST /v1/enroll` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrollResponse {
    /// The new device's id.
    pub device_id: DeviceId,
    /// The device's SPIFFE ID (the certificate's URI SAN).
    pub spiffe_id: SpiffeId,
    /// The device certificate, PEM.
    pub certificate_pem: String,
    /// The cloud CA certificate, PEM: the only root the agent trusts.
    pub ca_pem: String,
    /// Where the agent connects: `host:port` of the mTLS gateway.
    pub gateway: String,
    /// Certificate expiry.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// Machine-readable error codes in [`ErrorBody`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// No key, a malformed key, or an unknown key. Deliberately says nothing more.
    Unauthorized,
    /// The key was revoked; the message says when and by whom.
    KeyRevoked,
    /// The key expired; the message says when.
    KeyExpired,
    /// The key's scope or role does not allow this.
    Forbidden,
    /// The request is malformed; the message says what.
    BadRequest,
    /// The CSR does not parse, its signature does not verify, or its key type is unsupported.
    BadCsr,
    /// No such object (in this workspace).
    NotFound,
    /// The request body is larger than the limit.
    PayloadTooLarge,
    /// A server-side failure.
    Internal,
    /// The server cannot take the request for now (e.g. its disk is full); the message says
    /// why. Retry later.
    Unavailable,
    /// The path exists but does not take this HTTP method.
    MethodNotAllowed,
    /// The request (its body included) took longer than the server allows.
    RequestTimeout,
    /// A code this client does not know yet.
    #[serde(other)]
    Other,
}

/// Body of every API error response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// Machine-readable code.
    pub error: ErrorCode,
    /// One line for a human: what went wrong and what to do.
    pub message: String,
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// May only enroll devices (and ask who it is).
    Enroll,
    /// May also manage keys, members and devices.
    Admin,
}

impl Scope {
    /// The scope's name as used in the API and CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Enroll => "enroll",
            Scope::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "enroll" => Ok(Scope::Enroll),
            "admin" => Ok(Scope::Admin),
            other => Err(format!(
                "unknown scope {other:?}: use \"enroll\" or \"admin\""
            )),
        }
    }
}

/// An API key's metadata. Never contains the secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyInfo {
    /// Public key id.
    pub id: KeyId,
    /// Name/use label ("cli", "ci", "docker-fleet-a").
    pub name: String,
    /// Scope.
    pub scope: Scope,
    /// Owner's email.
    pub owner: String,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Expiry time (every key expires).
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Last successful use.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    /// Revocation time, if revoked.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// Who revoked it (email), if revoked.
    #[serde(default)]
    pub revoked_by: Option<String>,
}

/// `POST /v1/keys` request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// Name/use label.
    pub name: String,
    /// Scope; `enroll` when omitted.
    #[serde(default = "default_scope")]
    pub scope: Scope,
    /// Days until expiry; 90 when omitted.
    #[serde(default)]
    pub expires_in_days: Option<u32>,
    /// Seconds until expiry, for short-lived keys (takes precedence over days).
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
    /// Maximum number of enrollments; unlimited when omitted.
    #[serde(default)]
    pub max_uses: Option<u64>,
}

fn default_scope() -> Scope {
    Scope::Enroll
}

/// `POST /v1/keys` response: the only time the server volunteers the full key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateKeyResponse {
    /// The full API key.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub key: crate::Secret,
    /// Its metadata.
    #[serde(flatten)]
    pub info: KeyInfo,
}

/// `GET /v1/whoami` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WhoAmI {
    /// Workspace id.
    pub workspace_id: WorkspaceId,
    /// Workspace name.
    pub workspace_name: String,
    /// Member id.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::MemberId))]
    pub member_id: String,
    /// Member email.
    pub email: String,
    /// Member role ("owner", "admin", "member").
    pub role: String,
    /// The key used for this request.
    pub key: KeyInfo,
    /// Set for an owner whose usable admin keys all expire within 14 days (or who has
    /// none): what will happen and what to do, one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// `PATCH /v1/devices/{id}` body: the fields to change (absent fields stay; at least one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateDeviceRequest {
    /// New name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New labels; replace all of the device's labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// One device, as listed by `GET /v1/devices`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceInfo {
    /// Device id.
    pub id: DeviceId,
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// Enrollment time.
    #[serde(with = "time::serde::rfc3339")]
    pub enrolled_at: OffsetDateTime,
    /// The key that enrolled it (audit only: nothing cascades from keys to devices).
    pub enrolled_by_key: KeyId,
    /// The member who owned that key (email).
    pub enrolled_by_member: String,
    /// Whether a gateway holds a live session for it now.
    pub connected: bool,
    /// Last time a gateway heard from it.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_seen_at: Option<OffsetDateTime>,
    /// Latest facts.
    #[serde(default)]
    pub facts: Option<Facts>,
    /// Current certificate's expiry.
    #[serde(with = "time::serde::rfc3339")]
    pub certificate_expires_at: OffsetDateTime,
    /// Revocation time, if revoked.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// Serial (lowercase hex) of the certificate the cloud issued last.
    #[serde(default)]
    pub certificate_serial: String,
    /// Serial of the certificate the live session uses (the current one, or the previous
    /// one shortly after a renewal); absent when not connected.
    #[serde(default)]
    pub session_serial: Option<String>,
    /// The version its agent gave when its latest session opened; absent before any.
    #[serde(default)]
    pub agent_version: Option<String>,
}

/// Where a key stands, as listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    /// Usable.
    Active,
    /// Past its expiry.
    Expired,
    /// Revoked (by someone, by rotation, or because its owner was removed).
    Revoked,
    /// All of its allowed enrollments are spent.
    Exhausted,
}

/// One key as listed by `GET /v1/keys`: metadata plus usage and status.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyListEntry {
    /// Metadata.
    #[serde(flatten)]
    pub info: KeyInfo,
    /// Status now.
    pub status: KeyStatus,
    /// Successful enrollments made with the key.
    pub uses: u64,
    /// Maximum enrollments allowed, if limited.
    #[serde(default)]
    pub max_uses: Option<u64>,
    /// Set on a rotated key: the key that replaced it.
    #[serde(default)]
    pub replaced_by: Option<KeyId>,
}

/// `POST /v1/keys/{id}/copy` response (the key's owner only): the key re-derived.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CopyKeyResponse {
    /// The full API key.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub key: crate::Secret,
    /// Its metadata.
    #[serde(flatten)]
    pub info: KeyInfo,
}

/// `POST /v1/keys/{id}/rotate` request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RotateKeyRequest {
    /// Seconds the old key stays valid after rotation (0 or absent: revoked at once).
    #[serde(default)]
    pub overlap_secs: Option<u64>,
}

/// A member's role in a workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Full control; the last owner cannot be removed.
    Owner,
    /// Manages members, keys and devices.
    Admin,
    /// Manages only their own keys; enrolls devices.
    Member,
}

impl Role {
    /// The role's name as used in the API and CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "owner" => Ok(Role::Owner),
            "admin" => Ok(Role::Admin),
            "member" => Ok(Role::Member),
            other => Err(format!(
                "unknown role {other:?}: use \"owner\", \"admin\" or \"member\""
            )),
        }
    }
}

/// A team member as listed by `GET /v1/members`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemberInfo {
    /// Member id (`mem_…`).
    #[cfg_attr(feature = "openapi", schema(value_type = crate::MemberId))]
    pub id: String,
    /// Email.
    pub email: String,
    /// Role.
    pub role: Role,
    /// When they joined.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When they were removed, if they were.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub removed_at: Option<OffsetDateTime>,
    /// Their keys that are active now.
    #[serde(default)]
    pub active_keys: u64,
}

/// `POST /v1/invitations` request (admin).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    /// Invitee's email.
    pub email: String,
    /// Role they will have; `member` when omitted.
    #[serde(default = "default_role")]
    pub role: Role,
    /// Seconds until the invitation expires; 7 days when omitted.
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
}

fn default_role() -> Role {
    Role::Member
}

/// `POST /v1/invitations` response: the token is shown once; the invitee accepts with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InviteResponse {
    /// One-time invitation token.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub token: crate::Secret,
    /// The invitation's id (for `GET /v1/invitations` and cancelling; not a secret).
    #[serde(default)]
    pub id: String,
    /// Invitee's email.
    pub email: String,
    /// Role.
    pub role: Role,
    /// When the token stops working.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// `POST /v1/invitations/accept` request (no API key: the token is the credential).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AcceptInvitationRequest {
    /// The invitation token.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub token: crate::Secret,
    /// Name of the first key; "cli" when omitted.
    #[serde(default)]
    pub key_name: Option<String>,
}

/// `POST /v1/invitations/accept` response: the new member and their first key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AcceptInvitationResponse {
    /// The new member.
    pub member: MemberInfo,
    /// Workspace id.
    pub workspace_id: WorkspaceId,
    /// Workspace name.
    pub workspace_name: String,
    /// Their first key (admin scope: their CLI key; what it may do is bounded by their role).
    pub key: CreateKeyResponse,
}

/// `POST /v1/members/{id}/remove` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RemoveMemberResponse {
    /// The removed member.
    pub member: MemberInfo,
    /// Keys revoked in the same transaction.
    pub revoked_keys: Vec<KeyId>,
    /// Pending invitations cancelled in the same transaction: those the member issued and
    /// those addressed to their email.
    #[serde(default)]
    pub cancelled_invitations: Vec<String>,
    /// Set when the member had been removed before this request (which then only revoked
    /// and cancelled what was still active).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub already_removed_at: Option<OffsetDateTime>,
}

/// One audit log entry (`GET /v1/audit`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEvent {
    /// Increasing id.
    pub id: i64,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Who: a member's email, a device id, or "system".
    pub actor: String,
    /// What, e.g. "key.create", "key.revoke", "key.rotate", "member.invite", "member.join",
    /// "member.remove", "device.enroll", "device.revoke".
    pub action: String,
    /// The object acted on (key id, member email, device id).
    pub target: String,
    /// Extra details.
    #[serde(default)]
    pub details: serde_json::Value,
}

/// One stored report (`GET /v1/devices/{id}/reports`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReportInfo {
    /// The device's sequence number of the report.
    pub seq: u64,
    /// When the cloud stored it.
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// The report's content.
    pub payload: serde_json::Value,
}

/// One page of a device's reports, in sequence order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReportPage {
    /// The reports with sequence numbers above the request's `after`, at most `limit`.
    pub reports: Vec<ReportInfo>,
    /// Pass as `after` to get the next page; absent when this page is the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<u64>,
}

/// A pending invitation (`GET /v1/invitations`). The token is never shown again.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvitationInfo {
    /// Id (`inv_` and 16 letters or digits).
    pub id: String,
    /// Invitee's email.
    pub email: String,
    /// Role they will have.
    pub role: Role,
    /// Email of the member who invited them.
    pub invited_by: String,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the token stops working.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// `POST /v1/console/signin-links` response: a one-time sign-in link to the web console for
/// the caller's key. The link is `<server><path>#<token>`: the token sits in the fragment,
/// which browsers never send to the server, and the console's page posts it once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsoleSignInLink {
    /// The one-time token (`heexsig_` and 32 letters or digits).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub token: crate::Secret,
    /// The console page that spends it.
    pub path: String,
    /// When the token stops working.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// Items a list endpoint returns when the query names no `limit`.
pub const DEFAULT_PAGE_LIMIT: u32 = 100;
/// Most items one page of a list endpoint holds (`limit` is 1 to this).
pub const MAX_PAGE_LIMIT: u32 = 1000;

/// One page of a list. Every list endpoint pages the same way: `?limit=` (1 to
/// [`MAX_PAGE_LIMIT`], [`DEFAULT_PAGE_LIMIT`] when omitted) and `?after=` (the previous
/// page's `next_after`, omitted for the first page); `next_after` is present exactly when
/// more items follow. Cursors are opaque and stay valid while items are added or removed:
/// an item added before the cursor's place is not shown, one added after it is.
pub trait Page {
    /// What the page lists.
    type Item;
    /// The page's items, in the list's order.
    fn into_items(self) -> Vec<Self::Item>;
    /// The cursor of the next page, if there is one.
    fn next_after(&self) -> Option<&str>;
}

macro_rules! page {
    ($(#[$doc:meta])* $name:ident, $field:ident, $item:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub struct $name {
            /// This page's items, in the list's order.
            pub $field: Vec<$item>,
            /// Pass as `after` to get the next page; absent when this page is the last.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub next_after: Option<String>,
        }

        impl Page for $name {
            type Item = $item;
            fn into_items(self) -> Vec<$item> {
                self.$field
            }
            fn next_after(&self) -> Option<&str> {
                self.next_after.as_deref()
            }
        }
    };
}

page!(
    /// One page of `GET /v1/devices`.
    DevicePage,
    devices,
    DeviceInfo
);
page!(
    /// One page of `GET /v1/keys`, oldest first.
    KeyPage,
    keys,
    KeyListEntry
);
page!(
    /// One page of `GET /v1/members`, oldest first.
    MemberPage,
    members,
    MemberInfo
);
page!(
    /// One page of `GET /v1/invitations`, oldest first.
    InvitationPage,
    invitations,
    InvitationInfo
);
page!(
    /// One page of `GET /v1/audit`, newest first.
    AuditPage,
    events,
    AuditEvent
);

/// `GET /v1/devices/summary`: counts for a dashboard, computed without listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceSummary {
    /// Devices enrolled in the workspace (revoked ones included).
    pub total: u64,
    /// Devices with a live gateway session now.
    pub connected: u64,
    /// Devices not revoked whose certificate expires within `expiring_within_secs`
    /// (already expired ones included).
    pub expiring_soon: u64,
    /// Revoked devices.
    pub revoked: u64,
    /// The window `expiring_soon` counts, in seconds.
    pub expiring_within_secs: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Secret;

    /// Every body that carries a key or a token shows neither in its `Debug` (a logged or
    /// printed body), and carries it as a plain string on the wire.
    #[test]
    fn bodies_with_a_secret_never_show_it() {
        let secret = "heex_SECRET_SHOULD_NOT_SHOW";
        let at = OffsetDateTime::UNIX_EPOCH;
        let info = KeyInfo {
            id: crate::KeyId::generate(),
            name: "ci".into(),
            scope: Scope::Admin,
            owner: "owner@example.com".into(),
            created_at: at,
            expires_at: at,
            last_used_at: None,
            revoked_at: None,
            revoked_by: None,
        };
        let created = CreateKeyResponse {
            key: Secret::new(secret),
            info: info.clone(),
        };
        let shown = [
            format!("{created:?}"),
            format!(
                "{:?}",
                CopyKeyResponse {
                    key: Secret::new(secret),
                    info,
                }
            ),
            format!(
                "{:?}",
                InviteResponse {
                    token: Secret::new(secret),
                    id: "inv_1".into(),
                    email: "new@example.com".into(),
                    role: Role::Member,
                    expires_at: at,
                }
            ),
            format!(
                "{:?}",
                AcceptInvitationRequest {
                    token: Secret::new(secret),
                    key_name: None,
                }
            ),
            format!(
                "{:?}",
                AcceptInvitationResponse {
                    member: MemberInfo {
                        id: "mem_1".into(),
                        email: "new@example.com".into(),
                        role: Role::Member,
                        created_at: at,
                        removed_at: None,
                        active_keys: 1,
                    },
                    workspace_id: crate::WorkspaceId::generate(),
                    workspace_name: "default".into(),
                    key: created.clone(),
                }
            ),
            format!(
                "{:?}",
                ConsoleSignInLink {
                    token: Secret::new(secret),
                    path: "/console/signin".into(),
                    expires_at: at,
                }
            ),
        ];
        for text in shown {
            assert!(!text.contains("SECRET"), "{text}");
            assert!(text.contains("<redacted>"), "{text}");
        }
        let wire = serde_json::to_value(&created).unwrap();
        assert_eq!(wire["key"], secret);
    }
}
