//! Key rotation, member removal, invitations, the audit log, and limited keys under
//! concurrent enrollment.

use crate::store::{DeviceQuery, PageRequest};
use std::sync::Arc;

use super::*;

async fn add_member(f: &Fixture, email: &str, role: Role) -> MemberId {
    let id = MemberId::generate();
    f.store
        .create_member(NewMember {
            id: id.clone(),
            workspace_id: f.ws.clone(),
            email: email.into(),
            role,
            created_at: f.now,
        })
        .await
        .unwrap();
    id
}

async fn add_key(f: &Fixture, owner: &MemberId, max_uses: Option<u64>) -> KeyId {
    let id = KeyId::generate();
    f.store
        .create_key(
            new_key(&id, &f.ws, owner, f.now, max_uses),
            audit(f, AuditAction::KeyCreate, id.as_str()),
        )
        .await
        .unwrap();
    id
}

fn enrollment_at(f: &Fixture, key: &KeyId, at: OffsetDateTime) -> NewDevice {
    NewDevice {
        enrolled_at: at,
        ..device(f, key)
    }
}

async fn events(f: &Fixture, filter: AuditFilter) -> Vec<heex_proto::api::AuditEvent> {
    f.store.audit_events(&f.ws, filter).await.unwrap().items
}

fn all(limit: u32) -> AuditFilter {
    AuditFilter {
        page: PageRequest::first(limit),
        ..AuditFilter::default()
    }
}

fn rotation(f: &Fixture, old: &KeyId, overlap: time::Duration) -> Rotation {
    let new = KeyId::generate();
    Rotation {
        old: old.clone(),
        new: new_key(&new, &f.ws, &f.owner, f.now, Some(2)),
        old_revoked_at: f.now + overlap,
        by: f.owner.clone(),
        at: f.now,
        audit: vec![
            audit(f, AuditAction::KeyRotate, old.as_str()),
            audit(f, AuditAction::KeyCreate, new.as_str()),
        ],
    }
}

#[tokio::test]
async fn rotation_keeps_the_old_key_until_the_overlap_ends() {
    let f = fixture().await;
    let old = add_key(&f, &f.owner, Some(2)).await;
    let r = rotation(&f, &old, time::Duration::hours(1));
    let new_id = r.new.id.clone();
    let new = f.store.rotate_key(r).await.unwrap();
    assert_eq!(new.id, new_id);
    assert_eq!((new.name.as_str(), new.scope), ("cli", Scope::Admin));
    assert_eq!(new.max_uses, Some(2));

    let old_rec = f.store.find_key(&old).await.unwrap().unwrap();
    assert_eq!(old_rec.revoked_at, Some(f.now + time::Duration::hours(1)));
    assert_eq!(old_rec.revoked_reason, Some(Revocation::Rotated));
    assert_eq!(old_rec.replaced_by.as_ref(), Some(&new_id));
    assert_eq!(old_rec.revoked_by.as_deref(), Some("alice@example.com"));
    assert!(!old_rec.is_revoked(f.now));
    assert_eq!(
        old_rec.status(f.now),
        heex_proto::api::KeyStatus::Active,
        "listed as active during the overlap"
    );
    assert_eq!(
        old_rec.status(f.now + time::Duration::hours(1)),
        heex_proto::api::KeyStatus::Revoked
    );

    // During the overlap the old key still enrolls; once it ends, it does not.
    f.store
        .insert_device(
            enrollment_at(&f, &old, f.now + time::Duration::minutes(59)),
            audit(&f, AuditAction::DeviceEnroll, "d"),
        )
        .await
        .unwrap();
    let late = enrollment_at(&f, &old, f.now + time::Duration::hours(1));
    let err = f
        .store
        .insert_device(late, audit(&f, AuditAction::DeviceEnroll, "d"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::KeyUnusable(_)), "{err:?}");

    // A key whose revocation is scheduled is not rotated twice; nothing is written.
    let again = rotation(&f, &old, time::Duration::ZERO);
    let again_id = again.new.id.clone();
    let err = f.store.rotate_key(again).await.unwrap_err();
    assert!(
        matches!(err, StoreError::KeyUnusable(ref id) if id == &old),
        "{err:?}"
    );
    assert!(f.store.find_key(&again_id).await.unwrap().is_none());

    // Revoking it now overrides the schedule.
    let revoked = f
        .store
        .revoke_key(
            &old,
            &f.owner,
            f.now,
            audit(&f, AuditAction::KeyRevoke, "k"),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(f.now));
    assert_eq!(revoked.revoked_reason, Some(Revocation::Revoked));

    let rotations = events(
        &f,
        AuditFilter {
            action: Some("key.rotate".into()),
            ..all(10)
        },
    )
    .await;
    assert_eq!(rotations.len(), 1, "the refused rotation left no event");
}

#[tokio::test]
async fn rotation_without_overlap_revokes_at_once() {
    let f = fixture().await;
    let old = add_key(&f, &f.owner, None).await;
    f.store
        .rotate_key(rotation(&f, &old, time::Duration::ZERO))
        .await
        .unwrap();
    let rec = f.store.find_key(&old).await.unwrap().unwrap();
    assert!(rec.is_revoked(f.now));
    let err = f
        .store
        .insert_device(device(&f, &old), audit(&f, AuditAction::DeviceEnroll, "d"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::KeyUnusable(_)));
}

#[tokio::test]
async fn removing_a_member_revokes_every_key_in_the_same_transaction() {
    let f = fixture().await;
    let bob = add_member(&f, "bob@example.com", Role::Member).await;
    let plain = add_key(&f, &bob, None).await;
    let rotating = add_key(&f, &bob, None).await;
    let mut r = rotation(&f, &rotating, time::Duration::hours(1));
    r.new.member_id = bob.clone();
    let replacement = r.new.id.clone();
    f.store.rotate_key(r).await.unwrap();
    let earlier = add_key(&f, &bob, None).await;
    let before = f.now - time::Duration::hours(1);
    f.store
        .revoke_key(
            &earlier,
            &bob,
            before,
            audit(&f, AuditAction::KeyRevoke, "k"),
        )
        .await
        .unwrap();
    let enrolled = device(&f, &plain);
    f.store
        .insert_device(enrolled.clone(), audit(&f, AuditAction::DeviceEnroll, "d"))
        .await
        .unwrap();

    // A failure inside the transaction (here: the audit event's workspace does not exist)
    // leaves everything as it was: no half-removed member with live keys.
    let mut broken = audit(&f, AuditAction::MemberRemove, "bob@example.com");
    broken.workspace_id = WorkspaceId::generate();
    let err = f
        .store
        .remove_member(&f.ws, &bob, &f.owner, f.now, broken)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    let listed = f
        .store
        .list_members(&f.ws, f.now, PageRequest::default())
        .await
        .unwrap()
        .items;
    let b = listed.iter().find(|m| m.id == bob).unwrap();
    assert!(b.removed_at.is_none());
    assert_eq!(
        b.active_keys, 3,
        "plain, rotating (overlap) and its replacement"
    );
    assert!(!f
        .store
        .find_key(&plain)
        .await
        .unwrap()
        .unwrap()
        .is_revoked(f.now));

    let outcome = f
        .store
        .remove_member(
            &f.ws,
            &bob,
            &f.owner,
            f.now,
            audit(&f, AuditAction::MemberRemove, "bob@example.com"),
        )
        .await
        .unwrap();
    let RemoveOutcome::Removed {
        member,
        revoked_keys,
        ..
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(member.removed_at, Some(f.now));
    assert_eq!(member.active_keys, 0);
    let mut expected = vec![plain.clone(), rotating.clone(), replacement.clone()];
    expected.sort();
    assert_eq!(revoked_keys, expected);
    for id in &expected {
        let k = f.store.find_key(id).await.unwrap().unwrap();
        assert_eq!(k.revoked_at, Some(f.now), "{id}");
        assert_eq!(k.revoked_reason, Some(Revocation::MemberRemoved), "{id}");
        assert_eq!(k.revoked_by.as_deref(), Some("alice@example.com"));
    }
    // The key revoked before keeps its own revocation.
    let k = f.store.find_key(&earlier).await.unwrap().unwrap();
    assert_eq!(
        (k.revoked_at, k.revoked_reason),
        (Some(before), Some(Revocation::Revoked))
    );
    // Devices belong to the workspace: untouched.
    let status = f.store.device_status(&enrolled.id).await.unwrap().unwrap();
    assert!(status.revoked_at.is_none());

    let removal = events(
        &f,
        AuditFilter {
            action: Some("member.remove".into()),
            ..all(10)
        },
    )
    .await;
    assert_eq!(removal.len(), 1);
    assert_eq!(removal[0].target, "bob@example.com");
    assert_eq!(
        removal[0].details["revoked_keys"].as_array().unwrap().len(),
        3
    );

    let again = f
        .store
        .remove_member(
            &f.ws,
            &bob,
            &f.owner,
            f.now,
            audit(&f, AuditAction::MemberRemove, "bob@example.com"),
        )
        .await
        .unwrap();
    assert!(matches!(again, RemoveOutcome::AlreadyRemoved(at) if at == f.now));
    // Another workspace cannot reach Bob.
    let other = f
        .store
        .remove_member(
            &WorkspaceId::generate(),
            &bob,
            &f.owner,
            f.now,
            audit(&f, AuditAction::MemberRemove, "x"),
        )
        .await
        .unwrap();
    assert!(matches!(other, RemoveOutcome::NotFound));
}

#[tokio::test]
async fn the_last_owner_stays() {
    let f = fixture().await;
    let remove = |id: MemberId| {
        let entry = audit(&f, AuditAction::MemberRemove, "x");
        let f = &f;
        async move {
            f.store
                .remove_member(&f.ws, &id, &f.owner, f.now, entry)
                .await
                .unwrap()
        }
    };
    assert!(matches!(
        remove(f.owner.clone()).await,
        RemoveOutcome::LastOwner
    ));
    let carol = add_member(&f, "carol@example.com", Role::Owner).await;
    assert!(matches!(
        remove(f.owner.clone()).await,
        RemoveOutcome::Removed { .. }
    ));
    assert!(matches!(remove(carol).await, RemoveOutcome::LastOwner));
}

fn invitation(f: &Fixture, token: &str, email: &str, expires: time::Duration) -> NewInvitation {
    NewInvitation {
        token_hash: token.to_owned(),
        workspace_id: f.ws.clone(),
        email: email.to_owned(),
        role: Role::Admin,
        created_at: f.now,
        expires_at: f.now + expires,
        invited_by: f.owner.clone(),
        id: format!("inv_{}", heex_proto::base62::random(16)),
    }
}

fn acceptance(token: &str, at: OffsetDateTime) -> Acceptance {
    Acceptance {
        token_hash: token.to_owned(),
        member_id: MemberId::generate(),
        key_id: KeyId::generate(),
        key_name: "laptop".into(),
        key_lifetime: time::Duration::days(90),
        at,
    }
}

#[tokio::test]
async fn invitations_work_once_and_expire() {
    let f = fixture().await;
    let day = time::Duration::days(1);
    let invite = |inv: NewInvitation| {
        let entry = audit(&f, AuditAction::MemberInvite, &inv.email);
        f.store.create_invitation(inv, entry)
    };
    assert!(invite(invitation(&f, "h-bob", "bob@example.com", day))
        .await
        .unwrap());
    assert!(invite(invitation(&f, "h-old", "old@example.com", day))
        .await
        .unwrap());
    // A current member's email (in any case) cannot be invited.
    assert!(!invite(invitation(&f, "h-alice", "Alice@Example.com", day))
        .await
        .unwrap());

    let joined = f
        .store
        .accept_invitation(acceptance("h-bob", f.now))
        .await
        .unwrap();
    let AcceptOutcome::Joined { member, key } = joined else {
        panic!("{joined:?}")
    };
    assert_eq!(
        (member.email.as_str(), member.role),
        ("bob@example.com", Role::Admin)
    );
    assert_eq!(member.active_keys, 1);
    assert_eq!((key.scope, key.name.as_str()), (Scope::Admin, "laptop"));
    assert_eq!(key.member_id, member.id);
    assert_eq!(key.expires_at, f.now + time::Duration::days(90));

    // Single use: the second acceptance creates nothing.
    let second = acceptance("h-bob", f.now);
    let second_key = second.key_id.clone();
    let again = f.store.accept_invitation(second).await.unwrap();
    assert!(matches!(again, AcceptOutcome::AlreadyAccepted(at) if at == f.now));
    assert!(f.store.find_key(&second_key).await.unwrap().is_none());

    // Expired: nothing created either.
    let late = f
        .store
        .accept_invitation(acceptance("h-old", f.now + day))
        .await
        .unwrap();
    assert!(matches!(late, AcceptOutcome::Expired(at) if at == f.now + day));
    assert!(matches!(
        f.store
            .accept_invitation(acceptance("h-unknown", f.now))
            .await
            .unwrap(),
        AcceptOutcome::Unknown
    ));
    let members = f
        .store
        .list_members(&f.ws, f.now, PageRequest::default())
        .await
        .unwrap()
        .items;
    assert_eq!(members.len(), 2, "alice and bob");

    // Invited twice before joining: the second invitation finds a member.
    assert!(invite(invitation(&f, "h-dup1", "dup@example.com", day))
        .await
        .unwrap());
    assert!(invite(invitation(&f, "h-dup2", "dup@example.com", day))
        .await
        .unwrap());
    let first = f
        .store
        .accept_invitation(acceptance("h-dup1", f.now))
        .await
        .unwrap();
    assert!(matches!(first, AcceptOutcome::Joined { .. }));
    let second = f
        .store
        .accept_invitation(acceptance("h-dup2", f.now))
        .await
        .unwrap();
    assert!(matches!(second, AcceptOutcome::AlreadyMember(ref e) if e == "dup@example.com"));

    let joins = events(
        &f,
        AuditFilter {
            action: Some("member.join".into()),
            ..all(10)
        },
    )
    .await;
    let targets: Vec<&str> = joins.iter().map(|e| e.target.as_str()).collect();
    assert_eq!(targets, ["dup@example.com", "bob@example.com"]);
    assert_eq!(joins[1].actor, "bob@example.com");
    assert_eq!(joins[1].details["invited_by"], "alice@example.com");
}

#[tokio::test]
async fn audit_filters_and_order() {
    let f = fixture().await;
    let other_ws = WorkspaceId::generate();
    f.store
        .create_workspace(NewWorkspace {
            id: other_ws.clone(),
            name: "other".into(),
            created_at: f.now,
        })
        .await
        .unwrap();
    let at = |mins: i64| f.now + time::Duration::minutes(mins);
    let rows = [
        ("alice@example.com", AuditAction::KeyCreate, "K1", at(1)),
        ("alice@example.com", AuditAction::KeyRevoke, "K1", at(2)),
        ("bob@example.com", AuditAction::KeyCreate, "K2", at(3)),
        (
            "alice@example.com",
            AuditAction::MemberInvite,
            "carol@example.com",
            at(4),
        ),
        ("bob@example.com", AuditAction::DeviceEnroll, "dev_1", at(5)),
    ];
    for (actor, action, target, when) in rows {
        f.store
            .record_audit(AuditEntry {
                workspace_id: f.ws.clone(),
                at: when,
                actor: actor.into(),
                action,
                target: target.into(),
                details: serde_json::json!({"n": 1}),
                caller: None,
            })
            .await
            .unwrap();
    }
    f.store
        .record_audit(AuditEntry {
            workspace_id: other_ws,
            at: at(6),
            actor: "alice@example.com".into(),
            action: AuditAction::KeyCreate,
            target: "K1".into(),
            details: serde_json::json!({}),
            caller: None,
        })
        .await
        .unwrap();

    let targets = |evs: Vec<heex_proto::api::AuditEvent>| -> Vec<String> {
        evs.into_iter()
            .map(|e| format!("{}:{}", e.action, e.target))
            .collect()
    };
    // The fixture's own key.create comes first in time; everything is newest first and
    // stays within the workspace.
    let everything = events(&f, all(100)).await;
    assert_eq!(everything.len(), 6);
    assert!(everything.windows(2).all(|w| w[0].id > w[1].id));
    assert_eq!(everything[0].target, "dev_1");
    assert_eq!(everything[0].details["n"], 1);

    let by = |actor: &str| AuditFilter {
        actor: Some(actor.into()),
        ..all(100)
    };
    assert_eq!(
        targets(events(&f, by("bob@example.com")).await),
        ["device.enroll:dev_1", "key.create:K2"]
    );
    let action = |a: &str| AuditFilter {
        action: Some(a.into()),
        ..all(100)
    };
    assert_eq!(
        targets(events(&f, action("key.")).await).len(),
        4,
        "prefix: three here plus the fixture's key"
    );
    assert_eq!(
        targets(events(&f, action("key.revoke")).await),
        ["key.revoke:K1"]
    );
    assert!(
        events(&f, action("key")).await.is_empty(),
        "exact, not prefix"
    );
    let target = AuditFilter {
        target: Some("K1".into()),
        ..all(100)
    };
    assert_eq!(
        targets(events(&f, target).await),
        ["key.revoke:K1", "key.create:K1"]
    );
    let since = AuditFilter {
        since: Some(at(4)),
        ..all(100)
    };
    assert_eq!(
        targets(events(&f, since).await),
        ["device.enroll:dev_1", "member.invite:carol@example.com"]
    );
    let combined = AuditFilter {
        actor: Some("alice@example.com".into()),
        action: Some("key.".into()),
        since: Some(at(2)),
        ..all(100)
    };
    assert_eq!(targets(events(&f, combined).await), ["key.revoke:K1"]);
    assert_eq!(events(&f, all(2)).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enrollments_cannot_overspend_a_limited_key() {
    let f = Arc::new(fixture().await);
    let limited = add_key(&f, &f.owner, Some(5)).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let f = Arc::clone(&f);
        let key = limited.clone();
        tasks.spawn(async move {
            let d = device(&f, &key);
            f.store
                .insert_device(d, audit(&f, AuditAction::DeviceEnroll, "d"))
                .await
        });
    }
    let (mut ok, mut refused) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::KeyUnusable(_)) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((ok, refused), (5, 35));
    assert_eq!(f.store.find_key(&limited).await.unwrap().unwrap().uses, 5);
    assert_eq!(
        f.store
            .query_devices(&f.ws, DeviceQuery::all(1000))
            .await
            .unwrap()
            .items
            .len(),
        5
    );
    let enrolled = events(
        &f,
        AuditFilter {
            action: Some("device.enroll".into()),
            ..all(100)
        },
    )
    .await;
    assert_eq!(enrolled.len(), 5, "refused enrollments leave no event");
}

#[tokio::test]
async fn keys_are_listed_per_owner_or_workspace() {
    let f = fixture().await;
    let bob = add_member(&f, "bob@example.com", Role::Member).await;
    let bobs = add_key(&f, &bob, None).await;
    let mine = f
        .store
        .list_keys(&f.ws, Some(&f.owner), PageRequest::default())
        .await
        .unwrap()
        .items;
    assert_eq!(mine.iter().map(|k| &k.id).collect::<Vec<_>>(), [&f.key]);
    let every = f
        .store
        .list_keys(&f.ws, None, PageRequest::default())
        .await
        .unwrap()
        .items;
    assert_eq!(every.len(), 2);
    assert!(every
        .iter()
        .any(|k| k.id == bobs && k.member_email == "bob@example.com"));
    assert!(f
        .store
        .list_keys(&WorkspaceId::generate(), None, PageRequest::default())
        .await
        .unwrap()
        .items
        .is_empty());
}

#[tokio::test]
async fn a_workspace_starts_with_its_owner_and_their_key_audited() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("heex.db")).unwrap();
    let now = at_second(OffsetDateTime::now_utc());
    let ws = WorkspaceId::generate();
    let owner = MemberId::generate();
    let key = KeyId::generate();
    store
        .create_workspace_with_owner(
            NewWorkspace {
                id: ws.clone(),
                name: "robots".into(),
                created_at: now,
            },
            NewMember {
                id: owner.clone(),
                workspace_id: ws.clone(),
                email: "o@example.com".into(),
                role: Role::Owner,
                created_at: now,
            },
            new_key(&key, &ws, &owner, now, None),
        )
        .await
        .unwrap();
    let evs = store.audit_events(&ws, all(10)).await.unwrap().items;
    let seen: Vec<(&str, &str, &str)> = evs
        .iter()
        .map(|e| (e.actor.as_str(), e.action.as_str(), e.target.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("system", "key.create", key.as_str()),
            ("system", "member.join", "o@example.com")
        ]
    );
    // The name is unique: a second workspace called the same is refused as a whole.
    let err = store
        .create_workspace_with_owner(
            NewWorkspace {
                id: WorkspaceId::generate(),
                name: "robots".into(),
                created_at: now,
            },
            NewMember {
                id: MemberId::generate(),
                workspace_id: ws.clone(),
                email: "x@example.com".into(),
                role: Role::Owner,
                created_at: now,
            },
            new_key(&KeyId::generate(), &ws, &owner, now, None),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(
        store
            .list_members(&ws, now, PageRequest::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    store.close().await;
}

/// The host's operator makes a key for a current member of a workspace named by name, with
/// an audit event naming the operator; a removed member, an unknown email or workspace get
/// none, and nothing is written.
#[tokio::test]
async fn the_operator_makes_keys_for_current_members_only() {
    use crate::store::ops::{OperatorKey, OperatorKeyOutcome};
    let f = fixture().await;
    let bob = add_member(&f, "bob@example.com", Role::Member).await;
    let key = |n: &str| OperatorKey {
        id: KeyId::generate(),
        name: n.into(),
        scope: Scope::Admin,
        created_at: f.now,
        expires_at: f.now + time::Duration::days(7),
        actor: "operator on host-1".into(),
    };
    let made = key("break-glass");
    let outcome = f
        .store
        .operator_create_key("default", "BOB@example.com", made.clone())
        .await
        .unwrap();
    let OperatorKeyOutcome::Created(member) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(member.id, bob);
    let stored = f.store.find_key(&made.id).await.unwrap().unwrap();
    assert_eq!(stored.member_id, bob);
    assert_eq!(stored.scope, Scope::Admin);
    assert_eq!(stored.usability(f.now), KeyUsability::Usable);
    let events = f.store.audit_events(&f.ws, all(10)).await.unwrap().items;
    let created = events
        .iter()
        .find(|e| e.target == made.id.as_str())
        .unwrap();
    assert_eq!(created.actor, "operator on host-1");
    assert_eq!(created.details["by"], "operator");

    assert!(matches!(
        f.store
            .operator_create_key("no-such", "bob@example.com", key("x"))
            .await
            .unwrap(),
        OperatorKeyOutcome::NoWorkspace
    ));
    assert!(matches!(
        f.store
            .operator_create_key("default", "carol@example.com", key("x"))
            .await
            .unwrap(),
        OperatorKeyOutcome::NoMember
    ));
    f.store
        .remove_member(
            &f.ws,
            &bob,
            &f.owner,
            f.now,
            audit(&f, AuditAction::MemberRemove, "bob@example.com"),
        )
        .await
        .unwrap();
    let refused = key("after removal");
    assert!(matches!(
        f.store
            .operator_create_key("default", "bob@example.com", refused.clone())
            .await
            .unwrap(),
        OperatorKeyOutcome::NoMember
    ));
    assert!(f.store.find_key(&refused.id).await.unwrap().is_none());
}

/// An owner is warned when their last usable admin key expires within 14 days, or when
/// none is left; other roles, and an owner with a key outliving the window, are not.
#[tokio::test]
async fn owners_are_warned_before_their_last_admin_key_lapses() {
    use crate::store::ops::admin_key_warning;
    let f = fixture().await;
    let key = f.store.find_key(&f.key).await.unwrap().unwrap();
    let expires = key.expires_at;
    let keys = vec![key.clone()];
    let at = |days_before: i64| expires - time::Duration::days(days_before);
    assert_eq!(admin_key_warning(Role::Owner, &keys, at(20)), None);
    let warned = admin_key_warning(Role::Owner, &keys, at(10)).unwrap();
    assert!(warned.contains("expires in 10 days"), "{warned}");
    assert!(warned.contains("heex-cloud keys create"), "{warned}");
    assert_eq!(admin_key_warning(Role::Admin, &keys, at(10)), None);
    let gone = admin_key_warning(Role::Owner, &keys, at(-1)).unwrap();
    assert!(gone.contains("no usable admin key"), "{gone}");
    // An enroll key does not count.
    let mut enroll = key;
    enroll.scope = Scope::Enroll;
    assert!(admin_key_warning(Role::Owner, &[enroll], at(20)).is_some());
}
