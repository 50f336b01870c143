//! `/v1/members`: list the team, and remove a member (revoking all of their keys in the same
//! transaction; the devices they enrolled stay).

use axum::extract::{Path, State};
use axum::Json;
use heex_proto::api::{ErrorBody, MemberPage, RemoveMemberResponse};
use heex_proto::MemberId;
use serde_json::json;
use time::OffsetDateTime;

use super::paging::{self, PageQuery};
use super::{audit_entry, not_in_workspace, whole_seconds, ApiQuery, AppState};
use crate::auth::{rfc3339, Caller};
use crate::error::ApiError;
use crate::store::access::{self, Need};
use crate::store::{AuditAction, RemoveOutcome};

/// Lists the workspace's members, removed ones included, oldest first (any member, with an
/// admin-scope key).
#[utoipa::path(
    get,
    path = "/v1/members",
    tag = "members",
    params(PageQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "One page of members", body = MemberPage),
        (status = 400, description = "Bad limit or cursor", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "Enroll scope", body = ErrorBody)
    )
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<MemberPage>, ApiError> {
    caller.require_admin("listing members")?;
    let page = query.request("members")?;
    let members = state
        .store
        .list_members(&caller.key.workspace_id, OffsetDateTime::now_utc(), page)
        .await?;
    Ok(Json(MemberPage {
        members: members.items.iter().map(|m| m.info()).collect(),
        next_after: paging::next_after("members", members.next),
    }))
}

/// Removes a member (owner or admin role; removing an owner needs the owner role), revokes
/// all of their keys and cancels the pending invitations they issued or were sent, in the
/// same transaction. Removing a removed member again revokes and cancels whatever is still
/// active. The last owner cannot be removed. Devices the member enrolled belong to the
/// workspace and are untouched.
#[utoipa::path(
    post,
    path = "/v1/members/{id}/remove",
    tag = "members",
    params(("id" = MemberId, Path, description = "Member id")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The removed member and the keys revoked", body = RemoveMemberResponse),
        (status = 400, description = "The last owner, or already removed with nothing left active", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "Scope or role does not allow removing this member", body = ErrorBody),
        (status = 404, description = "No such member in the workspace", body = ErrorBody)
    )
)]
pub(crate) async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RemoveMemberResponse>, ApiError> {
    caller.require_manager("removing members")?;
    let not_found = || not_in_workspace("member", &id);
    let member_id: MemberId = id.parse().map_err(|_| not_found())?;
    let ws = &caller.key.workspace_id;
    let now = whole_seconds(OffsetDateTime::now_utc());
    let target = state
        .store
        .find_member(ws, &member_id, now)
        .await?
        .ok_or_else(not_found)?;
    // Decided here to answer early, and again by the store inside the removal.
    access::remove_member(
        &caller.key,
        &target.email,
        target.role,
        OffsetDateTime::now_utc(),
    )?;
    let audit = audit_entry(
        &caller,
        Need::Manager,
        "removing members",
        now,
        AuditAction::MemberRemove,
        target.email.clone(),
        json!({}),
    );
    let outcome = state
        .store
        .remove_member(ws, &member_id, &caller.key.member_id, now, audit)
        .await?;
    match outcome {
        RemoveOutcome::Removed {
            member,
            revoked_keys,
            cancelled_invitations,
            already_removed_at,
        } => {
            tracing::info!(
                member = %member.id,
                keys = revoked_keys.len(),
                invitations = cancelled_invitations.len(),
                again = already_removed_at.is_some(),
                by = %caller.key.id,
                "member removed"
            );
            Ok(Json(RemoveMemberResponse {
                member: member.info(),
                revoked_keys,
                cancelled_invitations,
                already_removed_at,
            }))
        }
        RemoveOutcome::NotFound => Err(not_found()),
        RemoveOutcome::AlreadyRemoved(at) => Err(ApiError::bad_request(format!(
            "{} was already removed on {}; none of their keys or invitations is still active",
            target.email,
            rfc3339(at)
        ))),
        RemoveOutcome::LastOwner => Err(ApiError::bad_request(format!(
            "{} is the workspace's last owner and cannot be removed; invite another owner first",
            target.email
        ))),
    }
}
