//! `/v1/devices`: the workspace's devices (admin scope).

use axum::extract::{Path, State};
use axum::Json;
use heex_proto::api::{DeviceInfo, ErrorBody};
use heex_proto::DeviceId;

use super::{not_in_workspace, AppState};
use crate::auth::Caller;
use crate::error::ApiError;

/// Lists the caller's workspace's devices, oldest first, with whether each is connected now.
#[utoipa::path(
    get,
    path = "/v1/devices",
    tag = "devices",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The devices", body = Vec<DeviceInfo>),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "Enroll scope", body = ErrorBody)
    )
)]
pub(super) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<DeviceInfo>>, ApiError> {
    caller.require_admin("listing devices")?;
    let devices = state.store.list_devices(&caller.key.workspace_id).await?;
    Ok(Json(
        devices
            .iter()
            .map(|d| d.live_info(&state.registry))
            .collect(),
    ))
}

/// One device of the caller's workspace.
#[utoipa::path(
    get,
    path = "/v1/devices/{id}",
    tag = "devices",
    params(("id" = DeviceId, Path, description = "Device id")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The device", body = DeviceInfo),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "Enroll scope", body = ErrorBody),
        (status = 404, description = "No such device in the workspace", body = ErrorBody)
    )
)]
pub(super) async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeviceInfo>, ApiError> {
    caller.require_admin("showing devices")?;
    let not_found = || not_in_workspace("device", &id);
    let device_id: DeviceId = id.parse().map_err(|_| not_found())?;
    let device = state
        .store
        .find_device(&caller.key.workspace_id, &device_id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(device.live_info(&state.registry)))
}
