//! `/v1/keys`: create, list, copy, revoke and rotate API keys.
//!
//! A member manages their own keys with an admin-scope key; owners and admins may also list
//! and revoke everyone's. Copy and rotate hand out key material, so they work only on the
//! caller's own keys: anyone else's answer 404 as if they did not exist.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use heex_proto::api::{
    CopyKeyResponse, CreateKeyRequest, CreateKeyResponse, ErrorBody, KeyInfo, KeyPage,
    RotateKeyRequest,
};
use heex_proto::{ApiKey, KeyId};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use utoipa::IntoParams;

use super::{
    audit_entry, check_name, not_in_workspace, paging, whole_seconds, ApiJson, ApiQuery, AppState,
    OptionalJson,
};
use crate::auth::{rfc3339, Caller};
use crate::error::ApiError;
use crate::store::access::{self, Need};
use crate::store::{AuditAction, KeyRecord, NewKey, Rotation, StoreError};

/// Lifetime of a key when the request names none.
pub(crate) const DEFAULT_KEY_LIFETIME: time::Duration = time::Duration::days(90);
/// Longest lifetime a key may have.
pub(crate) const MAX_KEY_LIFETIME: time::Duration = time::Duration::days(365);
/// Longest key name, in characters.
pub(crate) const MAX_KEY_NAME: usize = 64;
/// Longest overlap window of a rotation.
pub(crate) const MAX_ROTATION_OVERLAP: time::Duration = time::Duration::days(30);

/// Creates a key owned by the caller (admin scope). The response is the only time the full
/// key is sent unasked.
#[utoipa::path(
    post,
    path = "/v1/keys",
    tag = "keys",
    request_body = CreateKeyRequest,
    security(("api_key" = [])),
    responses(
        (status = 201, description = "The new key, in full, with its metadata", body = CreateKeyResponse),
        (status = 400, description = "Bad name, expiry or max_uses", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "The key's scope does not allow this", body = ErrorBody)
    )
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateKeyRequest>,
) -> Result<(StatusCode, Json<CreateKeyResponse>), ApiError> {
    caller.require_admin("creating keys")?;
    check_name("name", &req.name, MAX_KEY_NAME)?;
    let lifetime = lifetime(&req)?;
    if req.max_uses.is_some_and(|m| m == 0 || m > i64::MAX as u64) {
        return Err(ApiError::bad_request(
            "max_uses must be at least 1 (omit it for unlimited enrollments)",
        ));
    }
    let now = whole_seconds(OffsetDateTime::now_utc());
    let owner = &caller.key;
    let new = NewKey {
        id: KeyId::generate(),
        workspace_id: owner.workspace_id.clone(),
        member_id: owner.member_id.clone(),
        name: req.name.trim().to_owned(),
        scope: req.scope,
        created_at: now,
        expires_at: now + lifetime,
        max_uses: req.max_uses,
    };
    let info = new_key_info(&new, &owner.member_email);
    let audit = audit_entry(
        &caller,
        Need::Admin,
        "creating keys",
        now,
        AuditAction::KeyCreate,
        new.id.as_str(),
        json!({
            "name": new.name,
            "scope": new.scope,
            "expires_at": rfc3339(new.expires_at),
            "max_uses": new.max_uses,
        }),
    );
    let key = ApiKey::derive(state.secret.as_bytes(), new.id.clone());
    state.store.create_key(new, audit).await?;
    tracing::info!(key = %info.id, scope = info.scope.as_str(), by = %owner.id, "API key created");
    Ok((
        StatusCode::CREATED,
        Json(CreateKeyResponse {
            key: key.expose().into(),
            info,
        }),
    ))
}

/// The metadata of a key just created.
fn new_key_info(new: &NewKey, owner: &str) -> KeyInfo {
    KeyInfo {
        id: new.id.clone(),
        name: new.name.clone(),
        scope: new.scope,
        owner: owner.to_owned(),
        created_at: new.created_at,
        expires_at: new.expires_at,
        last_used_at: None,
        revoked_at: None,
        revoked_by: None,
    }
}

/// The requested lifetime: seconds take precedence over days; default 90 days; at most
/// 365 days.
fn lifetime(req: &CreateKeyRequest) -> Result<time::Duration, ApiError> {
    let lifetime = match (req.expires_in_secs, req.expires_in_days) {
        (Some(0), _) => return Err(ApiError::bad_request("expires_in_secs must be at least 1")),
        (Some(secs), _) => time::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX)),
        (None, Some(0)) => return Err(ApiError::bad_request("expires_in_days must be at least 1")),
        (None, Some(days)) => time::Duration::days(i64::from(days)),
        (None, None) => DEFAULT_KEY_LIFETIME,
    };
    if lifetime > MAX_KEY_LIFETIME {
        return Err(ApiError::bad_request(
            "a key may live at most 365 days; rotate it before it expires",
        ));
    }
    Ok(lifetime)
}

/// `GET /v1/keys` query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListKeysQuery {
    /// List every key of the workspace, not only the caller's (owner or admin role).
    #[serde(default)]
    pub(crate) all: bool,
    /// Most keys returned: 1 to 1000, 100 when omitted.
    pub(crate) limit: Option<u32>,
    /// The previous page's `next_after` (omit for the first page).
    pub(crate) after: Option<String>,
}

/// Lists the caller's own keys, or with `all=true` (owners and admins) every key of the
/// workspace, revoked and expired ones included, oldest first.
#[utoipa::path(
    get,
    path = "/v1/keys",
    tag = "keys",
    params(ListKeysQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "One page of keys, with status and uses", body = KeyPage),
        (status = 400, description = "Bad query, limit or cursor", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "Enroll scope, or all=true without the owner or admin role", body = ErrorBody)
    )
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListKeysQuery>,
) -> Result<Json<KeyPage>, ApiError> {
    caller.require_admin("listing keys")?;
    if query.all && !caller.has_manager_role() {
        return Err(caller.role_refusal("listing every member's keys (all=true)"));
    }
    // Cursors of the caller's own list and of the whole workspace's are told apart.
    let list = if query.all { "keys:all" } else { "keys:mine" };
    let page = paging::request(list, query.limit, query.after.as_deref())?;
    let owner = (!query.all).then_some(&caller.key.member_id);
    let keys = state
        .store
        .list_keys(&caller.key.workspace_id, owner, page)
        .await?;
    let now = OffsetDateTime::now_utc();
    Ok(Json(KeyPage {
        keys: keys.items.iter().map(|k| k.list_entry(now)).collect(),
        next_after: paging::next_after(list, keys.next),
    }))
}

/// The key `id` if it belongs to the caller's member; 404 otherwise, whoever owns it.
async fn own_key(state: &AppState, caller: &Caller, id: &str) -> Result<KeyRecord, ApiError> {
    let key = workspace_key(state, caller, id).await?;
    if !caller.owns(&key) {
        return Err(not_in_workspace("API key of yours", id));
    }
    Ok(key)
}

/// The key `id` of the caller's workspace; 404 for a malformed id, an unknown key, or
/// another workspace's key.
async fn workspace_key(state: &AppState, caller: &Caller, id: &str) -> Result<KeyRecord, ApiError> {
    let not_found = || not_in_workspace("API key", id);
    let key_id: KeyId = id.parse().map_err(|_| not_found())?;
    state
        .store
        .find_key(&key_id)
        .await?
        .filter(|k| k.workspace_id == caller.key.workspace_id)
        .ok_or_else(not_found)
}

/// 403 when `key` is no longer usable: there is nothing to copy or rotate.
fn require_usable(key: &KeyRecord, now: OffsetDateTime, verb: &str) -> Result<(), ApiError> {
    if let Some(at) = key.revoked_at.filter(|_| key.is_revoked(now)) {
        return Err(ApiError::forbidden(format!(
            "API key {} was revoked on {}; it cannot be {verb}: create a new key",
            key.id,
            rfc3339(at)
        )));
    }
    if key.expires_at <= now {
        return Err(ApiError::forbidden(format!(
            "API key {} expired on {}; it cannot be {verb}: create a new key",
            key.id,
            rfc3339(key.expires_at)
        )));
    }
    Ok(())
}

/// Re-derives one of the caller's own keys from the server secret (nothing is stored).
#[utoipa::path(
    post,
    path = "/v1/keys/{id}/copy",
    tag = "keys",
    params(("id" = KeyId, Path, description = "Key id")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The full key and its metadata", body = CopyKeyResponse),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "Enroll scope, or the key is revoked or expired", body = ErrorBody),
        (status = 404, description = "No such key of the caller's", body = ErrorBody)
    )
)]
pub(crate) async fn copy(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<CopyKeyResponse>, ApiError> {
    caller.require_admin("copying keys")?;
    let key = own_key(&state, &caller, &id).await?;
    let now = OffsetDateTime::now_utc();
    require_usable(&key, now, "copied")?;
    let audit = audit_entry(
        &caller,
        Need::Admin,
        "copying keys",
        now,
        AuditAction::KeyCopy,
        key.id.as_str(),
        json!({"name": key.name}),
    );
    state.store.record_audit(audit).await?;
    tracing::info!(key = %key.id, "API key copied");
    Ok(Json(CopyKeyResponse {
        key: ApiKey::derive(state.secret.as_bytes(), key.id.clone())
            .expose()
            .into(),
        info: key.info(),
    }))
}

/// Revokes a key at once. Allowed on the caller's own keys (any key may revoke itself, so a
/// leaked enroll key can be killed with itself) and, for owners and admins, on other
/// members' keys of the workspace; only an owner may revoke an owner's key. Revoking a
/// revoked key returns it unchanged.
#[utoipa::path(
    post,
    path = "/v1/keys/{id}/revoke",
    tag = "keys",
    params(("id" = KeyId, Path, description = "Key id")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The key as it is now", body = KeyInfo),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "Scope or role does not allow revoking this key", body = ErrorBody),
        (status = 404, description = "No such key in the workspace", body = ErrorBody)
    )
)]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<KeyInfo>, ApiError> {
    let target = workspace_key(&state, &caller, &id).await?;
    let now = whole_seconds(OffsetDateTime::now_utc());
    // Decided here to answer early, and again by the store inside the revocation.
    access::revoke_key(&caller.key, &target, OffsetDateTime::now_utc())?;
    let audit = audit_entry(
        &caller,
        Need::Usable,
        "revoking keys",
        now,
        AuditAction::KeyRevoke,
        target.id.as_str(),
        json!({"name": target.name, "owner": target.member_email}),
    );
    let revoked = state
        .store
        .revoke_key(&target.id, &caller.key.member_id, now, audit)
        .await?
        .ok_or_else(|| not_in_workspace("API key", &id))?;
    tracing::info!(key = %target.id, by = %caller.key.id, "API key revoked");
    Ok(Json(revoked.info()))
}

/// Replaces one of the caller's own keys: a new key with the same name, scope and owner and
/// a fresh expiry (the old key's lifetime). The old key stays valid for `overlap_secs`, then
/// is revoked automatically (at once when there is no overlap).
#[utoipa::path(
    post,
    path = "/v1/keys/{id}/rotate",
    tag = "keys",
    params(("id" = KeyId, Path, description = "Key id")),
    request_body(content = Option<RotateKeyRequest>, description = "Optional: the overlap window"),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "The new key, in full, with its metadata", body = CreateKeyResponse),
        (status = 400, description = "Overlap too long, or the key was already rotated", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "Enroll scope, or the key is revoked or expired", body = ErrorBody),
        (status = 404, description = "No such key of the caller's", body = ErrorBody)
    )
)]
pub(crate) async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<RotateKeyRequest>,
) -> Result<(StatusCode, Json<CreateKeyResponse>), ApiError> {
    caller.require_admin("rotating keys")?;
    let overlap = overlap(&req)?;
    let old = own_key(&state, &caller, &id).await?;
    let now = whole_seconds(OffsetDateTime::now_utc());
    require_usable(&old, now, "rotated")?;
    if let (Some(_), Some(new)) = (old.revoked_at, &old.replaced_by) {
        return Err(ApiError::bad_request(format!(
            "API key {} was already rotated to {new}; rotate {new} instead",
            old.id
        )));
    }
    let new = NewKey {
        id: KeyId::generate(),
        workspace_id: old.workspace_id.clone(),
        member_id: old.member_id.clone(),
        name: old.name.clone(),
        scope: old.scope,
        created_at: now,
        expires_at: now + (old.expires_at - old.created_at),
        max_uses: old.max_uses,
    };
    let old_revoked_at = now + overlap;
    let audit = vec![
        audit_entry(
            &caller,
            Need::Admin,
            "rotating keys",
            now,
            AuditAction::KeyRotate,
            old.id.as_str(),
            json!({
                "replaced_by": new.id,
                "revoked_at": rfc3339(old_revoked_at),
                "overlap_secs": overlap.whole_seconds(),
            }),
        ),
        audit_entry(
            &caller,
            Need::Admin,
            "rotating keys",
            now,
            AuditAction::KeyCreate,
            new.id.as_str(),
            json!({
                "name": new.name,
                "scope": new.scope,
                "expires_at": rfc3339(new.expires_at),
                "max_uses": new.max_uses,
                "rotated_from": old.id,
            }),
        ),
    ];
    let key = ApiKey::derive(state.secret.as_bytes(), new.id.clone());
    let rotation = Rotation {
        old: old.id.clone(),
        new,
        old_revoked_at,
        by: caller.key.member_id.clone(),
        at: now,
        audit,
    };
    let created = match state.store.rotate_key(rotation).await {
        Ok(created) => created,
        Err(StoreError::KeyUnusable(_)) => {
            return Err(ApiError::bad_request(format!(
                "API key {} was revoked, rotated or expired meanwhile; `GET /v1/keys` shows it",
                old.id
            )))
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(old = %old.id, new = %created.id, overlap_secs = overlap.whole_seconds(), "API key rotated");
    Ok((
        StatusCode::CREATED,
        Json(CreateKeyResponse {
            key: key.expose().into(),
            info: created.info(),
        }),
    ))
}

/// The requested overlap window: 0 when absent, at most [`MAX_ROTATION_OVERLAP`].
fn overlap(req: &RotateKeyRequest) -> Result<time::Duration, ApiError> {
    let secs = req.overlap_secs.unwrap_or(0);
    let overlap = time::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX));
    if overlap > MAX_ROTATION_OVERLAP {
        return Err(ApiError::bad_request(
            "overlap_secs may be at most 30 days (2592000 seconds)",
        ));
    }
    Ok(overlap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use heex_proto::api::Scope;

    fn req(secs: Option<u64>, days: Option<u32>) -> CreateKeyRequest {
        CreateKeyRequest {
            name: "ci".into(),
            scope: Scope::Enroll,
            expires_in_days: days,
            expires_in_secs: secs,
            max_uses: None,
        }
    }

    #[test]
    fn lifetimes() {
        assert_eq!(lifetime(&req(None, None)).unwrap(), DEFAULT_KEY_LIFETIME);
        assert_eq!(
            lifetime(&req(None, Some(7))).unwrap(),
            time::Duration::days(7)
        );
        assert_eq!(
            lifetime(&req(Some(2), Some(7))).unwrap(),
            time::Duration::seconds(2)
        );
        assert_eq!(lifetime(&req(None, Some(365))).unwrap(), MAX_KEY_LIFETIME);
        assert!(lifetime(&req(None, Some(366))).is_err());
        assert!(lifetime(&req(Some(0), None)).is_err());
        assert!(lifetime(&req(None, Some(0))).is_err());
        assert!(lifetime(&req(Some(u64::MAX), None)).is_err());
    }

    #[test]
    fn overlaps() {
        let r = |s| RotateKeyRequest { overlap_secs: s };
        assert_eq!(overlap(&r(None)).unwrap(), time::Duration::ZERO);
        assert_eq!(overlap(&r(Some(3600))).unwrap(), time::Duration::hours(1));
        assert_eq!(
            overlap(&r(Some(30 * 86_400))).unwrap(),
            MAX_ROTATION_OVERLAP
        );
        assert!(overlap(&r(Some(30 * 86_400 + 1))).is_err());
        assert!(overlap(&r(Some(u64::MAX))).is_err());
    }
}
