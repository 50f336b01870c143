//! The access promises under attack: writes racing a member's removal, invitations outliving
//! their inviter or invitee, members managing others' devices, admins revoking owners' keys,
//! and the error messages of hostile paths.

use heex_proto::api::{InvitationInfo, InviteResponse, KeyInfo, RemoveMemberResponse};

use super::*;

/// One request on a clone of the router (for concurrent tasks).
async fn send(
    router: Router,
    method: Method,
    path: String,
    key: String,
    body: Option<serde_json::Value>,
) -> (StatusCode, Vec<u8>) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, "cloud.example:8443")
        .header(AUTHORIZATION, format!("Bearer {key}"));
    let body = match body {
        Some(b) => {
            req = req.header(CONTENT_TYPE, "application/json");
            Body::from(b.to_string())
        }
        None => Body::empty(),
    };
    let resp = router.oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, bytes.to_vec())
}

impl Api {
    /// Invites and accepts: (member id, first key).
    async fn member(&self, by: &str, email: &str, role: &str) -> (String, String) {
        let inv: InviteResponse = self
            .json(
                Method::POST,
                "/v1/invitations",
                Some(by),
                Some(json!({"email": email, "role": role})),
                StatusCode::CREATED,
            )
            .await;
        let joined: heex_proto::api::AcceptInvitationResponse = self
            .json(
                Method::POST,
                "/v1/invitations/accept",
                None,
                Some(json!({"token": inv.token})),
                StatusCode::CREATED,
            )
            .await;
        (joined.member.id, joined.key.key.into_exposed())
    }

    async fn status_of(&self, method: Method, path: &str, key: &str) -> StatusCode {
        self.call(method, path, Some(key), None).await.0
    }
}

/// A member creates keys (and invitations) in a loop from their own key while an admin
/// removes them: afterwards none of their keys works, and their key can neither invite nor
/// read the audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_racing_a_removal_leave_nothing_usable() {
    let api = api().await;
    for round in 0..6 {
        let (bob_id, bob) = api
            .member(&api.owner_key, &format!("bob{round}@example.com"), "admin")
            .await;
        let mut tasks = Vec::new();
        for t in 0..4 {
            let (router, bob) = (api.router.clone(), bob.clone());
            tasks.push(tokio::spawn(async move {
                let mut created = Vec::new();
                let mut invited = 0;
                for i in 0..25 {
                    let (status, body) = send(
                        router.clone(),
                        Method::POST,
                        "/v1/keys".into(),
                        bob.clone(),
                        Some(json!({"name": format!("k{t}-{i}"), "scope": "admin"})),
                    )
                    .await;
                    if status == StatusCode::CREATED {
                        let k: CreateKeyResponse = serde_json::from_slice(&body).unwrap();
                        created.push(k.key.into_exposed());
                    } else {
                        assert_eq!(
                            status,
                            StatusCode::UNAUTHORIZED,
                            "{}",
                            String::from_utf8_lossy(&body)
                        );
                    }
                    let (status, _) = send(
                        router.clone(),
                        Method::POST,
                        "/v1/invitations".into(),
                        bob.clone(),
                        Some(json!({"email": format!("x{t}-{i}@example.com"), "role": "admin"})),
                    )
                    .await;
                    if status == StatusCode::CREATED {
                        invited += 1;
                    }
                    tokio::task::yield_now().await;
                }
                (created, invited)
            }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let removed: RemoveMemberResponse = api
            .json(
                Method::POST,
                &format!("/v1/members/{bob_id}/remove"),
                Some(&api.owner_key),
                Some(json!({})),
                StatusCode::OK,
            )
            .await;
        assert!(removed.already_removed_at.is_none());
        let mut keys = vec![bob.clone()];
        for task in tasks {
            let (created, _) = task.await.unwrap();
            keys.extend(created);
        }
        for key in &keys {
            let (status, body) = api.call(Method::GET, "/v1/whoami", Some(key), None).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "round {round}: {}",
                String::from_utf8_lossy(&body)
            );
            let e: ErrorBody = serde_json::from_slice(&body).unwrap();
            assert_eq!(e.error, ErrorCode::KeyRevoked, "{}", e.message);
            assert!(e.message.contains("removed"), "{}", e.message);
            assert_eq!(
                api.status_of(Method::GET, "/v1/audit", key).await,
                StatusCode::UNAUTHORIZED
            );
            let (status, _) = api
                .call(
                    Method::POST,
                    "/v1/invitations",
                    Some(key),
                    Some(json!({"email": "late@example.com", "role": "admin"}).to_string()),
                )
                .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
        // No invitation Bob issued survives his removal.
        let pending: Vec<InvitationInfo> = api
            .json::<heex_proto::api::InvitationPage>(
                Method::GET,
                "/v1/invitations",
                Some(&api.owner_key),
                None,
                StatusCode::OK,
            )
            .await
            .invitations;
        let email = format!("bob{round}@example.com");
        assert!(pending.iter().all(|i| i.invited_by != email), "{pending:?}");
        // Removing again: nothing was left active, and it says so.
        let e = api
            .error(
                Method::POST,
                &format!("/v1/members/{bob_id}/remove"),
                Some(&api.owner_key),
                Some(json!({})),
                StatusCode::BAD_REQUEST,
            )
            .await;
        assert!(e.message.contains("already removed"), "{}", e.message);
    }
}

/// A key that outlived its member's removal (as the race used to leave behind) is refused,
/// and removing the member again revokes it and says so.
#[tokio::test]
async fn a_repeated_removal_revokes_what_is_still_active() {
    let api = api().await;
    let (bob_id, _) = api.member(&api.owner_key, "bob@example.com", "admin").await;
    api.json::<RemoveMemberResponse>(
        Method::POST,
        &format!("/v1/members/{bob_id}/remove"),
        Some(&api.owner_key),
        Some(json!({})),
        StatusCode::OK,
    )
    .await;
    // Plant what a racing write used to leave: an unrevoked key of the removed member.
    let me: WhoAmI = api
        .json(
            Method::GET,
            "/v1/whoami",
            Some(&api.owner_key),
            None,
            StatusCode::OK,
        )
        .await;
    let leftover = KeyId::generate();
    api.store
        .create_key(
            crate::store::NewKey {
                id: leftover.clone(),
                workspace_id: me.workspace_id.clone(),
                member_id: bob_id.parse().unwrap(),
                name: "leftover".into(),
                scope: Scope::Admin,
                created_at: time::OffsetDateTime::now_utc(),
                expires_at: time::OffsetDateTime::now_utc() + time::Duration::days(1),
                max_uses: None,
            },
            crate::store::AuditEntry {
                workspace_id: me.workspace_id.clone(),
                at: time::OffsetDateTime::now_utc(),
                actor: "test".into(),
                action: crate::store::AuditAction::KeyCreate,
                target: leftover.to_string(),
                details: json!({}),
                caller: None,
            },
        )
        .await
        .unwrap();
    let key = ApiKey::derive(api.secret.as_bytes(), leftover.clone()).expose();
    let e = api
        .error(
            Method::GET,
            "/v1/whoami",
            Some(&key),
            None,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    assert_eq!(e.error, ErrorCode::KeyRevoked);
    assert!(
        e.message
            .contains("its owner bob@example.com was removed from workspace default"),
        "{}",
        e.message
    );
    let again: RemoveMemberResponse = api
        .json(
            Method::POST,
            &format!("/v1/members/{bob_id}/remove"),
            Some(&api.owner_key),
            Some(json!({})),
            StatusCode::OK,
        )
        .await;
    assert!(again.already_removed_at.is_some());
    assert_eq!(again.revoked_keys, vec![leftover]);
}

/// Removing a member cancels the invitations they issued and those sent to them; accepting
/// re-checks the inviter; list shows no tokens; cancel works once and is audited.
#[tokio::test]
async fn invitations_die_with_their_inviter_and_invitee() {
    let api = api().await;
    let (ada_id, ada) = api.member(&api.owner_key, "ada@example.com", "admin").await;
    let invite = |by: String, email: &'static str| {
        let api = &api;
        async move {
            api.json::<InviteResponse>(
                Method::POST,
                "/v1/invitations",
                Some(&by),
                Some(json!({"email": email, "role": "member"})),
                StatusCode::CREATED,
            )
            .await
        }
    };
    let from_ada = invite(ada.clone(), "carl@example.com").await;
    // A second token sent to Dan before he joined with the first.
    let to_dan = invite(api.owner_key.clone(), "dan@example.com").await;
    let (dan_id, _dan) = api
        .member(&api.owner_key, "dan@example.com", "member")
        .await;
    let keep = invite(api.owner_key.clone(), "eve@example.com").await;

    let pending: Vec<InvitationInfo> = api
        .json::<heex_proto::api::InvitationPage>(
            Method::GET,
            "/v1/invitations",
            Some(&api.owner_key),
            None,
            StatusCode::OK,
        )
        .await
        .invitations;
    assert_eq!(pending.len(), 3, "{pending:?}");
    let (_, raw) = api
        .call(Method::GET, "/v1/invitations", Some(&api.owner_key), None)
        .await;
    for token in [&from_ada.token, &keep.token] {
        assert!(!String::from_utf8_lossy(&raw).contains(token.expose()));
    }

    for id in [&ada_id, &dan_id] {
        let removed: RemoveMemberResponse = api
            .json(
                Method::POST,
                &format!("/v1/members/{id}/remove"),
                Some(&api.owner_key),
                Some(json!({})),
                StatusCode::OK,
            )
            .await;
        assert_eq!(removed.cancelled_invitations.len(), 1, "{removed:?}");
    }
    for (token, why) in [
        (&from_ada.token, "who sent it was removed"),
        (&to_dan.token, "it was sent to was removed"),
    ] {
        let e = api
            .error(
                Method::POST,
                "/v1/invitations/accept",
                None,
                Some(json!({"token": token})),
                StatusCode::BAD_REQUEST,
            )
            .await;
        assert!(e.message.contains(why), "{}", e.message);
    }
    let pending: Vec<InvitationInfo> = api
        .json::<heex_proto::api::InvitationPage>(
            Method::GET,
            "/v1/invitations",
            Some(&api.owner_key),
            None,
            StatusCode::OK,
        )
        .await
        .invitations;
    assert_eq!(
        pending.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        [keep.id.as_str()]
    );

    // Cancel: once, then the token is dead; audited.
    let cancelled: InvitationInfo = api
        .json(
            Method::DELETE,
            &format!("/v1/invitations/{}", keep.id),
            Some(&api.owner_key),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(cancelled.email, "eve@example.com");
    api.error(
        Method::DELETE,
        &format!("/v1/invitations/{}", keep.id),
        Some(&api.owner_key),
        None,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let e = api
        .error(
            Method::POST,
            "/v1/invitations/accept",
            None,
            Some(json!({"token": keep.token})),
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert!(e.message.contains("cancelled"), "{}", e.message);
    let (status, body) = api
        .call(
            Method::GET,
            "/v1/audit?action=invitation.cancel",
            Some(&api.owner_key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&body).contains(&keep.id));
    // A member may neither list nor cancel.
    let (_, mia) = api
        .member(&api.owner_key, "mia@example.com", "member")
        .await;
    assert_eq!(
        api.status_of(Method::GET, "/v1/invitations", &mia).await,
        StatusCode::FORBIDDEN
    );
}

/// Owners and admins manage every device; a member renames and revokes only the devices
/// they enrolled and deletes none.
#[tokio::test]
async fn members_manage_only_their_own_devices() {
    let api = api().await;
    let (_, mia) = api
        .member(&api.owner_key, "mia@example.com", "member")
        .await;
    let (_, max) = api
        .member(&api.owner_key, "max@example.com", "member")
        .await;
    let (_, ada) = api.member(&api.owner_key, "ada@example.com", "admin").await;
    let enroll = |key: String| {
        let api = &api;
        async move {
            api.json::<EnrollResponse>(
                Method::POST,
                "/v1/enroll",
                Some(&key),
                Some(enroll_body(csr_pem(&PKCS_ECDSA_P256_SHA256), "robot")),
                StatusCode::CREATED,
            )
            .await
            .device_id
        }
    };
    let mias = enroll(mia.clone()).await;
    let owners = enroll(api.owner_key.clone()).await;
    let rename = json!({"name": "renamed"});

    // Max (member) may touch neither device.
    for dev in [&mias, &owners] {
        let path = format!("/v1/devices/{dev}");
        let e = api
            .error(
                Method::PATCH,
                &path,
                Some(&max),
                Some(rename.clone()),
                StatusCode::FORBIDDEN,
            )
            .await;
        assert!(
            e.message.contains("only the devices they enrolled"),
            "{}",
            e.message
        );
        api.error(
            Method::POST,
            &format!("{path}/revoke"),
            Some(&max),
            None,
            StatusCode::FORBIDDEN,
        )
        .await;
    }
    // Mia renames and revokes her own, but deletes nothing.
    api.json::<DeviceInfo>(
        Method::PATCH,
        &format!("/v1/devices/{mias}"),
        Some(&mia),
        Some(rename.clone()),
        StatusCode::OK,
    )
    .await;
    api.error(
        Method::PATCH,
        &format!("/v1/devices/{owners}"),
        Some(&mia),
        Some(rename.clone()),
        StatusCode::FORBIDDEN,
    )
    .await;
    let revoked: DeviceInfo = api
        .json(
            Method::POST,
            &format!("/v1/devices/{mias}/revoke"),
            Some(&mia),
            None,
            StatusCode::OK,
        )
        .await;
    assert!(revoked.revoked_at.is_some());
    let e = api
        .error(
            Method::DELETE,
            &format!("/v1/devices/{mias}"),
            Some(&mia),
            None,
            StatusCode::FORBIDDEN,
        )
        .await;
    assert!(
        e.message.contains("needs the owner or admin role"),
        "{}",
        e.message
    );
    // The owner's device is untouched by the refusals.
    let dev: DeviceInfo = api
        .json(
            Method::GET,
            &format!("/v1/devices/{owners}"),
            Some(&api.owner_key),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(dev.name, "robot");
    assert!(dev.revoked_at.is_none());
    // An admin manages any device, deletion included.
    api.json::<DeviceInfo>(
        Method::POST,
        &format!("/v1/devices/{owners}/revoke"),
        Some(&ada),
        None,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        api.status_of(Method::DELETE, &format!("/v1/devices/{mias}"), &ada)
            .await,
        StatusCode::NO_CONTENT
    );
}

/// Only an owner (or the key's own member) revokes an owner's key.
#[tokio::test]
async fn an_admin_cannot_revoke_an_owners_key() {
    let api = api().await;
    let (_, ada) = api.member(&api.owner_key, "ada@example.com", "admin").await;
    let (_, oli) = api.member(&api.owner_key, "oli@example.com", "owner").await;
    let owner_id = &api.owner_key[heex_proto::apikey::PREFIX.len()..][..heex_proto::apikey::ID_LEN];
    let e = api
        .error(
            Method::POST,
            &format!("/v1/keys/{owner_id}/revoke"),
            Some(&ada),
            None,
            StatusCode::FORBIDDEN,
        )
        .await;
    assert!(
        e.message
            .contains("only an owner can revoke an owner's keys"),
        "{}",
        e.message
    );
    api.json::<WhoAmI>(
        Method::GET,
        "/v1/whoami",
        Some(&api.owner_key),
        None,
        StatusCode::OK,
    )
    .await;
    // An admin still revokes a member's key; an owner revokes another owner's.
    let (_, mia) = api
        .member(&api.owner_key, "mia@example.com", "member")
        .await;
    let mia_id = &mia[heex_proto::apikey::PREFIX.len()..][..heex_proto::apikey::ID_LEN];
    api.json::<KeyInfo>(
        Method::POST,
        &format!("/v1/keys/{mia_id}/revoke"),
        Some(&ada),
        None,
        StatusCode::OK,
    )
    .await;
    let revoked: KeyInfo = api
        .json(
            Method::POST,
            &format!("/v1/keys/{owner_id}/revoke"),
            Some(&oli),
            None,
            StatusCode::OK,
        )
        .await;
    assert!(revoked.revoked_at.is_some());
}

/// 405 has its own code; a 404 echoes at most 64 characters of a hostile id.
#[tokio::test]
async fn hostile_paths_get_short_precise_errors() {
    let api = api().await;
    let e = api
        .error(
            Method::PUT,
            "/v1/keys",
            Some(&api.owner_key),
            None,
            StatusCode::METHOD_NOT_ALLOWED,
        )
        .await;
    assert_eq!(e.error, ErrorCode::MethodNotAllowed);
    let long = "A".repeat(5000);
    let e = api
        .error(
            Method::GET,
            &format!("/v1/devices/{long}"),
            Some(&api.owner_key),
            None,
            StatusCode::NOT_FOUND,
        )
        .await;
    assert!(e.message.len() < 200, "{}", e.message);
    assert!(e.message.contains('…'), "{}", e.message);
}
