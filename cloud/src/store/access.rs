//! The access policy: what an API key, and the member holding it, may do.
//!
//! Every rule lives here, once. Handlers use it to answer early, and the store decides again
//! inside the write transaction of every change made on behalf of a key (with the key and
//! member as they are in that transaction), so a key revoked, a member removed or a device
//! changed between the request's authentication and its write cannot slip through.
//!
//! - A key is usable while it is neither revoked (a revocation scheduled for the end of a
//!   rotation overlap counts once due) nor expired, and its member is not removed.
//! - What a usable key may do is its scope intersected with its member's role: an `enroll`
//!   key enrolls (within its use limit), asks who it is and revokes itself; an `admin` key
//!   manages its member's own keys, lists, and enrolls; managing members, invitations, other
//!   members' keys and reading the audit log also needs the owner or admin role.
//! - Only an owner may remove an owner, invite an owner, or revoke an owner's key (besides
//!   that owner themselves).
//! - Owners and admins manage every device of the workspace; a member may rename, relabel
//!   and revoke only the devices they enrolled, and may delete none (deleting also deletes
//!   the device's reports).

use heex_proto::api::Scope;
use heex_proto::MemberId;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::store::{KeyRecord, KeyUsability, Revocation, Role};

/// Why a caller may not do something. Maps to the API's 401/403 answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The key is unknown (or gone): a plain 401 that says nothing more.
    #[error("missing or invalid API key")]
    Unauthorized,
    /// The key was revoked, or its member removed (401 `key_revoked`).
    #[error("{0}")]
    Revoked(String),
    /// The key expired (401 `key_expired`).
    #[error("{0}")]
    Expired(String),
    /// The key's scope or its member's role does not allow this (403 `forbidden`).
    #[error("{0}")]
    Forbidden(String),
}

/// What an operation needs of its caller's key, besides being usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing more (a key revoking itself).
    Usable,
    /// Enroll or admin scope, and enrollments left.
    Enroll,
    /// Admin scope.
    Admin,
    /// Admin scope and the owner or admin role.
    Manager,
}

/// What is done to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceAction {
    /// Rename or relabel.
    Update,
    /// Revoke.
    Revoke,
    /// Delete (with its reports).
    Delete,
}

impl DeviceAction {
    fn verb(self) -> &'static str {
        match self {
            DeviceAction::Update => "rename or relabel",
            DeviceAction::Revoke => "revoke",
            DeviceAction::Delete => "delete",
        }
    }
}

/// Why an authentic key cannot be used at `now`, if it cannot (a key whose enrollments are
/// all spent can still do what needs no enrollment).
pub fn unusable(key: &KeyRecord, now: OffsetDateTime) -> Option<Refusal> {
    match key.usability(now) {
        KeyUsability::Usable | KeyUsability::UsesSpent(_) => None,
        KeyUsability::Revoked(at) => {
            let by = key.revoked_by.as_deref().unwrap_or("an admin");
            Some(Refusal::Revoked(match key.revoked_reason {
                Some(Revocation::MemberRemoved) => format!(
                    "API key {} was revoked on {} because its owner {} was removed from the \
                     workspace by {by}",
                    key.id,
                    rfc3339(at),
                    key.member_email
                ),
                _ => format!(
                    "API key {} was revoked on {} by {by}; ask an admin for a new key",
                    key.id,
                    rfc3339(at)
                ),
            }))
        }
        KeyUsability::OwnerRemoved(removed) => Some(Refusal::Revoked(format!(
            "API key {} cannot be used: its owner {} was removed from workspace {} on {}; \
             ask an admin for a new invitation",
            key.id,
            key.member_email,
            key.workspace_name,
            rfc3339(removed)
        ))),
        KeyUsability::Expired(at) => Some(Refusal::Expired(format!(
            "API key {} expired on {}; create a new key",
            key.id,
            rfc3339(at)
        ))),
    }
}

/// Decides whether `key` may do `action`, which needs `need`, at `now`.
pub fn check(
    key: &KeyRecord,
    need: Need,
    action: &str,
    now: OffsetDateTime,
) -> Result<(), Refusal> {
    if let Some(refused) = unusable(key, now) {
        return Err(refused);
    }
    match need {
        Need::Usable => Ok(()),
        Need::Enroll => {
            require_scope(key, &[Scope::Enroll, Scope::Admin], action)?;
            match key.usability(now) {
                KeyUsability::UsesSpent(max) => Err(Refusal::Forbidden(format!(
                    "API key {} has used all of its {max} enrollments; create a new key",
                    key.id
                ))),
                _ => Ok(()),
            }
        }
        Need::Admin => require_scope(key, &[Scope::Admin], action),
        Need::Manager => {
            require_scope(key, &[Scope::Admin], action)?;
            if is_manager(key) {
                Ok(())
            } else {
                Err(role_refusal(key, action))
            }
        }
    }
}

/// Requires the key's scope to be one of `allowed`.
pub fn require_scope(key: &KeyRecord, allowed: &[Scope], action: &str) -> Result<(), Refusal> {
    if allowed.contains(&key.scope) {
        return Ok(());
    }
    let needed: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
    Err(Refusal::Forbidden(format!(
        "API key {} has scope \"{}\"; {action} needs scope {}",
        key.id,
        key.scope.as_str(),
        needed.join(" or ")
    )))
}

/// True when the key's member may manage the workspace (owner or admin).
pub fn is_manager(key: &KeyRecord) -> bool {
    matches!(key.member_role, Role::Owner | Role::Admin)
}

/// The refusal for a member whose role does not allow `action`.
pub fn role_refusal(key: &KeyRecord, action: &str) -> Refusal {
    Refusal::Forbidden(format!(
        "{} has the role \"{}\" in workspace {}; {action} needs the owner or admin role",
        key.member_email,
        key.member_role.as_str(),
        key.workspace_name
    ))
}

/// True when `target` belongs to the member holding `key`.
pub fn owns(key: &KeyRecord, target: &KeyRecord) -> bool {
    target.member_id == key.member_id && target.workspace_id == key.workspace_id
}

/// May `key` revoke `target`? Any key may revoke itself; a member may revoke their own keys
/// (admin scope); owners and admins may revoke other members' keys, but only an owner may
/// revoke an owner's.
pub fn revoke_key(key: &KeyRecord, target: &KeyRecord, now: OffsetDateTime) -> Result<(), Refusal> {
    if target.id == key.id {
        return check(key, Need::Usable, "revoking keys", now);
    }
    check(key, Need::Admin, "revoking keys", now)?;
    if owns(key, target) {
        return Ok(());
    }
    if !is_manager(key) {
        return Err(Refusal::Forbidden(format!(
            "{} may revoke only their own keys; revoking another member's keys needs the \
             owner or admin role",
            key.member_email
        )));
    }
    if target.member_role == Role::Owner && key.member_role != Role::Owner {
        return Err(Refusal::Forbidden(format!(
            "API key {} belongs to {}, an owner; only an owner can revoke an owner's keys",
            target.id, target.member_email
        )));
    }
    Ok(())
}

/// May `key` remove a member with this email and role?
pub fn remove_member(
    key: &KeyRecord,
    email: &str,
    role: Role,
    now: OffsetDateTime,
) -> Result<(), Refusal> {
    check(key, Need::Manager, "removing members", now)?;
    if role == Role::Owner && key.member_role != Role::Owner {
        return Err(Refusal::Forbidden(format!(
            "{email} is an owner; only an owner can remove an owner"
        )));
    }
    Ok(())
}

/// May `key` invite someone with `role`?
pub fn invite(key: &KeyRecord, role: Role, now: OffsetDateTime) -> Result<(), Refusal> {
    check(key, Need::Manager, "inviting members", now)?;
    if role == Role::Owner && key.member_role != Role::Owner {
        return Err(Refusal::Forbidden(
            "only an owner can invite another owner; invite them as admin or member".into(),
        ));
    }
    Ok(())
}

/// May `key` do `action` to a device enrolled by member `enrolled_by`?
pub fn manage_device(
    key: &KeyRecord,
    enrolled_by: &MemberId,
    action: DeviceAction,
    now: OffsetDateTime,
) -> Result<(), Refusal> {
    let what = match action {
        DeviceAction::Update => "updating devices",
        DeviceAction::Revoke => "revoking devices",
        DeviceAction::Delete => "deleting devices",
    };
    check(key, Need::Admin, what, now)?;
    if is_manager(key) {
        return Ok(());
    }
    match action {
        DeviceAction::Delete => Err(Refusal::Forbidden(format!(
            "{} has the role \"member\"; deleting a device (and its reports) needs the owner \
             or admin role",
            key.member_email
        ))),
        _ if *enrolled_by == key.member_id => Ok(()),
        _ => Err(Refusal::Forbidden(format!(
            "{} has the role \"member\" and may {} only the devices they enrolled; ask an owner \
             or admin",
            key.member_email,
            action.verb()
        ))),
    }
}

/// A time as RFC 3339 text.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}
