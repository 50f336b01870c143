use std::time::Duration;

use crate::store::DeviceQuery;
use heex_proto::api::{Facts, Scope};
use heex_proto::SpiffeId;
use time::OffsetDateTime;

use super::*;
use heex_tests::pg::PgServer;

mod device_lifecycle;
mod device_list;
mod lifecycle;

/// The store of one test, on the backend `HEEX_TEST_STORE` names: `sqlite` (the default) or
/// `postgres` (a server of the test's own, see [`PgServer`]). The same tests run on both.
pub(crate) struct Fixture {
    pub(crate) store: Store,
    _pg: Option<PgServer>,
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    ws: WorkspaceId,
    owner: MemberId,
    key: KeyId,
    now: OffsetDateTime,
}

fn at_second(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap()
}

/// True when the tests run on PostgreSQL.
pub(crate) fn on_postgres() -> bool {
    match std::env::var("HEEX_TEST_STORE").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("HEEX_TEST_STORE={other:?}: use sqlite or postgres"),
    }
}

impl Fixture {
    /// True (with a note) when this test is about the SQLite file itself and the tests run on
    /// another backend.
    pub(crate) fn sqlite_only(&self) -> bool {
        if self._pg.is_some() {
            eprintln!("this test checks the SQLite file itself: nothing to check on PostgreSQL");
        }
        self._pg.is_some()
    }
}

pub(crate) async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("heex.db");
    let (store, pg) = if on_postgres() {
        let server = PgServer::start();
        let url = server.conninfo();
        let store = tokio::task::spawn_blocking(move || Store::open_postgres(&url))
            .await
            .unwrap()
            .unwrap();
        (store, Some(server))
    } else {
        (Store::open_sqlite(&path).unwrap(), None)
    };
    let now = at_second(OffsetDateTime::now_utc());
    let ws = WorkspaceId::generate();
    let owner = MemberId::generate();
    let key = KeyId::generate();
    store
        .create_workspace(NewWorkspace {
            id: ws.clone(),
            name: "default".into(),
            created_at: now,
        })
        .await
        .unwrap();
    store
        .create_member(NewMember {
            id: owner.clone(),
            workspace_id: ws.clone(),
            email: "alice@example.com".into(),
            role: Role::Owner,
            created_at: now,
        })
        .await
        .unwrap();
    store
        .create_key(
            new_key(&key, &ws, &owner, now, None),
            AuditEntry {
                workspace_id: ws.clone(),
                at: now,
                actor: "alice@example.com".into(),
                action: AuditAction::KeyCreate,
                target: key.to_string(),
                details: serde_json::json!({}),
                caller: None,
            },
        )
        .await
        .unwrap();
    Fixture {
        _pg: pg,
        _dir: dir,
        path,
        store,
        ws,
        owner,
        key,
        now,
    }
}

fn new_key(
    id: &KeyId,
    ws: &WorkspaceId,
    owner: &MemberId,
    now: OffsetDateTime,
    max_uses: Option<u64>,
) -> NewKey {
    NewKey {
        id: id.clone(),
        workspace_id: ws.clone(),
        member_id: owner.clone(),
        name: "cli".into(),
        scope: Scope::Admin,
        created_at: now,
        expires_at: now + time::Duration::days(90),
        max_uses,
    }
}

pub(crate) fn audit(f: &Fixture, action: AuditAction, target: &str) -> AuditEntry {
    AuditEntry {
        workspace_id: f.ws.clone(),
        at: f.now,
        actor: "alice@example.com".into(),
        action,
        target: target.to_owned(),
        details: serde_json::json!({}),
        caller: None,
    }
}

pub(crate) fn device(f: &Fixture, key: &KeyId) -> NewDevice {
    let id = DeviceId::generate();
    NewDevice {
        spiffe_id: SpiffeId::new("heex.local", f.ws.clone(), id.clone()).unwrap(),
        id,
        workspace_id: f.ws.clone(),
        name: "robot".into(),
        labels: [("site".to_owned(), "lab".to_owned())].into(),
        facts: Some(Facts {
            hostname: Some("r1".into()),
            cpus: Some(4),
            ..Facts::default()
        }),
        enrolled_at: f.now,
        enrolled_by_key: key.clone(),
        enrolled_by_member: f.owner.clone(),
        cert_serial: "40aa".into(),
        cert_expires_at: f.now + time::Duration::days(30),
        cert_ca: "sha256:old".into(),
        cert_key: "key-of-40aa".into(),
    }
}

#[tokio::test]
async fn key_records_join_owner_and_workspace() {
    let f = fixture().await;
    let k = f.store.find_key(&f.key).await.unwrap().unwrap();
    assert_eq!(k.workspace_id, f.ws);
    assert_eq!(k.workspace_name, "default");
    assert_eq!(k.member_email, "alice@example.com");
    assert_eq!(k.member_role, Role::Owner);
    assert_eq!(k.created_at, f.now);
    assert_eq!(k.uses, 0);
    assert!(k.revoked_at.is_none() && k.last_used_at.is_none());
    assert!(f
        .store
        .find_key(&KeyId::generate())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn revoke_is_recorded_once() {
    let f = fixture().await;
    let first = f
        .store
        .revoke_key(
            &f.key,
            &f.owner,
            f.now,
            audit(&f, AuditAction::KeyRevoke, "k"),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.revoked_at, Some(f.now));
    assert_eq!(first.revoked_by.as_deref(), Some("alice@example.com"));
    let again = f
        .store
        .revoke_key(
            &f.key,
            &f.owner,
            f.now + time::Duration::hours(1),
            audit(&f, AuditAction::KeyRevoke, "k"),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.revoked_at, Some(f.now), "the first revocation stands");
    assert!(f
        .store
        .revoke_key(
            &KeyId::generate(),
            &f.owner,
            f.now,
            audit(&f, AuditAction::KeyRevoke, "k")
        )
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn enrollment_needs_a_usable_key_and_counts_uses() {
    let f = fixture().await;
    let d = device(&f, &f.key);
    f.store
        .insert_device(d.clone(), audit(&f, AuditAction::DeviceEnroll, "d"))
        .await
        .unwrap();
    assert_eq!(f.store.find_key(&f.key).await.unwrap().unwrap().uses, 1);

    // A limited key stops at its limit, and the refused device is not stored.
    let limited = KeyId::generate();
    f.store
        .create_key(
            new_key(&limited, &f.ws, &f.owner, f.now, Some(1)),
            audit(&f, AuditAction::KeyCreate, "k"),
        )
        .await
        .unwrap();
    f.store
        .insert_device(
            device(&f, &limited),
            audit(&f, AuditAction::DeviceEnroll, "d"),
        )
        .await
        .unwrap();
    let refused = device(&f, &limited);
    let err = f
        .store
        .insert_device(refused.clone(), audit(&f, AuditAction::DeviceEnroll, "d"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::KeyUnusable(ref id) if id == &limited),
        "{err:?}"
    );
    assert!(f.store.device_status(&refused.id).await.unwrap().is_none());

    // A revoked key enrolls nothing more.
    f.store
        .revoke_key(
            &f.key,
            &f.owner,
            f.now,
            audit(&f, AuditAction::KeyRevoke, "k"),
        )
        .await
        .unwrap();
    let err = f
        .store
        .insert_device(
            device(&f, &f.key),
            audit(&f, AuditAction::DeviceEnroll, "d"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::KeyUnusable(_)), "{err:?}");

    // Devices do not depend on the key that enrolled them.
    let status = f.store.device_status(&d.id).await.unwrap().unwrap();
    assert_eq!(status.workspace_id, f.ws);
    assert!(status.revoked_at.is_none());
    let listed = f
        .store
        .query_devices(&f.ws, DeviceQuery::all(1000))
        .await
        .unwrap()
        .items;
    assert_eq!(listed.len(), 2);
    let first = listed.iter().find(|x| x.id == d.id).unwrap();
    assert_eq!(first.enrolled_by_member, "alice@example.com");
    assert_eq!(first.labels, d.labels);
    assert_eq!(first.facts, d.facts);
    assert_eq!(first.spiffe_id, d.spiffe_id);
    assert_eq!(first.cert_expires_at, d.cert_expires_at);
}

#[tokio::test]
async fn an_enrollment_that_fails_at_its_last_write_leaves_nothing() {
    // The device id is taken, which only the device's insert finds out: the key's use, the
    // labels and the audit event written with it must all go with the failed enrollment.
    let f = fixture().await;
    let d = device(&f, &f.key);
    f.store
        .insert_device(d.clone(), audit(&f, AuditAction::DeviceEnroll, "first"))
        .await
        .unwrap();
    let mut again = device(&f, &f.key);
    again.id = d.id.clone();
    again.labels = [("site".to_owned(), "elsewhere".to_owned())].into();
    let err = f
        .store
        .insert_device(again, audit(&f, AuditAction::DeviceEnroll, "second"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(f.store.find_key(&f.key).await.unwrap().unwrap().uses, 1);
    let listed = f
        .store
        .query_devices(&f.ws, DeviceQuery::all(10))
        .await
        .unwrap()
        .items;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].labels, d.labels);
    let events = f
        .store
        .audit_events(
            &f.ws,
            AuditFilter {
                page: PageRequest::first(100),
                ..AuditFilter::default()
            },
        )
        .await
        .unwrap()
        .items;
    assert!(events.iter().any(|e| e.target == "first"));
    assert!(!events.iter().any(|e| e.target == "second"), "{events:?}");

    // The store goes on: the next enrollment goes in whole.
    f.store
        .insert_device(
            device(&f, &f.key),
            audit(&f, AuditAction::DeviceEnroll, "third"),
        )
        .await
        .unwrap();
    assert_eq!(f.store.find_key(&f.key).await.unwrap().unwrap().uses, 2);
}

#[tokio::test]
async fn expired_key_cannot_enroll() {
    let f = fixture().await;
    let old = KeyId::generate();
    let mut k = new_key(&old, &f.ws, &f.owner, f.now, None);
    k.expires_at = f.now - time::Duration::seconds(1);
    f.store
        .create_key(k, audit(&f, AuditAction::KeyCreate, "k"))
        .await
        .unwrap();
    let err = f
        .store
        .insert_device(device(&f, &old), audit(&f, AuditAction::DeviceEnroll, "d"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::KeyUnusable(_)));
}

#[tokio::test]
async fn seen_updates_time_and_keeps_facts_and_version_unless_new_ones_come() {
    let f = fixture().await;
    let d = device(&f, &f.key);
    f.store
        .insert_device(d.clone(), audit(&f, AuditAction::DeviceEnroll, "d"))
        .await
        .unwrap();
    let t1 = f.now + time::Duration::minutes(1);
    f.store
        .record_connected(&d.id, None, None, t1, "test", true)
        .await
        .unwrap();
    let got = &f
        .store
        .query_devices(&f.ws, DeviceQuery::all(1000))
        .await
        .unwrap()
        .items[0];
    assert_eq!(got.last_seen_at, Some(t1));
    assert_eq!(got.facts, d.facts);
    assert_eq!(got.agent_version, None, "no Hello yet");
    let fresh = Facts {
        hostname: Some("r1-renamed".into()),
        ..Facts::default()
    };
    let t2 = t1 + time::Duration::minutes(1);
    f.store
        .record_connected(&d.id, Some(&fresh), Some("1.2.3"), t2, "test", true)
        .await
        .unwrap();
    // An older time never moves last_seen back.
    f.store
        .record_connected(&d.id, None, None, t1, "test", true)
        .await
        .unwrap();
    let got = &f
        .store
        .query_devices(&f.ws, DeviceQuery::all(1000))
        .await
        .unwrap()
        .items[0];
    assert_eq!(got.last_seen_at, Some(t2));
    assert_eq!(got.facts.as_ref(), Some(&fresh));
    assert_eq!(
        got.agent_version.as_deref(),
        Some("1.2.3"),
        "a heartbeat (no version) keeps the Hello's"
    );
    // Unknown devices are simply not found.
    f.store
        .record_connected(&DeviceId::generate(), None, None, t2, "test", true)
        .await
        .unwrap();
    assert!(f
        .store
        .device_status(&DeviceId::generate())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn key_use_is_visible_at_once_and_persisted_in_the_background() {
    let f = fixture().await;
    let used = f.now + time::Duration::seconds(5);
    f.store.touch_key_used(&f.key, used);
    assert_eq!(
        f.store
            .find_key(&f.key)
            .await
            .unwrap()
            .unwrap()
            .last_used_at,
        Some(used)
    );
    // Within about a second the writer flushes it without any other write.
    if f.sqlite_only() {
        return;
    }
    let conn = rusqlite::Connection::open(&f.path).unwrap();
    let mut stored = None;
    for _ in 0..40 {
        stored = conn
            .query_row(
                "SELECT last_used_at FROM api_keys WHERE id = ?1",
                [f.key.as_str()],
                |r| r.get::<_, Option<i64>>(0),
            )
            .unwrap();
        if stored.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored, Some(used.unix_timestamp()));
}

#[tokio::test]
async fn key_use_times_wait_for_no_other_transaction() {
    // On PostgreSQL the writer of key-use times skips a key row another transaction holds
    // (an enrollment counting a use on it) instead of waiting behind it, and writes it once
    // it is free.
    let f = fixture().await;
    let Some(pg) = &f._pg else {
        eprintln!("SQLite has one writer: no other transaction can hold a key's row");
        return;
    };
    let free = KeyId::generate();
    f.store
        .create_key(
            new_key(&free, &f.ws, &f.owner, f.now, None),
            audit(&f, AuditAction::KeyCreate, "k"),
        )
        .await
        .unwrap();
    let url = pg.conninfo();
    let (held_tx, held) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let busy = f.key.clone();
    let holder = std::thread::spawn({
        let url = url.clone();
        move || {
            let mut c = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
            let mut tx = c.transaction().unwrap();
            tx.execute(
                "SELECT id FROM api_keys WHERE id = $1 FOR UPDATE",
                &[&busy.as_str()],
            )
            .unwrap();
            held_tx.send(()).unwrap();
            released.recv().unwrap();
            tx.commit().unwrap();
        }
    });
    held.recv().unwrap();
    let used = f.now + time::Duration::seconds(7);
    f.store.touch_key_used(&f.key, used);
    f.store.touch_key_used(&free, used);
    let stored = |id: KeyId| {
        let url = url.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let mut c = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
                c.query_one(
                    "SELECT last_used_at FROM api_keys WHERE id = $1",
                    &[&id.as_str()],
                )
                .unwrap()
                .get::<_, Option<i64>>(0)
            })
            .await
            .unwrap()
        }
    };
    let until = |id: KeyId| {
        let stored = &stored;
        async move {
            for _ in 0..50 {
                if stored(id.clone()).await.is_some() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        }
    };
    assert!(
        until(free.clone()).await,
        "the free key's use was not written"
    );
    assert_eq!(
        stored(f.key.clone()).await,
        None,
        "written through a held row"
    );
    // Still visible at once through the store.
    assert_eq!(
        f.store
            .find_key(&f.key)
            .await
            .unwrap()
            .unwrap()
            .last_used_at,
        Some(used)
    );
    release.send(()).unwrap();
    holder.join().unwrap();
    assert!(
        until(f.key.clone()).await,
        "the held key's use was never written"
    );
    assert_eq!(stored(f.key.clone()).await, Some(used.unix_timestamp()));
}

#[tokio::test]
async fn reopening_keeps_data_and_schema() {
    let f = fixture().await;
    if f.sqlite_only() {
        return;
    }
    let d = device(&f, &f.key);
    f.store
        .insert_device(d.clone(), audit(&f, AuditAction::DeviceEnroll, "d"))
        .await
        .unwrap();
    f.store.touch_key_used(&f.key, f.now);
    f.store.close().await;
    let reopened = Store::open_sqlite(&f.path).unwrap();
    assert!(reopened.device_status(&d.id).await.unwrap().is_some());
    let k = reopened.find_key(&f.key).await.unwrap().unwrap();
    assert_eq!(
        k.last_used_at,
        Some(f.now),
        "close() flushed the pending use"
    );
    reopened.close().await;
    let conn = rusqlite::Connection::open(&f.path).unwrap();
    assert_eq!(
        migrations::current_version(&conn).unwrap(),
        migrations::latest_version()
    );
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn duplicate_member_email_conflicts() {
    let f = fixture().await;
    let err = f
        .store
        .create_member(NewMember {
            id: MemberId::generate(),
            workspace_id: f.ws.clone(),
            email: "alice@example.com".into(),
            role: Role::Member,
            created_at: f.now,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
}

/// A workspace with `n` enrolled devices (reports are stored only for live devices).
pub(crate) async fn with_devices(n: usize) -> (Fixture, Vec<DeviceId>) {
    let f = fixture().await;
    let mut ids = Vec::new();
    for _ in 0..n {
        let d = device(&f, &f.key);
        ids.push(d.id.clone());
        let entry = audit(&f, AuditAction::DeviceEnroll, d.id.as_str());
        f.store.insert_device(d, entry).await.unwrap();
    }
    (f, ids)
}
