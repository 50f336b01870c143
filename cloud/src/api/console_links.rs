//! `POST /v1/console/signin-links`: a one-time sign-in link to the web console (`heex
//! console`), for the caller's own admin-scope key.
//!
//! The token is `heexsig_` and 32 random base62 characters; only its SHA-256 is stored, it
//! works once and for [`SIGNIN_LINK_LIFETIME`], and the session it opens is bound to the
//! caller's key like any console session ([`crate::console`]).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use heex_proto::api::{ConsoleSignInLink, ErrorBody};
use heex_proto::SignInToken;
use time::OffsetDateTime;

use super::{whole_seconds, AppState};
use crate::auth::Caller;
use crate::error::ApiError;

/// How long a sign-in link works.
pub(crate) const SIGNIN_LINK_LIFETIME: time::Duration = time::Duration::minutes(5);
/// The console page that spends a sign-in token (from the link's fragment).
pub(crate) const SIGNIN_LINK_PATH: &str = "/console/signin/link";

/// Creates a one-time console sign-in link for the caller's key (admin scope: an enroll key
/// cannot sign in to the console).
#[utoipa::path(
    post,
    path = "/v1/console/signin-links",
    tag = "keys",
    security(("api_key" = [])),
    responses(
        (status = 201, description = "The one-time token and the page that spends it", body = ConsoleSignInLink),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "Enroll scope", body = ErrorBody)
    )
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<(StatusCode, Json<ConsoleSignInLink>), ApiError> {
    caller.require_admin("signing in to the console")?;
    let now = whole_seconds(OffsetDateTime::now_utc());
    let token = SignInToken::generate();
    let expires_at = now + SIGNIN_LINK_LIFETIME;
    state
        .store
        .create_signin_token(&token.sha256_hex(), &caller.key.id, now, expires_at)
        .await?;
    tracing::info!(key = %caller.key.id, "console sign-in link created");
    Ok((
        StatusCode::CREATED,
        Json(ConsoleSignInLink {
            token: token.into_secret(),
            path: SIGNIN_LINK_PATH.to_owned(),
            expires_at,
        }),
    ))
}
