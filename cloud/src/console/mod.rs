//! The web console: server-rendered pages on the API listener (`/console/…`), for the same
//! members and with the same rules as the JSON API.
//!
//! - **Sign-in**: a member pastes their own API key (a POST form), or opens a one-time link
//!   from `heex console` ([`crate::api::console_links`]). Either opens a server-side session:
//!   a random id in a `__Host-` cookie (`HttpOnly; Secure; SameSite=Strict`), stored only as
//!   its SHA-256, with an idle ([`IDLE_TIMEOUT`]) and an absolute ([`ABSOLUTE_TIMEOUT`])
//!   timeout. An enroll-scope key cannot sign in.
//! - **Every request** checks the session's key again through [`crate::auth`] and
//!   [`crate::store::access`], like a bearer request: the session ends at once when the key is
//!   revoked or expires or its member is removed.
//! - **Every page action calls the JSON API's handler** for it (the handlers are plain
//!   functions of their extractors), so no rule exists twice.
//! - **CSRF**: besides `SameSite=Strict`, every state-changing request must carry an `Origin`
//!   header naming this server ([`same_origin`]).
//! - **Headers**: a CSP with no inline script (`script-src 'self'`), `frame-ancestors
//!   'none'`, `nosniff`, `Referrer-Policy: no-referrer` and `Cache-Control: no-store` on
//!   every page ([`security_headers`]).
//! - Secrets (keys, invitation and sign-in tokens) never travel in a URL: tokens sit in link
//!   fragments, which the page posts; keys are revealed only in the one response that
//!   creates, copies or rotates them.

mod devices;
mod handlers;
mod pages;

use axum::extract::{FromRequestParts, Request};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, COOKIE, HOST, ORIGIN, REFERRER_POLICY, SET_COOKIE,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use heex_proto::base62;
use time::OffsetDateTime;

use crate::api::AppState;
use crate::auth::Caller;
use crate::store::access::{self, Need};
use crate::store::{AuditAction, AuditEntry, ConsoleSession, KeyRecord};

/// The session cookie's name (`__Host-`: Secure, path `/`, no domain).
pub const SESSION_COOKIE: &str = "__Host-heex_session";
/// A session with no request for this long ends.
pub const IDLE_TIMEOUT: time::Duration = time::Duration::minutes(30);
/// A session ends this long after sign-in, however active.
pub const ABSOLUTE_TIMEOUT: time::Duration = time::Duration::hours(12);
/// A session's last-request time is written at most this often.
const TOUCH_EVERY: time::Duration = time::Duration::seconds(30);
/// Random base62 characters of a session id (about 250 bits).
const SESSION_ID_LEN: usize = 43;

/// The Content-Security-Policy of every console response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                       base-uri 'none'";

/// What the API listener serves: the JSON API ([`crate::api::router`]) and the console.
pub fn app(state: AppState) -> Router {
    crate::api::router(state.clone())
        .merge(routes().with_state(state))
        // Route templates only: a request's ids never become a label.
        .route_layer(axum::middleware::from_fn(crate::metrics::track))
}

/// The console's routes.
fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to(handlers::HOME) }))
        .route("/console", get(|| async { Redirect::to(handlers::HOME) }))
        .route("/console/", get(|| async { Redirect::to(handlers::HOME) }))
        .route("/console/assets/console.js", get(handlers::script))
        .route("/console/assets/console.css", get(handlers::style))
        .route(
            "/console/signin",
            get(handlers::signin_page).post(handlers::signin_with_key),
        )
        .route(
            "/console/signin/link",
            get(handlers::signin_link_page).post(handlers::signin_with_link),
        )
        .route("/console/signout", post(handlers::signout))
        .route(
            "/console/keys",
            get(handlers::keys_page).post(handlers::create_key),
        )
        .route("/console/keys/{id}/copy", post(handlers::copy_key))
        .route("/console/keys/{id}/revoke", post(handlers::revoke_key))
        .route("/console/keys/{id}/rotate", post(handlers::rotate_key))
        .route("/console/settings", get(handlers::settings_page))
        .route("/console/invitations", post(handlers::invite))
        .route(
            "/console/invitations/{id}/cancel",
            post(handlers::cancel_invitation),
        )
        .route(
            "/console/invitations/{id}/recreate",
            post(handlers::recreate_invitation),
        )
        .route(
            "/console/members/{id}/remove",
            post(handlers::remove_member),
        )
        .route(
            "/console/join",
            get(handlers::join_page).post(handlers::join),
        )
        .route("/console/audit", get(handlers::audit_page))
        .route("/console/add-device", get(handlers::add_device_page))
        .route("/console/add-device/wait", get(devices::wait_for_device))
        .route("/console/devices", get(devices::list_page))
        .route("/console/devices/bulk", post(devices::bulk))
        .route("/console/devices/{id}", get(devices::detail_page))
        .route("/console/devices/{id}/rename", post(devices::rename))
        .route("/console/devices/{id}/labels", post(devices::set_labels))
        .route("/console/devices/{id}/revoke", post(devices::revoke))
        .route("/console/devices/{id}/delete", post(devices::delete))
        .layer(axum::extract::DefaultBodyLimit::max(
            heex_proto::api::MAX_BODY_BYTES,
        ))
        .layer(axum::middleware::from_fn(same_origin))
        .layer(axum::middleware::from_fn(security_headers))
}

/// Adds the console's security headers to every response (a response that set its own
/// `Cache-Control`, the static assets, keeps it).
async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(CACHE_CONTROL) {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Refuses (403) a state-changing request that does not come from this console's pages: its
/// `Origin` must be this server's (`https://` and the request's host). Under
/// `Referrer-Policy: no-referrer` browsers send `Origin: null` on form posts; such a request
/// (or one without `Origin`) passes only with `Sec-Fetch-Site: same-origin`, a header no page
/// can set. A cross-site form or script therefore cannot act for a member.
async fn same_origin(req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    if !from_this_console(&req) {
        return pages::error_page(
            StatusCode::FORBIDDEN,
            "This request did not come from a page of this console (its Origin header is \
             missing or names another site), so it was refused; open the console and try again.",
        );
    }
    next.run(req).await
}

/// The host (and port) the request named: `Host` (HTTP/1) or the URI's authority (HTTP/2).
fn request_host(headers: &HeaderMap, uri: &axum::http::Uri) -> Option<String> {
    headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.as_str().to_owned()))
}

fn from_this_console(req: &Request) -> bool {
    let headers = req.headers();
    let host = request_host(headers, req.uri());
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if fetch_site.is_some_and(|site| site != "same-origin") {
        return false;
    }
    match headers.get(ORIGIN).map(|o| o.to_str()) {
        Some(Ok("null")) | None => fetch_site == Some("same-origin"),
        Some(Ok(origin)) => {
            host.is_some_and(|h| origin.eq_ignore_ascii_case(&format!("https://{h}")))
        }
        Some(Err(_)) => false,
    }
}

/// Hex SHA-256 of a session id or token: what the store keeps.
pub use heex_proto::secret::sha256_hex as secret_hash;

/// The session id a request's cookie carries, if any.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|v| v.len() == SESSION_ID_LEN && base62::is_base62(v))
}

/// Why a request has no usable session, shown on the sign-in page (a fixed word: nothing
/// from the request goes back into the redirect).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// No session cookie, or an unknown one.
    None,
    /// Idle or absolute timeout.
    Expired,
    /// The key was revoked or expired, or its member removed.
    KeyRefused,
    /// The member signed out.
    SignedOut,
}

impl Ended {
    fn query(self) -> &'static str {
        match self {
            Ended::None => "",
            Ended::Expired => "?ended=timeout",
            Ended::KeyRefused => "?ended=key",
            Ended::SignedOut => "?ended=out",
        }
    }
}

/// A signed-in member: the session and the caller its key makes, checked on this request.
pub struct Signed {
    /// The caller, as the JSON API's handlers take it.
    pub caller: Caller,
    /// The session's id hash.
    pub session: String,
}

impl FromRequestParts<AppState> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let to_signin = |why: Ended| {
            let mut r = Redirect::to(&format!("/console/signin{}", why.query())).into_response();
            if why != Ended::None {
                r.headers_mut().insert(SET_COOKIE, clear_cookie());
            }
            r
        };
        let Some(id) = session_cookie(&parts.headers) else {
            return Err(to_signin(Ended::None));
        };
        let hash = secret_hash(&id);
        let store = &state.store;
        let session = match store.find_console_session(&hash).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err(to_signin(Ended::None)),
            Err(e) => return Err(pages::api_error(e.into())),
        };
        let now = OffsetDateTime::now_utc();
        let ended = if now >= session.expires_at || now - session.last_seen_at >= IDLE_TIMEOUT {
            Some(Ended::Expired)
        } else {
            match store.find_key(&session.key_id).await {
                Ok(Some(key)) if usable_for_console(&key, now) => {
                    if now - session.last_seen_at >= TOUCH_EVERY {
                        if let Err(e) = store.touch_console_session(&hash, now).await {
                            return Err(pages::api_error(e.into()));
                        }
                    }
                    store.touch_key_used(&key.id, now);
                    return Ok(Signed {
                        caller: Caller { key },
                        session: hash,
                    });
                }
                Ok(_) => Some(Ended::KeyRefused),
                Err(e) => return Err(pages::api_error(e.into())),
            }
        };
        let why = ended.unwrap_or(Ended::None);
        if let Err(e) = store.delete_console_session(&hash, None).await {
            return Err(pages::api_error(e.into()));
        }
        tracing::info!(key = %session.key_id, ?why, "console session ended");
        Err(to_signin(why))
    }
}

/// True when `key` may hold a console session at `now`: usable, with admin scope.
pub fn usable_for_console(key: &KeyRecord, now: OffsetDateTime) -> bool {
    access::check(key, Need::Admin, "signing in to the console", now).is_ok()
}

/// How a member signed in, as the audit log records it.
#[derive(Debug, Clone, Copy)]
pub enum SignedInWith {
    /// Their pasted API key.
    Key,
    /// A one-time link from `heex console`.
    Link,
    /// Accepting an invitation (with the key it gave them).
    Invitation,
}

/// Opens a session for `key` (already checked; the store checks it again as it records the
/// sign-in) and answers with its cookie and `then`.
async fn open_session(
    state: &AppState,
    key: &KeyRecord,
    with: SignedInWith,
    then: Response,
) -> Result<Response, crate::error::ApiError> {
    let id = base62::random(SESSION_ID_LEN);
    let now = crate::api::whole_seconds(OffsetDateTime::now_utc());
    let with = match with {
        SignedInWith::Key => "api_key",
        SignedInWith::Link => "signin_link",
        SignedInWith::Invitation => "invitation",
    };
    let audit = crate::api::audit_entry(
        &Caller { key: key.clone() },
        Need::Admin,
        "signing in to the console",
        now,
        AuditAction::ConsoleSignIn,
        key.id.as_str(),
        serde_json::json!({ "with": with }),
    );
    state
        .store
        .create_console_session(
            ConsoleSession {
                id_hash: secret_hash(&id),
                key_id: key.id.clone(),
                created_at: now,
                last_seen_at: now,
                expires_at: now + ABSOLUTE_TIMEOUT,
            },
            audit,
        )
        .await?;
    tracing::info!(key = %key.id, with, "console session started");
    let cookie = format!(
        "{SESSION_COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        ABSOLUTE_TIMEOUT.whole_seconds()
    );
    let mut response = then;
    let value = HeaderValue::from_str(&cookie).map_err(crate::error::ApiError::internal)?;
    response.headers_mut().append(SET_COOKIE, value);
    Ok(response)
}

/// Ends the session a request's cookie names, recording the sign-out of its member.
async fn sign_out(state: &AppState, headers: &HeaderMap) -> Result<(), crate::error::ApiError> {
    let Some(id) = session_cookie(headers) else {
        return Ok(());
    };
    let hash = secret_hash(&id);
    let store = &state.store;
    let Some(session) = store.find_console_session(&hash).await? else {
        return Ok(());
    };
    // Signing out always works, whatever became of the key since.
    let audit = store
        .find_key(&session.key_id)
        .await?
        .map(|key| AuditEntry {
            workspace_id: key.workspace_id.clone(),
            at: crate::api::whole_seconds(OffsetDateTime::now_utc()),
            actor: key.member_email.clone(),
            action: AuditAction::ConsoleSignOut,
            target: key.id.as_str().to_owned(),
            details: serde_json::json!({}),
            caller: None,
        });
    store.delete_console_session(&hash, audit).await?;
    tracing::info!(key = %session.key_id, "console session signed out");
    Ok(())
}

/// A `Set-Cookie` that deletes the session cookie.
fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "__Host-heex_session=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
    )
}

#[cfg(test)]
mod tests;
