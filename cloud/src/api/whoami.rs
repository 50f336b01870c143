//! `GET /v1/whoami`: who the presented key belongs to.

use axum::Json;
use heex_proto::api::{ErrorBody, WhoAmI};

use crate::auth::Caller;

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
pub(super) async fn whoami(caller: Caller) -> Json<WhoAmI> {
    let k = &caller.key;
    Json(WhoAmI {
        workspace_id: k.workspace_id.clone(),
        workspace_name: k.workspace_name.clone(),
        member_id: k.member_id.to_string(),
        email: k.member_email.clone(),
        role: k.member_role.as_str().to_owned(),
        key: k.info(),
    })
}
