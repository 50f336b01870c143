//! `/v1/invitations`: invite someone by email with a role, and accept an invitation (the
//! token is the credential) to become a member with a first key.
//!
//! A token is `heexinv_` and 32 random base62 characters. Only its SHA-256 is stored; it
//! works once and expires (7 days by default).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use heex_proto::api::{
    AcceptInvitationRequest, AcceptInvitationResponse, CreateKeyResponse, ErrorBody,
    InvitationInfo, InvitationPage, InviteRequest, InviteResponse,
};
use heex_proto::{base62, ApiKey, InvitationToken, KeyId, MemberId};
use serde_json::json;
use time::OffsetDateTime;

use super::keys::{DEFAULT_KEY_LIFETIME, MAX_KEY_NAME};
use super::paging::{self, PageQuery};
use super::{
    audit_entry, check_name, not_in_workspace, whole_seconds, ApiJson, ApiQuery, AppState,
};
use crate::auth::{rfc3339, Caller};
use crate::error::ApiError;
use crate::store::access::{self, Need};
use crate::store::{
    AcceptOutcome, Acceptance, AuditAction, CancelOutcome, InvitationCancel, NewInvitation,
};

/// Lifetime of an invitation when the request names none.
pub(crate) const DEFAULT_INVITATION_LIFETIME: time::Duration = time::Duration::days(7);
/// Longest lifetime an invitation may have.
pub(crate) const MAX_INVITATION_LIFETIME: time::Duration = time::Duration::days(30);
/// Name of a new member's first key when they name none.
pub(crate) const FIRST_KEY_NAME: &str = "cli";
/// Longest invitee email, in characters.
pub(crate) use heex_proto::text::MAX_EMAIL_LEN;

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
pub(crate) async fn invite(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<InviteRequest>,
) -> Result<(StatusCode, Json<InviteResponse>), ApiError> {
    // Decided here to answer early, and again by the store inside the write.
    access::invite(&caller.key, req.role, OffsetDateTime::now_utc())?;
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
    let token = InvitationToken::generate();
    let invitation = NewInvitation {
        token_hash: token.sha256_hex(),
        workspace_id: caller.key.workspace_id.clone(),
        email: email.clone(),
        role: req.role,
        created_at: now,
        expires_at: now + lifetime,
        invited_by: caller.key.member_id.clone(),
        id: format!(
            "{INVITATION_ID_PREFIX}{}",
            base62::random(INVITATION_ID_LEN)
        ),
    };
    let id = invitation.id.clone();
    let expires_at = invitation.expires_at;
    let audit = audit_entry(
        &caller,
        Need::Manager,
        "inviting members",
        now,
        AuditAction::MemberInvite,
        email.clone(),
        json!({"role": req.role, "expires_at": rfc3339(expires_at), "invitation": id}),
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
            token: token.into_secret(),
            id,
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
        (status = 400, description = "Unknown, used, cancelled or expired token, an inviter who may no longer invite, or already a member", body = ErrorBody)
    )
)]
pub(crate) async fn accept(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<AcceptInvitationRequest>,
) -> Result<(StatusCode, Json<AcceptInvitationResponse>), ApiError> {
    let token = InvitationToken::parse(req.token.expose())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let key_name = match req.key_name.as_deref().map(str::trim) {
        None | Some("") => FIRST_KEY_NAME.to_owned(),
        Some(name) => {
            check_name("key_name", name, MAX_KEY_NAME)?;
            name.to_owned()
        }
    };
    let now = whole_seconds(OffsetDateTime::now_utc());
    let acceptance = Acceptance {
        token_hash: token.sha256_hex(),
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
        AcceptOutcome::Cancelled(at, reason) => {
            let why = match reason {
                InvitationCancel::Cancelled => "cancelled",
                InvitationCancel::InviterRemoved => {
                    "cancelled because the member who sent it was removed"
                }
                InvitationCancel::InviteeRemoved => {
                    "cancelled because the member it was sent to was removed"
                }
            };
            return Err(ApiError::bad_request(format!(
                "this invitation was {why} on {}; ask an admin for a new invitation",
                rfc3339(at)
            )));
        }
        AcceptOutcome::InviterGone(inviter) => {
            return Err(ApiError::bad_request(format!(
                "this invitation is void: {inviter}, who sent it, may no longer invite with \
                 its role; ask an admin for a new invitation"
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
                key: secret.expose().into(),
                info: key.info(),
            },
        }),
    ))
}

/// Lists the workspace's pending invitations (owner or admin role), oldest first: neither
/// accepted, cancelled nor expired. Tokens are never shown again.
#[utoipa::path(
    get,
    path = "/v1/invitations",
    tag = "members",
    params(PageQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "One page of pending invitations", body = InvitationPage),
        (status = 400, description = "Bad limit or cursor", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "Scope or role does not allow listing invitations", body = ErrorBody)
    )
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<InvitationPage>, ApiError> {
    caller.require_manager("listing invitations")?;
    let page = query.request("invitations")?;
    let pending = state
        .store
        .list_invitations(&caller.key.workspace_id, OffsetDateTime::now_utc(), page)
        .await?;
    Ok(Json(InvitationPage {
        invitations: pending.items.iter().map(|i| i.info()).collect(),
        next_after: paging::next_after("invitations", pending.next),
    }))
}

/// Cancels a pending invitation (owner or admin role): its token stops working at once.
#[utoipa::path(
    delete,
    path = "/v1/invitations/{id}",
    tag = "members",
    params(("id" = String, Path, description = "Invitation id (inv_…)")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The cancelled invitation", body = InvitationInfo),
        (status = 400, description = "Already accepted or cancelled", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "Scope or role does not allow cancelling invitations", body = ErrorBody),
        (status = 404, description = "No such invitation in the workspace", body = ErrorBody)
    )
)]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<InvitationInfo>, ApiError> {
    caller.require_manager("cancelling invitations")?;
    if !is_invitation_id(&id) {
        return Err(not_in_workspace("invitation", &id));
    }
    let now = whole_seconds(OffsetDateTime::now_utc());
    let audit = audit_entry(
        &caller,
        Need::Manager,
        "cancelling invitations",
        now,
        AuditAction::InvitationCancel,
        id.clone(),
        json!({}),
    );
    match state
        .store
        .cancel_invitation(&caller.key.workspace_id, &id, &caller.key.member_id, audit)
        .await?
    {
        CancelOutcome::Cancelled(inv) => {
            tracing::info!(invitation = %inv.id, by = %caller.key.id, "invitation cancelled");
            Ok(Json(inv.info()))
        }
        CancelOutcome::NotFound => Err(not_in_workspace("invitation", &id)),
        CancelOutcome::AlreadyAccepted(at) => Err(ApiError::bad_request(format!(
            "invitation {id} was accepted on {}; remove the member instead",
            rfc3339(at)
        ))),
        CancelOutcome::AlreadyCancelled(at) => Err(ApiError::bad_request(format!(
            "invitation {id} was already cancelled on {}",
            rfc3339(at)
        ))),
    }
}

/// What every invitation id starts with.
pub(crate) const INVITATION_ID_PREFIX: &str = "inv_";
/// Letters or digits after the prefix.
pub(crate) const INVITATION_ID_LEN: usize = 16;

fn is_invitation_id(id: &str) -> bool {
    id.strip_prefix(INVITATION_ID_PREFIX)
        .is_some_and(|rest| rest.len() == INVITATION_ID_LEN && base62::is_base62(rest))
}

/// A plausible email ([`heex_proto::text::check_email`]).
fn check_email(email: &str) -> Result<(), ApiError> {
    heex_proto::text::check_email("email", email).map_err(|e| ApiError::bad_request(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
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
