//! Device renewal bookkeeping, revocation, rename/labels and deletion.

use super::*;
use std::sync::Arc;

use crate::store::ops::CaRetirement;
use crate::store::{IssuedCert, PageRequest};

async fn enrolled(f: &Fixture) -> DeviceId {
    let d = device(f, &f.key);
    let id = d.id.clone();
    f.store
        .insert_device(d, audit(f, AuditAction::DeviceEnroll, id.as_str()))
        .await
        .unwrap();
    id
}

/// A renewed certificate with serial `serial`, for a key named after it.
fn issued(serial: &str, not_after: OffsetDateTime, ca: &str) -> IssuedCert {
    IssuedCert {
        serial_hex: serial.to_owned(),
        not_after,
        ca: ca.to_owned(),
        key: format!("key-of-{serial}"),
    }
}

async fn record(f: &Fixture, id: &DeviceId) -> DeviceRecord {
    f.store.find_device(&f.ws, id).await.unwrap().unwrap()
}

#[tokio::test]
async fn renewal_updates_serial_and_expiry_until_revoked() {
    let f = fixture().await;
    let id = enrolled(&f).await;
    let later = f.now + time::Duration::days(60);
    assert!(f
        .store
        .record_renewal(&id, "40aa", issued("41bb", later, "sha256:new"), f.now)
        .await
        .unwrap());
    let d = record(&f, &id).await;
    assert_eq!(d.cert_serial, "41bb");
    assert_eq!(d.cert_expires_at, later);

    let at = f.now + time::Duration::seconds(5);
    let revoke = audit(&f, AuditAction::DeviceRevoke, id.as_str());
    assert!(f
        .store
        .revoke_device(&f.ws, &id, at, revoke.clone())
        .await
        .unwrap());
    // A second revocation keeps the first time.
    let again = f.now + time::Duration::seconds(50);
    assert!(f
        .store
        .revoke_device(&f.ws, &id, again, revoke)
        .await
        .unwrap());
    assert_eq!(record(&f, &id).await.revoked_at, Some(at));
    // Renewal of a revoked device changes nothing.
    assert!(!f
        .store
        .record_renewal(
            &id,
            "41bb",
            issued("42cc", later + time::Duration::days(1), "sha256:new"),
            f.now
        )
        .await
        .unwrap());
    assert_eq!(record(&f, &id).await.cert_serial, "41bb");
    assert!(!f
        .store
        .record_renewal(
            &DeviceId::generate(),
            "40aa",
            issued("43dd", later, "sha256:new"),
            f.now
        )
        .await
        .unwrap());
    let revokes = f
        .store
        .audit_events(
            &f.ws,
            AuditFilter {
                action: Some("device.revoke".into()),
                page: PageRequest::first(10),
                ..AuditFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(revokes.items.len(), 1);
}

#[tokio::test]
async fn rename_relabel_and_delete_only_when_revoked() {
    let f = fixture().await;
    let id = enrolled(&f).await;
    let other_ws = WorkspaceId::generate();
    let upd = || audit(&f, AuditAction::DeviceUpdate, id.as_str());
    assert!(f
        .store
        .update_device(&f.ws, &id, Some("arm-2".into()), None, upd())
        .await
        .unwrap());
    let d = record(&f, &id).await;
    assert_eq!(d.name, "arm-2");
    assert_eq!(d.labels["site"], "lab");
    let labels: std::collections::BTreeMap<_, _> = [("team".to_owned(), "x".to_owned())].into();
    assert!(f
        .store
        .update_device(&f.ws, &id, None, Some(labels.clone()), upd())
        .await
        .unwrap());
    let d = record(&f, &id).await;
    assert_eq!((d.name.as_str(), &d.labels), ("arm-2", &labels));
    // Another workspace cannot touch it.
    assert!(!f
        .store
        .update_device(&other_ws, &id, Some("x".into()), None, upd())
        .await
        .unwrap());

    let del = || audit(&f, AuditAction::DeviceDelete, id.as_str());
    assert_eq!(
        f.store.delete_device(&f.ws, &id, del()).await.unwrap(),
        DeleteDeviceOutcome::NotRevoked
    );
    f.store
        .revoke_device(
            &f.ws,
            &id,
            f.now,
            audit(&f, AuditAction::DeviceRevoke, id.as_str()),
        )
        .await
        .unwrap();
    assert_eq!(
        f.store.delete_device(&other_ws, &id, del()).await.unwrap(),
        DeleteDeviceOutcome::NotFound
    );
    assert_eq!(
        f.store.delete_device(&f.ws, &id, del()).await.unwrap(),
        DeleteDeviceOutcome::Deleted
    );
    assert!(f.store.find_device(&f.ws, &id).await.unwrap().is_none());
    assert!(f.store.device_status(&id).await.unwrap().is_none());
    assert_eq!(
        f.store.delete_device(&f.ws, &id, del()).await.unwrap(),
        DeleteDeviceOutcome::NotFound
    );
}

/// Only the current certificate renews, decided in the write: a second renewal from the
/// same (now superseded) serial changes nothing, and the previous serial is kept with the
/// time it was superseded.
#[tokio::test]
async fn renewal_is_a_compare_and_set_on_the_current_serial() {
    let f = fixture().await;
    let id = enrolled(&f).await;
    let later = f.now + time::Duration::days(60);
    let at = f.now + time::Duration::seconds(7);
    assert!(f
        .store
        .record_renewal(&id, "40aa", issued("41bb", later, "sha256:new"), at)
        .await
        .unwrap());
    let status = f.store.device_status(&id).await.unwrap().unwrap();
    assert_eq!(status.cert_serial, "41bb");
    assert_eq!(status.previous_cert, Some(("40aa".to_owned(), at)));
    // The old certificate renews again (a copy of it, or a race): refused.
    assert!(!f
        .store
        .record_renewal(&id, "40aa", issued("42cc", later, "sha256:new"), at)
        .await
        .unwrap());
    assert!(!f
        .store
        .record_renewal(&id, "ffff", issued("42cc", later, "sha256:new"), at)
        .await
        .unwrap());
    let status = f.store.device_status(&id).await.unwrap().unwrap();
    assert_eq!(status.cert_serial, "41bb");
    assert_eq!(status.previous_cert, Some(("40aa".to_owned(), at)));
}

/// Reports and last-seen records of a revoked device are refused in the write itself.
#[tokio::test]
async fn a_revoked_device_stores_nothing_more() {
    let f = fixture().await;
    let id = enrolled(&f).await;
    let report = |seq: u64| vec![(seq, format!("{{\"n\":{seq}}}"))];
    assert_eq!(
        f.store
            .store_reports(&id, report(1), f.now)
            .await
            .unwrap()
            .highest,
        1
    );
    assert!(matches!(
        f.store
            .record_connected(&id, None, None, f.now, "test", true)
            .await
            .unwrap(),
        Seen::Recorded
    ));
    let revoke = audit(&f, AuditAction::DeviceRevoke, id.as_str());
    assert!(f
        .store
        .revoke_device(&f.ws, &id, f.now, revoke)
        .await
        .unwrap());
    let refused = f.store.store_reports(&id, report(2), f.now).await;
    assert!(
        matches!(refused, Err(StoreError::DeviceNotLive(ref d)) if *d == id),
        "{refused:?}"
    );
    let stored = f.store.list_reports(&id, 0, 10).await.unwrap();
    assert_eq!(stored.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1]);
    assert!(matches!(
        f.store
            .record_connected(
                &id,
                None,
                None,
                f.now + time::Duration::minutes(1),
                "test",
                true
            )
            .await
            .unwrap(),
        Seen::NotLive
    ));
    assert_eq!(record(&f, &id).await.last_seen_at, Some(f.now));
    // An unknown device is refused the same way.
    assert!(matches!(
        f.store
            .store_reports(&DeviceId::generate(), report(1), f.now)
            .await,
        Err(StoreError::DeviceNotLive(_))
    ));
}

#[tokio::test]
async fn devices_are_counted_by_the_ca_of_their_certificate_and_the_owner_moves_to_a_new_ca() {
    let f = fixture().await;
    let a = enrolled(&f).await;
    let b = enrolled(&f).await;
    assert_eq!(f.store.devices_not_on_ca("sha256:new").await.unwrap(), 2);
    assert_eq!(f.store.devices_not_on_ca("sha256:old").await.unwrap(), 0);
    let later = f.now + time::Duration::days(60);
    assert!(f
        .store
        .record_renewal(&a, "40aa", issued("41bb", later, "sha256:new"), f.now)
        .await
        .unwrap());
    assert_eq!(f.store.devices_not_on_ca("sha256:new").await.unwrap(), 1);
    // A revoked device no longer counts.
    assert!(f
        .store
        .revoke_device(
            &f.ws,
            &b,
            f.now,
            audit(&f, AuditAction::DeviceRevoke, b.as_str())
        )
        .await
        .unwrap());
    assert_eq!(f.store.devices_not_on_ca("sha256:new").await.unwrap(), 0);

    let recorded = f.store.recorded_deployment().await.unwrap();
    if let Some(d) = recorded {
        let old = d.ca_fingerprint.clone();
        assert_eq!(
            f.store
                .retire_ca("sha256:other", "sha256:x", true, f.now)
                .await
                .unwrap(),
            CaRetirement::NotOurs
        );
        assert_eq!(
            f.store
                .retire_ca(&old, "sha256:new", false, f.now)
                .await
                .unwrap(),
            CaRetirement::Retired { stranded: 0 }
        );
        // Again (a second replica's directory): already moved.
        assert_eq!(
            f.store
                .retire_ca(&old, "sha256:new", false, f.now)
                .await
                .unwrap(),
            CaRetirement::Retired { stranded: 0 }
        );
        let now = f.store.recorded_deployment().await.unwrap().unwrap();
        assert_eq!(now.ca_fingerprint, "sha256:new");
    }
}

#[tokio::test]
async fn a_retired_ca_is_refused_inside_the_transaction_that_would_record_its_certificate() {
    let f = fixture().await;
    let a = enrolled(&f).await;
    let later = f.now + time::Duration::days(60);
    // Refused while a device is on another CA, unless forced; nothing is retired then.
    assert_eq!(
        f.store
            .retire_ca("sha256:old", "sha256:new", false, f.now)
            .await
            .unwrap(),
        CaRetirement::Refused { remaining: 1 }
    );
    assert!(f
        .store
        .record_renewal(&a, "40aa", issued("41bb", later, "sha256:old"), f.now)
        .await
        .unwrap());
    assert_eq!(
        f.store
            .retire_ca("sha256:old", "sha256:new", true, f.now)
            .await
            .unwrap(),
        CaRetirement::Retired { stranded: 1 }
    );
    // A process still signing with the old CA can neither renew nor enroll onto it.
    assert!(matches!(
        f.store
            .record_renewal(&a, "41bb", issued("42cc", later, "sha256:old"), f.now)
            .await,
        Err(StoreError::CaRetired(ca)) if ca == "sha256:old"
    ));
    assert_eq!(record(&f, &a).await.cert_serial, "41bb");
    let mut d = device(&f, &f.key);
    d.cert_ca = "sha256:old".into();
    let id = d.id.clone();
    assert!(matches!(
        f.store
            .insert_device(d, audit(&f, AuditAction::DeviceEnroll, id.as_str()))
            .await,
        Err(StoreError::CaRetired(_))
    ));
    assert!(f.store.find_device(&f.ws, &id).await.unwrap().is_none());
    // The new CA's certificates are recorded as before.
    assert!(f
        .store
        .record_renewal(&a, "41bb", issued("43dd", later, "sha256:new"), f.now)
        .await
        .unwrap());
}

#[tokio::test]
async fn a_renewal_onto_the_old_ca_racing_retire_never_ends_on_a_retired_ca() {
    let f = fixture().await;
    let later = f.now + time::Duration::days(60);
    let f = Arc::new(f);
    for round in 0..20u32 {
        // One device on the new CA, whose renewal by a process that never read the new CA
        // (it signs with the old one) races the retirement of the old CA.
        let id = enrolled(&f).await;
        let (old, new) = (format!("sha256:old-{round}"), format!("sha256:new-{round}"));
        let moved = format!("{round:04x}aa");
        assert!(f
            .store
            .record_renewal(&id, "40aa", issued(&moved, later, &new), f.now)
            .await
            .unwrap());
        let renewal = {
            let (f, id, old, moved) = (Arc::clone(&f), id.clone(), old.clone(), moved.clone());
            tokio::spawn(async move {
                f.store
                    .record_renewal(&id, &moved, issued("ffff", later, &old), f.now)
                    .await
            })
        };
        let retire = {
            let (f, old, new) = (Arc::clone(&f), old.clone(), new.clone());
            tokio::spawn(async move { f.store.retire_ca(&old, &new, false, f.now).await })
        };
        let (renewal, retire) = (renewal.await.unwrap(), retire.await.unwrap().unwrap());
        match (renewal, retire) {
            (Ok(true), CaRetirement::Refused { remaining: 1 }) => {}
            (Err(StoreError::CaRetired(_)), CaRetirement::Retired { stranded: 0 }) => {}
            other => panic!("round {round}: a renewal and a retirement both won: {other:?}"),
        }
        // Revoked, so the next round counts only its own device.
        f.store
            .revoke_device(
                &f.ws,
                &id,
                f.now,
                audit(&f, AuditAction::DeviceRevoke, id.as_str()),
            )
            .await
            .unwrap();
    }
}

/// An agent killed after the store recorded its renewal and before it installed the answer
/// asks again from the superseded certificate with the key it kept: answered for that same
/// key, as often as it takes, never for another key, and never once the device renewed
/// onwards.
#[tokio::test]
async fn a_renewal_repeated_from_the_superseded_certificate_is_answered_for_the_same_key_only() {
    let f = fixture().await;
    let id = enrolled(&f).await;
    let later = f.now + time::Duration::days(60);
    assert!(f
        .store
        .record_renewal(&id, "40aa", issued("41bb", later, "sha256:old"), f.now)
        .await
        .unwrap());
    let again = |serial: &str, key: &str| IssuedCert {
        key: key.to_owned(),
        ..issued(serial, later, "sha256:old")
    };
    // Another key from the superseded certificate: refused, nothing changes.
    assert!(!f
        .store
        .record_renewal(&id, "40aa", again("42cc", "key-of-someone-else"), f.now)
        .await
        .unwrap());
    assert_eq!(record(&f, &id).await.cert_serial, "41bb");
    // The same key, twice (two crashes in a row): each answer replaces the one never
    // installed, and the superseded certificate stays the previous one.
    for serial in ["42cc", "43dd"] {
        assert!(f
            .store
            .record_renewal(&id, "40aa", again(serial, "key-of-41bb"), f.now)
            .await
            .unwrap());
        let d = record(&f, &id).await;
        assert_eq!(d.cert_serial, serial);
        let status = f.store.device_status(&id).await.unwrap().unwrap();
        assert_eq!(
            status.previous_cert.map(|(p, _)| p).as_deref(),
            Some("40aa")
        );
    }
    // Once the device renews onwards, the old certificate can repeat nothing.
    assert!(f
        .store
        .record_renewal(&id, "43dd", issued("44ee", later, "sha256:old"), f.now)
        .await
        .unwrap());
    assert!(!f
        .store
        .record_renewal(&id, "40aa", again("45ff", "key-of-44ee"), f.now)
        .await
        .unwrap());
    assert_eq!(record(&f, &id).await.cert_serial, "44ee");
}
