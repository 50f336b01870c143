//! `GET /v1/devices/{id}/reports`: a device's stored reports in sequence order, paged
//! (admin scope).

use axum::extract::{Path, State};
use axum::Json;
use heex_proto::api::{ErrorBody, ReportPage};
use heex_proto::DeviceId;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{not_in_workspace, ApiQuery, AppState};
use crate::auth::Caller;
use crate::error::ApiError;

use heex_proto::api::{DEFAULT_PAGE_LIMIT as DEFAULT_LIMIT, MAX_PAGE_LIMIT as MAX_LIMIT};

/// `GET /v1/devices/{id}/reports` paging.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ReportsQuery {
    /// Only reports with sequence numbers above this (0 when omitted).
    after: Option<u64>,
    /// Most reports returned: 1 to 1000, 100 when omitted.
    limit: Option<u32>,
}

/// A device's reports with sequence numbers above `after`, oldest first.
#[utoipa::path(
    get,
    path = "/v1/devices/{id}/reports",
    tag = "devices",
    params(("id" = DeviceId, Path, description = "Device id"), ReportsQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "One page of reports", body = ReportPage),
        (status = 400, description = "Bad paging parameters", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "Enroll scope", body = ErrorBody),
        (status = 404, description = "No such device in the workspace", body = ErrorBody)
    )
)]
pub(super) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<ReportsQuery>,
) -> Result<Json<ReportPage>, ApiError> {
    caller.require_admin("listing reports")?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )));
    }
    let after = query.after.unwrap_or(0);
    if after > i64::MAX as u64 {
        return Err(ApiError::bad_request("after is out of range"));
    }
    let not_found = || not_in_workspace("device", &id);
    let device_id: DeviceId = id.parse().map_err(|_| not_found())?;
    state
        .store
        .find_device(&caller.key.workspace_id, &device_id)
        .await?
        .ok_or_else(not_found)?;
    // One more than the page, to learn whether another page follows (as every list does).
    let mut reports = state
        .store
        .list_reports(&device_id, after, limit + 1)
        .await?;
    let next_after = if reports.len() > limit as usize {
        reports.truncate(limit as usize);
        reports.last().map(|r| r.seq)
    } else {
        None
    };
    Ok(Json(ReportPage {
        reports,
        next_after,
    }))
}
