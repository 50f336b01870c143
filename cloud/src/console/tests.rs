//! The console through the real router (no sockets): sessions, CSRF, headers, and that a
//! session dies with its key.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, HOST, LOCATION, ORIGIN};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use heex_proto::api::ConsoleSignInLink;
use tower::ServiceExt;

use super::*;
use crate::api::{ApiContext, AppState, GatewayAddress};
use crate::cli::InitOptions;
use crate::datadir::DataDir;
use crate::gateway::SessionRegistry;
use crate::store::Store;

const HOST_NAME: &str = "cloud.example:8443";
const SAME_ORIGIN: &str = "https://cloud.example:8443";

struct Console {
    _dir: tempfile::TempDir,
    router: Router,
    owner_key: String,
    store: Arc<Store>,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The session id a sign-in set.
    fn session(&self) -> Option<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| c.strip_prefix(&format!("{SESSION_COOKIE}=")))
            .map(|c| c.split(';').next().unwrap_or("").to_owned())
            .filter(|c| !c.is_empty())
    }
}

async fn console() -> Console {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path().join("data"));
    let report = data
        .init(&InitOptions {
            workspace: "default".into(),
            owner: "owner@example.com".into(),
            hostnames: vec![],
            trust_domain: "heex.test".into(),
        })
        .await
        .unwrap();
    let loaded = data.load(&[]).unwrap();
    let store = Arc::new(loaded.store);
    let state = AppState::new(ApiContext {
        store: Arc::clone(&store),
        ca: Arc::new(loaded.ca),
        secret: loaded.secret,
        registry: SessionRegistry::default(),
        trust_domain: loaded.settings.trust_domain,
        device_cert_lifetime: Duration::from_secs(3600),
        gateway: GatewayAddress::SameHost(8444),
    });
    Console {
        _dir: dir,
        router: app(state),
        owner_key: report.owner_key.expose(),
        store,
    }
}

impl Console {
    async fn send(&self, req: Request<Body>) -> Answer {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get(&self, path: &str, session: Option<&str>) -> Answer {
        let mut req = Request::get(path).header(HOST, HOST_NAME);
        if let Some(s) = session {
            req = req.header(COOKIE, format!("{SESSION_COOKIE}={s}"));
        }
        self.send(req.body(Body::empty()).unwrap()).await
    }

    async fn post(
        &self,
        path: &str,
        session: Option<&str>,
        origin: Option<&str>,
        form: &str,
        json: bool,
    ) -> Answer {
        let mut req = Request::post(path)
            .header(HOST, HOST_NAME)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(s) = session {
            req = req.header(COOKIE, format!("{SESSION_COOKIE}={s}"));
        }
        if let Some(o) = origin {
            req = req.header(ORIGIN, o);
        }
        if json {
            req = req.header(ACCEPT_HEADER, "application/json");
        }
        self.send(req.body(Body::from(form.to_owned())).unwrap())
            .await
    }

    async fn sign_in(&self, key: &str) -> Answer {
        let form = format!("key={}", urlencode(key));
        self.post("/console/signin", None, Some(SAME_ORIGIN), &form, false)
            .await
    }

    async fn signed_in_owner(&self) -> String {
        let a = self.sign_in(&self.owner_key).await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
        assert_eq!(a.location(), "/console/keys");
        a.session().expect("a session cookie")
    }

    async fn api_post(&self, path: &str, key: &str, body: serde_json::Value) -> Answer {
        let req = Request::post(path)
            .header(HOST, HOST_NAME)
            .header(AUTHORIZATION, format!("Bearer {key}"))
            .header(CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        self.send(req).await
    }
}

const ACCEPT_HEADER: axum::http::HeaderName = axum::http::header::ACCEPT;

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

const PAGES: &[&str] = &[
    "/console/keys",
    "/console/keys?all=true",
    "/console/settings",
    "/console/audit",
    "/console/add-device",
];

#[tokio::test]
async fn every_page_needs_a_session() {
    let c = console().await;
    for page in PAGES {
        let a = c.get(page, None).await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{page}");
        assert_eq!(a.location(), "/console/signin", "{page}");
        let forged = c.get(page, Some(&base62::random(SESSION_ID_LEN))).await;
        assert_eq!(forged.location(), "/console/signin", "{page}");
    }
    for action in [
        "/console/keys",
        "/console/keys/AAAAAAAAAAAA/copy",
        "/console/keys/AAAAAAAAAAAA/revoke",
        "/console/keys/AAAAAAAAAAAA/rotate",
        "/console/invitations",
        "/console/invitations/inv_AAAAAAAAAAAAAAAA/cancel",
        "/console/members/mem_AAAAAAAAAAAA/remove",
    ] {
        let a = c
            .post(action, None, Some(SAME_ORIGIN), "name=x&scope=admin", false)
            .await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{action}: {}", a.body);
        assert_eq!(a.location(), "/console/signin", "{action}");
    }
    // The root leads to the console, which leads to sign-in.
    assert_eq!(c.get("/", None).await.location(), "/console/keys");
    let signin = c.get("/console/signin", None).await;
    assert_eq!(signin.status, StatusCode::OK);
    assert!(signin.body.contains("type=\"password\""), "{}", signin.body);
}

#[tokio::test]
async fn sign_in_sets_a_strict_cookie_and_every_page_has_strict_headers() {
    let c = console().await;
    let a = c.sign_in(&c.owner_key).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let cookie = a.headers.get(SET_COOKIE).unwrap().to_str().unwrap();
    for part in [
        "__Host-heex_session=",
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
    ] {
        assert!(cookie.contains(part), "{cookie}");
    }
    let session = a.session().unwrap();
    // Only the hash is stored.
    assert!(c
        .store
        .find_console_session(&session)
        .await
        .unwrap()
        .is_none());
    assert!(c
        .store
        .find_console_session(&secret_hash(&session))
        .await
        .unwrap()
        .is_some());
    for page in PAGES.iter().chain(["/console/signin"].iter()) {
        let a = c.get(page, Some(&session)).await;
        assert_eq!(a.status, StatusCode::OK, "{page}: {}", a.body);
        let h = |name: &str| {
            a.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        assert_eq!(h("cache-control"), "no-store", "{page}");
        assert_eq!(h("x-content-type-options"), "nosniff", "{page}");
        assert_eq!(h("referrer-policy"), "no-referrer", "{page}");
        let csp = h("content-security-policy");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert!(!a.body.contains("<script>"), "{page}: inline script");
        assert!(!a.body.contains(&c.owner_key), "{page} shows the key");
    }
    // Signing out ends the session on the server.
    let out = c
        .post(
            "/console/signout",
            Some(&session),
            Some(SAME_ORIGIN),
            "",
            false,
        )
        .await;
    assert_eq!(out.location(), "/console/signin?ended=out");
    assert_eq!(
        c.get("/console/keys", Some(&session)).await.location(),
        "/console/signin"
    );
}

#[tokio::test]
async fn cross_site_posts_are_refused() {
    let c = console().await;
    let session = c.signed_in_owner().await;
    let before = c
        .store
        .list_keys(
            &workspace(&c).await,
            None,
            crate::store::PageRequest::default(),
        )
        .await
        .unwrap()
        .items
        .len();
    for origin in [
        None,
        Some("https://evil.example"),
        Some("http://cloud.example:8443"),
    ] {
        let a = c
            .post(
                "/console/keys",
                Some(&session),
                origin,
                "name=evil&scope=admin&expires_in_days=7",
                true,
            )
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{origin:?}: {}", a.body);
        assert!(a.body.contains("Origin"), "{}", a.body);
        // Signing in is a state change too (login CSRF).
        let form = format!("key={}", urlencode(&c.owner_key));
        let s = c.post("/console/signin", None, origin, &form, false).await;
        assert_eq!(s.status, StatusCode::FORBIDDEN, "{origin:?}");
        assert!(s.session().is_none());
    }
    let after = c
        .store
        .list_keys(
            &workspace(&c).await,
            None,
            crate::store::PageRequest::default(),
        )
        .await
        .unwrap()
        .items
        .len();
    assert_eq!(before, after, "a refused request created a key");
}

async fn workspace(c: &Console) -> heex_proto::WorkspaceId {
    let key: ApiKey = c.owner_key.parse().unwrap();
    c.store
        .find_key(key.id())
        .await
        .unwrap()
        .unwrap()
        .workspace_id
}

use heex_proto::ApiKey;

#[tokio::test]
async fn a_new_key_is_revealed_once_and_its_session_dies_when_revoked() {
    let c = console().await;
    let session = c.signed_in_owner().await;
    let a = c
        .post(
            "/console/keys",
            Some(&session),
            Some(SAME_ORIGIN),
            "name=laptop&scope=admin&expires_in_days=30&max_uses=",
            true,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.headers.get("cache-control").unwrap(), "no-store");
    let body: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    let new_key = body["secret"].as_str().unwrap().to_owned();
    assert!(new_key.starts_with("heex_"));
    let page = c.get("/console/keys", Some(&session)).await;
    assert!(page.body.contains("laptop"));
    assert!(!page.body.contains(&new_key), "the table shows the key");

    // The new key signs in; revoking it (through the API) ends that session at once.
    let second = c.sign_in(&new_key).await.session().unwrap();
    assert_eq!(
        c.get("/console/keys", Some(&second)).await.status,
        StatusCode::OK
    );
    let id = &new_key["heex_".len().."heex_".len() + 12];
    let r = c
        .api_post(
            &format!("/v1/keys/{id}/revoke"),
            &c.owner_key,
            serde_json::json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let dead = c.get("/console/keys", Some(&second)).await;
    assert_eq!(dead.status, StatusCode::SEE_OTHER);
    assert_eq!(dead.location(), "/console/signin?ended=key");
    assert!(c
        .store
        .find_console_session(&secret_hash(&second))
        .await
        .unwrap()
        .is_none());
    // The revoked key cannot sign in again; the owner's session is untouched.
    let again = c.sign_in(&new_key).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    assert!(again.body.contains("revoked"), "{}", again.body);
    assert!(!again.body.contains(&new_key));
    assert_eq!(
        c.get("/console/keys", Some(&session)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn enroll_keys_and_bad_keys_cannot_sign_in() {
    let c = console().await;
    let created = c
        .api_post(
            "/v1/keys",
            &c.owner_key,
            serde_json::json!({"name": "fleet", "scope": "enroll"}),
        )
        .await;
    let enroll: serde_json::Value = serde_json::from_str(&created.body).unwrap();
    let enroll = enroll["key"].as_str().unwrap();
    let a = c.sign_in(enroll).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert!(a.body.contains("scope"), "{}", a.body);
    assert!(a.session().is_none());
    assert!(!a.body.contains(enroll));
    // An enroll key gets no sign-in link either.
    let link = c
        .api_post("/v1/console/signin-links", enroll, serde_json::json!({}))
        .await;
    assert_eq!(link.status, StatusCode::FORBIDDEN);
    // A forged key (right shape, wrong secret) and garbage are a plain refusal.
    let mut forged = c.owner_key.clone();
    forged.replace_range(20..21, if &forged[20..21] == "A" { "B" } else { "A" });
    for bad in [forged.as_str(), "not-a-key", ""] {
        let a = c.sign_in(bad).await;
        assert!(a.status.is_client_error(), "{bad}");
        assert!(a.session().is_none());
    }
}

#[tokio::test]
async fn sign_in_links_work_once() {
    let c = console().await;
    let a = c
        .api_post(
            "/v1/console/signin-links",
            &c.owner_key,
            serde_json::json!({}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let link: ConsoleSignInLink = serde_json::from_str(&a.body).unwrap();
    assert_eq!(link.path, "/console/signin/link");
    let page = c.get(&link.path, None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains(&link.token));
    let form = format!("token={}", link.token);
    let first = c
        .post(
            "/console/signin/link",
            None,
            Some(SAME_ORIGIN),
            &form,
            false,
        )
        .await;
    assert_eq!(first.status, StatusCode::SEE_OTHER, "{}", first.body);
    assert_eq!(first.location(), "/console/keys");
    let session = first.session().unwrap();
    assert_eq!(
        c.get("/console/keys", Some(&session)).await.status,
        StatusCode::OK
    );
    let second = c
        .post(
            "/console/signin/link",
            None,
            Some(SAME_ORIGIN),
            &form,
            false,
        )
        .await;
    assert_eq!(second.status, StatusCode::UNAUTHORIZED);
    assert!(second.session().is_none());
}

#[tokio::test]
async fn idle_and_absolute_timeouts_end_sessions() {
    let c = console().await;
    let key: ApiKey = c.owner_key.parse().unwrap();
    let now = crate::api::whole_seconds(OffsetDateTime::now_utc());
    let mut ids = Vec::new();
    for (last_seen, expires) in [
        (
            now - IDLE_TIMEOUT - time::Duration::seconds(1),
            now + ABSOLUTE_TIMEOUT,
        ),
        (now, now - time::Duration::seconds(1)),
    ] {
        let id = base62::random(SESSION_ID_LEN);
        c.store
            .create_console_session(ConsoleSession {
                id_hash: secret_hash(&id),
                key_id: key.id().clone(),
                created_at: now - time::Duration::hours(13),
                last_seen_at: last_seen,
                expires_at: expires,
            })
            .await
            .unwrap();
        ids.push(id);
    }
    for id in ids {
        let a = c.get("/console/keys", Some(&id)).await;
        assert_eq!(a.location(), "/console/signin?ended=timeout");
    }
    // A fresh one works.
    let fresh = c.signed_in_owner().await;
    assert_eq!(
        c.get("/console/keys", Some(&fresh)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn other_peoples_text_is_escaped() {
    let c = console().await;
    let session = c.signed_in_owner().await;
    let hostile = "<img src=x onerror=alert(1)>\"'&";
    let a = c
        .api_post(
            "/v1/keys",
            &c.owner_key,
            serde_json::json!({"name": hostile, "scope": "enroll"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    for page in ["/console/keys", "/console/add-device", "/console/audit"] {
        let body = c.get(page, Some(&session)).await.body;
        assert!(!body.contains("<img src=x"), "{page}: {body}");
        assert!(
            body.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{page}"
        );
    }
}
