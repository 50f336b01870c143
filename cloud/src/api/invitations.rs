//! `/v1/invitations`: invite someone by email with a role, and accept an invitation (the
//! token is the credential) to become a member with a first key.
//!
//! A token is `heexinv_` and 32 random base62 characters. Only its SHA-256 is stored; it
//! works once and expires (7 days by default).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use heex_proto::api::{
    AcceptInvitationRequest, AcceptInvitationResponse, CreateKeyResponse, ErrorBody, InviteRequest,
    InviteResponse, Role,
};
use heex_proto::{base62, ApiKey, KeyId, MemberId};
use serde_json::json;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::keys::{DEFAULT_KEY_LIFETIME, MAX_KEY_NAME};
use super::{audit_entry, check_name, whole_seconds, ApiJson, AppState};
use crate::auth::{rfc3339, Caller};
use crate::error::ApiError;
use crate::store::{AcceptOutcome, Acceptance, AuditAction, NewInvitation};

/// What every invitation token starts with.
pub const TOKEN_PREFIX: &str = "heexinv_";
/// Random base62 characters after the prefix (about 190 bits).
pub const TOKEN_RANDOM_LEN: usize = 32;
/// Lifetime of an invitation when the request names none.
pub const DEFAULT_INVITATION_LIFETIME: time::Duration = time::Duration::days(7);
/// Longest lifetime an invitation may have.
pub const MAX_INVITATION_LIFETIME: time::Duration = time::Duration::days(30);
/// Name of a new member's first key when they name none.
pub const FIRST_KEY_NAME: &str = "cli";
/// Longest invitee email, in characters.
pub use heex_proto::text::MAX_EMAIL_LEN;

/// Invites someone (owner or admin role; inviting an owner needs the owner role). The
/// answer carries the token, shown this once.
#[utoipa::path(
    post,
    path = "/v1/invitations",
    tag = "members",
    request_body = InviteRequest,
    security(("api_key" = [])),
    responses(
        (status = 201, description = "The invitation and its one-time token", body = InviteResponse),
        (status = 400, description = "Bad email or expiry, or already a member", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "Scope or role does not allow inviting (with this role)", body = ErrorBody)
    )
)]
pub(super) async fn invite(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<InviteRequest>,
) -> Result<(StatusCode, Json<InviteResponse>), ApiError> {
    caller.require_manager("inviting members")?;
    if req.role == Role::Owner && caller.key.member_role != Role::Owner {
        return Err(ApiError::forbidden(
            "only an owner can invite another owner; invite them as admin or member",
        ));
    }
    let email = req.email.trim().to_owned();
    check_email(&email)?;
    let lifetime = match req.expires_in_secs {
        None => DEFAULT_INVITATION_LIFETIME,
        Some(0) => return Err(ApiError::bad_request("expires_in_secs must be at least 1")),
        Some(secs) => time::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX)),
    };
    if lifetime > MAX_INVITATION_LIFETIME {
        return Err(ApiError::bad_request(
            "an invitation may be valid for at most 30 days",
        ));
    }
    let now = whole_seconds(OffsetDateTime::now_utc());
    let token = format!("{TOKEN_PREFIX}{}", base62::random(TOKEN_RANDOM_LEN));
    let invitation = NewInvitation {
        token_hash: token_hash(&token),
        workspace_id: caller.key.workspace_id.clone(),
        email: email.clone(),
        role: req.role,
        created_at: now,
        expires_at: now + lifetime,
        invited_by: caller.key.member_id.clone(),
    };
    let expires_at = invitation.expires_at;
    let audit = audit_entry(
        &caller,
        now,
        AuditAction::MemberInvite,
        email.clone(),
        json!({"role": req.role, "expires_at": rfc3339(expires_at)}),
    );
    if !state.store.create_invitation(invitation, audit).await? {
        return Err(ApiError::bad_request(format!(
            "{email} is already a member of this workspace"
        )));
    }
    tracing::info!(role = req.role.as_str(), by = %caller.key.id, "invitation created");
    Ok((
        StatusCode::CREATED,
        Json(InviteResponse {
            token,
            email,
            role: req.role,
            expires_at,
        }),
    ))
}

/// Accepts an invitation (no API key: the token is the credential). The invitee becomes a
/// member with the invited role and receives a first key of admin scope, their CLI key; what
/// it may do is bounded by their role.
#[utoipa::path(
    post,
    path = "/v1/invitations/accept",
    tag = "members",
    request_body = AcceptInvitationRequest,
    responses(
        (status = 201, description = "The new member and their first key, in full", body = AcceptInvitationResponse),
        (status = 400, description = "Unknown, used or expired token, or already a member", body = ErrorBody)
    )
)]
pub(super) async fn accept(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<AcceptInvitationRequest>,
) -> Result<(StatusCode, Json<AcceptInvitationResponse>), ApiError> {
    let token = req.token.trim();
    if !is_token_shaped(token) {
        return Err(ApiError::bad_request(format!(
            "an invitation token is \"{TOKEN_PREFIX}\" followed by {TOKEN_RANDOM_LEN} letters \
             or digits; copy the whole token"
        )));
    }
    let key_name = match req.key_name.as_deref().map(str::trim) {
        None | Some("") => FIRST_KEY_NAME.to_owned(),
        Some(name) => {
            check_name("key_name", name, MAX_KEY_NAME)?;
            name.to_owned()
        }
    };
    let now = whole_seconds(OffsetDateTime::now_utc());
    let acceptance = Acceptance {
        token_hash: token_hash(token),
        member_id: MemberId::generate(),
        key_id: KeyId::generate(),
        key_name,
        key_lifetime: DEFAULT_KEY_LIFETIME,
        at: now,
    };
    let (member, key) = match state.store.accept_invitation(acceptance).await? {
        AcceptOutcome::Joined { member, key } => (member, key),
        AcceptOutcome::Unknown => {
            return Err(ApiError::bad_request(
                "this invitation token is not valid; ask an admin for a new invitation",
            ))
        }
        AcceptOutcome::AlreadyAccepted(at) => {
            return Err(ApiError::bad_request(format!(
                "this invitation was already accepted on {}; an invitation works once: ask an \
                 admin for a new one",
                rfc3339(at)
            )))
        }
        AcceptOutcome::Expired(at) => {
            return Err(ApiError::bad_request(format!(
                "this invitation expired on {}; ask an admin for a new invitation",
                rfc3339(at)
            )))
        }
        AcceptOutcome::AlreadyMember(email) => {
            return Err(ApiError::bad_request(format!(
                "{email} is already a member of this workspace; use your existing API key"
            )))
        }
    };
    tracing::info!(member = %member.id, key = %key.id, "invitation accepted");
    let secret = ApiKey::derive(state.secret.as_bytes(), key.id.clone());
    Ok((
        StatusCode::CREATED,
        Json(AcceptInvitationResponse {
            member: member.info(),
            workspace_id: key.workspace_id.clone(),
            workspace_name: key.workspace_name.clone(),
            key: CreateKeyResponse {
                key: secret.expose(),
                info: key.info(),
            },
        }),
    ))
}

/// Hex SHA-256 of a token: what the store keeps.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn is_token_shaped(token: &str) -> bool {
    token
        .strip_prefix(TOKEN_PREFIX)
        .is_some_and(|rest| rest.len() == TOKEN_RANDOM_LEN && base62::is_base62(rest))
}

/// A plausible email ([`heex_proto::text::check_email`]).
fn check_email(email: &str) -> Result<(), ApiError> {
    heex_proto::text::check_email("email", email).map_err(|e| ApiError::bad_request(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_emails() {
        let token = format!("{TOKEN_PREFIX}{}", base62::random(TOKEN_RANDOM_LEN));
        assert!(is_token_shaped(&token));
        assert!(!is_token_shaped(&token[..token.len() - 1]));
        assert!(!is_token_shaped(&token.replace(TOKEN_PREFIX, "heex_")));
        assert_eq!(token_hash(&token).len(), 64);
        assert_ne!(token_hash(&token), token_hash(&format!("{token}x")));
        assert!(!token_hash(&token).contains(&token[TOKEN_PREFIX.len()..]));

        check_email("bob@example.com").unwrap();
        for bad in [
            "",
            "bob",
            "@example.com",
            "bob@",
            "b ob@example.com",
            "a@b@c",
        ] {
            assert!(check_email(bad).is_err(), "{bad}");
        }
    }
}
