//! Key lifecycle, members, invitations, audit and authorization through the real router.

use heex_proto::api::{
    AcceptInvitationResponse, AuditEvent, CopyKeyResponse, InviteResponse, KeyListEntry, KeyStatus,
    MemberInfo, RemoveMemberResponse,
};
use heex_proto::{MemberId, WorkspaceId};

use super::*;
use crate::store::{NewInvitation, NewKey, NewMember, NewWorkspace, Role};

impl Api {
    async fn whoami(&self, key: &str) -> WhoAmI {
        self.json(Method::GET, "/v1/whoami", Some(key), None, StatusCode::OK)
            .await
    }

    /// Invites `email` with `role` (by `by`) and accepts: (member, first key).
    async fn join(&self, by: &str, email: &str, role: &str) -> (MemberInfo, String) {
        let inv: InviteResponse = self
            .json(
                Method::POST,
                "/v1/invitations",
                Some(by),
                Some(json!({"email": email, "role": role})),
                StatusCode::CREATED,
            )
            .await;
        let joined: AcceptInvitationResponse = self
            .json(
                Method::POST,
                "/v1/invitations/accept",
                None,
                Some(json!({"token": inv.token})),
                StatusCode::CREATED,
            )
            .await;
        (joined.member, joined.key.key.into_exposed())
    }

    async fn keys(&self, key: &str, all: bool) -> Vec<KeyListEntry> {
        let path = if all { "/v1/keys?all=true" } else { "/v1/keys" };
        self.json::<heex_proto::api::KeyPage>(Method::GET, path, Some(key), None, StatusCode::OK)
            .await
            .keys
    }

    async fn enroll(&self, key: &str, expect: StatusCode) -> (StatusCode, Vec<u8>) {
        let body = enroll_body(csr_pem(&PKCS_ECDSA_P256_SHA256), "robot").to_string();
        let (status, bytes) = self
            .call(Method::POST, "/v1/enroll", Some(key), Some(body))
            .await;
        assert_eq!(status, expect, "{}", String::from_utf8_lossy(&bytes));
        (status, bytes)
    }

    async fn audit(&self, key: &str, query: &str) -> Vec<AuditEvent> {
        self.json::<heex_proto::api::AuditPage>(
            Method::GET,
            &format!("/v1/audit{query}"),
            Some(key),
            None,
            StatusCode::OK,
        )
        .await
        .events
    }

    /// A second workspace in the same store: its owner's admin key.
    async fn other_workspace(&self) -> String {
        let now = time::OffsetDateTime::now_utc();
        let ws = WorkspaceId::generate();
        let owner = MemberId::generate();
        let key = KeyId::generate();
        self.store
            .create_workspace_with_owner(
                NewWorkspace {
                    id: ws.clone(),
                    name: "workspace-b".into(),
                    created_at: now,
                },
                NewMember {
                    id: owner.clone(),
                    workspace_id: ws.clone(),
                    email: "bea@example.com".into(),
                    role: Role::Owner,
                    created_at: now,
                },
                NewKey {
                    id: key.clone(),
                    workspace_id: ws,
                    member_id: owner,
                    name: "owner".into(),
                    scope: Scope::Admin,
                    created_at: now,
                    expires_at: now + time::Duration::days(1),
                    max_uses: None,
                },
            )
            .await
            .unwrap();
        ApiKey::derive(self.secret.as_bytes(), key).expose()
    }
}

fn id_of(key: &str) -> &str {
    &key[5..17]
}

#[tokio::test]
async fn authorization_matrix() {
    let api = api().await;
    let alice = api.owner_key.clone();
    let alice_id = api.whoami(&alice).await.member_id;
    let (adam, adam_key) = api.join(&alice, "adam@example.com", "admin").await;
    let (mia, mia_key) = api.join(&alice, "mia@example.com", "member").await;
    assert_eq!(
        (adam.role, mia.role),
        (heex_proto::api::Role::Admin, heex_proto::api::Role::Member)
    );
    let mia_enroll = api
        .create_key(&mia_key, json!({"name": "fleet", "scope": "enroll"}))
        .await
        .key
        .into_exposed();
    let alice_spare = api
        .create_key(&alice, json!({"name": "spare"}))
        .await
        .key
        .into_exposed();
    let mia_spare = api
        .create_key(&mia_key, json!({"name": "spare"}))
        .await
        .key
        .into_exposed();

    use StatusCode as S;
    /// Who, with which key, calls what, expecting which status.
    type Case<'a> = (
        &'a str,
        &'a str,
        Method,
        String,
        Option<serde_json::Value>,
        StatusCode,
    );
    let cases: Vec<Case<'_>> = vec![
        // Every key may ask who it is.
        (
            "mia enroll",
            &mia_enroll,
            Method::GET,
            "/v1/whoami".into(),
            None,
            S::OK,
        ),
        // Own keys: any member with an admin-scope key; not an enroll key.
        ("mia", &mia_key, Method::GET, "/v1/keys".into(), None, S::OK),
        (
            "mia enroll",
            &mia_enroll,
            Method::GET,
            "/v1/keys".into(),
            None,
            S::FORBIDDEN,
        ),
        (
            "mia",
            &mia_key,
            Method::POST,
            "/v1/keys".into(),
            Some(json!({"name": "x", "scope": "admin"})),
            S::CREATED,
        ),
        (
            "mia enroll",
            &mia_enroll,
            Method::POST,
            "/v1/keys".into(),
            Some(json!({"name": "x"})),
            S::FORBIDDEN,
        ),
        // Everyone's keys: owners and admins only.
        (
            "alice",
            &alice,
            Method::GET,
            "/v1/keys?all=true".into(),
            None,
            S::OK,
        ),
        (
            "adam",
            &adam_key,
            Method::GET,
            "/v1/keys?all=true".into(),
            None,
            S::OK,
        ),
        (
            "mia",
            &mia_key,
            Method::GET,
            "/v1/keys?all=true".into(),
            None,
            S::FORBIDDEN,
        ),
        // Another member's key: a member may not revoke it; copy and rotate are the owner's
        // alone, so they answer 404 to everyone else, admins included.
        (
            "mia",
            &mia_key,
            Method::POST,
            format!("/v1/keys/{}/revoke", id_of(&alice_spare)),
            None,
            S::FORBIDDEN,
        ),
        (
            "mia",
            &mia_key,
            Method::POST,
            format!("/v1/keys/{}/copy", id_of(&alice_spare)),
            None,
            S::NOT_FOUND,
        ),
        (
            "mia",
            &mia_key,
            Method::POST,
            format!("/v1/keys/{}/rotate", id_of(&alice_spare)),
            None,
            S::NOT_FOUND,
        ),
        (
            "adam",
            &adam_key,
            Method::POST,
            format!("/v1/keys/{}/copy", id_of(&mia_spare)),
            None,
            S::NOT_FOUND,
        ),
        (
            "adam",
            &adam_key,
            Method::POST,
            format!("/v1/keys/{}/rotate", id_of(&mia_spare)),
            None,
            S::NOT_FOUND,
        ),
        (
            "mia enroll",
            &mia_enroll,
            Method::POST,
            format!("/v1/keys/{}/revoke", id_of(&mia_spare)),
            None,
            S::FORBIDDEN,
        ),
        (
            "mia enroll",
            &mia_enroll,
            Method::POST,
            format!("/v1/keys/{}/copy", id_of(&mia_enroll)),
            None,
            S::FORBIDDEN,
        ),
        // Own keys: copy works.
        (
            "mia",
            &mia_key,
            Method::POST,
            format!("/v1/keys/{}/copy", id_of(&mia_spare)),
            None,
            S::OK,
        ),
        // Members and devices: any member may list, with an admin-scope key.
        (
            "mia",
            &mia_key,
            Method::GET,
            "/v1/members".into(),
            None,
            S::OK,
        ),
        (
            "mia enroll",
            &mia_enroll,
            Method::GET,
            "/v1/members".into(),
            None,
            S::FORBIDDEN,
        ),
        (
            "mia",
            &mia_key,
            Method::GET,
            "/v1/devices".into(),
            None,
            S::OK,
        ),
        (
            "mia enroll",
            &mia_enroll,
            Method::GET,
            "/v1/devices".into(),
            None,
            S::FORBIDDEN,
        ),
        // Inviting and removing: owners and admins; owners are the owners' business.
        (
            "mia",
            &mia_key,
            Method::POST,
            "/v1/invitations".into(),
            Some(json!({"email": "z@example.com"})),
            S::FORBIDDEN,
        ),
        (
            "adam",
            &adam_key,
            Method::POST,
            "/v1/invitations".into(),
            Some(json!({"email": "z@example.com"})),
            S::CREATED,
        ),
        (
            "adam",
            &adam_key,
            Method::POST,
            "/v1/invitations".into(),
            Some(json!({"email": "o@example.com", "role": "owner"})),
            S::FORBIDDEN,
        ),
        (
            "alice",
            &alice,
            Method::POST,
            "/v1/invitations".into(),
            Some(json!({"email": "o@example.com", "role": "owner"})),
            S::CREATED,
        ),
        (
            "mia",
            &mia_key,
            Method::POST,
            format!("/v1/members/{}/remove", adam.id),
            None,
            S::FORBIDDEN,
        ),
        (
            "adam",
            &adam_key,
            Method::POST,
            format!("/v1/members/{alice_id}/remove"),
            None,
            S::FORBIDDEN,
        ),
        // The audit log: owners and admins.
        (
            "adam",
            &adam_key,
            Method::GET,
            "/v1/audit".into(),
            None,
            S::OK,
        ),
        (
            "mia",
            &mia_key,
            Method::GET,
            "/v1/audit".into(),
            None,
            S::FORBIDDEN,
        ),
        (
            "mia enroll",
            &mia_enroll,
            Method::GET,
            "/v1/audit".into(),
            None,
            S::FORBIDDEN,
        ),
        // An admin revokes anyone's key; any key may revoke itself.
        (
            "adam",
            &adam_key,
            Method::POST,
            format!("/v1/keys/{}/revoke", id_of(&mia_spare)),
            None,
            S::OK,
        ),
        (
            "mia enroll",
            &mia_enroll,
            Method::POST,
            format!("/v1/keys/{}/revoke", id_of(&mia_enroll)),
            None,
            S::OK,
        ),
    ];
    for (who, key, method, path, body, expect) in cases {
        let (status, bytes) = api
            .call(
                method.clone(),
                &path,
                Some(key),
                body.map(|b| b.to_string()),
            )
            .await;
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(status, expect, "{who}: {method} {path}: {text}");
        if status == S::FORBIDDEN {
            let e: ErrorBody = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(e.error, ErrorCode::Forbidden, "{who}: {path}");
            assert!(!e.message.is_empty() && !e.message.contains('\n'));
        }
    }
    // A member with an admin-scope key enrolls; so does an enroll key (before it was revoked
    // above, Mia made another).
    api.enroll(&mia_key, StatusCode::CREATED).await;
    let fresh = api
        .create_key(&mia_key, json!({"name": "fleet2", "scope": "enroll"}))
        .await
        .key
        .into_exposed();
    api.enroll(&fresh, StatusCode::CREATED).await;
    // Keys listed to Mia are hers alone.
    let listed = api.keys(&mia_key, false).await;
    assert!(listed.iter().all(|k| k.info.owner == "mia@example.com"));
    assert!(listed.len() >= 4);
}

#[tokio::test]
async fn another_workspace_answers_404() {
    let api = api().await;
    let bea = api.other_workspace().await;
    let bea_key = api
        .create_key(&bea, json!({"name": "b-ci"}))
        .await
        .key
        .into_exposed();
    let bea_member = api.whoami(&bea).await.member_id;
    let device: EnrollResponse = api
        .json(
            Method::POST,
            "/v1/enroll",
            Some(&bea),
            Some(enroll_body(csr_pem(&PKCS_ECDSA_P256_SHA256), "b-robot")),
            StatusCode::CREATED,
        )
        .await;
    let a = api.owner_key.clone();
    for (method, path) in [
        (Method::POST, format!("/v1/keys/{}/revoke", id_of(&bea_key))),
        (Method::POST, format!("/v1/keys/{}/copy", id_of(&bea_key))),
        (Method::POST, format!("/v1/keys/{}/rotate", id_of(&bea_key))),
        (Method::POST, format!("/v1/members/{bea_member}/remove")),
        (Method::GET, format!("/v1/devices/{}", device.device_id)),
    ] {
        let e = api
            .error(method.clone(), &path, Some(&a), None, StatusCode::NOT_FOUND)
            .await;
        assert_eq!(e.error, ErrorCode::NotFound, "{method} {path}");
    }
    // Lists never cross either.
    assert!(api
        .keys(&a, true)
        .await
        .iter()
        .all(|k| k.info.owner == "owner@example.com"));
    let members: Vec<MemberInfo> = api
        .json::<heex_proto::api::MemberPage>(
            Method::GET,
            "/v1/members",
            Some(&a),
            None,
            StatusCode::OK,
        )
        .await
        .members;
    assert_eq!(members.len(), 1);
    let devices: Vec<DeviceInfo> = api
        .json::<heex_proto::api::DevicePage>(
            Method::GET,
            "/v1/devices",
            Some(&a),
            None,
            StatusCode::OK,
        )
        .await
        .devices;
    assert!(devices.is_empty());
    assert!(api
        .audit(&a, "")
        .await
        .iter()
        .all(|e| e.actor != "bea@example.com"));
    // Workspace B still sees its own.
    let shown: DeviceInfo = api
        .json(
            Method::GET,
            &format!("/v1/devices/{}", device.device_id),
            Some(&bea),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(shown.name, "b-robot");
    assert_eq!(shown.enrolled_by_member, "bea@example.com");
}

#[tokio::test]
async fn rotation_keeps_the_old_key_for_the_overlap_only() {
    let api = api().await;
    let old = api
        .create_key(
            &api.owner_key,
            json!({"name": "ci", "scope": "enroll", "expires_in_days": 7, "max_uses": 5}),
        )
        .await;
    let rotated: CreateKeyResponse = api
        .json(
            Method::POST,
            &format!("/v1/keys/{}/rotate", old.info.id),
            Some(&api.owner_key),
            Some(json!({"overlap_secs": 3})),
            StatusCode::CREATED,
        )
        .await;
    let new = &rotated.info;
    assert_ne!(new.id, old.info.id);
    assert_eq!((new.name.as_str(), new.scope), ("ci", Scope::Enroll));
    assert_eq!(new.expires_at - new.created_at, time::Duration::days(7));
    assert!(new.created_at >= old.info.created_at);

    // The list shows the scheduled revocation; both keys enroll during the overlap.
    let listed = api.keys(&api.owner_key, false).await;
    let old_entry = listed.iter().find(|k| k.info.id == old.info.id).unwrap();
    assert_eq!(old_entry.status, KeyStatus::Active);
    assert_eq!(old_entry.replaced_by.as_ref(), Some(&new.id));
    let revoked_at = old_entry.info.revoked_at.unwrap();
    assert_eq!(revoked_at, new.created_at + time::Duration::seconds(3));
    assert_eq!(
        old_entry.info.revoked_by.as_deref(),
        Some("owner@example.com")
    );
    api.enroll(old.key.expose(), StatusCode::CREATED).await;
    api.enroll(rotated.key.expose(), StatusCode::CREATED).await;
    let listed = api.keys(&api.owner_key, false).await;
    let new_entry = listed.iter().find(|k| k.info.id == new.id).unwrap();
    assert_eq!((new_entry.uses, new_entry.max_uses), (1, Some(5)));

    // Rotating the rotated key again is refused: its replacement is the one to rotate.
    let e = api
        .error(
            Method::POST,
            &format!("/v1/keys/{}/rotate", old.info.id),
            Some(&api.owner_key),
            None,
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert!(
        e.message.contains(&format!("rotate {}", new.id)),
        "{}",
        e.message
    );

    let wait = revoked_at - time::OffsetDateTime::now_utc() + time::Duration::milliseconds(100);
    tokio::time::sleep(wait.try_into().unwrap_or_default()).await;
    let (_, body) = api.enroll(old.key.expose(), StatusCode::UNAUTHORIZED).await;
    let e: ErrorBody = serde_json::from_slice(&body).unwrap();
    assert_eq!(e.error, ErrorCode::KeyRevoked);
    api.enroll(rotated.key.expose(), StatusCode::CREATED).await;
    let listed = api.keys(&api.owner_key, false).await;
    let old_entry = listed.iter().find(|k| k.info.id == old.info.id).unwrap();
    assert_eq!(old_entry.status, KeyStatus::Revoked);

    // Without a body: no overlap, revoked at once. Too long an overlap: refused.
    let newer: CreateKeyResponse = api
        .json(
            Method::POST,
            &format!("/v1/keys/{}/rotate", new.id),
            Some(&api.owner_key),
            None,
            StatusCode::CREATED,
        )
        .await;
    let e = api
        .error(
            Method::GET,
            "/v1/whoami",
            Some(rotated.key.expose()),
            None,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    assert_eq!(e.error, ErrorCode::KeyRevoked);
    let e = api
        .error(
            Method::POST,
            &format!("/v1/keys/{}/rotate", newer.info.id),
            Some(&api.owner_key),
            Some(json!({"overlap_secs": 31 * 86_400})),
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert!(e.message.contains("30 days"), "{}", e.message);
    // A revoked key cannot be rotated.
    let e = api
        .error(
            Method::POST,
            &format!("/v1/keys/{}/rotate", new.id),
            Some(&api.owner_key),
            None,
            StatusCode::FORBIDDEN,
        )
        .await;
    assert!(e.message.contains("was revoked on"), "{}", e.message);

    let rotations = api.audit(&api.owner_key, "?action=key.rotate").await;
    assert_eq!(rotations.len(), 2);
    assert_eq!(rotations[1].target, old.info.id.as_str());
    assert_eq!(rotations[1].details["replaced_by"], new.id.as_str());
    assert_eq!(rotations[1].details["overlap_secs"], 3);
}

#[tokio::test]
async fn removing_a_member_revokes_their_keys_and_keeps_their_devices() {
    let api = api().await;
    let alice = api.owner_key.clone();
    let (bob, bob_cli) = api.join(&alice, "bob@example.com", "admin").await;
    let bob_enroll = api
        .create_key(&bob_cli, json!({"name": "robots", "scope": "enroll"}))
        .await;
    let enrolled: EnrollResponse = serde_json::from_slice(
        &api.enroll(bob_enroll.key.expose(), StatusCode::CREATED)
            .await
            .1,
    )
    .unwrap();

    let removed: RemoveMemberResponse = api
        .json(
            Method::POST,
            &format!("/v1/members/{}/remove", bob.id),
            Some(&alice),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(removed.member.email, "bob@example.com");
    assert!(removed.member.removed_at.is_some());
    assert_eq!(removed.member.active_keys, 0);
    let mut expected = vec![
        id_of(&bob_cli).parse::<KeyId>().unwrap(),
        bob_enroll.info.id.clone(),
    ];
    expected.sort();
    assert_eq!(removed.revoked_keys, expected);

    // Every key of Bob's is listed revoked; the refusal says why.
    let all = api.keys(&alice, true).await;
    let bobs: Vec<_> = all
        .iter()
        .filter(|k| k.info.owner == "bob@example.com")
        .collect();
    assert_eq!(bobs.len(), 2);
    assert!(bobs.iter().all(|k| k.status == KeyStatus::Revoked));
    let (_, body) = api
        .enroll(bob_enroll.key.expose(), StatusCode::UNAUTHORIZED)
        .await;
    let e: ErrorBody = serde_json::from_slice(&body).unwrap();
    assert_eq!(e.error, ErrorCode::KeyRevoked);
    assert!(
        e.message
            .starts_with(&format!("API key {} was revoked on ", bob_enroll.info.id)),
        "{}",
        e.message
    );
    assert!(
        e.message.ends_with(
            "because its owner bob@example.com was removed from the workspace by owner@example.com"
        ),
        "{}",
        e.message
    );

    // His device belongs to the workspace and stays enrolled.
    let device: DeviceInfo = api
        .json(
            Method::GET,
            &format!("/v1/devices/{}", enrolled.device_id),
            Some(&alice),
            None,
            StatusCode::OK,
        )
        .await;
    assert!(device.revoked_at.is_none());
    assert_eq!(device.enrolled_by_member, "bob@example.com");

    // Again, unknown, malformed, the last owner: refused, saying why.
    for (path, status, needle) in [
        (
            format!("/v1/members/{}/remove", bob.id),
            StatusCode::BAD_REQUEST,
            "already removed",
        ),
        (
            format!("/v1/members/{}/remove", MemberId::generate()),
            StatusCode::NOT_FOUND,
            "no member",
        ),
        (
            "/v1/members/bob/remove".to_owned(),
            StatusCode::NOT_FOUND,
            "no member",
        ),
        (
            format!("/v1/members/{}/remove", api.whoami(&alice).await.member_id),
            StatusCode::BAD_REQUEST,
            "last owner",
        ),
    ] {
        let e = api
            .error(Method::POST, &path, Some(&alice), None, status)
            .await;
        assert!(e.message.contains(needle), "{path}: {}", e.message);
    }
    let event = &api.audit(&alice, "?action=member.remove").await[0];
    assert_eq!(event.target, "bob@example.com");
    assert_eq!(event.actor, "owner@example.com");
    assert_eq!(event.details["revoked_keys"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn invitations_are_single_use_and_expire() {
    let api = api().await;
    let alice = api.owner_key.clone();
    let inv: InviteResponse = api
        .json(
            Method::POST,
            "/v1/invitations",
            Some(&alice),
            Some(json!({"email": " carol@example.com "})),
            StatusCode::CREATED,
        )
        .await;
    assert!(inv.token.expose().starts_with("heexinv_") && inv.token.expose().len() == 40);
    assert_eq!(inv.email, "carol@example.com");
    assert_eq!(inv.role, heex_proto::api::Role::Member);
    let ttl = inv.expires_at - time::OffsetDateTime::now_utc();
    assert!(
        ttl > time::Duration::days(7) - time::Duration::minutes(1)
            && ttl <= time::Duration::days(7)
    );

    let joined: AcceptInvitationResponse = api
        .json(
            Method::POST,
            "/v1/invitations/accept",
            None,
            Some(json!({"token": inv.token, "key_name": "carol-laptop"})),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(joined.workspace_name, "default");
    assert_eq!(
        joined.key.info.scope,
        Scope::Admin,
        "a member's first key is their CLI key"
    );
    assert_eq!(joined.key.info.name, "carol-laptop");
    assert_eq!(api.whoami(joined.key.key.expose()).await.role, "member");

    let again = api
        .error(
            Method::POST,
            "/v1/invitations/accept",
            None,
            Some(json!({"token": inv.token})),
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert!(
        again.message.contains("already accepted"),
        "{}",
        again.message
    );

    // An expired invitation (made directly with a past expiry).
    let me = api.whoami(&alice).await;
    let token = heex_proto::InvitationToken::generate();
    let now = time::OffsetDateTime::now_utc();
    let created = api
        .store
        .create_invitation(
            NewInvitation {
                token_hash: token.sha256_hex(),
                workspace_id: me.workspace_id.clone(),
                email: "late@example.com".into(),
                role: Role::Member,
                created_at: now - time::Duration::days(8),
                expires_at: now - time::Duration::days(1),
                invited_by: me.member_id.parse().unwrap(),
                id: format!("inv_{}", heex_proto::base62::random(16)),
            },
            crate::store::AuditEntry {
                workspace_id: me.workspace_id.clone(),
                at: now,
                actor: "owner@example.com".into(),
                action: crate::store::AuditAction::MemberInvite,
                target: "late@example.com".into(),
                details: json!({}),
                caller: None,
            },
        )
        .await
        .unwrap();
    assert!(created);
    let unknown = format!("heexinv_{}", heex_proto::base62::random(32));
    for (token, needle) in [
        (token.expose(), "expired on"),
        (unknown.as_str(), "not valid"),
        ("heexinv_short", "copy the whole token"),
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
        assert_eq!(e.error, ErrorCode::BadRequest);
        assert!(e.message.contains(needle), "{needle}: {}", e.message);
    }

    // Current members cannot be invited again; bad emails and expiries are refused.
    for body in [
        json!({"email": "carol@example.com"}),
        json!({"email": "not-an-email"}),
        json!({"email": "x@example.com", "expires_in_secs": 0}),
        json!({"email": "x@example.com", "expires_in_secs": 31 * 86_400}),
        json!({"email": "x@example.com", "role": "root"}),
    ] {
        let e = api
            .error(
                Method::POST,
                "/v1/invitations",
                Some(&alice),
                Some(body.clone()),
                StatusCode::BAD_REQUEST,
            )
            .await;
        assert_eq!(e.error, ErrorCode::BadRequest, "{body}");
    }

    // The audit log has the invitation and the join, never the token.
    let events = api.audit(&alice, "?action=member.").await;
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert!(
        actions.contains(&"member.invite") && actions.contains(&"member.join"),
        "{actions:?}"
    );
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains(&inv.token.expose()[8..]));
}

#[tokio::test]
async fn copy_re_derives_the_created_key_which_the_database_does_not_hold() {
    let api = api().await;
    let created = api
        .create_key(
            &api.owner_key,
            json!({"name": "docker-fleet-a", "scope": "enroll"}),
        )
        .await;
    let copied: CopyKeyResponse = api
        .json(
            Method::POST,
            &format!("/v1/keys/{}/copy", created.info.id),
            Some(&api.owner_key),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(copied.key, created.key);
    assert_eq!(copied.info.id, created.info.id);
    api.store.close().await;
    let secret = &created.key.expose()[17..49];
    let hits = heex_tests_files_containing(api._dir.path(), secret);
    assert!(hits.is_empty(), "the key's secret is stored in {hits:?}");
}

#[tokio::test]
async fn a_revoked_key_cannot_be_copied() {
    let api = api().await;
    let created = api.create_key(&api.owner_key, json!({"name": "old"})).await;
    let _: KeyInfo = api
        .json(
            Method::POST,
            &format!("/v1/keys/{}/revoke", created.info.id),
            Some(&api.owner_key),
            None,
            StatusCode::OK,
        )
        .await;
    let e = api
        .error(
            Method::POST,
            &format!("/v1/keys/{}/copy", created.info.id),
            Some(&api.owner_key),
            None,
            StatusCode::FORBIDDEN,
        )
        .await;
    assert!(e.message.contains("cannot be copied"), "{}", e.message);
}

/// Files under `root` whose bytes contain `needle`.
fn heex_tests_files_containing(root: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
            {
                hits.push(path);
            }
        }
    }
    hits
}

#[tokio::test]
async fn audit_records_each_change_with_its_actor() {
    let api = api().await;
    let alice = api.owner_key.clone();
    let key = api
        .create_key(&alice, json!({"name": "ci", "scope": "enroll"}))
        .await;
    let enrolled: EnrollResponse =
        serde_json::from_slice(&api.enroll(key.key.expose(), StatusCode::CREATED).await.1).unwrap();
    let _: KeyInfo = api
        .json(
            Method::POST,
            &format!("/v1/keys/{}/revoke", key.info.id),
            Some(&alice),
            None,
            StatusCode::OK,
        )
        .await;
    // Revoking again changes nothing and records nothing.
    let _: KeyInfo = api
        .json(
            Method::POST,
            &format!("/v1/keys/{}/revoke", key.info.id),
            Some(&alice),
            None,
            StatusCode::OK,
        )
        .await;

    let on_key = api.audit(&alice, &format!("?target={}", key.info.id)).await;
    let actions: Vec<&str> = on_key.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["key.revoke", "key.create"]);
    assert!(on_key.iter().all(|e| e.actor == "owner@example.com"));
    assert_eq!(on_key[1].details["scope"], "enroll");

    let enroll = api.audit(&alice, "?action=device.enroll").await;
    assert_eq!(enroll.len(), 1);
    assert_eq!(enroll[0].target, enrolled.device_id.as_str());
    assert_eq!(enroll[0].details["key"], key.info.id.as_str());

    // The init events are there, by "system".
    let system = api.audit(&alice, "?actor=system").await;
    let actions: Vec<&str> = system.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["key.create", "member.join"]);

    assert_eq!(api.audit(&alice, "?limit=1").await.len(), 1);
    let future = "2999-01-01T00:00:00Z";
    assert!(api
        .audit(&alice, &format!("?since={future}"))
        .await
        .is_empty());
    for bad in [
        "?limit=0",
        "?limit=1001",
        "?since=yesterday",
        "?colour=red",
        "?limit=x",
    ] {
        let e = api
            .error(
                Method::GET,
                &format!("/v1/audit{bad}"),
                Some(&alice),
                None,
                StatusCode::BAD_REQUEST,
            )
            .await;
        assert_eq!(e.error, ErrorCode::BadRequest, "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enrollments_spend_a_limited_key_exactly() {
    let api = Arc::new(api().await);
    let limited = api
        .create_key(&api.owner_key, json!({"name": "three", "max_uses": 3}))
        .await;
    let csrs: Vec<String> = (0..24).map(|_| csr_pem(&PKCS_ECDSA_P256_SHA256)).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for csr in csrs {
        let api = Arc::clone(&api);
        let key = limited.key.expose().to_owned();
        tasks.spawn(async move {
            let body = enroll_body(csr, "r").to_string();
            api.call(Method::POST, "/v1/enroll", Some(&key), Some(body))
                .await
        });
    }
    let (mut created, mut refused) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        let (status, bytes) = r.unwrap();
        match status {
            StatusCode::CREATED => created += 1,
            StatusCode::FORBIDDEN => {
                let e: ErrorBody = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(
                    e.message,
                    format!(
                        "API key {} has used all of its 3 enrollments; create a new key",
                        limited.info.id
                    )
                );
                refused += 1;
            }
            other => panic!("{other}: {}", String::from_utf8_lossy(&bytes)),
        }
    }
    assert_eq!((created, refused), (3, 21));
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
    assert_eq!(devices.len(), 3);
    let listed = api.keys(&api.owner_key, false).await;
    let entry = listed
        .iter()
        .find(|k| k.info.id == limited.info.id)
        .unwrap();
    assert_eq!((entry.uses, entry.status), (3, KeyStatus::Exhausted));
}
