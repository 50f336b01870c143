//! `POST /v1/keys` (create) and `POST /v1/keys/{id}/revoke`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use heex_proto::api::{CreateKeyRequest, CreateKeyResponse, KeyInfo, Scope};
use heex_proto::{ApiKey, KeyId};
use time::OffsetDateTime;

use super::{check_name, ApiJson, AppState};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::store::NewKey;

/// Lifetime of a key when the request names none.
pub const DEFAULT_KEY_LIFETIME: time::Duration = time::Duration::days(90);
/// Longest lifetime a key may have.
pub const MAX_KEY_LIFETIME: time::Duration = time::Duration::days(365);
/// Longest key name, in characters.
pub const MAX_KEY_NAME: usize = 64;

/// Creates a key owned by the caller (admin scope). The response is the only time the full
/// key is sent.
pub(super) async fn create(
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
    let now = OffsetDateTime::now_utc();
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
    let info = KeyInfo {
        id: new.id.clone(),
        name: new.name.clone(),
        scope: new.scope,
        owner: owner.member_email.clone(),
        created_at: truncate(new.created_at),
        expires_at: truncate(new.expires_at),
        last_used_at: None,
        revoked_at: None,
        revoked_by: None,
    };
    let key = ApiKey::derive(state.secret.as_bytes(), new.id.clone());
    state.store.create_key(new).await?;
    tracing::info!(key = %info.id, scope = info.scope.as_str(), by = %owner.id, "API key created");
    Ok((
        StatusCode::CREATED,
        Json(CreateKeyResponse {
            key: key.expose(),
            info,
        }),
    ))
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

/// Times are stored in whole seconds; answer with what will be read back later.
fn truncate(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

/// Revokes a key of the caller's workspace. Allowed with admin scope, or for the key's own
/// owner. Revoking a revoked key returns it unchanged.
pub(super) async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<KeyInfo>, ApiError> {
    let not_found = || ApiError::not_found(format!("no API key {id} in this workspace"));
    let key_id: KeyId = id.parse().map_err(|_| not_found())?;
    let target = state
        .store
        .find_key(&key_id)
        .await?
        .filter(|k| k.workspace_id == caller.key.workspace_id)
        .ok_or_else(not_found)?;
    if caller.key.scope != Scope::Admin && target.member_id != caller.key.member_id {
        return Err(ApiError::forbidden(format!(
            "API key {} may revoke only its owner's keys; revoking others' keys needs scope admin",
            caller.key.id
        )));
    }
    let now = OffsetDateTime::now_utc();
    let revoked = state
        .store
        .revoke_key(&key_id, &caller.key.member_id, now)
        .await?
        .ok_or_else(not_found)?;
    tracing::info!(key = %key_id, by = %caller.key.id, "API key revoked");
    Ok(Json(revoked.info()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
