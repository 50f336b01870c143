//! Handler tests through the real router (no sockets).

use axum::body::Body;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use axum::http::{Method, Request, StatusCode};
use heex_proto::api::Scope;
use heex_proto::api::{
    CreateKeyResponse, DeviceInfo, EnrollResponse, ErrorBody, ErrorCode, KeyInfo, WhoAmI,
};
use std::sync::Arc;
use std::time::Duration;

use heex_proto::{ApiKey, KeyId};
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384};
use rustls_pki_types::pem::PemObject;
use serde::de::DeserializeOwned;
use serde_json::json;
use tower::ServiceExt;

use super::*;
use crate::cli::InitOptions;
use crate::datadir::{DataDir, ServerSecret};
use crate::gateway::SessionRegistry;
use crate::store::Store;

mod lifecycle;
mod openapi;
mod paging;
mod promises;

struct Api {
    _dir: tempfile::TempDir,
    router: Router,
    owner_key: String,
    secret: ServerSecret,
    store: Arc<Store>,
}

async fn api() -> Api {
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
    let secret = loaded.secret.clone();
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
    Api {
        _dir: dir,
        router: router(state),
        owner_key: report.owner_key.expose(),
        secret,
        store,
    }
}

impl Api {
    async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<String>,
    ) -> (StatusCode, Vec<u8>) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "cloud.example:8443");
        if let Some(key) = key {
            req = req.header(AUTHORIZATION, format!("Bearer {key}"));
        }
        let body = match body {
            Some(b) => {
                req = req.header(CONTENT_TYPE, "application/json");
                Body::from(b)
            }
            None => Body::empty(),
        };
        let resp = self
            .router
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, bytes.to_vec())
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<serde_json::Value>,
        expect: StatusCode,
    ) -> T {
        let (status, bytes) = self
            .call(method, path, key, body.map(|b| b.to_string()))
            .await;
        assert_eq!(status, expect, "{}", String::from_utf8_lossy(&bytes));
        serde_json::from_slice(&bytes).unwrap()
    }

    async fn error(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<serde_json::Value>,
        expect: StatusCode,
    ) -> ErrorBody {
        self.json(method, path, key, body, expect).await
    }

    async fn create_key(&self, by: &str, body: serde_json::Value) -> CreateKeyResponse {
        self.json(
            Method::POST,
            "/v1/keys",
            Some(by),
            Some(body),
            StatusCode::CREATED,
        )
        .await
    }
}

fn csr_pem(alg: &'static rcgen::SignatureAlgorithm) -> String {
    let key = KeyPair::generate_for(alg).unwrap();
    let mut params = CertificateParams::new(vec!["ignored.example".to_owned()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn enroll_body(csr: String, name: &str) -> serde_json::Value {
    json!({ "csr_pem": csr, "name": name, "labels": {"site": "lab"}, "facts": {"hostname": "r1"} })
}

#[tokio::test]
async fn health_and_ca_need_no_key() {
    let api = api().await;
    let (status, body) = api.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, b"ok".as_slice())
    );
    let (status, body) = api.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, b"ready".as_slice()),
        "the store answers: ready"
    );
    let (status, body) = api.call(Method::GET, "/v1/ca", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8(body)
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    let e = api
        .error(
            Method::GET,
            "/v1/nothing",
            None,
            None,
            StatusCode::NOT_FOUND,
        )
        .await;
    assert_eq!(e.error, ErrorCode::NotFound);
}

#[tokio::test]
async fn whoami_and_plain_401s() {
    let api = api().await;
    let me: WhoAmI = api
        .json(
            Method::GET,
            "/v1/whoami",
            Some(&api.owner_key),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(me.email, "owner@example.com");
    assert_eq!(me.role, "owner");
    assert_eq!(me.workspace_name, "default");
    assert_eq!(me.key.scope, Scope::Admin);

    let unknown = ApiKey::derive(api.secret.as_bytes(), KeyId::generate()).expose();
    let forged_id: KeyId = api.owner_key[5..17].parse().unwrap();
    let forged = ApiKey::derive(b"not the server secret", forged_id).expose();
    let truncated = api.owner_key[..40].to_owned();
    for key in [
        None,
        Some(unknown.as_str()),
        Some(forged.as_str()),
        Some(truncated.as_str()),
    ] {
        let e = api
            .error(
                Method::GET,
                "/v1/whoami",
                key,
                None,
                StatusCode::UNAUTHORIZED,
            )
            .await;
        assert_eq!(e.error, ErrorCode::Unauthorized, "{key:?}");
        assert_eq!(e.message, "missing or invalid API key");
    }
}

#[tokio::test]
async fn enroll_issues_a_server_built_certificate() {
    let api = api().await;
    let enroller = api
        .create_key(&api.owner_key, json!({"name": "fleet", "scope": "enroll"}))
        .await;
    let resp: EnrollResponse = api
        .json(
            Method::POST,
            "/v1/enroll",
            Some(enroller.key.expose()),
            Some(enroll_body(csr_pem(&PKCS_ECDSA_P256_SHA256), "robot-1")),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(resp.gateway, "cloud.example:8444");
    assert_eq!(resp.spiffe_id.device(), &resp.device_id);
    assert_eq!(resp.spiffe_id.trust_domain(), "heex.test");
    assert!(resp.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    let der = rustls_pki_types::CertificateDer::from_pem_slice(resp.certificate_pem.as_bytes());
    let der = der.unwrap();
    let (_, x509) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert!(!x509.basic_constraints().unwrap().unwrap().value.ca);
    assert_eq!(
        x509.validity().not_after.to_datetime(),
        resp.expires_at,
        "expires_at matches the certificate"
    );

    let devices: Vec<DeviceInfo> = api
        .json::<heex_proto::api::DevicePage>(
            Method::GET,
            "/v1/devices",
            Some(&api.owner_key),
            None,
            StatusCode::OK,
        )
        .await
        .devices;
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].id, resp.device_id);
    assert_eq!(devices[0].name, "robot-1");
    assert_eq!(devices[0].enrolled_by_key, enroller.info.id);
    assert_eq!(devices[0].enrolled_by_member, "owner@example.com");
    assert!(!devices[0].connected);
    assert_eq!(
        devices[0].facts.as_ref().unwrap().hostname.as_deref(),
        Some("r1")
    );

    // An enroll-scope key may not list devices or create keys.
    let e = api
        .error(
            Method::GET,
            "/v1/devices",
            Some(enroller.key.expose()),
            None,
            StatusCode::FORBIDDEN,
        )
        .await;
    assert_eq!(e.error, ErrorCode::Forbidden);
    let e = api
        .error(
            Method::POST,
            "/v1/keys",
            Some(enroller.key.expose()),
            Some(json!({"name": "x"})),
            StatusCode::FORBIDDEN,
        )
        .await;
    assert_eq!(e.error, ErrorCode::Forbidden);
}

#[tokio::test]
async fn enroll_rejects_bad_input() {
    let api = api().await;
    let key = api.owner_key.clone();
    let cases = [
        (enroll_body("garbage".into(), "r"), ErrorCode::BadCsr, "PEM"),
        (
            enroll_body(csr_pem(&PKCS_ECDSA_P384_SHA384), "r"),
            ErrorCode::BadCsr,
            "ECDSA P-256 or Ed25519",
        ),
        (
            enroll_body(csr_pem(&PKCS_ECDSA_P256_SHA256), ""),
            ErrorCode::BadRequest,
            "name",
        ),
        (
            enroll_body(csr_pem(&PKCS_ECDSA_P256_SHA256), &"n".repeat(129)),
            ErrorCode::BadRequest,
            "name",
        ),
        (
            json!({"csr_pem": "x", "name": "r", "surprise": 1}),
            ErrorCode::BadRequest,
            "surprise",
        ),
    ];
    for (body, code, needle) in cases {
        let e = api
            .error(
                Method::POST,
                "/v1/enroll",
                Some(&key),
                Some(body),
                StatusCode::BAD_REQUEST,
            )
            .await;
        assert_eq!(e.error, code, "{}", e.message);
        assert!(e.message.contains(needle), "{needle:?} in {:?}", e.message);
        assert!(!e.message.contains('\n'));
    }
    let big = json!({"csr_pem": "x".repeat(MAX_BODY_BYTES), "name": "r"});
    let e = api
        .error(
            Method::POST,
            "/v1/enroll",
            Some(&key),
            Some(big),
            StatusCode::PAYLOAD_TOO_LARGE,
        )
        .await;
    assert_eq!(e.error, ErrorCode::PayloadTooLarge);
    let devices: Vec<DeviceInfo> = api
        .json::<heex_proto::api::DevicePage>(
            Method::GET,
            "/v1/devices",
            Some(&key),
            None,
            StatusCode::OK,
        )
        .await
        .devices;
    assert!(devices.is_empty());
}

#[tokio::test]
async fn revocation_rules_and_reasons() {
    let api = api().await;
    let own = api
        .create_key(&api.owner_key, json!({"name": "ci", "scope": "enroll"}))
        .await;
    assert_eq!(own.info.owner, "owner@example.com");
    assert!(own.key.expose().starts_with("heex_"));

    // Not found: malformed id, unknown id.
    for id in ["nope", "AAAAAAAAAAAA"] {
        let e = api
            .error(
                Method::POST,
                &format!("/v1/keys/{id}/revoke"),
                Some(&api.owner_key),
                None,
                StatusCode::NOT_FOUND,
            )
            .await;
        assert_eq!(e.error, ErrorCode::NotFound);
    }

    // An enroll key can revoke keys of its own owner (here: the owner's admin key is also
    // the owner's, so check with the key itself).
    let revoked: KeyInfo = api
        .json(
            Method::POST,
            &format!("/v1/keys/{}/revoke", own.info.id),
            Some(own.key.expose()),
            None,
            StatusCode::OK,
        )
        .await;
    assert!(revoked.revoked_at.is_some());
    assert_eq!(revoked.revoked_by.as_deref(), Some("owner@example.com"));

    let e = api
        .error(
            Method::GET,
            "/v1/whoami",
            Some(own.key.expose()),
            None,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    assert_eq!(e.error, ErrorCode::KeyRevoked);
    assert!(e
        .message
        .starts_with(&format!("API key {} was revoked on ", own.info.id)));
    assert!(e
        .message
        .ends_with("by owner@example.com; ask an admin for a new key"));
    let e = api
        .error(
            Method::POST,
            "/v1/enroll",
            Some(own.key.expose()),
            Some(enroll_body(csr_pem(&PKCS_ECDSA_P256_SHA256), "r")),
            StatusCode::UNAUTHORIZED,
        )
        .await;
    assert_eq!(e.error, ErrorCode::KeyRevoked);
}

#[tokio::test]
async fn key_creation_limits_and_expiry() {
    let api = api().await;
    for body in [
        json!({"name": ""}),
        json!({"name": "x".repeat(65)}),
        json!({"name": "x", "expires_in_days": 366}),
        json!({"name": "x", "expires_in_secs": 0}),
        json!({"name": "x", "scope": "root"}),
    ] {
        let e = api
            .error(
                Method::POST,
                "/v1/keys",
                Some(&api.owner_key),
                Some(body.clone()),
                StatusCode::BAD_REQUEST,
            )
            .await;
        assert_eq!(e.error, ErrorCode::BadRequest, "{body}");
    }
    let default = api.create_key(&api.owner_key, json!({"name": "d"})).await;
    assert_eq!(default.info.scope, Scope::Enroll);
    assert_eq!(
        default.info.expires_at - default.info.created_at,
        time::Duration::days(90)
    );

    let short = api
        .create_key(
            &api.owner_key,
            json!({"name": "short", "expires_in_secs": 1}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let e = api
        .error(
            Method::GET,
            "/v1/whoami",
            Some(short.key.expose()),
            None,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    assert_eq!(e.error, ErrorCode::KeyExpired);
    assert!(e
        .message
        .starts_with(&format!("API key {} expired on ", short.info.id)));
    assert!(e.message.ends_with("; create a new key"));
}

#[tokio::test]
async fn only_admins_revoke_other_members_keys() {
    use crate::store::{NewKey, NewMember, Role};
    let api = api().await;
    let me: WhoAmI = api
        .json(
            Method::GET,
            "/v1/whoami",
            Some(&api.owner_key),
            None,
            StatusCode::OK,
        )
        .await;
    let now = time::OffsetDateTime::now_utc();
    let bob = heex_proto::MemberId::generate();
    api.store
        .create_member(NewMember {
            id: bob.clone(),
            workspace_id: me.workspace_id.clone(),
            email: "bob@example.com".into(),
            role: Role::Member,
            created_at: now,
        })
        .await
        .unwrap();
    let bobs_id = KeyId::generate();
    api.store
        .create_key(
            NewKey {
                id: bobs_id.clone(),
                workspace_id: me.workspace_id.clone(),
                member_id: bob,
                name: "bob-cli".into(),
                scope: Scope::Enroll,
                created_at: now,
                expires_at: now + time::Duration::days(1),
                max_uses: None,
            },
            crate::store::AuditEntry {
                workspace_id: me.workspace_id.clone(),
                at: now,
                actor: "test".into(),
                action: crate::store::AuditAction::KeyCreate,
                target: bobs_id.to_string(),
                details: json!({}),
                caller: None,
            },
        )
        .await
        .unwrap();
    let bobs_key = ApiKey::derive(api.secret.as_bytes(), bobs_id.clone()).expose();

    // Bob (enroll scope) may not revoke the owner's key.
    let e = api
        .error(
            Method::POST,
            &format!("/v1/keys/{}/revoke", me.key.id),
            Some(&bobs_key),
            None,
            StatusCode::FORBIDDEN,
        )
        .await;
    assert_eq!(e.error, ErrorCode::Forbidden);

    // The owner (admin scope) revokes Bob's key; Bob hears who did it.
    let info: KeyInfo = api
        .json(
            Method::POST,
            &format!("/v1/keys/{bobs_id}/revoke"),
            Some(&api.owner_key),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(info.owner, "bob@example.com");
    assert_eq!(info.revoked_by.as_deref(), Some("owner@example.com"));
    let e = api
        .error(
            Method::GET,
            "/v1/whoami",
            Some(&bobs_key),
            None,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    assert_eq!(e.error, ErrorCode::KeyRevoked);
    assert!(e.message.contains("by owner@example.com"));
}

#[tokio::test]
async fn limited_key_stops_at_its_limit() {
    let api = api().await;
    let limited = api
        .create_key(&api.owner_key, json!({"name": "once", "max_uses": 1}))
        .await;
    let body = || Some(enroll_body(csr_pem(&PKCS_ECDSA_P256_SHA256), "r"));
    let _: EnrollResponse = api
        .json(
            Method::POST,
            "/v1/enroll",
            Some(limited.key.expose()),
            body(),
            StatusCode::CREATED,
        )
        .await;
    let e = api
        .error(
            Method::POST,
            "/v1/enroll",
            Some(limited.key.expose()),
            body(),
            StatusCode::FORBIDDEN,
        )
        .await;
    assert_eq!(e.error, ErrorCode::Forbidden);
    assert_eq!(
        e.message,
        format!(
            "API key {} has used all of its 1 enrollments; create a new key",
            limited.info.id
        )
    );
    let e = api
        .error(
            Method::POST,
            "/v1/keys",
            Some(&api.owner_key),
            Some(json!({"name": "never", "max_uses": 0})),
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert_eq!(e.error, ErrorCode::BadRequest);
}
