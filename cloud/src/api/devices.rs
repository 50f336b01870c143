//! `GET /v1/devices`: the workspace's devices (admin scope).

use axum::extract::State;
use axum::Json;
use heex_proto::api::DeviceInfo;

use super::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

/// Lists the caller's workspace's devices, oldest first, with whether each is connected now.
pub(super) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<DeviceInfo>>, ApiError> {
    caller.require_admin("listing devices")?;
    let devices = state.store.list_devices(&caller.key.workspace_id).await?;
    Ok(Json(
        devices
            .iter()
            .map(|d| d.info(state.registry.is_connected(&d.id)))
            .collect(),
    ))
}
