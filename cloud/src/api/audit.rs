//! `GET /v1/audit`: the workspace's audit log, newest first (owner or admin role).

use axum::extract::State;
use axum::Json;
use heex_proto::api::{AuditPage, ErrorBody};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{paging, ApiQuery, AppState};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::store::{AuditFilter, SortValue};

/// `GET /v1/audit` filters; all optional, combined with AND.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    /// Exact actor (a member's email, or "system").
    pub(crate) actor: Option<String>,
    /// Exact action ("key.revoke"), or a prefix ending in '.' ("key.").
    pub(crate) action: Option<String>,
    /// Exact target (key id, member email or device id).
    pub(crate) target: Option<String>,
    /// Only events at or after this RFC 3339 time.
    pub(crate) since: Option<String>,
    /// Most events returned: 1 to 1000, 100 when omitted.
    pub(crate) limit: Option<u32>,
    /// The previous page's `next_after` (omit for the first page).
    pub(crate) after: Option<String>,
}

/// The name of the audit list in cursors.
const LIST: &str = "audit";

impl AuditQuery {
    fn filter(self) -> Result<AuditFilter, ApiError> {
        let since = paging::time_param("since", self.since)?;
        let page = paging::request(LIST, self.limit, self.after.as_deref())?;
        if page
            .after
            .as_ref()
            .is_some_and(|k| !matches!(k[..], [SortValue::Int(_)]))
        {
            return Err(ApiError::bad_request(paging::BAD_CURSOR));
        }
        let nonempty = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        Ok(AuditFilter {
            actor: nonempty(self.actor),
            action: nonempty(self.action),
            target: nonempty(self.target),
            since,
            page,
        })
    }
}

/// The workspace's audit events matching the filters, newest first.
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "audit",
    params(AuditQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "One page of matching events, newest first", body = AuditPage),
        (status = 400, description = "Bad filter, limit or cursor", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "Scope or role does not allow reading the audit log", body = ErrorBody)
    )
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    caller.require_manager("reading the audit log")?;
    let filter = query.filter()?;
    let events = state
        .store
        .audit_events(&caller.key.workspace_id, filter)
        .await?;
    Ok(Json(AuditPage {
        events: events.items,
        next_after: paging::next_after(LIST, events.next),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use heex_proto::api::{DEFAULT_PAGE_LIMIT as DEFAULT_LIMIT, MAX_PAGE_LIMIT as MAX_LIMIT};

    #[test]
    fn filters_are_checked() {
        let f = AuditQuery::default().filter().unwrap();
        assert_eq!(f.page.limit, DEFAULT_LIMIT);
        assert!(f.actor.is_none() && f.since.is_none());
        let q = AuditQuery {
            action: Some("key.".into()),
            actor: Some(" ".into()),
            since: Some("2026-05-01T10:00:00+02:00".into()),
            limit: Some(MAX_LIMIT),
            ..AuditQuery::default()
        };
        let f = q.filter().unwrap();
        assert_eq!(f.action.as_deref(), Some("key."));
        assert!(f.actor.is_none(), "blank filters are no filters");
        assert_eq!(f.since, Some(time::macros::datetime!(2026-05-01 08:00 UTC)));
        for bad in [
            AuditQuery {
                limit: Some(0),
                ..AuditQuery::default()
            },
            AuditQuery {
                limit: Some(MAX_LIMIT + 1),
                ..AuditQuery::default()
            },
            AuditQuery {
                since: Some("yesterday".into()),
                ..AuditQuery::default()
            },
        ] {
            assert!(bad.filter().is_err());
        }
    }
}
