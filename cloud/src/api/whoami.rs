//! `GET /v1/whoami`: who the presented key belongs to.

use axum::extract::State;
use axum::Json;
use heex_proto::api::{ErrorBody, WhoAmI};
use time::OffsetDateTime;

use super::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

/// Any valid key may ask who it is.
#[utoipa::path(
    get,
    path = "/v1/whoami",
    tag = "keys",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The key's owner, workspace and metadata", body = WhoAmI),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody)
    )
)]
pub(super) async fn whoami(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<WhoAmI>, ApiError> {
    let k = &caller.key;
    let warning = state
        .store
        .admin_key_warning(&k.member_id, k.member_role, OffsetDateTime::now_utc())
        .await?;
    Ok(Json(WhoAmI {
        workspace_id: k.workspace_id.clone(),
        workspace_name: k.workspace_name.clone(),
        member_id: k.member_id.to_string(),
        email: k.member_email.clone(),
        role: k.member_role.as_str().to_owned(),
        key: k.info(),
        warning,
    }))
}
