//! The HTTPS API: routes, shared state, and JSON body handling.
//!
//! Every error is an [`heex_proto::api::ErrorBody`]; bodies are limited to
//! [`MAX_BODY_BYTES`] (413 `payload_too_large` beyond). Routes are registered only together
//! with their OpenAPI description ([`openapi`]), so `/v1/openapi.json` covers every one.

pub(crate) mod audit;
pub(crate) mod console_links;
pub(crate) mod device_lifecycle;
pub(crate) mod devices;
mod enroll;
pub(crate) mod invitations;
pub(crate) mod keys;
pub(crate) mod members;
pub mod openapi;
pub mod paging;
pub(crate) mod reports;
mod whoami;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Router};
use heex_proto::api::MAX_BODY_BYTES;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::store::access::Need;
use crate::store::{AuditAction, AuditEntry};

pub use crate::context::{ApiContext, AppState, GatewayAddress};

/// The API's routes, each registered with its OpenAPI operation.
fn documented_routes() -> OpenApiRouter<AppState> {
    // One `routes!` per path: its handlers are that path's methods.
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(ca_pem))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(whoami::whoami))
        .routes(routes!(enroll::enroll))
        .routes(routes!(keys::list, keys::create))
        .routes(routes!(keys::copy))
        .routes(routes!(keys::revoke))
        .routes(routes!(keys::rotate))
        .routes(routes!(members::list))
        .routes(routes!(members::remove))
        .routes(routes!(invitations::invite, invitations::list))
        .routes(routes!(invitations::accept))
        .routes(routes!(invitations::cancel))
        .routes(routes!(devices::list))
        .routes(routes!(devices::summary))
        .routes(routes!(reports::list))
        .routes(routes!(
            devices::show,
            device_lifecycle::update,
            device_lifecycle::delete
        ))
        .routes(routes!(device_lifecycle::revoke))
        .routes(routes!(audit::list))
        .routes(routes!(console_links::create))
}

/// The OpenAPI document of every route, as served.
pub fn openapi_document() -> serde_json::Value {
    openapi::finish(&documented_routes().into_openapi())
}

/// The API's routes.
pub fn router(state: AppState) -> Router {
    let (routes, doc) = documented_routes().split_for_parts();
    routes
        .layer(Extension(openapi::Document::new(&openapi::finish(&doc))))
        .fallback(|| async { ApiError::not_found("no such API endpoint") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Liveness: answers "ok" without touching anything.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "server",
    responses((status = 200, description = "The server is up", body = String, content_type = "text/plain"))
)]
async fn health() -> &'static str {
    "ok"
}

/// Readiness: 200 "ready" while this replica can serve (its store answers; its gateway
/// listens for as long as the process serves: a gateway that stops takes the process down),
/// 503 with the reason otherwise, so a load balancer sends no traffic to it.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "server",
    responses(
        (status = 200, description = "The server can serve", body = String, content_type = "text/plain"),
        (status = 503, description = "The store does not answer", body = heex_proto::api::ErrorBody)
    )
)]
async fn ready(state: axum::extract::State<AppState>) -> Result<&'static str, ApiError> {
    match tokio::time::timeout(READY_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => Ok("ready"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: the store does not answer");
            Err(ApiError::unavailable(
                "the store does not answer; this server is not ready",
            ))
        }
        Err(_) => Err(ApiError::unavailable(
            "the store did not answer within 2 s; this server is not ready",
        )),
    }
}

/// How long a readiness check waits for the store.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The cloud's CA certificates, PEM (no authentication): the roots agents trust. One,
/// or two during a CA rotation (the new one first).
#[utoipa::path(
    get,
    path = "/v1/ca",
    tag = "server",
    responses((status = 200, description = "The CA certificates", body = String, content_type = "application/x-pem-file"))
)]
async fn ca_pem(state: axum::extract::State<AppState>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(CONTENT_TYPE, "application/x-pem-file")],
        state.cas.current().bundle_pem().to_owned(),
    )
}

/// Query parameters whose rejections are [`ApiError`]s (400 `bad_request`).
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(ApiError::bad_request(one_line(&rejection.body_text()))),
        }
    }
}

/// A JSON body that may be left out (then `T::default()`); other rejections as [`ApiJson`].
pub struct OptionalJson<T>(pub T);

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = match axum::body::Bytes::from_request(req, state).await {
            Ok(bytes) => bytes,
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::payload_too_large())
            }
            Err(rejection) => return Err(ApiError::bad_request(one_line(&rejection.body_text()))),
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        serde_json::from_slice(&bytes)
            .map(OptionalJson)
            .map_err(|e| {
                ApiError::bad_request(format!("invalid JSON body: {}", one_line(&e.to_string())))
            })
    }
}

/// A JSON body whose rejections are [`ApiError`]s (400 `bad_request`, 413
/// `payload_too_large`).
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_error(&rejection)),
        }
    }
}

fn json_error(rejection: &JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::payload_too_large();
    }
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::bad_request("Content-Type must be application/json")
        }
        other => ApiError::bad_request(one_line(&other.body_text())),
    }
}

/// Checks a human-supplied name: trimmed length within `1..=max` characters, no control or
/// formatting characters (bidi overrides, zero-width characters: [`heex_proto::text`]).
pub fn check_name(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    heex_proto::text::check_name(field, value, max)
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

/// An audit event by the caller, at `at`, in the caller's workspace. The store writes it
/// only after checking again, inside the change's transaction, that the caller's key is
/// usable and allowed `need` for `what` (and the change's own policy).
pub fn audit_entry(
    caller: &Caller,
    need: Need,
    what: &'static str,
    at: OffsetDateTime,
    action: AuditAction,
    target: impl Into<String>,
    details: serde_json::Value,
) -> AuditEntry {
    AuditEntry {
        workspace_id: caller.key.workspace_id.clone(),
        at,
        actor: caller.key.member_email.clone(),
        action,
        target: target.into(),
        details,
        caller: Some(caller.check(need, what)),
    }
}

/// Times are stored in whole seconds; answer with what will be read back later.
pub fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

/// A 404 for an object that does not exist in the caller's workspace. The id is the
/// client's text: at most [`ECHOED_ID_CHARS`] characters of it are echoed, escaped.
pub fn not_in_workspace(what: &str, id: &str) -> ApiError {
    ApiError::not_found(format!("no {what} {} in this workspace", echoed(id)))
}

/// Most characters of a client-supplied id echoed in a message.
pub const ECHOED_ID_CHARS: usize = 64;

/// A client-supplied value as a message may echo it: control and format characters escaped,
/// cut to [`ECHOED_ID_CHARS`] characters with "…" when longer.
pub fn echoed(value: &str) -> String {
    let mut out = String::new();
    for (i, c) in value.chars().enumerate() {
        if i == ECHOED_ID_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() || is_format_char(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Invisible characters that reorder or hide text (bidi controls, zero-width characters).
fn is_format_char(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests;
