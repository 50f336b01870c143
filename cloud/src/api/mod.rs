//! The HTTPS API: routes, shared state, and JSON body handling.
//!
//! Every error is an [`heex_proto::api::ErrorBody`]; bodies are limited to
//! [`MAX_BODY_BYTES`] (413 `payload_too_large` beyond).

mod devices;
mod enroll;
mod keys;
mod whoami;

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use heex_proto::api::MAX_BODY_BYTES;
use serde::de::DeserializeOwned;

use crate::ca::Ca;
use crate::datadir::ServerSecret;
use crate::error::ApiError;
use crate::gateway::SessionRegistry;
use crate::store::Store;

/// Where enrolled devices are told to connect.
#[derive(Debug, Clone)]
pub enum GatewayAddress {
    /// A fixed `host:port` (`--gateway-advertise`).
    Advertised(String),
    /// The host the client used to reach the API, with this gateway port.
    SameHost(u16),
}

/// What every handler shares.
pub struct ApiContext {
    /// The store.
    pub store: Arc<Store>,
    /// The CA that signs device certificates.
    pub ca: Arc<Ca>,
    /// The server secret API keys derive from.
    pub secret: ServerSecret,
    /// Live gateway sessions.
    pub registry: SessionRegistry,
    /// SPIFFE trust domain of device identities.
    pub trust_domain: String,
    /// Lifetime of device certificates.
    pub device_cert_lifetime: Duration,
    /// The gateway address handed to enrolling devices.
    pub gateway: GatewayAddress,
}

/// Shared handler state. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<ApiContext>);

impl AppState {
    /// Wraps the context.
    pub fn new(ctx: ApiContext) -> Self {
        AppState(Arc::new(ctx))
    }
}

impl Deref for AppState {
    type Target = ApiContext;
    fn deref(&self) -> &ApiContext {
        &self.0
    }
}

/// The API's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/ca", get(ca_pem))
        .route("/v1/whoami", get(whoami::whoami))
        .route("/v1/enroll", post(enroll::enroll))
        .route("/v1/keys", post(keys::create))
        .route("/v1/keys/{id}/revoke", post(keys::revoke))
        .route("/v1/devices", get(devices::list))
        .fallback(|| async { ApiError::not_found("no such API endpoint") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// `GET /v1/ca`: the CA certificate, PEM (no authentication).
async fn ca_pem(state: axum::extract::State<AppState>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(CONTENT_TYPE, "application/x-pem-file")],
        state.ca.cert_pem().to_owned(),
    )
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

/// Checks a human-supplied name: trimmed length within `1..=max` characters, no control
/// characters.
pub fn check_name(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    let n = value.trim().chars().count();
    if n == 0 || n > max || value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "{field} must be 1 to {max} printable characters"
        )));
    }
    Ok(())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests;
