//! API key authentication and scope checks.
//!
//! Order matters: the caller must prove possession of a key before the server says anything
//! about it. A missing, malformed (checksum first), unknown or inauthentic key gets a plain
//! 401 `unauthorized`; only an authentic key hears that it was revoked (when, by whom) or
//! expired (when).
//!
//! What an authenticated request may do is the key's scope intersected with its owner's
//! role: an `enroll` key may only enroll and ask who it is (and revoke itself, so a leaked key
//! can always be killed with itself); an `admin` key may manage its owner's own keys, list
//! members and devices, and enroll; managing members, other members' keys and reading the
//! audit log also needs the `owner` or `admin` role.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use heex_proto::api::Scope;
use heex_proto::ApiKey;
use time::OffsetDateTime;

use crate::context::AppState;
use crate::error::ApiError;
use crate::store::access::{self, Need};
use crate::store::{CallerCheck, KeyRecord, Store};
#[cfg(test)]
use crate::store::{Revocation, Role};

/// The authenticated caller of a request: the key it presented and that key's owner.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's record (owner, workspace, scope, ...).
    pub key: KeyRecord,
}

impl Caller {
    /// Requires the key's scope to be one of `allowed`.
    pub fn require_scope(&self, allowed: &[Scope], action: &str) -> Result<(), ApiError> {
        Ok(access::require_scope(&self.key, allowed, action)?)
    }

    /// Requires admin scope.
    pub fn require_admin(&self, action: &str) -> Result<(), ApiError> {
        self.require_scope(&[Scope::Admin], action)
    }

    /// True when the caller's role lets them manage the workspace (owner or admin).
    pub fn has_manager_role(&self) -> bool {
        access::is_manager(&self.key)
    }

    /// Requires admin scope and the owner or admin role.
    pub fn require_manager(&self, action: &str) -> Result<(), ApiError> {
        self.require_admin(action)?;
        if self.has_manager_role() {
            return Ok(());
        }
        Err(self.role_refusal(action))
    }

    /// The 403 for a member whose role does not allow `action`.
    pub fn role_refusal(&self, action: &str) -> ApiError {
        access::role_refusal(&self.key, action).into()
    }

    /// True when `key` belongs to the caller's member.
    pub fn owns(&self, key: &KeyRecord) -> bool {
        access::owns(&self.key, key)
    }

    /// What a store write made on the caller's behalf checks again inside its transaction:
    /// this key, usable and allowed `need` for `action`.
    pub fn check(&self, need: Need, action: &'static str) -> CallerCheck {
        CallerCheck {
            key: self.key.id.clone(),
            need,
            action,
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let now = OffsetDateTime::now_utc();
        let key = authenticate(&state.store, state.secret.as_bytes(), &parts.headers, now).await?;
        state.store.touch_key_used(&key.id, now);
        Ok(Caller { key })
    }
}

/// Authenticates the request's `Authorization: Bearer <key>` header.
pub async fn authenticate(
    store: &Store,
    server_secret: &[u8],
    headers: &HeaderMap,
    now: OffsetDateTime,
) -> Result<KeyRecord, ApiError> {
    let key = bearer_key(headers).ok_or_else(ApiError::unauthorized)?;
    let record = store.find_key(key.id()).await?;
    check_key(record, &key, server_secret, now)
}

/// The API key of a `Bearer` authorization header, when present and well-formed.
pub fn bearer_key(headers: &HeaderMap) -> Option<ApiKey> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    token.trim().parse().ok()
}

/// Decides about a presented key given its stored record (if any).
pub fn check_key(
    record: Option<KeyRecord>,
    key: &ApiKey,
    server_secret: &[u8],
    now: OffsetDateTime,
) -> Result<KeyRecord, ApiError> {
    let record = record.ok_or_else(ApiError::unauthorized)?;
    if !key.is_authentic(server_secret) {
        return Err(ApiError::unauthorized());
    }
    refusal(&record, now).map_or(Ok(record), Err)
}

/// Why an authentic key can no longer be used at `now`, if it cannot: revoked, expired, or
/// its member removed.
pub fn refusal(record: &KeyRecord, now: OffsetDateTime) -> Option<ApiError> {
    access::unusable(record, now).map(ApiError::from)
}

/// Why an authentic key may not enroll another device: it is revoked, expired, or has
/// reached its use limit.
pub fn enroll_refusal(record: &KeyRecord, now: OffsetDateTime) -> Option<ApiError> {
    access::check(record, Need::Enroll, "enrolling a device", now)
        .err()
        .map(ApiError::from)
}

pub use crate::store::access::rfc3339;

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, StatusCode};
    use heex_proto::api::ErrorCode;
    use heex_proto::{KeyId, MemberId, WorkspaceId};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn record(id: KeyId) -> KeyRecord {
        let now = OffsetDateTime::now_utc();
        KeyRecord {
            id,
            workspace_id: WorkspaceId::generate(),
            workspace_name: "default".into(),
            member_id: MemberId::generate(),
            member_email: "alice@example.com".into(),
            member_role: Role::Owner,
            name: "cli".into(),
            scope: Scope::Enroll,
            created_at: now,
            expires_at: now + time::Duration::days(1),
            last_used_at: None,
            revoked_at: None,
            revoked_by: None,
            revoked_reason: None,
            replaced_by: None,
            max_uses: None,
            uses: 0,
            member_removed_at: None,
        }
    }

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    fn code(e: &ApiError) -> (StatusCode, ErrorCode) {
        (e.status(), e.body().error)
    }

    #[test]
    fn bearer_parsing() {
        let key = ApiKey::derive(SECRET, KeyId::generate());
        let text = key.expose();
        assert_eq!(
            bearer_key(&headers(&format!("Bearer {text}"))),
            Some(key.clone())
        );
        assert_eq!(bearer_key(&headers(&format!("bearer  {text} "))), Some(key));
        assert_eq!(bearer_key(&headers(&format!("Basic {text}"))), None);
        assert_eq!(bearer_key(&headers(&text)), None);
        // One mistyped character: the checksum catches it offline.
        let mut typo = text.into_bytes();
        typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(typo).unwrap();
        assert_eq!(bearer_key(&headers(&format!("Bearer {typo}"))), None);
        assert_eq!(bearer_key(&HeaderMap::new()), None);
    }

    #[test]
    fn unknown_and_inauthentic_keys_get_a_plain_401() {
        let now = OffsetDateTime::now_utc();
        let key = ApiKey::derive(SECRET, KeyId::generate());
        let e = check_key(None, &key, SECRET, now).unwrap_err();
        assert_eq!(
            code(&e),
            (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized)
        );

        // Right id, secret derived from another server secret: plain 401 even when the
        // stored key is revoked, so a guesser learns nothing.
        let forged = ApiKey::derive(b"another server secret", key.id().clone());
        let mut rec = record(key.id().clone());
        rec.revoked_at = Some(now);
        rec.revoked_by = Some("bob@example.com".into());
        let e = check_key(Some(rec), &forged, SECRET, now).unwrap_err();
        assert_eq!(
            code(&e),
            (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized)
        );
        assert!(!e.body().message.contains("bob"));
    }

    #[test]
    fn revoked_key_says_when_and_by_whom() {
        let now = OffsetDateTime::now_utc();
        let key = ApiKey::derive(SECRET, KeyId::generate());
        let mut rec = record(key.id().clone());
        let at = time::macros::datetime!(2026-11-20 10:00 UTC);
        rec.revoked_at = Some(at);
        rec.revoked_by = Some("bob@example.com".into());
        // Revoked wins over expired.
        rec.expires_at = now - time::Duration::days(1);
        let e = check_key(Some(rec), &key, SECRET, now).unwrap_err();
        assert_eq!(code(&e), (StatusCode::UNAUTHORIZED, ErrorCode::KeyRevoked));
        assert_eq!(
            e.body().message,
            format!(
                "API key {} was revoked on 2026-11-20T10:00:00Z by bob@example.com; ask an admin for a new key",
                key.id()
            )
        );
        assert!(!e.body().message.contains(&key.expose()));
    }

    #[test]
    fn expired_key_says_when() {
        let now = OffsetDateTime::now_utc();
        let key = ApiKey::derive(SECRET, KeyId::generate());
        let mut rec = record(key.id().clone());
        rec.expires_at = time::macros::datetime!(2025-01-02 03:04:05 UTC);
        let e = check_key(Some(rec), &key, SECRET, now).unwrap_err();
        assert_eq!(code(&e), (StatusCode::UNAUTHORIZED, ErrorCode::KeyExpired));
        assert_eq!(
            e.body().message,
            format!(
                "API key {} expired on 2025-01-02T03:04:05Z; create a new key",
                key.id()
            )
        );
    }

    #[test]
    fn valid_key_passes_and_scope_is_checked() {
        let now = OffsetDateTime::now_utc();
        let key = ApiKey::derive(SECRET, KeyId::generate());
        let rec = check_key(Some(record(key.id().clone())), &key, SECRET, now).unwrap();
        let caller = Caller { key: rec };
        caller
            .require_scope(&[Scope::Enroll, Scope::Admin], "enrolling")
            .unwrap();
        let e = caller.require_admin("listing devices").unwrap_err();
        assert_eq!(code(&e), (StatusCode::FORBIDDEN, ErrorCode::Forbidden));
        assert!(e.body().message.contains("admin"));
    }

    #[test]
    fn used_up_key_is_forbidden() {
        let now = OffsetDateTime::now_utc();
        let key = ApiKey::derive(SECRET, KeyId::generate());
        let mut rec = record(key.id().clone());
        rec.max_uses = Some(2);
        rec.uses = 2;
        // Still good for whoami and revoke, not for enrolling.
        let rec = check_key(Some(rec), &key, SECRET, now).unwrap();
        let e = enroll_refusal(&rec, now).unwrap();
        assert_eq!(code(&e), (StatusCode::FORBIDDEN, ErrorCode::Forbidden));
        rec_uses_below_limit_is_fine(rec, now);
    }

    #[test]
    fn removed_members_key_says_who_removed_them() {
        let now = OffsetDateTime::now_utc();
        let key = ApiKey::derive(SECRET, KeyId::generate());
        let mut rec = record(key.id().clone());
        rec.member_email = "bob@example.com".into();
        rec.revoked_at = Some(time::macros::datetime!(2026-11-20 10:00 UTC));
        rec.revoked_by = Some("alice@example.com".into());
        rec.revoked_reason = Some(Revocation::MemberRemoved);
        let e = check_key(Some(rec), &key, SECRET, now).unwrap_err();
        assert_eq!(code(&e), (StatusCode::UNAUTHORIZED, ErrorCode::KeyRevoked));
        assert_eq!(
            e.body().message,
            format!(
                "API key {} was revoked on 2026-11-20T10:00:00Z because its owner \
                 bob@example.com was removed from the workspace by alice@example.com",
                key.id()
            )
        );
    }

    #[test]
    fn scheduled_revocation_counts_only_once_due() {
        let now = OffsetDateTime::now_utc();
        let key = ApiKey::derive(SECRET, KeyId::generate());
        let mut rec = record(key.id().clone());
        rec.revoked_at = Some(now + time::Duration::hours(1));
        rec.revoked_by = Some("alice@example.com".into());
        rec.revoked_reason = Some(Revocation::Rotated);
        check_key(Some(rec.clone()), &key, SECRET, now).unwrap();
        assert!(enroll_refusal(&rec, now).is_none());
        let later = now + time::Duration::hours(1);
        let e = check_key(Some(rec), &key, SECRET, later).unwrap_err();
        assert_eq!(code(&e), (StatusCode::UNAUTHORIZED, ErrorCode::KeyRevoked));
    }

    #[test]
    fn role_and_scope_intersect() {
        let mut rec = record(KeyId::generate());
        rec.scope = Scope::Admin;
        rec.member_role = Role::Member;
        let member = Caller { key: rec.clone() };
        member.require_admin("listing members").unwrap();
        let e = member.require_manager("inviting members").unwrap_err();
        assert_eq!(code(&e), (StatusCode::FORBIDDEN, ErrorCode::Forbidden));
        assert!(
            e.body().message.contains("owner or admin role"),
            "{}",
            e.body().message
        );

        rec.member_role = Role::Admin;
        Caller { key: rec.clone() }
            .require_manager("inviting members")
            .unwrap();
        // An owner's enroll key is still only an enroll key.
        rec.member_role = Role::Owner;
        rec.scope = Scope::Enroll;
        let e = Caller { key: rec }
            .require_manager("inviting members")
            .unwrap_err();
        assert!(e.body().message.contains("scope"), "{}", e.body().message);
    }

    fn rec_uses_below_limit_is_fine(mut rec: KeyRecord, now: OffsetDateTime) {
        rec.uses = 1;
        assert!(enroll_refusal(&rec, now).is_none());
    }
}
