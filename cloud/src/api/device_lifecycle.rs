//! `/v1/devices/{id}` lifecycle (admin scope): revoke, rename/relabel, delete.
//!
//! Owners and admins manage every device of the workspace; a member may rename, relabel and
//! revoke only the devices they enrolled, and delete none (see [`crate::store::access`]). The store
//! decides inside each change's transaction.
//!
//! Revoking a device is separate from revoking keys: it closes the device's live gateway
//! session at once and the gateway refuses its handshakes and renewals afterwards.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
pub(crate) use heex_proto::api::UpdateDeviceRequest;
use heex_proto::api::{DeviceInfo, ErrorBody};
use heex_proto::frame::CloseReason;
use heex_proto::DeviceId;
use serde_json::json;
use time::OffsetDateTime;

use super::enroll::{check_labels, MAX_DEVICE_NAME};
use super::{audit_entry, check_name, not_in_workspace, whole_seconds, ApiJson, AppState};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::store::access::Need;
use crate::store::{AuditAction, DeleteDeviceOutcome};

fn parse_id(id: &str) -> Result<DeviceId, ApiError> {
    id.parse().map_err(|_| not_in_workspace("device", id))
}

async fn device_info(
    state: &AppState,
    caller: &Caller,
    id: &DeviceId,
) -> Result<DeviceInfo, ApiError> {
    let device = state
        .store
        .find_device(&caller.key.workspace_id, id)
        .await?
        .ok_or_else(|| not_in_workspace("device", id.as_str()))?;
    Ok(device.live_info(&state.registry))
}

/// Revokes a device: its live session is closed with "device revoked", and the gateway
/// refuses its handshakes and renewals from now on. Revoking twice keeps the first time.
#[utoipa::path(
    post,
    path = "/v1/devices/{id}/revoke",
    tag = "devices",
    params(("id" = DeviceId, Path, description = "Device id")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The revoked device", body = DeviceInfo),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "Enroll scope, or a member acting on a device they did not enroll (or deleting any)", body = ErrorBody),
        (status = 404, description = "No such device in the workspace", body = ErrorBody)
    )
)]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeviceInfo>, ApiError> {
    caller.require_admin("revoking devices")?;
    let device_id = parse_id(&id)?;
    let now = whole_seconds(OffsetDateTime::now_utc());
    let audit = audit_entry(
        &caller,
        Need::Admin,
        "revoking devices",
        now,
        AuditAction::DeviceRevoke,
        device_id.as_str(),
        json!({}),
    );
    let found = state
        .store
        .revoke_device(&caller.key.workspace_id, &device_id, now, audit)
        .await?;
    if !found {
        return Err(not_in_workspace("device", &id));
    }
    // The store is updated first, so a reconnect racing this close is refused.
    let closed = state.registry.close(&device_id, CloseReason::DeviceRevoked);
    tracing::info!(device = %device_id, session_closed = closed, "device revoked");
    Ok(Json(device_info(&state, &caller, &device_id).await?))
}

/// Renames a device and/or replaces its labels.
#[utoipa::path(
    patch,
    path = "/v1/devices/{id}",
    tag = "devices",
    params(("id" = DeviceId, Path, description = "Device id")),
    request_body = UpdateDeviceRequest,
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The updated device", body = DeviceInfo),
        (status = 400, description = "Bad name or labels, or nothing to change", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "Enroll scope, or a member acting on a device they did not enroll (or deleting any)", body = ErrorBody),
        (status = 404, description = "No such device in the workspace", body = ErrorBody)
    )
)]
pub(crate) async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateDeviceRequest>,
) -> Result<Json<DeviceInfo>, ApiError> {
    caller.require_admin("updating devices")?;
    let device_id = parse_id(&id)?;
    if req.name.is_none() && req.labels.is_none() {
        return Err(ApiError::bad_request(
            "nothing to change: give a name and/or labels",
        ));
    }
    if let Some(name) = &req.name {
        check_name("name", name, MAX_DEVICE_NAME)?;
    }
    if let Some(labels) = &req.labels {
        check_labels(labels)?;
    }
    let name = req.name.map(|n| n.trim().to_owned());
    let audit = audit_entry(
        &caller,
        Need::Admin,
        "updating devices",
        OffsetDateTime::now_utc(),
        AuditAction::DeviceUpdate,
        device_id.as_str(),
        json!({"name": name, "labels": req.labels}),
    );
    let found = state
        .store
        .update_device(
            &caller.key.workspace_id,
            &device_id,
            name,
            req.labels,
            audit,
        )
        .await?;
    if !found {
        return Err(not_in_workspace("device", &id));
    }
    Ok(Json(device_info(&state, &caller, &device_id).await?))
}

/// Deletes a revoked device's record. Devices that are not revoked cannot be deleted.
#[utoipa::path(
    delete,
    path = "/v1/devices/{id}",
    tag = "devices",
    params(("id" = DeviceId, Path, description = "Device id")),
    security(("api_key" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "The device is not revoked", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "Enroll scope, or a member acting on a device they did not enroll (or deleting any)", body = ErrorBody),
        (status = 404, description = "No such device in the workspace", body = ErrorBody)
    )
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin("deleting devices")?;
    let device_id = parse_id(&id)?;
    let audit = audit_entry(
        &caller,
        Need::Admin,
        "deleting devices",
        OffsetDateTime::now_utc(),
        AuditAction::DeviceDelete,
        device_id.as_str(),
        json!({}),
    );
    match state
        .store
        .delete_device(&caller.key.workspace_id, &device_id, audit)
        .await?
    {
        DeleteDeviceOutcome::Deleted => Ok(StatusCode::NO_CONTENT),
        DeleteDeviceOutcome::NotFound => Err(not_in_workspace("device", &id)),
        DeleteDeviceOutcome::NotRevoked => Err(ApiError::bad_request(format!(
            "device {id} is not revoked; revoke it first (heex devices revoke {id})"
        ))),
    }
}
