//! `/v1/devices`: the workspace's devices, paged and filtered, and their counts (admin
//! scope).

use axum::extract::{Path, State};
use axum::Json;
use heex_proto::api::{DeviceInfo, DevicePage, DeviceSummary, ErrorBody};
use heex_proto::{DeviceId, KeyId};
use serde::Deserialize;
use time::OffsetDateTime;
use utoipa::IntoParams;

use super::{not_in_workspace, paging, ApiQuery, AppState};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::store::{DeviceQuery, DeviceSort, LabelSelector};

/// `GET /v1/devices` filters, order and page; every filter given must hold.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct DevicesQuery {
    /// Most devices returned: 1 to 1000, 100 when omitted.
    pub(crate) limit: Option<u32>,
    /// The previous page's `next_after` (omit for the first page).
    pub(crate) after: Option<String>,
    /// Order: `enrolled` (default), `name` or `last_seen`; a leading `-` reverses it.
    pub(crate) sort: Option<String>,
    /// `true`: only devices with a live session; `false`: only those without.
    pub(crate) connected: Option<bool>,
    /// `true`: only revoked devices; `false`: only devices not revoked.
    pub(crate) revoked: Option<bool>,
    /// Label selectors, comma-separated, all of which must hold: `site=lyon`,
    /// `env!=prod` (absent or another value), `gpu` (set), `!retired` (not set).
    pub(crate) label: Option<String>,
    /// Text in the device's name or id (ASCII letters match either case).
    pub(crate) search: Option<String>,
    /// Only devices enrolled by this member (email or member id).
    pub(crate) enrolled_by: Option<String>,
    /// Only devices enrolled with this API key (key id).
    pub(crate) key: Option<String>,
    /// Only devices whose certificate expires before this RFC 3339 time.
    pub(crate) cert_expires_before: Option<String>,
    /// Only devices not heard from since this RFC 3339 time (never-seen ones included).
    pub(crate) last_seen_before: Option<String>,
}

/// Longest `search` text accepted.
const MAX_SEARCH_CHARS: usize = 200;

impl DevicesQuery {
    fn query(self) -> Result<(DeviceQuery, String), ApiError> {
        let sort_text = self.sort.as_deref().map(str::trim).unwrap_or("enrolled");
        let (descending, name) = match sort_text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, sort_text),
        };
        let sort: DeviceSort = name.parse().map_err(ApiError::bad_request)?;
        // The cursor is bound to the order (direction included): a position in one order
        // means nothing in another.
        let list = format!(
            "devices:{}{}",
            if descending { "-" } else { "" },
            sort.as_str()
        );
        let page = paging::request(&list, self.limit, self.after.as_deref())?;
        if page.after.as_ref().is_some_and(|k| !sort.fits(k)) {
            return Err(ApiError::bad_request(paging::BAD_CURSOR));
        }
        let labels = match self.label.as_deref() {
            Some(l) => LabelSelector::parse_list(l).map_err(ApiError::bad_request)?,
            None => Vec::new(),
        };
        let search = nonempty(self.search);
        if search
            .as_ref()
            .is_some_and(|s| s.chars().count() > MAX_SEARCH_CHARS)
        {
            return Err(ApiError::bad_request(format!(
                "search is longer than {MAX_SEARCH_CHARS} characters"
            )));
        }
        let enrolled_with_key = nonempty(self.key)
            .map(|k| {
                k.parse::<KeyId>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "key {k:?} is not an API key id (the heex_… key's id, as `heex keys list` shows)"
                    ))
                })
            })
            .transpose()?;
        let query = DeviceQuery {
            connected: self.connected,
            revoked: self.revoked,
            labels,
            search,
            enrolled_by: nonempty(self.enrolled_by),
            enrolled_with_key,
            cert_expires_before: paging::time_param(
                "cert_expires_before",
                self.cert_expires_before,
            )?,
            last_seen_before: paging::time_param("last_seen_before", self.last_seen_before)?,
            sort,
            descending,
            page,
        };
        Ok((query, list))
    }
}

fn nonempty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// One page of the caller's workspace's devices matching the filters, with whether each is
/// connected now.
#[utoipa::path(
    get,
    path = "/v1/devices",
    tag = "devices",
    params(DevicesQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "One page of devices", body = DevicePage),
        (status = 400, description = "Bad filter, order, limit or cursor", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "Enroll scope", body = ErrorBody)
    )
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<DevicesQuery>,
) -> Result<Json<DevicePage>, ApiError> {
    caller.require_admin("listing devices")?;
    let (query, list) = query.query()?;
    let page = state
        .store
        .query_devices(&caller.key.workspace_id, query)
        .await?;
    Ok(Json(DevicePage {
        devices: page
            .items
            .iter()
            .map(|d| d.live_info(&state.registry))
            .collect(),
        next_after: paging::next_after(&list, page.next),
    }))
}

/// `GET /v1/devices/summary` options.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct SummaryQuery {
    /// Days ahead in which a certificate expiring counts as expiring soon: 0 to 3650, 7
    /// when omitted.
    pub(crate) expiring_within_days: Option<u32>,
}

/// Days `expiring_soon` looks ahead by default.
pub(crate) const DEFAULT_EXPIRING_WITHIN_DAYS: u32 = 7;

/// Counts of the caller's workspace's devices, for dashboards: computed by the store
/// without listing devices.
#[utoipa::path(
    get,
    path = "/v1/devices/summary",
    tag = "devices",
    params(SummaryQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Device counts", body = DeviceSummary),
        (status = 400, description = "Bad window", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "Enroll scope", body = ErrorBody)
    )
)]
pub(crate) async fn summary(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<SummaryQuery>,
) -> Result<Json<DeviceSummary>, ApiError> {
    caller.require_admin("counting devices")?;
    let days = query
        .expiring_within_days
        .unwrap_or(DEFAULT_EXPIRING_WITHIN_DAYS);
    if days > 3650 {
        return Err(ApiError::bad_request(
            "expiring_within_days must be 0 to 3650",
        ));
    }
    let within = time::Duration::days(i64::from(days));
    let counts = state
        .store
        .device_counts(&caller.key.workspace_id, OffsetDateTime::now_utc() + within)
        .await?;
    Ok(Json(DeviceSummary {
        total: counts.total,
        connected: counts.connected,
        expiring_soon: counts.expiring,
        revoked: counts.revoked,
        expiring_within_secs: u64::from(days) * 86_400,
    }))
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
pub(crate) async fn show(
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
