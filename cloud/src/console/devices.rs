//! The console's Devices pages: the list (filters, live connected state, bulk revoke and
//! label), one device (facts, recent reports, rename, labels, revoke, delete), and what the
//! Add device page waits for. Every action calls the JSON API's handler for it.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use heex_proto::api::{DeviceInfo, DevicePage, DeviceSummary};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;

use super::handlers::{failure, viewer};
use super::pages::{self, devices as markup};
use super::Signed;
use crate::api::device_lifecycle::{self, UpdateDeviceRequest};
use crate::api::devices::{self, DevicesQuery, SummaryQuery};
use crate::api::{ApiJson, ApiQuery, AppState};
use crate::auth::Caller;
use crate::error::ApiError;

/// Devices per page of the list.
pub(super) const PAGE_SIZE: u32 = 50;
/// Most devices one bulk action applies to (a page's worth, with room).
pub(super) const MAX_BULK: usize = 200;
/// Recent reports a device's page shows.
const RECENT_REPORTS: u32 = 20;

/// The list's filters, order and position, as the filter form and the pager send them.
#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct ListForm {
    /// Text in the name or id.
    #[serde(default)]
    pub search: String,
    /// `connected`, `disconnected`, or empty for both.
    #[serde(default)]
    pub state: String,
    /// Empty (devices not revoked), `revoked`, or `all`.
    #[serde(default)]
    pub show: String,
    /// Label selectors, as `GET /v1/devices` takes them.
    #[serde(default)]
    pub label: String,
    /// Order, as `GET /v1/devices` takes it; `name` when empty.
    #[serde(default)]
    pub sort: String,
    /// The cursor of this page (empty: the first page).
    #[serde(default)]
    pub after: String,
    /// `rows`: only the part the page's script refreshes.
    #[serde(default)]
    part: String,
    /// What a bulk action just did (`revoked`, `labelled`, `unlabelled`, `deleted`).
    #[serde(default)]
    done: String,
    /// How many devices it changed.
    n: Option<u32>,
    /// How many it could not change.
    refused: Option<u32>,
}

impl ListForm {
    fn sort(&self) -> &str {
        match self.sort.trim() {
            "" => "name",
            s => s,
        }
    }

    fn api_query(&self) -> DevicesQuery {
        let text = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        DevicesQuery {
            limit: Some(PAGE_SIZE),
            after: text(&self.after),
            sort: Some(self.sort().to_owned()),
            connected: match self.state.as_str() {
                "connected" => Some(true),
                "disconnected" => Some(false),
                _ => None,
            },
            revoked: match self.show.as_str() {
                "revoked" => Some(true),
                "all" => None,
                _ => Some(false),
            },
            label: text(&self.label),
            search: text(&self.search),
            ..DevicesQuery::default()
        }
    }

    /// The query string of this list at `after` (empty: the first page), for links.
    pub(super) fn href(&self, after: Option<&str>, part: Option<&str>) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("search", self.search.trim()),
            ("state", self.state.as_str()),
            ("show", self.show.as_str()),
            ("label", self.label.trim()),
            ("sort", self.sort.trim()),
        ] {
            if !v.is_empty() {
                q.append_pair(k, v);
            }
        }
        if let Some(a) = after.filter(|a| !a.is_empty()) {
            q.append_pair("after", a);
        }
        if let Some(p) = part {
            q.append_pair("part", p);
        }
        let q = q.finish();
        if q.is_empty() {
            "/console/devices".to_owned()
        } else {
            format!("/console/devices?{q}")
        }
    }

    fn flash(&self) -> Option<String> {
        let n = self.n?;
        let s = if n == 1 { "" } else { "s" };
        let what = match self.done.as_str() {
            "revoked" => format!("{n} device{s} revoked; their sessions were closed."),
            "labelled" => format!("Label set on {n} device{s}."),
            "unlabelled" => format!("Label removed from {n} device{s}."),
            "deleted" => "The device was deleted.".to_owned(),
            _ => return None,
        };
        Some(match self.refused.unwrap_or(0) {
            0 => what,
            r => format!(
                "{what} {r} could not be changed (a member may change only the devices they \
                 enrolled; open a device to see why)."
            ),
        })
    }
}

/// What the list page shows: a page of devices (or why there is none) and the counts.
pub(super) struct Listed {
    /// The page, or the refusal of the filters.
    pub page: Result<DevicePage, ApiError>,
    /// Counts of the whole workspace.
    pub summary: DeviceSummary,
}

pub(super) async fn list_page(
    State(state): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Query(form): Query<ListForm>,
) -> Response {
    let caller = signed.caller;
    let page = devices::list(
        State(state.clone()),
        caller.clone(),
        ApiQuery(form.api_query()),
    )
    .await
    .map(|Json(p)| p);
    let summary = match devices::summary(
        State(state),
        caller.clone(),
        ApiQuery(SummaryQuery::default()),
    )
    .await
    {
        Ok(Json(s)) => s,
        Err(e) => return failure(&headers, e),
    };
    let listed = Listed { page, summary };
    let now = OffsetDateTime::now_utc();
    if form.part == "rows" {
        return pages::html_response(StatusCode::OK, markup::live_part(&listed, now));
    }
    let flash = form.flash();
    pages::html_response(
        StatusCode::OK,
        markup::list(&viewer(&caller), &listed, &form, flash.as_deref(), now),
    )
}

/// A bulk action's form: the selected ids (repeated `id` fields), the action, its label.
struct BulkForm {
    ids: Vec<String>,
    op: String,
    label: String,
    back: ListForm,
}

impl BulkForm {
    fn parse(body: &[u8]) -> Result<BulkForm, ApiError> {
        let mut form = BulkForm {
            ids: Vec::new(),
            op: String::new(),
            label: String::new(),
            back: ListForm::default(),
        };
        for (k, v) in form_urlencoded::parse(body) {
            match k.as_ref() {
                "id" => form.ids.push(v.into_owned()),
                "op" => form.op = v.into_owned(),
                "label" => form.label = v.into_owned(),
                "search" => form.back.search = v.into_owned(),
                "state" => form.back.state = v.into_owned(),
                "show" => form.back.show = v.into_owned(),
                "filter_label" => form.back.label = v.into_owned(),
                "sort" => form.back.sort = v.into_owned(),
                _ => {}
            }
        }
        if form.ids.is_empty() {
            return Err(ApiError::bad_request(
                "no device is selected: tick the devices to act on, then choose the action",
            ));
        }
        if form.ids.len() > MAX_BULK {
            return Err(ApiError::bad_request(format!(
                "{} devices are selected; one action applies to at most {MAX_BULK}",
                form.ids.len()
            )));
        }
        Ok(form)
    }
}

/// What a bulk label action does to each device's labels.
enum LabelChange {
    Set(String, String),
    Remove(String),
}

impl LabelChange {
    fn parse(op: &str, label: &str) -> Result<LabelChange, ApiError> {
        let label = label.trim();
        match op {
            "label" => match label.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    Ok(LabelChange::Set(k.trim().to_owned(), v.trim().to_owned()))
                }
                _ => Err(ApiError::bad_request(
                    "to set a label, write it as key=value (e.g. site=lyon)",
                )),
            },
            "unlabel" if !label.is_empty() && !label.contains('=') => {
                Ok(LabelChange::Remove(label.to_owned()))
            }
            "unlabel" => Err(ApiError::bad_request(
                "to remove a label, write its key only (e.g. site)",
            )),
            _ => Err(ApiError::bad_request(
                "choose an action: revoke, set a label, or remove a label",
            )),
        }
    }

    /// The labels after the change, or `None` when nothing changes.
    fn apply(&self, labels: &BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
        let mut new = labels.clone();
        match self {
            LabelChange::Set(k, v) => {
                new.insert(k.clone(), v.clone());
            }
            LabelChange::Remove(k) => {
                new.remove(k);
            }
        }
        (new != *labels).then_some(new)
    }
}

pub(super) async fn bulk(
    State(state): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = match BulkForm::parse(&body) {
        Ok(f) => f,
        Err(e) => return failure(&headers, e),
    };
    let caller = signed.caller;
    let (done, label) = if form.op == "revoke" {
        ("revoked", None)
    } else {
        match LabelChange::parse(&form.op, &form.label) {
            Ok(change) => (
                if matches!(change, LabelChange::Set(..)) {
                    "labelled"
                } else {
                    "unlabelled"
                },
                Some(change),
            ),
            Err(e) => return failure(&headers, e),
        }
    };
    let (mut changed, mut refused) = (0u32, 0u32);
    for id in form.ids {
        let outcome = match &label {
            None => device_lifecycle::revoke(State(state.clone()), caller.clone(), Path(id))
                .await
                .map(|_| true),
            Some(change) => relabel(&state, &caller, id, change).await,
        };
        match outcome {
            Ok(true) => changed += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(error = %e.body().message, "bulk action refused for one device");
                refused += 1;
            }
        }
    }
    let back = form.back.href(None, None);
    let sep = if back.contains('?') { '&' } else { '?' };
    Redirect::to(&format!(
        "{back}{sep}done={done}&n={changed}&refused={refused}"
    ))
    .into_response()
}

/// Applies `change` to one device's labels; false when they already were so.
async fn relabel(
    state: &AppState,
    caller: &Caller,
    id: String,
    change: &LabelChange,
) -> Result<bool, ApiError> {
    let Json(device) =
        devices::show(State(state.clone()), caller.clone(), Path(id.clone())).await?;
    let Some(labels) = change.apply(&device.labels) else {
        return Ok(false);
    };
    let req = UpdateDeviceRequest {
        name: None,
        labels: Some(labels),
    };
    let _updated =
        device_lifecycle::update(State(state.clone()), caller.clone(), Path(id), ApiJson(req))
            .await?;
    Ok(true)
}

#[derive(Debug, Deserialize, Default)]
pub(super) struct DetailQuery {
    #[serde(default)]
    part: String,
    #[serde(default)]
    done: String,
}

fn detail_flash(done: &str) -> Option<&'static str> {
    match done {
        "renamed" => Some("The device was renamed."),
        "labelled" => Some("The labels were saved."),
        "revoked" => Some("The device was revoked; its session was closed."),
        _ => None,
    }
}

pub(super) async fn detail_page(
    State(state): State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
    Query(q): Query<DetailQuery>,
) -> Response {
    let caller = signed.caller;
    let device = match devices::show(State(state.clone()), caller.clone(), Path(id)).await {
        Ok(Json(d)) => d,
        Err(e) => return pages::api_error(e),
    };
    let now = OffsetDateTime::now_utc();
    if q.part == "status" {
        return pages::html_response(StatusCode::OK, markup::status_part(&device, now));
    }
    let reports = match recent_reports(&state, &device).await {
        Ok(r) => r,
        Err(e) => return pages::api_error(e),
    };
    pages::html_response(
        StatusCode::OK,
        markup::detail(
            &viewer(&caller),
            &device,
            &reports,
            detail_flash(&q.done),
            now,
        ),
    )
}

/// The device's latest reports, newest first.
async fn recent_reports(
    state: &AppState,
    device: &DeviceInfo,
) -> Result<Vec<heex_proto::api::ReportInfo>, ApiError> {
    let highest = state.store.highest_report_seq(&device.id).await?;
    let after = highest.saturating_sub(u64::from(RECENT_REPORTS));
    let mut reports = state
        .store
        .list_reports(&device.id, after, RECENT_REPORTS)
        .await?;
    reports.reverse();
    Ok(reports)
}

fn back_to(id: &str, done: &str) -> Response {
    Redirect::to(&format!(
        "/console/devices/{}?done={done}",
        form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
    ))
    .into_response()
}

#[derive(Deserialize)]
pub(super) struct RenameForm {
    name: String,
}

pub(super) async fn rename(
    State(state): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<RenameForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return failure(&headers, ApiError::bad_request("give the device a name"));
    };
    let req = UpdateDeviceRequest {
        name: Some(form.name),
        labels: None,
    };
    match device_lifecycle::update(State(state), signed.caller, Path(id.clone()), ApiJson(req))
        .await
    {
        Ok(_) => back_to(&id, "renamed"),
        Err(e) => failure(&headers, e),
    }
}

#[derive(Deserialize)]
pub(super) struct LabelsForm {
    #[serde(default)]
    labels: String,
}

/// Labels written one per line (or comma-separated) as `key=value`; a bare `key` has an
/// empty value.
pub(super) fn parse_labels(text: &str) -> BTreeMap<String, String> {
    text.split(['\n', ','])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.trim().to_owned(), v.trim().to_owned()),
            None => (l.to_owned(), String::new()),
        })
        .collect()
}

pub(super) async fn set_labels(
    State(state): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<LabelsForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return failure(
            &headers,
            ApiError::bad_request("the labels form is malformed"),
        );
    };
    let req = UpdateDeviceRequest {
        name: None,
        labels: Some(parse_labels(&form.labels)),
    };
    match device_lifecycle::update(State(state), signed.caller, Path(id.clone()), ApiJson(req))
        .await
    {
        Ok(_) => back_to(&id, "labelled"),
        Err(e) => failure(&headers, e),
    }
}

pub(super) async fn revoke(
    State(state): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    match device_lifecycle::revoke(State(state), signed.caller, Path(id.clone())).await {
        Ok(_) => back_to(&id, "revoked"),
        Err(e) => failure(&headers, e),
    }
}

pub(super) async fn delete(
    State(state): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    match device_lifecycle::delete(State(state), signed.caller, Path(id)).await {
        Ok(_) => Redirect::to("/console/devices?show=all&done=deleted&n=1").into_response(),
        Err(e) => failure(&headers, e),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct WaitQuery {
    /// The enroll key whose devices the Add device page waits for.
    key: String,
    /// Unix time the page was shown: only devices enrolled since count.
    since: i64,
}

/// `GET /console/add-device/wait`: the devices enrolled with a key since the Add device
/// page was shown, newest first, with whether each is connected (JSON for its script).
pub(super) async fn wait_for_device(
    State(state): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    query: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return failure(
            &headers,
            ApiError::bad_request("give the key id and the time the page was shown"),
        );
    };
    let Ok(since) = OffsetDateTime::from_unix_timestamp(q.since) else {
        return failure(&headers, ApiError::bad_request("since is out of range"));
    };
    let query = DevicesQuery {
        limit: Some(10),
        sort: Some("-enrolled".to_owned()),
        key: Some(q.key),
        ..DevicesQuery::default()
    };
    match devices::list(State(state), signed.caller, ApiQuery(query)).await {
        Ok(Json(page)) => {
            let devices: Vec<_> = page
                .devices
                .iter()
                .filter(|d| d.enrolled_at >= since)
                .map(|d| {
                    json!({
                        "id": d.id,
                        "name": d.name,
                        "connected": d.connected,
                        "href": format!("/console/devices/{}", d.id),
                    })
                })
                .collect();
            Json(json!({ "devices": devices })).into_response()
        }
        Err(e) => failure(&headers, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_read_one_per_line_or_comma_separated() {
        let l = parse_labels("site=lyon\n  gpu \r\nrole = arm, env=prod=blue\n\n");
        assert_eq!(
            l.into_iter().collect::<Vec<_>>(),
            [
                ("env".to_owned(), "prod=blue".to_owned()),
                ("gpu".to_owned(), String::new()),
                ("role".to_owned(), "arm".to_owned()),
                ("site".to_owned(), "lyon".to_owned()),
            ]
        );
        assert!(parse_labels("  \n ,").is_empty());
    }

    #[test]
    fn bulk_label_changes_parse_and_apply() {
        let mut labels = BTreeMap::from([("site".to_owned(), "lyon".to_owned())]);
        let set = LabelChange::parse("label", " env = prod ").unwrap();
        labels = set.apply(&labels).unwrap();
        assert_eq!(labels["env"], "prod");
        assert!(set.apply(&labels).is_none(), "already so: nothing to write");
        let remove = LabelChange::parse("unlabel", "site").unwrap();
        assert!(!remove.apply(&labels).unwrap().contains_key("site"));
        for (op, label) in [
            ("label", "site"),
            ("label", "=x"),
            ("unlabel", "a=b"),
            ("unlabel", ""),
            ("drop", "x"),
        ] {
            assert!(LabelChange::parse(op, label).is_err(), "{op} {label}");
        }
    }

    #[test]
    fn bulk_forms_need_a_selection_of_bounded_size() {
        assert!(BulkForm::parse(b"op=revoke").is_err());
        let many: String = (0..=MAX_BULK).map(|i| format!("id=d{i}&")).collect();
        assert!(BulkForm::parse(many.as_bytes()).is_err());
        let f = BulkForm::parse(b"id=a&id=b&op=label&label=site%3Dlyon&filter_label=gpu").unwrap();
        assert_eq!(f.ids, ["a", "b"]);
        assert_eq!(f.label, "site=lyon");
        assert_eq!(f.back.href(None, None), "/console/devices?label=gpu");
    }
}
