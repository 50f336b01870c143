//! The console's routes. Each action calls the JSON API's handler for it.

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use heex_proto::api::{
    AcceptInvitationRequest, CreateKeyRequest, InviteRequest, KeyStatus, Role, RotateKeyRequest,
    Scope, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT,
};
use heex_proto::{ApiKey, SignInToken};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;

use super::pages::{self, Viewer};
use super::{
    clear_cookie, open_session, request_host, sign_out, usable_for_console, Signed, SignedInWith,
};
use crate::api::paging::PageQuery;
use crate::api::{audit, invitations, keys, members, ApiJson, ApiQuery, AppState};
use crate::auth::{self, Caller};
use crate::error::ApiError;
use crate::store::DeviceQuery;

/// Where a signed-in member lands.
pub(super) const HOME: &str = "/console/keys";

const SCRIPT: &str = include_str!("console.js");
const STYLE: &str = include_str!("console.css");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

pub(super) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub(super) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

pub(super) fn viewer(caller: &Caller) -> Viewer<'_> {
    Viewer {
        email: &caller.key.member_email,
        manager: caller.has_manager_role(),
    }
}

/// True when the page's script asked (fetch with `Accept: application/json`).
fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

/// An error of the domain code, as the requester wants it.
pub(super) fn failure(headers: &HeaderMap, e: ApiError) -> Response {
    if wants_json(headers) {
        return (e.status(), Json(json!({"message": e.body().message}))).into_response();
    }
    pages::api_error(e)
}

fn bad_form(headers: &HeaderMap, rejection: &FormRejection) -> Response {
    failure(
        headers,
        ApiError::bad_request(format!(
            "the form is incomplete or malformed: {}",
            rejection.body_text()
        )),
    )
}

/// The one response that shows a secret: JSON for the page's script, or a page.
fn reveal(
    headers: &HeaderMap,
    viewer: Option<&Viewer<'_>>,
    what: &str,
    title: &str,
    secret: &str,
    note: &str,
) -> Response {
    let mut r = if wants_json(headers) {
        Json(json!({"secret": secret, "label": what, "title": title, "note": note})).into_response()
    } else {
        pages::html_response(
            StatusCode::OK,
            pages::reveal_page(viewer, what, secret, note),
        )
    };
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// This server's origin as the request named it (checked against `Origin` on every POST).
fn origin(headers: &HeaderMap, uri: &Uri) -> String {
    let host = request_host(headers, uri).unwrap_or_else(|| "localhost:8443".to_owned());
    format!("https://{host}")
}

#[derive(Deserialize, Default)]
pub(super) struct SigninQuery {
    ended: Option<String>,
}

pub(super) async fn signin_page(Query(q): Query<SigninQuery>) -> Response {
    let message = match q.ended.as_deref() {
        Some("timeout") => Some("Your session timed out; sign in again."),
        Some("key") => Some(
            "Your session ended: the API key it used was revoked or expired, or its member was \
             removed from the workspace. Sign in with a usable key.",
        ),
        Some("out") => Some("You are signed out."),
        _ => None,
    };
    pages::html_response(StatusCode::OK, pages::signin(message))
}

#[derive(Deserialize)]
pub(super) struct SigninForm {
    key: String,
}

fn signin_refused(status: StatusCode, message: &str) -> Response {
    pages::html_response(status, pages::signin(Some(message)))
}

pub(super) async fn signin_with_key(
    State(state): State<AppState>,
    form: Result<Form<SigninForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return signin_refused(StatusCode::BAD_REQUEST, "Paste your API key to sign in.");
    };
    let Ok(key) = form.key.trim().parse::<ApiKey>() else {
        return signin_refused(
            StatusCode::UNAUTHORIZED,
            "That is not a Heex API key (it starts with heex_); paste the whole key.",
        );
    };
    let now = OffsetDateTime::now_utc();
    let record = match state.store.find_key(key.id()).await {
        Ok(r) => r,
        Err(e) => return pages::api_error(e.into()),
    };
    let record = match auth::check_key(record, &key, state.secret.as_bytes(), now) {
        Ok(r) => r,
        Err(e) => return signin_refused(e.status(), &e.body().message),
    };
    if let Err(refusal) = crate::store::access::check(
        &record,
        crate::store::access::Need::Admin,
        "signing in to the console",
        now,
    ) {
        let e = ApiError::from(refusal);
        return signin_refused(e.status(), &e.body().message);
    }
    match open_session(
        &state,
        &record,
        SignedInWith::Key,
        Redirect::to(HOME).into_response(),
    )
    .await
    {
        Ok(r) => r,
        Err(e) => pages::api_error(e),
    }
}

pub(super) async fn signin_link_page() -> Response {
    pages::html_response(StatusCode::OK, pages::signin_link())
}

#[derive(Deserialize)]
pub(super) struct TokenForm {
    token: String,
}

pub(super) async fn signin_with_link(
    State(state): State<AppState>,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Response {
    let refused = || {
        signin_refused(
            StatusCode::UNAUTHORIZED,
            "This sign-in link is not valid: it was used already, expired, or copied \
             incompletely. Run `heex console` for a new one.",
        )
    };
    let Ok(Form(form)) = form else {
        return refused();
    };
    let Ok(token) = SignInToken::parse(&form.token) else {
        return refused();
    };
    let now = OffsetDateTime::now_utc();
    let key_id = match state
        .store
        .redeem_signin_token(&token.sha256_hex(), now)
        .await
    {
        Ok(Some(k)) => k,
        Ok(None) => return refused(),
        Err(e) => return pages::api_error(e.into()),
    };
    let key = match state.store.find_key(&key_id).await {
        Ok(Some(key)) if usable_for_console(&key, now) => key,
        Ok(_) => {
            return signin_refused(
                StatusCode::UNAUTHORIZED,
                "The API key this link was made with can no longer sign in (revoked, expired, \
                 or its member removed).",
            )
        }
        Err(e) => return pages::api_error(e.into()),
    };
    match open_session(
        &state,
        &key,
        SignedInWith::Link,
        Redirect::to(HOME).into_response(),
    )
    .await
    {
        Ok(r) => r,
        Err(e) => pages::api_error(e),
    }
}

pub(super) async fn signout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(e) = sign_out(&state, &headers).await {
        return pages::api_error(e);
    }
    let mut r = Redirect::to("/console/signin?ended=out").into_response();
    r.headers_mut().insert(SET_COOKIE, clear_cookie());
    r
}

#[derive(Deserialize, Default)]
pub(super) struct KeysQuery {
    #[serde(default)]
    all: bool,
    done: Option<String>,
}

fn flash(done: Option<&str>) -> Option<&'static str> {
    match done? {
        "revoked" => Some("The key was revoked."),
        "removed" => Some("The member was removed and their keys revoked."),
        "cancelled" => Some("The invitation was cancelled."),
        _ => None,
    }
}

pub(super) async fn keys_page(
    State(state): State<AppState>,
    signed: Signed,
    Query(q): Query<KeysQuery>,
) -> Response {
    let caller = signed.caller;
    let all = q.all && caller.has_manager_role();
    let now = OffsetDateTime::now_utc();
    // The page still shows when the warning cannot be computed.
    let warning = state
        .store
        .admin_key_warning(&caller.key.member_id, caller.key.member_role, now)
        .await
        .unwrap_or_default();
    let listed = keys::list(
        State(state),
        caller.clone(),
        ApiQuery(keys::ListKeysQuery {
            all,
            limit: Some(MAX_PAGE_LIMIT),
            after: None,
        }),
    )
    .await;
    match listed {
        Ok(Json(page)) => pages::html_response(
            StatusCode::OK,
            pages::keys(
                &viewer(&caller),
                &page.keys,
                all,
                now,
                flash(q.done.as_deref()),
                warning.as_deref(),
            ),
        ),
        Err(e) => pages::api_error(e),
    }
}

#[derive(Deserialize)]
pub(super) struct CreateKeyForm {
    name: String,
    scope: Scope,
    expires_in_days: Option<u32>,
    #[serde(default)]
    max_uses: String,
}

const COPY_LATER: &str = "It was copied to your clipboard. You can copy it again later from the \
                          API Keys page (Copy); the server re-derives it and records the copy \
                          in the audit log.";

pub(super) async fn create_key(
    State(state): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    form: Result<Form<CreateKeyForm>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(f)) => f,
        Err(r) => return bad_form(&headers, &r),
    };
    let max_uses = match form.max_uses.trim() {
        "" => None,
        n => match n.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                return failure(
                    &headers,
                    ApiError::bad_request("max enrollments must be a whole number (or empty)"),
                )
            }
        },
    };
    let req = CreateKeyRequest {
        name: form.name,
        scope: form.scope,
        expires_in_days: form.expires_in_days,
        expires_in_secs: None,
        max_uses,
    };
    let caller = signed.caller;
    match keys::create(State(state), caller.clone(), ApiJson(req)).await {
        Ok((_, Json(created))) => reveal(
            &headers,
            Some(&viewer(&caller)),
            "API key",
            &format!("New API key “{}”", created.info.name),
            created.key.expose(),
            COPY_LATER,
        ),
        Err(e) => failure(&headers, e),
    }
}

pub(super) async fn copy_key(
    State(state): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let caller = signed.caller;
    match keys::copy(State(state), caller.clone(), Path(id)).await {
        Ok(Json(copied)) => reveal(
            &headers,
            Some(&viewer(&caller)),
            "API key",
            &format!("API key “{}”", copied.info.name),
            copied.key.expose(),
            "Copied again: the copy is recorded in the audit log.",
        ),
        Err(e) => failure(&headers, e),
    }
}

pub(super) async fn revoke_key(
    State(state): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    match keys::revoke(State(state), signed.caller, Path(id)).await {
        Ok(_) => Redirect::to("/console/keys?done=revoked").into_response(),
        Err(e) => failure(&headers, e),
    }
}

#[derive(Deserialize, Default)]
pub(super) struct RotateForm {
    #[serde(default)]
    overlap_secs: u64,
}

pub(super) async fn rotate_key(
    State(state): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<RotateForm>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(f)) => f,
        Err(r) => return bad_form(&headers, &r),
    };
    let caller = signed.caller;
    let req = RotateKeyRequest {
        overlap_secs: Some(form.overlap_secs),
    };
    match keys::rotate(
        State(state),
        caller.clone(),
        Path(id),
        crate::api::OptionalJson(req),
    )
    .await
    {
        Ok((_, Json(created))) => reveal(
            &headers,
            Some(&viewer(&caller)),
            "API key",
            &format!("Rotated API key “{}”", created.info.name),
            created.key.expose(),
            COPY_LATER,
        ),
        Err(e) => failure(&headers, e),
    }
}

pub(super) async fn settings_page(
    State(state): State<AppState>,
    signed: Signed,
    Query(q): Query<KeysQuery>,
) -> Response {
    let caller = signed.caller;
    let now = OffsetDateTime::now_utc();
    let first_page = || {
        ApiQuery(PageQuery {
            limit: Some(MAX_PAGE_LIMIT),
            after: None,
        })
    };
    let list = match members::list(State(state.clone()), caller.clone(), first_page()).await {
        Ok(Json(page)) => page.members,
        Err(e) => return pages::api_error(e),
    };
    let mut rows: Vec<pages::MemberRow> = Vec::new();
    for m in list.into_iter().filter(|m| m.removed_at.is_none()) {
        // The machines this member enrolled that are not revoked (by member id, so a
        // re-invited email does not inherit an earlier member's machines).
        let mut q = DeviceQuery::all(MAX_PAGE_LIMIT);
        q.enrolled_by = Some(m.id.clone());
        q.revoked = Some(false);
        let machines = match state.store.query_devices(&caller.key.workspace_id, q).await {
            Ok(page) => page.items.len(),
            Err(e) => return pages::api_error(e.into()),
        };
        rows.push(pages::MemberRow {
            machines,
            id: m.id,
            email: m.email,
            role: m.role,
            joined: m.created_at,
            active_keys: m.active_keys,
        });
    }
    let pending = if caller.has_manager_role() {
        match invitations::list(State(state), caller.clone(), first_page()).await {
            Ok(Json(p)) => p.invitations,
            Err(e) => return pages::api_error(e),
        }
    } else {
        Vec::new()
    };
    pages::html_response(
        StatusCode::OK,
        pages::settings(
            &viewer(&caller),
            &rows,
            &pending,
            now,
            flash(q.done.as_deref()),
        ),
    )
}

#[derive(Deserialize)]
pub(super) struct InviteForm {
    email: String,
    role: Role,
}

pub(super) async fn invite(
    State(state): State<AppState>,
    signed: Signed,
    uri: Uri,
    headers: HeaderMap,
    form: Result<Form<InviteForm>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(f)) => f,
        Err(r) => return bad_form(&headers, &r),
    };
    let req = InviteRequest {
        email: form.email,
        role: form.role,
        expires_in_secs: None,
    };
    invite_and_reveal(&state, &signed.caller, req, &uri, &headers).await
}

/// Re-creates a pending invitation (a lost or expiring link): a new invitation for the same
/// email and role, whose link is revealed, then the old one is cancelled. If the new one is
/// refused (the person joined meanwhile, say), the old one stays as it was.
pub(super) async fn recreate_invitation(
    State(state): State<AppState>,
    signed: Signed,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let caller = signed.caller;
    let mut after = None;
    let old = loop {
        let page = ApiQuery(PageQuery {
            limit: Some(MAX_PAGE_LIMIT),
            after: after.take(),
        });
        match invitations::list(State(state.clone()), caller.clone(), page).await {
            Ok(Json(p)) => {
                if let Some(inv) = p.invitations.into_iter().find(|i| i.id == id) {
                    break inv;
                }
                match p.next_after {
                    Some(next) => after = Some(next),
                    None => {
                        return failure(
                            &headers,
                            ApiError::not_found(
                                "no such pending invitation: it was accepted, cancelled or has                                  expired; invite the person again",
                            ),
                        )
                    }
                }
            }
            Err(e) => return failure(&headers, e),
        }
    };
    let req = InviteRequest {
        email: old.email,
        role: old.role,
        expires_in_secs: None,
    };
    let shown = invite_and_reveal(&state, &caller, req, &uri, &headers).await;
    if !shown.status().is_success() {
        return shown;
    }
    match invitations::cancel(State(state), caller, Path(id)).await {
        Ok(_) => shown,
        Err(e) => failure(&headers, e),
    }
}

async fn invite_and_reveal(
    state: &AppState,
    caller: &Caller,
    req: InviteRequest,
    uri: &Uri,
    headers: &HeaderMap,
) -> Response {
    match invitations::invite(State(state.clone()), caller.clone(), ApiJson(req)).await {
        Ok((_, Json(inv))) => {
            let link = format!(
                "{}/console/join#{}",
                origin(headers, uri),
                inv.token.expose()
            );
            reveal(
                headers,
                Some(&viewer(caller)),
                "Invitation link",
                &format!("Invitation for {}", inv.email),
                &link,
                &format!(
                    "Send this link to {} (it was copied to your clipboard). It works once, \
                     until {}; it is not shown again.",
                    inv.email,
                    pages::when(inv.expires_at)
                ),
            )
        }
        Err(e) => failure(headers, e),
    }
}

pub(super) async fn cancel_invitation(
    State(state): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    match invitations::cancel(State(state), signed.caller, Path(id)).await {
        Ok(_) => Redirect::to("/console/settings?done=cancelled").into_response(),
        Err(e) => failure(&headers, e),
    }
}

pub(super) async fn remove_member(
    State(state): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    match members::remove(State(state), signed.caller, Path(id)).await {
        Ok(_) => Redirect::to("/console/settings?done=removed").into_response(),
        Err(e) => failure(&headers, e),
    }
}

pub(super) async fn join_page() -> Response {
    pages::html_response(StatusCode::OK, pages::join())
}

#[derive(Deserialize)]
pub(super) struct JoinForm {
    token: String,
    #[serde(default)]
    key_name: Option<String>,
}

pub(super) async fn join(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<JoinForm>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(f)) => f,
        Err(r) => return bad_form(&headers, &r),
    };
    let req = AcceptInvitationRequest {
        token: form.token.into(),
        key_name: form.key_name,
    };
    let joined = match invitations::accept(State(state.clone()), ApiJson(req)).await {
        Ok((_, Json(j))) => j,
        Err(e) => return failure(&headers, e),
    };
    let key = joined.key;
    let shown = reveal(
        &headers,
        None,
        "API key",
        &format!("Welcome to {}: your first API key", joined.workspace_name),
        key.key.expose(),
        "It was copied to your clipboard, and you are signed in. You can copy it again later \
         from the API Keys page.",
    );
    let record = match state.store.find_key(&key.info.id).await {
        Ok(Some(record)) => record,
        Ok(None) => return failure(&headers, ApiError::internal("the new key is not stored")),
        Err(e) => return failure(&headers, e.into()),
    };
    match open_session(&state, &record, SignedInWith::Invitation, shown).await {
        Ok(r) => r,
        Err(e) => failure(&headers, e),
    }
}

#[derive(Deserialize, Default)]
pub(super) struct AuditForm {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    since: String,
}

pub(super) async fn audit_page(
    State(state): State<AppState>,
    signed: Signed,
    Query(q): Query<AuditForm>,
) -> Response {
    let caller = signed.caller;
    let now = OffsetDateTime::now_utc();
    let since = match q.since.as_str() {
        "1h" => Some(now - time::Duration::hours(1)),
        "24h" => Some(now - time::Duration::days(1)),
        "7d" => Some(now - time::Duration::days(7)),
        "30d" => Some(now - time::Duration::days(30)),
        _ => None,
    };
    let query = audit::AuditQuery {
        actor: Some(q.actor.clone()),
        action: Some(q.action.clone()),
        target: None,
        since: since.map(pages::when),
        limit: Some(DEFAULT_PAGE_LIMIT),
        after: None,
    };
    match audit::list(State(state), caller.clone(), ApiQuery(query)).await {
        Ok(Json(page)) => pages::html_response(
            StatusCode::OK,
            pages::audit(
                &viewer(&caller),
                &page.events,
                &q.actor,
                &q.action,
                &q.since,
                now,
            ),
        ),
        Err(e) => pages::api_error(e),
    }
}

pub(super) async fn add_device_page(
    State(state): State<AppState>,
    signed: Signed,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let caller = signed.caller;
    let listed = keys::list(
        State(state.clone()),
        caller.clone(),
        ApiQuery(keys::ListKeysQuery {
            all: false,
            limit: Some(MAX_PAGE_LIMIT),
            after: None,
        }),
    )
    .await;
    let list = match listed {
        Ok(Json(page)) => page.keys,
        Err(e) => return pages::api_error(e),
    };
    let enroll: Vec<pages::EnrollKey> = list
        .into_iter()
        .filter(|k| k.info.scope == Scope::Enroll && k.status == KeyStatus::Active)
        .map(|k| pages::EnrollKey {
            id: k.info.id.as_str().to_owned(),
            name: k.info.name,
            uses: k.uses,
            max_uses: k.max_uses,
            expires_at: k.info.expires_at,
        })
        .collect();
    pages::html_response(
        StatusCode::OK,
        pages::add_device(
            &viewer(&caller),
            &enroll,
            &origin(&headers, &uri),
            &state.cas.current().server().fingerprint().to_string(),
            OffsetDateTime::now_utc(),
        ),
    )
}
