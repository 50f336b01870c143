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
use crate::gateway::{Seen, SessionRegistry};
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
    let loaded = data.load(&[]).await.unwrap();
    let store = Arc::new(loaded.store);
    let state = AppState::new(ApiContext {
        store: Arc::clone(&store),
        cas: crate::datadir::authority::Authorities::new(loaded.authority),
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
    "/console/add-device/wait?key=AAAAAAAAAAAA&since=0",
    "/console/devices",
    "/console/devices?state=connected&part=rows",
];

#[tokio::test]
async fn every_page_needs_a_session() {
    let c = console().await;
    for page in PAGES.iter().chain(&["/console/devices/dev_AAAAAAAAAAAA"]) {
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
        "/console/devices/bulk",
        "/console/devices/dev_AAAAAAAAAAAA/rename",
        "/console/devices/dev_AAAAAAAAAAAA/labels",
        "/console/devices/dev_AAAAAAAAAAAA/revoke",
        "/console/devices/dev_AAAAAAAAAAAA/delete",
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
    assert!(!page.body.contains(link.token.expose()));
    let form = format!("token={}", link.token.expose());
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
        let record = c.store.find_key(key.id()).await.unwrap().unwrap();
        c.store
            .create_console_session(
                ConsoleSession {
                    id_hash: secret_hash(&id),
                    key_id: key.id().clone(),
                    created_at: now - time::Duration::hours(13),
                    last_seen_at: last_seen,
                    expires_at: expires,
                },
                AuditEntry {
                    workspace_id: record.workspace_id,
                    at: now,
                    actor: record.member_email,
                    action: AuditAction::ConsoleSignIn,
                    target: key.id().as_str().to_owned(),
                    details: serde_json::json!({}),
                    caller: None,
                },
            )
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

/// Enrolls `names` (straight into the store) for the owner; even-numbered ones get
/// `site=lyon`. Returns their ids in the same order.
async fn enroll_devices(c: &Console, names: &[String]) -> Vec<heex_proto::DeviceId> {
    let key: ApiKey = c.owner_key.parse().unwrap();
    let owner = c.store.find_key(key.id()).await.unwrap().unwrap();
    let now = crate::api::whole_seconds(OffsetDateTime::now_utc());
    let mut ids = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let id = heex_proto::DeviceId::generate();
        let labels = if i % 2 == 0 {
            [("site".to_owned(), "lyon".to_owned())].into()
        } else {
            Default::default()
        };
        let device = crate::store::NewDevice {
            spiffe_id: heex_proto::SpiffeId::new(
                "heex.test",
                owner.workspace_id.clone(),
                id.clone(),
            )
            .unwrap(),
            id: id.clone(),
            workspace_id: owner.workspace_id.clone(),
            name: name.clone(),
            labels,
            facts: Some(heex_proto::api::Facts {
                os: Some("Debian GNU/Linux".into()),
                os_version: Some("12".into()),
                arch: Some("aarch64".into()),
                ..Default::default()
            }),
            enrolled_at: now,
            enrolled_by_key: owner.id.clone(),
            enrolled_by_member: owner.member_id.clone(),
            cert_serial: "40aa".into(),
            cert_expires_at: now + time::Duration::days(30),
            cert_ca: "sha256:old".into(),
            cert_key: "key".into(),
        };
        let audit = AuditEntry {
            workspace_id: owner.workspace_id.clone(),
            at: now,
            actor: owner.member_email.clone(),
            action: AuditAction::DeviceEnroll,
            target: id.as_str().to_owned(),
            details: serde_json::json!({}),
            caller: None,
        };
        c.store.insert_device(device, audit).await.unwrap();
        ids.push(id);
    }
    ids
}

/// The `href` of the link whose text is `text`, unescaped.
fn link_to(body: &str, text: &str) -> Option<String> {
    let end = body.find(&format!(">{text}</a>"))?;
    let start = body[..end].rfind("href=\"")? + "href=\"".len();
    let len = body[start..].find('"')?;
    Some(body[start..start + len].replace("&amp;", "&"))
}

#[tokio::test]
async fn the_devices_page_lists_filters_and_pages_the_fleet() {
    let c = console().await;
    let session = c.signed_in_owner().await;
    let names: Vec<String> = (0..60).map(|i| format!("robot-{i:02}")).collect();
    let ids = enroll_devices(&c, &names).await;
    assert!(matches!(
        c.store
            .record_connected(
                &ids[7],
                None,
                Some("0.9.1"),
                OffsetDateTime::now_utc(),
                "gw-1",
                true
            )
            .await
            .unwrap(),
        Seen::Recorded
    ));

    let first = c.get("/console/devices", Some(&session)).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let body = &first.body;
    assert!(body.contains("<strong>60</strong> devices"), "{body}");
    assert!(body.contains("<strong>1</strong> connected"), "{body}");
    assert!(body.contains("robot-00") && body.contains("robot-49"));
    assert!(!body.contains("robot-50"), "a page holds 50 devices");
    assert!(body.contains("0.9.1") && body.contains("aarch64"));
    assert_eq!(body.matches("class=\"status connected\"").count(), 1);
    // The next page continues in name order, and offers the first page back.
    let next = link_to(body, "Next page").expect("a next page link");
    let second = c.get(&next, Some(&session)).await;
    assert!(second.body.contains("robot-50") && second.body.contains("robot-59"));
    assert!(!second.body.contains("robot-49"));
    assert!(
        link_to(&second.body, "Next page").is_none(),
        "the last page"
    );
    assert_eq!(
        link_to(&second.body, "First page").as_deref(),
        Some("/console/devices")
    );

    // Filters: label, session, text; a bad selector is explained on the page.
    let lyon = c
        .get("/console/devices?label=site%3Dlyon", Some(&session))
        .await
        .body;
    assert!(lyon.contains("robot-00") && !lyon.contains("robot-01"));
    let live = c
        .get("/console/devices?state=connected", Some(&session))
        .await
        .body;
    assert!(live.contains("robot-07") && !live.contains("robot-08"));
    let found = c
        .get("/console/devices?search=BOT-3", Some(&session))
        .await
        .body;
    assert_eq!(found.matches("<tr data-id=").count(), 10, "robot-30…39");
    let bad = c.get("/console/devices?label=%3Dx", Some(&session)).await;
    assert_eq!(bad.status, StatusCode::OK);
    assert!(bad.body.contains("role=\"alert\""), "{}", bad.body);

    // What the page's script refreshes: counts and rows only.
    let part = c
        .get("/console/devices?state=connected&part=rows", Some(&session))
        .await
        .body;
    assert!(part.starts_with("<div>"), "{part}");
    assert!(part.contains("id=\"device-rows\"") && part.contains("robot-07"));
    assert!(!part.contains("<html"));
    // The page asks for exactly that part, filters included.
    assert!(live.contains("data-live-src=\"/console/devices?state=connected&amp;part=rows\""));
}

#[tokio::test]
async fn bulk_actions_apply_to_the_selection_and_nothing_else() {
    let c = console().await;
    let session = c.signed_in_owner().await;
    let names: Vec<String> = (0..4).map(|i| format!("arm-{i}")).collect();
    let ids = enroll_devices(&c, &names).await;
    let ws = workspace(&c).await;
    let form = format!(
        "id={}&id={}&op=label&label=env%3Dprod&filter_label=gpu&sort=-name",
        ids[0], ids[1]
    );
    let a = c
        .post(
            "/console/devices/bulk",
            Some(&session),
            Some(SAME_ORIGIN),
            &form,
            false,
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert_eq!(
        a.location(),
        "/console/devices?label=gpu&sort=-name&done=labelled&n=2&refused=0"
    );
    for (i, id) in ids.iter().enumerate() {
        let d = c.store.find_device(&ws, id).await.unwrap().unwrap();
        assert_eq!(
            d.labels.get("env").map(String::as_str),
            (i < 2).then_some("prod")
        );
        if i == 0 {
            assert_eq!(d.labels["site"], "lyon", "other labels stay");
        }
    }
    let page = c
        .get(&a.location().replace("label=gpu&", ""), Some(&session))
        .await;
    assert!(
        page.body.contains("Label set on 2 devices."),
        "{}",
        page.body
    );

    // Revoke two, one of them an unknown id: one revoked, one refused.
    let form = format!("id={}&id=dev_nosuchdevice&op=revoke", ids[2]);
    let a = c
        .post(
            "/console/devices/bulk",
            Some(&session),
            Some(SAME_ORIGIN),
            &form,
            false,
        )
        .await;
    assert_eq!(a.location(), "/console/devices?done=revoked&n=1&refused=1");
    let revoked = c.store.find_device(&ws, &ids[2]).await.unwrap().unwrap();
    assert!(revoked.revoked_at.is_some());
    let kept = c.store.find_device(&ws, &ids[3]).await.unwrap().unwrap();
    assert!(kept.revoked_at.is_none());

    // No selection, a bad label, an unknown action: refused, nothing changed.
    for form in [
        "op=revoke".to_owned(),
        format!("id={}&op=label&label=nokey", ids[3]),
        format!("id={}&op=explode", ids[3]),
    ] {
        let a = c
            .post(
                "/console/devices/bulk",
                Some(&session),
                Some(SAME_ORIGIN),
                &form,
                false,
            )
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{form}: {}", a.body);
    }
    let kept = c.store.find_device(&ws, &ids[3]).await.unwrap().unwrap();
    assert!(kept.revoked_at.is_none() && kept.labels.is_empty());
    // A cross-site bulk revoke is refused before it runs.
    let form = format!("id={}&op=revoke", ids[3]);
    let a = c
        .post(
            "/console/devices/bulk",
            Some(&session),
            Some("https://evil.example"),
            &form,
            false,
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let kept = c.store.find_device(&ws, &ids[3]).await.unwrap().unwrap();
    assert!(kept.revoked_at.is_none());
}

#[tokio::test]
async fn a_device_page_shows_it_and_renames_relabels_and_revokes_it() {
    let c = console().await;
    let session = c.signed_in_owner().await;
    let ids = enroll_devices(&c, &["<b>robot</b>".to_owned()]).await;
    let ws = workspace(&c).await;
    let id = ids[0].as_str();
    let path = format!("/console/devices/{id}");
    let page = c.get(&path, Some(&session)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("&lt;b&gt;robot&lt;/b&gt;") && !page.body.contains("<b>robot"));
    assert!(page.body.contains("Debian GNU/Linux") && page.body.contains("site=lyon"));
    let status = c.get(&format!("{path}?part=status"), Some(&session)).await;
    assert!(status.body.starts_with("<dl>") && status.body.contains("offline"));

    let a = c
        .post(
            &format!("{path}/rename"),
            Some(&session),
            Some(SAME_ORIGIN),
            "name=arm-7",
            false,
        )
        .await;
    assert_eq!(a.location(), format!("{path}?done=renamed"));
    let a = c
        .post(
            &format!("{path}/labels"),
            Some(&session),
            Some(SAME_ORIGIN),
            "labels=site%3Dparis%0D%0Agpu",
            false,
        )
        .await;
    assert_eq!(a.location(), format!("{path}?done=labelled"), "{}", a.body);
    let d = c.store.find_device(&ws, &ids[0]).await.unwrap().unwrap();
    assert_eq!(d.name, "arm-7");
    assert_eq!(d.labels.len(), 2);
    assert_eq!(d.labels["site"], "paris");
    // A bad label is refused with the API's reason, and changes nothing.
    let bad = c
        .post(
            &format!("{path}/labels"),
            Some(&session),
            Some(SAME_ORIGIN),
            "labels=bad%20key%3Dx",
            false,
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("label key"), "{}", bad.body);
    assert_eq!(
        c.store
            .find_device(&ws, &ids[0])
            .await
            .unwrap()
            .unwrap()
            .labels
            .len(),
        2
    );
    let a = c
        .post(
            &format!("{path}/revoke"),
            Some(&session),
            Some(SAME_ORIGIN),
            "",
            false,
        )
        .await;
    assert_eq!(a.location(), format!("{path}?done=revoked"));
    let page = c
        .get(&format!("{path}?done=revoked"), Some(&session))
        .await
        .body;
    assert!(page.contains("was revoked") && page.contains("Delete this device"));
    let a = c
        .post(
            &format!("{path}/delete"),
            Some(&session),
            Some(SAME_ORIGIN),
            "",
            false,
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert!(c.store.find_device(&ws, &ids[0]).await.unwrap().is_none());
    assert_eq!(
        c.get(&path, Some(&session)).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn add_device_waits_for_devices_enrolled_with_the_key_since_the_page_was_shown() {
    let c = console().await;
    let session = c.signed_in_owner().await;
    let key: ApiKey = c.owner_key.parse().unwrap();
    let before = OffsetDateTime::now_utc().unix_timestamp() - 5;
    let ids = enroll_devices(&c, &["robot-7".to_owned()]).await;
    let wait = |since: i64| {
        format!(
            "/console/add-device/wait?key={}&since={since}",
            key.id().as_str()
        )
    };
    let a = c.get(&wait(before), Some(&session)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let body: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(body["devices"][0]["name"], "robot-7");
    assert_eq!(body["devices"][0]["connected"], false);
    c.store
        .record_connected(&ids[0], None, None, OffsetDateTime::now_utc(), "gw-1", true)
        .await
        .unwrap();
    let body: serde_json::Value =
        serde_json::from_str(&c.get(&wait(before), Some(&session)).await.body).unwrap();
    assert_eq!(body["devices"][0]["connected"], true);
    // Devices enrolled before the page was shown do not count.
    let later = OffsetDateTime::now_utc().unix_timestamp() + 60;
    let body: serde_json::Value =
        serde_json::from_str(&c.get(&wait(later), Some(&session)).await.body).unwrap();
    assert_eq!(body["devices"].as_array().unwrap().len(), 0);
    let bad = c
        .get("/console/add-device/wait?key=nope", Some(&session))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn sign_in_and_sign_out_are_in_the_audit_log() {
    let c = console().await;
    let session = c.signed_in_owner().await;
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
    // Signing out twice (an old tab) records nothing more.
    c.post(
        "/console/signout",
        Some(&session),
        Some(SAME_ORIGIN),
        "",
        false,
    )
    .await;
    let again = c.signed_in_owner().await;
    let page = c
        .get("/console/audit?action=console.", Some(&again))
        .await
        .body;
    assert_eq!(
        page.matches("<code>console.signin</code>").count(),
        2,
        "{page}"
    );
    assert_eq!(
        page.matches("<code>console.signout</code>").count(),
        1,
        "{page}"
    );
    assert!(page.contains("api_key"));
}

#[tokio::test]
async fn re_creating_an_invitation_gives_a_new_link_and_retires_the_old() {
    let c = console().await;
    let session = c.signed_in_owner().await;
    let a = c
        .api_post(
            "/v1/invitations",
            &c.owner_key,
            serde_json::json!({"email": "carol@example.com", "role": "admin"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let old: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    let old_id = old["id"].as_str().unwrap();
    let old_token = old["token"].as_str().unwrap();
    let path = format!("/console/invitations/{old_id}/recreate");
    let r = c
        .post(&path, Some(&session), Some(SAME_ORIGIN), "", true)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.headers.get("cache-control").unwrap(), "no-store");
    let shown: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let link = shown["secret"].as_str().unwrap();
    let (_, token) = link.split_once("/console/join#").unwrap();
    assert!(token.starts_with("heexinv_") && token != old_token);
    let page = c.get("/console/settings", Some(&session)).await.body;
    assert!(page.contains("carol@example.com"));
    assert!(
        !page.contains(old_id),
        "the old invitation is still pending"
    );
    assert!(!page.contains(token));
    // The old link no longer works; the new one does (as admin, as invited).
    let refused = c
        .post(
            "/console/join",
            None,
            Some(SAME_ORIGIN),
            &format!("token={old_token}"),
            true,
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    let joined = c
        .post(
            "/console/join",
            None,
            Some(SAME_ORIGIN),
            &format!("token={token}"),
            true,
        )
        .await;
    assert_eq!(joined.status, StatusCode::OK, "{}", joined.body);
    // Re-creating one that is gone says so.
    let gone = c
        .post(&path, Some(&session), Some(SAME_ORIGIN), "", true)
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{}", gone.body);
}

/// The API Keys page warns an owner whose last usable admin key expires within 14 days,
/// with what to do; not one whose key outlives the window.
#[tokio::test]
async fn the_keys_page_warns_an_owner_about_to_lose_admin_access() {
    let c = console().await;
    let session = c.signed_in_owner().await;
    let page = c.get("/console/keys", Some(&session)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains("Warning:"), "{}", page.body);

    let made = c
        .api_post(
            "/v1/keys",
            &c.owner_key,
            serde_json::json!({"name": "short", "scope": "admin", "expires_in_days": 3}),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    let short: serde_json::Value = serde_json::from_str(&made.body).unwrap();
    let short = short["key"].as_str().unwrap().to_owned();
    let owner_id = &c.owner_key[5..17];
    let revoked = c
        .api_post(
            &format!("/v1/keys/{owner_id}/revoke"),
            &c.owner_key,
            serde_json::Value::Null,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    let a = c.sign_in(&short).await;
    let session = a.session().expect("a session cookie");
    let page = c.get("/console/keys", Some(&session)).await;
    assert!(
        page.body
            .contains("Warning: your last admin key expires in"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("heex-cloud keys create"),
        "{}",
        page.body
    );
}
