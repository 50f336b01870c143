//! Device lists: filters, orders, keyset pages, connection marks and counts.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::store::{DeviceSort, LabelSelector, PageRequest};

/// Enrolls `n` devices named robot-000… with `labels(i)`, enrolled one second apart.
async fn enroll_many(
    f: &Fixture,
    n: usize,
    labels: impl Fn(usize) -> BTreeMap<String, String>,
) -> Vec<DeviceId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let mut d = device(f, &f.key);
        d.name = format!("robot-{i:03}");
        d.labels = labels(i);
        d.enrolled_at = f.now + time::Duration::seconds(i as i64);
        d.cert_expires_at = f.now + time::Duration::days(1 + i as i64);
        ids.push(d.id.clone());
        f.store
            .insert_device(d, audit(f, AuditAction::DeviceEnroll, "d"))
            .await
            .unwrap();
    }
    ids
}

fn site(i: usize) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([(
        "site".to_owned(),
        ["lyon", "oslo", "rome"][i % 3].to_owned(),
    )]);
    if i % 5 == 0 {
        l.insert("retired".into(), "yes".into());
    }
    l
}

/// Every page of `q`, following the positions; the names in order.
async fn walk(f: &Fixture, mut q: DeviceQuery) -> Vec<String> {
    let mut names = Vec::new();
    for _ in 0..1000 {
        let page = f.store.query_devices(&f.ws, q.clone()).await.unwrap();
        assert!(page.items.len() <= q.page.limit as usize);
        names.extend(page.items.iter().map(|d| d.name.clone()));
        match page.next {
            Some(next) => {
                assert!(
                    !page.items.is_empty(),
                    "a page with a successor is not empty"
                );
                q.page.after = Some(next);
            }
            None => return names,
        }
    }
    panic!("paging does not end");
}

fn query(limit: u32) -> DeviceQuery {
    DeviceQuery::all(limit)
}

#[tokio::test]
async fn pages_cover_every_device_once_in_each_order() {
    let f = fixture().await;
    enroll_many(&f, 23, site).await;
    let all: Vec<String> = (0..23).map(|i| format!("robot-{i:03}")).collect();
    for limit in [1, 5, 23, 100] {
        assert_eq!(walk(&f, query(limit)).await, all, "limit {limit}");
    }
    let mut by_name = query(4);
    by_name.sort = DeviceSort::Name;
    by_name.descending = true;
    let mut reversed = all.clone();
    reversed.reverse();
    assert_eq!(walk(&f, by_name).await, reversed);
    // Never seen: all tie at 0, the id orders them; still each exactly once.
    let mut seen = query(3);
    seen.sort = DeviceSort::LastSeen;
    let got = walk(&f, seen).await;
    assert_eq!(got.iter().collect::<BTreeSet<_>>().len(), 23);
}

#[tokio::test]
async fn a_cursor_stays_valid_while_devices_come_and_go() {
    let f = fixture().await;
    let ids = enroll_many(&f, 10, site).await;
    let first = f.store.query_devices(&f.ws, query(4)).await.unwrap();
    let names: Vec<&str> = first.items.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["robot-000", "robot-001", "robot-002", "robot-003"]);
    // Meanwhile: the first page's last device is deleted, one after the cursor is too,
    // and a new device is enrolled (after every other in enrollment order).
    for id in [&ids[3], &ids[5]] {
        f.store
            .revoke_device(&f.ws, id, f.now, audit(&f, AuditAction::DeviceRevoke, "d"))
            .await
            .unwrap();
        f.store
            .delete_device(&f.ws, id, audit(&f, AuditAction::DeviceDelete, "d"))
            .await
            .unwrap();
    }
    let mut late = device(&f, &f.key);
    late.name = "robot-late".into();
    late.enrolled_at = f.now + time::Duration::hours(1);
    f.store
        .insert_device(late, audit(&f, AuditAction::DeviceEnroll, "d"))
        .await
        .unwrap();
    let mut rest = query(100);
    rest.page.after = first.next;
    let rest: Vec<String> = f
        .store
        .query_devices(&f.ws, rest)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(
        rest,
        [
            "robot-004",
            "robot-006",
            "robot-007",
            "robot-008",
            "robot-009",
            "robot-late"
        ]
    );
}

#[tokio::test]
async fn filters_combine() {
    let f = fixture().await;
    let ids = enroll_many(&f, 30, site).await;
    let names = |q: DeviceQuery| async { walk(&f, q).await };

    let mut lyon = query(7);
    lyon.labels = vec![LabelSelector::Equals("site".into(), "lyon".into())];
    let want: Vec<String> = (0..30)
        .filter(|i| i % 3 == 0)
        .map(|i| format!("robot-{i:03}"))
        .collect();
    assert_eq!(names(lyon.clone()).await, want);

    // lyon and not retired: i % 3 == 0 and i % 5 != 0.
    lyon.labels.push(LabelSelector::Absent("retired".into()));
    let want: Vec<String> = (0..30)
        .filter(|i| i % 3 == 0 && i % 5 != 0)
        .map(|i| format!("robot-{i:03}"))
        .collect();
    assert_eq!(names(lyon).await, want);

    let mut not_lyon = query(100);
    not_lyon.labels = vec![LabelSelector::NotEquals("site".into(), "lyon".into())];
    assert_eq!(names(not_lyon).await.len(), 20);
    let mut retired = query(100);
    retired.labels = vec![LabelSelector::Exists("retired".into())];
    assert_eq!(names(retired).await.len(), 6);

    // Search: in the name (either case) or the id; LIKE wildcards are literal.
    let mut search = query(100);
    search.search = Some("OBOT-01".into());
    assert_eq!(names(search.clone()).await.len(), 10);
    search.search = Some(ids[7].to_string());
    assert_eq!(names(search.clone()).await, ["robot-007"]);
    search.search = Some("%".into());
    assert!(names(search.clone()).await.is_empty());
    // Unescaped, '_' would match the '-' of every name.
    search.search = Some("robot_0".into());
    assert!(names(search).await.is_empty());

    // Certificates: device i expires after 1 + i days.
    let mut expiring = query(100);
    expiring.cert_expires_before = Some(f.now + time::Duration::days(3) + time::Duration::hours(1));
    assert_eq!(
        names(expiring).await,
        ["robot-000", "robot-001", "robot-002"]
    );

    // Enrolled by: the member's id or email, or the key.
    let mut by = query(100);
    by.enrolled_by = Some("alice@example.com".into());
    assert_eq!(names(by.clone()).await.len(), 30);
    by.enrolled_by = Some(f.owner.to_string());
    assert_eq!(names(by.clone()).await.len(), 30);
    by.enrolled_by = Some("bob@example.com".into());
    assert!(names(by).await.is_empty());
    let mut with_key = query(100);
    with_key.enrolled_with_key = Some(KeyId::generate());
    assert!(names(with_key).await.is_empty());

    // Revoked or not.
    f.store
        .revoke_device(
            &f.ws,
            &ids[1],
            f.now,
            audit(&f, AuditAction::DeviceRevoke, "d"),
        )
        .await
        .unwrap();
    let mut revoked = query(100);
    revoked.revoked = Some(true);
    assert_eq!(names(revoked.clone()).await, ["robot-001"]);
    revoked.revoked = Some(false);
    assert_eq!(names(revoked).await.len(), 29);

    // Another workspace sees none of them.
    let other = WorkspaceId::generate();
    assert!(f
        .store
        .query_devices(&other, query(100))
        .await
        .unwrap()
        .items
        .is_empty());
}

#[tokio::test]
async fn label_rows_follow_label_changes_and_deletion() {
    let f = fixture().await;
    let ids = enroll_many(&f, 3, site).await;
    let mut rome = query(100);
    rome.labels = vec![LabelSelector::Equals("site".into(), "rome".into())];
    assert_eq!(walk(&f, rome.clone()).await, ["robot-002"]);
    f.store
        .update_device(
            &f.ws,
            &ids[0],
            None,
            Some(BTreeMap::from([("site".into(), "rome".into())])),
            audit(&f, AuditAction::DeviceUpdate, "d"),
        )
        .await
        .unwrap();
    assert_eq!(walk(&f, rome.clone()).await, ["robot-000", "robot-002"]);
    // The retired label of robot-000 went with the replaced set.
    let mut retired = query(100);
    retired.labels = vec![LabelSelector::Exists("retired".into())];
    assert!(walk(&f, retired).await.is_empty());
    f.store
        .revoke_device(
            &f.ws,
            &ids[2],
            f.now,
            audit(&f, AuditAction::DeviceRevoke, "d"),
        )
        .await
        .unwrap();
    f.store
        .delete_device(&f.ws, &ids[2], audit(&f, AuditAction::DeviceDelete, "d"))
        .await
        .unwrap();
    assert_eq!(walk(&f, rome).await, ["robot-000"]);
}

#[tokio::test]
async fn connection_marks_filter_count_and_clear() {
    let f = fixture().await;
    let ids = enroll_many(&f, 4, site).await;
    let facts = Facts::default();
    for (id, conn) in [(&ids[0], "gw-1"), (&ids[1], "gw-2")] {
        assert!(matches!(
            f.store
                .record_connected(id, Some(&facts), None, f.now, conn, true)
                .await
                .unwrap(),
            Seen::Recorded
        ));
    }
    let mut connected = query(100);
    connected.connected = Some(true);
    assert_eq!(
        walk(&f, connected.clone()).await,
        ["robot-000", "robot-001"]
    );
    let mut offline = query(100);
    offline.connected = Some(false);
    assert_eq!(walk(&f, offline.clone()).await, ["robot-002", "robot-003"]);
    let found = f.store.find_device(&f.ws, &ids[0]).await.unwrap().unwrap();
    assert!(found.connected);

    // Another session's end does not clear the mark; its own does.
    f.store.record_disconnected(&ids[0], "gw-0").await.unwrap();
    assert_eq!(walk(&f, connected.clone()).await.len(), 2);
    f.store.record_disconnected(&ids[0], "gw-1").await.unwrap();
    assert_eq!(walk(&f, connected.clone()).await, ["robot-001"]);

    // Revocation clears the mark in its transaction, and a revoked device is not marked.
    f.store
        .revoke_device(
            &f.ws,
            &ids[1],
            f.now,
            audit(&f, AuditAction::DeviceRevoke, "d"),
        )
        .await
        .unwrap();
    assert!(walk(&f, connected.clone()).await.is_empty());
    assert!(matches!(
        f.store
            .record_connected(&ids[1], None, None, f.now, "gw-3", true)
            .await
            .unwrap(),
        Seen::NotLive
    ));
    assert!(walk(&f, connected.clone()).await.is_empty());

    // Counts: 4 devices, none connected now, 1 revoked; expiring within 2.5 days: the
    // devices expiring after 1 and 2 days, but the revoked one does not count.
    assert!(matches!(
        f.store
            .record_connected(&ids[2], None, None, f.now, "gw-4", true)
            .await
            .unwrap(),
        Seen::Recorded
    ));
    let counts = f
        .store
        .device_counts(&f.ws, f.now + time::Duration::hours(60))
        .await
        .unwrap();
    assert_eq!(
        counts,
        DeviceCounts {
            total: 4,
            connected: 1,
            expiring: 1,
            revoked: 1
        }
    );

    // A replica starting over the store clears the marks of processes that hold no lease.
    let lease = f.now + time::Duration::seconds(10);
    assert_eq!(
        f.store
            .start_replica("0123456789abcdef", "host:1", f.now, lease)
            .await
            .unwrap(),
        1
    );
    assert!(walk(&f, connected).await.is_empty());
    assert_eq!(walk(&f, offline).await.len(), 4);
}

/// Connection marks across replicas: a Hello takes the mark, a later record of the older
/// session is refused; a lapsed lease's marks are cleared by the next renewal, and the
/// replica that lost its lease gets it back and marks its sessions again; a restart under
/// the same name clears its earlier run's marks at once.
#[tokio::test]
async fn replica_leases_and_connection_claims() {
    let f = fixture().await;
    let d = enroll_many(&f, 3, site).await;
    let (a, b) = ("aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb");
    let secs = |n| f.now + time::Duration::seconds(n);
    assert_eq!(
        f.store
            .start_replica(a, "host:1", f.now, secs(10))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        f.store
            .start_replica(b, "host:2", f.now, secs(10))
            .await
            .unwrap(),
        0
    );
    let seen = |id: &DeviceId, conn: &'static str, claim| {
        let id = id.clone();
        let store = &f.store;
        let now = f.now;
        async move {
            store
                .record_connected(&id, None, None, now, conn, claim)
                .await
                .unwrap()
        }
    };
    let store = &f.store;
    let marks = |ids: Vec<DeviceId>| async move {
        let mut m: Vec<Option<String>> = Vec::new();
        let got = store.connection_marks(ids.clone()).await.unwrap();
        for id in &ids {
            m.push(
                got.iter()
                    .find(|x| &x.device == id)
                    .and_then(|x| x.connection.clone()),
            );
        }
        m
    };
    assert_eq!(
        seen(&d[0], "aaaaaaaaaaaaaaaa-1", true).await,
        Seen::Recorded
    );
    assert_eq!(
        seen(&d[1], "aaaaaaaaaaaaaaaa-2", true).await,
        Seen::Recorded
    );
    assert_eq!(
        seen(&d[2], "bbbbbbbbbbbbbbbb-1", true).await,
        Seen::Recorded
    );
    // d0 reconnects to b: a's session of it is the older one now.
    assert_eq!(
        seen(&d[0], "bbbbbbbbbbbbbbbb-2", true).await,
        Seen::Recorded
    );
    assert_eq!(
        seen(&d[0], "aaaaaaaaaaaaaaaa-1", false).await,
        Seen::Superseded
    );
    assert_eq!(
        seen(&d[0], "bbbbbbbbbbbbbbbb-2", false).await,
        Seen::Recorded
    );
    // The older session's end does not clear the newer one's mark.
    f.store
        .record_disconnected(&d[0], "aaaaaaaaaaaaaaaa-1")
        .await
        .unwrap();

    // a's lease lapses: b's next renewal clears a's marks.
    assert!(f
        .store
        .renew_replica(b, "host:2", secs(20), secs(30))
        .await
        .unwrap());
    assert_eq!(
        marks(d.clone()).await,
        [
            Some("bbbbbbbbbbbbbbbb-2".to_owned()),
            None,
            Some("bbbbbbbbbbbbbbbb-1".to_owned())
        ]
    );
    // a was alive all along: its lease is gone, so it records it again and marks the
    // sessions it holds where nobody else holds the device.
    assert!(!f
        .store
        .renew_replica(a, "host:1", secs(21), secs(31))
        .await
        .unwrap());
    f.store
        .mark_sessions_again(
            vec![
                (d[0].clone(), "aaaaaaaaaaaaaaaa-1".to_owned()),
                (d[1].clone(), "aaaaaaaaaaaaaaaa-2".to_owned()),
            ],
            secs(21),
        )
        .await
        .unwrap();
    assert_eq!(
        marks(d.clone()).await,
        [
            Some("bbbbbbbbbbbbbbbb-2".to_owned()),
            Some("aaaaaaaaaaaaaaaa-2".to_owned()),
            Some("bbbbbbbbbbbbbbbb-1".to_owned())
        ]
    );
    // A clean stop clears b's marks; a restart of a (same name, new instance) clears the
    // marks of its earlier run at once, lease or not.
    assert_eq!(f.store.stop_replica(b).await.unwrap(), 2);
    assert_eq!(
        f.store
            .start_replica("cccccccccccccccc", "host:1", secs(22), secs(32))
            .await
            .unwrap(),
        1
    );
    assert_eq!(marks(d.clone()).await, [None, None, None]);
    // A revoked device is reported as such; an unknown one is left out.
    f.store
        .revoke_device(
            &f.ws,
            &d[2],
            f.now,
            audit(&f, AuditAction::DeviceRevoke, "d"),
        )
        .await
        .unwrap();
    let got = f
        .store
        .connection_marks(vec![d[2].clone(), DeviceId::generate()])
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert!(got[0].revoked);
}

#[tokio::test]
async fn positions_of_another_shape_are_refused() {
    let f = fixture().await;
    enroll_many(&f, 3, site).await;
    let mut q = query(1);
    q.page = PageRequest {
        after: Some(vec![crate::store::SortValue::Int(1)]),
        limit: 1,
    };
    let err = f.store.query_devices(&f.ws, q).await.unwrap_err();
    assert!(matches!(err, StoreError::BadPosition), "{err:?}");
}

#[tokio::test]
async fn labels_and_counts_written_before_their_tables_are_found() {
    // A database at schema 5 with labelled devices (what later migrations made is dropped),
    // then migrated: the label rows and the counts are made from the stored devices.
    let f = fixture().await;
    if f.sqlite_only() {
        return;
    }
    enroll_many(&f, 2, site).await;
    f.store.close().await;
    {
        let c = rusqlite::Connection::open(&f.path).unwrap();
        c.execute("DELETE FROM device_labels", []).unwrap();
        c.execute_batch(
            "DROP INDEX device_labels_value;
             DROP INDEX device_labels_key;
             DROP TABLE device_labels;
             DROP TRIGGER device_counts_insert;
             DROP TRIGGER device_counts_delete;
             DROP TRIGGER device_counts_update;
             DROP TABLE device_counts;
             DROP TABLE device_expiry_days;
             DROP TABLE console_sessions;
             DROP TABLE console_signin_tokens;
             DROP TRIGGER device_search_insert;
             DROP TRIGGER device_search_rename;
             DROP TRIGGER device_search_delete;
             DROP TABLE device_search;
             DROP TABLE device_search_rows;
             DROP TABLE deployment;
             DROP TABLE replicas;
             DROP TABLE retired_cas;
             DELETE FROM schema_version WHERE version >= 6;",
        )
        .unwrap();
        for idx in [
            "devices_enrolled",
            "devices_name",
            "devices_seen",
            "devices_connected",
            "devices_disconnected",
            "devices_connection",
            "devices_cert_expiry",
            "devices_by_key",
            "devices_by_member",
            "api_keys_created",
            "members_created",
        ] {
            c.execute(&format!("DROP INDEX {idx}"), []).unwrap();
        }
        c.execute_batch(
            "ALTER TABLE devices DROP COLUMN agent_version;
             ALTER TABLE devices DROP COLUMN cert_ca;
             ALTER TABLE devices DROP COLUMN cert_key;
             ALTER TABLE devices DROP COLUMN connection;
             ALTER TABLE devices DROP COLUMN connected_at;
             CREATE INDEX devices_workspace ON devices(workspace_id, enrolled_at);",
        )
        .unwrap();
    }
    let store = Store::open_sqlite(&f.path).unwrap();
    let mut oslo = query(100);
    oslo.labels = vec![LabelSelector::Equals("site".into(), "oslo".into())];
    let got = store.query_devices(&f.ws, oslo).await.unwrap();
    assert_eq!(
        got.items
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>(),
        ["robot-001"]
    );
    // The search index is made from the stored devices too.
    let mut search = query(100);
    search.search = Some("bot-000".into());
    let got = store.query_devices(&f.ws, search).await.unwrap();
    assert_eq!(got.items.len(), 1);
}

#[tokio::test]
async fn search_follows_renames_and_deletions_and_pages_in_every_order() {
    let f = fixture().await;
    let ids = enroll_many(&f, 30, site).await;
    let names = |q: DeviceQuery| async { walk(&f, q).await };
    let searching = |text: &str, limit: u32| {
        let mut q = query(limit);
        q.search = Some(text.into());
        q
    };
    let want: Vec<String> = (10..20).map(|i| format!("robot-{i:03}")).collect();
    assert_eq!(names(searching("BOT-01", 3)).await, want);
    let mut backwards = searching("bot-01", 4);
    backwards.sort = DeviceSort::Name;
    backwards.descending = true;
    let mut reversed = want.clone();
    reversed.reverse();
    assert_eq!(names(backwards).await, reversed);
    // With a label: lyon is i % 3 == 0.
    let mut lyon = searching("bot-01", 2);
    lyon.labels = vec![LabelSelector::Equals("site".into(), "lyon".into())];
    assert_eq!(names(lyon).await, ["robot-012", "robot-015", "robot-018"]);

    let upd = || audit(&f, AuditAction::DeviceUpdate, "d");
    f.store
        .update_device(&f.ws, &ids[15], Some("arm-15".into()), None, upd())
        .await
        .unwrap();
    assert_eq!(names(searching("bot-01", 100)).await.len(), 9);
    assert_eq!(names(searching("ARM-1", 100)).await, ["arm-15"]);
    // By id, still.
    assert_eq!(
        names(searching(&ids[15].as_str()[4..], 100)).await,
        ["arm-15"]
    );
    f.store
        .revoke_device(
            &f.ws,
            &ids[12],
            f.now,
            audit(&f, AuditAction::DeviceRevoke, "d"),
        )
        .await
        .unwrap();
    f.store
        .delete_device(&f.ws, &ids[12], audit(&f, AuditAction::DeviceDelete, "d"))
        .await
        .unwrap();
    assert_eq!(names(searching("bot-01", 100)).await.len(), 8);
    // Quotes and FTS syntax in the text are literal.
    assert!(names(searching("\"robot-01\" OR arm", 100))
        .await
        .is_empty());
    assert!(names(searching("robot-01*", 100)).await.is_empty());
    // Another workspace's devices are never candidates.
    let other = heex_proto::WorkspaceId::generate();
    let mut elsewhere = query(100);
    elsewhere.search = Some("robot-0".into());
    assert!(f
        .store
        .query_devices(&other, elsewhere)
        .await
        .unwrap()
        .items
        .is_empty());
}
